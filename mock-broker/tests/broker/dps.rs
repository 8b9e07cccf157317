//! DPS's default behaviour over TLS and WebSocket, the handle's PKI and waits, the record sink, and scale.

use super::*;

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
    const GROUP: &str = dps_mock_broker::TEST_GROUP_KEY;
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
