//! The bench's own mosquitto, and a client that reads its `$SYS` counters.
//!
//! Contract. [`Mosquitto::start`] writes a config into the bench's scratch directory, starts
//! Debian's `/usr/sbin/mosquitto` with one plain MQTT listener on a free 127.0.0.1 port, and
//! returns once the port accepts; dropping it kills the broker (by its PID) and waits for
//! it. [`SysMonitor`] subscribes to `$SYS/broker/#` on that broker with the enos-sim MQTT
//! edge (the broker publishes it every [`SYS_INTERVAL_S`] seconds, only values that
//! changed) and keeps the latest value of each numeric topic.

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use enos_sim::edge::MqttEdge;
use otaweb::flow::mqtt::{ConnectOptions, MqttEvent, MqttSession, SessionConfig};
use otaweb::wire::mqtt::QoS;

/// Debian's broker, as the tests use it.
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";
/// Seconds between `$SYS` updates.
pub const SYS_INTERVAL_S: u64 = 1;
/// QoS 1 messages mosquitto holds per client beyond the in-flight ones. Its default, 1,000,
/// drops messages to the one cloud client when a thousand devices report at once (tried:
/// 174 PUBLISHes dropped in a 1,000-device round, which took 13 s instead of 3 s while lost
/// `inform`s waited for the devices' 10 s reply timeout).
pub const MAX_QUEUED: u32 = 1_000_000;

/// The config lines, every one of them a choice the bench's output names.
pub fn config(port: u16, log: &Path) -> String {
    [
        "allow_anonymous true".to_string(),
        "persistence false".to_string(),
        format!("log_dest file {}", log.display()),
        "log_type error".to_string(),
        "log_type warning".to_string(),
        format!("sys_interval {SYS_INTERVAL_S}"),
        format!("max_queued_messages {MAX_QUEUED}"),
        // Off by default in mosquitto; EMQX and the EnOS SDKs' sockets use it. Without it a
        // reply waits for the delayed ACK of the previous one.
        "set_tcp_nodelay true".to_string(),
        format!("listener {port} 127.0.0.1"),
        "max_connections -1".to_string(),
        String::new(),
    ]
    .join("\n")
}

/// A running mosquitto, killed on drop.
pub struct Mosquitto {
    child: Child,
    port: u16,
}

impl Mosquitto {
    /// Starts the broker with its config and log in `dir`.
    pub fn start(dir: &Path) -> Result<Mosquitto, String> {
        if !Path::new(MOSQUITTO).exists() {
            return Err(format!(
                "{MOSQUITTO} is not installed (apt-get install mosquitto)"
            ));
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let conf = dir.join("mosquitto.conf");
        let log = dir.join("mosquitto.log");
        std::fs::write(&conf, config(port, &log)).map_err(|e| e.to_string())?;
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{MOSQUITTO}: {e}"))?;
        let mut broker = Mosquitto { child, port };
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(broker.addr()).is_err() {
            if Instant::now() > until || broker.child.try_wait().ok().flatten().is_some() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("mosquitto did not listen on {port}: {log}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(broker)
    }

    /// `127.0.0.1:PORT`.
    #[must_use]
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's PID, for `/proc`.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        // No persistence: nothing is lost by a kill.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The latest `$SYS/broker/…` values; see the module docs.
pub struct SysMonitor {
    values: Arc<Mutex<HashMap<String, u64>>>,
    /// `$SYS` messages the monitor received: the broker counts them as sent PUBLISHes.
    heard: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SysMonitor {
    /// Connects to the broker at `addr` and subscribes.
    pub fn start(addr: &str) -> Result<SysMonitor, String> {
        let session = MqttSession::new(
            ConnectOptions::new("otaweb-fleet-sys"),
            SessionConfig::default(),
        )
        .map_err(|e| e.to_string())?;
        let mut edge = MqttEdge::new(addr, session);
        let now = edge.now();
        edge.session_mut()
            .subscribe(now, "$SYS/broker/#", QoS::AtMostOnce)
            .map_err(|e| e.to_string())?;
        let values = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let heard = Arc::new(AtomicU64::new(0));
        let thread = {
            let (values, stop, heard) = (values.clone(), stop.clone(), heard.clone());
            std::thread::Builder::new()
                .name("fleet-sys".to_string())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        for event in edge.pump(Duration::from_millis(50)) {
                            let MqttEvent::Message { topic, payload, .. } = event else {
                                continue;
                            };
                            heard.fetch_add(1, Ordering::Relaxed);
                            let value = std::str::from_utf8(&payload)
                                .ok()
                                .and_then(|v| v.trim().parse::<u64>().ok());
                            if let Some(value) = value {
                                lock(&values).insert(topic, value);
                            }
                        }
                    }
                    edge.shutdown();
                })
                .map_err(|e| e.to_string())?
        };
        Ok(SysMonitor {
            values,
            heard,
            stop,
            thread: Some(thread),
        })
    }

    /// How many `$SYS` messages the monitor received so far.
    #[must_use]
    pub fn heard(&self) -> u64 {
        self.heard.load(Ordering::Relaxed)
    }

    /// The latest value of `$SYS/broker/{name}`, 0 before the first.
    #[must_use]
    pub fn get(&self, name: &str) -> u64 {
        lock(&self.values)
            .get(&format!("$SYS/broker/{name}"))
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for SysMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // A panicked monitor only loses its readings.
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain inserts and reads: consistent after any panic.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
