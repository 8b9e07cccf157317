//! A device key the process never holds: a TPM, an HSM or a secure element signs for it.
//!
//! A production gateway keeps its private key in hardware; only "sign these bytes" crosses
//! into the process. [`KeySigner`] is that boundary, stated once: its algorithm, its public
//! key and a signing call. The same signer answers the TLS handshake (through rustls's
//! `SigningKey`, adapted here) and, with certificate issuance, signs the CSR.
//!
//! The transport crate ships one implementation, PKCS#11 (its `pkcs11` feature); an
//! application implements the trait for anything else (an ATECC608, a TPM through tss-esapi).

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::SubjectPublicKeyInfoDer;
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

use crate::der::der;
use crate::error::AuthError;

/// A private key held elsewhere, that signs on request.
///
/// Implement it for a secure element the crate does not know, and make the identity with
/// [`X509Identity::from_signer`](super::X509Identity::from_signer):
///
/// ```
/// use dps_messages::x509::{KeySigner, SignError};
/// use rustls::SignatureScheme;
///
/// #[derive(Debug)]
/// struct SecureElement { public_key: Vec<u8> }
///
/// impl KeySigner for SecureElement {
///     fn scheme(&self) -> SignatureScheme { SignatureScheme::ECDSA_NISTP256_SHA256 }
///     fn public_key(&self) -> &[u8] { &self.public_key }
///     fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
///         // hash `message` with SHA-256, have the element sign the digest, DER-encode (r, s)
///         # let _ = message;
///         Err(SignError::new(std::io::Error::other("no element here")))
///     }
/// }
/// ```
pub trait KeySigner: fmt::Debug + Send + Sync {
    /// The scheme of every signature this key makes: [`SignatureScheme::ECDSA_NISTP256_SHA256`],
    /// [`SignatureScheme::ECDSA_NISTP384_SHA384`] or [`SignatureScheme::RSA_PSS_SHA256`] (TLS
    /// 1.3 signs with RSA only in PSS).
    fn scheme(&self) -> SignatureScheme;

    /// The public key as a certificate's `subjectPublicKey` holds it: the uncompressed point
    /// (`04 ‖ X ‖ Y`) of an EC key, the DER `RSAPublicKey` of an RSA key.
    fn public_key(&self) -> &[u8];

    /// Signs `message` (the whole message: the signer hashes it, with the scheme's hash). An
    /// ECDSA signature is DER (`Ecdsa-Sig-Value`), as X.509 and TLS carry it.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError>;

    /// Where the key lives, for a record that must find it again (the assignment cache keeps
    /// it instead of key bytes): a PKCS#11 URI, say. Never the key, never a PIN. `None` by
    /// default: such a key cannot be cached.
    fn locator(&self) -> Option<String> {
        None
    }
}

/// Why a [`KeySigner`] could not sign: its own error, kept as the source so that a caller can
/// downcast it (a PKCS#11 return value, a locked element).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SignError(Arc<dyn std::error::Error + Send + Sync>);

impl SignError {
    /// The signer's own error.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Arc::new(error))
    }

    /// The signer's error, to downcast.
    pub fn inner(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

/// The signer's public key as a certificate carries it (`SubjectPublicKeyInfo`, DER): what a
/// CA signs a certificate for, when the key's only other trace is in its hardware.
pub fn subject_public_key_info(signer: &dyn KeySigner) -> Result<Vec<u8>, AuthError> {
    check(signer).map(|(_, spki)| spki)
}

/// What the identity needs of a signer, checked once: its rustls algorithm and its full
/// public key info.
pub(super) fn check(signer: &dyn KeySigner) -> Result<(SignatureAlgorithm, Vec<u8>), AuthError> {
    let scheme = signer.scheme();
    let (algorithm, spki) = match scheme {
        SignatureScheme::ECDSA_NISTP256_SHA256 => (
            SignatureAlgorithm::ECDSA,
            ec_spki(P256_OID, 65, signer.public_key()),
        ),
        SignatureScheme::ECDSA_NISTP384_SHA384 => (
            SignatureAlgorithm::ECDSA,
            ec_spki(P384_OID, 97, signer.public_key()),
        ),
        SignatureScheme::RSA_PSS_SHA256
        | SignatureScheme::RSA_PSS_SHA384
        | SignatureScheme::RSA_PSS_SHA512 => {
            (SignatureAlgorithm::RSA, Some(rsa_spki(signer.public_key())))
        }
        other => {
            return Err(AuthError::UnsupportedKey(format!(
                "the key signs with {other:?}; TLS here takes ECDSA P-256 or P-384, or RSA-PSS"
            )));
        }
    };
    let spki = spki.ok_or_else(|| {
        AuthError::UnsupportedKey(format!(
            "the key's public key ({} bytes) is not an uncompressed point of {scheme:?}",
            signer.public_key().len()
        ))
    })?;
    Ok((algorithm, spki))
}

/// A [`KeySigner`] as rustls signs with it.
#[derive(Debug)]
pub(super) struct ExternalKey {
    pub(super) signer: Arc<dyn KeySigner>,
    pub(super) algorithm: SignatureAlgorithm,
    pub(super) spki: Vec<u8>,
}

impl SigningKey for ExternalKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = self.signer.scheme();
        offered
            .contains(&scheme)
            .then(|| Box::new(ExternalSigner(self.signer.clone())) as Box<dyn Signer>)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.spki.as_slice()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }
}

