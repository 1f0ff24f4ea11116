//! A sans-IO MQTT 3.1.1 client session: CONNECT and CONNACK, subscriptions, QoS 0 and 1
//! publishing with retries, keepalive, and resumption across reconnects.
//!
//! Contract. [`MqttSession`] implements [`Flow`] with channel `()`: the edge owns one byte
//! stream to a broker (a WebSocket with the `mqtt` subprotocol in the browser, a TCP socket
//! natively), reports it with [`Flow::handle_connected`] and [`Flow::handle_disconnected`],
//! feeds every received chunk to [`Flow::handle_input`] whatever its boundaries, and writes
//! every datagram [`Flow::poll_transmit`] yields, in order (each one is one whole MQTT
//! packet; [`Delivery::WithoutResponse`], since the stream is reliable and the session keeps
//! its own acknowledgements). Commands ([`MqttSession::subscribe`],
//! [`MqttSession::publish`], ...) take `now` and may be called in any state: what cannot go
//! out yet waits for the next accepted CONNACK. The layer above (the EnOS flow) owns a
//! session and forwards these calls.
//!
//! ```text
//!  Idle ──connected──▶ Connecting ──CONNACK 0──▶ Connected ──disconnect()──▶ Closed
//!                      │  CONNECT out    │ refusal, timeout,   │ PINGRESP late, retries out,
//!                      │                 │ malformed input     │ malformed input
//!                      │                 ▼                     ▼
//!                      │              Dropping ◀───────────────┘   (event LinkLost/Failed;
//!                      │                 │ disconnected              the edge closes)
//!                      └─disconnected──▶ Down ──connected──▶ Connecting …
//! ```
//!
//! What survives a lost link: subscriptions, unacknowledged QoS 1 messages and messages
//! published while offline. After the next accepted CONNACK the session re-subscribes every
//! filter (one SUBSCRIBE each), re-sends pending UNSUBSCRIBEs, then re-sends the
//! unacknowledged QoS 1 messages in their original order with DUP set and their original
//! packet ids ([MQTT-4.4.0-1]), then the messages queued offline. Subscribing first means a
//! reply to a re-sent request finds its subscription in place: a broker handles one
//! connection's packets in order.
//!
//! Timers (all in [`SessionConfig`]): CONNACK within 30 s of connecting (the EnOS SDKs'
//! connect timeout, `protocols/enos_microchip.md` A3); a PINGREQ when nothing has been sent
//! for the keepalive (60 s by default, A3), and the PINGRESP within 15 s; an unacknowledged
//! SUBSCRIBE, UNSUBSCRIBE or QoS 1 PUBLISH is re-sent after 20 s (a PUBLISH with DUP), and
//! after [`SessionConfig::max_attempts`] sends on one connection the link counts as lost
//! ([`LinkLost::RetriesExhausted`]).
//!
//! Reconnecting is the edge's job: the session never opens a transport. When the link is
//! down, [`MqttSession::poll_reconnect_delay`] says how long to wait before the next attempt:
//! 1 s after the first loss, doubling with each further failed attempt up to 30 s, and back to
//! 1 s after an accepted CONNACK. It says `None` while a transport is up, after
//! [`MqttSession::disconnect`], and after a failure that reconnecting unchanged cannot mend.
//!
//! Choices where the standard or the notes leave room:
//!
//! - Every lost connection ends in exactly one event: [`MqttEvent::LinkLost`] when the error
//!   is [`Error::retryable`] (a dropped transport, a timeout, CONNACK "server unavailable"),
//!   [`MqttEvent::Failed`] otherwise (any other CONNACK refusal, with [`crate::error::Vendor::Mqtt`], or
//!   malformed or out-of-place packets from the broker). A transport that fails to open
//!   (the edge calls [`Flow::handle_disconnected`] without [`Flow::handle_connected`]) counts
//!   as a lost connection too, so the backoff grows while the broker is unreachable.
//! - The session sends nothing but CONNECT before CONNACK, although 3.1.1 allows it: a
//!   refused CONNECT then costs no re-sends. A packet other than CONNACK first is malformed.
//! - Re-subscribing happens on every CONNACK, even with a session present: it is harmless
//!   (a SUBSCRIBE replaces an equal subscription) and covers brokers that lose sessions.
//!   Unacknowledged QoS 1 messages are re-sent with a clean session as well, where the
//!   standard allows dropping them: EnOS progress reports should arrive at least once.
//! - Incoming QoS 1 messages are acknowledged at once and delivered every time they arrive,
//!   DUP or not (at least once: the layer above matches EnOS replies by id). Messages on
//!   topics never subscribed are delivered too: EnOS sends its commands without a
//!   subscription (A3).
//! - A SUBACK refusal (0x80) drops that subscription and emits
//!   [`MqttEvent::SubscribeRefused`]; the session goes on. Acknowledgements for unknown
//!   packet ids (late answers to a re-send) are ignored.
//! - [`SessionConfig::max_queued`] bounds QoS 1 messages awaiting PUBACK plus QoS 0 messages
//!   awaiting a connection; a publish beyond it is refused as misuse (the application should
//!   pace itself on [`MqttEvent::Published`]).

use alloc::collections::VecDeque;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::error::{DecodeError, Error, LinkLost, Malformed, Misuse, Refusal};
use crate::flow::{Delivery, Flow, Transmit};
use crate::time::{Millis, Span};
use crate::wire::mqtt::{
    is_valid_topic_filter, is_valid_topic_name, ConnectRepr, Decoder, Packet, PacketId, PacketRepr,
    PublishRepr, QoS, QosPid, SubackCode, SubscribeRepr, Subscription, UnsubscribeRepr,
};

/// The keepalive the EnOS SDKs use: 60 s (A3).
pub const DEFAULT_KEEP_ALIVE_SECS: u16 = 60;
/// The default cap on a received packet: 256 KiB, far above any EnOS JSON message.
pub const DEFAULT_MAX_PACKET_LEN: usize = 256 * 1024;

const WAIT_CONNACK: &str = "CONNACK";
const WAIT_PINGRESP: &str = "PINGRESP";
/// What [`Malformed`] names when the broker sends a packet before CONNACK.
const BEFORE_CONNACK_WHAT: &str = "MQTT packet before CONNACK";
/// What [`Malformed`] names when the broker sends a packet only a client sends, or a
/// second CONNACK.
const OUT_OF_PLACE_WHAT: &str = "MQTT packet a broker does not send here";
/// What [`Malformed`] names when a SUBACK does not answer one filter.
const SUBACK_WHAT: &str = "MQTT SUBACK packet";

/// What goes into CONNECT. `Debug` hides the password (it is the EnOS sign, or a broker
/// login), so options in a log or a test failure leak nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// The client identifier (for EnOS, the decorated id of the sign).
    pub client_id: String,
    /// The user name.
    pub username: Option<String>,
    /// The password; allowed only with a user name.
    pub password: Option<Vec<u8>>,
    /// The keepalive in seconds; 0 turns pings off.
    pub keep_alive: u16,
    /// Ask the broker for a new session on every connect.
    pub clean_session: bool,
}

impl core::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("keep_alive", &self.keep_alive)
            .field("clean_session", &self.clean_session)
            .finish()
    }
}

impl ConnectOptions {
    /// Options for `client_id` with no login, a 60 s keepalive and a clean session.
    #[must_use]
    pub fn new(client_id: impl Into<String>) -> Self {
        ConnectOptions {
            client_id: client_id.into(),
            username: None,
            password: None,
            keep_alive: DEFAULT_KEEP_ALIVE_SECS,
            clean_session: true,
        }
    }

