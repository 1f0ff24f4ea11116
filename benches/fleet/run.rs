//! One fleet run: start everything, connect the fleet, then in each round push one task
//! per device and wait for every device to report the round's version, check the registry,
//! stop everything, print.
//!
//! Contract. Phases, each measured from the main thread: *connect* (every device's CONNECT,
//! four SUBSCRIBEs and answered `inform`), then `OTAWEB_FLEET_ROUNDS` (default 3) *update*
//! rounds (from the round's first task created to the last device's
//! [`otaweb::flow::enos::EnosEvent::Done`]; versions 2.0.0, 3.0.0, ...). After each phase
//! the fleet is idle for [`SETTLE`], so mosquitto's `$SYS` counters (published every second,
//! only when changed) are current when read. The detailed table is the median round's (by
//! updates per second); every round has a row of its own. CPU times are `/proc` deltas over
//! each update phase: mosquitto's process, the `fleet-*` threads (the devices: otaweb core, sockets,
//! HTTP client, hashing), the `enos-sim-mqtt` thread (the cloud's MQTT session and
//! registry), and the rest of this process (the file service: tiny_http, the relay and
//! their threads; the main thread's sampling).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::firmware_like::firmware_like;
use enos_sim::config::{Config, Policy, TaskRequest};
use enos_sim::registry::TaskStatus;
use enos_sim::Sim;
use serde_json::json;

use crate::broker::{Mosquitto, SysMonitor, MAX_QUEUED, MOSQUITTO};
use crate::device::{self, DeviceReport, Plan, Shared, WorkerReport};
use crate::procstat::{self, Sample, Switches};

const PRODUCT: &str = "pkFleet";
const OLD: &str = "1.0.0";
/// Idle time for `$SYS` to catch up: two of its intervals and a little.
const SETTLE: Duration = Duration::from_millis(2_300);
/// How often the main thread looks at descriptors and threads for their peaks.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// Broker connections each worker opens at a time (mosquitto listens with a backlog of 100).
const CONNECT_WINDOW: usize = 32;

/// A number from the environment, or `default`.
fn env(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("{name}={v} is not a whole number")),
        Err(_) => Ok(default),
    }
}

/// The bench's scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Everything measured at one moment.
#[derive(Clone, Copy, Debug, Default)]
struct Snapshot {
    at: Duration,
    mosquitto: Sample,
    mosquitto_switches: Switches,
    bench: Sample,
    bench_switches: Switches,
    devices_cpu: f64,
    cloud_cpu: f64,
    sys_in: u64,
    sys_out: u64,
    sys_packets_in: u64,
    sys_packets_out: u64,
    sys_dropped: u64,
    sys_heard: u64,
    cloud_in: u64,
    cloud_out: u64,
    devices_out: u64,
    tcp: procstat::Tcp,
}

/// Peaks seen while sampling.
#[derive(Clone, Copy, Debug, Default)]
struct Peaks {
    mosquitto_fds: usize,
    bench_fds: usize,
    bench_threads: usize,
}

impl Peaks {
    fn look(&mut self, mosquitto: &str) {
        let m = procstat::sample(mosquitto);
        let b = procstat::sample("self");
        self.mosquitto_fds = self.mosquitto_fds.max(m.fds);
        self.bench_fds = self.bench_fds.max(b.fds);
        self.bench_threads = self.bench_threads.max(b.threads);
    }
}

struct World {
    start: Instant,
    broker: Mosquitto,
    sys: SysMonitor,
    sim: Sim,
    shared: Arc<Shared>,
    peaks: Peaks,
}

impl World {
    fn snapshot(&self) -> Snapshot {
        let pid = self.broker.pid().to_string();
        let counts = self.sim.mqtt_counts();
        Snapshot {
            at: self.start.elapsed(),
            mosquitto: procstat::sample(&pid),
            mosquitto_switches: procstat::switches(&pid),
            bench: procstat::sample("self"),
            bench_switches: procstat::switches("self"),
            devices_cpu: procstat::threads_cpu("fleet-"),
            cloud_cpu: procstat::threads_cpu("enos-sim-mqtt"),
            sys_in: self.sys.get("publish/messages/received"),
            sys_out: self.sys.get("publish/messages/sent"),
            sys_packets_in: self.sys.get("messages/received"),
            sys_packets_out: self.sys.get("messages/sent"),
            sys_dropped: self.sys.get("publish/messages/dropped"),
            sys_heard: self.sys.heard(),
            cloud_in: counts.received,
            cloud_out: counts.published,
            devices_out: self.shared.published.load(Ordering::Relaxed),
            tcp: procstat::tcp(),
        }
    }

