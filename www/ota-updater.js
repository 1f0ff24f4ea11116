// <ota-updater>: a firmware-update button any page can embed with one script tag.
//
//   <script type="module" src="/ota-updater.js"></script>
//   <ota-updater manifest="/fixtures/manifest.json" flow="gadget"
//                trusted-key-url="/keys/firmware.pub.pem"></ota-updater>
//
// The update itself runs in wasm (pkg/otaweb.js: `Updater.connectGadget` / `connectDfu`,
// `updater.run`, `apply`, `cancel` and the updater's events): which image to take, the
// signature, digest and size checks, the transfer and the reconnections. This element only
// starts those calls, turns their events into one state snapshot and shows it. It loads the
// wasm on first use, not when the page loads, so a portal pays nothing until a person asks.
//
// Attributes (read when an update starts):
//   manifest            URL of the otaweb manifest listing the images
//   flow                "gadget" (Alexa Gadgets OTA, the default) or "dfu" (SiFli DFU)
//   auto                present: install at once; absent: stage the image, then offer Apply
//                       (a SiFli DFU device cannot hold a staged image: it always installs)
//   trusted-key         PEM text of the trusted ECDSA P-256 public key
//   trusted-key-url     or where to fetch it; same origin as the page only, because the key
//                       decides what may be installed and must be no easier to swap than
//                       the page itself (a key from elsewhere: paste it into trusted-key)
//   demo                present: update the built-in demo device of that flow (the companion
//                       firmware in wasm) instead of a real one over navigator.bluetooth
//   danger-allow-http   manifests and images over plain http:// too (development only)
//   current-version     what the device runs, for devices that cannot say (SiFli DFU): an
//                       image not newer than it is not installed; once the element has
//                       installed an image on that device (or found it up to date), it goes
//                       by that version instead
//   broker-url          the EnOS broker WebSocket URL; reserved: only reported in `state`
//                       (the EnOS panel is the page's, www/enos.js)
//
// Slots:
//   activate      the start button's content (default "Update firmware")
//   unsupported   shown when the browser has no Web Bluetooth (and no `demo`)
//   not-allowed   shown when the page is not a secure context, or no device was chosen
//                 (the chooser was cancelled or Bluetooth permission was denied)
//
// CSS custom properties (set them on the element or any ancestor):
//   --ota-accent             buttons and progress bar        (default #0b5cad)
//   --ota-accent-foreground  text on accent-coloured buttons (default #ffffff)
//   --ota-background         the element's background        (default Canvas)
//   --ota-foreground         its text                        (default CanvasText)
//   --ota-border             its border and the secondary buttons' outline
//   --ota-error / --ota-success  colours of the outcome line
//   --ota-radius             corner radius                   (default 10px)
//   --ota-font               font family                     (default the page's)
// Parts for finer styling with ::part(): box, activate, apply, cancel, pick-again, status,
// progress, progress-text, hint, code.
//
// API: run() (connect if needed, then install, or stage without `auto`), stage(), apply(),
// cancel(); each returns a promise of the state once that call is over (it never rejects:
// a failure is the state's `error`). `state` is a frozen snapshot; `updater` the wasm
// Updater (null until connected). Event `state-changed` (bubbles, composed): detail = state.
// Types: ota-updater.d.ts.

// www/ is served at / and pkg/ at /pkg/; from /ota-updater.js "../pkg/" stays /pkg/, and a
// server that mounts the repository as it is (/www/ota-updater.js) finds /pkg/ the same way.
const OTAWEB = new URL("../pkg/otaweb.js", import.meta.url).href;
const DEMO_DEVICE = new URL("../pkg/demo/otaweb_demo_device.js", import.meta.url).href;
const DEMO_RADIO = new URL("./demo-bluetooth.js", import.meta.url).href;

// One copy of each module per page, whatever the number of elements; a failed load is
// forgotten so the next click tries again.
let otaweb = null;
let demoKit = null;

function loadOtaweb() {
  otaweb ??= import(OTAWEB)
    .then(async (module) => {
      await module.default();
      return module;
    })
    .catch((e) => {
      otaweb = null;
      throw loadError(e);
    });
  return otaweb;
}

function loadDemoKit() {
  demoKit ??= Promise.all([import(DEMO_DEVICE), import(DEMO_RADIO)])
    .then(async ([device, radio]) => {
      await device.default();
      return { ...device, createDemoBluetooth: radio.createDemoBluetooth };
    })
    .catch((e) => {
      demoKit = null;
      throw loadError(e);
    });
  return demoKit;
}

