//! The two-party simulator: a central (an otaweb [`Flow`]) and a peripheral (the companion
//! firmware) over a simulated BLE link, on a virtual clock.
//!
//! The link model is the part of BLE that shapes an update's speed and failure modes:
//!
//! - **Connection events.** Data moves only at connection events, one every
//!   `interval`; at each event each direction carries at most `packets_per_event` values.
//!   The link's capacity is therefore `packets_per_event × value_size / interval`.
//! - **Value size.** A write without response must fit `att_mtu − 3` bytes; a larger one is
//!   an error of the sender (Web Bluetooth refuses it), counted and dropped.
//! - **Back-pressure.** The central's edge awaits each write, so it holds at most
//!   `tx_queue` writes in the link at once (an OS queue); the flow's next `poll_transmit`
//!   waits for room. Notifications from the peripheral queue the same way.
//! - **Latency.** A value sent at one event is handed to the receiver `latency` after it.
//! - **Faults** ([`Faults`]), drawn from a seeded PRNG so a failing run replays exactly:
//!   drop, duplicate, reorder (swap with the next value), corrupt (flip one bit) and
//!   disconnects at chosen moments.
//!
//! [`Pair::with_radio`] swaps the first two rules for a physical model ([`Radio`]): air time
//! per link-layer exchange from the PHY and the LL payload (DLE), ATT values fragmented into
//! LL packets, as many exchanges per event as fit the interval (the peripheral's packets ride
//! the same exchanges), a clock in microseconds under the millisecond one the flows see, and
//! an OS queue that either back-pressures or, as macOS and Windows do, drops a value written
//! while it is full ([`OsQueue`]). [`Pair::new`] keeps the value-counting model above.
//!
//! [`Pair::drive`] runs both sides until the central reports it is finished or a time limit
//! passes, jumping the clock straight to the next connection event or deadline, so a
//! simulated minute costs milliseconds.

#![allow(dead_code)] // Each test binary that includes this module uses a different part of it.

use std::collections::VecDeque;

use otaweb::flow::{Flow, Transmit};
use otaweb::time::{Millis, Span};

pub mod dfu;
pub mod gadget;

/// The peripheral side of the simulation: what the companion firmware exposes to its radio.
pub trait Peripheral {
    /// The central connected and enabled notifications.
    fn handle_connected(&mut self, now: Millis);
    /// The link dropped.
    fn handle_disconnected(&mut self, now: Millis);
    /// The central wrote `bytes` to the peripheral's write characteristic.
    fn handle_write(&mut self, now: Millis, bytes: &[u8]);
    /// Appends the next notification to `buf`; returns its length.
    fn poll_notify(&mut self, buf: &mut Vec<u8>) -> Option<usize>;
    /// The peripheral's next deadline, if any.
    fn poll_timeout(&self) -> Option<Millis>;
    /// The deadline has passed.
    fn handle_timeout(&mut self, now: Millis);
    /// Whether the firmware asked to restart (it then loses the link and boots again).
    fn take_restart_request(&mut self) -> bool;
    /// Reboots from persistent storage, as after a reset.
    fn restart(&mut self, now: Millis);
}

/// What the central reports to the simulator, besides its own events.
pub trait Central: Flow<Channel = ()> {
    /// Whether the update has finished (done, failed or staged) and driving can stop.
    fn finished(&self) -> bool;
    /// Whether the flow asked the edge to reconnect: after a link loss, or on a live link it
    /// gave up on (its peer fell silent), which the edge then drops first.
    fn wants_reconnect(&mut self) -> bool;
}

/// What the simulator must know of an update flow to drive it as the central.
pub trait Update: Flow<Channel = ()> {
    /// Whether the flow ended.
    fn is_finished(&self) -> bool;
    /// Whether `event` asks the edge to reconnect.
    fn asks_reconnect(event: &Self::Event) -> bool;
}

/// An update flow as the central: its events are taken as soon as an input produced them,
/// so a reconnect request is seen before the next connection rather than after it, and
/// each is logged with the time it came; deadlines that passed are counted.
pub struct Observed<F: Update> {
    /// The flow under test.
    pub flow: F,
    /// Every event, with the virtual time it came at.
    pub log: Vec<(Millis, F::Event)>,
    /// Deadlines of the flow that passed.
    pub timeouts: u32,
    now: Millis,
    queue: VecDeque<F::Event>,
    reconnect: bool,
}

impl<F: Update> Observed<F>
where
    F::Event: Clone,
{
    /// Wraps `flow`.
    pub fn new(flow: F) -> Self {
        Observed {
            flow,
            log: Vec::new(),
            timeouts: 0,
            now: Millis::ZERO,
            queue: VecDeque::new(),
            reconnect: false,
        }
    }

    fn take(&mut self, now: Millis) {
        self.now = now;
        while let Some(event) = self.flow.poll_event() {
            self.reconnect |= F::asks_reconnect(&event);
            self.log.push((now, event.clone()));
            self.queue.push_back(event);
        }
    }
}

