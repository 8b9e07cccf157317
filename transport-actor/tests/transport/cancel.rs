//! `cancel` (SRS 18_030 .. 18_034, 18_062) in every state.

use super::*;

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
