//! Reproducible generator of otaweb's test fixtures: firmware images, zlib packages, broken
//! variants, a SiFli DFU package and its bundle, public test keys, signatures, manifests and
//! `SHA256SUMS`.
//!
//! Contract: [`generate`] is a pure function of this crate's source. It reads no clock, no
//! environment, no network and no OS randomness; the only pseudo-randomness is SplitMix64 with
//! fixed seeds, and ECDSA nonces are RFC 6979 (derived from key and digest). So every run, on
//! every host, yields byte-identical files, and the committed copies in `files/` can be checked
//! against it (the `reproducible` integration test does exactly that).
//!
//! The P-256 signing keys are derived from public labels: anyone can recompute them. The SiFli
//! DFU package (`dfu/`) is signed with an RSA-2048 key that was generated once with
//! `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048` and is committed as
//! `src/dfu-test-signing-key.pem` (an input, read at compile time): RSA key generation from a
//! seeded RNG would tie the fixtures to one `rsa` crate version's prime search, and PKCS#1
//! v1.5 signatures are deterministic, so a fixed key is all reproducibility needs. The DFU
//! root key, UID and session key are SHA-256 of public labels. All of these keys exist to test
//! signature and package handling and must never sign or protect real firmware.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use base64ct::Encoding as _;
use md5::{Digest as _, Md5};
use otaweb::image::digest::{sha256, to_hex};
use otaweb::image::sifli::{
    self, DfuId, ImageFlags, ImageId, PackageImage, PackageParams, TransferFile,
};
use p256::ecdsa::signature::hazmat::PrehashSigner as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use p256::{PublicKey, SecretKey};

/// Label whose SHA-256 is the test signing key's private scalar (public, so test-only).
pub const TEST_KEY_LABEL: &str = "otaweb test signing key v1";

/// Label whose SHA-256 is the unrelated "wrong key" used for negative signature tests.
pub const OTHER_KEY_LABEL: &str = "otaweb unrelated test key v1";

/// The SiFli DFU test signing key (RSA-2048, PKCS#8 PEM), generated once and committed.
pub const DFU_SIGNING_KEY_PEM: &str = include_str!("dfu-test-signing-key.pem");

/// An unrelated RSA-2048 public key (SPKI PEM) for "signed by the wrong key" DFU tests.
pub const DFU_OTHER_KEY_PEM: &str = include_str!("dfu-other-key.pub.pem");

/// Label whose SHA-256 is the DFU test root key (the efuse ROOT key of a test device).
pub const DFU_ROOT_KEY_LABEL: &str = "otaweb dfu test root key v1";

/// Label whose SHA-256, first 16 bytes, is the DFU test device UID (the CBC IV of the stored
/// session key).
pub const DFU_UID_LABEL: &str = "otaweb dfu test uid v1";

/// Label whose SHA-256 is the DFU package's session key (the SDK draws a random one; ours is
/// fixed so the package is reproducible).
pub const DFU_SESSION_KEY_LABEL: &str = "otaweb dfu test session key v1";

/// Record (0-based) of `dfu/hcpu.tampered.transfer.bin` whose block has one bit flipped.
pub const DFU_TAMPERED_RECORD: usize = 5;

/// Base URL written into `microchip-ota.json` (the port Microchip's docs serve on).
pub const MICROCHIP_BASE_URL: &str = "http://127.0.0.1:8000/";

/// Length of the header at the start of every generated image.
pub const HEADER_LEN: usize = 256;

/// Magic bytes at offset 0 of every generated image.
pub const MAGIC: [u8; 4] = *b"OTAW";

