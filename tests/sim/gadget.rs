//! The gadget side of the two-party simulator: the companion firmware's `Gadget` on a
//! simulated flash as the [`Peripheral`], with a tap that reassembles both directions so
//! tests can assert on what crossed the link, and the host loop's boot decision.

use otaweb::flow::gadget::{GadgetEvent, GadgetUpdate};
use otaweb::image::digest::sha256;
use otaweb::image::manifest::{FlowKind, ManifestEntry};
use otaweb::image::signature::ImageSignature;
use otaweb::image::verify::{verify_image, Image, Verified, VerifyPolicy};
use otaweb::time::Millis;
use otaweb::wire::agt::{
    is_pv_packet, Fragment, Reassembler, Received, StreamId, TransportPacket, TransportRepr,
};
use otaweb::wire::agt_proto::{decode_control, Command, ControlPayload, ErrorCode};
use otaweb_firmware::flash::Fixed;
use otaweb_firmware::gadget::{Gadget, GadgetConfig, GadgetEvent as DeviceEvent};
use otaweb_firmware::slots::{BootOutcome, ImageInfo, Layout, Slots};

use super::{Peripheral, Rng, Update};

/// A transaction as it reached the gadget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Control(i32),
    Segment { offset: u32 },
    Apply,
    Alexa,
    Ota(usize),
}

/// What the gadget answered, as it sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    Ack { stream: StreamId, positive: bool },
    Response { command: i32, code: i32 },
}

impl Reply {
    pub fn response(command: Command, code: ErrorCode) -> Reply {
        Reply::Response {
            command: command.into(),
            code: code.into(),
        }
    }
}

/// Where a written value falls, judged from the value alone before it reaches the gadget.
#[derive(Clone, Copy, Debug, Default)]
pub struct Place {
    /// It is a whole UpdateComponentSegment announcing this offset.
    pub announces: Option<u32>,
    /// It is an OTA-stream packet: the offset last announced and its index since then.
    pub ota: Option<(u32, u32)>,
}

/// Rewrites (or, returning false, drops) a value on its way to the gadget: the link going
/// wrong in one chosen way, on top of the simulator's random faults.
pub type Tamper = Box<dyn FnMut(Place, &mut Vec<u8>) -> bool>;

/// Reassembles both directions at the gadget's end, to assert on what crossed the link.
pub struct Tap {
    pub rx: Reassembler,
    pub tx: Reassembler,
    pub seen: Vec<Seen>,
    pub replies: Vec<Reply>,
    pub segment: Option<u32>,
    pub ota_packets: u32,
    /// The component signature of every ApplyFirmware that reached the gadget.
    pub apply_signatures: Vec<String>,
}

impl Tap {
    pub fn new() -> Self {
        Tap {
            rx: Reassembler::new(0xFFFF),
            tx: Reassembler::new(0xFFFF),
            seen: Vec::new(),
            replies: Vec::new(),
            segment: None,
            ota_packets: 0,
            apply_signatures: Vec::new(),
        }
    }

    pub fn place(&self, bytes: &[u8]) -> Place {
        let mut place = Place::default();
        let Ok(packet) = TransportPacket::new_checked(bytes) else {
            return place;
        };
        let Ok(repr) = TransportRepr::parse(&packet) else {
            return place;
        };
        match (repr.stream, repr.fragment) {
            (StreamId::Control, Fragment::First { total_length })
                if usize::from(total_length) == repr.payload.len() =>
            {
                if let Ok(env) = decode_control(repr.payload) {
                    if let Some(ControlPayload::UpdateComponentSegment(seg)) = env.payload {
                        place.announces = Some(seg.component_offset);
                    }
                }
            }
            (StreamId::Ota, _) => place.ota = self.segment.map(|s| (s, self.ota_packets)),
            _ => {}
        }
        place
    }

    pub fn written(&mut self, place: Place, bytes: &[u8]) {
        if let Some(offset) = place.announces {
            self.segment = Some(offset);
            self.ota_packets = 0;
        } else if place.ota.is_some() {
            self.ota_packets += 1;
        }
        let Ok(Received::Transaction(t)) = self.rx.push(bytes) else {
            return;
        };
        self.seen.push(match t.stream {
            StreamId::Ota => Seen::Ota(t.payload.len()),
            StreamId::Alexa => Seen::Alexa,
            StreamId::Control => match decode_control(&t.payload) {
                Ok(env) => match env.payload {
                    Some(ControlPayload::UpdateComponentSegment(seg)) => Seen::Segment {
                        offset: seg.component_offset,
                    },
                    Some(ControlPayload::ApplyFirmware(apply)) => {
                        let info = apply.firmware_information.unwrap_or_default();
                        self.apply_signatures
                            .extend(info.components.into_iter().map(|c| c.signature));
                        Seen::Apply
                    }
                    _ => Seen::Control(env.command),
                },
                Err(_) => Seen::Control(-1),
            },
        });
    }

