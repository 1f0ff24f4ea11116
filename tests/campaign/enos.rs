//! The EnOS half of the campaign: the device agent ([`EnosFlow`]) and the cloud (the
//! `enos-sim` [`Registry`] behind an [`MqttSession`] of its own, as `enos-sim` runs it) on
//! the campaign's [`Broker`], the file download at the edge, and the install with the BLE
//! flow on the simulated link ([`Install`]), all on one virtual clock.
//!
//! One run: the agent connects and informs; the cloud creates a task for version 2 (a push,
//! or an offer the agent's daemon check finds with `getversion`); the agent downloads,
//! verifies and installs it, and reports progress. Faults: the device's broker connection
//! dropped, broker restarts, broker latency, a download cut short (the edge resumes it),
//! corrupted, or failing, and the BLE link's faults and a power cut during the install.
//! After the agent ends the task (Done or Failed), the faults stop and the run goes on until
//! the cloud's task is finished; then the cloud must agree with the device, and a retry (a
//! new task on healthy links) must complete.

use enos_sim::config::{Config, LoadedFirmware, Policy, TaskRequest};
use enos_sim::registry::{Registry, TaskStatus};
use enos_sim::SUBSCRIPTIONS;
use otaweb::error::{Error, LinkLost};
use otaweb::flow::enos::{AcceptPolicy, EnosEvent, EnosFlow, EnosOptions};
use otaweb::flow::mqtt::{ConnectOptions, MqttEvent, MqttSession, SessionConfig, SessionState};
use otaweb::flow::Flow;
use otaweb::image::digest::{md5, sha256, to_hex};
use otaweb::image::manifest::FlowKind;
use otaweb::time::{Millis, Span};
use otaweb::wire::enos::{DeviceId, SecretCredentials};
use otaweb::wire::mqtt::QoS;
use serde_json::json;

use crate::ble::{self, Device, Install, Note, Running, Target, DFU_BUNDLE};
use crate::broker::Broker;
use crate::sim::{LinkParams, Rng, Stats};
use crate::{Outcome, Run, Violation};

const PK: &str = "pkCampaign";
const DK: &str = "dkCampaign";
const SECRET: &str = "campaign-device-secret";
const VERSION: &str = "2";
const DEVICE: usize = 0;
const CLOUD: usize = 1;
/// How often the agent's daemon asks for versions while it has no task.
const CHECK_EVERY: Span = Span::from_secs(60);
/// The longest an attempt may take before it counts as stuck.
const LIMIT: Span = Span::from_secs(6 * 3600);
/// How long the cloud may take to hear how a task ended, once the faults stopped.
const SETTLE: Span = Span::from_secs(15 * 60);
/// The BLE side runs at most this far ahead of the MQTT side.
const SLICE: Span = Span(100);

/// What the download at the edge does to the file.
#[derive(Clone, Copy, Debug)]
enum DownloadFault {
    None,
    /// The connection ends after this many bytes; the edge resumes with a Range GET.
    Cut(u64),
    /// One bit of the body flips.
    Corrupt(u64),
    /// The server answers 503.
    Fail,
}

/// The run's MQTT and HTTP faults, each taken when it fires.
#[derive(Debug, Default)]
struct Faults {
    drops: Vec<Millis>,
    restarts: Vec<(Millis, Span)>,
    download: Option<DownloadFault>,
}

impl Faults {
    fn draw(rng: &mut Rng) -> Self {
        let at = |rng: &mut Rng| Millis(rng.below(120_000));
        let mut drops: Vec<Millis> = (0..rng.below(4)).map(|_| at(rng)).collect();
        let mut restarts: Vec<(Millis, Span)> = (0..rng.below(3))
            .map(|_| (at(rng), Span(1_000 + rng.below(20_000))))
            .collect();
        drops.sort();
        restarts.sort();
        let download = match rng.below(10) {
            0 | 1 => DownloadFault::Cut(rng.below(1 << 14)),
            2 => DownloadFault::Corrupt(rng.next_u64()),
            3 => DownloadFault::Fail,
            _ => DownloadFault::None,
        };
        Faults {
            drops,
            restarts,
            download: Some(download),
        }
    }

    fn next(&self) -> Option<Millis> {
        let drop = self.drops.first().copied();
        let restart = self.restarts.first().map(|(t, _)| *t);
        drop.into_iter().chain(restart).min()
    }
}

