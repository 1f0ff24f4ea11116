//! Alexa Gadgets OTA, orchestrator (Echo) side: a sans-IO state machine implementing
//! [`Flow`].
//!
//! Contract. [`GadgetUpdate`] owns one verified image and drives one gadget through the
//! handshake, the segment transfer, ApplyFirmware, the restart and the version check
//! (`protocols/gadget.md` §4–§7 and the project's gadget decisions). The edge writes every
//! datagram [`Flow::poll_transmit`] yields to the TX characteristic (write without response,
//! channel `()`), feeds every RX notification to [`Flow::handle_input`], and reports the link
//! with [`Flow::handle_connected`] (notifications enabled) and [`Flow::handle_disconnected`].
//! Each `poll_transmit` call yields exactly one transport packet (or ACK/NACK packet) of at
//! most the negotiated packet size. There is one timer: [`Flow::poll_timeout`] returns the
//! deadline of whatever the flow awaits now.
//!
//! **One transaction at a time, never interleaved**: the flow sends a transaction only after
//! the previous one is fully written, and it has at most one request outstanding; a reply is
//! matched to that request, not by its `command` field (\[REC\] §5), which only rules a reply
//! out when it names another request (below). OTA-stream transactions
//! of one segment go back to back. Transaction IDs come from one counter, modulo 16, across
//! all streams, as PI, NRF and AMA count (§3.5). ACK/NACK packets the flow owes the gadget go out before the next
//! data packet; they are not transactions and use no reassembly buffer, so they may fall
//! between the packets of one of ours.
//!
//! ```text
//!  ExpectConnection{goal} ──connected──▶ ExpectPv ──PV──▶ ExpectDeviceInformation ──resp──▶
//!  ExpectDeviceFeatures ──resp (OTA bit)──▶ ExpectDiscoverResponse ──firmwareVersion──▶ by goal:
//!
//!  Transfer: offered ≤ current ─▶ UpToDate
//!            else ─▶ ExpectSegmentAck ──ACK──▶ SendingSegment ──last packet──▶ ExpectSegmentResponse
//!                      ▲  NACK / INVALID / INTERNAL / deadline (attempt+1, ≤ max)   │ SUCCESS
//!                      └───────────────────────────────────────────────────────────┤
//!                                      next segment ◀──────── more bytes ◀─────────┘
//!                      all bytes confirmed ─▶ Staged (stage_only; apply() continues)
//!                                          └▶ ExpectApplyAck ──ACK──▶ ExpectApplyResponse
//!  ExpectApplyResponse ──SUCCESS──▶ ExpectRestart ──link drops──▶ ExpectConnection{Confirm}
//!  Confirm:  current == offered ─▶ Done;  otherwise ─▶ Failed ("kept its old firmware")
//!  Apply:    (apply() while disconnected, or a link lost during apply) current < offered ─▶
//!            ExpectApplyAck; current == offered ─▶ Done
//!  Hold:     (reconnected while Staged) ─▶ Staged
//!  ExpectPv ──no PV (deadline)──▶ ExpectConnection{goal} (NeedsReconnect, ≤ max_attempts)
//!  any state ──cancel()──▶ Cancelled; any fault ──▶ Failed
//! ```
//!
//! Timers (all in [`GadgetTimeouts`]; the segment's 60 s is \[REC\] §7.4, the rest are ours): PV packet 5 s after connecting; each
//! handshake reply and the segment ACK 10 s; Discover.Response 10 s; segment Response 60 s
//! from the ACK (the transfer itself counts against it), but no more than 5 s after the
//! edge reports the segment's last packet sent ([`Flow::handle_transmitted`]), so a lost
//! last packet costs seconds; apply ACK and Response 30 s each;
//! link drop after the apply Response, then reconnection, 60 s each. Writes go without
//! response, so a deadline that passes means a packet of ours or of the gadget's was lost: it
//! counts as a failed attempt and the flow asks again, as for a NACK. A handshake request,
//! Discover or ApplyFirmware is resent (ApplyFirmware also after its ACK came but its Response
//! did not), a segment is announced again, and a missing PV packet, which only a new
//! connection brings, emits [`GadgetEvent::NeedsReconnect`] with the link still up: the edge
//! drops it and connects again. After [`GadgetOptions::max_attempts`] attempts, and at once
//! for the restart and the reconnection after it, the flow fails with [`LinkLost::TimedOut`]
//! naming what was awaited. Waiting for the edge to reconnect during a transfer has no
//! deadline: the user may need to walk back to the device, and [`GadgetUpdate::cancel`] ends
//! it.
//!
//! Resume. The flow counts confirmed bytes: whole segments the gadget answered with SUCCESS.
//! A disconnect during the transfer emits [`GadgetEvent::NeedsReconnect`]; after the next
//! connection and a full handshake (the version must still be older than the offered one),
//! the flow announces the first unconfirmed segment. If the gadget NACKs that announcement
//! (it lost its staging, e.g. after a power cycle), the flow restarts from offset 0, once.
//!
//! Choices where the notes infer (\[INF\]) or recommend (\[REC\]), or leave room:
//!
//! - \[REC\] §2: packet size = min(P from the PV packet, [`GadgetOptions::max_packet_size`]);
//!   transaction size = T. Requests that do not fit T fail the flow as unsupported.
//! - \[INF\] §4: segment bytes go on the OTA stream raw, without the ACK flag, in
//!   transactions of at most T bytes cut to whole packets (a segment's last transaction
//!   takes what is left); each segment is announced by its own UpdateComponentSegment with
//!   the ACK flag on every packet (\[REC\] §3.5).
//!   With [`GadgetOptions::ota_window`] set, each OTA transaction also asks for an ACK and
//!   the flow keeps at most that many bytes unacknowledged (pacing for OS queues that drop
//!   writes; [`GadgetOptions::os_queue_depth`] sizes the window from the queue's depth and
//!   the link's packet size); the transactions still go one after another, never interleaved.
//! - [`GadgetOptions::check_only`] runs the handshake and Discover and finishes with
//!   [`GadgetEvent::UpdateAvailable`] or [`GadgetEvent::UpToDate`]: how an application shows
//!   the device's version before the person decides to update.
//! - Version not newer: the flow emits [`GadgetEvent::UpToDate`] and finishes *without* an
//!   error, having sent nothing beyond the handshake: an up-to-date device is a fine outcome,
//!   not a fault of the peer or the caller.
//! - Segment failures: a NACK (any result) of the announcement or of an OTA transaction, a
//!   Response of INVALID, INTERNAL, UNKNOWN or BUSY, and a deadline resend the segment from
//!   the same offset at half its size, down to [`GadgetOptions::min_segment_size`]; each
//!   success doubles it back towards [`GadgetOptions::segment_size`] (a whole segment is
//!   lost with any one packet, so the segment size follows the link's loss rate). At the
//!   segment size, a success sizes the next segment to what the link carries in a quarter
//!   of [`GadgetTimeouts::segment`] at the rate the confirmed one was sent (its Response
//!   minus its announcement's ACK), up to [`GadgetOptions::max_segment_size`] (progress
//!   between confirmations comes from [`GadgetEvent::Sent`]), and taking in a tail of the
//!   image of less than half that: each segment costs two round trips, so a clean fast link gets few large segments and a slow one stays
//!   well inside the deadline. A grown segment that fails falls back to the segment size, and
//!   from then on growth only doubles, below half the smallest size that failed: a lossy link
//!   pays for one optimistic segment, then keeps sizes that get through. At the
//!   smallest size, after [`GadgetOptions::max_attempts`] attempts the flow fails with
//!   [`LinkLost::RetriesExhausted`], or with the gadget's own refusal
//!   ([`Error::PeerRefused`], e.g. `NACK_UNSUPPORTED`) when its NACK of the last announcement
//!   was one: a segment refused every time (an image larger than the gadget's slot) is not
//!   fixed by reconnecting. Other error codes (UNSUPPORTED, NOT_FOUND,
//!   USER_CANCELLED, unknown) fail at once with [`Error::PeerRefused`].
//! - Other requests (GetDeviceInformation, GetDeviceFeatures, Discover, ApplyFirmware): a NACK
//!   with result 0x01 (a transport fault on the gadget's side) resends the request with a new
//!   transaction ID, up to `max_attempts`; any other NACK or error code is a refusal.
//! - The apply Response may arrive before its ACK (NRF acknowledges after its callback): it
//!   counts as both.
//! - A control reply whose `command` names another request than the one awaited is a late or
//!   repeated answer (a duplicated notification, a reply to a request resent after a
//!   timeout) and is ignored; `NONE`, which NRF and GDX send, names no request and matches
//!   whatever is awaited.
//! - A link lost during apply is ambiguous (the gadget may have restarted before its Response
//!   reached us): after reconnecting, a device already on the offered version is Done, one on
//!   the old version gets ApplyFirmware again.
//! - Peer faults: transport faults that the Reassembler can NACK are NACKed back (result 0x01)
//!   and the flow keeps waiting (the gadget or the timer recovers); bytes that cannot be
//!   NACKed (a malformed ACK packet, an unknown stream), a bad PV packet and a completed
//!   transaction that does not decode as what the flow awaits are dropped with whatever was
//!   being reassembled, and the deadlines ask again, up to [`MAX_GARBLED`] times in one
//!   update; the next fails it with [`Error::PeerMalformed`]. The transport has no check of
//!   its own, so a value garbled on the way looks exactly like this, and the fault campaign
//!   lost updates to single flipped bits; a peer that keeps sending garbage still fails
//!   typed. Gadget transactions that ask for an ACK are ACKed. Input that
//!   arrives while nothing is awaited from that stream (late replies, a PV packet after the
//!   handshake, stream packets before the PV packet) is ignored.
//! - A NACK is matched to the outstanding request by (stream, transaction ID); any NACK on
//!   the OTA stream while a segment is being sent or awaited fails that segment, because one
//!   segment spans more than 16 OTA transactions and their IDs wrap.
//! - The Discover directive's messageId is a per-flow counter in decimal ("1", "2", ...):
//!   deterministic, and the gadget only reads the header's namespace and name.
//! - A version that ends the flow by itself (up to date, update available, done after the
//!   restart, rejected) is read twice: a second Discover must report the same, else the flow
//!   asks again, and fails with [`Error::PeerMalformed`] after four readings that never
//!   agree. A version that leads to sending needs one reading (the gadget judges the image
//!   again at apply). The transport has no check of its own, and the fault campaign found a
//!   garbled digit claiming "up to date" for a device that was not.
//! - Refusals the gadget makes by what it reports rather than by a code: features without bit
//!   1 fail with `NO_OTA_FEATURE` (the feature word as the code); after the restart, a version
//!   still older than the offered one fails with `IMAGE_REJECTED` ("the device rejected the new
//!   image and kept its old firmware") and a newer one with `UNEXPECTED_VERSION` (the version as
//!   the code).
//! - Refusals carry [`Vendor::Gadget`] and a name from one of two tables: transport result
//!   codes are named `NACK_*`, protobuf `ErrorCode`s by their enum names (see
//!   [`transport_refusal`] and [`response_refusal`]).
//! - ApplyFirmware's `FirmwareComponent.signature`, which the notes know only as "SHA-256
//!   encoded Base64" (§5, §7.3; what it covers is open, §10.4), is our extension for a signed
//!   image: Base64 of `SHA-256 (32 bytes) ‖ ECDSA P-256 r‖s (64 bytes)`, 96 bytes in 128
//!   characters, the signature being the one [`verify_image`](crate::image::verify::verify_image) checked
//!   against the manifest entry ([`Image::signature`]); an unsigned image keeps the
//!   44-character Base64 of its SHA-256, so a gadget that expects a digest still gets one
//!   (encoding: [`ComponentSignature`]). The companion gadget reads both and, with a trusted
//!   key, refuses an unsigned apply or a bad signature (INVALID, so the flow fails with
//!   `INVALID` and the device keeps its image), and its boot decision checks the signature
//!   again before the image runs. A gadget built with EMB's nanopb bound (65 bytes) cannot
//!   take the signed form, so the flow sends it only to a gadget that asks for it with our
//!   `device_attributes` bit [`crate::wire::agt_proto::DeviceFeatures::SIGNED_APPLY`] in its
//!   GetDeviceFeatures reply (the companion gadget does); any other gadget gets the digest
//!   form, signed image or not. Segment signatures stay Base64(SHA-256).

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::error::{DecodeError, Error, LinkLost, Malformed, Misuse, Refusal, Vendor};
use crate::flow::{queue_budget, Delivery, Flow, Transmit};
use crate::image::manifest::FlowKind;
use crate::image::verify::{Image, Verified};
use crate::image::version::AlexaVersion;
use crate::time::{Millis, Span};
use crate::wire::agt::{
    is_pv_packet, AckRepr, Completed, Fragmenter, Limits, PvPacket, PvRepr, Reassembler, Received,
    ResultCode, StreamId, TransactionId, TransportPacket, ACK_PACKET_LEN, MAX_TRANSACTION_LEN,
    MIN_PACKET_SIZE,
};
use crate::wire::agt_proto::{
    decode_control, decode_discover_response, segment_signature, Command, ComponentSignature,
    ControlEnvelope, DiscoverDirective, ErrorCode, Response, ResponsePayload, NAME_MAX,
};

/// Web Bluetooth's largest characteristic value, the default packet-size cap.
pub const DEFAULT_MAX_PACKET_SIZE: u16 = 0x0200;
/// The default segment size: 16 KiB, so a failed segment costs little to resend while the
/// per-segment round trip stays rare.
pub const DEFAULT_SEGMENT_SIZE: u32 = 0x4000;
/// The largest segment the flow sends: 16 MiB, beyond AGT's 7 MB image limit (§7.1; the
/// `segment_size` field is a `uint32`). The companion gadget takes any segment within its
/// slot, writing one larger than its 64 KiB buffer in pieces.
pub const MAX_SEGMENT_SIZE: u32 = 0x100_0000;
/// The default largest grown segment: 1 MiB, a few seconds on a fast link, so a segment lost
/// to a deadline or a disconnect costs little, while its two round trips are a fraction of a
/// percent of its time.
pub const DEFAULT_MAX_SEGMENT_SIZE: u32 = 0x10_0000;
/// The OTA bytes a continuation packet's header leaves out of its size when its payload
/// length fits one byte (one more with a two-byte length, past 255; the first packet of a
/// transaction has 6, once per transaction).
const OTA_PACKET_HEADER: u32 = 3;
/// Paced OTA packets are this much under the packet size. The gadget's ACK notification
/// rides a connection event full of our packets: at 1M PHY and 7.5 ms, three full 251-byte
/// LL packets leave 96 µs of the event and the ACK's 13 LL bytes need 104, so at full size
/// every event that carries an ACK carries one data packet less (a sixth of the link with
/// an ACK every five packets); a byte less per packet frees the room for 0.4% of the bytes.
const PACED_PACKET_SLACK: u16 = 1;
/// [`GadgetEvent::Sent`] reports every this fraction of the image.
const SENT_STEPS: u32 = 100;
/// The default smallest segment: 1 KiB, the EMB sample's segment size (§5).
pub const DEFAULT_MIN_SEGMENT_SIZE: u32 = 0x400;
/// The default number of attempts per request, and per segment at its smallest size.
/// \[REC\] §7.4 suggests 3 per component. With 5% of packets lost each way, even a 1 KiB
/// segment with its announcement, ACK and Response fails about 40% of the time, and a 1 MiB
/// image needs hundreds of them: 16 attempts make a run that never gets through rare
/// (0.4^16 ≈ 4·10⁻⁷ per segment), while a device that refuses a segment every time still
/// fails the flow within seconds.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 16;

const WAIT_PV: &str = "protocol version packet";
const WAIT_DEVICE_INFORMATION: &str = "device information";
const WAIT_DEVICE_FEATURES: &str = "device features";
const WAIT_DISCOVER: &str = "Discover.Response";
/// Undecodable inputs an update drops before the next one fails it.
pub const MAX_GARBLED: u32 = 3;
/// Discover.Responses that may disagree before the flow gives up on the version.
const MAX_READINGS: u32 = 4;
const WAIT_SEGMENT_ACK: &str = "segment acknowledgement";
const WAIT_SEGMENT_RESPONSE: &str = "segment response";
const WAIT_APPLY_ACK: &str = "apply acknowledgement";
const WAIT_APPLY_RESPONSE: &str = "apply response";
const WAIT_RESTART: &str = "device restart";
const WAIT_RECONNECT: &str = "reconnection after the restart";

