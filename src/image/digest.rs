//! Digests: SHA-256 and MD5, one-shot and streaming, and hex text.
//!
//! Contract so far (other modules rely on it): [`sha256`], [`to_hex`], [`parse_hex`].

use alloc::string::String;
use core::fmt;

use sha2::{Digest as _, Sha256};

/// SHA-256 of `bytes`.
#[must_use]
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Lowercase hex of `bytes`.
#[must_use]
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
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
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Ok(out)
}

fn nibble(c: u8) -> Result<u8, HexError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(HexError::NotHex),
    }
}
