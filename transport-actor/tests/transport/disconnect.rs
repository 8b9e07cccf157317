//! `disconnect` (SRS 18_052 .. 18_061) in every state, and the transport disconnection
//! (18_044, 18_045, 18_048).

use super::*;

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
    let events: Vec<&Event> = records[0].kinds().collect();
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
            .kinds()
            .any(|e| matches!(e, Event::Unsubscribe { .. }))
    );
    assert!(records[0].kinds().any(|e| matches!(e, Event::Disconnect)));
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
    assert!(records[0].kinds().any(|e| matches!(e, Event::Disconnect)));
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
