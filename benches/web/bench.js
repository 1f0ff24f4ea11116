// Client-side throughput, the same code in headless Chromium (run.mjs) and in Node
// (node.mjs): otaweb's wasm against the platform's native code (WebCrypto or node:crypto and
// zlib) and the npm packages hash-wasm, js-sha256 (its plain-JS build, as a browser runs
// it), spark-md5, pako and fflate, on the same buffers in the same run. Returns rows for
// benches/RESULTS.md; measurements, never asserted.
//
// `run(libs)` takes the modules, loaded by the caller from wherever its platform finds them:
// `otaweb` (pkg/otaweb.js, initialised), `hashWasm`, `jsSha256` (the default export),
// `SparkMD5`, `pako`, `fflate`, and `native`: `{ name, sha256(bytes) → Promise<hex>,
// sha256Stream?(chunks) → hex, md5?(bytes) → hex, inflate(zlib) → Promise<bytes> }`.
import { firmwareLike } from "./buffer.js";

/** Every timed run repeats the operation until it covered this much: browsers coarsen
 * performance.now(), so one small input would finish below the timer's resolution. */
const COVER = 16 << 20;
/** Streaming feeds pieces of this size, as a download or a flash reader hands them over. */
export const CHUNK = 64 << 10;
export const SIZES = [64 << 10, 1 << 20, 16 << 20];
const RUNS = 7;

/** ms per operation of each of `fns`, best of RUNS. The runs take turns (every function once,
 * then again), so a burst of load elsewhere on the machine hits them all alike. */
async function best(size, fns) {
  const reps = Math.max(1, Math.floor(COVER / size));
  const t = fns.map(() => Infinity);
  for (let r = 0; r < RUNS; r++) {
    for (const [i, fn] of fns.entries()) {
      const start = performance.now();
      for (let k = 0; k < reps; k++) await fn();
      t[i] = Math.min(t[i], (performance.now() - start) / reps);
    }
  }
  return t;
}

/** The pieces a stream of `data` arrives in. */
function chunks(data) {
  const out = [];
  for (let at = 0; at < data.length; at += CHUNK) out.push(data.subarray(at, at + CHUNK));
  return out;
}

export const label = (size) => (size >= 1 << 20 ? `${size >> 20} MiB` : `${size >> 10} KiB`);

const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

/** The implementations of each operation: [name, (data, zlib) → result]. Results are checked
 * against the first before anything is timed. */
function suites({ otaweb, hashWasm, jsSha256, SparkMD5, pako, fflate, native }) {
  const inOtaweb = (alg) => (data) => {
    const h = new otaweb.Hasher(alg);
    for (const c of chunks(data)) h.update(c);
    const hex = h.digest();
    h.free();
    return hex;
  };
  const inHashWasm = (create) => async (data) => {
    const h = await create();
    h.init();
    for (const c of chunks(data)) h.update(c);
    return h.digest("hex");
  };
  const sha256 = [
    ["otaweb wasm `digest`", (d) => otaweb.digest(d, "sha256")],
    [`${native.name}`, (d) => native.sha256(d)],
    ["hash-wasm `sha256`", (d) => hashWasm.sha256(d)],
    ["js-sha256 (plain JS)", (d) => jsSha256(d)],
  ];
  const sha256Stream = [
    ["otaweb wasm `Hasher`", inOtaweb("sha256")],
    ["hash-wasm `createSHA256`", inHashWasm(hashWasm.createSHA256)],
    [
      "js-sha256 `create().update()` (plain JS)",
      (d) => {
        const h = jsSha256.create();
        for (const c of chunks(d)) h.update(c);
        return h.hex();
      },
    ],
  ];
  if (native.sha256Stream) sha256Stream.push([native.name, (d) => native.sha256Stream(chunks(d))]);
  const md5 = [
    ["otaweb wasm `digest`", (d) => otaweb.digest(d, "md5")],
    ...(native.md5 ? [[native.name, (d) => native.md5(d)]] : []),
    ["hash-wasm `md5`", (d) => hashWasm.md5(d)],
    // spark-md5 takes ArrayBuffers; each benchmark buffer owns its whole buffer.
    ["spark-md5 `ArrayBuffer.hash`", (d) => SparkMD5.ArrayBuffer.hash(d.buffer)],
  ];
  const md5Stream = [
    ["otaweb wasm `Hasher`", inOtaweb("md5")],
    ["hash-wasm `createMD5`", inHashWasm(hashWasm.createMD5)],
  ];
  const inflate = [
    ["otaweb wasm `inflate` (miniz_oxide, checks Adler-32)", (d, z) => otaweb.inflate(z, d.length)],
    [native.inflateName, (d, z) => native.inflate(z)],
    ["pako `inflate`", (d, z) => pako.inflate(z)],
    // fflate's fastest form: told the output size. It does not check the Adler-32.
    ["fflate `unzlibSync` (output size given; skips Adler-32)", (d, z) => fflate.unzlibSync(z, { out: new Uint8Array(d.length) })],
    ["fflate `unzlibSync` (no size)", (d, z) => fflate.unzlibSync(z)],
  ];
  return [
    ["SHA-256, one shot", sha256],
    [`SHA-256, streaming (${CHUNK >> 10} KiB pieces)`, sha256Stream],
    ["MD5, one shot", md5],
    [`MD5, streaming (${CHUNK >> 10} KiB pieces)`, md5Stream],
    ["zlib inflate (MB/s of output)", inflate],
  ];
}

