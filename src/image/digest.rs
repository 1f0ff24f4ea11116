//! Digests: SHA-256 and MD5, one-shot and streaming, and hex text.
//!
//! Contract: [`sha256`] and [`md5()`] hash a whole buffer; [`Hasher`] hashes a stream fed in
//! pieces of any size and gives the same [`DigestValue`] as the one-shot functions.
//! [`to_hex`] writes lowercase hex; [`parse_hex`] and [`DigestValue::matches_hex`] accept
//! either case. [`DigestValue::matches_hex`] looks at every digit before answering, so its
//! running time does not reveal where a mismatch is. MD5 is here only because vendor
//! protocols name it; it is never a security check on its own.

use alloc::string::String;
use core::fmt;
use core::str::FromStr;

use md5::Md5;
use sha2::{Digest as _, Sha256};

/// The most bytes handed to a hash function in one call. A wasm engine swaps in its
/// optimised code for a function only between calls, so one call over a whole 7 MiB image
/// would run start to end in the baseline code: on a fresh page about 8 times slower.
const PIECE: usize = 64 * 1024;

/// SHA-256 of `bytes`.
#[must_use]
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    bytes.chunks(PIECE).for_each(|piece| h.update(piece));
    h.finalize().into()
}

/// MD5 of `bytes`.
#[must_use]
pub fn md5(bytes: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    bytes.chunks(PIECE).for_each(|piece| h.update(piece));
    h.finalize().into()
}

/// A digest algorithm, named in manifests and vendor protocols as `"sha256"` or `"md5"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DigestAlg {
    /// SHA-256 (32 bytes).
    Sha256,
    /// MD5 (16 bytes).
    Md5,
}

impl DigestAlg {
    /// The lowercase name, `"sha256"` or `"md5"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            DigestAlg::Sha256 => "sha256",
            DigestAlg::Md5 => "md5",
        }
    }

    /// Length of this algorithm's digest in bytes.
    #[must_use]
    pub fn output_len(self) -> usize {
        match self {
            DigestAlg::Sha256 => 32,
            DigestAlg::Md5 => 16,
        }
    }
}

impl fmt::Display for DigestAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text names no digest algorithm this crate knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownDigestAlg;

impl fmt::Display for UnknownDigestAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown digest algorithm (expected \"sha256\" or \"md5\")")
    }
}

impl FromStr for DigestAlg {
    type Err = UnknownDigestAlg;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("sha256") {
            Ok(DigestAlg::Sha256)
        } else if s.eq_ignore_ascii_case("md5") {
            Ok(DigestAlg::Md5)
        } else {
            Err(UnknownDigestAlg)
        }
    }
}

/// A streaming digest: feed pieces with [`Hasher::update`], then [`Hasher::finalize`].
#[derive(Clone, Debug)]
pub struct Hasher {
    state: State,
}

#[derive(Clone, Debug)]
enum State {
    Sha256(Sha256),
    Md5(Md5),
}

impl Hasher {
    /// A hasher for `alg` that has seen no bytes yet.
    #[must_use]
    pub fn new(alg: DigestAlg) -> Self {
        let state = match alg {
            DigestAlg::Sha256 => State::Sha256(Sha256::new()),
            DigestAlg::Md5 => State::Md5(Md5::new()),
        };
        Hasher { state }
    }

    /// The algorithm this hasher computes.
    #[must_use]
    pub fn alg(&self) -> DigestAlg {
        match self.state {
            State::Sha256(_) => DigestAlg::Sha256,
            State::Md5(_) => DigestAlg::Md5,
        }
    }

    /// Feeds the next piece of the stream.
    pub fn update(&mut self, bytes: &[u8]) {
        for piece in bytes.chunks(PIECE) {
            match &mut self.state {
                State::Sha256(h) => h.update(piece),
                State::Md5(h) => h.update(piece),
            }
        }
    }

    /// The digest of everything fed so far.
    #[must_use]
    pub fn finalize(self) -> DigestValue {
        match self.state {
            State::Sha256(h) => DigestValue::Sha256(h.finalize().into()),
            State::Md5(h) => DigestValue::Md5(h.finalize().into()),
        }
    }
}

/// A finished digest of either algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DigestValue {
    /// A SHA-256 digest.
    Sha256([u8; 32]),
    /// An MD5 digest.
    Md5([u8; 16]),
}

impl DigestValue {
    /// The algorithm that produced this digest.
    #[must_use]
    pub fn alg(&self) -> DigestAlg {
        match self {
            DigestValue::Sha256(_) => DigestAlg::Sha256,
            DigestValue::Md5(_) => DigestAlg::Md5,
        }
    }

