// The install section: connects to a device (a demo device or a real one over Web
// Bluetooth: an Alexa gadget or a SiFli DFU device) and installs the gadget image the
// checker verified, or a DFU package. The protocols run in wasm (`Updater`); this file only
// wires buttons to it and renders its events.
import init, { Updater, VerifiedImage } from "/pkg/otaweb.js";
import { hintFor, statusLine } from "/status.js";
import { trustedKey } from "/app.js";
import initDemo, { DemoDfuDevice, DemoGadget } from "/pkg/demo/otaweb_demo_device.js";
import { createDemoBluetooth } from "/demo-bluetooth.js";

const $ = (id) => document.getElementById(id);
const ui = {
  devices: [...document.querySelectorAll('input[name="device"]')],
  dfuFiles: $("dfu-files"),
  dfuInput: $("dfu-input"),
  demoDfu: $("demo-dfu"),
  dfuSummary: $("dfu-summary"),
  connect: $("connect"),
  update: $("update"),
  apply: $("apply"),
  cancel: $("cancel"),
  pickAgain: $("pick-again"),
  stageOnly: $("stage-only"),
  status: $("update-status"),
  deviceName: $("device-name"),
  deviceVersion: $("device-version"),
  stage: $("stage-text"),
  progress: $("progress"),
  progressText: $("progress-text"),
  hint: $("update-hint"),
  watchUrl: $("watch-url"),
  watchEvery: $("watch-every"),
  watchAuto: $("watch-auto"),
  watchToggle: $("watch-toggle"),
  watchStatus: $("watch-status"),
  steps: $("steps"),
  log: $("update-log"),
  copyLog: $("copy-log"),
  copyStatus: $("copy-status"),
  support: $("support"),
  supportLine: $("support-line"),
  supportHelp: $("support-help"),
  otawebVersion: $("otaweb-version"),
};

const STAGES = {
  init: "The device checks the package",
  reboot: "The device is rebooting into its updater",
  install: "The device is installing",
  handshake: "Greeting the device",
  discover: "Reading its firmware version",
  transfer: "Sending the image",
  apply: "Asking the device to install it",
  restart: "The device is restarting",
  confirm: "Checking the new version",
};

// Each flow's steps in the order the updater reports them, with their names in the list.
const STEPS = {
  gadget: [
    ["handshake", "Handshake"],
    ["discover", "Discover"],
    ["transfer", "Transfer"],
    ["apply", "Apply"],
    ["restart", "Restart"],
    ["confirm", "Confirm"],
  ],
  dfu: [
    ["init", "Init"],
    ["reboot", "Reboot"],
    ["transfer", "Transfer"],
    ["install", "Install"],
  ],
};

// Enough for a long daemon-mode session; the oldest lines go first.
const LOG_LINES = 500;

// What to do next, by error code; the message itself comes from otaweb.
const HINTS = {
  "bluetooth-unavailable": "Use Chrome or Edge on a page served over HTTPS or from 127.0.0.1, or pick the demo device.",
  "no-device": "No device was chosen. Switch the gadget on, bring it close, and try Connect again.",
  "connect-failed": "Bring the device closer and try again; if it keeps failing, restart it.",
  "timed-out": "The device stopped answering. Bring it closer and press Update again: it resumes.",
  "retries-exhausted": "The link lost too much data. Bring the device closer and press Update again: it resumes.",
  "IMAGE_REJECTED": "The device checked the new image and kept its old firmware. Download the image again.",
  "cancelled": "Nothing was installed. The device keeps its current firmware.",
  "DFU_ERR_CONTROL_PACKET_INVALID": "The package is not signed for this device. Get the package made for it.",
  "DFU_ERR_FW_INVALID": "An image in the package is damaged. Download the package again.",
  "wrong-image": "Pick the kind of device this image is for.",
  "NOT_STAGED": "No image is staged on the device. Tick “Stage only” and press Update first, or press Update to install at once.",
};

const state = { image: null, dfu: null, updater: null, running: false, staged: false, demos: {}, watch: null, logged: -1, dropped: false };

