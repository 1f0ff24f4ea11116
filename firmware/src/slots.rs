//! The image database: a factory image, N download slots and a power-safe index on one NOR
//! flash, and the boot decision, with trial boots, rollback and factory reset.
//!
//! Contract. [`Slots`] divides a window of a flash ([`Layout`]) into an index area of two
//! sectors, a factory region and N equal download slots (2 to 5, [`DbConfig::slots`],
//! default 2; the factory region does not count among them). The factory region,
//! [`Slot::FACTORY`], holds the factory image: [`Slots::provision`] writes it, nothing else
//! ever writes it, and [`Slots::factory_reset`] returns to it. Downloads go to the slots,
//! [`Slot::A`], [`Slot::B`], … (indexes 1 to N), so with the default two a device alternates
//! between A and B for as many updates as it gets, and keeps its factory image throughout.
//! The index ([`State`]) records per region its [`ImageState`], version, size, SHA-256,
//! optional signature and name, and five pointers: the *active* (valid) image, the image on
//! *trial*, the *pending* one, the *previous* valid one and the *retiring* one (below).
//!
//! The default is Microchip's "two images plus a factory backup". The factory region is as
//! large as a slot: one size for every region, and a factory image may be anything a slot
//! may hold. (An earlier version made the factory image slot 0 of the N, so a default
//! device had one download slot, which its first update made the running one: it could not
//! be updated again before a factory reset.)
//!
//! ```text
//! Flash window at Layout::base (E = erase_size, S = slot_size, N = slots):
//!
//!   offset        size   content
//!   0             E      index sector 0  ┐ one crate::record::RecordLog:
//!   E             E      index sector 1  ┘ the latest committed index record wins
//!   2E            S      factory region: Slot::FACTORY, index 0, the factory image
//!   2E + S        S      slot 1: Slot::A, downloads
//!   2E + 2S       S      slot 2: Slot::B, downloads
//!   …
//!   2E + N·S      S      slot N
//!   2E + (N+1)·S         end: Layout::window_len; Layout::validate wants it in the flash
//! ```
//!
//! # The index record
//!
//! Each index write appends one [`RecordLog`] record (magic "OTA3", sequence, payload,
//! 8-byte check, commit word last; see [`crate::record`]) whose payload is
//! `8 + 124 × (N + 1)` bytes, little-endian: a header, then one entry per region, the
//! factory region's first (entry 0) and slot k's at entry k.
//!
//! ```text
//!   payload   size  field
//!   0         u8    N, the download slot count (a record for another N is refused)
//!   1         u8    active region: the valid image that boots when nothing else is due
//!   2         u8    trial slot, or 0xFF: booted from an update, not yet confirmed
//!   3         u8    pending slot, or 0xFF: applied, boots as a trial at the next boot
//!   4         u8    previous region, or 0xFF: the valid image before the active one
//!   5         u8    retiring slot, or 0xFF: still runs, but the next boot leaves it
//!   6         [2]   0
//!   8 + 124k  [124] entry of region k (0 the factory region, 1..=N the slots):
//!
//!   entry     size  field
//!   0         u8    state: 0 empty, 1 downloading, 2 downloaded, 3 verified,
//!                   4 active, 5 invalid
//!   1         u8    flags: bit 0 = a signature is recorded; other bits 0
//!   2         u8    name length, 0..=16
//!   3         u8    0
//!   4         u32   version
//!   8         u32   size; while downloading, the bytes held from the slot's start
//!   12        [32]  SHA-256 of the image (0 until finished)
//!   44        [64]  signature: ECDSA P-256 r‖s over the SHA-256 (0 if none)
//!   108       [16]  name (UTF-8), zero-padded
//! ```
//!
//! A record is taken only if it is consistent: the active region is the only one in state
//! active, set pointers are distinct, trial, pending and previous point at verified
//! images, retiring at an invalid or empty one, at most one of trial, pending and retiring
//! is set and none of them is the factory region, the factory image is active or verified,
//! at most one slot is downloading or downloaded, sizes fit the slot and names are UTF-8.
//! An inconsistent record is skipped like a torn one, so the one before wins.
//!
//! # States
//!
//! ```text
//!  per slot:
//!   empty/invalid/verified ─begin_download─▶ downloading
//!   downloading/downloaded ─download─▶ downloading
//!   downloading/downloaded ─finish_download─▶ downloaded ─verify─▶ verified | invalid
//!   verified ─apply─▶ (pending) ─boot: check passes─▶ (trial) ─confirm─▶ active
//!                               └boot: check fails─▶ invalid
//!   (trial) ─boot without confirm, or health_failed─▶ invalid
//!   active ─confirm of another─▶ verified (previous) ; active ─rollback─▶ invalid
//!   any slot ─factory_reset─▶ empty
//!  the factory region: active ─confirm of another─▶ verified (previous)
//!                      verified ─rollback or factory_reset─▶ active
//!
//!  boot decision, by what the index holds (at most one applies):
//!   retiring      → clear it: RolledBack, or FactoryReset if it was emptied
//!   trial         → it rebooted unconfirmed: invalid, the active image boots: RolledBack
//!   pending       → verify: boots as trial (Updated) or invalid (FellBack)
//!   nothing       → the active image boots: Unchanged (no write)
//!   no record     → blank flash: the factory state, the factory region (Factory, no write)
//! ```
//!
//! An image becomes valid only after it has booted *and* the application confirmed it
//! ([`Slots::confirm`]) once its health check passed. This differs from Microchip's OTA
//! service, which marks the running image valid (0xF8) as soon as the service starts
//! (`enos_microchip.md` B7), so an image that boots but cannot work stays installed there.
//! Here, a trial that reboots without [`Slots::confirm`], or reports
//! [`Slots::health_failed`], is marked invalid and the active image boots again.
//! [`Slots::rollback`] leaves a confirmed image for the previous valid image, or the factory
//! image if there is none, as Microchip's TRIGGER_ROLLBACK does.
//!
//! Downloads. [`Slots::begin_download`] takes a slot ([`State::download_slot`]), never the
//! factory region nor a slot whose image runs (active, trial, retiring) or is pending:
//!
//! 1. the download in progress (one at a time: beginning another abandons it);
//! 2. else an empty or invalid slot;
//! 3. else, the database being full, the verified image with the lowest version
//!    (Microchip's rule), the previous image excepted;
//! 4. else the previous image.
//!
//! What rollback needs: a valid image other than the running one, and the factory image
//! always is one. So the previous image is kept while another slot can be taken, and
//! replaced only when it is the last one left, which with the default two slots is every
//! update from the third on: the slot not running holds the previous image. From that
//! download until the new image is confirmed (and the old active one becomes the previous),
//! [`Slots::rollback`] goes to the factory image.
//!
//! *Retiring* exists because an image marked invalid ([`Slots::health_failed`],
//! [`Slots::rollback`]) or emptied ([`Slots::factory_reset`]) still runs until the restart:
//! its slot must not be written under it. [`Slots::download`] writes bytes at any offset up
//! to the bytes held and records the new count, so a download survives restarts;
//! [`Slots::finish_download`] records the image's version, size, SHA-256 and signature;
//! [`Slots::verify`] checks them against the flash: the SHA-256 always, the signature if
//! the database has a trusted key ([`DbConfig::trusted_key`], then an unsigned image is
//! refused). [`Slots::apply`] marks a verified image in a slot pending; the boot decision
//! checks it again before it runs.
//!
//! Power safety: every change of the index is one record append, and a cut at any write or
//! erase leaves either the old or the new record readable (see [`crate::record`]). Image
//! bytes are written only to slots no pointer protects, and the index never claims bytes a
//! write in progress may erase: [`Slots::download`] first lowers the bytes held to the start
//! of the sector it will rewrite if they reach into it (its only second record). So after
//! any cut the index parses, the image that boots is intact, and the state is the one
//! before or after the operation (or that lowered count). The boot decision is idempotent:
//! cut during it, the next boot decides the same again. Records per operation:
//!
//! ```text
//!   provision                                   1, after erasing the index: the factory's
//!                                                  step, the one not power-safe
//!   begin_download, finish_download, verify,    1
//!   apply, confirm, health_failed, rollback,
//!   factory_reset
//!   download                                    1, or 2 when it rewrites a held sector
//!   boot                                        0 (Unchanged, Factory) or 1
//! ```
//!
//! Image data: [`Slots::download`] rewrites each sector it touches whole: the bytes of that
//! sector before the offset are read, the sector is erased, and those bytes are programmed
//! back followed by the new ones (the last word padded with 0xFF). So sectors are erased
//! lazily, on their first write, a write may rewind over bytes written before, and no
//! write-word is ever programmed twice.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use embedded_storage::nor_flash::NorFlash;
use otaweb::image::digest::{sha256, DigestAlg, Hasher};
use otaweb::image::signature::{ImageSignature, PublicKey, SIGNATURE_LEN};

use crate::record::{LogError, RecordLog};

/// The fewest download slots: two, so updates alternate between them (A/B) and one can
/// always be written while the other runs. The factory region comes on top.
pub const MIN_SLOTS: u8 = 2;
/// The most download slots, as Microchip's database holds at most five images. The factory
/// region comes on top.
pub const MAX_SLOTS: u8 = 5;
/// The download slots of [`DbConfig::default`]: A and B.
pub const DEFAULT_SLOTS: u8 = 2;
/// Longest image name, in bytes (an AGT component name has at most 15).
pub const NAME_LEN: usize = 16;

/// The record magic, "OTA3" read as a big-endian word and stored little-endian. ("OTA1" was
/// the A/B state record, "OTA2" the database that counted the factory image among its N.)
const MAGIC: u32 = 0x4F54_4133;
/// Bytes of the index payload before the entries.
const HEADER_LEN: usize = 8;
/// Bytes of one region's entry.
const ENTRY_LEN: usize = 124;
/// A pointer byte that points nowhere.
const NOWHERE: u8 = 0xFF;
/// Erased NOR flash reads as ones.
const ERASED: u8 = 0xFF;
/// How much of an image is read at a time to hash it.
const DIGEST_CHUNK: usize = 256;

/// Where the index, the factory region and the slots lie on a flash, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Start of the index area; a multiple of `erase_size`.
    pub base: u32,
    /// Sector size the layout is cut into: a power of two, a multiple of the flash's.
    pub erase_size: u32,
    /// Write-word size records are padded to: a power of two, a multiple of the flash's.
    pub write_size: u32,
    /// Size of the factory region and of each download slot: a nonzero multiple of
    /// `erase_size`.
    pub slot_size: u32,
}

impl Layout {
    /// Bytes the window spans with `slots` download slots: two index sectors, the factory
    /// region and the slots, `2E + (N + 1)·S` (module docs). It starts at `base`.
    #[must_use]
    pub const fn window_len(&self, slots: u8) -> u64 {
        2 * self.erase_size as u64 + (slots as u64 + 1) * self.slot_size as u64
    }

    /// Checks the rules on the fields and the download slot count against `flash`: its
    /// constants, its capacity, which must hold the window ([`Layout::window_len`]: two index
    /// sectors, the factory region and `slots` slots), and that a sector holds an index
    /// record. Reads of any length at any offset are made, so the flash's `READ_SIZE` must
    /// be 1.
    pub fn validate<F: NorFlash>(&self, slots: u8, flash: &F) -> Result<(), LayoutError> {
        if !(MIN_SLOTS..=MAX_SLOTS).contains(&slots) {
            return Err(LayoutError::SlotCount);
        }
        let es = self.erase_size as usize;
        let ws = self.write_size as usize;
        if !es.is_power_of_two() || !ws.is_power_of_two() || es < ws || F::READ_SIZE != 1 {
            return Err(LayoutError::Geometry);
        }
        if !es.is_multiple_of(F::ERASE_SIZE) || !ws.is_multiple_of(F::WRITE_SIZE) {
            return Err(LayoutError::Geometry);
        }
        if self.slot_size == 0
            || !self.slot_size.is_multiple_of(self.erase_size)
            || !self.base.is_multiple_of(self.erase_size)
        {
            return Err(LayoutError::NotSectorAligned);
        }
        if RecordLog::too_large(es as u32, ws as u32, payload_len(slots)) {
            return Err(LayoutError::SectorTooSmall);
        }
        let end = u64::from(self.base) + self.window_len(slots);
        // Offsets are `u32`: the window must end within both the flash and that range.
        if end > flash.capacity() as u64 || end > u64::from(u32::MAX) {
            return Err(LayoutError::TooLarge);
        }
        Ok(())
    }
}

