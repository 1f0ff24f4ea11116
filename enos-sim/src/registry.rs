//! The cloud's state and decisions: devices and their reported versions, firmware, OTA
//! tasks with their recorded progress, and file-service login sessions.
//!
//! Contract. The registry does no I/O and reads no clock: every call takes `now_ms`
//! (milliseconds on the sim's own clock) and answers with the MQTT messages to publish
//! ([`Outbound`]), which the MQTT edge sends in order. Device requests follow
//! `protocols/enos_microchip.md` A5, A6 and A9:
//!
//! - `inform` records the version and replies 200. A task whose target version the device
//!   now reports succeeds; an open push task not yet started is pushed (again) — this is how
//!   an offline device gets its upgrade when it next comes online.
//! - `progress` replies 764 when the device has no task, 765 when its task has not started
//!   (a push not yet sent, or a request-policy task the device has not fetched with
//!   `getversion`), else records the step and replies 200. A negative step fails the task;
//!   a later non-negative one resumes it (the console's "re-upgrade").
//! - `getversion` replies 200 with the firmware of every open task of the device, of either
//!   policy, and starts those tasks.
//! - A task is created for a known device and a firmware of its product, and refused while
//!   the device has another open task (A9: one upgrade at a time), except that several
//!   request-policy tasks may stand together: they are offers, listed by one `getversion`,
//!   and progress goes to the one whose file the device downloaded. A push task goes out at
//!   once when the device sent anything within the online window.
//! - A malformed request gets 1220 on its reply topic; `upgrade_reply` codes are recorded.
//!
//! - Every GET of a firmware body is recorded ([`DownloadRecord`]) on the firmware and on
//!   the newest task for that firmware that has not succeeded (of the downloading device,
//!   when the file service's login names it), and [`Registry::download`] decides the
//!   `cutAfter` faults (see [`crate::config`]).
//!
//! Choices where the notes are open: devices not in the config are accepted and recorded
//! when they publish (the broker, not the sim, authenticates), but cannot log in to the
//! file service, which needs the device secret. A task succeeds on `inform` of its target
//! version, not on step 100 (A6: success is the new version reported).

use std::collections::HashMap;

use otaweb::wire::enos::{
    get_version_reply, percent_encode, reply, upgrade_command, DeviceId, DeviceRequest, Firmware,
    MessageId, OtaTopic, Progress, ReplyCode, SecretCredentials, SignMethod, TopicRef,
    DEFAULT_HTTP_LIFETIME_MS,
};
use serde::Serialize;
use serde_json::{json, Value};

use crate::config::{Config, FileUrlStyle, LoadedFirmware, Policy, TaskRequest};

/// One GET of a firmware file's body, as served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DownloadRecord {
    /// The request's `Range` header (`null` for a whole-file GET).
    pub range: Option<String>,
    /// The status answered: 200, 206, or 416 for a range past the end.
    pub status: u16,
    /// The body bytes sent.
    pub bytes: u64,
    /// Cut short by a `cutAfter` fault, the connection closed after `bytes`.
    pub cut: bool,
    /// The downloading device, when its file-service login names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_key: Option<String>,
    /// When it was served, in sim milliseconds.
    pub at_ms: u64,
}

/// One MQTT message the sim must publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outbound {
    /// The topic.
    pub topic: String,
    /// The JSON payload.
    pub payload: Vec<u8>,
}

/// Where a task stands (the console's statuses, A9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TaskStatus {
    /// Created; the firmware has not reached the device.
    ToBeUpgraded,
    /// Pushed or fetched; progress may come.
    InProgress,
    /// The device reported the target version.
    Succeeded,
    /// The device reported a negative step.
    Failed,
}

/// One progress report as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    /// The step, 100 down to negative failures.
    pub step: i32,
    /// The device's text, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
    /// When it arrived, in sim milliseconds.
    pub at_ms: u64,
}

