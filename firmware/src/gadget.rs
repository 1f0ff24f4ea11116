//! The Alexa Gadgets (AGT) OTA responder: the gadget side of the gadget flow, sans-IO.
//!
//! Contract. A [`Gadget`] owns the flash and its image database ([`Slots`]); the host loop
//! owns the BLE link and feeds it, as the core's flows are fed:
//!
//! - [`Gadget::handle_connected`] when the central enables notifications: queues the PV
//!   packet. [`Gadget::handle_disconnected`] when the link drops.
//! - [`Gadget::handle_write`] with each value written to the TX characteristic.
//! - After every input, [`Gadget::poll_notify`] until `None`, notifying each value on RX in
//!   order (one transport packet, or the PV packet, per call); then [`Gadget::poll_event`].
//!   On [`GadgetEvent::RestartRequested`] the host sends what is queued, drops the link,
//!   runs [`Slots::boot`] and builds a new `Gadget` from the flash ([`Gadget::into_flash`]).
//!
//! The gadget keeps no timers, so there is no `poll_timeout`; `now` is taken for the shape
//! the core's flows share. No input panics it; a flash error becomes an INTERNAL response.
//!
//! Behaviour, as both sides of this project implement it (`gadget.md` §8 and the orchestrator's
//! module docs in `otaweb::flow::gadget`):
//!
//! | Input | Answer |
//! |---|---|
//! | connect | PV packet: version 3.0, packet size P, transaction size T |
//! | transport fault | the [`Reassembler`]'s NACK (result 0x01) |
//! | control 20 / 28 | `Response{DeviceInformation}` / `Response{DeviceFeatures{0x13}}` |
//! | Alexa Discover | Discover.Response, firmwareVersion = active OTA version in decimal |
//! | control 94 | ACK, or NACK 0x03 if the segment cannot be taken (below) |
//! | OTA bytes | appended to the open segment; NACK 0x01 without one or past its size; when complete: `Response{94, SUCCESS \| INVALID \| INTERNAL}` |
//! | control 95 | ACK then `Response{95, SUCCESS \| INVALID \| INTERNAL}`, NACK 0x03 if unusable |
//! | other control | `Response{UNSUPPORTED}`, echoing the command |
//!
//! A transaction with the ACK flag is ACKed after it is processed and before any protobuf
//! reply (EMB's order), unless it was NACKed. A request that must be refused but did not ask
//! for an ACK is answered `Response{INVALID}` instead, so the orchestrator never waits in vain.
//!
//! Segments. UpdateComponentSegment is taken if its bounds pass
//! [`UpdateComponentSegment::validate`], its name is not empty, its size is 1 to
//! [`MAX_SEGMENT_SIZE`] bytes, it ends within a slot, its signature parses, and either its offset is 0 (a fresh staging of
//! that component, discarding any other) and the database has a slot for a download
//! ([`State::download_slot`]), or it names the component being staged at an offset no
//! greater than the bytes held. Taking it rewinds the bytes held to its offset. The segment
//! is hashed as it arrives and buffered in RAM, at most [`SEGMENT_BUFFER`] bytes: a segment
//! up to that size is written once complete and its hash checked, a larger one in pieces of
//! that size as they fill (AGT bounds a segment only by its `uint32` size field, and each
//! segment costs two round trips, so large ones keep the link busy), the rest once
//! complete. Each write goes to the download's slot with [`Slots::download`] (the first of a
//! fresh staging begins the download with [`Slots::begin_download`], named after the
//! component), which keeps the bytes before the offset. A mismatch leaves the bytes held at
//! the segment's offset (pieces already written are dropped from the database); a flash
//! error leaves them at the start of the sector holding the offset, as that sector may be
//! erased. Pieces written count as held until the segment ends, so a cut in between resumes
//! at most there; the orchestrator resumes at its last confirmed segment, and the apply's
//! SHA-256 covers every byte.
//!
//! Staging lives in the database: every completed segment records the bytes held, so a
//! staged image survives a dropped link and a restart alike. [`Gadget::new`] reads the
//! download in progress back ([`Gadget::staged`]), and the orchestrator's resume or a later
//! ApplyFirmware (its "stage only, apply later") goes on from it.
//!
//! Apply. ApplyFirmware needs `firmware_information` with one component, and
//! `firmware_information.version` must be greater than the running version and equal the
//! component's version (one component, one version: nothing else in the message checks the
//! version, so a garbled copy of either is refused rather than installed as the version
//! label; the fault campaign found an image installed as version 66). The component's
//! signature names the image's SHA-256 and, for a signed image, its ECDSA signature (below).
//! Apply succeeds if the database already holds that image verified (same version, size and
//! SHA-256, and with a trusted key the same signature: a restart came between its
//! verification and its apply), or if the bytes held equal the component's size and their
//! SHA-256 read back from flash equals the component's; the staged image is then finished
//! with that SHA-256 and signature, verified and applied ([`Slots::finish_download`],
//! [`Slots::verify`], [`Slots::apply`]). A digest mismatch changes nothing in the database,
//! so the staging can still be completed or rewound. The gadget asks for a restart whatever
//! `restart_required` says, since only the boot decision starts an image. Names are not
//! compared: the digest decides. After a successful apply, further segments are refused so
//! the pending image stays as verified.
//!
//! Signatures: our extension of `FirmwareComponent.signature`, an undocumented field
//! (`gadget.md` §5, §7.3: "SHA-256 encoded Base64", \[INF\]; the encoding is
//! [`ComponentSignature`], shared with the orchestrator, whose module docs describe it too).
//! Its text decodes to 32 bytes, the image's SHA-256 (44 characters of Base64, or 64 hex
//! digits), or to 96, that SHA-256 then the ECDSA P-256 `r‖s` of the image's manifest entry
//! (128 characters of Base64); anything else is INVALID. The signature goes into
//! [`ImageMeta::signature`], so the database checks it with [`DbConfig::trusted_key`]: ECDSA
//! over the SHA-256 it computes from the flash, which is what the manifest signature covers
//! (ECDSA-P256-SHA256 of the image bytes, `otaweb::image::signature`), when it verifies the
//! image and again in the boot decision before the image runs ([`Slots::boot`]: FellBack if
//! it fails). With a trusted key, an apply without a signature is INVALID at once (nothing
//! written, the staging kept), and one whose signature fails leaves the image invalid in the
//! database and the staging gone: never verified, never booted. Without a key both forms
//! are taken and only the digest decides; a signature is recorded with the image.
//!
//! Health check. The restart boots the applied image as a trial ([`crate::slots`]); it
//! becomes valid only when confirmed, else the next boot rolls back. With
//! [`GadgetConfig::confirm_on_discover`] (the default) the gadget confirms it when it answers
//! an Alexa Discover: that is what the orchestrator sends after the restart to check the
//! version, and answering it shows that the image boots, its radio and AGT stack work and
//! the flash takes writes, so it can be updated again, which is what a bad update must never
//! take away. If the confirmation cannot be written, Discover goes unanswered and the
//! orchestrator asks again. A host with a health check of its own turns the option off and
//! calls [`Gadget::confirm`] or [`Gadget::health_failed`].

use alloc::collections::VecDeque;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use embedded_storage::nor_flash::NorFlash;
use otaweb::image::digest::{DigestAlg, DigestValue, Hasher};
use otaweb::time::Millis;
use otaweb::wire::agt::{
    AckRepr, Completed, Fragmenter, Limits, PvPacket, PvRepr, Reassembler, Received, ResultCode,
    StreamId, TransactionId, TransportPacket, MAX_TRANSACTION_LEN, MIN_PACKET_SIZE,
};
use otaweb::wire::agt_proto::{
    decode_control, parse_segment_signature, peek_directive_header, ApplyFirmware, Command,
    ComponentSignature, ControlEnvelope, ControlPayload, DeviceFeatures, DeviceInformation,
    DiscoverResponseEvent, ErrorCode, Response, ResponsePayload, Transport, UpdateComponentSegment,
};

use crate::slots::{
    DbConfig, ImageInfo, ImageMeta, ImageState, Layout, LayoutError, Name, Slot, SlotError, Slots,
    State,
};

/// The default packet size P: ATT MTU 247 less the 3-byte ATT header.
pub const DEFAULT_PACKET_SIZE: u16 = 244;
/// The default transaction size T.
pub const DEFAULT_MAX_TRANSACTION_SIZE: u16 = 5000;
/// The largest packet size: the largest value Web Bluetooth carries.
pub const MAX_PACKET_SIZE: u16 = 512;
/// The largest segment taken, in bytes: 16 MiB, beyond AGT's 7 MB image limit (§7.1).
pub const MAX_SEGMENT_SIZE: u32 = 0x100_0000;
/// The segment bytes held in RAM at most; a larger segment is written in pieces this size.
pub const SEGMENT_BUFFER: usize = 0x1_0000;
/// The feature bits reported: AGT, OTA and bit 4: 0x13, as EMB sends (§5).
pub const FEATURES: u64 = DeviceFeatures::AGT | DeviceFeatures::OTA | 1 << 4;

/// Who the gadget is and the limits it announces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GadgetConfig {
    /// P: the largest packet, header included, from [`MIN_PACKET_SIZE`] to [`MAX_PACKET_SIZE`].
    pub packet_size: u16,
    /// T: the largest transaction payload the gadget buffers; at least 1.
    pub max_transaction_size: u16,
    /// Human-readable name, reported in DeviceInformation and as the endpoint's name.
    pub name: String,
    /// Serial number, reported in DeviceInformation and as the endpoint ID.
    pub serial_number: String,
    /// Amazon device-type ID reported in DeviceInformation.
    pub device_type: String,
    /// The image database: its slot count and trusted key. With a key, only images whose
    /// ApplyFirmware carries a signature by it are installed (module docs, "Signatures").
    pub database: DbConfig,
    /// Whether answering Discover confirms an image on trial (module docs); if not, the
    /// host calls [`Gadget::confirm`] or [`Gadget::health_failed`].
    pub confirm_on_discover: bool,
}

impl Default for GadgetConfig {
    fn default() -> Self {
        GadgetConfig {
            packet_size: DEFAULT_PACKET_SIZE,
            max_transaction_size: DEFAULT_MAX_TRANSACTION_SIZE,
            name: "otaweb demo".to_string(),
            serial_number: "OTAWEB0001".to_string(),
            device_type: "OTAWEBDEMO".to_string(),
            database: DbConfig::default(),
            confirm_on_discover: true,
        }
    }
}

/// Why a [`Gadget`] could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupError<E> {
    /// The packet size is outside [`MIN_PACKET_SIZE`]..=[`MAX_PACKET_SIZE`].
    PacketSize,
    /// The transaction size is zero.
    TransactionSize,
    /// The slot layout does not fit the flash.
    Layout(LayoutError),
    /// The database could not be read.
    Slots(SlotError<E>),
}

impl<E: fmt::Display> fmt::Display for SetupError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::PacketSize => write!(
                f,
                "packet size must be {MIN_PACKET_SIZE}..={MAX_PACKET_SIZE}"
            ),
            SetupError::TransactionSize => f.write_str("transaction size must not be zero"),
            SetupError::Layout(e) => write!(f, "{e}"),
            SetupError::Slots(e) => write!(f, "{e}"),
        }
    }
}

