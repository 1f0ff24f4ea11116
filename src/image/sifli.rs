//! SiFli OTA-manager DFU packages: `ctrl_packet.bin`, image transfer files, compressed
//! payloads and their crypto, built and parsed (protocol notes: `protocols/dfu.md` §4–§6).
//!
//! Contract, file by file (all integers little-endian unless marked `be`):
//!
//! * **Counter block** ([`counter_block`], [`ctr_apply`]): AES-256-CTR with the block
//!   `nonce8 | 00 00 00 00 | be32(offset / 16)`, where `nonce8` is the first 8 bytes of
//!   SHA-256 of the signing public key's 294-byte DER SubjectPublicKeyInfo
//!   ([`PublicKey::nonce8`]; on a device, the efuse SIG_HASH). Only the low 32 bits count
//!   (the generator's `Counter.new(32, …)`); offsets are `u32` byte offsets, so the count
//!   never leaves them. An offset that is not a multiple of 16 is refused, not rounded.
//! * **`ctrl_packet.bin`** ([`CtrlPacket`]): `SHA-256(plain)[32] | AES-256-CTR(root key,
//!   plain) | RSA signature[256]`, the signature RSA-2048 PKCS#1 v1.5 / SHA-256 over `plain`.
//!   The counter starts at offset 0 with the same `nonce8` as the images: confirmed, not
//!   inferred — the generator (GEN37) builds the header cipher with `initial_value=0` and the
//!   device calls `dfu_dec_verify(NULL, 0, …)` (SEC). The plain layout is the §5 table: a
//!   50-byte fixed part (dfu_ID u8, HW/SDK/FW version u32 ×3, a 32-byte session key,
//!   image_header_len u16, blk_size u16, img_count u8) then 263 bytes per image (256-byte
//!   sig, length u32, flags u16, img_id u8). So `plain` is **50 + 263·n** bytes and
//!   `image_header_len` = 3 + 263·n counts from `blk_size` to the end; the "338 + 263·n" of
//!   the notes is the size of the whole *file* (50 + 263·n plus the 32-byte hash and the
//!   256-byte signature), not of the plain content. n ≤ [`MAX_IMAGES`] keeps
//!   `image_header_len` within its `u16`.
//! * **Opening** ([`CtrlPacket::open`]) checks in the device's order (SEC `dfu_dec_verify`,
//!   CTRL `dfu_ctrl_request_init_handler`): decrypt; SHA-256 of the plain content against the
//!   header, **first 8 bytes only**, as the device compares (`DFU_SIG_HASH_SIZE`), so a
//!   packet whose stored hash differs only in bytes 8..32 opens here as it does there; then
//!   the RSA signature over the plain content; only then the layout. Device codes:
//!   [`CtrlError::device_code`].
//! * **Transfer files** ([`build_transfer`], [`Record`], [`TransferFile`]): records
//!   `SHA-256(plain block)[32] | offset u32 | block`, blocks `blk_size` bytes except the
//!   last, covering the *payload* in order; a block is stored AES-256-CTR-encrypted with the
//!   session key at its own byte offset iff the image has [`ImageFlags::ENC`]. The device checks
//!   each packet with [`Record::verify`]: decrypt if ENC, SHA-256 of the plain block, first
//!   8 bytes compared (SEC `dfu_dec_verify` again).
//! * **Payload**: the image (compressed first if [`ImageFlags::COMPRESS`]) padded with **zero
//!   bytes** to a multiple of 16, as GEN37 pads (`data.append(0)`), so our packages match the
//!   vendor tool's byte for byte wherever the compressor's output does. The ctrl entry's
//!   `length` is the payload's length (record headers excluded) and its `sig` is RSA over the
//!   *stored* payload (ciphertext if ENC) — what the device hashes from flash at
//!   IMAGE_SEND_END.
//! * **Compressed payload** ([`compress_payload`], [`CompressedPayload`],
//!   [`decompress_payload`]): `total_len u32 | pksize u32 | { chunk_len u32 | chunk }*`, the
//!   image zero-padded to 16 first (`total_len` is the padded size, so it is 16-aligned),
//!   each chunk one zlib stream (level 9) of one `pksize` slice. This is the software-zlib
//!   variant (`DFU_DECOMPRESS_USING_SOFTWARE`, GEN37); the eZIP chunk format of IMGT37's
//!   default is not supported. The 0..15 zero bytes that pad the compressed payload to 16
//!   follow the last chunk and are accepted there, nothing else is.
//! * **Packages** ([`build_package`]): images sorted by ascending `img_id` (as the iOS
//!   remote sorts and the device's progress maths assume), duplicate ids refused, ctrl
//!   entries in that order, `nonce8` taken from the signing key.
//! * **Remote side** ([`TransferFile`]): a remote that cannot decrypt the ctrl packet is
//!   told each file's `img_id`, and finds the records by walking the file with a block size
//!   ([`DEFAULT_BLK_SIZE`] 512 unless told otherwise, or [`TransferFile::detect`]): every
//!   record but the last is `36 + blk_size` bytes, and record *i* must carry offset
//!   `i · blk_size`, so a wrong block size is caught instead of sending misaligned packets.
//!   `img_length` is the file size and `total_pkt_num` the record count, as iOS sends them.
//!
//! Choices where the notes are open: `blk_size` must be a non-zero multiple of 16 up to
//! [`MAX_BLK_SIZE`] (GEN37 encrypts the blocks as one CTR stream, which equals per-offset
//! counters only at 16-byte block boundaries; 2048 is the largest such size within the SDK's
//! `DFU_MAX_BLK_SIZE` of 2052); images may carry only the flags the SDK defines; a package
//! image may not be empty. Uncompressed packages equal, byte for byte, what an independent
//! re-implementation of GEN37 (Python `cryptography`) makes from the same inputs; GEN37
//! itself draws a random session key, ours is a parameter. RSA signing here is
//! deterministic (PKCS#1 v1.5 needs no randomness) and unblinded — this crate has no RNG —
//! which is fine for the fixture generator and tests, not for a signing service on shared
//! hardware. Nothing here does I/O or panics on untrusted bytes.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use aes::cipher::{
    Array, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit, KeyIvInit, StreamCipher,
};
use aes::Aes256;
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs1v15::{Signature, SigningKey as RsaSigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePublicKey as _};
use rsa::signature::hazmat::{PrehashSigner as _, PrehashVerifier as _};
use rsa::signature::SignatureEncoding as _;
use rsa::traits::PublicKeyParts as _;
use sha2::{Digest as _, Sha256};

use crate::image::digest::{sha256, to_hex};
use crate::image::zlib::{self, InflateError};

/// AES-256 key length (root key, session key).
pub const KEY_LEN: usize = 32;
/// Length of the counter-block nonce (first bytes of SHA-256 of the signing key's DER).
pub const NONCE_LEN: usize = 8;
/// Length of the stored SHA-256 values (ctrl header, record headers).
pub const HASH_LEN: usize = 32;
/// How many leading bytes of a stored SHA-256 the device compares.
pub const HASH_CHECK_LEN: usize = 8;
/// RSA-2048 signature length.
pub const SIG_LEN: usize = 256;
/// Length of an RSA-2048 (e = 65537) public key as DER SubjectPublicKeyInfo.
pub const PUBLIC_KEY_DER_LEN: usize = 294;
/// Length of the ctrl packet's plain content before the image entries.
pub const CTRL_FIXED_LEN: usize = 50;
/// Length of one image entry in the ctrl packet's plain content.
pub const IMAGE_ENTRY_LEN: usize = 263;
/// Bytes a ctrl packet file adds around its plain content (hash and signature).
pub const CTRL_OVERHEAD: usize = HASH_LEN + SIG_LEN;
/// Most images a ctrl packet can list (`image_header_len` = 3 + 263·n is a `u16`).
pub const MAX_IMAGES: usize = 249;
/// An image id (§4, 55x numbering): which partition an image is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageId(pub u8);

impl ImageId {
    /// HCPU application code.
    pub const HCPU: ImageId = ImageId(0);
    /// LCPU code.
    pub const LCPU: ImageId = ImageId(1);
    /// LCPU ROM patch.
    pub const PATCH: ImageId = ImageId(2);
    /// Resources.
    pub const RES: ImageId = ImageId(3);
    /// Fonts.
    pub const FONT: ImageId = ImageId(4);
    /// File-system root.
    pub const EX: ImageId = ImageId(5);
    /// The OTA manager itself.
    pub const OTA_MANAGER: ImageId = ImageId(6);
    /// Tiny font.
    pub const TINY_FONT: ImageId = ImageId(7);
    /// Resource upgrade area.
    pub const RES_UPGRADE: ImageId = ImageId(8);
    /// Device-internal temporary patch.
    pub const PATCH_TEMP: ImageId = ImageId(9);
    /// The control packet, as the device's progress record names it.
    pub const CTRL_PACKET: ImageId = ImageId(10);
    /// The bootloader.
    pub const BOOTLOADER: ImageId = ImageId(11);
    /// The largest id the 55x defines.
    pub const MAX: ImageId = ImageId::BOOTLOADER;

    /// The SDK's name without `DFU_IMG_ID_`, e.g. `"HCPU"`; `None` above [`ImageId::MAX`].
    #[must_use]
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "HCPU",
            1 => "LCPU",
            2 => "PATCH",
            3 => "RES",
            4 => "FONT",
            5 => "EX",
            6 => "OTA_MANAGER",
            7 => "TINY_FONT",
            8 => "RES_UPGRADE",
            9 => "PATCH_TEMP",
            10 => "CTRL_PACKET",
            11 => "BOOTLOADER",
            _ => return None,
        })
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(f, "image {}", self.0),
        }
    }
}

/// An image's flags in the control packet (§4), a u16 bit set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ImageFlags(pub u16);

impl ImageFlags {
    /// Stored encrypted; the signature covers the ciphertext.
    pub const ENC: ImageFlags = ImageFlags(1);
    /// Auto.
    pub const AUTO: ImageFlags = ImageFlags(2);
    /// Single.
    pub const SINGLE: ImageFlags = ImageFlags(4);
    /// Compressed (10 KiB chunks), installed from the download area.
    pub const COMPRESS: ImageFlags = ImageFlags(16);

    /// Whether every bit of `other` is set.
    #[must_use]
    pub const fn contains(self, other: ImageFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Both sets of bits.
    #[must_use]
    pub const fn union(self, other: ImageFlags) -> ImageFlags {
        ImageFlags(self.0 | other.0)
    }
}

/// The update kind, control-packet byte 0 (§4), in the PROTO numbering (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DfuId(pub u8);

impl DfuId {
    /// Code images only.
    pub const CODE: DfuId = DfuId(0);
    /// Code with resources or fonts.
    pub const CODE_MIX: DfuId = DfuId(1);
    /// OTA manager or bootloader self-update.
    pub const OTA_MANAGER: DfuId = DfuId(2);
    /// Download (DL); the largest value the device accepts.
    pub const DL: DfuId = DfuId(3);
    /// Device-internal (LITE mode).
    pub const CODE_DOWNLOAD_IN_HCPU: DfuId = DfuId(10);
    /// Device-internal (LITE mode).
    pub const CODE_RES_DOWNLOAD_IN_HCPU: DfuId = DfuId(11);

    /// The SDK's name without `DFU_ID_`, e.g. `"CODE_MIX"`.
    #[must_use]
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "CODE",
            1 => "CODE_MIX",
            2 => "OTA_MANAGER",
            3 => "DL",
            10 => "CODE_DOWNLOAD_IN_HCPU",
            11 => "CODE_RES_DOWNLOAD_IN_HCPU",
            _ => return None,
        })
    }
}

/// Length of a record header in a transfer file (hash and offset).
pub const RECORD_HEADER_LEN: usize = HASH_LEN + 4;
/// Block size the generator and the iOS remote use by default.
pub const DEFAULT_BLK_SIZE: u16 = 512;
/// Largest block size accepted (a multiple of 16 within the SDK's `DFU_MAX_BLK_SIZE`).
pub const MAX_BLK_SIZE: u16 = 2048;
/// Compression slice size the generator uses by default.
pub const DEFAULT_PKSIZE: u32 = 10240;
/// Most records an image can have (IMAGE_SEND_PACKET's `pkt_idx` is a 1-based `u16`).
pub const MAX_PACKETS: u32 = 65535;

/// Every flag the SDK defines; packages refuse others.
pub const KNOWN_FLAGS: u16 =
    ImageFlags::ENC.0 | ImageFlags::AUTO.0 | ImageFlags::SINGLE.0 | ImageFlags::COMPRESS.0;

type Aes256Ctr = ctr::Ctr32BE<Aes256>;

fn le_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let raw = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes(raw.try_into().ok()?))
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(raw.try_into().ok()?))
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// The first 8 bytes of two SHA-256 values agree: the device's integrity check.
fn hash_prefix_matches(stored: &[u8; HASH_LEN], actual: &[u8; HASH_LEN]) -> bool {
    stored.get(..HASH_CHECK_LEN) == actual.get(..HASH_CHECK_LEN)
}

// ---------------------------------------------------------------------------------------
// RSA keys
// ---------------------------------------------------------------------------------------

/// Why an RSA key or signature was refused.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RsaError {
    /// The bytes or text are not an RSA key in the expected encoding.
    KeyMalformed,
    /// The key is RSA but not 2048-bit, so its signatures cannot fill the 256-byte field.
    KeySize {
        /// The modulus length in bits (rounded up to whole bytes).
        bits: usize,
    },
    /// The signature was not made by this key over these bytes.
    Mismatch,
    /// The RSA library could not sign (not expected for a valid 2048-bit key).
    SigningFailed,
}

impl RsaError {
    /// A stable, machine-readable code for the JS API, e.g. `"dfu-rsa-mismatch"`.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            RsaError::KeyMalformed => "dfu-rsa-key-malformed",
            RsaError::KeySize { .. } => "dfu-rsa-key-size",
            RsaError::Mismatch => "dfu-rsa-mismatch",
            RsaError::SigningFailed => "dfu-rsa-signing-failed",
        }
    }
}

