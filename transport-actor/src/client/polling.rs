//! The register-and-poll decisions, without IO: which request comes next, how long to wait
//! before it, and when the registration is over.
//!
//! The pacing rule is stated on [`ClientOptions`]; in short, exactly what the service asks
//! when it says, never sooner than the floor when the client chooses, with jitter only ever
//! added on top. The device's request limit (5 in any 10 s) is applied after these decisions,
//! by the registration's course.

use std::time::Duration;

use dps_messages::error::ServiceError;
use dps_messages::{
    ProvisioningError, RegistrationResponse, RegistrationResult, RegistrationStatus,
};

use super::ClientOptions;
use crate::rng::Rng;

/// The first wait after a transient failure when the floor is lower: a failure that repeats at
/// once (a refused connection while the network comes up) must not become a busy loop even
/// with no floor configured. It doubles from there, within the cap.
pub(super) const TRANSIENT_FLOOR: Duration = Duration::from_millis(100);

/// What to do after an answer.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "matched at once, never kept across an await"
)]
pub(super) enum Next {
    /// Wait this long, then send the next request: a poll when there is an operation id, else
    /// a register.
    Wait(Duration),
    /// The service's final word.
    Done(Result<RegistrationResult, ProvisioningError>),
}

/// Where a registration stands between requests.
#[derive(Debug, Default)]
pub(super) struct Polling {
    operation_id: Option<String>,
    /// Throttled answers in a row.
    throttled: u32,
    /// Lost connections or responses in a row.
    transient: u32,
    /// Why the last request did not move the registration on, for the error when the deadline
    /// ends it.
    last_failure: Option<ProvisioningError>,
}

impl Polling {
    /// The operation to poll; `None` means register (again).
    pub(super) fn operation_id(&self) -> Option<&str> {
        self.operation_id.as_deref()
    }

    /// Why the last request failed or was throttled, if it was.
    pub(super) fn take_last_failure(&mut self) -> Option<ProvisioningError> {
        self.last_failure.take()
    }

    /// Takes the answer to the last request.
    pub(super) fn answer(
        &mut self,
        answer: Result<RegistrationResponse, ProvisioningError>,
        options: &ClientOptions,
        rng: &mut Rng,
    ) -> Next {
        let response = match answer {
            Ok(response) => response,
            Err(error) if error.is_retryable() => {
                // The same request again.
                self.transient += 1;
                let first = options.min_interval.max(TRANSIENT_FLOOR);
                let wait = backoff(None, first, self.transient, options, rng);
                tracing::info!(%error, ?wait, "retrying after a transient failure");
                self.last_failure = Some(error);
                return Next::Wait(wait);
            }
            Err(error) => return Next::Done(Err(error)),
        };
        self.transient = 0;
        self.last_failure = None;
        let retry_later = response.is_retry_later();
        let RegistrationResponse {
            status_code,
            result,
            polling_interval,
            retry_after,
            ..
        } = response;
        tracing::debug!(status = %result.status, status_code, ?polling_interval, "registration status");
        match result.status {
            // A success is only a success when it says where the device belongs.
            RegistrationStatus::Assigned => Next::Done(
                result
                    .validate_assignment()
                    .map(|()| result)
                    .map_err(ProvisioningError::from),
            ),
            RegistrationStatus::Failed => {
                Next::Done(Err(ProvisioningError::RegistrationFailed(Box::new(result))))
            }
            RegistrationStatus::Assigning | RegistrationStatus::Registering => {
                // A poll answered without an operationId starts again from register.
                self.operation_id = result.operation_id;
                Next::Wait(if retry_later {
                    self.throttled += 1;
                    self.last_failure = Some(throttled(status_code, polling_interval));
                    backoff(retry_after, polling_interval, self.throttled, options, rng)
                } else {
                    self.throttled = 0;
                    let floor = options.min_interval;
                    match retry_after {
                        // What the service asked, exactly: below the floor and above the cap.
                        Some(asked) => asked,
                        None => polling_interval.clamp(floor, options.max_interval.max(floor)),
                    }
                })
            }
            _ => Next::Done(Err(ProvisioningError::RegistrationNotAssigned(Box::new(
                result,
            )))),
        }
    }
}

/// A throttled or 5xx answer, as the failure a deadline reports.
fn throttled(status: u16, retry_after: Duration) -> ProvisioningError {
    ProvisioningError::from_service(ServiceError {
        status,
        error_code: None,
        tracking_id: None,
        message: Some(format!("the service asked to retry after {retry_after:?}")),
        timestamp_utc: None,
        body: String::new(),
    })
}

/// The wait before retrying after a throttled answer or a transient failure: what the service
/// `asked` (else `fallback`, at least the floor), doubled for each attempt after the first,
/// capped at the cap but never below what the service asked, plus up to 25 % of jitter on top.
pub(super) fn backoff(
    asked: Option<Duration>,
    fallback: Duration,
    attempt: u32,
    options: &ClientOptions,
    rng: &mut Rng,
) -> Duration {
    let floor = options.min_interval;
    let base = asked.unwrap_or_else(|| fallback.max(floor));
    let cap = options
        .max_interval
        .max(floor)
        .max(asked.unwrap_or_default());
    let doublings = attempt.clamp(1, 17) - 1;
    let grown = base.saturating_mul(1u32 << doublings).min(cap);
    if options.jitter {
        grown.saturating_add(grown.mul_f64(rng.unit() / 4.0))
    } else {
        grown
    }
}

#[cfg(test)]
mod tests;