/// One OTA task for one device.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// The task id (1, 2, ...).
    pub id: u64,
    /// The device's product key.
    pub product_key: String,
    /// The device key.
    pub device_key: String,
    /// The target firmware version.
    pub version: String,
    /// Push or upon request.
    pub policy: Policy,
    /// Where it stands.
    pub status: TaskStatus,
    /// How many `upgrade` commands went out for it.
    pub pushes: u32,
    /// The code of the device's last `upgrade_reply`, if any (SDK samples send none, A5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_reply: Option<i64>,
    /// Every progress report, in arrival order.
    pub steps: Vec<StepRecord>,
    /// Every GET of the target firmware's body while the task was open, in order.
    pub downloads: Vec<DownloadRecord>,
}

impl Task {
    /// Not yet finished: another task for the device is refused meanwhile.
    fn is_open(&self) -> bool {
        matches!(
            self.status,
            TaskStatus::ToBeUpgraded | TaskStatus::InProgress
        )
    }

    fn is_for(&self, pk: &str, dk: &str) -> bool {
        self.product_key == pk && self.device_key == dk
    }
}

/// A GET of a firmware file's body, as [`Registry::download`] takes it.
#[derive(Clone, Copy, Debug)]
pub struct BodyGet<'a> {
    /// The firmware's product key.
    pub product_key: &'a str,
    /// The firmware's version.
    pub version: &'a str,
    /// The downloading device, when the file service's login names it.
    pub device_key: Option<&'a str>,
    /// The request's `Range` header.
    pub range: Option<&'a str>,
}

/// A firmware with what was served of it.
#[derive(Debug)]
struct FirmwareEntry {
    fw: LoadedFirmware,
    cuts_done: u32,
    downloads: Vec<DownloadRecord>,
}

/// What the sim knows of a device.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRecord {
    /// The product key.
    pub product_key: String,
    /// The device key.
    pub device_key: String,
    /// The last version it reported with `inform`.
    pub version: Option<String>,
    /// When it last published anything, in sim milliseconds.
    pub last_seen_ms: Option<u64>,
    /// It is in the config (and so has a secret for the file service).
    pub configured: bool,
    #[serde(skip)]
    secret: Option<String>,
}

/// A file-service login (A8): valid while used at least once per `lifetime_ms`.
#[derive(Clone, Debug)]
struct Session {
    product_key: String,
    device_key: String,
    lifetime_ms: u64,
    last_used_ms: u64,
}

/// Why an admin or file-service call was refused: an HTTP status and a text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, for people.
    pub message: String,
}

impl ApiError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

/// The sim's whole state. See the module docs.
#[derive(Debug)]
pub struct Registry {
    devices: Vec<DeviceRecord>,
    firmwares: Vec<FirmwareEntry>,
    tasks: Vec<Task>,
    sessions: HashMap<String, Session>,
    http_base: String,
    style: FileUrlStyle,
    /// Products whose `fileUrl` style differs from `style`.
    product_styles: HashMap<String, FileUrlStyle>,
    online_window_ms: u64,
    next_message_id: u64,
    next_session: u64,
}

impl Registry {
    /// A registry of `config`'s devices and the loaded `firmwares`, whose direct file URLs
    /// start with `http_base` (e.g. `http://127.0.0.1:8080`).
    #[must_use]
    pub fn new(config: &Config, firmwares: Vec<LoadedFirmware>, http_base: &str) -> Self {
        let devices = config
            .products
            .iter()
            .flat_map(|p| {
                p.devices.iter().map(|d| DeviceRecord {
                    product_key: p.product_key.clone(),
                    device_key: d.device_key.clone(),
                    version: None,
                    last_seen_ms: None,
                    configured: true,
                    secret: Some(d.device_secret.clone()),
                })
            })
            .collect();
        Registry {
            devices,
            firmwares: firmwares
                .into_iter()
                .map(|fw| FirmwareEntry {
                    fw,
                    cuts_done: 0,
                    downloads: Vec::new(),
                })
                .collect(),
            tasks: Vec::new(),
            sessions: HashMap::new(),
            http_base: http_base.trim_end_matches('/').to_string(),
            style: config.file_url_style,
            product_styles: config
                .products
                .iter()
                .filter_map(|p| p.file_url_style.map(|s| (p.product_key.clone(), s)))
                .collect(),
            online_window_ms: config.online_window_secs.saturating_mul(1000),
            next_message_id: 1,
            next_session: 1,
        }
    }

    /// The known devices.
    #[must_use]
    pub fn devices(&self) -> &[DeviceRecord] {
        &self.devices
    }

