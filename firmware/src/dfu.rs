//! The SiFli OTA-manager DFU device (55x, v1 messages), sans-IO: the peer of
//! `otaweb::flow::dfu::DfuUpdate`, on one NOR flash (`protocols/dfu.md` §1–§10).
//!
//! Contract. A [`DfuDevice`] is the whole device across reboots: the user bin and the OTA
//! manager, chosen at every boot ([`DfuDevice::restart`]) from the persisted progress as §7
//! says — the force-mode register (a RAM flag that survives `restart`, as the RTC backup
//! register does) set → user bin; PREPARE_START → OTA manager with the 30 s timer back to
//! the user bin; TRAN_START / INSTALL / UPDATING → FORCE_UPDATE (persisted) and the OTA
//! manager; FORCE_UPDATE → OTA manager; anything else → user bin, which resets an UPDATING
//! progress to IDLE. The host loop feeds it as the core's flows are fed:
//! [`DfuDevice::handle_connected`] (notifications enabled), [`DfuDevice::handle_write`] with
//! each value written to the data characteristic, [`DfuDevice::handle_disconnected`], then
//! [`DfuDevice::poll_notify`] until `None`, [`DfuDevice::poll_event`], and
//! [`DfuDevice::poll_timeout`] / [`DfuDevice::handle_timeout`]. On
//! [`DfuDeviceEvent::RestartRequested`] the host sends what is queued, drops the link and
//! calls [`DfuDevice::restart`].
//!
//! Behaviour:
//!
//! - INIT_REQUEST / FORCE_INIT_REQUEST (either mode): [`CtrlPacket::open`] (9 bad signature,
//!   else 1), then dfu_ID ≤ DL (1), SDK_version ≤ the device's (6), a usable blk_size (1),
//!   every img_id one of HCPU/RES/FONT (2), every length within its partition and the
//!   COMPRESS images within the download area (3); for INIT only, recorded progress
//!   (FW_state ≥ downloading) → 10. FORCE_INIT drops that progress first. INIT_RESPONSE
//!   `is_boot` = 1 in the user bin. INIT_COMPLETED_IND saves the ctrl packet and the
//!   progress (PREPARE_START in the user bin, which then restarts; FORCE_UPDATE in the OTA
//!   manager, which goes on on the same link).
//! - RESUME_REQUEST: granted (result 0) only if the ctrl packet equals the saved one (§9)
//!   and progress is recorded, else 1. Position: `is_restart` if an image failed or
//!   FW_state is past downloading; a downloaded current image → the next one from 0 (the
//!   last one as is); else the current image at the saved count **rounded down to a whole
//!   erase sector**, because NOR cannot program a word twice and a cut may have torn the
//!   blocks after the count: the resumed IMAGE_SEND_START erases from that sector on.
//!   RESUME_COMPLETED_IND then acts as INIT_COMPLETED_IND, keeping the progress.
//! - IMAGE_SEND_START in the user bin → 1. In the OTA manager, after the boot into
//!   PREPARE_START or an INIT/RESUME there: the image's state decides — downloading or
//!   downloaded with equal fields → resume (no erase but of the sectors from the resume
//!   point), downloading with other fields → 2, otherwise fresh (state TRAN_START saved,
//!   then the target region erased: 16 on an erase failure). COMPRESS images go to the
//!   download area (packed in ctrl order, each on a sector boundary), the others in place
//!   to their partition, which sets `is_force`. The 30 s timer stops here.
//! - IMAGE_SEND_PACKET: `pkt_idx` must be the accepted count + 1, else one
//!   LINK_LOSE_CHECK_REQ with the accepted count until an in-order packet comes. The record
//!   is checked with [`Record::verify`] (session key if ENC); a block that fails marks the
//!   image downloaded_fail, is answered 8 (FW_INVALID) and so is every later packet of the
//!   image, so the remote sees the failure when it closes its window: resending the same
//!   record cannot help. The block is written still encrypted at its offset; a block equal
//!   to what the flash holds is not written again (resent after a rollback). Acknowledged
//!   when the count is a multiple of `num_of_rsp` or the last.
//! - IMAGE_SEND_END: [`ImageEntry::verify_payload`] over the stored payload → 0 (image
//!   downloaded, saved) or 8 (downloaded_fail, saved).
//! - TRANSMISSION_END: every image must be downloaded (else END_IND 1). State INSTALL
//!   (saved, `is_force`), each COMPRESS image decrypted if ENC, inflated with
//!   [`decompress_payload`] capped at its partition, written plain; then one record with
//!   state UPDATING and the new partition headers, END_IND(0), force-mode register, restart.
//!   An install failure → FORCE_UPDATE and END_IND(8). The host's "send what is queued
//!   before restarting" stands in for the SDK's 500 ms wait.
//! - RETRANSMISSION_REQUEST: the halving rule of §7 (no acknowledgement yet this image, or
//!   more than 2 retries → `num_of_rsp` halves, an odd one becoming 1; else the retry count
//!   grows), rollback to the last acknowledged count, RETRANSMISSION_RESPONSE. The same rule
//!   sets LINK_LOSE_CHECK_REQ's `new_num_of_rsp`.
//! - Disconnect in the OTA manager = error handling: the accepted count is saved; with
//!   `is_force` → FORCE_UPDATE, stay and wait for the remote's INIT; else → IDLE (the
//!   progress kept for a resume), force-mode register, restart. The 30 s timer expiring in
//!   PREPARE_START does the same.
//!
//! Persistence. The progress is one [`RecordLog`] record (two sectors), so every save is
//! atomic; it is saved at init/resume completion, image start (before the erase, which
//! makes the erase-completion save of §9 the same record), image end, install start, install
//! end and error handling. The ctrl packet is kept in its own region as its plain content
//! with the session key replaced by `AES-256-CBC(root key, IV = UID, session key)` (§6), and
//! the progress names it by digest, so a torn ctrl region is never taken for the saved one.
//! Partition headers (length, ENC flag, wrapped key) live in the progress record, like the
//! SDK's secure-config image headers; an ENC image written in place stays encrypted in flash
//! and [`DfuDevice::partition_image`] decrypts it, as the flash controller does for XIP.
//! A power cut at any write leaves the old user bin (state still IDLE/PREPARE_START, no
//! partition touched), the new one (UPDATING written) or the OTA manager in FORCE_UPDATE.
//!
//! Choices where the notes are open: the device's own 6 s link supervision is not modelled
//! (the link reports its loss); EXT messages, READ_VERSION and dfu_ID 2 self-updates are
//! ignored; END_IND is always sent (end mode 1); blk_size must divide the erase size or be a
//! multiple of it; at most [`MAX_IMAGES`] images per package.

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use embedded_storage::nor_flash::NorFlash;
use otaweb::image::digest::sha256;
use otaweb::image::sifli::{
    ctr_apply, decompress_payload, unwrap_session_key, wrap_session_key, CtrlPacket, DfuId,
    ImageEntry, ImageId, PublicKey, Record, KEY_LEN, MAX_BLK_SIZE, NONCE_LEN,
};
use otaweb::time::Millis;
use otaweb::wire::dfu::{
    DfuErrorCode, EndMode, Message, MAX_PACKET_MESSAGE_LEN, PREPARE_START_TIMEOUT,
};
use otaweb::wire::sifli::{Category, Fragmenter, Reassembler, MIN_VALUE_SIZE};

