//! EnOS IoT device OTA over MQTT (`protocols/enos_microchip.md` part A): the signed CONNECT
//! credentials, the OTA topics, the JSON bodies both ways, reply codes, progress steps and the
//! firmware `sign`.
//!
//! Contract. Everything here is pure: no clock (the sign's timestamp is passed in, Unix
//! milliseconds from the edge), no I/O. Builders of what the device sends return the exact
//! JSON bytes to publish; parsers of what the cloud sends take the payload bytes and return a
//! typed value or a [`BodyError`] naming the message and the field, never a panic. Unknown
//! JSON fields are ignored; a missing required field is [`BodyErrorKind::MissingField`], a
//! field of the wrong JSON type [`BodyErrorKind::WrongType`]. The cloud-side builders and the
//! parser of device requests ([`DeviceRequest`]) are for the EnOS simulator and tests.
//!
//! ```text
//! CONNECT  client id  {id}|securemode={2|3},signmethod={sha256|sha1|md5},timestamp={ms}|
//!          user name  {deviceKey}&{productKey}
//!          password   HEX(hash("clientId"{id} "deviceKey"{dk} "productKey"{pk} "timestamp"{ms} {secret}))
//! topics   /sys/{pk}/{dk}/ota/device/{inform|upgrade|progress|getversion}[_reply]
//! request  {"id":"1","version":"1.0","method":"ota.device.inform","params":{...}}
//! reply    {"id":"1","code":200,"data":{}}          (getversion_reply: "data":[firmware...])
//! firmware {"version","sign","signMethod":"md5"|"sha256","fileUrl","fileSize":<bytes>}
//! ```
//!
//! Choices where the notes are open or inferred:
//!
//! - The password is a plain digest of the sorted parameters and the secret, not an HMAC
//!   (A2), in UPPERCASE hex as the protocol document, the Node and the C SDKs send it; the
//!   broker is inferred to compare case-insensitively. SHA-256 is the default, labelled
//!   `sha256`; SHA-1 and MD5 are labelled `sha1` and `md5` (names the 2.4 Java SDK accepts).
//!   [`SignMethod`]'s parser also takes the `hmac*` aliases. The bare id (the device key by
//!   default) is what is signed, not the decorated client id. Secure modes 2 (device secret)
//!   and 3 (product secret) are offered; mode 4 (message-integration channel) is not.
//! - A browser should not hold a device secret: a portal backend can sign and hand over
//!   [`MqttCredentials`] (`{"clientId","username","password"}`), from which
//!   [`MqttCredentials::device`] recovers the product and device keys for the topics.
//! - Requests carry protocol `"version":"1.0"` as documented, although the Java and Python
//!   SDKs send `"1.1"`; both are evidently accepted (A4). Ids are decimal strings, as the SDKs
//!   send them; received ids may be strings or integers, and may be absent (the docs mark them
//!   optional). Keys with no value are left out (A4).
//! - `step` and `desc` go as strings (A5). [`Step`] accepts 100 down to any negative value:
//!   −1…−4 are the documented failures, below −4 custom ones; −5 is the SDKs' "device
//!   declined" ([`Step::DECLINED`]), a custom value to the docs.
//! - The upgrade reply is sent with `"data":{}` as documented (the Java SDK sends `""`).
//!   `fileSize` is read from a JSON number, or from a string of digits.
//! - The SDK's `/ota/device/request` topic is not modelled: no document or message uses it
//!   (A5), so [`TopicRef::parse`] does not recognise it.
//! - Unknown reply codes are named by the SDK's category bases (600 product, 700 device,
//!   800 data, 900 model, 1000 transport, 1100 client, from 2000 user-defined, A4). Only 765
//!   ("task not started") is retryable: the task may start within its schedule window.
//! - The firmware `sign` is the hex digest of the whole file, compared case-insensitively
//!   (A7); `signMethod` is `md5` or `sha256`, in either case.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;

use md5::Md5;
use serde::Serialize;
use serde_json::{Map, Value};
use sha1::Sha1;
use sha2::{Digest as _, Sha256};

use crate::error::{DecodeError, Error, Malformed, Misuse, Refusal, Vendor};
use crate::image::digest::{parse_hex, to_hex, DigestAlg, DigestValue, Hasher};
use crate::image::VerifyError;

/// The protocol version requests carry (A4).
pub const PROTOCOL_VERSION: &str = "1.0";
/// The longest bare client id the docs allow (A2).
pub const MAX_CLIENT_ID_LEN: usize = 64;
/// The HTTP session lifetime the SDKs ask for by default: 300 s (A8).
pub const DEFAULT_HTTP_LIFETIME_MS: u64 = 300_000;

const UPGRADE_WHAT: &str = "EnOS upgrade command";
const REPLY_WHAT: &str = "EnOS reply";
const VERSIONS_WHAT: &str = "EnOS getversion reply";
const FIRMWARE_WHAT: &str = "EnOS firmware";
const REQUEST_WHAT: &str = "EnOS device request";
const CREDENTIALS_WHAT: &str = "EnOS MQTT credentials";
const LOGIN_WHAT: &str = "EnOS file-service login reply";

// ---------------------------------------------------------------------------------------
// Device identity and the CONNECT sign (A2)
// ---------------------------------------------------------------------------------------

/// A device's product key and device key: what topics and user names are made of.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeviceId {
    product_key: String,
    device_key: String,
}

impl DeviceId {
    /// The device `device_key` of product `product_key`. Refuses empty keys and keys with
    /// whitespace, control characters or any of `/ + # & |`, which would break topics, the
    /// user name or the client id.
    pub fn new(
        product_key: impl Into<String>,
        device_key: impl Into<String>,
    ) -> Result<Self, Misuse> {
        let product_key = product_key.into();
        let device_key = device_key.into();
        if !is_valid_key(&product_key) || !is_valid_key(&device_key) {
            return Err(Misuse::InvalidArgument(
                "EnOS product and device keys must be non-empty, without spaces or / + # & |",
            ));
        }
        Ok(DeviceId {
            product_key,
            device_key,
        })
    }

    /// The product key.
    #[must_use]
    pub fn product_key(&self) -> &str {
        &self.product_key
    }

    /// The device key.
    #[must_use]
    pub fn device_key(&self) -> &str {
        &self.device_key
    }

    /// The CONNECT user name: `{deviceKey}&{productKey}`.
    #[must_use]
    pub fn username(&self) -> String {
        format!("{}&{}", self.device_key, self.product_key)
    }

    /// The request topic of `topic`: `/sys/{pk}/{dk}/ota/device/{name}`.
    #[must_use]
    pub fn topic(&self, topic: OtaTopic) -> String {
        format!(
            "/sys/{}/{}/ota/device/{}",
            self.product_key,
            self.device_key,
            topic.name()
        )
    }

    /// The reply topic of `topic`: its request topic and `_reply`.
    #[must_use]
    pub fn reply_topic(&self, topic: OtaTopic) -> String {
        let mut t = self.topic(topic);
        t.push_str(REPLY_SUFFIX);
        t
    }

    /// The file-service download of `file_uri` (a task's `fileUrl`) with login `session`
    /// (A8): the path and query to GET below the HTTP broker's base URL, category `ota`.
    #[must_use]
    pub fn file_download_path(&self, session: &str, file_uri: &str) -> String {
        format!(
            "/multipart/sys/{}/{}/file/download?sessionId={}&fileUri={}&category=ota",
            percent_encode(&self.product_key),
            percent_encode(&self.device_key),
            percent_encode(session),
            percent_encode(file_uri)
        )
    }
}

fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && !key.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '/' | '+' | '#' | '&' | '|')
        })
}

/// Which secret signs the CONNECT (A2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecureMode {
    /// 2: the device secret ("static" authentication).
    DeviceSecret = 2,
    /// 3: the product secret ("dynamic activation"; the broker then sends the device
    /// secret on `/ext/session/{pk}/{dk}/thing/activate/info`).
    ProductSecret = 3,
}

impl SecureMode {
    /// The number in the client id.
    #[must_use]
    pub const fn value(self) -> u8 {
        self as u8
    }
}

/// The hash of the sign string: a plain digest, not an HMAC (A2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SignMethod {
    /// SHA-256, the default.
    #[default]
    Sha256,
    /// SHA-1, as the 2.1 Java SDK signs.
    Sha1,
    /// MD5.
    Md5,
}

impl SignMethod {
    /// The label in the client id.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            SignMethod::Sha256 => "sha256",
            SignMethod::Sha1 => "sha1",
            SignMethod::Md5 => "md5",
        }
    }

    /// The digest of `bytes` in uppercase hex.
    #[must_use]
    pub fn hex_upper(self, bytes: &[u8]) -> String {
        let hex = match self {
            SignMethod::Sha256 => to_hex(&Sha256::digest(bytes)),
            SignMethod::Sha1 => to_hex(&Sha1::digest(bytes)),
            SignMethod::Md5 => to_hex(&Md5::digest(bytes)),
        };
        hex.to_ascii_uppercase()
    }
}

/// The text names no sign method (`sha256`, `sha1`, `md5` or an `hmac*` alias).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownSignMethod;

impl fmt::Display for UnknownSignMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown EnOS sign method (expected sha256, sha1 or md5)")
    }
}

impl FromStr for SignMethod {
    type Err = UnknownSignMethod;

    /// Either case, with or without the `hmac` prefix the SDKs also send.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.to_ascii_lowercase();
        match name.strip_prefix("hmac").unwrap_or(&name) {
            "sha256" => Ok(SignMethod::Sha256),
            "sha1" => Ok(SignMethod::Sha1),
            "md5" => Ok(SignMethod::Md5),
            _ => Err(UnknownSignMethod),
        }
    }
}

