//! SiFli BLE serial-transport service: the GATT identifiers, the frame on every write or
//! notification, fragmentation and reassembly (`protocols/dfu.md` §1).
//!
//! Contract, as for every view in [`crate::wire`]: a [`Frame`] is made from peer bytes only
//! through [`Frame::new_checked`], after which no accessor can panic; [`FrameRepr`] is the
//! validated summary with `parse`, `buffer_len` and `emit`. [`Fragmenter`] turns one message
//! (category, payload) into frames of at most the usable value size, and [`Reassembler`]
//! turns frames back into messages within a hard memory cap. Multi-byte fields are
//! little-endian.
//!
//! ```text
//! complete  cate u8 | 0x00 | total_len u16 | payload (exactly total_len bytes)
//! first     cate u8 | 0x01 | total_len u16 (whole message) | first chunk
//! continue  cate u8 | 0x02 | chunk
//! last      cate u8 | 0x03 | chunk         (assembled length must equal total_len)
//! ```
//!
//! Choices where the notes are open, or where we differ from the SiFli device:
//!
//! - A complete frame's `total_len` must equal its payload length: shorter is
//!   [`DecodeError::Truncated`], longer [`DecodeError::TrailingBytes`]. The SiFli device
//!   ignores the field on complete frames (it takes the value length minus 4), but both its
//!   sender and the iOS remote always set it, so a mismatch means a corrupted frame. A first
//!   frame carrying more than its `total_len` is [`DecodeError::LengthMismatch`] (the device
//!   would overrun its buffer).
//! - Flags above 0x03 are [`DecodeError::BadValue`]. Categories are not checked: any byte is
//!   a category ([`Category`] names the ones the SDK defines).
//! - [`Fragmenter`]: a message that fits one frame (payload ≤ value size − 4, an empty one
//!   included) goes as one complete frame, as both SiFli senders do. Otherwise the first
//!   frame carries value size − 4 bytes and later ones value size − 2, the last one the rest
//!   (the iOS remote's split; the device itself uses value size − 4 for every fragment, which
//!   the reassembler accepts equally). The caller picks the value size: Web Bluetooth cannot
//!   read the ATT MTU, so [`FALLBACK_VALUE_SIZE`] (20, for the default MTU of 23) is the safe
//!   choice, and the device takes any value up to [`DEVICE_MAX_VALUE_LEN`].
//! - [`Reassembler`] keeps one buffer per category, as the brief asks, where the device keeps
//!   one buffer for all. It completes a message only on a last frame, as the device does,
//!   even when a first or continue frame already filled it. A complete frame discards a
//!   partial message of its own category only. Every refused frame whose first byte is
//!   present discards its category's partial message: the sender has to start that message
//!   again. The cap bounds the bytes held in all open buffers together: a first frame whose
//!   `total_len` exceeds it is refused with [`ReassemblyErrorKind::TooLarge`], and one that
//!   fits the cap but not beside other categories' partial messages evicts the oldest of
//!   those until it fits (a stale partial message must not block the link forever). Each
//!   message handed out is at most the cap too.
//! - Continue and last frames with no open first frame are refused
//!   ([`ReassemblyErrorKind::UnexpectedFragment`]) rather than dropped silently, as the device
//!   does: the caller decides whether that matters.

use alloc::vec::Vec;
use core::fmt;

use crate::error::{DecodeError, Malformed, Misuse};
use crate::image::chunk::Chunker;

/// The serial-transport GATT service, as Web Bluetooth spells it (§1).
pub const SERVICE_UUID: &str = "00000000-0000-0000-6473-5f696c666973";
/// The configuration characteristic: read/write, unused by DFU (§1).
pub const CONFIG_CHARACTERISTIC_UUID: &str = "00000000-0000-0100-6473-5f696c666973";
/// The data characteristic: write (with or without response) and notify, both directions (§1).
pub const DATA_CHARACTERISTIC_UUID: &str = "00000000-0000-0200-6473-5f696c666973";

/// The largest value the device's data characteristic takes: 1024 bytes (§1).
pub const DEVICE_MAX_VALUE_LEN: usize = 1024;
/// The ATT MTU before any exchange: 23 bytes (§1).
pub const DEFAULT_ATT_MTU: u16 = 23;
/// The value size that fits any link: the default ATT MTU less the 3-byte ATT header.
pub const FALLBACK_VALUE_SIZE: usize = 20;
/// The smallest value size [`Fragmenter`] accepts: a first frame must carry one byte.
pub const MIN_VALUE_SIZE: usize = FIRST_HEADER_LEN + 1;
/// The largest message: `total_len` has 16 bits.
pub const MAX_MESSAGE_LEN: usize = 0xFFFF;
/// The header of complete and first frames: category, flag, total length.
pub const FIRST_HEADER_LEN: usize = 4;
/// The header of continue and last frames: category and flag.
pub const NEXT_HEADER_LEN: usize = 2;

/// The OTA manager's scan-response name starts with this (`SIFLI_APP-…`, §1).
pub const ADVERTISED_NAME_PREFIX: &str = "SIFLI_APP";
/// The company id in the OTA manager's manufacturer data (§1).
pub const MANUFACTURER_COMPANY_ID: u16 = 0x0001;
/// The OTA manager's manufacturer data after the company id (§1).
pub const MANUFACTURER_DATA: [u8; 4] = [0x20, 0xC4, 0x00, 0x91];

/// What [`Malformed`] names when a frame fails to decode.
const FRAME_WHAT: &str = "SiFli serial frame";

/// Byte positions.
mod field {
    /// Byte 0: the category.
    pub(super) const CATEGORY: usize = 0;
    /// Byte 1: the fragmentation flag.
    pub(super) const FLAG: usize = 1;
    /// Bytes 2–3 of complete and first frames.
    pub(super) const TOTAL_LEN: core::ops::Range<usize> = 2..4;
}

/// A serial-transport category id (`cate_id`): which user of the service a frame is for (§1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Category(pub u8);

impl Category {
    /// DFU: every frame of the update protocol.
    pub const DFU: Category = Category(0x01);
    /// The console.
    pub const CONSOLE: Category = Category(0x02);
    /// Device logs.
    pub const LOG: Category = Category(0x03);
    /// Watch faces.
    pub const WATCHFACE: Category = Category(0x04);
    /// Audio equaliser settings.
    pub const EQ: Category = Category(0x05);
    /// The first id left to products.
    pub const CUSTOMER: Category = Category(0x10);

