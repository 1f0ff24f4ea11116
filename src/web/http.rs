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

/// The body of `url`, refusing more than `max` bytes ([`read_capped`]); `what` names it in
/// errors. `allowed` judges where a redirect ended up, so a redirect cannot take a download
/// past the URL rule its first address passed.
pub(crate) async fn get(
    url: &str,
    what: &str,
    max: usize,
    allowed: impl Fn(&str) -> Result<(), JsValue>,
) -> Result<Vec<u8>, JsValue> {
    let failed = |detail: String| {
        throwable(
            "download-failed",
            "link-lost",
            &format!("could not download the {what} from {url}: {detail}"),
            true,
        )
    };
    let too_large = || {
        throwable(
            "too-large",
            "verification-failed",
            &format!("the {what} at {url} is larger than {max} bytes"),
            false,
        )
    };
    let request = Request::new_with_str(url).map_err(|_| failed("not a URL".into()))?;
    let response: Response = JsFuture::from(fetch(&request))
        .await
        .map_err(|e| failed(message(&e)))?
        .unchecked_into();
    if response.redirected() {
        allowed(&response.url())?;
    }
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
    read_capped(&response, max).await.map_err(|e| match e {
        Capped::TooLarge => too_large(),
        Capped::Broken(e) => failed(message(&e)),
    })
}

/// Why [`read_capped`] stopped.
pub(crate) enum Capped {
    /// The body is (or says it is) longer than the cap.
    TooLarge,
    /// Reading failed, with the thrown value.
    Broken(JsValue),
}

/// `response`'s body, at most `max` bytes, the cap holding before anything is buffered: a
/// stated `Content-Length` above `max` is refused unread, and the body is read as a stream
/// that stops at the first byte past `max`.
pub(crate) async fn read_capped(response: &Response, max: usize) -> Result<Vec<u8>, Capped> {
    let stated = response
        .headers()
        .get("Content-Length")
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse::<u64>().ok());
    let Some(body) = response.body() else {
        return Ok(Vec::new());
    };
    if stated.is_some_and(|n| n > max as u64) {
        let _ = body.cancel();
        return Err(Capped::TooLarge);
    }
    let mut bytes = Vec::with_capacity(stated.map_or(0, |n| n as usize));
    let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    loop {
        let chunk = JsFuture::from(reader.read())
            .await
            .map_err(Capped::Broken)?;
        if Reflect::get(&chunk, &"done".into()).is_ok_and(|d| d.is_truthy()) {
            return Ok(bytes);
        }
        let value: Uint8Array = Reflect::get(&chunk, &"value".into())
            .map_err(Capped::Broken)?
            .unchecked_into();
        if bytes.len() + value.length() as usize > max {
            let _ = reader.cancel();
            return Err(Capped::TooLarge);
        }
        let start = bytes.len();
        bytes.resize(start + value.length() as usize, 0);
        value.copy_to(&mut bytes[start..]);
    }
}

/// A thrown value's message.
fn message(error: &JsValue) -> String {
    error
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| error.as_string())
        .unwrap_or_else(|| String::from("network error"))
}
