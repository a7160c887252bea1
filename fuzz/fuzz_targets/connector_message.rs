//! A server message, decoded as the gateway library's session decodes it.
#![no_main]
libfuzzer_sys::fuzz_target!(|text: &str| ferrite_connector::fuzzing::server_message(text));
