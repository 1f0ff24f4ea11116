//! cargo-fuzz target `flow_gadget`: the body is `harness::flow_gadget`, shared with tests/fuzz_corpus.rs.
#![no_main]

#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::flow_gadget(data));