/// What the gadget asks of its host loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GadgetEvent {
    /// An image was applied, or failed its health check: send what is queued, then restart
    /// through the boot decision.
    RestartRequested {
        /// The OTA version that should run after the restart (on trial, if just applied).
        version: u32,
    },
}

/// The component being staged, how much of it the gadget takes as held, and its slot once
/// the download has begun in the database.
#[derive(Clone, Debug)]
struct Staging {
    name: Name,
    held: u32,
    slot: Option<Slot>,
}

/// An announced segment whose bytes are arriving on the OTA stream.
#[derive(Clone, Debug)]
struct Segment {
    offset: u32,
    size: u32,
    sha256: [u8; 32],
    /// Every byte received, hashed.
    hasher: Hasher,
    /// Received and not yet written.
    bytes: Vec<u8>,
    /// Written to the slot from `offset` on.
    written: u32,
}

impl Segment {
    fn received(&self) -> usize {
        self.written as usize + self.bytes.len()
    }
}

/// The AGT gadget responder over a NOR flash; see the module docs for the poll order.
#[derive(Debug)]
pub struct Gadget<F: NorFlash> {
    flash: F,
    slots: Slots,
    config: GadgetConfig,
    /// The database as last read or written.
    state: State,
    reassembler: Reassembler,
    outbox: VecDeque<Vec<u8>>,
    events: VecDeque<GadgetEvent>,
    next_transaction: TransactionId,
    staging: Option<Staging>,
    segment: Option<Segment>,
    /// An image was applied or rejected: no segment is taken until the restart.
    restarting: bool,
}

impl<F: NorFlash> Gadget<F> {
    /// A gadget over `flash` laid out by `layout` with the database `config.database`,
    /// running the image the database names and holding the download it records. Run
    /// [`Slots::boot`] first, as a bootloader would; until then a pending or retiring image
    /// counts as applied and no segment is taken.
    pub fn new(
        mut flash: F,
        layout: Layout,
        config: GadgetConfig,
    ) -> Result<Self, SetupError<F::Error>> {
        if !(MIN_PACKET_SIZE..=MAX_PACKET_SIZE).contains(&config.packet_size) {
            return Err(SetupError::PacketSize);
        }
        if config.max_transaction_size == 0 {
            return Err(SetupError::TransactionSize);
        }
        let slots = Slots::with_config(layout, config.database.clone(), &flash)
            .map_err(SetupError::Layout)?;
        let state = slots.state(&mut flash).map_err(SetupError::Slots)?;
        let staging = state.download().map(|d| Staging {
            name: d.name,
            held: d.size,
            slot: Some(d.slot),
        });
        // A pending image not yet booted is already applied, and a retiring one waits for
        // the restart that leaves it: either way the host has not booted yet.
        let restarting = state.pending.is_some() || state.retiring.is_some();
        Ok(Gadget {
            flash,
            slots,
            reassembler: Reassembler::new(config.max_transaction_size),
            config,
            state,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            next_transaction: TransactionId::ZERO,
            staging,
            segment: None,
            restarting,
        })
    }

    /// The running image: on trial after an update until it is confirmed.
    #[must_use]
    pub fn active(&self) -> ImageInfo {
        self.state.running()
    }

    /// The component being staged and the bytes of it held in its slot.
    #[must_use]
    pub fn staged(&self) -> Option<(&str, u32)> {
        self.staging.as_ref().map(|s| (s.name.as_str(), s.held))
    }

    /// The image database as last read or written: every slot's entry and the pointers.
    #[must_use]
    pub fn database(&self) -> &State {
        &self.state
    }

    /// Whether an image was applied (or failed its health check) and the gadget waits to be
    /// restarted.
    #[must_use]
    pub fn restart_requested(&self) -> bool {
        self.restarting
    }

    /// The host's health check passed: the image on trial becomes the valid one.
    pub fn confirm(&mut self) -> Result<(), SlotError<F::Error>> {
        self.state = self.slots.confirm(&mut self.flash)?;
        Ok(())
    }

    /// The host's health check failed: the image on trial is marked invalid and the gadget
    /// asks for the restart that boots the valid image again.
    pub fn health_failed(&mut self) -> Result<(), SlotError<F::Error>> {
        self.state = self.slots.health_failed(&mut self.flash)?;
        // The failed image still runs from its slot, which no segment may now overwrite.
        self.segment = None;
        self.restarting = true;
        self.events.push_back(GadgetEvent::RestartRequested {
            version: self.state.active.version,
        });
        Ok(())
    }

    /// The flash, for inspection.
    #[must_use]
    pub fn flash(&self) -> &F {
        &self.flash
    }

    /// The flash, for fault injection.
    pub fn flash_mut(&mut self) -> &mut F {
        &mut self.flash
    }

    /// Gives the flash back, as a restart does.
    #[must_use]
    pub fn into_flash(self) -> F {
        self.flash
    }

    /// The central enabled notifications: queues the PV packet.
    pub fn handle_connected(&mut self, _now: Millis) {
        self.drop_link_state();
        let pv = PvRepr::new(self.config.packet_size, self.config.max_transaction_size);
        let mut buf = alloc::vec![0; pv.buffer_len()];
        // Sized by buffer_len, so emit cannot fail.
        if pv.emit(&mut PvPacket::new_unchecked(&mut buf)).is_ok() {
            self.outbox.push_back(buf);
        }
    }

    /// The link dropped: open transactions, the open segment and unsent notifications are
    /// void; the staged bytes stay.
    pub fn handle_disconnected(&mut self, _now: Millis) {
        self.drop_link_state();
    }

    /// One value written by the central to the TX characteristic.
    pub fn handle_write(&mut self, _now: Millis, bytes: &[u8]) {
        match self.reassembler.push(bytes) {
            Ok(Received::Transaction(t)) => self.on_transaction(t),
            // We never ask for ACKs, so an ACK or NACK from the central needs nothing.
            Ok(Received::Ack(_) | Received::Partial) => {}
            Err(e) => {
                if let Some(nack) = e.nack() {
                    self.queue_ack(nack);
                }
            }
        }
    }

    /// Appends the next value to notify on RX to `buf` and returns its length, or `None`.
    #[must_use]
    pub fn poll_notify(&mut self, buf: &mut Vec<u8>) -> Option<usize> {
        let packet = self.outbox.pop_front()?;
        buf.extend_from_slice(&packet);
        Some(packet.len())
    }