impl<F: Update> Flow for Observed<F>
where
    F::Event: Clone,
{
    type Channel = ();
    type Event = F::Event;

    fn handle_connected(&mut self, now: Millis) {
        self.reconnect = false;
        self.flow.handle_connected(now);
        self.take(now);
    }

    fn handle_disconnected(&mut self, now: Millis) {
        self.flow.handle_disconnected(now);
        self.take(now);
    }

    fn handle_input(&mut self, now: Millis, channel: (), bytes: &[u8]) {
        self.flow.handle_input(now, channel, bytes);
        self.take(now);
    }

    fn handle_timeout(&mut self, now: Millis) {
        self.timeouts += u32::from(self.flow.poll_timeout().is_some_and(|t| now >= t));
        self.flow.handle_timeout(now);
        self.take(now);
    }

    fn handle_transmitted(&mut self, now: Millis) {
        self.flow.handle_transmitted(now);
    }

    fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> Option<Transmit<()>> {
        self.flow.poll_transmit(buf)
    }

    fn poll_timeout(&self) -> Option<Millis> {
        self.flow.poll_timeout()
    }

    fn poll_event(&mut self) -> Option<F::Event> {
        let now = self.now;
        self.take(now);
        self.queue.pop_front()
    }
}

impl<F: Update> Central for Observed<F>
where
    F::Event: Clone,
{
    fn finished(&self) -> bool {
        self.flow.is_finished()
    }

    fn wants_reconnect(&mut self) -> bool {
        self.reconnect
    }
}

/// BLE link parameters.
#[derive(Clone, Copy, Debug)]
pub struct LinkParams {
    /// ATT MTU negotiated by the stacks; values carry at most `att_mtu - 3` bytes.
    pub att_mtu: usize,
    /// Time between connection events.
    pub interval: Span,
    /// Values per direction per connection event.
    pub packets_per_event: usize,
    /// Delay from the event that carries a value to its delivery.
    pub latency: Span,
    /// Values a sender may have in flight in the link before it must wait.
    pub tx_queue: usize,
    /// Time the central's edge waits before reconnecting after a link loss.
    pub reconnect_delay: Span,
}

impl LinkParams {
    /// A typical desktop link: MTU 247, 15 ms interval, 4 values per event.
    pub const DESKTOP: LinkParams = LinkParams {
        att_mtu: 247,
        interval: Span(15),
        packets_per_event: 4,
        latency: Span(5),
        tx_queue: 16,
        reconnect_delay: Span(1_000),
    };

    /// Payload bytes per second the link can carry in one direction.
    pub fn capacity_bytes_per_sec(&self) -> f64 {
        (self.packets_per_event * (self.att_mtu - 3)) as f64 * 1000.0
            / self.interval.as_millis() as f64
    }
}

/// The BLE PHY of a [`Radio`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phy {
    /// LE 1M: 8 µs per byte, 1-byte preamble.
    Le1M,
    /// LE 2M: 4 µs per byte, 2-byte preamble.
    Le2M,
}

impl Phy {
    /// Air time of an LL data PDU with `payload` bytes: preamble, access address (4),
    /// header (2), payload, CRC (3).
    pub fn packet_us(self, payload: usize) -> u64 {
        let (preamble, us_per_byte) = match self {
            Phy::Le1M => (1, 8),
            Phy::Le2M => (2, 4),
        };
        (preamble + 4 + 2 + payload as u64 + 3) * us_per_byte
    }
}

/// What the central's OS does with a write without response while its queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OsQueue {
    /// The write waits for room (BlueZ; the edge awaits each write).
    BackPressure,
    /// The write resolves at once and the value is lost (CoreBluetooth, Windows).
    Drop,
}

/// The inter-frame space between packets, µs.
pub const T_IFS_US: u64 = 150;
/// L2CAP (4) and ATT (3) header bytes of a write command or notification.
pub const ATT_L2CAP_OVERHEAD: usize = 7;

