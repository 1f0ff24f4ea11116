//! `Updater`: the JavaScript API that runs a flow over Web Bluetooth.
//!
//! Contract. The edge owns the link, the timer and the JavaScript callbacks; the flow
//! ([`GadgetUpdate`]) makes every decision. After each input (a notification, a deadline, a
//! finished write, the link going up or down, a call from JavaScript) the driver drains the
//! flow in the order [`crate::flow`] prescribes: packets to write (one GATT write in flight at
//! a time, awaited before the next), then events, then the one timer. Events reach
//! JavaScript as `CustomEvent`s on the updater (`addEventListener`) after the driver has
//! released its state, so a listener may call back into the updater.
//!
//! Events (`event.detail`):
//!
//! | type | detail |
//! |---|---|
//! | `stage` | `{stage}`: `"handshake"`, `"discover"`, `"transfer"`, `"apply"`, `"restart"`, `"confirm"` |
//! | `version` | `{current, offered}`: the device's firmware version, on every connection |
//! | `progress` | `{confirmed, sent, total, bytesPerSecond, secondsLeft}`: bytes the device confirmed and bytes written (the rate and time left follow these) |
//! | `reconnecting` | `{attempt, delayMs}`: the link dropped and the updater is reconnecting |
//! | `device-lost` | `{}`: reconnecting has failed for a while; offer `pickDevice()` on a click |
//! | `connected` / `disconnected` | `{}` |
//! | `staged`, `done`, `up-to-date`, `update-available`, `cancelled` | `{version}` / `{current, offered}` where it applies |
//! | `rebooting` / `resuming` | `{}` / `{image, packets}`: a DFU device reboots into its OTA manager / continues an interrupted update |
//! | `error` | the `OtawebError` that also rejects the pending promise |
//!
//! Reconnection is the edge's job (the flow only says it needs one): after a drop it calls
//! `gatt.connect()` again on the same device, first after 250 ms and then backing off to 4 s,
//! until the flow no longer wants the link (it finished, or its own deadline passed, or the
//! application cancelled). A write that fails while the link claims to be up is treated as a
//! dropped link: the flow then resumes at the first unconfirmed segment.

use alloc::rc::{Rc, Weak};
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::RefCell;
use core::time::Duration;

use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::spawn_local;
use web_sys::{Bluetooth, CustomEvent, CustomEventInit, EventTarget};

use crate::error::Misuse;
use crate::flow::dfu::{DfuOptions, DfuUpdate, OnOngoing};
use crate::flow::gadget::{GadgetOptions, GadgetUpdate};
use crate::time::Millis;
use crate::web::ble::{
    navigator_bluetooth, os_queue_depth, request_device, GattLink, GattProfile, DFU_PROFILE,
    GADGET_PROFILE,
};
use crate::web::clock::{now, sleep, Timeout};
use crate::web::options::{flag, text, value, whole};
use crate::web::running::{Note, Running};
use crate::web::{flow_error, misuse_error, set, throwable, Payload, VerifiedImage};

const RECONNECT_FIRST: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(4);
/// Failed reconnections (about 4 s) before the page is told to offer `pickDevice()`.
const PICK_AFTER_ATTEMPTS: u32 = 4;

/// The promise an `update()` or `apply()` call returned, settled by the flow's outcome.
struct Waiter {
    resolve: Function,
    reject: Function,
}

/// Transfer-rate bookkeeping for `progress` events.
#[derive(Clone, Copy)]
struct Rate {
    since: Millis,
    from: u64,
}

/// Which protocol the connected device speaks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gadget,
    Dfu,
}

struct Driver {
    kind: Kind,
    bluetooth: Bluetooth,
    profile: GattProfile,
    link: GattLink,
    events: EventTarget,
    flow: Option<Running>,
    waiter: Option<Waiter>,
    timer: Option<Timeout>,
    connected: bool,
    writing: bool,
    reconnecting: bool,
    closed: bool,
    rate: Option<Rate>,
    buf: Vec<u8>,
    /// Rust code that follows the flow (the EnOS agent), called with no borrow held.
    observer: Option<Observer>,
    /// The depth of a dropping OS write queue under the link, 0 if it holds writes back.
    os_queue: u16,
}

