//! MQTT 3.1.1 packets: the fixed header and its remaining-length varint, every packet a client
//! and a server exchange at QoS 0 and 1, and a streaming [`Decoder`] that cuts a byte stream
//! into whole packets within a hard size cap.
//!
//! Why a codec of our own: no crate fits (`PEERS.md` §3). `mqttrs` and `mqttbytes` are
//! unmaintained (last releases 2021), `minimq` and `rust-mqtt` speak MQTT 5 only while EnOS
//! speaks 3.1.1 only (`protocols/enos_microchip.md` A1), `rumqttc` does not build for wasm32,
//! and `mqtt-protocol` needs `std::io`. The subset a device session needs is a few hundred
//! lines, builds `no_std` + `alloc`, and is tested here against byte vectors.
//!
//! Contract, as for every view in [`crate::wire`]: a [`Packet`] is made from peer bytes only
//! through [`Packet::new_checked`], which checks the fixed header and that the buffer holds
//! exactly one packet, after which no accessor can panic; [`PacketRepr`] is the validated
//! summary with `parse`, `buffer_len` and `emit` (and [`PacketRepr::append_to`] for a
//! growing buffer). [`Decoder`] takes chunks of any size, as WebSocket messages or TCP reads
//! arrive, and yields whole packets. Multi-byte integers are big-endian; strings are a 16-bit
//! length and UTF-8.
//!
//! ```text
//! fixed header   type (7..4) | flags (3..0) | remaining length: 1–4 bytes, 7 bits each,
//!                                             low group first, bit 7 = more follows
//! CONNECT    10 | len | 00 04 "MQTT" | 04 | flags | keepalive u16 | client id | [user] | [pass]
//! CONNACK    20 02 | session present (bit 0) | return code
//! PUBLISH    3x | len | topic | [packet id, QoS 1] | payload      x = DUP 8, QoS 2..1, RETAIN 1
//! PUBACK     40 02 | packet id             UNSUBACK  B0 02 | packet id
//! SUBSCRIBE  82 | len | packet id | (filter | QoS)+
//! SUBACK     90 | len | packet id | (granted QoS 00/01 or failure 80)+
//! UNSUBSCRIBE A2 | len | packet id | filter+
//! PINGREQ C0 00   PINGRESP D0 00   DISCONNECT E0 00
//! ```
//!
//! Choices where the standard leaves room, or where this codec does less than MQTT 3.1.1:
//!
//! - QoS 2 is not implemented: [`QoS`] has no third value, so no packet can ask for it;
//!   parsing a PUBLISH, SUBSCRIBE or SUBACK with QoS 2, or a PUBREC, PUBREL or PUBCOMP, gives
//!   [`ParseError::Unsupported`]. QoS 3 breaks the standard and is [`ParseError::Malformed`].
//!   EnOS allows only QoS 0 and 1 (A3).
//! - Wills are not implemented: [`ConnectRepr`] has no will fields, so no CONNECT with one can
//!   be emitted, and a CONNECT carrying one parses as [`Unsupported::Will`]. A protocol level
//!   other than 4 (3.1 sends `MQIsdp` level 3, MQTT 5 level 5) is
//!   [`Unsupported::ProtocolLevel`].
//! - Every rule the standard puts on the sender and that a receiver can see is checked on
//!   both sides: fixed header flags (SUBSCRIBE and UNSUBSCRIBE 0b0010, PUBLISH free, others
//!   0), reserved bits in CONNECT and SUBSCRIBE options, a nonzero packet id, a password only
//!   with a user name, a will QoS or retain only with a will, no session present on a
//!   refused CONNACK, no DUP on QoS 0, at least one filter or return code in the list
//!   packets, topic names without wildcards, `#` and `+` only as whole levels of a filter
//!   (`#` last), UTF-8 without U+0000 in every string. Bytes after a packet's fields are
//!   [`DecodeError::TrailingBytes`], except in PUBLISH, where they are the payload.
//! - A remaining length in more bytes than it needs (`80 00` for 0) is accepted: 3.1.1, unlike
//!   MQTT 5, does not forbid it. More than 4 bytes is [`DecodeError::TooLarge`] with the limit
//!   [`MAX_REMAINING_LEN`]. Emitting always uses the fewest bytes.
//! - Client ids are not restricted to the 23 alphanumerics a broker must accept: EnOS ids
//!   carry `|`, `=` and `,` and are longer (A2), and brokers commonly allow that.
//! - [`Decoder`] refuses a packet longer than its cap as soon as the fixed header announces
//!   it, before buffering a byte of its body, and reserved packet types (0, 15) at the first
//!   byte. A framing error ends the stream (there is no way to find the next packet
//!   boundary after one): the decoder yields the packets completed before it, then the
//!   error once, then nothing until [`Decoder::reset`], which a new connection calls.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;
use core::num::NonZeroU16;

use crate::error::{DecodeError, Error, Malformed, Misuse, Refusal, Vendor};

/// The protocol name a CONNECT carries.
pub const PROTOCOL_NAME: &str = "MQTT";
/// The protocol level of MQTT 3.1.1.
pub const PROTOCOL_LEVEL: u8 = 0x04;
/// The largest remaining length: four varint bytes of seven bits (268,435,455).
pub const MAX_REMAINING_LEN: usize = 0x0FFF_FFFF;
/// The most bytes the remaining-length varint takes.
pub const MAX_REMAINING_LEN_BYTES: usize = 4;
/// The longest fixed header: the type byte and four length bytes.
pub const MAX_HEADER_LEN: usize = 1 + MAX_REMAINING_LEN_BYTES;
/// The longest string or binary field: its length prefix has 16 bits.
pub const MAX_STRING_LEN: usize = 0xFFFF;
/// The return code of a SUBACK entry that refused its filter.
pub const SUBACK_FAILURE: u8 = 0x80;

/// What [`Malformed`] names when a fixed header fails to decode.
const HEADER_WHAT: &str = "MQTT fixed header";

const TYPE_SHIFT: u32 = 4;
const FLAGS_MASK: u8 = 0x0F;
const DUP_BIT: u8 = 0x08;
const QOS_MASK: u8 = 0x06;
const QOS_SHIFT: u32 = 1;
const RETAIN_BIT: u8 = 0x01;
const CONTINUATION_BIT: u8 = 0x80;
const VARINT_MASK: u8 = 0x7F;
const VARINT_SHIFT: usize = 7;
const SESSION_PRESENT_BIT: u8 = 0x01;
/// SUBSCRIBE options: bits 7..2 are reserved.
const SUBSCRIBE_RESERVED: u8 = 0xFC;
/// The fixed flags of SUBSCRIBE, UNSUBSCRIBE and PUBREL.
const FLAGS_0010: u8 = 0x02;

/// CONNECT flag bits (§3.1.2.3).
mod connect_flag {
    pub(super) const USERNAME: u8 = 0x80;
    pub(super) const PASSWORD: u8 = 0x40;
    pub(super) const WILL_RETAIN: u8 = 0x20;
    pub(super) const WILL_QOS: u8 = 0x18;
    pub(super) const WILL: u8 = 0x04;
    pub(super) const CLEAN_SESSION: u8 = 0x02;
    pub(super) const RESERVED: u8 = 0x01;
}

/// The packet type: the high nibble of byte 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// Client to server: open a session.
    Connect = 1,
    /// Server to client: the answer to CONNECT.
    Connack = 2,
    /// Either way: an application message.
    Publish = 3,
    /// The acknowledgement of a QoS 1 PUBLISH.
    Puback = 4,
    /// QoS 2, step 1 (unsupported).
    Pubrec = 5,
    /// QoS 2, step 2 (unsupported).
    Pubrel = 6,
    /// QoS 2, step 3 (unsupported).
    Pubcomp = 7,
    /// Client to server: subscribe to topic filters.
    Subscribe = 8,
    /// Server to client: the answer to SUBSCRIBE.
    Suback = 9,
    /// Client to server: drop subscriptions.
    Unsubscribe = 10,
    /// Server to client: the answer to UNSUBSCRIBE.
    Unsuback = 11,
    /// Client to server: keepalive probe.
    Pingreq = 12,
    /// Server to client: the answer to PINGREQ.
    Pingresp = 13,
    /// Client to server: a clean close.
    Disconnect = 14,
}

impl PacketType {
    /// The type with this nibble value, or `None` for the reserved 0 and 15 (and above).
    #[must_use]
    pub const fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => PacketType::Connect,
            2 => PacketType::Connack,
            3 => PacketType::Publish,
            4 => PacketType::Puback,
            5 => PacketType::Pubrec,
            6 => PacketType::Pubrel,
            7 => PacketType::Pubcomp,
            8 => PacketType::Subscribe,
            9 => PacketType::Suback,
            10 => PacketType::Unsubscribe,
            11 => PacketType::Unsuback,
            12 => PacketType::Pingreq,
            13 => PacketType::Pingresp,
            14 => PacketType::Disconnect,
            _ => return None,
        })
    }

    /// The standard's name, e.g. `"CONNACK"`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            PacketType::Connect => "CONNECT",
            PacketType::Connack => "CONNACK",
            PacketType::Publish => "PUBLISH",
            PacketType::Puback => "PUBACK",
            PacketType::Pubrec => "PUBREC",
            PacketType::Pubrel => "PUBREL",
            PacketType::Pubcomp => "PUBCOMP",
            PacketType::Subscribe => "SUBSCRIBE",
            PacketType::Suback => "SUBACK",
            PacketType::Unsubscribe => "UNSUBSCRIBE",
            PacketType::Unsuback => "UNSUBACK",
            PacketType::Pingreq => "PINGREQ",
            PacketType::Pingresp => "PINGRESP",
            PacketType::Disconnect => "DISCONNECT",
        }
    }

    /// The flags the standard fixes for this type, or `None` for PUBLISH, whose flags carry
    /// DUP, QoS and RETAIN.
    #[must_use]
    pub const fn fixed_flags(self) -> Option<u8> {
        match self {
            PacketType::Publish => None,
            PacketType::Pubrel | PacketType::Subscribe | PacketType::Unsubscribe => {
                Some(FLAGS_0010)
            }
            _ => Some(0),
        }
    }

    /// What [`Malformed`] names for a packet of this type.
    const fn what(self) -> &'static str {
        match self {
            PacketType::Connect => "MQTT CONNECT packet",
            PacketType::Connack => "MQTT CONNACK packet",
            PacketType::Publish => "MQTT PUBLISH packet",
            PacketType::Puback => "MQTT PUBACK packet",
            PacketType::Pubrec => "MQTT PUBREC packet",
            PacketType::Pubrel => "MQTT PUBREL packet",
            PacketType::Pubcomp => "MQTT PUBCOMP packet",
            PacketType::Subscribe => "MQTT SUBSCRIBE packet",
            PacketType::Suback => "MQTT SUBACK packet",
            PacketType::Unsubscribe => "MQTT UNSUBSCRIBE packet",
            PacketType::Unsuback => "MQTT UNSUBACK packet",
            PacketType::Pingreq => "MQTT PINGREQ packet",
            PacketType::Pingresp => "MQTT PINGRESP packet",
            PacketType::Disconnect => "MQTT DISCONNECT packet",
        }
    }
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Decodes a remaining-length varint at the start of `bytes`: the value and the bytes it
/// took. A varint that runs off the end is [`DecodeError::Truncated`]; one still continuing
/// after four bytes is [`DecodeError::TooLarge`].
pub fn decode_remaining_len(bytes: &[u8]) -> Result<(usize, usize), DecodeError> {
    let mut value = 0usize;
    for (i, &b) in bytes.iter().take(MAX_REMAINING_LEN_BYTES).enumerate() {
        value |= usize::from(b & VARINT_MASK) << (VARINT_SHIFT * i);
        if b & CONTINUATION_BIT == 0 {
            return Ok((value, i + 1));
        }
    }
    if bytes.len() >= MAX_REMAINING_LEN_BYTES {
        Err(DecodeError::TooLarge {
            limit: MAX_REMAINING_LEN,
        })
    } else {
        Err(DecodeError::Truncated {
            needed: bytes.len() + 1,
            available: bytes.len(),
        })
    }
}

