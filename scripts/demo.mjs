#!/usr/bin/env node
// `make demo`: the page and a local EnOS stack, all on 127.0.0.1 — the page server
// (scripts/serve.mjs), mosquitto with a TCP and a websockets listener, and enos-sim with
// enos-sim/demo.json — then prints where each is, the demo devices' keys and secrets, and
// the commands that create OTA tasks. Ctrl-C stops everything. Builds nothing: `make demo`
// builds pkg/ and target/debug/enos-sim first.
//
//   node scripts/demo.mjs [--port N]
//
// --port is the page's (default 8080; 0 = any free port). MQTT takes 1883 (TCP) and 9001
// (websockets), and enos-sim 8081, when they are free, else free ports; the printout says
// which. The first stdout line is the page URL, as with serve.mjs.
import { readFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { ENOS_SIM, freePort, root, startBroker, startEnosSim, startPageServer, stopAll } from "./services.mjs";

const CONFIG = join(root, "enos-sim", "demo.json");

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

async function main() {
  const products = JSON.parse(await readFile(CONFIG, "utf8")).products;
  // The page first: a busy --port fails here with serve.mjs's own advice, before the rest.
  const page = await startPageServer({ port: parsePort(process.argv.slice(2)) });
  console.log(page.url);
  const broker = await startBroker({ tcpPort: await freePort(1883), wsPort: await freePort(9001) });
  const sim = await startEnosSim({ configPath: CONFIG, mqtt: broker.mqtt, http: await freePort(8081) });

  const bin = relative(process.cwd(), ENOS_SIM) || ENOS_SIM;
  const lines = [
    "",
    "EnOS (local stand-ins; nothing leaves this computer):",
    `  MQTT broker   ${broker.wsUrl}  (WebSocket, for the page)   127.0.0.1:${broker.tcpPort} (TCP)`,
    `  enos-sim      ${sim.httpUrl}  (firmware files and the admin API: /admin/tasks, /admin/devices, /admin/firmwares)`,
    "  devices (anonymous broker logins are accepted; the secret signs the file-service login):",
  ];
  const devices = products.flatMap((p) => p.devices.map((d) => ({ p, d })));
  const width = (f) => Math.max(...devices.map((x) => f(x).length));
  const [pw, dw, sw] = [width((x) => x.p.productKey), width((x) => x.d.deviceKey), width((x) => x.d.deviceSecret)];
  for (const { p, d } of devices) {
    const versions = p.firmwares.map((f) => `${f.version} (${f.signMethod ?? "md5"})`).join(", ");
    lines.push(
      `    product ${p.productKey.padEnd(pw)}  device ${d.deviceKey.padEnd(dw)}  secret ${d.deviceSecret.padEnd(sw)}  firmware ${versions}`,
    );
  }
  lines.push("  the page with its EnOS panel (section 5) filled in for a device (paste its secret from above; a URL never carries it): connect the demo device in section 4, then 'Connect to EnOS':");
  for (const { p, d } of devices) {
    const sifli = p.productKey.endsWith("sifli");
    const query = new URLSearchParams({
      device: sifli ? "demo-dfu" : "demo-gadget",
      enos: broker.wsUrl,
      pk: p.productKey,
      dk: d.deviceKey,
      // The demo devices' factory firmware: the gadget runs 0, the SiFli device 1.0.0.
      version: sifli ? "1.0.0" : "0",
    });
    lines.push(`    ${d.deviceKey.padEnd(dw)}  ${page.url}?${query}`);
  }
  lines.push("  create an OTA task (pushed at once if the device is online, else when it next reports its version):");
  for (const { p, d } of devices) {
    for (const f of p.firmwares) {
      lines.push(
        `    ${bin} task --admin ${sim.adminUrl} --product ${p.productKey} --device ${d.deviceKey} --version ${f.version}`,
      );
    }
  }
  lines.push(
    "    (add --policy request to offer it only when the device asks)",
    `  follow it:  ${bin} status --admin ${sim.adminUrl}      devices:  ${bin} devices --admin ${sim.adminUrl}`,
    "",
    "Ctrl-C stops the page server, the broker and enos-sim.",
  );
  console.log(lines.join("\n"));

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
