// The EnOS panel: acts for the device section 4 connected, in the EnOS cloud. The protocol
// (signed CONNECT, inform / upgrade / progress / getversion, the download and its checks,
// the failure steps) runs in wasm (`EnosAgent`); this file wires the form to it and shows
// what the cloud was told. Fields may be prefilled from the page's query string (`enos`,
// `pk`, `dk`, `version`, `files`; never the secret), which `make demo` prints.
import init, { EnosAgent } from "/pkg/otaweb.js";
import { statusLine } from "/status.js";

const $ = (id) => document.getElementById(id);
const ui = {
  url: $("enos-url"),
  pk: $("enos-pk"),
  dk: $("enos-dk"),
  credModes: [...document.querySelectorAll('input[name="enos-cred"]')],
  secretField: $("enos-secret-field"),
  secret: $("enos-secret"),
  tokenField: $("enos-token-field"),
  token: $("enos-token"),
  version: $("enos-version"),
  files: $("enos-files"),
  auto: $("enos-auto"),
  choose: $("enos-choose"),
  every: $("enos-every"),
  connect: $("enos-connect"),
  check: $("enos-check"),
  accept: $("enos-accept"),
  decline: $("enos-decline"),
  versions: $("enos-versions"),
  versionList: $("enos-version-list"),
  installChosen: $("enos-install-chosen"),
  status: $("enos-status"),
  link: $("enos-link"),
  task: $("enos-task"),
  step: $("enos-step"),
  progress: $("enos-progress"),
  log: $("enos-log"),
  hint: $("enos-hint"),
};

// What each negative step means, as the EnOS console names it.
const FAILURES = {
  "-1": "upgrade failed",
  "-2": "download failed",
  "-3": "verification failed",
  "-4": "burning failed",
  "-5": "declined by the device",
};

const HINTS = {
  "invalid-url": "Use wss://… for a remote broker; ws:// is only allowed to this computer.",
  disconnected: "Check the broker URL and that the broker, or its WebSocket bridge, runs.",
  CONNACK_REFUSED_BAD_USERNAME_PASSWORD: "The broker refused the login: check the keys and the device secret or token.",
  CONNACK_REFUSED_NOT_AUTHORIZED: "The broker refused the login: check the keys and the device secret or token.",
  "md5-mismatch": "The downloaded file is not the one the cloud described; nothing was installed.",
  "digest-mismatch": "The downloaded file is not the one the cloud described; nothing was installed.",
  "size-mismatch": "The downloaded file has another size than the cloud announced; nothing was installed.",
};

const state = { updater: null, dfu: false, agent: null, watch: null, offered: [] };

const { set: setStatus, setHint, error: describeError } = statusLine(ui.status, ui.hint, HINTS);

function stepText(step) {
  return step < 0 ? `${step} (${FAILURES[step] ?? "custom failure"})` : `${step} %`;
}

function log(text) {
  const li = document.createElement("li");
  li.textContent = text;
  ui.log.append(li);
  while (ui.log.children.length > 50) ui.log.firstElementChild.remove();
}

function render() {
  const connected = state.agent !== null;
  ui.connect.disabled = !connected && state.updater === null;
  ui.connect.textContent = connected ? "Disconnect from EnOS" : "Connect to EnOS";
  ui.check.disabled = !connected || state.agent.state !== "idle";
  const token = ui.credModes.find((r) => r.checked).value === "token";
  ui.secretField.hidden = token;
  ui.tokenField.hidden = !token;
  ui.task.textContent = connected ? state.agent.state : "—";
  for (const field of [ui.url, ui.pk, ui.dk, ui.secret, ui.token, ui.version, ui.files, ui.auto, ui.choose, ui.every]) {
    field.disabled = connected;
  }
}

function offer(show) {
  ui.accept.hidden = !show;
  ui.decline.hidden = !show;
}

function options() {
  const token = ui.credModes.find((r) => r.checked).value === "token";
  const out = {
    productKey: ui.pk.value.trim(),
    deviceKey: ui.dk.value.trim(),
    version: ui.version.value.trim(),
    accept: ui.auto.checked ? "auto" : "ask",
    pick: ui.choose.checked ? "ask" : "highest",
  };
  if (ui.files.value.trim()) out.fileService = ui.files.value.trim();
  if (token) {
    out.credentials = JSON.parse(ui.token.value);
  } else {
    out.deviceSecret = ui.secret.value;
  }
  return out;
}

