//! Update manifests: otaweb's own JSON format, and the Microchip OTA service's.
//!
//! Contract: [`Manifest::parse`] and [`ManifestEntry::parse_json`] turn text into typed
//! entries or a [`ManifestError`] that names the image and field at fault; every digest,
//! signature, version and size in a parsed entry is already checked for form (whether the
//! bytes match is [`verify`](crate::image::verify)'s job). [`MicrochipEntry::parse_manifest`]
//! reads a Microchip manifest the way the device's service does. Text is capped at
//! [`MAX_MANIFEST_LEN`] bytes and our format at [`MAX_IMAGES`] images, so parsing work and
//! memory are bounded whatever the input.
//!
//! Our format, version 1 (unknown fields are ignored, so later versions can add fields):
//!
//! ```json
//! {"otaweb": 1, "images": [{"name": "app", "flow": "gadget", "version": "2",
//!   "url": "app-v2.bin", "size": 98304, "sha256": "<64 hex>", "md5": "<32 hex>",
//!   "signature": "<base64 r||s>", "compression": "zlib"}]}
//! ```
//!
//! `md5`, `signature` and `compression` are optional (absent or `null`). With
//! `"compression": "zlib"` the file at `url` is a zlib stream and `size`, `sha256`, `md5` and
//! `signature` describe the inflated image. Keys are matched exactly, and a known key given
//! twice is refused, because JSON parsers disagree on which copy wins.
//!
//! The JSON is read into an ordered tree (serde, with the document's key order kept) and the
//! fields are taken from it by hand, so each error can say which image and field it is about;
//! serde's derived structs report a wrong type without naming the field.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Serialize;

use crate::image::digest::{parse_hex, to_hex, HexError};
use crate::image::signature::{ImageSignature, SignatureError};
use crate::image::version::{MicrochipVersion, Version, VersionError, VersionStyle};

/// The largest manifest text accepted, in bytes, in either format.
pub const MAX_MANIFEST_LEN: usize = 64 * 1024;

/// The most images one otaweb manifest may list.
pub const MAX_IMAGES: usize = 64;

/// The largest image size a manifest entry may state, in bytes.
pub const MAX_IMAGE_SIZE: u64 = 64 * 1024 * 1024;

/// The longest image name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// The longest image URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// The largest manifest the Microchip OTA service reads by default (its "JSON file size"
/// option, at most 2000 bytes). We parse larger ones; a device will not.
pub const MICROCHIP_MANIFEST_LIMIT: usize = 2000;

/// The longest `URL` the Microchip OTA service stores (its `OTA_URL_SIZE` buffer). We accept
/// longer URLs up to [`MAX_URL_LEN`]; a device will not.
pub const MICROCHIP_URL_LIMIT: usize = 100;

/// Which update flow an image is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowKind {
    /// Alexa Gadgets OTA over BLE.
    Gadget,
    /// SiFli DFU over BLE.
    Dfu,
    /// EnOS IoT OTA over MQTT.
    Enos,
}

impl FlowKind {
    /// The manifest name: `"gadget"`, `"dfu"` or `"enos"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            FlowKind::Gadget => "gadget",
            FlowKind::Dfu => "dfu",
            FlowKind::Enos => "enos",
        }
    }

    /// The flow named `name` exactly as [`FlowKind::as_str`] writes it.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "gadget" => Some(FlowKind::Gadget),
            "dfu" => Some(FlowKind::Dfu),
            "enos" => Some(FlowKind::Enos),
            _ => None,
        }
    }

    /// How this flow's versions are written and compared.
    ///
    /// The gadget reports a decimal `u32` ([`VersionStyle::Alexa`]). EnOS versions are
    /// free-form ([`VersionStyle::Enos`]). SiFli firmware versions are whatever the product
    /// defines, so DFU uses the same free-form order as EnOS.
    #[must_use]
    pub fn version_style(self) -> VersionStyle {
        match self {
            FlowKind::Gadget => VersionStyle::Alexa,
            FlowKind::Dfu | FlowKind::Enos => VersionStyle::Enos,
        }
    }
}

impl fmt::Display for FlowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the file at an entry's URL is packed.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// One zlib stream (RFC 1950) of the whole image.
    Zlib,
}

impl Compression {
    /// The manifest name, `"zlib"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Zlib => "zlib",
        }
    }
}

/// An otaweb manifest: the images on offer.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Manifest {
    /// The images, in manifest order.
    pub images: Vec<ManifestEntry>,
}

/// One image of an otaweb manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestEntry {
    /// A name for people, e.g. `"app"`.
    pub name: String,
    /// The flow this image is for.
    pub flow: FlowKind,
    /// The image's version, in the flow's [`VersionStyle`].
    pub version: String,
    /// Where to fetch the file, absolute or relative to the manifest.
    pub url: String,
    /// The image's size in bytes (after inflating, if compressed).
    pub size: u64,
    /// SHA-256 of the image (after inflating, if compressed).
    pub sha256: [u8; 32],
    /// MD5 of the image (after inflating), for flows whose devices check MD5.
    pub md5: Option<[u8; 16]>,
    /// ECDSA P-256 signature over the image's SHA-256 (after inflating).
    pub signature: Option<ImageSignature>,
    /// How the file at `url` is packed; `None` means it is the image itself.
    pub compression: Option<Compression>,
}

/// Where in a manifest a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// The top-level object.
    Top,
    /// `images[i]` of an otaweb manifest.
    Image(usize),
    /// An entry parsed on its own by [`ManifestEntry::parse_json`].
    Entry,
    /// `ota[i]` of a Microchip manifest.
    Ota(usize),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Top => f.write_str("the manifest"),
            Location::Image(i) => write!(f, "images[{i}]"),
            Location::Entry => f.write_str("the image entry"),
            Location::Ota(i) => write!(f, "ota[{i}]"),
        }
    }
}

