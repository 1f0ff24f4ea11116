//! `EnosAgent`: the page acts for a BLE device in the EnOS cloud.
//!
//! Contract. The agent drives one [`EnosFlow`] over a WebSocket to the broker (directly, or
//! through a WebSocket-to-TCP bridge in front of a TCP-only EnOS broker), with the driver in
//! [`crate::web::socket`]. The flow decides everything EnOS: what to report and when, which
//! firmware to take, the size and sign check, the failure step. The agent does the two
//! things the flow cannot:
//!
//! - **Download**: `fetch` of the task's `fileUrl` (an `https://` URL as is, or `http://` to
//!   this computer; a path or an `enos-connect://` URI through the EnOS file service at
//!   `fileService`, under the same TLS rule, logged in with the device secret or a presigned
//!   `fileSessionId`). A body that breaks off is resumed with
//!   `Range: bytes=N-` up to [`MAX_RESUMES`] times with back-off; a server that ignores the
//!   range starts the file over. No more than the announced size (plus one byte, so a longer
//!   file is noticed) is kept.
//! - **Install**: the verified file goes to the [`Updater`] the agent was given: as a gadget
//!   image, or for a SiFli device as a DFU bundle (a tar of the package, unpacked and checked
//!   first). The updater's own notes feed the flow's install progress and outcome; the
//!   updater's events still reach the page as before.
//!
//! Events (`event.detail`): `connected` `{version}` (after every accepted `inform`),
//! `upgrade-offered` `{firmware}` (call `accept()` or `decline()`), `versions-offered`
//! `{firmwares}` (call `choose(i)` or `decline()`), `no-update`, `download` `{firmware}`,
//! `download-progress` `{received, total}`, `download-interrupted` `{received, attempt,
//! delayMs}`, `install` `{version, size}`, `report` `{step, acknowledged, error?}` (a
//! progress step as the cloud got it), `push-ignored` `{firmware}`, `malformed` `{topic,
//! error}`, `done` `{version}`, `failed` (an `OtawebError`), `link-lost` / `error` (the
//! broker connection; the agent reconnects after `link-lost`), `closed`. A `firmware` is
//! `{version, fileUrl, fileSize, signMethod, sign}`.

use alloc::format;
use alloc::rc::{Rc, Weak};
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::RefCell;
use core::time::Duration;

use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::{AbortController, EventTarget, Headers, Request, RequestInit, Response};

use crate::error::{DecodeError, Error, LinkLost, Malformed, Misuse};
use crate::flow::dfu::DfuPackage;
use crate::flow::enos::{
    check_file_service, check_file_url, http_refusal, AcceptPolicy, EnosEvent, EnosFlow,
    EnosOptions, PickPolicy, MAX_FILE_SIZE,
};
use crate::flow::mqtt::MqttEvent;
use crate::flow::Flow;
use crate::image::manifest::FlowKind;
use crate::image::verify::{Image, Verified};
use crate::time::Span;
use crate::web::clock::{now, sleep};
use crate::web::http::{fetch, read_capped, Capped};
use crate::web::mqtt::{broker_error, dispatch, message_detail};
use crate::web::options::{invalid, number, text, value};
use crate::web::running::Note;
use crate::web::service::Watch;
use crate::web::socket::{self, Owner, Socket, Waiter};
use crate::web::updater::Updater;
use crate::web::ws::check_url;
use crate::web::{flow_error, misuse_error, set, Payload};
use crate::wire::enos::{
    file_session_id, DeviceId, Firmware, MqttCredentials, SecretCredentials, SignMethod,
    DEFAULT_HTTP_LIFETIME_MS,
};

/// How often a broken-off download is resumed before it fails with step −2.
pub const MAX_RESUMES: u32 = 5;
/// The first pause before a resume; it doubles each time.
const RESUME_FIRST: Duration = Duration::from_millis(500);
/// The largest EnOS file-service login answer read.
const MAX_LOGIN_ANSWER: usize = 16 * 1024;
/// The most reserved before the first byte arrives, whatever size a task announces.
const PREALLOCATE: u64 = 8 * 1024 * 1024;

