//! `enos-sim`: an EnOS-compatible OTA service for tests and demos. It connects to an MQTT
//! broker as the cloud side of `protocols/enos_microchip.md` part A and serves firmware
//! over HTTP on 127.0.0.1.
//!
//! Contract. [`Sim::start`] binds the HTTP server, then runs three threads until
//! [`Sim::stop`] (or drop): the MQTT thread owns one [`edge::MqttEdge`] with a cloud-side
//! [`otaweb::flow::mqtt::MqttSession`] subscribed at QoS 1 to
//! `/sys/+/+/ota/device/{inform,progress,getversion,upgrade_reply}` (it reconnects on its
//! own within 200 ms, before any device is back), and answers every device request through the
//! [`registry::Registry`]; the HTTP thread hands each request to [`http`] on a thread of
//! its own; the relay thread accepts on the public HTTP port ([`relay`]) and passes each
//! connection on to the HTTP server. [`Sim::is_ready`] turns true once the broker granted every subscription, so a
//! device that publishes after that is heard. The sim publishes its replies and commands
//! at QoS 1; the broker delivers them at the device's subscription QoS.
//!
//! The sim trusts the broker for device logins: it does not check the CONNECT sign
//! (mosquitto in the tests accepts anyone). It checks the device secret only at the file
//! service's login (A8).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod edge;
pub mod http;
pub mod registry;
pub mod relay;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use otaweb::flow::mqtt::{ConnectOptions, MqttEvent, MqttSession, SessionConfig};
use otaweb::time::Span;
use otaweb::wire::mqtt::QoS;

use crate::config::{Config, TaskRequest};
use crate::edge::MqttEdge;
use crate::registry::{ApiError, Outbound, Registry, Task};
use crate::relay::Relay;

/// The device topics the cloud side listens to.
pub const SUBSCRIPTIONS: [&str; 4] = [
    "/sys/+/+/ota/device/inform",
    "/sys/+/+/ota/device/progress",
    "/sys/+/+/ota/device/getversion",
    "/sys/+/+/ota/device/upgrade_reply",
];

/// How long one MQTT round waits for input: short, so admin pushes go out promptly.
const MQTT_ROUND: Duration = Duration::from_millis(20);

/// Sims started in this process, for distinct client ids (the tests run several at once).
static INSTANCES: AtomicU64 = AtomicU64::new(0);

/// The sim's monotonic clock, in milliseconds since start; shared by its threads.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    /// A clock starting now.
    #[must_use]
    pub fn new() -> Self {
        Clock(Instant::now())
    }

    /// Milliseconds since the clock started.
    #[must_use]
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// The PUBLISH packets of the cloud's MQTT session so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MqttCounts {
    /// Messages that reached the cloud (device requests and replies).
    pub received: u64,
    /// Messages the cloud handed to its session (replies and commands), re-sends not counted.
    pub published: u64,
}

/// The counters behind [`MqttCounts`], shared with the MQTT thread.
#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    published: AtomicU64,
}

/// A running sim. See the crate docs.
pub struct Sim {
    http_addr: SocketAddr,
    mqtt_addr: String,
    registry: Arc<Mutex<Registry>>,
    outbound: mpsc::Sender<Outbound>,
    clock: Clock,
    stop: Arc<AtomicBool>,
    ready: Arc<AtomicBool>,
    relay: Arc<Relay>,
    counters: Arc<Counters>,
    threads: Vec<JoinHandle<()>>,
}