/// A physical BLE link for [`Pair::with_radio`].
#[derive(Clone, Copy, Debug)]
pub struct Radio {
    /// The PHY.
    pub phy: Phy,
    /// Data length extension: LL payloads of 251 bytes rather than 27.
    pub dle: bool,
    /// ATT MTU; values carry at most `att_mtu - 3` bytes.
    pub att_mtu: usize,
    /// Connection interval, µs.
    pub interval_us: u64,
    /// The controllers' cap on LL exchanges per connection event.
    pub max_exchanges: usize,
    /// Values the central's OS queues before it back-pressures or drops.
    pub os_queue_len: usize,
    /// The central's OS queue behaviour.
    pub os_queue: OsQueue,
    /// Notifications the peripheral's stack queues (it always back-pressures).
    pub notify_queue_len: usize,
    /// From the exchange that completes a value to its delivery to the host, µs.
    pub latency_us: u64,
    /// Time the central's edge waits before reconnecting after a link loss.
    pub reconnect_delay: Span,
}

impl Radio {
    /// A link on `phy` with DLE, ATT MTU `att_mtu`, `interval_us`, at most `max_exchanges`
    /// exchanges per event, a back-pressured OS queue of 32 values and 1 ms host latency.
    pub fn new(phy: Phy, att_mtu: usize, interval_us: u64, max_exchanges: usize) -> Radio {
        Radio {
            phy,
            dle: true,
            att_mtu,
            interval_us,
            max_exchanges,
            os_queue_len: 32,
            os_queue: OsQueue::BackPressure,
            notify_queue_len: 32,
            latency_us: 1_000,
            reconnect_delay: Span(1_000),
        }
    }

    /// The largest LL payload.
    pub fn ll_payload(&self) -> usize {
        if self.dle {
            251
        } else {
            27
        }
    }

    /// LL packet payload sizes that carry an ATT value of `len` bytes.
    pub fn fragments(&self, len: usize) -> impl Iterator<Item = usize> {
        let total = len + ATT_L2CAP_OVERHEAD;
        let max = self.ll_payload();
        (0..total.div_ceil(max)).map(move |i| (total - i * max).min(max))
    }

    /// Air time of one exchange: the central's packet and the peripheral's, each followed
    /// by an inter-frame space.
    pub fn exchange_us(&self, up: usize, down: usize) -> u64 {
        self.phy.packet_us(up) + self.phy.packet_us(down) + 2 * T_IFS_US
    }

    /// The same link model as value counts, for what reads [`Pair::params`].
    pub fn link_params(&self) -> LinkParams {
        LinkParams {
            att_mtu: self.att_mtu,
            interval: Span(self.interval_us.div_ceil(1000)),
            packets_per_event: self.max_exchanges,
            latency: Span(self.latency_us.div_ceil(1000)),
            tx_queue: self.os_queue_len,
            reconnect_delay: self.reconnect_delay,
        }
    }

    /// Connection events that carry `values` (ATT value sizes, central to peripheral, in
    /// order, starting at an event's anchor) with empty packets back, and the time used in
    /// the last one, µs.
    pub fn events_for(&self, values: &[usize]) -> (u64, u64) {
        let mut events = 1;
        let (mut used, mut exchanges) = (0, 0);
        for len in values {
            for frag in self.fragments(*len) {
                let cost = self.exchange_us(frag, 0);
                if exchanges == self.max_exchanges || used + cost > self.interval_us {
                    events += 1;
                    used = 0;
                    exchanges = 0;
                }
                used += cost;
                exchanges += 1;
            }
        }
        (events, used)
    }

    /// Payload bytes per second the link carries one way: full values (`att_mtu - 3`)
    /// back to back, empty packets back, every event filled.
    pub fn capacity_bytes_per_sec(&self) -> f64 {
        let value = self.att_mtu - 3;
        // Enough values to fill a thousand events, so the last one's partial fill is noise.
        let per_event = (self.interval_us
            / self.exchange_us(self.fragments(value).last().unwrap_or(0), 0))
        .max(1);
        let n = (1000 * per_event as usize).max(1000);
        let (events, used) = self.events_for(&vec![value; n]);
        let secs = ((events - 1) * self.interval_us + used) as f64 / 1e6;
        (n * value) as f64 / secs
    }
}

/// The state of a [`Radio`] link inside a [`Pair`].
struct RadioState {
    radio: Radio,
    /// The next event's anchor, µs.
    anchor_us: u64,
    /// LL payload bytes of the head value of each lane already carried.
    up_sent: usize,
    down_sent: usize,
}

/// Fault rates (per value, 0.0–1.0) and scheduled disconnects.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// PRNG seed: the same seed replays the same faults.
    pub seed: u64,
    /// Probability a value is lost.
    pub drop: f64,
    /// Probability a value is delivered twice.
    pub duplicate: f64,
    /// Probability a value swaps places with the next one in its direction.
    pub reorder: f64,
    /// Probability one bit of a value is flipped.
    pub corrupt: f64,
    /// Drop the link when the central has sent this many values (each at most once).
    pub disconnect_after_writes: Vec<u64>,
}

