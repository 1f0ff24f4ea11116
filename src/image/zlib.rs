//! zlib (RFC 1950: header, deflate data, Adler-32) in and out, one-shot and streaming.
//!
//! Contract: [`inflate`] and [`Inflater`] never produce more than their `max_output` bytes;
//! the cap is checked as output is produced, so a zip bomb is refused after at most that many
//! bytes, and the output `Vec` never grows past what the cap allows. Memory besides the
//! output is fixed (one 32 KiB window and the decoder tables) whatever the input. A stream is
//! accepted only with a valid header, valid data, a matching Adler-32 and nothing after it.
//! [`compress`] and [`Deflater`] write zlib streams that any zlib reader accepts; they cannot
//! fail.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use miniz_oxide::deflate::core::{
    compress_to_output, create_comp_flags_from_zip_params, CompressorOxide, TDEFLFlush,
};
use miniz_oxide::inflate::core::inflate_flags::{
    TINFL_FLAG_COMPUTE_ADLER32, TINFL_FLAG_HAS_MORE_INPUT, TINFL_FLAG_PARSE_ZLIB_HEADER,
};
use miniz_oxide::inflate::core::{decompress, DecompressorOxide, TINFL_LZ_DICT_SIZE};
use miniz_oxide::inflate::TINFLStatus;

/// Compresses `data` into one zlib stream at `level` (0 stores, 1 is fastest, 6 is zlib's
/// default, 9 and above are smallest; above 10 counts as 10).
#[must_use]
pub fn compress(data: &[u8], level: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    let mut deflater = Deflater::new(level);
    deflater.push(data, &mut out);
    deflater.finish(&mut out);
    out
}

/// Inflates one complete zlib stream, refusing to produce more than `max_output` bytes.
pub fn inflate(data: &[u8], max_output: usize) -> Result<Vec<u8>, InflateError> {
    // One allocation for the whole output, as large as this stream can possibly inflate to
    // and never past the cap (for an image: exactly its size). Growing in steps instead would
    // leave each outgrown buffer behind in wasm's linear memory, which never shrinks: a
    // 7 MiB image would take 14. If the reservation fails, the output grows as it comes.
    let mut out = Vec::new();
    let _ = out.try_reserve_exact(max_output.min(data.len().saturating_mul(DEFLATE_MAX_RATIO)));
    let mut inflater = Inflater::new(max_output);
    inflater.push(data, &mut out)?;
    inflater.finish()?;
    Ok(out)
}

/// The most bytes deflate data can expand to per byte: a 258-byte match in under 2 bits.
const DEFLATE_MAX_RATIO: usize = 1032;

/// Why zlib data did not inflate.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InflateError {
    /// The header, the deflate data or the Adler-32 checksum is wrong.
    Corrupt,
    /// The input ended before the stream did.
    Truncated,
    /// The stream inflates to more than the caller allows.
    TooLarge {
        /// The most output bytes allowed.
        limit: usize,
    },
    /// Bytes follow the end of the stream.
    TrailingBytes,
}

impl InflateError {
    /// A stable, machine-readable code for the JS API, e.g. `"zlib-too-large"`.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            InflateError::Corrupt => "zlib-corrupt",
            InflateError::Truncated => "zlib-truncated",
            InflateError::TooLarge { .. } => "zlib-too-large",
            InflateError::TrailingBytes => "zlib-trailing-bytes",
        }
    }
}

impl fmt::Display for InflateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InflateError::Corrupt => {
                f.write_str("the zlib data is corrupt (bad header, data or checksum)")
            }
            InflateError::Truncated => f.write_str("the zlib data ends before the stream does"),
            InflateError::TooLarge { limit } => {
                write!(f, "the zlib data inflates to more than {limit} bytes")
            }
            InflateError::TrailingBytes => f.write_str("unexpected bytes after the zlib stream"),
        }
    }
}

/// Where a streaming inflate stands after a [`Inflater::push`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InflateStatus {
    /// The stream has not ended; push more input.
    NeedsInput,
    /// The stream ended and its checksum matched.
    Done,
}

/// The decoder's sliding window: deflate back-references reach at most this far, so this
/// much output history bounds the memory needed for any input.
const WINDOW: usize = TINFL_LZ_DICT_SIZE;

/// Streaming zlib inflate with an output cap; input may arrive in pieces of any size.
pub struct Inflater {
    decoder: Box<DecompressorOxide>,
    /// Output history, used as a ring: miniz_oxide writes from `pos` towards the end and
    /// reads back-references through it, which needs a power-of-two length.
    window: Box<[u8]>,
    /// Where the next output lands in `window`; always below `WINDOW`.
    pos: usize,
    /// Bytes produced so far; never above `max_output`.
    total_out: usize,
    max_output: usize,
    phase: Phase,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    Done,
    Failed(InflateError),
}

