// Runs inside headless Chromium: otaweb's wasm against the browser's own implementations on
// the same buffers in the same page. Returns rows for benches/RESULTS.md.
import init, { digest, inflate } from "/pkg/otaweb.js";
import { firmwareLike } from "/buffer.js";

// Each timed run repeats the operation until it has covered 16 MiB: the browser coarsens
// performance.now(), so a single small input would finish below the timer's resolution.
const COVER = 16 << 20;

async function best(runs, size, fn) {
  const reps = Math.max(1, Math.floor(COVER / size));
  let t = Infinity;
  for (let r = 0; r < runs; r++) {
    const start = performance.now();
    for (let k = 0; k < reps; k++) await fn();
    t = Math.min(t, (performance.now() - start) / reps);
  }
  return t;
}

const mbps = (bytes, ms) => Math.round(bytes / (ms / 1000) / 1e6);

async function nativeInflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function nativeDeflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

export async function run() {
  await init();
  const rows = [];
  const runs = 5;
  for (const size of [64 << 10, 1 << 20, 16 << 20]) {
    const label = size >= 1 << 20 ? `${size >> 20} MiB` : `${size >> 10} KiB`;
    const data = firmwareLike(size);
    const wasmSha = await best(runs, size, () => digest(data, "sha256"));
    const subtleSha = await best(runs, size, () => crypto.subtle.digest("SHA-256", data));
    const wasmMd5 = await best(runs, size, () => digest(data, "md5"));
    rows.push(["SHA-256", label, "otaweb wasm", mbps(size, wasmSha)]);
    rows.push(["SHA-256", label, "WebCrypto subtle.digest", mbps(size, subtleSha)]);
    rows.push(["MD5", label, "otaweb wasm (WebCrypto has no MD5)", mbps(size, wasmMd5)]);
    const zlib = await nativeDeflate(data);
    const wasmInflate = await best(runs, size, () => inflate(zlib, size));
    const streamInflate = await best(runs, size, () => nativeInflate(zlib));
    const check = inflate(zlib, size);
    if (check.length !== size || digest(check, "sha256") !== digest(data, "sha256")) {
      throw new Error("wasm inflate disagrees with the browser's deflate output");
    }
    rows.push(["zlib inflate (MB/s of output)", label, "otaweb wasm (miniz_oxide)", mbps(size, wasmInflate)]);
    rows.push(["zlib inflate (MB/s of output)", label, "browser DecompressionStream", mbps(size, streamInflate)]);
  }
  return { userAgent: navigator.userAgent, rows };
}
