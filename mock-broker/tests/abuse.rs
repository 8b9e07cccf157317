//! The broker against clients that misbehave, and clients that are merely different: each gets
//! what real DPS would give it, within bounded memory, and leaves a record of why it was
//! turned away.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use dps_mock_broker::record::Connack;
use dps_mock_broker::{BrokerHandle, ConnectionLimits, MockBroker, TestPki, TlsVersions};
use ntex::util::{ByteString, Bytes};
use serde_json::json;

const TLS12: &rustls::SupportedProtocolVersion = &rustls::version::TLS12;
const TLS13: &rustls::SupportedProtocolVersion = &rustls::version::TLS13;

fn start(
    tweak: impl FnOnce(dps_mock_broker::BrokerBuilder) -> dps_mock_broker::BrokerBuilder,
) -> (Arc<BrokerHandle>, Arc<TestPki>) {
    let pki = Arc::new(TestPki::generate().unwrap());
    let broker = tweak(MockBroker::builder().pki(pki.clone()).retry_after(0))
        .start()
        .unwrap();
    (Arc::new(broker), pki)
}

fn raw(broker: &BrokerHandle) -> Raw {
    Raw::connect(broker.addr(), broker.ca_pem().unwrap(), &[TLS12, TLS13]).unwrap()
}

/// Issue 10, item 9: a client that finishes TLS and then sends no CONNECT, half of one, or one
/// byte at a time is disconnected at the CONNECT deadline, with a record that says so. (Such
/// clients used to stay connected indefinitely.)
#[test]
fn a_client_without_a_whole_connect_is_disconnected_at_the_deadline() {
    let deadline = Duration::from_millis(300);
    let (broker, _) = start(|b| b.connect_timeout(deadline));
    let connect = connect_bytes(b"MQTT", 4, "slow-dev");

    // Nothing at all.
    let (_, closed) = raw(&broker).read_until_closed();
    assert!(closed, "silent client still connected");
    // Half a packet.
    let mut half = raw(&broker);
    half.send(&connect[..connect.len() / 2]).unwrap();
    assert!(
        half.read_until_closed().1,
        "half-CONNECT client still connected"
    );
    // A byte every 100 ms: the whole CONNECT would take seconds.
    let mut trickle = raw(&broker);
    let mut cut = false;
    for byte in &connect {
        if trickle.send(std::slice::from_ref(byte)).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        cut || trickle.read_until_closed().1,
        "trickling client never cut"
    );

    let records = broker.wait_until(LONG, |r| r.len() == 3).unwrap();
    for record in &records {
        assert_eq!(
            record.ended.as_deref(),
            Some("no complete CONNECT within 300ms"),
            "{record:?}"
        );
        assert_eq!(record.connack, Connack::Dropped);
    }
}

/// Issue 10, item 8: a CONNECT for MQTT 3.1 (what paho retries with after a refusal) or MQTT 5
/// gets CONNACK 0x01, "unacceptable protocol version", as MQTT 3.1.1 asks, and a record.
#[test]
fn another_mqtt_version_gets_connack_1_and_a_record() {
    let (broker, _) = start(|b| b);
    for (protocol, level, client_id) in [(&b"MQIsdp"[..], 3, "paho-31"), (b"MQTT", 5, "v5-dev")] {
        let mut client = raw(&broker);
        client
            .send(&connect_bytes(protocol, level, client_id))
            .unwrap();
        let (got, closed) = client.read_until_closed();
        assert_eq!(got, vec![0x20, 0x02, 0x00, 0x01], "{client_id}");
        assert!(closed);
    }
    let records = broker.wait_until(LONG, |r| r.len() == 2).unwrap();
    assert_eq!(records[0].client_id, "paho-31");
    assert!(
        matches!(&records[0].connack, Connack::Refused { code: 1, reason } if reason.contains("MQIsdp level 3")),
        "{:?}",
        records[0].connack
    );
    assert!(
        matches!(&records[1].connack, Connack::Refused { code: 1, reason } if reason.contains("MQTT level 5"))
    );
}

