//! Property tests of the wire codecs and image formats: round trips of valid values, and
//! decoders of peer input fed arbitrary bytes and truncated encodings (Ok or a typed Err,
//! never a panic).
#![cfg(not(target_arch = "wasm32"))]

use otaweb::image::dfu_bundle;
use otaweb::image::manifest::{Compression, FlowKind, Manifest, ManifestEntry, MicrochipEntry};
use otaweb::image::sifli::{CtrlPacket, ImageEntry, Record};
use otaweb::image::zlib;
use otaweb::wire::agt::{self, Limits, StreamId, TransactionId};
use otaweb::wire::agt_proto::{self, ComponentSignature, ControlEnvelope};
use otaweb::wire::dfu::Message;
use otaweb::wire::enos::{self, DeviceRequest, Firmware, MessageId, OtaTopic, ReplyCode};
use otaweb::wire::mqtt::{
    self, ConnackCode, ConnackRepr, ConnectRepr, PacketId, PacketRepr, PublishRepr, QoS, QosPid,
    SubackCode, SubackRepr, SubscribeRepr, Subscription, UnsubscribeRepr,
};
use otaweb::wire::sifli::{self, Category};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..2048)
}

fn text() -> impl Strategy<Value = String> {
    bytes().prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

// ---------------------------------------------------------------------------------------
// MQTT
// ---------------------------------------------------------------------------------------

const TOPIC: &str = "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,3}";
const FILTER: &str = "([a-z0-9]{1,8}|\\+)(/([a-z0-9]{1,8}|\\+)){0,3}(/#)?";

fn packet_id() -> impl Strategy<Value = PacketId> {
    (1u16..).prop_map(|v| PacketId::new(v).unwrap())
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]
}

/// Owned parts of an MQTT packet; `repr` borrows them.
#[derive(Clone, Debug)]
enum MqttCase {
    Connect {
        client_id: String,
        clean: bool,
        keep_alive: u16,
        username: Option<String>,
        password: Option<Vec<u8>>,
    },
    Connack(bool, u8),
    Publish {
        topic: String,
        pid: Option<PacketId>,
        dup: bool,
        retain: bool,
        payload: Vec<u8>,
    },
    Puback(PacketId),
    Subscribe(PacketId, Vec<(String, QoS)>),
    Suback(PacketId, Vec<Option<QoS>>),
    Unsubscribe(PacketId, Vec<String>),
    Unsuback(PacketId),
    Pingreq,
    Pingresp,
    Disconnect,
}

impl MqttCase {
    fn repr(&self) -> PacketRepr<'_> {
        match self {
            MqttCase::Connect {
                client_id,
                clean,
                keep_alive,
                username,
                password,
            } => PacketRepr::Connect(ConnectRepr {
                client_id,
                clean_session: *clean || client_id.is_empty(),
                keep_alive: *keep_alive,
                username: username.as_deref(),
                password: if username.is_some() {
                    password.as_deref()
                } else {
                    None
                },
            }),
            MqttCase::Connack(present, code) => {
                let code = ConnackCode::from_u8(*code).unwrap();
                PacketRepr::Connack(ConnackRepr {
                    session_present: *present && code == ConnackCode::Accepted,
                    code,
                })
            }
            MqttCase::Publish {
                topic,
                pid,
                dup,
                retain,
                payload,
            } => PacketRepr::Publish(PublishRepr {
                topic,
                qos: pid.map_or(QosPid::AtMostOnce, QosPid::AtLeastOnce),
                dup: *dup && pid.is_some(),
                retain: *retain,
                payload,
            }),
            MqttCase::Puback(id) => PacketRepr::Puback(*id),
            MqttCase::Subscribe(id, filters) => PacketRepr::Subscribe(SubscribeRepr {
                packet_id: *id,
                filters: filters
                    .iter()
                    .map(|(filter, qos)| Subscription { filter, qos: *qos })
                    .collect(),
            }),
            MqttCase::Suback(id, codes) => PacketRepr::Suback(SubackRepr {
                packet_id: *id,
                codes: codes
                    .iter()
                    .map(|c| c.map_or(SubackCode::Failure, SubackCode::Granted))
                    .collect(),
            }),
            MqttCase::Unsubscribe(id, filters) => PacketRepr::Unsubscribe(UnsubscribeRepr {
                packet_id: *id,
                filters: filters.iter().map(String::as_str).collect(),
            }),
            MqttCase::Unsuback(id) => PacketRepr::Unsuback(*id),
            MqttCase::Pingreq => PacketRepr::Pingreq,
            MqttCase::Pingresp => PacketRepr::Pingresp,
            MqttCase::Disconnect => PacketRepr::Disconnect,
        }
    }
}