use crate::record::{LogError, RecordLog};

/// Most images a package may list here (the progress record has a state byte for each).
pub const MAX_IMAGES: usize = 8;
/// The progress record's magic, "DFU1".
const MAGIC: u32 = 0x4446_5531;
/// Partitions the user bin has: HCPU, RES, FONT.
const PARTITIONS: [ImageId; 3] = [ImageId::HCPU, ImageId::RES, ImageId::FONT];
/// Bytes of one partition header in the record: length, ENC, pad, wrapped key.
const HEADER_LEN: usize = 8 + KEY_LEN;
/// Bytes of the progress record's payload.
const PAYLOAD_LEN: usize = 28 + MAX_IMAGES + PARTITIONS.len() * HEADER_LEN;
/// How much of a region is read at a time.
const CHUNK: usize = 512;

/// Which binary runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The user bin: the application whose code is the HCPU partition.
    UserBin,
    /// The OTA manager: downloads and installs.
    OtaManager,
}

/// `dfu_ctrl_state_t`, the states this device uses (§7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DfuState {
    /// Nothing under way.
    Idle = 0,
    /// INIT answered, waiting for INIT_COMPLETED_IND (RAM only).
    Neg = 1,
    /// Rebooting into the OTA manager, which waits 30 s for the remote.
    PrepareStart = 2,
    /// Images are being sent.
    TranStart = 3,
    /// Installing.
    Install = 4,
    /// Installed; the user bin resets this to IDLE.
    Updating = 5,
    /// The OTA manager waits for the remote to finish (in-place images are broken).
    ForceUpdate = 6,
}

impl DfuState {
    fn from_u8(b: u8) -> Option<DfuState> {
        Some(match b {
            0 => DfuState::Idle,
            1 => DfuState::Neg,
            2 => DfuState::PrepareStart,
            3 => DfuState::TranStart,
            4 => DfuState::Install,
            5 => DfuState::Updating,
            6 => DfuState::ForceUpdate,
            _ => return None,
        })
    }
}

/// FW_state: none.
const FW_NONE: u8 = 0;
/// FW_state: downloading.
const FW_DOWNLOADING: u8 = 1;
/// FW_state: installing.
const FW_INSTALLING: u8 = 2;
/// FW_state: installed.
const FW_INSTALLED: u8 = 3;
/// img_state: idle.
const IMG_IDLE: u8 = 0;
/// img_state: downloading.
const IMG_DOWNLOADING: u8 = 1;
/// img_state: downloaded_fail.
const IMG_FAILED: u8 = 2;
/// img_state: downloaded.
const IMG_DOWNLOADED: u8 = 3;

/// A sector-aligned window of the flash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// Start, a multiple of the erase size.
    pub base: u32,
    /// Size, a multiple of the erase size.
    pub size: u32,
}

impl Region {
    /// The region `size_kib` KiB long starting `base_kib` KiB into the flash.
    #[must_use]
    pub const fn kib(base_kib: u32, size_kib: u32) -> Region {
        Region {
            base: base_kib * 1024,
            size: size_kib * 1024,
        }
    }

    fn end(&self) -> u64 {
        u64::from(self.base) + u64::from(self.size)
    }
}

/// Where everything lies on the flash: §10 scaled down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DfuLayout {
    /// Erase size all regions are cut into (a multiple of the flash's).
    pub erase_size: u32,
    /// Write-word size (a multiple of the flash's, dividing 16).
    pub write_size: u32,
    /// The OTA manager's code: reserved, never written by the device.
    pub ota_manager: Region,
    /// The progress record log: two sectors.
    pub progress: Region,
    /// The saved ctrl packet.
    pub ctrl: Region,
    /// The download area ("Upgrade bin") for COMPRESS images.
    pub download: Region,
    /// HCPU user code: the user bin.
    pub hcpu: Region,
    /// Resources, written in place.
    pub res: Region,
    /// Fonts, written in place.
    pub font: Region,
}

impl DfuLayout {
    /// dfu.md §10 scaled to a 128 KiB part with 4 KiB sectors and 4-byte writes: the demo
    /// device's layout, and the tests'.
    pub const SMALL: DfuLayout = DfuLayout {
        erase_size: 4096,
        write_size: 4,
        ota_manager: Region::kib(0, 8),
        progress: Region::kib(8, 8),
        ctrl: Region::kib(16, 4),
        download: Region::kib(20, 16),
        hcpu: Region::kib(36, 48),
        res: Region::kib(84, 24),
        font: Region::kib(108, 16),
    };

    fn regions(&self) -> [Region; 7] {
        [
            self.ota_manager,
            self.progress,
            self.ctrl,
            self.download,
            self.hcpu,
            self.res,
            self.font,
        ]
    }

    fn partition(&self, id: ImageId) -> Option<Region> {
        match id {
            ImageId::HCPU => Some(self.hcpu),
            ImageId::RES => Some(self.res),
            ImageId::FONT => Some(self.font),
            _ => None,
        }
    }

    fn log(&self) -> RecordLog {
        RecordLog {
            base: self.progress.base,
            sector_size: self.erase_size,
            write_size: self.write_size,
            magic: MAGIC,
            payload_len: PAYLOAD_LEN,
        }
    }

