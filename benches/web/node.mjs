// The same measurements with Node's OpenSSL and zlib bindings: the native ceiling to compare with.
import { createHash } from "node:crypto";
import { deflateSync, inflateSync } from "node:zlib";
import { firmwareLike } from "./buffer.js";

const best = (runs, fn) => {
  let t = Infinity;
  for (let r = 0; r < runs; r++) {
    const start = performance.now();
    fn();
    t = Math.min(t, performance.now() - start);
  }
  return t;
};
const size = 16 << 20;
const data = Buffer.from(firmwareLike(size).buffer);
const z = deflateSync(data, { level: 6 });
const mbps = (ms) => Math.round(size / (ms / 1000) / 1e6);
console.log(`| node ${process.version} (OpenSSL) | SHA-256 | 16 MiB | ${mbps(best(5, () => createHash("sha256").update(data).digest()))} |`);
console.log(`| node ${process.version} (OpenSSL) | MD5 | 16 MiB | ${mbps(best(5, () => createHash("md5").update(data).digest()))} |`);
console.log(`| node ${process.version} (zlib) | zlib inflate, MB/s of output | 16 MiB | ${mbps(best(5, () => inflateSync(z)))} |`);
console.log(`| node ${process.version} (zlib) | zlib deflate level 6, MB/s of input | 16 MiB | ${mbps(best(5, () => deflateSync(data, { level: 6 })))} |`);
