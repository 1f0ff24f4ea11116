//! The BLE half of the campaign: one seeded run of the gadget or the DFU flow against its
//! device, and the install step the EnOS runs reuse ([`Install`]).

use otaweb::error::Error;
use otaweb::flow::dfu::{DfuEvent, DfuOptions, DfuPackage, DfuUpdate, OnOngoing};
use otaweb::flow::gadget::{GadgetEvent, GadgetOptions, GadgetUpdate};
use otaweb::image::digest::sha256;
use otaweb::image::sifli::ImageId;
use otaweb::image::verify::{Image, Verified};
use otaweb::time::{Millis, Span};
use otaweb_firmware::dfu::Mode;
use otaweb_firmware::slots::Layout;

use crate::sim::dfu::{self as sifli, factory, padded, provisioned_flash, FONT, HCPU, RES};
use crate::sim::gadget::{self as agt, image_bytes, verified};
use crate::sim::{Faults, LinkParams, Observed, Pair, Rng, Stats};
use crate::{Outcome, Run, Violation};

/// The gadget part: 4-byte words, 1 KiB sectors, so a small image still takes many flash
/// operations (each a place for a power cut).
pub type GadgetDevice = agt::Device<4, 1024>;

/// Slots of 32 KiB: images of up to 24 KiB.
const LAYOUT: Layout = Layout {
    base: 0,
    erase_size: 1024,
    write_size: 4,
    slot_size: 32 * 1024,
};

/// The fixture DFU bundle: ctrl packet and the three transfer files in one tar.
pub const DFU_BUNDLE: &[u8] = include_bytes!("../../firmware-fixtures/files/dfu/package.tar");

/// The longest simulated time an attempt may take before it counts as stuck.
const LIMIT: Span = Span::from_secs(6 * 3600);

/// Which BLE flow installs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Alexa Gadgets OTA.
    Gadget,
    /// SiFli OTA-manager DFU.
    Dfu,
}

/// A rate of up to `max`, or none, half the time each.
fn rate(rng: &mut Rng, max: f64) -> f64 {
    if rng.chance(0.5) {
        rng.below(1001) as f64 / 1000.0 * max
    } else {
        0.0
    }
}

/// A link drawn from `rng`: its timing (the "delay" faults) and its faults.
pub fn link(rng: &mut Rng, writes: u64) -> (LinkParams, Faults) {
    let params = LinkParams {
        att_mtu: 247,
        interval: Span(8 + rng.below(43)),
        packets_per_event: 1 + rng.below(6) as usize,
        latency: Span(1 + rng.below(150)),
        tx_queue: 4 + rng.below(13) as usize,
        reconnect_delay: Span(100 + rng.below(2_900)),
    };
    let disconnects = rng.below(4);
    let faults = Faults {
        seed: rng.next_u64(),
        drop: rate(rng, 0.05),
        duplicate: rate(rng, 0.02),
        reorder: rate(rng, 0.02),
        corrupt: rate(rng, 0.01),
        disconnect_after_writes: (0..disconnects).map(|_| 1 + rng.below(writes)).collect(),
    };
    (params, faults)
}

/// The faults the link injected.
pub fn injected(stats: &Stats) -> u64 {
    stats.dropped + stats.duplicated + stats.reordered + stats.corrupted + stats.disconnects
}

/// One seed's gadget images: the factory image at version 0 and the new one at version 2.
pub struct GadgetImages {
    /// The factory image.
    pub old: Vec<u8>,
    /// The update.
    pub new: Vec<u8>,
}

impl GadgetImages {
    /// Images of a few KiB, sized from `rng`.
    pub fn draw(rng: &mut Rng, seed: u64) -> Self {
        GadgetImages {
            old: image_bytes(2_000 + rng.below(6_000) as usize, seed.wrapping_mul(2)),
            new: image_bytes(4_000 + rng.below(20_000) as usize, seed.wrapping_mul(2) + 1),
        }
    }
}