/// Encodes `value` as a remaining-length varint in the fewest bytes: the bytes and how many
/// of them are used. Refuses a value over [`MAX_REMAINING_LEN`].
pub fn encode_remaining_len(
    value: usize,
) -> Result<([u8; MAX_REMAINING_LEN_BYTES], usize), BuildError> {
    if value > MAX_REMAINING_LEN {
        return Err(BuildError::TooLarge {
            len: value,
            limit: MAX_REMAINING_LEN,
        });
    }
    let mut out = [0u8; MAX_REMAINING_LEN_BYTES];
    let mut rest = value;
    let mut used = 0;
    for slot in &mut out {
        // The mask keeps seven bits, so the cast loses nothing.
        *slot = (rest & usize::from(VARINT_MASK)) as u8;
        rest >>= VARINT_SHIFT;
        used += 1;
        if rest == 0 {
            break;
        }
        *slot |= CONTINUATION_BIT;
    }
    Ok((out, used))
}

/// How many bytes the remaining-length varint of `value` takes (4 for values beyond the
/// limit, which cannot be emitted).
#[must_use]
pub const fn remaining_len_size(value: usize) -> usize {
    match value {
        0..=0x7F => 1,
        0x80..=0x3FFF => 2,
        0x4000..=0x1F_FFFF => 3,
        _ => 4,
    }
}

/// Whether `topic` may be a PUBLISH topic name: not empty, no wildcard, no U+0000, at most
/// [`MAX_STRING_LEN`] bytes.
#[must_use]
pub fn is_valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= MAX_STRING_LEN && !topic.contains(['+', '#', '\0'])
}

/// Whether `filter` may be a SUBSCRIBE or UNSUBSCRIBE topic filter: not empty, `+` and `#`
/// only as whole levels, `#` only last, no U+0000, at most [`MAX_STRING_LEN`] bytes.
#[must_use]
pub fn is_valid_topic_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > MAX_STRING_LEN || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        if level.contains('#') && !(level == "#" && last) {
            return false;
        }
        if level.contains('+') && level != "+" {
            return false;
        }
    }
    true
}

/// A packet identifier: nonzero, as the standard requires (§2.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PacketId(NonZeroU16);

impl PacketId {
    /// The lowest id, 1.
    pub const MIN: PacketId = PacketId(NonZeroU16::MIN);

    /// The id `value`, or `None` for zero.
    #[must_use]
    pub const fn new(value: u16) -> Option<Self> {
        match NonZeroU16::new(value) {
            Some(v) => Some(PacketId(v)),
            None => None,
        }
    }

    /// The id as a number.
    #[must_use]
    pub const fn get(self) -> u16 {
        self.0.get()
    }

    /// The id after this one, wrapping from 65535 to 1.
    #[must_use]
    pub const fn next(self) -> Self {
        match NonZeroU16::new(self.0.get().wrapping_add(1)) {
            Some(v) => PacketId(v),
            None => PacketId::MIN,
        }
    }
}

impl fmt::Display for PacketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.get())
    }
}

/// A quality of service this codec speaks: 0 or 1 (QoS 2 is unsupported).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    /// QoS 0: sent once, never acknowledged.
    AtMostOnce = 0,
    /// QoS 1: acknowledged by PUBACK, resent until then.
    AtLeastOnce = 1,
}

impl QoS {
    /// Reads a two-bit QoS field: 2 is unsupported, 3 malformed.
    fn from_bits(bits: u8, what: &'static str) -> Result<Self, ParseError> {
        match bits {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            2 => Err(ParseError::Unsupported(Unsupported::Qos2)),
            _ => Err(malformed(what, DecodeError::BadValue)),
        }
    }
}

impl From<QoS> for u8 {
    fn from(qos: QoS) -> u8 {
        qos as u8
    }
}

/// The QoS of a PUBLISH with the packet id that QoS 1 needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QosPid {
    /// QoS 0: no packet id.
    AtMostOnce,
    /// QoS 1, with its packet id.
    AtLeastOnce(PacketId),
}

impl QosPid {
    /// The QoS alone.
    #[must_use]
    pub const fn qos(self) -> QoS {
        match self {
            QosPid::AtMostOnce => QoS::AtMostOnce,
            QosPid::AtLeastOnce(_) => QoS::AtLeastOnce,
        }
    }

    /// The packet id, for QoS 1.
    #[must_use]
    pub const fn packet_id(self) -> Option<PacketId> {
        match self {
            QosPid::AtMostOnce => None,
            QosPid::AtLeastOnce(id) => Some(id),
        }
    }
}

/// The CONNACK return code (§3.2.2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnackCode {
    /// 0: connection accepted.
    Accepted = 0,
    /// 1: the server does not speak this protocol level.
    UnacceptableProtocolVersion = 1,
    /// 2: the client id is well-formed UTF-8 but not allowed.
    IdentifierRejected = 2,
    /// 3: the network connection is up but the MQTT service is not.
    ServerUnavailable = 3,
    /// 4: the user name or password is malformed or wrong.
    BadUsernameOrPassword = 4,
    /// 5: the client is not authorised to connect.
    NotAuthorized = 5,
}

impl ConnackCode {
    /// The code with this value, or `None` above 5.
    #[must_use]
    pub const fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0 => ConnackCode::Accepted,
            1 => ConnackCode::UnacceptableProtocolVersion,
            2 => ConnackCode::IdentifierRejected,
            3 => ConnackCode::ServerUnavailable,
            4 => ConnackCode::BadUsernameOrPassword,
            5 => ConnackCode::NotAuthorized,
            _ => return None,
        })
    }

    /// A name for the code, as mosquitto spells it, e.g. `"CONNACK_REFUSED_NOT_AUTHORIZED"`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            ConnackCode::Accepted => "CONNACK_ACCEPTED",
            ConnackCode::UnacceptableProtocolVersion => "CONNACK_REFUSED_PROTOCOL_VERSION",
            ConnackCode::IdentifierRejected => "CONNACK_REFUSED_IDENTIFIER_REJECTED",
            ConnackCode::ServerUnavailable => "CONNACK_REFUSED_SERVER_UNAVAILABLE",
            ConnackCode::BadUsernameOrPassword => "CONNACK_REFUSED_BAD_USERNAME_PASSWORD",
            ConnackCode::NotAuthorized => "CONNACK_REFUSED_NOT_AUTHORIZED",
        }
    }

    /// What the code means to a person, and what to do next.
    #[must_use]
    pub const fn meaning(self) -> &'static str {
        match self {
            ConnackCode::Accepted => "the broker accepted the connection",
            ConnackCode::UnacceptableProtocolVersion => {
                "the broker does not speak MQTT 3.1.1; use a broker or bridge that does"
            }
            ConnackCode::IdentifierRejected => {
                "the broker rejected the client id; check the device's client id"
            }
            ConnackCode::ServerUnavailable => {
                "the broker's MQTT service is unavailable; try again later"
            }
            ConnackCode::BadUsernameOrPassword => {
                "the broker rejected the user name or password; check the device credentials"
            }
            ConnackCode::NotAuthorized => {
                "the broker does not allow this client to connect; check its permissions"
            }
        }
    }

    /// Whether connecting again unchanged can succeed: only when the service was down.
    #[must_use]
    pub const fn retryable(self) -> bool {
        matches!(self, ConnackCode::ServerUnavailable)
    }

    /// The refusal this code makes, or `None` for [`ConnackCode::Accepted`].
    #[must_use]
    pub fn refusal(self) -> Option<Refusal> {
        (self != ConnackCode::Accepted).then(|| Refusal {
            vendor: Vendor::Mqtt,
            code: i64::from(self as u8),
            name: self.name(),
            meaning: self.meaning(),
            retryable: self.retryable(),
        })
    }
}

impl fmt::Display for ConnackCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.name(), *self as u8, self.meaning())
    }
}

/// One SUBACK entry: the QoS granted, or a refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubackCode {
    /// The subscription holds, at this maximum QoS.
    Granted(QoS),
    /// 0x80: the server refused the filter.
    Failure,
}

impl SubackCode {
    /// The byte on the wire.
    #[must_use]
    pub const fn to_u8(self) -> u8 {
        match self {
            SubackCode::Granted(qos) => qos as u8,
            SubackCode::Failure => SUBACK_FAILURE,
        }
    }

    /// The refusal a failure makes, or `None` when granted.
    #[must_use]
    pub fn refusal(self) -> Option<Refusal> {
        (self == SubackCode::Failure).then_some(Refusal {
            vendor: Vendor::Mqtt,
            code: i64::from(SUBACK_FAILURE),
            name: "SUBACK_FAILURE",
            meaning:
                "the broker refused the subscription; check that this client may read the topic",
            retryable: false,
        })
    }
}

/// A CONNECT packet without a will (see the module docs).
/// `Debug` shows whether a password is present, never its bytes: a CONNECT in a log or a
/// test failure must not leak the login.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ConnectRepr<'a> {
    /// The client identifier; empty only with a clean session.
    pub client_id: &'a str,
    /// Start a new session rather than resume the stored one.
    pub clean_session: bool,
    /// The keepalive in seconds; 0 turns keepalive off.
    pub keep_alive: u16,
    /// The user name.
    pub username: Option<&'a str>,
    /// The password: binary data, allowed only with a user name.
    pub password: Option<&'a [u8]>,
}

impl fmt::Debug for ConnectRepr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectRepr")
            .field("client_id", &self.client_id)
            .field("clean_session", &self.clean_session)
            .field("keep_alive", &self.keep_alive)
            .field("username", &self.username)
            .field("password", &self.password.map(|_| "<hidden>"))
            .finish()
    }
}

/// A CONNACK packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnackRepr {
    /// The server resumed a stored session (only on acceptance).
    pub session_present: bool,
    /// The return code.
    pub code: ConnackCode,
}

/// A PUBLISH packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishRepr<'a> {
    /// The topic name: no wildcards.
    pub topic: &'a str,
    /// The QoS and, for QoS 1, the packet id.
    pub qos: QosPid,
    /// This is a resend of a QoS 1 message (never set on QoS 0).
    pub dup: bool,
    /// The server keeps the message for future subscribers.
    pub retain: bool,
    /// The application message.
    pub payload: &'a [u8],
}

/// One topic filter of a SUBSCRIBE with its requested QoS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subscription<'a> {
    /// The topic filter.
    pub filter: &'a str,
    /// The highest QoS the client asks for.
    pub qos: QoS,
}

/// A SUBSCRIBE packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeRepr<'a> {
    /// The packet id the SUBACK echoes.
    pub packet_id: PacketId,
    /// The filters, at least one.
    pub filters: Vec<Subscription<'a>>,
}

