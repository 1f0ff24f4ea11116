//! The campaign's MQTT broker and its clients' transports (the client's own deadlines are
//! the caller's): MQTT 3.1.1 at QoS 0 and 1 between a few clients (sans-IO
//! [`Flow`]s, each on a TCP-like byte stream), on the campaign's virtual clock, with the
//! faults a broker connection has: latency, a connection dropped, the broker restarting.
//!
//! It does what mosquitto does for the EnOS topics, no more: CONNACK accepted, SUBSCRIBE
//! granted at the asked QoS (at most 1), PUBLISH routed to every matching subscription at
//! the lower of the two QoS with its own packet id, PUBACK to a QoS 1 publisher, PINGRESP.
//! Sessions are clean, as both clients ask: a dropped connection loses its subscriptions
//! and whatever was in flight on it, and so does a restart, which also refuses connections
//! until the broker is back. A malformed packet closes the connection, as brokers do. The
//! streams never reorder or corrupt bytes (TCP), they only stop.

use std::collections::VecDeque;

use otaweb::flow::Flow;
use otaweb::time::{Millis, Span};
use otaweb::wire::mqtt::{
    ConnackCode, ConnackRepr, Decoder, PacketId, PacketRepr, PublishRepr, QoS, QosPid, SubackCode,
    SubackRepr,
};

/// Bytes on their way, with the moment they arrive.
type InFlight = VecDeque<(Millis, Vec<u8>)>;

/// One client's connection.
#[derive(Default)]
struct Conn {
    /// The transport is up (the client was told `handle_connected`).
    up: bool,
    /// No connect attempt before this moment; `None` while up.
    retry_at: Option<Millis>,
    to_client: InFlight,
    to_broker: InFlight,
    decoder: Option<Decoder>,
    subs: Vec<(String, QoS)>,
    next_pid: u16,
}

/// The broker and its clients' transports.
pub struct Broker {
    conns: Vec<Conn>,
    /// One-way latency of every stream.
    pub latency: Span,
    /// While set, the broker is down until then.
    down_until: Option<Millis>,
    /// Connections dropped by a fault (not counting restarts).
    pub drops: u64,
    /// Restarts.
    pub restarts: u64,
}

