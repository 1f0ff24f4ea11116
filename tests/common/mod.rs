//! Helpers shared by the integration tests: the committed fixtures, embedded at compile time
//! so the same tests run natively and as wasm (which has no file system).

/// The bytes of `firmware-fixtures/files/$name`.
macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/firmware-fixtures/files/",
            $name
        ))
    };
}

/// The text of `firmware-fixtures/files/$name`.
// Not every test binary that includes this module reads text fixtures.
#[allow(unused_macros)]
macro_rules! fixture_text {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/firmware-fixtures/files/",
            $name
        ))
    };
}

#[cfg(target_arch = "wasm32")]
pub mod web;
