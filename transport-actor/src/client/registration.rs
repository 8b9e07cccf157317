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
mod tests;
