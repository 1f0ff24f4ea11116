//! Alexa Gadgets (AGT) protobuf messages: the control stream and Discover on the Alexa stream.
//!
//! Contract. Messages are proto3, derived with `prost` by hand (no `protoc`), with the field
//! numbers of the EMB and PI `.proto` files as the protocol notes (gadget.md §5, §6) list them:
//!
//! - Control stream (stream 0): every transaction is one [`ControlEnvelope`]: `command = 1`
//!   ([`Command`]) and a oneof payload: `response = 9`, `get_device_information = 20`,
//!   `get_device_features = 28`, `update_component_segment = 94`, `apply_firmware = 95`.
//!   [`Response`] is `error_code = 1` ([`ErrorCode`]) and a oneof: `firmware_component = 2`,
//!   `device_information = 3`, `firmware_information = 5`, `device_features = 28`.
//! - Alexa stream (stream 6): no envelope. [`DiscoverDirective`] is
//!   `{1: directive {1: header, 2: payload {1: scope}}}` and [`DiscoverResponseEvent`] is
//!   `{1: event {1: header, 2: payload {1: repeated endpoints}}}`. A receiver tells one
//!   directive from another by its header alone: [`peek_directive_header`] decodes only
//!   field 1.1 and skips the payload, as EMB's `DirectiveParserProto` does.
//!
//! Decoding ([`decode_control`], [`decode_discover_directive`], [`decode_discover_response`],
//! [`peek_directive_header`]) never panics; any failure is a [`Malformed`] with
//! [`DecodeError::BadValue`], because prost's error does not say more than "bad bytes" in a
//! form we can map. The `validate` methods report a size bound as [`DecodeError::TooLarge`].
//! Unknown fields are skipped, as proto3 requires. Unknown enum values are kept as the raw
//! `i32`, so a gadget can answer an unknown command with [`ErrorCode::Unsupported`]. Beware
//! the getters prost derives for enum fields (`command()`, `error_code()`): they turn an
//! unknown value into the first variant, so an unknown error code would read as SUCCESS;
//! judge replies with [`Response::succeeded`].
//!
//! Replies: the peer answers a request with a [`ControlEnvelope`] whose payload is a
//! [`Response`]. EMB and PI echo the answered command in `command`, but NRF and GDX send
//! `NONE` and still work with Echos, so (notes §5, \[REC\]) a reply is matched to the one
//! outstanding request, never to its `command` field; [`ControlEnvelope::as_response`] only
//! says whether an envelope is a reply. Our own replies echo the command, as EMB does.
//!
//! Choices where the notes say \[INF\] or \[REC\]:
//! - Signatures (`segment_signature`, `FirmwareComponent.signature`) are produced as
//!   Base64(SHA-256) with padding, 44 characters ([`segment_signature`]); parsing accepts that
//!   or 64 hex digits of either case ([`parse_segment_signature`]), since EMB's widened
//!   nanopb limit (65) leaves room for hex.
//! - Our extension, for a signed image: `FirmwareComponent.signature` (called "SHA-256
//!   encoded Base64" by PI's comment and otherwise undocumented, notes §5 and §7.3 \[INF\])
//!   is then Base64 of `SHA-256 (32 bytes) ‖ ECDSA P-256 r‖s (64 bytes)`, 96 bytes in 128
//!   characters ([`ComponentSignature`]): the digest first, as the field always carried it,
//!   then the signature the image's manifest entry carried, which the gadget's image
//!   database checks with its trusted key. An unsigned image keeps the 44-character digest
//!   form, so a gadget that expects a digest gets one. Both sides are ours; a gadget built
//!   with EMB's nanopb bound (65) cannot hold the signed form, so it must be our gadget, or
//!   the image unsigned. Segment signatures are never extended.
//! - Size bounds follow EMB's nanopb options, where `max_size` counts the terminating NUL:
//!   component and firmware names at most 15 bytes, signatures 64, locale 7, one component
//!   per ApplyFirmware. A gadget with fixed buffers checks them with
//!   [`UpdateComponentSegment::validate`] and [`ApplyFirmware::validate`]. The one exception
//!   is `FirmwareComponent.signature`, bounded at [`COMPONENT_SIGNATURE_MAX`] (128) for the
//!   signed form above. firmwareVersion (31 bytes) has no check: a decimal `u32` never comes
//!   near it.
//! - Requests carry no empty payload message: the EMB capture of GetDeviceInformation is
//!   `08 14`, `command` alone, so [`ControlEnvelope::get_device_information`] emits just that.

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use base64ct::{Base64, Encoding as _};
use prost::Message as _;

use crate::error::{DecodeError, Malformed};
use crate::image::digest::{parse_hex, sha256};
use crate::image::signature::{ImageSignature, SIGNATURE_LEN};

/// Longest component or firmware name, in bytes (nanopb `max_size` 16 less the NUL).
pub const NAME_MAX: usize = 15;
/// Longest signature text, in bytes: 64 hex digits (nanopb `max_size` 65 less the NUL).
pub const SIGNATURE_MAX: usize = 64;
/// Longest `FirmwareComponent.signature` text, in bytes: 128, the Base64 of our signed form
/// (SHA-256 ‖ r‖s, 96 bytes; see [`ComponentSignature`]). Above EMB's [`SIGNATURE_MAX`].
pub const COMPONENT_SIGNATURE_MAX: usize = 128;
/// Longest `FirmwareInformation.locale`, in bytes (nanopb `max_size` 8 less the NUL).
pub const LOCALE_MAX: usize = 7;
/// Most components one `FirmwareInformation` carries (EMB's nanopb `max_count`).
pub const COMPONENTS_MAX: usize = 1;

/// The Discover directive's and Discover.Response event's header namespace.
pub const DISCOVERY_NAMESPACE: &str = "Alexa.Discovery";
/// The Discover directive's header name.
pub const DISCOVER_NAME: &str = "Discover";
/// The Discover.Response event's header name.
pub const DISCOVER_RESPONSE_NAME: &str = "Discover.Response";

// ---------------------------------------------------------------------------------------
// Control stream (notes §5)
// ---------------------------------------------------------------------------------------

/// What a control-stream envelope asks for (`ControlEnvelope.command`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Command {
    /// No command; NRF and GDX put this in their replies.
    None = 0,
    /// Ask the gadget for its [`DeviceInformation`].
    GetDeviceInformation = 20,
    /// Ask the gadget for its [`DeviceFeatures`].
    GetDeviceFeatures = 28,
    /// Announce the next segment of a component ([`UpdateComponentSegment`]).
    UpdateComponentSegment = 94,
    /// Install the transferred firmware ([`ApplyFirmware`]).
    ApplyFirmware = 95,
}