#[derive(Debug)]
struct ExternalSigner(Arc<dyn KeySigner>);

impl Signer for ExternalSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        // The signer's own error goes through rustls as it is, so that the connection's
        // failure names it rather than a bare handshake alert.
        self.0
            .sign(message)
            .map_err(|e| rustls::Error::Other(rustls::OtherError(Arc::new(e))))
    }

    fn scheme(&self) -> SignatureScheme {
        self.0.scheme()
    }
}

/// id-ecPublicKey, then the curve: DER of the two OIDs, without their SEQUENCE.
const P256_OID: &[u8] = &[
    0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d,
    0x03, 0x01, 0x07,
];
const P384_OID: &[u8] = &[
    0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22,
];
/// rsaEncryption and its NULL parameters.
const RSA_OID: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];

fn ec_spki(algorithm: &[u8], point_len: usize, point: &[u8]) -> Option<Vec<u8>> {
    (point.len() == point_len && point.first() == Some(&0x04)).then(|| spki(algorithm, point))
}

fn rsa_spki(public_key: &[u8]) -> Vec<u8> {
    spki(RSA_OID, public_key)
}

/// `SEQUENCE { SEQUENCE { algorithm }, BIT STRING key }`.
fn spki(algorithm: &[u8], key: &[u8]) -> Vec<u8> {
    let mut bits = vec![0];
    bits.extend_from_slice(key);
    let mut body = der(0x30, algorithm);
    body.extend(der(0x03, &bits));
    der(0x30, &body)
}

/// An ECDSA signature as PKCS#11 and raw signers return it (`r ‖ s`, each the curve's size)
/// in the DER form X.509 and TLS carry (`SEQUENCE { INTEGER r, INTEGER s }`).
///
/// ```
/// let der = dps_messages::x509::ecdsa_der_from_raw(&[1, 2, 0x80, 4]).unwrap();
/// assert_eq!(der, [0x30, 0x09, 0x02, 0x02, 1, 2, 0x02, 0x03, 0, 0x80, 4]);
/// ```
///
/// `None` when `raw` is empty or of odd length.
pub fn ecdsa_der_from_raw(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let mut body = der(0x02, &unsigned_integer(r));
    body.extend(der(0x02, &unsigned_integer(s)));
    Some(der(0x30, &body))
}

/// An RSA public key as a certificate's `subjectPublicKey` holds it (DER `RSAPublicKey`),
/// from its modulus and public exponent as big-endian bytes (PKCS#11's `CKA_MODULUS` and
/// `CKA_PUBLIC_EXPONENT`): what [`KeySigner::public_key`] returns for an RSA key.
///
/// ```
/// let key = dps_messages::x509::rsa_public_key(&[0xc1, 0x05], &[1, 0, 1]);
/// assert_eq!(key, [0x30, 0x0a, 0x02, 0x03, 0, 0xc1, 0x05, 0x02, 0x03, 1, 0, 1]);
/// ```
pub fn rsa_public_key(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let mut body = der(0x02, &unsigned_integer(modulus));
    body.extend(der(0x02, &unsigned_integer(exponent)));
    der(0x30, &body)
}

/// A big-endian unsigned number as a DER INTEGER's contents: no leading zeros, and one zero
/// put back where the top bit would make it negative.
fn unsigned_integer(bytes: &[u8]) -> Vec<u8> {
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let bytes = &bytes[skip..];
    match bytes.first() {
        None => vec![0],
        Some(first) if first & 0x80 != 0 => [&[0], bytes].concat(),
        Some(_) => bytes.to_vec(),
    }
}

#[cfg(test)]
pub(crate) mod tests;
