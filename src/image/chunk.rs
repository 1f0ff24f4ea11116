//! Slicing an image into link-sized payloads, as ranges into the image, without copying.
//!
//! Contract: chunk 0 holds up to `first` bytes and every later chunk up to `next` (protocols
//! often carry a header in the first packet). Chunks are contiguous and in order, cover the
//! image exactly, and only the last may be shorter than its limit; an empty image has no
//! chunks. Random access ([`Chunker::get`], [`Chunker::index_of`]) agrees with iteration, so
//! a retransmit or a resume at a device-reported offset sends exactly the bytes a straight
//! run would. Sizes of zero are refused up front; no arithmetic here can overflow or panic.

use core::fmt;
use core::iter::FusedIterator;
use core::ops::Range;

/// Why chunk sizes were refused.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkError {
    /// The first chunk's size is zero.
    ZeroFirst,
    /// The size of the chunks after the first is zero.
    ZeroNext,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkError::ZeroFirst => f.write_str("the first chunk size must not be zero"),
            ChunkError::ZeroNext => f.write_str("the chunk size must not be zero"),
        }
    }
}

/// The chunk layout of an image of `len` bytes: sizes only, no data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunker {
    len: usize,
    /// Never zero.
    first: usize,
    /// Never zero.
    next: usize,
}

impl Chunker {
    /// The layout of `len` bytes in a first chunk of up to `first` bytes, then chunks of up to
    /// `next` bytes.
    pub fn new(len: usize, first: usize, next: usize) -> Result<Self, ChunkError> {
        if first == 0 {
            return Err(ChunkError::ZeroFirst);
        }
        if next == 0 {
            return Err(ChunkError::ZeroNext);
        }
        Ok(Chunker { len, first, next })
    }

    /// How many chunks there are; zero for an empty image.
    #[must_use]
    pub fn count(&self) -> usize {
        if self.len == 0 {
            return 0;
        }
        match self.len.checked_sub(self.first) {
            None | Some(0) => 1,
            // `rest` is below `len`, so `rest / next + 1` cannot overflow.
            Some(rest) => rest.div_ceil(self.next).saturating_add(1),
        }
    }

    /// The byte range of chunk `index`, or `None` past the last chunk.
    #[must_use]
    pub fn get(&self, index: usize) -> Option<Range<usize>> {
        if index >= self.count() {
            return None;
        }
        let (start, limit) = match index.checked_sub(1) {
            None => (0, self.first),
            Some(k) => (
                k.checked_mul(self.next)?.checked_add(self.first)?,
                self.next,
            ),
        };
        Some(start..start.saturating_add(limit).min(self.len))
    }

    /// The index of the chunk holding byte `offset`, or `None` if `offset` is past the end.
    #[must_use]
    pub fn index_of(&self, offset: usize) -> Option<usize> {
        if offset >= self.len {
            return None;
        }
        match offset.checked_sub(self.first) {
            None => Some(0),
            // At most `len / next`, so adding one cannot overflow.
            Some(rest) => Some((rest / self.next).saturating_add(1)),
        }
    }

    /// The byte ranges of all chunks, in order.
    #[must_use]
    pub fn iter(&self) -> ChunkRanges {
        ChunkRanges {
            chunker: *self,
            index: 0,
            count: self.count(),
        }
    }
}

impl IntoIterator for &Chunker {
    type Item = Range<usize>;
    type IntoIter = ChunkRanges;

    fn into_iter(self) -> ChunkRanges {
        self.iter()
    }
}

/// Iterator over a [`Chunker`]'s byte ranges; [`Iterator::nth`] skips in constant time.
#[derive(Clone, Debug)]
pub struct ChunkRanges {
    chunker: Chunker,
    index: usize,
    count: usize,
}

impl Iterator for ChunkRanges {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        let range = self.chunker.get(self.index)?;
        self.index = self.index.saturating_add(1);
        Some(range)
    }

    fn nth(&mut self, n: usize) -> Option<Range<usize>> {
        self.index = self.index.saturating_add(n).min(self.count);
        self.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.count.saturating_sub(self.index);
        (left, Some(left))
    }
}

