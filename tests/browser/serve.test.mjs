// The static server the page and its tests use: mounts, MIME types, refusals.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { request } from "node:http";
import { startServer } from "./helpers.mjs";

let server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

/** GET with the path sent exactly as written (fetch would normalise ".."). */
function get(path) {
  const { hostname, port } = new URL(server.url);
  return new Promise((resolve, reject) => {
    const req = request({ hostname, port, path, method: "GET" }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on("error", reject);
    req.end();
  });
}

test("binds 127.0.0.1 and prints its URL first", () => {
  assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
});

test("serves the page, pkg/ and fixtures with the right types, never cached", async () => {
  const cases = [
    ["/", "text/html"],
    ["/app.js", "text/javascript"],
    ["/style.css", "text/css"],
    ["/fixtures/manifest.json", "application/json"],
    ["/fixtures/app-v2.bin", "application/octet-stream"],
  ];
  for (const [path, type] of cases) {
    const res = await get(path);
    assert.equal(res.status, 200, path);
    assert.ok(res.headers["content-type"].startsWith(type), `${path}: ${res.headers["content-type"]}`);
    assert.equal(res.headers["cache-control"], "no-store", path);
  }
  const wasm = await get("/pkg/otaweb_bg.wasm");
  if (wasm.status === 200) assert.equal(wasm.headers["content-type"], "application/wasm");
});

test("refuses traversal, dotfiles and directory listings", async () => {
  for (const path of [
    "/../Cargo.toml",
    "/%2e%2e/Cargo.toml",
    "/fixtures/../../Cargo.toml",
    "/fixtures/%2e%2e%2f%2e%2e%2fCargo.toml",
    "/pkg/..%5c..%5cCargo.toml",
    "/.gitignore",
    "/fixtures/",
    "/fixtures/keys",
    "/%00",
  ]) {
    const res = await get(path);
    assert.equal(res.status, 404, path);
    assert.ok(!res.body.toString().includes("[package]"), path);
  }
});

test("every page carries a Content Security Policy that allows its own inline scripts by hash only", async () => {
  const { createHash } = await import("node:crypto");
  const index = await get("/");
  const policy = index.headers["content-security-policy"];
  for (const rule of ["default-src 'self'", "script-src 'self' 'wasm-unsafe-eval'", "object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'"]) {
    assert.ok(policy.split("; ").some((r) => r === rule || r.startsWith(`${rule} `)), `${rule} in ${policy}`);
  }
  assert.ok(!/script-src[^;]*'unsafe-inline'/.test(policy), policy);
  // The plain embed example has one inline module script: exactly its hash is allowed.
  const plain = await get("/examples/plain.html");
  const markup = plain.body.toString("utf8").replace(/<!--[\s\S]*?-->/g, "");
  const [, script] = markup.match(/<script type="module">([\s\S]*?)<\/script>/);
  assert.match(script, /Updater\.connectGadget/, "the example's script, not a quoted tag");
  const hash = createHash("sha256").update(script).digest("base64");
  assert.match(plain.headers["content-security-policy"], new RegExp(`script-src [^;]*'sha256-${hash.replace(/[+/=]/g, "\\$&")}'`));
  assert.equal((await get("/app.js")).headers["content-security-policy"], undefined, "only pages carry it");
});

test("in Chromium the policy blocks an injected inline script while the page itself runs", async () => {
  const { launchBrowser } = await import("./helpers.mjs");
  const browser = await launchBrowser();
  try {
    const page = await browser.context.newPage();
    const violations = [];
    page.on("console", (m) => {
      if (/Content Security Policy/.test(m.text())) violations.push(m.text());
    });
    await page.goto(server.url);
    await page.waitForFunction(() => document.documentElement.dataset.ready === "true" && document.documentElement.dataset.updateReady === "true");
    assert.deepEqual(violations, [], "the page's own scripts and wasm run under the policy");
    const ran = await page.evaluate(async () => {
      const blocked = new Promise((resolve) => document.addEventListener("securitypolicyviolation", (e) => resolve(e.violatedDirective), { once: true }));
      const s = document.createElement("script");
      s.textContent = "window.injected = true";
      document.body.append(s);
      return { directive: await blocked, injected: window.injected === true };
    });
    assert.deepEqual(ran, { directive: "script-src-elem", injected: false });
  } finally {
    await browser.close();
  }
});