/** "demo-gadget", "demo-dfu", "ble-gadget" or "ble-dfu". */
const deviceKind = () => ui.devices.find((r) => r.checked).value;
const isDfu = () => deviceKind().endsWith("dfu");

const { set: setStatus, setHint, error: describeError } = statusLine(ui.status, ui.hint, HINTS);

function kib(n) {
  return `${(n / 1024).toFixed(n < 10 * 1024 ? 1 : 0)} KiB`;
}

/** Says at the top whether real devices can be reached from this browser, and if not how. */
function detectSupport() {
  const api = "bluetooth" in navigator;
  const secure = window.isSecureContext;
  const ok = api && secure;
  ui.support.dataset.state = ok ? "ok" : "missing";
  ui.supportHelp.hidden = ok;
  if (ok) {
    ui.supportLine.textContent = "✓ Web Bluetooth is available and this page is a secure context: real devices can be updated.";
  } else {
    const missing = [
      api ? null : "this browser has no Web Bluetooth",
      secure ? null : "this page is not a secure context (served over HTTPS or from localhost)",
    ].filter(Boolean);
    ui.supportLine.textContent = `✗ Real devices cannot be reached: ${missing.join(", and ")}.`;
  }
}

/** One line of the event log, with the time it happened. */
function log(text) {
  const li = document.createElement("li");
  const time = document.createElement("time");
  const now = new Date();
  time.dateTime = now.toISOString();
  // Local time to the millisecond, the same in every locale, so logs from anyone read alike.
  const pad = (n, width = 2) => String(n).padStart(width, "0");
  time.textContent = `${pad(now.getHours())}:${pad(now.getMinutes())}:${pad(now.getSeconds())}.${pad(now.getMilliseconds(), 3)}`;
  li.append(time, ` ${text}`);
  ui.log.append(li);
  while (ui.log.children.length > LOG_LINES) ui.log.firstElementChild.remove();
  ui.log.scrollTop = ui.log.scrollHeight;
}

/** The log as plain text, with what support asks first: the otaweb version and the browser. */
function logText() {
  const lines = [...ui.log.children].map((li) => li.textContent);
  return [`otaweb ${ui.otawebVersion.textContent.trim()} · ${navigator.userAgent}`, ...lines].join("\n");
}

async function copyLog() {
  try {
    await navigator.clipboard.writeText(logText());
    ui.copyStatus.textContent = "Copied.";
  } catch {
    // No clipboard access (an insecure page, or permission refused): select the lines so
    // the person can copy them with the keyboard.
    window.getSelection().selectAllChildren(ui.log);
    ui.copyStatus.textContent = "Selected: press Ctrl+C (⌘C on a Mac) to copy.";
  }
}

