//! Two image slots and a power-safe state area on one NOR flash, and the boot decision.
//!
//! Contract. [`Slots`] divides a window of a flash ([`Layout`]) into a state area of two
//! sectors and two equal image slots, A and B. The state area holds the [`State`]: which
//! slot is active with which OTA version, size and SHA-256, and optionally a *pending*
//! image that apply wrote to the other slot. [`Slots::mark_pending`] records a pending
//! image; [`Slots::boot`] is the bootloader's decision: it verifies a pending image over the
//! flash contents and activates it ([`BootOutcome::Updated`]) or drops it and stays on the
//! old slot ([`BootOutcome::FellBack`]). A flash with no state record boots the factory
//! state ([`BootOutcome::Factory`]): slot A, version 0, an empty image.
//!
//! Power safety: a cut at any write or erase leaves either the old or the new state readable,
//! never neither. The state is appended as fixed-size records, each with a sequence number
//! and a checksum; the record body is written first and a commit word last, and a reader
//! takes the valid committed record with the highest sequence. A record slot that was
//! written in part (body without commit, torn body) is skipped and never reused until its
//! sector is erased. When a sector is full the *other* sector is erased and the record goes
//! there, so the sector holding the latest record is never erased while it is the latest.
//! The boot decision is idempotent: cut during it, the next boot decides the same again.
//!
//! ```text
//! Flash window at Layout::base (E = erase_size, S = slot_size):
//!   +0        state sector 0      E bytes
//!   +E        state sector 1      E bytes
//!   +2E       slot A              S bytes
//!   +2E+S     slot B              S bytes
//!
//! State record, at offsets k * stride within a state sector (W = write_size,
//! body = 100 bytes rounded up to W, stride = body + W), little-endian:
//!   0   u32   magic 0x4F54_4131 ("OTA1")
//!   4   u32   sequence, +1 per record, highest wins
//!   8   u8    active slot (0 = A, 1 = B)
//!   9   u8    pending flag (0 = none, 1 = pending)
//!   10  u8    pending slot (0 = A, 1 = B; not the active slot)
//!   11  u8    0
//!   12  u32   active OTA version
//!   16  u32   active image size
//!   20  [32]  active image SHA-256
//!   52  u32   pending OTA version   (zero when no pending)
//!   56  u32   pending image size
//!   60  [32]  pending image SHA-256
//!   92  [8]   check: SHA-256 of bytes 0..92, first 8 bytes
//!   100 ..    0xFF up to the body length
//!   body [W]  commit word: all 0x00, written last, in a write of its own
//! ```
//!
//! The record scheme is [`crate::record::RecordLog`], shared with the DFU device.
//! The check is SHA-256 truncated to 8 bytes (`otaweb::image::digest::sha256`): it only
//! needs to catch torn or stray bytes, not an adversary, and the hash is already linked.
//!
//! Image data: [`Slots::write_image`] writes bytes at any offset of a slot. Each sector it
//! touches is rewritten whole: the bytes of that sector before the offset are read, the
//! sector is erased, and those bytes are programmed back followed by the new ones (the last
//! word padded with 0xFF). So sectors are erased lazily, on their first write, a write may
//! rewind over bytes written before, and no write-word is ever programmed twice.
//!
//! Staging progress (which component, how many bytes) is not persisted: the gadget keeps it
//! in RAM, so it survives a dropped link but not a restart, after which the orchestrator
//! starts again from offset 0. Only [`Slots::mark_pending`] makes staged bytes matter, and
//! the boot decision checks them before they run.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use embedded_storage::nor_flash::NorFlash;
use otaweb::image::digest::{sha256, DigestAlg, Hasher};

use crate::record::{LogError, RecordLog};

/// The record magic, "OTA1" read as a big-endian word and stored little-endian.
const MAGIC: u32 = 0x4F54_4131;
/// Bytes of a record before the padding: fields and check.
/// Where the check starts; it covers every byte before it.
const CHECK_AT: usize = 92;
/// Where the record payload starts, after the log's magic and sequence.
const PAYLOAD_AT: usize = 8;
/// Erased NOR flash reads as ones.
const ERASED: u8 = 0xFF;
/// How much of an image is read at a time to hash it.
const DIGEST_CHUNK: usize = 256;

