//! `fetch` for the edges that download: the EnOS agent and the update service.
//!
//! Contract. [`fetch`] calls the global `fetch` (a window's or a worker's), so the same code
//! runs in a page and in a worker. [`get`] is a whole-body GET for small files (manifests,
//! gadget images, DFU bundles) that turns every failure into an `OtawebError`; downloads that
//! must resume or report progress read the body themselves.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use js_sys::{Function, Promise, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, Response};

use crate::web::throwable;

/// The global `fetch(request)`, or a rejected promise where there is none.
pub(crate) fn fetch(request: &Request) -> Promise {
    let global = js_sys::global();
    match Reflect::get(&global, &"fetch".into()).map(JsCast::unchecked_into::<Function>) {
        Ok(f) => f
            .call1(&global, request)
            .map(JsCast::unchecked_into)
            .unwrap_or_else(|e| Promise::reject(&e)),
        Err(e) => Promise::reject(&e),
    }
}

/// The body of `url`, refusing more than `max` bytes; `what` names it in errors.
pub(crate) async fn get(url: &str, what: &str, max: usize) -> Result<Vec<u8>, JsValue> {
    let failed = |detail: String| {
        throwable(
            "download-failed",
            "link-lost",
            &format!("could not download the {what} from {url}: {detail}"),
            true,
        )
    };
    let request = Request::new_with_str(url).map_err(|_| failed("not a URL".into()))?;
    let response: Response = JsFuture::from(fetch(&request))
        .await
        .map_err(|e| failed(message(&e)))?
        .unchecked_into();
    if !response.ok() {
        return Err(throwable(
            "download-failed",
            "link-lost",
            &format!(
                "the server answered HTTP {} for the {what} at {url}",
                response.status()
            ),
            response.status() >= 500,
        ));
    }
    let body = JsFuture::from(response.array_buffer().map_err(|e| failed(message(&e)))?)
        .await
        .map_err(|e| failed(message(&e)))?;
    let bytes = Uint8Array::new(&body);
    if bytes.length() as usize > max {
        return Err(throwable(
            "too-large",
            "verification-failed",
            &format!("the {what} at {url} is larger than {max} bytes"),
            false,
        ));
    }
    Ok(bytes.to_vec())
}

/// A thrown value's message.
fn message(error: &JsValue) -> String {
    error
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| error.as_string())
        .unwrap_or_else(|| String::from("network error"))
}