/// The EnOS sign string: the parameters sorted by name, each as name then value with no
/// separator, then the secret (A2, A8).
#[must_use]
pub fn sign_content(params: &[(&str, &str)], secret: &str) -> String {
    let mut sorted: Vec<(&str, &str)> = params.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut content = String::new();
    for (name, value) in sorted {
        content.push_str(name);
        content.push_str(value);
    }
    content.push_str(secret);
    content
}

/// A device secret (or product secret) and what it signs. `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretCredentials {
    device: DeviceId,
    secret: String,
    mode: SecureMode,
    method: SignMethod,
    client_id: String,
}

impl fmt::Debug for SecretCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretCredentials")
            .field("device", &self.device)
            .field("secret", &"<hidden>")
            .field("mode", &self.mode)
            .field("method", &self.method)
            .field("client_id", &self.client_id)
            .finish()
    }
}

impl SecretCredentials {
    /// Credentials signing with the device secret and SHA-256, with the device key as the
    /// client id, as the SDKs do.
    #[must_use]
    pub fn new(device: DeviceId, secret: impl Into<String>) -> Self {
        SecretCredentials {
            client_id: device.device_key.clone(),
            device,
            secret: secret.into(),
            mode: SecureMode::DeviceSecret,
            method: SignMethod::Sha256,
        }
    }

    /// The same with another secure mode (the secret must match it).
    #[must_use]
    pub fn with_mode(mut self, mode: SecureMode) -> Self {
        self.mode = mode;
        self
    }

    /// The same with another sign method.
    #[must_use]
    pub fn with_sign_method(mut self, method: SignMethod) -> Self {
        self.method = method;
        self
    }

    /// The same with another bare client id (1 to 64 characters, no `|`), e.g. a MAC
    /// address.
    pub fn with_client_id(mut self, client_id: impl Into<String>) -> Result<Self, Misuse> {
        let client_id = client_id.into();
        if client_id.is_empty()
            || client_id.chars().count() > MAX_CLIENT_ID_LEN
            || client_id.contains(['|', '\0'])
        {
            return Err(Misuse::InvalidArgument(
                "an EnOS client id has 1 to 64 characters and no |",
            ));
        }
        self.client_id = client_id;
        Ok(self)
    }

    /// The device these credentials sign for.
    #[must_use]
    pub fn device(&self) -> &DeviceId {
        &self.device
    }

    /// Signs a CONNECT at `timestamp_ms` (Unix milliseconds; the same value goes into the
    /// client id and the sign).
    #[must_use]
    pub fn sign(&self, timestamp_ms: u64) -> MqttCredentials {
        let timestamp = timestamp_ms.to_string();
        let content = sign_content(
            &[
                ("clientId", self.client_id.as_str()),
                ("deviceKey", self.device.device_key.as_str()),
                ("productKey", self.device.product_key.as_str()),
                ("timestamp", timestamp.as_str()),
            ],
            &self.secret,
        );
        MqttCredentials {
            client_id: format!(
                "{}|securemode={},signmethod={},timestamp={}|",
                self.client_id,
                self.mode.value(),
                self.method.label(),
                timestamp
            ),
            username: self.device.username(),
            password: self.method.hex_upper(content.as_bytes()),
        }
    }

    /// The sign of an HTTP broker login (`POST /auth/{pk}/{dk}`, A8): lowercase SHA-256 hex
    /// over `deviceKey`, `lifetime`, `productKey` and `signMethod` = `sha256`, then the
    /// secret.
    #[must_use]
    pub fn http_auth_sign(&self, lifetime_ms: u64) -> String {
        let lifetime = lifetime_ms.to_string();
        let content = sign_content(
            &[
                ("deviceKey", self.device.device_key.as_str()),
                ("lifetime", lifetime.as_str()),
                ("productKey", self.device.product_key.as_str()),
                ("signMethod", SignMethod::Sha256.label()),
            ],
            &self.secret,
        );
        to_hex(&Sha256::digest(content.as_bytes()))
    }

    /// The file-service login (A8): the path to POST (below the HTTP broker's base URL) and
    /// its JSON body, signed for `lifetime_ms`. [`file_session_id`] reads the answer.
    #[must_use]
    pub fn file_login(&self, lifetime_ms: u64) -> (String, Vec<u8>) {
        let path = format!(
            "/auth/{}/{}",
            percent_encode(&self.device.product_key),
            percent_encode(&self.device.device_key)
        );
        let body = serde_json::json!({
            "signMethod": SignMethod::Sha256.label(),
            "lifetime": lifetime_ms,
            "sign": self.http_auth_sign(lifetime_ms),
        });
        (path, serde_json::to_vec(&body).unwrap_or_default())
    }
}

/// The `sessionId` of a file-service login answer, `{"code":200,"data":{"sessionId":…}}`.
pub fn file_session_id(json: &[u8]) -> Result<String, BodyError> {
    let obj = parse_object(json, LOGIN_WHAT)?;
    match present(&obj, "data") {
        Some(Value::Object(data)) => required_string(data, "sessionId", LOGIN_WHAT),
        Some(_) => Err(body_error(LOGIN_WHAT, BodyErrorKind::WrongType("data"))),
        None => Err(body_error(LOGIN_WHAT, BodyErrorKind::MissingField("data"))),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for a path segment or
/// a query value.
#[must_use]
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The three CONNECT strings, signed here by [`SecretCredentials::sign`] or presigned by a
/// portal backend so the browser needs no secret. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MqttCredentials {
    /// The decorated client id.
    pub client_id: String,
    /// `{deviceKey}&{productKey}`.
    pub username: String,
    /// The signed password (hex).
    pub password: String,
}

impl fmt::Debug for MqttCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttCredentials")
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl MqttCredentials {
    /// Reads presigned credentials, `{"clientId","username","password"}` (other fields are
    /// ignored).
    pub fn from_json(json: &[u8]) -> Result<Self, BodyError> {
        let obj = parse_object(json, CREDENTIALS_WHAT)?;
        Ok(MqttCredentials {
            client_id: required_string(&obj, "clientId", CREDENTIALS_WHAT)?,
            username: required_string(&obj, "username", CREDENTIALS_WHAT)?,
            password: required_string(&obj, "password", CREDENTIALS_WHAT)?,
        })
    }

    /// The device the user name names (`{deviceKey}&{productKey}`), or `None` if it is not of
    /// that form.
    #[must_use]
    pub fn device(&self) -> Option<DeviceId> {
        let (device_key, product_key) = self.username.split_once('&')?;
        DeviceId::new(product_key, device_key).ok()
    }
}

// ---------------------------------------------------------------------------------------
// Topics (A5)
// ---------------------------------------------------------------------------------------

const TOPIC_PREFIX: &str = "/sys/";
const TOPIC_MIDDLE: &str = "ota/device";
const REPLY_SUFFIX: &str = "_reply";

/// An OTA topic, named by its last level (A5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OtaTopic {
    /// Up: the device reports its firmware version.
    Inform,
    /// Down: the cloud pushes an upgrade.
    Upgrade,
    /// Up: the device reports upgrade progress or failure.
    Progress,
    /// Up: the device asks which firmware it may install.
    GetVersion,
}

impl OtaTopic {
    /// Every OTA topic.
    pub const ALL: [OtaTopic; 4] = [
        OtaTopic::Inform,
        OtaTopic::Upgrade,
        OtaTopic::Progress,
        OtaTopic::GetVersion,
    ];

    /// The topic's last level, e.g. `"getversion"`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            OtaTopic::Inform => "inform",
            OtaTopic::Upgrade => "upgrade",
            OtaTopic::Progress => "progress",
            OtaTopic::GetVersion => "getversion",
        }
    }

    /// The `method` of its requests, e.g. `"ota.device.getversion"`.
    #[must_use]
    pub const fn method(self) -> &'static str {
        match self {
            OtaTopic::Inform => "ota.device.inform",
            OtaTopic::Upgrade => "ota.device.upgrade",
            OtaTopic::Progress => "ota.device.progress",
            OtaTopic::GetVersion => "ota.device.getversion",
        }
    }

    /// Whether the device sends the requests (and the cloud the replies); only `upgrade`
    /// goes the other way.
    #[must_use]
    pub const fn is_upstream(self) -> bool {
        !matches!(self, OtaTopic::Upgrade)
    }

    fn from_name(name: &str) -> Option<Self> {
        OtaTopic::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// A parsed OTA topic, borrowing its keys from the topic string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicRef<'a> {
    /// The product key.
    pub product_key: &'a str,
    /// The device key.
    pub device_key: &'a str,
    /// Which OTA topic.
    pub topic: OtaTopic,
    /// It is the `_reply` topic.
    pub reply: bool,
}

impl<'a> TopicRef<'a> {
    /// Parses `/sys/{pk}/{dk}/ota/device/{name}[_reply]`; `None` for any other topic.
    #[must_use]
    pub fn parse(topic: &'a str) -> Option<Self> {
        let rest = topic.strip_prefix(TOPIC_PREFIX)?;
        let (product_key, rest) = rest.split_once('/')?;
        let (device_key, rest) = rest.split_once('/')?;
        let last = rest.strip_prefix(TOPIC_MIDDLE)?.strip_prefix('/')?;
        let (name, reply) = match last.strip_suffix(REPLY_SUFFIX) {
            Some(name) => (name, true),
            None => (last, false),
        };
        if !is_valid_key(product_key) || !is_valid_key(device_key) {
            return None;
        }
        Some(TopicRef {
            product_key,
            device_key,
            topic: OtaTopic::from_name(name)?,
            reply,
        })
    }

    /// Whether the topic is `device`'s.
    #[must_use]
    pub fn is_for(&self, device: &DeviceId) -> bool {
        self.product_key == device.product_key && self.device_key == device.device_key
    }
}

