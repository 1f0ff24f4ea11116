//! Gadget updates in a real browser: the `Updater`'s Web Bluetooth code against the demo
//! device (the companion firmware compiled into this wasm) behind the `navigator.bluetooth`
//! stand-in of `www/demo-bluetooth.js`. Only the radio is simulated.
#![cfg(target_arch = "wasm32")]

#[macro_use]
mod common;

use js_sys::Function;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

use otaweb::web::{self, Updater, VerifiedImage};
use otaweb_demo_device::DemoGadget;

use common::web::{count, details, field, install, object, radio_stats, record};

wasm_bindgen_test_configure!(run_in_browser);

/// A fresh demo gadget behind a freshly installed stand-in; returns the gadget (as
/// JavaScript holds it) and the stand-in (for its radio statistics).
fn demo(radio: JsValue) -> (JsValue, JsValue) {
    let gadget: JsValue = DemoGadget::new(None, None, Some("otaweb test".into()), None)
        .expect("demo gadget")
        .into();
    let bluetooth = install(&gadget, &radio);
    (gadget, bluetooth)
}

fn fast_radio(extra: &[(&str, JsValue)]) -> JsValue {
    let mut pairs = vec![
        ("intervalMs", 1.into()),
        ("packetsPerEvent", 8.into()),
        ("rebootMs", 50.into()),
    ];
    pairs.extend_from_slice(extra);
    object(&pairs)
}

fn image(url: &str) -> VerifiedImage {
    let images = web::parse_manifest(fixture_text!("manifest.json")).expect("manifest");
    let entry = images
        .iter()
        .find(|e| field(e, "url").as_string().as_deref() == Some(url))
        .expect("entry");
    let key = fixture_text!("keys/test-signing-key.pub.pem").to_string();
    let bytes: &[u8] = match url {
        "app-v1.bin" => fixture!("app-v1.bin"),
        _ => fixture!("app-v2.bin"),
    };
    VerifiedImage::verify(bytes.to_vec(), entry, Some(key), None).expect("verifies")
}

async fn settle(promise: js_sys::Promise) -> Result<JsValue, JsValue> {
    JsFuture::from(promise).await
}

const APP_V2_SHA256: &str = "f54ee1e8539dece67299def1c0ffc811a100f70b468dad0b3483abdcbf1be7ba";

#[wasm_bindgen_test]
async fn full_update_through_web_bluetooth() {
    let (gadget, bluetooth) = demo(fast_radio(&[]));
    let updater = Updater::connect_gadget(JsValue::UNDEFINED)
        .await
        .expect("connects through navigator.bluetooth");
    assert_eq!(updater.device_name().as_deref(), Some("otaweb test"));
    let log = record(&updater, &["stage", "version", "progress", "done"]);

    let result = settle(updater.update(&image("app-v2.bin"), JsValue::UNDEFINED))
        .await
        .expect("updates");
    assert_eq!(field(&result, "outcome"), "done");
    assert_eq!(field(&result, "version"), "2");

    assert_eq!(field(&gadget, "activeVersion"), 2);
    let read_back = field(&gadget, "readBackSha256")
        .unchecked_into::<Function>()
        .call0(&gadget)
        .expect("reads the flash");
    assert_eq!(read_back, APP_V2_SHA256);

    let stages: Vec<String> = details(&log, "stage")
        .iter()
        .map(|d| field(d, "stage").as_string().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "handshake",
            "discover",
            "transfer",
            "apply",
            "restart",
            "confirm"
        ]
        .map(String::from)
        .to_vec(),
        "{stages:?}"
    );
    let versions = details(&log, "version");
    assert_eq!(
        versions.first().map(|d| field(d, "current")),
        Some("0".into())
    );
    assert_eq!(
        versions.last().map(|d| field(d, "current")),
        Some("2".into())
    );
    let last_progress = details(&log, "progress").pop().expect("progress events");
    assert_eq!(field(&last_progress, "confirmed"), 98_304);
    assert_eq!(field(&last_progress, "total"), 98_304);
    assert_eq!(count(&log, "done"), 1);

    let stats = radio_stats(&bluetooth);
    assert_eq!(
        field(&stats, "overlapped"),
        0,
        "one GATT operation at a time"
    );
    assert_eq!(field(&stats, "restarts"), 1);
    updater.close();
}

