// Click → first image byte, for a 1 MiB image and the demo gadget, in Debian's headless
// Chromium; prints markdown for benches/RESULTS.md (`make bench`). Measurements, never asserted.
//
//   node benches/web/first-byte.mjs [--runs N]
//
// What runs is the embeddable element's one click, through the same API calls it makes:
// `Updater.connectGadget({ bluetooth })` (the demo stand-in, www/demo-bluetooth.js, in front of
// the companion firmware compiled to wasm, pkg/demo/), then `updater.run(manifestUrl, { policy })`,
// which fetches the manifest and the image, verifies the image in wasm (size, SHA-256, MD5,
// ECDSA P-256) and installs it. Times are performance.now() in the page; phase boundaries come
// from the updater's own `stage` / `progress` events, the Resource Timing entries of the two
// fetches, and wrappers around the stand-in's radio.write (every value a characteristic
// write hands the radio) and radio.connect, installed by this bench (www/ is unchanged). The
// demo gadget is powered on before the click: provisioning its simulated flash is the
// stand-in's cost, not the updater's.
//
// "First image byte" is the first write on the AGT OTA stream (stream ID 2 in the high nibble
// of byte 0) that is a data packet (type bits of byte 1 not 0b11 = ACK/NACK): the first value
// carrying image bytes. The first write after the `stage` event "transfer" (the segment's
// announcement on the control stream) is printed too.
//
// The image is made here, at bench time: 1 MiB (1,048,576 bytes, exactly the demo gadget's
// slot size and so the largest image it accepts), the fixtures' header layout (magic OTAW,
// header version 1, image version 2, length) and a deterministic firmware-like body,
// signed with the repository's TEST-ONLY key (firmware-fixtures/files/keys/), into
// target/bench/first-byte/ with a one-entry manifest. A small static server in this process
// serves www/, pkg/, the fixtures and that directory on 127.0.0.1, as scripts/serve.mjs would.
import { join } from "node:path";
import { launchChromium } from "../../scripts/chromium.mjs";
import { makeImage, root, startServer, writeSignedEntry } from "./serve-update.mjs";

const out = join(root, "target", "bench", "first-byte");
const argRuns = process.argv.indexOf("--runs");
const RUNS = argRuns >= 0 ? Number(process.argv[argRuns + 1]) : 5;
/** The demo gadget's slot (firmware/demo/src/lib.rs SLOT_SIZE): offset + size ≤ 1 MiB. */
const SIZE = 1024 * 1024;
const VERSION = 2;

// ---- the image and its manifest ----------------------------------------------------------

function writeBenchFiles() {
  const image = makeImage(SIZE, VERSION);
  return writeSignedEntry(out, { file: "app-1mib.bin", manifest: "manifest.json", image, version: VERSION });
}

// ---- one run, in the page ----------------------------------------------------------------

