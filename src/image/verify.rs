//! Image verification and the [`Verified`] proof token.
//!
//! Contract: [`verify_image`] is the only way to obtain a [`Verified<Image>`], and it returns
//! one only when the bytes match their manifest entry, checked in this order: (inflate, if
//! the entry is compressed, never past the entry's size) → size → SHA-256 → MD5 (if the entry
//! has one) → signature as the [`VerifyPolicy`] demands. Code that sends an image to a device
//! takes a `Verified<Image>`, so an unchecked image cannot reach a device by construction.
//! A verified image may set its bytes aside ([`Verified::detach`]); only the same bytes
//! (size and SHA-256 checked again) make it whole ([`Detached::attach`]).
//! An image whose signature was checked keeps it ([`Image::signature`]), so a flow can hand
//! it on for the device to check again: the gadget flow sends it in ApplyFirmware, where the
//! companion firmware's image database checks it with its trusted key, also at every boot
//! that starts the image.
//!
//! What the policy decides, for an entry with and without a signature:
//!
//! | policy | signed entry | unsigned entry |
//! |---|---|---|
//! | [`VerifyPolicy::trusting`] some keys | must verify with one of them | refused ([`VerifyError::SignatureMissing`]) |
//! | [`VerifyPolicy::trusting`] no keys | refused ([`VerifyError::NoTrustedKey`]) | accepted on its digest |
//! | [`VerifyPolicy::danger_accept_unsigned`] | accepted unchecked | accepted on its digest |
//!
//! A signed entry without a key to check it is refused rather than waved through, because the
//! publisher meant it to be checked; configure its key, or use the danger policy in
//! development.

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::image::dfu_bundle::BundleError;
use crate::image::digest::{md5, sha256, to_hex};
use crate::image::manifest::{Compression, FlowKind, ManifestEntry};
use crate::image::sifli::TransferError;
use crate::image::signature::{ImageSignature, PublicKey};
use crate::image::zlib::{inflate, InflateError};

/// Why an image failed verification.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// The image's size differs from the manifest's.
    SizeMismatch {
        /// Bytes the manifest states.
        expected: u64,
        /// Bytes the image has.
        actual: u64,
    },
    /// The image's SHA-256 differs from the manifest's.
    DigestMismatch {
        /// SHA-256 the manifest states.
        expected: [u8; 32],
        /// SHA-256 of the image.
        actual: [u8; 32],
    },
    /// The image's MD5 differs from the manifest's.
    Md5Mismatch {
        /// MD5 the manifest states.
        expected: [u8; 16],
        /// MD5 of the image.
        actual: [u8; 16],
    },
    /// The policy requires a signature and the entry has none.
    SignatureMissing,
    /// The signature was not made over this image by any trusted key.
    SignatureInvalid,
    /// The entry is signed but no trusted key is configured to check it.
    NoTrustedKey,
    /// The entry's file is compressed and did not inflate.
    Inflate(InflateError),
    /// A DFU bundle (a package as one `.tar`) is not well formed.
    Bundle(BundleError),
    /// A DFU transfer file does not walk as records of its block size.
    Transfer {
        /// The image the file is for.
        img_id: u8,
        /// Why the walk failed.
        error: TransferError,
    },
}