/// A protobuf-level result code in a [`Response`] (distinct from the transport ACK byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ErrorCode {
    /// The request succeeded.
    Success = 0,
    /// An unspecified failure.
    Unknown = 1,
    /// The gadget failed internally, e.g. a flash write.
    Internal = 2,
    /// The gadget does not implement the command.
    Unsupported = 3,
    /// The user cancelled the operation.
    UserCancelled = 4,
    /// The named thing (e.g. a component) does not exist.
    NotFound = 5,
    /// The request or its data is invalid, e.g. a segment hash mismatch.
    Invalid = 6,
    /// The gadget is busy; asking later can succeed.
    Busy = 7,
}

/// A transport a gadget supports (`DeviceInformation.supported_transports`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Transport {
    /// Bluetooth Low Energy, the only transport this crate speaks.
    BluetoothLowEnergy = 0,
}

/// One control-stream transaction: a command and its payload.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ControlEnvelope {
    /// The [`Command`], kept raw so unknown values survive decoding.
    #[prost(enumeration = "Command", tag = "1")]
    pub command: i32,
    /// The request or response body, if any.
    #[prost(oneof = "ControlPayload", tags = "9, 20, 28, 94, 95")]
    pub payload: Option<ControlPayload>,
}

/// The oneof body of a [`ControlEnvelope`].
#[derive(Clone, PartialEq, Eq, prost::Oneof)]
pub enum ControlPayload {
    /// A reply to the outstanding request (field 9, tag byte `4A`).
    #[prost(message, tag = "9")]
    Response(Response),
    /// An explicit GetDeviceInformation body (field 20); usually absent.
    #[prost(message, tag = "20")]
    GetDeviceInformation(GetDeviceInformation),
    /// An explicit GetDeviceFeatures body (field 28); usually absent.
    #[prost(message, tag = "28")]
    GetDeviceFeatures(GetDeviceFeatures),
    /// A segment announcement (field 94, tag bytes `F2 05`).
    #[prost(message, tag = "94")]
    UpdateComponentSegment(UpdateComponentSegment),
    /// The install request (field 95, tag bytes `FA 05`).
    #[prost(message, tag = "95")]
    ApplyFirmware(ApplyFirmware),
}

/// The empty body of a GetDeviceInformation request.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct GetDeviceInformation {}

/// The empty body of a GetDeviceFeatures request.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct GetDeviceFeatures {}

/// A gadget's answer to a request.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Response {
    /// The [`ErrorCode`], kept raw; judge it with [`Response::succeeded`].
    #[prost(enumeration = "ErrorCode", tag = "1")]
    pub error_code: i32,
    /// The answer's data, if the request asks for any.
    #[prost(oneof = "ResponsePayload", tags = "2, 3, 5, 28")]
    pub payload: Option<ResponsePayload>,
}

/// The oneof body of a [`Response`].
#[derive(Clone, PartialEq, Eq, prost::Oneof)]
pub enum ResponsePayload {
    /// A firmware component description (field 2).
    #[prost(message, tag = "2")]
    FirmwareComponent(FirmwareComponent),
    /// The answer to GetDeviceInformation (field 3).
    #[prost(message, tag = "3")]
    DeviceInformation(DeviceInformation),
    /// A firmware description (field 5, PI only).
    #[prost(message, tag = "5")]
    FirmwareInformation(FirmwareInformation),
    /// The answer to GetDeviceFeatures (field 28, tag bytes `E2 01`).
    #[prost(message, tag = "28")]
    DeviceFeatures(DeviceFeatures),
}

/// Who the gadget is: the answer to GetDeviceInformation.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DeviceInformation {
    /// Serial number (nanopb max 20).
    #[prost(string, tag = "1")]
    pub serial_number: String,
    /// Human-readable name (nanopb max 16).
    #[prost(string, tag = "2")]
    pub name: String,
    /// Supported [`Transport`]s, raw; `[BluetoothLowEnergy]` in practice.
    #[prost(enumeration = "Transport", repeated, tag = "3")]
    pub supported_transports: Vec<i32>,
    /// Amazon device-type ID (nanopb max 22).
    #[prost(string, tag = "4")]
    pub device_type: String,
}

/// What the gadget can do: the answer to GetDeviceFeatures.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DeviceFeatures {
    /// Feature bits; see [`DeviceFeatures::AGT`] and [`DeviceFeatures::OTA`].
    #[prost(uint64, tag = "1")]
    pub features: u64,
    /// Reserved; 0.
    #[prost(uint64, tag = "2")]
    pub device_attributes: u64,
}

/// Announces one segment of a component before its bytes follow on the OTA stream.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct UpdateComponentSegment {
    /// The component being written (at most [`NAME_MAX`] bytes).
    #[prost(string, tag = "1")]
    pub component_name: String,
    /// Byte offset of this segment in the component image.
    #[prost(uint32, tag = "2")]
    pub component_offset: u32,
    /// Bytes in this segment.
    #[prost(uint32, tag = "3")]
    pub segment_size: u32,
    /// The segment's signature text (see [`segment_signature`]).
    #[prost(string, tag = "4")]
    pub segment_signature: String,
}

/// Asks the gadget to install what it received.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ApplyFirmware {
    /// The firmware being installed; its `version` becomes the gadget's OTA version.
    #[prost(message, optional, tag = "1")]
    pub firmware_information: Option<FirmwareInformation>,
    /// Whether the gadget should restart to finish the install.
    #[prost(bool, tag = "2")]
    pub restart_required: bool,
}

/// Describes a firmware release.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct FirmwareInformation {
    /// The OTA version number.
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// Firmware name (at most [`NAME_MAX`] bytes).
    #[prost(string, tag = "2")]
    pub name: String,
    /// The components (at most [`COMPONENTS_MAX`]).
    #[prost(message, repeated, tag = "3")]
    pub components: Vec<FirmwareComponent>,
    /// Locale, e.g. `"enUS"` (at most [`LOCALE_MAX`] bytes).
    #[prost(string, tag = "4")]
    pub locale: String,
    /// Display version, e.g. `"Version 12"` (at most [`NAME_MAX`] bytes).
    #[prost(string, tag = "5")]
    pub version_name: String,
}

/// Describes one component of a firmware release.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct FirmwareComponent {
    /// The component's version number.
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// Component name (at most [`NAME_MAX`] bytes).
    #[prost(string, tag = "2")]
    pub name: String,
    /// Component size in bytes.
    #[prost(uint32, tag = "3")]
    pub size: u32,
    /// Signature text of the whole component: its SHA-256 as [`segment_signature`] encodes
    /// it, or, for a signed image, our extension ([`ComponentSignature`]).
    #[prost(string, tag = "4")]
    pub signature: String,
}

impl ControlEnvelope {
    /// GetDeviceInformation: `command = 20` and no body, encoding to `08 14`.
    #[must_use]
    pub fn get_device_information() -> Self {
        Self::command_only(Command::GetDeviceInformation)
    }

    /// GetDeviceFeatures: `command = 28` and no body, encoding to `08 1C`.
    #[must_use]
    pub fn get_device_features() -> Self {
        Self::command_only(Command::GetDeviceFeatures)
    }