/** An error this element raises itself, shaped like an OtawebError. */
function elementError(code, message) {
  return Object.assign(new Error(message), { name: "OtawebError", code });
}

function loadError(e) {
  return elementError("load-failed", `the updater could not be loaded: ${e?.message ?? e}`);
}

// What to do next, by error code; the message itself is otaweb's.
const HINTS = {
  "load-failed": "Check your internet connection and reload the page.",
  "insecure-context": "Open this page at its https:// address.",
  "bluetooth-unavailable": "Open this page in Chrome or Edge on a computer or an Android phone.",
  "no-device": "Switch the device on, bring it close, press the button again and pick it in the list (and allow Bluetooth if the browser asks).",
  "connect-failed": "Bring the device closer and try again; if it keeps failing, restart the device.",
  "timed-out": "The device stopped answering. Bring it closer and try again: the update goes on where it stopped.",
  "retries-exhausted": "The connection lost too much data. Bring the device closer and try again: the update goes on where it stopped.",
  disconnected: "The connection to the device dropped. Bring it closer and try again: the update goes on where it stopped.",
  cancelled: "Nothing was installed: the device keeps its current firmware.",
  "signature-invalid": "The update is not signed by the device's maker, so it was not sent. Try again later, or tell the site's support.",
  "signature-missing": "The update carries no signature, so it was not sent. Tell the site's support.",
  "digest-mismatch": "The downloaded update is damaged, so it was not sent. Try again.",
  "size-mismatch": "The downloaded update is damaged, so it was not sent. Try again.",
  "download-failed": "The update could not be downloaded. Check your internet connection and try again.",
  "too-large": "The update is larger than any device takes, so it was not sent. Tell the site's support.",
  "manifest-invalid": "The list of updates is broken, so nothing was sent. Tell the site's support.",
  "no-image-for-device": "There is no update for this kind of device here. Check that you picked the right device.",
  "policy-invalid": "This page is not set up to trust any firmware, so nothing can be installed. Tell the site's support (it needs trusted-key or trusted-key-url).",
  "key-invalid": "This page's trusted key is not usable, so nothing can be installed. Tell the site's support.",
  "trusted-key-unavailable": "The page's trusted key could not be loaded. Reload the page and try again.",
  "insecure-url": "The update is offered over an insecure connection, so it was not fetched. Tell the site's support.",
  "invalid-attribute": "This page's updater is set up wrongly. Tell the site's support.",
  "wrong-image": "This update is for another kind of device. Check that you picked the right device.",
  "wrong-state": "There is nothing to do at this step. Start the update again.",
  IMAGE_REJECTED: "The device checked the update and kept its old firmware. Try again; if it keeps failing, tell the site's support.",
  DFU_ERR_CONTROL_PACKET_INVALID: "The update is not signed for this device. Tell the site's support.",
  DFU_ERR_FW_INVALID: "A part of the update is damaged. Try again.",
};
const FALLBACK_HINT = "Try again. If it keeps failing, tell the site's support the error code below.";

/** Updater stages, as the phase the person sees; the others count as checking. */
const STAGE_PHASES = {
  transfer: "transferring",
  apply: "applying",
  restart: "applying",
  confirm: "applying",
  install: "applying",
};

const BUSY = new Set(["connecting", "checking", "transferring", "applying"]);

