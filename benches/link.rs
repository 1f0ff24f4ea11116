//! Link efficiency: the real gadget and DFU flows against the companion firmware over the
//! simulator's physical BLE link (`tests/sim`, [`Radio`]), in image kB/s (kB = 10^3 B) next to
//! the link's payload capacity and, for each flow, its protocol's own bound.
//!
//! Run by `make bench` as `cargo bench -p otaweb --bench link`. Prints a markdown section and
//! `SUMMARY|` rows. Virtual time: the simulator jumps its clock, so the grid costs seconds.
//! "Before" is each flow as the previous release ran it ([`gadget_before`], [`dfu_before`]),
//! "after" with its defaults told what the web edge tells it ([`gadget_after`],
//! [`dfu_after`]); both run in the same process on the same links.

#[path = "../tests/sim/mod.rs"]
mod sim;

use std::time::Instant;

use otaweb::flow::dfu::{DfuEvent, DfuOptions, DfuPackage, DfuStage, DfuUpdate};
use otaweb::flow::gadget::{GadgetEvent, GadgetOptions, GadgetStage, GadgetUpdate};
use otaweb::image::digest::sha256;
use otaweb::image::sifli::{self, DfuId, ImageId, PackageImage, PackageParams, TransferFile};
use otaweb::time::{Millis, Span};
use otaweb::wire::agt::{Fragmenter as AgtFragmenter, Limits, StreamId, TransactionId};
use otaweb::wire::agt_proto::ControlEnvelope;
use otaweb::wire::dfu::Message;
use otaweb::wire::sifli::{Category, Fragmenter};
use otaweb_firmware::dfu::{DfuConfig, DfuDevice, DfuLayout, Region};
use otaweb_firmware::gadget::GadgetConfig;
use otaweb_firmware::slots::Layout;
use sim::gadget::{image_bytes, verified, Device as GadgetDevice};
use sim::{Faults, Observed, OsQueue, Pair, Phy, Radio, Stats};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// The DFU signing key of the fixtures (`firmware-fixtures`), so the device checks a real
/// signature over the bench's package.
const DFU_SIGNING_KEY_PEM: &str = include_str!("../firmware-fixtures/src/dfu-test-signing-key.pem");

/// One link configuration of the grid.
#[derive(Clone, Copy)]
struct Link {
    phy: Phy,
    mtu: usize,
    interval_us: u64,
    exchanges: usize,
    queue: OsQueue,
}

/// CoreBluetooth overflows at about 20 queued writes (PEERS.md, radar 20394802).
const DROP_QUEUE_LEN: u16 = 20;

impl Link {
    fn radio(&self) -> Radio {
        let mut radio = Radio::new(self.phy, self.mtu, self.interval_us, self.exchanges);
        radio.os_queue = self.queue;
        if self.queue == OsQueue::Drop {
            radio.os_queue_len = DROP_QUEUE_LEN.into();
        }
        radio
    }

    /// The configuration the summary quotes: waiting queue, MTU 247, 7.5 ms, full events.
    fn is_headline(&self) -> bool {
        self.queue == OsQueue::BackPressure
            && self.mtu == 247
            && self.interval_us == 7_500
            && self.exchanges == FILL
    }

    fn label(&self) -> String {
        let phy = match self.phy {
            Phy::Le1M => "1M",
            Phy::Le2M => "2M",
        };
        let exchanges = if self.exchanges >= FILL {
            "fill".to_string()
        } else {
            self.exchanges.to_string()
        };
        let queue = match self.queue {
            OsQueue::BackPressure => "wait",
            OsQueue::Drop => "drop",
        };
        format!(
            "{phy} / {} / {} ms / {exchanges} / {queue}",
            self.mtu,
            self.interval_us as f64 / 1000.0
        )
    }
}

/// " (OS dropped before / after writes)" when either run lost writes in a dropping queue.
fn dropped_note(before: &Run, after: &Run) -> String {
    if before.stats.os_dropped + after.stats.os_dropped > 0 {
        format!(
            " (OS dropped {} / {} writes)",
            before.stats.os_dropped, after.stats.os_dropped
        )
    } else {
        String::new()
    }
}

