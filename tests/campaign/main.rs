//! The fault campaign (issue 8): seeded runs of each update flow against the companion
//! firmware, with random link faults and power cuts, and the invariants checked after every
//! run.
//!
//! Flows: `gadget` and `dfu` over the simulated BLE link (tests/sim), and `enos_gadget` and
//! `enos_dfu`, where the EnOS device agent takes the task over MQTT through a simulated
//! broker from the `enos-sim` registry (the cloud), downloads the file, and installs it with
//! the BLE flow. Every run draws its faults from its seed:
//!
//! - link: drop, duplicate, reorder and corrupt rates per value, up to three disconnects,
//!   and the connection interval, values per event, latency, OS queue and reconnect delay
//!   (delay);
//! - device: a power cut after a random number of flash operations (writes for DFU);
//! - EnOS: broker connection drops, broker restarts (sessions and in-flight messages lost,
//!   the broker down for a while), broker latency, a download cut short (resumed) or
//!   corrupted in transit.
//!
//! After each run: the device boots (the boot decision succeeds and the image it runs is the
//! one its state names), and what it runs is the old image or exactly the new one; the
//! orchestrator ended in `Done` or a typed error (within a simulated time limit); a `Done`
//! means the device runs the new image; then a retry on a healthy link completes; for EnOS
//! the cloud's task ends in the state the device is in (nothing lost). A violation fails the
//! test with its seed and the command that replays it.
//!
//! Environment: `OTAWEB_CAMPAIGN_RUNS` (runs per flow, default 200), `OTAWEB_CAMPAIGN_FIRST_SEED`
//! (default 1), `OTAWEB_CAMPAIGN_SEED` (replay that one seed, verbosely), and
//! `OTAWEB_CAMPAIGN_REPORT` (a directory: each flow writes its figures there as one markdown
//! table row, `<flow>.md`). `make reliability` runs 10,000 per flow and puts the rows into
//! RELIABILITY.md.
#![cfg(not(target_arch = "wasm32"))]

#[path = "../sim/mod.rs"]
mod sim;

mod ble;
mod broker;
mod enos;

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use otaweb::error::{Error, LinkLost};

/// A broken invariant.
#[derive(Clone, Debug)]
pub enum Violation {
    /// The device cannot boot, or boots a mix of old and new parts.
    Bricked(String),
    /// The device runs an image that is neither the old one nor exactly the new one.
    WrongImage(String),
    /// The orchestrator did not end in `Done` or a typed error in time.
    Untyped(String),
    /// The orchestrator said `Done` but the device does not run the new image.
    FalseDone(String),
    /// A retry on a healthy link did not complete.
    RetryFailed(String),
    /// The cloud's task does not match the device (EnOS).
    TaskLost(String),
    /// Something panicked.
    Panicked(String),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, what) = match self {
            Violation::Bricked(w) => ("bricked", w),
            Violation::WrongImage(w) => ("wrong image", w),
            Violation::Untyped(w) => ("no typed outcome", w),
            Violation::FalseDone(w) => ("done but not updated", w),
            Violation::RetryFailed(w) => ("retry failed", w),
            Violation::TaskLost(w) => ("task state lost", w),
            Violation::Panicked(w) => ("panicked", w),
        };
        write!(f, "{kind}: {what}")
    }
}

/// How the orchestrator ended the first attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The device runs the new image and the orchestrator said so.
    Done,
    /// A typed error.
    Failed {
        /// [`Error::code`] and what it names: the vendor code's name, what the flow waited
        /// for, the structure that did not decode.
        cause: String,
        /// [`Error::retryable`].
        retryable: bool,
    },
}

impl Outcome {
    /// The outcome of a flow that failed with `error`.
    pub fn failed(error: &Error) -> Self {
        let detail = match error {
            Error::PeerRefused(r) => r.name.to_string(),
            Error::PeerMalformed(m) => m.what.to_string(),
            Error::LinkLost(LinkLost::TimedOut { waiting_for }) => waiting_for.to_string(),
            Error::LinkLost(LinkLost::Disconnected) => "disconnected".to_string(),
            Error::LinkLost(LinkLost::RetriesExhausted { .. }) => "retries".to_string(),
            Error::Verification(v) => format!("{v:?}")
                .chars()
                .take_while(|c| c.is_alphanumeric())
                .collect(),
            other => format!("{other:?}")
                .chars()
                .take_while(|c| c.is_alphanumeric())
                .collect(),
        };
        Outcome::Failed {
            cause: format!("{} {detail}", error.code()),
            retryable: error.retryable(),
        }
    }
}