/// A field's path for messages, e.g. `images[2].sha256`.
struct FieldPath(Location, &'static str);

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Location::Top | Location::Entry => write!(f, "\"{}\"", self.1),
            Location::Image(i) => write!(f, "images[{i}].{}", self.1),
            Location::Ota(i) => write!(f, "ota[{i}].{}", self.1),
        }
    }
}

/// What is wrong with a field that is present. Its `Display` reads as a predicate of the
/// field's path: "images\[0\].size" + " must be a whole number".
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldProblem {
    /// The JSON value has the wrong type.
    WrongType {
        /// What the field must be, e.g. `"a string"`.
        expected: &'static str,
    },
    /// The key appears more than once.
    Duplicate,
    /// The text is empty.
    Empty,
    /// The text is longer than allowed.
    TooLong {
        /// The longest text accepted, in bytes.
        limit: usize,
    },
    /// A digest is not hex of the right length.
    Hex(HexError),
    /// A signature is not base64 of a raw `r‖s` P-256 signature.
    Signature(SignatureError),
    /// A version does not parse in the flow's style.
    Version(VersionError),
    /// An image size is 0 or above [`MAX_IMAGE_SIZE`].
    SizeOutOfRange {
        /// The size given.
        found: u64,
    },
    /// The flow is not one of `gadget`, `dfu`, `enos`.
    UnknownFlow,
    /// The compression is not `zlib`.
    UnknownCompression,
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldProblem::WrongType { expected } => write!(f, "must be {expected}"),
            FieldProblem::Duplicate => f.write_str("appears more than once"),
            FieldProblem::Empty => f.write_str("is empty"),
            FieldProblem::TooLong { limit } => write!(f, "is longer than {limit} characters"),
            FieldProblem::Hex(e) => write!(f, "is not a valid hex digest ({e})"),
            FieldProblem::Signature(e) => write!(f, "is not valid: {e}"),
            FieldProblem::Version(e) => write!(f, "is not valid for this flow: {e}"),
            FieldProblem::SizeOutOfRange { found } => write!(
                f,
                "is {found}, but must be between 1 and {MAX_IMAGE_SIZE} bytes"
            ),
            FieldProblem::UnknownFlow => f.write_str("must be \"gadget\", \"dfu\" or \"enos\""),
            FieldProblem::UnknownCompression => f.write_str("must be \"zlib\" or absent"),
        }
    }
}

/// Why a manifest was refused.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManifestError {
    /// The text is longer than [`MAX_MANIFEST_LEN`].
    TooLarge {
        /// The most bytes accepted.
        limit: usize,
        /// The bytes given.
        found: usize,
    },
    /// The text is not JSON.
    NotJson {
        /// Line of the first error, from 1.
        line: usize,
        /// Column of the first error, from 1.
        column: usize,
    },
    /// The manifest, or one of its entries, is not a JSON object.
    NotAnObject {
        /// Which value.
        at: Location,
    },
    /// The top level has no `"otaweb"` format number.
    NotOtaweb,
    /// The `"otaweb"` format number is one this build does not read.
    UnsupportedFormat {
        /// The number given.
        found: u64,
    },
    /// The manifest lists more than [`MAX_IMAGES`] images.
    TooManyImages {
        /// The most images accepted.
        limit: usize,
        /// The images listed.
        found: usize,
    },
    /// A Microchip manifest's `"ota"` list is empty.
    NoImages,
    /// A required field is absent.
    MissingField {
        /// Where it should be.
        at: Location,
        /// The field's name, e.g. `"sha256"` or `"Digest"`.
        field: &'static str,
    },
    /// A field is present but unusable.
    BadField {
        /// Where it is.
        at: Location,
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        problem: FieldProblem,
    },
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestError::TooLarge { limit, found } => write!(
                f,
                "the manifest is {found} bytes, more than the {limit} accepted; \
                 is this the right file?"
            ),
            ManifestError::NotJson { line, column } => write!(
                f,
                "the manifest is not valid JSON (first error at line {line}, column {column})"
            ),
            ManifestError::NotAnObject { at } => write!(f, "{at} must be a JSON object {{…}}"),
            ManifestError::NotOtaweb => f.write_str(
                "this is not an otaweb manifest: it has no \"otaweb\" format number at the top",
            ),
            ManifestError::UnsupportedFormat { found } => write!(
                f,
                "the manifest is in otaweb format {found}, but this updater reads format 1 \
                 only; update the updater or publish a format 1 manifest"
            ),
            ManifestError::TooManyImages { limit, found } => write!(
                f,
                "the manifest lists {found} images, more than the {limit} accepted"
            ),
            ManifestError::NoImages => f.write_str("the manifest's \"ota\" list is empty"),
            ManifestError::MissingField { at, field } => {
                write!(f, "{} is missing from the manifest", FieldPath(*at, field))
            }
            ManifestError::BadField { at, field, problem } => {
                write!(f, "{} {problem}", FieldPath(*at, field))
            }
        }
    }
}

impl Manifest {
    /// Parses an otaweb manifest.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let top = parse_tree(text)?;
        let top = Object::of(&top, Location::Top)?;
        let format = match top.exact("otaweb")? {
            None => return Err(ManifestError::NotOtaweb),
            Some(v) => top.whole_number("otaweb", v)?,
        };
        if format != 1 {
            return Err(ManifestError::UnsupportedFormat { found: format });
        }
        let images = match top.exact("images")? {
            None => {
                return Err(ManifestError::MissingField {
                    at: Location::Top,
                    field: "images",
                })
            }
            Some(v) => top.array("images", v)?,
        };
        if images.len() > MAX_IMAGES {
            return Err(ManifestError::TooManyImages {
                limit: MAX_IMAGES,
                found: images.len(),
            });
        }
        let images = images
            .iter()
            .enumerate()
            .map(|(i, entry)| ManifestEntry::from_tree(entry, Location::Image(i)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Manifest { images })
    }

