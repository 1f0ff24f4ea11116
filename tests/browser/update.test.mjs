// End-to-end: a person updates the demo gadget by hand on the page — demo image, Connect,
// Update — in Debian's headless Chromium. The page's real Web Bluetooth code path runs
// against the companion firmware compiled to wasm (pkg/demo/) behind the stand-in.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { launchBrowser, root, startServer } from "./helpers.mjs";

const ARTIFACTS = join(root, "tests", "artifacts");
const TIMEOUT = 60_000;

let server;
let browser;
let page;
const problems = [];

const text = (id) => page.getByTestId(id).textContent();

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  page = browser.context.pages()[0] ?? (await browser.context.newPage());
  page.setDefaultTimeout(TIMEOUT);
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  page.on("response", (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`);
  });
  await page.goto(server.url);
  await page.waitForFunction(() => document.documentElement.dataset.updateReady === "true");
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test("Update stays disabled until connected with a verified image", async () => {
  assert.equal(await page.getByTestId("update").isDisabled(), true);
  await page.getByTestId("demo-image").click();
  await page.locator('[data-testid="verdict"][data-state="pass"]').waitFor();
  assert.equal(await page.getByTestId("update").isDisabled(), true, "not connected yet");
});

test("Connect → demo device → Update installs app v2 with a progress bar", async () => {
  await page.getByTestId("device-demo").check();
  await page.getByTestId("connect").click();
  // Connecting reads the device's version against the chosen image, and sends nothing else.
  await page.getByTestId("update-status").filter({ hasText: "version 2 is ready to install" }).waitFor();
  assert.equal(await text("device-name"), "otaweb demo gadget");
  assert.equal(await text("device-version"), "version 0");

  // Watch the progress bar move while the transfer runs.
  const seen = page.evaluate(
    () =>
      new Promise((resolve) => {
        const bar = document.getElementById("progress");
        const values = new Set();
        const observer = new MutationObserver(() => {
          values.add(bar.value);
          if (bar.value >= bar.max && bar.max > 1) {
            observer.disconnect();
            resolve([...values]);
          }
        });
        observer.observe(bar, { attributes: true });
      }),
  );
  await page.getByTestId("update").click();
  await page.getByTestId("update-status").filter({ hasText: "now runs version 2" }).waitFor();
  const values = await seen;
  assert.ok(values.length >= 3, `the bar moved through ${values.length} values`);
  assert.equal(await page.getByTestId("progress").evaluate((p) => [p.value, p.max].join("/")), "98304/98304");
  assert.match(await text("progress-text"), /96 KiB of 96 KiB/);
  assert.match(await text("device-version"), /version 2/);
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, "update-done.png"), fullPage: true });
});

test("the same image again: the device is up to date and nothing is sent", async () => {
  await page.getByTestId("update").click();
  await page.getByTestId("update-status").filter({ hasText: "already runs version 2" }).waitFor();
  assert.equal(await page.getByTestId("update-status").getAttribute("data-state"), "pass");
});

test("SiFli demo device: DFU package → Connect → Update, through the reboot into the OTA manager", async () => {
  await page.getByTestId("connect").click(); // disconnect the gadget
  await page.getByTestId("update-status").filter({ hasText: "Disconnected" }).waitFor();
  await page.getByTestId("device-demo-dfu").check();
  await page.getByTestId("demo-dfu").click();
  await page.getByTestId("dfu-summary").filter({ hasText: "Package ready" }).waitFor();
  assert.match(await text("dfu-summary"), /hcpu\.transfer\.bin, res\.transfer\.bin, font\.transfer\.bin/);
  await page.getByTestId("connect").click();
  await page.getByTestId("update-status").filter({ hasText: "Connected" }).waitFor();
  assert.equal(await text("device-name"), "otaweb demo SiFli");
  await page.getByTestId("update").click();
  await page.getByTestId("update-status").filter({ hasText: "installed the package" }).waitFor();
  const [value, max] = await page.getByTestId("progress").evaluate((p) => [p.value, p.max]);
  assert.equal(value, max);
  assert.ok(max > 50_000, `progress over ${max} bytes`);
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, "update-dfu-done.png"), fullPage: true });
});

test("no console errors, page errors or failed requests", () => {
  assert.deepEqual(problems, []);
});
