//! `queryOperationStatus` (SRS 18_016 .. 18_029, 06_004, 06_005): the poll on the wire and its
//! answers.

use super::*;

// SRS_NODE_PROVISIONING_MQTT_18_016: a poll while disconnected connects and subscribes.
#[actix_rt::test]
async fn srs_18_016_poll_connects_and_subscribes() {
    let f = Fixture::start(Script::new());
    let first = f.transport(MQTT, "dev").await;
    let op = f
        .register(&first, MQTT, "dev")
        .await
        .unwrap()
        .result
        .operation_id
        .unwrap();
    // A fresh transport polls the operation: it must connect and subscribe on its own.
    let second = f.transport(MQTT, "dev").await;
    let r = second
        .send(QueryStatus {
            request: f.request(MQTT, "dev"),
            operation_id: op,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.result.status, RegistrationStatus::Assigned);
    let records = f.broker.records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].subscriptions(), vec!["$dps/registrations/res/#"]);
}

// SRS_NODE_PROVISIONING_MQTT_18_017: a poll publishes to
// $dps/registrations/GET/iotdps-get-operationstatus/?$rid=<rid>&operationId=<operationId>.
#[actix_rt::test]
async fn srs_18_017_poll_publishes_to_the_operation_status_topic() {
    let f = Fixture::start(Script::new());
    let (op, _) = register_and_poll(&f, MQTT, "dev").await;
    let record = &f.broker.records()[0];
    let (topic, body) = record.publishes()[1];
    let rest = topic.strip_prefix(POLL_TOPIC_PREFIX).unwrap();
    let (rid, op_param) = rest.split_once('&').unwrap();
    assert_eq!(rid.len(), 36);
    assert_eq!(op_param, format!("operationId={op}"));
    assert_eq!(body, " ");
}

// SRS_NODE_PROVISIONING_MQTT_18_018: a poll whose publish fails ends with the error.
#[actix_rt::test]
async fn srs_18_018_poll_publish_failure_is_reported() {
    let f = Fixture::start(script("dev", requests([Step::CloseOnPublish])));
    let t = f.transport(MQTT, "dev").await;
    let err = t
        .send(QueryStatus {
            request: f.request(MQTT, "dev"),
            operation_id: "op".into(),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert_publish_failed(&err);
    let records = f.wait_all_closed().await;
    assert!(records[0].publishes()[0].0.starts_with(POLL_TOPIC_PREFIX));
}

// SRS_NODE_PROVISIONING_MQTT_18_024: the poll listens only for its own $rid.
#[actix_rt::test]
async fn srs_18_024_poll_ignores_responses_to_other_rids() {
    let f = Fixture::start(script(
        "dev",
        requests([
            Step::Default { delay_ms: 0 },
            Step::Malformed {
                what: Malformation::WrongRid,
            },
        ]),
    ));
    let t = f
        .transport_with(
            f.builder(MQTT).response_timeout(SHORT).build().unwrap(),
            f.x509("dev"),
        )
        .await;
    let op = f
        .register(&t, MQTT, "dev")
        .await
        .unwrap()
        .result
        .operation_id
        .unwrap();
    let err = t
        .send(QueryStatus {
            request: f.request(MQTT, "dev"),
            operation_id: op.clone(),
        })
        .await
        .unwrap()
        .unwrap_err();
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
    let polled = t
        .send(QueryStatus {
            request: f.request(MQTT, "dev"),
            operation_id: op,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(polled.result.status, RegistrationStatus::Assigned);
}

// SRS_NODE_PROVISIONING_MQTT_06_005: the poll's retry-after * 1000 is the polling interval,
// otherwise the default (a value that is not a number falls back to it).
#[actix_rt::test]
async fn srs_06_005_poll_polling_interval_comes_from_retry_after() {
    let steps = [
        Step::Default { delay_ms: 0 },
        Step::respond(202)
            .with_body(json!({"status": "assigning"}))
            .with_retry_after(4),
        Step::respond(202)
            .with_body(json!({"status": "assigning"}))
            .with_retry_after("soon"),
    ];
    let f = Fixture::start(script("dev", requests(steps)));
    let t = f.transport(MQTT, "dev").await;
    let op = f
        .register(&t, MQTT, "dev")
        .await
        .unwrap()
        .result
        .operation_id
        .unwrap();
    let poll = || QueryStatus {
        request: f.request(MQTT, "dev"),
        operation_id: op.clone(),
    };
    assert_eq!(
        t.send(poll()).await.unwrap().unwrap().polling_interval,
        Duration::from_millis(4_000)
    );
    let r = t.send(poll()).await.unwrap().unwrap();
    assert_eq!(
        (r.polling_interval, r.invalid_retry_after.as_deref()),
        (Duration::from_millis(2_000), Some("soon"))
    );
}

// SRS_NODE_PROVISIONING_MQTT_18_026: a poll answered with 300..429 fails, translated;
// SRS_NODE_PROVISIONING_MQTT_18_029: the service's error goes to the caller.
#[actix_rt::test]
async fn srs_18_026_and_18_029_poll_failures_are_translated() {
    let f = Fixture::start(Script::new());
    let t = f.transport(MQTT, "dev").await;
    // The mock service knows no such operation: 404.
    let err = t
        .send(QueryStatus {
            request: f.request(MQTT, "dev"),
            operation_id: "4.unknown".into(),
        })
        .await
        .unwrap()
        .unwrap_err();
    let ProvisioningError::DeviceNotFound(e) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(e.status, 404);
    assert!(e.tracking_id.is_some() && e.message.is_some());
}

// SRS_NODE_PROVISIONING_MQTT_06_004: a poll answered with >= 429 gives `assigning` and the
// caller's operationId.
#[actix_rt::test]
async fn srs_06_004_throttled_poll_is_assigning_with_the_operation_id() {
    let f = Fixture::start(script(
        "dev",
        requests([Step::respond(429).with_retry_after(2)]),
    ));
    let t = f.transport(MQTT, "dev").await;
    let r = t
        .send(QueryStatus {
            request: f.request(MQTT, "dev"),
            operation_id: "op-42".into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.result.status, RegistrationStatus::Assigning);
    assert_eq!(r.result.operation_id.as_deref(), Some("op-42"));
    assert_eq!(r.polling_interval, Duration::from_secs(2));
}

// SRS_NODE_PROVISIONING_MQTT_18_027: a successful poll response goes to the caller.
#[actix_rt::test]
async fn srs_18_027_poll_success_is_passed_on() {
    let f = Fixture::start_with(Script::new(), |b| b.assigned_hub("hub-7.azure-devices.net"));
    let (op, polled) = register_and_poll(&f, MQTT, "dev").await;
    assert_eq!(polled.status_code, 200);
    assert_eq!(polled.result.operation_id.as_deref(), Some(op.as_str()));
    let state = polled.result.registration_state.unwrap();
    assert_eq!(
        state.assigned_hub.as_deref(),
        Some("hub-7.azure-devices.net")
    );
    assert_eq!(state.device_id.as_deref(), Some("dev"));
    assert_eq!(state.substatus.as_deref(), Some("initialAssignment"));
}
