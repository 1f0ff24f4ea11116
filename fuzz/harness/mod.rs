//! The bodies of the cargo-fuzz targets, shared by `fuzz/fuzz_targets/*.rs` (libFuzzer on
//! nightly) and `tests/fuzz_corpus.rs` (replays the committed corpus on stable), so a
//! regression input fails `cargo test` the same way it failed the fuzzer.
//!
//! Every function takes the raw input. Decoder targets use the first byte to pick one of
//! several decoders and feed them the rest; the flow targets read an event script from the
//! input with [`Script`] (layout below) and check cheap invariants after every step besides
//! "no panic". Invariant failures are panics, which libFuzzer reports as crashes.
//!
//! Script layout, chosen so the seed encoders in [`seeds`] can write it by hand (a derived
//! `arbitrary` layout is not meant to be written): one op byte, then that op's operands,
//! each operand one byte (`u8`), two bytes little-endian (`u16`) or a length byte and that
//! many bytes (`bytes`). A script that runs out of input ends; missing operands read as 0.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::OnceLock;

use otaweb::error::{Error, LinkLost};
use otaweb::flow::dfu::{DfuEvent, DfuOptions, DfuPackage, DfuUpdate};
use otaweb::flow::enos::{AcceptPolicy, EnosEvent, EnosFlow, EnosOptions, PickPolicy};
use otaweb::flow::gadget::{GadgetEvent, GadgetOptions, GadgetUpdate};
use otaweb::flow::mqtt::{ConnectOptions, MqttSession, SessionConfig};
use otaweb::flow::service::{pick, Source, UpdatePolicy};
use otaweb::flow::Flow;
use otaweb::image::dfu_bundle;
use otaweb::image::digest::sha256;
use otaweb::image::manifest::{FlowKind, Manifest, ManifestEntry, MicrochipEntry};
use otaweb::image::sifli::{
    decompress_payload, CompressedPayload, CtrlPacket, ImageId, PublicKey, Record, TransferFile,
};
use otaweb::image::verify::{verify_image, Image, Verified, VerifyPolicy};
use otaweb::image::version::{Version, VersionStyle};
use otaweb::image::zlib;
use otaweb::time::{Millis, Span};
use otaweb::wire::agt;
use otaweb::wire::agt_proto::{self, ComponentSignature, ControlPayload};
use otaweb::wire::dfu::{self, Message, MessageId};
use otaweb::wire::enos::{self, DeviceId, DeviceRequest, MqttCredentials, OtaTopic};
use otaweb::wire::mqtt::{self, PacketRepr, PublishRepr, QoS, QosPid, SubackCode, SubackRepr};
use otaweb::wire::sifli;
use otaweb_firmware::dfu::{DfuConfig, DfuDevice, DfuDeviceEvent, DfuLayout, Mode};
use otaweb_firmware::flash::{Fixed, Geometry, SimFlash};
use otaweb_firmware::gadget::{Gadget, GadgetConfig, GadgetEvent as DeviceEvent};
use otaweb_firmware::record::RecordLog;
use otaweb_firmware::slots::{Layout, Slots};

/// A target: its name and its body.
pub type Target = (&'static str, fn(&[u8]));

/// The targets, by name, as `fuzz/corpus/<name>/` and `fuzz/regressions/<name>/` name them.
pub const TARGETS: &[Target] = &[
    ("agt", agt),
    ("sifli", sifli),
    ("package", package),
    ("mqtt", mqtt),
    ("enos", enos),
    ("manifest", manifest),
    ("flow_gadget", flow_gadget),
    ("flow_dfu", flow_dfu),
    ("flow_enos", flow_enos),
];

/// The selector byte and the rest of the input.
fn split(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((&selector, rest)) => (selector, rest),
        None => (0, &[]),
    }
}

/// The input as text: the decoders that take `&str` get arbitrary UTF-8 this way.
fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

// ---------------------------------------------------------------------------------------
// Decoders
// ---------------------------------------------------------------------------------------

/// AGT: transport and PV packets, reassembly (whole and in pieces), the control envelope,
/// Discover messages, and the signature texts.
pub fn agt(data: &[u8]) {
    let (selector, data) = split(data);
    match selector % 4 {
        0 => {
            let _ = agt::is_pv_packet(data);
            if let Ok(pv) = agt::PvPacket::new_checked(data) {
                let _ = agt::PvRepr::parse(&pv);
            }
            if let Ok(packet) = agt::TransportPacket::new_checked(data) {
                if let Ok(repr) = agt::TransportRepr::parse(&packet) {
                    // What parses re-emits into a buffer of the length it states.
                    let mut out = vec![0; repr.buffer_len()];
                    repr.emit(&mut agt::TransportPacket::new_unchecked(&mut out[..]))
                        .expect("a parsed transport packet re-emits");
                }
                let _ = agt::AckRepr::parse(&packet);
            }
        }
        1 => {
            // The first byte cuts the rest into values, as a GATT link delivers them; the
            // reassembler's cap is small so the fuzzer reaches it.
            let (cut, data) = split(data);
            let cut = usize::from(cut).max(1);
            let mut reassembler = agt::Reassembler::new(600);
            for value in data.chunks(cut) {
                match reassembler.push(value) {
                    Ok(agt::Received::Transaction(t)) => {
                        assert!(t.payload.len() <= 600, "a transaction beyond the cap");
                        control(&t.payload);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = e.nack();
                    }
                }
            }
        }
        2 => control(data),
        _ => {
            let text = text(data);
            let _ = agt_proto::parse_segment_signature(&text);
            let _ = ComponentSignature::parse(&text);
        }
    }
}

/// The protobuf decoders of one AGT payload, and the bounds checks a gadget runs on them.
fn control(data: &[u8]) {
    if let Ok(envelope) = agt_proto::decode_control(data) {
        let _ = envelope.as_response().map(|r| r.succeeded());
        match &envelope.payload {
            Some(ControlPayload::UpdateComponentSegment(s)) => {
                let _ = s.validate();
            }
            Some(ControlPayload::ApplyFirmware(a)) => {
                let _ = a.validate();
            }
            _ => {}
        }
        // Decoding what we encode gives it back.
        assert_eq!(
            agt_proto::decode_control(&envelope.to_bytes()).as_ref(),
            Ok(&envelope)
        );
    }
    let _ = agt_proto::peek_directive_header(data);
    let _ = agt_proto::decode_discover_directive(data);
    if let Ok(event) = agt_proto::decode_discover_response(data) {
        let _ = event.firmware_version();
    }
}

/// SiFli: frames, reassembly (whole and in pieces), and DFU messages (whole, and by id).
pub fn sifli(data: &[u8]) {
    let (selector, data) = split(data);
    match selector % 4 {
        0 => {
            if let Ok(frame) = sifli::Frame::new_checked(data) {
                if let Ok(repr) = sifli::FrameRepr::parse(&frame) {
                    let mut out = vec![0; repr.buffer_len()];
                    repr.emit(&mut sifli::Frame::new_unchecked(&mut out[..]))
                        .expect("a parsed frame re-emits");
                }
            }
        }
        1 => {
            let (cut, data) = split(data);
            let cut = usize::from(cut).max(1);
            let mut reassembler = sifli::Reassembler::new(700);
            for value in data.chunks(cut) {
                if let Ok(Some(done)) = reassembler.push(value) {
                    assert!(done.payload.len() <= 700, "a message beyond the cap");
                    dfu_message(&done.payload);
                }
                assert!(reassembler.reserved() <= 700, "reassembly beyond the cap");
            }
        }
        2 => dfu_message(data),
        _ => {
            // A message body under each id the first two bytes name.
            let Some((id, body)) = data.split_at_checked(2) else {
                return;
            };
            let id = MessageId::from(u16::from_le_bytes([id[0], id[1]]));
            if let Ok(message) = Message::parse(id, body) {
                let _ = message.to_vec();
            }
        }
    }
}

/// One DFU message: what decodes re-encodes to the same message.
fn dfu_message(data: &[u8]) {
    if let Ok(message) = Message::decode(data) {
        if let Ok(bytes) = message.to_vec() {
            assert_eq!(Message::decode(&bytes).as_ref(), Ok(&message));
        }
    }
    if let Ok(packet) = dfu::DfuPacket::new_checked(data) {
        let _ = Message::parse_packet(&packet);
    }
}

