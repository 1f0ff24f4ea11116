//! enos-sim against a real Debian mosquitto, with the device side played by a second
//! `MqttSession` over TCP speaking through `otaweb::wire::enos`'s device-side builders.
//!
//! Each test starts its own broker on a free port (killed by PID in a guard's `Drop`, also
//! when the test fails) and its own sim in-process. Without `/usr/sbin/mosquitto` the tests
//! say so and pass.

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use enos_sim::client;
use enos_sim::config::Config;
use enos_sim::edge::MqttEdge;
use enos_sim::Sim;
use otaweb::flow::mqtt::{ConnectOptions, MqttEvent, MqttSession, SessionConfig};
use otaweb::wire::enos::{
    get_version_request, inform_request, progress_request, reply, DeviceId, MessageId, OtaTopic,
    Progress, Reply, ReplyCode, SecretCredentials, Step, UpgradeCommand, VersionsReply,
};
use otaweb::wire::mqtt::QoS;
use serde_json::{json, Value};

use common::{firmware_bytes, free_port, TempDir};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";
const PK: &str = "pkSim";
const WAIT: Duration = Duration::from_secs(5);

/// A mosquitto process, killed on drop.
struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    /// Starts mosquitto with a TCP listener on a free 127.0.0.1 port; `None` if it is not
    /// installed.
    fn start(dir: &TempDir) -> Option<Broker> {
        Broker::start_on(dir, free_port())
    }

    /// The same on a given port.
    fn start_on(dir: &TempDir, port: u16) -> Option<Broker> {
        if !std::path::Path::new(MOSQUITTO).exists() {
            eprintln!("SKIP: {MOSQUITTO} is missing (apt-get install mosquitto)");
            return None;
        }
        let conf = dir.0.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "allow_anonymous true\npersistence false\nlog_dest stderr\n\
                 listener {port} 127.0.0.1\nsocket_domain ipv4\nprotocol mqtt\n"
            ),
        )
        .unwrap();
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        let broker = Broker { child, port };
        let until = Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "mosquitto did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(broker)
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Already gone is fine; either way reap it so no zombie is left.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes the firmware and a config for devices dk1, dk2 and loads it.
fn config(dir: &TempDir, style: &str, sign_method: &str) -> Config {
    std::fs::write(dir.0.join("app-v2.bin"), firmware_bytes()).unwrap();
    let config = json!({
        "http": 0,
        "fileUrlStyle": style,
        "products": [{
            "productKey": PK, "productSecret": "psSim",
            "devices": [
                { "deviceKey": "dk1", "deviceSecret": "secret1" },
                { "deviceKey": "dk2", "deviceSecret": "secret2" }
            ],
            "firmwares": [{ "version": "2.0.0", "path": "app-v2.bin", "signMethod": sign_method }]
        }]
    });
    let path = dir.0.join("sim.json");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    Config::load(&path).unwrap()
}

/// The device side: an EnOS device's MQTT session over TCP.
struct Device {
    id: DeviceId,
    edge: MqttEdge,
    next_id: u64,
    backlog: Vec<MqttEvent>,
}

impl Device {
    /// Connects with the EnOS sign and subscribes to the upgrade and reply topics (the
    /// broker is plain mosquitto, which delivers nothing unsubscribed).
    fn connect(broker: &Broker, dk: &str, secret: &str) -> Device {
        let id = DeviceId::new(PK, dk).unwrap();
        let creds = SecretCredentials::new(id.clone(), secret).sign(1_700_000_000_000);
        let options =
            ConnectOptions::new(creds.client_id).with_login(creds.username, creds.password);
        let session = MqttSession::new(options, SessionConfig::default()).unwrap();
        let mut edge = MqttEdge::new(broker.addr(), session);
        let mut filters = vec![id.topic(OtaTopic::Upgrade)];
        for t in [OtaTopic::Inform, OtaTopic::Progress, OtaTopic::GetVersion] {
            filters.push(id.reply_topic(t));
        }
        for f in &filters {
            let now = edge.now();
            edge.session_mut()
                .subscribe(now, f, QoS::AtLeastOnce)
                .unwrap();
        }
        let mut device = Device {
            id,
            edge,
            next_id: 1,
            backlog: Vec::new(),
        };
        let mut granted = 0;
        device.pump_until(|e| {
            granted += usize::from(matches!(e, MqttEvent::Subscribed { .. }));
            granted == filters.len()
        });
        device
    }

