//! Every SRS requirement of the MQTT transport, over real TLS and WebSocket sockets against the
//! mock DPS broker.

mod common;

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Supervisor};
use common::*;
use dps_messages::topic::{POLL_TOPIC_PREFIX, REGISTER_TOPIC_PREFIX, ResponseTopic};
use dps_messages::{
    AuthError, Cancel, ConnackRefusal, Disconnect, Protocol, ProtocolError, ProvisioningError,
    QueryStatus, Register, RegistrationStatus, SetAuthentication, Stage, TransportError,
    TransportErrorKind,
};
use dps_mock_broker::record::{Connack, Event};
use dps_mock_broker::script::{ConnectStep, DeviceScript, Malformation, Step};
use dps_mock_broker::{Script, Transport};
use dps_transport_actor::{GetState, ProvisioningTransportActor, Restart, State};
use serde_json::json;

const MQTT: Protocol = Protocol::Mqtt;
const WS: Protocol = Protocol::MqttWs;

fn script(id: &str, steps: DeviceScript) -> Script {
    Script::new().device(id, steps)
}

fn requests(steps: impl IntoIterator<Item = Step>) -> DeviceScript {
    steps
        .into_iter()
        .fold(DeviceScript::new(), DeviceScript::request)
}

fn connects(steps: impl IntoIterator<Item = ConnectStep>) -> DeviceScript {
    steps
        .into_iter()
        .fold(DeviceScript::new(), DeviceScript::connect)
}

fn is_transport(error: &ProvisioningError) -> bool {
    matches!(error, ProvisioningError::Transport(_))
}

/// Register then poll, both answered by the broker's default script.
async fn register_and_poll(
    f: &Fixture,
    protocol: Protocol,
    id: &str,
) -> (String, dps_messages::RegistrationResponse) {
    let t = f.transport(protocol, id).await;
    let registered = t
        .send(Register {
            request: f.request(protocol, id),
        })
        .await
        .unwrap()
        .unwrap();
    let op = registered.result.operation_id.clone().unwrap();
    let polled = t
        .send(QueryStatus {
            request: f.request(protocol, id),
            operation_id: op.clone(),
        })
        .await
        .unwrap()
        .unwrap();
    (op, polled)
}

// SRS_NODE_PROVISIONING_MQTT_18_001: the certificate and key set by setAuthentication are used
// to connect;
// SRS_NODE_PROVISIONING_MQTT_18_037: the X.509 certificate is passed when connecting.
#[actix_rt::test]
async fn srs_18_001_and_18_037_the_x509_identity_is_presented() {
    let f = Fixture::start(Script::new());
    let (_, polled) = register_and_poll(&f, MQTT, "cert-dev").await;
    assert_eq!(polled.result.status, RegistrationStatus::Assigned);
    let record = &f.broker.records()[0];
    assert_eq!(record.peer_cert_cn.as_deref(), Some("cert-dev"));
    assert_eq!(
        record.connack,
        Connack::Accepted {
            method: "x509".into()
        }
    );
    assert!(!record.password_present);
}

// SRS_NODE_PROVISIONING_MQTT_18_001 (symmetric key): the key set by setAuthentication signs the
// SAS token the device connects with.
#[actix_rt::test]
async fn srs_18_001_a_symmetric_key_signs_the_password() {
    let f = Fixture::start(Script::new());
    let t = f.transport_with(f.config(MQTT), sas(KEY)).await;
    let r = f.register(&t, MQTT, "sas-dev").await.unwrap();
    assert_eq!(r.status_code, 202);
    let record = &f.broker.records()[0];
    assert!(record.password_present && record.peer_cert_cn.is_none());
    assert_eq!(
        record.connack,
        Connack::Accepted {
            method: "symmetric_key".into()
        }
    );
}

#[actix_rt::test]
async fn a_group_enrollment_device_key_connects() {
    let f = Fixture::start(Script::new());
    let key = dps_messages::SymmetricKey::from_group_key(GROUP_KEY, "grouped-7").unwrap();
    let t = f.transport_with(f.config(WS), key.into()).await;
    let r = f.register(&t, WS, "grouped-7").await.unwrap();
    assert_eq!(r.status_code, 202);
    assert_eq!(
        f.broker.records()[0].connack,
        Connack::Accepted {
            method: "group_key".into()
        }
    );
}

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
    let events = &records[0].events;
    let subscribe = events.iter().position(|e| matches!(e, Event::Subscribe { topic, qos: 1, granted: true } if topic == "$dps/registrations/res/#"));
    let publish = events
        .iter()
        .position(|e| matches!(e, Event::Publish { .. }));
    assert!(subscribe.unwrap() < publish.unwrap(), "{events:?}");
}

