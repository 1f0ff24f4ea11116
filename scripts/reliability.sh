#!/usr/bin/env bash
# `make reliability`: the fault campaign (tests/campaign) with RUNS seeded runs per flow
# (default 10,000), release build, and its figures written into RELIABILITY.md between the
# campaign markers. A broken invariant fails the run and prints each seed with the command
# that replays it; the file is then left as it was.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${RUNS:-10000}
first=${FIRST_SEED:-1}
report=target/reliability
rm -rf "$report"
mkdir -p "$report"

start=$(date +%s)
OTAWEB_CAMPAIGN_RUNS=$runs OTAWEB_CAMPAIGN_FIRST_SEED=$first OTAWEB_CAMPAIGN_REPORT=$report \
  cargo test -q --release --test campaign -- --nocapture gadget dfu enos_gadget enos_dfu
took=$(( $(date +%s) - start ))

rows=$(cat "$report"/gadget.md "$report"/dfu.md "$report"/enos_gadget.md "$report"/enos_dfu.md)
section=$(cat <<EOF
<!-- campaign:begin (written by make reliability) -->
Written by \`RUNS=$runs FIRST_SEED=$first make reliability\` on $(date -u +%Y-%m-%d), $(nproc) cores, in ${took} s; seeds $first to $((first + runs - 1)) of each flow.

| flow | runs | faults injected | power cuts | done first time | failed first time: retryable / not (causes) | new image after the first attempt | bricked | wrong or unverified image applied | no typed outcome | other broken invariants | simulated hours |
|---|---|---|---|---|---|---|---|---|---|---|---|
$rows
<!-- campaign:end -->
EOF
)

node -e '
  const fs = require("fs");
  const [file, section] = [process.argv[1], process.argv[2]];
  const text = fs.readFileSync(file, "utf8");
  const re = /<!-- campaign:begin[^]*?<!-- campaign:end -->/;
  if (!re.test(text)) throw new Error(file + " has no campaign markers");
  fs.writeFileSync(file, text.replace(re, () => section));
' RELIABILITY.md "$section"
echo "RELIABILITY.md: campaign figures of $runs runs per flow written"