    /// Samples peaks until `done` holds or `deadline` passes; whether `done` held.
    fn wait(&mut self, deadline: Instant, done: impl Fn(&Shared) -> bool) -> bool {
        let pid = self.broker.pid().to_string();
        loop {
            if done(&self.shared) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.peaks.look(&pid);
            std::thread::sleep(
                SAMPLE_EVERY.min(deadline.saturating_duration_since(Instant::now())),
            );
        }
    }
}

/// One update round.
struct Round {
    version: String,
    before: Snapshot,
    after: Snapshot,
    settled: Snapshot,
    /// When each device's task was created (fleet milliseconds), by device index.
    created_at: Vec<u64>,
    all_done: bool,
}

/// The fleet's image for `version`: the same firmware-like body, marked with the version so
/// that each round installs other bytes.
fn image_for(len: usize, version: &str) -> Vec<u8> {
    let mut image = firmware_like(len);
    for (byte, mark) in image.iter_mut().zip(version.bytes()) {
        *byte = mark;
    }
    image
}

/// Runs the bench; `Ok(false)` when a device or task did not end as it must.
pub fn run() -> Result<bool, String> {
    let number = |name: &str, default: u64| {
        env(name, default).and_then(|v| usize::try_from(v).map_err(|e| e.to_string()))
    };
    let devices = number("OTAWEB_FLEET_DEVICES", 1_000)?;
    let threads = number("OTAWEB_FLEET_THREADS", 2)?.max(1);
    let image_kib = number("OTAWEB_FLEET_IMAGE_KIB", 256)?;
    let rounds = number("OTAWEB_FLEET_ROUNDS", 3)?.max(1);
    let limit = Duration::from_secs(env("OTAWEB_FLEET_LIMIT_SECS", 100)?);
    let start = Instant::now();
    let deadline = start + limit;
    // Per device: the MQTT socket here and in mosquitto, and during the download the HTTP
    // socket, the relay's two and tiny_http's one.
    let fd_limit = procstat::raise_fd_limit(devices as u64 * 6 + 1_024);

    let scratch =
        Scratch(std::env::temp_dir().join(format!("otaweb-fleet-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).map_err(|e| e.to_string())?;
    let versions: Vec<String> = (0..rounds).map(|r| format!("{}.0.0", r + 2)).collect();
    let mut firmwares = Vec::new();
    for version in &versions {
        let path = scratch.0.join(format!("app-{version}.bin"));
        std::fs::write(&path, image_for(image_kib * 1024, version)).map_err(|e| e.to_string())?;
        firmwares.push(json!({ "version": version, "path": path, "signMethod": "md5" }));
    }

    let broker = Mosquitto::start(&scratch.0)?;
    let sys = SysMonitor::start(&broker.addr())?;
    let config: Config = serde_json::from_value(json!({
        "mqtt": broker.addr(),
        "fileUrlStyle": "enos",
        "products": [{
            "productKey": PRODUCT,
            "devices": (0..devices).map(|i| json!({
                "deviceKey": device::device_key(i),
                "deviceSecret": device::device_secret(i),
            })).collect::<Vec<_>>(),
            "firmwares": firmwares,
        }],
    }))
    .map_err(|e| e.to_string())?;
    let sim = Sim::start(&config, None, None)?;
    if !sim.wait_ready(Duration::from_secs(10)) {
        return Err("enos-sim did not get its subscriptions from mosquitto".into());
    }
    let broker_addr: SocketAddr = broker.addr().parse().map_err(|e| format!("{e}"))?;
    eprintln!(
        "fleet: mosquitto on {broker_addr} (PID {}), file service on {}",
        broker.pid(),
        sim.http_addr()
    );
    let shared = Arc::new(Shared::default());
    let mut workers = Vec::new();
    for n in 0..threads {
        let plan = Plan {
            broker: broker_addr,
            file_service: sim.http_addr(),
            product_key: PRODUCT.to_string(),
            devices: devices * n / threads..devices * (n + 1) / threads,
            old_version: OLD.to_string(),
            connect_window: CONNECT_WINDOW,
            epoch: start,
        };
        workers.push(device::spawn(n, plan, shared.clone()).map_err(|e| e.to_string())?);
    }
    let mut world = World {
        start,
        broker,
        sys,
        sim,
        shared,
        peaks: Peaks::default(),
    };

    let connect_start = world.snapshot();
    let all_connected = world.wait(deadline, |s| s.connected.load(Ordering::Relaxed) >= devices);
    let connected = world.snapshot();
    std::thread::sleep(SETTLE);
    let mut before = world.snapshot();
    let mut failures = Vec::new();
    if !all_connected {
        failures.push(format!(
            "only {} of {devices} devices connected within {limit:?}",
            world.shared.connected.load(Ordering::Relaxed)
        ));
    }
    let registry = world.sim.registry();
    let mut done_rounds: Vec<Round> = Vec::new();
    for (r, version) in versions.iter().enumerate() {
        if !all_connected {
            break;
        }
        let mut created_at = Vec::with_capacity(devices);
        for i in 0..devices {
            let task = TaskRequest {
                product_key: PRODUCT.to_string(),
                device_key: device::device_key(i),
                version: version.clone(),
                policy: Policy::Push,
            };
            created_at.push(start.elapsed().as_millis() as u64);
            if let Err(e) = world.sim.create_task(&task) {
                failures.push(format!("task for {}: {}", task.device_key, e.message));
            }
        }
        let target = devices * (r + 1);
        let all_done = world.wait(deadline, |s| s.done.load(Ordering::Relaxed) >= target);
        let after = world.snapshot();
        // The registry hears the last inform before the device hears its reply; give the
        // cloud's thread a moment all the same.
        let settle_until = Instant::now() + SETTLE;
        while Instant::now() < settle_until
            && registry
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .tasks()
                .iter()
                .any(|t| t.status != TaskStatus::Succeeded)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(settle_until.saturating_duration_since(Instant::now()));
        let settled = world.snapshot();
        done_rounds.push(Round {
            version: version.clone(),
            before,
            after,
            settled,
            created_at,
            all_done,
        });
        before = settled;
        if !all_done {
            failures.push(format!(
                "round {} ({version}): {} of {devices} devices done within {limit:?}",
                r + 1,
                world.shared.done.load(Ordering::Relaxed) - devices * r
            ));
            break;
        }
    }

    world.shared.stop.store(true, Ordering::Relaxed);
    let reports: Vec<WorkerReport> = workers
        .into_iter()
        .map(|w| w.join().map_err(|_| "a worker panicked".to_string()))
        .collect::<Result<_, _>>()?;
    let tasks = registry
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .tasks()
        .to_vec();
    let World {
        broker,
        sys,
        sim,
        peaks,
        ..
    } = world;
    sim.stop();
    drop(sys);
    let mosquitto_version = mosquitto_version();
    drop(broker);

    let fleet: Vec<&DeviceReport> = reports.iter().flat_map(|r| &r.devices).collect();
    let last = done_rounds.last().map_or(OLD, |r| r.version.as_str());
    for d in &fleet {
        let finished = d.tasks.iter().filter(|t| t.done_at.is_some()).count();
        if d.version != last || finished != done_rounds.len() {
            failures.push(format!(
                "{} ends on version {} after {finished} of {} tasks",
                d.key,
                d.version,
                done_rounds.len()
            ));
        }
        failures.extend(d.problems.iter().map(|p| format!("{}: {p}", d.key)));
    }
    if tasks.len() != devices * done_rounds.len() {
        failures.push(format!(
            "the registry holds {} tasks for {devices} devices and {} rounds",
            tasks.len(),
            done_rounds.len()
        ));
    }
    for t in &tasks {
        let last_step = t.steps.last().map(|s| s.step);
        if t.status != TaskStatus::Succeeded || last_step != Some(100) {
            failures.push(format!(
                "task {} of {}: {:?}, last step {last_step:?}",
                t.id, t.device_key, t.status
            ));
        }
    }

    let report = Report {
        devices,
        threads,
        image_kib,
        fd_limit,
        limit,
        connect_start,
        connected,
        rounds: &done_rounds,
        peaks,
        workers: &reports,
        fleet: &fleet,
        tasks: tasks.len(),
        succeeded: tasks
            .iter()
            .filter(|t| t.status == TaskStatus::Succeeded)
            .count(),
        failures: &failures,
        mosquitto_version,
        hashing_ms: hashing_ms(image_kib * 1024),
    };
    print!("{}", report.markdown());
    Ok(
        failures.is_empty()
            && done_rounds.len() == rounds
            && done_rounds.iter().all(|r| r.all_done),
    )
}

/// What an update's checks cost the device side: MD5 once and SHA-256 three times over
/// the image, best of 5 runs, in milliseconds.
fn hashing_ms(len: usize) -> f64 {
    let image = firmware_like(len);
    (0..5)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(otaweb::image::digest::md5(std::hint::black_box(&image)));
            for _ in 0..3 {
                std::hint::black_box(otaweb::image::digest::sha256(std::hint::black_box(&image)));
            }
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::MAX, f64::min)
}

fn mosquitto_version() -> String {
    std::process::Command::new(MOSQUITTO)
        .arg("-h")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout).lines().next().map(|l| {
                l.trim()
                    .trim_start_matches("mosquitto version ")
                    .to_string()
            })
        })
        .unwrap_or_else(|| "?".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_string())
            })
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The `p`-th percentile (0–100) of sorted `values`, nearest rank.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Everything to print.
struct Report<'a> {
    devices: usize,
    threads: usize,
    image_kib: usize,
    fd_limit: u64,
    limit: Duration,
    connect_start: Snapshot,
    connected: Snapshot,
    rounds: &'a [Round],
    peaks: Peaks,
    workers: &'a [WorkerReport],
    fleet: &'a [&'a DeviceReport],
    tasks: usize,
    succeeded: usize,
    failures: &'a [String],
    mosquitto_version: String,
    /// One MD5 and three SHA-256 passes over the image, best of 5, in ms.
    hashing_ms: f64,
}

