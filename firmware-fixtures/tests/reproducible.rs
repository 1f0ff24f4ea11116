//! The committed fixtures in `files/` are exactly what `generate()` produces, `generate()` is
//! deterministic, `SHA256SUMS` is right, and the fixtures have the properties other tests rely on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine as _;
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
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim_end())
        .expect("base64");
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