/// A gadget or DFU device between installs.
pub enum Device {
    /// The companion firmware's gadget.
    Gadget {
        /// The device.
        device: Box<GadgetDevice>,
        /// Its images.
        images: GadgetImages,
    },
    /// The companion firmware's SiFli user bin and OTA manager.
    Dfu(Box<sifli::Device>),
}

impl Device {
    /// A provisioned device for `target`; `rng` sizes the gadget images and maybe arms a
    /// power cut. Returns the device and whether a cut is armed.
    pub fn new(target: Target, rng: &mut Rng, seed: u64) -> (Self, bool) {
        let cut = rng.chance(0.3);
        match target {
            Target::Gadget => {
                let images = GadgetImages::draw(rng, seed);
                let mut device = GadgetDevice::provisioned(LAYOUT, &images.old);
                // Erases and writes of the staging, plus the state records.
                let ops = 2 * images.new.len() as u64 / 1024 + 40;
                if cut {
                    let n = rng.below(ops) as u32;
                    device.gadget().flash_mut().sim_mut().cut_power_after_ops(n);
                }
                let device = Box::new(device);
                (Device::Gadget { device, images }, cut)
            }
            Target::Dfu => {
                let mut device = sifli::Device::new(provisioned_flash());
                if cut {
                    // A whole update is about 120 writes.
                    let n = 1 + rng.below(130) as u32;
                    device.dev.flash_mut().sim_mut().cut_power_after_writes(n);
                }
                (Device::Dfu(Box::new(device)), cut)
            }
        }
    }

    /// Values a whole update writes, roughly: where disconnects are drawn from.
    pub fn writes(&self) -> u64 {
        match self {
            Device::Gadget { images, .. } => images.new.len() as u64 / 200 + 20,
            Device::Dfu(_) => 400,
        }
    }

    /// Power cuts the device came back from.
    pub fn power_cuts(&self) -> u64 {
        u64::from(match self {
            Device::Gadget { device, .. } => device.power_cuts,
            Device::Dfu(device) => device.power_cuts,
        })
    }

    /// Ends every fault of the device: power on, no cut armed.
    pub fn heal(&mut self) {
        match self {
            Device::Gadget { device, .. } => device.gadget().flash_mut().sim_mut().restore_power(),
            Device::Dfu(device) => device.dev.flash_mut().sim_mut().restore_power(),
        }
    }

    /// Boots the device as after a reset and checks what it runs: the old image or
    /// exactly the new one, or (DFU) the OTA manager waiting for the update to be sent
    /// again, as SiFli's boot rules (§7) have it after a cut in the middle of the install.
    pub fn check(&mut self, now: Millis) -> Result<Running, Violation> {
        match self {
            Device::Gadget { device, images } => {
                let old = (0, sha256(&images.old));
                let new = (2, sha256(&images.new));
                if let Some(ran) = device.ran.iter().find(|r| **r != old && **r != new) {
                    return Err(Violation::WrongImage(format!(
                        "booted version {} with SHA-256 {:02x?}",
                        ran.0,
                        &ran.1[..4]
                    )));
                }
                let active = device.power_on();
                let running = (active.version, active.sha256);
                if running != old && running != new {
                    return Err(Violation::WrongImage(format!("runs {active:?}")));
                }
                Ok(if running == new {
                    Running::New
                } else {
                    Running::Old
                })
            }
            Device::Dfu(device) => {
                if !device.dev.flash().sim().is_powered() {
                    device.dev.flash_mut().sim_mut().restore_power();
                    device.power_cuts += 1;
                }
                device.dev.restart(now);
                // Nobody connects: the OTA manager gives up waiting and boots the user bin
                // when that is whole; else it stays, not bricked, to take the retry.
                while device.dev.mode() == Mode::OtaManager {
                    match device.dev.poll_timeout() {
                        Some(t) if t.0 < now.0 + 120_000 => device.dev.handle_timeout(t),
                        _ => return Ok(Running::Recovery),
                    }
                    device.take();
                    if std::mem::take(&mut device.restart) {
                        device.dev.restart(now);
                    }
                }
                let images = device.images();
                let old = factory().map(|i| padded(&i));
                let new = [padded(HCPU), padded(RES), padded(FONT)];
                if images == new {
                    Ok(Running::New)
                } else if images == old {
                    Ok(Running::Old)
                } else {
                    let mixed = [ImageId::HCPU, ImageId::RES, ImageId::FONT]
                        .iter()
                        .zip(&images)
                        .zip(old.iter().zip(&new))
                        .map(|((id, got), (o, n))| {
                            let state = if got == o {
                                "old"
                            } else if got == n {
                                "new"
                            } else {
                                "neither"
                            };
                            format!("{id:?} {state}")
                        })
                        .collect::<Vec<_>>();
                    Err(Violation::Bricked(format!(
                        "the user bin boots a mix: {}",
                        mixed.join(", ")
                    )))
                }
            }
        }
    }

