//! What a device asks the service for, and the register body it sends.

use serde::Serialize;
use serde_json::Value;

use crate::api_version::ApiVersion;
#[cfg(feature = "issuance")]
use crate::certificate::CertificateRequest;
use crate::error::CertificateError;
use crate::error::ProvisioningError;

/// DPS allows registration ids up to 128 characters.
const MAX_REGISTRATION_ID_LEN: usize = 128;

/// One device's registration: who it is, where to register it, and what to send.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrationRequest {
    /// The DPS instance's id scope, e.g. `0ne000EEBBD`.
    pub id_scope: String,
    /// The device's registration id (for X.509 devices, its certificate's CN).
    pub registration_id: String,
    /// The DPS host, [`RegistrationRequest::DEFAULT_HOST`] unless set.
    pub provisioning_host: String,
    /// Custom allocation data, sent as the body's `payload` (SRS 06_002).
    pub payload: Option<Value>,
    /// An endpoint URI that replaces the one derived from the host, e.g.
    /// `mqtts://127.0.0.1:40123` or `wss://127.0.0.1:40124/$iothub/websocket` (SRS 18_039).
    pub endpoint: Option<String>,
    /// The `api-version` the username announces; `None` picks one, see
    /// [`api_version`](Self::api_version).
    pub api_version: Option<ApiVersion>,
    /// A certificate signing request (base64 DER, no PEM armour) sent as the body's `csr`,
    /// asking the service to issue the device a certificate.
    pub csr: Option<String>,
}

impl RegistrationRequest {
    /// The global DPS endpoint, the host of every public-cloud device.
    pub const DEFAULT_HOST: &str = "global.azure-devices-provisioning.net";

    /// A request for `registration_id` in the DPS instance `id_scope`, against the global host.
    pub fn new(id_scope: impl Into<String>, registration_id: impl Into<String>) -> Self {
        Self {
            id_scope: id_scope.into(),
            registration_id: registration_id.into(),
            provisioning_host: Self::DEFAULT_HOST.to_owned(),
            payload: None,
            endpoint: None,
            api_version: None,
            csr: None,
        }
    }