/// A SUBACK packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubackRepr {
    /// The SUBSCRIBE's packet id.
    pub packet_id: PacketId,
    /// One entry per filter of the SUBSCRIBE, in its order.
    pub codes: Vec<SubackCode>,
}

/// An UNSUBSCRIBE packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsubscribeRepr<'a> {
    /// The packet id the UNSUBACK echoes.
    pub packet_id: PacketId,
    /// The filters to drop, at least one.
    pub filters: Vec<&'a str>,
}

/// A decoded packet, or one to emit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PacketRepr<'a> {
    /// CONNECT.
    Connect(ConnectRepr<'a>),
    /// CONNACK.
    Connack(ConnackRepr),
    /// PUBLISH.
    Publish(PublishRepr<'a>),
    /// PUBACK with the acknowledged packet id.
    Puback(PacketId),
    /// SUBSCRIBE.
    Subscribe(SubscribeRepr<'a>),
    /// SUBACK.
    Suback(SubackRepr),
    /// UNSUBSCRIBE.
    Unsubscribe(UnsubscribeRepr<'a>),
    /// UNSUBACK with the acknowledged packet id.
    Unsuback(PacketId),
    /// PINGREQ.
    Pingreq,
    /// PINGRESP.
    Pingresp,
    /// DISCONNECT.
    Disconnect,
}

/// Why peer bytes were refused.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The bytes break MQTT 3.1.1.
    Malformed(Malformed),
    /// Valid MQTT 3.1.1 this codec does not implement.
    Unsupported(Unsupported),
}

/// MQTT 3.1.1 features this codec does not implement.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsupported {
    /// QoS 2 (exactly once), or a PUBREC, PUBREL or PUBCOMP.
    Qos2,
    /// A will message in CONNECT.
    Will,
    /// A protocol level other than 4, with the level.
    ProtocolLevel(u8),
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsupported::Qos2 => f.write_str("MQTT QoS 2 is not supported"),
            Unsupported::Will => f.write_str("an MQTT will message is not supported"),
            Unsupported::ProtocolLevel(level) => {
                write!(f, "MQTT protocol level {level} is not 3.1.1 (level 4)")
            }
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Malformed(m) => write!(f, "{m}"),
            ParseError::Unsupported(u) => write!(f, "{u}"),
        }
    }
}

impl From<Malformed> for ParseError {
    fn from(e: Malformed) -> Self {
        ParseError::Malformed(e)
    }
}

impl From<ParseError> for Malformed {
    /// An unsupported feature becomes [`DecodeError::BadValue`] of a structure naming it: for
    /// a session it is as unusable as a broken packet.
    fn from(e: ParseError) -> Malformed {
        match e {
            ParseError::Malformed(m) => m,
            ParseError::Unsupported(u) => Malformed {
                what: match u {
                    Unsupported::Qos2 => "MQTT QoS 2 packet (unsupported)",
                    Unsupported::Will => "MQTT CONNECT will (unsupported)",
                    Unsupported::ProtocolLevel(_) => "MQTT protocol level (only 3.1.1)",
                },
                reason: DecodeError::BadValue,
            },
        }
    }
}

impl From<ParseError> for Error {
    fn from(e: ParseError) -> Error {
        Error::PeerMalformed(e.into())
    }
}

/// Why a packet could not be built: the caller's mistake, not the peer's.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// A field breaks a rule of the standard; the text names it.
    InvalidArgument(&'static str),
    /// A string, binary field or the whole packet is too long.
    TooLarge {
        /// The length given.
        len: usize,
        /// The largest accepted.
        limit: usize,
    },
    /// The buffer is shorter than the packet.
    BufferTooShort {
        /// Bytes the packet needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::InvalidArgument(what) => write!(f, "invalid MQTT packet: {what}"),
            BuildError::TooLarge { len, limit } => {
                write!(f, "MQTT field of {len} bytes exceeds the limit of {limit}")
            }
            BuildError::BufferTooShort { needed, available } => write!(
                f,
                "MQTT packet needs {needed} bytes, the buffer has {available}"
            ),
        }
    }
}

impl From<BuildError> for Misuse {
    fn from(e: BuildError) -> Misuse {
        Misuse::InvalidArgument(match e {
            BuildError::InvalidArgument(what) => what,
            BuildError::TooLarge { .. } => "MQTT field or packet too long",
            BuildError::BufferTooShort { .. } => "buffer shorter than the MQTT packet",
        })
    }
}

fn malformed(what: &'static str, reason: DecodeError) -> ParseError {
    ParseError::Malformed(Malformed { what, reason })
}

/// A read view of one whole packet: fixed header, then exactly remaining-length bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it. Use only on buffers being built, never on peer
    /// bytes.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps peer bytes, checking the packet type and that the buffer holds exactly the
    /// packet its fixed header announces.
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the type is defined, the remaining length decodes, and the buffer is
    /// exactly that long: shorter is [`DecodeError::Truncated`], longer
    /// [`DecodeError::TrailingBytes`].
    pub fn check_len(&self) -> Result<(), Malformed> {
        let data = self.buffer.as_ref();
        let bad = |reason| Malformed {
            what: HEADER_WHAT,
            reason,
        };
        let Some(&first) = data.first() else {
            return Err(bad(DecodeError::Truncated {
                needed: 2,
                available: 0,
            }));
        };
        if PacketType::from_u8(first >> TYPE_SHIFT).is_none() {
            return Err(bad(DecodeError::BadValue));
        }
        let (remaining, len_bytes) = decode_remaining_len(data.get(1..).unwrap_or(&[]))
            .map_err(|reason| match reason {
                // Count the type byte in what the header needs.
                DecodeError::Truncated { needed, available } => DecodeError::Truncated {
                    needed: needed + 1,
                    available: available + 1,
                },
                other => other,
            })
            .map_err(bad)?;
        let needed = 1 + len_bytes + remaining;
        match data.len() {
            n if n < needed => Err(bad(DecodeError::Truncated {
                needed,
                available: n,
            })),
            n if n > needed => Err(bad(DecodeError::TrailingBytes)),
            _ => Ok(()),
        }
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The packet type (high nibble of byte 0), `None` if reserved or missing.
    #[must_use]
    pub fn packet_type(&self) -> Option<PacketType> {
        self.buffer
            .as_ref()
            .first()
            .and_then(|b| PacketType::from_u8(b >> TYPE_SHIFT))
    }

    /// The flags (low nibble of byte 0); 0 if missing.
    #[must_use]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref().first().map_or(0, |b| b & FLAGS_MASK)
    }

    /// The remaining length the header announces; 0 if it does not decode.
    #[must_use]
    pub fn remaining_len(&self) -> usize {
        self.decoded_len().map_or(0, |(len, _)| len)
    }

    /// The fixed header's length: 2 to 5 bytes (1 if the length does not decode).
    #[must_use]
    pub fn header_len(&self) -> usize {
        1 + self.decoded_len().map_or(0, |(_, n)| n)
    }

    fn decoded_len(&self) -> Option<(usize, usize)> {
        decode_remaining_len(self.buffer.as_ref().get(1..)?).ok()
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// Everything after the fixed header.
    #[must_use]
    pub fn body(&self) -> &'a [u8] {
        self.buffer.as_ref().get(self.header_len()..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets DUP on a QoS 1 PUBLISH, as a resend needs; returns `false` and changes nothing
    /// for any other packet (DUP is only for QoS 1).
    pub fn set_dup(&mut self) -> bool {
        let Some(first) = self.buffer.as_mut().first_mut() else {
            return false;
        };
        let is_qos1_publish = *first >> TYPE_SHIFT == PacketType::Publish as u8
            && (*first & QOS_MASK) >> QOS_SHIFT == QoS::AtLeastOnce as u8;
        if is_qos1_publish {
            *first |= DUP_BIT;
        }
        is_qos1_publish
    }
}

/// A cursor over a packet body whose every read is checked.
struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn bad(&self, reason: DecodeError) -> ParseError {
        malformed(self.what, reason)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        if self.bytes.len() < n {
            return Err(self.bad(DecodeError::Truncated {
                needed: n,
                available: self.bytes.len(),
            }));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, ParseError> {
        let b = self.take(1)?;
        b.first()
            .copied()
            .ok_or(self.bad(DecodeError::LengthMismatch))
    }

    fn u16(&mut self) -> Result<u16, ParseError> {
        match *self.take(2)? {
            [hi, lo] => Ok(u16::from_be_bytes([hi, lo])),
            _ => Err(self.bad(DecodeError::LengthMismatch)),
        }
    }

    fn binary(&mut self) -> Result<&'a [u8], ParseError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A length-prefixed UTF-8 string without U+0000 (§1.5.3).
    fn string(&mut self) -> Result<&'a str, ParseError> {
        let raw = self.binary()?;
        match core::str::from_utf8(raw) {
            Ok(s) if !s.contains('\0') => Ok(s),
            _ => Err(self.bad(DecodeError::BadValue)),
        }
    }

    fn packet_id(&mut self) -> Result<PacketId, ParseError> {
        let id = self.u16()?;
        PacketId::new(id).ok_or(self.bad(DecodeError::BadValue))
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.bytes)
    }

    fn finish(&self) -> Result<(), ParseError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(self.bad(DecodeError::TrailingBytes))
        }
    }
}

/// A cursor writing into a buffer whose length was checked, still refusing to overrun.
struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), BuildError> {
        let end = self.pos.saturating_add(bytes.len());
        let available = self.buf.len();
        let dst = self
            .buf
            .get_mut(self.pos..end)
            .ok_or(BuildError::BufferTooShort {
                needed: end,
                available,
            })?;
        dst.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    fn u8(&mut self, value: u8) -> Result<(), BuildError> {
        self.put(&[value])
    }

    fn u16(&mut self, value: u16) -> Result<(), BuildError> {
        self.put(&value.to_be_bytes())
    }

    /// A length-prefixed field whose length was checked against [`MAX_STRING_LEN`].
    fn binary(&mut self, bytes: &[u8]) -> Result<(), BuildError> {
        let len = u16::try_from(bytes.len()).map_err(|_| BuildError::TooLarge {
            len: bytes.len(),
            limit: MAX_STRING_LEN,
        })?;
        self.u16(len)?;
        self.put(bytes)
    }
}

/// The bytes a length-prefixed field takes.
const fn field_len(bytes: &[u8]) -> usize {
    2usize.saturating_add(bytes.len())
}

/// Checks a string field: at most [`MAX_STRING_LEN`] bytes, no U+0000.
fn check_string(s: &str, what: &'static str) -> Result<(), BuildError> {
    if s.len() > MAX_STRING_LEN {
        return Err(BuildError::TooLarge {
            len: s.len(),
            limit: MAX_STRING_LEN,
        });
    }
    if s.contains('\0') {
        return Err(BuildError::InvalidArgument(what));
    }
    Ok(())
}

impl<'a> PacketRepr<'a> {
    /// The packet's type.
    #[must_use]
    pub const fn packet_type(&self) -> PacketType {
        match self {
            PacketRepr::Connect(_) => PacketType::Connect,
            PacketRepr::Connack(_) => PacketType::Connack,
            PacketRepr::Publish(_) => PacketType::Publish,
            PacketRepr::Puback(_) => PacketType::Puback,
            PacketRepr::Subscribe(_) => PacketType::Subscribe,
            PacketRepr::Suback(_) => PacketType::Suback,
            PacketRepr::Unsubscribe(_) => PacketType::Unsubscribe,
            PacketRepr::Unsuback(_) => PacketType::Unsuback,
            PacketRepr::Pingreq => PacketType::Pingreq,
            PacketRepr::Pingresp => PacketType::Pingresp,
            PacketRepr::Disconnect => PacketType::Disconnect,
        }
    }