    /// UpdateComponentSegment announcing `size` bytes at `offset` of component `name`.
    #[must_use]
    pub fn update_component_segment(name: &str, offset: u32, size: u32, signature: &str) -> Self {
        Self {
            command: Command::UpdateComponentSegment.into(),
            payload: Some(ControlPayload::UpdateComponentSegment(
                UpdateComponentSegment {
                    component_name: name.to_string(),
                    component_offset: offset,
                    segment_size: size,
                    segment_signature: signature.to_string(),
                },
            )),
        }
    }

    /// ApplyFirmware for a one-component release: firmware and component share `version`
    /// and `name`; `size` and `signature` describe the whole component. Locale and display
    /// version are left empty, as nothing on our side reads them.
    #[must_use]
    pub fn apply_firmware(
        version: u32,
        name: &str,
        size: u32,
        signature: &str,
        restart_required: bool,
    ) -> Self {
        let component = FirmwareComponent {
            version,
            name: name.to_string(),
            size,
            signature: signature.to_string(),
        };
        Self {
            command: Command::ApplyFirmware.into(),
            payload: Some(ControlPayload::ApplyFirmware(ApplyFirmware {
                firmware_information: Some(FirmwareInformation {
                    version,
                    name: name.to_string(),
                    components: vec![component],
                    locale: String::new(),
                    version_name: String::new(),
                }),
                restart_required,
            })),
        }
    }

    /// A reply to `command` with `code` and no data.
    #[must_use]
    pub fn response(command: Command, code: ErrorCode) -> Self {
        Self::reply(command, code, None)
    }

    /// A successful reply to `command` carrying `payload`.
    #[must_use]
    pub fn response_with(command: Command, payload: ResponsePayload) -> Self {
        Self::reply(command, ErrorCode::Success, Some(payload))
    }

    /// The [`Response`] if this envelope is a reply; match it to the outstanding request,
    /// not to `command`, which some gadgets leave `NONE`.
    #[must_use]
    pub fn as_response(&self) -> Option<&Response> {
        match &self.payload {
            Some(ControlPayload::Response(r)) => Some(r),
            _ => None,
        }
    }

    /// These bytes, ready to be a control-stream transaction payload.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    fn command_only(command: Command) -> Self {
        Self {
            command: command.into(),
            payload: None,
        }
    }

    fn reply(command: Command, code: ErrorCode, payload: Option<ResponsePayload>) -> Self {
        Self {
            command: command.into(),
            payload: Some(ControlPayload::Response(Response {
                error_code: code.into(),
                payload,
            })),
        }
    }
}

impl Response {
    /// Whether `error_code` is SUCCESS; an unknown code counts as failure.
    #[must_use]
    pub fn succeeded(&self) -> bool {
        self.error_code == i32::from(ErrorCode::Success)
    }
}

impl DeviceFeatures {
    /// Bit 0: the gadget implements the AGT feature set.
    pub const AGT: u64 = 1 << 0;
    /// Bit 1: the gadget supports OTA updates.
    pub const OTA: u64 = 1 << 1;
    /// Our extension, in `device_attributes` (which Amazon's samples send as 0): the gadget
    /// takes the 128-character signed form of ApplyFirmware's component signature
    /// ([`ComponentSignature`]). Without it a gadget only gets the 44-character digest form,
    /// which the stock samples' 64-character field holds.
    pub const SIGNED_APPLY: u64 = 1 << 48;

    /// Whether the [`DeviceFeatures::OTA`] bit is set.
    #[must_use]
    pub fn supports_ota(&self) -> bool {
        self.features & Self::OTA != 0
    }

    /// Whether the gadget announced [`DeviceFeatures::SIGNED_APPLY`].
    #[must_use]
    pub fn supports_signed_apply(&self) -> bool {
        self.device_attributes & Self::SIGNED_APPLY != 0
    }
}

impl UpdateComponentSegment {
    /// Checks the nanopb size bounds a fixed-buffer gadget has ([`NAME_MAX`],
    /// [`SIGNATURE_MAX`]) and that the segment ends within the 32-bit offset space, so the
    /// gadget can add offset and size without overflow. Whether the name, offset and size
    /// fit the gadget's slot is its own decision.
    pub fn validate(&self) -> Result<(), Malformed> {
        bound(
            "UpdateComponentSegment.component_name",
            &self.component_name,
            NAME_MAX,
        )?;
        bound(
            "UpdateComponentSegment.segment_signature",
            &self.segment_signature,
            SIGNATURE_MAX,
        )?;
        self.component_offset
            .checked_add(self.segment_size)
            .map(|_| ())
            .ok_or(Malformed {
                what: "UpdateComponentSegment.segment_size",
                reason: DecodeError::BadValue,
            })
    }
}

impl ApplyFirmware {
    /// Checks that `firmware_information` is present (the gadget learns its new version
    /// from it) and within EMB's nanopb bounds: names, locale, display version, signature
    /// lengths and at most [`COMPONENTS_MAX`] components.
    pub fn validate(&self) -> Result<(), Malformed> {
        let info = self.firmware_information.as_ref().ok_or(Malformed {
            what: "ApplyFirmware.firmware_information",
            reason: DecodeError::BadValue,
        })?;
        bound("FirmwareInformation.name", &info.name, NAME_MAX)?;
        bound("FirmwareInformation.locale", &info.locale, LOCALE_MAX)?;
        bound(
            "FirmwareInformation.version_name",
            &info.version_name,
            NAME_MAX,
        )?;
        if info.components.len() > COMPONENTS_MAX {
            return Err(Malformed {
                what: "FirmwareInformation.components",
                reason: DecodeError::TooLarge {
                    limit: COMPONENTS_MAX,
                },
            });
        }
        for c in &info.components {
            bound("FirmwareComponent.name", &c.name, NAME_MAX)?;
            bound(
                "FirmwareComponent.signature",
                &c.signature,
                COMPONENT_SIGNATURE_MAX,
            )?;
        }
        Ok(())
    }
}

/// `Err(TooLarge)` if `text` is longer than `limit` bytes (nanopb bounds count bytes).
fn bound(what: &'static str, text: &str, limit: usize) -> Result<(), Malformed> {
    if text.len() > limit {
        Err(Malformed {
            what,
            reason: DecodeError::TooLarge { limit },
        })
    } else {
        Ok(())
    }
}

/// Decodes a control-stream transaction payload.
pub fn decode_control(bytes: &[u8]) -> Result<ControlEnvelope, Malformed> {
    decode(bytes, "AGT control envelope")
}

// ---------------------------------------------------------------------------------------
// Alexa stream (notes §6)
// ---------------------------------------------------------------------------------------

/// The Alexa.Discovery Discover directive (Echo → gadget).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DiscoverDirective {
    /// The directive itself (field 1).
    #[prost(message, optional, tag = "1")]
    pub directive: Option<DiscoverDirectiveBody>,
}