    /// Pumps until an event satisfies `done`. Events that do not, seen earlier or after it
    /// in the same round, stay in the backlog for a later wait: a reply and a push may
    /// arrive together.
    fn pump_until(&mut self, mut done: impl FnMut(&MqttEvent) -> bool) -> MqttEvent {
        let until = Instant::now() + WAIT;
        loop {
            if let Some(i) = self.backlog.iter().position(&mut done) {
                return self.backlog.remove(i);
            }
            if Instant::now() >= until {
                break;
            }
            let events = self.edge.pump(Duration::from_millis(20));
            self.backlog.extend(events);
        }
        panic!("device {}: timed out", self.id.device_key());
    }

    fn publish(&mut self, topic: OtaTopic, payload: &[u8], qos: QoS) {
        let (now, topic) = (self.edge.now(), self.id.topic(topic));
        self.edge
            .session_mut()
            .publish(now, &topic, payload, qos, false)
            .unwrap();
    }

    /// Waits for a message on `topic` and returns its payload.
    fn receive(&mut self, topic: &str) -> Vec<u8> {
        match self.pump_until(|e| matches!(e, MqttEvent::Message { topic: t, .. } if t == topic)) {
            MqttEvent::Message { payload, .. } => payload,
            _ => unreachable!(),
        }
    }

    fn id(&mut self) -> MessageId {
        self.next_id += 1;
        MessageId::from(self.next_id)
    }

    /// Publishes a request and returns the reply's payload.
    fn request(&mut self, topic: OtaTopic, payload: &[u8]) -> Vec<u8> {
        self.publish(topic, payload, QoS::AtLeastOnce);
        let reply_topic = self.id.reply_topic(topic);
        self.receive(&reply_topic)
    }

    fn inform(&mut self, version: &str) -> Reply {
        let id = self.id();
        Reply::parse(&self.request(OtaTopic::Inform, &inform_request(&id, version))).unwrap()
    }

    fn progress(&mut self, step: i32, desc: &str) -> Reply {
        let id = self.id();
        let p = Progress::with_desc(Step::new(step).unwrap(), desc);
        let reply =
            Reply::parse(&self.request(OtaTopic::Progress, &progress_request(&id, &p))).unwrap();
        assert_eq!(reply.id, Some(id), "the reply answers the request");
        reply
    }
}

fn start_sim(broker: &Broker, config: &Config) -> Sim {
    let sim = Sim::start(config, Some(&broker.addr()), None).unwrap();
    assert!(sim.wait_ready(WAIT), "the sim did not subscribe");
    sim
}

fn get(sim: &Sim, path: &str, headers: &[(&str, &str)]) -> client::Response {
    client::request(&sim.http_addr().to_string(), "GET", path, headers, &[]).unwrap()
}

fn post(sim: &Sim, path: &str, body: &Value) -> client::Response {
    let body = serde_json::to_vec(body).unwrap();
    client::request(
        &sim.http_addr().to_string(),
        "POST",
        path,
        &[("Content-Type", "application/json")],
        &body,
    )
    .unwrap()
}

