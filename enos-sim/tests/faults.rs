//! The config's faults for failure-path tests: a wrong announced sign or size, and
//! downloads cut off mid-body with the connection really closed.
//!
//! The cut tests are raw TCP clients of a sim started in-process: they read exactly what
//! went over the wire, so "fewer body bytes than the Content-Length, then end of stream"
//! is seen as a browser sees it. They need no broker (the sim's MQTT side keeps retrying a
//! port nothing listens on; HTTP does not depend on it). The announce test drives the
//! registry directly with the device's MQTT requests.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use enos_sim::client;
use enos_sim::config::{Config, Policy, TaskRequest};
use enos_sim::registry::Registry;
use enos_sim::Sim;
use otaweb::wire::enos::percent_encode;
use otaweb::wire::enos::{
    get_version_request, inform_request, DeviceId, MessageId, OtaTopic, SecretCredentials,
    UpgradeCommand, VersionsReply,
};
use serde_json::{json, Value};

use common::{firmware_bytes, free_port, TempDir};

const PK: &str = "pkSim";
const LEN: usize = 40 * 1024;

/// Writes the firmware and a config whose one firmware, version 2.0.0, has `faults`.
fn config(dir: &TempDir, faults: &Value) -> Result<Config, String> {
    std::fs::write(dir.0.join("app-v2.bin"), firmware_bytes()).unwrap();
    let mut fw = json!({ "version": "2.0.0", "path": "app-v2.bin", "signMethod": "md5" });
    for (k, v) in faults.as_object().unwrap() {
        fw[k] = v.clone();
    }
    let config = json!({
        "products": [{
            "productKey": PK,
            "devices": [{ "deviceKey": "dk1", "deviceSecret": "secret1" }],
            "firmwares": [fw]
        }]
    });
    let path = dir.0.join("sim.json");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    Config::load(&path)
}

/// A sim whose broker is a port nothing listens on, with a push task for dk1 (waiting,
/// as dk1 was never heard of) to record downloads on.
fn start(config: &Config) -> (Sim, u64) {
    let sim = Sim::start(config, Some(&format!("127.0.0.1:{}", free_port())), None).unwrap();
    let task = sim
        .create_task(&TaskRequest {
            product_key: PK.into(),
            device_key: "dk1".into(),
            version: "2.0.0".into(),
            policy: Policy::Push,
        })
        .unwrap();
    (sim, task.id)
}

/// One response as read off the socket.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The server ended the connection before the `Content-Length` was reached.
    closed_early: bool,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A keep-alive HTTP/1.1 connection, as a browser holds one.
struct Conn {
    stream: TcpStream,
    /// Bytes read past the previous response.
    pending: Vec<u8>,
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).unwrap();
        // Long enough for a loaded machine; a server that neither finishes nor closes fails.
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Conn {
            stream,
            pending: Vec::new(),
        }
    }

    /// Sends `method path` with extra headers and reads the response.
    fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Raw {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        self.stream.write_all(head.as_bytes()).unwrap();
        self.read_response(method == "HEAD")
    }

    /// Reads more; `false` at the end of the stream.
    fn fill(&mut self) -> bool {
        let mut buf = [0u8; 8192];
        match self.stream.read(&mut buf) {
            Ok(0) => false,
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                true
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => false,
            Err(e) => panic!("the server neither finished the response nor closed: {e}"),
        }
    }

    fn read_response(&mut self, head_only: bool) -> Raw {
        let end = loop {
            if let Some(i) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            assert!(self.fill(), "the connection closed before the headers");
        };
        let head = String::from_utf8(self.pending[..end].to_vec()).unwrap();
        self.pending.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut raw = Raw {
            status: status.parse().unwrap(),
            headers,
            body: Vec::new(),
            closed_early: false,
        };
        let len: usize = if head_only {
            0
        } else {
            raw.header("content-length").unwrap().parse().unwrap()
        };
        while self.pending.len() < len {
            if !self.fill() {
                raw.closed_early = true;
                break;
            }
        }
        let take = len.min(self.pending.len());
        raw.body = self.pending.drain(..take).collect();
        raw
    }
}

