//! A simulated NOR flash that punishes mistakes, and partitions of any NOR flash.
//!
//! [`SimFlash`] keeps its contents in RAM and behaves like a NOR part, only stricter:
//!
//! - Erased bytes read `0xFF`. Erases cover whole sectors (`erase_size` bytes) and writes
//!   whole write-words (`write_size` bytes); anything else fails with
//!   [`FlashError::NotAligned`], and ranges past the end with [`FlashError::OutOfBounds`].
//!   [`NorFlashError::kind`] maps these to the matching [`NorFlashErrorKind`].
//! - A write can only clear bits, and each word may be written once per erase. Writing a word
//!   already written since its last erase, even with `0xFF`, fails with
//!   [`FlashError::WriteOverProgrammed`] and changes nothing. A real part would corrupt the
//!   word silently or raise an ECC fault later, so the sim refuses the write to make the bug
//!   show in the test that caused it. The sim does not implement `MultiwriteNorFlash`.
//! - Power loss can be injected with [`SimFlash::cut_power_after_writes`] or
//!   [`SimFlash::cut_power_after_ops`]. The operation that loses power fails with
//!   [`FlashError::PowerLost`] and leaves a deterministic partial state: an interrupted write
//!   programs its first half of words, rounded down; an interrupted erase erases the first
//!   half of its sectors, rounded down, and then the first half of the next sector. From
//!   then on every read, write and erase fails with `PowerLost` until
//!   [`SimFlash::restore_power`]. Contents survive, so a test "reboots" by keeping the same
//!   `SimFlash` and restoring power.
//! - [`SimFlash::stats`] counts writes, erases, programmed bytes and erases per sector (wear).
//!   [`SimFlash::take_log`] drains the list of operations that reached the flash.
//!
//! # Trait constants and runtime geometry
//!
//! `NorFlash` declares `WRITE_SIZE` and `ERASE_SIZE` as associated constants, but a
//! `SimFlash` gets its [`Geometry`] at run time: tests use many shapes, and the wasm demo
//! device chooses its flash when it starts. The two are reconciled like this:
//!
//! - `SimFlash` implements the traits with `READ_SIZE`, `WRITE_SIZE` and `ERASE_SIZE` all
//!   equal to 1. That is the weakest promise the types can make, so the constants never
//!   allow an access the part would reject. The real geometry is checked on every call, and
//!   an access that is misaligned for it fails with `NotAligned` rather than being accepted.
//! - [`Fixed<WRITE, ERASE>`](Fixed) wraps a `SimFlash` whose geometry matches its const
//!   parameters (checked when it is built) and advertises exactly those constants. Use it for
//!   code that is generic over `NorFlash` and takes sector or word sizes from the constants.
//!
//! [`Partition`] shows a sector-aligned window of any `NorFlash` as a flash of its own,
//! addressed from 0, with bounds enforced. It borrows the flash through a [`RefCell`], so
//! the several partitions of one device layout can be open at the same time.
//! embedded-storage has no such type. embassy-embedded-hal does, but it is not a dependency.

use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt;
use core::ops::Range;

use embedded_storage::nor_flash::{
    check_erase, check_read, check_write, ErrorType, NorFlash, NorFlashError, NorFlashErrorKind,
    ReadNorFlash,
};

/// The shape of a simulated flash, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Total size: a nonzero whole number of sectors, below 4 GiB so end offsets fit `u32`.
    pub capacity: usize,
    /// Sector size, the smallest erasable unit: a power of two, at least `write_size`.
    pub erase_size: usize,
    /// Write-word size, the smallest programmable unit: a power of two.
    pub write_size: usize,
}

impl Geometry {
    /// Checks the rules stated on the fields.
    pub fn validate(&self) -> Result<(), GeometryError> {
        let sizes = [
            (Dimension::Capacity, self.capacity),
            (Dimension::EraseSize, self.erase_size),
            (Dimension::WriteSize, self.write_size),
        ];
        if let Some((dimension, _)) = sizes.iter().find(|(_, size)| *size == 0) {
            return Err(GeometryError::Zero(*dimension));
        }
        if !self.erase_size.is_power_of_two() {
            return Err(GeometryError::NotPowerOfTwo(Dimension::EraseSize));
        }
        if !self.write_size.is_power_of_two() {
            return Err(GeometryError::NotPowerOfTwo(Dimension::WriteSize));
        }
        // Both are powers of two, so "not smaller" also means the sector is whole words.
        if self.erase_size < self.write_size {
            return Err(GeometryError::EraseSmallerThanWrite);
        }
        if !self.capacity.is_multiple_of(self.erase_size) {
            return Err(GeometryError::CapacityNotSectorMultiple);
        }
        // The traits address with `u32` and `erase` takes an exclusive `to`, so the capacity
        // itself must be a `u32`.
        if u32::try_from(self.capacity).is_err() {
            return Err(GeometryError::CapacityTooLarge);
        }
        Ok(())
    }

    /// How many sectors the flash has.
    #[must_use]
    pub fn sectors(&self) -> usize {
        self.capacity / self.erase_size
    }
}

/// Which size of a [`Geometry`] an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dimension {
    /// [`Geometry::capacity`].
    Capacity,
    /// [`Geometry::erase_size`].
    EraseSize,
    /// [`Geometry::write_size`].
    WriteSize,
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dimension::Capacity => "capacity",
            Dimension::EraseSize => "erase size",
            Dimension::WriteSize => "write size",
        })
    }
}

