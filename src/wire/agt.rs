//! Alexa Gadgets (AGT) BLE transport: the protocol-version packet, transport packets, ACK/NACK
//! packets, fragmentation and reassembly (`protocols/gadget.md` §2, §3, §8).
//!
//! Contract, as for every view in [`crate::wire`]: [`PvPacket`] and [`TransportPacket`] are
//! made from peer bytes only through `new_checked`, after which no accessor can panic;
//! [`PvRepr`], [`TransportRepr`] and [`AckRepr`] are the validated summaries with `parse`,
//! `buffer_len` and `emit`. [`Fragmenter`] turns one transaction into packets of at most the
//! peer's packet size, and [`Reassembler`] turns packets back into transactions, answering
//! every fault with the NACK to send. Multi-byte fields are big-endian.
//!
//! ```text
//! PV packet (gadget → Echo, no stream header), 20 bytes:
//!   FE 03 | major | minor | packet size u16 | max transaction size u16 | 12 reserved
//!
//! Transport packet byte 0: stream ID (7..4) | transaction ID (3..0)
//!                  byte 1: sequence (7..4) | type (3..2) | ACK flag (1) | length extender (0)
//!   first        [b0][b1][reserved][total length u16][payload length u8 | u16][payload]
//!   continuation [b0][b1][payload length u8 | u16][payload]             (and last)
//!   control      [b0][b1][reserved][payload length u8 = 02][control type][result]
//! ```
//!
//! Choices where the notes infer (\[INF\]), recommend (\[REC\]) or leave a gap:
//!
//! - \[INF\] §2: the PV packet has no stream header; its first byte, 0xFE, would read as stream
//!   15, which no stream uses, so [`is_pv_packet`] tells it from stream packets by that byte.
//!   [`PvRepr::parse`] accepts values longer than 20 bytes and ignores the reserved bytes (a
//!   later minor version may use them); it refuses a major version other than 3, and a packet
//!   size below [`MIN_PACKET_SIZE`] or a transaction size of zero, with which no transaction
//!   could be sent: that is the peer's fault, so it is reported as malformed here rather than as
//!   misuse later. \[REC\] §2: [`PvRepr::limits`] gives the limits the orchestrator clamps to.
//! - \[INF\] §3.5: an ACK/NACK packet's bytes 2 and 3 are the first-packet reserved byte and a
//!   one-byte payload length (2), i.e. the first-packet layout without the total length, so
//!   [`TransportPacket`] reads control packets that way and [`AckRepr`] requires that length.
//!   Byte 4 is written 0x01 ([`CONTROL_TYPE_ACK`]) and accepted with any value, exposed as
//!   [`AckRepr::control_type`]: AGT gadgets always send 0x01, AMA uses 2 for an abort (§3.5,
//!   §10.6). The sequence and reserved bytes of a control packet are not checked.
//! - \[REC\] §3.5: [`AckRepr::is_positive`] needs both the ACK bit and result 0x00; anything else
//!   is a NACK.
//! - \[REC\] §3.2: the first-packet reserved byte is written 0 and ignored on receive.
//! - §3.2: the length extender is set exactly when a packet's payload exceeds 255 bytes; a
//!   received packet with the extender set and a short payload is accepted.
//! - BLE values arrive whole, so bytes after a packet's payload are
//!   [`DecodeError::TrailingBytes`], not padding.
//! - §3.3: [`Fragmenter`] follows EMB's rule (first payload ≤ P − 6, later ≤ P − 3, one less
//!   where the extender is needed); a single-packet transaction is one first packet (§3.2).
//!   \[REC\] §3.5: it sets the ACK flag on every packet of a transaction that wants an answer.
//! - §3.4: [`Reassembler`] keeps one buffer per stream. A transaction completes when its bytes
//!   reach the total length, whatever the type field says (§3.2). A first packet must carry
//!   sequence 0, and it opens a new buffer, abandoning any transaction still open on its
//!   stream (the sender restarted it). \[REC\] §3.5: the ACK request is latched if any packet of
//!   the transaction sets it (NRF). Every fault that concerns a data packet on a known stream
//!   discards that stream's open transaction and yields a NACK with result 0x01
//!   ([`ResultCode::Unknown`]), as EMB does for sequence, length and overflow faults; a bad
//!   ACK/NACK packet is never answered, so two peers cannot NACK each other in a loop.

use alloc::vec::Vec;
use core::fmt;

use crate::error::{DecodeError, Malformed, Misuse};
use crate::image::chunk::Chunker;

/// The protocol identifier opening the PV packet, also the GATT service UUID (§1, §2).
pub const PROTOCOL_ID: u16 = 0xFE03;
/// The major protocol version this module speaks (§2).
pub const PROTOCOL_MAJOR: u8 = 0x03;
/// The minor protocol version this module emits (§2).
pub const PROTOCOL_MINOR: u8 = 0x00;
/// The length of the PV packet: 20 bytes (§2).
pub const PV_PACKET_LEN: usize = 0x14;
/// The length of an ACK/NACK packet: 6 bytes (§3.5).
pub const ACK_PACKET_LEN: usize = 0x06;
/// Byte 4 of an ACK/NACK packet as AGT gadgets send it (§3.5).
pub const CONTROL_TYPE_ACK: u8 = 0x01;
/// The largest transaction payload: the total-length field has 16 bits (§3.2).
pub const MAX_TRANSACTION_LEN: usize = 0xFFFF;
/// The smallest packet size accepted: 8 bytes, so a first packet carries a two-byte command
/// such as `08 14` whole. BLE's own floor (ATT MTU 23 − 3 = 20) is well above it.
pub const MIN_PACKET_SIZE: u16 = 0x08;

/// What [`Malformed`] names when a PV packet fails to decode.
const PV_WHAT: &str = "AGT protocol version packet";
/// What [`Malformed`] names when a transport packet fails to decode.
const TRANSPORT_WHAT: &str = "AGT transport packet";
/// What [`Malformed`] names when an ACK/NACK packet fails to decode.
const ACK_WHAT: &str = "AGT ACK/NACK packet";

/// The first byte of the PV packet: a stream header would read it as stream 15 (\[INF\] §2).
const PV_FIRST_BYTE: u8 = 0xFE;
/// The payload length of an ACK/NACK packet: control type and result (§3.5).
const ACK_PAYLOAD_LEN: u16 = 0x02;
/// The largest payload a one-byte length field can state (§3.2).
const SHORT_LEN_MAX: usize = 0xFF;

const HIGH_NIBBLE: u8 = 0xF0;
const LOW_NIBBLE: u8 = 0x0F;
const TYPE_MASK: u8 = 0x0C;
const TYPE_SHIFT: u32 = 2;
const ACK_BIT: u8 = 0x02;
const EXTENDER_BIT: u8 = 0x01;

/// Byte positions. Where the payload length sits depends on the type, so it is computed by
/// [`header_layout`].
mod field {
    /// A byte range.
    pub(super) type Field = core::ops::Range<usize>;

    // The PV packet (§2).
    pub(super) const PV_ID: Field = 0..2;
    pub(super) const PV_MAJOR: usize = 2;
    pub(super) const PV_MINOR: usize = 3;
    pub(super) const PV_PACKET_SIZE: Field = 4..6;
    pub(super) const PV_MAX_TRANSACTION: Field = 6..8;
    pub(super) const PV_RESERVED: Field = 8..20;

    // The transport packet header (§3.1, §3.2).
    /// Stream ID (high nibble) and transaction ID (low nibble).
    pub(super) const IDS: usize = 0;
    /// Sequence (high nibble), transaction type, ACK flag and length extender.
    pub(super) const FLAGS: usize = 1;
    /// First and control packets only.
    pub(super) const RESERVED: usize = 2;
    /// First packets only.
    pub(super) const TOTAL_LEN: Field = 3..5;
    /// Where the payload length sits in a first packet.
    pub(super) const FIRST_PAYLOAD_LEN: usize = 5;
    /// Where the payload length sits in a control packet.
    pub(super) const CONTROL_PAYLOAD_LEN: usize = 3;
    /// Where the payload length sits in a continuation or last packet.
    pub(super) const NEXT_PAYLOAD_LEN: usize = 2;
}

/// Whether a value received on the gadget's notify characteristic is the PV packet rather
/// than a stream packet (\[INF\] §2). Decode it with [`PvPacket::new_checked`] and
/// [`PvRepr::parse`].
#[must_use]
pub fn is_pv_packet(bytes: &[u8]) -> bool {
    bytes.first() == Some(&PV_FIRST_BYTE)
}

/// A stream: what a transaction carries (§4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamId {
    /// `ControlEnvelope` protobufs.
    Control = 0x0,
    /// Raw firmware image bytes.
    Ota = 0x2,
    /// Directive and event protobufs.
    Alexa = 0x6,
}

impl TryFrom<u8> for StreamId {
    type Error = DecodeError;

    /// The stream with this 4-bit ID; [`DecodeError::BadValue`] for IDs AGT does not use.
    fn try_from(id: u8) -> Result<Self, DecodeError> {
        match id {
            0x0 => Ok(StreamId::Control),
            0x2 => Ok(StreamId::Ota),
            0x6 => Ok(StreamId::Alexa),
            _ => Err(DecodeError::BadValue),
        }
    }
}

impl From<StreamId> for u8 {
    fn from(stream: StreamId) -> u8 {
        stream as u8
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StreamId::Control => "control",
            StreamId::Ota => "ota",
            StreamId::Alexa => "alexa",
        })
    }
}

