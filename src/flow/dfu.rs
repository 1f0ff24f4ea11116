//! SiFli OTA-manager DFU, remote (phone) side: a sans-IO state machine implementing [`Flow`].
//!
//! Contract. [`DfuUpdate`] owns one package (`ctrl_packet.bin` and one transfer file per
//! image) and drives one SiFli device through INIT in its user bin, the reboot into the OTA
//! manager, the image transfer and the installation (`protocols/dfu.md` §2, §7–§9). The edge
//! writes every datagram [`Flow::poll_transmit`] yields to the serial-transport data
//! characteristic (write without response, channel `()`), feeds every notification of that
//! characteristic to [`Flow::handle_input`], reports the link with [`Flow::handle_connected`]
//! (notifications enabled) and [`Flow::handle_disconnected`], and reconnects when the flow
//! emits [`DfuEvent::NeedsReconnect`]. Each datagram is one serial-transport frame of at most
//! [`DfuOptions::max_value_size`] bytes; frames of two messages never interleave.
//!
//! ```text
//!  ExpectConnection{Init} ──connected──▶ ExpectInitResponse ──0──▶ INIT_COMPLETED_IND ─┐
//!        │ OTA_ONGOING (10): resume ─▶ RESUME_REQUEST ─▶ ExpectResumeResponse ──0──▶ RESUME_COMPLETED_IND ─┤
//!        │                   restart ─▶ FORCE_INIT_REQUEST ─▶ ExpectInitResponse{force}       │
//!        ▼                                                                                   │
//!  is_boot: ExpectLinkDrop ──drop──▶ ExpectConnection{Images} (30 s window) ──connected──┐   │
//!  not boot: ────────────────────────────────────────────────────────────────────────────┴───┘
//!  per image: IMAGE_SEND_START ─▶ ExpectStartResponse ─▶ Sending ─(max_unacked written)─▶ ExpectPacketResponse
//!             ◀─ more packets ◀─ ack ─┘    ▲ LINK_LOSE_CHECK_REQ: reply, Paused 1 s, resend from its index
//!             deadline ─▶ RETRANSMISSION_REQUEST ─▶ ExpectRetransmissionResponse ─▶ resend from its number
//!             all acked ─▶ IMAGE_SEND_END ─▶ ExpectEndResponse ─▶ next image
//!  TRANSMISSION_END ─▶ ExpectEndInd (unless end mode 0) ──END_IND(0)──▶ Done
//! ```
//!
//! Packets. Image packet `k` (1-based) carries record `k − 1` of the transfer file. The device
//! acknowledges when its accepted count is a multiple of `num_of_rsp` or the image is complete
//! (§7): a window of `num_of_rsp` packets, the device's own rhythm. The acknowledgement carries
//! no count, so each one is taken for the next boundary once the packets up to it are written.
//! The flow writes the current window whole and goes on while the packets written past the
//! start of the window the count is in stay within [`DfuOptions::max_unacked`], so the next
//! windows are on their way while an acknowledgement comes back; a depth of `num_of_rsp` or
//! less is stop-and-wait, each window awaiting its acknowledgement. An acknowledgement awaited
//! that does not come within [`DfuTimeouts::packet_response`] is asked for with
//! RETRANSMISSION_REQUEST; the device's answer gives the count it holds and its new (halved)
//! `num_of_rsp`, and sending resumes there (the answer follows every packet written before the
//! request, so nothing older arrives after it). LINK_LOSE_CHECK_REQ does the same from the
//! device's side, after the 1 s pause the iOS remote makes (§8); packets written after the one
//! it answers may still reach the device and, in order, move it past the count it gave (it
//! takes a packet only at its count + 1, §5, §7), so after a check the flow sends one window
//! at a time until an acknowledgement confirms the count; more checks for that same count
//! while it pauses (one per packet past the gap) extend the pause as one recovery.
//! [`DfuOptions::max_retries`] recoveries in a row without a new acknowledgement fail the
//! flow.
//!
//! Resume (§9). A link lost during the transfer emits [`DfuEvent::NeedsReconnect`]; after the
//! next connection the flow sends INIT_REQUEST again and expects OTA_ONGOING, answering
//! RESUME_REQUEST ([`OnOngoing::Resume`], the default) or FORCE_INIT_REQUEST
//! ([`OnOngoing::Restart`]). A resume continues at the image and packet the device reports
//! (from the first image if it says `is_restart`); a refused resume falls back to a forced
//! restart once. The device is in the user bin or, for in-place images, still in the OTA
//! manager; both answer INIT, so the flow needs not know which.
//!
//! Choices where the notes leave room:
//!
//! - The v1 messages (INIT_REQUEST, RESUME_REQUEST, FORCE_INIT_REQUEST), as the vendor text
//!   describes the flow (error 10, then resume or restart); the EXT variants are not sent.
//! - Timers (all in [`DfuTimeouts`]): requests 60 s and IMAGE_SEND_START 180 s (the erase), as
//!   the iOS remote; an acknowledgement 10 s (iOS waits 40 s; a window of 20 packets is well
//!   under a second on any link that works), counted from the window's last packet leaving,
//!   pushed on by every write after it and run again by every acknowledgement while a written
//!   window awaits one: it measures a link that moves nothing, however deep the pipeline and
//!   slow the link; RETRANSMISSION_RESPONSE 5 s; the link
//!   drop after INIT_COMPLETED 15 s; the reconnection to the OTA manager 30 s, its own window,
//!   after which it returns to the user bin; END_IND 60 s (installation inflates and writes
//!   every image). INIT, FORCE_INIT, RESUME and IMAGE_SEND_END go again every 5 s
//!   ([`DfuTimeouts::resend`]) until their 60 s pass: the device answers a repeat as the
//!   first (nothing is saved before the completion indication or the end's verdict), a second
//!   answer finds nothing awaiting it and is ignored, and a lost request or answer no longer
//!   fails the update (the iOS remote does not repeat; the fault campaign showed a lossy link
//!   failing a third of its updates that way). IMAGE_SEND_START goes again the same way
//!   until its 180 s: a repeat of the image being sent is a resume from the packet the device
//!   holds (rounded down to an erase sector, which it erases again), so a repeat that comes
//!   after the first packets costs a link-lose check, not the image. Any other deadline that
//!   passes fails the flow with [`LinkLost::TimedOut`].
//!   Waiting to reconnect after a drop mid-transfer has no deadline.
//! - A link lost while the device installs (awaiting END_IND) fails the flow: the outcome is
//!   the device's to decide and the protocol cannot ask for it afterwards.
//! - `num_of_rsp` of 0 from the device means 1 (the device's own halving rule, §7).
//! - A repeated notification is taken for the next acknowledgement, so the flow can count
//!   packets the device lacks and send IMAGE_SEND_END early. A LINK_LOSE_CHECK_REQ awaiting
//!   that end's answer (a packet lost before others) rewinds as during the transfer, and the
//!   refusal that follows finds the flow paused; GENERAL_ERR (1) for the end (the last packets
//!   lost) asks for the count with RETRANSMISSION_REQUEST once per image. The fault campaign's
//!   repeated values failed deep pipelines so.
//! - A refused INIT or FORCE_INIT (other than OTA_ONGOING) is sent once more before the
//!   refusal stands: a ctrl packet garbled on the way fails on the device exactly as a bad
//!   one does (1 or 9), and the fault campaign lost updates to that.
//! - FW_INVALID (8) for an image's packets, its end or the install, PARAMETER_INVALID (2)
//!   for its IMAGE_SEND_START, and END_IND 1 (an image not whole on the device) start the
//!   update over with FORCE_INIT_REQUEST once
//!   ([`DfuEvent::Resuming`] at the first image's packet 0), as a refused resume does. The
//!   device marked the image failed, or holds progress for it with other fields, and every
//!   resume would meet that again; but the record, or the start it recorded, may have been
//!   garbled on the way (the serial transport carries no check; the fault campaign's
//!   corrupted values failed a third of its DFU updates so, and left devices no fresh remote
//!   could resume). A second refusal fails the flow: then the package is bad.
//! - Messages that arrive when nothing awaits them are ignored (late acknowledgements);
//!   ABORT_COMMAND fails the flow with its reason; bytes that do not reassemble or decode are
//!   dropped with what was being reassembled (the resends and the window's deadline ask
//!   again), up to [`MAX_GARBLED`] times in one update, and the next fails it with
//!   [`Error::PeerMalformed`]. The serial transport has no check: a value garbled on the
//!   way looks like this, and a peer that keeps sending garbage still fails typed.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use crate::error::{Error, LinkLost, Malformed, Misuse};
use crate::flow::{queue_budget, Delivery, Flow, Transmit};
use crate::image::dfu_bundle;
use crate::image::sifli::TransferFile;
use crate::image::VerifyError;
use crate::time::{Millis, Span};
use crate::wire::dfu::{dfu_refusal, DfuErrorCode, EndMode, ImageId, Message, DEFAULT_NUM_OF_RSP};
use crate::wire::sifli::{Category, Fragmenter, Reassembler, MIN_VALUE_SIZE};

/// The default value size: ATT MTU 247 less the 3-byte ATT header, what desktop and Android
/// Chrome negotiate with SiFli parts.
pub const DEFAULT_MAX_VALUE_SIZE: usize = 244;
/// The default number of recoveries in a row without progress (the iOS remote's 5).
pub const DEFAULT_MAX_RETRIES: u32 = 5;
/// The default [`DfuOptions::max_unacked`]: four windows of the default `num_of_rsp`, so the
/// next windows are on their way while an acknowledgement comes back; where the OS queue
/// holds writes back when full, more depth only waits there, and what it holds is what a
/// rewind leaves in flight. An OS queue that drops writes when full loses what the depth
/// puts past it: size the options for it with [`DfuOptions::for_os_queue`] (records of 3
/// values at MTU 247 in a 20-value queue: 6 kept the link's rate in the simulator, 10 lost
/// most of it).
pub const DEFAULT_MAX_UNACKED: u16 = 4 * DEFAULT_NUM_OF_RSP as u16;
/// Undecodable inputs an update drops before the next one fails it.
pub const MAX_GARBLED: u32 = 3;
/// What the remote reassembles at most: the device's answers are a few bytes each.
const RX_CAP: usize = 256;

const WAIT_INIT: &str = "INIT_RESPONSE";
const WAIT_RESUME: &str = "RESUME_RESPONSE";
const WAIT_LINK_DROP: &str = "device reboot into the OTA manager";
const WAIT_UPDATER: &str =
    "reconnection to the OTA manager (it returns to the old firmware after 30 s)";
