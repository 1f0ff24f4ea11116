//! Replays the committed fuzz corpus on stable: every file in `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/` through the same function the cargo-fuzz target runs
//! (`fuzz/harness/mod.rs`), so an input that once crashed a target fails `cargo test`.
// Native only: the harness drives the firmware's simulated flash and reads files.
#![cfg(not(target_arch = "wasm32"))]

#[path = "../fuzz/harness/mod.rs"]
mod harness;

use std::fs;
use std::path::{Path, PathBuf};

/// The fuzz crate's directory.
fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Replays `kind/<target>/*` (corpus or regressions) through each target; returns the
/// count replayed.
fn replay(kind: &str) -> usize {
    let mut count = 0;
    for (name, run) in harness::TARGETS {
        for path in files(&fuzz_dir().join(kind).join(name)) {
            let data = fs::read(&path).unwrap();
            let result = std::panic::catch_unwind(|| run(&data));
            assert!(result.is_ok(), "{} fails {name}", path.display());
            count += 1;
        }
    }
    count
}

#[test]
fn corpus_replays() {
    // The seeds alone are a few dozen; an empty corpus means a wrong path.
    assert!(
        replay("corpus") >= harness::TARGETS.len(),
        "no corpus found"
    );
}

#[test]
fn regressions_replay() {
    replay("regressions");
}

#[test]
fn every_target_has_a_corpus() {
    for (name, _) in harness::TARGETS {
        assert!(
            !files(&fuzz_dir().join("corpus").join(name)).is_empty(),
            "fuzz/corpus/{name}/ is empty"
        );
    }
}

#[test]
fn seeds_pass() {
    // The seed encoders and the targets agree: every seed runs clean.
    for (target, name, bytes) in harness::seeds() {
        let run = harness::TARGETS
            .iter()
            .find(|(t, _)| *t == target)
            .unwrap()
            .1;
        let result = std::panic::catch_unwind(|| run(&bytes));
        assert!(result.is_ok(), "seed {target}/{name} fails");
    }
}

/// Writes the seeds into `fuzz/corpus/<target>/seed-<name>`; run by hand when the seed
/// encoders change: `cargo test --test fuzz_corpus -- --ignored write_seeds`.
#[test]
#[ignore]
fn write_seeds() {
    for (target, name, bytes) in harness::seeds() {
        let dir = fuzz_dir().join("corpus").join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    }
}