/// Defines a 4-bit counter newtype; transaction IDs and sequence numbers share the shape.
macro_rules! nibble {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u8);

        impl $name {
            /// Zero, where counting starts.
            pub const ZERO: $name = $name(0);

            /// The value, or `None` above 15.
            #[must_use]
            pub const fn new(value: u8) -> Option<Self> {
                if value <= LOW_NIBBLE {
                    Some($name(value))
                } else {
                    None
                }
            }

            /// The value, 0–15.
            #[must_use]
            pub const fn get(self) -> u8 {
                self.0
            }

            /// The following value, wrapping from 15 to 0.
            #[must_use]
            pub const fn next(self) -> Self {
                $name(self.0.wrapping_add(1) & LOW_NIBBLE)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

nibble!(
    /// A transaction ID, 0–15. With the stream it names a transaction (§3.1, §3.5).
    TransactionId
);

nibble!(
    /// A packet's sequence number within its transaction, 0–15, from 0 and wrapping (§3.1).
    SequenceNumber
);

/// The transaction-type field of a transport packet (§3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransactionType {
    /// Opens a transaction and states its total length.
    First = 0x0,
    /// Carries more of an open transaction.
    Continuation = 0x1,
    /// Carries the end of an open transaction.
    Last = 0x2,
    /// An ACK or NACK.
    Control = 0x3,
}

impl TransactionType {
    /// The type from the flags byte; its two bits cover all four values.
    const fn from_flags(flags: u8) -> Self {
        match (flags & TYPE_MASK) >> TYPE_SHIFT {
            0x0 => TransactionType::First,
            0x1 => TransactionType::Continuation,
            0x2 => TransactionType::Last,
            _ => TransactionType::Control,
        }
    }
}

/// Where the payload-length field starts and how long the whole header is, for a packet of
/// type `ty` with the length extender `extended` (§3.2).
const fn header_layout(ty: TransactionType, extended: bool) -> (usize, usize) {
    let len_at = match ty {
        TransactionType::First => field::FIRST_PAYLOAD_LEN,
        TransactionType::Control => field::CONTROL_PAYLOAD_LEN,
        TransactionType::Continuation | TransactionType::Last => field::NEXT_PAYLOAD_LEN,
    };
    (len_at, len_at + if extended { 2 } else { 1 })
}

/// A read/write view of a PV packet (§2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> PvPacket<T> {
    /// Wraps a buffer without checking its length; accessors panic if it is shorter than 20
    /// bytes. Use only on buffers being built, never on peer bytes.
    pub const fn new_unchecked(buffer: T) -> Self {
        PvPacket { buffer }
    }

    /// Wraps peer bytes, checking that every field is present.
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds all 20 bytes; longer buffers pass (see the module docs).
    pub fn check_len(&self) -> Result<(), Malformed> {
        let available = self.buffer.as_ref().len();
        if available < PV_PACKET_LEN {
            return Err(Malformed {
                what: PV_WHAT,
                reason: DecodeError::Truncated {
                    needed: PV_PACKET_LEN,
                    available,
                },
            });
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The protocol identifier field; 0xFE03 in a valid packet.
    #[must_use]
    pub fn identifier(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PV_ID.start)
    }

    /// The major version field.
    #[must_use]
    pub fn major_version(&self) -> u8 {
        self.buffer.as_ref()[field::PV_MAJOR]
    }

    /// The minor version field.
    #[must_use]
    pub fn minor_version(&self) -> u8 {
        self.buffer.as_ref()[field::PV_MINOR]
    }

    /// The transport packet size: the largest packet, header included, the gadget handles.
    #[must_use]
    pub fn packet_size(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PV_PACKET_SIZE.start)
    }

    /// The largest reassembled transaction payload the gadget can buffer.
    #[must_use]
    pub fn max_transaction_size(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PV_MAX_TRANSACTION.start)
    }

    /// The 12 reserved bytes.
    #[must_use]
    pub fn reserved(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PV_RESERVED]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> PvPacket<T> {
    /// Sets the protocol identifier field.
    pub fn set_identifier(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::PV_ID.start, value);
    }

    /// Sets the major version field.
    pub fn set_major_version(&mut self, value: u8) {
        self.buffer.as_mut()[field::PV_MAJOR] = value;
    }

    /// Sets the minor version field.
    pub fn set_minor_version(&mut self, value: u8) {
        self.buffer.as_mut()[field::PV_MINOR] = value;
    }

    /// Sets the transport packet size field.
    pub fn set_packet_size(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::PV_PACKET_SIZE.start, value);
    }

    /// Sets the max transactional data size field.
    pub fn set_max_transaction_size(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::PV_MAX_TRANSACTION.start, value);
    }

    /// Zeroes the reserved bytes.
    pub fn clear_reserved(&mut self) {
        self.buffer.as_mut()[field::PV_RESERVED].fill(0);
    }
}

/// The transfer limits a gadget announces in its PV packet (§2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest packet, header included (P).
    pub packet_size: u16,
    /// The largest transaction payload (T).
    pub max_transaction_size: u16,
}

impl Limits {
    /// The most payload a transaction of `packets` packets carries, as [`Fragmenter`] cuts
    /// it: the first packet's room and `packets − 1` continuations' (0 for no packets).
    #[must_use]
    pub fn payload_of_packets(&self, packets: usize) -> usize {
        if packets == 0 {
            return 0;
        }
        let (_, first) = header_layout(TransactionType::First, false);
        let (_, next) = header_layout(TransactionType::Continuation, false);
        payload_capacity(self.packet_size, first)
            .saturating_add(payload_capacity(self.packet_size, next).saturating_mul(packets - 1))
    }

    /// The most payload a transaction of whole packets carries within `bytes` (no packet of
    /// it short), or `bytes` itself when that is less than a first packet's room.
    #[must_use]
    pub fn whole_packets_within(&self, bytes: usize) -> usize {
        let first = self.payload_of_packets(1);
        let next = self.payload_of_packets(2) - first;
        match bytes.checked_sub(first) {
            Some(more) => more.checked_div(next).map_or(bytes, |n| first + n * next),
            None => bytes,
        }
    }
}

/// A decoded PV packet (§2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvRepr {
    /// The major protocol version; always 3 once parsed.
    pub major: u8,
    /// The minor protocol version.
    pub minor: u8,
    /// The largest packet, header included, the gadget handles.
    pub packet_size: u16,
    /// The largest transaction payload the gadget can buffer.
    pub max_transaction_size: u16,
}

impl PvRepr {
    /// A PV packet of this module's version (3.0) announcing these limits.
    #[must_use]
    pub const fn new(packet_size: u16, max_transaction_size: u16) -> Self {
        PvRepr {
            major: PROTOCOL_MAJOR,
            minor: PROTOCOL_MINOR,
            packet_size,
            max_transaction_size,
        }
    }

    /// Decodes a checked PV packet; see the module docs for what is refused.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &PvPacket<&T>) -> Result<Self, Malformed> {
        let bad = |reason| Malformed {
            what: PV_WHAT,
            reason,
        };
        packet.check_len().map_err(|e| bad(e.reason))?;
        if packet.identifier() != PROTOCOL_ID || packet.major_version() != PROTOCOL_MAJOR {
            return Err(bad(DecodeError::BadValue));
        }
        if packet.packet_size() < MIN_PACKET_SIZE || packet.max_transaction_size() == 0 {
            return Err(bad(DecodeError::BadValue));
        }
        Ok(PvRepr {
            major: packet.major_version(),
            minor: packet.minor_version(),
            packet_size: packet.packet_size(),
            max_transaction_size: packet.max_transaction_size(),
        })
    }

    /// The length of the emitted packet: 20 bytes.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        PV_PACKET_LEN
    }

    /// Writes the packet into the first 20 bytes of `packet`, reserved bytes zeroed.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut PvPacket<T>,
    ) -> Result<(), BuildError> {
        ensure_room(packet.buffer.as_ref(), self.buffer_len())?;
        packet.set_identifier(PROTOCOL_ID);
        packet.set_major_version(self.major);
        packet.set_minor_version(self.minor);
        packet.set_packet_size(self.packet_size);
        packet.set_max_transaction_size(self.max_transaction_size);
        packet.clear_reserved();
        Ok(())
    }

    /// The limits to fragment to and reassemble within (\[REC\] §2: clamp to these).
    #[must_use]
    pub const fn limits(&self) -> Limits {
        Limits {
            packet_size: self.packet_size,
            max_transaction_size: self.max_transaction_size,
        }
    }
}

impl fmt::Display for PvRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AGT PV {}.{} packet size {} max transaction {}",
            self.major, self.minor, self.packet_size, self.max_transaction_size
        )
    }
}

/// A read/write view of a transport packet: first, continuation, last or control (§3.1–§3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TransportPacket<T> {
    /// Wraps a buffer without checking it; accessors panic if the header or payload is cut
    /// short. Use only on buffers being built, never on peer bytes.
    pub const fn new_unchecked(buffer: T) -> Self {
        TransportPacket { buffer }
    }

    /// Wraps peer bytes, checking that the header and exactly the stated payload are present.
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the header fits, that the payload length field does not exceed the bytes
    /// present, and that nothing follows the payload.
    pub fn check_len(&self) -> Result<(), Malformed> {
        let data = self.buffer.as_ref();
        let available = data.len();
        let truncated = |needed| Malformed {
            what: TRANSPORT_WHAT,
            reason: DecodeError::Truncated { needed, available },
        };
        // The header's length depends on the type and extender bits in byte 1.
        let Some(&flags) = data.get(field::FLAGS) else {
            return Err(truncated(field::FLAGS + 1));
        };
        let (len_at, header_len) = header_layout(
            TransactionType::from_flags(flags),
            flags & EXTENDER_BIT != 0,
        );
        let Some(len_field) = data.get(len_at..header_len) else {
            return Err(truncated(header_len));
        };
        let payload_len = len_field
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        let needed = header_len + payload_len;
        if available < needed {
            return Err(truncated(needed));
        }
        if available > needed {
            return Err(Malformed {
                what: TRANSPORT_WHAT,
                reason: DecodeError::TrailingBytes,
            });
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The raw 4-bit stream ID; [`StreamId::try_from`] names it.
    #[must_use]
    pub fn stream_id(&self) -> u8 {
        (self.buffer.as_ref()[field::IDS] & HIGH_NIBBLE) >> 4
    }

    /// The transaction ID.
    #[must_use]
    pub fn transaction_id(&self) -> TransactionId {
        TransactionId(self.buffer.as_ref()[field::IDS] & LOW_NIBBLE)
    }

    /// The sequence number.
    #[must_use]
    pub fn sequence(&self) -> SequenceNumber {
        SequenceNumber((self.buffer.as_ref()[field::FLAGS] & HIGH_NIBBLE) >> 4)
    }

    /// The transaction type.
    #[must_use]
    pub fn transaction_type(&self) -> TransactionType {
        TransactionType::from_flags(self.buffer.as_ref()[field::FLAGS])
    }

    /// The ACK flag: on data packets, an answer is wanted; on control packets, ACK (set) or
    /// NACK (clear).
    #[must_use]
    pub fn ack_flag(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & ACK_BIT != 0
    }

    /// The length extender: whether the payload length field has two bytes.
    #[must_use]
    pub fn length_extender(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & EXTENDER_BIT != 0
    }

    /// The reserved byte of first and control packets; `None` for other types.
    #[must_use]
    pub fn reserved(&self) -> Option<u8> {
        match self.transaction_type() {
            TransactionType::First | TransactionType::Control => {
                Some(self.buffer.as_ref()[field::RESERVED])
            }
            TransactionType::Continuation | TransactionType::Last => None,
        }
    }

    /// The total transaction length of a first packet; `None` for other types.
    #[must_use]
    pub fn total_length(&self) -> Option<u16> {
        (self.transaction_type() == TransactionType::First).then(|| self.total_length_field())
    }

    /// The bytes where a first packet holds its total length, whatever the type.
    fn total_length_field(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::TOTAL_LEN.start)
    }

    /// The header length: 6 or 7 bytes for first packets, 4 or 5 for control packets, 3 or 4
    /// for the rest.
    #[must_use]
    pub fn header_len(&self) -> usize {
        header_layout(self.transaction_type(), self.length_extender()).1
    }

    /// The payload length field.
    #[must_use]
    pub fn payload_len(&self) -> u16 {
        let (len_at, _) = header_layout(self.transaction_type(), self.length_extender());
        let data = self.buffer.as_ref();
        if self.length_extender() {
            read_u16(data, len_at)
        } else {
            u16::from(data[len_at])
        }
    }

    /// Where the payload lies in the buffer.
    fn payload_range(&self) -> core::ops::Range<usize> {
        let start = self.header_len();
        start..start + usize::from(self.payload_len())
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> TransportPacket<&'a T> {
    /// The payload.
    #[must_use]
    pub fn payload(&self) -> &'a [u8] {
        let range = self.payload_range();
        &self.buffer.as_ref()[range]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TransportPacket<T> {
    /// Sets the stream ID.
    pub fn set_stream_id(&mut self, value: StreamId) {
        let b = &mut self.buffer.as_mut()[field::IDS];
        *b = (*b & LOW_NIBBLE) | (u8::from(value) << 4);
    }

    /// Sets the transaction ID.
    pub fn set_transaction_id(&mut self, value: TransactionId) {
        let b = &mut self.buffer.as_mut()[field::IDS];
        *b = (*b & HIGH_NIBBLE) | value.get();
    }

    /// Sets the sequence number.
    pub fn set_sequence(&mut self, value: SequenceNumber) {
        let b = &mut self.buffer.as_mut()[field::FLAGS];
        *b = (*b & LOW_NIBBLE) | (value.get() << 4);
    }

    /// Sets the transaction type. Set it before the fields whose position it decides.
    pub fn set_transaction_type(&mut self, value: TransactionType) {
        let b = &mut self.buffer.as_mut()[field::FLAGS];
        *b = (*b & !TYPE_MASK) | ((value as u8) << TYPE_SHIFT);
    }

    /// Sets the ACK flag.
    pub fn set_ack_flag(&mut self, value: bool) {
        let b = &mut self.buffer.as_mut()[field::FLAGS];
        *b = if value { *b | ACK_BIT } else { *b & !ACK_BIT };
    }

    /// Sets the length extender. Set it before the payload length.
    pub fn set_length_extender(&mut self, value: bool) {
        let b = &mut self.buffer.as_mut()[field::FLAGS];
        *b = if value {
            *b | EXTENDER_BIT
        } else {
            *b & !EXTENDER_BIT
        };
    }

    /// Sets the reserved byte; meaningful for first and control packets only.
    pub fn set_reserved(&mut self, value: u8) {
        self.buffer.as_mut()[field::RESERVED] = value;
    }

    /// Sets the total transaction length; meaningful for first packets only.
    pub fn set_total_length(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::TOTAL_LEN.start, value);
    }

    /// Sets the payload length field where the type and extender place it; without the
    /// extender only the low byte is kept.
    pub fn set_payload_len(&mut self, value: u16) {
        let (len_at, _) = header_layout(self.transaction_type(), self.length_extender());
        if self.length_extender() {
            write_u16(self.buffer.as_mut(), len_at, value);
        } else {
            self.buffer.as_mut()[len_at] = value.to_be_bytes()[1];
        }
    }

    /// The payload, writable; its place and length come from the header fields.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.payload_range();
        &mut self.buffer.as_mut()[range]
    }
}

