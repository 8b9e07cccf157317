//! The broker's rustls configuration.
//!
//! TLS 1.2 stays enabled by default (the Python SDK speaks nothing newer). Client certificates are optional
//! at the TLS layer, since symmetric-key devices present none. A broker without enrollments
//! fails the handshake of one that does not chain to the device CA; a broker with enrollments
//! accepts any certificate whose key the device proves it holds, as DPS does, and decides at
//! the register which enrollment (if any) admits it. The CN is checked at CONNECT.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

use crate::BrokerError;
use crate::enrollment::Enrollments;

fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, BrokerError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BrokerError::Tls(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(BrokerError::Tls(format!("{what}: no certificate found")));
    }
    Ok(certs)
}

/// The TLS versions a broker accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersions {
    /// TLS 1.2 and 1.3: a client that prefers 1.3 gets it, as it would from a service that
    /// offered both.
    Both,
    /// TLS 1.2 only, as real DPS: Microsoft's "TLS support in DPS" says DPS supports TLS 1.2
    /// and nothing else, so a device that cannot speak 1.2 fails against DPS and must fail
    /// here too.
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl TlsVersions {
    fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static TLS12: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
        static TLS13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            TlsVersions::Both => rustls::DEFAULT_VERSIONS,
            TlsVersions::Tls12 => &TLS12,
            TlsVersions::Tls13 => &TLS13,
        }
    }
}

impl std::str::FromStr for TlsVersions {
    type Err = String;

    /// `1.2`, `1.3` or `both`.
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "both" => Ok(TlsVersions::Both),
            "1.2" => Ok(TlsVersions::Tls12),
            "1.3" => Ok(TlsVersions::Tls13),
            other => Err(format!("`{other}`: expected 1.2, 1.3 or both")),
        }
    }
}

/// The broker's crypto provider: ring's, so that no C toolchain beyond a compiler is needed.
/// The client's preference picks the cipher suite, as rustls servers do by default.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server configuration: `server_cert_pem` (chain) and `server_key_pem`, verifying client
/// certificates against `device_ca_pem` when given, speaking `versions` of TLS.
pub fn server_config(
    server_cert_pem: &str,
    server_key_pem: &str,
    device_ca_pem: Option<&str>,
    versions: TlsVersions,
    enrollments: Arc<Enrollments>,
) -> Result<Arc<ServerConfig>, BrokerError> {
    let provider = provider();
    let chain = certs(server_cert_pem, "server certificate")?;
    let key = PrivateKeyDer::from_pem_slice(server_key_pem.as_bytes())
        .map_err(|e| BrokerError::Tls(format!("server key: {e}")))?;

    let device_ca = match device_ca_pem {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs(pem, "device CA")? {
                roots
                    .add(cert)
                    .map_err(|e| BrokerError::Tls(format!("device CA: {e}")))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| BrokerError::Tls(format!("device CA: {e}")))?;
            Some(verifier)
        }
        None => None,
    };
    let verifier = Arc::new(DeviceVerifier {
        device_ca,
        enrollments,
        provider: provider.clone(),
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions.versions())
        .map_err(|e| BrokerError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| BrokerError::Tls(format!("server certificate and key: {e}")))?;
    // A device provisions once and goes; session tickets would only cost both sides work.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The service API's configuration: the same server certificate, HTTP/1.1, no client
/// certificates (the service SDKs sign each request instead).
pub(crate) fn service_config(
    server_cert_pem: &str,
    server_key_pem: &str,
) -> Result<Arc<ServerConfig>, BrokerError> {
    let chain = certs(server_cert_pem, "server certificate")?;
    let key = PrivateKeyDer::from_pem_slice(server_key_pem.as_bytes())
        .map_err(|e| BrokerError::Tls(format!("server key: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| BrokerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| BrokerError::Tls(format!("server certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Client certificates as DPS takes them: against the device CA while the broker has no
/// enrollments; any certificate whose key the device proves it holds once it has some (the
/// register decides which enrollment admits it).
#[derive(Debug)]
struct DeviceVerifier {
    device_ca: Option<Arc<dyn ClientCertVerifier>>,
    enrollments: Arc<Enrollments>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ClientCertVerifier for DeviceVerifier {
    fn offer_client_auth(&self) -> bool {
        self.device_ca.is_some() || !self.enrollments.is_empty()
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        match &self.device_ca {
            Some(ca) if self.enrollments.is_empty() => ca.root_hint_subjects(),
            _ => &[],
        }
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self.enrollments.is_empty() {
            return match &self.device_ca {
                Some(ca) => ca.verify_client_cert(end_entity, intermediates, now),
                None => Err(rustls::Error::General(
                    "no client certificates taken".into(),
                )),
            };
        }
        webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
