//! The image module against the committed fixtures, natively (`cargo test`) and as wasm
//! (`wasm-pack test --node` and `--headless --chrome`): the same assertions on both sides.

#[macro_use]
mod common;

use otaweb::error::Error;
use otaweb::flow::dfu::DfuPackage;
use otaweb::image::dfu_bundle::BundleError;
use otaweb::image::digest::{md5, sha256, to_hex};
use otaweb::image::manifest::{FlowKind, Manifest, MicrochipEntry};
use otaweb::image::sifli::TransferError;
use otaweb::image::signature::{ImageSignature, PublicKey};
use otaweb::image::verify::{verify_image, VerifyError, VerifyPolicy};
use otaweb::image::zlib::{inflate, InflateError, InflateStatus, Inflater};

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const SUMS: &str = fixture_text!("SHA256SUMS");

fn sum_of(name: &str) -> &'static str {
    SUMS.lines()
        .find_map(|line| {
            let (hex, path) = line.split_once("  ")?;
            (path == name).then_some(hex)
        })
        .unwrap_or_else(|| panic!("{name} is not in SHA256SUMS"))
}

fn test_key() -> PublicKey {
    PublicKey::from_pem(fixture_text!("keys/test-signing-key.pub.pem")).expect("test key parses")
}

fn trusting_test_key() -> VerifyPolicy {
    VerifyPolicy::trusting(vec![test_key()])
}

fn manifest() -> Manifest {
    Manifest::parse(fixture_text!("manifest.json")).expect("manifest parses")
}

fn entry_for(manifest: &Manifest, url: &str) -> otaweb::image::manifest::ManifestEntry {
    manifest
        .images
        .iter()
        .find(|e| e.url == url)
        .cloned()
        .unwrap_or_else(|| panic!("no entry for {url}"))
}

#[test]
fn digests_match_sha256sums() {
    for (name, bytes) in [
        ("app-v1.bin", &fixture!("app-v1.bin")[..]),
        ("app-v2.bin", &fixture!("app-v2.bin")[..]),
        ("app-v3.bin", &fixture!("app-v3.bin")[..]),
        ("app-v2.bin.zlib", &fixture!("app-v2.bin.zlib")[..]),
        ("bomb.zlib", &fixture!("bomb.zlib")[..]),
    ] {
        assert_eq!(to_hex(&sha256(bytes)), sum_of(name), "{name}");
    }
}

#[test]
fn every_manifest_entry_verifies_with_the_test_key() {
    let manifest = manifest();
    assert_eq!(manifest.images.len(), 4);
    let policy = trusting_test_key();
    for entry in &manifest.images {
        let bytes: &[u8] = match entry.url.as_str() {
            "app-v1.bin" => fixture!("app-v1.bin"),
            "app-v2.bin" => fixture!("app-v2.bin"),
            "app-v3.bin" => fixture!("app-v3.bin"),
            "app-v2.bin.zlib" => fixture!("app-v2.bin.zlib"),
            other => panic!("unexpected url {other}"),
        };
        let verified = verify_image(bytes, entry, &policy)
            .unwrap_or_else(|e| panic!("{} refused: {e}", entry.url));
        let image = verified.get();
        assert!(image.signed);
        assert_eq!(image.size(), entry.size);
        assert_eq!(image.sha256, entry.sha256);
        if entry.url.ends_with(".zlib") {
            assert_eq!(image.bytes, fixture!("app-v2.bin"));
            assert_eq!(image.flow, FlowKind::Dfu);
        }
    }
}

#[test]
fn corrupted_truncated_and_oversized_images_are_refused() {
    let entry = entry_for(&manifest(), "app-v2.bin");
    let policy = trusting_test_key();
    let corrupt = verify_image(fixture!("app-v2.corrupt.bin"), &entry, &policy);
    assert!(
        matches!(corrupt, Err(VerifyError::DigestMismatch { .. })),
        "{corrupt:?}"
    );
    let truncated = verify_image(fixture!("app-v2.truncated.bin"), &entry, &policy);
    assert!(
        matches!(
            truncated,
            Err(VerifyError::SizeMismatch {
                expected: 98_304,
                actual: 97_304
            })
        ),
        "{truncated:?}"
    );
    let oversized = verify_image(fixture!("app-v2.oversized.bin"), &entry, &policy);
    assert!(
        matches!(
            oversized,
            Err(VerifyError::SizeMismatch {
                actual: 102_400,
                ..
            })
        ),
        "{oversized:?}"
    );
}

#[test]
fn corrupted_and_truncated_compressed_images_are_refused() {
    let entry = entry_for(&manifest(), "app-v2.bin.zlib");
    let policy = trusting_test_key();
    let corrupt = verify_image(fixture!("app-v2.corrupt.zlib"), &entry, &policy);
    assert!(
        matches!(corrupt, Err(VerifyError::Inflate(_))),
        "{corrupt:?}"
    );
    let truncated = verify_image(fixture!("app-v2.truncated.zlib"), &entry, &policy);
    assert!(
        matches!(
            truncated,
            Err(VerifyError::Inflate(InflateError::Truncated))
        ),
        "{truncated:?}"
    );
}