/// Every fixture as `(relative path with '/' separators, bytes)`, sorted by path.
///
/// Includes `SHA256SUMS`, which covers every other entry.
#[must_use]
pub fn generate() -> Vec<(String, Vec<u8>)> {
    let mut files = Files::default();

    let v1 = firmware(1, 48 * 1024);
    let v2 = firmware(2, 96 * 1024);
    let v3 = firmware(3, 64 * 1024);
    let v2_zlib = miniz_oxide::deflate::compress_to_vec_zlib(&v2, 9);

    let key = Key::from_label(TEST_KEY_LABEL);
    let other = Key::from_label(OTHER_KEY_LABEL);
    let sig_v1 = key.sign_b64(&v1);
    let sig_v2 = key.sign_b64(&v2);
    let sig_v3 = key.sign_b64(&v3);

    // Broken variants: each one defeats exactly one check (digest, length, zlib stream).
    let mut v2_corrupt = v2.clone();
    v2_corrupt[v2.len() / 2] ^= 0x01;
    let v2_truncated = v2[..v2.len() - 1000].to_vec();
    let mut v2_oversized = v2.clone();
    v2_oversized.resize(v2.len() + 4096, 0xFF);
    // zlib = 2-byte header, deflate data, 4-byte Adler-32; flip a byte inside the deflate data.
    let mut zlib_corrupt = v2_zlib.clone();
    zlib_corrupt[2 + (v2_zlib.len() - 6) / 2] ^= 0xFF;
    let zlib_truncated = v2_zlib[..v2_zlib.len() / 2].to_vec();
    // 16 MiB of zeros deflates to about 16 KiB: a decompression bomb for size-cap tests.
    let bomb = miniz_oxide::deflate::compress_to_vec_zlib(&vec![0u8; 16 << 20], 9);

    let entries = [
        Entry::plain("gadget", "1", "app-v1.bin", &v1, &sig_v1),
        Entry::plain("gadget", "2", "app-v2.bin", &v2, &sig_v2),
        Entry::plain("enos", "1.3.0", "app-v3.bin", &v3, &sig_v3),
        Entry {
            compression: Some("zlib"),
            ..Entry::plain("dfu", "2.0.0", "app-v2.bin.zlib", &v2, &sig_v2)
        },
    ];
    files.add("manifest.json", manifest(&entries, Signatures::Own));
    files.add(
        "manifest-unsigned.json",
        manifest(&entries, Signatures::None),
    );
    files.add(
        "manifest-bad-signature.json",
        manifest(
            &entries,
            Signatures::Wrong {
                url: "app-v2.bin",
                signature: &sig_v1,
            },
        ),
    );
    files.add("microchip-ota.json", microchip_manifest(&v2, &sig_v2));

    // A DFU device is a product of its own, so its installable entry (the bundle) has a
    // manifest of its own; manifest.json's "dfu" entry stays the compressed-entry fixture.
    let dfu = dfu_package(&mut files);
    let sig_dfu = key.sign_b64(&dfu.bundle);
    let dfu_entries = [Entry::plain(
        "dfu",
        &dfu.version,
        "dfu/package.tar",
        &dfu.bundle,
        &sig_dfu,
    )];
    files.add("manifest-dfu.json", manifest(&dfu_entries, Signatures::Own));
    files.add(
        "manifest-dfu-bad-signature.json",
        manifest(
            &dfu_entries,
            Signatures::Wrong {
                url: "dfu/package.tar",
                signature: &sig_v1,
            },
        ),
    );
    files.add("app-v2.bin.sig", format!("{sig_v2}\n").into_bytes());

    files.add("keys/README.txt", KEYS_README.as_bytes().to_vec());
    files.add("keys/test-signing-key.pem", key.private_pem().into_bytes());
    files.add(
        "keys/test-signing-key.pub.pem",
        key.public_pem().into_bytes(),
    );
    files.add("keys/test-signing-key.pub.der", key.public_der());
    files.add("keys/other-key.pub.pem", other.public_pem().into_bytes());

    files.add("app-v1.bin", v1);
    files.add("app-v2.bin", v2);
    files.add("app-v3.bin", v3);
    files.add("app-v2.bin.zlib", v2_zlib);
    files.add("app-v2.corrupt.bin", v2_corrupt);
    files.add("app-v2.truncated.bin", v2_truncated);
    files.add("app-v2.oversized.bin", v2_oversized);
    files.add("app-v2.corrupt.zlib", zlib_corrupt);
    files.add("app-v2.truncated.zlib", zlib_truncated);
    files.add("bomb.zlib", bomb);

    files.finish()
}