/// The file handed to the agent when the download ends.
struct Download {
    at: Millis,
    result: Result<Vec<u8>, Error>,
    /// A cut download's resume point: progress is reported there first.
    resumed_from: Option<u64>,
}

/// Everything of one EnOS run.
struct World {
    now: Millis,
    rng: Rng,
    broker: Broker,
    agent: EnosFlow,
    cloud: MqttSession,
    registry: Registry,
    target: Target,
    device: Option<Device>,
    install: Option<Install>,
    /// The BLE link of the next install; after the first, a healthy one.
    link: (LinkParams, crate::sim::Faults),
    download: Option<Download>,
    faults: Faults,
    next_check: Millis,
    /// The task the cloud made, and whether it is a push.
    task: Option<u64>,
    push: bool,
    /// How the agent ended the task.
    ended: Option<Result<(), Error>>,
    verbose: bool,
    injected: u64,
    ble: Stats,
}

impl World {
    fn log(&self, what: impl FnOnce() -> String) {
        if self.verbose {
            println!("{:?} {}", self.now, what());
        }
    }

    /// One pass at `now`: faults, deadlines, both transports, the cloud, the download, the
    /// agent's events, and the daemon's check.
    fn step(&mut self) {
        let now = self.now;
        while self.faults.drops.first().is_some_and(|t| *t <= now) {
            self.faults.drops.remove(0);
            if self.broker.is_up(DEVICE) {
                self.injected += 1;
                self.log(|| "fault: the device's broker connection drops".to_string());
            }
            self.broker.drop_connection(DEVICE, &mut self.agent, now);
        }
        while self.faults.restarts.first().is_some_and(|(t, _)| *t <= now) {
            let (_, down) = self.faults.restarts.remove(0);
            self.injected += 1;
            self.log(|| format!("fault: the broker restarts, down for {down:?}"));
            self.broker.restart(now, down);
        }
        if self.agent.poll_timeout().is_some_and(|t| now >= t) {
            self.agent.handle_timeout(now);
        }
        if self.cloud.poll_timeout().is_some_and(|t| now >= t) {
            self.cloud.handle_timeout(now);
        }
        for _ in 0..2 {
            self.pump();
            self.cloud_events();
            self.download_due();
            self.agent_events();
        }
        if self.task.is_some()
            && self.ended.is_none()
            && now >= self.next_check
            && !self.agent.is_busy()
            && self.agent.session().is_connected()
        {
            self.next_check = now + CHECK_EVERY;
            self.log(|| "daemon: check for an update".to_string());
            let _ = self.agent.check_for_update(now);
            self.pump();
        }
    }

    fn pump(&mut self) {
        let now = self.now;
        if self.agent.session().state() == SessionState::Dropping {
            self.broker.client_closed(DEVICE, &mut self.agent, now);
        }
        if self.cloud.state() == SessionState::Dropping {
            self.broker.client_closed(CLOUD, &mut self.cloud, now);
        }
        self.broker
            .pump(DEVICE, &mut self.agent, now, EnosFlow::poll_reconnect_delay);
        self.broker.pump(
            CLOUD,
            &mut self.cloud,
            now,
            MqttSession::poll_reconnect_delay,
        );
    }

    /// The cloud answers what reached it, as `enos-sim` does.
    fn cloud_events(&mut self) {
        let now = self.now;
        while let Some(event) = self.cloud.poll_event() {
            if let MqttEvent::Message { topic, payload, .. } = event {
                for out in self.registry.handle_message(now.0, &topic, &payload) {
                    let _ =
                        self.cloud
                            .publish(now, &out.topic, &out.payload, QoS::AtLeastOnce, false);
                }
            }
        }
    }

    fn download_due(&mut self) {
        let now = self.now;
        if self.download.as_ref().is_none_or(|d| d.at > now) {
            return;
        }
        let download = self.download.take().unwrap();
        match download.result {
            Ok(bytes) => {
                let total = bytes.len() as u64;
                if let Some(from) = download.resumed_from {
                    let _ = self.agent.download_progress(now, from, total);
                }
                let _ = self.agent.download_progress(now, total, total);
                let _ = self.agent.downloaded(now, &bytes);
            }
            Err(e) => {
                let _ = self.agent.download_failed(now, e);
            }
        }
    }

