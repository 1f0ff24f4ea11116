//! Firmware versions in the three styles the update flows use, and how to compare them.
//!
//! Contract: a version is parsed once, strictly, into the type of its style, and only values
//! of the same style compare. [`AlexaVersion`] is the gadget's `firmwareVersion`: a decimal
//! `u32` (initially 0). [`MicrochipVersion`] is the Microchip manifest's integer `Version`:
//! non-zero, compared numerically. [`EnosVersion`] is free-form text (EnOS only requires it
//! to be unique per product) compared by runs of digits and non-digits; see
//! [`EnosVersion`] for the exact order. Every parser refuses empty text, text over
//! [`MAX_VERSION_LEN`] bytes and control characters, so no input can make comparison slow.

use core::cmp::Ordering;
use core::fmt;
use core::num::NonZeroU32;

/// The longest version text accepted, in bytes. EnOS and gadget versions are short ids (the
/// gadget's own field holds at most 32), so anything longer is a mistake, not a version.
pub const MAX_VERSION_LEN: usize = 64;

/// Which version style a text is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VersionStyle {
    /// Alexa Gadgets OTA: a decimal `u32`, see [`AlexaVersion`].
    Alexa,
    /// EnOS: free-form text, see [`EnosVersion`].
    Enos,
    /// Microchip OTA service: a non-zero integer, see [`MicrochipVersion`].
    Microchip,
}

impl VersionStyle {
    /// A short name for messages, e.g. `"Alexa"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            VersionStyle::Alexa => "Alexa",
            VersionStyle::Enos => "EnOS",
            VersionStyle::Microchip => "Microchip",
        }
    }
}

impl fmt::Display for VersionStyle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a version did not parse, or two versions did not compare.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionError {
    /// The text is empty.
    Empty,
    /// The text is longer than [`MAX_VERSION_LEN`] bytes.
    TooLong {
        /// The longest text accepted, in bytes.
        limit: usize,
    },
    /// The text contains a control character (such as a newline or NUL).
    ControlCharacter,
    /// A numeric style got something other than the digits 0-9.
    NotDecimal,
    /// A numeric style got a number above `u32::MAX`.
    TooBig,
    /// A Microchip version is 0, which the service treats as "no version".
    Zero,
    /// The two versions are of different styles and cannot be compared.
    StyleMismatch {
        /// The style of the version asked.
        ours: VersionStyle,
        /// The style of the version it was compared with.
        theirs: VersionStyle,
    },
}

impl fmt::Display for VersionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionError::Empty => f.write_str("the version is empty"),
            VersionError::TooLong { limit } => {
                write!(f, "the version is longer than {limit} characters")
            }
            VersionError::ControlCharacter => {
                f.write_str("the version contains a control character such as a line break")
            }
            VersionError::NotDecimal => f.write_str(
                "the version must be a whole number written with the digits 0-9 only \
                 (no sign, spaces or dots)",
            ),
            VersionError::TooBig => write!(f, "the version is larger than {}", u32::MAX),
            VersionError::Zero => {
                f.write_str("a Microchip version must be 1 or more (0 means no version)")
            }
            VersionError::StyleMismatch { ours, theirs } => {
                write!(
                    f,
                    "cannot compare a version of {ours} style with one of {theirs} style"
                )
            }
        }
    }
}

/// Refuses text no style accepts: empty, too long, or with control characters.
fn check_text(text: &str) -> Result<(), VersionError> {
    if text.is_empty() {
        return Err(VersionError::Empty);
    }
    if text.len() > MAX_VERSION_LEN {
        return Err(VersionError::TooLong {
            limit: MAX_VERSION_LEN,
        });
    }
    if text.chars().any(char::is_control) {
        return Err(VersionError::ControlCharacter);
    }
    Ok(())
}

/// Parses digits only: no sign, no spaces, leading zeros allowed, at most `u32::MAX`.
fn parse_decimal_u32(text: &str) -> Result<u32, VersionError> {
    check_text(text)?;
    text.bytes().try_fold(0u32, |acc, b| {
        if !b.is_ascii_digit() {
            return Err(VersionError::NotDecimal);
        }
        acc.checked_mul(10)
            .and_then(|v| v.checked_add(u32::from(b - b'0')))
            .ok_or(VersionError::TooBig)
    })
}