struct Agent {
    socket: Socket,
    flow: EnosFlow,
    /// Signs a fresh CONNECT before every open; `None` with presigned credentials.
    secret: Option<SecretCredentials>,
    events: EventTarget,
    connect: Option<Waiter>,
    updater: Updater,
    file_service: Option<String>,
    file_session: Option<String>,
    /// The version being installed, for a device that cannot report its own (DFU).
    installing: Option<String>,
    /// Aborts the running download when the agent closes.
    abort: Option<AbortController>,
    /// The rejection handler of the updater promises the agent starts.
    refused: Option<Closure<dyn FnMut(JsValue)>>,
}

type Shared = Rc<RefCell<Agent>>;

/// What [`Owner::drain`] hands over once the agent's state is released.
enum Action {
    Event(&'static str, JsValue),
    Settle(Waiter, Result<JsValue, JsValue>),
    Download(Firmware),
    Install(Verified<Image>),
}

/// The EnOS OTA agent for one BLE device. See the module docs for its events.
#[wasm_bindgen]
pub struct EnosAgent {
    shared: Shared,
}

#[wasm_bindgen]
impl EnosAgent {
    /// Connects to the broker at `url` (`wss://…`, or `ws://` to this computer) as the EnOS
    /// device, installing with `updater`, and resolves once the cloud acknowledged the
    /// device's version.
    ///
    /// `options`: `productKey`, `deviceKey`, `version` (what the device runs) — required;
    /// `deviceSecret` (signed here; `signMethod` `"sha256"` default or `"sha1"`, `clientId`)
    /// or `credentials` `{clientId, username, password}` presigned by a backend; `accept`
    /// `"ask"` (default) or `"auto"`; `pick` `"highest"` (default) or `"ask"`;
    /// `fileService` (the EnOS HTTP broker's base URL, for `enos-connect://` files) and
    /// `fileSessionId` (a presigned file session); `progressPercent`,
    /// `progressIntervalMs` (report pacing).
    #[wasm_bindgen(unchecked_return_type = "Promise<EnosAgent>")]
    pub fn connect(
        url: String,
        updater: &Updater,
        #[wasm_bindgen(unchecked_param_type = "EnosAgentOptions")] options: JsValue,
    ) -> Promise {
        let started = start(url, updater.handle(), &options);
        wasm_bindgen_futures::future_to_promise(async move {
            let (shared, promise) = started?;
            JsFuture::from(promise).await?;
            Ok(EnosAgent { shared }.into())
        })
    }

    /// Where the task stands: `"idle"`, `"asking for versions"`, `"waiting for
    /// acceptance"`, `"downloading"`, `"installing"`, `"finishing"`, ...
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> String {
        self.shared.borrow().flow.state().to_string()
    }

    /// The version the device runs, as last reported to the cloud.
    #[wasm_bindgen(getter)]
    pub fn version(&self) -> String {
        self.shared.borrow().flow.current_version().to_string()
    }

    /// Asks the cloud which firmware the device may install (`getversion`).
    #[wasm_bindgen(js_name = checkForUpdate)]
    pub fn check_for_update(&self) -> Result<(), JsValue> {
        self.call(|flow| flow.check_for_update(now()))
    }

