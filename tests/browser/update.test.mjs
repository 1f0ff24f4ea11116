// End-to-end: a person updates the demo gadget by hand on the page — demo image, Connect,
// Update — in Debian's headless Chromium. The page's real Web Bluetooth code path runs
// against the companion firmware compiled to wasm (pkg/demo/) behind the stand-in.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { launchBrowser, root, screenshotColours, startServer } from "./helpers.mjs";

const ARTIFACTS = join(root, "tests", "artifacts");
const TIMEOUT = 60_000;

let server;
let browser;
let page;
const problems = [];

const text = (id) => page.getByTestId(id).textContent();

/** Saves a full-page screenshot under tests/artifacts/ and checks it is not blank. */
async function keyScreenshot(on, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const png = await on.screenshot({ path: join(ARTIFACTS, name), fullPage: true });
  const colours = await screenshotColours(on, png);
  assert.ok(colours >= 8, `${name} has ${colours} distinct colours`);
}

/** Each step of the list: its id, state, whether it is the current one, and its text. */
const steps = (on = page) =>
  on.getByTestId("steps").evaluate((ol) =>
    [...ol.children].map((li) => ({
      step: li.dataset.step,
      state: li.dataset.state,
      current: li.getAttribute("aria-current"),
      text: li.textContent,
    })),
  );

function assertAllTicked(list, ids) {
  assert.deepEqual(list.map((s) => s.step), ids);
  for (const s of list) {
    assert.equal(s.state, "done", `${s.step} is done`);
    assert.equal(s.current, null, `${s.step} is not current`);
    assert.ok(s.text.startsWith("✓") && s.text.endsWith(": done"), `${s.step} reads ${JSON.stringify(s.text)}`);
  }
}

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
  await keyScreenshot(page, "device-connected.png");

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
  assert.match(await text("progress-text"), /^100 % · 96 KiB of 96 KiB/);
  assert.match(await text("device-version"), /version 2/);
  assertAllTicked(await steps(), ["handshake", "discover", "transfer", "apply", "restart", "confirm"]);
  await keyScreenshot(page, "update-done.png");
});

test("the event log lists the update's steps with times, and Copy log puts it on the clipboard", async () => {
  const lines = await page.getByTestId("update-log").locator("li").allTextContents();
  const times = /^\d\d:\d\d:\d\d\.\d{3} /;
  for (const line of lines) assert.match(line, times);
  const events = lines.map((l) => l.replace(times, ""));
  const order = [
    "connected to otaweb demo gadget (demo-gadget)",
    "stage: handshake",
    "version: the device runs 0, offered 2",
    "stage: transfer",
    "progress: 16 % (16 KiB of 96 KiB)",
    "progress: 100 % (96 KiB of 96 KiB)",
    "stage: apply",
    "stage: restart",
    "stage: confirm",
    "done: the device runs version 2",
  ];
  let at = -1;
  for (const want of order) {
    const found = events.indexOf(want, at + 1);
    assert.ok(found > at, `the log has ${JSON.stringify(want)} after line ${at}: ${JSON.stringify(events)}`);
    at = found;
  }
  await browser.context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: server.url });
  await page.getByTestId("copy-log").click();
  await page.getByTestId("copy-status").filter({ hasText: "Copied" }).waitFor();
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  assert.match(copied, /^otaweb \d+\.\d+\.\d+\S* · Mozilla/);
  assert.ok(copied.includes("done: the device runs version 2"), copied);
  assert.equal(copied.split("\n").length, lines.length + 1);
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
  assertAllTicked(await steps(), ["init", "reboot", "transfer", "install"]);
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, "update-dfu-done.png"), fullPage: true });
});

test("a slow link: the bar mid-transfer, then Cancel says what happened and what to do", async () => {
  // One packet per connection event makes the transfer last a few seconds.
  const slow = await browser.context.newPage();
  slow.setDefaultTimeout(TIMEOUT);
  slow.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  try {
    await slow.goto(new URL("/?demoPacketsPerEvent=1", server.url).href);
    await slow.waitForFunction(() => document.documentElement.dataset.updateReady === "true");
    await slow.getByTestId("demo-image").click();
    await slow.locator('[data-testid="verdict"][data-state="pass"]').waitFor();
    await slow.getByTestId("connect").click();
    await slow.getByTestId("update-status").filter({ hasText: "ready to install" }).waitFor();
    await slow.getByTestId("update").click();
    await slow.waitForFunction(() => {
      const bar = document.getElementById("progress");
      return bar.max > 1 && bar.value >= 0.1 * bar.max && bar.value <= 0.9 * bar.max;
    });
    const now = await steps(slow);
    assert.deepEqual(now.filter((s) => s.current === "step").map((s) => s.step), ["transfer"]);
    assert.deepEqual(now.filter((s) => s.state === "done").map((s) => s.step), ["handshake", "discover"]);
    assert.match(await slow.getByTestId("progress-text").textContent(), /^\d+ % · [\d.]+ KiB of 96 KiB · [\d.]+ KiB\/s · about \d+ s left$/);
    await keyScreenshot(slow, "update-in-progress.png");
    await slow.getByTestId("cancel").click();
    await slow.getByTestId("update-status").filter({ hasText: "(cancelled)" }).waitFor();
    assert.equal(await slow.getByTestId("update-hint").textContent(), "Nothing was installed. The device keeps its current firmware.");
    const failed = (await steps(slow)).filter((s) => s.state === "failed");
    assert.deepEqual(failed.map((s) => [s.step, s.text]), [["transfer", "✗Transfer: failed"]]);
    const log = await slow.getByTestId("update-log").locator("li").allTextContents();
    assert.match(log.at(-1), / cancelled$/);
    // Without clipboard access Copy log selects the lines for the keyboard instead.
    await slow.evaluate(() => {
      navigator.clipboard.writeText = () => Promise.reject(new DOMException("denied", "NotAllowedError"));
    });
    await slow.getByTestId("copy-log").click();
    await slow.getByTestId("copy-status").filter({ hasText: "Selected: press Ctrl+C" }).waitFor();
    const selected = await slow.evaluate(() => window.getSelection().toString());
    assert.ok(selected.includes("stage: transfer") && selected.includes("cancelled"), selected);
  } finally {
    await slow.close();
  }
});

