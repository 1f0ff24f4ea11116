//! SiFli DFU updates in a real browser: the `Updater`'s Web Bluetooth code against the demo
//! DFU device (the companion firmware's user bin and OTA manager, compiled into this wasm)
//! behind the `navigator.bluetooth` stand-in of `www/demo-bluetooth.js`, reboot and
//! reconnection included. Only the radio is simulated.
#![cfg(target_arch = "wasm32")]

#[macro_use]
mod common;

use js_sys::{Array, Function, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

use otaweb::image::digest::{sha256, to_hex};
use otaweb::web::{Updater, VerifiedImage};
use otaweb_demo_device::DemoDfuDevice;

use common::web::{count, details, field, install, object, radio_stats, record};

wasm_bindgen_test_configure!(run_in_browser);

/// A fresh demo DFU device behind a freshly installed SiFli stand-in.
fn demo(extra: &[(&str, JsValue)]) -> (JsValue, JsValue) {
    let device: JsValue = DemoDfuDevice::new(None).expect("demo device").into();
    let mut pairs = vec![
        ("profile", "sifli".into()),
        ("intervalMs", 1.into()),
        ("packetsPerEvent", 8.into()),
        ("rebootMs", 50.into()),
        ("tickMs", 20.into()),
    ];
    pairs.extend_from_slice(extra);
    let bluetooth = install(&device, &object(&pairs));
    (device, bluetooth)
}

fn package(hcpu: &[u8]) -> VerifiedImage {
    let item = |id: u8, bytes: &[u8]| {
        object(&[
            ("imgId", id.into()),
            ("bytes", Uint8Array::from(bytes).into()),
        ])
    };
    let images = Array::of3(
        &item(0, hcpu),
        &item(3, fixture!("dfu/res.transfer.bin")),
        &item(4, fixture!("dfu/font.transfer.bin")),
    );
    VerifiedImage::dfu_package(fixture!("dfu/ctrl_packet.bin"), images, None).expect("package")
}

/// SHA-256 of an image as a partition holds it: zero-padded to 16 bytes.
fn installed(image: &[u8]) -> String {
    let mut padded = image.to_vec();
    padded.resize(image.len().next_multiple_of(16), 0);
    to_hex(&sha256(&padded))
}

fn partition(device: &JsValue, id: u8) -> JsValue {
    field(device, "partitionSha256")
        .unchecked_into::<Function>()
        .call1(device, &id.into())
        .expect("reads the flash")
}

#[wasm_bindgen_test]
async fn full_dfu_update_reboots_into_the_ota_manager_and_installs() {
    let (device, bluetooth) = demo(&[]);
    let updater = Updater::connect_dfu(JsValue::UNDEFINED)
        .await
        .expect("connects through navigator.bluetooth");
    assert_eq!(updater.device_name().as_deref(), Some("otaweb demo SiFli"));
    let log = record(&updater, &["stage", "rebooting", "progress", "done"]);

    let result = JsFuture::from(updater.update(
        &package(fixture!("dfu/hcpu.transfer.bin")),
        JsValue::UNDEFINED,
    ))
    .await
    .expect("installs");
    assert_eq!(field(&result, "outcome"), "done");

    assert_eq!(field(&device, "mode"), "user-bin");
    assert_eq!(partition(&device, 0), installed(fixture!("dfu/hcpu.bin")));
    assert_eq!(partition(&device, 3), installed(fixture!("dfu/res.bin")));
    assert_eq!(partition(&device, 4), installed(fixture!("dfu/font.bin")));
    assert_eq!(
        field(&device, "restarts"),
        2,
        "into the OTA manager and back"
    );

    let stages: Vec<String> = details(&log, "stage")
        .iter()
        .map(|d| field(d, "stage").as_string().unwrap())
        .collect();
    assert_eq!(stages, ["init", "reboot", "transfer", "install"]);
    assert_eq!(count(&log, "rebooting"), 1);
    let total = (fixture!("dfu/hcpu.transfer.bin").len()
        + fixture!("dfu/res.transfer.bin").len()
        + fixture!("dfu/font.transfer.bin").len()) as f64;
    let last = details(&log, "progress").pop().expect("progress");
    assert_eq!(field(&last, "confirmed"), total);
    assert_eq!(field(&last, "total"), total);
    let stats = radio_stats(&bluetooth);
    assert_eq!(
        field(&stats, "overlapped"),
        0,
        "one GATT operation at a time"
    );
    updater.close();
}

#[wasm_bindgen_test]
async fn a_drop_mid_image_resumes_and_a_tampered_image_is_refused() {
    let (device, _bluetooth) = demo(&[("disconnectAfterWrites", Array::of1(&120.into()).into())]);
    let updater = Updater::connect_dfu(JsValue::UNDEFINED)
        .await
        .expect("connects");
    let log = record(&updater, &["resuming"]);
    let result = JsFuture::from(updater.update(
        &package(fixture!("dfu/hcpu.transfer.bin")),
        JsValue::UNDEFINED,
    ))
    .await
    .expect("resumes and installs");
    assert_eq!(field(&result, "outcome"), "done");
    assert_eq!(log.borrow().len(), 1, "resumed once");
    assert_eq!(partition(&device, 0), installed(fixture!("dfu/hcpu.bin")));
    updater.close();

    let (device, _bluetooth) = demo(&[]);
    let before = partition(&device, 0);
    let updater = Updater::connect_dfu(JsValue::UNDEFINED)
        .await
        .expect("connects");
    let error = JsFuture::from(updater.update(
        &package(fixture!("dfu/hcpu.tampered.transfer.bin")),
        JsValue::UNDEFINED,
    ))
    .await
    .expect_err("refused");
    assert_eq!(field(&error, "code"), "DFU_ERR_FW_INVALID");
    assert_eq!(field(&error, "vendorCode"), 8);
    assert_eq!(partition(&device, 0), before, "nothing installed");
    updater.close();
}

#[wasm_bindgen_test]
async fn an_ota_manager_under_a_new_identity_is_picked_again() {
    let (device, _bluetooth) = demo(&[("newIdentityOnReboot", true.into())]);
    let updater = Updater::connect_dfu(JsValue::UNDEFINED)
        .await
        .expect("connects");
    // The page's part: when the updater says the device is lost, the person picks it again.
    let mut resolve_lost = None;
    let lost = js_sys::Promise::new(&mut |resolve, _| resolve_lost = Some(resolve));
    let resolve_lost = resolve_lost.expect("resolver");
    let listener = Closure::<dyn FnMut(web_sys::CustomEvent)>::new(move |_| {
        let _ = resolve_lost.call0(&JsValue::UNDEFINED);
    });
    updater
        .add_event_listener("device-lost", listener.as_ref().unchecked_ref())
        .expect("listener");
    listener.forget();

    let update = updater.update(
        &package(fixture!("dfu/hcpu.transfer.bin")),
        JsValue::UNDEFINED,
    );
    JsFuture::from(lost)
        .await
        .expect("the old identity never reconnects");
    JsFuture::from(updater.pick_device())
        .await
        .expect("the OTA manager is found again");
    assert_eq!(
        updater.device_name().as_deref(),
        Some("SIFLI_APP-0-1-2-3-4-5")
    );
    let result = JsFuture::from(update).await.expect("installs");
    assert_eq!(field(&result, "outcome"), "done");
    assert_eq!(partition(&device, 0), installed(fixture!("dfu/hcpu.bin")));
    updater.close();
}
