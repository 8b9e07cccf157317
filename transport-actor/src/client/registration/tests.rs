//! The tests of `registration`.

use dps_messages::error::{TransportError, TransportErrorKind};
use serde_json::json;

use super::*;
use crate::client::RequestLimit;

fn options() -> ClientOptions {
    ClientOptions {
        min_interval: Duration::from_secs(2),
        max_interval: Duration::from_secs(60),
        deadline: Duration::from_secs(30),
        close_grace: Duration::from_secs(1),
        jitter: false,
        ..ClientOptions::default()
    }
}

fn response(status_code: u16, body: serde_json::Value) -> RegistrationResponse {
    RegistrationResponse {
        status_code,
        result: serde_json::from_value(body).unwrap(),
        polling_interval: Duration::from_secs(3),
        retry_after: Some(Duration::from_secs(3)),
        invalid_retry_after: None,
    }
}

fn finish(step: Step) -> Result<RegistrationResult, ProvisioningError> {
    match step {
        Step::Finish(outcome) => *outcome,
        other => panic!("{other:?}"),
    }
}

#[test]
fn register_wait_poll_close_finish() {
    let t0 = Instant::now();
    let mut r = Registration::new(options(), t0, Rng::new(1), RequestLog::default());
    assert!(matches!(r.step(t0), Step::Send(Operation::Register)));
    assert!(matches!(r.step(t0), Step::Sleep(at) if at == r.deadline()));
    r.answered(
        Ok(response(
            202,
            json!({"operationId": "op", "status": "assigning"}),
        )),
        t0,
    );
    let at = t0 + Duration::from_secs(3);
    assert!(matches!(r.step(t0), Step::Sleep(until) if until == at));
    let Step::Send(Operation::Poll { operation_id }) = r.step(at) else {
        panic!()
    };
    assert_eq!(operation_id, "op");
    let assigned =
        json!({"status": "assigned", "registrationState": {"assignedHub": "h", "deviceId": "d"}});
    r.answered(Ok(response(200, assigned)), at);
    assert!(matches!(r.step(at), Step::Close(grace) if grace == Duration::from_secs(1)));
    r.closed(at);
    assert_eq!(finish(r.step(at)).unwrap().status.as_str(), "assigned");
}