    /// Checks alignment, bounds and overlaps against `flash`.
    fn validate<F: NorFlash>(&self, flash: &F) -> Result<(), SetupError<F::Error>> {
        let (es, ws) = (self.erase_size as usize, self.write_size as usize);
        let geometry = es.is_power_of_two()
            && ws.is_power_of_two()
            && 16 % ws == 0
            && es.is_multiple_of(F::ERASE_SIZE)
            && ws.is_multiple_of(F::WRITE_SIZE)
            && F::READ_SIZE == 1
            && self.log().records_per_sector() > 0
            && self.progress.size == 2 * self.erase_size;
        if !geometry {
            return Err(SetupError::Layout);
        }
        let regions = self.regions();
        for (i, r) in regions.iter().enumerate() {
            let aligned = r.size > 0
                && r.base.is_multiple_of(self.erase_size)
                && r.size.is_multiple_of(self.erase_size);
            if !aligned || r.end() > flash.capacity() as u64 {
                return Err(SetupError::Layout);
            }
            let overlaps = regions[i + 1..]
                .iter()
                .any(|o| u64::from(r.base) < o.end() && u64::from(o.base) < r.end());
            if overlaps {
                return Err(SetupError::Layout);
            }
        }
        Ok(())
    }
}

/// The device's identity, versions and layout.
#[derive(Clone, Debug)]
pub struct DfuConfig {
    /// The efuse ROOT key that decrypts ctrl packets and wraps the session key.
    pub root_key: [u8; KEY_LEN],
    /// The secure config's `sig_pub_key`; its SHA-256 gives the counter nonce.
    pub public_key: PublicKey,
    /// The efuse UID, the IV of the wrapped session key.
    pub uid: [u8; 16],
    /// `SIFLI_VERSION`: packages needing a higher SDK are refused (6).
    pub sdk_version: u32,
    /// Largest notification value, header included.
    pub max_value_size: usize,
    /// The flash layout.
    pub layout: DfuLayout,
}

/// Why a device could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupError<E> {
    /// The layout does not fit the flash, or the value size is too small.
    Layout,
    /// An image does not fit its partition.
    TooLarge,
    /// The flash refused an operation.
    Flash(E),
}

/// What the device asks of its host loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DfuDeviceEvent {
    /// Send what is queued, drop the link and call [`DfuDevice::restart`].
    RestartRequested,
}

/// One partition's header: what the user bin runs from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct Header {
    len: u32,
    enc: bool,
    wrapped_key: [u8; KEY_LEN],
}

/// The persisted progress (`dfu_download_progress_t`, reduced).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Progress {
    state: DfuState,
    fw_state: u8,
    is_force: bool,
    /// Index into the ctrl images of the current image.
    curr: Option<u8>,
    num_of_rsp: u8,
    curr_pkt_num: u32,
    img_length: u32,
    total_pkt_num: u32,
    /// Digest of the ctrl region's content; `None` when no ctrl packet is saved.
    ctrl_digest: Option<[u8; 8]>,
    img_state: [u8; MAX_IMAGES],
    headers: [Header; 3],
}

impl Progress {
    fn fresh(headers: [Header; 3]) -> Progress {
        Progress {
            state: DfuState::Idle,
            fw_state: FW_NONE,
            is_force: false,
            curr: None,
            num_of_rsp: 1,
            curr_pkt_num: 0,
            img_length: 0,
            total_pkt_num: 0,
            ctrl_digest: None,
            img_state: [IMG_IDLE; MAX_IMAGES],
            headers,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PAYLOAD_LEN);
        out.extend_from_slice(&[
            self.state as u8,
            self.fw_state,
            u8::from(self.is_force),
            self.curr.unwrap_or(0xFF),
            self.num_of_rsp,
            u8::from(self.ctrl_digest.is_some()),
            0,
            0,
        ]);
        out.extend_from_slice(&self.curr_pkt_num.to_le_bytes());
        out.extend_from_slice(&self.img_length.to_le_bytes());
        out.extend_from_slice(&self.total_pkt_num.to_le_bytes());
        out.extend_from_slice(&self.ctrl_digest.unwrap_or([0; 8]));
        out.extend_from_slice(&self.img_state);
        for h in &self.headers {
            out.extend_from_slice(&h.len.to_le_bytes());
            out.extend_from_slice(&[u8::from(h.enc), 0, 0, 0]);
            out.extend_from_slice(&h.wrapped_key);
        }
        out
    }

    fn decode(p: &[u8]) -> Option<Progress> {
        let word = |at: usize| Some(u32::from_le_bytes(p.get(at..at + 4)?.try_into().ok()?));
        let mut headers = [Header::default(); 3];
        for (i, h) in headers.iter_mut().enumerate() {
            let at = 28 + MAX_IMAGES + i * HEADER_LEN;
            *h = Header {
                len: word(at)?,
                enc: *p.get(at + 4)? != 0,
                wrapped_key: p.get(at + 8..at + 8 + KEY_LEN)?.try_into().ok()?,
            };
        }
        Some(Progress {
            state: DfuState::from_u8(*p.first()?)?,
            fw_state: *p.get(1)?,
            is_force: *p.get(2)? != 0,
            curr: Some(*p.get(3)?).filter(|&c| usize::from(c) < MAX_IMAGES),
            num_of_rsp: *p.get(4)?,
            curr_pkt_num: word(8)?,
            img_length: word(12)?,
            total_pkt_num: word(16)?,
            ctrl_digest: (*p.get(5)? != 0)
                .then(|| p.get(20..28)?.try_into().ok())
                .flatten(),
            img_state: p.get(28..28 + MAX_IMAGES)?.try_into().ok()?,
            headers,
        })
    }
}

/// What INIT/RESUME answered, awaiting its COMPLETED_IND.
enum Negotiated {
    Init(CtrlPacket),
    Resume { restart: bool },
}

/// A flash failure inside a handler: answered with a DFU error, never a panic.
struct FlashFailed;

/// Where the progress and the transfer stand, for tests and UIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DfuProgress {
    /// The persisted state (or NEG while negotiating).
    pub state: DfuState,
    /// The current image, if one was started.
    pub image: Option<ImageId>,
    /// Packets of it accepted.
    pub packets: u32,
    /// Whether a failure keeps the device in the OTA manager (in-place images touched).
    pub is_force: bool,
}

/// The SiFli DFU device: user bin and OTA manager on one flash. See the module docs.
pub struct DfuDevice<F: NorFlash> {
    flash: F,
    config: DfuConfig,
    nonce8: [u8; NONCE_LEN],
    mode: Mode,
    /// RTC_BAKCUP_OTA_FORCE_MODE: survives `restart`, not a power cut.
    force_mode_register: bool,
    progress: Progress,
    ctrl: Option<CtrlPacket>,
    negotiated: Option<Negotiated>,
    /// The OTA manager takes images (booted into PREPARE_START, or INIT/RESUME here).
    granted: bool,
    accepted: u32,
    last_acked: u32,
    acked_once: bool,
    retries: u8,
    link_lose_sent: bool,
    rx: Reassembler,
    outbox: VecDeque<Vec<u8>>,
    tx: Option<Fragmenter<Vec<u8>>>,
    timer: Option<Millis>,
    restarting: bool,
    events: VecDeque<DfuDeviceEvent>,
}