/// What one run did, when it kept every invariant.
#[derive(Clone, Debug)]
pub struct Run {
    /// Faults injected (link values, disconnects, broker drops and restarts, download faults).
    pub faults: u64,
    /// Power cuts that happened.
    pub power_cuts: u64,
    /// The first attempt's end.
    pub outcome: Outcome,
    /// The device ended on the new image after the first attempt.
    pub updated: bool,
    /// Simulated milliseconds of the first attempt.
    pub simulated_ms: u64,
}

/// Which flow a campaign runs.
#[derive(Clone, Copy, Debug)]
enum Flow {
    Gadget,
    Dfu,
    EnosGadget,
    EnosDfu,
}

impl Flow {
    fn name(self) -> &'static str {
        match self {
            Flow::Gadget => "gadget",
            Flow::Dfu => "dfu",
            Flow::EnosGadget => "enos_gadget",
            Flow::EnosDfu => "enos_dfu",
        }
    }

    fn run(self, seed: u64, verbose: bool) -> Result<Run, Violation> {
        match self {
            Flow::Gadget => ble::gadget(seed, verbose),
            Flow::Dfu => ble::dfu(seed, verbose),
            Flow::EnosGadget => enos::run(seed, ble::Target::Gadget, verbose),
            Flow::EnosDfu => enos::run(seed, ble::Target::Dfu, verbose),
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value}: not a number")),
    )
}

/// Causes of first-attempt failures named in a report row.
const TOP_CAUSES: usize = 5;

/// The figures of one flow's campaign.
#[derive(Default)]
struct Tally {
    runs: u64,
    faults: u64,
    power_cuts: u64,
    done: u64,
    failed_retryable: u64,
    failed_final: u64,
    updated: u64,
    simulated_ms: u64,
    codes: BTreeMap<String, u64>,
    violations: Vec<(u64, Violation)>,
}

impl Tally {
    fn count(&self, kind: fn(&Violation) -> bool) -> usize {
        self.violations.iter().filter(|(_, v)| kind(v)).count()
    }

    /// One markdown table row: flow, runs, faults, power cuts, done first time, failed
    /// (retryable / not), bricked, wrong image, untyped, other violations, simulated hours.
    fn row(&self, flow: Flow) -> String {
        let bricked = self.count(|v| matches!(v, Violation::Bricked(_)));
        let wrong = self.count(|v| matches!(v, Violation::WrongImage(_) | Violation::FalseDone(_)));
        let untyped = self.count(|v| matches!(v, Violation::Untyped(_)));
        let other = self.violations.len() - bricked - wrong - untyped;
        // The most frequent causes; the rest summed, so the row stays readable.
        let mut causes: Vec<(&String, &u64)> = self.codes.iter().collect();
        causes.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut codes: Vec<String> = causes
            .iter()
            .take(TOP_CAUSES)
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        if causes.len() > TOP_CAUSES {
            let rest: u64 = causes[TOP_CAUSES..].iter().map(|(_, n)| **n).sum();
            codes.push(format!("{} other causes {rest}", causes.len() - TOP_CAUSES));
        }
        format!(
            "| {} | {} | {} | {} | {} | {} / {} ({}) | {} | {} | {} | {} | {} | {:.1} |",
            flow.name(),
            self.runs,
            self.faults,
            self.power_cuts,
            self.done,
            self.failed_retryable,
            self.failed_final,
            if codes.is_empty() {
                "none".to_string()
            } else {
                codes.join(", ")
            },
            self.updated,
            bricked,
            wrong,
            untyped,
            other,
            self.simulated_ms as f64 / 3_600_000.0
        )
    }
}