/** Runs in the page: a fresh demo gadget (version 0) and one click's worth of API calls. */
async function pageRun({ manifestUrl, keyUrl }) {
  const now = () => performance.now();
  const tLoad = now();
  const otaweb = await import("/pkg/otaweb.js");
  await otaweb.default();
  const initMs = now() - tLoad;
  const demo = await import("/pkg/demo/otaweb_demo_device.js");
  await demo.default();
  const { createDemoBluetooth } = await import("/demo-bluetooth.js");
  const key = await (await fetch(keyUrl)).text();

  const bluetooth = createDemoBluetooth(() => new demo.DemoGadget(undefined, undefined, "otaweb demo gadget"));
  // Power the demo gadget on before the click (provisioning its 3 MiB simulated flash is the
  // stand-in's cost, not the updater's); the updater's requestDevice then finds this device.
  const device = await bluetooth.requestDevice({ acceptAllDevices: true });
  const radio = device.radio;
  const marks = {};
  const mark = (name) => {
    if (marks[name] === undefined) marks[name] = now();
  };
  const connects = [];
  const connect = radio.connect.bind(radio);
  radio.connect = () => {
    connects.push(now());
    return connect();
  };
  let imageBytes = 0;
  let writes = 0;
  // Every value any characteristic write method hands the radio.
  const write = radio.write.bind(radio);
  radio.write = (data, options) => {
    const t = now();
    const b = data instanceof Uint8Array ? data : new Uint8Array(data.buffer ?? data, data.byteOffset ?? 0, data.byteLength);
    writes += 1;
    if (marks.stageTransfer !== undefined) mark("firstWriteAfterTransfer");
    // AGT transport: stream ID in the high nibble of byte 0, type in bits 3..2 of byte 1.
    if (b[0] >> 4 === 2 && ((b[1] >> 2) & 3) !== 3) {
      if (marks.firstImageByte === undefined) marks.firstImageByte = t;
      imageBytes += b.length;
    }
    return write(data, options);
  };

  performance.clearResourceTimings();
  const t0 = now();
  const updater = await otaweb.Updater.connectGadget({ bluetooth });
  const tConnected = now();
  updater.addEventListener("stage", (e) => mark(`stage${e.detail.stage[0].toUpperCase()}${e.detail.stage.slice(1)}`));
  updater.addEventListener("progress", (e) => {
    if (e.detail.total > 0 && e.detail.confirmed >= e.detail.total) mark("allConfirmed");
  });
  updater.addEventListener("done", () => mark("done"));
  const result = await updater.run(manifestUrl, { policy: { trustedKeys: [key] } });
  const tEnd = now();
  const resource = (suffix) => performance.getEntriesByType("resource").find((r) => r.name.endsWith(suffix));
  const manifest = resource("/bench/manifest.json");
  const image = resource("/bench/app-1mib.bin");
  const o = radio.options;
  const stats = { ...radio.stats };
  updater.close();
  return {
    outcome: result.outcome,
    initMs,
    t0,
    tConnected,
    // update() opens the link again (enabling notifications makes the gadget send its PV
    // packet, which starts the handshake): the first gatt.connect after run() began.
    tReopen: connects.find((t) => t > tConnected),
    tEnd,
    manifest: manifest && { start: manifest.startTime, end: manifest.responseEnd },
    image: image && { start: image.startTime, end: image.responseEnd },
    marks,
    imageBytes,
    writes,
    stats,
    radio: { intervalMs: o.intervalMs, packetsPerEvent: o.packetsPerEvent, txQueue: o.txQueue, rebootMs: o.rebootMs },
    userAgent: navigator.userAgent,
  };
}

/** Runs in another fresh page: verify's parts on the same 1 MiB, cold (the first call into a
 * fresh wasm instance, as in a real click) and warm (best of 5 later calls). */
async function pageVerify({ manifestUrl, keyUrl }) {
  const now = () => performance.now();
  const otaweb = await import("/pkg/otaweb.js");
  await otaweb.default();
  const key = await (await fetch(keyUrl)).text();
  const entry = JSON.parse(await (await fetch(manifestUrl)).text()).images[0];
  const bytes = new Uint8Array(await (await fetch(new URL(entry.url, manifestUrl))).arrayBuffer());
  const { signature, ...unsigned } = entry;
  const ops = {
    verifySigned: () => otaweb.VerifiedImage.verify(bytes, entry, key, false).free(),
    verifyUnsigned: () => otaweb.VerifiedImage.verify(bytes, unsigned, undefined, true).free(),
    sha256: () => otaweb.digest(bytes, "sha256"),
    md5: () => otaweb.digest(bytes, "md5"),
  };
  const time = (f) => {
    const s = now();
    f();
    return now() - s;
  };
  const out = { cold: time(ops.verifySigned) };
  for (const [name, f] of Object.entries(ops)) {
    out[name] = Math.min(...Array.from({ length: 5 }, () => time(f)));
  }
  return out;
}

// ---- main --------------------------------------------------------------------------------

const entry = writeBenchFiles();
const server = await startServer(out);
const origin = `http://127.0.0.1:${server.address().port}`;
const { context, close } = await launchChromium("first-byte");

