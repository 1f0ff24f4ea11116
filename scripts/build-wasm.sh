#!/usr/bin/env bash
# Release builds of the wasm packages: the updater into pkg/ (pkg/otaweb.js +
# pkg/otaweb_bg.wasm) and the demo device (the companion firmware) into pkg/demo/.
# wasm-opt -Oz runs inside wasm-pack (Cargo.toml: package.metadata.wasm-pack); it must be
# npm's binaryen from node_modules/.bin, hence that directory first on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

[ -x node_modules/.bin/wasm-opt ] || { echo "build-wasm: node_modules/.bin/wasm-opt missing: run make setup" >&2; exit 1; }
wasm-pack build --target web --release --out-dir pkg
# The demo device is its own module: a page that embeds the updater need not load it.
wasm-pack build firmware/demo --target web --release --out-dir ../../pkg/demo --no-pack