#[test]
fn push_task_download_and_progress() {
    let started = Instant::now();
    let dir = TempDir::new("push");
    let Some(broker) = Broker::start(&dir) else {
        return;
    };
    let sim = start_sim(&broker, &config(&dir, "http", "md5"));
    let mut dev = Device::connect(&broker, "dk1", "secret1");

    // Progress before any task: 764.
    let r = dev.progress(10, "early");
    assert_eq!(r.code, ReplyCode::TASK_NOT_FOUND);
    assert_eq!(
        r.message.as_deref(),
        Some(ReplyCode::TASK_NOT_FOUND.meaning())
    );

    // inform v1 is recorded.
    assert_eq!(dev.inform("1.0.0").code, ReplyCode::OK);
    let devices = get(&sim, "/admin/devices", &[]).json().unwrap();
    let d1 = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["deviceKey"] == "dk1")
        .unwrap()
        .clone();
    assert_eq!(d1["version"], "1.0.0");

    // A push task for the online device: the upgrade comes at once.
    let created = post(
        &sim,
        "/admin/tasks",
        &json!({ "productKey": PK, "deviceKey": "dk1", "version": "2.0.0", "policy": "push" }),
    );
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let task_id = created.json().unwrap()["id"].as_u64().unwrap();
    let upgrade_topic = dev.id.topic(OtaTopic::Upgrade);
    let command = UpgradeCommand::parse(&dev.receive(&upgrade_topic)).unwrap();
    let fw = &command.firmware;
    assert_eq!(fw.version, "2.0.0");
    assert_eq!(fw.sign_method, "md5");
    assert_eq!(fw.file_size, 40 * 1024);
    assert!(fw.file_url.starts_with(&sim.http_url()), "{}", fw.file_url);
    let now = dev.edge.now();
    let reply_topic = dev.id.reply_topic(OtaTopic::Upgrade);
    let ack = reply(command.id.as_ref(), ReplyCode::OK, None);
    dev.edge
        .session_mut()
        .publish(now, &reply_topic, &ack, QoS::AtMostOnce, false)
        .unwrap();

    // Download it whole, then its second half by range, and check size and sign.
    let (addr, path) = client::split_url(&fw.file_url).unwrap();
    let whole = client::request(&addr, "GET", &path, &[], &[]).unwrap();
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("content-length"), Some("40960"));
    assert_eq!(whole.header("access-control-allow-origin"), Some("*"));
    assert_eq!(whole.body.len() as u64, fw.file_size);
    fw.expected_digest()
        .unwrap()
        .check_bytes(&whole.body)
        .unwrap();
    let half = client::request(&addr, "GET", &path, &[("Range", "bytes=20480-")], &[]).unwrap();
    assert_eq!(half.status, 206);
    assert_eq!(
        half.header("content-range"),
        Some("bytes 20480-40959/40960")
    );
    assert_eq!(half.body, whole.body[20480..]);
    let bad = client::request(&addr, "GET", &path, &[("Range", "bytes=50000-")], &[]).unwrap();
    assert_eq!(bad.status, 416);

    // Progress steps are recorded; the new version completes the task.
    for (step, desc) in [(20, "downloading"), (80, "verified"), (100, "installed")] {
        assert_eq!(dev.progress(step, desc).code, ReplyCode::OK);
    }
    assert_eq!(dev.inform("2.0.0").code, ReplyCode::OK);
    let task = get(&sim, &format!("/admin/tasks/{task_id}"), &[])
        .json()
        .unwrap();
    assert_eq!(task["status"], "succeeded");
    assert_eq!(task["pushes"], 1);
    assert_eq!(task["upgradeReply"], 200);
    let steps: Vec<i64> = task["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [20, 80, 100]);
    assert_eq!(task["steps"][1]["desc"], "verified");

    // With the task done, progress has no task again.
    assert_eq!(dev.progress(5, "late").code, ReplyCode::TASK_NOT_FOUND);
    sim.stop();
    eprintln!("push test took {:?}", started.elapsed());
}