    /// Sets the DPS host.
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.provisioning_host = host.into();
        self
    }

    /// Sets custom allocation data.
    pub fn with_payload(mut self, payload: Value) -> Self {
        self.payload = Some(payload);
        self
    }

    /// Sets an endpoint URI that overrides the host-derived one.
    pub fn with_endpoint(mut self, uri: impl Into<String>) -> Self {
        self.endpoint = Some(uri.into());
        self
    }

    /// Announces `version` in the username, whatever the request carries.
    pub fn with_api_version(mut self, version: impl Into<ApiVersion>) -> Self {
        self.api_version = Some(version.into());
        self
    }

    /// Asks the service to certify `csr`'s key: the body carries its CSR, and the username
    /// announces `2025-07-01-preview` unless a version was chosen explicitly.
    #[cfg(feature = "issuance")]
    pub fn with_csr(mut self, csr: &CertificateRequest) -> Self {
        self.csr = Some(csr.csr_base64());
        self
    }

    /// The `api-version` the username announces: the one chosen with
    /// [`with_api_version`](Self::with_api_version); otherwise `2025-07-01-preview` for a
    /// request with a CSR and `2019-03-31` (the Node SDK's) for one without.
    pub fn api_version(&self) -> ApiVersion {
        match (&self.api_version, &self.csr) {
            (Some(version), _) => version.clone(),
            (None, Some(_)) => ApiVersion::V2025_07_01Preview,
            (None, None) => ApiVersion::default(),
        }
    }

    /// Checks what the service would reject anyway, so the caller hears it before any network
    /// traffic: an empty or overlong id scope or registration id, or characters DPS does not
    /// allow in a registration id (lower-case letters, digits, `-._:`; upper case is accepted
    /// here because the service folds it).
    pub fn validate(&self) -> Result<(), ProvisioningError> {
        let bad = |why: String| Err(ProvisioningError::InvalidRequest(why));
        if self.id_scope.is_empty() {
            return bad("the id scope is empty".into());
        }
        if self.id_scope.contains('/') {
            return bad(format!("the id scope `{}` contains `/`", self.id_scope));
        }
        let id = &self.registration_id;
        if id.is_empty() {
            return bad("the registration id is empty".into());
        }
        if id.len() > MAX_REGISTRATION_ID_LEN {
            return bad(format!(
                "the registration id is over {MAX_REGISTRATION_ID_LEN} characters"
            ));
        }
        if let Some(c) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-._:".contains(*c)))
        {
            return bad(format!("the registration id `{id}` contains `{c}`"));
        }
        let version = self.api_version();
        if self.csr.is_some() && !version.can_carry_csr() {
            return Err(CertificateError::ApiVersionTooOld(version.to_string()).into());
        }
        Ok(())
    }

    /// The register body: `{"registrationId":..}` plus `"payload"` only when one was given
    /// (SRS 06_001, 06_002), and `"csr"` only when the request carries one.
    pub(crate) fn register_body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            registration_id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            payload: Option<&'a Value>,
            #[serde(skip_serializing_if = "Option::is_none")]
            csr: Option<&'a str>,
        }
        let body = Body {
            registration_id: &self.registration_id,
            payload: self.payload.as_ref(),
            csr: self.csr.as_deref(),
        };
        // Serializing a struct of a &str and a Value cannot fail.
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_registration_id_of_exactly_the_limit_is_valid() {
        let at_limit = "a".repeat(MAX_REGISTRATION_ID_LEN);
        assert!(
            RegistrationRequest::new("scope", at_limit)
                .validate()
                .is_ok()
        );
        let over = "a".repeat(MAX_REGISTRATION_ID_LEN + 1);
        assert!(RegistrationRequest::new("scope", over).validate().is_err());
    }

    // SRS_NODE_PROVISIONING_MQTT_06_001: the register body is a JSON object with a
    // registrationId property.
    #[test]
    fn srs_06_001_body_has_registration_id_and_no_payload_when_unset() {
        let req = RegistrationRequest::new("scope", "dev-1");
        assert_eq!(req.register_body(), br#"{"registrationId":"dev-1"}"#);
    }

    // SRS_NODE_PROVISIONING_MQTT_06_002: custom allocation data goes in a payload property,
    // whatever JSON value it is.
    #[test]
    fn srs_06_002_body_carries_any_json_payload() {
        for payload in [
            json!({"a": [1, 2, {"b": null}]}),
            json!("text"),
            json!(7),
            json!(null),
        ] {
            let req = RegistrationRequest::new("scope", "dev-1").with_payload(payload.clone());
            let body: Value = serde_json::from_slice(&req.register_body()).unwrap();
            assert_eq!(body, json!({"registrationId": "dev-1", "payload": payload}));
        }
    }

    #[test]
    fn validate_accepts_dps_ids_and_rejects_others() {
        assert!(
            RegistrationRequest::new("0ne00000001", "my-dev.1_a:b")
                .validate()
                .is_ok()
        );
        for (scope, id) in [
            ("", "dev"),
            ("scope", ""),
            ("scope", "has space"),
            ("scope", "slash/y"),
            ("sc/ope", "dev"),
            ("scope", &"x".repeat(129)),
        ] {
            let err = RegistrationRequest::new(scope, id).validate().unwrap_err();
            assert!(
                matches!(err, ProvisioningError::InvalidRequest(_)),
                "{scope} {id}"
            );
        }
    }

    #[cfg(feature = "issuance")]
    #[test]
    fn a_csr_goes_in_the_body_and_picks_the_preview_version_unless_one_was_chosen() {
        let csr =
            CertificateRequest::generate_with("dev-1", crate::certificate::KeyCurve::P256).unwrap();
        let plain = RegistrationRequest::new("scope", "dev-1");
        assert_eq!(plain.api_version(), ApiVersion::V2019_03_31);
        let request = plain.with_payload(json!({"k": 1})).with_csr(&csr);
        assert_eq!(request.api_version(), ApiVersion::V2025_07_01Preview);
        assert!(request.validate().is_ok());
        let body: Value = serde_json::from_slice(&request.register_body()).unwrap();
        assert_eq!(
            body,
            json!({"registrationId": "dev-1", "payload": {"k": 1}, "csr": csr.csr_base64()})
        );
        let read: crate::service::RegisterBody =
            serde_json::from_slice(&request.register_body()).unwrap();
        assert_eq!(read.csr, Some(csr.csr_base64()));

        // An explicit version wins, and one that cannot carry a CSR is refused before sending.
        let newer = request.clone().with_api_version("2026-11-02-preview");
        assert_eq!(newer.api_version().as_str(), "2026-11-02-preview");
        assert!(newer.validate().is_ok());
        let old = request.with_api_version(ApiVersion::V2021_06_01);
        assert!(matches!(
            old.validate(),
            Err(ProvisioningError::Certificate(CertificateError::ApiVersionTooOld(v))) if v == "2021-06-01"
        ));
        // Without a CSR any version goes.
        let mut old = old;
        old.csr = None;
        assert!(old.validate().is_ok());
    }

    #[test]
    fn defaults_to_the_global_host() {
        let req = RegistrationRequest::new("s", "d");
        assert_eq!(req.provisioning_host, RegistrationRequest::DEFAULT_HOST);
        assert_eq!(req.with_host("h").provisioning_host, "h");
    }
}