impl<F: NorFlash> DfuDevice<F> {
    /// Writes factory images (plain) to the HCPU, RES and FONT partitions and a fresh
    /// progress record naming them, as a factory programmer does. Image lengths must be
    /// multiples of the layout's write size.
    pub fn provision(
        flash: &mut F,
        config: &DfuConfig,
        images: [&[u8]; 3],
    ) -> Result<(), SetupError<F::Error>> {
        let layout = config.layout;
        layout.validate(flash)?;
        let mut headers = [Header::default(); 3];
        for ((id, image), header) in PARTITIONS.iter().zip(images).zip(&mut headers) {
            let region = layout.partition(*id).ok_or(SetupError::Layout)?;
            let len = u32::try_from(image.len()).map_err(|_| SetupError::TooLarge)?;
            if len > region.size || !image.len().is_multiple_of(layout.write_size as usize) {
                return Err(SetupError::TooLarge);
            }
            flash
                .erase(region.base, region.base + region.size)
                .map_err(SetupError::Flash)?;
            flash.write(region.base, image).map_err(SetupError::Flash)?;
            header.len = len;
        }
        let p = layout.progress;
        flash
            .erase(p.base, p.base + p.size)
            .map_err(SetupError::Flash)?;
        layout
            .log()
            .append(flash, &Progress::fresh(headers).encode(), Progress::decode)
            .map_err(|e| match e {
                LogError::Flash(e) => SetupError::Flash(e),
                LogError::SequenceExhausted => SetupError::Layout,
            })
    }

    /// Powers the device on: the boot decision runs now (the force-mode register is clear).
    pub fn new(flash: F, config: DfuConfig, now: Millis) -> Result<Self, SetupError<F::Error>> {
        config.layout.validate(&flash)?;
        if config.max_value_size < MIN_VALUE_SIZE {
            return Err(SetupError::Layout);
        }
        let nonce8 = config.public_key.nonce8();
        let mut device = DfuDevice {
            flash,
            config,
            nonce8,
            mode: Mode::UserBin,
            force_mode_register: false,
            progress: Progress::fresh([Header::default(); 3]),
            ctrl: None,
            negotiated: None,
            granted: false,
            accepted: 0,
            last_acked: 0,
            acked_once: false,
            retries: 0,
            link_lose_sent: false,
            rx: Reassembler::new(MAX_PACKET_MESSAGE_LEN),
            outbox: VecDeque::new(),
            tx: None,
            timer: None,
            restarting: false,
            events: VecDeque::new(),
        };
        device.boot(now);
        Ok(device)
    }

    /// Reboots: RAM is lost except the force-mode register, and the boot decision runs.
    pub fn restart(&mut self, now: Millis) {
        self.boot(now);
    }

    /// Which binary runs.
    #[must_use]
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The progress as the device holds it.
    #[must_use]
    pub fn progress(&self) -> DfuProgress {
        let image = self
            .progress
            .curr
            .and_then(|c| self.ctrl.as_ref()?.images.get(usize::from(c)))
            .map(|e| ImageId(e.img_id));
        let state = if self.negotiated.is_some() {
            DfuState::Neg
        } else {
            self.progress.state
        };
        DfuProgress {
            state,
            image,
            packets: self.accepted,
            is_force: self.progress.is_force,
        }
    }

    /// The image the user bin runs from partition `id` (HCPU, RES or FONT), decrypted if
    /// stored encrypted; `None` for another id or on a flash error.
    #[must_use]
    pub fn partition_image(&mut self, id: ImageId) -> Option<Vec<u8>> {
        let index = PARTITIONS.iter().position(|&p| p == id)?;
        let region = self.config.layout.partition(id)?;
        let header = self.progress.headers[index];
        let mut bytes = vec![0; header.len as usize];
        self.flash.read(region.base, &mut bytes).ok()?;
        if header.enc {
            let key =
                unwrap_session_key(&self.config.root_key, &self.config.uid, &header.wrapped_key);
            ctr_apply(&key, &self.nonce8, 0, &mut bytes).ok()?;
        }
        Some(bytes)
    }

    /// SHA-256 of [`DfuDevice::partition_image`].
    #[must_use]
    pub fn partition_digest(&mut self, id: ImageId) -> Option<[u8; 32]> {
        self.partition_image(id).map(|b| sha256(&b))
    }

    /// The flash.
    pub fn flash(&self) -> &F {
        &self.flash
    }

    /// The flash, to inject faults.
    pub fn flash_mut(&mut self) -> &mut F {
        &mut self.flash
    }

    /// The central connected and enabled notifications.
    pub fn handle_connected(&mut self, _now: Millis) {
        self.clear_link();
    }

    /// The link dropped: in the OTA manager, error handling (module docs).
    pub fn handle_disconnected(&mut self, _now: Millis) {
        self.clear_link();
        self.negotiated = None;
        if self.mode == Mode::OtaManager && !self.restarting {
            self.error_handling();
        }
    }

    /// A value written to the data characteristic.
    pub fn handle_write(&mut self, _now: Millis, bytes: &[u8]) {
        if self.restarting {
            return;
        }
        // The OTA manager builds drop bad assemblies silently (§1); so does this one.
        let Ok(Some(assembled)) = self.rx.push(bytes) else {
            return;
        };
        if assembled.category != Category::DFU {
            return;
        }
        if let Ok(message) = Message::decode(&assembled.payload) {
            self.on_message(message);
        }
    }

    /// The next notification value, appended to `buf`; its length.
    pub fn poll_notify(&mut self, buf: &mut Vec<u8>) -> Option<usize> {
        loop {
            if let Some(tx) = &mut self.tx {
                if let Some(len) = tx.emit_next(buf) {
                    return Some(len);
                }
                self.tx = None;
            }
            let message = self.outbox.pop_front()?;
            self.tx = Fragmenter::new(Category::DFU, message, self.config.max_value_size).ok();
        }
    }

