# otaweb — `make demo`, `make test`, `make bench`. See README.md.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# npm's wasm-opt (binaryen 132) must win over any other on PATH; cargo-installed tools next.
export PATH := $(CURDIR)/node_modules/.bin:$(or $(CARGO_HOME),$(HOME)/.cargo)/bin:$(PATH)

PORT ?= 8080

.PHONY: help setup pkg demo test bench reliability fmt lint clean

help:
	@echo "make demo    build the wasm package and enos-sim; serve the page on http://127.0.0.1:$(PORT)/"
	@echo "             with a local MQTT broker (mosquitto) and EnOS OTA cloud (enos-sim)"
	@echo "make test    everything CI runs: fmt, clippy, native + wasm + browser tests"
	@echo "make bench   benchmarks (never asserted)"
	@echo "make reliability  the fault campaign, 10,000 seeded runs per flow (RUNS=N), into RELIABILITY.md"
	@echo "make setup   install missing tools (rust targets, wasm-pack, wasm-bindgen, chromium, npm packages)"
	@echo "make pkg     release wasm build into pkg/"
	@echo "make fmt | lint | clean"

setup:
	@scripts/setup.sh

pkg: setup
	scripts/build-wasm.sh

demo: setup pkg
	@cargo build -p enos-sim
	@exec node scripts/demo.mjs --port $(PORT)

test:
	@scripts/test.sh

bench: setup
	@scripts/bench.sh

reliability:
	@scripts/reliability.sh

fmt:
	cargo fmt --all

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

clean:
	cargo clean
	rm -rf pkg tests/artifacts
