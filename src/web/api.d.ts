// The option, result, event and error types of otaweb's JavaScript API. The class
// declarations that follow name them; every shape mirrors what the wasm reads or builds,
// and otaweb's tests compile both typical use and the events the API really dispatched
// against this file. Versions are always strings.

/** The layer an error comes from, saying whose move it is. */
export type OtawebErrorKind =
  | "peer-malformed"
  | "peer-refused"
  | "link-lost"
  | "verification-failed"
  | "misuse";

/**
 * Codes an `OtawebError` carries. The list names the common ones; a device's own refusal
 * names (Alexa `NOT_STAGED`, SiFli `DFU_ERR_…`) and future codes are strings too.
 */
export type OtawebErrorCode =
  | "cancelled"
  | "timed-out"
  | "retries-exhausted"
  | "disconnected"
  | "wrong-state"
  | "unsupported"
  | "invalid-argument"
  | "manifest-invalid"
  | "no-image-for-device"
  | "size-mismatch"
  | "digest-mismatch"
  | "md5-mismatch"
  | "signature-invalid"
  | "signature-missing"
  | "policy-invalid"
  | "insecure-url"
  | "fetch-failed"
  | "no-bluetooth"
  | (string & {});

/** Every failure of the API: a thrown or rejected `Error` named `"OtawebError"`. */
export interface OtawebError extends Error {
  readonly name: "OtawebError";
  /** Specific and stable, e.g. `"digest-mismatch"`. */
  readonly code: OtawebErrorCode;
  /** The layer. */
  readonly kind: OtawebErrorKind;
  /** Whether the same call can succeed again unchanged (a dropped link, a busy device). */
  readonly retryable: boolean;
  /** A device's refusal: its numeric code on the wire. */
  readonly vendorCode?: number;
  /** What the browser said, when a browser API (Web Bluetooth, fetch) failed. */
  readonly browserError?: string;
  /** `watch-error` only: when the watch tries again. */
  readonly retryInMs?: number;
}

/** The flows a manifest entry can name. */
export type FlowName = "gadget" | "dfu" | "enos";

/** One image of an otaweb manifest (format 1), as `parseManifest` returns it. */
export interface ManifestEntry {
  name: string;
  flow: FlowName;
  version: string;
  /** Relative to the manifest's own URL, or absolute. */
  url: string;
  compression?: "zlib";
  /** Bytes the device receives (after inflating). */
  size: number;
  /** Lowercase hex. */
  sha256: string;
  md5?: string;
  /** Base64 of the raw ECDSA P-256 r‖s over the image's SHA-256. */
  signature?: string;
}

/** What `verifyImage` and `VerifiedImage.describe()` say of a gadget image. */
export interface ImageDescription {
  name: string;
  flow: FlowName;
  version: string;
  size: number;
  sha256: string;
  signed: boolean;
}

/** What `VerifiedImage.describe()` says of a SiFli DFU package. */
export interface DfuPackageDescription {
  flow: "dfu";
  size: number;
  /** How many transfer files. */
  images: number;
}

/** One transfer file of a DFU package for `VerifiedImage.dfuPackage`. */
export interface DfuFile {
  /** The SiFli image id, 0–255. */
  imgId: number;
  bytes: Uint8Array;
}

/** The `navigator.bluetooth` surface the updater uses, so a stand-in can replace it. */
export interface BluetoothLike {
  requestDevice(options: unknown): Promise<unknown>;
}

/** `Updater.connectGadget` / `connectDfu` options. */
export interface ConnectOptions {
  /** Replaces `navigator.bluetooth` (e.g. the demo device's stand-in). */
  bluetooth?: BluetoothLike;
  /** Narrows the browser's device chooser to names starting with this. */
  namePrefix?: string;
  /**
   * Depth in values of an OS write queue that drops what overflows it (0: it holds writes
   * back). Default 20 on macOS and Windows through `navigator.bluetooth`, else 0.
   */
  osQueueDepth?: number;
}