    /// The same options with a user name and password.
    #[must_use]
    pub fn with_login(mut self, username: impl Into<String>, password: impl Into<Vec<u8>>) -> Self {
        self.username = Some(username.into());
        self.password = Some(password.into());
        self
    }

    fn repr(&self) -> ConnectRepr<'_> {
        ConnectRepr {
            client_id: &self.client_id,
            clean_session: self.clean_session,
            keep_alive: self.keep_alive,
            username: self.username.as_deref(),
            password: self.password.as_deref(),
        }
    }

    fn keep_alive_span(&self) -> Option<Span> {
        (self.keep_alive > 0).then(|| Span::from_secs(u64::from(self.keep_alive)))
    }
}

/// How the session times, retries and bounds its work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// From connecting to CONNACK (30 s).
    pub connack_timeout: Span,
    /// From a SUBSCRIBE, UNSUBSCRIBE or QoS 1 PUBLISH to its acknowledgement, before it is
    /// sent again (20 s).
    pub ack_timeout: Span,
    /// From PINGREQ to PINGRESP (15 s).
    pub ping_timeout: Span,
    /// Sends of one request on one connection before the link counts as lost (3).
    pub max_attempts: u32,
    /// The largest packet accepted from the broker, fixed header included (256 KiB).
    pub max_packet_len: usize,
    /// QoS 1 messages awaiting PUBACK plus QoS 0 messages awaiting a connection (256).
    pub max_queued: usize,
    /// The reconnect delay after the first loss (1 s).
    pub min_reconnect_delay: Span,
    /// The reconnect delay's ceiling (30 s).
    pub max_reconnect_delay: Span,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            connack_timeout: Span::from_secs(30),
            ack_timeout: Span::from_secs(20),
            ping_timeout: Span::from_secs(15),
            max_attempts: 3,
            max_packet_len: DEFAULT_MAX_PACKET_LEN,
            max_queued: 256,
            min_reconnect_delay: Span::from_secs(1),
            max_reconnect_delay: Span::from_secs(30),
        }
    }
}

/// Where the session stands (see the diagram in the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// Never connected.
    Idle,
    /// CONNECT sent, awaiting CONNACK.
    Connecting,
    /// CONNACK accepted.
    Connected,
    /// The session gave up on this connection; the edge should close the transport.
    Dropping,
    /// The transport is down; reconnect after [`MqttSession::poll_reconnect_delay`].
    Down,
    /// Closed by [`MqttSession::disconnect`].
    Closed,
}

/// What the session reports to the layer above.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MqttEvent {
    /// The broker accepted CONNECT.
    Connected {
        /// The broker resumed a stored session.
        session_present: bool,
    },
    /// A message arrived (already acknowledged if QoS 1).
    Message {
        /// Its topic.
        topic: String,
        /// Its payload.
        payload: Vec<u8>,
        /// The QoS it came with.
        qos: QoS,
        /// The broker kept it as the topic's retained message.
        retain: bool,
        /// The broker marked it as a possible repeat.
        dup: bool,
    },
    /// The broker acknowledged a QoS 1 message.
    Published {
        /// The id [`MqttSession::publish`] returned.
        packet_id: PacketId,
    },
    /// The broker granted a subscription (again after every reconnect).
    Subscribed {
        /// The filter.
        filter: String,
        /// The highest QoS the broker will deliver on it.
        granted: QoS,
    },
    /// The broker refused a subscription; it is dropped.
    SubscribeRefused {
        /// The filter.
        filter: String,
        /// The SUBACK failure, with [`crate::error::Vendor::Mqtt`].
        refusal: Refusal,
    },
    /// The broker confirmed an unsubscribe.
    Unsubscribed {
        /// The filter.
        filter: String,
    },
    /// The connection is lost for a cause that may pass; state is kept for the reconnect.
    LinkLost(Error),
    /// The connection ended and reconnecting unchanged will not help.
    Failed(Error),
    /// [`MqttSession::disconnect`] took effect; close the transport once DISCONNECT is out.
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Connecting { deadline: Millis },
    Connected,
    Dropping,
    Down,
    Closed,
}

/// A request awaiting its acknowledgement.
#[derive(Clone, Copy, Debug)]
struct Pending {
    packet_id: PacketId,
    /// When it went out on this connection; `None` until then.
    sent_at: Option<Millis>,
    /// Sends on this connection.
    attempts: u32,
}

impl Pending {
    fn new(packet_id: PacketId) -> Self {
        Pending {
            packet_id,
            sent_at: None,
            attempts: 0,
        }
    }
}

#[derive(Clone, Debug)]
struct Sub {
    filter: String,
    qos: QoS,
    /// `Some` until the SUBACK on this connection.
    pending: Option<Pending>,
}

#[derive(Clone, Debug)]
struct Unsub {
    filter: String,
    pending: Pending,
}

#[derive(Clone, Debug)]
struct Outgoing {
    pending: Pending,
    /// The PUBLISH as first encoded, DUP clear.
    bytes: Vec<u8>,
    /// It went out on some connection, so every later send carries DUP.
    ever_sent: bool,
}

/// One MQTT client session. See the module docs. `Debug` counts the queued packets rather
/// than printing them: the first one is the CONNECT, which carries the password.
#[derive(Clone)]
pub struct MqttSession {
    connect: ConnectOptions,
    config: SessionConfig,
    state: State,
    decoder: Decoder,
    out: VecDeque<Vec<u8>>,
    events: VecDeque<MqttEvent>,
    subs: Vec<Sub>,
    unsubs: Vec<Unsub>,
    /// QoS 1 messages awaiting PUBACK, in publishing order.
    inflight: Vec<Outgoing>,
    /// QoS 0 messages published while not connected.
    offline: VecDeque<Vec<u8>>,
    next_id: PacketId,
    last_sent: Millis,
    /// The PINGRESP deadline while a PINGREQ is out.
    ping_deadline: Option<Millis>,
    /// Lost connections since the last accepted CONNACK.
    failures: u32,
    /// The last loss was not retryable.
    gave_up: bool,
}

impl core::fmt::Debug for MqttSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MqttSession")
            .field("connect", &self.connect)
            .field("config", &self.config)
            .field("state", &self.state)
            .field("queued_packets", &self.out.len())
            .field("events", &self.events)
            .field("subs", &self.subs)
            .field("unsubs", &self.unsubs)
            .field("inflight", &self.inflight.len())
            .field("offline", &self.offline.len())
            .field("failures", &self.failures)
            .field("gave_up", &self.gave_up)
            .finish_non_exhaustive()
    }
}

impl MqttSession {
    /// A session that will connect with `connect` at the first [`Flow::handle_connected`].
    /// Refuses options CONNECT cannot carry and a config without attempts or queue room.
    pub fn new(connect: ConnectOptions, config: SessionConfig) -> Result<Self, Misuse> {
        check_connect(&connect)?;
        if config.max_attempts == 0 || config.max_queued == 0 {
            return Err(Misuse::InvalidArgument(
                "an MQTT session needs at least one attempt and one queue slot",
            ));
        }
        Ok(MqttSession {
            connect,
            decoder: Decoder::new(config.max_packet_len),
            config,
            state: State::Idle,
            out: VecDeque::new(),
            events: VecDeque::new(),
            subs: Vec::new(),
            unsubs: Vec::new(),
            inflight: Vec::new(),
            offline: VecDeque::new(),
            next_id: PacketId::MIN,
            last_sent: Millis::ZERO,
            ping_deadline: None,
            failures: 0,
            gave_up: false,
        })
    }