    /// Decodes a whole packet from peer bytes: [`Packet::new_checked`] then
    /// [`PacketRepr::parse`].
    pub fn parse_bytes(bytes: &'a [u8]) -> Result<Self, ParseError> {
        Self::parse(&Packet::new_checked(bytes)?)
    }

    /// Decodes a checked packet, applying every rule listed in the module docs.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&'a T>) -> Result<Self, ParseError> {
        packet.check_len()?;
        let Some(kind) = packet.packet_type() else {
            return Err(malformed(HEADER_WHAT, DecodeError::BadValue));
        };
        let flags = packet.flags();
        if kind.fixed_flags().is_some_and(|fixed| flags != fixed) {
            return Err(malformed(kind.what(), DecodeError::BadValue));
        }
        let mut r = Reader {
            bytes: packet.body(),
            what: kind.what(),
        };
        let repr = match kind {
            PacketType::Connect => PacketRepr::Connect(parse_connect(&mut r)?),
            PacketType::Connack => {
                let ack = r.u8()?;
                let code = r.u8()?;
                let code = ConnackCode::from_u8(code).ok_or(r.bad(DecodeError::BadValue))?;
                let session_present = ack & SESSION_PRESENT_BIT != 0;
                // Reserved bits, and a session present on a refusal [MQTT-3.2.2-4].
                if ack & !SESSION_PRESENT_BIT != 0
                    || (session_present && code != ConnackCode::Accepted)
                {
                    return Err(r.bad(DecodeError::BadValue));
                }
                PacketRepr::Connack(ConnackRepr {
                    session_present,
                    code,
                })
            }
            PacketType::Publish => {
                let qos = QoS::from_bits((flags & QOS_MASK) >> QOS_SHIFT, kind.what())?;
                let dup = flags & DUP_BIT != 0;
                if dup && qos == QoS::AtMostOnce {
                    return Err(r.bad(DecodeError::BadValue));
                }
                let topic = r.string()?;
                if !is_valid_topic_name(topic) {
                    return Err(r.bad(DecodeError::BadValue));
                }
                let qos = match qos {
                    QoS::AtMostOnce => QosPid::AtMostOnce,
                    QoS::AtLeastOnce => QosPid::AtLeastOnce(r.packet_id()?),
                };
                PacketRepr::Publish(PublishRepr {
                    topic,
                    qos,
                    dup,
                    retain: flags & RETAIN_BIT != 0,
                    payload: r.rest(),
                })
            }
            PacketType::Puback => PacketRepr::Puback(r.packet_id()?),
            PacketType::Pubrec | PacketType::Pubrel | PacketType::Pubcomp => {
                return Err(ParseError::Unsupported(Unsupported::Qos2));
            }
            PacketType::Subscribe => {
                let packet_id = r.packet_id()?;
                let mut filters = Vec::new();
                // At least one pair: an empty payload fails the first read [MQTT-3.8.3-3].
                loop {
                    let filter = r.string()?;
                    if !is_valid_topic_filter(filter) {
                        return Err(r.bad(DecodeError::BadValue));
                    }
                    let options = r.u8()?;
                    if options & SUBSCRIBE_RESERVED != 0 {
                        return Err(r.bad(DecodeError::BadValue));
                    }
                    let qos = QoS::from_bits(options, kind.what())?;
                    filters.push(Subscription { filter, qos });
                    if r.is_empty() {
                        break;
                    }
                }
                PacketRepr::Subscribe(SubscribeRepr { packet_id, filters })
            }
            PacketType::Suback => {
                let packet_id = r.packet_id()?;
                let mut codes = Vec::new();
                loop {
                    let code = match r.u8()? {
                        SUBACK_FAILURE => SubackCode::Failure,
                        b @ 0..=2 => SubackCode::Granted(QoS::from_bits(b, kind.what())?),
                        _ => return Err(r.bad(DecodeError::BadValue)),
                    };
                    codes.push(code);
                    if r.is_empty() {
                        break;
                    }
                }
                PacketRepr::Suback(SubackRepr { packet_id, codes })
            }
            PacketType::Unsubscribe => {
                let packet_id = r.packet_id()?;
                let mut filters = Vec::new();
                loop {
                    let filter = r.string()?;
                    if !is_valid_topic_filter(filter) {
                        return Err(r.bad(DecodeError::BadValue));
                    }
                    filters.push(filter);
                    if r.is_empty() {
                        break;
                    }
                }
                PacketRepr::Unsubscribe(UnsubscribeRepr { packet_id, filters })
            }
            PacketType::Unsuback => PacketRepr::Unsuback(r.packet_id()?),
            PacketType::Pingreq => PacketRepr::Pingreq,
            PacketType::Pingresp => PacketRepr::Pingresp,
            PacketType::Disconnect => PacketRepr::Disconnect,
        };
        r.finish()?;
        Ok(repr)
    }

    /// The remaining length: everything after the fixed header (saturating; a packet over
    /// [`MAX_REMAINING_LEN`] cannot be emitted).
    #[must_use]
    pub fn remaining_len(&self) -> usize {
        match self {
            PacketRepr::Connect(c) => {
                // Protocol name, level, flags, keepalive: 10 bytes.
                let mut len = 10usize.saturating_add(field_len(c.client_id.as_bytes()));
                if let Some(user) = c.username {
                    len = len.saturating_add(field_len(user.as_bytes()));
                }
                if let Some(pass) = c.password {
                    len = len.saturating_add(field_len(pass));
                }
                len
            }
            PacketRepr::Connack(_) | PacketRepr::Puback(_) | PacketRepr::Unsuback(_) => 2,
            PacketRepr::Publish(p) => {
                let id = if p.qos.packet_id().is_some() { 2 } else { 0 };
                field_len(p.topic.as_bytes())
                    .saturating_add(id)
                    .saturating_add(p.payload.len())
            }
            PacketRepr::Subscribe(s) => s.filters.iter().fold(2usize, |len, f| {
                len.saturating_add(field_len(f.filter.as_bytes()))
                    .saturating_add(1)
            }),
            PacketRepr::Suback(s) => 2usize.saturating_add(s.codes.len()),
            PacketRepr::Unsubscribe(u) => u
                .filters
                .iter()
                .fold(2usize, |len, f| len.saturating_add(field_len(f.as_bytes()))),
            PacketRepr::Pingreq | PacketRepr::Pingresp | PacketRepr::Disconnect => 0,
        }
    }

    /// The whole packet's length: fixed header and remaining length.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        let remaining = self.remaining_len();
        remaining
            .saturating_add(1)
            .saturating_add(remaining_len_size(remaining))
    }

    /// The low nibble of byte 0.
    fn header_flags(&self) -> u8 {
        match self {
            PacketRepr::Publish(p) => {
                let mut flags = u8::from(p.qos.qos()) << QOS_SHIFT;
                if p.dup {
                    flags |= DUP_BIT;
                }
                if p.retain {
                    flags |= RETAIN_BIT;
                }
                flags
            }
            other => other.packet_type().fixed_flags().unwrap_or(0),
        }
    }

    /// Checks every rule the standard puts on the sender (see the module docs).
    fn check(&self) -> Result<(), BuildError> {
        match self {
            PacketRepr::Connect(c) => {
                check_string(c.client_id, "a client id may not contain U+0000")?;
                if let Some(user) = c.username {
                    check_string(user, "a user name may not contain U+0000")?;
                }
                if let Some(pass) = c.password {
                    if pass.len() > MAX_STRING_LEN {
                        return Err(BuildError::TooLarge {
                            len: pass.len(),
                            limit: MAX_STRING_LEN,
                        });
                    }
                    if c.username.is_none() {
                        return Err(BuildError::InvalidArgument(
                            "a CONNECT password needs a user name",
                        ));
                    }
                }
                if c.client_id.is_empty() && !c.clean_session {
                    return Err(BuildError::InvalidArgument(
                        "an empty client id needs a clean session",
                    ));
                }
            }
            PacketRepr::Publish(p) => {
                check_string(p.topic, "a topic may not contain U+0000")?;
                if !is_valid_topic_name(p.topic) {
                    return Err(BuildError::InvalidArgument(
                        "a PUBLISH topic must be non-empty and free of wildcards",
                    ));
                }
                if p.dup && p.qos == QosPid::AtMostOnce {
                    return Err(BuildError::InvalidArgument("DUP is only for QoS 1"));
                }
            }
            PacketRepr::Subscribe(s) => {
                if s.filters.is_empty() {
                    return Err(BuildError::InvalidArgument(
                        "a SUBSCRIBE needs at least one filter",
                    ));
                }
                for f in &s.filters {
                    check_filter(f.filter)?;
                }
            }
            PacketRepr::Suback(s) => {
                if s.codes.is_empty() {
                    return Err(BuildError::InvalidArgument(
                        "a SUBACK needs at least one return code",
                    ));
                }
            }
            PacketRepr::Unsubscribe(u) => {
                if u.filters.is_empty() {
                    return Err(BuildError::InvalidArgument(
                        "an UNSUBSCRIBE needs at least one filter",
                    ));
                }
                for f in &u.filters {
                    check_filter(f)?;
                }
            }
            PacketRepr::Connack(c) => {
                if c.session_present && c.code != ConnackCode::Accepted {
                    return Err(BuildError::InvalidArgument(
                        "a refused CONNACK has no session",
                    ));
                }
            }
            PacketRepr::Puback(_)
            | PacketRepr::Unsuback(_)
            | PacketRepr::Pingreq
            | PacketRepr::Pingresp
            | PacketRepr::Disconnect => {}
        }
        let remaining = self.remaining_len();
        if remaining > MAX_REMAINING_LEN {
            return Err(BuildError::TooLarge {
                len: remaining,
                limit: MAX_REMAINING_LEN,
            });
        }
        Ok(())
    }

    /// Writes the packet into the first [`PacketRepr::buffer_len`] bytes of `packet`, after
    /// checking every rule the standard puts on the sender.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
    ) -> Result<(), BuildError> {
        self.check()?;
        let needed = self.buffer_len();
        let buf = packet.buffer.as_mut();
        if buf.len() < needed {
            return Err(BuildError::BufferTooShort {
                needed,
                available: buf.len(),
            });
        }
        let (len_bytes, len_used) = encode_remaining_len(self.remaining_len())?;
        let mut w = Writer { buf, pos: 0 };
        w.u8(((self.packet_type() as u8) << TYPE_SHIFT) | self.header_flags())?;
        w.put(len_bytes.get(..len_used).unwrap_or(&[]))?;
        self.emit_body(&mut w)
    }

    fn emit_body(&self, w: &mut Writer<'_>) -> Result<(), BuildError> {
        match self {
            PacketRepr::Connect(c) => {
                w.binary(PROTOCOL_NAME.as_bytes())?;
                w.u8(PROTOCOL_LEVEL)?;
                let mut flags = 0;
                if c.username.is_some() {
                    flags |= connect_flag::USERNAME;
                }
                if c.password.is_some() {
                    flags |= connect_flag::PASSWORD;
                }
                if c.clean_session {
                    flags |= connect_flag::CLEAN_SESSION;
                }
                w.u8(flags)?;
                w.u16(c.keep_alive)?;
                w.binary(c.client_id.as_bytes())?;
                if let Some(user) = c.username {
                    w.binary(user.as_bytes())?;
                }
                if let Some(pass) = c.password {
                    w.binary(pass)?;
                }
            }
            PacketRepr::Connack(c) => {
                w.u8(u8::from(c.session_present))?;
                w.u8(c.code as u8)?;
            }
            PacketRepr::Publish(p) => {
                w.binary(p.topic.as_bytes())?;
                if let Some(id) = p.qos.packet_id() {
                    w.u16(id.get())?;
                }
                w.put(p.payload)?;
            }
            PacketRepr::Puback(id) | PacketRepr::Unsuback(id) => w.u16(id.get())?,
            PacketRepr::Subscribe(s) => {
                w.u16(s.packet_id.get())?;
                for f in &s.filters {
                    w.binary(f.filter.as_bytes())?;
                    w.u8(u8::from(f.qos))?;
                }
            }
            PacketRepr::Suback(s) => {
                w.u16(s.packet_id.get())?;
                for code in &s.codes {
                    w.u8(code.to_u8())?;
                }
            }
            PacketRepr::Unsubscribe(u) => {
                w.u16(u.packet_id.get())?;
                for f in &u.filters {
                    w.binary(f.as_bytes())?;
                }
            }
            PacketRepr::Pingreq | PacketRepr::Pingresp | PacketRepr::Disconnect => {}
        }
        Ok(())
    }

    /// Appends the packet to `buf` and returns its length; on error `buf` is unchanged.
    pub fn append_to(&self, buf: &mut Vec<u8>) -> Result<usize, BuildError> {
        // Check before growing the buffer, so an oversized packet allocates nothing.
        self.check()?;
        let len = self.buffer_len();
        let start = buf.len();
        buf.resize(start.saturating_add(len), 0);
        let result = match buf.get_mut(start..) {
            Some(tail) => self.emit(&mut Packet::new_unchecked(tail)),
            None => Err(BuildError::BufferTooShort {
                needed: len,
                available: 0,
            }),
        };
        match result {
            Ok(()) => Ok(len),
            Err(e) => {
                buf.truncate(start);
                Err(e)
            }
        }
    }
}