    /// The manifest as format 1 JSON: 2-space indented, keys in a fixed order, a final newline.
    ///
    /// Digests are written in lowercase hex and signatures as padded base64, so parsing the
    /// output gives back an equal [`Manifest`].
    #[must_use]
    pub fn to_json(&self) -> String {
        let out = OutManifest {
            otaweb: 1,
            images: self.images.iter().map(OutEntry::from).collect(),
        };
        // Serializing structs of strings and integers cannot fail (only maps with non-string
        // keys can), so the empty fallback is never taken.
        let mut json = serde_json::to_string_pretty(&out).unwrap_or_default();
        json.push('\n');
        json
    }

    /// The newest image for `flow` whose version is higher than `current`.
    ///
    /// Versions compare in the flow's [`VersionStyle`]. `None` when nothing is newer, or when
    /// `current` is not a version in that style (nothing can be shown to be newer). Entries
    /// whose version does not parse (possible only for entries built by hand) are skipped.
    /// Among equal newest versions the first in manifest order wins.
    #[must_use]
    pub fn newest(&self, flow: FlowKind, current: &str) -> Option<&ManifestEntry> {
        let style = flow.version_style();
        let current = Version::parse(style, current).ok()?;
        let mut best: Option<(&ManifestEntry, Version)> = None;
        for entry in self.images.iter().filter(|e| e.flow == flow) {
            let Ok(version) = Version::parse(style, &entry.version) else {
                continue;
            };
            if version.is_newer_than(&current) != Ok(true) {
                continue;
            }
            let better = match &best {
                None => true,
                Some((_, b)) => version.is_newer_than(b) == Ok(true),
            };
            if better {
                best = Some((entry, version));
            }
        }
        best.map(|(entry, _)| entry)
    }
}

impl ManifestEntry {
    /// Parses one entry on its own: a JSON object of the `images[]` schema.
    pub fn parse_json(text: &str) -> Result<Self, ManifestError> {
        let tree = parse_tree(text)?;
        Self::from_tree(&tree, Location::Entry)
    }

    fn from_tree(tree: &Json, at: Location) -> Result<Self, ManifestError> {
        let obj = Object::of(tree, at)?;
        let name = obj.required_text("name", MAX_NAME_LEN)?;
        let flow_text = obj.required_text("flow", MAX_NAME_LEN)?;
        let flow = FlowKind::from_name(flow_text)
            .ok_or_else(|| obj.bad("flow", FieldProblem::UnknownFlow))?;
        let version = obj.required_str("version")?;
        Version::parse(flow.version_style(), version)
            .map_err(|e| obj.bad("version", FieldProblem::Version(e)))?;
        let url = obj.required_text("url", MAX_URL_LEN)?;
        let size = obj.whole_number("size", obj.required("size")?)?;
        if size == 0 || size > MAX_IMAGE_SIZE {
            return Err(obj.bad("size", FieldProblem::SizeOutOfRange { found: size }));
        }
        let sha256 = obj.hex::<32>("sha256", obj.required_str("sha256")?)?;
        let md5 = match obj.optional_str("md5")? {
            None => None,
            Some(text) => Some(obj.hex::<16>("md5", text)?),
        };
        let signature = match obj.optional_str("signature")? {
            None => None,
            Some(text) => Some(
                ImageSignature::from_base64(text)
                    .map_err(|e| obj.bad("signature", FieldProblem::Signature(e)))?,
            ),
        };
        let compression = match obj.optional_str("compression")? {
            None => None,
            Some("zlib") => Some(Compression::Zlib),
            Some(_) => return Err(obj.bad("compression", FieldProblem::UnknownCompression)),
        };
        Ok(ManifestEntry {
            name: name.to_string(),
            flow,
            version: version.to_string(),
            url: url.to_string(),
            size,
            sha256,
            md5,
            signature,
            compression,
        })
    }
}

/// The image a Microchip OTA service manifest offers.
///
/// The manifest is `{"ota": [{"Version": 3, "URL": "…", "Digest": "<64 hex>",
/// "Signature": "<base64>", "EraseVer": false}, …]}`. The service reads it with cJSON, and
/// [`MicrochipEntry::parse_manifest`] reads it the same way: keys match case-insensitively
/// (`"version"`, `"VERSION"` all work) and the first matching key wins; only the **last**
/// element of `"ota"` is the image, earlier ones are not looked at. `Patch` (delta updates)
/// and `files` (internal-flash file slots) are not supported and are ignored, so a manifest
/// that relies on them is read as its full image at `URL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MicrochipEntry {
    /// The image version; the service installs it only if greater than the running one.
    pub version: MicrochipVersion,
    /// Where the image is. Devices store at most [`MICROCHIP_URL_LIMIT`] characters.
    pub url: String,
    /// SHA-256 of the image.
    pub digest: [u8; 32],
    /// ECDSA P-256 signature of the image (Secure OTA), checked by the device's bootloader.
    pub signature: Option<ImageSignature>,
    /// `EraseVer`: the device deletes its stored image of this version instead of downloading.
    pub erase: bool,
}

