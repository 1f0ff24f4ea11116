// The same measurements with Node's OpenSSL and zlib bindings: the native ceiling to compare with.
import { createHash } from "node:crypto";
import { deflateSync, inflateSync } from "node:zlib";

function firmwareLike(len) {
  const out = Buffer.alloc(len);
  let s = 0x9e3779b97f4a7c15n;
  const mask = (1n << 64n) - 1n;
  let i = 0;
  while (i < len) {
    s ^= (s << 13n) & mask;
    s ^= s >> 7n;
    s ^= (s << 17n) & mask;
    const lo = Number(s & 0xffffffffn);
    if ((lo & 0xff) < 64) {
      const run = ((lo >>> 8) & 0xff) % 64;
      out.fill(0xff, i, Math.min(len, i + run));
      i += run;
    } else {
      for (let k = 0; k < 4 && i < len; k++, i++) out[i] = (lo >>> (8 * k)) & 0xff;
    }
  }
  return out;
}

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
const data = firmwareLike(size);
const z = deflateSync(data, { level: 6 });
const mbps = (ms) => Math.round(size / (ms / 1000) / 1e6);
console.log(`| node ${process.version} (OpenSSL) | SHA-256 | 16 MiB | ${mbps(best(5, () => createHash("sha256").update(data).digest()))} |`);
console.log(`| node ${process.version} (OpenSSL) | MD5 | 16 MiB | ${mbps(best(5, () => createHash("md5").update(data).digest()))} |`);
console.log(`| node ${process.version} (zlib) | zlib inflate, MB/s of output | 16 MiB | ${mbps(best(5, () => inflateSync(z)))} |`);
console.log(`| node ${process.version} (zlib) | zlib deflate level 6, MB/s of input | 16 MiB | ${mbps(best(5, () => deflateSync(data, { level: 6 })))} |`);