impl fmt::Display for RsaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RsaError::KeyMalformed => f.write_str(
                "the key is not an RSA key (expected DER SubjectPublicKeyInfo, PEM \
                 \"PUBLIC KEY\", or PEM \"PRIVATE KEY\" / \"RSA PRIVATE KEY\")",
            ),
            RsaError::KeySize { bits } => write!(
                f,
                "the RSA key is {bits}-bit, but SiFli DFU signatures are RSA-2048"
            ),
            RsaError::Mismatch => f.write_str(
                "the RSA signature does not match: the data was changed or signed with \
                 another key",
            ),
            RsaError::SigningFailed => f.write_str("the RSA key could not sign"),
        }
    }
}

fn check_size(key: &rsa::PublicKey) -> Result<(), RsaError> {
    if key.size() == SIG_LEN {
        Ok(())
    } else {
        Err(RsaError::KeySize {
            bits: key.size().saturating_mul(8),
        })
    }
}

/// An RSA-2048 public key that DFU signatures are checked against (the device's
/// `sig_pub_key`).
#[derive(Clone)]
pub struct PublicKey {
    /// The canonical DER SubjectPublicKeyInfo, encoded once so that the nonce derived from it
    /// can never silently be wrong.
    der: Vec<u8>,
    key: VerifyingKey<Sha256>,
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        // DER is canonical: equal encodings, equal keys.
        self.der == other.der
    }
}

impl Eq for PublicKey {}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("nonce8", &to_hex(&self.nonce8()))
            .finish_non_exhaustive()
    }
}

impl PublicKey {
    /// A key from DER SubjectPublicKeyInfo (294 bytes for RSA-2048), the form the device
    /// stores and the SDK ships as `sig_pub.der`.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, RsaError> {
        let key = rsa::PublicKey::from_public_key_der(der).map_err(|_| RsaError::KeyMalformed)?;
        Self::from_key(key)
    }

    /// A key from PEM `-----BEGIN PUBLIC KEY-----` text; whitespace around it is ignored.
    pub fn from_pem(pem: &str) -> Result<Self, RsaError> {
        let key =
            rsa::PublicKey::from_public_key_pem(pem.trim()).map_err(|_| RsaError::KeyMalformed)?;
        Self::from_key(key)
    }

    fn from_key(key: rsa::PublicKey) -> Result<Self, RsaError> {
        check_size(&key)?;
        let der = key
            .to_public_key_der()
            .map_err(|_| RsaError::KeyMalformed)?
            .as_bytes()
            .to_vec();
        Ok(PublicKey {
            der,
            key: VerifyingKey::new(key),
        })
    }

    /// The key as DER SubjectPublicKeyInfo.
    #[must_use]
    pub fn to_spki_der(&self) -> &[u8] {
        &self.der
    }

    /// The key as PEM `PUBLIC KEY` text with 64-column lines, as OpenSSL writes it.
    #[must_use]
    pub fn to_pem(&self) -> String {
        crate::image::signature::spki_pem(&self.der)
    }

    /// SHA-256 of [`PublicKey::to_spki_der`]: the efuse SIG_HASH (SDK `sig_hash.bin`).
    #[must_use]
    pub fn sig_hash(&self) -> [u8; HASH_LEN] {
        sha256(&self.der)
    }

    /// The counter-block nonce: the first 8 bytes of [`PublicKey::sig_hash`].
    #[must_use]
    pub fn nonce8(&self) -> [u8; NONCE_LEN] {
        let hash = self.sig_hash();
        let mut nonce = [0; NONCE_LEN];
        nonce.copy_from_slice(&hash[..NONCE_LEN]);
        nonce
    }

    /// Checks a PKCS#1 v1.5 / SHA-256 signature against the SHA-256 digest of the data.
    pub fn verify_digest(
        &self,
        sha256: &[u8; HASH_LEN],
        signature: &[u8; SIG_LEN],
    ) -> Result<(), RsaError> {
        let signature = Signature::try_from(&signature[..]).map_err(|_| RsaError::Mismatch)?;
        self.key
            .verify_prehash(sha256, &signature)
            .map_err(|_| RsaError::Mismatch)
    }

    /// Checks a PKCS#1 v1.5 / SHA-256 signature against the data itself.
    pub fn verify(&self, data: &[u8], signature: &[u8; SIG_LEN]) -> Result<(), RsaError> {
        self.verify_digest(&sha256(data), signature)
    }
}

/// An RSA-2048 private key that signs ctrl packets and images (test and tooling use: see the
/// module docs on blinding).
#[derive(Clone)]
pub struct SigningKey {
    key: RsaSigningKey<Sha256>,
    public: PublicKey,
}

impl SigningKey {
    /// A key from PEM text: PKCS#8 `PRIVATE KEY` (`openssl genpkey`) or PKCS#1
    /// `RSA PRIVATE KEY` (the SDK's `sig_pri.pem` form).
    pub fn from_pem(pem: &str) -> Result<Self, RsaError> {
        let pem = pem.trim();
        let key = rsa::PrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| rsa::PrivateKey::from_pkcs1_pem(pem))
            .map_err(|_| RsaError::KeyMalformed)?;
        Self::from_key(key)
    }

    /// A key from PKCS#8 DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, RsaError> {
        let key = rsa::PrivateKey::from_pkcs8_der(der).map_err(|_| RsaError::KeyMalformed)?;
        Self::from_key(key)
    }

    fn from_key(key: rsa::PrivateKey) -> Result<Self, RsaError> {
        let public = PublicKey::from_key(key.to_public_key())?;
        Ok(SigningKey {
            key: RsaSigningKey::new(key),
            public,
        })
    }

    /// The matching public key.
    #[must_use]
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Signs the SHA-256 digest of some data (PKCS#1 v1.5, deterministic).
    pub fn sign_digest(&self, sha256: &[u8; HASH_LEN]) -> Result<[u8; SIG_LEN], RsaError> {
        let signature = self
            .key
            .sign_prehash(sha256)
            .map_err(|_| RsaError::SigningFailed)?;
        signature
            .to_vec()
            .try_into()
            .map_err(|_| RsaError::SigningFailed)
    }

    /// Signs data (PKCS#1 v1.5 over its SHA-256, deterministic).
    pub fn sign(&self, data: &[u8]) -> Result<[u8; SIG_LEN], RsaError> {
        self.sign_digest(&sha256(data))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the private key.
        f.debug_struct("SigningKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------
// AES
// ---------------------------------------------------------------------------------------

/// Why AES-CTR refused an offset.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtrError {
    /// The byte offset is not a multiple of 16, so no counter block starts there.
    Unaligned {
        /// The offset given.
        offset: u32,
    },
    /// The data would run past the 4 GiB the `u32` offsets can address.
    PastEnd {
        /// The offset given.
        offset: u32,
        /// The data length.
        len: usize,
    },
}

impl CtrError {
    /// A stable, machine-readable code for the JS API, e.g. `"dfu-ctr-unaligned"`.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            CtrError::Unaligned { .. } => "dfu-ctr-unaligned",
            CtrError::PastEnd { .. } => "dfu-ctr-past-end",
        }
    }
}

impl fmt::Display for CtrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtrError::Unaligned { offset } => {
                write!(f, "AES-CTR offset {offset} is not a multiple of 16 bytes")
            }
            CtrError::PastEnd { offset, len } => write!(
                f,
                "{len} bytes at offset {offset} run past the 4 GiB that 32-bit offsets address"
            ),
        }
    }
}

/// The AES-CTR counter block for byte `offset`: `nonce8 | 00 00 00 00 | be32(offset / 16)`.
pub fn counter_block(nonce8: &[u8; NONCE_LEN], offset: u32) -> Result<[u8; 16], CtrError> {
    if !offset.is_multiple_of(16) {
        return Err(CtrError::Unaligned { offset });
    }
    let mut block = [0u8; 16];
    block[..NONCE_LEN].copy_from_slice(nonce8);
    block[12..].copy_from_slice(&(offset / 16).to_be_bytes());
    Ok(block)
}

/// A CTR keystream positioned at byte `offset`, for `len` bytes.
fn cipher_at(
    key: &[u8; KEY_LEN],
    nonce8: &[u8; NONCE_LEN],
    offset: u32,
    len: usize,
) -> Result<Aes256Ctr, CtrError> {
    let iv = counter_block(nonce8, offset)?;
    let end = u64::from(offset).checked_add(u64::try_from(len).unwrap_or(u64::MAX));
    if end.is_none_or(|end| end > 1 << 32) {
        return Err(CtrError::PastEnd { offset, len });
    }
    Ok(Aes256Ctr::new(&Array::from(*key), &Array::from(iv)))
}

/// Encrypts or decrypts `data` in place with AES-256-CTR, as the bytes at `offset` of a
/// stream keyed by `key` and `nonce8` (CTR is its own inverse).
pub fn ctr_apply(
    key: &[u8; KEY_LEN],
    nonce8: &[u8; NONCE_LEN],
    offset: u32,
    data: &mut [u8],
) -> Result<(), CtrError> {
    let len = data.len();
    cipher_at(key, nonce8, offset, len)?
        .try_apply_keystream(data)
        // The range check above keeps the 32-bit block count far from its end.
        .map_err(|_| CtrError::PastEnd { offset, len })
}

/// Encrypts the session key for storage as the device does: AES-256-CBC with the root key
/// and the 16-byte UID as IV, no padding (two blocks).
#[must_use]
pub fn wrap_session_key(
    root_key: &[u8; KEY_LEN],
    uid: &[u8; 16],
    session_key: &[u8; KEY_LEN],
) -> [u8; KEY_LEN] {
    let cipher = Aes256::new(&Array::from(*root_key));
    let mut chain = *uid;
    let mut out = [0u8; KEY_LEN];
    for (plain, wrapped) in session_key.chunks_exact(16).zip(out.chunks_exact_mut(16)) {
        let mut block = Array::from(chain);
        for (b, p) in block.iter_mut().zip(plain) {
            *b ^= p;
        }
        cipher.encrypt_block(&mut block);
        chain = block.into();
        wrapped.copy_from_slice(&chain);
    }
    out
}

/// Reverses [`wrap_session_key`].
#[must_use]
pub fn unwrap_session_key(
    root_key: &[u8; KEY_LEN],
    uid: &[u8; 16],
    wrapped: &[u8; KEY_LEN],
) -> [u8; KEY_LEN] {
    let cipher = Aes256::new(&Array::from(*root_key));
    let mut chain = *uid;
    let mut out = [0u8; KEY_LEN];
    for (sealed, plain) in wrapped.chunks_exact(16).zip(out.chunks_exact_mut(16)) {
        let mut block = Array::<u8, _>::default();
        block.copy_from_slice(sealed);
        cipher.decrypt_block(&mut block);
        for ((p, b), c) in plain.iter_mut().zip(block.iter()).zip(chain) {
            *p = b ^ c;
        }
        chain.copy_from_slice(sealed);
    }
    out
}

// ---------------------------------------------------------------------------------------
// ctrl_packet.bin
// ---------------------------------------------------------------------------------------

/// Why a ctrl packet did not build or open.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtrlError {
    /// The file is shorter than a ctrl packet with no images can be.
    TooShort {
        /// Bytes given (for plain content: its length plus the 288 of hash and signature).
        len: usize,
    },
    /// The first 8 bytes of SHA-256 of the decrypted content differ from the header: wrong
    /// root key or nonce, or damaged bytes.
    HashMismatch,
    /// The RSA signature over the decrypted content does not verify with the public key.
    SignatureInvalid,
    /// The plain content's length does not match its image count.
    LengthMismatch {
        /// 50 + 263·n for the count in the content.
        expected: usize,
        /// Bytes found.
        found: usize,
    },
    /// `image_header_len` does not equal 3 + 263·n.
    HeaderLenMismatch {
        /// 3 + 263·n for the count in the content.
        expected: usize,
        /// The value in the content.
        found: u16,
    },
    /// More images than a ctrl packet can list.
    TooManyImages {
        /// Images given.
        count: usize,
    },
    /// Signing the content failed.
    Signing(RsaError),
}

impl CtrlError {
    /// A stable, machine-readable code for the JS API, e.g. `"dfu-ctrl-hash-mismatch"`.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            CtrlError::TooShort { .. } => "dfu-ctrl-too-short",
            CtrlError::HashMismatch => "dfu-ctrl-hash-mismatch",
            CtrlError::SignatureInvalid => "dfu-ctrl-signature-invalid",
            CtrlError::LengthMismatch { .. } => "dfu-ctrl-length-mismatch",
            CtrlError::HeaderLenMismatch { .. } => "dfu-ctrl-header-len-mismatch",
            CtrlError::TooManyImages { .. } => "dfu-ctrl-too-many-images",
            CtrlError::Signing(_) => "dfu-ctrl-signing-failed",
        }
    }

    /// The DFU error code a 55x device answers INIT_REQUEST with for this failure:
    /// 9 (CONTROL_PACKET_INVALID) for a bad signature, else 1 (GENERAL_ERR), which the device
    /// returns when `dfu_dec_verify` fails and for content it cannot use.
    #[must_use]
    pub fn device_code(&self) -> u16 {
        match self {
            CtrlError::SignatureInvalid => 9,
            _ => 1,
        }
    }
}

impl fmt::Display for CtrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtrlError::TooShort { len } => write!(
                f,
                "the control packet is {len} bytes, shorter than the {} of one with no images",
                CTRL_OVERHEAD + CTRL_FIXED_LEN
            ),
            CtrlError::HashMismatch => f.write_str(
                "the control packet does not decrypt to its hash: it is damaged or made for \
                 another device key",
            ),
            CtrlError::SignatureInvalid => f.write_str(
                "the control packet's signature does not verify: it was changed or signed \
                 with another key",
            ),
            CtrlError::LengthMismatch { expected, found } => write!(
                f,
                "the control packet content is {found} bytes, but its image count needs \
                 {expected}"
            ),
            CtrlError::HeaderLenMismatch { expected, found } => write!(
                f,
                "the control packet's image_header_len is {found}, but its image count needs \
                 {expected}"
            ),
            CtrlError::TooManyImages { count } => write!(
                f,
                "{count} images is more than a control packet can list ({MAX_IMAGES})"
            ),
            CtrlError::Signing(e) => write!(f, "the control packet cannot be signed: {e}"),
        }
    }
}