    /// The SDK's name for this id, if it defines one.
    #[must_use]
    pub const fn name(self) -> Option<&'static str> {
        match self.0 {
            0x01 => Some("DFU"),
            0x02 => Some("console"),
            0x03 => Some("log"),
            0x04 => Some("watchface"),
            0x05 => Some("EQ"),
            0x10 => Some("customer"),
            _ => None,
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({:#04x})", self.0),
            None => write!(f, "{:#04x}", self.0),
        }
    }
}

/// The fragmentation flag, byte 1 of every frame (§1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameFlag {
    /// A whole message in one frame.
    Complete = 0x00,
    /// The first fragment, stating the whole message's length.
    First = 0x01,
    /// A middle fragment.
    Continue = 0x02,
    /// The final fragment.
    Last = 0x03,
}

impl FrameFlag {
    /// The flag with this value, or `None` above 0x03.
    #[must_use]
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0x00 => Some(FrameFlag::Complete),
            0x01 => Some(FrameFlag::First),
            0x02 => Some(FrameFlag::Continue),
            0x03 => Some(FrameFlag::Last),
            _ => None,
        }
    }

    /// The header length of a frame with this flag: 4 with the total length, else 2.
    #[must_use]
    pub const fn header_len(self) -> usize {
        match self {
            FrameFlag::Complete | FrameFlag::First => FIRST_HEADER_LEN,
            FrameFlag::Continue | FrameFlag::Last => NEXT_HEADER_LEN,
        }
    }
}

impl From<FrameFlag> for u8 {
    fn from(flag: FrameFlag) -> u8 {
        flag as u8
    }
}

/// A read/write view of one frame: one ATT value on the data characteristic (§1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checking it; setters panic if it is shorter than the header.
    /// Use only on buffers being built, never on peer bytes.
    pub const fn new_unchecked(buffer: T) -> Self {
        Frame { buffer }
    }

    /// Wraps peer bytes, checking the flag, the header and a complete frame's length.
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Checks that the flag is defined, the header is present and, for a complete frame, that
    /// the payload is exactly `total_len` bytes.
    pub fn check_len(&self) -> Result<(), Malformed> {
        let data = self.buffer.as_ref();
        let available = data.len();
        let bad = |reason| Malformed {
            what: FRAME_WHAT,
            reason,
        };
        let Some(&flag) = data.get(field::FLAG) else {
            return Err(bad(DecodeError::Truncated {
                needed: NEXT_HEADER_LEN,
                available,
            }));
        };
        let flag = FrameFlag::from_u8(flag).ok_or(bad(DecodeError::BadValue))?;
        let header_len = flag.header_len();
        if available < header_len {
            return Err(bad(DecodeError::Truncated {
                needed: header_len,
                available,
            }));
        }
        if flag == FrameFlag::Complete {
            let needed = header_len + usize::from(self.total_len_field());
            if available < needed {
                return Err(bad(DecodeError::Truncated { needed, available }));
            }
            if available > needed {
                return Err(bad(DecodeError::TrailingBytes));
            }
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The category (byte 0).
    #[must_use]
    pub fn category(&self) -> Category {
        Category(
            self.buffer
                .as_ref()
                .get(field::CATEGORY)
                .copied()
                .unwrap_or(0),
        )
    }

    /// The flag (byte 1); `None` if it is undefined, which a checked frame never is.
    #[must_use]
    pub fn flag(&self) -> Option<FrameFlag> {
        self.buffer
            .as_ref()
            .get(field::FLAG)
            .and_then(|&b| FrameFlag::from_u8(b))
    }

    /// The header length: 4 for complete and first frames, 2 for the others.
    #[must_use]
    pub fn header_len(&self) -> usize {
        self.flag().map_or(NEXT_HEADER_LEN, FrameFlag::header_len)
    }

    /// The total message length of a complete or first frame; `None` for the others.
    #[must_use]
    pub fn total_len(&self) -> Option<u16> {
        matches!(self.flag(), Some(FrameFlag::Complete | FrameFlag::First))
            .then(|| self.total_len_field())
    }

    /// Bytes 2–3 read as the total length, whatever the flag; 0 if they are missing.
    fn total_len_field(&self) -> u16 {
        match self.buffer.as_ref().get(field::TOTAL_LEN) {
            Some(&[lo, hi]) => u16::from_le_bytes([lo, hi]),
            _ => 0,
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Frame<&'a T> {
    /// The payload: everything after the header.
    #[must_use]
    pub fn payload(&self) -> &'a [u8] {
        self.buffer.as_ref().get(self.header_len()..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the category.
    pub fn set_category(&mut self, value: Category) {
        self.buffer.as_mut()[field::CATEGORY] = value.0;
    }

    /// Sets the flag. Set it before the payload, whose place it decides.
    pub fn set_flag(&mut self, value: FrameFlag) {
        self.buffer.as_mut()[field::FLAG] = u8::from(value);
    }

    /// Sets the total length; meaningful for complete and first frames only.
    pub fn set_total_len(&mut self, value: u16) {
        self.buffer.as_mut()[field::TOTAL_LEN].copy_from_slice(&value.to_le_bytes());
    }

    /// The payload, writable: everything after the header the flag implies.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
}

/// Where a frame sits in its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// The whole message; its total length is the payload's.
    Complete,
    /// The first fragment of a longer message.
    First {
        /// The whole message's length.
        total_len: u16,
    },
    /// A middle fragment.
    Continue,
    /// The final fragment.
    Last,
}

impl FrameKind {
    /// The flag that encodes this position.
    #[must_use]
    pub const fn flag(self) -> FrameFlag {
        match self {
            FrameKind::Complete => FrameFlag::Complete,
            FrameKind::First { .. } => FrameFlag::First,
            FrameKind::Continue => FrameFlag::Continue,
            FrameKind::Last => FrameFlag::Last,
        }
    }
}

/// A decoded frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRepr<'a> {
    /// Whose frame it is.
    pub category: Category,
    /// Its place in the message.
    pub kind: FrameKind,
    /// The bytes it carries.
    pub payload: &'a [u8],
}

impl<'a> FrameRepr<'a> {
    /// Decodes a checked frame; a first frame carrying more than its total length is
    /// [`DecodeError::LengthMismatch`].
    pub fn parse<T: AsRef<[u8]> + ?Sized>(frame: &Frame<&'a T>) -> Result<Self, Malformed> {
        frame.check_len()?;
        let payload = frame.payload();
        let kind = match frame.flag() {
            Some(FrameFlag::Complete) => FrameKind::Complete,
            Some(FrameFlag::First) => {
                let total_len = frame.total_len_field();
                if payload.len() > usize::from(total_len) {
                    return Err(Malformed {
                        what: FRAME_WHAT,
                        reason: DecodeError::LengthMismatch,
                    });
                }
                FrameKind::First { total_len }
            }
            Some(FrameFlag::Continue) => FrameKind::Continue,
            Some(FrameFlag::Last) => FrameKind::Last,
            // check_len refused undefined flags.
            None => {
                return Err(Malformed {
                    what: FRAME_WHAT,
                    reason: DecodeError::BadValue,
                })
            }
        };
        Ok(FrameRepr {
            category: frame.category(),
            kind,
            payload,
        })
    }

    /// The length of the emitted frame, header included.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        self.kind
            .flag()
            .header_len()
            .saturating_add(self.payload.len())
    }

    /// Writes the frame into the first [`FrameRepr::buffer_len`] bytes of `frame`. Refuses a
    /// complete frame over [`MAX_MESSAGE_LEN`] and a first frame over its total length.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        frame: &mut Frame<T>,
    ) -> Result<(), BuildError> {
        let len = self.payload.len();
        let total_len = match self.kind {
            FrameKind::Complete => {
                Some(u16::try_from(len).map_err(|_| BuildError::MessageTooLarge {
                    len,
                    limit: MAX_MESSAGE_LEN,
                })?)
            }
            FrameKind::First { total_len } => {
                if len > usize::from(total_len) {
                    return Err(BuildError::MessageTooLarge {
                        len,
                        limit: usize::from(total_len),
                    });
                }
                Some(total_len)
            }
            FrameKind::Continue | FrameKind::Last => None,
        };
        let needed = self.buffer_len();
        let available = frame.buffer.as_ref().len();
        if available < needed {
            return Err(BuildError::BufferTooShort { needed, available });
        }
        frame.set_category(self.category);
        frame.set_flag(self.kind.flag());
        if let Some(total_len) = total_len {
            frame.set_total_len(total_len);
        }
        frame.payload_mut()[..len].copy_from_slice(self.payload);
        Ok(())
    }
}