    fn agent_events(&mut self) {
        let now = self.now;
        while let Some(event) = self.agent.poll_event() {
            if !matches!(event, EnosEvent::Link(_) | EnosEvent::Install(_)) {
                self.log(|| format!("agent: {event:?}"));
            }
            match event {
                EnosEvent::Connected { .. } if self.task.is_none() => self.create_task(),
                EnosEvent::Download { size, version, .. } => self.start_download(size, &version),
                EnosEvent::Install(image) => {
                    self.log(|| "agent: install".to_string());
                    let device = self.device.take().expect("one install at a time");
                    let link = self.link.clone();
                    match Install::start(device, image, now, link, &mut self.rng) {
                        Ok(install) => self.install = Some(install),
                        Err(failed) => {
                            let (device, e) = *failed;
                            self.device = Some(device);
                            let _ = self.agent.install_failed(now, e);
                        }
                    }
                }
                EnosEvent::Done { .. } if self.task.is_some() => {
                    self.ended.get_or_insert(Ok(()));
                }
                // A daemon check that got no answer is not the task's end: the next one asks
                // again.
                EnosEvent::Failed(Error::LinkLost(LinkLost::TimedOut {
                    waiting_for: "EnOS getversion reply",
                })) => {}
                EnosEvent::Failed(e) => {
                    self.ended.get_or_insert(Err(e));
                }
                _ => {}
            }
        }
    }

    fn create_task(&mut self) {
        let now = self.now;
        let request = TaskRequest {
            product_key: PK.to_string(),
            device_key: DK.to_string(),
            version: VERSION.to_string(),
            policy: if self.push {
                Policy::Push
            } else {
                Policy::Request
            },
        };
        match self.registry.create_task(now.0, &request) {
            Ok((task, outbound)) => {
                self.log(|| format!("cloud: task {} ({:?})", task.id, task.policy));
                self.task = Some(task.id);
                self.next_check = now + CHECK_EVERY;
                for out in outbound {
                    let _ =
                        self.cloud
                            .publish(now, &out.topic, &out.payload, QoS::AtLeastOnce, false);
                }
            }
            Err(e) => self.log(|| format!("cloud: no task: {}", e.message)),
        }
    }

    fn start_download(&mut self, size: u64, version: &str) {
        let Some(fw) = self.registry.firmware(PK, version) else {
            self.download = Some(Download {
                at: self.now + Span(50),
                result: Err(otaweb::flow::enos::http_refusal(404).into()),
                resumed_from: None,
            });
            return;
        };
        let mut bytes = fw.bytes.clone();
        // 50 kB/s, plus the request's round trip.
        let mut at = self.now + Span(200 + size * 1000 / 50_000);
        let mut resumed_from = None;
        let fault = self.faults.download.take().unwrap_or(DownloadFault::None);
        let result = match fault {
            DownloadFault::None => Ok(bytes),
            DownloadFault::Cut(after) => {
                self.injected += 1;
                resumed_from = Some(after.min(size));
                at += Span(1_500);
                Ok(bytes)
            }
            DownloadFault::Corrupt(bit) if !bytes.is_empty() => {
                self.injected += 1;
                let bit = bit % (bytes.len() as u64 * 8);
                bytes[(bit / 8) as usize] ^= 1 << (bit % 8);
                Ok(bytes)
            }
            DownloadFault::Corrupt(_) => Ok(bytes),
            DownloadFault::Fail => {
                self.injected += 1;
                Err(otaweb::flow::enos::http_refusal(503).into())
            }
        };
        self.log(|| format!("edge: download ({fault:?})"));
        self.download = Some(Download {
            at,
            result,
            resumed_from,
        });
    }