const TEMPLATE = `
<style>
  :host {
    --_accent: var(--ota-accent, #0b5cad);
    --_on-accent: var(--ota-accent-foreground, #ffffff);
    --_bg: var(--ota-background, Canvas);
    --_fg: var(--ota-foreground, CanvasText);
    --_border: var(--ota-border, color-mix(in srgb, var(--_fg) 25%, transparent));
    --_error: var(--ota-error, light-dark(#a40e26, #ff7b72));
    --_success: var(--ota-success, light-dark(#116329, #3fb950));
    --_radius: var(--ota-radius, 10px);
    display: block;
    max-width: 100%;
    font-family: var(--ota-font, inherit);
    line-height: 1.5;
  }
  :host([hidden]) { display: none; }
  * { box-sizing: border-box; }
  [hidden] { display: none !important; }
  .box {
    padding: 1rem;
    color: var(--_fg);
    background: var(--_bg);
    border: 1px solid var(--_border);
    border-radius: var(--_radius);
    overflow-wrap: anywhere;
  }
  .actions { display: flex; flex-wrap: wrap; gap: 0.5rem; }
  button {
    min-height: 2.75rem;
    padding: 0.5rem 1.1rem;
    font: inherit;
    font-weight: 600;
    color: var(--_on-accent);
    background: var(--_accent);
    border: 2px solid var(--_accent);
    border-radius: var(--_radius);
    cursor: pointer;
  }
  button[aria-disabled="true"] { opacity: 0.55; cursor: progress; }
  button.secondary { color: var(--_fg); background: transparent; border-color: var(--_border); }
  button:focus-visible { outline: 3px solid var(--_accent); outline-offset: 2px; }
  .status:empty, .env:empty { display: none; }
  .status, .hint, .code, .env ::slotted(*), .env p { margin: 0.75rem 0 0; }
  .status[data-kind="error"] { color: var(--_error); font-weight: 600; }
  .status[data-kind="success"] { color: var(--_success); font-weight: 600; }
  .code { font-size: 0.875em; opacity: 0.8; }
  progress { display: block; width: 100%; height: 0.75rem; margin-top: 0.75rem; accent-color: var(--_accent); }
  .progress-text { margin: 0.25rem 0 0; font-size: 0.875em; font-variant-numeric: tabular-nums; }
</style>
<div class="box" part="box">
  <div class="actions">
    <button type="button" data-id="activate" part="activate"><slot name="activate">Update firmware</slot></button>
    <button type="button" data-id="apply" part="apply" hidden>Apply the update</button>
    <button type="button" data-id="pick-again" part="pick-again" hidden>Pick the device again</button>
    <button type="button" data-id="cancel" part="cancel" class="secondary" hidden>Cancel</button>
  </div>
  <div role="status" aria-live="polite">
    <div class="env" data-id="unsupported" hidden>
      <slot name="unsupported"><p>This browser cannot reach Bluetooth devices. Open this page in
        Chrome or Edge on a computer or an Android phone.</p></slot>
    </div>
    <div class="env" data-id="not-allowed" hidden><slot name="not-allowed"><p data-id="not-allowed-text"></p></slot></div>
    <p class="status" data-id="status" part="status"></p>
    <p class="hint" data-id="hint" part="hint" hidden></p>
    <p class="code" data-id="code" part="code" hidden></p>
  </div>
  <div data-id="progress-box" hidden>
    <progress data-id="progress" part="progress" max="1" value="0" aria-label="Update progress"></progress>
    <p class="progress-text" data-id="progress-text" part="progress-text"></p>
  </div>
</div>`;

function kib(n) {
  return `${(n / 1024).toFixed(n < 10 * 1024 ? 1 : 0)} KiB`;
}

function timeLeft(seconds) {
  return seconds < 90 ? `about ${Math.ceil(seconds)} s left` : `about ${Math.round(seconds / 60)} min left`;
}

export class OtaUpdater extends HTMLElement {
  // `demo` decides whether the page needs Web Bluetooth at all.
  static observedAttributes = ["demo"];

  #ui;
  #state = { phase: "idle", device: null, version: null, progress: null, error: null };
  #updater = null;
  /** The flow and radio `#updater` was connected with: another pair needs another device. */
  #updaterFor = null;
  /** The demo radio, made once per flow so the demo device keeps its flash between runs. */
  #demo = null;
  #pending = null;
  /** Set by cancel() before the updater's flow exists; honoured at the flow's first stage. */
  #cancelWanted = false;
  #flowStarted = false;
  #stagedVersion = null;
  /** A transient line (reconnecting, device lost) shown over the phase's own text. */
  #note = "";
  #deviceLost = false;

  constructor() {
    super();
    const root = this.attachShadow({ mode: "open" });
    root.innerHTML = TEMPLATE;
    this.#ui = Object.fromEntries([...root.querySelectorAll("[data-id]")].map((el) => [el.dataset.id, el]));
    this.#ui.activate.addEventListener("click", () => this.run());
    this.#ui.apply.addEventListener("click", () => this.apply());
    this.#ui.cancel.addEventListener("click", () => this.cancel());
    this.#ui["pick-again"].addEventListener("click", () => this.#pickAgain());
  }

  connectedCallback() {
    this.#checkEnvironment();
    this.#render();
  }

  attributeChangedCallback() {
    if (this.isConnected) this.#checkEnvironment();
  }