impl fmt::Display for FrameRepr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SiFli cate {} ", self.category)?;
        match self.kind {
            FrameKind::Complete => f.write_str("complete")?,
            FrameKind::First { total_len } => write!(f, "first of {total_len}")?,
            FrameKind::Continue => f.write_str("continue")?,
            FrameKind::Last => f.write_str("last")?,
        }
        write!(f, " len {}", self.payload.len())
    }
}

/// Why a frame or message could not be built: the caller's mistake, not the peer's.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The value size is below [`MIN_VALUE_SIZE`].
    ValueSizeTooSmall {
        /// The value size given.
        value_size: usize,
        /// The smallest accepted.
        min: usize,
    },
    /// The message exceeds the 16-bit total length, or a first frame its total length.
    MessageTooLarge {
        /// The length given.
        len: usize,
        /// The largest accepted.
        limit: usize,
    },
    /// The buffer is shorter than the frame.
    BufferTooShort {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::ValueSizeTooSmall { value_size, min } => write!(
                f,
                "SiFli value size {value_size} is below the minimum of {min}"
            ),
            BuildError::MessageTooLarge { len, limit } => write!(
                f,
                "SiFli message of {len} bytes exceeds the limit of {limit}"
            ),
            BuildError::BufferTooShort { needed, available } => write!(
                f,
                "SiFli frame needs {needed} bytes, the buffer has {available}"
            ),
        }
    }
}

impl From<BuildError> for Misuse {
    fn from(e: BuildError) -> Misuse {
        Misuse::InvalidArgument(match e {
            BuildError::ValueSizeTooSmall { .. } => "SiFli value size below the minimum",
            BuildError::MessageTooLarge { .. } => "SiFli message larger than 65535 bytes",
            BuildError::BufferTooShort { .. } => "buffer shorter than the SiFli frame",
        })
    }
}

/// Splits one message into frames of at most the value size, written one at a time into the
/// caller's buffer (§1; the split is described in the module docs).
#[derive(Clone, Debug)]
pub struct Fragmenter<P: AsRef<[u8]>> {
    category: Category,
    payload: P,
    total_len: u16,
    /// `None` when the message goes as one complete frame.
    chunker: Option<Chunker>,
    frame_count: usize,
    next_index: usize,
}

impl<P: AsRef<[u8]>> Fragmenter<P> {
    /// The frames of `payload` for `category`, each at most `max_value_size` bytes. Refuses
    /// a value size below [`MIN_VALUE_SIZE`] and a payload over [`MAX_MESSAGE_LEN`].
    pub fn new(category: Category, payload: P, max_value_size: usize) -> Result<Self, BuildError> {
        if max_value_size < MIN_VALUE_SIZE {
            return Err(BuildError::ValueSizeTooSmall {
                value_size: max_value_size,
                min: MIN_VALUE_SIZE,
            });
        }
        let len = payload.as_ref().len();
        let total_len = u16::try_from(len).map_err(|_| BuildError::MessageTooLarge {
            len,
            limit: MAX_MESSAGE_LEN,
        })?;
        let first = max_value_size - FIRST_HEADER_LEN;
        let (chunker, frame_count) = if len <= first {
            (None, 1)
        } else {
            // Both sizes are at least 1 (checked above), so Chunker accepts them.
            let chunker =
                Chunker::new(len, first, max_value_size - NEXT_HEADER_LEN).map_err(|_| {
                    BuildError::ValueSizeTooSmall {
                        value_size: max_value_size,
                        min: MIN_VALUE_SIZE,
                    }
                })?;
            (Some(chunker), chunker.count())
        };
        Ok(Fragmenter {
            category,
            payload,
            total_len,
            chunker,
            frame_count,
            next_index: 0,
        })
    }

    /// How many frames the message takes: at least one.
    #[must_use]
    pub fn frame_count(&self) -> usize {
        self.frame_count
    }