impl Sim {
    /// Starts the sim with `config`; `mqtt` and `http` override the config's broker and port.
    pub fn start(config: &Config, mqtt: Option<&str>, http: Option<u16>) -> Result<Sim, String> {
        config.check()?;
        let firmwares = config.firmwares()?;
        let server = http::bind()?;
        let relay = Arc::new(Relay::bind(
            http.unwrap_or(config.http),
            server
                .server_addr()
                .to_ip()
                .ok_or("the HTTP server has no IP address")?,
        )?);
        let http_addr = relay.addr();
        let clock = Clock::new();
        let mut registry = Registry::new(config, firmwares, &format!("http://{http_addr}"));
        for task in &config.tasks {
            registry
                .create_task(clock.now_ms(), task)
                .map_err(|e| format!("task in the config: {}", e.message))?;
        }
        let registry = Arc::new(Mutex::new(registry));
        let (outbound, inbox) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(AtomicBool::new(false));
        let mqtt_addr = mqtt.unwrap_or(&config.mqtt).to_string();

        // A client id of our own per sim, so two sims on one broker do not evict each other.
        let client_id = format!(
            "enos-sim-{}-{}",
            std::process::id(),
            INSTANCES.fetch_add(1, Ordering::Relaxed)
        );
        // The cloud stands in for EnOS's own side of the broker, which never misses what a
        // device publishes: after a broker restart it must be subscribed again before any
        // device is back (devices wait at least 1 s), so it retries every 50–200 ms.
        let session_config = SessionConfig {
            min_reconnect_delay: Span(50),
            max_reconnect_delay: Span(200),
            ..SessionConfig::default()
        };
        let session = MqttSession::new(ConnectOptions::new(client_id), session_config)
            .map_err(|e| e.to_string())?;
        let mut edge = MqttEdge::new(mqtt_addr.clone(), session);
        for filter in SUBSCRIPTIONS {
            let now = edge.now();
            edge.session_mut()
                .subscribe(now, filter, QoS::AtLeastOnce)
                .map_err(|e| e.to_string())?;
        }
        let counters = Arc::new(Counters::default());
        // Named threads, so a profile or /proc/PID/task tells the sim's parts apart. A thread
        // that cannot start stops those already running.
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(f)
                .map_err(|e| {
                    stop.store(true, Ordering::Relaxed);
                    format!("starting the {name} thread: {e}")
                })
        };
        let mqtt_thread = {
            let (registry, stop, ready) = (registry.clone(), stop.clone(), ready.clone());
            let counters = counters.clone();
            spawn(
                "enos-sim-mqtt",
                Box::new(move || {
                    let shared = MqttShared {
                        registry: &registry,
                        inbox: &inbox,
                        clock,
                        stop: &stop,
                        ready: &ready,
                        counters: &counters,
                        room: session_config.max_queued,
                    };
                    run_mqtt(&mut edge, &shared);
                }),
            )?
        };
        let http_thread = {
            let shared = Arc::new(http::Shared {
                registry: registry.clone(),
                outbound: outbound.clone(),
                clock,
                relay: relay.clone(),
            });
            let stop = stop.clone();
            spawn(
                "enos-sim-http",
                Box::new(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(100)) {
                            let shared = shared.clone();
                            // One thread per request: a long download must not hold up the
                            // admin API.
                            std::thread::spawn(move || http::handle(&shared, request));
                        }
                    }
                }),
            )?
        };
        let relay_thread = {
            let relay = relay.clone();
            spawn("enos-sim-relay", Box::new(move || relay.run()))?
        };
        Ok(Sim {
            http_addr,
            mqtt_addr,
            registry,
            outbound,
            clock,
            stop,
            ready,
            relay,
            counters,
            threads: vec![mqtt_thread, http_thread, relay_thread],
        })
    }

    /// The HTTP address (127.0.0.1 and the bound port).
    #[must_use]
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The HTTP base URL, `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// The broker address the sim connects to.
    #[must_use]
    pub fn mqtt_addr(&self) -> &str {
        &self.mqtt_addr
    }

    /// Connected, with every subscription granted.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Waits up to `timeout` for [`Sim::is_ready`].
    #[must_use]
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.is_ready() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.is_ready()
    }

    /// Creates a task in-process, as `POST /admin/tasks` does.
    pub fn create_task(&self, req: &TaskRequest) -> Result<Task, ApiError> {
        let (task, out) = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .create_task(self.clock.now_ms(), req)?;
        for msg in out {
            // Only fails once the MQTT thread is gone, i.e. while stopping.
            let _ = self.outbound.send(msg);
        }
        Ok(task)
    }

    /// The PUBLISH packets the cloud received and sent so far.
    #[must_use]
    pub fn mqtt_counts(&self) -> MqttCounts {
        MqttCounts {
            received: self.counters.received.load(Ordering::Relaxed),
            published: self.counters.published.load(Ordering::Relaxed),
        }
    }

    /// The registry, for inspection.
    #[must_use]
    pub fn registry(&self) -> Arc<Mutex<Registry>> {
        self.registry.clone()
    }

    /// Stops the threads (DISCONNECT to the broker, HTTP connections closed) and waits
    /// for them.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.relay.stop();
        for t in self.threads.drain(..) {
            // A panicked thread has nothing left to clean up.
            let _ = t.join();
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What the MQTT thread works with, besides its edge.
struct MqttShared<'a> {
    registry: &'a Mutex<Registry>,
    inbox: &'a mpsc::Receiver<Outbound>,
    clock: Clock,
    stop: &'a AtomicBool,
    ready: &'a AtomicBool,
    counters: &'a Counters,
    /// The session's `max_queued`: how many unacknowledged messages it takes.
    room: usize,
}

fn run_mqtt(edge: &mut MqttEdge, shared: &MqttShared<'_>) {
    let mut granted = 0;
    // Messages the session cannot take yet, oldest first: it refuses a publish beyond its
    // `max_queued` unacknowledged ones, and a refused reply or push would be lost.
    let mut backlog: VecDeque<Outbound> = VecDeque::new();
    while !shared.stop.load(Ordering::Relaxed) {
        for event in edge.pump(MQTT_ROUND) {
            match event {
                MqttEvent::Connected { .. } => granted = 0,
                MqttEvent::Subscribed { .. } => {
                    granted += 1;
                    if granted == SUBSCRIPTIONS.len() {
                        shared.ready.store(true, Ordering::Relaxed);
                    }
                }
                MqttEvent::SubscribeRefused { filter, refusal } => {
                    eprintln!("enos-sim: the broker refused {filter}: {refusal:?}");
                }
                MqttEvent::LinkLost(e) | MqttEvent::Failed(e) => {
                    shared.ready.store(false, Ordering::Relaxed);
                    eprintln!("enos-sim: MQTT link to {}: {e}", edge.addr());
                }
                MqttEvent::Message { topic, payload, .. } => {
                    shared.counters.received.fetch_add(1, Ordering::Relaxed);
                    let out = shared
                        .registry
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .handle_message(shared.clock.now_ms(), &topic, &payload);
                    backlog.extend(out);
                }
                MqttEvent::Published { .. }
                | MqttEvent::Unsubscribed { .. }
                | MqttEvent::Closed => {}
            }
        }
        backlog.extend(shared.inbox.try_iter());
        while edge.session().unacknowledged() < shared.room {
            let Some(msg) = backlog.pop_front() else {
                break;
            };
            shared.counters.published.fetch_add(1, Ordering::Relaxed);
            publish(edge, &msg);
        }
    }
    edge.shutdown();
}

fn publish(edge: &mut MqttEdge, msg: &Outbound) {
    let now = edge.now();
    if let Err(e) =
        edge.session_mut()
            .publish(now, &msg.topic, &msg.payload, QoS::AtLeastOnce, false)
    {
        eprintln!("enos-sim: cannot publish on {}: {e}", msg.topic);
    }
}