/** Rows `[operation, input, implementation, MB/s]` and the buffer's compression ratio. */
export async function run(libs) {
  const rows = [];
  let ratio;
  for (const size of SIZES) {
    const data = firmwareLike(size);
    // pako is zlib's own code: the same compressed bytes on both platforms.
    const zlib = libs.pako.deflate(data, { level: 6 });
    ratio = size / zlib.length;
    for (const [op, impls] of suites(libs)) {
      let expected;
      for (const [name, fn] of impls) {
        const got = await fn(data, zlib);
        if (expected === undefined) expected = got;
        const same = typeof got === "string" ? got === expected : equal(got, data);
        if (!same) throw new Error(`${op}: ${name} disagrees on ${label(size)}`);
      }
      const ms = await best(size, impls.map(([, fn]) => () => fn(data, zlib)));
      impls.forEach(([name], i) => rows.push([op, label(size), name, size / (ms[i] / 1000) / 1e6]));
    }
  }
  return { rows, ratio };
}

const fmt = (mbps) => (mbps >= 100 ? mbps.toFixed(0) : mbps.toFixed(1));

/** The rows as a markdown table, one column per input size. */
export function table(rows) {
  const sizes = [...new Set(rows.map((r) => r[1]))];
  const keys = [...new Set(rows.map((r) => `${r[0]}\u0000${r[2]}`))];
  const at = new Map(rows.map((r) => [`${r[0]}\u0000${r[2]}\u0000${r[1]}`, r[3]]));
  const out = [`| operation | implementation | ${sizes.map((s) => `${s}, MB/s`).join(" | ")} |`];
  out.push(`|---|---|${sizes.map(() => "---:").join("|")}|`);
  for (const key of keys) {
    const [op, impl] = key.split("\u0000");
    out.push(`| ${op} | ${impl} | ${sizes.map((s) => fmt(at.get(`${key}\u0000${s}`))).join(" | ")} |`);
  }
  return out.join("\n");
}

/** `SUMMARY|` rows (the format benches/RESULTS.md's summary table takes) for the targets:
 * SHA-256 streaming ≥ hash-wasm and ≥ 2 × js-sha256, inflate ≥ fflate, at 16 MiB. */
export function summary(rows, platform) {
  const size = label(SIZES[SIZES.length - 1]);
  const rate = (op, impl) => rows.find((r) => r[0] === op && r[1] === size && r[2].startsWith(impl))[3];
  const stream = `SHA-256, streaming (${CHUNK >> 10} KiB pieces)`;
  const inflate = "zlib inflate (MB/s of output)";
  const line = (figure, ours, name, theirs, factor) => {
    const ratio = ours / theirs;
    const target = factor === 1 ? `≥ 1 × ${name}` : `≥ ${factor} × ${name}`;
    return (
      `SUMMARY| ${figure} (${platform}) | ${fmt(ours)} MB/s | ${name} ${fmt(theirs)} MB/s | ` +
      `${ratio.toFixed(2)} | ${target} | ${ratio >= factor ? "yes" : "no"} |`
    );
  };
  const sha = rate(stream, "otaweb");
  const inf = rate(inflate, "otaweb");
  return [
    line(`SHA-256, ${size} streamed in ${CHUNK >> 10} KiB pieces`, sha, "hash-wasm", rate(stream, "hash-wasm"), 1),
    line(`SHA-256, ${size} streamed in ${CHUNK >> 10} KiB pieces`, sha, "js-sha256 (plain JS)", rate(stream, "js-sha256"), 2),
    line(`zlib inflate, ${size} output`, inf, "fflate (size given)", rate(inflate, "fflate `unzlibSync` (output size given"), 1),
  ].join("\n");
}