/// The Alexa gadget's OTA version: the decimal `u32` it reports as `firmwareVersion`.
///
/// The gadget starts at 0 and the cloud offers an update only when its version is strictly
/// greater, so plain numeric order is the whole rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AlexaVersion(pub u32);

impl AlexaVersion {
    /// Parses the decimal text of a `u32`: digits only, leading zeros allowed.
    pub fn parse(text: &str) -> Result<Self, VersionError> {
        parse_decimal_u32(text).map(AlexaVersion)
    }
}

impl fmt::Display for AlexaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A Microchip OTA service image version: a non-zero integer, compared numerically.
///
/// The service replaces the running image only with a strictly greater `Version`. Its image
/// database writes the version in at most 3 decimal digits (the default configuration allows
/// 0-255), so devices running it cannot store versions above 999; this type does not impose
/// that, because the limit belongs to the device's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MicrochipVersion(NonZeroU32);

impl MicrochipVersion {
    /// The version `value`, refusing 0.
    pub fn new(value: u32) -> Result<Self, VersionError> {
        NonZeroU32::new(value)
            .map(MicrochipVersion)
            .ok_or(VersionError::Zero)
    }

    /// Parses decimal text: digits only, leading zeros allowed, not 0.
    pub fn parse(text: &str) -> Result<Self, VersionError> {
        parse_decimal_u32(text).and_then(Self::new)
    }

    /// The version number.
    #[must_use]
    pub fn get(self) -> u32 {
        self.0.get()
    }
}

impl fmt::Display for MicrochipVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An EnOS firmware version: free-form text, kept as written, ordered by its parts.
///
/// The text is split into runs of ASCII digits and runs of anything else, and the runs are
/// compared left to right:
/// - digit runs compare as numbers of any length (leading zeros ignored, no overflow);
/// - other runs compare case-insensitively;
/// - a leading `v` or `V` directly before a digit is ignored, so `v2.1` equals `2.1`;
/// - when one version runs out first, the longer one is higher (`1.0.1` > `1.0`), except that
///   a run starting with `-` or `~` marks a pre-release and is lower than the end of the
///   other version and than any other run (`1.0-rc1` < `1.0` < `1.0.1`);
/// - at the same position a digit run is higher than a text run.
///
/// Equality follows this order, not the text: `1.0` equals `1.00` and `V1.0` equals `1.0`,
/// while [`EnosVersion::as_str`] still gives each text as written. That is also why this type
/// does not implement `Hash`.
#[derive(Clone, Debug)]
pub struct EnosVersion {
    text: alloc::string::String,
}

impl EnosVersion {
    /// Parses any non-empty text of at most [`MAX_VERSION_LEN`] bytes without control
    /// characters.
    pub fn parse(text: &str) -> Result<Self, VersionError> {
        check_text(text)?;
        Ok(EnosVersion {
            text: alloc::string::String::from(text),
        })
    }

    /// The version as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The text the order looks at: without a leading `v`/`V` that precedes a digit.
    fn significant(&self) -> &str {
        let t = self.text.as_str();
        match t.as_bytes() {
            [b'v' | b'V', d, ..] if d.is_ascii_digit() => t.get(1..).unwrap_or(t),
            _ => t,
        }
    }
}

impl PartialEq for EnosVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for EnosVersion {}

impl PartialOrd for EnosVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for EnosVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        let mut ours = Runs(self.significant());
        let mut theirs = Runs(other.significant());
        loop {
            let (a, b) = (ours.next(), theirs.next());
            if a.is_none() && b.is_none() {
                return Ordering::Equal;
            }
            let order = compare_runs(a, b);
            if order != Ordering::Equal {
                return order;
            }
        }
    }
}

