//! cargo-fuzz target `flow_enos`: the body is `harness::flow_enos`, shared with tests/fuzz_corpus.rs.
#![no_main]

#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::flow_enos(data));