/// How long the flow waits for each answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GadgetTimeouts {
    /// From connecting to the PV packet (5 s).
    pub pv: Span,
    /// For each handshake reply and each segment announcement's ACK (10 s).
    pub control: Span,
    /// For Discover.Response (10 s).
    pub discover: Span,
    /// From the segment announcement's ACK to the segment's Response (60 s).
    pub segment: Span,
    /// From the segment's last packet leaving ([`Flow::handle_transmitted`]) to its
    /// Response, within `segment` (5 s): a lost last packet is found in seconds, not a minute.
    pub segment_response: Span,
    /// For the ApplyFirmware ACK, and again for its Response (30 s).
    pub apply: Span,
    /// For the link drop after a successful apply, and again for the reconnection (60 s).
    pub restart: Span,
}

impl Default for GadgetTimeouts {
    fn default() -> Self {
        GadgetTimeouts {
            pv: Span::from_secs(5),
            control: Span::from_secs(10),
            discover: Span::from_secs(10),
            segment: Span::from_secs(60),
            segment_response: Span::from_secs(5),
            apply: Span::from_secs(30),
            restart: Span::from_secs(60),
        }
    }
}

/// How a [`GadgetUpdate`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GadgetOptions {
    /// The first segment's size, 1 to [`MAX_SEGMENT_SIZE`]; the last segment is shorter
    /// (default 16 384). Each segment costs two round trips (its announcement's ACK, its
    /// Response), so on a clean link larger segments keep the link busier.
    pub segment_size: u32,
    /// The largest segment confirmed segments grow to from `segment_size`, by the rate they
    /// were sent at (see the module docs); at most `segment_size` turns growth off
    /// (default 1 MiB, [`DEFAULT_MAX_SEGMENT_SIZE`]).
    pub max_segment_size: u32,
    /// The smallest segment, 1 to `segment_size` (default 1024). A failed segment is sent
    /// again at half its size, down to this one; each confirmed segment doubles the size
    /// again, up to `segment_size`. One lost packet costs a whole segment, so on a lossy
    /// link smaller segments get through where large ones never would.
    pub min_segment_size: u32,
    /// Stop in [`GadgetEvent::Staged`] before ApplyFirmware; [`GadgetUpdate::apply`] goes on.
    pub stage_only: bool,
    /// Only read the device's version: finish with [`GadgetEvent::UpdateAvailable`] or
    /// [`GadgetEvent::UpToDate`] after Discover, sending no segment.
    pub check_only: bool,
    /// Only switch to the copy of this image the device already holds, staged earlier (by
    /// this page or another, before a restart or not): after Discover, ApplyFirmware with
    /// no segment. A device without a complete copy that matches refuses (`NOT_STAGED`).
    pub apply_staged: bool,
    /// Our own cap on the packet size, at least 8 (default 512, Web Bluetooth's limit).
    pub max_packet_size: u16,
    /// Attempts per request, and per segment once it is at `min_segment_size`, including
    /// the first (default 16).
    pub max_attempts: u32,
    /// The deadlines.
    pub timeouts: GadgetTimeouts,
    /// OTA-stream bytes the flow keeps written but unacknowledged; 0 (the default) sends a
    /// segment's transactions back to back without asking for ACKs. With a window, every
    /// OTA transaction carries the ACK flag (\[REC\] §3.5 lets any transaction ask) and at
    /// most a quarter of the window in whole packets of one byte under the packet size, and
    /// the next one waits until the bytes unacknowledged and its
    /// own fit: pacing for OS queues that drop writes they cannot hold (macOS, Windows),
    /// where the edge's writes resolve at once and only the gadget's ACKs show what arrived.
    pub ota_window: u32,
    /// The depth, in values, of an OS write queue that drops what overflows it (about 20 on
    /// macOS and Windows); 0 (the default) for one that holds writes back (BlueZ, Android).
    /// Without an `ota_window`, a depth paces the OTA stream with a window of 7/8 of the
    /// queue in packets of the link's size.
    pub os_queue_depth: u16,
}

impl Default for GadgetOptions {
    fn default() -> Self {
        GadgetOptions {
            segment_size: DEFAULT_SEGMENT_SIZE,
            max_segment_size: DEFAULT_MAX_SEGMENT_SIZE,
            min_segment_size: DEFAULT_MIN_SEGMENT_SIZE,
            stage_only: false,
            check_only: false,
            apply_staged: false,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            timeouts: GadgetTimeouts::default(),
            ota_window: 0,
            os_queue_depth: 0,
        }
    }
}

/// The steps of a gadget update, for the UI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GadgetStage {
    /// PV packet, device information and features.
    Handshake,
    /// Discover: reading the device's firmware version.
    Discover,
    /// Sending segments.
    Transfer,
    /// ApplyFirmware sent, awaiting the device's verdict.
    Apply,
    /// The device is restarting into the new image.
    Restart,
    /// Reconnected after the restart, checking the version.
    Confirm,
}

/// What the flow reports to the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GadgetEvent {
    /// A new step began.
    Stage(GadgetStage),
    /// The device reported its firmware version in Discover.Response (on every connection).
    VersionFound {
        /// The device's version.
        current: u32,
        /// The image's version.
        offered: u32,
    },
    /// Bytes the device has confirmed (whole segments), out of the image size.
    Progress {
        /// Confirmed bytes.
        confirmed: u64,
        /// The image size.
        total: u64,
    },
    /// Bytes handed to the link (the confirmed ones and the segment on its way), out of the
    /// image size: as the packet that crosses each hundredth of the image goes out, and at
    /// once when a resent segment takes it back.
    Sent {
        /// Bytes written so far.
        sent: u64,
        /// The image size.
        total: u64,
    },
    /// The link dropped while the flow still needs it, or it is up but the device never sent
    /// its PV packet on it (the edge drops it first): reconnect and call `handle_connected`.
    NeedsReconnect,
    /// The device already runs this version or a newer one; nothing was sent. Finished.
    UpToDate {
        /// The device's version.
        current: u32,
        /// The image's version.
        offered: u32,
    },
    /// The device runs an older version than the image's; nothing was sent (`check_only`).
    /// Finished.
    UpdateAvailable {
        /// The device's version.
        current: u32,
        /// The image's version.
        offered: u32,
    },
    /// Every segment is confirmed and the flow stopped before applying (`stage_only`).
    Staged,
    /// The device restarted and reports the new version. Finished.
    Done {
        /// The version now running.
        version: u32,
    },
    /// The application cancelled the update. Finished.
    Cancelled,
    /// The update stopped. Finished.
    Failed(Error),
}

/// Why the flow (re)connects: what it does once Discover tells the device's version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Goal {
    /// Send (or resume sending) segments.
    Transfer,
    /// The image is staged and apply() was called: send ApplyFirmware.
    Apply,
    /// The image is staged; wait for apply().
    Hold,
    /// ApplyFirmware succeeded and the device restarted: check its version.
    Confirm,
}

/// What the flow awaits; named rustls-style for the awaited input.
#[derive(Clone, Debug)]
enum State {
    /// The link: initially, after a drop, or after the restart.
    ExpectConnection { goal: Goal },
    /// The gadget's PV packet.
    ExpectPv { goal: Goal },
    /// The reply to GetDeviceInformation.
    ExpectDeviceInformation { goal: Goal },
    /// The reply to GetDeviceFeatures.
    ExpectDeviceFeatures { goal: Goal },
    /// Discover.Response on the Alexa stream.
    ExpectDiscoverResponse { goal: Goal },
    /// The ACK of the current segment's announcement.
    ExpectSegmentAck { attempt: u32 },
    /// Writing the segment's OTA transactions; `sent` bytes of it are in transactions so far.
    SendingSegment {
        attempt: u32,
        sent: u32,
        ota: Fragmenter<Vec<u8>>,
    },
    /// The Response to the current segment; `rearmed` once its deadline counts from
    /// the last packet's departure.
    ExpectSegmentResponse { attempt: u32, rearmed: bool },
    /// All segments confirmed; waiting for apply().
    Staged { connected: bool },
    /// The ACK of ApplyFirmware.
    ExpectApplyAck,
    /// The Response to ApplyFirmware.
    ExpectApplyResponse,
    /// The link drop of the device's restart.
    ExpectRestart,
    /// Finished: the device was already up to date, or (`check_only`) it was not.
    UpToDate,
    /// Finished: the device runs the new version.
    Done,
    /// Finished: the application cancelled.
    Cancelled,
    /// Finished: an error was reported.
    Failed,
}

impl State {
    /// How [`Misuse::WrongState`] names the state.
    fn describe(&self) -> &'static str {
        match self {
            State::ExpectConnection { .. } => "waiting for a connection",
            State::ExpectPv { .. }
            | State::ExpectDeviceInformation { .. }
            | State::ExpectDeviceFeatures { .. } => "handshaking",
            State::ExpectDiscoverResponse { .. } => "reading the device's version",
            State::ExpectSegmentAck { .. }
            | State::SendingSegment { .. }
            | State::ExpectSegmentResponse { .. } => "transferring",
            State::Staged { .. } => "staged",
            State::ExpectApplyAck | State::ExpectApplyResponse => "applying",
            State::ExpectRestart => "restarting",
            State::UpToDate => "up to date",
            State::Done => "done",
            State::Cancelled => "cancelled",
            State::Failed => "failed",
        }
    }
}

/// The request last sent, kept to match its ACK/NACK and to resend it.
#[derive(Clone, Debug)]
struct Request {
    stream: StreamId,
    id: TransactionId,
    payload: Vec<u8>,
    ack: bool,
    attempts: u32,
    wait: Span,
    waiting_for: &'static str,
}

/// The one active deadline.
#[derive(Clone, Copy, Debug)]
struct Deadline {
    at: Millis,
    waiting_for: &'static str,
}

/// One gadget update: the orchestrator side of Alexa Gadgets OTA. See the module docs.
#[derive(Debug)]
pub struct GadgetUpdate {
    options: GadgetOptions,
    /// The component name: the image's name.
    name: String,
    offered: AlexaVersion,
    bytes: Vec<u8>,
    /// ApplyFirmware's component signature: Base64 of the image's SHA-256, and of its
    /// ECDSA signature after it if the image is signed and the gadget announced
    /// [`crate::wire::agt_proto::DeviceFeatures::SIGNED_APPLY`] (module docs).
    image_signature: String,
    /// The digest-only form, for a gadget that did not announce it (a stock sample's field
    /// holds 64 characters).
    digest_signature: String,
    /// Whether the gadget announced the signed form on this connection.
    signed_apply: bool,
    state: State,
    stage: Option<GadgetStage>,
    limits: Option<Limits>,
    /// Bytes confirmed by segment Responses; always a segment boundary.
    confirmed: u32,
    /// The next announcement resumes after a reconnect (a NACK restarts from 0).
    resuming: bool,
    /// The once-only restart from offset 0 has happened.
    restarted_from_zero: bool,
    /// The gadget's refusing NACK (not the transport fault 0x01) of the last announcement,
    /// reported instead of [`LinkLost::RetriesExhausted`] when the attempts run out: a
    /// segment it refuses every time (past the end of its slot) is its refusal, not a link
    /// that reconnecting could fix.
    segment_refused: Option<AckRepr>,
    reassembler: Reassembler,
    next_id: TransactionId,
    request: Option<Request>,
    /// The request transaction being written, one packet per poll.
    tx: Option<Fragmenter<Vec<u8>>>,
    /// ACK/NACK packets owed to the gadget; they go before data packets.
    acks: VecDeque<AckRepr>,
    deadline: Option<Deadline>,
    events: VecDeque<GadgetEvent>,
    discover_count: u32,
    /// Inputs dropped as garbled so far.
    garbled: u32,
    /// A version that would end the flow, awaiting a second Discover that agrees.
    reading: Option<u32>,
    /// Discovers answered since the last agreeing pair.
    readings: u32,
    /// The segment size now: halved by failures, doubled by successes (see the module docs).
    window: u32,
    /// When the current segment's announcement was acknowledged: the start of its rate.
    segment_started: Millis,
    /// The smallest segment size that failed in this update: growth stays below its half.
    failed_size: Option<u32>,
    /// PV waits on this run of connections that timed out; reset by a PV packet.
    pv_timeouts: u32,
    /// With [`GadgetOptions::ota_window`]: the current segment's OTA transactions written
    /// and not yet ACKed, oldest first, with their payload sizes.
    unacked: VecDeque<(TransactionId, u32)>,
    /// The bytes the last [`GadgetEvent::Sent`] reported.
    reported_sent: u32,
}

impl GadgetUpdate {
    /// A flow that will install `image` (a gadget image whose version is a decimal `u32` and
    /// whose name, the component name, has at most 15 bytes), waiting for the first
    /// [`Flow::handle_connected`].
    pub fn new(image: Verified<Image>, options: GadgetOptions) -> Result<Self, Misuse> {
        let image = image.into_inner();
        if image.flow != FlowKind::Gadget {
            return Err(Misuse::InvalidArgument(
                "the image is not for the gadget flow",
            ));
        }
        let offered = AlexaVersion::parse(&image.version).map_err(|_| {
            Misuse::InvalidArgument(
                "a gadget image's version must be a decimal number (0-4294967295)",
            )
        })?;
        if image.name.is_empty() || image.name.len() > NAME_MAX {
            return Err(Misuse::InvalidArgument(
                "a gadget image's name is its component name: 1 to 15 bytes",
            ));
        }
        if image.bytes.is_empty() || u32::try_from(image.bytes.len()).is_err() {
            return Err(Misuse::InvalidArgument(
                "a gadget image must hold 1 byte to 4 GiB",
            ));
        }
        if options.segment_size == 0 || options.segment_size > MAX_SEGMENT_SIZE {
            return Err(Misuse::InvalidArgument(
                "the segment size must be 1 to 16 MiB",
            ));
        }
        if options.min_segment_size == 0 || options.min_segment_size > options.segment_size {
            return Err(Misuse::InvalidArgument(
                "the smallest segment size must be 1 byte to the segment size",
            ));
        }
        if options.max_packet_size < MIN_PACKET_SIZE {
            return Err(Misuse::InvalidArgument(
                "the packet size cap must be at least 8 bytes",
            ));
        }
        if options.max_attempts == 0 {
            return Err(Misuse::InvalidArgument("max_attempts must be at least 1"));
        }
        if options.apply_staged && (options.stage_only || options.check_only) {
            return Err(Misuse::InvalidArgument(
                "apply_staged switches to a staged image: it cannot also stage or only check",
            ));
        }
        let image_signature = ComponentSignature {
            sha256: image.sha256,
            ecdsa: image.signature,
        }
        .encode();
        let digest_signature = ComponentSignature {
            sha256: image.sha256,
            ecdsa: None,
        }
        .encode();
        Ok(GadgetUpdate {
            window: options.segment_size,
            segment_started: Millis::ZERO,
            failed_size: None,
            options,
            name: image.name,
            offered,
            bytes: image.bytes,
            image_signature,
            digest_signature,
            signed_apply: false,
            state: State::ExpectConnection {
                goal: if options.apply_staged {
                    Goal::Apply
                } else {
                    Goal::Transfer
                },
            },
            stage: None,
            limits: None,
            confirmed: 0,
            resuming: false,
            restarted_from_zero: false,
            segment_refused: None,
            reassembler: Reassembler::new(MAX_TRANSACTION_LEN as u16),
            next_id: TransactionId::ZERO,
            request: None,
            tx: None,
            acks: VecDeque::new(),
            deadline: None,
            events: VecDeque::new(),
            discover_count: 0,
            reading: None,
            readings: 0,
            garbled: 0,
            pv_timeouts: 0,
            unacked: VecDeque::new(),
            reported_sent: 0,
        })
    }

