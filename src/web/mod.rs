//! The wasm-bindgen edge: the JavaScript API of `pkg/otaweb.js`.
//!
//! Only I/O and translation live here: JavaScript values in, core calls, JavaScript values
//! out. Every failure reaches JavaScript as a thrown `Error` whose `name` is
//! `"OtawebError"`, with `code` (specific and stable, e.g. `"digest-mismatch"`), `kind` (the
//! layer: `"verification-failed"`, `"misuse"`, …), `message` (plain language) and
//! `retryable`.
//!
//! - [`digest`], [`Hasher`](StreamHasher) (streaming) and [`inflate`]: the image checks'
//!   building blocks.
//! - [`VerifiedImage`]: an image that passed [`verify_image`], the only thing an updater
//!   accepts, so JavaScript cannot hand a device unverified bytes.
//! - [`Updater`]: a flow driven over Web Bluetooth ([`updater`]), on the link in [`ble`].
//! - [`MqttClient`]: the MQTT session over a WebSocket ([`mqtt`], on [`ws`]).
//! - [`EnosAgent`]: the EnOS OTA flow for a BLE device, over a WebSocket, installing with
//!   an [`Updater`] ([`enos`]).

mod ble;
mod clock;
mod enos;
mod http;
mod mqtt;
mod options;
mod running;
mod service;
mod socket;
mod updater;
mod ws;

pub use enos::EnosAgent;
pub use mqtt::MqttClient;
pub use service::Watch;
pub use updater::Updater;

use alloc::borrow::Cow;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use js_sys::{Array, Object, Reflect, JSON};
use wasm_bindgen::prelude::*;

use crate::error::{Error, LinkLost, Misuse};
use crate::flow::dfu::DfuPackage;
use crate::image::digest::{DigestAlg, Hasher};
use crate::image::manifest::{Manifest, ManifestEntry};
use crate::image::sifli::DEFAULT_BLK_SIZE;
use crate::image::signature::PublicKey;
use crate::image::verify::{verify_image_cow, Detached, Image, Verified, VerifyPolicy};
use crate::web::options::{invalid, whole};

// The option, result, event and error types the generated declarations refer to.
#[wasm_bindgen(typescript_custom_section)]
const API_TYPES: &str = include_str!("api.d.ts");

/// The otaweb version.
#[wasm_bindgen]
pub fn version() -> String {
    crate::VERSION.to_string()
}

/// Lowercase hex digest of `bytes`; `alg` is `"sha256"` or `"md5"`.
#[wasm_bindgen]
pub fn digest(
    bytes: &[u8],
    #[wasm_bindgen(unchecked_param_type = "\"sha256\" | \"md5\"")] alg: &str,
) -> Result<String, JsValue> {
    let alg: DigestAlg = alg
        .parse()
        .map_err(|_| invalid("alg must be \"sha256\" or \"md5\""))?;
    let mut hasher = Hasher::new(alg);
    hasher.update(bytes);
    Ok(hasher.finalize().to_hex())
}

/// A streaming digest: `update(bytes)` with the pieces in order, then `digest()`, the same
/// lowercase hex as `digest(whole, alg)` for their concatenation.
#[wasm_bindgen(js_name = Hasher)]
pub struct StreamHasher {
    hasher: Hasher,
}

#[wasm_bindgen(js_class = Hasher)]
impl StreamHasher {
    /// A hasher that has seen no bytes; `alg` is `"sha256"` or `"md5"`.
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(unchecked_param_type = "\"sha256\" | \"md5\"")] alg: &str,
    ) -> Result<StreamHasher, JsValue> {
        let alg: DigestAlg = alg
            .parse()
            .map_err(|_| invalid("alg must be \"sha256\" or \"md5\""))?;
        Ok(StreamHasher {
            hasher: Hasher::new(alg),
        })
    }

    /// Feeds the next piece.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    /// Lowercase hex digest of everything fed so far; more pieces may follow.
    pub fn digest(&self) -> String {
        self.hasher.clone().finalize().to_hex()
    }
}

/// Inflates zlib `bytes`, refusing to produce more than `maxOutput` bytes.
#[wasm_bindgen]
pub fn inflate(
    bytes: &[u8],
    #[wasm_bindgen(js_name = maxOutput)] max_output: usize,
) -> Result<Vec<u8>, JsValue> {
    crate::image::zlib::inflate(bytes, max_output).map_err(|e| {
        throwable(
            e.code(),
            "verification-failed",
            &alloc::format!("the compressed image cannot be unpacked: {e}"),
            false,
        )
    })
}

