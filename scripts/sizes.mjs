#!/usr/bin/env node
// What a browser downloads, raw and compressed: prints a markdown table of every file the
// page, the embeddable element and the demo device load, with totals. `make bench` puts it
// in benches/RESULTS.md ("Shipped sizes"); it reads the files as they are (run
// scripts/build-wasm.sh first for current pkg/ sizes). No dependencies.
//
//   node scripts/sizes.mjs [--no-brotli] [--contributors NAMED.wasm]
//
// --contributors lists the biggest parts of the updater's wasm, from a build of the same code
// that kept its name section (wasm-opt -g; `make bench` makes one): code bytes per crate, per
// otaweb module, and the data section, read straight from the binary (no twiggy needed).
//
// gzip is node:zlib at level 9; brotli is node:zlib's brotliCompressSync at quality 11 (what
// a server precompressing its static files would serve).
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { brotliCompressSync, constants, gzipSync } from "node:zlib";

const root = resolve(fileURLToPath(new URL("..", import.meta.url)));
const brotli = !process.argv.includes("--no-brotli");
const namedAt = process.argv.indexOf("--contributors");
const named = namedAt > 0 ? process.argv[namedAt + 1] : null;
/** MQTT.js 5.16.0 `dist/mqtt.min.js`, gzip -9 (shared/PEERS.md §3, measured there). */
const MQTTJS_GZIP = 105_039;

/** Purposes, by the contributor keys of `group` (first match wins). */
const AREAS = [
  ["MQTT 3.1.1 client: wire, session, WebSocket edge", /^otaweb::(wire::mqtt|flow::mqtt|web::(mqtt|socket|ws))$/],
  ["EnOS: topics, JSON, signing, the agent", /^(otaweb::(wire::enos|flow::enos|web::enos)|sha1|hmac)$/],
  ["Alexa Gadgets: transport, protobuf, flow", /^(otaweb::(wire::agt\w*|flow::gadget)|prost)$/],
  ["SiFli DFU: messages, package, flow", /^(otaweb::(wire::(dfu|sifli)|flow::dfu|image::(sifli|dfu_bundle))|tar_no_std)$/],
  ["signatures: ECDSA P-256, RSA-2048, keys", /^(otaweb::image::signature|p256|primeorder|elliptic_curve|ecdsa|crypto_bigint|rsa|spki|der|pkcs1|pkcs8|sec1|base64ct|pem_rfc7468|subtle|signature|const_oid|hybrid_array|wnaf|ctutils)$/],
  ["hashes and ciphers: SHA-256, MD5, AES-CTR", /^(sha2|md5|md_5|aes|ctr|cipher|digest|block_buffer)$/],
  ["zlib inflate", /^(otaweb::image::zlib|miniz_oxide|adler2)$/],
  ["manifests, image checks, the update service, JSON", /^(otaweb::(image::(manifest|verify|version|digest|chunk)|flow::service|error)|serde_json|serde|serde_core|base64|zmij|itoa)$/],
  ["the web edge: updater, BLE, service, exports", /^(otaweb::web(::\w+)?|exported functions \(otaweb API shims\)|js_sys|wasm_bindgen|wasm_bindgen_futures|web_sys|__wbg_\w+_free|__externref_\w+)$/],
  ["Rust runtime: core, alloc, formatting, allocator", /^(core|alloc|dlmalloc|f64|T|D|F|std|compiler_builtins|char|str|[ui](8|16|32|64|128|size)|__rustc|__\w+ti\d|__floatuntidf|\(unnamed\))$/],
];

/** The areas that are the four protocols themselves: wire formats and flows. */
const PROTOCOLS = AREAS.slice(0, 4).map(([name]) => name);

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

const element = ELEMENT.reduce((sum, f) => sum + sizes.get(f).gzip, 0);
console.log(
  `SUMMARY| shipped for an update: element + JS glue + wasm, gzip -9 | ${n(element)} B | MQTT.js alone ${n(MQTTJS_GZIP)} B | ` +
    `${(element / MQTTJS_GZIP).toFixed(2)} | < MQTT.js (${n(MQTTJS_GZIP)} B) | ${element < MQTTJS_GZIP ? "yes" : "no"} |`,
);

