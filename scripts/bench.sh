#!/usr/bin/env bash
# `make bench`: image benchmarks natively (otaweb vs Node's OpenSSL/zlib) and in headless
# Chromium (otaweb wasm vs WebCrypto and DecompressionStream) on the same buffers, what the
# browser downloads (scripts/sizes.mjs), and click → first image byte of a 1 MiB update of the
# demo gadget (benches/web/first-byte.mjs), written to benches/RESULTS.md. Numbers are
# measurements, never asserted anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

scripts/build-wasm.sh >/dev/null
native=$(cargo bench -q -p otaweb --bench image 2>/dev/null)
node_rows=$(node benches/web/node.mjs)
browser=$(node benches/web/run.mjs)
sizes=$(node scripts/sizes.mjs)
first_byte=$(node benches/web/first-byte.mjs)
# The native table's rows, without its header, so Node's rows join the same table.
native_rows=$(printf '%s\n' "$native" | grep '^| otaweb')
ratio=$(printf '%s\n' "$native" | grep 'compression ratio')

{
  echo "# Benchmark results"
  echo
  echo "Written by \`make bench\` on $(date -u +%Y-%m-%d) ($(nproc) cores, $(uname -m))."
  echo "Best of 5 runs, MB/s = 10^6 bytes per second. The buffer is firmware-like (pseudo-random"
  echo "words with 0xFF runs; $ratio)."
  echo
  echo "## Native: otaweb (release build) against Node's OpenSSL and zlib"
  echo
  echo "| implementation | operation | input | MB/s |"
  echo "|---|---|---|---|"
  printf '%s\n' "$native_rows"
  printf '%s\n' "$node_rows"
  echo
  echo "## Browser: otaweb wasm against the browser's own implementations, same page, same buffers"
  echo
  printf '%s\n' "$browser"
  echo
  echo "## Shipped sizes"
  echo
  echo "What a browser downloads (\`node scripts/sizes.mjs\`, release build)."
  echo
  printf '%s\n' "$sizes"
  echo
  echo "## Click to first byte (1 MiB image, demo gadget)"
  echo
  echo "\`node benches/web/first-byte.mjs\`: median and best of 5 runs, in milliseconds."
  echo
  printf '%s\n' "$first_byte"
} > benches/RESULTS.md
cat benches/RESULTS.md