/// Why a simulated flash could not be built.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeometryError {
    /// A size is zero.
    Zero(Dimension),
    /// The erase or write size is not a power of two.
    NotPowerOfTwo(Dimension),
    /// The erase size is smaller than the write size, so a word would straddle sectors.
    EraseSmallerThanWrite,
    /// The capacity is not a whole number of sectors.
    CapacityNotSectorMultiple,
    /// The capacity does not fit the `u32` offsets of the flash traits.
    CapacityTooLarge,
    /// The memory to simulate the flash could not be allocated.
    OutOfMemory,
    /// An image given to [`SimFlash::from_image`] is not exactly the capacity long.
    ImageLength {
        /// The capacity of the geometry.
        expected: usize,
        /// The length of the image.
        actual: usize,
    },
    /// The flash given to [`Fixed::wrap`] has a geometry other than the const parameters.
    ConstMismatch,
}

impl fmt::Display for GeometryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GeometryError::Zero(d) => write!(f, "flash {d} is zero"),
            GeometryError::NotPowerOfTwo(d) => write!(f, "flash {d} is not a power of two"),
            GeometryError::EraseSmallerThanWrite => {
                f.write_str("flash erase size is smaller than its write size")
            }
            GeometryError::CapacityNotSectorMultiple => {
                f.write_str("flash capacity is not a whole number of sectors")
            }
            GeometryError::CapacityTooLarge => f.write_str("flash capacity exceeds u32 offsets"),
            GeometryError::OutOfMemory => f.write_str("no memory to simulate the flash"),
            GeometryError::ImageLength { expected, actual } => {
                write!(
                    f,
                    "flash image is {actual} bytes, the flash holds {expected}"
                )
            }
            GeometryError::ConstMismatch => {
                f.write_str("flash geometry differs from the const write and erase sizes")
            }
        }
    }
}

/// Why a simulated flash operation failed.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlashError {
    /// The offset or length is not a multiple of the write size (erase size for erases).
    NotAligned {
        /// Start of the rejected range.
        offset: u32,
        /// Length of the rejected range.
        len: usize,
    },
    /// The range runs past the end of the flash, or an erase ends before it starts.
    OutOfBounds {
        /// Start of the rejected range.
        offset: u32,
        /// Length of the rejected range; 0 for an erase that ends before it starts.
        len: usize,
    },
    /// The word at `offset` was written since its last erase; the whole write was refused.
    WriteOverProgrammed {
        /// Start of the first already-written word in the range.
        offset: u32,
    },
    /// The simulated power is off: a fault was injected and not yet restored.
    PowerLost,
}

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            FlashError::NotAligned { .. } => NorFlashErrorKind::NotAligned,
            FlashError::OutOfBounds { .. } => NorFlashErrorKind::OutOfBounds,
            FlashError::WriteOverProgrammed { .. } | FlashError::PowerLost => {
                NorFlashErrorKind::Other
            }
        }
    }
}

impl fmt::Display for FlashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlashError::NotAligned { offset, len } => {
                write!(
                    f,
                    "flash access of {len} bytes at {offset:#x} is not aligned"
                )
            }
            FlashError::OutOfBounds { offset, len } => {
                write!(
                    f,
                    "flash access of {len} bytes at {offset:#x} is out of bounds"
                )
            }
            FlashError::WriteOverProgrammed { offset } => {
                write!(
                    f,
                    "flash word at {offset:#x} was written without an erase since"
                )
            }
            FlashError::PowerLost => f.write_str("flash lost power"),
        }
    }
}

/// One operation that reached the simulated flash, as recorded in its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A write of `len` bytes at `offset`, as requested, even if power failed during it.
    Write {
        /// Start of the write.
        offset: u32,
        /// Requested length in bytes.
        len: usize,
    },
    /// An erase of `from..to`, as requested, even if power failed during it.
    Erase {
        /// Start of the erase.
        from: u32,
        /// End of the erase, exclusive.
        to: u32,
    },
    /// Power failed during the operation logged just before.
    PowerLost,
}

/// What has been done to a simulated flash since it was built.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Writes that reached the flash, including one interrupted by a power cut.
    pub writes: u64,
    /// Erases that reached the flash, including one interrupted by a power cut.
    pub erases: u64,
    /// Bytes actually programmed; an interrupted write counts only its programmed part.
    pub bytes_written: u64,
    /// Per sector, how many times it was erased, wholly or in part: its wear.
    pub sector_erases: Vec<u32>,
}

/// Whether and when the simulated power fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Power {
    On,
    /// On while `remaining` more counted operations succeed; the one after them is cut.
    CutAfter {
        remaining: u32,
        counted: Counted,
    },
    Off,
}

/// Which operations count towards a scheduled power cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Counted {
    Writes,
    WritesAndErases,
}

/// A NOR flash held in RAM with runtime [`Geometry`], strict checks and fault injection.
#[derive(Clone, Debug)]
pub struct SimFlash {
    geometry: Geometry,
    data: Vec<u8>,
    /// One flag per write-word: written since its last erase. Kept apart from `data` because
    /// a word written with `0xFF` looks erased but must still not be written again.
    programmed: Vec<bool>,
    power: Power,
    stats: Stats,
    log: Vec<Op>,
    logging: bool,
}