/// Issue 10, item 8: the Embedded C SDK sends a zero-length register body, and a body without
/// `registrationId` is legal: both register the device the clientId names. Non-objects are
/// refused with a 400 that says what was wrong.
#[test]
fn an_empty_register_body_registers_the_client() {
    let (broker, pki) = start(|b| b);
    let shared = broker.clone();
    run(async move {
        let broker = &*shared;
        let options =
            Options::new(broker, "embedded-c").identity(pki.device("embedded-c").unwrap());
        let mut client = connect(broker, options).await.unwrap();
        client.subscribe().await;
        for (body, status) in [
            (&b""[..], 202),
            (b"{}", 202),
            (br#"{"payload":{"modelId":"dtmi:x;1"}}"#, 202),
            (b"null", 400),
            (b"[]", 400),
        ] {
            client.publish(&register_topic("1"), body).await;
            let (topic, answer) = client.next(LONG).await.unwrap();
            let got = dps_messages::response::ResponseTopic::parse(&topic)
                .unwrap()
                .status;
            assert_eq!(got, status, "{:?}: {answer}", String::from_utf8_lossy(body));
            if status == 400 {
                assert!(
                    answer["message"]
                        .as_str()
                        .unwrap()
                        .contains("must be a JSON object"),
                    "{answer}"
                );
            }
        }
    });
}

/// Issue 10, item 10: a device that floods is disconnected with a recorded reason, and its
/// record keeps a bounded prefix of each payload with its full length.
#[test]
fn a_flooding_device_is_disconnected_and_its_record_stays_small() {
    let limits = ConnectionLimits {
        max_publishes: 5,
        ..ConnectionLimits::default()
    };
    let (broker, pki) = start(|b| b.limits(limits));
    let shared = broker.clone();
    run(async move {
        let broker = &*shared;
        let options = Options::new(broker, "flood").identity(pki.device("flood").unwrap());
        let mut client = connect(broker, options).await.unwrap();
        let junk = Bytes::from(vec![b'j'; 64 * 1024]);
        for _ in 0..10 {
            let sent = client
                .sink
                .publish(ByteString::from_static("junk/topic"))
                .send_at_least_once(junk.clone())
                .await;
            if sent.is_err() {
                break;
            }
        }
        assert!(client.closed(LONG).await, "the flood was not cut");
    });
    let records = broker
        .wait_until(LONG, |r| r.first().is_some_and(|c| c.is_closed()))
        .unwrap();
    let record = &records[0];
    assert_eq!(
        record.ended.as_deref(),
        Some("flood: more than 5 PUBLISH packets on one connection")
    );
    let publishes: Vec<_> = record
        .requests()
        .iter()
        .map(|request| (request.body.len(), request.body_len))
        .collect();
    assert_eq!(publishes, vec![(4096, 64 * 1024); 5]);
}

/// A message over DPS's 96 KB limit ends the connection, before its payload is kept anywhere.
#[test]
fn a_message_over_the_dps_limit_ends_the_connection() {
    let (broker, pki) = start(|b| b);
    let shared = broker.clone();
    run(async move {
        let broker = &*shared;
        let options = Options::new(broker, "big").identity(pki.device("big").unwrap());
        let mut client = connect(broker, options).await.unwrap();
        let body = json!({"registrationId": "big", "payload": "x".repeat(100 * 1024)});
        let _ = client
            .sink
            .publish(ByteString::from(register_topic("1")))
            .send_at_least_once(Bytes::from(body.to_string()))
            .await;
        assert!(client.closed(LONG).await);
    });
    let records = broker
        .wait_until(LONG, |r| r.first().is_some_and(|c| c.is_closed()))
        .unwrap();
    assert!(
        records[0]
            .ended
            .as_deref()
            .is_some_and(|why| why.contains("over DPS's 98304-byte message limit")),
        "{:?}",
        records[0].ended
    );
    assert!(records[0].publishes().is_empty());
}

/// Issue 10, item 11: the TLS versions are a choice, so a test can offer only 1.2 (what real
/// DPS requires at least) or only 1.3.
#[test]
fn the_tls_versions_offered_are_a_choice() {
    for (offered, accepted, refused) in [
        (TlsVersions::Tls12, TLS12, TLS13),
        (TlsVersions::Tls13, TLS13, TLS12),
    ] {
        let (broker, _) = start(|b| b.tls_versions(offered));
        let ca = broker.ca_pem().unwrap();
        assert!(
            Raw::connect(broker.addr(), ca, &[accepted]).is_ok(),
            "{offered:?}"
        );
        assert!(
            Raw::connect(broker.addr(), ca, &[refused]).is_err(),
            "{offered:?}"
        );
        assert_eq!(
            Raw::connect(broker.addr(), ca, &[TLS12, TLS13])
                .unwrap()
                .tls
                .conn
                .protocol_version(),
            Some(accepted.version)
        );
    }
}