/// Where the two slots and the state area lie on a flash, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Start of the state area; a multiple of `erase_size`.
    pub base: u32,
    /// Sector size the layout is cut into: a power of two, a multiple of the flash's.
    pub erase_size: u32,
    /// Write-word size records are padded to: a power of two, a multiple of the flash's.
    pub write_size: u32,
    /// Size of each image slot: a nonzero multiple of `erase_size`.
    pub slot_size: u32,
}

impl Layout {
    /// Checks the rules on the fields against `flash`: its constants, its capacity, which
    /// must hold two state sectors and both slots, and that a sector holds a record. Reads
    /// of any length at any offset are made, so the flash's `READ_SIZE` must be 1.
    pub fn validate<F: NorFlash>(&self, flash: &F) -> Result<(), LayoutError> {
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
        if RecordLog::too_large(es as u32, ws as u32, CHECK_AT - PAYLOAD_AT) {
            return Err(LayoutError::SectorTooSmall);
        }
        let end =
            u64::from(self.base) + 2 * u64::from(self.erase_size) + 2 * u64::from(self.slot_size);
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
    /// A size is not a power of two or not a multiple of the flash's constants, or the
    /// flash cannot read single bytes.
    Geometry,
    /// The base or the slot size is not a whole number of sectors, or the slot size is zero.
    NotSectorAligned,
    /// A sector cannot hold one state record.
    SectorTooSmall,
    /// The state area and both slots do not fit in the flash or in `u32` offsets.
    TooLarge,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LayoutError::Geometry => "slot layout sizes do not match the flash geometry",
            LayoutError::NotSectorAligned => "slot layout is not sector-aligned",
            LayoutError::SectorTooSmall => "a sector cannot hold a state record",
            LayoutError::TooLarge => "slot layout does not fit the flash",
        })
    }
}

/// Why a slot operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotError<E> {
    /// The flash refused an operation.
    Flash(E),
    /// The range runs past the end of the slot.
    OutOfBounds,
    /// Every sequence number has been used; the state can no longer advance.
    SequenceExhausted,
}

impl<E: fmt::Display> fmt::Display for SlotError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotError::Flash(e) => write!(f, "flash: {e}"),
            SlotError::OutOfBounds => f.write_str("range runs past the end of the slot"),
            SlotError::SequenceExhausted => f.write_str("state sequence numbers exhausted"),
        }
    }
}

/// One of the two image slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// The first slot, active in the factory state.
    A,
    /// The second slot.
    B,
}

impl Slot {
    /// The other slot.
    #[must_use]
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    fn to_byte(self) -> u8 {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }

    fn from_byte(b: u8) -> Option<Slot> {
        match b {
            0 => Some(Slot::A),
            1 => Some(Slot::B),
            _ => None,
        }
    }
}

/// An image in a slot, as the state records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// The slot holding it.
    pub slot: Slot,
    /// Its OTA version.
    pub version: u32,
    /// Its size in bytes, from the start of the slot.
    pub size: u32,
    /// SHA-256 of its bytes.
    pub sha256: [u8; 32],
}

/// What the state area says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct State {
    /// The image that runs.
    pub active: ImageInfo,
    /// An image written by apply, to be verified and activated at the next boot.
    pub pending: Option<ImageInfo>,
}

impl State {
    /// The state of a flash with no record: slot A, version 0, an empty image.
    #[must_use]
    pub fn factory() -> State {
        State {
            active: ImageInfo {
                slot: Slot::A,
                version: 0,
                size: 0,
                sha256: sha256(&[]),
            },
            pending: None,
        }
    }
}

/// What the boot decision did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootOutcome {
    /// No state record: the factory state, nothing written.
    Factory,
    /// Nothing pending: the active image boots unchanged.
    Unchanged,
    /// The pending image verified and is now active.
    Updated {
        /// The version that ran before.
        from: u32,
        /// The version that runs now.
        to: u32,
    },
    /// The pending image failed verification; it was dropped and the old image boots.
    FellBack {
        /// The version of the dropped image.
        rejected: u32,
    },
}