const KEYS_README: &str = "\
These keys are PUBLIC TEST KEYS for otaweb's test suite.

The P-256 private scalars are SHA-256 of fixed labels written in the source of the
otaweb-fixtures crate, so anyone can recompute them. The RSA-2048 DFU key is
published here in full. The DFU root key and UID are SHA-256 of public labels.
They must NEVER sign or protect real firmware, and no device should ever trust them.

test-signing-key.pem       PKCS#8 private key (P-256) that signs every fixture
test-signing-key.pub.pem   its public key, SubjectPublicKeyInfo PEM
test-signing-key.pub.der   the same public key, SubjectPublicKeyInfo DER
other-key.pub.pem          an unrelated public key, for \"signed by the wrong key\" tests

dfu-test-signing-key.pem      PKCS#8 private key (RSA-2048) that signs the SiFli DFU package
dfu-test-signing-key.pub.pem  its public key, SubjectPublicKeyInfo PEM
dfu-test-signing-key.pub.der  the same, DER (294 bytes): the device's sig_pub_key
dfu-test-sig-hash.bin         SHA-256 of the DER (efuse SIG_HASH); bytes 0..8 are the
                              AES-CTR nonce
dfu-test-root-key.bin         AES-256 root key (efuse ROOT) that encrypts ctrl_packet.bin
dfu-test-uid.bin              16-byte device UID (efuse UID)
dfu-other-key.pub.pem         an unrelated RSA-2048 public key
";

/// What a manifest entry needs of the DFU package: its bundle and its firmware version.
struct DfuBundle {
    /// `dfu/package.tar`.
    bundle: Vec<u8>,
    /// FW_version as a manifest version: 1001001 is `"1.1.1"`.
    version: String,
}

