//! The gadget flow end to end: `GadgetUpdate` (the Echo side) against the companion
//! firmware's `Gadget` on a simulated flash, over the simulated BLE link. The link is the
//! only stand-in; every outcome is read back from the gadget's flash after a boot decision.
// Native only: the browser runs the same two parties in tests/web_gadget.rs.
#![cfg(not(target_arch = "wasm32"))]

mod sim;

use otaweb::error::{Error, LinkLost};
use otaweb::flow::gadget::{GadgetEvent, GadgetOptions, GadgetStage, GadgetUpdate};
use otaweb::image::digest::sha256;
use otaweb::image::signature::{ImageSignature, PublicKey};
use otaweb::image::verify::{verify_image, Image, Verified, VerifyPolicy};
use otaweb::time::{Millis, Span};
use otaweb::wire::agt::{StreamId, TransportPacket};
use otaweb::wire::agt_proto::{segment_signature, Command, ComponentSignature, ErrorCode};
use otaweb_firmware::gadget::GadgetConfig;
use otaweb_firmware::slots::{BootOutcome, DbConfig, ImageState, Layout, Slot, Slots};
use sim::gadget::{entry, image_bytes, verified, Device, Reply, Seen, Tamper};
use sim::{Faults, LinkParams, Observed, Pair};

const MIB: usize = 1 << 20;
const SEG: usize = otaweb::flow::gadget::DEFAULT_SEGMENT_SIZE as usize;

/// The orchestrator as the simulator's central.
type Updater = Observed<GadgetUpdate>;

/// The confirmed byte counts the flow reported, with their times.
fn progress(updater: &Updater) -> Vec<(Millis, u64)> {
    updater
        .log
        .iter()
        .filter_map(|(t, e)| match e {
            GadgetEvent::Progress { confirmed, .. } => Some((*t, *confirmed)),
            _ => None,
        })
        .collect()
}

/// A part with 4 KiB sectors and 4-byte words.
type Device4K = Device<4, 4096>;

/// The factory region and two slots of 1 MiB + 64 KiB: room for the 1 MiB images.
const BIG: Layout = Layout {
    base: 0,
    erase_size: 4096,
    write_size: 4,
    slot_size: (MIB + 64 * 1024) as u32,
};

/// 64 KiB slots, for the tests whose images are a few segments long.
const SMALL: Layout = Layout {
    base: 0,
    erase_size: 4096,
    write_size: 4,
    slot_size: 64 * 1024,
};

/// 512-byte sectors, so a small image still takes many flash operations to stage.
type TinyDevice = Device<4, 512>;

const TINY: Layout = Layout {
    base: 0,
    erase_size: 512,
    write_size: 4,
    slot_size: 16 * 1024,
};

fn pair<const W: usize, const E: usize>(
    device: Device<W, E>,
    image: &[u8],
    version: u32,
    options: GadgetOptions,
    faults: Faults,
) -> Pair<Updater, Device<W, E>> {
    let updater = Updater::new(GadgetUpdate::new(verified(image, version), options).unwrap());
    Pair::new(updater, device, LinkParams::DESKTOP, faults)
}

/// The defaults with segments that stay at 16 KiB, for tests that name segment bounds.
fn fixed() -> GadgetOptions {
    GadgetOptions {
        max_segment_size: SEG as u32,
        ..GadgetOptions::default()
    }
}

/// [`pair`] for an image verified by the caller (signed, say), with [`fixed`] segments.
fn pair_with<const W: usize, const E: usize>(
    device: Device<W, E>,
    image: Verified<Image>,
) -> Pair<Updater, Device<W, E>> {
    let updater = Updater::new(GadgetUpdate::new(image, fixed()).unwrap());
    Pair::new(updater, device, LinkParams::DESKTOP, Faults::default())
}

fn stages(events: &[GadgetEvent]) -> Vec<GadgetStage> {
    events
        .iter()
        .filter_map(|e| match e {
            GadgetEvent::Stage(s) => Some(*s),
            _ => None,
        })
        .collect()
}

fn failure(events: &[GadgetEvent]) -> Option<&Error> {
    events.iter().find_map(|e| match e {
        GadgetEvent::Failed(e) => Some(e),
        _ => None,
    })
}