if (named) contributors(readFileSync(named));

/** Prints the wasm's code bytes grouped by crate and by otaweb module, and its data bytes. */
function contributors(wasm) {
  let at = 8;
  const leb = () => {
    let v = 0;
    for (let shift = 0; ; shift += 7) {
      const b = wasm[at++];
      v += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return v;
    }
  };
  const text = (len) => new TextDecoder().decode(wasm.subarray(at, (at += len)));
  let imported = 0;
  let bodies = [];
  const starts = [];
  let data = 0;
  const names = new Map();
  while (at < wasm.length) {
    const id = wasm[at++];
    const size = leb();
    const end = at + size;
    if (id === 2) {
      for (let i = leb(); i > 0; i--) {
        text(leb());
        text(leb());
        const kind = wasm[at++];
        if (kind === 0) (leb(), imported++);
        else if (kind === 1) (at++, wasm[at++] & 1 ? (leb(), leb()) : leb());
        else if (kind === 2) wasm[at++] & 1 ? (leb(), leb()) : leb();
        else if (kind === 3) at += 2;
        else leb();
      }
    } else if (id === 10) {
      for (let i = leb(); i > 0; i--) {
        const len = leb();
        bodies.push(len);
        starts.push(at);
        at += len;
      }
    } else if (id === 11) {
      data = size;
    } else if (id === 0 && text(leb()) === "name") {
      while (at < end) {
        const sub = wasm[at++];
        const subEnd = leb() + at;
        if (sub === 1) for (let i = leb(); i > 0; i--) names.set(leb(), text(leb()));
        at = subEnd;
      }
    }
    at = end;
  }
  const groups = new Map();
  const areas = new Map();
  const theirs = [];
  const protocols = [];
  const code = bodies.reduce((a, b) => a + b, 0);
  bodies.forEach((len, i) => {
    const key = group(names.get(imported + i) ?? "");
    const area = AREAS.find(([, re]) => re.test(key))?.[0] ?? "everything else";
    const parts = areas.get(area) ?? [];
    const body = wasm.subarray(starts[i], starts[i] + len);
    parts.push(body);
    if (!isOurs(key)) theirs.push(body);
    else if (PROTOCOLS.some((name) => name === area)) protocols.push(body);
    areas.set(area, parts);
    const g = groups.get(key) ?? { bytes: 0, count: 0 };
    g.bytes += len;
    g.count += 1;
    groups.set(key, g);
  });
  const rows = [...groups].sort((a, b) => b[1].bytes - a[1].bytes);
  const shown = rows.slice(0, 30);
  const rest = rows.slice(30).reduce((a, [, g]) => a + g.bytes, 0);
  console.log();
  console.log("### Biggest contributors to `otaweb_bg.wasm`");
  console.log();
  console.log(
    `Code bytes per crate (per module for otaweb), from the same build with its name section kept (\`wasm-opt -Oz -g\`). ` +
      `Code ${n(code)} B in ${n(bodies.length)} functions; data section ${n(data)} B (messages, names, tables). ` +
      "A generic function counts for the crate its name starts with, so inlined callee code counts for the caller.",
  );
  console.log();
  console.log("| part | code bytes | share of code | functions |");
  console.log("|---|---:|---:|---:|");
  for (const [key, g] of shown)
    console.log(`| ${key} | ${n(g.bytes)} | ${((100 * g.bytes) / code).toFixed(1)} % | ${g.count} |`);
  console.log(`| (${rows.length - shown.length} smaller parts) | ${n(rest)} | ${((100 * rest) / code).toFixed(1)} % | |`);
  const ours = rows.filter(([k]) => isOurs(k));
  const oursBytes = ours.reduce((a, [, g]) => a + g.bytes, 0);
  console.log();
  console.log(
    `otaweb's own code (flows, wire formats, image checks, the web edge, its exports): ${n(oursBytes)} B, ` +
      `${((100 * oursBytes) / code).toFixed(1)} % of the code.`,
  );
  console.log();
  console.log("#### By what it does");
  console.log();
  console.log(
    "The same code bytes grouped by purpose; gzip -9 of each group's function bodies on their own, so the " +
      "column sums to more than the module's gzip (each group loses the others' context) and the data section is not in it.",
  );
  console.log();
  console.log("| area | code bytes | gzip -9 alone | share of code |");
  console.log("|---|---:|---:|---:|");
  const byArea = [...areas].map(([area, parts]) => {
    const bytes = Buffer.concat(parts);
    return [area, bytes.length, gzipSync(bytes, { level: 9 }).length];
  });
  for (const [area, bytes, gz] of byArea.sort((a, b) => b[1] - a[1]))
    console.log(`| ${area} | ${n(bytes)} | ${n(gz)} | ${((100 * bytes) / code).toFixed(1)} % |`);
  const mqtt = byArea.find(([a]) => a === AREAS[0][0]);
  console.log();
  console.log(
    `The MQTT client alone (${AREAS[0][0]}) is ${n(mqtt[2])} B of gzipped code; MQTT.js alone is ${n(MQTTJS_GZIP)} B ` +
      `(${(MQTTJS_GZIP / mqtt[2]).toFixed(1)}×). The element is larger than MQTT.js because of everything else it carries.`,
  );
  // A floor for the size target: what the module weighs before any of otaweb's own code.
  // LTO inlines library code into otaweb's functions, so this undercounts the libraries.
  const libs = gzipSync(Buffer.concat(theirs), { level: 9 }).length;
  const withProtocols = gzipSync(Buffer.concat([...theirs, ...protocols]), { level: 9 }).length;
  const glue = gzipSync(readFileSync(join(root, "pkg/otaweb.js")), { level: 9 }).length;
  const floor = withProtocols + glue;
  const share = (bytes) => `${((100 * bytes) / MQTTJS_GZIP).toFixed(0)} % of MQTT.js`;
  console.log();
  console.log(
    `Without otaweb's own code: the libraries' code (serde and serde_json, prost, RustCrypto, miniz_oxide, ` +
      `wasm-bindgen's, with core and alloc) is ${n(libs)} B gzip on its own, and with the JS glue wasm-bindgen writes ` +
      `(\`pkg/otaweb.js\`, ${n(glue)} B) ${n(libs + glue)} B, ${share(libs + glue)}, before any protocol, flow, ` +
      `message or the element. With the four protocols' own code added (${PROTOCOLS.map((p) => p.split(":")[0]).join(", ")}: ` +
      `wire formats, flows, and the WebSocket and EnOS agents' browser side, gzipped with the libraries) ` +
      `${n(floor)} B, ${share(floor)}: ` +
      `a floor for any build of these parts on these libraries, before the Bluetooth side, the update ` +
      `service, manifests, messages and the element.`,
  );
  console.log(
    `SUMMARY| size floor: the libraries' code, the four protocols' code and the JS glue alone, gzip -9 | ${n(floor)} B | ` +
      `MQTT.js alone ${n(MQTTJS_GZIP)} B | ${(floor / MQTTJS_GZIP).toFixed(2)} | the size target's true limit (§4) | — |`,
  );
}

/** Whether a contributor key (from `group`) is otaweb's own code. */
function isOurs(key) {
  return key.startsWith("otaweb::") || key === "exported functions (otaweb API shims)";
}


/** The crate (or otaweb module) a demangled function name belongs to. */
function group(name) {
  if (/ (externref|multivalue) shim$/.test(name) || /^[a-z]+_[a-zA-Z]+$/.test(name))
    return "exported functions (otaweb API shims)";
  const path = name.replace(/^(<|&|mut |dyn )+/, "");
  const m = /^otaweb::(\w+)(?:::(\w+))?/.exec(path);
  if (m) return m[2] && m[1] !== "error" ? `otaweb::${m[1]}::${m[2]}` : `otaweb::${m[1]}`;
  const c = /^([A-Za-z_][A-Za-z0-9_]*)/.exec(path);
  return c ? c[1].replace(/\[[0-9a-f]+\]$/, "") : "(unnamed)";
}
