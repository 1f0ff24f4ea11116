#!/usr/bin/env node
// What a browser downloads, raw and compressed: prints a markdown table of every file the
// page, the embeddable element and the demo device load, with totals. `make bench` puts it
// in benches/RESULTS.md ("Shipped sizes"); it reads the files as they are (run
// scripts/build-wasm.sh first for current pkg/ sizes). No dependencies.
//
//   node scripts/sizes.mjs [--no-brotli]
//
// gzip is node:zlib at level 9; brotli is node:zlib's brotliCompressSync at quality 11 (what
// a server precompressing its static files would serve).
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { brotliCompressSync, constants, gzipSync } from "node:zlib";

const root = resolve(fileURLToPath(new URL("..", import.meta.url)));
const brotli = !process.argv.includes("--no-brotli");

// The page's own files: index.html, style.css and every www/*.js (ota-updater.js is the
// element's, which index.html does not load; demo-bluetooth.js is the demo device's).
const wwwJs = readdirSync(join(root, "www"))
  .filter((f) => f.endsWith(".js"))
  .sort();
const files = [
  "pkg/otaweb_bg.wasm",
  "pkg/otaweb.js",
  "www/index.html",
  "www/style.css",
  ...wwwJs.map((f) => `www/${f}`),
  "pkg/demo/otaweb_demo_device_bg.wasm",
  "pkg/demo/otaweb_demo_device.js",
];

const ELEMENT = ["www/ota-updater.js", "pkg/otaweb.js", "pkg/otaweb_bg.wasm"];
const DEMO = ["www/demo-bluetooth.js", "pkg/demo/otaweb_demo_device.js", "pkg/demo/otaweb_demo_device_bg.wasm"];
const PAGE = files.filter((f) => !DEMO.includes(f) && f !== "www/ota-updater.js");
const totals = [
  ["**(a) embeddable element**: ota-updater.js + otaweb.js + otaweb_bg.wasm", ELEMENT],
  ["**(b) the page without the demo device**: index.html, style.css, app/update/enos/status.js, otaweb.js + wasm", PAGE],
  ["**(c) demo device**: demo-bluetooth.js + pkg/demo/ js + wasm", DEMO],
];

const sizes = new Map();
for (const f of files) {
  let bytes;
  try {
    bytes = readFileSync(join(root, f));
  } catch (e) {
    console.error(`sizes: ${f}: ${e.code ?? e.message} (run scripts/build-wasm.sh first)`);
    process.exit(1);
  }
  sizes.set(f, {
    raw: bytes.length,
    gzip: gzipSync(bytes, { level: 9 }).length,
    brotli: brotli
      ? brotliCompressSync(bytes, {
          params: {
            [constants.BROTLI_PARAM_QUALITY]: 11,
            [constants.BROTLI_PARAM_SIZE_HINT]: bytes.length,
          },
        }).length
      : 0,
  });
}

const n = (x) => x.toLocaleString("en-US");
const kib = (x) => `${n(x)} (${(x / 1024).toFixed(1)} KiB)`;
const cols = brotli ? ["raw", "gzip -9", "brotli q11"] : ["raw", "gzip -9"];
const row = (name, s, fmt) =>
  `| ${name} | ${[s.raw, s.gzip, ...(brotli ? [s.brotli] : [])].map(fmt).join(" | ")} |`;

console.log(`| file | ${cols.join(" | ")} |`);
console.log(`|---|${cols.map(() => "---:").join("|")}|`);
for (const f of files) console.log(row(`\`${f}\``, sizes.get(f), n));
for (const [name, list] of totals) {
  const sum = { raw: 0, gzip: 0, brotli: 0 };
  for (const f of list) for (const k of Object.keys(sum)) sum[k] += sizes.get(f)[k];
  console.log(row(name, sum, kib));
}
console.log();
console.log(
  "Bytes. Compressed per file (as HTTP content-encoding does), totals are sums. The page's " +
    "update.js imports demo-bluetooth.js and the demo's JS glue statically; the demo wasm is " +
    "fetched only when a demo device connects. `.d.ts` files are not downloaded.",
);
