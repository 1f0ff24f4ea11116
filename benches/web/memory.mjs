// Peak wasm linear memory of otaweb during a whole 7 MiB update, and the time to prepare
// that image, in Debian's headless Chromium; prints markdown and `SUMMARY|` rows for
// benches/RESULTS.md (`make bench`). Measurements, never asserted.
//
//   node benches/web/memory.mjs [--pkg DIR]
//
// Linear memory only grows, so the `byteLength` of otaweb's own `WebAssembly.Memory` (what
// its init resolves with; the demo device is another instance with its own memory) after
// the update is its peak. Each case runs in a fresh page, so a fresh instance:
//
// - `run` (the element's path): `updater.run(manifestUrl)` fetches the manifest and the
//   image into wasm, verifies it (size, SHA-256, MD5, ECDSA P-256) and installs it.
// - `run`, zlib entry: the same with the file compressed (`compression: "zlib"`).
// - `VerifiedImage.verify` + `update`: the explicit API, the page holding the image's bytes.
//
// The device is the demo gadget (firmware/demo, the companion firmware in wasm) with 8 MiB
// slots (its `slotSize`), behind the stand-in radio (www/demo-bluetooth.js) set fast (a
// connection event every 1 ms carrying up to 200 values) so 7 MiB take seconds, not the
// 44 s a 2M PHY link would. The image: 7 MiB (7,340,032 bytes) in the fixtures' layout,
// signed with the repository's TEST-ONLY key, made here into target/bench/memory/.
//
// Preparing: chunking and framing happen inside the flow as the link asks for packets, so
// they cannot be timed apart from an update. What is timed is the main thread's script time
// over the whole update (Chromium's own `ScriptDuration`, read over CDP before and after:
// JavaScript and wasm, not the idle waits for the radio's connection events) minus the time
// inside the demo device's calls (its flash writes and checks, timed in the page). That is
// fetching into wasm, verify (size, SHA-256, MD5, ECDSA P-256), chunking, framing, the flow,
// the events and the stand-in radio's own JavaScript: an upper bound on preparing. Also
// `VerifiedImage.verify` of the signed 7 MiB entry alone, in another fresh page, cold (the
// instance's first call) and warm.
import { join, resolve } from "node:path";
import { deflateSync } from "node:zlib";
import { launchChromium } from "../../scripts/chromium.mjs";
import { makeImage, root, startServer, writeSignedEntry } from "./serve-update.mjs";

const out = join(root, "target", "bench", "memory");
const argPkg = process.argv.indexOf("--pkg");
const pkg = resolve(argPkg >= 0 ? process.argv[argPkg + 1] : join(root, "pkg"));
const SIZE = 7 << 20;
const SLOT = 8 << 20;
const VERSION = 2;
const MiB = 1 << 20;
/** The link the preparing target is measured against: 2M PHY, ATT MTU 247 (issue 9). */
const LINK_BYTES_PER_SECOND = 165e3;

const image = makeImage(SIZE, VERSION);
const plain = writeSignedEntry(out, { file: "app-7mib.bin", manifest: "manifest.json", image, version: VERSION });
const packed = deflateSync(image, { level: 9 });
writeSignedEntry(out, {
  file: "app-7mib.bin.z",
  manifest: "manifest-zlib.json",
  image,
  version: VERSION,
  compressed: packed,
});

/** Runs in the page: one 7 MiB update of a fresh 8 MiB-slot demo gadget in `mode`. */
async function pageUpdate({ mode, manifestUrl, keyUrl, slot }) {
  const now = () => performance.now();
  const otaweb = await import("/pkg/otaweb.js");
  const wasm = await otaweb.default();
  const memory = () => wasm.memory.buffer.byteLength;
  const initial = memory();
  const demo = await import("/pkg/demo/otaweb_demo_device.js");
  await demo.default();
  const { createDemoBluetooth } = await import("/demo-bluetooth.js");
  const key = await (await fetch(keyUrl)).text();
  let deviceMs = 0;
  // Times every call into the demo device: its share of the update's wall time.
  const timed = (gadget) =>
    new Proxy(gadget, {
      get(target, name) {
        const value = target[name];
        if (typeof value !== "function") return value;
        return (...args) => {
          const start = now();
          try {
            return value.apply(target, args);
          } finally {
            deviceMs += now() - start;
          }
        };
      },
    });
  const radio = { intervalMs: 1, packetsPerEvent: 200, txQueue: 200 };
  const bluetooth = createDemoBluetooth(() => timed(new demo.DemoGadget(undefined, undefined, "otaweb demo gadget", slot)), radio);
  await bluetooth.requestDevice({ acceptAllDevices: true });
  const updater = await otaweb.Updater.connectGadget({ bluetooth });
  await window.benchMark("start");
  deviceMs = 0;
  const t0 = now();
  let result;
  if (mode === "api") {
    const entry = JSON.parse(await (await fetch(manifestUrl)).text()).images[0];
    const bytes = new Uint8Array(await (await fetch(new URL(entry.url, manifestUrl))).arrayBuffer());
    const verified = otaweb.VerifiedImage.verify(bytes, entry, key, false);
    result = await updater.update(verified);
    verified.free();
  } else {
    result = await updater.run(manifestUrl, { policy: { trustedKeys: [key] } });
  }
  const t1 = now();
  await window.benchMark("end");
  updater.close();
  return { outcome: result.outcome, initial, peak: memory(), wallMs: t1 - t0, deviceMs };
}

