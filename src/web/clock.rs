//! The browser's clock and timers, for the edge's drive loops.
//!
//! `performance.now()` is monotonic (unlike `Date.now()`), and `setTimeout` exists in
//! windows, workers and Node alike; both are reached through the global object so the edge
//! runs wherever the wasm does.

use core::time::Duration;

use js_sys::{Function, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::time::Millis;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(callback: &Function, ms: f64) -> JsValue;
    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(id: &JsValue);
}

/// Milliseconds since the page started, as the core's time value.
pub fn now() -> Millis {
    // performance.now() is non-negative and far below 2^53 ms.
    Millis(performance_now() as u64)
}

/// A pending `setTimeout`, cleared when dropped; it owns its callback.
pub struct Timeout {
    id: JsValue,
    _callback: Closure<dyn FnMut()>,
}

impl Timeout {
    /// Calls `callback` once, `delay` from now.
    pub fn new(delay: Duration, callback: impl FnMut() + 'static) -> Timeout {
        let callback = Closure::new(callback);
        let id = set_timeout(callback.as_ref().unchecked_ref(), delay.as_millis() as f64);
        Timeout {
            id,
            _callback: callback,
        }
    }
}

impl Drop for Timeout {
    fn drop(&mut self) {
        clear_timeout(&self.id);
    }
}

/// Resolves after `delay`.
pub async fn sleep(delay: Duration) {
    let promise = Promise::new(&mut |resolve, _reject| {
        set_timeout(&resolve, delay.as_millis() as f64);
    });
    // A timer promise never rejects.
    let _ = JsFuture::from(promise).await;
}