impl VerifyError {
    /// A stable, machine-readable code for the JS API, e.g. `"digest-mismatch"`.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::SizeMismatch { .. } => "size-mismatch",
            VerifyError::DigestMismatch { .. } => "digest-mismatch",
            VerifyError::Md5Mismatch { .. } => "md5-mismatch",
            VerifyError::SignatureMissing => "signature-missing",
            VerifyError::SignatureInvalid => "signature-invalid",
            VerifyError::NoTrustedKey => "no-trusted-key",
            VerifyError::Inflate(_) => "inflate-failed",
            VerifyError::Bundle(e) => e.code(),
            VerifyError::Transfer { error, .. } => error.code(),
        }
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::SizeMismatch { expected, actual } if actual < expected => write!(
                f,
                "the image is {} bytes but the manifest says {}: the download was cut short \
                 or the manifest is wrong",
                Thousands(*actual),
                Thousands(*expected)
            ),
            VerifyError::SizeMismatch { expected, actual } => write!(
                f,
                "the image is {} bytes but the manifest says {}: it is not the image the \
                 manifest describes, or the manifest is wrong",
                Thousands(*actual),
                Thousands(*expected)
            ),
            VerifyError::DigestMismatch { expected, actual } => write!(
                f,
                "the image's SHA-256 is {} but the manifest says {}: the image is damaged or \
                 not the one the manifest describes; download it again",
                to_hex(actual),
                to_hex(expected)
            ),
            VerifyError::Md5Mismatch { expected, actual } => write!(
                f,
                "the image's MD5 is {} but the manifest says {}: the image is damaged or the \
                 manifest's md5 is wrong",
                to_hex(actual),
                to_hex(expected)
            ),
            VerifyError::SignatureMissing => {
                f.write_str("the image is not signed, but this updater accepts only signed images")
            }
            VerifyError::SignatureInvalid => f.write_str(
                "the image's signature does not match any trusted key: the image was changed \
                 or signed by someone else",
            ),
            VerifyError::NoTrustedKey => f.write_str(
                "the image is signed, but no public key is configured to check the signature",
            ),
            VerifyError::Inflate(e) => write!(f, "the compressed image cannot be unpacked: {e}"),
            VerifyError::Bundle(e) => write!(f, "{e}"),
            VerifyError::Transfer { img_id, error } => {
                write!(f, "transfer file for image {img_id}: {error}")
            }
        }
    }
}

/// A byte count with thousands separators, e.g. `98,304`.
struct Thousands(u64);

impl fmt::Display for Thousands {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Groups from the top: the leading group has 1-3 digits, the rest exactly 3.
        let mut divisor = 1u64;
        while self.0 / divisor >= 1000 {
            divisor *= 1000;
        }
        write!(f, "{}", self.0 / divisor)?;
        while divisor > 1 {
            divisor /= 1000;
            write!(f, ",{:03}", self.0 / divisor % 1000)?;
        }
        Ok(())
    }
}

/// A firmware image that passed [`verify_image`], with what the manifest says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The entry's name.
    pub name: String,
    /// The flow the image is for.
    pub flow: FlowKind,
    /// The entry's version text.
    pub version: String,
    /// SHA-256 of `bytes`.
    pub sha256: [u8; 32],
    /// Whether a trusted key's signature was checked and matched.
    pub signed: bool,
    /// The entry's signature, kept when [`verify_image`] checked it with a trusted key
    /// (exactly when [`Image::signed`]), so a flow can hand it on to the device, which
    /// checks it again (the gadget flow does); `None` for an unsigned image and under
    /// [`VerifyPolicy::danger_accept_unsigned`]. Only [`verify_image`] makes a
    /// [`Verified<Image>`], so in one this is a signature a trusted key made over `sha256`.
    pub signature: Option<ImageSignature>,
    /// The image itself (inflated, if the entry was compressed).
    pub bytes: Vec<u8>,
}

impl Image {
    /// The image's size in bytes.
    #[must_use]
    pub fn size(&self) -> u64 {
        // usize is at most 64 bits on every target Rust supports.
        self.bytes.len() as u64
    }
}

/// Proof that `T` passed verification: only this module can make one.
///
/// The field is private and there is no constructor, `Default` or `From` outside this
/// module, so holding a `Verified<Image>` means [`verify_image`] returned it. A clone of a
/// verified value is as verified as the original.
#[derive(Clone, Debug)]
pub struct Verified<T>(T);

impl<T> Verified<T> {
    /// The verified value.
    #[must_use]
    pub fn get(&self) -> &T {
        &self.0
    }