/// Why a [`Layout`] does not fit a flash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The download slot count is outside [`MIN_SLOTS`]..=[`MAX_SLOTS`].
    SlotCount,
    /// A size is not a power of two or not a multiple of the flash's constants, or the
    /// flash cannot read single bytes.
    Geometry,
    /// The base or the slot size is not a whole number of sectors, or the slot size is zero.
    NotSectorAligned,
    /// A sector cannot hold one index record.
    SectorTooSmall,
    /// The index area, the factory region and the slots do not fit in the flash or in
    /// `u32` offsets.
    TooLarge,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LayoutError::SlotCount => "an image database has 2 to 5 download slots",
            LayoutError::Geometry => "slot layout sizes do not match the flash geometry",
            LayoutError::NotSectorAligned => "slot layout is not sector-aligned",
            LayoutError::SectorTooSmall => "a sector cannot hold an index record",
            LayoutError::TooLarge => "slot layout does not fit the flash",
        })
    }
}

/// Why a database operation failed. Nothing was written unless the error is `Flash`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotError<E> {
    /// The flash refused an operation.
    Flash(E),
    /// The range runs past the end of the slot or past the bytes held, or the slot does
    /// not exist (its index is above the slot count).
    OutOfBounds,
    /// Every sequence number has been used; the index can no longer advance.
    SequenceExhausted,
    /// No slot can take a download: each runs (active, trial, retiring) or is pending.
    Full,
    /// The slot or the database is not in the state the operation needs.
    WrongState,
    /// The name is longer than [`NAME_LEN`] bytes.
    NameTooLong,
    /// The download holds another number of bytes than the image's size.
    Incomplete,
    /// The factory image does not match its recorded SHA-256 (or signature).
    FactoryInvalid,
}

impl<E: fmt::Display> fmt::Display for SlotError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotError::Flash(e) => write!(f, "flash: {e}"),
            SlotError::OutOfBounds => f.write_str("range runs past the slot or the bytes held"),
            SlotError::SequenceExhausted => f.write_str("index sequence numbers exhausted"),
            SlotError::Full => f.write_str("no slot is free for a download"),
            SlotError::WrongState => f.write_str("the image is not in a state that allows this"),
            SlotError::NameTooLong => write!(f, "an image name has at most {NAME_LEN} bytes"),
            SlotError::Incomplete => f.write_str("the download does not hold the whole image"),
            SlotError::FactoryInvalid => f.write_str("the factory image fails its check"),
        }
    }
}

/// A region of the window by index: 0 the factory region, 1 to N the download slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(u8);

impl Slot {
    /// Index 0: the factory region, which holds the factory image and takes no download.
    pub const FACTORY: Slot = Slot(0);
    /// Slot 1, the first download slot: where the first update goes.
    pub const A: Slot = Slot(1);
    /// Slot 2, the second download slot: where the second update goes.
    pub const B: Slot = Slot(2);

    /// Region `index`, if at most [`MAX_SLOTS`] (0 is the factory region). A database with
    /// fewer slots refuses the indexes above its count with [`SlotError::OutOfBounds`].
    #[must_use]
    pub fn new(index: u8) -> Option<Slot> {
        (index <= MAX_SLOTS).then_some(Slot(index))
    }

    /// The index: 0 for the factory region, 1 to N for the slots; also the entry's position
    /// in [`State::images`].
    #[must_use]
    pub fn index(self) -> u8 {
        self.0
    }

    /// Whether this is the factory region.
    #[must_use]
    pub fn is_factory(self) -> bool {
        self == Slot::FACTORY
    }
}

/// What a slot holds, as the index records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageState {
    /// Nothing.
    Empty,
    /// A download in progress; the size is the bytes held.
    Downloading,
    /// All bytes and the image's metadata are in, not yet checked.
    Downloaded,
    /// Checked against its SHA-256 (and signature): may be applied or rolled back to.
    Verified,
    /// The valid image that boots when nothing else is due.
    Active,
    /// Failed a check, a trial or a health check, or was rolled back from.
    Invalid,
}

impl ImageState {
    fn to_byte(self) -> u8 {
        match self {
            ImageState::Empty => 0,
            ImageState::Downloading => 1,
            ImageState::Downloaded => 2,
            ImageState::Verified => 3,
            ImageState::Active => 4,
            ImageState::Invalid => 5,
        }
    }

    fn from_byte(b: u8) -> Option<ImageState> {
        Some(match b {
            0 => ImageState::Empty,
            1 => ImageState::Downloading,
            2 => ImageState::Downloaded,
            3 => ImageState::Verified,
            4 => ImageState::Active,
            5 => ImageState::Invalid,
            _ => return None,
        })
    }

    /// Whether this is the download in progress (bytes arriving, or in but unchecked).
    fn is_download(self) -> bool {
        matches!(self, ImageState::Downloading | ImageState::Downloaded)
    }
}

/// An image's name: at most [`NAME_LEN`] bytes of UTF-8, kept inline.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Name {
    len: u8,
    bytes: [u8; NAME_LEN],
}

impl Name {
    /// `name`, if it has at most [`NAME_LEN`] bytes.
    #[must_use]
    pub fn new(name: &str) -> Option<Name> {
        let mut bytes = [0; NAME_LEN];
        bytes
            .get_mut(..name.len())?
            .copy_from_slice(name.as_bytes());
        Some(Name {
            len: name.len() as u8,
            bytes,
        })
    }

    /// The name as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Built from a `&str` or checked when decoded, so the fallback is never taken.
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A region's entry in the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// The region: the factory region or a slot.
    pub slot: Slot,
    /// What it holds.
    pub state: ImageState,
    /// The image's OTA version (0 while downloading).
    pub version: u32,
    /// Its size in bytes from the start of the slot; while downloading, the bytes held.
    pub size: u32,
    /// SHA-256 of its bytes (zero while downloading).
    pub sha256: [u8; 32],
    /// ECDSA P-256 signature `r‖s` over the SHA-256, if one came with the image.
    pub signature: Option<[u8; SIGNATURE_LEN]>,
    /// The name given when the download began (the AGT component name, say).
    pub name: Name,
}

impl ImageInfo {
    /// An empty slot's entry.
    fn empty(slot: Slot) -> ImageInfo {
        ImageInfo {
            slot,
            state: ImageState::Empty,
            version: 0,
            size: 0,
            sha256: [0; 32],
            signature: None,
            name: Name::default(),
        }
    }
}

/// What a finished download is: recorded by [`Slots::finish_download`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageMeta {
    /// The OTA version.
    pub version: u32,
    /// The size in bytes: must equal the bytes held.
    pub size: u32,
    /// SHA-256 of the image.
    pub sha256: [u8; 32],
    /// ECDSA P-256 `r‖s` over the SHA-256; required if the database has a trusted key.
    pub signature: Option<[u8; SIGNATURE_LEN]>,
}

/// What the index says, decoded: the pointers resolved to their slots' entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// The valid image: boots when no trial, pending or retiring image is due.
    pub active: ImageInfo,
    /// Booted from an update and not yet confirmed; it runs now.
    pub trial: Option<ImageInfo>,
    /// Applied: to verify and boot as a trial at the next boot.
    pub pending: Option<ImageInfo>,
    /// The valid image before the active one: where [`Slots::rollback`] goes.
    pub previous: Option<ImageInfo>,
    /// Marked invalid or emptied while it runs; the next boot leaves it.
    pub retiring: Option<ImageInfo>,
    /// Every region's entry, by [`Slot::index`]: the factory region's first, then the N
    /// slots'.
    pub images: Vec<ImageInfo>,
}

impl State {
    /// The image that runs since the last boot: retiring, else trial, else active.
    #[must_use]
    pub fn running(&self) -> ImageInfo {
        self.retiring.or(self.trial).unwrap_or(self.active)
    }

    /// The download in progress, downloading or downloaded: at most one slot is.
    #[must_use]
    pub fn download(&self) -> Option<ImageInfo> {
        self.images.iter().copied().find(|i| i.state.is_download())
    }

    /// The slot [`Slots::begin_download`] would take now, if any: the download in
    /// progress, else an empty or invalid slot, else the lowest version but the previous
    /// image, else the previous image; never the factory region nor a running or pending
    /// image (module docs).
    #[must_use]
    pub fn download_slot(&self) -> Option<Slot> {
        let protected = [
            Some(self.active.slot),
            self.trial.map(|i| i.slot),
            self.pending.map(|i| i.slot),
            self.retiring.map(|i| i.slot),
        ];
        let free = || {
            self.images
                .iter()
                .filter(|i| !i.slot.is_factory() && !protected.contains(&Some(i.slot)))
        };
        let of = |states: &[ImageState]| free().find(|i| states.contains(&i.state));
        let previous = self.previous.map(|i| i.slot);
        of(&[ImageState::Downloading, ImageState::Downloaded])
            .or_else(|| of(&[ImageState::Empty, ImageState::Invalid]))
            .or_else(|| {
                free()
                    .filter(|i| Some(i.slot) != previous)
                    .min_by_key(|i| (i.version, i.slot))
            })
            .or_else(|| free().find(|i| Some(i.slot) == previous))
            .map(|i| i.slot)
    }
}

/// What the boot decision did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootOutcome {
    /// No index record: the factory state, nothing written.
    Factory,
    /// Nothing due: the active image boots unchanged, nothing written.
    Unchanged,
    /// The pending image verified and boots as a trial, to be confirmed.
    Updated {
        /// The version of the active image.
        from: u32,
        /// The version on trial now.
        to: u32,
    },
    /// The pending image failed verification; it is invalid and the active image boots.
    FellBack {
        /// The version of the refused image.
        rejected: u32,
    },
    /// An image was left for the active one: a trial that rebooted unconfirmed or failed
    /// its health check, or a rollback.
    RolledBack {
        /// The version left, now invalid.
        from: u32,
        /// The version that boots.
        to: u32,
    },
    /// The factory image boots after [`Slots::factory_reset`].
    FactoryReset,
}

/// The result of [`Slots::boot`]: the decision and the state it left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Boot {
    /// What the decision did.
    pub outcome: BootOutcome,
    /// The state after it; `pending` and `retiring` are always `None`.
    pub state: State,
}

/// How many download slots the database has and which key its images must be signed with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbConfig {
    /// Download slots, the factory region not counted: [`MIN_SLOTS`] to [`MAX_SLOTS`],
    /// default [`DEFAULT_SLOTS`] (2). The window holds this many slots and the factory
    /// region, each [`Layout::slot_size`] long.
    pub slots: u8,
    /// If set, an image verifies only with a signature this key made over its SHA-256.
    pub trusted_key: Option<PublicKey>,
}

impl Default for DbConfig {
    fn default() -> Self {
        DbConfig {
            slots: DEFAULT_SLOTS,
            trusted_key: None,
        }
    }
}

