//! Reading the plain option objects JavaScript passes to the exported functions.
//!
//! Contract. A key reads as absent when the object is not an object, the key is missing or
//! its value is `undefined`, so `{ x: undefined }` and `{}` mean the same; a value of the
//! wrong type reads as absent in [`text`] and [`number`], and callers that must refuse it
//! say so with [`invalid`].

use alloc::string::String;
use core::ops::RangeInclusive;

use js_sys::Reflect;
use wasm_bindgen::JsValue;

use crate::error::Misuse;
use crate::web::misuse_error;

/// The value under `key`, unless absent (see the module docs).
pub(crate) fn value(object: &JsValue, key: &str) -> Option<JsValue> {
    if !object.is_object() {
        return None;
    }
    Reflect::get(object, &key.into())
        .ok()
        .filter(|v| !v.is_undefined())
}

/// The string under `key`.
pub(crate) fn text(object: &JsValue, key: &str) -> Option<String> {
    value(object, key).and_then(|v| v.as_string())
}

/// The number under `key`.
pub(crate) fn number(object: &JsValue, key: &str) -> Option<f64> {
    value(object, key).and_then(|v| v.as_f64())
}

/// The whole number under `key` when it lies in `range`; any other value present is the
/// [`invalid`] error `what`.
pub(crate) fn whole(
    object: &JsValue,
    key: &str,
    range: RangeInclusive<u32>,
    what: &'static str,
) -> Result<Option<u32>, JsValue> {
    let Some(v) = value(object, key) else {
        return Ok(None);
    };
    let bounds = f64::from(*range.start())..=f64::from(*range.end());
    match v.as_f64() {
        Some(n) if n.fract() == 0.0 && bounds.contains(&n) => Ok(Some(n as u32)),
        _ => Err(invalid(what)),
    }
}

/// The truthiness of the value under `key`.
pub(crate) fn flag(object: &JsValue, key: &str) -> Option<bool> {
    value(object, key).map(|v| v.is_truthy())
}

/// The `invalid-argument` error an option that cannot be used throws.
pub(crate) fn invalid(what: &'static str) -> JsValue {
    misuse_error("invalid-argument", Misuse::InvalidArgument(what))
}
