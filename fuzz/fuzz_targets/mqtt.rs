//! cargo-fuzz target `mqtt`: the body is `harness::mqtt`, shared with tests/fuzz_corpus.rs.
#![no_main]

#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::mqtt(data));