    /// Whether every frame has been written.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.next_index >= self.frame_count
    }

    /// Appends the next frame to `buf` and returns its length, or `None` once all are out.
    #[must_use]
    pub fn emit_next(&mut self, buf: &mut Vec<u8>) -> Option<usize> {
        if self.is_done() {
            return None;
        }
        let payload = self.payload.as_ref();
        let (kind, chunk) = match &self.chunker {
            None => (FrameKind::Complete, payload),
            Some(chunker) => {
                let kind = if self.next_index == 0 {
                    FrameKind::First {
                        total_len: self.total_len,
                    }
                } else if self.next_index + 1 == self.frame_count {
                    FrameKind::Last
                } else {
                    FrameKind::Continue
                };
                // The layout was made from this payload's length, so the range lies inside it.
                (kind, payload.get(chunker.get(self.next_index)?)?)
            }
        };
        let repr = FrameRepr {
            category: self.category,
            kind,
            payload: chunk,
        };
        let len = repr.buffer_len();
        let start = buf.len();
        buf.resize(start + len, 0x00);
        // Sized by buffer_len with lengths checked in new, emit cannot fail; if it ever did,
        // `buf` is left as the caller gave it.
        if repr
            .emit(&mut Frame::new_unchecked(&mut buf[start..]))
            .is_err()
        {
            buf.truncate(start);
            return None;
        }
        self.next_index += 1;
        Some(len)
    }
}

/// A message reassembled from its frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assembled {
    /// The category it came on.
    pub category: Category,
    /// The whole message.
    pub payload: Vec<u8>,
}

/// What went wrong with a received frame.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReassemblyErrorKind {
    /// The frame did not decode.
    Malformed(DecodeError),
    /// The message's total length exceeds this receiver's cap.
    TooLarge {
        /// The total length announced.
        total_len: u16,
        /// The cap.
        limit: usize,
    },
    /// A continue or last frame came with no first frame open for its category.
    UnexpectedFragment,
    /// The fragments carried more bytes than the total length.
    Overflow {
        /// The total length announced.
        total_len: u16,
        /// The bytes the fragments would make.
        got: usize,
    },
    /// A last frame ended the message short of its total length.
    ShortMessage {
        /// The total length announced.
        total_len: u16,
        /// The bytes assembled.
        got: usize,
    },
}

impl fmt::Display for ReassemblyErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReassemblyErrorKind::Malformed(e) => write!(f, "malformed frame: {e}"),
            ReassemblyErrorKind::TooLarge { total_len, limit } => {
                write!(f, "message of {total_len} bytes over the limit of {limit}")
            }
            ReassemblyErrorKind::UnexpectedFragment => {
                f.write_str("continue or last frame without a first frame")
            }
            ReassemblyErrorKind::Overflow { total_len, got } => {
                write!(
                    f,
                    "fragments of {got} bytes overflow the total of {total_len}"
                )
            }
            ReassemblyErrorKind::ShortMessage { total_len, got } => {
                write!(f, "last frame at {got} bytes of {total_len}")
            }
        }
    }
}

/// A received frame that was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReassemblyError {
    /// The frame's category, if it had a byte 0.
    pub category: Option<Category>,
    /// What went wrong.
    pub kind: ReassemblyErrorKind,
}

impl fmt::Display for ReassemblyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SiFli")?;
        if let Some(category) = self.category {
            write!(f, " cate {category}")?;
        }
        write!(f, ": {}", self.kind)
    }
}

impl From<ReassemblyError> for Malformed {
    fn from(e: ReassemblyError) -> Malformed {
        let reason = match e.kind {
            ReassemblyErrorKind::Malformed(reason) => reason,
            ReassemblyErrorKind::TooLarge { limit, .. } => DecodeError::TooLarge { limit },
            ReassemblyErrorKind::UnexpectedFragment => DecodeError::BadValue,
            ReassemblyErrorKind::Overflow { .. } | ReassemblyErrorKind::ShortMessage { .. } => {
                DecodeError::LengthMismatch
            }
        };
        Malformed {
            what: FRAME_WHAT,
            reason,
        }
    }
}

/// A message being reassembled.
#[derive(Clone, Debug)]
struct Open {
    category: Category,
    total_len: u16,
    /// Reserved at `total_len` up front and never grown past it.
    payload: Vec<u8>,
}

/// Rebuilds messages from received frames, one buffer per category, holding at most its cap
/// (see the module docs for the rules).
#[derive(Clone, Debug)]
pub struct Reassembler {
    cap: usize,
    /// Oldest first, at most one per category.
    open: Vec<Open>,
}

impl Reassembler {
    /// A reassembler holding at most `cap` bytes and refusing longer messages. A remote needs
    /// little (DFU answers are ≤ 16 bytes); a device taking image packets needs
    /// [`crate::wire::dfu::MAX_PACKET_MESSAGE_LEN`].
    #[must_use]
    pub const fn new(cap: usize) -> Self {
        Reassembler {
            cap,
            open: Vec::new(),
        }
    }

    /// The cap given at construction.
    #[must_use]
    pub const fn cap(&self) -> usize {
        self.cap
    }

    /// Forgets every partial message, as after a disconnect.
    pub fn reset(&mut self) {
        self.open = Vec::new();
    }

    /// Whether a message of `category` is partly assembled.
    #[must_use]
    pub fn is_assembling(&self, category: Category) -> bool {
        self.open.iter().any(|o| o.category == category)
    }

    /// The bytes reserved by partial messages: the sum of their total lengths.
    #[must_use]
    pub fn reserved(&self) -> usize {
        self.open.iter().map(|o| usize::from(o.total_len)).sum()
    }

    /// Takes one received value: `Some` message when it completes one, `None` when the frame
    /// was taken and its message needs more.
    pub fn push(&mut self, value: &[u8]) -> Result<Option<Assembled>, ReassemblyError> {
        // Read byte 0 apart from the checked view, so that a frame too short or malformed to
        // decode still names its category and voids that category's partial message.
        let category = value.get(field::CATEGORY).map(|&b| Category(b));
        self.accept(value).map_err(|kind| {
            if let Some(category) = category {
                self.discard(category);
            }
            ReassemblyError { category, kind }
        })
    }