/// "As many exchanges as the event has room for".
const FILL: usize = 1000;

/// What one run measured.
struct Run {
    /// Image bytes per second during the transfer, kB/s.
    kbps: f64,
    /// Whether the update finished `Done`.
    done: bool,
    stats: Stats,
}

impl Run {
    fn cell(&self) -> String {
        if self.done {
            format!("{:.1}", self.kbps)
        } else {
            "failed".to_string()
        }
    }
}

/// Transfer rate from the first time `start` holds to the first time `end` does, in kB/s.
fn rate<E>(
    log: &[(Millis, E)],
    bytes: usize,
    start: impl Fn(&E) -> bool,
    end: impl Fn(&E) -> bool,
) -> f64 {
    let t0 = log.iter().find(|(_, e)| start(e)).map(|(t, _)| t.0);
    let t1 = log.iter().find(|(_, e)| end(e)).map(|(t, _)| t.0);
    match (t0, t1) {
        (Some(a), Some(b)) if b > a => bytes as f64 / (b - a) as f64,
        _ => 0.0,
    }
}

// ---------------------------------------------------------------------------------------
// Gadget

/// The segment size the flow grows to on a clean link, for the bound: what the link carries
/// in 15 s (a quarter of the flow's 60 s segment deadline, which counts the transfer), 64 KiB
/// to 1 MiB.
fn tuned_segment(link: Link) -> u32 {
    let secs15 = link.radio().capacity_bytes_per_sec() * 15.0;
    (secs15 as u32).clamp(64 * 1024, 1 << 20)
}

/// The gadget flow as the previous release ran it: fixed 16 KiB segments, unpaced.
fn gadget_before() -> GadgetOptions {
    GadgetOptions {
        max_segment_size: otaweb::flow::gadget::DEFAULT_SEGMENT_SIZE,
        ..GadgetOptions::default()
    }
}

/// The gadget flow's defaults, told the depth of a dropping OS queue as the web edge tells
/// it on macOS and Windows: segments grow by the measured rate, and over a dropping queue
/// ACKed OTA transactions pace the writes to 7/8 of it.
fn gadget_after(link: Link) -> GadgetOptions {
    GadgetOptions {
        os_queue_depth: if link.queue == OsQueue::Drop {
            DROP_QUEUE_LEN
        } else {
            0
        },
        ..GadgetOptions::default()
    }
}

fn gadget_run(link: Link, image: &[u8], options: GadgetOptions) -> Run {
    let radio = link.radio();
    let layout = Layout {
        base: 0,
        erase_size: 4096,
        write_size: 4,
        slot_size: (image.len() + 64 * KIB) as u32,
    };
    let config = GadgetConfig {
        // NRF's rule (gadget.md §2): the packet size is ATT MTU − 3.
        packet_size: (link.mtu - 3) as u16,
        ..GadgetConfig::default()
    };
    let device = GadgetDevice::<4, 4096>::provisioned_with(layout, &[0x5a; 4096], 0, config);
    let updater = Observed::new(GadgetUpdate::new(verified(image, 1), options).unwrap());
    let mut pair = Pair::with_radio(updater, device, radio, Faults::default());
    let done = pair.drive(Span::from_secs(20_000));
    let done = done
        && pair
            .events
            .iter()
            .any(|e| matches!(e, GadgetEvent::Done { .. }));
    let kbps = rate(
        &pair.central.log,
        image.len(),
        |e| *e == GadgetEvent::Stage(GadgetStage::Transfer),
        |e| *e == GadgetEvent::Stage(GadgetStage::Apply),
    );
    Run {
        kbps,
        done,
        stats: pair.stats,
    }
}

/// The stop-and-wait clock: each phase's values (ATT value sizes, central to peripheral)
/// start at an event's anchor and fill events back to back; the peripheral's answer (a
/// notification of `reply` bytes) rides the first event after the last value reached it
/// (host latency), and the next phase starts at the first event after the answer reached
/// the central. A sender that never wastes an event does no better. Returns µs.
fn phases_us(radio: &Radio, phases: impl Iterator<Item = Vec<usize>>, reply: usize) -> u64 {
    let i = radio.interval_us;
    let mut t = 0;
    for values in phases {
        let (events, used) = radio.events_for(&values);
        let heard = t + (events - 1) * i + used + radio.latency_us;
        let answer = heard.div_ceil(i) * i;
        let back =
            answer + radio.exchange_us(0, reply + sim::ATT_L2CAP_OVERHEAD) + radio.latency_us;
        t = back.div_ceil(i) * i;
    }
    t
}