fn mqtt_case() -> impl Strategy<Value = MqttCase> {
    prop_oneof![
        (
            "[a-zA-Z0-9]{0,23}",
            any::<bool>(),
            any::<u16>(),
            proptest::option::of("[ -~]{0,40}"),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        )
            .prop_map(|(client_id, clean, keep_alive, username, password)| {
                MqttCase::Connect {
                    client_id,
                    clean,
                    keep_alive,
                    username,
                    password,
                }
            }),
        (any::<bool>(), 0u8..6).prop_map(|(p, c)| MqttCase::Connack(p, c)),
        (
            TOPIC,
            proptest::option::of(packet_id()),
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..512),
        )
            .prop_map(|(topic, pid, dup, retain, payload)| MqttCase::Publish {
                topic,
                pid,
                dup,
                retain,
                payload,
            }),
        packet_id().prop_map(MqttCase::Puback),
        (
            packet_id(),
            proptest::collection::vec((FILTER, qos()), 1..5)
        )
            .prop_map(|(id, f)| MqttCase::Subscribe(id, f)),
        (
            packet_id(),
            proptest::collection::vec(proptest::option::of(qos()), 1..5)
        )
            .prop_map(|(id, c)| MqttCase::Suback(id, c)),
        (packet_id(), proptest::collection::vec(FILTER, 1..5))
            .prop_map(|(id, f)| MqttCase::Unsubscribe(id, f)),
        packet_id().prop_map(MqttCase::Unsuback),
        Just(MqttCase::Pingreq),
        Just(MqttCase::Pingresp),
        Just(MqttCase::Disconnect),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mqtt_round_trip(case in mqtt_case()) {
        let repr = case.repr();
        let mut buf = Vec::new();
        let len = repr.append_to(&mut buf).unwrap();
        prop_assert_eq!(len, buf.len());
        prop_assert_eq!(PacketRepr::parse_bytes(&buf), Ok(repr.clone()));
        // Every proper prefix is refused: the fixed header states the length.
        for cut in 0..buf.len() {
            prop_assert!(PacketRepr::parse_bytes(&buf[..cut]).is_err(), "prefix {cut} of {buf:?}");
        }
        // The stream decoder splits it back out of arbitrary chunking.
        let mut decoder = mqtt::Decoder::new(buf.len());
        for chunk in buf.chunks(7) {
            decoder.push(chunk);
        }
        prop_assert_eq!(decoder.next_packet(), Some(Ok(buf.clone())));
        prop_assert_eq!(decoder.next_packet(), None);
    }

    #[test]
    fn mqtt_arbitrary_bytes(data in bytes()) {
        if let Ok(repr) = PacketRepr::parse_bytes(&data) {
            // Whatever decodes re-encodes to a packet that decodes the same.
            let mut buf = Vec::new();
            repr.append_to(&mut buf).unwrap();
            prop_assert_eq!(PacketRepr::parse_bytes(&buf), Ok(repr));
        }
        let _ = mqtt::decode_remaining_len(&data);
        let mut decoder = mqtt::Decoder::new(1024);
        decoder.push(&data);
        while let Some(packet) = decoder.next_packet() {
            if let Ok(packet) = packet {
                let _ = PacketRepr::parse_bytes(&packet);
            }
        }
    }

    #[test]
    fn mqtt_remaining_len_round_trip(value in 0usize..=mqtt::MAX_REMAINING_LEN) {
        let (buf, n) = mqtt::encode_remaining_len(value).unwrap();
        prop_assert_eq!(n, mqtt::remaining_len_size(value));
        prop_assert_eq!(mqtt::decode_remaining_len(&buf[..n]), Ok((value, n)));
    }
}

