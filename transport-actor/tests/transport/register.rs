//! `registrationRequest` (SRS 18_002 .. 18_015, 06_001 .. 06_003, 06_006): the register on the
//! wire and its answers.

use super::*;

// SRS_NODE_PROVISIONING_MQTT_18_002: a register while disconnected connects and subscribes;
// SRS_NODE_PROVISIONING_MQTT_18_040: by connecting the MQTT client;
// SRS_NODE_PROVISIONING_MQTT_18_042: and subscribing to $dps/registrations/res/#.
#[actix_rt::test]
async fn srs_18_002_18_040_18_042_register_connects_and_subscribes_before_publishing() {
    let f = Fixture::start(Script::new());
    let t = f.transport(MQTT, "dev").await;
    assert_eq!(t.send(GetState).await.unwrap(), State::Disconnected);
    f.register(&t, MQTT, "dev").await.unwrap();
    assert_eq!(t.send(GetState).await.unwrap(), State::Connected);
    let records = f.broker.records();
    assert_eq!(records.len(), 1);
    let events: Vec<&Event> = records[0].kinds().collect();
    let subscribe = events.iter().position(|e| matches!(e, Event::Subscribe { topic, qos: 1, granted: true } if topic == "$dps/registrations/res/#"));
    let publish = events
        .iter()
        .position(|e| matches!(e, Event::Publish { .. }));
    assert!(subscribe.unwrap() < publish.unwrap(), "{events:?}");
}

// SRS_NODE_PROVISIONING_MQTT_18_003: register publishes to
// $dps/registrations/PUT/iotdps-register/?$rid=<rid>, a fresh rid each time, at QoS 1.
#[actix_rt::test]
async fn srs_18_003_register_publishes_to_the_register_topic_with_a_fresh_rid() {
    let f = Fixture::start(Script::new());
    let t = f.transport(MQTT, "dev").await;
    for _ in 0..2 {
        f.register(&t, MQTT, "dev").await.unwrap();
    }
    let record = &f.broker.records()[0];
    let rids: Vec<&str> = record
        .publishes()
        .iter()
        .map(|(topic, _)| topic.strip_prefix(REGISTER_TOPIC_PREFIX).unwrap())
        .collect();
    assert_eq!(rids.len(), 2);
    assert_ne!(rids[0], rids[1]);
    assert!(rids.iter().all(|rid| rid.len() == 36), "{rids:?}");
    assert!(
        record
            .kinds()
            .all(|e| !matches!(e, Event::Publish { qos, .. } if *qos != 1))
    );
}

// SRS_NODE_PROVISIONING_MQTT_06_001: the register body is JSON with registrationId;
// SRS_NODE_PROVISIONING_MQTT_06_002: and payload when custom allocation data is given.
#[actix_rt::test]
async fn srs_06_001_and_06_002_register_body_on_the_wire() {
    let f = Fixture::start(Script::new());
    let t = f.transport(MQTT, "dev").await;
    f.register(&t, MQTT, "dev").await.unwrap();
    let payload = json!({"modelId": "dtmi:x;1", "n": [1, 2]});
    let request = f.request(MQTT, "dev").with_payload(payload.clone());
    let op = t
        .send(Register {
            request: request.clone(),
        })
        .await
        .unwrap()
        .unwrap()
        .result
        .operation_id
        .unwrap();
    let polled = t
        .send(QueryStatus {
            request,
            operation_id: op,
        })
        .await
        .unwrap()
        .unwrap();
    let record = &f.broker.records()[0];
    let bodies: Vec<serde_json::Value> = record.publishes()[..2]
        .iter()
        .map(|(_, p)| serde_json::from_str(p).unwrap())
        .collect();
    assert_eq!(bodies[0], json!({"registrationId": "dev"}));
    assert_eq!(
        bodies[1],
        json!({"registrationId": "dev", "payload": payload})
    );
    // The mock service echoes the payload back in the registration state.
    assert_eq!(
        polled.result.registration_state.unwrap().payload,
        Some(payload)
    );
}

// SRS_NODE_PROVISIONING_MQTT_18_004: a register whose publish fails ends with the error. The
// service takes the register's PUBLISH and closes the connection without acknowledging it.
#[actix_rt::test]
async fn srs_18_004_register_publish_failure_is_reported() {
    let f = Fixture::start(script("dev", requests([Step::CloseOnPublish])));
    let t = f.transport(MQTT, "dev").await;
    let err = f.register(&t, MQTT, "dev").await.unwrap_err();
    assert_publish_failed(&err);
    assert_eq!(t.send(GetState).await.unwrap(), State::Disconnected);
    let records = f.wait_all_closed().await;
    assert!(
        records[0].publishes()[0]
            .0
            .starts_with(REGISTER_TOPIC_PREFIX)
    );
    assert!(records[0].responses().is_empty());
    assert_eq!(
        records[0].ended.as_deref(),
        Some("closed on the publish, without a PUBACK (scripted)")
    );
}

