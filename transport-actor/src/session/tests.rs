//! The session driven through every state and input, with no sockets.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dps_messages::connect::{ConnectOptions, Endpoint};
use dps_messages::error::{AuthError, ProtocolError, Stage, TransportError, TransportErrorKind};
use dps_messages::{
    Operation, Protocol, ProvisioningError, RegistrationRequest, RegistrationResponse,
    RegistrationStatus, SymmetricKey,
};
use serde_json::json;

use super::*;

const CONNECT: Duration = Duration::from_secs(1);
const SUBSCRIBE: Duration = Duration::from_secs(2);
const PUBACK: Duration = Duration::from_secs(3);
const RESPONSE: Duration = Duration::from_secs(4);
const DISCONNECT: Duration = Duration::from_secs(5);

fn config(protocol: Protocol) -> SessionConfig {
    SessionConfig {
        connect: ConnectOptions {
            protocol,
            keep_alive: Duration::from_secs(60),
            sas_token_ttl: Duration::from_secs(3600),
        },
        timeouts: Timeouts {
            connect: CONNECT,
            subscribe: SUBSCRIBE,
            publish_ack: PUBACK,
            response: RESPONSE,
            disconnect: DISCONNECT,
        },
        default_polling_interval: Duration::from_secs(2),
    }
}

fn request() -> RegistrationRequest {
    RegistrationRequest::new("scope", "dev").with_host("dps.example.net")
}

/// The device's symmetric key.
const KEY: &str = "O+H9VTcdJP0Tqkl7bh4nVG0OJNrAataMpuWB54D0VEc=";

/// The wall-clock time every request is made at.
fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// A register of `request` as request `rid`, answered to `token`.
fn register(token: Token, request: RegistrationRequest, rid: &str) -> Command {
    Command::Request {
        token,
        operation: Operation::Register,
        request,
        rid: rid.into(),
        made_at: wall(),
    }
}

struct H {
    s: Session,
    now: Instant,
    link: LinkId,
}

impl H {
    fn new() -> Self {
        Self::with(Protocol::Mqtt)
    }

    fn with(protocol: Protocol) -> Self {
        let mut h = Self::unauthenticated(protocol);
        h.s.set_authentication(SymmetricKey::new(KEY).unwrap().into());
        h
    }

    /// A session given no credentials.
    fn unauthenticated(protocol: Protocol) -> Self {
        let s = Session::new(config(protocol));
        Self {
            s,
            now: Instant::now(),
            link: LinkId(0),
        }
    }

    fn drain(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.s.poll_action()).collect()
    }

    fn command(&mut self, command: Command) -> Vec<Action> {
        self.s.handle_command(command, self.now);
        self.drain()
    }

    fn event(&mut self, event: LinkEvent) -> Vec<Action> {
        self.s.handle_link_event(self.link, event, self.now);
        self.drain()
    }

    fn register(&mut self, token: Token, rid: &str) -> Vec<Action> {
        self.command(register(token, request(), rid))
    }

    fn poll(&mut self, token: Token, rid: &str, operation_id: &str) -> Vec<Action> {
        self.command(Command::Request {
            token,
            operation: Operation::poll(operation_id),
            request: request(),
            rid: rid.into(),
            made_at: wall(),
        })
    }

    fn advance(&mut self, by: Duration) -> Vec<Action> {
        self.now += by;
        self.s.handle_timeout(self.now);
        self.drain()
    }

    /// Register, and take the link through connect and subscribe to the publish.
    fn in_request(token: Token, rid: &str) -> Self {
        let mut h = Self::new();
        let actions = h.register(token, rid);
        let Action::Open { link, .. } = &actions[0] else {
            panic!("{actions:?}")
        };
        h.link = *link;
        h.event(LinkEvent::Connected);
        h.event(LinkEvent::Subscribed);
        assert_eq!(h.s.state(), State::InRequest);
        h
    }

    /// Connected and idle after one answered register.
    fn connected() -> Self {
        let mut h = Self::in_request(1, "r1");
        h.event(LinkEvent::PublishAcked { rid: "r1".into() });
        h.event(response(
            202,
            "r1",
            json!({"operationId": "op", "status": "assigning"}),
        ));
        assert_eq!(h.s.state(), State::Connected);
        h
    }
}