/// Header and payload of a [`DiscoverDirective`].
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DiscoverDirectiveBody {
    /// Routing header (field 1).
    #[prost(message, optional, tag = "1")]
    pub header: Option<DirectiveHeader>,
    /// Discover's payload (field 2); absent in the EMB capture.
    #[prost(message, optional, tag = "2")]
    pub payload: Option<DiscoverPayload>,
}

/// The header every directive starts with (`DirectiveHeaderProto`).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DirectiveHeader {
    /// Interface namespace, e.g. `"Alexa.Discovery"`.
    #[prost(string, tag = "1")]
    pub namespace: String,
    /// Directive name, e.g. `"Discover"`.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Unique message ID.
    #[prost(string, tag = "3")]
    pub message_id: String,
    /// Dialog request ID, if the directive belongs to a dialog.
    #[prost(string, tag = "4")]
    pub dialog_request_id: String,
}

/// The Discover directive's payload.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DiscoverPayload {
    /// Authorisation scope (field 1).
    #[prost(message, optional, tag = "1")]
    pub scope: Option<Scope>,
}

/// An authorisation scope.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Scope {
    /// Scope type, e.g. `"BearerToken"`.
    #[prost(string, tag = "1")]
    pub r#type: String,
    /// The token.
    #[prost(string, tag = "2")]
    pub token: String,
}

/// The Alexa.Discovery Discover.Response event (gadget → Echo).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DiscoverResponseEvent {
    /// The event itself (field 1).
    #[prost(message, optional, tag = "1")]
    pub event: Option<DiscoverResponseBody>,
}

/// Header and payload of a [`DiscoverResponseEvent`].
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DiscoverResponseBody {
    /// Routing header (field 1).
    #[prost(message, optional, tag = "1")]
    pub header: Option<EventHeader>,
    /// The endpoints (field 2).
    #[prost(message, optional, tag = "2")]
    pub payload: Option<DiscoverResponsePayload>,
}

/// The header every event starts with (`EventHeaderProto`).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct EventHeader {
    /// Interface namespace, e.g. `"Alexa.Discovery"`.
    #[prost(string, tag = "1")]
    pub namespace: String,
    /// Event name, e.g. `"Discover.Response"`.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Unique message ID.
    #[prost(string, tag = "3")]
    pub message_id: String,
}

/// The Discover.Response payload.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DiscoverResponsePayload {
    /// The gadget's endpoints (EMB sends one).
    #[prost(message, repeated, tag = "1")]
    pub endpoints: Vec<Endpoint>,
}

/// One discovered endpoint: the gadget.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Endpoint {
    /// Endpoint ID, the gadget's serial.
    #[prost(string, tag = "1")]
    pub endpoint_id: String,
    /// Name shown to the user.
    #[prost(string, tag = "2")]
    pub friendly_name: String,
    /// Free-text description.
    #[prost(string, tag = "3")]
    pub description: String,
    /// Manufacturer name.
    #[prost(string, tag = "4")]
    pub manufacturer_name: String,
    /// Interfaces the gadget implements (field 11).
    #[prost(message, repeated, tag = "11")]
    pub capabilities: Vec<Capability>,
    /// Firmware version, device token and model (field 12).
    #[prost(message, optional, tag = "12")]
    pub additional_identification: Option<AdditionalIdentification>,
}

/// One interface an endpoint implements.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Capability {
    /// Capability type, e.g. `"AlexaInterface"`.
    #[prost(string, tag = "1")]
    pub r#type: String,
    /// Interface name, e.g. `"Alexa.Gadget.StateListener"`.
    #[prost(string, tag = "2")]
    pub interface: String,
    /// Interface version, e.g. `"1.0"`.
    #[prost(string, tag = "3")]
    pub version: String,
    /// Interface configuration (field 4).
    #[prost(message, optional, tag = "4")]
    pub configuration: Option<CapabilityConfiguration>,
}

/// A capability's configuration.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct CapabilityConfiguration {
    /// Supported types (field 1).
    #[prost(message, repeated, tag = "1")]
    pub supported_types: Vec<SupportedType>,
}

/// One supported type of a capability.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SupportedType {
    /// The type's name.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// Identification beyond the endpoint ID.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct AdditionalIdentification {
    /// The gadget's OTA version as a decimal string (nanopb max 32, so 31 bytes).
    #[prost(string, tag = "1")]
    pub firmware_version: String,
    /// Hex SHA-256 of endpoint ID ‖ device secret, 64 characters.
    #[prost(string, tag = "2")]
    pub device_token: String,
    /// Device-token encryption type, `"1"`.
    #[prost(string, tag = "3")]
    pub device_token_encryption_type: String,
    /// Amazon device-type ID.
    #[prost(string, tag = "4")]
    pub amazon_device_type: String,
    /// Model name.
    #[prost(string, tag = "5")]
    pub model_name: String,
    /// Bluetooth radio address.
    #[prost(string, tag = "6")]
    pub radio_address: String,
}

impl DiscoverDirective {
    /// Discover with `message_id` and no payload, as in EMB's capture.
    #[must_use]
    pub fn new(message_id: &str) -> Self {
        Self {
            directive: Some(DiscoverDirectiveBody {
                header: Some(DirectiveHeader {
                    namespace: DISCOVERY_NAMESPACE.to_string(),
                    name: DISCOVER_NAME.to_string(),
                    message_id: message_id.to_string(),
                    dialog_request_id: String::new(),
                }),
                payload: None,
            }),
        }
    }

    /// These bytes, ready to be an Alexa-stream transaction payload.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

impl DirectiveHeader {
    /// Whether this heads an Alexa.Discovery Discover directive.
    #[must_use]
    pub fn is_discover(&self) -> bool {
        self.namespace == DISCOVERY_NAMESPACE && self.name == DISCOVER_NAME
    }
}

impl DiscoverResponseEvent {
    /// Discover.Response for one endpoint that reports `firmware_version`; other fields are
    /// public for a gadget that wants to fill them.
    #[must_use]
    pub fn new(endpoint_id: &str, friendly_name: &str, firmware_version: &str) -> Self {
        let endpoint = Endpoint {
            endpoint_id: endpoint_id.to_string(),
            friendly_name: friendly_name.to_string(),
            additional_identification: Some(AdditionalIdentification {
                firmware_version: firmware_version.to_string(),
                ..AdditionalIdentification::default()
            }),
            ..Endpoint::default()
        };
        Self {
            event: Some(DiscoverResponseBody {
                header: Some(EventHeader {
                    namespace: DISCOVERY_NAMESPACE.to_string(),
                    name: DISCOVER_RESPONSE_NAME.to_string(),
                    message_id: String::new(),
                }),
                payload: Some(DiscoverResponsePayload {
                    endpoints: vec![endpoint],
                }),
            }),
        }
    }