    /// The digest bytes (32 for SHA-256, 16 for MD5).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            DigestValue::Sha256(b) => b,
            DigestValue::Md5(b) => b,
        }
    }

    /// Lowercase hex of the digest.
    #[must_use]
    pub fn to_hex(&self) -> String {
        to_hex(self.as_bytes())
    }

    /// Whether `text` is this digest in hex, either case.
    ///
    /// Every digit is examined whatever the outcome, so timing does not reveal how many
    /// leading digits matched. Only the length check exits early; the length is public.
    #[must_use]
    pub fn matches_hex(&self, text: &str) -> bool {
        let expected = self.as_bytes();
        let raw = text.as_bytes();
        if raw.len() != expected.len().saturating_mul(2) {
            return false;
        }
        let mut diff = 0u8;
        for (want, pair) in expected.iter().zip(raw.chunks_exact(2)) {
            if let [hi, lo] = *pair {
                let (hi, hi_ok) = nibble_total(hi);
                let (lo, lo_ok) = nibble_total(lo);
                diff |= ((hi << 4) | lo) ^ want;
                diff |= u8::from(!(hi_ok & lo_ok));
            }
        }
        diff == 0
    }
}

/// Lowercase hex of `bytes`.
#[must_use]
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        // Both indices are a 4-bit value, so always below 16.
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Why hex text did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HexError {
    /// The text has the wrong number of characters.
    Length {
        /// Characters expected.
        expected: usize,
        /// Characters found.
        found: usize,
    },
    /// A character is not a hex digit.
    NotHex,
}

impl fmt::Display for HexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HexError::Length { expected, found } => {
                write!(f, "expected {expected} hex digits, found {found}")
            }
            HexError::NotHex => f.write_str("not a hex digit"),
        }
    }
}