fn response(status: u16, rid: &str, body: serde_json::Value) -> LinkEvent {
    LinkEvent::Message {
        topic: format!("$dps/registrations/res/{status}/?$rid={rid}&retry-after=3"),
        payload: body.to_string().into_bytes(),
    }
}

fn replies(actions: &[Action]) -> Vec<(Token, &Reply)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Reply { token, reply } => Some((*token, reply)),
            _ => None,
        })
        .collect()
}

fn response_of(
    actions: &[Action],
    token: Token,
) -> Result<RegistrationResponse, ProvisioningError> {
    let found = replies(actions).into_iter().find(|(t, _)| *t == token);
    match found {
        Some((_, Reply::Response(result))) => result.clone().map(|response| *response),
        other => panic!("no response for {token} in {actions:?}: {other:?}"),
    }
}

fn done_of(actions: &[Action], token: Token) -> Result<(), ProvisioningError> {
    let found = replies(actions).into_iter().find(|(t, _)| *t == token);
    match found {
        Some((_, Reply::Done(result))) => result.clone(),
        other => panic!("no done for {token} in {actions:?}: {other:?}"),
    }
}

/// Whether the session left its link in `actions`.
fn abandons(actions: &[Action]) -> bool {
    actions.iter().any(|a| matches!(a, Action::Abandon { .. }))
}