    /// The first endpoint's firmwareVersion, or `None` if it is absent or empty (proto3
    /// cannot tell those apart).
    #[must_use]
    pub fn firmware_version(&self) -> Option<&str> {
        let v = self
            .event
            .as_ref()?
            .payload
            .as_ref()?
            .endpoints
            .first()?
            .additional_identification
            .as_ref()?
            .firmware_version
            .as_str();
        (!v.is_empty()).then_some(v)
    }

    /// These bytes, ready to be an Alexa-stream transaction payload.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

/// Only the header of any directive: `{1: {1: header}}`; prost skips the payload (field 1.2)
/// unparsed, so directives whose payloads we do not model still peek.
#[derive(Clone, PartialEq, Eq, prost::Message)]
struct DirectivePeek {
    /// The directive (field 1).
    #[prost(message, optional, tag = "1")]
    directive: Option<DirectivePeekBody>,
}

/// The header half of a directive body.
#[derive(Clone, PartialEq, Eq, prost::Message)]
struct DirectivePeekBody {
    /// Routing header (field 1).
    #[prost(message, optional, tag = "1")]
    header: Option<DirectiveHeader>,
}

/// The header of an Alexa-stream directive, without decoding its payload; a directive with
/// no header cannot be routed and is malformed.
pub fn peek_directive_header(bytes: &[u8]) -> Result<DirectiveHeader, Malformed> {
    const WHAT: &str = "Alexa directive header";
    let peek: DirectivePeek = decode(bytes, WHAT)?;
    peek.directive.and_then(|d| d.header).ok_or(Malformed {
        what: WHAT,
        reason: DecodeError::BadValue,
    })
}

/// Decodes a Discover directive; another directive, or none, is malformed here.
pub fn decode_discover_directive(bytes: &[u8]) -> Result<DiscoverDirective, Malformed> {
    const WHAT: &str = "Discover directive";
    let d: DiscoverDirective = decode(bytes, WHAT)?;
    let is_discover = d
        .directive
        .as_ref()
        .and_then(|b| b.header.as_ref())
        .is_some_and(DirectiveHeader::is_discover);
    if is_discover {
        Ok(d)
    } else {
        Err(Malformed {
            what: WHAT,
            reason: DecodeError::BadValue,
        })
    }
}

/// Decodes a Discover.Response event; an event with another header, or none, is malformed
/// here, as the Alexa stream has no envelope to tell events apart.
pub fn decode_discover_response(bytes: &[u8]) -> Result<DiscoverResponseEvent, Malformed> {
    const WHAT: &str = "Discover.Response event";
    let e: DiscoverResponseEvent = decode(bytes, WHAT)?;
    let is_response = e
        .event
        .as_ref()
        .and_then(|b| b.header.as_ref())
        .is_some_and(|h| h.namespace == DISCOVERY_NAMESPACE && h.name == DISCOVER_RESPONSE_NAME);
    if is_response {
        Ok(e)
    } else {
        Err(Malformed {
            what: WHAT,
            reason: DecodeError::BadValue,
        })
    }
}

/// prost's decode with its opaque error mapped to [`Malformed`].
fn decode<M: prost::Message + Default>(bytes: &[u8], what: &'static str) -> Result<M, Malformed> {
    M::decode(bytes).map_err(|_| Malformed {
        what,
        reason: DecodeError::BadValue,
    })
}

// ---------------------------------------------------------------------------------------
// Signatures (notes §7.3)
// ---------------------------------------------------------------------------------------

/// Base64 (standard, padded) of SHA-256 of `bytes`: 44 characters, the form we send for
/// segment and component signatures.
#[must_use]
pub fn segment_signature(bytes: &[u8]) -> String {
    Base64::encode_string(&sha256(bytes))
}

/// The SHA-256 a signature text names: 44 characters of padded standard Base64 or 64 hex
/// digits of either case; anything else is malformed.
pub fn parse_segment_signature(text: &str) -> Result<[u8; 32], Malformed> {
    let bad = Malformed {
        what: "segment signature",
        reason: DecodeError::BadValue,
    };
    match text.len() {
        // Base64 of 32 bytes is 43 characters plus one `=`; a 44-character text ending in
        // `==` decodes to 31 bytes and fails the conversion below.
        44 => Base64::decode_vec(text)
            .ok()
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
            .ok_or(bad),
        64 => parse_hex::<32>(text).map_err(|_| bad),
        _ => Err(bad),
    }
}

/// What `FirmwareComponent.signature` carries: the whole component's SHA-256 and, for a
/// signed image, the ECDSA P-256 signature of its manifest entry (our extension; module docs).
///
/// Text forms, by length: 44 characters of padded standard Base64 or 64 hex digits are the
/// digest alone (as [`parse_segment_signature`] reads them); 128 characters of standard
/// Base64 are 96 bytes, `SHA-256 ‖ r ‖ s`, with `r` and `s` big-endian and in range. Any
/// other text is malformed. [`ComponentSignature::encode`] writes Base64 only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ComponentSignature {
    /// SHA-256 of the whole component.
    pub sha256: [u8; 32],
    /// The signature over that SHA-256 (ECDSA P-256, as `otaweb::image::signature` defines
    /// it), if the image was signed.
    pub ecdsa: Option<ImageSignature>,
}

/// Bytes of the signed form: SHA-256 then `r‖s`.
const SIGNED_COMPONENT_LEN: usize = 32 + SIGNATURE_LEN;

impl ComponentSignature {
    /// The text for the field: Base64 (standard, padded) of the SHA-256 (44 characters), or
    /// of SHA-256 ‖ r‖s (128 characters) when there is a signature.
    #[must_use]
    pub fn encode(&self) -> String {
        match &self.ecdsa {
            None => Base64::encode_string(&self.sha256),
            Some(signature) => {
                let mut raw = [0u8; SIGNED_COMPONENT_LEN];
                raw[..32].copy_from_slice(&self.sha256);
                raw[32..].copy_from_slice(&signature.to_bytes());
                Base64::encode_string(&raw)
            }
        }
    }

