//! Errors, one layer each, saying whose fault they are.
//!
//! [`Error`] is what a flow reports when an update stops. Its variants sort causes by who
//! must act: the peer sent garbage ([`Error::PeerMalformed`]), the peer understood and said
//! no with its own vendor code ([`Error::PeerRefused`]), the link dropped or went silent
//! ([`Error::LinkLost`]), an image failed a check ([`Error::Verification`]), or the caller
//! used the API wrongly ([`Error::Misuse`]). The JS API maps each to `{code, message,
//! retryable}` through [`Error::code`], `Display` and [`Error::retryable`].

use core::fmt;

use crate::image::VerifyError;

/// Why an update stopped.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The peer sent bytes that do not decode: a buggy or hostile peer, or a corrupting link.
    PeerMalformed(Malformed),
    /// The peer decoded our request and refused it with a vendor code.
    PeerRefused(Refusal),
    /// The link dropped, or the peer stopped answering in time.
    LinkLost(LinkLost),
    /// An image, package or manifest failed a size, digest or signature check.
    Verification(VerifyError),
    /// The caller asked for something this state or these arguments cannot do.
    Misuse(Misuse),
}

impl Error {
    /// A stable, machine-readable code for the JS API, e.g. `"peer-refused"`.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Error::PeerMalformed(_) => "peer-malformed",
            Error::PeerRefused(_) => "peer-refused",
            Error::LinkLost(_) => "link-lost",
            Error::Verification(_) => "verification-failed",
            Error::Misuse(_) => "misuse",
        }
    }

    /// Whether trying the same thing again can succeed without changing anything.
    #[must_use]
    pub fn retryable(&self) -> bool {
        match self {
            Error::LinkLost(_) => true,
            Error::PeerRefused(r) => r.retryable,
            Error::PeerMalformed(_) | Error::Verification(_) | Error::Misuse(_) => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::PeerMalformed(m) => write!(f, "the device sent data that makes no sense: {m}"),
            Error::PeerRefused(r) => write!(f, "{r}"),
            Error::LinkLost(l) => write!(f, "{l}"),
            Error::Verification(v) => write!(f, "the image was refused: {v}"),
            Error::Misuse(m) => write!(f, "{m}"),
        }
    }
}

impl From<Malformed> for Error {
    fn from(e: Malformed) -> Self {
        Error::PeerMalformed(e)
    }
}

impl From<Refusal> for Error {
    fn from(e: Refusal) -> Self {
        Error::PeerRefused(e)
    }
}

impl From<LinkLost> for Error {
    fn from(e: LinkLost) -> Self {
        Error::LinkLost(e)
    }
}

impl From<VerifyError> for Error {
    fn from(e: VerifyError) -> Self {
        Error::Verification(e)
    }
}

impl From<Misuse> for Error {
    fn from(e: Misuse) -> Self {
        Error::Misuse(e)
    }
}

/// Why bytes failed to decode. Shared by every decoder of peer input.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended before the structure did.
    Truncated {
        /// Bytes the structure needs.
        needed: usize,
        /// Bytes that were there.
        available: usize,
    },
    /// A length field disagrees with the bytes present or with another length field.
    LengthMismatch,
    /// A length or count is larger than this decoder accepts.
    TooLarge {
        /// The largest value accepted.
        limit: usize,
    },
    /// A field holds a value the format does not define.
    BadValue,
    /// Bytes follow the end of the structure.
    TrailingBytes,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { needed, available } => {
                write!(f, "truncated: needs {needed} bytes, has {available}")
            }
            DecodeError::LengthMismatch => f.write_str("length fields disagree with the data"),
            DecodeError::TooLarge { limit } => write!(f, "larger than the limit of {limit}"),
            DecodeError::BadValue => f.write_str("a field holds an undefined value"),
            DecodeError::TrailingBytes => f.write_str("unexpected bytes after the end"),
        }
    }
}

/// Malformed peer data: what was being decoded and why it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed {
    /// The structure being decoded, e.g. `"ACK packet"`.
    pub what: &'static str,
    /// Why it failed.
    pub reason: DecodeError,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.reason)
    }
}