    /// Every task, oldest first.
    #[must_use]
    pub fn tasks(&self) -> &[Task] {
        &self.tasks
    }

    /// The task `id`.
    #[must_use]
    pub fn task(&self, id: u64) -> Option<&Task> {
        self.tasks.iter().find(|t| t.id == id)
    }

    /// The direct download URL of a firmware: `{http_base}/files/{pk}/{version}`.
    #[must_use]
    pub fn direct_url(&self, fw: &LoadedFirmware) -> String {
        format!(
            "{}/files/{}/{}",
            self.http_base,
            percent_encode(&fw.product_key),
            percent_encode(&fw.version)
        )
    }

    /// The `fileUrl` upgrade commands carry, in the configured style.
    #[must_use]
    pub fn file_url(&self, fw: &LoadedFirmware) -> String {
        let style = self
            .product_styles
            .get(&fw.product_key)
            .unwrap_or(&self.style);
        match style {
            FileUrlStyle::Http => self.direct_url(fw),
            FileUrlStyle::Enos => enos_uri(fw),
        }
    }

    /// The firmware `version` of product `pk`.
    #[must_use]
    pub fn firmware(&self, pk: &str, version: &str) -> Option<&LoadedFirmware> {
        self.firmwares
            .iter()
            .map(|e| &e.fw)
            .find(|f| f.product_key == pk && f.version == version)
    }

    /// The firmware a `fileUri` names: either style of `fileUrl` this sim hands out.
    #[must_use]
    pub fn firmware_by_uri(&self, uri: &str) -> Option<&LoadedFirmware> {
        self.firmwares
            .iter()
            .map(|e| &e.fw)
            .find(|f| self.direct_url(f) == uri || enos_uri(f) == uri)
    }

    /// Records `get`, answered with `status` and a body of `len` bytes, and decides the
    /// `cutAfter` fault: `Some(n)` means send only the first `n` bytes and close the
    /// connection. A GET asking for no more than `n` bytes is served whole and leaves the
    /// cuts alone.
    pub fn download(
        &mut self,
        now_ms: u64,
        get: &BodyGet<'_>,
        status: u16,
        len: u64,
    ) -> Option<u64> {
        let (pk, version, device) = (get.product_key, get.version, get.device_key);
        let entry = self
            .firmwares
            .iter_mut()
            .find(|e| e.fw.product_key == pk && e.fw.version == version)?;
        let cut = entry
            .fw
            .cut
            .filter(|c| entry.cuts_done < c.times && len > c.after)
            .map(|c| c.after);
        entry.cuts_done += u32::from(cut.is_some());
        let record = DownloadRecord {
            range: get.range.map(str::to_string),
            status,
            bytes: cut.unwrap_or(len),
            cut: cut.is_some(),
            device_key: device.map(str::to_string),
            at_ms: now_ms,
        };
        entry.downloads.push(record.clone());
        if let Some(task) = self.tasks.iter_mut().rev().find(|t| {
            t.product_key == pk
                && t.version == version
                && t.status != TaskStatus::Succeeded
                && device.is_none_or(|dk| t.device_key == dk)
        }) {
            task.downloads.push(record);
        }
        cut
    }

    /// The admin view of every firmware: real and announced sign and size, the faults,
    /// and every GET of its body.
    #[must_use]
    pub fn firmwares_json(&self) -> Value {
        let list: Vec<Value> = self
            .firmwares
            .iter()
            .map(|e| {
                let fw = &e.fw;
                json!({
                    "productKey": fw.product_key,
                    "version": fw.version,
                    "signMethod": fw.sign_method,
                    "sign": fw.sign,
                    "size": fw.bytes.len(),
                    "announcedSign": fw.announced_sign,
                    "announcedSize": fw.announced_size,
                    "cutAfter": fw.cut.map(|c| c.after),
                    "cutsLeft": fw.cut.map_or(0, |c| c.times.saturating_sub(e.cuts_done)),
                    "fileUrl": self.file_url(fw),
                    "downloads": e.downloads,
                })
            })
            .collect();
        json!({ "firmwares": list })
    }