// ---------------------------------------------------------------------------------------
// Errors of JSON bodies
// ---------------------------------------------------------------------------------------

/// What was wrong with a JSON body.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyErrorKind {
    /// Not JSON, or not a JSON object.
    NotJson,
    /// A required field is absent or `null`.
    MissingField(&'static str),
    /// A field has the wrong JSON type.
    WrongType(&'static str),
    /// A field has the right type and an unusable value.
    BadValue(&'static str),
    /// The `method` names another message.
    WrongMethod,
}

/// A JSON body that could not be used: which message, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyError {
    /// The message being read, e.g. `"EnOS upgrade command"`.
    pub what: &'static str,
    /// Why it failed.
    pub kind: BodyErrorKind,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.what)?;
        match self.kind {
            BodyErrorKind::NotJson => f.write_str("not a JSON object"),
            BodyErrorKind::MissingField(name) => write!(f, "field `{name}` missing"),
            BodyErrorKind::WrongType(name) => write!(f, "field `{name}` has the wrong type"),
            BodyErrorKind::BadValue(name) => write!(f, "field `{name}` has a bad value"),
            BodyErrorKind::WrongMethod => f.write_str("method names another message"),
        }
    }
}

impl From<BodyError> for Malformed {
    fn from(e: BodyError) -> Malformed {
        Malformed {
            what: e.what,
            reason: DecodeError::BadValue,
        }
    }
}

impl From<BodyError> for Error {
    fn from(e: BodyError) -> Error {
        Error::PeerMalformed(e.into())
    }
}

fn body_error(what: &'static str, kind: BodyErrorKind) -> BodyError {
    BodyError { what, kind }
}

fn parse_object(json: &[u8], what: &'static str) -> Result<Map<String, Value>, BodyError> {
    match serde_json::from_slice(json) {
        Ok(Value::Object(obj)) => Ok(obj),
        _ => Err(body_error(what, BodyErrorKind::NotJson)),
    }
}

/// A field that is present and not `null`.
fn present<'v>(obj: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    obj.get(name).filter(|v| !v.is_null())
}

fn required_str<'v>(
    obj: &'v Map<String, Value>,
    name: &'static str,
    what: &'static str,
) -> Result<&'v str, BodyError> {
    match present(obj, name) {
        None => Err(body_error(what, BodyErrorKind::MissingField(name))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(body_error(what, BodyErrorKind::WrongType(name))),
    }
}

fn required_string(
    obj: &Map<String, Value>,
    name: &'static str,
    what: &'static str,
) -> Result<String, BodyError> {
    required_str(obj, name, what).map(str::to_string)
}

fn optional_string(
    obj: &Map<String, Value>,
    name: &'static str,
    what: &'static str,
) -> Result<Option<String>, BodyError> {
    match present(obj, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(body_error(what, BodyErrorKind::WrongType(name))),
    }
}

/// An id: a string or an integer, or absent.
fn message_id(
    obj: &Map<String, Value>,
    what: &'static str,
) -> Result<Option<MessageId>, BodyError> {
    match present(obj, "id") {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(MessageId(s.clone()))),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Ok(Some(MessageId(n.to_string()))),
        Some(_) => Err(body_error(what, BodyErrorKind::WrongType("id"))),
    }
}

/// The `params` object; absent or `null` reads as empty, as the docs mark it optional.
fn params(obj: &Map<String, Value>, what: &'static str) -> Result<Map<String, Value>, BodyError> {
    match present(obj, "params") {
        None => Ok(Map::new()),
        Some(Value::Object(p)) => Ok(p.clone()),
        Some(_) => Err(body_error(what, BodyErrorKind::WrongType("params"))),
    }
}

fn check_method(
    obj: &Map<String, Value>,
    topic: OtaTopic,
    what: &'static str,
) -> Result<(), BodyError> {
    if required_str(obj, "method", what)? == topic.method() {
        Ok(())
    } else {
        Err(body_error(what, BodyErrorKind::WrongMethod))
    }
}

/// Serialises a body built here: string keys and plain fields, so it cannot fail; if it
/// ever did, the empty payload would be refused by the broker (1251), not sent half-made.
fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Bodies (A4, A5)
// ---------------------------------------------------------------------------------------

/// A message id: the SDKs send a decimal counter as a string, unique per topic.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct MessageId(pub String);

impl From<u64> for MessageId {
    fn from(n: u64) -> Self {
        MessageId(n.to_string())
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A request envelope, device to cloud or cloud to device (A4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Request<'a, P> {
    /// The message id.
    pub id: &'a MessageId,
    /// The protocol version, [`PROTOCOL_VERSION`].
    pub version: &'a str,
    /// The method, e.g. `"ota.device.inform"`.
    pub method: &'a str,
    /// The method's parameters.
    pub params: P,
}

/// `inform` parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InformParams<'a> {
    /// The firmware version the device runs.
    pub version: &'a str,
}

/// `progress` parameters, as the wire carries them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProgressParams<'a> {
    /// The step as a decimal string.
    pub step: String,
    /// Text for the console; left out when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desc: Option<&'a str>,
}

/// Parameters with no fields: `{}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EmptyParams {}

/// A reply envelope (A4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReplyBody<'a, D> {
    /// The id of the request answered; left out when it had none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a MessageId>,
    /// The reply code.
    pub code: i64,
    /// The reply data.
    pub data: D,
    /// An error text; left out when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
}

/// The device reports the firmware version it runs (topic `inform`).
#[must_use]
pub fn inform_request(id: &MessageId, firmware_version: &str) -> Vec<u8> {
    to_json(&Request {
        id,
        version: PROTOCOL_VERSION,
        method: OtaTopic::Inform.method(),
        params: InformParams {
            version: firmware_version,
        },
    })
}

/// The device reports upgrade progress or a failure (topic `progress`).
#[must_use]
pub fn progress_request(id: &MessageId, progress: &Progress) -> Vec<u8> {
    to_json(&Request {
        id,
        version: PROTOCOL_VERSION,
        method: OtaTopic::Progress.method(),
        params: ProgressParams {
            step: progress.step.to_string(),
            desc: progress.desc.as_deref(),
        },
    })
}

/// The device asks for the firmware it may install (topic `getversion`).
#[must_use]
pub fn get_version_request(id: &MessageId) -> Vec<u8> {
    to_json(&Request {
        id,
        version: PROTOCOL_VERSION,
        method: OtaTopic::GetVersion.method(),
        params: EmptyParams {},
    })
}

/// A reply with `"data":{}`: the device's `upgrade_reply` (with the command's id), or the
/// cloud's `inform_reply` and `progress_reply`.
#[must_use]
pub fn reply(id: Option<&MessageId>, code: ReplyCode, message: Option<&str>) -> Vec<u8> {
    to_json(&ReplyBody {
        id,
        code: code.0,
        data: EmptyParams {},
        message,
    })
}

/// The cloud pushes an upgrade (topic `upgrade`; for simulators and tests).
#[must_use]
pub fn upgrade_command(id: &MessageId, firmware: &Firmware) -> Vec<u8> {
    to_json(&Request {
        id,
        version: PROTOCOL_VERSION,
        method: OtaTopic::Upgrade.method(),
        params: firmware,
    })
}

/// The cloud lists installable firmware (topic `getversion_reply`; for simulators and
/// tests).
#[must_use]
pub fn get_version_reply(
    id: Option<&MessageId>,
    code: ReplyCode,
    firmwares: &[Firmware],
) -> Vec<u8> {
    to_json(&ReplyBody {
        id,
        code: code.0,
        data: firmwares,
        message: None,
    })
}

/// A firmware the cloud offers (A5, A7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Firmware {
    /// The firmware version, free-form.
    pub version: String,
    /// The hex digest of the whole file.
    pub sign: String,
    /// The digest algorithm: `md5` or `sha256`.
    pub sign_method: String,
    /// Where the file is: a path or an `enos-connect://` URI for the HTTP broker.
    pub file_url: String,
    /// The file's size in bytes.
    pub file_size: u64,
}

impl Firmware {
    /// Reads the fields in their documented order, so the first missing one is named.
    fn from_object(obj: &Map<String, Value>) -> Result<Self, BodyError> {
        let w = FIRMWARE_WHAT;
        let version = required_string(obj, "version", w)?;
        let sign = required_string(obj, "sign", w)?;
        let sign_method = required_string(obj, "signMethod", w)?;
        let file_url = required_string(obj, "fileUrl", w)?;
        let file_size = match present(obj, "fileSize") {
            None => return Err(body_error(w, BodyErrorKind::MissingField("fileSize"))),
            Some(Value::Number(n)) => n
                .as_u64()
                .ok_or(body_error(w, BodyErrorKind::BadValue("fileSize")))?,
            Some(Value::String(s)) => s
                .parse()
                .map_err(|_| body_error(w, BodyErrorKind::BadValue("fileSize")))?,
            Some(_) => return Err(body_error(w, BodyErrorKind::WrongType("fileSize"))),
        };
        Ok(Firmware {
            version,
            sign,
            sign_method,
            file_url,
            file_size,
        })
    }

    /// The expected digest, from `signMethod` and `sign`.
    pub fn expected_digest(&self) -> Result<FirmwareSign, BodyError> {
        FirmwareSign::parse(&self.sign_method, &self.sign)
    }
}

/// The cloud's upgrade push (topic `upgrade`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeCommand {
    /// The command's id, which the `upgrade_reply` repeats.
    pub id: Option<MessageId>,
    /// The firmware to install.
    pub firmware: Firmware,
}