/// One image as the ctrl packet describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageEntry {
    /// RSA signature over the stored payload (ciphertext if ENC).
    pub sig: [u8; SIG_LEN],
    /// Payload length in bytes (16-byte padded, after compression; record headers excluded).
    pub length: u32,
    /// Image flags ([`ImageFlags::ENC`], [`ImageFlags::COMPRESS`], …).
    pub flags: u16,
    /// Image id ([`ImageId::HCPU`], …).
    pub img_id: u8,
}

impl ImageEntry {
    /// Whether the payload is stored encrypted with the session key.
    #[must_use]
    pub fn is_encrypted(&self) -> bool {
        self.flags & ImageFlags::ENC.0 != 0
    }

    /// Whether the payload is a compressed payload.
    #[must_use]
    pub fn is_compressed(&self) -> bool {
        self.flags & ImageFlags::COMPRESS.0 != 0
    }

    /// Checks the entry's signature over the stored payload, as the device does at
    /// IMAGE_SEND_END (it reads exactly `length` bytes back from flash).
    pub fn verify_payload(&self, key: &PublicKey, stored: &[u8]) -> Result<(), RsaError> {
        key.verify(stored, &self.sig)
    }
}

/// The content of a `ctrl_packet.bin`.
#[derive(Clone, PartialEq, Eq)]
pub struct CtrlPacket {
    /// dfu_ID ([`DfuId::CODE`], …).
    pub dfu_id: u8,
    /// HW_version (the device never checks it; the docs say 51).
    pub hw_version: u32,
    /// SDK_version: the lowest device SDK version that may install the package.
    pub sdk_version: u32,
    /// FW_version, the user's version number.
    pub fw_version: u32,
    /// The AES-256 key that encrypts the ENC images.
    pub session_key: [u8; KEY_LEN],
    /// Block size of the transfer files' records.
    pub blk_size: u16,
    /// The images, in transfer order.
    pub images: Vec<ImageEntry>,
}

impl fmt::Debug for CtrlPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The session key decrypts the images: keep it out of logs.
        f.debug_struct("CtrlPacket")
            .field("dfu_id", &self.dfu_id)
            .field("hw_version", &self.hw_version)
            .field("sdk_version", &self.sdk_version)
            .field("fw_version", &self.fw_version)
            .field("session_key", &"<redacted>")
            .field("blk_size", &self.blk_size)
            .field("images", &self.images)
            .finish()
    }
}

impl CtrlPacket {
    /// Length of the plain content: 50 + 263·n.
    #[must_use]
    pub fn plain_len(&self) -> usize {
        plain_len(self.images.len())
    }

    /// Length of the `ctrl_packet.bin` file: 338 + 263·n.
    #[must_use]
    pub fn packet_len(&self) -> usize {
        self.plain_len().saturating_add(CTRL_OVERHEAD)
    }

    /// The entry for `img_id`, if the packet lists it.
    #[must_use]
    pub fn image(&self, img_id: u8) -> Option<&ImageEntry> {
        self.images.iter().find(|e| e.img_id == img_id)
    }

    /// The plain content (§5 table).
    pub fn to_plain(&self) -> Result<Vec<u8>, CtrlError> {
        let count = self.images.len();
        let fields = (
            u8::try_from(count),
            u16::try_from(count.saturating_mul(IMAGE_ENTRY_LEN).saturating_add(3)),
        );
        let (Ok(count_u8), Ok(header_len)) = fields else {
            return Err(CtrlError::TooManyImages { count });
        };
        // 249 is where image_header_len still fits; the u8 count alone would allow 255.
        if count > MAX_IMAGES {
            return Err(CtrlError::TooManyImages { count });
        }
        let mut out = Vec::with_capacity(self.plain_len());
        out.push(self.dfu_id);
        out.extend_from_slice(&self.hw_version.to_le_bytes());
        out.extend_from_slice(&self.sdk_version.to_le_bytes());
        out.extend_from_slice(&self.fw_version.to_le_bytes());
        out.extend_from_slice(&self.session_key);
        out.extend_from_slice(&header_len.to_le_bytes());
        out.extend_from_slice(&self.blk_size.to_le_bytes());
        out.push(count_u8);
        for entry in &self.images {
            out.extend_from_slice(&entry.sig);
            out.extend_from_slice(&entry.length.to_le_bytes());
            out.extend_from_slice(&entry.flags.to_le_bytes());
            out.push(entry.img_id);
        }
        Ok(out)
    }

    /// Parses plain content: exactly 50 + 263·n bytes with a matching `image_header_len`.
    pub fn parse_plain(plain: &[u8]) -> Result<Self, CtrlError> {
        let too_short = CtrlError::TooShort {
            len: plain.len().saturating_add(CTRL_OVERHEAD),
        };
        let (
            Some(&dfu_id),
            Some(hw_version),
            Some(sdk_version),
            Some(fw_version),
            Some(session_key),
            Some(header_len),
            Some(blk_size),
            Some(&count),
        ) = (
            plain.first(),
            le_u32(plain, 1),
            le_u32(plain, 5),
            le_u32(plain, 9),
            array::<KEY_LEN>(plain, 13),
            le_u16(plain, 45),
            le_u16(plain, 47),
            plain.get(49),
        )
        else {
            return Err(too_short);
        };
        let count = usize::from(count);
        let expected = plain_len(count);
        if plain.len() != expected {
            return Err(CtrlError::LengthMismatch {
                expected,
                found: plain.len(),
            });
        }
        let expected_header = 3 + IMAGE_ENTRY_LEN * count;
        if usize::from(header_len) != expected_header {
            return Err(CtrlError::HeaderLenMismatch {
                expected: expected_header,
                found: header_len,
            });
        }
        let entries = plain.get(CTRL_FIXED_LEN..).ok_or(too_short)?;
        let images = entries
            .chunks_exact(IMAGE_ENTRY_LEN)
            .map(|raw| {
                Some(ImageEntry {
                    sig: array::<SIG_LEN>(raw, 0)?,
                    length: le_u32(raw, SIG_LEN)?,
                    flags: le_u16(raw, SIG_LEN + 4)?,
                    img_id: *raw.get(SIG_LEN + 6)?,
                })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or(too_short)?;
        Ok(CtrlPacket {
            dfu_id,
            hw_version,
            sdk_version,
            fw_version,
            session_key,
            blk_size,
            images,
        })
    }

    /// The `ctrl_packet.bin` bytes: `SHA-256(plain) | AES-256-CTR(root_key, plain) | RSA sig`,
    /// the counter starting at offset 0 with `nonce8`.
    pub fn build(
        &self,
        root_key: &[u8; KEY_LEN],
        signing_key: &SigningKey,
        nonce8: &[u8; NONCE_LEN],
    ) -> Result<Vec<u8>, CtrlError> {
        let mut body = self.to_plain()?;
        let hash = sha256(&body);
        let sig = signing_key.sign_digest(&hash).map_err(CtrlError::Signing)?;
        // Unreachable: `to_plain` caps the content at 64 KiB, far inside the counter range.
        ctr_apply(root_key, nonce8, 0, &mut body).map_err(|_| CtrlError::TooManyImages {
            count: self.images.len(),
        })?;
        let mut out = Vec::with_capacity(body.len().saturating_add(CTRL_OVERHEAD));
        out.extend_from_slice(&hash);
        out.extend_from_slice(&body);
        out.extend_from_slice(&sig);
        Ok(out)
    }

    /// Opens a `ctrl_packet.bin` as the device does: decrypt, compare the first 8 bytes of
    /// the hash, verify the signature, then parse (module docs).
    pub fn open(
        bytes: &[u8],
        root_key: &[u8; KEY_LEN],
        public_key: &PublicKey,
        nonce8: &[u8; NONCE_LEN],
    ) -> Result<Self, CtrlError> {
        let too_short = CtrlError::TooShort { len: bytes.len() };
        if bytes.len() < CTRL_OVERHEAD + CTRL_FIXED_LEN {
            return Err(too_short);
        }
        let sig_at = bytes.len() - SIG_LEN;
        let (Some(stored_hash), Some(body), Some(sig)) = (
            array::<HASH_LEN>(bytes, 0),
            bytes.get(HASH_LEN..sig_at),
            array::<SIG_LEN>(bytes, sig_at),
        ) else {
            return Err(too_short);
        };
        let mut plain = body.to_vec();
        // Fails only for a body past 4 GiB, which cannot be a ctrl packet: undecryptable.
        ctr_apply(root_key, nonce8, 0, &mut plain).map_err(|_| CtrlError::HashMismatch)?;
        let hash = sha256(&plain);
        if !hash_prefix_matches(&stored_hash, &hash) {
            return Err(CtrlError::HashMismatch);
        }
        public_key
            .verify_digest(&hash, &sig)
            .map_err(|_| CtrlError::SignatureInvalid)?;
        Self::parse_plain(&plain)
    }
}

fn plain_len(count: usize) -> usize {
    count
        .saturating_mul(IMAGE_ENTRY_LEN)
        .saturating_add(CTRL_FIXED_LEN)
}

// ---------------------------------------------------------------------------------------
// Transfer files
// ---------------------------------------------------------------------------------------

/// Why a record or transfer file was refused.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferError {
    /// The transfer file is empty.
    Empty,
    /// A record has no block: it is shorter than its 36-byte header plus one byte.
    RecordTooShort {
        /// Index of the record (0-based).
        index: u32,
        /// Its length in bytes.
        len: usize,
    },
    /// The block size is zero, above [`MAX_BLK_SIZE`] or not a multiple of 16.
    BlkSize {
        /// The block size given.
        blk_size: u16,
    },
    /// A record's offset is not where the block size puts it (wrong block size, or records
    /// out of order).
    OffsetMismatch {
        /// Index of the record (0-based).
        index: u32,
        /// `index · blk_size`.
        expected: u32,
        /// The offset in the record.
        found: u32,
    },
    /// More records than IMAGE_SEND_PACKET's 16-bit index can number.
    TooManyPackets {
        /// Records in the file.
        count: usize,
    },
    /// The file is larger than the 32-bit `img_length` can state.
    TooLarge {
        /// Bytes in the file.
        len: usize,
    },
    /// A block ends past the 4 GiB that 32-bit offsets address.
    OffsetOverflow {
        /// The record's offset.
        offset: u32,
    },
    /// The first 8 bytes of SHA-256 of the (decrypted) block differ from the record's hash.
    HashMismatch {
        /// The record's offset.
        offset: u32,
    },
    /// The block could not be decrypted at its offset.
    Cipher(CtrError),
}

impl TransferError {
    /// A stable, machine-readable code for the JS API, e.g. `"dfu-record-hash-mismatch"`.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            TransferError::Empty => "dfu-transfer-empty",
            TransferError::RecordTooShort { .. } => "dfu-record-too-short",
            TransferError::BlkSize { .. } => "dfu-blk-size-invalid",
            TransferError::OffsetMismatch { .. } => "dfu-record-offset-mismatch",
            TransferError::TooManyPackets { .. } => "dfu-transfer-too-many-packets",
            TransferError::TooLarge { .. } => "dfu-transfer-too-large",
            TransferError::OffsetOverflow { .. } => "dfu-record-offset-overflow",
            TransferError::HashMismatch { .. } => "dfu-record-hash-mismatch",
            TransferError::Cipher(e) => e.code(),
        }
    }
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::Empty => f.write_str("the image transfer file is empty"),
            TransferError::RecordTooShort { index, len } => write!(
                f,
                "record {index} of the transfer file is {len} bytes, too short for a \
                 36-byte header and a block"
            ),
            TransferError::BlkSize { blk_size } => write!(
                f,
                "block size {blk_size} is not a multiple of 16 between 16 and {MAX_BLK_SIZE}"
            ),
            TransferError::OffsetMismatch {
                index,
                expected,
                found,
            } => write!(
                f,
                "record {index} is for offset {found}, not {expected}: the file was made with \
                 another block size, or is damaged"
            ),
            TransferError::TooManyPackets { count } => write!(
                f,
                "the transfer file has {count} records, more than the {MAX_PACKETS} a DFU \
                 image can have"
            ),
            TransferError::TooLarge { len } => {
                write!(f, "the transfer file is {len} bytes, more than 4 GiB")
            }
            TransferError::OffsetOverflow { offset } => {
                write!(f, "the block at offset {offset} runs past 4 GiB")
            }
            TransferError::HashMismatch { offset } => write!(
                f,
                "the block at offset {offset} does not match its hash: it is damaged or \
                 decrypted with the wrong key"
            ),
            TransferError::Cipher(e) => write!(f, "the block cannot be decrypted: {e}"),
        }
    }
}

fn check_blk_size(blk_size: u16) -> Result<(), TransferError> {
    if blk_size == 0 || blk_size > MAX_BLK_SIZE || !blk_size.is_multiple_of(16) {
        Err(TransferError::BlkSize { blk_size })
    } else {
        Ok(())
    }
}

/// Walks `bytes` as records of `blk_size`-byte blocks, checking every offset; returns the
/// record count and the blocks' total length.
fn walk(bytes: &[u8], blk_size: u16) -> Result<(u32, u32), TransferError> {
    check_blk_size(blk_size)?;
    if bytes.is_empty() {
        return Err(TransferError::Empty);
    }
    if u32::try_from(bytes.len()).is_err() {
        return Err(TransferError::TooLarge { len: bytes.len() });
    }
    let record_len = RECORD_HEADER_LEN + usize::from(blk_size);
    let count = bytes.len().div_ceil(record_len);
    let records = match u32::try_from(count) {
        Ok(n) if n <= MAX_PACKETS => n,
        _ => return Err(TransferError::TooManyPackets { count }),
    };
    let mut payload_len = 0u32;
    for (index, raw) in (0u32..).zip(bytes.chunks(record_len)) {
        let record = Record::parse(raw).map_err(|e| match e {
            TransferError::RecordTooShort { len, .. } => {
                TransferError::RecordTooShort { index, len }
            }
            other => other,
        })?;
        // index < 65536 and blk_size <= 2048: no overflow.
        let expected = index.saturating_mul(u32::from(blk_size));
        if record.offset != expected {
            return Err(TransferError::OffsetMismatch {
                index,
                expected,
                found: record.offset,
            });
        }
        // The blocks are part of the file, whose length fits u32.
        let block_len = u32::try_from(record.block.len()).unwrap_or(u32::MAX);
        payload_len = payload_len.saturating_add(block_len);
    }
    Ok((records, payload_len))
}