impl ExactSizeIterator for ChunkRanges {}

impl FusedIterator for ChunkRanges {}

/// One chunk of an image, borrowed from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// Position in the chunk sequence, from 0.
    pub index: usize,
    /// Offset of the first byte in the image.
    pub offset: usize,
    /// The chunk's bytes.
    pub bytes: &'a [u8],
    /// Whether this is the final chunk.
    pub last: bool,
}

/// The chunks of `data`: the first up to `first` bytes, the rest up to `next` bytes each.
pub fn chunks(data: &[u8], first: usize, next: usize) -> Result<Chunks<'_>, ChunkError> {
    Ok(Chunks {
        data,
        ranges: Chunker::new(data.len(), first, next)?.iter(),
    })
}

/// Iterator over the [`Chunk`]s of an image; made by [`chunks`].
#[derive(Clone, Debug)]
pub struct Chunks<'a> {
    data: &'a [u8],
    ranges: ChunkRanges,
}

impl<'a> Chunks<'a> {
    fn chunk(&self, range: Range<usize>) -> Option<Chunk<'a>> {
        // `ranges.index` has already moved past this chunk.
        let index = self.ranges.index.checked_sub(1)?;
        Some(Chunk {
            index,
            offset: range.start,
            // The layout was made from `data.len()`, so every range lies inside `data`.
            bytes: self.data.get(range)?,
            last: self.ranges.index == self.ranges.count,
        })
    }
}

impl<'a> Iterator for Chunks<'a> {
    type Item = Chunk<'a>;

    fn next(&mut self) -> Option<Chunk<'a>> {
        let range = self.ranges.next()?;
        self.chunk(range)
    }

    fn nth(&mut self, n: usize) -> Option<Chunk<'a>> {
        let range = self.ranges.nth(n)?;
        self.chunk(range)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.ranges.size_hint()
    }
}

impl ExactSizeIterator for Chunks<'_> {}

