//! A gateway's `connector.toml`, parsed and validated.
#![no_main]
libfuzzer_sys::fuzz_target!(|text: &str| ferrite_connector::fuzzing::config(text));
