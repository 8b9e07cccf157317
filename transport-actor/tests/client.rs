//! ProvisioningClient against the mock broker: the whole registration in one call.

mod common;

use std::time::Duration;

use common::*;
use dps_messages::error::Stage;
use dps_messages::{Protocol, ProvisioningError, RegistrationStatus};
use dps_mock_broker::Script;
use dps_mock_broker::script::{DeviceScript, Step};
use dps_transport_actor::{ClientOptions, ProvisioningClient, RequestLimit};
use serde_json::json;

const MQTT: Protocol = Protocol::Mqtt;

fn fast() -> ClientOptions {
    ClientOptions {
        min_interval: Duration::ZERO,
        max_interval: Duration::from_millis(50),
        deadline: LONG,
        ..ClientOptions::default()
    }
}

async fn client(f: &Fixture, id: &str, options: ClientOptions) -> ProvisioningClient {
    ProvisioningClient::new(f.transport(MQTT, id).await, options)
}

/// For each publish on the first connection, whether it was a register (PUT) rather than a poll.
fn registers(f: &Fixture) -> Vec<bool> {
    f.broker.records()[0]
        .publishes()
        .iter()
        .map(|(t, _)| t.contains("PUT"))
        .collect()
}

#[actix_rt::test]
async fn assigned_ends_with_the_result_and_disconnects() {
    let f = Fixture::start(Script::new());
    let c = client(&f, "dev", fast()).await;
    let result = c
        .register(f.request(MQTT, "dev").with_payload(json!({"a": 1})))
        .await
        .unwrap();
    assert_eq!(result.status, RegistrationStatus::Assigned);
    let state = result.registration_state.unwrap();
    assert_eq!(
        state.assigned_hub.as_deref(),
        Some(dps_mock_broker::DEFAULT_ASSIGNED_HUB)
    );
    assert_eq!(state.payload, Some(json!({"a": 1})));
    let records = f.wait_all_closed().await;
    assert_eq!(records[0].ended.as_deref(), Some("client sent DISCONNECT"));
}

#[actix_rt::test]
async fn failed_ends_with_a_registration_failed_error_carrying_the_result() {
    let failed = json!({"status": "failed", "registrationState": {"status": "failed", "errorCode": 400209, "errorMessage": "no hub"}});
    let f = Fixture::start(steps(
        "dev",
        [
            Step::Default { delay_ms: 0 },
            Step::respond(200).with_body(failed),
        ],
    ));
    let err = client(&f, "dev", fast())
        .await
        .register(f.request(MQTT, "dev"))
        .await
        .unwrap_err();
    let ProvisioningError::RegistrationFailed(result) = &err else {
        panic!("{err:?}")
    };
    let state = result.registration_state.as_ref().unwrap();
    assert_eq!(
        (state.error_code, state.error_message.as_deref()),
        (Some(400209), Some("no hub"))
    );
    assert!(err.to_string().contains("400209: no hub"), "{err}");
}

#[actix_rt::test]
async fn disabled_unassigned_and_unknown_statuses_are_typed_errors() {
    for status in ["disabled", "unassigned", "quantum"] {
        let f = Fixture::start(steps(
            "dev",
            [Step::respond(200).with_body(json!({"status": status}))],
        ));
        let err = client(&f, "dev", fast())
            .await
            .register(f.request(MQTT, "dev"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ProvisioningError::RegistrationNotAssigned(r) if r.status.as_str() == status),
            "{err:?}"
        );
    }
}

#[actix_rt::test]
async fn throttled_and_5xx_responses_are_retried_until_assigned() {
    let script = steps(
        "dev",
        [
            Step::respond(429),
            Step::respond(503),
            Step::Default { delay_ms: 0 },
            Step::respond(500),
            Step::Default { delay_ms: 0 },
        ],
    );
    let f = Fixture::start(script);
    let result = client(&f, "dev", fast())
        .await
        .register(f.request(MQTT, "dev"))
        .await
        .unwrap();
    assert_eq!(result.status, RegistrationStatus::Assigned);
    // register, register, register (202), poll (500 -> still assigning), poll (200).
    assert_eq!(registers(&f), vec![true, true, true, false, false]);
}