impl fmt::Display for EnosVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One run of an [`EnosVersion`].
#[derive(Clone, Copy)]
enum Run<'a> {
    Digits(&'a str),
    Text(&'a str),
}

impl Run<'_> {
    /// Where the run sorts against a different kind of run at the same position.
    fn rank(run: Option<Self>) -> u8 {
        match run {
            Some(Run::Text(t)) if t.starts_with(['-', '~']) => 0,
            None => 1,
            Some(Run::Text(_)) => 2,
            Some(Run::Digits(_)) => 3,
        }
    }
}

/// Splits text into maximal runs of ASCII digits and of everything else.
struct Runs<'a>(&'a str);

impl<'a> Iterator for Runs<'a> {
    type Item = Run<'a>;

    fn next(&mut self) -> Option<Run<'a>> {
        let first = self.0.as_bytes().first()?;
        let digits = first.is_ascii_digit();
        // Digits are ASCII, so the first byte that switches kind is on a char boundary.
        let end = self
            .0
            .bytes()
            .position(|b| b.is_ascii_digit() != digits)
            .unwrap_or(self.0.len());
        let (run, rest) = self.0.split_at_checked(end)?;
        self.0 = rest;
        Some(if digits {
            Run::Digits(run)
        } else {
            Run::Text(run)
        })
    }
}

fn compare_runs(a: Option<Run<'_>>, b: Option<Run<'_>>) -> Ordering {
    match (a, b) {
        (Some(Run::Digits(x)), Some(Run::Digits(y))) => compare_digits(x, y),
        (Some(Run::Text(x)), Some(Run::Text(y))) => {
            let pre_x = x.starts_with(['-', '~']);
            let pre_y = y.starts_with(['-', '~']);
            pre_y.cmp(&pre_x).then_with(|| {
                x.chars()
                    .flat_map(char::to_lowercase)
                    .cmp(y.chars().flat_map(char::to_lowercase))
            })
        }
        _ => Run::rank(a).cmp(&Run::rank(b)),
    }
}

/// Compares two digit runs as numbers, however long.
fn compare_digits(x: &str, y: &str) -> Ordering {
    let x = x.trim_start_matches('0');
    let y = y.trim_start_matches('0');
    x.len().cmp(&y.len()).then_with(|| x.cmp(y))
}

/// A version in any of the three styles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Version {
    /// An Alexa gadget version.
    Alexa(AlexaVersion),
    /// An EnOS version.
    Enos(EnosVersion),
    /// A Microchip OTA service version.
    Microchip(MicrochipVersion),
}

impl Version {
    /// Parses `text` in `style`.
    pub fn parse(style: VersionStyle, text: &str) -> Result<Self, VersionError> {
        match style {
            VersionStyle::Alexa => AlexaVersion::parse(text).map(Version::Alexa),
            VersionStyle::Enos => EnosVersion::parse(text).map(Version::Enos),
            VersionStyle::Microchip => MicrochipVersion::parse(text).map(Version::Microchip),
        }
    }

    /// The style this version is written in.
    #[must_use]
    pub fn style(&self) -> VersionStyle {
        match self {
            Version::Alexa(_) => VersionStyle::Alexa,
            Version::Enos(_) => VersionStyle::Enos,
            Version::Microchip(_) => VersionStyle::Microchip,
        }
    }

    /// Orders two versions of the same style; versions of different styles do not compare.
    pub fn compare(&self, other: &Version) -> Result<Ordering, VersionError> {
        match (self, other) {
            (Version::Alexa(a), Version::Alexa(b)) => Ok(a.cmp(b)),
            (Version::Enos(a), Version::Enos(b)) => Ok(a.cmp(b)),
            (Version::Microchip(a), Version::Microchip(b)) => Ok(a.cmp(b)),
            _ => Err(VersionError::StyleMismatch {
                ours: self.style(),
                theirs: other.style(),
            }),
        }
    }

