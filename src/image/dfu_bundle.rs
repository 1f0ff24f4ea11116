//! DFU bundles: a whole SiFli DFU package as one POSIX ustar `.tar` file, for clouds such as
//! EnOS that deliver exactly one file per firmware task.
//!
//! Contract. A bundle is a tar archive holding `package.json`, the ctrl packet and the
//! transfer files that `package.json` names (its schema is `firmware-fixtures/files/dfu/
//! package.json`'s: `ctrl_packet`, `blk_size`, `images[].img_id`, `images[].transfer`; other
//! fields are ignored, except `images[].img_length`, which must equal the transfer file's size
//! when present). [`read`] returns borrowed slices of the input ([`Bundle`]) in package order,
//! or a [`BundleError`] saying what is wrong; it never panics, whatever the bytes.
//!
//! The archive, checked before any entry is used (by `tar-no-std`, then here):
//!
//! - whole 512-byte blocks, ending in two zero blocks (what any `tar` writes; trailing zero
//!   blocks after them, such as tar's padding to 10 KiB records, are fine);
//! - every header's checksum, and its octal size field, which must parse and keep the entry
//!   inside the input, so the entries' sizes add up to less than the input's length;
//! - at most [`MAX_ENTRIES`] headers, counting directories and pax headers;
//! - regular files, directories (skipped) and pax extended headers (skipped) only; links,
//!   devices, FIFOs and GNU long-name entries are refused. A skipped pax header's records are
//!   not applied: names come from the ustar header (`prefix/name`), so a file whose real name
//!   lives only in a pax record is reported missing rather than misread;
//! - names are UTF-8 and unique; a leading `./` (from `tar -cf b.tar .`) is dropped.
//!
//! The package's own checks (block size, record offsets, image ids) are the transfer files'
//! and the package's ([`crate::flow::dfu::DfuPackage::from_bundle`]); nothing here decrypts
//! or verifies a signature, which is the device's job.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use serde::Deserialize;
use tar_no_std::{CorruptDataError, TarArchiveRef, TypeFlag};

use crate::image::sifli::DEFAULT_BLK_SIZE;

/// The name of the package description inside a bundle.
pub const PACKAGE_JSON: &str = "package.json";
/// The most tar headers a bundle may have: a package has a handful of files, and the cap
/// bounds the work and memory spent on a hostile archive.
pub const MAX_ENTRIES: usize = 64;

const BLOCK: usize = 512;
const NAME_LEN: usize = 100;
const TYPEFLAG_AT: usize = 156;

/// A bundle's contents: slices of the input, in the order `package.json` lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle<'a> {
    /// `ctrl_packet.bin`, or whatever file `package.json`'s `ctrl_packet` names.
    pub ctrl_packet: &'a [u8],
    /// The transfer files' block size (`blk_size`, default [`DEFAULT_BLK_SIZE`]).
    pub blk_size: u16,
    /// `(img_id, transfer file)` per image, in package order.
    pub images: Vec<(u8, &'a [u8])>,
}

/// Why a bundle was refused.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BundleError {
    /// The input is not whole 512-byte blocks ending in two zero blocks.
    Truncated {
        /// Bytes given.
        len: usize,
    },
    /// A header's checksum does not match its bytes.
    BadChecksum {
        /// Byte offset of the header.
        offset: usize,
    },
    /// A header's size field is not an octal number.
    BadSize {
        /// Byte offset of the header.
        offset: usize,
    },
    /// An entry's size runs past the end of the input.
    PastEnd {
        /// Byte offset of the header.
        offset: usize,
    },
    /// More headers than [`MAX_ENTRIES`].
    TooManyEntries,
    /// An entry is not a regular file, a directory or a pax header.
    Unsupported {
        /// The entry's name as stored (lossy UTF-8).
        name: String,
        /// Its tar type flag.
        typeflag: u8,
    },
    /// An entry's name is not UTF-8.
    BadName,
    /// Two entries have the same name.
    DuplicateName(String),
    /// There is no `package.json`.
    NoPackageJson,
    /// `package.json` is not JSON of the expected shape.
    BadPackageJson(String),
    /// `package.json` names a file the bundle does not hold.
    MissingFile(String),
    /// `package.json` names one transfer file for two images.
    TransferReused(String),
    /// A transfer file's size differs from its `img_length` in `package.json`.
    LengthMismatch {
        /// The transfer file.
        name: String,
        /// `img_length`.
        expected: u64,
        /// The file's size.
        actual: u64,
    },
}