/// One round's figures, over its update phase (`$SYS` counts up to its settled snapshot).
struct Figures {
    /// The update phase, first task created to last device done.
    seconds: f64,
    /// The snapshots' window the CPU percentages are over.
    window: f64,
    done: usize,
    updates_per_s: f64,
    pub_in: u64,
    pub_out: u64,
    sys_heard: u64,
    packets: u64,
    packets_in: u64,
    dropped: u64,
    devices_out: u64,
    cloud_in: u64,
    cloud_out: u64,
    publish_per_s: f64,
    mosquitto_cpu: f64,
    devices_cpu: f64,
    cloud_cpu: f64,
    files_cpu: f64,
    mosquitto_reads: u64,
    mosquitto_switches: (u64, u64),
    bench_switches: (u64, u64),
    overflows: u64,
    syn_retransmits: u64,
    /// Task created → push, push → downloaded, downloaded → done, created → done; sorted.
    stages: [Vec<u64>; 4],
}

impl Figures {
    fn of(round: &Round, index: usize, fleet: &[&DeviceReport]) -> Figures {
        let (b, a, s) = (&round.before, &round.after, &round.settled);
        // CPU over the snapshots' window; rates over the devices' own times (the main thread
        // sees the last device done up to one sampling period late).
        let window = (a.at - b.at).as_secs_f64().max(1e-3);
        let mut stages: [Vec<u64>; 4] = Default::default();
        let mut done = 0;
        for (d, created) in fleet.iter().zip(&round.created_at) {
            let Some(t) = d.tasks.get(index) else {
                continue;
            };
            stages[0].push(t.pushed_at.saturating_sub(*created));
            if let Some(dl) = t.downloaded_at {
                stages[1].push(dl.saturating_sub(t.pushed_at));
                if let Some(end) = t.done_at {
                    stages[2].push(end.saturating_sub(dl));
                }
            }
            if let Some(end) = t.done_at {
                stages[3].push(end.saturating_sub(*created));
                done += 1;
            }
        }
        for v in &mut stages {
            v.sort_unstable();
        }
        let first = round.created_at.first().copied().unwrap_or(0);
        let last = fleet
            .iter()
            .filter_map(|d| d.tasks.get(index)?.done_at)
            .max()
            .unwrap_or(first);
        let seconds = if done > 0 {
            (last.saturating_sub(first) as f64 / 1e3).max(1e-3)
        } else {
            window
        };
        // The monitor's own `$SYS` deliveries count as sent PUBLISHes; they are not the
        // fleet's.
        let sys_heard = s.sys_heard - b.sys_heard;
        let pub_in = s.sys_in - b.sys_in;
        let pub_out = (s.sys_out - b.sys_out).saturating_sub(sys_heard);
        let packets = (s.sys_packets_in - b.sys_packets_in)
            + (s.sys_packets_out - b.sys_packets_out).saturating_sub(sys_heard);
        let cpu = |from: f64, to: f64| (to - from) / window * 100.0;
        let devices_cpu = cpu(b.devices_cpu, a.devices_cpu);
        let cloud_cpu = cpu(b.cloud_cpu, a.cloud_cpu);
        Figures {
            seconds,
            window,
            done,
            updates_per_s: done as f64 / seconds,
            pub_in,
            pub_out,
            sys_heard,
            packets,
            packets_in: s.sys_packets_in - b.sys_packets_in,
            dropped: s.sys_dropped - b.sys_dropped,
            devices_out: s.devices_out - b.devices_out,
            cloud_in: s.cloud_in - b.cloud_in,
            cloud_out: s.cloud_out - b.cloud_out,
            publish_per_s: (pub_in + pub_out) as f64 / seconds,
            mosquitto_cpu: cpu(b.mosquitto.cpu_s, a.mosquitto.cpu_s),
            devices_cpu,
            cloud_cpu,
            files_cpu: cpu(b.bench.cpu_s, a.bench.cpu_s) - devices_cpu - cloud_cpu,
            mosquitto_reads: a.mosquitto.read_calls - b.mosquitto.read_calls,
            mosquitto_switches: (
                a.mosquitto_switches.voluntary - b.mosquitto_switches.voluntary,
                a.mosquitto_switches.forced - b.mosquitto_switches.forced,
            ),
            bench_switches: (
                a.bench_switches
                    .voluntary
                    .saturating_sub(b.bench_switches.voluntary),
                a.bench_switches
                    .forced
                    .saturating_sub(b.bench_switches.forced),
            ),
            overflows: a.tcp.listen_overflows - b.tcp.listen_overflows,
            syn_retransmits: a.tcp.syn_retransmits - b.tcp.syn_retransmits,
            stages,
        }
    }
}