// ---------------------------------------------------------------------------------------
// SiFli serial frames and DFU messages
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn sifli_fragment_reassemble(
        category in any::<u8>(),
        payload in proptest::collection::vec(any::<u8>(), 0..3000),
        value_size in 20usize..300,
    ) {
        let mut fragmenter =
            sifli::Fragmenter::new(Category(category), &payload[..], value_size).unwrap();
        let mut reassembler = sifli::Reassembler::new(4096);
        let count = fragmenter.frame_count();
        let mut done = None;
        let mut frames = 0;
        let mut buf = Vec::new();
        while let Some(n) = fragmenter.emit_next(&mut buf) {
            prop_assert!(n <= value_size);
            prop_assert!(done.is_none());
            frames += 1;
            if count == 1 {
                // A complete frame states its length: every proper prefix is refused.
                for cut in 0..buf.len() {
                    prop_assert!(sifli::Frame::new_checked(&buf[..cut]).is_err(), "prefix {cut}");
                    prop_assert!(sifli::Reassembler::new(4096).push(&buf[..cut]).is_err());
                }
            }
            done = reassembler.push(&buf).unwrap();
            buf.clear();
        }
        prop_assert_eq!(frames, count);
        let done = done.unwrap();
        prop_assert_eq!(done.category, Category(category));
        prop_assert_eq!(done.payload, payload);
    }

    #[test]
    fn sifli_frame_arbitrary_bytes(data in bytes()) {
        if let Ok(frame) = sifli::Frame::new_checked(&data[..]) {
            if let Ok(repr) = sifli::FrameRepr::parse(&frame) {
                let mut out = vec![0u8; repr.buffer_len()];
                repr.emit(&mut sifli::Frame::new_unchecked(&mut out[..])).unwrap();
                let again = sifli::Frame::new_checked(&out[..]).unwrap();
                prop_assert_eq!(sifli::FrameRepr::parse(&again).unwrap(), repr);
            }
        }
        let mut reassembler = sifli::Reassembler::new(4096);
        let _ = reassembler.push(&data);
        for chunk in data.chunks(37) {
            let _ = reassembler.push(chunk);
        }
    }

    #[test]
    fn dfu_message_arbitrary(id in 0u16..48, data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut bytes = Vec::with_capacity(4 + data.len());
        bytes.extend_from_slice(&id.to_le_bytes());
        bytes.extend_from_slice(&u16::try_from(data.len()).unwrap().to_le_bytes());
        bytes.extend_from_slice(&data);
        if let Ok(message) = Message::decode(&bytes) {
            let encoded = message.to_vec().unwrap();
            prop_assert_eq!(Message::decode(&encoded).unwrap(), message);
            for cut in 0..encoded.len() {
                prop_assert!(Message::decode(&encoded[..cut]).is_err(), "prefix {cut} of {encoded:?}");
            }
        }
        for cut in 0..bytes.len() {
            let _ = Message::decode(&bytes[..cut]);
        }
    }

    #[test]
    fn dfu_message_arbitrary_bytes(data in bytes()) {
        let _ = Message::decode(&data);
    }
}

// ---------------------------------------------------------------------------------------
// Alexa Gadgets transport and protobuf
// ---------------------------------------------------------------------------------------

