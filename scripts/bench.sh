#!/usr/bin/env bash
# `make bench`: every benchmark of issue 9, written to benches/RESULTS.md. Numbers are
# measurements, never asserted anywhere. Each part prints its own markdown section plus
# `SUMMARY| figure | otaweb | alternatives | ratio | target | met? |` lines, which are
# gathered into the summary table at the top.
#
#   link     cargo bench --bench link    gadget and dfu flows on the simulated BLE link
#   client   benches/web/node.mjs, run.mjs  SHA-256, MD5, inflate: wasm vs native and npm
#   image    cargo bench --bench image   the same natively (release), for reference
#   memory   benches/web/memory.mjs      7 MiB update: peak wasm memory, preparing time
#   size     scripts/sizes.mjs           what a browser downloads, biggest wasm contributors
#   fleet    cargo bench --bench fleet   1,000 EnOS devices through a real mosquitto
#   click    benches/web/first-byte.mjs  click → first image byte of a demo gadget update
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
started=$(date +%s)

scripts/build-wasm.sh >/dev/null 2>&1 || scripts/build-wasm.sh
# A copy of the updater's wasm with its name section, for the contributors table: the same
# cargo artifact wasm-pack just built, through the same wasm-bindgen and wasm-opt -Oz.
named=target/bench/size
mkdir -p "$named"
wasm-bindgen --target web --out-dir "$named" target/wasm32-unknown-unknown/release/otaweb.wasm
wasm-opt -Oz -g --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext --enable-simd \
  "$named/otaweb_bg.wasm" -o "$named/named.wasm"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
part() { # part NAME COMMAND...: its output into $out/NAME; a failing part is reported, not fatal
  local name=$1
  shift
  echo "bench: $name" >&2
  if ! "$@" >"$out/$name" 2>"$out/$name.err"; then
    echo "bench: $name FAILED (exit $?):" >&2
    tail -20 "$out/$name.err" >&2
    printf '\n**This part failed in this run**: see the log of `make bench`.\n' >>"$out/$name"
  fi
}
part link cargo bench -q -p otaweb --bench link
part node node benches/web/node.mjs
part browser node benches/web/run.mjs
part image cargo bench -q -p otaweb --bench image
part memory node benches/web/memory.mjs
part size node scripts/sizes.mjs --contributors "$named/named.wasm"
part fleet cargo bench -q -p otaweb --bench fleet
part click node benches/web/first-byte.mjs

section() { grep -v '^SUMMARY|' "$out/$1" || true; }
{
  echo "# Benchmark results"
  echo
  echo "Written by \`make bench\` on $(date -u +%Y-%m-%d): $(nproc) cores, $(uname -m)," \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), node $(node --version)," \
    "$(rustc --version | cut -d' ' -f1-2). kB = 10^3 bytes, MB/s = 10^6 bytes per second."
  echo
  echo "## Summary"
  echo
  echo "| figure | otaweb | alternatives | ratio | target | met? |"
  echo "|---|---|---|---|---|---|"
  cat "$out"/link "$out"/node "$out"/browser "$out"/memory "$out"/size "$out"/fleet |
    grep '^SUMMARY|' | sed 's/^SUMMARY|/|/'
  echo
  echo "## 1. Link efficiency (\`cargo bench -p otaweb --bench link\`)"
  echo
  section link
  echo
  echo "## 2. Client-side work in Node (\`node benches/web/node.mjs\`)"
  echo
  section node
  echo
  echo "## 2. Client-side work in headless Chromium (\`node benches/web/run.mjs\`)"
  echo
  section browser
  echo
  echo "### The same natively (\`cargo bench -p otaweb --bench image\`, opt-level 3), for reference"
  echo
  section image
  echo
  echo "## 3. Memory and preparing time (\`node benches/web/memory.mjs\`)"
  echo
  section memory
  echo
  echo "## 4. Size (\`node scripts/sizes.mjs\`, release build)"
  echo
  section size
  echo
  echo "## 5. Scale (\`cargo bench -p otaweb --bench fleet\`)"
  echo
  section fleet
  echo
  echo "## Click to first byte (1 MiB image, demo gadget; \`node benches/web/first-byte.mjs\`)"
  echo
  section click
  echo
  echo "\`make bench\` took $(($(date +%s) - started)) s."
} >benches/RESULTS.md
cat benches/RESULTS.md
