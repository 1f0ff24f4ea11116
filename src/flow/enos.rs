//! The EnOS OTA orchestration (`protocols/enos_microchip.md` part A) as a sans-IO state
//! machine: it reports the device's version, takes the cloud's upgrade order, has the
//! application download and install the firmware, checks the file, and reports progress.
//!
//! Contract. [`EnosFlow`] owns an [`MqttSession`] and implements [`Flow`] with channel `()`:
//! its [`Flow::handle_connected`], [`Flow::handle_disconnected`], [`Flow::handle_input`] and
//! [`Flow::poll_transmit`] are the session's (one byte stream to the broker, pumped exactly
//! as [`crate::flow::mqtt`] describes), and every session event that is not an EnOS message
//! comes out unchanged as [`EnosEvent::Link`]. The two things the flow cannot do itself are
//! the application's: fetching the file (HTTP, with Range resume, at the edge) and installing
//! it on the BLE device (the gadget or dfu flow). The edge follows this order:
//!
//! ```text
//!  new(device, credentials, current version, options)
//!  handle_connected ─▶ SUBSCRIBE upgrade, inform_reply, progress_reply, getversion_reply
//!                      PUBLISH inform {version} (QoS 1) ─▶ inform_reply 200 ─▶ Connected
//!  cloud push `upgrade` ─▶ upgrade_reply 200 (QoS 0)
//!     │ or check_for_update() ─▶ getversion ─▶ reply lists versions (highest, or Choose)
//!     ▼
//!  UpgradeOffered ─▶ accept() | decline()           (skipped with AcceptPolicy::Auto)
//!  progress 0 ─▶ Download{url, size, sign, version}
//!     edge fetches: download_progress()* then downloaded(bytes) | download_failed(error)
//!  size + sign checked, verify_image ─▶ Install(Verified<Image>)
//!     edge runs gadget/dfu: install_progress()* then install_done(version) | install_failed(e)
//!  progress 100, inform {new version} ─▶ inform_reply 200 ─▶ Done{version}
//! ```
//!
//! Progress steps are the cloud's percent: the download maps to 0–10 and the install to
//! 10–99; 100 is sent only when the device confirms the new firmware. A step goes out only
//! when it is at least [`Throttle::percent`] above the last one reported **and**
//! [`Throttle::interval`] has passed since (whichever comes later); the first report of a
//! task (0) and the last (100, or a failure) always go. Every report is QoS 1 and awaits its
//! `progress_reply`: 200 gives [`EnosEvent::Reported`], anything else (764 "task not found",
//! 765 "task not started") or no reply gives [`EnosEvent::ProgressNotAcknowledged`] with the
//! typed error, and the task goes on: the cloud's console is then stale, not the device. A
//! failure report (a negative step) with no reply is sent again every reply timeout until
//! the cloud answers or a new task begins, so the cloud's task cannot stay "in progress"
//! after the device gave up on it.
//!
//! Failures end the task and are reported with the documented step and the error's text as
//! `desc`, then [`EnosEvent::Failed`]: a download failure −2, a file whose size or sign does
//! not match −3 (no [`EnosEvent::Install`] then), an install failure −4 once the device took
//! bytes (it confirmed some, or the transfer began: [`EnosFlow::install_started`]), −1 if it
//! never did. After a failed task the flow listens for the next push.
//!
//! Timers: each reply is awaited for [`EnosOptions::reply_timeout`] (10 s) counted from the
//! broker's PUBACK, so until then the session's QoS 1 rules (re-send, resume across
//! reconnects) apply; after it, only an `inform` and a failure report go again (see below).
//! The download and the install must show activity (any call) within
//! [`EnosOptions::stall_timeout`] (300 s), else they fail as if the application had said so.
//! It is longer than every deadline of the BLE flows (DFU waits up to 180 s for
//! IMAGE_SEND_START_RESPONSE), so the agent never gives up on an install that is still
//! working (the fault campaign caught a 120 s limit doing that). Only the person's decision
//! (accept, decline, choose) has no deadline: it waits for them.
//!
//! Choices where the notes are open or inferred:
//!
//! - The flow subscribes to `upgrade` although the SDKs never do (A3): EnOS is inferred to
//!   deliver commands without it, but a plain broker (mosquitto, EMQX) in front of a
//!   simulator does not. It subscribes to the three `_reply` topics once, at construction;
//!   the session renews them after every reconnect, before anything else goes out.
//! - `inform` goes out after every accepted CONNACK, as the SDK samples do (A5); only devices
//!   that reported a version can be targeted. A refused `inform` stops the flow
//!   ([`EnosEvent::Failed`], then [`EnosFlow::is_stopped`]): the cloud does not know the device,
//!   so no task it sends can be acted on. Fix the credentials and build a new flow. An
//!   unanswered one (the broker took it, no reply within the reply timeout) goes again, every
//!   timeout, for as long as it takes: a cloud that restarts or re-subscribes misses it, and
//!   stopping would leave the device deaf until the page reloads (the fault campaign found
//!   that). Until the reply, [`EnosEvent::Connected`] has not come, which is what the person
//!   sees; the final `inform` of a task is sent again the same way.
//! - A push is answered with `upgrade_reply` `{"id","code":200,"data":{}}` at QoS 0 as
//!   documented (the Java sample sends none, A5): it acknowledges receipt, not acceptance. A
//!   declined push is reported as step −5 ([`Step::DECLINED`], the SDKs' "device ignored"),
//!   so the job does not wait forever; declining a `getversion` offer sends nothing, since the
//!   device asked and no task was pushed. A push while a task is in progress is answered and
//!   reported as [`EnosEvent::PushIgnored`]; the same push again (a QoS 1 repeat) is only
//!   answered. [`AcceptPolicy::Auto`] installs a push whatever its version: a cloud push is
//!   the operator's order (A9).
//! - [`PickPolicy::Highest`] takes the highest version of a `getversion` reply by the EnOS
//!   version order ([`EnosVersion`]), and offers nothing ([`EnosEvent::NoUpdate`]) unless it
//!   is newer than the running one; versions that do not parse are skipped.
//! - A file of the wrong size is a verification failure (−3), not a download failure (−2):
//!   the edge said the download finished, so the bytes are simply not the file the cloud
//!   described. −2 is for the edge's own [`EnosFlow::download_failed`].
//! - The image's [`ManifestEntry`] is made from the task: name = the last level of
//!   `fileUrl`, the task's version, `fileSize`, and SHA-256 = the sign when it is SHA-256.
//!   With an MD5 sign the MD5 is checked first and goes into the entry, and the SHA-256 is
//!   computed only after it matched, so [`verify_image`] still checks every byte and remains
//!   the only source of the [`Verified<Image>`]. EnOS carries no image signature: with a
//!   [`VerifyPolicy`] that demands one, every EnOS file fails with −3.
//! - [`EnosFlow::install_done`] reports what the device now runs, whatever the task offered:
//!   the cloud decides success by comparing it (A6), so it should hear the truth. A version
//!   other than the task's also fails the task (−4, [`VERSION_NOT_INSTALLED`]): the cloud
//!   would otherwise show it in progress for ever, and the application must not hear
//!   `Done` for an install that did not happen (a garbled Discover.Response can claim a
//!   newer version; the fault campaign found that).
//! - Messages on this device's topics that do not parse are reported as
//!   [`EnosEvent::Malformed`] and otherwise ignored; a reply that matches no request (a late
//!   or repeated one) is dropped. Messages on other topics pass through as
//!   [`EnosEvent::Link`].

use alloc::collections::VecDeque;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::error::{DecodeError, Error, LinkLost, Malformed, Misuse, Refusal, Vendor};
use crate::flow::mqtt::{ConnectOptions, MqttEvent, MqttSession, SessionConfig};
use crate::flow::service::{check_transport, Refused};
use crate::flow::{Flow, Transmit};
use crate::image::digest::{sha256, DigestValue};
use crate::image::manifest::{FlowKind, ManifestEntry};
use crate::image::verify::{verify_image, Image, Verified, VerifyError, VerifyPolicy};
use crate::image::version::EnosVersion;
use crate::time::{Millis, Span};
use crate::wire::enos::{
    get_version_request, inform_request, progress_request, reply, DeviceId, Firmware, FirmwareSign,
    MessageId, MqttCredentials, OtaTopic, Progress, Reply, ReplyCode, Step, TopicRef,
    UpgradeCommand, VersionsReply,
};
use crate::wire::mqtt::{PacketId, QoS};

/// What a task fails with when the device, after the install, runs another version than
/// the task's: step −4 as the cloud sees it.
pub const VERSION_NOT_INSTALLED: Refusal = Refusal {
    vendor: Vendor::Enos,
    code: -4,
    name: "VERSION_NOT_INSTALLED",
    meaning: "after the install the device reports another version than the task's: it kept a \
              newer one or refused the image; check the version the device reports",
    retryable: false,
};

/// The largest file a task may announce by default: EnOS allows 100 MB.
pub const MAX_FILE_SIZE: u64 = 128 * 1024 * 1024;

/// The last step of the download range: downloading is 0–10 %.
pub const DOWNLOAD_END: u8 = 10;
/// The last step of the install range: installing is 10–99 %, 100 once confirmed.
pub const INSTALL_END: u8 = 99;

const WAIT_PROGRESS: &str = "EnOS progress reply";
const WAIT_VERSIONS: &str = "EnOS getversion reply";
const WAIT_DOWNLOAD: &str = "firmware download";
const WAIT_INSTALL: &str = "firmware install";

/// Whether the agent may download a task's file from `url`, an `http(s)://` `fileUrl`:
/// `https://`, or plain `http://` only to this computer (where enos-sim and local file
/// services listen). The file crosses the network in the clear otherwise; its sign arrives
/// over the MQTT session, but the file service's login and session id would not.
pub fn check_file_url(url: &str) -> Result<(), Misuse> {
    check_transport(url, "https://", "http://", false).map_err(|why| {
        Misuse::InvalidArgument(match why {
            Refused::Plain => {
                "the task's fileUrl is plain http:// to another computer; EnOS files are \
                 downloaded over https:// only"
            }
            Refused::Scheme | Refused::NoHost => "the task's fileUrl is not an http(s) URL",
        })
    })
}