const WAIT_START: &str = "IMAGE_SEND_START_RESPONSE";
const WAIT_PACKET: &str = "IMAGE_SEND_PACKET_RESPONSE";
const WAIT_RETRANSMISSION: &str = "RETRANSMISSION_RESPONSE";
const WAIT_END: &str = "IMAGE_SEND_END_RESPONSE";
const WAIT_END_IND: &str = "END_IND (installation result)";

/// How long the flow waits for each answer; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DfuTimeouts {
    /// INIT/RESUME/FORCE_INIT and IMAGE_SEND_END answers (60 s).
    pub request: Span,
    /// Such a request, or IMAGE_SEND_START, unanswered this long goes again until its own
    /// limit has passed (5 s).
    pub resend: Span,
    /// IMAGE_SEND_START_RESPONSE, which comes after the device erased the region (180 s).
    pub image_start: Span,
    /// A window's IMAGE_SEND_PACKET_RESPONSE (10 s).
    pub packet_response: Span,
    /// RETRANSMISSION_RESPONSE (5 s).
    pub retransmission: Span,
    /// The pause after LINK_LOSE_CHECK_REQ before sending again (1 s).
    pub link_lose_pause: Span,
    /// The link drop after INIT_COMPLETED_IND, when the device reboots (15 s).
    pub reboot: Span,
    /// Reconnecting to the OTA manager after that reboot (30 s).
    pub updater_window: Span,
    /// END_IND after TRANSMISSION_END (60 s).
    pub end_ind: Span,
}

impl Default for DfuTimeouts {
    fn default() -> Self {
        DfuTimeouts {
            request: Span::from_secs(60),
            resend: Span::from_secs(5),
            image_start: Span::from_secs(180),
            packet_response: Span::from_secs(10),
            retransmission: Span::from_secs(5),
            link_lose_pause: Span::from_secs(1),
            reboot: Span::from_secs(15),
            updater_window: Span::from_secs(30),
            end_ind: Span::from_secs(60),
        }
    }
}

/// What to do when the device reports an interrupted update (OTA_ONGOING, error 10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnOngoing {
    /// RESUME_REQUEST: continue where the device stopped.
    Resume,
    /// FORCE_INIT_REQUEST: drop the device's progress and start from the first image.
    Restart,
}

/// How a [`DfuUpdate`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DfuOptions {
    /// Resume or restart an interrupted update (default [`OnOngoing::Resume`]).
    pub on_ongoing: OnOngoing,
    /// The largest value written, header included; at least [`MIN_VALUE_SIZE`] (default 244).
    pub max_value_size: usize,
    /// Packets per acknowledgement asked for in IMAGE_SEND_START, 1–255 (default 20).
    pub num_of_rsp: u8,
    /// Recoveries (retransmission requests, link-lose checks) in a row without progress
    /// before the flow gives up (default 5).
    pub max_retries: u32,
    /// Image packets written ahead of the device's last acknowledgement, at least 1 (default
    /// [`DEFAULT_MAX_UNACKED`]); at or below the device's `num_of_rsp` each window waits for
    /// its acknowledgement. Over an OS queue that drops writes when full, keep it within
    /// what the queue holds.
    pub max_unacked: u16,
    /// The deadlines.
    pub timeouts: DfuTimeouts,
}

impl Default for DfuOptions {
    fn default() -> Self {
        DfuOptions {
            on_ongoing: OnOngoing::Resume,
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            num_of_rsp: DEFAULT_NUM_OF_RSP,
            max_retries: DEFAULT_MAX_RETRIES,
            max_unacked: DEFAULT_MAX_UNACKED,
            timeouts: DfuTimeouts::default(),
        }
    }
}

/// An image packet's bytes as sent for a record of the default 512-byte block (a 548-byte
/// record in its IMAGE_SEND_PACKET message), for sizing a window in values.
const TYPICAL_PACKET: usize = 564;

impl DfuOptions {
    /// These options over an OS queue that drops writes past `depth` values (0: one that
    /// holds them back, unchanged): at most 7/8 of the queue in image packets of
    /// [`DfuOptions::max_value_size`] values unacknowledged, in two windows so one
    /// acknowledgement's round trip overlaps the other window.
    #[must_use]
    pub fn for_os_queue(self, depth: u16) -> DfuOptions {
        if depth == 0 {
            return self;
        }
        let per_packet = TYPICAL_PACKET.div_ceil(self.max_value_size.max(1)).max(1);
        let packets = (queue_budget(depth) as usize / per_packet).max(1);
        DfuOptions {
            max_unacked: u16::try_from(packets).unwrap_or(u16::MAX),
            num_of_rsp: u8::try_from(packets.div_ceil(2)).unwrap_or(u8::MAX),
            ..self
        }
    }
}

/// A DFU package: `ctrl_packet.bin` and the transfer files, in ascending image id order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DfuPackage {
    ctrl_packet: Vec<u8>,
    images: Vec<TransferFile>,
}

impl DfuPackage {
    /// A package from its parts; the images are sorted by id (the device counts progress in
    /// that order, §4) and a repeated id is refused.
    pub fn new(ctrl_packet: Vec<u8>, mut images: Vec<TransferFile>) -> Result<Self, Misuse> {
        if ctrl_packet.is_empty() {
            return Err(Misuse::InvalidArgument("the ctrl packet is empty"));
        }
        if images.is_empty() {
            return Err(Misuse::InvalidArgument(
                "a DFU package needs at least one image",
            ));
        }
        // Ids are unique (checked next), so an unstable sort gives the same order.
        images.sort_unstable_by_key(TransferFile::img_id);
        if images.windows(2).any(|w| w[0].img_id() == w[1].img_id()) {
            return Err(Misuse::InvalidArgument(
                "a DFU package holds each image id once",
            ));
        }
        Ok(DfuPackage {
            ctrl_packet,
            images,
        })
    }

    /// A package from `ctrl_packet.bin` and `(img_id, transfer file)` pairs whose records
    /// carry `blk_size`-byte blocks: each file must walk ([`TransferFile::with_blk_size`]),
    /// then [`DfuPackage::new`] applies.
    pub fn from_files(
        ctrl_packet: Vec<u8>,
        files: impl IntoIterator<Item = (u8, Vec<u8>)>,
        blk_size: u16,
    ) -> Result<Self, Error> {
        let images = files
            .into_iter()
            .map(|(img_id, bytes)| {
                TransferFile::with_blk_size(img_id, bytes, blk_size)
                    .map_err(|error| VerifyError::Transfer { img_id, error })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DfuPackage::new(ctrl_packet, images)?)
    }

    /// A package from a DFU bundle, one `.tar` holding `package.json`, the ctrl packet and
    /// the transfer files ([`crate::image::dfu_bundle`]), built as [`DfuPackage::from_files`]
    /// builds one from the loose files.
    pub fn from_bundle(bytes: &[u8]) -> Result<Self, Error> {
        let bundle = dfu_bundle::read(bytes).map_err(VerifyError::Bundle)?;
        Self::from_files(
            bundle.ctrl_packet.to_vec(),
            bundle
                .images
                .into_iter()
                .map(|(img_id, bytes)| (img_id, bytes.to_vec())),
            bundle.blk_size,
        )
    }

    /// `ctrl_packet.bin`.
    #[must_use]
    pub fn ctrl_packet(&self) -> &[u8] {
        &self.ctrl_packet
    }

    /// The transfer files, in the order they are sent.
    #[must_use]
    pub fn images(&self) -> &[TransferFile] {
        &self.images
    }

    /// Bytes sent over all images (transfer file sizes).
    #[must_use]
    pub fn total_len(&self) -> u64 {
        self.images.iter().map(|i| u64::from(i.img_length())).sum()
    }
}

/// The steps of a DFU update, for the UI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DfuStage {
    /// INIT in the user bin: the device checks the package.
    Init,
    /// The device reboots into its OTA manager.
    Reboot,
    /// Sending images.
    Transfer,
    /// The device installs the images.
    Install,
}

/// What the flow reports to the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DfuEvent {
    /// A new step began.
    Stage(DfuStage),
    /// The device accepted the package and reboots into its OTA manager: reconnect to it.
    RebootingIntoUpdater,
    /// The device had an interrupted update; the flow continues at this image and packet.
    Resuming {
        /// The image the transfer continues with.
        image: ImageId,
        /// Packets of it the device already holds.
        packets: u32,
    },
    /// Bytes the device has acknowledged, out of the package's.
    Progress {
        /// Acknowledged bytes.
        confirmed: u64,
        /// All bytes to send.
        total: u64,
    },
    /// The link dropped while the flow still needs it: reconnect and call `handle_connected`.
    NeedsReconnect,
    /// The device installed the package. Finished.
    Done,
    /// The application cancelled the update. Finished.
    Cancelled,
    /// The update stopped. Finished.
    Failed(Error),
}

/// What to do on the next connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    /// Talk to the user bin (or an OTA manager holding progress): INIT.
    Init,
    /// The OTA manager after the planned reboot: straight to the images.
    Images,
}

/// What the flow awaits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    ExpectConnection { after: After },
    ExpectInitResponse { force: bool },
    ExpectResumeResponse,
    ExpectLinkDrop,
    ExpectStartResponse,
    Sending,
    ExpectPacketResponse,
    Paused,
    ExpectRetransmissionResponse,
    ExpectEndResponse,
    ExpectEndInd,
    Done,
    Cancelled,
    Failed,
}

/// Where the transfer stands in the current image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cursor {
    /// Index into the package's images.
    image: usize,
    /// Packets of it the device holds (its `curr_pkt_num`).
    acked: u32,
    /// The next packet to send, 0-based (`pkt_idx − 1`).
    next: u32,
    /// The device's `num_of_rsp`.
    rsp: u8,
    /// `acked` came from a LINK_LOSE_CHECK_REQ: packets written after the one it answers
    /// may have moved the device on since, so one window at a time until an acknowledgement
    /// confirms the count.
    unconfirmed: bool,
}

impl Cursor {
    /// The count at which the device acknowledges next: the next multiple of its rate, or
    /// the image's end.
    fn boundary(&self, total: u32) -> u32 {
        let rsp = u32::from(self.rsp.max(1));
        (self.acked / rsp + 1).saturating_mul(rsp).min(total)
    }

    /// Whether a window is written whose acknowledgement is due.
    fn awaits_ack(&self, total: u32) -> bool {
        self.next >= self.boundary(total)
    }