fn admin(sim: &Sim, path: &str) -> Value {
    client::request(&sim.http_addr().to_string(), "GET", path, &[], &[])
        .unwrap()
        .json()
        .unwrap()
}

/// A task's downloads as `(range, status, bytes, cut)`.
fn downloads(sim: &Sim, task: u64) -> Vec<(Option<String>, u64, u64, bool)> {
    admin(sim, &format!("/admin/tasks/{task}"))["downloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["range"].as_str().map(str::to_string),
                d["status"].as_u64().unwrap(),
                d["bytes"].as_u64().unwrap(),
                d["cut"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_cut_download_ends_mid_body_and_a_range_resume_is_served() {
    let dir = TempDir::new("cut");
    let (sim, task) = start(&config(&dir, &json!({ "cutAfter": 10_000 })).unwrap());
    let bytes = firmware_bytes();
    let path = "/files/pkSim/2.0.0";

    // The first GET: the whole file's headers, 10 000 body bytes, then the end of stream.
    let mut first = Conn::open(sim.http_addr());
    let cut = first.request("GET", path, &[]);
    assert_eq!(cut.status, 200);
    assert_eq!(cut.header("content-length"), Some("40960"));
    assert!(
        cut.closed_early,
        "the connection must close, not wait for more"
    );
    assert_eq!(cut.body, bytes[..10_000]);

    // The resume from where it stopped is served whole, and so is a GET after it on the
    // same kept-alive connection: one cut only, and the relay keeps connections alive.
    let mut second = Conn::open(sim.http_addr());
    let rest = second.request("GET", path, &[("Range", "bytes=10000-")]);
    assert_eq!(rest.status, 206);
    assert_eq!(
        rest.header("content-range"),
        Some("bytes 10000-40959/40960")
    );
    assert!(!rest.closed_early);
    assert_eq!(rest.body, bytes[10_000..]);
    let again = second.request("GET", path, &[]);
    assert_eq!(again.status, 200);
    assert!(!again.closed_early);
    assert_eq!(again.body, bytes);

    assert_eq!(
        downloads(&sim, task),
        [
            (None, 200, 10_000, true),
            (Some("bytes=10000-".into()), 206, 30_960, false),
            (None, 200, LEN as u64, false),
        ]
    );
    let firmwares = admin(&sim, "/admin/firmwares");
    let fw = &firmwares["firmwares"][0];
    assert_eq!(fw["cutAfter"], 10_000);
    assert_eq!(fw["cutsLeft"], 0);
    assert_eq!(fw["downloads"].as_array().unwrap().len(), 3);
    sim.stop();
}

#[test]
fn cuts_count_only_longer_gets_and_apply_to_the_file_service() {
    let dir = TempDir::new("cuts");
    let (sim, task) = start(&config(&dir, &json!({ "cutAfter": 1000, "cuts": 2 })).unwrap());
    let bytes = firmware_bytes();
    let path = "/files/pkSim/2.0.0";
    let mut conn = Conn::open(sim.http_addr());

    // HEAD sends no body and is not a download; a range within cutAfter is served whole.
    let head = conn.request("HEAD", path, &[]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("40960"));
    let small = conn.request("GET", path, &[("Range", "bytes=0-99")]);
    assert_eq!((small.status, small.body.len()), (206, 100));

    // Through the EnOS file service, as the device that logged in: the first cut.
    let sign = SecretCredentials::new(DeviceId::new(PK, "dk1").unwrap(), "secret1")
        .http_auth_sign(300_000);
    let login = client::request(
        &sim.http_addr().to_string(),
        "POST",
        "/auth/pkSim/dk1",
        &[("Content-Type", "application/json")],
        json!({ "signMethod": "sha256", "lifetime": 300_000, "sign": sign })
            .to_string()
            .as_bytes(),
    )
    .unwrap()
    .json()
    .unwrap();
    let session = login["data"]["sessionId"].as_str().unwrap();
    let uri = percent_encode(&format!("{}{path}", sim.http_url()));
    let download = format!(
        "/multipart/sys/pkSim/dk1/file/download?sessionId={session}&fileUri={uri}&category=ota"
    );
    let cut = conn.request("GET", &download, &[("Range", "bytes=500-")]);
    assert_eq!(cut.status, 206);
    assert_eq!(cut.header("content-length"), Some("40460"));
    assert!(cut.closed_early);
    assert_eq!(cut.body, bytes[500..1500]);

    // The second cut, then a whole download.
    let cut = Conn::open(sim.http_addr()).request("GET", path, &[]);
    assert!(cut.closed_early);
    assert_eq!(cut.body, bytes[..1000]);
    let whole = Conn::open(sim.http_addr()).request("GET", path, &[]);
    assert!(!whole.closed_early);
    assert_eq!(whole.body, bytes);

    assert_eq!(
        downloads(&sim, task),
        [
            (Some("bytes=0-99".into()), 206, 100, false),
            (Some("bytes=500-".into()), 206, 1000, true),
            (None, 200, 1000, true),
            (None, 200, LEN as u64, false),
        ]
    );
    let record = admin(&sim, &format!("/admin/tasks/{task}"));
    assert_eq!(record["downloads"][1]["deviceKey"], "dk1");
    assert!(record["downloads"][0].get("deviceKey").is_none());
    sim.stop();
}

#[test]
fn the_announced_sign_and_size_replace_the_real_ones() {
    let dir = TempDir::new("announce");
    let wrong_md5 = "00112233445566778899aabbccddeeff";
    let config = config(
        &dir,
        &json!({ "announceSign": wrong_md5, "announceSize": 12345 }),
    )
    .unwrap();
    let mut registry = Registry::new(&config, config.firmwares().unwrap(), "http://127.0.0.1:1");
    let device = DeviceId::new(PK, "dk1").unwrap();

    // Online through inform, so the push goes out at once.
    let inform = inform_request(&MessageId::from(1), "1.0.0");
    registry.handle_message(0, &device.topic(OtaTopic::Inform), &inform);
    let (_, out) = registry
        .create_task(
            1,
            &TaskRequest {
                product_key: PK.into(),
                device_key: "dk1".into(),
                version: "2.0.0".into(),
                policy: Policy::Push,
            },
        )
        .unwrap();
    let pushed = UpgradeCommand::parse(&out[0].payload).unwrap().firmware;
    assert_eq!(pushed.sign, wrong_md5);
    assert_eq!(pushed.file_size, 12345);

    let request = get_version_request(&MessageId::from(2));
    let out = registry.handle_message(2, &device.topic(OtaTopic::GetVersion), &request);
    let offered = VersionsReply::parse(&out[0].payload).unwrap().firmwares;
    assert_eq!(offered[0].sign, wrong_md5);
    assert_eq!(offered[0].file_size, 12345);

    // The admin view keeps both, so a test can tell what the device should have found.
    let fw = &registry.firmwares_json()["firmwares"][0];
    assert_eq!(fw["announcedSign"], wrong_md5);
    assert_eq!(fw["announcedSize"], 12345);
    assert_eq!(fw["size"], LEN);
    assert_ne!(fw["sign"], wrong_md5);
    assert_eq!(fw["cutAfter"], Value::Null);
}

#[test]
fn fault_settings_are_checked_at_load() {
    let dir = TempDir::new("checks");
    let err = |faults: Value| {
        let e = config(&dir, &faults).and_then(|c| c.firmwares().map(drop));
        e.expect_err(&faults.to_string())
    };
    assert!(err(json!({ "cuts": 2 })).contains("cuts needs cutAfter"));
    assert!(err(json!({ "cutAfter": 10, "cuts": 0 })).contains("at least 1"));
    assert!(err(json!({ "cutAfter": LEN })).contains("not below"));
    assert!(err(json!({ "cutAfer": 10 })).contains("unknown field"));
}