#[actix_rt::test]
async fn a_poll_answered_without_an_operation_id_starts_again_from_register() {
    let f = Fixture::start(steps(
        "dev",
        [Step::respond(202).with_body(json!({"status": "assigning", "operationId": null}))],
    ));
    let result = client(&f, "dev", fast())
        .await
        .register(f.request(MQTT, "dev"))
        .await
        .unwrap();
    assert_eq!(result.status, RegistrationStatus::Assigned);
    assert_eq!(registers(&f), vec![true, true, false]);
}

/// Registers `dev` with `options` until assigned; the requests and responses of its first
/// connection, as the broker saw them.
async fn assigned_with(
    f: &Fixture,
    options: ClientOptions,
) -> (
    Vec<dps_mock_broker::record::RequestRecord>,
    Vec<dps_mock_broker::record::ResponseRecord>,
) {
    client(f, "dev", options)
        .await
        .register(f.request(MQTT, "dev"))
        .await
        .unwrap();
    let record = &f.broker.records()[0];
    (record.requests(), record.responses())
}

/// Issue 20: with `retry-after: 1` the poll once waited the client's 2 s floor. It goes after
/// exactly the second the service asked for, never sooner, with the default floor kept.
#[actix_rt::test]
async fn the_service_retry_after_is_waited_exactly_even_below_the_floor() {
    let f = Fixture::start_with(Script::new(), |b| b.retry_after(1));
    let options = ClientOptions {
        min_interval: ClientOptions::default().min_interval,
        jitter: false,
        ..fast()
    };
    let (requests, responses) = assigned_with(&f, options).await;
    assert!(requests[0].is_register() && requests[1].is_poll());
    assert_eq!(responses[0].retry_after(), Some("1"));
    let waited = requests[1].at - responses[0].at;
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(2),
        "the poll went {waited:?} after the answer that asked for 1 s"
    );
}

/// Issue 20: the device keeps the service's request limit itself, a sliding window over its
/// registers and polls. With at most 2 requests in 500 ms and a service that asks for no wait,
/// the third request goes 500 ms after the first one's answer.
#[actix_rt::test]
async fn a_device_keeps_its_request_limit_when_the_service_asks_for_no_wait() {
    // A poll's scripted answer takes the poll's operation id.
    let assigning = || {
        Step::respond(202)
            .with_body(json!({"status": "assigning"}))
            .with_retry_after("0")
    };
    let register = Step::Default { delay_ms: 0 };
    let f = Fixture::start(steps("dev", [register, assigning(), assigning()]));
    let window = Duration::from_millis(500);
    let options = ClientOptions {
        request_limit: Some(RequestLimit::new(2, window)),
        ..fast()
    };
    let (requests, responses) = assigned_with(&f, options).await;
    assert_eq!(requests.len(), 4, "three assigning answers, then assigned");
    for i in 2..requests.len() {
        let since = requests[i].at - responses[i - 2].at;
        assert!(
            since >= window,
            "request {i} went {since:?} after the answer two requests back"
        );
    }
}

/// The limit is the device's, not one registration's: a client that registers twice keeps one
/// window over both (at most 2 in 500 ms: the second registration's register waits for the
/// window of the first's answers).
#[actix_rt::test]
async fn a_second_registration_of_the_same_client_keeps_the_window_of_the_first() {
    let f = Fixture::start(Script::new());
    let window = Duration::from_millis(500);
    let options = ClientOptions {
        request_limit: Some(RequestLimit::new(2, window)),
        ..fast()
    };
    let c = client(&f, "dev", options).await;
    for _ in 0..2 {
        c.register(f.request(MQTT, "dev")).await.unwrap();
    }
    let records = f.wait_all_closed().await;
    assert_eq!(records.len(), 2, "one connection per registration");
    let first = records[0].responses();
    let second = records[1].requests();
    // Timestamps are per connection; place them on one clock by the connections' starts.
    let since = (records[1].started() + second[0].at) - (records[0].started() + first[0].at);
    assert!(
        since >= window,
        "the second registration's register went {since:?} after the first one's first answer"
    );
}

#[actix_rt::test]
async fn the_overall_deadline_ends_a_registration_the_service_never_answers() {
    let f = Fixture::start(steps("dev", [Step::Silent]));
    let options = ClientOptions {
        deadline: SHORT,
        ..fast()
    };
    let err = client(&f, "dev", options)
        .await
        .register(f.request(MQTT, "dev"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProvisioningError::Timeout { stage: Stage::Registration, after, .. } if after == SHORT),
        "{err:?}"
    );
}

