//! SiFli DFU messages of the NOR OTA-manager flow: the envelope, every message body, the
//! `DFU_ERR_*` table and the identifiers, flags, sizes and timers the flow and the device
//! share (`protocols/dfu.md` §2–§4, §7, §8, §11).
//!
//! Contract, as for every view in [`crate::wire`]: a [`DfuPacket`] (the envelope) is made from
//! peer bytes only through [`DfuPacket::new_checked`], after which no accessor can panic;
//! [`Message`] is the validated summary with `parse`, `buffer_len` and `emit`. One DFU message
//! travels as one serial-transport message of category [`crate::wire::sifli::Category::DFU`]
//! (fragmented by [`crate::wire::sifli::Fragmenter`]). All integers are little-endian and the
//! bodies are the SDK's C structs with natural alignment, tail padding included.
//!
//! ```text
//! envelope  message_id u16 | length u16 | data[length]
//!
//!  id  message                     dir  body (offset:field)                               emitted
//!   0  INIT_REQUEST                R→D  ctrl_packet.bin                                   n
//!   1  INIT_RESPONSE               D→R  0:result u16 2:is_boot u8 3:pad                   4
//!   2  INIT_COMPLETED_IND          R→D  0:is_start u8                                     1
//!   3  RESUME_REQUEST              R→D  ctrl_packet.bin                                   n
//!   4  RESUME_RESPONSE             D→R  0:result u16 2:is_boot 3:is_restart               12
//!                                       4:curr_packet_num u32 8:curr_img 9:num_of_rsp 10:pad×2
//!                                  (legacy 4:curr_packet_num u16 6:curr_img 7:pad)        (8)
//!   5  RESUME_COMPLETED_IND        R→D  0:is_start u8                                     1
//!   6  IMAGE_SEND_START            R→D  0:img_length u32 4:total_pkt_num u32              10
//!                                       8:num_of_rsp u8 9:img_id u8 (10:pad×2 in sizeof)
//!   7  IMAGE_SEND_START_RESPONSE   D→R  0:result u16 2:end_send u8 3:extra u8             4
//!   8  IMAGE_SEND_END              R→D  0:img_id u8 1:is_more_image u8                    2
//!   9  IMAGE_SEND_END_RESPONSE     D→R  0:result u16                                      2
//!  10  IMAGE_SEND_PACKET           R→D  0:img_id u8 1:pad 2:pkt_idx u16 4:size u16 6:data 6+size
//!  11  IMAGE_SEND_PACKET_RESPONSE  D→R  0:result u16                                      2
//!  12  TRANSMISSION_END            R→D  0:reserved u8 (0)                                 1
//!  13  END_IND                     D→R  0:result u8 (echoed R→D in end mode 2)            1
//!  14  FORCE_INIT_REQUEST          R→D  ctrl_packet.bin                                   n
//!  16  RETRANSMISSION_REQUEST      R→D  (empty)                                           0
//!  17  RETRANSMISSION_RESPONSE     D→R  0:result u16 2:new_num_of_rsp u16                 8
//!                                       4:retransmission_packet_num u32
//!  18  READ_VERSION_REQUEST        R→D  0:index u16                                       2
//!  19  READ_VERSION_RESPONSE       D→R  0:result u16 2:len u16 4:version[8]               12
//!  32  INIT_REQUEST_EXT            R→D  ctrl_packet.bin                                   n
//!  33  INIT_RESPONSE_EXT           D→R  0:result u16 2:resume_status 3:is_restart         12
//!                                       4:curr_packet_num u32 8:curr_img 9:num_of_rsp
//!                                       10:is_boot 11:ver
//!  34  INIT_COMPLETED_IND_EXT      R→D  0:resume u8                                       1
//!  35  LINK_LOSE_CHECK_REQ         D→R  0:result u16 2:new_num_of_rsp u16                 8
//!                                       4:current_index u32
//!  36  LINK_LOSE_CHECK_RSP         R→D  0:result u16                                      2
//!  37  ABORT_COMMAND               D→R  0:reason u16                                      2
//! ```
//!
//! Choices where the notes are open:
//!
//! - The envelope is exact: one serial message holds one envelope, so `length` must match
//!   the bytes after the header ([`DecodeError::Truncated`] short, [`DecodeError::TrailingBytes`]
//!   long). Unknown ids are not an error there: [`MessageId::Unknown`] keeps them, and
//!   [`Message::parse`] answers every id without a typed body here (15, 20, 21–31, 38–43 and
//!   unknown ones) with [`Message::Other`], raw, for the flow to ignore or refuse.
//! - Fixed bodies, both directions: every field must be present (shorter is
//!   [`DecodeError::Truncated`] naming the fields' length), and bytes after the last field are
//!   ignored. Devices send `sizeof` including tail padding (INIT_RESPONSE is 4 bytes for 3 of
//!   fields), the iOS remote sends IMAGE_SEND_START without its 2 padding bytes (10 of 12),
//!   and newer SDKs append fields; the SiFli device itself reads only the fields it knows.
//!   Padding is not checked on receive (C leaves it uninitialised) and is written as zeros.
//! - Emitted lengths: device-to-remote bodies as the device sends them (`sizeof`, tail padding
//!   included); remote-to-device bodies as the iOS remote sends them, which is `sizeof` except
//!   IMAGE_SEND_START at 10 bytes (the table's last column).
//! - RESUME_RESPONSE: a body of exactly 8 bytes is the old form (u16 packet count at 4, image
//!   at 6, no `num_of_rsp`), as the iOS remote reads it; 9 bytes are refused, 10 or more are
//!   the current form. `num_of_rsp: None` stands for the old form, and emitting it writes the
//!   8-byte form (a count above 0xFFFF is then [`BuildError::FieldOutOfRange`]).
//! - IMAGE_SEND_PACKET: `size` must equal the bytes after the 6-byte header exactly
//!   ([`DecodeError::LengthMismatch`]) and be at most [`MAX_RECORD_LEN`]
//!   ([`DecodeError::TooLarge`]), the device's largest record. The record inside (hash, offset,
//!   block) is not checked here. The pad byte is written 0, which is also what the iOS remote
//!   sends (it writes `img_id` as a u16).
//! - Yes/no bytes (`is_boot`, `is_restart`, `is_start`, `is_more_image`, `extra`, `resume`)
//!   read as true when non-zero, as the C code tests them, and are written as 1. Result codes
//!   stay raw (`u16`; END_IND's is a `u8`): turn a non-zero one into a [`Refusal`] with
//!   [`dfu_refusal`]. `resume_status`, `ver` and the read-version `len` stay raw bytes.
//! - Control-packet bodies are opaque here; the image layer checks them.
//! - [`DfuId`] uses the PROTO numbering (DL = 3); PROTO2 renumbers it (DL = 5), which a flow
//!   must know per device.
//! - [`dfu_refusal`] marks a code retryable when the same request can succeed later without
//!   changing the package: a busy or unready device, an interrupted transfer, a flash or
//!   unspecified failure, an update already in progress (resume or force it). Codes that say
//!   the package or its versions do not fit this device are not retryable.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::error::{DecodeError, Malformed, Misuse, Refusal, Vendor};
use crate::time::Span;

/// The envelope header: message id and length.
pub const ENVELOPE_HEADER_LEN: usize = 4;
/// The largest body: `length` has 16 bits.
pub const MAX_DATA_LEN: usize = 0xFFFF;
/// The IMAGE_SEND_PACKET header before the record: img_id, pad, pkt_idx, size.
pub const PACKET_HEADER_LEN: usize = 6;
pub use crate::image::sifli::{DEFAULT_BLK_SIZE, RECORD_HEADER_LEN};
/// The record the iOS remote assumes: 36 + 512 = 548 bytes (§5).
pub const DEFAULT_RECORD_LEN: usize = RECORD_HEADER_LEN + DEFAULT_BLK_SIZE as usize;
/// The device's largest block, `DFU_MAX_BLK_SIZE` (§11).
pub const DEVICE_MAX_BLK_SIZE: usize = 2052;
/// The largest record a packet carries: 36 + 2052 bytes.
pub const MAX_RECORD_LEN: usize = RECORD_HEADER_LEN + DEVICE_MAX_BLK_SIZE;
/// The largest IMAGE_SEND_PACKET message, envelope included: the reassembly cap a device
/// needs (2098 bytes).
pub const MAX_PACKET_MESSAGE_LEN: usize = ENVELOPE_HEADER_LEN + PACKET_HEADER_LEN + MAX_RECORD_LEN;
/// The version field of READ_VERSION_RESPONSE, `DFU_PART_VERSION_LEN` (§2).
pub const VERSION_LEN: usize = 8;
/// The iOS remote's default response frequency (`num_of_rsp`) for NOR (§8).
pub const DEFAULT_NUM_OF_RSP: u8 = 20;

/// INIT_RESPONSE_EXT `resume_status`: nothing to resume, start from the first image (§8).
pub const RESUME_STATUS_NONE: u8 = 0;
/// INIT_RESPONSE_EXT `resume_status`: saved progress can be resumed at curr_img /
/// curr_packet_num (§8, §9).
pub const RESUME_STATUS_RESUMABLE: u8 = 1;
/// INIT_RESPONSE_EXT `resume_status`: PSRAM backup lost; restart from the first image, the
/// device marking finished in-place images to skip (§9).
pub const RESUME_STATUS_RESTART_WITH_SKIP: u8 = 2;

/// Device: after rebooting into the OTA manager it waits this long for IMAGE_SEND_START,
/// then returns to the user bin (`DFU_PREPARE_START_TIMER`, §7).
pub const PREPARE_START_TIMEOUT: Span = Span::from_secs(30);
/// Device: in the postponed-start path it reboots this long after INIT_RESPONSE
/// (`DFU_REBOOT_TIMER`, §7).
pub const POSTPONED_REBOOT_DELAY: Span = Span::from_secs(6);
/// Device: while downloading it checks this often that packets still arrive, else sends
/// LINK_LOSE_CHECK_REQ (`DFU_SYNC_DOWNLOAD_TIMER`, §7).
pub const SYNC_DOWNLOAD_PERIOD: Span = Span::from_secs(6);
/// Device: how long it waits for LINK_LOSE_CHECK_RSP before treating the remote as lost (§7).
pub const LINK_LOSE_CHECK_TIMEOUT: Span = Span::from_secs(6);
/// Device: how long it lets END_IND go on air before rebooting after a good install (§7).
pub const END_IND_REBOOT_DELAY: Span = Span::from_millis(500);
/// Remote (iOS): the default wait for a response (§8).
pub const REQUEST_TIMEOUT: Span = Span::from_secs(60);
/// Remote (iOS): the wait for IMAGE_SEND_START_RESPONSE, which follows the flash erase (§8).
pub const IMAGE_SEND_START_TIMEOUT: Span = Span::from_secs(180);
/// Remote (iOS): the wait for IMAGE_SEND_PACKET_RESPONSE after an ack-bearing packet (§8).
pub const PACKET_RESPONSE_TIMEOUT: Span = Span::from_secs(40);
/// Remote (iOS): the wait for RETRANSMISSION_RESPONSE (§8).
pub const RETRANSMISSION_TIMEOUT: Span = Span::from_secs(5);
/// Remote (iOS): RETRANSMISSION_REQUEST attempts before giving up (§8).
pub const RETRANSMISSION_ATTEMPTS: u32 = 5;
/// Remote (iOS): the wait for END_IND after TRANSMISSION_END (§8).
pub const END_IND_TIMEOUT: Span = Span::from_secs(30);
/// Remote (iOS): the pause after LINK_LOSE_CHECK_RSP before sending again (§8).
pub const LINK_LOSE_RESEND_DELAY: Span = Span::from_secs(1);
/// Remote (iOS): how long it scans for the device, also after its reboot (§8).
pub const SCAN_TIMEOUT: Span = Span::from_secs(20);

