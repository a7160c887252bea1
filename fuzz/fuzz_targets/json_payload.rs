//! A JSON payload through the checks of `publishEvent` (nesting scan,
//! depth, size, U+0000).
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| ferrite_server::fuzzing::json_payload(bytes));
