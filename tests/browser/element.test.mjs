// <ota-updater> on a foreign page: www/examples/portal.html (and portal-dfu.html) embed it
// with one script tag and a theme, and know nothing else of otaweb. In Debian's headless
// Chromium against the demo gadget and the demo SiFli DFU device (the companion firmware in
// wasm behind the Web Bluetooth stand-in).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fixtures, launchBrowser, root, startServer, screenshotColours } from "./helpers.mjs";

const ARTIFACTS = join(root, "tests", "artifacts");
const TIMEOUT = 60_000;
const PHONE = { width: 390, height: 844 };

let server;
let browser;
let page;
const problems = [];
let requests = [];

/** Records what a test asserts on: console errors, page errors, failed and all requests. */
function watch(p) {
  p.setDefaultTimeout(TIMEOUT);
  p.on("console", (m) => {
    if (m.type() === "error") problems.push(`console: ${m.text()}`);
  });
  p.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  p.on("request", (r) => requests.push(r.url()));
  p.on("response", (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`);
  });
  // Every state-changed the element sends, as the portal's own light-DOM code sees it.
  return p.addInitScript(() => {
    window.seen = [];
    document.addEventListener("state-changed", (e) => window.seen.push({ ...e.detail, from: e.target.localName }));
  });
}

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  page = browser.context.pages()[0] ?? (await browser.context.newPage());
  await watch(page);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** A fresh portal page (a fresh demo device: the gadget at version 0, or the SiFli device
 * with its factory firmware), all its loading done. */
async function openPortal(p = page, name = "portal.html") {
  requests = [];
  await p.goto(`${server.url}examples/${name}`, { waitUntil: "networkidle" });
  await p.evaluate(() => customElements.whenDefined("ota-updater"));
}

const updater = (p = page) => p.locator("ota-updater");
const activate = (p = page) => updater(p).getByRole("button", { name: "Update firmware" });
const fetchedWasm = () => requests.filter((u) => new URL(u).pathname.endsWith("otaweb_bg.wasm"));

/** Waits for the element's phase to be `phase`, then returns its state. */
async function until(phase) {
  await page.waitForFunction((want) => document.querySelector("ota-updater").state.phase === want, phase);
  return page.evaluate(() => document.querySelector("ota-updater").state);
}

/** The phases the light DOM saw, without repeats (progress events repeat a phase). */
async function phases() {
  const seen = await page.evaluate(() => window.seen);
  assert.ok(seen.every((s) => s.from === "ota-updater"), "every event comes from the element");
  return seen.map((s) => s.phase).filter((p, i, all) => p !== all[i - 1]);
}

/** Saves a full-page screenshot and checks it is not blank: a blank or one-colour page
 * has one or two distinct colours on a coarse grid. */
async function screenshot(name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const png = await page.screenshot({ fullPage: true });
  writeFileSync(join(ARTIFACTS, name), png);
  const colours = await screenshotColours(page, png);
  assert.ok(colours >= 8, `${name} has ${colours} distinct colours`);
}

test("portal page: one click takes the demo gadget from version 0 to 2, the wasm loaded only then", async () => {
  await page.setViewportSize(PHONE);
  await openPortal();
  assert.deepEqual(fetchedWasm(), [], "no wasm before the click");
  assert.equal((await page.evaluate(() => document.querySelector("ota-updater").state)).phase, "idle");
  // The portal's --ota-accent, not the element's default (#0b5cad), colours the button.
  const colour = await activate().evaluate((b) => getComputedStyle(b).backgroundColor);
  assert.equal(colour, "rgb(11, 110, 79)");

  await activate().click();
  const done = await until("done");
  assert.equal(done.version, "2");
  assert.equal(done.device, "otaweb demo gadget");
  assert.equal(done.error, null);
  assert.deepEqual([done.progress.confirmed, done.progress.sent, done.progress.total], [98304, 98304, 98304]);
  const order = await phases();
  const at = (p) => order.indexOf(p);
  assert.ok(at("connecting") >= 0 && at("connecting") < at("transferring") && at("transferring") < at("done"), order.join(" → "));
  assert.ok(!order.includes("error"), order.join(" → "));
  assert.equal(fetchedWasm().length, 1, "the wasm was fetched once, on the click");

  await updater().getByText("Done: the device now runs version 2.").waitFor();
  assert.match(await updater().getByRole("status").textContent(), /version 2/);
  assert.match(await updater().locator('[part="progress-text"]').textContent(), /^100 % · 96 KiB of 96 KiB/);
  const [scrollWidth, innerWidth] = await page.evaluate(() => [document.documentElement.scrollWidth, innerWidth]);
  assert.ok(scrollWidth <= innerWidth, `page is ${scrollWidth}px wide in a ${innerWidth}px viewport`);
  await screenshot("element-done.png");
});

test("without auto: the image is staged, then the element's Apply button (by keyboard) installs it", async () => {
  await openPortal();
  await page.evaluate(() => document.querySelector("ota-updater").removeAttribute("auto"));
  await activate().click();
  const staged = await until("staged");
  assert.equal(staged.version, "0", "the device still runs its old firmware");
  const apply = updater().getByRole("button", { name: "Apply the update" });
  await apply.waitFor();
  assert.equal(await updater().locator('[part="activate"]').isHidden(), true, "Apply replaces the start button");
  await apply.press("Enter");
  const done = await until("done");
  assert.equal(done.version, "2");
  const order = await phases();
  assert.ok(order.indexOf("staged") < order.indexOf("applying") && order.indexOf("applying") < order.indexOf("done"), order.join(" → "));
});

test("Cancel mid-transfer keeps the old firmware; the next click finishes the update", async () => {
  await openPortal();
  await activate().click();
  await page.waitForFunction(() => (document.querySelector("ota-updater").state.progress?.confirmed ?? 0) > 0);
  const mid = await page.evaluate(() => document.querySelector("ota-updater").state.progress);
  assert.ok(mid.sent >= mid.confirmed && mid.sent <= mid.total, JSON.stringify(mid));
  await updater().getByRole("button", { name: "Cancel" }).click();
  const cancelled = await until("error");
  assert.equal(cancelled.error.code, "cancelled");
  assert.equal(cancelled.version, "0");
  await updater().getByText("The update was cancelled.").waitFor();
  await updater().getByText(cancelled.error.hint).waitFor();
  await activate().click();
  assert.equal((await until("done")).version, "2");
});

/** The element ended on a wrongly signed image: its words, hint and code shown, no transfer. */
async function refusedAsWronglySigned() {
  const failed = await until("error");
  assert.equal(failed.error.code, "signature-invalid");
  assert.match(failed.error.message, /signature/i);
  assert.match(failed.error.hint, /not signed by the device's maker, so it was not sent/);
  assert.equal(failed.progress, null);
  const order = await phases();
  assert.ok(!order.includes("transferring") && !order.includes("applying"), order.join(" → "));
  await updater().getByText(failed.error.hint).waitFor();
  await updater().getByText("Error code: signature-invalid").waitFor();
  assert.match(await updater().locator('[part="status"]').textContent(), /^The update stopped: .*signature/i);
}

test("a wrongly signed image: a plain-language error with a hint and the code, and nothing sent", async () => {
  await openPortal();
  await page.evaluate(() => document.querySelector("ota-updater").setAttribute("manifest", "/fixtures/manifest-bad-signature.json"));
  await activate().click();
  await refusedAsWronglySigned();
  assert.equal(await activate().isVisible(), true, "the person can try again");
  await screenshot("element-error.png");
});

/** SHA-256 (hex) of what the device holds for each image of the fixture package once it is
 * installed: the plain image, zero-padded to 16 bytes. */
const INSTALLED = Object.fromEntries(
  [[0, "hcpu"], [3, "res"], [4, "font"]].map(([id, name]) => {
    const image = readFileSync(join(fixtures, "dfu", `${name}.bin`));
    const padded = Buffer.concat([image, Buffer.alloc((16 - (image.length % 16)) % 16)]);
    return [id, createHash("sha256").update(padded).digest("hex")];
  }),
);
/** Bytes the updater sends for the package: its three transfer files. */
const DFU_TOTAL = ["hcpu", "res", "font"].reduce((n, name) => n + readFileSync(join(fixtures, "dfu", `${name}.transfer.bin`)).length, 0);

/** Opens portal-dfu.html and lets the test see the demo SiFli device the element makes: the
 * element keeps it to itself, but the firmware class is one module per page, so wrapping
 * its methods records the instance (`window.sifli`), what its partitions held at the first
 * connection (`factory`) and how many values the central wrote to it (`writes`). */
async function openDfuPortal() {
  await openPortal(page, "portal-dfu.html");
  await page.evaluate(async () => {
    const { DemoDfuDevice } = await import("/pkg/demo/otaweb_demo_device.js");
    const { connect, write } = DemoDfuDevice.prototype;
    window.sifli = { device: null, factory: null, writes: 0 };
    DemoDfuDevice.prototype.connect = function () {
      window.sifli.device = this;
      window.sifli.factory ??= Object.fromEntries([0, 3, 4].map((id) => [id, this.partitionSha256(id)]));
      return connect.call(this);
    };
    DemoDfuDevice.prototype.write = function (bytes) {
      window.sifli.writes += 1;
      return write.call(this, bytes);
    };
  });
}

/** What the demo SiFli device holds and does now. */
const sifli = () =>
  page.evaluate(() => {
    const { device, factory, writes } = window.sifli;
    const partitions = device && Object.fromEntries([0, 3, 4].map((id) => [id, device.partitionSha256(id)]));
    return { connected: device !== null, factory, partitions, writes, mode: device?.mode, restarts: device?.restarts };
  });

test('flow="dfu" demo: one click installs the signed DFU bundle on the demo SiFli device, through its OTA manager', async () => {
  await openDfuPortal();
  await activate().click();
  const done = await until("done");
  assert.equal(done.version, "1.1.1");
  assert.equal(done.device, "otaweb demo SiFli");
  assert.equal(done.error, null);
  assert.deepEqual([done.progress.confirmed, done.progress.sent, done.progress.total], [DFU_TOTAL, DFU_TOTAL, DFU_TOTAL]);
  const order = await phases();
  const at = (p) => order.indexOf(p);
  assert.ok(
    at("connecting") === 0 && at("connecting") < at("checking") && at("checking") < at("transferring") && at("transferring") < at("applying") && at("applying") < at("done"),
    order.join(" → "),
  );
  assert.ok(!order.includes("error"), order.join(" → "));
  const bundles = requests.filter((u) => new URL(u).pathname === "/fixtures/dfu/package.tar");
  assert.equal(bundles.length, 1, "the bundle the manifest names, fetched once");

  // The device: every partition now holds the package's image, and it rebooted into its
  // OTA manager and back into the new user bin.
  const device = await sifli();
  assert.deepEqual(device.partitions, INSTALLED);
  for (const id of [0, 3, 4]) assert.notEqual(device.factory[id], INSTALLED[id], `partition ${id} changed`);
  assert.equal(device.mode, "user-bin");
  assert.ok(device.restarts >= 2, `${device.restarts} restarts`);
  assert.ok(device.writes > DFU_TOTAL / 548, `${device.writes} values written`);
  await updater().getByText("Done: the device now runs version 1.1.1.").waitFor();
  assert.match(await updater().locator('[part="progress-text"]').textContent(), /^100 % · /);
  await screenshot("element-dfu-done.png");

  // It cannot say what it runs, but the element remembers what it installed: the next click
  // finds nothing newer and sends nothing (the page's current-version is still 1.1.0).
  await activate().click();
  const again = await until("up-to-date");
  assert.equal(again.version, "1.1.1");
  assert.equal((await sifli()).writes, device.writes, "nothing written the second time");
  await updater().getByText("The device already runs the newest version (1.1.1).").waitFor();
});

test('flow="dfu": current-version at the newest: up to date, and the bundle is not even fetched', async () => {
  await openDfuPortal();
  await page.evaluate(() => document.querySelector("ota-updater").setAttribute("current-version", "1.1.1"));
  await activate().click();
  const state = await until("up-to-date");
  assert.equal(state.version, "1.1.1");
  assert.equal((await sifli()).writes, 0);
  assert.ok(!requests.some((u) => new URL(u).pathname.startsWith("/fixtures/dfu/")), requests.join("\n"));
});

test('flow="dfu": a DFU bundle whose entry is not signed for it is refused with its message, and the device hears nothing', async () => {
  await openDfuPortal();
  await page.evaluate(() => document.querySelector("ota-updater").setAttribute("manifest", "/fixtures/manifest-dfu-bad-signature.json"));
  await activate().click();
  await refusedAsWronglySigned();
  const device = await sifli();
  assert.ok(device.connected, "the element did connect to the device");
  assert.equal(device.writes, 0, "not one value written to it");
  assert.deepEqual(device.partitions, device.factory, "its partitions are as they came");
  assert.equal(device.restarts, 0);
});

test("no Web Bluetooth and no demo: the unsupported slot is shown instead of a button, and no wasm loads", async () => {
  const other = await browser.context.newPage();
  try {
    await watch(other);
    await other.addInitScript(() => delete Navigator.prototype.bluetooth);
    await openPortal(other);
    await other.evaluate(() => {
      const el = document.createElement("ota-updater");
      el.setAttribute("manifest", "/fixtures/manifest.json");
      el.setAttribute("flow", "gadget");
      el.innerHTML = '<p slot="unsupported">Open the Acme app to update this gadget.</p>';
      document.body.append(el);
    });
    const bare = other.locator("ota-updater").nth(1);
    await bare.getByText("Open the Acme app to update this gadget.").waitFor();
    assert.equal(await bare.locator('[part="activate"]').isHidden(), true);
    const state = await bare.evaluate((el) => el.state);
    assert.equal(state.phase, "unsupported");
    assert.equal(state.error.code, "bluetooth-unavailable");
    const seen = await other.evaluate(() => window.seen.map((s) => s.phase));
    assert.deepEqual(seen, ["unsupported"]);
    // The demo element on the same page needs no Bluetooth and still offers its button.
    assert.equal(await updater(other).first().locator('[part="activate"]').isVisible(), true);
    assert.deepEqual(fetchedWasm(), []);
  } finally {
    await other.close();
  }
});

test("outside a secure context (plain http from another host): insecure-context, no button, and no wasm loads", async () => {
  const other = await browser.context.newPage();
  try {
    await watch(other);
    // The demo server's files under a name that is not this computer, over plain http.
    await other.route("http://portal.example/**", async (r) => {
      const path = new URL(r.request().url()).pathname.slice(1);
      r.fulfill({ response: await r.fetch({ url: server.url + path }) });
    });
    requests = [];
    await other.goto("http://portal.example/examples/portal.html", { waitUntil: "networkidle" });
    await other.evaluate(() => customElements.whenDefined("ota-updater"));
    assert.equal(await other.evaluate(() => window.isSecureContext), false);
    await other.evaluate(() => {
      const el = document.createElement("ota-updater");
      el.setAttribute("manifest", "/fixtures/manifest.json");
      document.body.append(el);
    });
    const bare = other.locator("ota-updater").nth(1);
    await bare.evaluate((el) => new Promise((resolve) => (el.state.phase === "not-allowed" ? resolve() : el.addEventListener("state-changed", resolve, { once: true }))));
    const state = await bare.evaluate((el) => el.state);
    assert.deepEqual([state.phase, state.error.code], ["not-allowed", "insecure-context"]);
    assert.match(state.error.message, /only on pages served over HTTPS/);
    assert.equal(await bare.locator('[part="activate"]').isHidden(), true);
    assert.deepEqual(fetchedWasm(), []);
  } finally {
    await other.close();
  }
});

test("a cancelled device chooser: the not-allowed slot, the browser's reason, and the button to try again", async () => {
  const other = await browser.context.newPage();
  try {
    await watch(other);
    // Web Bluetooth whose chooser the person closes without picking a device.
    await other.addInitScript(() => {
      const bluetooth = {
        getAvailability: () => Promise.resolve(true),
        requestDevice: () => Promise.reject(new DOMException("User cancelled the requestDevice() chooser.", "NotFoundError")),
      };
      Object.defineProperty(Navigator.prototype, "bluetooth", { configurable: true, get: () => bluetooth });
    });
    await openPortal(other);
    await other.evaluate(() => {
      const el = document.querySelector("ota-updater");
      el.removeAttribute("demo");
      el.innerHTML = '<p slot="not-allowed">Allow Bluetooth and pick your gadget.</p>';
    });
    await activate(other).click();
    const el = updater(other);
    await el.getByText("Allow Bluetooth and pick your gadget.").waitFor();
    const state = await el.evaluate((e) => e.state);
    assert.equal(state.phase, "not-allowed");
    assert.equal(state.error.code, "no-device");
    assert.match(await el.locator('[part="code"]').textContent(), /User cancelled the requestDevice\(\) chooser\..*\(no-device\)/);
    assert.equal(await el.locator('[part="activate"]').isVisible(), true, "the person can try again");
  } finally {
    await other.close();
  }
});

test("no console errors, page errors or failed requests", () => {
  assert.deepEqual(problems, []);
});