    /// Whether this version is strictly newer than `other`, which must be of the same style.
    pub fn is_newer_than(&self, other: &Version) -> Result<bool, VersionError> {
        self.compare(other).map(Ordering::is_gt)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::Alexa(v) => v.fmt(f),
            Version::Enos(v) => v.fmt(f),
            Version::Microchip(v) => v.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn enos(text: &str) -> EnosVersion {
        EnosVersion::parse(text).unwrap()
    }

    #[test]
    fn enos_orders_literal_pairs() {
        // (lower, higher)
        for (lo, hi) in [
            ("1.9", "1.10"),
            ("1.0-rc1", "1.0"),
            ("1.0~rc1", "1.0"),
            ("1.0-rc1", "1.0-rc2"),
            ("1.0-alpha", "1.0-beta"),
            ("1.0-RC1", "1.0-rc2"),
            ("1.0-rc1", "1.0.1"),
            ("1.0~rc1", "1.0.1"),
            ("1.0", "1.0.1"),
            ("1.0", "1.0a"),
            ("1.0", "1.0.0"),
            ("1.0.3", "1.0.10"),
            ("v2.1", "v2.10"),
            ("v2", "3"),
            ("2024.05-rc1", "2024.05"),
            ("2024.05", "2024.06-rc1"),
            ("9", "10"),
            ("1.2a", "1.2b"),
            ("a1", "1"),
            ("99999999999999999999999", "100000000000000000000000"),
        ] {
            let (l, h) = (enos(lo), enos(hi));
            assert!(l < h, "{lo} < {hi}");
            assert!(h > l, "{hi} > {lo}");
            assert_eq!(l.cmp(&h), Ordering::Less, "{lo} vs {hi}");
            let (vl, vh) = (Version::Enos(l), Version::Enos(h));
            assert_eq!(vh.is_newer_than(&vl), Ok(true), "{hi} newer than {lo}");
            assert_eq!(vl.is_newer_than(&vh), Ok(false), "{lo} not newer than {hi}");
        }
    }

    #[test]
    fn enos_equal_pairs_compare_equal_but_keep_their_text() {
        for (a, b) in [
            ("v2", "2"),
            ("V2.1", "2.1"),
            ("1.0", "1.00"),
            ("01.002", "1.2"),
            ("1.0-RC1", "1.0-rc1"),
            ("2024.05-Beta", "2024.5-beta"),
            ("abc", "ABC"),
        ] {
            let (x, y) = (enos(a), enos(b));
            assert_eq!(x, y, "{a} == {b}");
            assert_eq!(x.cmp(&y), Ordering::Equal);
            assert_eq!(
                Version::Enos(x.clone()).is_newer_than(&Version::Enos(y.clone())),
                Ok(false)
            );
            assert_eq!(x.as_str(), a);
            assert_eq!(y.to_string(), b);
        }
    }

    #[test]
    fn enos_v_prefix_is_ignored_only_before_a_digit() {
        assert_eq!(enos("v1"), enos("1"));
        assert_eq!(enos("v").as_str(), "v");
        // "vx" keeps its "v": it is text compared with text.
        assert!(enos("vx") > enos("vw"));
        assert_ne!(enos("vx"), enos("x"));
        // Only one leading "v" is dropped.
        assert_ne!(enos("vv1"), enos("1"));
    }

    #[test]
    fn enos_refuses_empty_long_and_control_text() {
        assert_eq!(EnosVersion::parse("").unwrap_err(), VersionError::Empty);
        let long = "1".repeat(MAX_VERSION_LEN + 1);
        assert_eq!(
            EnosVersion::parse(&long).unwrap_err(),
            VersionError::TooLong {
                limit: MAX_VERSION_LEN
            }
        );
        assert!(EnosVersion::parse(&long[1..]).is_ok());
        for bad in ["1.0\n", "1\u{0}", "\t1", "1\u{7f}", "1\u{85}"] {
            assert_eq!(
                EnosVersion::parse(bad).unwrap_err(),
                VersionError::ControlCharacter,
                "{bad:?}"
            );
        }
        // Spaces and non-ASCII text are free-form text, not errors.
        assert!(EnosVersion::parse("1.0 beta").is_ok());
        assert_eq!(enos("1.0-ÄLPHA"), enos("1.0-älpha"));
    }

    #[test]
    fn alexa_is_a_strict_decimal_u32() {
        assert_eq!(AlexaVersion::parse("0"), Ok(AlexaVersion(0)));
        assert_eq!(AlexaVersion::parse("10"), Ok(AlexaVersion(10)));
        assert_eq!(AlexaVersion::parse("007"), Ok(AlexaVersion(7)));
        assert_eq!(
            AlexaVersion::parse("4294967295"),
            Ok(AlexaVersion(u32::MAX))
        );
        assert_eq!(AlexaVersion::parse("4294967296"), Err(VersionError::TooBig));
        assert_eq!(
            AlexaVersion::parse("99999999999999999999"),
            Err(VersionError::TooBig)
        );
        for bad in [" 1", "1 ", "+1", "-1", "1.0", "0x10", "1e3", "١"] {
            assert_eq!(
                AlexaVersion::parse(bad),
                Err(VersionError::NotDecimal),
                "{bad:?}"
            );
        }
        assert_eq!(AlexaVersion::parse(""), Err(VersionError::Empty));
        assert_eq!(
            AlexaVersion::parse("1\n"),
            Err(VersionError::ControlCharacter)
        );
        assert_eq!(AlexaVersion(42).to_string(), "42");
    }

    #[test]
    fn alexa_orders_numerically() {
        for (lo, hi) in [("9", "10"), ("0", "1"), ("099", "100"), ("1", "4294967295")] {
            let l = Version::parse(VersionStyle::Alexa, lo).unwrap();
            let h = Version::parse(VersionStyle::Alexa, hi).unwrap();
            assert_eq!(h.is_newer_than(&l), Ok(true), "{hi} > {lo}");
            assert_eq!(l.is_newer_than(&h), Ok(false), "{lo} < {hi}");
        }
        let a = Version::parse(VersionStyle::Alexa, "05").unwrap();
        let b = Version::parse(VersionStyle::Alexa, "5").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.is_newer_than(&b), Ok(false));
        assert_eq!(a.to_string(), "5");
    }