#[test]
fn signatures_bind_image_and_key() {
    let bad = Manifest::parse(fixture_text!("manifest-bad-signature.json")).expect("parses");
    let entry = entry_for(&bad, "app-v2.bin");
    let refused = verify_image(fixture!("app-v2.bin"), &entry, &trusting_test_key());
    assert!(
        matches!(refused, Err(VerifyError::SignatureInvalid)),
        "{refused:?}"
    );

    let other = PublicKey::from_pem(fixture_text!("keys/other-key.pub.pem")).expect("parses");
    let good = entry_for(&manifest(), "app-v2.bin");
    let wrong_key = verify_image(
        fixture!("app-v2.bin"),
        &good,
        &VerifyPolicy::trusting(vec![other]),
    );
    assert!(
        matches!(wrong_key, Err(VerifyError::SignatureInvalid)),
        "{wrong_key:?}"
    );

    let unsigned = Manifest::parse(fixture_text!("manifest-unsigned.json")).expect("parses");
    let entry = entry_for(&unsigned, "app-v2.bin");
    let missing = verify_image(fixture!("app-v2.bin"), &entry, &trusting_test_key());
    assert!(
        matches!(missing, Err(VerifyError::SignatureMissing)),
        "{missing:?}"
    );
    let dev = verify_image(
        fixture!("app-v2.bin"),
        &entry,
        &VerifyPolicy::danger_accept_unsigned(),
    )
    .expect("accepted only by the danger policy");
    assert!(!dev.get().signed);

    let detached = ImageSignature::from_base64(fixture_text!("app-v2.bin.sig")).expect("parses");
    test_key()
        .verify(fixture!("app-v2.bin"), &detached)
        .expect("detached signature verifies");
    let der = PublicKey::from_spki_der(fixture!("keys/test-signing-key.pub.der")).expect("parses");
    assert_eq!(der.fingerprint(), test_key().fingerprint());
}

#[test]
fn microchip_manifest_points_at_app_v2() {
    let entry =
        MicrochipEntry::parse_manifest(fixture_text!("microchip-ota.json")).expect("parses");
    assert_eq!(entry.version.get(), 2);
    assert_eq!(entry.digest, sha256(fixture!("app-v2.bin")));
    let signature = entry.signature.as_ref().expect("signed");
    test_key()
        .verify(fixture!("app-v2.bin"), signature)
        .expect("Microchip signature verifies");
}

#[test]
fn zip_bomb_stops_at_the_cap() {
    let refused = inflate(fixture!("bomb.zlib"), 1 << 20);
    assert_eq!(refused, Err(InflateError::TooLarge { limit: 1 << 20 }));

    // Streaming, fed in link-sized pieces, the cap holds as output is produced.
    let mut inflater = Inflater::new(256 << 10);
    let mut out = Vec::new();
    let mut outcome = Ok(InflateStatus::NeedsInput);
    for piece in fixture!("bomb.zlib").chunks(244) {
        outcome = inflater.push(piece, &mut out);
        if outcome.is_err() {
            break;
        }
    }
    assert_eq!(outcome, Err(InflateError::TooLarge { limit: 256 << 10 }));
    assert!(out.len() <= 256 << 10);
}

#[test]
fn md5_in_manifest_matches() {
    let entry = entry_for(&manifest(), "app-v1.bin");
    assert_eq!(entry.md5, Some(md5(fixture!("app-v1.bin"))));
}

/// The loose DFU package as `VerifiedImage.dfuPackage` builds it.
fn loose_dfu_package(hcpu: &[u8]) -> DfuPackage {
    DfuPackage::from_files(
        fixture!("dfu/ctrl_packet.bin").to_vec(),
        [
            (0, hcpu.to_vec()),
            (3, fixture!("dfu/res.transfer.bin").to_vec()),
            (4, fixture!("dfu/font.transfer.bin").to_vec()),
        ],
        512,
    )
    .expect("the loose files make a package")
}

#[test]
fn dfu_bundle_is_the_loose_package() {
    let bundle = DfuPackage::from_bundle(fixture!("dfu/package.tar")).expect("bundle reads");
    assert_eq!(bundle, loose_dfu_package(fixture!("dfu/hcpu.transfer.bin")));
    assert_eq!(bundle.images().len(), 3);

    // Well formed, so it builds; the device refuses it at the HCPU image's signature.
    let tampered =
        DfuPackage::from_bundle(fixture!("dfu/package-tampered.tar")).expect("bundle reads");
    assert_eq!(
        tampered,
        loose_dfu_package(fixture!("dfu/hcpu.tampered.transfer.bin"))
    );
    assert_ne!(tampered, bundle);
}

#[test]
fn broken_dfu_bundles_say_why() {
    let tar = fixture!("dfu/package.tar");
    let bundle_error = |bytes: &[u8]| match DfuPackage::from_bundle(bytes) {
        Err(Error::Verification(VerifyError::Bundle(e))) => e,
        other => panic!("not a bundle error: {other:?}"),
    };
    // Blocks: package.json header 0, data 1-2; ctrl_packet.bin 3, 4-6; hcpu.transfer.bin 7, ...
    assert_eq!(
        bundle_error(&tar[..8 * 512 + 100]),
        BundleError::Truncated { len: 8 * 512 + 100 }
    );
    assert_eq!(
        bundle_error(fixture!("dfu/package.json")),
        BundleError::Truncated { len: 837 }
    );
    let mut damaged = tar.to_vec();
    damaged[7 * 512 + 1] ^= 0x20; // "hcpu" -> "hCpu"
    assert_eq!(
        bundle_error(&damaged),
        BundleError::BadChecksum { offset: 7 * 512 }
    );

    // A transfer file that does not walk fails with its own error and its image id, on the
    // path bundles and loose files share.
    let error = DfuPackage::from_files(
        fixture!("dfu/ctrl_packet.bin").to_vec(),
        [(0, fixture!("dfu/hcpu.transfer.bin")[..564].to_vec())],
        512,
    )
    .expect_err("a 16-byte stub record");
    assert!(
        matches!(
            error,
            Error::Verification(VerifyError::Transfer {
                img_id: 0,
                error: TransferError::RecordTooShort { index: 1, .. }
            })
        ),
        "{error:?}"
    );
    assert_eq!(error.code(), "verification-failed");
}
