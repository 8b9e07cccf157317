//! The actor beyond the spec's sections: where it runs, how it restarts and stops, how it
//! answers a silent, dropped or malformed service, and that its answers reach only it.

use super::*;

/// An actor started on the MQTT runtime thread, beside its connection, is driven from this
/// (another) thread exactly as one started here.
#[actix_rt::test]
async fn an_actor_on_the_runtime_thread_registers_and_disconnects() {
    let f = Fixture::start(Script::new());
    let t = ProvisioningTransportActor::new(f.config(MQTT))
        .with_authentication(f.x509("dev"))
        .start_on_runtime()
        .unwrap();
    let response = f.register(&t, MQTT, "dev").await.unwrap();
    assert_eq!(response.status_code, 202);
    assert_eq!(t.send(GetState).await.unwrap(), State::Connected);
    t.send(Disconnect::default()).await.unwrap().unwrap();
    assert_eq!(t.send(GetState).await.unwrap(), State::Disconnected);
    let records = f.wait_all_closed().await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].publishes().len(), 1);
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
        let rid = record.responses()[0].rid().unwrap().to_owned();
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
