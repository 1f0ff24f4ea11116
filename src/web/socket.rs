//! The WebSocket driver shared by every flow whose peer is a broker: the MQTT client and
//! the EnOS agent.
//!
//! Contract. An [`Owner`] holds a [`Socket`] and a [`Flow`] with one channel. The driver
//! opens the socket, feeds the flow its inputs (open, bytes, close, deadline) and after
//! each one drains it in the [`crate::flow`] order: packets to the socket, then the owner's
//! events ([`Owner::drain`], called with no borrow held, so a JavaScript listener may call
//! back in), then packets again (an event may have queued some), then the one timer. After a
//! close it reopens after [`Owner::reconnect_delay`] for as long as that says so, and never
//! once the owner marked the socket closed. The driver decides nothing about the protocol.

use alloc::rc::{Rc, Weak};
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::time::Duration;

use js_sys::{Function, Promise};
use wasm_bindgen::JsValue;

use crate::flow::Flow;
use crate::time::Span;
use crate::web::clock::{now, Timeout};
use crate::web::ws::WsLink;

/// A pending JavaScript promise's two settle functions.
pub(crate) struct Waiter {
    resolve: Function,
    reject: Function,
}

impl Waiter {
    /// A waiter and the promise it settles.
    pub(crate) fn new() -> (Waiter, Promise) {
        let mut waiter = None;
        let promise =
            Promise::new(&mut |resolve, reject| waiter = Some(Waiter { resolve, reject }));
        // Promise::new runs the executor at once, so the waiter is always there.
        (waiter.expect("executor ran"), promise)
    }

    /// Resolves the promise with `value`.
    pub(crate) fn resolve(self, value: &JsValue) {
        let _ = self.resolve.call1(&JsValue::UNDEFINED, value);
    }

    /// Rejects the promise with `error`.
    pub(crate) fn reject(self, error: &JsValue) {
        let _ = self.reject.call1(&JsValue::UNDEFINED, error);
    }

    /// Settles the promise with `result`.
    pub(crate) fn settle(self, result: Result<JsValue, JsValue>) {
        match result {
            Ok(v) => self.resolve(&v),
            Err(e) => self.reject(&e),
        }
    }
}

/// The socket side of an owner: where to connect and what is open.
pub(crate) struct Socket {
    url: String,
    link: Option<WsLink>,
    timer: Option<Timeout>,
    reconnect: Option<Timeout>,
    closed: bool,
    buf: Vec<u8>,
}

impl Socket {
    /// A socket to `url`, not yet open.
    pub(crate) fn new(url: String) -> Self {
        Socket {
            url,
            link: None,
            timer: None,
            reconnect: None,
            closed: false,
            buf: Vec::new(),
        }
    }

    /// Stops reconnecting for good; [`close`] then closes the link.
    pub(crate) fn mark_closed(&mut self) {
        self.closed = true;
        self.reconnect = None;
    }
}

/// A flow driven over a [`Socket`].
pub(crate) trait Owner: Sized + 'static {
    /// The flow.
    type F: Flow<Channel = ()>;

    /// The socket and the flow, borrowed together.
    fn parts(&mut self) -> (&mut Socket, &mut Self::F);

    /// Takes the flow's events and hands them to JavaScript; returns whether the flow gave
    /// the current connection up (the driver then closes it, and the close reconnects).
    fn drain(shared: &Rc<RefCell<Self>>) -> bool;

    /// How long to wait before reopening after a close, or `None` to stay closed.
    fn reconnect_delay(&self) -> Option<Span>;

    /// Called before every open, e.g. to sign fresh credentials.
    fn before_open(&mut self) {}
}

/// Opens the socket, its handlers holding the owner weakly.
pub(crate) fn open<O: Owner>(shared: &Rc<RefCell<O>>) -> Result<(), JsValue> {
    let weak = Rc::downgrade(shared);
    let on_open = {
        let weak = weak.clone();
        move || {
            if let Some(o) = weak.upgrade() {
                o.borrow_mut().parts().1.handle_connected(now());
                settle(&o);
            }
        }
    };
    let on_bytes = {
        let weak = weak.clone();
        move |bytes: &[u8]| {
            if let Some(o) = weak.upgrade() {
                o.borrow_mut().parts().1.handle_input(now(), (), bytes);
                settle(&o);
            }
        }
    };
    let on_close = move || {
        if let Some(o) = weak.upgrade() {
            closed(&o);
        }
    };
    let url = {
        let mut o = shared.borrow_mut();
        o.before_open();
        o.parts().0.url.clone()
    };
    let link = WsLink::open(&url, on_open, on_bytes, on_close)?;
    shared.borrow_mut().parts().0.link = Some(link);
    Ok(())
}

/// Sends what the flow still has and closes the link for good.
pub(crate) fn close<O: Owner>(shared: &Rc<RefCell<O>>) {
    shared.borrow_mut().parts().0.mark_closed();
    settle(shared);
    let link = shared.borrow_mut().parts().0.link.take();
    if let Some(link) = link {
        link.close();
    }
}

fn closed<O: Owner>(shared: &Rc<RefCell<O>>) {
    {
        let mut o = shared.borrow_mut();
        let (socket, flow) = o.parts();
        socket.link = None;
        flow.handle_disconnected(now());
    }
    settle(shared);
    let delay = {
        let mut o = shared.borrow_mut();
        let closed = o.parts().0.closed;
        (!closed).then(|| o.reconnect_delay()).flatten()
    };
    if let Some(delay) = delay {
        let weak = Rc::downgrade(shared);
        let timer = Timeout::new(Duration::from_millis(delay.as_millis()), move || {
            if let Some(o) = weak.upgrade() {
                let gave_up = o.borrow_mut().parts().0.closed;
                if !gave_up && open(&o).is_err() {
                    closed(&o);
                }
            }
        });
        shared.borrow_mut().parts().0.reconnect = Some(timer);
    }
}

/// Writes every packet the flow has to the socket.
fn flush<O: Owner>(shared: &Rc<RefCell<O>>) {
    let mut o = shared.borrow_mut();
    let (socket, flow) = o.parts();
    loop {
        socket.buf.clear();
        let Some(t) = flow.poll_transmit(&mut socket.buf) else {
            break;
        };
        if let Some(link) = &socket.link {
            // A failed send is a closing socket: its close event follows.
            let _ = link.send(&socket.buf[..t.len]);
        }
        flow.handle_transmitted(now());
    }
}

/// Drains the flow after an input: packets, events, packets, the timer.
pub(crate) fn settle<O: Owner>(shared: &Rc<RefCell<O>>) {
    flush(shared);
    let drop_link = O::drain(shared);
    flush(shared);
    {
        let mut o = shared.borrow_mut();
        let (socket, flow) = o.parts();
        socket.timer = flow.poll_timeout().map(|at| {
            let weak: Weak<RefCell<O>> = Rc::downgrade(shared);
            let wait = at.0.saturating_sub(now().0);
            Timeout::new(Duration::from_millis(wait), move || {
                if let Some(o) = weak.upgrade() {
                    o.borrow_mut().parts().1.handle_timeout(now());
                    settle(&o);
                }
            })
        });
    }
    if drop_link {
        let link = shared.borrow_mut().parts().0.link.clone();
        if let Some(link) = link {
            link.close();
        }
    }
}