#[track_caller]
fn assert_runs<const W: usize, const E: usize>(
    device: &mut Device<W, E>,
    version: u32,
    bytes: &[u8],
) {
    let active = device.power_on();
    assert_eq!(device.boots.last(), Some(&BootOutcome::Unchanged));
    assert_eq!(
        (active.version, active.size, active.sha256),
        (version, bytes.len() as u32, sha256(bytes))
    );
}

#[test]
fn one_mib_updates_end_to_end_on_a_desktop_link() {
    let factory = image_bytes(200_000, 1);
    let new = image_bytes(MIB, 2);
    let device = Device4K::provisioned(BIG, &factory);
    let mut pair = pair(device, &new, 2, GadgetOptions::default(), Faults::default());
    assert!(pair.drive(Span::from_secs(600)), "{:?}", pair.events);

    let events = &pair.events;
    assert_eq!(failure(events), None);
    assert_eq!(
        stages(events),
        [
            GadgetStage::Handshake,
            GadgetStage::Discover,
            GadgetStage::Transfer,
            GadgetStage::Apply,
            GadgetStage::Restart,
            GadgetStage::Confirm
        ]
    );
    let found: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, GadgetEvent::VersionFound { .. }))
        .collect();
    assert_eq!(
        found,
        [
            &GadgetEvent::VersionFound {
                current: 0,
                offered: 2
            },
            &GadgetEvent::VersionFound {
                current: 2,
                offered: 2
            }
        ]
    );
    assert_eq!(events.last(), Some(&GadgetEvent::Done { version: 2 }));

    // Every segment went once, its bytes once, and the gadget took each; after 16 KiB the
    // first's rate moves most of the rest in a quarter of the segment deadline, so the
    // second segment takes it all.
    let tap = &pair.peripheral.tap;
    let segments = tap.announcements();
    assert_eq!(segments[..2], [0, SEG as u32]);
    assert!(segments.windows(2).all(|w| w[0] < w[1]), "{segments:?}");
    assert_eq!(segments.len(), 2, "{segments:?}");
    let ota: usize = tap
        .seen
        .iter()
        .map(|s| if let Seen::Ota(n) = s { *n } else { 0 })
        .sum();
    assert_eq!(ota, MIB);
    assert_eq!(tap.seen.iter().filter(|s| **s == Seen::Apply).count(), 1);
    let success = Reply::response(Command::UpdateComponentSegment, ErrorCode::Success);
    assert_eq!(tap.count(success), segments.len());
    let progress = &progress(&pair.central);
    assert!(progress.windows(2).all(|w| w[0].1 < w[1].1));
    assert_eq!(progress.last().map(|p| p.1), Some(MIB as u64));
    // Between those two confirmations the written bytes move on a hundredth at a time.
    let sent: Vec<u64> = pair
        .central
        .log
        .iter()
        .filter_map(|(_, e)| match e {
            GadgetEvent::Sent { sent, .. } => Some(*sent),
            _ => None,
        })
        .collect();
    assert!(sent.windows(2).all(|w| w[0] < w[1]), "{sent:?}");
    assert!(sent.len() >= 95, "{} reports", sent.len());

    let stats = pair.stats;
    assert_eq!((stats.oversized, stats.disconnects), (0, 1), "{stats:?}");
    assert!(stats.write_bytes > MIB as u64, "{stats:?}");
    assert_eq!(pair.central.timeouts, 0);

    // The restart's boot decision activated slot A; a later power-on changes nothing.
    assert_eq!(
        pair.peripheral.boots,
        [BootOutcome::Updated { from: 0, to: 2 }]
    );
    assert_eq!(pair.peripheral.gadget().active().slot, Slot::A);
    assert_runs(&mut pair.peripheral, 2, &new);

    // Speed is the simulator's clock against what the link could carry, never wall time.
    let capacity = pair.params.capacity_bytes_per_sec();
    let ideal = MIB as f64 / capacity;
    let whole = pair.now.as_u64() as f64 / 1000.0;
    let transfer = (progress.last().unwrap().0 - progress[0].0).as_millis() as f64 / 1000.0;
    println!(
        "1 MiB in {whole:.2} s simulated ({transfer:.2} s of it transferring), link capacity \
         {ideal:.2} s ({capacity:.0} B/s), ratio {:.2} ({:.2} for the transfer)",
        whole / ideal,
        transfer / ideal
    );
    assert!(whole / ideal < 20.0, "{whole} s");
}

