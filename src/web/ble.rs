//! A Web Bluetooth GATT link: one device, one characteristic written without response, one
//! characteristic whose notifications come back.
//!
//! Contract. [`GattLink`] only moves bytes and reports the link; it decides nothing. It owns
//! its two event listeners (`characteristicvaluechanged` on the notify characteristic,
//! `gattserverdisconnected` on the device) and, when the last handle is dropped, removes them
//! and disconnects GATT, so a page that drops an updater leaves no callback behind.
//!
//! Writes: the browser allows one GATT operation at a time per device; a second one started
//! before the first settles fails with "GATT operation already in progress". The link
//! therefore never queues: [`GattLink::write`] starts one write and returns its future, and
//! the caller awaits it before asking its flow for the next packet (the flow is the queue,
//! which is also the back-pressure).
//!
//! The link is driven through any object with the Web Bluetooth surface: `navigator.bluetooth`
//! or a stand-in with the same methods (the demo device). Objects are cast with
//! `unchecked_into`, never `dyn_into`, because a stand-in is a plain JavaScript object that
//! fails the `instanceof` checks of the real classes.

use alloc::rc::Rc;
use alloc::string::String;
use core::cell::RefCell;

use js_sys::{Function, JsString, Uint8Array};
use wasm_bindgen::prelude::*;

use crate::flow::Delivery;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Bluetooth, BluetoothDevice, BluetoothLeScanFilterInit, BluetoothRemoteGattCharacteristic,
    BluetoothRemoteGattServer, BluetoothRemoteGattService, Event, RequestDeviceOptions,
};

/// The GATT service and characteristics a flow talks through (lowercase 128-bit UUIDs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GattProfile {
    /// The primary service, also the `requestDevice` filter.
    pub service: &'static str,
    /// The characteristic the central writes without response.
    pub write: &'static str,
    /// The characteristic whose notifications the central receives (may be `write`).
    pub notify: &'static str,
    /// A name prefix the device may advertise without the service (a second chooser filter).
    pub name_prefix: Option<&'static str>,
}

/// Alexa Gadgets: service 0xFE03, TX (Echo → gadget) and RX (gadget → Echo) (`gadget.md` §1).
pub const GADGET_PROFILE: GattProfile = GattProfile {
    service: "0000fe03-0000-1000-8000-00805f9b34fb",
    write: "f04eb177-3005-43a7-ac61-a390ddf83076",
    notify: "2beea05b-1879-4bb4-8a2f-72641f82420b",
    name_prefix: None,
};

/// SiFli serial transport: one data characteristic both ways (`dfu.md` §1). The OTA manager
/// advertises its name, not the service, hence the name filter.
pub const DFU_PROFILE: GattProfile = GattProfile {
    service: crate::wire::sifli::SERVICE_UUID,
    write: crate::wire::sifli::DATA_CHARACTERISTIC_UUID,
    notify: crate::wire::sifli::DATA_CHARACTERISTIC_UUID,
    name_prefix: Some(crate::wire::sifli::ADVERTISED_NAME_PREFIX),
};

/// Asks the user to pick a device that advertises `profile`'s service (the browser's chooser,
/// or the stand-in's). `name_prefix` narrows the filter.
pub async fn request_device(
    bluetooth: &Bluetooth,
    profile: GattProfile,
    name_prefix: Option<&str>,
) -> Result<BluetoothDevice, JsValue> {
    let filter = BluetoothLeScanFilterInit::new();
    filter.set_services(&[JsString::from(profile.service)]);
    if let Some(prefix) = name_prefix {
        filter.set_name_prefix(prefix);
    }
    let mut filters = alloc::vec![filter];
    if let Some(prefix) = profile.name_prefix {
        let by_name = BluetoothLeScanFilterInit::new();
        by_name.set_name_prefix(name_prefix.unwrap_or(prefix));
        filters.push(by_name);
    }
    let options = RequestDeviceOptions::new();
    options.set_filters(&filters);
    // A device found by its name alone still exposes the service only if asked for.
    options.set_optional_services(&[JsString::from(profile.service)]);
    let device = JsFuture::from(bluetooth.request_device(&options)).await?;
    Ok(device.unchecked_into())
}