impl MicrochipEntry {
    /// Parses a Microchip OTA service manifest and returns the image it offers.
    ///
    /// Text up to [`MAX_MANIFEST_LEN`] is accepted; compare with [`MICROCHIP_MANIFEST_LIMIT`]
    /// to know whether a device with the default configuration would read it. `Version` must
    /// be a whole JSON number from 1 to `u32::MAX`, `Digest` exactly 64 hex digits (the device
    /// ignores anything after 64; we refuse it as a likely mistake).
    pub fn parse_manifest(text: &str) -> Result<Self, ManifestError> {
        let top = parse_tree(text)?;
        let top = Object::of(&top, Location::Top)?;
        let list = match top.case_insensitive("ota") {
            None => {
                return Err(ManifestError::MissingField {
                    at: Location::Top,
                    field: "ota",
                })
            }
            Some(v) => top.array("ota", v)?,
        };
        let (index, last) = match list.len().checked_sub(1).zip(list.last()) {
            Some(found) => found,
            None => return Err(ManifestError::NoImages),
        };
        let obj = Object::of(last, Location::Ota(index))?;
        let required = |field| {
            obj.case_insensitive(field)
                .ok_or(ManifestError::MissingField { at: obj.at, field })
        };
        let version = obj.whole_number("Version", required("Version")?)?;
        let version = u32::try_from(version)
            .map_err(|_| VersionError::TooBig)
            .and_then(MicrochipVersion::new)
            .map_err(|e| obj.bad("Version", FieldProblem::Version(e)))?;
        let url = obj.text("URL", required("URL")?, MAX_URL_LEN)?;
        let digest = obj.hex::<32>("Digest", obj.str("Digest", required("Digest")?)?)?;
        let signature = match obj.case_insensitive("Signature") {
            None | Some(Json::Null) => None,
            Some(v) => Some(
                ImageSignature::from_base64(obj.str("Signature", v)?)
                    .map_err(|e| obj.bad("Signature", FieldProblem::Signature(e)))?,
            ),
        };
        let erase = match obj.case_insensitive("EraseVer") {
            None | Some(Json::Null) => false,
            Some(Json::Bool(b)) => *b,
            Some(_) => {
                return Err(obj.bad(
                    "EraseVer",
                    FieldProblem::WrongType {
                        expected: "true or false",
                    },
                ))
            }
        };
        Ok(MicrochipEntry {
            version,
            url: url.to_string(),
            digest,
            signature,
            erase,
        })
    }

    /// This image as an otaweb entry for `flow`, named `name`, of `size` bytes.
    ///
    /// Microchip manifests state no size, so `size` is whatever the caller knows (e.g. the
    /// downloaded length); the digest is what binds the bytes. The version is written in
    /// decimal, which every flow's version style reads and orders numerically. `None` when
    /// the entry asks the device to erase a version rather than install one.
    #[must_use]
    pub fn to_manifest_entry(
        &self,
        name: &str,
        flow: FlowKind,
        size: u64,
    ) -> Option<ManifestEntry> {
        if self.erase {
            return None;
        }
        Some(ManifestEntry {
            name: name.to_string(),
            flow,
            version: self.version.to_string(),
            url: self.url.clone(),
            size,
            sha256: self.digest,
            md5: None,
            signature: self.signature,
            compression: None,
        })
    }
}

/// A JSON value with object keys in document order (serde_json's own map would sort them,
/// losing the order cJSON's first-match rule depends on, and merge duplicates silently).
enum Json {
    Null,
    Bool(bool),
    /// A number: `Some` if it is a whole number from 0 to `u64::MAX`, else `None`.
    Number(Option<u64>),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(Some(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(u64::try_from(v).ok()))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Json, E> {
        Ok(Json::Number(None))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut fields = Vec::new();
        while let Some(field) = map.next_entry::<String, Json>()? {
            fields.push(field);
        }
        Ok(Json::Object(fields))
    }
}

/// Parses capped text into a [`Json`] tree. serde_json limits nesting to 128 levels, so
/// deep input cannot exhaust the stack.
fn parse_tree(text: &str) -> Result<Json, ManifestError> {
    if text.len() > MAX_MANIFEST_LEN {
        return Err(ManifestError::TooLarge {
            limit: MAX_MANIFEST_LEN,
            found: text.len(),
        });
    }
    // From the bytes: the other JSON readers take slices too, so the updater carries one
    // serde_json reader (the text is UTF-8 already; line and column are the same).
    serde_json::from_slice(text.as_bytes()).map_err(|e| ManifestError::NotJson {
        line: e.line(),
        column: e.column(),
    })
}

/// An object's fields and where the object is, for field lookups that report errors.
struct Object<'a> {
    fields: &'a [(String, Json)],
    at: Location,
}

impl<'a> Object<'a> {
    fn of(value: &'a Json, at: Location) -> Result<Self, ManifestError> {
        match value {
            Json::Object(fields) => Ok(Object { fields, at }),
            _ => Err(ManifestError::NotAnObject { at }),
        }
    }

    fn bad(&self, field: &'static str, problem: FieldProblem) -> ManifestError {
        ManifestError::BadField {
            at: self.at,
            field,
            problem,
        }
    }

    fn wrong_type(&self, field: &'static str, expected: &'static str) -> ManifestError {
        self.bad(field, FieldProblem::WrongType { expected })
    }

    /// The value of key `field`, matched exactly; a key given twice is refused.
    fn exact(&self, field: &'static str) -> Result<Option<&'a Json>, ManifestError> {
        let mut found = self.fields.iter().filter(|(k, _)| k == field);
        let first = found.next().map(|(_, v)| v);
        if found.next().is_some() {
            return Err(self.bad(field, FieldProblem::Duplicate));
        }
        Ok(first)
    }

    /// The value of the first key equal to `field` ignoring ASCII case, as cJSON finds it.
    fn case_insensitive(&self, field: &str) -> Option<&'a Json> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(field))
            .map(|(_, v)| v)
    }

