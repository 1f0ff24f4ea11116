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
// Paths the URL tests make fail on purpose (a real 404, and the /url-test/ answers they stage
// with page.route): requests and console lines about them are not problems.
const MEANT_TO_FAIL = ["/fixtures/missing.", "/url-test/"];

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

/** Collects `p`'s console errors, page errors and failed requests into `problems`. */
function watchProblems(p) {
  const unplanned = (url) => !MEANT_TO_FAIL.some((path) => url.includes(path));
  p.on("console", (m) => {
    if (m.type() === "error" && unplanned(m.location().url ?? "")) problems.push(`console: ${m.text()}`);
  });
  p.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  p.on("requestfailed", (r) => {
    if (unplanned(r.url())) problems.push(`request failed: ${r.url()}`);
  });
  p.on("response", (r) => {
    if (r.status() >= 400 && unplanned(r.url())) problems.push(`HTTP ${r.status()}: ${r.url()}`);
  });
}

/** Runs `fn` on a page of its own, freshly loaded, so a test starts from nothing chosen. */
async function withPage(fn) {
  const p = await browser.context.newPage();
  try {
    p.setDefaultTimeout(TIMEOUT);
    watchProblems(p);
    await p.goto(server.url);
    await p.waitForFunction(() => document.documentElement.dataset.ready === "true");
    await fn(p);
  } finally {
    await p.close();
  }
}

/** The error otaweb's wasm gives for app-v2.corrupt.bin against its manifest entry, in node. */
async function corruptImageError() {
  const wasm = await wasmInNode();
  const entry = wasm.parseManifest(readFileSync(MANIFEST, "utf8")).find((e) => e.url === "app-v2.bin");
  const key = readFileSync(join(fixtures, "keys", "test-signing-key.pub.pem"), "utf8");
  try {
    wasm.verifyImage(new Uint8Array(readFileSync(CORRUPT)), entry, key, false);
  } catch (e) {
    return e;
  }
  assert.fail("the corrupt image verified");
}

const imageUrl = (p) => p.getByRole("textbox", { name: "…or from a URL", exact: true });
const manifestUrl = (p) => p.getByRole("textbox", { name: "…or load a manifest from a URL", exact: true });

/** Types `url` into the firmware URL field and presses Fetch. */
async function fetchImage(p, url) {
  await imageUrl(p).fill(url);
  await p.getByRole("button", { name: "Fetch", exact: true }).click();
}

/** Types `url` into the manifest URL field and presses Load. */
async function loadManifest(p, url) {
  await manifestUrl(p).fill(url);
  await p.getByRole("button", { name: "Load", exact: true }).click();
}

const passed = (p) => p.locator('[data-testid="verdict"][data-state="pass"]').waitFor();
const fileNamed = (p, name) => p.getByTestId("file-name").filter({ hasText: new RegExp(`^${name.replaceAll(".", "\\.")}$`) }).waitFor();