impl SimFlash {
    /// An erased flash of the given geometry.
    pub fn new(geometry: Geometry) -> Result<Self, GeometryError> {
        geometry.validate()?;
        let data = filled(geometry.capacity, 0xFF)?;
        Self::with_data(geometry, data)
    }

    /// A flash holding `image`, which must be exactly `geometry.capacity` bytes long.
    ///
    /// Words that are all `0xFF` count as erased and every other word as written.
    pub fn from_image(geometry: Geometry, image: &[u8]) -> Result<Self, GeometryError> {
        geometry.validate()?;
        if image.len() != geometry.capacity {
            return Err(GeometryError::ImageLength {
                expected: geometry.capacity,
                actual: image.len(),
            });
        }
        let mut data = Vec::new();
        data.try_reserve_exact(image.len())
            .map_err(|_| GeometryError::OutOfMemory)?;
        data.extend_from_slice(image);
        Self::with_data(geometry, data)
    }

    fn with_data(geometry: Geometry, data: Vec<u8>) -> Result<Self, GeometryError> {
        let mut programmed = filled(geometry.capacity / geometry.write_size, false)?;
        for (flag, word) in programmed
            .iter_mut()
            .zip(data.chunks_exact(geometry.write_size))
        {
            *flag = word.iter().any(|&b| b != 0xFF);
        }
        Ok(SimFlash {
            geometry,
            data,
            programmed,
            power: Power::On,
            stats: Stats {
                sector_erases: filled(geometry.sectors(), 0)?,
                ..Stats::default()
            },
            log: Vec::new(),
            logging: true,
        })
    }

    /// The geometry the flash was built with.
    #[must_use]
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The whole contents, readable even while the power is off.
    #[must_use]
    pub fn contents(&self) -> &[u8] {
        &self.data
    }

    /// Lets `n` more writes succeed, then cuts power during the next one; erases don't count.
    ///
    /// Replaces any cut already scheduled.
    pub fn cut_power_after_writes(&mut self, n: u32) {
        self.power = Power::CutAfter {
            remaining: n,
            counted: Counted::Writes,
        };
    }

    /// Lets `n` more writes or erases succeed, then cuts power during the next one.
    ///
    /// Replaces any cut already scheduled. Reads don't count: they change nothing.
    pub fn cut_power_after_ops(&mut self, n: u32) {
        self.power = Power::CutAfter {
            remaining: n,
            counted: Counted::WritesAndErases,
        };
    }

    /// Turns the power back on and cancels any scheduled cut.
    pub fn restore_power(&mut self) {
        self.power = Power::On;
    }

    /// Whether operations can run: false from a power cut until [`SimFlash::restore_power`].
    #[must_use]
    pub fn is_powered(&self) -> bool {
        self.power != Power::Off
    }

    /// Counters of writes, erases, programmed bytes and wear since the flash was built.
    #[must_use]
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Returns the operations logged so far, oldest first, and empties the log.
    pub fn take_log(&mut self) -> Vec<Op> {
        core::mem::take(&mut self.log)
    }

    /// Turns the log on (the default) or off, so that a long-running device doesn't grow it
    /// without bound.
    pub fn set_logging(&mut self, on: bool) {
        self.logging = on;
    }

    fn record(&mut self, op: Op) {
        if self.logging {
            self.log.push(op);
        }
    }

    fn ensure_powered(&self) -> Result<(), FlashError> {
        if self.is_powered() {
            Ok(())
        } else {
            Err(FlashError::PowerLost)
        }
    }

    /// Checks `offset..offset + len` against the bounds, then against `align`, in the order
    /// embedded-storage's helpers use; returns the start as an index.
    fn check_range(&self, offset: u32, len: usize, align: usize) -> Result<usize, FlashError> {
        let start = offset as usize;
        if start > self.data.len() || len > self.data.len() - start {
            return Err(FlashError::OutOfBounds { offset, len });
        }
        if !start.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(FlashError::NotAligned { offset, len });
        }
        Ok(start)
    }

    /// Counts one operation that reached the flash; returns whether power fails during it.
    fn power_fails_during(&mut self, is_write: bool) -> bool {
        if let Power::CutAfter { remaining, counted } = self.power {
            if is_write || counted == Counted::WritesAndErases {
                if remaining == 0 {
                    self.power = Power::Off;
                    return true;
                }
                self.power = Power::CutAfter {
                    remaining: remaining - 1,
                    counted,
                };
            }
        }
        false
    }

    /// Sets `start..start + len` to `0xFF` and marks the words wholly inside it erased.
    fn erase_bytes(&mut self, start: usize, len: usize) {
        let end = start + len;
        self.data[start..end].fill(0xFF);
        let ws = self.geometry.write_size;
        // A word only partly inside stays written: it is not erased, so it can't be written.
        self.programmed[start.div_ceil(ws)..end / ws].fill(false);
    }
}

/// A vector of `len` copies of `value`, or `OutOfMemory` instead of an allocation panic.
fn filled<T: Clone>(len: usize, value: T) -> Result<Vec<T>, GeometryError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| GeometryError::OutOfMemory)?;
    v.resize(len, value);
    Ok(v)
}

