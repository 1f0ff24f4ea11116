// Types for <ota-updater> (www/ota-updater.js). Hand-written: keep them in step with the
// element's header comment.

/** Where an update stands. */
export type OtaUpdaterPhase =
  | "idle"
  | "unsupported"
  | "not-allowed"
  | "connecting"
  | "checking"
  | "transferring"
  | "staged"
  | "applying"
  | "done"
  | "up-to-date"
  | "error";

/** Bytes the device confirmed and bytes written, as the updater's `progress` event reports them. */
export interface OtaUpdaterProgress {
  readonly confirmed: number;
  /** Bytes written to the link, at least `confirmed`: what the bar shows. */
  readonly sent: number;
  readonly total: number;
  readonly bytesPerSecond: number;
  /** `null` until the rate is known. */
  readonly secondsLeft: number | null;
}

/** Why the last call failed: otaweb's code and message, and what the person can do. */
export interface OtaUpdaterError {
  /**
   * An `OtawebError` code (`"signature-invalid"`, `"no-device"`, `"timed-out"`, …) or one of
   * the element's own: `"load-failed"`, `"insecure-context"`, `"trusted-key-unavailable"`,
   * `"invalid-attribute"`, `"wrong-state"`, `"cancelled"`.
   */
  readonly code: string;
  readonly message: string;
  /** Plain-language next step, always present. */
  readonly hint: string;
}

/** The element's state: `element.state` and the `state-changed` event's `detail`. */
export interface OtaUpdaterState {
  readonly phase: OtaUpdaterPhase;
  /** The device's advertised name, once connected. */
  readonly device: string | null;
  /** The firmware version the device runs, once known. */
  readonly version: string | null;
  /** The last transfer's progress; `null` before one started. */
  readonly progress: OtaUpdaterProgress | null;
  /** Set in the `"error"`, `"unsupported"` and `"not-allowed"` phases. */
  readonly error: OtaUpdaterError | null;
  /** The `broker-url` attribute (reserved for EnOS; the element does not connect to it). */
  readonly brokerUrl: string | null;
}

export type OtaUpdaterStateChangedEvent = CustomEvent<OtaUpdaterState>;

export interface OtaUpdaterEventMap extends HTMLElementEventMap {
  "state-changed": OtaUpdaterStateChangedEvent;
}

/** The content attributes `<ota-updater>` reads. Boolean ones count when present. */
export interface OtaUpdaterAttributes {
  /** URL of the otaweb manifest. */
  manifest: string;
  /** Default `"gadget"`. */
  flow?: "gadget" | "dfu";
  /** EnOS broker WebSocket URL; reserved, only reported in `state.brokerUrl`. */
  "broker-url"?: string;
  /**
   * Present: install at once. Absent: stage, then offer Apply (a SiFli DFU device cannot hold
   * a staged image: it always installs).
   */
  auto?: boolean | "";
  /** PEM text of the trusted ECDSA P-256 public key. */
  "trusted-key"?: string;
  /** Same-origin URL of that PEM file (used when `trusted-key` is absent). */
  "trusted-key-url"?: string;
  /** Present: the built-in demo device of `flow` instead of `navigator.bluetooth`. */
  demo?: boolean | "";
  /** Present: manifests and images over plain http:// too (development only). */
  "danger-allow-http"?: boolean | "";
  /**
   * What the device runs, for devices that cannot say (SiFli DFU); once the element installed
   * an image on that device (or found it up to date), it goes by that version instead.
   */
  "current-version"?: string;
}

/** The slot names `<ota-updater>` offers. */
export type OtaUpdaterSlot = "activate" | "unsupported" | "not-allowed";

/** The wasm `Updater` from pkg/otaweb.js. */
export type Updater = import("../pkg/otaweb.js").Updater;

export class OtaUpdater extends HTMLElement {
  /** A frozen snapshot; a new object after every change. */
  readonly state: OtaUpdaterState;
  /** The wasm updater of the connected device, or `null` before the first connection. */
  readonly updater: Updater | null;
  /**
   * Connects if needed (loading the wasm on first use), then installs the newest image the
   * manifest offers, or stages it when `auto` is absent. Resolves with the final state; never
   * rejects. While a call runs, returns that call's promise.
   */
  run(): Promise<OtaUpdaterState>;
  /**
   * As `run()`, but always stages: the device keeps its firmware until `apply()`. A SiFli DFU
   * device cannot stage, so there it installs as `run()` does.
   */
  stage(): Promise<OtaUpdaterState>;
  /** Switches the device to the staged image. */
  apply(): Promise<OtaUpdaterState>;
  /**
   * Stops the running call; resolves with its final state (`error.code` `"cancelled"`), or at
   * once with the current state when nothing runs.
   */
  cancel(): Promise<OtaUpdaterState>;

  addEventListener<K extends keyof OtaUpdaterEventMap>(
    type: K,
    listener: (this: OtaUpdater, ev: OtaUpdaterEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof OtaUpdaterEventMap>(
    type: K,
    listener: (this: OtaUpdater, ev: OtaUpdaterEventMap[K]) => unknown,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject, options?: boolean | EventListenerOptions): void;
}

declare global {
  interface HTMLElementTagNameMap {
    "ota-updater": OtaUpdater;
  }
  // `state-changed` bubbles and is composed, so a listener on any ancestor sees it.
  interface HTMLElementEventMap {
    "state-changed": OtaUpdaterStateChangedEvent;
  }
}
