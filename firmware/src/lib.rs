//! otaweb companion firmware: the device side of every otaweb flow.
//!
//! `no_std` + `alloc`, generic over a NOR flash (`embedded_storage::nor_flash::NorFlash`).
//! It runs natively in tests, compiles to `thumbv7em-none-eabihf` as a real device would,
//! and compiled to wasm it is the page's built-in demo device.
//!
//! - [`flash`]: a simulated NOR flash with power-cut injection, and partitions of any flash.
//! - [`record`]: the power-safe record log that [`slots`] and [`dfu`] keep their state in.
//! - [`slots`]: the image database: a factory region and 2 to 5 download slots, a
//!   power-safe index, and the boot decision with trial boots, rollback and factory reset.
//! - [`gadget`]: the Alexa Gadgets OTA responder, sans-IO, staging into the image database.
//! - [`dfu`]: the SiFli OTA-manager DFU device (user bin and OTA manager), sans-IO.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod dfu;
pub mod flash;
pub mod gadget;
pub mod record;
pub mod slots;