impl BundleError {
    /// A stable, machine-readable code for the JS API, e.g. `"dfu-bundle-no-package-json"`.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            BundleError::Truncated { .. } => "dfu-bundle-truncated",
            BundleError::BadChecksum { .. } => "dfu-bundle-bad-checksum",
            BundleError::BadSize { .. } => "dfu-bundle-bad-size",
            BundleError::PastEnd { .. } => "dfu-bundle-past-end",
            BundleError::TooManyEntries => "dfu-bundle-too-many-entries",
            BundleError::Unsupported { .. } => "dfu-bundle-unsupported-entry",
            BundleError::BadName => "dfu-bundle-bad-name",
            BundleError::DuplicateName(_) => "dfu-bundle-duplicate-name",
            BundleError::NoPackageJson => "dfu-bundle-no-package-json",
            BundleError::BadPackageJson(_) => "dfu-bundle-bad-package-json",
            BundleError::MissingFile(_) => "dfu-bundle-missing-file",
            BundleError::TransferReused(_) => "dfu-bundle-transfer-reused",
            BundleError::LengthMismatch { .. } => "dfu-bundle-length-mismatch",
        }
    }
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BundleError::Truncated { len } => write!(
                f,
                "the DFU bundle ({len} bytes) is not a complete tar archive: the download was \
                 cut short, or it is not a .tar file"
            ),
            BundleError::BadChecksum { offset } => write!(
                f,
                "the DFU bundle's tar header at byte {offset} is damaged (its checksum is \
                 wrong), or the file is not a .tar file"
            ),
            BundleError::BadSize { offset } => write!(
                f,
                "the DFU bundle's tar header at byte {offset} has a size that is not an octal \
                 number"
            ),
            BundleError::PastEnd { offset } => write!(
                f,
                "the DFU bundle's entry at byte {offset} is larger than what follows it: the \
                 download was cut short"
            ),
            BundleError::TooManyEntries => write!(
                f,
                "the DFU bundle has more than {MAX_ENTRIES} entries; a package has only \
                 package.json, the ctrl packet and one transfer file per image"
            ),
            BundleError::Unsupported { name, typeflag } => write!(
                f,
                "the DFU bundle's entry {name:?} is {}, not a regular file; make the bundle \
                 from plain files with `tar --format=ustar`",
                kind(*typeflag)
            ),
            BundleError::BadName => f.write_str("a name in the DFU bundle is not UTF-8 text"),
            BundleError::DuplicateName(name) => {
                write!(f, "the DFU bundle holds {name} more than once")
            }
            BundleError::NoPackageJson => f.write_str("the DFU bundle has no package.json"),
            BundleError::BadPackageJson(why) => {
                write!(f, "the DFU bundle's package.json is not usable: {why}")
            }
            BundleError::MissingFile(name) => write!(
                f,
                "package.json names {name} but the DFU bundle has no such file"
            ),
            BundleError::TransferReused(name) => {
                write!(f, "package.json names {name} for more than one image")
            }
            BundleError::LengthMismatch {
                name,
                expected,
                actual,
            } => write!(
                f,
                "{name} is {actual} bytes but package.json says img_length {expected}: the \
                 bundle mixes files of different packages"
            ),
        }
    }
}

/// What a tar type flag means, for messages.
fn kind(typeflag: u8) -> &'static str {
    match typeflag {
        b'1' => "a hard link",
        b'2' => "a symbolic link",
        b'3' | b'4' => "a device",
        b'6' => "a FIFO",
        b'7' => "a contiguous file",
        b'L' | b'K' => "a GNU long-name record",
        b'S' => "a sparse file",
        _ => "of an unknown tar type",
    }
}

/// `package.json`, the fields a bundle needs; serde ignores the others.
#[derive(Deserialize)]
struct Description {
    ctrl_packet: String,
    #[serde(default = "default_blk_size")]
    blk_size: u16,
    images: Vec<ImageEntry>,
}

#[derive(Deserialize)]
struct ImageEntry {
    img_id: u8,
    transfer: String,
    img_length: Option<u64>,
}

fn default_blk_size() -> u16 {
    DEFAULT_BLK_SIZE
}

