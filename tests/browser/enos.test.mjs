// The EnOS flow end to end, through the page's EnOS panel: real mosquitto (its websockets
// listener, and websockify in front of its TCP listener as a TCP-only EnOS broker needs),
// the real enos-sim cloud (target/debug/enos-sim), headless Chromium, and the demo devices
// (the companion firmware in wasm) behind the Web Bluetooth stand-in. Each test takes a
// fresh page, so each device starts from its factory firmware.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createServer } from "node:http";
import { join } from "node:path";
import { fixtures, launchBrowser, startServer } from "./helpers.mjs";
import { startBridge, startBroker, startEnosSim } from "../../scripts/services.mjs";

const TIMEOUT = 60_000;
const GADGET = "otaweb-test-gadget";
const SIFLI = "otaweb-test-sifli";
const FILES = "otaweb-test-files";
const BAD_MD5 = "0123456789abcdef0123456789abcdef";

let server;
let browser;
let broker;
let bridge;
let sim;
const problems = [];

const gadgetDevices = ["g-push", "g-bridge", "g-md5", "g-size", "g-cut", "g-restart", "g-ask", "g-watch"];
const sifliDevices = ["d-push", "d-broken"];

before(async () => {
  broker = await startBroker();
  bridge = await startBridge({ tcpPort: broker.tcpPort });
  const device = (deviceKey) => ({ deviceKey, deviceSecret: `${deviceKey}-secret` });
  sim = await startEnosSim({
    mqtt: `127.0.0.1:${broker.tcpPort}`,
    config: {
      products: [
        {
          productKey: GADGET,
          devices: gadgetDevices.map(device),
          firmwares: [
            { version: "2", path: join(fixtures, "app-v2.bin"), signMethod: "md5" },
            { version: "3", path: join(fixtures, "app-v3.bin"), signMethod: "sha256", cutAfter: 40_000 },
            { version: "7", path: join(fixtures, "app-v2.bin"), signMethod: "md5", announceSign: BAD_MD5 },
            { version: "8", path: join(fixtures, "app-v2.bin"), signMethod: "md5", announceSize: 1000 },
          ],
        },
        {
          // enos-connect:// file URIs: the page logs in to the EnOS file service to download.
          productKey: FILES,
          fileUrlStyle: "enos",
          devices: [device("g-files"), device("g-login"), device("g-plain")],
          firmwares: [{ version: "2", path: join(fixtures, "app-v2.bin"), signMethod: "md5" }],
        },
        {
          productKey: SIFLI,
          devices: sifliDevices.map(device),
          firmwares: [
            { version: "1.1.1", path: join(fixtures, "dfu", "package.tar"), signMethod: "sha256" },
            { version: "1.1.2", path: join(fixtures, "dfu", "package-tampered.tar"), signMethod: "md5" },
          ],
        },
      ],
    },
  });
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  await sim?.stop();
  await bridge?.stop();
  await broker?.stop();
});