/// An actor started on the MQTT runtime thread, beside its connection, is driven from this
/// (another) thread exactly as one started here.
#[actix_rt::test]
async fn an_actor_on_the_runtime_thread_registers_and_disconnects() {
    let f = Fixture::start(Script::new());
    let t = ProvisioningTransportActor::start_on_runtime(f.config(MQTT)).unwrap();
    t.send(SetAuthentication(f.x509("dev"))).await.unwrap();
    let response = f.register(&t, MQTT, "dev").await.unwrap();
    assert_eq!(response.status_code, 202);
    assert_eq!(t.send(GetState).await.unwrap(), State::Connected);
    t.send(Disconnect::default()).await.unwrap().unwrap();
    assert_eq!(t.send(GetState).await.unwrap(), State::Disconnected);
    let records = f.wait_all_closed().await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].publishes().len(), 1);
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
            .events
            .iter()
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

/// Asserts `err` is the publish failing because the service closed on it.
fn assert_publish_failed(err: &ProvisioningError) {
    assert_eq!(
        err.transport_kind(),
        Some(TransportErrorKind::Publish),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .ends_with("the service closed the connection before the PUBACK"),
        "{err}"
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

// SRS_NODE_PROVISIONING_MQTT_18_030: cancel while disconnected answers at once.
#[actix_rt::test]
async fn srs_18_030_cancel_while_disconnected() {
    let f = Fixture::start(Script::new());
    let t = f.transport(MQTT, "dev").await;
    assert!(t.send(Cancel).await.unwrap().is_ok());
    assert_eq!(t.send(GetState).await.unwrap(), State::Disconnected);
    assert!(f.broker.records().is_empty());
}

// SRS_NODE_PROVISIONING_MQTT_18_062: cancel while connecting disconnects and cancels the request
// that started the connection.
#[actix_rt::test]
async fn srs_18_062_cancel_while_connecting() {
    let f = Fixture::start(script(
        "dev",
        connects([ConnectStep::DelayConnack { ms: 60_000 }]),
    ));
    let t = f.transport(MQTT, "dev").await;
    let pending = t.send(Register {
        request: f.request(MQTT, "dev"),
    });
    assert_eq!(t.send(GetState).await.unwrap(), State::Connecting);
    assert!(t.send(Cancel).await.unwrap().is_ok());
    assert!(matches!(
        pending.await.unwrap(),
        Err(ProvisioningError::OperationCancelled)
    ));
    assert_eq!(t.send(GetState).await.unwrap(), State::Disconnected);
}

/// A request for `id` sent over MQTT/TLS to `addr` instead of the fixture's broker.
fn request_to(addr: std::net::SocketAddr, id: &str) -> dps_messages::RegistrationRequest {
    dps_messages::RegistrationRequest::new(SCOPE, id).with_endpoint(format!("mqtts://{addr}"))
}

/// A listener that accepts TCP connections and never answers, reporting each accept.
fn black_hole() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in listener.incoming() {
            open.push(stream);
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

async fn next_accept(accepted: &mut tokio::sync::mpsc::UnboundedReceiver<()>) {
    tokio::time::timeout(LONG, accepted.recv())
        .await
        .expect("no connection was accepted")
        .expect("the listener stopped");
}

/// A herd larger than the runtime's opening turns (`MAX_OPENING`, held here by connections to a
/// listener that never answers): a device waiting for its turn is `Connecting`, can be cancelled
/// at once, and connects as soon as another device gives its turn back. (That no more than
/// `MAX_OPENING` open at once is proven without IO by the runtime's unit test; here only a
/// connection already accepted would show, which is checked as far as it can be without
/// waiting.)
#[actix_rt::test]
async fn a_herd_opens_a_limited_number_of_connections_at_a_time() {
    use dps_transport_actor::runtime::{MAX_OPENING, MqttRuntime};

    let f = Fixture::start(Script::new());
    let (addr, mut accepted) = black_hole();
    let request = |id: &str| request_to(addr, id);
    let config = f
        .builder(MQTT)
        .runtime(MqttRuntime::start("herd-test").unwrap())
        .build()
        .unwrap();
    let mut herd = Vec::new();
    for i in 0..MAX_OPENING {
        let id = format!("dev-{i}");
        let t = f.transport_with(config.clone(), f.x509(&id)).await;
        let pending = t.send(Register {
            request: request(&id),
        });
        herd.push((t, pending));
    }
    for _ in 0..MAX_OPENING {
        next_accept(&mut accepted).await;
    }

    let last = f.transport_with(config, f.x509("last")).await;
    let waiting = last.send(Register {
        request: request("last"),
    });
    assert_eq!(last.send(GetState).await.unwrap(), State::Connecting);
    assert!(
        accepted.try_recv().is_err(),
        "a connection beyond the turns opened"
    );
    assert!(last.send(Cancel).await.unwrap().is_ok());
    assert!(matches!(
        waiting.await.unwrap(),
        Err(ProvisioningError::OperationCancelled)
    ));

    // One of the herd gives up: its turn goes to the device waiting.
    let waiting = last.send(Register {
        request: request("last"),
    });
    assert!(
        accepted.try_recv().is_err(),
        "a connection beyond the turns opened"
    );
    let (first, pending) = herd.remove(0);
    assert!(first.send(Cancel).await.unwrap().is_ok());
    assert!(pending.await.unwrap().is_err());
    next_accept(&mut accepted).await;
    assert!(last.send(Cancel).await.unwrap().is_ok());
    assert!(waiting.await.unwrap().is_err());
}

// SRS_NODE_PROVISIONING_MQTT_18_032: cancel while connected and idle answers at once and keeps
// the connection.
#[actix_rt::test]
async fn srs_18_032_cancel_while_connected_and_idle() {
    let f = Fixture::start(Script::new());
    let t = f.transport(MQTT, "dev").await;
    f.register(&t, MQTT, "dev").await.unwrap();
    assert!(t.send(Cancel).await.unwrap().is_ok());
    assert_eq!(t.send(GetState).await.unwrap(), State::Connected);
    assert!(!f.broker.records()[0].is_closed());
}

// SRS_NODE_PROVISIONING_MQTT_18_033: cancel during a register stops listening and the register
// ends with OperationCancelled.
#[actix_rt::test]
async fn srs_18_033_cancel_during_register() {
    let f = Fixture::start(script("dev", requests([Step::Silent])));
    let t = f.transport(MQTT, "dev").await;
    let pending = t.send(Register {
        request: f.request(MQTT, "dev"),
    });
    f.wait_for_publishes(1).await;
    assert!(t.send(Cancel).await.unwrap().is_ok());
    assert!(matches!(
        pending.await.unwrap(),
        Err(ProvisioningError::OperationCancelled)
    ));
    assert_eq!(t.send(GetState).await.unwrap(), State::Connected);
    // The transport is usable again at once.
    assert!(f.register(&t, MQTT, "dev").await.is_ok());
}

// SRS_NODE_PROVISIONING_MQTT_18_034: cancel during a poll ends it with OperationCancelled.
#[actix_rt::test]
async fn srs_18_034_cancel_during_poll() {
    let f = Fixture::start(script("dev", requests([Step::Silent])));
    let t = f.transport(MQTT, "dev").await;
    let pending = t.send(QueryStatus {
        request: f.request(MQTT, "dev"),
        operation_id: "op".into(),
    });
    f.wait_for_publishes(1).await;
    assert!(t.send(Cancel).await.unwrap().is_ok());
    assert!(matches!(
        pending.await.unwrap(),
        Err(ProvisioningError::OperationCancelled)
    ));
}

// SRS_NODE_PROVISIONING_MQTT_18_052: disconnect while disconnected answers at once.
#[actix_rt::test]
async fn srs_18_052_disconnect_while_disconnected() {
    let f = Fixture::start(Script::new());
    let t = f.transport(MQTT, "dev").await;
    assert!(t.send(Disconnect::default()).await.unwrap().is_ok());
    assert!(f.broker.records().is_empty());
}

// SRS_NODE_PROVISIONING_MQTT_18_061: disconnect while connecting drops the connection and
// cancels the request behind it.
#[actix_rt::test]
async fn srs_18_061_disconnect_while_connecting() {
    let f = Fixture::start(script(
        "dev",
        connects([ConnectStep::DelayConnack { ms: 60_000 }]),
    ));
    let t = f.transport(MQTT, "dev").await;
    let pending = t.send(Register {
        request: f.request(MQTT, "dev"),
    });
    assert_eq!(t.send(GetState).await.unwrap(), State::Connecting);
    assert!(t.send(Disconnect::default()).await.unwrap().is_ok());
    assert!(matches!(
        pending.await.unwrap(),
        Err(ProvisioningError::OperationCancelled)
    ));
    assert_eq!(t.send(GetState).await.unwrap(), State::Disconnected);
}

// SRS_NODE_PROVISIONING_MQTT_18_054: disconnect while connected and idle disconnects;
// SRS_NODE_PROVISIONING_MQTT_18_044: by unsubscribing;
// SRS_NODE_PROVISIONING_MQTT_18_045: and then sending DISCONNECT.
#[actix_rt::test]
async fn srs_18_054_18_044_18_045_disconnect_unsubscribes_then_disconnects() {
    let f = Fixture::start(Script::new());
    let t = f.transport(MQTT, "dev").await;
    f.register(&t, MQTT, "dev").await.unwrap();
    assert!(t.send(Disconnect::default()).await.unwrap().is_ok());
    assert_eq!(t.send(GetState).await.unwrap(), State::Disconnected);
    let records = f.wait_all_closed().await;
    let events = &records[0].events;
    let unsubscribe = events.iter().position(
        |e| matches!(e, Event::Unsubscribe { topics } if topics == &["$dps/registrations/res/#"]),
    );
    let disconnect = events.iter().position(|e| matches!(e, Event::Disconnect));
    assert!(unsubscribe.unwrap() < disconnect.unwrap(), "{events:?}");
    assert_eq!(records[0].ended.as_deref(), Some("client sent DISCONNECT"));
}

// SRS_NODE_PROVISIONING_MQTT_18_055: disconnect during a register cancels it and disconnects.
#[actix_rt::test]
async fn srs_18_055_disconnect_during_register() {
    let f = Fixture::start(script("dev", requests([Step::Silent])));
    let t = f.transport(MQTT, "dev").await;
    let pending = t.send(Register {
        request: f.request(MQTT, "dev"),
    });
    f.wait_for_publishes(1).await;
    assert!(t.send(Disconnect::default()).await.unwrap().is_ok());
    assert!(matches!(
        pending.await.unwrap(),
        Err(ProvisioningError::OperationCancelled)
    ));
    let records = f.wait_all_closed().await;
    assert!(
        records[0]
            .events
            .iter()
            .any(|e| matches!(e, Event::Unsubscribe { .. }))
    );
    assert!(
        records[0]
            .events
            .iter()
            .any(|e| matches!(e, Event::Disconnect))
    );
}

// SRS_NODE_PROVISIONING_MQTT_18_056: disconnect during a poll cancels it and disconnects.
#[actix_rt::test]
async fn srs_18_056_disconnect_during_poll() {
    let f = Fixture::start(script("dev", requests([Step::Silent])));
    let t = f.transport(WS, "dev").await;
    let pending = t.send(QueryStatus {
        request: f.request(WS, "dev"),
        operation_id: "op".into(),
    });
    f.wait_for_publishes(1).await;
    assert!(t.send(Disconnect::default()).await.unwrap().is_ok());
    assert!(matches!(
        pending.await.unwrap(),
        Err(ProvisioningError::OperationCancelled)
    ));
    let records = f.wait_all_closed().await;
    assert!(
        records[0]
            .events
            .iter()
            .any(|e| matches!(e, Event::Disconnect))
    );
}

// SRS_NODE_PROVISIONING_MQTT_18_048: a failed unsubscribe or disconnect is reported; here the
// connection is already gone, which a disconnect counts as done (the session tests cover the
// failure preference).
#[actix_rt::test]
async fn srs_18_048_disconnect_after_the_connection_dropped_completes() {
    let f = Fixture::start(script(
        "dev",
        requests([Step::Default { delay_ms: 0 }, Step::Close { delay_ms: 0 }]),
    ));
    let t = f.transport(MQTT, "dev").await;
    f.register(&t, MQTT, "dev").await.unwrap();
    let err = f.register(&t, MQTT, "dev").await.unwrap_err();
    assert!(is_transport(&err));
    assert!(t.send(Disconnect::default()).await.unwrap().is_ok());
}

// SRS_NODE_PROVISIONING_MQTT_18_035: clientId is the registration id;
// SRS_NODE_PROVISIONING_MQTT_18_036: clean session is set;
// SRS_NODE_PROVISIONING_MQTT_18_038: the username is
// <idScope>/registrations/<registrationId>/api-version=2019-03-31&ClientVersion=<ua>.
#[actix_rt::test]
async fn srs_18_035_18_036_18_038_connect_packet_on_the_wire() {
    let f = Fixture::start(Script::new());
    let t = f.transport(MQTT, "dev-9").await;
    f.register(&t, MQTT, "dev-9").await.unwrap();
    let record = &f.broker.records()[0];
    assert_eq!(record.client_id, "dev-9");
    assert!(record.clean_session);
    assert_eq!(record.keep_alive, 60);
    let username = record.username.as_deref().unwrap();
    let prefix =
        format!("{SCOPE}/registrations/dev-9/api-version=2019-03-31&ClientVersion=dps-messages%2F");
    assert!(username.starts_with(&prefix), "{username}");
}

// SRS_NODE_PROVISIONING_MQTT_18_050: with no endpoint given, the transport connects to
// 'mqtts://' + provisioningDeviceHost: MQTT over TLS, to that host (its name in the TLS SNI)
// and port.
#[actix_rt::test]
async fn srs_18_050_connects_to_mqtts_host() {
    let f = Fixture::start(Script::new());
    let t = f.transport(MQTT, "dev").await;
    let host = format!("localhost:{}", f.broker.addr().port());
    let request = dps_messages::RegistrationRequest::new(SCOPE, "dev").with_host(host.clone());
    assert!(request.endpoint.is_none());
    let params = dps_messages::ConnectParams::new(MQTT, &request).unwrap();
    assert_eq!(params.endpoint.uri(), format!("mqtts://{host}"));
    t.send(Register { request }).await.unwrap().unwrap();
    let record = &f.broker.records()[0];
    assert_eq!(record.transport, Transport::Tls);
    assert_eq!(record.server_name.as_deref(), Some("localhost"));
}

// SRS_NODE_PROVISIONING_MQTT_18_039: an endpoint in the request replaces the host-derived one.
#[actix_rt::test]
async fn srs_18_039_the_request_endpoint_is_used() {
    let f = Fixture::start(Script::new());
    let t = f.transport(MQTT, "dev").await;
    // The host points nowhere; the endpoint is the broker.
    let request = f.request(MQTT, "dev").with_host("unreachable.invalid");
    t.send(Register { request }).await.unwrap().unwrap();
    assert_eq!(f.broker.records().len(), 1);
}

// SRS_NODE_PROVISIONING_MQTT_18_049: MqttWs connects over WebSocket to /$iothub/websocket.
#[actix_rt::test]
async fn srs_18_049_websocket_transport_provisions() {
    let f = Fixture::start(Script::new());
    let (_, polled) = register_and_poll(&f, WS, "ws-dev").await;
    assert_eq!(polled.result.status, RegistrationStatus::Assigned);
    let record = &f.broker.records()[0];
    assert_eq!(record.transport, Transport::Wss);
    assert_eq!(record.peer_cert_cn.as_deref(), Some("ws-dev"));
}

// SRS_NODE_PROVISIONING_MQTT_18_041: a connect error goes to the caller;
// SRS_NODE_PROVISIONING_MQTT_18_051: and the transport is disconnected.
#[actix_rt::test]
async fn srs_18_041_and_18_051_connack_refusal() {
    let f = Fixture::start(script("dev", connects([ConnectStep::Refuse { code: 5 }])));
    let t = f.transport(MQTT, "dev").await;
    let err = f.register(&t, MQTT, "dev").await.unwrap_err();
    assert!(
        matches!(
            err,
            ProvisioningError::ConnectionRefused(ConnackRefusal::NotAuthorized)
        ),
        "{err:?}"
    );
    assert_eq!(t.send(GetState).await.unwrap(), State::Disconnected);
    // The next request reconnects and succeeds.
    assert!(f.register(&t, MQTT, "dev").await.is_ok());
}

// SRS_NODE_PROVISIONING_MQTT_18_043: a subscribe error goes to the caller;
// SRS_NODE_PROVISIONING_MQTT_18_051: and the transport disconnects (sends DISCONNECT).
#[actix_rt::test]
async fn srs_18_043_and_18_051_suback_failure() {
    let f = Fixture::start(script("dev", connects([ConnectStep::FailSuback])));
    let t = f.transport(MQTT, "dev").await;
    let err = f.register(&t, MQTT, "dev").await.unwrap_err();
    assert_eq!(
        err.transport_kind(),
        Some(TransportErrorKind::Subscribe),
        "{err:?}"
    );
    assert_eq!(t.send(GetState).await.unwrap(), State::Disconnected);
    let records = f.wait_all_closed().await;
    assert!(
        records[0]
            .events
            .iter()
            .any(|e| matches!(e, Event::Disconnect)),
        "{records:?}"
    );
    assert!(records[0].publishes().is_empty());
}

#[actix_rt::test]
async fn a_silent_broker_ends_the_request_at_its_deadline() {
    let f = Fixture::start(script("dev", requests([Step::Silent])));
    let t = f
        .transport_with(
            f.builder(MQTT).response_timeout(SHORT).build().unwrap(),
            f.x509("dev"),
        )
        .await;
    let err = f.register(&t, MQTT, "dev").await.unwrap_err();
    assert!(
        matches!(err, ProvisioningError::Timeout { stage: Stage::Response, after, .. } if after == SHORT),
        "{err:?}"
    );
}

#[actix_rt::test]
async fn a_connection_dropped_before_connack_is_a_connect_error() {
    let f = Fixture::start(script("dev", connects([ConnectStep::DropBeforeConnack])));
    let t = f.transport(MQTT, "dev").await;
    let err = f.register(&t, MQTT, "dev").await.unwrap_err();
    assert_eq!(
        err.transport_kind(),
        Some(TransportErrorKind::Connect),
        "{err:?}"
    );
}

#[actix_rt::test]
async fn a_late_connack_is_a_connect_timeout() {
    let f = Fixture::start(script(
        "dev",
        connects([ConnectStep::DelayConnack { ms: 60_000 }]),
    ));
    let t = f
        .transport_with(
            f.builder(MQTT).connect_timeout(SHORT).build().unwrap(),
            f.x509("dev"),
        )
        .await;
    let err = f.register(&t, MQTT, "dev").await.unwrap_err();
    assert!(
        matches!(
            err,
            ProvisioningError::Timeout {
                stage: Stage::Connect,
                ..
            }
        ),
        "{err:?}"
    );
}

#[actix_rt::test]
async fn a_connection_dropped_mid_request_answers_at_once_and_the_next_request_reconnects() {
    let f = Fixture::start(script("dev", requests([Step::Close { delay_ms: 0 }])));
    let t = f.transport(MQTT, "dev").await;
    let err = f.register(&t, MQTT, "dev").await.unwrap_err();
    assert_eq!(
        err.transport_kind(),
        Some(TransportErrorKind::ConnectionLost),
        "{err:?}"
    );
    assert_eq!(t.send(GetState).await.unwrap(), State::Disconnected);
    assert!(f.register(&t, MQTT, "dev").await.is_ok());
    assert_eq!(f.broker.records().len(), 2);
}

#[actix_rt::test]
async fn malformed_responses_are_typed_errors_or_ignored() {
    let steps = [
        Step::Malformed {
            what: Malformation::BadJson,
        },
        Step::Malformed {
            what: Malformation::Oversized,
        },
        Step::Malformed {
            what: Malformation::NoRid,
        },
        Step::Malformed {
            what: Malformation::NonNumericStatus,
        },
    ];
    let f = Fixture::start(script("dev", requests(steps)));
    let t = f
        .transport_with(
            f.builder(MQTT).response_timeout(SHORT).build().unwrap(),
            f.x509("dev"),
        )
        .await;
    let register = || Register {
        request: f.request(MQTT, "dev"),
    };
    let err = t.send(register()).await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            ProvisioningError::Protocol(ProtocolError::BadJson { status: 200, .. })
        ),
        "{err:?}"
    );
    let err = t.send(register()).await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            ProvisioningError::Protocol(ProtocolError::PayloadTooLarge { .. })
        ),
        "{err:?}"
    );
    // Responses that cannot be correlated are ignored: the request ends at its deadline.
    for _ in 0..2 {
        let err = t.send(register()).await.unwrap().unwrap_err();
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
    }
    assert_eq!(t.send(GetState).await.unwrap(), State::Connected);
    assert!(t.send(register()).await.unwrap().is_ok());
}

