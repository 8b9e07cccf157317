//! Enrollments, as DPS keeps them: who may register, and what happens when they do.
//!
//! An operator sets DPS up with *individual enrollments* (one device, identified by its
//! registration id: an X.509 leaf certificate or a symmetric key) and *enrollment groups* (an
//! X.509 root or intermediate CA, or a group key from which each device's key is derived).
//! Each says whether it is enabled, which IoT hubs it may use, how a hub is chosen
//! ([`AllocationPolicy`]), what a second registration does ([`ReprovisionPolicy`]), and what
//! the device is told. The types read and write DPS's own JSON (service api-version
//! `2021-10-01`), so a file written for the real service sets the mock up too.
//!
//! ```
//! use dps_mock_broker::enrollment::{AllocationPolicy, EnrollmentGroup, IndividualEnrollment};
//!
//! let group = EnrollmentGroup::symmetric_key("line-3", dps_mock_broker::TEST_GROUP_KEY)
//!     .hubs(["hub-a.example", "hub-b.example", "hub-c.example"])
//!     .allocation(AllocationPolicy::Hashed);
//! let quarantined = IndividualEnrollment::symmetric_key("dev-9", dps_mock_broker::TEST_SYMMETRIC_KEY)
//!     .disabled();
//! assert_eq!(group.id(), "line-3");
//! assert!(!quarantined.is_enabled());
//! ```

mod build;
mod matching;
mod store;
mod view;

pub use matching::Presented;
pub(crate) use matching::{Matched, NoMatch, find_match};
pub use store::{EnrollmentError, Enrollments};
pub(crate) use store::{check_etag, new_etag};
pub(crate) use view::{attestation_mechanism, redacted_group, redacted_individual};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An individual enrollment: one device, named by its registration id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndividualEnrollment {
    /// The device's registration id (for X.509, its certificate's CN). A service API PUT
    /// may leave it out: the path names it.
    #[serde(default)]
    pub registration_id: String,
    /// The device id the hub gets; the registration id when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// How the device proves who it is.
    pub attestation: Attestation,
    /// What every enrollment has.
    #[serde(flatten)]
    pub settings: EnrollmentSettings,
}

/// An enrollment group: every device whose certificate chains to a CA, or whose key derives
/// from a group key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentGroup {
    /// The group's name (a service API PUT may leave it out: the path names it).
    #[serde(default)]
    pub enrollment_group_id: String,
    /// How its devices prove who they are: the CA (`signingCertificates`) or the group key.
    pub attestation: Attestation,
    /// What every enrollment has.
    #[serde(flatten)]
    pub settings: EnrollmentSettings,
}

/// The fields individual enrollments and groups share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentSettings {
    /// `enabled` (the default) or `disabled`: a disabled enrollment's devices are refused
    /// with the registration status `disabled`.
    #[serde(default)]
    pub provisioning_status: ProvisioningStatus,
    /// The hubs the enrollment may assign to; every linked hub when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub iot_hubs: Vec<String>,
    /// The single hub of the older `static` spelling; read as a one-hub `iotHubs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iot_hub_host_name: Option<String>,
    /// How a hub is chosen; the service's default (`hashed`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_policy: Option<AllocationPolicy>,
    /// The webhook of a `custom` allocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_allocation_definition: Option<CustomAllocationDefinition>,
    /// What a device registering again gets; both `true` when absent, as DPS's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprovision_policy: Option<ReprovisionPolicy>,
    /// The device's capabilities (`iotEdge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    /// The twin the hub starts the device with (kept, not interpreted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_twin: Option<Value>,
    /// Kept and returned as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional_device_information: Option<Value>,
    /// The mock's own field: a JSON object returned to the device as `registrationState.payload`.
    /// Real DPS returns a payload only from a custom allocation webhook; this lets a test give
    /// one without running a webhook. A custom allocation's payload wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// The enrollment's version, made by the service on every write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// When the enrollment was made (set by the service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date_time_utc: Option<String>,
    /// When the enrollment was last written (set by the service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_date_time_utc: Option<String>,
}

/// How a device proves who it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Attestation {
    /// `x509`, `symmetricKey` or `tpm` (TPM is kept, never matched: the mock has no TPM
    /// attestation).
    #[serde(rename = "type")]
    pub kind: String,
    /// The certificates of an X.509 attestation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x509: Option<X509Attestation>,
    /// The keys of a symmetric-key attestation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symmetric_key: Option<SymmetricKeyAttestation>,
    /// A TPM attestation, kept as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<Value>,
}

/// The certificates of an X.509 attestation: the device's own (`clientCertificates`, for an
/// individual enrollment) or a CA's (`signingCertificates`, for a group).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct X509Attestation {
    /// An individual enrollment's device certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificates: Option<X509Certificates>,
    /// A group's CA certificates (root or intermediate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_certificates: Option<X509Certificates>,
    /// References to CAs uploaded to the service; kept, and matched by nothing (the mock has
    /// no certificate store of its own: put the CA in `signingCertificates`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_references: Option<Value>,
}

/// A primary and an optional secondary certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct X509Certificates {
    /// The primary certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<X509CertificateWithInfo>,
    /// The secondary certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<X509CertificateWithInfo>,
}

