//! The JavaScript API exported to `pkg/otaweb.js`, called as JavaScript would call it.
#![cfg(target_arch = "wasm32")]

#[macro_use]
mod common;

use js_sys::Reflect;
use wasm_bindgen::JsValue;
use wasm_bindgen_test::wasm_bindgen_test;

use otaweb::web;

use common::web::field;

fn app_v2_entry() -> JsValue {
    let images = web::parse_manifest(fixture_text!("manifest.json")).expect("parses");
    images
        .iter()
        .find(|e| field(e, "url").as_string().as_deref() == Some("app-v2.bin"))
        .expect("app-v2 entry")
}

#[wasm_bindgen_test]
fn digest_matches_sha256sums() {
    let hex = web::digest(fixture!("app-v2.bin"), "sha256").expect("digest");
    assert!(fixture_text!("SHA256SUMS").contains(&format!("{hex}  app-v2.bin")));
    assert_eq!(
        web::digest(b"abc", "MD5").expect("digest"),
        "900150983cd24fb0d6963f7d28e17f72"
    );
}

#[wasm_bindgen_test]
fn bad_algorithm_throws_a_typed_error() {
    let error = web::digest(b"abc", "crc32").expect_err("refused");
    assert_eq!(field(&error, "name"), "OtawebError");
    assert_eq!(field(&error, "code"), "invalid-argument");
    assert_eq!(field(&error, "kind"), "misuse");
    assert_eq!(field(&error, "retryable"), false);
}

#[wasm_bindgen_test]
fn verify_image_returns_the_verified_summary() {
    let key = fixture_text!("keys/test-signing-key.pub.pem").to_string();
    let result = web::verify_image_js(fixture!("app-v2.bin"), app_v2_entry(), Some(key), None)
        .expect("verifies");
    assert_eq!(field(&result, "version"), "2");
    assert_eq!(field(&result, "flow"), "gadget");
    assert_eq!(field(&result, "size"), 98_304);
    assert_eq!(field(&result, "signed"), true);
}

#[wasm_bindgen_test]
fn verify_image_refuses_a_corrupt_image_with_code_and_message() {
    let key = fixture_text!("keys/test-signing-key.pub.pem").to_string();
    let error = web::verify_image_js(
        fixture!("app-v2.corrupt.bin"),
        app_v2_entry(),
        Some(key),
        None,
    )
    .expect_err("refused");
    assert_eq!(field(&error, "code"), "digest-mismatch");
    assert_eq!(field(&error, "kind"), "verification-failed");
    let message = field(&error, "message").as_string().expect("text");
    assert!(message.contains("SHA-256"), "{message}");
}

#[wasm_bindgen_test]
fn verify_image_accepts_entry_json_text() {
    let entry = js_sys::JSON::stringify(&app_v2_entry()).expect("stringify");
    let error = web::verify_image_js(fixture!("app-v2.bin"), entry.into(), None, None)
        .expect_err("signed entry without a key");
    assert_eq!(field(&error, "code"), "no-trusted-key");
}

/// The app-v2 entry of fixture manifest `text`.
fn app_v2_entry_of(text: &str) -> JsValue {
    let images = web::parse_manifest(text).expect("parses");
    images
        .iter()
        .find(|e| field(e, "url").as_string().as_deref() == Some("app-v2.bin"))
        .expect("app-v2 entry")
}

#[wasm_bindgen_test]
fn danger_accept_unsigned_never_weakens_a_given_key() {
    let key = fixture_text!("keys/test-signing-key.pub.pem").to_string();
    let forged = app_v2_entry_of(fixture_text!("manifest-bad-signature.json"));
    // A key and the danger flag: the signed entry is still checked with the key.
    let error = web::verify_image_js(
        fixture!("app-v2.bin"),
        forged,
        Some(key.clone()),
        Some(true),
    )
    .expect_err("a forged signature is refused even with dangerAcceptUnsigned");
    assert_eq!(field(&error, "code"), "signature-invalid");
    // ... and only an unsigned entry passes on its digest.
    let unsigned = app_v2_entry_of(fixture_text!("manifest-unsigned.json"));
    let result =
        web::verify_image_js(fixture!("app-v2.bin"), unsigned, Some(key), Some(true)).expect("ok");
    assert_eq!(field(&result, "signed"), false);
}

