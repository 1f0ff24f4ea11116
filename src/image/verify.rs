//! Placeholder: being written.

/// Why an image failed verification.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// Placeholder.
    SizeMismatch,
}

impl core::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("size mismatch")
    }
}

/// Placeholder.
pub struct Image;
/// Placeholder.
pub struct Verified<T>(T);