/// Counters of one simulated run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Values the central wrote.
    pub writes: u64,
    /// Payload bytes the central wrote.
    pub write_bytes: u64,
    /// Notifications the peripheral sent.
    pub notifications: u64,
    /// Values lost to the fault injector.
    pub dropped: u64,
    /// Values delivered twice.
    pub duplicated: u64,
    /// Values swapped with their successor.
    pub reordered: u64,
    /// Values with a flipped bit.
    pub corrupted: u64,
    /// Link losses (injected or by restart).
    pub disconnects: u64,
    /// Values larger than the ATT MTU allows (a sender bug).
    pub oversized: u64,
    /// Writes a dropping OS queue ([`OsQueue::Drop`]) lost because it was full.
    pub os_dropped: u64,
    /// Connection events that carried at least one value's packet.
    pub busy_events: u64,
}

/// A xorshift64* PRNG: small, seeded, and the same on every platform.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (zero is replaced, xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

struct InFlight {
    deliver_at: Millis,
    bytes: Vec<u8>,
}

/// One direction of the link.
#[derive(Default)]
struct Lane {
    /// Sent, waiting for a connection event.
    queued: Vec<Vec<u8>>,
    /// Carried by an event, waiting out the latency.
    flying: Vec<InFlight>,
}

impl Lane {
    fn occupancy(&self) -> usize {
        self.queued.len() + self.flying.len()
    }

    fn clear(&mut self) {
        self.queued.clear();
        self.flying.clear();
    }
}

/// A central and a peripheral joined by a simulated link.
pub struct Pair<C: Central, P> {
    /// The central (the otaweb flow under test).
    pub central: C,
    /// The peripheral (the companion firmware).
    pub peripheral: P,
    /// The virtual clock.
    pub now: Millis,
    /// Link parameters.
    pub params: LinkParams,
    /// Counters.
    pub stats: Stats,
    /// Every event the central reported, in order.
    pub events: Vec<C::Event>,
    faults: Faults,
    rng: Rng,
    up: Lane,
    down: Lane,
    connected: bool,
    reconnect_at: Option<Millis>,
    next_event: Millis,
    pending_write: Option<Vec<u8>>,
    pending_notify: Option<Vec<u8>>,
    /// While set, the link is not (re)made: the central is out of range.
    out_of_range: bool,
    /// The physical link model, for a pair made with [`Pair::with_radio`].
    radio: Option<RadioState>,
}

impl<C: Central, P: Peripheral> Pair<C, P> {
    /// Joins `central` and `peripheral`; the link comes up on the first `drive`.
    pub fn new(central: C, peripheral: P, params: LinkParams, faults: Faults) -> Self {
        let rng = Rng::new(faults.seed);
        Pair {
            central,
            peripheral,
            now: Millis::ZERO,
            params,
            stats: Stats::default(),
            events: Vec::new(),
            faults,
            rng,
            up: Lane::default(),
            down: Lane::default(),
            connected: false,
            reconnect_at: Some(Millis::ZERO),
            next_event: Millis::ZERO,
            pending_write: None,
            pending_notify: None,
            out_of_range: false,
            radio: None,
        }
    }

    /// Joins `central` and `peripheral` over the physical link `radio` (module docs).
    pub fn with_radio(central: C, peripheral: P, radio: Radio, faults: Faults) -> Self {
        let mut pair = Pair::new(central, peripheral, radio.link_params(), faults);
        pair.radio = Some(RadioState {
            radio,
            anchor_us: 0,
            up_sent: 0,
            down_sent: 0,
        });
        pair
    }

    /// Keeps the central from connecting (`true`) or lets it again (`false`).
    pub fn set_out_of_range(&mut self, out: bool) {
        self.out_of_range = out;
    }

    /// Runs until the central is finished or `limit` of virtual time has passed; returns
    /// whether the central finished.
    pub fn drive(&mut self, limit: Span) -> bool {
        let end = self.now + limit;
        while self.now <= end {
            self.step();
            if self.central.finished() && self.idle() {
                break;
            }
            match self.next_wakeup() {
                Some(t) if t <= end => self.now = t.max(self.now),
                _ => break,
            }
        }
        // A disconnect late in the last step can leave events the step did not take.
        while let Some(event) = self.central.poll_event() {
            self.events.push(event);
        }
        self.central.finished()
    }

    /// Drops the link now, as a radio fade would.
    pub fn disconnect(&mut self) {
        if !self.connected {
            return;
        }
        self.connected = false;
        self.stats.disconnects += 1;
        self.up.clear();
        self.down.clear();
        self.pending_write = None;
        self.pending_notify = None;
        if let Some(r) = &mut self.radio {
            r.up_sent = 0;
            r.down_sent = 0;
        }
        self.central.handle_disconnected(self.now);
        self.peripheral.handle_disconnected(self.now);
    }

