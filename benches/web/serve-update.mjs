// What the whole-update benches share (first-byte.mjs, memory.mjs): a firmware-like image in
// the fixtures' header layout, signed with the repository's TEST-ONLY key
// (firmware-fixtures/files/keys/), a one-entry manifest for it, and a small static server on
// 127.0.0.1 that serves www/, pkg/, the fixtures and the bench's own directory, as
// scripts/serve.mjs would.
import { createHash, sign } from "node:crypto";
import { createServer } from "node:http";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { extname, join, normalize, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

export const root = resolve(fileURLToPath(new URL("../..", import.meta.url)));
export const fixtures = join(root, "firmware-fixtures", "files");

// ---- the image and its manifest ----------------------------------------------------------

/** The fixtures' layout: a 256-byte header, then a body of SplitMix64 words (seeded), with
 * repeated instruction-like words and 0xFF gaps so it is not pure noise. */
export function makeImage(size, version) {
  const image = new Uint8Array(size).fill(0xff);
  const view = new DataView(image.buffer);
  image.set([0x4f, 0x54, 0x41, 0x57]); // "OTAW"
  view.setUint32(4, 1, true);
  view.setUint32(8, version, true);
  view.setUint32(12, size, true);
  let state = 0x6f746177_65623031n; // "otaweb01"
  const mask = (1n << 64n) - 1n;
  const next = () => {
    state = (state + 0x9e3779b97f4a7c15n) & mask;
    let z = state;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & mask;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & mask;
    return z ^ (z >> 31n);
  };
  const idioms = [0xb580af00, 0x4770bf00, 0xe92d4ff0, 0xf8d00000, 0x68036842];
  for (let at = 256; at + 4 <= size; ) {
    const r = next();
    const kind = Number(r & 0xffn) % 16;
    if (kind === 0) {
      at += 64 + (Number((r >> 8n) & 0xffn) * 4); // an 0xFF gap
    } else if (kind < 8) {
      view.setUint32(at, idioms[kind % idioms.length], true);
      at += 4;
    } else {
      view.setUint32(at, Number((r >> 16n) & 0xffffffffn), true);
      at += 4;
    }
  }
  return image;
}

/** Writes `image` as `file` into `out` with a one-entry gadget manifest `manifest` (SHA-256,
 * MD5 and an ECDSA P-256 signature by the test key) and returns the entry. With `compressed`
 * (the image's zlib stream) the file is that, and the entry says `compression: "zlib"`. */
export function writeSignedEntry(out, { file, manifest, image, version, compressed }) {
  mkdirSync(out, { recursive: true });
  const key = readFileSync(join(fixtures, "keys", "test-signing-key.pem"), "utf8");
  // Raw r‖s (ieee-p1363), base64: the manifest's signature form. Node's ECDSA nonces are
  // random (the fixtures use RFC 6979), so the signature differs per run; the image does not.
  const signature = sign("sha256", image, { key, dsaEncoding: "ieee-p1363" }).toString("base64");
  const entry = {
    name: "app",
    flow: "gadget",
    version: String(version),
    url: file,
    ...(compressed ? { compression: "zlib" } : {}),
    size: image.length,
    sha256: createHash("sha256").update(image).digest("hex"),
    md5: createHash("md5").update(image).digest("hex"),
    signature,
  };
  writeFileSync(join(out, file), compressed ?? image);
  writeFileSync(join(out, manifest), `${JSON.stringify({ otaweb: 1, images: [entry] }, null, 2)}\n`);
  return entry;
}

// ---- the server --------------------------------------------------------------------------

const types = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".pem": "text/plain; charset=utf-8",
  ".bin": "application/octet-stream",
};
/** Serves `out` under /bench/, `pkg` (default pkg/, the demo device always from pkg/demo/)
 * under /pkg/, and the fixtures and www/ as scripts/serve.mjs does; resolves with the
 * listening server. */
export function startServer(out, pkg = join(root, "pkg")) {
  const mounts = [
    ["/bench/", out],
    ["/fixtures/", fixtures],
    ["/pkg/demo/", join(root, "pkg", "demo")],
    ["/pkg/", pkg],
    ["/", join(root, "www")],
  ];

  const server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url, "http://x").pathname);
    if (path === "/") {
      res.writeHead(200, { "content-type": types[".html"], "cache-control": "no-store" });
      return res.end("<!doctype html><meta charset=utf-8><title>otaweb bench</title>");
    }
    const mount = mounts.find(([prefix]) => path.startsWith(prefix));
    const file = mount && normalize(join(mount[1], path.slice(mount[0].length)));
    if (!file || !file.startsWith(mount[1] + sep)) {
      res.writeHead(404);
      return res.end();
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, {
        "content-type": types[extname(file)] ?? "application/octet-stream",
        "content-length": body.length,
        "cache-control": "no-store",
      });
      res.end(body);
    } catch {
      res.writeHead(404);
      res.end();
    }
  });
  return new Promise((ok) => server.listen(0, "127.0.0.1", () => ok(server)));
}

