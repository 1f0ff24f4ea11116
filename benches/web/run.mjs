// Loads benches/web/bench.js in Debian's headless Chromium and prints a markdown table.
// Requests are answered from the repository by Playwright's router, so no server runs.
import { readFile } from "node:fs/promises";
import { join, extname, resolve } from "node:path";
import { launchChromium } from "../../scripts/chromium.mjs";

const root = resolve(new URL("../..", import.meta.url).pathname);
const origin = "http://127.0.0.1:9";
const types = { ".js": "text/javascript", ".wasm": "application/wasm", ".html": "text/html" };

const { context, close } = await launchChromium("bench");
try {
  await context.route(`${origin}/**`, async (route) => {
    const path = new URL(route.request().url()).pathname;
    const file = path === "/" ? null : path.startsWith("/pkg/") ? join(root, path) : join(root, "benches/web", path);
    if (!file) return route.fulfill({ body: "<!doctype html><title>bench</title>", contentType: "text/html" });
    try {
      route.fulfill({ body: await readFile(file), contentType: types[extname(file)] ?? "application/octet-stream" });
    } catch {
      route.fulfill({ status: 404, body: "" });
    }
  });
  const page = await context.newPage();
  await page.goto(`${origin}/`);
  const result = await page.evaluate(async () => (await import("/bench.js")).run());
  console.log(`Browser: ${result.userAgent}\n`);
  console.log("| operation | input | implementation | MB/s |");
  console.log("|---|---|---|---|");
  for (const [op, size, impl, rate] of result.rows) console.log(`| ${op} | ${size} | ${impl} | ${rate} |`);
} finally {
  await close();
}
