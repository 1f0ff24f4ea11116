//! Native image benchmarks: SHA-256, MD5, zlib inflate and deflate, in MB/s.
//!
//! Run by `make bench` (which also runs the browser side and writes `benches/RESULTS.md`).
//! Prints one markdown table row per measurement. Never asserted in tests.

use std::hint::black_box;
use std::time::Instant;

use otaweb::image::{digest, zlib};

#[path = "shared/firmware_like.rs"]
mod firmware_like;
use firmware_like::firmware_like;

/// Best-of-`runs` throughput of `f` over `bytes` bytes, in MB/s (10^6 bytes per second).
fn measure(bytes: usize, runs: u32, mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..runs {
        let start = Instant::now();
        f();
        best = best.min(start.elapsed().as_secs_f64());
    }
    bytes as f64 / best / 1e6
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let data = firmware_like(16 << 20);
    let compressed = zlib::compress(&data, 6);
    let runs = 5;

    println!("| native | operation | input | MB/s |");
    println!("|---|---|---|---|");
    let sha = measure(data.len(), runs, || {
        black_box(digest::sha256(black_box(&data)));
    });
    println!("| otaweb (sha2) | SHA-256 | 16 MiB | {sha:.0} |");
    let md5 = measure(data.len(), runs, || {
        black_box(digest::md5(black_box(&data)));
    });
    println!("| otaweb (md-5) | MD5 | 16 MiB | {md5:.0} |");
    let inflate = measure(data.len(), runs, || {
        black_box(zlib::inflate(black_box(&compressed), data.len()).ok());
    });
    println!("| otaweb (miniz_oxide) | zlib inflate, MB/s of output | 16 MiB | {inflate:.0} |");
    let deflate = measure(data.len(), runs, || {
        black_box(zlib::compress(black_box(&data), 6));
    });
    println!(
        "| otaweb (miniz_oxide) | zlib deflate level 6, MB/s of input | 16 MiB | {deflate:.0} |"
    );
    println!(
        "\ncompression ratio of the benchmark buffer: {:.2}",
        data.len() as f64 / compressed.len() as f64
    );
}