    pub fn notified(&mut self, bytes: &[u8]) {
        if is_pv_packet(bytes) {
            return;
        }
        match self.tx.push(bytes) {
            Ok(Received::Ack(a)) => self.replies.push(Reply::Ack {
                stream: a.stream,
                positive: a.is_positive(),
            }),
            Ok(Received::Transaction(t)) if t.stream == StreamId::Control => {
                if let Ok(env) = decode_control(&t.payload) {
                    if let Some(r) = env.as_response() {
                        self.replies.push(Reply::Response {
                            command: env.command,
                            code: r.error_code,
                        });
                    }
                }
            }
            _ => {}
        }
    }

    pub fn link_dropped(&mut self) {
        self.rx.reset();
        self.tx.reset();
        self.segment = None;
    }

    pub fn announcements(&self) -> Vec<u32> {
        self.seen
            .iter()
            .filter_map(|s| match s {
                Seen::Segment { offset } => Some(*offset),
                _ => None,
            })
            .collect()
    }

    pub fn count(&self, reply: Reply) -> usize {
        self.replies.iter().filter(|r| **r == reply).count()
    }
}

/// The companion firmware as the simulator's peripheral, with the host loop's restart.
pub struct Device<const W: usize, const E: usize> {
    pub gadget: Option<Gadget<Fixed<W, E>>>,
    pub layout: Layout,
    /// The gadget's configuration, its database's trusted key with it; the boot decision
    /// uses the same database.
    pub config: GadgetConfig,
    pub tap: Tap,
    pub tamper: Option<Tamper>,
    pub restart: bool,
    pub boots: Vec<BootOutcome>,
    /// After each boot: the version running and the SHA-256 of its slot's raw bytes.
    pub ran: Vec<(u32, [u8; 32])>,
    pub power_cuts: u32,
}

impl<const W: usize, const E: usize> Device<W, E> {
    /// A device whose factory region holds `factory` at version 0, booted.
    pub fn provisioned(layout: Layout, factory: &[u8]) -> Self {
        Self::provisioned_at(layout, factory, 0)
    }

    /// A device of the default configuration whose factory region holds `factory` at
    /// `version`, booted. Its flash is the database's window and no more: two index sectors,
    /// the factory region and the default two slots.
    pub fn provisioned_at(layout: Layout, factory: &[u8], version: u32) -> Self {
        Self::provisioned_with(layout, factory, version, GadgetConfig::default())
    }

    /// A device configured by `config` whose factory region holds `factory` (unsigned) at
    /// `version`, booted.
    pub fn provisioned_with(
        layout: Layout,
        factory: &[u8],
        version: u32,
        config: GadgetConfig,
    ) -> Self {
        let capacity = layout.window_len(config.database.slots) as usize;
        let mut flash = Fixed::<W, E>::new(capacity).unwrap();
        let slots = Slots::with_config(layout, config.database.clone(), &flash).unwrap();
        slots
            .provision_factory(&mut flash, factory, version, None)
            .unwrap();
        let mut device = Device {
            gadget: None,
            layout,
            config,
            tap: Tap::new(),
            tamper: None,
            restart: false,
            boots: Vec::new(),
            ran: Vec::new(),
            power_cuts: 0,
        };
        device.boot(flash);
        device.boots.clear();
        device.ran.clear();
        device
    }

    pub fn gadget(&mut self) -> &mut Gadget<Fixed<W, E>> {
        self.gadget.as_mut().expect("a gadget between restarts")
    }

    pub fn flash_ops(&mut self) -> u64 {
        let stats = self.gadget().flash().sim().stats();
        stats.writes + stats.erases
    }

