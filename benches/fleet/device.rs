//! The simulated devices: each one the real [`EnosFlow`] (with its
//! [`otaweb::flow::mqtt::MqttSession`]) on a
//! nonblocking TCP socket to mosquitto, an HTTP client for the EnOS file service, and a
//! minimal in-memory device that installs the verified image.
//!
//! Contract. [`spawn`] starts one worker thread (named `fleet-N`) that owns a range of
//! devices and drives them all from one [`mio::Poll`]: each pass handles the sockets that
//! are ready, then the deadlines that passed (a heap of each device's next
//! [`Flow::poll_timeout`] or reconnect time), then pumps every device it touched in the
//! order `src/flow/mod.rs` asks (transmits, then events, until both are empty). A worker
//! opens at most [`Plan::connect_window`] broker connections at a time, the next one when
//! a device's `inform` was answered, so a thousand SYNs do not overflow the listen backlog.
//!
//! A device with a task: the flow's [`EnosEvent::Download`] names an `enos-connect://`
//! file; the device logs in to the file service (`POST /auth/{pk}/{dk}` signed with its
//! secret, A8) and GETs the file with the session id on the same connection (HTTP/1.1
//! keep-alive, then `Connection: close`), reporting [`EnosFlow::download_progress`] as the body arrives
//! and handing the body to [`EnosFlow::downloaded`], which checks its size and MD5 or
//! SHA-256. On [`EnosEvent::Install`] the device copies the image into its flash in 100
//! pieces ([`EnosFlow::install_progress`] after each, so the flow's throttle sends the
//! same progress reports a real install would), checks the flash's SHA-256 against the
//! verified image, and reports the image's version ([`EnosFlow::install_done`]). The flow
//! then sends step 100 and `inform`, and [`EnosEvent::Done`] ends the device's run.
//!
//! A progress report whose reply came after the flow's reply timeout is counted
//! ([`DeviceReport::late_replies`]): the flow goes on, as documented. Anything else the flow
//! reports (a failure, a refused step, a malformed message, a lost link) is recorded as a
//! problem of that device; lost links are mended with the session's reconnect delay, as an
//! edge must. On [`Shared::stop`] every device sends DISCONNECT and the worker returns its
//! [`WorkerReport`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};
use otaweb::error::{Error, LinkLost};
use otaweb::flow::enos::{http_refusal, AcceptPolicy, EnosEvent, EnosFlow, EnosOptions};
use otaweb::flow::mqtt::{MqttEvent, SessionState};
use otaweb::flow::Flow;
use otaweb::image::digest::sha256;
use otaweb::image::manifest::FlowKind;
use otaweb::image::verify::{Image, Verified};
use otaweb::time::{Millis, Span};
use otaweb::wire::enos::{file_session_id, DeviceId, SecretCredentials, DEFAULT_HTTP_LIFETIME_MS};

/// The longest a worker sleeps in [`Poll::poll`], so it sees [`Shared::stop`] soon.
const MAX_SLEEP: Duration = Duration::from_millis(50);
/// Pieces an install is copied in.
const INSTALL_PIECES: u64 = 100;
/// The largest HTTP response head read.
const MAX_HEAD: usize = 16 * 1024;

/// The device key of device `index`.
#[must_use]
pub fn device_key(index: usize) -> String {
    format!("dev{index:05}")
}

/// The device secret of device `index`.
#[must_use]
pub fn device_secret(index: usize) -> String {
    format!("secret-{index}")
}

/// What a worker runs.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The broker.
    pub broker: SocketAddr,
    /// The EnOS file service (enos-sim's HTTP port).
    pub file_service: SocketAddr,
    /// The devices' product key.
    pub product_key: String,
    /// The worker's devices, by index.
    pub devices: Range<usize>,
    /// The version every device runs at start.
    pub old_version: String,
    /// Broker connections opened at a time.
    pub connect_window: usize,
    /// The fleet's clock: [`Millis`] count from here.
    pub epoch: Instant,
}

/// What the workers and the main thread share.
#[derive(Debug, Default)]
pub struct Shared {
    /// Devices whose first `inform` was answered.
    pub connected: AtomicUsize,
    /// Tasks devices finished: the new version reported and the cloud's answer heard.
    pub done: AtomicUsize,
    /// PUBLISH packets the devices wrote to the broker.
    pub published: AtomicU64,
    /// Every device sends DISCONNECT and the workers return.
    pub stop: AtomicBool,
}