    /// The verified value, giving up the proof.
    #[must_use]
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl Verified<Image> {
    /// Splits the bytes off a verified image, to be held elsewhere (a wasm page keeps them
    /// outside its linear memory); [`Detached::attach`] makes the image whole again.
    #[must_use]
    pub fn detach(self) -> (Detached, Vec<u8>) {
        let mut image = self.0;
        let bytes = core::mem::take(&mut image.bytes);
        let size = bytes.len();
        (Detached { image, size }, bytes)
    }
}

/// What [`verify_image`] found about an image whose bytes are held elsewhere
/// ([`Verified::detach`]). Only bytes of the verified size and SHA-256 make it a
/// [`Verified<Image>`] again, so detaching keeps the proof.
#[derive(Clone, Debug)]
pub struct Detached {
    /// The image with empty `bytes`.
    image: Image,
    size: usize,
}

impl Detached {
    /// The verified image's name, version, digest and signature; its `bytes` are empty.
    #[must_use]
    pub fn image(&self) -> &Image {
        &self.image
    }

    /// The verified image's size in bytes.
    #[must_use]
    pub fn size(&self) -> usize {
        self.size
    }

    /// The verified image again, if `bytes` are its bytes: same size and SHA-256 (hashed
    /// anew here); else the mismatch.
    pub fn attach(&self, bytes: Vec<u8>) -> Result<Verified<Image>, VerifyError> {
        if bytes.len() != self.size {
            return Err(VerifyError::SizeMismatch {
                expected: self.size as u64,
                actual: bytes.len() as u64,
            });
        }
        let actual = sha256(&bytes);
        if actual != self.image.sha256 {
            return Err(VerifyError::DigestMismatch {
                expected: self.image.sha256,
                actual,
            });
        }
        Ok(Verified(Image {
            bytes,
            ..self.image.clone()
        }))
    }
}

/// Which signatures [`verify_image`] demands and trusts; see the module docs for the table.
#[derive(Clone, Debug)]
pub struct VerifyPolicy {
    trusted_keys: Vec<PublicKey>,
    require_signature: bool,
    danger_skip_signatures: bool,
}

impl VerifyPolicy {
    /// Trusts signatures by any of `keys`. With keys, every image must be signed by one of
    /// them; with none, unsigned images pass on their digest and signed ones are refused.
    #[must_use]
    pub fn trusting(keys: Vec<PublicKey>) -> Self {
        VerifyPolicy {
            require_signature: !keys.is_empty(),
            trusted_keys: keys,
            danger_skip_signatures: false,
        }
    }

    /// Trusts signatures by any of `keys`, refusing unsigned images iff `require_signature`;
    /// a signed image is refused when none of `keys` signed it.
    #[must_use]
    pub fn new(keys: Vec<PublicKey>, require_signature: bool) -> Self {
        VerifyPolicy {
            trusted_keys: keys,
            require_signature,
            danger_skip_signatures: false,
        }
    }

    /// For development only: accepts unsigned images and does not check signatures at all.
    /// Size and digests are still checked; [`Image::signed`] is always `false`.
    #[must_use]
    pub fn danger_accept_unsigned() -> Self {
        VerifyPolicy {
            trusted_keys: Vec::new(),
            require_signature: false,
            danger_skip_signatures: true,
        }
    }

    /// The keys whose signatures are trusted.
    #[must_use]
    pub fn trusted_keys(&self) -> &[PublicKey] {
        &self.trusted_keys
    }

    /// Whether an unsigned image is refused.
    #[must_use]
    pub fn require_signature(&self) -> bool {
        self.require_signature
    }
}

/// Checks `bytes` (the file at `entry.url`) against `entry` under `policy`.
///
/// For a compressed entry, `bytes` is the zlib file; it is inflated to at most `entry.size`
/// bytes, so a zip bomb stops there. The returned image owns its (inflated) bytes.
pub fn verify_image(
    bytes: &[u8],
    entry: &ManifestEntry,
    policy: &VerifyPolicy,
) -> Result<Verified<Image>, VerifyError> {
    verify_image_cow(Cow::Borrowed(bytes), entry, policy)
}

/// [`verify_image`] for bytes the caller may give up: owned bytes of an uncompressed entry
/// become the image's without a copy (a 7 MiB image is then held once, not twice), and
/// owned compressed bytes are freed as soon as they are inflated.
pub fn verify_image_cow(
    bytes: Cow<'_, [u8]>,
    entry: &ManifestEntry,
    policy: &VerifyPolicy,
) -> Result<Verified<Image>, VerifyError> {
    let image: Cow<'_, [u8]> = match entry.compression {
        None => bytes,
        Some(Compression::Zlib) => {
            // On 32-bit targets a size above usize::MAX cannot be held anyway; the size check
            // below then reports the mismatch.
            let cap = usize::try_from(entry.size).unwrap_or(usize::MAX);
            let inflated = inflate(&bytes, cap);
            drop(bytes);
            Cow::Owned(inflated.map_err(VerifyError::Inflate)?)
        }
    };