fn stream() -> impl Strategy<Value = StreamId> {
    prop_oneof![
        Just(StreamId::Control),
        Just(StreamId::Ota),
        Just(StreamId::Alexa)
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn agt_fragment_reassemble(
        stream in stream(),
        tid in 0u8..16,
        ack in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..3000),
        packet_size in 20u16..300,
    ) {
        let limits = Limits { packet_size, max_transaction_size: 0xFFFF };
        let tid = TransactionId::new(tid).unwrap();
        let mut fragmenter =
            agt::Fragmenter::new(stream, tid, &payload[..], ack, limits).unwrap();
        let mut reassembler = agt::Reassembler::new(0xFFFF);
        let count = fragmenter.packet_count();
        let mut done = None;
        let mut packets = 0;
        let mut buf = Vec::new();
        while let Some(n) = fragmenter.emit_next(&mut buf) {
            prop_assert!(n <= usize::from(packet_size));
            prop_assert!(done.is_none());
            packets += 1;
            // Every packet states its payload length: every proper prefix is refused (checked
            // on the first packet, to keep the run short).
            for cut in (0..buf.len()).filter(|_| packets == 1) {
                prop_assert!(agt::TransportPacket::new_checked(&buf[..cut]).is_err(), "prefix {cut}");
                prop_assert!(agt::Reassembler::new(0xFFFF).push(&buf[..cut]).is_err());
            }
            match reassembler.push(&buf).unwrap() {
                agt::Received::Transaction(c) => done = Some(c),
                agt::Received::Partial => {}
                agt::Received::Ack(a) => prop_assert!(false, "unexpected ack {a:?}"),
            }
            buf.clear();
        }
        prop_assert_eq!(packets, count);
        let done = done.unwrap();
        prop_assert_eq!(done.stream, stream);
        prop_assert_eq!(done.transaction_id, tid);
        prop_assert_eq!(done.ack_requested, ack);
        prop_assert_eq!(done.payload, payload);
    }

    #[test]
    fn agt_arbitrary_bytes(data in bytes()) {
        let _ = agt::is_pv_packet(&data);
        if let Ok(pv) = agt::PvPacket::new_checked(&data[..]) {
            let _ = agt::PvRepr::parse(&pv);
        }
        if let Ok(packet) = agt::TransportPacket::new_checked(&data[..]) {
            let _ = agt::TransportRepr::parse(&packet);
            let _ = agt::AckRepr::parse(&packet);
        }
        let mut reassembler = agt::Reassembler::new(0xFFFF);
        let _ = reassembler.push(&data);
        for chunk in data.chunks(23) {
            if let Err(e) = reassembler.push(chunk) {
                let _ = e.nack();
            }
        }
        let _ = agt_proto::decode_control(&data);
        let _ = agt_proto::peek_directive_header(&data);
        let _ = agt_proto::decode_discover_directive(&data);
        let _ = agt_proto::decode_discover_response(&data);
    }

    #[test]
    fn agt_text_arbitrary(text in text()) {
        let _ = agt_proto::parse_segment_signature(&text);
        let _ = ComponentSignature::parse(&text);
    }

    #[test]
    fn agt_control_round_trip(
        name in "[a-z]{1,15}",
        offset in any::<u32>(),
        size in any::<u32>(),
        digest in any::<[u8; 32]>(),
    ) {
        // 64 hex digits of either case name the digest itself.
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        prop_assert_eq!(agt_proto::parse_segment_signature(&hex), Ok(digest));
        prop_assert_eq!(agt_proto::parse_segment_signature(&hex.to_uppercase()), Ok(digest));
        // The Base64 form we send (of SHA-256 of the segment) parses back.
        let signature = agt_proto::segment_signature(&digest);
        prop_assert!(agt_proto::parse_segment_signature(&signature).is_ok());
        for envelope in [
            ControlEnvelope::get_device_information(),
            ControlEnvelope::get_device_features(),
            ControlEnvelope::update_component_segment(&name, offset, size, &signature),
        ] {
            prop_assert_eq!(agt_proto::decode_control(&envelope.to_bytes()), Ok(envelope));
        }
        let component = ComponentSignature { sha256: digest, ecdsa: None };
        prop_assert_eq!(ComponentSignature::parse(&component.encode()), Ok(component));
    }

    #[test]
    fn agt_discovery_round_trip(
        message_id in "[ -~]{1,40}",
        endpoint in "[a-zA-Z0-9]{1,20}",
        friendly in "[ -~]{1,20}",
        version in "[0-9]{1,5}",
    ) {
        let directive = agt_proto::DiscoverDirective::new(&message_id);
        let bytes = directive.to_bytes();
        prop_assert_eq!(agt_proto::decode_discover_directive(&bytes), Ok(directive));
        let event = agt_proto::DiscoverResponseEvent::new(&endpoint, &friendly, &version);
        let decoded = agt_proto::decode_discover_response(&event.to_bytes()).unwrap();
        prop_assert_eq!(decoded.firmware_version(), Some(version.as_str()));
        prop_assert_eq!(decoded, event);
    }
}

// ---------------------------------------------------------------------------------------
// EnOS JSON
// ---------------------------------------------------------------------------------------