/// What [`Malformed`] names when an envelope fails to decode.
const ENVELOPE_WHAT: &str = "DFU message";

/// Defines [`MessageId`] from one table, so value, variant and name cannot drift apart.
macro_rules! message_ids {
    ($($(#[$doc:meta])* $variant:ident = $value:literal => $name:literal,)*) => {
        /// A DFU message id (§2). Ids §2 does not list are kept as [`MessageId::Unknown`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum MessageId {
            $($(#[$doc])* $variant,)*
            /// An id §2 does not list, as sent; [`MessageId::from_u16`] never puts a listed id here.
            Unknown(u16),
        }

        impl MessageId {
            /// Every listed id, in numeric order.
            pub const ALL: &'static [MessageId] = &[$(MessageId::$variant,)*];

            /// The id with this value.
            #[must_use]
            pub const fn from_u16(value: u16) -> Self {
                match value {
                    $($value => MessageId::$variant,)*
                    other => MessageId::Unknown(other),
                }
            }

            /// The value on the wire.
            #[must_use]
            pub const fn value(self) -> u16 {
                match self {
                    $(MessageId::$variant => $value,)*
                    MessageId::Unknown(value) => value,
                }
            }

            /// The SDK's name without its `DFU_` prefix, e.g. `"INIT_RESPONSE"`.
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self {
                    $(MessageId::$variant => $name,)*
                    MessageId::Unknown(_) => "UNKNOWN",
                }
            }

            /// What [`Malformed`] names when this message's body fails to decode.
            const fn what(self) -> &'static str {
                match self {
                    $(MessageId::$variant => concat!("DFU ", $name),)*
                    MessageId::Unknown(_) => ENVELOPE_WHAT,
                }
            }
        }
    };
}

message_ids! {
    /// R→D: start an update with the control packet (v1).
    InitRequest = 0 => "INIT_REQUEST",
    /// D→R: answer to INIT_REQUEST and FORCE_INIT_REQUEST.
    InitResponse = 1 => "INIT_RESPONSE",
    /// R→D: go ahead after INIT_RESPONSE.
    InitCompletedInd = 2 => "INIT_COMPLETED_IND",
    /// R→D: resume an interrupted update with the control packet (v1).
    ResumeRequest = 3 => "RESUME_REQUEST",
    /// D→R: answer to RESUME_REQUEST, with where to resume.
    ResumeResponse = 4 => "RESUME_RESPONSE",
    /// R→D: go ahead after RESUME_RESPONSE.
    ResumeCompletedInd = 5 => "RESUME_COMPLETED_IND",
    /// R→D: announce one image.
    ImageSendStart = 6 => "IMAGE_SEND_START",
    /// D→R: answer to IMAGE_SEND_START, after the erase.
    ImageSendStartResponse = 7 => "IMAGE_SEND_START_RESPONSE",
    /// R→D: the image is sent.
    ImageSendEnd = 8 => "IMAGE_SEND_END",
    /// D→R: answer to IMAGE_SEND_END, after the signature check.
    ImageSendEndResponse = 9 => "IMAGE_SEND_END_RESPONSE",
    /// R→D: one record of an image.
    ImageSendPacket = 10 => "IMAGE_SEND_PACKET",
    /// D→R: acknowledgement every `num_of_rsp` packets and after the last.
    ImageSendPacketResponse = 11 => "IMAGE_SEND_PACKET_RESPONSE",
    /// R→D: every image is sent; install.
    TransmissionEnd = 12 => "TRANSMISSION_END",
    /// D→R: the install result (R→D echo in end mode 2).
    EndInd = 13 => "END_IND",
    /// R→D: start over, dropping saved progress (v1).
    ForceInitRequest = 14 => "FORCE_INIT_REQUEST",
    /// Ignored by the device.
    ConnectionPriorityCheck = 15 => "CONNECTION_PRIORITY_CHECK",
    /// R→D: ask where to continue after a missing acknowledgement.
    RetransmissionRequest = 16 => "RETRANSMISSION_REQUEST",
    /// D→R: where to continue, and the new response frequency.
    RetransmissionResponse = 17 => "RETRANSMISSION_RESPONSE",
    /// R→D: read a version.
    ReadVersionRequest = 18 => "READ_VERSION_REQUEST",
    /// D→R: the version read.
    ReadVersionResponse = 19 => "READ_VERSION_RESPONSE",
    /// R→D: power off; a no-op unless `OTA_USING_SOL_FUNC`.
    CommandPowerOff = 20 => "COMMAND_POWER_OFF",
    /// NAND resource-file flow only.
    ImageFileInitRequest = 21 => "IMAGE_FILE_INIT_REQUEST",
    /// NAND resource-file flow only.
    ImageFileInitResponse = 22 => "IMAGE_FILE_INIT_RESPONSE",
    /// NAND resource-file flow only.
    ImageFileInitCompleted = 23 => "IMAGE_FILE_INIT_COMPLETED",
    /// NAND resource-file flow only.
    ImageFileStart = 24 => "IMAGE_FILE_START",
    /// NAND resource-file flow only.
    ImageFileStartResponse = 25 => "IMAGE_FILE_START_RESPONSE",
    /// NAND resource-file flow only.
    ImageFilePacket = 26 => "IMAGE_FILE_PACKET",
    /// NAND resource-file flow only.
    ImageFilePacketResponse = 27 => "IMAGE_FILE_PACKET_RESPONSE",
    /// NAND resource-file flow only.
    ImageFileEnd = 28 => "IMAGE_FILE_END",
    /// NAND resource-file flow only.
    ImageFileEndResponse = 29 => "IMAGE_FILE_END_RESPONSE",
    /// NAND resource-file flow only.
    ImageFileTotalEnd = 30 => "IMAGE_FILE_TOTAL_END",
    /// NAND resource-file flow only.
    ImageFileTotalEndResponse = 31 => "IMAGE_FILE_TOTAL_END_RESPONSE",
    /// R→D: start or resume an update with the control packet (v2).
    InitRequestExt = 32 => "INIT_REQUEST_EXT",
    /// D→R: answer to INIT_REQUEST_EXT, with any resumable progress.
    InitResponseExt = 33 => "INIT_RESPONSE_EXT",
    /// R→D: go ahead, resuming or starting over.
    InitCompletedIndExt = 34 => "INIT_COMPLETED_IND_EXT",
    /// D→R: packets stopped or came out of order; continue from here.
    LinkLoseCheckReq = 35 => "LINK_LOSE_CHECK_REQ",
    /// R→D: answer to LINK_LOSE_CHECK_REQ.
    LinkLoseCheckRsp = 36 => "LINK_LOSE_CHECK_RSP",
    /// D→R: the device gives up.
    AbortCommand = 37 => "ABORT_COMMAND",
    /// Newer SDKs' offline flow only.
    ImageOfflineStartReq = 38 => "IMAGE_OFFLINE_START_REQ",
    /// Newer SDKs' offline flow only.
    ImageOfflineStartRsp = 39 => "IMAGE_OFFLINE_START_RSP",
    /// Newer SDKs' offline flow only.
    ImageOfflinePacketReq = 40 => "IMAGE_OFFLINE_PACKET_REQ",
    /// Newer SDKs' offline flow only.
    ImageOfflinePacketRsp = 41 => "IMAGE_OFFLINE_PACKET_RSP",
    /// Newer SDKs' offline flow only.
    ImageOfflineEndReq = 42 => "IMAGE_OFFLINE_END_REQ",
    /// Newer SDKs' offline flow only.
    ImageOfflineEndRsp = 43 => "IMAGE_OFFLINE_END_RSP",
}

impl From<u16> for MessageId {
    fn from(value: u16) -> Self {
        MessageId::from_u16(value)
    }
}

impl From<MessageId> for u16 {
    fn from(id: MessageId) -> u16 {
        id.value()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.value())
    }
}

pub use crate::image::sifli::{DfuId, ImageFlags, ImageId};

/// How the transfer ends, IMAGE_SEND_START_RESPONSE `end_send` (`dfu_end_mode_t`, §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndMode {
    /// 0, `DFU_END_NO_SEND`: no END_IND; done at TRANSMISSION_END.
    NoSend,
    /// 1, `DFU_END_SEND` (the default): the device sends END_IND.
    Send,
    /// 2, `DFU_END_RECEIVE`: the device sends END_IND and the remote echoes it.
    Receive,
    /// A value the SDK does not define, as sent.
    Other(u8),
}

impl EndMode {
    /// Whether the device sends END_IND after TRANSMISSION_END.
    #[must_use]
    pub const fn device_sends_end_ind(self) -> bool {
        !matches!(self, EndMode::NoSend)
    }

    /// Whether the remote must echo END_IND back.
    #[must_use]
    pub const fn remote_echoes(self) -> bool {
        matches!(self, EndMode::Receive)
    }
}

impl From<u8> for EndMode {
    fn from(value: u8) -> Self {
        match value {
            0 => EndMode::NoSend,
            1 => EndMode::Send,
            2 => EndMode::Receive,
            other => EndMode::Other(other),
        }
    }
}

impl From<EndMode> for u8 {
    fn from(mode: EndMode) -> u8 {
        match mode {
            EndMode::NoSend => 0,
            EndMode::Send => 1,
            EndMode::Receive => 2,
            EndMode::Other(other) => other,
        }
    }
}