#[actix_rt::test]
async fn an_untrusted_server_certificate_fails_with_the_tls_reason() {
    let f = Fixture::start(Script::new());
    let stranger = dps_mock_broker::TestPki::generate().unwrap();
    for protocol in [MQTT, WS] {
        let config = f
            .builder(protocol)
            .ca_pem(stranger.ca_pem())
            .build()
            .unwrap();
        let t = f.transport_with(config, f.x509("dev")).await;
        let err = f.register(&t, protocol, "dev").await.unwrap_err();
        let ProvisioningError::Tls(tls) = &err else {
            panic!("{protocol:?}: {err:?}")
        };
        assert!(
            matches!(
                tls,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            ),
            "{tls:?}"
        );
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    }
    assert!(f.broker.records().is_empty());
}

/// A server that presents `chain_pem` but signs with `key_pem`, another key: an impostor that
/// copied a real server's public certificate. Serves one handshake attempt.
fn impostor(chain_pem: &str, key_pem: &str) -> std::net::SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::server::{ClientHello, ResolvesServerCert};
    use rustls::sign::CertifiedKey;

    #[derive(Debug)]
    struct Fixed(Arc<CertifiedKey>);
    impl ResolvesServerCert for Fixed {
        fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            Some(self.0.clone())
        }
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(Arc::new(CertifiedKey::new(chain, key)))));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        let mut tls = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        while tls.complete_io(&mut tcp).is_ok() && tls.is_handshaking() {}
    });
    addr
}

