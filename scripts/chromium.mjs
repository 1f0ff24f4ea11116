// Debian's headless Chromium with a throwaway profile, for the browser tests, the browser
// benchmarks and the README screenshot: one place for its path and flags.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

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

/** Launches Chromium (`CHROMIUM` or /usr/bin/chromium) with `options` for Playwright's
 * persistent context; resolves to { context, close }, close also removing the profile. */
export async function launchChromium(name, options = {}) {
  const profile = await mkdtemp(join(tmpdir(), `otaweb-${name}-`));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_ARGS,
    ...options,
  });
  const close = async () => {
    await context.close().catch(() => {});
    await rm(profile, { recursive: true, force: true });
  };
  return { context, close };
}
