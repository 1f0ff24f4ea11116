// benches/web/bench.js in Debian's headless Chromium: otaweb's wasm against WebCrypto,
// DecompressionStream and the npm packages' browser builds, in one page. Prints a markdown
// section and `SUMMARY|` rows (`make bench`).
//
//   node benches/web/run.mjs [--pkg DIR]
//
// Requests are answered by Playwright's router, so no server runs: `/pkg/` from pkg/ (or
// --pkg), `/npm/<package>/<file>` from node_modules (the packages' ESM browser builds;
// spark-md5 ships only a UMD file, wrapped here as a module), the rest from benches/web/.
import { readFile } from "node:fs/promises";
import { join, extname, resolve } from "node:path";
import { launchChromium } from "../../scripts/chromium.mjs";
import { summary, table } from "./bench.js";

const root = resolve(new URL("../..", import.meta.url).pathname);
const argPkg = process.argv.indexOf("--pkg");
const pkg = resolve(argPkg >= 0 ? process.argv[argPkg + 1] : join(root, "pkg"));
const origin = "http://127.0.0.1:9";
const types = { ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm", ".html": "text/html" };

/** The browser build of each package the page imports. */
const BROWSER_BUILDS = {
  "/npm/hash-wasm.js": "hash-wasm/dist/index.esm.js",
  "/npm/js-sha256.js": "js-sha256/build/sha256.min.mjs",
  "/npm/pako.js": "pako/dist/browser/pako.esm.min.mjs",
  "/npm/fflate.js": "fflate/esm/browser.js",
  "/npm/spark-md5.js": "spark-md5/spark-md5.js",
};

async function body(path) {
  if (path.startsWith("/pkg/")) return readFile(join(pkg, path.slice(5)));
  const npm = BROWSER_BUILDS[path];
  if (!npm) return readFile(join(root, "benches/web", path));
  const source = await readFile(join(root, "node_modules", npm), "utf8");
  // The UMD factory takes the CommonJS branch when `module` and `exports` exist.
  return path === "/npm/spark-md5.js"
    ? `const module = { exports: {} }; const exports = module.exports;\n${source}\nexport default module.exports;\n`
    : source;
}

/** Runs in the page: loads everything and runs the suite. */
async function pageRun() {
  const otaweb = await import("/pkg/otaweb.js");
  await otaweb.default();
  const [hashWasm, jsSha256, pako, fflate, SparkMD5, bench] = await Promise.all([
    import("/npm/hash-wasm.js"),
    import("/npm/js-sha256.js").then((m) => m.default),
    import("/npm/pako.js"),
    import("/npm/fflate.js"),
    import("/npm/spark-md5.js").then((m) => m.default),
    import("/bench.js"),
  ]);
  const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
  const native = {
    name: "WebCrypto `subtle.digest` (one shot only; no MD5)",
    sha256: async (d) => hex(await crypto.subtle.digest("SHA-256", d)),
    inflateName: "`DecompressionStream(\"deflate\")`",
    inflate: async (z) => {
      const stream = new Blob([z]).stream().pipeThrough(new DecompressionStream("deflate"));
      return new Uint8Array(await new Response(stream).arrayBuffer());
    },
  };
  const result = await bench.run({ otaweb, hashWasm, jsSha256, SparkMD5, pako, fflate, native });
  return { ...result, userAgent: navigator.userAgent };
}

const { context, close } = await launchChromium("bench");
try {
  await context.route(`${origin}/**`, async (route) => {
    const path = new URL(route.request().url()).pathname;
    if (path === "/") return route.fulfill({ body: "<!doctype html><title>bench</title>", contentType: "text/html" });
    try {
      route.fulfill({ body: await body(path), contentType: types[extname(path)] ?? "application/octet-stream" });
    } catch {
      route.fulfill({ status: 404, body: "" });
    }
  });
  const page = await context.newPage();
  await page.goto(`${origin}/`);
  const { rows, ratio, userAgent } = await page.evaluate(pageRun);
  console.log(
    `${userAgent}, \`node benches/web/run.mjs\`; otaweb from \`${pkg.replace(root + "/", "")}/\`. Input: ` +
      `\`benches/web/buffer.js\` firmware-like bytes (zlib level 6 ratio ${ratio.toFixed(2)}:1). Best of 7 runs taken in turns, ` +
      `each repeating the operation over at least 16 MiB; MB = 10^6 bytes.`,
  );
  console.log();
  console.log(table(rows));
  console.log();
  console.log(summary(rows, "Chromium"));
} finally {
  await close();
}
