//! The tests of `polling`.

use dps_messages::error::{ProtocolError, TransportError, TransportErrorKind};
use serde_json::json;

use super::*;

/// A response whose retry-after was `interval` seconds.
fn response(status_code: u16, body: serde_json::Value, interval: u64) -> RegistrationResponse {
    RegistrationResponse {
        status_code,
        result: serde_json::from_value(body).unwrap(),
        polling_interval: Duration::from_secs(interval),
        retry_after: Some(Duration::from_secs(interval)),
        invalid_retry_after: None,
    }
}

/// The same without a retry-after: the interval is the transport's default.
fn unasked(mut response: RegistrationResponse) -> RegistrationResponse {
    response.retry_after = None;
    response
}

fn options(min: u64, max: u64) -> ClientOptions {
    ClientOptions {
        min_interval: Duration::from_secs(min),
        max_interval: Duration::from_secs(max),
        ..ClientOptions::default()
    }
}

fn exact(min: u64, max: u64) -> ClientOptions {
    ClientOptions {
        jitter: false,
        ..options(min, max)
    }
}

fn assigning(operation_id: Option<&str>, interval: u64) -> RegistrationResponse {
    let mut body = json!({"status": "assigning"});
    if let Some(id) = operation_id {
        body["operationId"] = id.into();
    }
    response(202, body, interval)
}

fn assigned() -> serde_json::Value {
    json!({"status": "assigned", "registrationState": {"assignedHub": "h", "deviceId": "d"}})
}

fn throttled(interval: u64) -> RegistrationResponse {
    response(429, json!({"status": "registering"}), interval)
}

fn lost() -> ProvisioningError {
    TransportError::new(TransportErrorKind::ConnectionLost, "gone").into()
}

/// `Polling::answer` with fresh jitter.
fn ans(
    p: &mut Polling,
    answer: Result<RegistrationResponse, ProvisioningError>,
    o: &ClientOptions,
) -> Next {
    p.answer(answer, o, &mut Rng::from_entropy())
}

fn wait(next: Next) -> Duration {
    match next {
        Next::Wait(wait) => wait,
        Next::Done(done) => panic!("expected a wait, got {done:?}"),
    }
}

#[test]
fn polling_ends_with_the_service_decision() {
    let o = options(0, 60);
    let mut p = Polling::default();
    let Next::Done(Ok(result)) = ans(&mut p, Ok(response(200, assigned(), 0)), &o) else {
        panic!("assigned ends the registration")
    };
    assert_eq!(result.status, RegistrationStatus::Assigned);
    let failed = json!({"status": "failed", "registrationState": {"errorCode": 400207, "errorMessage": "no hub"}});
    let Next::Done(Err(ProvisioningError::RegistrationFailed(result))) =
        ans(&mut p, Ok(response(200, failed, 0)), &o)
    else {
        panic!("failed is RegistrationFailed")
    };
    assert_eq!(result.registration_state.unwrap().error_code, Some(400207));
    for status in ["disabled", "unassigned", "something-new"] {
        let next = ans(&mut p, Ok(response(200, json!({"status": status}), 0)), &o);
        assert!(
            matches!(
                next,
                Next::Done(Err(ProvisioningError::RegistrationNotAssigned(_)))
            ),
            "{status}: {next:?}"
        );
    }
    let next = ans(&mut p, Err(ProvisioningError::OperationCancelled), &o);
    assert!(matches!(
        next,
        Next::Done(Err(ProvisioningError::OperationCancelled))
    ));
}

/// `assigned` without a hub (or device id) would leave the device nowhere to go.
#[test]
fn assigned_without_a_hub_is_a_protocol_error() {
    let o = options(0, 60);
    for body in [
        json!({"status": "assigned"}),
        json!({"status": "assigned", "registrationState": {"deviceId": "d"}}),
    ] {
        let next = ans(&mut Polling::default(), Ok(response(200, body, 0)), &o);
        assert!(
            matches!(
                next,
                Next::Done(Err(ProvisioningError::Protocol(
                    ProtocolError::IncompleteAssignment { .. }
                )))
            ),
            "{next:?}"
        );
    }
}

