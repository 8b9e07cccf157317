//! The service's answer to a register or a poll.
//!
//! Every documented field is typed; fields this crate does not know are kept in `extra`, so a
//! newer service loses nothing on its way to the caller.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::ProtocolError;

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

/// A device's registration record (`DeviceRegistrationResult` in the DPS REST API).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationState {
    /// The registration id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_id: Option<String>,
    /// When the registration was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date_time_utc: Option<String>,
    /// The IoT hub the device was assigned to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_hub: Option<String>,
    /// The device id on that hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// The registration's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RegistrationStatus>,
    /// How the assignment came about: `initialAssignment`, `deviceDataMigrated`,
    /// `deviceDataReset`, `reprovisionedToInitialAssignment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substatus: Option<String>,
    /// The service's error code when the registration failed (a numeric string is read too).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_code"
    )]
    pub error_code: Option<i64>,
    /// The service's error message when the registration failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// When the registration last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_date_time_utc: Option<String>,
    /// The registration's etag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Data a custom allocation policy returned to the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// X.509 attestation details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x509: Option<Value>,
    /// Symmetric-key attestation details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symmetric_key: Option<Value>,
    /// TPM attestation details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<Value>,
    /// The trust bundle the enrollment carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_bundle: Option<Value>,
    /// A certificate the service issued to the device (the `2021-11-01-preview` protocol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_client_certificate: Option<String>,
    /// The certificate chain the service issued for the device's CSR (api-version
    /// `2025-07-01-preview`): base64 DER certificates, leaf first. Check it and make it an
    /// identity with [`CertificateRequest::accept`](crate::CertificateRequest::accept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_certificate_chain: Option<Vec<String>>,
    /// Fields this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Where a registration stands.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RegistrationStatus {
    /// `unassigned`: the service has not assigned the device (final).
    Unassigned,
    /// `assigning`: the service is working on it; poll again.
    Assigning,
    /// `assigned`: done; `registrationState` says where (final).
    Assigned,
    /// `failed`: the service could not assign the device (final).
    Failed,
    /// `disabled`: the enrollment is disabled (final).
    Disabled,
    /// `registering`: the transport's own status for a throttled or 5xx register; register
    /// again after the polling interval.
    Registering,
    /// A status this crate does not know, kept as sent.
    Other(String),
}

/// Reads an error code the service sends as a number, or, leniently, as a numeric string.
pub(crate) fn error_code_from(value: Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn lenient_code<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    Ok(Option::<Value>::deserialize(deserializer)?.and_then(error_code_from))
}

impl RegistrationStatus {
    /// The status as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Unassigned => "unassigned",
            Self::Assigning => "assigning",
            Self::Assigned => "assigned",
            Self::Failed => "failed",
            Self::Disabled => "disabled",
            Self::Registering => "registering",
            Self::Other(s) => s,
        }
    }

    /// Whether the registration is over: anything but `assigning` and `registering`.
    pub fn is_final(&self) -> bool {
        !matches!(self, Self::Assigning | Self::Registering)
    }
}