/** Runs in the page: `VerifiedImage.verify` of the signed entry, cold then warm (best of 3). */
async function pageVerify({ manifestUrl, keyUrl }) {
  const now = () => performance.now();
  const otaweb = await import("/pkg/otaweb.js");
  await otaweb.default();
  const key = await (await fetch(keyUrl)).text();
  const entry = JSON.parse(await (await fetch(manifestUrl)).text()).images[0];
  const bytes = new Uint8Array(await (await fetch(new URL(entry.url, manifestUrl))).arrayBuffer());
  const time = () => {
    const s = now();
    otaweb.VerifiedImage.verify(bytes, entry, key, false).free();
    return now() - s;
  };
  const cold = time();
  return { cold, warm: Math.min(time(), time(), time()) };
}

const server = await startServer(out, pkg);
const origin = `http://127.0.0.1:${server.address().port}`;
const { context, close } = await launchChromium("memory");
const keyUrl = `${origin}/fixtures/keys/test-signing-key.pub.pem`;
/** Who a sampled frame belongs to: by its script's URL (a wasm function's is its `.wasm`
 * file's), or the profiler's own names for idle, garbage collection and the rest. (No
 * Debugger domain: it would make wasm run in its slow debugging tier.) */
function owner(url, functionName) {
  if (functionName === "(idle)") return "idle";
  if (functionName === "(garbage collector)") return "gc";
  if (url.includes("/pkg/demo/")) return "device";
  if (url.includes("/pkg/")) return "otaweb";
  if (url.endsWith("/demo-bluetooth.js")) return "radio";
  return "other";
}

/** `f(arg)` in a fresh page. Between the `benchMark("start")` and `benchMark("end")` it
 * awaits, `scriptMs` is the page's ScriptDuration and, with `profile`, `selfMs` the sampled
 * self time per owner (otaweb's wasm and glue, the demo device, the stand-in radio, other). */
async function inFreshPage(f, arg, profile = false) {
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  const cdp = await context.newCDPSession(page);
  await cdp.send("Performance.enable");
  if (profile) {
    await cdp.send("Profiler.enable");
    await cdp.send("Profiler.setSamplingInterval", { interval: 200 });
  }
  const script = {};
  let selfMs;
  await page.exposeFunction("benchMark", async (name) => {
    const { metrics } = await cdp.send("Performance.getMetrics");
    script[name] = metrics.find((m) => m.name === "ScriptDuration").value * 1000;
    if (profile && name === "start") await cdp.send("Profiler.start");
    if (profile && name === "end") {
      const { profile: p } = await cdp.send("Profiler.stop");
      const byId = new Map(p.nodes.map((n) => [n.id, n]));
      selfMs = { otaweb: 0, device: 0, radio: 0, gc: 0, other: 0, idle: 0 };
      p.samples.forEach((id, i) => {
        const frame = byId.get(id).callFrame;
        const who = owner(frame.url, frame.functionName);
        selfMs[who] += (p.timeDeltas[i + 1] ?? 0) / 1000;
      });
    }
  });
  try {
    await page.goto(`${origin}/`);
    const result = await page.evaluate(f, arg);
    return { ...result, scriptMs: script.end - script.start, selfMs };
  } catch (e) {
    throw new Error(`${e.message}\n${errors.join("\n")}`);
  } finally {
    await page.close();
  }
}

const cases = [
  ["`updater.run(manifest)` (the element's path), plain image", "run", "manifest.json", SIZE],
  ["`updater.run(manifest)`, zlib entry", "run", "manifest-zlib.json", packed.length],
  ["`VerifiedImage.verify(bytes)` + `updater.update(image)` (explicit API)", "api", "manifest.json", SIZE],
];
const results = [];
let verify;
let profiled;
try {
  for (const [name, mode, manifest, fetched] of cases) {
    const r = await inFreshPage(pageUpdate, { mode, manifestUrl: `${origin}/bench/${manifest}`, keyUrl, slot: SLOT });
    if (r.outcome !== "done") throw new Error(`${name}: the update ended ${r.outcome}`);
    results.push({ name, mode, fetched, ...r });
    process.stderr.write(`memory: ${name}: peak ${(r.peak / MiB).toFixed(2)} MiB, ${(r.wallMs / 1000).toFixed(2)} s\n`);
  }
  verify = await inFreshPage(pageVerify, { manifestUrl: `${origin}/bench/manifest.json`, keyUrl });
  profiled = await inFreshPage(pageUpdate, { mode: "run", manifestUrl: `${origin}/bench/manifest.json`, keyUrl, slot: SLOT }, true);
} finally {
  await close();
  server.close();
}

