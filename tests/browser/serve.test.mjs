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