  /** A frozen snapshot: phase, device, version, progress, error, brokerUrl. */
  get state() {
    const { progress, error } = this.#state;
    return Object.freeze({
      ...this.#state,
      progress: progress && Object.freeze({ ...progress }),
      error: error && Object.freeze({ ...error }),
      brokerUrl: this.getAttribute("broker-url"),
    });
  }

  /** The wasm `Updater` of the connected device, or null. */
  get updater() {
    return this.#updater;
  }

  /** Connects if needed, then installs the newest image (stages it without `auto`). */
  run() {
    return this.#once(() => this.#install(this.hasAttribute("auto")));
  }

  /** Connects if needed, then sends the newest image and keeps it staged for apply(). */
  stage() {
    return this.#once(() => this.#install(false));
  }

  /** Switches the device to the staged image. */
  apply() {
    return this.#once(() => {
      if (!this.#updater) throw elementError("wrong-state", "nothing is staged on a device yet: stage an update first");
      this.#begin("applying");
      // The staged flow is the updater's already: a cancel() goes straight to it.
      this.#flowStarted = true;
      return this.#updater.apply();
    });
  }

  /** Stops the update; the device keeps its firmware. */
  cancel() {
    if (!this.#pending) return Promise.resolve(this.state);
    if (this.#flowStarted) this.#updater.cancel();
    else this.#cancelWanted = true;
    return this.#pending;
  }

  /** Runs `body` (which resolves with the updater's result) unless a call is in flight:
   * then that call's promise is the answer. */
  #once(body) {
    if (this.#pending) return this.#pending;
    const settle = (show) => {
      // Idle again before the final state goes out, so a state-changed listener may call
      // apply() or run() at once.
      this.#pending = null;
      this.#cancelWanted = false;
      this.#flowStarted = false;
      this.#deviceLost = false;
      show();
      return this.state;
    };
    this.#pending = (async () => body())().then(
      (result) => settle(() => this.#finish(result)),
      (e) => settle(() => this.#fail(e)),
    );
    return this.#pending;
  }

  async #install(autoApply) {
    const device = this.#wantedDevice();
    this.#begin(this.#updaterFor === device.key ? "checking" : "connecting");
    const manifest = this.getAttribute("manifest");
    if (!manifest) throw elementError("invalid-attribute", "the updater has no manifest attribute (the URL of its list of updates)");
    const module = await loadOtaweb();
    const updater = await this.#connect(module, device);
    if (this.#cancelWanted) throw elementError("cancelled", "the update was cancelled before it started");
    this.#set({ phase: "checking" });
    const policy = { trustedKeys: await this.#trustedKeys() };
    if (this.hasAttribute("danger-allow-http")) policy.dangerAllowHttp = true;
    const options = { policy, autoApply };
    // A DFU device cannot report its version: without one every run installs the newest.
    // What this element installed on it (or found it runs) outdates what the page said.
    const current = (device.flow === "dfu" && this.#state.version) || this.getAttribute("current-version");
    if (current) options.currentVersion = current;
    return updater.run(manifest, options);
  }

  /** The device the attributes name now: its flow, demo or not, and a key for both. */
  #wantedDevice() {
    const flow = this.getAttribute("flow") ?? "gadget";
    if (flow !== "gadget" && flow !== "dfu") {
      throw elementError("invalid-attribute", `flow="${flow}" is not a flow this updater knows: use "gadget" or "dfu"`);
    }
    const demo = this.hasAttribute("demo");
    return { flow, demo, key: `${flow} ${demo ? "demo" : "bluetooth"}` };
  }

  async #connect(module, { flow, demo, key }) {
    if (this.#updater && this.#updaterFor === key) return this.#updater;
    this.#updater?.close();
    this.#updater = null;
    this.#updaterFor = null;
    this.#stagedVersion = null;
    this.#set({ device: null, version: null });
    const options = demo ? { bluetooth: await this.#demoRadio(flow) } : {};
    const updater = flow === "dfu" ? await module.Updater.connectDfu(options) : await module.Updater.connectGadget(options);
    this.#listen(updater);
    this.#updater = updater;
    this.#updaterFor = key;
    this.#set({ device: updater.deviceName ?? null });
    return updater;
  }

  async #demoRadio(flow) {
    if (this.#demo?.flow !== flow) {
      const kit = await loadDemoKit();
      const bluetooth =
        flow === "dfu"
          ? kit.createDemoBluetooth(() => new kit.DemoDfuDevice(), { profile: "sifli" })
          : kit.createDemoBluetooth(() => new kit.DemoGadget(undefined, undefined, "otaweb demo gadget"));
      this.#demo = { flow, bluetooth };
    }
    return this.#demo.bluetooth;
  }

  async #trustedKeys() {
    const pem = this.getAttribute("trusted-key");
    if (pem) return [pem];
    const url = this.getAttribute("trusted-key-url");
    // No key: the updater's policy refuses to install anything, with its own error.
    if (!url) return [];
    const unavailable = (why) => elementError("trusted-key-unavailable", `the trusted key at ${url} could not be loaded: ${why}`);
    let response;
    try {
      response = await fetch(new URL(url, document.baseURI), { mode: "same-origin", credentials: "same-origin" });
    } catch (e) {
      throw unavailable(e?.message ?? e);
    }
    if (!response.ok) throw unavailable(`HTTP ${response.status}`);
    return [await response.text()];
  }

  #listen(updater) {
    const on = (type, f) => updater.addEventListener(type, (e) => f(e.detail ?? {}));
    on("stage", ({ stage }) => {
      this.#flowStarted = true;
      if (this.#cancelWanted) {
        this.#cancelWanted = false;
        updater.cancel();
        return;
      }
      if (this.#state.phase !== "applying" || STAGE_PHASES[stage]) {
        this.#set({ phase: STAGE_PHASES[stage] ?? "checking" });
      }
    });
    on("version", ({ current }) => this.#set({ version: String(current) }));
    on("progress", ({ confirmed, sent, total, bytesPerSecond, secondsLeft }) => {
      const phase = this.#state.phase === "applying" ? "applying" : "transferring";
      this.#set({ phase, progress: { confirmed, sent, total, bytesPerSecond, secondsLeft: secondsLeft ?? null } });
    });
    on("reconnecting", ({ attempt }) => {
      // While the person is asked to pick the device again, that instruction stays in view.
      if (!this.#deviceLost) this.#say(`The connection dropped; reconnecting (attempt ${attempt})…`);
    });
    on("device-lost", () => {
      this.#deviceLost = true;
      this.#say("The device does not answer under its old name. Press “Pick the device again” and choose it in the list.");
    });
    on("rebooting", () => this.#say("The device is restarting into its updater; reconnecting…"));
    on("connected", () => {
      this.#deviceLost = false;
      this.#say("");
    });
  }

  #pickAgain() {
    this.#updater?.pickDevice().catch((e) => this.#say(HINTS[e?.code] ?? e?.message ?? String(e)));
  }

  /** A new call starts: no error, no progress from the last one. */
  #begin(phase) {
    this.#set({ phase, error: null, progress: phase === "applying" ? this.#state.progress : null });
  }

  #finish(result) {
    const text = (v) => (v === undefined || v === null ? this.#state.version : String(v));
    if (result.outcome === "staged") {
      this.#stagedVersion = result.version === undefined ? null : String(result.version);
      this.#set({ phase: "staged" });
    } else if (result.outcome === "up-to-date") {
      this.#set({ phase: "up-to-date", version: text(result.current) });
    } else {
      this.#stagedVersion = null;
      this.#set({ phase: "done", version: text(result.version) });
    }
  }

  #fail(e) {
    const code = e?.code ?? "internal";
    const error = { code, message: e?.message ?? String(e), hint: HINTS[code] ?? FALLBACK_HINT };
    const phase = code === "bluetooth-unavailable" ? "unsupported" : code === "no-device" ? "not-allowed" : "error";
    this.#set({ phase, error });
  }

  /** Before any click: a page that can never reach a device says so instead of offering one. */
  #checkEnvironment() {
    if (this.#pending) return;
    const { phase, error } = this.#state;
    const fromEnvironment = error?.code === "insecure-context" || error?.code === "bluetooth-unavailable";
    if (this.hasAttribute("demo")) {
      if (fromEnvironment) this.#set({ phase: "idle", error: null });
    } else if (!window.isSecureContext) {
      this.#set({
        phase: "not-allowed",
        error: { code: "insecure-context", message: "Bluetooth works only on pages served over HTTPS", hint: HINTS["insecure-context"] },
      });
    } else if (!("bluetooth" in navigator)) {
      this.#set({
        phase: "unsupported",
        error: { code: "bluetooth-unavailable", message: "this browser has no Web Bluetooth", hint: HINTS["bluetooth-unavailable"] },
      });
    } else if (fromEnvironment && phase !== "idle") {
      this.#set({ phase: "idle", error: null });
    }
  }

  #set(patch) {
    const before = this.#state;
    if (Object.entries(patch).every(([key, value]) => before[key] === value)) return;
    this.#state = { ...before, ...patch };
    if (patch.phase !== undefined && patch.phase !== before.phase) this.#note = "";
    this.#render();
    this.dispatchEvent(new CustomEvent("state-changed", { detail: this.state, bubbles: true, composed: true }));
  }

  #say(note) {
    this.#note = note;
    this.#render();
  }

  #statusText() {
    const { phase, version, error } = this.#state;
    switch (phase) {
      case "connecting":
        return this.hasAttribute("demo") ? "Connecting to the demo device…" : "Choose your device in the browser's list…";
      case "checking":
        return "Checking for an update…";
      case "transferring":
        return "Sending the update to the device…";
      case "staged":
        return `The update${this.#stagedVersion ? ` (version ${this.#stagedVersion})` : ""} is on the device. Press “Apply the update” to switch to it.`;
      case "applying":
        return "The device is installing the update and restarting…";
      case "done":
        return version ? `Done: the device now runs version ${version}.` : "Done: the device installed the update.";
      case "up-to-date":
        return version ? `The device already runs the newest version (${version}).` : "The device already runs the newest version.";
      case "error":
        // otaweb's cancel message speaks of its flow; the person only needs to know it stopped.
        return error.code === "cancelled" ? "The update was cancelled." : `The update stopped: ${error.message}.`;
      default:
        return "";
    }
  }

  #render() {
    const ui = this.#ui;
    const { phase, progress, error } = this.#state;
    const focused = this.shadowRoot.activeElement;
    const insecure = error?.code === "insecure-context";
    ui.activate.hidden = phase === "staged" || phase === "unsupported" || insecure;
    // Busy, it stays in place and focusable (a click just returns the running call), so a
    // keyboard user's focus is not thrown out of the element mid-update.
    ui.activate.setAttribute("aria-disabled", String(BUSY.has(phase)));
    ui.apply.hidden = phase !== "staged";
    ui.cancel.hidden = !(phase === "checking" || phase === "transferring");
    ui["pick-again"].hidden = !this.#deviceLost;
    ui.unsupported.hidden = phase !== "unsupported";
    ui["not-allowed"].hidden = phase !== "not-allowed";
    const why = insecure ? "Bluetooth works only on secure (https://) pages." : "No device was chosen, or Bluetooth was not allowed.";
    ui["not-allowed-text"].textContent = phase === "not-allowed" ? `${why} ${error.hint}` : "";
    ui.status.textContent = this.#note || this.#statusText();
    const success = phase === "done" || phase === "up-to-date" || phase === "staged";
    ui.status.dataset.kind = phase === "error" ? "error" : success ? "success" : "";
    const showError = phase === "error";
    ui.hint.hidden = !showError;
    ui.hint.textContent = showError ? error.hint : "";
    // A refused chooser says why only in the browser's words: "adapter not available" and
    // "user cancelled" need different help, so the details stay visible beside the slot.
    const refused = phase === "not-allowed" && !insecure;
    ui.code.hidden = !(showError || refused);
    ui.code.textContent = showError ? `Error code: ${error.code}` : refused ? `Details: ${error.message} (${error.code})` : "";
    ui["progress-box"].hidden = !progress || phase === "error";
    if (progress) {
      ui.progress.max = progress.total || 1;
      ui.progress.value = progress.sent;
      const percent = progress.total ? Math.floor((100 * progress.sent) / progress.total) : 0;
      const rate = progress.bytesPerSecond > 0 ? ` · ${kib(progress.bytesPerSecond)}/s` : "";
      const left = progress.secondsLeft !== null && progress.sent < progress.total ? ` · ${timeLeft(progress.secondsLeft)}` : "";
      ui["progress-text"].textContent = `${percent} % · ${kib(progress.sent)} of ${kib(progress.total)}${rate}${left}`;
    }
    // A keyboard user whose button just disappeared lands on the one that replaced it.
    if (focused?.hidden) [ui.apply, ui.cancel, ui["pick-again"], ui.activate].find((b) => !b.hidden)?.focus();
  }
}

if (!customElements.get("ota-updater")) customElements.define("ota-updater", OtaUpdater);
