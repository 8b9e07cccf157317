//! The mock broker driven by a real MQTT client over TLS and WebSocket.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use dps_messages::SymmetricKey;
use dps_messages::response::ResponseTopic;
use dps_mock_broker::record::Connack;
use dps_mock_broker::script::{ConnectStep, DeviceScript, Malformation, Step};
use dps_mock_broker::{BrokerHandle, MockBroker, Script, TestPki};
use ntex_mqtt::v3::client::ClientError;
use ntex_mqtt::v3::codec::{ConnectAckReason, SubscribeReturnCode};
use serde_json::json;

fn pki() -> Arc<TestPki> {
    Arc::new(TestPki::generate().unwrap())
}

fn broker_with(script: Script) -> (Arc<BrokerHandle>, Arc<TestPki>) {
    let pki = pki();
    let broker = MockBroker::builder()
        .pki(pki.clone())
        .retry_after(0)
        .symmetric_key("sas-dev", KEY)
        .script(script)
        .start()
        .unwrap();
    (Arc::new(broker), pki)
}

fn x509(broker: &BrokerHandle, pki: &TestPki, id: &str) -> Options {
    Options::new(broker, id).identity(pki.device(id).unwrap())
}

fn sas(broker: &BrokerHandle, id: &str, key: &str, expiry: u64) -> Options {
    let token =
        SymmetricKey::new(key)
            .unwrap()
            .sas_token(dps_mock_broker::DEFAULT_ID_SCOPE, id, expiry);
    Options::new(broker, id).password(token.to_string())
}

fn far_future() -> u64 {
    4_000_000_000
}

async fn register(client: &Client, id: &str, rid: &str, payload: Option<serde_json::Value>) {
    let mut body = json!({"registrationId": id});
    if let Some(p) = payload {
        body["payload"] = p;
    }
    client
        .publish(&register_topic(rid), body.to_string().as_bytes())
        .await;
}

fn refused_with(result: ConnectResult) -> ConnectAckReason {
    match result {
        Err(ClientError::Ack(ack)) => ack.return_code,
        Err(other) => panic!("expected a CONNACK refusal, got {other:?}"),
        Ok(_) => panic!("expected a CONNACK refusal, got a connection"),
    }
}

#[test]
fn default_script_over_tls_with_x509_registers_and_assigns() {
    let (broker, pki) = broker_with(Script::new());
    let shared = broker.clone();
    run(async move {
        let broker = &*shared;
        let mut client = connect(broker, x509(broker, &pki, "dev-1")).await.unwrap();
        assert_eq!(
            client.subscribe().await,
            vec![SubscribeReturnCode::Success(ntex_mqtt::QoS::AtLeastOnce)]
        );
        register(&client, "dev-1", "r1", Some(json!({"model": "x"}))).await;
        let (topic, body) = client.next(LONG).await.unwrap();
        let topic = ResponseTopic::parse(&topic).unwrap();
        assert_eq!(
            (
                topic.status,
                topic.rid.as_str(),
                topic.retry_after.as_deref()
            ),
            (202, "r1", Some("0"))
        );
        assert_eq!(body["status"], "assigning");
        let op = body["operationId"].as_str().unwrap().to_owned();

        client.publish(&poll_topic("r2", &op), b" ").await;
        let (topic, body) = client.next(LONG).await.unwrap();
        assert_eq!(ResponseTopic::parse(&topic).unwrap().status, 200);
        assert_eq!(body["status"], "assigned");
        assert_eq!(
            body["registrationState"]["assignedHub"],
            dps_mock_broker::DEFAULT_ASSIGNED_HUB
        );
        assert_eq!(body["registrationState"]["deviceId"], "dev-1");
        assert_eq!(body["registrationState"]["payload"], json!({"model": "x"}));
        client.sink.close();
        assert!(client.closed(LONG).await);
    });
    let records = broker
        .wait_until(LONG, |r| r.len() == 1 && r[0].is_closed())
        .unwrap();
    let r = &records[0];
    assert_eq!(r.transport, dps_mock_broker::record::Transport::Tls);
    assert_eq!(r.client_id, "dev-1");
    assert_eq!(
        r.username.as_deref(),
        Some(common::username(dps_mock_broker::DEFAULT_ID_SCOPE, "dev-1").as_str())
    );
    assert!(!r.password_present);
    assert!(r.clean_session);
    assert_eq!(r.peer_cert_cn.as_deref(), Some("dev-1"));
    assert_eq!(
        r.connack,
        Connack::Accepted {
            method: "x509".into()
        }
    );
    assert_eq!(r.subscriptions(), vec!["$dps/registrations/res/#"]);
    assert_eq!(r.publishes().len(), 2);
    assert_eq!(r.responses().len(), 2);
    assert!(r.publishes()[0].1.contains("\"model\""));
}