/// Parses an otaweb manifest and returns its image entries as plain objects.
#[wasm_bindgen(js_name = parseManifest, unchecked_return_type = "ManifestEntry[]")]
pub fn parse_manifest(text: &str) -> Result<Array, JsValue> {
    let manifest = Manifest::parse(text).map_err(|e| {
        throwable(
            "manifest-invalid",
            "misuse",
            &alloc::format!("the manifest is not usable: {e}"),
            false,
        )
    })?;
    manifest_images(&manifest)
}

/// The manifest's entries as JavaScript objects. Its own serializer defines the entry shape,
/// so JavaScript sees exactly the schema it would read from the file, normalised (hex
/// lowercase, defaults filled).
fn manifest_images(manifest: &Manifest) -> Result<Array, JsValue> {
    let parsed = JSON::parse(&manifest.to_json())?;
    Ok(Reflect::get(&parsed, &"images".into())?.unchecked_into())
}

/// One manifest entry as the JavaScript object `parseManifest` would give for it.
pub(crate) fn entry_js(entry: &ManifestEntry) -> Result<JsValue, JsValue> {
    let single = Manifest {
        images: alloc::vec![entry.clone()],
    };
    Ok(manifest_images(&single)?.get(0))
}

/// Verifies `bytes` against a manifest entry (an object or its JSON text) and describes
/// the image: `{name, flow, version, size, sha256, signed}`.
///
/// `publicKeyPem` is the trusted ECDSA P-256 key; without it, a signed entry is refused
/// unless `dangerAcceptUnsigned` is set (development only). With both, a signed entry is
/// still checked with the key and only an unsigned one passes on its digest.
#[wasm_bindgen(js_name = verifyImage, unchecked_return_type = "ImageDescription")]
pub fn verify_image_js(
    bytes: &[u8],
    #[wasm_bindgen(unchecked_param_type = "ManifestEntry | string")] entry: JsValue,
    #[wasm_bindgen(js_name = publicKeyPem)] public_key_pem: Option<String>,
    #[wasm_bindgen(js_name = dangerAcceptUnsigned)] danger_accept_unsigned: Option<bool>,
) -> Result<Object, JsValue> {
    verify(
        Cow::Borrowed(bytes),
        &entry,
        public_key_pem,
        danger_accept_unsigned,
    )?
    .describe()
}

/// What an updater installs, checked: a gadget image verified against its manifest entry
/// (`VerifiedImage.verify`, same arguments as `verifyImage`), or a SiFli DFU package whose
/// transfer files are well formed (`VerifiedImage.dfuPackage` from loose files,
/// `VerifiedImage.dfuBundle` from one `.tar`; the device itself checks the package's RSA
/// signatures). Updaters take only this.
#[wasm_bindgen]
pub struct VerifiedImage {
    held: Held,
}

/// How a [`VerifiedImage`] keeps what it checked.
enum Held {
    /// A gadget image, its bytes in a JavaScript array outside wasm's linear memory (which
    /// never shrinks): each update copies them in once for its flow, so a page holding a
    /// 7 MiB image while it installs needs 7 MiB of wasm memory, not 14.
    Image {
        image: Detached,
        bytes: js_sys::Uint8Array,
    },
    /// A DFU package.
    Dfu(DfuPackage),
}

/// What a flow installs: a checked gadget image or DFU package.
pub(crate) enum Payload {
    /// A gadget image.
    Image(Verified<Image>),
    /// A DFU package.
    Dfu(DfuPackage),
}

#[wasm_bindgen]
impl VerifiedImage {
    /// Verifies `bytes` as `verifyImage` does and keeps them, or throws an `OtawebError`.
    pub fn verify(
        // Owned: the copy wasm-bindgen makes into wasm memory is verified in place.
        bytes: Vec<u8>,
        #[wasm_bindgen(unchecked_param_type = "ManifestEntry | string")] entry: JsValue,
        #[wasm_bindgen(js_name = publicKeyPem)] public_key_pem: Option<String>,
        #[wasm_bindgen(js_name = dangerAcceptUnsigned)] danger_accept_unsigned: Option<bool>,
    ) -> Result<VerifiedImage, JsValue> {
        verify(
            Cow::Owned(bytes),
            &entry,
            public_key_pem,
            danger_accept_unsigned,
        )
    }