    /// Daemon mode with EnOS as the source: `checkForUpdate()` every `everyMinutes` while
    /// no task runs (a busy or disconnected agent skips that turn), until the returned
    /// watch is stopped. What a reply starts follows the `pick` option: the highest
    /// version installs at once, or `versions-offered` waits for the person.
    pub fn watch(
        &self,
        #[wasm_bindgen(js_name = everyMinutes)] every_minutes: f64,
    ) -> Result<Watch, JsValue> {
        if !(every_minutes.is_finite() && every_minutes > 0.0) {
            return Err(invalid("everyMinutes must be a positive number"));
        }
        let every = Duration::from_millis((every_minutes * 60_000.0).max(1.0) as u64);
        let watch = Watch::new();
        let stopped = watch.flag();
        let weak = Rc::downgrade(&self.shared);
        spawn_local(async move {
            while !stopped.get() {
                let Some(shared) = weak.upgrade() else { break };
                let idle = shared.borrow().flow.state() == "idle";
                if idle && shared.borrow().flow.session().is_connected() {
                    let _ = shared.borrow_mut().flow.check_for_update(now());
                    socket::settle(&shared);
                }
                drop(shared);
                sleep(every).await;
            }
        });
        Ok(watch)
    }

    /// Starts the offered push.
    pub fn accept(&self) -> Result<(), JsValue> {
        self.call(|flow| flow.accept(now()))
    }

    /// Turns the offer down (a push is reported as declined).
    pub fn decline(&self) -> Result<(), JsValue> {
        self.call(|flow| flow.decline(now()))
    }

    /// Installs firmware `index` of the `versions-offered` list.
    pub fn choose(&self, index: usize) -> Result<(), JsValue> {
        self.call(|flow| flow.choose(now(), index))
    }

    /// Stops any download, disconnects from the broker; the agent cannot be used again.
    pub fn close(&self) {
        let abort = {
            let mut a = self.shared.borrow_mut();
            a.flow.disconnect(now());
            a.abort.take()
        };
        if let Some(abort) = abort {
            abort.abort();
        }
        socket::close(&self.shared);
    }

    /// Adds a listener for one of the event types in the module docs.
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

impl EnosAgent {
    fn call(&self, f: impl FnOnce(&mut EnosFlow) -> Result<(), Misuse>) -> Result<(), JsValue> {
        let result = f(&mut self.shared.borrow_mut().flow);
        socket::settle(&self.shared);
        result.map_err(|m| misuse_error("wrong-state", m))
    }
}

/// Builds the agent from the options and opens the socket.
fn start(url: String, updater: Updater, options: &JsValue) -> Result<(Shared, Promise), JsValue> {
    check_url(&url).map_err(|why| misuse_error("invalid-url", Misuse::InvalidArgument(why)))?;
    let product = text(options, "productKey").ok_or_else(|| invalid("productKey is required"))?;
    let device = text(options, "deviceKey").ok_or_else(|| invalid("deviceKey is required"))?;
    let version = text(options, "version")
        .ok_or_else(|| invalid("version (what the device runs now) is required"))?;
    let device = DeviceId::new(product, device).map_err(|m| misuse_error("invalid-argument", m))?;
    let (secret, credentials) = match text(options, "deviceSecret") {
        Some(secret_text) => {
            let method: SignMethod = text(options, "signMethod")
                .as_deref()
                .unwrap_or("sha256")
                .parse()
                .map_err(|_| invalid("signMethod is \"sha256\" or \"sha1\""))?;
            let mut secret =
                SecretCredentials::new(device.clone(), secret_text).with_sign_method(method);
            if let Some(id) = text(options, "clientId") {
                secret = secret
                    .with_client_id(id)
                    .map_err(|m| misuse_error("invalid-argument", m))?;
            }
            let signed = secret.sign(js_sys::Date::now() as u64);
            (Some(secret), signed)
        }
        None => {
            let presigned = value(options, "credentials")
                .filter(JsValue::is_object)
                .ok_or_else(|| invalid("deviceSecret or presigned credentials are required"))?;
            let json: String = js_sys::JSON::stringify(&presigned)?.into();
            let credentials = MqttCredentials::from_json(json.as_bytes())
                .map_err(|e| flow_error(&Error::from(e)))?;
            (None, credentials)
        }
    };
    let kind = if updater.is_dfu() {
        FlowKind::Dfu
    } else {
        FlowKind::Gadget
    };
    let mut flow_options = EnosOptions::new(kind);
    flow_options.accept = match text(options, "accept").as_deref() {
        None | Some("ask") => AcceptPolicy::Ask,
        Some("auto") => AcceptPolicy::Auto,
        Some(_) => return Err(invalid("accept is \"ask\" or \"auto\"")),
    };
    flow_options.pick = match text(options, "pick").as_deref() {
        None | Some("highest") => PickPolicy::Highest,
        Some("ask") => PickPolicy::Ask,
        Some(_) => return Err(invalid("pick is \"highest\" or \"ask\"")),
    };
    if let Some(p) = number(options, "progressPercent") {
        flow_options.throttle.percent = p.clamp(1.0, 100.0) as u8;
    }
    if let Some(ms) = number(options, "progressIntervalMs") {
        flow_options.throttle.interval = Span(ms.clamp(0.0, 3_600_000.0) as u64);
    }
    let flow = EnosFlow::new(device, &credentials, &version, flow_options)
        .map_err(|m| misuse_error("invalid-argument", m))?;
    let (waiter, promise) = Waiter::new();
    let shared = Rc::new(RefCell::new(Agent {
        socket: Socket::new(url),
        flow,
        secret,
        events: EventTarget::new()?,
        connect: Some(waiter),
        updater: updater.handle(),
        file_service: text(options, "fileService"),
        file_session: text(options, "fileSessionId"),
        installing: None,
        abort: None,
        refused: None,
    }));
    let weak = Rc::downgrade(&shared);
    let refused = {
        let weak = weak.clone();
        Closure::new(move |error: JsValue| {
            if let Some(shared) = weak.upgrade() {
                refused_to_start(&shared, &error);
            }
        })
    };
    shared.borrow_mut().refused = Some(refused);
    updater.observe(Rc::new(move |note: &Note| {
        if let Some(shared) = weak.upgrade() {
            on_note(&shared, note);
        }
    }));
    socket::open(&shared)?;
    Ok((shared, promise))
}

impl Owner for Agent {
    type F = EnosFlow;