/** `updater.update(image, options)` options. */
export interface UpdateOptions {
  /** Gadget: only read the device's version (outcome `update-available` or `up-to-date`). */
  checkOnly?: boolean;
  /** Gadget: send the image and stop before ApplyFirmware; `apply()` switches later. */
  stageOnly?: boolean;
  /** Gadget: only switch to the copy the device already holds (`NOT_STAGED` if none). */
  applyStaged?: boolean;
  /** Gadget: the first UpdateComponentSegment's bytes, 1 to 16,777,216 (16 MiB). */
  segmentSize?: number;
  /** Gadget: the largest segment they grow to by the measured rate (default 1 MiB). */
  maxSegmentSize?: number;
  /** Gadget: OTA bytes kept unacknowledged (default: sized from `osQueueDepth`, or none). */
  otaWindow?: number;
  /** Gadget: how often a segment is tried before the update fails. */
  maxAttempts?: number;
  /** DFU: start an interrupted update over instead of resuming it. */
  restart?: boolean;
  /** DFU: the largest GATT write (default 244, for ATT MTU 247). */
  valueSize?: number;
}

/** How an install ended, as `update`, `stage`, `apply` and `run` resolve. */
export type UpdateResult =
  | { outcome: "done"; version?: string; current?: string }
  | { outcome: "staged"; version?: string; confirmed?: number }
  | { outcome: "up-to-date"; current?: string; offered?: string; version?: string }
  | { outcome: "update-available"; current: string; offered: string };

/** The rules of `run` and `watch`; the defaults install nothing until keys are named. */
export interface UpdatePolicy {
  /** Only images a trusted key signed (default `true`). */
  requireSignature?: boolean;
  /** PEM ECDSA P-256 public keys (default none). */
  trustedKeys?: string[];
  /** Offer images that are not newer than what the device runs (default `false`). */
  allowDowngrade?: boolean;
  /** Fetch over plain `http://` from other computers (default `false`). */
  dangerAllowHttp?: boolean;
}

/** `updater.run(source, options)` options. */
export interface RunOptions {
  policy?: UpdatePolicy;
  /** Install at once (default `true`), or stage and wait for `apply()`. */
  autoApply?: boolean;
  /** What the device runs, when it cannot say itself (DFU). */
  currentVersion?: string;
  /** Once aborted, `run` ends `cancelled` before the device hears a byte. */
  signal?: AbortSignal;
}

/** `updater.watch(options)` options: daemon mode. */
export interface WatchOptions extends RunOptions {
  /** The manifest URL checked on every turn. */
  source: string;
  /** Minutes between checks (default 60); failures back off from 30 s to 15 min. */
  everyMinutes?: number;
}

/** The updater's event types and their `event.detail`. */
export interface UpdaterEventMap {
  stage: { stage: "handshake" | "discover" | "transfer" | "apply" | "restart" | "confirm" | "init" | "reboot" | "install" };
  version: { current: string; offered: string };
  progress: {
    /** Bytes the device confirmed. */
    confirmed: number;
    /** Bytes written to the link, at least `confirmed`; back to it when a segment is resent. */
    sent: number;
    total: number;
    bytesPerSecond: number;
    /** `null` until a rate is known. */
    secondsLeft: number | null;
  };
  reconnecting: { attempt: number; delayMs: number };
  "device-lost": Record<string, never>;
  connected: Record<string, never>;
  disconnected: Record<string, never>;
  rebooting: Record<string, never>;
  resuming: { image: number; packets: number };
  staged: { confirmed: number };
  done: { version?: string };
  "up-to-date": { current: string; offered: string };
  "update-available": { current: string; offered: string };
  cancelled: Record<string, never>;
  error: OtawebError;
  "watch-check": { source: string };
  "watch-result": UpdateResult;
  "watch-error": OtawebError;
}