function listen(agent) {
  const on = (type, f) => agent.addEventListener(type, (e) => (f(e.detail), render()));
  on("connected", ({ version }) => {
    ui.link.textContent = `connected, reported version ${version}`;
    log(`inform: version ${version} acknowledged`);
  });
  on("link-lost", (e) => {
    ui.link.textContent = "connection lost; reconnecting…";
    log(`broker: ${e.message}`);
  });
  on("error", (e) => {
    ui.link.textContent = "not connected";
    describeError(e);
  });
  on("upgrade-offered", ({ firmware }) => {
    offer(true);
    setStatus(`EnOS offers version ${firmware.version} (${firmware.fileSize} bytes). Install it?`);
  });
  on("versions-offered", ({ firmwares }) => {
    state.offered = firmwares;
    ui.versionList.replaceChildren(
      ...firmwares.map((f, i) => new Option(`${f.version} (${f.fileSize} bytes, ${f.signMethod})`, String(i))),
    );
    ui.versions.hidden = false;
    setStatus(`EnOS offers ${firmwares.length} versions: choose one.`);
  });
  on("no-update", () => setStatus("EnOS has nothing newer for this device.", "pass"));
  on("download", ({ firmware }) => {
    offer(false);
    ui.versions.hidden = true;
    setHint(null);
    setStatus(`Downloading version ${firmware.version} (${firmware.fileSize} bytes)…`);
  });
  on("download-interrupted", ({ received, attempt }) => {
    setStatus(`The download broke off at ${received} bytes; resuming (attempt ${attempt})…`);
    log(`download interrupted at ${received} bytes, resuming`);
  });
  on("install", ({ version, size }) => {
    setStatus(`File checked (${size} bytes, sign matches). Installing version ${version} on the device…`);
  });
  on("report", ({ step, acknowledged, error }) => {
    if (step >= 0) ui.progress.value = step;
    ui.step.textContent = stepText(step) + (acknowledged ? "" : " (not acknowledged)");
    log(`progress ${stepText(step)}: ${acknowledged ? "acknowledged" : `not acknowledged: ${error?.message}`}`);
  });
  on("push-ignored", ({ firmware }) => log(`push of ${firmware.version} ignored: a task is running`));
  on("malformed", ({ topic, error }) => log(`ignored a bad message on ${topic}: ${error.message}`));
  on("done", ({ version }) => {
    ui.link.textContent = `connected, reported version ${version}`;
    ui.version.value = version;
    setStatus(`✓ Installed: the device runs version ${version} and EnOS knows it.`, "pass");
  });
  on("failed", (e) => {
    offer(false);
    describeError(e);
  });
}

async function connect() {
  if (state.agent) {
    state.watch?.stop();
    state.watch = null;
    state.agent.close();
    state.agent = null;
    ui.link.textContent = "not connected";
    offer(false);
    ui.versions.hidden = true;
    setStatus("Disconnected from EnOS.");
    render();
    return;
  }
  setHint(null);
  setStatus("Connecting to EnOS…");
  ui.connect.disabled = true;
  try {
    state.agent = await EnosAgent.connect(ui.url.value.trim(), state.updater, options());
    listen(state.agent);
    ui.link.textContent = `connected, reported version ${state.agent.version}`;
    const every = Number(ui.every.value);
    if (every > 0) state.watch = state.agent.watch(every);
    setStatus(
      every > 0
        ? `Connected. Asking EnOS for updates every ${every} minutes; it can also push one.`
        : "Connected. EnOS can push an upgrade now, or ask it for one.",
    );
  } catch (e) {
    state.agent = null;
    describeError(e);
  }
  render();
}

function act(f) {
  try {
    f();
  } catch (e) {
    describeError(e);
  }
  render();
}

await init();
const query = new URLSearchParams(location.search);
// Never the secret: a URL ends up in history, logs and referrers.
for (const [key, field] of [["enos", ui.url], ["pk", ui.pk], ["dk", ui.dk], ["version", ui.version], ["files", ui.files]]) {
  if (query.has(key)) field.value = query.get(key);
}
document.addEventListener("device-connected", (e) => {
  state.updater = e.detail.updater;
  state.dfu = e.detail.dfu;
  setStatus("Fill in the device's EnOS identity and connect.");
  render();
});
document.addEventListener("device-disconnected", () => {
  state.updater = null;
  if (state.agent) connect();
  render();
});
document.addEventListener("device-version", (e) => {
  if (!state.agent) ui.version.value = e.detail.version;
});
ui.connect.addEventListener("click", connect);
ui.check.addEventListener("click", () => act(() => state.agent.checkForUpdate()));
ui.accept.addEventListener("click", () => act(() => (offer(false), state.agent.accept())));
ui.decline.addEventListener("click", () => act(() => (offer(false), state.agent.decline())));
ui.installChosen.addEventListener("click", () =>
  act(() => {
    ui.versions.hidden = true;
    state.agent.choose(Number(ui.versionList.value));
  }),
);
for (const r of ui.credModes) r.addEventListener("change", render);
render();
document.documentElement.dataset.enosReady = "true";