/// The PKI a broker made for itself mints devices it accepts, and `wait_for` waits for the
/// record from inside the async test that drives the device.
#[test]
fn the_handle_gives_its_pki_and_waits_without_blocking() {
    let broker = Arc::new(MockBroker::builder().retry_after(0).start().unwrap());
    let shared = broker.clone();
    run(async move {
        let broker = &*shared;
        let device = broker
            .pki()
            .expect("a generated PKI")
            .device("dev-1")
            .unwrap();
        let mut client = connect(broker, Options::new(broker, "dev-1").identity(device))
            .await
            .unwrap();
        client.subscribe().await;
        register(&client, "dev-1", "r1", None).await;
        assert!(client.next(LONG).await.is_some());
        let records = broker
            .wait_for(LONG, |r| {
                r.first().is_some_and(|c| !c.responses().is_empty())
            })
            .await
            .unwrap();
        assert_eq!(records[0].responses()[0].status(), Some(202));
        let short = std::time::Duration::from_millis(50);
        let timed_out = broker
            .wait_for(short, |r| r.len() > 1)
            .await
            .expect_err("no second connection: the wait ends at its timeout");
        assert_eq!(timed_out.after, short);
        assert_eq!(timed_out.seen.len(), 1, "it says what it saw");
    });
    // A broker given a server certificate of its own has no PKI to give.
    let pki = pki();
    let own = MockBroker::builder()
        .server_cert(pki.server.clone(), Some(pki.ca_pem().to_owned()))
        .start()
        .unwrap();
    assert!(own.pki().is_none());
}