/// The index as stored: entries (the factory region's, then the slots') and pointers.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Index {
    images: Vec<ImageInfo>,
    active: Slot,
    trial: Option<Slot>,
    pending: Option<Slot>,
    previous: Option<Slot>,
    retiring: Option<Slot>,
}

impl Index {
    /// A flash with no record, for `slots` slots: the factory region active with version 0
    /// and an empty image, every slot empty.
    fn blank(slots: u8) -> Index {
        let mut images: Vec<ImageInfo> = (0..=slots).map(|i| ImageInfo::empty(Slot(i))).collect();
        images[0].state = ImageState::Active;
        images[0].sha256 = sha256(&[]);
        Index {
            images,
            active: Slot::FACTORY,
            trial: None,
            pending: None,
            previous: None,
            retiring: None,
        }
    }

    fn entry(&self, slot: Slot) -> &ImageInfo {
        &self.images[usize::from(slot.0)]
    }

    fn entry_mut(&mut self, slot: Slot) -> &mut ImageInfo {
        &mut self.images[usize::from(slot.0)]
    }

    /// `slot`'s entry, if the slot exists and is in one of `states`.
    fn entry_in<E>(&self, slot: Slot, states: &[ImageState]) -> Result<&ImageInfo, SlotError<E>> {
        let entry = self
            .images
            .get(usize::from(slot.0))
            .ok_or(SlotError::OutOfBounds)?;
        if states.contains(&entry.state) {
            Ok(entry)
        } else {
            Err(SlotError::WrongState)
        }
    }

    fn view(&self) -> State {
        let at = |slot: Option<Slot>| slot.map(|s| *self.entry(s));
        State {
            active: *self.entry(self.active),
            trial: at(self.trial),
            pending: at(self.pending),
            previous: at(self.previous),
            retiring: at(self.retiring),
            images: self.images.clone(),
        }
    }

    /// The download slot count: the entries but the factory region's.
    fn slots(&self) -> u8 {
        (self.images.len() - 1) as u8
    }

    /// The record payload: see the module docs.
    fn encode(&self) -> Vec<u8> {
        let byte = |slot: Option<Slot>| slot.map_or(NOWHERE, |s| s.0);
        let mut out = Vec::with_capacity(payload_len(self.slots()));
        out.extend_from_slice(&[
            self.slots(),
            self.active.0,
            byte(self.trial),
            byte(self.pending),
            byte(self.previous),
            byte(self.retiring),
            0,
            0,
        ]);
        for image in &self.images {
            out.extend_from_slice(&[
                image.state.to_byte(),
                u8::from(image.signature.is_some()),
                image.name.len,
                0,
            ]);
            out.extend_from_slice(&image.version.to_le_bytes());
            out.extend_from_slice(&image.size.to_le_bytes());
            out.extend_from_slice(&image.sha256);
            out.extend_from_slice(&image.signature.unwrap_or([0; SIGNATURE_LEN]));
            out.extend_from_slice(&image.name.bytes);
        }
        out
    }

    /// The index in a record payload, if it is consistent (module docs).
    fn decode(p: &[u8], slots: u8, slot_size: u32) -> Option<Index> {
        if p.len() != payload_len(slots) || p[0] != slots {
            return None;
        }
        let images = (0..=slots)
            .map(|i| decode_entry(p.get(entry_at(i)..entry_at(i + 1))?, Slot(i), slot_size))
            .collect::<Option<Vec<_>>>()?;
        let pointer = |at: usize| match p[at] {
            NOWHERE => Some(None),
            s if s <= slots => Some(Some(Slot(s))),
            _ => None,
        };
        let index = Index {
            images,
            active: pointer(1)??,
            trial: pointer(2)?,
            pending: pointer(3)?,
            previous: pointer(4)?,
            retiring: pointer(5)?,
        };
        index.is_consistent().then_some(index)
    }

    fn is_consistent(&self) -> bool {
        let set: Vec<Slot> = [
            Some(self.active),
            self.trial,
            self.pending,
            self.previous,
            self.retiring,
        ]
        .into_iter()
        .flatten()
        .collect();
        let distinct = set.iter().enumerate().all(|(i, s)| !set[..i].contains(s));
        let due = [self.trial, self.pending, self.retiring];
        let verified = [self.trial, self.pending, self.previous]
            .into_iter()
            .flatten()
            .all(|s| self.entry(s).state == ImageState::Verified);
        let retiring = self
            .retiring
            .is_none_or(|s| matches!(self.entry(s).state, ImageState::Invalid | ImageState::Empty));
        // The factory image only runs as the active image and is never written or judged.
        let factory = due.iter().flatten().all(|s| !s.is_factory())
            && matches!(
                self.entry(Slot::FACTORY).state,
                ImageState::Active | ImageState::Verified
            );
        let count = |f: fn(ImageState) -> bool| self.images.iter().filter(|i| f(i.state)).count();
        distinct
            && verified
            && retiring
            && factory
            && due.iter().flatten().count() <= 1
            && count(|s| s == ImageState::Active) == 1
            && self.entry(self.active).state == ImageState::Active
            && count(ImageState::is_download) <= 1
    }
}

/// Where region `i`'s entry starts in the payload (0 the factory region's).
fn entry_at(i: u8) -> usize {
    HEADER_LEN + usize::from(i) * ENTRY_LEN
}

/// Bytes of the index payload for `slots` download slots: the header and `slots + 1`
/// entries.
fn payload_len(slots: u8) -> usize {
    entry_at(slots + 1)
}

fn decode_entry(e: &[u8], slot: Slot, slot_size: u32) -> Option<ImageInfo> {
    let word = |at: usize| Some(u32::from_le_bytes(e.get(at..at + 4)?.try_into().ok()?));
    let state = ImageState::from_byte(e[0])?;
    let signature = match e[1] {
        0 => None,
        1 => Some(e.get(44..108)?.try_into().ok()?),
        _ => return None,
    };
    let name = core::str::from_utf8(e.get(108..108 + usize::from(e[2]))?).ok()?;
    let size = word(8)?;
    (size <= slot_size && e[3] == 0).then_some(())?;
    Some(ImageInfo {
        slot,
        state,
        version: word(4)?,
        size,
        sha256: e.get(12..44)?.try_into().ok()?,
        signature,
        name: Name::new(name)?,
    })
}

/// A validated [`Layout`] with its download slot count and trusted key, and the operations
/// on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slots {
    layout: Layout,
    slots: u8,
    trusted_key: Option<PublicKey>,
}

impl Slots {
    /// A database of the default two download slots (and the factory region) and no trusted
    /// key, laid out by `layout`, which must fit `flash` ([`Layout::validate`]).
    pub fn new<F: NorFlash>(layout: Layout, flash: &F) -> Result<Slots, LayoutError> {
        Slots::with_config(layout, DbConfig::default(), flash)
    }

    /// A database as `config` says, laid out by `layout`, which must fit `flash`.
    pub fn with_config<F: NorFlash>(
        layout: Layout,
        config: DbConfig,
        flash: &F,
    ) -> Result<Slots, LayoutError> {
        layout.validate(config.slots, flash)?;
        Ok(Slots {
            layout,
            slots: config.slots,
            trusted_key: config.trusted_key,
        })
    }

    /// The layout.
    #[must_use]
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// How many download slots there are, the factory region not counted: slots 1 to this.
    #[must_use]
    pub fn slot_count(&self) -> u8 {
        self.slots
    }

    /// Where `slot` lies on the flash: [`Slot::FACTORY`] or a slot up to
    /// [`Slots::slot_count`].
    #[must_use]
    pub fn slot_range(&self, slot: Slot) -> Range<u32> {
        let l = self.layout;
        let start = l.base + 2 * l.erase_size + u32::from(slot.0) * l.slot_size;
        start..start + l.slot_size
    }

    /// The current state: the latest valid record, or the blank factory state if none.
    pub fn state<F: NorFlash>(&self, flash: &mut F) -> Result<State, SlotError<F::Error>> {
        Ok(self.index(flash)?.view())
    }

    /// The boot decision (module docs): writes at most one record. Safe to cut and rerun.
    pub fn boot<F: NorFlash>(&self, flash: &mut F) -> Result<Boot, SlotError<F::Error>> {
        let Some(mut index) = self.latest(flash)? else {
            return Ok(Boot {
                outcome: BootOutcome::Factory,
                state: Index::blank(self.slots).view(),
            });
        };
        let outcome = if let Some(left) = index.retiring.take() {
            let left = index.entry(left);
            if left.state == ImageState::Empty {
                BootOutcome::FactoryReset
            } else {
                BootOutcome::RolledBack {
                    from: left.version,
                    to: index.entry(index.active).version,
                }
            }
        } else if let Some(trial) = index.trial.take() {
            // It ran and rebooted without being confirmed: its health check never passed.
            index.entry_mut(trial).state = ImageState::Invalid;
            BootOutcome::RolledBack {
                from: index.entry(trial).version,
                to: index.entry(index.active).version,
            }
        } else if let Some(pending) = index.pending.take() {
            let entry = *index.entry(pending);
            if self.check(flash, &entry)? {
                index.trial = Some(pending);
                BootOutcome::Updated {
                    from: index.entry(index.active).version,
                    to: entry.version,
                }
            } else {
                index.entry_mut(pending).state = ImageState::Invalid;
                BootOutcome::FellBack {
                    rejected: entry.version,
                }
            }
        } else {
            return Ok(Boot {
                outcome: BootOutcome::Unchanged,
                state: index.view(),
            });
        };
        Ok(Boot {
            outcome,
            state: self.commit(flash, &index)?,
        })
    }

    /// Erases the index area, writes `image` to the factory region and records it as the
    /// active image with version 0 and no signature, every slot empty: what a factory
    /// programmer does.
    pub fn provision<F: NorFlash>(
        &self,
        flash: &mut F,
        image: &[u8],
    ) -> Result<State, SlotError<F::Error>> {
        self.provision_factory(flash, image, 0, None)
    }

    /// [`Slots::provision`] with the factory image's version and signature: a database with
    /// a trusted key resets to its factory image only if the signature is recorded.
    pub fn provision_factory<F: NorFlash>(
        &self,
        flash: &mut F,
        image: &[u8],
        version: u32,
        signature: Option<[u8; SIGNATURE_LEN]>,
    ) -> Result<State, SlotError<F::Error>> {
        let size = u32::try_from(image.len()).map_err(|_| SlotError::OutOfBounds)?;
        if size > self.layout.slot_size {
            return Err(SlotError::OutOfBounds);
        }
        let area = self.log().sector(0).start..self.log().sector(1).end;
        flash
            .erase(area.start, area.end)
            .map_err(SlotError::Flash)?;
        self.write_raw(flash, Slot::FACTORY, 0, image)?;
        let mut index = Index::blank(self.slots);
        let factory = index.entry_mut(Slot::FACTORY);
        factory.version = version;
        factory.size = size;
        factory.sha256 = sha256(image);
        factory.signature = signature;
        self.commit(flash, &index)
    }

    /// Starts a download named `name` in the slot the module docs name (abandoning a
    /// download in progress); its bytes held start at 0. Returns the new state, whose
    /// [`State::download`] is the slot taken.
    pub fn begin_download<F: NorFlash>(
        &self,
        flash: &mut F,
        name: &str,
    ) -> Result<State, SlotError<F::Error>> {
        let name = Name::new(name).ok_or(SlotError::NameTooLong)?;
        let mut index = self.index(flash)?;
        let slot = index.view().download_slot().ok_or(SlotError::Full)?;
        if index.previous == Some(slot) {
            index.previous = None;
        }
        *index.entry_mut(slot) = ImageInfo {
            state: ImageState::Downloading,
            name,
            ..ImageInfo::empty(slot)
        };
        self.commit(flash, &index)
    }

