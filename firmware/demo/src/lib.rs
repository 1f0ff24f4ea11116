//! The companion firmware compiled to wasm: the page's built-in demo device.
//!
//! Contract. [`DemoGadget`] is the real [`Gadget`] responder on a simulated NOR flash of
//! 3 MiB + 8 KiB (4 KiB sectors: the two index sectors, a 1 MiB factory region and the
//! image database's default two 1 MiB download slots, so updates alternate between them
//! for good and an image may be up to 1 MiB; the constructor's `slotSize` makes the region
//! and slots larger, for benchmarks of bigger images), wrapped for JavaScript. It knows nothing of
//! Web Bluetooth: `www/demo-bluetooth.js` puts the `navigator.bluetooth` surface in front of
//! it and plays the radio, calling [`DemoGadget::connect`] when notifications are enabled,
//! [`DemoGadget::write`] for each value written to TX, and notifying what
//! [`DemoGadget::take_notifications`] returns on RX. When [`DemoGadget::take_restart`] says
//! so, the stand-in drops the link and calls [`DemoGadget::restart`], which runs the boot
//! decision on the flash exactly as a power cycle would.
//!
//! The device starts from a factory image at OTA version 0, as Amazon's prerequisites
//! require of a new gadget. Its flash can be saved ([`DemoGadget::flash_image`]) and powered
//! on again later ([`DemoGadget::from_flash`]), as a page that keeps the device across
//! reloads does: what was staged is still staged, and an apply can still switch to it.
//!
//! [`DemoDfuDevice`] is the same for the SiFli DFU device ([`DfuDevice`]): user bin and OTA
//! manager on a 128 KiB flash with factory firmware, resource and font images, and the
//! repository's test keys (firmware-fixtures/files/keys/dfu-test-*), so the fixture package
//! installs. It has timers of its own (the OTA manager's 30 s window): the stand-in calls
//! [`DemoDfuDevice::tick`] with the page's clock, and every other call uses the latest tick.
#![forbid(unsafe_code)]

use otaweb::image::digest::to_hex;
use otaweb::image::sifli::{ImageId, PublicKey};
use otaweb::time::Millis;
use otaweb_firmware::dfu::{DfuConfig, DfuDevice, DfuDeviceEvent, DfuLayout, Mode};
use otaweb_firmware::flash::{Fixed, Geometry, SimFlash};
use otaweb_firmware::gadget::{Gadget, GadgetConfig, GadgetEvent};
use otaweb_firmware::slots::{DbConfig, Layout, Slots, DEFAULT_SLOTS};
use wasm_bindgen::prelude::*;

const SECTOR: u32 = 4096;
/// The factory region and each slot by default: 1 MiB, the largest image the demo gadget
/// takes unless its constructor is given a `slotSize`.
const SLOT_SIZE: u32 = 256 * SECTOR;
/// The image database's default: two download slots besides the factory region.
const SLOTS: u8 = DEFAULT_SLOTS;
const FACTORY_SIZE: usize = 24 * 1024;

type Flash = Fixed<4, 4096>;

/// The flash layout with `slot_size`-byte factory region and slots.
const fn layout(slot_size: u32) -> Layout {
    Layout {
        base: 0,
        erase_size: SECTOR,
        write_size: 4,
        slot_size,
    }
}
/// The largest `slotSize`: the flash (three of them) must fit in the demo's wasm memory.
const MAX_SLOT_SIZE: u32 = 16 << 20;

/// The demo gadget: see the crate docs.
#[wasm_bindgen]
pub struct DemoGadget {
    gadget: Option<Gadget<Flash>>,
    layout: Layout,
    config: GadgetConfig,
    restart_pending: bool,
    restarts: u32,
}