    fn idle(&self) -> bool {
        self.up.occupancy() == 0
            && self.down.occupancy() == 0
            && self.pending_write.is_none()
            && self.pending_notify.is_none()
    }

    /// One pass at the current time: connect, time out, deliver, send, restart.
    fn step(&mut self) {
        if !self.connected && !self.out_of_range && self.reconnect_at.is_some_and(|t| self.now >= t)
        {
            self.reconnect_at = None;
            self.connected = true;
            self.next_event = self.now;
            if let Some(r) = &mut self.radio {
                r.anchor_us = self.now.0 * 1000;
            }
            self.peripheral.handle_connected(self.now);
            self.central.handle_connected(self.now);
        }
        if self.central.poll_timeout().is_some_and(|t| self.now >= t) {
            self.central.handle_timeout(self.now);
        }
        if self
            .peripheral
            .poll_timeout()
            .is_some_and(|t| self.now >= t)
        {
            self.peripheral.handle_timeout(self.now);
        }
        if self.connected {
            self.deliver();
            if let Some(r) = &mut self.radio {
                // Events nothing was queued for passed unseen: the next one is due now or later.
                while r.anchor_us.div_ceil(1000) < self.now.0 {
                    r.anchor_us += r.radio.interval_us;
                }
                self.next_event = Millis(r.anchor_us.div_ceil(1000));
            }
            if self.now >= self.next_event {
                if self.radio.is_some() {
                    self.radio_event();
                } else {
                    self.connection_event();
                    self.next_event = self.now + self.params.interval;
                }
            }
            self.pump();
        }
        while let Some(event) = self.central.poll_event() {
            self.events.push(event);
        }
        // The firmware sends what it queued before it goes down, so the central hears the
        // answer that asked for the restart (the firmware's host-loop contract).
        let sent = !self.connected || (self.down.occupancy() == 0 && self.pending_notify.is_none());
        if sent && self.peripheral.take_restart_request() {
            self.disconnect();
            self.peripheral.restart(self.now);
            self.reconnect_at = Some(self.now + self.params.reconnect_delay);
        }
        // A central that gave up on a live link (its peer fell silent) has the edge drop it.
        if self.connected && self.central.wants_reconnect() {
            self.disconnect();
        }
        if !self.connected && self.reconnect_at.is_none() && self.central.wants_reconnect() {
            self.reconnect_at = Some(self.now + self.params.reconnect_delay);
        }
    }

    /// Whether the central's OS queue takes another write. Over a [`Radio`] only values not
    /// yet on the air count: the controller took the others.
    fn up_room(&self) -> bool {
        match &self.radio {
            None => self.up.occupancy() < self.params.tx_queue,
            Some(_) => self.up.queued.len() < self.params.tx_queue,
        }
    }

    /// Whether the peripheral's stack takes another notification.
    fn down_room(&self) -> bool {
        match &self.radio {
            None => self.down.occupancy() < self.params.tx_queue,
            Some(r) => self.down.queued.len() < r.radio.notify_queue_len,
        }
    }

    /// Moves values from the flows into the lanes while the OS queues have room.
    fn pump(&mut self) {
        let max_value = self.params.att_mtu - 3;
        loop {
            let mut progressed = false;
            let drops = self
                .radio
                .as_ref()
                .is_some_and(|r| r.radio.os_queue == OsQueue::Drop);
            if drops || self.up_room() {
                if let Some(bytes) = self.pending_write.take().or_else(|| {
                    let mut buf = Vec::new();
                    self.central.poll_transmit(&mut buf).map(|t| {
                        buf.truncate(t.len);
                        buf
                    })
                }) {
                    progressed = true;
                    self.stats.writes += 1;
                    self.stats.write_bytes += bytes.len() as u64;
                    if bytes.len() > max_value {
                        self.stats.oversized += 1;
                    } else if drops && self.up.queued.len() >= self.params.tx_queue {
                        self.stats.os_dropped += 1;
                    } else {
                        self.up.queued.push(bytes);
                    }
                    // Queued in the OS is when a browser resolves a write without response.
                    self.central.handle_transmitted(self.now);
                    if self
                        .faults
                        .disconnect_after_writes
                        .contains(&self.stats.writes)
                    {
                        self.disconnect();
                        return;
                    }
                }
            }
            if self.down_room() {
                let notify = self.pending_notify.take().or_else(|| {
                    let mut buf = Vec::new();
                    self.peripheral.poll_notify(&mut buf).map(|len| {
                        buf.truncate(len);
                        buf
                    })
                });
                if let Some(bytes) = notify {
                    progressed = true;
                    self.stats.notifications += 1;
                    if bytes.len() > max_value {
                        self.stats.oversized += 1;
                    } else {
                        self.down.queued.push(bytes);
                    }
                }
            }
            if !progressed {
                return;
            }
        }
    }