/// A writer the test can read back: the record sink.
#[derive(Clone, Default)]
struct SharedSink(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn forget_ended_holds_live_connections_and_writes_ended_ones_out() {
    let pki = pki();
    let sink = SharedSink::default();
    let broker = Arc::new(
        MockBroker::builder()
            .pki(pki.clone())
            .forget_ended()
            .record_to(Box::new(sink.clone()))
            .start()
            .unwrap(),
    );
    let shared = broker.clone();
    run(async move {
        let broker = &*shared;
        let mut first = connect(broker, x509(broker, &pki, "dev-1")).await.unwrap();
        let second = connect(broker, x509(broker, &pki, "dev-2")).await.unwrap();
        first.subscribe().await;
        first.sink.close();
        assert!(first.closed(LONG).await);
        // dev-1 has left the broker's memory for the sink; dev-2, still connected, has not.
        // (The recorder notifies after writing, so the waiter sees both.)
        let written = || !sink.0.lock().unwrap().is_empty();
        let records = broker
            .wait_until(LONG, |r| r.len() == 1 && written())
            .unwrap();
        assert_eq!(records[0].client_id, "dev-2");
        assert_eq!(records[0].id, 1);

        let written = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = written
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{written}");
        assert_eq!(lines[0]["client_id"], "dev-1");
        assert_eq!(lines[0]["events"][0]["event"], "subscribe", "{written}");
        // Only now may dev-2 go (and be written out in turn).
        drop(second);
    });
}

#[test]
fn default_script_over_websocket_with_a_symmetric_key() {
    let (broker, _pki) = broker_with(Script::new());
    let shared = broker.clone();
    run(async move {
        let broker = &*shared;
        let options = sas(broker, "sas-dev", KEY, far_future()).via(Via::Wss);
        let mut client = connect(broker, options).await.unwrap();
        client.subscribe().await;
        register(&client, "sas-dev", "w1", None).await;
        let (topic, body) = client.next(LONG).await.unwrap();
        assert_eq!(ResponseTopic::parse(&topic).unwrap().status, 202);
        client
            .publish(
                &poll_topic("w2", body["operationId"].as_str().unwrap()),
                b" ",
            )
            .await;
        let (_, body) = client.next(LONG).await.unwrap();
        assert_eq!(body["status"], "assigned");
        assert!(body["registrationState"].get("payload").is_none());
    });
    let records = broker.records();
    assert_eq!(
        records[0].transport,
        dps_mock_broker::record::Transport::Wss
    );
    assert!(records[0].password_present);
    assert_eq!(
        records[0].connack,
        Connack::Accepted {
            method: "symmetric_key".into()
        }
    );
}

#[test]
fn websocket_rejects_other_paths_and_missing_subprotocol() {
    let (broker, _pki) = broker_with(Script::new());
    let addr = broker.ws_addr().unwrap();
    run(async move {
        let broker = &*broker;
        for (path, protocol) in [("/other", Some("mqtt")), ("/$iothub/websocket", None)] {
            let url = format!("wss://localhost:{}{path}", addr.port());
            let mut builder = ntex::ws::WsClient::builder(url.as_str());
            builder.address(addr);
            if let Some(p) = protocol {
                builder.protocols([p]);
            }
            let config = Options::new(broker, "x").tls();
            let client = builder
                .rustls(config)
                .build(ntex::SharedCfg::default())
                .await
                .unwrap();
            assert!(client.connect().await.is_err(), "{path} {protocol:?}");
        }
    });
}

#[test]
fn respond_steps_send_status_body_and_retry_after() {
    let script = Script::new().device(
        "dev",
        DeviceScript::new()
            .request(Step::respond(429).with_retry_after("7"))
            .request(Step::respond(401).with_body(json!({"errorCode": 401002, "message": "nope"})))
            .request(Step::respond(500).with_raw_body("not json").after_ms(20)),
    );
    let (broker, pki) = broker_with(script);
    let shared = broker.clone();
    run(async move {
        let broker = &*shared;
        let mut client = connect(broker, x509(broker, &pki, "dev")).await.unwrap();
        client.subscribe().await;
        for rid in ["a", "b", "c"] {
            register(&client, "dev", rid, None).await;
        }
        let (topic, _) = client.next(LONG).await.unwrap();
        let t = ResponseTopic::parse(&topic).unwrap();
        assert_eq!(
            (t.status, t.rid.as_str(), t.retry_after.as_deref()),
            (429, "a", Some("7"))
        );
        let (topic, body) = client.next(LONG).await.unwrap();
        assert_eq!(ResponseTopic::parse(&topic).unwrap().status, 401);
        assert_eq!(body, json!({"errorCode": 401002, "message": "nope"}));
        let (topic, raw) = client.next_raw(LONG).await.unwrap();
        assert_eq!(
            (ResponseTopic::parse(&topic).unwrap().status, &raw[..]),
            (500, &b"not json"[..])
        );
    });
}

#[test]
fn a_silent_step_answers_nothing_while_later_requests_are_answered() {
    let script = Script::new().device("dev", DeviceScript::new().request(Step::Silent));
    let (broker, pki) = broker_with(script);
    let shared = broker.clone();
    run(async move {
        let broker = &*shared;
        let mut client = connect(broker, x509(broker, &pki, "dev")).await.unwrap();
        client.subscribe().await;
        register(&client, "dev", "silent", None).await;
        register(&client, "dev", "answered", None).await;
        let (topic, _) = client.next(LONG).await.unwrap();
        assert_eq!(ResponseTopic::parse(&topic).unwrap().rid, "answered");
    });
    let records = broker.records();
    assert_eq!(records[0].publishes().len(), 2);
    assert_eq!(records[0].responses().len(), 1);
}

#[test]
fn a_close_step_closes_the_connection() {
    let script = Script::new().device(
        "dev",
        DeviceScript::new().request(Step::Close { delay_ms: 0 }),
    );
    let (broker, pki) = broker_with(script);
    let shared = broker.clone();
    run(async move {
        let broker = &*shared;
        let mut client = connect(broker, x509(broker, &pki, "dev")).await.unwrap();
        client.subscribe().await;
        register(&client, "dev", "r", None).await;
        assert!(client.closed(LONG).await);
    });
    let records = broker
        .wait_until(LONG, |r| r.first().is_some_and(|c| c.is_closed()))
        .unwrap();
    assert_eq!(
        records[0].ended.as_deref(),
        Some("closed by the broker (scripted)")
    );
}

#[test]
fn malformed_steps_reach_the_client_as_scripted() {
    let mut steps = DeviceScript::new();
    for what in [
        Malformation::BadJson,
        Malformation::NoRid,
        Malformation::WrongRid,
        Malformation::NonNumericStatus,
        Malformation::Oversized,
    ] {
        steps = steps.request(Step::Malformed { what });
    }
    let (broker, pki) = broker_with(Script::new().device("dev", steps));
    let shared = broker.clone();
    run(async move {
        let broker = &*shared;
        let mut client = connect(broker, x509(broker, &pki, "dev")).await.unwrap();
        client.subscribe().await;
        for i in 0..5 {
            register(&client, "dev", &format!("r{i}"), None).await;
        }
        let (topic, raw) = client.next_raw(LONG).await.unwrap();
        assert_eq!(ResponseTopic::parse(&topic).unwrap().rid, "r0");
        assert!(serde_json::from_slice::<serde_json::Value>(&raw).is_err());
        let (topic, _) = client.next_raw(LONG).await.unwrap();
        assert!(!topic.contains("$rid"));
        let (topic, _) = client.next_raw(LONG).await.unwrap();
        assert_eq!(ResponseTopic::parse(&topic).unwrap().rid, "r2-not-yours");
        let (topic, _) = client.next_raw(LONG).await.unwrap();
        assert!(topic.starts_with("$dps/registrations/res/abc/"));
        let (_, raw) = client.next_raw(LONG).await.unwrap();
        assert!(raw.len() > 256 * 1024);
    });
}

#[test]
fn connection_faults_refuse_delay_drop_and_fail_suback() {
    let script = Script::new().device(
        "dev",
        DeviceScript::new()
            .connect(ConnectStep::Refuse { code: 3 })
            .connect(ConnectStep::DropBeforeConnack)
            .connect(ConnectStep::DelayConnack { ms: 50 })
            .connect(ConnectStep::FailSuback)
            .connect(ConnectStep::CloseAfterConnack)
            .connect(ConnectStep::CloseAfterSuback),
    );
    let (broker, pki) = broker_with(script);
    let shared = broker.clone();
    run(async move {
        let b = &*shared;
        let opts = || x509(b, &pki, "dev");
        assert_eq!(
            refused_with(connect(b, opts()).await),
            ConnectAckReason::ServiceUnavailable
        );
        assert!(matches!(
            connect(b, opts()).await,
            Err(ClientError::Disconnected(_))
        ));
        let delayed = connect(b, opts()).await.unwrap();
        assert_eq!(
            delayed.subscribe().await,
            vec![SubscribeReturnCode::Success(ntex_mqtt::QoS::AtLeastOnce)]
        );
        let failing = connect(b, opts()).await.unwrap();
        assert_eq!(
            failing.subscribe().await,
            vec![SubscribeReturnCode::Failure]
        );
        let mut closing = connect(b, opts()).await.unwrap();
        assert!(closing.closed(LONG).await);
        let mut after_suback = connect(b, opts()).await.unwrap();
        after_suback.subscribe().await;
        assert!(after_suback.closed(LONG).await);
    });
    let records = broker
        .wait_until(LONG, |r| {
            r.len() == 6 && r[4].is_closed() && r[5].is_closed()
        })
        .unwrap();
    assert_eq!(
        records[0].connack,
        Connack::Refused {
            code: 3,
            reason: "scripted refusal".into()
        }
    );
    assert_eq!(records[1].connack, Connack::Dropped);
    assert_eq!(
        records[4].ended.as_deref(),
        Some("closed after CONNACK (scripted)")
    );
    assert_eq!(
        records[5].ended.as_deref(),
        Some("closed after SUBACK (scripted)")
    );
}

#[test]
fn x509_cn_must_match_the_client_id_and_chain_to_the_device_ca() {
    let (broker, pki) = broker_with(Script::new());
    let stranger = TestPki::generate().unwrap();
    let shared = broker.clone();
    run(async move {
        let b = &*shared;
        // A valid certificate for someone else.
        let mismatched = Options::new(b, "dev").identity(pki.device("not-dev").unwrap());
        assert_eq!(
            refused_with(connect(b, mismatched).await),
            ConnectAckReason::NotAuthorized
        );
        // A certificate from a CA the broker does not trust: the TLS handshake fails.
        let untrusted = Options::new(b, "dev").identity(stranger.device("dev").unwrap());
        assert!(connect(b, untrusted).await.is_err());
    });
    let records = broker.records();
    assert!(
        matches!(&records[0].connack, Connack::Refused { code: 5, reason } if reason.contains("CN")),
        "{records:?}"
    );
    assert_eq!(records[0].peer_cert_cn.as_deref(), Some("not-dev"));
    // The untrusted device never got as far as CONNECT.
    assert_eq!(records.len(), 1);
}

#[test]
fn sas_tokens_are_verified() {
    const GROUP: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let broker = Arc::new(
        MockBroker::builder()
            .symmetric_key("sas-dev", KEY)
            .group_key(GROUP)
            .start()
            .unwrap(),
    );
    let shared = broker.clone();
    run(async move {
        let b = &*shared;
        let group_device = SymmetricKey::from_group_key(GROUP, "grouped").unwrap();
        let token =
            group_device.sas_token(dps_mock_broker::DEFAULT_ID_SCOPE, "grouped", far_future());
        let ok = Options::new(b, "grouped").password(token.to_string());
        assert!(connect(b, ok).await.is_ok());
        assert!(
            connect(b, sas(b, "sas-dev", KEY, far_future()))
                .await
                .is_ok()
        );

        let wrong_key = sas(b, "sas-dev", "AAAA", far_future());
        assert_eq!(
            refused_with(connect(b, wrong_key).await),
            ConnectAckReason::NotAuthorized
        );
        let expired = sas(b, "sas-dev", KEY, 1_000);
        assert_eq!(
            refused_with(connect(b, expired).await),
            ConnectAckReason::NotAuthorized
        );
        let no_broker_without_group = MockBroker::builder()
            .symmetric_key("sas-dev", KEY)
            .start()
            .unwrap();
        let unknown = sas(&no_broker_without_group, "stranger", KEY, far_future());
        assert_eq!(
            refused_with(connect(&no_broker_without_group, unknown).await),
            ConnectAckReason::NotAuthorized
        );
        let bad_user = sas(b, "sas-dev", KEY, far_future()).username("sas-dev");
        assert_eq!(
            refused_with(connect(b, bad_user).await),
            ConnectAckReason::BadUserNameOrPassword
        );
        let wrong_scope = sas(b, "sas-dev", KEY, far_future())
            .username(common::username("0ne99999999", "sas-dev"));
        assert_eq!(
            refused_with(connect(b, wrong_scope).await),
            ConnectAckReason::NotAuthorized
        );
    });
    let records = broker.records();
    assert_eq!(
        records[0].connack,
        Connack::Accepted {
            method: "group_key".into()
        }
    );
    let reasons: Vec<String> = records[2..]
        .iter()
        .map(|r| match &r.connack {
            Connack::Refused { reason, .. } => reason.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(reasons[0].contains("signature"), "{reasons:?}");
    assert!(reasons[1].contains("expired"), "{reasons:?}");
    assert!(reasons[2].contains("username"), "{reasons:?}");
    assert!(reasons[3].contains("scope"), "{reasons:?}");
}

#[test]
fn responses_never_reach_another_client() {
    let (broker, pki) = broker_with(Script::new());
    let shared = broker.clone();
    run(async move {
        let broker = &*shared;
        let mut a = connect(broker, x509(broker, &pki, "dev-a")).await.unwrap();
        let mut b = connect(broker, x509(broker, &pki, "dev-b")).await.unwrap();
        a.subscribe().await;
        b.subscribe().await;
        // Both use the same $rid: each must get exactly its own answer.
        register(&a, "dev-a", "same", None).await;
        register(&b, "dev-b", "same", None).await;
        let (_, body_a) = a.next(LONG).await.unwrap();
        let (_, body_b) = b.next(LONG).await.unwrap();
        assert_ne!(body_a["operationId"], body_b["operationId"]);
        // b polls a's operation: the service says it is not b's.
        b.publish(
            &poll_topic("p", body_a["operationId"].as_str().unwrap()),
            b" ",
        )
        .await;
        let (topic, _) = b.next(LONG).await.unwrap();
        assert_eq!(ResponseTopic::parse(&topic).unwrap().status, 404);
        // a got nothing more.
        a.publish(
            &poll_topic("q", body_a["operationId"].as_str().unwrap()),
            b" ",
        )
        .await;
        let (topic, _) = a.next(LONG).await.unwrap();
        assert_eq!(ResponseTopic::parse(&topic).unwrap().rid, "q");
    });
    let records = broker.records();
    assert_eq!(records[0].responses().len(), 2);
    assert_eq!(records[1].responses().len(), 2);
}

#[test]
fn serves_a_thousand_concurrent_connections() {
    const N: usize = 1_000;
    const GROUP: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let broker = Arc::new(
        MockBroker::builder()
            .retry_after(0)
            .group_key(GROUP)
            .ws_listen(None)
            .start()
            .unwrap(),
    );
    let shared = broker.clone();
    run(async move {
        let mut clients = Vec::new();
        for i in 0..N {
            let b = shared.clone();
            let id = format!("load-{i:04}");
            let token = SymmetricKey::from_group_key(GROUP, &id).unwrap().sas_token(
                dps_mock_broker::DEFAULT_ID_SCOPE,
                &id,
                far_future(),
            );
            let options = Options::new(&b, &id).password(token.to_string());
            clients.push(async move {
                let mut client = connect(&b, options).await.unwrap();
                client.subscribe().await;
                register(&client, &id, "r", None).await;
                let (_, body) = client.next(Duration::from_secs(120)).await.unwrap();
                assert_eq!(body["status"], "assigning");
                client
            });
        }
        let clients = futures_join_all(clients).await;
        assert_eq!(clients.len(), N);
    });
    let records = broker.records();
    assert_eq!(records.len(), N);
    assert!(records.iter().all(|r| r.responses().len() == 1));
}

/// Polls every future on this thread until all are done (no extra dependency for join_all).
async fn futures_join_all<F: Future + 'static>(futures: Vec<F>) -> Vec<F::Output> {
    let handles: Vec<_> = futures.into_iter().map(|f| ntex::rt::spawn(f)).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap_or_else(|_| panic!("a client task failed")));
    }
    out
}

#[test]
fn the_documented_scenarios_load() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut loaded = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            Script::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            loaded += 1;
        }
    }
    assert!(loaded >= 3);
}
