//! A power-safe log of fixed-size records in two flash sectors: the latest committed record
//! wins. Shared by [`crate::slots`] (the image index) and [`crate::dfu`] (the DFU progress).
//!
//! Contract. A [`RecordLog`] appends records of one payload length to two sectors of a flash
//! and reads back the payload of the valid committed record with the highest sequence. A cut
//! at any write or erase leaves either the old or the new record readable, never neither:
//! the body is written first and a commit word last, in a write of its own; a record slot
//! written in part (body without commit, torn body, failed check, or a payload the caller's
//! decoder refuses) is skipped and never reused until its sector is erased. When a sector is
//! full the *other* sector is erased and the record goes there, so the sector holding the
//! latest record is never erased while it is the latest.
//!
//! ```text
//! Record at offsets k * stride within a sector (W = write_size, little-endian):
//!   0       u32   magic (the caller's)
//!   4       u32   sequence, +1 per record, highest wins
//!   8       [P]   payload (the caller's encoding, P = payload_len)
//!   8+P     [8]   check: SHA-256 of bytes 0..8+P, first 8 bytes
//!   16+P ..       0xFF up to the body length (16 + P rounded up to W)
//!   body    [W]   commit word: all 0x00
//! ```
//!
//! The check is SHA-256 truncated to 8 bytes: it only needs to catch torn or stray bytes,
//! not an adversary. Reads of any length are made, so the flash's `READ_SIZE` must be 1.

use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;

use embedded_storage::nor_flash::NorFlash;
use otaweb::image::digest::sha256;

/// Bytes of SHA-256 kept as the check.
const CHECK_LEN: usize = 8;
/// Bytes before the payload: magic and sequence.
const HEADER_LEN: usize = 8;
/// The value of every byte of a committed record's commit word.
const COMMITTED: u8 = 0x00;
/// Erased NOR flash reads as ones.
const ERASED: u8 = 0xFF;

/// Where a log lies and what its records look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordLog {
    /// Start of the first of the two sectors; the second follows it.
    pub base: u32,
    /// Sector size: what one erase clears.
    pub sector_size: u32,
    /// Write-word size records are padded to.
    pub write_size: u32,
    /// The magic word that marks this log's records.
    pub magic: u32,
    /// Payload bytes per record.
    pub payload_len: usize,
}

/// Why an append failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogError<E> {
    /// The flash refused an operation.
    Flash(E),
    /// Every sequence number has been used; the log can no longer advance.
    SequenceExhausted,
}

/// The latest record and where the next one goes.
struct Scan<T> {
    /// Highest-sequence valid record, decoded, and its sector.
    latest: Option<(u32, T, usize)>,
    /// Per sector, the index after the last non-free record slot.
    used: [usize; 2],
}

impl RecordLog {
    /// Whether a record with `payload_len` bytes of payload does *not* fit a sector of
    /// `sector_size` with write-words of `write_size`.
    #[must_use]
    pub fn too_large(sector_size: u32, write_size: u32, payload_len: usize) -> bool {
        let log = RecordLog {
            base: 0,
            sector_size,
            write_size,
            magic: 0,
            payload_len,
        };
        log.records_per_sector() == 0
    }

    /// A record body's length: header, payload and check, padded to whole write-words.
    #[must_use]
    pub fn body_len(&self) -> usize {
        (HEADER_LEN + self.payload_len + CHECK_LEN).next_multiple_of(self.write_size as usize)
    }

    /// The distance between records: the body and the commit word.
    #[must_use]
    pub fn stride(&self) -> usize {
        self.body_len() + self.write_size as usize
    }

    /// Records one sector holds (0 if a record does not fit).
    #[must_use]
    pub fn records_per_sector(&self) -> usize {
        self.sector_size as usize / self.stride()
    }

    /// The flash range of sector `index` (0 or 1).
    #[must_use]
    pub fn sector(&self, index: usize) -> Range<u32> {
        let start = self.base + index as u32 * self.sector_size;
        start..start + self.sector_size
    }