#[wasm_bindgen]
impl DemoGadget {
    /// A factory-fresh gadget. `packetSize` (8–512, default 244) and `maxTransactionSize`
    /// (default 5000) are what its PV packet announces; `name` its advertised name;
    /// `slotSize` the bytes of the factory region and of each slot, a multiple of 4096
    /// (default 1 MiB), so the flash holds three times that plus 8 KiB.
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(js_name = packetSize)] packet_size: Option<u16>,
        #[wasm_bindgen(js_name = maxTransactionSize)] max_transaction_size: Option<u16>,
        name: Option<String>,
        #[wasm_bindgen(js_name = slotSize)] slot_size: Option<u32>,
    ) -> Result<DemoGadget, JsError> {
        let slot_size = slot_size.unwrap_or(SLOT_SIZE);
        if slot_size > MAX_SLOT_SIZE {
            return Err(JsError::new("the demo gadget's slots are at most 16 MiB"));
        }
        let layout = layout(slot_size);
        // The window and nothing more: two index sectors, the factory region and the slots.
        let capacity = usize::try_from(layout.window_len(SLOTS))
            .map_err(|_| JsError::new("the slot size is too large"))?;
        let mut flash = Flash::new(capacity).map_err(|e| JsError::new(&e.to_string()))?;
        slots(layout, &flash)?
            .provision(&mut flash, &factory_image())
            .map_err(|e| JsError::new(&e.to_string()))?;
        DemoGadget::power_on(flash, layout, packet_size, max_transaction_size, name)
    }

    /// A gadget powered on with the flash [`DemoGadget::flash_image`] saved, through the
    /// boot decision (its length gives the slot size); the other arguments as for the
    /// constructor.
    #[wasm_bindgen(js_name = fromFlash)]
    pub fn from_flash(
        flash: &[u8],
        #[wasm_bindgen(js_name = packetSize)] packet_size: Option<u16>,
        #[wasm_bindgen(js_name = maxTransactionSize)] max_transaction_size: Option<u16>,
        name: Option<String>,
    ) -> Result<DemoGadget, JsError> {
        // The window is two index sectors and SLOTS + 1 equal regions.
        let slot_size = flash.len().saturating_sub(2 * SECTOR as usize) / (usize::from(SLOTS) + 1);
        let layout = layout(u32::try_from(slot_size).unwrap_or(u32::MAX));
        let geometry = Geometry {
            capacity: flash.len(),
            erase_size: SECTOR as usize,
            write_size: 4,
        };
        let sim =
            SimFlash::from_image(geometry, flash).map_err(|e| JsError::new(&e.to_string()))?;
        let flash = Flash::wrap(sim).map_err(|e| JsError::new(&e.to_string()))?;
        DemoGadget::power_on(flash, layout, packet_size, max_transaction_size, name)
    }

    /// The flash's bytes, to keep the device across page loads ([`DemoGadget::from_flash`]).
    #[wasm_bindgen(js_name = flashImage)]
    pub fn flash_image(&self) -> Vec<u8> {
        self.gadget
            .as_ref()
            .map(|g| g.flash().sim().contents().to_vec())
            .unwrap_or_default()
    }

    /// The name the device advertises.
    #[wasm_bindgen(getter)]
    pub fn name(&self) -> String {
        self.config.name.clone()
    }

    /// The central enabled notifications on RX: the gadget queues its PV packet.
    pub fn connect(&mut self) {
        if let Some(g) = self.gadget.as_mut() {
            g.handle_connected(now());
        }
    }

    /// The link dropped.
    pub fn disconnect(&mut self) {
        if let Some(g) = self.gadget.as_mut() {
            g.handle_disconnected(now());
        }
    }

    /// One value the central wrote to TX.
    pub fn write(&mut self, bytes: &[u8]) {
        let Some(g) = self.gadget.as_mut() else {
            return;
        };
        g.handle_write(now(), bytes);
        while let Some(event) = g.poll_event() {
            match event {
                GadgetEvent::RestartRequested { .. } => self.restart_pending = true,
            }
        }
    }

    /// The values to notify on RX, in order.
    #[wasm_bindgen(js_name = takeNotifications)]
    pub fn take_notifications(&mut self) -> Vec<js_sys::Uint8Array> {
        let mut out = Vec::new();
        if let Some(g) = self.gadget.as_mut() {
            let mut buf = Vec::new();
            while let Some(len) = g.poll_notify(&mut buf) {
                out.push(js_sys::Uint8Array::from(&buf[..len]));
                buf.clear();
            }
        }
        out
    }

    /// Whether the gadget asked to restart (after a successful ApplyFirmware); asking clears it.
    #[wasm_bindgen(js_name = takeRestart)]
    pub fn take_restart(&mut self) -> bool {
        core::mem::take(&mut self.restart_pending)
    }

    /// Restarts: the boot decision on the flash, then a new gadget from it.
    pub fn restart(&mut self) -> Result<(), JsError> {
        let flash = self
            .gadget
            .take()
            .ok_or_else(|| JsError::new("the demo gadget failed to boot"))?
            .into_flash();
        self.boot(flash)
    }

    /// The OTA version that runs.
    #[wasm_bindgen(getter, js_name = activeVersion)]
    pub fn active_version(&self) -> u32 {
        self.gadget.as_ref().map_or(0, |g| g.active().version)
    }

    /// Lowercase hex SHA-256 of the image that runs, as its state records it.
    #[wasm_bindgen(getter, js_name = activeSha256)]
    pub fn active_sha256(&self) -> String {
        self.gadget
            .as_ref()
            .map(|g| to_hex(&g.active().sha256))
            .unwrap_or_default()
    }

    /// Lowercase hex SHA-256 of the active slot's bytes read back from the flash.
    #[wasm_bindgen(js_name = readBackSha256)]
    pub fn read_back_sha256(&mut self) -> Result<String, JsError> {
        let g = self
            .gadget
            .as_mut()
            .ok_or_else(|| JsError::new("the demo gadget failed to boot"))?;
        let active = g.active();
        let digest = slots(self.layout, g.flash())?
            .image_digest(g.flash_mut(), active.slot, active.size)
            .map_err(|e| JsError::new(&e.to_string()))?;
        Ok(to_hex(&digest))
    }

    /// Bytes of a component held in its slot, as the image database records them.
    #[wasm_bindgen(getter, js_name = stagedBytes)]
    pub fn staged_bytes(&self) -> u32 {
        self.gadget
            .as_ref()
            .and_then(|g| g.staged())
            .map_or(0, |(_, held)| held)
    }

    /// How many times the gadget restarted.
    #[wasm_bindgen(getter)]
    pub fn restarts(&self) -> u32 {
        self.restarts
    }
}

