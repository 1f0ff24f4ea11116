//! A WebSocket byte link for MQTT: binary frames, the `mqtt` (or a bridge's `binary`)
//! subprotocol.
//!
//! Contract. [`WsLink`] only moves bytes and reports open and close; it decides nothing. It
//! owns its four handlers and clears them, and closes the socket, when dropped. Received
//! frames are handed over whole as bytes; their boundaries mean nothing (the MQTT decoder
//! reassembles). Text frames are ignored: MQTT over WebSocket is binary only.
//!
//! [`check_url`] enforces where a browser may send credentials: `wss://` always, `ws://`
//! only to a loopback host (127.0.0.0/8, `localhost`, `[::1]`), where a local broker or a
//! `websockify` bridge listens.

use alloc::rc::Rc;

use crate::flow::service::{check_transport, Refused};

use js_sys::{ArrayBuffer, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{BinaryType, CloseEvent, Event, MessageEvent, WebSocket};

/// The WebSocket subprotocols offered: `binary`, which a `websockify` bridge in front of a
/// TCP-only broker requires, and `mqtt`, which brokers expect. `binary` goes first: Debian's
/// websockify 0.10 splits the header on commas without trimming, so it only recognises the
/// first entry; brokers pick `mqtt` from anywhere in the list.
pub const SUBPROTOCOLS: [&str; 2] = ["binary", "mqtt"];

/// Refuses URLs a browser must not send MQTT credentials to (see the module docs).
pub fn check_url(url: &str) -> Result<(), &'static str> {
    check_transport(url, "wss://", "ws://", false).map_err(|why| match why {
        Refused::Scheme => "the broker URL must start with wss:// (or ws:// to this computer)",
        Refused::NoHost => "the broker URL has no host",
        Refused::Plain => {
            "an unencrypted ws:// broker URL is only allowed to this computer; use wss://"
        }
    })
}

struct Inner {
    socket: WebSocket,
    _on_open: Closure<dyn FnMut(Event)>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.socket.set_onopen(None);
        self.socket.set_onmessage(None);
        self.socket.set_onclose(None);
        self.socket.set_onerror(None);
        // Closing a closed socket is a no-op.
        let _ = self.socket.close();
    }
}

/// An open (or opening) WebSocket; clones share it. See the module docs.
#[derive(Clone)]
pub struct WsLink(Rc<Inner>);

impl WsLink {
    /// Opens `url` offering [`SUBPROTOCOLS`]. `on_open` runs once connected, `on_bytes`
    /// with each binary frame, `on_close` once when it closes or fails to open.
    pub fn open(
        url: &str,
        mut on_open: impl FnMut() + 'static,
        mut on_bytes: impl FnMut(&[u8]) + 'static,
        mut on_close: impl FnMut() + 'static,
    ) -> Result<WsLink, JsValue> {
        let protocols = js_sys::Array::of2(&SUBPROTOCOLS[0].into(), &SUBPROTOCOLS[1].into());
        let socket = WebSocket::new_with_str_sequence(url, &protocols)?;
        socket.set_binary_type(BinaryType::Arraybuffer);
        let on_open = Closure::new(move |_: Event| on_open());
        let on_message = Closure::new(move |e: MessageEvent| {
            if let Ok(buffer) = e.data().dyn_into::<ArrayBuffer>() {
                on_bytes(&Uint8Array::new(&buffer).to_vec());
            }
        });
        // A failed connection fires error, then close: close alone reports it.
        let on_close = Closure::new(move |_: CloseEvent| on_close());
        socket.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        socket.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        Ok(WsLink(Rc::new(Inner {
            socket,
            _on_open: on_open,
            _on_message: on_message,
            _on_close: on_close,
        })))
    }

    /// Sends one binary frame.
    pub fn send(&self, bytes: &[u8]) -> Result<(), JsValue> {
        self.0.socket.send_with_u8_array(bytes)
    }

    /// Starts closing; `on_close` follows.
    pub fn close(&self) {
        let _ = self.0.socket.close();
    }
}

#[cfg(test)]
mod tests {
    use super::check_url;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test]
    fn only_loopback_may_go_unencrypted() {
        for ok in [
            "wss://broker.example/mqtt",
            "ws://127.0.0.1:9001",
            "ws://127.8.0.1/mqtt",
            "ws://localhost:8083/mqtt",
            "WS://[::1]:9001",
            "wss://[2001:db8::1]:443",
        ] {
            assert_eq!(check_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "ws://broker.example/mqtt",
            "ws://10.0.0.1:9001",
            "ws://[2001:db8::1]:9001",
            "ws://127.evil.example:9001",
            "ws://localhost.evil.example/mqtt",
            "http://127.0.0.1",
            "mqtt://127.0.0.1:1883",
            "wss://",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