fn lost() -> ProvisioningError {
    TransportError::new(TransportErrorKind::ConnectionLost, "reset").into()
}

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
        [Action::Subscribe { .. }]
    ));
    let actions = h.event(LinkEvent::Subscribed);
    let [
        Action::Publish {
            topic,
            payload,
            rid,
            ..
        },
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
    let [Action::Publish { topic, payload, .. }] = &actions[..] else {
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

// SRS_NODE_PROVISIONING_MQTT_18_030: cancel while disconnected answers at once.
#[test]
fn srs_18_030_cancel_while_disconnected() {
    let mut h = H::new();
    let actions = h.command(Command::Cancel { token: 9 });
    assert_eq!(actions.len(), 1);
    assert!(done_of(&actions, 9).is_ok());
    assert_eq!(h.s.state(), State::Disconnected);
}

// SRS_NODE_PROVISIONING_MQTT_18_062: cancel while connecting disconnects and cancels the
// request that started the connection.
#[test]
fn srs_18_062_cancel_while_connecting() {
    for subscribing in [false, true] {
        let mut h = H::new();
        let Action::Open { link, .. } = h.register(1, "r1")[0].clone() else {
            panic!()
        };
        h.link = link;
        if subscribing {
            h.event(LinkEvent::Connected);
        }
        let actions = h.command(Command::Cancel { token: 2 });
        assert!(matches!(
            response_of(&actions, 1),
            Err(ProvisioningError::OperationCancelled)
        ));
        assert!(done_of(&actions, 2).is_ok());
        assert!(abandons(&actions));
        assert_eq!(h.s.state(), State::Disconnected);
        // The old link's late events change nothing.
        assert!(h.event(LinkEvent::Subscribed).is_empty());
    }
}

// SRS_NODE_PROVISIONING_MQTT_18_032: cancel while connected and idle answers at once.
#[test]
fn srs_18_032_cancel_while_connected_idle() {
    let mut h = H::connected();
    let actions = h.command(Command::Cancel { token: 9 });
    assert_eq!(actions.len(), 1);
    assert!(done_of(&actions, 9).is_ok());
    assert_eq!(h.s.state(), State::Connected);
}

// SRS_NODE_PROVISIONING_MQTT_18_033: cancel during a register stops listening and the register
// ends with OperationCancelled.
#[test]
fn srs_18_033_cancel_during_register() {
    let mut h = H::in_request(1, "r1");
    let actions = h.command(Command::Cancel { token: 2 });
    assert!(matches!(
        response_of(&actions, 1),
        Err(ProvisioningError::OperationCancelled)
    ));
    assert!(done_of(&actions, 2).is_ok());
    assert_eq!(h.s.state(), State::Connected);
    // The response that comes after is not delivered to anyone.
    assert!(
        h.event(response(202, "r1", json!({"status": "assigning"})))
            .is_empty()
    );
}

// SRS_NODE_PROVISIONING_MQTT_18_034: cancel during a poll ends it with OperationCancelled.
#[test]
fn srs_18_034_cancel_during_poll() {
    let mut h = H::connected();
    h.poll(2, "p", "op");
    let actions = h.command(Command::Cancel { token: 3 });
    assert!(matches!(
        response_of(&actions, 2),
        Err(ProvisioningError::OperationCancelled)
    ));
    assert_eq!(h.s.state(), State::Connected);
}

// SRS_NODE_PROVISIONING_MQTT_18_052: disconnect while disconnected answers at once.
#[test]
fn srs_18_052_disconnect_while_disconnected() {
    let mut h = H::new();
    let actions = h.command(Command::Disconnect {
        token: 9,
        grace: None,
    });
    assert_eq!(actions.len(), 1);
    assert!(done_of(&actions, 9).is_ok());
}

// SRS_NODE_PROVISIONING_MQTT_18_061: disconnect while connecting drops the connection and
// cancels the request behind it.
#[test]
fn srs_18_061_disconnect_while_connecting() {
    let mut h = H::new();
    let Action::Open { link, .. } = h.register(1, "r1")[0].clone() else {
        panic!()
    };
    h.link = link;
    let actions = h.command(Command::Disconnect {
        token: 2,
        grace: None,
    });
    assert!(matches!(
        response_of(&actions, 1),
        Err(ProvisioningError::OperationCancelled)
    ));
    assert!(done_of(&actions, 2).is_ok());
    assert!(abandons(&actions));
    assert_eq!(h.s.state(), State::Disconnected);
}

// SRS_NODE_PROVISIONING_MQTT_18_054: disconnect while connected and idle disconnects;
// SRS_NODE_PROVISIONING_MQTT_18_044: unsubscribing first;
// SRS_NODE_PROVISIONING_MQTT_18_045: then disconnecting.
#[test]
fn srs_18_054_18_044_18_045_disconnect_unsubscribes_then_disconnects() {
    let mut h = H::connected();
    let actions = h.command(Command::Disconnect {
        token: 9,
        grace: None,
    });
    assert!(
        matches!(&actions[..], [Action::Unsubscribe { .. }]),
        "{actions:?}"
    );
    assert_eq!(h.s.state(), State::Disconnecting);
    let actions = h.event(LinkEvent::Unsubscribed(Ok(())));
    assert!(
        matches!(&actions[..], [Action::Close { .. }]),
        "{actions:?}"
    );
    // The close done, the link is left for good, then the caller answered.
    let actions = h.event(LinkEvent::Closed(Ok(())));
    assert!(
        matches!(
            &actions[..],
            [Action::Abandon { .. }, Action::Reply { token: 9, .. }]
        ),
        "{actions:?}"
    );
    assert!(done_of(&actions, 9).is_ok());
    assert_eq!(h.s.state(), State::Disconnected);
}

// SRS_NODE_PROVISIONING_MQTT_18_048: a failed unsubscribe or disconnect is reported, the
// disconnect's error preferred.
#[test]
fn srs_18_048_disconnect_reports_failures_preferring_the_disconnect_error() {
    let unsub: ProvisioningError = TransportError::new(TransportErrorKind::Unsubscribe, "u").into();
    let disc: ProvisioningError = TransportError::new(TransportErrorKind::Disconnect, "d").into();
    for (u, d, expected) in [
        (
            Err(unsub.clone()),
            Ok(()),
            Some(TransportErrorKind::Unsubscribe),
        ),
        (
            Ok(()),
            Err(disc.clone()),
            Some(TransportErrorKind::Disconnect),
        ),
        (
            Err(unsub.clone()),
            Err(disc.clone()),
            Some(TransportErrorKind::Disconnect),
        ),
        (Ok(()), Ok(()), None),
    ] {
        let mut h = H::connected();
        h.command(Command::Disconnect {
            token: 9,
            grace: None,
        });
        h.event(LinkEvent::Unsubscribed(u));
        let result = done_of(&h.event(LinkEvent::Closed(d)), 9);
        let kind = result.err().map(|e| match e {
            ProvisioningError::Transport(t) => t.kind,
            other => panic!("{other:?}"),
        });
        assert_eq!(kind, expected);
    }
}

// SRS_NODE_PROVISIONING_MQTT_18_055: disconnect during a register cancels it and disconnects.
#[test]
fn srs_18_055_disconnect_during_register() {
    let mut h = H::in_request(1, "r1");
    let actions = h.command(Command::Disconnect {
        token: 2,
        grace: None,
    });
    assert!(matches!(
        response_of(&actions, 1),
        Err(ProvisioningError::OperationCancelled)
    ));
    assert!(matches!(actions.last(), Some(Action::Unsubscribe { .. })));
    h.event(LinkEvent::Unsubscribed(Ok(())));
    assert!(done_of(&h.event(LinkEvent::Closed(Ok(()))), 2).is_ok());
}

// SRS_NODE_PROVISIONING_MQTT_18_056: disconnect during a poll cancels it and disconnects.
#[test]
fn srs_18_056_disconnect_during_poll() {
    let mut h = H::connected();
    h.poll(2, "p", "op");
    let actions = h.command(Command::Disconnect {
        token: 3,
        grace: None,
    });
    assert!(matches!(
        response_of(&actions, 2),
        Err(ProvisioningError::OperationCancelled)
    ));
    assert_eq!(h.s.state(), State::Disconnecting);
    // A second disconnect waits for the same close.
    assert!(
        h.command(Command::Disconnect {
            token: 4,
            grace: None
        })
        .is_empty()
    );
    h.event(LinkEvent::Unsubscribed(Ok(())));
    let actions = h.event(LinkEvent::Closed(Ok(())));
    assert!(done_of(&actions, 3).is_ok() && done_of(&actions, 4).is_ok());
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

#[test]
fn connection_lost_mid_request_answers_at_once_and_the_next_request_reconnects() {
    let mut h = H::in_request(1, "r1");
    let actions = h.event(LinkEvent::ConnectionLost(lost()));
    assert!(matches!(
        response_of(&actions, 1),
        Err(ProvisioningError::Transport(_))
    ));
    assert_eq!(h.s.state(), State::Disconnected);
    assert_eq!(h.s.poll_timeout(), None, "nothing is left to wait for");
    let old = h.link;
    let actions = h.register(2, "r2");
    let Action::Open { link, .. } = actions[0] else {
        panic!("{actions:?}")
    };
    assert_ne!(link, old);
    // Late events of the lost link are ignored.
    h.link = old;
    assert!(h.event(LinkEvent::Connected).is_empty());
}

#[test]
fn connection_lost_while_idle_or_connecting() {
    let mut h = H::connected();
    assert!(matches!(
        &h.event(LinkEvent::ConnectionLost(lost()))[..],
        [Action::Abandon { .. }]
    ));
    assert_eq!(h.s.state(), State::Disconnected);

    let mut h = H::new();
    let Action::Open { link, .. } = h.register(1, "r1")[0].clone() else {
        panic!()
    };
    h.link = link;
    let actions = h.event(LinkEvent::ConnectionLost(lost()));
    assert!(response_of(&actions, 1).is_err());
}

// SRS_NODE_PROVISIONING_MQTT_18_048: a connection that breaks while it is being closed is the
// disconnect failing; a service that closes it first has done the disconnect's work.
#[test]
fn srs_18_048_a_connection_broken_during_the_disconnect_fails_it() {
    let mut h = H::connected();
    h.command(Command::Disconnect {
        token: 9,
        grace: None,
    });
    let err = done_of(&h.event(LinkEvent::ConnectionLost(lost())), 9).unwrap_err();
    assert_eq!(err.transport_kind(), Some(TransportErrorKind::Disconnect));
    assert!(
        err.to_string().contains("reset during the disconnect"),
        "{err}"
    );
    assert_eq!(h.s.state(), State::Disconnected);

    let mut h = H::connected();
    h.command(Command::Disconnect {
        token: 9,
        grace: None,
    });
    assert!(done_of(&h.event(LinkEvent::ClosedByService), 9).is_ok());
    assert_eq!(h.s.state(), State::Disconnected);

    // A protocol violation stays what it is.
    let mut h = H::connected();
    h.command(Command::Disconnect {
        token: 9,
        grace: None,
    });
    h.event(LinkEvent::Unsubscribed(Ok(())));
    let violation: ProvisioningError = ProtocolError::Violation("garbage".into()).into();
    let err = done_of(&h.event(LinkEvent::ConnectionLost(violation)), 9).unwrap_err();
    assert!(
        matches!(
            err,
            ProvisioningError::Protocol(ProtocolError::Violation(_))
        ),
        "{err:?}"
    );
}

/// A lost connection is reported with what it interrupted, so that "connection lost" alone
/// never reaches a user. A loss before the PUBACK is the publish failing (SRS 18_004).
#[test]
fn a_lost_connection_names_the_stage_it_interrupted() {
    let closed = || LinkEvent::ClosedByService;
    let reset = || LinkEvent::ConnectionLost(lost());

    // Before the SUBACK.
    for event in [closed(), reset()] {
        let mut h = H::new();
        let Action::Open { link, .. } = h.register(1, "r1")[0].clone() else {
            panic!()
        };
        h.link = link;
        h.event(LinkEvent::Connected);
        let err = response_of(&h.event(event), 1).unwrap_err();
        assert_eq!(
            err.transport_kind(),
            Some(TransportErrorKind::ConnectionLost)
        );
        assert!(err.to_string().ends_with("before the SUBACK"), "{err}");
        assert_eq!(h.s.state(), State::Disconnected);
    }
    // Before the PUBACK.
    let mut h = H::in_request(1, "r1");
    let err = response_of(&h.event(closed()), 1).unwrap_err();
    assert_eq!(err.transport_kind(), Some(TransportErrorKind::Publish));
    assert_eq!(
        err.to_string(),
        "transport error: publish failed: the service closed the connection before the PUBACK"
    );
    // Waiting for the response.
    let mut h = H::in_request(1, "r1");
    h.event(LinkEvent::PublishAcked { rid: "r1".into() });
    let err = response_of(&h.event(reset()), 1).unwrap_err();
    assert_eq!(
        err.transport_kind(),
        Some(TransportErrorKind::ConnectionLost)
    );
    assert!(
        err.to_string()
            .ends_with("reset while waiting for the response"),
        "{err}"
    );
    // A protocol violation is reported as such, whatever the stage.
    let mut h = H::in_request(1, "r1");
    let violation: ProvisioningError = ProtocolError::Violation("Decoding error".into()).into();
    let err = response_of(&h.event(LinkEvent::ConnectionLost(violation)), 1).unwrap_err();
    assert!(
        matches!(
            err,
            ProvisioningError::Protocol(ProtocolError::Violation(_))
        ),
        "{err:?}"
    );
    // While idle, nobody waits: the link is left.
    let mut h = H::connected();
    assert!(matches!(&h.event(closed())[..], [Action::Abandon { .. }]));
    assert_eq!(h.s.state(), State::Disconnected);
}

/// A disconnect's grace bounds it: the link is dropped when it passes. A second disconnect
/// with a shorter grace shortens the wait; a longer one does not lengthen it.
#[test]
fn a_disconnect_grace_bounds_the_wait() {
    let grace = Duration::from_millis(300);
    let mut h = H::connected();
    h.command(Command::Disconnect {
        token: 8,
        grace: Some(Duration::from_secs(3)),
    });
    assert_eq!(h.s.poll_timeout(), Some(h.now + Duration::from_secs(3)));
    h.command(Command::Disconnect {
        token: 9,
        grace: Some(grace),
    });
    assert_eq!(h.s.poll_timeout(), Some(h.now + grace));
    h.command(Command::Disconnect {
        token: 10,
        grace: None,
    });
    assert_eq!(h.s.poll_timeout(), Some(h.now + grace));
    let actions = h.advance(grace);
    for token in [8, 9, 10] {
        assert!(matches!(
            done_of(&actions, token),
            Err(ProvisioningError::Timeout {
                stage: Stage::Disconnect,
                after,
                ..
            }) if after == grace
        ));
    }
    assert!(abandons(&actions));
    assert_eq!(h.s.state(), State::Disconnected);
}

/// A request sent during a disconnect waits for it, then connects again (the Node transport
/// defers it the same way); a second one meanwhile is refused.
#[test]
fn a_request_during_a_disconnect_starts_once_it_ends() {
    for end in [
        (|h: &mut H| {
            h.event(LinkEvent::Unsubscribed(Ok(())));
            h.event(LinkEvent::Closed(Ok(())))
        }) as fn(&mut H) -> Vec<Action>,
        |h| h.event(LinkEvent::ClosedByService),
        |h| h.event(LinkEvent::ConnectionLost(lost())),
        |h| h.advance(DISCONNECT),
    ] {
        let mut h = H::connected();
        h.command(Command::Disconnect {
            token: 9,
            grace: None,
        });
        let old = h.link;
        assert!(h.register(2, "r2").is_empty(), "the request waits");
        assert!(matches!(
            response_of(&h.register(3, "r3"), 3),
            Err(ProvisioningError::OperationInProgress)
        ));
        assert_eq!(h.s.state(), State::Disconnecting);
        let actions = end(&mut h);
        assert_eq!(
            replies(&actions).len(),
            1,
            "only the disconnect answers: {actions:?}"
        );
        let Some(Action::Open { link, .. }) = actions.last() else {
            panic!("{actions:?}")
        };
        assert_ne!(*link, old);
        assert_eq!(h.s.state(), State::Connecting);
    }
}

/// Found by the simulation (seed 7972): a request waiting for a disconnect to end survived a
/// second disconnect (a client closing after its deadline), and connected again after the
/// registration was over, its caller long gone. A disconnect or a cancel cancels it, as they
/// cancel a request in flight.
#[test]
fn a_disconnect_or_cancel_cancels_the_request_waiting_for_a_disconnect() {
    for second in [
        Command::Disconnect {
            token: 10,
            grace: None,
        },
        Command::Cancel { token: 10 },
    ] {
        let mut h = H::connected();
        h.command(Command::Disconnect {
            token: 9,
            grace: None,
        });
        assert!(h.register(2, "r2").is_empty(), "the request waits");
        let actions = h.command(second);
        assert!(matches!(
            response_of(&actions, 2),
            Err(ProvisioningError::OperationCancelled)
        ));
        // The disconnect ends; nothing connects again.
        h.event(LinkEvent::Unsubscribed(Ok(())));
        let actions = h.event(LinkEvent::Closed(Ok(())));
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Open { .. })),
            "{actions:?}"
        );
        assert_eq!(h.s.state(), State::Disconnected);
    }
}

