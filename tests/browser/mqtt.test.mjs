// MQTT over WebSocket from the page's wasm to a real broker: Debian's mosquitto with a
// websockets listener, and the bridge path (websockify in front of mosquitto's TCP listener)
// that a TCP-only broker such as EnOS needs. The broker's own TCP clients (mosquitto_pub,
// mosquitto_sub) are on the other side of each exchange.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { launchBrowser, startServer } from "./helpers.mjs";

const run = promisify(execFile);
const TIMEOUT = 30_000;

let server;
let browser;
let page;
let dir;
const children = [];
const ports = {};

/** A port nothing listens on now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Starts `cmd`; resolves once `port` accepts connections. */
async function startListening(cmd, args, port) {
  const child = spawn(cmd, args, { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  children.push(child);
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${cmd} exited: ${stderr}`);
    const open = await new Promise((resolve) => {
      const socket = new Socket();
      socket.once("connect", () => (socket.destroy(), resolve(true)));
      socket.once("error", () => resolve(false));
      socket.connect(port, "127.0.0.1");
    });
    if (open) return child;
    if (Date.now() > deadline) throw new Error(`${cmd} did not listen on ${port}: ${stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "otaweb-mqtt-"));
  ports.tcp = await freePort();
  ports.ws = await freePort();
  ports.bridge = await freePort();
  // TOOLCHAIN.md: socket_domain ipv4 keeps the websockets listener on 127.0.0.1 only.
  const conf = join(dir, "mosquitto.conf");
  await writeFile(
    conf,
    [
      "allow_anonymous true",
      "persistence false",
      "log_dest stderr",
      `listener ${ports.tcp} 127.0.0.1`,
      "protocol mqtt",
      `listener ${ports.ws} 127.0.0.1`,
      "socket_domain ipv4",
      "protocol websockets",
      "",
    ].join("\n"),
  );
  await startListening("/usr/sbin/mosquitto", ["-c", conf], ports.tcp);
  await startListening("websockify", [`127.0.0.1:${ports.bridge}`, `127.0.0.1:${ports.tcp}`], ports.bridge);
  server = await startServer();
  browser = await launchBrowser();
  page = browser.context.pages()[0] ?? (await browser.context.newPage());
  page.setDefaultTimeout(TIMEOUT);
  await page.goto(server.url);
  await page.waitForFunction(() => document.documentElement.dataset.ready === "true");
});

after(async () => {
  await browser?.close();
  await server?.stop();
  for (const child of children) child.kill("SIGTERM");
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** In the page: connect to `url`, subscribe, then wait for one message and publish one. */
function exchange(url, clientId) {
  return page.evaluate(
    async ({ url, clientId }) => {
      const { MqttClient } = await import("/pkg/otaweb.js");
      const client = await MqttClient.connect(url, { clientId, keepAlive: 30 });
      const granted = await client.subscribe("otaweb/test/down", 1);
      const got = new Promise((resolve) =>
        client.addEventListener("message", (e) => resolve({ topic: e.detail.topic, text: e.detail.text })),
      );
      window.__ready = true;
      const message = await got;
      await client.publish("otaweb/test/up", `echo:${message.text}`, 1);
      client.close();
      return { granted, message };
    },
    { url, clientId },
  );
}

async function roundTrip(url, clientId) {
  const answer = run("mosquitto_sub", ["-h", "127.0.0.1", "-p", String(ports.tcp), "-t", "otaweb/test/up", "-C", "1", "-W", "20"]);
  await page.evaluate(() => (window.__ready = false));
  const inPage = exchange(url, clientId);
  await page.waitForFunction(() => window.__ready === true);
  await run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(ports.tcp), "-t", "otaweb/test/down", "-q", "1", "-m", "hello"]);
  const result = await inPage;
  const { stdout } = await answer;
  return { ...result, echoed: stdout.trim() };
}

test("the page's MQTT client talks to mosquitto's websockets listener", async () => {
  const r = await roundTrip(`ws://127.0.0.1:${ports.ws}`, "otaweb-page-ws");
  assert.equal(r.granted, 1);
  assert.deepEqual(r.message, { topic: "otaweb/test/down", text: "hello" });
  assert.equal(r.echoed, "echo:hello", "a TCP subscriber got the page's QoS 1 publish");
});

test("the same through websockify to mosquitto's TCP listener (the EnOS bridge path)", async () => {
  const r = await roundTrip(`ws://127.0.0.1:${ports.bridge}`, "otaweb-page-bridge");
  assert.deepEqual(r.message, { topic: "otaweb/test/down", text: "hello" });
  assert.equal(r.echoed, "echo:hello");
});

test("an unencrypted URL to another host is refused before any connection", async () => {
  const error = await page.evaluate(async () => {
    const { MqttClient } = await import("/pkg/otaweb.js");
    try {
      await MqttClient.connect("ws://broker.example:1883/mqtt", { clientId: "x" });
      return null;
    } catch (e) {
      return { name: e.name, code: e.code };
    }
  });
  assert.deepEqual(error, { name: "OtawebError", code: "invalid-url" });
});