/// One record of a transfer file, which is one IMAGE_SEND_PACKET's data, viewed in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// SHA-256 of the plain block (the device compares the first 8 bytes).
    pub hash: &'a [u8; HASH_LEN],
    /// Byte offset of the block in the payload.
    pub offset: u32,
    /// The block as stored (encrypted if ENC).
    pub block: &'a [u8],
}

impl<'a> Record<'a> {
    /// Views `bytes` as exactly one record: 36-byte header, then a block of at least one
    /// byte ending within 4 GiB.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, TransferError> {
        let too_short = TransferError::RecordTooShort {
            index: 0,
            len: bytes.len(),
        };
        let (Some(hash), Some(offset), Some(block)) = (
            bytes.get(..HASH_LEN).and_then(|h| h.try_into().ok()),
            le_u32(bytes, HASH_LEN),
            bytes.get(RECORD_HEADER_LEN..),
        ) else {
            return Err(too_short);
        };
        if block.is_empty() {
            return Err(too_short);
        }
        let end = u64::from(offset).saturating_add(u64::try_from(block.len()).unwrap_or(u64::MAX));
        if end > 1 << 32 {
            return Err(TransferError::OffsetOverflow { offset });
        }
        Ok(Record {
            hash,
            offset,
            block,
        })
    }

    /// The record's bytes: hash, offset, block.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD_HEADER_LEN.saturating_add(self.block.len()));
        out.extend_from_slice(self.hash);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(self.block);
        out
    }

    /// The device's per-packet check: decrypt the block if `enc` (session key, nonce8) is
    /// given, then compare the first 8 bytes of its SHA-256 with the record's hash. Works
    /// in a small stack buffer; nothing is allocated.
    pub fn verify(
        &self,
        enc: Option<(&[u8; KEY_LEN], &[u8; NONCE_LEN])>,
    ) -> Result<(), TransferError> {
        let mut hasher = Sha256::new();
        match enc {
            None => hasher.update(self.block),
            Some((key, nonce8)) => {
                let mut cipher = cipher_at(key, nonce8, self.offset, self.block.len())
                    .map_err(TransferError::Cipher)?;
                let mut buf = [0u8; 64];
                for piece in self.block.chunks(buf.len()) {
                    let Some(plain) = buf.get_mut(..piece.len()) else {
                        // Pieces are at most the buffer's length.
                        continue;
                    };
                    plain.copy_from_slice(piece);
                    cipher.try_apply_keystream(plain).map_err(|_| {
                        TransferError::Cipher(CtrError::PastEnd {
                            offset: self.offset,
                            len: self.block.len(),
                        })
                    })?;
                    hasher.update(&*plain);
                }
            }
        }
        let hash: [u8; HASH_LEN] = hasher.finalize().into();
        if hash_prefix_matches(self.hash, &hash) {
            Ok(())
        } else {
            Err(TransferError::HashMismatch {
                offset: self.offset,
            })
        }
    }

    /// The plain block (decrypted if `enc` is given), after [`Record::verify`]'s check.
    pub fn plain_block(
        &self,
        enc: Option<(&[u8; KEY_LEN], &[u8; NONCE_LEN])>,
    ) -> Result<Vec<u8>, TransferError> {
        let mut plain = self.block.to_vec();
        if let Some((key, nonce8)) = enc {
            ctr_apply(key, nonce8, self.offset, &mut plain).map_err(TransferError::Cipher)?;
        }
        let hash = sha256(&plain);
        if hash_prefix_matches(self.hash, &hash) {
            Ok(plain)
        } else {
            Err(TransferError::HashMismatch {
                offset: self.offset,
            })
        }
    }
}

/// One image's transfer file as the remote sends it: the bytes, the image id it was told,
/// and where its records are.
#[derive(Clone, PartialEq, Eq)]
pub struct TransferFile {
    img_id: u8,
    blk_size: u16,
    bytes: Vec<u8>,
    /// Number of records; at most [`MAX_PACKETS`].
    records: u32,
    /// Sum of the block lengths; the ctrl entry's `length`.
    payload_len: u32,
}

impl fmt::Debug for TransferFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransferFile")
            .field("img_id", &self.img_id)
            .field("blk_size", &self.blk_size)
            .field("img_length", &self.bytes.len())
            .field("total_pkt_num", &self.records)
            .finish_non_exhaustive()
    }
}

impl TransferFile {
    /// A transfer file for `img_id` with records of the default 512-byte blocks.
    pub fn new(img_id: u8, bytes: Vec<u8>) -> Result<Self, TransferError> {
        Self::with_blk_size(img_id, bytes, DEFAULT_BLK_SIZE)
    }

    /// A transfer file for `img_id` whose records carry `blk_size`-byte blocks; every
    /// record's offset is checked against its position.
    pub fn with_blk_size(img_id: u8, bytes: Vec<u8>, blk_size: u16) -> Result<Self, TransferError> {
        let (records, payload_len) = walk(&bytes, blk_size)?;
        Ok(TransferFile {
            img_id,
            blk_size,
            bytes,
            records,
            payload_len,
        })
    }

    /// A transfer file for `img_id` whose block size is found from the records: the
    /// smallest multiple of 16 the file walks with (every record's offset matching).
    ///
    /// The true size always walks. A larger one walks only if the whole file then fits in
    /// one record (a file of one record is reported as 512 when that holds it, since the
    /// slicing is the same); a smaller one only if the block data happens to carry the right
    /// offset value at every boundary it implies, which for a two-record reading is a single
    /// 4-byte coincidence. Pass the block size with [`TransferFile::with_blk_size`] when it
    /// is known. If no size walks, the error is the one for 512.
    pub fn detect(img_id: u8, bytes: Vec<u8>) -> Result<Self, TransferError> {
        let Some(size) = (16..=MAX_BLK_SIZE)
            .step_by(16)
            .find(|&size| walk(&bytes, size).is_ok())
        else {
            let error = walk(&bytes, DEFAULT_BLK_SIZE).err();
            return Err(error.unwrap_or(TransferError::Empty));
        };
        let fits = |size: u16| bytes.len() <= RECORD_HEADER_LEN + usize::from(size);
        let size = if fits(size) && fits(DEFAULT_BLK_SIZE) {
            DEFAULT_BLK_SIZE
        } else {
            size
        };
        Self::with_blk_size(img_id, bytes, size)
    }

    /// The image id the remote sends in IMAGE_SEND_START, IMAGE_SEND_PACKET and
    /// IMAGE_SEND_END.
    #[must_use]
    pub fn img_id(&self) -> u8 {
        self.img_id
    }

    /// The block size the records were found with.
    #[must_use]
    pub fn blk_size(&self) -> u16 {
        self.blk_size
    }

    /// The whole file.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// IMAGE_SEND_START's `img_length`: the file size, record headers included.
    #[must_use]
    pub fn img_length(&self) -> u32 {
        // Checked to fit when the file was made.
        u32::try_from(self.bytes.len()).unwrap_or(u32::MAX)
    }

    /// IMAGE_SEND_START's `total_pkt_num`: the number of records.
    #[must_use]
    pub fn total_pkt_num(&self) -> u32 {
        self.records
    }

    /// The payload length the ctrl entry states: the blocks' total, headers excluded.
    #[must_use]
    pub fn payload_len(&self) -> u32 {
        self.payload_len
    }

    /// The bytes of record `index` (0-based; IMAGE_SEND_PACKET `pkt_idx` is `index + 1`).
    #[must_use]
    pub fn record(&self, index: u32) -> Option<&[u8]> {
        let record_len = RECORD_HEADER_LEN + usize::from(self.blk_size);
        let start = usize::try_from(index).ok()?.checked_mul(record_len)?;
        if start >= self.bytes.len() {
            return None;
        }
        let end = start.saturating_add(record_len).min(self.bytes.len());
        self.bytes.get(start..end)
    }

    /// The records in order, as packet data.
    pub fn records(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.bytes
            .chunks(RECORD_HEADER_LEN + usize::from(self.blk_size))
    }

    /// The stored payload (the blocks, still encrypted if ENC): what a device writes to
    /// flash and what the ctrl entry's signature covers.
    #[must_use]
    pub fn stored_payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(usize::try_from(self.payload_len).unwrap_or(0));
        for raw in self.records() {
            out.extend_from_slice(raw.get(RECORD_HEADER_LEN..).unwrap_or_default());
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// Compressed payloads (flag 16)
// ---------------------------------------------------------------------------------------

/// Why a compressed payload did not build or unpack.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadError {
    /// The payload ends inside its header, a chunk length or a chunk.
    Truncated,
    /// The slice size is zero.
    PkSizeZero,
    /// `total_len` is more than the caller allows; refused before inflating anything.
    OverCap {
        /// The size the header states.
        total_len: u32,
        /// The most bytes allowed.
        cap: usize,
    },
    /// A chunk inflates to more than one slice (`pksize`).
    ChunkTooLarge {
        /// Index of the chunk (0-based).
        index: u32,
        /// The slice size.
        pksize: u32,
    },
    /// The chunks inflate to a different total than `total_len`.
    TotalLenMismatch {
        /// The size the header states.
        expected: u32,
        /// What the chunks produce (at least this much, if more).
        found: u64,
    },
    /// A chunk is not one valid zlib stream.
    Inflate {
        /// Index of the chunk (0-based).
        index: u32,
        /// What zlib said.
        error: InflateError,
    },
    /// Bytes other than up to 15 zeros (the 16-byte padding) follow the last chunk.
    TrailingBytes,
    /// The image is too large for the 32-bit sizes of the format.
    TooLarge,
}

impl PayloadError {
    /// A stable, machine-readable code for the JS API, e.g. `"dfu-payload-over-cap"`.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            PayloadError::Truncated => "dfu-payload-truncated",
            PayloadError::PkSizeZero => "dfu-payload-pksize-zero",
            PayloadError::OverCap { .. } => "dfu-payload-over-cap",
            PayloadError::ChunkTooLarge { .. } => "dfu-payload-chunk-too-large",
            PayloadError::TotalLenMismatch { .. } => "dfu-payload-total-len-mismatch",
            PayloadError::Inflate { .. } => "dfu-payload-inflate-failed",
            PayloadError::TrailingBytes => "dfu-payload-trailing-bytes",
            PayloadError::TooLarge => "dfu-payload-too-large",
        }
    }
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadError::Truncated => f.write_str("the compressed image ends too early"),
            PayloadError::PkSizeZero => f.write_str("the compressed image's slice size is zero"),
            PayloadError::OverCap { total_len, cap } => write!(
                f,
                "the compressed image unpacks to {total_len} bytes, more than the {cap} allowed"
            ),
            PayloadError::ChunkTooLarge { index, pksize } => write!(
                f,
                "chunk {index} of the compressed image unpacks to more than its {pksize}-byte \
                 slice"
            ),
            PayloadError::TotalLenMismatch { expected, found } => write!(
                f,
                "the compressed image unpacks to {found} bytes, but its header says {expected}"
            ),
            PayloadError::Inflate { index, error } => {
                write!(
                    f,
                    "chunk {index} of the compressed image is damaged: {error}"
                )
            }
            PayloadError::TrailingBytes => {
                f.write_str("unexpected bytes after the last chunk of the compressed image")
            }
            PayloadError::TooLarge => f.write_str("the image is too large to compress (4 GiB)"),
        }
    }
}

/// Appends zero bytes to make `data` a multiple of 16 long (the generator's padding).
fn pad16(data: &mut Vec<u8>) {
    let padded = data.len().next_multiple_of(16);
    data.resize(padded, 0);
}

/// The compressed payload of `image`: zero-padded to 16, then `total_len | pksize |
/// { chunk_len | zlib level 9 of one pksize slice }*`. Not padded itself; packing does that.
pub fn compress_payload(image: &[u8], pksize: u32) -> Result<Vec<u8>, PayloadError> {
    let slice = usize::try_from(pksize).map_err(|_| PayloadError::TooLarge)?;
    if slice == 0 {
        return Err(PayloadError::PkSizeZero);
    }
    let mut plain = image.to_vec();
    pad16(&mut plain);
    let total_len = u32::try_from(plain.len()).map_err(|_| PayloadError::TooLarge)?;
    let mut out = Vec::with_capacity(plain.len() / 2 + 64);
    out.extend_from_slice(&total_len.to_le_bytes());
    out.extend_from_slice(&pksize.to_le_bytes());
    for part in plain.chunks(slice) {
        let chunk = zlib::compress(part, 9);
        let chunk_len = u32::try_from(chunk.len()).map_err(|_| PayloadError::TooLarge)?;
        out.extend_from_slice(&chunk_len.to_le_bytes());
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A compressed payload's header, with its chunks viewed in place; inflating one chunk at a
/// time keeps memory at one slice, as the device's installer does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompressedPayload<'a> {
    total_len: u32,
    pksize: u32,
    body: &'a [u8],
}

impl<'a> CompressedPayload<'a> {
    /// Reads the 8-byte header of a (decrypted) compressed payload.
    pub fn parse(payload: &'a [u8]) -> Result<Self, PayloadError> {
        let (Some(total_len), Some(pksize), Some(body)) =
            (le_u32(payload, 0), le_u32(payload, 4), payload.get(8..))
        else {
            return Err(PayloadError::Truncated);
        };
        if pksize == 0 {
            return Err(PayloadError::PkSizeZero);
        }
        Ok(CompressedPayload {
            total_len,
            pksize,
            body,
        })
    }

    /// The unpacked size (the 16-byte padded image size).
    #[must_use]
    pub fn total_len(&self) -> u32 {
        self.total_len
    }

    /// The slice size each chunk unpacks to (the last one may be shorter).
    #[must_use]
    pub fn pksize(&self) -> u32 {
        self.pksize
    }

    /// The zlib chunks in order, up to the end of the bytes or up to the zero padding (fewer
    /// than 16 zero bytes) that may follow the last chunk; [`ChunkIter::rest`] then holds
    /// that padding. No chunk record is all zeros (a zlib stream starts with `0x78`).
    #[must_use]
    pub fn chunks(&self) -> ChunkIter<'a> {
        ChunkIter {
            rest: self.body,
            failed: false,
        }
    }
}