/** A fresh page with the demo device of `kind` connected and the EnOS panel connected. */
async function openDevice({ kind, deviceKey, version, url = broker.wsUrl, auto = true, choose = false, query = "", token, productKey, files, every }) {
  const page = await browser.context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  // A cut download and a restarting broker make Chromium log the failed load or socket;
  // only those devices may, and only that.
  const expected = { "g-cut": /Failed to load resource|ERR_CONTENT_LENGTH_MISMATCH/, "g-restart": /WebSocket connection/ };
  page.on("console", (m) => {
    if (m.type() === "error" && !expected[deviceKey]?.test(m.text())) problems.push(`${deviceKey} console: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`${deviceKey} pageerror: ${e.message}`));
  await page.goto(server.url + query);
  await page.waitForFunction(() => document.documentElement.dataset.enosReady === "true");
  await page.getByTestId(kind === "dfu" ? "device-demo-dfu" : "device-demo").check();
  await page.getByTestId("connect").click();
  await page.getByTestId("update-status").filter({ hasText: "Connected" }).waitFor();
  await page.getByTestId("enos-url").fill(url);
  await page.getByTestId("enos-pk").fill(productKey ?? (kind === "dfu" ? SIFLI : GADGET));
  await page.getByTestId("enos-dk").fill(deviceKey);
  if (token) {
    await page.getByTestId("enos-cred-token").check();
    await page.getByTestId("enos-token").fill(JSON.stringify(token));
  } else {
    await page.getByTestId("enos-secret").fill(`${deviceKey}-secret`);
  }
  await page.getByTestId("enos-version").fill(version);
  await page.locator("#enos-heading ~ details summary").click();
  if (files) await page.getByTestId("enos-files").fill(files);
  if (every) await page.getByTestId("enos-every").fill(String(every));
  await page.getByTestId("enos-auto").setChecked(auto);
  await page.getByTestId("enos-choose").setChecked(choose);
  await page.getByTestId("enos-connect").click();
  await page.getByTestId("enos-link").filter({ hasText: `reported version ${version}` }).waitFor();
  return page;
}

/** Waits for the EnOS status line to say `text`; on timeout, says what the panel showed. */
async function status(page, text) {
  try {
    await page.getByTestId("enos-status").filter({ hasText: text }).waitFor();
  } catch (e) {
    const shown = await page.getByTestId("enos-status").textContent();
    const log = await page.getByTestId("enos-log").textContent();
    throw new Error(`waiting for "${text}": status "${shown}", log "${log}"`, { cause: e });
  }
}
const steps = (task) => task.steps.map((s) => s.step);

/** The sim's device record. */
async function deviceRecord(productKey, deviceKey) {
  const devices = await sim.devices();
  return devices.find((d) => d.productKey === productKey && d.deviceKey === deviceKey);
}

/** Asserts a successful task's record: 0 first, rising, 100 last, the version reported. */
async function assertSucceeded(task, productKey, version) {
  const done = await sim.waitForTask(task.id, (t) => t.status === "succeeded", TIMEOUT);
  const s = steps(done);
  assert.equal(s[0], 0, `first step 0: ${s}`);
  assert.equal(s.at(-1), 100, `last step 100: ${s}`);
  assert.ok(s.every((v, i) => i === 0 || v >= s[i - 1]), `steps rise: ${s}`);
  assert.ok(s.length <= 15, `progress is throttled, not one per packet: ${s.length} reports`);
  assert.equal((await deviceRecord(productKey, done.deviceKey)).version, version);
  return done;
}

/** Asserts a failed task: the negative `step`, with a desc, and nothing past the download. */
async function assertFailed(task, step) {
  const failed = await sim.waitForTask(task.id, (t) => t.status === "failed", TIMEOUT);
  const last = failed.steps.at(-1);
  assert.equal(last.step, step, `steps ${steps(failed)}`);
  assert.ok(last.desc && last.desc.length > 10, `failure has a desc: ${JSON.stringify(last)}`);
  return failed;
}

/** Every message on a device's topics, as the broker relays them, until `stop()`. */
function watchTopics(productKey, deviceKey) {
  const child = spawn("mosquitto_sub", ["-h", "127.0.0.1", "-p", String(broker.tcpPort), "-t", `/sys/${productKey}/${deviceKey}/#`, "-v"]);
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  const ready = new Promise((r) => setTimeout(r, 300));
  const stop = async () => {
    child.kill();
    await new Promise((r) => child.once("exit", r));
    const counts = {};
    for (const line of out.split("\n").filter(Boolean)) {
      const topic = line.split(" ")[0].split("/ota/device/")[1];
      counts[topic] = (counts[topic] ?? 0) + 1;
    }
    return counts;
  };
  return { ready, stop };
}

test("pushed task over mosquitto's websockets: the person accepts, the gadget installs it, EnOS sees the steps and version 2", async (t) => {
  const page = await openDevice({ kind: "gadget", deviceKey: "g-push", version: "0", auto: false });
  const watch = watchTopics(GADGET, "g-push");
  await watch.ready;
  const task = await sim.createTask({ productKey: GADGET, deviceKey: "g-push", version: "2", policy: "push" });
  await status(page, "EnOS offers version 2");
  await page.getByTestId("enos-accept").click();
  await status(page, "the device runs version 2 and EnOS knows it");
  const done = await assertSucceeded(task, GADGET, "2");
  const counts = await watch.stop();
  t.diagnostic(`EnOS messages for one update: ${JSON.stringify(counts)}`);
  // One push and its reply, one report per recorded step and its reply, one inform.
  assert.equal(counts.upgrade, 1);
  assert.equal(counts.upgrade_reply, 1);
  assert.equal(counts.progress, done.steps.length);
  assert.equal(counts.progress_reply, done.steps.length);
  assert.equal(counts.inform, 1);
  assert.equal(counts.inform_reply, 1);
  assert.equal(done.upgradeReply, 200);
  assert.equal(await page.getByTestId("enos-step").textContent(), "100 %");
  assert.match(await page.getByTestId("device-version").textContent(), /version 2/);
  await page.close();
});

/** CONNECT strings as a portal backend signs them (A2), computed here independently. */
function presign(productKey, deviceKey, secret) {
  const timestamp = String(Date.now());
  const content = `clientId${deviceKey}deviceKey${deviceKey}productKey${productKey}timestamp${timestamp}${secret}`;
  return {
    clientId: `${deviceKey}|securemode=2,signmethod=sha256,timestamp=${timestamp}|`,
    username: `${deviceKey}&${productKey}`,
    password: createHash("sha256").update(content).digest("hex").toUpperCase(),
  };
}

test("the same through websockify in front of mosquitto's TCP listener, with a presigned token", async () => {
  const token = presign(GADGET, "g-bridge", "g-bridge-secret");
  const page = await openDevice({ kind: "gadget", deviceKey: "g-bridge", version: "0", url: bridge.wsUrl, token });
  // The broker saw exactly the backend's strings: the page never held the secret.
  assert.ok(broker.log().includes(`as ${token.clientId}`), "the presigned client id reached the broker");
  assert.ok(broker.log().includes(`u'${token.username}'`), "the presigned user name reached the broker");
  const task = await sim.createTask({ productKey: GADGET, deviceKey: "g-bridge", version: "2", policy: "push" });
  await status(page, "the device runs version 2");
  await assertSucceeded(task, GADGET, "2");
  await page.close();
});

test("an enos-connect:// file: the page logs in to the EnOS file service with the device secret and downloads it; the secret itself is in no request, URL or log", async () => {
  const page = await openDevice({ kind: "gadget", deviceKey: "g-files", version: "0", productKey: FILES, files: sim.httpUrl });
  const requests = [];
  page.on("request", (r) => requests.push(`${r.url()} ${r.postData() ?? ""}`));
  const task = await sim.createTask({ productKey: FILES, deviceKey: "g-files", version: "2", policy: "push" });
  await status(page, "the device runs version 2");
  const done = await assertSucceeded(task, FILES, "2");
  assert.deepEqual(
    done.downloads.map((d) => [d.deviceKey, d.status]),
    [["g-files", 200]],
    "downloaded once, through a login that names the device",
  );
  // The secret only signs: it is in no request (URL or body), not in the page's address,
  // not in its log panel.
  assert.ok(requests.some((r) => r.includes("/file/download?sessionId=")), requests.join("\n"));
  const log = await page.getByTestId("enos-log").textContent();
  for (const text of [page.url(), log, ...requests]) assert.ok(!text.includes("g-files-secret"), text);
  await page.close();
});

test("a file service whose login answer is larger than 16 KiB: step -2, the answer is not buffered, nothing installed", async () => {
  // A file service on this computer that answers the login with 64 KiB.
  const cors = { "Access-Control-Allow-Origin": "*", "Access-Control-Allow-Headers": "content-type", "Access-Control-Allow-Methods": "POST" };
  const files = createServer((req, res) => {
    if (req.method === "OPTIONS") return res.writeHead(204, cors).end();
    res.writeHead(200, { ...cors, "Content-Type": "application/json" }).end(`{"code":200,"data":{"sessionId":"${"x".repeat(64 * 1024)}"}}`);
  });
  await new Promise((resolve) => files.listen(0, "127.0.0.1", resolve));
  try {
    const page = await openDevice({ kind: "gadget", deviceKey: "g-login", version: "0", productKey: FILES, files: `http://127.0.0.1:${files.address().port}` });
    const task = await sim.createTask({ productKey: FILES, deviceKey: "g-login", version: "2", policy: "push" });
    const failed = await assertFailed(task, -2);
    assert.match(failed.steps.at(-1).desc, /login reply: larger than the limit of 16384/);
    assert.equal((await deviceRecord(FILES, "g-login")).version, "0");
    assert.equal(await page.getByTestId("device-version").textContent(), "—", "the gadget was never offered the image");
    await page.close();
  } finally {
    files.close();
  }
});

test("a file service over plain http:// to another computer: step -2 before any login is sent, nothing installed", async () => {
  const page = await openDevice({ kind: "gadget", deviceKey: "g-plain", version: "0", productKey: FILES, files: "http://files.example.com" });
  const requests = [];
  page.on("request", (r) => requests.push(r.url()));
  const task = await sim.createTask({ productKey: FILES, deviceKey: "g-plain", version: "2", policy: "push" });
  const failed = await assertFailed(task, -2);
  assert.match(failed.steps.at(-1).desc, /fileService must be an https:\/\/ URL/);
  assert.deepEqual(requests.filter((u) => u.includes("example.com")), [], "no request left for it");
  assert.equal((await deviceRecord(FILES, "g-plain")).version, "0");
  await page.close();
});

test("SiFli demo device: a pushed DFU bundle installs over the dfu flow, through the reboot into the OTA manager", async () => {
  const page = await openDevice({ kind: "dfu", deviceKey: "d-push", version: "1.0.0", url: bridge.wsUrl });
  const task = await sim.createTask({ productKey: SIFLI, deviceKey: "d-push", version: "1.1.1", policy: "push" });
  await status(page, "the device runs version 1.1.1");
  await assertSucceeded(task, SIFLI, "1.1.1");
  await page.close();
});

test("a wrong md5 is step -3 and nothing is installed", async () => {
  const page = await openDevice({ kind: "gadget", deviceKey: "g-md5", version: "0" });
  const task = await sim.createTask({ productKey: GADGET, deviceKey: "g-md5", version: "7", policy: "push" });
  await status(page, "md5-mismatch");
  const failed = await assertFailed(task, -3);
  assert.ok(steps(failed).every((s) => s <= 10 || s < 0), `no install step: ${steps(failed)}`);
  assert.equal((await deviceRecord(GADGET, "g-md5")).version, "0");
  assert.equal(await page.getByTestId("device-version").textContent(), "—", "the gadget was never offered the image");
  await page.close();
});

test("a wrong size is step -3 and nothing is installed", async () => {
  const page = await openDevice({ kind: "gadget", deviceKey: "g-size", version: "0" });
  const task = await sim.createTask({ productKey: GADGET, deviceKey: "g-size", version: "8", policy: "push" });
  await status(page, "size-mismatch");
  const failed = await assertFailed(task, -3);
  assert.ok(steps(failed).every((s) => s <= 10 || s < 0), `no install step: ${steps(failed)}`);
  assert.equal((await deviceRecord(GADGET, "g-size")).version, "0");
  await page.close();
});

test("a download cut mid-body resumes with Range and installs", async () => {
  const page = await openDevice({ kind: "gadget", deviceKey: "g-cut", version: "0" });
  const task = await sim.createTask({ productKey: GADGET, deviceKey: "g-cut", version: "3", policy: "push" });
  await status(page, "the device runs version 3");
  const done = await assertSucceeded(task, GADGET, "3");
  const [first, second] = done.downloads;
  assert.equal(first.cut, true, JSON.stringify(done.downloads));
  assert.equal(first.bytes, 40_000);
  assert.equal(second.range, "bytes=40000-");
  assert.equal(second.status, 206);
  assert.equal(done.downloads.length, 2, JSON.stringify(done.downloads));
  assert.match(await page.getByTestId("enos-log").textContent(), /download interrupted at 40000 bytes/);
  await page.close();
});

test("a bundle the device rejects is step -4 (burning failed) and the device keeps its firmware", async () => {
  const page = await openDevice({ kind: "dfu", deviceKey: "d-broken", version: "1.0.0" });
  const task = await sim.createTask({ productKey: SIFLI, deviceKey: "d-broken", version: "1.1.2", policy: "push" });
  await status(page, "✗");
  const failed = await assertFailed(task, -4);
  assert.match(failed.steps.at(-1).desc, /DFU_ERR_FW_INVALID/, "the device's own reason reaches EnOS");
  assert.equal((await deviceRecord(SIFLI, "d-broken")).version, "1.0.0");
  await page.close();
});

test("the broker restarts mid-task: the agent reconnects, re-subscribes and finishes", async () => {
  // A slow demo link (about 8 KB/s): the install outlasts the restart and the agent's
  // reconnection, backing off, with steps still to report after it.
  const query = "?demoPacketsPerEvent=1&demoIntervalMs=30";
  const page = await openDevice({ kind: "gadget", deviceKey: "g-restart", version: "0", query });
  const task = await sim.createTask({ productKey: GADGET, deviceKey: "g-restart", version: "2", policy: "push" });
  // Restart once the install is under way: the cloud has heard a step past the download.
  await sim.waitForTask(task.id, (t) => steps(t).some((s) => s > 10 && s < 100), TIMEOUT);
  await broker.restart();
  await status(page, "the device runs version 2");
  const done = await assertSucceeded(task, GADGET, "2");
  const middle = steps(done).filter((s) => s > 10 && s < 100);
  assert.ok(middle.length >= 2, `install progress before and after the restart: ${steps(done)}`);
  const log = await page.getByTestId("enos-log").textContent();
  assert.match(log, /broker:/, "the page saw the link drop");
  // Every step the agent reported, also those made while the broker was away, reached the
  // cloud and was answered.
  const reported = [...log.matchAll(/progress (\d+) %: (not )?acknowledged/g)];
  assert.ok(reported.length >= 3, log);
  assert.ok(reported.every((m) => !m[2]), log);
  for (const [, step] of reported) assert.ok(steps(done).includes(Number(step)), `${step} in ${steps(done)}`);
  await page.close();
});

test("device-request policy: getversion lists several versions and the chosen one installs", async () => {
  const page = await openDevice({ kind: "gadget", deviceKey: "g-ask", version: "0", choose: true });
  const t2 = await sim.createTask({ productKey: GADGET, deviceKey: "g-ask", version: "2", policy: "request" });
  const t3 = await sim.createTask({ productKey: GADGET, deviceKey: "g-ask", version: "3", policy: "request" });
  await page.getByTestId("enos-check").click();
  await status(page, "EnOS offers 2 versions");
  const options = await page.getByTestId("enos-version-list").locator("option").allTextContents();
  assert.deepEqual(options.map((o) => o.split(" ")[0]), ["2", "3"]);
  // Not the highest: the person's choice is what installs.
  await page.getByTestId("enos-version-list").selectOption({ index: 0 });
  await page.getByTestId("enos-install-chosen").click();
  await status(page, "the device runs version 2");
  await assertSucceeded(t2, GADGET, "2");
  assert.notEqual((await sim.task(t3.id)).status, "succeeded");
  await page.close();
});

test("daemon mode with EnOS as the source: a request-policy task is found by the periodic getversion and installs", async () => {
  const page = await openDevice({ kind: "gadget", deviceKey: "g-watch", version: "0", every: 0.02 });
  // Nothing is pushed: only the device's own periodic request can find this task.
  const task = await sim.createTask({ productKey: GADGET, deviceKey: "g-watch", version: "2", policy: "request" });
  await status(page, "the device runs version 2");
  const done = await assertSucceeded(task, GADGET, "2");
  assert.equal(done.pushes, 0, "found by getversion, not pushed");
  await page.close();
});

test("no console errors or page errors", () => {
  assert.deepEqual(problems, []);
});