    /// Handles one MQTT message the sim received.
    pub fn handle_message(&mut self, now_ms: u64, topic: &str, payload: &[u8]) -> Vec<Outbound> {
        let Some(t) = TopicRef::parse(topic) else {
            return Vec::new();
        };
        let Ok(device) = DeviceId::new(t.product_key, t.device_key) else {
            return Vec::new();
        };
        if t.reply {
            if t.topic == OtaTopic::Upgrade {
                self.record_upgrade_reply(&device, payload);
            }
            return Vec::new();
        }
        if !t.topic.is_upstream() {
            return Vec::new();
        }
        self.seen(&device, now_ms);
        match DeviceRequest::parse(t.topic, payload) {
            Err(e) => vec![Outbound {
                topic: device.reply_topic(t.topic),
                payload: reply(None, ReplyCode::BAD_JSON, Some(&e.to_string())),
            }],
            Ok(DeviceRequest::Inform { id, version }) => {
                self.inform(now_ms, &device, id.as_ref(), version)
            }
            Ok(DeviceRequest::Progress { id, progress }) => {
                self.progress(now_ms, &device, id.as_ref(), progress)
            }
            Ok(DeviceRequest::GetVersion { id }) => self.get_version(&device, id.as_ref()),
        }
    }

    /// Creates a task (see the module docs for the rules) and returns it with what to
    /// publish now.
    pub fn create_task(
        &mut self,
        now_ms: u64,
        req: &TaskRequest,
    ) -> Result<(Task, Vec<Outbound>), ApiError> {
        let device = DeviceId::new(req.product_key.as_str(), req.device_key.as_str())
            .map_err(|e| ApiError::new(400, e.to_string()))?;
        let online = match self.device(&device) {
            None => {
                return Err(ApiError::new(
                    404,
                    format!("unknown device {}/{}", req.product_key, req.device_key),
                ))
            }
            Some(d) => d
                .last_seen_ms
                .is_some_and(|t| now_ms.saturating_sub(t) <= self.online_window_ms),
        };
        if self.firmware(&req.product_key, &req.version).is_none() {
            return Err(ApiError::new(
                404,
                format!(
                    "product {} has no firmware {}",
                    req.product_key, req.version
                ),
            ));
        }
        // One upgrade at a time (A9), but several request-policy offers may stand together:
        // `getversion` then lists them all and the device picks one.
        if let Some(open) = self.tasks.iter().find(|t| {
            t.is_open()
                && t.is_for(&req.product_key, &req.device_key)
                && (t.policy == Policy::Push || req.policy == Policy::Push)
        }) {
            return Err(ApiError::new(
                409,
                format!("the device is already in task {}", open.id),
            ));
        }
        let id = self.tasks.last().map_or(1, |t| t.id + 1);
        self.tasks.push(Task {
            id,
            product_key: req.product_key.clone(),
            device_key: req.device_key.clone(),
            version: req.version.clone(),
            policy: req.policy,
            status: TaskStatus::ToBeUpgraded,
            pushes: 0,
            upgrade_reply: None,
            steps: Vec::new(),
            downloads: Vec::new(),
        });
        let mut out = Vec::new();
        if req.policy == Policy::Push && online {
            out.extend(self.push(&device, id));
        }
        let task = self
            .task(id)
            .cloned()
            .ok_or(ApiError::new(500, "task lost"))?;
        Ok((task, out))
    }