/// A restart answers the request waiting for a disconnect too.
#[test]
fn a_restart_answers_the_request_waiting_for_a_disconnect() {
    let mut h = H::connected();
    h.command(Command::Disconnect {
        token: 9,
        grace: None,
    });
    h.register(2, "r2");
    h.s.abort(ProvisioningError::OperationCancelled);
    let actions = h.drain();
    assert!(done_of(&actions, 9).is_err());
    assert!(response_of(&actions, 2).is_err());
}

#[test]
fn each_stage_times_out_with_its_own_stage_and_deadline() {
    // Connect.
    let mut h = H::new();
    h.register(1, "r");
    assert_eq!(h.s.poll_timeout(), Some(h.now + CONNECT));
    assert!(h.advance(CONNECT - Duration::from_millis(1)).is_empty());
    let actions = h.advance(Duration::from_millis(1));
    assert!(matches!(
        response_of(&actions, 1),
        Err(ProvisioningError::Timeout {
            stage: Stage::Connect,
            after: CONNECT,
            last_failure: None,
            attempts: 0,
        })
    ));
    assert!(abandons(&actions));

    // Subscribe.
    let mut h = H::new();
    let Action::Open { link, .. } = h.register(1, "r")[0].clone() else {
        panic!()
    };
    h.link = link;
    h.event(LinkEvent::Connected);
    let actions = h.advance(SUBSCRIBE);
    assert!(matches!(
        response_of(&actions, 1),
        Err(ProvisioningError::Timeout {
            stage: Stage::Subscribe,
            ..
        })
    ));
    assert_eq!(h.s.state(), State::Disconnected);

    // PUBACK: the link is dropped.
    let mut h = H::in_request(1, "r");
    let actions = h.advance(PUBACK);
    assert!(matches!(
        response_of(&actions, 1),
        Err(ProvisioningError::Timeout {
            stage: Stage::PublishAck,
            ..
        })
    ));
    assert!(abandons(&actions));
    assert_eq!(h.s.state(), State::Disconnected);

    // Response: the connection stays.
    let mut h = H::in_request(1, "r");
    h.event(LinkEvent::PublishAcked { rid: "r".into() });
    assert_eq!(h.s.poll_timeout(), Some(h.now + RESPONSE));
    let actions = h.advance(RESPONSE);
    assert!(matches!(
        response_of(&actions, 1),
        Err(ProvisioningError::Timeout {
            stage: Stage::Response,
            ..
        })
    ));
    assert!(!abandons(&actions));
    assert_eq!(h.s.state(), State::Connected);
    assert_eq!(h.s.poll_timeout(), None);

    // Disconnect: the link is dropped and the waiter told.
    let mut h = H::connected();
    h.command(Command::Disconnect {
        token: 9,
        grace: None,
    });
    let actions = h.advance(DISCONNECT);
    assert!(matches!(
        done_of(&actions, 9),
        Err(ProvisioningError::Timeout {
            stage: Stage::Disconnect,
            ..
        })
    ));
    assert!(abandons(&actions));
    assert_eq!(h.s.state(), State::Disconnected);
}

