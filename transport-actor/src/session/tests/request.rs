//! A register or a poll in flight: its publish, its own PUBACK and response, and what the response says.

use super::*;

// SRS_NODE_PROVISIONING_MQTT_18_004: a failed register publish fails the request.
#[test]
fn srs_18_004_register_publish_failure() {
    let mut h = H::in_request(1, "r1");
    let error: ProvisioningError =
        TransportError::new(TransportErrorKind::Publish, "closed").into();
    let actions = h.event(LinkEvent::PublishFailed {
        rid: "r1".into(),
        error,
    });
    assert!(matches!(
        response_of(&actions, 1),
        Err(ProvisioningError::Transport(_))
    ));
    assert_eq!(h.s.state(), State::Connected);
}

// SRS_NODE_PROVISIONING_MQTT_18_018: a failed poll publish fails the request.
#[test]
fn srs_18_018_poll_publish_failure() {
    let mut h = H::connected();
    h.poll(2, "p", "op");
    let error: ProvisioningError =
        TransportError::new(TransportErrorKind::Publish, "closed").into();
    let actions = h.event(LinkEvent::PublishFailed {
        rid: "p".into(),
        error,
    });
    assert!(matches!(
        response_of(&actions, 2),
        Err(ProvisioningError::Transport(_))
    ));
}

// SRS_NODE_PROVISIONING_MQTT_18_010: the register waits for its own $rid only;
// SRS_NODE_PROVISIONING_MQTT_18_013: a success is passed on with the response.
#[test]
fn srs_18_010_and_18_013_register_response_is_correlated_by_rid() {
    let mut h = H::in_request(1, "r1");
    h.event(LinkEvent::PublishAcked { rid: "r1".into() });
    // Another request's response, a malformed topic and an unrelated topic are ignored.
    assert!(
        h.event(response(202, "other", json!({"status": "assigning"})))
            .is_empty()
    );
    let bad = LinkEvent::Message {
        topic: "$dps/registrations/res/abc/?$rid=r1".into(),
        payload: vec![],
    };
    assert!(h.event(bad).is_empty());
    let unrelated = LinkEvent::Message {
        topic: "devices/x".into(),
        payload: vec![],
    };
    assert!(h.event(unrelated).is_empty());
    assert_eq!(h.s.state(), State::InRequest);
    let actions = h.event(response(
        202,
        "r1",
        json!({"operationId": "op", "status": "assigning"}),
    ));
    let r = response_of(&actions, 1).unwrap();
    assert_eq!(r.status_code, 202);
    assert_eq!(r.result.operation_id.as_deref(), Some("op"));
    assert_eq!(r.result.status, RegistrationStatus::Assigning);
    assert_eq!(h.s.state(), State::Connected);
}

// SRS_NODE_PROVISIONING_MQTT_18_024: the poll waits for its own $rid;
// SRS_NODE_PROVISIONING_MQTT_18_027: a success is passed on with the response.
#[test]
fn srs_18_024_and_18_027_poll_response_is_correlated_by_rid() {
    let mut h = H::connected();
    h.poll(2, "p2", "op");
    assert!(
        h.event(response(200, "r1", json!({"status": "assigned"})))
            .is_empty()
    );
    let body = json!({"operationId": "op", "status": "assigned", "registrationState": {"assignedHub": "hub"}});
    let r = response_of(&h.event(response(200, "p2", body)), 2).unwrap();
    assert_eq!(r.result.status, RegistrationStatus::Assigned);
    assert_eq!(
        r.result.registration_state.unwrap().assigned_hub.as_deref(),
        Some("hub")
    );
}

// SRS_NODE_PROVISIONING_MQTT_06_006: the register's polling interval comes from retry-after.
#[test]
fn srs_06_006_register_reports_the_polling_interval() {
    let mut h = H::in_request(1, "r1");
    let r = response_of(
        &h.event(response(202, "r1", json!({"status": "assigning"}))),
        1,
    )
    .unwrap();
    assert_eq!(r.polling_interval, Duration::from_secs(3));
}

// SRS_NODE_PROVISIONING_MQTT_06_005: the poll's polling interval comes from retry-after, else
// the default.
#[test]
fn srs_06_005_poll_reports_the_polling_interval() {
    let mut h = H::connected();
    h.poll(2, "p", "op");
    let event = LinkEvent::Message {
        topic: "$dps/registrations/res/202/?$rid=p".into(),
        payload: br#"{"status":"assigning"}"#.to_vec(),
    };
    assert_eq!(
        response_of(&h.event(event), 2).unwrap().polling_interval,
        Duration::from_secs(2)
    );
}

// SRS_NODE_PROVISIONING_MQTT_18_012: 300..429 fails the register, translated;
// SRS_NODE_PROVISIONING_MQTT_18_015: the error goes to the caller.
#[test]
fn srs_18_012_and_18_015_register_failure_is_translated() {
    let mut h = H::in_request(1, "r1");
    let actions = h.event(response(
        401,
        "r1",
        json!({"errorCode": 401002, "trackingId": "t"}),
    ));
    let err = response_of(&actions, 1).unwrap_err();
    assert!(matches!(&err, ProvisioningError::Unauthorized(e) if e.error_code == Some(401002)));
    assert_eq!(h.s.state(), State::Connected);
}