// SRS_NODE_PROVISIONING_MQTT_18_010: the register listens only for its own $rid: a response to
// another rid is ignored and the register ends at its deadline.
#[actix_rt::test]
async fn srs_18_010_register_ignores_responses_to_other_rids() {
    let f = Fixture::start(script(
        "dev",
        requests([Step::Malformed {
            what: Malformation::WrongRid,
        }]),
    ));
    let t = f
        .transport_with(
            f.builder(MQTT).response_timeout(SHORT).build().unwrap(),
            f.x509("dev"),
        )
        .await;
    let err = f.register(&t, MQTT, "dev").await.unwrap_err();
    assert!(
        matches!(
            err,
            ProvisioningError::Timeout {
                stage: Stage::Response,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(f.broker.records()[0].responses().len(), 1);
    // The connection is still good.
    assert!(f.register(&t, MQTT, "dev").await.is_ok());
}

// SRS_NODE_PROVISIONING_MQTT_06_006: the register's retry-after * 1000 is the polling interval,
// otherwise the default.
#[actix_rt::test]
async fn srs_06_006_register_polling_interval_comes_from_retry_after() {
    let f = Fixture::start_with(
        script(
            "dev",
            requests([Step::respond(202).with_retry_after(3), Step::respond(202)]),
        ),
        |b| b.retry_after(5),
    );
    let t = f.transport(MQTT, "dev").await;
    let r = f.register(&t, MQTT, "dev").await.unwrap();
    assert_eq!(r.polling_interval, Duration::from_millis(3_000));
    let r = f.register(&t, MQTT, "dev").await.unwrap();
    assert_eq!(r.polling_interval, Duration::from_millis(2_000));
    let r = f.register(&t, MQTT, "dev").await.unwrap();
    assert_eq!(r.polling_interval, Duration::from_secs(5));
}

// SRS_NODE_PROVISIONING_MQTT_18_012: a register answered with 300..429 fails, translated;
// SRS_NODE_PROVISIONING_MQTT_18_015: the service's error goes to the caller.
#[actix_rt::test]
async fn srs_18_012_and_18_015_register_failures_are_translated() {
    let body = json!({"errorCode": 401002, "trackingId": "trk", "message": "Unauthorized", "timestampUtc": "2026-11-24T00:00:00Z"});
    let f = Fixture::start(script(
        "dev",
        requests([
            Step::respond(401).with_body(body),
            Step::respond(400),
            Step::respond(409),
        ]),
    ));
    let t = f.transport(MQTT, "dev").await;
    let register = || Register {
        request: f.request(MQTT, "dev"),
    };
    let err = t.send(register()).await.unwrap().unwrap_err();
    let ProvisioningError::Unauthorized(e) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (e.error_code, e.tracking_id.as_deref(), e.message.as_deref()),
        (Some(401002), Some("trk"), Some("Unauthorized"))
    );
    assert_eq!(e.timestamp_utc.as_deref(), Some("2026-11-24T00:00:00Z"));
    assert!(matches!(
        t.send(register()).await.unwrap(),
        Err(ProvisioningError::Argument(_))
    ));
    assert!(
        matches!(t.send(register()).await.unwrap(), Err(ProvisioningError::Service(e)) if e.status == 409)
    );
}

// SRS_NODE_PROVISIONING_MQTT_06_003: a register answered with >= 429 gives `registering` and
// no operationId.
#[actix_rt::test]
async fn srs_06_003_throttled_register_is_registering() {
    let f = Fixture::start(script(
        "dev",
        requests([Step::respond(429).with_retry_after(1), Step::respond(503)]),
    ));
    let t = f.transport(MQTT, "dev").await;
    for expected in [Duration::from_secs(1), Duration::from_secs(2)] {
        let r = f.register(&t, MQTT, "dev").await.unwrap();
        assert_eq!(
            (r.result.status, r.result.operation_id, r.polling_interval),
            (RegistrationStatus::Registering, None, expected)
        );
    }
}

// SRS_NODE_PROVISIONING_MQTT_18_013: a successful register response goes to the caller.
#[actix_rt::test]
async fn srs_18_013_register_success_is_passed_on() {
    let f = Fixture::start(Script::new());
    let t = f.transport(MQTT, "dev").await;
    let r = f.register(&t, MQTT, "dev").await.unwrap();
    assert_eq!(
        (r.status_code, r.result.status),
        (202, RegistrationStatus::Assigning)
    );
    assert!(r.result.operation_id.unwrap().starts_with("4."));
}