#[test]
fn one_mib_survives_loss_duplicates_reordering_and_two_disconnects() {
    let factory = image_bytes(200_000, 1);
    let new = image_bytes(MIB, 3);
    // Default options: one lost, doubled or swapped packet costs its whole segment, so the
    // flow must shrink its segments to what gets through (a 16 KiB segment of 68 packets
    // survives ~7% faulty values in under 1% of attempts, a 1 KiB one in ~60%).
    let options = GadgetOptions::default();
    for seed in 1..=5 {
        let faults = Faults {
            seed,
            drop: 0.05,
            duplicate: 0.01,
            reorder: 0.01,
            corrupt: 0.0,
            disconnect_after_writes: vec![1_500, 4_000],
        };
        let device = Device4K::provisioned(BIG, &factory);
        let mut pair = pair(device, &new, 2, options, faults);
        assert!(pair.drive(Span::from_secs(10 * 3600)), "seed {seed}");
        let events = &pair.events;
        assert_eq!(failure(events), None, "seed {seed}");
        assert_eq!(events.last(), Some(&GadgetEvent::Done { version: 2 }));

        let stats = pair.stats;
        assert!(
            stats.dropped > 0 && stats.duplicated > 0 && stats.reordered > 0,
            "{stats:?}"
        );
        // Both injected drops came mid-transfer, and the transfer resumed after each: the
        // confirmed count never went back.
        let apply = events
            .iter()
            .position(|e| *e == GadgetEvent::Stage(GadgetStage::Apply))
            .unwrap();
        let reconnects = events[..apply]
            .iter()
            .filter(|e| **e == GadgetEvent::NeedsReconnect)
            .count();
        assert!(reconnects >= 2, "seed {seed}: {reconnects}");
        let progress = &progress(&pair.central);
        assert!(progress.windows(2).all(|w| w[0].1 <= w[1].1), "seed {seed}");
        let announced = pair.peripheral.tap.announcements();
        let past_zero = announced.iter().position(|&o| o != 0).unwrap();
        assert!(
            announced[past_zero..].iter().all(|&o| o != 0),
            "seed {seed}: restarted from offset 0"
        );
        assert!(stats.disconnects >= 3, "{stats:?}");

        assert_eq!(
            pair.peripheral.boots,
            [BootOutcome::Updated { from: 0, to: 2 }]
        );
        assert_runs(&mut pair.peripheral, 2, &new);
        println!(
            "seed {seed}: done in {} simulated, {} deadlines passed, {} announcements, {stats:?}",
            pair.now,
            pair.central.timeouts,
            pair.peripheral.tap.announcements().len()
        );
    }
}

#[test]
fn a_nacked_or_invalid_segment_is_resent_and_the_update_completes() {
    let factory = image_bytes(20_000, 4);
    let new = image_bytes(3 * SEG, 5);
    let target = SEG as u32;

    // One flipped bit in segment 1's bytes, first attempt only: its SHA-256 fails.
    let mut flipped = false;
    let corrupt_once: Tamper = Box::new(move |place, bytes| {
        if place.ota == Some((target, 2)) && !flipped {
            flipped = true;
            let last = bytes.len() - 1;
            bytes[last] ^= 0x10;
        }
        true
    });
    // One packet of segment 1 lost, first attempt only: the next one is out of sequence.
    let mut dropped = false;
    let drop_once: Tamper = Box::new(move |place, _| {
        let hit = place.ota == Some((target, 4)) && !dropped;
        dropped |= hit;
        !hit
    });

    for (tamper, answer) in [
        (
            corrupt_once,
            Reply::response(Command::UpdateComponentSegment, ErrorCode::Invalid),
        ),
        (
            drop_once,
            Reply::Ack {
                stream: StreamId::Ota,
                positive: false,
            },
        ),
    ] {
        let mut device = Device4K::provisioned(SMALL, &factory);
        device.tamper = Some(tamper);
        let mut pair = pair(device, &new, 2, fixed(), Faults::default());
        assert!(pair.drive(Span::from_secs(600)));
        assert_eq!(failure(&pair.events), None, "{answer:?}");
        assert_eq!(pair.events.last(), Some(&GadgetEvent::Done { version: 2 }));

        let tap = &pair.peripheral.tap;
        assert!(tap.count(answer) >= 1, "{answer:?}: {:?}", tap.replies);
        // The failed segment is resent at half its size; the next one is whole again.
        assert_eq!(
            tap.announcements(),
            [
                0,
                target,
                target,
                target + target / 2,
                2 * target + target / 2
            ]
        );
        let success = Reply::response(Command::UpdateComponentSegment, ErrorCode::Success);
        assert_eq!(tap.count(success), 4);
        // The resend cost the time of one segment, not a deadline.
        assert_eq!(pair.central.timeouts, 0);
        assert_runs(&mut pair.peripheral, 2, &new);
    }
}

