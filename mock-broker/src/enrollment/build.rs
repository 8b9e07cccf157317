//! Making enrollments in Rust: a constructor per kind of attestation, and the setters every
//! enrollment shares, each returning the enrollment so a test reads as one expression.

use serde_json::Value;

use super::{
    AllocationPolicy, Attestation, Capabilities, CustomAllocationDefinition, EnrollmentGroup,
    EnrollmentSettings, IndividualEnrollment, ProvisioningStatus, ReprovisionPolicy,
    SymmetricKeyAttestation, X509Attestation, X509CertificateWithInfo, X509Certificates,
    default_webhook_api_version,
};

fn certificate(pem_or_base64: &str) -> X509Certificates {
    X509Certificates {
        primary: Some(X509CertificateWithInfo {
            certificate: Some(pem_or_base64.to_owned()),
            info: None,
        }),
        secondary: None,
    }
}

fn key(key_base64: &str) -> SymmetricKeyAttestation {
    SymmetricKeyAttestation {
        primary_key: Some(key_base64.to_owned()),
        secondary_key: None,
    }
}

impl Attestation {
    fn x509_client(cert: &str) -> Self {
        Self {
            kind: "x509".into(),
            x509: Some(X509Attestation {
                client_certificates: Some(certificate(cert)),
                ..X509Attestation::default()
            }),
            ..Self::default()
        }
    }

    fn x509_signing(ca: &str) -> Self {
        Self {
            kind: "x509".into(),
            x509: Some(X509Attestation {
                signing_certificates: Some(certificate(ca)),
                ..X509Attestation::default()
            }),
            ..Self::default()
        }
    }

    fn symmetric(key_base64: &str) -> Self {
        Self {
            kind: "symmetricKey".into(),
            symmetric_key: Some(key(key_base64)),
            ..Self::default()
        }
    }
}

/// The setters individual enrollments and groups share; each returns the enrollment.
macro_rules! settings_setters {
    () => {
        /// Refuses its devices: the registration status `disabled`.
        pub fn disabled(mut self) -> Self {
            self.settings.provisioning_status = ProvisioningStatus::Disabled;
            self
        }

        /// Whether its devices may register.
        pub fn is_enabled(&self) -> bool {
            self.settings.provisioning_status == ProvisioningStatus::Enabled
        }

        /// The hubs it may assign to (every linked hub when none are given).
        pub fn hubs<S: Into<String>>(mut self, hubs: impl IntoIterator<Item = S>) -> Self {
            self.settings.iot_hubs = hubs.into_iter().map(Into::into).collect();
            self
        }

        /// How a hub is chosen among them.
        pub fn allocation(mut self, policy: AllocationPolicy) -> Self {
            self.settings.allocation_policy = Some(policy);
            self
        }

        /// A `custom` allocation: DPS asks `webhook_url`.
        pub fn custom_allocation(mut self, webhook_url: impl Into<String>) -> Self {
            self.settings.allocation_policy = Some(AllocationPolicy::Custom);
            self.settings.custom_allocation_definition = Some(CustomAllocationDefinition {
                webhook_url: webhook_url.into(),
                api_version: default_webhook_api_version(),
            });
            self
        }

        /// What a registration of an already assigned device does.
        pub fn reprovision(mut self, policy: ReprovisionPolicy) -> Self {
            self.settings.reprovision_policy = Some(policy);
            self
        }

        /// A payload returned to its devices (see [`EnrollmentSettings::payload`]).
        pub fn payload(mut self, payload: Value) -> Self {
            self.settings.payload = Some(payload);
            self
        }

        /// Marks its devices as IoT Edge devices.
        pub fn iot_edge(mut self, iot_edge: bool) -> Self {
            self.settings.capabilities = Some(Capabilities { iot_edge });
            self
        }
    };
}

impl IndividualEnrollment {
    /// An X.509 enrollment: the device presents `cert` (PEM or base64 DER), whose CN is
    /// `registration_id`.
    pub fn x509(registration_id: impl Into<String>, cert: &str) -> Self {
        Self::with(registration_id.into(), Attestation::x509_client(cert))
    }

    /// A symmetric-key enrollment with the device's own key (base64).
    pub fn symmetric_key(registration_id: impl Into<String>, key_base64: &str) -> Self {
        Self::with(registration_id.into(), Attestation::symmetric(key_base64))
    }

    fn with(registration_id: String, attestation: Attestation) -> Self {
        Self {
            registration_id,
            device_id: None,
            attestation,
            settings: EnrollmentSettings::default(),
        }
    }

    /// The registration id.
    pub fn id(&self) -> &str {
        &self.registration_id
    }

    /// The device id the hub gets, when it is not the registration id.
    pub fn device_id(mut self, device_id: impl Into<String>) -> Self {
        self.device_id = Some(device_id.into());
        self
    }

    settings_setters!();
}

impl EnrollmentGroup {
    /// An X.509 group: every device whose chain reaches `ca` (PEM or base64 DER; a root or an
    /// intermediate CA).
    pub fn x509_ca(id: impl Into<String>, ca: &str) -> Self {
        Self::with(id.into(), Attestation::x509_signing(ca))
    }

    /// A symmetric-key group: each device's key is derived from `group_key_base64`.
    pub fn symmetric_key(id: impl Into<String>, group_key_base64: &str) -> Self {
        Self::with(id.into(), Attestation::symmetric(group_key_base64))
    }

    fn with(enrollment_group_id: String, attestation: Attestation) -> Self {
        Self {
            enrollment_group_id,
            attestation,
            settings: EnrollmentSettings::default(),
        }
    }

    /// The group's id.
    pub fn id(&self) -> &str {
        &self.enrollment_group_id
    }

    settings_setters!();
}
