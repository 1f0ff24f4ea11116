//! Sans-IO update flows and the contract every flow implements.
//!
//! A flow is a state machine with no I/O, no clock and no randomness. The edge that owns the
//! transport (Web Bluetooth, a WebSocket, the native simulator's virtual link) feeds it and
//! pumps it; the flow only decides. The API has four kinds of calls, as in quinn-proto:
//!
//! - getters, which never change state;
//! - `handle_*` inputs: a link came up or went down, bytes arrived, a deadline passed;
//! - application commands specific to the flow (start, stage, apply, cancel);
//! - `poll_*` outputs: bytes to send, the next deadline, events for the application.
//!
//! After every input or command the edge drains the outputs in this order:
//!
//! 1. [`Flow::poll_transmit`] until it returns `None`, sending each datagram in order
//!    (BLE allows one GATT operation at a time, so the edge awaits each write) and calling
//!    [`Flow::handle_transmitted`] once the transport has taken it;
//! 2. [`Flow::poll_event`] until it returns `None`, handing events to the application;
//! 3. [`Flow::poll_timeout`], arming one timer for the returned deadline (or none) and
//!    calling [`Flow::handle_timeout`] when it fires.
//!
//! Because time is a value ([`Millis`]), the same flow runs in the browser, in `cargo test`
//! and in the two-party simulator, where a virtual clock jumps straight to the next deadline.
//!
//! [`mqtt`] is the MQTT 3.1.1 client session the EnOS flow runs on, a [`Flow`] itself.
//! [`enos`] is the EnOS OTA flow: it owns that session and hands download and install to the
//! application.
//!
//! ```
//! use otaweb::flow::{Delivery, Flow, Transmit};
//! use otaweb::Millis;
//!
//! /// A flow that answers every input with the same bytes and gives up after 1 s of silence.
//! #[derive(Default)]
//! struct Echo { pending: Vec<Vec<u8>>, deadline: Option<Millis>, timed_out: bool }
//!
//! impl Flow for Echo {
//!     type Channel = ();
//!     type Event = &'static str;
//!     fn handle_connected(&mut self, now: Millis) { self.deadline = Some(now + otaweb::time::Span(1000)); }
//!     fn handle_disconnected(&mut self, _now: Millis) { self.deadline = None; }
//!     fn handle_input(&mut self, now: Millis, _ch: (), bytes: &[u8]) {
//!         self.pending.push(bytes.to_vec());
//!         self.deadline = Some(now + otaweb::time::Span(1000));
//!     }
//!     fn handle_timeout(&mut self, now: Millis) {
//!         if self.deadline.is_some_and(|d| now >= d) { self.timed_out = true; self.deadline = None; }
//!     }
//!     fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> Option<Transmit<()>> {
//!         let bytes = self.pending.pop()?;
//!         buf.extend_from_slice(&bytes);
//!         Some(Transmit { channel: (), len: bytes.len(), delivery: Delivery::WithoutResponse })
//!     }
//!     fn poll_timeout(&self) -> Option<Millis> { self.deadline }
//!     fn poll_event(&mut self) -> Option<&'static str> {
//!         core::mem::take(&mut self.timed_out).then_some("timed out")
//!     }
//! }
//!
//! let mut flow = Echo::default();
//! flow.handle_connected(Millis(0));
//! flow.handle_input(Millis(10), (), b"hi");
//! let mut buf = Vec::new();
//! let t = flow.poll_transmit(&mut buf).unwrap();
//! assert_eq!(&buf[..t.len], b"hi");
//! assert_eq!(flow.poll_timeout(), Some(Millis(1010)));
//! flow.handle_timeout(Millis(1010));
//! assert_eq!(flow.poll_event(), Some("timed out"));
//! ```

pub mod dfu;
pub mod enos;
pub mod gadget;
pub mod mqtt;
pub mod service;

use alloc::vec::Vec;

use crate::time::Millis;

/// The values a flow keeps in flight through an OS write queue that drops what overflows
/// its `depth` values (macOS, Windows): 7/8 of it, at least one, a margin for a depth known
/// only roughly ("about 20").
pub(crate) fn queue_budget(depth: u16) -> u32 {
    (u32::from(depth) * 7 / 8).max(1)
}

/// The driving contract of a sans-IO flow. See the module docs for the poll order.
pub trait Flow {
    /// Where a datagram goes or came from: a GATT characteristic, an MQTT topic, or `()`.
    type Channel: Copy;
    /// What the flow reports to the application (stage changes, progress, done, errors).
    type Event;

    /// The transport came up (GATT connected and notifications on, MQTT session open).
    fn handle_connected(&mut self, now: Millis);

    /// The transport went down; the flow keeps what it needs to resume.
    fn handle_disconnected(&mut self, now: Millis);

    /// Bytes arrived from the peer on `channel`. Malformed input becomes an event, never a
    /// panic.
    fn handle_input(&mut self, now: Millis, channel: Self::Channel, bytes: &[u8]);

    /// The deadline last returned by [`Flow::poll_timeout`] has passed.
    fn handle_timeout(&mut self, now: Millis);

    /// The transport took the datagram last returned by [`Flow::poll_transmit`] (the write
    /// resolved). A flow that times an answer from the end of its own sending, not from the
    /// request, uses it; by default it changes nothing.
    fn handle_transmitted(&mut self, now: Millis) {
        let _ = now;
    }

    /// Appends the next datagram to send to `buf` and describes it, or returns `None` when
    /// there is nothing to send now.
    #[must_use]
    fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> Option<Transmit<Self::Channel>>;

    /// The earliest moment the flow needs [`Flow::handle_timeout`], if any.
    #[must_use]
    fn poll_timeout(&self) -> Option<Millis>;

    /// The next event for the application, if any.
    #[must_use]
    fn poll_event(&mut self) -> Option<Self::Event>;
}

/// Metadata of one datagram written by [`Flow::poll_transmit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit<C> {
    /// Where to send it.
    pub channel: C,
    /// How many bytes were appended to the buffer.
    pub len: usize,
    /// Whether the transport must confirm delivery before the next send.
    pub delivery: Delivery,
}

/// How a datagram must be delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Confirmed by the transport (GATT write with response, MQTT QoS 1).
    WithResponse,
    /// Fire and forget (GATT write without response, MQTT QoS 0); the flow's own
    /// acknowledgement window covers loss.
    WithoutResponse,
}
