//! The update service on an [`Updater`]: `run(source)` (one call: check, fetch, verify,
//! stage, apply) and `watch(options)` (daemon mode: the same on a timer while the page is
//! open).
//!
//! Contract. Every decision is the core's ([`crate::flow::service`]): which URLs may be
//! fetched, which signatures are needed, which entry to take, when to check again. This
//! edge fetches the manifest and the image, verifies the image in wasm, and only then hands
//! it to the updater, so nothing unverified is ever sent: a bad signature, digest or size
//! ends the call before the device hears a byte. The source is an otaweb manifest or a
//! Microchip OTA service manifest (`{"ota": [{Version, URL, Digest, Signature}]}`, its last
//! image for this device). A DFU device's entry names a DFU bundle (a `.tar` of the package).
//!
//! `options`: `policy` `{requireSignature (true), trustedKeys ([PEM]), allowDowngrade
//! (false), dangerAllowHttp (false)}`, `autoApply` (`run`: true, `watch`: false — stage and
//! wait for `apply()`), `currentVersion` (what the device runs, when it cannot say: DFU),
//! `signal` (an `AbortSignal`: once aborted, the call ends `cancelled` before the device
//! hears a byte; during the transfer, `updater.cancel()` stops it).
//! `watch` adds `source` and `everyMinutes` (60). Watch events on the updater:
//! `watch-check` `{source}`, `watch-result` (the `run` result), `watch-error` (an
//! `OtawebError` with `retryInMs`), besides the updater's own events.

use alloc::borrow::Cow;
use alloc::format;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use core::cell::{Cell, RefCell};
use core::time::Duration;