    /// The image a gadget or EnOS task would install: the gadget's new image, verified as
    /// version 2, or the fixture DFU bundle (the caller verifies that one).
    pub fn gadget_image(&self) -> Option<&[u8]> {
        match self {
            Device::Gadget { images, .. } => Some(&images.new),
            Device::Dfu(_) => None,
        }
    }
}

/// What a device runs after a reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Running {
    /// The image it had before the update.
    Old,
    /// Exactly the new, verified image.
    New,
    /// The SiFli OTA manager, waiting for the update to be sent again (not bricked).
    Recovery,
}

/// What an install reported, in the terms the EnOS agent takes.
#[derive(Clone, Debug)]
pub enum Note {
    /// The transfer began: the device now holds some of the new image.
    Started,
    /// Bytes of the total written to the device, as the web edge tells the agent (the
    /// gadget's `Sent`, the DFU flow's acknowledged bytes).
    Progress {
        /// Written bytes.
        done: u64,
        /// The total.
        total: u64,
    },
    /// The device runs this version.
    Done(String),
    /// The install failed.
    Failed(Error),
}

/// A BLE install in progress: the flow and its device on a simulated link.
pub enum Install {
    /// A gadget update.
    Gadget {
        /// The two parties.
        pair: Box<Pair<Observed<GadgetUpdate>, GadgetDevice>>,
        /// The device's images.
        images: GadgetImages,
        /// Events already turned into notes.
        seen: usize,
    },
    /// A DFU update.
    Dfu {
        /// The two parties.
        pair: Box<Pair<Observed<DfuUpdate>, sifli::Device>>,
        /// Events already turned into notes.
        seen: usize,
    },
}

impl Install {
    /// Starts installing `image` (a gadget image, or a DFU bundle for a DFU device) on
    /// `device` at `now`. A DFU bundle that does not parse gives the device back with the
    /// error.
    pub fn start(
        device: Device,
        image: Verified<Image>,
        now: Millis,
        link: (LinkParams, Faults),
        rng: &mut Rng,
    ) -> Result<Install, Box<(Device, Error)>> {
        match device {
            Device::Gadget { device, images } => {
                let flow = match GadgetUpdate::new(image, gadget_options(rng)) {
                    Ok(flow) => flow,
                    Err(e) => return Err(Box::new((Device::Gadget { device, images }, e.into()))),
                };
                let mut pair = Pair::new(Observed::new(flow), *device, link.0, link.1);
                pair.now = now;
                Ok(Install::Gadget {
                    pair: Box::new(pair),
                    images,
                    seen: 0,
                })
            }
            Device::Dfu(device) => {
                let package = match DfuPackage::from_bundle(&image.get().bytes) {
                    Ok(p) => p,
                    Err(e) => return Err(Box::new((Device::Dfu(device), e))),
                };
                let flow = match DfuUpdate::new(package, dfu_options(rng)) {
                    Ok(flow) => flow,
                    Err(e) => return Err(Box::new((Device::Dfu(device), e.into()))),
                };
                let mut pair = Pair::new(Observed::new(flow), *device, link.0, link.1);
                pair.now = now;
                Ok(Install::Dfu {
                    pair: Box::new(pair),
                    seen: 0,
                })
            }
        }
    }