impl Inflater {
    /// An inflater that refuses to produce more than `max_output` bytes in total.
    #[must_use]
    pub fn new(max_output: usize) -> Self {
        Inflater {
            decoder: Box::default(),
            window: vec![0; WINDOW].into_boxed_slice(),
            pos: 0,
            total_out: 0,
            max_output,
            phase: Phase::Running,
        }
    }

    /// Inflates the next piece of input, appending what it produces to `out`.
    ///
    /// Output produced before an error stays in `out`. After an error, every later call
    /// returns the same error. Once the stream is done, pushing more bytes is
    /// [`InflateError::TrailingBytes`]; pushing nothing is fine.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<InflateStatus, InflateError> {
        let result = match self.phase {
            Phase::Failed(e) => return Err(e),
            Phase::Done if input.is_empty() => return Ok(InflateStatus::Done),
            Phase::Done => Err(InflateError::TrailingBytes),
            Phase::Running => self.run(input, out),
        };
        match result {
            Ok(InflateStatus::Done) => self.phase = Phase::Done,
            Ok(InflateStatus::NeedsInput) => {}
            Err(e) => self.phase = Phase::Failed(e),
        }
        result
    }

    /// Ends the stream, returning the total bytes produced.
    ///
    /// [`InflateError::Truncated`] if the stream has not ended; an earlier error if there
    /// was one.
    pub fn finish(self) -> Result<u64, InflateError> {
        match self.phase {
            // usize is at most 64 bits on every target, so this widens.
            Phase::Done => Ok(self.total_out as u64),
            Phase::Running => Err(InflateError::Truncated),
            Phase::Failed(e) => Err(e),
        }
    }

    fn run(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<InflateStatus, InflateError> {
        // HAS_MORE_INPUT: running out of input means "wait", not "truncated"; `finish`
        // decides truncation. No NON_WRAPPING flag: `window` is a ring.
        const FLAGS: u32 =
            TINFL_FLAG_PARSE_ZLIB_HEADER | TINFL_FLAG_COMPUTE_ADLER32 | TINFL_FLAG_HAS_MORE_INPUT;
        loop {
            let (status, used, produced) =
                decompress(&mut self.decoder, input, &mut self.window, self.pos, FLAGS);
            input = input.get(used..).ok_or(InflateError::Corrupt)?;
            // Each call writes one run from `pos` without wrapping, so this slice exists.
            let end = self
                .pos
                .checked_add(produced)
                .ok_or(InflateError::Corrupt)?;
            let fresh = self
                .window
                .get(self.pos..end)
                .ok_or(InflateError::Corrupt)?;
            self.total_out = emit(fresh, self.total_out, self.max_output, out)?;
            self.pos = end % WINDOW;
            match status {
                TINFLStatus::Done if input.is_empty() => return Ok(InflateStatus::Done),
                TINFLStatus::Done => return Err(InflateError::TrailingBytes),
                TINFLStatus::NeedsMoreInput if input.is_empty() => {
                    return Ok(InflateStatus::NeedsInput)
                }
                // The window filled up, or the decoder stopped early: go round again. The
                // progress check guarantees the loop ends even if the decoder stalls.
                TINFLStatus::NeedsMoreInput | TINFLStatus::HasMoreOutput
                    if used > 0 || produced > 0 => {}
                _ => return Err(InflateError::Corrupt),
            }
        }
    }
}

/// Appends `fresh` to `out` unless that takes the total past `max_output`; returns the new
/// total.
///
/// Capacity grows geometrically for speed but never past what the cap still allows, so a
/// refused stream cannot make `out` allocate beyond its limit either.
fn emit(
    fresh: &[u8],
    total_out: usize,
    max_output: usize,
    out: &mut Vec<u8>,
) -> Result<usize, InflateError> {
    let budget = max_output.saturating_sub(total_out);
    if fresh.len() > budget {
        return Err(InflateError::TooLarge { limit: max_output });
    }
    if out.capacity().saturating_sub(out.len()) < fresh.len() {
        let grow = out.len().max(fresh.len()).min(budget);
        out.reserve_exact(grow);
    }
    out.extend_from_slice(fresh);
    Ok(total_out.saturating_add(fresh.len()))
}

impl fmt::Debug for Inflater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inflater")
            .field("total_out", &self.total_out)
            .field("max_output", &self.max_output)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

/// Streaming zlib deflate; input may arrive in pieces of any size.
pub struct Deflater {
    compressor: Box<CompressorOxide>,
}

impl Deflater {
    /// A deflater at `level`, with the same meaning as in [`compress`].
    #[must_use]
    pub fn new(level: u8) -> Self {
        // Positive window bits ask for the zlib header and Adler-32 trailer.
        let flags = create_comp_flags_from_zip_params(i32::from(level), 1, 0);
        Deflater {
            compressor: Box::new(CompressorOxide::new(flags)),
        }
    }

