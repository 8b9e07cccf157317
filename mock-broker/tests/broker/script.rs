//! Scripted answers and connection faults, as the client meets them.

use super::*;

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
