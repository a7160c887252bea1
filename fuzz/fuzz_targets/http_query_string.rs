//! A `GET /graphql` query string through the server's reading of it:
//! URL decoding, `variables` and `extensions` scanned and parsed as JSON,
//! a persisted query's hash, admission.
#![no_main]
libfuzzer_sys::fuzz_target!(|text: &str| ferrite_server::fuzzing::http_query_string(text));
