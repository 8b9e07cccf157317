//! The service's answer to a register or a poll: the [`RegistrationResponse`] a transport
//! hands its caller, the [`RegistrationResult`] body inside it, and the [`ResponseTopic`] it
//! came on.
//!
//! How an answer is read ([`Operation::read_response`](crate::Operation::read_response)), from
//! the Node transport and the service docs:
//! * status `< 300`: success; the body is a [`RegistrationResult`] (SRS 18_013, 18_027);
//! * `300..=428`: failure, translated to a typed error (SRS 18_012, 18_026);
//! * `>= 429` (throttling and every 5xx): not an error; the caller retries after the polling
//!   interval, with status `registering` for a register (SRS 06_003) and `assigning` plus the
//!   caller's operation id for a poll (SRS 06_004);
//! * the polling interval is the `retry-after` in whole seconds, or
//!   [`RegistrationResponse::DEFAULT_POLLING_INTERVAL`] when the service gives none (SRS
//!   06_005, 06_006); a value that is not a whole number falls back to the default, never to
//!   zero.

mod state;
mod topic;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub(crate) use self::state::error_code_from;
pub use self::state::{RegistrationState, RegistrationStatus};
pub(crate) use self::topic::RESPONSE_TOPIC_PREFIX;
pub use self::topic::{ResponseTopic, TopicError};
use crate::error::ProtocolError;

/// A response the caller can act on: the result and when to ask again.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrationResponse {
    /// The status from the response topic.
    pub status_code: u16,
    /// The result: the service's body, or the transport's `registering`/`assigning` stand-in
    /// for a throttled response.
    pub result: RegistrationResult,
    /// How long to wait before the next poll or register: the service's `retry-after`, or the
    /// default when it gave none (SRS 06_005, 06_006).
    pub polling_interval: Duration,
    /// The service's `retry-after`, when it gave a usable one: a wait the service asked for,
    /// which a client must not shorten. `None` when `polling_interval` is the default.
    pub retry_after: Option<Duration>,
    /// A `retry-after` value that was not a whole number of seconds and was replaced by the
    /// default interval; kept so the transport can report it.
    pub invalid_retry_after: Option<String>,
}

impl RegistrationResponse {
    /// The polling interval when the service gives no `retry-after` (SRS 06_005, 06_006).
    pub const DEFAULT_POLLING_INTERVAL: Duration = Duration::from_millis(2_000);

    /// The service is throttling the device or its DPS instance (status 429): a fleet that
    /// sees this is over the service's quota.
    pub fn is_throttled(&self) -> bool {
        self.status_code == crate::classify::RETRY_STATUS
    }

    /// The service did not decide and asks to be asked again after the polling interval: a
    /// throttled (429) or failing (5xx) answer (SRS 06_003, 06_004).
    pub fn is_retry_later(&self) -> bool {
        self.status_code >= crate::classify::RETRY_STATUS
    }
}

/// The body of a successful response: `{"operationId","status","registrationState"?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationResult {
    /// The operation to poll; absent in the transport's own `registering` results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
    /// Where the registration stands.
    pub status: RegistrationStatus,
    /// The device's registration, once the service has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_state: Option<RegistrationState>,
    /// Fields this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl RegistrationResult {
    /// A result with only a status and an operation id, as the transport builds for throttled
    /// responses (SRS 06_003, 06_004).
    pub fn pending(status: RegistrationStatus, operation_id: Option<String>) -> Self {
        Self {
            operation_id,
            status,
            registration_state: None,
            extra: Map::new(),
        }
    }

    /// Checks that an `assigned` result says where the device belongs: a `registrationState`
    /// with a non-empty `assignedHub` and `deviceId`, without which the device cannot reach its
    /// hub. Results with any other status pass: they do not claim an assignment.
    pub fn validate_assignment(&self) -> Result<(), ProtocolError> {
        if self.status != RegistrationStatus::Assigned {
            return Ok(());
        }
        let missing = |missing| Err(ProtocolError::IncompleteAssignment { missing });
        let Some(state) = &self.registration_state else {
            return missing("registrationState");
        };
        let present = |field: &Option<String>| field.as_deref().is_some_and(|v| !v.is_empty());
        if !present(&state.assigned_hub) {
            return missing("registrationState.assignedHub");
        }
        if !present(&state.device_id) {
            return missing("registrationState.deviceId");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