/// A `DFU_ERR_*` code, carried in every `result` (§3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DfuErrorCode {
    /// 0: success.
    NoErr,
    /// 1: unspecified failure.
    GeneralErr,
    /// 2: a field does not fit the package or the saved progress.
    ParameterInvalid,
    /// 3: an image is larger than its partition.
    SpaceNotEnough,
    /// 4: the DFU module is not initialised.
    NotReady,
    /// 5: wrong hardware version (defined, not checked by the device).
    HwVerErr,
    /// 6: the package needs a newer device SDK.
    SdkVerErr,
    /// 7: the firmware version was refused.
    FwVerErr,
    /// 8: an image failed its signature check or its install.
    FwInvalid,
    /// 9: the control packet failed its signature check.
    ControlPacketInvalid,
    /// 10: an earlier update is recorded; resume or force.
    OtaOngoing,
    /// 11: the device application refused.
    UserReject,
    /// 12: the request does not fit the device's state.
    UnexpectState,
    /// 13: packet index error (not sent by the 55x).
    IndexError,
    /// 14: updating (not sent by the 55x).
    Updating,
    /// 15: missed packet (not sent by the 55x).
    MissPacket,
    /// 16: flash erase failed.
    Flash,
    /// 0x40: internal (also POSTPONE); never sent on air.
    Internal,
}

impl DfuErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [DfuErrorCode; 18] = [
        DfuErrorCode::NoErr,
        DfuErrorCode::GeneralErr,
        DfuErrorCode::ParameterInvalid,
        DfuErrorCode::SpaceNotEnough,
        DfuErrorCode::NotReady,
        DfuErrorCode::HwVerErr,
        DfuErrorCode::SdkVerErr,
        DfuErrorCode::FwVerErr,
        DfuErrorCode::FwInvalid,
        DfuErrorCode::ControlPacketInvalid,
        DfuErrorCode::OtaOngoing,
        DfuErrorCode::UserReject,
        DfuErrorCode::UnexpectState,
        DfuErrorCode::IndexError,
        DfuErrorCode::Updating,
        DfuErrorCode::MissPacket,
        DfuErrorCode::Flash,
        DfuErrorCode::Internal,
    ];

    /// The code with this value, or `None` if §3 does not define it.
    #[must_use]
    pub const fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            0 => DfuErrorCode::NoErr,
            1 => DfuErrorCode::GeneralErr,
            2 => DfuErrorCode::ParameterInvalid,
            3 => DfuErrorCode::SpaceNotEnough,
            4 => DfuErrorCode::NotReady,
            5 => DfuErrorCode::HwVerErr,
            6 => DfuErrorCode::SdkVerErr,
            7 => DfuErrorCode::FwVerErr,
            8 => DfuErrorCode::FwInvalid,
            9 => DfuErrorCode::ControlPacketInvalid,
            10 => DfuErrorCode::OtaOngoing,
            11 => DfuErrorCode::UserReject,
            12 => DfuErrorCode::UnexpectState,
            13 => DfuErrorCode::IndexError,
            14 => DfuErrorCode::Updating,
            15 => DfuErrorCode::MissPacket,
            16 => DfuErrorCode::Flash,
            0x40 => DfuErrorCode::Internal,
            _ => return None,
        })
    }

    /// The value on the wire.
    #[must_use]
    pub const fn code(self) -> u16 {
        match self {
            DfuErrorCode::NoErr => 0,
            DfuErrorCode::GeneralErr => 1,
            DfuErrorCode::ParameterInvalid => 2,
            DfuErrorCode::SpaceNotEnough => 3,
            DfuErrorCode::NotReady => 4,
            DfuErrorCode::HwVerErr => 5,
            DfuErrorCode::SdkVerErr => 6,
            DfuErrorCode::FwVerErr => 7,
            DfuErrorCode::FwInvalid => 8,
            DfuErrorCode::ControlPacketInvalid => 9,
            DfuErrorCode::OtaOngoing => 10,
            DfuErrorCode::UserReject => 11,
            DfuErrorCode::UnexpectState => 12,
            DfuErrorCode::IndexError => 13,
            DfuErrorCode::Updating => 14,
            DfuErrorCode::MissPacket => 15,
            DfuErrorCode::Flash => 16,
            DfuErrorCode::Internal => 0x40,
        }
    }

    /// The SDK's name, e.g. `"DFU_ERR_CONTROL_PACKET_INVALID"`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            DfuErrorCode::NoErr => "DFU_ERR_NO_ERR",
            DfuErrorCode::GeneralErr => "DFU_ERR_GENERAL_ERR",
            DfuErrorCode::ParameterInvalid => "DFU_ERR_PARAMETER_INVALID",
            DfuErrorCode::SpaceNotEnough => "DFU_ERR_SPACE_NOT_ENOUGH",
            DfuErrorCode::NotReady => "DFU_ERR_NOT_READY",
            DfuErrorCode::HwVerErr => "DFU_ERR_HW_VER_ERR",
            DfuErrorCode::SdkVerErr => "DFU_ERR_SDK_VER_ERR",
            DfuErrorCode::FwVerErr => "DFU_ERR_FW_VER_ERR",
            DfuErrorCode::FwInvalid => "DFU_ERR_FW_INVALID",
            DfuErrorCode::ControlPacketInvalid => "DFU_ERR_CONTROL_PACKET_INVALID",
            DfuErrorCode::OtaOngoing => "DFU_ERR_OTA_ONGOING",
            DfuErrorCode::UserReject => "DFU_ERR_USER_REJECT",
            DfuErrorCode::UnexpectState => "DFU_ERR_UNEXPECT_STATE",
            DfuErrorCode::IndexError => "DFU_ERR_INDEX_ERROR",
            DfuErrorCode::Updating => "DFU_ERR_UPDATING",
            DfuErrorCode::MissPacket => "DFU_ERR_MISS_PACKET",
            DfuErrorCode::Flash => "DFU_ERR_FLASH",
            DfuErrorCode::Internal => "DFU_ERR_INTERNAL",
        }
    }

    /// What the code means to the person updating, and what to do next.
    #[must_use]
    pub const fn meaning(self) -> &'static str {
        match self {
            DfuErrorCode::NoErr => "the device reported success where a failure was expected",
            DfuErrorCode::GeneralErr => {
                "the device could not go on with the update (an unspecified error); try again, \
                 and if it repeats the update package may be damaged or not for this device"
            }
            DfuErrorCode::ParameterInvalid => {
                "the device refused part of the update: an image it does not know, or one that \
                 does not match the interrupted update it was continuing; the package may be \
                 for another model"
            }
            DfuErrorCode::SpaceNotEnough => {
                "an image in the update package is larger than the space the device has for \
                 it: the package is not for this device"
            }
            DfuErrorCode::NotReady => {
                "the device's updater is not ready yet; wait a moment and try again"
            }
            DfuErrorCode::HwVerErr => {
                "the update package is for a different hardware version of this device"
            }
            DfuErrorCode::SdkVerErr => {
                "the update package needs newer system software than this device has, so it \
                 cannot be installed directly; install an intermediate update first"
            }
            DfuErrorCode::FwVerErr => {
                "the device refused this firmware version, usually because it is not newer \
                 than the one installed"
            }
            DfuErrorCode::FwInvalid => {
                "an image in the update package failed the device's signature check or could \
                 not be installed: the package is damaged or not for this device"
            }
            DfuErrorCode::ControlPacketInvalid => {
                "the update package's control file failed its signature check: the package is \
                 not for this device or is damaged"
            }
            DfuErrorCode::OtaOngoing => {
                "an earlier update on the device was interrupted; resume it or start it over"
            }
            DfuErrorCode::UserReject => {
                "the device declined the update (its application refused or cannot take \
                 updates now); accept the update on the device, then try again"
            }
            DfuErrorCode::UnexpectState => {
                "the device was not ready for this step and will disconnect; reconnect and \
                 start the update again"
            }
            DfuErrorCode::IndexError => {
                "the device received part of the data out of order; continue the transfer"
            }
            DfuErrorCode::Updating => {
                "the device is busy installing an update; wait until it has finished"
            }
            DfuErrorCode::MissPacket => "the device missed part of the data; continue the transfer",
            DfuErrorCode::Flash => {
                "the device could not erase its flash memory for the new image; try again, and \
                 if it keeps failing the device needs service"
            }
            DfuErrorCode::Internal => {
                "the device postponed the update (an internal code it should not send); try \
                 again later"
            }
        }
    }

    /// Whether asking again with the same package can succeed (see the module docs).
    #[must_use]
    pub const fn retryable(self) -> bool {
        match self {
            DfuErrorCode::GeneralErr
            | DfuErrorCode::NotReady
            | DfuErrorCode::OtaOngoing
            | DfuErrorCode::UnexpectState
            | DfuErrorCode::IndexError
            | DfuErrorCode::Updating
            | DfuErrorCode::MissPacket
            | DfuErrorCode::Flash
            | DfuErrorCode::Internal => true,
            DfuErrorCode::NoErr
            | DfuErrorCode::ParameterInvalid
            | DfuErrorCode::SpaceNotEnough
            | DfuErrorCode::HwVerErr
            | DfuErrorCode::SdkVerErr
            | DfuErrorCode::FwVerErr
            | DfuErrorCode::FwInvalid
            | DfuErrorCode::ControlPacketInvalid
            | DfuErrorCode::UserReject => false,
        }
    }
}

impl fmt::Display for DfuErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name(), self.code())
    }
}

/// The name a [`Refusal`] carries for a code §3 does not define.
pub const UNKNOWN_ERROR_NAME: &str = "DFU_ERR_UNKNOWN";

/// The refusal a device `result` (or END_IND result, widened) stands for: the `DFU_ERR_*`
/// table (§3), and [`UNKNOWN_ERROR_NAME`] with the number for other codes.
#[must_use]
pub fn dfu_refusal(code: u16) -> Refusal {
    let (name, meaning, retryable) = match DfuErrorCode::from_code(code) {
        Some(known) => (known.name(), known.meaning(), known.retryable()),
        None => (
            UNKNOWN_ERROR_NAME,
            "the device refused the update with an error code this updater does not know",
            false,
        ),
    };
    Refusal {
        vendor: Vendor::Dfu,
        code: i64::from(code),
        name,
        meaning,
        retryable,
    }
}