#[test]
fn offline_push_request_policy_and_enos_file_service() {
    let started = Instant::now();
    let dir = TempDir::new("request");
    let Some(broker) = Broker::start(&dir) else {
        return;
    };
    let sim = start_sim(&broker, &config(&dir, "enos", "sha256"));

    // dk2 has never been heard of: its push task waits, and progress meanwhile gets 765.
    let created = post(
        &sim,
        "/admin/tasks",
        &json!({ "productKey": PK, "deviceKey": "dk2", "version": "2.0.0" }),
    );
    assert_eq!(created.status, 201);
    assert_eq!(created.json().unwrap()["status"], "toBeUpgraded");
    let mut dev2 = Device::connect(&broker, "dk2", "secret2");
    assert_eq!(
        dev2.progress(1, "too soon").code,
        ReplyCode::TASK_NOT_STARTED
    );
    // When it next reports its version, the upgrade follows.
    assert_eq!(dev2.inform("1.0.0").code, ReplyCode::OK);
    let topic = dev2.id.topic(OtaTopic::Upgrade);
    let pushed = UpgradeCommand::parse(&dev2.receive(&topic)).unwrap();
    assert!(pushed.firmware.file_url.starts_with("enos-connect://"));
    assert_eq!(dev2.progress(10, "started").code, ReplyCode::OK);

    // dk1: a task upon device request is offered by getversion, not pushed.
    let mut dev1 = Device::connect(&broker, "dk1", "secret1");
    assert_eq!(dev1.inform("1.0.0").code, ReplyCode::OK);
    let created = post(
        &sim,
        "/admin/tasks",
        &json!({ "productKey": PK, "deviceKey": "dk1", "version": "2.0.0", "policy": "request" }),
    );
    assert_eq!(created.status, 201);
    let again = post(
        &sim,
        "/admin/tasks",
        &json!({ "productKey": PK, "deviceKey": "dk1", "version": "2.0.0" }),
    );
    assert_eq!(again.status, 409, "one open task per device");
    let unknown = post(
        &sim,
        "/admin/tasks",
        &json!({ "productKey": PK, "deviceKey": "nobody", "version": "2.0.0" }),
    );
    assert_eq!(unknown.status, 404);
    let id = dev1.id();
    let versions =
        VersionsReply::parse(&dev1.request(OtaTopic::GetVersion, &get_version_request(&id)))
            .unwrap();
    assert_eq!(versions.reply.code, ReplyCode::OK);
    assert_eq!(versions.firmwares.len(), 1);
    let fw = versions.firmwares[0].clone();
    assert_eq!(fw.sign_method, "sha256");

    // The EnOS file service: a wrong sign is refused, the right one gives a session.
    let wrong = post(
        &sim,
        "/auth/pkSim/dk1",
        &json!({ "signMethod": "sha256", "lifetime": 300000, "sign": "00" }),
    );
    assert_eq!(wrong.status, 401);
    let sign = SecretCredentials::new(dev1.id.clone(), "secret1").http_auth_sign(300_000);
    let login = post(
        &sim,
        "/auth/pkSim/dk1",
        &json!({ "signMethod": "sha256", "lifetime": 300000, "sign": sign }),
    );
    assert_eq!(login.status, 200);
    let login = login.json().unwrap();
    assert_eq!(login["code"], 200);
    let session = login["data"]["sessionId"].as_str().unwrap().to_string();
    let uri = otaweb::wire::enos::percent_encode(&fw.file_url);
    let download = format!(
        "/multipart/sys/pkSim/dk1/file/download?sessionId={session}&fileUri={uri}&category=ota"
    );
    let whole = get(&sim, &download, &[]);
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body.len() as u64, fw.file_size);
    fw.expected_digest()
        .unwrap()
        .check_bytes(&whole.body)
        .unwrap();
    let part = get(&sim, &download, &[("Range", "bytes=0-99")]);
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range"), Some("bytes 0-99/40960"));
    assert_eq!(part.body, whole.body[..100]);
    let no_session = get(
        &sim,
        "/multipart/sys/pkSim/dk1/file/download?sessionId=x&fileUri=y",
        &[],
    );
    assert_eq!(no_session.status, 401);
    let url = get(&sim, &download.replace("/download?", "/download/url?"), &[])
        .json()
        .unwrap();
    assert!(url["data"].as_str().unwrap().starts_with(&sim.http_url()));

    // A browser preflight from another port is allowed.
    let preflight = client::request(
        &sim.http_addr().to_string(),
        "OPTIONS",
        "/files/pkSim/2.0.0",
        &[
            ("Origin", "http://127.0.0.1:1"),
            ("Access-Control-Request-Headers", "range"),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    assert!(preflight
        .header("access-control-allow-headers")
        .unwrap()
        .contains("Range"));

    // Progress on the fetched task is recorded; a failure step fails it.
    assert_eq!(dev1.progress(-2, "download failed").code, ReplyCode::OK);
    let tasks = get(&sim, "/admin/tasks", &[]).json().unwrap();
    let t1 = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["deviceKey"] == "dk1")
        .unwrap()
        .clone();
    assert_eq!(t1["status"], "failed");
    assert_eq!(t1["policy"], "request");
    assert_eq!(t1["steps"][0]["step"], -2);
    sim.stop();
    eprintln!("request test took {:?}", started.elapsed());
}

#[test]
fn sim_reconnects_after_the_broker_restarts() {
    let started = Instant::now();
    let dir = TempDir::new("restart");
    let Some(broker) = Broker::start(&dir) else {
        return;
    };
    let port = broker.port;
    let sim = start_sim(&broker, &config(&dir, "http", "md5"));
    drop(broker);
    let until = Instant::now() + WAIT;
    while sim.is_ready() {
        assert!(
            Instant::now() < until,
            "the sim did not notice the broker left"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let broker = Broker::start_on(&dir, port).unwrap();
    // The session's backoff starts at 1 s and doubles: well within the wait.
    assert!(sim.wait_ready(WAIT), "the sim did not reconnect");
    // Subscriptions were renewed: a device is answered again.
    let mut dev = Device::connect(&broker, "dk1", "secret1");
    assert_eq!(dev.inform("1.0.0").code, ReplyCode::OK);
    sim.stop();
    eprintln!("restart test took {:?}", started.elapsed());
}
