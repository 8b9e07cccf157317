//! Connecting for a request: the CONNECT it sends, and a connect or subscribe that fails.

use super::*;

// SRS_NODE_PROVISIONING_MQTT_18_002: a register while disconnected connects, then subscribes,
// and only then publishes.
#[test]
fn srs_18_002_register_connects_and_subscribes_first() {
    let mut h = H::new();
    let actions = h.register(1, "r1");
    assert!(matches!(&actions[..], [Action::Open { .. }]), "{actions:?}");
    assert_eq!(h.s.state(), State::Connecting);
    let Action::Open { link, .. } = actions[0] else {
        unreachable!()
    };
    h.link = link;
    // SRS_NODE_PROVISIONING_MQTT_18_042: subscribe after connecting.
    assert!(matches!(
        &h.event(LinkEvent::Connected)[..],
        [Action::Link(_, LinkAction::Subscribe)]
    ));
    let actions = h.event(LinkEvent::Subscribed);
    let [
        Action::Link(
            _,
            LinkAction::Publish {
                topic,
                payload,
                rid,
            },
        ),
    ] = &actions[..]
    else {
        panic!("{actions:?}")
    };
    assert_eq!(
        (topic.as_str(), rid.as_str()),
        ("$dps/registrations/PUT/iotdps-register/?$rid=r1", "r1")
    );
    assert_eq!(payload, br#"{"registrationId":"dev"}"#);
}

// SRS_NODE_PROVISIONING_MQTT_18_016: a poll while disconnected connects and subscribes first.
#[test]
fn srs_18_016_poll_connects_and_subscribes_first() {
    let mut h = H::new();
    let actions = h.poll(1, "p1", "op-1");
    assert!(matches!(&actions[..], [Action::Open { .. }]));
    let Action::Open { link, .. } = actions[0] else {
        unreachable!()
    };
    h.link = link;
    h.event(LinkEvent::Connected);
    let actions = h.event(LinkEvent::Subscribed);
    let [Action::Link(_, LinkAction::Publish { topic, payload, .. })] = &actions[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(
        topic,
        "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=p1&operationId=op-1"
    );
    assert_eq!(payload, b" ");
}

// SRS_NODE_PROVISIONING_MQTT_18_040, 18_035, 18_036, 18_038, 18_050: connecting uses the
// registration id as clientId, clean session, the DPS username and mqtts://<host>.
#[test]
fn srs_18_040_connect_carries_the_dps_parameters() {
    let mut h = H::new();
    let actions = h.register(1, "r1");
    let Action::Open { connect, .. } = &actions[0] else {
        panic!()
    };
    assert_eq!(connect.client_id, "dev");
    assert!(connect.clean_session);
    assert!(
        connect
            .username
            .starts_with("scope/registrations/dev/api-version=2019-03-31&ClientVersion=")
    );
    assert_eq!(
        connect.endpoint,
        Endpoint::parse("mqtts://dps.example.net:8883").unwrap()
    );
}

// SRS_NODE_PROVISIONING_MQTT_18_001 (symmetric-key half): the session owns the credentials
// and the CONNECT carries a SAS token made from them at the request's time, for the
// configured lifetime.
#[test]
fn srs_18_001_the_connect_carries_a_sas_token_made_at_the_requests_time() {
    let mut h = H::new();
    let actions = h.register(1, "r1");
    let Action::Open { connect, .. } = &actions[0] else {
        panic!("{actions:?}")
    };
    let Credential::SasToken(token) = &connect.credential else {
        panic!("{:?}", connect.credential)
    };
    let token = dps_messages::service::SasToken::parse(token).unwrap();
    let made = wall().duration_since(UNIX_EPOCH).unwrap();
    assert_eq!(token.expiry, (made + Duration::from_secs(3600)).as_secs());
    assert!(token.verify(KEY, made.as_secs()).is_ok());
    assert_eq!(connect.keep_alive, 60);
}

// SRS_NODE_PROVISIONING_MQTT_18_049: MqttWs connects to wss://<host>:443/$iothub/websocket.
#[test]
fn srs_18_049_websocket_session_connects_to_the_websocket_endpoint() {
    let mut h = H::with(Protocol::MqttWs);
    let actions = h.register(1, "r1");
    let Action::Open { connect, .. } = &actions[0] else {
        panic!()
    };
    assert_eq!(
        connect.endpoint.uri(),
        "wss://dps.example.net:443/$iothub/websocket"
    );
}

// SRS_NODE_PROVISIONING_MQTT_18_039: a uri in the request replaces the host-derived one.
#[test]
fn srs_18_039_request_endpoint_is_used() {
    let mut h = H::new();
    let request = request().with_endpoint("mqtts://127.0.0.1:4000");
    let actions = h.command(register(1, request, "r"));
    let Action::Open { connect, .. } = &actions[0] else {
        panic!()
    };
    assert_eq!(
        (connect.endpoint.host.as_str(), connect.endpoint.port),
        ("127.0.0.1", 4000)
    );
}

// SRS_NODE_PROVISIONING_MQTT_18_041: a failed connect fails the request with its error;
// SRS_NODE_PROVISIONING_MQTT_18_051: and disconnects the transport.
#[test]
fn srs_18_041_and_18_051_connect_failure() {
    let mut h = H::new();
    let Action::Open { link, .. } = h.register(1, "r1")[0].clone() else {
        panic!()
    };
    h.link = link;
    let refused =
        ProvisioningError::ConnectionRefused(dps_messages::error::ConnackRefusal::NotAuthorized);
    let actions = h.event(LinkEvent::ConnectFailed(refused));
    assert!(matches!(
        response_of(&actions, 1),
        Err(ProvisioningError::ConnectionRefused(_))
    ));
    assert!(abandons(&actions));
    assert_eq!(h.s.state(), State::Disconnected);
}

// SRS_NODE_PROVISIONING_MQTT_18_043: a failed subscribe fails the request with its error;
// SRS_NODE_PROVISIONING_MQTT_18_051: and disconnects the transport.
#[test]
fn srs_18_043_and_18_051_subscribe_failure() {
    let mut h = H::new();
    let Action::Open { link, .. } = h.register(1, "r1")[0].clone() else {
        panic!()
    };
    h.link = link;
    h.event(LinkEvent::Connected);
    let error: ProvisioningError =
        TransportError::new(TransportErrorKind::Subscribe, "SUBACK 0x80").into();
    let actions = h.event(LinkEvent::SubscribeFailed(error));
    let err = response_of(&actions, 1).unwrap_err();
    assert_eq!(
        err.transport_kind(),
        Some(TransportErrorKind::Subscribe),
        "{err:?}"
    );
    assert!(abandons(&actions));
    assert_eq!(h.s.state(), State::Disconnected);
}

#[test]
fn a_request_for_another_device_does_not_reuse_the_connection() {
    let mut h = H::connected();
    let other = RegistrationRequest::new("scope", "other").with_host("dps.example.net");
    let actions = h.command(register(2, other, "x"));
    assert!(matches!(
        response_of(&actions, 2),
        Err(ProvisioningError::InvalidRequest(_))
    ));
    assert_eq!(h.s.state(), State::Connected);
}

#[test]
fn an_invalid_request_is_refused_before_any_connection() {
    let mut h = H::new();
    let bad = RegistrationRequest::new("scope", "has space");
    let actions = h.command(register(1, bad, "r"));
    assert!(matches!(
        response_of(&actions, 1),
        Err(ProvisioningError::InvalidRequest(_))
    ));
    assert_eq!(actions.len(), 1);
}

#[test]
fn without_credentials_a_request_fails_before_connecting() {
    let mut h = H::unauthenticated(Protocol::Mqtt);
    let actions = h.register(1, "r1");
    assert!(matches!(
        response_of(&actions, 1),
        Err(ProvisioningError::Auth(AuthError::Missing))
    ));
    assert_eq!(actions.len(), 1);
}
