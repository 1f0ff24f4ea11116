// The update service on an Updater, in headless Chromium against the demo gadget (the
// companion firmware in wasm behind the Web Bluetooth stand-in): daemon mode over a
// manifest served on 127.0.0.1, staging and applying when told, and the secure-OTA policy
// refusing bad images before the device hears a byte.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { networkInterfaces } from "node:os";
import { join } from "node:path";
import { fixtures, launchBrowser, startServer } from "./helpers.mjs";

const TIMEOUT = 60_000;
const PEM = readFileSync(join(fixtures, "keys", "test-signing-key.pub.pem"), "utf8");

let server;
let browser;
let page;
const problems = [];

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  page = browser.context.pages()[0] ?? (await browser.context.newPage());
  page.setDefaultTimeout(TIMEOUT);
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  await page.goto(server.url);
  await page.waitForFunction(() => document.documentElement.dataset.updateReady === "true");
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Connects a fresh demo gadget as `window.svc.updater`, logging its events. */
async function connectGadget() {
  await page.evaluate(async () => {
    const { Updater } = await import("/pkg/otaweb.js");
    const demo = await import("/pkg/demo/otaweb_demo_device.js");
    await demo.default();
    const { createDemoBluetooth } = await import("/demo-bluetooth.js");
    const bluetooth = createDemoBluetooth(() => new demo.DemoGadget(undefined, undefined, "service test gadget"));
    const updater = await Updater.connectGadget({ bluetooth });
    window.svcBluetooth = bluetooth;
    const events = [];
    for (const type of ["stage", "progress", "staged", "done", "up-to-date", "watch-check", "watch-result", "watch-error"]) {
      updater.addEventListener(type, (e) => events.push({ type, detail: e.detail }));
    }
    window.svc = { updater, events };
  });
}

const events = () => page.evaluate(() => window.svc.events.map((e) => ({ type: e.type, detail: { ...e.detail, message: e.detail?.message, code: e.detail?.code } })));

/** Waits until an event of `type` matches `pred`. */
async function waitEvent(type, pred = () => true) {
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    const found = (await events()).find((e) => e.type === type && pred(e.detail));
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`no ${type} event; saw ${JSON.stringify(await events())}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test("daemon mode finds v2 in the manifest, stages it in the background, applies it when told, then stays up to date", async () => {
  await connectGadget();
  await page.evaluate((pem) => {
    window.svc.watch = window.svc.updater.watch({
      source: "/fixtures/manifest.json",
      everyMinutes: 0.01,
      policy: { trustedKeys: [pem] },
    });
  }, PEM);
  const staged = await waitEvent("watch-result", (d) => d.outcome === "staged");
  assert.equal(staged.detail.version, "2");
  // Later checks find the same version staged and send nothing again.
  const checksBefore = (await events()).filter((e) => e.type === "watch-check").length;
  const progressBefore = (await events()).filter((e) => e.type === "progress").length;
  await page.waitForFunction((n) => window.svc.events.filter((e) => e.type === "watch-check").length >= n + 2, checksBefore);
  assert.equal((await events()).filter((e) => e.type === "progress").length, progressBefore, "nothing re-sent while staged");
  const applied = await page.evaluate(() => window.svc.updater.apply());
  assert.equal(applied.outcome, "done");
  assert.equal(applied.version, "2");
  // The watch learned the new version from the apply: the next check is up to date.
  const mark = (await events()).length;
  await page.waitForFunction(
    (m) => window.svc.events.slice(m).some((e) => e.type === "watch-result" && e.detail.outcome === "up-to-date"),
    mark,
  );
  assert.equal((await events()).slice(mark).filter((e) => e.type === "stage").length, 0, "an up-to-date check opens no transfer");
  await page.evaluate(() => window.svc.watch.stop());
  const checks = (await events()).filter((e) => e.type === "watch-check").length;
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal((await events()).filter((e) => e.type === "watch-check").length, checks, "no check after stop()");
});

test("run(): a wrongly signed image is refused before a byte is sent, with a clear message", async () => {
  await connectGadget();
  const error = await page.evaluate(
    (pem) => window.svc.updater.run("/fixtures/manifest-bad-signature.json", { policy: { trustedKeys: [pem] } }).catch((e) => ({ code: e.code, message: e.message })),
    PEM,
  );
  assert.equal(error.code, "signature-invalid");
  assert.match(error.message, /signature/i);
  assert.deepEqual((await events()).filter((e) => e.type === "stage" || e.type === "progress"), [], "the device heard nothing");
});

test("run(): an unsigned image is refused under the default policy; no trusted key is a policy error", async () => {
  await connectGadget();
  const unsigned = await page.evaluate(
    (pem) => window.svc.updater.run("/fixtures/manifest-unsigned.json", { policy: { trustedKeys: [pem] } }).catch((e) => e.code),
    PEM,
  );
  assert.equal(unsigned, "signature-missing");
  const noKey = await page.evaluate(() => window.svc.updater.run("/fixtures/manifest.json", {}).catch((e) => e.message));
  assert.match(noKey, /no trusted key/);
  const insecure = await page.evaluate(
    (pem) => window.svc.updater.run("http://updates.example.com/manifest.json", { policy: { trustedKeys: [pem] } }).catch((e) => e.code),
    PEM,
  );
  assert.equal(insecure, "insecure-url");
  assert.deepEqual((await events()).filter((e) => e.type === "stage" || e.type === "progress"), []);
});

/** This computer's first address that is not loopback, if it has one (a redirect's target). */
const lanAddress = Object.values(networkInterfaces())
  .flat()
  .find((a) => a.family === "IPv4" && !a.internal)?.address;

/** An HTTP server on `host` answering every request with `answer(res)`. */
async function listen(host, answer) {
  const server = createServer((_, res) => answer(res));
  await new Promise((resolve) => server.listen(0, host, resolve));
  return { server, url: `http://${host}:${server.address().port}` };
}