/** Progress percentages in log order. */
const percents = (events) => events.filter((e) => e.startsWith("progress: ")).map((e) => Number(e.match(/(\d+) %/)[1]));

/** A fresh page whose demo radio drops the link after the given writes. */
async function droppingPage(query) {
  const other = await browser.context.newPage();
  other.setDefaultTimeout(TIMEOUT);
  other.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  await other.goto(`${server.url}?${query}`);
  await other.waitForFunction(() => document.documentElement.dataset.updateReady === "true");
  return other;
}

const logOf = async (on) =>
  (await on.getByTestId("update-log").locator("li").allTextContents()).map((l) => l.replace(/^\S+ /, ""));

test("the link drops twice mid-transfer: the updater reconnects and resumes, the gadget ends on version 2", async () => {
  const other = await droppingPage("device=demo-gadget&demoDropLinkAfter=150,300");
  await other.getByTestId("demo-image").click();
  await other.locator('[data-testid="verdict"][data-state="pass"]').waitFor();
  await other.getByTestId("connect").click();
  await other.getByTestId("update-status").filter({ hasText: "version 2 is ready to install" }).waitFor();
  await other.getByTestId("update").click();
  await other.getByTestId("update-status").filter({ hasText: "now runs version 2" }).waitFor();
  const events = await logOf(other);
  const transfer = events.indexOf("stage: transfer");
  const apply = events.indexOf("stage: apply");
  const midTransfer = events.slice(transfer, apply);
  assert.equal(midTransfer.filter((e) => e === "disconnected").length, 2, JSON.stringify(events));
  assert.ok(midTransfer.some((e) => e.startsWith("reconnecting")), JSON.stringify(events));
  // Resumed, not restarted: what the device confirmed never goes back.
  const seen = percents(midTransfer.concat(events.slice(apply)));
  assert.deepEqual(seen, [...seen].sort((a, b) => a - b), `progress went back: ${seen}`);
  assert.equal(seen.at(-1), 100);
  assertAllTicked(await steps(other), ["handshake", "discover", "transfer", "apply", "restart", "confirm"]);
  assert.match(await other.getByTestId("device-version").textContent(), /version 2/);
  await other.close();
});

test("SiFli demo device: the link drops mid-transfer, the update resumes where the device left off", async () => {
  const other = await droppingPage("device=demo-dfu&demoDropLinkAfter=120");
  await other.getByTestId("demo-dfu").click();
  await other.getByTestId("dfu-summary").filter({ hasText: "Package ready" }).waitFor();
  await other.getByTestId("connect").click();
  await other.getByTestId("update-status").filter({ hasText: "Connected" }).waitFor();
  await other.getByTestId("update").click();
  await other.getByTestId("update-status").filter({ hasText: "installed the package" }).waitFor();
  const events = await logOf(other);
  const transfer = events.indexOf("stage: transfer");
  assert.ok(transfer >= 0, JSON.stringify(events));
  const during = events.slice(transfer, events.indexOf("stage: install"));
  assert.ok(during.includes("disconnected"), `a drop during the transfer: ${JSON.stringify(events)}`);
  assert.ok(during.some((e) => e.startsWith("resuming")), `resumed, not restarted: ${JSON.stringify(events)}`);
  const seen = percents(events.slice(transfer));
  assert.deepEqual(seen, [...seen].sort((a, b) => a - b), `progress went back: ${seen}`);
  const [value, max] = await other.getByTestId("progress").evaluate((p) => [p.value, p.max]);
  assert.equal(value, max);
  assertAllTicked(await steps(other), ["init", "reboot", "transfer", "install"]);
  await other.close();
});

test("no console errors, page errors or failed requests", () => {
  assert.deepEqual(problems, []);
});
