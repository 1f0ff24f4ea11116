# otaweb — `make demo`, `make test`, `make bench`. See README.md.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# npm's wasm-opt (binaryen 132) must win over any other on PATH; cargo-installed tools next.
export PATH := $(CURDIR)/node_modules/.bin:$(or $(CARGO_HOME),$(HOME)/.cargo)/bin:$(PATH)

PORT ?= 8080
FIXTURES := firmware-fixtures/files

.PHONY: help setup pkg demo test bench fmt lint clean

help:
	@echo "make demo    build the wasm package and enos-sim; serve the page on http://127.0.0.1:$(PORT)/"
	@echo "             with a local MQTT broker (mosquitto) and EnOS OTA cloud (enos-sim)"
	@echo "make test    everything CI runs: fmt, clippy, native + wasm + browser tests"
	@echo "make bench   benchmarks (never asserted)"
	@echo "make setup   install missing tools (rust targets, wasm-pack, wasm-bindgen, chromium, npm packages)"
	@echo "make pkg     release wasm build into pkg/"
	@echo "make fmt | lint | clean"

setup:
	@scripts/setup.sh

pkg: setup
	scripts/build-wasm.sh

demo: setup pkg
	cargo build -p enos-sim
	@echo
	@echo "otaweb demo: Ctrl-C stops it. Try this:"
	@echo "  1. choose or drop $(FIXTURES)/app-v2.bin           -> size, SHA-256, MD5"
	@echo "  2. load $(FIXTURES)/manifest.json as the manifest  -> matches entry app v2, signature verified"
	@echo "  3. choose $(FIXTURES)/app-v2.corrupt.bin           -> digest-mismatch"
	@echo "  4. load $(FIXTURES)/manifest-bad-signature.json with app-v2.bin -> signature rejected"
	@echo "  5. 'Use the demo image', then in section 4: Connect (demo device) -> Update"
	@echo "     -> the built-in gadget (the companion firmware in wasm) goes from version 0 to 2;"
	@echo "     tick 'Stage only' to send now and apply later; Update again -> already up to date"
	@echo "  6. section 4: 'Demo SiFli device', 'Use the demo DFU package', Connect -> Update"
	@echo "     -> INIT, reboot into the OTA manager, transfer, install, reboot back"
	@echo "  6b. section 4, 'Daemon mode': Connect the demo gadget, check every 0.1 minutes, Start"
	@echo "     -> v2 found in the manifest, verified, staged; 'Apply staged image' switches to it"
	@echo "  6c. /examples/portal.html: the <ota-updater> element on a themed portal page, one click"
	@echo "  7. EnOS OTA over MQTT: open a device's prefilled page link printed below, Connect the"
	@echo "     demo device in section 4, paste its secret and 'Connect to EnOS' in section 5; run the printed"
	@echo "     'enos-sim task' command -> the panel offers the upgrade -> 'Install it' -> the file"
	@echo "     is fetched, checked (size + sign) and installed; EnOS sees 0 .. 100 and the new version"
	@echo
	@exec node scripts/demo.mjs --port $(PORT)

test:
	@scripts/test.sh

bench: setup
	@scripts/bench.sh

fmt:
	cargo fmt --all

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

clean:
	cargo clean
	rm -rf pkg tests/artifacts