#[test]
fn an_equal_or_lower_version_is_refused_after_the_handshake() {
    let factory = image_bytes(20_000, 6);
    let installed = image_bytes(30_000, 7);
    let device = Device4K::provisioned(SMALL, &factory);
    let mut first = pair(
        device,
        &installed,
        5,
        GadgetOptions::default(),
        Faults::default(),
    );
    assert!(first.drive(Span::from_secs(600)));
    assert_eq!(first.events.last(), Some(&GadgetEvent::Done { version: 5 }));
    let mut device = first.peripheral;

    for offered in [5, 4] {
        device.tap.seen.clear();
        let before = device.contents();
        let ops = device.flash_ops();
        let other = image_bytes(30_000, u64::from(offered) + 100);
        let mut pair = pair(
            device,
            &other,
            offered,
            GadgetOptions::default(),
            Faults::default(),
        );
        assert!(pair.drive(Span::from_secs(60)));

        let events = &pair.events;
        assert_eq!(failure(events), None);
        assert_eq!(
            events.last(),
            Some(&GadgetEvent::UpToDate {
                current: 5,
                offered
            })
        );
        assert_eq!(
            stages(events),
            [GadgetStage::Handshake, GadgetStage::Discover]
        );
        assert!(!events
            .iter()
            .any(|e| matches!(e, GadgetEvent::Progress { .. })));
        // GetDeviceInformation, GetDeviceFeatures, Discover twice (a verdict is read twice):
        // one packet each, nothing more.
        assert_eq!(
            pair.peripheral.tap.seen,
            [
                Seen::Control(Command::GetDeviceInformation.into()),
                Seen::Control(Command::GetDeviceFeatures.into()),
                Seen::Alexa,
                Seen::Alexa
            ]
        );
        assert_eq!(pair.stats.writes, 4);

        device = pair.peripheral;
        assert_eq!(device.flash_ops(), ops, "offered {offered}");
        assert_eq!(device.contents(), before, "offered {offered}");
        assert_runs(&mut device, 5, &installed);
    }
}

#[test]
fn a_segment_tampered_on_every_attempt_fails_the_update_and_the_old_image_stays() {
    let factory = image_bytes(20_000, 8);
    let new = image_bytes(3 * SEG, 9);
    let target = SEG as u32;
    let mut device = Device4K::provisioned(SMALL, &factory);
    device.tamper = Some(Box::new(move |place, bytes| {
        if place.ota == Some((target, 0)) {
            let last = bytes.len() - 1;
            bytes[last] ^= 0x01;
        }
        true
    }));
    let mut pair = pair(device, &new, 2, fixed(), Faults::default());
    assert!(pair.drive(Span::from_secs(600)));

    let attempts = otaweb::flow::gadget::DEFAULT_MAX_ATTEMPTS;
    assert_eq!(
        failure(&pair.events),
        Some(&Error::LinkLost(LinkLost::RetriesExhausted { attempts }))
    );
    let tap = &pair.peripheral.tap;
    // Halved from 16 KiB to the 1 KiB floor (four resends), then every attempt there.
    let mut expected = vec![0];
    expected.extend(std::iter::repeat_n(target, 4 + attempts as usize));
    assert_eq!(tap.announcements(), expected);
    let invalid = Reply::response(Command::UpdateComponentSegment, ErrorCode::Invalid);
    assert_eq!(tap.count(invalid), 4 + attempts as usize);
    assert!(!tap.seen.contains(&Seen::Apply));

    // Segment 0 sits in slot A, but nothing was applied: a power-on keeps the factory image.
    assert_eq!(pair.peripheral.gadget().staged(), Some(("app", target)));
    assert!(pair.peripheral.boots.is_empty());
    assert_runs(&mut pair.peripheral, 0, &factory);
    assert_eq!(pair.peripheral.gadget().active().slot, Slot::FACTORY);
}