    /// A SiFli DFU package: `ctrlPacket` (`ctrl_packet.bin`) and `images`, an array of
    /// `{imgId, bytes}` transfer files. Each file's records are walked with `blkSize`
    /// (default 512) and must carry their own offsets.
    #[wasm_bindgen(js_name = dfuPackage)]
    pub fn dfu_package(
        #[wasm_bindgen(js_name = ctrlPacket)] ctrl_packet: &[u8],
        #[wasm_bindgen(unchecked_param_type = "DfuFile[]")] images: Array,
        #[wasm_bindgen(js_name = blkSize)] blk_size: Option<u16>,
    ) -> Result<VerifiedImage, JsValue> {
        let mut files = Vec::new();
        for item in images.iter() {
            let need = "each image needs imgId, 0-255";
            let id = whole(&item, "imgId", 0..=255, need)?.ok_or_else(|| invalid(need))?;
            let bytes = Reflect::get(&item, &"bytes".into())
                .ok()
                .filter(|v| v.is_instance_of::<js_sys::Uint8Array>())
                .ok_or_else(|| invalid("each image needs bytes, a Uint8Array"))?
                .unchecked_into::<js_sys::Uint8Array>()
                .to_vec();
            files.push((id as u8, bytes));
        }
        dfu_payload(DfuPackage::from_files(
            ctrl_packet.to_vec(),
            files,
            blk_size.unwrap_or(DEFAULT_BLK_SIZE),
        ))
    }

    /// A SiFli DFU package from one `.tar` bundle holding `package.json`, `ctrl_packet.bin`
    /// and the transfer files `package.json` names (the single-file form EnOS delivers).
    #[wasm_bindgen(js_name = dfuBundle)]
    pub fn dfu_bundle(bytes: &[u8]) -> Result<VerifiedImage, JsValue> {
        dfu_payload(DfuPackage::from_bundle(bytes))
    }

    /// `{name, flow, version, size, sha256, signed}` for an image; `{flow: "dfu", size,
    /// images}` for a package.
    #[wasm_bindgen(unchecked_return_type = "ImageDescription | DfuPackageDescription")]
    pub fn describe(&self) -> Result<Object, JsValue> {
        let (image, size) = match &self.held {
            Held::Image { image, .. } => (image.image(), image.size()),
            Held::Dfu(package) => {
                let out = Object::new();
                set(&out, "flow", &JsValue::from_str("dfu"))?;
                set(&out, "size", &JsValue::from_f64(package.total_len() as f64))?;
                set(
                    &out,
                    "images",
                    &JsValue::from_f64(package.images().len() as f64),
                )?;
                return Ok(out);
            }
        };
        let out = Object::new();
        set(&out, "name", &JsValue::from_str(&image.name))?;
        set(&out, "flow", &JsValue::from_str(image.flow.as_str()))?;
        set(&out, "version", &JsValue::from_str(&image.version))?;
        set(&out, "size", &JsValue::from_f64(size as f64))?;
        set(
            &out,
            "sha256",
            &JsValue::from_str(&crate::image::digest::to_hex(&image.sha256)),
        )?;
        set(&out, "signed", &JsValue::from_bool(image.signed))?;
        Ok(out)
    }

    /// The image's version text (empty for a DFU package, which carries none the remote
    /// can read).
    #[wasm_bindgen(getter)]
    pub fn version(&self) -> String {
        match &self.held {
            Held::Image { image, .. } => image.image().version.clone(),
            Held::Dfu(_) => String::new(),
        }
    }

    /// Bytes that go to the device.
    #[wasm_bindgen(getter)]
    pub fn size(&self) -> f64 {
        match &self.held {
            Held::Image { image, .. } => image.size() as f64,
            Held::Dfu(package) => package.total_len() as f64,
        }
    }
}

impl VerifiedImage {
    /// What was checked, for a flow to own: a gadget image's bytes copied into wasm and
    /// checked against their SHA-256 again ([`Detached::attach`]), a DFU package cloned.
    pub(crate) fn payload(&self) -> Result<Payload, JsValue> {
        match &self.held {
            Held::Image { image, bytes } => image
                .attach(bytes.to_vec())
                .map(Payload::Image)
                .map_err(|e| to_js_error(e.code(), &Error::Verification(e))),
            Held::Dfu(package) => Ok(Payload::Dfu(package.clone())),
        }
    }
}

