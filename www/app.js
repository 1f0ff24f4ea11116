// The checker page: picks a firmware file (and optionally a manifest), shows its digests and
// the manifest verdict. All checking happens in the wasm module; this file only moves bytes
// and renders text.
import init, { version, digest, parseManifest, verifyImage } from "/pkg/otaweb.js";
import { hintFor } from "/status.js";

const DEMO_KEY_URL = "/fixtures/keys/test-signing-key.pub.pem";

const $ = (id) => document.getElementById(id);
const ui = {
  fileInput: $("file-input"),
  dropZone: $("drop-zone"),
  manifestInput: $("manifest-input"),
  manifestText: $("manifest-text"),
  useDemoKey: $("use-demo-key"),
  keyText: $("key-text"),
  statusLine: $("status-line"),
  results: $("results"),
  fileName: $("file-name"),
  fileSize: $("file-size"),
  sha256: $("sha256"),
  md5: $("md5"),
  verdict: $("verdict"),
  version: $("otaweb-version"),
  demoImage: $("demo-image"),
};

const state = { file: null, bytes: null, sha256: null, run: 0 };
let demoKey = null;

function errorParts(e) {
  if (e && typeof e === "object" && "code" in e) {
    return { code: String(e.code), message: String(e.message ?? e.code) };
  }
  return { code: "internal", message: e instanceof Error ? e.message : String(e) };
}

function formatSize(n) {
  const kib = (n / 1024).toFixed(n < 10 * 1024 ? 2 : 1);
  return `${n.toLocaleString("en-US")} bytes (${kib} KiB)`;
}

