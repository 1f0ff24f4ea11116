// The checker page: picks a firmware file (and optionally a manifest), from this computer or
// from a URL, shows its digests and the manifest verdict. All checking happens in the wasm
// module; this file only moves bytes and renders text.
import init, { version, checkUrl, digest, newestImage, parseManifest, verifyImage } from "/pkg/otaweb.js";
import { hintFor } from "/status.js";

const DEMO_KEY_URL = "/fixtures/keys/test-signing-key.pub.pem";
// The update service's limits (src/web/service.rs): no real manifest or gadget image comes
// near them, so a larger body is the wrong address, and reading on would only fill memory.
const MAX_MANIFEST = 1024 * 1024;
const MAX_IMAGE = 100 * 1024 * 1024;

// What to do next when a URL did not give a usable file; other codes get status.js's hints.
const URL_HINTS = {
  "invalid-url": "Type the whole address, starting with https://, or a path on this site such as /fixtures/app-v2.bin.",
  "insecure-url": "Use the https:// address. If the server has none, download the file and choose it with the file picker instead.",
  "download-failed": "Check the address and the network, then try again. A server that does not let other sites read its files (CORS) never works from here: download the file and choose it with the file picker instead.",
  "not-found": "Check the address for typing mistakes, or ask the vendor for the current link.",
  "http-error": "Try again later. If the server wants a login, download the file in another tab and choose it with the file picker instead.",
  "too-large": "Check the address: it must point at the firmware image or the manifest itself.",
  "manifest-invalid": "Check the address: it must point at the otaweb manifest (JSON) itself, not at a web page about it.",
};

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
  imageUrlForm: $("image-url-form"),
  manifestUrlForm: $("manifest-url-form"),
  manifestPick: $("manifest-pick"),
};

// The two URL fields. Each runs one download at a time (`controller`), and shows what to do
// after a failure in its own hint, next to the field.
const sources = {
  image: { input: $("image-url"), stopButton: $("image-url-stop"), hint: $("image-url-hint"), controller: null },
  manifest: { input: $("manifest-url"), stopButton: $("manifest-url-stop"), hint: $("manifest-url-hint"), controller: null },
};

const state = { name: null, bytes: null, sha256: null, run: 0 };
let demoKey = null;

function errorParts(e) {
  if (e && typeof e === "object" && "code" in e) {
    return { code: String(e.code), message: String(e.message ?? e.code) };
  }
  return { code: "internal", message: e instanceof Error ? e.message : String(e) };
}

/** An error with an otaweb-style code, shown like the wasm module's own. */
function failure(code, message) {
  return Object.assign(new Error(message), { code });
}

/** Section 3's status line; `kind` "fail" marks an error. */
function say(text, kind = "") {
  ui.statusLine.textContent = text;
  ui.statusLine.dataset.state = kind;
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
  clearUrlErrors();
  const current = () => run === state.run;
  const { name, bytes, sha256 } = state;
  if (!name) {
    say("Ready. Choose a firmware file.");
    return;
  }
  const text = ui.manifestText.value.trim();
  if (!text) {
    setVerdict("none", "No manifest given.");
    say(`Computed the digests of ${name}.`);
    return;
  }

  let entries;
  try {
    entries = manifestEntries(text);
  } catch (e) {
    failVerdict(e);
    say(`The manifest could not be read.`);
    return;
  }
  const picked = pickEntry(entries, name, sha256);
  if (!picked) {
    setVerdict("fail", `✗ No manifest entry matches ${name} (by file name, SHA-256 or name).`,
      "Pick the manifest that lists this file.");
    say(`${name} is not in the manifest.`);
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
    say(`${name} matches the manifest.`);
    announce({ bytes, entry, key, fileName: name });
  } catch (e) {
    if (!current()) return;
    failVerdict(e);
    say(`${name} does not pass the manifest check.`);
  }
}

async function chooseFile(file) {
  if (!file) return;
  stop(sources.image); // the chosen file replaces an image still downloading
  const run = ++state.run;
  say(`Reading ${file.name}…`);
  let bytes;
  try {
    bytes = new Uint8Array(await file.arrayBuffer());
  } catch (e) {
    say(`Could not read ${file.name}: ${errorParts(e).message}`);
    return;
  }
  if (run !== state.run) return;
  await useImage(file.name, bytes);
}

/** Shows an image's digests and checks it, whether it was chosen, dropped or downloaded. */
async function useImage(name, bytes) {
  let sha256, md5;
  try {
    sha256 = digest(bytes, "sha256");
    md5 = digest(bytes, "md5");
  } catch (e) {
    say(`Could not compute the digests: ${errorParts(e).message}`);
    return;
  }
  Object.assign(state, { name, bytes, sha256 });
  ui.fileName.textContent = name;
  ui.fileSize.textContent = formatSize(bytes.length);
  ui.fileSize.dataset.bytes = String(bytes.length);
  ui.sha256.textContent = sha256;
  ui.md5.textContent = md5;
  ui.results.hidden = false;
  await refresh();
}