/** An EnOS firmware offer, as a push or a `getversion` reply names it. */
export interface EnosFirmware {
  version: string;
  fileUrl: string;
  fileSize: number;
  signMethod: string;
  sign: string;
}

/** Presigned MQTT credentials from a portal backend, so the device secret stays there. */
export interface EnosCredentials {
  clientId: string;
  username: string;
  password: string;
}

/** `EnosAgent.connect(url, updater, options)` options. */
export interface EnosAgentOptions {
  productKey: string;
  deviceKey: string;
  /** What the device runs. */
  version: string;
  /** Signs the CONNECT here; or give `credentials`. */
  deviceSecret?: string;
  signMethod?: "sha256" | "sha1";
  clientId?: string;
  credentials?: EnosCredentials;
  /** A push waits for `accept()` (`"ask"`, default) or installs at once (`"auto"`). */
  accept?: "ask" | "auto";
  /** A `getversion` reply installs the highest (default) or waits for `choose(i)`. */
  pick?: "highest" | "ask";
  /** The EnOS HTTP broker's base URL, for `enos-connect://` files. */
  fileService?: string;
  /** A presigned file session. */
  fileSessionId?: string;
  /** Report progress every this many percent. */
  progressPercent?: number;
  /** And at most this often. */
  progressIntervalMs?: number;
}

/** The EnOS agent's event types and their `event.detail`. */
export interface EnosAgentEventMap {
  connected: { version: string };
  "upgrade-offered": { firmware: EnosFirmware };
  "versions-offered": { firmwares: EnosFirmware[] };
  "no-update": Record<string, never>;
  download: { firmware: EnosFirmware };
  "download-progress": { received: number; total: number };
  "download-interrupted": { received: number; attempt: number; delayMs: number };
  install: { version: string; size: number };
  /** A progress step as the cloud got it (negative: the failure steps). */
  report: { step: number; acknowledged: boolean; error?: OtawebError };
  "push-ignored": { firmware: EnosFirmware };
  malformed: { topic: string; error: OtawebError };
  message: MqttMessage;
  done: { version: string };
  failed: OtawebError;
  "link-lost": OtawebError;
  error: OtawebError;
  closed: Record<string, never>;
}

/** `MqttClient.connect(url, options)` options. */
export interface MqttOptions {
  clientId: string;
  username?: string;
  password?: string;
  /** Seconds, default 60. */
  keepAlive?: number;
}

/** A message the broker delivered. */
export interface MqttMessage {
  topic: string;
  payload: Uint8Array;
  /** The payload as text, when it is UTF-8. */
  text?: string;
}

/** The MQTT client's event types and their `event.detail`. */
export interface MqttEventMap {
  connected: { sessionPresent: boolean };
  message: MqttMessage;
  "link-lost": OtawebError;
  error: OtawebError;
}

/** A listener for event `K` of an event map `M`. */
export type OtawebListener<M, K extends keyof M> = (event: CustomEvent<M[K]>) => void;

export interface Updater {
  /** Adds a listener for one of the updater's events. */
  addEventListener<K extends keyof UpdaterEventMap>(kind: K, listener: OtawebListener<UpdaterEventMap, K>): void;
  /** Removes a listener added with `addEventListener`. */
  removeEventListener<K extends keyof UpdaterEventMap>(kind: K, listener: OtawebListener<UpdaterEventMap, K>): void;
}

export interface EnosAgent {
  /** Adds a listener for one of the agent's events. */
  addEventListener<K extends keyof EnosAgentEventMap>(kind: K, listener: OtawebListener<EnosAgentEventMap, K>): void;
  /** Removes a listener added with `addEventListener`. */
  removeEventListener<K extends keyof EnosAgentEventMap>(kind: K, listener: OtawebListener<EnosAgentEventMap, K>): void;
}

export interface MqttClient {
  /** Adds a listener for one of the client's events. */
  addEventListener<K extends keyof MqttEventMap>(kind: K, listener: OtawebListener<MqttEventMap, K>): void;
}
