#!/usr/bin/env bash
# Release build of the wasm package into pkg/ (pkg/otaweb.js + pkg/otaweb_bg.wasm).
# wasm-opt -Oz runs inside wasm-pack (Cargo.toml: package.metadata.wasm-pack); it must be
# npm's binaryen from node_modules/.bin, hence that directory first on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

[ -x node_modules/.bin/wasm-opt ] || { echo "build-wasm: node_modules/.bin/wasm-opt missing: run make setup" >&2; exit 1; }
wasm-pack build --target web --release --out-dir pkg