#[test]
fn abort_answers_everything_waiting() {
    let mut h = H::in_request(1, "r");
    let error: ProvisioningError =
        TransportError::new(TransportErrorKind::Shutdown, "restart").into();
    h.s.abort(error);
    let actions = h.drain();
    assert!(matches!(
        response_of(&actions, 1),
        Err(ProvisioningError::Transport(_))
    ));
    assert!(abandons(&actions));
    assert_eq!(h.s.state(), State::Disconnected);

    let mut h = H::connected();
    h.command(Command::Disconnect {
        token: 7,
        grace: None,
    });
    h.s.abort(ProvisioningError::OperationCancelled);
    assert!(done_of(&h.drain(), 7).is_err());
}

#[test]
fn every_request_gets_exactly_one_reply_whatever_the_event_order() {
    // An exhaustive walk: cut into each prefix of a full exchange with each fault, then replay
    // the whole exchange and let every deadline pass.
    type Fault = fn(&mut H) -> Vec<Action>;
    let faults: [Fault; 8] = [
        |h| h.event(LinkEvent::ConnectionLost(lost())),
        |h| h.event(LinkEvent::ClosedByService),
        |h| {
            let mut actions = h.command(Command::Disconnect {
                token: 52,
                grace: Some(Duration::from_millis(1)),
            });
            actions.extend(h.register(53, "r"));
            actions
        },
        |h| h.command(Command::Cancel { token: 50 }),
        |h| {
            h.command(Command::Disconnect {
                token: 51,
                grace: None,
            })
        },
        |h| h.advance(Duration::from_secs(60)),
        |h| h.event(LinkEvent::ConnectFailed(lost())),
        |h| h.event(response(500, "r", json!(null))),
    ];
    let steps: [fn(&mut H) -> Vec<Action>; 4] = [
        |h| h.event(LinkEvent::Connected),
        |h| h.event(LinkEvent::Subscribed),
        |h| h.event(LinkEvent::PublishAcked { rid: "r".into() }),
        |h| h.event(response(202, "r", json!({"status": "assigning"}))),
    ];
    for cut in 0..=steps.len() {
        for fault in faults {
            let mut h = H::new();
            let mut all = h.register(1, "r");
            let Action::Open { link, .. } = all[0].clone() else {
                panic!()
            };
            h.link = link;
            for step in &steps[..cut] {
                all.extend(step(&mut h));
            }
            all.extend(fault(&mut h));
            for step in &steps {
                all.extend(step(&mut h));
            }
            all.extend(h.advance(Duration::from_secs(600)));
            let count = replies(&all).iter().filter(|(t, _)| *t == 1).count();
            assert_eq!(count, 1, "cut {cut}: {all:?}");
            // Every link opened is abandoned once, but the one still in use.
            let opened = all
                .iter()
                .filter(|a| matches!(a, Action::Open { .. }))
                .count();
            let left = all
                .iter()
                .filter(|a| matches!(a, Action::Abandon { .. }))
                .count();
            let in_use = usize::from(h.s.state() != State::Disconnected);
            assert_eq!(opened, left + in_use, "cut {cut}: {all:?}");
        }
    }
}

