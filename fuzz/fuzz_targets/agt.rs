//! cargo-fuzz target `agt`: the body is `harness::agt`, shared with tests/fuzz_corpus.rs.
#![no_main]

#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::agt(data));