/// Issue 20: the floor once made a device wait 2 s where the service asked for 1 s (2.02 s
/// to be assigned, against 1.13 s for the C SDK). The service's retry-after is what the
/// client waits, exactly; the device's request limit is kept by the course.
#[test]
fn polling_follows_the_operation_and_waits_exactly_what_the_service_asks() {
    let o = options(2, 30);
    let mut p = Polling::default();
    assert_eq!(p.operation_id(), None);
    assert_eq!(
        wait(ans(&mut p, Ok(assigning(Some("op-1"), 5)), &o)),
        Duration::from_secs(5)
    );
    assert_eq!(p.operation_id(), Some("op-1"));
    // Below the floor, when the service asks for less.
    assert_eq!(
        wait(ans(&mut p, Ok(assigning(Some("op-1"), 1)), &o)),
        Duration::from_secs(1)
    );
    assert_eq!(
        wait(ans(&mut p, Ok(assigning(Some("op-1"), 0)), &o)),
        Duration::ZERO
    );
    // The service's ask, even above the cap: the cap bounds the client's own back-off.
    assert_eq!(
        wait(ans(&mut p, Ok(assigning(Some("op-1"), 90)), &o)),
        Duration::from_secs(90)
    );
    // The default interval, when the service asked nothing, stays within floor and cap.
    assert_eq!(
        wait(ans(&mut p, Ok(unasked(assigning(Some("op-1"), 90))), &o)),
        Duration::from_secs(30)
    );
    assert_eq!(
        wait(ans(&mut p, Ok(unasked(assigning(Some("op-1"), 1))), &o)),
        Duration::from_secs(2)
    );
    // A poll answered without an operationId starts again from register.
    wait(ans(&mut p, Ok(assigning(None, 1)), &o));
    assert_eq!(p.operation_id(), None);
}

/// The measurement: after a 429 with retry-after 1 the next request went out after
/// 0.77 s. Jitter now only ever adds.
#[test]
fn a_throttled_wait_is_never_shorter_than_the_retry_after() {
    let o = options(0, 60);
    for _ in 0..200 {
        let mut p = Polling::default();
        let first = wait(ans(&mut p, Ok(throttled(1)), &o));
        assert!(
            first >= Duration::from_secs(1) && first <= Duration::from_millis(1250),
            "{first:?}"
        );
        let second = wait(ans(&mut p, Ok(throttled(1)), &o));
        assert!(
            second >= Duration::from_secs(2) && second <= Duration::from_millis(2500),
            "{second:?}"
        );
    }
}

/// A throttled answer's retry-after is honoured below the floor too; without one, the
/// default interval is floored as before.
#[test]
fn a_throttled_wait_is_the_retry_after_even_below_the_floor() {
    let o = exact(2, 60);
    let mut p = Polling::default();
    assert_eq!(
        wait(ans(&mut p, Ok(throttled(1)), &o)),
        Duration::from_secs(1)
    );
    assert_eq!(
        wait(ans(&mut p, Ok(throttled(1)), &o)),
        Duration::from_secs(2)
    );
    let o = exact(3, 60);
    let mut p = Polling::default();
    assert_eq!(
        wait(ans(&mut p, Ok(unasked(throttled(2))), &o)),
        Duration::from_secs(3)
    );
}