    /// Runs the install up to `until` and hands its notes to the agent.
    fn drive_install(&mut self, until: Millis) {
        let Some(install) = self.install.as_mut() else {
            return;
        };
        let span = Span(until.0.saturating_sub(install.now().0));
        let finished = install.drive(span);
        let notes = install.notes();
        let now = self.now;
        for note in notes {
            let _ = match note {
                Note::Started => self.agent.install_started(now),
                Note::Progress { done, total } => self.agent.install_progress(now, done, total),
                Note::Done(version) => {
                    let version = match self.target {
                        Target::Gadget => version,
                        // SiFli packages carry no version: the task's is the one installed.
                        Target::Dfu => VERSION.to_string(),
                    };
                    self.agent.install_done(now, &version)
                }
                Note::Failed(e) => self.agent.install_failed(now, e),
            };
        }
        if finished {
            let install = self.install.take().unwrap();
            if self.verbose {
                install.print();
            }
            let stats = install.stats();
            self.ble.dropped += stats.dropped;
            self.ble.duplicated += stats.duplicated;
            self.ble.reordered += stats.reordered;
            self.ble.corrupted += stats.corrupted;
            self.ble.disconnects += stats.disconnects;
            self.device = Some(install.into_device());
            // Only the first install meets a faulty link.
            self.link = (LinkParams::DESKTOP, crate::sim::Faults::default());
        }
    }

    fn next_wakeup(&self) -> Option<Millis> {
        let mut next: Vec<Millis> = [
            self.broker.next_wakeup(DEVICE),
            self.broker.next_wakeup(CLOUD),
            self.agent.poll_timeout(),
            self.cloud.poll_timeout(),
            self.download.as_ref().map(|d| d.at),
            self.faults.next(),
        ]
        .into_iter()
        .flatten()
        .collect();
        if self.task.is_some() && self.ended.is_none() {
            next.push(self.next_check);
        }
        if self.install.is_some() {
            next.push(self.now + SLICE);
        }
        next.into_iter().min()
    }

    /// Runs until `done` holds or `limit` passes; returns whether `done` held.
    fn run_until(&mut self, limit: Millis, done: impl Fn(&World) -> bool) -> bool {
        loop {
            self.step();
            if done(self) {
                return true;
            }
            let next = self.next_wakeup().unwrap_or(limit);
            let next = if next <= self.now {
                self.now + Span(1)
            } else {
                next
            };
            if next > limit {
                return false;
            }
            self.drive_install(next);
            self.now = next;
        }
    }

    fn task_status(&self) -> Option<TaskStatus> {
        self.task
            .and_then(|id| self.registry.task(id))
            .map(|t| t.status)
    }

    /// Runs one task to its end, then until the cloud knows it, and checks the device.
    fn attempt(&mut self) -> Result<(Outcome, Running), Violation> {
        let start = self.now;
        if !self.run_until(start + LIMIT, |w| w.ended.is_some()) {
            return Err(Violation::Untyped(format!(
                "after {LIMIT:?}: agent {}, task {:?}",
                self.agent.state(),
                self.task_status()
            )));
        }
        // The faults stop; the cloud must come to know how the task ended.
        self.faults = Faults::default();
        let settled = self.run_until(self.now + SETTLE, |w| {
            w.install.is_none()
                && w.download.is_none()
                && matches!(
                    w.task_status(),
                    Some(TaskStatus::Succeeded | TaskStatus::Failed)
                )
        });
        let running = self.device.as_mut().expect("no install").check(self.now)?;
        let status = self.task_status();
        let outcome = match self.ended.take().expect("ended") {
            Ok(()) => {
                if running == Running::Old {
                    return Err(Violation::FalseDone(format!("task {status:?}")));
                }
                Outcome::Done
            }
            Err(e) => Outcome::failed(&e),
        };
        let expected = if outcome == Outcome::Done {
            TaskStatus::Succeeded
        } else {
            TaskStatus::Failed
        };
        if !settled || status != Some(expected) {
            return Err(Violation::TaskLost(format!(
                "the agent ended {outcome:?}, the device runs {running:?}, the cloud's task is \
                 {status:?} after {SETTLE:?} without faults"
            )));
        }
        Ok((outcome, running))
    }
}

/// A fresh agent for a device running `version`.
fn agent(target: Target, version: &str, rng: &mut Rng) -> EnosFlow {
    let device = DeviceId::new(PK, DK).expect("valid keys");
    let credentials = SecretCredentials::new(device.clone(), SECRET).sign(1_780_000_000_000);
    let mut options = EnosOptions::new(match target {
        Target::Gadget => FlowKind::Gadget,
        Target::Dfu => FlowKind::Dfu,
    });
    options.accept = AcceptPolicy::Auto;
    // The throttle's two limits, drawn, so reports come at many paces.
    options.throttle.percent = 1 + rng.below(20) as u8;
    options.throttle.interval = Span(rng.below(5_000));
    EnosFlow::new(device, &credentials, version, options).expect("valid agent")
}

