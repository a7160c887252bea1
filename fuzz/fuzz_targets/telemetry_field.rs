//! A `telemetry` field path.
#![no_main]
libfuzzer_sys::fuzz_target!(|field: &str| ferrite_server::fuzzing::telemetry_field(field));
