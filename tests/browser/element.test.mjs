// <ota-updater> on a foreign page: www/examples/portal.html embeds it with one script tag
// and a theme, and knows nothing else of otaweb. In Debian's headless Chromium against the
// demo gadget (the companion firmware in wasm behind the Web Bluetooth stand-in).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { launchBrowser, root, startServer, screenshotColours } from "./helpers.mjs";

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

/** A fresh portal page (a fresh demo gadget at version 0), all its loading done. */
async function openPortal(p = page) {
  requests = [];
  await p.goto(`${server.url}examples/portal.html`, { waitUntil: "networkidle" });
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
  assert.deepEqual([done.progress.confirmed, done.progress.total], [98304, 98304]);
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
  await updater().getByRole("button", { name: "Cancel" }).click();
  const cancelled = await until("error");
  assert.equal(cancelled.error.code, "cancelled");
  assert.equal(cancelled.version, "0");
  await updater().getByText("The update was cancelled.").waitFor();
  await updater().getByText(cancelled.error.hint).waitFor();
  await activate().click();
  assert.equal((await until("done")).version, "2");
});

test("a wrongly signed image: a plain-language error with a hint and the code, and nothing sent", async () => {
  await openPortal();
  await page.evaluate(() => document.querySelector("ota-updater").setAttribute("manifest", "/fixtures/manifest-bad-signature.json"));
  await activate().click();
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
  assert.equal(await activate().isVisible(), true, "the person can try again");
  await screenshot("element-error.png");
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