impl DemoGadget {
    /// Powers `flash` on: the boot decision, then the gadget (restart count 0).
    fn power_on(
        flash: Flash,
        layout: Layout,
        packet_size: Option<u16>,
        max_transaction_size: Option<u16>,
        name: Option<String>,
    ) -> Result<DemoGadget, JsError> {
        let mut config = GadgetConfig {
            database: database(),
            ..GadgetConfig::default()
        };
        if let Some(p) = packet_size {
            config.packet_size = p;
        }
        if let Some(t) = max_transaction_size {
            config.max_transaction_size = t;
        }
        if let Some(n) = name {
            config.name = n;
        }
        let mut demo = DemoGadget {
            gadget: None,
            layout,
            config,
            restart_pending: false,
            restarts: 0,
        };
        demo.boot(flash)?;
        demo.restarts = 0;
        Ok(demo)
    }

    fn boot(&mut self, mut flash: Flash) -> Result<(), JsError> {
        slots(self.layout, &flash)?
            .boot(&mut flash)
            .map_err(|e| JsError::new(&e.to_string()))?;
        self.gadget = Some(
            Gadget::new(flash, self.layout, self.config.clone())
                .map_err(|e| JsError::new(&e.to_string()))?,
        );
        self.restarts += 1;
        Ok(())
    }
}

/// The demo gadget's image database: [`SLOTS`] download slots, no trusted key (AGT carries
/// none).
fn database() -> DbConfig {
    DbConfig {
        slots: SLOTS,
        trusted_key: None,
    }
}

/// The image database of `layout` on `flash`.
fn slots(layout: Layout, flash: &Flash) -> Result<Slots, JsError> {
    Slots::with_config(layout, database(), flash).map_err(|e| JsError::new(&e.to_string()))
}

/// The gadget keeps no timers, so its clock never matters (see `otaweb_firmware::gadget`).
fn now() -> Millis {
    Millis::ZERO
}

/// Deterministic factory image bytes.
fn factory_image() -> Vec<u8> {
    (0..FACTORY_SIZE)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect()
}

const DFU_ROOT_KEY: &[u8; 32] =
    include_bytes!("../../../firmware-fixtures/files/keys/dfu-test-root-key.bin");
const DFU_UID: &[u8; 16] = include_bytes!("../../../firmware-fixtures/files/keys/dfu-test-uid.bin");
const DFU_PUBLIC_KEY: &[u8] =
    include_bytes!("../../../firmware-fixtures/files/keys/dfu-test-signing-key.pub.der");
/// The SDK version the fixture package asks for (its `sdk_version`).
const DFU_SDK_VERSION: u32 = 2_003_000;
const DFU_FLASH_SIZE: usize = 128 * 1024;
/// What the OTA manager advertises (§1: `SIFLI_APP-` and the address bytes).
const OTA_MANAGER_NAME: &str = "SIFLI_APP-0-1-2-3-4-5";