#[test]
fn forged_segments_verify_but_the_whole_image_is_refused_at_apply() {
    let factory = image_bytes(20_000, 10);
    let new = image_bytes(3 * SEG, 11);
    let target = SEG;
    // A link that alters the first byte of segment 1 and rewrites that segment's signature
    // to match: every segment verifies, only the whole image's SHA-256 can tell.
    let honest = segment_signature(&new[target..2 * target]);
    let mut altered = new[target..2 * target].to_vec();
    altered[0] ^= 0x01;
    let forged = segment_signature(&altered);
    assert_eq!(honest.len(), forged.len());
    let mut device = Device4K::provisioned(SMALL, &factory);
    device.tamper = Some(Box::new(move |place, bytes| {
        if place.announces == Some(target as u32) {
            let at = bytes
                .windows(honest.len())
                .position(|w| w == honest.as_bytes())
                .expect("the announcement carries the signature");
            bytes[at..at + forged.len()].copy_from_slice(forged.as_bytes());
        }
        if place.ota == Some((target as u32, 0)) {
            let header = TransportPacket::new_checked(&bytes[..])
                .unwrap()
                .header_len();
            bytes[header] ^= 0x01;
        }
        true
    }));
    let mut pair = pair(device, &new, 2, fixed(), Faults::default());
    assert!(pair.drive(Span::from_secs(600)));

    let refused = failure(&pair.events).expect("the flow fails");
    assert!(
        matches!(refused, Error::PeerRefused(r) if r.name == "INVALID"),
        "{refused:?}"
    );
    let tap = &pair.peripheral.tap;
    assert_eq!(tap.announcements(), [0, SEG as u32, 2 * SEG as u32]);
    let success = Reply::response(Command::UpdateComponentSegment, ErrorCode::Success);
    assert_eq!(tap.count(success), 3);
    let invalid = Reply::response(Command::ApplyFirmware, ErrorCode::Invalid);
    assert_eq!(tap.count(invalid), 1);

    // The altered image is all in slot A, yet the gadget never asked to restart; a power-on
    // still runs the factory image.
    assert_eq!(
        pair.peripheral.gadget().staged(),
        Some(("app", 3 * SEG as u32))
    );
    assert!(pair.peripheral.boots.is_empty());
    assert!(!pair.peripheral.gadget().restart_requested());
    assert_runs(&mut pair.peripheral, 0, &factory);
}

#[test]
fn a_power_cut_at_any_flash_operation_still_boots_a_valid_image() {
    let factory = image_bytes(6_000, 12);
    let new = image_bytes(12 * 1024, 13);
    let options = GadgetOptions {
        segment_size: 4096,
        ..GadgetOptions::default()
    };
    let old = (0, sha256(&factory));
    let updated = (2, sha256(&new));

    let run = |cut: Option<u32>| {
        let mut device = TinyDevice::provisioned(TINY, &factory);
        let ops = device.flash_ops();
        if let Some(n) = cut {
            device.gadget().flash_mut().sim_mut().cut_power_after_ops(n);
        }
        let mut pair = pair(device, &new, 2, options, Faults::default());
        assert!(pair.drive(Span::from_secs(3600)), "cut {cut:?}");
        let used = pair.peripheral.flash_ops() - ops;
        (pair, used)
    };

    let (mut clean, clean_ops) = run(None);
    assert_eq!(clean.events.last(), Some(&GadgetEvent::Done { version: 2 }));
    assert_eq!(clean.peripheral.power_cuts, 0);
    assert_runs(&mut clean.peripheral, 2, &new);
    // Three segments of eight sectors, each erased and written, plus the state records.
    assert!(clean_ops >= 50, "{clean_ops}");

    let (mut runs, mut ended_old, mut ended_new) = (0, 0, 0);
    for n in 0.. {
        let (mut pair, _) = run(Some(n));
        if pair.peripheral.power_cuts == 0 {
            // The update needed fewer operations than the cut waited for: every one was hit.
            assert_eq!(u64::from(n), clean_ops);
            assert_eq!(pair.events.last(), Some(&GadgetEvent::Done { version: 2 }));
            break;
        }
        runs += 1;
        assert_eq!(pair.peripheral.power_cuts, 1, "cut {n}");
        // The boot right after the cut, and any after the flow carried on, ran a whole image.
        for booted in &pair.peripheral.ran {
            assert!(*booted == old || *booted == updated, "cut {n}: {booted:?}");
        }
        assert!(!pair.peripheral.ran.is_empty(), "cut {n}");
        let active = pair.peripheral.power_on();
        let booted = (active.version, active.sha256);
        assert!(booted == old || booted == updated, "cut {n}: {active:?}");
        // The flow's verdict agrees with the flash: Done exactly when the new image runs.
        let done = pair.events.last() == Some(&GadgetEvent::Done { version: 2 });
        assert_eq!(done, booted == updated, "cut {n}: {:?}", pair.events.last());
        if booted == updated {
            ended_new += 1;
        } else {
            ended_old += 1;
        }
    }
    println!("{runs} power cuts: {ended_new} ended on the new image, {ended_old} on the old");
    assert_eq!(runs, clean_ops);
    assert!(ended_new > 0 && ended_old > 0);
}