    /// Logs a device in to the file service (`POST /auth/{pk}/{dk}`, A8) and returns the
    /// session id. The body is `{signMethod:"sha256", lifetime, sign}`.
    pub fn login(
        &mut self,
        now_ms: u64,
        pk: &str,
        dk: &str,
        body: &[u8],
    ) -> Result<String, ApiError> {
        let body: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::new(400, format!("the login body is not JSON: {e}")))?;
        let method = body.get("signMethod").and_then(Value::as_str).unwrap_or("");
        if !method.eq_ignore_ascii_case(SignMethod::Sha256.label()) {
            return Err(ApiError::new(400, "signMethod must be sha256"));
        }
        let lifetime = body
            .get("lifetime")
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_HTTP_LIFETIME_MS);
        let sign = body.get("sign").and_then(Value::as_str).unwrap_or("");
        let device = DeviceId::new(pk, dk).map_err(|e| ApiError::new(400, e.to_string()))?;
        let secret = self
            .device(&device)
            .and_then(|d| d.secret.clone())
            .ok_or(ApiError::new(401, "unknown device or no device secret"))?;
        let expected = SecretCredentials::new(device, secret).http_auth_sign(lifetime);
        if !expected.eq_ignore_ascii_case(sign) {
            return Err(ApiError::new(401, "the sign does not match"));
        }
        // The id needs to be unguessable only as far as a local test service goes: a digest
        // of the device, the time and a counter.
        let seed = format!("{pk}/{dk}/{now_ms}/{}", self.next_session);
        self.next_session += 1;
        let id = otaweb::image::digest::to_hex(&otaweb::image::digest::sha256(seed.as_bytes()));
        let id = id[..32].to_string();
        self.sessions.insert(
            id.clone(),
            Session {
                product_key: pk.to_string(),
                device_key: dk.to_string(),
                lifetime_ms: lifetime,
                last_used_ms: now_ms,
            },
        );
        Ok(id)
    }

    /// Checks a session id for device `pk`/`dk` and renews its idle timer; an expired
    /// session is dropped (the device logs in again, A8).
    pub fn use_session(
        &mut self,
        now_ms: u64,
        id: &str,
        pk: &str,
        dk: &str,
    ) -> Result<(), ApiError> {
        let Some(s) = self.sessions.get_mut(id) else {
            return Err(ApiError::new(
                401,
                "unknown sessionId; log in at /auth/{pk}/{dk}",
            ));
        };
        if now_ms.saturating_sub(s.last_used_ms) > s.lifetime_ms {
            self.sessions.remove(id);
            return Err(ApiError::new(401, "the session expired; log in again"));
        }
        if s.product_key != pk || s.device_key != dk {
            return Err(ApiError::new(403, "the session is another device's"));
        }
        s.last_used_ms = now_ms;
        Ok(())
    }

    /// The admin view of every device.
    #[must_use]
    pub fn devices_json(&self) -> Value {
        json!({ "devices": self.devices })
    }

    fn device(&self, id: &DeviceId) -> Option<&DeviceRecord> {
        self.devices
            .iter()
            .find(|d| d.product_key == id.product_key() && d.device_key == id.device_key())
    }

    fn seen(&mut self, id: &DeviceId, now_ms: u64) -> &mut DeviceRecord {
        let index = match self
            .devices
            .iter()
            .position(|d| d.product_key == id.product_key() && d.device_key == id.device_key())
        {
            Some(i) => i,
            None => {
                self.devices.push(DeviceRecord {
                    product_key: id.product_key().to_string(),
                    device_key: id.device_key().to_string(),
                    version: None,
                    last_seen_ms: None,
                    configured: false,
                    secret: None,
                });
                self.devices.len() - 1
            }
        };
        let d = &mut self.devices[index];
        d.last_seen_ms = Some(now_ms);
        d
    }

    fn message_id(&mut self) -> MessageId {
        let id = MessageId::from(self.next_message_id);
        self.next_message_id += 1;
        id
    }

    fn firmware_view(&self, pk: &str, version: &str) -> Option<Firmware> {
        let fw = self.firmware(pk, version)?;
        Some(Firmware {
            version: fw.version.clone(),
            sign: fw.announced_sign.clone(),
            sign_method: fw.sign_method.clone(),
            file_url: self.file_url(fw),
            file_size: fw.announced_size,
        })
    }

    /// Sends task `id`'s upgrade to its device and starts the task.
    fn push(&mut self, device: &DeviceId, id: u64) -> Option<Outbound> {
        let (pk, version) = {
            let t = self.task(id)?;
            (t.product_key.clone(), t.version.clone())
        };
        let fw = self.firmware_view(&pk, &version)?;
        let msg_id = self.message_id();
        let task = self.tasks.iter_mut().find(|t| t.id == id)?;
        task.pushes += 1;
        task.status = TaskStatus::InProgress;
        Some(Outbound {
            topic: device.topic(OtaTopic::Upgrade),
            payload: upgrade_command(&msg_id, &fw),
        })
    }

    fn inform(
        &mut self,
        now_ms: u64,
        device: &DeviceId,
        id: Option<&MessageId>,
        version: String,
    ) -> Vec<Outbound> {
        self.seen(device, now_ms).version = Some(version.clone());
        let mut out = vec![Outbound {
            topic: device.reply_topic(OtaTopic::Inform),
            payload: reply(id, ReplyCode::OK, None),
        }];
        let (pk, dk) = (device.product_key(), device.device_key());
        let mut to_push = Vec::new();
        for task in self.tasks.iter_mut().filter(|t| t.is_for(pk, dk)) {
            if task.status == TaskStatus::Succeeded {
                continue;
            }
            if task.version == version {
                task.status = TaskStatus::Succeeded;
            } else if task.policy == Policy::Push && task.status == TaskStatus::ToBeUpgraded {
                to_push.push(task.id);
            }
        }
        for task_id in to_push {
            out.extend(self.push(device, task_id));
        }
        out
    }

    /// The task progress goes to: the device's latest task that has not succeeded.
    fn current_task(&mut self, device: &DeviceId) -> Option<&mut Task> {
        let (pk, dk) = (device.product_key(), device.device_key());
        self.tasks
            .iter_mut()
            .rev()
            .find(|t| t.is_for(pk, dk) && t.status != TaskStatus::Succeeded)
    }

    /// The tasks a progress report belongs to (it names no version): the device's current
    /// task; while several request-policy offers are started, the one whose file the
    /// device downloaded last, or all of them before any download.
    fn progress_targets(&mut self, device: &DeviceId) -> Result<Vec<usize>, ReplyCode> {
        let latest = match self.current_task(device) {
            None => return Err(ReplyCode::TASK_NOT_FOUND),
            Some(task) if task.status == TaskStatus::ToBeUpgraded => {
                return Err(ReplyCode::TASK_NOT_STARTED)
            }
            Some(task) => task.id,
        };
        let (pk, dk) = (device.product_key(), device.device_key());
        let offers: Vec<usize> = (0..self.tasks.len())
            .filter(|&i| {
                let t = &self.tasks[i];
                t.is_for(pk, dk)
                    && t.policy == Policy::Request
                    && t.status == TaskStatus::InProgress
            })
            .collect();
        if offers.len() < 2 || !offers.iter().any(|&i| self.tasks[i].id == latest) {
            let index = self.tasks.iter().position(|t| t.id == latest);
            return Ok(index.into_iter().collect());
        }
        let chosen = offers
            .iter()
            .copied()
            .filter_map(|i| self.tasks[i].downloads.last().map(|d| (d.at_ms, i)))
            .max()
            .map(|(_, i)| i);
        Ok(chosen.map_or(offers, |i| vec![i]))
    }

    fn progress(
        &mut self,
        now_ms: u64,
        device: &DeviceId,
        id: Option<&MessageId>,
        progress: Progress,
    ) -> Vec<Outbound> {
        let code = match self.progress_targets(device) {
            Err(code) => code,
            Ok(targets) => {
                let step = progress.step.value();
                for i in targets {
                    let task = &mut self.tasks[i];
                    task.steps.push(StepRecord {
                        step,
                        desc: progress.desc.clone(),
                        at_ms: now_ms,
                    });
                    task.status = if step < 0 {
                        TaskStatus::Failed
                    } else {
                        TaskStatus::InProgress
                    };
                }
                ReplyCode::OK
            }
        };
        let message = (!code.is_success()).then(|| code.meaning());
        vec![Outbound {
            topic: device.reply_topic(OtaTopic::Progress),
            payload: reply(id, code, message),
        }]
    }

    fn get_version(&mut self, device: &DeviceId, id: Option<&MessageId>) -> Vec<Outbound> {
        let (pk, dk) = (device.product_key(), device.device_key());
        let mut offered: Vec<Firmware> = Vec::new();
        let open: Vec<(u64, String)> = self
            .tasks
            .iter()
            .filter(|t| t.is_open() && t.is_for(pk, dk))
            .map(|t| (t.id, t.version.clone()))
            .collect();
        for (task_id, version) in open {
            if let Some(fw) = self.firmware_view(pk, &version) {
                if !offered.iter().any(|f| f.version == fw.version) {
                    offered.push(fw);
                }
                if let Some(t) = self.tasks.iter_mut().find(|t| t.id == task_id) {
                    if t.status == TaskStatus::ToBeUpgraded {
                        t.status = TaskStatus::InProgress;
                    }
                }
            }
        }
        vec![Outbound {
            topic: device.reply_topic(OtaTopic::GetVersion),
            payload: get_version_reply(id, ReplyCode::OK, &offered),
        }]
    }

    fn record_upgrade_reply(&mut self, device: &DeviceId, payload: &[u8]) {
        let Ok(r) = otaweb::wire::enos::Reply::parse(payload) else {
            return;
        };
        if let Some(task) = self.current_task(device) {
            task.upgrade_reply = Some(r.code.0);
        }
    }
}