    /// Reads the field's text: the digest forms [`parse_segment_signature`] takes, or the
    /// 128-character signed form; anything else, including a signed form whose `r` or `s` is
    /// out of range, is malformed.
    pub fn parse(text: &str) -> Result<Self, Malformed> {
        let bad = Malformed {
            what: "component signature",
            reason: DecodeError::BadValue,
        };
        if text.len() != COMPONENT_SIGNATURE_MAX {
            let sha256 = parse_segment_signature(text).map_err(|_| bad)?;
            return Ok(ComponentSignature {
                sha256,
                ecdsa: None,
            });
        }
        let raw = Base64::decode_vec(text).map_err(|_| bad)?;
        if raw.len() != SIGNED_COMPONENT_LEN {
            return Err(bad);
        }
        let (digest, signature) = raw.split_at(32);
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(digest);
        let ecdsa = ImageSignature::from_bytes(signature).map_err(|_| bad)?;
        Ok(ComponentSignature {
            sha256,
            ecdsa: Some(ecdsa),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Concatenates byte pieces, so pinned vectors can spell their strings as text.
    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn handshake_requests_match_the_emb_capture() {
        // Field 1 varint: key (1 << 3) | 0 = 0x08, then 20 = 0x14 / 28 = 0x1C; no body.
        assert_eq!(
            ControlEnvelope::get_device_information().to_bytes(),
            [0x08, 0x14]
        );
        assert_eq!(
            ControlEnvelope::get_device_features().to_bytes(),
            [0x08, 0x1C]
        );
        let env = decode_control(&[0x08, 0x14]).unwrap();
        assert_eq!(env, ControlEnvelope::get_device_information());
        assert_eq!(env.command(), Command::GetDeviceInformation);
        assert_eq!(env.payload, None);
    }

    #[test]
    fn update_component_segment_bytes() {
        let env = ControlEnvelope::update_component_segment("app", 2048, 1024, "abc");
        let expected = [
            0x08, 0x5E, // command = 94
            0xF2, 0x05, // field 94, wire type 2: (94 << 3) | 2 = 754 = varint F2 05
            0x10, // 16 bytes of UpdateComponentSegment follow
            0x0A, 0x03, b'a', b'p', b'p', // 1: component_name "app"
            0x10, 0x80, 0x10, // 2: component_offset 2048 = varint 80 10
            0x18, 0x80, 0x08, // 3: segment_size 1024 = varint 80 08
            0x22, 0x03, b'a', b'b', b'c', // 4: segment_signature "abc"
        ];
        assert_eq!(env.to_bytes(), expected);
        assert_eq!(decode_control(&expected).unwrap(), env);
        match env.payload {
            Some(ControlPayload::UpdateComponentSegment(s)) => assert_eq!(s.validate(), Ok(())),
            _ => panic!("wrong payload"),
        }
    }

    #[test]
    fn update_component_segment_with_a_real_signature() {
        let sig = segment_signature(b"abc");
        let env = ControlEnvelope::update_component_segment("app", 0, 1024, &sig);
        let expected = cat(&[
            // command 94; field 94 with 0x36 = 54 bytes: name 5 + size 3 + signature 2 + 44
            // (offset 0 is the proto3 default and is not emitted).
            &[0x08, 0x5E, 0xF2, 0x05, 0x36],
            &[0x0A, 0x03],
            b"app",
            &[0x18, 0x80, 0x08],
            &[0x22, 0x2C], // 44 characters
            b"ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=",
        ]);
        assert_eq!(env.to_bytes(), expected);
    }

    #[test]
    fn apply_firmware_bytes() {
        let env = ControlEnvelope::apply_firmware(12, "app", 4096, "abc", true);
        let expected = [
            0x08, 0x5F, // command = 95
            0xFA, 0x05, // field 95, wire type 2: (95 << 3) | 2 = 762 = varint FA 05
            0x1C, // 28 bytes of ApplyFirmware
            0x0A, 0x18, // 1: firmware_information, 24 bytes
            0x08, 0x0C, //   1: version 12
            0x12, 0x03, b'a', b'p', b'p', // 2: name "app"
            0x1A, 0x0F, //   3: components[0], 15 bytes
            0x08, 0x0C, //     1: version 12
            0x12, 0x03, b'a', b'p', b'p', // 2: name "app"
            0x18, 0x80, 0x20, //     3: size 4096 = varint 80 20
            0x22, 0x03, b'a', b'b', b'c', // 4: signature "abc"
            0x10, 0x01, // 2: restart_required true
        ];
        assert_eq!(env.to_bytes(), expected);
        let back = decode_control(&expected).unwrap();
        assert_eq!(back, env);
        match back.payload {
            Some(ControlPayload::ApplyFirmware(a)) => a.validate().unwrap(),
            _ => panic!("wrong payload"),
        }
    }

    #[test]
    fn responses_use_tag_4a_and_e2_01() {
        // Field 9, wire type 2 = 0x4A; an empty Response still appears (length 0) because
        // the oneof is set, so the peer sees a reply and not a bare command.
        let ok = ControlEnvelope::response(Command::UpdateComponentSegment, ErrorCode::Success);
        assert_eq!(ok.to_bytes(), [0x08, 0x5E, 0x4A, 0x00]);
        assert!(ok.as_response().unwrap().succeeded());

        // error_code = INVALID (6): 08 06 inside a 2-byte Response.
        let bad = ControlEnvelope::response(Command::ApplyFirmware, ErrorCode::Invalid);
        assert_eq!(bad.to_bytes(), [0x08, 0x5F, 0x4A, 0x02, 0x08, 0x06]);
        assert!(!bad.as_response().unwrap().succeeded());

        // DeviceFeatures is Response field 28: (28 << 3) | 2 = 226 = varint E2 01; EMB's 0x13.
        let features = ControlEnvelope::response_with(
            Command::GetDeviceFeatures,
            ResponsePayload::DeviceFeatures(DeviceFeatures {
                features: 0x13,
                device_attributes: 0,
            }),
        );
        let bytes = [0x08, 0x1C, 0x4A, 0x05, 0xE2, 0x01, 0x02, 0x08, 0x13];
        assert_eq!(features.to_bytes(), bytes);
        match decode_control(&bytes)
            .unwrap()
            .as_response()
            .unwrap()
            .payload
        {
            Some(ResponsePayload::DeviceFeatures(ref f)) => {
                assert!(f.supports_ota());
                assert_ne!(f.features & DeviceFeatures::AGT, 0);
            }
            _ => panic!("wrong payload"),
        }
        assert!(!DeviceFeatures {
            features: 0x01,
            device_attributes: 0
        }
        .supports_ota());
    }

    #[test]
    fn device_information_response_bytes() {
        let info = DeviceInformation {
            serial_number: "SN1".to_string(),
            name: "Gadget".to_string(),
            supported_transports: vec![Transport::BluetoothLowEnergy.into()],
            device_type: "A1B2".to_string(),
        };
        let env = ControlEnvelope::response_with(
            Command::GetDeviceInformation,
            ResponsePayload::DeviceInformation(info),
        );
        let expected = cat(&[
            &[0x08, 0x14, 0x4A, 0x18], // command 20; Response, 24 bytes
            &[0x1A, 0x16],             // Response field 3: DeviceInformation, 22 bytes
            &[0x0A, 0x03],
            b"SN1",
            &[0x12, 0x06],
            b"Gadget",
            &[0x1A, 0x01, 0x00], // 3: proto3 packs repeated enums: [BLE = 0]
            &[0x22, 0x04],
            b"A1B2",
        ]);
        assert_eq!(env.to_bytes(), expected);
        assert_eq!(decode_control(&expected).unwrap(), env);
        // An unpacked encoding (key 0x18, value 0) decodes the same, as proto3 requires.
        let unpacked = [0x08, 0x14, 0x4A, 0x04, 0x1A, 0x02, 0x18, 0x00];
        match decode_control(&unpacked)
            .unwrap()
            .as_response()
            .unwrap()
            .payload
        {
            Some(ResponsePayload::DeviceInformation(ref d)) => {
                assert_eq!(d.supported_transports, [0]);
            }
            _ => panic!("wrong payload"),
        }
    }

    #[test]
    fn unknown_values_survive_and_unknown_error_codes_are_failures() {
        // command 99 (varint 63), Response{error_code 42}.
        let env = decode_control(&[0x08, 0x63, 0x4A, 0x02, 0x08, 0x2A]).unwrap();
        assert_eq!(env.command, 99);
        assert!(Command::try_from(env.command).is_err());
        let r = env.as_response().unwrap();
        assert_eq!(r.error_code, 42);
        assert!(!r.succeeded());
        // Unknown field 7 (varint) is skipped.
        let env = decode_control(&[0x08, 0x14, 0x38, 0x01]).unwrap();
        assert_eq!(env, ControlEnvelope::get_device_information());
        // A reply with command NONE (NRF, GDX) is still a reply.
        let nrf = decode_control(&[0x4A, 0x00]).unwrap();
        assert_eq!(nrf.command(), Command::None);
        assert!(nrf.as_response().unwrap().succeeded());
    }

    #[test]
    fn validate_enforces_nanopb_bounds() {
        let ok = UpdateComponentSegment {
            component_name: "a".repeat(NAME_MAX),
            component_offset: u32::MAX - 10,
            segment_size: 10,
            segment_signature: "f".repeat(SIGNATURE_MAX),
        };
        assert_eq!(ok.validate(), Ok(()));

        let mut long_name = ok.clone();
        long_name.component_name.push('a');
        assert_eq!(
            long_name.validate().unwrap_err().reason,
            DecodeError::TooLarge { limit: 15 }
        );
        let mut long_sig = ok.clone();
        long_sig.segment_signature.push('f');
        assert_eq!(
            long_sig.validate().unwrap_err().reason,
            DecodeError::TooLarge { limit: 64 }
        );
        let mut wraps = ok;
        wraps.segment_size = 11;
        assert_eq!(
            wraps.validate().unwrap_err().what,
            "UpdateComponentSegment.segment_size"
        );

        assert!(ApplyFirmware::default().validate().is_err());
        let mut two = match ControlEnvelope::apply_firmware(1, "app", 1, "x", true).payload {
            Some(ControlPayload::ApplyFirmware(a)) => a,
            _ => panic!("wrong payload"),
        };
        assert_eq!(two.validate(), Ok(()));
        if let Some(info) = two.firmware_information.as_mut() {
            info.components.push(FirmwareComponent::default());
        }
        assert_eq!(
            two.validate().unwrap_err().reason,
            DecodeError::TooLarge { limit: 1 }
        );

        // The component signature has room for the signed form, 128 characters, no more.
        let signed =
            |len: usize| match ControlEnvelope::apply_firmware(1, "app", 1, &"A".repeat(len), true)
                .payload
            {
                Some(ControlPayload::ApplyFirmware(a)) => a,
                _ => panic!("wrong payload"),
            };
        assert_eq!(signed(COMPONENT_SIGNATURE_MAX).validate(), Ok(()));
        let err = signed(COMPONENT_SIGNATURE_MAX + 1).validate().unwrap_err();
        assert_eq!(err.what, "FirmwareComponent.signature");
        assert_eq!(err.reason, DecodeError::TooLarge { limit: 128 });
    }

    /// The Discover directive EMB's tx.c carries: only namespace and name.
    fn discover_bytes() -> Vec<u8> {
        cat(&[
            &[0x0A, 0x1D], // 1: directive, 29 bytes
            &[0x0A, 0x1B], //   1: header, 27 bytes
            &[0x0A, 0x0F], //     1: namespace, 15 bytes
            b"Alexa.Discovery",
            &[0x12, 0x08], //     2: name, 8 bytes
            b"Discover",
        ])
    }

    #[test]
    fn discover_directive_bytes() {
        let d = DiscoverDirective::new("");
        assert_eq!(d.to_bytes(), discover_bytes());
        assert_eq!(decode_discover_directive(&discover_bytes()).unwrap(), d);
        assert!(peek_directive_header(&discover_bytes())
            .unwrap()
            .is_discover());

        // A message ID lands in header field 3 and round-trips.
        let with_id = DiscoverDirective::new("m-1");
        let bytes = with_id.to_bytes();
        assert_eq!(&bytes[..6], [0x0A, 0x22, 0x0A, 0x20, 0x0A, 0x0F]);
        assert!(bytes.ends_with(&[0x1A, 0x03, b'm', b'-', b'1']));
        let peek = peek_directive_header(&bytes).unwrap();
        assert_eq!(peek.message_id, "m-1");
    }

    #[test]
    fn peek_skips_payloads_it_does_not_model() {
        // Another directive whose payload (field 1.2) is not a DiscoverPayload: field 1 of
        // it is a varint, which would fail as a Scope message, yet the peek never reads it.
        let bytes = cat(&[
            &[0x0A, 0x1A],
            &[0x0A, 0x12, 0x0A, 0x06],
            b"Alerts",
            &[0x12, 0x08],
            b"SetAlert",
            &[0x12, 0x04, 0x08, 0x01, 0x10, 0x02],
        ]);
        let header = peek_directive_header(&bytes).unwrap();
        assert_eq!(header.namespace, "Alerts");
        assert_eq!(header.name, "SetAlert");
        assert!(!header.is_discover());
        assert!(decode_discover_directive(&bytes).is_err());
        // No header at all cannot be routed.
        assert!(peek_directive_header(&[]).is_err());
        assert!(peek_directive_header(&[0x0A, 0x00]).is_err());
    }

    #[test]
    fn discover_response_round_trips_the_firmware_version() {
        let e = DiscoverResponseEvent::new("SN1", "Gadget", "12");
        let expected = cat(&[
            &[0x0A, 0x3D], // 1: event, 61 bytes
            &[0x0A, 0x24], //   1: header, 36 bytes
            &[0x0A, 0x0F],
            b"Alexa.Discovery",
            &[0x12, 0x11],
            b"Discover.Response",
            &[0x12, 0x15], //   2: payload, 21 bytes
            &[0x0A, 0x13], //     1: endpoints[0], 19 bytes
            &[0x0A, 0x03],
            b"SN1",
            &[0x12, 0x06],
            b"Gadget",
            // 12: additionalIdentification, (12 << 3) | 2 = 0x62; 1: firmwareVersion "12"
            &[0x62, 0x04, 0x0A, 0x02],
            b"12",
        ]);
        assert_eq!(e.to_bytes(), expected);
        let back = decode_discover_response(&expected).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.firmware_version(), Some("12"));

        // A richer endpoint with a capability (field 11, key 0x5A; 61 bytes: type 16 +
        // interface 28 + version 5 + configuration 12) keeps every field.
        let mut rich = e.clone();
        if let Some(ep) = rich
            .event
            .as_mut()
            .and_then(|b| b.payload.as_mut())
            .and_then(|p| p.endpoints.first_mut())
        {
            ep.capabilities.push(Capability {
                r#type: "AlexaInterface".to_string(),
                interface: "Alexa.Gadget.StateListener".to_string(),
                version: "1.0".to_string(),
                configuration: Some(CapabilityConfiguration {
                    supported_types: vec![SupportedType {
                        name: "timers".to_string(),
                    }],
                }),
            });
        }
        let bytes = rich.to_bytes();
        assert!(bytes.windows(2).any(|w| w == [0x5A, 0x3D]));
        let back = decode_discover_response(&bytes).unwrap();
        assert_eq!(back, rich);
        assert_eq!(back.firmware_version(), Some("12"));

        assert_eq!(
            DiscoverResponseEvent::new("SN1", "Gadget", "").firmware_version(),
            None
        );
        // The Discover directive is not a Discover.Response.
        assert!(decode_discover_response(&discover_bytes()).is_err());
    }

    #[test]
    fn garbage_is_malformed_and_never_panics() {
        let m = decode_control(&[0xFF, 0xFF, 0xFF]).unwrap_err();
        assert_eq!(m.what, "AGT control envelope");
        assert_eq!(m.reason, DecodeError::BadValue);
        assert!(decode_discover_response(&[0xFF, 0xFF, 0xFF]).is_err());
        assert!(peek_directive_header(&[0xFF, 0xFF, 0xFF]).is_err());
        // Truncated lengths and invalid UTF-8 in a string field.
        assert!(decode_control(&[0x08, 0x5E, 0xF2, 0x05, 0x10, 0x0A]).is_err());
        assert!(decode_control(&[0x08, 0x5E, 0xF2, 0x05, 0x03, 0x0A, 0x01, 0xFF]).is_err());

        // xorshift64: random strings and bit-flipped valid messages through every decoder.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds = [
            ControlEnvelope::apply_firmware(12, "app", 4096, "abc", true).to_bytes(),
            discover_bytes(),
            DiscoverResponseEvent::new("SN1", "Gadget", "12").to_bytes(),
        ];
        for i in 0..6000 {
            let mut bytes: Vec<u8> = if i % 2 == 0 {
                let len = (next() % 48) as usize;
                (0..len).map(|_| next() as u8).collect()
            } else {
                seeds[i % seeds.len()].clone()
            };
            if !bytes.is_empty() {
                for _ in 0..1 + next() % 3 {
                    let at = (next() as usize) % bytes.len();
                    bytes[at] ^= 1 << (next() % 8);
                }
            }
            if let Ok(env) = decode_control(&bytes) {
                if let Some(ControlPayload::UpdateComponentSegment(s)) = &env.payload {
                    let _ = s.validate();
                }
                if let Some(ControlPayload::ApplyFirmware(a)) = &env.payload {
                    let _ = a.validate();
                }
            }
            let _ = peek_directive_header(&bytes);
            let _ = decode_discover_directive(&bytes);
            if let Ok(e) = decode_discover_response(&bytes) {
                let _ = e.firmware_version();
            }
        }
    }

    #[test]
    fn signatures_are_base64_sha256_and_hex_also_parses() {
        let b64 = "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=";
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(segment_signature(b"abc"), b64);
        let want = sha256(b"abc");
        assert_eq!(parse_segment_signature(b64), Ok(want));
        assert_eq!(parse_segment_signature(hex), Ok(want));
        assert_eq!(parse_segment_signature(&hex.to_ascii_uppercase()), Ok(want));

        for bad in [
            "",
            &b64[..43],                                      // padding dropped
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0==", // 45 characters
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0=",  // URL-safe alphabet
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",  // 31 bytes
            &hex[..62],                                      // 31 bytes of hex
            "zz7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", // not hex
        ] {
            let err = parse_segment_signature(bad).unwrap_err();
            assert_eq!(err.what, "segment signature");
            assert_eq!(err.reason, DecodeError::BadValue);
        }
    }

    /// The signed form of `FirmwareComponent.signature`, pinned: SHA-256 = 00 01 … 1F,
    /// r = 20 21 … 3F, s = 40 41 … 5F, that is the bytes 0 to 95 in order.
    const SIGNED_COMPONENT: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKiss\
                                    LS4vMDEyMzQ1Njc4OTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZ\
                                    WltcXV5f";

    #[test]
    fn component_signature_signed_form_is_base64_of_digest_then_r_then_s() {
        let raw: Vec<u8> = (0..96).collect();
        let signed = ComponentSignature {
            sha256: raw[..32].try_into().unwrap(),
            ecdsa: Some(ImageSignature::from_bytes(&raw[32..]).unwrap()),
        };
        assert_eq!(SIGNED_COMPONENT.len(), COMPONENT_SIGNATURE_MAX);
        assert_eq!(signed.encode(), SIGNED_COMPONENT);
        assert_eq!(ComponentSignature::parse(SIGNED_COMPONENT), Ok(signed));
        assert_eq!(
            Base64::decode_vec(SIGNED_COMPONENT).unwrap(),
            raw,
            "digest first, then r, then s"
        );
    }

    #[test]
    fn component_signature_digest_form_is_the_segment_form() {
        let b64 = "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=";
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let plain = ComponentSignature {
            sha256: sha256(b"abc"),
            ecdsa: None,
        };
        assert_eq!(plain.encode(), b64);
        assert_eq!(plain.encode(), segment_signature(b"abc"));
        assert_eq!(ComponentSignature::parse(b64), Ok(plain));
        assert_eq!(ComponentSignature::parse(hex), Ok(plain));
    }

    #[test]
    fn component_signature_of_any_other_shape_is_malformed() {
        let raw: Vec<u8> = (0..96).collect();
        let mut zero_r = raw.clone();
        zero_r[32..64].fill(0);
        let mut high_s = raw.clone();
        high_s[64..].fill(0xFF);
        let signature_alone = Base64::encode_string(&raw[32..]);
        let hex_96: String = raw.iter().map(|b| alloc::format!("{b:02x}")).collect();
        let short = [&SIGNED_COMPONENT[..124], "AA=="].concat(); // 94 bytes in 128 characters
        let url_safe = SIGNED_COMPONENT.replace('+', "-").replace('/', "_");
        for bad in [
            String::new(),
            signature_alone,                  // 64 bytes, 88 characters
            SIGNED_COMPONENT[..127].into(),   // one character short
            [SIGNED_COMPONENT, "A"].concat(), // one too many
            short,
            url_safe,
            hex_96,
            Base64::encode_string(&zero_r),
            Base64::encode_string(&high_s), // s above the curve order
        ] {
            let err = ComponentSignature::parse(&bad).unwrap_err();
            assert_eq!(err.what, "component signature", "{bad:?}");
            assert_eq!(err.reason, DecodeError::BadValue, "{bad:?}");
        }
    }
}