    /// Compresses the next piece of input, appending any finished output to `out`.
    ///
    /// The compressor holds back up to one block of output until later pushes or
    /// [`Deflater::finish`].
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        // With a sink that always accepts, miniz_oxide consumes all the input in one call;
        // its only failures (a refusing sink, use after finishing) cannot happen here, since
        // `finish` takes `self`.
        compress_to_output(&mut self.compressor, input, TDEFLFlush::None, |bytes| {
            out.extend_from_slice(bytes);
            true
        });
    }

    /// Ends the stream, appending the rest of the output and the Adler-32 trailer to `out`.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        // As in `push`: with an accepting sink, one Finish call writes the whole tail.
        compress_to_output(&mut self.compressor, &[], TDEFLFlush::Finish, |bytes| {
            out.extend_from_slice(bytes);
            true
        });
    }
}

impl fmt::Debug for Deflater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deflater").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    /// `zlib.compress(b"hello")` from Python's zlib (level 6), pinned.
    const HELLO_ZLIB: [u8; 13] = [
        0x78, 0x9c, 0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x06, 0x2c, 0x02, 0x15,
    ];

    fn xorshift_bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Keep the data partly compressible, as firmware is: small alphabet.
            out.push((state % 23) as u8);
        }
        out
    }

    fn inflate_in_pieces(data: &[u8], piece: usize, max: usize) -> Result<Vec<u8>, InflateError> {
        let mut inflater = Inflater::new(max);
        let mut out = Vec::new();
        for part in data.chunks(piece) {
            inflater.push(part, &mut out)?;
        }
        let total = inflater.finish()?;
        assert_eq!(total, out.len() as u64);
        Ok(out)
    }

    #[test]
    fn hello_matches_python_zlib() {
        assert_eq!(compress(b"hello", 6), HELLO_ZLIB);
        assert_eq!(inflate(&HELLO_ZLIB, 5).as_deref(), Ok(&b"hello"[..]));
    }

    #[test]
    fn round_trips_at_every_level() {
        let inputs = [
            xorshift_bytes(100_000, 0x2545_f491_4f6c_dd1d),
            vec![0u8; 200_000],
            Vec::new(),
            b"x".to_vec(),
        ];
        for data in &inputs {
            for level in [0, 1, 6, 9, 10, 200] {
                let packed = compress(data, level);
                assert_eq!(packed.first(), Some(&0x78), "deflate, 32 KiB window");
                assert_eq!(inflate(&packed, data.len()).as_ref(), Ok(data), "{level}");
            }
        }
        assert!(compress(&inputs[1], 6).len() < 1_000);
    }

    #[test]
    fn streaming_deflate_round_trips() {
        let data = xorshift_bytes(70_000, 7);
        for piece in [1, 7, 10 * 1024, 70_000] {
            let mut deflater = Deflater::new(6);
            let mut packed = Vec::new();
            for part in data.chunks(piece) {
                deflater.push(part, &mut packed);
            }
            deflater.finish(&mut packed);
            assert_eq!(inflate(&packed, data.len()), Ok(data.clone()), "{piece}");
        }
        let mut packed = Vec::new();
        Deflater::new(6).finish(&mut packed);
        assert_eq!(inflate(&packed, 0), Ok(Vec::new()));
    }

    #[test]
    fn streaming_inflate_in_any_pieces_equals_one_shot() {
        let data = xorshift_bytes(50_000, 99);
        let zeros = vec![0u8; 100_000];
        for input in [&data, &zeros] {
            let packed = compress(input, 6);
            let whole = inflate(&packed, input.len()).expect("one-shot");
            assert_eq!(&whole, input);
            for piece in [1, 7, 4096] {
                assert_eq!(
                    inflate_in_pieces(&packed, piece, input.len()),
                    Ok(whole.clone())
                );
            }
        }
    }

    #[test]
    fn corrupt_header_or_data_is_refused() {
        let data = xorshift_bytes(10_000, 3);
        let packed = compress(&data, 6);

        let mut bad_method = packed.clone();
        bad_method[0] = 0x79;
        assert_eq!(inflate(&bad_method, usize::MAX), Err(InflateError::Corrupt));

        let mut bad_fcheck = packed.clone();
        bad_fcheck[1] ^= 0x01;
        assert_eq!(inflate(&bad_fcheck, usize::MAX), Err(InflateError::Corrupt));

        // A flipped data bit either breaks the deflate structure or changes the output,
        // which the Adler-32 catches.
        for at in [2, packed.len() / 3, packed.len() / 2] {
            let mut flipped = packed.clone();
            flipped[at] ^= 0x10;
            assert_eq!(
                inflate(&flipped, usize::MAX),
                Err(InflateError::Corrupt),
                "{at}"
            );
        }
        // Anywhere else too, wrong bytes are never accepted; a flip that moves the
        // end-of-stream marker reads as truncation or as trailing bytes instead.
        for at in (0..packed.len()).step_by(37) {
            let mut flipped = packed.clone();
            flipped[at] ^= 0x10;
            let result = inflate(&flipped, usize::MAX);
            assert!(
                matches!(
                    result,
                    Err(InflateError::Corrupt
                        | InflateError::Truncated
                        | InflateError::TrailingBytes)
                ),
                "{at}: {result:?}"
            );
        }

        // A reserved block type (0b11) after the header.
        assert_eq!(
            inflate(&[0x78, 0x9c, 0x07], usize::MAX),
            Err(InflateError::Corrupt)
        );
    }

    #[test]
    fn wrong_adler_is_corrupt() {
        let mut packed = HELLO_ZLIB;
        packed[12] ^= 0xff;
        assert_eq!(inflate(&packed, 100), Err(InflateError::Corrupt));
        let mut packed = HELLO_ZLIB;
        packed[9] = packed[9].wrapping_add(1);
        assert_eq!(inflate(&packed, 100), Err(InflateError::Corrupt));
    }

    #[test]
    fn truncated_is_refused() {
        assert_eq!(inflate(&[], 100), Err(InflateError::Truncated));
        assert_eq!(inflate(&HELLO_ZLIB[..1], 100), Err(InflateError::Truncated));
        for cut in 2..HELLO_ZLIB.len() {
            assert_eq!(
                inflate(&HELLO_ZLIB[..cut], 100),
                Err(InflateError::Truncated),
                "{cut}"
            );
        }
        let packed = compress(&xorshift_bytes(10_000, 5), 6);
        let half = &packed[..packed.len() / 2];
        assert_eq!(
            inflate_in_pieces(half, 7, usize::MAX),
            Err(InflateError::Truncated)
        );
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut packed = HELLO_ZLIB.to_vec();
        packed.push(0);
        assert_eq!(inflate(&packed, 100), Err(InflateError::TrailingBytes));

        let mut inflater = Inflater::new(100);
        let mut out = Vec::new();
        assert_eq!(
            inflater.push(&HELLO_ZLIB, &mut out),
            Ok(InflateStatus::Done)
        );
        assert_eq!(inflater.push(&[], &mut out), Ok(InflateStatus::Done));
        assert_eq!(
            inflater.push(b"x", &mut out),
            Err(InflateError::TrailingBytes)
        );
        assert_eq!(out, b"hello");
        assert_eq!(inflater.finish(), Err(InflateError::TrailingBytes));
    }

    #[test]
    fn cap_is_exact() {
        let data = xorshift_bytes(40_000, 11);
        let packed = compress(&data, 6);
        assert_eq!(inflate(&packed, data.len()), Ok(data.clone()));
        assert_eq!(
            inflate(&packed, data.len() - 1),
            Err(InflateError::TooLarge {
                limit: data.len() - 1
            })
        );
        assert_eq!(
            inflate(&HELLO_ZLIB, 0),
            Err(InflateError::TooLarge { limit: 0 })
        );
    }

    #[test]
    fn zip_bomb_is_refused_within_the_cap() {
        const CAP: usize = 1 << 20;
        let bomb = compress(&vec![0u8; 16 << 20], 6);
        assert!(bomb.len() < 64 * 1024);
        assert_eq!(
            inflate(&bomb, CAP),
            Err(InflateError::TooLarge { limit: CAP })
        );

        let mut inflater = Inflater::new(CAP);
        let mut out = Vec::new();
        let mut refused = None;
        for part in bomb.chunks(1024) {
            let result = inflater.push(part, &mut out);
            assert!(
                out.len() <= CAP && out.capacity() <= CAP,
                "{}",
                out.capacity()
            );
            if let Err(e) = result {
                refused = Some(e);
                break;
            }
        }
        assert_eq!(refused, Some(InflateError::TooLarge { limit: CAP }));
        // The error sticks.
        assert_eq!(
            inflater.push(&[], &mut out),
            Err(InflateError::TooLarge { limit: CAP })
        );
        assert_eq!(
            inflater.finish(),
            Err(InflateError::TooLarge { limit: CAP })
        );
    }

    #[test]
    fn errors_have_codes_and_messages() {
        assert_eq!(InflateError::TooLarge { limit: 5 }.code(), "zlib-too-large");
        assert_eq!(
            InflateError::TooLarge { limit: 5 }.to_string(),
            "the zlib data inflates to more than 5 bytes"
        );
        assert_eq!(InflateError::Truncated.code(), "zlib-truncated");
        assert_eq!(InflateError::Corrupt.code(), "zlib-corrupt");
        assert_eq!(InflateError::TrailingBytes.code(), "zlib-trailing-bytes");
    }
}
