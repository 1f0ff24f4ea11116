//! ECDSA P-256 / SHA-256 image signatures, as Microchip's Secure OTA defines them.
//!
//! Contract: a signature is ECDSA over NIST P-256 of the SHA-256 of the whole image, written
//! as raw `r‖s` (64 bytes, big-endian, not DER) and carried as standard base64 (88
//! characters with padding). [`ImageSignature`] holds a signature whose `r` and `s` are in
//! range; [`PublicKey`] holds a valid P-256 point. [`PublicKey::verify_digest`] checks a
//! signature against a SHA-256 digest, [`PublicKey::verify`] against the image itself.
//!
//! Both forms of `s` (low and high) are accepted, as Microchip's bootloader (wolfCrypt
//! `wc_ecc_verify_hash_ex`) accepts both: flipping `s` to `n - s` yields another valid
//! signature of the same image by the same key, which gives an attacker nothing, and
//! refusing high `s` would refuse images that real devices install.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use base64ct::{Base64, Encoding as _};
use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;

use crate::image::digest::{sha256, to_hex};

/// Length of a raw `r‖s` signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// The DER SubjectPublicKeyInfo header of an uncompressed P-256 key (id-ecPublicKey,
/// prime256v1, then a 66-byte BIT STRING); the 65-byte SEC1 point follows it.
const SPKI_P256_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Why a key or signature was refused.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureError {
    /// The public key is not a P-256 key in the expected encoding.
    KeyMalformed,
    /// The signature text or bytes are not an ECDSA P-256 `r‖s` signature.
    SignatureMalformed(SignatureFormat),
    /// The signature is well formed but was not made by this key over this image.
    Mismatch,
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureError::KeyMalformed => f.write_str(
                "the public key is not an ECDSA P-256 key (expected a PEM \"PUBLIC KEY\", \
                 a DER SubjectPublicKeyInfo or a SEC1 point)",
            ),
            SignatureError::SignatureMalformed(why) => {
                write!(f, "the signature is unusable: {why}")
            }
            SignatureError::Mismatch => f.write_str(
                "the signature does not match: the image was changed or signed with another key",
            ),
        }
    }
}

/// What is wrong with a malformed signature.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureFormat {
    /// The text is not standard base64.
    NotBase64,
    /// The signature is not 64 bytes long.
    Length {
        /// The number of bytes found.
        found: usize,
    },
    /// `r` or `s` is zero or not below the curve order, so no key can have made it.
    OutOfRange,
}

impl fmt::Display for SignatureFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureFormat::NotBase64 => f.write_str("it is not standard base64 text"),
            SignatureFormat::Length { found } => write!(
                f,
                "it is {found} bytes long, but a raw r||s P-256 signature is {SIGNATURE_LEN} \
                 (DER-encoded signatures are not accepted)"
            ),
            SignatureFormat::OutOfRange => {
                f.write_str("its r or s value is out of range, so no key can have made it")
            }
        }
    }
}

/// An ECDSA P-256 public key that image signatures are checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// A key from a SEC1 point: 65 bytes uncompressed (`04‖x‖y`) or 33 compressed.
    pub fn from_sec1_bytes(bytes: &[u8]) -> Result<Self, SignatureError> {
        VerifyingKey::from_sec1_bytes(bytes)
            .map(PublicKey)
            .map_err(|_| SignatureError::KeyMalformed)
    }

    /// A key from DER SubjectPublicKeyInfo, the form of Microchip's `pub_key.h` array.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, SignatureError> {
        VerifyingKey::from_public_key_der(der)
            .map(PublicKey)
            .map_err(|_| SignatureError::KeyMalformed)
    }

    /// A key from PEM `-----BEGIN PUBLIC KEY-----` text (`openssl ec -pubout`); whitespace
    /// around the block is ignored.
    pub fn from_pem(pem: &str) -> Result<Self, SignatureError> {
        VerifyingKey::from_public_key_pem(pem.trim())
            .map(PublicKey)
            .map_err(|_| SignatureError::KeyMalformed)
    }

    /// The uncompressed SEC1 point (`04‖x‖y`) in lowercase hex, 130 digits.
    #[must_use]
    pub fn to_sec1_hex(&self) -> String {
        to_hex(self.0.to_sec1_point(false).as_bytes())
    }

    /// The key as DER SubjectPublicKeyInfo (91 bytes).
    #[must_use]
    pub fn to_spki_der(&self) -> Vec<u8> {
        let point = self.0.to_sec1_point(false);
        let mut der = Vec::with_capacity(SPKI_P256_PREFIX.len() + point.len());
        der.extend_from_slice(&SPKI_P256_PREFIX);
        der.extend_from_slice(point.as_bytes());
        der
    }

    /// The key as PEM `PUBLIC KEY` text with 64-column lines, as OpenSSL writes it.
    #[must_use]
    pub fn to_pem(&self) -> String {
        spki_pem(&self.to_spki_der())
    }

    /// SHA-256 of [`PublicKey::to_spki_der`]: a short, stable name for the key, equal to
    /// `openssl pkey -pubin -outform DER | sha256sum`.
    #[must_use]
    pub fn fingerprint(&self) -> [u8; 32] {
        sha256(&self.to_spki_der())
    }

    /// Checks `signature` against the SHA-256 digest of an image.
    pub fn verify_digest(
        &self,
        sha256: &[u8; 32],
        signature: &ImageSignature,
    ) -> Result<(), SignatureError> {
        self.0
            .verify_prehash(sha256, &signature.0)
            .map_err(|_| SignatureError::Mismatch)
    }

    /// Checks `signature` against a whole image.
    pub fn verify(&self, image: &[u8], signature: &ImageSignature) -> Result<(), SignatureError> {
        self.verify_digest(&sha256(image), signature)
    }
}

