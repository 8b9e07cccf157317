//! Classifying the service's answer to an operation: a result with a polling interval, a
//! retry, or a typed error. The rules are listed in [`crate::response`]; the entry point is
//! [`Operation::read_response`](crate::Operation::read_response).

use std::time::Duration;

use crate::error::{ProtocolError, ProvisioningError, ServiceError};
use crate::operation::Operation;
use crate::response::{
    RegistrationResponse, RegistrationResult, RegistrationStatus, ResponseTopic,
};

/// The largest response body read. DPS caps a message at 96 KB; a little headroom keeps a
/// well-formed response from ever being refused.
pub(crate) const MAX_RESPONSE_BYTES: usize = 128 * 1024;

/// The first status treated as "retry later" rather than failure.
pub(crate) const RETRY_STATUS: u16 = 429;

/// The wait a `retry-after` value asks for: its seconds (SRS 06_005, 06_006). A value that is
/// not a non-negative whole number of seconds is an error carrying the value, so that the
/// caller falls back to its default interval rather than to zero.
fn parse_retry_after(raw: &str) -> Result<Duration, InvalidRetryAfter> {
    let digits = raw.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidRetryAfter(raw.to_owned()));
    }
    digits
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| InvalidRetryAfter(raw.to_owned()))
}

/// A `retry-after` that is not a non-negative whole number of seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct InvalidRetryAfter(String);

/// Classifies the response `topic` + `body` to `operation`, with `default_interval` where the
/// service gives no (usable) `retry-after`.
pub(crate) fn classify(
    operation: &Operation,
    topic: &ResponseTopic,
    body: &[u8],
    default_interval: Duration,
) -> Result<RegistrationResponse, ProvisioningError> {
    let status = topic.status;
    if body.len() > MAX_RESPONSE_BYTES {
        return Err(ProtocolError::PayloadTooLarge {
            len: body.len(),
            max: MAX_RESPONSE_BYTES,
        }
        .into());
    }
    if (300..RETRY_STATUS).contains(&status) {
        return Err(ProvisioningError::from_service(ServiceError::from_body(
            status, body,
        )));
    }

    let (retry_after, invalid_retry_after) = match topic.retry_after.as_deref() {
        None => (None, None),
        Some(raw) => match parse_retry_after(raw) {
            Ok(interval) => (Some(interval), None),
            Err(InvalidRetryAfter(raw)) => (None, Some(raw)),
        },
    };
    let polling_interval = retry_after.unwrap_or(default_interval);
    let result = if status >= RETRY_STATUS {
        match operation {
            Operation::Register => {
                RegistrationResult::pending(RegistrationStatus::Registering, None)
            }
            Operation::Poll { operation_id } => RegistrationResult::pending(
                RegistrationStatus::Assigning,
                Some(operation_id.clone()),
            ),
        }
    } else {
        serde_json::from_slice(body).map_err(|e| ProtocolError::BadJson {
            status,
            detail: e.to_string(),
            body: String::from_utf8_lossy(body).into_owned(),
        })?
    };
    Ok(RegistrationResponse {
        status_code: status,
        result,
        polling_interval,
        retry_after,
        invalid_retry_after,
    })
}

#[cfg(test)]
mod tests;