impl From<&str> for RegistrationStatus {
    fn from(s: &str) -> Self {
        match s {
            "unassigned" => Self::Unassigned,
            "assigning" => Self::Assigning,
            "assigned" => Self::Assigned,
            "failed" => Self::Failed,
            "disabled" => Self::Disabled,
            "registering" => Self::Registering,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for RegistrationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RegistrationStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RegistrationStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(Self::from(s.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statuses_display_as_on_the_wire() {
        assert_eq!(RegistrationStatus::Assigning.to_string(), "assigning");
        assert_eq!(RegistrationStatus::Other("x".into()).to_string(), "x");
    }

    #[test]
    fn parses_a_full_assignment_and_keeps_unknown_fields() {
        let body = json!({
            "operationId": "4.abc",
            "status": "assigned",
            "future": 1,
            "registrationState": {
                "registrationId": "dev",
                "createdDateTimeUtc": "2026-01-01T00:00:00Z",
                "assignedHub": "hub.azure-devices.net",
                "deviceId": "dev",
                "status": "assigned",
                "substatus": "initialAssignment",
                "lastUpdatedDateTimeUtc": "2026-01-01T00:00:01Z",
                "etag": "IjA=",
                "payload": {"x": 1},
                "x509": {"enrollmentGroupId": "g"},
                "newField": [1]
            }
        });
        let r: RegistrationResult = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(r.operation_id.as_deref(), Some("4.abc"));
        assert_eq!(r.status, RegistrationStatus::Assigned);
        assert_eq!(r.extra.get("future"), Some(&json!(1)));
        let s = r.registration_state.as_ref().unwrap();
        assert_eq!(s.assigned_hub.as_deref(), Some("hub.azure-devices.net"));
        assert_eq!(s.device_id.as_deref(), Some("dev"));
        assert_eq!(s.substatus.as_deref(), Some("initialAssignment"));
        assert_eq!(s.payload, Some(json!({"x": 1})));
        assert_eq!(s.x509, Some(json!({"enrollmentGroupId": "g"})));
        assert_eq!(s.extra.get("newField"), Some(&json!([1])));
        // Nothing is lost on the way back out.
        assert_eq!(serde_json::to_value(&r).unwrap(), body);
    }

    #[test]
    fn status_knows_the_documented_values_and_keeps_others() {
        for (text, status) in [
            ("unassigned", RegistrationStatus::Unassigned),
            ("assigning", RegistrationStatus::Assigning),
            ("assigned", RegistrationStatus::Assigned),
            ("failed", RegistrationStatus::Failed),
            ("disabled", RegistrationStatus::Disabled),
            ("registering", RegistrationStatus::Registering),
            ("new", RegistrationStatus::Other("new".into())),
        ] {
            let parsed: RegistrationStatus = serde_json::from_value(json!(text)).unwrap();
            assert_eq!(parsed, status);
            assert_eq!(serde_json::to_value(&status).unwrap(), json!(text));
        }
        assert!(!RegistrationStatus::Assigning.is_final());
        assert!(!RegistrationStatus::Registering.is_final());
        assert!(RegistrationStatus::Assigned.is_final());
        assert!(RegistrationStatus::Other("x".into()).is_final());
    }

    #[test]
    fn error_codes_read_as_numbers_or_numeric_strings() {
        let state: RegistrationState =
            serde_json::from_value(json!({"errorCode": 400209, "errorMessage": "m"})).unwrap();
        assert_eq!(state.error_code, Some(400209));
        let state: RegistrationState = serde_json::from_value(json!({"errorCode": "42"})).unwrap();
        assert_eq!(state.error_code, Some(42));
        let state: RegistrationState = serde_json::from_value(json!({"errorCode": {}})).unwrap();
        assert_eq!(state.error_code, None);
    }

    #[test]
    fn an_assignment_must_name_the_hub_and_the_device() {
        let check = |body: Value| {
            serde_json::from_value::<RegistrationResult>(body)
                .unwrap()
                .validate_assignment()
        };
        let missing = |missing| Err(ProtocolError::IncompleteAssignment { missing });
        assert_eq!(
            check(
                json!({"status": "assigned", "registrationState": {"assignedHub": "h", "deviceId": "d"}})
            ),
            Ok(())
        );
        assert_eq!(
            check(json!({"status": "assigned"})),
            missing("registrationState")
        );
        assert_eq!(
            check(json!({"status": "assigned", "registrationState": {"deviceId": "d"}})),
            missing("registrationState.assignedHub")
        );
        assert_eq!(
            check(
                json!({"status": "assigned", "registrationState": {"assignedHub": "", "deviceId": "d"}})
            ),
            missing("registrationState.assignedHub")
        );
        assert_eq!(
            check(json!({"status": "assigned", "registrationState": {"assignedHub": "h"}})),
            missing("registrationState.deviceId")
        );
        // Other statuses claim no assignment.
        assert_eq!(check(json!({"status": "assigning"})), Ok(()));
        assert_eq!(check(json!({"status": "failed"})), Ok(()));
    }

    #[test]
    fn a_result_needs_a_status() {
        assert!(serde_json::from_value::<RegistrationResult>(json!({"operationId": "x"})).is_err());
    }
}