    /// Where the session stands.
    #[must_use]
    pub fn state(&self) -> SessionState {
        match self.state {
            State::Idle => SessionState::Idle,
            State::Connecting { .. } => SessionState::Connecting,
            State::Connected => SessionState::Connected,
            State::Dropping => SessionState::Dropping,
            State::Down => SessionState::Down,
            State::Closed => SessionState::Closed,
        }
    }

    /// Whether CONNACK accepted the current connection.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// The options the next CONNECT will carry.
    #[must_use]
    pub fn connect_options(&self) -> &ConnectOptions {
        &self.connect
    }

    /// Replaces the options for the next CONNECT (fresh credentials, say); the current
    /// connection is unchanged.
    pub fn set_connect_options(&mut self, connect: ConnectOptions) -> Result<(), Misuse> {
        check_connect(&connect)?;
        self.connect = connect;
        Ok(())
    }

    /// QoS 1 messages not yet acknowledged.
    #[must_use]
    pub fn unacknowledged(&self) -> usize {
        self.inflight.len()
    }

    /// The subscriptions kept across reconnects, with their requested QoS.
    pub fn subscriptions(&self) -> impl Iterator<Item = (&str, QoS)> {
        self.subs.iter().map(|s| (s.filter.as_str(), s.qos))
    }

    /// Subscribes to `filter` at `qos` now, or after the next CONNACK; the subscription is
    /// kept and renewed after every reconnect. Subscribing again to a filter replaces its QoS.
    pub fn subscribe(&mut self, now: Millis, filter: &str, qos: QoS) -> Result<PacketId, Misuse> {
        if !is_valid_topic_filter(filter) {
            return Err(Misuse::InvalidArgument(
                "an MQTT topic filter must be non-empty, with + and # only as whole levels",
            ));
        }
        let packet_id = self.allocate_id()?;
        let pending = Some(Pending::new(packet_id));
        match self.subs.iter_mut().find(|s| s.filter == filter) {
            Some(sub) => {
                sub.qos = qos;
                sub.pending = pending;
            }
            None => self.subs.push(Sub {
                filter: filter.to_string(),
                qos,
                pending,
            }),
        }
        self.flush(now);
        Ok(packet_id)
    }

    /// Drops the subscription to `filter` (at once: it is not renewed after a reconnect)
    /// and tells the broker now, or after the next CONNACK.
    pub fn unsubscribe(&mut self, now: Millis, filter: &str) -> Result<PacketId, Misuse> {
        if !is_valid_topic_filter(filter) {
            return Err(Misuse::InvalidArgument(
                "an MQTT topic filter must be non-empty, with + and # only as whole levels",
            ));
        }
        let packet_id = self.allocate_id()?;
        self.subs.retain(|s| s.filter != filter);
        self.unsubs.push(Unsub {
            filter: filter.to_string(),
            pending: Pending::new(packet_id),
        });
        self.flush(now);
        Ok(packet_id)
    }