/**
 * `text` as an absolute URL (relative ones against `base`) this page may download a `what`
 * from, or throws. The rule is the update service's own (`checkUrl` from the wasm): https://,
 * or plain http:// only to this computer, where nobody on the way can swap the bytes.
 * `redirectedFrom` is the address the browser was sent on from, for the message.
 */
function checkedUrl(text, what, base = location.href, redirectedFrom = null) {
  const typed = text.trim();
  if (!typed) throw failure("invalid-url", `type the address of the ${what} first`);
  let url;
  try {
    url = new URL(typed, base);
  } catch {
    throw failure("invalid-url", `“${typed}” is not a web address`);
  }
  try {
    checkUrl(url.href);
  } catch (e) {
    const refused = redirectedFrom
      ? `refused ${redirectedFrom.href}, which sent this page on to ${url.href}`
      : `refused ${url.href}`;
    throw failure("insecure-url", `${refused} for the ${what}: ${errorParts(e).message}`);
  }
  return url;
}

/** The name a downloaded image goes by: its URL's last path segment, decoded, as a saved copy
 * would be called (pickEntry matches manifest entries by it). An address ending in "/" names
 * no file, so its host stands in. */
function fileNameOf(url) {
  const segment = url.pathname.slice(url.pathname.lastIndexOf("/") + 1);
  try {
    return decodeURIComponent(segment) || url.hostname;
  } catch {
    return segment; // a stray "%" that is not an escape: the name as written
  }
}

/**
 * The body at `url`, at most `max` bytes, or throws a coded error naming the `what`. Sends
 * no cookies or logins, so only public files download.
 */
async function download(url, what, max, signal) {
  const broken = (e) =>
    signal.aborted ? e : failure("download-failed", `could not download the ${what} from ${url.host}: the server cannot be reached, or it does not let other sites read its files`);
  let res;
  try {
    res = await fetch(url, { signal, credentials: "omit" });
  } catch (e) {
    throw broken(e);
  }
  // The browser follows redirects itself: where it ended up must pass the same rule.
  if (res.redirected) checkedUrl(res.url, what, location.href, url);
  if (res.status === 404 || res.status === 410) {
    throw failure("not-found", `there is no ${what} at ${url.href} (the server answered HTTP ${res.status})`);
  }
  if (!res.ok) {
    const status = res.statusText ? `${res.status} ${res.statusText}` : res.status; // HTTP/2 has no reason phrase
    throw failure("http-error", `the server answered HTTP ${status} instead of sending the ${what} at ${url.href}`);
  }
  const tooLarge = () =>
    failure("too-large", `the ${what} at ${url.href} is larger than ${max / (1024 * 1024)} MiB, more than any ${what} this page reads`);
  // Refused before reading when the server says its size; checked again after, for one that
  // does not. (Reading the body as a stream would stop sooner, but Chromium then reports
  // every such download as aborted in DevTools, which misleads whoever debugs it.)
  if (Number(res.headers.get("content-length")) > max) {
    res.body?.cancel();
    throw tooLarge();
  }
  let body;
  try {
    body = await res.arrayBuffer();
  } catch (e) {
    throw broken(e);
  }
  if (body.byteLength > max) throw tooLarge();
  return new Uint8Array(body);
}

/** Starts a download for a URL field, stopping the one it was running. */
function begin(source) {
  source.controller?.abort();
  source.controller = new AbortController();
  source.stopButton.hidden = false;
  clearUrlErrors();
  return source.controller.signal;
}

/** The field's download with `signal` is over; a newer one keeps the field busy. */
function settle(source, signal) {
  if (source.controller?.signal !== signal) return;
  source.controller = null;
  // Stop disappears: keep the keyboard in the field rather than dropping focus on the page.
  if (document.activeElement === source.stopButton) source.input.focus();
  source.stopButton.hidden = true;
}

/** Stops the field's download, if it runs one; says whether it did. */
function stop(source) {
  if (!source.controller) return false;
  const { signal } = source.controller;
  source.controller.abort();
  settle(source, signal);
  return true;
}

/** A URL field's failure: the message and code in the status line, and at the field (on a
 * phone the status line is screens away) the message again with what to do next. */
function report(source, e) {
  const { code, message } = errorParts(e);
  say(`✗ ${message} (${code})`, "fail");
  source.hint.textContent = `${message[0].toUpperCase()}${message.slice(1)}. ${hintFor(URL_HINTS, code)}`;
  source.hint.hidden = false;
  source.input.setAttribute("aria-invalid", "true");
}

function clearUrlErrors() {
  for (const { input, hint } of Object.values(sources)) {
    input.removeAttribute("aria-invalid");
    hint.hidden = true;
    hint.textContent = "";
  }
}

/** Downloads an image and uses it as if it had been chosen; on any failure the image shown
 * before stays. `intro` leads the status line while it downloads. */
async function fetchImage(text, intro = "") {
  const source = sources.image;
  const signal = begin(source);
  let url, bytes;
  try {
    url = checkedUrl(text, "firmware file");
    say(`${intro}Downloading ${fileNameOf(url)} from ${url.host}…`);
    bytes = await download(url, "firmware file", MAX_IMAGE, signal);
  } catch (e) {
    if (!signal.aborted) report(source, e);
    return;
  } finally {
    settle(source, signal);
  }
  await useImage(fileNameOf(url), bytes);
}