    /// The exclusive bound of the packets to write before the next acknowledgement: the
    /// current window, and further packets up to `max_unacked` past the start of the window
    /// the count is in. Counting from that start, not from the count, keeps a depth of
    /// `num_of_rsp` or less stop-and-wait after a rewind between boundaries too.
    fn limit(&self, total: u32, max_unacked: u16) -> u32 {
        let window = self.boundary(total);
        if self.unconfirmed {
            return window;
        }
        let rsp = u32::from(self.rsp.max(1));
        let start = self.acked / rsp * rsp;
        window.max(start.saturating_add(u32::from(max_unacked)).min(total))
    }
}

/// One DFU update: the remote side of SiFli OTA-manager DFU. See the module docs.
#[derive(Debug)]
pub struct DfuUpdate {
    package: DfuPackage,
    options: DfuOptions,
    state: State,
    stage: Option<DfuStage>,
    cursor: Cursor,
    end_mode: EndMode,
    /// An update is under way on the device (progress it keeps across a drop).
    started: bool,
    /// A refused resume already fell back to a forced restart.
    forced: bool,
    /// A refused INIT or FORCE_INIT was already sent again.
    init_repeated: bool,
    /// This image's end was already refused as incomplete once and the count asked for.
    end_rechecked: bool,
    /// Inputs dropped as garbled so far.
    garbled: u32,
    retries: u32,
    reassembler: Reassembler,
    /// Whole messages waiting for the frames of the one being sent.
    outbox: VecDeque<Vec<u8>>,
    tx: Option<Fragmenter<Vec<u8>>>,
    deadline: Option<(Millis, &'static str)>,
    /// The request awaiting its answer, to send again, and when to stop doing so.
    resend: Option<(Vec<u8>, Millis)>,
    events: VecDeque<DfuEvent>,
    /// The latest time any input reported; poll_transmit has none of its own.
    now: Millis,
}

impl DfuUpdate {
    /// A flow that will install `package`, waiting for the first [`Flow::handle_connected`].
    pub fn new(package: DfuPackage, options: DfuOptions) -> Result<Self, Misuse> {
        if options.max_value_size < MIN_VALUE_SIZE {
            return Err(Misuse::InvalidArgument(
                "the value size must leave room for a frame header and a byte",
            ));
        }
        if options.num_of_rsp == 0 {
            return Err(Misuse::InvalidArgument("num_of_rsp must be 1 to 255"));
        }
        if options.max_retries == 0 {
            return Err(Misuse::InvalidArgument("max_retries must be at least 1"));
        }
        if options.max_unacked == 0 {
            return Err(Misuse::InvalidArgument("max_unacked must be at least 1"));
        }
        if package.ctrl_packet.len() > usize::from(u16::MAX) - 4 {
            return Err(Misuse::InvalidArgument(
                "the ctrl packet does not fit one DFU message",
            ));
        }
        let rsp = options.num_of_rsp;
        Ok(DfuUpdate {
            package,
            options,
            state: State::ExpectConnection { after: After::Init },
            stage: None,
            cursor: Cursor {
                image: 0,
                acked: 0,
                next: 0,
                rsp,
                unconfirmed: false,
            },
            end_mode: EndMode::Send,
            started: false,
            forced: false,
            init_repeated: false,
            end_rechecked: false,
            garbled: 0,
            retries: 0,
            reassembler: Reassembler::new(RX_CAP),
            outbox: VecDeque::new(),
            tx: None,
            deadline: None,
            resend: None,
            events: VecDeque::new(),
            now: Millis::ZERO,
        })
    }

    /// The current step, or `None` before the first connection.
    #[must_use]
    pub fn stage(&self) -> Option<DfuStage> {
        self.stage
    }

    /// Acknowledged bytes and the package size.
    #[must_use]
    pub fn progress(&self) -> (u64, u64) {
        (self.confirmed(), self.package.total_len())
    }

    /// Whether the flow ended: done, cancelled or failed.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Done | State::Cancelled | State::Failed)
    }

    /// Stops the update; nothing more is sent. The device keeps its progress and returns to
    /// its user bin or waits in its OTA manager, as after a lost link. No effect once finished.
    pub fn cancel(&mut self, _now: Millis) {
        if self.is_finished() {
            return;
        }
        self.clear_link();
        self.deadline = None;
        self.state = State::Cancelled;
        self.events.push_back(DfuEvent::Cancelled);
    }

    fn file(&self) -> Option<&TransferFile> {
        self.package.images.get(self.cursor.image)
    }

    /// Packets of the current image (none past the last).
    fn total(&self) -> u32 {
        self.file().map_or(0, TransferFile::total_pkt_num)
    }

    /// Whether a written window awaits its acknowledgement.
    fn awaits_ack(&self) -> bool {
        self.cursor.awaits_ack(self.total())
    }

    fn confirmed(&self) -> u64 {
        let done: u64 = self.package.images[..self.cursor.image.min(self.package.images.len())]
            .iter()
            .map(|i| u64::from(i.img_length()))
            .sum();
        let current = self.file().map_or(0, |f| {
            // `acked` can come from the device (a rewind to its count): walk only the
            // records that exist, so a huge count costs nothing.
            (0..self.cursor.acked.min(f.total_pkt_num()))
                .filter_map(|i| f.record(i))
                .map(|r| r.len() as u64)
                .sum::<u64>()
        });
        done + current
    }

    fn set_stage(&mut self, stage: DfuStage) {
        if self.stage != Some(stage) {
            self.stage = Some(stage);
            self.events.push_back(DfuEvent::Stage(stage));
        }
    }

    fn arm(&mut self, now: Millis, wait: Span, what: &'static str) {
        self.deadline = Some((now + wait, what));
        self.resend = None;
    }

    /// Sends a request the device answers the same however often it comes, and arms its
    /// resends: a lost request or answer then costs [`DfuTimeouts::resend`], not the flow.
    fn request(&mut self, now: Millis, message: &Message<'_>, limit: Span, what: &'static str) {
        let bytes = match message.to_vec() {
            Ok(bytes) => bytes,
            Err(e) => return self.fail(Misuse::from(e).into()),
        };
        self.outbox.push_back(bytes.clone());
        self.arm(now, self.options.timeouts.resend.min(limit), what);
        self.resend = Some((bytes, now + limit));
    }

    /// The request's resend is due: it goes again, or the flow gives up past the limit.
    fn resend_due(&mut self, now: Millis, what: &'static str) -> bool {
        let Some((bytes, until)) = self.resend.take() else {
            return false;
        };
        if now >= until {
            return false;
        }
        self.outbox.push_back(bytes.clone());
        let wait = self.options.timeouts.resend.min(Span(until.0 - now.0));
        self.deadline = Some((now + wait, what));
        self.resend = Some((bytes, until));
        true
    }

    fn clear_link(&mut self) {
        self.reassembler.reset();
        self.outbox.clear();
        self.tx = None;
        self.resend = None;
    }

    fn fail(&mut self, error: Error) {
        self.clear_link();
        self.deadline = None;
        self.state = State::Failed;
        self.events.push_back(DfuEvent::Failed(error));
    }

    /// A frame or message that does not decode: dropped with what was being reassembled,
    /// so the resends and the window's deadline ask again, [`MAX_GARBLED`] times; after that
    /// the update fails with it.
    fn garbled(&mut self, error: Error) {
        self.garbled += 1;
        if self.garbled > MAX_GARBLED {
            return self.fail(error);
        }
        self.reassembler.reset();
    }

    fn refused(&mut self, code: u16) {
        self.fail(dfu_refusal(code).into());
    }

    /// The device refused an image's start, packets or end, or the install. FW_INVALID marks
    /// the image failed on the device, so resending cannot help, but the file may be good
    /// and the link may have garbled a record (the serial transport has no check of its
    /// own); PARAMETER_INVALID for a start means the device holds progress for that image
    /// with other fields (a garbled earlier start it took), which every resume meets again;
    /// END_IND 1 means an image the flow saw accepted is not whole on the device (a garbled
    /// answer). Each time: start over with FORCE_INIT, once, as a refused resume does. A
    /// second refusal is the package's.
    fn image_refused(&mut self, now: Millis, code: u16) {
        let fresh_start_helps = code == DfuErrorCode::FwInvalid.code()
            || (code == DfuErrorCode::ParameterInvalid.code()
                && self.state == State::ExpectStartResponse)
            || (code == DfuErrorCode::GeneralErr.code() && self.state == State::ExpectEndInd);
        if !fresh_start_helps || self.forced {
            return self.refused(code);
        }
        self.forced = true;
        self.clear_link();
        // Continues at the first image's first packet: the same news as a resume from there.
        if let Some(first) = self.package.images.first() {
            let image = ImageId(first.img_id());
            self.events
                .push_back(DfuEvent::Resuming { image, packets: 0 });
        }
        self.send_init(now, true);
    }

    /// Queues `message` behind what is being sent.
    fn send(&mut self, message: &Message<'_>) {
        match message.to_vec() {
            Ok(bytes) => self.outbox.push_back(bytes),
            Err(e) => self.fail(Misuse::from(e).into()),
        }
    }

    fn await_connection(&mut self, now: Millis, after: After) {
        self.clear_link();
        self.state = State::ExpectConnection { after };
        if after == After::Images {
            self.arm(now, self.options.timeouts.updater_window, WAIT_UPDATER);
        } else {
            self.deadline = None;
        }
        self.events.push_back(DfuEvent::NeedsReconnect);
    }

    fn send_init(&mut self, now: Millis, force: bool) {
        let ctrl = core::mem::take(&mut self.package.ctrl_packet);
        let limit = self.options.timeouts.request;
        self.state = State::ExpectInitResponse { force };
        if force {
            self.request(
                now,
                &Message::ForceInitRequest { ctrl_packet: &ctrl },
                limit,
                WAIT_INIT,
            );
        } else {
            self.request(
                now,
                &Message::InitRequest { ctrl_packet: &ctrl },
                limit,
                WAIT_INIT,
            );
        }
        self.package.ctrl_packet = ctrl;
    }

    fn send_resume(&mut self, now: Millis) {
        let ctrl = core::mem::take(&mut self.package.ctrl_packet);
        let limit = self.options.timeouts.request;
        self.state = State::ExpectResumeResponse;
        self.request(
            now,
            &Message::ResumeRequest { ctrl_packet: &ctrl },
            limit,
            WAIT_RESUME,
        );
        self.package.ctrl_packet = ctrl;
    }

