// Shared by the browser tests: the static server and Debian's headless Chromium.
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const root = resolve(fileURLToPath(new URL("../..", import.meta.url)));
export const fixtures = join(root, "firmware-fixtures", "files");

// TOOLCHAIN.md: as root Chromium needs --no-sandbox; the background-networking flags stop it
// from trying hosts it cannot reach; the experimental flag exposes navigator.bluetooth.
export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-dev-shm-usage",
  "--disable-background-networking",
  "--disable-component-update",
  "--no-first-run",
  "--disable-sync",
  "--enable-experimental-web-platform-features",
  "--enable-features=WebBluetooth",
];

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

/** Launches headless Chromium with a fresh profile; resolves to { context, close }. */
export async function launchBrowser() {
  const { chromium } = await import("playwright-core");
  const profile = await mkdtemp(join(tmpdir(), "otaweb-browser-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 900, height: 1000 },
  });
  const close = async () => {
    await context.close().catch(() => {});
    await rm(profile, { recursive: true, force: true });
  };
  return { context, close };
}