/// The chunks of a [`CompressedPayload`]: each item is one chunk's bytes (one zlib stream if
/// the payload is sound), or [`PayloadError::Truncated`] once, if a chunk length runs past
/// the end.
#[derive(Clone, Debug)]
pub struct ChunkIter<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> ChunkIter<'a> {
    /// The bytes after the chunks yielded so far.
    #[must_use]
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }
}

impl<'a> Iterator for ChunkIter<'a> {
    type Item = Result<&'a [u8], PayloadError>;

    fn next(&mut self) -> Option<Self::Item> {
        let padding = self.rest.len() < 16 && self.rest.iter().all(|&b| b == 0);
        if self.failed || padding {
            return None;
        }
        let chunk = le_u32(self.rest, 0)
            .and_then(|len| usize::try_from(len).ok())
            .and_then(|len| self.rest.get(4..4usize.checked_add(len)?));
        match chunk {
            Some(chunk) => {
                self.rest = self.rest.get(4 + chunk.len()..).unwrap_or_default();
                Some(Ok(chunk))
            }
            None => {
                self.failed = true;
                Some(Err(PayloadError::Truncated))
            }
        }
    }
}

/// Unpacks a whole (decrypted) compressed payload to its `total_len` bytes, refusing more
/// than `max_output` before inflating anything and checking every chunk against `pksize`.
///
/// After the chunks that produce `total_len` bytes, up to 15 zero bytes (the payload's
/// 16-byte padding) may follow; anything else is [`PayloadError::TrailingBytes`].
pub fn decompress_payload(payload: &[u8], max_output: usize) -> Result<Vec<u8>, PayloadError> {
    let parsed = CompressedPayload::parse(payload)?;
    let total = parsed.total_len;
    let total_usize = usize::try_from(total).map_err(|_| PayloadError::TooLarge)?;
    if total_usize > max_output {
        return Err(PayloadError::OverCap {
            total_len: total,
            cap: max_output,
        });
    }
    let pksize = usize::try_from(parsed.pksize).unwrap_or(usize::MAX);
    // Grown as chunks inflate, not reserved from the header: a 16-byte payload claiming the
    // whole cap must not get the whole cap.
    let mut out = Vec::new();
    let mut chunks = parsed.chunks();
    let mut index = 0u32;
    while out.len() < total_usize {
        let Some(chunk) = chunks.next() else {
            return Err(PayloadError::TotalLenMismatch {
                expected: total,
                found: out.len() as u64,
            });
        };
        let chunk = chunk?;
        let remaining = total_usize - out.len();
        let limit = pksize.min(remaining);
        match zlib::inflate(chunk, limit) {
            Ok(part) if part.is_empty() => {
                // A chunk that yields nothing cannot be one slice of the image.
                return Err(PayloadError::TotalLenMismatch {
                    expected: total,
                    found: out.len() as u64,
                });
            }
            Ok(part) => out.extend_from_slice(&part),
            Err(InflateError::TooLarge { .. }) if limit == pksize => {
                return Err(PayloadError::ChunkTooLarge {
                    index,
                    pksize: parsed.pksize,
                });
            }
            Err(InflateError::TooLarge { .. }) => {
                return Err(PayloadError::TotalLenMismatch {
                    expected: total,
                    found: (out.len() as u64).saturating_add(limit as u64 + 1),
                });
            }
            Err(error) => return Err(PayloadError::Inflate { index, error }),
        }
        index = index.saturating_add(1);
    }
    let rest = chunks.rest();
    if rest.len() >= 16 || rest.iter().any(|&b| b != 0) {
        return Err(PayloadError::TrailingBytes);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Packages
// ---------------------------------------------------------------------------------------

/// Why a package or transfer file could not be built.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackageError {
    /// No images were given.
    NoImages,
    /// More images than a ctrl packet can list.
    TooManyImages {
        /// Images given.
        count: usize,
    },
    /// Two images have the same id.
    DuplicateImage {
        /// The repeated id.
        img_id: u8,
    },
    /// An image carries flags the SDK does not define.
    UnknownFlags {
        /// The image.
        img_id: u8,
        /// Its flags.
        flags: u16,
    },
    /// An image is empty.
    EmptyImage {
        /// The image.
        img_id: u8,
    },
    /// The block size is zero, above [`MAX_BLK_SIZE`] or not a multiple of 16.
    BlkSize {
        /// The block size given.
        blk_size: u16,
    },
    /// A payload given to [`build_transfer`] is empty or not a multiple of 16 long.
    UnalignedPayload {
        /// Its length.
        len: usize,
    },
    /// An image is too large for the format (4 GiB, or more than 65535 records).
    TooLarge {
        /// The image (0 for [`build_transfer`]).
        img_id: u8,
    },
    /// Compressing an image failed.
    Payload(PayloadError),
    /// Signing failed.
    Signing(RsaError),
    /// The ctrl packet could not be built.
    Ctrl(CtrlError),
}

impl PackageError {
    /// A stable, machine-readable code for the JS API, e.g. `"dfu-package-duplicate-image"`.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            PackageError::NoImages => "dfu-package-no-images",
            PackageError::TooManyImages { .. } => "dfu-package-too-many-images",
            PackageError::DuplicateImage { .. } => "dfu-package-duplicate-image",
            PackageError::UnknownFlags { .. } => "dfu-package-unknown-flags",
            PackageError::EmptyImage { .. } => "dfu-package-empty-image",
            PackageError::BlkSize { .. } => "dfu-blk-size-invalid",
            PackageError::UnalignedPayload { .. } => "dfu-package-unaligned-payload",
            PackageError::TooLarge { .. } => "dfu-package-too-large",
            PackageError::Payload(e) => e.code(),
            PackageError::Signing(e) => e.code(),
            PackageError::Ctrl(e) => e.code(),
        }
    }
}

impl fmt::Display for PackageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PackageError::NoImages => f.write_str("a DFU package needs at least one image"),
            PackageError::TooManyImages { count } => write!(
                f,
                "{count} images is more than a DFU package can hold ({MAX_IMAGES})"
            ),
            PackageError::DuplicateImage { img_id } => {
                write!(f, "image id {img_id} appears more than once")
            }
            PackageError::UnknownFlags { img_id, flags } => write!(
                f,
                "image {img_id} has flags {flags:#x}; only ENC (1), AUTO (2), SINGLE (4) and \
                 COMPRESS (16) exist"
            ),
            PackageError::EmptyImage { img_id } => write!(f, "image {img_id} is empty"),
            PackageError::BlkSize { blk_size } => write!(
                f,
                "block size {blk_size} is not a multiple of 16 between 16 and {MAX_BLK_SIZE}"
            ),
            PackageError::UnalignedPayload { len } => write!(
                f,
                "a {len}-byte payload is not a non-empty multiple of 16 bytes"
            ),
            PackageError::TooLarge { img_id } => write!(
                f,
                "image {img_id} is too large for a DFU package (4 GiB or 65535 packets)"
            ),
            PackageError::Payload(e) => write!(f, "an image cannot be compressed: {e}"),
            PackageError::Signing(e) => write!(f, "an image cannot be signed: {e}"),
            PackageError::Ctrl(e) => write!(f, "the control packet cannot be built: {e}"),
        }
    }
}

/// The records of `plain` (hashed) carrying the same bytes of `stored`, `blk_size` at a time.
fn records(plain: &[u8], stored: &[u8], blk_size: u16) -> Result<Vec<u8>, PackageError> {
    let blk = usize::from(blk_size);
    let count = plain.len().div_ceil(blk);
    let mut out = Vec::with_capacity(
        plain
            .len()
            .saturating_add(count.saturating_mul(RECORD_HEADER_LEN)),
    );
    for (index, (p, s)) in (0u32..).zip(plain.chunks(blk).zip(stored.chunks(blk))) {
        let offset = index
            .checked_mul(u32::from(blk_size))
            .ok_or(PackageError::TooLarge { img_id: 0 })?;
        out.extend_from_slice(&sha256(p));
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(s);
    }
    Ok(out)
}

fn check_package_blk_size(blk_size: u16) -> Result<(), PackageError> {
    check_blk_size(blk_size).map_err(|_| PackageError::BlkSize { blk_size })
}

/// A transfer file for `payload` (already compressed if it should be, and padded to 16):
/// records of `blk_size` blocks, each hashed plain and stored encrypted at its offset if
/// `enc` (session key, nonce8) is given. The image signature covers the stored blocks
/// ([`TransferFile::stored_payload`]).
pub fn build_transfer(
    payload: &[u8],
    blk_size: u16,
    enc: Option<(&[u8; KEY_LEN], &[u8; NONCE_LEN])>,
) -> Result<Vec<u8>, PackageError> {
    Ok(transfer_and_stored(payload, blk_size, enc)?.0)
}

fn transfer_and_stored(
    payload: &[u8],
    blk_size: u16,
    enc: Option<(&[u8; KEY_LEN], &[u8; NONCE_LEN])>,
) -> Result<(Vec<u8>, Vec<u8>), PackageError> {
    check_package_blk_size(blk_size)?;
    if payload.is_empty() || !payload.len().is_multiple_of(16) {
        return Err(PackageError::UnalignedPayload { len: payload.len() });
    }
    let blocks = payload.len().div_ceil(usize::from(blk_size));
    if u32::try_from(payload.len()).is_err() || blocks > MAX_PACKETS as usize {
        return Err(PackageError::TooLarge { img_id: 0 });
    }
    let mut stored = payload.to_vec();
    if let Some((key, nonce8)) = enc {
        // Blocks are multiples of 16 at offsets that are too, so one stream from offset 0 is
        // every block encrypted at its own offset.
        ctr_apply(key, nonce8, 0, &mut stored).map_err(|_| PackageError::TooLarge { img_id: 0 })?;
    }
    let file = records(payload, &stored, blk_size)?;
    Ok((file, stored))
}

/// One image to package: its id, flags and plain bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackageImage<'a> {
    /// Image id ([`ImageId::HCPU`], …).
    pub img_id: u8,
    /// Image flags ([`ImageFlags::ENC`], [`ImageFlags::COMPRESS`], …).
    pub flags: u16,
    /// The plain image.
    pub image: &'a [u8],
}

/// The ctrl-packet fields and packing sizes of a package.
#[derive(Clone, PartialEq, Eq)]
pub struct PackageParams {
    /// dfu_ID ([`DfuId::CODE_MIX`] for code plus resources, …).
    pub dfu_id: u8,
    /// HW_version (the docs say 51).
    pub hw_version: u32,
    /// SDK_version: the lowest device SDK version allowed.
    pub sdk_version: u32,
    /// FW_version.
    pub fw_version: u32,
    /// Block size of the records ([`DEFAULT_BLK_SIZE`]).
    pub blk_size: u16,
    /// Slice size of compressed images ([`DEFAULT_PKSIZE`]).
    pub pksize: u32,
    /// The session key for ENC images (the generator draws a random one per package).
    pub session_key: [u8; KEY_LEN],
}

impl fmt::Debug for PackageParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackageParams")
            .field("dfu_id", &self.dfu_id)
            .field("hw_version", &self.hw_version)
            .field("sdk_version", &self.sdk_version)
            .field("fw_version", &self.fw_version)
            .field("blk_size", &self.blk_size)
            .field("pksize", &self.pksize)
            .field("session_key", &"<redacted>")
            .finish()
    }
}

/// A built package: the ctrl packet (bytes and content) and one transfer file per image, in
/// ascending `img_id` order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    /// The ctrl packet's content.
    pub ctrl: CtrlPacket,
    /// `ctrl_packet.bin`.
    pub ctrl_packet: Vec<u8>,
    /// The transfer files, in the ctrl packet's order.
    pub transfers: Vec<TransferFile>,
}

/// Builds a package as the SDK generator does (module docs): each image compressed if
/// COMPRESS, zero-padded to 16, encrypted with the session key if ENC, signed, cut into
/// records; then the ctrl packet over all of them, encrypted with `root_key`.
pub fn build_package(
    params: &PackageParams,
    images: &[PackageImage<'_>],
    root_key: &[u8; KEY_LEN],
    signing_key: &SigningKey,
) -> Result<Package, PackageError> {
    check_package_blk_size(params.blk_size)?;
    if images.is_empty() {
        return Err(PackageError::NoImages);
    }
    if images.len() > MAX_IMAGES {
        return Err(PackageError::TooManyImages {
            count: images.len(),
        });
    }
    let mut sorted: Vec<&PackageImage<'_>> = images.iter().collect();
    sorted.sort_by_key(|i| i.img_id);
    for pair in sorted.windows(2) {
        if let [a, b] = pair {
            if a.img_id == b.img_id {
                return Err(PackageError::DuplicateImage { img_id: a.img_id });
            }
        }
    }
    let nonce8 = signing_key.public_key().nonce8();
    let mut entries = Vec::with_capacity(sorted.len());
    let mut transfers = Vec::with_capacity(sorted.len());
    for image in sorted {
        let img_id = image.img_id;
        if image.flags & !KNOWN_FLAGS != 0 {
            return Err(PackageError::UnknownFlags {
                img_id,
                flags: image.flags,
            });
        }
        if image.image.is_empty() {
            return Err(PackageError::EmptyImage { img_id });
        }
        let mut payload = if image.flags & ImageFlags::COMPRESS.0 != 0 {
            compress_payload(image.image, params.pksize).map_err(PackageError::Payload)?
        } else {
            image.image.to_vec()
        };
        pad16(&mut payload);
        let enc = (image.flags & ImageFlags::ENC.0 != 0).then_some((&params.session_key, &nonce8));
        let (file, stored) =
            transfer_and_stored(&payload, params.blk_size, enc).map_err(|e| match e {
                PackageError::TooLarge { .. } => PackageError::TooLarge { img_id },
                other => other,
            })?;
        let length = u32::try_from(stored.len()).map_err(|_| PackageError::TooLarge { img_id })?;
        let sig = signing_key.sign(&stored).map_err(PackageError::Signing)?;
        entries.push(ImageEntry {
            sig,
            length,
            flags: image.flags,
            img_id,
        });
        let transfer = TransferFile::with_blk_size(img_id, file, params.blk_size)
            .map_err(|_| PackageError::TooLarge { img_id })?;
        transfers.push(transfer);
    }
    let ctrl = CtrlPacket {
        dfu_id: params.dfu_id,
        hw_version: params.hw_version,
        sdk_version: params.sdk_version,
        fw_version: params.fw_version,
        session_key: params.session_key,
        blk_size: params.blk_size,
        images: entries,
    };
    let ctrl_packet = ctrl
        .build(root_key, signing_key, &nonce8)
        .map_err(PackageError::Ctrl)?;
    Ok(Package {
        ctrl,
        ctrl_packet,
        transfers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;
    use rsa::pkcs8::LineEnding;

    /// The fixtures' RSA-2048 test key (generated once with `openssl genpkey`, test-only).
    const KEY_PEM: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/firmware-fixtures/src/dfu-test-signing-key.pem"
    ));
    /// An unrelated RSA-2048 public key.
    const OTHER_PEM: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/firmware-fixtures/src/dfu-other-key.pub.pem"
    ));
    /// An RSA-1024 public key: right algorithm, wrong size.
    const RSA1024_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDHG4odFYrkieJHvV3P7x5qZvvy