fn firmware() -> impl Strategy<Value = Firmware> {
    (
        "[ -~]{1,20}",
        "[0-9a-f]{32}",
        prop_oneof![Just("md5".to_string()), Just("sha256".to_string())],
        "[ -~]{1,40}",
        any::<u64>(),
    )
        .prop_map(
            |(version, sign, sign_method, file_url, file_size)| Firmware {
                version,
                sign,
                sign_method,
                file_url,
                file_size,
            },
        )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn enos_arbitrary_bytes(data in bytes()) {
        let _ = enos::UpgradeCommand::parse(&data);
        let _ = enos::Reply::parse(&data);
        let _ = enos::VersionsReply::parse(&data);
        for topic in OtaTopic::ALL {
            let _ = DeviceRequest::parse(topic, &data);
        }
        let _ = enos::MqttCredentials::from_json(&data);
        let _ = enos::file_session_id(&data);
    }

    #[test]
    fn enos_arbitrary_text(text in text()) {
        let _ = enos::TopicRef::parse(&text);
        let _ = text.parse::<enos::Step>();
        let _ = enos::FirmwareSign::parse("md5", &text);
        let _ = enos::FirmwareSign::parse("sha256", &text);
    }

    #[test]
    fn enos_round_trip(id in "[a-zA-Z0-9]{1,12}", fw in firmware(), code in any::<i64>(), message in proptest::option::of("[ -~]{0,40}"), version in "[ -~]{1,20}") {
        let mid = MessageId(id);
        let upgrade = enos::UpgradeCommand::parse(&enos::upgrade_command(&mid, &fw)).unwrap();
        prop_assert_eq!(upgrade.id.as_ref(), Some(&mid));
        prop_assert_eq!(&upgrade.firmware, &fw);

        let reply = enos::Reply::parse(&enos::reply(Some(&mid), ReplyCode(code), message.as_deref())).unwrap();
        prop_assert_eq!(reply.id.as_ref(), Some(&mid));
        prop_assert_eq!(reply.code, ReplyCode(code));
        prop_assert_eq!(reply.message, message);

        let inform = DeviceRequest::parse(OtaTopic::Inform, &enos::inform_request(&mid, &version)).unwrap();
        prop_assert_eq!(inform, DeviceRequest::Inform { id: Some(mid.clone()), version });

        let get = DeviceRequest::parse(OtaTopic::GetVersion, &enos::get_version_request(&mid)).unwrap();
        prop_assert_eq!(get, DeviceRequest::GetVersion { id: Some(mid.clone()) });

        let versions = enos::VersionsReply::parse(&enos::get_version_reply(
            Some(&mid),
            ReplyCode::OK,
            std::slice::from_ref(&fw),
        ))
        .unwrap();
        prop_assert_eq!(versions.reply.id, Some(mid));
        prop_assert_eq!(versions.firmwares, vec![fw]);
    }

    #[test]
    fn enos_progress_round_trip(id in "[0-9]{1,12}", percent in 0u8..=100, desc in proptest::option::of("[ -~]{1,40}")) {
        let mid = MessageId(id);
        let step = enos::Step::percent(percent).unwrap();
        let progress = match desc {
            Some(d) => enos::Progress::with_desc(step, d),
            None => enos::Progress::new(step),
        };
        let parsed = DeviceRequest::parse(OtaTopic::Progress, &enos::progress_request(&mid, &progress)).unwrap();
        prop_assert_eq!(parsed, DeviceRequest::Progress { id: Some(mid), progress });
    }
}

// ---------------------------------------------------------------------------------------
// Image formats
// ---------------------------------------------------------------------------------------