    #[test]
    fn microchip_is_non_zero_and_strictly_numeric() {
        assert_eq!(MicrochipVersion::parse("0"), Err(VersionError::Zero));
        assert_eq!(MicrochipVersion::parse("000"), Err(VersionError::Zero));
        assert_eq!(MicrochipVersion::new(0), Err(VersionError::Zero));
        assert_eq!(
            MicrochipVersion::parse("3").map(MicrochipVersion::get),
            Ok(3)
        );
        assert_eq!(MicrochipVersion::parse("-3"), Err(VersionError::NotDecimal));
        assert_eq!(
            MicrochipVersion::parse("3.0"),
            Err(VersionError::NotDecimal)
        );
        assert_eq!(
            MicrochipVersion::parse("4294967296"),
            Err(VersionError::TooBig)
        );
        let two = Version::parse(VersionStyle::Microchip, "2").unwrap();
        let three = Version::parse(VersionStyle::Microchip, "3").unwrap();
        assert_eq!(three.is_newer_than(&two), Ok(true));
        assert_eq!(two.is_newer_than(&three), Ok(false));
        assert_eq!(two.is_newer_than(&two.clone()), Ok(false));
        assert_eq!(three.to_string(), "3");
    }

    #[test]
    fn styles_do_not_compare_across() {
        let alexa = Version::parse(VersionStyle::Alexa, "2").unwrap();
        let enos = Version::parse(VersionStyle::Enos, "1").unwrap();
        let err = alexa.is_newer_than(&enos).unwrap_err();
        assert_eq!(
            err,
            VersionError::StyleMismatch {
                ours: VersionStyle::Alexa,
                theirs: VersionStyle::Enos
            }
        );
        assert_eq!(
            err.to_string(),
            "cannot compare a version of Alexa style with one of EnOS style"
        );
        assert_eq!(enos.style(), VersionStyle::Enos);
        assert_eq!(enos.to_string(), "1");
    }

    #[test]
    fn errors_read_as_plain_language() {
        assert_eq!(VersionError::Empty.to_string(), "the version is empty");
        assert_eq!(
            VersionError::TooBig.to_string(),
            "the version is larger than 4294967295"
        );
        assert!(VersionError::NotDecimal.to_string().contains("digits 0-9"));
    }
}