/// Whether the EnOS file service at `base` may be used: the same rule as
/// [`check_file_url`], because the device's login sign and the session id (in the
/// download's query) travel to it.
pub fn check_file_service(base: &str) -> Result<(), Misuse> {
    check_transport(base, "https://", "http://", false).map_err(|why| {
        Misuse::InvalidArgument(match why {
            Refused::Plain => {
                "fileService must be an https:// URL (plain http:// only to this computer)"
            }
            Refused::Scheme | Refused::NoHost => {
                "fileService must be an absolute https:// URL with a host"
            }
        })
    })
}

/// An HTTP status of the file download as a refusal, for [`EnosFlow::download_failed`]:
/// what it means for this task and whether asking again can help.
#[must_use]
pub fn http_refusal(status: u16) -> Refusal {
    let (name, meaning, retryable) = match status {
        401 | 403 => (
            "HTTP_UNAUTHORIZED",
            "the file service refused the login or its session expired; check the device \
             secret or the presigned file session",
            false,
        ),
        404 => (
            "HTTP_NOT_FOUND",
            "the task's fileUrl names no file; the firmware was removed or the task is wrong",
            false,
        ),
        416 => (
            "HTTP_RANGE_NOT_SATISFIABLE",
            "the file is shorter than the part already downloaded; it changed on the server",
            false,
        ),
        500..=599 => (
            "HTTP_SERVER_ERROR",
            "the file server failed; try again later",
            true,
        ),
        _ => (
            "HTTP_UNEXPECTED_STATUS",
            "the file server answered the download with a status it should not",
            false,
        ),
    };
    Refusal {
        vendor: Vendor::Http,
        code: i64::from(status),
        name,
        meaning,
        retryable,
    }
}

/// Whether a pushed upgrade starts at once or waits for the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptPolicy {
    /// Start every push at once (a cloud push is the operator's order).
    Auto,
    /// Emit [`EnosEvent::UpgradeOffered`] and wait for [`EnosFlow::accept`] or
    /// [`EnosFlow::decline`].
    Ask,
}

/// Which firmware of a `getversion` reply to take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PickPolicy {
    /// The highest version, if newer than the running one.
    Highest,
    /// Emit [`EnosEvent::VersionsOffered`] and wait for [`EnosFlow::choose`].
    Ask,
}

/// How often progress goes to the cloud: both limits must be met (first and last always go).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttle {
    /// The least rise in percent between two reports (10).
    pub percent: u8,
    /// The least time between two reports (2 s).
    pub interval: Span,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            percent: 10,
            interval: Span::from_secs(2),
        }
    }
}

/// How the flow decides, times and verifies.
#[derive(Clone, Debug)]
pub struct EnosOptions {
    /// The BLE flow that installs the image: [`FlowKind::Gadget`] or [`FlowKind::Dfu`].
    pub install_flow: FlowKind,
    /// What a push does.
    pub accept: AcceptPolicy,
    /// What a `getversion` reply does.
    pub pick: PickPolicy,
    /// Progress report pacing.
    pub throttle: Throttle,
    /// From a request's PUBACK to its reply (10 s).
    pub reply_timeout: Span,
    /// The longest silence of the download or the install (300 s).
    pub stall_timeout: Span,
    /// The signature policy for [`verify_image`] (default: no keys, digest only).
    pub verify: VerifyPolicy,
    /// The MQTT session's timers and bounds.
    pub session: SessionConfig,
    /// The largest file a task may announce ([`MAX_FILE_SIZE`]); a larger one fails the task
    /// with −2 before anything is downloaded.
    pub max_file_size: u64,
}

impl EnosOptions {
    /// Defaults for installing with `install_flow`: ask before a push, pick the highest
    /// version, 10 % / 2 s throttle, 10 s replies, 300 s stall limit, digest-only checks,
    /// files up to 128 MiB.
    #[must_use]
    pub fn new(install_flow: FlowKind) -> Self {
        EnosOptions {
            install_flow,
            accept: AcceptPolicy::Ask,
            pick: PickPolicy::Highest,
            throttle: Throttle::default(),
            reply_timeout: Span::from_secs(10),
            stall_timeout: Span::from_secs(300),
            verify: VerifyPolicy::trusting(Vec::new()),
            session: SessionConfig::default(),
            max_file_size: MAX_FILE_SIZE,
        }
    }
}

/// What the flow reports to the application.
#[derive(Clone, Debug)]
pub enum EnosEvent {
    /// The cloud acknowledged the `inform` of the running version (after every connect).
    Connected {
        /// The version reported.
        version: String,
    },
    /// A push awaits [`EnosFlow::accept`] or [`EnosFlow::decline`] ([`AcceptPolicy::Ask`]).
    UpgradeOffered {
        /// The firmware offered.
        firmware: Firmware,
    },
    /// A `getversion` reply awaits [`EnosFlow::choose`] or [`EnosFlow::decline`]
    /// ([`PickPolicy::Ask`]).
    VersionsOffered {
        /// The firmware listed, in the cloud's order.
        firmwares: Vec<Firmware>,
    },
    /// The `getversion` reply offered nothing to install.
    NoUpdate,
    /// Download the file and call [`EnosFlow::downloaded`] or [`EnosFlow::download_failed`].
    Download {
        /// The task's `fileUrl` (a path or `enos-connect://` URI for the HTTP broker).
        url: String,
        /// The file's size in bytes.
        size: u64,
        /// The digest the file must have.
        sign: FirmwareSign,
        /// The firmware version.
        version: String,
    },
    /// Install this image with the gadget or dfu flow and report through
    /// [`EnosFlow::install_progress`], then [`EnosFlow::install_done`] or
    /// [`EnosFlow::install_failed`].
    Install(Verified<Image>),
    /// The cloud acknowledged a progress step.
    Reported {
        /// The step.
        step: Step,
    },
    /// The cloud refused a progress step (764, 765, ...) or did not answer; the task goes on.
    ProgressNotAcknowledged {
        /// The step.
        step: Step,
        /// [`Error::PeerRefused`] with the EnOS code, or [`Error::LinkLost`] on no reply.
        error: Error,
    },
    /// A push arrived while another task was in progress; it was answered, not started.
    PushIgnored {
        /// The firmware pushed.
        firmware: Firmware,
    },
    /// A message on one of this device's topics did not parse; it was ignored.
    Malformed {
        /// The topic.
        topic: String,
        /// What was wrong.
        error: Error,
    },
    /// The device runs the new firmware and the cloud acknowledged its version.
    Done {
        /// The version now running.
        version: String,
    },
    /// The task (or, for `inform`, the whole flow) failed.
    Failed(Error),
    /// An MQTT session event, as the session reported it.
    Link(MqttEvent),
}

/// A firmware the flow is working on.
#[derive(Clone, Debug)]
struct Offer {
    firmware: Firmware,
    sign: FirmwareSign,
    /// The cloud pushed it (a decline is then reported).
    pushed: bool,
}

/// The last progress step sent for the task, and when.
#[derive(Clone, Copy, Debug)]
struct Sent {
    percent: u8,
    at: Millis,
}

/// Where the current task stands.
#[derive(Clone, Debug)]
enum Task {
    /// No task: listening for pushes.
    Idle,
    /// `getversion` is out.
    Asking,
    /// The application chooses among these.
    Choosing(Vec<Firmware>),
    /// The application accepts or declines this push.
    Offered(Offer),
    /// The edge downloads the file.
    Downloading { offer: Offer, deadline: Millis },
    /// The edge installs the image.
    Installing {
        offer: Offer,
        deadline: Millis,
        started: bool,
    },
    /// Step 100 and the new version's `inform` are out.
    Finishing,
    /// `inform` failed: nothing more is done.
    Stopped,
}

impl Task {
    fn name(&self) -> &'static str {
        match self {
            Task::Idle => "idle",
            Task::Asking => "asking for versions",
            Task::Choosing(_) => "waiting for a version choice",
            Task::Offered(_) => "waiting for acceptance",
            Task::Downloading { .. } => "downloading",
            Task::Installing { .. } => "installing",
            Task::Finishing => "finishing",
            Task::Stopped => "stopped",
        }
    }
}

/// A request awaiting its reply.
#[derive(Clone, Debug)]
struct Pending {
    topic: OtaTopic,
    id: MessageId,
    /// The PUBLISH's packet id, until its PUBACK.
    packet_id: Option<PacketId>,
    /// Set at the PUBACK.
    deadline: Option<Millis>,
    /// The report, for progress reports: a failure's is sent again until answered.
    report: Option<Progress>,
}

/// The EnOS OTA flow for one device. See the module docs.
#[derive(Clone, Debug)]
pub struct EnosFlow {
    session: MqttSession,
    device: DeviceId,
    options: EnosOptions,
    version: String,
    task: Task,
    last_sent: Option<Sent>,
    pending: Vec<Pending>,
    next_id: u64,
    events: VecDeque<EnosEvent>,
}

impl EnosFlow {
    /// A flow for `device`, logging in with `credentials` (signed here with
    /// [`crate::wire::enos::SecretCredentials::sign`] or presigned by a backend), running
    /// `current_version`. Refuses credentials of another device, an unreadable version, an
    /// install flow other than gadget or dfu, and a zero reply or stall timeout.
    pub fn new(
        device: DeviceId,
        credentials: &MqttCredentials,
        current_version: &str,
        options: EnosOptions,
    ) -> Result<Self, Misuse> {
        if options.install_flow == FlowKind::Enos {
            return Err(Misuse::InvalidArgument(
                "an EnOS image is installed with the gadget or the dfu flow",
            ));
        }
        if options.reply_timeout == Span(0) || options.stall_timeout == Span(0) {
            return Err(Misuse::InvalidArgument(
                "the EnOS reply and stall timeouts must be above zero",
            ));
        }
        EnosVersion::parse(current_version).map_err(|_| {
            Misuse::InvalidArgument("the current version must be non-empty text of 64 bytes")
        })?;
        if credentials.device().is_some_and(|d| d != device) {
            return Err(Misuse::InvalidArgument(
                "the MQTT credentials' user name names another device",
            ));
        }
        let mut session = MqttSession::new(connect_options(credentials), options.session)?;
        // Subscribed now, the session sends these first after every CONNACK (see above).
        session.subscribe(
            Millis::ZERO,
            &device.topic(OtaTopic::Upgrade),
            QoS::AtLeastOnce,
        )?;
        for topic in [OtaTopic::Inform, OtaTopic::Progress, OtaTopic::GetVersion] {
            session.subscribe(Millis::ZERO, &device.reply_topic(topic), QoS::AtLeastOnce)?;
        }
        Ok(EnosFlow {
            session,
            device,
            options,
            version: current_version.to_string(),
            task: Task::Idle,
            last_sent: None,
            pending: Vec::new(),
            next_id: 1,
            events: VecDeque::new(),
        })
    }