#[wasm_bindgen_test]
fn inflate_caps_output() {
    let error = web::inflate(fixture!("bomb.zlib"), 1 << 20).expect_err("capped");
    assert_eq!(field(&error, "code"), "zlib-too-large");
    let image = web::inflate(fixture!("app-v2.bin.zlib"), 1 << 20).expect("inflates");
    assert_eq!(image, fixture!("app-v2.bin"));
}

fn dfu_images(hcpu: &[u8]) -> js_sys::Array {
    let item = |id: u8, bytes: &[u8]| {
        let o = js_sys::Object::new();
        Reflect::set(&o, &"imgId".into(), &id.into()).expect("settable");
        Reflect::set(&o, &"bytes".into(), &js_sys::Uint8Array::from(bytes)).expect("settable");
        JsValue::from(o)
    };
    js_sys::Array::of3(
        &item(4, fixture!("dfu/font.transfer.bin")),
        &item(0, hcpu),
        &item(3, fixture!("dfu/res.transfer.bin")),
    )
}

#[wasm_bindgen_test]
fn dfu_package_is_checked_and_described() {
    let package = web::VerifiedImage::dfu_package(
        fixture!("dfu/ctrl_packet.bin"),
        dfu_images(fixture!("dfu/hcpu.transfer.bin")),
        None,
    )
    .expect("well formed");
    let d = package.describe().expect("describes");
    assert_eq!(field(&d, "flow"), "dfu");
    assert_eq!(field(&d, "images"), 3);
    let sizes = fixture!("dfu/hcpu.transfer.bin").len()
        + fixture!("dfu/res.transfer.bin").len()
        + fixture!("dfu/font.transfer.bin").len();
    assert_eq!(field(&d, "size"), sizes as f64);

    // Cut inside a record header: the walk fails. (A cut that leaves whole records is only
    // caught by the device's signature check, or by a manifest digest of the file.)
    let cut = &fixture!("dfu/hcpu.transfer.bin")[..560];
    let error = match web::VerifiedImage::dfu_package(
        fixture!("dfu/ctrl_packet.bin"),
        dfu_images(cut),
        None,
    ) {
        Ok(_) => panic!("a cut transfer file was accepted"),
        Err(e) => e,
    };
    assert_eq!(field(&error, "name"), "OtawebError");
    assert_eq!(field(&error, "kind"), "verification-failed");
    assert!(field(&error, "code")
        .as_string()
        .unwrap()
        .starts_with("dfu-"));
}

#[wasm_bindgen_test]
fn dfu_bundle_is_the_loose_package() {
    let bundle = web::VerifiedImage::dfu_bundle(fixture!("dfu/package.tar")).expect("reads");
    let loose = web::VerifiedImage::dfu_package(
        fixture!("dfu/ctrl_packet.bin"),
        dfu_images(fixture!("dfu/hcpu.transfer.bin")),
        None,
    )
    .expect("well formed");
    let (b, l) = (
        bundle.describe().expect("describes"),
        loose.describe().expect("describes"),
    );
    assert_eq!(field(&b, "flow"), "dfu");
    assert_eq!(field(&b, "images"), 3);
    assert_eq!(field(&b, "size"), field(&l, "size"));

    let error = match web::VerifiedImage::dfu_bundle(fixture!("dfu/package.json")) {
        Ok(_) => panic!("package.json alone was accepted as a bundle"),
        Err(e) => e,
    };
    assert_eq!(field(&error, "name"), "OtawebError");
    assert_eq!(field(&error, "code"), "dfu-bundle-truncated");
    assert_eq!(field(&error, "kind"), "verification-failed");
    assert_eq!(field(&error, "retryable"), false);
    let message = field(&error, "message").as_string().expect("text");
    assert!(message.contains("not a complete tar archive"), "{message}");
}
