// A `navigator.bluetooth` stand-in in front of a demo device (the companion firmware
// compiled to wasm: the Alexa gadget or the SiFli DFU device). It plays only the radio: the
// updater's real Web Bluetooth code calls requestDevice → gatt.connect → getPrimaryService →
// getCharacteristic → startNotifications → writeValueWithoutResponse exactly as it would on
// a real device, and every byte goes through the real firmware code. No protocol logic
// lives here. The device object (`makeDevice()`) offers connect(), disconnect(),
// write(bytes), takeNotifications(), takeRestart(), restart(), a `name`, and optionally
// tick(nowMs) for its own timers, which the stand-in calls every `tickMs`.
//
// The radio model: values written without response wait in an OS queue of `txQueue`
// entries (a write resolves once its value is queued, as Chrome's does); every
// `intervalMs` a connection event carries up to `packetsPerEvent` of them to the gadget,
// and the gadget's answers come back as notifications at the same event. Like a real
// browser, the stand-in allows one GATT operation at a time and rejects an overlapping one
// with "GATT operation already in progress." Faults for tests: `dropRate` loses written
// values, `disconnectAfterWrites` drops the link after the n-th write, and
// `newIdentityOnReboot` makes the rebooted firmware a different BluetoothDevice (as an OTA
// manager with its own address is): the old one never connects again, and only a new
// requestDevice() finds it.

/** The GATT layout of each demo device: service, write and notify characteristics. */
export const PROFILES = {
  gadget: {
    service: "0000fe03-0000-1000-8000-00805f9b34fb",
    write: "f04eb177-3005-43a7-ac61-a390ddf83076",
    notify: "2beea05b-1879-4bb4-8a2f-72641f82420b",
  },
  // SiFli serial transport: one data characteristic both ways.
  sifli: {
    service: "00000000-0000-0000-6473-5f696c666973",
    write: "00000000-0000-0200-6473-5f696c666973",
    notify: "00000000-0000-0200-6473-5f696c666973",
    namePrefix: "SIFLI_APP",
  },
};

const DEFAULTS = {
  intervalMs: 15,
  packetsPerEvent: 4,
  txQueue: 16,
  rebootMs: 400,
  dropRate: 0,
  disconnectAfterWrites: [],
  seed: 1,
  profile: PROFILES.gadget,
  tickMs: 50,
  newIdentityOnReboot: false,
};

/** A 16- or 32-bit alias or a UUID string, as the full lowercase UUID. */
function canonical(uuid) {
  if (typeof uuid === "number") {
    return `${uuid.toString(16).padStart(8, "0")}-0000-1000-8000-00805f9b34fb`;
  }
  return String(uuid).toLowerCase();
}

function domError(name, message) {
  return new DOMException(message, name);
}

class DemoCharacteristic extends EventTarget {
  constructor(service, uuid, properties) {
    super();
    this.service = service;
    this.uuid = uuid;
    this.properties = properties;
    this.value = null;
  }

  writeValueWithoutResponse(data) {
    return this.service.device.radio.write(data);
  }

  writeValue(data) {
    return this.writeValueWithoutResponse(data);
  }

  /** Resolves once the value reached the device, as an ATT write request does. */
  writeValueWithResponse(data) {
    return this.service.device.radio.write(data, { confirmed: true });
  }

  startNotifications() {
    return this.service.device.radio.startNotifications(this);
  }

  stopNotifications() {
    return this.service.device.radio.operation(() => {
      this.service.device.radio.notifying = null;
      return this;
    });
  }
}

class DemoService {
  constructor(device, profile) {
    this.device = device;
    this.uuid = profile.service;
    this.isPrimary = true;
    this.tx = new DemoCharacteristic(this, profile.write, { write: true, writeWithoutResponse: true, notify: profile.write === profile.notify });
    this.rx = profile.notify === profile.write ? this.tx : new DemoCharacteristic(this, profile.notify, { notify: true, read: true });
  }

  getCharacteristic(uuid) {
    return this.device.radio.operation(() => {
      const want = canonical(uuid);
      const found = [this.tx, this.rx].find((c) => c.uuid === want);
      if (!found) throw domError("NotFoundError", `No Characteristics matching UUID ${want} found in Service.`);
      return found;
    });
  }
}