/// Image files: ctrl packets, transfer records and files, compressed payloads, DFU
/// bundles, zlib (whole and streamed, with the output cap), and the firmware's record log
/// over flash contents it did not write.
pub fn package(data: &[u8]) {
    let (selector, data) = split(data);
    match selector % 7 {
        0 => {
            if let Ok(packet) = CtrlPacket::parse_plain(data) {
                let plain = packet.to_plain().expect("a parsed ctrl packet re-encodes");
                assert_eq!(CtrlPacket::parse_plain(&plain).as_ref(), Ok(&packet));
            }
        }
        1 => {
            if let Ok(record) = Record::parse(data) {
                assert_eq!(record.to_bytes(), data);
            }
            let (blk, rest) = split(data);
            if let Ok(file) = TransferFile::with_blk_size(1, rest.to_vec(), u16::from(blk) * 16) {
                for record in file.records() {
                    Record::parse(record).expect("a walked record parses");
                }
            }
            let _ = TransferFile::detect(1, data.to_vec());
        }
        2 => {
            if let Ok(payload) = CompressedPayload::parse(data) {
                for chunk in payload.chunks().take(64) {
                    if chunk.is_err() {
                        break;
                    }
                }
            }
            if let Ok(out) = decompress_payload(data, 1 << 16) {
                assert!(out.len() <= 1 << 16, "inflated beyond the cap");
            }
        }
        3 => {
            if let Ok(bundle) = dfu_bundle::read(data) {
                let _ = CtrlPacket::parse_plain(bundle.ctrl_packet);
            }
        }
        4 => {
            // The cap is the first byte's square, so small caps get hit.
            let (cap, rest) = split(data);
            let cap = usize::from(cap) * usize::from(cap);
            if let Ok(out) = zlib::inflate(rest, cap) {
                assert!(out.len() <= cap, "inflated beyond the cap");
            }
        }
        5 => {
            // Streamed in pieces the first byte sizes: the cap holds across pushes.
            let (cut, rest) = split(data);
            let cut = usize::from(cut).max(1);
            let cap = 4096;
            let mut inflater = zlib::Inflater::new(cap);
            let mut out = Vec::new();
            for piece in rest.chunks(cut) {
                if inflater.push(piece, &mut out).is_err() {
                    break;
                }
                assert!(out.len() <= cap, "streamed beyond the cap");
            }
            let _ = inflater.finish();
        }
        _ => record_log(data),
    }
}

/// The firmware's record log reading flash it did not write (a torn or foreign log), then
/// appending: the decoder sees exactly `payload_len` bytes, an append is read back.
fn record_log(data: &[u8]) {
    const SECTOR: usize = 512;
    let mut image = data.to_vec();
    image.resize(2 * SECTOR, 0xFF);
    let geometry = Geometry {
        capacity: 2 * SECTOR,
        erase_size: SECTOR,
        write_size: 4,
    };
    let Ok(mut flash) = SimFlash::from_image(geometry, &image).and_then(Fixed::<4, SECTOR>::wrap)
    else {
        return;
    };
    let log = RecordLog {
        base: 0,
        sector_size: SECTOR as u32,
        write_size: 4,
        magic: 0x4F54_4157,
        payload_len: 20,
    };
    let decode = |p: &[u8]| {
        assert_eq!(p.len(), 20, "the decoder sees the payload length");
        Some(p.to_vec())
    };
    let _ = log.latest(&mut flash, decode);
    let payload = [0xA5; 20];
    if log.append(&mut flash, &payload, decode).is_ok() {
        assert_eq!(
            log.latest(&mut flash, decode).ok().flatten().as_deref(),
            Some(&payload[..]),
            "an append is the latest record"
        );
    }
}

/// MQTT: packets (what decodes re-encodes the same), the stream decoder under its cap, and
/// the client session fed broker bytes among the application's calls.
pub fn mqtt(data: &[u8]) {
    let (selector, data) = split(data);
    match selector % 3 {
        0 => {
            let _ = mqtt::decode_remaining_len(data);
            if let Ok(repr) = PacketRepr::parse_bytes(data) {
                let mut buf = Vec::new();
                repr.append_to(&mut buf)
                    .expect("a parsed packet re-encodes");
                assert_eq!(PacketRepr::parse_bytes(&buf), Ok(repr));
            }
        }
        1 => {
            let (cut, data) = split(data);
            let cut = usize::from(cut).max(1);
            let cap = 300;
            let mut decoder = mqtt::Decoder::new(cap);
            for chunk in data.chunks(cut) {
                decoder.push(chunk);
                assert!(
                    decoder.buffered() <= cap,
                    "the decoder holds beyond its cap"
                );
                while let Some(packet) = decoder.next_packet() {
                    if let Ok(packet) = packet {
                        assert!(packet.len() <= cap, "a packet beyond the cap");
                        let _ = PacketRepr::parse_bytes(&packet);
                    }
                }
            }
        }
        _ => mqtt_session(data),
    }
}

/// Topics the scripts name by index: valid ones, a wildcard filter, and an invalid one.
const MQTT_TOPICS: [&str; 4] = ["a/b", "dev/+/up", "x/#", ""];

/// [`MqttSession`] driven by a script: `0` connect, `1` link lost, `2 bytes` broker input,
/// `3 u16` time passes (ms, then its timeout fires if due), `4` transmitted, `5 u8`
/// subscribe, `6 u8` unsubscribe, `7 u8 bytes` publish (QoS by the low bit), `8`
/// disconnect, `9` fire the timeout the session asked for.
fn mqtt_session(data: &[u8]) {
    let config = SessionConfig {
        max_packet_len: 512,
        max_queued: 8,
        ..SessionConfig::default()
    };
    let connect = ConnectOptions::new("fuzz").with_login("user", b"pass".to_vec());
    let mut session = MqttSession::new(connect, config).expect("valid options");
    let mut clock = Clock::default();
    let mut script = Script::new(data);
    while let Some(op) = script.op() {
        let now = clock.now;
        match op % 10 {
            0 => session.handle_connected(now),
            1 => session.handle_disconnected(now),
            2 => session.handle_input(now, (), script.bytes()),
            3 => clock.after(script.u16(), &mut session),
            4 => session.handle_transmitted(now),
            5 => {
                let topic = MQTT_TOPICS[usize::from(script.u8()) % 4];
                let _ = session.subscribe(now, topic, QoS::AtLeastOnce);
            }
            6 => {
                let topic = MQTT_TOPICS[usize::from(script.u8()) % 4];
                let _ = session.unsubscribe(now, topic);
            }
            7 => {
                let which = script.u8();
                let topic = MQTT_TOPICS[usize::from(which >> 1) % 4];
                let qos = if which & 1 == 0 {
                    QoS::AtMostOnce
                } else {
                    QoS::AtLeastOnce
                };
                let _ = session.publish(now, topic, script.bytes(), qos, false);
            }
            8 => session.disconnect(now),
            _ => clock.fire(&mut session),
        }
        let _ = drain(&mut session, clock.now);
        assert!(
            session.unacknowledged() <= config.max_queued,
            "more messages queued than the session allows"
        );
        let _ = session.poll_reconnect_delay();
    }
}

/// Everything a flow sends and reports now, transmitting as an edge does; returns the
/// datagrams and the events.
fn drain<F: Flow<Channel = ()>>(flow: &mut F, now: Millis) -> (Vec<Vec<u8>>, Vec<F::Event>) {
    let mut sent = Vec::new();
    let mut buf = Vec::new();
    // A flow that queues without end would loop forever here: bound it far above any
    // real burst, so the fuzzer reports it.
    for _ in 0..10_000 {
        buf.clear();
        let Some(t) = flow.poll_transmit(&mut buf) else {
            let mut events = Vec::new();
            for _ in 0..10_000 {
                match flow.poll_event() {
                    Some(e) => events.push(e),
                    None => return (sent, events),
                }
            }
            panic!("a flow reports events without end");
        };
        assert_eq!(t.len, buf.len(), "Transmit.len is the bytes appended");
        sent.push(buf.clone());
        flow.handle_transmitted(now);
    }
    panic!("a flow transmits without end");
}

/// The virtual clock of a script: time only moves forward.
#[derive(Default)]
struct Clock {
    now: Millis,
}

impl Clock {
    /// `ms` pass; the flow's timeout fires if it is due by then.
    fn after<F: Flow>(&mut self, ms: u16, flow: &mut F) {
        self.now += Span(u64::from(ms));
        if flow.poll_timeout().is_some_and(|t| t <= self.now) {
            flow.handle_timeout(self.now);
        }
    }

    /// Jumps to the flow's deadline, if later than now, and fires it.
    fn fire<F: Flow>(&mut self, flow: &mut F) {
        if let Some(t) = flow.poll_timeout() {
            if t > self.now {
                self.now = t;
            }
            flow.handle_timeout(self.now);
        }
    }
}

/// Reads a script (module docs): op bytes and their operands, 0 past the end.
pub struct Script<'a> {
    data: &'a [u8],
}

impl<'a> Script<'a> {
    /// A script over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Script { data }
    }

    /// The next op, or `None` at the end.
    pub fn op(&mut self) -> Option<u8> {
        let (&op, rest) = self.data.split_first()?;
        self.data = rest;
        Some(op)
    }

    /// A one-byte operand.
    pub fn u8(&mut self) -> u8 {
        self.op().unwrap_or(0)
    }

    /// A two-byte little-endian operand.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// A length byte and up to that many bytes.
    pub fn bytes(&mut self) -> &'a [u8] {
        let len = usize::from(self.u8()).min(self.data.len());
        let (bytes, rest) = self.data.split_at(len);
        self.data = rest;
        bytes
    }
}

/// Writes scripts for the seed corpora: the inverse of [`Script`].
#[derive(Default)]
pub struct ScriptWriter {
    /// The script so far.
    pub out: Vec<u8>,
}

impl ScriptWriter {
    /// An op byte.
    pub fn op(&mut self, op: u8) -> &mut Self {
        self.out.push(op);
        self
    }