fn check_filter(filter: &str) -> Result<(), BuildError> {
    check_string(filter, "a topic filter may not contain U+0000")?;
    if is_valid_topic_filter(filter) {
        Ok(())
    } else {
        Err(BuildError::InvalidArgument(
            "a topic filter must be non-empty, with + and # only as whole levels and # last",
        ))
    }
}

fn parse_connect<'a>(r: &mut Reader<'a>) -> Result<ConnectRepr<'a>, ParseError> {
    let name = r.binary()?;
    let level = r.u8()?;
    match (name, level) {
        (b"MQTT", PROTOCOL_LEVEL) => {}
        // MQTT 3.1 (`MQIsdp`) and MQTT 5 are well-formed, just not ours.
        (b"MQTT" | b"MQIsdp", other) => {
            return Err(ParseError::Unsupported(Unsupported::ProtocolLevel(other)));
        }
        _ => return Err(r.bad(DecodeError::BadValue)),
    }
    let flags = r.u8()?;
    if flags & connect_flag::RESERVED != 0 {
        return Err(r.bad(DecodeError::BadValue));
    }
    if flags & connect_flag::WILL != 0 {
        return Err(ParseError::Unsupported(Unsupported::Will));
    }
    let has_user = flags & connect_flag::USERNAME != 0;
    let has_pass = flags & connect_flag::PASSWORD != 0;
    // Will QoS and retain without a will [MQTT-3.1.2-11, -15]; a password without a user
    // name [MQTT-3.1.2-22].
    if flags & (connect_flag::WILL_QOS | connect_flag::WILL_RETAIN) != 0 || (has_pass && !has_user)
    {
        return Err(r.bad(DecodeError::BadValue));
    }
    let keep_alive = r.u16()?;
    let client_id = r.string()?;
    let clean_session = flags & connect_flag::CLEAN_SESSION != 0;
    if client_id.is_empty() && !clean_session {
        return Err(r.bad(DecodeError::BadValue));
    }
    let username = if has_user { Some(r.string()?) } else { None };
    let password = if has_pass { Some(r.binary()?) } else { None };
    Ok(ConnectRepr {
        client_id,
        clean_session,
        keep_alive,
        username,
        password,
    })
}

impl fmt::Display for PacketRepr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MQTT {}", self.packet_type())?;
        match self {
            PacketRepr::Connect(c) => write!(
                f,
                " client {:?} keepalive {}s{}",
                c.client_id,
                c.keep_alive,
                if c.clean_session { " clean" } else { "" }
            ),
            PacketRepr::Connack(c) => write!(
                f,
                " {}{}",
                c.code.name(),
                if c.session_present {
                    " session present"
                } else {
                    ""
                }
            ),
            PacketRepr::Publish(p) => {
                write!(f, " {:?} qos {}", p.topic, p.qos.qos() as u8)?;
                if let Some(id) = p.qos.packet_id() {
                    write!(f, " id {id}")?;
                }
                if p.dup {
                    f.write_str(" dup")?;
                }
                if p.retain {
                    f.write_str(" retain")?;
                }
                write!(f, " len {}", p.payload.len())
            }
            PacketRepr::Puback(id) | PacketRepr::Unsuback(id) => write!(f, " id {id}"),
            PacketRepr::Subscribe(s) => {
                write!(f, " id {}", s.packet_id)?;
                for sub in &s.filters {
                    write!(f, " {:?}@{}", sub.filter, sub.qos as u8)?;
                }
                Ok(())
            }
            PacketRepr::Suback(s) => {
                write!(f, " id {}", s.packet_id)?;
                for code in &s.codes {
                    write!(f, " {:#04x}", code.to_u8())?;
                }
                Ok(())
            }
            PacketRepr::Unsubscribe(u) => {
                write!(f, " id {}", u.packet_id)?;
                for filter in &u.filters {
                    write!(f, " {filter:?}")?;
                }
                Ok(())
            }
            PacketRepr::Pingreq | PacketRepr::Pingresp | PacketRepr::Disconnect => Ok(()),
        }
    }
}

/// Cuts a byte stream into whole packets, refusing any longer than its cap (see the module
/// docs for the failure rule).
#[derive(Clone, Debug)]
pub struct Decoder {
    max_packet_len: usize,
    /// The packet being assembled: its header so far, then its body.
    partial: Vec<u8>,
    /// The whole packet's length, once its fixed header is complete.
    expected: Option<usize>,
    /// Packets completed, then at most one framing error, in stream order.
    ready: VecDeque<Result<Vec<u8>, Malformed>>,
    failed: bool,
}

impl Decoder {
    /// A decoder yielding packets of at most `max_packet_len` bytes, fixed header included.
    #[must_use]
    pub const fn new(max_packet_len: usize) -> Self {
        Decoder {
            max_packet_len,
            partial: Vec::new(),
            expected: None,
            ready: VecDeque::new(),
            failed: false,
        }
    }

    /// The cap given at construction.
    #[must_use]
    pub const fn max_packet_len(&self) -> usize {
        self.max_packet_len
    }

    /// Whether a framing error has ended the stream (until [`Decoder::reset`]).
    #[must_use]
    pub const fn is_failed(&self) -> bool {
        self.failed
    }

    /// Bytes held of the packet being assembled.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// Forgets everything, as for a new connection.
    pub fn reset(&mut self) {
        *self = Decoder::new(self.max_packet_len);
    }

    /// Takes the next chunk of the stream, of any size. Completed packets and a framing
    /// error wait in [`Decoder::next_packet`]; after an error the rest is ignored.
    pub fn push(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() && !self.failed {
            match self.expected {
                None => {
                    let Some((&byte, rest)) = chunk.split_first() else {
                        break;
                    };
                    chunk = rest;
                    self.header_byte(byte);
                }
                Some(total) => {
                    let take = total.saturating_sub(self.partial.len()).min(chunk.len());
                    let (head, rest) = chunk.split_at(take);
                    self.partial.extend_from_slice(head);
                    chunk = rest;
                    self.complete_if_whole(total);
                }
            }
        }
    }

    /// The next whole packet, or the framing error that ended the stream, in stream order.
    pub fn next_packet(&mut self) -> Option<Result<Vec<u8>, Malformed>> {
        self.ready.pop_front()
    }

    fn header_byte(&mut self, byte: u8) {
        if self.partial.is_empty() && PacketType::from_u8(byte >> TYPE_SHIFT).is_none() {
            self.fail(DecodeError::BadValue);
            return;
        }
        self.partial.push(byte);
        match decode_remaining_len(self.partial.get(1..).unwrap_or(&[])) {
            Ok((remaining, len_bytes)) => {
                let total = 1usize.saturating_add(len_bytes).saturating_add(remaining);
                if total > self.max_packet_len {
                    self.fail(DecodeError::TooLarge {
                        limit: self.max_packet_len,
                    });
                    return;
                }
                self.partial.reserve_exact(total - self.partial.len());
                self.expected = Some(total);
                self.complete_if_whole(total);
            }
            Err(DecodeError::Truncated { .. }) => {}
            Err(reason) => self.fail(reason),
        }
    }

    fn complete_if_whole(&mut self, total: usize) {
        if self.partial.len() >= total {
            self.ready.push_back(Ok(core::mem::take(&mut self.partial)));
            self.expected = None;
        }
    }

