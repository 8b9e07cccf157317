//! The device's side of certificate issuance: a fresh key pair and a PKCS#10 certificate
//! signing request whose subject CN is the registration id, as DPS requires.
//!
//! The private key stays in this value. `Debug` never shows it, nothing here logs it, and it
//! leaves the process only if the caller writes the [`IssuedIdentity`] it becomes to a file.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SignatureAlgorithm};
use rustls::SignatureScheme;

use super::issued::{IssuedIdentity, KeySource};
use crate::error::CertificateError;
use crate::x509::{KeySigner, SignError};

/// The elliptic curve of the device's key. DPS documents P-384 and refuses RSA; the Embedded C
/// preview sample uses P-256, which the service accepts too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum KeyCurve {
    /// NIST P-256, signed with ECDSA SHA-256.
    P256,
    /// NIST P-384, signed with ECDSA SHA-384: the default, as the service documents.
    #[default]
    P384,
}

impl KeyCurve {
    fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyCurve::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyCurve::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }
}

impl std::str::FromStr for KeyCurve {
    type Err = String;

    /// `p256` or `p384` (any case, with or without a dash).
    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().replace('-', "").as_str() {
            "p256" => Ok(KeyCurve::P256),
            "p384" => Ok(KeyCurve::P384),
            _ => Err(format!("`{text}`: expected p256 or p384")),
        }
    }
}

/// A key pair made for one registration, and the CSR that asks DPS to certify it.
///
/// The key is made here ([`generate`](Self::generate)) or held elsewhere and only signs
/// ([`with_signer`](Self::with_signer): a key made inside a TPM or an HSM).
///
/// ```
/// use dps_messages::{CertificateRequest, RegistrationRequest};
///
/// let csr = CertificateRequest::generate("my-device")?;
/// let request = RegistrationRequest::new("0ne00000001", "my-device").with_csr(&csr);
/// // The service's `issuedCertificateChain` then becomes a TLS identity:
/// // let identity = csr.accept(&chain, std::time::SystemTime::now())?;
/// # Ok::<(), dps_messages::error::CertificateError>(())
/// ```
#[derive(Clone)]
pub struct CertificateRequest {
    registration_id: String,
    curve: KeyCurve,
    key: RequestKey,
    csr_der: Vec<u8>,
}

/// The key a request certifies.
#[derive(Clone)]
enum RequestKey {
    /// Made here, in memory: it goes with the issued chain.
    Generated(Arc<KeyPair>),
    /// Held elsewhere: only its signer goes with the issued chain.
    External(Arc<dyn KeySigner>),
}

impl CertificateRequest {
    /// A new P-384 key and a CSR for `registration_id`.
    pub fn generate(registration_id: &str) -> Result<Self, CertificateError> {
        Self::generate_with(registration_id, KeyCurve::P384)
    }

    /// A new key on `curve` and a CSR for `registration_id`.
    pub fn generate_with(registration_id: &str, curve: KeyCurve) -> Result<Self, CertificateError> {
        let failed = |e: rcgen::Error| CertificateError::Generate(e.to_string());
        let key = KeyPair::generate_for(curve.algorithm()).map_err(failed)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, registration_id);
        let csr = params.serialize_request(&key).map_err(failed)?;
        Ok(Self {
            registration_id: registration_id.to_owned(),
            curve,
            csr_der: csr.der().to_vec(),
            key: RequestKey::Generated(Arc::new(key)),
        })
    }

    /// A CSR for `registration_id` signed by `signer`, for a key that never leaves where it
    /// was made. DPS certifies ECDSA keys only: P-256 or P-384 ([`CertificateError::BadKey`]
    /// otherwise), and any signing failure is [`CertificateError::Generate`].
    pub fn with_signer(
        registration_id: &str,
        signer: Arc<dyn KeySigner>,
    ) -> Result<Self, CertificateError> {
        let curve = match signer.scheme() {
            SignatureScheme::ECDSA_NISTP256_SHA256 => KeyCurve::P256,
            SignatureScheme::ECDSA_NISTP384_SHA384 => KeyCurve::P384,
            other => {
                return Err(CertificateError::BadKey(format!(
                    "DPS certifies ECDSA P-256 or P-384 keys; this key signs with {other:?}"
                )));
            }
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, registration_id);
        let key = CsrSigner {
            signer: signer.as_ref(),
            algorithm: curve.algorithm(),
            failure: std::cell::RefCell::new(None),
        };
        let csr = params.serialize_request(&key).map_err(|e| {
            let why = match key.failure.take() {
                Some(signing) => signing.to_string(),
                None => e.to_string(),
            };
            CertificateError::Generate(why)
        })?;
        Ok(Self {
            registration_id: registration_id.to_owned(),
            curve,
            csr_der: csr.der().to_vec(),
            key: RequestKey::External(signer),
        })
    }

    /// The registration id the CSR names.
    pub fn registration_id(&self) -> &str {
        &self.registration_id
    }

    /// The key's curve.
    pub fn curve(&self) -> KeyCurve {
        self.curve
    }

    /// The CSR, DER.
    pub fn csr_der(&self) -> &[u8] {
        &self.csr_der
    }

    /// The CSR as the register body carries it: base64 of the DER, without PEM armour or line
    /// breaks.
    pub fn csr_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.csr_der)
    }

    /// The key's public half, as it appears in a certificate's `subjectPublicKey`.
    pub fn public_key(&self) -> &[u8] {
        match &self.key {
            RequestKey::Generated(key) => key.public_key_raw(),
            RequestKey::External(signer) => signer.public_key(),
        }
    }

    /// Checks the chain the service issued for this CSR (`issuedCertificateChain`: base64 DER,
    /// leaf first) at time `now`, and makes it, with this request's key, a TLS identity. See
    /// [`IssuedIdentity`] for the checks.
    pub fn accept(
        &self,
        chain: &[String],
        now: SystemTime,
    ) -> Result<IssuedIdentity, CertificateError> {
        let chain = super::issued::decode_chain(chain)?;
        let key = match &self.key {
            RequestKey::Generated(key) => KeySource::Pkcs8(key.serialize_der()),
            RequestKey::External(signer) => KeySource::Signer(signer.clone()),
        };
        IssuedIdentity::new(chain, key, self.public_key(), &self.registration_id, now)
    }
}

