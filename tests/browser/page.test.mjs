// End-to-end: the checker page in Debian's headless Chromium, served by scripts/serve.mjs,
// with the real wasm package from pkg/ and the fixtures from firmware-fixtures/files/.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { fixtures, launchBrowser, root, startServer, screenshotColours } from "./helpers.mjs";

const APP_V2 = join(fixtures, "app-v2.bin");
const CORRUPT = join(fixtures, "app-v2.corrupt.bin");
const MANIFEST = join(fixtures, "manifest.json");
const ARTIFACTS = join(root, "tests", "artifacts");
const TIMEOUT = 30_000;

let server;
let browser;
let page;
const problems = []; // console errors and uncaught page errors
const choosers = []; // file-chooser dialogs the page opened

/** The same wasm package, run in node: what the page must show for a given input. */
async function wasmInNode() {
  const mod = await import(pathToFileURL(join(root, "pkg", "otaweb.js")).href);
  mod.initSync({ module: readFileSync(join(root, "pkg", "otaweb_bg.wasm")) });
  return mod;
}

function sha256SumsLine(name) {
  const sums = readFileSync(join(fixtures, "SHA256SUMS"), "utf8");
  const line = sums.split("\n").find((l) => l.trim().split(/\s+\*?/)[1] === name);
  assert.ok(line, `${name} is listed in SHA256SUMS`);
  return line.trim().split(/\s+/)[0];
}

const text = (id) => page.getByTestId(id).textContent();

before(async () => {
  for (const f of [APP_V2, CORRUPT, MANIFEST, join(fixtures, "SHA256SUMS")]) {
    assert.ok(existsSync(f), `fixture ${f} exists (regenerate: see firmware-fixtures/README.md)`);
  }
  assert.ok(existsSync(join(root, "pkg", "otaweb.js")), "pkg/ is built (run `make pkg`)");
  server = await startServer();
  browser = await launchBrowser();
  page = browser.context.pages()[0] ?? (await browser.context.newPage());
  page.setDefaultTimeout(TIMEOUT);
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  // Listening from the start turns on Playwright's file-chooser interception before any
  // test needs it (turning it on in the same breath as the key press races).
  page.on("filechooser", (chooser) => choosers.push(chooser));
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()}`));
  page.on("response", (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`);
  });
  await page.goto(server.url);
  await page.waitForFunction(() => document.documentElement.dataset.ready !== undefined);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test("the page starts and shows the otaweb version", async () => {
  assert.equal(await page.evaluate(() => document.documentElement.dataset.ready), "true");
  const pkgVersion = JSON.parse(readFileSync(join(root, "pkg", "package.json"), "utf8")).version;
  assert.equal((await text("otaweb-version")).trim(), pkgVersion);
});

test("the banner says Web Bluetooth is available in a secure context", async () => {
  await page.locator('[data-testid="support"][data-state]').waitFor();
  assert.equal(await page.getByTestId("support").getAttribute("data-state"), "ok");
  assert.match(await text("support-line"), /Web Bluetooth is available and this page is a secure context/);
  assert.equal(await page.getByTestId("support-help").isHidden(), true);
});

test("without navigator.bluetooth the banner says which browsers work, the Linux flag, and the demos", async () => {
  const bare = await browser.context.newPage();
  try {
    await bare.addInitScript(() => delete Navigator.prototype.bluetooth);
    await bare.goto(server.url);
    await bare.locator('[data-testid="support"][data-state="missing"]').waitFor();
    assert.match(await bare.getByTestId("support-line").textContent(), /Real devices cannot be reached: this browser has no Web Bluetooth\./);
    const help = bare.getByTestId("support-help");
    assert.equal(await help.isVisible(), true);
    const said = (await help.textContent()).replace(/\s+/g, " ");
    for (const part of [
      "Chrome and Edge on desktop and on Android",
      "Firefox and Safari do not have it",
      "chrome://flags/#enable-experimental-web-platform-features",
      "--enable-features=WebBluetooth",
      "The demo devices in section 4 run in this page and work in any browser",
    ]) {
      assert.ok(said.includes(part), `the help says ${JSON.stringify(part)}: ${said}`);
    }
    // The help's long flag names still fit a phone.
    await bare.setViewportSize({ width: 390, height: 800 });
    const [scrollWidth, innerWidth] = await bare.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
    assert.ok(scrollWidth <= innerWidth, `page is ${scrollWidth}px wide in a ${innerWidth}px viewport`);
    // The demo device runs in the page, so it still connects.
    await bare.getByTestId("demo-image").click();
    await bare.locator('[data-testid="verdict"][data-state="pass"]').waitFor();
    await bare.getByTestId("connect").click();
    await bare.getByTestId("update-status").filter({ hasText: "ready to install" }).waitFor();
  } finally {
    await bare.close();
  }
});

test("the drop zone is a keyboard-operable button that opens the file picker", async () => {
  const zone = page.getByTestId("drop-zone");
  assert.equal(await zone.evaluate((el) => el.tagName), "BUTTON");
  await zone.focus();
  const before = choosers.length;
  await page.keyboard.press("Enter");
  for (let i = 0; i < 50 && choosers.length === before; i++) await page.waitForTimeout(100);
  assert.equal(choosers.length, before + 1, "Enter on the drop zone opened one file chooser");
  assert.equal(choosers.at(-1).isMultiple(), false);
});