    /// The device took INIT (or RESUME): reboot into the OTA manager, or go on here.
    fn init_done(&mut self, now: Millis, is_boot: bool) {
        self.started = true;
        if is_boot {
            self.set_stage(DfuStage::Reboot);
            self.events.push_back(DfuEvent::RebootingIntoUpdater);
            self.state = State::ExpectLinkDrop;
            self.arm(now, self.options.timeouts.reboot, WAIT_LINK_DROP);
        } else {
            self.start_image(now);
        }
    }

    fn start_image(&mut self, now: Millis) {
        let Some(file) = self.file() else {
            return self.finish_transfer(now);
        };
        let (img_length, total_pkt_num, img_id) =
            (file.img_length(), file.total_pkt_num(), file.img_id());
        self.set_stage(DfuStage::Transfer);
        // The start's answer follows every packet written before it: the count is the device's.
        self.cursor.unconfirmed = false;
        self.end_rechecked = false;
        let rsp = self.cursor.rsp;
        self.state = State::ExpectStartResponse;
        let start = Message::ImageSendStart {
            img_length,
            total_pkt_num,
            num_of_rsp: rsp,
            img_id: ImageId(img_id),
        };
        self.request(now, &start, self.options.timeouts.image_start, WAIT_START);
    }

    /// Sends from the device's count on (a start or a rewind): the packets
    /// [`Cursor::limit`] allows.
    fn next_window(&mut self, now: Millis) {
        let Some(total) = self.file().map(TransferFile::total_pkt_num) else {
            return self.finish_transfer(now);
        };
        let c = &mut self.cursor;
        c.acked = c.acked.min(total);
        c.next = c.acked;
        if c.acked >= total {
            return self.end_image(now);
        }
        self.state = State::Sending;
        self.deadline = None;
    }

    /// An acknowledgement moved the count on: the image's end, or the packets the new
    /// limit allows; the deadline runs again from now while a written window awaits its
    /// acknowledgement, so it measures the time without one.
    fn acknowledged(&mut self, now: Millis) {
        let total = self.total();
        if self.cursor.acked >= total {
            return self.end_image(now);
        }
        self.state = if self.cursor.next < self.cursor.limit(total, self.options.max_unacked) {
            State::Sending
        } else {
            State::ExpectPacketResponse
        };
        if self.cursor.awaits_ack(total) {
            self.arm(now, self.options.timeouts.packet_response, WAIT_PACKET);
        } else {
            self.deadline = None;
        }
    }

    fn end_image(&mut self, now: Millis) {
        let more = self.cursor.image + 1 < self.package.images.len();
        let Some(img_id) = self.file().map(TransferFile::img_id) else {
            return self.finish_transfer(now);
        };
        self.state = State::ExpectEndResponse;
        let end = Message::ImageSendEnd {
            img_id: ImageId(img_id),
            is_more_image: more,
        };
        self.request(now, &end, self.options.timeouts.request, WAIT_END);
    }

    fn next_image(&mut self, now: Millis) {
        self.cursor.image += 1;
        self.cursor.acked = 0;
        self.cursor.next = 0;
        if self.cursor.image < self.package.images.len() {
            self.start_image(now);
        } else {
            self.finish_transfer(now);
        }
    }

    fn finish_transfer(&mut self, now: Millis) {
        self.set_stage(DfuStage::Install);
        self.send(&Message::TransmissionEnd);
        if self.end_mode.device_sends_end_ind() {
            self.state = State::ExpectEndInd;
            self.arm(now, self.options.timeouts.end_ind, WAIT_END_IND);
        } else {
            self.finish_done();
        }
    }

    fn finish_done(&mut self) {
        self.deadline = None;
        self.state = State::Done;
        self.events.push_back(DfuEvent::Done);
    }

    fn progress_event(&mut self) {
        self.events.push_back(DfuEvent::Progress {
            confirmed: self.confirmed(),
            total: self.package.total_len(),
        });
    }

    /// A recovery (retransmission or link-lose check): counted, and fatal past the limit.
    fn retry(&mut self) -> bool {
        self.retries += 1;
        if self.retries > self.options.max_retries {
            self.fail(
                LinkLost::RetriesExhausted {
                    attempts: self.retries - 1,
                }
                .into(),
            );
            false
        } else {
            true
        }
    }

    fn request_retransmission(&mut self, now: Millis) {
        if self.retry() {
            self.tx = None;
            self.outbox.clear();
            self.send(&Message::RetransmissionRequest);
            self.state = State::ExpectRetransmissionResponse;
            self.arm(
                now,
                self.options.timeouts.retransmission,
                WAIT_RETRANSMISSION,
            );
        }
    }

    /// The device says where it is: continue from `held` packets at rate `rsp`.
    fn rewind(&mut self, held: u32, rsp: u16) {
        self.cursor.acked = held;
        self.cursor.rsp = u8::try_from(rsp).unwrap_or(u8::MAX).max(1);
        self.cursor.unconfirmed = false;
    }

    /// LINK_LOSE_CHECK_REQ: answered, then, unless it asks for nothing the flow can do, a
    /// recovery that pauses and resends from the device's count.
    fn link_lose_check(&mut self, now: Millis, new_num_of_rsp: u16, current_index: u32) {
        self.tx = None;
        self.outbox.clear();
        self.send(&Message::LinkLoseCheckRsp { result: 0 });
        // A device may send a check for every packet that arrives past the gap (CTRL checks
        // each out-of-order packet, §5): those repeat the one the flow pauses for, so they
        // extend that recovery instead of counting as more.
        let repeat = self.state == State::Paused
            && self.cursor.unconfirmed
            && current_index == self.cursor.acked;
        // The iOS remote ignores a check that asks for nothing it can do (§8).
        if new_num_of_rsp == 0 || current_index >= self.total() || !(repeat || self.retry()) {
            return;
        }
        self.rewind(current_index, new_num_of_rsp);
        // Packets written after the one this answers may still reach the device, and in
        // order they move it past `current_index`.
        self.cursor.unconfirmed = true;
        self.state = State::Paused;
        self.arm(now, self.options.timeouts.link_lose_pause, WAIT_PACKET);
    }

    fn image_index(&self, id: ImageId) -> Option<usize> {
        self.package.images.iter().position(|f| f.img_id() == id.0)
    }

    fn on_message(&mut self, now: Millis, message: Message<'_>) {
        if let Message::AbortCommand { reason } = message {
            return self.refused(reason);
        }
        match (self.state, message) {
            (State::ExpectInitResponse { force }, Message::InitResponse { result, is_boot }) => {
                if result == DfuErrorCode::NoErr.code() {
                    if self.started {
                        // The device dropped what it held: start over.
                        self.cursor.image = 0;
                        self.cursor.acked = 0;
                    }
                    self.send(&Message::InitCompletedInd { is_start: true });
                    self.init_done(now, is_boot);
                } else if result == DfuErrorCode::OtaOngoing.code() && !force {
                    match self.options.on_ongoing {
                        OnOngoing::Resume => self.send_resume(now),
                        OnOngoing::Restart => self.send_init(now, true),
                    }
                } else if !self.init_repeated {
                    // A garbled ctrl packet fails its parse (1) or its signature (9) on the
                    // device like a bad one does: ask once more before blaming the package.
                    self.init_repeated = true;
                    self.send_init(now, force);
                } else {
                    self.refused(result);
                }
            }
            (
                State::ExpectResumeResponse,
                Message::ResumeResponse {
                    result,
                    is_boot,
                    is_restart,
                    curr_packet_num,
                    curr_img,
                    num_of_rsp,
                },
            ) => {
                if result != DfuErrorCode::NoErr.code() {
                    // A resume the device will not grant: start over, once.
                    if self.forced {
                        return self.refused(result);
                    }
                    self.forced = true;
                    return self.send_init(now, true);
                }
                if is_restart {
                    self.cursor.image = 0;
                    self.cursor.acked = 0;
                } else {
                    let Some(index) = self.image_index(curr_img) else {
                        return self.fail(
                            Malformed {
                                what: "RESUME_RESPONSE image",
                                reason: crate::error::DecodeError::BadValue,
                            }
                            .into(),
                        );
                    };
                    self.cursor.image = index;
                    self.cursor.acked = curr_packet_num;
                }
                if let Some(rsp) = num_of_rsp {
                    self.cursor.rsp = rsp.max(1);
                }
                let packets = self.cursor.acked;
                if let Some(f) = self.file() {
                    let image = ImageId(f.img_id());
                    self.events.push_back(DfuEvent::Resuming { image, packets });
                }
                self.send(&Message::ResumeCompletedInd { is_start: true });
                self.init_done(now, is_boot);
            }
            (
                State::ExpectStartResponse,
                Message::ImageSendStartResponse {
                    result,
                    end_mode,
                    skip,
                },
            ) => {
                if result != DfuErrorCode::NoErr.code() {
                    return self.image_refused(now, result);
                }
                self.end_mode = end_mode;
                if skip {
                    return self.next_image(now);
                }
                self.next_window(now);
            }
            // The answer carries no count: it is the next boundary's, once the window up to
            // there is written. One before that is left over from before a rewind.
            (
                State::Sending | State::ExpectPacketResponse,
                Message::ImageSendPacketResponse { result },
            ) if self.awaits_ack() => {
                if result != DfuErrorCode::NoErr.code() {
                    return self.image_refused(now, result);
                }
                self.retries = 0;
                let total = self.total();
                self.cursor.acked = self.cursor.boundary(total);
                self.cursor.unconfirmed = false;
                self.progress_event();
                self.acknowledged(now);
            }
            (
                State::Sending
                | State::ExpectPacketResponse
                | State::Paused
                | State::ExpectRetransmissionResponse,
                Message::LinkLoseCheckReq {
                    new_num_of_rsp,
                    current_index,
                    ..
                },
            ) => self.link_lose_check(now, new_num_of_rsp, current_index),
            // The end went out on a count the device does not hold (a repeated notification
            // taken for the next acknowledgement, then a packet lost): the check it sent
            // before its answer to the end says where it is. Its answer, which follows,
            // finds the flow paused and is ignored.
            (
                State::ExpectEndResponse,
                Message::LinkLoseCheckReq {
                    new_num_of_rsp,
                    current_index,
                    ..
                },
            ) if new_num_of_rsp != 0 && current_index < self.total() => {
                self.link_lose_check(now, new_num_of_rsp, current_index);
            }
            (
                State::ExpectRetransmissionResponse,
                Message::RetransmissionResponse {
                    result,
                    new_num_of_rsp,
                    retransmission_packet_num,
                },
            ) => {
                if result != DfuErrorCode::NoErr.code() {
                    return self.refused(result);
                }
                self.rewind(retransmission_packet_num, new_num_of_rsp);
                self.next_window(now);
            }
            (State::ExpectEndResponse, Message::ImageSendEndResponse { result }) => {
                // GENERAL_ERR is also the device's answer to an end before its last packet: a
                // repeated notification taken for an acknowledgement, then the last packets
                // lost. Once per image the flow asks for the count and resends from there;
                // an end refused again stands.
                if result == DfuErrorCode::GeneralErr.code() && !self.end_rechecked {
                    self.end_rechecked = true;
                    return self.request_retransmission(now);
                }
                if result != DfuErrorCode::NoErr.code() {
                    return self.image_refused(now, result);
                }
                self.next_image(now);
            }
            (State::ExpectEndInd, Message::EndInd { result }) => {
                if self.end_mode.remote_echoes() {
                    self.send(&Message::EndInd { result });
                }
                if result == 0 {
                    self.finish_done();
                } else {
                    self.image_refused(now, u16::from(result));
                }
            }
            // Late or unsolicited: nothing awaits it.
            _ => {}
        }
    }