impl ErrorType for SimFlash {
    type Error = FlashError;
}

impl ReadNorFlash for SimFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        self.ensure_powered()?;
        let start = self.check_range(offset, bytes.len(), 1)?;
        bytes.copy_from_slice(&self.data[start..start + bytes.len()]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.data.len()
    }
}

/// The constants are 1, the weakest promise; the runtime geometry is checked on every call
/// (see the module documentation).
impl NorFlash for SimFlash {
    const WRITE_SIZE: usize = 1;
    const ERASE_SIZE: usize = 1;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        self.ensure_powered()?;
        if from > to {
            return Err(FlashError::OutOfBounds {
                offset: from,
                len: 0,
            });
        }
        let es = self.geometry.erase_size;
        let start = self.check_range(from, (to - from) as usize, es)?;
        let end = to as usize;
        if start == end {
            return Ok(());
        }
        let interrupted = self.power_fails_during(false);
        let first_sector = start / es;
        let sectors = (end - start) / es;
        // Erasing runs sector by sector; a cut stops it halfway through the middle one.
        let whole = if interrupted { sectors / 2 } else { sectors };
        self.erase_bytes(start, whole * es);
        let touched = if interrupted {
            self.erase_bytes(start + whole * es, es / 2);
            whole + 1
        } else {
            whole
        };
        for wear in &mut self.stats.sector_erases[first_sector..first_sector + touched] {
            *wear = wear.saturating_add(1);
        }
        self.stats.erases += 1;
        self.record(Op::Erase { from, to });
        if interrupted {
            self.record(Op::PowerLost);
            return Err(FlashError::PowerLost);
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        self.ensure_powered()?;
        let ws = self.geometry.write_size;
        let start = self.check_range(offset, bytes.len(), ws)?;
        if bytes.is_empty() {
            return Ok(());
        }
        let first_word = start / ws;
        let words = bytes.len() / ws;
        // Refuse before touching anything, so a refused write leaves no trace.
        if let Some(i) = self.programmed[first_word..first_word + words]
            .iter()
            .position(|&p| p)
        {
            // Below the capacity, which `Geometry::validate` keeps within `u32`.
            return Err(FlashError::WriteOverProgrammed {
                offset: (start + i * ws) as u32,
            });
        }
        let interrupted = self.power_fails_during(true);
        let done_words = if interrupted { words / 2 } else { words };
        let done = done_words * ws;
        // Programming can only pull bits to 0: the new value is old AND written.
        for (cell, byte) in self.data[start..start + done].iter_mut().zip(bytes) {
            *cell &= byte;
        }
        self.programmed[first_word..first_word + done_words].fill(true);
        self.stats.writes += 1;
        self.stats.bytes_written += done as u64;
        self.record(Op::Write {
            offset,
            len: bytes.len(),
        });
        if interrupted {
            self.record(Op::PowerLost);
            return Err(FlashError::PowerLost);
        }
        Ok(())
    }
}

/// A [`SimFlash`] whose write and erase sizes are also const parameters, so the `NorFlash`
/// constants are exact for code that sizes its accesses from them.
#[derive(Clone, Debug)]
pub struct Fixed<const WRITE: usize, const ERASE: usize> {
    sim: SimFlash,
}

impl<const WRITE: usize, const ERASE: usize> Fixed<WRITE, ERASE> {
    /// An erased flash of `capacity` bytes with `ERASE`-byte sectors and `WRITE`-byte words.
    pub fn new(capacity: usize) -> Result<Self, GeometryError> {
        let sim = SimFlash::new(Geometry {
            capacity,
            erase_size: ERASE,
            write_size: WRITE,
        })?;
        Ok(Fixed { sim })
    }

    /// Wraps `sim`, whose write and erase sizes must equal `WRITE` and `ERASE`.
    pub fn wrap(sim: SimFlash) -> Result<Self, GeometryError> {
        let g = sim.geometry();
        if g.write_size != WRITE || g.erase_size != ERASE {
            return Err(GeometryError::ConstMismatch);
        }
        Ok(Fixed { sim })
    }

    /// The simulated flash, for its contents, stats and log.
    #[must_use]
    pub fn sim(&self) -> &SimFlash {
        &self.sim
    }

    /// The simulated flash, for fault injection.
    pub fn sim_mut(&mut self) -> &mut SimFlash {
        &mut self.sim
    }

    /// Unwraps the simulated flash.
    #[must_use]
    pub fn into_sim(self) -> SimFlash {
        self.sim
    }
}

impl<const WRITE: usize, const ERASE: usize> ErrorType for Fixed<WRITE, ERASE> {
    type Error = FlashError;
}

impl<const WRITE: usize, const ERASE: usize> ReadNorFlash for Fixed<WRITE, ERASE> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        self.sim.read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.sim.capacity()
    }
}

impl<const WRITE: usize, const ERASE: usize> NorFlash for Fixed<WRITE, ERASE> {
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = ERASE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        self.sim.erase(from, to)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        self.sim.write(offset, bytes)
    }
}

/// Why an operation on a [`Partition`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionError<E> {
    /// The range is not aligned to the flash's `WRITE_SIZE` or `ERASE_SIZE` constant.
    NotAligned,
    /// The range runs past the end of the partition, or the partition past the flash.
    OutOfBounds,
    /// The shared flash was already borrowed by the caller during the call.
    Busy,
    /// The underlying flash refused the rebased operation.
    Flash(E),
}