/// The vendor protocol whose code a [`Refusal`] carries.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    /// Alexa Gadgets OTA (ACK/NACK result codes).
    Gadget,
    /// SiFli DFU (`DFU_ERR_*`).
    Dfu,
    /// EnOS IoT (reply codes such as 764 and 765).
    Enos,
    /// MQTT 3.1.1 (CONNACK and SUBACK return codes).
    Mqtt,
    /// An HTTP file server (status codes), e.g. EnOS's file download.
    Http,
}

/// The peer refused a request, with its own code and what that code means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Whose code this is.
    pub vendor: Vendor,
    /// The code as the peer sent it.
    pub code: i64,
    /// The vendor's name for the code, e.g. `"DFU_ERR_OTA_ONGOING"`.
    pub name: &'static str,
    /// What the code means to a person, and what to do next.
    pub meaning: &'static str,
    /// Whether asking again unchanged can succeed.
    pub retryable: bool,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = match self.vendor {
            Vendor::Gadget | Vendor::Dfu => "the device",
            Vendor::Enos => "the cloud",
            Vendor::Mqtt => "the broker",
            Vendor::Http => "the file server",
        };
        write!(
            f,
            "{who} refused ({} {}): {}",
            self.name, self.code, self.meaning
        )
    }
}

/// How a link was lost.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkLost {
    /// The transport reported a disconnect.
    Disconnected,
    /// The peer did not answer within the flow's deadline.
    TimedOut {
        /// What the flow was waiting for, e.g. `"segment response"`.
        waiting_for: &'static str,
    },
    /// Retransmissions ran out.
    RetriesExhausted {
        /// How many attempts were made.
        attempts: u32,
    },
}

impl fmt::Display for LinkLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkLost::Disconnected => f.write_str(
                "the connection to the device dropped; move closer and reconnect to resume",
            ),
            LinkLost::TimedOut { waiting_for } => write!(
                f,
                "the device stopped answering (waited for the {waiting_for}); reconnect to resume"
            ),
            LinkLost::RetriesExhausted { attempts } => write!(
                f,
                "the device did not take the data after {attempts} attempts; reconnect to resume"
            ),
        }
    }
}

/// Local misuse: the caller's mistake, not the peer's.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Misuse {
    /// An argument is out of range or malformed.
    InvalidArgument(&'static str),
    /// The call does not fit the current state.
    WrongState {
        /// What was asked.
        call: &'static str,
        /// The state the flow is in.
        state: &'static str,
    },
    /// A feature or option this build or flow does not support.
    Unsupported(&'static str),
}

impl fmt::Display for Misuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Misuse::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Misuse::WrongState { call, state } => {
                write!(f, "cannot {call} while the update is {state}")
            }
            Misuse::Unsupported(what) => write!(f, "not supported: {what}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn codes_and_retryability_follow_the_layer() {
        let lost: Error = LinkLost::TimedOut {
            waiting_for: "segment response",
        }
        .into();
        assert_eq!(lost.code(), "link-lost");
        assert!(lost.retryable());
        assert!(lost.to_string().contains("segment response"));

        let bad: Error = Malformed {
            what: "ACK packet",
            reason: DecodeError::Truncated {
                needed: 6,
                available: 2,
            },
        }
        .into();
        assert_eq!(bad.code(), "peer-malformed");
        assert!(!bad.retryable());
        assert_eq!(
            bad.to_string(),
            "the device sent data that makes no sense: ACK packet: truncated: needs 6 bytes, has 2"
        );

        let refused: Error = Refusal {
            vendor: Vendor::Dfu,
            code: 10,
            name: "DFU_ERR_OTA_ONGOING",
            meaning: "an update is already in progress; resume it or restart it",
            retryable: true,
        }
        .into();
        assert_eq!(refused.code(), "peer-refused");
        assert!(refused.retryable());
        assert!(refused.to_string().contains("DFU_ERR_OTA_ONGOING 10"));

        let misuse: Error = Misuse::WrongState {
            call: "apply",
            state: "idle",
        }
        .into();
        assert_eq!(misuse.to_string(), "cannot apply while the update is idle");
    }
}