    /// Builds the next image packet while [`Cursor::limit`] allows; the packet that completes
    /// the window the count is in arms its acknowledgement deadline from the latest time
    /// the edge reported (later windows' run on from there, re-armed by each
    /// acknowledgement).
    fn next_packet(&mut self) -> Option<Vec<u8>> {
        let now = self.now;
        if self.state != State::Sending {
            return None;
        }
        let total = self.total();
        let limit = self.cursor.limit(total, self.options.max_unacked);
        let next = self.cursor.next;
        if next >= limit {
            self.state = State::ExpectPacketResponse;
            return None;
        }
        let file = self.file()?;
        let record = file.record(next)?;
        let message = Message::ImageSendPacket {
            img_id: ImageId(file.img_id()),
            pkt_idx: u16::try_from(next + 1).ok()?,
            data: record,
        };
        let bytes = message.to_vec().ok()?;
        self.cursor.next += 1;
        if self.cursor.next == self.cursor.boundary(total) {
            self.arm(now, self.options.timeouts.packet_response, WAIT_PACKET);
        }
        if self.cursor.next >= limit {
            self.state = State::ExpectPacketResponse;
        }
        Some(bytes)
    }
}

impl Flow for DfuUpdate {
    type Channel = ();
    type Event = DfuEvent;

    fn handle_connected(&mut self, now: Millis) {
        self.now = now;
        let State::ExpectConnection { after } = self.state else {
            // A repeated report, or a link the flow does not wait for.
            return;
        };
        self.clear_link();
        match after {
            After::Init => {
                self.set_stage(DfuStage::Init);
                self.send_init(now, false);
            }
            After::Images => self.start_image(now),
        }
    }

    fn handle_disconnected(&mut self, now: Millis) {
        self.now = now;
        self.clear_link();
        match self.state {
            // Expected: the device reboots into its OTA manager.
            State::ExpectLinkDrop => self.await_connection(now, After::Images),
            State::ExpectInitResponse { .. } | State::ExpectResumeResponse => {
                self.await_connection(now, After::Init);
            }
            State::ExpectStartResponse
            | State::Sending
            | State::ExpectPacketResponse
            | State::Paused
            | State::ExpectRetransmissionResponse
            | State::ExpectEndResponse => self.await_connection(now, After::Init),
            State::ExpectEndInd => self.fail(LinkLost::Disconnected.into()),
            State::ExpectConnection { .. } | State::Done | State::Cancelled | State::Failed => {}
        }
    }

    fn handle_input(&mut self, now: Millis, _channel: (), bytes: &[u8]) {
        self.now = now;
        if self.is_finished() || matches!(self.state, State::ExpectConnection { .. }) {
            return;
        }
        let assembled = match self.reassembler.push(bytes) {
            Ok(Some(a)) => a,
            Ok(None) => return,
            Err(e) => return self.garbled(Malformed::from(e).into()),
        };
        if assembled.category != Category::DFU {
            return;
        }
        match Message::decode(&assembled.payload) {
            Ok(message) => self.on_message(now, message),
            Err(e) => self.garbled(e.into()),
        }
    }

    fn handle_timeout(&mut self, now: Millis) {
        self.now = now;
        let Some((at, what)) = self.deadline else {
            return;
        };
        if now < at {
            return;
        }
        self.deadline = None;
        match self.state {
            State::Sending | State::ExpectPacketResponse | State::ExpectRetransmissionResponse => {
                self.request_retransmission(now);
            }
            State::Paused => self.next_window(now),
            State::ExpectInitResponse { .. }
            | State::ExpectResumeResponse
            | State::ExpectStartResponse
            | State::ExpectEndResponse => {
                if !self.resend_due(now, what) {
                    self.fail(LinkLost::TimedOut { waiting_for: what }.into());
                }
            }
            _ => self.fail(LinkLost::TimedOut { waiting_for: what }.into()),
        }
    }

    fn handle_transmitted(&mut self, now: Millis) {
        self.now = now;
        // The deadline counts from the last write leaving, not from when its packet was
        // built: on a slow link the writes themselves take time.
        let sent = self.tx.as_ref().is_none_or(Fragmenter::is_done);
        let transfer = matches!(self.state, State::Sending | State::ExpectPacketResponse);
        if transfer && sent && self.awaits_ack() {
            if let Some((at, _)) = &mut self.deadline {
                *at = (*at).max(now + self.options.timeouts.packet_response);
            }
        }
    }

    fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> Option<Transmit<()>> {
        let transmit = |len| Transmit {
            channel: (),
            len,
            delivery: Delivery::WithoutResponse,
        };
        loop {
            if let Some(tx) = &mut self.tx {
                if let Some(len) = tx.emit_next(buf) {
                    return Some(transmit(len));
                }
                self.tx = None;
            }
            let message = match self.outbox.pop_front() {
                Some(m) => m,
                None => self.next_packet()?,
            };
            match Fragmenter::new(Category::DFU, message, self.options.max_value_size) {
                Ok(f) => self.tx = Some(f),
                Err(e) => {
                    self.fail(Misuse::from(e).into());
                    return None;
                }
            }
        }
    }

    fn poll_timeout(&self) -> Option<Millis> {
        self.deadline.map(|d| d.0)
    }

    fn poll_event(&mut self) -> Option<DfuEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DecodeError;
    use crate::image::sifli::build_transfer;
    use alloc::string::ToString;
    use alloc::vec;

    const BLK: u16 = 64;

    /// A transfer file of `blocks` 64-byte blocks for `id`.
    fn file(id: u8, blocks: usize) -> TransferFile {
        let payload: Vec<u8> = (0..blocks * usize::from(BLK))
            .map(|i| (i * 31 + usize::from(id)) as u8)
            .collect();
        let bytes = build_transfer(&payload, BLK, None).unwrap();
        TransferFile::with_blk_size(id, bytes, BLK).unwrap()
    }

    fn package() -> DfuPackage {
        // Out of order on purpose: the package sorts by id.
        DfuPackage::new(vec![0xC7; 400], vec![file(3, 5), file(0, 7)]).unwrap()
    }

    /// Stop-and-wait (a depth below every rate), as the scripts of the windows expect; the
    /// pipelined tests set their own depth.
    fn options() -> DfuOptions {
        DfuOptions {
            num_of_rsp: 3,
            max_unacked: 1,
            ..DfuOptions::default()
        }
    }

    /// The device's end of the link, built from the wire modules.
    struct Script {
        flow: DfuUpdate,
        now: Millis,
        rx: Reassembler,
    }

    impl Script {
        fn new(options: DfuOptions) -> Self {
            Script {
                flow: DfuUpdate::new(package(), options).unwrap(),
                now: Millis(1_000),
                rx: Reassembler::new(crate::wire::dfu::MAX_PACKET_MESSAGE_LEN),
            }
        }

        /// Every message the flow writes now, reassembled; frames are checked for size.
        fn sent(&mut self) -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            let mut buf = Vec::new();
            while let Some(t) = self.flow.poll_transmit(&mut buf) {
                assert_eq!(t.len, buf.len());
                assert!(t.len <= self.flow.options.max_value_size);
                self.flow.handle_transmitted(self.now);
                if let Some(a) = self.rx.push(&buf).unwrap() {
                    assert_eq!(a.category, Category::DFU);
                    out.push(a.payload);
                }
                buf.clear();
            }
            out
        }

        fn send(&mut self, message: Message<'_>) {
            let bytes = message.to_vec().unwrap();
            let mut f = Fragmenter::new(Category::DFU, bytes, 20).unwrap();
            let mut buf = Vec::new();
            while f.emit_next(&mut buf).is_some() {
                self.flow.handle_input(self.now, (), &buf);
                buf.clear();
            }
        }

        fn events(&mut self) -> Vec<DfuEvent> {
            core::iter::from_fn(|| self.flow.poll_event()).collect()
        }

        fn expect_one(&mut self) -> Vec<u8> {
            let mut sent = self.sent();
            assert_eq!(sent.len(), 1, "{sent:?}");
            sent.remove(0)
        }

        /// The device's LINK_LOSE_CHECK_REQ, and the flow's answer to it, alone.
        fn link_lose_check(&mut self, new_num_of_rsp: u16, current_index: u32) {
            self.send(Message::LinkLoseCheckReq {
                result: 0,
                new_num_of_rsp,
                current_index,
            });
            assert_eq!(
                Message::decode(&self.expect_one()).unwrap(),
                Message::LinkLoseCheckRsp { result: 0 }
            );
        }

        /// Connects and takes INIT_REQUEST; returns its ctrl packet.
        fn init(&mut self) -> Vec<u8> {
            self.flow.handle_connected(self.now);
            let m = self.expect_one();
            match Message::decode(&m).unwrap() {
                Message::InitRequest { ctrl_packet } => ctrl_packet.to_vec(),
                other => panic!("expected INIT_REQUEST, got {other:?}"),
            }
        }

        /// INIT accepted with a reboot, and the OTA manager reconnected.
        fn enter_updater(&mut self) {
            assert_eq!(self.init(), vec![0xC7; 400]);
            self.send(Message::InitResponse {
                result: 0,
                is_boot: true,
            });
            let m = self.expect_one();
            assert_eq!(
                Message::decode(&m).unwrap(),
                Message::InitCompletedInd { is_start: true }
            );
            self.flow.handle_disconnected(self.now);
            self.now += Span::from_secs(3);
            self.flow.handle_connected(self.now);
        }