#[test]
fn throttling_backs_off_and_a_normal_answer_resets_it() {
    let o = exact(1, 60);
    let mut p = Polling::default();
    assert_eq!(
        wait(ans(&mut p, Ok(throttled(2)), &o)),
        Duration::from_secs(2)
    );
    assert_eq!(
        wait(ans(&mut p, Ok(throttled(2)), &o)),
        Duration::from_secs(4)
    );
    assert_eq!(
        wait(ans(&mut p, Ok(throttled(2)), &o)),
        Duration::from_secs(8)
    );
    assert_eq!(
        wait(ans(&mut p, Ok(assigning(Some("op"), 2)), &o)),
        Duration::from_secs(2)
    );
    assert_eq!(
        wait(ans(&mut p, Ok(throttled(2)), &o)),
        Duration::from_secs(2)
    );
    // Without a retry-after, the default interval backs off within the cap.
    let o = exact(0, 3);
    let mut p = Polling::default();
    assert_eq!(
        wait(ans(&mut p, Ok(unasked(throttled(2))), &o)),
        Duration::from_secs(2)
    );
    assert_eq!(
        wait(ans(&mut p, Ok(unasked(throttled(2))), &o)),
        Duration::from_secs(3)
    );
}

#[test]
fn a_lost_answer_repeats_the_same_request_after_a_back_off() {
    let o = exact(1, 60);
    let mut p = Polling::default();
    wait(ans(&mut p, Ok(assigning(Some("op-7"), 1)), &o));
    assert_eq!(wait(ans(&mut p, Err(lost()), &o)), Duration::from_secs(1));
    assert_eq!(wait(ans(&mut p, Err(lost()), &o)), Duration::from_secs(2));
    assert_eq!(
        p.operation_id(),
        Some("op-7"),
        "the poll is repeated, not the register"
    );
}

#[test]
fn the_last_failure_is_kept_until_an_answer_moves_the_registration_on() {
    let o = exact(0, 60);
    let mut p = Polling::default();
    wait(ans(&mut p, Err(lost()), &o));
    assert_eq!(
        p.take_last_failure().and_then(|e| e.transport_kind()),
        Some(TransportErrorKind::ConnectionLost)
    );
    wait(ans(&mut p, Ok(throttled(3)), &o));
    let throttled = p.take_last_failure().unwrap();
    assert_eq!(throttled.service_error().map(|e| e.status), Some(429));
    assert!(throttled.to_string().contains("3s"), "{throttled}");
    wait(ans(&mut p, Err(lost()), &o));
    wait(ans(&mut p, Ok(assigning(Some("op"), 0)), &o));
    assert!(p.take_last_failure().is_none());
}

#[test]
fn backoff_grows_caps_and_jitters_only_upwards() {
    let s = Duration::from_secs;
    let o = options(1, 60);
    let asked = |d| Some(d);
    for _ in 0..100 {
        let first = backoff(asked(s(2)), s(2), 1, &o, &mut Rng::from_entropy());
        assert!(first >= s(2) && first <= s(2).mul_f64(1.25), "{first:?}");
        let third = backoff(asked(s(2)), s(2), 3, &o, &mut Rng::from_entropy());
        assert!(third >= s(8) && third <= s(10), "{third:?}");
        assert!(backoff(asked(s(2)), s(2), 40, &o, &mut Rng::from_entropy()) <= s(75));
        assert!(
            backoff(
                None,
                Duration::ZERO,
                5,
                &options(3, 60),
                &mut Rng::from_entropy()
            ) >= s(3)
        );
        // A service asking more than the cap gets what it asked.
        assert!(backoff(asked(s(90)), s(90), 2, &o, &mut Rng::from_entropy()) >= s(90));
    }
    assert_eq!(
        backoff(
            None,
            Duration::ZERO,
            5,
            &exact(0, 60),
            &mut Rng::from_entropy()
        ),
        Duration::ZERO
    );
    assert_eq!(
        backoff(
            asked(s(2)),
            s(2),
            40,
            &exact(1, 60),
            &mut Rng::from_entropy()
        ),
        s(60)
    );
    assert_eq!(
        backoff(None, s(2), 40, &exact(0, 1), &mut Rng::from_entropy()),
        s(1)
    );
}
