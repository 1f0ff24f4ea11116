// The embed example built with Vite: `npx vite build --config examples/vite/vite.config.js`
// from the repository root. Paths are relative to this file, not to where vite runs.
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));

export default defineConfig({
  root: here("."),
  // In this repository the package is pkg/ itself; a portal that installed it (README.md
  // here) needs no alias.
  resolve: { alias: { otaweb: here("../../pkg/otaweb.js") } },
  // Under target/ (gitignored), so a build leaves nothing in the tree.
  build: { outDir: here("../../target/vite-example"), emptyOutDir: true },
});
