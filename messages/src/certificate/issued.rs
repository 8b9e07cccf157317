//! The certificate chain DPS issued, checked before anything trusts it.
//!
//! A chain is only an identity when it is one for *this* device and *this* key: every entry
//! decodes, the leaf certifies the CSR's public key, names the registration id, and is valid
//! now. rustls checks again that the key signs for the leaf. Each failure is its own
//! [`CertificateError`], so a log says which check failed.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::CertificateError;
use crate::x509::{KeySigner, X509Identity};

/// The key an issued chain certifies, as the request held it.
pub(super) enum KeySource {
    /// In memory, PKCS#8 DER.
    Pkcs8(Vec<u8>),
    /// Held elsewhere; it only signs.
    Signer(Arc<dyn KeySigner>),
}

/// What a device needs to know of its leaf certificate: who it names, who signed it, and when
/// it is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafCertificate {
    /// The subject, e.g. `CN=my-device`.
    pub subject: String,
    /// The issuer, e.g. `CN=Contoso issuing CA`.
    pub issuer: String,
    /// The start of its validity.
    pub not_before: SystemTime,
    /// The end of its validity.
    pub not_after: SystemTime,
    /// The end of its validity as the certificate states it, e.g. `Jan 31 00:00:00 2026 +00:00`.
    pub not_after_text: String,
}

impl LeafCertificate {
    /// When renewal is due: the start of the last `window` (a fraction of the lifetime,
    /// clamped to 0..=1) of the validity. With 1/3, a 30-day certificate is renewed from its
    /// 20th day.
    pub fn renewal_starts(&self, window: f64) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        let window = if window.is_nan() {
            0.0
        } else {
            window.clamp(0.0, 1.0)
        };
        self.not_after - lifetime.mul_f64(window)
    }
}

/// A checked issued chain and the key it certifies: a TLS identity for the IoT hub.
///
/// Made by [`CertificateRequest::accept`](super::CertificateRequest::accept) from the
/// service's answer, or by [`IssuedIdentity::from_pem`] from files written earlier. `Debug`
/// never shows the key.
#[derive(Clone)]
pub struct IssuedIdentity {
    identity: X509Identity,
    /// The key's bytes; `None` when it is held elsewhere (the identity has its signer).
    key_pkcs8: Option<Arc<Vec<u8>>>,
    leaf: LeafCertificate,
}

impl IssuedIdentity {
    /// Checks `chain` (leaf first) against the key (whose public half is `public_key`), the
    /// registration id and `now`, in that order.
    pub(super) fn new(
        chain: Vec<CertificateDer<'static>>,
        key: KeySource,
        public_key: &[u8],
        registration_id: &str,
        now: SystemTime,
    ) -> Result<Self, CertificateError> {
        let leaf = check_leaf(&chain, public_key, registration_id, now)?;
        let unusable = |e: crate::error::AuthError| CertificateError::Unusable(e.to_string());
        let (identity, key_pkcs8) = match key {
            KeySource::Pkcs8(pkcs8) => {
                let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.clone()));
                let identity = X509Identity::from_der(chain, der).map_err(unusable)?;
                (identity, Some(Arc::new(pkcs8)))
            }
            KeySource::Signer(signer) => (
                X509Identity::from_signer(chain, signer).map_err(unusable)?,
                None,
            ),
        };
        Ok(Self {
            identity,
            key_pkcs8,
            leaf,
        })
    }

    /// Reads an identity written earlier ([`chain_pem`](Self::chain_pem) and
    /// [`private_key_pem`](Self::private_key_pem)), with the same checks as when it was
    /// issued. The key may be in any form [`key_pair_from_pem`](super::key_pair_from_pem)
    /// reads.
    pub fn from_pem(
        chain_pem: &str,
        key_pem: &str,
        registration_id: &str,
        now: SystemTime,
    ) -> Result<Self, CertificateError> {
        let chain = read_chain_pem(chain_pem)?;
        let key = super::key_pair_from_pem(key_pem)?;
        Self::new(
            chain,
            KeySource::Pkcs8(key.serialize_der()),
            key.public_key_raw(),
            registration_id,
            now,
        )
    }

    /// Reads a chain written earlier whose key is held elsewhere and signs through `signer`
    /// (a key made in a token), with the same checks as when it was issued.
    pub fn from_pem_and_signer(
        chain_pem: &str,
        signer: Arc<dyn KeySigner>,
        registration_id: &str,
        now: SystemTime,
    ) -> Result<Self, CertificateError> {
        let chain = read_chain_pem(chain_pem)?;
        let public_key = signer.public_key().to_vec();
        Self::new(
            chain,
            KeySource::Signer(signer),
            &public_key,
            registration_id,
            now,
        )
    }

    /// The identity for TLS to the IoT hub (or to DPS, to provision again over X.509).
    pub fn identity(&self) -> &X509Identity {
        &self.identity
    }

    /// The leaf certificate's names and validity.
    pub fn leaf(&self) -> &LeafCertificate {
        &self.leaf
    }

    /// The chain, PEM, leaf first.
    pub fn chain_pem(&self) -> String {
        self.identity
            .cert_chain()
            .iter()
            .map(|der| pem("CERTIFICATE", der))
            .collect()
    }

    /// The private key, PEM (PKCS#8). It is the device's secret: write it only to a file
    /// readable by the device alone. `None` when the key is held elsewhere (a token): the
    /// [`identity`](Self::identity)'s signer then says where.
    pub fn private_key_pem(&self) -> Option<String> {
        self.key_pkcs8.as_ref().map(|der| pem("PRIVATE KEY", der))
    }
}