/// The result of [`Slots::boot`]: the decision and the state it left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Boot {
    /// What the decision did.
    pub outcome: BootOutcome,
    /// The state after it; `pending` is always `None`.
    pub state: State,
}

/// A validated [`Layout`] and the operations on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slots {
    layout: Layout,
}

impl Slots {
    /// Slots laid out by `layout`, which must fit `flash` ([`Layout::validate`]).
    pub fn new<F: NorFlash>(layout: Layout, flash: &F) -> Result<Slots, LayoutError> {
        layout.validate(flash)?;
        Ok(Slots { layout })
    }

    /// The layout.
    #[must_use]
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Where `slot` lies on the flash.
    #[must_use]
    pub fn slot_range(&self, slot: Slot) -> Range<u32> {
        let l = self.layout;
        let start = l.base + 2 * l.erase_size + u32::from(slot.to_byte()) * l.slot_size;
        start..start + l.slot_size
    }

    /// The current state: the latest valid record, or [`State::factory`] if there is none.
    pub fn state<F: NorFlash>(&self, flash: &mut F) -> Result<State, SlotError<F::Error>> {
        Ok(self.latest(flash)?.unwrap_or_else(State::factory))
    }

    /// The boot decision: verifies and activates a pending image, or drops it if it does
    /// not match its recorded size and SHA-256. Safe to cut and run again.
    pub fn boot<F: NorFlash>(&self, flash: &mut F) -> Result<Boot, SlotError<F::Error>> {
        let Some(state) = self.latest(flash)? else {
            return Ok(Boot {
                outcome: BootOutcome::Factory,
                state: State::factory(),
            });
        };
        let Some(pending) = state.pending else {
            return Ok(Boot {
                outcome: BootOutcome::Unchanged,
                state,
            });
        };
        let valid = pending.slot != state.active.slot
            && self.image_digest(flash, pending.slot, pending.size)? == pending.sha256;
        let (outcome, next) = if valid {
            let outcome = BootOutcome::Updated {
                from: state.active.version,
                to: pending.version,
            };
            (outcome, pending)
        } else {
            let outcome = BootOutcome::FellBack {
                rejected: pending.version,
            };
            (outcome, state.active)
        };
        let state = State {
            active: next,
            pending: None,
        };
        self.write_state(flash, &state)?;
        Ok(Boot { outcome, state })
    }

    /// Records `pending` as the image to verify and activate at the next boot, keeping the
    /// current active image; the pending slot must be the inactive one.
    pub fn mark_pending<F: NorFlash>(
        &self,
        flash: &mut F,
        pending: ImageInfo,
    ) -> Result<State, SlotError<F::Error>> {
        let current = self.state(flash)?;
        if pending.slot == current.active.slot || pending.size > self.layout.slot_size {
            return Err(SlotError::OutOfBounds);
        }
        let state = State {
            active: current.active,
            pending: Some(pending),
        };
        self.write_state(flash, &state)?;
        Ok(state)
    }

    /// Erases the state area and slot A, writes `image` to slot A and records it as the
    /// active image with version 0: what a factory programmer does.
    pub fn provision<F: NorFlash>(
        &self,
        flash: &mut F,
        image: &[u8],
    ) -> Result<State, SlotError<F::Error>> {
        let size = u32::try_from(image.len()).map_err(|_| SlotError::OutOfBounds)?;
        if size > self.layout.slot_size {
            return Err(SlotError::OutOfBounds);
        }
        let state_area = self.log().sector(0).start..self.log().sector(1).end;
        flash
            .erase(state_area.start, state_area.end)
            .map_err(SlotError::Flash)?;
        self.write_image(flash, Slot::A, 0, image)?;
        let state = State {
            active: ImageInfo {
                slot: Slot::A,
                version: 0,
                size,
                sha256: sha256(image),
            },
            pending: None,
        };
        self.write_state(flash, &state)?;
        Ok(state)
    }

