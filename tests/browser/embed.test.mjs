// README.md's two "Embed in a portal" examples, run as a portal runs them: the plain module
// script of www/examples/plain.html (served by scripts/serve.mjs, as `make demo` serves it)
// and the Vite app of examples/vite/ (built here, then served from target/vite-example/).
// Both call the real `navigator.bluetooth` API; only this test puts the demo gadget (the
// companion firmware in wasm behind www/demo-bluetooth.js) behind it. In Debian's headless
// Chromium.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { extname, join, resolve, sep } from "node:path";
import { promisify } from "node:util";
import { fixtures, launchBrowser, root, startServer } from "./helpers.mjs";

const run = promisify(execFile);
const TIMEOUT = 60_000;
// A whole test, so a stuck page fails the suite instead of holding `make test` forever.
const TEST_TIMEOUT = 3 * TIMEOUT;
const VITE_CONFIG = "examples/vite/vite.config.js";
const VITE_OUT = join(root, "target", "vite-example");
const MAIN_TS = join(root, "examples", "vite", "src", "main.ts");
const PLAIN_HTML = join(root, "www", "examples", "plain.html");
// What both examples install: the newest gadget image of the fixtures' manifest.
const V2 = JSON.parse(readFileSync(join(fixtures, "manifest.json"), "utf8")).images.find(
  (i) => i.flow === "gadget" && i.version === "2",
);

let pageServer;
let viteServer;
let browser;

/** A tool from the root node_modules, or a clear failure naming what to do. */
function tool(path, name) {
  const file = join(root, "node_modules", path);
  if (!existsSync(file)) {
    throw new Error(`${name} is missing (${file}): run \`npm ci\` at the repository root (package.json devDependencies)`);
  }
  return file;
}

/** The command README.md documents, from the repository root; it writes target/vite-example/. */
async function buildViteExample() {
  const vite = tool("vite/bin/vite.js", "vite");
  try {
    await run(process.execPath, [vite, "build", "--config", VITE_CONFIG, "--logLevel", "warn"], { cwd: root });
  } catch (e) {
    throw new Error(`vite build --config ${VITE_CONFIG} failed:\n${e.stdout}${e.stderr}`);
  }
}

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".pem": "text/plain; charset=utf-8",
};

/** Serves the Vite build at / as a portal's web server would, plus what the test adds: the
 * fixtures at /fixtures/ (the example's manifest and key URLs) and the demo radio's files at
 * /demo-bluetooth.js and /pkg/demo/ (for the stand-in, which the app knows nothing of). */
async function serveViteBuild() {
  const files = { "/demo-bluetooth.js": join(root, "www", "demo-bluetooth.js") };
  const mounts = [
    ["/fixtures/", fixtures],
    ["/pkg/demo/", join(root, "pkg", "demo")],
    ["/", VITE_OUT],
  ];
  const locate = (path) => {
    if (files[path]) return files[path];
    const [prefix, dir] = mounts.find(([p]) => path.startsWith(p));
    const file = resolve(dir, path.slice(prefix.length) || "index.html");
    return file.startsWith(dir + sep) ? file : null;
  };
  const server = createServer(async (req, res) => {
    const file = locate(new URL(req.url, "http://localhost").pathname);
    try {
      const body = await readFile(file);
      res.writeHead(200, { "Content-Type": TYPES[extname(file)] ?? "application/octet-stream" });
      res.end(body);
    } catch {
      res.writeHead(404, { "Content-Type": "text/plain" });
      res.end("404 not found\n");
    }
  });
  await new Promise((listening) => server.listen(0, "127.0.0.1", listening));
  return {
    url: `http://127.0.0.1:${server.address().port}/`,
    stop: () => {
      server.closeAllConnections();
      return new Promise((closed) => server.close(closed));
    },
  };
}

/** Runs in the page before its scripts: `navigator.bluetooth` becomes the demo stand-in,
 * loaded from the page's own server on first use, so the example calls the API exactly as it
 * would with a real radio. `globalThis.demoBluetooth` lets the test look at the device. */
function installDemoRadio() {
  const load = () =>
    (globalThis.demoBluetooth ??= Promise.all([
      import("/pkg/demo/otaweb_demo_device.js"),
      import("/demo-bluetooth.js"),
    ]).then(async ([device, radio]) => {
      await device.default();
      return radio.createDemoBluetooth(() => new device.DemoGadget(undefined, undefined, "otaweb demo gadget"));
    }));
  Object.defineProperty(navigator, "bluetooth", {
    configurable: true,
    value: {
      getAvailability: () => load().then((b) => b.getAvailability()),
      requestDevice: (options) => load().then((b) => b.requestDevice(options)),
    },
  });
}

/** Opens `url` in a fresh page, clicks Update firmware and waits for the example's outcome
 * line; returns what the page shows, what the demo gadget says of itself, and the traffic. */
async function updateThrough(url) {
  const page = await browser.context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const problems = [];
  const requests = [];
  page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
  page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  page.on("request", (r) => requests.push(new URL(r.url())));
  page.on("response", (r) => r.status() >= 400 && problems.push(`HTTP ${r.status()}: ${r.url()}`));
  try {
    await page.addInitScript(installDemoRadio);
    await page.goto(url);
    // The example enables its button once `init()` resolved; click waits for that.
    await page.getByRole("button", { name: "Update firmware" }).click();
    await page.waitForFunction(() => document.querySelector("output").textContent !== "");
    return {
      status: await page.locator("output").textContent(),
      progress: await page.locator("progress").evaluate((bar) => [bar.value, bar.max]),
      gadget: await page.evaluate(async () => {
        const gadget = (await globalThis.demoBluetooth).device.radio.gadget;
        return { version: gadget.activeVersion, sha256: gadget.readBackSha256(), restarts: gadget.restarts };
      }),
      problems,
      requests,
    };
  } finally {
    await page.close();
  }
}