/// Where a data packet sits in its transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fragment {
    /// The first (possibly only) packet, stating the transaction's total length.
    First {
        /// The whole transaction payload's length.
        total_length: u16,
    },
    /// A middle packet.
    Continuation,
    /// The final packet of a multi-packet transaction.
    Last,
}

impl Fragment {
    /// The transaction type that encodes this position.
    #[must_use]
    pub const fn transaction_type(self) -> TransactionType {
        match self {
            Fragment::First { .. } => TransactionType::First,
            Fragment::Continuation => TransactionType::Continuation,
            Fragment::Last => TransactionType::Last,
        }
    }
}

/// A decoded data packet: first, continuation or last (§3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportRepr<'a> {
    /// The stream.
    pub stream: StreamId,
    /// The transaction ID.
    pub transaction_id: TransactionId,
    /// The sequence number.
    pub sequence: SequenceNumber,
    /// The packet's place in the transaction.
    pub fragment: Fragment,
    /// Whether the sender wants an ACK/NACK for the transaction.
    pub ack_requested: bool,
    /// The payload bytes this packet carries.
    pub payload: &'a [u8],
}

impl<'a> TransportRepr<'a> {
    /// Decodes a checked data packet. Refuses unknown streams and control packets (decode
    /// those with [`AckRepr::parse`]) as [`DecodeError::BadValue`], and a first packet carrying
    /// more than its total length as [`DecodeError::LengthMismatch`].
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &TransportPacket<&'a T>,
    ) -> Result<Self, Malformed> {
        let bad = |reason| Malformed {
            what: TRANSPORT_WHAT,
            reason,
        };
        packet.check_len()?;
        let stream = StreamId::try_from(packet.stream_id()).map_err(bad)?;
        let fragment = match packet.transaction_type() {
            TransactionType::First => {
                let total_length = packet.total_length_field();
                if packet.payload_len() > total_length {
                    return Err(bad(DecodeError::LengthMismatch));
                }
                Fragment::First { total_length }
            }
            TransactionType::Continuation => Fragment::Continuation,
            TransactionType::Last => Fragment::Last,
            TransactionType::Control => return Err(bad(DecodeError::BadValue)),
        };
        Ok(TransportRepr {
            stream,
            transaction_id: packet.transaction_id(),
            sequence: packet.sequence(),
            fragment,
            ack_requested: packet.ack_flag(),
            payload: packet.payload(),
        })
    }

    /// Whether the emitted packet needs the length extender: a payload over 255 bytes (§3.2).
    #[must_use]
    pub fn needs_extender(&self) -> bool {
        self.payload.len() > SHORT_LEN_MAX
    }

    /// The length of the emitted packet, header included.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        let (_, header_len) =
            header_layout(self.fragment.transaction_type(), self.needs_extender());
        header_len.saturating_add(self.payload.len())
    }

    /// Writes the packet into the first [`TransportRepr::buffer_len`] bytes of `packet`,
    /// reserved byte zero (\[REC\] §3.2).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut TransportPacket<T>,
    ) -> Result<(), BuildError> {
        let payload_len =
            u16::try_from(self.payload.len()).map_err(|_| BuildError::PayloadTooLarge {
                len: self.payload.len(),
                limit: MAX_TRANSACTION_LEN,
            })?;
        ensure_room(packet.buffer.as_ref(), self.buffer_len())?;
        packet.set_stream_id(self.stream);
        packet.set_transaction_id(self.transaction_id);
        packet.set_sequence(self.sequence);
        packet.set_transaction_type(self.fragment.transaction_type());
        packet.set_ack_flag(self.ack_requested);
        packet.set_length_extender(self.needs_extender());
        if let Fragment::First { total_length } = self.fragment {
            packet.set_reserved(0x00);
            packet.set_total_length(total_length);
        }
        packet.set_payload_len(payload_len);
        packet.payload_mut().copy_from_slice(self.payload);
        Ok(())
    }
}

impl fmt::Display for TransportRepr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AGT {} txn {} seq {} ",
            self.stream, self.transaction_id, self.sequence
        )?;
        match self.fragment {
            Fragment::First { total_length } => write!(f, "first of {total_length}")?,
            Fragment::Continuation => f.write_str("continuation")?,
            Fragment::Last => f.write_str("last")?,
        }
        if self.ack_requested {
            f.write_str(" ack")?;
        }
        write!(f, " len {}", self.payload.len())
    }
}

/// The result byte of an ACK/NACK packet (§3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResultCode {
    /// 0x00: the message was valid and acted on.
    Success,
    /// 0x01: the message was valid but processing failed (EMB: FAILURE); EMB's code for
    /// sequence, length and overflow faults.
    Unknown,
    /// 0x03: the message had a command or field the receiver does not support.
    Unsupported,
    /// Any other code, e.g. AMA's abort reasons 2–5.
    Other(u8),
}

impl From<u8> for ResultCode {
    fn from(code: u8) -> Self {
        match code {
            0x00 => ResultCode::Success,
            0x01 => ResultCode::Unknown,
            0x03 => ResultCode::Unsupported,
            other => ResultCode::Other(other),
        }
    }
}

impl From<ResultCode> for u8 {
    fn from(code: ResultCode) -> u8 {
        match code {
            ResultCode::Success => 0x00,
            ResultCode::Unknown => 0x01,
            ResultCode::Unsupported => 0x03,
            ResultCode::Other(other) => other,
        }
    }
}

impl fmt::Display for ResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResultCode::Success => f.write_str("success"),
            ResultCode::Unknown => f.write_str("unknown failure"),
            ResultCode::Unsupported => f.write_str("unsupported"),
            ResultCode::Other(code) => write!(f, "code {code:#04x}"),
        }
    }
}

/// A decoded ACK/NACK packet, always 6 bytes (§3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AckRepr {
    /// The stream of the transaction answered.
    pub stream: StreamId,
    /// The ID of the transaction answered.
    pub transaction_id: TransactionId,
    /// The ACK bit: set for an ACK, clear for a NACK.
    pub ack: bool,
    /// Byte 4: 0x01 from AGT gadgets, 2 for an AMA abort; emitted as given.
    pub control_type: u8,
    /// The result code.
    pub result: ResultCode,
}

impl AckRepr {
    /// A positive answer to a transaction.
    #[must_use]
    pub const fn ack(stream: StreamId, transaction_id: TransactionId) -> Self {
        AckRepr {
            stream,
            transaction_id,
            ack: true,
            control_type: CONTROL_TYPE_ACK,
            result: ResultCode::Success,
        }
    }

    /// A negative answer to a transaction.
    #[must_use]
    pub const fn nack(stream: StreamId, transaction_id: TransactionId, result: ResultCode) -> Self {
        AckRepr {
            stream,
            transaction_id,
            ack: false,
            control_type: CONTROL_TYPE_ACK,
            result,
        }
    }

    /// Decodes a checked control packet: its type must be control, its extender clear and its
    /// payload two bytes; sequence and reserved byte are not checked (see the module docs).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &TransportPacket<&T>) -> Result<Self, Malformed> {
        let bad = |reason| Malformed {
            what: ACK_WHAT,
            reason,
        };
        packet.check_len().map_err(|e| bad(e.reason))?;
        if packet.transaction_type() != TransactionType::Control || packet.length_extender() {
            return Err(bad(DecodeError::BadValue));
        }
        let stream = StreamId::try_from(packet.stream_id()).map_err(bad)?;
        let &[control_type, result] = packet.payload() else {
            return Err(bad(DecodeError::LengthMismatch));
        };
        Ok(AckRepr {
            stream,
            transaction_id: packet.transaction_id(),
            ack: packet.ack_flag(),
            control_type,
            result: ResultCode::from(result),
        })
    }

    /// Whether the peer accepted the transaction: ACK bit set and result 0x00 (\[REC\] §3.5).
    #[must_use]
    pub fn is_positive(&self) -> bool {
        self.ack && self.result == ResultCode::Success
    }

    /// The length of the emitted packet: 6 bytes.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        ACK_PACKET_LEN
    }

    /// Writes the packet into the first 6 bytes of `packet`, sequence 0 and reserved byte 0.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut TransportPacket<T>,
    ) -> Result<(), BuildError> {
        ensure_room(packet.buffer.as_ref(), self.buffer_len())?;
        packet.set_stream_id(self.stream);
        packet.set_transaction_id(self.transaction_id);
        packet.set_sequence(SequenceNumber::ZERO);
        packet.set_transaction_type(TransactionType::Control);
        packet.set_ack_flag(self.ack);
        packet.set_length_extender(false);
        packet.set_reserved(0x00);
        packet.set_payload_len(ACK_PAYLOAD_LEN);
        packet
            .payload_mut()
            .copy_from_slice(&[self.control_type, u8::from(self.result)]);
        Ok(())
    }
}

