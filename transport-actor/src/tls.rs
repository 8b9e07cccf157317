//! The client's rustls configuration, and keeping the real reason of a TLS failure.
//!
//! ntex-tls reports a failed handshake as a bare disconnect. Each connection therefore gets a
//! verifier that wraps the WebPKI verifier and keeps the error it returned, so the caller sees
//! "invalid peer certificate: UnknownIssuer", not "disconnected".

use std::sync::{Arc, Mutex, PoisonError};

use dps_messages::{ProvisioningError, X509Identity};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::{CertifiedKey, Signer, SigningKey, SingleCertAndKey};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::TrustRoots;
use crate::verify_cache::VerifyCache;

/// What a connection's verifier saw go wrong, if anything, and the roots it had.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsErrorSlot {
    error: Arc<Mutex<Option<rustls::Error>>>,
    trusted: Arc<str>,
}

impl TlsErrorSlot {
    fn set(&self, error: rustls::Error) {
        *self.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
    }

    /// The error the verifier returned, if it failed.
    pub(crate) fn take(&self) -> Option<ProvisioningError> {
        let error = self
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        Some(self.failure(error))
    }

    /// `error` as the connection's TLS failure, naming the roots.
    pub(crate) fn failure(&self, error: rustls::Error) -> ProvisioningError {
        let trusted = Some(self.trusted.to_string()).filter(|t| !t.is_empty());
        ProvisioningError::tls(error, trusted)
    }
}

/// The shared verifier, keeping its error in a slot the connection can read.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<VerifyCache>,
    slot: TlsErrorSlot,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .inspect_err(|e| self.slot.set(e.clone()))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .verify_tls12_signature(message, cert, dss)
            .inspect_err(|e| self.slot.set(e.clone()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .verify_tls13_signature(message, cert, dss)
            .inspect_err(|e| self.slot.set(e.clone()))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A device key held elsewhere, keeping its signing error in the connection's slot.
#[derive(Debug)]
struct RecordingKey {
    inner: Arc<dyn SigningKey>,
    slot: TlsErrorSlot,
}

impl SigningKey for RecordingKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let inner = self.inner.choose_scheme(offered)?;
        Some(Box::new(RecordingSigner {
            inner,
            slot: self.slot.clone(),
        }))
    }

    // No `public_key`: rustls asks for it only to check a key against its certificate, which
    // the identity did when it was made.

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        self.inner.algorithm()
    }
}

#[derive(Debug)]
struct RecordingSigner {
    inner: Box<dyn Signer>,
    slot: TlsErrorSlot,
}

impl Signer for RecordingSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.inner
            .sign(message)
            .inspect_err(|e| self.slot.set(e.clone()))
    }

    fn scheme(&self) -> SignatureScheme {
        self.inner.scheme()
    }
}

/// The parts of a client configuration that every connection of a transport shares.
#[derive(Debug, Clone)]
pub(crate) struct TlsSetup {
    provider: Arc<CryptoProvider>,
    /// The WebPKI verifier behind a cache of the chains it accepted, shared by every connection
    /// of the transport (and of its clones).
    verifier: Arc<VerifyCache>,
    /// The roots, in words, for errors.
    trusted: Arc<str>,
}

impl TlsSetup {
    /// Builds the server verifier for `roots`.
    pub(crate) fn new(roots: &TrustRoots) -> Result<Self, ProvisioningError> {
        let provider = Arc::new(provider());
        let store = roots.root_store()?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
                .map_err(|e| bad_roots(e.to_string()))?;
        let verifier = Arc::new(VerifyCache::new(verifier));
        Ok(Self {
            provider,
            verifier,
            trusted: roots.to_string().into(),
        })
    }

