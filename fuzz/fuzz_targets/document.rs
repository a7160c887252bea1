//! A GraphQL document (and variables, after the first NUL byte) through
//! admission: the scan, async-graphql's parser, the cost count.
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    let (query, variables) = text.split_once('\0').unwrap_or((&text, ""));
    ferrite_server::fuzzing::document(query, variables);
});
