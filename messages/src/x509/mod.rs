//! An X.509 device identity: a certificate chain and its private key, read from PEM, or a
//! chain and a [`KeySigner`] for a key kept in hardware (SRS 18_001, 18_037).

pub(crate) mod signer;

pub use signer::{
    KeySigner, SignError, ecdsa_der_from_raw, rsa_public_key, subject_public_key_info,
};

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::error::AuthError;

/// A device certificate chain (leaf first) and the leaf's private key.
///
/// `Debug` shows only the chain's length, never the key.
#[derive(Clone)]
pub struct X509Identity {
    /// The chain with the key loaded for signing: parsed once here, not at every connect. No
    /// other copy of the key is kept.
    certified: Arc<CertifiedKey>,
    /// The key's signer when the key is held elsewhere (a token, a secure element).
    signer: Option<Arc<dyn KeySigner>>,
}

impl X509Identity {
    /// Reads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or
    /// SEC1), and checks that the key is usable and belongs to the leaf certificate.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, AuthError> {
        let chain = read_chain(cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| AuthError::BadPrivateKey(e.to_string()))?;
        Self::from_der(chain, key)
    }

    /// Builds an identity from DER, with the same checks as [`X509Identity::from_pem`].
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, AuthError> {
        if chain.is_empty() {
            return Err(AuthError::BadCertificate(
                "the certificate chain is empty".into(),
            ));
        }
        // ring loads the key; the TLS connection takes whatever signs, so the crypto provider
        // of the connection is not needed here.
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| AuthError::KeyMismatch(e.to_string()))?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            // A key whose public half rustls cannot tell is taken as rustls itself takes it.
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(e) => return Err(AuthError::KeyMismatch(e.to_string())),
        }
        Ok(Self {
            certified: Arc::new(certified),
            signer: None,
        })
    }

    /// A chain (leaf first) whose key is held elsewhere and signs through `signer`: a TPM, an
    /// HSM, a secure element. The process never holds the key; each TLS handshake asks the
    /// signer for one signature.
    ///
    /// Checks that the signer's algorithm is one TLS can use and that its public key is the
    /// leaf's ([`AuthError::KeyMismatch`] otherwise).
    pub fn from_signer(
        chain: Vec<CertificateDer<'static>>,
        signer: Arc<dyn KeySigner>,
    ) -> Result<Self, AuthError> {
        if chain.is_empty() {
            return Err(AuthError::BadCertificate(
                "the certificate chain is empty".into(),
            ));
        }
        let (algorithm, spki) = signer::check(signer.as_ref())?;
        let key = signer::ExternalKey {
            signer: signer.clone(),
            algorithm,
            spki,
        };
        let certified = CertifiedKey::new(chain, Arc::new(key));
        certified
            .keys_match()
            .map_err(|e| AuthError::KeyMismatch(e.to_string()))?;
        Ok(Self {
            certified: Arc::new(certified),
            signer: Some(signer),
        })
    }

    /// Reads a PEM certificate chain (leaf first) for a key held by `signer`; see
    /// [`X509Identity::from_signer`].
    pub fn from_pem_and_signer(
        cert_pem: &[u8],
        signer: Arc<dyn KeySigner>,
    ) -> Result<Self, AuthError> {
        Self::from_signer(read_chain(cert_pem)?, signer)
    }

    /// The signer of a key held elsewhere; `None` for a key read from bytes.
    pub fn signer(&self) -> Option<&Arc<dyn KeySigner>> {
        self.signer.as_ref()
    }

    /// The certificate chain, leaf first.
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.certified.cert
    }

    /// The chain and its loaded signing key, as rustls presents them: what a TLS client
    /// configuration of one's own takes (`ClientConfig::with_client_cert_resolver`).
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.certified.clone()
    }
}

/// The certificates of a PEM file, leaf first; at least one.
fn read_chain(cert_pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, AuthError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AuthError::BadCertificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(AuthError::BadCertificate(
            "no CERTIFICATE block found".into(),
        ));
    }
    Ok(chain)
}

impl fmt::Debug for X509Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509Identity")
            .field("certificates", &self.certified.cert.len())
            .field(
                "key",
                &match &self.signer {
                    Some(signer) => signer
                        .locator()
                        .unwrap_or_else(|| "<held elsewhere>".into()),
                    None => "<redacted>".into(),
                },
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    // SRS_NODE_PROVISIONING_MQTT_18_001 (X.509 half): the certificate and key given are the
    // ones kept for the connection.
    #[test]
    fn srs_18_001_reads_a_matching_certificate_and_key() {
        let (cert_pem, key_pem) = cert("dev-1");
        let id = X509Identity::from_pem(cert_pem.as_bytes(), key_pem.as_bytes()).unwrap();
        assert_eq!(id.cert_chain().len(), 1);
        let expected = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        assert_eq!(id.cert_chain()[0], expected);
        // The key loaded for signing is the certificate's.
        assert!(id.certified_key().keys_match().is_ok());
    }

    #[test]
    fn rejects_a_key_from_another_certificate() {
        let (cert_pem, _) = cert("dev-1");
        let (_, other_key) = cert("dev-2");
        let err = X509Identity::from_pem(cert_pem.as_bytes(), other_key.as_bytes()).unwrap_err();
        assert!(matches!(err, AuthError::KeyMismatch(_)), "{err:?}");
    }

    #[test]
    fn rejects_unreadable_pem() {
        let (cert_pem, key_pem) = cert("dev-1");
        let err = X509Identity::from_pem(b"garbage", key_pem.as_bytes()).unwrap_err();
        assert!(matches!(err, AuthError::BadCertificate(_)), "{err:?}");
        let err = X509Identity::from_pem(cert_pem.as_bytes(), b"").unwrap_err();
        assert!(matches!(err, AuthError::BadPrivateKey(_)), "{err:?}");
        // A key where the certificate should be, and the other way round.
        let err = X509Identity::from_pem(key_pem.as_bytes(), cert_pem.as_bytes()).unwrap_err();
        assert!(matches!(err, AuthError::BadCertificate(_)), "{err:?}");
        let broken = cert_pem.replace("MII", "!!!");
        assert!(X509Identity::from_pem(broken.as_bytes(), key_pem.as_bytes()).is_err());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let (cert_pem, key_pem) = cert("dev-1");
        let id = X509Identity::from_pem(cert_pem.as_bytes(), key_pem.as_bytes()).unwrap();
        let shown = format!("{id:?}");
        assert!(shown.contains("<redacted>") && !shown.contains("PRIVATE"));
    }
}