/** The manifest address without its query and fragment, which may carry a token. */
function withoutSecrets(url) {
  return String(url).split(/[?#]/)[0];
}

/** A fresh list of the connected flow's steps, none done. */
function resetSteps() {
  const steps = STEPS[isDfu() ? "dfu" : "gadget"];
  ui.steps.replaceChildren(
    ...steps.map(([id, name]) => {
      const li = document.createElement("li");
      li.dataset.step = id;
      const mark = document.createElement("span");
      mark.className = "mark";
      mark.setAttribute("aria-hidden", "true");
      const said = document.createElement("span");
      said.className = "visually-hidden";
      li.append(mark, name, said);
      return li;
    }),
  );
  for (const li of ui.steps.children) markStep(li, "pending");
}

const MARKS = { pending: ["○", ": not yet"], current: ["➜", ": in progress"], done: ["✓", ": done"], failed: ["✗", ": failed"] };

function markStep(li, kind) {
  li.dataset.state = kind;
  const [mark, said] = MARKS[kind];
  li.querySelector(".mark").textContent = mark;
  li.querySelector(".visually-hidden").textContent = said;
  if (kind === "current") li.setAttribute("aria-current", "step");
  else li.removeAttribute("aria-current");
}

/** The updater reached `stage`: the steps before it are done, it is the current one. */
function reachStep(stage) {
  const items = [...ui.steps.children];
  const at = items.findIndex((li) => li.dataset.step === stage);
  if (at < 0) return;
  items.forEach((li, i) => markStep(li, i < at ? "done" : i === at ? "current" : "pending"));
}

/** The run ended: every step done (installed), or only the current one (`"current"`), or
 * the current one failed. */
function endSteps(how) {
  for (const li of ui.steps.children) {
    if (how === "all") markStep(li, "done");
    else if (li.dataset.state === "current") markStep(li, how === "failed" ? "failed" : "done");
  }
}

function renderButtons() {
  const connected = state.updater !== null;
  ui.connect.disabled = state.running;
  ui.connect.textContent = connected ? "Disconnect" : "Connect";
  const ready = isDfu() ? state.dfu !== null : state.image !== null;
  ui.update.disabled = !connected || state.running || !ready;
  ui.dfuFiles.hidden = !isDfu();
  // Staging is the gadget's: a DFU device installs at the end of its transfer.
  ui.stageOnly.closest("p").hidden = isDfu();
  for (const r of ui.devices) r.disabled = connected;
  ui.apply.disabled = !connected || state.running || !state.staged;
  ui.cancel.disabled = !state.running;
  ui.watchToggle.disabled = !connected;
  ui.watchToggle.textContent = state.watch ? "Stop watching" : "Start watching";
  for (const field of [ui.watchUrl, ui.watchEvery, ui.watchAuto]) field.disabled = state.watch !== null;
}

/**
 * The demo radio: `?demoIntervalMs=30&demoPacketsPerEvent=1` makes a slower link, and
 * `?demoDropLinkAfter=150,400` drops it after those writes, to watch the updater reconnect
 * and resume where the device left off.
 */
function demoLink() {
  const query = new URLSearchParams(location.search);
  const out = {};
  for (const key of ["intervalMs", "packetsPerEvent"]) {
    const value = Number(query.get(`demo${key[0].toUpperCase()}${key.slice(1)}`));
    if (Number.isInteger(value) && value > 0) out[key] = value;
  }
  const drops = (query.get("demoDropLinkAfter") ?? "").split(",").map(Number);
  const writes = drops.filter((n) => Number.isInteger(n) && n > 0);
  if (writes.length > 0) out.disconnectAfterWrites = writes;
  return out;
}

/** A demo device's stand-in, made once per page so the device keeps its flash. */
async function demoBluetooth(kind) {
  if (!state.demos[kind]) {
    await initDemo();
    state.demos[kind] =
      kind === "demo-dfu"
        ? createDemoBluetooth(() => new DemoDfuDevice(), { profile: "sifli", ...demoLink() })
        : createDemoBluetooth(() => new DemoGadget(undefined, undefined, "otaweb demo gadget"), demoLink());
  }
  return state.demos[kind];
}

function listen(updater) {
  const on = (type, f) => updater.addEventListener(type, (e) => f(e.detail));
  on("stage", ({ stage }) => {
    ui.stage.textContent = STAGES[stage] ?? stage;
    reachStep(stage);
    log(`stage: ${stage}`);
  });
  on("version", ({ current, offered }) => {
    log(`version: the device runs ${current}${offered !== undefined ? `, offered ${offered}` : ""}`);
    ui.deviceVersion.textContent = `version ${current} (offered: ${offered})`;
    document.dispatchEvent(new CustomEvent("device-version", { detail: { version: String(current) } }));
  });
  on("progress", ({ confirmed, sent, total, bytesPerSecond, secondsLeft }) => {
    ui.progress.max = total;
    ui.progress.value = sent;
    const percent = total ? Math.floor((100 * sent) / total) : 0;
    const rate = bytesPerSecond > 0 ? ` · ${kib(bytesPerSecond)}/s` : "";
    const left = secondsLeft !== null && sent < total ? ` · about ${Math.ceil(secondsLeft)} s left` : "";
    ui.progressText.textContent = `${percent} % · ${kib(sent)} of ${kib(total)}${rate}${left}`;
    // The log counts what the device confirmed, every tenth: enough to see where a transfer
    // stalled, without a line per packet.
    const held = total ? Math.floor((100 * confirmed) / total) : 0;
    const tenth = Math.floor(held / 10) * 10;
    if (tenth > state.logged) {
      state.logged = tenth;
      log(`progress: ${held} % (${kib(confirmed)} of ${kib(total)})`);
    }
  });
  on("reconnecting", ({ attempt }) => {
    log(`reconnecting (attempt ${attempt})`);
    // Keep the "pick it again" instruction in view while the retries go on behind it.
    if (ui.pickAgain.hidden) setStatus(`Reconnecting to the device (attempt ${attempt})…`);
  });
  on("device-lost", () => {
    log("device lost: it does not answer under its old identity");
    ui.pickAgain.hidden = false;
    setStatus("The device does not answer under its old identity (an updater may advertise under another). Press “Pick the device again” and choose it in the list.");
  });
  on("rebooting", () => {
    log("rebooting into the updater");
    setStatus("The device accepted the package and is rebooting into its updater; reconnecting…");
  });
  on("resuming", ({ image, packets }) => {
    log(`resuming at image ${image}, packet ${packets + 1}`);
    setStatus(`Resuming the interrupted update at image ${image}, packet ${packets + 1}…`);
  });
  on("connected", () => {
    log("connected");
    ui.pickAgain.hidden = true;
    // An update also reopens the link when it starts: only a return after a drop resumes.
    if (state.running && state.dropped) setStatus("Reconnected; resuming…");
    state.dropped = false;
  });
  on("staged", ({ version }) => {
    endSteps("current");
    log(version === undefined ? "staged" : `staged version ${version}`);
  });
  on("done", ({ version }) => {
    endSteps("all");
    log(version === undefined ? "done: the device installed the package" : `done: the device runs version ${version}`);
  });
  on("up-to-date", ({ current, offered }) => {
    endSteps("current");
    log(`up to date: the device runs ${current}, offered ${offered}`);
  });
  on("update-available", ({ current, offered }) => {
    endSteps("current");
    log(`update available: the device runs ${current}, offered ${offered}`);
  });
  on("cancelled", () => {
    endSteps("failed");
    log("cancelled");
  });
  on("error", (e) => {
    endSteps("failed");
    log(`error ${e.code}: ${e.message}`);
  });
  on("watch-check", ({ source }) => {
    state.logged = -1;
    log(`watch: checking ${withoutSecrets(source)}`);
    ui.watchStatus.textContent = `Checking ${ui.watchUrl.value} …`;
  });
  on("watch-result", ({ outcome, version, current }) => {
    const at = new Date().toLocaleTimeString();
    log(
      outcome === "staged" ? `watch: staged version ${version}`
        : outcome === "done" ? `watch: installed version ${version}`
          : `watch: up to date${current ? ` at version ${current}` : ""}`,
    );
    if (outcome === "staged") {
      state.staged = true;
      ui.watchStatus.textContent = `Version ${version} is staged on the device (checked ${at}). Press “Apply staged image” to switch to it.`;
    } else if (outcome === "done") {
      ui.watchStatus.textContent = `Installed version ${version} (checked ${at}).`;
    } else {
      ui.watchStatus.textContent = `Up to date${current ? ` at version ${current}` : ""} (checked ${at}).`;
    }
    renderButtons();
  });
  on("watch-error", (e) => {
    log(`watch error ${e.code}: ${e.message}`);
    ui.watchStatus.textContent = `✗ ${e.message} (${e.code}); trying again in ${Math.round(e.retryInMs / 1000)} s. ${hintFor(HINTS, e.code)}`;
  });
  on("disconnected", () => {
    log("disconnected");
    state.dropped = state.running;
    if (!state.running) {
      setStatus("The device disconnected.");
    }
  });
}

async function connect() {
  if (state.updater) {
    state.watch?.stop();
    state.watch = null;
    state.updater.close();
    state.updater = null;
    document.dispatchEvent(new CustomEvent("device-disconnected"));
    state.staged = false;
    ui.deviceName.textContent = "—";
    ui.deviceVersion.textContent = "—";
    setStatus("Disconnected.");
    renderButtons();
    return;
  }
  setHint(null);
  setStatus("Connecting…");
  ui.connect.disabled = true;
  try {
    const kind = deviceKind();
    const options = kind.startsWith("demo") ? { bluetooth: await demoBluetooth(kind) } : {};
    const updater = isDfu() ? await Updater.connectDfu(options) : await Updater.connectGadget(options);
    listen(updater);
    state.updater = updater;
    log(`connected to ${updater.deviceName ?? "an unnamed device"} (${kind})`);
    resetSteps();
    // The EnOS panel (enos.js) acts for whichever device this section connected.
    document.dispatchEvent(new CustomEvent("device-connected", { detail: { updater, dfu: isDfu() } }));
    ui.deviceName.textContent = updater.deviceName ?? "(unnamed gadget)";
    setStatus("Connected. Choose and check an image above.");
    renderButtons();
    await check();
  } catch (e) {
    // No updater exists yet to report it: this failure is the connection's own.
    log(`error ${e?.code ?? "internal"}: ${e?.message ?? e}`);
    describeError(e);
  }
  renderButtons();
}

/** Reads the device's version against the chosen image, sending nothing else. */
async function check() {
  if (!state.updater || !state.image || state.running || isDfu()) return;
  state.running = true;
  resetSteps();
  renderButtons();
  try {
    const verified = VerifiedImage.verify(state.image.bytes, state.image.entry, state.image.key, false);
    const result = await state.updater.update(verified, { checkOnly: true });
    ui.deviceVersion.textContent = `version ${result.current}`;
    ui.stage.textContent = "—";
    setStatus(
      result.outcome === "update-available"
        ? `The device runs version ${result.current}; version ${result.offered} is ready to install. Press Update.`
        : `The device already runs version ${result.current}; version ${result.offered} is not newer.`,
      "",
    );
  } catch (e) {
    describeError(e);
  }
  state.running = false;
  renderButtons();
}

async function run(action) {
  state.running = true;
  state.logged = -1;
  resetSteps();
  setHint(null);
  renderButtons();
  try {
    const result = await action();
    if (result.outcome === "done" && result.version === undefined) {
      ui.stage.textContent = "Finished";
      setStatus("✓ Installed: the device installed the package and restarted into it.", "pass");
    } else if (result.outcome === "done") {
      state.staged = false;
      ui.deviceVersion.textContent = `version ${result.version}`;
      ui.stage.textContent = "Finished";
      setStatus(`✓ Installed: the device now runs version ${result.version}.`, "pass");
    } else if (result.outcome === "staged") {
      state.staged = true;
      setStatus("✓ Staged: the image is on the device. Press “Apply staged image” to switch to it.", "pass");
    } else if (result.outcome === "up-to-date") {
      ui.stage.textContent = "Finished";
      setStatus(`The device already runs version ${result.current}; version ${result.offered} is not newer. Nothing was sent.`, "pass");
    }
  } catch (e) {
    ui.stage.textContent = "Stopped";
    describeError(e);
  }
  state.running = false;
  renderButtons();
}

function update() {
  ui.progress.value = 0;
  ui.progressText.textContent = "";
  if (isDfu()) {
    const { dfu } = state;
    setStatus(`Installing the DFU package (${dfu.summary.images} images)…`);
    const make = () => (dfu.bundle ? VerifiedImage.dfuBundle(dfu.bundle) : VerifiedImage.dfuPackage(dfu.ctrl, dfu.images));
    return run(() => state.updater.update(make(), {}));
  }
  const { image } = state;
  setStatus(`Installing ${image.fileName}…`);
  return run(() => {
    const verified = VerifiedImage.verify(image.bytes, image.entry, image.key, false);
    return state.updater.update(verified, { stageOnly: ui.stageOnly.checked });
  });
}

/** A DFU package from its files: ctrl_packet.bin, transfer files, and package.json naming ids;
 * or from one .tar holding them all (the single file EnOS delivers), read in wasm. */
async function readDfuPackage(files) {
  if (files.length === 1 && files[0].name.endsWith(".tar")) {
    const bundle = new Uint8Array(await files[0].arrayBuffer());
    return { bundle, images: [{ name: files[0].name }], summary: VerifiedImage.dfuBundle(bundle).describe() };
  }
  const byName = new Map(files.map((f) => [f.name, f]));
  const manifest = byName.get("package.json");
  if (!manifest) throw new Error("package.json is missing: it names each transfer file's image id");
  const meta = JSON.parse(await manifest.text());
  const read = async (name) => {
    const f = byName.get(name);
    if (!f) throw new Error(`${name} is missing from the chosen files`);
    return new Uint8Array(await f.arrayBuffer());
  };
  const ctrl = await read(meta.ctrl_packet ?? "ctrl_packet.bin");
  const images = await Promise.all(
    meta.images.map(async (i) => ({ imgId: i.img_id, bytes: await read(i.transfer), name: i.transfer })),
  );
  // The package's own checks (records walk, ids unique) run in wasm.
  const summary = VerifiedImage.dfuPackage(ctrl, images).describe();
  return { ctrl, images, summary };
}

async function chooseDfu(files) {
  try {
    state.dfu = await readDfuPackage(files);
    const kib = (state.dfu.summary.size / 1024).toFixed(1);
    ui.dfuSummary.textContent = `Package ready: ${state.dfu.images.map((i) => i.name).join(", ")} (${kib} KiB).`;
  } catch (e) {
    state.dfu = null;
    ui.dfuSummary.textContent = `✗ ${e?.message ?? e}`;
  }
  renderButtons();
}

async function useDemoDfu() {
  const names = ["package.json", "ctrl_packet.bin", "hcpu.transfer.bin", "res.transfer.bin", "font.transfer.bin"];
  const files = await Promise.all(
    names.map(async (name) => {
      const res = await fetch(`/fixtures/dfu/${name}`);
      if (!res.ok) throw new Error(`${name}: HTTP ${res.status}`);
      return new File([await res.arrayBuffer()], name);
    }),
  );
  await chooseDfu(files);
}

/** Starts or stops daemon mode on the connected device. */
async function toggleWatch() {
  if (state.watch) {
    state.watch.stop();
    state.watch = null;
    ui.watchStatus.textContent = "Stopped watching.";
    renderButtons();
    return;
  }
  try {
    const key = await trustedKey();
    state.watch = state.updater.watch({
      source: ui.watchUrl.value.trim(),
      everyMinutes: Number(ui.watchEvery.value),
      autoApply: ui.watchAuto.checked,
      policy: { trustedKeys: key ? [key] : [] },
    });
  } catch (e) {
    const code = e?.code ?? "internal";
    ui.watchStatus.textContent = `✗ ${e?.message ?? e} (${code}). ${hintFor(HINTS, code)}`;
  }
  renderButtons();
}

function apply() {
  setStatus("Applying the staged image…");
  return run(() => state.updater.apply());
}

detectSupport();
await init();
document.addEventListener("image-verified", (e) => {
  state.image = e.detail.entry.flow === "gadget" ? e.detail : null;
  if (!state.image) setStatus(`This image is for the ${e.detail.entry.flow} flow; this section installs gadget images.`);
  renderButtons();
  check();
});
document.addEventListener("image-cleared", () => {
  state.image = null;
  renderButtons();
});
ui.connect.addEventListener("click", connect);
ui.pickAgain.addEventListener("click", () =>
  state.updater?.pickDevice().catch((e) => describeError(e)),
);
for (const r of ui.devices) r.addEventListener("change", renderButtons);
// `?device=demo-dfu` (printed by `make demo`) preselects a device.
const wanted = ui.devices.find((r) => r.value === new URLSearchParams(location.search).get("device"));
if (wanted) wanted.checked = true;
ui.dfuInput.addEventListener("change", () => chooseDfu([...ui.dfuInput.files]));
ui.demoDfu.addEventListener("click", () => useDemoDfu().catch((e) => (ui.dfuSummary.textContent = `✗ ${e.message}`)));
ui.update.addEventListener("click", update);
ui.apply.addEventListener("click", apply);
ui.watchToggle.addEventListener("click", toggleWatch);
ui.cancel.addEventListener("click", () => state.updater?.cancel());
ui.copyLog.addEventListener("click", copyLog);
renderButtons();
document.documentElement.dataset.updateReady = "true";
