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
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::verify_cache::VerifyCache;

/// Which server certificates the transport trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustRoots {
    /// The public web's roots (Mozilla's list, from `webpki-roots`): what real DPS needs.
    PublicWeb,
    /// Only these CA certificates (PEM), e.g. a test broker's CA.
    Pem(String),
}

/// What a connection's verifier saw go wrong, if anything.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsErrorSlot(Arc<Mutex<Option<rustls::Error>>>);

impl TlsErrorSlot {
    fn set(&self, error: rustls::Error) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
    }

    /// The error the verifier returned, if it failed.
    pub(crate) fn take(&self) -> Option<rustls::Error> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
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

/// The parts of a client configuration that every connection of a transport shares.
#[derive(Debug, Clone)]
pub(crate) struct TlsSetup {
    provider: Arc<CryptoProvider>,
    /// The WebPKI verifier behind a cache of the chains it accepted, shared by every connection
    /// of the transport (and of its clones).
    verifier: Arc<VerifyCache>,
}

impl TlsSetup {
    /// Builds the server verifier for `roots`.
    pub(crate) fn new(roots: &TrustRoots) -> Result<Self, ProvisioningError> {
        let provider = dps_messages::x509::shared_provider();
        let store = match roots {
            TrustRoots::PublicWeb => RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
            TrustRoots::Pem(pem) => {
                let mut store = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    let cert = cert.map_err(|e| bad_roots(e.to_string()))?;
                    store.add(cert).map_err(|e| bad_roots(e.to_string()))?;
                }
                if store.is_empty() {
                    return Err(bad_roots("no CERTIFICATE block found".into()));
                }
                store
            }
        };
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
                .map_err(|e| bad_roots(e.to_string()))?;
        let verifier = Arc::new(VerifyCache::new(verifier));
        Ok(Self { provider, verifier })
    }

    /// A configuration for one connection: TLS 1.2 or 1.3, the server verified, the device's
    /// certificate presented when it has one.
    pub(crate) fn client_config(
        &self,
        identity: Option<&X509Identity>,
    ) -> Result<(Arc<ClientConfig>, TlsErrorSlot), ProvisioningError> {
        let slot = TlsErrorSlot::default();
        let verifier = Arc::new(RecordingVerifier {
            inner: self.verifier.clone(),
            slot: slot.clone(),
        });
        let builder = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(ProvisioningError::Tls)?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match identity {
            Some(id) => builder.with_client_cert_resolver(id.client_cert_resolver()),
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

/// The rustls error inside an IO error, if ntex kept one there.
pub(crate) fn rustls_error_in(error: &std::io::Error) -> Option<rustls::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = error.get_ref().map(|e| e as _);
    while let Some(e) = source {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.clone());
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
        assert!(TlsSetup::new(&TrustRoots::PublicWeb).is_ok());
    }

    #[test]
    fn unusable_pem_roots_are_an_error() {
        for pem in [
            "",
            "garbage",
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        ] {
            assert!(
                matches!(
                    TlsSetup::new(&TrustRoots::Pem(pem.into())),
                    Err(ProvisioningError::InvalidRequest(_))
                ),
                "{pem}"
            );
        }
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