/** What both examples must have done: the gadget runs v2, and the page said so. */
function assertUpdated(outcome, origin) {
  assert.deepEqual(outcome.problems, []);
  assert.equal(outcome.status, "done: version 2");
  assert.deepEqual(outcome.progress, [V2.size, V2.size], "the progress bar reached the image's size");
  // From the device's side: the new image runs, read back from its flash, after one restart.
  assert.deepEqual(outcome.gadget, { version: 2, sha256: V2.sha256, restarts: 1 });
  const elsewhere = outcome.requests.filter((u) => u.origin !== origin).map(String);
  assert.deepEqual(elsewhere, [], "every request stayed on the portal's own server");
}

// Both examples in one Chromium; the checks below it need neither the browser nor the build.
describe("the examples in Chromium against the demo gadget", () => {
  // One at a time, each kept as soon as it runs: when a later one fails, after() still stops
  // the earlier ones, whose open sockets would otherwise keep this process alive for good.
  before(async () => {
    await buildViteExample();
    pageServer = await startServer();
    viteServer = await serveViteBuild();
    browser = await launchBrowser();
  }, { timeout: TEST_TIMEOUT });

  after(async () => {
    try {
      await browser?.close(); // throws when the events seen do not match pkg/otaweb.d.ts
    } finally {
      await Promise.all([pageServer?.stop(), viteServer?.stop()]);
    }
  }, { timeout: TEST_TIMEOUT });

  test("plain <script type=module> page: one click takes the demo gadget from version 0 to 2", { timeout: TEST_TIMEOUT }, async () => {
    const outcome = await updateThrough(`${pageServer.url}examples/plain.html`);
    assertUpdated(outcome, new URL(pageServer.url).origin);
    const wasm = outcome.requests.filter((u) => u.pathname.endsWith(".wasm")).map((u) => u.pathname);
    assert.ok(wasm.includes("/pkg/otaweb_bg.wasm"), `the page loaded pkg/'s wasm: ${wasm.join(", ")}`);
  });

  test("Vite build: the wasm is a bundled asset, and one click takes the demo gadget to version 2", { timeout: TEST_TIMEOUT }, async () => {
    const assets = readdirSync(join(VITE_OUT, "assets"));
    const wasmAsset = assets.find((f) => /^otaweb_bg-[\w-]+\.wasm$/.test(f));
    assert.ok(wasmAsset, `vite emitted otaweb_bg.wasm as a hashed asset: ${assets.join(", ")}`);

    const outcome = await updateThrough(viteServer.url);
    assertUpdated(outcome, new URL(viteServer.url).origin);
    const otaweb = outcome.requests.map((u) => u.pathname).filter((p) => p.includes("otaweb_bg"));
    assert.deepEqual(otaweb, [`/assets/${wasmAsset}`], "init() fetched the bundled asset, nothing from pkg/");
  });
});

// The README shows each example's code verbatim, so neither can change without the other:
// the block under "### Plain `<script type="module">`" is the inline module script of
// www/examples/plain.html, the block under "### With a bundler (Vite)" is
// examples/vite/src/main.ts without its leading comment lines (which point here). Compared
// line by line, ignoring trailing spaces, blank lines at either end and common indentation.
test("README.md's embed examples are the code of www/examples/plain.html and examples/vite/src/main.ts", () => {
  const plain = /<script type="module">\n([\s\S]*?)<\/script>/.exec(readFileSync(PLAIN_HTML, "utf8"));
  assert.ok(plain, "www/examples/plain.html has an inline <script type=\"module\">");
  assert.equal(readmeBlock('Plain `<script type="module">`'), normalised(plain[1]));

  const main = readFileSync(MAIN_TS, "utf8").replace(/^(\/\/.*\n)+/, "");
  assert.equal(readmeBlock("With a bundler (Vite)"), normalised(main));
});

test("examples/vite/src/main.ts type-checks against pkg/otaweb.d.ts (examples/vite/tsconfig.json)", async () => {
  const tsc = tool(".bin/tsc", "typescript (tsc)");
  await run(tsc, ["-p", "examples/vite/tsconfig.json"], { cwd: root }).catch((e) => {
    throw new Error(`tsc -p examples/vite/tsconfig.json:\n${e.stdout}${e.stderr}`);
  });
});

/** Code without trailing spaces, blank lines at either end or common indentation. */
function normalised(text) {
  const lines = text.replace(/\r\n/g, "\n").split("\n").map((l) => l.trimEnd());
  while (lines.length && lines[0] === "") lines.shift();
  while (lines.length && lines.at(-1) === "") lines.pop();
  const indent = Math.min(...lines.filter((l) => l !== "").map((l) => l.length - l.trimStart().length));
  return lines.map((l) => l.slice(indent)).join("\n");
}

/** The first fenced code block of subsection `### heading` in README.md's "## Embed in a
 * portal", normalised. */
function readmeBlock(heading) {
  const readme = readFileSync(join(root, "README.md"), "utf8").replace(/\r\n/g, "\n");
  const section = /\n## Embed in a portal\n([\s\S]*?)(?=\n## |$)/.exec(readme);
  assert.ok(section, 'README.md has a "## Embed in a portal" section');
  const sub = new RegExp(`\\n### ${escape(heading)}\\n([\\s\\S]*?)(?=\\n### |$)`).exec(section[1]);
  assert.ok(sub, `README.md's "Embed in a portal" has a "### ${heading}" subsection`);
  const block = /^```\w*\n([\s\S]*?)^```$/m.exec(sub[1]);
  assert.ok(block, `README.md's "### ${heading}" has a fenced code block`);
  return normalised(block[1]);
}

function escape(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
