//! The tests of `classify`.

use super::*;
use serde_json::json;

const DEFAULT: Duration = RegistrationResponse::DEFAULT_POLLING_INTERVAL;

fn topic(status: u16, retry_after: Option<&str>) -> ResponseTopic {
    ResponseTopic {
        status,
        rid: "1".into(),
        retry_after: retry_after.map(str::to_owned),
        params: vec![],
    }
}

const ASSIGNING: &[u8] = br#"{"operationId":"op-1","status":"assigning"}"#;

// SRS_NODE_PROVISIONING_MQTT_06_006: a register response's retry-after * 1000 is the polling
// interval, otherwise the default.
#[test]
fn srs_06_006_register_polling_interval_from_retry_after() {
    let r = classify(
        &Operation::Register,
        &topic(202, Some("3")),
        ASSIGNING,
        DEFAULT,
    )
    .unwrap();
    assert_eq!(r.polling_interval, Duration::from_millis(3_000));
    assert_eq!(r.retry_after, Some(Duration::from_secs(3)));
    let r = classify(&Operation::Register, &topic(202, None), ASSIGNING, DEFAULT).unwrap();
    assert_eq!(r.polling_interval, DEFAULT);
    assert_eq!(r.retry_after, None, "the default is not the service's ask");
    assert_eq!(DEFAULT, Duration::from_millis(2_000));
}

// SRS_NODE_PROVISIONING_MQTT_06_005: the same rule for a poll response.
#[test]
fn srs_06_005_poll_polling_interval_from_retry_after() {
    let poll = &Operation::poll("op-1");
    let r = classify(poll, &topic(202, Some("0")), ASSIGNING, DEFAULT).unwrap();
    assert_eq!(r.polling_interval, Duration::ZERO);
    let r = classify(poll, &topic(200, None), ASSIGNING, DEFAULT).unwrap();
    assert_eq!(r.polling_interval, DEFAULT);
}

#[test]
fn a_configured_default_replaces_the_2_second_one() {
    let five = Duration::from_secs(5);
    let r = classify(&Operation::Register, &topic(202, None), ASSIGNING, five).unwrap();
    assert_eq!(r.polling_interval, five);
    let r = classify(
        &Operation::Register,
        &topic(202, Some("x")),
        ASSIGNING,
        five,
    )
    .unwrap();
    assert_eq!(r.polling_interval, five);
    let r = classify(
        &Operation::Register,
        &topic(202, Some("1")),
        ASSIGNING,
        five,
    )
    .unwrap();
    assert_eq!(r.polling_interval, Duration::from_secs(1));
}

#[test]
fn a_bad_retry_after_falls_back_to_the_default_and_is_reported() {
    for raw in [
        "",
        "abc",
        "-1",
        "1.5",
        "+2",
        "99999999999999999999999",
        "0x10",
    ] {
        assert_eq!(
            parse_retry_after(raw),
            Err(InvalidRetryAfter(raw.into())),
            "{raw}"
        );
        let r = classify(
            &Operation::Register,
            &topic(202, Some(raw)),
            ASSIGNING,
            DEFAULT,
        )
        .unwrap();
        assert_eq!(r.polling_interval, DEFAULT, "{raw}");
        assert_eq!(r.retry_after, None, "{raw}");
        assert_eq!(r.invalid_retry_after.as_deref(), Some(raw));
    }
}

// SRS_NODE_PROVISIONING_MQTT_18_012: a register answered with 300..429 fails, translated.
#[test]
fn srs_18_012_register_failure_statuses_are_translated() {
    let body = br#"{"errorCode":401002,"trackingId":"t-1","message":"bad creds","timestampUtc":"2026-11-24T00:00:00Z"}"#;
    let err = classify(&Operation::Register, &topic(401, None), body, DEFAULT).unwrap_err();
    let ProvisioningError::Unauthorized(e) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(e.status, 401);
    assert_eq!(e.error_code, Some(401002));
    assert_eq!(e.tracking_id.as_deref(), Some("t-1"));
    assert_eq!(e.message.as_deref(), Some("bad creds"));
    assert_eq!(e.timestamp_utc.as_deref(), Some("2026-11-24T00:00:00Z"));
    assert_eq!(e.body.as_bytes(), body);

    for (status, check) in [
        (
            300u16,
            (|e: &ProvisioningError| matches!(e, ProvisioningError::Service(_))) as fn(&_) -> bool,
        ),
        (400, |e| matches!(e, ProvisioningError::Argument(_))),
        (404, |e| matches!(e, ProvisioningError::DeviceNotFound(_))),
        (
            409,
            |e| matches!(e, ProvisioningError::Service(s) if s.status == 409),
        ),
        (428, |e| matches!(e, ProvisioningError::Service(_))),
    ] {
        let err = classify(
            &Operation::Register,
            &topic(status, None),
            b"not json",
            DEFAULT,
        )
        .unwrap_err();
        assert!(check(&err), "{status}: {err:?}");
        assert_eq!(err.service_error().unwrap().body, "not json");
    }
}