const runs = [];
const verifies = [];
const urls = {
  manifestUrl: `${origin}/bench/manifest.json`,
  keyUrl: `${origin}/fixtures/keys/test-signing-key.pub.pem`,
};
/** `f` in a fresh page (a cold wasm instance), failing on any page error. */
async function inFreshPage(f) {
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  try {
    await page.goto(`${origin}/`);
    return await page.evaluate(f, urls);
  } catch (e) {
    throw new Error(`${e.message}\n${errors.join("\n")}`);
  } finally {
    await page.close();
  }
}
try {
  for (let i = 0; i < RUNS; i++) {
    const r = await inFreshPage(pageRun);
    if (r.outcome !== "done" || r.marks.firstImageByte === undefined || !r.image || !r.manifest || !r.tReopen) {
      throw new Error(`run ${i + 1} did not install the image as expected: ${JSON.stringify(r)}`);
    }
    runs.push(r);
    verifies.push(await inFreshPage(pageVerify));
    process.stderr.write(
      `first-byte: run ${i + 1}/${RUNS}: click → first image byte ${(r.marks.firstImageByte - r.t0).toFixed(1)} ms, ` +
        `transfer ${((r.marks.allConfirmed - r.marks.firstImageByte) / 1000).toFixed(2)} s\n`,
    );
  }
} finally {
  await close();
  server.close();
}

// ---- report ------------------------------------------------------------------------------

const phases = [
  ["connect: `Updater.connectGadget` (requestDevice, GATT connect, service, characteristics, notifications)", (r) => r.tConnected - r.t0],
  ["fetch the manifest (`run` called → its Resource Timing responseEnd)", (r) => r.manifest.end - r.tConnected],
  ["fetch the image (manifest parsed, entry picked, 1 MiB over loopback HTTP → responseEnd)", (r) => r.image.end - r.manifest.end],
  ["verify in wasm and start the update (body into wasm, size, SHA-256, MD5, ECDSA P-256; `update()` until it opens the link again)", (r) => r.tReopen - r.image.end],
  ["reopen the link (gatt.connect, notifications on, the gadget's PV packet → stage `handshake`)", (r) => r.marks.stageHandshake - r.tReopen],
  ["handshake (stage `handshake` → `discover`)", (r) => r.marks.stageDiscover - r.marks.stageHandshake],
  ["discover: read the device's version (→ stage `transfer`)", (r) => r.marks.stageTransfer - r.marks.stageDiscover],
  ["transfer start: the segment's announcement and its answer (stage `transfer` → first image byte)", (r) => r.marks.firstImageByte - r.marks.stageTransfer],
  ["**click → first image byte**", (r) => r.marks.firstImageByte - r.t0],
  ["… of which fetch + verify (`run` called → the link reopened)", (r) => r.tReopen - r.tConnected],
  ["… of which connect, reopen, handshake, discover, transfer start", (r) => r.tConnected - r.t0 + (r.marks.firstImageByte - r.tReopen)],
  ["(proxy: click → first write after stage `transfer`)", (r) => r.marks.firstWriteAfterTransfer - r.t0],
  ["transfer: first image byte → all bytes confirmed (`progress` confirmed = total)", (r) => r.marks.allConfirmed - r.marks.firstImageByte],
  ["apply, restart, confirm (→ `done`)", (r) => r.marks.done - r.marks.allConfirmed],
  ["click → done", (r) => r.tEnd - r.t0],
];
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const best = (xs) => Math.min(...xs);
const ms = (x) => (x >= 1000 ? x.toFixed(0) : x >= 100 ? x.toFixed(0) : x.toFixed(1));
const n = (x) => x.toLocaleString("en-US");