    /// The current step, or `None` before the first connection.
    #[must_use]
    pub fn stage(&self) -> Option<GadgetStage> {
        self.stage
    }

    /// Confirmed bytes and the image size.
    #[must_use]
    pub fn progress(&self) -> (u64, u64) {
        (u64::from(self.confirmed), self.total_u64())
    }

    /// The packet and transaction sizes negotiated on this connection, once the PV packet
    /// arrived.
    #[must_use]
    pub fn limits(&self) -> Option<Limits> {
        self.limits
    }

    /// Whether the flow ended: done, up to date, cancelled or failed.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        matches!(
            self.state,
            State::UpToDate | State::Done | State::Cancelled | State::Failed
        )
    }

    /// Installs a staged image: sends ApplyFirmware now if connected, else asks for a
    /// reconnect first. Only while staged (or reconnecting to a staged device).
    pub fn apply(&mut self, now: Millis) -> Result<(), Misuse> {
        match &mut self.state {
            State::Staged { connected } => {
                if *connected {
                    self.send_apply(now);
                } else {
                    self.await_connection(now, Goal::Apply);
                }
                Ok(())
            }
            // Reconnected to a staged device and still handshaking: apply once it is done.
            State::ExpectConnection { goal }
            | State::ExpectPv { goal }
            | State::ExpectDeviceInformation { goal }
            | State::ExpectDeviceFeatures { goal }
            | State::ExpectDiscoverResponse { goal }
                if *goal == Goal::Hold =>
            {
                *goal = Goal::Apply;
                Ok(())
            }
            other => Err(Misuse::WrongState {
                call: "apply",
                state: other.describe(),
            }),
        }
    }

    /// Stops the update; nothing more is sent. The gadget keeps what it staged (AGT has no
    /// cancel command). No effect once finished.
    pub fn cancel(&mut self, _now: Millis) {
        if self.is_finished() {
            return;
        }
        self.clear_link();
        self.deadline = None;
        self.state = State::Cancelled;
        self.events.push_back(GadgetEvent::Cancelled);
    }

    // --- transitions -------------------------------------------------------------------

    fn total(&self) -> u32 {
        // Checked in new(): the image fits in u32.
        u32::try_from(self.bytes.len()).unwrap_or(u32::MAX)
    }

    fn total_u64(&self) -> u64 {
        u64::from(self.total())
    }

    /// The current segment: offset and size.
    fn segment(&self) -> (u32, u32) {
        let offset = self.confirmed;
        (offset, self.window.min(self.total().saturating_sub(offset)))
    }

    fn segment_bytes(&self, from: u32, len: u32) -> &[u8] {
        let start = from as usize;
        self.bytes
            .get(start..start.saturating_add(len as usize))
            .unwrap_or(&[])
    }

    fn set_stage(&mut self, stage: GadgetStage) {
        if self.stage != Some(stage) {
            self.stage = Some(stage);
            self.events.push_back(GadgetEvent::Stage(stage));
        }
    }

    fn arm(&mut self, now: Millis, wait: Span, waiting_for: &'static str) {
        self.deadline = Some(Deadline {
            at: now + wait,
            waiting_for,
        });
    }

    fn take_id(&mut self) -> TransactionId {
        let id = self.next_id;
        self.next_id = id.next();
        id
    }

    /// Forgets everything tied to the current link.
    fn clear_link(&mut self) {
        self.reassembler.reset();
        self.tx = None;
        self.acks.clear();
        self.request = None;
        self.unacked.clear();
    }

    fn fail(&mut self, error: Error) {
        self.clear_link();
        self.deadline = None;
        self.state = State::Failed;
        self.events.push_back(GadgetEvent::Failed(error));
    }

    /// Input that does not decode: dropped with what was being reassembled, so the
    /// deadlines ask again, [`MAX_GARBLED`] times; after that the update fails with it.
    fn garbled(&mut self, error: Malformed) {
        self.garbled += 1;
        if self.garbled > MAX_GARBLED {
            return self.fail(error.into());
        }
        self.reassembler.reset();
    }

    fn finish_up_to_date(&mut self, current: u32) {
        self.finish_checked(GadgetEvent::UpToDate {
            current,
            offered: self.offered.0,
        });
    }

    /// Finishes after Discover, having sent nothing more, reporting `event`.
    fn finish_checked(&mut self, event: GadgetEvent) {
        self.clear_link();
        self.deadline = None;
        self.state = State::UpToDate;
        self.events.push_back(event);
    }

    fn finish_done(&mut self) {
        self.clear_link();
        self.deadline = None;
        self.state = State::Done;
        self.events.push_back(GadgetEvent::Done {
            version: self.offered.0,
        });
    }

    /// Waits for the edge to reconnect for `goal`, and tells it so.
    fn await_connection(&mut self, now: Millis, goal: Goal) {
        self.clear_link();
        self.limits = None;
        self.state = State::ExpectConnection { goal };
        if goal == Goal::Confirm {
            self.set_stage(GadgetStage::Restart);
            self.arm(now, self.options.timeouts.restart, WAIT_RECONNECT);
        } else {
            self.deadline = None;
        }
        self.events.push_back(GadgetEvent::NeedsReconnect);
    }

    /// Queues `payload` as a new transaction on `stream` and waits `wait` for its answer.
    fn send_request(
        &mut self,
        now: Millis,
        stream: StreamId,
        payload: Vec<u8>,
        ack: bool,
        wait: Span,
        waiting_for: &'static str,
    ) {
        let request = Request {
            stream,
            id: TransactionId::ZERO,
            payload,
            ack,
            attempts: 0,
            wait,
            waiting_for,
        };
        self.transmit_request(now, request);
    }

    /// (Re)sends `request` with a fresh transaction ID.
    fn transmit_request(&mut self, now: Millis, mut request: Request) {
        let Some(limits) = self.limits else {
            // Requests are only made after the PV packet set the limits.
            self.fail(Misuse::Unsupported("a request before the PV packet").into());
            return;
        };
        request.id = self.take_id();
        request.attempts += 1;
        match Fragmenter::new(
            request.stream,
            request.id,
            request.payload.clone(),
            request.ack,
            limits,
        ) {
            Ok(f) => {
                self.tx = Some(f);
                self.arm(now, request.wait, request.waiting_for);
                self.request = Some(request);
            }
            Err(_) => self.fail(
                Misuse::Unsupported(
                    "the device's transaction or packet size is too small for an AGT request",
                )
                .into(),
            ),
        }
    }

    /// Resends the outstanding request after a transport NACK, or gives up.
    fn resend_request(&mut self, now: Millis) {
        let Some(request) = self.request.take() else {
            return;
        };
        if request.attempts >= self.options.max_attempts {
            self.fail(
                LinkLost::RetriesExhausted {
                    attempts: request.attempts,
                }
                .into(),
            );
        } else {
            self.transmit_request(now, request);
        }
    }

    fn start_handshake(&mut self, now: Millis, goal: Goal) {
        self.clear_link();
        self.limits = None;
        self.state = State::ExpectPv { goal };
        self.set_stage(if goal == Goal::Confirm {
            GadgetStage::Confirm
        } else {
            GadgetStage::Handshake
        });
        self.arm(now, self.options.timeouts.pv, WAIT_PV);
    }

    fn on_pv(&mut self, now: Millis, bytes: &[u8]) {
        let State::ExpectPv { goal } = self.state else {
            return;
        };
        let pv = match PvPacket::new_checked(bytes).and_then(|p| PvRepr::parse(&p)) {
            Ok(pv) => pv,
            Err(e) => return self.garbled(e),
        };
        self.pv_timeouts = 0;
        self.limits = Some(Limits {
            packet_size: pv.packet_size.min(self.options.max_packet_size),
            max_transaction_size: pv.max_transaction_size,
        });
        self.state = State::ExpectDeviceInformation { goal };
        let payload = ControlEnvelope::get_device_information().to_bytes();
        let wait = self.options.timeouts.control;
        self.send_request(
            now,
            StreamId::Control,
            payload,
            false,
            wait,
            WAIT_DEVICE_INFORMATION,
        );
    }

    fn send_discover(&mut self, now: Millis, goal: Goal) {
        self.state = State::ExpectDiscoverResponse { goal };
        if goal != Goal::Confirm {
            self.set_stage(GadgetStage::Discover);
        }
        self.discover_count = self.discover_count.wrapping_add(1);
        let payload = DiscoverDirective::new(&format!("{}", self.discover_count)).to_bytes();
        let wait = self.options.timeouts.discover;
        self.send_request(now, StreamId::Alexa, payload, false, wait, WAIT_DISCOVER);
    }

    fn on_discover(&mut self, now: Millis, goal: Goal, current: u32) {
        let offered = self.offered.0;
        self.request = None;
        // A verdict that ends the flow on the version alone (up to date, done, rejected) is
        // taken on two readings that agree: nothing in the transport checks the bytes, and
        // one garbled digit would claim an update that did not happen.
        let ends = match goal {
            Goal::Transfer => current >= offered || self.options.check_only,
            Goal::Hold | Goal::Apply => current >= offered,
            Goal::Confirm => true,
        };
        if ends && self.reading != Some(current) {
            self.readings += 1;
            if self.readings > MAX_READINGS {
                return self.fail(
                    Malformed {
                        what: "Discover.Response firmwareVersion",
                        reason: DecodeError::BadValue,
                    }
                    .into(),
                );
            }
            self.reading = Some(current);
            return self.send_discover(now, goal);
        }
        self.reading = None;
        self.readings = 0;
        self.events
            .push_back(GadgetEvent::VersionFound { current, offered });
        match goal {
            Goal::Transfer if current >= offered => self.finish_up_to_date(current),
            Goal::Transfer if self.options.check_only => {
                self.finish_checked(GadgetEvent::UpdateAvailable { current, offered });
            }
            Goal::Transfer => {
                self.resuming = self.confirmed > 0;
                self.set_stage(GadgetStage::Transfer);
                self.events.push_back(GadgetEvent::Progress {
                    confirmed: u64::from(self.confirmed),
                    total: self.total_u64(),
                });
                self.next_segment_or_finish(now);
            }
            Goal::Hold | Goal::Apply if current > offered => self.finish_up_to_date(current),
            Goal::Hold | Goal::Apply if current == offered => self.finish_done(),
            Goal::Hold => {
                self.deadline = None;
                self.state = State::Staged { connected: true };
            }
            Goal::Apply => self.send_apply(now),
            Goal::Confirm if current == offered => self.finish_done(),
            Goal::Confirm => self.fail(
                Refusal {
                    vendor: Vendor::Gadget,
                    code: i64::from(current),
                    name: if current < offered {
                        "IMAGE_REJECTED"
                    } else {
                        "UNEXPECTED_VERSION"
                    },
                    meaning: if current < offered {
                        "the device rejected the new image and kept its old firmware"
                    } else {
                        "after restarting, the device reports a newer version than the one installed"
                    },
                    retryable: false,
                }
                .into(),
            ),
        }
    }

    fn next_segment_or_finish(&mut self, now: Millis) {
        if self.confirmed < self.total() {
            self.announce(now, 1);
        } else if self.options.stage_only {
            self.request = None;
            self.deadline = None;
            self.state = State::Staged { connected: true };
            self.events.push_back(GadgetEvent::Staged);
        } else {
            self.send_apply(now);
        }
    }

    /// Sends UpdateComponentSegment for the current segment (attempt `attempt`).
    fn announce(&mut self, now: Millis, attempt: u32) {
        let (offset, size) = self.segment();
        let signature = segment_signature(self.segment_bytes(offset, size));
        let payload =
            ControlEnvelope::update_component_segment(&self.name, offset, size, &signature)
                .to_bytes();
        self.state = State::ExpectSegmentAck { attempt };
        let wait = self.options.timeouts.control;
        self.send_request(
            now,
            StreamId::Control,
            payload,
            true,
            wait,
            WAIT_SEGMENT_ACK,
        );
    }

    /// The next OTA transaction of the current segment from byte `sent` of it, and its size.
    fn ota_transaction(&mut self, sent: u32) -> Option<(Fragmenter<Vec<u8>>, u32)> {
        let limits = self.limits?;
        let (offset, size) = self.segment();
        let len = self.next_ota_len(limits, size - sent.min(size));
        let payload = self.segment_bytes(offset + sent, len).to_vec();
        let id = self.take_id();
        let paced = self.ota_window(limits) > 0;
        if paced {
            self.unacked.push_back((id, len));
        }
        let limits = self.ota_limits(limits);
        match Fragmenter::new(StreamId::Ota, id, payload, paced, limits) {
            Ok(f) => Some((f, len)),
            Err(_) => {
                self.fail(
                    Misuse::Unsupported("the device's packet size is too small for AGT").into(),
                );
                None
            }
        }
    }

    /// The OTA window in bytes: the option, or else one that fits a dropping OS queue of
    /// [`GadgetOptions::os_queue_depth`] values (7/8 of it, in packets of the link's size
    /// less their header); 0 sends unpaced.
    fn ota_window(&self, limits: Limits) -> u32 {
        if self.options.ota_window > 0 {
            return self.options.ota_window;
        }
        if self.options.os_queue_depth == 0 {
            return 0;
        }
        let payload = u32::from(limits.packet_size).saturating_sub(OTA_PACKET_HEADER);
        queue_budget(self.options.os_queue_depth) * payload.max(1)
    }

    /// The limits OTA transactions are cut by: paced, packets [`PACED_PACKET_SLACK`] under
    /// the packet size.
    fn ota_limits(&self, limits: Limits) -> Limits {
        if self.ota_window(limits) == 0 {
            return limits;
        }
        Limits {
            packet_size: limits
                .packet_size
                .saturating_sub(PACED_PACKET_SLACK)
                .max(MIN_PACKET_SIZE),
            ..limits
        }
    }

    /// The payload of the next OTA transaction when `left` bytes of the segment remain.
    fn next_ota_len(&self, limits: Limits, left: u32) -> u32 {
        let t = u32::from(limits.max_transaction_size);
        let window = self.ota_window(limits);
        let whole = |limits: Limits, bytes: u32| {
            u32::try_from(limits.whole_packets_within(bytes as usize)).unwrap_or(bytes)
        };
        if window == 0 {
            // Whole packets, as paced below: a transaction of T bytes ends in a short packet,
            // which costs an exchange of the event for a fraction of its bytes (T 5000 in
            // packets of 244 is 21 packets where 20 carry 4817; benches/link measured 0.943 →
            // 0.952 of the link at 2M PHY / 247 / 30 ms for 1 MiB). The segment's last
            // transaction takes what is left.
            return if left > t { whole(limits, t) } else { left };
        }
        // A quarter of the window, in whole packets: an ACK frees room while three
        // transactions still fill the queue, so the radio seldom waits for the round trip,
        // and no transaction ends in a short packet (a third of the window in bytes, 5⅔
        // packets, measured 0.93 of the link; whole packets 0.97–0.98 at 1M and 2M PHY).
        let quarter = (window / 4).max(1);
        left.min(t).min(whole(self.ota_limits(limits), quarter))
    }

    /// Whether the OTA window has room for a transaction of `len` bytes (always, unpaced).
    fn window_has_room(&self, len: u32) -> bool {
        let window = self.limits.map_or(0, |l| self.ota_window(l));
        let unacked: u32 = self.unacked.iter().map(|(_, n)| n).sum();
        window == 0 || unacked + len <= window
    }

    /// Emits [`GadgetEvent::Sent`] when `sent` moved a hundredth of the image on, or back.
    fn report_sent(&mut self, sent: u32) {
        let step = (self.total() / SENT_STEPS).max(1);
        if sent < self.reported_sent || sent >= self.reported_sent.saturating_add(step) {
            self.reported_sent = sent;
            self.events.push_back(GadgetEvent::Sent {
                sent: u64::from(sent),
                total: self.total_u64(),
            });
        }
    }

    fn start_sending(&mut self, now: Millis, attempt: u32) {
        self.report_sent(self.confirmed);
        self.segment_started = now;
        self.unacked.clear();
        self.resuming = false;
        self.segment_refused = None;
        self.request = None;
        self.tx = None;
        if let Some((ota, sent)) = self.ota_transaction(0) {
            self.state = State::SendingSegment { attempt, sent, ota };
            self.arm(now, self.options.timeouts.segment, WAIT_SEGMENT_RESPONSE);
        }
    }

    /// The next segment's size after one of `size` bytes was confirmed at `now` (see the
    /// module docs): back towards the segment size after failures, beyond it by the rate.
    fn grow_window(&mut self, now: Millis, size: u32) {
        let base = self.options.segment_size;
        if self.window < base {
            self.window = self.window.saturating_mul(2).min(base);
            return;
        }
        let elapsed = now.since(self.segment_started).as_millis().max(1);
        let budget = self.options.timeouts.segment.as_millis() / 4;
        let by_rate = u64::from(size).saturating_mul(budget) / elapsed;
        let mut ceiling = u32::try_from(by_rate)
            .unwrap_or(u32::MAX)
            .min(self.options.max_segment_size)
            .min(MAX_SEGMENT_SIZE);
        let mut step = u32::MAX;
        if let Some(failed) = self.failed_size {
            ceiling = ceiling.min(failed / 2);
            step = 2;
        } else {
            // A tail under half a segment would cost its own two round trips for little:
            // the segment takes it, at most 3/8 of the deadline at the measured rate.
            let rest = self.total().saturating_sub(self.confirmed);
            let largest = self.options.max_segment_size.min(MAX_SEGMENT_SIZE);
            if rest <= ceiling.saturating_add(ceiling / 2) && rest <= largest {
                ceiling = ceiling.max(rest);
            }
        }
        self.window = self.window.saturating_mul(step).min(ceiling).max(base);
    }

    /// The current segment failed (NACK, a retryable error code or a deadline): resend it
    /// smaller while it can shrink, then at the smallest size until the attempts run out.
    fn segment_failed(&mut self, now: Millis, attempt: u32) {
        let (_, size) = self.segment();
        self.failed_size = Some(self.failed_size.map_or(size, |f| f.min(size)));
        if self.window > self.options.segment_size {
            self.window = self.options.segment_size;
            self.tx = None;
            self.announce(now, attempt);
        } else if self.window > self.options.min_segment_size {
            self.window = (self.window / 2).max(self.options.min_segment_size);
            self.tx = None;
            self.announce(now, attempt);
        } else if attempt >= self.options.max_attempts {
            match self.segment_refused.take() {
                Some(nack) => self.fail(transport_refusal(&nack).into()),
                None => self.fail(LinkLost::RetriesExhausted { attempts: attempt }.into()),
            }
        } else {
            self.tx = None;
            self.announce(now, attempt + 1);
        }
    }

    fn send_apply(&mut self, now: Millis) {
        let signature = if self.signed_apply {
            &self.image_signature
        } else {
            &self.digest_signature
        };
        let payload = ControlEnvelope::apply_firmware(
            self.offered.0,
            &self.name,
            self.total(),
            signature,
            true,
        )
        .to_bytes();
        self.state = State::ExpectApplyAck;
        self.set_stage(GadgetStage::Apply);
        let wait = self.options.timeouts.apply;
        self.send_request(now, StreamId::Control, payload, true, wait, WAIT_APPLY_ACK);
    }

    fn on_apply_success(&mut self, now: Millis) {
        self.request = None;
        self.state = State::ExpectRestart;
        self.set_stage(GadgetStage::Restart);
        self.arm(now, self.options.timeouts.restart, WAIT_RESTART);
    }

    fn on_ack(&mut self, now: Millis, ack: AckRepr) {
        let answers_request = self
            .request
            .as_ref()
            .is_some_and(|r| r.stream == ack.stream && r.id == ack.transaction_id);
        if ack.is_positive() {
            if ack.stream == StreamId::Ota {
                // ACKs come in order: this one covers every transaction up to it.
                if let Some(at) = self
                    .unacked
                    .iter()
                    .position(|(id, _)| *id == ack.transaction_id)
                {
                    self.unacked.drain(..=at);
                }
            }
            if !answers_request {
                return;
            }
            match self.state {
                State::ExpectSegmentAck { attempt } => self.start_sending(now, attempt),
                State::ExpectApplyAck => {
                    // Kept, to be sent again if the Response is lost.
                    self.state = State::ExpectApplyResponse;
                    self.arm(now, self.options.timeouts.apply, WAIT_APPLY_RESPONSE);
                }
                _ => {}
            }
            return;
        }
        match self.state {
            State::ExpectSegmentAck { attempt } if answers_request => {
                let (offset, _) = self.segment();
                if self.resuming && offset > 0 && !self.restarted_from_zero {
                    // The gadget lost its staging: start over, once.
                    self.restarted_from_zero = true;
                    self.resuming = false;
                    self.confirmed = 0;
                    self.events.push_back(GadgetEvent::Progress {
                        confirmed: 0,
                        total: self.total_u64(),
                    });
                    self.announce(now, 1);
                } else {
                    self.segment_refused = (ack.result != ResultCode::Unknown).then_some(ack);
                    self.segment_failed(now, attempt);
                }
            }
            State::SendingSegment { attempt, .. }
            | State::ExpectSegmentResponse { attempt, .. }
                if ack.stream == StreamId::Ota =>
            {
                self.segment_failed(now, attempt);
            }
            State::ExpectSegmentAck { .. }
            | State::SendingSegment { .. }
            | State::ExpectSegmentResponse { .. } => {}
            _ if !answers_request => {}
            _ if ack.result == ResultCode::Unknown => self.resend_request(now),
            _ => self.fail(transport_refusal(&ack).into()),
        }
    }

    fn on_transaction(&mut self, now: Millis, t: Completed) {
        if t.ack_requested {
            self.acks
                .push_back(AckRepr::ack(t.stream, t.transaction_id));
        }
        match (t.stream, &self.state) {
            (StreamId::Alexa, &State::ExpectDiscoverResponse { goal }) => {
                let version = decode_discover_response(&t.payload).and_then(|e| {
                    e.firmware_version()
                        .and_then(|v| AlexaVersion::parse(v).ok())
                        .ok_or(Malformed {
                            what: "Discover.Response firmwareVersion",
                            reason: DecodeError::BadValue,
                        })
                });
                match version {
                    Ok(v) => self.on_discover(now, goal, v.0),
                    Err(e) => self.garbled(e),
                }
            }
            (
                StreamId::Control,
                State::ExpectDeviceInformation { .. }
                | State::ExpectDeviceFeatures { .. }
                | State::ExpectSegmentAck { .. }
                | State::SendingSegment { .. }
                | State::ExpectSegmentResponse { .. }
                | State::ExpectApplyAck
                | State::ExpectApplyResponse,
            ) => match decode_control(&t.payload) {
                Ok(envelope) => {
                    let stale = envelope.command != i32::from(Command::None)
                        && self
                            .awaited_command()
                            .is_some_and(|c| envelope.command != i32::from(c));
                    if let Some(response) = envelope.as_response().filter(|_| !stale) {
                        self.on_response(now, response);
                    }
                }
                Err(e) => self.garbled(e),
            },
            _ => {}
        }
    }

    /// The request a control reply in this state answers.
    fn awaited_command(&self) -> Option<Command> {
        match self.state {
            State::ExpectDeviceInformation { .. } => Some(Command::GetDeviceInformation),
            State::ExpectDeviceFeatures { .. } => Some(Command::GetDeviceFeatures),
            State::ExpectSegmentAck { .. }
            | State::SendingSegment { .. }
            | State::ExpectSegmentResponse { .. } => Some(Command::UpdateComponentSegment),
            State::ExpectApplyAck | State::ExpectApplyResponse => Some(Command::ApplyFirmware),
            _ => None,
        }
    }

    fn on_response(&mut self, now: Millis, response: &Response) {
        let ok = response.succeeded();
        match self.state {
            State::ExpectDeviceInformation { goal } if ok => {
                self.state = State::ExpectDeviceFeatures { goal };
                let payload = ControlEnvelope::get_device_features().to_bytes();
                let wait = self.options.timeouts.control;
                self.send_request(
                    now,
                    StreamId::Control,
                    payload,
                    false,
                    wait,
                    WAIT_DEVICE_FEATURES,
                );
            }
            State::ExpectDeviceFeatures { goal } if ok => match &response.payload {
                Some(ResponsePayload::DeviceFeatures(f)) if f.supports_ota() => {
                    self.signed_apply = f.supports_signed_apply();
                    self.send_discover(now, goal);
                }
                Some(ResponsePayload::DeviceFeatures(f)) => self.fail(
                    Refusal {
                        vendor: Vendor::Gadget,
                        code: i64::try_from(f.features).unwrap_or(i64::MAX),
                        name: "NO_OTA_FEATURE",
                        meaning: "the device does not support OTA updates (feature bit 1 is clear)",
                        retryable: false,
                    }
                    .into(),
                ),
                _ => self.fail(
                    Malformed {
                        what: "GetDeviceFeatures response",
                        reason: DecodeError::BadValue,
                    }
                    .into(),
                ),
            },
            // A success before the ACK means nothing for an announcement; wait for the ACK.
            State::ExpectSegmentAck { .. } if ok => {}
            State::SendingSegment { .. } | State::ExpectSegmentResponse { .. } if ok => {
                let (_, size) = self.segment();
                self.confirmed = self.confirmed.saturating_add(size);
                self.grow_window(now, size);
                self.tx = None;
                self.request = None;
                self.events.push_back(GadgetEvent::Progress {
                    confirmed: u64::from(self.confirmed),
                    total: self.total_u64(),
                });
                self.next_segment_or_finish(now);
            }
            State::ExpectSegmentAck { attempt }
            | State::SendingSegment { attempt, .. }
            | State::ExpectSegmentResponse { attempt, .. } => {
                if segment_retryable(response.error_code) {
                    self.segment_failed(now, attempt);
                } else {
                    self.fail(response_refusal(response.error_code).into());
                }
            }
            // NRF acknowledges after its callback, so the Response may come first.
            State::ExpectApplyAck | State::ExpectApplyResponse if ok => self.on_apply_success(now),
            State::ExpectApplyAck | State::ExpectApplyResponse if self.options.apply_staged => {
                self.fail(
                    Refusal {
                        vendor: Vendor::Gadget,
                        code: i64::from(response.error_code),
                        name: "NOT_STAGED",
                        meaning: "the device holds no complete, matching copy of this image to \
                                  switch to; stage it again (an update with stage only)",
                        retryable: false,
                    }
                    .into(),
                );
            }
            _ => self.fail(response_refusal(response.error_code).into()),
        }
    }

    /// Writes the next packet of the segment being sent, moving on to its next transaction,
    /// and to [`State::ExpectSegmentResponse`] as the last one goes out (so that its
    /// [`Flow::handle_transmitted`] starts the Response deadline).
    fn poll_segment(&mut self, buf: &mut Vec<u8>) -> Option<usize> {
        loop {
            let (_, size) = self.segment();
            let State::SendingSegment { attempt, sent, ota } = &mut self.state else {
                return None;
            };
            let (attempt, sent) = (*attempt, *sent);
            if let Some(len) = ota.emit_next(buf) {
                // `sent` counts this transaction whole; its packets so far carried less.
                let pending = ota.payload_len() - ota.payload_written();
                let written = sent.saturating_sub(u32::try_from(pending).unwrap_or(u32::MAX));
                if ota.is_done() && sent >= size {
                    self.state = State::ExpectSegmentResponse {
                        attempt,
                        rearmed: false,
                    };
                }
                self.report_sent(self.confirmed + written);
                return Some(len);
            }
            if sent >= size {
                self.state = State::ExpectSegmentResponse {
                    attempt,
                    rearmed: false,
                };
                return None;
            }
            let next = self.limits.map(|l| self.next_ota_len(l, size - sent))?;
            if !self.window_has_room(next) {
                return None;
            }
            let (ota, len) = self.ota_transaction(sent)?;
            self.state = State::SendingSegment {
                attempt,
                sent: sent + len,
                ota,
            };
        }
    }
}