    fn fail(&mut self, reason: DecodeError) {
        self.ready.push_back(Err(Malformed {
            what: HEADER_WHAT,
            reason,
        }));
        self.failed = true;
        self.partial = Vec::new();
        self.expected = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;
    use alloc::string::ToString;
    use alloc::vec;

    fn id(n: u16) -> PacketId {
        PacketId::new(n).unwrap()
    }

    fn emit(repr: &PacketRepr<'_>) -> Vec<u8> {
        let mut buf = vec![0xEE];
        let len = repr.append_to(&mut buf).unwrap();
        assert_eq!(len, repr.buffer_len());
        assert_eq!(buf.len(), len + 1, "appends after what is there");
        buf.remove(0);
        buf
    }

    /// Emits to exactly `bytes`, and `bytes` parses back to the same repr.
    fn vector(repr: PacketRepr<'_>, bytes: &[u8]) {
        assert_eq!(emit(&repr), bytes, "{repr}");
        assert_eq!(PacketRepr::parse_bytes(bytes).unwrap(), repr);
    }

    fn bad(what: &'static str, reason: DecodeError) -> ParseError {
        ParseError::Malformed(Malformed { what, reason })
    }

    #[test]
    fn connect_vectors() {
        vector(
            PacketRepr::Connect(ConnectRepr {
                client_id: "otaweb",
                clean_session: true,
                keep_alive: 60,
                username: Some("u"),
                password: Some(b"p"),
            }),
            &[
                0x10, 0x18, // CONNECT, remaining 24
                0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, // protocol name and level
                0xC2, // user name, password, clean session
                0x00, 0x3C, // keepalive 60 s
                0x00, 0x06, b'o', b't', b'a', b'w', b'e', b'b', // client id
                0x00, 0x01, b'u', // user name
                0x00, 0x01, b'p', // password
            ],
        );
        vector(
            PacketRepr::Connect(ConnectRepr {
                client_id: "a",
                clean_session: false,
                keep_alive: 0,
                username: None,
                password: None,
            }),
            &[
                0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x00, 0x00, 0x00, 0x00, 0x01,
                b'a',
            ],
        );
        // A user name alone, and an empty client id with a clean session.
        vector(
            PacketRepr::Connect(ConnectRepr {
                client_id: "",
                clean_session: true,
                keep_alive: 0x0102,
                username: Some("dk&pk"),
                password: None,
            }),
            &[
                0x10, 0x13, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x82, 0x01, 0x02, 0x00, 0x00,
                0x00, 0x05, b'd', b'k', b'&', b'p', b'k',
            ],
        );
    }

    #[test]
    fn connect_refusals() {
        let base = [
            0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x00, 0x00, 0x01,
            b'a',
        ];
        assert!(PacketRepr::parse_bytes(&base).is_ok());
        let with = |i: usize, v: u8| {
            let mut b = base;
            b[i] = v;
            PacketRepr::parse_bytes(&b).map(|_| ())
        };
        let what = "MQTT CONNECT packet";
        // Fixed header flags must be 0.
        assert_eq!(with(0, 0x11), Err(bad(what, DecodeError::BadValue)));
        // Wrong protocol name, other protocol levels.
        assert_eq!(with(4, b'X'), Err(bad(what, DecodeError::BadValue)));
        assert_eq!(
            with(8, 0x05),
            Err(ParseError::Unsupported(Unsupported::ProtocolLevel(5)))
        );
        assert_eq!(
            with(8, 0x03),
            Err(ParseError::Unsupported(Unsupported::ProtocolLevel(3)))
        );
        // Flags: reserved bit, will, will QoS/retain without a will, password without user.
        assert_eq!(with(9, 0x03), Err(bad(what, DecodeError::BadValue)));
        assert_eq!(
            with(9, 0x06),
            Err(ParseError::Unsupported(Unsupported::Will))
        );
        assert_eq!(with(9, 0x0A), Err(bad(what, DecodeError::BadValue)));
        assert_eq!(with(9, 0x22), Err(bad(what, DecodeError::BadValue)));
        assert_eq!(with(9, 0x42), Err(bad(what, DecodeError::BadValue)));
        // A user name flag whose field is missing: the string read runs out.
        assert_eq!(
            with(9, 0x82),
            Err(bad(
                what,
                DecodeError::Truncated {
                    needed: 2,
                    available: 0
                }
            ))
        );
        // A client id longer than the packet.
        assert_eq!(
            with(13, 0x05),
            Err(bad(
                what,
                DecodeError::Truncated {
                    needed: 5,
                    available: 1
                }
            ))
        );
        // An empty client id without a clean session.
        let empty_id = [
            0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(
            PacketRepr::parse_bytes(&empty_id),
            Err(bad(what, DecodeError::BadValue))
        );

        // The builder refuses what the parser refuses.
        let c = ConnectRepr {
            client_id: "a",
            clean_session: true,
            keep_alive: 0,
            username: None,
            password: Some(b"p"),
        };
        assert_eq!(
            PacketRepr::Connect(c).append_to(&mut Vec::new()),
            Err(BuildError::InvalidArgument(
                "a CONNECT password needs a user name"
            ))
        );
        let c = ConnectRepr {
            client_id: "",
            clean_session: false,
            password: None,
            ..c
        };
        assert!(matches!(
            PacketRepr::Connect(c).append_to(&mut Vec::new()),
            Err(BuildError::InvalidArgument(_))
        ));
        let c = ConnectRepr {
            client_id: "a\0b",
            clean_session: true,
            ..c
        };
        assert!(matches!(
            PacketRepr::Connect(c).append_to(&mut Vec::new()),
            Err(BuildError::InvalidArgument(_))
        ));
        let long = "x".repeat(MAX_STRING_LEN + 1);
        let c = ConnectRepr {
            client_id: &long,
            ..c
        };
        assert_eq!(
            PacketRepr::Connect(c).append_to(&mut Vec::new()),
            Err(BuildError::TooLarge {
                len: MAX_STRING_LEN + 1,
                limit: MAX_STRING_LEN
            })
        );
    }

    #[test]
    fn connack_vectors_and_codes() {
        vector(
            PacketRepr::Connack(ConnackRepr {
                session_present: false,
                code: ConnackCode::Accepted,
            }),
            &[0x20, 0x02, 0x00, 0x00],
        );
        vector(
            PacketRepr::Connack(ConnackRepr {
                session_present: true,
                code: ConnackCode::Accepted,
            }),
            &[0x20, 0x02, 0x01, 0x00],
        );
        for code in 0..=5u8 {
            let c = ConnackCode::from_u8(code).unwrap();
            vector(
                PacketRepr::Connack(ConnackRepr {
                    session_present: false,
                    code: c,
                }),
                &[0x20, 0x02, 0x00, code],
            );
            assert_eq!(c as u8, code);
            assert_eq!(c.refusal().is_none(), code == 0);
            if let Some(r) = c.refusal() {
                assert_eq!(r.vendor, Vendor::Mqtt);
                assert_eq!(r.code, i64::from(code));
                assert_eq!(r.retryable, code == 3);
            }
        }
        assert_eq!(
            ConnackCode::BadUsernameOrPassword.refusal().unwrap(),
            Refusal {
                vendor: Vendor::Mqtt,
                code: 4,
                name: "CONNACK_REFUSED_BAD_USERNAME_PASSWORD",
                meaning:
                    "the broker rejected the user name or password; check the device credentials",
                retryable: false,
            }
        );
        assert_eq!(
            ConnackCode::NotAuthorized.to_string(),
            "CONNACK_REFUSED_NOT_AUTHORIZED (5): the broker does not allow this client to \
             connect; check its permissions"
        );
        let what = "MQTT CONNACK packet";
        for bytes in [
            &[0x20, 0x02, 0x00, 0x06][..], // undefined code
            &[0x20, 0x02, 0x02, 0x00],     // reserved ack bit
            &[0x20, 0x02, 0x01, 0x05],     // session present on a refusal
            &[0x21, 0x02, 0x00, 0x00],     // flags
        ] {
            assert_eq!(
                PacketRepr::parse_bytes(bytes),
                Err(bad(what, DecodeError::BadValue)),
                "{bytes:02x?}"
            );
        }
        assert_eq!(
            PacketRepr::parse_bytes(&[0x20, 0x01, 0x00]),
            Err(bad(
                what,
                DecodeError::Truncated {
                    needed: 1,
                    available: 0
                }
            ))
        );
        assert_eq!(
            PacketRepr::parse_bytes(&[0x20, 0x03, 0x00, 0x00, 0x00]),
            Err(bad(what, DecodeError::TrailingBytes))
        );
    }

    #[test]
    fn publish_vectors() {
        vector(
            PacketRepr::Publish(PublishRepr {
                topic: "a/b",
                qos: QosPid::AtMostOnce,
                dup: false,
                retain: false,
                payload: b"hi",
            }),
            &[0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'],
        );
        vector(
            PacketRepr::Publish(PublishRepr {
                topic: "a/b",
                qos: QosPid::AtLeastOnce(id(10)),
                dup: true,
                retain: true,
                payload: b"hi",
            }),
            &[
                0x3B, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, b'h', b'i',
            ],
        );
        // Retain alone, an empty payload.
        vector(
            PacketRepr::Publish(PublishRepr {
                topic: "t",
                qos: QosPid::AtMostOnce,
                dup: false,
                retain: true,
                payload: b"",
            }),
            &[0x31, 0x03, 0x00, 0x01, b't'],
        );
        vector(
            PacketRepr::Publish(PublishRepr {
                topic: "t",
                qos: QosPid::AtLeastOnce(id(0xFFFF)),
                dup: false,
                retain: false,
                payload: &[0x00],
            }),
            &[0x32, 0x06, 0x00, 0x01, b't', 0xFF, 0xFF, 0x00],
        );
    }

    #[test]
    fn publish_refusals() {
        let what = "MQTT PUBLISH packet";
        // QoS 2, and the QoS 2 acknowledgements.
        for bytes in [
            &[0x34, 0x05, 0x00, 0x01, b't', 0x00, 0x01][..],
            &[0x50, 0x02, 0x00, 0x01],
            &[0x62, 0x02, 0x00, 0x01],
            &[0x70, 0x02, 0x00, 0x01],
        ] {
            assert_eq!(
                PacketRepr::parse_bytes(bytes),
                Err(ParseError::Unsupported(Unsupported::Qos2)),
                "{bytes:02x?}"
            );
        }
        // PUBREL with the wrong flags is malformed before it is unsupported.
        assert_eq!(
            PacketRepr::parse_bytes(&[0x60, 0x02, 0x00, 0x01]),
            Err(bad("MQTT PUBREL packet", DecodeError::BadValue))
        );
        for (bytes, reason) in [
            // QoS 3.
            (
                &[0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01][..],
                DecodeError::BadValue,
            ),
            // DUP on QoS 0.
            (&[0x38, 0x03, 0x00, 0x01, b't'], DecodeError::BadValue),
            // Zero packet id on QoS 1.
            (
                &[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x00],
                DecodeError::BadValue,
            ),
            // Invalid UTF-8 topic, U+0000 in the topic, wildcards, an empty topic.
            (&[0x30, 0x03, 0x00, 0x01, 0xFF], DecodeError::BadValue),
            (&[0x30, 0x04, 0x00, 0x02, 0xC3, 0x28], DecodeError::BadValue),
            (&[0x30, 0x03, 0x00, 0x01, 0x00], DecodeError::BadValue),
            (
                &[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'+'],
                DecodeError::BadValue,
            ),
            (&[0x30, 0x03, 0x00, 0x01, b'#'], DecodeError::BadValue),
            (&[0x30, 0x02, 0x00, 0x00], DecodeError::BadValue),
            // A topic longer than the packet.
            (
                &[0x30, 0x04, 0x00, 0x05, b'a', b'b'],
                DecodeError::Truncated {
                    needed: 5,
                    available: 2,
                },
            ),
            // No room for the packet id.
            (
                &[0x32, 0x04, 0x00, 0x01, b't', 0x00],
                DecodeError::Truncated {
                    needed: 2,
                    available: 1,
                },
            ),
            // No topic length at all.
            (
                &[0x30, 0x01, 0x00],
                DecodeError::Truncated {
                    needed: 2,
                    available: 1,
                },
            ),
        ] {
            assert_eq!(
                PacketRepr::parse_bytes(bytes),
                Err(bad(what, reason)),
                "{bytes:02x?}"
            );
        }
        // The builder refuses bad topics and DUP on QoS 0.
        let p = PublishRepr {
            topic: "a/+",
            qos: QosPid::AtMostOnce,
            dup: false,
            retain: false,
            payload: b"",
        };
        for topic in ["a/+", "#", "", "a\0"] {
            assert!(matches!(
                PacketRepr::Publish(PublishRepr { topic, ..p }).append_to(&mut Vec::new()),
                Err(BuildError::InvalidArgument(_))
            ));
        }
        assert_eq!(
            PacketRepr::Publish(PublishRepr {
                topic: "t",
                dup: true,
                ..p
            })
            .append_to(&mut Vec::new()),
            Err(BuildError::InvalidArgument("DUP is only for QoS 1"))
        );
    }

    #[test]
    fn acknowledgement_and_empty_vectors() {
        vector(PacketRepr::Puback(id(10)), &[0x40, 0x02, 0x00, 0x0A]);
        vector(PacketRepr::Unsuback(id(0x0102)), &[0xB0, 0x02, 0x01, 0x02]);
        vector(PacketRepr::Pingreq, &[0xC0, 0x00]);
        vector(PacketRepr::Pingresp, &[0xD0, 0x00]);
        vector(PacketRepr::Disconnect, &[0xE0, 0x00]);
        for (bytes, what, reason) in [
            (
                &[0x40, 0x02, 0x00, 0x00][..],
                "MQTT PUBACK packet",
                DecodeError::BadValue,
            ),
            (
                &[0x42, 0x02, 0x00, 0x01],
                "MQTT PUBACK packet",
                DecodeError::BadValue,
            ),
            (
                &[0xB0, 0x02, 0x00, 0x00],
                "MQTT UNSUBACK packet",
                DecodeError::BadValue,
            ),
            (&[0xC1, 0x00], "MQTT PINGREQ packet", DecodeError::BadValue),
            (&[0xD8, 0x00], "MQTT PINGRESP packet", DecodeError::BadValue),
            (
                &[0xE2, 0x00],
                "MQTT DISCONNECT packet",
                DecodeError::BadValue,
            ),
            (
                &[0xC0, 0x01, 0x00],
                "MQTT PINGREQ packet",
                DecodeError::TrailingBytes,
            ),
            (
                &[0x40, 0x03, 0x00, 0x01, 0x00],
                "MQTT PUBACK packet",
                DecodeError::TrailingBytes,
            ),
        ] {
            assert_eq!(
                PacketRepr::parse_bytes(bytes),
                Err(bad(what, reason)),
                "{bytes:02x?}"
            );
        }
    }

    #[test]
    fn subscribe_vectors_and_refusals() {
        vector(
            PacketRepr::Subscribe(SubscribeRepr {
                packet_id: id(1),
                filters: vec![
                    Subscription {
                        filter: "a/#",
                        qos: QoS::AtLeastOnce,
                    },
                    Subscription {
                        filter: "b",
                        qos: QoS::AtMostOnce,
                    },
                ],
            }),
            &[
                0x82, 0x0C, 0x00, 0x01, // SUBSCRIBE, remaining 12, packet id 1
                0x00, 0x03, b'a', b'/', b'#', 0x01, // "a/#" at QoS 1
                0x00, 0x01, b'b', 0x00, // "b" at QoS 0
            ],
        );
        vector(
            PacketRepr::Suback(SubackRepr {
                packet_id: id(1),
                codes: vec![
                    SubackCode::Granted(QoS::AtLeastOnce),
                    SubackCode::Failure,
                    SubackCode::Granted(QoS::AtMostOnce),
                ],
            }),
            &[0x90, 0x05, 0x00, 0x01, 0x01, 0x80, 0x00],
        );
        let what = "MQTT SUBSCRIBE packet";
        for (bytes, err) in [
            // Flags must be 0b0010.
            (
                &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00][..],
                bad(what, DecodeError::BadValue),
            ),
            // Reserved option bits, QoS 3, QoS 2.
            (
                &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x04],
                bad(what, DecodeError::BadValue),
            ),
            (
                &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x03],
                bad(what, DecodeError::BadValue),
            ),
            (
                &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x02],
                ParseError::Unsupported(Unsupported::Qos2),
            ),
            // No filter at all, a zero packet id, a filter with a bad wildcard.
            (
                &[0x82, 0x02, 0x00, 0x01],
                bad(
                    what,
                    DecodeError::Truncated {
                        needed: 2,
                        available: 0,
                    },
                ),
            ),
            (
                &[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b'a', 0x00],
                bad(what, DecodeError::BadValue),
            ),
            (
                &[0x82, 0x07, 0x00, 0x01, 0x00, 0x02, b'#', b'a', 0x00],
                bad(what, DecodeError::BadValue),
            ),
            // A filter without its QoS byte.
            (
                &[0x82, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'],
                bad(
                    what,
                    DecodeError::Truncated {
                        needed: 1,
                        available: 0,
                    },
                ),
            ),
        ] {
            assert_eq!(PacketRepr::parse_bytes(bytes), Err(err), "{bytes:02x?}");
        }
        let what = "MQTT SUBACK packet";
        for (bytes, err) in [
            (
                &[0x90, 0x03, 0x00, 0x01, 0x03][..],
                bad(what, DecodeError::BadValue),
            ),
            (
                &[0x90, 0x03, 0x00, 0x01, 0x81],
                bad(what, DecodeError::BadValue),
            ),
            (
                &[0x90, 0x03, 0x00, 0x01, 0x02],
                ParseError::Unsupported(Unsupported::Qos2),
            ),
            (
                &[0x90, 0x02, 0x00, 0x01],
                bad(
                    what,
                    DecodeError::Truncated {
                        needed: 1,
                        available: 0,
                    },
                ),
            ),
            (
                &[0x91, 0x03, 0x00, 0x01, 0x00],
                bad(what, DecodeError::BadValue),
            ),
        ] {
            assert_eq!(PacketRepr::parse_bytes(bytes), Err(err), "{bytes:02x?}");
        }
        assert_eq!(
            SubackCode::Failure.refusal().unwrap().name,
            "SUBACK_FAILURE"
        );
        assert_eq!(SubackCode::Granted(QoS::AtLeastOnce).refusal(), None);
        // The builder refuses empty lists and bad filters.
        assert!(matches!(
            PacketRepr::Subscribe(SubscribeRepr {
                packet_id: id(1),
                filters: vec![]
            })
            .append_to(&mut Vec::new()),
            Err(BuildError::InvalidArgument(_))
        ));
        assert!(matches!(
            PacketRepr::Suback(SubackRepr {
                packet_id: id(1),
                codes: vec![]
            })
            .append_to(&mut Vec::new()),
            Err(BuildError::InvalidArgument(_))
        ));
        for filter in ["", "a/#/b", "a+", "#a", "a/b#"] {
            assert!(matches!(
                PacketRepr::Subscribe(SubscribeRepr {
                    packet_id: id(1),
                    filters: vec![Subscription {
                        filter,
                        qos: QoS::AtMostOnce
                    }]
                })
                .append_to(&mut Vec::new()),
                Err(BuildError::InvalidArgument(_))
            ));
        }
    }

