//! Fuzz target `client_message`: see fuzz/README.md. The check itself is shared with the regression
//! test that replays the committed corpus (`tests/fuzz_corpus.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    streamhub::fuzzing::client_message(data);
});