#[test]
fn a_staged_image_is_applied_later_by_a_new_orchestrator_after_a_restart_without_resending() {
    let factory = image_bytes(20_000, 40);
    let new = image_bytes(30_000, 41);
    let device = Device4K::provisioned(SMALL, &factory);
    let stage = GadgetOptions {
        stage_only: true,
        ..GadgetOptions::default()
    };
    let mut first = pair(device, &new, 3, stage, Faults::default());
    // A staged flow waits for apply(): it does not finish.
    assert!(!first.drive(Span::from_secs(600)));
    assert_eq!(first.events.last(), Some(&GadgetEvent::Staged));
    let mut device = first.peripheral;
    // The page is closed and the device restarts: it keeps running its old firmware.
    assert_eq!(device.power_on().version, 0);

    device.tap.seen.clear();
    let apply = GadgetOptions {
        apply_staged: true,
        ..GadgetOptions::default()
    };
    let mut second = pair(device, &new, 3, apply, Faults::default());
    assert!(second.drive(Span::from_secs(600)));
    assert_eq!(failure(&second.events), None);
    assert_eq!(
        second.events.last(),
        Some(&GadgetEvent::Done { version: 3 })
    );
    let seen = &second.peripheral.tap.seen;
    assert!(
        !seen
            .iter()
            .any(|s| matches!(s, Seen::Segment { .. } | Seen::Ota(_))),
        "no segment sent again: {seen:?}"
    );
    assert!(seen.contains(&Seen::Apply));
    assert_runs(&mut second.peripheral, 3, &new);
}

#[test]
fn apply_staged_on_a_device_holding_no_copy_is_refused_and_changes_nothing() {
    let factory = image_bytes(20_000, 42);
    let new = image_bytes(30_000, 43);
    let mut device = Device4K::provisioned(SMALL, &factory);
    let before = device.contents();
    let apply = GadgetOptions {
        apply_staged: true,
        ..GadgetOptions::default()
    };
    let mut pair = pair(device, &new, 3, apply, Faults::default());
    assert!(pair.drive(Span::from_secs(600)));
    let Some(Error::PeerRefused(refusal)) = failure(&pair.events) else {
        panic!("{:?}", pair.events)
    };
    assert_eq!(refusal.name, "NOT_STAGED");
    device = pair.peripheral;
    assert_eq!(device.contents(), before, "nothing written");
    assert_runs(&mut device, 0, &factory);
}