/// Value sizes of one AGT transaction as the real fragmenter cuts it.
fn agt_values(stream: StreamId, payload: Vec<u8>, ack: bool, limits: Limits) -> Vec<usize> {
    let mut f = AgtFragmenter::new(stream, TransactionId::ZERO, payload, ack, limits).unwrap();
    let (mut out, mut buf) = (Vec::new(), Vec::new());
    while let Some(n) = f.emit_next(&mut buf) {
        out.push(n);
        buf.clear();
    }
    out
}

/// The AGT bound for an image of `image` bytes in segments of `segment`, transactions of
/// whole packets within `t` (a segment's last takes what is left), packets of ATT MTU − 3:
/// per segment two stop-and-wait phases ([`phases_us`]), the announcement (answered by its
/// ACK) and the OTA bytes (answered by the Response), kB/s.
fn gadget_bound(radio: &Radio, image: usize, segment: usize, t: usize) -> f64 {
    let limits = Limits {
        packet_size: (radio.att_mtu - 3) as u16,
        max_transaction_size: t as u16,
    };
    let signature = "A".repeat(44);
    let phases = (0..image).step_by(segment).flat_map(|off| {
        let seg = segment.min(image - off);
        let announce =
            ControlEnvelope::update_component_segment("app", off as u32, seg as u32, &signature)
                .to_bytes();
        let announce = agt_values(StreamId::Control, announce, true, limits);
        let whole = limits.whole_packets_within(t);
        let mut data = Vec::new();
        let mut sent = 0;
        while sent < seg {
            let left = seg - sent;
            let len = if left > t { whole } else { left };
            data.extend(agt_values(StreamId::Ota, vec![0; len], false, limits));
            sent += len;
        }
        [announce, data]
    });
    // An ACK packet is 6 bytes; a segment Response about 8 in one packet: near enough.
    image as f64 / phases_us(radio, phases, 8) as f64 * 1000.0
}

// ---------------------------------------------------------------------------------------
// DFU

/// The DFU flow as the previous release ran it: windows of 20 records, stop and wait.
fn dfu_before() -> DfuOptions {
    DfuOptions {
        num_of_rsp: 20,
        max_unacked: 1,
        ..DfuOptions::default()
    }
}

/// The DFU flow's defaults (windows of 20, four of them in flight), told the depth of a
/// dropping OS queue as the web edge tells it on macOS and Windows
/// ([`DfuOptions::for_os_queue`]: two windows within 7/8 of it).
fn dfu_after(link: Link) -> DfuOptions {
    let depth = if link.queue == OsQueue::Drop {
        DROP_QUEUE_LEN
    } else {
        0
    };
    DfuOptions {
        max_value_size: link.mtu - 3,
        ..DfuOptions::default()
    }
    .for_os_queue(depth)
}

/// Test keys as the fixtures derive them (`firmware-fixtures/src/lib.rs`).
fn dfu_keys() -> ([u8; 32], [u8; 16]) {
    let root = sha256(b"otaweb dfu test root key v1");
    let uid: [u8; 16] = sha256(b"otaweb dfu test uid v1")[..16].try_into().unwrap();
    (root, uid)
}

/// A package with one plain FONT image of `len` bytes, signed with the fixtures' key.
fn dfu_package(image: &[u8]) -> (Vec<u8>, TransferFile) {
    let key = sifli::SigningKey::from_pem(DFU_SIGNING_KEY_PEM).unwrap();
    let (root, _) = dfu_keys();
    let params = PackageParams {
        dfu_id: DfuId::CODE_MIX.0,
        hw_version: 51,
        sdk_version: 2_003_000,
        fw_version: 1_001_001,
        blk_size: sifli::DEFAULT_BLK_SIZE,
        pksize: sifli::DEFAULT_PKSIZE,
        session_key: sha256(b"otaweb dfu test session key v1"),
    };
    let package = sifli::build_package(
        &params,
        &[PackageImage {
            img_id: ImageId::FONT.0,
            flags: 0,
            image,
        }],
        &root,
        &key,
    )
    .unwrap();
    let transfer = package.transfers.into_iter().next().unwrap();
    (package.ctrl_packet, transfer)
}

