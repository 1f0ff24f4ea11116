// README.md's "With a bundler (Vite)" example, this file below these comments;
// tests/browser/embed.test.mjs builds and runs it and checks the two stay the same.
import init, { Updater } from "otaweb";

await init(); // fetches the .wasm that Vite emitted beside the bundle
const button = document.querySelector("button")!;
const bar = document.querySelector("progress")!;
const status = document.querySelector("output")!;
button.disabled = false;
button.addEventListener("click", async () => {
  try {
    const updater = await Updater.connectGadget(); // first: the device chooser needs the click
    updater.addEventListener("progress", (e) => { bar.max = e.detail.total; bar.value = e.detail.sent; });
    const pem = await (await fetch("/fixtures/keys/test-signing-key.pub.pem")).text();
    const result = await updater.run("/fixtures/manifest.json", { policy: { trustedKeys: [pem] } });
    status.textContent = result.outcome === "done" ? `done: version ${result.version}` : result.outcome;
  } catch (err) {
    status.textContent = `failed: ${(err as Error).message}`;
  }
});