/// A [`KeySigner`] as rcgen signs a CSR with it; the signer's own error is kept, since rcgen
/// has only a bare "remote key error" for it.
struct CsrSigner<'a> {
    signer: &'a dyn KeySigner,
    algorithm: &'static SignatureAlgorithm,
    failure: std::cell::RefCell<Option<SignError>>,
}

impl rcgen::PublicKeyData for CsrSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.signer.public_key()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.algorithm
    }
}

impl rcgen::SigningKey for CsrSigner<'_> {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.signer.sign(message).map_err(|e| {
            *self.failure.borrow_mut() = Some(e);
            rcgen::Error::RemoteKeyError
        })
    }
}

impl fmt::Debug for CertificateRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateRequest")
            .field("registration_id", &self.registration_id)
            .field("curve", &self.curve)
            .field("key", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::{FromDer, X509CertificationRequest};

    #[test]
    fn the_csr_names_the_registration_id_and_carries_a_key_on_the_chosen_curve() {
        for (curve, oid) in [
            (KeyCurve::P384, "1.3.132.0.34"),
            (KeyCurve::P256, "1.2.840.10045.3.1.7"),
        ] {
            let request = CertificateRequest::generate_with("dev-1", curve).unwrap();
            assert_eq!(
                (request.registration_id(), request.curve()),
                ("dev-1", curve)
            );
            let (rest, csr) = X509CertificationRequest::from_der(request.csr_der()).unwrap();
            assert!(rest.is_empty());
            csr.verify_signature().unwrap();
            let info = &csr.certification_request_info;
            let cn = info.subject.iter_common_name().next().unwrap();
            assert_eq!(cn.as_str().unwrap(), "dev-1");
            let spki = &info.subject_pki;
            assert_eq!(spki.subject_public_key.data.as_ref(), request.public_key());
            let params = spki.algorithm.parameters.as_ref().unwrap();
            assert_eq!(params.as_oid().unwrap().to_id_string(), oid);
        }
        assert_eq!(
            CertificateRequest::generate("d").unwrap().curve(),
            KeyCurve::P384
        );
    }

    #[test]
    fn the_csr_is_base64_der_without_armour_and_debug_hides_the_key() {
        let request = CertificateRequest::generate("dev-1").unwrap();
        let text = request.csr_base64();
        assert!(!text.contains("-----") && !text.contains('\n'));
        let der = base64::engine::general_purpose::STANDARD
            .decode(&text)
            .unwrap();
        assert_eq!(der, request.csr_der());
        let debug = format!("{request:?}");
        assert!(
            debug.contains("<redacted>") && !debug.contains("PRIVATE"),
            "{debug}"
        );
    }

    #[test]
    fn curves_parse_by_name() {
        assert_eq!("P-256".parse(), Ok(KeyCurve::P256));
        assert_eq!("p384".parse(), Ok(KeyCurve::P384));
        assert!("rsa".parse::<KeyCurve>().is_err());
    }
}