test("run(): a redirect to plain http:// elsewhere is insecure-url", { skip: !lanAddress && "no non-loopback address to redirect to" }, async () => {
  await connectGadget();
  const manifest = readFileSync(join(fixtures, "manifest.json"));
  // An address on this computer passes the URL rule and redirects to another computer over
  // plain http. Real servers: Chromium does not route the follow-up of a fulfilled redirect.
  const cors = { "Access-Control-Allow-Origin": "*" };
  const elsewhere = await listen(lanAddress, (res) => res.writeHead(200, { ...cors, "Content-Type": "application/json" }).end(manifest));
  const here = await listen("127.0.0.1", (res) => res.writeHead(302, { ...cors, Location: `${elsewhere.url}/manifest.json` }).end());
  try {
    const error = await page.evaluate(
      ([url, pem]) => window.svc.updater.run(url, { policy: { trustedKeys: [pem] } }).catch((e) => ({ code: e.code, message: e.message })),
      [`${here.url}/manifest.json`, PEM],
    );
    assert.equal(error.code, "insecure-url", JSON.stringify(error));
    assert.match(error.message, /plain http:\/\/ is only allowed to this computer/);
  } finally {
    here.server.close();
    elsewhere.server.close();
  }
  assert.deepEqual((await events()).filter((e) => e.type === "stage" || e.type === "progress"), [], "the device heard nothing");
});

test("run(): a manifest past the 1 MiB cap is too-large, refused by its Content-Length before it is read", async () => {
  await connectGadget();
  await page.route("**/svc-test/huge.json", (r) => r.fulfill({ status: 200, contentType: "application/json", body: " ".repeat(1024 * 1024 + 1) }));
  const huge = await page.evaluate(
    (pem) => window.svc.updater.run("/svc-test/huge.json", { policy: { trustedKeys: [pem] } }).catch((e) => ({ code: e.code, kind: e.kind, message: e.message })),
    PEM,
  );
  await page.unroute("**/svc-test/huge.json");
  assert.deepEqual([huge.code, huge.kind], ["too-large", "verification-failed"], JSON.stringify(huge));
  assert.match(huge.message, /larger than 1048576 bytes/);
  assert.deepEqual((await events()).filter((e) => e.type === "stage" || e.type === "progress"), [], "the device heard nothing");
});

test("run(): an aborted signal ends the call as cancelled before the device hears a byte", async () => {
  await connectGadget();
  const code = await page.evaluate((pem) => {
    const abort = new AbortController();
    const call = window.svc.updater.run("/fixtures/manifest.json", { policy: { trustedKeys: [pem] }, signal: abort.signal });
    abort.abort();
    return call.catch((e) => e.code);
  }, PEM);
  assert.equal(code, "cancelled");
  assert.deepEqual((await events()).filter((e) => e.type === "stage" || e.type === "progress"), []);
});

test("run(): one call checks, fetches, verifies and installs", async () => {
  await connectGadget();
  const result = await page.evaluate((pem) => window.svc.updater.run("/fixtures/manifest.json", { policy: { trustedKeys: [pem] } }), PEM);
  assert.equal(result.outcome, "done");
  assert.equal(result.version, "2");
  const again = await page.evaluate((pem) => window.svc.updater.run("/fixtures/manifest.json", { policy: { trustedKeys: [pem] }, currentVersion: "2" }), PEM);
  assert.equal(again.outcome, "up-to-date");
});

