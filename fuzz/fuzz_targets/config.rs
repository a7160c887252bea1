//! A `ferrite.toml`, parsed and validated.
#![no_main]
libfuzzer_sys::fuzz_target!(|text: &str| ferrite_server::fuzzing::config(text));