/// Parses exactly `2 * N` hex digits, either case, into `N` bytes.
pub fn parse_hex<const N: usize>(text: &str) -> Result<[u8; N], HexError> {
    let raw = text.as_bytes();
    if raw.len() != 2 * N {
        return Err(HexError::Length {
            expected: 2 * N,
            found: raw.len(),
        });
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(raw.chunks_exact(2)) {
        if let [hi, lo] = *pair {
            *o = (nibble(hi)? << 4) | nibble(lo)?;
        }
    }
    Ok(out)
}

fn nibble(c: u8) -> Result<u8, HexError> {
    match nibble_total(c) {
        (v, true) => Ok(v),
        (_, false) => Err(HexError::NotHex),
    }
}

/// The value of hex digit `c` and whether it is one; never exits early, for
/// [`DigestValue::matches_hex`].
fn nibble_total(c: u8) -> (u8, bool) {
    match c {
        b'0'..=b'9' => (c - b'0', true),
        b'a'..=b'f' => (c - b'a' + 10, true),
        b'A'..=b'F' => (c - b'A' + 10, true),
        _ => (0, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    const SHA256_EMPTY: [u8; 32] = [
        0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9,
        0x24, 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52,
        0xb8, 0x55,
    ];
    const SHA256_ABC: [u8; 32] = [
        0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22,
        0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00,
        0x15, 0xad,
    ];
    const MD5_EMPTY: [u8; 16] = [
        0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04, 0xe9, 0x80, 0x09, 0x98, 0xec, 0xf8, 0x42,
        0x7e,
    ];
    const MD5_ABC: [u8; 16] = [
        0x90, 0x01, 0x50, 0x98, 0x3c, 0xd2, 0x4f, 0xb0, 0xd6, 0x96, 0x3f, 0x7d, 0x28, 0xe1, 0x7f,
        0x72,
    ];

    #[test]
    fn one_shot_matches_published_vectors() {
        assert_eq!(sha256(b""), SHA256_EMPTY);
        assert_eq!(sha256(b"abc"), SHA256_ABC);
        assert_eq!(md5(b""), MD5_EMPTY);
        assert_eq!(md5(b"abc"), MD5_ABC);
        assert_eq!(
            to_hex(&SHA256_ABC),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(to_hex(&MD5_ABC), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn hasher_matches_one_shot_for_empty_and_abc() {
        for (alg, input, want) in [
            (DigestAlg::Sha256, &b""[..], &SHA256_EMPTY[..]),
            (DigestAlg::Sha256, b"abc", &SHA256_ABC),
            (DigestAlg::Md5, b"", &MD5_EMPTY),
            (DigestAlg::Md5, b"abc", &MD5_ABC),
        ] {
            let mut h = Hasher::new(alg);
            assert_eq!(h.alg(), alg);
            h.update(input);
            let v = h.finalize();
            assert_eq!(v.alg(), alg);
            assert_eq!(v.as_bytes(), want);
            assert_eq!(v.as_bytes().len(), alg.output_len());
        }
    }

    #[test]
    fn inputs_longer_than_a_piece_hash_as_in_one_call() {
        let data: std::vec::Vec<u8> = (0..3 * PIECE as u32 + 5).map(|i| (i * 13) as u8).collect();
        let whole_sha: [u8; 32] = Sha256::digest(&data).into();
        let whole_md5: [u8; 16] = Md5::digest(&data).into();
        assert_eq!(sha256(&data), whole_sha);
        assert_eq!(md5(&data), whole_md5);
        let mut h = Hasher::new(DigestAlg::Sha256);
        h.update(&data[..PIECE + 1]);
        h.update(&data[PIECE + 1..]);
        assert_eq!(h.finalize(), DigestValue::Sha256(whole_sha));
    }

    #[test]
    fn streaming_in_odd_pieces_equals_one_shot() {
        let data: std::vec::Vec<u8> = (0..1000u32).map(|i| (i * 31 + 7) as u8).collect();
        for piece in [1, 3, 7, 63, 64, 65, 999] {
            let mut s = Hasher::new(DigestAlg::Sha256);
            let mut m = Hasher::new(DigestAlg::Md5);
            for part in data.chunks(piece) {
                s.update(part);
                m.update(part);
            }
            assert_eq!(s.finalize(), DigestValue::Sha256(sha256(&data)), "{piece}");
            assert_eq!(m.finalize(), DigestValue::Md5(md5(&data)), "{piece}");
        }
    }

    #[test]
    fn alg_parses_either_case_and_rejects_others() {
        assert_eq!("sha256".parse(), Ok(DigestAlg::Sha256));
        assert_eq!("SHA256".parse(), Ok(DigestAlg::Sha256));
        assert_eq!("Md5".parse(), Ok(DigestAlg::Md5));
        assert_eq!("sha-256".parse::<DigestAlg>(), Err(UnknownDigestAlg));
        assert_eq!("".parse::<DigestAlg>(), Err(UnknownDigestAlg));
        assert_eq!(DigestAlg::Md5.to_string(), "md5");
        assert_eq!(DigestAlg::Sha256.as_str().parse(), Ok(DigestAlg::Sha256));
    }

    #[test]
    fn hex_round_trips_and_accepts_uppercase() {
        let text = to_hex(&SHA256_ABC);
        assert_eq!(parse_hex::<32>(&text), Ok(SHA256_ABC));
        assert_eq!(parse_hex::<32>(&text.to_uppercase()), Ok(SHA256_ABC));
        assert_eq!(parse_hex::<3>("00Ff7a"), Ok([0x00, 0xff, 0x7a]));
        assert_eq!(parse_hex::<0>(""), Ok([]));
        assert_eq!(to_hex(&[]), "");
    }

    #[test]
    fn parse_hex_rejects_wrong_length_and_non_hex() {
        assert_eq!(
            parse_hex::<16>("abc"),
            Err(HexError::Length {
                expected: 32,
                found: 3
            })
        );
        assert_eq!(
            parse_hex::<2>("abcdef"),
            Err(HexError::Length {
                expected: 4,
                found: 6
            })
        );
        assert_eq!(parse_hex::<2>("abcg"), Err(HexError::NotHex));
        assert_eq!(parse_hex::<2>("0x12"), Err(HexError::NotHex));
        assert_eq!(parse_hex::<2>(" 123"), Err(HexError::NotHex));
        // Multi-byte UTF-8 counts bytes, and its bytes are not hex digits.
        assert_eq!(parse_hex::<1>("é"), Err(HexError::NotHex));
        assert_eq!(
            HexError::Length {
                expected: 4,
                found: 6
            }
            .to_string(),
            "expected 4 hex digits, found 6"
        );
    }

    #[test]
    fn matches_hex_compares_case_insensitively() {
        let v = DigestValue::Md5(MD5_ABC);
        assert_eq!(v.to_hex(), "900150983cd24fb0d6963f7d28e17f72");
        assert!(v.matches_hex("900150983cd24fb0d6963f7d28e17f72"));
        assert!(v.matches_hex("900150983CD24FB0D6963F7D28E17F72"));
        assert!(!v.matches_hex("900150983cd24fb0d6963f7d28e17f73"));
        assert!(!v.matches_hex("000150983cd24fb0d6963f7d28e17f72"));
        assert!(!v.matches_hex("900150983cd24fb0d6963f7d28e17f7"));
        assert!(!v.matches_hex("900150983cd24fb0d6963f7d28e17f72a"));
        assert!(!v.matches_hex("900150983cd24fb0d6963f7d28e17fzz"));
        assert!(!v.matches_hex(""));
        // A SHA-256 digest never matches MD5-length text, even a prefix of its own hex.
        let s = DigestValue::Sha256(SHA256_ABC);
        assert!(s.matches_hex(&to_hex(&SHA256_ABC).to_uppercase()));
        assert!(!s.matches_hex(&to_hex(&SHA256_ABC)[..32]));
    }
}