    #[test]
    fn unsubscribe_vectors_and_refusals() {
        vector(
            PacketRepr::Unsubscribe(UnsubscribeRepr {
                packet_id: id(2),
                filters: vec!["a/#"],
            }),
            &[0xA2, 0x07, 0x00, 0x02, 0x00, 0x03, b'a', b'/', b'#'],
        );
        vector(
            PacketRepr::Unsubscribe(UnsubscribeRepr {
                packet_id: id(3),
                filters: vec!["+/x", "y"],
            }),
            &[
                0xA2, 0x0A, 0x00, 0x03, 0x00, 0x03, b'+', b'/', b'x', 0x00, 0x01, b'y',
            ],
        );
        let what = "MQTT UNSUBSCRIBE packet";
        assert_eq!(
            PacketRepr::parse_bytes(&[0xA0, 0x05, 0x00, 0x02, 0x00, 0x01, b'a']),
            Err(bad(what, DecodeError::BadValue))
        );
        assert_eq!(
            PacketRepr::parse_bytes(&[0xA2, 0x02, 0x00, 0x02]),
            Err(bad(
                what,
                DecodeError::Truncated {
                    needed: 2,
                    available: 0
                }
            ))
        );
        assert!(matches!(
            PacketRepr::Unsubscribe(UnsubscribeRepr {
                packet_id: id(1),
                filters: vec![]
            })
            .append_to(&mut Vec::new()),
            Err(BuildError::InvalidArgument(_))
        ));
    }

    #[test]
    fn topic_rules() {
        for ok in ["a", "/", "a/b", "/sys/pk/dk/ota/device/upgrade", "a b", "é"] {
            assert!(is_valid_topic_name(ok), "{ok}");
            assert!(is_valid_topic_filter(ok), "{ok}");
        }
        for ok in ["#", "+", "a/#", "+/+", "/+", "a/+/b/#", "+/#"] {
            assert!(is_valid_topic_filter(ok), "{ok}");
            assert!(!is_valid_topic_name(ok), "{ok}");
        }
        for bad in ["", "a/#/b", "a#", "a/b+", "++", "##", "a\0"] {
            assert!(!is_valid_topic_filter(bad), "{bad}");
        }
    }