/// The SiFli DFU package (`dfu/`), its keys (`keys/dfu-*`) and broken variants.
///
/// Images: HCPU firmware (id 0, COMPRESS|ENC = 17), resources (id 3, ENC), fonts (id 4,
/// plain), sizes chosen so two of them need padding to 16. Versions follow the SDK docs'
/// example (`--hw_ver=51`, fw 1001001); SDK_version 2003000 reads as 2.3.0 in the
/// `x·10⁶+y·10³+z` encoding.
fn dfu_package(files: &mut Files) -> DfuBundle {
    let key = sifli::SigningKey::from_pem(DFU_SIGNING_KEY_PEM).expect("committed DFU key parses");
    let public = key.public_key();
    let root_key = sha256(DFU_ROOT_KEY_LABEL.as_bytes());
    let uid: [u8; 16] = sha256(DFU_UID_LABEL.as_bytes())[..16]
        .try_into()
        .expect("16 bytes");
    let params = PackageParams {
        dfu_id: DfuId::CODE_MIX.0,
        hw_version: 51,
        sdk_version: 2_003_000,
        fw_version: 1_001_001,
        blk_size: sifli::DEFAULT_BLK_SIZE,
        pksize: sifli::DEFAULT_PKSIZE,
        session_key: sha256(DFU_SESSION_KEY_LABEL.as_bytes()),
    };

    let hcpu = firmware(4, 40_004);
    let res = asset(0x5E5_0003, 20_480);
    let font = asset(0xF0_0004, 12_290);
    let images = [
        (
            "hcpu",
            ImageId::HCPU.0,
            ImageFlags::COMPRESS.0 | ImageFlags::ENC.0,
            &hcpu,
        ),
        ("res", ImageId::RES.0, ImageFlags::ENC.0, &res),
        ("font", ImageId::FONT.0, 0, &font),
    ];
    let package = sifli::build_package(
        &params,
        &images
            .iter()
            .map(|&(_, img_id, flags, image)| PackageImage {
                img_id,
                flags,
                image,
            })
            .collect::<Vec<_>>(),
        &root_key,
        &key,
    )
    .expect("the DFU package builds");

    // Broken variants: each defeats exactly one device check.
    let ctrl = &package.ctrl_packet;
    let mut ctrl_tampered = ctrl.clone();
    ctrl_tampered[sifli::HASH_LEN + 20] ^= 0x01; // ciphertext: hash mismatch, error 1
    let mut ctrl_bad_sig = ctrl.clone();
    let sig_at = ctrl.len() - sifli::SIG_LEN;
    ctrl_bad_sig[sig_at + 100] ^= 0x01; // signature: error 9
    let hcpu_transfer = transfer(&package.transfers, ImageId::HCPU.0);
    let mut hcpu_tampered = hcpu_transfer.bytes().to_vec();
    let record_len = sifli::RECORD_HEADER_LEN + usize::from(params.blk_size);
    hcpu_tampered[DFU_TAMPERED_RECORD * record_len + sifli::RECORD_HEADER_LEN + 100] ^= 0x01;

    let mut entries = Vec::new();
    let mut transfers = Vec::new();
    for &(name, img_id, flags, image) in &images {
        let t = transfer(&package.transfers, img_id);
        let entry = package.ctrl.image(img_id).expect("entry per image");
        entries.push(Json::Obj(vec![
            ("img_id", Json::Num(u64::from(img_id))),
            ("flags", Json::Num(u64::from(flags))),
            ("image", Json::Str(format!("{name}.bin"))),
            ("image_size", Json::Num(image.len() as u64)),
            ("transfer", Json::Str(format!("{name}.transfer.bin"))),
            ("img_length", Json::Num(u64::from(t.img_length()))),
            ("total_pkt_num", Json::Num(u64::from(t.total_pkt_num()))),
            ("length", Json::Num(u64::from(entry.length))),
        ]));
        files.add(&format!("dfu/{name}.bin"), image.clone());
        files.add(&format!("dfu/{name}.transfer.bin"), t.bytes().to_vec());
        transfers.push((format!("{name}.transfer.bin"), t.bytes()));
    }
    let description = Json::Obj(vec![
        ("ctrl_packet", Json::str("ctrl_packet.bin")),
        ("dfu_id", Json::Num(u64::from(params.dfu_id))),
        ("hw_version", Json::Num(u64::from(params.hw_version))),
        ("sdk_version", Json::Num(u64::from(params.sdk_version))),
        ("fw_version", Json::Num(u64::from(params.fw_version))),
        ("blk_size", Json::Num(u64::from(params.blk_size))),
        ("pksize", Json::Num(u64::from(params.pksize))),
        ("images", Json::Arr(entries)),
    ]);
    let description = description.to_pretty();

    // The single-file form (EnOS delivers one file per task), in package order.
    let bundle = |hcpu: &[u8]| {
        let mut members: Vec<(&str, &[u8])> = vec![
            ("package.json", &description),
            ("ctrl_packet.bin", &package.ctrl_packet),
        ];
        for (name, bytes) in &transfers {
            let bytes = if name == "hcpu.transfer.bin" {
                hcpu
            } else {
                bytes
            };
            members.push((name, bytes));
        }
        ustar(&members)
    };
    let package_tar = bundle(hcpu_transfer.bytes());
    files.add("dfu/package.tar", package_tar.clone());
    files.add("dfu/package-tampered.tar", bundle(&hcpu_tampered));

    files.add("dfu/package.json", description);
    files.add("dfu/ctrl_packet.bin", package.ctrl_packet.clone());
    files.add("dfu/ctrl_packet.tampered.bin", ctrl_tampered);
    files.add("dfu/ctrl_packet.bad-signature.bin", ctrl_bad_sig);
    files.add("dfu/hcpu.tampered.transfer.bin", hcpu_tampered);

    files.add(
        "keys/dfu-test-signing-key.pem",
        DFU_SIGNING_KEY_PEM.as_bytes().to_vec(),
    );
    files.add(
        "keys/dfu-test-signing-key.pub.pem",
        public.to_pem().into_bytes(),
    );
    files.add(
        "keys/dfu-test-signing-key.pub.der",
        public.to_spki_der().to_vec(),
    );
    files.add("keys/dfu-test-sig-hash.bin", public.sig_hash().to_vec());
    files.add("keys/dfu-test-root-key.bin", root_key.to_vec());
    files.add("keys/dfu-test-uid.bin", uid.to_vec());
    files.add(
        "keys/dfu-other-key.pub.pem",
        DFU_OTHER_KEY_PEM.as_bytes().to_vec(),
    );

    let fw = params.fw_version;
    DfuBundle {
        bundle: package_tar,
        version: format!("{}.{}.{}", fw / 1_000_000, fw / 1000 % 1000, fw % 1000),
    }
}