    /// Writes `bytes` at `offset` of the download in `slot`, at most the bytes held, and
    /// records `offset + bytes.len()` as the bytes held (a rewind drops what followed). A
    /// downloaded image written to is downloading again, its metadata dropped. Writes one
    /// record, or two when the write rewrites a sector the bytes held reach.
    pub fn download<F: NorFlash>(
        &self,
        flash: &mut F,
        slot: Slot,
        offset: u32,
        bytes: &[u8],
    ) -> Result<State, SlotError<F::Error>> {
        let mut index = self.index(flash)?;
        let states = [ImageState::Downloading, ImageState::Downloaded];
        let held = index.entry_in::<F::Error>(slot, &states)?.size;
        let len = u32::try_from(bytes.len()).map_err(|_| SlotError::OutOfBounds)?;
        let end = offset.checked_add(len).ok_or(SlotError::OutOfBounds)?;
        if offset > held || end > self.layout.slot_size {
            return Err(SlotError::OutOfBounds);
        }
        let entry = index.entry_mut(slot);
        *entry = ImageInfo {
            state: ImageState::Downloading,
            size: held,
            name: entry.name,
            ..ImageInfo::empty(slot)
        };
        let sector = offset - offset % self.layout.erase_size;
        if held > sector {
            // The write erases that sector first: never claim bytes a cut may take.
            index.entry_mut(slot).size = sector;
            self.commit(flash, &index)?;
        }
        self.write_raw(flash, slot, offset, bytes)?;
        index.entry_mut(slot).size = end;
        self.commit(flash, &index)
    }

    /// Records what the download in `slot` is: state downloaded, with `meta`, whose size
    /// must equal the bytes held. A downloaded image may be finished again with new `meta`.
    pub fn finish_download<F: NorFlash>(
        &self,
        flash: &mut F,
        slot: Slot,
        meta: ImageMeta,
    ) -> Result<State, SlotError<F::Error>> {
        let mut index = self.index(flash)?;
        let states = [ImageState::Downloading, ImageState::Downloaded];
        let held = index.entry_in::<F::Error>(slot, &states)?.size;
        if meta.size != held {
            return Err(SlotError::Incomplete);
        }
        let entry = index.entry_mut(slot);
        entry.state = ImageState::Downloaded;
        entry.version = meta.version;
        entry.sha256 = meta.sha256;
        entry.signature = meta.signature;
        self.commit(flash, &index)
    }

    /// Checks the downloaded image in `slot` against the flash (SHA-256, and signature if
    /// the database has a trusted key) and records it verified, or invalid if it fails.
    pub fn verify<F: NorFlash>(
        &self,
        flash: &mut F,
        slot: Slot,
    ) -> Result<State, SlotError<F::Error>> {
        let mut index = self.index(flash)?;
        let entry = *index.entry_in::<F::Error>(slot, &[ImageState::Downloaded])?;
        index.entry_mut(slot).state = if self.check(flash, &entry)? {
            ImageState::Verified
        } else {
            ImageState::Invalid
        };
        self.commit(flash, &index)
    }

    /// Marks the verified image in `slot` pending: the next boot verifies it again and
    /// boots it as a trial. Refused while a trial runs or an image retires (restart first),
    /// and for the factory region: the way back to it is [`Slots::rollback`] or
    /// [`Slots::factory_reset`], which never put it on trial.
    pub fn apply<F: NorFlash>(
        &self,
        flash: &mut F,
        slot: Slot,
    ) -> Result<State, SlotError<F::Error>> {
        let mut index = self.index(flash)?;
        index.entry_in::<F::Error>(slot, &[ImageState::Verified])?;
        if slot.is_factory() || index.trial.is_some() || index.retiring.is_some() {
            return Err(SlotError::WrongState);
        }
        if index.previous == Some(slot) {
            index.previous = None;
        }
        index.pending = Some(slot);
        self.commit(flash, &index)
    }

    /// The application's health check passed: the image on trial becomes the active
    /// (valid) image, and the active one the previous.
    pub fn confirm<F: NorFlash>(&self, flash: &mut F) -> Result<State, SlotError<F::Error>> {
        let mut index = self.index(flash)?;
        let trial = index.trial.take().ok_or(SlotError::WrongState)?;
        let old = index.active;
        index.entry_mut(old).state = ImageState::Verified;
        index.entry_mut(trial).state = ImageState::Active;
        index.previous = Some(old);
        index.active = trial;
        self.commit(flash, &index)
    }

    /// The application's health check failed: the image on trial is invalid and retires;
    /// the active image boots at the next restart.
    pub fn health_failed<F: NorFlash>(&self, flash: &mut F) -> Result<State, SlotError<F::Error>> {
        let mut index = self.index(flash)?;
        let trial = index.trial.take().ok_or(SlotError::WrongState)?;
        index.entry_mut(trial).state = ImageState::Invalid;
        index.retiring = Some(trial);
        self.commit(flash, &index)
    }

    /// Leaves the confirmed active image, marked invalid, for the previous valid image, or
    /// the factory image if there is none, at the next restart. Refused on the factory
    /// image, during a trial (see [`Slots::health_failed`]) and while an image retires. A
    /// pending image stays verified but is no longer pending.
    pub fn rollback<F: NorFlash>(&self, flash: &mut F) -> Result<State, SlotError<F::Error>> {
        let mut index = self.index(flash)?;
        let current = index.active;
        let target = index.previous.unwrap_or(Slot::FACTORY);
        let valid = index.entry(target).state == ImageState::Verified;
        if !valid || index.trial.is_some() || index.retiring.is_some() {
            return Err(SlotError::WrongState);
        }
        index.entry_mut(current).state = ImageState::Invalid;
        index.entry_mut(target).state = ImageState::Active;
        index.active = target;
        index.previous = None;
        index.pending = None;
        index.retiring = Some(current);
        self.commit(flash, &index)
    }

    /// Empties every slot, and the factory image becomes active, after checking it against
    /// its SHA-256 (and signature, with a trusted key). The image that runs retires until
    /// the restart.
    pub fn factory_reset<F: NorFlash>(&self, flash: &mut F) -> Result<State, SlotError<F::Error>> {
        let index = self.index(flash)?;
        let factory = *index.entry(Slot::FACTORY);
        if !self.check(flash, &factory)? {
            return Err(SlotError::FactoryInvalid);
        }
        let running = index.retiring.or(index.trial).unwrap_or(index.active);
        let mut reset = Index::blank(self.slots);
        *reset.entry_mut(Slot::FACTORY) = ImageInfo {
            state: ImageState::Active,
            ..factory
        };
        reset.retiring = (running != Slot::FACTORY).then_some(running);
        self.commit(flash, &reset)
    }

    /// SHA-256 of the first `size` bytes of `slot` (or of the factory region), read from
    /// the flash.
    pub fn image_digest<F: NorFlash>(
        &self,
        flash: &mut F,
        slot: Slot,
        size: u32,
    ) -> Result<[u8; 32], SlotError<F::Error>> {
        if size > self.layout.slot_size || slot.0 > self.slots {
            return Err(SlotError::OutOfBounds);
        }
        let base = self.slot_range(slot).start;
        let mut hasher = Hasher::new(DigestAlg::Sha256);
        let mut chunk = [0; DIGEST_CHUNK];
        let mut pos = 0;
        while pos < size {
            let n = (size - pos).min(DIGEST_CHUNK as u32) as usize;
            flash
                .read(base + pos, &mut chunk[..n])
                .map_err(SlotError::Flash)?;
            hasher.update(&chunk[..n]);
            pos += n as u32;
        }
        let mut out = [0; 32];
        out.copy_from_slice(hasher.finalize().as_bytes());
        Ok(out)
    }

    /// Whether `image`'s bytes match its SHA-256 and, with a trusted key, its signature: ECDSA
    /// P-256 over the SHA-256 of the bytes on the flash, as a manifest signature is made
    /// (`otaweb::image::signature`: over the SHA-256 of the whole image).
    fn check<F: NorFlash>(
        &self,
        flash: &mut F,
        image: &ImageInfo,
    ) -> Result<bool, SlotError<F::Error>> {
        let digest = self.image_digest(flash, image.slot, image.size)?;
        if digest != image.sha256 {
            return Ok(false);
        }
        let Some(key) = &self.trusted_key else {
            return Ok(true);
        };
        Ok(image
            .signature
            .and_then(|s| ImageSignature::from_bytes(&s).ok())
            .is_some_and(|s| key.verify_digest(&digest, &s).is_ok()))
    }

    /// Writes `bytes` at `offset` of `slot`, rewriting each sector it touches and keeping
    /// that sector's bytes before `offset` (module docs). Bytes after the written range in
    /// its last sector are erased.
    fn write_raw<F: NorFlash>(
        &self,
        flash: &mut F,
        slot: Slot,
        offset: u32,
        bytes: &[u8],
    ) -> Result<(), SlotError<F::Error>> {
        let end = offset + bytes.len() as u32;
        let base = self.slot_range(slot).start;
        let es = self.layout.erase_size;
        let ws = self.layout.write_size as usize;
        let mut pos = offset;
        let mut rest = bytes;
        while pos < end {
            let sector = pos - pos % es;
            let chunk_end = end.min(sector + es);
            let (now, later) = rest.split_at((chunk_end - pos) as usize);
            // What this sector already holds before `pos` survives the erase.
            let mut buf = vec![0; (pos - sector) as usize];
            flash
                .read(base + sector, &mut buf)
                .map_err(SlotError::Flash)?;
            buf.extend_from_slice(now);
            buf.resize(buf.len().next_multiple_of(ws), ERASED);
            flash
                .erase(base + sector, base + sector + es)
                .map_err(SlotError::Flash)?;
            flash.write(base + sector, &buf).map_err(SlotError::Flash)?;
            pos = chunk_end;
            rest = later;
        }
        Ok(())
    }

    /// The index area as a record log.
    fn log(&self) -> RecordLog {
        RecordLog {
            base: self.layout.base,
            sector_size: self.layout.erase_size,
            write_size: self.layout.write_size,
            magic: MAGIC,
            payload_len: payload_len(self.slots),
        }
    }

    /// The latest valid index, or the blank one.
    fn index<F: NorFlash>(&self, flash: &mut F) -> Result<Index, SlotError<F::Error>> {
        Ok(self
            .latest(flash)?
            .unwrap_or_else(|| Index::blank(self.slots)))
    }

    /// The latest valid index record, if any.
    fn latest<F: NorFlash>(&self, flash: &mut F) -> Result<Option<Index>, SlotError<F::Error>> {
        let (slots, slot_size) = (self.slots, self.layout.slot_size);
        self.log()
            .latest(flash, |p| Index::decode(p, slots, slot_size))
            .map_err(SlotError::Flash)
    }