    /// Publishes `payload` on `topic`: now if connected, else after the next CONNACK. QoS 1
    /// returns the packet id [`MqttEvent::Published`] will name; the message is re-sent until
    /// acknowledged, across reconnects.
    pub fn publish(
        &mut self,
        now: Millis,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
    ) -> Result<Option<PacketId>, Misuse> {
        if !is_valid_topic_name(topic) {
            return Err(Misuse::InvalidArgument(
                "an MQTT topic must be non-empty and free of wildcards",
            ));
        }
        if self.inflight.len() + self.offline.len() >= self.config.max_queued {
            return Err(Misuse::InvalidArgument(
                "too many MQTT messages await the broker; wait for acknowledgements",
            ));
        }
        let packet_id = match qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => Some(self.allocate_id()?),
        };
        let repr = PacketRepr::Publish(PublishRepr {
            topic,
            qos: packet_id.map_or(QosPid::AtMostOnce, QosPid::AtLeastOnce),
            dup: false,
            retain,
            payload,
        });
        let mut bytes = Vec::new();
        repr.append_to(&mut bytes)?;
        match packet_id {
            None if self.state == State::Connected => self.send(now, bytes),
            None => self.offline.push_back(bytes),
            Some(packet_id) => {
                self.inflight.push(Outgoing {
                    pending: Pending::new(packet_id),
                    bytes,
                    ever_sent: false,
                });
                self.flush(now);
            }
        }
        Ok(packet_id)
    }

    /// Closes the session: DISCONNECT if a connection is open, then [`MqttEvent::Closed`].
    /// Subscriptions and unacknowledged messages stay for a later [`Flow::handle_connected`].
    pub fn disconnect(&mut self, now: Millis) {
        if matches!(self.state, State::Connecting { .. } | State::Connected) {
            if let Some(bytes) = encode(&PacketRepr::Disconnect) {
                self.send(now, bytes);
            }
        }
        if self.state != State::Closed {
            self.events.push_back(MqttEvent::Closed);
        }
        self.state = State::Closed;
        self.ping_deadline = None;
        self.mark_unsent();
    }

    /// How long the edge should wait before opening the transport again, measured from the
    /// loss; `None` when it should not reconnect now (see the module docs).
    #[must_use]
    pub fn poll_reconnect_delay(&self) -> Option<Span> {
        if self.gave_up || self.state != State::Down {
            return None;
        }
        let doublings = self.failures.saturating_sub(1).min(32);
        let delay = self
            .config
            .min_reconnect_delay
            .as_millis()
            .saturating_mul(1u64 << doublings)
            .min(self.config.max_reconnect_delay.as_millis());
        Some(Span::from_millis(delay))
    }

    /// The lowest free packet id from the counter on, skipping ids awaiting an answer.
    fn allocate_id(&mut self) -> Result<PacketId, Misuse> {
        let mut id = self.next_id;
        for _ in 0..u16::MAX {
            if !self.id_in_use(id) {
                self.next_id = id.next();
                return Ok(id);
            }
            id = id.next();
        }
        Err(Misuse::InvalidArgument(
            "every MQTT packet id awaits an acknowledgement",
        ))
    }

    fn id_in_use(&self, id: PacketId) -> bool {
        self.inflight.iter().any(|o| o.pending.packet_id == id)
            || self.unsubs.iter().any(|u| u.pending.packet_id == id)
            || self
                .subs
                .iter()
                .any(|s| s.pending.is_some_and(|p| p.packet_id == id))
    }

    fn send(&mut self, now: Millis, bytes: Vec<u8>) {
        self.out.push_back(bytes);
        self.last_sent = now;
    }

    /// While connected, sends every request not yet sent on this connection: subscriptions,
    /// unsubscriptions, QoS 1 messages (DUP after a first send), then offline QoS 0 messages.
    fn flush(&mut self, now: Millis) {
        if self.state != State::Connected {
            return;
        }
        let mut batch = Vec::new();
        for sub in &mut self.subs {
            if let Some(p) = sub.pending.as_mut().filter(|p| p.sent_at.is_none()) {
                let repr = PacketRepr::Subscribe(SubscribeRepr {
                    packet_id: p.packet_id,
                    filters: alloc::vec![Subscription {
                        filter: &sub.filter,
                        qos: sub.qos,
                    }],
                });
                batch.extend(encode(&repr));
                p.sent_at = Some(now);
                p.attempts += 1;
            }
        }
        for unsub in self
            .unsubs
            .iter_mut()
            .filter(|u| u.pending.sent_at.is_none())
        {
            let repr = PacketRepr::Unsubscribe(UnsubscribeRepr {
                packet_id: unsub.pending.packet_id,
                filters: alloc::vec![unsub.filter.as_str()],
            });
            batch.extend(encode(&repr));
            unsub.pending.sent_at = Some(now);
            unsub.pending.attempts += 1;
        }
        for msg in self
            .inflight
            .iter_mut()
            .filter(|m| m.pending.sent_at.is_none())
        {
            let mut bytes = msg.bytes.clone();
            if msg.ever_sent {
                Packet::new_unchecked(&mut bytes[..]).set_dup();
            }
            batch.push(bytes);
            msg.ever_sent = true;
            msg.pending.sent_at = Some(now);
            msg.pending.attempts += 1;
        }
        batch.extend(self.offline.drain(..));
        for bytes in batch {
            self.send(now, bytes);
        }
    }

    /// Forgets which requests went out on the connection that ended.
    fn mark_unsent(&mut self) {
        let reset = |p: &mut Pending| {
            p.sent_at = None;
            p.attempts = 0;
        };
        self.subs
            .iter_mut()
            .filter_map(|s| s.pending.as_mut())
            .for_each(reset);
        self.unsubs.iter_mut().for_each(|u| reset(&mut u.pending));
        self.inflight.iter_mut().for_each(|m| reset(&mut m.pending));
    }

    /// Gives up on this connection: one event, nothing more sent, state kept.
    fn drop_link(&mut self, error: Error) {
        self.out.clear();
        self.decoder.reset();
        self.ping_deadline = None;
        self.mark_unsent();
        self.failures = self.failures.saturating_add(1);
        self.state = State::Dropping;
        if error.retryable() {
            self.events.push_back(MqttEvent::LinkLost(error));
        } else {
            self.gave_up = true;
            self.events.push_back(MqttEvent::Failed(error));
        }
    }

    fn handle_packet(&mut self, now: Millis, bytes: &[u8]) {
        let repr = match PacketRepr::parse_bytes(bytes) {
            Ok(repr) => repr,
            Err(e) => return self.drop_link(e.into()),
        };
        match (self.state, repr) {
            (State::Connecting { .. }, PacketRepr::Connack(c)) => match c.code.refusal() {
                None => self.on_connack(now, c.session_present),
                Some(refusal) => self.drop_link(Error::PeerRefused(refusal)),
            },
            (State::Connecting { .. }, _) => {
                self.drop_link(out_of_place(BEFORE_CONNACK_WHAT));
            }
            (State::Connected, PacketRepr::Publish(p)) => {
                if let QosPid::AtLeastOnce(id) = p.qos {
                    if let Some(ack) = encode(&PacketRepr::Puback(id)) {
                        self.send(now, ack);
                    }
                }
                self.events.push_back(MqttEvent::Message {
                    topic: p.topic.to_string(),
                    payload: p.payload.to_vec(),
                    qos: p.qos.qos(),
                    retain: p.retain,
                    dup: p.dup,
                });
            }
            (State::Connected, PacketRepr::Puback(id)) => {
                if let Some(i) = self.inflight.iter().position(|m| m.pending.packet_id == id) {
                    self.inflight.remove(i);
                    self.events
                        .push_back(MqttEvent::Published { packet_id: id });
                }
            }
            (State::Connected, PacketRepr::Suback(s)) => {
                let Some(i) = self
                    .subs
                    .iter()
                    .position(|sub| sub.pending.is_some_and(|p| p.packet_id == s.packet_id))
                else {
                    return;
                };
                // Each SUBSCRIBE of this session carries one filter.
                let [code] = s.codes[..] else {
                    return self.drop_link(
                        Malformed {
                            what: SUBACK_WHAT,
                            reason: DecodeError::LengthMismatch,
                        }
                        .into(),
                    );
                };
                match code {
                    SubackCode::Granted(granted) => {
                        let sub = &mut self.subs[i];
                        sub.pending = None;
                        self.events.push_back(MqttEvent::Subscribed {
                            filter: sub.filter.clone(),
                            granted,
                        });
                    }
                    SubackCode::Failure => {
                        let sub = self.subs.remove(i);
                        if let Some(refusal) = code.refusal() {
                            self.events.push_back(MqttEvent::SubscribeRefused {
                                filter: sub.filter,
                                refusal,
                            });
                        }
                    }
                }
            }
            (State::Connected, PacketRepr::Unsuback(id)) => {
                if let Some(i) = self.unsubs.iter().position(|u| u.pending.packet_id == id) {
                    let unsub = self.unsubs.remove(i);
                    self.events.push_back(MqttEvent::Unsubscribed {
                        filter: unsub.filter,
                    });
                }
            }
            (State::Connected, PacketRepr::Pingresp) => self.ping_deadline = None,
            (State::Connected, _) => self.drop_link(out_of_place(OUT_OF_PLACE_WHAT)),
            // Input is only handled while connecting or connected.
            _ => {}
        }
    }

    fn on_connack(&mut self, now: Millis, session_present: bool) {
        self.state = State::Connected;
        self.failures = 0;
        self.gave_up = false;
        self.events
            .push_back(MqttEvent::Connected { session_present });
        // Granted subscriptions get a fresh packet id for their renewal.
        for i in 0..self.subs.len() {
            if self.subs[i].pending.is_none() {
                // Ids run out only with 65535 requests in flight; the filter then waits for
                // the next connection.
                if let Ok(id) = self.allocate_id() {
                    self.subs[i].pending = Some(Pending::new(id));
                }
            }
        }
        self.flush(now);
    }

    /// The earliest acknowledgement deadline of this connection.
    fn earliest_ack_deadline(&self) -> Option<Millis> {
        self.pendings()
            .filter_map(|p| p.sent_at)
            .min()
            .map(|sent| sent + self.config.ack_timeout)
    }

    fn pendings(&self) -> impl Iterator<Item = &Pending> {
        self.subs
            .iter()
            .filter_map(|s| s.pending.as_ref())
            .chain(self.unsubs.iter().map(|u| &u.pending))
            .chain(self.inflight.iter().map(|m| &m.pending))
    }

    /// Re-sends requests whose acknowledgement is overdue, or drops the link once one has
    /// used its attempts.
    fn retry_overdue(&mut self, now: Millis) {
        let ack_timeout = self.config.ack_timeout;
        let overdue = |p: &Pending| p.sent_at.is_some_and(|t| now >= t + ack_timeout);
        let exhausted = self
            .pendings()
            .find(|p| overdue(p) && p.attempts >= self.config.max_attempts)
            .map(|p| p.attempts);
        if let Some(attempts) = exhausted {
            return self.drop_link(LinkLost::RetriesExhausted { attempts }.into());
        }
        let mut any = false;
        let mut unsend = |p: &mut Pending| {
            if overdue(p) {
                p.sent_at = None;
                any = true;
            }
        };
        self.subs
            .iter_mut()
            .filter_map(|s| s.pending.as_mut())
            .for_each(&mut unsend);
        self.unsubs.iter_mut().for_each(|u| unsend(&mut u.pending));
        self.inflight
            .iter_mut()
            .for_each(|m| unsend(&mut m.pending));
        if any {
            self.flush(now);
        }
    }
}

impl Flow for MqttSession {
    type Channel = ();
    type Event = MqttEvent;