    /// The device.
    #[must_use]
    pub fn device(&self) -> &DeviceId {
        &self.device
    }

    /// The version the device runs, as last reported to the cloud.
    #[must_use]
    pub fn current_version(&self) -> &str {
        &self.version
    }

    /// The MQTT session, for its state and reconnect delay.
    #[must_use]
    pub fn session(&self) -> &MqttSession {
        &self.session
    }

    /// How long the edge waits before reopening the transport (the session's rule).
    #[must_use]
    pub fn poll_reconnect_delay(&self) -> Option<Span> {
        self.session.poll_reconnect_delay()
    }

    /// Replaces the credentials for the next CONNECT (a fresh timestamp, say).
    pub fn set_credentials(&mut self, credentials: &MqttCredentials) -> Result<(), Misuse> {
        if credentials.device().is_some_and(|d| d != self.device) {
            return Err(Misuse::InvalidArgument(
                "the MQTT credentials' user name names another device",
            ));
        }
        self.session
            .set_connect_options(connect_options(credentials))
    }

    /// Whether a task is in progress (offered, downloading, installing or finishing).
    #[must_use]
    pub fn is_busy(&self) -> bool {
        !matches!(self.task, Task::Idle | Task::Stopped)
    }

    /// Where the task stands, in words: `"idle"`, `"downloading"`, `"installing"`, ...
    #[must_use]
    pub fn state(&self) -> &'static str {
        self.task.name()
    }

    /// Whether `inform` failed and the flow does nothing more.
    #[must_use]
    pub fn is_stopped(&self) -> bool {
        matches!(self.task, Task::Stopped)
    }

    /// Closes the MQTT session (DISCONNECT, then [`MqttEvent::Closed`] as a link event).
    pub fn disconnect(&mut self, now: Millis) {
        self.session.disconnect(now);
        self.pump(now);
    }

    /// Asks the cloud which firmware the device may install (`getversion`); the reply is
    /// picked by [`EnosOptions::pick`]. Only while idle.
    pub fn check_for_update(&mut self, now: Millis) -> Result<(), Misuse> {
        self.expect(matches!(self.task, Task::Idle), "check for an update")?;
        let id = self.take_id();
        let body = get_version_request(&id);
        self.request(now, OtaTopic::GetVersion, id, &body, None)?;
        self.task = Task::Asking;
        Ok(())
    }

    /// Starts the offered push.
    pub fn accept(&mut self, now: Millis) -> Result<(), Misuse> {
        let Task::Offered(offer) = &self.task else {
            return Err(self.wrong_state("accept an upgrade"));
        };
        let offer = offer.clone();
        self.start(now, offer);
        self.pump(now);
        Ok(())
    }

    /// Turns down the offered push (reported as step −5) or the listed versions (nothing
    /// sent).
    pub fn decline(&mut self, now: Millis) -> Result<(), Misuse> {
        match &self.task {
            Task::Offered(offer) if offer.pushed => {
                self.task = Task::Idle;
                self.report(now, Progress::new(Step::DECLINED));
            }
            Task::Offered(_) | Task::Choosing(_) => self.task = Task::Idle,
            _ => return Err(self.wrong_state("decline an upgrade")),
        }
        self.pump(now);
        Ok(())
    }

    /// Installs firmware `index` of [`EnosEvent::VersionsOffered`].
    pub fn choose(&mut self, now: Millis, index: usize) -> Result<(), Misuse> {
        let Task::Choosing(firmwares) = &self.task else {
            return Err(self.wrong_state("choose a version"));
        };
        let firmware = firmwares
            .get(index)
            .cloned()
            .ok_or(Misuse::InvalidArgument("no listed version has that index"))?;
        self.task = Task::Idle;
        if let Some(offer) = self.offer(now, firmware, false) {
            self.start(now, offer);
        }
        self.pump(now);
        Ok(())
    }

    /// The edge has `received` of `total` bytes of the file (any number of calls, optional).
    pub fn download_progress(
        &mut self,
        now: Millis,
        received: u64,
        total: u64,
    ) -> Result<(), Misuse> {
        let stall = self.options.stall_timeout;
        let Task::Downloading { deadline, .. } = &mut self.task else {
            return Err(self.wrong_state("report download progress"));
        };
        *deadline = now + stall;
        self.progress(now, scale(received, total, 0, DOWNLOAD_END)?);
        self.pump(now);
        Ok(())
    }

    /// The edge downloaded the whole file: the flow checks its size and sign and, when they
    /// match, emits [`EnosEvent::Install`]; else it reports −3 and fails the task.
    pub fn downloaded(&mut self, now: Millis, bytes: &[u8]) -> Result<(), Misuse> {
        let Task::Downloading { offer, .. } = &self.task else {
            return Err(self.wrong_state("hand over the download"));
        };
        let offer = offer.clone();
        match self.verify(&offer, bytes) {
            Ok(image) => {
                self.task = Task::Installing {
                    offer,
                    deadline: now + self.options.stall_timeout,
                    started: false,
                };
                self.progress(now, DOWNLOAD_END);
                self.events.push_back(EnosEvent::Install(image));
            }
            Err(error) => self.fail(now, Step::VERIFICATION_FAILED, error),
        }
        self.pump(now);
        Ok(())
    }

    /// The edge could not download the file: step −2 with the error's text, then
    /// [`EnosEvent::Failed`] with `error`.
    pub fn download_failed(&mut self, now: Millis, error: Error) -> Result<(), Misuse> {
        self.expect(
            matches!(self.task, Task::Downloading { .. }),
            "fail the download",
        )?;
        self.fail(now, Step::DOWNLOAD_FAILED, error);
        self.pump(now);
        Ok(())
    }

    /// The device began receiving the image (the install flow's transfer stage): a failure
    /// from now on is the device's install failing (−4), even before it confirmed a byte.
    pub fn install_started(&mut self, now: Millis) -> Result<(), Misuse> {
        let stall = self.options.stall_timeout;
        let Task::Installing {
            deadline, started, ..
        } = &mut self.task
        else {
            return Err(self.wrong_state("start the install"));
        };
        *deadline = now + stall;
        *started = true;
        Ok(())
    }

    /// The install has moved `done` of `total` bytes to the device (written or confirmed;
    /// only rises reach the cloud).
    pub fn install_progress(&mut self, now: Millis, done: u64, total: u64) -> Result<(), Misuse> {
        let stall = self.options.stall_timeout;
        let Task::Installing {
            deadline, started, ..
        } = &mut self.task
        else {
            return Err(self.wrong_state("report install progress"));
        };
        *deadline = now + stall;
        *started |= done > 0;
        self.progress(now, scale(done, total, DOWNLOAD_END, INSTALL_END)?);
        self.pump(now);
        Ok(())
    }

    /// The device runs `new_version`: step 100, then `inform` with it; [`EnosEvent::Done`]
    /// follows the cloud's acknowledgement. A version other than the task's (the device
    /// kept a newer one, or its answer was garbled) fails the task with −4 and
    /// [`VERSION_NOT_INSTALLED`], and the `inform` still tells the cloud what runs.
    pub fn install_done(&mut self, now: Millis, new_version: &str) -> Result<(), Misuse> {
        let Task::Installing { offer, .. } = &self.task else {
            return Err(self.wrong_state("finish the install"));
        };
        let running = EnosVersion::parse(new_version).map_err(|_| {
            Misuse::InvalidArgument("the new version must be non-empty text of 64 bytes")
        })?;
        let wanted = EnosVersion::parse(&offer.firmware.version);
        if wanted.is_ok_and(|w| w != running) {
            self.version = new_version.to_string();
            self.fail(
                now,
                Step::BURNING_FAILED,
                Error::PeerRefused(VERSION_NOT_INSTALLED),
            );
            self.inform(now);
            self.pump(now);
            return Ok(());
        }
        self.report(now, Progress::new(step_of(100)));
        self.version = new_version.to_string();
        self.task = Task::Finishing;
        self.inform(now);
        self.pump(now);
        Ok(())
    }

    /// The install failed with `error`: step −4 if the device took any bytes (it confirmed
    /// some, or [`EnosFlow::install_started`] was called), else −1, then
    /// [`EnosEvent::Failed`].
    pub fn install_failed(&mut self, now: Millis, error: Error) -> Result<(), Misuse> {
        let Task::Installing { started, .. } = self.task else {
            return Err(self.wrong_state("fail the install"));
        };
        let step = if started {
            Step::BURNING_FAILED
        } else {
            Step::UPGRADE_FAILED
        };
        self.fail(now, step, error);
        self.pump(now);
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // Internals
    // -----------------------------------------------------------------------------------

    fn expect(&self, ok: bool, call: &'static str) -> Result<(), Misuse> {
        if ok {
            Ok(())
        } else {
            Err(self.wrong_state(call))
        }
    }

    fn wrong_state(&self, call: &'static str) -> Misuse {
        Misuse::WrongState {
            call,
            state: self.task.name(),
        }
    }

    fn take_id(&mut self) -> MessageId {
        let id = MessageId::from(self.next_id);
        self.next_id = self.next_id.saturating_add(1);
        id
    }

    /// Publishes a request at QoS 1 and records it for its reply.
    fn request(
        &mut self,
        now: Millis,
        topic: OtaTopic,
        id: MessageId,
        body: &[u8],
        report: Option<Progress>,
    ) -> Result<(), Misuse> {
        let packet_id = self.session.publish(
            now,
            &self.device.topic(topic),
            body,
            QoS::AtLeastOnce,
            false,
        )?;
        self.pending.push(Pending {
            topic,
            id,
            packet_id,
            deadline: None,
            report,
        });
        Ok(())
    }

    /// Reports the running version; a failure to publish stops the flow like a refusal.
    fn inform(&mut self, now: Millis) {
        // A newer inform supersedes any older one still awaiting its reply.
        self.pending.retain(|p| p.topic != OtaTopic::Inform);
        let id = self.take_id();
        let body = inform_request(&id, &self.version);
        if let Err(misuse) = self.request(now, OtaTopic::Inform, id, &body, None) {
            self.stop(misuse.into());
        }
    }

    /// Sends a progress report; a refused publish becomes an unacknowledged step.
    fn report(&mut self, now: Millis, progress: Progress) {
        let step = progress.step;
        if let Ok(percent) = u8::try_from(step.value()) {
            self.last_sent = Some(Sent { percent, at: now });
        }
        let id = self.take_id();
        let body = progress_request(&id, &progress);
        if let Err(misuse) = self.request(now, OtaTopic::Progress, id, &body, Some(progress)) {
            self.events.push_back(EnosEvent::ProgressNotAcknowledged {
                step,
                error: misuse.into(),
            });
        }
    }

    /// Reports `percent` if the throttle allows.
    fn progress(&mut self, now: Millis, percent: u8) {
        let due = match self.last_sent {
            None => true,
            Some(last) => {
                let rise = percent.saturating_sub(last.percent);
                rise > 0
                    && rise >= self.options.throttle.percent
                    && now.since(last.at) >= self.options.throttle.interval
            }
        };
        if due {
            self.report(now, Progress::new(step_of(percent)));
        }
    }

    /// Ends the task with a failure `step` (the error's text as `desc`) and the event.
    fn fail(&mut self, now: Millis, step: Step, error: Error) {
        self.task = Task::Idle;
        self.report(now, Progress::with_desc(step, error.to_string()));
        self.last_sent = None;
        self.events.push_back(EnosEvent::Failed(error));
    }

    fn stop(&mut self, error: Error) {
        self.task = Task::Stopped;
        self.pending.clear();
        self.events.push_back(EnosEvent::Failed(error));
    }

    /// Reads the task's sign; an unreadable one fails the task with −3, a file larger than
    /// [`EnosOptions::max_file_size`] with −2.
    fn offer(&mut self, now: Millis, firmware: Firmware, pushed: bool) -> Option<Offer> {
        let limit = self.options.max_file_size;
        if firmware.file_size > limit {
            let reason = DecodeError::TooLarge {
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
            };
            let error = Error::PeerMalformed(Malformed {
                what: "the task's fileSize",
                reason,
            });
            self.fail(now, Step::DOWNLOAD_FAILED, error);
            return None;
        }
        match firmware.expected_digest() {
            Ok(sign) => Some(Offer {
                firmware,
                sign,
                pushed,
            }),
            Err(body) => {
                self.fail(now, Step::VERIFICATION_FAILED, body.into());
                None
            }
        }
    }

    /// Step 0, then the download request.
    fn start(&mut self, now: Millis, offer: Offer) {
        self.last_sent = None;
        self.progress(now, 0);
        self.events.push_back(EnosEvent::Download {
            url: offer.firmware.file_url.clone(),
            size: offer.firmware.file_size,
            sign: offer.sign,
            version: offer.firmware.version.clone(),
        });
        self.task = Task::Downloading {
            offer,
            deadline: now + self.options.stall_timeout,
        };
    }

    /// Size, then the EnOS sign, then [`verify_image`] over an entry made from the task.
    fn verify(&self, offer: &Offer, bytes: &[u8]) -> Result<Verified<Image>, Error> {
        let firmware = &offer.firmware;
        let actual = bytes.len() as u64;
        if actual != firmware.file_size {
            return Err(VerifyError::SizeMismatch {
                expected: firmware.file_size,
                actual,
            }
            .into());
        }
        let (sha, md5) = match *offer.sign.expected() {
            DigestValue::Sha256(expected) => (expected, None),
            DigestValue::Md5(expected) => {
                offer.sign.check_bytes(bytes)?;
                (sha256(bytes), Some(expected))
            }
        };
        let name = firmware
            .file_url
            .rsplit('/')
            .find(|level| !level.is_empty())
            .unwrap_or(&firmware.version);
        let entry = ManifestEntry {
            name: name.to_string(),
            flow: self.options.install_flow,
            version: firmware.version.clone(),
            url: firmware.file_url.clone(),
            size: firmware.file_size,
            sha256: sha,
            md5,
            signature: None,
            compression: None,
        };
        Ok(verify_image(bytes, &entry, &self.options.verify)?)
    }

    /// Drains the session's events into the flow's.
    fn pump(&mut self, now: Millis) {
        while let Some(event) = self.session.poll_event() {
            match event {
                MqttEvent::Connected { .. } => {
                    self.events.push_back(EnosEvent::Link(event));
                    if !self.is_stopped() {
                        self.inform(now);
                    }
                }
                MqttEvent::Published { packet_id } => {
                    let timeout = self.options.reply_timeout;
                    if let Some(p) = self
                        .pending
                        .iter_mut()
                        .find(|p| p.packet_id == Some(packet_id))
                    {
                        p.packet_id = None;
                        p.deadline = Some(now + timeout);
                    }
                    self.events.push_back(EnosEvent::Link(event));
                }
                MqttEvent::Message { ref topic, .. } if !self.is_ours(topic) => {
                    self.events.push_back(EnosEvent::Link(event));
                }
                MqttEvent::Message { topic, payload, .. } => self.message(now, topic, &payload),
                other => self.events.push_back(EnosEvent::Link(other)),
            }
        }
    }

    /// Whether `topic` is one of this device's OTA topics.
    fn is_ours(&self, topic: &str) -> bool {
        TopicRef::parse(topic).is_some_and(|t| t.is_for(&self.device))
    }

    fn message(&mut self, now: Millis, topic: String, payload: &[u8]) {
        let Some(parsed) = TopicRef::parse(&topic) else {
            return;
        };
        if self.is_stopped() {
            return;
        }
        let (kind, is_reply) = (parsed.topic, parsed.reply);
        let result = match (kind, is_reply) {
            (OtaTopic::Upgrade, false) => UpgradeCommand::parse(payload).map(|c| self.push(now, c)),
            (OtaTopic::GetVersion, true) => {
                VersionsReply::parse(payload).map(|r| self.versions(now, r))
            }
            (OtaTopic::Inform | OtaTopic::Progress, true) => {
                Reply::parse(payload).map(|r| self.reply(kind, r))
            }
            // Our own requests echoed back, or the cloud's side of `upgrade_reply`.
            _ => Ok(()),
        };
        if let Err(body) = result {
            self.events.push_back(EnosEvent::Malformed {
                topic,
                error: body.into(),
            });
        }
    }

    /// Removes and returns the request `reply` answers: same id, or the oldest on the
    /// topic when the reply has no id (the docs mark it optional).
    fn answered(&mut self, topic: OtaTopic, id: Option<&MessageId>) -> Option<Pending> {
        let index = self
            .pending
            .iter()
            .position(|p| p.topic == topic && id.is_none_or(|id| *id == p.id))?;
        Some(self.pending.remove(index))
    }

    fn push(&mut self, now: Millis, command: UpgradeCommand) {
        let reply_body = reply(command.id.as_ref(), ReplyCode::OK, None);
        // QoS 0 as the SDKs answer commands; a refused publish only loses the courtesy.
        let _ = self.session.publish(
            now,
            &self.device.reply_topic(OtaTopic::Upgrade),
            &reply_body,
            QoS::AtMostOnce,
            false,
        );
        let firmware = command.firmware;
        match &self.task {
            Task::Idle => {}
            // A QoS 1 repeat of the task in hand: answered above, nothing more.
            Task::Offered(o)
            | Task::Downloading { offer: o, .. }
            | Task::Installing { offer: o, .. }
                if o.firmware == firmware =>
            {
                return
            }
            _ => return self.events.push_back(EnosEvent::PushIgnored { firmware }),
        }
        let Some(offer) = self.offer(now, firmware, true) else {
            return;
        };
        match self.options.accept {
            AcceptPolicy::Auto => self.start(now, offer),
            AcceptPolicy::Ask => {
                self.events.push_back(EnosEvent::UpgradeOffered {
                    firmware: offer.firmware.clone(),
                });
                self.task = Task::Offered(offer);
            }
        }
    }

    fn versions(&mut self, now: Millis, reply: VersionsReply) {
        if self
            .answered(OtaTopic::GetVersion, reply.reply.id.as_ref())
            .is_none()
            || !matches!(self.task, Task::Asking)
        {
            return;
        }
        self.task = Task::Idle;
        if let Err(refusal) = reply.reply.result() {
            return self.events.push_back(EnosEvent::Failed(refusal.into()));
        }
        match self.options.pick {
            PickPolicy::Ask if reply.firmwares.is_empty() => {
                self.events.push_back(EnosEvent::NoUpdate);
            }
            PickPolicy::Ask => {
                self.events.push_back(EnosEvent::VersionsOffered {
                    firmwares: reply.firmwares.clone(),
                });
                self.task = Task::Choosing(reply.firmwares);
            }
            PickPolicy::Highest => {
                let Some(firmware) = self.highest(reply.firmwares) else {
                    return self.events.push_back(EnosEvent::NoUpdate);
                };
                let Some(offer) = self.offer(now, firmware, false) else {
                    return;
                };
                match self.options.accept {
                    AcceptPolicy::Auto => self.start(now, offer),
                    AcceptPolicy::Ask => {
                        self.events.push_back(EnosEvent::UpgradeOffered {
                            firmware: offer.firmware.clone(),
                        });
                        self.task = Task::Offered(offer);
                    }
                }
            }
        }
    }

    /// The highest listed version newer than the running one.
    fn highest(&self, firmwares: Vec<Firmware>) -> Option<Firmware> {
        let current = EnosVersion::parse(&self.version).ok()?;
        firmwares
            .into_iter()
            .filter_map(|f| EnosVersion::parse(&f.version).ok().map(|v| (v, f)))
            .filter(|(v, _)| *v > current)
            .max_by(|(a, _), (b, _)| a.cmp(b))
            .map(|(_, f)| f)
    }

    fn reply(&mut self, topic: OtaTopic, reply: Reply) {
        let Some(pending) = self.answered(topic, reply.id.as_ref()) else {
            return;
        };
        match (topic, reply.result(), pending.report.map(|r| r.step)) {
            (OtaTopic::Inform, Ok(()), _) if matches!(self.task, Task::Finishing) => {
                self.task = Task::Idle;
                self.last_sent = None;
                self.events.push_back(EnosEvent::Done {
                    version: self.version.clone(),
                });
            }
            (OtaTopic::Inform, Ok(()), _) => self.events.push_back(EnosEvent::Connected {
                version: self.version.clone(),
            }),
            (OtaTopic::Inform, Err(refusal), _) => self.stop(refusal.into()),
            (_, Ok(()), Some(step)) => self.events.push_back(EnosEvent::Reported { step }),
            (_, Err(refusal), Some(step)) => {
                self.events.push_back(EnosEvent::ProgressNotAcknowledged {
                    step,
                    error: refusal.into(),
                });
            }
            (_, _, None) => {}
        }
    }

    /// Fires the flow's own deadlines due at `now`.
    fn expire(&mut self, now: Millis) {
        let due = |d: Option<Millis>| d.is_some_and(|d| now >= d);
        let mut expired = Vec::new();
        self.pending.retain(|p| {
            let keep = !due(p.deadline);
            if !keep {
                expired.push(p.clone());
            }
            keep
        });
        for p in expired {
            match p.topic {
                // Unanswered is not refused: the cloud may be restarting or re-subscribing
                // (the broker took the inform), so it goes again, as after a reconnect.
                OtaTopic::Inform => self.inform(now),
                OtaTopic::GetVersion => {
                    if matches!(self.task, Task::Asking) {
                        self.task = Task::Idle;
                    }
                    self.events
                        .push_back(EnosEvent::Failed(timed_out(WAIT_VERSIONS)));
                }
                OtaTopic::Progress | OtaTopic::Upgrade => {
                    if let Some(report) = p.report {
                        self.events.push_back(EnosEvent::ProgressNotAcknowledged {
                            step: report.step,
                            error: timed_out(WAIT_PROGRESS),
                        });
                        // A failure is the task's last word: without it the cloud shows the
                        // task in progress for ever. It goes again until answered, unless a
                        // new task began.
                        if report.step.value() < 0 && matches!(self.task, Task::Idle) {
                            self.report(now, report);
                        }
                    }
                }
            }
        }
        match self.task {
            Task::Downloading { deadline, .. } if now >= deadline => {
                self.fail(now, Step::DOWNLOAD_FAILED, timed_out(WAIT_DOWNLOAD));
            }
            Task::Installing {
                deadline, started, ..
            } if now >= deadline => {
                let step = if started {
                    Step::BURNING_FAILED
                } else {
                    Step::UPGRADE_FAILED
                };
                self.fail(now, step, timed_out(WAIT_INSTALL));
            }
            _ => {}
        }
    }

    fn own_deadline(&self) -> Option<Millis> {
        let task = match self.task {
            Task::Downloading { deadline, .. } | Task::Installing { deadline, .. } => {
                Some(deadline)
            }
            _ => None,
        };
        self.pending
            .iter()
            .filter_map(|p| p.deadline)
            .chain(task)
            .min()
    }
}