    fn accept(&mut self, value: &[u8]) -> Result<Option<Assembled>, ReassemblyErrorKind> {
        let frame =
            Frame::new_checked(value).map_err(|e| ReassemblyErrorKind::Malformed(e.reason))?;
        let repr =
            FrameRepr::parse(&frame).map_err(|e| ReassemblyErrorKind::Malformed(e.reason))?;
        let category = repr.category;
        match repr.kind {
            FrameKind::Complete => {
                self.discard(category);
                self.check_cap(repr.payload.len())?;
                Ok(Some(Assembled {
                    category,
                    payload: repr.payload.to_vec(),
                }))
            }
            FrameKind::First { total_len } => {
                self.discard(category);
                let len = usize::from(total_len);
                self.check_cap(len)?;
                // Evict the oldest other partial messages until this one fits the cap.
                while self.reserved().saturating_add(len) > self.cap && !self.open.is_empty() {
                    self.open.remove(0);
                }
                let mut payload = Vec::with_capacity(len);
                // Within the total: FrameRepr::parse checked it.
                payload.extend_from_slice(repr.payload);
                self.open.push(Open {
                    category,
                    total_len,
                    payload,
                });
                Ok(None)
            }
            FrameKind::Continue | FrameKind::Last => {
                let index = self
                    .open
                    .iter()
                    .position(|o| o.category == category)
                    .ok_or(ReassemblyErrorKind::UnexpectedFragment)?;
                let open = &mut self.open[index];
                let got = open.payload.len().saturating_add(repr.payload.len());
                if got > usize::from(open.total_len) {
                    return Err(ReassemblyErrorKind::Overflow {
                        total_len: open.total_len,
                        got,
                    });
                }
                if repr.kind == FrameKind::Last && got != usize::from(open.total_len) {
                    return Err(ReassemblyErrorKind::ShortMessage {
                        total_len: open.total_len,
                        got,
                    });
                }
                // Within the capacity reserved at the first frame: no reallocation.
                open.payload.extend_from_slice(repr.payload);
                if repr.kind == FrameKind::Continue {
                    return Ok(None);
                }
                let open = self.open.remove(index);
                Ok(Some(Assembled {
                    category,
                    payload: open.payload,
                }))
            }
        }
    }

    /// Refuses a message of `len` bytes over the cap.
    fn check_cap(&self, len: usize) -> Result<(), ReassemblyErrorKind> {
        if len > self.cap {
            return Err(ReassemblyErrorKind::TooLarge {
                // Every length here came from a 16-bit field.
                total_len: u16::try_from(len).unwrap_or(u16::MAX),
                limit: self.cap,
            });
        }
        Ok(())
    }

    /// Drops the partial message of `category`, if any.
    fn discard(&mut self, category: Category) {
        self.open.retain(|o| o.category != category);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;
    use alloc::string::ToString;
    use alloc::vec;

    fn frame_bytes(repr: &FrameRepr<'_>) -> Vec<u8> {
        let mut buf = vec![0xFF; repr.buffer_len()];
        repr.emit(&mut Frame::new_unchecked(&mut buf[..])).unwrap();
        buf
    }

    fn parse(bytes: &[u8]) -> Result<FrameRepr<'_>, Malformed> {
        FrameRepr::parse(&Frame::new_checked(bytes)?)
    }

    fn fragment(category: Category, payload: &[u8], max: usize) -> Vec<Vec<u8>> {
        let mut f = Fragmenter::new(category, payload, max).unwrap();
        let mut frames = Vec::new();
        loop {
            let mut buf = Vec::new();
            match f.emit_next(&mut buf) {
                Some(len) => {
                    assert_eq!(len, buf.len());
                    frames.push(buf);
                }
                None => break,
            }
        }
        assert!(f.is_done());
        assert_eq!(frames.len(), f.frame_count());
        frames
    }

    fn malformed(reason: DecodeError) -> Malformed {
        Malformed {
            what: FRAME_WHAT,
            reason,
        }
    }

    #[test]
    fn uuids_are_the_on_air_strings() {
        for uuid in [
            SERVICE_UUID,
            CONFIG_CHARACTERISTIC_UUID,
            DATA_CHARACTERISTIC_UUID,
        ] {
            assert_eq!(uuid.len(), 36);
            assert_eq!(uuid, uuid.to_ascii_lowercase());
            // The last 8 bytes spell "sd_ilfis", i.e. "sifli_sd" LSB-first (§1).
            assert!(uuid.ends_with("-6473-5f696c666973"));
        }
        assert_eq!(Category::DFU.0, 0x01);
        assert_eq!(Category::DFU.to_string(), "DFU (0x01)");
        assert_eq!(Category(0x42).to_string(), "0x42");
        assert_eq!(Category::CUSTOMER.name(), Some("customer"));
    }

    #[test]
    fn complete_frame_vector() {
        // DFU INIT_COMPLETED_IND(1) as one frame: 01 00 | 05 00 | 02 00 01 00 01.
        let bytes = [0x01, 0x00, 0x05, 0x00, 0x02, 0x00, 0x01, 0x00, 0x01];
        let frame = Frame::new_checked(&bytes[..]).unwrap();
        assert_eq!(frame.category(), Category::DFU);
        assert_eq!(frame.flag(), Some(FrameFlag::Complete));
        assert_eq!(frame.header_len(), 4);
        assert_eq!(frame.total_len(), Some(5));
        assert_eq!(frame.payload(), [0x02, 0x00, 0x01, 0x00, 0x01]);
        let repr = FrameRepr::parse(&frame).unwrap();
        assert_eq!(
            repr,
            FrameRepr {
                category: Category::DFU,
                kind: FrameKind::Complete,
                payload: &[0x02, 0x00, 0x01, 0x00, 0x01],
            }
        );
        assert_eq!(frame_bytes(&repr), bytes);
        assert_eq!(repr.to_string(), "SiFli cate DFU (0x01) complete len 5");

        // An empty message is a 4-byte complete frame.
        let empty = FrameRepr {
            category: Category::LOG,
            kind: FrameKind::Complete,
            payload: &[],
        };
        assert_eq!(frame_bytes(&empty), [0x03, 0x00, 0x00, 0x00]);
        assert_eq!(parse(&[0x03, 0x00, 0x00, 0x00]), Ok(empty));
    }

    #[test]
    fn fragment_frame_vectors() {
        // First of a 0x0102-byte message carrying 3 bytes.
        let bytes = [0x01, 0x01, 0x02, 0x01, 0xAA, 0xBB, 0xCC];
        let repr = parse(&bytes).unwrap();
        assert_eq!(
            repr,
            FrameRepr {
                category: Category::DFU,
                kind: FrameKind::First { total_len: 0x0102 },
                payload: &[0xAA, 0xBB, 0xCC],
            }
        );
        assert_eq!(frame_bytes(&repr), bytes);
        assert_eq!(
            Frame::new_checked(&bytes[..]).unwrap().total_len(),
            Some(0x0102)
        );

        let bytes = [0x01, 0x02, 0xDD, 0xEE];
        let repr = parse(&bytes).unwrap();
        assert_eq!(repr.kind, FrameKind::Continue);
        assert_eq!(repr.payload, [0xDD, 0xEE]);
        assert_eq!(frame_bytes(&repr), bytes);
        assert_eq!(Frame::new_checked(&bytes[..]).unwrap().total_len(), None);

        let bytes = [0x04, 0x03, 0xFF];
        let repr = parse(&bytes).unwrap();
        assert_eq!(
            repr,
            FrameRepr {
                category: Category::WATCHFACE,
                kind: FrameKind::Last,
                payload: &[0xFF],
            }
        );
        assert_eq!(frame_bytes(&repr), bytes);
        assert_eq!(repr.to_string(), "SiFli cate watchface (0x04) last len 1");

        // Continue and last frames may be empty: just the two header bytes.
        assert!(parse(&[0x01, 0x02]).unwrap().payload.is_empty());
        assert_eq!(parse(&[0x01, 0x03]).unwrap().kind, FrameKind::Last);
    }

