//! Images: everything the core does to firmware bytes before they reach a device.
//!
//! Digests ([`digest`]), zlib ([`zlib`]), slicing to link-sized chunks ([`chunk`]), version
//! styles ([`version`]), ECDSA P-256 signatures ([`signature`]), update manifests
//! ([`manifest`]), SiFli DFU packages with their AES and RSA ([`sifli`]), DFU packages as one
//! `.tar` file ([`dfu_bundle`]) and the [`Verified`] proof token ([`verify`]). Nothing here
//! does I/O.
//!
//! The contract that matters most: an image reaches a device only as a [`Verified<Image>`],
//! and only [`verify::verify_image`] can make one.

pub mod chunk;
pub mod dfu_bundle;
pub mod digest;
pub mod manifest;
pub mod sifli;
pub mod signature;
pub mod verify;
pub mod version;
pub mod zlib;

pub use verify::{Image, Verified, VerifyError};