#[wasm_bindgen_test]
async fn disconnects_mid_transfer_resume_to_the_same_image() {
    // Lost packets are recovered by deadlines, seconds each in real time: the native
    // simulator (tests/gadget_sim.rs) covers them on a virtual clock. Here: dropped links.
    let disconnects = js_sys::Array::of2(&120.into(), &260.into());
    let (gadget, bluetooth) = demo(fast_radio(&[("disconnectAfterWrites", disconnects.into())]));
    let updater = Updater::connect_gadget(JsValue::UNDEFINED)
        .await
        .expect("connects");
    let log = record(&updater, &["reconnecting", "connected"]);
    let options = object(&[("segmentSize", 8192.into())]);
    let result = settle(updater.update(&image("app-v2.bin"), options))
        .await
        .expect("survives the drops");
    assert_eq!(field(&result, "outcome"), "done");
    assert_eq!(field(&gadget, "activeVersion"), 2);
    assert_eq!(field(&gadget, "activeSha256"), APP_V2_SHA256);
    let stats = radio_stats(&bluetooth);
    // Two injected drops and the restart.
    assert_eq!(field(&stats, "disconnects"), 3);
    assert!(
        count(&log, "reconnecting") >= 3,
        "{}",
        count(&log, "reconnecting")
    );
    assert_eq!(field(&stats, "overlapped"), 0);
    updater.close();
}

#[wasm_bindgen_test]
async fn stage_only_then_apply_and_a_lower_version_is_refused() {
    let (gadget, _bluetooth) = demo(fast_radio(&[]));
    let updater = Updater::connect_gadget(JsValue::UNDEFINED)
        .await
        .expect("connects");
    let checked =
        settle(updater.update(&image("app-v1.bin"), object(&[("checkOnly", true.into())])))
            .await
            .expect("checks");
    assert_eq!(field(&checked, "outcome"), "update-available");
    assert_eq!(field(&checked, "current"), "0");
    assert_eq!(field(&checked, "offered"), "1");
    assert_eq!(field(&gadget, "stagedBytes"), 0, "a check sends no segment");

    let staged =
        settle(updater.update(&image("app-v1.bin"), object(&[("stageOnly", true.into())])))
            .await
            .expect("stages");
    assert_eq!(field(&staged, "outcome"), "staged");
    assert_eq!(
        field(&gadget, "activeVersion"),
        0,
        "staging does not switch"
    );
    assert_eq!(field(&gadget, "stagedBytes"), 49_152);

    let done = settle(updater.apply()).await.expect("applies");
    assert_eq!(field(&done, "outcome"), "done");
    assert_eq!(field(&gadget, "activeVersion"), 1);

    let up_to_date = settle(updater.update(&image("app-v1.bin"), JsValue::UNDEFINED))
        .await
        .expect("finishes");
    assert_eq!(field(&up_to_date, "outcome"), "up-to-date");
    assert_eq!(field(&up_to_date, "current"), "1");

    let busy = settle(updater.apply()).await.expect_err("nothing staged");
    assert_eq!(field(&busy, "name"), "OtawebError");
    assert_eq!(field(&busy, "code"), "wrong-state");
    updater.close();
}

#[wasm_bindgen_test]
async fn no_bluetooth_and_bad_options_are_typed_errors() {
    let (_gadget, _bluetooth) = demo(fast_radio(&[]));
    let updater = Updater::connect_gadget(JsValue::UNDEFINED)
        .await
        .expect("connects");
    let error =
        settle(updater.update(&image("app-v2.bin"), object(&[("segmentSize", 0.5.into())])))
            .await
            .expect_err("refused");
    assert_eq!(field(&error, "code"), "invalid-argument");
    let dfu = VerifiedImage::dfu_package(
        fixture!("dfu/ctrl_packet.bin"),
        js_sys::Array::of1(&object(&[
            ("imgId", 0.into()),
            (
                "bytes",
                js_sys::Uint8Array::from(&fixture!("dfu/hcpu.transfer.bin")[..]).into(),
            ),
        ])),
        None,
    )
    .expect("a DFU package");
    let error = settle(updater.update(&dfu, JsValue::UNDEFINED))
        .await
        .expect_err("a DFU package is not for a gadget");
    assert_eq!(field(&error, "code"), "wrong-image");
    updater.close();

    let refusing = object(&[(
        "bluetooth",
        object(&[(
            "requestDevice",
            Function::new_no_args("return Promise.reject(new DOMException('User cancelled the requestDevice() chooser.', 'NotFoundError'))").into(),
        )]),
    )]);
    let error = match Updater::connect_gadget(refusing).await {
        Ok(_) => panic!("a cancelled chooser must not connect"),
        Err(e) => e,
    };
    assert_eq!(field(&error, "code"), "no-device");
    assert_eq!(field(&error, "kind"), "link-lost");
    let message = field(&error, "message").as_string().unwrap();
    assert!(message.contains("User cancelled"), "{message}");
}
