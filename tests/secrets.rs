//! Secrets never reach `Debug` output: the EnOS device secret, the signed MQTT password, a
//! broker login, and the CONNECT packet that carries them, at every layer that holds them.
//! A log line or a test failure that prints one of these values would leak the login.

use otaweb::flow::enos::{EnosFlow, EnosOptions};
use otaweb::flow::mqtt::{ConnectOptions, MqttSession, SessionConfig};
use otaweb::flow::Flow;
use otaweb::image::manifest::FlowKind;
use otaweb::wire::enos::{DeviceId, SecretCredentials};
use otaweb::wire::mqtt::PacketRepr;
use otaweb::Millis;

const SECRET: &str = "device-secret-do-not-print";

/// Whether `text` shows `value` as text or as the Debug list of its bytes.
fn shows(text: &str, value: &[u8]) -> bool {
    let as_list = format!("{value:?}");
    let inner = &as_list[1..as_list.len() - 1];
    core::str::from_utf8(value).is_ok_and(|v| text.contains(v)) || text.contains(inner)
}

/// Every packet `flow` has queued, each whole.
fn drain(flow: &mut impl Flow) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while let Some(t) = flow.poll_transmit(&mut buf) {
        out.push(buf.split_off(buf.len() - t.len));
    }
    out
}

#[test]
fn the_enos_secret_and_its_signed_password_stay_out_of_debug_output() {
    let device = DeviceId::new("pk-demo", "dk-demo").unwrap();
    let secret = SecretCredentials::new(device.clone(), SECRET);
    let signed = secret.sign(1_700_000_000_000);
    assert!(!shows(&format!("{secret:?}"), SECRET.as_bytes()));
    assert!(!shows(&format!("{signed:?}"), signed.password.as_bytes()));

    let mut flow =
        EnosFlow::new(device, &signed, "1.0", EnosOptions::new(FlowKind::Gadget)).expect("flow");
    flow.handle_connected(Millis(0));
    // The CONNECT is queued now: the flow's Debug must not print its bytes.
    let before = format!("{flow:?}");
    assert!(!shows(&before, signed.password.as_bytes()), "{before}");
    let sent = drain(&mut flow);
    let PacketRepr::Connect(connect) = PacketRepr::parse_bytes(&sent[0]).expect("CONNECT") else {
        panic!("the first packet is CONNECT: {sent:?}")
    };
    assert_eq!(connect.password, Some(signed.password.as_bytes()));
    let repr = format!("{connect:?}");
    assert!(!shows(&repr, signed.password.as_bytes()), "{repr}");
    assert!(
        repr.contains("<hidden>") && repr.contains("dk-demo&pk-demo"),
        "{repr}"
    );
}

#[test]
fn a_broker_login_stays_out_of_debug_output() {
    let password = b"broker-password-do-not-print";
    let options = ConnectOptions::new("client-1").with_login("user", password.to_vec());
    let text = format!("{options:?}");
    assert!(
        !shows(&text, password) && text.contains("<hidden>"),
        "{text}"
    );

    let mut session = MqttSession::new(options, SessionConfig::default()).expect("session");
    session.handle_connected(Millis(0));
    let queued = format!("{session:?}");
    assert!(!shows(&queued, password), "{queued}");
    let sent = drain(&mut session);
    assert!(
        shows(&format!("{:?}", sent[0]), password),
        "the CONNECT does carry it"
    );
    let PacketRepr::Connect(connect) = PacketRepr::parse_bytes(&sent[0]).expect("CONNECT") else {
        panic!("the first packet is CONNECT")
    };
    assert!(!shows(
        &format!("{:?}", PacketRepr::Connect(connect)),
        password
    ));
}
