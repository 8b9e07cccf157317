//! The broker's rustls configuration.
//!
//! TLS 1.2 stays enabled (the Python SDK speaks nothing newer). Client certificates are optional
//! at the TLS layer, since symmetric-key devices present none, but one that does not chain to
//! the device CA fails the handshake; the CN is checked at CONNECT.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::BrokerError;

fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, BrokerError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BrokerError::Tls(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(BrokerError::Tls(format!("{what}: no certificate found")));
    }
    Ok(certs)
}

/// The server configuration: `server_cert_pem` (chain) and `server_key_pem`, verifying client
/// certificates against `device_ca_pem` when given.
pub fn server_config(
    server_cert_pem: &str,
    server_key_pem: &str,
    device_ca_pem: Option<&str>,
) -> Result<Arc<ServerConfig>, BrokerError> {
    let provider = dps_messages::x509::shared_provider();
    let chain = certs(server_cert_pem, "server certificate")?;
    let key = PrivateKeyDer::from_pem_slice(server_key_pem.as_bytes())
        .map_err(|e| BrokerError::Tls(format!("server key: {e}")))?;

    let verifier = match device_ca_pem {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs(pem, "device CA")? {
                roots
                    .add(cert)
                    .map_err(|e| BrokerError::Tls(format!("device CA: {e}")))?;
            }
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| BrokerError::Tls(format!("device CA: {e}")))?
        }
        None => WebPkiClientVerifier::no_client_auth(),
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BrokerError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| BrokerError::Tls(format!("server certificate and key: {e}")))?;
    // A device provisions once and goes; session tickets would only cost both sides work.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}
