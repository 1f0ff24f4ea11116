// Shared by the browser tests: the static server and Debian's headless Chromium.
import { spawn } from "node:child_process";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { launchChromium } from "../../scripts/chromium.mjs";
import { observeApiEvents } from "./observe.mjs";

export const root = resolve(fileURLToPath(new URL("../..", import.meta.url)));
export const fixtures = join(root, "firmware-fixtures", "files");

/** Starts scripts/serve.mjs on a free port; resolves to { url, stop }. */
export async function startServer() {
  const child = spawn(process.execPath, [join(root, "scripts", "serve.mjs"), "--port", "0"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  const url = await new Promise((resolveUrl, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`server did not start: ${stderr}`)), 10_000);
    child.stdout.on("data", (d) => {
      out += d;
      const nl = out.indexOf("\n");
      if (nl >= 0) {
        clearTimeout(timer);
        resolveUrl(out.slice(0, nl).trim());
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code}): ${stderr}`));
    });
  });
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    await exited;
  };
  return { url, stop };
}

/** Launches headless Chromium with a fresh profile; resolves to { context, close }. The
 * suite fails when the API's events did not match pkg/otaweb.d.ts (see observe.mjs). */
export async function launchBrowser() {
  const { context, close: closeChromium } = await launchChromium("browser", { viewport: { width: 900, height: 1000 } });
  // Every suite also checks that what the API dispatched matches its declared types. A
  // mismatch fails the test file through its exit code rather than a throw, so the
  // suite's own cleanup after close() (servers, brokers) still runs.
  const observed = await observeApiEvents(context, root);
  const close = async () => {
    await closeChromium();
    try {
      await observed.check();
    } catch (e) {
      console.error(e.message);
      process.exitCode = 1;
    }
  };
  return { context, close };
}

/** Distinct colours of a PNG screenshot on a coarse grid, decoded in `page`: a blank or
 * single-colour page has one or two. */
export function screenshotColours(page, png) {
  return page.evaluate(async (b64) => {
    const blob = await (await fetch(`data:image/png;base64,${b64}`)).blob();
    const bitmap = await createImageBitmap(blob);
    const ctx = new OffscreenCanvas(bitmap.width, bitmap.height).getContext("2d");
    ctx.drawImage(bitmap, 0, 0);
    const { data } = ctx.getImageData(0, 0, bitmap.width, bitmap.height);
    const seen = new Set();
    for (let y = 0; y < bitmap.height; y += 4) {
      for (let x = 0; x < bitmap.width; x += 4) {
        const i = (y * bitmap.width + x) * 4;
        seen.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
      }
    }
    return seen.size;
  }, png.toString("base64"));
}