    /// The payload of the latest valid record that `decode` accepts, decoded.
    pub fn latest<F: NorFlash, T>(
        &self,
        flash: &mut F,
        decode: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<Option<T>, F::Error> {
        Ok(self.scan(flash, decode)?.latest.map(|(_, t, _)| t))
    }

    /// Appends a record of `payload` (exactly `payload_len` bytes) with the next sequence
    /// number; `decode` judges the existing records as [`RecordLog::latest`] does.
    pub fn append<F: NorFlash, T>(
        &self,
        flash: &mut F,
        payload: &[u8],
        decode: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<(), LogError<F::Error>> {
        let scan = self.scan(flash, decode).map_err(LogError::Flash)?;
        let (sequence, sector) = match scan.latest {
            Some((seq, _, sector)) => (
                seq.checked_add(1).ok_or(LogError::SequenceExhausted)?,
                sector,
            ),
            None => (1, 0),
        };
        let (sector, index) = if scan.used[sector] < self.records_per_sector() {
            (sector, scan.used[sector])
        } else {
            // Full: start over in the other sector, which holds nothing newer than this one.
            let other = 1 - sector;
            let range = self.sector(other);
            flash
                .erase(range.start, range.end)
                .map_err(LogError::Flash)?;
            (other, 0)
        };
        let at = self.sector(sector).start + (index * self.stride()) as u32;
        let body = self.encode(sequence, payload);
        flash.write(at, &body).map_err(LogError::Flash)?;
        // The commit word goes last, so a record cut short is never taken as valid.
        flash
            .write(
                at + body.len() as u32,
                &vec![COMMITTED; self.write_size as usize],
            )
            .map_err(LogError::Flash)
    }

    /// The record body for `payload` with `sequence`, padded to whole write-words.
    #[must_use]
    pub fn encode(&self, sequence: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body_len());
        out.extend_from_slice(&self.magic.to_le_bytes());
        out.extend_from_slice(&sequence.to_le_bytes());
        out.extend_from_slice(payload);
        out.resize(HEADER_LEN + self.payload_len, 0);
        let check = sha256(&out);
        out.extend_from_slice(&check[..CHECK_LEN]);
        out.resize(self.body_len(), ERASED);
        out
    }

    /// Reads every record slot of both sectors.
    fn scan<F: NorFlash, T>(
        &self,
        flash: &mut F,
        decode: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<Scan<T>, F::Error> {
        let stride = self.stride();
        let mut buf = vec![0; stride];
        let mut scan = Scan {
            latest: None,
            used: [0; 2],
        };
        for sector in 0..2 {
            let start = self.sector(sector).start;
            for index in 0..self.records_per_sector() {
                let at = start + (index * stride) as u32;
                flash.read(at, &mut buf)?;
                if buf.iter().all(|&b| b == ERASED) {
                    continue;
                }
                scan.used[sector] = index + 1;
                if let Some((sequence, value)) = self.classify(&buf, &decode) {
                    if scan
                        .latest
                        .as_ref()
                        .is_none_or(|(seq, _, _)| sequence > *seq)
                    {
                        scan.latest = Some((sequence, value, sector));
                    }
                }
            }
        }
        Ok(scan)
    }

    /// The sequence and decoded payload of a written record slot, if it passes every check.
    fn classify<T>(&self, raw: &[u8], decode: &impl Fn(&[u8]) -> Option<T>) -> Option<(u32, T)> {
        let (body, commit) = raw.split_at(self.body_len());
        if !commit.iter().all(|&b| b == COMMITTED) {
            return None;
        }
        let end = HEADER_LEN + self.payload_len;
        let fields = body.get(..end)?;
        if sha256(fields)[..CHECK_LEN] != *body.get(end..end + CHECK_LEN)? {
            return None;
        }
        let word = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(fields.get(at..at + 4)?.try_into().ok()?))
        };
        if word(0)? != self.magic {
            return None;
        }
        Some((word(4)?, decode(fields.get(HEADER_LEN..)?)?))
    }
}