/// A read/write view of the envelope: message id, length and body (§2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DfuPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> DfuPacket<T> {
    /// Wraps a buffer without checking it; setters panic if it is shorter than the header and
    /// the stated length. Use only on buffers being built, never on peer bytes.
    pub const fn new_unchecked(buffer: T) -> Self {
        DfuPacket { buffer }
    }

    /// Wraps peer bytes, checking that the body is exactly `length` bytes.
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the header is present and `length` bytes follow it, and nothing more.
    pub fn check_len(&self) -> Result<(), Malformed> {
        let available = self.buffer.as_ref().len();
        let bad = |reason| Malformed {
            what: ENVELOPE_WHAT,
            reason,
        };
        if available < ENVELOPE_HEADER_LEN {
            return Err(bad(DecodeError::Truncated {
                needed: ENVELOPE_HEADER_LEN,
                available,
            }));
        }
        let needed = ENVELOPE_HEADER_LEN + usize::from(self.length());
        if available < needed {
            return Err(bad(DecodeError::Truncated { needed, available }));
        }
        if available > needed {
            return Err(bad(DecodeError::TrailingBytes));
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The message id; 0 if the buffer is too short to hold one.
    #[must_use]
    pub fn message_id(&self) -> MessageId {
        MessageId::from_u16(read_u16(self.buffer.as_ref(), 0))
    }

    /// The length field; 0 if the buffer is too short to hold one.
    #[must_use]
    pub fn length(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 2)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> DfuPacket<&'a T> {
    /// The body: up to `length` bytes after the header.
    #[must_use]
    pub fn data(&self) -> &'a [u8] {
        let data = self.buffer.as_ref();
        let end = data
            .len()
            .min(ENVELOPE_HEADER_LEN + usize::from(self.length()));
        data.get(ENVELOPE_HEADER_LEN..end).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> DfuPacket<T> {
    /// Sets the message id.
    pub fn set_message_id(&mut self, value: MessageId) {
        self.buffer.as_mut()[0..2].copy_from_slice(&value.value().to_le_bytes());
    }

    /// Sets the length field. Set it before the body, whose extent it decides.
    pub fn set_length(&mut self, value: u16) {
        self.buffer.as_mut()[2..4].copy_from_slice(&value.to_le_bytes());
    }

    /// The body, writable: `length` bytes after the header.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let end = ENVELOPE_HEADER_LEN + usize::from(self.length());
        &mut self.buffer.as_mut()[ENVELOPE_HEADER_LEN..end]
    }
}

/// Why a message could not be built: the caller's mistake, not the peer's.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// A body or record is longer than its field or the device allows.
    DataTooLarge {
        /// The length given.
        len: usize,
        /// The largest accepted.
        limit: usize,
    },
    /// A field's value does not fit its wire width.
    FieldOutOfRange {
        /// The field's name.
        field: &'static str,
    },
    /// The buffer is shorter than the message.
    BufferTooShort {
        /// Bytes the message needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::DataTooLarge { len, limit } => {
                write!(f, "DFU body of {len} bytes exceeds the limit of {limit}")
            }
            BuildError::FieldOutOfRange { field } => {
                write!(f, "DFU field {field} does not fit its wire width")
            }
            BuildError::BufferTooShort { needed, available } => write!(
                f,
                "DFU message needs {needed} bytes, the buffer has {available}"
            ),
        }
    }
}

impl From<BuildError> for Misuse {
    fn from(e: BuildError) -> Misuse {
        Misuse::InvalidArgument(match e {
            BuildError::DataTooLarge { .. } => "DFU body or record larger than its limit",
            BuildError::FieldOutOfRange { .. } => "DFU field value out of range",
            BuildError::BufferTooShort { .. } => "buffer shorter than the DFU message",
        })
    }
}

/// A decoded DFU message: one variant per typed body of §2, [`Message::Other`] for the rest.
/// Fields are named as in the SDK structs; the module docs give the layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// 0: start an update (v1).
    InitRequest {
        /// The whole `ctrl_packet.bin`.
        ctrl_packet: &'a [u8],
    },
    /// 1: answer to INIT_REQUEST / FORCE_INIT_REQUEST.
    InitResponse {
        /// `DFU_ERR_*`.
        result: u16,
        /// The device reboots into the OTA manager after INIT_COMPLETED_IND.
        is_boot: bool,
    },
    /// 2: go ahead.
    InitCompletedInd {
        /// Must be true.
        is_start: bool,
    },
    /// 3: resume an interrupted update (v1).
    ResumeRequest {
        /// The whole `ctrl_packet.bin`.
        ctrl_packet: &'a [u8],
    },
    /// 4: answer to RESUME_REQUEST.
    ResumeResponse {
        /// `DFU_ERR_*`.
        result: u16,
        /// The device reboots into the OTA manager after RESUME_COMPLETED_IND.
        is_boot: bool,
        /// Start again from the first image instead of resuming.
        is_restart: bool,
        /// Packets of `curr_img` already accepted.
        curr_packet_num: u32,
        /// The image to resume.
        curr_img: ImageId,
        /// The response frequency to use; `None` in the old 8-byte form.
        num_of_rsp: Option<u8>,
    },
    /// 5: go ahead with the resume.
    ResumeCompletedInd {
        /// Must be true.
        is_start: bool,
    },
    /// 6: announce an image.
    ImageSendStart {
        /// The transfer file's length in bytes.
        img_length: u32,
        /// The number of packets (records).
        total_pkt_num: u32,
        /// Acknowledge every this many packets.
        num_of_rsp: u8,
        /// The image.
        img_id: ImageId,
    },
    /// 7: answer to IMAGE_SEND_START.
    ImageSendStartResponse {
        /// `DFU_ERR_*`.
        result: u16,
        /// How the transfer ends.
        end_mode: EndMode,
        /// `extra`: skip this image (already complete).
        skip: bool,
    },
    /// 8: the image is sent.
    ImageSendEnd {
        /// The image.
        img_id: ImageId,
        /// More images follow.
        is_more_image: bool,
    },
    /// 9: answer to IMAGE_SEND_END.
    ImageSendEndResponse {
        /// `DFU_ERR_*`.
        result: u16,
    },
    /// 10: one record of an image.
    ImageSendPacket {
        /// The image.
        img_id: ImageId,
        /// 1-based packet index.
        pkt_idx: u16,
        /// One record: hash, offset, block; `size` on the wire is its length.
        data: &'a [u8],
    },
    /// 11: packet acknowledgement.
    ImageSendPacketResponse {
        /// `DFU_ERR_*`.
        result: u16,
    },
    /// 12: every image is sent (reserved byte 0).
    TransmissionEnd,
    /// 13: the install result.
    EndInd {
        /// `DFU_ERR_*`, one byte.
        result: u8,
    },
    /// 14: start over, dropping saved progress (v1).
    ForceInitRequest {
        /// The whole `ctrl_packet.bin`.
        ctrl_packet: &'a [u8],
    },
    /// 16: ask where to continue.
    RetransmissionRequest,
    /// 17: where to continue.
    RetransmissionResponse {
        /// `DFU_ERR_*`.
        result: u16,
        /// The new response frequency.
        new_num_of_rsp: u16,
        /// Packets accepted; continue after them.
        retransmission_packet_num: u32,
    },
    /// 18: read a version.
    ReadVersionRequest {
        /// Which version.
        index: u16,
    },
    /// 19: the version.
    ReadVersionResponse {
        /// `DFU_ERR_*`.
        result: u16,
        /// The length field, as sent.
        len: u16,
        /// The version bytes (zeros unless a solution build).
        version: [u8; VERSION_LEN],
    },
    /// 32: start or resume an update (v2).
    InitRequestExt {
        /// The whole `ctrl_packet.bin`.
        ctrl_packet: &'a [u8],
    },
    /// 33: answer to INIT_REQUEST_EXT.
    InitResponseExt {
        /// `DFU_ERR_*`.
        result: u16,
        /// `RESUME_STATUS_*`.
        resume_status: u8,
        /// Start again from the first image instead of resuming.
        is_restart: bool,
        /// Packets of `curr_img` already accepted.
        curr_packet_num: u32,
        /// The image to resume.
        curr_img: ImageId,
        /// The response frequency to use (0: do not resume).
        num_of_rsp: u8,
        /// The device reboots into the OTA manager after INIT_COMPLETED_IND_EXT.
        is_boot: bool,
        /// `OTA_CODE_VERSION` of the device.
        ver: u8,
    },
    /// 34: go ahead.
    InitCompletedIndExt {
        /// Resume the saved progress (else start over).
        resume: bool,
    },
    /// 35: the device lost packets; continue from `current_index`.
    LinkLoseCheckReq {
        /// `DFU_ERR_*` (0).
        result: u16,
        /// The new response frequency.
        new_num_of_rsp: u16,
        /// Packets accepted so far.
        current_index: u32,
    },
    /// 36: answer to LINK_LOSE_CHECK_REQ.
    LinkLoseCheckRsp {
        /// `DFU_ERR_*` (0).
        result: u16,
    },
    /// 37: the device gives up.
    AbortCommand {
        /// Why.
        reason: u16,
    },
    /// Any id without a typed body here, with its body as sent.
    Other {
        /// The id.
        id: MessageId,
        /// The body.
        data: &'a [u8],
    },
}

/// The first `N` bytes of `data`, or [`DecodeError::Truncated`] naming `N`.
fn fields<const N: usize>(data: &[u8], what: &'static str) -> Result<[u8; N], Malformed> {
    data.get(..N)
        .and_then(|head| <[u8; N]>::try_from(head).ok())
        .ok_or(Malformed {
            what,
            reason: DecodeError::Truncated {
                needed: N,
                available: data.len(),
            },
        })
}