/// Reads a DFU bundle; see the module docs for what is checked.
pub fn read(bytes: &[u8]) -> Result<Bundle<'_>, BundleError> {
    let files = entries(bytes)?;
    let find = |name: &str| {
        files
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, data)| data)
            .ok_or_else(|| BundleError::MissingFile(name.to_string()))
    };
    let json = find(PACKAGE_JSON).map_err(|_| BundleError::NoPackageJson)?;
    let description: Description =
        serde_json::from_slice(json).map_err(|e| BundleError::BadPackageJson(e.to_string()))?;
    let ctrl_packet = find(&description.ctrl_packet)?;
    let mut images = Vec::with_capacity(description.images.len().min(MAX_ENTRIES));
    for (i, entry) in description.images.iter().enumerate() {
        let data = find(&entry.transfer)?;
        if description.images[..i]
            .iter()
            .any(|e| e.transfer == entry.transfer)
        {
            return Err(BundleError::TransferReused(entry.transfer.clone()));
        }
        let actual = data.len() as u64;
        if let Some(expected) = entry.img_length.filter(|&n| n != actual) {
            return Err(BundleError::LengthMismatch {
                name: entry.transfer.clone(),
                expected,
                actual,
            });
        }
        images.push((entry.img_id, data));
    }
    Ok(Bundle {
        ctrl_packet,
        blk_size: description.blk_size,
        images,
    })
}

/// The archive's regular files as `(name, data)`, after every structural check.
fn entries(bytes: &[u8]) -> Result<Vec<(String, &[u8])>, BundleError> {
    let archive = TarArchiveRef::new(bytes).map_err(|e| corrupt(bytes, e))?;
    for (count, (block, header)) in archive.headers().enumerate() {
        if count == MAX_ENTRIES {
            return Err(BundleError::TooManyEntries);
        }
        match header.typeflag.try_to_type_flag() {
            Ok(t) if t.is_regular_file() => {}
            Ok(TypeFlag::DIRTYPE | TypeFlag::XHDTYPE | TypeFlag::XGLTYPE) => {}
            _ => return Err(unsupported(bytes, block)),
        }
    }
    let mut files: Vec<(String, &[u8])> = Vec::new();
    for entry in archive.entries() {
        let stored = entry.filename();
        let name = stored.as_str().map_err(|_| BundleError::BadName)?;
        let name = name.strip_prefix("./").unwrap_or(name);
        if files.iter().any(|(n, _)| n == name) {
            return Err(BundleError::DuplicateName(name.to_string()));
        }
        files.push((name.to_string(), entry.data()));
    }
    Ok(files)
}

fn corrupt(bytes: &[u8], error: CorruptDataError) -> BundleError {
    match error {
        CorruptDataError::EmptyArchive
        | CorruptDataError::InvalidBlockSize
        | CorruptDataError::TooShort { .. }
        | CorruptDataError::MissingTerminator => BundleError::Truncated { len: bytes.len() },
        CorruptDataError::InvalidChecksum { block_index } => BundleError::BadChecksum {
            offset: block_index.saturating_mul(BLOCK),
        },
        CorruptDataError::InvalidPayloadSize { block_index } => BundleError::BadSize {
            offset: block_index.saturating_mul(BLOCK),
        },
        CorruptDataError::PayloadExtendsBeyondArchive { block_index } => BundleError::PastEnd {
            offset: block_index.saturating_mul(BLOCK),
        },
        CorruptDataError::InvalidTypeFlag { block_index } => unsupported(bytes, block_index),
    }
}

