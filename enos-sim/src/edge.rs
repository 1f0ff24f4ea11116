//! A native TCP edge for the sans-IO [`MqttSession`]: one blocking socket, pumped in short
//! rounds by the thread that owns it.
//!
//! Contract. [`MqttEdge::pump`] does one round in the order `src/flow/mod.rs` asks for:
//! open the socket if the session wants a connection and the reconnect delay has passed,
//! write every pending datagram, read for at most `wait` and feed what arrived to
//! [`Flow::handle_input`], fire [`Flow::handle_timeout`] once [`Flow::poll_timeout`] has
//! passed, write again, and return the events. A failed connect, read or write, a closed
//! socket, or a session that gave up on its connection ([`SessionState::Dropping`]) closes
//! the socket and reports [`Flow::handle_disconnected`]; the next attempt waits for
//! [`MqttSession::poll_reconnect_delay`]. Commands (publish, subscribe) go to
//! [`MqttEdge::session_mut`] between rounds; the next round sends them. Time is the
//! edge's own monotonic clock, in milliseconds since the edge was made.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use otaweb::flow::mqtt::{MqttEvent, MqttSession, SessionState};
use otaweb::flow::Flow;
use otaweb::Millis;

/// How long one connect attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One broker connection for one session. See the module docs.
#[derive(Debug)]
pub struct MqttEdge {
    addr: String,
    session: MqttSession,
    stream: Option<TcpStream>,
    started: Instant,
    /// No connect attempt before this moment (the session's backoff).
    retry_at: Option<Millis>,
    out: Vec<u8>,
    events: Vec<MqttEvent>,
}

impl MqttEdge {
    /// An edge that will connect `session` to the broker at `addr` (`HOST:PORT`) on the
    /// first [`MqttEdge::pump`].
    #[must_use]
    pub fn new(addr: impl Into<String>, session: MqttSession) -> Self {
        MqttEdge {
            addr: addr.into(),
            session,
            stream: None,
            started: Instant::now(),
            retry_at: None,
            out: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Now on the edge's clock.
    #[must_use]
    pub fn now(&self) -> Millis {
        Millis(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// The session, for commands; they go out on the next round.
    pub fn session_mut(&mut self) -> &mut MqttSession {
        &mut self.session
    }

    /// The broker address.
    #[must_use]
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The session, for getters.
    #[must_use]
    pub fn session(&self) -> &MqttSession {
        &self.session
    }

    /// One round (see the module docs); blocks for at most about `wait`.
    pub fn pump(&mut self, wait: Duration) -> Vec<MqttEvent> {
        if self.stream.is_none() {
            self.try_connect(wait);
        }
        self.write_pending();
        let now = self.now();
        let wait = self.session.poll_timeout().map_or(wait, |deadline| {
            wait.min(Duration::from_millis(deadline.0.saturating_sub(now.0)))
        });
        if let Some(stream) = self.stream.as_mut() {
            // A zero read timeout is an error in std; 1 ms is as good as a poll.
            let read = stream
                .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
                .and_then(|()| {
                    let mut buf = [0u8; 4096];
                    stream.read(&mut buf).map(|n| buf[..n].to_vec())
                });
            match read {
                Ok(bytes) if bytes.is_empty() => self.close(),
                Ok(bytes) => {
                    let now = self.now();
                    self.session.handle_input(now, (), &bytes);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => self.close(),
            }
        }
        let now = self.now();
        if self.session.poll_timeout().is_some_and(|d| now >= d) {
            self.session.handle_timeout(now);
        }
        self.write_pending();
        if self.stream.is_some() && self.session.state() == SessionState::Dropping {
            self.close();
        }
        while let Some(event) = self.session.poll_event() {
            self.events.push(event);
        }
        std::mem::take(&mut self.events)
    }

    /// Sends DISCONNECT (via [`MqttSession::disconnect`]) and closes the socket.
    pub fn shutdown(&mut self) {
        let now = self.now();
        self.session.disconnect(now);
        self.write_pending();
        if let Some(stream) = self.stream.take() {
            // Best effort: the broker drops the connection anyway once DISCONNECT is read.
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn try_connect(&mut self, wait: Duration) {
        let now = self.now();
        if matches!(self.session.state(), SessionState::Closed) {
            return;
        }
        if let Some(at) = self.retry_at {
            if now < at {
                std::thread::sleep(wait.min(Duration::from_millis(at.0 - now.0)));
                return;
            }
        }
        let stream = self
            .addr
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .and_then(|addr| TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).ok());
        let now = self.now();
        match stream {
            Some(stream) => {
                // MQTT packets are small and latency matters more than batching.
                let _ = stream.set_nodelay(true);
                self.stream = Some(stream);
                self.retry_at = None;
                self.session.handle_connected(now);
            }
            None => {
                self.session.handle_disconnected(now);
                self.schedule_retry(now);
            }
        }
    }

    fn schedule_retry(&mut self, now: Millis) {
        self.retry_at = Some(match self.session.poll_reconnect_delay() {
            Some(delay) => now + delay,
            // The session will not mend by reconnecting: try again rarely, so a broker
            // restarted with a fixed config is still picked up.
            None => now + otaweb::time::Span::from_secs(30),
        });
    }

    fn write_pending(&mut self) {
        loop {
            self.out.clear();
            let Some(t) = self.session.poll_transmit(&mut self.out) else {
                return;
            };
            // Without a socket the datagram belongs to a connection that is gone; the session
            // re-sends what matters after the next CONNACK.
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            if stream.write_all(&self.out[..t.len]).is_err() {
                self.close();
                return;
            }
            let now = self.now();
            self.session.handle_transmitted(now);
        }
    }

    fn close(&mut self) {
        if let Some(stream) = self.stream.take() {
            let _ = stream.shutdown(Shutdown::Both);
            let now = self.now();
            self.session.handle_disconnected(now);
            self.schedule_retry(now);
        }
    }
}