    /// A configuration for one connection: TLS 1.2 or 1.3, the server verified, the device's
    /// certificate presented when it has one.
    pub(crate) fn client_config(
        &self,
        identity: Option<&X509Identity>,
    ) -> Result<(Arc<ClientConfig>, TlsErrorSlot), ProvisioningError> {
        let slot = TlsErrorSlot {
            error: Arc::default(),
            trusted: self.trusted.clone(),
        };
        let verifier = Arc::new(RecordingVerifier {
            inner: self.verifier.clone(),
            slot: slot.clone(),
        });
        let builder = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(ProvisioningError::from)?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match identity {
            // A key held elsewhere can fail to sign; ntex reports the handshake that failed so
            // as a bare disconnect, so its error is kept in the connection's slot.
            Some(id) if id.signer().is_some() => {
                let certified = id.certified_key();
                let key = RecordingKey {
                    inner: certified.key.clone(),
                    slot: slot.clone(),
                };
                let certified = CertifiedKey::new(certified.cert.clone(), Arc::new(key));
                builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)))
            }
            // The key was loaded once, when the identity was made, not again per connection.
            Some(id) => builder
                .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(id.certified_key()))),
            None => builder.with_no_client_auth(),
        };
        // Each connection has a configuration of its own, so a session cache could never be
        // used again; rustls' default one would cost 14 KiB per connection for nothing.
        config.resumption = rustls::client::Resumption::disabled();
        Ok((Arc::new(config), slot))
    }
}

fn bad_roots(why: String) -> ProvisioningError {
    ProvisioningError::InvalidRequest(format!("unusable trust roots: {why}"))
}

/// The crypto provider of every connection: ring, so no C toolchain beyond a compiler is
/// needed.
///
/// The cipher suites are ring's, with the AES-128-GCM/SHA-256 suites first: as strong as the
/// protocol needs, and SHA-256 key derivation is far cheaper per handshake than SHA-384 where
/// the CPU has SHA extensions. A peer that prefers otherwise still gets its way in TLS 1.3.
pub(crate) fn provider() -> CryptoProvider {
    use rustls::crypto::ring::{cipher_suite, default_provider};
    let preferred = [
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ];
    let mut provider = default_provider();
    let rest: Vec<_> = provider
        .cipher_suites
        .iter()
        .copied()
        .filter(|s| !preferred.contains(s))
        .collect();
    provider.cipher_suites = preferred.into_iter().chain(rest).collect();
    provider
}

/// The rustls error inside an IO error, if ntex kept one there.
pub(crate) fn rustls_error_in(error: &std::io::Error) -> Option<rustls::Error> {
    error_in::<rustls::Error>(error)
}

/// The error of type `T` inside an IO error (rustls', the proxy's), however deep ntex put it.
pub(crate) fn error_in<T>(error: &std::io::Error) -> Option<T>
where
    T: std::error::Error + Clone + 'static,
{
    let mut source: Option<&(dyn std::error::Error + 'static)> = error.get_ref().map(|e| e as _);
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found.clone());
        }
        // An io::Error's source() skips the error it wraps; look at that error itself.
        source = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => e.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_roots_load() {
        assert!(TlsSetup::new(&TrustRoots::public_web()).is_ok());
        assert!(TlsSetup::new(&TrustRoots::default()).is_ok());
    }

    #[test]
    fn the_provider_prefers_aes_128_and_keeps_every_suite() {
        let all = rustls::crypto::ring::default_provider().cipher_suites;
        let ours = provider().cipher_suites;
        assert_eq!(
            ours[0],
            rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        );
        assert_eq!(ours.len(), all.len());
        assert!(all.iter().all(|s| ours.contains(s)));
    }

    #[test]
    fn finds_a_rustls_error_wrapped_in_io_errors() {
        let tls = rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls.clone());
        assert_eq!(rustls_error_in(&io), Some(tls.clone()));
        let outer = std::io::Error::other(io);
        assert_eq!(rustls_error_in(&outer), Some(tls));
        assert_eq!(rustls_error_in(&std::io::Error::other("plain")), None);
    }
}
