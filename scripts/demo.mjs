#!/usr/bin/env node
// `make demo`: the page and a local EnOS stack, all on 127.0.0.1 — the page server
// (scripts/serve.mjs), mosquitto with a TCP and a websockets listener, and enos-sim with
// enos-sim/demo.json. Prints the page URL (its first stdout line, as with serve.mjs), then a
// short "try this" list; the details (broker and enos-sim addresses, the demo devices' keys
// and secrets, every prefilled page link and `enos-sim task` command) go to target/demo.txt,
// which it names. Ctrl-C stops everything. Builds nothing: `make demo` builds pkg/ and
// target/debug/enos-sim first.
//
//   node scripts/demo.mjs [--port N]
//
// --port is the page's (default 8080; 0 = any free port). MQTT takes 1883 (TCP) and 9001
// (websockets), and enos-sim 8081, when they are free, else free ports; target/demo.txt says
// which.
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { ENOS_SIM, freePort, root, startBroker, startEnosSim, startPageServer, stopAll } from "./services.mjs";

const CONFIG = join(root, "enos-sim", "demo.json");
const DETAILS = join(root, "target", "demo.txt");
const FIXTURES = "firmware-fixtures/files";

// services.mjs stops every child on these signals and then exits with process.exitCode:
// Ctrl-C is how the demo ends, not a failure. `stopping` keeps the children's deliberate
// exits from being reported as a crash below.
let stopping = false;
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    stopping = true;
    process.exitCode = 0;
  });
}

function parsePort(argv) {
  const i = argv.indexOf("--port");
  const raw = i >= 0 ? argv[i + 1] : argv.find((a) => a.startsWith("--port="))?.slice(7);
  const port = raw === undefined ? 8080 : Number(raw);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`demo: bad --port ${raw}`);
    process.exit(2);
  }
  return port;
}

/** target/demo.txt: everything `make demo` started and every command it offers. */
function details({ page, broker, sim, bin, devices, panelLink, task }) {
  const width = (f) => Math.max(...devices.map((x) => f(x).length));
  const [pw, dw, sw] = [width((x) => x.p.productKey), width((x) => x.d.deviceKey), width((x) => x.d.deviceSecret)];
  const lines = [
    `otaweb demo, started ${new Date().toISOString()} (rewritten by every \`make demo\`)`,
    "",
    `page          ${page.url}  (www/ at /, pkg/ at /pkg/, ${FIXTURES}/ at /fixtures/)`,
    `MQTT broker   ${broker.wsUrl}  (WebSocket, for the page)   127.0.0.1:${broker.tcpPort} (TCP)`,
    `enos-sim      ${sim.httpUrl}  (firmware files and the admin API: /admin/tasks, /admin/devices, /admin/firmwares)`,
    "Nothing leaves this computer; Ctrl-C in the `make demo` terminal stops all three.",
    "",
    "The checker (sections 1-3), with the fixtures:",
    `  choose or drop ${FIXTURES}/app-v2.bin                -> size, SHA-256, MD5`,
    `  load ${FIXTURES}/manifest.json as the manifest       -> entry app v2, signature verified`,
    `  choose ${FIXTURES}/app-v2.corrupt.bin                -> digest-mismatch`,
    `  load ${FIXTURES}/manifest-bad-signature.json with app-v2.bin -> signature rejected`,
    "Daemon mode (section 4): Connect the demo gadget, check every 0.1 minutes, Start",
    "  -> v2 found in the manifest, verified, staged; 'Apply staged image' switches to it",
    "",
    "EnOS devices (anonymous broker logins are accepted; the secret signs the file-service login):",
  ];
  for (const { p, d } of devices) {
    const versions = p.firmwares.map((f) => `${f.version} (${f.signMethod ?? "md5"})`).join(", ");
    lines.push(
      `  product ${p.productKey.padEnd(pw)}  device ${d.deviceKey.padEnd(dw)}  secret ${d.deviceSecret.padEnd(sw)}  firmware ${versions}`,
    );
  }
  lines.push(
    "",
    "The page with its EnOS panel (section 5) filled in for a device (paste its secret from above;",
    "a URL never carries it): connect the demo device in section 4, then 'Connect to EnOS':",
  );
  for (const x of devices) lines.push(`  ${x.d.deviceKey.padEnd(dw)}  ${panelLink(x)}`);
  lines.push(
    "",
    "Create an OTA task (pushed at once if the device is online, else when it next reports its version;",
    "add --policy request to offer it only when the device asks):",
  );
  for (const x of devices) for (const f of x.p.firmwares) lines.push(`  ${task(x, f.version)}`);
  lines.push(
    "",
    `Follow it:  ${bin} status --admin ${sim.adminUrl}`,
    `Devices:    ${bin} devices --admin ${sim.adminUrl}`,
    "",
  );
  return lines.join("\n");
}

