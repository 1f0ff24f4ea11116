#!/usr/bin/env node
// Writes docs/page.png, the README's picture: the page (scripts/serve.mjs) in headless
// Chromium (a 1200 px wide viewport), after a completed demo-gadget update — Use the demo
// image → Connect (demo device) → Update, as tests/browser/update.test.mjs drives it —
// cropped to the page's column, from the top to the end of section 4 (the install section).
// Needs pkg/ built.
//
//   node scripts/screenshot.mjs [--out FILE]
import { mkdirSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { launchChromium } from "./chromium.mjs";
import { root, startPageServer, stopAll } from "./services.mjs";

const i = process.argv.indexOf("--out");
const out = resolve(i >= 0 ? process.argv[i + 1] : join(root, "docs", "page.png"));
const WIDTH = 1200;
const MARGIN = 24;
const TIMEOUT = 60_000;

const page = await startPageServer({ port: 0 });
// navigator.bluetooth is present (CHROMIUM_ARGS), so the support line reads as in Chrome.
let browser;
try {
  browser = await launchChromium("screenshot", {
    // Tall enough that the crop below lies inside the viewport.
    viewport: { width: WIDTH, height: 2600 },
    deviceScaleFactor: 1,
    colorScheme: "light",
  });
  const tab = browser.context.pages()[0] ?? (await browser.context.newPage());
  tab.setDefaultTimeout(TIMEOUT);
  const problems = [];
  tab.on("pageerror", (e) => problems.push(e.message));
  await tab.goto(page.url);
  await tab.waitForFunction(() => document.documentElement.dataset.updateReady === "true");
  await tab.getByTestId("demo-image").click();
  await tab.locator('[data-testid="verdict"][data-state="pass"]').waitFor();
  await tab.getByTestId("device-demo").check();
  await tab.getByTestId("connect").click();
  await tab.getByTestId("update-status").filter({ hasText: "ready to install" }).waitFor();
  await tab.getByTestId("update").click();
  await tab.getByTestId("update-status").filter({ hasText: "now runs version 2" }).waitFor();
  if (problems.length) throw new Error(`page errors: ${problems.join("; ")}`);
  // The page's column (with a margin), from the top to the end of section 4.
  await tab.evaluate(() => window.scrollTo(0, 0));
  const main = await tab.locator("main").boundingBox();
  const section = await tab.locator("#update-heading").locator("xpath=ancestor::section[1]").boundingBox();
  if (!main || !section) throw new Error("the page has no main column or no section 4");
  const x = Math.max(0, Math.floor(main.x - MARGIN));
  const clip = {
    x,
    y: 0,
    width: Math.min(WIDTH - x, Math.ceil(main.width + 2 * MARGIN)),
    height: Math.ceil(section.y + section.height + 12),
  };
  mkdirSync(dirname(out), { recursive: true });
  await tab.screenshot({ path: out, clip });
  console.log(`${relative(process.cwd(), out) || out}: ${clip.width}×${clip.height} px, ${statSync(out).size} bytes`);
} finally {
  await browser?.close();
  await stopAll();
}
