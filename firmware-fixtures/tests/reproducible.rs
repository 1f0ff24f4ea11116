//! The committed fixtures in `files/` are exactly what `generate()` produces, `generate()` is
//! deterministic, `SHA256SUMS` is right, and the fixtures have the properties other tests rely on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64ct::Encoding as _;
use otaweb::image::digest::{sha256, to_hex};
use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;

const REGENERATE: &str =
    "run `cargo run -p otaweb-fixtures --release` and commit firmware-fixtures/files/";

/// One generation per test binary: signing and the 16 MiB bomb are slow in debug builds.
fn generated() -> &'static BTreeMap<String, Vec<u8>> {
    static FILES: OnceLock<BTreeMap<String, Vec<u8>>> = OnceLock::new();
    FILES.get_or_init(|| otaweb_fixtures::generate().into_iter().collect())
}

fn files_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("files")
}

/// Relative paths ('/'-separated) of every regular file under `dir`.
fn list(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; {REGENERATE}", dir.display()));
    for entry in entries {
        let entry = entry.expect("directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = format!("{prefix}{name}");
        if entry.file_type().expect("file type").is_dir() {
            list(&entry.path(), &format!("{rel}/"), out);
        } else {
            out.push(rel);
        }
    }
}

#[test]
fn generate_is_deterministic() {
    let a = otaweb_fixtures::generate();
    let b = otaweb_fixtures::generate();
    assert_eq!(a.len(), b.len());
    for ((pa, ba), (pb, bb)) in a.iter().zip(&b) {
        assert_eq!(pa, pb, "file order differs between runs");
        assert!(ba == bb, "{pa} differs between two runs of generate()");
    }
    let mut paths: Vec<_> = a.iter().map(|(p, _)| p.clone()).collect();
    paths.sort();
    assert_eq!(
        paths,
        a.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
        "generate() output is sorted by path"
    );
}

#[test]
fn committed_files_match_generator() {
    let dir = files_dir();
    let generated = generated();
    for (path, bytes) in generated {
        let on_disk = std::fs::read(dir.join(path))
            .unwrap_or_else(|e| panic!("fixture {path} missing or unreadable ({e}); {REGENERATE}"));
        assert!(
            on_disk == *bytes,
            "fixture {path} differs from the generator's output (stale or hand-edited); {REGENERATE}"
        );
    }
    let mut on_disk = Vec::new();
    list(&dir, "", &mut on_disk);
    for path in on_disk {
        assert!(
            generated.contains_key(&path),
            "files/{path} is not produced by the generator; delete it or add it to generate()"
        );
    }
}

#[test]
fn sha256sums_cover_every_other_file() {
    let files = generated();
    let sums = String::from_utf8(files["SHA256SUMS"].clone()).expect("SHA256SUMS is UTF-8");
    let mut listed = Vec::new();
    for line in sums.lines() {
        let (hex, path) = line
            .split_once("  ")
            .unwrap_or_else(|| panic!("malformed SHA256SUMS line {line:?}"));
        let bytes = files
            .get(path)
            .unwrap_or_else(|| panic!("SHA256SUMS lists unknown file {path}"));
        assert_eq!(hex, to_hex(&sha256(bytes)), "SHA256SUMS digest of {path}");
        listed.push(path.to_owned());
    }
    let expected: Vec<_> = files
        .keys()
        .filter(|p| *p != "SHA256SUMS")
        .cloned()
        .collect();
    assert_eq!(
        listed, expected,
        "SHA256SUMS lists every other file, sorted"
    );
}

fn key(path: &str) -> VerifyingKey {
    let files = generated();
    let pem = std::str::from_utf8(&files[path]).expect("PEM is UTF-8");
    VerifyingKey::from_public_key_pem(pem).expect("SPKI PEM parses")
}

fn signature(b64: &str) -> Signature {
    let raw = base64ct::Base64::decode_vec(b64.trim_end()).expect("base64");
    Signature::from_slice(&raw).expect("64-byte r||s")
}

#[test]
fn images_and_broken_variants() {
    let f = generated();
    let v2 = &f["app-v2.bin"];
    for (name, version, len) in [
        ("app-v1.bin", 1u32, 48 * 1024),
        ("app-v2.bin", 2, 96 * 1024),
        ("app-v3.bin", 3, 64 * 1024),
    ] {
        let image = &f[name];
        assert_eq!(image.len(), len, "{name} length");
        assert_eq!(&image[..4], b"OTAW");
        assert_eq!(image[4..8], 1u32.to_le_bytes(), "{name} header version");
        assert_eq!(image[8..12], version.to_le_bytes(), "{name} image version");
        assert_eq!(
            image[12..16],
            (len as u32).to_le_bytes(),
            "{name} image length"
        );
        assert!(
            image[16..256].iter().all(|&b| b == 0xFF),
            "{name} header padding"
        );
    }

    let inflate = miniz_oxide::inflate::decompress_to_vec_zlib;
    assert_eq!(&inflate(&f["app-v2.bin.zlib"]).expect("inflates"), v2);
    // The Adler-32 trailer (if not the deflate decoder itself) must catch the flipped byte.
    assert!(inflate(&f["app-v2.corrupt.zlib"]).is_err());
    assert!(inflate(&f["app-v2.truncated.zlib"]).is_err());
    let bomb = inflate(&f["bomb.zlib"]).expect("bomb inflates");
    assert_eq!(bomb.len(), 16 << 20);
    assert!(bomb.iter().all(|&b| b == 0));

    let corrupt = &f["app-v2.corrupt.bin"];
    let differing: Vec<_> = (0..v2.len()).filter(|&i| corrupt[i] != v2[i]).collect();
    assert_eq!(differing, [v2.len() / 2]);
    assert_eq!((corrupt[v2.len() / 2] ^ v2[v2.len() / 2]).count_ones(), 1);
    assert_eq!(f["app-v2.truncated.bin"], v2[..v2.len() - 1000]);
    let oversized = &f["app-v2.oversized.bin"];
    assert_eq!(&oversized[..v2.len()], &v2[..]);
    assert_eq!(oversized.len(), v2.len() + 4096);
    assert!(oversized[v2.len()..].iter().all(|&b| b == 0xFF));
}

#[test]
fn signatures_verify_with_test_key_only() {
    let f = generated();
    let good = key("keys/test-signing-key.pub.pem");
    let other = key("keys/other-key.pub.pem");
    let der = VerifyingKey::from_public_key_der(&f["keys/test-signing-key.pub.der"]).expect("DER");
    assert_eq!(der, good, "PEM and DER public keys agree");

    let sig_text = std::str::from_utf8(&f["app-v2.bin.sig"]).expect("UTF-8");
    assert_eq!(sig_text.len(), 89, "88 base64 chars and a newline");
    let sig = signature(sig_text);
    let v2 = &f["app-v2.bin"];
    good.verify(v2, &sig).expect("ECDSA-SHA256 over the image");
    good.verify_prehash(&sha256(v2), &sig)
        .expect("ECDSA over the digest");
    assert!(other.verify(v2, &sig).is_err(), "wrong key must not verify");
    assert!(good.verify(&f["app-v2.corrupt.bin"], &sig).is_err());
}

fn images(manifest: &str) -> Vec<serde_json::Value> {
    let files = generated();
    let v: serde_json::Value = serde_json::from_slice(&files[manifest]).expect("manifest is JSON");
    assert_eq!(v["otaweb"], 1);
    v["images"].as_array().expect("images array").clone()
}

#[test]
fn manifests_describe_the_images() {
    let f = generated();
    let good = key("keys/test-signing-key.pub.pem");
    let signed = images("manifest.json");
    let unsigned = images("manifest-unsigned.json");
    let bad = images("manifest-bad-signature.json");
    assert_eq!(signed.len(), 4);
    for (i, entry) in signed.iter().enumerate() {
        let url = entry["url"].as_str().expect("url");
        let image = if entry["compression"] == "zlib" {
            miniz_oxide::inflate::decompress_to_vec_zlib(&f[url]).expect("inflates")
        } else {
            f[url].clone()
        };
        assert_eq!(entry["size"], image.len());
        assert_eq!(entry["sha256"], to_hex(&sha256(&image)));
        let sig = signature(entry["signature"].as_str().expect("signature"));
        good.verify(&image, &sig)
            .expect("manifest signature verifies");

        assert!(unsigned[i].get("signature").is_none());
        let mut without = entry.clone();
        without.as_object_mut().expect("object").remove("signature");
        assert_eq!(unsigned[i], without);

        if url == "app-v2.bin" {
            assert_eq!(
                bad[i]["signature"], signed[0]["signature"],
                "carries app-v1's"
            );
            let wrong = signature(bad[i]["signature"].as_str().expect("signature"));
            assert!(good.verify(&image, &wrong).is_err());
        } else {
            assert_eq!(bad[i], *entry);
        }
    }

    // The DFU product's manifest: the bundle, its version the package's FW_version.
    let dfu = images("manifest-dfu.json");
    let dfu_bad = images("manifest-dfu-bad-signature.json");
    assert_eq!(dfu.len(), 1);
    let entry = &dfu[0];
    let bundle = &f["dfu/package.tar"];
    assert_eq!(entry["flow"], "dfu");
    assert_eq!(entry["url"], "dfu/package.tar");
    let package: serde_json::Value =
        serde_json::from_slice(&f["dfu/package.json"]).expect("package.json is JSON");
    let fw = package["fw_version"].as_u64().expect("fw_version");
    assert_eq!(
        entry["version"],
        format!("{}.{}.{}", fw / 1_000_000, fw / 1000 % 1000, fw % 1000)
    );
    assert_eq!(entry["size"], bundle.len());
    assert_eq!(entry["sha256"], to_hex(&sha256(bundle)));
    assert!(
        entry.get("compression").is_none(),
        "the .tar is sent as it is"
    );
    good.verify(
        bundle,
        &signature(entry["signature"].as_str().expect("signature")),
    )
    .expect("the bundle's signature verifies");
    assert_eq!(
        dfu_bad[0]["signature"], signed[0]["signature"],
        "carries app-v1's"
    );
    let wrong = signature(dfu_bad[0]["signature"].as_str().expect("signature"));
    assert!(good.verify(bundle, &wrong).is_err());
    let mut rest = dfu_bad[0].clone();
    rest["signature"] = entry["signature"].clone();
    assert_eq!(rest, *entry, "only the signature differs");

    let chip: serde_json::Value = serde_json::from_slice(&f["microchip-ota.json"]).expect("JSON");
    let ota = &chip["ota"][0];
    assert_eq!(ota["Version"], 2);
    assert_eq!(ota["Digest"], to_hex(&sha256(&f["app-v2.bin"])));
    assert_eq!(
        ota["Signature"].as_str(),
        Some(
            std::str::from_utf8(&f["app-v2.bin.sig"])
                .expect("UTF-8")
                .trim_end()
        )
    );
}

mod dfu {
    //! The SiFli DFU package opens and installs with the test keys, the way a device checks
    //! it, and each broken variant fails exactly the check it is meant to.

    use super::generated;
    use otaweb::image::dfu_bundle;
    use otaweb::image::digest::sha256;
    use otaweb::image::sifli::{
        ctr_apply, decompress_payload, CtrlError, CtrlPacket, ImageFlags, PublicKey, Record,
        TransferError, TransferFile,
    };

    fn public() -> PublicKey {
        PublicKey::from_spki_der(&generated()["keys/dfu-test-signing-key.pub.der"])
            .expect("294-byte RSA-2048 DER")
    }

    fn root_key() -> [u8; 32] {
        generated()["keys/dfu-test-root-key.bin"]
            .as_slice()
            .try_into()
            .expect("32-byte root key")
    }

    fn nonce() -> [u8; 8] {
        generated()["keys/dfu-test-sig-hash.bin"][..8]
            .try_into()
            .expect("8 bytes")
    }

    fn open(name: &str) -> Result<CtrlPacket, CtrlError> {
        CtrlPacket::open(&generated()[name], &root_key(), &public(), &nonce())
    }

    #[test]
    fn keys_are_ours_not_the_sdks() {
        let f = generated();
        let key = public();
        assert_eq!(f["keys/dfu-test-signing-key.pub.der"].len(), 294);
        assert_eq!(f["keys/dfu-test-sig-hash.bin"], key.sig_hash());
        assert_eq!(nonce(), key.nonce8());
        assert_eq!(f["keys/dfu-test-uid.bin"].len(), 16);
        assert_eq!(
            PublicKey::from_pem(
                std::str::from_utf8(&f["keys/dfu-test-signing-key.pub.pem"]).unwrap()
            ),
            Ok(key)
        );
        // The SDK's published test values (dfu.md §6) must not be what we use.
        assert_ne!(nonce(), [0x56, 0xCE, 0x4E, 0xC4, 0xC9, 0xDC, 0xF4, 0x11]);
        assert_ne!(root_key()[..4], [0xE6, 0x92, 0xDF, 0xB5]);
        assert_ne!(f["keys/dfu-test-uid.bin"][..4], [0xB7, 0x76, 0x6B, 0x8A]);
    }

    #[test]
    fn package_opens_and_installs() {
        let f = generated();
        let ctrl = open("dfu/ctrl_packet.bin").expect("ctrl packet opens");
        let description: serde_json::Value =
            serde_json::from_slice(&f["dfu/package.json"]).expect("package.json");
        assert_eq!(ctrl.dfu_id, 1);
        assert_eq!(ctrl.hw_version, 51);
        assert_eq!(description["sdk_version"], ctrl.sdk_version);
        assert_eq!(description["fw_version"], ctrl.fw_version);
        assert_eq!(ctrl.blk_size, 512);
        let ids: Vec<_> = ctrl.images.iter().map(|e| (e.img_id, e.flags)).collect();
        assert_eq!(
            ids,
            [
                (0, ImageFlags::COMPRESS.0 | ImageFlags::ENC.0),
                (3, ImageFlags::ENC.0),
                (4, 0)
            ]
        );
        assert_eq!(f["dfu/ctrl_packet.bin"].len(), 338 + 263 * 3);

        let listed = description["images"].as_array().expect("images");
        assert_eq!(listed.len(), 3);
        for (entry, info) in ctrl.images.iter().zip(listed) {
            assert_eq!(info["img_id"], entry.img_id);
            assert_eq!(info["flags"], entry.flags);
            assert_eq!(info["length"], entry.length);
            let transfer_name = format!("dfu/{}", info["transfer"].as_str().unwrap());
            let image = &f[&format!("dfu/{}", info["image"].as_str().unwrap())];
            assert_eq!(info["image_size"], image.len());

            // The remote: told the id, walks the file with the default block size.
            let transfer = TransferFile::new(entry.img_id, f[&transfer_name].clone())
                .expect("transfer file walks");
            assert_eq!(info["img_length"], transfer.img_length());
            assert_eq!(info["total_pkt_num"], transfer.total_pkt_num());
            assert_eq!(transfer.payload_len(), entry.length);

            // The device: every packet, the image signature, then install.
            let nonce = nonce();
            let enc = entry.is_encrypted().then_some((&ctrl.session_key, &nonce));
            for raw in transfer.records() {
                Record::parse(raw)
                    .and_then(|r| r.verify(enc))
                    .expect("every record checks");
            }
            let stored = transfer.stored_payload();
            entry
                .verify_payload(&public(), &stored)
                .expect("image signature over the stored payload");
            let mut payload = stored;
            if entry.is_encrypted() {
                ctr_apply(&ctrl.session_key, &nonce, 0, &mut payload).expect("decrypts");
            }
            let installed = if entry.is_compressed() {
                decompress_payload(&payload, 1 << 20).expect("unpacks")
            } else {
                payload
            };
            assert_eq!(installed.len(), image.len().next_multiple_of(16));
            assert_eq!(&installed[..image.len()], &image[..]);
            assert!(
                installed[image.len()..].iter().all(|&b| b == 0),
                "zero padding"
            );
        }
    }

    #[test]
    fn bundles_hold_the_loose_files_in_package_order() {
        let f = generated();
        let json = &f["dfu/package.json"];
        for (tar, hcpu) in [
            ("dfu/package.tar", "dfu/hcpu.transfer.bin"),
            ("dfu/package-tampered.tar", "dfu/hcpu.tampered.transfer.bin"),
        ] {
            let bytes = &f[tar];
            assert_eq!(bytes.len() % 10240, 0, "{tar}: whole tar records");
            assert_eq!(&bytes[..13], b"package.json\0", "{tar}: package.json first");
            assert_eq!(&bytes[512..512 + json.len()], &json[..]);
            let bundle = dfu_bundle::read(bytes).expect("the bundle reads");
            assert_eq!(bundle.ctrl_packet, &f["dfu/ctrl_packet.bin"][..]);
            assert_eq!(bundle.blk_size, 512);
            assert_eq!(
                bundle.images,
                [
                    (0, &f[hcpu][..]),
                    (3, &f["dfu/res.transfer.bin"][..]),
                    (4, &f["dfu/font.transfer.bin"][..]),
                ]
            );
        }
    }

    #[test]
    fn broken_variants_fail_their_check() {
        let f = generated();
        assert_eq!(
            open("dfu/ctrl_packet.tampered.bin"),
            Err(CtrlError::HashMismatch)
        );
        assert_eq!(
            open("dfu/ctrl_packet.tampered.bin")
                .unwrap_err()
                .device_code(),
            1
        );
        assert_eq!(
            open("dfu/ctrl_packet.bad-signature.bin"),
            Err(CtrlError::SignatureInvalid)
        );
        assert_eq!(
            open("dfu/ctrl_packet.bad-signature.bin")
                .unwrap_err()
                .device_code(),
            9
        );
        let other = PublicKey::from_pem(
            std::str::from_utf8(&f["keys/dfu-other-key.pub.pem"]).expect("UTF-8"),
        )
        .expect("RSA-2048 PEM");
        assert_eq!(
            CtrlPacket::open(&f["dfu/ctrl_packet.bin"], &root_key(), &other, &nonce()),
            Err(CtrlError::SignatureInvalid)
        );

        let ctrl = open("dfu/ctrl_packet.bin").expect("opens");
        let entry = ctrl.image(0).expect("hcpu entry");
        let good = TransferFile::new(0, f["dfu/hcpu.transfer.bin"].clone()).expect("walks");
        let bad = TransferFile::new(0, f["dfu/hcpu.tampered.transfer.bin"].clone())
            .expect("a flipped block bit leaves the layout intact");
        let nonce = nonce();
        let enc = Some((&ctrl.session_key, &nonce));
        let tampered = otaweb_fixtures::DFU_TAMPERED_RECORD as u32;
        for index in 0..bad.total_pkt_num() {
            let result = Record::parse(bad.record(index).unwrap()).and_then(|r| r.verify(enc));
            if index == tampered {
                assert_eq!(
                    result,
                    Err(TransferError::HashMismatch {
                        offset: tampered * 512
                    })
                );
            } else {
                assert_eq!(result, Ok(()), "record {index}");
                assert_eq!(bad.record(index), good.record(index));
            }
        }
        assert!(entry
            .verify_payload(&public(), &bad.stored_payload())
            .is_err());
        assert_ne!(sha256(bad.bytes()), sha256(good.bytes()));
    }
}