const r0 = runs[0];
const { intervalMs, packetsPerEvent, txQueue, rebootMs } = r0.radio;
const ceiling = ((packetsPerEvent * (244 - 3)) / intervalMs) * 1000;
console.log(`Browser: ${r0.userAgent}\n`);
console.log(
  `Image: ${n(entry.size)} bytes (exactly 1 MiB: the demo gadget's slot size, the largest image it accepts), ` +
    `version ${VERSION}, signed with the test key, made at bench time in \`target/bench/first-byte/\` and served over ` +
    `loopback HTTP. Each run is a fresh page: a factory-fresh demo gadget (version 0), a cold wasm instance. ` +
    `${RUNS} runs; best and median of each row on its own (the best of a sum is not the sum of the bests).`,
);
console.log();
console.log(
  `Timed: the element's one click, through the API calls it makes — \`Updater.connectGadget({ bluetooth: stand-in })\`, ` +
    `then \`updater.run(manifestUrl, { policy: { trustedKeys: [test key] } })\` (fetch and verify in wasm, install) — ` +
    `with performance.now() in the page. "First image byte" is the first value written on the AGT OTA stream ` +
    `(stream ID 2, a data packet), decoded from what the stand-in's radio is handed (a wrapper installed by the bench); ` +
    `the first write after stage \`transfer\` (the proxy) is the segment's announcement on the control stream.`,
);
console.log();
console.log(
  `Radio: the stand-in's defaults (\`www/demo-bluetooth.js\`): a connection event every ${intervalMs} ms carries up to ` +
    `${packetsPerEvent} written values, OS queue ${txQueue} values, reboot ${rebootMs} ms, connect 5 ms; the demo gadget ` +
    `announces packet size 244 (ATT MTU 247) and transactions of up to 5000 bytes. Ceiling: ${packetsPerEvent} × 241 ` +
    `payload bytes per ${intervalMs} ms = ${(ceiling / 1000).toFixed(1)} kB/s.`,
);
console.log();
console.log("| phase | best ms | median ms |");
console.log("|---|---:|---:|");
for (const [name, f] of phases) {
  const xs = runs.map(f);
  console.log(`| ${name} | ${ms(best(xs))} | ${ms(median(xs))} |`);
}
console.log();
const transfers = runs.map((r) => r.marks.allConfirmed - r.marks.firstImageByte);
const rate = (t) => entry.size / (t / 1000);
console.log(
  `**1 MiB transfer**: best ${(best(transfers) / 1000).toFixed(2)} s = ${(rate(best(transfers)) / 1000).toFixed(1)} kB/s, ` +
    `median ${(median(transfers) / 1000).toFixed(2)} s = ${(rate(median(transfers)) / 1000).toFixed(1)} kB/s ` +
    `(${((100 * rate(median(transfers))) / ceiling).toFixed(0)} % of the radio's ceiling; kB = 10^3 bytes). ` +
    `${n(r0.writes)} values written per run, ${n(r0.stats.writtenBytes)} bytes, ${n(r0.imageBytes)} of them ` +
    `OTA-stream data packets (headers included).`,
);
console.log();
console.log("The verify phase's parts, in another fresh page per run on the same 1 MiB (ms):");
console.log();
console.log("| what | best | median |");
console.log("|---|---:|---:|");
const rows = [
  ["`VerifiedImage.verify`, signed entry, **cold**: the first call into a fresh wasm instance, as in a click", (v) => v.cold],
  ["`VerifiedImage.verify`, signed entry, warm (best of 5 calls): size, SHA-256, MD5, ECDSA P-256", (v) => v.verifySigned],
  ["`VerifiedImage.verify`, unsigned entry, warm: size, SHA-256, MD5", (v) => v.verifyUnsigned],
  ["`digest(bytes, \"sha256\")`, warm", (v) => v.sha256],
  ["`digest(bytes, \"md5\")`, warm", (v) => v.md5],
];
for (const [name, f] of rows) {
  const xs = verifies.map(f);
  console.log(`| ${name} | ${ms(best(xs))} | ${ms(median(xs))} |`);
}
const inits = runs.map((r) => r.initMs);
console.log(
  `| load and instantiate \`pkg/otaweb.js\` + wasm (before the click here; the element pays it on its first click) | ${ms(best(inits))} | ${ms(median(inits))} |`,
);
