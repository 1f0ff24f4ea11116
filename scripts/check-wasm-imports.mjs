#!/usr/bin/env node
// Guard: the wasm module must not import from "env". Such imports mean some dependency
// expects a C runtime or a host function (getrandom without its js feature, a C library,
// a stray `extern "C"`), and the module would fail to instantiate in the browser.
// Also prints the module's size, raw and gzip-compressed.
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const path = process.argv[2] ?? "pkg/otaweb_bg.wasm";
let bytes;
try {
  bytes = readFileSync(path);
} catch (e) {
  console.error(`check-wasm-imports: cannot read ${path}: ${e.message} (run \`make pkg\` first)`);
  process.exit(1);
}
const module = new WebAssembly.Module(bytes);
const imports = WebAssembly.Module.imports(module);
const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;
const gz = gzipSync(bytes, { level: 9 }).length;
console.log(`${path}: ${bytes.length} bytes (${kib(bytes.length)}) raw, ${gz} bytes (${kib(gz)}) gzip`);
console.log(`${imports.length} imports, ${WebAssembly.Module.exports(module).length} exports`);
for (const i of imports) console.log(`  ${i.module}.${i.name} (${i.kind})`);
const env = imports.filter((i) => i.module === "env");
if (env.length > 0) {
  console.error(`check-wasm-imports: FAIL: ${env.length} import(s) from "env":`);
  for (const i of env) console.error(`  env.${i.name} (${i.kind})`);
  process.exit(1);
}
console.log('check-wasm-imports: ok (no "env" imports)');