function basename(url) {
  const path = String(url ?? "").split(/[?#]/)[0];
  return path.slice(path.lastIndexOf("/") + 1);
}

/** The manifest's entries, as objects, or throws otaweb's {code, message}. */
function manifestEntries(text) {
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    return parseManifest(text); // not JSON: let otaweb say what is wrong with it
  }
  if (json && typeof json === "object" && !Array.isArray(json) && !("images" in json)) {
    return [json]; // a single entry pasted on its own; verifyImage validates it
  }
  return parseManifest(text);
}

/** Chooses the entry this file is meant to be, and says why. */
function pickEntry(entries, fileName, sha256) {
  const lower = (s) => String(s ?? "").toLowerCase();
  const stem = (s) => s.split(".")[0];
  const rules = [
    ["file name", (e) => basename(e.url) === fileName],
    ["SHA-256", (e) => lower(e.sha256) === sha256],
    ["name", (e) => e.name === fileName || e.name === stem(fileName)],
    ["only entry", () => entries.length === 1],
    ["file name", (e) => {
      const s = stem(basename(e.url));
      return s !== "" && stem(fileName) === s && !e.compression;
    }],
  ];
  for (const [why, test] of rules) {
    const entry = entries.find(test);
    if (entry) return { entry, why };
  }
  return null;
}

/** The key the user trusts, if any. With a key, otaweb also refuses unsigned entries.
 * Also the install section's daemon mode key (update.js). */
export async function trustedKey() {
  const own = ui.keyText.value.trim();
  if (own) return own;
  if (!ui.useDemoKey.checked) return undefined;
  if (demoKey === null) {
    const res = await fetch(DEMO_KEY_URL);
    if (!res.ok) throw { code: "no-trusted-key", message: `the demo test key could not be loaded (${res.status})` };
    demoKey = await res.text();
  }
  return demoKey;
}

function setVerdict(kind, main, detail) {
  ui.verdict.className = `verdict ${kind}`;
  ui.verdict.dataset.state = kind;
  ui.verdict.replaceChildren(main);
  if (detail) {
    const small = document.createElement("small");
    small.className = "why";
    small.textContent = detail;
    ui.verdict.append(document.createElement("br"), small);
  }
}

function failVerdict(e, prefix = "") {
  const { code, message } = errorParts(e);
  const span = document.createElement("span");
  const codeEl = document.createElement("code");
  codeEl.textContent = code;
  span.append(`✗ ${prefix}${message} (`, codeEl, ")");
  setVerdict("fail", span, hintFor({}, code));
  return message;
}

/**
 * Tells the update section (update.js) which image passed the check, or that none did:
 * `image-verified` with {bytes, entry, key, fileName}, or `image-cleared`.
 */
function announce(detail) {
  document.dispatchEvent(new CustomEvent(detail ? "image-verified" : "image-cleared", { detail }));
}

/** Recomputes everything shown; later runs supersede earlier ones. */
async function refresh() {
  const run = ++state.run;
  announce(null);
  const current = () => run === state.run;
  const { file, bytes, sha256 } = state;
  if (!file) {
    ui.statusLine.textContent = "Ready. Choose a firmware file.";
    return;
  }
  const text = ui.manifestText.value.trim();
  if (!text) {
    setVerdict("none", "No manifest given.");
    ui.statusLine.textContent = `Computed the digests of ${file.name}.`;
    return;
  }

  let entries;
  try {
    entries = manifestEntries(text);
  } catch (e) {
    failVerdict(e);
    ui.statusLine.textContent = `The manifest could not be read.`;
    return;
  }
  const picked = pickEntry(entries, file.name, sha256);
  if (!picked) {
    setVerdict("fail", `✗ No manifest entry matches ${file.name} (by file name, SHA-256 or name).`,
      "Pick the manifest that lists this file.");
    ui.statusLine.textContent = `${file.name} is not in the manifest.`;
    return;
  }
  const { entry, why } = picked;
  setVerdict("pending", "Checking…");
  try {
    const key = await trustedKey();
    if (!current()) return;
    const ok = verifyImage(bytes, entry, key, false);
    const checked = ok.signed ? "size, SHA-256 and signature verified" : "size and SHA-256 verified (not signed)";
    setVerdict("pass", `✓ Matches manifest entry ${ok.name} v${ok.version}: ${checked}`,
      `Entry chosen by ${why}; flow ${ok.flow}.`);
    ui.statusLine.textContent = `${file.name} matches the manifest.`;
    announce({ bytes, entry, key, fileName: file.name });
  } catch (e) {
    if (!current()) return;
    failVerdict(e);
    ui.statusLine.textContent = `${file.name} does not pass the manifest check.`;
  }
}

async function chooseFile(file) {
  if (!file) return;
  const run = ++state.run;
  ui.statusLine.textContent = `Reading ${file.name}…`;
  let bytes;
  try {
    bytes = new Uint8Array(await file.arrayBuffer());
  } catch (e) {
    ui.statusLine.textContent = `Could not read ${file.name}: ${errorParts(e).message}`;
    return;
  }
  if (run !== state.run) return;
  let sha256, md5;
  try {
    sha256 = digest(bytes, "sha256");
    md5 = digest(bytes, "md5");
  } catch (e) {
    ui.statusLine.textContent = `Could not compute the digests: ${errorParts(e).message}`;
    return;
  }
  Object.assign(state, { file, bytes, sha256 });
  ui.fileName.textContent = file.name;
  ui.fileSize.textContent = formatSize(bytes.length);
  ui.fileSize.dataset.bytes = String(bytes.length);
  ui.sha256.textContent = sha256;
  ui.md5.textContent = md5;
  ui.results.hidden = false;
  await refresh();
}

/** Loads the demo image and its manifest from the fixtures, as if the user had picked them. */
async function useDemoImage() {
  const [image, manifest] = await Promise.all(
    ["/fixtures/app-v2.bin", "/fixtures/manifest.json"].map(async (url) => {
      const res = await fetch(url);
      if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
      return res;
    }),
  );
  ui.manifestText.value = await manifest.text();
  ui.useDemoKey.checked = true;
  await chooseFile(new File([await image.arrayBuffer()], "app-v2.bin"));
}

function wire() {
  ui.demoImage.addEventListener("click", () =>
    useDemoImage().catch((e) => {
      ui.statusLine.textContent = `Could not load the demo image: ${errorParts(e).message}`;
    }),
  );
  ui.dropZone.addEventListener("click", () => ui.fileInput.click());
  ui.fileInput.addEventListener("change", () => chooseFile(ui.fileInput.files[0]));

  // Dropping anywhere must not navigate away from the page.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (e) => e.preventDefault());
  }
  ui.dropZone.addEventListener("dragenter", () => ui.dropZone.classList.add("dragging"));
  ui.dropZone.addEventListener("dragleave", () => ui.dropZone.classList.remove("dragging"));
  ui.dropZone.addEventListener("drop", (e) => {
    ui.dropZone.classList.remove("dragging");
    chooseFile(e.dataTransfer?.files?.[0]);
  });

  ui.manifestInput.addEventListener("change", async () => {
    const f = ui.manifestInput.files[0];
    if (!f) return;
    ui.manifestText.value = await f.text();
    refresh();
  });
  let timer;
  const later = () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, 250);
  };
  ui.manifestText.addEventListener("input", later);
  ui.keyText.addEventListener("input", later);
  ui.useDemoKey.addEventListener("change", refresh);
}

try {
  await init();
  ui.version.textContent = version();
  wire();
  ui.statusLine.textContent = "Ready. Choose a firmware file.";
  document.documentElement.dataset.ready = "true";
} catch (e) {
  ui.statusLine.textContent = `The checker could not start: ${errorParts(e).message}. Run \`make pkg\` and reload.`;
  document.documentElement.dataset.ready = "error";
  throw e;
}