use js_sys::{Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{future_to_promise, spawn_local, JsFuture};
use web_sys::Url;

use crate::error::{Error, Misuse};
use crate::flow::dfu::DfuPackage;
use crate::flow::service::{check_current, pick, Pick, Schedule, Source, UpdatePolicy};
use crate::image::manifest::{FlowKind, Manifest};
use crate::image::signature::PublicKey;
use crate::image::verify::verify_image_cow;
use crate::time::Span;
use crate::web::clock::{now, sleep};
use crate::web::http::get;
use crate::web::options::{flag, invalid, number, text, value};
use crate::web::updater::Updater;
use crate::web::{entry_js, flow_error, misuse_error, set, throwable, Payload};

/// The largest manifest read.
const MAX_MANIFEST: usize = 1024 * 1024;
/// The largest image read (EnOS's limit, and far above any BLE device's flash).
const MAX_IMAGE: usize = 100 * 1024 * 1024;

/// What `run` and `watch` were told.
#[derive(Clone)]
struct Options {
    policy: UpdatePolicy,
    auto_apply: bool,
    current: Option<String>,
    /// Aborted: nothing goes to the device (checked after the download and verification).
    signal: Option<web_sys::AbortSignal>,
}

/// A running `watch`: stop it with `stop()`.
#[wasm_bindgen]
pub struct Watch {
    stopped: Rc<Cell<bool>>,
}

impl Watch {
    /// A running watch.
    pub(crate) fn new() -> Self {
        Watch {
            stopped: Rc::new(Cell::new(false)),
        }
    }

    /// The flag its loop checks.
    pub(crate) fn flag(&self) -> Rc<Cell<bool>> {
        self.stopped.clone()
    }
}

#[wasm_bindgen]
impl Watch {
    /// Stops the watch: no check starts after this (one already running finishes).
    pub fn stop(&self) {
        self.stopped.set(true);
    }

    /// Whether `stop()` was called.
    #[wasm_bindgen(getter)]
    pub fn stopped(&self) -> bool {
        self.stopped.get()
    }
}

#[wasm_bindgen]
impl Updater {
    /// Checks `source` (a manifest URL), fetches and verifies the newest image for this
    /// device and installs it (`autoApply`, default true) or stages it; resolves with the
    /// updater's result (`{outcome: "done" | "staged" | "up-to-date", ...}`).
    #[wasm_bindgen(unchecked_return_type = "Promise<UpdateResult>")]
    pub fn run(
        &self,
        source: String,
        #[wasm_bindgen(unchecked_optional_param_type = "RunOptions")] options: JsValue,
    ) -> Promise {
        let updater = self.handle();
        future_to_promise(async move {
            let options = parse_options(&options, true)?;
            run_once(&updater, &source, &options, None).await
        })
    }

    /// Daemon mode: `run` every `everyMinutes` (staging by default), backing off after
    /// failures, until `stop()`. See the module docs for the options and events.
    pub fn watch(
        &self,
        #[wasm_bindgen(unchecked_param_type = "WatchOptions")] options: JsValue,
    ) -> Result<Watch, JsValue> {
        let parsed = parse_options(&options, false)?;
        let source = text(&options, "source")
            .ok_or_else(|| invalid("source (the manifest URL) is required"))?;
        let minutes = number(&options, "everyMinutes").unwrap_or(60.0);
        if !(minutes.is_finite() && minutes > 0.0) {
            return Err(invalid("everyMinutes must be a positive number"));
        }
        let every = Span((minutes * 60_000.0).max(1.0) as u64);
        let watch = Watch::new();
        spawn_local(watch_loop(
            self.handle(),
            source,
            parsed,
            Schedule::every(every),
            watch.flag(),
        ));
        Ok(watch)
    }
}

/// Throws an `insecure-url` `OtawebError` unless `run` and `watch` may fetch `url` (absolute):
/// `https://`, or plain `http://` only to this computer unless `dangerAllowHttp`.
#[wasm_bindgen(js_name = checkUrl)]
pub fn check_url_js(
    url: &str,
    #[wasm_bindgen(js_name = dangerAllowHttp)] danger_allow_http: Option<bool>,
) -> Result<(), JsValue> {
    let policy = UpdatePolicy {
        danger_allow_http: danger_allow_http.unwrap_or(false),
        ..UpdatePolicy::default()
    };
    policy
        .check_url(url)
        .map_err(|m| misuse_error("insecure-url", m))
}

/// The entry of otaweb manifest `text` that `run` would take for a device of `flow`
/// (`"gadget"` or `"dfu"`) running `currentVersion` (absent: the highest version), or
/// `undefined` when the device is up to date or nothing is for its flow.
#[wasm_bindgen(js_name = newestImage, unchecked_return_type = "ManifestEntry | undefined")]
pub fn newest_image(
    text: &str,
    #[wasm_bindgen(unchecked_param_type = "FlowName")] flow: &str,
    #[wasm_bindgen(js_name = currentVersion)] current: Option<String>,
) -> Result<JsValue, JsValue> {
    let flow =
        FlowKind::from_name(flow).ok_or_else(|| invalid("flow must be \"gadget\" or \"dfu\""))?;
    check_current(flow, current.as_deref()).map_err(|m| misuse_error("invalid-argument", m))?;
    let manifest = Manifest::parse(text).map_err(|e| manifest_error(&e.to_string()))?;
    match pick(
        &manifest,
        flow,
        current.as_deref(),
        &UpdatePolicy::default(),
    ) {
        Pick::Install(entry) => entry_js(entry),
        Pick::UpToDate | Pick::NothingForFlow => Ok(JsValue::UNDEFINED),
    }
}

fn parse_options(options: &JsValue, auto_apply: bool) -> Result<Options, JsValue> {
    let mut policy = UpdatePolicy::default();
    if let Some(given) = value(options, "policy").filter(JsValue::is_object) {
        if let Some(v) = flag(&given, "requireSignature") {
            policy.require_signature = v;
        }
        if let Some(v) = flag(&given, "allowDowngrade") {
            policy.allow_downgrade = v;
        }
        if let Some(v) = flag(&given, "dangerAllowHttp") {
            policy.danger_allow_http = v;
        }
        let keys = value(&given, "trustedKeys");
        if let Some(keys) = keys.as_ref().and_then(|k| k.dyn_ref::<js_sys::Array>()) {
            for pem in keys.iter() {
                let pem = pem
                    .as_string()
                    .ok_or_else(|| invalid("trustedKeys is a list of PEM public keys"))?;
                let key = PublicKey::from_pem(&pem).map_err(|e| {
                    throwable(
                        "key-invalid",
                        "misuse",
                        &format!("a trusted key is not usable: {e}"),
                        false,
                    )
                })?;
                policy.trusted_keys.push(key);
            }
        }
    }
    // Checked now, so a watch with an impossible policy fails at the call, not hours later.
    policy
        .verify_policy()
        .map_err(|m| misuse_error("policy-invalid", m))?;
    Ok(Options {
        policy,
        auto_apply: flag(options, "autoApply").unwrap_or(auto_apply),
        current: text(options, "currentVersion"),
        signal: value(options, "signal").and_then(|v| v.dyn_into::<web_sys::AbortSignal>().ok()),
    })
}

/// `url` made absolute against `base` (or the page's own address) and allowed by `policy`.
fn resolve(url: &str, base: Option<&str>, policy: &UpdatePolicy) -> Result<String, JsValue> {
    let page = Reflect::get(&js_sys::global(), &"location".into())
        .and_then(|l| Reflect::get(&l, &"href".into()))
        .ok()
        .and_then(|h| h.as_string());
    let base = base.map(String::from).or(page);
    let absolute = match &base {
        Some(base) => Url::new_with_base(url, base),
        None => Url::new(url),
    }
    .map_err(|_| invalid("the manifest or image URL does not parse"))?
    .href();
    policy
        .check_url(&absolute)
        .map_err(|m| misuse_error("insecure-url", m))?;
    Ok(absolute)
}

/// Whether a redirect may end at `url`: the rule the first address passed.
fn allowed(url: &str, policy: &UpdatePolicy) -> Result<(), JsValue> {
    policy
        .check_url(url)
        .map_err(|m| misuse_error("insecure-url", m))
}

/// One check: manifest, pick, image, verify, then the updater (staging unless
/// `auto_apply`); `staged` is a version already staged by an earlier check, not sent again.
async fn run_once(
    updater: &Updater,
    source: &str,
    options: &Options,
    staged: Option<&str>,
) -> Result<JsValue, JsValue> {
    let policy = &options.policy;
    let verify = policy
        .verify_policy()
        .map_err(|m| misuse_error("policy-invalid", m))?;
    let manifest_url = resolve(source, None, policy)?;
    let text = get(&manifest_url, "manifest", MAX_MANIFEST, |to| {
        allowed(to, policy)
    })
    .await?;
    let text = String::from_utf8(text).map_err(|_| manifest_error("it is not UTF-8 text"))?;
    let flow = if updater.is_dfu() {
        FlowKind::Dfu
    } else {
        FlowKind::Gadget
    };
    check_current(flow, options.current.as_deref())
        .map_err(|m| misuse_error("invalid-argument", m))?;
    let source = Source::parse(&text, flow).map_err(|e| manifest_error(&e.to_string()))?;
    let entry = match pick(&source.manifest, flow, options.current.as_deref(), policy) {
        Pick::Install(entry) => entry,
        Pick::UpToDate => return result("up-to-date", options.current.as_deref()),
        Pick::NothingForFlow => {
            return Err(throwable(
                "no-image-for-device",
                "misuse",
                &format!(
                    "the manifest at {manifest_url} has no {} image for this device",
                    flow.as_str()
                ),
                false,
            ))
        }
    };
    if staged == Some(entry.version.as_str()) {
        return result("staged", Some(&entry.version));
    }
    let image_url = resolve(&entry.url, Some(&manifest_url), policy)?;
    let bytes = get(&image_url, "image", MAX_IMAGE, |to| allowed(to, policy)).await?;
    let entry = source.sized(entry, bytes.len());
    // The download is given up, so the image is held once (see `verify_image_cow`).
    let verified = verify_image_cow(Cow::Owned(bytes), &entry, &verify)
        .map_err(|e| flow_error(&Error::Verification(e)))?;
    let payload = match flow {
        // The bundle goes once its files are copied out.
        FlowKind::Dfu => Payload::Dfu(
            DfuPackage::from_bundle(&verified.into_inner().bytes).map_err(|e| flow_error(&e))?,
        ),
        _ => Payload::Image(verified),
    };
    let update_options = Object::new();
    set(&update_options, "stageOnly", &(!options.auto_apply).into())?;
    if options
        .signal
        .as_ref()
        .is_some_and(web_sys::AbortSignal::aborted)
    {
        return Err(misuse_error(
            "cancelled",
            Misuse::WrongState {
                call: "install",
                state: "cancelled before it started",
            },
        ));
    }
    let result = JsFuture::from(updater.install(payload, update_options.into())).await?;
    // A staged result names no version; the watcher needs it to not stage it again.
    if Reflect::get(&result, &"version".into()).is_ok_and(|v| v.is_undefined()) {
        let _ = Reflect::set(&result, &"version".into(), &entry.version.as_str().into());
    }
    Ok(result)
}

fn manifest_error(why: &str) -> JsValue {
    throwable(
        "manifest-invalid",
        "misuse",
        &format!("the manifest is not usable: {why}"),
        false,
    )
}

fn result(outcome: &str, version: Option<&str>) -> Result<JsValue, JsValue> {
    let out = Object::new();
    set(&out, "outcome", &outcome.into())?;
    if let Some(v) = version {
        // Only an up-to-date device runs `v`; a staged one holds it beside what it runs.
        if outcome == "up-to-date" {
            set(&out, "current", &v.into())?;
        }
        set(&out, "version", &v.into())?;
    }
    Ok(out.into())
}

fn text_of(result: &JsValue, key: &str) -> Option<String> {
    let value = Reflect::get(result, &key.into()).ok()?;
    value
        .as_string()
        .or_else(|| value.as_f64().map(|n| (n as u64).to_string()))
}

async fn watch_loop(
    updater: Updater,
    source: String,
    options: Options,
    mut schedule: Schedule,
    stopped: Rc<Cell<bool>>,
) {
    let options = Rc::new(RefCell::new(options));
    let staged: Rc<RefCell<Option<String>>> = Rc::default();
    // An apply() by the page (or any install) tells the watch what the device now runs.
    let on_done = {
        let (options, staged) = (options.clone(), staged.clone());
        Closure::<dyn FnMut(web_sys::CustomEvent)>::new(move |event: web_sys::CustomEvent| {
            if let Some(v) = text_of(&event.detail(), "version") {
                options.borrow_mut().current = Some(v);
                *staged.borrow_mut() = None;
            }
        })
    };
    let _ = updater.add_event_listener("done", on_done.as_ref().unchecked_ref());
    while !stopped.get() {
        let detail = Object::new();
        let _ = set(&detail, "source", &source.as_str().into());
        updater.emit_event("watch-check", detail);
        let snapshot = options.borrow().clone();
        let already = staged.borrow().clone();
        let next = match run_once(&updater, &source, &snapshot, already.as_deref()).await {
            Ok(result) => {
                let outcome = text_of(&result, "outcome").unwrap_or_default();
                // What the device runs now, so the next check needs no download to know.
                let version = match outcome.as_str() {
                    "done" => text_of(&result, "version"),
                    "up-to-date" => text_of(&result, "current"),
                    _ => None,
                };
                if let Some(v) = version {
                    options.borrow_mut().current = Some(v);
                    *staged.borrow_mut() = None;
                }
                if outcome == "staged" {
                    *staged.borrow_mut() = text_of(&result, "version");
                }
                updater.emit_event("watch-result", result.unchecked_into());
                schedule.succeeded(now())
            }
            Err(error) => {
                let next = schedule.failed(now());
                let _ = Reflect::set(
                    &error,
                    &"retryInMs".into(),
                    &(next.0.saturating_sub(now().0) as f64).into(),
                );
                updater.emit_event("watch-error", error.unchecked_into());
                next
            }
        };
        let wait = next.0.saturating_sub(now().0);
        sleep(Duration::from_millis(wait)).await;
    }
    let _ = updater.remove_event_listener("done", on_done.as_ref().unchecked_ref());
}