type Shared = Rc<RefCell<Driver>>;

/// Rust code following an updater's notes.
pub(crate) type Observer = Rc<dyn Fn(&Note)>;

/// What the driver hands to JavaScript once its state is released.
enum Out {
    Event(&'static str, Object),
    Resolve(Waiter, JsValue),
    Reject(Waiter, JsValue),
    Reconnect,
}

/// A firmware updater bound to one BLE device. See the module docs for its events.
#[wasm_bindgen]
pub struct Updater {
    shared: Shared,
}

#[wasm_bindgen]
impl Updater {
    /// Asks the user to pick an Alexa gadget (service 0xFE03) and connects to it.
    ///
    /// `options.bluetooth` replaces `navigator.bluetooth` (e.g. the demo device's stand-in);
    /// `options.namePrefix` narrows the chooser. `options.osQueueDepth` is the depth in
    /// values of an OS write queue that drops what overflows it, 0 for one that holds writes
    /// back; by default 20 on macOS and Windows through `navigator.bluetooth` (their stacks
    /// drop writes without response past about 20), else 0. Updates pace their writes by
    /// the device's acknowledgements to fit it.
    #[wasm_bindgen(js_name = connectGadget)]
    pub async fn connect_gadget(
        #[wasm_bindgen(unchecked_optional_param_type = "ConnectOptions")] options: JsValue,
    ) -> Result<Updater, JsValue> {
        Updater::connect(options, Kind::Gadget, GADGET_PROFILE).await
    }

    /// Asks the user to pick a SiFli device (serial-transport service, or an OTA manager
    /// advertising as `SIFLI_APP-…`) and connects to it. Options as for `connectGadget`.
    #[wasm_bindgen(js_name = connectDfu)]
    pub async fn connect_dfu(
        #[wasm_bindgen(unchecked_optional_param_type = "ConnectOptions")] options: JsValue,
    ) -> Result<Updater, JsValue> {
        Updater::connect(options, Kind::Dfu, DFU_PROFILE).await
    }

    /// The device's advertised name.
    #[wasm_bindgen(getter, js_name = deviceName)]
    pub fn device_name(&self) -> Option<String> {
        self.shared.borrow().link.device_name()
    }

    /// Whether the BLE link is up.
    #[wasm_bindgen(getter)]
    pub fn connected(&self) -> bool {
        self.shared.borrow().connected
    }

    /// The current step (the last `stage` event's name), or `undefined` before an update
    /// started.
    #[wasm_bindgen(getter)]
    pub fn step(&self) -> Option<String> {
        let d = self.shared.borrow();
        d.flow.as_ref().and_then(Running::stage).map(String::from)
    }

    /// Installs `image` (a verified gadget image, or a DFU package for a SiFli device);
    /// resolves with `{outcome: "done" | "up-to-date" | "staged", ...}` and rejects with an
    /// `OtawebError`.
    ///
    /// Gadget: `options.checkOnly` only reads the device's version (outcome
    /// `"update-available"` or `"up-to-date"`); `options.stageOnly` stops before
    /// ApplyFirmware (call `apply()` later); `options.applyStaged` only switches to the copy
    /// the device already holds from an earlier stage (error `NOT_STAGED` if it has none);
    /// `options.segmentSize` (1–16 MiB, the first segment), `options.maxSegmentSize` (what
    /// segments grow to, default 1 MiB), `options.otaWindow` (bytes kept unacknowledged) and
    /// `options.maxAttempts` tune the transfer. DFU:
    /// `options.restart` starts an interrupted update over instead of resuming it;
    /// `options.valueSize` is the largest write (default 244: ATT MTU 247).
    #[wasm_bindgen(unchecked_return_type = "Promise<UpdateResult>")]
    pub fn update(
        &self,
        image: &VerifiedImage,
        #[wasm_bindgen(unchecked_optional_param_type = "UpdateOptions")] options: JsValue,
    ) -> Promise {
        // The flow owns what it sends, and the page may hand the same image to a later
        // update: this copy into wasm is the API's price (the image's own bytes wait outside
        // wasm memory). `install` spares it where Rust made the image.
        match image.payload() {
            Ok(payload) => self.install(payload, options),
            Err(e) => Promise::reject(&e),
        }
    }