    /// The install's virtual clock.
    pub fn now(&self) -> Millis {
        match self {
            Install::Gadget { pair, .. } => pair.now,
            Install::Dfu { pair, .. } => pair.now,
        }
    }

    /// Runs the link for up to `span`; returns whether the flow finished.
    pub fn drive(&mut self, span: Span) -> bool {
        match self {
            Install::Gadget { pair, .. } => pair.drive(span),
            Install::Dfu { pair, .. } => pair.drive(span),
        }
    }

    /// The link's counters.
    pub fn stats(&self) -> Stats {
        match self {
            Install::Gadget { pair, .. } => pair.stats,
            Install::Dfu { pair, .. } => pair.stats,
        }
    }

    /// What the flow reported since the last call.
    pub fn notes(&mut self) -> Vec<Note> {
        let mut notes = Vec::new();
        match self {
            Install::Gadget { pair, seen, .. } => {
                for event in &pair.events[*seen..] {
                    notes.extend(match event {
                        GadgetEvent::Stage(otaweb::flow::gadget::GadgetStage::Transfer) => {
                            Some(Note::Started)
                        }
                        GadgetEvent::Sent { sent, total } => Some(Note::Progress {
                            done: *sent,
                            total: *total,
                        }),
                        GadgetEvent::Done { version } => Some(Note::Done(version.to_string())),
                        GadgetEvent::UpToDate { current, .. } => {
                            Some(Note::Done(current.to_string()))
                        }
                        GadgetEvent::Failed(e) => Some(Note::Failed(e.clone())),
                        _ => None,
                    });
                }
                *seen = pair.events.len();
            }
            Install::Dfu { pair, seen } => {
                for event in &pair.events[*seen..] {
                    notes.extend(match event {
                        DfuEvent::Done => Some(Note::Done("2".to_string())),
                        DfuEvent::Failed(e) => Some(Note::Failed(e.clone())),
                        DfuEvent::RebootingIntoUpdater => Some(Note::Started),
                        DfuEvent::Progress { confirmed, total } => Some(Note::Progress {
                            done: *confirmed,
                            total: *total,
                        }),
                        _ => None,
                    });
                }
                *seen = pair.events.len();
            }
        }
        notes
    }

    /// Prints every event with its time (a replayed seed).
    pub fn print(&self) {
        match self {
            Install::Gadget { pair, .. } => {
                for (t, e) in &pair.central.log {
                    println!("{t:?} {e:?}");
                }
            }
            Install::Dfu { pair, .. } => {
                for (t, e) in &pair.central.log {
                    println!("{t:?} {e:?}");
                }
            }
        }
    }

    /// Ends the install and gives the device back.
    pub fn into_device(self) -> Device {
        match self {
            Install::Gadget { pair, images, .. } => Device::Gadget {
                device: Box::new(pair.peripheral),
                images,
            },
            Install::Dfu { pair, .. } => Device::Dfu(Box::new(pair.peripheral)),
        }
    }
}

/// Segment sizes from the flow's adaptive default down to one flash sector.
fn gadget_options(rng: &mut Rng) -> GadgetOptions {
    let segment_size = [1024, 4096, GadgetOptions::default().segment_size][rng.below(3) as usize];
    GadgetOptions {
        segment_size,
        ..GadgetOptions::default()
    }
}

fn dfu_options(rng: &mut Rng) -> DfuOptions {
    DfuOptions {
        on_ongoing: if rng.chance(0.5) {
            OnOngoing::Resume
        } else {
            OnOngoing::Restart
        },
        ..DfuOptions::default()
    }
}

/// The image a BLE-only run installs on `device`.
fn image_for(device: &Device) -> Verified<Image> {
    match device.gadget_image() {
        Some(bytes) => verified(bytes, 2),
        None => otaweb::image::verify::verify_image(
            DFU_BUNDLE,
            &dfu_entry(),
            &otaweb::image::verify::VerifyPolicy::danger_accept_unsigned(),
        )
        .expect("the fixture bundle verifies"),
    }
}