/// The two characteristics of an open link.
#[derive(Clone)]
struct Open {
    write: BluetoothRemoteGattCharacteristic,
    notify: BluetoothRemoteGattCharacteristic,
}

struct Inner {
    device: BluetoothDevice,
    profile: GattProfile,
    open: RefCell<Option<Open>>,
    on_value: Closure<dyn FnMut(Event)>,
    on_disconnect: Closure<dyn FnMut(Event)>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(open) = self.open.borrow_mut().take() {
            // Removing a listener that is not there, or disconnecting twice, is a no-op.
            let _ = open.notify.remove_event_listener_with_callback(
                "characteristicvaluechanged",
                self.on_value.as_ref().unchecked_ref(),
            );
        }
        let _ = self.device.remove_event_listener_with_callback(
            "gattserverdisconnected",
            self.on_disconnect.as_ref().unchecked_ref(),
        );
        if let Some(gatt) = self.device.gatt() {
            gatt.disconnect();
        }
    }
}

/// A handle on one device's GATT link; clones share it. See the module docs.
#[derive(Clone)]
pub struct GattLink(Rc<Inner>);

impl GattLink {
    /// Wraps `device`, calling `on_value` with each notification's bytes and `on_disconnect`
    /// when the device reports the link gone. Nothing is connected or listened to yet.
    pub fn new(
        device: BluetoothDevice,
        profile: GattProfile,
        mut on_value: impl FnMut(&[u8]) + 'static,
        mut on_disconnect: impl FnMut() + 'static,
    ) -> GattLink {
        let on_value = Closure::new(move |event: Event| {
            let value = event
                .target()
                .map(|t| t.unchecked_into::<BluetoothRemoteGattCharacteristic>())
                .and_then(|c| c.value());
            if let Some(view) = value {
                let bytes = Uint8Array::new_with_byte_offset_and_length(
                    &view.buffer(),
                    view.byte_offset() as u32,
                    view.byte_length() as u32,
                )
                .to_vec();
                on_value(&bytes);
            }
        });
        let on_disconnect = Closure::new(move |_: Event| on_disconnect());
        GattLink(Rc::new(Inner {
            device,
            profile,
            open: RefCell::new(None),
            on_value,
            on_disconnect,
        }))
    }

    /// The device's advertised name, if it has one.
    pub fn device_name(&self) -> Option<String> {
        self.0.device.name()
    }

    /// Whether GATT is connected now.
    pub fn is_connected(&self) -> bool {
        self.0.device.gatt().is_some_and(|g| g.connected())
    }

    /// Connects GATT (if it is not), finds the profile's characteristics and (re)starts
    /// notifications; a peer that announces itself when notifications are enabled (the
    /// gadget's PV packet) does so again. Resolves once notifications are on.
    pub async fn open(&self) -> Result<(), JsValue> {
        let inner = &self.0;
        // Adding the same listener twice is a no-op (DOM rule), so every open may add it.
        inner.device.add_event_listener_with_callback(
            "gattserverdisconnected",
            inner.on_disconnect.as_ref().unchecked_ref(),
        )?;
        let gatt = inner
            .device
            .gatt()
            .ok_or_else(|| JsValue::from_str("the device has no GATT server"))?;
        let gatt: BluetoothRemoteGattServer =
            JsFuture::from(gatt.connect()).await?.unchecked_into();
        let service: BluetoothRemoteGattService =
            JsFuture::from(gatt.get_primary_service_with_str(inner.profile.service))
                .await?
                .unchecked_into();
        let write: BluetoothRemoteGattCharacteristic =
            JsFuture::from(service.get_characteristic_with_str(inner.profile.write))
                .await?
                .unchecked_into();
        let notify: BluetoothRemoteGattCharacteristic =
            JsFuture::from(service.get_characteristic_with_str(inner.profile.notify))
                .await?
                .unchecked_into();
        let listener: &Function = inner.on_value.as_ref().unchecked_ref();
        let old = inner.open.borrow_mut().take();
        if let Some(old) = old {
            let _ = old
                .notify
                .remove_event_listener_with_callback("characteristicvaluechanged", listener);
            // A browser may skip the CCCD write when notifications are already on; turning
            // them off first makes the peer see them enabled again. On a fresh connection
            // this fails harmlessly.
            let _ = JsFuture::from(old.notify.stop_notifications()).await;
        }
        // The listener goes on before notifications start: the first value may arrive
        // before startNotifications resolves.
        notify.add_event_listener_with_callback("characteristicvaluechanged", listener)?;
        *inner.open.borrow_mut() = Some(Open {
            write,
            notify: notify.clone(),
        });
        JsFuture::from(notify.start_notifications()).await?;
        Ok(())
    }