/// p50 | p90 | p99 | max of sorted `v`, as table cells.
fn spread(v: &[u64]) -> String {
    format!(
        "{} | {} | {} | {} |",
        percentile(v, 50.0),
        percentile(v, 90.0),
        percentile(v, 99.0),
        v.last().copied().unwrap_or(0)
    )
}

impl Report<'_> {
    fn markdown(&self) -> String {
        let mut o = String::new();
        let n = self.devices;
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let figures: Vec<Figures> = self
            .rounds
            .iter()
            .enumerate()
            .map(|(i, r)| Figures::of(r, i, self.fleet))
            .collect();
        let mut order: Vec<usize> = (0..figures.len()).collect();
        order.sort_by(|&a, &b| {
            figures[a]
                .updates_per_s
                .total_cmp(&figures[b].updates_per_s)
        });
        let median = order.get(order.len() / 2).map(|&i| (i, &figures[i]));
        let connect_s = (self.connected.at - self.connect_start.at).as_secs_f64();
        let late: u64 = self.fleet.iter().map(|d| d.late_replies).sum();
        let polls: u64 = self.workers.iter().map(|w| w.polls).sum();
        let reads: u64 = self.workers.iter().map(|w| w.reads).sum();
        let writes: u64 = self.workers.iter().map(|w| w.writes).sum();
        let ok = self.failures.is_empty() && self.rounds.iter().all(|r| r.all_done);

        let _ = writeln!(o, "### EnOS fleet through mosquitto\n");
        let _ = writeln!(
            o,
            "`cargo bench -p otaweb --bench fleet` on {cores} cores ({}), Debian mosquitto {}: \
             {n} devices on {} worker threads (mio/epoll), each the real `EnosFlow` + \
             `MqttSession` on its own TCP connection to mosquitto on 127.0.0.1; the cloud is \
             enos-sim in-process (registry, one MQTT session, file service over HTTP). In \
             each of {} rounds the cloud creates one push task per device at once; each \
             device logs in to the file service (A8), downloads the {} KiB image on the same \
             connection, the flow checks its size and MD5 (and SHA-256), the in-memory device \
             copies it into its flash in 100 pieces and checks it, and the flow reports \
             progress (10 % steps: 11 reports) and informs the new version. Descriptor limit \
             {}, time limit {:?}.\n",
            cpu_model(),
            self.mosquitto_version,
            self.threads,
            self.rounds.len(),
            self.image_kib,
            self.fd_limit,
            self.limit,
        );
        let _ = writeln!(
            o,
            "| round | version | update phase | updates/s | broker PUBLISH/s (in + out) | \
             CPU % of a core: mosquitto / devices / cloud MQTT / file service | listen-queue \
             overflows | created → done p50 / p99 ms |\n|---|---|---|---|---|---|---|---|"
        );
        for (i, (r, f)) in self.rounds.iter().zip(&figures).enumerate() {
            let _ = writeln!(
                o,
                "| {} | {} | {:.2} s | {:.0} | {:.0} | {:.0} / {:.0} / {:.0} / {:.0} | {} | {} / {} |",
                i + 1,
                r.version,
                f.seconds,
                f.updates_per_s,
                f.publish_per_s,
                f.mosquitto_cpu,
                f.devices_cpu,
                f.cloud_cpu,
                f.files_cpu,
                f.overflows,
                percentile(&f.stages[3], 50.0),
                percentile(&f.stages[3], 99.0),
            );
        }
        let _ = writeln!(o);
        if let Some((i, f)) = median {
            self.details(&mut o, i, f, connect_s, (polls, reads, writes));
        }
        if ok {
            let _ = writeln!(
                o,
                "Correctness: every device ended on {} after {} tasks, and all {} tasks in the \
                 registry succeeded ({} of {}) with step 100 last. Progress reports the cloud \
                 answered after the devices' 10 s reply timeout: {late}.\n",
                self.rounds.last().map_or(OLD, |r| r.version.as_str()),
                self.rounds.len(),
                self.tasks,
                self.succeeded,
                self.tasks
            );
        } else {
            let _ = writeln!(
                o,
                "**Correctness failures ({}):** (late progress replies: {late})\n",
                self.failures.len()
            );
            for f in self.failures.iter().take(20) {
                let _ = writeln!(o, "- {f}");
            }
            let _ = writeln!(o);
        }
        if let Some((_, f)) = median {
            self.limits(&mut o, f);
        }
        o.push_str(CLUSTER);
        let _ = writeln!(
            o,
            "\nBroker config (besides the listener): `max_queued_messages {MAX_QUEUED}` \
             (default 1,000), `set_tcp_nodelay true`, `sys_interval 1`, no persistence; \
             everything else default (`max_inflight_messages 20`).\n"
        );
        let met = ok && n >= 1_000;
        let (ups, pps) = median.map_or((0.0, 0.0), |(_, f)| (f.updates_per_s, f.publish_per_s));
        let _ = writeln!(
            o,
            "SUMMARY| EnOS fleet through mosquitto, one {cores}-core machine (median of {} \
             rounds) | {n} devices, {ups:.0} updates/s, {pps:.0} broker PUBLISH/s | — | — | ≥ \
             1,000 concurrent devices | {} |",
            self.rounds.len(),
            if met { "yes" } else { "no" }
        );
        o
    }

    /// The median round's table.
    fn details(
        &self,
        o: &mut String,
        index: usize,
        f: &Figures,
        connect_s: f64,
        calls: (u64, u64, u64),
    ) {
        let n = self.devices;
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let bytes = (f.done * self.image_kib * 1024) as f64;
        let mut rows: Vec<(String, String)> = vec![
            ("devices that finished the round's task".into(), format!("{} of {n}", f.done)),
            (
                "connect phase (CONNECT, 4 SUBSCRIBEs, answered `inform`)".into(),
                format!(
                    "{connect_s:.2} s ({:.0} devices/s, {} at a time per worker; listen-queue \
                     overflows {})",
                    n as f64 / connect_s,
                    CONNECT_WINDOW,
                    self.connected.tcp.listen_overflows - self.connect_start.tcp.listen_overflows
                ),
            ),
            ("update phase: first task created → last device done".into(), format!("{:.2} s", f.seconds)),
            ("**updates per second**".into(), format!("**{:.0}**", f.updates_per_s)),
            (
                "**broker PUBLISH per second** (in + out, mosquitto `$SYS`)".into(),
                format!("**{:.0}**", f.publish_per_s),
            ),
            (
                format!("PUBLISH into / out of the broker (`$SYS`, less its own {} `$SYS` messages)", f.sys_heard),
                format!("{} / {} ({:.1} + {:.1} per update)", f.pub_in, f.pub_out, f.pub_in as f64 / n as f64, f.pub_out as f64 / n as f64),
            ),
            (
                "PUBLISH counted at the clients: devices → broker / cloud → broker / broker → cloud".into(),
                format!("{} / {} / {}", f.devices_out, f.cloud_out, f.cloud_in),
            ),
            (
                "all MQTT packets through the broker (`$SYS`, PUBACKs included)".into(),
                format!("{} ({:.0} per second)", f.packets, f.packets as f64 / f.seconds),
            ),
            ("PUBLISH dropped by the broker (queue limits)".into(), f.dropped.to_string()),
            (
                "image bytes served by the file service".into(),
                format!("{:.0} MB ({:.0} MB/s)", bytes / 1e6, bytes / 1e6 / f.seconds),
            ),
            ("CPU, % of one core: mosquitto (one thread)".into(), format!("{:.0} %", f.mosquitto_cpu)),
            (
                "CPU: devices (`fleet-*` threads: otaweb core, sockets, HTTP client, hashing)".into(),
                format!("{:.0} % ({:.2} ms per update)", f.devices_cpu, f.devices_cpu * f.window * 10.0 / n as f64),
            ),
            ("CPU: cloud MQTT thread (enos-sim session + registry)".into(), format!("{:.0} %", f.cloud_cpu)),
            (
                "CPU: rest of the bench process (file service: tiny_http, relay, a thread per connection)".into(),
                format!("{:.0} %", f.files_cpu),
            ),
            (
                format!("CPU: all together, of the machine's {} %", 100 * cores),
                format!("{:.0} %", f.mosquitto_cpu + f.devices_cpu + f.cloud_cpu + f.files_cpu),
            ),
            (
                "mosquitto: `read` calls; context switches voluntary / forced".into(),
                format!(
                    "{} ({:.1} per packet in); {} / {}",
                    f.mosquitto_reads,
                    f.mosquitto_reads as f64 / f.packets_in.max(1) as f64,
                    f.mosquitto_switches.0,
                    f.mosquitto_switches.1
                ),
            ),
            (
                "bench process context switches, voluntary / forced (live threads)".into(),
                format!("{} / {}", f.bench_switches.0, f.bench_switches.1),
            ),
            (
                "TCP: connections refused by a full listen queue / SYNs sent again".into(),
                format!("{} / {}", f.overflows, f.syn_retransmits),
            ),
            (
                "devices' socket calls, whole run: `epoll_wait` / `recv` / `send`".into(),
                format!("{} / {} / {}", calls.0, calls.1, calls.2),
            ),
            (
                "peak descriptors, whole run: mosquitto / bench process".into(),
                format!("{} / {}", self.peaks.mosquitto_fds, self.peaks.bench_fds),
            ),
            ("peak threads of the bench process".into(), self.peaks.bench_threads.to_string()),
            (
                "peak memory (VmHWM): mosquitto / bench process".into(),
                format!(
                    "{:.0} MiB / {:.0} MiB",
                    self.rounds[index].settled.mosquitto.peak_rss_kib as f64 / 1024.0,
                    self.rounds[index].settled.bench.peak_rss_kib as f64 / 1024.0
                ),
            ),
        ];
        let _ = writeln!(
            o,
            "Median round ({}) in detail:\n\n| figure | value |\n|---|---|",
            index + 1
        );
        for (k, v) in rows.drain(..) {
            let _ = writeln!(o, "| {k} | {v} |");
        }
        let _ = writeln!(o, "\nPer-device latency of that round, ms:\n");
        let _ = writeln!(
            o,
            "| stage | p50 | p90 | p99 | max |\n|---|---|---|---|---|"
        );
        let names = [
            "task created → push received",
            "push → file downloaded (login + GET)",
            "downloaded → done (verify, install, progress, `inform` answered)",
            "**task created → done**",
        ];
        for (name, v) in names.iter().zip(&f.stages) {
            let _ = writeln!(o, "| {name} | {}", spread(v));
        }
        let _ = writeln!(o);
    }

    /// What limits the run, from the median round's figures.
    fn limits(&self, o: &mut String, f: &Figures) {
        let total = f.mosquitto_cpu + f.devices_cpu + f.cloud_cpu + f.files_cpu;
        let per_update = f.devices_cpu * f.window * 10.0 / self.devices as f64;
        let capacity = 100.0 * std::thread::available_parallelism().map_or(1, usize::from) as f64;
        let saturated = if total >= 0.9 * capacity {
            "The machine's CPU is the limit"
        } else {
            "The machine's CPU is not the limit"
        };
        let broker = if f.mosquitto_cpu >= 80.0 {
            "near its one core: the broker is the limit"
        } else {
            "well below its one core: the broker is not the limit on one machine"
        };
        let _ = writeln!(
            o,
            "**What limits it.** {saturated}: the update phase used {total:.0} % of {capacity:.0} %. \
             mosquitto (one thread) spent {:.0} % of a core on {:.0} PUBLISH/s, {:.1} µs per \
             PUBLISH in or out, {broker}. The devices' {:.0} % is {:.2} ms of CPU per update, {:.0} % \
             of it hashing each {} KiB image four times ({:.2} ms measured here; the rest is \
             the flow, sockets, HTTP and copies): the flow checks the MD5, computes the SHA-256 for the manifest entry and `verify_image` computes it \
             again, and the simulated device checks its flash; {} event-loop threads queue a device whose download \
             finished behind the others' checks (the \"downloaded → done\" row). The longest \
             stage is the download: the fleet-wide push has every device open its connection to \
             the file service within a few hundred milliseconds, the listen queue of its port (enos-sim's relay, which accepts on one thread; \
             Rust's std listens with a backlog of 128) overflowed {} times and {} SYNs went again after the \
             kernel's 1 s retransmission timeout, and the file service (tiny_http behind \
             enos-sim's relay, threads per connection and per request, {} threads in the bench \
             process at the peak) took {:.0} % of a core. The single cloud session comes next: \
             all {} PUBLISHes to the cloud arrive on one connection, one MQTT thread and one \
             registry whose lookups scan every device and task ({:.0} % of a core here), and \
             its pushes go out at most 256 unacknowledged at a time (the \"task created → push \
             received\" row).\n",
            f.mosquitto_cpu,
            f.publish_per_s,
            f.mosquitto_cpu * 1e4 / f.publish_per_s.max(1.0),
            f.devices_cpu,
            per_update,
            100.0 * self.hashing_ms / per_update.max(1e-9),
            self.image_kib,
            self.hashing_ms,
            self.threads,
            f.overflows,
            f.syn_retransmits,
            self.peaks.bench_threads,
            f.files_cpu,
            f.cloud_in,
            f.cloud_cpu,
        );
    }
}