    /// A connection event: each direction carries up to `packets_per_event` queued values,
    /// through the fault injector.
    fn connection_event(&mut self) {
        let deliver_at = self.now + self.params.latency;
        for lane in [&mut self.up, &mut self.down] {
            let n = lane.queued.len().min(self.params.packets_per_event);
            let mut carried: Vec<Vec<u8>> = lane.queued.drain(..n).collect();
            let mut i = 0;
            while i < carried.len() {
                if self.rng.chance(self.faults.reorder) && i + 1 < carried.len() {
                    carried.swap(i, i + 1);
                    self.stats.reordered += 1;
                }
                i += 1;
            }
            for mut bytes in carried {
                if self.rng.chance(self.faults.drop) {
                    self.stats.dropped += 1;
                    continue;
                }
                if self.rng.chance(self.faults.corrupt) && !bytes.is_empty() {
                    let bit = self.rng.below(bytes.len() as u64 * 8);
                    bytes[(bit / 8) as usize] ^= 1 << (bit % 8);
                    self.stats.corrupted += 1;
                }
                if self.rng.chance(self.faults.duplicate) {
                    self.stats.duplicated += 1;
                    lane.flying.push(InFlight {
                        deliver_at,
                        bytes: bytes.clone(),
                    });
                }
                lane.flying.push(InFlight { deliver_at, bytes });
            }
        }
    }

    /// A connection event over a [`Radio`]: exchanges while either side has LL packets and
    /// the event has room, the central's OS refilling its queue between them.
    fn radio_event(&mut self) {
        let Some(state) = self.radio.as_ref() else {
            return;
        };
        let radio = state.radio;
        let start = state.anchor_us;
        let ll = radio.ll_payload();
        let (mut used, mut exchanges, mut busy) = (0, 0, false);
        loop {
            let Some(state) = self.radio.as_ref() else {
                return;
            };
            let (up_sent, down_sent) = (state.up_sent, state.down_sent);
            let next = |lane: &Lane, sent: usize| {
                lane.queued
                    .first()
                    .map(|v| (v.len() + ATT_L2CAP_OVERHEAD - sent).min(ll))
            };
            let up = next(&self.up, up_sent);
            let down = next(&self.down, down_sent);
            if up.is_none() && down.is_none() {
                break;
            }
            let cost = radio.exchange_us(up.unwrap_or(0), down.unwrap_or(0));
            if exchanges == radio.max_exchanges || used + cost > radio.interval_us {
                break;
            }
            used += cost;
            exchanges += 1;
            busy = true;
            let deliver_at = Millis((start + used + radio.latency_us).div_ceil(1000));
            let (mut up_sent, mut down_sent) = (up_sent, down_sent);
            if let Some(f) = up {
                up_sent += f;
                if up_sent == self.up.queued[0].len() + ATT_L2CAP_OVERHEAD {
                    up_sent = 0;
                    let bytes = self.up.queued.remove(0);
                    self.carry(true, bytes, deliver_at);
                }
            }
            if let Some(f) = down {
                down_sent += f;
                if down_sent == self.down.queued[0].len() + ATT_L2CAP_OVERHEAD {
                    down_sent = 0;
                    let bytes = self.down.queued.remove(0);
                    self.carry(false, bytes, deliver_at);
                }
            }
            if let Some(state) = self.radio.as_mut() {
                state.up_sent = up_sent;
                state.down_sent = down_sent;
            }
            self.pump();
            if !self.connected {
                return;
            }
        }
        self.stats.busy_events += u64::from(busy);
        if let Some(state) = self.radio.as_mut() {
            state.anchor_us += radio.interval_us;
            self.next_event = Millis(state.anchor_us.div_ceil(1000));
        }
    }

    /// A value's last LL packet went over the air: through the fault injector (drop,
    /// corrupt, duplicate; values never reorder on a physical link) into the lane's flight.
    fn carry(&mut self, up: bool, mut bytes: Vec<u8>, deliver_at: Millis) {
        if self.rng.chance(self.faults.drop) {
            self.stats.dropped += 1;
            return;
        }
        if self.rng.chance(self.faults.corrupt) && !bytes.is_empty() {
            let bit = self.rng.below(bytes.len() as u64 * 8);
            bytes[(bit / 8) as usize] ^= 1 << (bit % 8);
            self.stats.corrupted += 1;
        }
        let lane = if up { &mut self.up } else { &mut self.down };
        if self.rng.chance(self.faults.duplicate) {
            self.stats.duplicated += 1;
            lane.flying.push(InFlight {
                deliver_at,
                bytes: bytes.clone(),
            });
        }
        lane.flying.push(InFlight { deliver_at, bytes });
    }