fn dfu_config() -> Result<DfuConfig, JsError> {
    Ok(DfuConfig {
        root_key: *DFU_ROOT_KEY,
        public_key: PublicKey::from_spki_der(DFU_PUBLIC_KEY)
            .map_err(|e| JsError::new(&e.to_string()))?,
        uid: *DFU_UID,
        sdk_version: DFU_SDK_VERSION,
        max_value_size: 244,
        layout: DfuLayout::SMALL,
    })
}

/// The SiFli demo device: see the crate docs.
#[wasm_bindgen]
pub struct DemoDfuDevice {
    device: DfuDevice<Flash>,
    name: String,
    now: Millis,
    restart_pending: bool,
    restarts: u32,
}

#[wasm_bindgen]
impl DemoDfuDevice {
    /// A factory-fresh device in its user bin, advertising `name`.
    #[wasm_bindgen(constructor)]
    pub fn new(name: Option<String>) -> Result<DemoDfuDevice, JsError> {
        let config = dfu_config()?;
        let mut flash = Flash::new(DFU_FLASH_SIZE).map_err(|e| JsError::new(&e.to_string()))?;
        let firmware = factory_image();
        let resource = vec![0x5A; 8 * 1024];
        let font = vec![0xA5; 4 * 1024];
        DfuDevice::provision(&mut flash, &config, [&firmware, &resource, &font])
            .map_err(|e| JsError::new(&alloc_debug(&e)))?;
        let device = DfuDevice::new(flash, config, Millis::ZERO)
            .map_err(|e| JsError::new(&alloc_debug(&e)))?;
        Ok(DemoDfuDevice {
            device,
            name: name.unwrap_or_else(|| "otaweb demo SiFli".into()),
            now: Millis::ZERO,
            restart_pending: false,
            restarts: 0,
        })
    }

    /// The name advertised now: the OTA manager has its own.
    #[wasm_bindgen(getter)]
    pub fn name(&self) -> String {
        match self.device.mode() {
            Mode::OtaManager => OTA_MANAGER_NAME.into(),
            _ => self.name.clone(),
        }
    }

    /// `"user-bin"` or `"ota-manager"`.
    #[wasm_bindgen(getter)]
    pub fn mode(&self) -> String {
        match self.device.mode() {
            Mode::OtaManager => "ota-manager".into(),
            _ => "user-bin".into(),
        }
    }

    /// The page's clock (ms): the device's timers run on it.
    pub fn tick(&mut self, now_ms: f64) {
        self.now = Millis(now_ms.max(0.0) as u64);
        if self.device.poll_timeout().is_some_and(|t| self.now >= t) {
            self.device.handle_timeout(self.now);
            self.take_events();
        }
    }

    /// The central enabled notifications.
    pub fn connect(&mut self) {
        self.device.handle_connected(self.now);
    }

    /// The link dropped.
    pub fn disconnect(&mut self) {
        self.device.handle_disconnected(self.now);
        self.take_events();
    }

    /// One value the central wrote to the data characteristic.
    pub fn write(&mut self, bytes: &[u8]) {
        self.device.handle_write(self.now, bytes);
        self.take_events();
    }

    /// The values to notify, in order.
    #[wasm_bindgen(js_name = takeNotifications)]
    pub fn take_notifications(&mut self) -> Vec<js_sys::Uint8Array> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while let Some(len) = self.device.poll_notify(&mut buf) {
            out.push(js_sys::Uint8Array::from(&buf[..len]));
            buf.clear();
        }
        out
    }

    /// Whether the device asked to reboot; asking clears it.
    #[wasm_bindgen(js_name = takeRestart)]
    pub fn take_restart(&mut self) -> bool {
        core::mem::take(&mut self.restart_pending)
    }

    /// Reboots: the boot decision on the flash.
    pub fn restart(&mut self) {
        self.restarts += 1;
        self.device.restart(self.now);
        self.take_events();
    }

    /// How many times the device rebooted.
    #[wasm_bindgen(getter)]
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Lowercase hex SHA-256 of what partition `img_id` (0 firmware, 3 resources, 4 fonts)
    /// holds, decrypted where it is stored encrypted.
    #[wasm_bindgen(js_name = partitionSha256)]
    pub fn partition_sha256(&mut self, img_id: u8) -> Option<String> {
        self.device
            .partition_digest(ImageId(img_id))
            .map(|d| to_hex(&d))
    }
}