#[actix_rt::test]
async fn cancel_ends_a_running_registration_and_a_second_register_is_refused() {
    let f = Fixture::start(steps("dev", [Step::Silent]));
    let c = client(&f, "dev", fast()).await;
    let running = {
        let c = c.clone();
        let request = f.request(MQTT, "dev");
        actix_rt::spawn(async move { c.register(request).await })
    };
    f.wait_for_publishes(1).await;
    let second = c.register(f.request(MQTT, "dev")).await;
    assert!(matches!(
        second,
        Err(ProvisioningError::OperationInProgress)
    ));
    c.cancel();
    assert!(matches!(
        running.await.unwrap(),
        Err(ProvisioningError::OperationCancelled)
    ));
    // Nothing runs now: the client is usable again.
    c.cancel();
}

#[actix_rt::test]
async fn a_connection_dropped_mid_poll_is_retried() {
    let f = Fixture::start(steps(
        "dev",
        [Step::Default { delay_ms: 0 }, Step::Close { delay_ms: 0 }],
    ));
    let result = client(&f, "dev", fast())
        .await
        .register(f.request(MQTT, "dev"))
        .await
        .unwrap();
    assert_eq!(result.status, RegistrationStatus::Assigned);
    assert_eq!(f.broker.records().len(), 2);
}

#[actix_rt::test]
async fn the_cache_returns_a_saved_assignment_without_contacting_dps_unless_forced() {
    let f = Fixture::start(Script::new());
    let path = std::env::temp_dir().join(format!("dps-client-cache-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let options = ClientOptions {
        cache_file: Some(path.clone()),
        ..fast()
    };
    let first = client(&f, "dev", options.clone())
        .await
        .register(f.request(MQTT, "dev"))
        .await
        .unwrap();
    assert!(path.is_file());
    let again = client(&f, "dev", options.clone())
        .await
        .register(f.request(MQTT, "dev"))
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(
        f.broker.records().len(),
        1,
        "the cached call must not connect"
    );
    let forced = ClientOptions {
        force: true,
        ..options
    };
    client(&f, "dev", forced)
        .await
        .register(f.request(MQTT, "dev"))
        .await
        .unwrap();
    assert_eq!(f.broker.records().len(), 2);
    std::fs::remove_file(&path).unwrap();
}

#[actix_rt::test]
async fn service_errors_end_the_registration() {
    let f = Fixture::start(steps("dev", [Step::respond(401)]));
    let err = client(&f, "dev", fast())
        .await
        .register(f.request(MQTT, "dev"))
        .await
        .unwrap_err();
    assert!(matches!(err, ProvisioningError::Unauthorized(_)), "{err:?}");
}

/// An `assigned` answer without a hub would leave the device nowhere to go: a protocol error,
/// and nothing is cached.
#[actix_rt::test]
async fn assigned_without_a_hub_is_a_protocol_error_and_is_not_cached() {
    let f = Fixture::start(steps(
        "dev",
        [
            Step::Default { delay_ms: 0 },
            Step::respond(200)
                .with_body(json!({"status": "assigned", "registrationState": {"deviceId": "dev"}})),
        ],
    ));
    let path = std::env::temp_dir().join(format!("dps-client-nohub-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let options = ClientOptions {
        cache_file: Some(path.clone()),
        ..fast()
    };
    let err = client(&f, "dev", options)
        .await
        .register(f.request(MQTT, "dev"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProvisioningError::Protocol(dps_messages::error::ProtocolError::IncompleteAssignment {
                missing: "registrationState.assignedHub"
            })
        ),
        "{err:?}"
    );
    assert!(!path.exists());
}

/// A cache entry without a hub (an older version wrote those) is never used: it is set aside,
/// the device provisions again and the cache gets a complete assignment.
#[actix_rt::test]
async fn a_cached_assignment_without_a_hub_is_ignored() {
    let f = Fixture::start(Script::new());
    let path =
        std::env::temp_dir().join(format!("dps-client-oldcache-{}.json", std::process::id()));
    let stale =
        json!({"id_scope": SCOPE, "registration_id": "dev", "result": {"status": "assigned"}});
    std::fs::write(&path, stale.to_string()).unwrap();
    let options = ClientOptions {
        cache_file: Some(path.clone()),
        ..fast()
    };
    let result = client(&f, "dev", options)
        .await
        .register(f.request(MQTT, "dev"))
        .await
        .unwrap();
    assert_eq!(f.broker.records().len(), 1, "the stale entry was not used");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        saved["result"]["registrationState"]["assignedHub"],
        json!(result.registration_state.unwrap().assigned_hub.unwrap())
    );
    let aside = std::path::PathBuf::from(format!("{}.corrupt", path.display()));
    let kept: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&aside).unwrap()).unwrap();
    assert_eq!(kept, stale);
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(&aside).unwrap();
}