/// One task of one device; times in milliseconds on the fleet's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskTimes {
    /// The flow asked for the download (the push arrived).
    pub pushed_at: u64,
    /// The download was handed to the flow.
    pub downloaded_at: Option<u64>,
    /// [`EnosEvent::Done`].
    pub done_at: Option<u64>,
}

/// How one device's run went.
#[derive(Clone, Debug, Default)]
pub struct DeviceReport {
    /// The device key.
    pub key: String,
    /// The version the device runs at the end.
    pub version: String,
    /// Its first `inform` was answered (fleet milliseconds).
    pub connected_at: Option<u64>,
    /// Its tasks, in order.
    pub tasks: Vec<TaskTimes>,
    /// Progress reports the cloud answered only after the flow's reply timeout (the flow
    /// goes on: the console is stale, not the device).
    pub late_replies: u64,
    /// What went wrong, in order.
    pub problems: Vec<String>,
}

/// What a worker returns.
#[derive(Debug, Default)]
pub struct WorkerReport {
    /// Its devices.
    pub devices: Vec<DeviceReport>,
    /// [`Poll::poll`] calls.
    pub polls: u64,
    /// Socket `recv` calls.
    pub reads: u64,
    /// Socket `send` calls.
    pub writes: u64,
}

/// Starts worker `n` on `plan`.
pub fn spawn(
    n: usize,
    plan: Plan,
    shared: Arc<Shared>,
) -> std::io::Result<JoinHandle<WorkerReport>> {
    std::thread::Builder::new()
        .name(format!("fleet-{n}"))
        .spawn(move || Worker::new(plan, shared).run())
}

/// The socket calls a worker made.
#[derive(Debug, Default)]
struct Calls {
    reads: u64,
    writes: u64,
}

/// The HTTP connection of a download: the login, then the GET, and their responses.
#[derive(Debug)]
struct Exchange {
    stream: TcpStream,
    addr: SocketAddr,
    connected: bool,
    request: Vec<u8>,
    written: usize,
    response: Vec<u8>,
    /// Status, head length and `Content-Length`, once the head is in.
    head: Option<(u16, usize, usize)>,
    login: bool,
}

/// How an exchange ended.
enum Outcome {
    Pending,
    Response { status: u16, body: Vec<u8> },
    Broken(String),
}

impl Exchange {
    /// Connects to `addr` and queues the first request.
    fn open(
        registry: &Registry,
        token: Token,
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<Exchange> {
        let mut stream = TcpStream::connect(addr)?;
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        let mut x = Exchange {
            stream,
            addr,
            connected: false,
            request: Vec::new(),
            written: 0,
            response: Vec::new(),
            head: None,
            login: false,
        };
        x.send(method, path, body);
        Ok(x)
    }

    /// Queues the next request on this connection: the login keeps it open for the
    /// download (HTTP/1.1 keep-alive), the download closes it.
    fn send(&mut self, method: &str, path: &str, body: &[u8]) {
        self.login = method == "POST";
        let close = if self.login {
            ""
        } else {
            "Connection: close\r\n"
        };
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{close}Content-Length: {}\r\n",
            self.addr,
            body.len()
        )
        .into_bytes();
        if !body.is_empty() {
            request.extend_from_slice(b"Content-Type: application/json\r\n");
        }
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(body);
        self.request = request;
        self.written = 0;
        self.response.clear();
        self.head = None;
    }

    /// The file-service login (the other exchange is the download).
    fn is_login(&self) -> bool {
        self.login
    }