/// An ECDSA P-256 signature in raw `r‖s` form, with `r` and `s` in range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageSignature(Signature);

/// DER SubjectPublicKeyInfo as PEM `PUBLIC KEY` text with 64-column lines, as OpenSSL
/// writes it (the ECDSA keys here and SiFli's RSA keys).
pub(crate) fn spki_pem(der: &[u8]) -> String {
    let body = Base64::encode_string(der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    // Base64 text is ASCII, so every 64-byte chunk is whole characters.
    for line in body.as_bytes().chunks(64) {
        pem.extend(line.iter().map(|&b| char::from(b)));
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}

/// Standard base64, with or without `=` padding. Unpadded text is padded and decoded by the
/// padded decoder, which accepts exactly what `Base64Unpadded` would (text holding a `=`
/// was padded already and stays refused), so the wasm carries one decoder.
fn decode_base64(text: &str) -> Result<Vec<u8>, base64ct::Error> {
    Base64::decode_vec(text).or_else(|e| {
        if text.contains('=') {
            return Err(e);
        }
        let mut padded = String::from(text);
        while padded.len() % 4 != 0 {
            padded.push('=');
        }
        Base64::decode_vec(&padded)
    })
}

impl ImageSignature {
    /// Parses base64 text of the 64 raw bytes: the standard alphabet, with or without `=`
    /// padding, whitespace allowed only before and after.
    pub fn from_base64(text: &str) -> Result<Self, SignatureError> {
        let text = text.trim();
        let raw = decode_base64(text)
            .map_err(|_| SignatureError::SignatureMalformed(SignatureFormat::NotBase64))?;
        Self::from_bytes(&raw)
    }

    /// Takes exactly 64 raw bytes, `r` then `s`, each big-endian.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SignatureError> {
        if bytes.len() != SIGNATURE_LEN {
            return Err(SignatureError::SignatureMalformed(
                SignatureFormat::Length { found: bytes.len() },
            ));
        }
        Signature::from_slice(bytes)
            .map(ImageSignature)
            .map_err(|_| SignatureError::SignatureMalformed(SignatureFormat::OutOfRange))
    }

    /// The 64 raw bytes, `r` then `s`.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; SIGNATURE_LEN] {
        self.0.to_bytes().into()
    }

    /// Padded standard base64 of the raw bytes (88 characters), as manifests carry it.
    #[must_use]
    pub fn to_base64(&self) -> String {
        Base64::encode_string(&self.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    // Made with Python `cryptography` 48 (OpenSSL), independently of p256: the key's secret
    // scalar is SHA-256("otaweb signature test key"); the signature is pinned in low-S form.
    const MESSAGE: &[u8] = b"otaweb signature test vector: firmware image bytes";
    const MESSAGE_SHA256: &str = "84e50d9c80c064afb3dc0540c14a2b0a24cde1f33ace37460756bdcf167d3908";
    const KEY_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEF6cYmIU2VC0Cnj54R18JR7uELhnb
/YmhahNhtQmgh8QmOr6R1ltQoSJAOiQ7/UzWOhFt2C2wB1LqelCRuauBIg==
-----END PUBLIC KEY-----
";
    const KEY_SEC1: &str = "0417a718988536542d029e3e78475f0947bb842e19dbfd89a16a1361b509a087c4\
                            263abe91d65b50a122403a243bfd4cd63a116dd82db00752ea7a5091b9ab8122";
    const SIGNATURE_B64: &str =
        "DnWnNPKAetojqDIAyG5QQ+k2KhEF0Ytb+0ZK8N9CVr4+IKJM9p+bHcF2Vrt5Wm/ezkn3oX+LqlMC/wwdLzY4Qg==";
    // The same signature with s replaced by n - s.
    const SIGNATURE_HIGH_S_B64: &str =
        "DnWnNPKAetojqDIAyG5QQ+k2KhEF0Ytb+0ZK8N9CVr7B312yCWBk4z6JqUSGpZAg7p0DDCeL9DHwur6lzSztDw==";

    fn key() -> PublicKey {
        PublicKey::from_pem(KEY_PEM).unwrap()
    }

    fn signature() -> ImageSignature {
        ImageSignature::from_base64(SIGNATURE_B64).unwrap()
    }

    #[test]
    fn pinned_vector_verifies() {
        let digest = sha256(MESSAGE);
        assert_eq!(to_hex(&digest), MESSAGE_SHA256);
        assert_eq!(key().verify_digest(&digest, &signature()), Ok(()));
        assert_eq!(key().verify(MESSAGE, &signature()), Ok(()));
        assert_eq!(SIGNATURE_B64.len(), 88);
    }

    #[test]
    fn high_s_form_is_accepted_like_wolfcrypt() {
        let high = ImageSignature::from_base64(SIGNATURE_HIGH_S_B64).unwrap();
        assert_ne!(high, signature());
        assert_eq!(key().verify(MESSAGE, &high), Ok(()));
    }

    #[test]
    fn wrong_message_is_a_mismatch() {
        assert_eq!(
            key().verify(
                b"otaweb signature test vector: firmware image byteS",
                &signature()
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            key().verify_digest(&[0; 32], &signature()),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn flipped_signature_bit_never_verifies() {
        let raw = signature().to_bytes();
        for bit in [0, 7, 100, 255, 256, 300, 511] {
            let mut bad = raw;
            bad[bit / 8] ^= 1 << (bit % 8);
            match ImageSignature::from_bytes(&bad) {
                Ok(sig) => assert_eq!(
                    key().verify(MESSAGE, &sig),
                    Err(SignatureError::Mismatch),
                    "bit {bit}"
                ),
                Err(e) => assert_eq!(
                    e,
                    SignatureError::SignatureMalformed(SignatureFormat::OutOfRange),
                    "bit {bit}"
                ),
            }
        }
    }

    #[test]
    fn other_key_is_a_mismatch() {
        // The generator point G: a valid key that did not make the signature.
        let g = "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296\
                 4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";
        let other = PublicKey::from_sec1_bytes(&hex(g)).unwrap();
        assert_eq!(
            other.verify(MESSAGE, &signature()),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn base64_parsing_is_strict_in_the_middle_and_lenient_at_the_ends() {
        let unpadded = SIGNATURE_B64.trim_end_matches('=');
        assert_eq!(ImageSignature::from_base64(unpadded), Ok(signature()));
        let spaced = ["  ", SIGNATURE_B64, "\r\n"].concat();
        assert_eq!(ImageSignature::from_base64(&spaced), Ok(signature()));

        let malformed = |why| Err(SignatureError::SignatureMalformed(why));
        let inner_space = [&SIGNATURE_B64[..40], " ", &SIGNATURE_B64[40..]].concat();
        let url_safe = SIGNATURE_B64.replace('+', "-").replace('/', "_");
        for bad in ["", "!!!!", inner_space.as_str(), url_safe.as_str()] {
            let want = if bad.is_empty() {
                malformed(SignatureFormat::Length { found: 0 })
            } else {
                malformed(SignatureFormat::NotBase64)
            };
            assert_eq!(ImageSignature::from_base64(bad), want, "{bad:?}");
        }
    }

    #[test]
    fn wrong_lengths_are_malformed() {
        let raw = signature().to_bytes();
        let short = Base64::encode_string(&raw[..63]);
        assert_eq!(
            ImageSignature::from_base64(&short),
            Err(SignatureError::SignatureMalformed(
                SignatureFormat::Length { found: 63 }
            ))
        );
        assert_eq!(
            ImageSignature::from_bytes(&raw[..63]),
            Err(SignatureError::SignatureMalformed(
                SignatureFormat::Length { found: 63 }
            ))
        );
        // A DER signature (here 70-72 bytes) is refused by length.
        let der_like = [0x30u8; 71];
        assert_eq!(
            ImageSignature::from_bytes(&der_like),
            Err(SignatureError::SignatureMalformed(
                SignatureFormat::Length { found: 71 }
            ))
        );
        assert!(
            SignatureError::SignatureMalformed(SignatureFormat::Length { found: 63 })
                .to_string()
                .contains("63 bytes long")
        );
    }

    #[test]
    fn zero_or_oversized_scalars_are_out_of_range() {
        let out_of_range = Err(SignatureError::SignatureMalformed(
            SignatureFormat::OutOfRange,
        ));
        assert_eq!(ImageSignature::from_bytes(&[0; 64]), out_of_range);
        assert_eq!(ImageSignature::from_bytes(&[0xff; 64]), out_of_range);
    }

    #[test]
    fn signature_round_trips() {
        let sig = signature();
        assert_eq!(sig.to_base64(), SIGNATURE_B64);
        assert_eq!(ImageSignature::from_bytes(&sig.to_bytes()), Ok(sig));
    }

    #[test]
    fn keys_parse_from_every_form_and_round_trip() {
        let k = key();
        assert_eq!(k.to_sec1_hex(), KEY_SEC1);
        assert_eq!(k.to_pem(), KEY_PEM);
        assert_eq!(PublicKey::from_pem(&k.to_pem()), Ok(k.clone()));
        assert_eq!(PublicKey::from_spki_der(&k.to_spki_der()), Ok(k.clone()));
        assert_eq!(PublicKey::from_sec1_bytes(&hex(KEY_SEC1)), Ok(k.clone()));
        // Compressed SEC1: 02/03 by the parity of y (0x...22 is even).
        let compressed = ["02", &KEY_SEC1[2..66]].concat();
        assert_eq!(PublicKey::from_sec1_bytes(&hex(&compressed)), Ok(k.clone()));
        // CRLF line ends and surrounding whitespace are fine.
        let crlf = ["\n  ", &KEY_PEM.replace('\n', "\r\n")].concat();
        assert_eq!(PublicKey::from_pem(&crlf), Ok(k.clone()));
        assert_eq!(
            to_hex(&k.fingerprint()),
            to_hex(&sha256(&hex(
                "3059301306072a8648ce3d020106082a8648ce3d03010703420004\
                 17a718988536542d029e3e78475f0947bb842e19dbfd89a16a1361b509a087c4\
                 263abe91d65b50a122403a243bfd4cd63a116dd82db00752ea7a5091b9ab8122"
            )))
        );
    }

    #[test]
    fn garbage_keys_are_malformed() {
        let bad = Err(SignatureError::KeyMalformed);
        assert_eq!(PublicKey::from_sec1_bytes(&[]), bad);
        assert_eq!(PublicKey::from_sec1_bytes(&[4; 65]), bad);
        // A point with a valid x but y off the curve.
        let mut off_curve = hex(KEY_SEC1);
        off_curve[64] ^= 1;
        assert_eq!(PublicKey::from_sec1_bytes(&off_curve), bad);
        assert_eq!(PublicKey::from_spki_der(b"not der"), bad);
        let mut der = key().to_spki_der();
        der.push(0);
        assert_eq!(PublicKey::from_spki_der(&der), bad);
        assert_eq!(PublicKey::from_pem("hello"), bad);
        assert_eq!(
            PublicKey::from_pem(&KEY_PEM.replace("PUBLIC KEY", "PRIVATE KEY")),
            bad
        );
        assert_eq!(PublicKey::from_pem(&KEY_PEM.replace("MFkw", "MFkx")), bad);
        assert!(SignatureError::KeyMalformed
            .to_string()
            .contains("not an ECDSA P-256 key"));
    }

    fn hex(text: &str) -> Vec<u8> {
        let text: String = text.split_whitespace().collect();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn decode_base64_accepts_what_the_padded_or_unpadded_decoder_accepts() {
        use alloc::vec;
        use base64ct::Base64Unpadded;
        let reference = |t: &str| Base64::decode_vec(t).or_else(|_| Base64Unpadded::decode_vec(t));
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ \n.";
        let mut rng = crate::test_rng::Rng(0xB64_0B64);
        for _ in 0..50_000 {
            let len = rng.below(20);
            let text: String = (0..len)
                .map(|_| {
                    // Mostly the standard alphabet, so many strings decode.
                    let n = if rng.below(8) == 0 {
                        alphabet.len()
                    } else {
                        64
                    };
                    char::from(alphabet[rng.below(n)])
                })
                .collect();
            assert_eq!(decode_base64(&text).ok(), reference(&text).ok(), "{text:?}");
        }
        for len in 0..=96 {
            let text = Base64Unpadded::encode_string(&vec![0xA5; len]);
            assert_eq!(decode_base64(&text).ok(), Some(vec![0xA5; len]), "{text:?}");
        }
    }
}