/// How a fleet spreads beyond one machine, with sources.
const CLUSTER: &str = "**Beyond one machine.** Devices stay independent MQTT clients, so a fleet \
spreads by putting a load balancer in front of a broker cluster: EMQX documents HAProxy and NGINX \
distributing device connections over the nodes \
([EMQX: load balance with HAProxy](https://docs.emqx.com/en/emqx/latest/deploy/cluster/lb-haproxy.md)), \
and its nodes share sessions, subscriptions and routing information, so a message reaches its \
subscriber whichever node either side is connected to \
([EMQX clustering](https://docs.emqx.com/en/emqx/latest/develop/cluster/introduction.md)); from 5.0 \
core nodes hold the data and replicant nodes, which can be added and removed, serve clients \
([EMQX cluster architecture](https://docs.emqx.com/en/emqx/latest/deploy/cluster/mria-introduction.html)). \
The cloud side, the single subscriber here, becomes a group of workers with a shared subscription: \
each subscribes to `$share/<group>/` + the device topic filter and each message goes to one member \
of the group ([EMQX shared subscription](https://docs.emqx.com/en/emqx/latest/messaging/mqtt-shared-subscription.md)); \
for `/sys/+/+/ota/device/inform` that is `$share/ota//sys/+/+/ota/device/inform` (the filter begins \
with `/`). The workers then need one shared task registry (a database) instead of enos-sim's \
in-process one, and the file service scales as plain HTTP behind its own balancer or a CDN. On EnOS \
itself the broker is the platform's: applications do not subscribe to device topics but consume \
through its data subscription service, whose consumer groups share the load between clients \
([EnOS data subscription](https://support.enos-iot.com/docs/data-subscription/en/2.4.4/data_subscription_overview), \
[consuming with a consumer group](https://support.enos-iot.com/docs/data-subscription/zh_CN/3.0.0/consuming_subscribed_data)).\n";