/// Whether `topic` matches `filter` (`+` one level, `#` the rest).
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The largest packet the broker takes (mosquitto's default has no limit; EnOS bodies are
/// small).
const MAX_PACKET: usize = 256 * 1024;

impl Broker {
    /// A broker for `clients` clients, each connecting at once.
    pub fn new(clients: usize, latency: Span) -> Self {
        Broker {
            conns: (0..clients)
                .map(|_| Conn {
                    retry_at: Some(Millis::ZERO),
                    ..Conn::default()
                })
                .collect(),
            latency,
            down_until: None,
            drops: 0,
            restarts: 0,
        }
    }

    /// Drops client `i`'s connection now, as a network fault does.
    pub fn drop_connection<F: Flow<Channel = ()>>(&mut self, i: usize, flow: &mut F, now: Millis) {
        if self.conns[i].up {
            self.drops += 1;
            self.close(i, flow, now);
        }
    }

    /// Restarts the broker: every connection drops, and none is taken until `now + down`.
    pub fn restart(&mut self, now: Millis, down: Span) {
        self.restarts += 1;
        self.down_until = Some(now + down);
    }

    /// Takes client `i`'s bytes, delivers what is due both ways, and connects or closes
    /// it, at `now`. `reconnect_delay` is the client's backoff after a loss.
    pub fn pump<F: Flow<Channel = ()>>(
        &mut self,
        i: usize,
        flow: &mut F,
        now: Millis,
        reconnect_delay: impl Fn(&F) -> Option<Span>,
    ) {
        self.exchange(i, flow, now);
        if !self.conns[i].up && self.conns[i].retry_at.is_none() {
            let delay = reconnect_delay(flow).unwrap_or(Span::from_secs(1));
            self.conns[i].retry_at = Some(now + delay);
        }
    }

    fn exchange<F: Flow<Channel = ()>>(&mut self, i: usize, flow: &mut F, now: Millis) {
        if self.down_until.is_some_and(|t| now >= t) {
            self.down_until = None;
        }
        let down = self.down_until.is_some();
        if down && self.conns[i].up {
            self.close(i, flow, now);
        }
        if !self.conns[i].up && self.conns[i].retry_at.is_some_and(|t| now >= t) {
            if down {
                // Refused: the edge reports the failed attempt as a loss and backs off.
                self.conns[i].retry_at = None;
                flow.handle_disconnected(now);
                return;
            } else {
                let conn = &mut self.conns[i];
                conn.up = true;
                conn.retry_at = None;
                conn.decoder = Some(Decoder::new(MAX_PACKET));
                flow.handle_connected(now);
            }
        }
        if !self.conns[i].up {
            return;
        }
        // Client to broker.
        let mut buf = Vec::new();
        while let Some(t) = flow.poll_transmit(&mut buf) {
            buf.truncate(t.len);
            let at = now + self.latency;
            self.conns[i]
                .to_broker
                .push_back((at, std::mem::take(&mut buf)));
            flow.handle_transmitted(now);
        }
        while self.conns[i]
            .to_broker
            .front()
            .is_some_and(|(t, _)| *t <= now)
        {
            let (_, bytes) = self.conns[i].to_broker.pop_front().unwrap();
            if !self.receive(i, now, &bytes) {
                self.close(i, flow, now);
                return;
            }
        }
        // Broker to client.
        while self.conns[i]
            .to_client
            .front()
            .is_some_and(|(t, _)| *t <= now)
        {
            let (_, bytes) = self.conns[i].to_client.pop_front().unwrap();
            flow.handle_input(now, (), &bytes);
        }
    }

    /// The client's transport went down on its side (its session gave up on it).
    pub fn client_closed<F: Flow<Channel = ()>>(&mut self, i: usize, flow: &mut F, now: Millis) {
        if self.conns[i].up {
            self.close(i, flow, now);
        }
    }

    /// Whether client `i`'s transport is up.
    pub fn is_up(&self, i: usize) -> bool {
        self.conns[i].up
    }

    /// The next moment anything is due for client `i`.
    pub fn next_wakeup(&self, i: usize) -> Option<Millis> {
        let c = &self.conns[i];
        [
            c.retry_at,
            c.to_client.front().map(|(t, _)| *t),
            c.to_broker.front().map(|(t, _)| *t),
            self.down_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn close<F: Flow<Channel = ()>>(&mut self, i: usize, flow: &mut F, now: Millis) {
        let conn = &mut self.conns[i];
        conn.up = false;
        conn.to_client.clear();
        conn.to_broker.clear();
        conn.subs.clear();
        conn.decoder = None;
        // The next pump sets the retry from the client's backoff.
        conn.retry_at = None;
        flow.handle_disconnected(now);
    }

    fn send(&mut self, i: usize, now: Millis, repr: &PacketRepr<'_>) {
        let mut bytes = Vec::new();
        repr.append_to(&mut bytes)
            .expect("the broker's packets encode");
        let at = now + self.latency;
        self.conns[i].to_client.push_back((at, bytes));
    }

    /// Handles bytes from client `i`; false closes the connection.
    fn receive(&mut self, i: usize, now: Millis, bytes: &[u8]) -> bool {
        let Some(decoder) = self.conns[i].decoder.as_mut() else {
            return false;
        };
        decoder.push(bytes);
        let mut packets = Vec::new();
        while let Some(packet) = decoder.next_packet() {
            match packet {
                Ok(p) => packets.push(p),
                Err(_) => return false,
            }
        }
        for packet in packets {
            let Ok(repr) = PacketRepr::parse_bytes(&packet) else {
                return false;
            };
            match repr {
                PacketRepr::Connect(_) => {
                    let ack = ConnackRepr {
                        session_present: false,
                        code: ConnackCode::Accepted,
                    };
                    self.send(i, now, &PacketRepr::Connack(ack));
                }
                PacketRepr::Subscribe(sub) => {
                    let mut codes = Vec::new();
                    for s in &sub.filters {
                        let conn = &mut self.conns[i];
                        conn.subs.retain(|(f, _)| f != s.filter);
                        conn.subs.push((s.filter.to_string(), s.qos));
                        codes.push(SubackCode::Granted(s.qos));
                    }
                    let ack = SubackRepr {
                        packet_id: sub.packet_id,
                        codes,
                    };
                    self.send(i, now, &PacketRepr::Suback(ack));
                }
                PacketRepr::Unsubscribe(u) => {
                    self.conns[i]
                        .subs
                        .retain(|(f, _)| !u.filters.contains(&f.as_str()));
                    self.send(i, now, &PacketRepr::Unsuback(u.packet_id));
                }
                PacketRepr::Publish(p) => {
                    if let QosPid::AtLeastOnce(pid) = p.qos {
                        self.send(i, now, &PacketRepr::Puback(pid));
                    }
                    self.route(now, &p);
                }
                PacketRepr::Pingreq => self.send(i, now, &PacketRepr::Pingresp),
                PacketRepr::Disconnect => return false,
                // A PUBACK for a delivery: nothing to resend with clean sessions.
                PacketRepr::Puback(_) => {}
                _ => return false,
            }
        }
        true
    }

    fn route(&mut self, now: Millis, p: &PublishRepr<'_>) {
        let offered = match p.qos {
            QosPid::AtMostOnce => QoS::AtMostOnce,
            QosPid::AtLeastOnce(_) => QoS::AtLeastOnce,
        };
        for i in 0..self.conns.len() {
            let conn = &self.conns[i];
            if !conn.up {
                continue;
            }
            let Some(granted) = conn
                .subs
                .iter()
                .filter(|(f, _)| matches(f, p.topic))
                .map(|(_, q)| *q)
                .max_by_key(|q| *q as u8)
            else {
                continue;
            };
            let qos = if granted == QoS::AtLeastOnce && offered == QoS::AtLeastOnce {
                let conn = &mut self.conns[i];
                conn.next_pid = conn.next_pid.checked_add(1).unwrap_or(1);
                QosPid::AtLeastOnce(PacketId::new(conn.next_pid).expect("nonzero"))
            } else {
                QosPid::AtMostOnce
            };
            let out = PublishRepr {
                topic: p.topic,
                qos,
                dup: false,
                retain: false,
                payload: p.payload,
            };
            self.send(i, now, &PacketRepr::Publish(out));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn filters_match_by_level() {
        assert!(matches(
            "/sys/+/+/ota/device/inform",
            "/sys/pk/dk/ota/device/inform"
        ));
        assert!(!matches(
            "/sys/+/+/ota/device/inform",
            "/sys/pk/dk/ota/device/progress"
        ));
        assert!(matches("/sys/pk/#", "/sys/pk/dk/ota/device/inform"));
        assert!(!matches("/sys/pk/dk", "/sys/pk/dk/ota"));
    }
}