test("app-v2.bin: size, SHA-256 and MD5 computed in wasm match independent values", async () => {
  const bytes = readFileSync(APP_V2);
  await page.getByTestId("file-input").setInputFiles(APP_V2);
  await page.getByTestId("file-name").filter({ hasText: "app-v2.bin" }).waitFor();
  assert.equal(await text("file-name"), "app-v2.bin");
  assert.equal(await page.getByTestId("file-size").getAttribute("data-bytes"), String(bytes.length));
  assert.match(await text("file-size"), /98,304 bytes \(96\.0 KiB\)/);
  assert.equal(await text("sha256"), sha256SumsLine("app-v2.bin"));
  assert.equal(await text("md5"), createHash("md5").update(bytes).digest("hex"));
  assert.equal(await text("verdict"), "No manifest given.");
});

test("manifest.json: app-v2.bin matches its signed entry", async () => {
  await page.getByTestId("manifest-input").setInputFiles(MANIFEST);
  const verdict = page.getByTestId("verdict");
  await page.locator('[data-testid="verdict"][data-state="pass"]').waitFor();
  assert.match(
    await verdict.textContent(),
    /Matches manifest entry app v2: size, SHA-256 and signature verified/,
  );
});

test("app-v2.corrupt.bin: the verdict shows otaweb's digest-mismatch error", async () => {
  // The message the page must show, from the same wasm package run in node.
  const wasm = await wasmInNode();
  const entry = wasm.parseManifest(readFileSync(MANIFEST, "utf8")).find((e) => e.url === "app-v2.bin");
  const key = readFileSync(join(fixtures, "keys", "test-signing-key.pub.pem"), "utf8");
  let expected;
  try {
    wasm.verifyImage(new Uint8Array(readFileSync(CORRUPT)), entry, key, false);
    assert.fail("the corrupt image verified");
  } catch (e) {
    expected = e;
  }
  assert.equal(expected.code, "digest-mismatch");

  await page.getByTestId("file-input").setInputFiles(CORRUPT);
  await page.getByTestId("file-name").filter({ hasText: "app-v2.corrupt.bin" }).waitFor();
  await page.locator('[data-testid="verdict"][data-state="fail"]').waitFor();
  const verdict = await text("verdict");
  assert.ok(verdict.includes(expected.message), `verdict ${JSON.stringify(verdict)} shows ${JSON.stringify(expected.message)}`);
  assert.ok(verdict.includes("digest-mismatch"), "verdict names the error code");
  assert.ok(verdict.includes("download it again"), "verdict says what to do next");
  assert.notEqual(await text("sha256"), sha256SumsLine("app-v2.bin"));
  mkdirSync(ARTIFACTS, { recursive: true });
  const png = await page.screenshot({ path: join(ARTIFACTS, "error-shown.png"), fullPage: true });
  assert.ok((await screenshotColours(page, png)) >= 8, "error-shown.png is not blank");
});

test("manifest-bad-signature.json: app-v2.bin is refused as signature-invalid", async () => {
  await page.getByTestId("file-input").setInputFiles(APP_V2);
  await page.getByTestId("file-name").filter({ hasText: /^app-v2\.bin$/ }).waitFor();
  await page.getByTestId("manifest-input").setInputFiles(join(fixtures, "manifest-bad-signature.json"));
  await page.getByTestId("verdict").filter({ hasText: "signature-invalid" }).waitFor();
  assert.equal(await page.getByTestId("verdict").getAttribute("data-state"), "fail");
  // Back to the good manifest for the screenshots.
  await page.getByTestId("manifest-input").setInputFiles(MANIFEST);
  await page.locator('[data-testid="verdict"][data-state="pass"]').waitFor();
});

test("every error code gets a next step: named ones their own, dfu-bundle-* one, others a generic one", async () => {
  const hints = await page.evaluate(async () => {
    const { hintFor } = await import("/status.js");
    const codes = ["md5-mismatch", "signature-invalid", "signature-missing", "no-trusted-key", "insecure-url",
      "policy-invalid", "dfu-bundle-bad-checksum", "dfu-bundle-truncated", "no-such-code"];
    return Object.fromEntries(codes.map((c) => [c, hintFor({}, c)]));
  });
  for (const [code, hint] of Object.entries(hints)) assert.ok(hint.length > 20, `${code}: ${hint}`);
  assert.equal(hints["dfu-bundle-bad-checksum"], hints["dfu-bundle-truncated"]);
  assert.match(hints["dfu-bundle-truncated"], /damaged or not a DFU bundle/);
  assert.match(hints["no-such-code"], /copy the event log/);
  assert.equal(new Set(Object.values(hints)).size, Object.keys(hints).length - 1, "the named codes have their own hints");
});

test("fits a phone screen without sideways scrolling", async () => {
  const size = page.viewportSize();
  await page.setViewportSize({ width: 360, height: 740 });
  try {
    const [scrollWidth, innerWidth] = await page.evaluate(() => [
      document.documentElement.scrollWidth,
      window.innerWidth,
    ]);
    assert.ok(scrollWidth <= innerWidth, `page is ${scrollWidth}px wide in a ${innerWidth}px viewport`);
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, "page-phone.png"), fullPage: true });
  } finally {
    await page.setViewportSize(size);
  }
});

test("screenshot is not blank", async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  const png = await page.screenshot({ fullPage: true });
  writeFileSync(join(ARTIFACTS, "page.png"), png);
  assert.ok(png.length > 10_000, `screenshot is ${png.length} bytes`);
  const colours = await screenshotColours(page, png);
  assert.ok(colours >= 8, `screenshot has ${colours} distinct colours`);
});

test("no console errors, page errors or failed requests", () => {
  assert.deepEqual(problems, []);
});