#[test]
fn a_default_device_takes_update_after_update_and_keeps_its_factory_image() {
    // The default database: the factory region and two slots. Three updates in a row, v1 to
    // v4, alternate between the slots, each replacing the image before the one it updates.
    let factory = image_bytes(20_000, 50);
    let mut device = Device4K::provisioned_at(SMALL, &factory, 1);
    let mut from = 1;
    for (version, slot) in [(2, Slot::A), (3, Slot::B), (4, Slot::A)] {
        let new = image_bytes(30_000 + version as usize, u64::from(version) + 50);
        let mut pair = pair(
            device,
            &new,
            version,
            GadgetOptions::default(),
            Faults::default(),
        );
        assert!(pair.drive(Span::from_secs(600)), "v{version}");
        assert_eq!(failure(&pair.events), None, "v{version}");
        assert_eq!(pair.events.last(), Some(&GadgetEvent::Done { version }));
        device = pair.peripheral;
        // The restart ran the new image (as a trial, which Discover then confirmed).
        assert_eq!(
            device.boots.last(),
            Some(&BootOutcome::Updated { from, to: version })
        );
        assert_eq!(device.ran.last(), Some(&(version, sha256(&new))));
        assert_eq!(device.gadget().active().slot, slot);
        assert_runs(&mut device, version, &new);
        let state = device.gadget().database().clone();
        assert_eq!(state.previous.map(|p| p.version), Some(from));
        from = version;
    }

    // The factory image is still in its region, and a factory reset boots it.
    let mut flash = device.gadget.take().unwrap().into_flash();
    let slots = Slots::new(SMALL, &flash).unwrap();
    let region = slots.slot_range(Slot::FACTORY).start as usize;
    assert_eq!(
        &flash.sim().contents()[region..region + factory.len()],
        &factory[..]
    );
    slots.factory_reset(&mut flash).unwrap();
    device.boot(flash);
    assert_eq!(device.boots.last(), Some(&BootOutcome::FactoryReset));
    assert_eq!(device.ran.last(), Some(&(1, sha256(&factory))));
    assert_runs(&mut device, 1, &factory);
    assert_eq!(device.gadget().active().slot, Slot::FACTORY);

    // And from there the device updates again.
    let new = image_bytes(25_000, 60);
    let mut pair = pair(device, &new, 5, GadgetOptions::default(), Faults::default());
    assert!(pair.drive(Span::from_secs(600)));
    assert_eq!(pair.events.last(), Some(&GadgetEvent::Done { version: 5 }));
    assert_runs(&mut pair.peripheral, 5, &new);
}

// Signed images: the page verifies the manifest signature, the gadget's database checks it
// again with its trusted key, at the apply and at the boot that starts the image.

const SIGNING_KEY: &str = include_str!("../firmware-fixtures/files/keys/test-signing-key.pem");
const SIGNING_KEY_PUB: &str =
    include_str!("../firmware-fixtures/files/keys/test-signing-key.pub.pem");
const OTHER_KEY_PUB: &str = include_str!("../firmware-fixtures/files/keys/other-key.pub.pem");
const APP_V2: &[u8] = include_bytes!("../firmware-fixtures/files/app-v2.bin");
const APP_V2_SIG: &str = include_str!("../firmware-fixtures/files/app-v2.bin.sig");

/// 96 KiB slots: room for the fixture app-v2.bin.
const FIXTURE: Layout = Layout {
    slot_size: 96 * 1024,
    ..SMALL
};

/// The Microchip-style signature of `bytes` by the test signing key: ECDSA P-256 over their
/// SHA-256, deterministic (RFC 6979), as firmware-fixtures signs.
fn sign(bytes: &[u8]) -> ImageSignature {
    use p256::ecdsa::signature::hazmat::PrehashSigner as _;
    use p256::ecdsa::{Signature, SigningKey};
    use p256::pkcs8::DecodePrivateKey as _;

    let key = SigningKey::from_pkcs8_pem(SIGNING_KEY).unwrap();
    let signature: Signature = key.sign_prehash(&sha256(bytes)).unwrap();
    ImageSignature::from_bytes(&signature.to_bytes()).unwrap()
}

/// `bytes` as gadget image "app" at `version`, signed with the test key and verified as the
/// page does: with a policy that trusts only that key.
fn signed(bytes: &[u8], version: u32) -> Verified<Image> {
    let entry = entry(bytes, version, Some(sign(bytes)));
    let policy = VerifyPolicy::trusting(vec![PublicKey::from_pem(SIGNING_KEY_PUB).unwrap()]);
    let image = verify_image(bytes, &entry, &policy).unwrap();
    assert!(image.get().signed);
    image
}

/// A device whose database trusts `pem` (none: no key).
fn trusting(pem: Option<&str>) -> GadgetConfig {
    GadgetConfig {
        database: DbConfig {
            trusted_key: pem.map(|pem| PublicKey::from_pem(pem).unwrap()),
            ..DbConfig::default()
        },
        ..GadgetConfig::default()
    }
}

#[test]
fn the_test_key_signs_app_v2_as_the_fixtures_do() {
    assert_eq!(
        sign(APP_V2),
        ImageSignature::from_base64(APP_V2_SIG).unwrap()
    );
}