impl<'a> Message<'a> {
    /// Decodes the body of a message with this id (see the module docs for what is refused).
    pub fn parse(id: MessageId, data: &'a [u8]) -> Result<Self, Malformed> {
        let what = id.what();
        let le16 = |lo, hi| u16::from_le_bytes([lo, hi]);
        Ok(match id {
            MessageId::InitRequest => Message::InitRequest { ctrl_packet: data },
            MessageId::InitResponse => {
                let [r0, r1, boot] = fields(data, what)?;
                Message::InitResponse {
                    result: le16(r0, r1),
                    is_boot: boot != 0,
                }
            }
            MessageId::InitCompletedInd => {
                let [start] = fields(data, what)?;
                Message::InitCompletedInd {
                    is_start: start != 0,
                }
            }
            MessageId::ResumeRequest => Message::ResumeRequest { ctrl_packet: data },
            MessageId::ResumeResponse if data.len() == RESUME_RESPONSE_LEGACY_LEN => {
                let [r0, r1, boot, restart, n0, n1, img, _] = fields(data, what)?;
                Message::ResumeResponse {
                    result: le16(r0, r1),
                    is_boot: boot != 0,
                    is_restart: restart != 0,
                    curr_packet_num: u32::from(le16(n0, n1)),
                    curr_img: ImageId(img),
                    num_of_rsp: None,
                }
            }
            MessageId::ResumeResponse => {
                let [r0, r1, boot, restart, n0, n1, n2, n3, img, rsp] = fields(data, what)?;
                Message::ResumeResponse {
                    result: le16(r0, r1),
                    is_boot: boot != 0,
                    is_restart: restart != 0,
                    curr_packet_num: u32::from_le_bytes([n0, n1, n2, n3]),
                    curr_img: ImageId(img),
                    num_of_rsp: Some(rsp),
                }
            }
            MessageId::ResumeCompletedInd => {
                let [start] = fields(data, what)?;
                Message::ResumeCompletedInd {
                    is_start: start != 0,
                }
            }
            MessageId::ImageSendStart => {
                let [l0, l1, l2, l3, t0, t1, t2, t3, rsp, img] = fields(data, what)?;
                Message::ImageSendStart {
                    img_length: u32::from_le_bytes([l0, l1, l2, l3]),
                    total_pkt_num: u32::from_le_bytes([t0, t1, t2, t3]),
                    num_of_rsp: rsp,
                    img_id: ImageId(img),
                }
            }
            MessageId::ImageSendStartResponse => {
                let [r0, r1, end, extra] = fields(data, what)?;
                Message::ImageSendStartResponse {
                    result: le16(r0, r1),
                    end_mode: EndMode::from(end),
                    skip: extra != 0,
                }
            }
            MessageId::ImageSendEnd => {
                let [img, more] = fields(data, what)?;
                Message::ImageSendEnd {
                    img_id: ImageId(img),
                    is_more_image: more != 0,
                }
            }
            MessageId::ImageSendEndResponse => {
                let [r0, r1] = fields(data, what)?;
                Message::ImageSendEndResponse {
                    result: le16(r0, r1),
                }
            }
            MessageId::ImageSendPacket => {
                let [img, _pad, i0, i1, s0, s1] = fields(data, what)?;
                let record = data.get(PACKET_HEADER_LEN..).unwrap_or(&[]);
                let bad = |reason| Malformed { what, reason };
                if usize::from(le16(s0, s1)) != record.len() {
                    return Err(bad(DecodeError::LengthMismatch));
                }
                if record.len() > MAX_RECORD_LEN {
                    return Err(bad(DecodeError::TooLarge {
                        limit: MAX_RECORD_LEN,
                    }));
                }
                Message::ImageSendPacket {
                    img_id: ImageId(img),
                    pkt_idx: le16(i0, i1),
                    data: record,
                }
            }
            MessageId::ImageSendPacketResponse => {
                let [r0, r1] = fields(data, what)?;
                Message::ImageSendPacketResponse {
                    result: le16(r0, r1),
                }
            }
            MessageId::TransmissionEnd => {
                let [_reserved] = fields(data, what)?;
                Message::TransmissionEnd
            }
            MessageId::EndInd => {
                let [result] = fields(data, what)?;
                Message::EndInd { result }
            }
            MessageId::ForceInitRequest => Message::ForceInitRequest { ctrl_packet: data },
            MessageId::RetransmissionRequest => Message::RetransmissionRequest,
            MessageId::RetransmissionResponse => {
                let [r0, r1, f0, f1, n0, n1, n2, n3] = fields(data, what)?;
                Message::RetransmissionResponse {
                    result: le16(r0, r1),
                    new_num_of_rsp: le16(f0, f1),
                    retransmission_packet_num: u32::from_le_bytes([n0, n1, n2, n3]),
                }
            }
            MessageId::ReadVersionRequest => {
                let [i0, i1] = fields(data, what)?;
                Message::ReadVersionRequest {
                    index: le16(i0, i1),
                }
            }
            MessageId::ReadVersionResponse => {
                let [r0, r1, l0, l1, v0, v1, v2, v3, v4, v5, v6, v7] = fields(data, what)?;
                Message::ReadVersionResponse {
                    result: le16(r0, r1),
                    len: le16(l0, l1),
                    version: [v0, v1, v2, v3, v4, v5, v6, v7],
                }
            }
            MessageId::InitRequestExt => Message::InitRequestExt { ctrl_packet: data },
            MessageId::InitResponseExt => {
                let [r0, r1, status, restart, n0, n1, n2, n3, img, rsp, boot, ver] =
                    fields(data, what)?;
                Message::InitResponseExt {
                    result: le16(r0, r1),
                    resume_status: status,
                    is_restart: restart != 0,
                    curr_packet_num: u32::from_le_bytes([n0, n1, n2, n3]),
                    curr_img: ImageId(img),
                    num_of_rsp: rsp,
                    is_boot: boot != 0,
                    ver,
                }
            }
            MessageId::InitCompletedIndExt => {
                let [resume] = fields(data, what)?;
                Message::InitCompletedIndExt {
                    resume: resume != 0,
                }
            }
            MessageId::LinkLoseCheckReq => {
                let [r0, r1, f0, f1, n0, n1, n2, n3] = fields(data, what)?;
                Message::LinkLoseCheckReq {
                    result: le16(r0, r1),
                    new_num_of_rsp: le16(f0, f1),
                    current_index: u32::from_le_bytes([n0, n1, n2, n3]),
                }
            }
            MessageId::LinkLoseCheckRsp => {
                let [r0, r1] = fields(data, what)?;
                Message::LinkLoseCheckRsp {
                    result: le16(r0, r1),
                }
            }
            MessageId::AbortCommand => {
                let [r0, r1] = fields(data, what)?;
                Message::AbortCommand {
                    reason: le16(r0, r1),
                }
            }
            other => Message::Other { id: other, data },
        })
    }

    /// Decodes a checked envelope and its body.
    pub fn parse_packet<T: AsRef<[u8]> + ?Sized>(
        packet: &DfuPacket<&'a T>,
    ) -> Result<Self, Malformed> {
        packet.check_len()?;
        Message::parse(packet.message_id(), packet.data())
    }

    /// Decodes one whole serial-transport message: envelope and body.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, Malformed> {
        Message::parse_packet(&DfuPacket::new_checked(bytes)?)
    }

    /// The message id.
    #[must_use]
    pub const fn id(&self) -> MessageId {
        match self {
            Message::InitRequest { .. } => MessageId::InitRequest,
            Message::InitResponse { .. } => MessageId::InitResponse,
            Message::InitCompletedInd { .. } => MessageId::InitCompletedInd,
            Message::ResumeRequest { .. } => MessageId::ResumeRequest,
            Message::ResumeResponse { .. } => MessageId::ResumeResponse,
            Message::ResumeCompletedInd { .. } => MessageId::ResumeCompletedInd,
            Message::ImageSendStart { .. } => MessageId::ImageSendStart,
            Message::ImageSendStartResponse { .. } => MessageId::ImageSendStartResponse,
            Message::ImageSendEnd { .. } => MessageId::ImageSendEnd,
            Message::ImageSendEndResponse { .. } => MessageId::ImageSendEndResponse,
            Message::ImageSendPacket { .. } => MessageId::ImageSendPacket,
            Message::ImageSendPacketResponse { .. } => MessageId::ImageSendPacketResponse,
            Message::TransmissionEnd => MessageId::TransmissionEnd,
            Message::EndInd { .. } => MessageId::EndInd,
            Message::ForceInitRequest { .. } => MessageId::ForceInitRequest,
            Message::RetransmissionRequest => MessageId::RetransmissionRequest,
            Message::RetransmissionResponse { .. } => MessageId::RetransmissionResponse,
            Message::ReadVersionRequest { .. } => MessageId::ReadVersionRequest,
            Message::ReadVersionResponse { .. } => MessageId::ReadVersionResponse,
            Message::InitRequestExt { .. } => MessageId::InitRequestExt,
            Message::InitResponseExt { .. } => MessageId::InitResponseExt,
            Message::InitCompletedIndExt { .. } => MessageId::InitCompletedIndExt,
            Message::LinkLoseCheckReq { .. } => MessageId::LinkLoseCheckReq,
            Message::LinkLoseCheckRsp { .. } => MessageId::LinkLoseCheckRsp,
            Message::AbortCommand { .. } => MessageId::AbortCommand,
            Message::Other { id, .. } => *id,
        }
    }

    /// The `result` field of messages that carry one (END_IND's widened); `None` otherwise.
    /// Non-zero means the device refused: see [`dfu_refusal`].
    #[must_use]
    pub const fn result(&self) -> Option<u16> {
        match *self {
            Message::InitResponse { result, .. }
            | Message::ResumeResponse { result, .. }
            | Message::ImageSendStartResponse { result, .. }
            | Message::ImageSendEndResponse { result }
            | Message::ImageSendPacketResponse { result }
            | Message::RetransmissionResponse { result, .. }
            | Message::ReadVersionResponse { result, .. }
            | Message::InitResponseExt { result, .. }
            | Message::LinkLoseCheckReq { result, .. }
            | Message::LinkLoseCheckRsp { result } => Some(result),
            Message::EndInd { result } => Some(result as u16),
            _ => None,
        }
    }

    /// The length of the body this message emits (the table in the module docs).
    #[must_use]
    pub const fn data_len(&self) -> usize {
        match self {
            Message::InitRequest { ctrl_packet }
            | Message::ResumeRequest { ctrl_packet }
            | Message::ForceInitRequest { ctrl_packet }
            | Message::InitRequestExt { ctrl_packet } => ctrl_packet.len(),
            Message::Other { data, .. } => data.len(),
            Message::ImageSendPacket { data, .. } => PACKET_HEADER_LEN + data.len(),
            Message::RetransmissionRequest => 0,
            Message::InitCompletedInd { .. }
            | Message::ResumeCompletedInd { .. }
            | Message::TransmissionEnd
            | Message::EndInd { .. }
            | Message::InitCompletedIndExt { .. } => 1,
            Message::ImageSendEnd { .. }
            | Message::ImageSendEndResponse { .. }
            | Message::ImageSendPacketResponse { .. }
            | Message::ReadVersionRequest { .. }
            | Message::LinkLoseCheckRsp { .. }
            | Message::AbortCommand { .. } => 2,
            Message::InitResponse { .. } | Message::ImageSendStartResponse { .. } => 4,
            Message::RetransmissionResponse { .. } | Message::LinkLoseCheckReq { .. } => 8,
            Message::ImageSendStart { .. } => 10,
            Message::ResumeResponse {
                num_of_rsp: None, ..
            } => RESUME_RESPONSE_LEGACY_LEN,
            Message::ResumeResponse { .. }
            | Message::ReadVersionResponse { .. }
            | Message::InitResponseExt { .. } => 12,
        }
    }

    /// The length of the emitted message, envelope included.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        ENVELOPE_HEADER_LEN + self.data_len()
    }

    /// Writes the message into the first [`Message::buffer_len`] bytes of `packet`, padding
    /// zeroed. Refuses a body over 65535 bytes, a record over [`MAX_RECORD_LEN`] and an old-form
    /// RESUME_RESPONSE count over 0xFFFF.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut DfuPacket<T>,
    ) -> Result<(), BuildError> {
        let data_len = self.data_len();
        let length = u16::try_from(data_len).map_err(|_| BuildError::DataTooLarge {
            len: data_len,
            limit: MAX_DATA_LEN,
        })?;
        if let Message::ImageSendPacket { data, .. } = self {
            if data.len() > MAX_RECORD_LEN {
                return Err(BuildError::DataTooLarge {
                    len: data.len(),
                    limit: MAX_RECORD_LEN,
                });
            }
        }
        let needed = self.buffer_len();
        let available = packet.buffer.as_ref().len();
        if available < needed {
            return Err(BuildError::BufferTooShort { needed, available });
        }
        packet.set_message_id(self.id());
        packet.set_length(length);
        let out = packet.data_mut();
        out.fill(0);
        self.write_data(out)
    }

    /// The whole message as a new buffer, ready for [`crate::wire::sifli::Fragmenter`].
    pub fn to_vec(&self) -> Result<Vec<u8>, BuildError> {
        let mut buf = vec![0u8; self.buffer_len()];
        self.emit(&mut DfuPacket::new_unchecked(&mut buf[..]))?;
        Ok(buf)
    }

    /// Writes the body into `out`: exactly [`Message::data_len`] zeroed bytes.
    fn write_data(&self, out: &mut [u8]) -> Result<(), BuildError> {
        let flag = |b: bool| u8::from(b);
        match *self {
            Message::InitRequest { ctrl_packet }
            | Message::ResumeRequest { ctrl_packet }
            | Message::ForceInitRequest { ctrl_packet }
            | Message::InitRequestExt { ctrl_packet } => out.copy_from_slice(ctrl_packet),
            Message::Other { data, .. } => out.copy_from_slice(data),
            Message::InitResponse { result, is_boot } => {
                put16(out, 0, result);
                out[2] = flag(is_boot);
            }
            Message::InitCompletedInd { is_start } | Message::ResumeCompletedInd { is_start } => {
                out[0] = flag(is_start);
            }
            Message::ResumeResponse {
                result,
                is_boot,
                is_restart,
                curr_packet_num,
                curr_img,
                num_of_rsp,
            } => {
                put16(out, 0, result);
                out[2] = flag(is_boot);
                out[3] = flag(is_restart);
                match num_of_rsp {
                    Some(rsp) => {
                        put32(out, 4, curr_packet_num);
                        out[8] = curr_img.0;
                        out[9] = rsp;
                    }
                    None => {
                        let count = u16::try_from(curr_packet_num).map_err(|_| {
                            BuildError::FieldOutOfRange {
                                field: "curr_packet_num",
                            }
                        })?;
                        put16(out, 4, count);
                        out[6] = curr_img.0;
                    }
                }
            }
            Message::ImageSendStart {
                img_length,
                total_pkt_num,
                num_of_rsp,
                img_id,
            } => {
                put32(out, 0, img_length);
                put32(out, 4, total_pkt_num);
                out[8] = num_of_rsp;
                out[9] = img_id.0;
            }
            Message::ImageSendStartResponse {
                result,
                end_mode,
                skip,
            } => {
                put16(out, 0, result);
                out[2] = u8::from(end_mode);
                out[3] = flag(skip);
            }
            Message::ImageSendEnd {
                img_id,
                is_more_image,
            } => {
                out[0] = img_id.0;
                out[1] = flag(is_more_image);
            }
            Message::ImageSendEndResponse { result }
            | Message::ImageSendPacketResponse { result }
            | Message::LinkLoseCheckRsp { result } => put16(out, 0, result),
            Message::AbortCommand { reason } => put16(out, 0, reason),
            Message::ReadVersionRequest { index } => put16(out, 0, index),
            Message::ImageSendPacket {
                img_id,
                pkt_idx,
                data,
            } => {
                out[0] = img_id.0;
                put16(out, 2, pkt_idx);
                // emit checked the record against MAX_RECORD_LEN, well inside a u16.
                put16(out, 4, u16::try_from(data.len()).unwrap_or(u16::MAX));
                out[PACKET_HEADER_LEN..].copy_from_slice(data);
            }
            Message::TransmissionEnd | Message::RetransmissionRequest => {}
            Message::EndInd { result } => out[0] = result,
            Message::RetransmissionResponse {
                result,
                new_num_of_rsp,
                retransmission_packet_num: count,
            }
            | Message::LinkLoseCheckReq {
                result,
                new_num_of_rsp,
                current_index: count,
            } => {
                put16(out, 0, result);
                put16(out, 2, new_num_of_rsp);
                put32(out, 4, count);
            }
            Message::ReadVersionResponse {
                result,
                len,
                version,
            } => {
                put16(out, 0, result);
                put16(out, 2, len);
                out[4..].copy_from_slice(&version);
            }
            Message::InitResponseExt {
                result,
                resume_status,
                is_restart,
                curr_packet_num,
                curr_img,
                num_of_rsp,
                is_boot,
                ver,
            } => {
                put16(out, 0, result);
                out[2] = resume_status;
                out[3] = flag(is_restart);
                put32(out, 4, curr_packet_num);
                out[8] = curr_img.0;
                out[9] = num_of_rsp;
                out[10] = flag(is_boot);
                out[11] = ver;
            }
            Message::InitCompletedIndExt { resume } => out[0] = flag(resume),
        }
        Ok(())
    }
}

