//! cargo-fuzz target `package`: the body is `harness::package`, shared with tests/fuzz_corpus.rs.
#![no_main]

#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::package(data));