/// A POSIX ustar archive of `(name, bytes)` regular files, byte for byte what Python's
/// `tarfile` writes in USTAR_FORMAT for mode 0644, uid/gid 0, no user or group names and
/// mtime 0: headers, data padded to 512-byte blocks, two zero blocks, and zeros up to a
/// whole 10240-byte record (tar's blocking factor 20). Written here rather than with a tar
/// crate so that, like SplitMix64, the bytes are fully specified by this source.
fn ustar(members: &[(&str, &[u8])]) -> Vec<u8> {
    const BLOCK: usize = 512;
    const RECORD: usize = 20 * BLOCK;
    let mut out = Vec::new();
    for &(name, bytes) in members {
        assert!(
            name.len() < 100 && name.is_ascii(),
            "{name}: a plain ustar name"
        );
        let mut header = [0u8; BLOCK];
        let mut put = |at: usize, field: &[u8]| header[at..at + field.len()].copy_from_slice(field);
        put(0, name.as_bytes());
        put(100, b"0000644\0"); // mode
        put(108, b"0000000\0"); // uid
        put(116, b"0000000\0"); // gid
        put(124, format!("{:011o}\0", bytes.len()).as_bytes());
        put(136, b"00000000000\0"); // mtime
        put(148, b"        "); // the checksum counts its own field as spaces
        put(156, b"0"); // regular file
        put(257, b"ustar\0");
        put(263, b"00");
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(bytes);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
    }
    out.resize((out.len() + 2 * BLOCK).next_multiple_of(RECORD), 0);
    out
}

fn transfer(transfers: &[TransferFile], img_id: u8) -> &TransferFile {
    transfers
        .iter()
        .find(|t| t.img_id() == img_id)
        .expect("a transfer file per image")
}

/// Resource-like bytes (bitmaps, glyphs): runs of one byte, repeated short patterns and
/// noise, so they compress somewhat, as real assets do.
fn asset(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = SplitMix64(seed);
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        match rng.below(10) {
            0..=4 => {
                let byte = if rng.below(2) == 0 { 0x00 } else { 0xFF };
                let run = rng.range(4, 64);
                out.resize(out.len() + run, byte);
            }
            5..=7 => {
                let pattern = rng.next().to_le_bytes();
                for _ in 0..rng.range(2, 8) {
                    out.extend_from_slice(&pattern[..4]);
                }
            }
            _ => {
                for _ in 0..rng.range(2, 16) {
                    out.extend_from_slice(&rng.next().to_le_bytes());
                }
            }
        }
    }
    out.truncate(len);
    out
}

/// Output collector that keeps paths unique and emits them sorted, with `SHA256SUMS`.
#[derive(Default)]
struct Files(Vec<(String, Vec<u8>)>);

impl Files {
    fn add(&mut self, path: &str, bytes: Vec<u8>) {
        assert!(
            self.0.iter().all(|(p, _)| p != path),
            "duplicate fixture {path}"
        );
        self.0.push((path.to_owned(), bytes));
    }

