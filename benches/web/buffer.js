// The benchmark buffer, shared by the browser and Node benches and shaped like
// benches/image.rs's: pseudo-random words with compressible 0xFF runs, as firmware is.
export function firmwareLike(len) {
  const out = new Uint8Array(len);
  let s = 0x9e3779b97f4a7c15n;
  const mask = (1n << 64n) - 1n;
  let i = 0;
  while (i < len) {
    s ^= (s << 13n) & mask;
    s ^= s >> 7n;
    s ^= (s << 17n) & mask;
    const lo = Number(s & 0xffffffffn);
    if ((lo & 0xff) < 32) {
      const run = ((lo >>> 8) & 0xff) % 64;
      out.fill(0xff, i, Math.min(len, i + run));
      i += run;
    } else {
      for (let k = 0; k < 4 && i < len; k++, i++) out[i] = (lo >>> (8 * k)) & 0xff;
    }
  }
  return out;
}