impl<E> PartitionError<E> {
    /// Converts the result of embedded-storage's `check_*` helpers, which report only
    /// `NotAligned` or `OutOfBounds`.
    fn from_check(kind: NorFlashErrorKind) -> Self {
        match kind {
            NorFlashErrorKind::NotAligned => PartitionError::NotAligned,
            _ => PartitionError::OutOfBounds,
        }
    }
}

impl<E: NorFlashError> NorFlashError for PartitionError<E> {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            PartitionError::NotAligned => NorFlashErrorKind::NotAligned,
            PartitionError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            PartitionError::Busy => NorFlashErrorKind::Other,
            PartitionError::Flash(e) => e.kind(),
        }
    }
}

impl<E: fmt::Display> fmt::Display for PartitionError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionError::NotAligned => f.write_str("partition access is not aligned"),
            PartitionError::OutOfBounds => f.write_str("partition access is out of bounds"),
            PartitionError::Busy => f.write_str("the flash under the partition is in use"),
            PartitionError::Flash(e) => write!(f, "{e}"),
        }
    }
}

/// A window of a shared flash, addressed from 0, that is a `NorFlash` of its own.
///
/// Accesses are checked against the window and the constants of `F`, then rebased onto the
/// flash, which applies its own checks too.
#[derive(Debug)]
pub struct Partition<'a, F> {
    flash: &'a RefCell<F>,
    range: Range<u32>,
}

impl<'a, F: NorFlash> Partition<'a, F> {
    /// The window `offset..offset + len` of `flash`; both must be multiples of `F::ERASE_SIZE`.
    pub fn new(
        flash: &'a RefCell<F>,
        offset: u32,
        len: u32,
    ) -> Result<Self, PartitionError<F::Error>> {
        let capacity = flash
            .try_borrow()
            .map_err(|_| PartitionError::Busy)?
            .capacity();
        let end = offset.checked_add(len).ok_or(PartitionError::OutOfBounds)?;
        if end as usize > capacity {
            return Err(PartitionError::OutOfBounds);
        }
        if !(offset as usize).is_multiple_of(F::ERASE_SIZE)
            || !(len as usize).is_multiple_of(F::ERASE_SIZE)
        {
            return Err(PartitionError::NotAligned);
        }
        Ok(Partition {
            flash,
            range: offset..end,
        })
    }

    /// Where the window lies on the underlying flash.
    #[must_use]
    pub fn range(&self) -> Range<u32> {
        self.range.clone()
    }

    /// Runs `op` on the borrowed flash and wraps its error.
    fn with_flash(
        &self,
        op: impl FnOnce(&mut F) -> Result<(), F::Error>,
    ) -> Result<(), PartitionError<F::Error>> {
        let mut flash = self
            .flash
            .try_borrow_mut()
            .map_err(|_| PartitionError::Busy)?;
        op(&mut flash).map_err(PartitionError::Flash)
    }
}

impl<F: NorFlash> ErrorType for Partition<'_, F> {
    type Error = PartitionError<F::Error>;
}

impl<F: NorFlash> ReadNorFlash for Partition<'_, F> {
    const READ_SIZE: usize = F::READ_SIZE;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        check_read(&*self, offset, bytes.len()).map_err(PartitionError::from_check)?;
        // In bounds, so the sum stays within the partition and cannot overflow.
        let at = self.range.start + offset;
        self.with_flash(|f| f.read(at, bytes))
    }

    fn capacity(&self) -> usize {
        (self.range.end - self.range.start) as usize
    }
}

