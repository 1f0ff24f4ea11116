//! The SiFli side of the two-party simulator: the companion firmware's `DfuDevice` (user
//! bin and OTA manager) on a simulated flash as the [`Peripheral`], provisioned with factory
//! images distinct from the fixture package's, and the fixture files themselves.

use otaweb::flow::dfu::{DfuEvent, DfuUpdate};
use otaweb::image::sifli::{ImageId, PublicKey};
use otaweb::time::Millis;
use otaweb_firmware::dfu::{DfuConfig, DfuDevice, DfuDeviceEvent, DfuLayout};
use otaweb_firmware::flash::Fixed;

use super::{Peripheral, Update};

/// The part: 4-byte words, 4 KiB sectors.
pub type Flash = Fixed<4, 4096>;

/// The fixture package's signed ctrl packet.
pub const CTRL: &[u8] = include_bytes!("../../firmware-fixtures/files/dfu/ctrl_packet.bin");
/// The same ctrl packet with its signature broken.
pub const CTRL_BAD_SIG: &[u8] =
    include_bytes!("../../firmware-fixtures/files/dfu/ctrl_packet.bad-signature.bin");
/// The HCPU image as a transfer file (encrypted, compressed, in records).
pub const HCPU_T: &[u8] = include_bytes!("../../firmware-fixtures/files/dfu/hcpu.transfer.bin");
/// The HCPU transfer file with one byte of a record changed.
pub const HCPU_TAMPERED: &[u8] =
    include_bytes!("../../firmware-fixtures/files/dfu/hcpu.tampered.transfer.bin");
/// The resource image as a transfer file.
pub const RES_T: &[u8] = include_bytes!("../../firmware-fixtures/files/dfu/res.transfer.bin");
/// The font image as a transfer file.
pub const FONT_T: &[u8] = include_bytes!("../../firmware-fixtures/files/dfu/font.transfer.bin");
/// The HCPU image as it must land in its partition (before padding).
pub const HCPU: &[u8] = include_bytes!("../../firmware-fixtures/files/dfu/hcpu.bin");
/// The resource image as it must land.
pub const RES: &[u8] = include_bytes!("../../firmware-fixtures/files/dfu/res.bin");
/// The font image as it must land.
pub const FONT: &[u8] = include_bytes!("../../firmware-fixtures/files/dfu/font.bin");
/// The device's AES root key.
pub const ROOT_KEY: &[u8] =
    include_bytes!("../../firmware-fixtures/files/keys/dfu-test-root-key.bin");
/// The device's UID (the key derivation input).
pub const UID: &[u8] = include_bytes!("../../firmware-fixtures/files/keys/dfu-test-uid.bin");
/// The public half of the package signing key (SPKI DER).
pub const PUB_DER: &[u8] =
    include_bytes!("../../firmware-fixtures/files/keys/dfu-test-signing-key.pub.der");

/// One KiB.
pub const KIB: u32 = 1024;

/// A region of `size_kib` KiB at `base_kib` KiB.
/// The test device: §10 scaled down ([`DfuLayout::SMALL`]), the test keys.
pub fn config() -> DfuConfig {
    DfuConfig {
        root_key: ROOT_KEY.try_into().unwrap(),
        public_key: PublicKey::from_spki_der(PUB_DER).unwrap(),
        uid: UID.try_into().unwrap(),
        sdk_version: 2_003_000,
        max_value_size: 244,
        layout: DfuLayout::SMALL,
    }
}

/// The factory images: distinct from the package's.
pub fn factory() -> [Vec<u8>; 3] {
    [vec![0x11; 30_000], vec![0x22; 8_000], vec![0x33; 4_000]]
}

pub fn padded(image: &[u8]) -> Vec<u8> {
    let mut v = image.to_vec();
    v.resize(image.len().next_multiple_of(16), 0);
    v
}

pub fn provisioned_flash() -> Flash {
    let mut flash = Flash::new(128 * KIB as usize).unwrap();
    let [h, r, f] = factory();
    DfuDevice::provision(&mut flash, &config(), [&h, &r, &f]).unwrap();
    flash
}

/// The device as the simulator's peripheral; a restart is the event, taken as it comes.
pub struct Device {
    /// The firmware.
    pub dev: DfuDevice<Flash>,
    /// It asked to restart; the simulator takes the request.
    pub restart: bool,
    /// Restarts so far.
    pub boots: u32,
    /// Power cuts the device came back from.
    pub power_cuts: u32,
}

impl Device {
    /// The firmware booted from `flash`.
    pub fn new(flash: Flash) -> Self {
        Device {
            dev: DfuDevice::new(flash, config(), Millis::ZERO).unwrap(),
            restart: false,
            boots: 0,
            power_cuts: 0,
        }
    }

    /// Takes the firmware's events: a restart request is kept for the simulator.
    pub fn take(&mut self) {
        while let Some(DfuDeviceEvent::RestartRequested) = self.dev.poll_event() {
            self.restart = true;
        }
        if !self.dev.flash().sim().is_powered() {
            // A power cut takes the whole device down: nothing it queued goes out, it resets.
            let mut lost = Vec::new();
            while self.dev.poll_notify(&mut lost).is_some() {}
            self.restart = true;
        }
    }

    fn is_down(&self) -> bool {
        !self.dev.flash().sim().is_powered()
    }

    /// The HCPU, RES and FONT partitions' images.
    pub fn images(&mut self) -> [Vec<u8>; 3] {
        [ImageId::HCPU, ImageId::RES, ImageId::FONT].map(|id| self.dev.partition_image(id).unwrap())
    }
}

impl Peripheral for Device {
    fn handle_connected(&mut self, now: Millis) {
        self.dev.handle_connected(now);
    }
    fn handle_disconnected(&mut self, now: Millis) {
        self.dev.handle_disconnected(now);
        self.take();
    }
    fn handle_write(&mut self, now: Millis, bytes: &[u8]) {
        if self.is_down() {
            return;
        }
        self.dev.handle_write(now, bytes);
        self.take();
    }
    fn poll_notify(&mut self, buf: &mut Vec<u8>) -> Option<usize> {
        self.dev.poll_notify(buf)
    }
    fn poll_timeout(&self) -> Option<Millis> {
        if self.is_down() {
            return None;
        }
        self.dev.poll_timeout()
    }
    fn handle_timeout(&mut self, now: Millis) {
        if self.is_down() {
            return;
        }
        self.dev.handle_timeout(now);
        self.take();
    }
    fn take_restart_request(&mut self) -> bool {
        std::mem::take(&mut self.restart)
    }
    fn restart(&mut self, now: Millis) {
        if self.is_down() {
            self.dev.flash_mut().sim_mut().restore_power();
            self.power_cuts += 1;
        }
        self.boots += 1;
        self.dev.restart(now);
    }
}

impl Update for DfuUpdate {
    fn is_finished(&self) -> bool {
        DfuUpdate::is_finished(self)
    }

    fn asks_reconnect(event: &DfuEvent) -> bool {
        *event == DfuEvent::NeedsReconnect
    }
}