    /// Hands over every value whose latency has passed, in order.
    fn deliver(&mut self) {
        while let Some(pos) = self.up.flying.iter().position(|f| f.deliver_at <= self.now) {
            let value = self.up.flying.remove(pos);
            self.peripheral.handle_write(self.now, &value.bytes);
            if !self.connected {
                return;
            }
        }
        while let Some(pos) = self
            .down
            .flying
            .iter()
            .position(|f| f.deliver_at <= self.now)
        {
            let value = self.down.flying.remove(pos);
            self.central.handle_input(self.now, (), &value.bytes);
        }
    }

    /// The next moment anything can happen.
    fn next_wakeup(&mut self) -> Option<Millis> {
        let mut t: Option<Millis> = None;
        let mut consider = |c: Option<Millis>| {
            if let Some(c) = c {
                t = Some(t.map_or(c, |t| t.min(c)));
            }
        };
        consider(self.reconnect_at);
        consider(self.central.poll_timeout());
        consider(self.peripheral.poll_timeout());
        if self.connected {
            if !self.up.queued.is_empty() || !self.down.queued.is_empty() {
                consider(Some(self.next_event));
            }
            for f in self.up.flying.iter().chain(self.down.flying.iter()) {
                consider(Some(f.deliver_at));
            }
        }
        // Never stand still: a wakeup at the current time that changes nothing would loop.
        t.map(|t| if t <= self.now { self.now + Span(1) } else { t })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otaweb::flow::{Delivery, Transmit};

    /// Writes `b"go"` once per connection, finishes on `b"ok"`, and can give up on a link.
    #[derive(Default)]
    struct Toy {
        connects: u32,
        to_send: bool,
        heard_ok: bool,
        give_up_on_first_link: bool,
    }

    impl Flow for Toy {
        type Channel = ();
        type Event = ();
        fn handle_connected(&mut self, _now: Millis) {
            self.connects += 1;
            self.to_send = true;
        }
        fn handle_disconnected(&mut self, _now: Millis) {}
        fn handle_input(&mut self, _now: Millis, _ch: (), bytes: &[u8]) {
            self.heard_ok |= bytes == b"ok";
        }
        fn handle_timeout(&mut self, _now: Millis) {}
        fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> Option<Transmit<()>> {
            std::mem::take(&mut self.to_send).then(|| {
                buf.extend_from_slice(b"go");
                Transmit {
                    channel: (),
                    len: 2,
                    delivery: Delivery::WithoutResponse,
                }
            })
        }
        fn poll_timeout(&self) -> Option<Millis> {
            None
        }
        fn poll_event(&mut self) -> Option<()> {
            None
        }
    }

    impl Central for Toy {
        fn finished(&self) -> bool {
            self.heard_ok
        }
        fn wants_reconnect(&mut self) -> bool {
            self.give_up_on_first_link && self.connects == 1
        }
    }

    /// Answers `b"go"` with `b"ok"` and asks to restart, as an apply does.
    #[derive(Default)]
    struct Device {
        outbox: Vec<Vec<u8>>,
        restart: bool,
        connects: u32,
        restarts: u32,
    }

    impl Peripheral for Device {
        fn handle_connected(&mut self, _now: Millis) {
            self.connects += 1;
        }
        fn handle_disconnected(&mut self, _now: Millis) {}
        fn handle_write(&mut self, _now: Millis, bytes: &[u8]) {
            if bytes == b"go" {
                self.outbox.push(b"ok".to_vec());
                self.restart = true;
            }
        }
        fn poll_notify(&mut self, buf: &mut Vec<u8>) -> Option<usize> {
            let value = self.outbox.pop()?;
            buf.extend_from_slice(&value);
            Some(value.len())
        }
        fn poll_timeout(&self) -> Option<Millis> {
            None
        }
        fn handle_timeout(&mut self, _now: Millis) {}
        fn take_restart_request(&mut self) -> bool {
            std::mem::take(&mut self.restart)
        }
        fn restart(&mut self, _now: Millis) {
            self.restarts += 1;
        }
    }

    #[test]
    fn radio_air_times_and_capacities_match_the_published_figures() {
        // PEERS.md: 2M, 251-byte LL packet 1048 µs + 44 µs empty + 2 × 150 µs = 1392 µs.
        let r2 = Radio::new(Phy::Le2M, 247, 7_500, usize::MAX);
        assert_eq!(r2.exchange_us(251, 0), 1392);
        let r1 = Radio::new(Phy::Le1M, 247, 7_500, usize::MAX);
        assert_eq!(r1.exchange_us(251, 0), 2468);
        // A 244-byte value is one LL packet with DLE, ten without.
        assert_eq!(r2.fragments(244).collect::<Vec<_>>(), [251]);
        let no_dle = Radio { dle: false, ..r2 };
        assert_eq!(no_dle.fragments(244).count(), 10);
        // 5 exchanges fit 7.5 ms on 2M, 3 on 1M (within the last event's partial fill).
        let near = |got: f64, want: f64| (got / want - 1.0).abs() < 0.005;
        assert!(near(r2.capacity_bytes_per_sec(), 5.0 * 244.0 / 0.0075));
        assert!(near(r1.capacity_bytes_per_sec(), 3.0 * 244.0 / 0.0075));
        let capped = Radio::new(Phy::Le2M, 247, 30_000, 6);
        assert!(near(capped.capacity_bytes_per_sec(), 6.0 * 244.0 / 0.03));
    }

    /// Writes `n` values of `len` bytes at once, and finishes when the device heard `n`.
    struct Burst {
        n: usize,
        len: usize,
    }

    impl Flow for Burst {
        type Channel = ();
        type Event = ();
        fn handle_connected(&mut self, _now: Millis) {}
        fn handle_disconnected(&mut self, _now: Millis) {}
        fn handle_input(&mut self, _now: Millis, _ch: (), _bytes: &[u8]) {}
        fn handle_timeout(&mut self, _now: Millis) {}
        fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> Option<Transmit<()>> {
            self.n = self.n.checked_sub(1)?;
            buf.resize(buf.len() + self.len, 0x55);
            Some(Transmit {
                channel: (),
                len: self.len,
                delivery: Delivery::WithoutResponse,
            })
        }
        fn poll_timeout(&self) -> Option<Millis> {
            None
        }
        fn poll_event(&mut self) -> Option<()> {
            None
        }
    }

    impl Central for Burst {
        fn finished(&self) -> bool {
            self.n == 0
        }
        fn wants_reconnect(&mut self) -> bool {
            false
        }
    }

    #[derive(Default)]
    struct Sink {
        heard: usize,
    }

    impl Peripheral for Sink {
        fn handle_connected(&mut self, _now: Millis) {}
        fn handle_disconnected(&mut self, _now: Millis) {}
        fn handle_write(&mut self, _now: Millis, _bytes: &[u8]) {
            self.heard += 1;
        }
        fn poll_notify(&mut self, _buf: &mut Vec<u8>) -> Option<usize> {
            None
        }
        fn poll_timeout(&self) -> Option<Millis> {
            None
        }
        fn handle_timeout(&mut self, _now: Millis) {}
        fn take_restart_request(&mut self) -> bool {
            false
        }
        fn restart(&mut self, _now: Millis) {}
    }

    #[test]
    fn a_dropping_os_queue_loses_what_it_cannot_hold_and_a_waiting_one_does_not() {
        for (queue, heard) in [(OsQueue::Drop, 20), (OsQueue::BackPressure, 100)] {
            let radio = Radio {
                os_queue: queue,
                os_queue_len: 20,
                ..Radio::new(Phy::Le2M, 247, 7_500, usize::MAX)
            };
            let burst = Burst { n: 100, len: 244 };
            let mut pair = Pair::with_radio(burst, Sink::default(), radio, Faults::default());
            pair.drive(Span::from_secs(10));
            assert_eq!(pair.peripheral.heard, heard, "{queue:?}");
            assert_eq!(pair.stats.os_dropped, (100 - heard) as u64);
            // 5 values an event on 2M at 7.5 ms.
            assert_eq!(pair.stats.busy_events, heard.div_ceil(5) as u64);
        }
    }

    #[test]
    fn a_restart_sends_what_was_queued_first() {
        let mut pair = Pair::new(
            Toy::default(),
            Device::default(),
            LinkParams::DESKTOP,
            Faults::default(),
        );
        assert!(pair.drive(Span::from_secs(10)));
        assert_eq!(pair.peripheral.restarts, 1);
        assert_eq!(pair.stats.notifications, 1);
    }

    #[test]
    fn a_live_link_the_central_gave_up_on_is_dropped_and_made_again() {
        let toy = Toy {
            give_up_on_first_link: true,
            ..Toy::default()
        };
        let mut pair = Pair::new(
            toy,
            Device::default(),
            LinkParams::DESKTOP,
            Faults::default(),
        );
        assert!(pair.drive(Span::from_secs(10)));
        assert_eq!(pair.central.connects, 2);
        assert_eq!(pair.peripheral.connects, 2);
        // The dropped link, then the restart.
        assert_eq!(pair.stats.disconnects, 2);
    }
}