before(async () => {
  for (const f of [APP_V2, CORRUPT, MANIFEST, join(fixtures, "SHA256SUMS")]) {
    assert.ok(existsSync(f), `fixture ${f} exists (regenerate: see firmware-fixtures/README.md)`);
  }
  assert.ok(existsSync(join(root, "pkg", "otaweb.js")), "pkg/ is built (run `make pkg`)");
  server = await startServer();
  browser = await launchBrowser();
  page = browser.context.pages()[0] ?? (await browser.context.newPage());
  page.setDefaultTimeout(TIMEOUT);
  watchProblems(page);
  // Listening from the start turns on Playwright's file-chooser interception before any
  // test needs it (turning it on in the same breath as the key press races).
  page.on("filechooser", (chooser) => choosers.push(chooser));
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
  const expected = await corruptImageError();
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

test("firmware URL, then manifest URL: the downloaded image passes with its signature verified, sent without cookies, and installs", async () => {
  // A cookie for the page's server: the page's own fetch of the demo key carries it, the
  // downloads must not.
  await browser.context.addCookies([{ name: "session", value: "not-for-downloads", url: server.url }]);
  try {
    await withPage(async (p) => {
      const sent = [];
      p.on("request", (r) => sent.push(r));
      await fetchImage(p, "/fixtures/app-v2.bin");
      await fileNamed(p, "app-v2.bin");
      assert.equal(await p.getByTestId("sha256").textContent(), sha256SumsLine("app-v2.bin"));
      assert.equal(await p.getByTestId("file-size").getAttribute("data-bytes"), "98304");
      assert.equal(await p.getByTestId("verdict").textContent(), "No manifest given.");

      await loadManifest(p, "/fixtures/manifest.json");
      await passed(p);
      assert.match(await p.getByTestId("verdict").textContent(), /Matches manifest entry app v2: size, SHA-256 and signature verified/);
      assert.equal(await p.getByTestId("manifest-text").inputValue(), readFileSync(MANIFEST, "utf8"));
      // An image was chosen, so the manifest only checks it, and says what it would offer.
      assert.equal(await p.getByTestId("manifest-pick").textContent(),
        "The newest of the manifest's 2 gadget images: app version 2 (app-v2.bin).");

      const sentTo = (path) => sent.find((r) => new URL(r.url()).pathname === path);
      const key = sentTo("/fixtures/keys/test-signing-key.pub.pem");
      assert.match((await key.allHeaders()).cookie ?? "", /session=/, "a same-origin fetch would send the cookie");
      for (const path of ["/fixtures/app-v2.bin", "/fixtures/manifest.json"]) {
        assert.equal((await sentTo(path).allHeaders()).cookie, undefined, `${path} was fetched without cookies`);
      }

      // Section 4 takes the downloaded image like a chosen file.
      await p.getByTestId("connect").click();
      await p.getByTestId("update-status").filter({ hasText: "ready to install" }).waitFor();
      assert.equal(await p.getByTestId("update").isEnabled(), true);
    });
  } finally {
    await browser.context.clearCookies();
  }
});

test("manifest URL alone: its newest gadget image is named, fetched from beside the manifest and verified", async () => {
  await withPage(async (p) => {
    const fetched = [];
    p.on("request", (r) => fetched.push(new URL(r.url()).pathname));
    await loadManifest(p, "/fixtures/manifest.json");
    await passed(p);
    assert.equal(await p.getByTestId("file-name").textContent(), "app-v2.bin");
    assert.match(await p.getByTestId("verdict").textContent(), /Matches manifest entry app v2: size, SHA-256 and signature verified/);
    assert.equal(await p.getByTestId("manifest-pick").textContent(),
      "The newest of the manifest's 2 gadget images: app version 2 (app-v2.bin).");
    // entry.url "app-v2.bin" resolved against the manifest's URL, not the page's.
    assert.equal(await imageUrl(p).inputValue(), new URL("/fixtures/app-v2.bin", server.url).href);
    assert.deepEqual(fetched.filter((path) => path.startsWith("/fixtures/app")), ["/fixtures/app-v2.bin"],
      "only the newest gadget image was downloaded");
  });
});

test("a manifest URL loaded while a firmware URL still downloads leaves that download alone", async () => {
  await withPage(async (p) => {
    const fetched = [];
    p.on("request", (r) => fetched.push(new URL(r.url()).pathname));
    let release;
    const released = new Promise((resolve) => (release = resolve));
    await p.route("**/url-test/late-v2.bin", async (r) => {
      await released;
      await r.fulfill({ body: readFileSync(APP_V2) });
    });
    await Promise.all([p.waitForRequest("**/url-test/late-v2.bin"), fetchImage(p, "/url-test/late-v2.bin")]);
    await loadManifest(p, "/fixtures/manifest.json");
    await p.getByTestId("status-line").filter({ hasText: "the firmware file is still downloading" }).waitFor();
    release();
    await fileNamed(p, "late-v2.bin");
    await passed(p); // matched to its entry by SHA-256
    assert.ok(!fetched.includes("/fixtures/app-v2.bin"), "the manifest's own pick was not fetched");
  });
});

test("app-v2.corrupt.bin by URL with the manifest by URL: the digest mismatch is shown in words", async () => {
  const expected = await corruptImageError();
  await withPage(async (p) => {
    await fetchImage(p, "/fixtures/app-v2.corrupt.bin");
    await fileNamed(p, "app-v2.corrupt.bin");
    await loadManifest(p, "/fixtures/manifest.json");
    await p.locator('[data-testid="verdict"][data-state="fail"]').waitFor();
    const verdict = await p.getByTestId("verdict").textContent();
    assert.ok(verdict.includes(expected.message), `verdict ${JSON.stringify(verdict)} shows ${JSON.stringify(expected.message)}`);
    assert.ok(verdict.includes("digest-mismatch") && verdict.includes("download it again"), verdict);
    assert.equal(await p.getByTestId("update").isEnabled(), false);
  });
});

test("a URL that fails says what went wrong and what to do, and keeps what was loaded", async () => {
  const manifest = readFileSync(MANIFEST, "utf8");
  await withPage(async (p) => {
    // Answers a real server would give, staged under /url-test/.
    await p.route("**/url-test/broken.bin", (r) => r.fulfill({ status: 500, body: "oops" }));
    await p.route("**/url-test/offline.bin", (r) => r.abort("internetdisconnected"));
    await p.route("**/url-test/huge.json", (r) =>
      r.fulfill({ contentType: "application/json", body: Buffer.alloc(1024 * 1024 + 1, " ") }));
    await fetchImage(p, "/fixtures/app-v2.bin");
    await loadManifest(p, "/fixtures/manifest.json");
    await passed(p);

    const cases = [
      [fetchImage, "image", "/fixtures/missing.bin",
        /^✗ there is no firmware file at http:\/\/127\.0\.0\.1:\d+\/fixtures\/missing\.bin \(the server answered HTTP 404\) \(not-found\)$/,
        /Check the address for typing mistakes/],
      [fetchImage, "image", "/url-test/broken.bin",
        /^✗ the server answered HTTP 500 Internal Server Error instead of sending the firmware file at .*broken\.bin \(http-error\)$/,
        /Try again later/],
      [fetchImage, "image", "/url-test/offline.bin",
        /^✗ could not download the firmware file from 127\.0\.0\.1:\d+: the server cannot be reached, or it does not let other sites read its files \(download-failed\)$/,
        /Check the address and the network.*\(CORS\)/],
      [loadManifest, "manifest", "/fixtures/missing.json", /^✗ there is no manifest at .*missing\.json.*\(not-found\)$/,
        /Check the address for typing mistakes/],
      [loadManifest, "manifest", "/index.html",
        /^✗ http:\/\/127\.0\.0\.1:\d+\/index\.html is not a manifest this page can use: .*not valid JSON.* \(manifest-invalid\)$/,
        /must point at the otaweb manifest \(JSON\) itself/],
      [loadManifest, "manifest", "/url-test/huge.json", /^✗ the manifest at .*huge\.json is larger than 1 MiB.* \(too-large\)$/,
        /must point at the firmware image or the manifest itself/],
    ];
    const status = p.getByTestId("status-line");
    for (const [act, field, url, said, next] of cases) {
      await act(p, url);
      await status.filter({ hasText: said }).waitFor();
      assert.equal(await status.getAttribute("data-state"), "fail", url);
      const hint = p.getByTestId(`${field}-url-hint`);
      assert.equal(await hint.isVisible(), true, `${url}: the next step is shown at the field`);
      assert.match(await hint.textContent(), next, url);
      const input = field === "image" ? imageUrl(p) : manifestUrl(p);
      assert.equal(await input.getAttribute("aria-invalid"), "true", url);
      // The field's description, which a screen reader reads with it, holds the next step.
      const described = await input.evaluate((el) =>
        el.getAttribute("aria-describedby").split(" ").map((id) => document.getElementById(id).textContent).join(" "));
      assert.match(described, next, url);
      // Nothing half-loaded: the image, the manifest and the verdict from before are untouched.
      assert.equal(await p.getByTestId("file-name").textContent(), "app-v2.bin", url);
      assert.equal(await p.getByTestId("manifest-text").inputValue(), manifest, url);
      assert.equal(await p.getByTestId("verdict").getAttribute("data-state"), "pass", url);
    }

    // Long addresses in the messages still fit a phone.
    await p.setViewportSize({ width: 360, height: 740 });
    const [scrollWidth, innerWidth] = await p.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
    assert.ok(scrollWidth <= innerWidth, `page is ${scrollWidth}px wide in a ${innerWidth}px viewport`);

    // A download that works clears the error.
    await fetchImage(p, "/fixtures/app-v2.bin");
    await status.filter({ hasText: "app-v2.bin matches the manifest." }).waitFor();
    assert.equal(await status.getAttribute("data-state"), "");
    assert.equal(await imageUrl(p).getAttribute("aria-invalid"), null);
    assert.equal(await p.getByTestId("manifest-url-hint").isHidden(), true);
  });
});

test("plain http:// to another computer is refused before any request leaves; https and this computer are not", async () => {
  await withPage(async (p) => {
    const sent = [];
    p.on("request", (r) => sent.push(r.url()));
    const status = p.getByTestId("status-line");
    // A manifest served from this computer whose gadget image is on plain http elsewhere.
    const manifest = JSON.parse(readFileSync(MANIFEST, "utf8"));
    manifest.images[1].url = "http://example.com/app-v2.bin";
    await p.route("**/url-test/insecure-manifest.json", (r) => r.fulfill({ json: manifest }));
    // The wording after the colon is the update service's own (checkUrl in the wasm).
    const plain = "invalid argument: plain http:// is only allowed to this computer";
    const refusals = [
      [fetchImage, "image", "http://example.com/x.bin", `refused http://example.com/x.bin for the firmware file: ${plain}`],
      [fetchImage, "image", "http://192.168.1.20/x.bin", `refused http://192.168.1.20/x.bin for the firmware file: ${plain}`],
      [fetchImage, "image", "ftp://example.com/x.bin", "refused ftp://example.com/x.bin for the firmware file: invalid argument: a manifest or image URL must start with https://"],
      [loadManifest, "manifest", "http://example.com/manifest.json", `refused http://example.com/manifest.json for the manifest: ${plain}`],
      [loadManifest, "image", "/url-test/insecure-manifest.json", `refused http://example.com/app-v2.bin for the firmware file: ${plain}`],
    ];
    for (const [act, field, url, said] of refusals) {
      await act(p, url);
      await status.filter({ hasText: said }).waitFor();
      assert.match(await status.textContent(), /^✗ .* \(insecure-url\)$/, url);
      assert.match(await p.getByTestId(`${field}-url-hint`).textContent(), /Use the https:\/\/ address/, url);
    }
    assert.deepEqual(sent.filter((u) => !u.includes("/url-test/insecure-manifest.json")), [], "no request left for a refused URL");
    assert.equal(await p.getByTestId("results").isHidden(), true, "no image was taken");

    // https:// anywhere, and plain http:// to this computer under its other names, are
    // fetched (answered here, with the CORS header a real firmware server sends).
    const firmware = { body: readFileSync(APP_V2), headers: { "Access-Control-Allow-Origin": "*" } };
    await p.route((u) => u.hostname === "firmware.example.com" || u.port === "8443", (r) => r.fulfill(firmware));
    for (const url of ["https://firmware.example.com/v2/app-https.bin", "http://localhost:8443/app-localhost.bin",
      "http://[::1]:8443/app-ipv6.bin", "http://127.1.2.3:8443/app-loopback.bin"]) {
      await fetchImage(p, url);
      await fileNamed(p, url.slice(url.lastIndexOf("/") + 1));
      assert.ok(sent.includes(url), `${url} was requested`);
    }
  });
});

test("keyboard only: Tab to the URL field, type, Enter fetches; Escape or a second fetch stops a slow one", async () => {
  await withPage(async (p) => {
    await p.route("**/url-test/slow.bin", () => {}); // never answered
    const focused = () => p.evaluate(() => document.activeElement?.id);

    await p.getByTestId("drop-zone").focus();
    await p.keyboard.press("Tab");
    assert.equal(await focused(), "image-url");
    await p.keyboard.type("/fixtures/app-v2.bin");
    await p.keyboard.press("Enter");
    await fileNamed(p, "app-v2.bin");
    await p.keyboard.press("Tab");
    assert.equal(await focused(), "image-url-fetch");

    // Escape in the field stops a download and leaves the image as it was.
    await imageUrl(p).focus();
    await p.keyboard.press("ControlOrMeta+A");
    await p.keyboard.type("/url-test/slow.bin");
    await p.keyboard.press("Enter");
    await p.getByTestId("image-url-stop").waitFor();
    await p.keyboard.press("Escape");
    await p.getByTestId("status-line").filter({ hasText: "Stopped the download; the firmware file shown before stays." }).waitFor();
    assert.equal(await p.getByTestId("image-url-stop").isHidden(), true);
    assert.equal(await p.getByTestId("file-name").textContent(), "app-v2.bin");

    // A second fetch replaces one still running: its request is aborted, its bytes never used.
    const aborted = p.waitForEvent("requestfailed", (r) => r.url().includes("/url-test/slow.bin"));
    await Promise.all([p.waitForRequest("**/url-test/slow.bin"), fetchImage(p, "/url-test/slow.bin")]);
    await fetchImage(p, "/fixtures/app-v2.corrupt.bin");
    await fileNamed(p, "app-v2.corrupt.bin");
    assert.match((await aborted).failure()?.errorText ?? "", /ABORTED/);

    // The manifest field, reached by Tab alone from the image field.
    await imageUrl(p).focus();
    for (let i = 0; i < 10 && (await focused()) !== "manifest-url"; i++) await p.keyboard.press("Tab");
    assert.equal(await focused(), "manifest-url");
    await p.keyboard.type("/fixtures/manifest.json");
    await p.keyboard.press("Enter");
    await p.getByTestId("verdict").filter({ hasText: "digest-mismatch" }).waitFor();
  });
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