        fn expect_start(&mut self, img: u8, rsp: u8) -> (u32, u32) {
            let m = self.expect_one();
            match Message::decode(&m).unwrap() {
                Message::ImageSendStart {
                    img_length,
                    total_pkt_num,
                    num_of_rsp,
                    img_id,
                } => {
                    assert_eq!((img_id, num_of_rsp), (ImageId(img), rsp));
                    (img_length, total_pkt_num)
                }
                other => panic!("expected IMAGE_SEND_START, got {other:?}"),
            }
        }

        fn start_ok(&mut self) {
            self.send(Message::ImageSendStartResponse {
                result: 0,
                end_mode: EndMode::Send,
                skip: false,
            });
        }

        /// The packets now written: (img_id, pkt_idx) each, checked against the file.
        fn packets(&mut self) -> Vec<(u8, u16)> {
            let files = self.flow.package.images.clone();
            self.sent()
                .iter()
                .map(|m| match Message::decode(m).unwrap() {
                    Message::ImageSendPacket {
                        img_id,
                        pkt_idx,
                        data,
                    } => {
                        let f = files.iter().find(|f| f.img_id() == img_id.0).unwrap();
                        assert_eq!(Some(data), f.record(u32::from(pkt_idx) - 1));
                        (img_id.0, pkt_idx)
                    }
                    other => panic!("expected IMAGE_SEND_PACKET, got {other:?}"),
                })
                .collect()
        }

        fn ack(&mut self) {
            self.send(Message::ImageSendPacketResponse { result: 0 });
        }

        fn expect_end(&mut self, img: u8, more: bool) {
            let m = self.expect_one();
            assert_eq!(
                Message::decode(&m).unwrap(),
                Message::ImageSendEnd {
                    img_id: ImageId(img),
                    is_more_image: more
                }
            );
            self.send(Message::ImageSendEndResponse { result: 0 });
        }