    fn finish(mut self) -> Vec<(String, Vec<u8>)> {
        // Byte order of paths: what `sort` in the C locale gives, and stable across hosts.
        self.0.sort_by(|a, b| a.0.cmp(&b.0));
        let sums: String = self
            .0
            .iter()
            .map(|(path, bytes)| format!("{}  {path}\n", to_hex(&sha256(bytes))))
            .collect();
        self.add("SHA256SUMS", sums.into_bytes());
        self.0.sort_by(|a, b| a.0.cmp(&b.0));
        self.0
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, well-mixed, and fully specified here, so the
/// images never depend on a third-party generator's version.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough value in `0..n` (modulo bias is irrelevant for test data).
    fn below(&mut self, n: u32) -> u32 {
        // Take the high half: SplitMix64's high bits are its best mixed.
        u32::try_from((self.next() >> 32) % u64::from(n)).expect("below n fits u32")
    }

    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(u32::try_from(hi - lo).expect("small range")) as usize
    }
}

/// A plausible firmware image of exactly `len` bytes for `version`.
///
/// Layout: 256-byte little-endian header (magic, header version 1, image version, total image
/// length including the header, rest 0xFF), then a body of Thumb-like code, string tables,
/// pointer tables, high-entropy blobs and 0xFF padding, which together deflate about 3x: close
/// enough to real firmware that chunking, progress and zlib paths see realistic data, while
/// keeping the committed fixtures (three images, three v2 variants, three zlib files) small.
fn firmware(version: u32, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 4096);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&u32::try_from(len).expect("image fits u32").to_le_bytes());
    out.resize(HEADER_LEN, 0xFF);

    let idioms = idioms();
    let mut rng = SplitMix64(0x0007_A3EB_0F1E_0000 ^ u64::from(version));
    while out.len() < len {
        match rng.below(100) {
            0..=59 => code(&mut rng, &idioms, &mut out),
            60..=74 => strings(&mut rng, &mut out),
            75..=84 => pointers(&mut rng, &mut out),
            85..=90 => {
                // Compressed assets, keys, calibration: incompressible.
                for _ in 0..rng.range(8, 64) {
                    out.extend_from_slice(&rng.next().to_le_bytes());
                }
            }
            _ => {
                // Alignment gaps between linker sections are erased flash.
                let end = (out.len() + rng.range(16, 512)).next_multiple_of(16);
                out.resize(end, 0xFF);
            }
        }
    }
    out.truncate(len);
    out
}

/// Instruction sequences the "compiler" keeps reusing (loads, calls, compares), as real code
/// does; shared by all versions (fixed seed) so successive images resemble successive builds.
fn idioms() -> Vec<Vec<u16>> {
    let mut rng = SplitMix64(0x1D10_3500_0000_0001);
    (0..48)
        .map(|_| {
            (0..rng.range(3, 10))
                .map(|_| instruction(&mut rng))
                .collect()
        })
        .collect()
}

/// One function: push, a sequence of idioms and stray instructions, pop.
fn code(rng: &mut SplitMix64, idioms: &[Vec<u16>], out: &mut Vec<u8>) {
    let mut emit = |op: u16| out.extend_from_slice(&op.to_le_bytes());
    emit(0xB5F0); // push {r4-r7, lr}
    for _ in 0..rng.range(2, 24) {
        if rng.below(5) < 2 {
            emit(instruction(rng));
        } else {
            let idiom = &idioms[rng.below(idioms.len() as u32) as usize];
            idiom.iter().copied().for_each(&mut emit);
        }
    }
    emit(0xBDF0); // pop {r4-r7, pc}
}

/// One 16-bit Thumb-style instruction with small register and immediate fields.
fn instruction(rng: &mut SplitMix64) -> u16 {
    let rd = rng.below(8);
    let rn = rng.below(8);
    let op = match rng.below(10) {
        0 | 1 => 0x6800 | (rng.below(8) << 6) | (rn << 3) | rd, // ldr rd, [rn, #imm]
        2 => 0x6000 | (rng.below(8) << 6) | (rn << 3) | rd,     // str rd, [rn, #imm]
        3 | 4 => 0x2000 | (rd << 8) | rng.below(32),            // movs rd, #imm
        5 => 0x1800 | (rng.below(8) << 6) | (rn << 3) | rd,     // adds rd, rn, rm
        6 => 0x2800 | (rn << 8),                                // cmp rn, #0
        7 => 0xD000 | (rng.below(2) << 8) | rng.below(64),      // beq/bne
        8 => 0x4770,                                            // bx lr
        _ => 0x4600 | (rn << 3) | rd,                           // mov rd, rn
    };
    u16::try_from(op).expect("16-bit opcode")
}

