//! `MqttClient`: the MQTT 3.1.1 session over a browser WebSocket, for JavaScript.
//!
//! Contract. The session ([`MqttSession`]) decides everything: what to send, when to ping,
//! what to re-send after a reconnect. This edge owns the WebSocket ([`WsLink`]), one timer
//! and the JavaScript promises; after every input it drains the session in the
//! [`crate::flow`] order (packets, events, timer). It reconnects after
//! [`MqttSession::poll_reconnect_delay`] for as long as the session wants to, and closes the
//! socket when the session gives a connection up. It is the transport under the EnOS agent,
//! and usable alone.
//!
//! Events (`event.detail`): `connected` `{sessionPresent}`, `message` `{topic, payload
//! (Uint8Array), text (if UTF-8)}`, `link-lost` / `error` (an `OtawebError`).

use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

use js_sys::{Function, Object, Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use web_sys::{CustomEvent, CustomEventInit, EventTarget};

use crate::error::{Error, LinkLost, Misuse};
use crate::flow::mqtt::{ConnectOptions, MqttEvent, MqttSession, SessionConfig};
use crate::flow::Flow;
use crate::time::Span;
use crate::web::clock::now;
use crate::web::options::{invalid, number, text};
use crate::web::socket::{self, Owner, Socket, Waiter};
use crate::web::ws::check_url;
use crate::web::{flow_error, misuse_error, set, throwable};
use crate::wire::mqtt::{PacketId, QoS};

struct Driver {
    socket: Socket,
    session: MqttSession,
    events: EventTarget,
    connect: Option<Waiter>,
    subscribes: Vec<(String, Waiter)>,
    publishes: Vec<(PacketId, Waiter)>,
}

type Shared = Rc<RefCell<Driver>>;

/// An MQTT 3.1.1 client over a WebSocket. See the module docs for its events.
#[wasm_bindgen]
pub struct MqttClient {
    shared: Shared,
}

#[wasm_bindgen]
impl MqttClient {
    /// Connects to `url` (`wss://…`, or `ws://` to this computer) and resolves once the
    /// broker accepts. `options`: `clientId` (required), `username`, `password`,
    /// `keepAlive` (seconds, default 60).
    pub async fn connect(
        url: String,
        #[wasm_bindgen(unchecked_param_type = "MqttOptions")] options: JsValue,
    ) -> Result<MqttClient, JsValue> {
        check_url(&url).map_err(|why| misuse_error("invalid-url", Misuse::InvalidArgument(why)))?;
        let client_id =
            text(&options, "clientId").ok_or_else(|| invalid("clientId is required"))?;
        let mut connect = ConnectOptions::new(client_id);
        if let Some(user) = text(&options, "username") {
            connect = connect.with_login(
                user,
                text(&options, "password").unwrap_or_default().into_bytes(),
            );
        }
        if let Some(k) = number(&options, "keepAlive") {
            connect.keep_alive = k.clamp(0.0, f64::from(u16::MAX)) as u16;
        }
        let session = MqttSession::new(connect, SessionConfig::default())
            .map_err(|m| misuse_error("invalid-argument", m))?;
        let (waiter, promise) = Waiter::new();
        let shared = Rc::new(RefCell::new(Driver {
            socket: Socket::new(url),
            session,
            events: EventTarget::new()?,
            connect: Some(waiter),
            subscribes: Vec::new(),
            publishes: Vec::new(),
        }));
        socket::open(&shared)?;
        wasm_bindgen_futures::JsFuture::from(promise).await?;
        Ok(MqttClient { shared })
    }

    /// Subscribes to `filter` at QoS `qos` (0 or 1); resolves with the granted QoS.
    #[wasm_bindgen(unchecked_return_type = "Promise<number>")]
    pub fn subscribe(&self, filter: String, qos: u8) -> Promise {
        let result = qos_of(qos).and_then(|qos| {
            let mut d = self.shared.borrow_mut();
            d.session
                .subscribe(now(), &filter, qos)
                .map_err(|m| misuse_error("invalid-argument", m))?;
            let (waiter, promise) = Waiter::new();
            d.subscribes.push((filter, waiter));
            Ok(promise)
        });
        self.after(result)
    }

    /// Publishes `payload` (bytes or text) on `topic` at QoS 0 or 1; resolves when sent
    /// (QoS 0) or acknowledged by the broker (QoS 1).
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn publish(
        &self,
        topic: String,
        #[wasm_bindgen(unchecked_param_type = "Uint8Array | string")] payload: JsValue,
        qos: u8,
    ) -> Promise {
        let bytes = match payload.as_string() {
            Some(text) => text.into_bytes(),
            None => Uint8Array::new(&payload).to_vec(),
        };
        let result = qos_of(qos).and_then(|qos| {
            let mut d = self.shared.borrow_mut();
            let id = d
                .session
                .publish(now(), &topic, &bytes, qos, false)
                .map_err(|m| misuse_error("invalid-argument", m))?;
            let (waiter, promise) = Waiter::new();
            match id {
                Some(id) => d.publishes.push((id, waiter)),
                None => waiter.resolve(&JsValue::UNDEFINED),
            }
            Ok(promise)
        });
        self.after(result)
    }

    /// Sends DISCONNECT and closes; the client cannot be used again.
    pub fn close(&self) {
        self.shared.borrow_mut().session.disconnect(now());
        socket::close(&self.shared);
    }

    /// Adds a listener for one of the event types in the module docs.
    #[wasm_bindgen(js_name = addEventListener, skip_typescript)]
    pub fn add_event_listener(&self, kind: &str, listener: &Function) -> Result<(), JsValue> {
        let events = self.shared.borrow().events.clone();
        events.add_event_listener_with_callback(kind, listener)
    }
}

impl MqttClient {
    fn after(&self, result: Result<Promise, JsValue>) -> Promise {
        match result {
            Ok(promise) => {
                socket::settle(&self.shared);
                promise
            }
            Err(e) => Promise::reject(&e),
        }
    }
}

fn qos_of(qos: u8) -> Result<QoS, JsValue> {
    match qos {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        _ => Err(misuse_error(
            "invalid-argument",
            Misuse::Unsupported("QoS must be 0 or 1"),
        )),
    }
}

impl Owner for Driver {
    type F = MqttSession;

    fn parts(&mut self) -> (&mut Socket, &mut MqttSession) {
        (&mut self.socket, &mut self.session)
    }

    fn reconnect_delay(&self) -> Option<Span> {
        self.session.poll_reconnect_delay()
    }

    /// Session events to JavaScript events and promise outcomes.
    fn drain(shared: &Shared) -> bool {
        let mut out: Vec<(&'static str, Object)> = Vec::new();
        let mut settled: Vec<(Waiter, Result<JsValue, JsValue>)> = Vec::new();
        let mut drop_link = false;
        {
            let mut d = shared.borrow_mut();
            let d = &mut *d;
            while let Some(event) = d.session.poll_event() {
                match event {
                    MqttEvent::Connected { session_present } => {
                        if let Some(w) = d.connect.take() {
                            settled.push((w, Ok(JsValue::UNDEFINED)));
                        }
                        let detail = Object::new();
                        let _ = set(&detail, "sessionPresent", &session_present.into());
                        out.push(("connected", detail));
                    }
                    MqttEvent::Message { topic, payload, .. } => {
                        out.push(("message", message_detail(&topic, &payload)));
                    }
                    MqttEvent::Published { packet_id } => {
                        if let Some(i) = d.publishes.iter().position(|(id, _)| *id == packet_id) {
                            settled.push((d.publishes.remove(i).1, Ok(JsValue::UNDEFINED)));
                        }
                    }
                    MqttEvent::Subscribed { filter, granted } => {
                        if let Some(i) = d.subscribes.iter().position(|(f, _)| *f == filter) {
                            settled.push((d.subscribes.remove(i).1, Ok((granted as u8).into())));
                        }
                    }
                    MqttEvent::SubscribeRefused { filter, refusal } => {
                        if let Some(i) = d.subscribes.iter().position(|(f, _)| *f == filter) {
                            let e = flow_error(&Error::PeerRefused(refusal));
                            settled.push((d.subscribes.remove(i).1, Err(e)));
                        }
                    }
                    MqttEvent::Unsubscribed { .. } | MqttEvent::Closed => {}
                    MqttEvent::LinkLost(e) | MqttEvent::Failed(e) => {
                        let fatal = d.session.poll_reconnect_delay().is_none();
                        let js = broker_error(&e);
                        if let Some(w) = d.connect.take() {
                            settled.push((w, Err(js.clone())));
                        }
                        if fatal {
                            for (_, w) in d.subscribes.drain(..) {
                                settled.push((w, Err(js.clone())));
                            }
                            for (_, w) in d.publishes.drain(..) {
                                settled.push((w, Err(js.clone())));
                            }
                        }
                        out.push((
                            if fatal { "error" } else { "link-lost" },
                            js.unchecked_into(),
                        ));
                        drop_link = true;
                    }
                }
            }
        }
        for (waiter, result) in settled {
            waiter.settle(result);
        }
        let events = shared.borrow().events.clone();
        for (kind, detail) in out {
            dispatch(&events, kind, &detail);
        }
        drop_link
    }
}

/// The `message` event's detail: the topic, the bytes, and the text if they are UTF-8.
pub(crate) fn message_detail(topic: &str, payload: &[u8]) -> Object {
    let detail = Object::new();
    let _ = set(&detail, "topic", &topic.into());
    if let Ok(text) = core::str::from_utf8(payload) {
        let _ = set(&detail, "text", &text.into());
    }
    let _ = set(&detail, "payload", &Uint8Array::from(payload));
    detail
}

/// Dispatches a `CustomEvent` of `kind` with `detail` on `target`.
pub(crate) fn dispatch(target: &EventTarget, kind: &str, detail: &JsValue) {
    let init = CustomEventInit::new();
    init.set_detail(detail);
    if let Ok(event) = CustomEvent::new_with_event_init_dict(kind, &init) {
        // A listener that throws is the page's problem; the session goes on.
        let _ = target.dispatch_event(&event);
    }
}

/// A session error as an `OtawebError`, worded for a broker where the core's text speaks of
/// a device.
pub(crate) fn broker_error(error: &Error) -> JsValue {
    match error {
        Error::LinkLost(LinkLost::Disconnected) => throwable(
            "disconnected",
            "link-lost",
            "the connection to the MQTT broker closed or could not be opened; check the URL \
             and that the broker (or its WebSocket bridge) runs",
            true,
        ),
        other => flow_error(other),
    }
}