impl UpgradeCommand {
    /// Reads an upgrade push; its `method` must be `ota.device.upgrade`.
    pub fn parse(json: &[u8]) -> Result<Self, BodyError> {
        let obj = parse_object(json, UPGRADE_WHAT)?;
        check_method(&obj, OtaTopic::Upgrade, UPGRADE_WHAT)?;
        let id = message_id(&obj, UPGRADE_WHAT)?;
        let params = match present(&obj, "params") {
            None => {
                return Err(body_error(
                    UPGRADE_WHAT,
                    BodyErrorKind::MissingField("params"),
                ))
            }
            Some(Value::Object(p)) => p,
            Some(_) => return Err(body_error(UPGRADE_WHAT, BodyErrorKind::WrongType("params"))),
        };
        Ok(UpgradeCommand {
            id,
            firmware: Firmware::from_object(params)?,
        })
    }
}

/// A reply whose data the device does not use: `inform_reply`, `progress_reply` (and, for
/// the cloud, `upgrade_reply`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The id of the request answered.
    pub id: Option<MessageId>,
    /// The reply code.
    pub code: ReplyCode,
    /// The error text, if any.
    pub message: Option<String>,
}

impl Reply {
    /// Reads a reply; `code` is required, `data` is ignored.
    pub fn parse(json: &[u8]) -> Result<Self, BodyError> {
        let obj = parse_object(json, REPLY_WHAT)?;
        Self::from_object(&obj, REPLY_WHAT)
    }

    fn from_object(obj: &Map<String, Value>, what: &'static str) -> Result<Self, BodyError> {
        let code = match present(obj, "code") {
            None => return Err(body_error(what, BodyErrorKind::MissingField("code"))),
            Some(Value::Number(n)) => n
                .as_i64()
                .ok_or(body_error(what, BodyErrorKind::BadValue("code")))?,
            Some(_) => return Err(body_error(what, BodyErrorKind::WrongType("code"))),
        };
        Ok(Reply {
            id: message_id(obj, what)?,
            code: ReplyCode(code),
            message: optional_string(obj, "message", what)?,
        })
    }

    /// `Ok` for code 200, else the refusal the code makes.
    pub fn result(&self) -> Result<(), Refusal> {
        self.code.refusal().map_or(Ok(()), Err)
    }
}

/// The cloud's `getversion_reply`: the firmware the device may install.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionsReply {
    /// Id, code and message.
    pub reply: Reply,
    /// The firmware offered; empty when none or when the code is an error.
    pub firmwares: Vec<Firmware>,
}

impl VersionsReply {
    /// Reads a `getversion_reply`. With code 200 `data` must be an array of firmware (absent
    /// reads as none); with an error code it is ignored.
    pub fn parse(json: &[u8]) -> Result<Self, BodyError> {
        let obj = parse_object(json, VERSIONS_WHAT)?;
        let reply = Reply::from_object(&obj, VERSIONS_WHAT)?;
        let mut firmwares = Vec::new();
        if reply.code.is_success() {
            match present(&obj, "data") {
                None => {}
                Some(Value::Array(items)) => {
                    for item in items {
                        let Value::Object(fw) = item else {
                            return Err(body_error(
                                VERSIONS_WHAT,
                                BodyErrorKind::WrongType("data"),
                            ));
                        };
                        firmwares.push(Firmware::from_object(fw)?);
                    }
                }
                Some(_) => return Err(body_error(VERSIONS_WHAT, BodyErrorKind::WrongType("data"))),
            }
        }
        Ok(VersionsReply { reply, firmwares })
    }
}

/// What a device publishes, as the cloud reads it (for simulators and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceRequest {
    /// `inform`: the version the device runs.
    Inform {
        /// The request id.
        id: Option<MessageId>,
        /// The firmware version.
        version: String,
    },
    /// `progress`: a step and its text.
    Progress {
        /// The request id.
        id: Option<MessageId>,
        /// The step and description.
        progress: Progress,
    },
    /// `getversion`.
    GetVersion {
        /// The request id.
        id: Option<MessageId>,
    },
}

impl DeviceRequest {
    /// Reads a request published on `topic`; its `method` must match the topic. `upgrade`
    /// is not a device request and is refused as [`BodyErrorKind::WrongMethod`].
    pub fn parse(topic: OtaTopic, json: &[u8]) -> Result<Self, BodyError> {
        let w = REQUEST_WHAT;
        let obj = parse_object(json, w)?;
        if !topic.is_upstream() {
            return Err(body_error(w, BodyErrorKind::WrongMethod));
        }
        check_method(&obj, topic, w)?;
        let id = message_id(&obj, w)?;
        let params = params(&obj, w)?;
        Ok(match topic {
            OtaTopic::Inform => DeviceRequest::Inform {
                id,
                version: required_string(&params, "version", w)?,
            },
            OtaTopic::Progress => {
                let step = match present(&params, "step") {
                    None => return Err(body_error(w, BodyErrorKind::MissingField("step"))),
                    Some(Value::String(s)) => s.parse().ok(),
                    Some(Value::Number(n)) => n
                        .as_i64()
                        .and_then(|v| i32::try_from(v).ok())
                        .and_then(Step::new),
                    Some(_) => return Err(body_error(w, BodyErrorKind::WrongType("step"))),
                }
                .ok_or(body_error(w, BodyErrorKind::BadValue("step")))?;
                DeviceRequest::Progress {
                    id,
                    progress: Progress {
                        step,
                        desc: optional_string(&params, "desc", w)?,
                    },
                }
            }
            OtaTopic::GetVersion | OtaTopic::Upgrade => DeviceRequest::GetVersion { id },
        })
    }
}

// ---------------------------------------------------------------------------------------
// Reply codes (A4, A6)
// ---------------------------------------------------------------------------------------

/// An EnOS reply code, with its name and meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReplyCode(pub i64);

impl ReplyCode {
    /// 200: success.
    pub const OK: ReplyCode = ReplyCode(200);
    /// 764: the cloud has no OTA task for this device.
    pub const TASK_NOT_FOUND: ReplyCode = ReplyCode(764);
    /// 765: the device's OTA task exists but has not started.
    pub const TASK_NOT_STARTED: ReplyCode = ReplyCode(765);
    /// 1008: the message is too large.
    pub const MESSAGE_TOO_LARGE: ReplyCode = ReplyCode(1008);
    /// 1009: no permission to publish, or not logged in.
    pub const NOT_PERMITTED: ReplyCode = ReplyCode(1009);
    /// 1101: the device has no handler for the command (SDK).
    pub const HANDLER_NOT_REGISTERED: ReplyCode = ReplyCode(1101);
    /// 1102: the device's command handler failed (SDK).
    pub const HANDLER_FAILED: ReplyCode = ReplyCode(1102);
    /// 1220: the payload is not valid JSON.
    pub const BAD_JSON: ReplyCode = ReplyCode(1220);
    /// 1251: the payload is empty.
    pub const EMPTY_PAYLOAD: ReplyCode = ReplyCode(1251);
    /// 1260: the method is not valid for the topic.
    pub const METHOD_NOT_ALLOWED: ReplyCode = ReplyCode(1260);

    /// Whether the code is 200.
    #[must_use]
    pub const fn is_success(self) -> bool {
        self.0 == Self::OK.0
    }

    /// The code's name, e.g. `"DEVICE_TASK_NOT_FOUND"`; unknown codes are named by their
    /// category.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self.0 {
            200 => "SUCCESS",
            764 => "DEVICE_TASK_NOT_FOUND",
            765 => "DEVICE_TASK_NOT_START",
            1008 => "MESSAGE_TOO_LARGE",
            1009 => "NO_PUBLISH_PERMISSION",
            1101 => "HANDLER_NOT_REGISTERED",
            1102 => "HANDLER_FAILED",
            1220 => "INVALID_JSON",
            1251 => "EMPTY_PAYLOAD",
            1260 => "METHOD_NOT_ALLOWED",
            600..=699 => "PRODUCT_ERROR",
            700..=799 => "DEVICE_ERROR",
            800..=899 => "DATA_ERROR",
            900..=999 => "MODEL_ERROR",
            1000..=1099 => "TRANSPORT_ERROR",
            1100..=1199 => "CLIENT_ERROR",
            2000.. => "USER_DEFINED_ERROR",
            _ => "UNKNOWN_ERROR",
        }
    }

    /// What the code means to a person, and what to do next.
    #[must_use]
    pub const fn meaning(self) -> &'static str {
        match self.0 {
            200 => "the request succeeded",
            764 => "EnOS has no upgrade task for this device; create or check the OTA job",
            765 => "the device's upgrade task has not started yet; wait for its schedule",
            1008 => "the message is too large for EnOS",
            1009 => "the device may not publish here or is not logged in; check its credentials",
            1101 => "the device has no handler for this command",
            1102 => "the device's handler for this command failed",
            1220 => "EnOS could not read the message as JSON",
            1251 => "EnOS received an empty message",
            1260 => "EnOS does not accept this method on this topic",
            600..=699 => "EnOS refused the request: a product error",
            700..=799 => "EnOS refused the request: a device error",
            800..=899 => "EnOS refused the request: a data error",
            900..=999 => "EnOS refused the request: a model error",
            1000..=1099 => "EnOS refused the request: a transport error",
            1100..=1199 => "EnOS refused the request: a client error",
            2000.. => "the request failed with an application-defined error",
            _ => "EnOS refused the request with an unknown code",
        }
    }

    /// Whether asking again unchanged can succeed: only for a task not started yet.
    #[must_use]
    pub const fn retryable(self) -> bool {
        self.0 == Self::TASK_NOT_STARTED.0
    }

    /// The refusal this code makes, with [`Vendor::Enos`]; `None` for 200.
    #[must_use]
    pub fn refusal(self) -> Option<Refusal> {
        (!self.is_success()).then(|| Refusal {
            vendor: Vendor::Enos,
            code: self.0,
            name: self.name(),
            meaning: self.meaning(),
            retryable: self.retryable(),
        })
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.name(), self.0, self.meaning())
    }
}