#[test]
fn the_deadline_ends_a_request_in_flight_and_keeps_the_last_failure() {
    let t0 = Instant::now();
    let mut r = Registration::new(options(), t0, Rng::new(1), RequestLog::default());
    r.step(t0);
    let lost = TransportError::new(TransportErrorKind::ConnectionLost, "gone").into();
    r.answered(Err(lost), t0);
    let Step::Sleep(retry) = r.step(t0) else {
        panic!()
    };
    r.step(retry);
    let end = r.deadline();
    assert!(matches!(r.step(end), Step::Close(_)));
    // The answer that comes after the deadline changes nothing.
    r.answered(Err(ProvisioningError::OperationCancelled), end);
    r.closed(t0);
    let err = finish(r.step(end)).unwrap_err();
    assert!(
        matches!(
            &err,
            ProvisioningError::Timeout {
                stage: Stage::Registration,
                last_failure: Some(_),
                attempts: 2,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn no_wait_runs_past_the_deadline() {
    let t0 = Instant::now();
    let mut r = Registration::new(options(), t0, Rng::new(1), RequestLog::default());
    r.step(t0);
    r.answered(
        Ok(response(
            202,
            json!({"operationId": "op", "status": "assigning"}),
        )),
        t0,
    );
    // A wait that would end after the deadline is cut to it.
    let later = r.deadline() - Duration::from_secs(1);
    let mut r2 = r;
    r2.course = Course::Ready {
        not_before: r2.deadline() + Duration::from_secs(60),
    };
    assert!(matches!(r2.step(later), Step::Sleep(at) if at == r2.deadline()));
}

#[test]
fn a_cancel_closes_and_finishes_cancelled() {
    let t0 = Instant::now();
    let mut r = Registration::new(options(), t0, Rng::new(1), RequestLog::default());
    r.step(t0);
    r.cancel();
    assert!(matches!(r.step(t0), Step::Close(_)));
    r.closed(t0);
    assert!(matches!(
        finish(r.step(t0)),
        Err(ProvisioningError::OperationCancelled)
    ));
}

/// An answer asking for no wait at all.
fn at_once() -> RegistrationResponse {
    RegistrationResponse {
        retry_after: Some(Duration::ZERO),
        polling_interval: Duration::ZERO,
        ..response(202, json!({"operationId": "op", "status": "assigning"}))
    }
}

/// Sends what the course asks for at `at` and answers it at once; the time it went.
fn send_and_answer(r: &mut Registration, at: Instant) -> Instant {
    let went = match r.step(at) {
        Step::Send(_) => at,
        Step::Sleep(until) => {
            assert!(
                matches!(r.step(until), Step::Send(_)),
                "a send at {until:?}"
            );
            until
        }
        other => panic!("{other:?}"),
    };
    r.answered(Ok(at_once()), went);
    went
}

/// Issue 20: the service's limit is a sliding window per device, registers and polls
/// together: a service that asks for no wait gets five requests at once, and the sixth a
/// window after the first one's answer.
#[test]
fn the_sixth_request_in_ten_seconds_waits_for_the_window() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut r = Registration::new(options(), t0, Rng::new(1), RequestLog::default());
    for i in 0..5 {
        assert_eq!(send_and_answer(&mut r, t0 + ms(i * 100)), t0 + ms(i * 100));
    }
    // The first answer came at t0: the sixth goes 10 s later, the seventh 10 s after the
    // second answer.
    assert_eq!(send_and_answer(&mut r, t0 + ms(500)), t0 + ms(10_000));
    assert_eq!(send_and_answer(&mut r, t0 + ms(10_000)), t0 + ms(10_100));
}

#[test]
fn without_a_request_limit_nothing_waits_for_a_window() {
    let t0 = Instant::now();
    let options = ClientOptions {
        request_limit: None,
        ..options()
    };
    let mut r = Registration::new(options, t0, Rng::new(1), RequestLog::default());
    for _ in 0..20 {
        assert_eq!(send_and_answer(&mut r, t0), t0);
    }
}

/// The device's limit holds across registrations: a registration that follows one that
/// used the window waits for it, and a request given up on counts from the close.
#[test]
fn the_next_registration_keeps_the_window_of_the_last() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut r = Registration::new(options(), t0, Rng::new(1), RequestLog::default());
    for _ in 0..5 {
        send_and_answer(&mut r, t0);
    }
    r.cancel();
    r.closed(t0);
    let mut next = Registration::new(options(), t0 + s(1), Rng::new(1), r.log().clone());
    assert!(
        matches!(next.step(t0 + s(1)), Step::Sleep(at) if at == t0 + s(10)),
        "five answers at t0: the next registration's register waits for the window"
    );

    let mut r = Registration::new(options(), t0, Rng::new(1), RequestLog::default());
    for _ in 0..4 {
        send_and_answer(&mut r, t0);
    }
    // The fifth goes and is never answered: the deadline ends it, the close at `end`.
    assert!(matches!(r.step(t0), Step::Send(_)));
    let end = r.deadline() + s(1);
    assert!(matches!(r.step(r.deadline()), Step::Close(_)));
    r.closed(end);
    assert!(finish(r.step(end)).is_err());
    // The request given up on is the log's last entry, at `end`.
    let one = RequestLimit::new(1, s(10));
    assert_eq!(r.log().earliest(end, Some(&one)), end + s(10));
    // Four answers at t0 and one at `end`: the sixth goes a window after the first, passed.
    let mut next = Registration::new(options(), end, Rng::new(1), r.log().clone());
    assert!(matches!(next.step(end), Step::Send(Operation::Register)));
}