    fn required(&self, field: &'static str) -> Result<&'a Json, ManifestError> {
        self.exact(field)?
            .ok_or(ManifestError::MissingField { at: self.at, field })
    }

    fn required_str(&self, field: &'static str) -> Result<&'a str, ManifestError> {
        self.str(field, self.required(field)?)
    }

    /// A required non-empty string of at most `limit` bytes.
    fn required_text(&self, field: &'static str, limit: usize) -> Result<&'a str, ManifestError> {
        self.text(field, self.required(field)?, limit)
    }

    /// An optional string: absent and `null` are both `None`.
    fn optional_str(&self, field: &'static str) -> Result<Option<&'a str>, ManifestError> {
        match self.exact(field)? {
            None | Some(Json::Null) => Ok(None),
            Some(v) => self.str(field, v).map(Some),
        }
    }

    fn str(&self, field: &'static str, value: &'a Json) -> Result<&'a str, ManifestError> {
        match value {
            Json::String(s) => Ok(s),
            _ => Err(self.wrong_type(field, "a string")),
        }
    }

    fn text(
        &self,
        field: &'static str,
        value: &'a Json,
        limit: usize,
    ) -> Result<&'a str, ManifestError> {
        let s = self.str(field, value)?;
        if s.is_empty() {
            return Err(self.bad(field, FieldProblem::Empty));
        }
        if s.len() > limit {
            return Err(self.bad(field, FieldProblem::TooLong { limit }));
        }
        Ok(s)
    }

    fn whole_number(&self, field: &'static str, value: &Json) -> Result<u64, ManifestError> {
        match value {
            Json::Number(Some(n)) => Ok(*n),
            _ => Err(self.wrong_type(field, "a whole number")),
        }
    }

    fn array(&self, field: &'static str, value: &'a Json) -> Result<&'a [Json], ManifestError> {
        match value {
            Json::Array(items) => Ok(items),
            _ => Err(self.wrong_type(field, "a list [...]")),
        }
    }

    fn hex<const N: usize>(
        &self,
        field: &'static str,
        text: &str,
    ) -> Result<[u8; N], ManifestError> {
        parse_hex::<N>(text).map_err(|e| self.bad(field, FieldProblem::Hex(e)))
    }
}

/// Format 1 as written by [`Manifest::to_json`]; field order is the output's key order.
#[derive(Serialize)]
struct OutManifest<'a> {
    otaweb: u32,
    images: Vec<OutEntry<'a>>,
}

#[derive(Serialize)]
struct OutEntry<'a> {
    name: &'a str,
    flow: &'static str,
    version: &'a str,
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    compression: Option<&'static str>,
    size: u64,
    sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    md5: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<String>,
}