    #[test]
    fn bad_frames_are_malformed() {
        let cases: [(&[u8], DecodeError); 9] = [
            (
                &[],
                DecodeError::Truncated {
                    needed: 2,
                    available: 0,
                },
            ),
            (
                &[0x01],
                DecodeError::Truncated {
                    needed: 2,
                    available: 1,
                },
            ),
            (&[0x01, 0x04, 0x00, 0x00], DecodeError::BadValue),
            (&[0x01, 0xFF], DecodeError::BadValue),
            (
                &[0x01, 0x00, 0x00],
                DecodeError::Truncated {
                    needed: 4,
                    available: 3,
                },
            ),
            (
                &[0x01, 0x01, 0x05],
                DecodeError::Truncated {
                    needed: 4,
                    available: 3,
                },
            ),
            // Complete frame stating 3 bytes, carrying 2.
            (
                &[0x01, 0x00, 0x03, 0x00, 0xAA, 0xBB],
                DecodeError::Truncated {
                    needed: 7,
                    available: 6,
                },
            ),
            // Complete frame stating 1 byte, carrying 2.
            (
                &[0x01, 0x00, 0x01, 0x00, 0xAA, 0xBB],
                DecodeError::TrailingBytes,
            ),
            // First frame carrying more than its total.
            (
                &[0x01, 0x01, 0x01, 0x00, 0xAA, 0xBB],
                DecodeError::LengthMismatch,
            ),
        ];
        for (bytes, reason) in cases {
            assert_eq!(parse(bytes), Err(malformed(reason)), "{bytes:02x?}");
            // The view's accessors stay total even on bytes it refused.
            let unchecked = Frame::new_unchecked(bytes);
            let _ = (
                unchecked.category(),
                unchecked.flag(),
                unchecked.total_len(),
                unchecked.payload(),
            );
            assert!(FrameRepr::parse(&unchecked).is_err());
            let err = Reassembler::new(0x100).push(bytes).unwrap_err();
            assert_eq!(err.kind, ReassemblyErrorKind::Malformed(reason));
            assert_eq!(Malformed::from(err), malformed(reason));
        }
    }

    #[test]
    fn emit_refuses_misuse() {
        let big = vec![0u8; 0x1_0000];
        let repr = FrameRepr {
            category: Category::DFU,
            kind: FrameKind::Complete,
            payload: &big,
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        assert_eq!(
            repr.emit(&mut Frame::new_unchecked(&mut buf[..])),
            Err(BuildError::MessageTooLarge {
                len: 0x1_0000,
                limit: MAX_MESSAGE_LEN
            })
        );
        let repr = FrameRepr {
            category: Category::DFU,
            kind: FrameKind::First { total_len: 1 },
            payload: &[1, 2],
        };
        let mut buf = [0u8; 6];
        assert_eq!(
            repr.emit(&mut Frame::new_unchecked(&mut buf[..])),
            Err(BuildError::MessageTooLarge { len: 2, limit: 1 })
        );
        let repr = FrameRepr {
            category: Category::DFU,
            kind: FrameKind::Last,
            payload: &[1, 2],
        };
        let mut buf = [0u8; 3];
        let err = repr
            .emit(&mut Frame::new_unchecked(&mut buf[..]))
            .unwrap_err();
        assert_eq!(
            err,
            BuildError::BufferTooShort {
                needed: 4,
                available: 3
            }
        );
        assert_eq!(
            err.to_string(),
            "SiFli frame needs 4 bytes, the buffer has 3"
        );
        assert_eq!(
            Misuse::from(err),
            Misuse::InvalidArgument("buffer shorter than the SiFli frame")
        );

        assert_eq!(
            Fragmenter::new(Category::DFU, &[0u8; 3][..], 4).unwrap_err(),
            BuildError::ValueSizeTooSmall {
                value_size: 4,
                min: 5
            }
        );
        assert_eq!(
            Fragmenter::new(Category::DFU, &big[..], 512).unwrap_err(),
            BuildError::MessageTooLarge {
                len: 0x1_0000,
                limit: MAX_MESSAGE_LEN
            }
        );
        // 65535 bytes is the largest message.
        let f = Fragmenter::new(Category::DFU, &big[..0xFFFF], 512).unwrap();
        assert_eq!(f.frame_count(), 1 + (0xFFFF - 508usize).div_ceil(510));
    }

    #[test]
    fn fragmentation_boundaries() {
        let payload: Vec<u8> = (0..64).collect();
        // Value size 20: complete up to 16 bytes.
        let frames = fragment(Category::DFU, &payload[..16], 20);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].len(), 20);
        assert_eq!(frames[0][..4], [0x01, 0x00, 0x10, 0x00]);
        assert_eq!(frames[0][4..], payload[..16]);

        // One byte over: a first frame of 16 and a last frame of 1.
        let frames = fragment(Category::DFU, &payload[..17], 20);
        assert_eq!(
            frames,
            [
                [&[0x01, 0x01, 0x11, 0x00][..], &payload[..16]].concat(),
                vec![0x01, 0x03, 16],
            ]
        );