    /// Goes as far as the socket lets it; `scratch` is the worker's read buffer.
    fn advance(&mut self, scratch: &mut [u8], calls: &mut Calls) -> Outcome {
        if !self.connected {
            match self.stream.peer_addr() {
                Ok(_) => self.connected = true,
                Err(e) if e.kind() == ErrorKind::NotConnected => return Outcome::Pending,
                Err(e) => return Outcome::Broken(format!("HTTP connect: {e}")),
            }
        }
        while self.written < self.request.len() {
            calls.writes += 1;
            match self.stream.write(&self.request[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Outcome::Pending,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Outcome::Broken(format!("HTTP send: {e}")),
            }
        }
        loop {
            calls.reads += 1;
            match self.stream.read(scratch) {
                Ok(0) => return self.finish(true),
                Ok(n) => {
                    self.response.extend_from_slice(&scratch[..n]);
                    if let Err(e) = self.parse_head() {
                        return Outcome::Broken(e);
                    }
                    if let Outcome::Response { status, body } = self.finish(false) {
                        return Outcome::Response { status, body };
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Outcome::Pending,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Outcome::Broken(format!("HTTP receive: {e}")),
            }
        }
    }

    /// Body bytes received so far and the body's length, once the head is in.
    fn body_progress(&self) -> Option<(u64, u64)> {
        let (_, head, len) = self.head?;
        Some(((self.response.len() - head).min(len) as u64, len as u64))
    }

    fn parse_head(&mut self) -> Result<(), String> {
        if self.head.is_some() {
            return Ok(());
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&self.response) {
            Ok(httparse::Status::Complete(head)) => {
                let length = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                    .ok_or("an HTTP response without Content-Length")?;
                self.head = Some((response.code.unwrap_or(0), head, length));
                Ok(())
            }
            Ok(httparse::Status::Partial) if self.response.len() < MAX_HEAD => Ok(()),
            Ok(httparse::Status::Partial) => Err("an HTTP response head too long".into()),
            Err(e) => Err(format!("a malformed HTTP response: {e}")),
        }
    }

    fn finish(&mut self, eof: bool) -> Outcome {
        match self.head {
            Some((status, head, len)) if self.response.len() >= head + len => {
                let body = self.response[head..head + len].to_vec();
                Outcome::Response { status, body }
            }
            _ if eof => Outcome::Broken("the HTTP connection closed early".into()),
            _ => Outcome::Pending,
        }
    }
}

/// What every device call works with: the worker's poll registry, plan, shared counters
/// and the time of the pass.
struct Ctx<'a> {
    registry: &'a Registry,
    plan: &'a Plan,
    shared: &'a Shared,
    now: Millis,
}

/// One device. See the module docs.
struct Device {
    index: usize,
    flow: EnosFlow,
    credentials: SecretCredentials,
    mqtt: Option<TcpStream>,
    mqtt_up: bool,
    out: Vec<u8>,
    reconnect_at: Option<Millis>,
    /// The deadline last put on the heap.
    armed: Option<Millis>,
    http: Option<Exchange>,
    /// The `enos-connect://` file of the task in hand.
    file_uri: Option<String>,
    report: DeviceReport,
}

impl Device {
    fn new(index: usize, plan: &Plan) -> Device {
        let device = DeviceId::new(plan.product_key.as_str(), device_key(index).as_str())
            .expect("valid keys");
        let credentials = SecretCredentials::new(device.clone(), device_secret(index));
        let mut options = EnosOptions::new(FlowKind::Gadget);
        options.accept = AcceptPolicy::Auto;
        // 10 % steps as by default, without the 2 s minimum: the reports of an install
        // that takes minutes over BLE, sent as fast as this in-memory one runs.
        options.throttle.interval = Span(0);
        let signed = credentials.sign(1_780_000_000_000);
        let flow = EnosFlow::new(device, &signed, &plan.old_version, options).expect("valid agent");
        Device {
            index,
            flow,
            credentials,
            mqtt: None,
            mqtt_up: false,
            out: Vec::new(),
            reconnect_at: None,
            armed: None,
            http: None,
            file_uri: None,
            report: DeviceReport {
                key: device_key(index),
                version: plan.old_version.clone(),
                ..DeviceReport::default()
            },
        }
    }

    fn mqtt_token(&self) -> Token {
        Token(self.index * 2)
    }

    fn http_token(&self) -> Token {
        Token(self.index * 2 + 1)
    }

    fn problem(&mut self, what: String) {
        self.report.problems.push(what);
    }

    fn open_mqtt(&mut self, cx: &Ctx<'_>) {
        self.reconnect_at = None;
        let token = self.mqtt_token();
        let opened = TcpStream::connect(cx.plan.broker).and_then(|mut s| {
            cx.registry
                .register(&mut s, token, Interest::READABLE | Interest::WRITABLE)?;
            Ok(s)
        });
        match opened {
            Ok(stream) => {
                self.mqtt = Some(stream);
                self.mqtt_up = false;
            }
            Err(e) => {
                self.problem(format!("MQTT connect: {e}"));
                self.flow.handle_disconnected(cx.now);
                self.schedule_reconnect(cx.now);
            }
        }
    }

    fn schedule_reconnect(&mut self, now: Millis) {
        let delay = self
            .flow
            .poll_reconnect_delay()
            .unwrap_or(Span::from_secs(1));
        self.reconnect_at = Some(now + delay);
    }

    fn close_mqtt(&mut self, cx: &Ctx<'_>) {
        if let Some(mut stream) = self.mqtt.take() {
            let _ = cx.registry.deregister(&mut stream);
            self.out.clear();
            self.mqtt_up = false;
            self.flow.handle_disconnected(cx.now);
            self.schedule_reconnect(cx.now);
        }
    }

    /// The MQTT socket is ready: finish connecting, then read all there is.
    fn mqtt_ready(&mut self, cx: &Ctx<'_>, scratch: &mut [u8], calls: &mut Calls) {
        let Some(stream) = self.mqtt.as_mut() else {
            return;
        };
        if !self.mqtt_up {
            match stream.peer_addr() {
                Ok(_) => {
                    // Small packets, answered one by one: latency over batching.
                    let _ = stream.set_nodelay(true);
                    self.mqtt_up = true;
                    self.flow.handle_connected(cx.now);
                }
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(_) => return self.close_mqtt(cx),
            }
        }
        while let Some(stream) = self.mqtt.as_mut() {
            calls.reads += 1;
            match stream.read(scratch) {
                Ok(0) => return self.close_mqtt(cx),
                Ok(n) => self.flow.handle_input(cx.now, (), &scratch[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.close_mqtt(cx),
            }
        }
    }

    /// Writes what the flow has to send, as far as the socket takes it (the rest goes on
    /// the next writable event).
    fn flush(&mut self, cx: &Ctx<'_>, calls: &mut Calls) {
        if self.mqtt_up {
            loop {
                let before = self.out.len();
                if self.flow.poll_transmit(&mut self.out).is_none() {
                    break;
                }
                // The first byte's high nibble is the packet type; 3 is PUBLISH.
                if self.out.get(before).is_some_and(|b| b >> 4 == 3) {
                    cx.shared.published.fetch_add(1, Ordering::Relaxed);
                }
                self.flow.handle_transmitted(cx.now);
            }
        }
        let Some(stream) = self.mqtt.as_mut() else {
            return;
        };
        let mut sent = 0;
        while sent < self.out.len() {
            calls.writes += 1;
            match stream.write(&self.out[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.close_mqtt(cx),
            }
        }
        self.out.drain(..sent);
    }

    /// Transmits, then events, until the flow is quiet; true when the device's first
    /// `inform` was answered in this pump.
    fn pump(&mut self, cx: &Ctx<'_>, calls: &mut Calls) -> bool {
        let mut connected = false;
        loop {
            self.flush(cx, calls);
            let Some(event) = self.flow.poll_event() else {
                break;
            };
            connected |= self.event(cx, event);
        }
        if self.mqtt.is_some() && self.flow.session().state() == SessionState::Dropping {
            self.close_mqtt(cx);
        }
        connected
    }

    /// Acts on one flow event; true for the first answered `inform`.
    fn event(&mut self, cx: &Ctx<'_>, event: EnosEvent) -> bool {
        match event {
            EnosEvent::Connected { .. } if self.report.connected_at.is_none() => {
                self.report.connected_at = Some(cx.now.0);
                cx.shared.connected.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            EnosEvent::Download { url, .. } => {
                self.report.tasks.push(TaskTimes {
                    pushed_at: cx.now.0,
                    ..TaskTimes::default()
                });
                self.file_uri = Some(url);
                let (path, body) = self.credentials.file_login(DEFAULT_HTTP_LIFETIME_MS);
                self.start_exchange(cx, "POST", &path, &body);
            }
            EnosEvent::Install(image) => self.install(cx, &image),
            EnosEvent::Done { version } => {
                self.report.version = version;
                if let Some(t) = self.report.tasks.last_mut() {
                    t.done_at = Some(cx.now.0);
                }
                cx.shared.done.fetch_add(1, Ordering::Relaxed);
            }
            EnosEvent::ProgressNotAcknowledged {
                error: Error::LinkLost(LinkLost::TimedOut { .. }),
                ..
            } => self.report.late_replies += 1,
            EnosEvent::Connected { .. } | EnosEvent::Reported { .. } => {}
            EnosEvent::Link(MqttEvent::LinkLost(e) | MqttEvent::Failed(e)) => {
                self.problem(format!("MQTT link: {e}"));
            }
            EnosEvent::Link(_) => {}
            other => self.problem(format!("{other:?}")),
        }
        false
    }

    /// Starts the login (`POST`) or the download (`GET`) of the task's file.
    fn start_exchange(&mut self, cx: &Ctx<'_>, method: &str, path: &str, body: &[u8]) {
        let token = self.http_token();
        let addr = cx.plan.file_service;
        match Exchange::open(cx.registry, token, addr, method, path, body) {
            Ok(x) => self.http = Some(x),
            Err(e) => self.download_failed(cx, format!("HTTP connect: {e}"), None),
        }
    }

    fn download_failed(&mut self, cx: &Ctx<'_>, what: String, status: Option<u16>) {
        self.problem(what);
        let error: Error = match status {
            Some(s) => http_refusal(s).into(),
            None => LinkLost::Disconnected.into(),
        };
        let _ = self.flow.download_failed(cx.now, error);
    }

    /// The HTTP socket is ready: go on with the exchange, and act on each response.
    fn http_ready(&mut self, cx: &Ctx<'_>, scratch: &mut [u8], calls: &mut Calls) {
        loop {
            let Some(x) = self.http.as_mut() else {
                return;
            };
            let outcome = x.advance(scratch, calls);
            let login = x.is_login();
            match outcome {
                Outcome::Pending => {
                    if let (false, Some((received, total))) = (login, x.body_progress()) {
                        if total > 0 {
                            let _ = self.flow.download_progress(cx.now, received, total);
                        }
                    }
                    return;
                }
                Outcome::Response { status: 200, body } if login => {
                    match (file_session_id(&body), self.file_uri.as_deref()) {
                        (Ok(session), Some(uri)) => {
                            let path = self.flow.device().file_download_path(&session, uri);
                            // The socket stays writable: no new event comes, so go on now.
                            x.send("GET", &path, &[]);
                        }
                        (Err(e), _) => {
                            self.end_http(cx);
                            return self.download_failed(cx, format!("login: {e}"), None);
                        }
                        (_, None) => {
                            self.end_http(cx);
                            return self.download_failed(cx, "no file in hand".into(), None);
                        }
                    }
                }
                Outcome::Broken(e) => {
                    self.end_http(cx);
                    return self.download_failed(cx, e, None);
                }
                Outcome::Response { status, body } if status != 200 => {
                    self.end_http(cx);
                    let text = String::from_utf8_lossy(&body).into_owned();
                    let what = format!("HTTP {status}: {text}");
                    return self.download_failed(cx, what, Some(status));
                }
                Outcome::Response { body, .. } => {
                    self.end_http(cx);
                    let total = body.len() as u64;
                    if total > 0 {
                        let _ = self.flow.download_progress(cx.now, total, total);
                    }
                    if let Some(t) = self.report.tasks.last_mut() {
                        t.downloaded_at = Some(cx.now.0);
                    }
                    let _ = self.flow.downloaded(cx.now, &body);
                    return;
                }
            }
        }
    }

    fn end_http(&mut self, cx: &Ctx<'_>) {
        if let Some(mut x) = self.http.take() {
            let _ = cx.registry.deregister(&mut x.stream);
        }
    }

    /// The in-memory device takes the image: see the module docs.
    fn install(&mut self, cx: &Ctx<'_>, image: &Verified<Image>) {
        let image = image.get();
        let now = cx.now;
        let _ = self.flow.install_started(now);
        let total = image.size();
        let piece = usize::try_from(total.div_ceil(INSTALL_PIECES).max(1)).unwrap_or(usize::MAX);
        let mut flash = Vec::with_capacity(image.bytes.len());
        for chunk in image.bytes.chunks(piece) {
            flash.extend_from_slice(chunk);
            let _ = self.flow.install_progress(now, flash.len() as u64, total);
        }
        // What a bootloader checks before it boots the new image.
        if sha256(&flash) == image.sha256 {
            let _ = self.flow.install_done(now, &image.version);
        } else {
            self.problem("the flash does not hold the image".into());
            let _ = self.flow.install_failed(now, LinkLost::Disconnected.into());
        }
    }

    /// The earliest moment the device needs [`Device::wake`].
    fn next_wake(&self) -> Option<Millis> {
        [self.flow.poll_timeout(), self.reconnect_at]
            .into_iter()
            .flatten()
            .min()
    }

    fn wake(&mut self, cx: &Ctx<'_>) {
        if self.reconnect_at.is_some_and(|t| cx.now >= t) {
            self.open_mqtt(cx);
        }
        if self.flow.poll_timeout().is_some_and(|t| cx.now >= t) {
            self.flow.handle_timeout(cx.now);
        }
    }
}

/// One worker thread's state.
struct Worker {
    plan: Plan,
    shared: Arc<Shared>,
    devices: Vec<Device>,
    timers: BinaryHeap<Reverse<(Millis, usize)>>,
    calls: Calls,
    /// Devices touched in this pass, to pump.
    touched: Vec<usize>,
    /// Broker connections opened and not yet answered.
    opening: usize,
}

impl Worker {
    fn new(plan: Plan, shared: Arc<Shared>) -> Worker {
        let devices = plan
            .devices
            .clone()
            .map(|i| Device::new(i, &plan))
            .collect();
        Worker {
            plan,
            shared,
            devices,
            timers: BinaryHeap::new(),
            calls: Calls::default(),
            touched: Vec::new(),
            opening: 0,
        }
    }

    fn now(&self) -> Millis {
        Millis(u64::try_from(self.plan.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn run(mut self) -> WorkerReport {
        let mut poll = Poll::new().expect("an epoll instance");
        let mut events = Events::with_capacity(1024);
        let mut scratch = vec![0u8; 64 * 1024];
        let first = self.plan.devices.start;
        let mut next_open = 0;
        let mut polls = 0;
        while !self.shared.stop.load(Ordering::Relaxed) {
            let now = self.now();
            while self.opening < self.plan.connect_window && next_open < self.devices.len() {
                let cx = Ctx {
                    registry: poll.registry(),
                    plan: &self.plan,
                    shared: &self.shared,
                    now,
                };
                self.devices[next_open].open_mqtt(&cx);
                self.touched.push(next_open);
                next_open += 1;
                self.opening += 1;
            }
            self.pump_touched(poll.registry());
            let sleep = self.timers.peek().map_or(MAX_SLEEP, |Reverse((at, _))| {
                Duration::from_millis(at.0.saturating_sub(self.now().0)).min(MAX_SLEEP)
            });
            polls += 1;
            if let Err(e) = poll.poll(&mut events, Some(sleep)) {
                assert!(e.kind() == ErrorKind::Interrupted, "epoll: {e}");
            }
            let cx = Ctx {
                registry: poll.registry(),
                plan: &self.plan,
                shared: &self.shared,
                now: self.now(),
            };
            for event in &events {
                let token = event.token().0;
                let i = token / 2 - first;
                let d = &mut self.devices[i];
                if token % 2 == 0 {
                    d.mqtt_ready(&cx, &mut scratch, &mut self.calls);
                } else {
                    d.http_ready(&cx, &mut scratch, &mut self.calls);
                }
                self.touched.push(i);
            }
            while let Some(&Reverse((at, i))) = self.timers.peek() {
                if at > cx.now {
                    break;
                }
                self.timers.pop();
                let d = &mut self.devices[i];
                // A deadline the device has moved since is stale.
                if d.armed == Some(at) {
                    d.armed = None;
                    d.wake(&cx);
                    self.touched.push(i);
                }
            }
            self.pump_touched(poll.registry());
        }
        let cx = Ctx {
            registry: poll.registry(),
            plan: &self.plan,
            shared: &self.shared,
            now: self.now(),
        };
        for d in &mut self.devices {
            d.flow.disconnect(cx.now);
            d.flush(&cx, &mut self.calls);
        }
        WorkerReport {
            devices: self.devices.into_iter().map(|d| d.report).collect(),
            polls,
            reads: self.calls.reads,
            writes: self.calls.writes,
        }
    }

    /// Pumps every device touched in this pass once and re-arms its deadline.
    fn pump_touched(&mut self, registry: &Registry) {
        self.touched.sort_unstable();
        self.touched.dedup();
        let cx = Ctx {
            registry,
            plan: &self.plan,
            shared: &self.shared,
            now: Millis(u64::try_from(self.plan.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)),
        };
        for &i in &self.touched {
            let d = &mut self.devices[i];
            if d.pump(&cx, &mut self.calls) {
                self.opening = self.opening.saturating_sub(1);
            }
            let next = d.next_wake();
            if next != d.armed {
                d.armed = next;
                if let Some(at) = next {
                    self.timers.push(Reverse((at, i)));
                }
            }
        }
        self.touched.clear();
    }
}