    /// Writes `bytes` at `offset` of `slot`, rewriting each sector it touches and keeping
    /// that sector's bytes before `offset` (see the module docs). Bytes after the written
    /// range in its last sector are erased.
    pub fn write_image<F: NorFlash>(
        &self,
        flash: &mut F,
        slot: Slot,
        offset: u32,
        bytes: &[u8],
    ) -> Result<(), SlotError<F::Error>> {
        let len = u32::try_from(bytes.len()).map_err(|_| SlotError::OutOfBounds)?;
        let end = offset.checked_add(len).ok_or(SlotError::OutOfBounds)?;
        if end > self.layout.slot_size {
            return Err(SlotError::OutOfBounds);
        }
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

    /// SHA-256 of the first `size` bytes of `slot`, read from the flash.
    pub fn image_digest<F: NorFlash>(
        &self,
        flash: &mut F,
        slot: Slot,
        size: u32,
    ) -> Result<[u8; 32], SlotError<F::Error>> {
        if size > self.layout.slot_size {
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

    #[cfg(test)]
    fn stride(&self) -> usize {
        self.log().stride()
    }

    #[cfg(test)]
    fn records_per_sector(&self) -> usize {
        self.log().records_per_sector()
    }

    /// The state area as a record log.
    fn log(&self) -> RecordLog {
        RecordLog {
            base: self.layout.base,
            sector_size: self.layout.erase_size,
            write_size: self.layout.write_size,
            magic: MAGIC,
            payload_len: CHECK_AT - PAYLOAD_AT,
        }
    }

    /// The latest valid state record, if any.
    fn latest<F: NorFlash>(&self, flash: &mut F) -> Result<Option<State>, SlotError<F::Error>> {
        let slot_size = self.layout.slot_size;
        self.log()
            .latest(flash, |p| decode(p, slot_size))
            .map_err(SlotError::Flash)
    }

    /// Appends a record of `state` with the next sequence number (see the module docs).
    fn write_state<F: NorFlash>(
        &self,
        flash: &mut F,
        state: &State,
    ) -> Result<(), SlotError<F::Error>> {
        let slot_size = self.layout.slot_size;
        self.log()
            .append(flash, &encode_payload(state), |p| decode(p, slot_size))
            .map_err(|e| match e {
                LogError::Flash(e) => SlotError::Flash(e),
                LogError::SequenceExhausted => SlotError::SequenceExhausted,
            })
    }
}

/// The record payload for `state`: bytes 8..92 of the record in the module docs.
fn encode_payload(state: &State) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHECK_AT - PAYLOAD_AT);
    let pending = state.pending;
    out.extend_from_slice(&[
        state.active.slot.to_byte(),
        u8::from(pending.is_some()),
        pending.map_or(0, |p| p.slot.to_byte()),
        0,
    ]);
    for image in [Some(state.active), pending] {
        let image = image.unwrap_or(ImageInfo {
            slot: Slot::A,
            version: 0,
            size: 0,
            sha256: [0; 32],
        });
        out.extend_from_slice(&image.version.to_le_bytes());
        out.extend_from_slice(&image.size.to_le_bytes());
        out.extend_from_slice(&image.sha256);
    }
    out
}

/// The state in a record payload (bytes 8..92), if its fields are consistent.
fn decode(fields: &[u8], slot_size: u32) -> Option<State> {
    let word = |at: usize| -> Option<u32> {
        let at = at - PAYLOAD_AT;
        Some(u32::from_le_bytes(fields.get(at..at + 4)?.try_into().ok()?))
    };
    let byte = |at: usize| fields.get(at - PAYLOAD_AT).copied();
    let image = |slot: Slot, at: usize| -> Option<ImageInfo> {
        let size = word(at + 4)?;
        (size <= slot_size).then_some(())?;
        let digest = at + 8 - PAYLOAD_AT;
        Some(ImageInfo {
            slot,
            version: word(at)?,
            size,
            sha256: fields.get(digest..digest + 32)?.try_into().ok()?,
        })
    };
    let active = image(Slot::from_byte(byte(8)?)?, 12)?;
    let pending = match byte(9)? {
        0 => None,
        1 => {
            let slot = Slot::from_byte(byte(10)?)?;
            (slot != active.slot).then_some(())?;
            Some(image(slot, 52)?)
        }
        _ => return None,
    };
    Some(State { active, pending })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flash::{Fixed, SimFlash};
    use std::vec::Vec;

    /// A realistic part: 4 KiB sectors, 4-byte words, 16 KiB slots.
    type Flash = Fixed<4, 4096>;

    const LAYOUT: Layout = Layout {
        base: 0,
        erase_size: 4096,
        write_size: 4,
        slot_size: 4 * 4096,
    };

    /// A small part whose state sectors hold two records each, so they roll over often.
    type Tiny = Fixed<4, 256>;

    const TINY: Layout = Layout {
        base: 0,
        erase_size: 256,
        write_size: 4,
        slot_size: 4 * 256,
    };

    fn image(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn info(slot: Slot, version: u32, bytes: &[u8]) -> ImageInfo {
        ImageInfo {
            slot,
            version,
            size: bytes.len() as u32,
            sha256: sha256(bytes),
        }
    }

    fn setup() -> (Flash, Slots, Vec<u8>) {
        let mut flash = Flash::new(10 * 4096).unwrap();
        let slots = Slots::new(LAYOUT, &flash).unwrap();
        let factory = image(5000, 1);
        slots.provision(&mut flash, &factory).unwrap();
        (flash, slots, factory)
    }

    /// The active image's recorded digest matches the slot contents.
    fn assert_bootable<F: NorFlash>(slots: &Slots, flash: &mut F, state: &State)
    where
        F::Error: fmt::Debug,
    {
        let a = state.active;
        assert_eq!(slots.image_digest(flash, a.slot, a.size).unwrap(), a.sha256);
    }

    #[test]
    fn layout_validation() {
        let flash = Flash::new(10 * 4096).unwrap();
        assert_eq!(LAYOUT.validate(&flash), Ok(()));
        let with = |f: fn(&mut Layout)| {
            let mut l = LAYOUT;
            f(&mut l);
            l.validate(&flash)
        };
        assert_eq!(with(|l| l.erase_size = 2048), Err(LayoutError::Geometry));
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
        assert_eq!(with(|l| l.base = 4096 * 3), Err(LayoutError::TooLarge));
        // A sector must hold a whole record: 100 bytes of body and a commit word.
        let small = SimFlash::new(crate::flash::Geometry {
            capacity: 64 * 6,
            erase_size: 64,
            write_size: 4,
        })
        .unwrap();
        let layout = Layout {
            base: 0,
            erase_size: 64,
            write_size: 4,
            slot_size: 128,
        };
        assert_eq!(layout.validate(&small), Err(LayoutError::SectorTooSmall));
    }

    #[test]
    fn blank_flash_boots_the_factory_state_without_writing() {
        let mut flash = Flash::new(10 * 4096).unwrap();
        let slots = Slots::new(LAYOUT, &flash).unwrap();
        let boot = slots.boot(&mut flash).unwrap();
        assert_eq!(boot.outcome, BootOutcome::Factory);
        assert_eq!(boot.state, State::factory());
        assert_bootable(&slots, &mut flash, &boot.state);
        assert!(flash.sim_mut().take_log().is_empty());
    }

    #[test]
    fn records_round_trip_and_the_latest_wins() {
        let (mut flash, slots, factory) = setup();
        let state = slots.state(&mut flash).unwrap();
        assert_eq!(state.active, info(Slot::A, 0, &factory));
        assert_eq!(state.pending, None);
        assert_eq!(
            slots.boot(&mut flash).unwrap().outcome,
            BootOutcome::Unchanged
        );

        let new = image(7000, 2);
        slots.write_image(&mut flash, Slot::B, 0, &new).unwrap();
        let pending = info(Slot::B, 3, &new);
        let marked = slots.mark_pending(&mut flash, pending).unwrap();
        assert_eq!(slots.state(&mut flash).unwrap(), marked);
        assert_eq!(marked.pending, Some(pending));

        // The pending slot must be the inactive one.
        assert_eq!(
            slots.mark_pending(&mut flash, info(Slot::A, 3, &new)),
            Err(SlotError::OutOfBounds)
        );

        let boot = slots.boot(&mut flash).unwrap();
        assert_eq!(boot.outcome, BootOutcome::Updated { from: 0, to: 3 });
        assert_eq!(boot.state.active, pending);
        assert_eq!(slots.state(&mut flash).unwrap(), boot.state);
        assert_bootable(&slots, &mut flash, &boot.state);
        // Booting again changes nothing.
        assert_eq!(
            slots.boot(&mut flash).unwrap().outcome,
            BootOutcome::Unchanged
        );
    }

    #[test]
    fn bad_pending_image_falls_back() {
        let (mut flash, slots, factory) = setup();
        let new = image(3000, 9);
        slots.write_image(&mut flash, Slot::B, 0, &new).unwrap();
        // The record claims a digest the slot does not hold.
        let mut claimed = info(Slot::B, 1, &new);
        claimed.sha256[0] ^= 1;
        slots.mark_pending(&mut flash, claimed).unwrap();
        let boot = slots.boot(&mut flash).unwrap();
        assert_eq!(boot.outcome, BootOutcome::FellBack { rejected: 1 });
        assert_eq!(boot.state.active, info(Slot::A, 0, &factory));
        assert_eq!(boot.state.pending, None);
        assert_bootable(&slots, &mut flash, &boot.state);
    }

    #[test]
    fn image_writes_rewind_and_keep_earlier_bytes() {
        let (mut flash, slots, _) = setup();
        let data = image(9000, 4);
        // Unaligned pieces, then a rewind into the middle of a sector and a rewrite.
        slots
            .write_image(&mut flash, Slot::B, 0, &data[..1001])
            .unwrap();
        slots
            .write_image(&mut flash, Slot::B, 1001, &data[1001..6000])
            .unwrap();
        slots
            .write_image(&mut flash, Slot::B, 5000, &[0; 3000])
            .unwrap();
        slots
            .write_image(&mut flash, Slot::B, 5000, &data[5000..])
            .unwrap();
        assert_eq!(
            slots.image_digest(&mut flash, Slot::B, 9000).unwrap(),
            sha256(&data)
        );
        assert_eq!(
            slots.write_image(&mut flash, Slot::B, 4 * 4096 - 2, &[0; 3]),
            Err(SlotError::OutOfBounds)
        );
        assert_eq!(
            slots.image_digest(&mut flash, Slot::B, 4 * 4096 + 1),
            Err(SlotError::OutOfBounds)
        );
        // Slot A, the active image, was never touched.
        let a = slots.slot_range(Slot::A);
        assert_eq!(
            &flash.sim().contents()[a.start as usize..a.start as usize + 5000],
            &image(5000, 1)[..]
        );
    }

    #[test]
    fn state_sectors_roll_over_and_keep_the_latest() {
        let mut flash = Tiny::new(10 * 256).unwrap();
        let slots = Slots::new(TINY, &flash).unwrap();
        assert_eq!(slots.records_per_sector(), 2);
        slots.provision(&mut flash, &image(300, 0)).unwrap();
        let mut active = Slot::A;
        for version in 1..=7u32 {
            let new = image(200 + version as usize, version as u8);
            slots
                .write_image(&mut flash, active.other(), 0, &new)
                .unwrap();
            slots
                .mark_pending(&mut flash, info(active.other(), version, &new))
                .unwrap();
            let boot = slots.boot(&mut flash).unwrap();
            assert_eq!(
                boot.outcome,
                BootOutcome::Updated {
                    from: version - 1,
                    to: version
                }
            );
            active = active.other();
            assert_eq!(boot.state.active, info(active, version, &new));
        }
        // Fifteen records in two sectors of two: both sectors were erased several times.
        let wear = &flash.sim().stats().sector_erases;
        assert!(wear[0] >= 3 && wear[1] >= 3, "{wear:?}");
    }

    #[test]
    fn torn_and_foreign_records_are_skipped() {
        let (mut flash, slots, factory) = setup();
        let good = slots.state(&mut flash).unwrap();
        // A body without its commit word, as a cut before the commit leaves it.
        let stride = slots.stride() as u32;
        let body = slots.log().encode(99, &encode_payload(&State::factory()));
        flash.write(stride, &body).unwrap();
        assert_eq!(slots.state(&mut flash).unwrap(), good);
        // A committed record with a bad check.
        let mut bad = slots.log().encode(100, &encode_payload(&State::factory()));
        bad[20] ^= 0x55;
        flash.write(2 * stride, &bad).unwrap();
        flash.write(2 * stride + bad.len() as u32, &[0; 4]).unwrap();
        assert_eq!(slots.state(&mut flash).unwrap(), good);
        // New records go after the skipped ones and still win.
        let new = image(10, 5);
        slots.write_image(&mut flash, Slot::B, 0, &new).unwrap();
        let marked = slots
            .mark_pending(&mut flash, info(Slot::B, 1, &new))
            .unwrap();
        assert_eq!(slots.state(&mut flash).unwrap(), marked);
        assert_eq!(marked.active, info(Slot::A, 0, &factory));
    }

    /// Provisions, then applies three updates (one with a bad image) with a boot after each,
    /// on the tiny flash so the state sectors roll over.
    fn update_sequence(
        flash: &mut Tiny,
        slots: &Slots,
    ) -> Result<(), SlotError<crate::flash::FlashError>> {
        let mut active = slots.state(flash)?.active;
        for version in 1..=3u32 {
            let new = image(300 + 50 * version as usize, version as u8);
            let target = active.slot.other();
            slots.write_image(flash, target, 0, &new)?;
            let mut pending = info(target, version, &new);
            if version == 2 {
                pending.sha256[5] ^= 0x80;
            }
            slots.mark_pending(flash, pending)?;
            active = slots.boot(flash)?.state.active;
        }
        Ok(())
    }

    #[test]
    fn power_cut_at_any_operation_still_boots_a_valid_image() {
        let fresh = || {
            let mut flash = Tiny::new(10 * 256).unwrap();
            let slots = Slots::new(TINY, &flash).unwrap();
            slots.provision(&mut flash, &image(300, 0)).unwrap();
            flash.sim_mut().take_log();
            (flash, slots)
        };
        let (mut flash, slots) = fresh();
        update_sequence(&mut flash, &slots).unwrap();
        let total = flash.sim().stats().writes + flash.sim().stats().erases;
        let ops_before = {
            let (f, _) = fresh();
            f.sim().stats().writes + f.sim().stats().erases
        };
        let total = (total - ops_before) as u32;
        assert!(total > 20, "{total}");

        let expected: Vec<(u32, [u8; 32])> =
            [(0, image(300, 0)), (1, image(350, 1)), (3, image(450, 3))]
                .iter()
                .map(|(v, bytes)| (*v, sha256(bytes)))
                .collect();
        for n in 0..total {
            let (mut flash, slots) = fresh();
            flash.sim_mut().cut_power_after_ops(n);
            assert!(update_sequence(&mut flash, &slots).is_err(), "cut {n}");
            flash.sim_mut().restore_power();
            let boot = slots.boot(&mut flash).unwrap();
            let a = boot.state.active;
            assert!(
                expected.contains(&(a.version, a.sha256)),
                "cut {n}: booted {a:?}"
            );
            assert_bootable(&slots, &mut flash, &boot.state);
            assert_eq!(boot.state.pending, None);
            // The device carries on: a further update still works after the cut.
            let next = image(100, 77);
            let target = a.slot.other();
            slots.write_image(&mut flash, target, 0, &next).unwrap();
            slots
                .mark_pending(&mut flash, info(target, 10, &next))
                .unwrap();
            let boot = slots.boot(&mut flash).unwrap();
            assert_eq!(boot.state.active, info(target, 10, &next), "cut {n}");
        }
    }
}
