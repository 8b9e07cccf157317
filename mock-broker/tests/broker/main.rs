//! The mock broker driven by a real MQTT client over TLS and WebSocket, one concern per file.

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod dps;
mod enrollments;
mod script;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use dps_messages::SymmetricKey;
use dps_messages::response::ResponseTopic;
use dps_mock_broker::record::Connack;
use dps_mock_broker::script::{ConnectStep, DeviceScript, Malformation, Step};
use dps_mock_broker::{BrokerHandle, MockBroker, Script, TestPki};
use ntex_mqtt::v3::client::ClientError;
use ntex_mqtt::v3::codec::{ConnectAckReason, SubscribeReturnCode};
use serde_json::json;

fn pki() -> Arc<TestPki> {
    Arc::new(TestPki::generate().unwrap())
}

fn broker_with(script: Script) -> (Arc<BrokerHandle>, Arc<TestPki>) {
    let pki = pki();
    let broker = MockBroker::builder()
        .pki(pki.clone())
        .retry_after(0)
        .symmetric_key("sas-dev", KEY)
        .script(script)
        .start()
        .unwrap();
    (Arc::new(broker), pki)
}

fn x509(broker: &BrokerHandle, pki: &TestPki, id: &str) -> Options {
    Options::new(broker, id).identity(pki.device(id).unwrap())
}

fn sas(broker: &BrokerHandle, id: &str, key: &str, expiry: u64) -> Options {
    let token =
        SymmetricKey::new(key)
            .unwrap()
            .sas_token(dps_mock_broker::DEFAULT_ID_SCOPE, id, expiry);
    Options::new(broker, id).password(token.to_string())
}

fn far_future() -> u64 {
    4_000_000_000
}

async fn register(client: &Client, id: &str, rid: &str, payload: Option<serde_json::Value>) {
    let mut body = json!({"registrationId": id});
    if let Some(p) = payload {
        body["payload"] = p;
    }
    client
        .publish(&register_topic(rid), body.to_string().as_bytes())
        .await;
}

fn refused_with(result: ConnectResult) -> ConnectAckReason {
    match result {
        Err(ClientError::Ack(ack)) => ack.return_code,
        Err(other) => panic!("expected a CONNACK refusal, got {other:?}"),
        Ok(_) => panic!("expected a CONNACK refusal, got a connection"),
    }
}