#[test]
fn transitions_are_logged_only_when_the_state_changes() {
    assert!(log_transition(State::Connected, State::InRequest));
    assert!(!log_transition(State::Connected, State::Connected));
}

#[test]
fn debug_shows_the_state_and_the_deadline() {
    let mut h = H::new();
    assert_eq!(
        format!("{:?}", h.s),
        "Session { state: Disconnected, deadline: None }"
    );
    h.register(1, "r1");
    let shown = format!("{:?}", h.s);
    assert!(
        shown.contains("Connecting") && shown.contains("Connect"),
        "{shown}"
    );
}

/// A second disconnect whose grace ends exactly when the first's does leaves the first's
/// deadline, and its error, as they were.
#[test]
fn a_disconnect_with_the_same_end_keeps_the_first_deadline() {
    let mut h = H::connected();
    h.command(Command::Disconnect {
        token: 8,
        grace: Some(Duration::from_secs(3)),
    });
    h.now += Duration::from_secs(1);
    h.command(Command::Disconnect {
        token: 9,
        grace: Some(Duration::from_secs(2)),
    });
    let actions = h.advance(Duration::from_secs(2));
    assert!(matches!(
        done_of(&actions, 9),
        Err(ProvisioningError::Timeout { after, .. }) if after == Duration::from_secs(3)
    ));
}
