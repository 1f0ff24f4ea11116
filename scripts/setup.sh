#!/usr/bin/env bash
# Installs what `make demo` / `make test` need, and only what is missing.
# Idempotent: with everything present it only checks (a few seconds).
#
#   rust targets   wasm32-unknown-unknown, thumbv7em-none-eabihf   (rustup)
#   wasm-pack      cargo install wasm-pack --locked
#   wasm-bindgen   cargo install wasm-bindgen-cli --version <Cargo.lock's wasm-bindgen>
#   apt packages   chromium chromium-driver mosquitto mosquitto-clients websockify
#   npm packages   npm ci (playwright-core, binaryen's wasm-opt)
#
# Nothing here downloads tool binaries at run time: with the matching wasm-bindgen and
# chromedriver on PATH, wasm-pack fetches nothing itself.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$CARGO_BIN:$PATH"
APT_PACKAGES=(chromium chromium-driver mosquitto mosquitto-clients websockify)
RUST_TARGETS=(wasm32-unknown-unknown thumbv7em-none-eabihf)

say() { printf 'setup: %-34s %s\n' "$1" "$2"; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }
need cargo "install the Rust toolchain (https://rustup.rs) first"
need rustup "install the Rust toolchain with rustup (https://rustup.rs) first"
need node "install Node.js 20 or newer first"
need npm "install npm (comes with Node.js) first"

# --- apt packages: started in the background, they download while cargo compiles -------
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root (or sudo) to run: $*"
  fi
}
apt_missing=()
for p in "${APT_PACKAGES[@]}"; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    say "apt $p" ok
  else
    apt_missing+=("$p")
  fi
done
apt_pid=""
apt_log=""
if [ ${#apt_missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 ||
    die "apt-get not found; install these yourself: ${apt_missing[*]}"
  say "apt ${apt_missing[*]}" "installing (background)"
  apt_log="$(mktemp -t otaweb-apt.XXXXXX)"
  (
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q &&
      as_root apt-get install -y -q --no-install-recommends "${apt_missing[@]}"
  ) >"$apt_log" 2>&1 &
  apt_pid=$!  # waited for at the end; never killed (an interrupted dpkg is worse)
fi

# --- rust targets -------------------------------------------------------------------------
installed_targets="$(rustup target list --installed)"
for t in "${RUST_TARGETS[@]}"; do
  if grep -qx "$t" <<<"$installed_targets"; then
    say "rust target $t" ok
  else
    say "rust target $t" installing
    rustup target add "$t" || die "rustup target add $t failed"
  fi
done

# --- wasm-pack ----------------------------------------------------------------------------
if command -v wasm-pack >/dev/null 2>&1; then
  say "wasm-pack" "ok ($(wasm-pack --version | awk '{print $2}'))"
else
  say "wasm-pack" "installing (cargo install, ~3 min)"
  cargo install wasm-pack --locked || die "cargo install wasm-pack failed"
fi

# --- wasm-bindgen CLI, exactly the version in Cargo.lock ----------------------------------
# A mismatch makes wasm-pack try to download its own copy, which fails offline.
[ -f Cargo.lock ] || cargo generate-lockfile
want="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
[ -n "$want" ] || die "no wasm-bindgen entry in Cargo.lock"
have="$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)"
if [ "$have" = "$want" ]; then
  say "wasm-bindgen-cli" "ok ($have)"
else
  say "wasm-bindgen-cli" "installing $want (have: ${have:-none}; ~3 min)"
  # Not --locked: its lock file pins a webpki-roots version the registry does not serve.
  cargo install wasm-bindgen-cli --version "$want" --force ||
    die "cargo install wasm-bindgen-cli --version $want failed"
fi

# --- npm packages -------------------------------------------------------------------------
# node_modules/.package-lock.json is npm's own record of what it installed.
if [ ! -f node_modules/.package-lock.json ] ||
   { [ -f package-lock.json ] && [ node_modules/.package-lock.json -ot package-lock.json ]; } ||
   [ node_modules/.package-lock.json -ot package.json ]; then
  say "npm packages" installing
  if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error || die "npm ci failed"
  else
    npm install --no-audit --no-fund --loglevel=error || die "npm install failed"
  fi
  touch node_modules/.package-lock.json
else
  say "npm packages" ok
fi

# --- wait for apt -------------------------------------------------------------------------
if [ -n "$apt_pid" ]; then
  if wait "$apt_pid"; then
    apt_pid=""
    say "apt ${apt_missing[*]}" installed
  else
    apt_pid=""
    tail -n 30 "$apt_log" >&2
    die "apt-get install ${apt_missing[*]} failed (full log: $apt_log)"
  fi
  rm -f "$apt_log"
fi
for bin in /usr/bin/chromium /usr/bin/chromedriver; do
  [ -x "$bin" ] || die "$bin missing after installing chromium/chromium-driver"
done
