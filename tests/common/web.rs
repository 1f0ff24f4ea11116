//! Helpers of the browser tests: JavaScript values, the demo Bluetooth stand-in, and a log
//! of an updater's events.

// Each browser test binary uses a different part of this module.
#![allow(dead_code)]

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Function, Object, Reflect};
use wasm_bindgen::prelude::*;

use otaweb::web::Updater;

#[wasm_bindgen(module = "/www/demo-bluetooth.js")]
extern "C" {
    /// Puts the stand-in in front of `make_device()` as `navigator.bluetooth`.
    #[wasm_bindgen(js_name = installDemoBluetooth)]
    pub fn install_demo_bluetooth(make_device: &Function, options: &JsValue) -> JsValue;
}

/// `value[key]`.
pub fn field(value: &JsValue, key: &str) -> JsValue {
    Reflect::get(value, &key.into()).expect("readable")
}

/// A plain object from its fields.
pub fn object(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in pairs {
        Reflect::set(&o, &(*k).into(), v).expect("settable");
    }
    o.into()
}

/// Installs the stand-in for `device` (a demo device as JavaScript holds it) with `options`.
pub fn install(device: &JsValue, options: &JsValue) -> JsValue {
    let make = {
        let device = device.clone();
        Closure::<dyn FnMut() -> JsValue>::new(move || device.clone())
    };
    let bluetooth = install_demo_bluetooth(make.as_ref().unchecked_ref(), options);
    // The stand-in keeps the factory for the page's lifetime.
    make.forget();
    bluetooth
}

/// The stand-in radio's counters.
pub fn radio_stats(bluetooth: &JsValue) -> JsValue {
    field(&field(&field(bluetooth, "device"), "radio"), "stats")
}

/// Every event of the given types an updater dispatched, in order, with its detail.
pub type EventLog = Rc<RefCell<Vec<(String, JsValue)>>>;

/// Starts logging `kinds` of `updater`'s events.
pub fn record(updater: &Updater, kinds: &[&str]) -> EventLog {
    let log = EventLog::default();
    for kind in kinds {
        let log = log.clone();
        let name = kind.to_string();
        let listener =
            Closure::<dyn FnMut(web_sys::CustomEvent)>::new(move |e: web_sys::CustomEvent| {
                log.borrow_mut().push((name.clone(), e.detail()));
            });
        updater
            .add_event_listener(kind, listener.as_ref().unchecked_ref())
            .expect("listener");
        listener.forget();
    }
    log
}

/// How many events of `kind` the log holds.
pub fn count(log: &EventLog, kind: &str) -> usize {
    log.borrow().iter().filter(|(k, _)| k == kind).count()
}

/// The details of the events of `kind`, in order.
pub fn details(log: &EventLog, kind: &str) -> Vec<JsValue> {
    log.borrow()
        .iter()
        .filter(|(k, _)| k == kind)
        .map(|(_, d)| d.clone())
        .collect()
}