impl Flow for EnosFlow {
    type Channel = ();
    type Event = EnosEvent;

    fn handle_connected(&mut self, now: Millis) {
        self.session.handle_connected(now);
        self.pump(now);
    }

    fn handle_disconnected(&mut self, now: Millis) {
        self.session.handle_disconnected(now);
        self.pump(now);
    }

    fn handle_input(&mut self, now: Millis, channel: (), bytes: &[u8]) {
        self.session.handle_input(now, channel, bytes);
        self.pump(now);
    }

    fn handle_timeout(&mut self, now: Millis) {
        self.session.handle_timeout(now);
        self.pump(now);
        self.expire(now);
        self.pump(now);
    }

    fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> Option<Transmit<()>> {
        self.session.poll_transmit(buf)
    }

    fn poll_timeout(&self) -> Option<Millis> {
        [self.session.poll_timeout(), self.own_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    fn poll_event(&mut self) -> Option<EnosEvent> {
        self.events.pop_front()
    }
}

fn connect_options(credentials: &MqttCredentials) -> ConnectOptions {
    ConnectOptions::new(credentials.client_id.clone()).with_login(
        credentials.username.clone(),
        credentials.password.as_bytes(),
    )
}

fn timed_out(waiting_for: &'static str) -> Error {
    LinkLost::TimedOut { waiting_for }.into()
}

/// A step of 0…100; callers pass percentages they computed within that range.
fn step_of(percent: u8) -> Step {
    Step::percent(percent.min(100)).unwrap_or(Step::UPGRADE_FAILED)
}

/// `part` of `total` mapped onto `from..=to` percent.
fn scale(part: u64, total: u64, from: u8, to: u8) -> Result<u8, Misuse> {
    if total == 0 || part > total {
        return Err(Misuse::InvalidArgument(
            "progress needs a total above zero and a part not above it",
        ));
    }
    // floor(part * span / total) without a 128-bit division (which would pull compiler-rt's
    // __udivti3 into the wasm): add `part` to a remainder below `total` `span` times, counting
    // each wrap past `total`. `span` is at most 255 and nothing overflows.
    let mut scaled: u8 = 0;
    let mut rem: u64 = 0;
    for _ in 0..to.saturating_sub(from) {
        if rem >= total - part {
            rem -= total - part;
            scaled += 1;
        } else {
            rem += part;
        }
    }
    Ok(from.saturating_add(scaled))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::digest::{md5, to_hex};
    use crate::test_rng::Rng;
    use crate::wire::enos::{get_version_reply, upgrade_command};
    use crate::wire::mqtt::{PacketRepr, PublishRepr, QosPid, SubackCode, SubackRepr};
    use alloc::format;
    use alloc::vec;

    const UPGRADE: &str = "/sys/pk1/dk1/ota/device/upgrade";
    const INFORM: &str = "/sys/pk1/dk1/ota/device/inform";
    const PROGRESS: &str = "/sys/pk1/dk1/ota/device/progress";
    const GETVERSION: &str = "/sys/pk1/dk1/ota/device/getversion";

    fn device() -> DeviceId {
        DeviceId::new("pk1", "dk1").unwrap()
    }

    fn credentials() -> MqttCredentials {
        MqttCredentials {
            client_id: "dk1|securemode=2,signmethod=sha256,timestamp=1|".to_string(),
            username: "dk1&pk1".to_string(),
            password: "ABCD".to_string(),
        }
    }

    fn file() -> Vec<u8> {
        (0..1000u32).map(|i| (i * 7) as u8).collect()
    }

    fn firmware(version: &str, bytes: &[u8]) -> Firmware {
        Firmware {
            version: version.to_string(),
            sign: to_hex(&md5(bytes)).to_uppercase(),
            sign_method: "md5".to_string(),
            file_url: format!("/pk1/ota/fw-{version}"),
            file_size: bytes.len() as u64,
        }
    }

    /// The flow, a clock, and a broker that acknowledges everything the flow sends.
    struct Cloud {
        f: EnosFlow,
        now: Millis,
    }

    impl Cloud {
        fn new(accept: AcceptPolicy) -> Self {
            let mut options = EnosOptions::new(FlowKind::Dfu);
            options.accept = accept;
            Cloud {
                f: EnosFlow::new(device(), &credentials(), "1.0.0", options).unwrap(),
                now: Millis(1_000),
            }
        }

        fn at(&mut self, ms: u64) {
            self.now = Millis(ms);
        }

        fn recv(&mut self, bytes: &[u8]) {
            self.f.handle_input(self.now, (), bytes);
        }

        /// Every PUBLISH the flow sends now as (topic, JSON), SUBACKing and PUBACKing all.
        fn sent(&mut self) -> Vec<(String, String)> {
            let mut publishes = Vec::new();
            loop {
                let mut acks = Vec::new();
                let mut buf = Vec::new();
                while let Some(t) = self.f.poll_transmit(&mut buf) {
                    let packet = buf.split_off(buf.len() - t.len);
                    match PacketRepr::parse_bytes(&packet).unwrap() {
                        PacketRepr::Subscribe(s) => PacketRepr::Suback(SubackRepr {
                            packet_id: s.packet_id,
                            codes: vec![SubackCode::Granted(QoS::AtLeastOnce)],
                        })
                        .append_to(&mut acks)
                        .map(|_| ())
                        .unwrap(),
                        PacketRepr::Publish(p) => {
                            if let Some(pid) = p.qos.packet_id() {
                                PacketRepr::Puback(pid).append_to(&mut acks).unwrap();
                            }
                            publishes.push((
                                p.topic.to_string(),
                                String::from_utf8(p.payload.to_vec()).unwrap(),
                            ));
                        }
                        PacketRepr::Pingreq => acks.extend_from_slice(&[0xD0, 0x00]),
                        _ => {}
                    }
                }
                if acks.is_empty() {
                    return publishes;
                }
                self.recv(&acks);
            }
        }

        /// The flow's own events (link events left out).
        fn events(&mut self) -> Vec<EnosEvent> {
            core::iter::from_fn(|| self.f.poll_event())
                .filter(|e| !matches!(e, EnosEvent::Link(_)))
                .collect()
        }

        fn publish(&mut self, topic: &str, payload: &[u8]) {
            let mut b = Vec::new();
            PacketRepr::Publish(PublishRepr {
                topic,
                qos: QosPid::AtMostOnce,
                dup: false,
                retain: false,
                payload,
            })
            .append_to(&mut b)
            .unwrap();
            self.recv(&b);
        }

        fn answer(&mut self, request_topic: &str, id: &str, code: i64) {
            let body = reply(Some(&MessageId(id.to_string())), ReplyCode(code), None);
            self.publish(&format!("{request_topic}_reply"), &body);
        }

        /// Connects, checks the subscriptions and the inform, and acknowledges it.
        fn connect(&mut self) {
            self.f.handle_connected(self.now);
            let mut buf = Vec::new();
            let t = self.f.poll_transmit(&mut buf).unwrap();
            assert!(matches!(
                PacketRepr::parse_bytes(&buf[..t.len]),
                Ok(PacketRepr::Connect(c)) if c.username == Some("dk1&pk1")
            ));
            self.recv(&[0x20, 0x02, 0x00, 0x00]);
            let mut buf = Vec::new();
            let mut filters = Vec::new();
            let mut rest = Vec::new();
            while let Some(t) = self.f.poll_transmit(&mut buf) {
                let packet = buf.split_off(buf.len() - t.len);
                match PacketRepr::parse_bytes(&packet).unwrap() {
                    PacketRepr::Subscribe(s) => {
                        filters.extend(s.filters.iter().map(|f| f.filter.to_string()));
                        let mut ack = Vec::new();
                        PacketRepr::Suback(SubackRepr {
                            packet_id: s.packet_id,
                            codes: vec![SubackCode::Granted(QoS::AtLeastOnce)],
                        })
                        .append_to(&mut ack)
                        .unwrap();
                        rest.push(ack);
                    }
                    PacketRepr::Publish(p) => {
                        assert_eq!(p.topic, INFORM);
                        assert_eq!(p.qos.qos(), QoS::AtLeastOnce);
                        assert_eq!(
                            p.payload,
                            br#"{"id":"1","version":"1.0","method":"ota.device.inform","params":{"version":"1.0.0"}}"#
                        );
                        let mut ack = Vec::new();
                        PacketRepr::Puback(p.qos.packet_id().unwrap())
                            .append_to(&mut ack)
                            .unwrap();
                        rest.push(ack);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(
                filters,
                [
                    UPGRADE,
                    "/sys/pk1/dk1/ota/device/inform_reply",
                    "/sys/pk1/dk1/ota/device/progress_reply",
                    "/sys/pk1/dk1/ota/device/getversion_reply",
                ]
            );
            assert_eq!(rest.len(), 5, "four SUBACKs and the inform's PUBACK");
            for ack in rest {
                self.recv(&ack);
            }
            self.answer(INFORM, "1", 200);
            assert!(matches!(
                &self.events()[..],
                [EnosEvent::Connected { version }] if version == "1.0.0"
            ));
        }

        /// Pushes `fw` with command id 123 and checks the upgrade_reply.
        fn push(&mut self, fw: &Firmware) -> Vec<(String, String)> {
            self.publish(UPGRADE, &upgrade_command(&MessageId("123".into()), fw));
            let sent = self.sent();
            assert_eq!(
                sent[0],
                (
                    format!("{UPGRADE}_reply"),
                    r#"{"id":"123","code":200,"data":{}}"#.to_string()
                )
            );
            sent[1..].to_vec()
        }
    }

    fn progress_json(id: u64, step: i32, desc: &str) -> (String, String) {
        (
            PROGRESS.to_string(),
            format!(
                r#"{{"id":"{id}","version":"1.0","method":"ota.device.progress","params":{{"step":"{step}","desc":"{desc}"}}}}"#
            ),
        )
    }

    /// The step of a progress request.
    fn step_in(json: &str) -> i32 {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        v["params"]["step"].as_str().unwrap().parse().unwrap()
    }

    #[test]
    fn happy_path_reports_throttled_progress_and_the_new_version() {
        let mut c = Cloud::new(AcceptPolicy::Auto);
        c.connect();

        c.at(2_000);
        let fw = firmware("2.0.0", &file());
        assert_eq!(c.push(&fw), [progress_json(2, 0, "upgrading")]);
        let events = c.events();
        let [EnosEvent::Download {
            url,
            size,
            sign,
            version,
        }] = &events[..]
        else {
            panic!("{events:?}")
        };
        assert_eq!(
            (url.as_str(), *size, version.as_str()),
            ("/pk1/ota/fw-2.0.0", 1000, "2.0.0")
        );
        assert_eq!(*sign.expected(), DigestValue::Md5(md5(&file())));
        c.answer(PROGRESS, "2", 200);
        assert!(matches!(&c.events()[..], [EnosEvent::Reported { step }] if step.value() == 0));

        // 5 % of the download range is below the 10 % throttle.
        c.at(3_000);
        c.f.download_progress(c.now, 500, 1000).unwrap();
        assert!(c.sent().is_empty());
        c.at(5_000);
        c.f.downloaded(c.now, &file()).unwrap();
        assert_eq!(c.sent(), [progress_json(3, 10, "upgrading")]);
        let events = c.events();
        let [EnosEvent::Install(image)] = &events[..] else {
            panic!("{events:?}")
        };
        let image = image.get();
        assert_eq!(image.bytes, file());
        assert_eq!(image.sha256, sha256(&file()));
        assert_eq!(
            (image.version.as_str(), image.flow, image.name.as_str()),
            ("2.0.0", FlowKind::Dfu, "fw-2.0.0")
        );

        // Install 10-99 %: a step goes out once it rose 10 and 2 s passed.
        let mut steps = Vec::new();
        for (ms, confirmed) in [
            (5_500, 100),
            (6_000, 200),
            (7_000, 300),
            (7_500, 500),
            (9_000, 600),
            (11_000, 650),
            (11_500, 1000),
        ] {
            c.at(ms);
            c.f.install_progress(c.now, confirmed, 1000).unwrap();
            steps.extend(c.sent().iter().map(|(_, json)| step_in(json)));
        }
        assert_eq!(steps, [36, 63, 99]);

        c.at(12_000);
        c.f.install_done(c.now, "2.0.0").unwrap();
        assert_eq!(
            c.sent(),
            [
                progress_json(7, 100, "upgrading"),
                (
                    INFORM.to_string(),
                    r#"{"id":"8","version":"1.0","method":"ota.device.inform","params":{"version":"2.0.0"}}"#
                        .to_string()
                )
            ]
        );
        for id in 3..=7 {
            c.answer(PROGRESS, &id.to_string(), 200);
        }
        c.answer(INFORM, "8", 200);
        let events = c.events();
        let reported: Vec<i32> = events
            .iter()
            .filter_map(|e| match e {
                EnosEvent::Reported { step } => Some(step.value()),
                _ => None,
            })
            .collect();
        assert_eq!(reported, [10, 36, 63, 99, 100]);
        assert!(matches!(events.last(), Some(EnosEvent::Done { version }) if version == "2.0.0"));
        assert_eq!(c.f.current_version(), "2.0.0");
        assert!(!c.f.is_busy());
        assert_eq!(
            c.f.poll_timeout(),
            c.f.session().poll_timeout(),
            "no reply awaited"
        );
    }

    /// Pushes the test file's firmware and returns the flow waiting for the download.
    fn downloading() -> Cloud {
        let mut c = Cloud::new(AcceptPolicy::Auto);
        c.connect();
        c.push(&firmware("2.0.0", &file()));
        assert!(matches!(&c.events()[..], [EnosEvent::Download { .. }]));
        c
    }

    #[test]
    fn an_install_that_ends_on_another_version_fails_the_task_and_informs_it() {
        let mut c = downloading();
        c.f.downloaded(c.now, &file()).unwrap();
        assert!(matches!(&c.events()[..], [EnosEvent::Install(_)]));
        c.sent();
        c.f.install_done(c.now, "4.0.0").unwrap();
        let sent = c.sent();
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert!(
            sent[0].0 == PROGRESS && step_in(&sent[0].1) == -4,
            "{sent:?}"
        );
        assert!(sent[1].0 == INFORM && sent[1].1.contains(r#""params":{"version":"4.0.0"}"#));
        assert!(matches!(
            &c.events()[..],
            [EnosEvent::Failed(Error::PeerRefused(r))] if r.name == "VERSION_NOT_INSTALLED"
        ));
        assert_eq!(c.f.current_version(), "4.0.0");
        assert!(!c.f.is_busy());
    }

    #[test]
    fn a_wrong_md5_reports_minus_3_and_installs_nothing() {
        let mut c = downloading();
        let mut bad = file();
        bad[10] ^= 1;
        c.f.downloaded(c.now, &bad).unwrap();
        let sent = c.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(step_in(&sent[0].1), -3);
        assert!(sent[0].1.contains("MD5"), "{}", sent[0].1);
        let events = c.events();
        assert!(matches!(
            &events[..],
            [EnosEvent::Failed(Error::Verification(
                VerifyError::Md5Mismatch { .. }
            ))]
        ));
        assert!(!c.f.is_busy());
        assert!(c.f.downloaded(c.now, &file()).is_err(), "the task is over");
    }

    #[test]
    fn a_wrong_size_is_a_verification_failure() {
        let mut c = downloading();
        c.f.downloaded(c.now, &file()[..999]).unwrap();
        let sent = c.sent();
        assert_eq!(step_in(&sent[0].1), -3);
        assert!(matches!(
            &c.events()[..],
            [EnosEvent::Failed(Error::Verification(
                VerifyError::SizeMismatch {
                    expected: 1000,
                    actual: 999
                }
            ))]
        ));
    }

    #[test]
    fn a_file_larger_than_accepted_fails_with_minus_2_before_any_download() {
        let mut c = Cloud::new(AcceptPolicy::Auto);
        c.connect();
        let mut fw = firmware("2.0.0", &file());
        fw.file_size = MAX_FILE_SIZE + 1;
        let progress: Vec<String> = c
            .push(&fw)
            .into_iter()
            .filter(|(t, _)| t == PROGRESS)
            .map(|(_, json)| json)
            .collect();
        assert_eq!(progress.len(), 1, "{progress:?}");
        assert_eq!(step_in(&progress[0]), -2);
        assert!(progress[0].contains("fileSize"), "{}", progress[0]);
        assert!(matches!(
            &c.events()[..],
            [EnosEvent::Failed(Error::PeerMalformed(Malformed {
                reason: DecodeError::TooLarge { limit: 134_217_728 },
                ..
            }))]
        ));
        assert!(!c.f.is_busy());
        fw.file_size = 1000;
        c.push(&fw);
        assert!(matches!(
            &c.events()[..],
            [EnosEvent::Download { size: 1000, .. }]
        ));
    }

    #[test]
    fn a_sha256_sign_is_checked_by_verify_image() {
        let mut c = Cloud::new(AcceptPolicy::Auto);
        c.connect();
        let mut fw = firmware("2.0.0", &file());
        fw.sign_method = "sha256".into();
        fw.sign = to_hex(&sha256(&file()));
        c.push(&fw);
        c.events();
        c.f.downloaded(c.now, &file()).unwrap();
        c.sent();
        assert!(matches!(&c.events()[..], [EnosEvent::Install(i)] if i.get().bytes == file()));

        let mut c = Cloud::new(AcceptPolicy::Auto);
        c.connect();
        fw.sign = to_hex(&sha256(b"other"));
        c.push(&fw);
        c.events();
        c.f.downloaded(c.now, &file()).unwrap();
        assert_eq!(step_in(&c.sent()[0].1), -3);
        assert!(matches!(
            &c.events()[..],
            [EnosEvent::Failed(Error::Verification(
                VerifyError::DigestMismatch { .. }
            ))]
        ));
    }

    #[test]
    fn a_download_failure_reports_minus_2() {
        let mut c = downloading();
        let error: Error = LinkLost::Disconnected.into();
        c.f.download_failed(c.now, error.clone()).unwrap();
        let sent = c.sent();
        assert_eq!(sent, [progress_json(3, -2, &error.to_string())]);
        assert!(matches!(&c.events()[..], [EnosEvent::Failed(e)] if *e == error));
    }

    #[test]
    fn a_stalled_download_fails_with_minus_2() {
        let mut c = downloading();
        c.sent();
        c.answer(PROGRESS, "2", 200);
        c.events();
        let stall = c.now + Span::from_secs(300);
        // Keepalive pings come and go meanwhile.
        let mut sent = Vec::new();
        while sent.is_empty() {
            let next = c.f.poll_timeout().unwrap();
            assert!(next <= stall);
            c.at(next.0);
            c.f.handle_timeout(c.now);
            sent = c.sent();
        }
        assert_eq!(c.now, stall);
        assert_eq!(step_in(&sent[0].1), -2);
        assert!(matches!(
            &c.events()[..],
            [EnosEvent::Failed(Error::LinkLost(LinkLost::TimedOut {
                waiting_for: "firmware download"
            }))]
        ));
    }

    #[test]
    fn an_install_failure_reports_minus_4_or_minus_1() {
        let error: Error = LinkLost::TimedOut {
            waiting_for: "segment response",
        }
        .into();
        // Confirmed bytes, a transfer begun with none confirmed yet, nothing sent.
        for (confirmed, transfer, step) in
            [(Some(100), false, -4), (None, true, -4), (None, false, -1)]
        {
            let mut c = downloading();
            c.f.downloaded(c.now, &file()).unwrap();
            c.sent();
            c.events();
            if transfer {
                c.f.install_started(c.now).unwrap();
            }
            if let Some(confirmed) = confirmed {
                c.f.install_progress(c.now, confirmed, 1000).unwrap();
            }
            c.f.install_failed(c.now, error.clone()).unwrap();
            let sent = c.sent();
            assert_eq!(step_in(&sent.last().unwrap().1), step);
            assert!(sent.last().unwrap().1.contains("segment response"));
            assert!(matches!(&c.events()[..], [EnosEvent::Failed(e)] if *e == error));
            assert!(!c.f.is_busy());
        }
    }

    #[test]
    fn task_not_found_and_not_started_are_typed_events() {
        let mut c = downloading();
        c.sent();
        c.answer(PROGRESS, "2", 764);
        let events = c.events();
        let [EnosEvent::ProgressNotAcknowledged {
            step,
            error: Error::PeerRefused(refusal),
        }] = &events[..]
        else {
            panic!("{events:?}")
        };
        assert_eq!(step.value(), 0);
        assert_eq!(
            (refusal.vendor, refusal.code, refusal.retryable),
            (Vendor::Enos, 764, false)
        );
        // A repeated answer to the same id matches nothing: the first consumed it.
        c.answer(PROGRESS, "2", 764);
        assert!(c.events().is_empty());

        // The task goes on: the file still installs, and its step 10 meets a 765.
        c.at(c.now.0 + 5_000);
        c.f.downloaded(c.now, &file()).unwrap();
        assert_eq!(c.sent(), [progress_json(3, 10, "upgrading")]);
        assert!(matches!(&c.events()[..], [EnosEvent::Install(_)]));
        c.answer(PROGRESS, "3", 765);
        assert!(matches!(
            &c.events()[..],
            [EnosEvent::ProgressNotAcknowledged { step, error: Error::PeerRefused(r) }]
                if step.value() == 10 && r.code == 765 && r.retryable && r.vendor == Vendor::Enos
        ));
    }

    #[test]
    fn an_unanswered_progress_report_is_reported_and_the_task_goes_on() {
        let mut c = downloading();
        c.sent();
        // The reply deadline runs from the PUBACK, which `sent` just fed back.
        assert_eq!(c.f.poll_timeout(), Some(c.now + Span::from_secs(10)));
        c.at(c.now.0 + 10_000);
        c.f.handle_timeout(c.now);
        assert!(matches!(
            &c.events()[..],
            [EnosEvent::ProgressNotAcknowledged {
                error: Error::LinkLost(LinkLost::TimedOut {
                    waiting_for: "EnOS progress reply"
                }),
                ..
            }]
        ));
        assert!(c.f.is_busy());
    }

    #[test]
    fn an_unanswered_failure_report_goes_again_until_the_cloud_answers() {
        let mut c = downloading();
        c.sent();
        let lost = Error::LinkLost(LinkLost::Disconnected);
        c.f.download_failed(c.now, lost).unwrap();
        let first = c.sent();
        assert!(first
            .iter()
            .any(|(t, b)| t.ends_with("/progress") && b.contains(r#""step":"-2""#)));
        c.events();
        let mut id = String::new();
        for _ in 0..2 {
            c.at(c.now.0 + 10_000);
            c.f.handle_timeout(c.now);
            let events = c.events();
            assert!(
                events.iter().any(|e| matches!(
                    e,
                    EnosEvent::ProgressNotAcknowledged { step, .. } if step.value() == -2
                )),
                "{events:?}"
            );
            let again = c.sent();
            let (_, body) = again
                .iter()
                .find(|(t, b)| t.ends_with("/progress") && b.contains(r#""step":"-2""#))
                .expect("sent again");
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            id = v["id"].as_str().unwrap().to_string();
        }
        // An answered report is not sent again.
        c.answer(PROGRESS, &id, 200);
        c.events();
        c.at(c.now.0 + 60_000);
        c.f.handle_timeout(c.now);
        assert!(c.sent().is_empty() && c.events().is_empty());
    }

    #[test]
    fn an_unanswered_inform_goes_again_and_a_late_answer_connects() {
        let mut c = Cloud::new(AcceptPolicy::Auto);
        c.f.handle_connected(c.now);
        c.recv(&[0x20, 0x02, 0x00, 0x00]);
        c.sent();
        for attempt in 2..=4 {
            c.at(c.now.0 + 10_000);
            c.f.handle_timeout(c.now);
            assert!(c.events().is_empty(), "no failure, no stop");
            assert!(!c.f.is_stopped());
            let sent = c.sent();
            let informs: Vec<&String> = sent
                .iter()
                .filter(|(topic, _)| topic.ends_with("/ota/device/inform"))
                .map(|(_, body)| body)
                .collect();
            assert_eq!(informs.len(), 1, "attempt {attempt}: {sent:?}");
            assert!(
                informs[0].contains(&format!(r#""id":"{attempt}""#)),
                "a new id each time: {}",
                informs[0]
            );
        }
        // The answer to the newest inform connects; one to an older id is dropped.
        c.answer(INFORM, "1", 200);
        assert!(c.events().is_empty());
        c.answer(INFORM, "4", 200);
        assert!(matches!(&c.events()[..], [EnosEvent::Connected { .. }]));
    }

    #[test]
    fn a_refused_inform_stops_the_flow() {
        let mut c = Cloud::new(AcceptPolicy::Auto);
        c.f.handle_connected(c.now);
        c.recv(&[0x20, 0x02, 0x00, 0x00]);
        c.sent();
        c.answer(INFORM, "1", 1009);
        assert!(
            matches!(&c.events()[..], [EnosEvent::Failed(Error::PeerRefused(r))] if r.code == 1009)
        );
        assert!(c.f.is_stopped());
    }

    #[test]
    fn getversion_picks_the_highest_newer_version() {
        let mut c = Cloud::new(AcceptPolicy::Ask);
        c.connect();
        c.f.check_for_update(c.now).unwrap();
        assert_eq!(
            c.sent(),
            [(
                GETVERSION.to_string(),
                r#"{"id":"2","version":"1.0","method":"ota.device.getversion","params":{}}"#
                    .to_string()
            )]
        );
        let list = [
            firmware("1.5.0", &file()),
            firmware("2.10.0", &file()),
            firmware("2.9.1", &file()),
            firmware("0.9", &file()),
        ];
        c.publish(
            &format!("{GETVERSION}_reply"),
            &get_version_reply(Some(&MessageId("2".into())), ReplyCode::OK, &list),
        );
        assert!(matches!(
            &c.events()[..],
            [EnosEvent::UpgradeOffered { firmware }] if firmware.version == "2.10.0"
        ));
        c.f.accept(c.now).unwrap();
        assert_eq!(c.sent(), [progress_json(3, 0, "upgrading")]);
        assert!(matches!(
            &c.events()[..],
            [EnosEvent::Download { url, .. }] if url == "/pk1/ota/fw-2.10.0"
        ));

        // Nothing newer: no offer.
        let mut c = Cloud::new(AcceptPolicy::Auto);
        c.connect();
        c.f.check_for_update(c.now).unwrap();
        c.sent();
        c.publish(
            &format!("{GETVERSION}_reply"),
            &get_version_reply(Some(&MessageId("2".into())), ReplyCode::OK, &list[3..]),
        );
        assert!(matches!(&c.events()[..], [EnosEvent::NoUpdate]));
        assert!(!c.f.is_busy());
    }

    #[test]
    fn getversion_lets_the_application_choose() {
        let mut options = EnosOptions::new(FlowKind::Gadget);
        options.pick = PickPolicy::Ask;
        let mut c = Cloud::new(AcceptPolicy::Auto);
        c.f = EnosFlow::new(device(), &credentials(), "1.0.0", options).unwrap();
        c.connect();
        c.f.check_for_update(c.now).unwrap();
        c.sent();
        let list = [firmware("1.5.0", &file()), firmware("2.0", &file())];
        c.publish(
            &format!("{GETVERSION}_reply"),
            &get_version_reply(None, ReplyCode::OK, &list),
        );
        assert!(
            matches!(&c.events()[..], [EnosEvent::VersionsOffered { firmwares }] if firmwares.len() == 2)
        );
        assert!(c.f.choose(c.now, 2).is_err());
        c.f.choose(c.now, 0).unwrap();
        assert!(
            matches!(&c.events()[..], [EnosEvent::Download { version, .. }] if version == "1.5.0")
        );
    }

    #[test]
    fn a_declined_push_is_reported_as_minus_5() {
        let mut c = Cloud::new(AcceptPolicy::Ask);
        c.connect();
        assert!(c.push(&firmware("2.0.0", &file())).is_empty());
        assert!(
            matches!(&c.events()[..], [EnosEvent::UpgradeOffered { firmware }] if firmware.version == "2.0.0")
        );
        assert!(c.f.install_done(c.now, "2.0.0").is_err());
        c.f.decline(c.now).unwrap();
        assert_eq!(
            c.sent(),
            [progress_json(2, -5, "the device declined the upgrade")]
        );
        assert!(!c.f.is_busy());
        assert!(c.f.accept(c.now).is_err());
    }

    #[test]
    fn a_second_push_during_a_task_is_ignored() {
        let mut c = downloading();
        // The same push again (a QoS 1 repeat): answered, nothing else.
        assert!(c.push(&firmware("2.0.0", &file())).is_empty());
        assert!(c.events().is_empty());
        c.push(&firmware("3.0.0", &file()));
        assert!(
            matches!(&c.events()[..], [EnosEvent::PushIgnored { firmware }] if firmware.version == "3.0.0")
        );
    }

    #[test]
    fn another_devices_push_and_a_replayed_reply_change_nothing() {
        let mut c = Cloud::new(AcceptPolicy::Auto);
        c.connect();
        // A push on another device's topic (a broker ACL that lets it through): not ours,
        // so not answered, not offered, nothing downloaded.
        let other = "/sys/pk1/other/ota/device/upgrade";
        c.publish(
            other,
            &upgrade_command(&MessageId("9".into()), &firmware("2.0.0", &file())),
        );
        assert!(c.sent().is_empty());
        assert!(c.events().is_empty());
        assert!(!c.f.is_busy());
        assert_eq!(c.f.state(), "idle");
        // The inform's reply again (a replay): it matches no request and is dropped.
        c.answer(INFORM, "1", 200);
        assert!(c.sent().is_empty());
        assert!(c.events().is_empty());
        // A reply naming a request never sent, on our topic: dropped too.
        c.answer(PROGRESS, "77", 200);
        assert!(c.events().is_empty());
        assert_eq!(c.f.current_version(), "1.0.0");
    }

    #[test]
    fn install_progress_made_while_the_broker_is_away_reaches_it_after_reconnecting() {
        let mut c = downloading();
        c.at(1_000);
        c.f.downloaded(c.now, &file()).unwrap();
        c.events();
        c.sent();
        c.f.handle_disconnected(c.now);
        c.events();
        c.at(4_000);
        c.f.install_progress(c.now, 500, 1000).unwrap();
        c.at(7_000);
        c.f.handle_connected(c.now);
        c.recv(&[0x20, 0x02, 0x00, 0x00]);
        let steps: Vec<i32> = c
            .sent()
            .into_iter()
            .filter(|(t, _)| t == PROGRESS)
            .map(|(_, json)| step_in(&json))
            .collect();
        assert!(steps.contains(&54), "{steps:?}");
    }

    #[test]
    fn reconnecting_informs_again() {
        let mut c = downloading();
        c.sent();
        c.f.handle_disconnected(c.now);
        c.events();
        c.f.handle_connected(c.now);
        c.recv(&[0x20, 0x02, 0x00, 0x00]);
        let informs: Vec<_> = c.sent().into_iter().filter(|(t, _)| t == INFORM).collect();
        assert_eq!(informs.len(), 1);
        assert!(informs[0].1.contains(r#""id":"3""#), "{}", informs[0].1);
        assert!(c.f.is_busy(), "the download goes on");
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = Rng(0x5EED_E105);
        let topics = [
            UPGRADE,
            "/sys/pk1/dk1/ota/device/inform_reply",
            "/sys/pk1/dk1/ota/device/progress_reply",
            "/sys/pk1/dk1/ota/device/getversion_reply",
            "/sys/pk1/other/ota/device/upgrade",
            "elsewhere",
        ];
        let payloads: [&[u8]; 8] = [
            b"",
            b"null",
            b"[]",
            b"{}",
            br#"{"method":"ota.device.upgrade","params":{"version":"2","sign":"zz","signMethod":"md5","fileUrl":"/x","fileSize":-1}}"#,
            br#"{"method":"ota.device.upgrade","params":{"version":"2","sign":"00","signMethod":"crc","fileUrl":"/x","fileSize":1}}"#,
            br#"{"id":"2","code":"200","data":7}"#,
            br#"{"id":2,"code":200,"data":[{"version":1}]}"#,
        ];
        for round in 0..200 {
            let mut c = Cloud::new(if round % 2 == 0 {
                AcceptPolicy::Auto
            } else {
                AcceptPolicy::Ask
            });
            c.connect();
            for _ in 0..20 {
                let topic = topics[rng.below(topics.len())];
                if rng.below(2) == 0 {
                    let payload = payloads[rng.below(payloads.len())];
                    c.publish(topic, payload);
                } else {
                    let len = rng.below(64);
                    c.publish(topic, &rng.bytes(len));
                }
                c.sent();
                c.events();
            }
            // Raw garbage on the stream: the session drops the link, the flow survives it.
            let len = rng.below(32);
            c.recv(&rng.bytes(len));
            c.sent();
            c.events();
        }
        // A malformed message on our topics is reported.
        let mut c = Cloud::new(AcceptPolicy::Auto);
        c.connect();
        c.publish(UPGRADE, b"not json");
        assert!(
            matches!(&c.events()[..], [EnosEvent::Malformed { topic, error: Error::PeerMalformed(_) }] if topic == UPGRADE)
        );
        // An unreadable sign fails the task with -3.
        c.publish(UPGRADE, payloads[5]);
        let sent = c.sent();
        assert_eq!(step_in(&sent.last().unwrap().1), -3);
        assert!(matches!(
            &c.events()[..],
            [EnosEvent::Failed(Error::PeerMalformed(_))]
        ));
    }

    #[test]
    fn construction_refuses_bad_options() {
        let options = EnosOptions::new(FlowKind::Enos);
        assert!(EnosFlow::new(device(), &credentials(), "1.0", options).is_err());
        let options = EnosOptions::new(FlowKind::Dfu);
        assert!(EnosFlow::new(device(), &credentials(), "", options.clone()).is_err());
        let other = DeviceId::new("pk1", "dk2").unwrap();
        assert!(EnosFlow::new(other, &credentials(), "1.0", options).is_err());
    }

    #[test]
    fn file_downloads_need_tls_except_to_this_computer() {
        for ok in [
            "https://files.example.com/app.bin",
            "http://127.0.0.1:8081/files/app-v2.bin",
            "http://localhost/f",
        ] {
            assert_eq!(check_file_url(ok), Ok(()), "{ok}");
            assert_eq!(check_file_service(ok), Ok(()), "{ok}");
        }
        let refused = check_file_url("http://files.example.com/app.bin").unwrap_err();
        assert!(refused.to_string().contains("https:// only"), "{refused}");
        let refused = check_file_service("http://iot-http.example.com").unwrap_err();
        assert!(refused.to_string().contains("fileService"), "{refused}");
        assert!(check_file_service("/relative").is_err());
        assert!(check_file_url("ftp://127.0.0.1/f").is_err());
    }

    #[test]
    fn http_statuses_name_what_went_wrong_and_whether_to_retry() {
        let r = http_refusal(404);
        assert_eq!(
            (r.vendor, r.code, r.name, r.retryable),
            (Vendor::Http, 404, "HTTP_NOT_FOUND", false)
        );
        assert!(http_refusal(503).retryable);
        assert_eq!(http_refusal(403).name, "HTTP_UNAUTHORIZED");
        assert_eq!(http_refusal(416).name, "HTTP_RANGE_NOT_SATISFIABLE");
        assert_eq!(http_refusal(302).name, "HTTP_UNEXPECTED_STATUS");
        let text = Error::PeerRefused(http_refusal(404)).to_string();
        assert!(
            text.starts_with("the file server refused (HTTP_NOT_FOUND 404)"),
            "{text}"
        );
    }

    #[test]
    fn scale_matches_the_128_bit_formula() {
        let wide = |part: u64, total: u64, from: u8, to: u8| {
            let span = u128::from(to.saturating_sub(from));
            let scaled = u128::from(part) * span / u128::from(total);
            from.saturating_add(u8::try_from(scaled).unwrap())
        };
        let mut rng = Rng(0x5CA1_E000);
        let edges = [
            1,
            2,
            3,
            99,
            100,
            101,
            u64::MAX / 255,
            u64::MAX / 2,
            u64::MAX - 1,
            u64::MAX,
        ];
        for _ in 0..20_000 {
            let total = match rng.below(3) {
                0 => edges[rng.below(edges.len())],
                1 => rng.next() >> rng.below(64),
                _ => rng.next(),
            }
            .max(1);
            let part = match rng.below(4) {
                0 => total,
                1 => total - 1,
                2 => 0,
                _ => rng.next() % (total.saturating_add(1)).max(1),
            };
            let (from, to) = (rng.next() as u8, rng.next() as u8);
            assert_eq!(
                scale(part, total, from, to).ok(),
                Some(wide(part, total, from, to)),
                "{part}/{total} onto {from}..={to}"
            );
        }
        assert!(scale(1, 0, 0, 100).is_err());
        assert!(scale(2, 1, 0, 100).is_err());
    }
}