// SRS_NODE_PROVISIONING_MQTT_18_026: a poll answered with 300..429 fails, translated.
#[test]
fn srs_18_026_poll_failure_statuses_are_translated() {
    let poll = &Operation::poll("op-1");
    let err = classify(poll, &topic(400, None), br#"{"errorCode":400004}"#, DEFAULT).unwrap_err();
    assert!(matches!(&err, ProvisioningError::Argument(e) if e.error_code == Some(400004)));
    // On the wire 500 is a retry status; the translation still names it, for callers that
    // translate statuses themselves.
    let err = ProvisioningError::from_service(ServiceError::from_body(500, b""));
    assert!(matches!(err, ProvisioningError::InternalServer(_)));
}

// SRS_NODE_PROVISIONING_MQTT_06_003: a register answered with >= 429 gives status
// `registering` and no operationId.
#[test]
fn srs_06_003_throttled_register_is_registering_without_operation_id() {
    for status in [429u16, 500, 503, 599] {
        let r = classify(
            &Operation::Register,
            &topic(status, Some("5")),
            b"garbage",
            DEFAULT,
        )
        .unwrap();
        assert_eq!(r.result.status, RegistrationStatus::Registering);
        assert_eq!(r.result.operation_id, None);
        assert_eq!(r.polling_interval, Duration::from_secs(5));
        assert_eq!(r.status_code, status);
    }
}

// SRS_NODE_PROVISIONING_MQTT_06_004: a poll answered with >= 429 gives `assigning` and the
// caller's operationId.
#[test]
fn srs_06_004_throttled_poll_is_assigning_with_callers_operation_id() {
    let poll = &Operation::poll("op-7");
    let r = classify(poll, &topic(429, None), b"", DEFAULT).unwrap();
    assert_eq!(r.result.status, RegistrationStatus::Assigning);
    assert_eq!(r.result.operation_id.as_deref(), Some("op-7"));
    assert_eq!(r.polling_interval, DEFAULT);
}

#[test]
fn success_parses_the_body() {
    let body = json!({"operationId": "op", "status": "assigned",
        "registrationState": {"assignedHub": "h", "deviceId": "d"}});
    let r = classify(
        &Operation::Register,
        &topic(200, None),
        body.to_string().as_bytes(),
        DEFAULT,
    )
    .unwrap();
    assert_eq!(r.result.status, RegistrationStatus::Assigned);
    assert_eq!(
        r.result.registration_state.unwrap().assigned_hub.as_deref(),
        Some("h")
    );
}

#[test]
fn success_with_a_bad_body_is_a_protocol_error() {
    for body in [
        &b"not json"[..],
        b"",
        b"[]",
        br#"{"operationId":"x"}"#,
        b"\xff\xfe",
    ] {
        let err = classify(&Operation::Register, &topic(200, None), body, DEFAULT).unwrap_err();
        assert!(
            matches!(
                err,
                ProvisioningError::Protocol(ProtocolError::BadJson { status: 200, .. })
            ),
            "{err:?}"
        );
    }
}

/// DPS sends at most 96 KB; the limit leaves headroom, and exactly the limit is read.
#[test]
fn the_largest_dps_message_is_read() {
    for len in [96 * 1024, MAX_RESPONSE_BYTES] {
        let mut body = br#"{"status":"assigning","pad":""#.to_vec();
        body.resize(len - 2, b'x');
        body.extend_from_slice(br#""}"#);
        let r = classify(&Operation::Register, &topic(202, None), &body, DEFAULT).unwrap();
        assert_eq!(r.result.status, RegistrationStatus::Assigning, "{len}");
    }
}

#[test]
fn a_huge_body_is_refused_whatever_the_status() {
    let body = vec![b' '; MAX_RESPONSE_BYTES + 1];
    for status in [200, 401, 429] {
        let err = classify(&Operation::Register, &topic(status, None), &body, DEFAULT).unwrap_err();
        assert!(matches!(
            err,
            ProvisioningError::Protocol(ProtocolError::PayloadTooLarge { .. })
        ));
    }
}

#[test]
fn unusual_success_statuses_are_successes() {
    let r = classify(&Operation::Register, &topic(0, None), ASSIGNING, DEFAULT).unwrap();
    assert_eq!(r.result.operation_id.as_deref(), Some("op-1"));
    let r = classify(&Operation::Register, &topic(299, None), ASSIGNING, DEFAULT).unwrap();
    assert_eq!(r.status_code, 299);
}
