//! The transport connection (SRS 18_035 .. 18_043, 18_049 .. 18_051): what the device sends to
//! connect and subscribe, where, and what a failure to do either does; and a herd of devices
//! taking turns to connect.

use super::*;

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
    let endpoint = dps_messages::connect::Endpoint::for_host(MQTT, &host).unwrap();
    assert_eq!(endpoint.uri(), format!("mqtts://{host}"));
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

/// Where to connect has one source: an endpoint of the other protocol is refused before any
/// connection, not silently followed.
#[actix_rt::test]
async fn an_endpoint_of_the_other_protocol_is_refused_before_connecting() {
    let f = Fixture::start(Script::new());
    let t = f.transport(MQTT, "dev").await;
    let request = f.request(WS, "dev");
    let err = t.send(Register { request }).await.unwrap().unwrap_err();
    assert!(
        matches!(
            &err,
            ProvisioningError::EndpointMismatch { configured, .. } if *configured == MQTT
        ),
        "{err:?}"
    );
    assert_eq!(t.send(GetState).await.unwrap(), State::Disconnected);
    assert!(f.broker.records().is_empty());
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
        records[0].kinds().any(|e| matches!(e, Event::Disconnect)),
        "{records:?}"
    );
    assert!(records[0].publishes().is_empty());
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
    use dps_transport_actor::MqttRuntime;
    /// The runtime's opening turns (`runtime::MAX_OPENING`): should they grow, the last
    /// device below connects at once and the test says so.
    const MAX_OPENING: usize = 64;

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