/// The `enos-connect://ota/{pk}/{version}` URI of a firmware (A7's file URI form).
fn enos_uri(fw: &LoadedFirmware) -> String {
    format!(
        "enos-connect://ota/{}/{}",
        percent_encode(&fw.product_key),
        percent_encode(&fw.version)
    )
}

/// Decodes `%XX` escapes (and `+` as a space in queries); `None` for a bad escape or
/// non-UTF-8 result.
#[must_use]
pub fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_round_trip() {
        let s = "2.0 beta/ä&x";
        assert_eq!(
            percent_decode(&percent_encode(s), false).as_deref(),
            Some(s)
        );
        assert_eq!(percent_decode("a+b", true).as_deref(), Some("a b"));
        assert_eq!(percent_decode("%zz", false), None);
    }

    fn firmware(version: &str) -> LoadedFirmware {
        LoadedFirmware {
            product_key: "pk".into(),
            version: version.into(),
            sign_method: "md5".into(),
            sign: "00".repeat(16),
            bytes: vec![1, 2, 3],
            announced_sign: "00".repeat(16),
            announced_size: 3,
            cut: None,
        }
    }

    fn steps(registry: &Registry, id: u64) -> Vec<i32> {
        registry
            .task(id)
            .unwrap()
            .steps
            .iter()
            .map(|s| s.step)
            .collect()
    }

    #[test]
    fn several_offers_stand_together_and_progress_follows_the_download() {
        let config: Config = serde_json::from_value(serde_json::json!({
            "products": [{ "productKey": "pk", "devices": [{ "deviceKey": "dk", "deviceSecret": "s" }] }]
        }))
        .unwrap();
        let mut r = Registry::new(&config, vec![firmware("2"), firmware("3")], "http://h");
        let task = |version: &str, policy| TaskRequest {
            product_key: "pk".into(),
            device_key: "dk".into(),
            version: version.into(),
            policy,
        };
        let (t2, _) = r.create_task(0, &task("2", Policy::Request)).unwrap();
        let (t3, _) = r.create_task(0, &task("3", Policy::Request)).unwrap();
        let refused = r.create_task(0, &task("3", Policy::Push)).unwrap_err();
        assert_eq!(refused.status, 409, "a push waits for the offers");
        let topic = |t: &str| format!("/sys/pk/dk/ota/device/{t}");
        let ask = otaweb::wire::enos::get_version_request(&MessageId::from(1));
        let out = r.handle_message(1, &topic("getversion"), &ask);
        let listed = String::from_utf8(out[0].payload.clone()).unwrap();
        assert!(
            listed.contains(r#""version":"2""#) && listed.contains(r#""version":"3""#),
            "{listed}"
        );
        let progress = |r: &mut Registry, step: i32| {
            let step = step.to_string().parse().unwrap();
            let body =
                otaweb::wire::enos::progress_request(&MessageId::from(9), &Progress::new(step));
            r.handle_message(2, &topic("progress"), &body)
        };
        progress(&mut r, 0);
        assert_eq!((steps(&r, t2.id), steps(&r, t3.id)), (vec![0], vec![0]));
        let get = BodyGet {
            product_key: "pk",
            version: "2",
            device_key: None,
            range: None,
        };
        r.download(3, &get, 200, 3);
        progress(&mut r, 50);
        assert_eq!((steps(&r, t2.id), steps(&r, t3.id)), (vec![0, 50], vec![0]));
    }
}