/// Runs `flow`'s campaign as the environment asks and fails on any violation.
fn campaign(flow: Flow) {
    if let Some(seed) = env_u64("OTAWEB_CAMPAIGN_SEED") {
        match catch_unwind(AssertUnwindSafe(|| flow.run(seed, true))) {
            Ok(Ok(run)) => println!("{} seed {seed}: {run:?}", flow.name()),
            Ok(Err(v)) => panic!("{} seed {seed}: {v}", flow.name()),
            Err(_) => panic!("{} seed {seed}: panicked", flow.name()),
        }
        return;
    }
    let runs = env_u64("OTAWEB_CAMPAIGN_RUNS").unwrap_or(200);
    let first = env_u64("OTAWEB_CAMPAIGN_FIRST_SEED").unwrap_or(1);
    let mut tally = Tally::default();
    for seed in first..first + runs {
        tally.runs += 1;
        let result = catch_unwind(AssertUnwindSafe(|| flow.run(seed, false)))
            .unwrap_or_else(|panic| Err(Violation::Panicked(panic_text(&*panic))));
        match result {
            Ok(run) => {
                tally.faults += run.faults;
                tally.power_cuts += run.power_cuts;
                tally.simulated_ms += run.simulated_ms;
                tally.updated += u64::from(run.updated);
                match run.outcome {
                    Outcome::Done => tally.done += 1,
                    Outcome::Failed { cause, retryable } => {
                        *tally.codes.entry(cause).or_default() += 1;
                        if retryable {
                            tally.failed_retryable += 1;
                        } else {
                            tally.failed_final += 1;
                        }
                    }
                }
            }
            Err(v) => tally.violations.push((seed, v)),
        }
    }
    let row = tally.row(flow);
    println!("{row}");
    if let Some(dir) = std::env::var_os("OTAWEB_CAMPAIGN_REPORT") {
        let path = std::path::Path::new(&dir).join(format!("{}.md", flow.name()));
        std::fs::write(&path, format!("{row}\n")).unwrap();
    }
    if !tally.violations.is_empty() {
        for (seed, v) in &tally.violations {
            eprintln!(
                "{} seed {seed}: {v}\n  replay: OTAWEB_CAMPAIGN_SEED={seed} cargo test --test \
                 campaign {} -- --nocapture",
                flow.name(),
                flow.name()
            );
        }
        panic!(
            "{} of {} {} runs broke an invariant",
            tally.violations.len(),
            tally.runs,
            flow.name()
        );
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// Seeds that broke an invariant before the fix each names; they must keep every one.
const FIXED: &[(Flow, u64, &str)] = &[
    (
        Flow::Dfu,
        11,
        "events a late disconnect left were lost (simulator)",
    ),
    (
        Flow::EnosGadget,
        5,
        "an unanswered inform stopped the agent",
    ),
    (
        Flow::EnosDfu,
        90,
        "an unanswered failure report left the task in progress",
    ),
    (
        Flow::EnosGadget,
        63,
        "a garbled version claimed Done (VERSION_NOT_INSTALLED)",
    ),
    (
        Flow::Gadget,
        663,
        "a garbled Discover.Response claimed up to date",
    ),
    (
        Flow::Gadget,
        7222,
        "a garbled ApplyFirmware version became the image's label",
    ),
    (
        Flow::Dfu,
        685,
        "a garbled IMAGE_SEND_START left a device no resume could finish",
    ),
    (
        Flow::Dfu,
        8481,
        "a garbled end answer left an image not whole (END_IND 1)",
    ),
    (Flow::EnosDfu, 1326, "the same, through EnOS"),
    (Flow::EnosDfu, 7707, "a garbled start, through EnOS"),
];

#[test]
fn seeds_that_broke_an_invariant_stay_fixed() {
    for &(flow, seed, what) in FIXED {
        let result = catch_unwind(AssertUnwindSafe(|| flow.run(seed, false)))
            .unwrap_or_else(|panic| Err(Violation::Panicked(panic_text(&*panic))));
        if let Err(v) = result {
            panic!("{} seed {seed} ({what}): {v}", flow.name());
        }
    }
}

#[test]
fn gadget() {
    campaign(Flow::Gadget);
}

#[test]
fn dfu() {
    campaign(Flow::Dfu);
}

#[test]
fn enos_gadget() {
    campaign(Flow::EnosGadget);
}

#[test]
fn enos_dfu() {
    campaign(Flow::EnosDfu);
}
