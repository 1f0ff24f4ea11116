//! SiFli OTA-manager DFU end to end: `DfuUpdate` (the phone) against the companion
//! firmware's `DfuDevice` (user bin and OTA manager on a simulated flash), over the
//! simulated BLE link, with the fixture package of `firmware-fixtures/files/dfu/`. Every
//! outcome is read back from the device's partitions after its reboots.
// Native only, like tests/gadget_sim.rs.
#![cfg(not(target_arch = "wasm32"))]

mod sim;

use otaweb::error::Error;
use otaweb::flow::dfu::{DfuEvent, DfuOptions, DfuPackage, DfuUpdate, OnOngoing};
use otaweb::image::sifli::{ImageId, TransferFile};
use otaweb::time::Span;
use otaweb_firmware::dfu::{DfuState, Mode};
use sim::dfu::{
    factory, padded, provisioned_flash, Device, CTRL, CTRL_BAD_SIG, FONT, FONT_T, HCPU, HCPU_T,
    HCPU_TAMPERED, RES, RES_T,
};
use sim::{Faults, LinkParams, Observed, Pair};

/// The remote as the simulator's central.
type Phone = Observed<DfuUpdate>;

/// The remote for `package`.
fn phone(package: DfuPackage, options: DfuOptions) -> Phone {
    Observed::new(DfuUpdate::new(package, options).unwrap())
}

fn package(ctrl: &[u8], hcpu: &[u8]) -> DfuPackage {
    let file =
        |id: ImageId, bytes: &[u8]| TransferFile::with_blk_size(id.0, bytes.to_vec(), 512).unwrap();
    DfuPackage::new(
        ctrl.to_vec(),
        vec![
            file(ImageId::FONT, FONT_T),
            file(ImageId::HCPU, hcpu),
            file(ImageId::RES, RES_T),
        ],
    )
    .unwrap()
}

fn pair(options: DfuOptions, faults: Faults) -> Pair<Phone, Device> {
    Pair::new(
        phone(package(CTRL, HCPU_T), options),
        Device::new(provisioned_flash()),
        LinkParams::DESKTOP,
        faults,
    )
}

fn failure(events: &[DfuEvent]) -> Option<&Error> {
    events.iter().find_map(|e| match e {
        DfuEvent::Failed(e) => Some(e),
        _ => None,
    })
}

fn assert_new_images(device: &mut Device) {
    let [h, r, f] = device.images();
    assert_eq!(h, padded(HCPU), "HCPU partition");
    assert_eq!(r, padded(RES), "RES partition");
    assert_eq!(f, padded(FONT), "FONT partition");
}

#[test]
fn the_fixture_package_installs_end_to_end() {
    let mut p = pair(DfuOptions::default(), Faults::default());
    assert_eq!(p.peripheral.dev.mode(), Mode::UserBin);
    assert!(p.drive(Span::from_secs(120)), "events: {:?}", p.events);
    assert!(p.events.contains(&DfuEvent::Done), "{:?}", p.events);
    assert!(p.events.contains(&DfuEvent::RebootingIntoUpdater));
    // Once into the OTA manager, once back into the user bin.
    assert_eq!(p.peripheral.boots, 2);
    let dev = &mut p.peripheral;
    assert_eq!(dev.dev.mode(), Mode::UserBin);
    assert_eq!(dev.dev.progress().state, DfuState::Idle);
    assert_new_images(dev);
    // Another boot keeps them.
    dev.dev.restart(p.now);
    assert_eq!(dev.dev.mode(), Mode::UserBin);
    assert_new_images(dev);
    let total: u64 = [HCPU_T, RES_T, FONT_T].iter().map(|f| f.len() as u64).sum();
    let secs = p.now.0 as f64 / 1000.0;
    println!(
        "fixture package: {total} transfer bytes in {secs:.2} s simulated (with the reboots' \
         2 × {} ms reconnect delay), {:.1} kB/s; link capacity {:.1} kB/s; {} writes",
        LinkParams::DESKTOP.reconnect_delay.as_millis(),
        total as f64 / secs / 1000.0,
        LinkParams::DESKTOP.capacity_bytes_per_sec() / 1000.0,
        p.stats.writes
    );
}