impl fmt::Display for AckRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AGT {} {} txn {} ({})",
            if self.ack { "ACK" } else { "NACK" },
            self.stream,
            self.transaction_id,
            self.result
        )?;
        if self.control_type != CONTROL_TYPE_ACK {
            write!(f, " control type {:#04x}", self.control_type)?;
        }
        Ok(())
    }
}

/// Why a packet or transaction could not be built: the caller's mistake, not the peer's.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The packet size is below [`MIN_PACKET_SIZE`].
    PacketSizeTooSmall {
        /// The packet size given.
        packet_size: u16,
        /// The smallest accepted.
        min: u16,
    },
    /// The payload exceeds the transaction size limit or the 16-bit length field.
    PayloadTooLarge {
        /// The payload's length.
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
            BuildError::PacketSizeTooSmall { packet_size, min } => write!(
                f,
                "AGT packet size {packet_size} is below the minimum of {min}"
            ),
            BuildError::PayloadTooLarge { len, limit } => write!(
                f,
                "AGT transaction of {len} bytes exceeds the limit of {limit}"
            ),
            BuildError::BufferTooShort { needed, available } => write!(
                f,
                "AGT packet needs {needed} bytes, the buffer has {available}"
            ),
        }
    }
}

impl From<BuildError> for Misuse {
    fn from(e: BuildError) -> Misuse {
        Misuse::InvalidArgument(match e {
            BuildError::PacketSizeTooSmall { .. } => "AGT packet size below the minimum",
            BuildError::PayloadTooLarge { .. } => "AGT transaction larger than its limit",
            BuildError::BufferTooShort { .. } => "buffer shorter than the AGT packet",
        })
    }
}

/// The most payload a packet of `packet_size` bytes carries after a `header`-byte header
/// (the short form): when the room exceeds 255 bytes the payload needs the extender, whose
/// extra length byte costs one byte of payload (§3.3). Never zero for sizes from
/// [`MIN_PACKET_SIZE`] up.
fn payload_capacity(packet_size: u16, header: usize) -> usize {
    let room = usize::from(packet_size).saturating_sub(header);
    if room > SHORT_LEN_MAX {
        room - 1
    } else {
        room
    }
}

/// Splits one transaction into packets of at most the packet size, written one at a time
/// into the caller's buffer (§3.2, §3.3).
///
/// Packet sizes are fixed per position, so the layout is a [`Chunker`]: the first packet
/// carries up to P − 6 bytes and later ones up to P − 3, one less each where that room
/// exceeds 255 bytes and the extender is needed. An empty payload is one first packet with
/// total length 0.
#[derive(Clone, Debug)]
pub struct Fragmenter<P: AsRef<[u8]>> {
    stream: StreamId,
    transaction_id: TransactionId,
    ack_requested: bool,
    payload: P,
    total_length: u16,
    chunker: Chunker,
    /// At least one: an empty transaction still sends its first packet.
    packet_count: usize,
    next_index: usize,
    sequence: SequenceNumber,
}

impl<P: AsRef<[u8]>> Fragmenter<P> {
    /// The packets of `payload` as transaction `transaction_id` on `stream`, each at most
    /// `limits.packet_size` bytes, with the ACK flag on all of them if `ack_requested`
    /// (\[REC\] §3.5). Refuses a packet size below [`MIN_PACKET_SIZE`] and a payload above
    /// `limits.max_transaction_size`.
    pub fn new(
        stream: StreamId,
        transaction_id: TransactionId,
        payload: P,
        ack_requested: bool,
        limits: Limits,
    ) -> Result<Self, BuildError> {
        let too_small = BuildError::PacketSizeTooSmall {
            packet_size: limits.packet_size,
            min: MIN_PACKET_SIZE,
        };
        if limits.packet_size < MIN_PACKET_SIZE {
            return Err(too_small);
        }
        let len = payload.as_ref().len();
        let limit = usize::from(limits.max_transaction_size);
        let too_large = BuildError::PayloadTooLarge { len, limit };
        if len > limit {
            return Err(too_large);
        }
        let total_length = u16::try_from(len).map_err(|_| too_large)?;
        let (_, first_header) = header_layout(TransactionType::First, false);
        let (_, next_header) = header_layout(TransactionType::Continuation, false);
        let chunker = Chunker::new(
            len,
            payload_capacity(limits.packet_size, first_header),
            payload_capacity(limits.packet_size, next_header),
        )
        .map_err(|_| too_small)?;
        Ok(Fragmenter {
            stream,
            transaction_id,
            ack_requested,
            payload,
            total_length,
            chunker,
            packet_count: chunker.count().max(1),
            next_index: 0,
            sequence: SequenceNumber::ZERO,
        })
    }

    /// How many packets the transaction takes.
    #[must_use]
    pub fn packet_count(&self) -> usize {
        self.packet_count
    }

    /// Whether every packet has been written.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.next_index >= self.packet_count
    }

    /// The transaction's payload length.
    #[must_use]
    pub fn payload_len(&self) -> usize {
        usize::from(self.total_length)
    }

    /// How much of the payload the packets written so far carried.
    #[must_use]
    pub fn payload_written(&self) -> usize {
        match self.next_index.checked_sub(1) {
            Some(last) if self.total_length > 0 => self.chunker.get(last).map_or(0, |r| r.end),
            _ => 0,
        }
    }

    /// Appends the next packet to `buf` and returns its length, or `None` once all are out.
    #[must_use]
    pub fn emit_next(&mut self, buf: &mut Vec<u8>) -> Option<usize> {
        if self.is_done() {
            return None;
        }
        let range = if self.total_length == 0 {
            0..0
        } else {
            self.chunker.get(self.next_index)?
        };
        let fragment = if self.next_index == 0 {
            Fragment::First {
                total_length: self.total_length,
            }
        } else if self.next_index + 1 == self.packet_count {
            Fragment::Last
        } else {
            Fragment::Continuation
        };
        let repr = TransportRepr {
            stream: self.stream,
            transaction_id: self.transaction_id,
            sequence: self.sequence,
            fragment,
            ack_requested: self.ack_requested,
            // The layout was made from this payload's length, so the range lies inside it.
            payload: self.payload.as_ref().get(range)?,
        };
        let len = repr.buffer_len();
        let start = buf.len();
        buf.resize(start + len, 0x00);
        // Sized by buffer_len with a payload under 0x10000, emit cannot fail; if it ever did,
        // `buf` is left as the caller gave it.
        if repr
            .emit(&mut TransportPacket::new_unchecked(&mut buf[start..]))
            .is_err()
        {
            buf.truncate(start);
            return None;
        }
        self.next_index += 1;
        self.sequence = self.sequence.next();
        Some(len)
    }
}

/// A transaction reassembled from its packets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completed {
    /// The stream it came on.
    pub stream: StreamId,
    /// Its ID; answer with this in the ACK/NACK.
    pub transaction_id: TransactionId,
    /// Whether any of its packets asked for an ACK/NACK (\[REC\] §3.5).
    pub ack_requested: bool,
    /// The whole payload.
    pub payload: Vec<u8>,
}

/// What one packet pushed into a [`Reassembler`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// The packet completed a transaction.
    Transaction(Completed),
    /// The packet was an ACK or NACK.
    Ack(AckRepr),
    /// The packet was taken; its transaction needs more.
    Partial,
}

/// What went wrong with a received packet.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReassemblyErrorKind {
    /// A data packet did not decode.
    Malformed(DecodeError),
    /// An ACK/NACK packet did not decode; it is never answered.
    MalformedAck(DecodeError),
    /// A continuation or last packet matched no open transaction on its stream.
    UnexpectedContinuation,
    /// A packet carried the wrong sequence number.
    Sequence {
        /// The sequence number due.
        expected: SequenceNumber,
        /// The one received.
        got: SequenceNumber,
    },
    /// The packets carried more bytes than the total length.
    Overflow,
    /// A last packet ended the transaction short of its total length.
    LengthMismatch,
    /// The total length exceeds the transaction size this receiver accepts.
    TooLarge {
        /// The total length announced.
        total_length: u16,
        /// The largest accepted.
        limit: u16,
    },
}

impl fmt::Display for ReassemblyErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReassemblyErrorKind::Malformed(e) => write!(f, "malformed packet: {e}"),
            ReassemblyErrorKind::MalformedAck(e) => write!(f, "malformed ACK/NACK: {e}"),
            ReassemblyErrorKind::UnexpectedContinuation => {
                f.write_str("continuation without an open transaction")
            }
            ReassemblyErrorKind::Sequence { expected, got } => {
                write!(f, "sequence {got} where {expected} was due")
            }
            ReassemblyErrorKind::Overflow => f.write_str("more bytes than the total length"),
            ReassemblyErrorKind::LengthMismatch => {
                f.write_str("last packet before the total length")
            }
            ReassemblyErrorKind::TooLarge {
                total_length,
                limit,
            } => write!(
                f,
                "transaction of {total_length} bytes over the limit of {limit}"
            ),
        }
    }
}

/// A received packet that was refused, with what is known of the transaction it belonged to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReassemblyError {
    /// The packet's stream, if it had a byte 0 naming a known stream.
    pub stream: Option<StreamId>,
    /// The packet's transaction ID, if it had a byte 0.
    pub transaction_id: Option<TransactionId>,
    /// What went wrong.
    pub kind: ReassemblyErrorKind,
}

impl ReassemblyError {
    /// The NACK to send back, result 0x01 as EMB sends; `None` when the stream or transaction
    /// is unknown, or the packet was itself an ACK/NACK.
    #[must_use]
    pub fn nack(&self) -> Option<AckRepr> {
        if let ReassemblyErrorKind::MalformedAck(_) = self.kind {
            return None;
        }
        Some(AckRepr::nack(
            self.stream?,
            self.transaction_id?,
            ResultCode::Unknown,
        ))
    }
}

impl fmt::Display for ReassemblyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AGT")?;
        if let Some(stream) = self.stream {
            write!(f, " {stream}")?;
        }
        if let Some(id) = self.transaction_id {
            write!(f, " txn {id}")?;
        }
        write!(f, ": {}", self.kind)
    }
}