/// A run of NUL-terminated, 4-byte aligned log and assertion strings.
fn strings(rng: &mut SplitMix64, out: &mut Vec<u8>) {
    const WORDS: [&str; 16] = [
        "ota: ",
        "ble: ",
        "flash: ",
        "error ",
        "write ",
        "erase ",
        "verify ",
        "offset 0x%08x ",
        "len %u ",
        "failed",
        "done",
        "assert %s:%d",
        "connected ",
        "timeout ",
        "crc mismatch ",
        "state %d -> %d",
    ];
    for _ in 0..rng.range(2, 12) {
        for _ in 0..rng.range(2, 5) {
            out.extend_from_slice(WORDS[rng.below(16) as usize].as_bytes());
        }
        out.push(0);
        let end = out.len().next_multiple_of(4);
        out.resize(end, 0);
    }
}

/// A table of little-endian flash addresses (vector or dispatch table).
fn pointers(rng: &mut SplitMix64, out: &mut Vec<u8>) {
    let mut addr = 0x0800_0000 + (rng.below(0x4000) << 4);
    for _ in 0..rng.range(8, 48) {
        out.extend_from_slice(&(addr | 1).to_le_bytes());
        addr += rng.below(16) << 2;
    }
}

/// A P-256 key derived from a public label: test-only by construction.
struct Key {
    secret: SecretKey,
}

impl Key {
    fn from_label(label: &str) -> Self {
        // SHA-256 is below the group order with overwhelming probability; rehash if not, so
        // the derivation stays deterministic either way.
        let mut seed = sha256(label.as_bytes());
        loop {
            if let Ok(secret) = SecretKey::from_slice(&seed) {
                return Key { secret };
            }
            seed = sha256(&seed);
        }
    }

    /// Microchip Secure OTA signature: ECDSA P-256 over SHA-256 of the whole image, raw r||s
    /// (64 bytes, not DER), base64 with padding (88 characters).
    ///
    /// Signs the digest (prehash) because that is what the device checks against: the
    /// bootloader verifies the signature against the SHA-256 stored in its image database.
    /// The result equals ordinary ECDSA-with-SHA-256 over the image bytes.
    fn sign_b64(&self, image: &[u8]) -> String {
        let signing = SigningKey::from(&self.secret);
        let signature: Signature = signing
            .sign_prehash(&sha256(image))
            .expect("signing a 32-byte digest");
        let b64 = base64ct::Base64::encode_string(&signature.to_bytes());
        assert_eq!(b64.len(), 88, "raw r||s is 64 bytes");
        b64
    }

    fn private_pem(&self) -> String {
        self.secret
            .to_pkcs8_pem(LineEnding::LF)
            .expect("PKCS#8 encoding")
            .to_string()
    }

    fn public(&self) -> PublicKey {
        self.secret.public_key()
    }

    fn public_pem(&self) -> String {
        self.public()
            .to_public_key_pem(LineEnding::LF)
            .expect("SPKI PEM encoding")
    }

    fn public_der(&self) -> Vec<u8> {
        self.public()
            .to_public_key_der()
            .expect("SPKI DER encoding")
            .into_vec()
    }
}

/// One `images[]` entry of our manifest; `size`/digests/signature describe the inflated image.
struct Entry<'a> {
    flow: &'static str,
    version: &'a str,
    url: &'static str,
    compression: Option<&'static str>,
    image: &'a [u8],
    signature: &'a str,
}

impl<'a> Entry<'a> {
    fn plain(
        flow: &'static str,
        version: &'a str,
        url: &'static str,
        image: &'a [u8],
        signature: &'a str,
    ) -> Self {
        Entry {
            flow,
            version,
            url,
            compression: None,
            image,
            signature,
        }
    }
}