// ---------------------------------------------------------------------------------------
// Progress (A6)
// ---------------------------------------------------------------------------------------

/// A progress step: 0…100 percent, or a failure below 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Step(i32);

/// What a [`Step`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepKind {
    /// 0…100: percent done.
    Percent(u8),
    /// −1: the upgrade failed.
    UpgradeFailed,
    /// −2: the download failed.
    DownloadFailed,
    /// −3: verification (the sign) failed.
    VerificationFailed,
    /// −4: writing the flash failed.
    BurningFailed,
    /// Below −4: a failure of the device's own; say what in `desc`.
    Custom(i32),
}

impl Step {
    /// −1: the upgrade failed.
    pub const UPGRADE_FAILED: Step = Step(-1);
    /// −2: the download failed.
    pub const DOWNLOAD_FAILED: Step = Step(-2);
    /// −3: verification failed.
    pub const VERIFICATION_FAILED: Step = Step(-3);
    /// −4: burning (the flash write) failed.
    pub const BURNING_FAILED: Step = Step(-4);
    /// −5: the device declined this upgrade (an SDK constant; custom to the docs).
    pub const DECLINED: Step = Step(-5);

    /// The step `value`, or `None` above 100.
    #[must_use]
    pub const fn new(value: i32) -> Option<Self> {
        if value <= 100 {
            Some(Step(value))
        } else {
            None
        }
    }

    /// `percent` done, or `None` above 100.
    #[must_use]
    pub const fn percent(percent: u8) -> Option<Self> {
        if percent <= 100 {
            Some(Step(percent as i32))
        } else {
            None
        }
    }

    /// A custom failure `code`, or `None` unless it is below −4.
    #[must_use]
    pub const fn custom(code: i32) -> Option<Self> {
        if code < -4 {
            Some(Step(code))
        } else {
            None
        }
    }

    /// The number on the wire.
    #[must_use]
    pub const fn value(self) -> i32 {
        self.0
    }

    /// What the step says.
    #[must_use]
    pub const fn kind(self) -> StepKind {
        match self.0 {
            -1 => StepKind::UpgradeFailed,
            -2 => StepKind::DownloadFailed,
            -3 => StepKind::VerificationFailed,
            -4 => StepKind::BurningFailed,
            // `new` keeps values at most 100, so the cast loses nothing.
            v @ 0.. => StepKind::Percent(v as u8),
            v => StepKind::Custom(v),
        }
    }

    /// Whether the step reports a failure (below 0).
    #[must_use]
    pub const fn is_failure(self) -> bool {
        self.0 < 0
    }

    /// A short description for `desc`, as the console words it.
    #[must_use]
    pub const fn desc(self) -> &'static str {
        match self.kind() {
            StepKind::Percent(_) => "upgrading",
            StepKind::UpgradeFailed => "upgrade failure",
            StepKind::DownloadFailed => "download failure",
            StepKind::VerificationFailed => "verification failure",
            StepKind::BurningFailed => "burning failure",
            StepKind::Custom(-5) => "the device declined the upgrade",
            StepKind::Custom(_) => "custom failure",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The text is not a step: not a decimal integer, or above 100.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadStep;

impl fmt::Display for BadStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not an EnOS progress step (an integer of at most 100)")
    }
}

impl FromStr for Step {
    type Err = BadStep;

    fn from_str(s: &str) -> Result<Self, BadStep> {
        s.parse::<i32>().ok().and_then(Step::new).ok_or(BadStep)
    }
}

/// A progress report: a step and optional text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The step.
    pub step: Step,
    /// Text for the console (the failure's cause, for a custom step).
    pub desc: Option<String>,
}

impl Progress {
    /// A report of `step` with its standard description.
    #[must_use]
    pub fn new(step: Step) -> Self {
        Progress {
            step,
            desc: Some(step.desc().to_string()),
        }
    }