        // First 16, then 18 per frame: 16 + 18 exactly is first + last.
        let frames = fragment(Category::DFU, &payload[..34], 20);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].len(), 20);
        assert_eq!(frames[1][..2], [0x01, 0x03]);
        // One more byte needs a continue frame.
        let frames = fragment(Category::CONSOLE, &payload[..35], 20);
        assert_eq!(
            frames
                .iter()
                .map(|f| (f[0], f[1], f.len()))
                .collect::<Vec<_>>(),
            [(0x02, 0x01, 20), (0x02, 0x02, 20), (0x02, 0x03, 3)]
        );
        assert_eq!(frames[2], [0x02, 0x03, 34]);

        // The smallest value size: one byte in the first frame, three in the others.
        let frames = fragment(Category::DFU, &[9, 8, 7, 6, 5], 5);
        assert_eq!(
            frames,
            [
                vec![0x01, 0x01, 0x05, 0x00, 9],
                vec![0x01, 0x02, 8, 7, 6],
                vec![0x01, 0x03, 5],
            ]
        );
        // An empty message is one complete frame.
        assert_eq!(
            fragment(Category::DFU, &[], 5),
            [vec![0x01, 0x00, 0x00, 0x00]]
        );

        // emit_next appends and stops after the last frame.
        let mut f = Fragmenter::new(Category::DFU, &payload[..17], 20).unwrap();
        let mut buf = vec![0xEE];
        assert_eq!(f.emit_next(&mut buf), Some(20));
        assert_eq!(buf.len(), 21);
        assert_eq!(f.emit_next(&mut buf), Some(3));
        assert!(f.is_done());
        assert_eq!(f.emit_next(&mut buf), None);
        assert_eq!(buf.len(), 24);
    }

    #[test]
    fn reassembles_fragmented_messages() {
        let payload: Vec<u8> = (0..100).collect();
        let mut r = Reassembler::new(200);
        let frames = fragment(Category::DFU, &payload, 23);
        assert_eq!(frames.len(), 5);
        for frame in &frames[..4] {
            assert_eq!(r.push(frame), Ok(None));
            assert!(r.is_assembling(Category::DFU));
            // Reserved once, at the first frame.
            assert_eq!(r.reserved(), 100);
        }
        assert_eq!(
            r.push(&frames[4]),
            Ok(Some(Assembled {
                category: Category::DFU,
                payload: payload.clone(),
            }))
        );
        assert!(!r.is_assembling(Category::DFU));
        assert_eq!(r.reserved(), 0);

        // The device's own split (value size − 4 for every fragment) reassembles too.
        let device = [
            vec![0x01, 0x01, 0x06, 0x00, 1, 2],
            vec![0x01, 0x02, 3, 4],
            vec![0x01, 0x03, 5, 6],
        ];
        for frame in &device[..2] {
            assert_eq!(r.push(frame), Ok(None));
        }
        assert_eq!(
            r.push(&device[2]).unwrap().unwrap().payload,
            [1, 2, 3, 4, 5, 6]
        );

        // Categories reassemble independently, interleaved.
        let a = fragment(Category::DFU, &payload[..40], 20);
        let b = fragment(Category::LOG, &payload[40..], 20);
        let mut done = Vec::new();
        for i in 0..a.len().max(b.len()) {
            for frames in [&a, &b] {
                if let Some(frame) = frames.get(i) {
                    if let Some(m) = r.push(frame).unwrap() {
                        done.push(m);
                    }
                }
            }
        }
        assert_eq!(
            done,
            [
                Assembled {
                    category: Category::DFU,
                    payload: payload[..40].to_vec()
                },
                Assembled {
                    category: Category::LOG,
                    payload: payload[40..].to_vec()
                },
            ]
        );

        // A complete frame yields at once and discards a partial message of its category.
        assert_eq!(r.push(&a[0]), Ok(None));
        assert_eq!(r.push(&b[0]), Ok(None));
        assert_eq!(
            r.push(&[0x01, 0x00, 0x01, 0x00, 0x7A]),
            Ok(Some(Assembled {
                category: Category::DFU,
                payload: vec![0x7A]
            }))
        );
        assert!(!r.is_assembling(Category::DFU));
        assert!(r.is_assembling(Category::LOG));
        // A new first frame replaces a partial message of its category.
        assert_eq!(r.push(&b[0]), Ok(None));
        for frame in &b[1..b.len() - 1] {
            assert_eq!(r.push(frame), Ok(None));
        }
        assert!(r.push(&b[b.len() - 1]).unwrap().is_some());

        // Completion waits for the last frame even when the bytes are all in.
        assert_eq!(r.push(&[0x01, 0x01, 0x02, 0x00, 1, 2]), Ok(None));
        assert_eq!(r.push(&[0x01, 0x02]), Ok(None));
        assert_eq!(r.push(&[0x01, 0x03]).unwrap().unwrap().payload, [1, 2]);
        // A first frame of total 0 and an empty last frame make an empty message.
        assert_eq!(r.push(&[0x01, 0x01, 0x00, 0x00]), Ok(None));
        assert!(r.push(&[0x01, 0x03]).unwrap().unwrap().payload.is_empty());

        // reset() forgets partial messages.
        assert_eq!(r.push(&a[0]), Ok(None));
        r.reset();
        assert_eq!(
            r.push(&a[1]).unwrap_err().kind,
            ReassemblyErrorKind::UnexpectedFragment
        );
    }

    #[test]
    fn reassembly_errors() {
        let mut r = Reassembler::new(8);
        assert_eq!(r.cap(), 8);

        // Continue or last with no first.
        for bytes in [&[0x01, 0x02, 0xAA][..], &[0x01, 0x03, 0xAA]] {
            let err = r.push(bytes).unwrap_err();
            assert_eq!(
                err,
                ReassemblyError {
                    category: Some(Category::DFU),
                    kind: ReassemblyErrorKind::UnexpectedFragment
                }
            );
            assert_eq!(
                err.to_string(),
                "SiFli cate DFU (0x01): continue or last frame without a first frame"
            );
            assert_eq!(Malformed::from(err), malformed(DecodeError::BadValue));
        }

        // A first frame over the cap, and a complete one.
        let err = r.push(&[0x01, 0x01, 0x09, 0x00, 0xAA]).unwrap_err();
        assert_eq!(
            err.kind,
            ReassemblyErrorKind::TooLarge {
                total_len: 9,
                limit: 8
            }
        );
        assert_eq!(
            err.to_string(),
            "SiFli cate DFU (0x01): message of 9 bytes over the limit of 8"
        );
        assert_eq!(
            Malformed::from(err),
            malformed(DecodeError::TooLarge { limit: 8 })
        );
        assert!(!r.is_assembling(Category::DFU));
        let mut complete = vec![0x01, 0x00, 0x09, 0x00];
        complete.extend_from_slice(&[0; 9]);
        assert_eq!(
            r.push(&complete).unwrap_err().kind,
            ReassemblyErrorKind::TooLarge {
                total_len: 9,
                limit: 8
            }
        );
        // Exactly the cap is fine.
        assert_eq!(r.push(&[0x01, 0x01, 0x08, 0x00, 1, 2, 3, 4]), Ok(None));
        assert_eq!(
            r.push(&[0x01, 0x03, 5, 6, 7, 8])
                .unwrap()
                .unwrap()
                .payload
                .len(),
            8
        );

        // Continue overflowing the total: error, buffer discarded.
        assert_eq!(r.push(&[0x01, 0x01, 0x04, 0x00, 1, 2]), Ok(None));
        let err = r.push(&[0x01, 0x02, 3, 4, 5]).unwrap_err();
        assert_eq!(
            err.kind,
            ReassemblyErrorKind::Overflow {
                total_len: 4,
                got: 5
            }
        );
        assert_eq!(Malformed::from(err), malformed(DecodeError::LengthMismatch));
        assert!(!r.is_assembling(Category::DFU));
        assert_eq!(
            r.push(&[0x01, 0x03, 3, 4]).unwrap_err().kind,
            ReassemblyErrorKind::UnexpectedFragment
        );

        // Last overflowing the total.
        assert_eq!(r.push(&[0x01, 0x01, 0x04, 0x00, 1, 2]), Ok(None));
        assert_eq!(
            r.push(&[0x01, 0x03, 3, 4, 5]).unwrap_err().kind,
            ReassemblyErrorKind::Overflow {
                total_len: 4,
                got: 5
            }
        );
        assert!(!r.is_assembling(Category::DFU));

        // Last short of the total: error, buffer discarded.
        assert_eq!(r.push(&[0x01, 0x01, 0x04, 0x00, 1, 2]), Ok(None));
        let err = r.push(&[0x01, 0x03, 3]).unwrap_err();
        assert_eq!(
            err.kind,
            ReassemblyErrorKind::ShortMessage {
                total_len: 4,
                got: 3
            }
        );
        assert_eq!(
            err.to_string(),
            "SiFli cate DFU (0x01): last frame at 3 bytes of 4"
        );
        assert!(!r.is_assembling(Category::DFU));

        // A malformed frame of a category voids that category's partial message only.
        assert_eq!(r.push(&[0x01, 0x01, 0x04, 0x00, 1, 2]), Ok(None));
        assert_eq!(r.push(&[0x02, 0x01, 0x04, 0x00, 1, 2]), Ok(None));
        let err = r.push(&[0x01, 0x07]).unwrap_err();
        assert_eq!(err.category, Some(Category::DFU));
        assert_eq!(
            err.kind,
            ReassemblyErrorKind::Malformed(DecodeError::BadValue)
        );
        assert!(!r.is_assembling(Category::DFU));
        assert!(r.is_assembling(Category::CONSOLE));
        let err = r.push(&[]).unwrap_err();
        assert_eq!(err.category, None);
        assert_eq!(
            err.to_string(),
            "SiFli: malformed frame: truncated: needs 2 bytes, has 0"
        );
        assert!(r.is_assembling(Category::CONSOLE));
    }

    #[test]
    fn the_cap_bounds_all_buffers_together() {
        let mut r = Reassembler::new(10);
        assert_eq!(r.push(&[0x02, 0x01, 0x04, 0x00, 1]), Ok(None));
        assert_eq!(r.push(&[0x03, 0x01, 0x04, 0x00, 1]), Ok(None));
        assert_eq!(r.reserved(), 8);
        // 8 + 6 > 10: the oldest (console) goes, log stays.
        assert_eq!(r.push(&[0x01, 0x01, 0x06, 0x00, 1]), Ok(None));
        assert!(r.reserved() <= 10);
        assert!(!r.is_assembling(Category::CONSOLE));
        assert!(r.is_assembling(Category::LOG));
        assert!(r.is_assembling(Category::DFU));
        // A full-cap message evicts everything else.
        assert_eq!(r.push(&[0x05, 0x01, 0x0A, 0x00, 1]), Ok(None));
        assert_eq!(r.reserved(), 10);
        assert!(!r.is_assembling(Category::LOG));
        assert!(!r.is_assembling(Category::DFU));
    }

    #[test]
    fn fragment_then_reassemble_is_identity() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut r = Reassembler::new(MAX_MESSAGE_LEN);
        for round in 0..500 {
            let len = match round % 3 {
                0 => rng.below(64),
                1 => rng.below(3000),
                _ => rng.below(MAX_MESSAGE_LEN + 1),
            };
            let max = match round % 2 {
                0 => MIN_VALUE_SIZE + rng.below(30),
                _ => MIN_VALUE_SIZE + rng.below(DEVICE_MAX_VALUE_LEN),
            };
            let payload = rng.bytes(len);
            let category = Category(rng.below(256) as u8);
            let frames = fragment(category, &payload, max);
            assert!(frames.iter().all(|f| f.len() <= max));
            assert_eq!(frames.len() == 1, len + FIRST_HEADER_LEN <= max);
            let (last, rest) = frames.split_last().unwrap();
            for frame in rest {
                assert_eq!(r.push(frame), Ok(None));
            }
            assert_eq!(
                r.push(last),
                Ok(Some(Assembled { category, payload })),
                "len {len} max {max}"
            );
            assert_eq!(r.reserved(), 0);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = Rng(0x0123_4567_89AB_CDEF);
        let cap = 64;
        let mut r = Reassembler::new(cap);
        for _ in 0..20_000 {
            let len = rng.below(24);
            let mut bytes = rng.bytes(len);
            // Steer most inputs onto few categories, defined flags and small lengths, to
            // reach the reassembly paths.
            if len > 1 && rng.below(4) != 0 {
                bytes[0] = rng.below(3) as u8;
                bytes[1] &= 0x03;
                if len > 3 && bytes[1] <= 0x01 {
                    bytes[2] = if bytes[1] == 0x00 {
                        (len - 4) as u8
                    } else {
                        rng.below(80) as u8
                    };
                    bytes[3] = 0;
                }
            }
            let unchecked = Frame::new_unchecked(&bytes[..]);
            let _ = (
                unchecked.category(),
                unchecked.flag(),
                unchecked.header_len(),
                unchecked.total_len(),
                unchecked.payload(),
            );
            if let Ok(repr) = parse(&bytes) {
                assert_eq!(frame_bytes(&repr), bytes);
                let _ = repr.to_string();
            }
            match r.push(&bytes) {
                Ok(Some(m)) => assert!(m.payload.len() <= cap),
                Ok(None) => {}
                Err(e) => {
                    let _ = (e.to_string(), Malformed::from(e));
                }
            }
            assert!(r.reserved() <= cap);
        }
    }
}
