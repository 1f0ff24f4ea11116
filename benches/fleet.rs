//! Issue 9, part 5: one machine drives a fleet of EnOS devices through a real mosquitto.
//!
//! `cargo bench -p otaweb --bench fleet` starts its own mosquitto (plain MQTT on a free
//! 127.0.0.1 port, config in [`broker`]), the `enos-sim` cloud in-process (its registry,
//! MQTT session and file service), and `OTAWEB_FLEET_DEVICES` (default 1,000) devices, each
//! the real [`otaweb::flow::enos::EnosFlow`] on its own TCP connection, driven by
//! `OTAWEB_FLEET_THREADS` (default 2) worker threads ([`device`]). Once every device's
//! `inform` was answered, in each of `OTAWEB_FLEET_ROUNDS` (default 3) rounds the cloud
//! creates one push task per device at once; each device takes the push, logs in to the
//! file service, downloads the `OTAWEB_FLEET_IMAGE_KIB` (default 256) KiB image over HTTP,
//! has the flow check its MD5, installs it in memory, reports progress, and informs the new
//! version.
//!
//! It prints a markdown section (figures, what limits them, and how a fleet spreads over a
//! broker cluster) and `SUMMARY|` rows for `benches/RESULTS.md`. Nothing about speed is
//! asserted. Correctness is checked: every device must end on the last round's version and
//! every task in the registry must have succeeded with step 100 last; otherwise the failures are listed and the
//! exit status is 1. The run stops by itself after `OTAWEB_FLEET_LIMIT_SECS` (default
//! 100) at the latest; everything listens on 127.0.0.1 only.

#[cfg(not(target_arch = "wasm32"))]
#[path = "fleet/broker.rs"]
mod broker;
#[cfg(not(target_arch = "wasm32"))]
#[path = "fleet/device.rs"]
mod device;
#[cfg(not(target_arch = "wasm32"))]
#[path = "shared/firmware_like.rs"]
mod firmware_like;
#[cfg(not(target_arch = "wasm32"))]
#[path = "fleet/procstat.rs"]
mod procstat;
#[cfg(not(target_arch = "wasm32"))]
#[path = "fleet/run.rs"]
mod run;

/// The bench is native only: wasm32 has no sockets or processes.
#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    match run::run() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("fleet bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