    /// What a bootloader does: the boot decision, then the firmware from the flash. A power
    /// cut during the decision is a reset like any other: power comes back and it runs again.
    pub fn boot(&mut self, mut flash: Fixed<W, E>) {
        let slots = Slots::with_config(self.layout, self.config.database.clone(), &flash).unwrap();
        let boot = loop {
            match slots.boot(&mut flash) {
                Ok(boot) => break boot,
                Err(_) if !flash.sim().is_powered() => self.power_cycle(&mut flash),
                Err(e) => panic!("boot failed: {e:?}"),
            }
        };
        // What boots: a new image runs as a trial until its health check confirms it.
        let active = boot.state.running();
        let range = slots.slot_range(active.slot);
        let start = range.start as usize;
        let digest = sha256(&flash.sim().contents()[start..start + active.size as usize]);
        assert_eq!(digest, active.sha256, "the slot holds what the state says");
        self.boots.push(boot.outcome);
        self.ran.push((active.version, digest));
        self.gadget = Some(Gadget::new(flash, self.layout, self.config.clone()).unwrap());
    }

    pub fn power_cycle(&mut self, flash: &mut Fixed<W, E>) {
        flash.sim_mut().restore_power();
        self.power_cuts += 1;
    }

    /// Power off and on outside any update: the boot decision runs again on what is on the
    /// flash (and checks the image it leaves running against the raw slot bytes).
    pub fn power_on(&mut self) -> ImageInfo {
        let flash = self.gadget.take().unwrap().into_flash();
        self.boot(flash);
        self.gadget().active()
    }

    pub fn contents(&mut self) -> Vec<u8> {
        self.gadget().flash().sim().contents().to_vec()
    }
}

impl<const W: usize, const E: usize> Peripheral for Device<W, E> {
    fn handle_connected(&mut self, now: Millis) {
        self.tap.link_dropped();
        self.gadget().handle_connected(now);
    }

    fn handle_disconnected(&mut self, now: Millis) {
        self.tap.link_dropped();
        self.gadget().handle_disconnected(now);
    }

    fn handle_write(&mut self, now: Millis, bytes: &[u8]) {
        if self.restart {
            // Going down: the firmware no longer reads the radio.
            return;
        }
        let place = self.tap.place(bytes);
        let mut bytes = bytes.to_vec();
        if let Some(tamper) = self.tamper.as_mut() {
            if !tamper(place, &mut bytes) {
                return;
            }
        }
        self.tap.written(place, &bytes);
        let g = self.gadget.as_mut().expect("a gadget between restarts");
        g.handle_write(now, &bytes);
        let mut restart = false;
        while let Some(event) = g.poll_event() {
            let DeviceEvent::RestartRequested { .. } = event;
            restart = true;
        }
        if !g.flash().sim().is_powered() {
            // A power cut takes the whole device down: nothing it queued goes out, it resets.
            let mut lost = Vec::new();
            while g.poll_notify(&mut lost).is_some() {}
            restart = true;
        }
        self.restart |= restart;
    }

    fn poll_notify(&mut self, buf: &mut Vec<u8>) -> Option<usize> {
        let start = buf.len();
        let len = self.gadget().poll_notify(buf)?;
        self.tap.notified(&buf[start..start + len]);
        Some(len)
    }

    fn poll_timeout(&self) -> Option<Millis> {
        None
    }

    fn handle_timeout(&mut self, _now: Millis) {}

    fn take_restart_request(&mut self) -> bool {
        std::mem::take(&mut self.restart)
    }

    fn restart(&mut self, _now: Millis) {
        let mut flash = self.gadget.take().unwrap().into_flash();
        if !flash.sim().is_powered() {
            self.power_cycle(&mut flash);
        }
        self.boot(flash);
    }
}

impl Update for GadgetUpdate {
    fn is_finished(&self) -> bool {
        GadgetUpdate::is_finished(self)
    }

    fn asks_reconnect(event: &GadgetEvent) -> bool {
        *event == GadgetEvent::NeedsReconnect
    }
}

/// Deterministic image bytes (xorshift64*), different per seed.
pub fn image_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The manifest entry of gadget image "app" at `version` for `bytes`.
pub fn entry(bytes: &[u8], version: u32, signature: Option<ImageSignature>) -> ManifestEntry {
    ManifestEntry {
        name: "app".to_string(),
        flow: FlowKind::Gadget,
        version: version.to_string(),
        url: "app.bin".to_string(),
        size: bytes.len() as u64,
        sha256: sha256(bytes),
        md5: None,
        signature,
        compression: None,
    }
}

pub fn verified(bytes: &[u8], version: u32) -> Verified<Image> {
    let entry = entry(bytes, version, None);
    verify_image(bytes, &entry, &VerifyPolicy::danger_accept_unsigned()).unwrap()
}