    /// A report of `step` with `desc`.
    #[must_use]
    pub fn with_desc(step: Step, desc: impl Into<String>) -> Self {
        Progress {
            step,
            desc: Some(desc.into()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The firmware sign (A7)
// ---------------------------------------------------------------------------------------

/// The digest a firmware file must have: the algorithm of `signMethod` and the value of
/// `sign`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FirmwareSign {
    expected: DigestValue,
}

impl FirmwareSign {
    /// Reads `signMethod` (`md5` or `sha256`, either case) and `sign` (hex of that digest,
    /// either case).
    pub fn parse(sign_method: &str, sign: &str) -> Result<Self, BodyError> {
        let alg: DigestAlg = sign_method
            .parse()
            .map_err(|_| body_error(FIRMWARE_WHAT, BodyErrorKind::BadValue("signMethod")))?;
        let bad_sign = |_| body_error(FIRMWARE_WHAT, BodyErrorKind::BadValue("sign"));
        let expected = match alg {
            DigestAlg::Md5 => DigestValue::Md5(parse_hex(sign).map_err(bad_sign)?),
            DigestAlg::Sha256 => DigestValue::Sha256(parse_hex(sign).map_err(bad_sign)?),
        };
        Ok(FirmwareSign { expected })
    }

    /// The algorithm to hash the file with.
    #[must_use]
    pub fn alg(&self) -> DigestAlg {
        self.expected.alg()
    }

    /// The digest the file must have.
    #[must_use]
    pub fn expected(&self) -> &DigestValue {
        &self.expected
    }

    /// A streaming hasher of the right algorithm, for a file that arrives in pieces.
    #[must_use]
    pub fn hasher(&self) -> Hasher {
        Hasher::new(self.alg())
    }

    /// Checks a digest computed over the whole file. A digest of another algorithm is the
    /// caller's mistake ([`Misuse`]); a different value is [`VerifyError::Md5Mismatch`] or
    /// [`VerifyError::DigestMismatch`].
    pub fn check(&self, computed: &DigestValue) -> Result<(), Error> {
        match (self.expected, *computed) {
            (a, b) if a == b => Ok(()),
            (DigestValue::Md5(expected), DigestValue::Md5(actual)) => {
                Err(VerifyError::Md5Mismatch { expected, actual }.into())
            }
            (DigestValue::Sha256(expected), DigestValue::Sha256(actual)) => {
                Err(VerifyError::DigestMismatch { expected, actual }.into())
            }
            _ => Err(Misuse::InvalidArgument(
                "the digest was computed with another algorithm than the firmware's signMethod",
            )
            .into()),
        }
    }

    /// Hashes the whole `file` and checks it.
    pub fn check_bytes(&self, file: &[u8]) -> Result<(), Error> {
        let mut hasher = self.hasher();
        hasher.update(file);
        self.check(&hasher.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::digest::{md5, sha256};
    use crate::test_rng::Rng;
    use alloc::string::ToString;
    use alloc::vec;

    fn doc_device() -> DeviceId {
        DeviceId::new("654321", "test").unwrap()
    }

    /// The notes' own vector (A2): doc example inputs, secret `abcdefg`, id `123456`.
    fn doc_credentials() -> SecretCredentials {
        SecretCredentials::new(doc_device(), "abcdefg")
            .with_client_id("123456")
            .unwrap()
    }

    const DOC_TIMESTAMP: u64 = 1_548_753_362_502;

    #[test]
    fn sign_string_matches_the_notes() {
        assert_eq!(
            sign_content(
                &[
                    ("timestamp", "1548753362502"),
                    ("productKey", "654321"),
                    ("clientId", "123456"),
                    ("deviceKey", "test"),
                ],
                "abcdefg"
            ),
            "clientId123456deviceKeytestproductKey654321timestamp1548753362502abcdefg"
        );
    }

    #[test]
    fn sha256_sign_matches_the_notes() {
        let creds = doc_credentials().sign(DOC_TIMESTAMP);
        assert_eq!(
            creds.password,
            "B99032D49C706F7B27B22AB5CD2DD3C56A31E1BCBBC83BA0A2A6BB3272FBB166"
        );
        assert_eq!(
            creds.client_id,
            "123456|securemode=2,signmethod=sha256,timestamp=1548753362502|"
        );
        assert_eq!(creds.username, "test&654321");
        assert_eq!(creds.device(), Some(doc_device()));
    }

    #[test]
    fn sha1_and_md5_signs() {
        let creds = doc_credentials()
            .with_sign_method(SignMethod::Sha1)
            .sign(DOC_TIMESTAMP);
        assert_eq!(creds.password, "53D00561032C47B8555B768A08FDE176A6F0D267");
        assert_eq!(
            creds.client_id,
            "123456|securemode=2,signmethod=sha1,timestamp=1548753362502|"
        );
        // MD5 of the same string (checked with Python's hashlib).
        let creds = doc_credentials()
            .with_sign_method(SignMethod::Md5)
            .with_mode(SecureMode::ProductSecret)
            .sign(DOC_TIMESTAMP);
        assert_eq!(creds.password, "B040B0189975E6704DBB2C217189FA3B");
        assert_eq!(
            creds.client_id,
            "123456|securemode=3,signmethod=md5,timestamp=1548753362502|"
        );
        // The default client id is the device key, and it is what is signed.
        let creds = SecretCredentials::new(doc_device(), "abcdefg").sign(DOC_TIMESTAMP);
        assert!(creds.client_id.starts_with("test|securemode=2,"));
        assert_eq!(
            creds.password,
            SignMethod::Sha256.hex_upper(
                b"clientIdtestdeviceKeytestproductKey654321timestamp1548753362502abcdefg"
            )
        );
    }

    #[test]
    fn http_auth_sign_matches_the_notes() {
        let device = DeviceId::new("pK11111", "dK987654").unwrap();
        assert_eq!(
            SecretCredentials::new(device, "secret123").http_auth_sign(DEFAULT_HTTP_LIFETIME_MS),
            "66b7551579fa4cc6fcd86f39c62b9fea04770ec3e6f38d91103b5b660bf6a529"
        );
    }

    #[test]
    fn credentials_refuse_and_hide() {
        for (pk, dk) in [
            ("", "d"),
            ("p", ""),
            ("p/x", "d"),
            ("p", "d+"),
            ("p", "a&b"),
            ("p q", "d"),
        ] {
            assert!(DeviceId::new(pk, dk).is_err(), "{pk:?} {dk:?}");
        }
        let c = SecretCredentials::new(doc_device(), "abcdefg");
        assert!(c.clone().with_client_id("").is_err());
        assert!(c.clone().with_client_id("a|b").is_err());
        assert!(c.clone().with_client_id("x".repeat(65)).is_err());
        assert!(c.clone().with_client_id("x".repeat(64)).is_ok());
        assert!(!alloc::format!("{c:?}").contains("abcdefg"));
        let signed = c.sign(DOC_TIMESTAMP);
        assert!(!alloc::format!("{signed:?}").contains(&signed.password));
        assert_eq!(c.device(), &doc_device());

        assert_eq!("SHA256".parse(), Ok(SignMethod::Sha256));
        assert_eq!("hmacsha1".parse(), Ok(SignMethod::Sha1));
        assert_eq!("HmacMD5".parse(), Ok(SignMethod::Md5));
        assert_eq!("sha512".parse::<SignMethod>(), Err(UnknownSignMethod));
        assert_eq!(SignMethod::default(), SignMethod::Sha256);
    }

    #[test]
    fn presigned_credentials_parse() {
        let json = br#"{"clientId":"dk1|securemode=2,signmethod=sha256,timestamp=1|","username":"dk1&pk1","password":"AB12","expires":99}"#;
        let creds = MqttCredentials::from_json(json).unwrap();
        assert_eq!(
            creds.client_id,
            "dk1|securemode=2,signmethod=sha256,timestamp=1|"
        );
        assert_eq!(creds.device(), Some(DeviceId::new("pk1", "dk1").unwrap()));
        // Serialises back with the same names.
        assert_eq!(
            serde_json::to_vec(&creds).unwrap(),
            br#"{"clientId":"dk1|securemode=2,signmethod=sha256,timestamp=1|","username":"dk1&pk1","password":"AB12"}"#
        );
        assert_eq!(
            MqttCredentials::from_json(br#"{"clientId":"c","username":"u"}"#),
            Err(BodyError {
                what: "EnOS MQTT credentials",
                kind: BodyErrorKind::MissingField("password")
            })
        );
        assert_eq!(
            MqttCredentials::from_json(br#"{"clientId":"c","username":"u","password":7}"#)
                .unwrap_err()
                .kind,
            BodyErrorKind::WrongType("password")
        );
        assert_eq!(
            MqttCredentials::from_json(b"[1]").unwrap_err().kind,
            BodyErrorKind::NotJson
        );
        let odd = MqttCredentials {
            username: "no-ampersand".into(),
            ..creds
        };
        assert_eq!(odd.device(), None);
    }

    #[test]
    fn topics_build_and_parse() {
        let d = DeviceId::new("pk", "dk").unwrap();
        let expect = [
            (
                OtaTopic::Inform,
                "/sys/pk/dk/ota/device/inform",
                "ota.device.inform",
            ),
            (
                OtaTopic::Upgrade,
                "/sys/pk/dk/ota/device/upgrade",
                "ota.device.upgrade",
            ),
            (
                OtaTopic::Progress,
                "/sys/pk/dk/ota/device/progress",
                "ota.device.progress",
            ),
            (
                OtaTopic::GetVersion,
                "/sys/pk/dk/ota/device/getversion",
                "ota.device.getversion",
            ),
        ];
        for (topic, text, method) in expect {
            assert_eq!(d.topic(topic), text);
            assert_eq!(topic.method(), method);
            let reply = d.reply_topic(topic);
            assert_eq!(reply, alloc::format!("{text}_reply"));
            assert_eq!(
                TopicRef::parse(text),
                Some(TopicRef {
                    product_key: "pk",
                    device_key: "dk",
                    topic,
                    reply: false
                })
            );
            let parsed = TopicRef::parse(&reply).unwrap();
            assert!(parsed.reply && parsed.topic == topic && parsed.is_for(&d));
            assert!(!parsed.is_for(&DeviceId::new("pk", "other").unwrap()));
        }
        assert!(!OtaTopic::Upgrade.is_upstream());
        assert!(OtaTopic::Progress.is_upstream());
        for other in [
            "",
            "/sys/pk/dk/ota/device/request",
            "/sys/pk/dk/ota/device/inform/x",
            "/sys/pk/dk/ota/device/inform_reply_reply",
            "/sys/pk/dk/ota/device/",
            "/sys/pk//ota/device/inform",
            "/sys//dk/ota/device/inform",
            "sys/pk/dk/ota/device/inform",
            "/sys/pk/dk/thing/device/inform",
            "/ext/session/pk/dk/thing/activate/info",
            "/sys/pk/dk/ota/device/Inform",
        ] {
            assert_eq!(TopicRef::parse(other), None, "{other:?}");
        }
    }

    #[test]
    fn device_messages_are_byte_exact() {
        let id = MessageId::from(123);
        // The notes' examples (A5, the seed), without their whitespace.
        assert_eq!(
            inform_request(&id, "xxxxxxxx"),
            br#"{"id":"123","version":"1.0","method":"ota.device.inform","params":{"version":"xxxxxxxx"}}"#
        );
        assert_eq!(
            progress_request(&id, &Progress::with_desc(Step::percent(1).unwrap(), "desc")),
            br#"{"id":"123","version":"1.0","method":"ota.device.progress","params":{"step":"1","desc":"desc"}}"#
        );
        assert_eq!(
            get_version_request(&id),
            br#"{"id":"123","version":"1.0","method":"ota.device.getversion","params":{}}"#
        );
        assert_eq!(
            reply(Some(&id), ReplyCode::OK, None),
            br#"{"id":"123","code":200,"data":{}}"#
        );
        // A failure report, with and without text; a reply with a message and no id.
        assert_eq!(
            progress_request(&MessageId::from(7), &Progress::new(Step::VERIFICATION_FAILED)),
            br#"{"id":"7","version":"1.0","method":"ota.device.progress","params":{"step":"-3","desc":"verification failure"}}"#
        );
        assert_eq!(
            progress_request(
                &MessageId::from(8),
                &Progress {
                    step: Step::custom(-9).unwrap(),
                    desc: None
                }
            ),
            br#"{"id":"8","version":"1.0","method":"ota.device.progress","params":{"step":"-9"}}"#
        );
        assert_eq!(
            reply(None, ReplyCode::HANDLER_FAILED, Some("flash busy")),
            br#"{"code":1102,"data":{},"message":"flash busy"}"#
        );
        // JSON escaping of odd versions.
        assert_eq!(
            inform_request(&MessageId::from(1), "v\"2\"\\é"),
            "{\"id\":\"1\",\"version\":\"1.0\",\"method\":\"ota.device.inform\",\"params\":{\"version\":\"v\\\"2\\\"\\\\é\"}}".as_bytes()
        );
    }

    /// The notes' upgrade push, as the seed prints it.
    const UPGRADE_PUSH: &str = r#"{
"id":"123",
"version":"1.0",
"method":"ota.device.upgrade",
"params": {
"version":"v1.0",
"sign":"xxxxxxx",
"signMethod":"md5",
"fileUrl":"/1b30e0ea83002000/ota/kadak13",
"fileSize":1024
}
}"#;

    fn doc_firmware() -> Firmware {
        Firmware {
            version: "v1.0".into(),
            sign: "xxxxxxx".into(),
            sign_method: "md5".into(),
            file_url: "/1b30e0ea83002000/ota/kadak13".into(),
            file_size: 1024,
        }
    }

    #[test]
    fn cloud_messages_parse() {
        assert_eq!(
            UpgradeCommand::parse(UPGRADE_PUSH.as_bytes()),
            Ok(UpgradeCommand {
                id: Some(MessageId("123".into())),
                firmware: doc_firmware(),
            })
        );
        // The seed's sign is a placeholder, not hex.
        assert_eq!(
            doc_firmware().expected_digest(),
            Err(BodyError {
                what: "EnOS firmware",
                kind: BodyErrorKind::BadValue("sign")
            })
        );

        let ok = Reply::parse(
            br#"{
"id": "123",
"code": 200,
"data": {}
}"#,
        )
        .unwrap();
        assert_eq!(
            ok,
            Reply {
                id: Some(MessageId("123".into())),
                code: ReplyCode::OK,
                message: None
            }
        );
        assert_eq!(ok.result(), Ok(()));

        let versions = VersionsReply::parse(
            br#"{
"id":"123",
"code":200,
"data": [
{
"version":"v1.0",
"sign":"xxxxxxx",
"signMethod":"md5",
"fileUrl":"/1b30e0ea83002000/ota/kadak13",
"fileSize":1024
}
]
}"#,
        )
        .unwrap();
        assert_eq!(versions.firmwares, [doc_firmware()]);
        assert_eq!(versions.reply.id, Some(MessageId("123".into())));

        // Refusals from progress_reply.
        for (json, code, name, retryable) in [
            (
                &br#"{"id":"5","code":764,"data":{},"message":"Device task not found"}"#[..],
                764,
                "DEVICE_TASK_NOT_FOUND",
                false,
            ),
            (
                br#"{"id":5,"code":765,"message":"Device task not start"}"#,
                765,
                "DEVICE_TASK_NOT_START",
                true,
            ),
        ] {
            let r = Reply::parse(json).unwrap();
            assert_eq!(r.id, Some(MessageId("5".into())));
            let refusal = r.result().unwrap_err();
            assert_eq!(refusal.vendor, Vendor::Enos);
            assert_eq!(refusal.code, code);
            assert_eq!(refusal.name, name);
            assert_eq!(refusal.retryable, retryable);
            assert!(r.message.is_some());
        }
        // An error code ignores whatever data holds.
        let v = VersionsReply::parse(br#"{"id":"1","code":764,"data":"nothing"}"#).unwrap();
        assert!(v.firmwares.is_empty());
        assert_eq!(v.reply.code, ReplyCode::TASK_NOT_FOUND);
        // No data with 200: nothing offered.
        assert!(VersionsReply::parse(br#"{"code":200}"#)
            .unwrap()
            .firmwares
            .is_empty());
    }

    #[test]
    fn cloud_messages_are_liberal_in_what_they_ignore() {
        // Unknown fields, an integer id, a string fileSize, an uppercase signMethod.
        let json = br#"{"id":42,"version":"1.1","method":"ota.device.upgrade","extra":[1,2],
            "params":{"version":"2.0.1","sign":"900150983CD24FB0D6963F7D28E17F72","signMethod":"MD5",
            "fileUrl":"enos-connect://abc","fileSize":"3","description":"x"}}"#;
        let cmd = UpgradeCommand::parse(json).unwrap();
        assert_eq!(cmd.id, Some(MessageId("42".into())));
        assert_eq!(cmd.firmware.file_size, 3);
        let sign = cmd.firmware.expected_digest().unwrap();
        assert_eq!(sign.alg(), DigestAlg::Md5);
        assert_eq!(sign.check_bytes(b"abc"), Ok(()));
        // No id at all.
        let json = br#"{"method":"ota.device.upgrade","params":{"version":"1","sign":"s","signMethod":"md5","fileUrl":"/f","fileSize":0}}"#;
        assert_eq!(UpgradeCommand::parse(json).unwrap().id, None);
    }

    #[test]
    fn cloud_message_errors_are_typed() {
        let err = |json: &[u8]| UpgradeCommand::parse(json).unwrap_err().kind;
        assert_eq!(err(b"not json"), BodyErrorKind::NotJson);
        assert_eq!(err(b"\"string\""), BodyErrorKind::NotJson);
        assert_eq!(err(b"{\"method\":"), BodyErrorKind::NotJson);
        assert_eq!(
            err(br#"{"params":{}}"#),
            BodyErrorKind::MissingField("method")
        );
        assert_eq!(err(br#"{"method":7}"#), BodyErrorKind::WrongType("method"));
        assert_eq!(
            err(br#"{"method":"ota.device.inform","params":{}}"#),
            BodyErrorKind::WrongMethod
        );
        assert_eq!(
            err(br#"{"method":"ota.device.upgrade"}"#),
            BodyErrorKind::MissingField("params")
        );
        assert_eq!(
            err(br#"{"method":"ota.device.upgrade","params":[]}"#),
            BodyErrorKind::WrongType("params")
        );
        assert_eq!(
            err(br#"{"method":"ota.device.upgrade","id":1.5,"params":{}}"#),
            BodyErrorKind::WrongType("id")
        );
        let full = r#""version":"1","sign":"s","signMethod":"md5","fileUrl":"/f","fileSize":1"#;
        for field in ["version", "sign", "signMethod", "fileUrl", "fileSize"] {
            // Drop one field, or null it.
            let dropped: Vec<&str> = full
                .split(',')
                .filter(|kv| !kv.starts_with(&alloc::format!("\"{field}\"")))
                .collect();
            let json = alloc::format!(
                r#"{{"method":"ota.device.upgrade","params":{{{}}}}}"#,
                dropped.join(",")
            );
            let e = UpgradeCommand::parse(json.as_bytes()).unwrap_err();
            assert_eq!(e.what, "EnOS firmware");
            assert_eq!(e.kind, BodyErrorKind::MissingField(field), "{json}");
            let nulled = alloc::format!(
                r#"{{"method":"ota.device.upgrade","params":{{{},"{field}":null}}}}"#,
                dropped.join(",")
            );
            assert_eq!(
                UpgradeCommand::parse(nulled.as_bytes()).unwrap_err().kind,
                BodyErrorKind::MissingField(field)
            );
        }
        let with = |patch: &str| {
            let json =
                alloc::format!(r#"{{"method":"ota.device.upgrade","params":{{{full},{patch}}}}}"#);
            UpgradeCommand::parse(json.as_bytes()).unwrap_err().kind
        };
        assert_eq!(
            with(r#""fileSize":-1"#),
            BodyErrorKind::BadValue("fileSize")
        );
        assert_eq!(
            with(r#""fileSize":"1kB""#),
            BodyErrorKind::BadValue("fileSize")
        );
        assert_eq!(
            with(r#""fileSize":true"#),
            BodyErrorKind::WrongType("fileSize")
        );
        assert_eq!(with(r#""version":2"#), BodyErrorKind::WrongType("version"));

        let reply_err = |json: &[u8]| Reply::parse(json).unwrap_err().kind;
        assert_eq!(
            reply_err(br#"{"id":"1"}"#),
            BodyErrorKind::MissingField("code")
        );
        assert_eq!(
            reply_err(br#"{"code":"200"}"#),
            BodyErrorKind::WrongType("code")
        );
        assert_eq!(
            reply_err(br#"{"code":2.5}"#),
            BodyErrorKind::BadValue("code")
        );
        assert_eq!(
            reply_err(br#"{"code":200,"message":5}"#),
            BodyErrorKind::WrongType("message")
        );
        assert_eq!(
            VersionsReply::parse(br#"{"code":200,"data":{}}"#)
                .unwrap_err()
                .kind,
            BodyErrorKind::WrongType("data")
        );
        assert_eq!(
            VersionsReply::parse(br#"{"code":200,"data":[1]}"#)
                .unwrap_err()
                .kind,
            BodyErrorKind::WrongType("data")
        );
        assert_eq!(
            VersionsReply::parse(br#"{"code":200,"data":[{"version":"1"}]}"#).unwrap_err(),
            BodyError {
                what: "EnOS firmware",
                kind: BodyErrorKind::MissingField("sign")
            }
        );

        let e = BodyError {
            what: UPGRADE_WHAT,
            kind: BodyErrorKind::MissingField("fileUrl"),
        };
        assert_eq!(
            e.to_string(),
            "EnOS upgrade command: field `fileUrl` missing"
        );
        assert_eq!(
            Malformed::from(e),
            Malformed {
                what: "EnOS upgrade command",
                reason: DecodeError::BadValue
            }
        );
        assert_eq!(Error::from(e).code(), "peer-malformed");
    }

    #[test]
    fn cloud_side_builders_round_trip() {
        let id = MessageId::from(9);
        let fw = doc_firmware();
        let push = upgrade_command(&id, &fw);
        assert_eq!(
            push,
            br#"{"id":"9","version":"1.0","method":"ota.device.upgrade","params":{"version":"v1.0","sign":"xxxxxxx","signMethod":"md5","fileUrl":"/1b30e0ea83002000/ota/kadak13","fileSize":1024}}"#
        );
        assert_eq!(
            UpgradeCommand::parse(&push),
            Ok(UpgradeCommand {
                id: Some(id.clone()),
                firmware: fw.clone()
            })
        );
        let versions = get_version_reply(Some(&id), ReplyCode::OK, &[fw.clone(), fw.clone()]);
        assert_eq!(
            VersionsReply::parse(&versions).unwrap().firmwares,
            [fw.clone(), fw]
        );
        let refused = reply(
            Some(&id),
            ReplyCode::TASK_NOT_FOUND,
            Some("Device task not found"),
        );
        assert_eq!(
            refused,
            br#"{"id":"9","code":764,"data":{},"message":"Device task not found"}"#
        );
        assert_eq!(
            Reply::parse(&refused).unwrap().code,
            ReplyCode::TASK_NOT_FOUND
        );

        // Device requests, as the cloud reads them.
        assert_eq!(
            DeviceRequest::parse(OtaTopic::Inform, &inform_request(&id, "2.0")),
            Ok(DeviceRequest::Inform {
                id: Some(id.clone()),
                version: "2.0".into()
            })
        );
        assert_eq!(
            DeviceRequest::parse(
                OtaTopic::Progress,
                &progress_request(&id, &Progress::new(Step::DOWNLOAD_FAILED))
            ),
            Ok(DeviceRequest::Progress {
                id: Some(id.clone()),
                progress: Progress::new(Step::DOWNLOAD_FAILED)
            })
        );
        assert_eq!(
            DeviceRequest::parse(OtaTopic::GetVersion, &get_version_request(&id)),
            Ok(DeviceRequest::GetVersion {
                id: Some(id.clone())
            })
        );
        // A numeric step, and bad ones.
        assert_eq!(
            DeviceRequest::parse(
                OtaTopic::Progress,
                br#"{"method":"ota.device.progress","params":{"step":80}}"#
            ),
            Ok(DeviceRequest::Progress {
                id: None,
                progress: Progress {
                    step: Step::percent(80).unwrap(),
                    desc: None
                }
            })
        );
        for step in [r#""101""#, r#""x""#, "101", r#""1.5""#] {
            let json =
                alloc::format!(r#"{{"method":"ota.device.progress","params":{{"step":{step}}}}}"#);
            assert_eq!(
                DeviceRequest::parse(OtaTopic::Progress, json.as_bytes())
                    .unwrap_err()
                    .kind,
                BodyErrorKind::BadValue("step"),
                "{step}"
            );
        }
        assert_eq!(
            DeviceRequest::parse(OtaTopic::Progress, br#"{"method":"ota.device.progress"}"#)
                .unwrap_err()
                .kind,
            BodyErrorKind::MissingField("step")
        );
        // The docs' misspelt method is not accepted, nor a request on the upgrade topic.
        assert_eq!(
            DeviceRequest::parse(
                OtaTopic::Progress,
                br#"{"method":"ota.device.process","params":{"step":"1"}}"#
            )
            .unwrap_err()
            .kind,
            BodyErrorKind::WrongMethod
        );
        assert_eq!(
            DeviceRequest::parse(OtaTopic::Upgrade, &push)
                .unwrap_err()
                .kind,
            BodyErrorKind::WrongMethod
        );
    }

    #[test]
    fn reply_code_table() {
        let table = [
            (200, "SUCCESS", false),
            (764, "DEVICE_TASK_NOT_FOUND", false),
            (765, "DEVICE_TASK_NOT_START", true),
            (1008, "MESSAGE_TOO_LARGE", false),
            (1009, "NO_PUBLISH_PERMISSION", false),
            (1101, "HANDLER_NOT_REGISTERED", false),
            (1102, "HANDLER_FAILED", false),
            (1220, "INVALID_JSON", false),
            (1251, "EMPTY_PAYLOAD", false),
            (1260, "METHOD_NOT_ALLOWED", false),
            (612, "PRODUCT_ERROR", false),
            (701, "DEVICE_ERROR", false),
            (850, "DATA_ERROR", false),
            (999, "MODEL_ERROR", false),
            (1001, "TRANSPORT_ERROR", false),
            (1150, "CLIENT_ERROR", false),
            (2001, "USER_DEFINED_ERROR", false),
            (404, "UNKNOWN_ERROR", false),
            (-1, "UNKNOWN_ERROR", false),
        ];
        for (code, name, retryable) in table {
            let c = ReplyCode(code);
            assert_eq!(c.name(), name);
            assert_eq!(c.retryable(), retryable);
            assert!(!c.meaning().is_empty());
            match c.refusal() {
                None => assert_eq!(code, 200),
                Some(r) => {
                    assert_eq!(
                        (r.vendor, r.code, r.name, r.retryable),
                        (Vendor::Enos, code, name, retryable)
                    );
                    assert_eq!(r.meaning, c.meaning());
                }
            }
        }
        assert_eq!(
            ReplyCode::TASK_NOT_FOUND.to_string(),
            "DEVICE_TASK_NOT_FOUND (764): EnOS has no upgrade task for this device; create or \
             check the OTA job"
        );
        let e: Error = ReplyCode::TASK_NOT_STARTED.refusal().unwrap().into();
        assert!(e.retryable());
        assert_eq!(e.code(), "peer-refused");
    }

    #[test]
    fn steps() {
        assert_eq!(Step::percent(0).unwrap().kind(), StepKind::Percent(0));
        assert_eq!(Step::percent(100).unwrap().kind(), StepKind::Percent(100));
        assert_eq!(Step::percent(101), None);
        assert_eq!(Step::new(101), None);
        for (step, kind, desc) in [
            (
                Step::UPGRADE_FAILED,
                StepKind::UpgradeFailed,
                "upgrade failure",
            ),
            (
                Step::DOWNLOAD_FAILED,
                StepKind::DownloadFailed,
                "download failure",
            ),
            (
                Step::VERIFICATION_FAILED,
                StepKind::VerificationFailed,
                "verification failure",
            ),
            (
                Step::BURNING_FAILED,
                StepKind::BurningFailed,
                "burning failure",
            ),
            (
                Step::DECLINED,
                StepKind::Custom(-5),
                "the device declined the upgrade",
            ),
            (
                Step::custom(-100).unwrap(),
                StepKind::Custom(-100),
                "custom failure",
            ),
        ] {
            assert_eq!(step.kind(), kind);
            assert_eq!(step.desc(), desc);
            assert!(step.is_failure());
            assert_eq!(step.to_string().parse(), Ok(step));
        }
        assert_eq!(Step::custom(-4), None);
        assert_eq!(Step::custom(i32::MIN).unwrap().value(), i32::MIN);
        assert!(!Step::percent(50).unwrap().is_failure());
        assert_eq!(Step::percent(50).unwrap().desc(), "upgrading");
        assert_eq!("-2".parse(), Ok(Step::DOWNLOAD_FAILED));
        assert_eq!("101".parse::<Step>(), Err(BadStep));
        assert_eq!(" 1".parse::<Step>(), Err(BadStep));
        assert_eq!(
            Progress::new(Step::BURNING_FAILED).desc.as_deref(),
            Some("burning failure")
        );
    }

    #[test]
    fn firmware_sign_checks_digests() {
        let file = b"abc";
        let md5_hex = to_hex(&md5(file));
        let sha_hex = to_hex(&sha256(file));
        let s = FirmwareSign::parse("md5", &md5_hex).unwrap();
        assert_eq!(s.alg(), DigestAlg::Md5);
        assert_eq!(s.expected(), &DigestValue::Md5(md5(file)));
        assert_eq!(s.check_bytes(file), Ok(()));
        // Either case.
        let s = FirmwareSign::parse("SHA256", &sha_hex.to_uppercase()).unwrap();
        assert_eq!(s.alg(), DigestAlg::Sha256);
        assert_eq!(s.check_bytes(file), Ok(()));
        let mut h = s.hasher();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(s.check(&h.finalize()), Ok(()));

        assert_eq!(
            s.check_bytes(b"abd"),
            Err(Error::Verification(VerifyError::DigestMismatch {
                expected: sha256(file),
                actual: sha256(b"abd")
            }))
        );
        assert_eq!(
            FirmwareSign::parse("md5", &md5_hex)
                .unwrap()
                .check_bytes(b""),
            Err(Error::Verification(VerifyError::Md5Mismatch {
                expected: md5(file),
                actual: md5(b"")
            }))
        );
        assert!(matches!(
            s.check(&DigestValue::Md5(md5(file))),
            Err(Error::Misuse(Misuse::InvalidArgument(_)))
        ));
        for (method, sign, field) in [
            ("sha1", sha_hex.as_str(), "signMethod"),
            ("", sha_hex.as_str(), "signMethod"),
            ("md5", sha_hex.as_str(), "sign"),
            ("sha256", md5_hex.as_str(), "sign"),
            ("md5", "zz0150983cd24fb0d6963f7d28e17f72", "sign"),
        ] {
            assert_eq!(
                FirmwareSign::parse(method, sign),
                Err(BodyError {
                    what: "EnOS firmware",
                    kind: BodyErrorKind::BadValue(field)
                }),
                "{method} {sign}"
            );
        }
    }

    #[test]
    fn arbitrary_json_never_panics() {
        const NOISE: &[u8] = b"{}[]\":,0-9a \\\x00\xff";
        let mut rng = Rng(0x1234_5678_9ABC_DEF0);
        let seeds: Vec<Vec<u8>> = vec![
            UPGRADE_PUSH.as_bytes().to_vec(),
            br#"{"id":"1","code":200,"data":[{"version":"v","sign":"s","signMethod":"md5","fileUrl":"u","fileSize":1}]}"#.to_vec(),
            progress_request(&MessageId::from(1), &Progress::new(Step::DECLINED)),
        ];
        for round in 0..5_000 {
            let mut bytes = seeds[round % seeds.len()].clone();
            // Corrupt a few bytes, or cut the text short.
            for _ in 0..(rng.next() % 4) {
                let i = (rng.next() as usize) % bytes.len();
                bytes[i] = NOISE[(rng.next() % NOISE.len() as u64) as usize];
            }
            if rng.next().is_multiple_of(4) {
                bytes.truncate((rng.next() as usize) % bytes.len());
            }
            let _ = UpgradeCommand::parse(&bytes).map(|c| c.firmware.expected_digest());
            let _ = Reply::parse(&bytes).map(|r| r.result());
            let _ = VersionsReply::parse(&bytes);
            let _ = MqttCredentials::from_json(&bytes);
            for topic in OtaTopic::ALL {
                let _ = DeviceRequest::parse(topic, &bytes);
            }
            if let Ok(text) = core::str::from_utf8(&bytes) {
                let _ = TopicRef::parse(text);
            }
        }
    }

    #[test]
    fn file_service_login_and_download_paths_are_the_documented_ones() {
        let device = DeviceId::new("pK11111", "dK987654").unwrap();
        let secret = SecretCredentials::new(device.clone(), "secret123");
        let (path, body) = secret.file_login(300_000);
        assert_eq!(path, "/auth/pK11111/dK987654");
        assert_eq!(
            body,
            br#"{"lifetime":300000,"sign":"66b7551579fa4cc6fcd86f39c62b9fea04770ec3e6f38d91103b5b660bf6a529","signMethod":"sha256"}"#
        );
        assert_eq!(
            device.file_download_path("s 1", "enos-connect://ota/pK11111/2.0"),
            "/multipart/sys/pK11111/dK987654/file/download?sessionId=s%201\
             &fileUri=enos-connect%3A%2F%2Fota%2FpK11111%2F2.0&category=ota"
        );
        assert_eq!(percent_encode("2.0 beta/ä&x"), "2.0%20beta%2F%C3%A4%26x");
    }

    #[test]
    fn file_session_id_reads_the_login_answer_and_names_what_is_missing() {
        assert_eq!(
            file_session_id(br#"{"code":200,"data":{"sessionId":"abc"}}"#).unwrap(),
            "abc"
        );
        for bad in [
            &b"{}"[..],
            br#"{"data":"x"}"#,
            br#"{"data":{}}"#,
            b"not json",
        ] {
            assert!(
                file_session_id(bad).is_err(),
                "{:?}",
                core::str::from_utf8(bad)
            );
        }
    }
}