impl Flow for GadgetUpdate {
    type Channel = ();
    type Event = GadgetEvent;

    fn handle_connected(&mut self, now: Millis) {
        match self.state {
            State::ExpectConnection { goal } => self.start_handshake(now, goal),
            State::Staged { connected: false } => self.start_handshake(now, Goal::Hold),
            // The edge may see the device come back before it reports the old link gone.
            State::ExpectRestart => self.start_handshake(now, Goal::Confirm),
            // Otherwise the flow already has a link; a repeated report changes nothing.
            _ => {}
        }
    }

    fn handle_disconnected(&mut self, now: Millis) {
        self.clear_link();
        match self.state {
            State::ExpectPv { goal }
            | State::ExpectDeviceInformation { goal }
            | State::ExpectDeviceFeatures { goal }
            | State::ExpectDiscoverResponse { goal } => {
                if goal == Goal::Hold {
                    self.deadline = None;
                    self.state = State::Staged { connected: false };
                } else {
                    self.await_connection(now, goal);
                }
            }
            State::ExpectSegmentAck { .. }
            | State::SendingSegment { .. }
            | State::ExpectSegmentResponse { .. } => self.await_connection(now, Goal::Transfer),
            State::Staged { .. } => {
                self.limits = None;
                self.state = State::Staged { connected: false };
            }
            State::ExpectApplyAck | State::ExpectApplyResponse => {
                self.await_connection(now, Goal::Apply);
            }
            // Expected: the device restarts into the new image.
            State::ExpectRestart => self.await_connection(now, Goal::Confirm),
            State::ExpectConnection { .. }
            | State::UpToDate
            | State::Done
            | State::Cancelled
            | State::Failed => {}
        }
    }

    fn handle_input(&mut self, now: Millis, _channel: (), bytes: &[u8]) {
        match self.state {
            State::ExpectConnection { .. }
            | State::UpToDate
            | State::Done
            | State::Cancelled
            | State::Failed => return,
            // The PV packet is the gadget's first notification; nothing else is read before.
            State::ExpectPv { .. } => {
                if is_pv_packet(bytes) {
                    self.on_pv(now, bytes);
                }
                return;
            }
            _ => {}
        }
        if is_pv_packet(bytes) {
            return;
        }
        match self.reassembler.push(bytes) {
            Ok(Received::Partial) => {}
            Ok(Received::Ack(ack)) => self.on_ack(now, ack),
            Ok(Received::Transaction(t)) => self.on_transaction(now, t),
            Err(e) => match e.nack() {
                Some(nack) => self.acks.push_back(nack),
                None => self.garbled(Malformed::from(e)),
            },
        }
    }

    fn handle_timeout(&mut self, now: Millis) {
        let Some(d) = self.deadline else {
            return;
        };
        if now < d.at {
            return;
        }
        let max = self.options.max_attempts;
        let request_left = self.request.as_ref().is_some_and(|r| r.attempts < max);
        match self.state {
            State::ExpectPv { goal } if self.pv_timeouts + 1 < max => {
                self.pv_timeouts += 1;
                self.await_connection(now, goal);
            }
            State::ExpectSegmentAck { attempt }
            | State::SendingSegment { attempt, .. }
            | State::ExpectSegmentResponse { attempt, .. }
                if attempt < max =>
            {
                self.segment_failed(now, attempt);
            }
            State::ExpectDeviceInformation { .. }
            | State::ExpectDeviceFeatures { .. }
            | State::ExpectDiscoverResponse { .. }
            | State::ExpectApplyAck
                if request_left =>
            {
                self.resend_request(now);
            }
            State::ExpectApplyResponse if request_left => {
                self.state = State::ExpectApplyAck;
                self.resend_request(now);
            }
            _ => self.fail(
                LinkLost::TimedOut {
                    waiting_for: d.waiting_for,
                }
                .into(),
            ),
        }
    }

    fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> Option<Transmit<()>> {
        let transmit = |len| Transmit {
            channel: (),
            len,
            delivery: Delivery::WithoutResponse,
        };
        while let Some(ack) = self.acks.pop_front() {
            let start = buf.len();
            buf.resize(start + ACK_PACKET_LEN, 0x00);
            if ack
                .emit(&mut TransportPacket::new_unchecked(&mut buf[start..]))
                .is_ok()
            {
                return Some(transmit(ACK_PACKET_LEN));
            }
            buf.truncate(start);
        }
        if let Some(tx) = &mut self.tx {
            if let Some(len) = tx.emit_next(buf) {
                return Some(transmit(len));
            }
            self.tx = None;
        }
        self.poll_segment(buf).map(transmit)
    }

    fn handle_transmitted(&mut self, now: Millis) {
        if let State::ExpectSegmentResponse { rearmed, .. } = &mut self.state {
            if !*rearmed {
                *rearmed = true;
                let at = now + self.options.timeouts.segment_response;
                if let Some(d) = &mut self.deadline {
                    d.at = d.at.min(at);
                }
            }
        }
    }

    fn poll_timeout(&self) -> Option<Millis> {
        self.deadline.map(|d| d.at)
    }

    fn poll_event(&mut self) -> Option<GadgetEvent> {
        self.events.pop_front()
    }
}

/// Whether a segment Response with `code` is worth sending the segment again for: a hash
/// mismatch or a flash error can be transient, as can UNKNOWN and BUSY.
fn segment_retryable(code: i32) -> bool {
    [
        ErrorCode::Invalid,
        ErrorCode::Internal,
        ErrorCode::Unknown,
        ErrorCode::Busy,
    ]
    .into_iter()
    .any(|c| i32::from(c) == code)
}

/// The refusal a NACK stands for: the transport result-code table (§3.5).
#[must_use]
pub fn transport_refusal(ack: &AckRepr) -> Refusal {
    let (name, meaning, retryable) = match ack.result {
        ResultCode::Success => (
            "NACK",
            "the device declined the request without giving a reason",
            true,
        ),
        ResultCode::Unknown => (
            "NACK_UNKNOWN",
            "the device could not process the request (a transport or processing failure); \
             try again",
            true,
        ),
        ResultCode::Unsupported => (
            "NACK_UNSUPPORTED",
            "the device does not support this request or one of its fields",
            false,
        ),
        ResultCode::Other(_) => (
            "NACK_OTHER",
            "the device refused the request with a result code this updater does not know",
            false,
        ),
    };
    Refusal {
        vendor: Vendor::Gadget,
        code: i64::from(u8::from(ack.result)),
        name,
        meaning,
        retryable,
    }
}