/// One certificate of an attestation: PEM, or base64 DER, as DPS accepts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct X509CertificateWithInfo {
    /// The certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// What the service says of it (kept as given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
}

/// The keys of a symmetric-key attestation (base64): a device's own, or a group's from which
/// each device's is derived. `Debug` never shows them.
#[derive(Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SymmetricKeyAttestation {
    /// The primary key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_key: Option<String>,
    /// The secondary key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_key: Option<String>,
}

impl std::fmt::Debug for SymmetricKeyAttestation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |key: &Option<String>| key.as_ref().map(|_| "<redacted>");
        f.debug_struct("SymmetricKeyAttestation")
            .field("primary_key", &shown(&self.primary_key))
            .field("secondary_key", &shown(&self.secondary_key))
            .finish()
    }
}

/// Whether an enrollment's devices may register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum ProvisioningStatus {
    /// They may.
    #[default]
    Enabled,
    /// They are refused with the registration status `disabled`.
    Disabled,
}

/// How DPS picks a hub among an enrollment's hubs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AllocationPolicy {
    /// Evenly weighted, and stable for a registration id.
    Hashed,
    /// The lowest latency ([`LinkedHub::latency_ms`]); ties go as `hashed`.
    GeoLatency,
    /// The one hub of the enrollment.
    Static,
    /// The answer of the enrollment's webhook ([`CustomAllocationDefinition`]).
    Custom,
}

/// Where a `custom` allocation asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomAllocationDefinition {
    /// The webhook (`http://` or `https://`) DPS posts its custom allocation request to.
    pub webhook_url: String,
    /// The api-version of the request (DPS's `2019-03-31` and later share one shape).
    #[serde(default = "default_webhook_api_version")]
    pub api_version: String,
}

pub(crate) fn default_webhook_api_version() -> String {
    "2021-10-01".to_owned()
}

/// What a registration of a device DPS already assigned does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReprovisionPolicy {
    /// Whether the device may move to the hub allocation picks now; when `false` it stays
    /// where it is.
    pub update_hub_assignment: bool,
    /// Whether a device that moves keeps its data (`deviceDataMigrated`) or starts again from
    /// the enrollment's initial state (`deviceDataReset`).
    pub migrate_device_data: bool,
}

impl Default for ReprovisionPolicy {
    /// DPS's default: move, and keep the data.
    fn default() -> Self {
        Self {
            update_hub_assignment: true,
            migrate_device_data: true,
        }
    }
}

/// An enrollment's device capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// Whether the device is an IoT Edge device.
    pub iot_edge: bool,
}

/// A hub linked to the mock DPS: a name, and for `geoLatency`, how far it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkedHub {
    /// The hub's host name.
    pub name: String,
    /// The latency `geoLatency` compares (milliseconds; lower wins).
    #[serde(default)]
    pub latency_ms: u32,
}

impl LinkedHub {
    /// A hub at latency 0.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            latency_ms: 0,
        }
    }

    /// The latency `geoLatency` compares.
    pub fn latency_ms(mut self, latency_ms: u32) -> Self {
        self.latency_ms = latency_ms;
        self
    }
}

impl EnrollmentSettings {
    /// The hubs allocation chooses from: `iotHubs`, else `iotHubHostName`, else `linked`.
    pub(crate) fn candidate_hubs(&self, linked: &[LinkedHub]) -> Vec<String> {
        if !self.iot_hubs.is_empty() {
            return self.iot_hubs.clone();
        }
        if let Some(hub) = &self.iot_hub_host_name {
            return vec![hub.clone()];
        }
        linked.iter().map(|h| h.name.clone()).collect()
    }

    /// Whether the enrollment's devices may register.
    pub(crate) fn is_enabled(&self) -> bool {
        self.provisioning_status == ProvisioningStatus::Enabled
    }

    /// The reprovision policy in force.
    pub(crate) fn reprovision_policy(&self) -> ReprovisionPolicy {
        self.reprovision_policy.unwrap_or_default()
    }
}

/// A file of enrollments, as `dps-mock-broker --enrollments FILE` reads it: DPS's own
/// enrollment objects, and the hubs linked to the mock DPS.
///
/// ```json
/// {
///   "linkedHubs": [{"name": "hub-a.example", "latencyMs": 30}, {"name": "hub-b.example"}],
///   "individualEnrollments": [{"registrationId": "dev-1",
///     "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "..."}}}],
///   "enrollmentGroups": [{"enrollmentGroupId": "line-3", "allocationPolicy": "hashed",
///     "attestation": {"type": "x509", "x509": {"signingCertificates": {"primary": {"certificate": "-----BEGIN..."}}}}}]
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnrollmentFile {
    /// The hubs linked to the mock DPS (the broker's assigned hub when empty).
    #[serde(default)]
    pub linked_hubs: Vec<LinkedHub>,
    /// The individual enrollments.
    #[serde(default)]
    pub individual_enrollments: Vec<IndividualEnrollment>,
    /// The enrollment groups.
    #[serde(default)]
    pub enrollment_groups: Vec<EnrollmentGroup>,
}

impl EnrollmentFile {
    /// Reads a file's JSON.
    pub fn from_json(text: &str) -> Result<Self, EnrollmentError> {
        serde_json::from_str(text).map_err(|e| EnrollmentError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests;