fn dfu_config(image: usize, mtu: usize) -> DfuConfig {
    let (root, uid) = dfu_keys();
    let key = sifli::SigningKey::from_pem(DFU_SIGNING_KEY_PEM).unwrap();
    let font_kib = image.div_ceil(KIB) + 64;
    DfuConfig {
        root_key: root,
        public_key: key.public_key().clone(),
        uid,
        sdk_version: 2_003_000,
        max_value_size: mtu - 3,
        layout: DfuLayout {
            font: Region::kib(108, font_kib as u32),
            ..DfuLayout::SMALL
        },
    }
}

fn dfu_run(link: Link, ctrl: &[u8], transfer: &TransferFile, options: DfuOptions) -> Run {
    let config = dfu_config(transfer.bytes().len(), link.mtu);
    let size = config.layout.font.base + config.layout.font.size;
    let mut flash = sim::dfu::Flash::new(size as usize).unwrap();
    DfuDevice::provision(
        &mut flash,
        &config,
        [&[0x11; 30_000], &[0x22; 8_000], &[0x33; 4_000]],
    )
    .unwrap();
    let device = sim::dfu::Device {
        dev: DfuDevice::new(flash, config, Millis::ZERO).unwrap(),
        restart: false,
        boots: 0,
        power_cuts: 0,
    };
    let package = DfuPackage::new(ctrl.to_vec(), vec![transfer.clone()]).unwrap();
    let options = DfuOptions {
        max_value_size: link.mtu - 3,
        ..options
    };
    let phone = Observed::new(DfuUpdate::new(package, options).unwrap());
    let mut pair = Pair::with_radio(phone, device, link.radio(), Faults::default());
    let done = pair.drive(Span::from_secs(20_000)) && pair.events.contains(&DfuEvent::Done);
    let kbps = rate(
        &pair.central.log,
        transfer.bytes().len(),
        |e| *e == DfuEvent::Stage(DfuStage::Transfer),
        |e| *e == DfuEvent::Stage(DfuStage::Install),
    );
    Run {
        kbps,
        done,
        stats: pair.stats,
    }
}

/// The DFU bound under the ack rule: windows of `rsp` records, each record one
/// IMAGE_SEND_PACKET message cut into values of at most MTU − 3 by the real encoder and
/// fragmenter, each window a stop-and-wait phase ([`phases_us`]) answered by the device's
/// acknowledgement, kB/s.
fn dfu_bound(radio: &Radio, transfer: &TransferFile, rsp: usize) -> f64 {
    // Each record as the flow sends it: one IMAGE_SEND_PACKET, framed and cut by the real
    // encoder and fragmenter.
    let values: Vec<Vec<usize>> = transfer
        .records()
        .enumerate()
        .map(|(i, record)| {
            let message = Message::ImageSendPacket {
                img_id: ImageId(transfer.img_id()),
                pkt_idx: (i + 1) as u16,
                data: record,
            }
            .to_vec()
            .unwrap();
            let mut f = Fragmenter::new(Category::DFU, message, radio.att_mtu - 3).unwrap();
            let (mut out, mut buf) = (Vec::new(), Vec::new());
            while let Some(n) = f.emit_next(&mut buf) {
                out.push(n);
                buf.clear();
            }
            out
        })
        .collect();
    let windows = values
        .chunks(rsp)
        .map(|w| w.iter().flatten().copied().collect::<Vec<usize>>());
    // IMAGE_SEND_PACKET_RESPONSE: a 4-byte header, a 2-byte result, framed: about 10 bytes.
    transfer.bytes().len() as f64 / phases_us(radio, windows, 10) as f64 * 1000.0
}

// ---------------------------------------------------------------------------------------