    /// Sends `image` to the device and keeps it staged there, to switch to later with
    /// `apply()` (this page) or `update(image, {applyStaged: true})` (any page, also after a
    /// restart: the device's image database remembers it). Same as `update(image,
    /// {...options, stageOnly: true})`.
    #[wasm_bindgen(unchecked_return_type = "Promise<UpdateResult>")]
    pub fn stage(
        &self,
        image: &VerifiedImage,
        #[wasm_bindgen(unchecked_optional_param_type = "UpdateOptions")] options: JsValue,
    ) -> Promise {
        let merged = Object::new();
        if options.is_object() {
            let _ = Object::assign(&merged, &options.unchecked_into());
        }
        let _ = set(&merged, "stageOnly", &JsValue::TRUE);
        self.update(image, merged.into())
    }

    /// Installs a staged image (after `stage(image)` in this page); resolves with
    /// `{outcome: "done", version}` once the device runs it.
    #[wasm_bindgen(unchecked_return_type = "Promise<UpdateResult>")]
    pub fn apply(&self) -> Promise {
        let shared = self.shared.clone();
        let result = {
            let mut d = shared.borrow_mut();
            let at = now();
            match d.flow.as_mut() {
                None => Err(misuse_error(
                    "wrong-state",
                    Misuse::WrongState {
                        call: "apply",
                        state: "idle",
                    },
                )),
                Some(flow) => match flow.apply(at) {
                    Ok(()) => Ok(d.waiter_promise()),
                    Err(m) => Err(misuse_error("wrong-state", m)),
                },
            }
        };
        match result {
            Ok(promise) => {
                settle(&shared);
                promise
            }
            Err(e) => Promise::reject(&e),
        }
    }

    /// Stops the update; the pending promise rejects with code `"cancelled"`.
    pub fn cancel(&self) {
        let at = now();
        if let Some(flow) = self.shared.borrow_mut().flow.as_mut() {
            flow.cancel(at);
        }
        settle(&self.shared);
    }

    /// Cancels any update and disconnects; the updater cannot be used again.
    pub fn close(&self) {
        self.cancel();
        let link = {
            let mut d = self.shared.borrow_mut();
            d.closed = true;
            d.timer = None;
            d.link.clone()
        };
        link.disconnect();
    }

