//! Every SRS requirement of the MQTT transport, over real TLS and WebSocket sockets against the
//! mock DPS broker: one file per section of the spec (`spec/mqtt_requirements.md`), and the
//! actor's own behaviour beyond it.

#[path = "../common/mod.rs"]
mod common;

mod actor;
mod authentication;
mod cancel;
mod connection;
mod disconnect;
mod query_status;
mod register;

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Supervisor};
use common::*;
use dps_messages::error::{
    AuthError, ConnackRefusal, ProtocolError, Stage, TransportError, TransportErrorKind,
};
use dps_messages::{
    Cancel, Disconnect, Protocol, ProvisioningError, QueryStatus, Register, RegistrationStatus,
    SetAuthentication,
};
use dps_mock_broker::Script;
use dps_mock_broker::record::Transport;
use dps_mock_broker::record::{Connack, Event};
use dps_mock_broker::script::{ConnectStep, DeviceScript, Malformation, Step};
use dps_transport_actor::{GetState, ProvisioningTransportActor, Restart, State};
use serde_json::json;

/// The register topic up to the request id, as the wire has it (SRS 18_003).
const REGISTER_TOPIC_PREFIX: &str = "$dps/registrations/PUT/iotdps-register/?$rid=";

/// The poll topic up to the request id, as the wire has it (SRS 18_017).
const POLL_TOPIC_PREFIX: &str = "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=";

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

/// A request for `id` sent over MQTT/TLS to `addr` instead of the fixture's broker.
fn request_to(addr: std::net::SocketAddr, id: &str) -> dps_messages::RegistrationRequest {
    dps_messages::RegistrationRequest::new(SCOPE, id).with_endpoint(format!("mqtts://{addr}"))
}