/// A built DFU package as a [`VerifiedImage`], or the `OtawebError` for why it was not
/// built: a file's or the bundle's own code, `invalid-argument` for the package's rules.
fn dfu_payload(package: Result<DfuPackage, Error>) -> Result<VerifiedImage, JsValue> {
    let package = package.map_err(|e| {
        let code = match &e {
            Error::Verification(v) => v.code(),
            _ => "invalid-argument",
        };
        to_js_error(code, &e)
    })?;
    Ok(VerifiedImage {
        held: Held::Dfu(package),
    })
}

fn verify(
    bytes: Cow<'_, [u8]>,
    entry: &JsValue,
    public_key_pem: Option<String>,
    danger_accept_unsigned: Option<bool>,
) -> Result<VerifiedImage, JsValue> {
    let entry = entry_from_js(entry)?;
    let key = public_key_pem
        .map(|pem| {
            PublicKey::from_pem(&pem).map_err(|e| {
                throwable(
                    "key-invalid",
                    "misuse",
                    &alloc::format!("the public key is not usable: {e}"),
                    false,
                )
            })
        })
        .transpose()?;
    // dangerAcceptUnsigned lets unsigned images through; it never stops a given key from
    // checking a signed one, so a page that names its key gets that check either way.
    let policy = match (key, danger_accept_unsigned.unwrap_or(false)) {
        (Some(key), true) => VerifyPolicy::new(alloc::vec![key], false),
        (None, true) => VerifyPolicy::danger_accept_unsigned(),
        (Some(key), false) => VerifyPolicy::trusting(alloc::vec![key]),
        (None, false) => VerifyPolicy::trusting(Vec::new()),
    };
    let verified = verify_image_cow(bytes, &entry, &policy).map_err(|e| {
        let code = e.code();
        to_js_error(code, &Error::Verification(e))
    })?;
    // Out of wasm memory until an update needs them; the wasm copy is freed on return.
    let (image, bytes) = verified.detach();
    Ok(VerifiedImage {
        held: Held::Image {
            image,
            bytes: js_sys::Uint8Array::from(&bytes[..]),
        },
    })
}

fn entry_from_js(entry: &JsValue) -> Result<ManifestEntry, JsValue> {
    let text = match entry.as_string() {
        Some(text) => text,
        None => JSON::stringify(entry)
            .map_err(|_| invalid("entry must be an object or JSON text"))?
            .into(),
    };
    ManifestEntry::parse_json(&text).map_err(|e| {
        throwable(
            "manifest-invalid",
            "misuse",
            &alloc::format!("the manifest entry is not usable: {e}"),
            false,
        )
    })
}

pub(crate) fn set(target: &Object, key: &str, value: &JsValue) -> Result<(), JsValue> {
    Reflect::set(target, &key.into(), value).map(drop)
}

/// A [`Misuse`] as an `OtawebError` with the specific `code`.
pub(crate) fn misuse_error(code: &str, misuse: Misuse) -> JsValue {
    to_js_error(code, &Error::Misuse(misuse))
}

/// The error a flow stopped with, as an `OtawebError`: `code` names the cause precisely (a
/// vendor refusal's name, `"timed-out"`, a verification code, ...), refusals add
/// `vendorCode`.
pub(crate) fn flow_error(error: &Error) -> JsValue {
    let code = match error {
        Error::PeerRefused(r) => r.name,
        Error::LinkLost(LinkLost::TimedOut { .. }) => "timed-out",
        Error::LinkLost(LinkLost::RetriesExhausted { .. }) => "retries-exhausted",
        Error::LinkLost(_) => "disconnected",
        Error::Verification(v) => v.code(),
        Error::Misuse(Misuse::WrongState { .. }) => "wrong-state",
        Error::Misuse(Misuse::Unsupported(_)) => "unsupported",
        _ => error.code(),
    };
    let js = to_js_error(code, error);
    if let Error::PeerRefused(r) = error {
        let _ = Reflect::set(&js, &"vendorCode".into(), &(r.code as f64).into());
    }
    js
}

fn to_js_error(code: &str, error: &Error) -> JsValue {
    throwable(code, error.code(), &error.to_string(), error.retryable())
}

pub(crate) fn throwable(code: &str, kind: &str, message: &str, retryable: bool) -> JsValue {
    let error = js_sys::Error::new(message);
    error.set_name("OtawebError");
    // Reflect::set on a fresh Error object cannot fail; ignoring keeps the error path total.
    let _ = Reflect::set(&error, &"code".into(), &code.into());
    let _ = Reflect::set(&error, &"kind".into(), &kind.into());
    let _ = Reflect::set(&error, &"retryable".into(), &retryable.into());
    error.into()
}
