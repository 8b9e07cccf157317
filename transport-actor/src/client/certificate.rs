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
    /// Where each CSR's key is made: in memory (`None`, the default; the key is then cached
    /// and written as PEM), or inside a PKCS#11 token, where it stays: the cache keeps its
    /// URI, and a renewal destroys the old key once the new certificate is stored.
    #[cfg(feature = "pkcs11")]
    pub token_keys: Option<crate::pkcs11::TokenKeys>,
}

impl Default for CertificateOptions {
    /// P-384, a certificate required, renewed in the last third of its lifetime.
    fn default() -> Self {
        Self {
            curve: KeyCurve::P384,
            policy: CsrPolicy::Required,
            renewal_window: 1.0 / 3.0,
            #[cfg(feature = "pkcs11")]
            token_keys: None,
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
    /// the moment it exists. A key held in a token is not written (`key` is left alone): the
    /// identity's signer names it. Returns `false`, and writes nothing, when no certificate
    /// was issued.
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
        if let Some(key_pem) = identity.private_key_pem() {
            durable::write(key, key_pem.as_bytes(), Readers::OwnerOnly)?;
        }
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
        let keys = TokenKeysOf(options);
        let mut replaced_key = None;
        if let Some(entry) = self.cached(&request, &|uri| keys.open(uri)) {
            replaced_key = entry.key_uri;
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
                Certificate::Unopenable(why) => {
                    tracing::warn!(
                        registration_id = request.registration_id,
                        "the cached certificate's key cannot be used: {why}"
                    );
                    "its key is out of reach"
                }
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
        let (csr, made) = keys.request(&request.registration_id, options.curve)?;
        let result = match self.run(&request.clone().with_csr(&csr)).await {
            Ok(result) => result,
            Err(e) if options.policy == CsrPolicy::IfOffered && refuses_the_csr(&e) => {
                drop(made);
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
        if certificate.is_some() {
            made.keep();
        }
        let stored = self.save(&request, &result, certificate.as_ref());
        // The old key goes only once its successor's certificate is checked and stored: a
        // cache that could not be written still names the old one.
        let new_key = certificate
            .as_ref()
            .and_then(|c| c.identity().signer())
            .and_then(|s| s.locator());
        if let Some(old) = replaced_key.filter(|old| stored && new_key.as_ref() != Some(old)) {
            keys.destroy(&old);
        }
        Ok(Provisioned {
            result,
            certificate,
            from_cache: false,
        })
    }
}

/// The key source of [`CertificateOptions`]: memory, or a token with the `pkcs11` feature.
struct TokenKeysOf<'a>(
    #[cfg_attr(
        not(feature = "pkcs11"),
        expect(dead_code, reason = "the options name a token only with `pkcs11`")
    )]
    &'a CertificateOptions,
);

impl TokenKeysOf<'_> {
    /// A CSR for `registration_id`, its key made where the options say, and that key when a
    /// token holds it.
    fn request(
        &self,
        registration_id: &str,
        curve: KeyCurve,
    ) -> Result<(CertificateRequest, MadeKey), ProvisioningError> {
        #[cfg(feature = "pkcs11")]
        if let Some(keys) = &self.0.token_keys {
            let key = std::sync::Arc::new(keys.make(curve).map_err(key_error)?);
            let made = MadeKey {
                key: Some(key.clone()),
            };
            // A key the CSR could not be made with goes with `made`.
            let csr = CertificateRequest::with_signer(registration_id, key)?;
            return Ok((csr, made));
        }
        let csr = CertificateRequest::generate_with(registration_id, curve)?;
        Ok((csr, MadeKey::default()))
    }

    /// The key a cache names by `uri`, in the options' token.
    fn open(&self, uri: &str) -> Result<std::sync::Arc<dyn dps_messages::x509::KeySigner>, String> {
        #[cfg(feature = "pkcs11")]
        if let Some(keys) = &self.0.token_keys {
            return match keys.find(uri) {
                Ok(key) => Ok(std::sync::Arc::new(key)),
                Err(e) => Err(e.to_string()),
            };
        }
        Err(format!("{uri} is in a token, and no token is configured"))
    }

    /// Destroys the key at `uri` in the options' token, if there is one; a failure is logged.
    fn destroy(&self, uri: &str) {
        #[cfg(feature = "pkcs11")]
        if let Some(keys) = &self.0.token_keys {
            match keys.find(uri) {
                Ok(key) => destroy(&key),
                Err(e) => tracing::warn!(key = uri, "cannot remove the replaced key: {e}"),
            }
        }
        #[cfg(not(feature = "pkcs11"))]
        let _ = uri;
    }
}

/// A key made in a token for one CSR, destroyed when this guard drops unless
/// [`MadeKey::keep`] was called: whichever way a registration ends without a certificate, it
/// leaves no key behind.
#[derive(Default)]
struct MadeKey {
    #[cfg(feature = "pkcs11")]
    key: Option<std::sync::Arc<crate::pkcs11::Pkcs11Key>>,
}

impl MadeKey {
    /// A certificate came of the key: it stays.
    fn keep(self) {
        #[cfg(feature = "pkcs11")]
        {
            let mut made = self;
            made.key = None;
        }
    }
}

impl Drop for MadeKey {
    fn drop(&mut self) {
        #[cfg(feature = "pkcs11")]
        if let Some(key) = self.key.take() {
            destroy(&key);
        }
    }
}

#[cfg(feature = "pkcs11")]
fn destroy(key: &crate::pkcs11::Pkcs11Key) {
    match key.destroy() {
        Ok(()) => tracing::info!(key = %key.uri(), "removed a key from the token"),
        Err(e) => tracing::warn!(key = %key.uri(), "cannot remove a key from the token: {e}"),
    }
}

#[cfg(feature = "pkcs11")]
fn key_error(error: crate::pkcs11::Pkcs11Error) -> ProvisioningError {
    ProvisioningError::Key(dps_messages::x509::SignError::new(error))
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
