#!/usr/bin/env node
// Static server for the page and its tests. No dependencies.
//
//   /            -> www/
//   /pkg/        -> pkg/                      (wasm-pack output; the demo device in pkg/demo/)
//   /fixtures/   -> firmware-fixtures/files/  (test images, manifests, test keys)
//
// Binds 127.0.0.1 only. `--port N` (default 8080; 0 picks a free port). The first line on
// stdout is the URL, e.g. `http://127.0.0.1:8080/`, so scripts and tests can read it.
// No directory listings, no path traversal, `Cache-Control: no-store` on every answer, and
// a Content Security Policy on every page (see `policyFor`).
import { createHash } from "node:crypto";
import { createServer } from "node:http";
import { open } from "node:fs/promises";
import { extname, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(fileURLToPath(new URL("..", import.meta.url)));
const mounts = [
  // Longest prefix first.
  ["/fixtures/", join(root, "firmware-fixtures", "files")],
  ["/pkg/", join(root, "pkg")],
  ["/", join(root, "www")],
];
const types = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".txt": "text/plain; charset=utf-8",
  ".pem": "text/plain; charset=utf-8",
  ".ts": "text/plain; charset=utf-8",
};

function parsePort(argv) {
  const i = argv.indexOf("--port");
  const raw = i >= 0 ? argv[i + 1] : argv.find((a) => a.startsWith("--port="))?.slice(7);
  const port = raw === undefined ? 8080 : Number(raw);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`serve: bad --port ${raw}`);
    process.exit(2);
  }
  return port;
}

/** Maps a URL path to a file inside one mount, or null (traversal, hidden, unknown). */
function resolvePath(urlPath) {
  let decoded;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return null;
  }
  if (decoded.includes("\0") || decoded.includes("\\")) return null;
  if (decoded.endsWith("/")) decoded += "index.html";
  for (const [prefix, dir] of mounts) {
    if (!decoded.startsWith(prefix)) continue;
    const rest = decoded.slice(prefix.length);
    const parts = rest.split("/");
    // No "..", no ".", no empty segments, no dotfiles.
    if (parts.some((p) => p === "" || p.startsWith("."))) return null;
    const file = resolve(dir, ...parts);
    if (!file.startsWith(dir + sep)) return null;
    return file;
  }
  return null;
}

/**
 * The Content Security Policy of an HTML page: scripts only from this server (plus the page's
 * own inline scripts, each allowed by its SHA-256, so an injected one is not) and wasm
 * compilation; no plugins, no framing, no <base> rewrites. Fetches and WebSockets may go to
 * http(s) and ws(s) anywhere: which of those the updater accepts is its own rule (https, or
 * plain http only to this computer), checked in the wasm before any request. `data:` is for
 * the page's icon. Inline styles stay allowed: the element's shadow DOM carries its own.
 */
function policyFor(html) {
  // Comments first: one may quote a <script> tag (plain.html's does).
  const markup = html.replace(/<!--[\s\S]*?-->/g, "");
  const inline = [...markup.matchAll(/<script(?![^>]*\ssrc=)[^>]*>([\s\S]*?)<\/script>/g)].map(
    ([, body]) => `'sha256-${createHash("sha256").update(body).digest("base64")}'`,
  );
  return [
    "default-src 'self'",
    ["script-src 'self' 'wasm-unsafe-eval'", ...inline].join(" "),
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "connect-src 'self' https: http: wss: ws: data:",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join("; ");
}

async function handle(req, res) {
  const headers = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
  };
  const fail = (status, text) => {
    res.writeHead(status, { ...headers, "Content-Type": "text/plain; charset=utf-8" });
    res.end(req.method === "HEAD" ? undefined : `${status} ${text}\n`);
  };
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("Allow", "GET, HEAD");
    return fail(405, "method not allowed");
  }
  const path = new URL(req.url, "http://localhost").pathname;
  const file = resolvePath(path);
  if (!file) return fail(404, "not found");
  let fh;
  try {
    fh = await open(file, "r");
    const st = await fh.stat();
    if (!st.isFile()) return fail(404, "not found"); // directories: no listing
    const body = await fh.readFile();
    const type = types[extname(file).toLowerCase()] ?? "application/octet-stream";
    res.writeHead(200, {
      ...headers,
      ...(type.startsWith("text/html") ? { "Content-Security-Policy": policyFor(body.toString("utf8")) } : {}),
      "Content-Type": type,
      "Content-Length": body.length,
    });
    res.end(req.method === "HEAD" ? undefined : body);
  } catch {
    if (!res.headersSent) fail(404, "not found");
    else res.destroy();
  } finally {
    await fh?.close();
  }
}

const server = createServer((req, res) => {
  handle(req, res).catch(() => res.destroy());
});
server.listen(parsePort(process.argv.slice(2)), "127.0.0.1", () => {
  const { port } = server.address();
  process.stdout.write(`http://127.0.0.1:${port}/\n`);
});
server.on("error", (e) => {
  console.error(
    e.code === "EADDRINUSE"
      ? `serve: port ${e.port} is in use; pick another with --port N, or make demo PORT=N (0 = any free port)`
      : `serve: ${e.message}`,
  );
  process.exit(1);
});

function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 500).unref();
}
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