fn manifest_entry() -> impl Strategy<Value = ManifestEntry> {
    (
        "[a-z][a-z0-9_-]{0,15}",
        prop_oneof![
            (1u32..100_000).prop_map(|v| (FlowKind::Gadget, v.to_string())),
            (0u8..100, 0u8..100, 0u8..100)
                .prop_map(|(a, b, c)| (FlowKind::Dfu, format!("{a}.{b}.{c}"))),
            (0u8..100, 0u8..100, 0u8..100)
                .prop_map(|(a, b, c)| (FlowKind::Enos, format!("{a}.{b}.{c}"))),
        ],
        "[a-z0-9/._-]{1,40}",
        // Manifests refuse sizes over 64 MiB.
        0u64..=(1 << 26),
        any::<[u8; 32]>(),
        proptest::option::of(any::<[u8; 16]>()),
        any::<bool>(),
    )
        .prop_map(
            |(name, (flow, version), url, size, sha256, md5, zlib)| ManifestEntry {
                name,
                flow,
                version,
                url,
                size,
                sha256,
                md5,
                signature: None,
                compression: zlib.then_some(Compression::Zlib),
            },
        )
}

fn ctrl_packet() -> impl Strategy<Value = CtrlPacket> {
    (
        any::<u8>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<[u8; 32]>(),
        any::<u16>(),
        proptest::collection::vec((any::<u8>(), any::<u32>(), any::<u16>(), any::<u8>()), 0..4),
    )
        .prop_map(|(dfu_id, hw, sdk, fw, key, blk, images)| CtrlPacket {
            dfu_id,
            hw_version: hw,
            sdk_version: sdk,
            fw_version: fw,
            session_key: key,
            blk_size: blk,
            images: images
                .into_iter()
                .map(|(fill, length, flags, img_id)| ImageEntry {
                    sig: [fill; 256],
                    length,
                    flags,
                    img_id,
                })
                .collect(),
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn manifest_round_trip(images in proptest::collection::vec(manifest_entry(), 0..4)) {
        let manifest = Manifest { images };
        let json = manifest.to_json();
        prop_assert_eq!(Manifest::parse(&json), Ok(manifest), "{}", json);
    }

    #[test]
    fn manifest_arbitrary_text(text in text()) {
        let _ = Manifest::parse(&text);
        let _ = ManifestEntry::parse_json(&text);
        let _ = MicrochipEntry::parse_manifest(&text);
    }

    #[test]
    fn ctrl_packet_round_trip(packet in ctrl_packet()) {
        let plain = packet.to_plain().unwrap();
        prop_assert_eq!(plain.len(), packet.plain_len());
        prop_assert_eq!(CtrlPacket::parse_plain(&plain), Ok(packet));
        for cut in 0..plain.len() {
            prop_assert!(CtrlPacket::parse_plain(&plain[..cut]).is_err(), "prefix {cut}");
        }
    }

    #[test]
    fn record_round_trip(hash in any::<[u8; 32]>(), offset in 0u32..(1 << 31), block in proptest::collection::vec(any::<u8>(), 1..600)) {
        let record = Record { hash: &hash, offset, block: &block };
        let bytes = record.to_bytes();
        let parsed = Record::parse(&bytes).unwrap();
        prop_assert_eq!(parsed.hash, &hash);
        prop_assert_eq!(parsed.offset, offset);
        prop_assert_eq!(parsed.block, &block[..]);
        // A record's header alone, or less, is refused.
        for cut in 0..=36 {
            prop_assert!(Record::parse(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn image_arbitrary_bytes(data in bytes()) {
        let _ = CtrlPacket::parse_plain(&data);
        if let Ok(record) = Record::parse(&data) {
            prop_assert_eq!(record.to_bytes(), data.clone());
        }
        let _ = zlib::inflate(&data, 4096);
        let _ = dfu_bundle::read(&data);
    }

    #[test]
    fn zlib_round_trip(data in proptest::collection::vec(any::<u8>(), 0..2048), level in 0u8..=10) {
        let packed = zlib::compress(&data, level);
        prop_assert_eq!(zlib::inflate(&packed, data.len()), Ok(data.clone()));
        // Every prefix ending in the last 8 bytes (the final block and the Adler-32), and
        // about 32 spread over the rest, to keep the run short.
        let step = (packed.len() / 32).max(1);
        let tail = packed.len().saturating_sub(8);
        for cut in (0..tail).step_by(step).chain(tail..packed.len()) {
            prop_assert!(zlib::inflate(&packed[..cut], data.len()).is_err(), "prefix {cut}");
        }
        if !data.is_empty() {
            prop_assert!(zlib::inflate(&packed, data.len() - 1).is_err());
        }
    }
}
