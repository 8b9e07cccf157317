//! Registration with certificate issuance: the client makes the key and the CSR, registers
//! with them, checks the chain the service issued, and keeps it (with the key) in the cache
//! until renewal is due.
//!
//! Renewal is the part nobody else does: a cached certificate is returned as long as it is
//! outside its renewal window (by default the last third of its lifetime); inside it, the
//! client provisions again with a fresh key and CSR, and replaces the cache only after that
//! succeeded, so a failed renewal leaves the device its old certificate.

use std::io;
use std::path::Path;
use std::time::{Instant, SystemTime};

use dps_messages::certificate::KeyCurve;
use dps_messages::error::CertificateError;
use dps_messages::{
    CertificateRequest, IssuedIdentity, ProvisioningError, RegistrationRequest, RegistrationResult,
};

use super::ProvisioningClient;
use super::cache::Certificate;
use crate::durable::{self, Readers};

/// What a registration that sent a CSR does when no certificate comes back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CsrPolicy {
    /// A certificate is the point: an assignment without a chain is
    /// [`CertificateError::NoChainIssued`], and a refused CSR is the registration's error.
    #[default]
    Required,
    /// A certificate if the enrollment issues one: an assignment without a chain is returned
    /// without an identity, and a CSR refused with a 4xx (other than 401 and 404, which are
    /// about the device, not the CSR) is retried once without the CSR, within the same
    /// deadline, as Azure's iot-identity-service does.
    IfOffered,
}

/// How [`ProvisioningClient::register_with_certificate`] asks for a certificate.
#[derive(Debug, Clone)]
pub struct CertificateOptions {
    /// The curve of the key made for each CSR (P-384 by default, as the service documents).
    pub curve: KeyCurve,
    /// What happens when no certificate comes back.
    pub policy: CsrPolicy,
    /// When a cached certificate is renewed: within the last `renewal_window` of its lifetime,
    /// as a fraction (1/3 by default: a 30-day certificate from its 20th day). 0 renews only
    /// expired certificates, 1 every time.
    pub renewal_window: f64,
}

impl Default for CertificateOptions {
    /// P-384, a certificate required, renewed in the last third of its lifetime.
    fn default() -> Self {
        Self {
            curve: KeyCurve::P384,
            policy: CsrPolicy::Required,
            renewal_window: 1.0 / 3.0,
        }
    }
}

/// An assignment and the certificate issued with it.
#[derive(Debug, Clone)]
pub struct Provisioned {
    /// The assignment: where the device belongs.
    pub result: RegistrationResult,
    /// The issued chain and its key, checked; `None` only under [`CsrPolicy::IfOffered`].
    pub certificate: Option<IssuedIdentity>,
    /// Whether both came from the cache, without a registration.
    pub from_cache: bool,
}

impl Provisioned {
    /// Writes the issued chain (PEM, leaf first) to `chain` and its private key (PEM) to `key`,
    /// for the program that connects to the IoT hub with them. Each file is written durably (a
    /// temporary file, synced, renamed over the old one), so a power cut leaves the old file
    /// or the new one, never half of either; the key's file is readable by its owner only from
    /// the moment it exists. Returns `false`, and writes nothing, when no certificate was
    /// issued.
    ///
    /// ```no_run
    /// # fn example(provisioned: dps_transport_actor::Provisioned) -> std::io::Result<()> {
    /// if provisioned.write_pem("/var/lib/device/hub.pem".as_ref(), "/var/lib/device/hub.key".as_ref())? {
    ///     println!("certificate written");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn write_pem(&self, chain: &Path, key: &Path) -> io::Result<bool> {
        let Some(identity) = &self.certificate else {
            return Ok(false);
        };
        // The key first: a chain on disk is never without its key.
        durable::write(
            key,
            identity.private_key_pem().as_bytes(),
            Readers::OwnerOnly,
        )?;
        durable::write(chain, identity.chain_pem().as_bytes(), Readers::Anyone)?;
        Ok(true)
    }
}