#[test]
fn a_ctrl_packet_with_a_bad_signature_is_refused_with_9_and_nothing_changes() {
    let mut p = Pair::new(
        phone(package(CTRL_BAD_SIG, HCPU_T), DfuOptions::default()),
        Device::new(provisioned_flash()),
        LinkParams::DESKTOP,
        Faults::default(),
    );
    let before = p.peripheral.dev.flash().sim().stats().writes;
    assert!(p.drive(Span::from_secs(30)));
    match failure(&p.events) {
        Some(Error::PeerRefused(r)) => {
            assert_eq!(r.code, 9);
            assert_eq!(r.name, "DFU_ERR_CONTROL_PACKET_INVALID");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.peripheral.boots, 0);
    assert_eq!(p.peripheral.dev.mode(), Mode::UserBin);
    assert_eq!(p.peripheral.dev.flash().sim().stats().writes, before);
    assert_eq!(p.peripheral.images(), factory());
}

#[test]
fn a_drop_mid_image_resumes_from_the_devices_packet() {
    // Value 150 falls inside the RES image (HCPU is 30 packets of 3 values each).
    let faults = Faults {
        disconnect_after_writes: vec![150],
        ..Faults::default()
    };
    let mut p = pair(DfuOptions::default(), faults);
    assert!(p.drive(Span::from_secs(180)), "{:?}", p.events);
    assert!(p.events.contains(&DfuEvent::Done), "{:?}", p.events);
    let resumed = p.events.iter().find_map(|e| match e {
        DfuEvent::Resuming { image, packets } => Some((*image, *packets)),
        _ => None,
    });
    let (image, packets) = resumed.expect("resumed");
    // RES is written in place, so the device waited in its OTA manager.
    assert_eq!(image, ImageId::RES);
    assert!(packets > 0, "resumed from packet {packets} of {image}");
    assert_new_images(&mut p.peripheral);
}

#[test]
fn a_drop_mid_image_with_restart_starts_over_and_installs() {
    let faults = Faults {
        disconnect_after_writes: vec![150],
        ..Faults::default()
    };
    let options = DfuOptions {
        on_ongoing: OnOngoing::Restart,
        ..DfuOptions::default()
    };
    let mut p = pair(options, faults);
    assert!(p.drive(Span::from_secs(180)), "{:?}", p.events);
    assert!(p.events.contains(&DfuEvent::Done), "{:?}", p.events);
    assert!(!p
        .events
        .iter()
        .any(|e| matches!(e, DfuEvent::Resuming { .. })));
    assert_new_images(&mut p.peripheral);
}

#[test]
fn without_a_reconnection_the_ota_manager_returns_to_the_user_bin_after_30_s() {
    let mut p = pair(DfuOptions::default(), Faults::default());
    // Until the device reboots into the OTA manager.
    while p.peripheral.boots == 0 {
        p.drive(Span(100));
    }
    p.set_out_of_range(true);
    assert_eq!(p.peripheral.dev.mode(), Mode::OtaManager);
    let booted = p.now;
    p.drive(Span::from_secs(29));
    assert_eq!(p.peripheral.dev.mode(), Mode::OtaManager);
    p.drive(Span::from_secs(2));
    assert_eq!(p.peripheral.dev.mode(), Mode::UserBin);
    assert!(p.now >= booted + Span::from_secs(30));
    assert_eq!(p.peripheral.dev.progress().state, DfuState::Idle);
    assert_eq!(p.peripheral.images(), factory());
}

#[test]
fn a_tampered_transfer_file_fails_and_installs_nothing() {
    let mut p = Pair::new(
        phone(package(CTRL, HCPU_TAMPERED), DfuOptions::default()),
        Device::new(provisioned_flash()),
        LinkParams::DESKTOP,
        Faults::default(),
    );
    assert!(p.drive(Span::from_secs(120)));
    match failure(&p.events) {
        Some(Error::PeerRefused(r)) => assert_eq!(r.code, 8, "{r:?}"),
        other => panic!("{other:?}"),
    }
    // The phone gives up; the link goes and the OTA manager returns to the user bin.
    p.disconnect();
    p.drive(Span::from_secs(5));
    assert_eq!(p.peripheral.dev.mode(), Mode::UserBin);
    assert_eq!(p.peripheral.images(), factory());
}

#[test]
fn a_power_cut_at_any_flash_write_leaves_a_bootable_device() {
    // The writes of one whole update, counted on a clean run.
    let mut clean = pair(DfuOptions::default(), Faults::default());
    let base = clean.peripheral.dev.flash().sim().stats().writes;
    assert!(clean.drive(Span::from_secs(120)));
    let writes = clean.peripheral.dev.flash().sim().stats().writes - base;
    let new = [padded(HCPU), padded(RES), padded(FONT)];
    for cut in 1..=writes {
        let mut p = pair(DfuOptions::default(), Faults::default());
        p.peripheral
            .dev
            .flash_mut()
            .sim_mut()
            .cut_power_after_writes(cut as u32);
        p.drive(Span::from_secs(120));
        let mut flash = p.peripheral.dev.flash().clone();
        flash.sim_mut().restore_power();
        let mut dev = Device::new(flash);
        match dev.dev.mode() {
            Mode::UserBin => {
                let images = dev.images();
                assert!(
                    images == factory() || images == new,
                    "cut {cut}: the user bin boots a mix"
                );
            }
            Mode::OtaManager => {}
        }
    }
    println!("power cut at each of {writes} flash writes: every boot is usable");
}

#[test]
fn a_lossy_link_recovers_lost_packets_and_never_leaves_a_broken_device() {
    // 2% of values lost both ways. A lost image packet is recovered by the device's
    // LINK_LOSE_CHECK or the remote's RETRANSMISSION_REQUEST; a lost INIT or its answer is
    // not (the remote does not resend requests), so a run may fail, but never unsafely.
    let mut completed = 0;
    for seed in 1..=6 {
        let faults = Faults {
            seed,
            drop: 0.02,
            ..Faults::default()
        };
        let mut p = pair(DfuOptions::default(), faults);
        assert!(
            p.drive(Span::from_secs(3600)),
            "seed {seed}: {:?}",
            p.events
        );
        assert!(p.stats.dropped > 0, "seed {seed}: {:?}", p.stats);
        if p.events.contains(&DfuEvent::Done) {
            completed += 1;
            assert_new_images(&mut p.peripheral);
            continue;
        }
        assert!(failure(&p.events).is_some(), "seed {seed}: {:?}", p.events);
        let dev = &mut p.peripheral;
        dev.dev.restart(p.now);
        if dev.dev.mode() == Mode::UserBin {
            let images = dev.images();
            let old = factory().map(|i| padded(&i));
            let new = [padded(HCPU), padded(RES), padded(FONT)];
            assert!(
                images == old || images == new,
                "seed {seed}: a mix of old and new images"
            );
        }
    }
    assert!(completed >= 4, "{completed} of 6 lossy runs completed");
}

#[test]
fn a_deep_pipeline_over_a_link_that_repeats_values_installs_every_time() {
    // 5% of values delivered twice: a repeated acknowledgement is taken for the next one
    // (it carries no count) and a repeated fragment garbles its packet, so the flow runs
    // ahead of the device, is rewound by its link-lose checks while packets it wrote after
    // them still arrive, and sometimes ends an image the device does not hold whole.
    let depth = DfuOptions::default().max_unacked;
    assert!(depth > 2 * u16::from(DfuOptions::default().num_of_rsp));
    for seed in 1..=20 {
        let faults = Faults {
            seed,
            duplicate: 0.05,
            ..Faults::default()
        };
        let mut p = pair(DfuOptions::default(), faults);
        assert!(p.drive(Span::from_secs(3600)), "seed {seed}");
        assert!(p.stats.duplicated > 0, "seed {seed}: {:?}", p.stats);
        assert!(
            p.events.contains(&DfuEvent::Done),
            "seed {seed}: {:?}",
            failure(&p.events)
        );
        assert_new_images(&mut p.peripheral);
    }
}