const mib = (b) => (b / MiB).toFixed(2);
const budget = SIZE + 2 * MiB;
console.log(
  `\`node benches/web/memory.mjs\`, headless Chromium; otaweb from \`${pkg.replace(root + "/", "")}/\`. A ${SIZE.toLocaleString("en-US")}-byte ` +
    `(7 MiB) signed gadget image installed on a fresh demo gadget with 8 MiB slots; otaweb's own linear memory ` +
    `(\`WebAssembly.Memory.buffer.byteLength\`, which only grows: its final size is its peak), one fresh page per case. ` +
    `Budget: image + 2 MiB = ${mib(budget)} MiB.`,
);
console.log();
console.log("| case | file fetched | memory after init, MiB | peak, MiB | peak − init, MiB | ≤ image + 2 MiB? |");
console.log("|---|---:|---:|---:|---:|---|");
for (const r of results) {
  console.log(
    `| ${r.name} | ${mib(r.fetched)} MiB | ${mib(r.initial)} | ${mib(r.peak)} | ${mib(r.peak - r.initial)} | ${r.peak <= budget ? "yes" : "no"} |`,
  );
}
console.log();
const run = results[0];
const api = results[2];
const linkMs = (SIZE / LINK_BYTES_PER_SECOND) * 1000;
const prepareMs = run.scriptMs - run.deviceMs;
console.log(`Preparing the same 7 MiB image (ms; the link time at 2M PHY, ${LINK_BYTES_PER_SECOND / 1000} kB/s, is ${(linkMs / 1000).toFixed(1)} s):`);
console.log();
console.log("| what | ms | share of the link time |");
console.log("|---|---:|---:|");
const pct = (ms) => `${((100 * ms) / linkMs).toFixed(2)} %`;
console.log(`| \`VerifiedImage.verify\`, cold (size, SHA-256, MD5, ECDSA P-256; the image copied into wasm) | ${verify.cold.toFixed(0)} | ${pct(verify.cold)} |`);
console.log(`| \`VerifiedImage.verify\`, warm (best of 3) | ${verify.warm.toFixed(0)} | ${pct(verify.warm)} |`);
for (const r of results) {
  const own = r.scriptMs - r.deviceMs;
  console.log(
    `| ${r.name}: script time over the update ${r.scriptMs.toFixed(0)} ms (wall ${r.wallMs.toFixed(0)} ms on the fast radio) − inside the demo device ${r.deviceMs.toFixed(0)} ms | ${r === run ? "**" : ""}${own.toFixed(0)}${r === run ? "**" : ""} | ${pct(own)} |`,
  );
}
const sm = profiled.selfMs;
const sampled = sm.otaweb + sm.device + sm.radio + sm.gc + sm.other;
console.log();
console.log(
  `Where the main thread's time went in one more \`run\` update, sampled by Chromium's profiler every 0.2 ms ` +
    `(self time by script; the profiler slows the page a little): otaweb (its wasm and JS glue) ` +
    `**${sm.otaweb.toFixed(0)} ms**, the demo device ${sm.device.toFixed(0)} ms, the stand-in radio's JavaScript ` +
    `${sm.radio.toFixed(0)} ms, garbage collection ${sm.gc.toFixed(0)} ms, everything else (the browser's own work: ` +
    `fetch, events, promise turns, compiling) ${sm.other.toFixed(0)} ms; ${sampled.toFixed(0)} ms busy of ` +
    `${profiled.wallMs.toFixed(0)} ms wall.`,
);
console.log();
console.log(
  `SUMMARY| prepare 7 MiB (verify + chunk + frame), Chromium | ${prepareMs.toFixed(0)} ms = ${pct(prepareMs)} of the 2M PHY link time | ` +
    `link ${(linkMs / 1000).toFixed(1)} s | ${(prepareMs / linkMs).toFixed(4)} | < 2 % | ${prepareMs < 0.02 * linkMs ? "yes" : "no"} |`,
);
console.log(
  `SUMMARY| peak wasm memory, 7 MiB update via \`run\`, Chromium | ${mib(run.peak)} MiB | budget image + 2 MiB = ${mib(budget)} MiB | ` +
    `${(run.peak / budget).toFixed(2)} | ≤ image + 2 MiB | ${run.peak <= budget ? "yes" : "no"} |`,
);
console.log(
  `SUMMARY| peak wasm memory, 7 MiB update via \`verify\` + \`update\`, Chromium | ${mib(api.peak)} MiB | budget ${mib(budget)} MiB | ` +
    `${(api.peak / budget).toFixed(2)} | ≤ image + 2 MiB | ${api.peak <= budget ? "yes" : "no"} |`,
);