impl fmt::Display for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DFU {}", self.id().name())?;
        match *self {
            Message::ImageSendStart {
                img_length,
                total_pkt_num,
                num_of_rsp,
                img_id,
            } => write!(
                f,
                " {img_id} {img_length} bytes in {total_pkt_num} packets, ack every {num_of_rsp}"
            )?,
            Message::ImageSendPacket {
                img_id,
                pkt_idx,
                data,
            } => write!(f, " {img_id} packet {pkt_idx} len {}", data.len())?,
            Message::Other { id, data } => write!(f, " id {} len {}", id.value(), data.len())?,
            _ => {}
        }
        if let Some(result) = self.result() {
            match DfuErrorCode::from_code(result) {
                Some(code) => write!(f, " result {code}")?,
                None => write!(f, " result {result}")?,
            }
        }
        Ok(())
    }
}

/// The old RESUME_RESPONSE body the iOS remote still accepts: u16 packet count (§2).
const RESUME_RESPONSE_LEGACY_LEN: usize = 8;

/// The little-endian u16 at `at`, or 0 where the bytes are missing.
fn read_u16(data: &[u8], at: usize) -> u16 {
    match data.get(at..at + 2) {
        Some(&[lo, hi]) => u16::from_le_bytes([lo, hi]),
        _ => 0,
    }
}