#[test]
fn a_signed_image_installs_on_a_device_that_trusts_its_key_and_on_one_without_a_key() {
    let factory = image_bytes(20_000, 70);
    for key in [Some(SIGNING_KEY_PUB), None] {
        let device = Device4K::provisioned_with(FIXTURE, &factory, 0, trusting(key));
        let mut pair = pair_with(device, signed(APP_V2, 2));
        assert!(pair.drive(Span::from_secs(600)), "key {key:?}");
        assert_eq!(failure(&pair.events), None, "key {key:?}");
        assert_eq!(pair.events.last(), Some(&GadgetEvent::Done { version: 2 }));

        // ApplyFirmware carried SHA-256 ‖ r‖s, once; the segments only their digests.
        let tap = &pair.peripheral.tap;
        let expected = ComponentSignature {
            sha256: sha256(APP_V2),
            ecdsa: Some(sign(APP_V2)),
        };
        assert_eq!(tap.apply_signatures, [expected.encode()]);
        assert_eq!(tap.apply_signatures[0].len(), 128);
        assert_eq!(
            pair.peripheral.boots,
            [BootOutcome::Updated { from: 0, to: 2 }]
        );
        let device = &mut pair.peripheral;
        assert_eq!(
            device.gadget().database().active.signature,
            Some(sign(APP_V2).to_bytes())
        );
        assert_runs(device, 2, APP_V2);
    }
}

#[test]
fn a_device_that_trusts_another_key_refuses_the_signed_image_at_apply_and_keeps_its_old_one() {
    let factory = image_bytes(20_000, 71);
    let device = Device4K::provisioned_with(FIXTURE, &factory, 0, trusting(Some(OTHER_KEY_PUB)));
    let mut pair = pair_with(device, signed(APP_V2, 2));
    assert!(pair.drive(Span::from_secs(600)));

    let refused = failure(&pair.events).expect("the flow fails");
    assert!(
        matches!(refused, Error::PeerRefused(r) if r.name == "INVALID"),
        "{refused:?}"
    );
    let tap = &pair.peripheral.tap;
    // Every segment was taken (their digests match); the whole image's signature was not.
    let segments = APP_V2.len().div_ceil(SEG);
    let success = Reply::response(Command::UpdateComponentSegment, ErrorCode::Success);
    assert_eq!(tap.count(success), segments);
    assert_eq!(tap.apply_signatures.len(), 1);
    let invalid = Reply::response(Command::ApplyFirmware, ErrorCode::Invalid);
    assert_eq!(tap.count(invalid), 1);

    // The database never took it as verified: it is invalid, nothing is pending, the gadget
    // never asked to restart, and a power-on runs the factory image.
    let device = &mut pair.peripheral;
    assert!(!device.gadget().restart_requested());
    assert!(device.boots.is_empty());
    let state = device.gadget().database().clone();
    assert_eq!(state.pending, None);
    assert_eq!(state.images[1].state, ImageState::Invalid);
    assert_runs(device, 0, &factory);
    assert_eq!(device.gadget().active().slot, Slot::FACTORY);
}

#[test]
fn a_device_with_a_trusted_key_refuses_an_unsigned_image_at_apply() {
    let factory = image_bytes(20_000, 72);
    let new = image_bytes(40_000, 73);
    let device = Device4K::provisioned_with(SMALL, &factory, 0, trusting(Some(SIGNING_KEY_PUB)));
    let mut pair = pair(device, &new, 2, GadgetOptions::default(), Faults::default());
    assert!(pair.drive(Span::from_secs(600)));

    let refused = failure(&pair.events).expect("the flow fails");
    assert!(
        matches!(refused, Error::PeerRefused(r) if r.name == "INVALID"),
        "{refused:?}"
    );
    let tap = &pair.peripheral.tap;
    assert_eq!(tap.apply_signatures, [segment_signature(&new)]);
    let invalid = Reply::response(Command::ApplyFirmware, ErrorCode::Invalid);
    assert_eq!(tap.count(invalid), 1);
    let device = &mut pair.peripheral;
    assert!(device.boots.is_empty());
    // Refused before the database was asked: the staging stays, for a signed apply.
    assert_eq!(device.gadget().staged(), Some(("app", new.len() as u32)));
    assert_runs(device, 0, &factory);
}