/// The transport remembers a server chain it verified (one verification for many connections),
/// but every handshake must still prove the server holds the certificate's key.
#[actix_rt::test]
async fn a_remembered_server_certificate_without_its_key_is_refused() {
    let f = Fixture::start(Script::new());
    let config = f.config(MQTT);
    let t = f.transport_with(config.clone(), f.x509("dev")).await;
    assert!(f.register(&t, MQTT, "dev").await.is_ok());

    let other_key = dps_mock_broker::TestPki::generate().unwrap().server.key_pem;
    let addr = impostor(&f.pki.server.cert_pem, &other_key);
    let request = request_to(addr, "dev");
    let t = f.transport_with(config, f.x509("dev")).await;
    let err = t.send(Register { request }).await.unwrap().unwrap_err();
    let ProvisioningError::Tls(tls) = &err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(
            tls,
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)
        ),
        "{tls:?}"
    );
}

#[actix_rt::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let f = Fixture::start(Script::new());
    let stranger = dps_mock_broker::TestPki::generate().unwrap();
    let device = stranger.device("dev").unwrap();
    let identity =
        dps_messages::X509Identity::from_pem(device.cert_pem.as_bytes(), device.key_pem.as_bytes())
            .unwrap();
    let t = f.transport_with(f.config(MQTT), identity.into()).await;
    let err = f.register(&t, MQTT, "dev").await.unwrap_err();
    // TLS 1.3: the broker rejects the certificate after the client's handshake is over and
    // closes; either the alert or the close names the certificate.
    match &err {
        ProvisioningError::Tls(_) => {}
        ProvisioningError::Transport(TransportError {
            kind: TransportErrorKind::Connect,
            detail,
        }) => {
            assert!(detail.contains("client certificate"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    assert!(f.broker.records().is_empty());
}

#[actix_rt::test]
async fn a_certificate_for_another_device_is_not_authorized() {
    let f = Fixture::start(Script::new());
    let t = f
        .transport_with(f.config(MQTT), f.x509("someone-else"))
        .await;
    let err = f.register(&t, MQTT, "dev").await.unwrap_err();
    assert!(
        matches!(
            err,
            ProvisioningError::ConnectionRefused(ConnackRefusal::NotAuthorized)
        ),
        "{err:?}"
    );
}

#[actix_rt::test]
async fn an_expired_sas_token_is_not_authorized() {
    let f = Fixture::start(Script::new());
    let config = f
        .builder(MQTT)
        .sas_token_ttl(Duration::ZERO)
        .build()
        .unwrap();
    let t = f.transport_with(config, sas(KEY)).await;
    let err = f.register(&t, MQTT, "sas-dev").await.unwrap_err();
    assert!(
        matches!(
            err,
            ProvisioningError::ConnectionRefused(ConnackRefusal::NotAuthorized)
        ),
        "{err:?}"
    );
    assert!(
        matches!(&f.broker.records()[0].connack, Connack::Refused { reason, .. } if reason.contains("expired"))
    );
}

#[actix_rt::test]
async fn a_request_without_credentials_fails_without_connecting() {
    let f = Fixture::start(Script::new());
    let t = ProvisioningTransportActor::new(f.config(MQTT)).start();
    let err = f.register(&t, MQTT, "dev").await.unwrap_err();
    assert!(matches!(err, ProvisioningError::Auth(AuthError::Missing)));
    assert!(f.broker.records().is_empty());
}

#[actix_rt::test]
async fn a_second_request_in_flight_gets_operation_in_progress_and_the_first_is_untouched() {
    let f = Fixture::start(script("dev", requests([Step::Default { delay_ms: 300 }])));
    let t = f.transport(MQTT, "dev").await;
    let first = t.send(Register {
        request: f.request(MQTT, "dev"),
    });
    let second = f.register(&t, MQTT, "dev").await;
    assert!(matches!(
        second,
        Err(ProvisioningError::OperationInProgress)
    ));
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status_code, 202);
    assert_eq!(f.broker.records()[0].publishes().len(), 1);
}

#[actix_rt::test]
async fn responses_reach_only_their_own_transport() {
    let f = Fixture::start(Script::new());
    let a = f.transport(MQTT, "dev-a").await;
    let b = f.transport(WS, "dev-b").await;
    let (ra, rb) = futures_pair(
        a.send(Register {
            request: f.request(MQTT, "dev-a"),
        }),
        b.send(Register {
            request: f.request(WS, "dev-b"),
        }),
    )
    .await;
    let (ra, rb) = (ra.unwrap().unwrap(), rb.unwrap().unwrap());
    assert_ne!(ra.result.operation_id, rb.result.operation_id);
    for record in f.broker.records() {
        assert_eq!(record.responses().len(), 1);
        let rid = ResponseTopic::parse(record.responses()[0].0).unwrap().rid;
        assert!(record.publishes()[0].0.ends_with(&rid));
    }
}

async fn futures_pair<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    tokio::join!(a, b)
}

/// A restart answers what waited with a "send again" error (not "give up"), drops the
/// connection, keeps the credentials, and the next request works: under a real `Supervisor`
/// and without one alike.
#[actix_rt::test]
async fn a_restart_answers_pending_requests_with_send_again_and_the_next_request_works() {
    let f = Fixture::start(Script::new().fallback(requests([Step::Silent])));
    let supervised = {
        let config = f.config(MQTT);
        Supervisor::start(move |_| ProvisioningTransportActor::new(config))
    };
    let plain = ProvisioningTransportActor::new(f.config(MQTT)).start();
    for (t, id) in [(supervised, "supervised"), (plain, "plain")] {
        t.send(SetAuthentication(f.x509(id))).await.unwrap();
        let pending = t.send(Register {
            request: f.request(MQTT, id),
        });
        f.wait_for(move |r| {
            r.iter()
                .any(|c| c.client_id == id && !c.publishes().is_empty())
        })
        .await;
        t.send(Restart).await.unwrap();
        let err = pending.await.unwrap().unwrap_err();
        assert_eq!(
            err.transport_kind(),
            Some(TransportErrorKind::Restarted),
            "{id}: {err:?}"
        );
        assert!(err.to_string().contains("send the request again"), "{err}");
        assert_eq!(t.send(GetState).await.unwrap(), State::Disconnected);
        // The silent step is used up: the restarted actor, with its credentials, registers.
        let response = f.register(&t, MQTT, id).await.unwrap();
        assert_eq!(response.status_code, 202, "{id}");
    }
    // Each restart dropped its connection.
    let records = f
        .wait_for(|r| r.len() == 4 && r[0].is_closed() && r[2].is_closed())
        .await;
    assert_eq!(
        records
            .iter()
            .map(|r| r.client_id.as_str())
            .collect::<Vec<_>>(),
        ["supervised", "supervised", "plain", "plain"]
    );
}

#[actix_rt::test]
async fn the_actor_can_be_driven_through_recipients() {
    let f = Fixture::start(Script::new());
    let t = f.transport(WS, "dev").await;
    let register: actix::Recipient<Register> = t.clone().recipient();
    let poll: actix::Recipient<QueryStatus> = t.clone().recipient();
    let disconnect: actix::Recipient<Disconnect> = t.recipient();
    let op = register
        .send(Register {
            request: f.request(WS, "dev"),
        })
        .await
        .unwrap()
        .unwrap()
        .result
        .operation_id
        .unwrap();
    let r = poll
        .send(QueryStatus {
            request: f.request(WS, "dev"),
            operation_id: op,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.result.status, RegistrationStatus::Assigned);
    assert!(
        disconnect
            .send(Disconnect::default())
            .await
            .unwrap()
            .is_ok()
    );
}

/// An actor whose every address is gone answers what was pending (at its deadline), then
/// stops and drops its connection: its connection does not keep it alive.
#[actix_rt::test]
async fn an_actor_whose_addresses_are_gone_stops_and_drops_its_connection() {
    let f = Fixture::start(script("dev", requests([Step::Silent])));
    let config = f.builder(MQTT).response_timeout(SHORT).build().unwrap();
    let t = f.transport_with(config, f.x509("dev")).await;
    let pending = t.send(Register {
        request: f.request(MQTT, "dev"),
    });
    f.wait_for_publishes(1).await;
    drop(t);
    let err = pending.await.unwrap().unwrap_err();
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
    f.wait_all_closed().await;
}
