//! A `POST /graphql` body through the server's reading of it: nesting scan,
//! JSON, the request object, admission (size, nesting, parse, cost).
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| ferrite_server::fuzzing::http_body(bytes));