impl From<ReassemblyError> for Malformed {
    fn from(e: ReassemblyError) -> Malformed {
        let (what, reason) = match e.kind {
            ReassemblyErrorKind::Malformed(reason) => (TRANSPORT_WHAT, reason),
            ReassemblyErrorKind::MalformedAck(reason) => (ACK_WHAT, reason),
            ReassemblyErrorKind::UnexpectedContinuation | ReassemblyErrorKind::Sequence { .. } => {
                (TRANSPORT_WHAT, DecodeError::BadValue)
            }
            ReassemblyErrorKind::Overflow | ReassemblyErrorKind::LengthMismatch => {
                (TRANSPORT_WHAT, DecodeError::LengthMismatch)
            }
            ReassemblyErrorKind::TooLarge { limit, .. } => (
                TRANSPORT_WHAT,
                DecodeError::TooLarge {
                    limit: usize::from(limit),
                },
            ),
        };
        Malformed { what, reason }
    }
}

/// A transaction being reassembled.
#[derive(Clone, Debug)]
struct Open {
    transaction_id: TransactionId,
    total_length: u16,
    next_sequence: SequenceNumber,
    ack_requested: bool,
    payload: Vec<u8>,
}

/// Rebuilds transactions from received packets, one buffer per stream (§3.4).
///
/// Feed it every value received, except the PV packet ([`is_pv_packet`]); ACK/NACK packets come
/// back as [`Received::Ack`]. On error, send [`ReassemblyError::nack`] if it gives one.
#[derive(Clone, Debug)]
pub struct Reassembler {
    max_transaction_size: u16,
    control: Option<Open>,
    ota: Option<Open>,
    alexa: Option<Open>,
}

impl Reassembler {
    /// A reassembler refusing transactions over `max_transaction_size` bytes: the T a gadget
    /// announces, or 0xFFFF on the orchestrator side.
    #[must_use]
    pub const fn new(max_transaction_size: u16) -> Self {
        Reassembler {
            max_transaction_size,
            control: None,
            ota: None,
            alexa: None,
        }
    }

    /// Forgets every open transaction, as after a disconnect.
    pub fn reset(&mut self) {
        *self = Reassembler::new(self.max_transaction_size);
    }

    /// Takes one received packet.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Received, ReassemblyError> {
        // Read byte 0 apart from the checked view, so that a packet too short or malformed
        // to decode can still be NACKed by stream and transaction.
        let stream = bytes
            .get(field::IDS)
            .and_then(|&b| StreamId::try_from((b & HIGH_NIBBLE) >> 4).ok());
        let transaction_id = bytes
            .get(field::IDS)
            .map(|&b| TransactionId(b & LOW_NIBBLE));
        let result = self.accept(bytes);
        result.map_err(|kind| {
            let error = ReassemblyError {
                stream,
                transaction_id,
                kind,
            };
            // The sender restarts a NACKed transaction, so whatever its stream held is void.
            if let (Some(stream), Some(_)) = (stream, error.nack()) {
                *self.slot(stream) = None;
            }
            error
        })
    }

    fn accept(&mut self, bytes: &[u8]) -> Result<Received, ReassemblyErrorKind> {
        let is_control = bytes
            .get(field::FLAGS)
            .is_some_and(|&b| TransactionType::from_flags(b) == TransactionType::Control);
        let packet = TransportPacket::new_checked(bytes).map_err(|e| {
            if is_control {
                ReassemblyErrorKind::MalformedAck(e.reason)
            } else {
                ReassemblyErrorKind::Malformed(e.reason)
            }
        })?;
        if is_control {
            return AckRepr::parse(&packet)
                .map(Received::Ack)
                .map_err(|e| ReassemblyErrorKind::MalformedAck(e.reason));
        }
        let repr =
            TransportRepr::parse(&packet).map_err(|e| ReassemblyErrorKind::Malformed(e.reason))?;
        let limit = self.max_transaction_size;
        let slot = self.slot(repr.stream);
        let open = match repr.fragment {
            Fragment::First { total_length } => {
                // §3.4: a first packet opens the stream's buffer; one still open is abandoned.
                *slot = None;
                if repr.sequence != SequenceNumber::ZERO {
                    return Err(ReassemblyErrorKind::Sequence {
                        expected: SequenceNumber::ZERO,
                        got: repr.sequence,
                    });
                }
                if total_length > limit {
                    return Err(ReassemblyErrorKind::TooLarge {
                        total_length,
                        limit,
                    });
                }
                // Bounded by `limit`, so a peer cannot make us reserve more than that.
                let mut payload = Vec::with_capacity(usize::from(total_length));
                // Within the total: TransportRepr::parse checked it.
                payload.extend_from_slice(repr.payload);
                slot.insert(Open {
                    transaction_id: repr.transaction_id,
                    total_length,
                    next_sequence: repr.sequence.next(),
                    ack_requested: repr.ack_requested,
                    payload,
                })
            }
            Fragment::Continuation | Fragment::Last => {
                let open = slot
                    .as_mut()
                    .filter(|open| open.transaction_id == repr.transaction_id)
                    .ok_or(ReassemblyErrorKind::UnexpectedContinuation)?;
                if repr.sequence != open.next_sequence {
                    return Err(ReassemblyErrorKind::Sequence {
                        expected: open.next_sequence,
                        got: repr.sequence,
                    });
                }
                if open.payload.len().saturating_add(repr.payload.len())
                    > usize::from(open.total_length)
                {
                    return Err(ReassemblyErrorKind::Overflow);
                }
                open.payload.extend_from_slice(repr.payload);
                open.next_sequence = open.next_sequence.next();
                open.ack_requested |= repr.ack_requested;
                open
            }
        };
        // §3.2: complete once every byte is in, whatever the type field says.
        if open.payload.len() == usize::from(open.total_length) {
            let ack_requested = open.ack_requested;
            let payload = core::mem::take(&mut open.payload);
            *slot = None;
            return Ok(Received::Transaction(Completed {
                stream: repr.stream,
                transaction_id: repr.transaction_id,
                ack_requested,
                payload,
            }));
        }
        if repr.fragment == Fragment::Last {
            return Err(ReassemblyErrorKind::LengthMismatch);
        }
        Ok(Received::Partial)
    }

    /// The reassembly buffer of `stream`.
    fn slot(&mut self, stream: StreamId) -> &mut Option<Open> {
        match stream {
            StreamId::Control => &mut self.control,
            StreamId::Ota => &mut self.ota,
            StreamId::Alexa => &mut self.alexa,
        }
    }
}

/// Checks that `buffer` can take a packet of `needed` bytes.
fn ensure_room(buffer: &[u8], needed: usize) -> Result<(), BuildError> {
    if buffer.len() < needed {
        return Err(BuildError::BufferTooShort {
            needed,
            available: buffer.len(),
        });
    }
    Ok(())
}

/// The big-endian u16 at `at`; the caller has checked the length.
fn read_u16(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([data[at], data[at + 1]])
}