    #[test]
    fn remaining_length_boundaries() {
        for (value, bytes) in [
            (0usize, &[0x00][..]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            let (enc, used) = encode_remaining_len(value).unwrap();
            assert_eq!(&enc[..used], bytes, "{value}");
            assert_eq!(remaining_len_size(value), used);
            assert_eq!(decode_remaining_len(bytes), Ok((value, used)));
            // Bytes after the varint are not read.
            let mut longer = bytes.to_vec();
            longer.push(0xFF);
            assert_eq!(decode_remaining_len(&longer), Ok((value, used)));
        }
        assert_eq!(MAX_REMAINING_LEN, 268_435_455);
        assert_eq!(
            encode_remaining_len(268_435_456),
            Err(BuildError::TooLarge {
                len: 268_435_456,
                limit: MAX_REMAINING_LEN
            })
        );
        // Five bytes is one too many, whatever follows.
        assert_eq!(
            decode_remaining_len(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
            Err(DecodeError::TooLarge {
                limit: MAX_REMAINING_LEN
            })
        );
        assert_eq!(
            decode_remaining_len(&[0x80, 0x80, 0x80, 0x80]),
            Err(DecodeError::TooLarge {
                limit: MAX_REMAINING_LEN
            })
        );
        assert_eq!(
            decode_remaining_len(&[0x80, 0x80]),
            Err(DecodeError::Truncated {
                needed: 3,
                available: 2
            })
        );
        assert_eq!(
            decode_remaining_len(&[]),
            Err(DecodeError::Truncated {
                needed: 1,
                available: 0
            })
        );
        // Non-minimal encodings decode (3.1.1 does not forbid them).
        assert_eq!(decode_remaining_len(&[0x80, 0x00]), Ok((0, 2)));
        assert_eq!(
            PacketRepr::parse_bytes(&[0xC0, 0x80, 0x00]),
            Ok(PacketRepr::Pingreq)
        );
    }

    /// Whole PUBLISH packets at each remaining-length boundary, through the decoder.
    #[test]
    fn packets_at_length_boundaries() {
        // Topic "t": 3 bytes of topic field, then the payload.
        for (remaining, header) in [
            (127usize, &[0x30, 0x7F][..]),
            (128, &[0x30, 0x80, 0x01]),
            (16_383, &[0x30, 0xFF, 0x7F]),
            (16_384, &[0x30, 0x80, 0x80, 0x01]),
            (2_097_151, &[0x30, 0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x30, 0x80, 0x80, 0x80, 0x01]),
        ] {
            let payload: Vec<u8> = (0..remaining - 3).map(|i| i as u8).collect();
            let repr = PacketRepr::Publish(PublishRepr {
                topic: "t",
                qos: QosPid::AtMostOnce,
                dup: false,
                retain: false,
                payload: &payload,
            });
            assert_eq!(repr.remaining_len(), remaining);
            let bytes = emit(&repr);
            assert_eq!(bytes.len(), header.len() + remaining);
            assert_eq!(&bytes[..header.len()], header);
            assert_eq!(&bytes[header.len()..header.len() + 3], &[0x00, 0x01, b't']);
            assert_eq!(PacketRepr::parse_bytes(&bytes).unwrap(), repr);

            // Exactly the cap passes the decoder, one byte less refuses it.
            let mut d = Decoder::new(bytes.len());
            for chunk in bytes.chunks(4093) {
                d.push(chunk);
            }
            assert_eq!(d.next_packet(), Some(Ok(bytes.clone())));
            assert_eq!(d.next_packet(), None);
            let mut d = Decoder::new(bytes.len() - 1);
            d.push(&bytes[..bytes.len().min(64)]);
            assert_eq!(
                d.next_packet(),
                Some(Err(Malformed {
                    what: HEADER_WHAT,
                    reason: DecodeError::TooLarge {
                        limit: bytes.len() - 1
                    }
                }))
            );
            assert_eq!(d.buffered(), 0);
        }

        // The largest remaining length: its header, and the builder's refusal one over.
        // A zeroed allocation is only reserved, never touched, so this costs nothing.
        let huge = vec![0u8; MAX_REMAINING_LEN - 3];
        let p = PublishRepr {
            topic: "t",
            qos: QosPid::AtMostOnce,
            dup: false,
            retain: false,
            payload: &huge,
        };
        assert_eq!(PacketRepr::Publish(p).remaining_len(), MAX_REMAINING_LEN);
        assert_eq!(PacketRepr::Publish(p).buffer_len(), MAX_REMAINING_LEN + 5);
        let over = vec![0u8; MAX_REMAINING_LEN - 2];
        let mut buf = vec![0xAA];
        assert_eq!(
            PacketRepr::Publish(PublishRepr {
                payload: &over,
                ..p
            })
            .append_to(&mut buf),
            Err(BuildError::TooLarge {
                len: MAX_REMAINING_LEN + 1,
                limit: MAX_REMAINING_LEN
            })
        );
        assert_eq!(buf, [0xAA]);
        // A header announcing the largest packet: the view wants all of it.
        let header = [0x30, 0xFF, 0xFF, 0xFF, 0x7F];
        assert_eq!(
            Packet::new_checked(&header[..]).unwrap_err(),
            Malformed {
                what: HEADER_WHAT,
                reason: DecodeError::Truncated {
                    needed: MAX_REMAINING_LEN + 5,
                    available: 5
                }
            }
        );
        let mut d = Decoder::new(1 << 20);
        d.push(&header);
        assert_eq!(
            d.next_packet().unwrap().unwrap_err().reason,
            DecodeError::TooLarge { limit: 1 << 20 }
        );
        // One more continuation byte is over the limit of the format itself.
        let mut d = Decoder::new(usize::MAX);
        d.push(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]);
        assert_eq!(
            d.next_packet().unwrap().unwrap_err().reason,
            DecodeError::TooLarge {
                limit: MAX_REMAINING_LEN
            }
        );
        assert!(d.is_failed());
    }

    #[test]
    fn view_checks_the_frame() {
        let err = |bytes: &[u8]| Packet::new_checked(bytes).unwrap_err().reason;
        assert_eq!(
            err(&[]),
            DecodeError::Truncated {
                needed: 2,
                available: 0
            }
        );
        assert_eq!(
            err(&[0xC0]),
            DecodeError::Truncated {
                needed: 2,
                available: 1
            }
        );
        assert_eq!(
            err(&[0x30, 0x80]),
            DecodeError::Truncated {
                needed: 3,
                available: 2
            }
        );
        assert_eq!(err(&[0x00, 0x00]), DecodeError::BadValue);
        assert_eq!(err(&[0xF0, 0x00]), DecodeError::BadValue);
        assert_eq!(
            err(&[0x40, 0x02, 0x00]),
            DecodeError::Truncated {
                needed: 4,
                available: 3
            }
        );
        assert_eq!(err(&[0xD0, 0x00, 0x00]), DecodeError::TrailingBytes);

        let bytes = [
            0x3B, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, b'h', b'i',
        ];
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.packet_type(), Some(PacketType::Publish));
        assert_eq!(p.flags(), 0x0B);
        assert_eq!(p.remaining_len(), 9);
        assert_eq!(p.header_len(), 2);
        assert_eq!(p.body(), &bytes[2..]);
        assert_eq!(p.into_inner(), &bytes[..]);

        // DUP is set on QoS 1 PUBLISH only.
        let mut qos1 = [0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x01];
        assert!(Packet::new_unchecked(&mut qos1[..]).set_dup());
        assert_eq!(qos1[0], 0x3A);
        for first in [0x30u8, 0x40, 0x82] {
            let mut other = [first, 0x00];
            assert!(!Packet::new_unchecked(&mut other[..]).set_dup());
            assert_eq!(other[0], first);
        }
        assert!(!Packet::new_unchecked(&mut [0u8; 0][..]).set_dup());

        // Emitting into a short buffer refuses without writing past it.
        let mut short = [0u8; 3];
        assert_eq!(
            PacketRepr::Puback(id(1)).emit(&mut Packet::new_unchecked(&mut short[..])),
            Err(BuildError::BufferTooShort {
                needed: 4,
                available: 3
            })
        );
        assert_eq!(PacketType::Suback.to_string(), "SUBACK");
        assert_eq!(PacketType::from_u8(0), None);
        assert_eq!(PacketType::from_u8(15), None);
    }

    #[test]
    fn decoder_reassembles_any_chunking() {
        let stream: Vec<u8> = [
            &[0x20, 0x02, 0x00, 0x00][..],
            &[
                0x3B, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, b'h', b'i',
            ],
            &[0xD0, 0x00],
            &[0x90, 0x03, 0x00, 0x01, 0x01],
        ]
        .concat();
        let packets = [0..4, 4..15, 15..17, 17..22];
        let mut rng = Rng(0xDEC0_DE00_1234_5678);
        for round in 0..200 {
            let mut d = Decoder::new(64);
            let mut at = 0;
            while at < stream.len() {
                let n = if round == 0 {
                    1
                } else {
                    1 + rng.below(stream.len() - at)
                };
                d.push(&stream[at..at + n]);
                at += n;
            }
            for range in packets.clone() {
                assert_eq!(d.next_packet(), Some(Ok(stream[range].to_vec())));
            }
            assert_eq!(d.next_packet(), None);
            assert_eq!(d.buffered(), 0);
        }

        // A partial packet waits; the rest completes it.
        let mut d = Decoder::new(64);
        d.push(&stream[..6]);
        assert_eq!(d.next_packet(), Some(Ok(stream[..4].to_vec())));
        assert_eq!(d.next_packet(), None);
        assert_eq!(d.buffered(), 2);
        d.push(&stream[6..]);
        assert_eq!(d.next_packet(), Some(Ok(stream[4..15].to_vec())));

        // Packets before a framing error come out first; then the error once; then nothing.
        let mut d = Decoder::new(64);
        d.push(&[0xD0, 0x00, 0x00, 0x00, 0xD0, 0x00]);
        assert_eq!(d.next_packet(), Some(Ok(vec![0xD0, 0x00])));
        assert_eq!(
            d.next_packet(),
            Some(Err(Malformed {
                what: HEADER_WHAT,
                reason: DecodeError::BadValue
            }))
        );
        assert_eq!(d.next_packet(), None);
        assert!(d.is_failed());
        d.push(&[0xD0, 0x00]);
        assert_eq!(d.next_packet(), None);
        d.reset();
        assert!(!d.is_failed());
        assert_eq!(d.max_packet_len(), 64);
        d.push(&[0xD0, 0x00]);
        assert_eq!(d.next_packet(), Some(Ok(vec![0xD0, 0x00])));

        // Too large is refused at the header, before the body is buffered.
        let mut d = Decoder::new(10);
        d.push(&[0x30, 0x0A]);
        assert_eq!(
            d.next_packet(),
            Some(Err(Malformed {
                what: HEADER_WHAT,
                reason: DecodeError::TooLarge { limit: 10 }
            }))
        );
        assert_eq!(d.buffered(), 0);
        let mut d = Decoder::new(10);
        d.push(&[0x30, 0x08]);
        d.push(&[0; 8]);
        assert_eq!(d.next_packet().unwrap().unwrap().len(), 10);
    }

    #[test]
    fn parse_errors_convert() {
        let e = ParseError::Unsupported(Unsupported::Qos2);
        assert_eq!(
            Malformed::from(e),
            Malformed {
                what: "MQTT QoS 2 packet (unsupported)",
                reason: DecodeError::BadValue
            }
        );
        assert_eq!(Error::from(e).code(), "peer-malformed");
        assert_eq!(e.to_string(), "MQTT QoS 2 is not supported");
        assert_eq!(
            ParseError::Unsupported(Unsupported::ProtocolLevel(5)).to_string(),
            "MQTT protocol level 5 is not 3.1.1 (level 4)"
        );
        let m = bad("MQTT PUBACK packet", DecodeError::BadValue);
        assert_eq!(
            m.to_string(),
            "MQTT PUBACK packet: a field holds an undefined value"
        );
        assert_eq!(
            Misuse::from(BuildError::InvalidArgument("DUP is only for QoS 1")),
            Misuse::InvalidArgument("DUP is only for QoS 1")
        );
        assert_eq!(id(0xFFFF).next(), id(1));
        assert_eq!(id(7).next(), id(8));
        assert_eq!(PacketId::new(0), None);
    }

    #[test]
    fn display_names_the_packet() {
        let bytes = [
            0x3B, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, b'h', b'i',
        ];
        assert_eq!(
            PacketRepr::parse_bytes(&bytes).unwrap().to_string(),
            "MQTT PUBLISH \"a/b\" qos 1 id 10 dup retain len 2"
        );
        assert_eq!(
            PacketRepr::parse_bytes(&[0x90, 0x04, 0x00, 0x01, 0x01, 0x80])
                .unwrap()
                .to_string(),
            "MQTT SUBACK id 1 0x01 0x80"
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = Rng(0x0123_4567_89AB_CDEF);
        let mut d = Decoder::new(256);
        for _ in 0..50_000 {
            let len = rng.below(40);
            let mut bytes = rng.bytes(len);
            // Steer most inputs to a defined type and a consistent length, to reach the
            // per-packet rules.
            if len >= 2 && rng.below(4) != 0 {
                bytes[0] = ((1 + rng.below(14) as u8) << 4) | (bytes[0] & 0x0F);
                if rng.below(2) == 0 {
                    bytes[0] = (bytes[0] & 0xF0)
                        | PacketType::from_u8(bytes[0] >> 4)
                            .and_then(PacketType::fixed_flags)
                            .unwrap_or(bytes[0] & 0x0F);
                }
                bytes[1] = (len - 2) as u8;
            }
            let view = Packet::new_unchecked(&bytes[..]);
            let _ = (
                view.packet_type(),
                view.flags(),
                view.remaining_len(),
                view.header_len(),
                view.body(),
            );
            if let Ok(repr) = PacketRepr::parse_bytes(&bytes) {
                // What parses re-emits to the same bytes, but for non-minimal lengths.
                let again = emit(&repr);
                assert_eq!(PacketRepr::parse_bytes(&again).unwrap(), repr);
                if bytes[1] & 0x80 == 0 {
                    assert_eq!(again, bytes);
                }
                let _ = repr.to_string();
            } else if let Err(e) = PacketRepr::parse_bytes(&bytes) {
                let _ = (e.to_string(), Malformed::from(e));
            }
            d.push(&bytes);
            while let Some(p) = d.next_packet() {
                match p {
                    Ok(p) => {
                        assert!(p.len() <= 256);
                        assert!(Packet::new_checked(&p[..]).is_ok());
                    }
                    Err(e) => {
                        let _ = e.to_string();
                        d.reset();
                    }
                }
            }
            assert!(d.buffered() <= 256);
        }
    }
}