/// The manifest entry of the fixture DFU bundle at version 2.
pub fn dfu_entry() -> otaweb::image::manifest::ManifestEntry {
    otaweb::image::manifest::ManifestEntry {
        name: "package.tar".to_string(),
        flow: otaweb::image::manifest::FlowKind::Dfu,
        version: "2".to_string(),
        url: "package.tar".to_string(),
        size: DFU_BUNDLE.len() as u64,
        sha256: sha256(DFU_BUNDLE),
        md5: None,
        signature: None,
        compression: None,
    }
}

/// Drives `install` to its end (or the time limit) and returns the device and the
/// outcome; `None` when no typed outcome came.
fn finish(
    mut install: Install,
    verbose: bool,
) -> (Device, Option<Result<(), Error>>, Stats, Millis) {
    let start = install.now();
    install.drive(LIMIT);
    if verbose {
        install.print();
    }
    let mut outcome = None;
    for note in install.notes() {
        match note {
            Note::Done(_) => outcome = Some(Ok(())),
            Note::Failed(e) => outcome = Some(Err(e)),
            Note::Started | Note::Progress { .. } => {}
        }
    }
    let stats = install.stats();
    let spent = Millis(install.now().0 - start.0);
    (install.into_device(), outcome, stats, spent)
}

/// A retry on a healthy link with a fresh orchestrator: it must leave the new image running.
pub fn retry(
    device: Device,
    now: Millis,
    rng: &mut Rng,
    verbose: bool,
) -> Result<Device, Violation> {
    let mut device = device;
    device.heal();
    let image = image_for(&device);
    let link = (LinkParams::DESKTOP, Faults::default());
    let install = Install::start(device, image, now, link, rng)
        .map_err(|f| Violation::RetryFailed(format!("could not start: {}", f.1)))?;
    let (mut device, outcome, _, _) = finish(install, verbose);
    match outcome {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(Violation::RetryFailed(format!("{} ({e})", e.code()))),
        None => return Err(Violation::RetryFailed("no outcome".to_string())),
    }
    let running = device.check(now)?;
    if running != Running::New {
        return Err(Violation::RetryFailed(format!(
            "the retry said done but the device runs {running:?}"
        )));
    }
    Ok(device)
}

/// One seeded BLE run of `target`: install, check, retry if it failed.
fn ble(target: Target, seed: u64, verbose: bool) -> Result<Run, Violation> {
    let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ target as u64);
    let (device, _) = Device::new(target, &mut rng, seed);
    let link = link(&mut rng, device.writes());
    if verbose {
        println!("link {:?}\nfaults {:?}", link.0, link.1);
    }
    let image = image_for(&device);
    let install = Install::start(device, image, Millis::ZERO, link, &mut rng)
        .map_err(|f| Violation::Untyped(format!("could not start: {}", f.1)))?;
    let (mut device, outcome, stats, spent) = finish(install, verbose);
    if verbose {
        println!("outcome {outcome:?} after {spent:?}, {stats:?}");
    }
    let running = device.check(spent)?;
    let updated = running == Running::New;
    let outcome = match outcome {
        None => return Err(Violation::Untyped(format!("after {LIMIT:?}: {stats:?}"))),
        Some(Ok(())) if running == Running::Old => {
            return Err(Violation::FalseDone(format!("{stats:?}")));
        }
        Some(Ok(())) => Outcome::Done,
        Some(Err(e)) => Outcome::failed(&e),
    };
    let power_cuts = device.power_cuts();
    if !updated {
        retry(device, spent, &mut rng, verbose)?;
    }
    Ok(Run {
        faults: injected(&stats),
        power_cuts,
        outcome,
        updated,
        simulated_ms: spent.0,
    })
}

/// One seeded gadget run.
pub fn gadget(seed: u64, verbose: bool) -> Result<Run, Violation> {
    ble(Target::Gadget, seed, verbose)
}

/// One seeded DFU run.
pub fn dfu(seed: u64, verbose: bool) -> Result<Run, Violation> {
    ble(Target::Dfu, seed, verbose)
}