test("run() reads a Microchip OTA service manifest: its last image, sized by the download, signature and digest checked", async () => {
  const microchip = JSON.parse(readFileSync(join(fixtures, "microchip-ota.json"), "utf8"));
  const image = { ...microchip.ota.at(-1), URL: `${server.url}fixtures/app-v2.bin` };
  const serve = (entry) => (route) => route.fulfill({ contentType: "application/json", body: JSON.stringify({ ota: [{ ...image, Version: 1 }, entry] }) });
  await page.route("**/test/microchip.json", serve(image));
  await page.route("**/test/microchip-tampered.json", serve({ ...image, Digest: "00".repeat(32) }));
  await connectGadget();
  const run = (url) =>
    page.evaluate(
      ([url, pem]) => window.svc.updater.run(url, { policy: { trustedKeys: [pem] } }).catch((e) => ({ code: e.code, message: e.message })),
      [url, PEM],
    );
  const tampered = await run("/test/microchip-tampered.json");
  assert.equal(tampered.code, "digest-mismatch", JSON.stringify(tampered));
  assert.equal((await events()).filter((e) => e.type === "progress").length, 0, "nothing sent for a tampered entry");
  const done = await run("/test/microchip.json");
  assert.deepEqual([done.outcome, done.version], ["done", "2"], JSON.stringify(done));
  const again = await run("/test/microchip.json");
  assert.equal(again.outcome, "up-to-date", JSON.stringify(again));
});

test("stage(image) now; a new updater (a reopened page) switches to the device's staged copy without sending it again", async () => {
  await connectGadget();
  const outcome = await page.evaluate(async (pem) => {
    const { Updater, VerifiedImage } = await import("/pkg/otaweb.js");
    const manifest = await (await fetch("/fixtures/manifest.json")).json();
    const entry = manifest.images.find((e) => e.flow === "gadget" && e.version === "2");
    const bytes = new Uint8Array(await (await fetch(`/fixtures/${entry.url}`)).arrayBuffer());
    const image = () => VerifiedImage.verify(bytes, entry, pem, false);
    const staged = await window.svc.updater.stage(image(), {});
    window.svc.updater.close();
    // Nothing of the first updater is left: only the device remembers the staged image.
    const reopened = await Updater.connectGadget({ bluetooth: window.svcBluetooth });
    let sent = 0;
    reopened.addEventListener("progress", (e) => (sent = Math.max(sent, e.detail.confirmed)));
    const steps = [];
    reopened.addEventListener("stage", (e) => steps.push(e.detail.stage));
    const applied = await reopened.update(image(), { applyStaged: true });
    return { staged: staged.outcome, applied, steps, sent };
  }, PEM);
  assert.equal(outcome.staged, "staged");
  assert.equal(outcome.applied.outcome, "done");
  assert.equal(outcome.applied.version, "2");
  assert.ok(!outcome.steps.includes("transfer"), `no transfer step: ${outcome.steps}`);
  assert.equal(outcome.sent, 0, "no byte of the image sent again");
});

/** A fresh page with the demo gadget connected and the daemon-mode panel open. */
async function pageWithWatchPanel() {
  const ui = await browser.context.newPage();
  ui.setDefaultTimeout(TIMEOUT);
  ui.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  await ui.goto(server.url);
  await ui.waitForFunction(() => document.documentElement.dataset.updateReady === "true");
  await ui.getByTestId("device-demo").check();
  await ui.getByTestId("connect").click();
  await ui.getByTestId("update-status").filter({ hasText: "Connected" }).waitFor();
  await ui.locator("#watch summary").click();
  return ui;
}

test("the page's daemon mode: watch the manifest, the new version is staged, Apply switches, then up to date", async () => {
  const ui = await pageWithWatchPanel();
  await ui.getByTestId("watch-every").fill("0.01");
  await ui.getByTestId("watch-toggle").click();
  await ui.getByTestId("watch-status").filter({ hasText: "Version 2 is staged" }).waitFor();
  await ui.getByTestId("apply").click();
  await ui.getByTestId("update-status").filter({ hasText: "now runs version 2" }).waitFor();
  await ui.getByTestId("watch-status").filter({ hasText: "Up to date at version 2" }).waitFor();
  await ui.getByTestId("watch-toggle").click();
  await ui.getByTestId("watch-status").filter({ hasText: "Stopped watching" }).waitFor();
  const log = (await ui.getByTestId("update-log").locator("li").allTextContents()).map((l) => l.slice(13));
  for (const line of ["watch: checking /fixtures/manifest.json", "watch: staged version 2", "done: the device runs version 2", "watch: up to date at version 2"]) {
    assert.ok(log.includes(line), `the event log has ${JSON.stringify(line)}: ${JSON.stringify(log)}`);
  }
  await ui.close();
});

test("the page's daemon mode refuses a bad signature, says what to do, and logs it", async () => {
  const ui = await pageWithWatchPanel();
  await ui.getByTestId("watch-url").fill("/fixtures/manifest-bad-signature.json?token=not-for-the-log");
  await ui.getByTestId("watch-toggle").click();
  const status = ui.getByTestId("watch-status").filter({ hasText: "(signature-invalid)" });
  await status.waitFor();
  assert.match(await status.textContent(), /Do not install this image/);
  const log = await ui.getByTestId("update-log").textContent();
  assert.match(log, /watch: checking \/fixtures\/manifest-bad-signature\.json/);
  assert.match(log, /watch error signature-invalid: /);
  assert.ok(!log.includes("not-for-the-log"), "the query string stays out of the log");
  await ui.getByTestId("watch-toggle").click();
  await ui.close();
});

test("no console errors or page errors", () => {
  assert.deepEqual(problems, []);
});