    let actual = image.len() as u64;
    if actual != entry.size {
        return Err(VerifyError::SizeMismatch {
            expected: entry.size,
            actual,
        });
    }

    let digest = sha256(&image);
    if digest != entry.sha256 {
        return Err(VerifyError::DigestMismatch {
            expected: entry.sha256,
            actual: digest,
        });
    }

    if let Some(expected) = entry.md5 {
        let actual = md5(&image);
        if actual != expected {
            return Err(VerifyError::Md5Mismatch { expected, actual });
        }
    }

    let signature = match &entry.signature {
        None if policy.require_signature => return Err(VerifyError::SignatureMissing),
        None => None,
        Some(_) if policy.danger_skip_signatures => None,
        Some(_) if policy.trusted_keys.is_empty() => return Err(VerifyError::NoTrustedKey),
        Some(signature) => {
            let trusted = policy
                .trusted_keys
                .iter()
                .any(|key| key.verify_digest(&digest, signature).is_ok());
            if !trusted {
                return Err(VerifyError::SignatureInvalid);
            }
            Some(*signature)
        }
    };

    Ok(Verified(Image {
        name: entry.name.clone(),
        flow: entry.flow,
        version: entry.version.clone(),
        sha256: digest,
        signed: signature.is_some(),
        signature,
        bytes: image.into_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::zlib::compress;
    use alloc::string::ToString;
    use alloc::vec;
    use p256::ecdsa::signature::hazmat::PrehashSigner as _;
    use p256::ecdsa::{Signature, SigningKey};

    fn signing_key(seed: u8) -> SigningKey {
        SigningKey::from_slice(&sha256(&[seed])).unwrap()
    }

    fn public_key(seed: u8) -> PublicKey {
        let point = signing_key(seed).verifying_key().to_sec1_point(false);
        PublicKey::from_sec1_bytes(point.as_bytes()).unwrap()
    }

    /// Deterministic (RFC 6979) signature of `image` by key `seed`.
    fn sign(seed: u8, image: &[u8]) -> ImageSignature {
        let sig: Signature = signing_key(seed).sign_prehash(&sha256(image)).unwrap();
        ImageSignature::from_bytes(&sig.to_bytes()).unwrap()
    }

    fn image() -> Vec<u8> {
        (0..5000u32).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn entry(image: &[u8]) -> ManifestEntry {
        ManifestEntry {
            name: "app".into(),
            flow: FlowKind::Enos,
            version: "1.2.0".into(),
            url: "app.bin".into(),
            size: image.len() as u64,
            sha256: sha256(image),
            md5: Some(md5(image)),
            signature: Some(sign(1, image)),
            compression: None,
        }
    }

    fn trusting_key_1() -> VerifyPolicy {
        VerifyPolicy::trusting(vec![public_key(1)])
    }

    #[test]
    fn accepts_a_good_signed_image() {
        let img = image();
        let verified = verify_image(&img, &entry(&img), &trusting_key_1()).unwrap();
        let got = verified.get();
        assert_eq!(got.name, "app");
        assert_eq!(got.flow, FlowKind::Enos);
        assert_eq!(got.version, "1.2.0");
        assert_eq!(got.sha256, sha256(&img));
        assert_eq!(got.size(), 5000);
        assert!(got.signed);
        assert_eq!(got.signature, Some(sign(1, &img)));
        assert_eq!(verified.into_inner().bytes, img);
    }

    #[test]
    fn any_trusted_key_will_do() {
        let img = image();
        let policy = VerifyPolicy::trusting(vec![public_key(2), public_key(1)]);
        assert!(
            verify_image(&img, &entry(&img), &policy)
                .unwrap()
                .get()
                .signed
        );
    }

    #[test]
    fn refuses_a_truncated_image() {
        let img = image();
        let err = verify_image(&img[..4999], &entry(&img), &trusting_key_1()).unwrap_err();
        assert_eq!(
            err,
            VerifyError::SizeMismatch {
                expected: 5000,
                actual: 4999
            }
        );
        assert_eq!(err.code(), "size-mismatch");
        assert_eq!(
            err.to_string(),
            "the image is 4,999 bytes but the manifest says 5,000: the download was cut short \
             or the manifest is wrong"
        );
    }

    #[test]
    fn refuses_an_oversized_image() {
        let img = image();
        let mut longer = img.clone();
        longer.push(0);
        let err = verify_image(&longer, &entry(&img), &trusting_key_1()).unwrap_err();
        assert_eq!(
            err,
            VerifyError::SizeMismatch {
                expected: 5000,
                actual: 5001
            }
        );
        assert!(err
            .to_string()
            .contains("not the image the manifest describes"));
    }

    #[test]
    fn refuses_a_one_bit_corruption() {
        let img = image();
        let mut bad = img.clone();
        bad[1234] ^= 0x10;
        let err = verify_image(&bad, &entry(&img), &trusting_key_1()).unwrap_err();
        assert_eq!(
            err,
            VerifyError::DigestMismatch {
                expected: sha256(&img),
                actual: sha256(&bad)
            }
        );
        assert_eq!(err.code(), "digest-mismatch");
        assert!(err.to_string().contains(&to_hex(&sha256(&bad))));
    }

    #[test]
    fn refuses_a_wrong_md5() {
        let img = image();
        let mut e = entry(&img);
        e.md5 = Some([0; 16]);
        let err = verify_image(&img, &e, &trusting_key_1()).unwrap_err();
        assert_eq!(
            err,
            VerifyError::Md5Mismatch {
                expected: [0; 16],
                actual: md5(&img)
            }
        );
        assert_eq!(err.code(), "md5-mismatch");
    }

    #[test]
    fn refuses_a_wrong_signature() {
        let img = image();
        let mut e = entry(&img);
        e.signature = Some(sign(2, &img));
        let err = verify_image(&img, &e, &trusting_key_1()).unwrap_err();
        assert_eq!(err, VerifyError::SignatureInvalid);
        assert_eq!(err.code(), "signature-invalid");
        // A valid signature of other bytes by the trusted key is just as wrong.
        e.signature = Some(sign(1, b"another image"));
        assert_eq!(
            verify_image(&img, &e, &trusting_key_1()).unwrap_err(),
            VerifyError::SignatureInvalid
        );
    }

    #[test]
    fn unsigned_is_refused_when_keys_are_configured_and_accepted_only_via_danger() {
        let img = image();
        let mut e = entry(&img);
        e.signature = None;
        let err = verify_image(&img, &e, &trusting_key_1()).unwrap_err();
        assert_eq!(err, VerifyError::SignatureMissing);
        assert_eq!(err.code(), "signature-missing");
        assert!(trusting_key_1().require_signature());

        let danger = VerifyPolicy::danger_accept_unsigned();
        assert!(!danger.require_signature());
        assert!(danger.trusted_keys().is_empty());
        let verified = verify_image(&img, &e, &danger).unwrap();
        assert!(!verified.get().signed);
        assert_eq!(verified.get().signature, None);
    }

    #[test]
    fn without_keys_unsigned_passes_on_its_digest_and_signed_is_refused() {
        let img = image();
        let no_keys = VerifyPolicy::trusting(Vec::new());
        assert!(!no_keys.require_signature());
        let mut e = entry(&img);
        let err = verify_image(&img, &e, &no_keys).unwrap_err();
        assert_eq!(err, VerifyError::NoTrustedKey);
        assert_eq!(err.code(), "no-trusted-key");
        e.signature = None;
        let unsigned = verify_image(&img, &e, &no_keys).unwrap();
        assert!(!unsigned.get().signed);
        assert_eq!(unsigned.get().signature, None);
    }

    #[test]
    fn danger_policy_skips_signatures_but_not_digests() {
        let img = image();
        let mut e = entry(&img);
        e.signature = Some(sign(2, &img));
        let danger = VerifyPolicy::danger_accept_unsigned();
        let unchecked = verify_image(&img, &e, &danger).unwrap();
        assert!(!unchecked.get().signed);
        // An unchecked signature is not handed on: no device is told it was verified.
        assert_eq!(unchecked.get().signature, None);
        let mut bad = img.clone();
        bad[0] ^= 1;
        assert!(matches!(
            verify_image(&bad, &e, &danger),
            Err(VerifyError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn compressed_entry_inflates_then_verifies() {
        let img = image();
        let mut e = entry(&img);
        e.compression = Some(Compression::Zlib);
        let packed = compress(&img, 6);
        assert!(packed.len() < img.len());
        let verified = verify_image(&packed, &e, &trusting_key_1()).unwrap();
        assert_eq!(verified.get().bytes, img);
        assert!(verified.get().signed);
        assert_eq!(verified.get().signature, entry(&img).signature);

        // The raw image is not a zlib stream.
        assert!(matches!(
            verify_image(&img, &e, &trusting_key_1()),
            Err(VerifyError::Inflate(_))
        ));
        // A cut-short download of the compressed file.
        let err = verify_image(&packed[..packed.len() - 10], &e, &trusting_key_1()).unwrap_err();
        assert_eq!(err, VerifyError::Inflate(InflateError::Truncated));
        assert_eq!(err.code(), "inflate-failed");
        // An entry whose size is smaller than the inflated image.
        e.size = 4096;
        assert_eq!(
            verify_image(&packed, &e, &trusting_key_1()).unwrap_err(),
            VerifyError::Inflate(InflateError::TooLarge { limit: 4096 })
        );
        // A larger size than the inflated image is a size mismatch.
        e.size = 6000;
        assert_eq!(
            verify_image(&packed, &e, &trusting_key_1()).unwrap_err(),
            VerifyError::SizeMismatch {
                expected: 6000,
                actual: 5000
            }
        );
    }

    #[test]
    fn zip_bomb_is_refused_by_the_cap() {
        let bomb = compress(&vec![0u8; 8 * 1024 * 1024], 9);
        assert!(bomb.len() < 16 * 1024);
        let small = vec![0u8; 1000];
        let mut e = entry(&small);
        e.compression = Some(Compression::Zlib);
        let err = verify_image(&bomb, &e, &trusting_key_1()).unwrap_err();
        assert_eq!(
            err,
            VerifyError::Inflate(InflateError::TooLarge { limit: 1000 })
        );
        assert!(err
            .to_string()
            .starts_with("the compressed image cannot be unpacked"));
    }

    #[test]
    fn a_detached_image_attaches_only_its_own_bytes() {
        let img = image();
        let verified = verify_image(&img, &entry(&img), &trusting_key_1()).unwrap();
        let whole = verified.get().clone();
        let (detached, bytes) = verified.detach();
        assert_eq!(bytes, img);
        assert_eq!(detached.size(), img.len());
        assert!(detached.image().bytes.is_empty());
        assert_eq!(detached.image().sha256, whole.sha256);
        assert_eq!(detached.attach(bytes).unwrap().get(), &whole);
        let mut bad = img.clone();
        bad[17] ^= 1;
        assert!(matches!(
            detached.attach(bad),
            Err(VerifyError::DigestMismatch { .. })
        ));
        assert!(matches!(
            detached.attach(img[1..].to_vec()),
            Err(VerifyError::SizeMismatch { .. })
        ));
    }

    #[test]
    fn thousands_separators() {
        for (n, text) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (98304, "98,304"),
            (1_000_001, "1,000,001"),
            (u64::MAX, "18,446,744,073,709,551,615"),
        ] {
            assert_eq!(Thousands(n).to_string(), text);
        }
    }

    #[test]
    fn every_error_says_what_to_do_in_words() {
        for e in [
            VerifyError::SignatureMissing,
            VerifyError::SignatureInvalid,
            VerifyError::NoTrustedKey,
            VerifyError::Inflate(InflateError::Corrupt),
        ] {
            let text = e.to_string();
            assert!(text.starts_with("the "), "{text}");
            assert!(!e.code().is_empty());
        }
    }
}