FLrDKlJ9ZrGlCfPhhE7lixkhXgkseDiHLhpub/XkSb7BRQl2NUTFMpMqcqBoqw8O
xMP7y1y9BmqCLYmbnign0WRIJP7QX6XH3mhFigirEowijYMrQjDxhwj5Xum++YJt
8PNhykLtr8km3YV9OQIDAQAB
-----END PUBLIC KEY-----
";
    /// `openssl pkey -pubout -outform DER | sha256sum` of the test key.
    const KEY_SIG_HASH: &str = "c37d71eaa16ea77f59e58f928095dd3cebe2ffaa150e0cbc3298627eb6ce9096";

    const ROOT: [u8; 32] = {
        let mut k = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            k[i] = 0x40 + i as u8;
            i += 1;
        }
        k
    };
    const SESSION: [u8; 32] = {
        let mut k = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            k[i] = i as u8;
            i += 1;
        }
        k
    };

    fn key() -> SigningKey {
        SigningKey::from_pem(KEY_PEM).unwrap()
    }

    fn nonce() -> [u8; 8] {
        key().public_key().nonce8()
    }

    fn hex(text: &str) -> Vec<u8> {
        let text: String = text.split_whitespace().collect();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    fn pattern(len: usize, mul: usize, add: usize, modulo: usize) -> Vec<u8> {
        (0..len).map(|i| ((i * mul + add) % modulo) as u8).collect()
    }

    // --- AES ------------------------------------------------------------------------

    /// NIST SP 800-38A F.5.5 CTR-AES256.Encrypt.
    #[test]
    fn aes256_ctr_matches_nist_f55() {
        let key: [u8; 32] = hex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
            .try_into()
            .unwrap();
        let iv: [u8; 16] = hex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff").try_into().unwrap();
        let mut data = hex(
            "6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51
             30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710",
        );
        Aes256Ctr::new(&Array::from(key), &Array::from(iv)).apply_keystream(&mut data);
        assert_eq!(
            data,
            hex(
                "601ec313775789a5b7a7f504bbf3d228 f443e3ca4d62b59aca84e990cacaf5c5
                 2b0930daa23de94ce87017ba2d84988d dfc9c58db67aada613c2dd08457941a6"
            )
        );
    }

    #[test]
    fn counter_block_layout() {
        let nonce = [1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(
            counter_block(&nonce, 0x12340),
            Ok([1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0x12, 0x34])
        );
        assert_eq!(
            counter_block(&nonce, 0),
            Ok([1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0])
        );
        assert_eq!(
            counter_block(&nonce, 0xFFFF_FFF0),
            Ok([1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0x0F, 0xFF, 0xFF, 0xFF])
        );
        assert_eq!(
            counter_block(&nonce, 8),
            Err(CtrError::Unaligned { offset: 8 })
        );
    }

    #[test]
    fn ctr_apply_is_the_stream_at_an_offset() {
        let nonce = [9; 8];
        let plain = pattern(1000, 31, 7, 256);
        let mut whole = plain.clone();
        ctr_apply(&SESSION, &nonce, 0, &mut whole).unwrap();
        assert_ne!(whole, plain);
        // Each 16-aligned piece encrypted at its own offset equals the one stream.
        for at in [16usize, 512, 992] {
            let mut piece = plain[at..].to_vec();
            ctr_apply(&SESSION, &nonce, at as u32, &mut piece).unwrap();
            assert_eq!(piece, whole[at..], "{at}");
        }
        // The counter block is the IV the cipher starts from.
        let mut first = plain[..16].to_vec();
        let iv = counter_block(&nonce, 0).unwrap();
        Aes256Ctr::new(&Array::from(SESSION), &Array::from(iv)).apply_keystream(&mut first);
        assert_eq!(first, whole[..16]);
        // And it is its own inverse.
        ctr_apply(&SESSION, &nonce, 0, &mut whole).unwrap();
        assert_eq!(whole, plain);
    }

    #[test]
    fn ctr_apply_refuses_bad_offsets() {
        let mut data = [0u8; 32];
        assert_eq!(
            ctr_apply(&SESSION, &[0; 8], 17, &mut data),
            Err(CtrError::Unaligned { offset: 17 })
        );
        assert_eq!(
            ctr_apply(&SESSION, &[0; 8], 0xFFFF_FFF0, &mut data),
            Err(CtrError::PastEnd {
                offset: 0xFFFF_FFF0,
                len: 32
            })
        );
        assert_eq!(data, [0; 32], "refused calls leave the data alone");
        assert_eq!(ctr_apply(&SESSION, &[0; 8], 0xFFFF_FFE0, &mut data), Ok(()));
        assert_ne!(data, [0; 32]);
    }

    /// NIST SP 800-38A F.2.5 CBC-AES256.Encrypt, first two blocks.
    #[test]
    fn session_key_wrap_is_aes256_cbc() {
        let key: [u8; 32] = hex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
            .try_into()
            .unwrap();
        let iv: [u8; 16] = hex("000102030405060708090a0b0c0d0e0f").try_into().unwrap();
        let plain: [u8; 32] =
            hex("6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51")
                .try_into()
                .unwrap();
        let wrapped = wrap_session_key(&key, &iv, &plain);
        assert_eq!(
            wrapped.to_vec(),
            hex("f58c4c04d6e5f1ba779eabfb5f7bfbd6 9cfc4e967edb808d679f777bc6702c7d")
        );
        assert_eq!(unwrap_session_key(&key, &iv, &wrapped), plain);
    }

    // --- RSA ------------------------------------------------------------------------

    #[test]
    fn keys_parse_and_name_the_nonce() {
        let k = key();
        let public = k.public_key();
        let der = public.to_spki_der();
        assert_eq!(der.len(), PUBLIC_KEY_DER_LEN);
        assert_eq!(to_hex(&public.sig_hash()), KEY_SIG_HASH);
        assert_eq!(public.nonce8().to_vec(), hex(&KEY_SIG_HASH[..16]));
        assert_eq!(PublicKey::from_spki_der(der).as_ref(), Ok(public));
        assert_eq!(PublicKey::from_pem(&public.to_pem()).as_ref(), Ok(public));
        // PKCS#1 "RSA PRIVATE KEY" (the SDK's form) and PKCS#8 DER give the same key.
        let inner: &rsa::PrivateKey = k.key.as_ref();
        let pkcs1 = rsa::pkcs1::EncodeRsaPrivateKey::to_pkcs1_pem(inner, LineEnding::LF).unwrap();
        assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        assert_eq!(SigningKey::from_pem(&pkcs1).unwrap().public_key(), public);
        let pkcs8 = rsa::pkcs8::EncodePrivateKey::to_pkcs8_der(inner).unwrap();
        assert_eq!(
            SigningKey::from_pkcs8_der(pkcs8.as_bytes())
                .unwrap()
                .public_key(),
            public
        );
        assert!(!alloc::format!("{k:?}").contains("PRIVATE"));
    }

    #[test]
    fn bad_keys_are_refused() {
        assert_eq!(
            PublicKey::from_pem(RSA1024_PEM),
            Err(RsaError::KeySize { bits: 1024 })
        );
        assert_eq!(PublicKey::from_pem("hello"), Err(RsaError::KeyMalformed));
        assert_eq!(
            PublicKey::from_spki_der(&[0x30, 0]),
            Err(RsaError::KeyMalformed)
        );
        assert_eq!(
            SigningKey::from_pem(OTHER_PEM).err(),
            Some(RsaError::KeyMalformed)
        );
        assert_eq!(
            SigningKey::from_pkcs8_der(b"junk").err(),
            Some(RsaError::KeyMalformed)
        );
        // A P-256 key is not RSA.
        let p256 = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEF6cYmIU2VC0Cnj54R18JR7uELhnb
/YmhahNhtQmgh8QmOr6R1ltQoSJAOiQ7/UzWOhFt2C2wB1LqelCRuauBIg==
-----END PUBLIC KEY-----";
        assert_eq!(PublicKey::from_pem(p256), Err(RsaError::KeyMalformed));
    }

    /// PKCS#1 v1.5 is deterministic: pinned against Python `cryptography` (OpenSSL) signing
    /// `b"abc"` with the same key.
    #[test]
    fn rsa_signature_matches_openssl() {
        let sig = key().sign(b"abc").unwrap();
        assert_eq!(
            to_hex(&sha256(&sig)),
            "84c944ac98a6e632bbf38e71f894ccdf7e20522ac50f7384deb3d4f8f8c69547"
        );
        let public = key().public_key().clone();
        assert_eq!(public.verify(b"abc", &sig), Ok(()));
        assert_eq!(public.verify_digest(&sha256(b"abc"), &sig), Ok(()));
        assert_eq!(public.verify(b"abd", &sig), Err(RsaError::Mismatch));
        let mut bad = sig;
        bad[100] ^= 1;
        assert_eq!(public.verify(b"abc", &bad), Err(RsaError::Mismatch));
        // All-ones is above the modulus: refused, not reduced.
        assert_eq!(public.verify(b"abc", &[0xFF; 256]), Err(RsaError::Mismatch));
        let other = PublicKey::from_pem(OTHER_PEM).unwrap();
        assert_eq!(other.verify(b"abc", &sig), Err(RsaError::Mismatch));
    }

    // --- ctrl_packet.bin ------------------------------------------------------------

    fn tiny_ctrl() -> CtrlPacket {
        CtrlPacket {
            dfu_id: DfuId::CODE_MIX.0,
            hw_version: 51,
            sdk_version: 0x0102_0304,
            fw_version: 0x0A0B_0C0D,
            session_key: SESSION,
            blk_size: 512,
            images: vec![ImageEntry {
                sig: [0x5A; SIG_LEN],
                length: 0x0001_2340,
                flags: ImageFlags::COMPRESS.0 | ImageFlags::ENC.0,
                img_id: ImageId::HCPU.0,
            }],
        }
    }

    #[test]
    fn plain_ctrl_layout_for_one_image() {
        let plain = tiny_ctrl().to_plain().unwrap();
        // 50 + 263·1 bytes; the file adds 288 (hash + signature): 338 + 263·n in all.
        assert_eq!(plain.len(), 313);
        assert_eq!(tiny_ctrl().plain_len(), 313);
        assert_eq!(tiny_ctrl().packet_len(), 601);
        let fixed: [u8; 50] = [
            0x01, // dfu_ID
            0x33, 0x00, 0x00, 0x00, // HW_version 51
            0x04, 0x03, 0x02, 0x01, // SDK_version
            0x0D, 0x0C, 0x0B, 0x0A, // FW_version
            0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D,
            0x0E, 0x0F, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1B,
            0x1C, 0x1D, 0x1E, 0x1F, // session key
            0x0A, 0x01, // image_header_len 266 = 3 + 263
            0x00, 0x02, // blk_size 512
            0x01, // img_count
        ];
        assert_eq!(plain[..50], fixed);
        assert!(plain[50..306].iter().all(|&b| b == 0x5A), "sig");
        assert_eq!(
            plain[306..],
            [
                0x40, 0x23, 0x01, 0x00, // length
                0x11, 0x00, // flags 17
                0x00, // img_id
            ]
        );
        assert_eq!(CtrlPacket::parse_plain(&plain), Ok(tiny_ctrl()));
    }

    #[test]
    fn plain_ctrl_with_no_images_or_many() {
        let mut empty = tiny_ctrl();
        empty.images.clear();
        let plain = empty.to_plain().unwrap();
        assert_eq!(plain.len(), CTRL_FIXED_LEN);
        assert_eq!(plain[45..50], [0x03, 0x00, 0x00, 0x02, 0x00]);
        assert_eq!(CtrlPacket::parse_plain(&plain), Ok(empty));

        let mut full = tiny_ctrl();
        full.images = (0..MAX_IMAGES)
            .map(|i| ImageEntry {
                img_id: i as u8,
                ..tiny_ctrl().images[0].clone()
            })
            .collect();
        let plain = full.to_plain().unwrap();
        assert_eq!(plain.len(), 50 + 263 * 249);
        assert_eq!(le_u16(&plain, 45), Some(3 + 263 * 249));
        assert_eq!(CtrlPacket::parse_plain(&plain).as_ref(), Ok(&full));
        full.images.push(tiny_ctrl().images[0].clone());
        assert_eq!(
            full.to_plain(),
            Err(CtrlError::TooManyImages { count: 250 })
        );
    }

    #[test]
    fn malformed_plain_ctrl_is_refused() {
        let plain = tiny_ctrl().to_plain().unwrap();
        for cut in [0, 1, 49] {
            assert_eq!(
                CtrlPacket::parse_plain(&plain[..cut]),
                Err(CtrlError::TooShort { len: cut + 288 }),
                "{cut}"
            );
        }
        assert_eq!(
            CtrlPacket::parse_plain(&plain[..312]),
            Err(CtrlError::LengthMismatch {
                expected: 313,
                found: 312
            })
        );
        let mut long = plain.clone();
        long.push(0);
        assert_eq!(
            CtrlPacket::parse_plain(&long),
            Err(CtrlError::LengthMismatch {
                expected: 313,
                found: 314
            })
        );
        let mut count = plain.clone();
        count[49] = 2;
        assert_eq!(
            CtrlPacket::parse_plain(&count),
            Err(CtrlError::LengthMismatch {
                expected: 576,
                found: 313
            })
        );
        let mut header = plain.clone();
        header[45] = 0x0B;
        assert_eq!(
            CtrlPacket::parse_plain(&header),
            Err(CtrlError::HeaderLenMismatch {
                expected: 266,
                found: 267
            })
        );
    }

    #[test]
    fn ctrl_packet_builds_and_opens() {
        let k = key();
        let ctrl = tiny_ctrl();
        let bytes = ctrl.build(&ROOT, &k, &nonce()).unwrap();
        assert_eq!(bytes.len(), 601);
        let plain = ctrl.to_plain().unwrap();
        assert_eq!(bytes[..32], sha256(&plain));
        let mut body = bytes[32..345].to_vec();
        ctr_apply(&ROOT, &nonce(), 0, &mut body).unwrap();
        assert_eq!(body, plain, "CTR from offset 0 with nonce8");
        let sig: [u8; 256] = bytes[345..].try_into().unwrap();
        assert_eq!(k.public_key().verify(&plain, &sig), Ok(()));
        assert_eq!(
            CtrlPacket::open(&bytes, &ROOT, k.public_key(), &nonce()),
            Ok(ctrl)
        );
    }

    #[test]
    fn ctrl_packet_errors_in_device_order() {
        let k = key();
        let public = k.public_key();
        let bytes = tiny_ctrl().build(&ROOT, &k, &nonce()).unwrap();
        let open = |b: &[u8]| CtrlPacket::open(b, &ROOT, public, &nonce());

        // The first 8 hash bytes are checked…
        for at in [0, 7] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            assert_eq!(open(&bad), Err(CtrlError::HashMismatch), "{at}");
        }
        // …and only those, as on the device.
        let mut loose = bytes.clone();
        loose[8] ^= 1;
        loose[31] ^= 0xFF;
        assert_eq!(open(&loose), Ok(tiny_ctrl()));

        // Any ciphertext change shows in the hash before the signature is looked at.
        for at in [32, 100, 344] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x80;
            assert_eq!(open(&bad), Err(CtrlError::HashMismatch), "{at}");
        }
        // Wrong root key or nonce: garbage plain text, hash mismatch.
        let mut other_root = ROOT;
        other_root[0] ^= 1;
        assert_eq!(
            CtrlPacket::open(&bytes, &other_root, public, &nonce()),
            Err(CtrlError::HashMismatch)
        );
        assert_eq!(
            CtrlPacket::open(&bytes, &ROOT, public, &[0; 8]),
            Err(CtrlError::HashMismatch)
        );
        // A good hash with a bad signature, or another key: error 9.
        for at in [345, 500, 600] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            assert_eq!(open(&bad), Err(CtrlError::SignatureInvalid), "{at}");
        }
        let other = PublicKey::from_pem(OTHER_PEM).unwrap();
        assert_eq!(
            CtrlPacket::open(&bytes, &ROOT, &other, &nonce()),
            Err(CtrlError::SignatureInvalid)
        );
        // Truncation: too short outright, or the signature moves into the body.
        assert_eq!(open(&bytes[..337]), Err(CtrlError::TooShort { len: 337 }));
        assert_eq!(open(&[]), Err(CtrlError::TooShort { len: 0 }));
        assert_eq!(open(&bytes[..600]), Err(CtrlError::HashMismatch));

        assert_eq!(CtrlError::HashMismatch.device_code(), 1);
        assert_eq!(CtrlError::TooShort { len: 0 }.device_code(), 1);
        assert_eq!(CtrlError::SignatureInvalid.device_code(), 9);
    }

    #[test]
    fn layout_is_checked_only_after_the_signature() {
        // Signed content whose image_header_len is wrong: the device's checks pass, the
        // layout check refuses it.
        let k = key();
        let mut plain = tiny_ctrl().to_plain().unwrap();
        plain[45] = 0;
        let hash = sha256(&plain);
        let sig = k.sign(&plain).unwrap();
        let mut body = plain.clone();
        ctr_apply(&ROOT, &nonce(), 0, &mut body).unwrap();
        let bytes = [&hash[..], &body, &sig].concat();
        assert_eq!(
            CtrlPacket::open(&bytes, &ROOT, k.public_key(), &nonce()),
            Err(CtrlError::HeaderLenMismatch {
                expected: 266,
                found: 0x100
            })
        );
    }

    #[test]
    fn ctrl_debug_hides_the_session_key() {
        let text = alloc::format!("{:?}", tiny_ctrl());
        assert!(text.contains("<redacted>"), "{text}");
        assert!(!text.contains("31"), "{text}");
    }

    // --- records and transfer files -------------------------------------------------

    #[test]
    fn record_layout() {
        let mut bytes = Vec::new();
        bytes.extend((0u8..32).map(|i| 0xA0 ^ i));
        bytes.extend([0x00, 0x02, 0x00, 0x00]); // offset 512
        bytes.extend([0xDE, 0xAD, 0xBE]);
        let record = Record::parse(&bytes).unwrap();
        assert_eq!(record.hash[..4], [0xA0, 0xA1, 0xA2, 0xA3]);
        assert_eq!(record.offset, 512);
        assert_eq!(record.block, [0xDE, 0xAD, 0xBE]);
        assert_eq!(record.to_bytes(), bytes);

        assert_eq!(
            Record::parse(&bytes[..36]),
            Err(TransferError::RecordTooShort { index: 0, len: 36 })
        );
        assert_eq!(
            Record::parse(&[]),
            Err(TransferError::RecordTooShort { index: 0, len: 0 })
        );
        let mut high = bytes.clone();
        high[32..36].copy_from_slice(&0xFFFF_FFFEu32.to_le_bytes());
        assert_eq!(
            Record::parse(&high),
            Err(TransferError::OffsetOverflow {
                offset: 0xFFFF_FFFE
            })
        );
        high[32..36].copy_from_slice(&0xFFFF_FFFDu32.to_le_bytes());
        assert!(Record::parse(&high).is_ok(), "ends exactly at 4 GiB");
    }

    #[test]
    fn transfer_layout_and_per_packet_checks() {
        let nonce = nonce();
        let payload = pattern(1040, 7, 3, 251);
        for enc in [None, Some((&SESSION, &nonce))] {
            let file = build_transfer(&payload, 512, enc).unwrap();
            assert_eq!(file.len(), 548 + 548 + 52);
            let mut stored = payload.clone();
            if enc.is_some() {
                ctr_apply(&SESSION, &nonce, 0, &mut stored).unwrap();
            }
            for (i, raw) in file.chunks(548).enumerate() {
                let at = i * 512;
                let end = (at + 512).min(payload.len());
                assert_eq!(
                    raw[..32],
                    sha256(&payload[at..end]),
                    "hash of the plain block"
                );
                assert_eq!(raw[32..36], (at as u32).to_le_bytes());
                assert_eq!(raw[36..], stored[at..end], "block as stored");
                let record = Record::parse(raw).unwrap();
                assert_eq!(record.verify(enc), Ok(()));
                assert_eq!(record.plain_block(enc).as_deref(), Ok(&payload[at..end]));
            }
            let transfer = TransferFile::new(ImageId::RES.0, file.clone()).unwrap();
            assert_eq!(transfer.img_id(), ImageId::RES.0);
            assert_eq!(transfer.img_length(), 1148);
            assert_eq!(transfer.total_pkt_num(), 3);
            assert_eq!(transfer.payload_len(), 1040);
            assert_eq!(transfer.stored_payload(), stored);
            assert_eq!(transfer.record(0), Some(&file[..548]));
            assert_eq!(transfer.record(2), Some(&file[1096..]));
            assert_eq!(transfer.record(3), None);
            assert_eq!(transfer.records().len(), 3);
        }
    }

    #[test]
    fn record_checks_catch_damage_and_wrong_keys() {
        let nonce = nonce();
        let payload = pattern(512, 3, 1, 256);
        let enc = Some((&SESSION, &nonce));
        let file = build_transfer(&payload, 512, enc).unwrap();
        let record = Record::parse(&file).unwrap();

        let mut damaged = file.clone();
        damaged[36 + 100] ^= 4;
        let bad = Record::parse(&damaged).unwrap();
        assert_eq!(
            bad.verify(enc),
            Err(TransferError::HashMismatch { offset: 0 })
        );
        assert_eq!(
            bad.plain_block(enc),
            Err(TransferError::HashMismatch { offset: 0 })
        );

        let other_session = [7u8; 32];
        assert_eq!(
            record.verify(Some((&other_session, &nonce))),
            Err(TransferError::HashMismatch { offset: 0 })
        );
        assert_eq!(
            record.verify(None),
            Err(TransferError::HashMismatch { offset: 0 })
        );

        // Only the first 8 hash bytes count.
        let mut loose = file.clone();
        loose[8] ^= 1;
        assert_eq!(Record::parse(&loose).unwrap().verify(enc), Ok(()));
        let mut strict = file.clone();
        strict[7] ^= 1;
        assert_eq!(
            Record::parse(&strict).unwrap().verify(enc),
            Err(TransferError::HashMismatch { offset: 0 })
        );

        // An ENC block at an offset no counter block starts at.
        let mut odd = file.clone();
        odd[32..36].copy_from_slice(&8u32.to_le_bytes());
        assert_eq!(
            Record::parse(&odd).unwrap().verify(enc),
            Err(TransferError::Cipher(CtrError::Unaligned { offset: 8 }))
        );
    }

    #[test]
    fn build_transfer_refuses_bad_input() {
        assert_eq!(
            build_transfer(&[0; 15], 512, None),
            Err(PackageError::UnalignedPayload { len: 15 })
        );
        assert_eq!(
            build_transfer(&[], 512, None),
            Err(PackageError::UnalignedPayload { len: 0 })
        );
        for blk_size in [0, 8, 500, 2064, u16::MAX] {
            assert_eq!(
                build_transfer(&[0; 16], blk_size, None),
                Err(PackageError::BlkSize { blk_size })
            );
        }
        assert!(build_transfer(&[0; 16], 16, None).is_ok());
        assert!(build_transfer(&[0; 16], MAX_BLK_SIZE, None).is_ok());
    }

    #[test]
    fn transfer_files_are_walked_and_checked() {
        let payload = pattern(4096, 5, 9, 253);
        let file256 = build_transfer(&payload, 256, None).unwrap();
        // Walked with the default 512, record 1 lands mid-record: its offset is wrong.
        let err = TransferFile::new(0, file256.clone()).unwrap_err();
        assert!(
            matches!(
                err,
                TransferError::OffsetMismatch {
                    index: 1,
                    expected: 512,
                    ..
                }
            ),
            "{err:?}"
        );
        let right = TransferFile::with_blk_size(0, file256.clone(), 256).unwrap();
        assert_eq!(right.total_pkt_num(), 16);
        assert_eq!(right.payload_len(), 4096);
        assert_eq!(TransferFile::detect(0, file256.clone()), Ok(right));
        let file512 = build_transfer(&payload, 512, None).unwrap();
        assert_eq!(TransferFile::detect(4, file512).unwrap().blk_size(), 512);
        let file16 = build_transfer(&payload[..64], 16, None).unwrap();
        assert_eq!(TransferFile::detect(4, file16).unwrap().blk_size(), 16);
        // One short record: any size holds it; 512 is kept.
        let one = build_transfer(&payload[..32], 512, None).unwrap();
        assert_eq!(TransferFile::detect(4, one).unwrap().blk_size(), 512);

        assert_eq!(TransferFile::new(0, Vec::new()), Err(TransferError::Empty));
        // A last record with a header and no block.
        let mut headless = build_transfer(&payload[..512], 512, None).unwrap();
        headless.extend_from_slice(&[0; 36]);
        assert_eq!(
            TransferFile::new(0, headless.clone()),
            Err(TransferError::RecordTooShort { index: 1, len: 36 })
        );
        // Detection reads it as one 584-byte record instead; the block's hash then fails
        // on the device, so the damage is still caught, one step later.
        let guessed = TransferFile::detect(0, headless).unwrap();
        assert_eq!((guessed.blk_size(), guessed.total_pkt_num()), (560, 1));
        let record = Record::parse(guessed.record(0).unwrap()).unwrap();
        assert_eq!(
            record.verify(None),
            Err(TransferError::HashMismatch { offset: 0 })
        );
        assert_eq!(
            TransferFile::detect(0, vec![0; 36]),
            Err(TransferError::RecordTooShort { index: 0, len: 36 })
        );
        assert_eq!(
            TransferFile::with_blk_size(0, vec![0; 100], 100),
            Err(TransferError::BlkSize { blk_size: 100 })
        );
        // 65536 records of 16-byte blocks: one too many for a u16 packet index.
        let many = vec![0u8; 65536 * 52];
        assert_eq!(
            TransferFile::with_blk_size(0, many, 16),
            Err(TransferError::TooManyPackets { count: 65536 })
        );
    }

    // --- compressed payloads ----------------------------------------------------------

    #[test]
    fn compressed_payload_layout_and_round_trip() {
        let image = pattern(25_001, 17, 3, 61);
        let packed = compress_payload(&image, DEFAULT_PKSIZE).unwrap();
        // total_len is the zero-padded size: 25_001 → 25_008.
        assert_eq!(
            packed[..8],
            [0xB0, 0x61, 0x00, 0x00, 0x00, 0x28, 0x00, 0x00]
        );
        let parsed = CompressedPayload::parse(&packed).unwrap();
        assert_eq!(parsed.total_len(), 25_008);
        assert_eq!(parsed.pksize(), 10_240);
        let chunks: Vec<_> = parsed.chunks().collect::<Result<_, _>>().unwrap();
        assert_eq!(chunks.len(), 3, "10240 + 10240 + 4528");
        assert!(
            chunks.iter().all(|c| c.first() == Some(&0x78)),
            "zlib streams"
        );
        assert_eq!(
            zlib::inflate(chunks[2], 10_240).unwrap().len(),
            25_008 - 2 * 10_240
        );

        let out = decompress_payload(&packed, 25_008).unwrap();
        assert_eq!(out[..25_001], image);
        assert_eq!(out[25_001..], [0; 7], "padded with zeros");

        // The 16-byte padding of the payload after the last chunk is accepted.
        let mut padded = packed.clone();
        pad16(&mut padded);
        assert!(padded.len().is_multiple_of(16) && padded.len() - packed.len() < 16);
        assert_eq!(decompress_payload(&padded, usize::MAX), Ok(out.clone()));
        let view = CompressedPayload::parse(&padded).unwrap();
        let mut iter = view.chunks();
        assert_eq!(iter.by_ref().count(), 3, "the padding is not a chunk");
        assert_eq!(iter.rest(), &padded[packed.len()..]);

        for (len, pksize) in [
            (1, 16),
            (16, 16),
            (10_240, 10_240),
            (10_241, 10_240),
            (999, 7),
        ] {
            let image = pattern(len, 13, 1, 256);
            let packed = compress_payload(&image, pksize).unwrap();
            let out = decompress_payload(&packed, len + 15).unwrap();
            assert_eq!(out.len(), len.next_multiple_of(16), "{len}/{pksize}");
            assert_eq!(out[..len], image, "{len}/{pksize}");
        }
        assert_eq!(compress_payload(&image, 0), Err(PayloadError::PkSizeZero));
    }

    /// `total_len | pksize | chunk_len | chunk` by hand.
    fn payload(total_len: u32, pksize: u32, chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&total_len.to_le_bytes());
        out.extend_from_slice(&pksize.to_le_bytes());
        for chunk in chunks {
            out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    #[test]
    fn zip_bombs_and_lies_are_refused() {
        let zeros = zlib::compress(&vec![0u8; 16 << 20], 9);
        assert!(zeros.len() < 32 * 1024);
        // An honest header stating 16 MiB: refused by the cap before inflating.
        let honest = payload(16 << 20, 16 << 20, &[&zeros]);
        assert_eq!(
            decompress_payload(&honest, 1 << 20),
            Err(PayloadError::OverCap {
                total_len: 16 << 20,
                cap: 1 << 20
            })
        );
        // A header that lies small: the chunk is cut off at its slice size.
        let liar = payload(1 << 20, 10_240, &[&zeros]);
        assert_eq!(
            decompress_payload(&liar, 1 << 20),
            Err(PayloadError::ChunkTooLarge {
                index: 0,
                pksize: 10_240
            })
        );
        // …or at what is left of total_len.
        let short_total = payload(4096, 16 << 20, &[&zeros]);
        assert!(matches!(
            decompress_payload(&short_total, usize::MAX),
            Err(PayloadError::TotalLenMismatch { expected: 4096, .. })
        ));
    }

    #[test]
    fn malformed_payloads_are_refused() {
        let a = zlib::compress(&[1u8; 32], 9);
        let b = zlib::compress(&[2u8; 16], 9);
        assert_eq!(
            decompress_payload(&payload(48, 32, &[&a, &b]), 48)
                .unwrap()
                .len(),
            48
        );

        assert_eq!(
            decompress_payload(&[0; 7], 100),
            Err(PayloadError::Truncated)
        );
        assert_eq!(
            decompress_payload(&payload(48, 0, &[&a, &b]), 100),
            Err(PayloadError::PkSizeZero)
        );
        // Chunks short of total_len.
        assert_eq!(
            decompress_payload(&payload(64, 32, &[&a, &b]), 100),
            Err(PayloadError::TotalLenMismatch {
                expected: 64,
                found: 48
            })
        );
        // A chunk length past the end.
        let mut cut = payload(48, 32, &[&a, &b]);
        cut.truncate(cut.len() - 1);
        assert_eq!(decompress_payload(&cut, 100), Err(PayloadError::Truncated));
        // A damaged chunk.
        let mut bad = a.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(
            decompress_payload(&payload(48, 32, &[&bad, &b]), 100),
            Err(PayloadError::Inflate {
                index: 0,
                error: InflateError::Corrupt
            })
        );
        // An empty chunk.
        let empty = zlib::compress(&[], 9);
        assert!(matches!(
            decompress_payload(&payload(48, 32, &[&empty, &a, &b]), 100),
            Err(PayloadError::TotalLenMismatch { found: 0, .. })
        ));
        // Trailing bytes: non-zero, or 16 zeros (more than padding).
        let mut trailing = payload(48, 32, &[&a, &b]);
        trailing.push(1);
        assert_eq!(
            decompress_payload(&trailing, 100),
            Err(PayloadError::TrailingBytes)
        );
        let mut extra_chunk = payload(48, 32, &[&a, &b, &b]);
        assert_eq!(
            decompress_payload(&extra_chunk, 100),
            Err(PayloadError::TrailingBytes)
        );
        extra_chunk.truncate(payload(48, 32, &[&a, &b]).len());
        extra_chunk.extend([0; 16]);
        assert_eq!(
            decompress_payload(&extra_chunk, 100),
            Err(PayloadError::TrailingBytes)
        );
        extra_chunk.truncate(extra_chunk.len() - 1);
        assert_eq!(
            decompress_payload(&extra_chunk, 100).map(|v| v.len()),
            Ok(48)
        );
    }

    // --- packages ---------------------------------------------------------------------

    fn params() -> PackageParams {
        PackageParams {
            dfu_id: DfuId::CODE_MIX.0,
            hw_version: 51,
            sdk_version: 2_003_000,
            fw_version: 1_001_001,
            blk_size: DEFAULT_BLK_SIZE,
            pksize: DEFAULT_PKSIZE,
            session_key: SESSION,
        }
    }

    #[test]
    fn package_round_trip() {
        let k = key();
        let hcpu = pattern(30_001, 7, 1, 23);
        let res = pattern(5_000, 131, 7, 256);
        let font = pattern(1_234, 3, 0, 200);
        let images = [
            PackageImage {
                img_id: ImageId::FONT.0,
                flags: 0,
                image: &font,
            },
            PackageImage {
                img_id: ImageId::HCPU.0,
                flags: ImageFlags::COMPRESS.0 | ImageFlags::ENC.0,
                image: &hcpu,
            },
            PackageImage {
                img_id: ImageId::RES.0,
                flags: ImageFlags::ENC.0,
                image: &res,
            },
        ];
        let package = build_package(&params(), &images, &ROOT, &k).unwrap();
        let public = k.public_key();
        let nonce = public.nonce8();

        let ctrl = CtrlPacket::open(&package.ctrl_packet, &ROOT, public, &nonce).unwrap();
        assert_eq!(ctrl, package.ctrl);
        assert_eq!(package.ctrl_packet.len(), 338 + 263 * 3);
        let ids: Vec<_> = ctrl.images.iter().map(|e| e.img_id).collect();
        assert_eq!(ids, [0, 3, 4], "sorted by img_id");
        let t_ids: Vec<_> = package.transfers.iter().map(TransferFile::img_id).collect();
        assert_eq!(t_ids, ids);

        for (entry, transfer) in ctrl.images.iter().zip(&package.transfers) {
            let plain_image = images
                .iter()
                .find(|i| i.img_id == entry.img_id)
                .unwrap()
                .image;
            // The remote's view, from the bytes and the id alone.
            let remote = TransferFile::new(entry.img_id, transfer.bytes().to_vec()).unwrap();
            assert_eq!(&remote, transfer);
            assert_eq!(remote.payload_len(), entry.length);
            assert_eq!(entry.length % 16, 0);
            assert_eq!(
                remote.total_pkt_num(),
                entry.length.div_ceil(512),
                "{}",
                entry.img_id
            );
            assert_eq!(
                remote.img_length(),
                entry.length + 36 * remote.total_pkt_num()
            );
            // The device's view: every packet, then the image signature, then install.
            let enc = entry.is_encrypted().then_some((&ctrl.session_key, &nonce));
            for raw in remote.records() {
                assert_eq!(Record::parse(raw).unwrap().verify(enc), Ok(()));
            }
            let stored = remote.stored_payload();
            assert_eq!(entry.verify_payload(public, &stored), Ok(()));
            let mut payload = stored.clone();
            if entry.is_encrypted() {
                ctr_apply(&ctrl.session_key, &nonce, 0, &mut payload).unwrap();
                assert_ne!(payload, stored);
            }
            let installed = if entry.is_compressed() {
                decompress_payload(&payload, 1 << 20).unwrap()
            } else {
                payload
            };
            assert_eq!(installed.len(), plain_image.len().next_multiple_of(16));
            assert_eq!(&installed[..plain_image.len()], plain_image);
            assert!(installed[plain_image.len()..].iter().all(|&b| b == 0));
        }
        assert!(ctrl.image(ImageId::HCPU.0).unwrap().is_compressed());
        assert!(!ctrl.image(ImageId::FONT.0).unwrap().is_encrypted());
        assert_eq!(ctrl.image(ImageId::LCPU.0), None);
    }

    /// The same package as an independent Python (`cryptography`) re-implementation of
    /// GEN37's packing makes, byte for byte (uncompressed images: zlib output may differ
    /// between compressors, what it inflates to does not).
    #[test]
    fn package_matches_python_reference() {
        let a = pattern(1000, 7, 0, 251);
        let b = pattern(700, 13, 5, 256);
        let images = [
            PackageImage {
                img_id: 0,
                flags: ImageFlags::ENC.0,
                image: &a,
            },
            PackageImage {
                img_id: 3,
                flags: 0,
                image: &b,
            },
        ];
        let package = build_package(&params(), &images, &ROOT, &key()).unwrap();
        assert_eq!(package.ctrl_packet.len(), 864);
        assert_eq!(
            to_hex(&sha256(&package.ctrl_packet)),
            "08b332e5e3678db846c17520e5e9876becab2a8afa65c491ba52dfb93f99cf3a"
        );
        assert_eq!(package.transfers[0].bytes().len(), 1080);
        assert_eq!(
            to_hex(&sha256(package.transfers[0].bytes())),
            "6036a852c9e04e4402b94e130704d2814cc0477b7162fc7309d0d1c14d986edc"
        );
        assert_eq!(
            to_hex(&sha256(package.transfers[1].bytes())),
            "583e8976666b2ef305857dcba82583ebd7a87028bcd269ae4ae6de97d4f56f95"
        );
    }

    #[test]
    fn package_refuses_bad_input() {
        let k = key();
        let img = [1u8; 40];
        let one = |img_id, flags| PackageImage {
            img_id,
            flags,
            image: &img,
        };
        let build = |images: &[PackageImage<'_>]| build_package(&params(), images, &ROOT, &k);
        assert_eq!(build(&[]), Err(PackageError::NoImages));
        assert_eq!(
            build(&[one(3, 0), one(0, 0), one(3, 1)]),
            Err(PackageError::DuplicateImage { img_id: 3 })
        );
        assert_eq!(
            build(&[one(0, 8)]),
            Err(PackageError::UnknownFlags {
                img_id: 0,
                flags: 8
            })
        );
        assert_eq!(
            build(&[PackageImage {
                img_id: 4,
                flags: 0,
                image: &[]
            }]),
            Err(PackageError::EmptyImage { img_id: 4 })
        );
        let many: Vec<_> = (0..250).map(|i| one(i as u8, 0)).collect();
        assert_eq!(
            build(&many),
            Err(PackageError::TooManyImages { count: 250 })
        );
        let bad_blk = PackageParams {
            blk_size: 100,
            ..params()
        };
        assert_eq!(
            build_package(&bad_blk, &[one(0, 0)], &ROOT, &k),
            Err(PackageError::BlkSize { blk_size: 100 })
        );
        let bad_pk = PackageParams {
            pksize: 0,
            ..params()
        };
        assert_eq!(
            build_package(&bad_pk, &[one(0, ImageFlags::COMPRESS.0)], &ROOT, &k),
            Err(PackageError::Payload(PayloadError::PkSizeZero))
        );
        // AUTO and SINGLE are carried through.
        let ok = build(&[one(0, ImageFlags::AUTO.0 | ImageFlags::SINGLE.0)]).unwrap();
        assert_eq!(ok.ctrl.images[0].flags, 6);
        assert!(!alloc::format!("{:?}", params()).contains("31"));
    }

    #[test]
    fn errors_have_codes_and_messages() {
        assert_eq!(CtrlError::HashMismatch.code(), "dfu-ctrl-hash-mismatch");
        assert_eq!(
            CtrlError::SignatureInvalid.code(),
            "dfu-ctrl-signature-invalid"
        );
        assert!(CtrlError::TooShort { len: 3 }
            .to_string()
            .contains("3 bytes"));
        assert_eq!(
            TransferError::HashMismatch { offset: 512 }.code(),
            "dfu-record-hash-mismatch"
        );
        assert!(TransferError::OffsetMismatch {
            index: 1,
            expected: 512,
            found: 256
        }
        .to_string()
        .contains("another block size"));
        assert_eq!(
            TransferError::Cipher(CtrError::Unaligned { offset: 1 }).code(),
            "dfu-ctr-unaligned"
        );
        assert_eq!(
            PayloadError::OverCap {
                total_len: 9,
                cap: 1
            }
            .code(),
            "dfu-payload-over-cap"
        );
        assert!(PayloadError::ChunkTooLarge {
            index: 2,
            pksize: 10
        }
        .to_string()
        .contains("chunk 2"));
        assert_eq!(
            PackageError::Ctrl(CtrlError::HashMismatch).code(),
            "dfu-ctrl-hash-mismatch"
        );
        assert_eq!(RsaError::KeySize { bits: 1024 }.code(), "dfu-rsa-key-size");
        assert!(RsaError::KeySize { bits: 1024 }
            .to_string()
            .contains("1024-bit"));
        assert!(CtrError::PastEnd { offset: 0, len: 1 }
            .to_string()
            .contains("4 GiB"));
    }
}