    /// Opens a new connection: CONNECT goes out, CONNACK is awaited.
    fn handle_connected(&mut self, now: Millis) {
        self.out.clear();
        self.decoder.reset();
        self.ping_deadline = None;
        self.gave_up = false;
        self.mark_unsent();
        self.state = State::Connecting {
            deadline: now + self.config.connack_timeout,
        };
        if let Some(bytes) = encode(&PacketRepr::Connect(self.connect.repr())) {
            self.send(now, bytes);
        }
    }

    /// The transport is down: one [`MqttEvent::LinkLost`] unless the session already
    /// reported this connection's end or was closed.
    fn handle_disconnected(&mut self, _now: Millis) {
        match self.state {
            State::Idle | State::Connecting { .. } | State::Connected | State::Down => {
                self.failures = self.failures.saturating_add(1);
                self.events
                    .push_back(MqttEvent::LinkLost(LinkLost::Disconnected.into()));
            }
            State::Dropping | State::Closed => {}
        }
        if self.state != State::Closed {
            self.state = State::Down;
        }
        self.out.clear();
        self.decoder.reset();
        self.ping_deadline = None;
        self.mark_unsent();
    }

    fn handle_input(&mut self, now: Millis, _channel: (), bytes: &[u8]) {
        if !matches!(self.state, State::Connecting { .. } | State::Connected) {
            return;
        }
        self.decoder.push(bytes);
        while let Some(next) = self.decoder.next_packet() {
            match next {
                Ok(packet) => self.handle_packet(now, &packet),
                Err(malformed) => self.drop_link(malformed.into()),
            }
            if !matches!(self.state, State::Connecting { .. } | State::Connected) {
                break;
            }
        }
    }

    fn handle_timeout(&mut self, now: Millis) {
        match self.state {
            State::Connecting { deadline } if now >= deadline => {
                self.drop_link(
                    LinkLost::TimedOut {
                        waiting_for: WAIT_CONNACK,
                    }
                    .into(),
                );
            }
            State::Connected => {
                if self.ping_deadline.is_some_and(|d| now >= d) {
                    return self.drop_link(
                        LinkLost::TimedOut {
                            waiting_for: WAIT_PINGRESP,
                        }
                        .into(),
                    );
                }
                self.retry_overdue(now);
                if self.state != State::Connected || self.ping_deadline.is_some() {
                    return;
                }
                let Some(keep_alive) = self.connect.keep_alive_span() else {
                    return;
                };
                if now >= self.last_sent + keep_alive {
                    if let Some(bytes) = encode(&PacketRepr::Pingreq) {
                        self.send(now, bytes);
                        self.ping_deadline = Some(now + self.config.ping_timeout);
                    }
                }
            }
            _ => {}
        }
    }

    fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> Option<Transmit<()>> {
        let bytes = self.out.pop_front()?;
        buf.extend_from_slice(&bytes);
        Some(Transmit {
            channel: (),
            len: bytes.len(),
            delivery: Delivery::WithoutResponse,
        })
    }

    fn poll_timeout(&self) -> Option<Millis> {
        match self.state {
            State::Connecting { deadline } => Some(deadline),
            State::Connected => {
                let ping = match self.ping_deadline {
                    Some(deadline) => Some(deadline),
                    None => self
                        .connect
                        .keep_alive_span()
                        .map(|keep_alive| self.last_sent + keep_alive),
                };
                [ping, self.earliest_ack_deadline()]
                    .into_iter()
                    .flatten()
                    .min()
            }
            _ => None,
        }
    }

    fn poll_event(&mut self) -> Option<MqttEvent> {
        self.events.pop_front()
    }
}

/// Checks that CONNECT can carry `connect`, by encoding it once.
fn check_connect(connect: &ConnectOptions) -> Result<(), Misuse> {
    PacketRepr::Connect(connect.repr())
        .append_to(&mut Vec::new())
        .map(|_| ())
        .map_err(Misuse::from)
}

/// Encodes a packet built from fields the commands checked, so it cannot fail; `None` if it
/// ever did, and the packet is not sent.
fn encode(repr: &PacketRepr<'_>) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    repr.append_to(&mut bytes).ok()?;
    Some(bytes)
}

