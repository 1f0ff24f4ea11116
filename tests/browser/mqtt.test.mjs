// MQTT over WebSocket from the page's wasm to a real broker: Debian's mosquitto with a
// websockets listener, and the bridge path (websockify in front of mosquitto's TCP listener)
// that a TCP-only broker such as EnOS needs. The broker's own TCP clients (mosquitto_pub,
// mosquitto_sub) are on the other side of each exchange.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { startBridge, startBroker } from "../../scripts/services.mjs";
import { launchBrowser, startServer } from "./helpers.mjs";

const run = promisify(execFile);
const TIMEOUT = 30_000;

let server;
let browser;
let page;
let broker;
let bridge;
const ports = {};

before(async () => {
  broker = await startBroker();
  bridge = await startBridge({ tcpPort: broker.tcpPort });
  ports.tcp = broker.tcpPort;
  ports.ws = broker.wsPort;
  ports.bridge = bridge.port;
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
  await bridge?.stop();
  await broker?.stop();
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
