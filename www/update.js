// The install section: connects to a gadget (the demo device or a real one over Web
// Bluetooth) and installs the image the checker verified. The protocol runs in wasm
// (`Updater`); this file only wires buttons to it and renders its events.
import init, { Updater, VerifiedImage } from "/pkg/otaweb.js";
import initDemo, { DemoGadget } from "/pkg/demo/otaweb_demo_device.js";
import { createDemoBluetooth } from "/demo-bluetooth.js";

const $ = (id) => document.getElementById(id);
const ui = {
  demo: $("device-demo"),
  connect: $("connect"),
  update: $("update"),
  apply: $("apply"),
  cancel: $("cancel"),
  stageOnly: $("stage-only"),
  status: $("update-status"),
  deviceName: $("device-name"),
  deviceVersion: $("device-version"),
  stage: $("stage-text"),
  progress: $("progress"),
  progressText: $("progress-text"),
  hint: $("update-hint"),
};

const STAGES = {
  handshake: "Greeting the device",
  discover: "Reading its firmware version",
  transfer: "Sending the image",
  apply: "Asking the device to install it",
  restart: "The device is restarting",
  confirm: "Checking the new version",
};

// What to do next, by error code; the message itself comes from otaweb.
const HINTS = {
  "bluetooth-unavailable": "Use Chrome or Edge on a page served over HTTPS or from 127.0.0.1, or pick the demo device.",
  "no-device": "No device was chosen. Switch the gadget on, bring it close, and try Connect again.",
  "connect-failed": "Bring the device closer and try again; if it keeps failing, restart it.",
  "timed-out": "The device stopped answering. Bring it closer and press Update again: it resumes.",
  "retries-exhausted": "The link lost too much data. Bring the device closer and press Update again: it resumes.",
  "IMAGE_REJECTED": "The device checked the new image and kept its old firmware. Download the image again.",
  "cancelled": "Nothing was installed. The device keeps its current firmware.",
};

const state = { image: null, updater: null, running: false, staged: false, demo: null };

function setStatus(text, kind = "") {
  ui.status.textContent = text;
  ui.status.dataset.state = kind;
}

function setHint(code) {
  const hint = HINTS[code];
  ui.hint.hidden = !hint;
  ui.hint.textContent = hint ?? "";
}

function kib(n) {
  return `${(n / 1024).toFixed(n < 10 * 1024 ? 1 : 0)} KiB`;
}

function renderButtons() {
  const connected = state.updater !== null;
  ui.connect.disabled = state.running;
  ui.connect.textContent = connected ? "Disconnect" : "Connect";
  ui.update.disabled = !connected || state.running || state.image === null;
  ui.apply.disabled = !connected || state.running || !state.staged;
  ui.cancel.disabled = !state.running;
}

/** The demo device's stand-in, made once per page so the device keeps its flash. */
async function demoBluetooth() {
  if (state.demo === null) {
    await initDemo();
    state.demo = createDemoBluetooth(() => new DemoGadget(undefined, undefined, "otaweb demo gadget"));
  }
  return state.demo;
}

function describeError(e) {
  const code = e?.code ?? "internal";
  setStatus(`✗ ${e?.message ?? String(e)} (${code})`, "fail");
  setHint(code);
}

function listen(updater) {
  const on = (type, f) => updater.addEventListener(type, (e) => f(e.detail));
  on("stage", ({ stage }) => {
    ui.stage.textContent = STAGES[stage] ?? stage;
  });
  on("version", ({ current, offered }) => {
    ui.deviceVersion.textContent = `version ${current} (offered: ${offered})`;
  });
  on("progress", ({ confirmed, total, bytesPerSecond, secondsLeft }) => {
    ui.progress.max = total;
    ui.progress.value = confirmed;
    const rate = bytesPerSecond > 0 ? ` · ${kib(bytesPerSecond)}/s` : "";
    const left = secondsLeft !== null && confirmed < total ? ` · about ${Math.ceil(secondsLeft)} s left` : "";
    ui.progressText.textContent = `${kib(confirmed)} of ${kib(total)}${rate}${left}`;
  });
  on("reconnecting", ({ attempt }) => {
    setStatus(`The link dropped; reconnecting (attempt ${attempt})…`);
  });
  on("connected", () => {
    if (state.running) setStatus("Reconnected; resuming…");
  });
  on("disconnected", () => {
    if (!state.running) {
      setStatus("The device disconnected.");
    }
  });
}

async function connect() {
  if (state.updater) {
    state.updater.close();
    state.updater = null;
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
    const options = ui.demo.checked ? { bluetooth: await demoBluetooth() } : {};
    const updater = await Updater.connectGadget(options);
    listen(updater);
    state.updater = updater;
    ui.deviceName.textContent = updater.deviceName ?? "(unnamed gadget)";
    setStatus("Connected. Choose and check an image above.");
    renderButtons();
    await check();
  } catch (e) {
    describeError(e);
  }
  renderButtons();
}

/** Reads the device's version against the chosen image, sending nothing else. */
async function check() {
  if (!state.updater || !state.image || state.running) return;
  state.running = true;
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
  setHint(null);
  renderButtons();
  try {
    const result = await action();
    if (result.outcome === "done") {
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
  const { image } = state;
  ui.progress.value = 0;
  ui.progressText.textContent = "";
  setStatus(`Installing ${image.fileName}…`);
  return run(() => {
    const verified = VerifiedImage.verify(image.bytes, image.entry, image.key, false);
    return state.updater.update(verified, { stageOnly: ui.stageOnly.checked });
  });
}

function apply() {
  setStatus("Applying the staged image…");
  return run(() => state.updater.apply());
}

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
ui.update.addEventListener("click", update);
ui.apply.addEventListener("click", apply);
ui.cancel.addEventListener("click", () => state.updater?.cancel());
renderButtons();
document.documentElement.dataset.updateReady = "true";