    /// Starts one write of `bytes` and returns its completion; the caller awaits it before
    /// the next write (see the module docs). `delivery` picks write without response, or with
    /// response where a flow wants the peer's link layer to confirm (and to pace the OS queue
    /// that some stacks overflow silently).
    pub fn write(
        &self,
        bytes: &[u8],
        delivery: Delivery,
    ) -> Result<JsFuture<js_sys::Undefined>, JsValue> {
        let open = self
            .0
            .open
            .borrow()
            .clone()
            .ok_or_else(|| JsValue::from_str("the link is not open"))?;
        let promise = match delivery {
            Delivery::WithoutResponse => open
                .write
                .write_value_without_response_with_u8_slice(bytes)?,
            Delivery::WithResponse => open.write.write_value_with_response_with_u8_slice(bytes)?,
        };
        Ok(JsFuture::from(promise))
    }

    /// Disconnects GATT; the device then reports `gattserverdisconnected`.
    pub fn disconnect(&self) {
        if let Some(gatt) = self.0.device.gatt() {
            gatt.disconnect();
        }
    }
}

/// The depth of a dropping OS write queue in values: how many writes without response
/// CoreBluetooth (macOS) and WinRT (Windows) take before they drop the rest silently
/// (radar 20394802, overflow at about 20; trezor-suite PR #20704); BlueZ and Android hold
/// writes back instead, 0.
pub const DROPPING_QUEUE_DEPTH: u16 = 20;

/// The OS write queue under `navigator.bluetooth` on this platform: [`DROPPING_QUEUE_DEPTH`]
/// where it drops, 0 where it holds writes back.
pub fn os_queue_depth() -> u16 {
    let navigator = navigator();
    let read = |object: Option<JsValue>, key: &str| {
        object.and_then(|o| js_sys::Reflect::get(&o, &key.into()).ok()?.as_string())
    };
    // userAgentData (Chromium) names the OS; navigator.platform is the older spelling.
    let user_agent_data = navigator
        .clone()
        .and_then(|n| js_sys::Reflect::get(&n, &"userAgentData".into()).ok());
    let platform = read(user_agent_data, "platform")
        .filter(|p| !p.is_empty())
        .or_else(|| read(navigator, "platform"))
        .unwrap_or_default();
    queue_depth_of(&platform)
}

/// [`os_queue_depth`] for a platform name as `userAgentData.platform` ("macOS",
/// "Windows") or `navigator.platform` ("MacIntel", "Win32") spell it.
fn queue_depth_of(platform: &str) -> u16 {
    let p = platform.to_ascii_lowercase();
    if p.starts_with("mac") || p.starts_with("win") {
        DROPPING_QUEUE_DEPTH
    } else {
        0
    }
}

/// The global `navigator`, where there is one.
fn navigator() -> Option<JsValue> {
    js_sys::Reflect::get(&js_sys::global(), &"navigator".into()).ok()
}

/// `navigator.bluetooth`, if this browser has it.
pub fn navigator_bluetooth() -> Option<Bluetooth> {
    let bluetooth = js_sys::Reflect::get(&navigator()?, &"bluetooth".into()).ok()?;
    (!bluetooth.is_undefined() && !bluetooth.is_null()).then(|| bluetooth.unchecked_into())
}

#[cfg(test)]
mod tests {
    use super::{queue_depth_of, DROPPING_QUEUE_DEPTH};
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test]
    fn only_macos_and_windows_drop_queued_writes() {
        for dropping in ["macOS", "MacIntel", "Windows", "Win32", "win64"] {
            assert_eq!(queue_depth_of(dropping), DROPPING_QUEUE_DEPTH, "{dropping}");
        }
        for holding in ["Linux", "Linux x86_64", "Android", "Chrome OS", "CrOS", ""] {
            assert_eq!(queue_depth_of(holding), 0, "{holding}");
        }
    }
}