class DemoGattServer {
  constructor(device) {
    this.device = device;
    this.connected = false;
  }

  connect() {
    return this.device.radio.connect().then(() => this);
  }

  disconnect() {
    this.device.radio.drop();
  }

  getPrimaryService(uuid) {
    return this.device.radio.operation(() => {
      if (canonical(uuid) !== this.device.service.uuid) {
        throw domError("NotFoundError", `No Services matching UUID ${canonical(uuid)} found in Device.`);
      }
      return this.device.service;
    });
  }
}

class DemoDevice extends EventTarget {
  constructor(gadget, options) {
    super();
    this.id = `otaweb-demo-${options.profile === PROFILES.sifli ? "sifli" : "gadget"}`;
    this.gatt = new DemoGattServer(this);
    this.service = new DemoService(this, options.profile);
    this.radio = new Radio(this, gadget, options);
  }

  /** The name the firmware advertises now (an OTA manager renames itself). */
  get name() {
    return this.radio.gadget.name;
  }
}

/** The link between the central's characteristics and the gadget. */
class Radio {
  constructor(device, gadget, options) {
    this.device = device;
    this.gadget = gadget;
    this.options = options;
    this.queue = [];
    this.notifying = null;
    this.busy = false;
    this.rebootingUntil = 0;
    this.timer = null;
    this.rng = options.seed >>> 0 || 1;
    this.stats = { writes: 0, writtenBytes: 0, notifications: 0, dropped: 0, overlapped: 0, disconnects: 0, restarts: 0 };
    if (typeof gadget.tick === "function") {
      // The firmware's own timers (a DFU device's 30 s window back to its user bin).
      this.ticker = setInterval(() => this.tick(), options.tickMs);
    }
  }

  tick() {
    this.gadget.tick(performance.now());
    this.notify();
    if (this.gadget.takeRestart()) this.restart();
  }

  /** Runs `body` as one GATT operation, refusing to overlap another (as Chrome does). */
  operation(body) {
    if (!this.device.gatt.connected) {
      return Promise.reject(domError("NetworkError", "GATT Server is disconnected. Cannot perform GATT operations."));
    }
    if (this.busy) {
      this.stats.overlapped += 1;
      return Promise.reject(domError("NetworkError", "GATT operation already in progress."));
    }
    this.busy = true;
    return new Promise((resolve, reject) => {
      queueMicrotask(() => {
        this.busy = false;
        try {
          resolve(body());
        } catch (e) {
          reject(e);
        }
      });
    });
  }

  connect() {
    return new Promise((resolve, reject) => {
      setTimeout(() => {
        if (this.gone) {
          reject(domError("NetworkError", "Connection failed: the device is no longer advertising under this identity."));
          return;
        }
        if (performance.now() < this.rebootingUntil) {
          reject(domError("NetworkError", "Connection failed for unknown reason."));
          return;
        }
        this.device.gatt.connected = true;
        resolve();
      }, 5);
    });
  }

  startNotifications(characteristic) {
    return this.operation(() => {
      this.notifying = characteristic;
      // Enabling the CCCD is what makes the gadget announce itself (its PV packet).
      this.gadget.connect();
      this.schedule();
      return characteristic;
    });
  }

  write(data, { confirmed = false } = {}) {
    const bytes = data instanceof Uint8Array ? data.slice() : new Uint8Array(data.buffer ?? data);
    if (bytes.length > 512) {
      return Promise.reject(domError("InvalidModificationError", "Value can't exceed 512 bytes."));
    }
    return this.operation(() => bytes).then(
      (value) =>
        new Promise((resolve, reject) => {
          this.stats.writes += 1;
          this.stats.writtenBytes += value.length;
          // A confirmed write holds its promise until a connection event delivers it.
          this.queue.push({ value, resolve, reject, released: false, confirmed });
          this.release();
          this.schedule();
          if (this.options.disconnectAfterWrites.includes(this.stats.writes)) {
            queueMicrotask(() => this.drop());
          }
        }),
    );
  }

  /** Resolves the writes that fit the OS queue. */
  release() {
    for (let i = 0; i < Math.min(this.queue.length, this.options.txQueue); i++) {
      const entry = this.queue[i];
      if (!entry.released && !entry.confirmed) {
        entry.released = true;
        entry.resolve();
      }
    }
  }