impl DemoDfuDevice {
    fn take_events(&mut self) {
        while let Some(DfuDeviceEvent::RestartRequested) = self.device.poll_event() {
            self.restart_pending = true;
        }
    }
}

fn alloc_debug(value: &impl core::fmt::Debug) -> String {
    format!("{value:?}")
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    const LAYOUT: Layout = layout(SLOT_SIZE);
    const FLASH_SIZE: usize = LAYOUT.window_len(SLOTS) as usize;

    #[test]
    fn a_saved_flash_powers_on_with_what_was_staged() {
        let mut demo = DemoGadget::new(None, None, None, None).unwrap();
        let mut flash = demo.gadget.take().unwrap().into_flash();
        let db = slots(LAYOUT, &flash).unwrap();
        let slot = db
            .begin_download(&mut flash, "app")
            .unwrap()
            .download()
            .unwrap()
            .slot;
        db.download(&mut flash, slot, 0, &[0x5A; 10_000]).unwrap();
        demo.boot(flash).unwrap();

        let saved = demo.flash_image();
        assert_eq!(saved.len(), FLASH_SIZE);
        let again = DemoGadget::from_flash(&saved, None, None, Some("again".into())).unwrap();
        assert_eq!(again.staged_bytes(), 10_000);
        assert_eq!(again.active_version(), 0);
        assert_eq!(again.restarts(), 0);
        assert_eq!(again.name(), "again");
        assert_eq!(again.flash_image(), saved);
    }

    #[test]
    fn a_larger_slot_size_takes_a_larger_image_and_survives_a_saved_flash() {
        let slot = 2 * SLOT_SIZE;
        let mut demo = DemoGadget::new(None, None, None, Some(slot)).unwrap();
        let layout = demo.layout;
        assert_eq!(layout.slot_size, slot);
        let mut flash = demo.gadget.take().unwrap().into_flash();
        let db = slots(layout, &flash).unwrap();
        let at = db
            .begin_download(&mut flash, "app")
            .unwrap()
            .download()
            .unwrap()
            .slot;
        db.download(&mut flash, at, 0, &vec![0x5A; slot as usize])
            .unwrap();
        demo.boot(flash).unwrap();
        let saved = demo.flash_image();
        assert_eq!(saved.len(), 3 * slot as usize + 8 * 1024);
        let again = DemoGadget::from_flash(&saved, None, None, None).unwrap();
        assert_eq!(again.layout, layout);
        assert_eq!(again.staged_bytes(), slot);
    }

    #[test]
    fn a_1_mib_image_installs_and_updates_follow_one_another() {
        assert_eq!(FLASH_SIZE, 3 * 1024 * 1024 + 8 * 1024);
        let demo = DemoGadget::new(None, None, None, None).unwrap();
        let mut flash = demo.gadget.unwrap().into_flash();
        let db = slots(LAYOUT, &flash).unwrap();
        assert_eq!(db.slot_count(), 2);
        let big = vec![0xA5; SLOT_SIZE as usize];
        for version in 1..=3u32 {
            let bytes = if version == 1 {
                big.clone()
            } else {
                vec![version as u8; 5000]
            };
            let slot = db
                .begin_download(&mut flash, "app")
                .unwrap()
                .download()
                .unwrap()
                .slot;
            db.download(&mut flash, slot, 0, &bytes).unwrap();
            let meta = otaweb_firmware::slots::ImageMeta {
                version,
                size: bytes.len() as u32,
                sha256: otaweb::image::digest::sha256(&bytes),
                signature: None,
            };
            db.finish_download(&mut flash, slot, meta).unwrap();
            db.verify(&mut flash, slot).unwrap();
            db.apply(&mut flash, slot).unwrap();
            db.boot(&mut flash).unwrap();
            let state = db.confirm(&mut flash).unwrap();
            assert_eq!(
                (state.active.version, state.active.size),
                (version, meta.size)
            );
        }
        // The factory image is still there.
        let state = db.state(&mut flash).unwrap();
        let factory = state.images[0];
        assert_eq!(factory.size as usize, FACTORY_SIZE);
        assert_eq!(
            db.image_digest(&mut flash, factory.slot, factory.size),
            Ok(factory.sha256)
        );
    }
}