    /// A two-byte operand.
    pub fn u16(&mut self, value: u16) -> &mut Self {
        self.out.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// Bytes as one operand per 255 bytes, each after `op` (an op that takes bytes).
    pub fn bytes(&mut self, op: u8, bytes: &[u8]) -> &mut Self {
        for piece in bytes.chunks(255) {
            self.out.push(op);
            self.out.push(piece.len() as u8);
            self.out.extend_from_slice(piece);
        }
        if bytes.is_empty() {
            self.out.extend_from_slice(&[op, 0]);
        }
        self
    }
}

/// EnOS: every JSON body decoder (what the flow reads off the broker), topics, progress
/// steps and firmware signs.
pub fn enos(data: &[u8]) {
    let (selector, data) = split(data);
    match selector % 3 {
        0 => {
            if let Ok(command) = enos::UpgradeCommand::parse(data) {
                let _ = command.firmware.expected_digest();
                if let Some(id) = &command.id {
                    // The push we would build from it reads back the same.
                    let again = enos::upgrade_command(id, &command.firmware);
                    let parsed = enos::UpgradeCommand::parse(&again).expect("our push parses");
                    assert_eq!(parsed.firmware, command.firmware);
                }
            }
            if let Ok(reply) = enos::Reply::parse(data) {
                let _ = reply.result();
            }
            if let Ok(versions) = enos::VersionsReply::parse(data) {
                for firmware in &versions.firmwares {
                    let _ = firmware.expected_digest();
                }
            }
        }
        1 => {
            for topic in OtaTopic::ALL {
                let _ = DeviceRequest::parse(topic, data);
            }
            if let Ok(credentials) = MqttCredentials::from_json(data) {
                let _ = credentials.device();
            }
            let _ = enos::file_session_id(data);
        }
        _ => {
            let text = text(data);
            if let Some(topic) = enos::TopicRef::parse(&text) {
                let _ = topic.is_for(&enos_device());
            }
            let _ = text.parse::<enos::Step>();
            let (method, sign) = text.split_once(' ').unwrap_or(("md5", &text));
            let _ = enos::FirmwareSign::parse(method, sign);
        }
    }
}

/// The device the EnOS targets act for.
fn enos_device() -> DeviceId {
    DeviceId::new("pk1", "dk1").expect("valid keys")
}

/// Manifests: otaweb's and Microchip's, the update service's source and pick, and version
/// parsing and ordering.
pub fn manifest(data: &[u8]) {
    let (selector, data) = split(data);
    let text = text(data);
    let flows = [FlowKind::Gadget, FlowKind::Dfu, FlowKind::Enos];
    match selector % 4 {
        0 => {
            if let Ok(manifest) = Manifest::parse(&text) {
                // What parses writes back to JSON that parses to the same manifest.
                assert_eq!(Manifest::parse(&manifest.to_json()).as_ref(), Ok(&manifest));
                for flow in flows {
                    for current in ["0", "1", "1.0.0", ""] {
                        let _ = manifest.newest(flow, current);
                        let _ = pick(&manifest, flow, Some(current), &UpdatePolicy::default());
                    }
                    let _ = pick(&manifest, flow, None, &UpdatePolicy::default());
                }
            }
        }
        1 => {
            let _ = ManifestEntry::parse_json(&text);
            if let Ok(entry) = MicrochipEntry::parse_manifest(&text) {
                for flow in flows {
                    let _ = entry.to_manifest_entry("app", flow, 1024);
                }
            }
        }
        2 => {
            for flow in flows {
                if let Ok(source) = Source::parse(&text, flow) {
                    for entry in &source.manifest.images {
                        let _ = source.sized(entry, 4096);
                    }
                }
            }
        }
        _ => {
            // Two versions, one per line: every style that reads both orders them
            // consistently both ways round.
            let (a, b) = text.split_once('\n').unwrap_or((&text, "1"));
            for style in [
                VersionStyle::Alexa,
                VersionStyle::Enos,
                VersionStyle::Microchip,
            ] {
                let (Ok(x), Ok(y)) = (Version::parse(style, a), Version::parse(style, b)) else {
                    continue;
                };
                let forward = x.compare(&y).expect("same style");
                let backward = y.compare(&x).expect("same style");
                assert_eq!(forward, backward.reverse(), "{a:?} against {b:?}");
                assert_eq!(x.is_newer_than(&y), Ok(forward.is_gt()));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Flows: a central (the core's flow) and a device (the companion firmware)
// ---------------------------------------------------------------------------------------

/// The device side of a paired run, as the simulator's peripheral is.
trait Device {
    fn connected(&mut self, now: Millis);
    fn disconnected(&mut self, now: Millis);
    fn write(&mut self, now: Millis, bytes: &[u8]);
    fn notify(&mut self, buf: &mut Vec<u8>) -> Option<usize>;
    fn deadline(&self) -> Option<Millis>;
    fn fire(&mut self, now: Millis);
    /// Takes a restart request (the firmware's or a power cut's).
    fn take_restart(&mut self) -> bool;
    /// Restarts through the boot decision and checks what it left running.
    fn restart(&mut self, now: Millis);
    /// A host or fault call chosen by `op` (power cut, health check, ...).
    fn app(&mut self, now: Millis, op: u8);
}

/// The longest notification a device may send, so a flood is caught.
const MAX_DATAGRAM: usize = 1024;

/// Every notification the device has queued now.
fn drain_device<D: Device>(device: &mut D) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    for _ in 0..10_000 {
        buf.clear();
        let Some(len) = device.notify(&mut buf) else {
            return out;
        };
        assert_eq!(len, buf.len(), "notify's length is the bytes appended");
        assert!(len <= MAX_DATAGRAM, "a notification of {len} bytes");
        out.push(buf.clone());
    }
    panic!("a device notifies without end");
}

/// A device driven alone by a script: `0` connect, `1` link lost, `2 bytes` a write, `3
/// u16` time passes, `4 u8` host call, `5` restart if asked, `6` fire its deadline.
fn solo_device<D: Device>(device: &mut D, data: &[u8]) {
    let mut now = Millis::ZERO;
    let mut script = Script::new(data);
    while let Some(op) = script.op() {
        match op % 7 {
            0 => device.connected(now),
            1 => device.disconnected(now),
            2 => device.write(now, script.bytes()),
            3 => {
                now += Span(u64::from(script.u16()));
                if device.deadline().is_some_and(|t| t <= now) {
                    device.fire(now);
                }
            }
            4 => device.app(now, script.u8()),
            5 => {
                if device.take_restart() {
                    let _ = drain_device(device);
                    device.disconnected(now);
                    device.restart(now);
                }
            }
            _ => {
                if let Some(t) = device.deadline() {
                    now = now.max(t);
                    device.fire(now);
                }
            }
        }
        let _ = drain_device(device);
    }
}

/// A central flow driven alone by a script: `0` connect, `1` link lost, `2 bytes` device
/// input, `3 u16` time passes, `4 u8` application call, `5` fire its deadline. `check` sees
/// the flow and its events after every step.
fn solo_central<F: Flow<Channel = ()>>(
    flow: &mut F,
    data: &[u8],
    mut app: impl FnMut(&mut F, Millis, u8),
    mut check: impl FnMut(&F, &[F::Event]),
) {
    let mut clock = Clock::default();
    let mut script = Script::new(data);
    while let Some(op) = script.op() {
        let now = clock.now;
        match op % 6 {
            0 => flow.handle_connected(now),
            1 => flow.handle_disconnected(now),
            2 => flow.handle_input(now, (), script.bytes()),
            3 => clock.after(script.u16(), flow),
            4 => app(flow, now, script.u8()),
            _ => clock.fire(flow),
        }
        let (sent, events) = drain(flow, clock.now);
        for datagram in &sent {
            assert!(
                datagram.len() <= MAX_DATAGRAM,
                "a write of {} bytes",
                datagram.len()
            );
        }
        check(flow, &events);
    }
}

/// A central and a device over a link the script controls.
struct Pair<C: Flow<Channel = ()>, D: Device> {
    central: C,
    device: D,
    now: Millis,
    linked: bool,
    to_device: VecDeque<Vec<u8>>,
    to_central: VecDeque<Vec<u8>>,
    /// The script changed or dropped something the device sent: the central may then be
    /// fooled (BLE carries no integrity), so its view of the device is not checked.
    fooled: bool,
    events: Vec<C::Event>,
    /// What happened on the link, for the seed encoders.
    trace: Vec<Trace>,
}

/// One thing that happened on a pair's link.
#[derive(Clone, Debug)]
enum Trace {
    Connected,
    Dropped,
    Restarted,
    ToDevice(Vec<u8>),
    ToCentral(Vec<u8>),
    /// The clock moved to this time.
    Time(Millis),
}

impl<C: Flow<Channel = ()>, D: Device> Pair<C, D> {
    fn new(central: C, device: D) -> Self {
        Pair {
            central,
            device,
            now: Millis::ZERO,
            linked: false,
            to_device: VecDeque::new(),
            to_central: VecDeque::new(),
            fooled: false,
            events: Vec::new(),
            trace: Vec::new(),
        }
    }

    /// Collects what both sides want to send; a device's restart request drops the link
    /// after its notifications reached the central (the firmware's host-loop contract).
    fn collect(&mut self) {
        let (sent, events) = drain(&mut self.central, self.now);
        self.events.extend(events);
        if self.linked {
            self.to_device.extend(sent);
            self.to_central.extend(drain_device(&mut self.device));
        } else {
            let _ = drain_device(&mut self.device);
        }
        if self.device.take_restart() {
            while let Some(bytes) = self.to_central.pop_front() {
                self.trace.push(Trace::ToCentral(bytes.clone()));
                self.central.handle_input(self.now, (), &bytes);
            }
            self.drop_link();
            self.device.restart(self.now);
            self.trace.push(Trace::Restarted);
            let (_, events) = drain(&mut self.central, self.now);
            self.events.extend(events);
        }
    }

    fn connect(&mut self) {
        if !self.linked {
            self.trace.push(Trace::Connected);
            self.linked = true;
            self.device.connected(self.now);
            self.collect();
            self.central.handle_connected(self.now);
        }
    }

    fn drop_link(&mut self) {
        if self.linked {
            self.trace.push(Trace::Dropped);
            self.linked = false;
            self.to_device.clear();
            self.to_central.clear();
            self.device.disconnected(self.now);
            self.central.handle_disconnected(self.now);
        }
    }

    /// Delivers the next write, changed at `at` by `xor` if `xor` is not 0.
    fn deliver_write(&mut self, at: u8, xor: u8) {
        if let Some(mut bytes) = self.to_device.pop_front() {
            corrupt(&mut bytes, at, xor);
            self.trace.push(Trace::ToDevice(bytes.clone()));
            self.device.write(self.now, &bytes);
        }
    }

    fn deliver_notify(&mut self, at: u8, xor: u8) {
        if let Some(mut bytes) = self.to_central.pop_front() {
            self.fooled |= corrupt(&mut bytes, at, xor);
            self.trace.push(Trace::ToCentral(bytes.clone()));
            self.central.handle_input(self.now, (), &bytes);
        }
    }

    /// The earliest deadline of either side, if any.
    fn deadline(&self) -> Option<Millis> {
        match (self.central.poll_timeout(), self.device.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn fire_due(&mut self) {
        self.trace.push(Trace::Time(self.now));
        if self.central.poll_timeout().is_some_and(|t| t <= self.now) {
            self.central.handle_timeout(self.now);
        }
        if self.device.deadline().is_some_and(|t| t <= self.now) {
            self.device.fire(self.now);
        }
    }

    /// Runs the link faultlessly for up to `rounds` exchanges: connecting when down,
    /// delivering everything, and jumping to the next deadline when both sides are idle.
    fn pump(&mut self, rounds: u32) {
        for _ in 0..rounds {
            self.connect();
            self.collect();
            if self.to_device.is_empty() && self.to_central.is_empty() {
                match self.deadline() {
                    Some(t) => {
                        self.now = self.now.max(t);
                        self.fire_due();
                    }
                    None => return,
                }
            }
            while !self.to_device.is_empty() {
                self.deliver_write(0, 0);
                self.collect();
            }
            while !self.to_central.is_empty() {
                self.deliver_notify(0, 0);
                self.collect();
            }
        }
    }

    /// Runs a pair script: `0` deliver a write, `1 u8 u8` deliver one changed (position,
    /// xor), `2` deliver a notification, `3 u8 u8` one changed, `4` lose a write, `5` lose a
    /// notification, `6 u8` pump that many rounds, `7` link lost, `8` connect, `9 u16` time
    /// passes, `10` jump to the next deadline, `11 u8` central call, `12 u8` device call.
    fn run(
        &mut self,
        data: &[u8],
        mut app: impl FnMut(&mut C, Millis, u8),
        mut check: impl FnMut(&mut Self),
    ) {
        let mut script = Script::new(data);
        while let Some(op) = script.op() {
            match op % 13 {
                0 => self.deliver_write(0, 0),
                1 => {
                    let (at, xor) = (script.u8(), script.u8());
                    self.deliver_write(at, xor);
                }
                2 => self.deliver_notify(0, 0),
                3 => {
                    let (at, xor) = (script.u8(), script.u8());
                    self.deliver_notify(at, xor);
                }
                4 => {
                    let _ = self.to_device.pop_front();
                }
                5 => {
                    self.fooled |= self.to_central.pop_front().is_some();
                }
                6 => {
                    let rounds = u32::from(script.u8() % 64) + 1;
                    self.pump(rounds);
                }
                7 => self.drop_link(),
                8 => self.connect(),
                9 => {
                    self.now += Span(u64::from(script.u16()) * 10);
                    self.fire_due();
                }
                10 => {
                    if let Some(t) = self.deadline() {
                        self.now = self.now.max(t);
                        self.fire_due();
                    }
                }
                11 => {
                    let call = script.u8();
                    app(&mut self.central, self.now, call);
                }
                _ => {
                    let call = script.u8();
                    self.device.app(self.now, call);
                }
            }
            self.collect();
            check(self);
        }
    }
}

/// Changes `bytes[at % len]` by `xor`; whether anything changed.
fn corrupt(bytes: &mut [u8], at: u8, xor: u8) -> bool {
    if xor == 0 || bytes.is_empty() {
        return false;
    }
    let len = bytes.len();
    bytes[usize::from(at) % len] ^= xor;
    true
}

// --- Alexa Gadgets ------------------------------------------------------------------------

/// The gadget's flash: 4-byte words, 512-byte sectors, so staging takes many operations.
type GadgetFlash = Fixed<4, 512>;

/// The gadget's database layout: 16 KiB factory region and slots.
const GADGET_LAYOUT: Layout = Layout {
    base: 0,
    erase_size: 512,
    write_size: 4,
    slot_size: 16 * 1024,
};

/// The version the gadget runs from the factory.
const FACTORY_VERSION: u32 = 1;
/// The version of the image the central offers.
const IMAGE_VERSION: u32 = 2;

/// Deterministic bytes (xorshift), different per seed.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// The factory image of the gadget.
fn gadget_factory() -> Vec<u8> {
    pattern(2000, 7)
}

/// The image the central sends: five segments at 1 KiB.
fn gadget_image() -> Vec<u8> {
    pattern(4500, 11)
}

/// The central's image, verified as the page would (unsigned, digest only).
fn gadget_verified() -> Verified<Image> {
    static IMAGE: OnceLock<Verified<Image>> = OnceLock::new();
    IMAGE.get_or_init(gadget_verified_uncached).clone()
}

fn gadget_verified_uncached() -> Verified<Image> {
    let bytes = gadget_image();
    let entry = ManifestEntry {
        name: "app".to_string(),
        flow: FlowKind::Gadget,
        version: IMAGE_VERSION.to_string(),
        url: "app.bin".to_string(),
        size: bytes.len() as u64,
        sha256: sha256(&bytes),
        md5: None,
        signature: None,
        compression: None,
    };
    verify_image(&bytes, &entry, &VerifyPolicy::danger_accept_unsigned()).expect("verifies")
}

/// The companion firmware's gadget with its host loop: restarts through the boot decision.
struct GadgetDevice {
    gadget: Option<Gadget<GadgetFlash>>,
    config: GadgetConfig,
    restart: bool,
    /// SHA-256 of the images that may ever run: the factory's and the central's.
    allowed: [[u8; 32]; 2],
}

impl GadgetDevice {
    fn new() -> Self {
        let config = GadgetConfig::default();
        let factory = gadget_factory();
        // Provisioned once per process, cloned per input.
        static FLASH: OnceLock<GadgetFlash> = OnceLock::new();
        let flash = FLASH
            .get_or_init(|| {
                let capacity = GADGET_LAYOUT.window_len(config.database.slots) as usize;
                let mut flash = GadgetFlash::new(capacity).expect("geometry");
                let slots = Slots::with_config(GADGET_LAYOUT, config.database.clone(), &flash)
                    .expect("layout");
                slots
                    .provision_factory(&mut flash, &factory, FACTORY_VERSION, None)
                    .expect("provisions");
                flash
            })
            .clone();
        let mut device = GadgetDevice {
            gadget: None,
            config,
            restart: false,
            allowed: [sha256(&factory), sha256(&gadget_image())],
        };
        device.boot(flash);
        device
    }

    fn gadget(&mut self) -> &mut Gadget<GadgetFlash> {
        self.gadget.as_mut().expect("a gadget between restarts")
    }

    /// The bootloader: the boot decision (again after a power cut during it), then the
    /// invariant that matters most: what runs is what its slot holds, and is an image that
    /// verified (the factory's or the central's), never a torn or forged one.
    fn boot(&mut self, mut flash: GadgetFlash) {
        let slots = Slots::with_config(GADGET_LAYOUT, self.config.database.clone(), &flash)
            .expect("layout");
        let boot = loop {
            match slots.boot(&mut flash) {
                Ok(boot) => break boot,
                Err(_) if !flash.sim().is_powered() => flash.sim_mut().restore_power(),
                Err(e) => panic!("the boot decision failed on a powered flash: {e:?}"),
            }
        };
        let running = boot.state.running();
        let range = slots.slot_range(running.slot);
        let start = range.start as usize;
        let held = &flash.sim().contents()[start..start + running.size as usize];
        assert_eq!(
            sha256(held),
            running.sha256,
            "the slot holds what the index says"
        );
        assert!(
            self.allowed.contains(&running.sha256),
            "the gadget runs an image that never verified: {running:?}"
        );
        self.gadget = Some(Gadget::new(flash, GADGET_LAYOUT, self.config.clone()).expect("boots"));
    }
}

impl Device for GadgetDevice {
    fn connected(&mut self, now: Millis) {
        self.gadget().handle_connected(now);
    }

    fn disconnected(&mut self, now: Millis) {
        self.gadget().handle_disconnected(now);
    }

    fn write(&mut self, now: Millis, bytes: &[u8]) {
        let g = self.gadget.as_mut().expect("a gadget between restarts");
        g.handle_write(now, bytes);
        while let Some(DeviceEvent::RestartRequested { .. }) = g.poll_event() {
            self.restart = true;
        }
        if !g.flash().sim().is_powered() {
            // A power cut takes the device down: what it queued is lost, it resets.
            let mut lost = Vec::new();
            while g.poll_notify(&mut lost).is_some() {}
            self.restart = true;
        }
    }

    fn notify(&mut self, buf: &mut Vec<u8>) -> Option<usize> {
        self.gadget().poll_notify(buf)
    }

    fn deadline(&self) -> Option<Millis> {
        None
    }

    fn fire(&mut self, _now: Millis) {}

    fn take_restart(&mut self) -> bool {
        std::mem::take(&mut self.restart)
    }

    fn restart(&mut self, _now: Millis) {
        let mut flash = self.gadget.take().expect("a gadget").into_flash();
        flash.sim_mut().restore_power();
        self.boot(flash);
    }

    fn app(&mut self, _now: Millis, op: u8) {
        let g = self.gadget.as_mut().expect("a gadget between restarts");
        match op % 4 {
            // Power fails after that many more writes.
            0 => g
                .flash_mut()
                .sim_mut()
                .cut_power_after_writes(u32::from(op >> 2)),
            1 => {
                let _ = g.confirm();
            }
            2 => {
                let _ = g.health_failed();
                while let Some(DeviceEvent::RestartRequested { .. }) = g.poll_event() {
                    self.restart = true;
                }
            }
            // A reset outside any update.
            _ => self.restart = true,
        }
    }
}

/// The central's options: small segments so an image takes several, few attempts.
fn gadget_options(stage_only: bool) -> GadgetOptions {
    GadgetOptions {
        segment_size: 1024,
        min_segment_size: 256,
        stage_only,
        max_attempts: 4,
        ..GadgetOptions::default()
    }
}

/// The gadget flow's application calls.
fn gadget_app(flow: &mut GadgetUpdate, now: Millis, op: u8) {
    match op % 2 {
        0 => {
            let _ = flow.apply(now);
        }
        _ => flow.cancel(now),
    }
}

/// What holds for the gadget flow after every step.
fn gadget_check(flow: &GadgetUpdate, events: &[GadgetEvent]) {
    let (confirmed, total) = flow.progress();
    assert!(confirmed <= total, "progress {confirmed} of {total}");
    for event in events {
        if let GadgetEvent::Progress { confirmed, total } = event {
            assert!(confirmed <= total, "progress event {confirmed} of {total}");
        }
    }
}

/// The gadget flow: `0` the central alone, `1` the device alone (scripts as
/// [`solo_central`] and [`solo_device`]), otherwise the two paired over a link the script
/// controls ([`Pair::run`]); the next byte's low bit asks the central to stage only.
pub fn flow_gadget(data: &[u8]) {
    let (selector, data) = split(data);
    let (options, data) = split(data);
    let central =
        || GadgetUpdate::new(gadget_verified(), gadget_options(options & 1 == 1)).expect("options");
    match selector % 3 {
        0 => solo_central(&mut central(), data, gadget_app, gadget_check),
        1 => solo_device(&mut GadgetDevice::new(), data),
        _ => {
            let mut pair = Pair::new(central(), GadgetDevice::new());
            let image = sha256(&gadget_image());
            pair.run(data, gadget_app, |pair| {
                for event in std::mem::take(&mut pair.events) {
                    gadget_check(&pair.central, std::slice::from_ref(&event));
                    // Done means the device runs the image, unless the script fooled the
                    // central.
                    if matches!(event, GadgetEvent::Done { .. }) && !pair.fooled {
                        let active = pair.device.gadget().active();
                        assert_eq!(active.sha256, image, "done, but the device runs {active:?}");
                    }
                }
            });
        }
    }
}

// --- SiFli DFU ----------------------------------------------------------------------------

/// The DFU device's flash: 4-byte words, 4 KiB sectors, 128 KiB.
type DfuFlash = Fixed<4, 4096>;

/// The fixture package (firmware-fixtures/files/dfu/), signed with the test key.
const DFU_CTRL: &[u8] = include_bytes!("../../firmware-fixtures/files/dfu/ctrl_packet.bin");
const DFU_HCPU_T: &[u8] = include_bytes!("../../firmware-fixtures/files/dfu/hcpu.transfer.bin");
const DFU_RES_T: &[u8] = include_bytes!("../../firmware-fixtures/files/dfu/res.transfer.bin");
const DFU_FONT_T: &[u8] = include_bytes!("../../firmware-fixtures/files/dfu/font.transfer.bin");
/// What the package's images are once installed.
const DFU_HCPU: &[u8] = include_bytes!("../../firmware-fixtures/files/dfu/hcpu.bin");
const DFU_RES: &[u8] = include_bytes!("../../firmware-fixtures/files/dfu/res.bin");
const DFU_FONT: &[u8] = include_bytes!("../../firmware-fixtures/files/dfu/font.bin");
/// The device's keys and UID.
const DFU_ROOT_KEY: &[u8] =
    include_bytes!("../../firmware-fixtures/files/keys/dfu-test-root-key.bin");
const DFU_UID: &[u8] = include_bytes!("../../firmware-fixtures/files/keys/dfu-test-uid.bin");
const DFU_PUB_DER: &[u8] =
    include_bytes!("../../firmware-fixtures/files/keys/dfu-test-signing-key.pub.der");

/// A region of `size` KiB at `base` KiB.
/// The device configuration of tests/sim/dfu.rs: §10 scaled to a 128 KiB part.
fn dfu_config() -> DfuConfig {
    // Built once: parsing the RSA key per input would dominate the run.
    static CONFIG: OnceLock<DfuConfig> = OnceLock::new();
    CONFIG.get_or_init(dfu_config_uncached).clone()
}

fn dfu_config_uncached() -> DfuConfig {
    DfuConfig {
        root_key: DFU_ROOT_KEY.try_into().expect("32 bytes"),
        public_key: PublicKey::from_spki_der(DFU_PUB_DER).expect("the test key"),
        uid: DFU_UID.try_into().expect("16 bytes"),
        sdk_version: 2_003_000,
        max_value_size: 244,
        layout: DfuLayout::SMALL,
    }
}

/// `image` padded to whole 16-byte blocks, as a partition holds it.
fn padded(image: &[u8]) -> Vec<u8> {
    let mut v = image.to_vec();
    v.resize(image.len().next_multiple_of(16), 0);
    v
}

/// The factory images of HCPU, RES and FONT: distinct from the package's.
fn dfu_factory() -> [Vec<u8>; 3] {
    [vec![0x11; 30_000], vec![0x22; 8_000], vec![0x33; 4_000]]
}

/// The fixture package as the phone sends it.
fn dfu_package() -> DfuPackage {
    static PACKAGE: OnceLock<DfuPackage> = OnceLock::new();
    PACKAGE.get_or_init(dfu_package_uncached).clone()
}

fn dfu_package_uncached() -> DfuPackage {
    let file = |id: ImageId, bytes: &[u8]| {
        TransferFile::with_blk_size(id.0, bytes.to_vec(), 512).expect("a fixture transfer")
    };
    DfuPackage::new(
        DFU_CTRL.to_vec(),
        vec![
            file(ImageId::FONT, DFU_FONT_T),
            file(ImageId::HCPU, DFU_HCPU_T),
            file(ImageId::RES, DFU_RES_T),
        ],
    )
    .expect("the fixture package")
}

/// The companion firmware's DFU device (user bin and OTA manager) with its host loop.
struct DfuDev {
    dev: DfuDevice<DfuFlash>,
    restart: bool,
    /// Per partition (HCPU, RES, FONT): the factory image and the package's, padded.
    allowed: [[Vec<u8>; 2]; 3],
}

impl DfuDev {
    fn new() -> Self {
        // Provisioned once per process: a clone of the flash is far cheaper per input.
        static FLASH: OnceLock<DfuFlash> = OnceLock::new();
        let flash = FLASH.get_or_init(|| {
            let mut flash = DfuFlash::new(128 * 1024).expect("geometry");
            let [h, r, f] = dfu_factory();
            DfuDevice::provision(&mut flash, &dfu_config(), [&h, &r, &f]).expect("provisions");
            flash
        });
        let [h, r, f] = dfu_factory();
        let dev = DfuDevice::new(flash.clone(), dfu_config(), Millis::ZERO).expect("boots");
        DfuDev {
            dev,
            restart: false,
            allowed: [
                [h, padded(DFU_HCPU)],
                [r, padded(DFU_RES)],
                [f, padded(DFU_FONT)],
            ],
        }
    }

    /// Takes the firmware's events; a power cut is a reset too.
    fn take(&mut self) {
        while let Some(DfuDeviceEvent::RestartRequested) = self.dev.poll_event() {
            self.restart = true;
        }
        if !self.dev.flash().sim().is_powered() {
            self.restart = true;
        }
    }

    /// The user bin only ever runs partitions holding an image that verified: the
    /// factory's or the package's, never a torn or unverified one.
    fn check(&mut self) {
        // Down (a power cut not yet followed by a boot) runs nothing; the boot is checked.
        if self.dev.mode() != Mode::UserBin || !self.dev.flash().sim().is_powered() {
            return;
        }
        let ids = [ImageId::HCPU, ImageId::RES, ImageId::FONT];
        for (id, allowed) in ids.into_iter().zip(&self.allowed) {
            let image = self.dev.partition_image(id).expect("a partition");
            assert!(
                allowed.contains(&image),
                "the user bin runs {id:?} that never verified ({} bytes)",
                image.len()
            );
        }
    }
}

impl Device for DfuDev {
    fn connected(&mut self, now: Millis) {
        self.dev.handle_connected(now);
    }

    fn disconnected(&mut self, now: Millis) {
        self.dev.handle_disconnected(now);
        self.take();
    }

    fn write(&mut self, now: Millis, bytes: &[u8]) {
        self.dev.handle_write(now, bytes);
        self.take();
    }

    fn notify(&mut self, buf: &mut Vec<u8>) -> Option<usize> {
        self.dev.poll_notify(buf)
    }

    fn deadline(&self) -> Option<Millis> {
        self.dev.poll_timeout()
    }

    fn fire(&mut self, now: Millis) {
        self.dev.handle_timeout(now);
        self.take();
    }

    fn take_restart(&mut self) -> bool {
        std::mem::take(&mut self.restart)
    }

    fn restart(&mut self, now: Millis) {
        if self.dev.flash().sim().is_powered() {
            self.dev.restart(now);
        }
        // A power cut (before or during the boot decision): RAM, the force-mode register
        // too, is lost; power comes back and the device boots again.
        while !self.dev.flash().sim().is_powered() {
            let mut flash = self.dev.flash().clone();
            flash.sim_mut().restore_power();
            self.dev = DfuDevice::new(flash, dfu_config(), now).expect("powers on");
        }
        self.check();
    }

    fn app(&mut self, now: Millis, op: u8) {
        match op % 3 {
            0 => self
                .dev
                .flash_mut()
                .sim_mut()
                .cut_power_after_writes(u32::from(op >> 2) * 4),
            1 => self.restart = true,
            _ => {
                self.dev.handle_timeout(now);
                self.take();
            }
        }
    }
}

/// The phone's options: acknowledgements every 4 packets, few retries.
fn dfu_options(restart: bool) -> DfuOptions {
    DfuOptions {
        on_ongoing: if restart {
            otaweb::flow::dfu::OnOngoing::Restart
        } else {
            otaweb::flow::dfu::OnOngoing::Resume
        },
        num_of_rsp: 4,
        max_retries: 3,
        ..DfuOptions::default()
    }
}

/// The DFU flow's application call: cancel.
fn dfu_app(flow: &mut DfuUpdate, now: Millis, _op: u8) {
    flow.cancel(now);
}

/// What holds for the DFU flow after every step.
fn dfu_check(flow: &DfuUpdate, events: &[DfuEvent]) {
    let (confirmed, total) = flow.progress();
    assert!(confirmed <= total, "progress {confirmed} of {total}");
    for event in events {
        if let DfuEvent::Progress { confirmed, total } = event {
            assert!(confirmed <= total, "progress event {confirmed} of {total}");
        }
    }
}

/// The DFU flow: `0` the phone alone, `1` the device alone, otherwise the two paired
/// ([`Pair::run`]); the next byte's low bit makes the phone restart an interrupted update
/// rather than resume it.
pub fn flow_dfu(data: &[u8]) {
    let (selector, data) = split(data);
    let (options, data) = split(data);
    let phone = || DfuUpdate::new(dfu_package(), dfu_options(options & 1 == 1)).expect("options");
    match selector % 3 {
        0 => solo_central(&mut phone(), data, dfu_app, dfu_check),
        1 => {
            let mut device = DfuDev::new();
            solo_device(&mut device, data);
            device.check();
        }
        _ => {
            let mut pair = Pair::new(phone(), DfuDev::new());
            pair.run(data, dfu_app, |pair| {
                let events = std::mem::take(&mut pair.events);
                dfu_check(&pair.central, &events);
                if events.contains(&DfuEvent::Done) && !pair.fooled {
                    // Done: the device reboots into the user bin holding the package.
                    pair.device.check();
                }
            });
            pair.device.check();
        }
    }
}

// --- EnOS ---------------------------------------------------------------------------------

/// The file the EnOS scripts download, and the firmware entry that names it.
fn enos_file() -> Vec<u8> {
    pattern(1500, 23)
}

/// The firmware the canned push and `getversion` reply offer: version 2.0.0 of
/// [`enos_file`], signed with its MD5.
fn enos_firmware() -> enos::Firmware {
    let file = enos_file();
    enos::Firmware {
        version: "2.0.0".to_string(),
        sign: otaweb::image::digest::to_hex(&otaweb::image::digest::md5(&file)),
        sign_method: "md5".to_string(),
        file_url: "/pk1/ota/fw-2.0.0".to_string(),
        file_size: file.len() as u64,
    }
}

/// A QoS 0 PUBLISH from the broker.
fn publish(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    PacketRepr::Publish(PublishRepr {
        topic,
        qos: QosPid::AtMostOnce,
        dup: false,
        retain: false,
        payload,
    })
    .append_to(&mut bytes)
    .expect("a valid publish");
    bytes
}

/// The broker's side of an EnOS script: what it owes the flow.
#[derive(Default)]
struct Broker {
    /// CONNACK, SUBACKs, PUBACKs and PINGRESPs for what the flow sent, in order.
    acks: Vec<u8>,
    /// The flow's requests not yet answered: topic and message id.
    requests: VecDeque<(OtaTopic, enos::MessageId)>,
}

impl Broker {
    /// Reads what the flow sent, queueing the answers a broker gives.
    fn saw(&mut self, device: &DeviceId, sent: &[Vec<u8>]) {
        for packet in sent {
            match PacketRepr::parse_bytes(packet) {
                Ok(PacketRepr::Connect(_)) => self.acks.extend_from_slice(&[0x20, 2, 0, 0]),
                Ok(PacketRepr::Subscribe(s)) => {
                    let codes = s
                        .filters
                        .iter()
                        .map(|_| SubackCode::Granted(QoS::AtLeastOnce))
                        .collect();
                    let _ = PacketRepr::Suback(SubackRepr {
                        packet_id: s.packet_id,
                        codes,
                    })
                    .append_to(&mut self.acks);
                }
                Ok(PacketRepr::Publish(p)) => {
                    if let Some(id) = p.qos.packet_id() {
                        let _ = PacketRepr::Puback(id).append_to(&mut self.acks);
                    }
                    let topic = OtaTopic::ALL
                        .into_iter()
                        .find(|&t| device.topic(t) == p.topic);
                    if let Some(topic) = topic {
                        let id = match DeviceRequest::parse(topic, p.payload) {
                            Ok(DeviceRequest::Inform { id, .. })
                            | Ok(DeviceRequest::Progress { id, .. })
                            | Ok(DeviceRequest::GetVersion { id }) => id,
                            _ => None,
                        };
                        if let Some(id) = id {
                            self.requests.push_back((topic, id));
                        }
                    }
                }
                Ok(PacketRepr::Pingreq) => self.acks.extend_from_slice(&[0xD0, 0]),
                _ => {}
            }
        }
    }

    /// The reply to the oldest open request: code 200 for an even `code`, else an error.
    fn answer(&mut self, device: &DeviceId, code: u8) -> Option<Vec<u8>> {
        let (topic, id) = self.requests.pop_front()?;
        let reply_code = enos::ReplyCode(if code.is_multiple_of(2) {
            200
        } else {
            500 + i64::from(code)
        });
        let body = match topic {
            OtaTopic::GetVersion => {
                let firmwares = if code.is_multiple_of(4) {
                    vec![enos_firmware()]
                } else {
                    Vec::new()
                };
                enos::get_version_reply(Some(&id), reply_code, &firmwares)
            }
            _ => enos::reply(Some(&id), reply_code, None),
        };
        Some(publish(&device.reply_topic(topic), &body))
    }
}

/// The EnOS flow driven by a script: `0` connect, `1` link lost, `2 bytes` broker bytes,
/// `3 u16` time passes (×10 ms), `4 u8 bytes` a PUBLISH on one of the device's topics, `5`
/// the broker acknowledges everything, `6 u8` it answers the oldest request, `7` it pushes
/// the canned upgrade, then the application: `8` accept, `9` decline, `10 u8` choose, `11
/// u16` download progress, `12 u8` downloaded (the file, or changed), `13` download
/// failed, `14` install started, `15 u16` install progress, `16 u8` install done, `17`
/// install failed, `18` check for update, `19` disconnect, `20` fire the deadline. The
/// first byte picks the accept and pick policies.
pub fn flow_enos(data: &[u8]) {
    let (policy, data) = split(data);
    let device = enos_device();
    let credentials = MqttCredentials {
        client_id: "dk1|securemode=2,signmethod=sha256,timestamp=1|".to_string(),
        username: "dk1&pk1".to_string(),
        password: "ABCD".to_string(),
    };
    let mut options = EnosOptions::new(FlowKind::Dfu);
    options.accept = if policy & 1 == 0 {
        AcceptPolicy::Ask
    } else {
        AcceptPolicy::Auto
    };
    options.pick = if policy & 2 == 0 {
        PickPolicy::Highest
    } else {
        PickPolicy::Ask
    };
    options.session.max_packet_len = 2048;
    options.session.max_queued = 16;
    let max_queued = options.session.max_queued;
    let mut flow =
        EnosFlow::new(device.clone(), &credentials, "1.0.0", options).expect("valid flow");
    let topics = [
        device.topic(OtaTopic::Upgrade),
        device.reply_topic(OtaTopic::Inform),
        device.reply_topic(OtaTopic::Progress),
        device.reply_topic(OtaTopic::GetVersion),
        "/sys/pk1/dk2/ota/device/upgrade".to_string(),
    ];
    let file = enos_file();
    let mut broker = Broker::default();
    let mut clock = Clock::default();
    // The digest the last Download event asked for, and the bytes last handed over.
    let mut expected: Option<enos::FirmwareSign> = None;
    let mut handed: Option<Vec<u8>> = None;
    let mut script = Script::new(data);
    while let Some(op) = script.op() {
        let now = clock.now;
        match op % 21 {
            0 => flow.handle_connected(now),
            1 => {
                broker = Broker::default();
                flow.handle_disconnected(now);
            }
            2 => flow.handle_input(now, (), script.bytes()),
            3 => clock.after(script.u16().saturating_mul(10), &mut flow),
            4 => {
                let topic = &topics[usize::from(script.u8()) % topics.len()];
                let bytes = publish(topic, script.bytes());
                flow.handle_input(now, (), &bytes);
            }
            5 => {
                let acks = std::mem::take(&mut broker.acks);
                flow.handle_input(now, (), &acks);
            }
            6 => {
                let code = script.u8();
                if let Some(bytes) = broker.answer(&device, code) {
                    flow.handle_input(now, (), &bytes);
                }
            }
            7 => {
                let id = enos::MessageId("99".to_string());
                let body = enos::upgrade_command(&id, &enos_firmware());
                flow.handle_input(now, (), &publish(&topics[0], &body));
            }
            8 => {
                let _ = flow.accept(now);
            }
            9 => {
                let _ = flow.decline(now);
            }
            10 => {
                let _ = flow.choose(now, usize::from(script.u8() % 4));
            }
            11 => {
                let received = u64::from(script.u16());
                let _ = flow.download_progress(now, received, file.len() as u64);
            }
            12 => {
                let mut bytes = file.clone();
                let change = script.u8();
                corrupt(&mut bytes, change, change >> 4);
                handed = Some(bytes.clone());
                let _ = flow.downloaded(now, &bytes);
            }
            13 => {
                let _ = flow.download_failed(now, Error::LinkLost(LinkLost::Disconnected));
            }
            14 => {
                let _ = flow.install_started(now);
            }
            15 => {
                let confirmed = u64::from(script.u16());
                let _ = flow.install_progress(now, confirmed, file.len() as u64);
            }
            16 => {
                let version = ["2.0.0", "1.0.0", "3"][usize::from(script.u8() % 3)];
                let _ = flow.install_done(now, version);
            }
            17 => {
                let _ = flow.install_failed(now, Error::LinkLost(LinkLost::Disconnected));
            }
            18 => {
                let _ = flow.check_for_update(now);
            }
            19 => flow.disconnect(now),
            _ => clock.fire(&mut flow),
        }
        let (sent, events) = drain(&mut flow, clock.now);
        broker.saw(&device, &sent);
        for event in events {
            match event {
                EnosEvent::Download { sign, .. } => expected = Some(sign),
                EnosEvent::Install(image) => {
                    // Only the bytes handed over, and only with the digest asked for.
                    let image = image.get();
                    assert_eq!(
                        Some(&image.bytes),
                        handed.as_ref(),
                        "install of other bytes"
                    );
                    let sign = expected.as_ref().expect("an install without a download");
                    assert!(
                        sign.check_bytes(&image.bytes).is_ok(),
                        "install of bytes that fail the digest"
                    );
                }
                _ => {}
            }
        }
        assert!(
            flow.session().unacknowledged() <= max_queued,
            "more messages queued than the session allows"
        );
        let _ = flow.poll_reconnect_delay();
        let _ = flow.state();
    }
}

// ---------------------------------------------------------------------------------------
// Seed corpora
// ---------------------------------------------------------------------------------------

/// Small valid inputs per target, built with the crate's own encoders and the fixtures:
/// `(target, file name, bytes)`. `tests/fuzz_corpus.rs` writes them to `fuzz/corpus/`
/// (`cargo test --test fuzz_corpus -- --ignored write_seeds`); libFuzzer grows from them.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut add = |target: &'static str, name: &str, selector: &[u8], body: &[u8]| {
        let mut bytes = selector.to_vec();
        bytes.extend_from_slice(body);
        out.push((target, name.to_string(), bytes));
    };

    // A faultless gadget update and DFU update, recorded: their traffic seeds the wire
    // targets, and their traces the solo flow scripts.
    let gadget = record_gadget();
    let dfu = record_dfu();
    let writes = |trace: &[Trace]| -> Vec<Vec<u8>> {
        trace
            .iter()
            .filter_map(|t| match t {
                Trace::ToDevice(b) => Some(b.clone()),
                _ => None,
            })
            .collect()
    };
    let notifies = |trace: &[Trace]| -> Vec<Vec<u8>> {
        trace
            .iter()
            .filter_map(|t| match t {
                Trace::ToCentral(b) => Some(b.clone()),
                _ => None,
            })
            .collect()
    };

    // AGT: the first packets each way, whole and as a reassembly, and the protobufs.
    for (i, packet) in writes(&gadget)
        .iter()
        .take(6)
        .chain(notifies(&gadget).iter().take(6))
        .enumerate()
    {
        add("agt", &format!("packet-{i}"), &[0], packet);
        let cut = packet.len().min(255) as u8;
        add("agt", &format!("reassemble-{i}"), &[1, cut], packet);
    }
    for (i, envelope) in [
        agt_proto::ControlEnvelope::get_device_information(),
        agt_proto::ControlEnvelope::get_device_features(),
        agt_proto::ControlEnvelope::update_component_segment(
            "app",
            1024,
            1024,
            &agt_proto::segment_signature(&[0; 32]),
        ),
        agt_proto::ControlEnvelope::response(
            agt_proto::Command::GetDeviceInformation,
            agt_proto::ErrorCode::Success,
        ),
    ]
    .iter()
    .enumerate()
    {
        add("agt", &format!("control-{i}"), &[2], &envelope.to_bytes());
    }
    add(
        "agt",
        "discover",
        &[2],
        &agt_proto::DiscoverDirective::new("id-1").to_bytes(),
    );
    add(
        "agt",
        "discover-response",
        &[2],
        &agt_proto::DiscoverResponseEvent::new("OTAWEB0001", "demo", "2").to_bytes(),
    );
    let signature = ComponentSignature {
        sha256: sha256(b"x"),
        ecdsa: None,
    };
    add(
        "agt",
        "component-signature",
        &[3],
        signature.encode().as_bytes(),
    );

    // SiFli: the first frames each way, and the DFU messages they carry.
    let mut messages = Vec::new();
    for (i, frame) in writes(&dfu)
        .iter()
        .take(4)
        .chain(notifies(&dfu).iter().take(4))
        .enumerate()
    {
        add("sifli", &format!("frame-{i}"), &[0], frame);
        let cut = frame.len().min(255) as u8;
        add("sifli", &format!("reassemble-{i}"), &[1, cut], frame);
    }
    for stream in [writes(&dfu), notifies(&dfu)] {
        let mut reassembler = sifli::Reassembler::new(4096);
        let mut kinds = Vec::new();
        for frame in stream {
            if let Ok(Some(done)) = reassembler.push(&frame) {
                let id = done.payload.get(..2).map(<[u8]>::to_vec);
                if done.payload.len() <= 600 && !kinds.contains(&id) {
                    kinds.push(id);
                    messages.push(done.payload);
                }
            }
        }
    }
    for (i, message) in messages.iter().enumerate() {
        add("sifli", &format!("message-{i}"), &[2], message);
        if message.len() >= 4 {
            let mut by_id = message[..2].to_vec();
            by_id.extend_from_slice(&message[4..]);
            add("sifli", &format!("by-id-{i}"), &[3], &by_id);
        }
    }

    // Package: the fixture ctrl packet's plain content, records, a compressed payload, a
    // small bundle, zlib streams and a record log.
    let config = dfu_config();
    let nonce8 = config.public_key.nonce8();
    if let Ok(ctrl) = CtrlPacket::open(DFU_CTRL, &config.root_key, &config.public_key, &nonce8) {
        if let Ok(plain) = ctrl.to_plain() {
            add("package", "ctrl-plain", &[0], &plain);
        }
    }
    let record_len = 36 + 512;
    add("package", "record", &[1], &DFU_HCPU_T[..record_len]);
    add(
        "package",
        "transfer",
        &[1, 32],
        &DFU_HCPU_T[..2 * record_len],
    );
    if let Ok(payload) = otaweb::image::sifli::compress_payload(&pattern(3000, 5), 1024) {
        add("package", "compressed-payload", &[2], &payload);
    }
    add("package", "bundle", &[3], &tiny_bundle());
    let data = pattern(600, 3);
    add("package", "zlib", &[4, 40], &zlib::compress(&data, 6));
    add(
        "package",
        "zlib-stored",
        &[4, 40],
        &zlib::compress(&data, 0),
    );
    add(
        "package",
        "zlib-stream",
        &[5, 17],
        &zlib::compress(&data, 9),
    );
    let log = RecordLog {
        base: 0,
        sector_size: 512,
        write_size: 4,
        magic: 0x4F54_4157,
        payload_len: 20,
    };
    let mut image = log.encode(1, &[7; 20]);
    image.extend_from_slice(&[0; 4]);
    image.extend(log.encode(2, &[8; 20]));
    add("package", "record-log", &[6], &image);

    // MQTT: one of each packet the session meets, a stream of them, a session script.
    let packets: Vec<Vec<u8>> = mqtt_packets();
    for (i, packet) in packets.iter().enumerate() {
        add("mqtt", &format!("packet-{i}"), &[0], packet);
    }
    add("mqtt", "stream", &[1, 5], &packets.concat());
    let mut w = ScriptWriter::default();
    w.op(0).bytes(2, &[0x20, 2, 0, 0]).op(5).out.push(0);
    w.bytes(2, &[0x90, 3, 0, 1, 1]);
    w.op(7).out.push(1);
    w.out.extend_from_slice(&[3, b'h', b'e', b'y']);
    w.bytes(2, &[0x40, 2, 0, 2]).bytes(2, &packets[2]);
    w.op(3).u16(30_000).op(9).op(9).op(1).op(0).op(8);
    add("mqtt", "session", &[2], &w.out);

    // EnOS: what the broker sends, what the device sends, texts.
    let id = enos::MessageId("7".to_string());
    let firmware = enos_firmware();
    add(
        "enos",
        "upgrade",
        &[0],
        &enos::upgrade_command(&id, &firmware),
    );
    add(
        "enos",
        "reply",
        &[0],
        &enos::reply(Some(&id), enos::ReplyCode(200), Some("ok")),
    );
    add(
        "enos",
        "versions",
        &[0],
        &enos::get_version_reply(Some(&id), enos::ReplyCode(200), &[firmware]),
    );
    add("enos", "inform", &[1], &enos::inform_request(&id, "1.0.0"));
    add("enos", "getversion", &[1], &enos::get_version_request(&id));
    if let Some(step) = enos::Step::percent(40) {
        let progress = enos::Progress::new(step);
        add(
            "enos",
            "progress",
            &[1],
            &enos::progress_request(&id, &progress),
        );
    }
    add(
        "enos",
        "credentials",
        &[1],
        br#"{"clientId":"dk1|securemode=2,signmethod=sha256,timestamp=1|","username":"dk1&pk1","password":"AB"}"#,
    );
    add(
        "enos",
        "topic",
        &[2],
        b"/sys/pk1/dk1/ota/device/upgrade_reply",
    );
    add("enos", "step", &[2], b"-4");
    add(
        "enos",
        "sign",
        &[2],
        b"sha256 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    );

    // Manifests and versions.
    let fixtures: [(&str, &[u8]); 4] = [
        (
            "manifest",
            include_bytes!("../../firmware-fixtures/files/manifest.json"),
        ),
        (
            "manifest-unsigned",
            include_bytes!("../../firmware-fixtures/files/manifest-unsigned.json"),
        ),
        (
            "manifest-dfu",
            include_bytes!("../../firmware-fixtures/files/manifest-dfu.json"),
        ),
        (
            "microchip",
            include_bytes!("../../firmware-fixtures/files/microchip-ota.json"),
        ),
    ];
    for (name, text) in fixtures {
        let selector = if name == "microchip" { 1 } else { 0 };
        add("manifest", name, &[selector], text);
        add("manifest", &format!("source-{name}"), &[2], text);
    }
    add("manifest", "versions-enos", &[3], b"1.2.3\n1.10.0");
    add("manifest", "versions-alexa", &[3], b"5\n17");

    // Flows: the paired runs (faultless, and staged then applied), and each side alone
    // replaying what the other sent.
    let mut pump = ScriptWriter::default();
    for _ in 0..6 {
        pump.op(6).out.push(63);
    }
    add("flow_gadget", "pair", &[2, 0], &pump.out);
    let mut staged = ScriptWriter::default();
    staged.op(6).out.push(63);
    staged.op(6).out.push(63);
    staged.op(11).out.push(0);
    staged.op(6).out.push(63);
    staged.op(6).out.push(63);
    add("flow_gadget", "pair-staged", &[2, 1], &staged.out);
    add("flow_gadget", "central", &[0, 0], &central_script(&gadget));
    add("flow_gadget", "device", &[1, 0], &device_script(&gadget));
    add("flow_dfu", "pair", &[2, 0], &pump.out);
    add("flow_dfu", "central", &[0, 0], &central_script(&dfu));
    add("flow_dfu", "device", &[1, 0], &device_script(&dfu));

    // EnOS: a push accepted, downloaded and installed; a check for update that picks.
    let mut push = ScriptWriter::default();
    push.op(0).op(5).op(5).op(6).out.push(0);
    push.op(7).op(8).op(5).op(6).out.push(0);
    push.op(12).out.push(0);
    push.op(5).op(6).out.push(0);
    push.op(14).op(15).u16(750).op(5).op(6).out.push(0);
    push.op(16).out.push(0);
    for _ in 0..3 {
        push.op(5).op(6).out.push(0);
    }
    push.op(3).u16(2000).op(20);
    add("flow_enos", "push", &[0], &push.out);
    let mut check = ScriptWriter::default();
    check.op(0).op(5).op(5).op(6).out.push(0);
    check.op(18).op(5).op(6).out.push(0);
    check.op(10).out.push(0);
    check.op(5).op(6).out.push(0);
    check.op(12).out.push(0);
    check.op(13).op(1).op(0).op(5).op(20);
    add("flow_enos", "check", &[3], &check.out);
    out
}

/// One of each MQTT packet the session meets, encoded.
fn mqtt_packets() -> Vec<Vec<u8>> {
    let pid = mqtt::PacketId::new(1).expect("nonzero");
    let reprs = [
        PacketRepr::Connect(mqtt::ConnectRepr {
            client_id: "c",
            clean_session: true,
            keep_alive: 60,
            username: Some("u"),
            password: Some(b"p"),
        }),
        PacketRepr::Connack(mqtt::ConnackRepr {
            session_present: false,
            code: mqtt::ConnackCode::Accepted,
        }),
        PacketRepr::Publish(PublishRepr {
            topic: "a/b",
            qos: QosPid::AtLeastOnce(pid),
            dup: false,
            retain: false,
            payload: b"{}",
        }),
        PacketRepr::Puback(pid),
        PacketRepr::Subscribe(mqtt::SubscribeRepr {
            packet_id: pid,
            filters: vec![mqtt::Subscription {
                filter: "a/+",
                qos: QoS::AtLeastOnce,
            }],
        }),
        PacketRepr::Suback(SubackRepr {
            packet_id: pid,
            codes: vec![SubackCode::Granted(QoS::AtLeastOnce), SubackCode::Failure],
        }),
        PacketRepr::Unsubscribe(mqtt::UnsubscribeRepr {
            packet_id: pid,
            filters: vec!["a/+"],
        }),
        PacketRepr::Unsuback(pid),
        PacketRepr::Pingreq,
        PacketRepr::Pingresp,
        PacketRepr::Disconnect,
    ];
    reprs
        .iter()
        .map(|repr| {
            let mut bytes = Vec::new();
            repr.append_to(&mut bytes).expect("encodes");
            bytes
        })
        .collect()
}

/// A ustar archive of `package.json`, a ctrl packet and one transfer file.
fn tiny_bundle() -> Vec<u8> {
    let json = br#"{"ctrl_packet":"ctrl_packet.bin","blk_size":512,"images":[{"img_id":0,"transfer":"hcpu.bin","img_length":548}]}"#;
    let files: [(&str, &[u8]); 3] = [
        ("package.json", json),
        ("ctrl_packet.bin", &DFU_CTRL[..64]),
        ("hcpu.bin", &DFU_HCPU_T[..548]),
    ];
    let mut out = Vec::new();
    for (name, data) in files {
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        header[100..107].copy_from_slice(b"0000644");
        header[108..115].copy_from_slice(b"0000000");
        header[116..123].copy_from_slice(b"0000000");
        header[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        header[136..147].copy_from_slice(b"00000000000");
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// The trace of a faultless gadget update.
fn record_gadget() -> Vec<Trace> {
    let central = GadgetUpdate::new(gadget_verified(), gadget_options(false)).expect("options");
    let mut pair = Pair::new(central, GadgetDevice::new());
    pair.pump(400);
    assert!(
        pair.central.is_finished(),
        "the recorded gadget update finishes"
    );
    pair.trace
}

/// The trace of a faultless DFU update of the fixture package.
fn record_dfu() -> Vec<Trace> {
    let phone = DfuUpdate::new(dfu_package(), dfu_options(false)).expect("options");
    let mut pair = Pair::new(phone, DfuDev::new());
    pair.pump(2000);
    assert!(
        pair.central.is_finished(),
        "the recorded DFU update finishes"
    );
    pair.trace
}

/// A [`solo_central`] script replaying what the device sent in `trace`.
fn central_script(trace: &[Trace]) -> Vec<u8> {
    let mut w = ScriptWriter::default();
    let mut now = Millis::ZERO;
    for t in trace {
        match t {
            Trace::Connected => {
                w.op(0);
            }
            Trace::Dropped => {
                w.op(1);
            }
            Trace::ToCentral(bytes) => {
                w.bytes(2, bytes);
            }
            Trace::Time(at) => {
                let delta = at.0.saturating_sub(now.0).min(u64::from(u16::MAX));
                now = *at;
                w.op(3).u16(delta as u16);
            }
            _ => {}
        }
    }
    w.out
}

/// A [`solo_device`] script replaying what the central wrote in `trace`.
fn device_script(trace: &[Trace]) -> Vec<u8> {
    let mut w = ScriptWriter::default();
    let mut now = Millis::ZERO;
    for t in trace {
        match t {
            Trace::Connected => {
                w.op(0);
            }
            Trace::Dropped => {
                w.op(1);
            }
            Trace::Restarted => {
                w.op(5);
            }
            Trace::ToDevice(bytes) => {
                w.bytes(2, bytes);
            }
            Trace::Time(at) => {
                let delta = at.0.saturating_sub(now.0).min(u64::from(u16::MAX));
                now = *at;
                w.op(3).u16(delta as u16);
            }
            _ => {}
        }
    }
    w.out
}
