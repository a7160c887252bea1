//! A WebSocket text message, decoded as the server's socket decodes it.
#![no_main]
libfuzzer_sys::fuzz_target!(|text: &str| ferrite_server::fuzzing::websocket_message(text));