// SRS_NODE_PROVISIONING_MQTT_18_026: 300..429 fails the poll, translated;
// SRS_NODE_PROVISIONING_MQTT_18_029: the error goes to the caller.
#[test]
fn srs_18_026_and_18_029_poll_failure_is_translated() {
    let mut h = H::connected();
    h.poll(2, "p", "op");
    let err = response_of(&h.event(response(404, "p", json!({}))), 2).unwrap_err();
    assert!(matches!(err, ProvisioningError::DeviceNotFound(_)));
}

// SRS_NODE_PROVISIONING_MQTT_06_003: >= 429 on a register is `registering` without operationId.
#[test]
fn srs_06_003_throttled_register() {
    let mut h = H::in_request(1, "r1");
    let r = response_of(&h.event(response(429, "r1", json!(null))), 1).unwrap();
    assert_eq!(
        (r.result.status, r.result.operation_id),
        (RegistrationStatus::Registering, None)
    );
}

// SRS_NODE_PROVISIONING_MQTT_06_004: >= 429 on a poll is `assigning` with the caller's
// operationId.
#[test]
fn srs_06_004_throttled_poll() {
    let mut h = H::connected();
    h.poll(2, "p", "op-5");
    let r = response_of(&h.event(response(503, "p", json!(null))), 2).unwrap();
    assert_eq!(r.result.status, RegistrationStatus::Assigning);
    assert_eq!(r.result.operation_id.as_deref(), Some("op-5"));
}

#[test]
fn a_bad_body_with_the_right_rid_ends_the_request_with_a_protocol_error() {
    let mut h = H::in_request(1, "r1");
    let event = LinkEvent::Message {
        topic: "$dps/registrations/res/200/?$rid=r1".into(),
        payload: b"{oops".to_vec(),
    };
    let err = response_of(&h.event(event), 1).unwrap_err();
    assert!(matches!(
        err,
        ProvisioningError::Protocol(dps_messages::error::ProtocolError::BadJson { .. })
    ));
    assert_eq!(h.s.state(), State::Connected);
}

#[test]
fn a_response_before_the_puback_still_answers_and_the_late_puback_is_ignored() {
    let mut h = H::in_request(1, "r1");
    let actions = h.event(response(202, "r1", json!({"status": "assigning"})));
    assert!(response_of(&actions, 1).is_ok());
    assert!(
        h.event(LinkEvent::PublishAcked { rid: "r1".into() })
            .is_empty()
    );
    assert_eq!(h.s.state(), State::Connected);
    assert_eq!(h.s.poll_timeout(), None);
}

/// Only the request's own PUBACK counts, once: another rid's, or a second one, neither starts
/// the response deadline again nor fails the request.
#[test]
fn only_the_requests_own_puback_or_publish_failure_counts() {
    let mut h = H::in_request(1, "r1");
    assert!(
        h.event(LinkEvent::PublishAcked { rid: "r9".into() })
            .is_empty()
    );
    assert_eq!(h.s.poll_timeout(), Some(h.now + PUBACK));
    let error: ProvisioningError = TransportError::new(TransportErrorKind::Publish, "x").into();
    assert!(
        h.event(LinkEvent::PublishFailed {
            rid: "r9".into(),
            error,
        })
        .is_empty()
    );
    assert_eq!(h.s.state(), State::InRequest);

    h.event(LinkEvent::PublishAcked { rid: "r1".into() });
    let deadline = h.s.poll_timeout();
    assert_eq!(deadline, Some(h.now + RESPONSE));
    h.now += Duration::from_secs(1);
    assert!(
        h.event(LinkEvent::PublishAcked { rid: "r1".into() })
            .is_empty()
    );
    assert_eq!(
        h.s.poll_timeout(),
        deadline,
        "a second PUBACK changes nothing"
    );
}

#[test]
fn a_second_request_in_flight_is_refused_and_the_first_untouched() {
    for mut h in [H::in_request(1, "r1"), {
        let mut h = H::new();
        h.register(1, "r1");
        h
    }] {
        let before = h.s.state();
        let actions = h.register(2, "r2");
        assert!(matches!(
            response_of(&actions, 2),
            Err(ProvisioningError::OperationInProgress)
        ));
        assert_eq!(actions.len(), 1);
        assert_eq!(h.s.state(), before);
    }
    // During a disconnect, one request waits (see below) and a second is refused.
    let mut h = H::connected();
    h.command(Command::Disconnect {
        token: 5,
        grace: None,
    });
    assert!(h.register(6, "r").is_empty());
    assert!(matches!(
        response_of(&h.register(7, "r"), 7),
        Err(ProvisioningError::OperationInProgress)
    ));
}