  schedule() {
    if (this.timer !== null || !this.device.gatt.connected) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.event();
    }, this.options.intervalMs);
  }

  /** One connection event: values to the gadget, its answers back. */
  event() {
    if (!this.device.gatt.connected) return;
    const carried = this.queue.splice(0, this.options.packetsPerEvent);
    for (const entry of carried) {
      if (!entry.released) {
        entry.released = true;
        entry.resolve();
      }
      if (this.options.dropRate > 0 && this.random() < this.options.dropRate) {
        this.stats.dropped += 1;
        continue;
      }
      this.gadget.write(entry.value);
    }
    this.release();
    this.notify();
    if (this.gadget.takeRestart()) {
      this.restart();
      return;
    }
    if (this.queue.length > 0) this.schedule();
  }

  notify() {
    for (const value of this.gadget.takeNotifications()) {
      if (!this.notifying) continue;
      this.stats.notifications += 1;
      this.notifying.value = new DataView(value.buffer, value.byteOffset, value.byteLength);
      this.notifying.dispatchEvent(new Event("characteristicvaluechanged"));
    }
  }

  /** The gadget applied an image: it reboots, dropping the link, and comes back later. */
  restart() {
    this.stats.restarts += 1;
    this.rebootingUntil = performance.now() + this.options.rebootMs;
    this.drop();
    this.gadget.restart();
    if (this.options.newIdentityOnReboot) {
      this.gone = true;
      clearInterval(this.ticker);
      this.options.rehome(this.gadget, this.stats);
    }
  }

  /** The link goes down: queued values are lost, the central hears gattserverdisconnected. */
  drop() {
    if (!this.device.gatt.connected) return;
    this.stats.disconnects += 1;
    this.device.gatt.connected = false;
    this.notifying = null;
    this.busy = false;
    clearTimeout(this.timer);
    this.timer = null;
    for (const entry of this.queue.splice(0)) {
      if (!entry.released) entry.reject(domError("NetworkError", "GATT Server is disconnected."));
    }
    this.gadget.disconnect();
    this.device.dispatchEvent(new Event("gattserverdisconnected"));
  }

  random() {
    // xorshift32: a seeded, replayable fault pattern.
    let x = this.rng;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.rng = x >>> 0;
    return this.rng / 2 ** 32;
  }
}

/**
 * A `navigator.bluetooth` stand-in offering one demo device made by `makeGadget()` (a
 * `DemoGadget`). `options` tunes the radio (see the top of this file).
 */
export function createDemoBluetooth(makeGadget, options = {}) {
  const settings = { ...DEFAULTS, ...options };
  // A profile may be named ("gadget", "sifli") or given whole.
  if (typeof settings.profile === "string") settings.profile = PROFILES[settings.profile];
  let device = null;
  // The same firmware behind a new BluetoothDevice, keeping the radio's statistics.
  settings.rehome = (gadget, stats) => {
    device = new DemoDevice(gadget, settings);
    device.radio.stats = stats;
    device.radio.rebootingUntil = performance.now() + settings.rebootMs;
  };
  return {
    getAvailability: () => Promise.resolve(true),
    get device() {
      return device;
    },
    requestDevice(request = {}) {
      const filters = request.filters ?? [];
      const wanted = filters.flatMap((f) => f.services ?? []).map(canonical);
      const prefix = settings.profile.namePrefix;
      const byName = prefix !== undefined && filters.some((f) => f.namePrefix === prefix);
      if (!request.acceptAllDevices && !wanted.includes(settings.profile.service) && !byName) {
        return Promise.reject(domError("NotFoundError", "User cancelled the requestDevice() chooser."));
      }
      device ??= new DemoDevice(makeGadget(), settings);
      return Promise.resolve(device);
    },
  };
}

/** Installs the stand-in as `navigator.bluetooth` and returns it. */
export function installDemoBluetooth(makeGadget, options = {}) {
  const bluetooth = createDemoBluetooth(makeGadget, options);
  Object.defineProperty(navigator, "bluetooth", { value: bluetooth, configurable: true });
  return bluetooth;
}