/**
 * The manifest's newest gadget image, as the update service picks it, and how many it lists.
 * One entry (also one pasted on its own, which is no manifest to pick from) is its own newest.
 */
function newestGadget({ text, entries }) {
  const gadget = entries.filter((e) => e.flow === "gadget");
  const entry = entries.length === 1 ? gadget[0] : newestImage(text, "gadget");
  return entry ? { entry, of: gadget.length } : null;
}

/** The manifest text at `url` and its entries, or throws manifest-invalid saying why. */
function readManifest(bytes, url) {
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    return { text, entries: manifestEntries(text) };
  } catch (e) {
    throw failure("manifest-invalid", `${url.href} is not a manifest this page can use: ${errorParts(e).message}`);
  }
}

/**
 * Downloads a manifest and uses it as if its file had been chosen; on any failure the
 * manifest shown before stays. Without an image, chosen or on its way, goes on to fetch the
 * manifest's newest gadget image, resolving its URL against the manifest's.
 */
async function loadManifest(text) {
  const source = sources.manifest;
  const signal = begin(source);
  let url, manifest;
  try {
    url = checkedUrl(text, "manifest");
    say(`Downloading the manifest from ${url.host}…`);
    manifest = readManifest(await download(url, "manifest", MAX_MANIFEST, signal), url);
  } catch (e) {
    if (!signal.aborted) report(source, e);
    return;
  } finally {
    settle(source, signal);
  }
  ui.manifestText.value = manifest.text;
  ui.manifestInput.value = ""; // the file picker no longer names the manifest in use
  const newest = newestGadget(manifest);
  showPick(newest);
  if (state.bytes) {
    await refresh(); // check the image already chosen against this manifest
    return;
  }
  if (sources.image.controller) {
    // The person's own download goes on; it is checked against this manifest when it ends.
    say(`Loaded the manifest from ${url.host}; the firmware file is still downloading.`);
    return;
  }
  if (!newest) {
    say(`Loaded the manifest from ${url.host}. It lists no gadget image, so none was fetched: choose the firmware file above.`);
    return;
  }
  const { entry } = newest;
  let imageUrl;
  try {
    imageUrl = checkedUrl(entry.url, "firmware file", url);
  } catch (e) {
    report(sources.image, e);
    return;
  }
  sources.image.input.value = imageUrl.href;
  await fetchImage(imageUrl.href, `Picked ${entry.name} version ${entry.version}, the manifest's newest gadget image. `);
}

/** Says in section 2 which gadget image the manifest from a URL offers, or nothing. */
function showPick(newest) {
  ui.manifestPick.hidden = !newest;
  if (!newest) return;
  const { entry, of } = newest;
  const which = of === 1 ? "The manifest's only gadget image" : `The newest of the manifest's ${of} gadget images`;
  ui.manifestPick.textContent = `${which}: ${entry.name} version ${entry.version} (${entry.url}).`;
}

/** Another manifest source replaces one still downloading, and the URL's pick with it. */
function manifestReplaced() {
  stop(sources.manifest);
  showPick(null);
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
  manifestReplaced();
  ui.manifestText.value = await manifest.text();
  ui.useDemoKey.checked = true;
  await chooseFile(new File([await image.arrayBuffer()], "app-v2.bin"));
}

function wire() {
  ui.demoImage.addEventListener("click", () =>
    useDemoImage().catch((e) => {
      say(`Could not load the demo image: ${errorParts(e).message}`);
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
    manifestReplaced();
    ui.manifestText.value = await f.text();
    refresh();
  });
  let timer;
  const later = () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, 250);
  };
  ui.manifestText.addEventListener("input", () => {
    manifestReplaced();
    later();
  });
  ui.keyText.addEventListener("input", later);
  ui.useDemoKey.addEventListener("change", refresh);

  // Enter in a field submits its form.
  ui.imageUrlForm.addEventListener("submit", (e) => {
    e.preventDefault();
    fetchImage(sources.image.input.value);
  });
  ui.manifestUrlForm.addEventListener("submit", (e) => {
    e.preventDefault();
    loadManifest(sources.manifest.input.value);
  });
  for (const source of Object.values(sources)) {
    const halt = () => {
      if (stop(source)) say(`Stopped the download; the ${source === sources.image ? "firmware file" : "manifest"} shown before stays.`);
    };
    source.stopButton.addEventListener("click", halt);
    source.input.addEventListener("keydown", (e) => {
      if (e.key === "Escape") halt();
    });
  }
}

try {
  await init();
  ui.version.textContent = version();
  wire();
  say("Ready. Choose a firmware file.");
  document.documentElement.dataset.ready = "true";
} catch (e) {
  say(`The checker could not start: ${errorParts(e).message}. Run \`make pkg\` and reload.`);
  document.documentElement.dataset.ready = "error";
  throw e;
}