/// Which signatures a manifest variant carries.
#[derive(Clone, Copy)]
enum Signatures<'a> {
    /// Each entry its own signature.
    Own,
    /// No `signature` fields at all.
    None,
    /// The entry for `url` carries `signature` (the trusted key's, over other bytes)
    /// instead of its own.
    Wrong {
        url: &'static str,
        signature: &'a str,
    },
}

/// Our manifest format; field order is part of the fixture (the parser must not depend on it,
/// but humans diff these files).
fn manifest(entries: &[Entry<'_>], signatures: Signatures<'_>) -> Vec<u8> {
    let images = entries
        .iter()
        .map(|e| {
            let mut fields = vec![
                ("name", Json::str("app")),
                ("flow", Json::str(e.flow)),
                ("version", Json::str(e.version)),
                ("url", Json::str(e.url)),
            ];
            if let Some(c) = e.compression {
                fields.push(("compression", Json::str(c)));
            }
            fields.extend([
                ("size", Json::Num(e.image.len() as u64)),
                ("sha256", Json::Str(to_hex(&sha256(e.image)))),
                ("md5", Json::Str(to_hex(&Md5::digest(e.image)))),
            ]);
            match signatures {
                Signatures::None => {}
                Signatures::Wrong { url, signature } if e.url == url => {
                    fields.push(("signature", Json::str(signature)));
                }
                Signatures::Own | Signatures::Wrong { .. } => {
                    fields.push(("signature", Json::str(e.signature)));
                }
            }
            Json::Obj(fields)
        })
        .collect();
    Json::Obj(vec![
        ("otaweb", Json::Num(1)),
        ("images", Json::Arr(images)),
    ])
    .to_pretty()
}

/// Microchip Harmony OTA service manifest (`"ota"` array, capitalised keys as documented).
fn microchip_manifest(image: &[u8], signature: &str) -> Vec<u8> {
    let entry = Json::Obj(vec![
        ("Version", Json::Num(2)),
        ("URL", Json::Str(format!("{MICROCHIP_BASE_URL}app-v2.bin"))),
        ("Digest", Json::Str(to_hex(&sha256(image)))),
        ("Signature", Json::str(signature)),
    ]);
    Json::Obj(vec![("ota", Json::Arr(vec![entry]))]).to_pretty()
}

/// Just enough JSON to write objects with a fixed key order (serde_json's map would sort
/// them unless `preserve_order` were enabled, which would also change the core's build).
enum Json {
    Num(u64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
}

impl Json {
    fn str(s: &str) -> Self {
        Json::Str(s.to_owned())
    }

    /// Same layout as `serde_json::to_string_pretty` (2-space indent), plus a final newline.
    fn to_pretty(&self) -> Vec<u8> {
        let mut out = String::new();
        self.write(&mut out, 0);
        out.push('\n');
        out.into_bytes()
    }

    fn write(&self, out: &mut String, depth: usize) {
        let pad = |out: &mut String, depth: usize| {
            for _ in 0..depth {
                out.push_str("  ");
            }
        };
        match self {
            Json::Num(n) => out.push_str(&n.to_string()),
            Json::Str(s) => out.push_str(&serde_json::to_string(s).expect("string to JSON")),
            Json::Arr(items) if items.is_empty() => out.push_str("[]"),
            Json::Arr(items) => {
                out.push_str("[\n");
                for (i, item) in items.iter().enumerate() {
                    pad(out, depth + 1);
                    item.write(out, depth + 1);
                    out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
                }
                pad(out, depth);
                out.push(']');
            }
            Json::Obj(fields) if fields.is_empty() => out.push_str("{}"),
            Json::Obj(fields) => {
                out.push_str("{\n");
                for (i, (key, value)) in fields.iter().enumerate() {
                    pad(out, depth + 1);
                    out.push_str(&serde_json::to_string(key).expect("key to JSON"));
                    out.push_str(": ");
                    value.write(out, depth + 1);
                    out.push_str(if i + 1 < fields.len() { ",\n" } else { "\n" });
                }
                pad(out, depth);
                out.push('}');
            }
        }
    }
}
