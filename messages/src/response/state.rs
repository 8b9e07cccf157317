//! The device's registration record as the service keeps it, and where a registration stands.
//!
//! Every documented field is typed; fields this crate does not know are kept in `extra`, so a
//! newer service loses nothing on its way to the caller.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

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