async function main() {
  const products = JSON.parse(await readFile(CONFIG, "utf8")).products;
  // The page first: a busy --port fails here with serve.mjs's own advice, before the rest.
  const page = await startPageServer({ port: parsePort(process.argv.slice(2)) });
  console.log(page.url);
  const broker = await startBroker({ tcpPort: await freePort(1883), wsPort: await freePort(9001) });
  const sim = await startEnosSim({ configPath: CONFIG, mqtt: broker.mqtt, http: await freePort(8081) });
  await mkdir(dirname(DETAILS), { recursive: true });

  const bin = relative(process.cwd(), ENOS_SIM) || ENOS_SIM;
  const devices = products.flatMap((p) => p.devices.map((d) => ({ p, d })));
  /** The page with its EnOS panel (section 5) filled in for a device; never its secret. */
  const panelLink = ({ p, d }) => {
    const sifli = p.productKey.endsWith("sifli");
    const query = new URLSearchParams({
      device: sifli ? "demo-dfu" : "demo-gadget",
      enos: broker.wsUrl,
      pk: p.productKey,
      dk: d.deviceKey,
      // The demo devices' factory firmware: the gadget runs 0, the SiFli device 1.0.0.
      version: sifli ? "1.0.0" : "0",
    });
    return `${page.url}?${query}`;
  };
  const task = ({ p, d }, version) =>
    `${bin} task --admin ${sim.adminUrl} --product ${p.productKey} --device ${d.deviceKey} --version ${version}`;
  // The gadget's newest firmware, so the push also works after try-this 1 put it on 2.
  const gadget = devices.find(({ p }) => !p.productKey.endsWith("sifli")) ?? devices[0];
  const newest = gadget.p.firmwares.at(-1).version;

  await writeFile(DETAILS, details({ page, broker, sim, bin, devices, panelLink, task }));
  const detailsPath = relative(process.cwd(), DETAILS) || DETAILS;
  console.log(
    [
      "",
      "otaweb demo: open the URL above. Try this:",
      "  1. Demo gadget: 'Use the demo image', then section 4: Connect (demo device) -> Update: version 0 -> 2",
      "  2. Stage, then apply: reload, 'Use the demo image', Connect, tick 'Stage only', Update, then 'Apply staged image'",
      "  3. SiFli DFU: section 4 'Demo SiFli device', 'Use the demo DFU package', Connect -> Update",
      "  4. Portal: /examples/portal.html (gadget) or /examples/portal-dfu.html (SiFli), the <ota-updater> element: one click",
      `  5. EnOS push: open the EnOS panel link below, Connect (section 4), paste the secret ${gadget.d.deviceSecret},`,
      "     'Connect to EnOS' (section 5); then paste the enos-sim command in a terminal and press 'Install it':",
      `       ${panelLink(gadget)}`,
      `       ${task(gadget, newest)}`,
      `  6. A bad image is refused: choose ${FIXTURES}/app-v2.corrupt.bin (digest mismatch)`,
      "",
      `Details (broker and enos-sim ports, device secrets, all commands): ${detailsPath}`,
      "Ctrl-C stops the page server, the broker and enos-sim.",
    ].join("\n"),
  );

  // One of them dying ends the demo rather than leaving half of it up.
  const [name, how, log] = await Promise.race(
    [
      ["serve.mjs", page],
      ["mosquitto", broker],
      ["enos-sim", sim],
    ].map(([n, h]) => h.exited.then((how) => [n, how, h.log()])),
  );
  if (stopping) return;
  console.error(`demo: ${name} stopped (${how}); stopping the rest\n${log.trim()}`);
  await stopAll();
  process.exit(1);
}

process.on("exit", () => {
  if (stopping) console.log("\notaweb demo: stopped");
});

main().catch(async (e) => {
  console.error(`demo: ${e.message}`);
  await stopAll();
  process.exit(1);
});