impl ProvisioningClient {
    /// Registers `request`'s device with a certificate signing request, and returns the
    /// assignment with the certificate the service issued (api-version `2025-07-01-preview`
    /// unless the request names a later one).
    ///
    /// With [`ClientOptions::cache_file`](super::ClientOptions::cache_file), a cached
    /// certificate outside its renewal window is returned without a registration; one inside
    /// it (or lapsed, or an entry without one) is renewed: a new key, a new CSR, a new
    /// registration, and the cache replaced only when that succeeded. A corrupt cache is set
    /// aside with a warning.
    ///
    /// Errors are [`register`](Self::register)'s, and [`ProvisioningError::Certificate`] when
    /// the issued chain fails a check ([`IssuedIdentity`]) or, under [`CsrPolicy::Required`],
    /// when none was issued.
    ///
    /// ```no_run
    /// # use dps_transport_actor::{CertificateOptions, ProvisioningClient};
    /// # use dps_messages::RegistrationRequest;
    /// # async fn example(client: ProvisioningClient) -> Result<(), dps_messages::ProvisioningError> {
    /// let request = RegistrationRequest::new("0ne00000A0A", "my-device");
    /// let provisioned = client
    ///     .register_with_certificate(request, &CertificateOptions::default())
    ///     .await?;
    /// let issued = provisioned.certificate.expect("a certificate is required by default");
    /// println!("{} until {}", issued.leaf().subject, issued.leaf().not_after_text);
    /// let hub_identity = issued.identity().clone(); // an X509Identity for TLS to the hub
    /// # let _ = hub_identity; Ok(()) }
    /// ```
    pub async fn register_with_certificate(
        &self,
        request: RegistrationRequest,
        options: &CertificateOptions,
    ) -> Result<Provisioned, ProvisioningError> {
        if let Some(entry) = self.cached(&request) {
            let renewal = match entry.certificate {
                Certificate::Valid(identity) => {
                    let due = identity.leaf().renewal_starts(options.renewal_window);
                    if SystemTime::now() < due {
                        tracing::info!(
                            registration_id = request.registration_id,
                            "using the cached assignment and certificate"
                        );
                        return Ok(Provisioned {
                            result: entry.result,
                            certificate: Some(identity),
                            from_cache: true,
                        });
                    }
                    "the cached certificate is due for renewal"
                }
                Certificate::Lapsed => "the cached certificate has lapsed",
                Certificate::Absent if options.policy == CsrPolicy::IfOffered => {
                    return Ok(Provisioned {
                        result: entry.result,
                        certificate: None,
                        from_cache: true,
                    });
                }
                Certificate::Absent => "the cached assignment has no certificate",
            };
            tracing::info!(
                registration_id = request.registration_id,
                "{renewal}; provisioning again with a new key"
            );
        }

        let started = Instant::now();
        let csr = CertificateRequest::generate_with(&request.registration_id, options.curve)?;
        let result = match self.run(&request.clone().with_csr(&csr)).await {
            Ok(result) => result,
            Err(e) if options.policy == CsrPolicy::IfOffered && refuses_the_csr(&e) => {
                tracing::warn!(
                    registration_id = request.registration_id,
                    "the service refused the CSR ({e}); registering without it"
                );
                let left = self.options.deadline.saturating_sub(started.elapsed());
                let result = self.run_within(&request, left).await?;
                self.save(&request, &result, None);
                return Ok(Provisioned {
                    result,
                    certificate: None,
                    from_cache: false,
                });
            }
            Err(e) => return Err(e),
        };
        let chain = result
            .registration_state
            .as_ref()
            .and_then(|state| state.issued_certificate_chain.as_deref());
        let certificate = match (chain, options.policy) {
            (Some(chain), _) => Some(csr.accept(chain, SystemTime::now())?),
            (None, CsrPolicy::Required) => return Err(CertificateError::NoChainIssued.into()),
            (None, CsrPolicy::IfOffered) => None,
        };
        self.save(&request, &result, certificate.as_ref());
        Ok(Provisioned {
            result,
            certificate,
            from_cache: false,
        })
    }
}

/// Whether the service refused the request in a way a request without a CSR may not be: a 4xx
/// other than 401 (credentials) and 404 (no enrollment).
fn refuses_the_csr(error: &ProvisioningError) -> bool {
    error
        .service_error()
        .is_some_and(|e| (400..500).contains(&e.status) && !matches!(e.status, 401 | 404))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dps_messages::error::ServiceError;

    #[test]
    fn only_a_refusal_about_the_request_is_retried_without_the_csr() {
        let refusal =
            |status| ProvisioningError::from_service(ServiceError::from_body(status, b""));
        for status in [400, 403, 409, 412] {
            assert!(refuses_the_csr(&refusal(status)), "{status}");
        }
        for status in [401, 404, 500, 300] {
            assert!(!refuses_the_csr(&refusal(status)), "{status}");
        }
        assert!(!refuses_the_csr(&ProvisioningError::OperationCancelled));
    }

    #[test]
    fn the_defaults_ask_for_p384_required_renewed_in_the_last_third() {
        let options = CertificateOptions::default();
        assert_eq!(options.curve, KeyCurve::P384);
        assert_eq!(options.policy, CsrPolicy::Required);
        assert!((options.renewal_window - 1.0 / 3.0).abs() < 1e-9);
    }
}