fn cloud() -> MqttSession {
    let mut cloud = MqttSession::new(ConnectOptions::new("enos-cloud"), SessionConfig::default())
        .expect("valid session");
    for filter in SUBSCRIPTIONS {
        cloud
            .subscribe(Millis::ZERO, filter, QoS::AtLeastOnce)
            .expect("valid filter");
    }
    cloud
}

fn registry(bytes: Vec<u8>, sha: bool) -> Registry {
    let config: Config = serde_json::from_value(json!({
        "products": [{
            "productKey": PK,
            "devices": [{ "deviceKey": DK, "deviceSecret": SECRET }],
            "firmwares": []
        }]
    }))
    .expect("valid config");
    let (sign_method, sign) = if sha {
        ("sha256", to_hex(&sha256(&bytes)))
    } else {
        ("md5", to_hex(&md5(&bytes)))
    };
    let fw = LoadedFirmware {
        product_key: PK.to_string(),
        version: VERSION.to_string(),
        sign_method: sign_method.to_string(),
        announced_sign: sign.clone(),
        sign,
        announced_size: bytes.len() as u64,
        bytes,
        cut: None,
    };
    Registry::new(&config, vec![fw], "http://127.0.0.1:9")
}

/// One seeded EnOS run installing with `target`.
pub fn run(seed: u64, target: Target, verbose: bool) -> Result<Run, Violation> {
    let mut rng = Rng::new(seed.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ (target as u64 + 7));
    let (device, _) = Device::new(target, &mut rng, seed);
    let link = ble::link(&mut rng, device.writes());
    let file = match &device {
        Device::Gadget { images, .. } => images.new.clone(),
        Device::Dfu(_) => DFU_BUNDLE.to_vec(),
    };
    let old_version = match target {
        Target::Gadget => "0",
        Target::Dfu => "1",
    };
    let faults = Faults::draw(&mut rng);
    let latency = Span(1 + rng.below(300));
    let push = rng.chance(0.7);
    if verbose {
        println!(
            "link {:?}\nble faults {:?}\nfaults {faults:?}, latency {latency:?}, push {push}",
            link.0, link.1
        );
    }
    let mut world = World {
        now: Millis::ZERO,
        agent: agent(target, old_version, &mut rng),
        rng,
        broker: Broker::new(2, latency),
        cloud: cloud(),
        registry: registry(file, seed.is_multiple_of(2)),
        target,
        device: Some(device),
        install: None,
        link,
        download: None,
        faults,
        next_check: Millis::ZERO,
        task: None,
        push,
        ended: None,
        verbose,
        injected: 0,
        ble: Stats::default(),
    };
    let (outcome, running) = world.attempt()?;
    let spent = world.now;
    let power_cuts = world.device.as_ref().map_or(0, Device::power_cuts);
    let faults = world.injected + ble::injected(&world.ble);
    if outcome != Outcome::Done || running != Running::New {
        retry(&mut world, running)?;
    }
    Ok(Run {
        faults,
        power_cuts,
        outcome,
        updated: running == Running::New,
        simulated_ms: spent.0,
    })
}

/// A new task on healthy links, with a fresh agent (an agent whose `inform` went unanswered
/// stops for good) on a fresh broker: it must complete.
fn retry(world: &mut World, running: Running) -> Result<(), Violation> {
    let version = if running == Running::New {
        VERSION
    } else {
        match world.target {
            Target::Gadget => "0",
            Target::Dfu => "1",
        }
    };
    world.log(|| "retry".to_string());
    world.device.as_mut().expect("no install").heal();
    world.link = (LinkParams::DESKTOP, crate::sim::Faults::default());
    world.agent = agent(world.target, version, &mut world.rng);
    world.cloud = cloud();
    world.broker = Broker::new(2, Span(20));
    world.task = None;
    world.push = true;
    let (outcome, running) = world
        .attempt()
        .map_err(|v| Violation::RetryFailed(v.to_string()))?;
    match (outcome, running) {
        (Outcome::Done, Running::New) => Ok(()),
        (outcome, running) => Err(Violation::RetryFailed(format!(
            "ended {outcome:?}, the device runs {running:?}"
        ))),
    }
}