/// The refusal a Response `error_code` stands for: the protobuf `ErrorCode` table (§5).
#[must_use]
pub fn response_refusal(code: i32) -> Refusal {
    let (name, meaning, retryable) = match ErrorCode::try_from(code) {
        Ok(ErrorCode::Success) => (
            "SUCCESS",
            "the device reported success where a failure was expected",
            false,
        ),
        Ok(ErrorCode::Unknown) => (
            "UNKNOWN",
            "the device reported an unspecified failure",
            true,
        ),
        Ok(ErrorCode::Internal) => (
            "INTERNAL",
            "the device failed internally, e.g. writing its flash; try again, and if it keeps \
             failing the device needs service",
            true,
        ),
        Ok(ErrorCode::Unsupported) => (
            "UNSUPPORTED",
            "the device does not implement this request",
            false,
        ),
        Ok(ErrorCode::UserCancelled) => (
            "USER_CANCELLED",
            "the update was cancelled on the device",
            false,
        ),
        Ok(ErrorCode::NotFound) => (
            "NOT_FOUND",
            "the device does not know the component this image is for",
            false,
        ),
        Ok(ErrorCode::Invalid) => (
            "INVALID",
            "the device found the request or the image invalid (a checksum mismatch, a wrong \
             size, or a version that is not newer); it keeps its current firmware",
            false,
        ),
        Ok(ErrorCode::Busy) => ("BUSY", "the device is busy; try again shortly", true),
        Err(_) => (
            "UNDEFINED",
            "the device answered with an error code this updater does not know",
            false,
        ),
    };
    Refusal {
        vendor: Vendor::Gadget,
        code: i64::from(code),
        name,
        meaning,
        retryable,
    }
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;
    use alloc::vec;

    use super::*;
    use crate::image::digest::sha256;
    use crate::image::manifest::ManifestEntry;
    use crate::image::verify::{verify_image, VerifyPolicy};
    use crate::test_rng::Rng;
    use crate::wire::agt::PV_PACKET_LEN;
    use crate::wire::agt_proto::{
        decode_discover_directive, Command, DeviceFeatures, DeviceInformation,
        DiscoverResponseEvent,
    };

    /// The gadget's packet size (P) and transaction size (T) in these scripts.
    const P: u16 = 64;
    const T: u16 = 512;
    const SEG: u32 = 16 * 1024;
    const SIZE: u32 = 40 * 1024;
    /// An unpaced OTA transaction: the whole packets of P that fit T (58 + 7 × 61 bytes).
    const WHOLE: u32 = 485;
    const ACK_FLAG: u8 = 0x02;

    fn image_bytes() -> Vec<u8> {
        Rng(0x5EED_1234_ABCD_0001).bytes(SIZE as usize)
    }

    fn image_named(name: &str, version: &str) -> Verified<Image> {
        let bytes = image_bytes();
        let entry = ManifestEntry {
            name: name.to_string(),
            flow: FlowKind::Gadget,
            version: version.to_string(),
            url: "app.bin".to_string(),
            size: bytes.len() as u64,
            sha256: sha256(&bytes),
            md5: None,
            signature: None,
            compression: None,
        };
        verify_image(&bytes, &entry, &VerifyPolicy::danger_accept_unsigned()).unwrap()
    }

    /// Fixed-size segments, so the scripts below know every segment's bounds, and three
    /// attempts, so they can count them out.
    fn options() -> GadgetOptions {
        GadgetOptions {
            segment_size: SEG,
            min_segment_size: SEG,
            max_segment_size: SEG,
            max_attempts: 3,
            ..GadgetOptions::default()
        }
    }

    fn pv_bytes(p: u16, t: u16) -> Vec<u8> {
        let mut b = vec![0u8; PV_PACKET_LEN];
        PvRepr::new(p, t)
            .emit(&mut PvPacket::new_unchecked(&mut b[..]))
            .unwrap();
        b
    }

    fn ack_bytes(a: AckRepr) -> Vec<u8> {
        let mut b = vec![0u8; ACK_PACKET_LEN];
        a.emit(&mut TransportPacket::new_unchecked(&mut b[..]))
            .unwrap();
        b
    }

    fn txn(n: u8) -> TransactionId {
        TransactionId::new(n).unwrap()
    }

    /// A send!/recv! script: the flow, a clock, and a gadget-side reassembler that decodes
    /// what the flow sends. The gadget's side is written by hand in each test.
    struct Script {
        flow: GadgetUpdate,
        now: Millis,
        rx: Reassembler,
        gadget_id: TransactionId,
        image: Vec<u8>,
        /// The `device_attributes` the scripted gadget reports.
        attributes: u64,
    }

    impl Script {
        fn new(options: GadgetOptions) -> Self {
            Self::with_image(options, image_named("app", "2"))
        }

        /// A script whose flow installs `image`, which holds [`image_bytes`].
        fn with_image(options: GadgetOptions, image: Verified<Image>) -> Self {
            assert_eq!(image.get().bytes, image_bytes());
            Script {
                flow: GadgetUpdate::new(image, options).unwrap(),
                now: Millis(1_000),
                rx: Reassembler::new(T),
                gadget_id: TransactionId::ZERO,
                image: image_bytes(),
                attributes: 0,
            }
        }

        fn step(&mut self, ms: u64) {
            self.now += Span::from_millis(ms);
        }

        /// Every packet the flow writes now (send!), checked against the contract.
        fn sent(&mut self) -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            loop {
                // Appends after what the buffer holds.
                let mut buf = vec![0xAA];
                let Some(t) = self.flow.poll_transmit(&mut buf) else {
                    break;
                };
                assert_eq!(t.len + 1, buf.len());
                assert_eq!(t.delivery, Delivery::WithoutResponse);
                assert!(t.len <= usize::from(P), "packet of {} bytes > P", t.len);
                out.push(buf[1..].to_vec());
                assert!(out.len() < 10_000, "runaway transmit");
            }
            out
        }

        /// What the gadget reassembles from `packets`: transactions and ACK/NACKs.
        fn decode(&mut self, packets: &[Vec<u8>]) -> Vec<Received> {
            packets
                .iter()
                .map(|p| self.rx.push(p).unwrap())
                .filter(|r| *r != Received::Partial)
                .collect()
        }

        fn events(&mut self) -> Vec<GadgetEvent> {
            core::iter::from_fn(|| self.flow.poll_event()).collect()
        }

        fn recv(&mut self, bytes: &[u8]) {
            self.flow.handle_input(self.now, (), bytes);
        }

        /// The gadget sends `payload` as one transaction on `stream` (recv!).
        fn recv_txn(&mut self, stream: StreamId, payload: &[u8]) {
            let id = self.gadget_id;
            self.gadget_id = id.next();
            let limits = Limits {
                packet_size: P,
                max_transaction_size: 0xFFFF,
            };
            let mut f = Fragmenter::new(stream, id, payload, false, limits).unwrap();
            let mut buf = Vec::new();
            while f.emit_next(&mut buf).is_some() {
                self.flow.handle_input(self.now, (), &buf);
                buf.clear();
            }
        }

        fn respond(&mut self, command: Command, code: ErrorCode) {
            self.recv_txn(
                StreamId::Control,
                &ControlEnvelope::response(command, code).to_bytes(),
            );
        }

        fn ack(&mut self, stream: StreamId, id: TransactionId) {
            self.recv(&ack_bytes(AckRepr::ack(stream, id)));
        }

        fn nack(&mut self, stream: StreamId, id: TransactionId, code: u8) {
            self.recv(&ack_bytes(AckRepr::nack(
                stream,
                id,
                ResultCode::from(code),
            )));
        }

        /// The one control or Alexa transaction the flow sent; its ID and payload.
        fn expect_request(&mut self, stream: StreamId, ack: bool) -> (TransactionId, Vec<u8>) {
            let packets = self.sent();
            assert!(!packets.is_empty(), "expected a request on {stream}");
            for p in &packets {
                assert_eq!(p[0] >> 4, u8::from(stream));
                assert_eq!(
                    p[1] & ACK_FLAG != 0,
                    ack,
                    "ACK flag on every packet or none"
                );
            }
            let mut done = self.decode(&packets);
            assert_eq!(done.len(), 1, "exactly one transaction");
            let Received::Transaction(t) = done.remove(0) else {
                panic!("a transaction")
            };
            assert_eq!((t.stream, t.ack_requested), (stream, ack));
            (t.transaction_id, t.payload)
        }

        fn features(&mut self, bits: u64) {
            let payload = ResponsePayload::DeviceFeatures(DeviceFeatures {
                features: bits,
                device_attributes: self.attributes,
            });
            self.recv_txn(
                StreamId::Control,
                &ControlEnvelope::response_with(Command::GetDeviceFeatures, payload).to_bytes(),
            );
        }

        fn device_information(&mut self) {
            let payload = ResponsePayload::DeviceInformation(DeviceInformation {
                serial_number: "G0001".to_string(),
                name: "gadget".to_string(),
                supported_transports: vec![0],
                device_type: "A1B2C3".to_string(),
            });
            self.recv_txn(
                StreamId::Control,
                &ControlEnvelope::response_with(Command::GetDeviceInformation, payload).to_bytes(),
            );
        }

        /// Answers Discover with `version`, and the flow's confirming second Discover (a
        /// version that ends the flow is read twice) the same way.
        fn discover_response(&mut self, version: &str) {
            self.answer_discover(version);
            if matches!(self.flow.state, State::ExpectDiscoverResponse { .. }) {
                let (_, p) = self.expect_request(StreamId::Alexa, false);
                assert!(decode_discover_directive(&p).is_ok());
                self.answer_discover(version);
            }
        }

        fn answer_discover(&mut self, version: &str) {
            self.recv_txn(
                StreamId::Alexa,
                &DiscoverResponseEvent::new("G0001", "gadget", version).to_bytes(),
            );
        }

        /// Connect and run PV → 20 → 28 → Discover, up to the Discover directive.
        fn handshake_to_discover(&mut self) {
            self.rx.reset();
            self.flow.handle_connected(self.now);
            assert!(self.sent().is_empty(), "the gadget speaks first");
            self.recv(&pv_bytes(P, T));
            let (_, p) = self.expect_request(StreamId::Control, false);
            assert_eq!(p, [0x08, 0x14]);
            self.device_information();
            let (_, p) = self.expect_request(StreamId::Control, false);
            assert_eq!(p, [0x08, 0x1C]);
            self.features(0x13);
            let (_, p) = self.expect_request(StreamId::Alexa, false);
            assert!(decode_discover_directive(&p).is_ok());
        }

        fn handshake(&mut self, current: &str) {
            self.handshake_to_discover();
            self.discover_response(current);
        }

        fn segment_size(offset: u32) -> u32 {
            SEG.min(SIZE - offset)
        }

        /// The announcement of the segment at `offset`; returns its transaction ID.
        fn expect_announcement(&mut self, offset: u32) -> TransactionId {
            self.expect_announcement_of(offset, Self::segment_size(offset))
        }

        /// The announcement of a segment of `size` bytes at `offset`; returns its ID.
        fn expect_announcement_of(&mut self, offset: u32, size: u32) -> TransactionId {
            let (id, payload) = self.expect_request(StreamId::Control, true);
            let bytes = &self.image[offset as usize..(offset + size) as usize];
            let expected = ControlEnvelope::update_component_segment(
                "app",
                offset,
                size,
                &segment_signature(bytes),
            );
            assert_eq!(decode_control(&payload).unwrap(), expected);
            id
        }

        /// The raw segment bytes on the OTA stream: packets ≤ P without the ACK flag,
        /// transactions ≤ T, together exactly the segment.
        fn expect_segment_data(&mut self, offset: u32) -> Vec<TransactionId> {
            self.expect_segment_data_of(offset, Self::segment_size(offset))
        }

        /// The raw bytes of a segment of `size` bytes at `offset` (see above).
        fn expect_segment_data_of(&mut self, offset: u32, size: u32) -> Vec<TransactionId> {
            let packets = self.sent();
            let mut data = Vec::new();
            let mut ids = Vec::new();
            for p in &packets {
                assert_eq!(p[0] >> 4, u8::from(StreamId::Ota));
                assert_eq!(p[1] & ACK_FLAG, 0);
            }
            for r in self.decode(&packets) {
                let Received::Transaction(t) = r else {
                    panic!("OTA transactions only")
                };
                assert!(t.payload.len() <= usize::from(T));
                assert!(!t.ack_requested);
                ids.push(t.transaction_id);
                data.extend_from_slice(&t.payload);
            }
            assert_eq!(data, self.image[offset as usize..(offset + size) as usize]);
            ids
        }

        /// One segment, accepted and confirmed.
        fn segment_ok(&mut self, offset: u32) {
            let id = self.expect_announcement(offset);
            self.ack(StreamId::Control, id);
            self.expect_segment_data(offset);
            self.respond(Command::UpdateComponentSegment, ErrorCode::Success);
        }

        fn failed(&mut self) -> Error {
            assert!(self.flow.is_finished());
            let events = self.events();
            match events.last() {
                Some(GadgetEvent::Failed(e)) => e.clone(),
                other => panic!("expected Failed, got {other:?} in {events:?}"),
            }
        }

        /// Through every segment into the apply request; returns its transaction ID.
        fn transfer_all(&mut self) {
            for offset in [0, SEG, 2 * SEG] {
                self.segment_ok(offset);
            }
        }

        fn expect_apply(&mut self) -> TransactionId {
            let (id, payload) = self.expect_request(StreamId::Control, true);
            let expected = ControlEnvelope::apply_firmware(
                2,
                "app",
                SIZE,
                &segment_signature(&self.image),
                true,
            );
            assert_eq!(decode_control(&payload).unwrap(), expected);
            id
        }
    }

    #[test]
    fn handshake_sends_pv_then_20_then_28_then_discover_with_exact_bytes() {
        let mut s = Script::new(options());
        assert_eq!(s.flow.stage(), None);
        assert_eq!(s.flow.poll_timeout(), None);
        s.flow.handle_connected(s.now);
        assert_eq!(s.flow.poll_timeout(), Some(s.now + Span::from_secs(5)));
        assert!(s.sent().is_empty());
        // Stream packets before the PV packet are not read.
        s.device_information();
        assert!(s.sent().is_empty());
        s.recv(&pv_bytes(P, T));
        assert_eq!(
            s.flow.limits(),
            Some(Limits {
                packet_size: P,
                max_transaction_size: T
            })
        );
        // The EMB capture: stream 0, transaction 0, first packet, no ACK, `08 14`.
        assert_eq!(
            s.sent(),
            [vec![0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x08, 0x14]]
        );
        assert_eq!(s.flow.poll_timeout(), Some(s.now + Span::from_secs(10)));
        s.device_information();
        assert_eq!(
            s.sent(),
            [vec![0x01, 0x00, 0x00, 0x00, 0x02, 0x02, 0x08, 0x1C]]
        );
        s.features(0x13);
        let discover = s.sent();
        assert_eq!(discover[0][0], 0x62, "Alexa stream, transaction 2");
        let done = s.decode(&discover);
        let [Received::Transaction(t)] = &done[..] else {
            panic!("one Discover")
        };
        assert!(decode_discover_directive(&t.payload).is_ok());
        assert_eq!(
            s.events(),
            [
                GadgetEvent::Stage(GadgetStage::Handshake),
                GadgetEvent::Stage(GadgetStage::Discover)
            ]
        );
        assert_eq!(s.flow.stage(), Some(GadgetStage::Discover));
    }

    #[test]
    fn packet_size_is_clamped_to_our_cap() {
        let mut s = Script::new(GadgetOptions {
            max_packet_size: 20,
            ..options()
        });
        s.flow.handle_connected(s.now);
        s.recv(&pv_bytes(244, 5000));
        assert_eq!(
            s.flow.limits(),
            Some(Limits {
                packet_size: 20,
                max_transaction_size: 5000
            })
        );
    }

    #[test]
    fn a_version_that_ends_the_flow_is_read_twice_and_a_garbled_one_is_outvoted() {
        // "8" then "0": the second reading disagrees, the third is taken as the version.
        let mut s = Script::new(options());
        s.handshake_to_discover();
        s.events();
        s.answer_discover("8");
        assert!(s.events().is_empty(), "no verdict on one reading");
        let (_, p) = s.expect_request(StreamId::Alexa, false);
        assert!(decode_discover_directive(&p).is_ok());
        s.answer_discover("0");
        assert!(!s.flow.is_finished());
        let events = s.events();
        assert!(
            events.contains(&GadgetEvent::VersionFound {
                current: 0,
                offered: 2
            }),
            "{events:?}"
        );
        s.expect_announcement(0);

        // Readings that never agree: the version is garbage.
        let mut s = Script::new(options());
        s.handshake_to_discover();
        for v in ["5", "6", "7", "8"] {
            s.answer_discover(v);
            let (_, p) = s.expect_request(StreamId::Alexa, false);
            assert!(decode_discover_directive(&p).is_ok());
        }
        s.answer_discover("9");
        assert!(matches!(
            s.failed(),
            Error::PeerMalformed(Malformed {
                what: "Discover.Response firmwareVersion",
                ..
            })
        ));
    }

    #[test]
    fn version_not_newer_is_up_to_date_and_nothing_more_is_sent() {
        for current in ["2", "7"] {
            let mut s = Script::new(options());
            s.handshake(current);
            assert!(s.sent().is_empty());
            assert!(s.flow.is_finished());
            assert_eq!(s.flow.poll_timeout(), None);
            let c = current.parse().unwrap();
            let events = s.events();
            assert_eq!(
                events[events.len() - 2..],
                [
                    GadgetEvent::VersionFound {
                        current: c,
                        offered: 2
                    },
                    GadgetEvent::UpToDate {
                        current: c,
                        offered: 2
                    }
                ]
            );
            // Late input after the end is ignored.
            s.respond(Command::None, ErrorCode::Success);
            assert!(s.sent().is_empty());
            assert!(s.events().is_empty());
        }
    }

    #[test]
    fn first_segment_announcement_and_ota_stream() {
        let mut s = Script::new(options());
        s.handshake("0");
        let events = s.events();
        assert!(events.contains(&GadgetEvent::VersionFound {
            current: 0,
            offered: 2
        }));
        assert!(events.contains(&GadgetEvent::Stage(GadgetStage::Transfer)));
        assert!(events.contains(&GadgetEvent::Progress {
            confirmed: 0,
            total: u64::from(SIZE)
        }));
        // The announcement's first packet, byte by byte: stream 0 / transaction 3; sequence 0,
        // first, ACK flag, no extender; reserved; total length; payload length P - 6; then
        // `command = 94` (`08 5E`) and the field-94 tag (`F2 05`).
        let mut probe = Script::new(options());
        probe.handshake("0");
        let packets = probe.sent();
        let envelope = ControlEnvelope::update_component_segment(
            "app",
            0,
            SEG,
            &segment_signature(&s.image[..SEG as usize]),
        )
        .to_bytes();
        let total = u16::try_from(envelope.len()).unwrap().to_be_bytes();
        assert_eq!(
            packets[0][..10],
            [0x03, 0x02, 0x00, total[0], total[1], 58, 0x08, 0x5E, 0xF2, 0x05]
        );
        assert_eq!(packets[0].len(), usize::from(P));
        assert!(packets[1..].iter().all(|p| p[1] & ACK_FLAG != 0));
        let id = s.expect_announcement(0);
        assert_eq!(
            id,
            txn(3),
            "one global counter: 20, 28, Discover, then this"
        );
        assert_eq!(s.flow.poll_timeout(), Some(s.now + Span::from_secs(10)));
        // An ACK for another transaction is not this one's.
        s.ack(StreamId::Control, txn(9));
        assert!(s.sent().is_empty());
        s.step(100);
        s.ack(StreamId::Control, id);
        assert_eq!(s.flow.poll_timeout(), Some(s.now + Span::from_secs(60)));
        let ids = s.expect_segment_data(0);
        // Transactions of whole packets within T: 58 + 7 × 61 = 485 bytes in 8 packets.
        assert_eq!(ids.len(), SEG.div_ceil(WHOLE) as usize);
        let expected: Vec<_> = (0..ids.len()).map(|i| txn(((4 + i) % 16) as u8)).collect();
        assert_eq!(ids, expected);
        s.respond(Command::UpdateComponentSegment, ErrorCode::Success);
        assert_eq!(
            s.events().last(),
            Some(&GadgetEvent::Progress {
                confirmed: u64::from(SEG),
                total: u64::from(SIZE)
            })
        );
        assert_eq!(s.flow.progress(), (u64::from(SEG), u64::from(SIZE)));
        s.expect_announcement(SEG);
    }

    #[test]
    fn confirmed_segments_grow_by_the_rate_and_stay_below_a_failed_size() {
        let mut s = Script::new(GadgetOptions {
            segment_size: 512,
            min_segment_size: 256,
            max_segment_size: 4096,
            ..options()
        });
        s.handshake("0");
        // 512 bytes in 500 ms: 15,360 bytes in a quarter of the 60 s deadline; the cap
        // (4096) holds.
        let id = s.expect_announcement_of(0, 512);
        s.ack(StreamId::Control, id);
        s.expect_segment_data_of(0, 512);
        s.step(500);
        s.respond(Command::UpdateComponentSegment, ErrorCode::Success);
        // 4096 bytes in 16 s: the next is 3840 bytes.
        let id = s.expect_announcement_of(512, 4096);
        s.ack(StreamId::Control, id);
        s.expect_segment_data_of(512, 4096);
        s.step(16_000);
        s.respond(Command::UpdateComponentSegment, ErrorCode::Success);
        // That grown segment fails: back to 512, then doubling below 1920 bytes.
        let id = s.expect_announcement_of(4608, 3840);
        s.nack(StreamId::Control, id, 0x01);
        for (offset, size) in [(4608, 512), (5120, 1024), (6144, 1920)] {
            let id = s.expect_announcement_of(offset, size);
            s.ack(StreamId::Control, id);
            s.expect_segment_data_of(offset, size);
            s.step(100);
            s.respond(Command::UpdateComponentSegment, ErrorCode::Success);
        }
        s.expect_announcement_of(8064, 1920);
    }

    #[test]
    fn a_short_tail_rides_with_the_last_grown_segment() {
        let mut s = Script::new(GadgetOptions {
            segment_size: 512,
            min_segment_size: 256,
            max_segment_size: MAX_SEGMENT_SIZE,
            ..options()
        });
        s.handshake("0");
        let segment = |s: &mut Script, offset: u32, size: u32, ms: u64| {
            let id = s.expect_announcement_of(offset, size);
            s.ack(StreamId::Control, id);
            s.expect_segment_data_of(offset, size);
            s.step(ms);
            s.respond(Command::UpdateComponentSegment, ErrorCode::Success);
        };
        // 512 bytes in 500 ms: 15,360 next; the 25,088 after those are more than half again.
        segment(&mut s, 0, 512, 500);
        segment(&mut s, 512, 15_360, 12_000);
        // 19,200 by the rate would leave 5,888 for a segment of their own: one takes all.
        segment(&mut s, 15_872, 25_088, 100);
        assert_eq!(s.flow.progress(), (u64::from(SIZE), u64::from(SIZE)));
    }

    /// The bytes each [`GadgetEvent::Sent`] in `events` reports.
    fn sent_reports(events: &[GadgetEvent]) -> Vec<u64> {
        events
            .iter()
            .filter_map(|e| match e {
                GadgetEvent::Sent { sent, total } => {
                    assert_eq!(*total, u64::from(SIZE));
                    Some(*sent)
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn sent_moves_between_confirmations_and_back_when_a_segment_is_resent() {
        // A hundredth of 40 KiB is 409 bytes; packets carry 58 (the first of a transaction)
        // or 61 payload bytes, so a report comes with the packet that crosses each step.
        let step = u64::from(SIZE / 100);
        let crossed = |reports: &[u64], from: u64| {
            let mut last = from;
            for &r in reports {
                assert!(r >= last + step && r < last + step + 61, "{last} then {r}");
                last = r;
            }
        };
        let mut s = Script::new(options());
        s.handshake("0");
        let id = s.expect_announcement(0);
        s.ack(StreamId::Control, id);
        s.expect_segment_data(0);
        let events = s.events();
        let first = sent_reports(&events);
        crossed(&first, 0);
        assert!(first.last().unwrap() + step > u64::from(SEG), "{first:?}");
        assert!(!events
            .iter()
            .any(|e| matches!(e, GadgetEvent::Progress { confirmed, .. } if *confirmed > 0)));
        s.respond(Command::UpdateComponentSegment, ErrorCode::Success);
        let id = s.expect_announcement(SEG);
        s.ack(StreamId::Control, id);
        s.expect_segment_data(SEG);
        let second = sent_reports(&s.events());
        crossed(&second, *first.last().unwrap());
        // BUSY: the segment goes again from its start, and so does the count.
        s.respond(Command::UpdateComponentSegment, ErrorCode::Busy);
        let id = s.expect_announcement(SEG);
        s.ack(StreamId::Control, id);
        s.expect_segment_data(SEG);
        let again = sent_reports(&s.events());
        assert_eq!(again[0], u64::from(SEG));
        crossed(&again[1..], u64::from(SEG));
        for reports in [&second, &again] {
            assert!(
                reports.last().unwrap() + step > u64::from(2 * SEG),
                "{reports:?}"
            );
        }
    }

    #[test]
    fn an_os_queue_depth_paces_by_a_window_that_fits_it() {
        // A queue of 8 values: 7 packets of P − 3 bytes may be unacknowledged, each
        // transaction whole packets of P − 1 within a quarter of that (one packet here).
        let window = 7 * (u32::from(P) - OTA_PACKET_HEADER) as usize;
        let mut s = Script::new(GadgetOptions {
            os_queue_depth: 8,
            ..options()
        });
        s.handshake("0");
        let limits = s.flow.limits.unwrap();
        assert_eq!(s.flow.ota_window(limits) as usize, window);
        let id = s.expect_announcement(0);
        s.ack(StreamId::Control, id);
        // The first burst: whole transactions of one full packet, as many as the window
        // holds, each packet one byte under P.
        let packets = s.sent();
        assert!(packets.iter().all(|p| p.len() == usize::from(P) - 1));
        let sent: Vec<usize> = s
            .decode(&packets)
            .into_iter()
            .map(|r| match r {
                Received::Transaction(t) if t.ack_requested => t.payload.len(),
                other => panic!("ACKed OTA transactions only: {other:?}"),
            })
            .collect();
        let one = usize::from(P) - 1 - 6;
        assert_eq!(sent, vec![one; window / one]);
    }

    #[test]
    fn an_ota_window_paces_transactions_by_the_gadgets_acks() {
        // A 1 KiB window: transactions of at most 512 bytes (T here), each asking for an ACK,
        // and never more than 1 KiB written but unacknowledged.
        let mut s = Script::new(GadgetOptions {
            ota_window: 1024,
            ..options()
        });
        s.handshake("0");
        let id = s.expect_announcement(0);
        s.ack(StreamId::Control, id);
        let mut data = Vec::new();
        let mut pending = VecDeque::new();
        loop {
            let packets = s.sent();
            if packets.is_empty() {
                break;
            }
            assert!(packets.iter().all(|p| p[1] & ACK_FLAG != 0));
            for r in s.decode(&packets) {
                let Received::Transaction(t) = r else {
                    panic!("OTA transactions only")
                };
                assert!(t.ack_requested);
                data.extend_from_slice(&t.payload);
                pending.push_back((t.transaction_id, t.payload.len()));
            }
            let unacked: usize = pending.iter().map(|(_, n)| n).sum();
            assert!(unacked <= 1024, "{unacked} bytes unacknowledged");
            // The flow waits for the oldest transaction's ACK; an ACK of the second covers
            // both, as ACKs come in order.
            let (id, _) = pending.pop_front().unwrap();
            if data.len() < SEG as usize {
                assert!(s.sent().is_empty(), "the window is full");
            }
            if let Some((second, _)) = pending.pop_front() {
                s.ack(StreamId::Ota, second);
            } else {
                s.ack(StreamId::Ota, id);
            }
        }
        assert_eq!(data, s.image[..SEG as usize]);
        s.respond(Command::UpdateComponentSegment, ErrorCode::Success);
        s.expect_announcement(SEG);
    }

    #[test]
    fn full_update_apply_restart_reconnect_done() {
        let mut s = Script::new(options());
        s.handshake("0");
        s.transfer_all();
        let id = s.expect_apply();
        assert_eq!(s.flow.stage(), Some(GadgetStage::Apply));
        assert_eq!(s.flow.poll_timeout(), Some(s.now + Span::from_secs(30)));
        s.ack(StreamId::Control, id);
        s.respond(Command::ApplyFirmware, ErrorCode::Success);
        assert_eq!(s.flow.stage(), Some(GadgetStage::Restart));
        assert_eq!(s.flow.poll_timeout(), Some(s.now + Span::from_secs(60)));
        s.step(500);
        s.flow.handle_disconnected(s.now);
        assert_eq!(s.flow.poll_timeout(), Some(s.now + Span::from_secs(60)));
        s.step(3_000);
        s.handshake("2");
        assert!(s.sent().is_empty());
        assert!(s.flow.is_finished());
        let events = s.events();
        let stages: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                GadgetEvent::Stage(st) => Some(*st),
                _ => None,
            })
            .collect();
        assert_eq!(
            stages,
            [
                GadgetStage::Handshake,
                GadgetStage::Discover,
                GadgetStage::Transfer,
                GadgetStage::Apply,
                GadgetStage::Restart,
                GadgetStage::Confirm
            ]
        );
        assert!(events.contains(&GadgetEvent::NeedsReconnect));
        assert_eq!(events.last(), Some(&GadgetEvent::Done { version: 2 }));
        assert_eq!(s.flow.poll_timeout(), None);
    }

    /// [`image_bytes`] as "app" version 2, signed by a test key that the policy trusts.
    fn signed_image() -> Verified<Image> {
        use crate::image::signature::{ImageSignature, PublicKey};
        use p256::ecdsa::signature::hazmat::PrehashSigner as _;
        use p256::ecdsa::{Signature, SigningKey};

        let bytes = image_bytes();
        let key = SigningKey::from_slice(&sha256(b"otaweb gadget flow test key")).unwrap();
        let signature: Signature = key.sign_prehash(&sha256(&bytes)).unwrap();
        let point = key.verifying_key().to_sec1_point(false);
        let trusted = PublicKey::from_sec1_bytes(point.as_bytes()).unwrap();
        let entry = ManifestEntry {
            name: "app".to_string(),
            flow: FlowKind::Gadget,
            version: "2".to_string(),
            url: "app.bin".to_string(),
            size: bytes.len() as u64,
            sha256: sha256(&bytes),
            md5: None,
            signature: Some(ImageSignature::from_bytes(&signature.to_bytes()).unwrap()),
            compression: None,
        };
        verify_image(&bytes, &entry, &VerifyPolicy::trusting(vec![trusted])).unwrap()
    }

    #[test]
    fn a_signed_image_sends_its_digest_then_its_signature_in_apply_firmware() {
        use crate::wire::agt_proto::ControlPayload;
        use base64ct::{Base64, Encoding as _};

        let image = signed_image();
        let signature = image.get().signature.expect("verified with a trusted key");
        let mut s = Script::with_image(options(), image);
        s.attributes = DeviceFeatures::SIGNED_APPLY;
        s.handshake("0");
        // The segments carry Base64(SHA-256) as for any image (expect_announcement checks).
        s.transfer_all();
        let (id, payload) = s.expect_request(StreamId::Control, true);
        let Some(ControlPayload::ApplyFirmware(apply)) = decode_control(&payload).unwrap().payload
        else {
            panic!("not ApplyFirmware");
        };
        assert_eq!(apply.validate(), Ok(()));
        let info = apply.firmware_information.as_ref().unwrap();
        assert_eq!((info.version, info.components[0].size), (2, SIZE));
        let text = &info.components[0].signature;
        assert_eq!(text.len(), 128);
        let raw = Base64::decode_vec(text).unwrap();
        assert_eq!(raw[..32], sha256(&s.image));
        assert_eq!(raw[32..], signature.to_bytes());
        assert_eq!(
            ComponentSignature::parse(text),
            Ok(ComponentSignature {
                sha256: sha256(&s.image),
                ecdsa: Some(signature)
            })
        );
        // The rest of the flow is as for an unsigned image.
        s.ack(StreamId::Control, id);
        s.respond(Command::ApplyFirmware, ErrorCode::Success);
        assert_eq!(s.flow.stage(), Some(GadgetStage::Restart));
    }

    #[test]
    fn a_gadget_that_does_not_ask_for_signatures_gets_the_digest_form_even_for_a_signed_image() {
        use crate::wire::agt_proto::ControlPayload;

        let mut s = Script::with_image(options(), signed_image());
        // A stock gadget: features 0x13, device_attributes 0.
        s.handshake("0");
        s.transfer_all();
        let (_, payload) = s.expect_request(StreamId::Control, true);
        let Some(ControlPayload::ApplyFirmware(apply)) = decode_control(&payload).unwrap().payload
        else {
            panic!("not ApplyFirmware");
        };
        let text = &apply.firmware_information.as_ref().unwrap().components[0].signature;
        assert_eq!(text.len(), 44, "fits a stock gadget's 64-character field");
        assert_eq!(
            ComponentSignature::parse(text),
            Ok(ComponentSignature {
                sha256: sha256(&s.image),
                ecdsa: None
            })
        );
    }

    #[test]
    fn an_unsigned_image_sends_only_its_digest_in_apply_firmware() {
        let mut s = Script::new(options());
        s.handshake("0");
        s.transfer_all();
        // expect_apply compares the whole envelope: the signature is Base64(SHA-256).
        s.expect_apply();
        assert_eq!(segment_signature(&s.image).len(), 44);
    }

    #[test]
    fn reconnect_reported_before_the_drop_still_confirms() {
        let mut s = waiting_for(WAIT_RESTART);
        s.step(2_000);
        s.handshake("2");
        assert_eq!(s.events().last(), Some(&GadgetEvent::Done { version: 2 }));
    }

    #[test]
    fn old_version_after_restart_fails_clearly() {
        let mut s = Script::new(options());
        s.handshake("0");
        s.transfer_all();
        let id = s.expect_apply();
        // The Response before the ACK counts as both.
        s.respond(Command::ApplyFirmware, ErrorCode::Success);
        s.ack(StreamId::Control, id);
        s.flow.handle_disconnected(s.now);
        s.handshake("0");
        let e = s.failed();
        assert!(matches!(&e, Error::PeerRefused(r) if r.name == "IMAGE_REJECTED"));
        assert!(e.to_string().contains("kept its old firmware"), "{e}");
    }

    #[test]
    fn invalid_segment_is_resent_until_attempts_run_out() {
        let mut s = Script::new(options());
        s.handshake("0");
        s.segment_ok(0);
        // INVALID then SUCCESS: the same segment again, then the next.
        let first = s.expect_announcement(SEG);
        s.ack(StreamId::Control, first);
        s.expect_segment_data(SEG);
        s.respond(Command::UpdateComponentSegment, ErrorCode::Invalid);
        let again = s.expect_announcement(SEG);
        assert_ne!(again, first, "a resend is a new transaction");
        s.ack(StreamId::Control, again);
        s.expect_segment_data(SEG);
        s.respond(Command::UpdateComponentSegment, ErrorCode::Internal);
        let third = s.expect_announcement(SEG);
        s.ack(StreamId::Control, third);
        s.expect_segment_data(SEG);
        s.respond(Command::UpdateComponentSegment, ErrorCode::Invalid);
        assert!(s.sent().is_empty());
        assert_eq!(
            s.failed(),
            Error::LinkLost(LinkLost::RetriesExhausted { attempts: 3 })
        );
    }

    #[test]
    fn unsupported_segment_response_is_a_refusal() {
        let mut s = Script::new(options());
        s.handshake("0");
        let id = s.expect_announcement(0);
        s.ack(StreamId::Control, id);
        s.expect_segment_data(0);
        s.respond(Command::UpdateComponentSegment, ErrorCode::NotFound);
        let e = s.failed();
        assert!(matches!(&e, Error::PeerRefused(r)
            if r.vendor == Vendor::Gadget && r.code == 5 && r.name == "NOT_FOUND"));
    }

    #[test]
    fn nacks_resend_or_refuse() {
        // A transport NACK (0x01) of GetDeviceInformation resends it with a new ID.
        let mut s = Script::new(options());
        s.flow.handle_connected(s.now);
        s.recv(&pv_bytes(P, T));
        let (id, _) = s.expect_request(StreamId::Control, false);
        s.nack(StreamId::Control, id, 0x01);
        let (again, p) = s.expect_request(StreamId::Control, false);
        assert_eq!((again, p.as_slice()), (txn(1), &[0x08, 0x14][..]));
        // A stale NACK of the first try changes nothing.
        s.nack(StreamId::Control, id, 0x03);
        assert!(s.sent().is_empty());
        assert!(!s.flow.is_finished());
        s.device_information();
        let (id, _) = s.expect_request(StreamId::Control, false);
        // UNSUPPORTED is a refusal.
        s.nack(StreamId::Control, id, 0x03);
        let e = s.failed();
        assert!(matches!(&e, Error::PeerRefused(r) if r.name == "NACK_UNSUPPORTED" && r.code == 3));
        assert!(!e.retryable());

        // Segments: a NACK of the announcement and a NACK of an OTA transaction resend it.
        let mut s = Script::new(options());
        s.handshake("0");
        let id = s.expect_announcement(0);
        s.nack(StreamId::Control, id, 0x03);
        let id = s.expect_announcement(0);
        s.ack(StreamId::Control, id);
        // Half the segment goes out, then the gadget NACKs an OTA transaction.
        let mut packets = Vec::new();
        for _ in 0..20 {
            let mut buf = Vec::new();
            let _ = s.flow.poll_transmit(&mut buf).unwrap();
            packets.push(buf);
        }
        let ota = s.decode(&packets);
        let Received::Transaction(t) = &ota[0] else {
            panic!("an OTA transaction")
        };
        s.nack(StreamId::Ota, t.transaction_id, 0x01);
        s.rx.reset();
        let id = s.expect_announcement(0);
        // Third attempt NACKed: out of attempts.
        s.nack(StreamId::Control, id, 0x01);
        assert_eq!(
            s.failed(),
            Error::LinkLost(LinkLost::RetriesExhausted { attempts: 3 })
        );

        // Apply: NACK 0x03 is a refusal.
        let mut s = Script::new(options());
        s.handshake("0");
        s.transfer_all();
        let id = s.expect_apply();
        s.nack(StreamId::Control, id, 0x03);
        assert!(matches!(s.failed(), Error::PeerRefused(r) if r.name == "NACK_UNSUPPORTED"));
    }

    #[test]
    fn apply_refused_by_response() {
        let mut s = Script::new(options());
        s.handshake("0");
        s.transfer_all();
        let id = s.expect_apply();
        s.ack(StreamId::Control, id);
        s.respond(Command::ApplyFirmware, ErrorCode::Invalid);
        let e = s.failed();
        assert!(matches!(&e, Error::PeerRefused(r) if r.name == "INVALID" && r.code == 6));
    }

    #[test]
    fn no_ota_feature_fails() {
        let mut s = Script::new(options());
        s.flow.handle_connected(s.now);
        s.recv(&pv_bytes(P, T));
        let _ = s.sent();
        s.device_information();
        let _ = s.sent();
        s.features(DeviceFeatures::AGT);
        assert!(s.sent().is_empty());
        let e = s.failed();
        assert!(e.to_string().contains("does not support OTA"), "{e}");
    }

    /// Drives a fresh flow to the point where it awaits `what`; returns the script.
    fn waiting_for(what: &str) -> Script {
        waiting_with(what, options())
    }

    fn waiting_with(what: &str, options: GadgetOptions) -> Script {
        let mut s = Script::new(options);
        s.flow.handle_connected(s.now);
        if what == WAIT_PV {
            return s;
        }
        s.recv(&pv_bytes(P, T));
        let _ = s.sent();
        if what == WAIT_DEVICE_INFORMATION {
            return s;
        }
        s.device_information();
        let _ = s.sent();
        if what == WAIT_DEVICE_FEATURES {
            return s;
        }
        s.features(0x13);
        let _ = s.sent();
        if what == WAIT_DISCOVER {
            return s;
        }
        s.discover_response("0");
        let id = s.expect_announcement(0);
        if what == WAIT_SEGMENT_ACK {
            return s;
        }
        s.ack(StreamId::Control, id);
        s.expect_segment_data(0);
        if what == WAIT_SEGMENT_RESPONSE {
            return s;
        }
        s.respond(Command::UpdateComponentSegment, ErrorCode::Success);
        s.segment_ok(SEG);
        s.segment_ok(2 * SEG);
        let id = s.expect_apply();
        if what == WAIT_APPLY_ACK {
            return s;
        }
        s.ack(StreamId::Control, id);
        if what == WAIT_APPLY_RESPONSE {
            return s;
        }
        s.respond(Command::ApplyFirmware, ErrorCode::Success);
        if what == WAIT_RESTART {
            return s;
        }
        s.flow.handle_disconnected(s.now);
        assert_eq!(what, WAIT_RECONNECT);
        s
    }

    #[test]
    fn every_timeout_names_what_it_waited_for() {
        let table = [
            (WAIT_PV, 5),
            (WAIT_DEVICE_INFORMATION, 10),
            (WAIT_DEVICE_FEATURES, 10),
            (WAIT_DISCOVER, 10),
            (WAIT_SEGMENT_ACK, 10),
            (WAIT_SEGMENT_RESPONSE, 60),
            (WAIT_APPLY_ACK, 30),
            (WAIT_APPLY_RESPONSE, 30),
            (WAIT_RESTART, 60),
            (WAIT_RECONNECT, 60),
        ];
        // One attempt: the first deadline is the last.
        let once = GadgetOptions {
            max_attempts: 1,
            ..options()
        };
        for (what, secs) in table {
            let mut s = waiting_with(what, once);
            let _ = s.events();
            let at = s.flow.poll_timeout().unwrap();
            assert_eq!(at, s.now + Span::from_secs(secs), "{what}");
            s.flow.handle_timeout(Millis(at.0 - 1));
            assert!(!s.flow.is_finished(), "{what} fired early");
            s.flow.handle_timeout(at);
            assert_eq!(
                s.failed(),
                Error::LinkLost(LinkLost::TimedOut { waiting_for: what })
            );
            assert_eq!(s.flow.poll_timeout(), None);
            assert!(s.sent().is_empty());
        }
    }

    /// Fires the pending deadline, exactly when it is due.
    fn expire(s: &mut Script) {
        let at = s.flow.poll_timeout().expect("a deadline");
        s.now = at;
        s.flow.handle_timeout(at);
    }

    #[test]
    fn check_only_reports_the_version_and_sends_nothing_more() {
        let mut s = Script::new(GadgetOptions {
            check_only: true,
            ..options()
        });
        s.handshake("1");
        assert!(s.sent().is_empty());
        assert!(s.flow.is_finished());
        assert_eq!(
            s.events().last(),
            Some(&GadgetEvent::UpdateAvailable {
                current: 1,
                offered: 2
            })
        );
        let mut s = Script::new(GadgetOptions {
            check_only: true,
            ..options()
        });
        s.handshake("2");
        assert_eq!(
            s.events().last(),
            Some(&GadgetEvent::UpToDate {
                current: 2,
                offered: 2
            })
        );
    }

    #[test]
    fn the_segment_response_deadline_counts_from_the_last_packet_sent() {
        let mut s = Script::new(options());
        s.handshake("0");
        let id = s.expect_announcement(0);
        s.ack(StreamId::Control, id);
        let acked = s.now;
        assert_eq!(s.flow.poll_timeout(), Some(acked + Span::from_secs(60)));
        // Reports while the segment is still going out change nothing.
        s.step(100);
        s.flow.handle_transmitted(s.now);
        assert_eq!(s.flow.poll_timeout(), Some(acked + Span::from_secs(60)));
        s.expect_segment_data(0);
        s.step(200);
        s.flow.handle_transmitted(s.now);
        let last_sent = s.now;
        assert_eq!(s.flow.poll_timeout(), Some(last_sent + Span::from_secs(5)));
        // Only the first report after the last packet counts.
        s.step(1_000);
        s.flow.handle_transmitted(s.now);
        assert_eq!(s.flow.poll_timeout(), Some(last_sent + Span::from_secs(5)));
        // It expires as a lost Response does: the segment is announced again.
        expire(&mut s);
        assert!(!s.flow.is_finished());
        s.expect_announcement(0);
    }

    #[test]
    fn a_lost_packet_is_asked_for_again_until_the_attempts_run_out() {
        // What each wait sends again when its deadline passes, and what the flow then awaits.
        type Resend = fn(&mut Script);
        let announce: Resend = |s| {
            s.expect_announcement(0);
        };
        let apply: Resend = |s| {
            s.expect_apply();
        };
        let table: [(&str, Resend, &str); 7] = [
            (
                WAIT_DEVICE_INFORMATION,
                |s| assert_eq!(s.expect_request(StreamId::Control, false).1, [0x08, 0x14]),
                WAIT_DEVICE_INFORMATION,
            ),
            (
                WAIT_DEVICE_FEATURES,
                |s| assert_eq!(s.expect_request(StreamId::Control, false).1, [0x08, 0x1C]),
                WAIT_DEVICE_FEATURES,
            ),
            (
                WAIT_DISCOVER,
                |s| {
                    let (_, p) = s.expect_request(StreamId::Alexa, false);
                    assert!(decode_discover_directive(&p).is_ok());
                },
                WAIT_DISCOVER,
            ),
            (WAIT_SEGMENT_ACK, announce, WAIT_SEGMENT_ACK),
            // A lost segment byte or Response: the segment is announced again.
            (WAIT_SEGMENT_RESPONSE, announce, WAIT_SEGMENT_ACK),
            (WAIT_APPLY_ACK, apply, WAIT_APPLY_ACK),
            // The ACK came, the Response did not: ApplyFirmware again, awaiting its ACK.
            (WAIT_APPLY_RESPONSE, apply, WAIT_APPLY_ACK),
        ];
        for (what, resend, then) in table {
            let mut s = waiting_for(what);
            let _ = s.events();
            for _ in 1..options().max_attempts {
                expire(&mut s);
                assert!(!s.flow.is_finished(), "{what}");
                resend(&mut s);
                assert!(s.events().is_empty(), "{what}");
            }
            expire(&mut s);
            assert_eq!(
                s.failed(),
                Error::LinkLost(LinkLost::TimedOut { waiting_for: then }),
                "{what}"
            );
            assert!(s.sent().is_empty());
        }
    }

    #[test]
    fn a_lost_pv_packet_asks_for_a_new_connection() {
        let mut s = waiting_for(WAIT_PV);
        let _ = s.events();
        for _ in 1..options().max_attempts {
            expire(&mut s);
            assert_eq!(s.events(), [GadgetEvent::NeedsReconnect]);
            assert!(s.sent().is_empty());
            assert_eq!(
                s.flow.poll_timeout(),
                None,
                "the edge reconnects in its own time"
            );
            s.step(1_000);
            s.flow.handle_connected(s.now);
            assert_eq!(s.flow.poll_timeout(), Some(s.now + Span::from_secs(5)));
        }
        expire(&mut s);
        assert_eq!(
            s.failed(),
            Error::LinkLost(LinkLost::TimedOut {
                waiting_for: WAIT_PV
            })
        );

        // A PV packet that does arrive starts the count again.
        let mut s = waiting_for(WAIT_PV);
        for _ in 1..options().max_attempts {
            expire(&mut s);
            s.flow.handle_connected(s.now);
        }
        s.recv(&pv_bytes(P, T));
        let _ = s.sent();
        s.flow.handle_disconnected(s.now);
        s.flow.handle_connected(s.now);
        let _ = s.events();
        expire(&mut s);
        assert_eq!(s.events(), [GadgetEvent::NeedsReconnect]);
    }

    #[test]
    fn a_reply_naming_another_request_is_ignored() {
        // A repeated DeviceInformation reply is not the features reply.
        let mut s = waiting_for(WAIT_DEVICE_FEATURES);
        s.device_information();
        assert!(s.sent().is_empty());
        assert!(!s.flow.is_finished());
        s.features(0x13);
        let (_, p) = s.expect_request(StreamId::Alexa, false);
        assert!(decode_discover_directive(&p).is_ok());

        // The last segment's SUCCESS, repeated, is not ApplyFirmware's.
        let mut s = waiting_for(WAIT_APPLY_ACK);
        s.respond(Command::UpdateComponentSegment, ErrorCode::Success);
        assert!(s
            .events()
            .iter()
            .all(|e| *e != GadgetEvent::Stage(GadgetStage::Restart)));
        assert_eq!(s.flow.poll_timeout(), Some(s.now + Span::from_secs(30)));
        // A reply naming no command (NRF, GDX) still answers what is awaited.
        s.respond(Command::None, ErrorCode::Success);
        assert_eq!(s.events(), [GadgetEvent::Stage(GadgetStage::Restart)]);
    }

    /// Confirms segment 0, then drops the link halfway through segment 1.
    fn dropped_mid_transfer() -> Script {
        let mut s = Script::new(options());
        s.handshake("0");
        s.segment_ok(0);
        let id = s.expect_announcement(SEG);
        s.ack(StreamId::Control, id);
        let mut buf = Vec::new();
        for _ in 0..10 {
            let _ = s.flow.poll_transmit(&mut buf).unwrap();
        }
        s.flow.handle_disconnected(s.now);
        assert!(s.sent().is_empty(), "nothing is sent on a dead link");
        assert_eq!(s.flow.poll_timeout(), None, "reconnecting has no deadline");
        assert_eq!(s.events().last(), Some(&GadgetEvent::NeedsReconnect));
        assert_eq!(s.flow.progress(), (u64::from(SEG), u64::from(SIZE)));
        s.step(20_000);
        s
    }

    #[test]
    fn disconnect_mid_transfer_resumes_at_the_first_unconfirmed_segment() {
        let mut s = dropped_mid_transfer();
        s.handshake("0");
        assert!(s.events().contains(&GadgetEvent::Progress {
            confirmed: u64::from(SEG),
            total: u64::from(SIZE)
        }));
        s.segment_ok(SEG);
        s.segment_ok(2 * SEG);
        s.expect_apply();
    }

    #[test]
    fn resume_refused_restarts_from_zero_once() {
        let mut s = dropped_mid_transfer();
        s.handshake("0");
        let id = s.expect_announcement(SEG);
        s.nack(StreamId::Control, id, 0x03);
        assert_eq!(
            s.events().last(),
            Some(&GadgetEvent::Progress {
                confirmed: 0,
                total: u64::from(SIZE)
            })
        );
        let id = s.expect_announcement(0);
        // A NACK at offset 0 is an ordinary segment failure, not another restart.
        s.nack(StreamId::Control, id, 0x03);
        s.segment_ok(0);
        s.segment_ok(SEG);
    }

    #[test]
    fn resume_finds_the_device_updated_elsewhere() {
        let mut s = dropped_mid_transfer();
        s.handshake("2");
        assert!(s.sent().is_empty());
        assert_eq!(
            s.events().last(),
            Some(&GadgetEvent::UpToDate {
                current: 2,
                offered: 2
            })
        );
    }

    #[test]
    fn stage_only_then_apply() {
        let mut s = Script::new(GadgetOptions {
            stage_only: true,
            ..options()
        });
        assert_eq!(
            s.flow.apply(s.now),
            Err(Misuse::WrongState {
                call: "apply",
                state: "waiting for a connection"
            })
        );
        s.handshake("0");
        s.transfer_all();
        assert!(s.sent().is_empty());
        assert_eq!(s.events().last(), Some(&GadgetEvent::Staged));
        assert_eq!(s.flow.poll_timeout(), None);
        assert!(!s.flow.is_finished());
        s.step(5_000);
        s.flow.apply(s.now).unwrap();
        let id = s.expect_apply();
        assert_eq!(
            s.flow.apply(s.now),
            Err(Misuse::WrongState {
                call: "apply",
                state: "applying"
            })
        );
        s.ack(StreamId::Control, id);
        s.respond(Command::ApplyFirmware, ErrorCode::Success);
        s.flow.handle_disconnected(s.now);
        s.handshake("2");
        assert_eq!(s.events().last(), Some(&GadgetEvent::Done { version: 2 }));
    }

    #[test]
    fn staged_apply_after_a_reconnect() {
        let mut s = Script::new(GadgetOptions {
            stage_only: true,
            ..options()
        });
        s.handshake("0");
        s.transfer_all();
        s.flow.handle_disconnected(s.now);
        assert!(s.events().last() == Some(&GadgetEvent::Staged));
        // apply() while disconnected asks for the link first.
        s.flow.apply(s.now).unwrap();
        assert_eq!(s.events(), [GadgetEvent::NeedsReconnect]);
        s.handshake("0");
        s.expect_apply();

        // Reconnected on its own while staged, then apply() during the handshake.
        let mut s = Script::new(GadgetOptions {
            stage_only: true,
            ..options()
        });
        s.handshake("0");
        s.transfer_all();
        s.flow.handle_disconnected(s.now);
        s.handshake_to_discover();
        s.flow.apply(s.now).unwrap();
        s.discover_response("0");
        s.expect_apply();
    }

    #[test]
    fn link_lost_during_apply_reapplies_or_finds_it_done() {
        let mut s = Script::new(options());
        s.handshake("0");
        s.transfer_all();
        s.expect_apply();
        s.flow.handle_disconnected(s.now);
        assert_eq!(s.events().last(), Some(&GadgetEvent::NeedsReconnect));
        s.handshake("0");
        s.expect_apply();
        s.flow.handle_disconnected(s.now);
        s.handshake("2");
        assert_eq!(s.events().last(), Some(&GadgetEvent::Done { version: 2 }));
    }

    #[test]
    fn cancel_stops_everything() {
        let mut s = Script::new(options());
        s.handshake("0");
        let _ = s.expect_announcement(0);
        s.flow.cancel(s.now);
        assert!(s.flow.is_finished());
        assert_eq!(s.events().last(), Some(&GadgetEvent::Cancelled));
        assert!(s.sent().is_empty());
        assert_eq!(s.flow.poll_timeout(), None);
        s.flow.cancel(s.now);
        assert!(s.events().is_empty());
    }

    #[test]
    fn malformed_peer_bytes_are_dropped_then_fail_or_are_nacked() {
        /// Sends garbage `MAX_GARBLED` times (each dropped, the flow waiting on), then once
        /// more, which fails the update; returns that error.
        fn fourth_fails(s: &mut Script, send: impl Fn(&mut Script)) -> Error {
            for _ in 0..MAX_GARBLED {
                send(s);
                assert!(!s.flow.is_finished(), "garbage is dropped");
                assert!(s.sent().is_empty(), "and nothing is sent for it");
            }
            send(s);
            s.failed()
        }

        // A PV packet of another major version.
        let mut s = Script::new(options());
        s.flow.handle_connected(s.now);
        let mut pv = pv_bytes(P, T);
        pv[2] = 2;
        let e = fourth_fails(&mut s, |s| s.recv(&pv));
        assert!(matches!(e, Error::PeerMalformed(m) if m.what.contains("protocol version")));

        // A control transaction that is not protobuf.
        let mut s = waiting_for(WAIT_DEVICE_INFORMATION);
        let e = fourth_fails(&mut s, |s| {
            s.recv_txn(StreamId::Control, &[0xFF, 0xFF, 0xFF])
        });
        assert!(matches!(e, Error::PeerMalformed(_)));

        // A Discover.Response whose version is not a number.
        let mut s = waiting_for(WAIT_DISCOVER);
        let e = fourth_fails(&mut s, |s| s.answer_discover("v1"));
        assert!(matches!(e, Error::PeerMalformed(m) if m.what.contains("firmwareVersion")));

        // One garbled answer is outlived: the next good one goes on.
        let mut s = waiting_for(WAIT_DEVICE_INFORMATION);
        s.recv_txn(StreamId::Control, &[0xFF, 0xFF, 0xFF]);
        s.device_information();
        let (_, p) = s.expect_request(StreamId::Control, false);
        assert_eq!(p, [0x08, 0x1C]);

        // GetDeviceFeatures answered without features: well formed, but no answer at all.
        let mut s = waiting_for(WAIT_DEVICE_FEATURES);
        s.respond(Command::GetDeviceFeatures, ErrorCode::Success);
        assert!(matches!(s.failed(), Error::PeerMalformed(_)));

        // A transport fault is NACKed back (result 0x01) and the flow keeps waiting.
        let mut s = waiting_for(WAIT_DEVICE_INFORMATION);
        s.recv(&[0x05, 0x24, 0x01, 0xAA]);
        assert_eq!(s.sent(), [vec![0x05, 0x0C, 0x00, 0x02, 0x01, 0x01]]);
        assert!(!s.flow.is_finished());
        s.device_information();
        let (_, p) = s.expect_request(StreamId::Control, false);
        assert_eq!(p, [0x08, 0x1C]);

        // A malformed ACK packet cannot be NACKed: dropped, and the fourth fails the flow.
        let mut s = waiting_for(WAIT_SEGMENT_ACK);
        let e = fourth_fails(&mut s, |s| s.recv(&[0x03, 0x0E, 0x00]));
        assert!(matches!(e, Error::PeerMalformed(_)));

        // A gadget transaction asking for an ACK gets one.
        let mut s = waiting_for(WAIT_DISCOVER);
        let mut b = Vec::new();
        let limits = Limits {
            packet_size: P,
            max_transaction_size: 0xFFFF,
        };
        let payload = DiscoverResponseEvent::new("G", "g", "0").to_bytes();
        let mut f = Fragmenter::new(StreamId::Alexa, txn(7), &payload[..], true, limits).unwrap();
        while f.emit_next(&mut b).is_some() {
            s.recv(&b);
            b.clear();
        }
        let packets = s.sent();
        assert_eq!(packets[0], [0x67, 0x0E, 0x00, 0x02, 0x01, 0x00]);
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = Rng(0xDEAD_BEEF_0BAD_F00D);
        for round in 0..200 {
            let mut s = match round % 4 {
                0 => waiting_for(WAIT_PV),
                1 => waiting_for(WAIT_DEVICE_INFORMATION),
                2 => waiting_for(WAIT_DISCOVER),
                _ => waiting_for(WAIT_SEGMENT_RESPONSE),
            };
            for _ in 0..50 {
                let len = rng.below(48);
                let mut bytes = rng.bytes(len);
                // Steer some inputs onto real streams to reach deeper code.
                if len > 2 && rng.below(2) == 0 {
                    bytes[0] = [0x00, 0x20, 0x60, 0xFE][rng.below(4)] | (bytes[0] & 0x0F);
                }
                s.recv(&bytes);
                let _ = s.sent();
                let _ = s.events();
                if s.flow.is_finished() {
                    break;
                }
            }
            // Deadlines ask again until the attempts run out; the edge reconnects when asked.
            for _ in 0..4 * DEFAULT_MAX_ATTEMPTS {
                if s.flow.is_finished() {
                    break;
                }
                let _ = s.sent();
                if s.flow.poll_timeout().is_none() {
                    s.flow.handle_connected(s.now);
                }
                s.flow.handle_timeout(Millis(u64::MAX));
            }
            assert!(s.flow.is_finished());
            // Garbage is the peer's fault or a dead link, never ours.
            for e in s.events() {
                if let GadgetEvent::Failed(e) = e {
                    assert!(!matches!(e, Error::Misuse(_)), "{e:?}");
                }
            }
            let _ = s.sent();
        }
    }

    #[test]
    fn construction_checks_the_image_and_options() {
        let err = |image, options| GadgetUpdate::new(image, options).unwrap_err();
        assert!(matches!(
            err(image_named("application-image", "2"), options()),
            Misuse::InvalidArgument(m) if m.contains("15 bytes")
        ));
        assert!(matches!(
            err(image_named("app", "v2"), options()),
            Misuse::InvalidArgument(m) if m.contains("decimal")
        ));
        assert!(matches!(
            err(
                image_named("app", "2"),
                GadgetOptions {
                    segment_size: 0,
                    ..options()
                }
            ),
            Misuse::InvalidArgument(_)
        ));
        assert!(matches!(
            err(
                image_named("app", "2"),
                GadgetOptions {
                    max_attempts: 0,
                    ..options()
                }
            ),
            Misuse::InvalidArgument(_)
        ));
        let defaults = GadgetOptions::default();
        assert_eq!(
            (
                defaults.segment_size,
                defaults.min_segment_size,
                defaults.max_packet_size,
                defaults.max_attempts,
                defaults.stage_only
            ),
            (16_384, 1024, 512, 16, false)
        );
    }

    #[test]
    fn refusal_tables_name_every_code() {
        for code in 0..=8 {
            let r = response_refusal(code);
            assert_eq!((r.vendor, r.code), (Vendor::Gadget, i64::from(code)));
            assert!(!r.meaning.is_empty());
        }
        assert_eq!(response_refusal(7).name, "BUSY");
        assert!(response_refusal(7).retryable);
        assert_eq!(response_refusal(99).name, "UNDEFINED");
        for code in [0u8, 1, 3, 4] {
            let r = transport_refusal(&AckRepr::nack(StreamId::Control, txn(0), code.into()));
            assert_eq!(r.code, i64::from(code));
        }
    }
}