    fn parts(&mut self) -> (&mut Socket, &mut EnosFlow) {
        (&mut self.socket, &mut self.flow)
    }

    fn reconnect_delay(&self) -> Option<Span> {
        self.flow.poll_reconnect_delay()
    }

    fn before_open(&mut self) {
        if let Some(secret) = &self.secret {
            // Each CONNECT carries a fresh timestamp, as the SDKs sign it; the device is
            // the same, so this cannot be refused.
            let _ = self
                .flow
                .set_credentials(&secret.sign(js_sys::Date::now() as u64));
        }
    }

    fn drain(shared: &Shared) -> bool {
        let mut actions = Vec::new();
        let mut drop_link = false;
        {
            let mut a = shared.borrow_mut();
            let a = &mut *a;
            while let Some(event) = a.flow.poll_event() {
                drop_link |= translate(event, a, &mut actions);
            }
        }
        let events = shared.borrow().events.clone();
        for action in actions {
            match action {
                Action::Event(kind, detail) => dispatch(&events, kind, &detail),
                Action::Settle(waiter, result) => waiter.settle(result),
                Action::Download(firmware) => spawn_local(download(shared.clone(), firmware)),
                Action::Install(image) => install(shared, image),
            }
        }
        drop_link
    }
}

fn firmware_js(firmware: &Firmware) -> JsValue {
    serde_json_to_js(&serde_json::to_string(firmware).unwrap_or_default())
}

fn serde_json_to_js(json: &str) -> JsValue {
    js_sys::JSON::parse(json).unwrap_or(JsValue::NULL)
}

fn detail(pairs: &[(&str, JsValue)]) -> JsValue {
    let out = Object::new();
    for (k, v) in pairs {
        let _ = set(&out, k, v);
    }
    out.into()
}

/// One flow event as actions; returns whether the broker connection was given up.
fn translate(event: EnosEvent, agent: &mut Agent, out: &mut Vec<Action>) -> bool {
    match event {
        EnosEvent::Connected { version } => {
            ev(out, "connected", detail(&[("version", version.into())]));
            if let Some(w) = agent.connect.take() {
                out.push(Action::Settle(w, Ok(JsValue::UNDEFINED)));
            }
        }
        EnosEvent::UpgradeOffered { firmware } => {
            ev(
                out,
                "upgrade-offered",
                detail(&[("firmware", firmware_js(&firmware))]),
            );
        }
        EnosEvent::VersionsOffered { firmwares } => {
            let list: Array = firmwares.iter().map(firmware_js).collect();
            ev(
                out,
                "versions-offered",
                detail(&[("firmwares", list.into())]),
            );
        }
        EnosEvent::NoUpdate => ev(out, "no-update", detail(&[])),
        EnosEvent::Download {
            url,
            size,
            sign,
            version,
        } => {
            let firmware = Firmware {
                version,
                sign: sign.expected().to_hex(),
                sign_method: sign.alg().as_str().to_string(),
                file_url: url,
                file_size: size,
            };
            ev(
                out,
                "download",
                detail(&[("firmware", firmware_js(&firmware))]),
            );
            agent.installing = Some(firmware.version.clone());
            out.push(Action::Download(firmware));
        }
        EnosEvent::Install(image) => {
            let i = image.get();
            ev(
                out,
                "install",
                detail(&[
                    ("version", i.version.as_str().into()),
                    ("size", (i.bytes.len() as f64).into()),
                ]),
            );
            out.push(Action::Install(image));
        }
        EnosEvent::Reported { step } => ev(
            out,
            "report",
            detail(&[("step", step.value().into()), ("acknowledged", true.into())]),
        ),
        EnosEvent::ProgressNotAcknowledged { step, error } => ev(
            out,
            "report",
            detail(&[
                ("step", step.value().into()),
                ("acknowledged", false.into()),
                ("error", flow_error(&error)),
            ]),
        ),
        EnosEvent::PushIgnored { firmware } => {
            ev(
                out,
                "push-ignored",
                detail(&[("firmware", firmware_js(&firmware))]),
            );
        }
        EnosEvent::Malformed { topic, error } => ev(
            out,
            "malformed",
            detail(&[("topic", topic.into()), ("error", flow_error(&error))]),
        ),
        EnosEvent::Done { version } => {
            agent.installing = None;
            ev(out, "done", detail(&[("version", version.into())]));
        }
        EnosEvent::Failed(error) => {
            agent.installing = None;
            let js = flow_error(&error);
            if let Some(w) = agent.connect.take() {
                out.push(Action::Settle(w, Err(js.clone())));
            }
            ev(out, "failed", js);
        }
        EnosEvent::Link(MqttEvent::LinkLost(e) | MqttEvent::Failed(e)) => {
            let fatal = agent.flow.poll_reconnect_delay().is_none();
            let js = broker_error(&e);
            if let Some(w) = agent.connect.take() {
                out.push(Action::Settle(w, Err(js.clone())));
            }
            ev(out, if fatal { "error" } else { "link-lost" }, js);
            return true;
        }
        EnosEvent::Link(MqttEvent::Message { topic, payload, .. }) => {
            ev(out, "message", message_detail(&topic, &payload).into());
        }
        EnosEvent::Link(MqttEvent::Closed) => ev(out, "closed", detail(&[])),
        EnosEvent::Link(_) => {}
    }
    false
}

fn ev(out: &mut Vec<Action>, kind: &'static str, value: JsValue) {
    out.push(Action::Event(kind, value));
}

/// Hands the verified file to the updater.
fn install(shared: &Shared, image: Verified<Image>) {
    let updater = shared.borrow().updater.handle();
    let payload = if updater.is_dfu() {
        // The bundle goes once its files are copied out.
        match DfuPackage::from_bundle(&image.into_inner().bytes) {
            Ok(package) => Payload::Dfu(package),
            Err(error) => {
                let _ = shared.borrow_mut().flow.install_failed(now(), error);
                socket::settle(shared);
                return;
            }
        }
    } else {
        Payload::Image(image)
    };
    let promise = updater.install(payload, JsValue::UNDEFINED);
    // The outcome reaches the flow through the updater's notes (`on_note`), which come
    // before the promise settles; the rejection matters only when the updater refused to
    // start (busy, closed), which no note reports.
    if let Some(refused) = &shared.borrow().refused {
        let _ = promise.catch(refused);
    }
}

/// The updater's promise rejected: if no note ended the install, it never started.
fn refused_to_start(shared: &Shared, error: &JsValue) {
    {
        let mut a = shared.borrow_mut();
        if a.flow.state() != "installing" {
            return;
        }
        let busy = Reflect::get(error, &"code".into())
            .ok()
            .and_then(|c| c.as_string())
            .is_some_and(|c| c == "busy");
        let why = if busy {
            "the device is already being updated from this page; try again when it is done"
        } else {
            "the updater could not start the install: connect the device again"
        };
        let _ = a
            .flow
            .install_failed(now(), Error::Misuse(Misuse::Unsupported(why)));
    }
    socket::settle(shared);
}

/// The updater's notes while a task installs: progress and the outcome.
fn on_note(shared: &Shared, note: &Note) {
    {
        let mut a = shared.borrow_mut();
        if a.flow.state() != "installing" {
            return;
        }
        let at = now();
        let _ = match note {
            Note::Stage("transfer") => a.flow.install_started(at),
            // Bytes written, not confirmed: a gadget confirms a segment of up to 1 MiB at a
            // time, and the cloud should see the install move in between.
            Note::Progress { sent, total, .. } => a.flow.install_progress(at, *sent, *total),
            Note::Done { version } => {
                let version = version
                    .map(|v| v.to_string())
                    .or_else(|| a.installing.clone())
                    .unwrap_or_default();
                a.flow.install_done(at, &version)
            }
            Note::UpToDate { current, .. } => a.flow.install_done(at, &current.to_string()),
            Note::Failed(error) => a.flow.install_failed(at, error.clone()),
            Note::Cancelled => a.flow.install_failed(
                at,
                Error::Misuse(Misuse::WrongState {
                    call: "install",
                    state: "cancelled",
                }),
            ),
            _ => return,
        };
    }
    socket::settle(shared);
}

/// Why one fetch attempt stopped short.
enum Stop {
    /// A network failure: resume with a range.
    Broken,
    /// Nothing to retry: fail the download with this.
    Fatal(Error),
}

/// Downloads the task's file and hands it, or the failure, to the flow.
async fn download(shared: Shared, firmware: Firmware) {
    let weak = Rc::downgrade(&shared);
    let controller = AbortController::new().ok();
    shared.borrow_mut().abort = controller.clone();
    drop(shared);
    let result = fetch_file(&weak, &firmware, controller.as_ref()).await;
    let Some(shared) = weak.upgrade() else {
        return;
    };
    {
        let mut a = shared.borrow_mut();
        a.abort = None;
        if a.flow.state() != "downloading" {
            // The flow gave the download up (stalled, closed): nothing to hand over.
            return;
        }
        let _ = match result {
            Ok(bytes) => a.flow.downloaded(now(), &bytes),
            Err(error) => a.flow.download_failed(now(), error),
        };
    }
    socket::settle(&shared);
}

/// The whole file, resumed by range after each break.
async fn fetch_file(
    weak: &Weak<RefCell<Agent>>,
    firmware: &Firmware,
    abort: Option<&AbortController>,
) -> Result<Vec<u8>, Error> {
    let url = file_url(weak, &firmware.file_url).await?;
    let size = firmware.file_size;
    // The flow refused a task announcing more than this; a body longer than announced is cut
    // one byte over, so the size check fails without buffering it all.
    let keep = size.saturating_add(1).min(MAX_FILE_SIZE);
    // The announced size is only the cloud's word: reserve no more than a typical image up
    // front, and let a file that really is larger grow the buffer as it arrives.
    let mut bytes: Vec<u8> = Vec::with_capacity(size.min(PREALLOCATE) as usize);
    let mut delay = RESUME_FIRST;
    let mut attempt = 0;
    loop {
        match fetch_once(weak, &url, &mut bytes, keep, size, abort).await {
            Ok(()) => return Ok(bytes),
            Err(Stop::Fatal(error)) => return Err(error),
            Err(Stop::Broken) => {
                attempt += 1;
                if attempt > MAX_RESUMES || abort.is_some_and(|a| a.signal().aborted()) {
                    return Err(Error::LinkLost(LinkLost::RetriesExhausted {
                        attempts: attempt,
                    }));
                }
                emit(
                    weak,
                    "download-interrupted",
                    detail(&[
                        ("received", (bytes.len() as f64).into()),
                        ("attempt", attempt.into()),
                        ("delayMs", (delay.as_millis() as f64).into()),
                    ]),
                );
                sleep(delay).await;
                delay *= 2;
            }
        }
    }
}

/// One GET from `bytes.len()` on; appends what arrives.
async fn fetch_once(
    weak: &Weak<RefCell<Agent>>,
    url: &str,
    bytes: &mut Vec<u8>,
    keep: u64,
    size: u64,
    abort: Option<&AbortController>,
) -> Result<(), Stop> {
    let init = RequestInit::new();
    init.set_method("GET");
    let headers = Headers::new().map_err(|_| Stop::Broken)?;
    if !bytes.is_empty() {
        let _ = headers.set("Range", &format!("bytes={}-", bytes.len()));
    }
    init.set_headers(&headers);
    if let Some(abort) = abort {
        init.set_signal(Some(&abort.signal()));
    }
    let request = Request::new_with_str_and_init(url, &init).map_err(|_| {
        Stop::Fatal(Error::Misuse(Misuse::InvalidArgument(
            "the task's fileUrl is not a URL the browser can fetch",
        )))
    })?;
    let response: Response = JsFuture::from(fetch(&request))
        .await
        .map_err(|_| Stop::Broken)?
        .unchecked_into();
    match response.status() {
        200 => bytes.clear(),
        206 => {
            let start = response
                .headers()
                .get("Content-Range")
                .ok()
                .flatten()
                .and_then(|r| range_start(&r));
            match start {
                Some(s) if s as usize == bytes.len() => {}
                Some(s) if (s as usize) < bytes.len() => bytes.truncate(s as usize),
                _ => return Err(Stop::Fatal(Error::PeerRefused(http_refusal(206)))),
            }
        }
        status @ 500..=599 if status != 501 => return Err(Stop::Broken),
        status => return Err(Stop::Fatal(Error::PeerRefused(http_refusal(status)))),
    }
    let body = response.body().ok_or(Stop::Broken)?;
    let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    loop {
        let chunk = JsFuture::from(reader.read())
            .await
            .map_err(|_| Stop::Broken)?;
        if Reflect::get(&chunk, &"done".into()).is_ok_and(|d| d.is_truthy()) {
            return Ok(());
        }
        let value: Uint8Array = Reflect::get(&chunk, &"value".into())
            .map_err(|_| Stop::Broken)?
            .unchecked_into();
        let room = keep.saturating_sub(bytes.len() as u64) as usize;
        let take = (value.length() as usize).min(room);
        let start = bytes.len();
        bytes.resize(start + take, 0);
        value.subarray(0, take as u32).copy_to(&mut bytes[start..]);
        progress(weak, bytes.len() as u64, size);
        if bytes.len() as u64 >= keep {
            // Longer than announced: the flow's size check reports it.
            let _ = reader.cancel();
            return Ok(());
        }
    }
}

/// `start` of a `Content-Range: bytes start-end/total` header.
fn range_start(header: &str) -> Option<u64> {
    header
        .trim()
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

fn progress(weak: &Weak<RefCell<Agent>>, received: u64, total: u64) {
    let Some(shared) = weak.upgrade() else {
        return;
    };
    let _ = shared
        .borrow_mut()
        .flow
        .download_progress(now(), received.min(total), total);
    socket::settle(&shared);
    emit(
        weak,
        "download-progress",
        detail(&[
            ("received", (received as f64).into()),
            ("total", (total as f64).into()),
        ]),
    );
}

fn emit(weak: &Weak<RefCell<Agent>>, kind: &str, value: JsValue) {
    if let Some(shared) = weak.upgrade() {
        let events = shared.borrow().events.clone();
        dispatch(&events, kind, &value);
    }
}

/// The URL to fetch: `fileUrl` itself when it is HTTP(S), else the EnOS file service's
/// download of it (A8), logged in first when the agent holds the device secret.
async fn file_url(weak: &Weak<RefCell<Agent>>, file_url: &str) -> Result<String, Error> {
    let lower = file_url.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        check_file_url(file_url).map_err(Error::Misuse)?;
        return Ok(file_url.to_string());
    }
    let (base, session, secret, device) = {
        let shared = weak
            .upgrade()
            .ok_or(Error::LinkLost(LinkLost::Disconnected))?;
        let a = shared.borrow();
        (
            a.file_service.clone(),
            a.file_session.clone(),
            a.secret.clone(),
            a.flow.device().clone(),
        )
    };
    let base = base.ok_or(Error::Misuse(Misuse::InvalidArgument(
        "the task's file is in the EnOS file service: give the agent fileService",
    )))?;
    let base = base.trim_end_matches('/');
    // The login's sign and the session id (in the download's query) travel to this host.
    check_file_service(base).map_err(Error::Misuse)?;
    let Some(secret) = secret.as_ref().filter(|_| session.is_none()) else {
        let session = session.ok_or(Error::Misuse(Misuse::InvalidArgument(
            "the EnOS file service needs a login: give deviceSecret or fileSessionId",
        )))?;
        return Ok(format!(
            "{base}{}",
            device.file_download_path(&session, file_url)
        ));
    };
    let (path, body) = secret.file_login(DEFAULT_HTTP_LIFETIME_MS);
    let init = RequestInit::new();
    init.set_method("POST");
    init.set_body(&Uint8Array::from(&body[..]));
    let headers = Headers::new().map_err(|_| Error::LinkLost(LinkLost::Disconnected))?;
    let _ = headers.set("Content-Type", "application/json");
    init.set_headers(&headers);
    let request =
        Request::new_with_str_and_init(&format!("{base}{path}"), &init).map_err(|_| {
            Error::Misuse(Misuse::InvalidArgument(
                "fileService is not a URL the browser can fetch",
            ))
        })?;
    let lost = |_| Error::LinkLost(LinkLost::Disconnected);
    let response: Response = JsFuture::from(fetch(&request))
        .await
        .map_err(lost)?
        .unchecked_into();
    if !response.ok() {
        return Err(Error::PeerRefused(http_refusal(response.status())));
    }
    // A login answer is a few dozen bytes; a server sending more gets no memory for it.
    let answer = read_capped(&response, MAX_LOGIN_ANSWER)
        .await
        .map_err(|e| match e {
            Capped::TooLarge => Error::PeerMalformed(Malformed {
                what: "EnOS file-service login reply",
                reason: DecodeError::TooLarge {
                    limit: MAX_LOGIN_ANSWER,
                },
            }),
            Capped::Broken(_) => Error::LinkLost(LinkLost::Disconnected),
        })?;
    let session = file_session_id(&answer).map_err(|_| Error::PeerRefused(http_refusal(401)))?;
    Ok(format!(
        "{base}{}",
        device.file_download_path(&session, file_url)
    ))
}