/// [`BundleError::Unsupported`] for the header at `block`, read from the raw bytes, as the
/// parsed header does not expose an unknown type flag.
fn unsupported(bytes: &[u8], block: usize) -> BundleError {
    let header = bytes
        .get(block.saturating_mul(BLOCK)..)
        .and_then(|rest| rest.get(..BLOCK))
        .unwrap_or_default();
    let name = header.get(..NAME_LEN).unwrap_or_default();
    let name = name.split(|&b| b == 0).next().unwrap_or_default();
    BundleError::Unsupported {
        name: String::from_utf8_lossy(name).into_owned(),
        typeflag: header.get(TYPEFLAG_AT).copied().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::vec;

    use crate::test_rng::Rng;

    /// One ustar header, laid out as Python's `tarfile` (USTAR_FORMAT) and GNU tar write it.
    fn header(name: &str, typeflag: u8, size: usize) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[TYPEFLAG_AT] = typeflag;
        h[257..265].copy_from_slice(b"ustar\x0000");
        seal(&mut h);
        h
    }

    /// Writes the checksum of `h` into its checksum field.
    fn seal(h: &mut [u8; BLOCK]) {
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }

    /// A tar archive of `(name, typeflag, data)` entries.
    fn tar(entries: &[(&str, u8, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(name, typeflag, data) in entries {
            out.extend_from_slice(&header(name, typeflag, data.len()));
            out.extend_from_slice(data);
            out.resize(out.len().next_multiple_of(BLOCK), 0);
        }
        out.resize(out.len() + 2 * BLOCK, 0);
        out
    }

    const JSON: &[u8] = br#"{"ctrl_packet": "ctrl_packet.bin", "blk_size": 16, "dfu_id": 1,
        "images": [
          {"img_id": 4, "transfer": "b.bin", "img_length": 3, "flags": 0},
          {"img_id": 0, "transfer": "a.bin"}
        ]}"#;

    fn good() -> Vec<u8> {
        tar(&[
            (PACKAGE_JSON, b'0', JSON),
            ("ctrl_packet.bin", b'0', &[0xC7; 3]),
            ("a.bin", b'0', b"AAAA"),
            ("b.bin", b'0', b"BBB"),
        ])
    }

    /// The header of a 3-byte `ctrl_packet.bin` as Python's tarfile writes it, every field a
    /// literal, checksum 010723 included.
    fn literal_header() -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        for (at, field) in [
            (0, &b"ctrl_packet.bin"[..]),
            (100, b"0000644\0"),
            (108, b"0000000\0"),
            (116, b"0000000\0"),
            (124, b"00000000003\0"),
            (136, b"00000000000\0"),
            (148, b"010723\0 "),
            (156, b"0"),
            (257, b"ustar\0"),
            (263, b"00"),
        ] {
            h[at..at + field.len()].copy_from_slice(field);
        }
        h
    }

    #[test]
    fn reads_a_bundle_in_package_order() {
        let bytes = good();
        assert_eq!(bytes.len(), 10 * BLOCK);
        let bundle = read(&bytes).expect("reads");
        assert_eq!(bundle.ctrl_packet, [0xC7; 3]);
        assert_eq!(bundle.blk_size, 16);
        assert_eq!(bundle.images, vec![(4, &b"BBB"[..]), (0, &b"AAAA"[..])]);
    }

    #[test]
    fn literal_header_has_the_known_checksum_and_reads() {
        let literal = literal_header();
        assert_eq!(literal, header("ctrl_packet.bin", b'0', 3));
        let json = br#"{"ctrl_packet": "ctrl_packet.bin", "images": []}"#;
        let mut bytes = tar(&[(PACKAGE_JSON, b'0', json)]);
        bytes.truncate(bytes.len() - 2 * BLOCK);
        bytes.extend_from_slice(&literal);
        bytes.extend_from_slice(&[1, 2, 3]);
        bytes.resize(bytes.len().next_multiple_of(BLOCK) + 2 * BLOCK, 0);
        let bundle = read(&bytes).expect("reads");
        assert_eq!(bundle.ctrl_packet, [1, 2, 3]);
        assert_eq!(bundle.blk_size, DEFAULT_BLK_SIZE, "default block size");
        assert!(bundle.images.is_empty());
    }

    #[test]
    fn skips_directories_and_pax_headers_and_a_leading_dot_slash() {
        let pax = b"20 mtime=0.123456789\n";
        let bytes = tar(&[
            ("./", b'5', b""),
            ("./package.json", b'0', JSON),
            ("PaxHeaders/ctrl_packet.bin", b'x', pax),
            ("./ctrl_packet.bin", b'0', &[0xC7; 3]),
            ("a.bin", b'0', b"AAAA"),
            ("./b.bin", b'0', b"BBB"),
            ("extra.txt", b'0', b"not named, ignored"),
        ]);
        let bundle = read(&bytes).expect("reads");
        assert_eq!(bundle.images, vec![(4, &b"BBB"[..]), (0, &b"AAAA"[..])]);
    }

    #[test]
    fn a_prefixed_name_is_joined() {
        // ustar keeps long paths as prefix (offset 345) + '/' + name.
        let with_prefix = |prefix: &[u8]| {
            let mut bytes = good();
            let mut h = header(PACKAGE_JSON, b'0', JSON.len());
            h[345..345 + prefix.len()].copy_from_slice(prefix);
            seal(&mut h);
            bytes[..BLOCK].copy_from_slice(&h);
            read(&bytes).map(drop)
        };
        assert!(with_prefix(b".").is_ok(), "./package.json");
        assert_eq!(with_prefix(b"dfu"), Err(BundleError::NoPackageJson));
    }

    #[test]
    fn structural_errors() {
        let good = good();
        assert_eq!(read(&[]), Err(BundleError::Truncated { len: 0 }));
        // A header cut short.
        assert_eq!(read(&good[..300]), Err(BundleError::Truncated { len: 300 }));
        // Whole blocks, but no terminator: cut at a block boundary.
        assert_eq!(
            read(&good[..4 * BLOCK]),
            Err(BundleError::Truncated { len: 4 * BLOCK })
        );

        let mut bad = good.clone();
        bad[2 * BLOCK + 10] ^= 1; // inside the ctrl packet's header name
        assert_eq!(
            read(&bad),
            Err(BundleError::BadChecksum { offset: 2 * BLOCK })
        );

        let mut bad = good.clone();
        let mut h = header("ctrl_packet.bin", b'0', 3);
        h[124..136].copy_from_slice(b"0000000009x\0");
        seal(&mut h);
        bad[2 * BLOCK..3 * BLOCK].copy_from_slice(&h);
        assert_eq!(read(&bad), Err(BundleError::BadSize { offset: 2 * BLOCK }));

        let mut bad = good.clone();
        let h = header("ctrl_packet.bin", b'0', 100 * BLOCK);
        bad[2 * BLOCK..3 * BLOCK].copy_from_slice(&h);
        assert_eq!(read(&bad), Err(BundleError::PastEnd { offset: 2 * BLOCK }));
    }

    #[test]
    fn entry_errors() {
        let ctrl: &[u8] = &[0xC7; 3];
        let names: Vec<String> = (0..MAX_ENTRIES).map(|i| format!("f{i}")).collect();
        let many: Vec<(&str, u8, &[u8])> =
            names.iter().map(|n| (n.as_str(), b'0', &[][..])).collect();
        assert!(read(&tar(&many)).is_err_and(|e| e == BundleError::NoPackageJson));
        let mut too_many = many.clone();
        too_many.push(("one more", b'5', b""));
        assert_eq!(read(&tar(&too_many)), Err(BundleError::TooManyEntries));

        for typeflag in [b'1', b'2', b'L', b'S', b'Z'] {
            let bytes = tar(&[
                (PACKAGE_JSON, b'0', JSON),
                ("ctrl_packet.bin", typeflag, b""),
            ]);
            let error = read(&bytes).expect_err("refused");
            assert_eq!(
                error,
                BundleError::Unsupported {
                    name: "ctrl_packet.bin".to_string(),
                    typeflag
                }
            );
            assert_eq!(error.code(), "dfu-bundle-unsupported-entry");
        }

        let mut bytes = tar(&[(PACKAGE_JSON, b'0', JSON)]);
        bytes[3] = 0xFF;
        let mut h: [u8; BLOCK] = bytes[..BLOCK].try_into().unwrap();
        seal(&mut h);
        bytes[..BLOCK].copy_from_slice(&h);
        assert_eq!(read(&bytes), Err(BundleError::BadName));

        let bytes = tar(&[
            (PACKAGE_JSON, b'0', JSON),
            ("ctrl_packet.bin", b'0', ctrl),
            ("./ctrl_packet.bin", b'0', ctrl),
        ]);
        assert_eq!(
            read(&bytes),
            Err(BundleError::DuplicateName("ctrl_packet.bin".to_string()))
        );
    }

    #[test]
    fn package_json_errors() {
        let ctrl: &[u8] = &[0xC7; 3];
        let with = |json: &[u8], files: &[(&str, &[u8])]| {
            let mut entries = vec![(PACKAGE_JSON, b'0', json)];
            entries.extend(files.iter().map(|&(n, d)| (n, b'0', d)));
            read(&tar(&entries)).map(drop)
        };
        let all: &[(&str, &[u8])] = &[
            ("ctrl_packet.bin", ctrl),
            ("a.bin", b"AAAA"),
            ("b.bin", b"BBB"),
        ];
        assert!(with(JSON, all).is_ok());

        assert_eq!(
            read(&tar(&[("ctrl_packet.bin", b'0', ctrl)])),
            Err(BundleError::NoPackageJson)
        );
        let error = with(JSON, &all[..2]).expect_err("b.bin missing");
        assert_eq!(error, BundleError::MissingFile("b.bin".to_string()));
        assert_eq!(
            error.to_string(),
            "package.json names b.bin but the DFU bundle has no such file"
        );
        assert_eq!(
            with(JSON, &all[1..]),
            Err(BundleError::MissingFile("ctrl_packet.bin".to_string()))
        );

        for json in [
            &b"{"[..],
            b"[]",
            br#"{"images": []}"#,
            br#"{"ctrl_packet": "ctrl_packet.bin", "images": [{"img_id": 256, "transfer": "a.bin"}]}"#,
            br#"{"ctrl_packet": "ctrl_packet.bin", "blk_size": -1, "images": []}"#,
            br#"{"ctrl_packet": "ctrl_packet.bin", "images": [{"transfer": "a.bin"}]}"#,
        ] {
            let error = with(json, all).expect_err("bad JSON");
            assert_eq!(error.code(), "dfu-bundle-bad-package-json", "{error}");
        }

        let reused = br#"{"ctrl_packet": "ctrl_packet.bin", "images": [
            {"img_id": 0, "transfer": "a.bin"}, {"img_id": 1, "transfer": "a.bin"}]}"#;
        assert_eq!(
            with(reused, all),
            Err(BundleError::TransferReused("a.bin".to_string()))
        );
        let wrong_length = br#"{"ctrl_packet": "ctrl_packet.bin", "images": [
            {"img_id": 0, "transfer": "a.bin", "img_length": 5}]}"#;
        assert_eq!(
            with(wrong_length, all),
            Err(BundleError::LengthMismatch {
                name: "a.bin".to_string(),
                expected: 5,
                actual: 4
            })
        );
    }

    #[test]
    fn every_error_has_a_code_and_a_message() {
        let errors = [
            BundleError::Truncated { len: 1 },
            BundleError::BadChecksum { offset: 0 },
            BundleError::BadSize { offset: 0 },
            BundleError::PastEnd { offset: 0 },
            BundleError::TooManyEntries,
            BundleError::Unsupported {
                name: "x".to_string(),
                typeflag: b'2',
            },
            BundleError::BadName,
            BundleError::DuplicateName("x".to_string()),
            BundleError::NoPackageJson,
            BundleError::BadPackageJson("x".to_string()),
            BundleError::MissingFile("x".to_string()),
            BundleError::TransferReused("x".to_string()),
            BundleError::LengthMismatch {
                name: "x".to_string(),
                expected: 1,
                actual: 2,
            },
        ];
        let mut codes: Vec<_> = errors.iter().map(BundleError::code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), errors.len(), "codes are distinct");
        for error in &errors {
            assert!(error.code().starts_with("dfu-bundle-"));
            assert!(error.to_string().len() > 20, "{error}");
        }
        assert_eq!(
            BundleError::NoPackageJson.to_string(),
            "the DFU bundle has no package.json"
        );
    }

    #[test]
    fn never_panics_on_damaged_bundles() {
        let good = good();
        let mut rng = Rng(0x00B0_D1E5);
        for _ in 0..2000 {
            let mut bytes = good.clone();
            match rng.below(3) {
                0 => {
                    for _ in 0..1 + rng.below(8) {
                        let at = rng.below(bytes.len());
                        bytes[at] = rng.next() as u8;
                    }
                }
                1 => bytes.truncate(rng.below(good.len())),
                _ => {
                    // A damaged header with a valid checksum gets past the checksum test.
                    let block = rng.below(4) * BLOCK;
                    let at = block + rng.below(BLOCK);
                    bytes[at] = rng.next() as u8;
                    let mut h: [u8; BLOCK] = bytes[block..block + BLOCK].try_into().unwrap();
                    seal(&mut h);
                    bytes[block..block + BLOCK].copy_from_slice(&h);
                }
            }
            let _ = read(&bytes);
        }
        for len in [0, 1, BLOCK, 3 * BLOCK, 64 * BLOCK] {
            let _ = read(&rng.bytes(len));
            let _ = read(&vec![0; len]);
        }
    }
}