/// Never sooner than the service asks: after a 429 with `retry-after: 1`, the next request
/// waits at least that second, even with no floor, a 50 ms cap, and jitter on. (It used to be
/// cut to the cap, and jitter was subtracted.)
#[actix_rt::test]
async fn the_next_request_after_a_429_waits_at_least_its_retry_after() {
    let f = Fixture::start(steps("dev", [Step::respond(429).with_retry_after(1)]));
    let options = ClientOptions {
        jitter: true,
        ..fast()
    };
    let started = std::time::Instant::now();
    let result = client(&f, "dev", options)
        .await
        .register(f.request(MQTT, "dev"))
        .await
        .unwrap();
    assert_eq!(result.status, RegistrationStatus::Assigned);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(registers(&f), vec![true, true, false]);
}

/// A transport restarted under a running registration answers "send again"; the client does,
/// and the registration completes.
#[actix_rt::test]
async fn a_transport_restarted_mid_registration_is_retried() {
    let f = Fixture::start(steps("dev", [Step::Silent]));
    let transport = f.transport(MQTT, "dev").await;
    let c = ProvisioningClient::new(transport.clone(), fast());
    let running = {
        let request = f.request(MQTT, "dev");
        actix_rt::spawn(async move { c.register(request).await })
    };
    f.wait_for_publishes(1).await;
    transport.send(dps_transport_actor::Restart).await.unwrap();
    let result = running.await.unwrap().unwrap();
    assert_eq!(result.status, RegistrationStatus::Assigned);
    assert_eq!(f.broker.records().len(), 2);
}

/// A registration whose future is dropped (an outer timeout) frees the client: the next call
/// runs and completes instead of failing with OperationInProgress forever.
#[actix_rt::test]
async fn a_dropped_registration_frees_the_client() {
    let f = Fixture::start(steps("dev", [Step::Silent]));
    let c = client(&f, "dev", fast()).await;
    let dropped = tokio::time::timeout(SHORT, c.register(f.request(MQTT, "dev"))).await;
    assert!(dropped.is_err());
    let result = c.register(f.request(MQTT, "dev")).await.unwrap();
    assert_eq!(result.status, RegistrationStatus::Assigned);
    let records = f.wait_all_closed().await;
    assert_eq!(
        records.len(),
        2,
        "the dropped registration's connection was closed"
    );
}