/// Writes `value` little-endian at `at`; the caller sized `out`.
fn put16(out: &mut [u8], at: usize, value: u16) {
    out[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

/// Writes `value` little-endian at `at`; the caller sized `out`.
fn put32(out: &mut [u8], at: usize, value: u32) {
    out[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;
    use alloc::string::ToString;

    /// Emits into a buffer of 0xFF, so unwritten padding would show.
    fn emit_bytes(message: &Message<'_>) -> Vec<u8> {
        let mut buf = vec![0xFF; message.buffer_len()];
        message
            .emit(&mut DfuPacket::new_unchecked(&mut buf[..]))
            .unwrap();
        buf
    }

    /// An envelope around `data`, whatever its length.
    fn envelope(id: u16, data: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&id.to_le_bytes());
        bytes.extend_from_slice(&(data.len() as u16).to_le_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    const CTRL: &[u8] = &[0xC0, 0xC1, 0xC2];
    const RECORD: &[u8] = &[0xAA, 0xBB, 0xCC];

    /// Every message with its exact bytes, and the shortest body that still decodes (`None`:
    /// any length does).
    fn vectors() -> Vec<(Message<'static>, Vec<u8>, Option<usize>)> {
        vec![
            (
                Message::InitRequest { ctrl_packet: CTRL },
                vec![0x00, 0x00, 0x03, 0x00, 0xC0, 0xC1, 0xC2],
                None,
            ),
            (
                Message::InitResponse {
                    result: 0,
                    is_boot: true,
                },
                vec![0x01, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01, 0x00],
                Some(3),
            ),
            (
                Message::InitResponse {
                    result: 10,
                    is_boot: false,
                },
                vec![0x01, 0x00, 0x04, 0x00, 0x0A, 0x00, 0x00, 0x00],
                Some(3),
            ),
            (
                Message::InitCompletedInd { is_start: true },
                vec![0x02, 0x00, 0x01, 0x00, 0x01],
                Some(1),
            ),
            (
                Message::ResumeRequest {
                    ctrl_packet: &CTRL[..1],
                },
                vec![0x03, 0x00, 0x01, 0x00, 0xC0],
                None,
            ),
            (
                Message::ResumeResponse {
                    result: 0,
                    is_boot: true,
                    is_restart: false,
                    curr_packet_num: 0x0102_0304,
                    curr_img: ImageId::LCPU,
                    num_of_rsp: Some(20),
                },
                vec![
                    0x04, 0x00, 0x0C, 0x00, // envelope
                    0x00, 0x00, 0x01, 0x00, 0x04, 0x03, 0x02, 0x01, 0x01, 0x14, 0x00, 0x00,
                ],
                Some(10),
            ),
            (
                Message::ResumeResponse {
                    result: 0,
                    is_boot: false,
                    is_restart: true,
                    curr_packet_num: 0x0203,
                    curr_img: ImageId::RES,
                    num_of_rsp: None,
                },
                vec![
                    0x04, 0x00, 0x08, 0x00, // envelope
                    0x00, 0x00, 0x00, 0x01, 0x03, 0x02, 0x03, 0x00,
                ],
                // Shorter than 8 is refused as the current form; see resume_response_forms.
                Some(8),
            ),
            (
                Message::ResumeCompletedInd { is_start: true },
                vec![0x05, 0x00, 0x01, 0x00, 0x01],
                Some(1),
            ),
            (
                Message::ImageSendStart {
                    img_length: 0x0001_2345,
                    total_pkt_num: 0x88,
                    num_of_rsp: 20,
                    img_id: ImageId::HCPU,
                },
                vec![
                    0x06, 0x00, 0x0A, 0x00, // envelope
                    0x45, 0x23, 0x01, 0x00, 0x88, 0x00, 0x00, 0x00, 0x14, 0x00,
                ],
                Some(10),
            ),
            (
                Message::ImageSendStartResponse {
                    result: 0,
                    end_mode: EndMode::Send,
                    skip: false,
                },
                vec![0x07, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01, 0x00],
                Some(4),
            ),
            (
                Message::ImageSendStartResponse {
                    result: 16,
                    end_mode: EndMode::Receive,
                    skip: true,
                },
                vec![0x07, 0x00, 0x04, 0x00, 0x10, 0x00, 0x02, 0x01],
                Some(4),
            ),
            (
                Message::ImageSendEnd {
                    img_id: ImageId::RES,
                    is_more_image: true,
                },
                vec![0x08, 0x00, 0x02, 0x00, 0x03, 0x01],
                Some(2),
            ),
            (
                Message::ImageSendEndResponse { result: 8 },
                vec![0x09, 0x00, 0x02, 0x00, 0x08, 0x00],
                Some(2),
            ),
            (
                Message::ImageSendPacket {
                    img_id: ImageId::LCPU,
                    pkt_idx: 0x0102,
                    data: RECORD,
                },
                vec![
                    0x0A, 0x00, 0x09, 0x00, // envelope
                    0x01, 0x00, 0x02, 0x01, 0x03, 0x00, 0xAA, 0xBB, 0xCC,
                ],
                Some(PACKET_HEADER_LEN),
            ),
            (
                Message::ImageSendPacketResponse { result: 0 },
                vec![0x0B, 0x00, 0x02, 0x00, 0x00, 0x00],
                Some(2),
            ),
            (
                Message::TransmissionEnd,
                vec![0x0C, 0x00, 0x01, 0x00, 0x00],
                Some(1),
            ),
            (
                Message::EndInd { result: 0 },
                vec![0x0D, 0x00, 0x01, 0x00, 0x00],
                Some(1),
            ),
            (
                Message::ForceInitRequest {
                    ctrl_packet: &CTRL[..2],
                },
                vec![0x0E, 0x00, 0x02, 0x00, 0xC0, 0xC1],
                None,
            ),
            (
                Message::RetransmissionRequest,
                vec![0x10, 0x00, 0x00, 0x00],
                None,
            ),
            (
                Message::RetransmissionResponse {
                    result: 0,
                    new_num_of_rsp: 10,
                    retransmission_packet_num: 0x0001_0203,
                },
                vec![
                    0x11, 0x00, 0x08, 0x00, // envelope
                    0x00, 0x00, 0x0A, 0x00, 0x03, 0x02, 0x01, 0x00,
                ],
                Some(8),
            ),
            (
                Message::ReadVersionRequest { index: 1 },
                vec![0x12, 0x00, 0x02, 0x00, 0x01, 0x00],
                Some(2),
            ),
            (
                Message::ReadVersionResponse {
                    result: 0,
                    len: 8,
                    version: *b"1.2.3\0\0\0",
                },
                vec![
                    0x13, 0x00, 0x0C, 0x00, // envelope
                    0x00, 0x00, 0x08, 0x00, 0x31, 0x2E, 0x32, 0x2E, 0x33, 0x00, 0x00, 0x00,
                ],
                Some(12),
            ),
            (
                Message::InitRequestExt {
                    ctrl_packet: &CTRL[..1],
                },
                vec![0x20, 0x00, 0x01, 0x00, 0xC0],
                None,
            ),
            (
                Message::InitResponseExt {
                    result: 0,
                    resume_status: RESUME_STATUS_RESUMABLE,
                    is_restart: false,
                    curr_packet_num: 41,
                    curr_img: ImageId::HCPU,
                    num_of_rsp: 20,
                    is_boot: true,
                    ver: 1,
                },
                vec![
                    0x21, 0x00, 0x0C, 0x00, // envelope
                    0x00, 0x00, 0x01, 0x00, 0x29, 0x00, 0x00, 0x00, 0x00, 0x14, 0x01, 0x01,
                ],
                Some(12),
            ),
            (
                Message::InitCompletedIndExt { resume: true },
                vec![0x22, 0x00, 0x01, 0x00, 0x01],
                Some(1),
            ),
            (
                Message::LinkLoseCheckReq {
                    result: 0,
                    new_num_of_rsp: 5,
                    current_index: 0x1234,
                },
                vec![
                    0x23, 0x00, 0x08, 0x00, // envelope
                    0x00, 0x00, 0x05, 0x00, 0x34, 0x12, 0x00, 0x00,
                ],
                Some(8),
            ),
            (
                Message::LinkLoseCheckRsp { result: 0 },
                vec![0x24, 0x00, 0x02, 0x00, 0x00, 0x00],
                Some(2),
            ),
            (
                Message::AbortCommand { reason: 1 },
                vec![0x25, 0x00, 0x02, 0x00, 0x01, 0x00],
                Some(2),
            ),
            (
                Message::Other {
                    id: MessageId::ConnectionPriorityCheck,
                    data: &[],
                },
                vec![0x0F, 0x00, 0x00, 0x00],
                None,
            ),
            (
                Message::Other {
                    id: MessageId::Unknown(0x1234),
                    data: &[0x01, 0x02],
                },
                vec![0x34, 0x12, 0x02, 0x00, 0x01, 0x02],
                None,
            ),
        ]
    }

    #[test]
    fn every_message_vector() {
        let vectors = vectors();
        // Every typed id of the NOR flow has a vector.
        for id in MessageId::ALL {
            let typed = !matches!(Message::parse(*id, &[0; 16]), Ok(Message::Other { .. }));
            if typed {
                assert!(
                    vectors.iter().any(|(m, _, _)| m.id() == *id),
                    "no vector for {id}"
                );
            }
        }
        for (message, bytes, _) in &vectors {
            assert_eq!(emit_bytes(message), *bytes, "{message}");
            assert_eq!(message.to_vec().unwrap(), *bytes);
            assert_eq!(message.buffer_len(), bytes.len());
            assert_eq!(Message::decode(bytes), Ok(*message), "{message}");
            let packet = DfuPacket::new_checked(&bytes[..]).unwrap();
            assert_eq!(packet.message_id(), message.id());
            assert_eq!(usize::from(packet.length()), message.data_len());
            assert_eq!(
                Message::parse(packet.message_id(), packet.data()),
                Ok(*message)
            );
        }
    }

    #[test]
    fn truncated_bodies_are_refused() {
        for (message, bytes, min) in vectors() {
            let Some(min) = min else { continue };
            let id = message.id();
            let data = &bytes[ENVELOPE_HEADER_LEN..];
            for k in 0..min {
                if id == MessageId::ResumeResponse && k == RESUME_RESPONSE_LEGACY_LEN {
                    // The old form; resume_response_forms covers it.
                    continue;
                }
                let err = Message::decode(&envelope(id.value(), &data[..k])).unwrap_err();
                assert_eq!(err.what, id.what());
                let needed = match id {
                    MessageId::ResumeResponse => 10,
                    _ => min,
                };
                assert_eq!(
                    err.reason,
                    DecodeError::Truncated {
                        needed,
                        available: k
                    },
                    "{message} cut to {k}"
                );
            }
        }
        assert_eq!(
            Message::parse(MessageId::InitResponse, &[0x00]).unwrap_err(),
            Malformed {
                what: "DFU INIT_RESPONSE",
                reason: DecodeError::Truncated {
                    needed: 3,
                    available: 1
                }
            }
        );
    }

    #[test]
    fn padding_and_extra_bytes() {
        // Padding is written as zeros (emit_bytes starts from 0xFF) and ignored on receive.
        assert_eq!(
            Message::decode(&[0x01, 0x00, 0x04, 0x00, 0x09, 0x00, 0x01, 0xEE]),
            Ok(Message::InitResponse {
                result: 9,
                is_boot: true
            })
        );
        // A device may send bytes past the fields, e.g. a newer SDK's: ignored.
        assert_eq!(
            Message::decode(&envelope(1, &[0x00, 0x00, 0x00, 0xEE, 0x77, 0x66])),
            Ok(Message::InitResponse {
                result: 0,
                is_boot: false
            })
        );
        // IMAGE_SEND_START as sizeof (12 bytes) is accepted too.
        let twelve = envelope(
            6,
            &[
                0x24, 0x02, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x04, 0xEE, 0xEE,
            ],
        );
        assert_eq!(
            Message::decode(&twelve),
            Ok(Message::ImageSendStart {
                img_length: 548,
                total_pkt_num: 1,
                num_of_rsp: 1,
                img_id: ImageId::FONT
            })
        );
        // The packet's pad byte is written 0 and ignored on receive.
        assert_eq!(
            Message::decode(&envelope(10, &[0x00, 0x7F, 0x01, 0x00, 0x01, 0x00, 0x55])),
            Ok(Message::ImageSendPacket {
                img_id: ImageId::HCPU,
                pkt_idx: 1,
                data: &[0x55]
            })
        );
        // Yes/no bytes read as true when non-zero, and are written as 1.
        let bytes = envelope(8, &[0x03, 0x02]);
        let m = Message::decode(&bytes).unwrap();
        assert_eq!(
            m,
            Message::ImageSendEnd {
                img_id: ImageId::RES,
                is_more_image: true
            }
        );
        assert_eq!(m.to_vec().unwrap(), envelope(8, &[0x03, 0x01]));
        // An undefined end mode is kept.
        let bytes = envelope(7, &[0x00, 0x00, 0x07, 0x00]);
        let m = Message::decode(&bytes).unwrap();
        assert!(matches!(
            m,
            Message::ImageSendStartResponse {
                end_mode: EndMode::Other(7),
                ..
            }
        ));
        assert_eq!(m.to_vec().unwrap(), envelope(7, &[0x00, 0x00, 0x07, 0x00]));
    }

    #[test]
    fn resume_response_forms() {
        // 8 bytes: the old form; 9: refused; 10 and 12: the current form.
        let body = [
            0x00, 0x00, 0x01, 0x00, 0x05, 0x00, 0x02, 0xEE, 0x14, 0x00, 0x00, 0x00,
        ];
        assert!(matches!(
            Message::decode(&envelope(4, &body[..8])),
            Ok(Message::ResumeResponse {
                curr_packet_num: 5,
                curr_img: ImageId::PATCH,
                num_of_rsp: None,
                ..
            })
        ));
        assert_eq!(
            Message::decode(&envelope(4, &body[..9]))
                .unwrap_err()
                .reason,
            DecodeError::Truncated {
                needed: 10,
                available: 9
            }
        );
        for len in [10, 12] {
            assert!(matches!(
                Message::decode(&envelope(4, &body[..len])),
                Ok(Message::ResumeResponse {
                    curr_packet_num: 0xEE02_0005,
                    curr_img: ImageId(0x14),
                    num_of_rsp: Some(0),
                    ..
                })
            ));
        }
        // The old form cannot state a count above 0xFFFF.
        let m = Message::ResumeResponse {
            result: 0,
            is_boot: false,
            is_restart: false,
            curr_packet_num: 0x1_0000,
            curr_img: ImageId::HCPU,
            num_of_rsp: None,
        };
        let err = m.to_vec().unwrap_err();
        assert_eq!(
            err,
            BuildError::FieldOutOfRange {
                field: "curr_packet_num"
            }
        );
        assert_eq!(
            Misuse::from(err),
            Misuse::InvalidArgument("DFU field value out of range")
        );
    }

    #[test]
    fn image_packet_limits() {
        // size must equal the bytes after the header, both ways.
        for body in [
            &[0x00, 0x00, 0x01, 0x00, 0x02, 0x00, 0x55][..],
            &[0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x55],
        ] {
            assert_eq!(
                Message::decode(&envelope(10, body)).unwrap_err(),
                Malformed {
                    what: "DFU IMAGE_SEND_PACKET",
                    reason: DecodeError::LengthMismatch
                }
            );
        }
        // The largest record passes; one byte more is refused both ways.
        let record = vec![0x5A; MAX_RECORD_LEN + 1];
        let largest = Message::ImageSendPacket {
            img_id: ImageId::HCPU,
            pkt_idx: 1,
            data: &record[..MAX_RECORD_LEN],
        };
        let bytes = largest.to_vec().unwrap();
        assert_eq!(bytes.len(), MAX_PACKET_MESSAGE_LEN);
        assert_eq!(Message::decode(&bytes), Ok(largest));
        let over = Message::ImageSendPacket {
            img_id: ImageId::HCPU,
            pkt_idx: 1,
            data: &record,
        };
        assert_eq!(
            over.to_vec(),
            Err(BuildError::DataTooLarge {
                len: MAX_RECORD_LEN + 1,
                limit: MAX_RECORD_LEN
            })
        );
        let mut body = vec![0x00, 0x00, 0x01, 0x00];
        body.extend_from_slice(&((MAX_RECORD_LEN + 1) as u16).to_le_bytes());
        body.extend_from_slice(&record);
        assert_eq!(
            Message::decode(&envelope(10, &body)).unwrap_err().reason,
            DecodeError::TooLarge {
                limit: MAX_RECORD_LEN
            }
        );
        assert_eq!(DEFAULT_RECORD_LEN, 548);
        assert_eq!(MAX_RECORD_LEN, 2088);
    }

    #[test]
    fn envelope_checks() {
        let what = ENVELOPE_WHAT;
        for (bytes, reason) in [
            (
                &[][..],
                DecodeError::Truncated {
                    needed: 4,
                    available: 0,
                },
            ),
            (
                &[0x01, 0x00, 0x04],
                DecodeError::Truncated {
                    needed: 4,
                    available: 3,
                },
            ),
            (
                &[0x01, 0x00, 0x04, 0x00, 0x00],
                DecodeError::Truncated {
                    needed: 8,
                    available: 5,
                },
            ),
            (&[0x10, 0x00, 0x00, 0x00, 0x00], DecodeError::TrailingBytes),
        ] {
            assert_eq!(
                Message::decode(bytes),
                Err(Malformed { what, reason }),
                "{bytes:02x?}"
            );
            // Accessors stay total on refused bytes.
            let unchecked = DfuPacket::new_unchecked(bytes);
            let _ = (unchecked.message_id(), unchecked.length(), unchecked.data());
            assert!(Message::parse_packet(&unchecked).is_err());
        }

        let big = vec![0u8; MAX_DATA_LEN + 1];
        assert_eq!(
            Message::InitRequest { ctrl_packet: &big }.to_vec(),
            Err(BuildError::DataTooLarge {
                len: MAX_DATA_LEN + 1,
                limit: MAX_DATA_LEN
            })
        );
        let mut short = [0u8; 5];
        let err = Message::InitResponse {
            result: 0,
            is_boot: false,
        }
        .emit(&mut DfuPacket::new_unchecked(&mut short[..]))
        .unwrap_err();
        assert_eq!(
            err,
            BuildError::BufferTooShort {
                needed: 8,
                available: 5
            }
        );
        assert_eq!(
            err.to_string(),
            "DFU message needs 8 bytes, the buffer has 5"
        );
    }

    #[test]
    fn message_ids() {
        for (n, id) in MessageId::ALL.iter().enumerate() {
            assert_eq!(usize::from(id.value()), n, "ids 0–43 are all listed");
            assert_eq!(MessageId::from(id.value()), *id);
            assert!(!id.name().is_empty());
            assert!(MessageId::ALL[..n].iter().all(|o| o.name() != id.name()));
        }
        assert_eq!(MessageId::ALL.len(), 44);
        assert_eq!(MessageId::from_u16(44), MessageId::Unknown(44));
        assert_eq!(u16::from(MessageId::Unknown(0xBEEF)), 0xBEEF);
        assert_eq!(MessageId::Unknown(0xBEEF).name(), "UNKNOWN");
        assert_eq!(MessageId::from_u16(13).to_string(), "END_IND (13)");
        assert_eq!(MessageId::ImageSendPacket.what(), "DFU IMAGE_SEND_PACKET");

        // Ids without a typed body decode as Other, never as an error.
        for id in [15u16, 20, 21, 31, 38, 43, 44, 0xFFFF] {
            let bytes = envelope(id, &[0x01, 0x02, 0x03]);
            let m = Message::decode(&bytes).unwrap();
            assert_eq!(
                m,
                Message::Other {
                    id: MessageId::from_u16(id),
                    data: &[0x01, 0x02, 0x03]
                }
            );
            assert_eq!(m.result(), None);
            assert_eq!(m.to_vec().unwrap(), bytes);
        }
        assert_eq!(
            Message::decode(&envelope(0xFFFF, &[])).unwrap().to_string(),
            "DFU UNKNOWN id 65535 len 0"
        );
    }

    #[test]
    fn results_and_display() {
        let m = Message::ImageSendEndResponse { result: 8 };
        assert_eq!(m.result(), Some(8));
        assert_eq!(
            m.to_string(),
            "DFU IMAGE_SEND_END_RESPONSE result DFU_ERR_FW_INVALID 8"
        );
        assert_eq!(Message::EndInd { result: 0x99 }.result(), Some(0x99));
        assert_eq!(
            Message::EndInd { result: 0x99 }.to_string(),
            "DFU END_IND result 153"
        );
        assert_eq!(Message::TransmissionEnd.result(), None);
        assert_eq!(
            Message::ImageSendPacket {
                img_id: ImageId::HCPU,
                pkt_idx: 3,
                data: &[0; DEFAULT_RECORD_LEN]
            }
            .to_string(),
            "DFU IMAGE_SEND_PACKET HCPU (0) packet 3 len 548"
        );
        assert_eq!(
            Message::ImageSendStart {
                img_length: 1096,
                total_pkt_num: 2,
                num_of_rsp: 20,
                img_id: ImageId(12)
            }
            .to_string(),
            "DFU IMAGE_SEND_START image 12 1096 bytes in 2 packets, ack every 20"
        );
    }

    #[test]
    fn refusal_table() {
        for (n, code) in DfuErrorCode::ALL.iter().enumerate() {
            assert_eq!(DfuErrorCode::from_code(code.code()), Some(*code));
            let expected = if n == 17 { 0x40 } else { n as u16 };
            assert_eq!(code.code(), expected);
            let r = dfu_refusal(code.code());
            assert_eq!(r.vendor, Vendor::Dfu);
            assert_eq!(r.code, i64::from(code.code()));
            assert_eq!(r.name, code.name());
            assert!(r.name.starts_with("DFU_ERR_"));
            assert_eq!(r.meaning, code.meaning());
            assert!(!r.meaning.is_empty());
            assert_eq!(r.retryable, code.retryable());
            assert!(DfuErrorCode::ALL[..n]
                .iter()
                .all(|o| o.name() != code.name() && o.meaning() != code.meaning()));
        }
        let r = dfu_refusal(9);
        assert_eq!(r.name, "DFU_ERR_CONTROL_PACKET_INVALID");
        assert!(!r.retryable);
        assert_eq!(
            r.to_string(),
            "the device refused (DFU_ERR_CONTROL_PACKET_INVALID 9): the update package's \
             control file failed its signature check: the package is not for this device or \
             is damaged"
        );
        assert!(dfu_refusal(10).retryable);
        assert!(dfu_refusal(16).retryable);
        assert!(!dfu_refusal(3).retryable);
        assert_eq!(DfuErrorCode::Internal.to_string(), "DFU_ERR_INTERNAL 64");

        for code in [17u16, 0x3F, 0x41, 0xFFFF] {
            let r = dfu_refusal(code);
            assert_eq!(r.name, UNKNOWN_ERROR_NAME);
            assert_eq!(r.code, i64::from(code));
            assert!(!r.retryable);
            assert!(r
                .to_string()
                .contains(&alloc::format!("DFU_ERR_UNKNOWN {code}")));
        }
    }

    #[test]
    fn identifiers() {
        assert_eq!(ImageId::HCPU.name(), Some("HCPU"));
        assert_eq!(ImageId::MAX, ImageId(11));
        assert_eq!(ImageId::BOOTLOADER.name(), Some("BOOTLOADER"));
        assert_eq!(ImageId(12).name(), None);
        assert_eq!(ImageId::RES.to_string(), "RES (3)");
        assert!((0..=11).all(|n| ImageId(n).name().is_some()));

        let flags = ImageFlags::ENC.union(ImageFlags::COMPRESS);
        assert_eq!(flags, ImageFlags(17));
        assert!(flags.contains(ImageFlags::COMPRESS));
        assert!(!flags.contains(ImageFlags::AUTO));
        assert_eq!((ImageFlags::AUTO.0, ImageFlags::SINGLE.0), (2, 4));

        assert_eq!(DfuId::DL, DfuId(3));
        assert_eq!(DfuId::CODE_MIX.name(), Some("CODE_MIX"));
        assert_eq!(DfuId(4).name(), None);

        for n in 0..=3u8 {
            assert_eq!(u8::from(EndMode::from(n)), n);
        }
        assert!(!EndMode::NoSend.device_sends_end_ind());
        assert!(EndMode::Send.device_sends_end_ind() && !EndMode::Send.remote_echoes());
        assert!(EndMode::Receive.remote_echoes());

        assert_eq!(PREPARE_START_TIMEOUT.as_millis(), 30_000);
        assert_eq!(SYNC_DOWNLOAD_PERIOD.as_millis(), 6_000);
        assert_eq!(IMAGE_SEND_START_TIMEOUT.as_millis(), 180_000);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = Rng(0x0123_4567_89AB_CDEF);
        for round in 0..20_000 {
            // Half the inputs get a well-formed envelope so that the bodies are reached.
            let id = rng.below(48) as u16;
            let body_len = rng.below(20);
            let body = rng.bytes(body_len);
            let bytes = if round % 2 == 0 {
                envelope(id, &body)
            } else {
                let len = rng.below(24);
                rng.bytes(len)
            };
            let unchecked = DfuPacket::new_unchecked(&bytes[..]);
            let _ = (unchecked.message_id(), unchecked.length(), unchecked.data());
            if let Ok(m) = Message::decode(&bytes) {
                let _ = (m.to_string(), m.result(), m.id());
                let again = m.to_vec().unwrap();
                assert_eq!(Message::decode(&again), Ok(m));
            }
            if let Ok(m) = Message::parse(MessageId::from_u16(id), &body) {
                assert_eq!(m.id(), MessageId::from_u16(id));
            }
        }
    }
}