fn out_of_place(what: &'static str) -> Error {
    Malformed {
        what,
        reason: DecodeError::BadValue,
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Vendor;
    use crate::test_rng::Rng;
    use crate::wire::mqtt::ConnackCode;
    use alloc::vec;

    /// The CONNECT of [`options`]: client "dev1", user "dk&pk", password "pw", 60 s, clean.
    const CONNECT: &[u8] = &[
        0x10, 0x1B, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xC2, 0x00, 0x3C, 0x00, 0x04, b'd',
        b'e', b'v', b'1', 0x00, 0x05, b'd', b'k', b'&', b'p', b'k', 0x00, 0x02, b'p', b'w',
    ];
    const CONNACK_OK: &[u8] = &[0x20, 0x02, 0x00, 0x00];
    const PINGREQ: &[u8] = &[0xC0, 0x00];
    const PINGRESP: &[u8] = &[0xD0, 0x00];

    fn options() -> ConnectOptions {
        ConnectOptions::new("dev1").with_login("dk&pk", "pw")
    }

    /// A send!/recv! script: the session, a clock, and helpers reading what it does.
    struct Script {
        s: MqttSession,
        now: Millis,
    }

    impl Script {
        fn new() -> Self {
            Script {
                s: MqttSession::new(options(), SessionConfig::default()).unwrap(),
                now: Millis(1_000),
            }
        }

        fn at(&mut self, ms: u64) {
            self.now = Millis(ms);
        }

        /// Every packet the session writes now, each one whole.
        fn sent(&mut self) -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            let mut buf = vec![0xAA];
            while let Some(t) = self.s.poll_transmit(&mut buf) {
                assert_eq!(t.delivery, Delivery::WithoutResponse);
                assert_eq!(t.len + 1, buf.len());
                assert!(PacketRepr::parse_bytes(&buf[1..]).is_ok());
                out.push(buf.split_off(1));
            }
            out
        }

        fn events(&mut self) -> Vec<MqttEvent> {
            core::iter::from_fn(|| self.s.poll_event()).collect()
        }

        fn recv(&mut self, bytes: &[u8]) {
            self.s.handle_input(self.now, (), bytes);
        }

        /// Fires the timer if it is due at `now`.
        fn tick(&mut self) {
            if self.s.poll_timeout().is_some_and(|t| t <= self.now) {
                self.s.handle_timeout(self.now);
            }
        }

        fn connect(&mut self) {
            self.s.handle_connected(self.now);
            assert_eq!(self.sent(), [CONNECT]);
            self.recv(CONNACK_OK);
            assert_eq!(
                self.events(),
                [MqttEvent::Connected {
                    session_present: false
                }]
            );
            assert_eq!(self.s.state(), SessionState::Connected);
        }
    }

    fn id(n: u16) -> PacketId {
        PacketId::new(n).unwrap()
    }

    fn publish_bytes(topic: &str, payload: &[u8], qos: QosPid, dup: bool) -> Vec<u8> {
        let mut b = Vec::new();
        PacketRepr::Publish(PublishRepr {
            topic,
            qos,
            dup,
            retain: false,
            payload,
        })
        .append_to(&mut b)
        .unwrap();
        b
    }

    #[test]
    fn connects_and_times_the_connack() {
        let mut t = Script::new();
        assert_eq!(t.s.state(), SessionState::Idle);
        assert_eq!(t.s.poll_timeout(), None);
        assert_eq!(t.s.poll_reconnect_delay(), None);
        t.s.handle_connected(t.now);
        assert_eq!(t.sent(), [CONNECT]);
        assert_eq!(t.s.state(), SessionState::Connecting);
        assert_eq!(t.s.poll_timeout(), Some(Millis(31_000)));
        // The CONNACK in two pieces.
        t.recv(&[0x20]);
        assert!(t.events().is_empty());
        t.recv(&[0x02, 0x01, 0x00]);
        assert_eq!(
            t.events(),
            [MqttEvent::Connected {
                session_present: true
            }]
        );
        assert!(t.s.is_connected());
        // Next: a PINGREQ after 60 s of sending nothing.
        assert_eq!(t.s.poll_timeout(), Some(Millis(61_000)));

        // No CONNACK: the link is lost after 30 s.
        let mut t = Script::new();
        t.s.handle_connected(t.now);
        t.sent();
        t.at(30_999);
        t.tick();
        assert!(t.events().is_empty());
        t.at(31_000);
        t.tick();
        assert_eq!(
            t.events(),
            [MqttEvent::LinkLost(Error::LinkLost(LinkLost::TimedOut {
                waiting_for: "CONNACK"
            }))]
        );
        assert_eq!(t.s.state(), SessionState::Dropping);
        assert_eq!(
            t.s.poll_reconnect_delay(),
            None,
            "close the transport first"
        );
        t.s.handle_disconnected(t.now);
        assert!(t.events().is_empty(), "one event per lost connection");
        assert_eq!(t.s.poll_reconnect_delay(), Some(Span::from_secs(1)));
    }

    #[test]
    fn connack_refusals_are_typed() {
        for code in 1..=5u8 {
            let mut t = Script::new();
            t.s.handle_connected(t.now);
            t.sent();
            t.recv(&[0x20, 0x02, 0x00, code]);
            let refusal = ConnackCode::from_u8(code).unwrap().refusal().unwrap();
            assert_eq!(refusal.vendor, Vendor::Mqtt);
            let error = Error::PeerRefused(refusal);
            t.s.handle_disconnected(t.now);
            if code == 3 {
                // Server unavailable: try again later.
                assert_eq!(t.events(), [MqttEvent::LinkLost(error)]);
                assert_eq!(t.s.poll_reconnect_delay(), Some(Span::from_secs(1)));
            } else {
                assert_eq!(t.events(), [MqttEvent::Failed(error)]);
                assert_eq!(t.s.poll_reconnect_delay(), None);
            }
            assert!(t.sent().is_empty());
        }
    }

    #[test]
    fn subscribes_publishes_and_acknowledges() {
        let mut t = Script::new();
        t.connect();
        assert_eq!(
            t.s.subscribe(t.now, "/sys/pk/dk/ota/device/+", QoS::AtLeastOnce),
            Ok(id(1))
        );
        let mut subscribe = vec![0x82, 0x1C, 0x00, 0x01, 0x00, 0x17];
        subscribe.extend_from_slice(b"/sys/pk/dk/ota/device/+");
        subscribe.push(0x01);
        assert_eq!(t.sent(), [subscribe]);
        t.recv(&[0x90, 0x03, 0x00, 0x01, 0x01]);
        assert_eq!(
            t.events(),
            [MqttEvent::Subscribed {
                filter: "/sys/pk/dk/ota/device/+".into(),
                granted: QoS::AtLeastOnce
            }]
        );

        // QoS 1 out, PUBACK in.
        assert_eq!(
            t.s.publish(t.now, "a/b", b"hi", QoS::AtLeastOnce, false),
            Ok(Some(id(2)))
        );
        assert_eq!(
            t.sent(),
            [[0x32, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x02, b'h', b'i']]
        );
        assert_eq!(t.s.unacknowledged(), 1);
        t.recv(&[0x40, 0x02, 0x00, 0x02]);
        assert_eq!(t.events(), [MqttEvent::Published { packet_id: id(2) }]);
        assert_eq!(t.s.unacknowledged(), 0);
        // A repeated PUBACK is ignored.
        t.recv(&[0x40, 0x02, 0x00, 0x02]);
        assert!(t.events().is_empty());

        // QoS 0 out, retained.
        assert_eq!(
            t.s.publish(t.now, "t", b"", QoS::AtMostOnce, true),
            Ok(None)
        );
        assert_eq!(t.sent(), [[0x31, 0x03, 0x00, 0x01, b't']]);

        // QoS 1 in: PUBACK out, then the message.
        t.recv(&[0x3A, 0x08, 0x00, 0x01, b'x', 0x12, 0x34, b'a', b'b', b'c']);
        assert_eq!(t.sent(), [[0x40, 0x02, 0x12, 0x34]]);
        assert_eq!(
            t.events(),
            [MqttEvent::Message {
                topic: "x".into(),
                payload: b"abc".to_vec(),
                qos: QoS::AtLeastOnce,
                retain: false,
                dup: true,
            }]
        );
        // QoS 0 in, on a topic never subscribed: delivered, nothing sent.
        t.recv(&[0x30, 0x04, 0x00, 0x01, b'y', b'!']);
        assert!(t.sent().is_empty());
        assert!(matches!(&t.events()[..], [MqttEvent::Message { topic, .. }] if topic == "y"));

        // Unsubscribe.
        assert_eq!(t.s.unsubscribe(t.now, "/sys/pk/dk/ota/device/+"), Ok(id(3)));
        let mut unsubscribe = vec![0xA2, 0x1B, 0x00, 0x03, 0x00, 0x17];
        unsubscribe.extend_from_slice(b"/sys/pk/dk/ota/device/+");
        assert_eq!(t.sent(), [unsubscribe]);
        assert_eq!(t.s.subscriptions().count(), 0);
        t.recv(&[0xB0, 0x02, 0x00, 0x03]);
        assert_eq!(
            t.events(),
            [MqttEvent::Unsubscribed {
                filter: "/sys/pk/dk/ota/device/+".into()
            }]
        );

        // A refused subscription is dropped; the session goes on.
        assert_eq!(t.s.subscribe(t.now, "secret/#", QoS::AtMostOnce), Ok(id(4)));
        t.sent();
        t.recv(&[0x90, 0x03, 0x00, 0x04, 0x80]);
        let events = t.events();
        assert!(matches!(
            &events[..],
            [MqttEvent::SubscribeRefused { filter, refusal }]
                if filter == "secret/#" && refusal.code == 0x80 && refusal.vendor == Vendor::Mqtt
        ));
        assert_eq!(t.s.subscriptions().count(), 0);
        assert!(t.s.is_connected());
    }

    #[test]
    fn commands_refuse_bad_arguments() {
        let mut t = Script::new();
        assert!(t.s.subscribe(t.now, "a/#/b", QoS::AtMostOnce).is_err());
        assert!(t.s.unsubscribe(t.now, "").is_err());
        assert!(t
            .s
            .publish(t.now, "a/+", b"", QoS::AtMostOnce, false)
            .is_err());
        assert!(t
            .s
            .publish(t.now, "", b"", QoS::AtLeastOnce, false)
            .is_err());
        assert!(MqttSession::new(
            ConnectOptions {
                password: Some(b"p".to_vec()),
                ..ConnectOptions::new("c")
            },
            SessionConfig::default()
        )
        .is_err());
        assert!(MqttSession::new(
            ConnectOptions {
                clean_session: false,
                ..ConnectOptions::new("")
            },
            SessionConfig::default()
        )
        .is_err());
        assert!(MqttSession::new(
            options(),
            SessionConfig {
                max_attempts: 0,
                ..SessionConfig::default()
            }
        )
        .is_err());
        assert!(t.s.set_connect_options(ConnectOptions::new("a\0")).is_err());
        assert!(t
            .s
            .set_connect_options(ConnectOptions::new("other"))
            .is_ok());
        assert_eq!(t.s.connect_options().client_id, "other");

        // The queue bound.
        let mut s = MqttSession::new(
            options(),
            SessionConfig {
                max_queued: 2,
                ..SessionConfig::default()
            },
        )
        .unwrap();
        assert!(s
            .publish(Millis(0), "t", b"1", QoS::AtLeastOnce, false)
            .is_ok());
        assert!(s
            .publish(Millis(0), "t", b"2", QoS::AtMostOnce, false)
            .is_ok());
        assert!(matches!(
            s.publish(Millis(0), "t", b"3", QoS::AtMostOnce, false),
            Err(Misuse::InvalidArgument(_))
        ));
    }

    #[test]
    fn retries_unacknowledged_qos1_with_dup() {
        let mut t = Script::new();
        t.connect();
        t.at(5_000);
        assert_eq!(
            t.s.publish(t.now, "p", b"1", QoS::AtLeastOnce, false),
            Ok(Some(id(1)))
        );
        let first = [0x32, 0x06, 0x00, 0x01, b'p', 0x00, 0x01, b'1'];
        assert_eq!(t.sent(), [first]);
        assert_eq!(t.s.poll_timeout(), Some(Millis(25_000)));
        t.at(24_999);
        t.tick();
        assert!(t.sent().is_empty());
        t.at(25_000);
        t.tick();
        let dup = [0x3A, 0x06, 0x00, 0x01, b'p', 0x00, 0x01, b'1'];
        assert_eq!(t.sent(), [dup]);
        t.at(45_000);
        t.tick();
        assert_eq!(t.sent(), [dup]);
        // The third send unanswered for 20 s: the link counts as lost.
        t.at(65_000);
        t.tick();
        assert!(t.sent().is_empty());
        assert_eq!(
            t.events(),
            [MqttEvent::LinkLost(Error::LinkLost(
                LinkLost::RetriesExhausted { attempts: 3 }
            ))]
        );
        assert_eq!(t.s.unacknowledged(), 1, "kept for the next connection");

        // A SUBSCRIBE is re-sent as it was (SUBSCRIBE has no DUP).
        let mut t = Script::new();
        t.connect();
        t.s.subscribe(t.now, "s", QoS::AtMostOnce).unwrap();
        let sub = t.sent();
        t.at(21_000);
        t.tick();
        assert_eq!(t.sent(), sub);
        t.recv(&[0x90, 0x03, 0x00, 0x01, 0x00]);
        assert_eq!(t.events().len(), 1);
    }

    #[test]
    fn keepalive_pings_when_idle_and_loses_a_silent_link() {
        let mut t = Script::new();
        t.connect();
        // Sending resets the idle clock.
        t.at(30_000);
        t.s.publish(t.now, "t", b"", QoS::AtMostOnce, false)
            .unwrap();
        t.sent();
        assert_eq!(t.s.poll_timeout(), Some(Millis(90_000)));
        t.at(90_000);
        t.tick();
        assert_eq!(t.sent(), [PINGREQ]);
        assert_eq!(t.s.poll_timeout(), Some(Millis(105_000)));
        t.at(95_000);
        t.recv(PINGRESP);
        assert!(t.events().is_empty());
        assert_eq!(t.s.poll_timeout(), Some(Millis(150_000)));
        t.at(150_000);
        t.tick();
        assert_eq!(t.sent(), [PINGREQ]);
        // No PINGRESP within 15 s.
        t.at(165_000);
        t.tick();
        assert_eq!(
            t.events(),
            [MqttEvent::LinkLost(Error::LinkLost(LinkLost::TimedOut {
                waiting_for: "PINGRESP"
            }))]
        );
        assert!(t.sent().is_empty());
        assert_eq!(t.s.poll_timeout(), None);

        // Keepalive 0: no pings, no timer.
        let mut s = MqttSession::new(
            ConnectOptions {
                keep_alive: 0,
                ..options()
            },
            SessionConfig::default(),
        )
        .unwrap();
        s.handle_connected(Millis(0));
        s.handle_input(Millis(0), (), CONNACK_OK);
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn reconnect_resubscribes_and_resends_with_dup() {
        let mut t = Script::new();
        t.connect();
        t.s.subscribe(t.now, "/sys/pk/dk/ota/device/upgrade", QoS::AtLeastOnce)
            .unwrap();
        t.sent();
        t.recv(&[0x90, 0x03, 0x00, 0x01, 0x01]);
        t.events();
        // Two QoS 1 messages; the first is acknowledged, the second is not.
        t.s.publish(t.now, "a", b"1", QoS::AtLeastOnce, false)
            .unwrap();
        t.s.publish(t.now, "b", b"2", QoS::AtLeastOnce, false)
            .unwrap();
        assert_eq!(t.sent().len(), 2);
        t.recv(&[0x40, 0x02, 0x00, 0x02]);
        assert_eq!(t.events(), [MqttEvent::Published { packet_id: id(2) }]);

        // The transport drops.
        t.at(10_000);
        t.s.handle_disconnected(t.now);
        assert_eq!(
            t.events(),
            [MqttEvent::LinkLost(Error::LinkLost(LinkLost::Disconnected))]
        );
        assert_eq!(t.s.state(), SessionState::Down);
        assert_eq!(t.s.poll_reconnect_delay(), Some(Span::from_secs(1)));
        // Published while down: QoS 0 and 1 wait.
        t.s.publish(t.now, "c", b"3", QoS::AtMostOnce, false)
            .unwrap();
        t.s.publish(t.now, "d", b"4", QoS::AtLeastOnce, false)
            .unwrap();
        assert!(t.sent().is_empty());
        // Bytes on a closed link are ignored.
        t.recv(CONNACK_OK);
        assert!(t.events().is_empty());

        // Reconnect: CONNECT first, nothing else before CONNACK.
        t.at(11_000);
        t.s.handle_connected(t.now);
        assert_eq!(t.sent(), [CONNECT]);
        t.recv(CONNACK_OK);
        assert_eq!(
            t.events(),
            [MqttEvent::Connected {
                session_present: false
            }]
        );
        let mut resubscribe = vec![0x82, 0x22, 0x00, 0x05, 0x00, 0x1D];
        resubscribe.extend_from_slice(b"/sys/pk/dk/ota/device/upgrade");
        resubscribe.push(0x01);
        assert_eq!(
            t.sent(),
            [
                // The subscription again, with a fresh packet id.
                resubscribe,
                // The unacknowledged message, DUP, its own id.
                vec![0x3A, 0x06, 0x00, 0x01, b'b', 0x00, 0x03, b'2'],
                // Published while down: first sends, no DUP.
                vec![0x32, 0x06, 0x00, 0x01, b'd', 0x00, 0x04, b'4'],
                vec![0x30, 0x04, 0x00, 0x01, b'c', b'3'],
            ]
        );
        assert_eq!(t.s.poll_reconnect_delay(), None);
        t.recv(&[0x90, 0x03, 0x00, 0x05, 0x01]);
        t.recv(&[0x40, 0x02, 0x00, 0x03]);
        t.recv(&[0x40, 0x02, 0x00, 0x04]);
        assert_eq!(
            t.events(),
            [
                MqttEvent::Subscribed {
                    filter: "/sys/pk/dk/ota/device/upgrade".into(),
                    granted: QoS::AtLeastOnce
                },
                MqttEvent::Published { packet_id: id(3) },
                MqttEvent::Published { packet_id: id(4) },
            ]
        );
        assert_eq!(t.s.unacknowledged(), 0);

        // After a drop mid-flight the re-sent messages carry DUP once more on the next link.
        t.s.publish(t.now, "e", b"5", QoS::AtLeastOnce, false)
            .unwrap();
        t.sent();
        t.s.handle_disconnected(t.now);
        t.s.handle_connected(t.now);
        t.sent();
        t.recv(CONNACK_OK);
        let resent = t.sent();
        assert_eq!(
            resent.last().unwrap(),
            &[0x3A, 0x06, 0x00, 0x01, b'e', 0x00, 0x06, b'5']
        );
    }

    #[test]
    fn reconnect_delay_backs_off_and_resets() {
        let mut t = Script::new();
        // The first open fails: the edge reports a disconnect without a connect.
        t.s.handle_disconnected(t.now);
        assert_eq!(
            t.events(),
            [MqttEvent::LinkLost(Error::LinkLost(LinkLost::Disconnected))]
        );
        let mut delays = vec![t.s.poll_reconnect_delay().unwrap().as_millis()];
        for _ in 0..6 {
            t.s.handle_disconnected(t.now);
            delays.push(t.s.poll_reconnect_delay().unwrap().as_millis());
        }
        assert_eq!(delays, [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]);
        // Connected attempts that die before CONNACK keep growing it.
        t.s.handle_connected(t.now);
        t.s.handle_disconnected(t.now);
        assert_eq!(t.s.poll_reconnect_delay(), Some(Span::from_secs(30)));
        // CONNACK resets it.
        t.s.handle_connected(t.now);
        t.recv(CONNACK_OK);
        t.s.handle_disconnected(t.now);
        assert_eq!(t.s.poll_reconnect_delay(), Some(Span::from_secs(1)));

        // disconnect(): DISCONNECT out, Closed, no reconnect.
        let mut t = Script::new();
        t.connect();
        t.s.disconnect(t.now);
        assert_eq!(t.sent(), [[0xE0, 0x00]]);
        assert_eq!(t.events(), [MqttEvent::Closed]);
        t.s.handle_disconnected(t.now);
        assert!(t.events().is_empty());
        assert_eq!(t.s.state(), SessionState::Closed);
        assert_eq!(t.s.poll_reconnect_delay(), None);
        // A later connect opens it again.
        t.connect();
    }

    #[test]
    fn broker_faults_fail_the_session() {
        // Malformed framing.
        let mut t = Script::new();
        t.connect();
        t.recv(&[0x00, 0x00]);
        assert!(matches!(
            &t.events()[..],
            [MqttEvent::Failed(Error::PeerMalformed(m))] if m.what == "MQTT fixed header"
        ));
        assert_eq!(t.s.poll_reconnect_delay(), None);
        t.s.handle_disconnected(t.now);
        assert!(t.events().is_empty());

        // Over the size cap, before the body.
        let mut t = Script::new();
        t.connect();
        t.recv(&[0x30, 0xFF, 0xFF, 0x7F]);
        assert!(matches!(
            &t.events()[..],
            [MqttEvent::Failed(Error::PeerMalformed(Malformed {
                reason: DecodeError::TooLarge {
                    limit: DEFAULT_MAX_PACKET_LEN
                },
                ..
            }))]
        ));

        // QoS 2 from the broker.
        let mut t = Script::new();
        t.connect();
        t.recv(&[0x34, 0x05, 0x00, 0x01, b't', 0x00, 0x01]);
        assert!(matches!(
            &t.events()[..],
            [MqttEvent::Failed(Error::PeerMalformed(_))]
        ));

        // A packet before CONNACK, and packets a broker never sends.
        let mut t = Script::new();
        t.s.handle_connected(t.now);
        t.sent();
        t.recv(PINGRESP);
        assert_eq!(
            t.events(),
            [MqttEvent::Failed(out_of_place(BEFORE_CONNACK_WHAT))]
        );
        for bytes in [
            CONNACK_OK,
            PINGREQ,
            &[0xE0, 0x00],
            &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00],
        ] {
            let mut t = Script::new();
            t.connect();
            t.recv(bytes);
            assert_eq!(
                t.events(),
                [MqttEvent::Failed(out_of_place(OUT_OF_PLACE_WHAT))],
                "{bytes:02x?}"
            );
            assert!(t.sent().is_empty());
        }

        // A SUBACK answering two filters to a one-filter SUBSCRIBE.
        let mut t = Script::new();
        t.connect();
        t.s.subscribe(t.now, "s", QoS::AtMostOnce).unwrap();
        t.sent();
        t.recv(&[0x90, 0x04, 0x00, 0x01, 0x00, 0x00]);
        assert!(matches!(
            &t.events()[..],
            [MqttEvent::Failed(Error::PeerMalformed(Malformed {
                what: "MQTT SUBACK packet",
                reason: DecodeError::LengthMismatch
            }))]
        ));
        // Input after the failure is ignored, and a reconnect clears the failure.
        t.recv(CONNACK_OK);
        assert!(t.events().is_empty());
        t.s.handle_disconnected(t.now);
        t.connect();
    }

    #[test]
    fn packets_split_anywhere_and_glued_together() {
        let mut t = Script::new();
        t.s.handle_connected(t.now);
        t.sent();
        let stream: Vec<u8> = [
            CONNACK_OK,
            &[0x32, 0x06, 0x00, 0x01, b'm', 0x00, 0x07, b'1'],
            &[0x30, 0x04, 0x00, 0x01, b'n', b'2'],
        ]
        .concat();
        for b in &stream {
            t.recv(core::slice::from_ref(b));
        }
        assert_eq!(t.sent(), [[0x40, 0x02, 0x00, 0x07]]);
        let events = t.events();
        assert_eq!(events.len(), 3);
        assert!(matches!(events[0], MqttEvent::Connected { .. }));

        // All in one chunk.
        let mut t = Script::new();
        t.s.handle_connected(t.now);
        t.sent();
        t.recv(&stream);
        assert_eq!(t.events().len(), 3);
        assert_eq!(
            publish_bytes("m", b"1", QosPid::AtLeastOnce(id(7)), false),
            stream[4..12]
        );
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let mut rng = Rng(0xA5A5_5A5A_0F0F_F0F0);
        for round in 0..2_000 {
            let mut t = Script::new();
            t.connect();
            t.s.subscribe(t.now, "s/#", QoS::AtLeastOnce).unwrap();
            t.s.publish(t.now, "p", b"x", QoS::AtLeastOnce, false)
                .unwrap();
            for _ in 0..8 {
                let len = (rng.next() % 12) as usize;
                let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                if len >= 2 {
                    // Mostly well-framed packets of the types a broker sends.
                    bytes[0] = [0x20, 0x30, 0x32, 0x40, 0x90, 0xB0, 0xD0][bytes[0] as usize % 7];
                    bytes[1] = (len - 2) as u8;
                }
                t.recv(&bytes);
                t.sent();
                t.events();
                t.at(t.now.as_u64() + rng.next() % 30_000);
                t.tick();
                if round % 3 == 0 {
                    t.s.handle_disconnected(t.now);
                    t.s.handle_connected(t.now);
                    t.recv(CONNACK_OK);
                }
            }
        }
    }
}