fn grid() -> Vec<Link> {
    let mut links = Vec::new();
    for phy in [Phy::Le2M, Phy::Le1M] {
        for mtu in [247, 23] {
            for interval_us in [7_500, 30_000] {
                for exchanges in [FILL, 6] {
                    links.push(Link {
                        phy,
                        mtu,
                        interval_us,
                        exchanges,
                        queue: OsQueue::BackPressure,
                    });
                }
            }
        }
    }
    for phy in [Phy::Le2M, Phy::Le1M] {
        links.push(Link {
            phy,
            mtu: 247,
            interval_us: 7_500,
            exchanges: FILL,
            queue: OsQueue::Drop,
        });
    }
    links
}

fn main() {
    let wall = Instant::now();
    let sizes = [(MIB, "1 MiB"), (7 * MIB, "7 MiB")];
    println!("### Link efficiency (simulated BLE link, virtual time)\n");
    println!(
        "Command: `cargo bench -p otaweb --bench link`. Link: `tests/sim` physical model \
         (LL exchange = packet + empty or notification packet + 2 × 150 µs IFS; 2M PHY 251-byte \
         LL packet 1392 µs, 1M 2468 µs; DLE on; exchanges per event as fit the interval, or a \
         cap of 6; OS queue waits (back-pressure, 32 values) or drops (20 values, as macOS / \
         Windows)). Configuration = PHY / ATT MTU / interval / exchanges per event / OS queue. \
         kB = 10^3 B; rates are image bytes over the transfer stage. Capacity = ATT payload of \
         full values back to back. Before = the previous release (gadget: fixed 16 KiB segments, \
         unpaced; dfu: num_of_rsp 20, stop and wait). After = the defaults, told the depth of a \
         dropping queue as the web edge is on macOS and Windows (gadget: segments grow by the \
         measured rate up to 1 MiB, and over a dropping queue ACKed transactions keep 7/8 of \
         it in flight; dfu: windows of 20 records with four in flight, and over a dropping queue two windows within 7/8 of it).\n"
    );
    let mut summary = Vec::new();

    // Gadget
    println!("#### Gadget (AGT OTA)\n");
    println!("| configuration | image | capacity kB/s | AGT bound, tuned segments, kB/s | AGT bound, one segment, T 65535, kB/s | before kB/s | after kB/s | efficiency (after / capacity) | after / bound | target | met |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    // The lowest efficiency overall and at MTU 247: (efficiency, bound / capacity, key).
    let mut worst: [Option<(f64, f64, String)>; 2] = [None, None];
    for (len, name) in sizes {
        let image = image_bytes(len, 7);
        for link in grid() {
            let radio = link.radio();
            let cap = radio.capacity_bytes_per_sec() / 1000.0;
            let before = gadget_run(link, &image, gadget_before());
            let after = gadget_run(link, &image, gadget_after(link));
            let bound = gadget_bound(
                &radio,
                len,
                tuned_segment(link) as usize,
                otaweb_firmware::gadget::DEFAULT_MAX_TRANSACTION_SIZE as usize,
            );
            // The lever the firmware's 64 KiB RAM buffer holds back: the whole image as one
            // segment, T at its 16-bit maximum.
            let bound_whole = gadget_bound(&radio, len, len, usize::from(u16::MAX));
            let eff = after.kbps / cap;
            let met = after.done && eff >= 0.95;
            let loss = dropped_note(&before, &after);
            println!(
                "| {}{loss} | {name} | {cap:.1} | {bound:.1} | {bound_whole:.1} | {} | {} | {eff:.3} | {:.3} | ≥ 0.95 | {} |",
                link.label(),
                before.cell(),
                after.cell(),
                after.kbps / bound,
                if met { "yes" } else { "no" }
            );
            let key = format!("{} {name}", link.label());
            for (i, slot) in worst.iter_mut().enumerate() {
                let counts = i == 0 || link.mtu == 247;
                if counts && slot.as_ref().is_none_or(|(w, _, _)| eff < *w) {
                    *slot = Some((eff, bound / cap, key.clone()));
                }
            }
            let main = link.is_headline();
            if main && len == 7 * MIB {
                summary.push(format!(
                    "SUMMARY| gadget link efficiency, {} {name} | {:.1} kB/s ({eff:.2} of {cap:.1}) | before {} kB/s; web-bluetooth-dfu ≈0.7, Nordic phone 6–9, nRF CDM pipelined 36–71 kB/s | {:.1}× nRF CDM 71 | ≥ 0.95 of capacity | {} |",
                    link.label(), after.kbps, before.cell(), after.kbps / 71.0, if met { "yes" } else { "no" }
                ));
            }
        }
    }
    for (eff, of_cap, key) in worst.into_iter().flatten() {
        // At MTU 23 AGT's own header (3 of every 20 bytes) caps the protocol below 0.95.
        summary.push(format!(
            "SUMMARY| gadget worst configuration, {key} | {eff:.3} of capacity | AGT's own bound there {of_cap:.3} of capacity | {:.3} of the AGT bound | ≥ 0.95 | {} |",
            eff / of_cap,
            if eff >= 0.95 { "yes" } else { "no" }
        ));
    }

    // DFU
    println!("\n#### DFU (SiFli OTA manager)\n");
    println!("| configuration | image | capacity kB/s | stop-and-wait bound, rsp 20, kB/s | bound: stop-and-wait, rsp 255 (dropping queue: the rsp that fits), kB/s | before kB/s | after kB/s | after / capacity | after / bound | target | met |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut worst: Option<(f64, String)> = None;
    for (len, name) in sizes {
        let (ctrl, transfer) = dfu_package(&image_bytes(len, 11));
        for link in grid() {
            let radio = link.radio();
            let cap = radio.capacity_bytes_per_sec() / 1000.0;
            let before = dfu_run(link, &ctrl, &transfer, dfu_before());
            let after = dfu_run(link, &ctrl, &transfer, dfu_after(link));
            let bound_before = dfu_bound(&radio, &transfer, dfu_before().num_of_rsp.into());
            // The protocol's best without pipelining: windows of 255; over a dropping queue,
            // windows of what fits it.
            let bound_rsp = if link.queue == OsQueue::Drop {
                dfu_after(link).num_of_rsp.into()
            } else {
                255
            };
            let bound = dfu_bound(&radio, &transfer, bound_rsp);
            let ratio = after.kbps / bound;
            let met = after.done && ratio >= 0.90;
            let loss = dropped_note(&before, &after);
            println!(
                "| {}{loss} | {name} | {cap:.1} | {bound_before:.1} | {bound:.1} | {} | {} | {:.3} | {ratio:.3} | ≥ 0.90 of bound | {} |",
                link.label(),
                before.cell(),
                after.cell(),
                after.kbps / cap,
                if met { "yes" } else { "no" }
            );
            let key = format!("{} {name}", link.label());
            if worst.as_ref().is_none_or(|(w, _)| ratio < *w) {
                worst = Some((ratio, key.clone()));
            }
            let main = link.is_headline();
            if main && link.phy == Phy::Le2M && len == 7 * MIB {
                summary.push(format!(
                    "SUMMARY| dfu vs its protocol bound, {} {name} | {:.1} kB/s ({ratio:.2} of bound {bound:.1}) | before {} kB/s; web-bluetooth-dfu ≈0.7, Nordic phone 6–9, nRF CDM pipelined 36–71 kB/s | {:.1}× nRF CDM 71 | ≥ 0.90 of bound | {} |",
                    link.label(), after.kbps, before.cell(), after.kbps / 71.0, if met { "yes" } else { "no" }
                ));
            }
        }
    }
    if let Some((ratio, key)) = worst {
        summary.push(format!(
            "SUMMARY| dfu worst configuration, {key} | {ratio:.2} of bound | — | — | ≥ 0.90 | {} |",
            if ratio >= 0.90 { "yes" } else { "no" }
        ));
    }
    println!(
        "\nPeers (PEERS.md): web-bluetooth-dfu ≈0.7 kB/s; Nordic phone DFU library 6–9 kB/s; nRF \
         Connect Device Manager pipelined 36–71 kB/s. Wall time of this grid: {:.1} s.\n",
        wall.elapsed().as_secs_f64()
    );
    for line in summary {
        println!("{line}");
    }
}