/// Writes `value` big-endian at `at`; the caller has checked the length.
fn write_u16(data: &mut [u8], at: usize, value: u16) {
    data[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;
    use alloc::string::ToString;
    use alloc::vec;

    const fn txn(id: u8) -> TransactionId {
        TransactionId(id)
    }

    const fn seq(n: u8) -> SequenceNumber {
        SequenceNumber(n)
    }

    fn limits(packet_size: u16) -> Limits {
        Limits {
            packet_size,
            max_transaction_size: 0xFFFF,
        }
    }

    #[test]
    fn whole_packets_within_rounds_down_to_a_packet_boundary() {
        // P 20: 14 bytes in the first packet, 17 in each after it.
        let l = limits(20);
        let got: Vec<usize> = [0, 13, 14, 30, 31, 47, 48, 1001]
            .into_iter()
            .map(|b| l.whole_packets_within(b))
            .collect();
        assert_eq!(got, [0, 13, 14, 14, 31, 31, 48, 1000]);
    }

    #[test]
    fn payload_written_follows_the_packets_out() {
        let mut f =
            Fragmenter::new(StreamId::Ota, txn(1), vec![7u8; 40], false, limits(20)).unwrap();
        assert_eq!((f.payload_len(), f.payload_written()), (40, 0));
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        while f.emit_next(&mut buf).is_some() {
            seen.push(f.payload_written());
        }
        assert_eq!(seen, [14, 31, 40]);
        let mut empty =
            Fragmenter::new(StreamId::Ota, txn(1), Vec::new(), false, limits(20)).unwrap();
        assert!(empty.emit_next(&mut buf).is_some());
        assert_eq!((empty.payload_len(), empty.payload_written()), (0, 0));
    }

    #[test]
    fn payload_of_packets_is_what_that_many_packets_carry() {
        // P 20: the first packet leaves 14 bytes (6 of header), each continuation 17; P 300
        // needs two-byte lengths, a byte less each (293, then 296).
        for (p, counts) in [(20, [0, 14, 31, 48]), (300, [0, 293, 589, 885])] {
            let l = limits(p);
            for (n, want) in counts.into_iter().enumerate() {
                assert_eq!(l.payload_of_packets(n), want, "P {p}, {n} packets");
                if n > 0 {
                    let fits = fragment(StreamId::Ota, txn(1), &vec![7; want], false, l);
                    assert_eq!(fits.len(), n);
                    let over = fragment(StreamId::Ota, txn(1), &vec![7; want + 1], false, l);
                    assert_eq!(over.len(), n + 1);
                }
            }
        }
    }

    /// Every packet of a transaction, each as its own value.
    fn fragment(
        stream: StreamId,
        id: TransactionId,
        payload: &[u8],
        ack: bool,
        limits: Limits,
    ) -> Vec<Vec<u8>> {
        let mut f = Fragmenter::new(stream, id, payload, ack, limits).unwrap();
        let mut packets = Vec::new();
        loop {
            let mut buf = vec![0xAA]; // emit_next appends: what is there must survive.
            match f.emit_next(&mut buf) {
                Some(len) => {
                    assert_eq!(buf[0], 0xAA);
                    assert_eq!(buf.len(), len + 1);
                    packets.push(buf.split_off(1));
                }
                None => break,
            }
        }
        assert!(f.is_done());
        assert_eq!(packets.len(), f.packet_count());
        packets
    }

    fn reassemble(packets: &[Vec<u8>], max: u16) -> Completed {
        let mut r = Reassembler::new(max);
        let (last, rest) = packets.split_last().unwrap();
        for p in rest {
            assert_eq!(r.push(p), Ok(Received::Partial));
        }
        match r.push(last) {
            Ok(Received::Transaction(done)) => done,
            other => panic!("expected a transaction, got {other:?}"),
        }
    }

    fn malformed(reason: DecodeError) -> ReassemblyErrorKind {
        ReassemblyErrorKind::Malformed(reason)
    }

    fn ack_bytes(repr: &AckRepr) -> Vec<u8> {
        let mut buf = vec![0xFF; repr.buffer_len()];
        repr.emit(&mut TransportPacket::new_unchecked(&mut buf[..]))
            .unwrap();
        buf
    }

    fn transport_bytes(repr: &TransportRepr<'_>) -> Vec<u8> {
        let mut buf = vec![0xFF; repr.buffer_len()];
        repr.emit(&mut TransportPacket::new_unchecked(&mut buf[..]))
            .unwrap();
        buf
    }

    #[test]
    fn emb_capture_decodes() {
        let bytes = [0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x08, 0x14];
        let packet = TransportPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.stream_id(), 0x0);
        assert_eq!(packet.transaction_id(), txn(0));
        assert_eq!(packet.sequence(), seq(0));
        assert_eq!(packet.transaction_type(), TransactionType::First);
        assert!(!packet.ack_flag());
        assert!(!packet.length_extender());
        assert_eq!(packet.reserved(), Some(0x00));
        assert_eq!(packet.total_length(), Some(2));
        assert_eq!(packet.header_len(), 6);
        assert_eq!(packet.payload_len(), 2);
        assert_eq!(packet.payload(), [0x08, 0x14]);

        let repr = TransportRepr::parse(&packet).unwrap();
        assert_eq!(
            repr,
            TransportRepr {
                stream: StreamId::Control,
                transaction_id: txn(0),
                sequence: seq(0),
                fragment: Fragment::First { total_length: 2 },
                ack_requested: false,
                payload: &[0x08, 0x14],
            }
        );
        assert_eq!(transport_bytes(&repr), bytes);
        assert_eq!(repr.to_string(), "AGT control txn 0 seq 0 first of 2 len 2");

        // The same single-packet transaction, fragmented and reassembled.
        let packets = fragment(StreamId::Control, txn(0), &[0x08, 0x14], false, limits(20));
        assert_eq!(packets, [bytes.to_vec()]);
        let done = reassemble(&packets, 0xFFFF);
        assert_eq!(
            done,
            Completed {
                stream: StreamId::Control,
                transaction_id: txn(0),
                ack_requested: false,
                payload: vec![0x08, 0x14],
            }
        );

        // The second capture: transaction 2, command 28.
        let bytes = [0x02, 0x00, 0x00, 0x00, 0x02, 0x02, 0x08, 0x1C];
        let mut r = Reassembler::new(5000);
        let Ok(Received::Transaction(done)) = r.push(&bytes) else {
            panic!("single-packet transaction")
        };
        assert_eq!(done.transaction_id, txn(2));
        assert_eq!(done.payload, [0x08, 0x1C]);
    }

    #[test]
    fn ack_and_nack_vectors() {
        let bytes = [0x03, 0x0E, 0x00, 0x02, 0x01, 0x00];
        let packet = TransportPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.transaction_type(), TransactionType::Control);
        assert_eq!(packet.total_length(), None);
        assert_eq!(packet.header_len(), 4);
        let ack = AckRepr::parse(&packet).unwrap();
        assert_eq!(ack, AckRepr::ack(StreamId::Control, txn(3)));
        assert!(ack.is_positive());
        assert_eq!(ack_bytes(&ack), bytes);
        assert_eq!(ack.to_string(), "AGT ACK control txn 3 (success)");
        assert_eq!(
            TransportRepr::parse(&packet).unwrap_err().reason,
            DecodeError::BadValue
        );

        // NACK, byte 1 = 0x0C: OTA stream, transaction 5, unsupported.
        let nack = AckRepr::nack(StreamId::Ota, txn(5), ResultCode::Unsupported);
        let bytes = ack_bytes(&nack);
        assert_eq!(bytes, [0x25, 0x0C, 0x00, 0x02, 0x01, 0x03]);
        let parsed = AckRepr::parse(&TransportPacket::new_checked(&bytes[..]).unwrap()).unwrap();
        assert_eq!(parsed, nack);
        assert!(!parsed.is_positive());
        assert_eq!(parsed.to_string(), "AGT NACK ota txn 5 (unsupported)");

        // Byte 4 is exposed whatever it holds: an AMA-style abort for a bad sequence.
        let bytes = [0x61, 0x0C, 0x00, 0x02, 0x02, 0x04];
        let mut r = Reassembler::new(0xFFFF);
        let Ok(Received::Ack(abort)) = r.push(&bytes) else {
            panic!("control packet")
        };
        assert_eq!(abort.stream, StreamId::Alexa);
        assert_eq!(abort.control_type, 0x02);
        assert_eq!(abort.result, ResultCode::Other(0x04));
        assert_eq!(ack_bytes(&abort), bytes);
        assert_eq!(
            abort.to_string(),
            "AGT NACK alexa txn 1 (code 0x04) control type 0x02"
        );

        // An ACK bit with a failure code is still a NACK ([REC] §3.5).
        let odd = AckRepr {
            result: ResultCode::Unknown,
            ..AckRepr::ack(StreamId::Control, txn(0))
        };
        assert!(!odd.is_positive());
        for code in 0..=0xFF {
            assert_eq!(u8::from(ResultCode::from(code)), code);
        }
    }

    #[test]
    fn bad_ack_packets_are_refused_and_not_answered() {
        let cases: [(&[u8], DecodeError); 5] = [
            // Payload of three bytes.
            (
                &[0x03, 0x0E, 0x00, 0x03, 0x01, 0x00, 0x00],
                DecodeError::LengthMismatch,
            ),
            // Extender set: ACK/NACK packets are always 6 bytes with a 1-byte length.
            (
                &[0x03, 0x0F, 0x00, 0x00, 0x02, 0x01, 0x00],
                DecodeError::BadValue,
            ),
            // Stream 5.
            (&[0x53, 0x0E, 0x00, 0x02, 0x01, 0x00], DecodeError::BadValue),
            // Cut short.
            (
                &[0x03, 0x0E, 0x00, 0x02, 0x01],
                DecodeError::Truncated {
                    needed: 6,
                    available: 5,
                },
            ),
            // One byte too many.
            (
                &[0x03, 0x0E, 0x00, 0x02, 0x01, 0x00, 0x00],
                DecodeError::TrailingBytes,
            ),
        ];
        for (bytes, reason) in cases {
            let mut r = Reassembler::new(0xFFFF);
            let err = r.push(bytes).unwrap_err();
            assert_eq!(
                err.kind,
                ReassemblyErrorKind::MalformedAck(reason),
                "{bytes:02x?}"
            );
            assert_eq!(err.nack(), None);
            assert_eq!(Malformed::from(err).what, ACK_WHAT);
        }
    }

    #[test]
    fn pv_packet_round_trip() {
        let mut bytes = vec![0xFE, 0x03, 0x03, 0x00, 0x00, 0xF7, 0x13, 0x88];
        bytes.resize(20, 0x00);
        assert!(is_pv_packet(&bytes));
        let packet = PvPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.identifier(), 0xFE03);
        assert_eq!(packet.reserved(), [0; 12]);
        let repr = PvRepr::parse(&packet).unwrap();
        assert_eq!(repr, PvRepr::new(247, 5000));
        assert_eq!(
            repr.limits(),
            Limits {
                packet_size: 247,
                max_transaction_size: 5000
            }
        );
        assert_eq!(
            repr.to_string(),
            "AGT PV 3.0 packet size 247 max transaction 5000"
        );

        let mut out = vec![0xFF; repr.buffer_len()];
        repr.emit(&mut PvPacket::new_unchecked(&mut out[..]))
            .unwrap();
        assert_eq!(out, bytes);
        let mut short = [0u8; 19];
        assert_eq!(
            repr.emit(&mut PvPacket::new_unchecked(&mut short[..])),
            Err(BuildError::BufferTooShort {
                needed: 20,
                available: 19
            })
        );

        // Reserved bytes and bytes past 20 are ignored; a minor version is taken as sent.
        let mut lenient = bytes.clone();
        lenient[3] = 0x07;
        lenient[19] = 0x55;
        lenient.push(0x00);
        let parsed = PvRepr::parse(&PvPacket::new_checked(&lenient[..]).unwrap()).unwrap();
        assert_eq!(parsed.minor, 7);

        // Stream packets are not PV packets; the first byte 0xFE would be stream 15.
        assert!(!is_pv_packet(&[
            0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x08, 0x14
        ]));
        assert!(!is_pv_packet(&[]));
    }

    #[test]
    fn bad_pv_packets_are_refused() {
        let good: Vec<u8> = [0xFE, 0x03, 0x03, 0x00, 0x00, 0xF7, 0x13, 0x88]
            .into_iter()
            .chain([0; 12])
            .collect();
        for len in 0..20 {
            let err = PvPacket::new_checked(&good[..len]).unwrap_err();
            assert_eq!(
                err.reason,
                DecodeError::Truncated {
                    needed: 20,
                    available: len
                }
            );
            assert_eq!(err.what, PV_WHAT);
            // parse checks the length too, so an unchecked view cannot make it panic.
            let unchecked = PvPacket::new_unchecked(&good[..len]);
            assert!(PvRepr::parse(&unchecked).is_err());
        }
        let bad_value = |at: usize, value: u8| {
            let mut bytes = good.clone();
            bytes[at] = value;
            PvRepr::parse(&PvPacket::new_checked(&bytes[..]).unwrap()).unwrap_err()
        };
        // Identifier, major version 2 or 4, packet size 7, transaction size 0.
        for (at, value) in [(0, 0xFF), (1, 0x04), (2, 0x02), (2, 0x04)] {
            assert_eq!(bad_value(at, value).reason, DecodeError::BadValue);
        }
        let mut tiny = good.clone();
        tiny[4..8].copy_from_slice(&[0x00, 0x07, 0x13, 0x88]);
        assert!(PvRepr::parse(&PvPacket::new_checked(&tiny[..]).unwrap()).is_err());
        tiny[4..8].copy_from_slice(&[0x00, 0x08, 0x00, 0x00]);
        assert!(PvRepr::parse(&PvPacket::new_checked(&tiny[..]).unwrap()).is_err());
        tiny[4..8].copy_from_slice(&[0x00, 0x08, 0x00, 0x01]);
        assert!(PvRepr::parse(&PvPacket::new_checked(&tiny[..]).unwrap()).is_ok());
    }

    #[test]
    fn extender_headers_are_pinned() {
        let payload: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        // First packet of 300 bytes: OTA stream, transaction 1, ACK wanted.
        let first = TransportRepr {
            stream: StreamId::Ota,
            transaction_id: txn(1),
            sequence: seq(0),
            fragment: Fragment::First { total_length: 300 },
            ack_requested: true,
            payload: &payload,
        };
        assert!(first.needs_extender());
        let bytes = transport_bytes(&first);
        assert_eq!(bytes.len(), 307);
        assert_eq!(bytes[..7], [0x21, 0x03, 0x00, 0x01, 0x2C, 0x01, 0x2C]);
        assert_eq!(bytes[7..], payload[..]);
        let packet = TransportPacket::new_checked(&bytes[..]).unwrap();
        assert!(packet.length_extender());
        assert_eq!(packet.header_len(), 7);
        assert_eq!(TransportRepr::parse(&packet).unwrap(), first);

        // A continuation of 300 bytes at sequence 1: 0x10 | type 1 << 2 | ACK | extender.
        let next = TransportRepr {
            sequence: seq(1),
            fragment: Fragment::Continuation,
            ..first
        };
        let bytes = transport_bytes(&next);
        assert_eq!(bytes[..4], [0x21, 0x17, 0x01, 0x2C]);
        let packet = TransportPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.reserved(), None);
        assert_eq!(packet.total_length(), None);
        assert_eq!(TransportRepr::parse(&packet).unwrap(), next);

        // The same 255 bytes fit a 1-byte length; a last packet, sequence 15.
        let last = TransportRepr {
            sequence: seq(15),
            fragment: Fragment::Last,
            payload: &payload[..255],
            ..first
        };
        assert!(!last.needs_extender());
        let bytes = transport_bytes(&last);
        assert_eq!(bytes[..3], [0x21, 0xFA, 0xFF]);
        assert_eq!(bytes.len(), 258);

        // An extender on a short payload is accepted as sent.
        let bytes = [0x60, 0x05, 0x00, 0x02, 0xAB, 0xCD];
        let packet = TransportPacket::new_checked(&bytes[..]).unwrap();
        let repr = TransportRepr::parse(&packet).unwrap();
        assert_eq!(repr.fragment, Fragment::Continuation);
        assert_eq!(repr.payload, [0xAB, 0xCD]);
    }

    #[test]
    fn emit_refuses_short_buffers_and_huge_payloads() {
        let payload = vec![0u8; 0x1_0000];
        let repr = TransportRepr {
            stream: StreamId::Ota,
            transaction_id: txn(0),
            sequence: seq(0),
            fragment: Fragment::Continuation,
            ack_requested: false,
            payload: &payload,
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        assert_eq!(
            repr.emit(&mut TransportPacket::new_unchecked(&mut buf[..])),
            Err(BuildError::PayloadTooLarge {
                len: 0x1_0000,
                limit: 0xFFFF
            })
        );
        let repr = TransportRepr {
            payload: &payload[..10],
            ..repr
        };
        let mut buf = [0u8; 12];
        assert_eq!(
            repr.emit(&mut TransportPacket::new_unchecked(&mut buf[..])),
            Err(BuildError::BufferTooShort {
                needed: 13,
                available: 12
            })
        );
        let ack = AckRepr::ack(StreamId::Control, txn(0));
        let mut buf = [0u8; 5];
        assert!(ack
            .emit(&mut TransportPacket::new_unchecked(&mut buf[..]))
            .is_err());
        assert_eq!(
            Misuse::from(BuildError::BufferTooShort {
                needed: 6,
                available: 5
            }),
            Misuse::InvalidArgument("buffer shorter than the AGT packet")
        );
    }

    /// Checks the packets of a 1000-byte transaction at packet size `p` and returns them.
    fn fragment_1000(p: u16) -> Vec<Vec<u8>> {
        let payload: Vec<u8> = (0..1000u32).map(|i| (i * 31 + 7) as u8).collect();
        let packets = fragment(StreamId::Ota, txn(9), &payload, true, limits(p));
        for (i, bytes) in packets.iter().enumerate() {
            assert!(bytes.len() <= usize::from(p), "packet {i} at P={p}");
            let packet = TransportPacket::new_checked(&bytes[..]).unwrap();
            let repr = TransportRepr::parse(&packet).unwrap();
            assert_eq!(repr.stream, StreamId::Ota);
            assert_eq!(repr.transaction_id, txn(9));
            assert_eq!(usize::from(repr.sequence.get()), i % 16);
            assert!(repr.ack_requested, "ACK flag on every packet");
            assert_eq!(packet.length_extender(), repr.payload.len() > 255);
            let expected = match i {
                0 => Fragment::First { total_length: 1000 },
                _ if i + 1 == packets.len() => Fragment::Last,
                _ => Fragment::Continuation,
            };
            assert_eq!(repr.fragment, expected);
        }
        let done = reassemble(&packets, 1000);
        assert_eq!(done.payload, payload);
        assert!(done.ack_requested);
        packets
    }

    #[test]
    fn fragmentation_at_20_wraps_sequences() {
        let packets = fragment_1000(20);
        // 14 bytes, then 17 per packet: 986 = 58 × 17, so 59 packets, the last one full.
        assert_eq!(packets.len(), 59);
        assert_eq!(packets[0][..6], [0x29, 0x02, 0x00, 0x03, 0xE8, 0x0E]);
        assert_eq!(packets[15][..3], [0x29, 0xF6, 0x11]);
        assert_eq!(
            packets[16][..3],
            [0x29, 0x06, 0x11],
            "sequence wraps 15 to 0"
        );
        assert_eq!(packets[58][..3], [0x29, 0xAA, 0x11]);
    }

    #[test]
    fn fragmentation_at_247_and_512() {
        let packets = fragment_1000(247);
        // 241, then 244 per packet, then the 27 left over.
        let lens: Vec<usize> = packets.iter().map(Vec::len).collect();
        assert_eq!(lens, [247, 247, 247, 247, 30]);

        // P − 6 exceeds 255, so both packets carry the extender and one byte less.
        let packets = fragment_1000(512);
        let lens: Vec<usize> = packets.iter().map(Vec::len).collect();
        assert_eq!(lens, [512, 499]);
        assert_eq!(packets[0][..7], [0x29, 0x03, 0x00, 0x03, 0xE8, 0x01, 0xF9]);
        assert_eq!(packets[1][..4], [0x29, 0x1B, 0x01, 0xEF]);
    }

    #[test]
    fn fragmentation_around_the_extender_boundary() {
        // At P = 262, P − 6 = 256 would need the extender, which leaves 255: no extender.
        let payload = vec![0x5A; 300];
        let packets = fragment(StreamId::Alexa, txn(4), &payload, false, limits(262));
        let lens: Vec<usize> = packets.iter().map(Vec::len).collect();
        assert_eq!(lens, [261, 48]);
        assert_eq!(packets[0][..6], [0x64, 0x00, 0x00, 0x01, 0x2C, 0xFF]);
        assert_eq!(reassemble(&packets, 0xFFFF).payload, payload);

        // Packet size 0xFFFF and the largest transaction: two packets with extenders.
        let payload = vec![0xC3; 0xFFFF];
        let packets = fragment(StreamId::Ota, txn(0), &payload, false, limits(0xFFFF));
        let lens: Vec<usize> = packets.iter().map(Vec::len).collect();
        assert_eq!(lens, [0xFFFF, 10]);
        assert_eq!(reassemble(&packets, 0xFFFF).payload, payload);
    }

    #[test]
    fn empty_and_tiny_transactions() {
        let packets = fragment(StreamId::Control, txn(7), &[], true, limits(8));
        assert_eq!(packets, [vec![0x07, 0x02, 0x00, 0x00, 0x00, 0x00]]);
        let done = reassemble(&packets, 0);
        assert!(done.payload.is_empty());
        assert!(done.ack_requested);

        // The smallest packet size still carries a command whole.
        let packets = fragment(StreamId::Control, txn(0), &[0x08, 0x14], false, limits(8));
        assert_eq!(packets.len(), 1);
        let packets = fragment(
            StreamId::Control,
            txn(0),
            &[1, 2, 3, 4, 5, 6, 7, 8],
            false,
            limits(8),
        );
        let lens: Vec<usize> = packets.iter().map(Vec::len).collect();
        assert_eq!(lens, [8, 8, 4]);
    }

    #[test]
    fn fragmenter_refuses_bad_arguments() {
        let err = |payload: &[u8], packet_size, max_transaction_size| {
            Fragmenter::new(
                StreamId::Ota,
                txn(0),
                payload,
                false,
                Limits {
                    packet_size,
                    max_transaction_size,
                },
            )
            .unwrap_err()
        };
        assert_eq!(
            err(&[1], 7, 100),
            BuildError::PacketSizeTooSmall {
                packet_size: 7,
                min: 8
            }
        );
        assert_eq!(
            err(&[0; 101], 20, 100),
            BuildError::PayloadTooLarge {
                len: 101,
                limit: 100
            }
        );
        assert_eq!(
            err(&[0; 0x1_0000], 20, 0xFFFF),
            BuildError::PayloadTooLarge {
                len: 0x1_0000,
                limit: 0xFFFF
            }
        );
        assert_eq!(
            err(&[1], 0, 1).to_string(),
            "AGT packet size 0 is below the minimum of 8"
        );
        // An owned payload works as well as a borrowed one.
        let mut f =
            Fragmenter::new(StreamId::Ota, txn(1), vec![1u8, 2, 3], false, limits(20)).unwrap();
        let mut buf = Vec::new();
        assert_eq!(f.emit_next(&mut buf), Some(9));
        assert_eq!(f.emit_next(&mut buf), None);
    }

    #[test]
    fn wrong_sequence_is_nacked() {
        let payload = vec![0x11; 40];
        let packets = fragment(StreamId::Control, txn(1), &payload, true, limits(20));
        assert_eq!(packets.len(), 3);
        let mut r = Reassembler::new(0xFFFF);
        assert_eq!(r.push(&packets[0]), Ok(Received::Partial));
        let err = r.push(&packets[2]).unwrap_err();
        assert_eq!(
            err,
            ReassemblyError {
                stream: Some(StreamId::Control),
                transaction_id: Some(txn(1)),
                kind: ReassemblyErrorKind::Sequence {
                    expected: seq(1),
                    got: seq(2)
                },
            }
        );
        assert_eq!(
            ack_bytes(&err.nack().unwrap()),
            [0x01, 0x0C, 0x00, 0x02, 0x01, 0x01]
        );
        assert_eq!(
            err.to_string(),
            "AGT control txn 1: sequence 2 where 1 was due"
        );
        assert_eq!(Malformed::from(err).reason, DecodeError::BadValue);
        // The transaction was dropped: its next packet no longer fits anywhere.
        assert_eq!(
            r.push(&packets[1]).unwrap_err().kind,
            ReassemblyErrorKind::UnexpectedContinuation
        );
        // The sender restarts it from the first packet.
        for p in &packets[..2] {
            assert_eq!(r.push(p), Ok(Received::Partial));
        }
        assert!(matches!(r.push(&packets[2]), Ok(Received::Transaction(_))));

        // A first packet must carry sequence 0.
        let mut bad_first = packets[0].clone();
        bad_first[1] |= 0x30;
        assert_eq!(
            r.push(&bad_first).unwrap_err().kind,
            ReassemblyErrorKind::Sequence {
                expected: seq(0),
                got: seq(3)
            }
        );
    }

    #[test]
    fn continuation_without_first() {
        let mut r = Reassembler::new(0xFFFF);
        let err = r.push(&[0x23, 0x18, 0x01, 0xAA]).unwrap_err();
        assert_eq!(err.kind, ReassemblyErrorKind::UnexpectedContinuation);
        assert_eq!(
            err.nack(),
            Some(AckRepr::nack(StreamId::Ota, txn(3), ResultCode::Unknown))
        );

        // A continuation for another transaction on the same stream abandons the open one.
        let packets = fragment(StreamId::Ota, txn(4), &[0x22; 30], false, limits(20));
        assert_eq!(r.push(&packets[0]), Ok(Received::Partial));
        let mut other = packets[1].clone();
        other[0] = 0x25;
        assert_eq!(
            r.push(&other).unwrap_err().kind,
            ReassemblyErrorKind::UnexpectedContinuation
        );
        assert_eq!(
            r.push(&packets[1]).unwrap_err().kind,
            ReassemblyErrorKind::UnexpectedContinuation
        );
    }

    #[test]
    fn too_large_transactions_are_refused() {
        let payload = vec![0x33; 600];
        let packets = fragment(StreamId::Alexa, txn(2), &payload, false, limits(247));
        let mut r = Reassembler::new(599);
        let err = r.push(&packets[0]).unwrap_err();
        assert_eq!(
            err.kind,
            ReassemblyErrorKind::TooLarge {
                total_length: 600,
                limit: 599
            }
        );
        assert_eq!(err.nack().unwrap().stream, StreamId::Alexa);
        assert_eq!(
            Malformed::from(err).reason,
            DecodeError::TooLarge { limit: 599 }
        );
        assert_eq!(
            r.push(&packets[1]).unwrap_err().kind,
            ReassemblyErrorKind::UnexpectedContinuation
        );
        assert_eq!(reassemble(&packets, 600).payload, payload);
    }

    #[test]
    fn length_faults() {
        let mut r = Reassembler::new(0xFFFF);
        // A payload length field larger than the bytes present.
        let err = r
            .push(&[0x00, 0x00, 0x00, 0x00, 0x03, 0x03, 0x08, 0x14])
            .unwrap_err();
        assert_eq!(
            err.kind,
            malformed(DecodeError::Truncated {
                needed: 9,
                available: 8
            })
        );
        assert_eq!(
            ack_bytes(&err.nack().unwrap()),
            [0x00, 0x0C, 0x00, 0x02, 0x01, 0x01]
        );
        // Bytes after the payload.
        let err = r
            .push(&[0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x08, 0x14, 0x00])
            .unwrap_err();
        assert_eq!(err.kind, malformed(DecodeError::TrailingBytes));
        // A first packet carrying more than its total length.
        let err = r
            .push(&[0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x08, 0x14])
            .unwrap_err();
        assert_eq!(err.kind, malformed(DecodeError::LengthMismatch));
        // An unknown stream cannot be NACKed.
        let err = r
            .push(&[0x10, 0x00, 0x00, 0x00, 0x02, 0x02, 0x08, 0x14])
            .unwrap_err();
        assert_eq!(err.kind, malformed(DecodeError::BadValue));
        assert_eq!((err.stream, err.transaction_id), (None, Some(txn(0))));
        assert_eq!(err.nack(), None);
        let err = r.push(&[]).unwrap_err();
        assert_eq!(
            (err.stream, err.transaction_id, err.nack()),
            (None, None, None)
        );

        // Overflow: a continuation carrying past the total length.
        assert_eq!(
            r.push(&[0x61, 0x00, 0x00, 0x00, 0x04, 0x02, 0x01, 0x02]),
            Ok(Received::Partial)
        );
        let err = r.push(&[0x61, 0x14, 0x03, 0x03, 0x04, 0x05]).unwrap_err();
        assert_eq!(err.kind, ReassemblyErrorKind::Overflow);
        assert_eq!(
            err.nack(),
            Some(AckRepr::nack(StreamId::Alexa, txn(1), ResultCode::Unknown))
        );
        assert_eq!(Malformed::from(err).reason, DecodeError::LengthMismatch);

        // A last packet before the total length is reached.
        assert_eq!(
            r.push(&[0x61, 0x00, 0x00, 0x00, 0x04, 0x02, 0x01, 0x02]),
            Ok(Received::Partial)
        );
        let err = r.push(&[0x61, 0x18, 0x01, 0x03]).unwrap_err();
        assert_eq!(err.kind, ReassemblyErrorKind::LengthMismatch);
        assert_eq!(
            err.to_string(),
            "AGT alexa txn 1: last packet before the total length"
        );

        // Completion goes by bytes, not by type: a continuation may end a transaction.
        assert_eq!(
            r.push(&[0x61, 0x00, 0x00, 0x00, 0x04, 0x02, 0x01, 0x02]),
            Ok(Received::Partial)
        );
        let Ok(Received::Transaction(done)) = r.push(&[0x61, 0x14, 0x02, 0x03, 0x04]) else {
            panic!("complete by length")
        };
        assert_eq!(done.payload, [1, 2, 3, 4]);
    }

    #[test]
    fn truncated_headers_are_malformed() {
        let headers: [&[u8]; 5] = [
            &[0x00, 0x00, 0x00, 0x00, 0x00, 0x00],       // first
            &[0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00], // first, extender
            &[0x00, 0x14, 0x00],                         // continuation
            &[0x00, 0x19, 0x00, 0x00],                   // last, extender
            &[0x00, 0x0E, 0x00, 0x00],                   // control
        ];
        for header in headers {
            let packet = TransportPacket::new_checked(header).unwrap();
            assert_eq!(packet.header_len(), header.len());
            assert!(packet.payload().is_empty());
            for len in 0..header.len() {
                let cut = &header[..len];
                let needed = if len < 2 { 2 } else { header.len() };
                let truncated = DecodeError::Truncated {
                    needed,
                    available: len,
                };
                assert_eq!(
                    TransportPacket::new_checked(cut).unwrap_err(),
                    Malformed {
                        what: TRANSPORT_WHAT,
                        reason: truncated
                    }
                );
                // The reprs check the length themselves.
                let unchecked = TransportPacket::new_unchecked(cut);
                assert!(TransportRepr::parse(&unchecked).is_err());
                assert!(AckRepr::parse(&unchecked).is_err());
                let err = Reassembler::new(0xFFFF).push(cut).unwrap_err();
                assert!(matches!(
                    err.kind,
                    ReassemblyErrorKind::Malformed(DecodeError::Truncated { .. })
                        | ReassemblyErrorKind::MalformedAck(DecodeError::Truncated { .. })
                ));
            }
        }
    }

    #[test]
    fn streams_reassemble_independently_and_latch_the_ack() {
        let control = fragment(StreamId::Control, txn(1), &[0x0C; 50], false, limits(20));
        let mut ota = fragment(StreamId::Ota, txn(1), &[0x0D; 50], false, limits(20));
        // Only a middle packet asks for an answer: the request is latched.
        ota[1][1] |= ACK_BIT;
        assert_eq!(ota.len(), 4);
        let mut r = Reassembler::new(0xFFFF);
        let mut done = Vec::new();
        for (c, o) in control.iter().zip(&ota) {
            for p in [c, o] {
                if let Received::Transaction(t) = r.push(p).unwrap() {
                    done.push(t);
                }
            }
        }
        assert_eq!(done.len(), 2);
        assert_eq!(
            (done[0].stream, done[0].ack_requested),
            (StreamId::Control, false)
        );
        assert_eq!(
            (done[1].stream, done[1].ack_requested),
            (StreamId::Ota, true)
        );
        assert_eq!(done[1].payload, [0x0D; 50]);

        // A new first packet replaces an open transaction on its stream.
        let again = fragment(StreamId::Control, txn(2), &[0x0E; 30], false, limits(20));
        assert_eq!(r.push(&control[0]), Ok(Received::Partial));
        assert_eq!(r.push(&again[0]), Ok(Received::Partial));
        assert_eq!(
            r.push(&control[1]).unwrap_err().kind,
            ReassemblyErrorKind::UnexpectedContinuation
        );
        assert_eq!(r.push(&again[0]), Ok(Received::Partial));
        assert!(
            matches!(r.push(&again[1]), Ok(Received::Transaction(t)) if t.payload == [0x0E; 30])
        );

        // reset() forgets open transactions.
        assert_eq!(r.push(&again[0]), Ok(Received::Partial));
        r.reset();
        assert_eq!(
            r.push(&again[1]).unwrap_err().kind,
            ReassemblyErrorKind::UnexpectedContinuation
        );
    }

    #[test]
    fn fragment_then_reassemble_is_identity() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let streams = [StreamId::Control, StreamId::Ota, StreamId::Alexa];
        for round in 0..600 {
            // Mostly small sizes, some near the 255-byte boundary, a few large.
            let len = match round % 4 {
                0 => rng.below(64),
                1 => 240 + rng.below(40),
                2 => rng.below(3000),
                _ => rng.below(0x1_0000),
            };
            let packet_size = match round % 3 {
                0 => 8 + rng.below(40),
                1 => 250 + rng.below(30),
                _ => 8 + rng.below(0xFFF8),
            } as u16;
            let payload = rng.bytes(len);
            let stream = streams[rng.below(3)];
            let id = txn(rng.below(16) as u8);
            let ack = rng.below(2) == 1;
            let packets = fragment(stream, id, &payload, ack, limits(packet_size));
            assert!(packets.iter().all(|p| p.len() <= usize::from(packet_size)));
            assert!(packets.iter().all(|p| (p[1] & EXTENDER_BIT != 0)
                == (p.len() - header_layout(TransactionType::from_flags(p[1]), false).1 > 0x100)));
            let done = reassemble(&packets, len as u16);
            assert_eq!(
                done,
                Completed {
                    stream,
                    transaction_id: id,
                    ack_requested: ack,
                    payload
                },
                "len {len} P {packet_size}"
            );
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = Rng(0x0123_4567_89AB_CDEF);
        let mut r = Reassembler::new(0x200);
        for _ in 0..5000 {
            let len = rng.below(40);
            let mut bytes = rng.bytes(len);
            // Steer half the inputs onto real streams and small lengths, to reach deeper code.
            if len > 2 && rng.below(2) == 0 {
                bytes[0] = [0x00, 0x20, 0x60][rng.below(3)] | (bytes[0] & 0x01);
                bytes[1] &= 0x1F;
                let (len_at, header_len) =
                    header_layout(TransactionType::from_flags(bytes[1]), false);
                bytes[1] &= !EXTENDER_BIT;
                if len_at < len {
                    bytes[len_at] = len.saturating_sub(header_len) as u8;
                }
            }
            if let Ok(packet) = TransportPacket::new_checked(&bytes[..]) {
                let _ = (packet.reserved(), packet.total_length(), packet.payload());
                if let Ok(repr) = TransportRepr::parse(&packet) {
                    assert_eq!(transport_bytes(&repr).len(), repr.buffer_len());
                    let _ = repr.to_string();
                }
                if let Ok(ack) = AckRepr::parse(&packet) {
                    assert_eq!(ack_bytes(&ack)[4..], bytes[4..]);
                }
            }
            let unchecked = TransportPacket::new_unchecked(&bytes[..]);
            let _ = (TransportRepr::parse(&unchecked), AckRepr::parse(&unchecked));
            if let Ok(pv) = PvPacket::new_checked(&bytes[..]) {
                let _ = PvRepr::parse(&pv);
            }
            let _ = PvRepr::parse(&PvPacket::new_unchecked(&bytes[..]));
            match r.push(&bytes) {
                Ok(_) => {}
                Err(e) => {
                    let _ = (e.to_string(), e.nack(), Malformed::from(e));
                }
            }
        }
    }
}