        fn failed(&mut self) -> Error {
            assert!(self.flow.is_finished());
            match self.events().pop() {
                Some(DfuEvent::Failed(e)) => e,
                other => panic!("expected Failed, got {other:?}"),
            }
        }
    }

    fn idx(img: u8, range: core::ops::RangeInclusive<u16>) -> Vec<(u8, u16)> {
        range.map(|i| (img, i)).collect()
    }

    #[test]
    fn options_for_a_dropping_queue_keep_two_windows_within_it() {
        let held = DfuOptions::default().for_os_queue(0);
        assert_eq!(held, DfuOptions::default());
        // 20 values, 17 usable, records of 3 values at 244 bytes: 5 packets, windows of 3.
        let mac = DfuOptions::default().for_os_queue(20);
        assert_eq!((mac.max_unacked, mac.num_of_rsp), (5, 3));
        // At ATT MTU 23 a record is 29 values: one packet at a time.
        let small = DfuOptions {
            max_value_size: 20,
            ..DfuOptions::default()
        }
        .for_os_queue(20);
        assert_eq!((small.max_unacked, small.num_of_rsp), (1, 1));
    }

    #[test]
    fn full_update_with_reboot_windows_and_end_ind() {
        let mut s = Script::new(options());
        s.enter_updater();
        let ev = s.events();
        assert!(ev.contains(&DfuEvent::RebootingIntoUpdater));
        assert!(ev.contains(&DfuEvent::NeedsReconnect));
        assert!(ev.contains(&DfuEvent::Stage(DfuStage::Reboot)));

        // Image 0: 7 records of 36 + 64 bytes, acknowledged every 3.
        let (len, pkts) = s.expect_start(0, 3);
        assert_eq!((len, pkts), (700, 7));
        s.start_ok();
        assert_eq!(s.packets(), idx(0, 1..=3));
        assert!(
            s.sent().is_empty(),
            "the window waits for its acknowledgement"
        );
        s.ack();
        assert_eq!(s.packets(), idx(0, 4..=6));
        s.ack();
        assert_eq!(s.packets(), idx(0, 7..=7));
        s.ack();
        s.expect_end(0, true);
        // Image 3.
        assert_eq!(s.expect_start(3, 3), (500, 5));
        s.start_ok();
        assert_eq!(s.packets(), idx(3, 1..=3));
        s.ack();
        assert_eq!(s.packets(), idx(3, 4..=5));
        s.ack();
        s.expect_end(3, false);
        let m = s.expect_one();
        assert_eq!(Message::decode(&m).unwrap(), Message::TransmissionEnd);
        assert_eq!(s.flow.stage(), Some(DfuStage::Install));
        s.send(Message::EndInd { result: 0 });
        assert!(s.flow.is_finished());
        let ev = s.events();
        assert_eq!(ev.last(), Some(&DfuEvent::Done));
        let progress: Vec<u64> = ev
            .iter()
            .filter_map(|e| match e {
                DfuEvent::Progress { confirmed, total } => {
                    assert_eq!(*total, 1200);
                    Some(*confirmed)
                }
                _ => None,
            })
            .collect();
        assert_eq!(progress, [300, 600, 700, 1000, 1200]);
    }

    #[test]
    fn an_image_refused_as_invalid_starts_over_once_then_fails() {
        let mut s = Script::new(options());
        s.enter_updater();
        s.expect_start(0, 3);
        s.start_ok();
        assert_eq!(s.packets(), idx(0, 1..=3));
        s.events();
        // A garbled record: the device marks the image failed and answers 8.
        let invalid = DfuErrorCode::FwInvalid.code();
        s.send(Message::ImageSendPacketResponse { result: invalid });
        assert!(!s.flow.is_finished());
        assert_eq!(
            s.events(),
            [DfuEvent::Resuming {
                image: ImageId(0),
                packets: 0
            }]
        );
        let m = s.expect_one();
        assert!(matches!(
            Message::decode(&m).unwrap(),
            Message::ForceInitRequest { ctrl_packet } if ctrl_packet == [0xC7; 400]
        ));
        // In the OTA manager: INIT completes on this link and image 0 starts from packet 1.
        s.send(Message::InitResponse {
            result: 0,
            is_boot: false,
        });
        let sent = s.sent();
        assert_eq!(sent.len(), 2, "INIT_COMPLETED_IND, IMAGE_SEND_START");
        assert_eq!(
            Message::decode(&sent[0]).unwrap(),
            Message::InitCompletedInd { is_start: true }
        );
        assert!(matches!(
            Message::decode(&sent[1]).unwrap(),
            Message::ImageSendStart {
                img_id: ImageId(0),
                ..
            }
        ));
        s.start_ok();
        assert_eq!(s.packets(), idx(0, 1..=3));
        // The same refusal again is the file's: the update fails with it.
        s.send(Message::ImageSendPacketResponse { result: invalid });
        match s.failed() {
            Error::PeerRefused(r) => assert_eq!(r.code, i64::from(invalid)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn exact_bytes_of_the_first_messages() {
        let mut s = Script::new(options());
        s.flow.handle_connected(s.now);
        let mut buf = Vec::new();
        let t = s.flow.poll_transmit(&mut buf).unwrap();
        // cate 01, first frame, total 404 = 4 + 400, then INIT_REQUEST id 0, length 400.
        assert_eq!(
            &buf[..t.len][..10],
            &[0x01, 0x01, 0x94, 0x01, 0x00, 0x00, 0x90, 0x01, 0xC7, 0xC7]
        );
        assert_eq!(t.len, 244);
    }

    #[test]
    fn ota_ongoing_resumes_at_the_device_position() {
        let mut s = Script::new(options());
        s.init();
        s.send(Message::InitResponse {
            result: DfuErrorCode::OtaOngoing.code(),
            is_boot: false,
        });
        let m = s.expect_one();
        assert!(matches!(
            Message::decode(&m).unwrap(),
            Message::ResumeRequest { ctrl_packet } if ctrl_packet == [0xC7; 400]
        ));
        s.send(Message::ResumeResponse {
            result: 0,
            is_boot: false,
            is_restart: false,
            curr_packet_num: 2,
            curr_img: ImageId(3),
            num_of_rsp: Some(2),
        });
        // Not booting: the same link goes on with image 3 at the device's rate.
        let sent = s.sent();
        assert_eq!(
            Message::decode(&sent[0]).unwrap(),
            Message::ResumeCompletedInd { is_start: true }
        );
        assert!(matches!(
            Message::decode(&sent[1]).unwrap(),
            Message::ImageSendStart {
                img_id: ImageId(3),
                num_of_rsp: 2,
                total_pkt_num: 5,
                ..
            }
        ));
        assert!(s.events().contains(&DfuEvent::Resuming {
            image: ImageId(3),
            packets: 2
        }));
        s.start_ok();
        assert_eq!(s.packets(), idx(3, 3..=4));
        s.ack();
        assert_eq!(s.packets(), idx(3, 5..=5));
    }

    #[test]
    fn ota_ongoing_restarts_when_asked_and_other_codes_refuse() {
        let mut s = Script::new(DfuOptions {
            on_ongoing: OnOngoing::Restart,
            ..options()
        });
        s.init();
        s.send(Message::InitResponse {
            result: 10,
            is_boot: true,
        });
        let m = s.expect_one();
        assert!(matches!(
            Message::decode(&m).unwrap(),
            Message::ForceInitRequest { .. }
        ));
        // OTA_ONGOING again after a forced init is the device's refusal, once it repeats.
        for _ in 0..2 {
            assert!(!s.flow.is_finished());
            s.sent();
            s.send(Message::InitResponse {
                result: 10,
                is_boot: true,
            });
        }
        let e = s.failed();
        assert!(matches!(&e, Error::PeerRefused(r) if r.name == "DFU_ERR_OTA_ONGOING"));

        // A refused INIT goes once more, the same bytes; the second refusal stands.
        let mut s = Script::new(options());
        let ctrl = s.init();
        s.send(Message::InitResponse {
            result: 9,
            is_boot: false,
        });
        let m = s.expect_one();
        assert_eq!(
            Message::decode(&m).unwrap(),
            Message::InitRequest { ctrl_packet: &ctrl }
        );
        s.send(Message::InitResponse {
            result: 9,
            is_boot: false,
        });
        let e = s.failed();
        assert!(
            matches!(&e, Error::PeerRefused(r) if r.name == "DFU_ERR_CONTROL_PACKET_INVALID" && r.code == 9),
            "{e:?}"
        );
    }

    /// Image 0 started with rate 3 and room for two windows past the acknowledged count:
    /// windows 1 and 2 written before window 1's acknowledgement.
    fn pipelining() -> Script {
        let mut s = started(DfuOptions {
            max_unacked: 6,
            ..options()
        });
        assert_eq!(s.packets(), idx(0, 1..=6));
        s
    }

    /// [`pipelining`] after window 1's acknowledgement: every packet of image 0 written.
    fn pipelined_to_the_end() -> Script {
        let mut s = pipelining();
        s.ack();
        assert_eq!(s.packets(), idx(0, 7..=7));
        s
    }

    /// The updater reached and image 0 (7 packets) started.
    fn started(options: DfuOptions) -> Script {
        let mut s = Script::new(options);
        s.enter_updater();
        s.expect_start(0, 3);
        s.start_ok();
        s
    }

    #[test]
    fn a_pipeline_writes_the_next_window_before_the_acknowledgement_and_no_further() {
        // Windows 1 and 2 before window 1's acknowledgement, then nothing: 6 ahead of 0.
        let mut s = pipelining();
        assert!(s.sent().is_empty());
        let first = s.flow.poll_timeout().unwrap();
        assert_eq!(first, s.now + Span::from_secs(10));
        // Window 1's answer, 4 s on: 3 acknowledged, so up to 9, the image's 7.
        s.now += Span::from_secs(4);
        s.ack();
        assert_eq!(s.packets(), idx(0, 7..=7));
        // Window 2 still awaits its answer: the deadline runs again from that one.
        assert_eq!(s.flow.poll_timeout(), Some(s.now + Span::from_secs(10)));
        s.ack();
        s.ack();
        s.expect_end(0, true);
        // Image 3 (5 packets) fits the depth whole.
        assert_eq!(s.expect_start(3, 3), (500, 5));
        s.start_ok();
        assert_eq!(s.packets(), idx(3, 1..=5));
        s.ack();
        assert!(s.sent().is_empty());
        s.ack();
        s.expect_end(3, false);
        let m = s.expect_one();
        assert_eq!(Message::decode(&m).unwrap(), Message::TransmissionEnd);
        s.send(Message::EndInd { result: 0 });
        let ev = s.events();
        assert_eq!(ev.last(), Some(&DfuEvent::Done));
        let progress: Vec<u64> = ev
            .iter()
            .filter_map(|e| match e {
                DfuEvent::Progress { confirmed, .. } => Some(*confirmed),
                _ => None,
            })
            .collect();
        assert_eq!(progress, [300, 600, 700, 1000, 1200]);

        // Whatever the depth, never more than it past the acknowledged count, and never
        // less than the window: a device answering each boundary as late as it can.
        for depth in 1..=8u16 {
            let mut s = started(DfuOptions {
                max_unacked: depth,
                ..options()
            });
            let mut acked = 0u16;
            let mut written = 0u16;
            while !s.flow.is_finished() && acked < 7 {
                let sent = s.packets();
                if let Some(&(_, last)) = sent.last() {
                    written = last;
                }
                let ahead = written - acked;
                let window = (acked / 3 + 1) * 3 - acked;
                assert!(
                    ahead <= depth.max(window) && ahead >= window.min(7 - acked),
                    "depth {depth}: {written} written, {acked} acknowledged"
                );
                s.ack();
                acked = ((acked / 3 + 1) * 3).min(7);
            }
            s.expect_end(0, true);
        }
    }

    #[test]
    fn a_retransmission_mid_pipeline_resumes_at_the_devices_count() {
        let mut s = pipelined_to_the_end();
        // Window 2's answer is lost: 10 s after window 1's.
        let at = s.flow.poll_timeout().unwrap();
        assert_eq!(at, s.now + Span::from_secs(10));
        s.now = at;
        s.flow.handle_timeout(at);
        assert_eq!(
            Message::decode(&s.expect_one()).unwrap(),
            Message::RetransmissionRequest
        );
        // A late answer before the device's is not the flow's to count.
        s.ack();
        assert!(s.sent().is_empty());
        // The device holds 4 (between its boundaries) at a rate of 2: from packet 5, the
        // window to 6 and the depth's room past 4, the image's end.
        s.send(Message::RetransmissionResponse {
            result: 0,
            new_num_of_rsp: 2,
            retransmission_packet_num: 4,
        });
        assert_eq!(s.packets(), idx(0, 5..=7));
        s.ack();
        s.ack();
        s.expect_end(0, true);
        assert!(!s.flow.is_finished());
    }

    #[test]
    fn a_link_lose_check_mid_pipeline_sends_one_window_until_an_acknowledgement() {
        let mut s = pipelining();
        // Packet 2 was lost; the device holds 1 and halves its rate.
        s.link_lose_check(2, 1);
        let at = s.flow.poll_timeout().unwrap();
        s.now = at;
        s.flow.handle_timeout(at);
        // Packets 3 to 6 written before may still move the device on: one window first.
        assert_eq!(s.packets(), idx(0, 2..=2));
        assert!(s.sent().is_empty());
        s.ack();
        // The count is the device's again: the depth's room from 2.
        assert_eq!(s.packets(), idx(0, 3..=7));
        for _ in 0..3 {
            s.ack();
        }
        s.expect_end(0, true);
    }

    #[test]
    fn an_end_before_the_devices_last_packet_resends_from_its_count() {
        // A repeated acknowledgement counted: the flow ends image 0 the device lacks 7 of.
        let mut s = pipelined_to_the_end();
        s.ack();
        s.ack();
        let end = Message::ImageSendEnd {
            img_id: ImageId(0),
            is_more_image: true,
        };
        assert_eq!(Message::decode(&s.expect_one()).unwrap(), end);
        // Packet 7 lost, none after it: the end is refused as incomplete; the count asked.
        let general = DfuErrorCode::GeneralErr.code();
        s.send(Message::ImageSendEndResponse { result: general });
        assert_eq!(
            Message::decode(&s.expect_one()).unwrap(),
            Message::RetransmissionRequest
        );
        s.send(Message::RetransmissionResponse {
            result: 0,
            new_num_of_rsp: 3,
            retransmission_packet_num: 6,
        });
        assert_eq!(s.packets(), idx(0, 7..=7));
        s.ack();
        assert_eq!(Message::decode(&s.expect_one()).unwrap(), end);
        // Refused again, the refusal stands.
        s.send(Message::ImageSendEndResponse { result: general });
        assert!(matches!(s.failed(), Error::PeerRefused(r) if r.code == i64::from(general)));

        // A packet lost before others: the device's check comes before its answer.
        let mut s = pipelined_to_the_end();
        s.ack();
        s.ack();
        assert_eq!(Message::decode(&s.expect_one()).unwrap(), end);
        s.link_lose_check(3, 5);
        s.send(Message::ImageSendEndResponse { result: general });
        assert!(
            !s.flow.is_finished(),
            "the answer to the early end is ignored"
        );
        let at = s.flow.poll_timeout().unwrap();
        s.now = at;
        s.flow.handle_timeout(at);
        assert_eq!(s.packets(), idx(0, 6..=6));
        s.ack();
        assert_eq!(s.packets(), idx(0, 7..=7));
        s.ack();
        s.expect_end(0, true);
        assert_eq!(s.expect_start(3, 3), (500, 5));
    }

    #[test]
    fn a_lost_acknowledgement_asks_for_retransmission_at_a_lower_rate() {
        let mut s = Script::new(options());
        s.enter_updater();
        s.expect_start(0, 3);
        s.start_ok();
        assert_eq!(s.packets(), idx(0, 1..=3));
        let deadline = s.flow.poll_timeout().unwrap();
        assert_eq!(deadline, s.now + Span::from_secs(10));
        s.now = deadline;
        s.flow.handle_timeout(s.now);
        let m = s.expect_one();
        assert_eq!(Message::decode(&m).unwrap(), Message::RetransmissionRequest);
        s.send(Message::RetransmissionResponse {
            result: 0,
            new_num_of_rsp: 1,
            retransmission_packet_num: 1,
        });
        assert_eq!(s.packets(), idx(0, 2..=2));
        s.ack();
        assert_eq!(s.packets(), idx(0, 3..=3));
        assert!(!s.flow.is_finished());
    }

    #[test]
    fn retransmissions_without_progress_run_out() {
        let mut s = Script::new(DfuOptions {
            max_retries: 2,
            ..options()
        });
        s.enter_updater();
        s.expect_start(0, 3);
        s.start_ok();
        let _ = s.packets();
        for _ in 0..2 {
            let at = s.flow.poll_timeout().unwrap();
            s.now = at;
            s.flow.handle_timeout(at);
            assert_eq!(
                Message::decode(&s.expect_one()).unwrap(),
                Message::RetransmissionRequest
            );
        }
        let at = s.flow.poll_timeout().unwrap();
        s.flow.handle_timeout(at);
        assert_eq!(
            s.failed(),
            Error::LinkLost(LinkLost::RetriesExhausted { attempts: 2 })
        );
    }

    #[test]
    fn a_huge_resume_count_costs_progress_nothing() {
        // cargo-fuzz flow_dfu (fuzz/regressions/flow_dfu/huge-resume-count): a RESUME_RESPONSE
        // count far past the image made progress() walk that many record indices until
        // IMAGE_SEND_START's answer clamped it (minutes for u32::MAX).
        let mut s = Script::new(options());
        s.enter_updater();
        s.expect_start(0, 3);
        s.start_ok();
        let _ = s.packets();
        s.flow.handle_disconnected(s.now);
        s.init();
        s.send(Message::InitResponse {
            result: 10,
            is_boot: false,
        });
        let _ = s.expect_one();
        s.send(Message::ResumeResponse {
            result: 0,
            is_boot: false,
            is_restart: false,
            curr_packet_num: u32::MAX,
            curr_img: ImageId(0),
            num_of_rsp: Some(3),
        });
        let (confirmed, total) = s.flow.progress();
        assert!(confirmed <= total, "{confirmed} of {total}");
    }

    #[test]
    fn link_lose_check_is_answered_and_sending_resumes_after_a_pause() {
        let mut s = Script::new(options());
        s.enter_updater();
        s.expect_start(0, 3);
        s.start_ok();
        let _ = s.packets();
        s.link_lose_check(2, 1);
        assert!(s.sent().is_empty(), "paused");
        let at = s.flow.poll_timeout().unwrap();
        assert_eq!(at, s.now + Span::from_secs(1));
        s.now = at;
        s.flow.handle_timeout(at);
        // From packet 2 to the next multiple of the new rate.
        assert_eq!(s.packets(), idx(0, 2..=2));
        s.ack();
        assert_eq!(s.packets(), idx(0, 3..=4));
    }

    #[test]
    fn a_burst_of_checks_for_one_gap_is_one_recovery() {
        let mut s = Script::new(DfuOptions {
            max_retries: 1,
            ..options()
        });
        s.enter_updater();
        s.expect_start(0, 3);
        s.start_ok();
        let _ = s.packets();
        // One check for each packet that arrived past a lost one, the rate halving as the
        // device's retry rule goes: a single recovery within one retry, resuming once the
        // last of them has paused the flow a second.
        let mut last = s.now;
        for rsp in [2, 1, 1, 1] {
            last = s.now;
            s.link_lose_check(rsp, 1);
            s.now += Span::from_millis(100);
        }
        assert!(!s.flow.is_finished());
        let at = s.flow.poll_timeout().unwrap();
        assert_eq!(at, last + Span::from_secs(1));
        s.now = at;
        s.flow.handle_timeout(at);
        assert_eq!(s.packets(), idx(0, 2..=2));
        s.ack();
        assert_eq!(s.packets(), idx(0, 3..=3));
    }

    #[test]
    fn a_drop_mid_image_reconnects_through_init_and_resumes() {
        let mut s = Script::new(options());
        s.enter_updater();
        s.expect_start(0, 3);
        s.start_ok();
        let _ = s.packets();
        s.ack();
        let _ = s.packets();
        s.flow.handle_disconnected(s.now);
        assert!(s.events().contains(&DfuEvent::NeedsReconnect));
        assert_eq!(
            s.flow.poll_timeout(),
            None,
            "a drop mid-transfer waits for the user"
        );
        s.init();
        s.send(Message::InitResponse {
            result: 10,
            is_boot: false,
        });
        assert!(matches!(
            Message::decode(&s.expect_one()).unwrap(),
            Message::ResumeRequest { .. }
        ));
        s.send(Message::ResumeResponse {
            result: 0,
            is_boot: false,
            is_restart: false,
            curr_packet_num: 3,
            curr_img: ImageId(0),
            num_of_rsp: Some(3),
        });
        let sent = s.sent();
        assert_eq!(sent.len(), 2, "RESUME_COMPLETED_IND, IMAGE_SEND_START");
        s.start_ok();
        assert_eq!(s.packets(), idx(0, 4..=6));
    }

    #[test]
    fn the_updater_window_and_other_deadlines_fail_clearly() {
        let mut s = Script::new(options());
        s.init();
        s.send(Message::InitResponse {
            result: 0,
            is_boot: true,
        });
        let _ = s.sent();
        s.flow.handle_disconnected(s.now);
        let at = s.flow.poll_timeout().unwrap();
        assert_eq!(at, s.now + Span::from_secs(30));
        s.flow.handle_timeout(at);
        assert_eq!(
            s.failed(),
            Error::LinkLost(LinkLost::TimedOut {
                waiting_for: WAIT_UPDATER
            })
        );

        // An unanswered INIT goes again every 5 s, the same bytes, until 60 s have passed.
        let mut s = Script::new(options());
        let first = s.init();
        let start = s.now;
        let mut resends = 0;
        while let Some(at) = s.flow.poll_timeout() {
            s.flow.handle_timeout(at);
            if s.flow.is_finished() {
                assert_eq!(at, start + Span::from_secs(60));
                break;
            }
            assert_eq!(at, start + Span::from_secs(5 * (resends + 1)));
            let m = s.expect_one();
            let again = Message::decode(&m).unwrap();
            assert_eq!(
                again,
                Message::InitRequest {
                    ctrl_packet: &first
                }
            );
            resends += 1;
        }
        assert_eq!(resends, 11);
        assert_eq!(
            s.failed(),
            Error::LinkLost(LinkLost::TimedOut {
                waiting_for: WAIT_INIT
            })
        );
    }

    #[test]
    fn a_lost_init_answer_costs_one_resend_and_the_repeat_answer_is_ignored() {
        let mut s = Script::new(options());
        let first = s.init();
        let at = s.flow.poll_timeout().unwrap();
        s.flow.handle_timeout(at);
        let m = s.expect_one();
        let again = Message::decode(&m).unwrap();
        assert_eq!(
            again,
            Message::InitRequest {
                ctrl_packet: &first
            }
        );
        s.send(Message::InitResponse {
            result: 0,
            is_boot: true,
        });
        let completed = s.sent();
        assert!(!completed.is_empty());
        // The device answered both: the second answer changes nothing.
        s.send(Message::InitResponse {
            result: 0,
            is_boot: true,
        });
        assert!(s.sent().is_empty());
        assert!(!s.flow.is_finished());
        assert!(s.events().contains(&DfuEvent::RebootingIntoUpdater));
    }

    #[test]
    fn skip_end_mode_zero_and_abort() {
        let mut s = Script::new(options());
        s.enter_updater();
        s.expect_start(0, 3);
        s.send(Message::ImageSendStartResponse {
            result: 0,
            end_mode: EndMode::NoSend,
            skip: true,
        });
        s.expect_start(3, 3);
        s.send(Message::ImageSendStartResponse {
            result: 0,
            end_mode: EndMode::NoSend,
            skip: true,
        });
        assert_eq!(
            Message::decode(&s.expect_one()).unwrap(),
            Message::TransmissionEnd
        );
        assert_eq!(s.events().last(), Some(&DfuEvent::Done));

        let mut s = Script::new(options());
        s.enter_updater();
        s.send(Message::AbortCommand { reason: 8 });
        assert!(matches!(s.failed(), Error::PeerRefused(r) if r.name == "DFU_ERR_FW_INVALID"));
    }

    #[test]
    fn construction_checks() {
        assert!(DfuPackage::new(Vec::new(), vec![file(0, 1)]).is_err());
        assert!(DfuPackage::new(vec![1], Vec::new()).is_err());
        assert!(DfuPackage::new(vec![1], vec![file(0, 1), file(0, 2)]).is_err());
        for bad in [
            DfuOptions {
                max_value_size: 4,
                ..options()
            },
            DfuOptions {
                num_of_rsp: 0,
                ..options()
            },
            DfuOptions {
                max_retries: 0,
                ..options()
            },
            DfuOptions {
                max_unacked: 0,
                ..options()
            },
        ] {
            assert!(DfuUpdate::new(package(), bad).is_err());
        }
    }

    #[test]
    fn a_duplicated_acknowledgement_runs_one_window_ahead_and_the_update_still_completes() {
        // IMAGE_SEND_PACKET_RESPONSE carries no packet number, so a repeated notification
        // cannot be told from the next window's: the flow sends one window early, which is
        // safe because the device checks every packet's index and the image at its end.
        let mut s = Script::new(options());
        s.enter_updater();
        s.events();
        s.expect_start(0, 3);
        s.start_ok();
        assert_eq!(s.packets(), idx(0, 1..=3));
        s.ack();
        assert_eq!(s.packets(), idx(0, 4..=6));
        s.ack(); // the same notification again
        assert_eq!(s.packets(), idx(0, 7..=7));
        s.ack(); // the device's real acknowledgement of 4..=6
        s.expect_end(0, true);
        s.ack(); // ... and of 7, late: ignored
        assert!(!s.flow.is_finished());
        assert_eq!(s.expect_start(3, 3), (500, 5));
        s.start_ok();
        assert_eq!(s.packets(), idx(3, 1..=3));
        s.ack();
        assert_eq!(s.packets(), idx(3, 4..=5));
        s.ack();
        s.expect_end(3, false);
        let m = s.expect_one();
        assert_eq!(Message::decode(&m).unwrap(), Message::TransmissionEnd);
        s.send(Message::EndInd { result: 0 });
        let ev = s.events();
        assert_eq!(ev.last(), Some(&DfuEvent::Done));
        assert!(ev
            .iter()
            .all(|e| !matches!(e, DfuEvent::Progress { confirmed, total } if confirmed > total)));
    }

    #[test]
    fn lying_frame_and_message_lengths_are_dropped_then_fail_as_malformed() {
        /// Feeds `bytes` `MAX_GARBLED` times (each dropped, nothing sent for it), then once
        /// more, which fails the update; returns that error.
        fn fourth_fails(bytes: &[u8]) -> Error {
            let mut s = Script::new(options());
            s.init();
            for _ in 0..MAX_GARBLED {
                s.flow.handle_input(s.now, (), bytes);
                assert!(!s.flow.is_finished(), "garbage is dropped");
                assert!(s.sent().is_empty());
            }
            s.flow.handle_input(s.now, (), bytes);
            assert!(s.sent().is_empty());
            s.failed()
        }

        // A SiFli frame (cate 0x01, complete, length 16 LE) carrying only 2 bytes.
        let e = fourth_fails(&[0x01, 0x00, 0x10, 0x00, 0xAA, 0xBB]);
        assert!(
            matches!(&e, Error::PeerMalformed(m) if m.what == "SiFli serial frame"),
            "{e:?}"
        );
        assert!(e
            .to_string()
            .starts_with("the device sent data that makes no sense"));

        // A well-framed DFU message (INIT_RESPONSE, id 0x0001) whose own length says 4
        // while 1 byte follows.
        let e = fourth_fails(&[0x01, 0x00, 0x05, 0x00, 0x01, 0x00, 0x04, 0x00, 0x00]);
        assert_eq!(
            e,
            Error::PeerMalformed(Malformed {
                what: "DFU message",
                reason: DecodeError::Truncated {
                    needed: 8,
                    available: 5
                }
            })
        );
        assert_eq!(e.code(), "peer-malformed");
        assert!(!e.retryable());

        // One garbled answer is outlived: the good one that follows goes on.
        let mut s = Script::new(options());
        s.init();
        s.flow
            .handle_input(s.now, (), &[0x01, 0x00, 0x10, 0x00, 0xAA, 0xBB]);
        s.send(Message::InitResponse {
            result: 0,
            is_boot: true,
        });
        assert!(s.events().contains(&DfuEvent::RebootingIntoUpdater));
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = crate::test_rng::Rng(0x9E37_79B9_7F4A_7C15);
        let mut next = move || rng.next();
        for _ in 0..300 {
            let mut s = Script::new(options());
            s.flow.handle_connected(s.now);
            let _ = s.sent();
            for _ in 0..40 {
                let len = (next() % 24) as usize;
                let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                if let Some(b) = bytes.first_mut() {
                    *b = 0x01;
                }
                s.flow.handle_input(s.now, (), &bytes);
                if next() % 5 == 0 {
                    s.flow.handle_disconnected(s.now);
                    s.flow.handle_connected(s.now);
                }
                if let Some(at) = s.flow.poll_timeout() {
                    s.flow.handle_timeout(at);
                }
                let mut buf = Vec::new();
                while s.flow.poll_transmit(&mut buf).is_some() {
                    buf.clear();
                }
                let _ = s.events();
            }
        }
    }
}