    /// Appends a record of `index` and returns its view.
    fn commit<F: NorFlash>(
        &self,
        flash: &mut F,
        index: &Index,
    ) -> Result<State, SlotError<F::Error>> {
        let (slots, slot_size) = (self.slots, self.layout.slot_size);
        self.log()
            .append(flash, &index.encode(), |p| {
                Index::decode(p, slots, slot_size)
            })
            .map_err(|e| match e {
                LogError::Flash(e) => SlotError::Flash(e),
                LogError::SequenceExhausted => SlotError::SequenceExhausted,
            })?;
        Ok(index.view())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flash::{Fixed, FlashError, Geometry, SimFlash};
    use std::println;
    use std::vec::Vec;

    /// 1 KiB sectors and 4-byte words, cut by the layouts into bigger sectors or not.
    type Flash = Fixed<4, 1024>;

    /// A realistic layout: 4 KiB sectors, which hold five index records of up to five
    /// slots (and the factory entry); the factory region and slots of 16 KiB.
    const LAYOUT: Layout = Layout {
        base: 0,
        erase_size: 4096,
        write_size: 4,
        slot_size: 4 * 4096,
    };

    /// 1 KiB sectors: they hold two index records of the default two slots, and one of
    /// three or more, so there every index write erases the other sector first.
    const SMALL: Layout = Layout {
        erase_size: 1024,
        ..LAYOUT
    };

    /// Room for the index, the factory region and five slots.
    const FLASH_SIZE: usize = (2 + 6 * 4) * 4096;

    type Result<T> = core::result::Result<T, SlotError<FlashError>>;

    fn image(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn factory() -> Vec<u8> {
        image(5000, 1)
    }

    fn meta(bytes: &[u8], version: u32) -> ImageMeta {
        ImageMeta {
            version,
            size: bytes.len() as u32,
            sha256: sha256(bytes),
            signature: None,
        }
    }

    fn config(slots: u8) -> DbConfig {
        DbConfig {
            slots,
            trusted_key: None,
        }
    }

    /// A provisioned database of `slots` download slots.
    fn provisioned(slots: u8) -> (Flash, Slots) {
        provisioned_in(LAYOUT, slots)
    }

    /// A provisioned database of `slots` download slots laid out by `layout`.
    fn provisioned_in(layout: Layout, slots: u8) -> (Flash, Slots) {
        let mut flash = Flash::new(FLASH_SIZE).unwrap();
        let db = Slots::with_config(layout, config(slots), &flash).unwrap();
        db.provision(&mut flash, &factory()).unwrap();
        (flash, db)
    }

    /// Begins a download named "app" and writes `bytes` in pieces of `piece`.
    fn download_all(db: &Slots, flash: &mut Flash, bytes: &[u8], piece: usize) -> Result<Slot> {
        let slot = db.begin_download(flash, "app")?.download().unwrap().slot;
        for (i, part) in bytes.chunks(piece).enumerate() {
            db.download(flash, slot, (i * piece) as u32, part)?;
        }
        Ok(slot)
    }

    /// Downloads, finishes and verifies `bytes` as `version`: a staged image.
    fn stage(db: &Slots, flash: &mut Flash, bytes: &[u8], version: u32) -> Result<Slot> {
        let slot = download_all(db, flash, bytes, 4096)?;
        db.finish_download(flash, slot, meta(bytes, version))?;
        db.verify(flash, slot)?;
        Ok(slot)
    }

    /// Stages, applies, boots and confirms `bytes` as `version`.
    fn install(db: &Slots, flash: &mut Flash, bytes: &[u8], version: u32) -> Result<Slot> {
        let slot = stage(db, flash, bytes, version)?;
        db.apply(flash, slot)?;
        db.boot(flash)?;
        db.confirm(flash)?;
        Ok(slot)
    }

    /// The boot decision leaves an image running whose slot holds what the index says.
    #[track_caller]
    fn assert_boots(db: &Slots, flash: &mut Flash) -> Boot {
        let boot = db.boot(flash).unwrap();
        let run = boot.state.running();
        assert!(matches!(
            run.state,
            ImageState::Active | ImageState::Verified
        ));
        assert_eq!(
            db.image_digest(flash, run.slot, run.size).unwrap(),
            run.sha256
        );
        boot
    }

    fn entry_state(db: &Slots, flash: &mut Flash, slot: Slot) -> ImageState {
        db.state(flash).unwrap().images[usize::from(slot.index())].state
    }

    #[test]
    fn layout_validation() {
        let flash = Flash::new(FLASH_SIZE).unwrap();
        assert_eq!(LAYOUT.validate(2, &flash), Ok(()));
        assert_eq!(LAYOUT.validate(5, &flash), Ok(()));
        assert_eq!(LAYOUT.validate(1, &flash), Err(LayoutError::SlotCount));
        assert_eq!(LAYOUT.validate(6, &flash), Err(LayoutError::SlotCount));
        let with = |f: fn(&mut Layout)| {
            let mut l = LAYOUT;
            f(&mut l);
            l.validate(2, &flash)
        };
        assert_eq!(with(|l| l.erase_size = 512), Err(LayoutError::Geometry));
        assert_eq!(with(|l| l.write_size = 2), Err(LayoutError::Geometry));
        assert_eq!(with(|l| l.write_size = 3), Err(LayoutError::Geometry));
        assert_eq!(
            with(|l| l.slot_size = 0),
            Err(LayoutError::NotSectorAligned)
        );
        assert_eq!(
            with(|l| l.slot_size = 5000),
            Err(LayoutError::NotSectorAligned)
        );
        assert_eq!(with(|l| l.base = 100), Err(LayoutError::NotSectorAligned));
        assert_eq!(with(|l| l.slot_size = 9 * 4096), Err(LayoutError::TooLarge));
        // The window: two index sectors, the factory region and the slots, 2E + (N+1)S.
        assert_eq!(LAYOUT.window_len(2), (2 + 3 * 4) * 4096);
        assert_eq!(LAYOUT.window_len(5), FLASH_SIZE as u64);
        let small = Flash::new((2 + 3 * 4) * 4096).unwrap();
        assert_eq!(LAYOUT.validate(2, &small), Ok(()));
        assert_eq!(LAYOUT.validate(3, &small), Err(LayoutError::TooLarge));
        let short = Flash::new((2 + 3 * 4 - 1) * 4096).unwrap();
        assert_eq!(LAYOUT.validate(2, &short), Err(LayoutError::TooLarge));
        let based = Layout {
            base: 4096,
            ..LAYOUT
        };
        assert_eq!(based.validate(2, &small), Err(LayoutError::TooLarge));
        // A sector must hold a whole record: 8 + 8 + 3 × 124 + 8 bytes and a commit word.
        let sim = |erase_size| {
            SimFlash::new(Geometry {
                capacity: 64 * 1024,
                erase_size,
                write_size: 4,
            })
            .unwrap()
        };
        let layout = |erase_size| Layout {
            base: 0,
            erase_size,
            write_size: 4,
            slot_size: 1024,
        };
        assert_eq!(
            layout(256).validate(2, &sim(256)),
            Err(LayoutError::SectorTooSmall)
        );
        assert_eq!(layout(512).validate(2, &sim(512)), Ok(()));
        assert_eq!(
            layout(512).validate(5, &sim(512)),
            Err(LayoutError::SectorTooSmall)
        );
    }

    #[test]
    fn blank_flash_boots_the_factory_state_without_writing() {
        let mut flash = Flash::new(FLASH_SIZE).unwrap();
        let db = Slots::new(LAYOUT, &flash).unwrap();
        let boot = assert_boots(&db, &mut flash);
        assert_eq!(boot.outcome, BootOutcome::Factory);
        assert_eq!(boot.state, Index::blank(2).view());
        assert_eq!(boot.state.active.slot, Slot::FACTORY);
        // The factory region's entry and the two slots'.
        assert_eq!(boot.state.images.len(), 3);
        assert_eq!(db.slot_count(), 2);
        assert_eq!(boot.state.download_slot(), Some(Slot::A));
        assert!(flash.sim_mut().take_log().is_empty());
    }

    #[test]
    fn the_index_round_trips_and_refuses_inconsistent_records() {
        let (mut flash, db) = provisioned(5);
        let signature = [7; SIGNATURE_LEN];
        db.provision_factory(&mut flash, &factory(), 3, Some(signature))
            .unwrap();
        let new = image(7000, 2);
        let slot = stage(&db, &mut flash, &new, 9).unwrap();
        let staged = db.state(&mut flash).unwrap();
        let entry = staged.images[usize::from(slot.index())];
        assert_eq!(entry.state, ImageState::Verified);
        assert_eq!((entry.version, entry.size), (9, 7000));
        assert_eq!(entry.name.as_str(), "app");
        assert_eq!(staged.active.version, 3);
        assert_eq!(staged.active.signature, Some(signature));

        let index = db.latest(&mut flash).unwrap().unwrap();
        let payload = index.encode();
        assert_eq!(payload.len(), 8 + 6 * 124);
        assert_eq!(payload[0], 5);
        assert_eq!(
            Index::decode(&payload, 5, LAYOUT.slot_size),
            Some(index.clone())
        );
        let refused = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut p = payload.clone();
            f(&mut p);
            Index::decode(&p, 5, LAYOUT.slot_size).is_none()
        };
        assert!(refused(&|p| p[0] = 4), "another slot count");
        assert!(refused(&|p| p[1] = 1), "active points at a verified image");
        assert!(refused(&|p| p[1] = 2), "active points at an empty slot");
        assert!(refused(&|p| p[1] = 6), "pointer past the slots");
        assert!(refused(&|p| p[8] = 1), "the factory entry downloading");
        assert!(refused(&|p| p[2] = 3), "trial points at an empty slot");
        assert!(refused(&|p| p[4] = 0), "previous is the active slot");
        assert!(refused(&|p| p[8 + 124] = 4), "two active images");
        assert!(refused(&|p| p[8 + 124] = 9), "unknown state");
        assert!(refused(&|p| p[8 + 2] = 17), "name too long");
        assert!(
            refused(&|p| {
                p[8 + 2] = 1;
                p[8 + 108] = 0xFF;
            }),
            "name not UTF-8"
        );
        assert!(refused(&|p| p[8 + 1] = 2), "unknown flag");
        assert!(refused(
            &|p| p[8 + 8..8 + 12].copy_from_slice(&u32::MAX.to_le_bytes())
        ));
        assert!(
            refused(&|p| {
                p[8 + 2 * 124] = 1;
                p[8 + 3 * 124] = 2;
            }),
            "two downloads"
        );
        // Pending and trial at once.
        let mut both = index.clone();
        both.pending = Some(slot);
        let other = image(100, 3);
        both.trial = Some(Slot(3));
        both.images[3].state = ImageState::Verified;
        both.images[3].sha256 = sha256(&other);
        assert_eq!(Index::decode(&both.encode(), 5, LAYOUT.slot_size), None);
        both.pending = None;
        assert!(Index::decode(&both.encode(), 5, LAYOUT.slot_size).is_some());
        // The factory image, verified while another runs, is never pending or on trial.
        install(&db, &mut flash, &new, 9).unwrap();
        let index = db.latest(&mut flash).unwrap().unwrap();
        assert_eq!(index.previous, Some(Slot::FACTORY));
        let mut factory_due = index.clone();
        factory_due.previous = None;
        assert!(Index::decode(&factory_due.encode(), 5, LAYOUT.slot_size).is_some());
        factory_due.pending = Some(Slot::FACTORY);
        assert_eq!(
            Index::decode(&factory_due.encode(), 5, LAYOUT.slot_size),
            None
        );
    }

    #[test]
    fn stage_keep_running_and_apply_later() {
        let (mut flash, db) = provisioned(2);
        let new = image(9000, 2);
        let slot = stage(&db, &mut flash, &new, 2).unwrap();
        assert_eq!(slot, Slot::A);
        // Restarts while staged: the factory image keeps running, the image stays staged.
        for _ in 0..2 {
            let boot = assert_boots(&db, &mut flash);
            assert_eq!(boot.outcome, BootOutcome::Unchanged);
            assert_eq!(boot.state.running().slot, Slot::FACTORY);
            assert_eq!(boot.state.images[1].state, ImageState::Verified);
        }
        // Later: apply, and the next boot runs it as a trial.
        let applied = db.apply(&mut flash, slot).unwrap();
        assert_eq!(applied.pending.map(|p| p.slot), Some(slot));
        // The factory image cannot be applied; applying again changes nothing.
        assert_eq!(
            db.apply(&mut flash, Slot::FACTORY),
            Err(SlotError::WrongState)
        );
        assert_eq!(db.apply(&mut flash, slot).unwrap(), applied);
        let boot = assert_boots(&db, &mut flash);
        assert_eq!(boot.outcome, BootOutcome::Updated { from: 0, to: 2 });
        assert_eq!(boot.state.trial.map(|t| t.slot), Some(slot));
        assert_eq!(boot.state.active.slot, Slot::FACTORY);
        // The health check passed: it becomes the valid image, the factory one the previous.
        let confirmed = db.confirm(&mut flash).unwrap();
        assert_eq!(confirmed.active.slot, slot);
        assert_eq!(confirmed.active.state, ImageState::Active);
        assert_eq!(confirmed.previous.map(|p| p.slot), Some(Slot::FACTORY));
        assert_eq!(confirmed.images[0].state, ImageState::Verified);
        assert_eq!(db.confirm(&mut flash), Err(SlotError::WrongState));
        // Verified, the factory image is still not applied: rollback goes back to it.
        assert_eq!(
            db.apply(&mut flash, Slot::FACTORY),
            Err(SlotError::WrongState)
        );
        let boot = assert_boots(&db, &mut flash);
        assert_eq!(boot.outcome, BootOutcome::Unchanged);
        assert_eq!(boot.state.running().version, 2);
    }

    #[test]
    fn a_trial_that_reboots_unconfirmed_or_fails_its_health_check_rolls_back() {
        let (mut flash, db) = provisioned(2);
        install(&db, &mut flash, &image(3000, 2), 2).unwrap();
        let v3 = stage(&db, &mut flash, &image(4000, 3), 3).unwrap();
        db.apply(&mut flash, v3).unwrap();
        assert_eq!(
            assert_boots(&db, &mut flash).outcome,
            BootOutcome::Updated { from: 2, to: 3 }
        );
        // No confirm before the next boot: the trial never passed its health check.
        let boot = assert_boots(&db, &mut flash);
        assert_eq!(boot.outcome, BootOutcome::RolledBack { from: 3, to: 2 });
        assert_eq!(boot.state.running().version, 2);
        assert_eq!(
            boot.state.images[usize::from(v3.index())].state,
            ImageState::Invalid
        );
        assert_eq!(db.apply(&mut flash, v3), Err(SlotError::WrongState));

        // Again, and this time the application reports the failure itself.
        let v4 = stage(&db, &mut flash, &image(4000, 4), 4).unwrap();
        assert_eq!(v4, v3, "the invalid slot is reused");
        db.apply(&mut flash, v4).unwrap();
        db.boot(&mut flash).unwrap();
        let failed = db.health_failed(&mut flash).unwrap();
        assert_eq!(failed.retiring.map(|r| r.slot), Some(v4));
        assert_eq!(failed.running().slot, v4, "it runs until the restart");
        // Its slot is not written under it, and nothing else may change before the restart.
        assert_eq!(failed.download_slot(), None);
        assert_eq!(db.begin_download(&mut flash, "x"), Err(SlotError::Full));
        assert_eq!(db.health_failed(&mut flash), Err(SlotError::WrongState));
        assert_eq!(db.rollback(&mut flash), Err(SlotError::WrongState));
        let boot = assert_boots(&db, &mut flash);
        assert_eq!(boot.outcome, BootOutcome::RolledBack { from: 4, to: 2 });
        assert_eq!(boot.state.retiring, None);
        assert_eq!(boot.state.download_slot(), Some(v4));
        assert_eq!(
            assert_boots(&db, &mut flash).outcome,
            BootOutcome::Unchanged
        );
    }

    #[test]
    fn rollback_goes_to_the_previous_valid_image_then_the_factory_one() {
        let (mut flash, db) = provisioned(2);
        install(&db, &mut flash, &image(3000, 2), 2).unwrap();
        install(&db, &mut flash, &image(3000, 3), 3).unwrap();
        let state = db.rollback(&mut flash).unwrap();
        assert_eq!(state.active.version, 2);
        assert_eq!(state.previous, None);
        assert_eq!(state.retiring.map(|r| r.version), Some(3));
        let boot = assert_boots(&db, &mut flash);
        assert_eq!(boot.outcome, BootOutcome::RolledBack { from: 3, to: 2 });
        // A staged image stops being pending when the device rolls back.
        let v4 = stage(&db, &mut flash, &image(100, 4), 4).unwrap();
        db.apply(&mut flash, v4).unwrap();
        let state = db.rollback(&mut flash).unwrap();
        assert_eq!(state.active.slot, Slot::FACTORY);
        assert_eq!(state.pending, None);
        assert_eq!(
            state.images[usize::from(v4.index())].state,
            ImageState::Verified
        );
        let boot = assert_boots(&db, &mut flash);
        assert_eq!(boot.outcome, BootOutcome::RolledBack { from: 2, to: 0 });
        // Nothing is older than the factory image.
        assert_eq!(db.rollback(&mut flash), Err(SlotError::WrongState));
    }

    #[test]
    fn factory_reset_empties_the_database_and_boots_the_factory_image() {
        let (mut flash, db) = provisioned(3);
        install(&db, &mut flash, &image(3000, 2), 2).unwrap();
        let staged = stage(&db, &mut flash, &image(3000, 3), 3).unwrap();
        let state = db.factory_reset(&mut flash).unwrap();
        assert_eq!(state.active.slot, Slot::FACTORY);
        assert_eq!(state.active.sha256, sha256(&factory()));
        assert_eq!(state.retiring.map(|r| r.slot), Some(Slot::A));
        assert!(state.images[1..]
            .iter()
            .all(|i| i.state == ImageState::Empty));
        // The running image's slot waits for the restart; the others are free at once.
        assert_eq!(state.download_slot(), Some(staged));
        let boot = assert_boots(&db, &mut flash);
        assert_eq!(boot.outcome, BootOutcome::FactoryReset);
        assert_eq!(boot.state.running().version, 0);
        assert_eq!(boot.state.download_slot(), Some(Slot::A));

        // A factory image that fails its check is not reset to.
        let range = db.slot_range(Slot::FACTORY);
        flash.erase(range.start, range.start + 4096).unwrap();
        assert_eq!(db.factory_reset(&mut flash), Err(SlotError::FactoryInvalid));
    }

    #[test]
    fn a_full_database_of_the_default_two_slots_replaces_the_lowest_version() {
        // The factory image runs and both slots hold staged images: the lower version goes.
        let (mut flash, db) = provisioned(2);
        let v5 = stage(&db, &mut flash, &image(3000, 5), 5).unwrap();
        let v4 = stage(&db, &mut flash, &image(3000, 4), 4).unwrap();
        assert_eq!((v5, v4), (Slot::A, Slot::B));
        let state = db.begin_download(&mut flash, "app").unwrap();
        assert_eq!(state.download().map(|d| d.slot), Some(v4));
        assert_eq!(state.images[usize::from(v5.index())].version, 5);
        // A download in progress is abandoned for a new one, not kept beside it.
        let state = db.begin_download(&mut flash, "other").unwrap();
        assert_eq!(
            state.download().map(|d| (d.slot, d.name)),
            Some((v4, Name::new("other").unwrap()))
        );

        // Updates one after another, with no factory reset: each goes to the slot that does
        // not run. From the third on the database is full, and that slot holds the previous
        // image, the lowest version but the factory's: it goes, and until the new image is
        // confirmed a rollback reaches the factory image.
        let (mut flash, db) = provisioned(2);
        let mut running = Slot::FACTORY;
        for version in 1..=6u32 {
            let before = db.state(&mut flash).unwrap();
            let next = if running == Slot::A { Slot::B } else { Slot::A };
            assert_eq!(before.download_slot(), Some(next), "v{version}");
            if version >= 3 {
                assert!(before.images.iter().all(|i| i.state != ImageState::Empty));
                let old = before.images[usize::from(next.index())];
                assert_eq!(before.previous, Some(old));
                assert_eq!(old.version, version - 2);
                let mut f = flash.clone();
                let begun = db.begin_download(&mut f, "app").unwrap();
                assert_eq!(begun.previous, None);
                assert_eq!(db.rollback(&mut f).unwrap().active.slot, Slot::FACTORY);
            }
            let bytes = image(3000 + version as usize, version as u8);
            assert_eq!(install(&db, &mut flash, &bytes, version).unwrap(), next);
            let state = assert_boots(&db, &mut flash).state;
            assert_eq!((state.active.slot, state.active.version), (next, version));
            assert_eq!(state.active.sha256, sha256(&bytes));
            let previous = state.previous.map(|p| (p.slot, p.version));
            assert_eq!(previous, Some((running, version - 1)));
            running = next;
        }
        // While an update is on trial both slots run or are due: nothing can be taken.
        let slot = stage(&db, &mut flash, &image(100, 7), 7).unwrap();
        db.apply(&mut flash, slot).unwrap();
        db.boot(&mut flash).unwrap();
        assert_eq!(db.begin_download(&mut flash, "app"), Err(SlotError::Full));
        db.confirm(&mut flash).unwrap();
        assert_eq!(db.state(&mut flash).unwrap().download_slot(), Some(running));
        // The factory image was never touched, and a factory reset returns to it.
        assert_eq!(
            db.image_digest(&mut flash, Slot::FACTORY, factory().len() as u32),
            Ok(sha256(&factory()))
        );
        db.factory_reset(&mut flash).unwrap();
        let boot = assert_boots(&db, &mut flash);
        assert_eq!(boot.outcome, BootOutcome::FactoryReset);
        assert_eq!(boot.state.running().slot, Slot::FACTORY);
    }

    #[test]
    fn a_full_database_of_three_slots_replaces_the_lowest_version_but_keeps_the_previous() {
        let (mut flash, db) = provisioned(3);
        let v2 = install(&db, &mut flash, &image(3000, 2), 2).unwrap();
        let v5 = stage(&db, &mut flash, &image(3000, 5), 5).unwrap();
        let v3 = stage(&db, &mut flash, &image(3000, 3), 3).unwrap();
        assert_eq!((v2, v5, v3), (Slot(1), Slot(2), Slot(3)));
        // Full: v2 is active, so v3 (lower than v5) goes.
        let state = db.begin_download(&mut flash, "app").unwrap();
        assert_eq!(state.download().map(|d| d.slot), Some(v3));

        // The previous image is kept while another slot can be taken, even when it holds
        // the lowest version: a rollback still reaches it.
        let (mut flash, db) = provisioned(3);
        let v2 = install(&db, &mut flash, &image(3000, 2), 2).unwrap();
        install(&db, &mut flash, &image(3000, 3), 3).unwrap();
        let v7 = stage(&db, &mut flash, &image(3000, 7), 7).unwrap();
        let state = db.begin_download(&mut flash, "app").unwrap();
        assert_eq!(state.download().map(|d| d.slot), Some(v7));
        assert_eq!(state.previous.map(|p| (p.slot, p.version)), Some((v2, 2)));
        assert_eq!(db.rollback(&mut flash).unwrap().active.version, 2);
    }

    #[test]
    fn a_pending_image_that_fails_the_boot_check_falls_back() {
        let (mut flash, db) = provisioned(2);
        let slot = stage(&db, &mut flash, &image(9000, 9), 1).unwrap();
        db.apply(&mut flash, slot).unwrap();
        // Its bytes change after it was verified (a sector lost, say).
        let range = db.slot_range(slot);
        flash.erase(range.start + 4096, range.start + 8192).unwrap();
        let boot = assert_boots(&db, &mut flash);
        assert_eq!(boot.outcome, BootOutcome::FellBack { rejected: 1 });
        assert_eq!(boot.state.running().slot, Slot::FACTORY);
        assert_eq!(boot.state.images[1].state, ImageState::Invalid);
        // A digest that does not match at verify time makes the image invalid at once.
        let new = image(9000, 10);
        let slot = download_all(&db, &mut flash, &new, 4096).unwrap();
        db.finish_download(&mut flash, slot, meta(&image(9000, 11), 1))
            .unwrap();
        assert_eq!(
            db.verify(&mut flash, slot).unwrap().images[1].state,
            ImageState::Invalid
        );
    }

    #[test]
    fn operations_in_the_wrong_state_change_nothing() {
        let (mut flash, db) = provisioned(2);
        let new = image(9000, 4);
        let ops = flash.sim().stats().writes;
        assert_eq!(
            db.download(&mut flash, Slot::B, 0, &new),
            Err(SlotError::WrongState)
        );
        assert_eq!(db.verify(&mut flash, Slot::B), Err(SlotError::WrongState));
        assert_eq!(db.apply(&mut flash, Slot::B), Err(SlotError::WrongState));
        assert_eq!(
            db.apply(&mut flash, Slot::FACTORY),
            Err(SlotError::WrongState)
        );
        assert_eq!(db.confirm(&mut flash), Err(SlotError::WrongState));
        assert_eq!(db.health_failed(&mut flash), Err(SlotError::WrongState));
        assert_eq!(
            db.begin_download(&mut flash, "a name of 17 bytes"),
            Err(SlotError::NameTooLong)
        );
        assert_eq!(db.verify(&mut flash, Slot(7)), Err(SlotError::OutOfBounds));
        assert_eq!(
            db.verify(&mut flash, Slot::new(3).unwrap()),
            Err(SlotError::OutOfBounds)
        );
        assert_eq!(
            db.image_digest(&mut flash, Slot::new(3).unwrap(), 0),
            Err(SlotError::OutOfBounds)
        );
        assert_eq!(Slot::new(6), None);
        assert_eq!(flash.sim().stats().writes, ops);

        let slot = db
            .begin_download(&mut flash, "app")
            .unwrap()
            .download()
            .unwrap()
            .slot;
        db.download(&mut flash, slot, 0, &new[..100]).unwrap();
        // Past the bytes held, past the slot's end.
        assert_eq!(
            db.download(&mut flash, slot, 101, &new),
            Err(SlotError::OutOfBounds)
        );
        assert_eq!(
            db.download(&mut flash, slot, 4 * 4096 - 2, &[0; 3]),
            Err(SlotError::OutOfBounds)
        );
        assert_eq!(
            db.finish_download(&mut flash, slot, meta(&new, 1)),
            Err(SlotError::Incomplete)
        );
        assert_eq!(db.verify(&mut flash, slot), Err(SlotError::WrongState));
        assert_eq!(
            db.image_digest(&mut flash, slot, 4 * 4096 + 1),
            Err(SlotError::OutOfBounds)
        );
        // A downloaded image may be finished again, with other metadata, or written to,
        // which makes it a download in progress again.
        db.finish_download(&mut flash, slot, meta(&new[..100], 1))
            .unwrap();
        let state = db
            .finish_download(&mut flash, slot, meta(&new[..100], 2))
            .unwrap();
        assert_eq!(state.download().map(|d| d.version), Some(2));
        let state = db.download(&mut flash, slot, 100, &new[100..200]).unwrap();
        let download = state.download().unwrap();
        assert_eq!(download.state, ImageState::Downloading);
        assert_eq!((download.version, download.size), (0, 200));
        assert_eq!(download.name.as_str(), "app");
    }

    #[test]
    fn downloads_rewind_and_keep_earlier_bytes() {
        let (mut flash, db) = provisioned(2);
        let data = image(9000, 4);
        let slot = db
            .begin_download(&mut flash, "app")
            .unwrap()
            .download()
            .unwrap()
            .slot;
        // Unaligned pieces, then a rewind into the middle of a sector and a rewrite.
        db.download(&mut flash, slot, 0, &data[..1001]).unwrap();
        db.download(&mut flash, slot, 1001, &data[1001..6000])
            .unwrap();
        let state = db.download(&mut flash, slot, 5000, &[0; 3000]).unwrap();
        assert_eq!(state.download().map(|d| d.size), Some(8000));
        let state = db.download(&mut flash, slot, 5000, &data[5000..]).unwrap();
        assert_eq!(state.download().map(|d| d.size), Some(9000));
        assert_eq!(
            db.image_digest(&mut flash, slot, 9000).unwrap(),
            sha256(&data)
        );
        // A rewind drops what followed.
        let state = db.download(&mut flash, slot, 2000, &[]).unwrap();
        assert_eq!(state.download().map(|d| d.size), Some(2000));
        // The factory image was never touched.
        let a = db.slot_range(Slot::FACTORY);
        assert_eq!(
            &flash.sim().contents()[a.start as usize..a.start as usize + 5000],
            &factory()[..]
        );
    }

    #[test]
    fn index_sectors_roll_over_and_keep_the_latest() {
        // 1 KiB sectors hold two records of a 2-slot index (and the factory entry) each.
        let mut flash = Fixed::<4, 1024>::new((2 + 3 * 4) * 1024).unwrap();
        let layout = Layout {
            base: 0,
            erase_size: 1024,
            write_size: 4,
            slot_size: 4 * 1024,
        };
        let db = Slots::new(layout, &flash).unwrap();
        assert_eq!(db.log().records_per_sector(), 2);
        db.provision(&mut flash, &image(300, 0)).unwrap();
        for version in 1..=8u32 {
            let new = image(200 + version as usize, version as u8);
            if version == 5 {
                let state = db.factory_reset(&mut flash).unwrap();
                assert_eq!(state.active.slot, Slot::FACTORY);
                db.boot(&mut flash).unwrap();
            }
            let slot = db
                .begin_download(&mut flash, "app")
                .unwrap()
                .download()
                .unwrap()
                .slot;
            db.download(&mut flash, slot, 0, &new).unwrap();
            db.finish_download(&mut flash, slot, meta(&new, version))
                .unwrap();
            db.verify(&mut flash, slot).unwrap();
            db.apply(&mut flash, slot).unwrap();
            db.boot(&mut flash).unwrap();
            let state = db.confirm(&mut flash).unwrap();
            assert_eq!(state.active.version, version);
            assert_eq!(state.active.sha256, sha256(&new));
        }
        let wear = &flash.sim().stats().sector_erases;
        assert!(wear[0] >= 10 && wear[1] >= 10, "{wear:?}");
    }

    #[test]
    fn torn_and_foreign_records_are_skipped() {
        let (mut flash, db) = provisioned(2);
        let good = db.state(&mut flash).unwrap();
        let stride = db.log().stride() as u32;
        let other = Index::blank(2).encode();
        // A body without its commit word, as a cut before the commit leaves it.
        let body = db.log().encode(99, &other);
        flash.write(stride, &body).unwrap();
        assert_eq!(db.state(&mut flash).unwrap(), good);
        // A committed record with a bad check.
        let mut bad = db.log().encode(100, &other);
        bad[20] ^= 0x55;
        flash.write(2 * stride, &bad).unwrap();
        flash.write(2 * stride + bad.len() as u32, &[0; 4]).unwrap();
        assert_eq!(db.state(&mut flash).unwrap(), good);
        // New records go after the skipped ones and still win.
        let state = db.begin_download(&mut flash, "app").unwrap();
        assert_eq!(db.state(&mut flash).unwrap(), state);
        assert_eq!(state.active.sha256, sha256(&factory()));
    }

    #[test]
    fn signatures_are_checked_with_a_trusted_key() {
        const APP: &[u8] = include_bytes!("../../firmware-fixtures/files/app-v2.bin");
        const SIG: &str = include_str!("../../firmware-fixtures/files/app-v2.bin.sig");
        const KEY: &[u8] =
            include_bytes!("../../firmware-fixtures/files/keys/test-signing-key.pub.der");
        const OTHER: &str = include_str!("../../firmware-fixtures/files/keys/other-key.pub.pem");
        let signature = ImageSignature::from_base64(SIG).unwrap().to_bytes();
        let layout = Layout {
            slot_size: 24 * 4096,
            ..LAYOUT
        };
        let keyed = |key: PublicKey| {
            let mut flash = Flash::new((2 + 3 * 24) * 4096).unwrap();
            let db = Slots::with_config(
                layout,
                DbConfig {
                    slots: 2,
                    trusted_key: Some(key),
                },
                &flash,
            )
            .unwrap();
            db.provision(&mut flash, &factory()).unwrap();
            (flash, db)
        };
        let verdict = |db: &Slots, flash: &mut Flash, signature| {
            let slot = db
                .begin_download(flash, "app")
                .unwrap()
                .download()
                .unwrap()
                .slot;
            db.download(flash, slot, 0, APP).unwrap();
            let meta = ImageMeta {
                signature,
                ..meta(APP, 2)
            };
            db.finish_download(flash, slot, meta).unwrap();
            db.verify(flash, slot).unwrap().images[1].state
        };
        let key = PublicKey::from_spki_der(KEY).unwrap();
        let (mut flash, db) = keyed(key.clone());
        assert_eq!(verdict(&db, &mut flash, None), ImageState::Invalid);
        let mut flipped = signature;
        flipped[40] ^= 1;
        assert_eq!(verdict(&db, &mut flash, Some(flipped)), ImageState::Invalid);
        assert_eq!(
            verdict(&db, &mut flash, Some(signature)),
            ImageState::Verified
        );
        db.apply(&mut flash, Slot::A).unwrap();
        assert_eq!(
            assert_boots(&db, &mut flash).outcome,
            BootOutcome::Updated { from: 0, to: 2 }
        );
        // The factory image was provisioned unsigned: a keyed database will not reset to it.
        assert_eq!(db.factory_reset(&mut flash), Err(SlotError::FactoryInvalid));
        db.provision_factory(&mut flash, APP, 2, Some(signature))
            .unwrap();
        assert_eq!(
            db.factory_reset(&mut flash).map(|s| s.active.version),
            Ok(2)
        );

        let (mut flash, db) = keyed(PublicKey::from_pem(OTHER).unwrap());
        assert_eq!(
            verdict(&db, &mut flash, Some(signature)),
            ImageState::Invalid
        );
        // Without a key the signature is only recorded.
        let mut flash = Flash::new((2 + 3 * 24) * 4096).unwrap();
        let db = Slots::new(layout, &flash).unwrap();
        db.provision(&mut flash, &factory()).unwrap();
        assert_eq!(verdict(&db, &mut flash, None), ImageState::Verified);
        assert_eq!(entry_state(&db, &mut flash, Slot::A), ImageState::Verified);
    }

    #[test]
    fn the_boot_decision_checks_the_signature_of_a_pending_image_again() {
        const APP: &[u8] = include_bytes!("../../firmware-fixtures/files/app-v2.bin");
        const SIG: &str = include_str!("../../firmware-fixtures/files/app-v2.bin.sig");
        const KEY: &str =
            include_str!("../../firmware-fixtures/files/keys/test-signing-key.pub.pem");
        let signature = ImageSignature::from_base64(SIG).unwrap().to_bytes();
        let layout = Layout {
            slot_size: 24 * 4096,
            ..LAYOUT
        };
        let mut flash = Flash::new((2 + 3 * 24) * 4096).unwrap();
        let config = DbConfig {
            slots: 2,
            trusted_key: Some(PublicKey::from_pem(KEY).unwrap()),
        };
        let db = Slots::with_config(layout, config, &flash).unwrap();
        db.provision(&mut flash, &factory()).unwrap();
        let slot = download_all(&db, &mut flash, APP, 4096).unwrap();
        let meta = ImageMeta {
            signature: Some(signature),
            ..meta(APP, 2)
        };
        db.finish_download(&mut flash, slot, meta).unwrap();
        assert_eq!(
            db.verify(&mut flash, slot).unwrap().images[1].state,
            ImageState::Verified
        );
        db.apply(&mut flash, slot).unwrap();
        let applied = flash;

        // The index rewritten between apply and boot (a whole new record, as someone with
        // access to the flash could write it): each change only the signature check sees.
        let other = image(APP.len(), 9);
        type Change = fn(&mut ImageInfo, &[u8]);
        let tampered: [(&str, Change); 3] = [
            ("signature altered", |e, _| {
                e.signature.as_mut().unwrap()[40] ^= 0x01;
            }),
            ("signature removed", |e, _| e.signature = None),
            ("another image with its SHA-256", |e, other| {
                e.sha256 = sha256(other);
            }),
        ];
        for (what, change) in tampered {
            let mut f = applied.clone();
            let mut index = db.latest(&mut f).unwrap().unwrap();
            change(index.entry_mut(slot), &other);
            if index.entry(slot).sha256 == sha256(&other) {
                db.write_raw(&mut f, slot, 0, &other).unwrap();
            }
            db.commit(&mut f, &index).unwrap();
            let boot = db.boot(&mut f).unwrap();
            assert_eq!(
                boot.outcome,
                BootOutcome::FellBack { rejected: 2 },
                "{what}"
            );
            assert_eq!(boot.state.running().slot, Slot::FACTORY, "{what}");
            assert_eq!(
                entry_state(&db, &mut f, slot),
                ImageState::Invalid,
                "{what}"
            );
        }

        // Untouched, it boots as a trial.
        let mut f = applied;
        assert_eq!(
            db.boot(&mut f).unwrap().outcome,
            BootOutcome::Updated { from: 0, to: 2 }
        );
    }

    /// Runs `op` on copies of `flash` with power cut after every number of writes it makes,
    /// then after every number of writes and erases, and checks each after power returns:
    /// the index parses, its state is the one before `op`, after it, or one of `between`,
    /// and the boot decision leaves an intact image running. Returns the number of cuts.
    fn cut_everywhere(
        db: &Slots,
        flash: &Flash,
        between: &[State],
        op: impl Fn(&mut Flash) -> Result<State>,
    ) -> u32 {
        let before = db.state(&mut flash.clone()).unwrap();
        let mut clean = flash.clone();
        let start = clean.sim().stats().clone();
        let after = op(&mut clean).unwrap();
        let stats = clean.sim().stats();
        let writes = (stats.writes - start.writes) as u32;
        let ops = writes + (stats.erases - start.erases) as u32;
        assert!(writes > 0);
        let mut cuts = 0;
        for (by_ops, total) in [(false, writes), (true, ops)] {
            for n in 0..total {
                let mut f = flash.clone();
                if by_ops {
                    f.sim_mut().cut_power_after_ops(n);
                } else {
                    f.sim_mut().cut_power_after_writes(n);
                }
                assert!(op(&mut f).is_err(), "cut {n} (ops: {by_ops})");
                f.sim_mut().restore_power();
                assert!(db.latest(&mut f).unwrap().is_some(), "cut {n}: no index");
                let state = db.state(&mut f).unwrap();
                assert!(
                    state == before || state == after || between.contains(&state),
                    "cut {n} (ops: {by_ops}): {state:#?}"
                );
                assert_boots(db, &mut f);
                cuts += 1;
            }
        }
        cuts
    }

    #[test]
    fn a_power_cut_at_any_write_of_any_operation_leaves_a_consistent_bootable_database() {
        // The default two slots, and three; in 4 KiB sectors, and in 1 KiB ones, which hold
        // two records of two slots and one of three (every index write rolls over).
        for (layout, slots) in [(LAYOUT, 2), (SMALL, 2), (LAYOUT, 3), (SMALL, 3)] {
            println!(
                "{} B sectors, {slots} slots: {} cuts in all",
                layout.erase_size,
                cut_every_operation(layout, slots)
            );
        }
    }

    /// Each operation from a state where it does something, cut at each of its writes
    /// and erases ([`cut_everywhere`]) on a database of `slots` slots; the total number of
    /// cuts.
    fn cut_every_operation(layout: Layout, slots: u8) -> u32 {
        let mut cuts = Vec::new();
        let mut count = |name: &str, n: u32| {
            println!("{name}: {n} cuts");
            cuts.push(n);
        };
        let (mut flash, db) = provisioned_in(layout, slots);
        let v2 = image(9000, 2);

        // Stage: begin, download (plain and rewinding into a held sector), finish, verify.
        count(
            "begin",
            cut_everywhere(&db, &flash, &[], |f| db.begin_download(f, "app")),
        );
        let slot = db
            .begin_download(&mut flash, "app")
            .unwrap()
            .download()
            .unwrap()
            .slot;
        assert_eq!(slot, Slot::A);
        count(
            "download",
            cut_everywhere(&db, &flash, &[], |f| db.download(f, slot, 0, &v2[..6000])),
        );
        db.download(&mut flash, slot, 0, &v2[..6000]).unwrap();
        let lowered = {
            let mut f = flash.clone();
            let mut index = db.latest(&mut f).unwrap().unwrap();
            index.entry_mut(slot).size = 4096;
            index.view()
        };
        count(
            "download rewinding",
            cut_everywhere(&db, &flash, &[lowered], |f| {
                db.download(f, slot, 5000, &v2[5000..])
            }),
        );
        db.download(&mut flash, slot, 5000, &v2[5000..]).unwrap();
        count(
            "finish",
            cut_everywhere(&db, &flash, &[], |f| {
                db.finish_download(f, slot, meta(&v2, 2))
            }),
        );
        db.finish_download(&mut flash, slot, meta(&v2, 2)).unwrap();
        count(
            "verify",
            cut_everywhere(&db, &flash, &[], |f| db.verify(f, slot)),
        );
        db.verify(&mut flash, slot).unwrap();

        // Apply, the boot into the trial, confirm.
        count(
            "apply",
            cut_everywhere(&db, &flash, &[], |f| db.apply(f, slot)),
        );
        db.apply(&mut flash, slot).unwrap();
        let boot = |f: &mut Flash| db.boot(f).map(|b| b.state);
        count("boot into trial", cut_everywhere(&db, &flash, &[], boot));
        db.boot(&mut flash).unwrap();
        count(
            "confirm",
            cut_everywhere(&db, &flash, &[], |f| db.confirm(f)),
        );
        let confirmed = flash.clone();
        db.confirm(&mut flash).unwrap();

        // A trial that reboots unconfirmed, and one whose health check fails.
        count(
            "boot rolling back",
            cut_everywhere(&db, &confirmed, &[], |f| db.boot(f).map(|b| b.state)),
        );
        let mut failed = confirmed.clone();
        count(
            "health failed",
            cut_everywhere(&db, &failed, &[], |f| db.health_failed(f)),
        );
        db.health_failed(&mut failed).unwrap();
        count(
            "boot leaving a retiring image",
            cut_everywhere(&db, &failed, &[], boot),
        );

        // Rollback and factory reset from a confirmed v3 in slot B with v2 previous in A.
        assert_eq!(
            install(&db, &mut flash, &image(7000, 3), 3).unwrap(),
            Slot::B
        );
        count(
            "rollback",
            cut_everywhere(&db, &flash, &[], |f| db.rollback(f)),
        );
        count(
            "factory reset",
            cut_everywhere(&db, &flash, &[], |f| db.factory_reset(f)),
        );

        // Full. Two slots: v3 runs and v2, the previous image, holds the other, which the
        // next download takes. More: staged images v4, v5, … fill them, and the lowest
        // version but the previous image's, v4, goes.
        let mut lowest = slot;
        for k in 0..slots - 2 {
            let version = 4 + u32::from(k);
            let staged = stage(&db, &mut flash, &image(7000, version as u8), version).unwrap();
            if k == 0 {
                lowest = staged;
            }
        }
        let state = db.state(&mut flash).unwrap();
        assert!(state.images.iter().all(|i| i.state != ImageState::Empty));
        assert_eq!(state.download_slot(), Some(lowest));
        count(
            "begin replacing the lowest version",
            cut_everywhere(&db, &flash, &[], |f| db.begin_download(f, "app")),
        );

        // Provisioning is the factory's step and the only one not cut here.
        assert!(cuts.iter().all(|&n| n >= 4));
        cuts.iter().sum()
    }

    #[test]
    fn a_power_cut_anywhere_in_a_whole_update_sequence_recovers_and_carries_on() {
        for layout in [LAYOUT, SMALL] {
            cut_a_whole_sequence(layout);
        }
    }

    /// A whole update sequence on the default two slots, cut at each of its writes and
    /// erases.
    fn cut_a_whole_sequence(layout: Layout) {
        let (fresh, db) = provisioned_in(layout, 2);
        let v2 = image(9000, 2);
        let v3 = image(7000, 3);
        let v4 = image(5000, 4);
        // Stage v2 in whole sectors, apply, boot, confirm; the same for v3, in the other
        // slot; then v4 in the first slot again, replacing v2, applied and booted, and a
        // reboot without confirm rolls it back; then a factory reset and its boot. The
        // states after each step are the only ones a cut may leave.
        let sequence = |f: &mut Flash, states: &mut Vec<State>| -> Result<()> {
            for (bytes, version) in [(&v2, 2), (&v3, 3), (&v4, 4)] {
                let slot = db.begin_download(f, "app")?.download().unwrap().slot;
                states.push(db.state(f)?);
                for (i, part) in bytes.chunks(4096).enumerate() {
                    states.push(db.download(f, slot, (i * 4096) as u32, part)?);
                }
                states.push(db.finish_download(f, slot, meta(bytes, version))?);
                states.push(db.verify(f, slot)?);
                states.push(db.apply(f, slot)?);
                states.push(db.boot(f)?.state);
                if version < 4 {
                    states.push(db.confirm(f)?);
                }
            }
            states.push(db.boot(f)?.state);
            states.push(db.factory_reset(f)?);
            states.push(db.boot(f)?.state);
            Ok(())
        };
        let mut clean = fresh.clone();
        let mut states = vec![db.state(&mut clean.clone()).unwrap()];
        sequence(&mut clean, &mut states).unwrap();
        assert_eq!(states.last().unwrap().running().slot, Slot::FACTORY);
        let writes = (clean.sim().stats().writes - fresh.sim().stats().writes) as u32;
        let ops = writes + (clean.sim().stats().erases - fresh.sim().stats().erases) as u32;
        let next = image(5000, 9);
        let mut cuts = 0;
        for (by_ops, total) in [(false, writes), (true, ops)] {
            for n in 0..total {
                let mut f = fresh.clone();
                if by_ops {
                    f.sim_mut().cut_power_after_ops(n);
                } else {
                    f.sim_mut().cut_power_after_writes(n);
                }
                assert!(sequence(&mut f, &mut Vec::new()).is_err(), "cut {n}");
                f.sim_mut().restore_power();
                let state = db.state(&mut f).unwrap();
                assert!(
                    states.contains(&state),
                    "cut {n} (ops: {by_ops}): {state:#?}"
                );
                let boot = assert_boots(&db, &mut f);
                // The device carries on: a further update installs, and the factory image
                // is still there.
                if boot.state.trial.is_some() {
                    db.confirm(&mut f).unwrap();
                }
                let slot = install(&db, &mut f, &next, 10).unwrap();
                let state = db.state(&mut f).unwrap();
                assert_eq!((state.active.slot, state.active.version), (slot, 10));
                assert_eq!(
                    db.image_digest(&mut f, Slot::FACTORY, factory().len() as u32),
                    Ok(sha256(&factory()))
                );
                cuts += 1;
            }
        }
        println!(
            "{} B sectors: {writes} writes, {ops} operations: {cuts} cuts",
            layout.erase_size
        );
        assert_eq!(cuts, writes + ops);
        assert!(writes > 50, "{writes}");
    }
}