/// Issue 10, item 4: a service that closes every connection right after the SUBACK. The
/// registration ends at its deadline, and says why the attempts failed, not a bare "timed out"
/// or "connection lost".
#[actix_rt::test]
async fn a_deadline_after_lost_connections_says_how_they_were_lost() {
    use dps_mock_broker::script::ConnectStep;
    let closes = (0..200).fold(DeviceScript::new(), |s, _| {
        s.connect(ConnectStep::CloseAfterSuback)
    });
    let f = Fixture::start(Script::new().device("dev", closes));
    let options = ClientOptions {
        deadline: Duration::from_millis(600),
        ..fast()
    };
    let err = client(&f, "dev", options)
        .await
        .register(f.request(MQTT, "dev"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("timed out after 600ms waiting for the registration to finish ("),
        "{text}"
    );
    assert!(
        text.contains(" attempts); the last attempt failed: transport error: "),
        "{text}"
    );
    // The close reaches the client as a close or, when the client's publish was still on its
    // way, as a reset: either way the error says what the loss interrupted.
    let closed = text.contains("the service closed the connection before the");
    let reset = text.contains("reset by peer") && text.contains(" before the ");
    assert!(closed || reset, "{text}");
    assert!(f.broker.records().len() > 1, "the client retried");
}

/// An actor of one's own between the client and the transport (here one that counts what
/// passes through): the client takes any actor that handles its messages.
#[actix_rt::test]
async fn the_client_works_through_any_actor_that_handles_its_messages() {
    use actix::{Actor, Addr, Context, Handler, ResponseFuture};
    type RequestResult =
        Result<dps_messages::RegistrationResponse, dps_messages::ProvisioningError>;
    use dps_messages::{Disconnect, QueryStatus, Register};
    use dps_transport_actor::ProvisioningTransportActor;

    struct Counting {
        inner: Addr<ProvisioningTransportActor>,
        seen: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }
    impl Actor for Counting {
        type Context = Context<Self>;
    }
    impl Counting {
        fn count(&self) {
            self.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    impl Handler<Register> for Counting {
        type Result = ResponseFuture<RequestResult>;
        fn handle(&mut self, msg: Register, _: &mut Context<Self>) -> Self::Result {
            self.count();
            let sent = self.inner.send(msg);
            Box::pin(async move { sent.await.unwrap_or_else(|e| Err(e.into())) })
        }
    }
    impl Handler<QueryStatus> for Counting {
        type Result = ResponseFuture<RequestResult>;
        fn handle(&mut self, msg: QueryStatus, _: &mut Context<Self>) -> Self::Result {
            self.count();
            let sent = self.inner.send(msg);
            Box::pin(async move { sent.await.unwrap_or_else(|e| Err(e.into())) })
        }
    }
    impl Handler<Disconnect> for Counting {
        type Result = ResponseFuture<Result<(), ProvisioningError>>;
        fn handle(&mut self, msg: Disconnect, _: &mut Context<Self>) -> Self::Result {
            self.count();
            let sent = self.inner.send(msg);
            Box::pin(async move { sent.await.unwrap_or_else(|e| Err(e.into())) })
        }
    }

    let f = Fixture::start(Script::new());
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let wrapper = Counting {
        inner: f.transport(MQTT, "dev").await,
        seen: seen.clone(),
    }
    .start();
    let result = ProvisioningClient::new(wrapper, fast())
        .register(f.request(MQTT, "dev"))
        .await
        .unwrap();
    assert_eq!(result.status, RegistrationStatus::Assigned);
    // Register, poll, disconnect.
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// The broker with an enrollment group (symmetric key) that assigns to `hub`, statically.
fn moving_group(hub: &str) -> dps_mock_broker::enrollment::EnrollmentGroup {
    use dps_mock_broker::enrollment::{AllocationPolicy, EnrollmentGroup};
    EnrollmentGroup::symmetric_key("movers", GROUP_KEY)
        .hubs([hub])
        .allocation(AllocationPolicy::Static)
}

#[actix_rt::test]
async fn a_reprovisioned_device_sees_its_new_hub_and_substatus_and_a_disabled_one_an_error() {
    let f = Fixture::start_with(Script::new(), |b| {
        b.enrollment_group(moving_group("hub-a.example"))
    });
    let register = || async {
        let key = dps_messages::SymmetricKey::from_group_key(GROUP_KEY, "mover").unwrap();
        let transport = f.transport_with(f.config(MQTT), key.into()).await;
        ProvisioningClient::new(transport, fast())
            .register(f.request(MQTT, "mover"))
            .await
    };
    let first = register().await.unwrap().registration_state.unwrap();
    assert_eq!(first.assigned_hub.as_deref(), Some("hub-a.example"));
    assert_eq!(first.substatus.as_deref(), Some("initialAssignment"));

    let now = std::time::SystemTime::now();
    let enrollments = f.broker.enrollments();
    enrollments
        .put_group(moving_group("hub-b.example"), None, now)
        .unwrap();
    let moved = register().await.unwrap().registration_state.unwrap();
    assert_eq!(moved.assigned_hub.as_deref(), Some("hub-b.example"));
    assert_eq!(moved.substatus.as_deref(), Some("deviceDataMigrated"));

    enrollments
        .put_group(moving_group("hub-b.example").disabled(), None, now)
        .unwrap();
    let err = register().await.unwrap_err();
    let ProvisioningError::RegistrationNotAssigned(result) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(result.status, RegistrationStatus::Disabled);
}