    /// Asks the person to pick the device again (call it from a click, after a
    /// `device-lost` event) and goes on with the update on the device picked; resolves once
    /// connected.
    #[wasm_bindgen(js_name = pickDevice, unchecked_return_type = "Promise<void>")]
    pub fn pick_device(&self) -> Promise {
        let shared = self.shared.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let (bluetooth, profile) = {
                let d = shared.borrow();
                (d.bluetooth.clone(), d.profile)
            };
            let device = request_device(&bluetooth, profile, None)
                .await
                .map_err(|e| link_error("no-device", "no device was chosen or found", &e))?;
            let link = link_for(device, profile, &Rc::downgrade(&shared));
            // The old link goes with its listeners; its device may be gone anyway.
            let _ = core::mem::replace(&mut shared.borrow_mut().link, link.clone());
            link.open()
                .await
                .map_err(|e| link_error("connect-failed", "could not connect to the device", &e))?;
            if !shared.borrow().connected {
                on_link_up(&shared);
            }
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Adds a listener for one of the event types in the module docs (typed in
    /// `UpdaterEventMap`).
    #[wasm_bindgen(js_name = addEventListener, skip_typescript)]
    pub fn add_event_listener(&self, kind: &str, listener: &Function) -> Result<(), JsValue> {
        let events = self.shared.borrow().events.clone();
        events.add_event_listener_with_callback(kind, listener)
    }

    /// Removes a listener added with `addEventListener`.
    #[wasm_bindgen(js_name = removeEventListener, skip_typescript)]
    pub fn remove_event_listener(&self, kind: &str, listener: &Function) -> Result<(), JsValue> {
        let events = self.shared.borrow().events.clone();
        events.remove_event_listener_with_callback(kind, listener)
    }
}

impl Updater {
    /// `update()` with what to install given up by the caller (a payload Rust verified or
    /// built and holds nowhere else), so the image is not copied for the flow.
    pub(crate) fn install(&self, payload: Payload, options: JsValue) -> Promise {
        let shared = self.shared.clone();
        let started = (|| {
            let (kind, os_queue) = {
                let d = shared.borrow();
                (d.kind, d.os_queue)
            };
            let flow = match (kind, payload) {
                (Kind::Gadget, Payload::Image(verified)) => Running::Gadget(
                    GadgetUpdate::new(verified, gadget_options(&options, os_queue)?)
                        .map_err(|m| misuse_error("invalid-argument", m))?,
                ),
                (Kind::Dfu, Payload::Dfu(package)) => Running::Dfu(
                    DfuUpdate::new(package, dfu_options(&options, os_queue)?)
                        .map_err(|m| misuse_error("invalid-argument", m))?,
                ),
                _ => {
                    return Err(misuse_error(
                        "wrong-image",
                        Misuse::InvalidArgument(
                            "this image is for another kind of device: gadget images go to \
                             connectGadget updaters, DFU packages to connectDfu ones",
                        ),
                    ))
                }
            };
            let mut d = shared.borrow_mut();
            if d.closed {
                return Err(misuse_error(
                    "closed",
                    Misuse::WrongState {
                        call: "update",
                        state: "closed",
                    },
                ));
            }
            if d.flow.as_ref().is_some_and(|f| !f.is_finished()) {
                return Err(misuse_error(
                    "busy",
                    Misuse::WrongState {
                        call: "update",
                        state: "already updating",
                    },
                ));
            }
            d.flow = Some(flow);
            d.rate = None;
            Ok(d.waiter_promise())
        })();
        match started {
            Ok(promise) => {
                // Enabling notifications again makes a gadget send its PV packet, which opens
                // the handshake of the new flow.
                spawn_local(reopen(shared));
                promise
            }
            Err(e) => Promise::reject(&e),
        }
    }

    /// Another handle on the same device and flow.
    pub(crate) fn handle(&self) -> Updater {
        Updater {
            shared: self.shared.clone(),
        }
    }

    /// Dispatches an event of `kind` with `detail` to the updater's listeners.
    pub(crate) fn emit_event(&self, kind: &str, detail: Object) {
        emit(&self.shared, kind, detail);
    }

    /// Whether the device speaks SiFli DFU (else the Alexa gadget protocol).
    pub(crate) fn is_dfu(&self) -> bool {
        self.shared.borrow().kind == Kind::Dfu
    }

    /// Has `observer` see every note of every flow after JavaScript's events went out; it
    /// replaces an earlier one.
    pub(crate) fn observe(&self, observer: Observer) {
        self.shared.borrow_mut().observer = Some(observer);
    }

    async fn connect(
        options: JsValue,
        kind: Kind,
        profile: GattProfile,
    ) -> Result<Updater, JsValue> {
        let bluetooth = match value(&options, "bluetooth") {
            Some(b) => b.unchecked_into::<Bluetooth>(),
            None => navigator_bluetooth().ok_or_else(|| {
                misuse_error(
                    "bluetooth-unavailable",
                    Misuse::Unsupported(
                        "Web Bluetooth is not available in this browser: use Chrome or Edge, \
                         over HTTPS or from 127.0.0.1, or the demo device",
                    ),
                )
            })?,
        };
        let depth = "osQueueDepth must be a whole number of values";
        let os_queue = match whole(&options, "osQueueDepth", 0..=u32::from(u16::MAX), depth)? {
            Some(n) => n as u16,
            None if value(&options, "bluetooth").is_some() => 0,
            None => os_queue_depth(),
        };
        let prefix = text(&options, "namePrefix");
        let device = request_device(&bluetooth, profile, prefix.as_deref())
            .await
            .map_err(|e| link_error("no-device", "no device was chosen or found", &e))?;
        let updater = Updater::bind(bluetooth, device, kind, profile)?;
        updater.shared.borrow_mut().os_queue = os_queue;
        let link = updater.shared.borrow().link.clone();
        link.open()
            .await
            .map_err(|e| link_error("connect-failed", "could not connect to the device", &e))?;
        updater.shared.borrow_mut().connected = true;
        Ok(updater)
    }

    /// An updater for `device`. The link's listeners hold the driver weakly, so they do not
    /// keep it alive.
    fn bind(
        bluetooth: Bluetooth,
        device: web_sys::BluetoothDevice,
        kind: Kind,
        profile: GattProfile,
    ) -> Result<Updater, JsValue> {
        let events = EventTarget::new()?;
        let shared = Rc::new_cyclic(|weak: &Weak<RefCell<Driver>>| {
            RefCell::new(Driver {
                kind,
                bluetooth,
                profile,
                link: link_for(device, profile, weak),
                events,
                flow: None,
                waiter: None,
                timer: None,
                connected: false,
                writing: false,
                reconnecting: false,
                closed: false,
                rate: None,
                buf: Vec::new(),
                observer: None,
                os_queue: 0,
            })
        });
        Ok(Updater { shared })
    }
}

/// A link to `device` whose listeners reach the driver through `weak`, so they do not keep
/// it alive.
fn link_for(
    device: web_sys::BluetoothDevice,
    profile: GattProfile,
    weak: &Weak<RefCell<Driver>>,
) -> GattLink {
    let on_value = {
        let weak = weak.clone();
        move |bytes: &[u8]| {
            if let Some(d) = weak.upgrade() {
                on_input(&d, bytes);
            }
        }
    };
    let on_disconnect = {
        let weak = weak.clone();
        move || {
            if let Some(d) = weak.upgrade() {
                on_link_down(&d);
            }
        }
    };
    GattLink::new(device, profile, on_value, on_disconnect)
}

impl Driver {
    /// A new pending promise for `update()`/`apply()`; a previous one is superseded.
    fn waiter_promise(&mut self) -> Promise {
        let mut waiter = None;
        let promise = Promise::new(&mut |resolve, reject| {
            waiter = Some(Waiter { resolve, reject });
        });
        self.waiter = waiter;
        promise
    }

    fn wants_link(&self) -> bool {
        !self.closed && self.flow.as_ref().is_some_and(|f| !f.is_finished())
    }

    /// The flow wants the link and does not have it.
    fn needs_link(&self) -> bool {
        self.wants_link() && !self.connected
    }
}

/// A notification arrived.
fn on_input(shared: &Shared, bytes: &[u8]) {
    {
        let mut d = shared.borrow_mut();
        let at = now();
        if let Some(flow) = d.flow.as_mut() {
            flow.handle_input(at, bytes);
        }
    }
    settle(shared);
}

/// The device reported the link gone, or a write failed.
fn on_link_down(shared: &Shared) {
    {
        let mut d = shared.borrow_mut();
        if !d.connected {
            return;
        }
        d.connected = false;
        let at = now();
        if let Some(flow) = d.flow.as_mut() {
            flow.handle_disconnected(at);
        }
    }
    emit(shared, "disconnected", Object::new());
    settle(shared);
}

/// The link is (back) up with notifications on.
fn on_link_up(shared: &Shared) {
    {
        let mut d = shared.borrow_mut();
        d.connected = true;
        let at = now();
        if let Some(flow) = d.flow.as_mut() {
            flow.handle_connected(at);
        }
    }
    emit(shared, "connected", Object::new());
    settle(shared);
}

/// Starts notifications again on a connected link (a new flow's handshake), or reconnects.
async fn reopen(shared: Shared) {
    let link = shared.borrow().link.clone();
    if link.is_connected() && link.open().await.is_ok() {
        on_link_up(&shared);
    } else {
        shared.borrow_mut().connected = false;
        reconnect(shared).await;
    }
}

/// Reconnects with back-off for as long as the flow wants the link.
async fn reconnect(shared: Shared) {
    if core::mem::replace(&mut shared.borrow_mut().reconnecting, true) {
        return;
    }
    let mut delay = RECONNECT_FIRST;
    let mut attempt = 0u32;
    loop {
        if !shared.borrow().needs_link() {
            break;
        }
        attempt += 1;
        let detail = Object::new();
        let _ = set(&detail, "attempt", &attempt.into());
        let _ = set(&detail, "delayMs", &(delay.as_millis() as f64).into());
        emit(&shared, "reconnecting", detail);
        if attempt == PICK_AFTER_ATTEMPTS {
            // The device may be back under another identity (an OTA manager advertising
            // its own address): only the person can pick it, from a click.
            emit(&shared, "device-lost", Object::new());
        }
        sleep(delay).await;
        if !shared.borrow().needs_link() {
            break;
        }
        let link = shared.borrow().link.clone();
        if link.open().await.is_ok() {
            shared.borrow_mut().reconnecting = false;
            on_link_up(&shared);
            return;
        }
        delay = (delay * 2).min(RECONNECT_MAX);
    }
    shared.borrow_mut().reconnecting = false;
}

/// Drains the flow: events (handed to JavaScript), the timer, and the writer.
fn settle(shared: &Shared) {
    let mut out = Vec::new();
    let mut observed = Vec::new();
    let observer = {
        let mut d = shared.borrow_mut();
        let d = &mut *d;
        let Some(flow) = d.flow.as_mut() else {
            return;
        };
        while let Some(note) = flow.poll_note() {
            if d.observer.is_some() {
                observed.push(note.clone());
            }
            translate(note, &mut d.rate, &mut d.waiter, &mut out);
        }
        let deadline = flow.poll_timeout();
        d.timer = deadline.map(|at| {
            let weak = Rc::downgrade(shared);
            let wait = at.0.saturating_sub(now().0);
            Timeout::new(Duration::from_millis(wait), move || {
                if let Some(shared) = weak.upgrade() {
                    let at = now();
                    if let Some(flow) = shared.borrow_mut().flow.as_mut() {
                        flow.handle_timeout(at);
                    }
                    settle(&shared);
                }
            })
        });
        d.observer.clone()
    };
    for item in out {
        match item {
            Out::Event(kind, detail) => emit(shared, kind, detail),
            Out::Resolve(w, v) => {
                let _ = w.resolve.call1(&JsValue::UNDEFINED, &v);
            }
            Out::Reject(w, e) => {
                let _ = w.reject.call1(&JsValue::UNDEFINED, &e);
            }
            Out::Reconnect => {
                // The flow may want a fresh connection while the link is still up (a PV
                // packet that never came): drop it first.
                let link = shared.borrow().link.clone();
                if link.is_connected() {
                    link.disconnect();
                    on_link_down(shared);
                }
                spawn_local(reconnect(shared.clone()));
            }
        }
    }
    if let Some(observer) = observer {
        for note in &observed {
            observer(note);
        }
    }
    kick_writer(shared);
}

/// One flow event as JavaScript events and promise outcomes.
fn translate(note: Note, rate: &mut Option<Rate>, waiter: &mut Option<Waiter>, out: &mut Vec<Out>) {
    let detail = Object::new();
    let put = |k: &str, v: JsValue| {
        let _ = set(&detail, k, &v);
    };
    let outcome = |out: &mut Vec<Out>, waiter: &mut Option<Waiter>, name: &str, detail: &Object| {
        if let Some(w) = waiter.take() {
            let result = Object::assign(&Object::new(), detail);
            let _ = set(&result, "outcome", &name.into());
            out.push(Out::Resolve(w, result.into()));
        }
    };
    match note {
        Note::Stage(stage) => {
            put("stage", stage.into());
            out.push(Out::Event("stage", detail));
        }
        Note::Version { current, offered } => {
            put("current", current.to_string().into());
            put("offered", offered.to_string().into());
            out.push(Out::Event("version", detail));
        }
        Note::Progress {
            confirmed,
            sent,
            total,
        } => {
            // The rate follows the bytes written: confirmations come a segment at a time.
            let at = now();
            let r = *rate.get_or_insert(Rate {
                since: at,
                from: sent,
            });
            let secs = at.0.saturating_sub(r.since.0) as f64 / 1000.0;
            let per_sec = if secs > 0.0 {
                (sent.saturating_sub(r.from)) as f64 / secs
            } else {
                0.0
            };
            put("confirmed", (confirmed as f64).into());
            put("sent", (sent as f64).into());
            put("total", (total as f64).into());
            put("bytesPerSecond", per_sec.into());
            let left = if per_sec > 0.0 {
                JsValue::from_f64(total.saturating_sub(sent) as f64 / per_sec)
            } else {
                JsValue::NULL
            };
            put("secondsLeft", left);
            out.push(Out::Event("progress", detail));
        }
        Note::NeedsReconnect => {
            // The rate restarts after the link is back.
            *rate = None;
            out.push(Out::Reconnect);
        }
        Note::Rebooting => out.push(Out::Event("rebooting", detail)),
        Note::Resuming { image, packets } => {
            put("image", image.into());
            put("packets", packets.into());
            out.push(Out::Event("resuming", detail));
        }
        Note::UpToDate { current, offered } => {
            put("current", current.to_string().into());
            put("offered", offered.to_string().into());
            outcome(out, waiter, "up-to-date", &detail);
            out.push(Out::Event("up-to-date", detail));
        }
        Note::UpdateAvailable { current, offered } => {
            put("current", current.to_string().into());
            put("offered", offered.to_string().into());
            outcome(out, waiter, "update-available", &detail);
            out.push(Out::Event("update-available", detail));
        }
        Note::Staged { confirmed } => {
            put("confirmed", (confirmed as f64).into());
            outcome(out, waiter, "staged", &detail);
            out.push(Out::Event("staged", detail));
        }
        Note::Done { version } => {
            if let Some(v) = version {
                put("version", v.to_string().into());
            }
            outcome(out, waiter, "done", &detail);
            out.push(Out::Event("done", detail));
        }
        Note::Cancelled => {
            let error = misuse_error(
                "cancelled",
                Misuse::WrongState {
                    call: "continue",
                    state: "cancelled",
                },
            );
            if let Some(w) = waiter.take() {
                out.push(Out::Reject(w, error));
            }
            out.push(Out::Event("cancelled", detail));
        }
        Note::Failed(error) => {
            let js = flow_error(&error);
            if let Some(w) = waiter.take() {
                out.push(Out::Reject(w, js.clone()));
            }
            out.push(Out::Event("error", js.unchecked_into()));
        }
    }
}

/// Writes what the flow has to send, one GATT write at a time, unless a writer already runs.
fn kick_writer(shared: &Shared) {
    {
        let mut d = shared.borrow_mut();
        if d.writing || !d.connected || d.flow.is_none() {
            return;
        }
        d.writing = true;
    }
    let shared = shared.clone();
    spawn_local(async move {
        let mut produced = false;
        loop {
            let write = {
                let mut d = shared.borrow_mut();
                let d = &mut *d;
                if !d.connected {
                    break;
                }
                let Some(flow) = d.flow.as_mut() else { break };
                d.buf.clear();
                match flow.poll_transmit(&mut d.buf) {
                    Some(t) => d.link.write(&d.buf[..t.len], t.delivery),
                    None => break,
                }
            };
            produced = true;
            let failed = match write {
                Ok(future) => future.await.is_err(),
                Err(_) => true,
            };
            if failed {
                shared.borrow_mut().writing = false;
                shared.borrow().link.disconnect();
                on_link_down(&shared);
                return;
            }
            let at = now();
            if let Some(flow) = shared.borrow_mut().flow.as_mut() {
                flow.handle_transmitted(at);
            }
        }
        shared.borrow_mut().writing = false;
        if produced {
            settle(&shared);
        }
    });
}

/// Dispatches a `CustomEvent` of `kind` with `detail` on the updater.
fn emit(shared: &Shared, kind: &str, detail: Object) {
    let events = shared.borrow().events.clone();
    let init = CustomEventInit::new();
    init.set_detail(&detail);
    if let Ok(event) = CustomEvent::new_with_event_init_dict(kind, &init) {
        // A listener that throws is the page's problem; the update goes on.
        let _ = events.dispatch_event(&event);
    }
}

/// The options object of `update()` as [`GadgetOptions`], over an OS queue of `os_queue`.
fn gadget_options(options: &JsValue, os_queue: u16) -> Result<GadgetOptions, JsValue> {
    let mut out = GadgetOptions {
        os_queue_depth: os_queue,
        ..GadgetOptions::default()
    };
    if let Some(on) = flag(options, "stageOnly") {
        out.stage_only = on;
    }
    if let Some(on) = flag(options, "checkOnly") {
        out.check_only = on;
    }
    if let Some(on) = flag(options, "applyStaged") {
        out.apply_staged = on;
    }
    let number = |key: &str, what| whole(options, key, 1..=u32::MAX, what);
    if let Some(n) = number("segmentSize", "segmentSize must be a whole number of bytes")? {
        out.segment_size = n;
    }
    if let Some(n) = number(
        "maxSegmentSize",
        "maxSegmentSize must be a whole number of bytes",
    )? {
        out.max_segment_size = n;
    }
    if let Some(n) = number("otaWindow", "otaWindow must be a whole number of bytes")? {
        out.ota_window = n;
    }
    if let Some(n) = number("maxAttempts", "maxAttempts must be a whole number")? {
        out.max_attempts = n;
    }
    Ok(out)
}

/// The options object of `update()` for a SiFli device as [`DfuOptions`], over an OS queue
/// of `os_queue` values.
fn dfu_options(options: &JsValue, os_queue: u16) -> Result<DfuOptions, JsValue> {
    let mut out = DfuOptions::default();
    if flag(options, "restart") == Some(true) {
        out.on_ongoing = OnOngoing::Restart;
    }
    let size = "valueSize must be a whole number of bytes, at most 512";
    if let Some(n) = whole(options, "valueSize", 1..=512, size)? {
        out.max_value_size = n as usize;
    }
    Ok(out.for_os_queue(os_queue))
}

/// A failed Web Bluetooth call as an `OtawebError` that keeps the browser's message.
fn link_error(code: &str, what: &str, cause: &JsValue) -> JsValue {
    let detail = cause
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| cause.as_string())
        .unwrap_or_default();
    let message = if detail.is_empty() {
        String::from(what)
    } else {
        alloc::format!("{what}: {detail}")
    };
    let error = throwable(code, "link-lost", &message, true);
    // The browser's own error name (NotFoundError for a cancelled chooser or no adapter,
    // SecurityError, NotAllowedError, NetworkError) lets a page word its advice.
    if let Some(name) = cause
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.name()))
    {
        let _ = Reflect::set(&error, &"browserError".into(), &name.into());
    }
    error
}