    /// The OTA manager's 30 s PREPARE_START deadline, while it runs.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.timer
    }

    /// The deadline passed: still in PREPARE_START → back to the user bin.
    pub fn handle_timeout(&mut self, now: Millis) {
        if self.timer.is_some_and(|t| now >= t) {
            self.timer = None;
            if self.progress.state == DfuState::PrepareStart {
                self.error_handling();
            }
        }
    }

    /// The next request to the host loop.
    pub fn poll_event(&mut self) -> Option<DfuDeviceEvent> {
        self.events.pop_front()
    }

    fn clear_link(&mut self) {
        self.rx.reset();
        self.outbox.clear();
        self.tx = None;
    }

    fn boot(&mut self, now: Millis) {
        self.clear_link();
        self.negotiated = None;
        self.granted = false;
        self.restarting = false;
        self.timer = None;
        self.link_lose_sent = false;
        self.load();
        self.accepted = self.progress.curr_pkt_num;
        let to_user = core::mem::take(&mut self.force_mode_register);
        let state = self.progress.state;
        if to_user || self.ctrl.is_none() && state != DfuState::ForceUpdate {
            return self.enter_user_bin();
        }
        match state {
            DfuState::PrepareStart => {
                self.mode = Mode::OtaManager;
                self.granted = true;
                self.timer = Some(now + PREPARE_START_TIMEOUT);
            }
            DfuState::TranStart | DfuState::Install | DfuState::Updating => {
                self.mode = Mode::OtaManager;
                self.progress.state = DfuState::ForceUpdate;
                // A failed save leaves the old state, which boots here again.
                let _ = self.save();
            }
            DfuState::ForceUpdate => self.mode = Mode::OtaManager,
            DfuState::Idle | DfuState::Neg => self.enter_user_bin(),
        }
    }

    fn enter_user_bin(&mut self) {
        self.mode = Mode::UserBin;
        if self.progress.state == DfuState::Updating {
            self.progress = Progress::fresh(self.progress.headers);
            self.accepted = 0;
            // Cut before this lands, the next boot sees UPDATING and waits in the OTA
            // manager with the new images already in place.
            let _ = self.save();
        }
    }

    /// Reads the progress record and the ctrl packet it names.
    fn load(&mut self) {
        let log = self.config.layout.log();
        self.progress = match log.latest(&mut self.flash, Progress::decode) {
            Ok(Some(p)) => p,
            _ => Progress::fresh([Header::default(); 3]),
        };
        self.ctrl = self
            .progress
            .ctrl_digest
            .and_then(|digest| self.read_ctrl(digest));
    }

    fn read_ctrl(&mut self, digest: [u8; 8]) -> Option<CtrlPacket> {
        let region = self.config.layout.ctrl;
        let mut len = [0; 4];
        self.flash.read(region.base, &mut len).ok()?;
        let len = u32::from_le_bytes(len) as usize;
        if len + 4 > region.size as usize {
            return None;
        }
        let mut stored = vec![0; len + 4];
        self.flash.read(region.base, &mut stored).ok()?;
        if sha256(&stored)[..8] != digest {
            return None;
        }
        let mut ctrl = CtrlPacket::parse_plain(&stored[4..]).ok()?;
        ctrl.session_key =
            unwrap_session_key(&self.config.root_key, &self.config.uid, &ctrl.session_key);
        Some(ctrl)
    }

    /// Saves `ctrl` to its region (session key wrapped); returns the digest naming it.
    fn write_ctrl(&mut self, ctrl: &CtrlPacket) -> Result<[u8; 8], FlashFailed> {
        let mut stored = ctrl.clone();
        stored.session_key =
            wrap_session_key(&self.config.root_key, &self.config.uid, &ctrl.session_key);
        let plain = stored.to_plain().map_err(|_| FlashFailed)?;
        let mut bytes = (plain.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&plain);
        let digest: [u8; 8] = sha256(&bytes)[..8].try_into().map_err(|_| FlashFailed)?;
        bytes.resize(
            bytes
                .len()
                .next_multiple_of(self.config.layout.write_size as usize),
            0xFF,
        );
        let region = self.config.layout.ctrl;
        if bytes.len() > region.size as usize {
            return Err(FlashFailed);
        }
        self.flash
            .erase(region.base, region.base + region.size)
            .map_err(|_| FlashFailed)?;
        self.flash
            .write(region.base, &bytes)
            .map_err(|_| FlashFailed)?;
        Ok(digest)
    }

    fn save(&mut self) -> Result<(), FlashFailed> {
        let log = self.config.layout.log();
        log.append(&mut self.flash, &self.progress.encode(), Progress::decode)
            .map_err(|_| FlashFailed)
    }

    fn send(&mut self, message: &Message<'_>) {
        if let Ok(bytes) = message.to_vec() {
            self.outbox.push_back(bytes);
        }
    }

    fn request_restart(&mut self) {
        self.restarting = true;
        self.events.push_back(DfuDeviceEvent::RestartRequested);
    }

    /// §7 error handling: FORCE_UPDATE and stay if in-place images are touched, else IDLE
    /// and back to the user bin. The accepted count is saved for a resume.
    fn error_handling(&mut self) {
        self.timer = None;
        self.granted = false;
        if self.progress.curr.is_some() && self.progress.fw_state == FW_DOWNLOADING {
            self.progress.curr_pkt_num = self.accepted;
        }
        if self.progress.is_force {
            self.progress.state = DfuState::ForceUpdate;
            let _ = self.save();
        } else {
            self.progress.state = DfuState::Idle;
            let _ = self.save();
            self.force_mode_register = true;
            self.request_restart();
        }
    }

    fn on_message(&mut self, message: Message<'_>) {
        let ota = self.mode == Mode::OtaManager;
        match message {
            Message::InitRequest { ctrl_packet } => self.init(ctrl_packet, false),
            Message::ForceInitRequest { ctrl_packet } => self.init(ctrl_packet, true),
            Message::ResumeRequest { ctrl_packet } => self.resume(ctrl_packet),
            Message::InitCompletedInd { is_start: true }
            | Message::ResumeCompletedInd { is_start: true } => self.completed(),
            Message::ImageSendStart {
                img_length,
                total_pkt_num,
                num_of_rsp,
                img_id,
            } => {
                let result = if ota {
                    self.image_start(img_length, total_pkt_num, num_of_rsp, img_id)
                } else {
                    DfuErrorCode::GeneralErr
                };
                self.send(&Message::ImageSendStartResponse {
                    result: result.code(),
                    end_mode: EndMode::Send,
                    skip: false,
                });
            }
            Message::ImageSendPacket {
                img_id,
                pkt_idx,
                data,
            } if ota => self.packet(img_id, pkt_idx, data),
            Message::ImageSendEnd { img_id, .. } if ota => {
                let result = self.image_end(img_id);
                self.send(&Message::ImageSendEndResponse {
                    result: result.code(),
                });
            }
            Message::TransmissionEnd if ota => self.install(),
            Message::RetransmissionRequest if ota => {
                let rsp = self.adapt_rate();
                self.accepted = self.last_acked;
                self.link_lose_sent = false;
                self.send(&Message::RetransmissionResponse {
                    result: 0,
                    new_num_of_rsp: u16::from(rsp),
                    retransmission_packet_num: self.last_acked,
                });
            }
            // LINK_LOSE_CHECK_RSP, versions, EXT messages and the rest: nothing to do.
            _ => {}
        }
    }

    /// INIT_REQUEST / FORCE_INIT_REQUEST.
    fn init(&mut self, bytes: &[u8], force: bool) {
        if force && self.progress.fw_state != FW_NONE {
            self.drop_download();
            let _ = self.save();
        }
        let result = match self.check_ctrl(bytes) {
            Ok(ctrl) if !force && self.progress.fw_state >= FW_DOWNLOADING => {
                drop(ctrl);
                DfuErrorCode::OtaOngoing.code()
            }
            Ok(ctrl) => {
                self.negotiated = Some(Negotiated::Init(ctrl));
                0
            }
            Err(code) => code,
        };
        self.send(&Message::InitResponse {
            result,
            is_boot: result == 0 && self.mode == Mode::UserBin,
        });
    }

    fn drop_download(&mut self) {
        self.progress.fw_state = FW_NONE;
        self.progress.img_state = [IMG_IDLE; MAX_IMAGES];
        self.progress.curr = None;
        self.progress.curr_pkt_num = 0;
        self.accepted = 0;
    }

    /// Opens and checks a ctrl packet (module docs); the error is the device code.
    fn check_ctrl(&self, bytes: &[u8]) -> Result<CtrlPacket, u16> {
        let c = &self.config;
        let ctrl = CtrlPacket::open(bytes, &c.root_key, &c.public_key, &self.nonce8)
            .map_err(|e| e.device_code())?;
        let general = DfuErrorCode::GeneralErr.code();
        if ctrl.dfu_id > DfuId::DL.0 || ctrl.images.len() > MAX_IMAGES {
            return Err(general);
        }
        if ctrl.sdk_version > c.sdk_version {
            return Err(DfuErrorCode::SdkVerErr.code());
        }
        let (blk, es) = (u32::from(ctrl.blk_size), c.layout.erase_size);
        if blk == 0
            || blk % 16 != 0
            || ctrl.blk_size > MAX_BLK_SIZE
            || !(es.is_multiple_of(blk) || blk.is_multiple_of(es))
        {
            return Err(general);
        }
        for entry in &ctrl.images {
            let Some(region) = c.layout.partition(ImageId(entry.img_id)) else {
                return Err(DfuErrorCode::ParameterInvalid.code());
            };
            if entry.length > region.size {
                return Err(DfuErrorCode::SpaceNotEnough.code());
            }
        }
        if self.download_end(&ctrl) > u64::from(c.layout.download.size) {
            return Err(DfuErrorCode::SpaceNotEnough.code());
        }
        Ok(ctrl)
    }

    /// Bytes of the download area the COMPRESS images of `ctrl` take.
    fn download_end(&self, ctrl: &CtrlPacket) -> u64 {
        let es = u64::from(self.config.layout.erase_size);
        ctrl.images
            .iter()
            .filter(|e| e.is_compressed())
            .map(|e| u64::from(e.length).next_multiple_of(es))
            .sum()
    }

    /// Where image `index` of `ctrl` is downloaded to.
    fn destination(&self, ctrl: &CtrlPacket, index: usize) -> Option<Region> {
        let layout = self.config.layout;
        let entry = ctrl.images.get(index)?;
        if !entry.is_compressed() {
            return layout.partition(ImageId(entry.img_id));
        }
        let es = layout.erase_size;
        let before: u32 = ctrl.images[..index]
            .iter()
            .filter(|e| e.is_compressed())
            .map(|e| e.length.next_multiple_of(es))
            .sum();
        Some(Region {
            base: layout.download.base + before,
            size: entry.length.next_multiple_of(es),
        })
    }

    /// The saved count rounded down to a whole erase sector of the image's blocks.
    fn resume_count(&self) -> u32 {
        let Some(ctrl) = &self.ctrl else { return 0 };
        let blk = u64::from(ctrl.blk_size.max(1));
        let es = u64::from(self.config.layout.erase_size);
        let bytes = u64::from(self.progress.curr_pkt_num) * blk;
        (bytes / es * es / blk) as u32
    }

    /// RESUME_REQUEST.
    fn resume(&mut self, bytes: &[u8]) {
        let general = DfuErrorCode::GeneralErr.code();
        let position = match self.check_ctrl(bytes) {
            Err(code) => Err(code),
            Ok(ctrl) if self.ctrl.as_ref() != Some(&ctrl) => Err(general),
            Ok(_) if self.progress.fw_state == FW_NONE => Err(general),
            Ok(ctrl) => Ok(self.resume_position(&ctrl)),
        };
        let message = match position {
            Ok((restart, img, packets)) => {
                self.negotiated = Some(Negotiated::Resume { restart });
                Message::ResumeResponse {
                    result: 0,
                    is_boot: self.mode == Mode::UserBin,
                    is_restart: restart,
                    curr_packet_num: packets,
                    curr_img: img,
                    num_of_rsp: Some(self.progress.num_of_rsp.max(1)),
                }
            }
            Err(result) => Message::ResumeResponse {
                result,
                is_boot: false,
                is_restart: false,
                curr_packet_num: 0,
                curr_img: ImageId(0),
                num_of_rsp: Some(1),
            },
        };
        self.send(&message);
    }

    /// `(is_restart, curr_img, curr_packet_num)` per §9.
    fn resume_position(&self, ctrl: &CtrlPacket) -> (bool, ImageId, u32) {
        let p = &self.progress;
        let first = ImageId(ctrl.images.first().map_or(0, |e| e.img_id));
        let n = ctrl.images.len();
        let failed = p.img_state[..n].contains(&IMG_FAILED);
        let Some(curr) = p.curr.map(usize::from).filter(|&c| c < n) else {
            return (true, first, 0);
        };
        if failed || p.fw_state > FW_DOWNLOADING {
            return (true, first, 0);
        }
        let id = |i: usize| ImageId(ctrl.images[i].img_id);
        // An earlier image that is not whole (a garbled answer let the remote move on) is
        // where the resume must start, or every resume ends at END_IND 1.
        if let Some(gap) = (0..curr).find(|&i| p.img_state[i] != IMG_DOWNLOADED) {
            return (false, id(gap), 0);
        }
        match p.img_state[curr] {
            IMG_DOWNLOADED if curr + 1 < n => (false, id(curr + 1), 0),
            IMG_DOWNLOADED => (false, id(curr), p.total_pkt_num),
            IMG_DOWNLOADING => (false, id(curr), self.resume_count()),
            _ => (false, id(curr), 0),
        }
    }

    /// INIT_COMPLETED_IND / RESUME_COMPLETED_IND.
    fn completed(&mut self) {
        let Some(negotiated) = self.negotiated.take() else {
            return;
        };
        match negotiated {
            Negotiated::Init(ctrl) => {
                self.drop_download();
                match self.write_ctrl(&ctrl) {
                    Ok(digest) => self.progress.ctrl_digest = Some(digest),
                    Err(FlashFailed) => return,
                }
                self.progress.num_of_rsp = 1;
                self.ctrl = Some(ctrl);
            }
            Negotiated::Resume { restart } => {
                if restart {
                    self.drop_download();
                }
            }
        }
        self.progress.state = match self.mode {
            Mode::UserBin => DfuState::PrepareStart,
            // In place images may be broken already: a cut here must come back here.
            Mode::OtaManager => DfuState::ForceUpdate,
        };
        if self.save().is_err() {
            return;
        }
        match self.mode {
            Mode::UserBin => self.request_restart(),
            Mode::OtaManager => self.granted = true,
        }
    }

    /// IMAGE_SEND_START in the OTA manager.
    fn image_start(
        &mut self,
        img_length: u32,
        total_pkt_num: u32,
        num_of_rsp: u8,
        img_id: ImageId,
    ) -> DfuErrorCode {
        let Some(ctrl) = self.ctrl.clone().filter(|_| self.granted) else {
            return DfuErrorCode::GeneralErr;
        };
        let Some(index) = ctrl.images.iter().position(|e| e.img_id == img_id.0) else {
            return DfuErrorCode::ParameterInvalid;
        };
        let Some(region) = self.destination(&ctrl, index) else {
            return DfuErrorCode::ParameterInvalid;
        };
        self.timer = None;
        let entry = &ctrl.images[index];
        let p = self.progress;
        let current = p.curr == Some(index as u8);
        let state = p.img_state[index];
        let same = (p.img_length, p.total_pkt_num, p.num_of_rsp)
            == (img_length, total_pkt_num, num_of_rsp.max(1));
        let erase_from = if current && matches!(state, IMG_DOWNLOADING | IMG_DOWNLOADED) {
            if !same {
                return DfuErrorCode::ParameterInvalid;
            }
            if state == IMG_DOWNLOADED {
                self.accepted = total_pkt_num;
                None
            } else {
                self.accepted = self.resume_count();
                Some(self.accepted * u32::from(ctrl.blk_size))
            }
        } else {
            self.progress.img_state[index] = IMG_DOWNLOADING;
            self.progress.curr = Some(index as u8);
            self.progress.img_length = img_length;
            self.progress.total_pkt_num = total_pkt_num;
            self.progress.num_of_rsp = num_of_rsp.max(1);
            self.accepted = 0;
            Some(0)
        };
        self.progress.curr_pkt_num = self.accepted;
        self.progress.fw_state = FW_DOWNLOADING;
        self.progress.state = DfuState::TranStart;
        if !entry.is_compressed() {
            self.progress.is_force = true;
        }
        self.last_acked = self.accepted;
        self.acked_once = false;
        self.retries = 0;
        self.link_lose_sent = false;
        // Saved before the erase: a cut during it boots into FORCE_UPDATE, not a user bin
        // whose in-place partition is half erased.
        if self.save().is_err() {
            return DfuErrorCode::Flash;
        }
        if let Some(from) = erase_from {
            let es = self.config.layout.erase_size;
            let start = region.base + from / es * es;
            let end = region.base + region.size;
            if start < end && self.flash.erase(start, end).is_err() {
                return DfuErrorCode::Flash;
            }
        }
        DfuErrorCode::NoErr
    }

    /// The §7 rate rule; returns the `num_of_rsp` to announce.
    fn adapt_rate(&mut self) -> u8 {
        let rsp = &mut self.progress.num_of_rsp;
        if !self.acked_once || self.retries > 2 {
            *rsp = if *rsp % 2 == 1 { 1 } else { *rsp / 2 };
        } else {
            self.retries = self.retries.saturating_add(1);
        }
        *rsp = (*rsp).max(1);
        *rsp
    }

    fn current(&self, img_id: ImageId) -> Option<(usize, ImageEntry, Region, u16)> {
        let ctrl = self.ctrl.as_ref()?;
        let index = usize::from(self.progress.curr?);
        let entry = ctrl.images.get(index).filter(|e| e.img_id == img_id.0)?;
        Some((
            index,
            entry.clone(),
            self.destination(ctrl, index)?,
            ctrl.blk_size,
        ))
    }

    /// IMAGE_SEND_PACKET.
    fn packet(&mut self, img_id: ImageId, pkt_idx: u16, data: &[u8]) {
        let reply = |code: DfuErrorCode| Message::ImageSendPacketResponse {
            result: code.code(),
        };
        let Some((index, entry, region, _)) = self.current(img_id) else {
            return self.send(&reply(DfuErrorCode::ParameterInvalid));
        };
        match self.progress.img_state[index] {
            IMG_DOWNLOADING => {}
            IMG_FAILED => return self.send(&reply(DfuErrorCode::FwInvalid)),
            _ => return self.send(&reply(DfuErrorCode::GeneralErr)),
        }
        if u32::from(pkt_idx) != self.accepted + 1 {
            if !self.link_lose_sent {
                self.link_lose_sent = true;
                let rsp = self.adapt_rate();
                self.send(&Message::LinkLoseCheckReq {
                    result: 0,
                    new_num_of_rsp: u16::from(rsp),
                    current_index: self.accepted,
                });
            }
            return;
        }
        self.link_lose_sent = false;
        if u32::from(pkt_idx) > self.progress.total_pkt_num {
            return self.send(&reply(DfuErrorCode::GeneralErr));
        }
        let key = self.ctrl.as_ref().map(|c| c.session_key);
        let enc = key
            .as_ref()
            .filter(|_| entry.is_encrypted())
            .map(|k| (k, &self.nonce8));
        let record = Record::parse(data).ok().filter(|r| r.verify(enc).is_ok());
        let Some(record) = record else {
            self.progress.img_state[index] = IMG_FAILED;
            self.progress.curr_pkt_num = self.accepted;
            let _ = self.save();
            return self.send(&reply(DfuErrorCode::FwInvalid));
        };
        let end = u64::from(record.offset) + record.block.len() as u64;
        if end > u64::from(entry.length) {
            return self.send(&reply(DfuErrorCode::GeneralErr));
        }
        if self
            .write_block(region.base + record.offset, record.block)
            .is_err()
        {
            return self.send(&reply(DfuErrorCode::Flash));
        }
        self.accepted += 1;
        let rsp = u32::from(self.progress.num_of_rsp.max(1));
        if self.accepted.is_multiple_of(rsp) || self.accepted == self.progress.total_pkt_num {
            self.last_acked = self.accepted;
            self.acked_once = true;
            self.send(&reply(DfuErrorCode::NoErr));
        }
    }

    /// Programs `block` at `at` unless the flash already holds it (a resent packet).
    fn write_block(&mut self, at: u32, block: &[u8]) -> Result<(), FlashFailed> {
        let mut held = vec![0; block.len()];
        self.flash.read(at, &mut held).map_err(|_| FlashFailed)?;
        if held == block {
            return Ok(());
        }
        if held.iter().any(|&b| b != 0xFF) {
            return Err(FlashFailed);
        }
        self.flash.write(at, block).map_err(|_| FlashFailed)
    }

    fn read_region(&mut self, base: u32, len: u32) -> Result<Vec<u8>, FlashFailed> {
        let mut out = vec![0; len as usize];
        for (i, chunk) in out.chunks_mut(CHUNK).enumerate() {
            self.flash
                .read(base + (i * CHUNK) as u32, chunk)
                .map_err(|_| FlashFailed)?;
        }
        Ok(out)
    }

    /// IMAGE_SEND_END.
    fn image_end(&mut self, img_id: ImageId) -> DfuErrorCode {
        let Some((index, entry, region, _)) = self.current(img_id) else {
            return DfuErrorCode::ParameterInvalid;
        };
        if self.progress.img_state[index] == IMG_DOWNLOADED {
            return DfuErrorCode::NoErr;
        }
        if self.accepted != self.progress.total_pkt_num
            || self.progress.img_state[index] != IMG_DOWNLOADING
        {
            return DfuErrorCode::GeneralErr;
        }
        let Ok(stored) = self.read_region(region.base, entry.length) else {
            return DfuErrorCode::Flash;
        };
        let ok = entry
            .verify_payload(&self.config.public_key, &stored)
            .is_ok();
        self.progress.img_state[index] = if ok { IMG_DOWNLOADED } else { IMG_FAILED };
        self.progress.curr_pkt_num = self.accepted;
        let _ = self.save();
        if ok {
            DfuErrorCode::NoErr
        } else {
            DfuErrorCode::FwInvalid
        }
    }

    /// TRANSMISSION_END: install, END_IND, restart into the user bin.
    fn install(&mut self) {
        let Some(ctrl) = self.ctrl.clone() else {
            return self.send(&Message::EndInd { result: 1 });
        };
        let n = ctrl.images.len();
        if self.progress.img_state[..n]
            .iter()
            .any(|&s| s != IMG_DOWNLOADED)
        {
            return self.send(&Message::EndInd { result: 1 });
        }
        self.progress.state = DfuState::Install;
        self.progress.fw_state = FW_INSTALLING;
        self.progress.is_force = true;
        if self.save().is_err() {
            return self.send(&Message::EndInd { result: 16 });
        }
        match self.install_images(&ctrl) {
            Ok(headers) => {
                self.progress.headers = headers;
                self.progress.state = DfuState::Updating;
                self.progress.fw_state = FW_INSTALLED;
                if self.save().is_err() {
                    return self.install_failed();
                }
                self.send(&Message::EndInd { result: 0 });
                self.force_mode_register = true;
                self.request_restart();
            }
            Err(FlashFailed) => self.install_failed(),
        }
    }

    fn install_failed(&mut self) {
        self.progress.state = DfuState::ForceUpdate;
        let _ = self.save();
        self.granted = false;
        self.send(&Message::EndInd {
            result: DfuErrorCode::FwInvalid.code() as u8,
        });
    }

    /// Inflates and writes every COMPRESS image; the new partition headers.
    fn install_images(&mut self, ctrl: &CtrlPacket) -> Result<[Header; 3], FlashFailed> {
        let mut headers = self.progress.headers;
        let ws = self.config.layout.write_size as usize;
        for (index, entry) in ctrl.images.iter().enumerate() {
            let id = ImageId(entry.img_id);
            let slot = PARTITIONS
                .iter()
                .position(|&p| p == id)
                .ok_or(FlashFailed)?;
            let part = self.config.layout.partition(id).ok_or(FlashFailed)?;
            if !entry.is_compressed() {
                headers[slot] = Header {
                    len: entry.length,
                    enc: entry.is_encrypted(),
                    wrapped_key: if entry.is_encrypted() {
                        wrap_session_key(&self.config.root_key, &self.config.uid, &ctrl.session_key)
                    } else {
                        [0; KEY_LEN]
                    },
                };
                continue;
            }
            let from = self.destination(ctrl, index).ok_or(FlashFailed)?;
            let mut payload = self.read_region(from.base, entry.length)?;
            if entry.is_encrypted() {
                ctr_apply(&ctrl.session_key, &self.nonce8, 0, &mut payload)
                    .map_err(|_| FlashFailed)?;
            }
            let mut plain =
                decompress_payload(&payload, part.size as usize).map_err(|_| FlashFailed)?;
            let len = u32::try_from(plain.len()).map_err(|_| FlashFailed)?;
            plain.resize(plain.len().next_multiple_of(ws), 0xFF);
            self.flash
                .erase(part.base, part.base + part.size)
                .map_err(|_| FlashFailed)?;
            self.flash
                .write(part.base, &plain)
                .map_err(|_| FlashFailed)?;
            headers[slot] = Header {
                len,
                enc: false,
                wrapped_key: [0; KEY_LEN],
            };
        }
        Ok(headers)
    }
}
