//! otaweb: firmware updates from a web page.
//!
//! A sans-IO core drives three vendor update flows (Alexa Gadgets OTA and SiFli DFU over
//! BLE, EnOS OTA over MQTT); a thin wasm-bindgen edge connects it to the browser. The same
//! core runs natively in `cargo test`, in the browser, and against the companion firmware
//! crate in the two-party simulator.
//!
//! ```text
//!  www/ (page, <ota-updater>)            JavaScript: renders state, no protocol logic
//!    │  ES module from pkg/
//!  web   (cfg wasm32)                    I/O only: Web Bluetooth, WebSocket, fetch, timers
//!    │  bytes in, bytes out, now: Millis
//!  flow                                  sans-IO state machines: no I/O, no clock, no rand
//!    │
//!  image                                 digests, zlib, chunking, versions, signatures,
//!                                        manifests, the Verified<Image> proof token
//! ```
//!
//! Time enters the core only as a [`Millis`] value; the core never reads a clock
//! (`std::time::Instant` panics on `wasm32-unknown-unknown`). Errors say whose fault they are:
//! see [`Error`].
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;
// Hosted targets link std for its panic handler and allocator (the cdylib needs both); the
// core still names only `core` and `alloc`, so it builds for bare-metal targets unchanged.
#[cfg(not(target_os = "none"))]
extern crate std;

pub mod error;
pub mod flow;
pub mod image;
#[cfg(test)]
mod test_rng;
pub mod time;
#[cfg(all(target_arch = "wasm32", feature = "web"))]
pub mod web;
pub mod wire;

pub use error::Error;
pub use time::Millis;

/// The otaweb version, as `Cargo.toml` states it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