impl<F: NorFlash> NorFlash for Partition<'_, F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        check_erase(&*self, from, to).map_err(PartitionError::from_check)?;
        let base = self.range.start;
        self.with_flash(|f| f.erase(base + from, base + to))
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        check_write(&*self, offset, bytes.len()).map_err(PartitionError::from_check)?;
        let at = self.range.start + offset;
        self.with_flash(|f| f.write(at, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    const SECTOR: usize = 256;
    const WORD: usize = 4;

    fn geometry(sectors: usize) -> Geometry {
        Geometry {
            capacity: sectors * SECTOR,
            erase_size: SECTOR,
            write_size: WORD,
        }
    }

    fn sim(sectors: usize) -> SimFlash {
        SimFlash::new(geometry(sectors)).unwrap()
    }

    fn read_vec<F: ReadNorFlash>(flash: &mut F, offset: u32, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        flash.read(offset, &mut buf).unwrap();
        buf
    }

    #[test]
    fn geometry_validation() {
        let ok = geometry(4);
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.sectors(), 4);
        let with = |capacity, erase_size, write_size| {
            SimFlash::new(Geometry {
                capacity,
                erase_size,
                write_size,
            })
            .map(|_| ())
        };
        assert_eq!(
            with(0, 256, 4),
            Err(GeometryError::Zero(Dimension::Capacity))
        );
        assert_eq!(
            with(1024, 0, 4),
            Err(GeometryError::Zero(Dimension::EraseSize))
        );
        assert_eq!(
            with(1024, 256, 0),
            Err(GeometryError::Zero(Dimension::WriteSize))
        );
        assert_eq!(
            with(1200, 300, 4),
            Err(GeometryError::NotPowerOfTwo(Dimension::EraseSize))
        );
        assert_eq!(
            with(1024, 256, 6),
            Err(GeometryError::NotPowerOfTwo(Dimension::WriteSize))
        );
        assert_eq!(with(1024, 4, 8), Err(GeometryError::EraseSmallerThanWrite));
        assert_eq!(
            with(1000, 256, 4),
            Err(GeometryError::CapacityNotSectorMultiple)
        );
        // Capacity need not be a power of two, only whole sectors; sizes may be equal.
        assert_eq!(with(3 * 256, 256, 256), Ok(()));
        #[cfg(target_pointer_width = "64")]
        assert_eq!(with(1 << 32, 4096, 4), Err(GeometryError::CapacityTooLarge));

        assert_eq!(
            SimFlash::from_image(ok, &[0xFF; 10]).map(|_| ()),
            Err(GeometryError::ImageLength {
                expected: 1024,
                actual: 10
            })
        );
        assert_eq!(
            Fixed::<4, 512>::wrap(sim(4)).map(|_| ()),
            Err(GeometryError::ConstMismatch)
        );
        assert_eq!(
            Fixed::<8, 4>::new(64).map(|_| ()),
            Err(GeometryError::EraseSmallerThanWrite)
        );
    }

    #[test]
    fn erase_write_read_cycle() {
        let mut f = sim(4);
        assert_eq!(f.capacity(), 1024);
        assert!(f.contents().iter().all(|&b| b == 0xFF));
        assert_eq!(read_vec(&mut f, 0, 8), [0xFF; 8]);

        f.write(256, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(
            read_vec(&mut f, 254, 12),
            [0xFF, 0xFF, 1, 2, 3, 4, 5, 6, 7, 8, 0xFF, 0xFF]
        );
        // Reads need no alignment.
        assert_eq!(read_vec(&mut f, 257, 1), [2]);

        f.erase(256, 512).unwrap();
        assert!(f.contents().iter().all(|&b| b == 0xFF));
        f.write(256, &[9; 8]).unwrap();
        assert_eq!(read_vec(&mut f, 256, 8), [9; 8]);

        // An image round-trips, and its written words stay written.
        let copy = SimFlash::from_image(f.geometry(), f.contents()).unwrap();
        assert_eq!(copy.contents(), f.contents());
        let mut copy = copy;
        assert_eq!(
            copy.write(256, &[0; 4]),
            Err(FlashError::WriteOverProgrammed { offset: 256 })
        );
        copy.write(264, &[0; 4]).unwrap();
    }

    #[test]
    fn writing_over_programmed_word_is_rejected() {
        let mut f = sim(2);
        f.write(8, &[0xAA; 4]).unwrap();
        assert_eq!(
            f.write(8, &[0xAA; 4]),
            Err(FlashError::WriteOverProgrammed { offset: 8 })
        );
        // A write that reaches a written word is refused whole: its erased words stay erased.
        assert_eq!(
            f.write(0, &[0; 12]),
            Err(FlashError::WriteOverProgrammed { offset: 8 })
        );
        assert_eq!(read_vec(&mut f, 0, 8), [0xFF; 8]);
        assert_eq!(f.stats().writes, 1);
        assert_eq!(
            FlashError::WriteOverProgrammed { offset: 8 }.kind(),
            NorFlashErrorKind::Other
        );
    }

    #[test]
    fn writes_only_clear_bits_and_only_erase_sets_them() {
        let mut f = sim(1);
        f.write(0, &[0xA5, 0x0F, 0xFF, 0x00]).unwrap();
        assert_eq!(read_vec(&mut f, 0, 4), [0xA5, 0x0F, 0xFF, 0x00]);

        // A word written with all ones still reads erased, yet it is spent until erased.
        f.write(4, &[0xFF; 4]).unwrap();
        assert_eq!(read_vec(&mut f, 4, 4), [0xFF; 4]);
        assert_eq!(
            f.write(4, &[0x00; 4]),
            Err(FlashError::WriteOverProgrammed { offset: 4 })
        );
        // Nor can bits be raised again without an erase.
        assert_eq!(
            f.write(0, &[0xFF; 4]),
            Err(FlashError::WriteOverProgrammed { offset: 0 })
        );
        f.erase(0, 256).unwrap();
        f.write(0, &[0xFF, 0xF0, 0x0F, 0x00]).unwrap();
        f.write(4, &[0x00; 4]).unwrap();
        assert_eq!(read_vec(&mut f, 0, 8), [0xFF, 0xF0, 0x0F, 0x00, 0, 0, 0, 0]);
    }

    #[test]
    fn misaligned_and_out_of_bounds_are_rejected_with_their_kinds() {
        let mut f = sim(4);
        let kind = |r: Result<(), FlashError>| r.unwrap_err().kind();
        assert_eq!(kind(f.write(2, &[0; 4])), NorFlashErrorKind::NotAligned);
        assert_eq!(kind(f.write(0, &[0; 3])), NorFlashErrorKind::NotAligned);
        assert_eq!(kind(f.erase(128, 256)), NorFlashErrorKind::NotAligned);
        assert_eq!(kind(f.erase(0, 100)), NorFlashErrorKind::NotAligned);
        assert_eq!(
            f.write(1020, &[0; 8]),
            Err(FlashError::OutOfBounds {
                offset: 1020,
                len: 8
            })
        );
        assert_eq!(
            kind(f.write(u32::MAX, &[0; 4])),
            NorFlashErrorKind::OutOfBounds
        );
        assert_eq!(
            kind(f.read(1023, &mut [0; 2])),
            NorFlashErrorKind::OutOfBounds
        );
        assert_eq!(kind(f.erase(768, 1280)), NorFlashErrorKind::OutOfBounds);
        assert_eq!(
            f.erase(512, 256),
            Err(FlashError::OutOfBounds {
                offset: 512,
                len: 0
            })
        );
        // Nothing rejected reached the flash.
        let untouched = Stats {
            sector_erases: vec![0; 4],
            ..Stats::default()
        };
        assert_eq!(f.stats(), &untouched);
        assert!(f.take_log().is_empty());
        assert!(f.contents().iter().all(|&b| b == 0xFF));
    }

    #[test]
    fn empty_operations_are_accepted_and_do_nothing() {
        let mut f = sim(2);
        f.cut_power_after_ops(0);
        f.write(4, &[]).unwrap();
        f.erase(256, 256).unwrap();
        f.read(512, &mut []).unwrap();
        assert!(f.is_powered());
        assert!(f.take_log().is_empty());
        assert_eq!(f.stats().writes + f.stats().erases, 0);
    }

    #[test]
    fn power_cut_during_write_leaves_half_the_words_and_stops_everything() {
        let mut f = sim(4);
        f.cut_power_after_writes(1);
        f.write(0, &[1; 4]).unwrap();
        // Erases don't count towards a write cut.
        f.erase(256, 512).unwrap();
        assert_eq!(f.write(256, &[0x11; 32]), Err(FlashError::PowerLost));
        assert!(!f.is_powered());
        // Eight words requested, the first four programmed, the rest untouched.
        assert_eq!(&f.contents()[256..272], &[0x11; 16]);
        assert_eq!(&f.contents()[272..288], &[0xFF; 16]);

        let mut buf = [0; 4];
        assert_eq!(f.read(0, &mut buf), Err(FlashError::PowerLost));
        assert_eq!(f.write(512, &[0; 4]), Err(FlashError::PowerLost));
        assert_eq!(f.erase(512, 768), Err(FlashError::PowerLost));
        // Argument errors are not reported while the power is off: the part is dead.
        assert_eq!(f.write(1, &[0; 1]), Err(FlashError::PowerLost));

        f.restore_power();
        assert!(f.is_powered());
        assert_eq!(read_vec(&mut f, 0, 4), [1; 4]);
        assert_eq!(
            f.write(256, &[0x22; 32]),
            Err(FlashError::WriteOverProgrammed { offset: 256 })
        );
        f.write(272, &[0x22; 16]).unwrap();
        assert_eq!(f.stats().writes, 3);
        assert_eq!(f.stats().bytes_written, 4 + 16 + 16);
        // After a restore no cut is pending any more.
        for i in 0..8 {
            f.write(512 + i * 4, &[0; 4]).unwrap();
        }
    }

    #[test]
    fn power_cut_on_a_single_word_write_programs_nothing() {
        let mut f = sim(1);
        f.cut_power_after_writes(0);
        assert_eq!(f.write(0, &[0; 4]), Err(FlashError::PowerLost));
        assert_eq!(&f.contents()[..4], &[0xFF; 4]);
        f.restore_power();
        f.write(0, &[0; 4]).unwrap();
    }

    #[test]
    fn power_cut_during_erase_leaves_a_half_erased_sector() {
        let mut f = Fixed::<4, 256>::new(1024).unwrap();
        f.write(0, &[0; 1024]).unwrap();
        f.sim_mut().cut_power_after_ops(1);
        f.write(1024 - 4, &[]).unwrap();
        f.erase(0, 256).unwrap();
        assert_eq!(f.erase(256, 512), Err(FlashError::PowerLost));
        let c = f.sim().contents();
        assert!(c[..384].iter().all(|&b| b == 0xFF));
        assert!(c[384..].iter().all(|&b| b == 0));
        assert_eq!(f.erase(256, 512), Err(FlashError::PowerLost));

        f.sim_mut().restore_power();
        // The erased half is writable again; the other half is not until a full erase.
        f.write(256, &[7; 128]).unwrap();
        assert_eq!(
            f.write(384, &[7; 4]),
            Err(FlashError::WriteOverProgrammed { offset: 384 })
        );

        // A multi-sector erase stops halfway through its middle sector.
        f.erase(0, 1024).unwrap();
        f.write(0, &[0; 1024]).unwrap();
        f.sim_mut().cut_power_after_ops(0);
        assert_eq!(f.erase(0, 1024), Err(FlashError::PowerLost));
        let c = f.sim().contents();
        assert!(c[..640].iter().all(|&b| b == 0xFF));
        assert!(c[640..].iter().all(|&b| b == 0));
        assert_eq!(f.sim().stats().sector_erases, [3, 3, 2, 1]);
    }

    #[test]
    fn stats_and_log_record_what_reached_the_flash() {
        let mut f = sim(4);
        f.write(0, &[0; 8]).unwrap();
        f.erase(0, 512).unwrap();
        f.erase(256, 768).unwrap();
        f.read(0, &mut [0; 4]).unwrap();
        let _ = f.write(2, &[0; 4]);
        f.cut_power_after_writes(0);
        let _ = f.write(16, &[0; 16]);

        let stats = f.stats();
        assert_eq!(stats.writes, 2);
        assert_eq!(stats.erases, 2);
        assert_eq!(stats.bytes_written, 8 + 8);
        assert_eq!(stats.sector_erases, [1, 2, 1, 0]);
        assert_eq!(
            f.take_log(),
            [
                Op::Write { offset: 0, len: 8 },
                Op::Erase { from: 0, to: 512 },
                Op::Erase { from: 256, to: 768 },
                Op::Write {
                    offset: 16,
                    len: 16
                },
                Op::PowerLost,
            ]
        );
        assert!(f.take_log().is_empty());

        f.restore_power();
        f.set_logging(false);
        f.erase(0, 256).unwrap();
        assert!(f.take_log().is_empty());
        assert_eq!(f.stats().erases, 3);
    }

    #[test]
    fn partitions_rebase_and_enforce_bounds() {
        let flash = RefCell::new(Fixed::<4, 256>::new(1024).unwrap());
        let mut a = Partition::new(&flash, 0, 256).unwrap();
        let mut b = Partition::new(&flash, 512, 512).unwrap();
        assert_eq!(b.range(), 512..1024);
        assert_eq!(b.capacity(), 512);
        assert_eq!(Partition::<Fixed<4, 256>>::ERASE_SIZE, 256);
        assert_eq!(Partition::<Fixed<4, 256>>::WRITE_SIZE, 4);

        b.write(0, &[0xB0; 8]).unwrap();
        a.write(0, &[0xA0; 8]).unwrap();
        assert_eq!(&flash.borrow().sim().contents()[512..520], &[0xB0; 8]);
        assert_eq!(read_vec(&mut b, 0, 8), [0xB0; 8]);
        assert_eq!(read_vec(&mut a, 0, 8), [0xA0; 8]);

        b.erase(0, 512).unwrap();
        assert_eq!(read_vec(&mut a, 0, 8), [0xA0; 8]);
        assert_eq!(flash.borrow().sim().stats().sector_erases, [0, 0, 1, 1]);

        // The window ends where the partition does, even though the flash goes on.
        assert_eq!(a.write(256, &[0; 4]), Err(PartitionError::OutOfBounds));
        assert_eq!(a.read(250, &mut [0; 8]), Err(PartitionError::OutOfBounds));
        assert_eq!(a.erase(0, 512), Err(PartitionError::OutOfBounds));
        assert_eq!(a.write(2, &[0; 4]), Err(PartitionError::NotAligned));
        assert_eq!(
            a.erase(0, 128).unwrap_err().kind(),
            NorFlashErrorKind::NotAligned
        );
        // The flash's own refusals come through with their kinds.
        let err = a.write(0, &[0; 4]).unwrap_err();
        assert_eq!(
            err,
            PartitionError::Flash(FlashError::WriteOverProgrammed { offset: 0 })
        );
        assert_eq!(err.kind(), NorFlashErrorKind::Other);

        {
            let _held = flash.borrow();
            assert_eq!(a.read(0, &mut [0; 4]), Err(PartitionError::Busy));
        }

        assert_eq!(
            Partition::new(&flash, 768, 512).map(|_| ()),
            Err(PartitionError::OutOfBounds)
        );
        assert_eq!(
            Partition::new(&flash, u32::MAX - 255, 512).map(|_| ()),
            Err(PartitionError::OutOfBounds)
        );
        assert_eq!(
            Partition::new(&flash, 128, 256).map(|_| ()),
            Err(PartitionError::NotAligned)
        );
    }

    #[test]
    fn partition_of_a_runtime_geometry_flash_relies_on_its_checks() {
        let flash = RefCell::new(sim(4));
        // ERASE_SIZE is 1 here, so the window may start anywhere; the flash still checks.
        let mut p = Partition::new(&flash, 256, 512).unwrap();
        assert_eq!(
            p.erase(0, 128),
            Err(PartitionError::Flash(FlashError::NotAligned {
                offset: 256,
                len: 128
            }))
        );
        p.write(4, &[3; 4]).unwrap();
        flash.borrow_mut().cut_power_after_ops(0);
        assert_eq!(
            p.erase(0, 256),
            Err(PartitionError::Flash(FlashError::PowerLost))
        );
        assert_eq!(
            flash.borrow_mut().take_log(),
            [
                Op::Write {
                    offset: 260,
                    len: 4
                },
                Op::Erase { from: 256, to: 512 },
                Op::PowerLost,
            ]
        );
    }

    #[test]
    fn fixed_exposes_exact_constants() {
        fn sector_count<F: NorFlash>(flash: &F) -> usize {
            flash.capacity() / F::ERASE_SIZE
        }
        let f = Fixed::<8, 4096>::new(4 * 4096).unwrap();
        assert_eq!(sector_count(&f), 4);
        assert_eq!(sector_count(&f.clone().into_sim()), 4 * 4096);
        let wrapped = Fixed::<4, 256>::wrap(sim(2)).unwrap();
        assert_eq!(wrapped.sim().geometry(), geometry(2));
    }
}
