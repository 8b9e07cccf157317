//! One registration's course, without IO: which request to send next, how long to wait before
//! it (what the service asked, within the device's [`RequestLimit`](super::RequestLimit)), when the deadline ends
//! it, and when it is over.
//!
//! [`ProvisioningClient`](super::ProvisioningClient) drives it with real time and the actor;
//! the simulation drives the very same machine with virtual time. The machine never waits
//! past the deadline, and after it the only thing left is the close within the grace, so a
//! driver that follows it returns by the deadline plus the grace.

use std::time::{Duration, Instant};

use dps_messages::error::Stage;
use dps_messages::{Operation, ProvisioningError, RegistrationResponse, RegistrationResult};

use super::ClientOptions;
use super::polling::{Next, Polling};
use super::request_limit::RequestLog;
use crate::rng::Rng;

/// What the driver does now.
#[derive(Debug)]
pub(crate) enum Step {
    /// Send this register or poll, then report its answer with [`Registration::answered`] (or
    /// call [`Registration::step`] again at the deadline, if it passes first).
    Send(Operation),
    /// Nothing to do before this time (a wait, or a request in flight); then step again.
    Sleep(Instant),
    /// The outcome is known: disconnect within this grace, then call [`Registration::closed`].
    Close(Duration),
    /// The registration is over.
    Finish(Box<Result<RegistrationResult, ProvisioningError>>),
}

#[derive(Debug)]
enum Course {
    /// The next request goes out at `not_before`.
    Ready { not_before: Instant },
    /// A request is out; its answer is awaited.
    InFlight,
    /// The outcome is known; the connection is being closed.
    Closing(Option<Result<RegistrationResult, ProvisioningError>>),
    /// Closed; the outcome is the driver's.
    Closed(Option<Result<RegistrationResult, ProvisioningError>>),
}

/// One registration, from its first register to its close.
#[derive(Debug)]
pub(crate) struct Registration {
    options: ClientOptions,
    polling: Polling,
    jitter: Rng,
    deadline: Instant,
    course: Course,
    /// Requests sent so far, for the error when the deadline ends the registration.
    attempts: u32,
    /// When the device's last requests were answered, this registration's and those before it.
    log: RequestLog,
    /// A request went and its answer has not been recorded in the log.
    unanswered: bool,
}

impl Registration {
    /// A registration that starts at `now`; `jitter` spreads its back-off waits, and `log`
    /// holds the device's earlier requests (a fresh one for a device's first registration).
    pub(crate) fn new(options: ClientOptions, now: Instant, jitter: Rng, log: RequestLog) -> Self {
        Self {
            deadline: now + options.deadline,
            course: Course::Ready {
                not_before: log.earliest(now, options.request_limit.as_ref()),
            },
            options,
            polling: Polling::default(),
            jitter,
            attempts: 0,
            log,
            unanswered: false,
        }
    }

    /// The device's requests so far, for its next registration.
    pub(crate) fn log(&self) -> &RequestLog {
        &self.log
    }

    /// Puts the request in flight into the log at `now`, if one is.
    fn record_answer(&mut self, now: Instant) {
        if std::mem::take(&mut self.unanswered)
            && let Some(limit) = &self.options.request_limit
        {
            self.log.record(now, limit);
        }
    }

    /// When the whole registration's deadline passes.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// What to do at `now`.
    pub(crate) fn step(&mut self, now: Instant) -> Step {
        let open = matches!(self.course, Course::Ready { .. } | Course::InFlight);
        if open && now >= self.deadline {
            let last_failure = self.polling.take_last_failure();
            let error = ProvisioningError::timeout_after(
                Stage::Registration,
                self.options.deadline,
                self.attempts,
                last_failure,
            );
            self.course = Course::Closing(Some(Err(error)));
        }
        match &mut self.course {
            Course::Ready { not_before } if now < *not_before => {
                Step::Sleep((*not_before).min(self.deadline))
            }
            Course::Ready { .. } => {
                self.course = Course::InFlight;
                self.attempts += 1;
                self.unanswered = true;
                Step::Send(match self.polling.operation_id() {
                    None => Operation::Register,
                    Some(id) => Operation::poll(id),
                })
            }
            Course::InFlight => Step::Sleep(self.deadline),
            Course::Closing(_) => Step::Close(self.options.close_grace),
            Course::Closed(outcome) => Step::Finish(Box::new(outcome.take().unwrap_or_else(
                // A driver that steps again after the finish gets the finish's kind again.
                || Err(ProvisioningError::OperationCancelled),
            ))),
        }
    }

    /// The answer to the request in flight, at `now`. An answer that comes after the
    /// registration ended (a late reply to a request the close cancelled) is ignored.
    pub(crate) fn answered(
        &mut self,
        answer: Result<RegistrationResponse, ProvisioningError>,
        now: Instant,
    ) {
        if !matches!(self.course, Course::InFlight) {
            return;
        }
        self.record_answer(now);
        self.course = match self.polling.answer(answer, &self.options, &mut self.jitter) {
            Next::Done(outcome) => Course::Closing(Some(outcome)),
            Next::Wait(wait) => Course::Ready {
                not_before: self
                    .log
                    .earliest(now + wait, self.options.request_limit.as_ref()),
            },
        };
    }

    /// The caller cancelled the registration.
    pub(crate) fn cancel(&mut self) {
        if matches!(self.course, Course::Ready { .. } | Course::InFlight) {
            self.course = Course::Closing(Some(Err(ProvisioningError::OperationCancelled)));
        }
    }

    /// The close is done (or its grace has passed) at `now`. A request the registration gave
    /// up on (the deadline, a cancel) counts for the device's limit from here: it cannot reach
    /// the service after its connection is closed.
    pub(crate) fn closed(&mut self, now: Instant) {
        if let Course::Closing(outcome) = &mut self.course {
            self.course = Course::Closed(outcome.take());
            self.record_answer(now);
        }
    }
}

#[cfg(test)]
mod tests {
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
        let assigned = json!({"status": "assigned", "registrationState": {"assignedHub": "h", "deviceId": "d"}});
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
}