impl fmt::Debug for IssuedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedIdentity")
            .field("leaf", &self.leaf)
            .field("chain_len", &self.identity.cert_chain().len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The certificates of a PEM chain, each named by its position when it does not decode.
fn read_chain_pem(chain_pem: &str) -> Result<Vec<CertificateDer<'static>>, CertificateError> {
    CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .enumerate()
        .map(|(index, cert)| {
            cert.map_err(|e| CertificateError::Undecodable {
                index,
                reason: e.to_string(),
            })
        })
        .collect()
}

/// Every entry of `chain` decodes, and its leaf certifies `public_key`, names
/// `registration_id` and is valid at `now`: what the device needs of it.
fn check_leaf(
    chain: &[CertificateDer<'static>],
    public_key: &[u8],
    registration_id: &str,
    now: SystemTime,
) -> Result<LeafCertificate, CertificateError> {
    let certificates = chain
        .iter()
        .enumerate()
        .map(|(index, der)| {
            X509Certificate::from_der(der)
                .map(|(_, certificate)| certificate)
                .map_err(|e| CertificateError::Undecodable {
                    index,
                    reason: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let Some(leaf) = certificates.first() else {
        return Err(CertificateError::EmptyChain);
    };
    if leaf.public_key().subject_public_key.data.as_ref() != public_key {
        return Err(CertificateError::LeafKeyMismatch);
    }
    let cn = leaf
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok());
    if cn != Some(registration_id) {
        return Err(CertificateError::LeafNameMismatch {
            expected: registration_id.to_owned(),
            found: cn.map(str::to_owned),
        });
    }
    let validity = leaf.validity();
    let not_before = system_time(validity.not_before.timestamp());
    let not_after = system_time(validity.not_after.timestamp());
    if now < not_before {
        return Err(CertificateError::NotYetValid {
            not_before: validity.not_before.to_string(),
        });
    }
    if now > not_after {
        return Err(CertificateError::Expired {
            not_after: validity.not_after.to_string(),
        });
    }
    Ok(LeafCertificate {
        subject: leaf.subject().to_string(),
        issuer: leaf.issuer().to_string(),
        not_before,
        not_after,
        not_after_text: validity.not_after.to_string(),
    })
}

/// Decodes `issuedCertificateChain` entries (base64 DER) without judging what they hold.
pub(super) fn decode_chain(
    chain: &[String],
) -> Result<Vec<CertificateDer<'static>>, CertificateError> {
    chain
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            base64::engine::general_purpose::STANDARD
                .decode(entry.trim())
                .map(CertificateDer::from)
                .map_err(|e| CertificateError::Undecodable {
                    index,
                    reason: format!("not base64: {e}"),
                })
        })
        .collect()
}

fn system_time(unix_seconds: i64) -> SystemTime {
    match u64::try_from(unix_seconds) {
        Ok(after) => UNIX_EPOCH + Duration::from_secs(after),
        Err(_) => UNIX_EPOCH - Duration::from_secs(unix_seconds.unsigned_abs()),
    }
}

/// PEM armour: base64 in lines of 64, between BEGIN and END lines.
fn pem(label: &str, der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        // base64 is ASCII.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests;
