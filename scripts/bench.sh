#!/usr/bin/env bash
# Benchmarks (never asserted in tests). Stub: runs the native image benchmark if it exists.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f benches/image.rs ] || ! grep -q 'name = "image"' Cargo.toml; then
  echo "bench: no benches/image.rs bench target yet; nothing to run"
  exit 0
fi
exec cargo bench -p otaweb --bench image