    /// The next request to the host loop, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<GadgetEvent> {
        self.events.pop_front()
    }

    fn drop_link_state(&mut self) {
        self.reassembler.reset();
        self.outbox.clear();
        self.segment = None;
    }

    fn on_transaction(&mut self, t: Completed) {
        match t.stream {
            StreamId::Control => self.on_control(&t),
            StreamId::Alexa => self.on_alexa(&t),
            StreamId::Ota => self.on_ota(&t),
        }
    }

    fn on_control(&mut self, t: &Completed) {
        let Ok(envelope) = decode_control(&t.payload) else {
            return self.refuse(t, Command::None.into());
        };
        match Command::try_from(envelope.command) {
            Ok(Command::GetDeviceInformation) => {
                self.ack(t);
                let info = DeviceInformation {
                    serial_number: self.config.serial_number.clone(),
                    name: self.config.name.clone(),
                    supported_transports: alloc::vec![Transport::BluetoothLowEnergy.into()],
                    device_type: self.config.device_type.clone(),
                };
                self.reply(
                    Command::GetDeviceInformation.into(),
                    ErrorCode::Success,
                    Some(ResponsePayload::DeviceInformation(info)),
                );
            }
            Ok(Command::GetDeviceFeatures) => {
                self.ack(t);
                let features = DeviceFeatures {
                    features: FEATURES,
                    // We parse the signed component signature: ask for it.
                    device_attributes: DeviceFeatures::SIGNED_APPLY,
                };
                self.reply(
                    Command::GetDeviceFeatures.into(),
                    ErrorCode::Success,
                    Some(ResponsePayload::DeviceFeatures(features)),
                );
            }
            Ok(Command::UpdateComponentSegment) => match envelope.payload {
                Some(ControlPayload::UpdateComponentSegment(seg)) => self.on_segment(t, &seg),
                _ => self.refuse(t, envelope.command),
            },
            Ok(Command::ApplyFirmware) => match envelope.payload {
                Some(ControlPayload::ApplyFirmware(apply)) => self.on_apply(t, &apply),
                _ => self.refuse(t, envelope.command),
            },
            Ok(Command::None) | Err(_) => {
                self.ack(t);
                self.reply(envelope.command, ErrorCode::Unsupported, None);
            }
        }
    }

    fn on_segment(&mut self, t: &Completed, seg: &UpdateComponentSegment) {
        // A new announcement supersedes a segment still arriving, accepted or not.
        self.segment = None;
        match self.accept_segment(seg) {
            Some((segment, name)) => {
                if segment.offset == 0 {
                    // The download begins in the database when this segment is complete.
                    self.staging = Some(Staging {
                        name,
                        held: 0,
                        slot: None,
                    });
                } else {
                    self.set_held(segment.offset);
                }
                self.segment = Some(segment);
                self.ack(t);
            }
            None => self.refuse(t, Command::UpdateComponentSegment.into()),
        }
    }

    /// The segment to open for `seg` and its component's name, or `None` if the rules in
    /// the module docs refuse it.
    fn accept_segment(&self, seg: &UpdateComponentSegment) -> Option<(Segment, Name)> {
        if self.restarting || seg.validate().is_err() || seg.component_name.is_empty() {
            return None;
        }
        let name = Name::new(&seg.component_name)?;
        let (offset, size) = (seg.component_offset, seg.segment_size);
        if size == 0 || size > MAX_SEGMENT_SIZE {
            return None;
        }
        if offset.checked_add(size)? > self.slots.layout().slot_size {
            return None;
        }
        let sha256 = parse_segment_signature(&seg.segment_signature).ok()?;
        if offset == 0 {
            self.state.download_slot()?;
        } else {
            let staging = self.staging.as_ref()?;
            if staging.name != name || offset > staging.held {
                return None;
            }
        }
        let segment = Segment {
            offset,
            size,
            sha256,
            hasher: Hasher::new(DigestAlg::Sha256),
            bytes: Vec::with_capacity((size as usize).min(SEGMENT_BUFFER)),
            written: 0,
        };
        Some((segment, name))
    }

    fn on_ota(&mut self, t: &Completed) {
        let Some(segment) = self.segment.as_mut() else {
            return self.queue_ack(AckRepr::nack(
                t.stream,
                t.transaction_id,
                ResultCode::Unknown,
            ));
        };
        if segment.received() + t.payload.len() > segment.size as usize {
            return self.queue_ack(AckRepr::nack(
                t.stream,
                t.transaction_id,
                ResultCode::Unknown,
            ));
        }
        segment.hasher.update(&t.payload);
        segment.bytes.extend_from_slice(&t.payload);
        let complete = segment.received() == segment.size as usize;
        let full = segment.bytes.len() >= SEGMENT_BUFFER;
        self.ack(t);
        if complete {
            self.finish_segment();
        } else if full {
            self.write_piece();
        }
    }

    /// Writes the buffered part of a segment larger than [`SEGMENT_BUFFER`] before its
    /// hash can be checked; a flash error ends the segment with INTERNAL.
    fn write_piece(&mut self) {
        let Some(segment) = self.segment.as_mut() else {
            return;
        };
        let at = segment.offset + segment.written;
        let bytes = core::mem::take(&mut segment.bytes);
        let len = bytes.len() as u32;
        if self.store(at, &bytes).is_ok() {
            if let Some(segment) = self.segment.as_mut() {
                segment.written += len;
                segment.bytes = bytes;
                segment.bytes.clear();
            }
        } else if let Some(segment) = self.segment.take() {
            self.flash_failed(segment.offset);
        }
    }

    /// Checks and writes the complete open segment and answers command 94.
    fn finish_segment(&mut self) {
        let Some(segment) = self.segment.take() else {
            return;
        };
        let code = if segment.hasher.finalize() != DigestValue::Sha256(segment.sha256) {
            if segment.written > 0 {
                self.rewind(segment.offset);
            }
            self.set_held(segment.offset);
            ErrorCode::Invalid
        } else if self
            .store(segment.offset + segment.written, &segment.bytes)
            .is_ok()
        {
            ErrorCode::Success
        } else {
            return self.flash_failed(segment.offset);
        };
        self.reply(Command::UpdateComponentSegment.into(), code, None);
    }

    /// A write of the segment at `offset` failed: INTERNAL.
    fn flash_failed(&mut self, offset: u32) {
        // The sector holding the offset may have been erased with its head.
        let es = self.slots.layout().erase_size;
        self.set_held(offset - offset % es);
        self.refresh();
        self.reply(
            Command::UpdateComponentSegment.into(),
            ErrorCode::Internal,
            None,
        );
    }

    /// Drops the pieces of a failed segment from the database: the bytes held end at
    /// `offset` again.
    fn rewind(&mut self, offset: u32) {
        if let Some(slot) = self.staging.as_ref().and_then(|s| s.slot) {
            match self.slots.download(&mut self.flash, slot, offset, &[]) {
                Ok(state) => self.state = state,
                Err(_) => self.refresh(),
            }
        }
    }

    /// Writes `bytes` of a segment at `offset` of the download, beginning it first for a
    /// fresh staging.
    fn store(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SlotError<F::Error>> {
        let Some(staging) = self.staging.as_mut() else {
            return Err(SlotError::WrongState);
        };
        let slot = match staging.slot {
            Some(slot) => slot,
            None => {
                self.state = self
                    .slots
                    .begin_download(&mut self.flash, staging.name.as_str())?;
                let slot = self.state.download().ok_or(SlotError::WrongState)?.slot;
                staging.slot = Some(slot);
                slot
            }
        };
        self.state = self.slots.download(&mut self.flash, slot, offset, bytes)?;
        staging.held = offset + bytes.len() as u32;
        Ok(())
    }

    /// Rereads the database after a failed write, which may or may not have landed.
    fn refresh(&mut self) {
        if let Ok(state) = self.slots.state(&mut self.flash) {
            self.state = state;
        }
    }

    fn set_held(&mut self, held: u32) {
        if let Some(staging) = self.staging.as_mut() {
            staging.held = held;
        }
    }

    fn on_apply(&mut self, t: &Completed, apply: &ApplyFirmware) {
        let usable = apply.validate().is_ok()
            && apply
                .firmware_information
                .as_ref()
                .is_some_and(|info| info.components.len() == 1);
        if !usable {
            return self.refuse(t, Command::ApplyFirmware.into());
        }
        // No segment bytes may land in the slot once it is judged.
        self.segment = None;
        self.ack(t);
        let code = self.check_and_mark(apply);
        self.reply(Command::ApplyFirmware.into(), code, None);
    }

    /// Judges the image `apply` names and marks it pending if it passes.
    fn check_and_mark(&mut self, apply: &ApplyFirmware) -> ErrorCode {
        let Some(info) = apply.firmware_information.as_ref() else {
            return ErrorCode::Invalid;
        };
        let Some(component) = info.components.first() else {
            return ErrorCode::Invalid;
        };
        let Ok(expected) = ComponentSignature::parse(&component.signature) else {
            return ErrorCode::Invalid;
        };
        // One component, one version: a copy that disagrees was garbled on the way, and
        // installing under it would mislabel the image (and refuse later updates as
        // downgrades).
        if info.version <= self.active().version || component.version != info.version {
            return ErrorCode::Invalid;
        }
        // The database would refuse it too, after hashing the slot; this writes nothing.
        if self.config.database.trusted_key.is_some() && expected.ecdsa.is_none() {
            return ErrorCode::Invalid;
        }
        let meta = ImageMeta {
            version: info.version,
            size: component.size,
            sha256: expected.sha256,
            signature: expected.ecdsa.map(|s| s.to_bytes()),
        };
        match self.install(meta) {
            Ok(true) => {}
            // A trial not yet confirmed cannot be updated over: a refusal, not a fault.
            Ok(false) | Err(SlotError::WrongState) => return ErrorCode::Invalid,
            Err(_) => {
                self.refresh();
                return ErrorCode::Internal;
            }
        }
        self.restarting = true;
        self.events.push_back(GadgetEvent::RestartRequested {
            version: info.version,
        });
        ErrorCode::Success
    }

    /// Marks the image `meta` describes pending: one the database holds verified already
    /// (with a trusted key, under the same signature), else the staged one if its bytes
    /// match and the database verifies it. `false` if neither is it.
    fn install(&mut self, meta: ImageMeta) -> Result<bool, SlotError<F::Error>> {
        let keyed = self.config.database.trusted_key.is_some();
        let verified = self.state.images.iter().find(|i| {
            i.state == ImageState::Verified
                && (i.version, i.size, i.sha256) == (meta.version, meta.size, meta.sha256)
                && (!keyed || i.signature == meta.signature)
        });
        let slot = match verified {
            Some(image) => image.slot,
            None => {
                let staged = self.staging.as_ref().filter(|s| s.held == meta.size);
                let Some(slot) = staged.and_then(|s| s.slot) else {
                    return Ok(false);
                };
                if self.slots.image_digest(&mut self.flash, slot, meta.size)? != meta.sha256 {
                    return Ok(false);
                }
                self.slots.finish_download(&mut self.flash, slot, meta)?;
                self.state = self.slots.verify(&mut self.flash, slot)?;
                if self.state.images[usize::from(slot.index())].state != ImageState::Verified {
                    // Refused for its signature: the staged bytes are no use any more.
                    self.staging = None;
                    return Ok(false);
                }
                slot
            }
        };
        self.state = self.slots.apply(&mut self.flash, slot)?;
        Ok(true)
    }

    fn on_alexa(&mut self, t: &Completed) {
        match peek_directive_header(&t.payload) {
            Ok(header) => {
                self.ack(t);
                if header.is_discover() {
                    let on_trial = self.state.trial.is_some();
                    if self.config.confirm_on_discover && on_trial && self.confirm().is_err() {
                        // Unconfirmed, the image must not look installed: no answer, so the
                        // orchestrator asks again.
                        self.refresh();
                        return;
                    }
                    let version = self.active().version.to_string();
                    let event = DiscoverResponseEvent::new(
                        &self.config.serial_number,
                        &self.config.name,
                        &version,
                    );
                    self.send(StreamId::Alexa, &event.to_bytes());
                }
            }
            Err(_) => {
                if t.ack_requested {
                    self.queue_ack(AckRepr::nack(
                        t.stream,
                        t.transaction_id,
                        ResultCode::Unsupported,
                    ));
                }
            }
        }
    }

    /// Refuses a control request: NACK 0x03 if it asked for an ACK, else `Response{INVALID}`.
    fn refuse(&mut self, t: &Completed, command: i32) {
        if t.ack_requested {
            self.queue_ack(AckRepr::nack(
                t.stream,
                t.transaction_id,
                ResultCode::Unsupported,
            ));
        } else {
            self.reply(command, ErrorCode::Invalid, None);
        }
    }

    /// ACKs `t` if it asked for an answer.
    fn ack(&mut self, t: &Completed) {
        if t.ack_requested {
            self.queue_ack(AckRepr::ack(t.stream, t.transaction_id));
        }
    }

    fn queue_ack(&mut self, ack: AckRepr) {
        let mut buf = alloc::vec![0; ack.buffer_len()];
        // Sized by buffer_len, so emit cannot fail.
        if ack
            .emit(&mut TransportPacket::new_unchecked(&mut buf))
            .is_ok()
        {
            self.outbox.push_back(buf);
        }
    }

    /// Queues a control-stream reply echoing `command` (kept raw, so unknown ones echo too).
    fn reply(&mut self, command: i32, code: ErrorCode, payload: Option<ResponsePayload>) {
        let envelope = ControlEnvelope {
            command,
            payload: Some(ControlPayload::Response(Response {
                error_code: code.into(),
                payload,
            })),
        };
        self.send(StreamId::Control, &envelope.to_bytes());
    }

    /// Queues `payload` as the next transaction of our own on `stream`, without the ACK flag.
    fn send(&mut self, stream: StreamId, payload: &[u8]) {
        let limits = Limits {
            packet_size: self.config.packet_size,
            // The central reassembles up to the 16-bit total; our replies are far smaller.
            max_transaction_size: MAX_TRANSACTION_LEN as u16,
        };
        let id = self.next_transaction;
        self.next_transaction = id.next();
        // Only a payload over 64 KiB fails here, and no reply comes near that.
        let Ok(mut fragmenter) = Fragmenter::new(stream, id, payload, false, limits) else {
            return;
        };
        let mut buf = Vec::new();
        while let Some(len) = fragmenter.emit_next(&mut buf) {
            self.outbox.push_back(buf.split_off(buf.len() - len));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flash::{Fixed, SimFlash};
    use crate::slots::{BootOutcome, Slot};
    use otaweb::image::digest::sha256;
    use otaweb::image::signature::{ImageSignature, PublicKey, SIGNATURE_LEN};
    use otaweb::wire::agt::is_pv_packet;
    use otaweb::wire::agt_proto::{decode_discover_response, segment_signature, DiscoverDirective};
    use std::vec::Vec;

    type Flash = Fixed<4, 4096>;

    /// 4 KiB sectors; the factory region and slots of 8 sectors (32 KiB).
    const LAYOUT: Layout = Layout {
        base: 0,
        erase_size: 4096,
        write_size: 4,
        slot_size: 8 * 4096,
    };

    const NOW: Millis = Millis(0);

    fn image(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| ((i * 7 + i / 251) as u8) ^ seed).collect()
    }

    /// Room for the index, the factory region and the default two slots.
    const FLASH_SIZE: usize = (2 + 3 * 8) * 4096;

    /// A provisioned, booted gadget running a 3000-byte factory image at version 0, with
    /// the default database of two slots besides the factory region.
    fn gadget() -> Gadget<Flash> {
        gadget_with(GadgetConfig::default())
    }

    /// [`gadget`] with `config`.
    fn gadget_with(config: GadgetConfig) -> Gadget<Flash> {
        let mut flash = Flash::new(FLASH_SIZE).unwrap();
        let slots = Slots::with_config(LAYOUT, config.database.clone(), &flash).unwrap();
        slots.provision(&mut flash, &image(3000, 0x5A)).unwrap();
        restart_with(flash, config)
    }

    /// The host loop's restart: the boot decision, then a new gadget from the flash.
    fn restart(flash: Flash) -> Gadget<Flash> {
        restart_with(flash, GadgetConfig::default())
    }

    /// [`restart`] of a gadget configured with `config`.
    fn restart_with(mut flash: Flash, config: GadgetConfig) -> Gadget<Flash> {
        Slots::with_config(LAYOUT, config.database.clone(), &flash)
            .unwrap()
            .boot(&mut flash)
            .unwrap();
        Gadget::new(flash, LAYOUT, config).unwrap()
    }

    /// A notification as the orchestrator sees it.
    #[derive(Debug, PartialEq)]
    enum Note {
        Pv(PvRepr),
        Ack(AckRepr),
        Control(ControlEnvelope),
        Alexa(Vec<u8>),
    }

    /// The orchestrator's end of the link, built from the wire module.
    struct Central {
        txn: TransactionId,
        rx: Reassembler,
        limits: Limits,
    }

    impl Central {
        fn new() -> Self {
            Central {
                txn: TransactionId::ZERO,
                rx: Reassembler::new(0xFFFF),
                limits: Limits {
                    packet_size: DEFAULT_PACKET_SIZE,
                    max_transaction_size: DEFAULT_MAX_TRANSACTION_SIZE,
                },
            }
        }

        /// Sends one transaction and returns what the gadget notified in answer.
        fn send(
            &mut self,
            g: &mut Gadget<Flash>,
            stream: StreamId,
            payload: &[u8],
            ack: bool,
        ) -> Vec<Note> {
            let id = self.txn;
            self.txn = id.next();
            let mut f = Fragmenter::new(stream, id, payload, ack, self.limits).unwrap();
            let mut buf = Vec::new();
            while let Some(len) = f.emit_next(&mut buf) {
                assert!(len <= usize::from(self.limits.packet_size));
                g.handle_write(NOW, &buf);
                buf.clear();
            }
            self.drain(g)
        }

        fn control(
            &mut self,
            g: &mut Gadget<Flash>,
            env: &ControlEnvelope,
            ack: bool,
        ) -> Vec<Note> {
            self.send(g, StreamId::Control, &env.to_bytes(), ack)
        }

        fn drain(&mut self, g: &mut Gadget<Flash>) -> Vec<Note> {
            let mut notes = Vec::new();
            let mut buf = Vec::new();
            while let Some(len) = g.poll_notify(&mut buf) {
                assert_eq!(len, buf.len());
                assert!(len <= usize::from(DEFAULT_PACKET_SIZE));
                if is_pv_packet(&buf) {
                    let pv = PvRepr::parse(&PvPacket::new_checked(&buf[..]).unwrap()).unwrap();
                    notes.push(Note::Pv(pv));
                } else {
                    match self.rx.push(&buf).unwrap() {
                        Received::Ack(a) => notes.push(Note::Ack(a)),
                        Received::Transaction(t) => notes.push(match t.stream {
                            StreamId::Control => Note::Control(decode_control(&t.payload).unwrap()),
                            StreamId::Alexa => Note::Alexa(t.payload),
                            StreamId::Ota => panic!("the gadget sent on the OTA stream"),
                        }),
                        Received::Partial => {}
                    }
                }
                buf.clear();
            }
            notes
        }

        /// Sends a whole segment: announcement, then its bytes in transactions of at most T.
        fn segment(
            &mut self,
            g: &mut Gadget<Flash>,
            name: &str,
            offset: u32,
            bytes: &[u8],
            signed: &[u8],
        ) -> Vec<Note> {
            let env = ControlEnvelope::update_component_segment(
                name,
                offset,
                bytes.len() as u32,
                &segment_signature(signed),
            );
            let mut notes = self.control(g, &env, true);
            if !matches!(notes.as_slice(), [Note::Ack(a)] if a.is_positive()) {
                return notes;
            }
            for piece in bytes.chunks(usize::from(DEFAULT_MAX_TRANSACTION_SIZE)) {
                notes.extend(self.send(g, StreamId::Ota, piece, false));
            }
            notes
        }
    }

    #[test]
    fn a_segment_larger_than_the_buffer_is_written_in_pieces_and_checked_whole() {
        // Slots of 64 sectors (256 KiB): room for a segment of three buffers and more.
        const BIG: Layout = Layout {
            slot_size: 64 * 4096,
            ..LAYOUT
        };
        let config = GadgetConfig::default();
        let mut flash = Flash::new((2 + 3 * 64) * 4096).unwrap();
        let slots = Slots::with_config(BIG, config.database.clone(), &flash).unwrap();
        slots.provision(&mut flash, &image(3000, 0x5A)).unwrap();
        slots.boot(&mut flash).unwrap();
        let mut g = Gadget::new(flash, BIG, config.clone()).unwrap();
        let mut c = Central::new();
        g.handle_connected(NOW);
        c.drain(&mut g);
        let img = image(3 * SEGMENT_BUFFER + 100, 0x11);
        // A hash that does not match: the pieces already written leave the database again.
        let notes = c.segment(&mut g, "app", 0, &img, b"something else");
        assert!(response(
            &notes,
            Command::UpdateComponentSegment,
            ErrorCode::Invalid
        ));
        assert_eq!(g.staged(), Some(("app", 0)));
        assert_eq!(g.database().download().map(|d| d.size), Some(0));
        let notes = c.segment(&mut g, "app", 0, &img, &img);
        assert!(response(
            &notes,
            Command::UpdateComponentSegment,
            ErrorCode::Success
        ));
        let len = img.len() as u32;
        assert_eq!(g.staged(), Some(("app", len)));
        // What the database holds after a restart is exactly the segment.
        let mut flash = g.into_flash();
        let g = Gadget::new(flash.clone(), BIG, config).unwrap();
        assert_eq!(g.staged(), Some(("app", len)));
        let slot = g.database().download().unwrap().slot;
        assert_eq!(
            slots.image_digest(&mut flash, slot, len).unwrap(),
            sha256(&img)
        );
    }

    fn response(notes: &[Note], command: Command, code: ErrorCode) -> bool {
        notes.iter().any(|n| {
            matches!(n, Note::Control(e) if e.command == i32::from(command)
                && e.as_response().is_some_and(|r| r.error_code == i32::from(code)))
        })
    }

    fn ack_of(notes: &[Note]) -> Option<AckRepr> {
        notes.iter().find_map(|n| match n {
            Note::Ack(a) => Some(*a),
            _ => None,
        })
    }

    fn discover(central: &mut Central, g: &mut Gadget<Flash>) -> String {
        let notes = central.send(
            g,
            StreamId::Alexa,
            &DiscoverDirective::new("1").to_bytes(),
            false,
        );
        let [Note::Alexa(bytes)] = notes.as_slice() else {
            panic!("{notes:?}");
        };
        decode_discover_response(bytes)
            .unwrap()
            .firmware_version()
            .unwrap()
            .to_string()
    }

    fn apply(central: &mut Central, g: &mut Gadget<Flash>, version: u32, img: &[u8]) -> Vec<Note> {
        let env = ControlEnvelope::apply_firmware(
            version,
            "app",
            img.len() as u32,
            &segment_signature(img),
            true,
        );
        central.control(g, &env, true)
    }

    /// Stages `img` in two segments, 6000 bytes then the rest.
    fn stage(central: &mut Central, g: &mut Gadget<Flash>, img: &[u8]) {
        for (offset, part) in [(0, &img[..6000]), (6000, &img[6000..])] {
            let notes = central.segment(g, "app", offset, part, part);
            assert!(ack_of(&notes).unwrap().is_positive(), "{notes:?}");
            assert!(
                response(&notes, Command::UpdateComponentSegment, ErrorCode::Success),
                "{notes:?}"
            );
        }
        assert_eq!(g.staged(), Some(("app", img.len() as u32)));
    }

    #[test]
    fn connect_sends_the_pv_packet() {
        let mut g = gadget();
        g.handle_connected(NOW);
        let mut buf = Vec::new();
        assert_eq!(g.poll_notify(&mut buf), Some(20));
        assert_eq!(
            buf,
            [0xFE, 0x03, 0x03, 0x00, 0x00, 0xF4, 0x13, 0x88, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(g.poll_notify(&mut buf), None);
        assert_eq!(g.poll_event(), None);
    }

    #[test]
    fn handshake_answers_information_features_and_discover() {
        let mut g = gadget();
        let mut c = Central::new();
        g.handle_connected(NOW);
        assert_eq!(c.drain(&mut g), [Note::Pv(PvRepr::new(244, 5000))]);

        let notes = c.control(&mut g, &ControlEnvelope::get_device_information(), false);
        let [Note::Control(env)] = notes.as_slice() else {
            panic!("{notes:?}");
        };
        assert_eq!(env.command, 20);
        let Some(ResponsePayload::DeviceInformation(info)) = &env.as_response().unwrap().payload
        else {
            panic!("{env:?}");
        };
        assert_eq!(info.name, "otaweb demo");
        assert_eq!(info.serial_number, "OTAWEB0001");

        let notes = c.control(&mut g, &ControlEnvelope::get_device_features(), false);
        let [Note::Control(env)] = notes.as_slice() else {
            panic!("{notes:?}");
        };
        let r = env.as_response().unwrap();
        assert!(r.succeeded());
        let Some(ResponsePayload::DeviceFeatures(features)) = &r.payload else {
            panic!("{env:?}");
        };
        assert_eq!(features.features, 0x13);
        assert!(features.supports_ota());

        assert_eq!(discover(&mut c, &mut g), "0");

        // An ACK-flagged request is ACKed before its reply.
        let notes = c.control(&mut g, &ControlEnvelope::get_device_features(), true);
        assert!(matches!(notes.as_slice(), [Note::Ack(a), Note::Control(_)] if a.is_positive()));
    }

    #[test]
    fn unknown_commands_and_stray_bytes_are_answered() {
        let mut g = gadget();
        let mut c = Central::new();
        g.handle_connected(NOW);
        c.drain(&mut g);
        let unknown = ControlEnvelope {
            command: 42,
            payload: None,
        };
        let notes = c.control(&mut g, &unknown, false);
        assert!(matches!(notes.as_slice(), [Note::Control(e)]
            if e.command == 42
                && e.as_response().unwrap().error_code == i32::from(ErrorCode::Unsupported)));

        // OTA bytes with no segment announced: NACK 0x01.
        let notes = c.send(&mut g, StreamId::Ota, &[1, 2, 3], false);
        let nack = ack_of(&notes).unwrap();
        assert!(!nack.ack);
        assert_eq!(nack.result, ResultCode::Unknown);

        // A transport fault: a continuation with no open transaction.
        g.handle_write(NOW, &[0x05, 0x14, 0x01, 0xAA]);
        let notes = c.drain(&mut g);
        assert_eq!(
            notes,
            [Note::Ack(AckRepr::nack(
                StreamId::Control,
                TransactionId::new(5).unwrap(),
                ResultCode::Unknown
            ))]
        );
        // An undecodable envelope that asked for an ACK is NACKed 0x03.
        let notes = c.send(&mut g, StreamId::Control, &[0xFF, 0xFF], true);
        assert_eq!(ack_of(&notes).unwrap().result, ResultCode::Unsupported);
    }

    #[test]
    fn full_update_restart_and_new_version() {
        let mut g = gadget();
        let mut c = Central::new();
        g.handle_connected(NOW);
        c.drain(&mut g);
        let img = image(10_000, 0x33);
        stage(&mut c, &mut g, &img);

        let notes = apply(&mut c, &mut g, 7, &img);
        assert!(
            matches!(notes.as_slice(), [Note::Ack(a), Note::Control(_)] if a.is_positive()),
            "{notes:?}"
        );
        assert!(response(&notes, Command::ApplyFirmware, ErrorCode::Success));
        assert!(g.restart_requested());
        assert_eq!(
            g.poll_event(),
            Some(GadgetEvent::RestartRequested { version: 7 })
        );
        // Until the restart, the old image runs and no more segments are taken.
        assert_eq!(discover(&mut c, &mut g), "0");
        let notes = c.segment(&mut g, "app", 0, &img[..100], &img[..100]);
        assert_eq!(ack_of(&notes).unwrap().result, ResultCode::Unsupported);

        g.handle_disconnected(NOW);
        let flash = g.into_flash();
        // A gadget started without the boot decision still guards the pending image.
        let g = Gadget::new(flash, LAYOUT, GadgetConfig::default()).unwrap();
        assert!(g.restart_requested());
        let mut flash = g.into_flash();
        let boot = Slots::new(LAYOUT, &flash)
            .unwrap()
            .boot(&mut flash)
            .unwrap();
        assert_eq!(boot.outcome, BootOutcome::Updated { from: 0, to: 7 });
        assert_eq!(boot.state.running().slot, Slot::A);
        let mut g = Gadget::new(flash, LAYOUT, GadgetConfig::default()).unwrap();
        let mut c = Central::new();
        g.handle_connected(NOW);
        c.drain(&mut g);
        // Answering Discover is the health check: the trial is now the valid image.
        assert_eq!(g.database().trial.map(|t| t.version), Some(7));
        assert_eq!(discover(&mut c, &mut g), "7");
        assert_eq!(g.active().sha256, sha256(&img));
        assert_eq!(g.database().trial, None);
        assert_eq!(g.database().active.slot, Slot::A);
        assert_eq!(g.database().previous.map(|p| p.slot), Some(Slot::FACTORY));

        // The next update stages into slot B, the free one; the factory image is kept.
        let next = image(9000, 0x44);
        stage(&mut c, &mut g, &next);
        let notes = apply(&mut c, &mut g, 8, &next);
        assert!(response(&notes, Command::ApplyFirmware, ErrorCode::Success));
        let mut g = restart(g.into_flash());
        assert_eq!(g.active().slot, Slot::B);
        assert_eq!(discover(&mut Central::new(), &mut g), "8");
        assert_eq!(g.database().active.version, 8);
        assert_eq!(g.database().previous.map(|p| p.version), Some(7));
    }

    #[test]
    fn the_default_two_slots_take_update_after_update() {
        let mut g = gadget();
        let mut c = Central::new();
        let factory = g.database().images[0];
        // Each update goes to the slot that does not run; from the third on, that one holds
        // the previous image, which it replaces.
        for (version, slot) in [(1, Slot::A), (2, Slot::B), (3, Slot::A), (4, Slot::B)] {
            let img = image(10_000, version as u8);
            stage(&mut c, &mut g, &img);
            assert_eq!(g.database().download().map(|d| d.slot), Some(slot));
            assert!(response(
                &apply(&mut c, &mut g, version, &img),
                Command::ApplyFirmware,
                ErrorCode::Success
            ));
            g = restart(g.into_flash());
            assert_eq!(discover(&mut c, &mut g), version.to_string());
            assert_eq!((g.active().slot, g.active().sha256), (slot, sha256(&img)));
            assert_eq!(g.database().images[0].sha256, factory.sha256);
        }

        // While an update is on trial (the host checks its health here), both slots run
        // or are due: a new staging is refused until it is confirmed.
        let host_checks = GadgetConfig {
            confirm_on_discover: false,
            ..GadgetConfig::default()
        };
        let img = image(10_000, 5);
        stage(&mut c, &mut g, &img);
        apply(&mut c, &mut g, 5, &img);
        let mut g = restart_with(g.into_flash(), host_checks.clone());
        assert_eq!(discover(&mut c, &mut g), "5");
        let notes = c.segment(&mut g, "app", 0, &img[..100], &img[..100]);
        assert_eq!(ack_of(&notes).unwrap().result, ResultCode::Unsupported);
        g.confirm().unwrap();
        let notes = c.segment(&mut g, "app", 0, &img[..100], &img[..100]);
        assert!(ack_of(&notes).unwrap().is_positive());

        // The factory image is still there to reset to.
        let mut flash = g.into_flash();
        let slots = Slots::new(LAYOUT, &flash).unwrap();
        slots.factory_reset(&mut flash).unwrap();
        let mut g = restart(flash);
        assert_eq!(discover(&mut c, &mut g), "0");
        assert_eq!(g.active().slot, Slot::FACTORY);
        assert_eq!(g.active().sha256, sha256(&image(3000, 0x5A)));
        stage(&mut c, &mut g, &img);
    }

    #[test]
    fn a_staged_image_survives_a_restart_and_is_applied_later() {
        let mut g = gadget();
        let mut c = Central::new();
        let img = image(10_000, 0x52);
        stage(&mut c, &mut g, &img);
        // The page goes away; the device restarts before anyone applies.
        let mut g = restart(g.into_flash());
        assert_eq!(g.staged(), Some(("app", 10_000)));
        assert_eq!(g.active().version, 0);
        let mut c = Central::new();
        g.handle_connected(NOW);
        c.drain(&mut g);
        assert_eq!(discover(&mut c, &mut g), "0");
        // A resume goes on from the bytes held, too.
        let notes = c.segment(&mut g, "app", 6000, &img[6000..], &img[6000..]);
        assert!(response(
            &notes,
            Command::UpdateComponentSegment,
            ErrorCode::Success
        ));
        let mut g = restart(g.into_flash());
        let notes = apply(&mut c, &mut g, 4, &img);
        assert!(response(&notes, Command::ApplyFirmware, ErrorCode::Success));
        let mut g = restart(g.into_flash());
        assert_eq!(discover(&mut c, &mut g), "4");
        assert_eq!(g.database().active.sha256, sha256(&img));
    }

    #[test]
    fn an_image_verified_before_a_restart_is_applied_without_its_bytes() {
        // A cut between the verification and the apply records leaves the image verified
        // but not pending: the orchestrator's repeated ApplyFirmware finds it.
        let mut g = gadget();
        let mut c = Central::new();
        let img = image(10_000, 0x53);
        stage(&mut c, &mut g, &img);
        let slot = g.database().download().unwrap().slot;
        let mut flash = g.into_flash();
        let slots = Slots::new(LAYOUT, &flash).unwrap();
        let meta = ImageMeta {
            version: 5,
            size: 10_000,
            sha256: sha256(&img),
            signature: None,
        };
        slots.finish_download(&mut flash, slot, meta).unwrap();
        slots.verify(&mut flash, slot).unwrap();
        let mut g = restart(flash);
        assert_eq!(g.staged(), None);
        // Another version of the same bytes is not that image.
        let notes = apply(&mut c, &mut g, 6, &img);
        assert!(response(&notes, Command::ApplyFirmware, ErrorCode::Invalid));
        let notes = apply(&mut c, &mut g, 5, &img);
        assert!(response(&notes, Command::ApplyFirmware, ErrorCode::Success));
        let mut g = restart(g.into_flash());
        assert_eq!(discover(&mut c, &mut g), "5");
    }

    #[test]
    fn an_apply_whose_two_versions_disagree_is_refused_and_the_staged_image_stays() {
        let mut g = gadget();
        let mut c = Central::new();
        let img = image(10_000, 0x66);
        stage(&mut c, &mut g, &img);
        // Version 2 with its component's copy garbled to 66 (one bit).
        let mut env = ControlEnvelope::apply_firmware(
            2,
            "app",
            img.len() as u32,
            &segment_signature(&img),
            true,
        );
        let Some(ControlPayload::ApplyFirmware(garbled)) = env.payload.as_mut() else {
            unreachable!()
        };
        garbled.firmware_information.as_mut().unwrap().components[0].version = 66;
        let notes = c.control(&mut g, &env, true);
        assert!(response(&notes, Command::ApplyFirmware, ErrorCode::Invalid));
        assert!(g.poll_event().is_none(), "no restart");
        assert_eq!(g.staged(), Some(("app", img.len() as u32)));
        // The whole apply goes through.
        assert!(response(
            &apply(&mut c, &mut g, 2, &img),
            Command::ApplyFirmware,
            ErrorCode::Success
        ));
        let mut g = restart(g.into_flash());
        assert_eq!(discover(&mut c, &mut g), "2");
    }

    #[test]
    fn an_unconfirmed_trial_rolls_back_at_the_next_boot() {
        let host_checks = GadgetConfig {
            confirm_on_discover: false,
            ..GadgetConfig::default()
        };
        let mut g = gadget_with(host_checks.clone());
        let mut c = Central::new();
        let img = image(10_000, 0x54);
        stage(&mut c, &mut g, &img);
        assert!(response(
            &apply(&mut c, &mut g, 2, &img),
            Command::ApplyFirmware,
            ErrorCode::Success
        ));
        let mut g = restart_with(g.into_flash(), host_checks.clone());
        // It runs and answers, but only the host's health check can confirm it.
        assert_eq!(discover(&mut c, &mut g), "2");
        assert!(g.database().trial.is_some());
        // Nor can it be updated over while on trial.
        let notes = apply(&mut c, &mut g, 3, &img);
        assert!(response(&notes, Command::ApplyFirmware, ErrorCode::Invalid));
        let mut flash = g.into_flash();
        let boot = Slots::new(LAYOUT, &flash)
            .unwrap()
            .boot(&mut flash)
            .unwrap();
        assert_eq!(boot.outcome, BootOutcome::RolledBack { from: 2, to: 0 });
        let mut g = Gadget::new(flash, LAYOUT, host_checks.clone()).unwrap();
        assert_eq!(discover(&mut c, &mut g), "0");
        assert_eq!(g.database().images[1].state, ImageState::Invalid);

        // Staged and applied again, and this time the host confirms.
        stage(&mut c, &mut g, &img);
        assert!(response(
            &apply(&mut c, &mut g, 2, &img),
            Command::ApplyFirmware,
            ErrorCode::Success
        ));
        let mut g = restart_with(g.into_flash(), host_checks.clone());
        g.confirm().unwrap();
        let g = restart_with(g.into_flash(), host_checks);
        assert_eq!(g.active().version, 2);
        assert_eq!(g.database().active.state, ImageState::Active);
    }

    #[test]
    fn a_failed_health_check_restarts_into_the_valid_image() {
        let host_checks = GadgetConfig {
            confirm_on_discover: false,
            ..GadgetConfig::default()
        };
        let mut g = gadget_with(host_checks.clone());
        let mut c = Central::new();
        let img = image(10_000, 0x55);
        stage(&mut c, &mut g, &img);
        apply(&mut c, &mut g, 2, &img);
        let mut g = restart_with(g.into_flash(), host_checks.clone());
        g.health_failed().unwrap();
        assert_eq!(
            g.poll_event(),
            Some(GadgetEvent::RestartRequested { version: 0 })
        );
        // The failed image still runs, so nothing may be staged over it.
        assert!(g.restart_requested());
        assert_eq!(g.active().version, 2);
        let notes = c.segment(&mut g, "app", 0, &img[..100], &img[..100]);
        assert_eq!(ack_of(&notes).unwrap().result, ResultCode::Unsupported);
        assert_eq!(g.confirm(), Err(SlotError::WrongState));
        let mut g = restart_with(g.into_flash(), host_checks);
        assert_eq!(discover(&mut c, &mut g), "0");
        assert!(!g.restart_requested());
    }

    #[test]
    fn discover_stays_unanswered_while_the_confirmation_cannot_be_written() {
        let mut g = gadget();
        let mut c = Central::new();
        let img = image(10_000, 0x56);
        stage(&mut c, &mut g, &img);
        apply(&mut c, &mut g, 2, &img);
        let mut g = restart(g.into_flash());
        g.flash_mut().sim_mut().cut_power_after_ops(0);
        let notes = c.send(
            &mut g,
            StreamId::Alexa,
            &DiscoverDirective::new("1").to_bytes(),
            false,
        );
        assert_eq!(notes, []);
        assert!(g.database().trial.is_some());
        // Power back, the orchestrator's next Discover confirms and is answered.
        g.flash_mut().sim_mut().restore_power();
        assert_eq!(discover(&mut c, &mut g), "2");
        assert_eq!(g.database().trial, None);
    }

    #[test]
    fn tampered_segment_is_invalid_and_held_stays() {
        let mut g = gadget();
        let mut c = Central::new();
        let img = image(10_000, 0x21);
        let notes = c.segment(&mut g, "app", 0, &img[..6000], &img[..6000]);
        assert!(response(
            &notes,
            Command::UpdateComponentSegment,
            ErrorCode::Success
        ));
        let mut tampered = img[6000..].to_vec();
        tampered[17] ^= 1;
        let notes = c.segment(&mut g, "app", 6000, &tampered, &img[6000..]);
        assert!(ack_of(&notes).unwrap().is_positive());
        assert!(
            response(&notes, Command::UpdateComponentSegment, ErrorCode::Invalid),
            "{notes:?}"
        );
        assert_eq!(g.staged(), Some(("app", 6000)));
        // The retransmission succeeds and the whole image is intact.
        let notes = c.segment(&mut g, "app", 6000, &img[6000..], &img[6000..]);
        assert!(response(
            &notes,
            Command::UpdateComponentSegment,
            ErrorCode::Success
        ));
        assert_eq!(g.staged(), Some(("app", 10_000)));
        // A rewind into the first segment keeps the bytes before it.
        let notes = c.segment(&mut g, "app", 3000, &img[3000..6000], &img[3000..6000]);
        assert!(response(
            &notes,
            Command::UpdateComponentSegment,
            ErrorCode::Success
        ));
        assert_eq!(g.staged(), Some(("app", 6000)));
        let notes = c.segment(&mut g, "app", 6000, &img[6000..], &img[6000..]);
        assert!(response(
            &notes,
            Command::UpdateComponentSegment,
            ErrorCode::Success
        ));
        let notes = apply(&mut c, &mut g, 1, &img);
        assert!(response(&notes, Command::ApplyFirmware, ErrorCode::Success));
    }

    /// otaweb's own gadget flow against `g` until it ends (or `rounds` exchanges pass): every
    /// write delivered whole, every notification too. Returns the flow's events.
    fn run_host(
        g: &mut Gadget<Flash>,
        host: &mut otaweb::flow::gadget::GadgetUpdate,
        rounds: usize,
    ) -> Vec<otaweb::flow::gadget::GadgetEvent> {
        use otaweb::flow::Flow;
        let mut events = Vec::new();
        host.handle_connected(NOW);
        g.handle_connected(NOW);
        let mut buf = Vec::new();
        for _ in 0..rounds {
            let mut moved = false;
            while let Some(t) = host.poll_transmit(&mut buf) {
                g.handle_write(NOW, &buf[buf.len() - t.len..]);
                host.handle_transmitted(NOW);
                buf.clear();
                moved = true;
            }
            while g.poll_notify(&mut buf).is_some() {
                host.handle_input(NOW, (), &buf);
                buf.clear();
                moved = true;
            }
            events.extend(core::iter::from_fn(|| host.poll_event()));
            if host.is_finished() || !moved {
                break;
            }
        }
        events
    }

    #[test]
    fn an_image_larger_than_the_slot_is_refused_by_the_gadget_which_keeps_its_old_image() {
        use otaweb::flow::gadget::{GadgetEvent, GadgetOptions, GadgetUpdate};
        use otaweb::image::manifest::{FlowKind, ManifestEntry};
        use otaweb::image::verify::{verify_image, VerifyPolicy};
        use otaweb::Error;
        let mut g = gadget();
        let before = g.flash().sim().stats().clone();
        assert_eq!(g.active().version, 0);
        // One byte more than a slot: verified (its manifest says so), but it cannot fit.
        let big = image(LAYOUT.slot_size as usize + 1, 0x33);
        let entry = ManifestEntry {
            name: "app".into(),
            flow: FlowKind::Gadget,
            version: "1".into(),
            url: "app.bin".into(),
            size: big.len() as u64,
            sha256: sha256(&big),
            md5: None,
            signature: None,
            compression: None,
        };
        let verified = verify_image(&big, &entry, &VerifyPolicy::danger_accept_unsigned()).unwrap();
        let mut host = GadgetUpdate::new(verified, GadgetOptions::default()).unwrap();
        let events = run_host(&mut g, &mut host, 200);
        let Some(GadgetEvent::Failed(error)) = events.last() else {
            panic!("the update fails: {events:?}")
        };
        assert!(
            matches!(error, Error::PeerRefused(r) if r.name == "NACK_UNSUPPORTED" && r.code == 3),
            "{error:?}"
        );
        assert_eq!(error.code(), "peer-refused");
        assert!(!error.retryable());
        assert_eq!(
            alloc::format!("{error}"),
            "the device refused (NACK_UNSUPPORTED 3): the device does not support this request \
             or one of its fields"
        );
        // The gadget staged what fits in its download slot and took nothing past it; it
        // still runs version 0, and boots it again.
        assert_eq!(g.staged(), Some(("app", LAYOUT.slot_size)));
        assert_eq!(g.active().version, 0);
        assert!(g.flash().sim().stats().writes > before.writes);
        let g = restart(g.into_flash());
        assert_eq!((g.active().version, g.active().size), (0, 3000));
    }

    #[test]
    fn segments_the_gadget_cannot_take_are_nacked() {
        let mut g = gadget();
        let mut c = Central::new();
        let img = image(8000, 0x11);
        let nacked = |notes: Vec<Note>| {
            let a = ack_of(&notes).unwrap();
            !a.ack && a.result == ResultCode::Unsupported
        };
        // Resuming without staging, then past the bytes held.
        assert!(nacked(c.segment(
            &mut g,
            "app",
            4000,
            &img[4000..],
            &img[4000..]
        )));
        let notes = c.segment(&mut g, "app", 0, &img[..4000], &img[..4000]);
        assert!(response(
            &notes,
            Command::UpdateComponentSegment,
            ErrorCode::Success
        ));
        assert!(nacked(c.segment(
            &mut g,
            "app",
            4001,
            &img[4001..],
            &img[4001..]
        )));
        // Another component at a nonzero offset.
        assert!(nacked(c.segment(
            &mut g,
            "boot",
            4000,
            &img[4000..],
            &img[4000..]
        )));
        assert_eq!(g.staged(), Some(("app", 4000)));
        // Too large for the slot, empty, over the segment limit, bad signature, empty name.
        let big = ControlEnvelope::update_component_segment(
            "app",
            0,
            8 * 4096 + 1,
            &segment_signature(b""),
        );
        assert!(nacked(c.control(&mut g, &big, true)));
        let empty = ControlEnvelope::update_component_segment("app", 0, 0, &segment_signature(b""));
        assert!(nacked(c.control(&mut g, &empty, true)));
        let huge = ControlEnvelope::update_component_segment(
            "app",
            0,
            MAX_SEGMENT_SIZE + 1,
            &segment_signature(b""),
        );
        assert!(nacked(c.control(&mut g, &huge, true)));
        let unsigned = ControlEnvelope::update_component_segment("app", 0, 10, "not a signature");
        assert!(nacked(c.control(&mut g, &unsigned, true)));
        let nameless =
            ControlEnvelope::update_component_segment("", 0, 10, &segment_signature(b""));
        assert!(nacked(c.control(&mut g, &nameless, true)));
        // Without the ACK flag a refusal is a Response{INVALID}.
        let notes = c.control(&mut g, &empty, false);
        assert!(response(
            &notes,
            Command::UpdateComponentSegment,
            ErrorCode::Invalid
        ));
        // Bytes past the announced size are NACKed 0x01, and the segment still completes.
        let env = ControlEnvelope::update_component_segment(
            "app",
            4000,
            100,
            &segment_signature(&img[4000..4100]),
        );
        assert!(ack_of(&c.control(&mut g, &env, true))
            .unwrap()
            .is_positive());
        let id = c.txn;
        let notes = c.send(&mut g, StreamId::Ota, &img[4000..4101], true);
        assert_eq!(
            notes,
            [Note::Ack(AckRepr::nack(
                StreamId::Ota,
                id,
                ResultCode::Unknown
            ))]
        );
        let notes = c.send(&mut g, StreamId::Ota, &img[4000..4100], true);
        assert!(ack_of(&notes).unwrap().is_positive());
        assert!(response(
            &notes,
            Command::UpdateComponentSegment,
            ErrorCode::Success
        ));
        assert_eq!(g.staged(), Some(("app", 4100)));
    }

    #[test]
    fn bad_apply_is_invalid_and_the_old_image_boots() {
        let mut g = gadget();
        let mut c = Central::new();
        let img = image(10_000, 0x77);
        // Before anything is staged.
        let notes = apply(&mut c, &mut g, 1, &img);
        assert!(ack_of(&notes).unwrap().is_positive());
        assert!(response(&notes, Command::ApplyFirmware, ErrorCode::Invalid));
        stage(&mut c, &mut g, &img);
        // Wrong digest.
        let notes = apply(&mut c, &mut g, 1, &image(10_000, 0x78));
        assert!(response(&notes, Command::ApplyFirmware, ErrorCode::Invalid));
        // Not newer than the running version 0.
        let notes = apply(&mut c, &mut g, 0, &img);
        assert!(response(&notes, Command::ApplyFirmware, ErrorCode::Invalid));
        // Unusable: no firmware information.
        let env = ControlEnvelope {
            command: Command::ApplyFirmware.into(),
            payload: Some(ControlPayload::ApplyFirmware(ApplyFirmware {
                firmware_information: None,
                restart_required: true,
            })),
        };
        let notes = c.control(&mut g, &env, true);
        assert_eq!(ack_of(&notes).unwrap().result, ResultCode::Unsupported);
        assert!(!g.restart_requested());
        assert_eq!(g.poll_event(), None);

        let mut g = restart(g.into_flash());
        assert_eq!(g.active().version, 0);
        assert_eq!(g.active().slot, Slot::FACTORY);
        assert_eq!(discover(&mut c, &mut g), "0");
        // Staging is in the database: the restart kept it, and the refusals changed nothing.
        assert_eq!(g.staged(), Some(("app", 10_000)));
        let notes = apply(&mut c, &mut g, 1, &img);
        assert!(response(&notes, Command::ApplyFirmware, ErrorCode::Success));
    }

    #[test]
    fn flash_errors_become_internal() {
        let mut g = gadget();
        let mut c = Central::new();
        let img = image(10_000, 0x19);
        let notes = c.segment(&mut g, "app", 0, &img[..6000], &img[..6000]);
        assert!(response(
            &notes,
            Command::UpdateComponentSegment,
            ErrorCode::Success
        ));
        g.flash_mut().sim_mut().cut_power_after_ops(0);
        let notes = c.segment(&mut g, "app", 6000, &img[6000..], &img[6000..]);
        assert!(
            response(&notes, Command::UpdateComponentSegment, ErrorCode::Internal),
            "{notes:?}"
        );
        // 6000 lies in the second sector, which may have lost its head.
        assert_eq!(g.staged(), Some(("app", 4096)));
        g.flash_mut().sim_mut().restore_power();
        let notes = c.segment(&mut g, "app", 4096, &img[4096..], &img[4096..]);
        assert!(response(
            &notes,
            Command::UpdateComponentSegment,
            ErrorCode::Success
        ));
        g.flash_mut().sim_mut().cut_power_after_ops(0);
        let notes = apply(&mut c, &mut g, 1, &img);
        assert!(response(
            &notes,
            Command::ApplyFirmware,
            ErrorCode::Internal
        ));
        assert!(!g.flash().sim().is_powered());
    }

    #[test]
    fn a_dropped_link_keeps_staging_but_not_the_open_segment() {
        let mut g = gadget();
        let mut c = Central::new();
        let img = image(10_000, 0x42);
        let notes = c.segment(&mut g, "app", 0, &img[..6000], &img[..6000]);
        assert!(response(
            &notes,
            Command::UpdateComponentSegment,
            ErrorCode::Success
        ));
        let env = ControlEnvelope::update_component_segment(
            "app",
            6000,
            4000,
            &segment_signature(&img[6000..]),
        );
        c.control(&mut g, &env, true);
        c.send(&mut g, StreamId::Ota, &img[6000..7000], false);
        g.handle_disconnected(NOW);
        g.handle_connected(NOW);
        let mut c = Central::new();
        assert_eq!(c.drain(&mut g).len(), 1);
        assert_eq!(g.staged(), Some(("app", 6000)));
        // The rest of a segment announced before the drop has nowhere to go.
        let notes = c.send(&mut g, StreamId::Ota, &img[7000..], false);
        assert!(!ack_of(&notes).unwrap().ack);
        let notes = c.segment(&mut g, "app", 6000, &img[6000..], &img[6000..]);
        assert!(response(
            &notes,
            Command::UpdateComponentSegment,
            ErrorCode::Success
        ));
    }

    /// xorshift64*: deterministic noise without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut g = gadget();
        g.handle_connected(NOW);
        let img = image(2000, 3);
        // Valid packets of every kind, to mutate.
        let mut seeds: Vec<Vec<u8>> = Vec::new();
        let payloads = [
            (
                StreamId::Control,
                ControlEnvelope::get_device_information().to_bytes(),
            ),
            (
                StreamId::Control,
                ControlEnvelope::update_component_segment("app", 0, 2000, &segment_signature(&img))
                    .to_bytes(),
            ),
            (
                StreamId::Control,
                ControlEnvelope::apply_firmware(1, "app", 2000, &segment_signature(&img), true)
                    .to_bytes(),
            ),
            (StreamId::Alexa, DiscoverDirective::new("x").to_bytes()),
            (StreamId::Ota, img.clone()),
        ];
        for (i, (stream, payload)) in payloads.iter().enumerate() {
            let limits = Limits {
                packet_size: 40,
                max_transaction_size: 5000,
            };
            let mut f = Fragmenter::new(
                *stream,
                TransactionId::new(i as u8).unwrap(),
                &payload[..],
                i % 2 == 0,
                limits,
            )
            .unwrap();
            let mut buf = Vec::new();
            while f.emit_next(&mut buf).is_some() {
                seeds.push(core::mem::take(&mut buf));
            }
        }
        let mut out = Vec::new();
        for round in 0..20_000 {
            let packet = match rng.below(4) {
                0 => (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
                1 => seeds[rng.below(seeds.len())].clone(),
                _ => {
                    let mut p = seeds[rng.below(seeds.len())].clone();
                    for _ in 0..=rng.below(3) {
                        let at = rng.below(p.len());
                        p[at] ^= 1 << rng.below(8);
                    }
                    if rng.below(4) == 0 {
                        p.truncate(rng.below(p.len() + 1));
                    }
                    p
                }
            };
            g.handle_write(NOW, &packet);
            if round % 997 == 0 {
                g.handle_connected(NOW);
            }
            while let Some(len) = g.poll_notify(&mut out) {
                assert!(len <= usize::from(DEFAULT_PACKET_SIZE));
                out.clear();
            }
            while g.poll_event().is_some() {}
        }
        // Whatever happened, the flash still boots a recorded image.
        let mut flash = g.into_flash();
        let slots = Slots::new(LAYOUT, &flash).unwrap();
        let boot = slots.boot(&mut flash).unwrap();
        let a = boot.state.active;
        assert_eq!(
            slots.image_digest(&mut flash, a.slot, a.size).unwrap(),
            a.sha256
        );
    }

    #[test]
    fn configuration_is_checked() {
        let flash = Flash::new(FLASH_SIZE).unwrap();
        let bad = GadgetConfig {
            packet_size: 513,
            ..GadgetConfig::default()
        };
        assert_eq!(
            Gadget::new(flash.clone(), LAYOUT, bad).err(),
            Some(SetupError::PacketSize)
        );
        let bad = GadgetConfig {
            max_transaction_size: 0,
            ..GadgetConfig::default()
        };
        assert_eq!(
            Gadget::new(flash.clone(), LAYOUT, bad).err(),
            Some(SetupError::TransactionSize)
        );
        let small = Flash::new(4 * 4096).unwrap();
        assert_eq!(
            Gadget::new(small, LAYOUT, GadgetConfig::default()).err(),
            Some(SetupError::Layout(LayoutError::TooLarge))
        );
        let bad = GadgetConfig {
            database: DbConfig {
                slots: 6,
                trusted_key: None,
            },
            ..GadgetConfig::default()
        };
        assert_eq!(
            Gadget::new(flash.clone(), LAYOUT, bad).err(),
            Some(SetupError::Layout(LayoutError::SlotCount))
        );
        let g = Gadget::new(flash, LAYOUT, GadgetConfig::default()).unwrap();
        assert_eq!(g.active().version, 0);
        assert_eq!(g.staged(), None);
    }

    // Signed images: the fixture app-v2.bin (96 KiB) and its signature by the test key.

    const APP: &[u8] = include_bytes!("../../firmware-fixtures/files/app-v2.bin");
    const APP_SIG: &str = include_str!("../../firmware-fixtures/files/app-v2.bin.sig");
    const KEY: &str = include_str!("../../firmware-fixtures/files/keys/test-signing-key.pub.pem");
    const OTHER_KEY: &str = include_str!("../../firmware-fixtures/files/keys/other-key.pub.pem");

    /// [`LAYOUT`] with slots of 24 sectors: room for app-v2.bin.
    const SIGNED_LAYOUT: Layout = Layout {
        slot_size: 24 * 4096,
        ..LAYOUT
    };

    /// The fixture's signature, raw r‖s.
    fn app_signature() -> [u8; SIGNATURE_LEN] {
        ImageSignature::from_base64(APP_SIG).unwrap().to_bytes()
    }

    /// A gadget whose database trusts the key in `pem`, if any.
    fn config_trusting(pem: Option<&str>) -> GadgetConfig {
        GadgetConfig {
            database: DbConfig {
                trusted_key: pem.map(|pem| PublicKey::from_pem(pem).unwrap()),
                ..DbConfig::default()
            },
            ..GadgetConfig::default()
        }
    }

    /// A provisioned, booted gadget on [`SIGNED_LAYOUT`] with `config`, running a 3000-byte
    /// unsigned factory image at version 0.
    fn signed_gadget(config: &GadgetConfig) -> Gadget<Flash> {
        let mut flash = Flash::new((2 + 3 * 24) * 4096).unwrap();
        let slots = Slots::with_config(SIGNED_LAYOUT, config.database.clone(), &flash).unwrap();
        slots.provision(&mut flash, &image(3000, 0x5A)).unwrap();
        signed_restart(flash, config).1
    }

    /// The boot decision of a database with `config` on [`SIGNED_LAYOUT`], then a new gadget.
    fn signed_restart(mut flash: Flash, config: &GadgetConfig) -> (BootOutcome, Gadget<Flash>) {
        let boot = Slots::with_config(SIGNED_LAYOUT, config.database.clone(), &flash)
            .unwrap()
            .boot(&mut flash)
            .unwrap();
        let g = Gadget::new(flash, SIGNED_LAYOUT, config.clone()).unwrap();
        (boot.outcome, g)
    }

    /// Stages `img` in segments of 16 KiB.
    fn stage_segments(central: &mut Central, g: &mut Gadget<Flash>, img: &[u8]) {
        for (i, part) in img.chunks(16 * 1024).enumerate() {
            let notes = central.segment(g, "app", (i * 16 * 1024) as u32, part, part);
            assert!(
                response(&notes, Command::UpdateComponentSegment, ErrorCode::Success),
                "{notes:?}"
            );
        }
        assert_eq!(g.staged(), Some(("app", img.len() as u32)));
    }

    /// ApplyFirmware for `img` at `version` whose component signature carries `signature`.
    fn apply_with(
        central: &mut Central,
        g: &mut Gadget<Flash>,
        version: u32,
        img: &[u8],
        signature: Option<[u8; SIGNATURE_LEN]>,
    ) -> Vec<Note> {
        let text = ComponentSignature {
            sha256: sha256(img),
            ecdsa: signature.map(|s| ImageSignature::from_bytes(&s).unwrap()),
        }
        .encode();
        assert_eq!(text.len(), if signature.is_some() { 128 } else { 44 });
        let env = ControlEnvelope::apply_firmware(version, "app", img.len() as u32, &text, true);
        central.control(g, &env, true)
    }

    /// Reflashes `flash` with `edit` applied to its raw contents, as a probe would.
    fn edited(flash: Flash, edit: impl FnOnce(&mut [u8])) -> Flash {
        let sim = flash.into_sim();
        let mut bytes = sim.contents().to_vec();
        edit(&mut bytes);
        Flash::wrap(SimFlash::from_image(sim.geometry(), &bytes).unwrap()).unwrap()
    }

    #[test]
    fn with_its_trusted_key_a_signed_image_installs_and_boots() {
        let config = config_trusting(Some(KEY));
        let mut g = signed_gadget(&config);
        let mut c = Central::new();
        stage_segments(&mut c, &mut g, APP);
        let notes = apply_with(&mut c, &mut g, 2, APP, Some(app_signature()));
        assert!(response(&notes, Command::ApplyFirmware, ErrorCode::Success));
        assert_eq!(
            g.poll_event(),
            Some(GadgetEvent::RestartRequested { version: 2 })
        );
        let pending = g.database().pending.unwrap();
        assert_eq!(pending.state, ImageState::Verified);
        assert_eq!(pending.signature, Some(app_signature()));
        assert_eq!(pending.sha256, sha256(APP));

        // The boot decision checks the signature again, and the image runs.
        let (outcome, mut g) = signed_restart(g.into_flash(), &config);
        assert_eq!(outcome, BootOutcome::Updated { from: 0, to: 2 });
        assert_eq!(discover(&mut Central::new(), &mut g), "2");
        assert_eq!(g.database().active.signature, Some(app_signature()));
    }

    #[test]
    fn with_a_trusted_key_an_unsigned_apply_is_refused_and_writes_nothing() {
        let config = config_trusting(Some(KEY));
        let mut g = signed_gadget(&config);
        let mut c = Central::new();
        stage_segments(&mut c, &mut g, APP);
        let before = g.flash().sim().contents().to_vec();
        let notes = apply_with(&mut c, &mut g, 2, APP, None);
        assert!(ack_of(&notes).unwrap().is_positive());
        assert!(response(&notes, Command::ApplyFirmware, ErrorCode::Invalid));
        assert!(!g.restart_requested());
        assert_eq!(g.poll_event(), None);
        assert_eq!(g.flash().sim().contents(), &before[..], "nothing written");
        assert_eq!(g.staged(), Some(("app", APP.len() as u32)));
        assert!(g
            .database()
            .images
            .iter()
            .all(|i| i.slot.is_factory() || i.state != ImageState::Verified));

        // A restart keeps the old image; the staged bytes still take the signed apply.
        let (outcome, mut g) = signed_restart(g.into_flash(), &config);
        assert_eq!(outcome, BootOutcome::Unchanged);
        assert_eq!(g.active().version, 0);
        let notes = apply_with(&mut c, &mut g, 2, APP, Some(app_signature()));
        assert!(response(&notes, Command::ApplyFirmware, ErrorCode::Success));
    }

    #[test]
    fn with_a_trusted_key_a_wrong_signature_is_refused_and_never_verified() {
        let mut flipped = app_signature();
        flipped[40] ^= 0x01;
        // A bit flipped in s, and the right signature checked with another key.
        for (pem, signature) in [(KEY, flipped), (OTHER_KEY, app_signature())] {
            let config = config_trusting(Some(pem));
            let mut g = signed_gadget(&config);
            let mut c = Central::new();
            stage_segments(&mut c, &mut g, APP);
            let slot = g.database().download().unwrap().slot;
            let notes = apply_with(&mut c, &mut g, 2, APP, Some(signature));
            assert!(response(&notes, Command::ApplyFirmware, ErrorCode::Invalid));
            assert!(!g.restart_requested());
            assert_eq!(g.poll_event(), None);
            let entry = g.database().images[usize::from(slot.index())];
            assert_eq!(entry.state, ImageState::Invalid);
            assert_eq!(g.database().pending, None);
            // The refused bytes are no use: the staging is gone, a resend starts at 0.
            assert_eq!(g.staged(), None);
            let notes = apply_with(&mut c, &mut g, 2, APP, Some(signature));
            assert!(response(&notes, Command::ApplyFirmware, ErrorCode::Invalid));

            let (outcome, g) = signed_restart(g.into_flash(), &config);
            assert_eq!(outcome, BootOutcome::Unchanged);
            assert_eq!(g.active().slot, Slot::FACTORY);
            assert_eq!(g.active().version, 0);
        }
    }

    #[test]
    fn without_a_key_both_forms_install() {
        let config = config_trusting(None);
        let mut g = signed_gadget(&config);
        let mut c = Central::new();
        // Signed: the signature is recorded with the image, not checked.
        stage_segments(&mut c, &mut g, APP);
        let notes = apply_with(&mut c, &mut g, 2, APP, Some(app_signature()));
        assert!(response(&notes, Command::ApplyFirmware, ErrorCode::Success));
        assert_eq!(
            g.database().pending.unwrap().signature,
            Some(app_signature())
        );
        let (outcome, mut g) = signed_restart(g.into_flash(), &config);
        assert_eq!(outcome, BootOutcome::Updated { from: 0, to: 2 });
        assert_eq!(discover(&mut c, &mut g), "2");

        // Unsigned: the digest alone decides, as before the extension.
        let next = image(40_000, 0x21);
        stage_segments(&mut c, &mut g, &next);
        let notes = apply_with(&mut c, &mut g, 3, &next, None);
        assert!(response(&notes, Command::ApplyFirmware, ErrorCode::Success));
        assert_eq!(g.database().pending.unwrap().signature, None);
        let (outcome, mut g) = signed_restart(g.into_flash(), &config);
        assert_eq!(outcome, BootOutcome::Updated { from: 2, to: 3 });
        assert_eq!(discover(&mut c, &mut g), "3");
    }

    #[test]
    fn component_signatures_of_other_lengths_are_invalid() {
        for config in [config_trusting(Some(KEY)), config_trusting(None)] {
            let mut g = signed_gadget(&config);
            let mut c = Central::new();
            stage_segments(&mut c, &mut g, APP);
            let signed = ComponentSignature {
                sha256: sha256(APP),
                ecdsa: Some(ImageSignature::from_base64(APP_SIG).unwrap()),
            }
            .encode();
            for text in [
                // The signature alone: 64 bytes, 88 characters.
                APP_SIG.trim().to_string(),
                // 95 bytes in 128 characters.
                [&signed[..124], "AAA="].concat(),
                // 99 bytes: above the 128-character bound, so not even usable.
                [&signed[..], "AAAA"].concat(),
                // The last byte of r and all of s 0xFF: s is not below the curve order.
                [&signed[..84], &"/".repeat(44)].concat(),
            ] {
                let env = ControlEnvelope::apply_firmware(2, "app", APP.len() as u32, &text, true);
                let notes = c.control(&mut g, &env, true);
                let refused = response(&notes, Command::ApplyFirmware, ErrorCode::Invalid)
                    || ack_of(&notes).is_some_and(|a| a.result == ResultCode::Unsupported);
                assert!(refused, "{text}: {notes:?}");
                assert!(!g.restart_requested());
            }
            assert_eq!(g.staged(), Some(("app", APP.len() as u32)));
        }
    }

    #[test]
    fn the_boot_decision_checks_the_signature_again() {
        let config = config_trusting(Some(KEY));
        let applied = || {
            let mut g = signed_gadget(&config);
            let mut c = Central::new();
            stage_segments(&mut c, &mut g, APP);
            let notes = apply_with(&mut c, &mut g, 2, APP, Some(app_signature()));
            assert!(response(&notes, Command::ApplyFirmware, ErrorCode::Success));
            let slot = g.database().pending.unwrap().slot;
            let start = Slots::with_config(SIGNED_LAYOUT, config.database.clone(), g.flash())
                .unwrap()
                .slot_range(slot)
                .start as usize;
            (g.into_flash(), start)
        };

        // The image changed in its slot between the apply and the boot.
        let (flash, start) = applied();
        let flash = edited(flash, |bytes| bytes[start + 5000] ^= 0x01);
        let (outcome, g) = signed_restart(flash, &config);
        assert_eq!(outcome, BootOutcome::FellBack { rejected: 2 });
        assert_eq!(g.active().slot, Slot::FACTORY);
        assert_eq!(g.database().images[1].state, ImageState::Invalid);

        // A bootloader that trusts another key will not start it either.
        let (flash, _) = applied();
        let (outcome, g) = signed_restart(flash, &config_trusting(Some(OTHER_KEY)));
        assert_eq!(outcome, BootOutcome::FellBack { rejected: 2 });
        assert_eq!(g.active().version, 0);

        // Untouched, it boots.
        let (flash, _) = applied();
        let (outcome, _) = signed_restart(flash, &config);
        assert_eq!(outcome, BootOutcome::Updated { from: 0, to: 2 });
    }

    #[test]
    fn with_a_trusted_key_an_image_verified_before_a_restart_needs_its_signature_again() {
        let config = config_trusting(Some(KEY));
        let mut g = signed_gadget(&config);
        let mut c = Central::new();
        stage_segments(&mut c, &mut g, APP);
        let slot = g.database().download().unwrap().slot;
        let mut flash = g.into_flash();
        let slots = Slots::with_config(SIGNED_LAYOUT, config.database.clone(), &flash).unwrap();
        let meta = ImageMeta {
            version: 2,
            size: APP.len() as u32,
            sha256: sha256(APP),
            signature: Some(app_signature()),
        };
        slots.finish_download(&mut flash, slot, meta).unwrap();
        slots.verify(&mut flash, slot).unwrap();
        let (_, mut g) = signed_restart(flash, &config);
        assert_eq!(g.staged(), None);
        // Without the signature, or with another one, it is not the image verified.
        let mut flipped = app_signature();
        flipped[40] ^= 0x01;
        for signature in [None, Some(flipped)] {
            let notes = apply_with(&mut c, &mut g, 2, APP, signature);
            assert!(response(&notes, Command::ApplyFirmware, ErrorCode::Invalid));
            assert_eq!(g.database().pending, None);
        }
        let notes = apply_with(&mut c, &mut g, 2, APP, Some(app_signature()));
        assert!(response(&notes, Command::ApplyFirmware, ErrorCode::Success));
        let (outcome, _) = signed_restart(g.into_flash(), &config);
        assert_eq!(outcome, BootOutcome::Updated { from: 0, to: 2 });
    }
}
