#!/usr/bin/env bash
# `make test`: every check, in order, stopping at the first failure, then a summary with the
# wall time of each step and the test counts of each suite. Step logs: target/test-logs/.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export CHROMEDRIVER=/usr/bin/chromedriver
export CARGO_TERM_COLOR=never

LOGS=target/test-logs
mkdir -p "$LOGS"
rm -f "$LOGS"/*.log

names=() results=() times=() counts=()
t_all=$(date +%s%N)

# Sums libtest's "test result:" lines. With skip_doc=1, doc-test sections are left out
# (wasm-pack test re-runs the native doc tests after the wasm suites).
cargo_counts() {
  awk -v skip_doc="${2:-0}" '
    /^ *Doc-tests / { doc = 1 }
    /^ *Running /   { doc = 0 }
    /^test result:/ && !(skip_doc && doc) {
      for (i = 1; i <= NF; i++) {
        if ($(i+1) ~ /^passed/)  p += $i
        if ($(i+1) ~ /^failed/)  f += $i
        if ($(i+1) ~ /^ignored/) g += $i
      }
    }
    /only configured to run in (node.js|a browser)/ { s++ }
    END {
      printf "%d passed", p; if (f) printf ", %d failed", f; if (g) printf ", %d ignored", g
      if (s) printf " (%d suite%s for the other runner skipped)", s, (s > 1 ? "s" : "")
    }
  ' "$1"
}
node_counts() {
  awk '/^(ℹ|#) pass / { p = $3 } /^(ℹ|#) fail / { f = $3 }
       END { printf "%d passed", p; if (f) printf ", %d failed", f }' "$1"
}

summary() {
  local total=$(( ($(date +%s%N) - t_all) / 1000000 ))
  echo
  echo "== make test summary =="
  printf '%-28s %-6s %9s  %s\n' step result time tests
  for i in "${!names[@]}"; do
    printf '%-28s %-6s %8.1fs  %s\n' "${names[$i]}" "${results[$i]}" "${times[$i]}" "${counts[$i]}"
  done
  printf '%-28s %-6s %8.1fs\n' total "" "$(awk -v ms="$total" 'BEGIN { print ms / 1000 }')"
}

# step NAME COUNTER -- COMMAND...   (COUNTER: none | cargo | wasm | node | size)
step() {
  local name=$1 counter=$2
  shift 3
  local log="$LOGS/$name.log" t0 rc ms
  echo
  echo "==> $name: $*"
  t0=$(date +%s%N)
  "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  names+=("$name")
  times+=("$(awk -v ms="$ms" 'BEGIN { print ms / 1000 }')")
  case $counter in
    cargo) counts+=("$(cargo_counts "$log")") ;;
    wasm)  counts+=("$(cargo_counts "$log" 1)") ;;
    node)  counts+=("$(node_counts "$log")") ;;
    size)  counts+=("$(grep -o '[0-9]* bytes ([0-9.]* KiB) raw, [0-9]* bytes ([0-9.]* KiB) gzip' "$log" | sed 's/[0-9]* bytes (\([^)]*\))/\1/g')") ;;
    *)     counts+=("") ;;
  esac
  if [ "$rc" -ne 0 ]; then
    results+=(FAIL)
    summary
    echo
    echo "make test: FAILED at step '$name' (exit $rc); log: $log" >&2
    exit 1
  fi
  results+=(ok)
}

step setup           none  -- scripts/setup.sh
step fmt             none  -- cargo fmt --all --check
step clippy          none  -- cargo clippy --workspace --all-targets -- -D warnings
step clippy-wasm     none  -- cargo clippy -p otaweb -p otaweb-demo-device --all-targets --target wasm32-unknown-unknown -- -D warnings
step doc             none  -- env RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
step cargo-test      cargo -- cargo test --workspace
step firmware-thumb  none  -- cargo build -p otaweb-firmware --target thumbv7em-none-eabihf
step wasm-build      none  -- scripts/build-wasm.sh
step wasm-imports    size  -- node scripts/check-wasm-imports.mjs pkg/otaweb_bg.wasm
step demo-imports    size  -- node scripts/check-wasm-imports.mjs pkg/demo/otaweb_demo_device_bg.wasm
# The generated pkg/otaweb.d.ts with its hand-written types (src/web/api.d.ts), the
# element's www/ota-updater.d.ts, under tsc --strict (embed.test.mjs checks the Vite example).
step types           none  -- node_modules/.bin/tsc -p tests/types/tsconfig.json
step wasm-test-node  wasm  -- wasm-pack test --node
# The same suites as under node, forced into the browser: the runner otherwise skips suites
# not marked run_in_browser, and marking them would stop them running under node.
step wasm-test-chrome wasm -- env WASM_BINDGEN_USE_BROWSER=1 wasm-pack test --headless --chrome
# The browser tests start target/debug/enos-sim (scripts/services.mjs).
step enos-sim-build  none  -- cargo build -p enos-sim
step browser-e2e     node  -- node --test --test-reporter=spec tests/browser/

summary
echo
echo "make test: all steps passed"