impl<'a> From<&'a ManifestEntry> for OutEntry<'a> {
    fn from(e: &'a ManifestEntry) -> Self {
        OutEntry {
            name: &e.name,
            flow: e.flow.as_str(),
            version: &e.version,
            url: &e.url,
            compression: e.compression.map(Compression::as_str),
            size: e.size,
            sha256: to_hex(&e.sha256),
            md5: e.md5.as_ref().map(|m| to_hex(m)),
            signature: e.signature.as_ref().map(ImageSignature::to_base64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA_V2: &str = "f54ee1e8539dece67299def1c0ffc811a100f70b468dad0b3483abdcbf1be7ba";
    const SIG: &str =
        "DnWnNPKAetojqDIAyG5QQ+k2KhEF0Ytb+0ZK8N9CVr4+IKJM9p+bHcF2Vrt5Wm/ezkn3oX+LqlMC/wwdLzY4Qg==";

    /// Exactly what `to_json` writes for the three entries built by `expected()`.
    const OURS: &str = r#"{
  "otaweb": 1,
  "images": [
    {
      "name": "app",
      "flow": "gadget",
      "version": "2",
      "url": "app-v2.bin",
      "size": 98304,
      "sha256": "f54ee1e8539dece67299def1c0ffc811a100f70b468dad0b3483abdcbf1be7ba",
      "md5": "5b54047a898b1c35da8dedc4acc98c85",
      "signature": "DnWnNPKAetojqDIAyG5QQ+k2KhEF0Ytb+0ZK8N9CVr4+IKJM9p+bHcF2Vrt5Wm/ezkn3oX+LqlMC/wwdLzY4Qg=="
    },
    {
      "name": "app",
      "flow": "dfu",
      "version": "2.0.0",
      "url": "https://example.invalid/app-v2.bin.zlib",
      "compression": "zlib",
      "size": 98304,
      "sha256": "f54ee1e8539dece67299def1c0ffc811a100f70b468dad0b3483abdcbf1be7ba"
    },
    {
      "name": "app",
      "flow": "enos",
      "version": "1.3.0",
      "url": "app-v3.bin",
      "size": 65536,
      "sha256": "f54ee1e8539dece67299def1c0ffc811a100f70b468dad0b3483abdcbf1be7ba"
    }
  ]
}
"#;

    fn expected() -> Manifest {
        let sha256 = parse_hex(SHA_V2).unwrap();
        Manifest {
            images: alloc::vec![
                ManifestEntry {
                    name: "app".into(),
                    flow: FlowKind::Gadget,
                    version: "2".into(),
                    url: "app-v2.bin".into(),
                    size: 98304,
                    sha256,
                    md5: Some(parse_hex("5b54047a898b1c35da8dedc4acc98c85").unwrap()),
                    signature: Some(ImageSignature::from_base64(SIG).unwrap()),
                    compression: None,
                },
                ManifestEntry {
                    name: "app".into(),
                    flow: FlowKind::Dfu,
                    version: "2.0.0".into(),
                    url: "https://example.invalid/app-v2.bin.zlib".into(),
                    size: 98304,
                    sha256,
                    md5: None,
                    signature: None,
                    compression: Some(Compression::Zlib),
                },
                ManifestEntry {
                    name: "app".into(),
                    flow: FlowKind::Enos,
                    version: "1.3.0".into(),
                    url: "app-v3.bin".into(),
                    size: 65536,
                    sha256,
                    md5: None,
                    signature: None,
                    compression: None,
                },
            ],
        }
    }

    /// A one-image manifest whose entry has `field` replaced by the raw JSON `value`, or
    /// removed when `value` is `None`.
    fn with_field(field: &str, value: Option<&str>) -> String {
        let mut fields = alloc::vec![
            ("name", "\"app\""),
            ("flow", "\"gadget\""),
            ("version", "\"2\""),
            ("url", "\"app-v2.bin\""),
            ("size", "98304"),
            (
                "sha256",
                "\"f54ee1e8539dece67299def1c0ffc811a100f70b468dad0b3483abdcbf1be7ba\""
            ),
        ];
        fields.retain(|(k, _)| *k != field);
        if let Some(v) = value {
            fields.push((field, v));
        }
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| alloc::format!("\"{k}\": {v}"))
            .collect();
        alloc::format!("{{\"otaweb\": 1, \"images\": [{{{}}}]}}", body.join(", "))
    }

    fn bad(field: &'static str, problem: FieldProblem) -> Result<Manifest, ManifestError> {
        Err(ManifestError::BadField {
            at: Location::Image(0),
            field,
            problem,
        })
    }

    #[test]
    fn parses_a_literal_manifest() {
        assert_eq!(Manifest::parse(OURS), Ok(expected()));
    }

    #[test]
    fn to_json_writes_the_literal_byte_for_byte_and_round_trips() {
        let m = expected();
        assert_eq!(m.to_json(), OURS);
        assert_eq!(Manifest::parse(&m.to_json()), Ok(m));
        let empty = Manifest::default();
        assert_eq!(Manifest::parse(&empty.to_json()), Ok(empty));
    }

    #[test]
    fn field_order_unknown_fields_nulls_and_case_of_hex_do_not_matter() {
        let text = r#"{"images": [{"sha256": "F54EE1E8539DECE67299DEF1C0FFC811A100F70B468DAD0B3483ABDCBF1BE7BA",
            "size": 65536, "url": "app-v3.bin", "version": "1.3.0", "flow": "enos", "name": "app",
            "md5": null, "signature": null, "compression": null, "notes": {"any": [1, 2.5, true]}}],
            "otaweb": 1, "published": "2025-01-01"}"#;
        let m = Manifest::parse(text).unwrap();
        assert_eq!(m.images, alloc::vec![expected().images[2].clone()]);
    }

    #[test]
    fn single_entry_parses_on_its_own() {
        let text = r#"{"name": "app", "flow": "dfu", "version": "2.0.0",
            "url": "https://example.invalid/app-v2.bin.zlib", "compression": "zlib",
            "size": 98304, "sha256": "f54ee1e8539dece67299def1c0ffc811a100f70b468dad0b3483abdcbf1be7ba"}"#;
        assert_eq!(
            ManifestEntry::parse_json(text),
            Ok(expected().images[1].clone())
        );
        let err = ManifestEntry::parse_json(r#"{"name": "app"}"#).unwrap_err();
        assert_eq!(
            err,
            ManifestError::MissingField {
                at: Location::Entry,
                field: "flow"
            }
        );
        assert_eq!(err.to_string(), "\"flow\" is missing from the manifest");
        assert_eq!(
            ManifestEntry::parse_json("[]"),
            Err(ManifestError::NotAnObject {
                at: Location::Entry
            })
        );
    }

    #[test]
    fn format_version_must_be_1() {
        let v2 = r#"{"otaweb": 2, "images": []}"#;
        let err = Manifest::parse(v2).unwrap_err();
        assert_eq!(err, ManifestError::UnsupportedFormat { found: 2 });
        assert!(err.to_string().contains("format 2"));
        assert_eq!(
            Manifest::parse(r#"{"images": []}"#),
            Err(ManifestError::NotOtaweb)
        );
        assert_eq!(
            Manifest::parse(r#"{"otaweb": "1", "images": []}"#),
            Err(ManifestError::BadField {
                at: Location::Top,
                field: "otaweb",
                problem: FieldProblem::WrongType {
                    expected: "a whole number"
                }
            })
        );
        assert_eq!(
            Manifest::parse(r#"{"otaweb": 1.0, "images": []}"#).unwrap_err(),
            ManifestError::BadField {
                at: Location::Top,
                field: "otaweb",
                problem: FieldProblem::WrongType {
                    expected: "a whole number"
                }
            }
        );
        assert_eq!(
            Manifest::parse(r#"{"otaweb": 1}"#),
            Err(ManifestError::MissingField {
                at: Location::Top,
                field: "images"
            })
        );
        assert_eq!(
            Manifest::parse(r#"{"otaweb": 1, "images": {}}"#)
                .unwrap_err()
                .to_string(),
            "\"images\" must be a list [...]"
        );
    }

    #[test]
    fn text_that_is_not_a_json_object_is_refused() {
        assert_eq!(
            Manifest::parse("{\"otaweb\": 1,\n \"images\": [}"),
            Err(ManifestError::NotJson {
                line: 2,
                column: 13
            })
        );
        assert_eq!(
            Manifest::parse(""),
            Err(ManifestError::NotJson { line: 1, column: 0 })
        );
        assert_eq!(
            Manifest::parse("[1]"),
            Err(ManifestError::NotAnObject { at: Location::Top })
        );
        assert_eq!(
            Manifest::parse(r#"{"otaweb": 1, "images": [7]}"#),
            Err(ManifestError::NotAnObject {
                at: Location::Image(0)
            })
        );
        let deep = alloc::format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            Manifest::parse(&deep),
            Err(ManifestError::NotJson { .. })
        ));
    }

    #[test]
    fn too_large_and_too_many_are_refused() {
        let huge = alloc::format!(
            "{{\"otaweb\": 1, \"images\": [], \"pad\": \"{}\"}}",
            "x".repeat(MAX_MANIFEST_LEN)
        );
        assert_eq!(
            Manifest::parse(&huge),
            Err(ManifestError::TooLarge {
                limit: MAX_MANIFEST_LEN,
                found: huge.len()
            })
        );
        let entry = r#"{"name": "a", "flow": "enos", "version": "1", "url": "u", "size": 1, "sha256": "f54ee1e8539dece67299def1c0ffc811a100f70b468dad0b3483abdcbf1be7ba"}"#;
        let list = |n: usize| {
            let entries: Vec<&str> = core::iter::repeat_n(entry, n).collect();
            alloc::format!("{{\"otaweb\": 1, \"images\": [{}]}}", entries.join(","))
        };
        assert_eq!(
            Manifest::parse(&list(MAX_IMAGES)).map(|m| m.images.len()),
            Ok(MAX_IMAGES)
        );
        assert_eq!(
            Manifest::parse(&list(MAX_IMAGES + 1)),
            Err(ManifestError::TooManyImages {
                limit: MAX_IMAGES,
                found: MAX_IMAGES + 1
            })
        );
    }

    #[test]
    fn each_missing_required_field_is_named() {
        for field in ["name", "flow", "version", "url", "size", "sha256"] {
            assert_eq!(
                Manifest::parse(&with_field(field, None)),
                Err(ManifestError::MissingField {
                    at: Location::Image(0),
                    field
                }),
                "{field}"
            );
        }
        assert_eq!(
            Manifest::parse(&with_field("sha256", None))
                .unwrap_err()
                .to_string(),
            "images[0].sha256 is missing from the manifest"
        );
    }

    #[test]
    fn bad_fields_are_named_with_their_problem() {
        assert_eq!(
            Manifest::parse(&with_field("sha256", Some("\"f54e\""))),
            bad(
                "sha256",
                FieldProblem::Hex(HexError::Length {
                    expected: 64,
                    found: 4
                })
            )
        );
        let not_hex = alloc::format!("\"{}\"", SHA_V2.replace('f', "g"));
        assert_eq!(
            Manifest::parse(&with_field("sha256", Some(&not_hex))),
            bad("sha256", FieldProblem::Hex(HexError::NotHex))
        );
        assert_eq!(
            Manifest::parse(&with_field("md5", Some("\"xyz\""))),
            bad(
                "md5",
                FieldProblem::Hex(HexError::Length {
                    expected: 32,
                    found: 3
                })
            )
        );
        let err = Manifest::parse(&with_field("flow", Some("\"ble\""))).unwrap_err();
        assert_eq!(
            Err::<Manifest, _>(err.clone()),
            bad("flow", FieldProblem::UnknownFlow)
        );
        assert_eq!(
            err.to_string(),
            "images[0].flow must be \"gadget\", \"dfu\" or \"enos\""
        );
        assert_eq!(
            Manifest::parse(&with_field("flow", Some("\"Gadget\""))),
            bad("flow", FieldProblem::UnknownFlow)
        );
        assert_eq!(
            Manifest::parse(&with_field("compression", Some("\"gzip\""))),
            bad("compression", FieldProblem::UnknownCompression)
        );
        assert_eq!(
            Manifest::parse(&with_field("version", Some("\"2.0\""))),
            bad("version", FieldProblem::Version(VersionError::NotDecimal))
        );
        assert_eq!(
            Manifest::parse(&with_field("version", Some("2"))),
            bad(
                "version",
                FieldProblem::WrongType {
                    expected: "a string"
                }
            )
        );
        for size in ["0", "67108865", "-1", "1.5", "\"98304\""] {
            let want = match size {
                "0" => FieldProblem::SizeOutOfRange { found: 0 },
                "67108865" => FieldProblem::SizeOutOfRange {
                    found: MAX_IMAGE_SIZE + 1,
                },
                _ => FieldProblem::WrongType {
                    expected: "a whole number",
                },
            };
            assert_eq!(
                Manifest::parse(&with_field("size", Some(size))),
                bad("size", want),
                "{size}"
            );
        }
        assert!(Manifest::parse(&with_field("size", Some("67108864"))).is_ok());
        assert_eq!(
            Manifest::parse(&with_field("url", Some("\"\""))),
            bad("url", FieldProblem::Empty)
        );
        let long_name = alloc::format!("\"{}\"", "n".repeat(MAX_NAME_LEN + 1));
        assert_eq!(
            Manifest::parse(&with_field("name", Some(&long_name))),
            bad(
                "name",
                FieldProblem::TooLong {
                    limit: MAX_NAME_LEN
                }
            )
        );
        assert_eq!(
            Manifest::parse(&with_field("signature", Some("\"not base64!\""))),
            bad(
                "signature",
                FieldProblem::Signature(SignatureError::SignatureMalformed(
                    crate::image::signature::SignatureFormat::NotBase64
                ))
            )
        );
    }

    #[test]
    fn a_known_key_given_twice_is_refused() {
        let text = with_field("size", Some("1")).replace("\"size\": 1", "\"size\": 1, \"size\": 2");
        assert_eq!(Manifest::parse(&text), bad("size", FieldProblem::Duplicate));
        let top = r#"{"otaweb": 1, "otaweb": 1, "images": []}"#;
        assert_eq!(
            Manifest::parse(top),
            Err(ManifestError::BadField {
                at: Location::Top,
                field: "otaweb",
                problem: FieldProblem::Duplicate
            })
        );
    }

    #[test]
    fn newest_picks_the_highest_newer_version_of_the_flow() {
        let mut m = expected();
        let mut add = |flow, version: &str| {
            let mut e = m.images[0].clone();
            e.flow = flow;
            e.version = version.into();
            m.images.push(e);
        };
        add(FlowKind::Gadget, "10");
        add(FlowKind::Gadget, "9");
        add(FlowKind::Enos, "1.3.0-rc1");
        add(FlowKind::Enos, "1.10");
        add(FlowKind::Gadget, "not a number");
        let version = |e: Option<&ManifestEntry>| e.map(|e| e.version.clone());
        assert_eq!(version(m.newest(FlowKind::Gadget, "0")), Some("10".into()));
        assert_eq!(version(m.newest(FlowKind::Gadget, "9")), Some("10".into()));
        assert_eq!(version(m.newest(FlowKind::Gadget, "10")), None);
        assert_eq!(version(m.newest(FlowKind::Gadget, "x")), None);
        assert_eq!(
            version(m.newest(FlowKind::Enos, "1.2")),
            Some("1.10".into())
        );
        assert_eq!(version(m.newest(FlowKind::Enos, "v1.10")), None);
        assert_eq!(
            version(m.newest(FlowKind::Dfu, "1.9")),
            Some("2.0.0".into())
        );
        assert_eq!(version(m.newest(FlowKind::Dfu, "2")), Some("2.0.0".into()));
        assert_eq!(version(m.newest(FlowKind::Dfu, "v2.0.0")), None);
    }

    #[test]
    fn flow_kinds_name_and_style() {
        for flow in [FlowKind::Gadget, FlowKind::Dfu, FlowKind::Enos] {
            assert_eq!(FlowKind::from_name(flow.as_str()), Some(flow));
            assert_eq!(flow.to_string(), flow.as_str());
        }
        assert_eq!(FlowKind::Gadget.version_style(), VersionStyle::Alexa);
        assert_eq!(FlowKind::Dfu.version_style(), VersionStyle::Enos);
        assert_eq!(FlowKind::Enos.version_style(), VersionStyle::Enos);
    }

    const MICROCHIP: &str = r#"{
  "ota": [
    {"Version": 2, "URL": "http://127.0.0.1:8000/app-v2.bin",
     "Digest": "0000000000000000000000000000000000000000000000000000000000000000"},
    {"version": 3, "url": "http://127.0.0.1:8000/app-v3.bin",
     "DIGEST": "F54EE1E8539DECE67299DEF1C0FFC811A100F70B468DAD0B3483ABDCBF1BE7BA",
     "sIgNaTuRe": "DnWnNPKAetojqDIAyG5QQ+k2KhEF0Ytb+0ZK8N9CVr4+IKJM9p+bHcF2Vrt5Wm/ezkn3oX+LqlMC/wwdLzY4Qg==",
     "Patch": [{"BaseVersion": 2}], "URL": "http://ignored.example/second-url-key.bin"}
  ]
}"#;

    #[test]
    fn microchip_reads_the_last_element_with_any_key_case() {
        let e = MicrochipEntry::parse_manifest(MICROCHIP).unwrap();
        assert_eq!(e.version, MicrochipVersion::new(3).unwrap());
        // cJSON's getter returns the first key that matches ignoring case.
        assert_eq!(e.url, "http://127.0.0.1:8000/app-v3.bin");
        assert_eq!(e.digest, parse_hex::<32>(SHA_V2).unwrap());
        assert_eq!(e.signature, Some(ImageSignature::from_base64(SIG).unwrap()));
        assert!(!e.erase);
        assert!(MICROCHIP.len() <= MICROCHIP_MANIFEST_LIMIT);

        let entry = e.to_manifest_entry("app", FlowKind::Dfu, 98304).unwrap();
        assert_eq!(entry.version, "3");
        assert_eq!(entry.sha256, e.digest);
        assert_eq!(entry.size, 98304);
        assert_eq!(entry.signature, e.signature);
        let round = Manifest {
            images: alloc::vec![entry.clone()],
        };
        assert_eq!(
            Manifest::parse(&round.to_json()).map(|m| m.images),
            Ok(alloc::vec![entry])
        );
    }

    #[test]
    fn microchip_missing_digest_and_bad_fields() {
        let no_digest = r#"{"OTA": [{"Version": 3, "URL": "http://x/app.bin"}]}"#;
        let err = MicrochipEntry::parse_manifest(no_digest).unwrap_err();
        assert_eq!(
            err,
            ManifestError::MissingField {
                at: Location::Ota(0),
                field: "Digest"
            }
        );
        assert_eq!(
            err.to_string(),
            "ota[0].Digest is missing from the manifest"
        );

        let digest = SHA_V2;
        let one = |fields: &str| alloc::format!("{{\"ota\": [{{{fields}}}]}}");
        let ok = one(&alloc::format!(
            "\"Version\": 1, \"URL\": \"u\", \"Digest\": \"{digest}\", \"EraseVer\": true"
        ));
        let e = MicrochipEntry::parse_manifest(&ok).unwrap();
        assert!(e.erase);
        assert_eq!(e.signature, None);
        assert_eq!(e.to_manifest_entry("app", FlowKind::Enos, 1), None);

        let bad_at = |field, problem| {
            Err(ManifestError::BadField {
                at: Location::Ota(0),
                field,
                problem,
            })
        };
        for (version, problem) in [
            ("0", FieldProblem::Version(VersionError::Zero)),
            ("4294967296", FieldProblem::Version(VersionError::TooBig)),
            (
                "\"3\"",
                FieldProblem::WrongType {
                    expected: "a whole number",
                },
            ),
            (
                "3.5",
                FieldProblem::WrongType {
                    expected: "a whole number",
                },
            ),
        ] {
            let text = one(&alloc::format!(
                "\"Version\": {version}, \"URL\": \"u\", \"Digest\": \"{digest}\""
            ));
            assert_eq!(
                MicrochipEntry::parse_manifest(&text),
                bad_at("Version", problem),
                "{version}"
            );
        }
        let short = one("\"Version\": 1, \"URL\": \"u\", \"Digest\": \"abcd\"");
        assert_eq!(
            MicrochipEntry::parse_manifest(&short),
            bad_at(
                "Digest",
                FieldProblem::Hex(HexError::Length {
                    expected: 64,
                    found: 4
                })
            )
        );
        let erase = one(&alloc::format!(
            "\"Version\": 1, \"URL\": \"u\", \"Digest\": \"{digest}\", \"EraseVer\": 1"
        ));
        assert_eq!(
            MicrochipEntry::parse_manifest(&erase),
            bad_at(
                "EraseVer",
                FieldProblem::WrongType {
                    expected: "true or false"
                }
            )
        );
        assert_eq!(
            MicrochipEntry::parse_manifest(r#"{"ota": []}"#),
            Err(ManifestError::NoImages)
        );
        assert_eq!(
            MicrochipEntry::parse_manifest(r#"{"ImageList": []}"#),
            Err(ManifestError::MissingField {
                at: Location::Top,
                field: "ota"
            })
        );
        assert_eq!(
            MicrochipEntry::parse_manifest(r#"{"ota": [{}, "last"]}"#),
            Err(ManifestError::NotAnObject {
                at: Location::Ota(1)
            })
        );
    }
}
