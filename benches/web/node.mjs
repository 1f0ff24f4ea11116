// benches/web/bench.js in Node: otaweb's wasm (pkg/, the release build) against Node's own
// OpenSSL and zlib bindings (the native ceiling) and the npm packages, same buffers, same
// run. Prints a markdown section and `SUMMARY|` rows (`make bench`).
//
//   node benches/web/node.mjs [--pkg DIR]
//
// js-sha256's default entry in Node (its "node" export condition, src/node.mjs) hands
// buffers to node:crypto; `js-sha256/build/sha256.min.mjs` is its browser build, plain JS,
// which is what a page runs, so that is the one measured.
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { inflateSync } from "node:zlib";
import * as fflate from "fflate";
import * as hashWasm from "hash-wasm";
import jsSha256 from "js-sha256/build/sha256.min.mjs";
import * as pako from "pako";
import SparkMD5 from "spark-md5";
import { run, summary, table } from "./bench.js";

const root = resolve(new URL("../..", import.meta.url).pathname);
const argPkg = process.argv.indexOf("--pkg");
const pkg = resolve(argPkg >= 0 ? process.argv[argPkg + 1] : join(root, "pkg"));

const otaweb = await import(join(pkg, "otaweb.js"));
await otaweb.default({ module_or_path: await readFile(join(pkg, "otaweb_bg.wasm")) });

const native = {
  name: `node:crypto (OpenSSL ${process.versions.openssl})`,
  sha256: (d) => createHash("sha256").update(d).digest("hex"),
  sha256Stream: (pieces) => {
    const h = createHash("sha256");
    for (const p of pieces) h.update(p);
    return h.digest("hex");
  },
  md5: (d) => createHash("md5").update(d).digest("hex"),
  inflateName: `node:zlib \`inflateSync\` (zlib ${process.versions.zlib})`,
  inflate: (z) => new Uint8Array(inflateSync(z)),
};

const { rows, ratio } = await run({ otaweb, hashWasm, jsSha256, SparkMD5, pako, fflate, native });
console.log(
  `Node ${process.version} (V8 ${process.versions.v8}), \`node benches/web/node.mjs\`; otaweb from \`${pkg.replace(root + "/", "")}/\`. ` +
    `Input: \`benches/web/buffer.js\` firmware-like bytes (pseudo-random words and 0xFF runs; zlib level 6 ratio ${ratio.toFixed(2)}:1). ` +
    `Best of 7 runs taken in turns, each repeating the operation over at least 16 MiB; MB = 10^6 bytes.`,
);
console.log();
console.log(table(rows));
console.log();
console.log(summary(rows, "Node"));