impl FusedIterator for Chunks<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    /// The layout as `(start, end)` pairs, which read more plainly than ranges in asserts.
    fn ranges(len: usize, first: usize, next: usize) -> Vec<(usize, usize)> {
        let chunker = Chunker::new(len, first, next).unwrap();
        chunker.iter().map(|r| (r.start, r.end)).collect()
    }

    #[test]
    fn exact_boundaries() {
        assert_eq!(ranges(0, 20, 10), []);
        assert_eq!(ranges(1, 20, 10), [(0, 1)]);
        assert_eq!(ranges(20, 20, 10), [(0, 20)]);
        assert_eq!(ranges(21, 20, 10), [(0, 20), (20, 21)]);
        assert_eq!(ranges(30, 20, 10), [(0, 20), (20, 30)]);
        assert_eq!(ranges(50, 20, 10), [(0, 20), (20, 30), (30, 40), (40, 50)]);
        assert_eq!(
            ranges(51, 20, 10),
            [(0, 20), (20, 30), (30, 40), (40, 50), (50, 51)]
        );
        // A first chunk smaller than the rest, as when a header shares the first packet.
        assert_eq!(ranges(25, 5, 10), [(0, 5), (5, 15), (15, 25)]);
        assert_eq!(ranges(3, 1, 1), [(0, 1), (1, 2), (2, 3)]);
    }

    #[test]
    fn zero_sizes_are_rejected() {
        assert_eq!(Chunker::new(10, 0, 10), Err(ChunkError::ZeroFirst));
        assert_eq!(Chunker::new(10, 10, 0), Err(ChunkError::ZeroNext));
        assert_eq!(Chunker::new(0, 0, 0), Err(ChunkError::ZeroFirst));
        assert!(chunks(b"abc", 1, 0).is_err());
        assert_eq!(
            ChunkError::ZeroNext.to_string(),
            "the chunk size must not be zero"
        );
    }

    #[test]
    fn empty_data_has_no_chunks() {
        let c = Chunker::new(0, 1, 1).unwrap();
        assert_eq!(c.count(), 0);
        assert_eq!(c.get(0), None);
        assert_eq!(c.index_of(0), None);
        assert_eq!(chunks(&[], 4, 4).unwrap().count(), 0);
    }

    #[test]
    fn huge_lengths_do_not_overflow() {
        let c = Chunker::new(usize::MAX, 1, 1).unwrap();
        assert_eq!(c.count(), usize::MAX);
        assert_eq!(c.get(usize::MAX - 1), Some(usize::MAX - 1..usize::MAX));
        assert_eq!(c.get(usize::MAX), None);
        assert_eq!(c.index_of(usize::MAX - 1), Some(usize::MAX - 1));

        let c = Chunker::new(usize::MAX, usize::MAX - 1, usize::MAX).unwrap();
        assert_eq!(c.count(), 2);
        assert_eq!(c.get(1), Some(usize::MAX - 1..usize::MAX));

        let c = Chunker::new(usize::MAX, usize::MAX, usize::MAX).unwrap();
        assert_eq!(c.count(), 1);
        assert_eq!(c.get(0), Some(0..usize::MAX));

        let mut it = Chunker::new(10, 3, 3).unwrap().iter();
        assert_eq!(it.nth(usize::MAX), None);
        assert_eq!(it.next(), None);
    }

    #[test]
    fn chunks_cover_the_input_within_limits_for_many_layouts() {
        let data: Vec<u8> = (0..200u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..=data.len() {
            let data = &data[..len];
            for first in 1..=24 {
                for next in 1..=24 {
                    let chunker = Chunker::new(len, first, next).unwrap();
                    let all: Vec<Chunk<'_>> = chunks(data, first, next).unwrap().collect();
                    assert_eq!(all.len(), chunker.count());
                    assert_eq!(chunker.iter().len(), chunker.count());

                    let mut joined = Vec::new();
                    for (i, c) in all.iter().enumerate() {
                        assert_eq!(c.index, i);
                        assert_eq!(c.offset, joined.len());
                        assert!(!c.bytes.is_empty());
                        let limit = if i == 0 { first } else { next };
                        assert!(c.bytes.len() <= limit);
                        assert_eq!(c.last, i + 1 == all.len());
                        if !c.last {
                            assert_eq!(c.bytes.len(), limit, "only the last may be short");
                        }
                        // Random access agrees with iteration.
                        let range = chunker.get(i).unwrap();
                        assert_eq!(&data[range.clone()], c.bytes);
                        assert_eq!(range.start, c.offset);
                        joined.extend_from_slice(c.bytes);
                    }
                    assert_eq!(joined, data);
                    assert_eq!(chunker.get(all.len()), None);
                }
            }
        }
    }

    #[test]
    fn index_of_finds_the_chunk_holding_each_byte() {
        for len in 0..=90 {
            for (first, next) in [(1, 1), (20, 10), (5, 16), (100, 3), (7, 7)] {
                let chunker = Chunker::new(len, first, next).unwrap();
                for offset in 0..len {
                    let i = chunker.index_of(offset).unwrap();
                    assert!(chunker.get(i).unwrap().contains(&offset));
                }
                assert_eq!(chunker.index_of(len), None);
                for (i, range) in chunker.iter().enumerate() {
                    assert_eq!(chunker.index_of(range.start), Some(i));
                    assert_eq!(chunker.index_of(range.end - 1), Some(i));
                }
            }
        }
    }

    #[test]
    fn nth_resumes_mid_image() {
        let data: Vec<u8> = (0..=255).collect();
        let chunker = Chunker::new(data.len(), 20, 16).unwrap();
        let resume_at = chunker.index_of(100).unwrap();
        let mut rest = chunks(&data, 20, 16).unwrap();
        let c = rest.nth(resume_at).unwrap();
        assert_eq!(c.index, resume_at);
        assert_eq!(c.offset, chunker.get(resume_at).unwrap().start);
        assert_eq!(rest.len(), chunker.count() - resume_at - 1);
        assert!(rest.last().unwrap().last);
    }
}
