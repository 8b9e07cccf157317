//! Certificate issuance as DPS does it (api-version `2025-07-01-preview`): a device's register
//! body carries a PKCS#10 CSR, the service checks it, and the assignment carries a certificate
//! chain for the CSR's key, signed by the enrollment's issuing CA.
//!
//! The checks are the ones the service documents, each refused with a 400 whose message says
//! which: base64 DER without PEM armour, a signature that verifies, an EC P-256 or P-384 key
//! (RSA refused), a subject CN equal to the registration id, and an api-version that can carry
//! a CSR. The leaf is real: CN = registration id, the CSR's key, client-auth usage, signed by
//! the issuing CA; the broker trusts that CA for device certificates, so a device can provision
//! again with the certificate it was issued.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use dps_messages::certificate::key_pair_from_pem;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SignatureAlgorithm,
};
use serde::{Deserialize, Serialize};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384};
use x509_parser::prelude::{FromDer, X509CertificationRequest};

use crate::pki::PkiError;

/// How long an issued certificate is valid unless set otherwise: 30 days.
pub const DEFAULT_ISSUED_VALIDITY: Duration = Duration::from_secs(30 * 86_400);

/// How far before the moment of issue a certificate's validity starts, so a device whose clock
/// runs a little behind can still use it at once.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The CA that signs the certificates the mock DPS issues.
pub struct IssuingCa {
    cert_pem: String,
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl IssuingCa {
    /// A fresh CA, `dps-mock-broker issuing CA <random>`, for one run.
    pub fn generate() -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
        params.distinguished_name.push(
            DnType::CommonName,
            format!("dps-mock-broker issuing CA {tag}"),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        })
    }

    /// An existing CA: its PEM certificate and PEM key, PKCS#8, SEC1 or PKCS#1 (what openssl
    /// writes; see [`key_pair_from_pem`]).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;

        let bad = |e: &dyn fmt::Display| PkiError::BadCa(format!("issuing CA: {e}"));
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| bad(&e))?;
        let key = key_pair_from_pem(key_pem).map_err(|e| bad(&e))?;
        // A key of another CA would issue certificates no device can verify.
        let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| bad(&e))?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(bad(&"the key is not the certificate's"));
        }
        let issuer = Issuer::from_ca_cert_der(&der, key).map_err(|e| bad(&e))?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            cert_der: der.to_vec(),
            issuer,
        })
    }

    /// Checks `csr` (base64 DER) as the service does and issues the chain the service would
    /// return for it (leaf, then this CA, base64 DER), valid for `validity` from `now`: for a
    /// test that needs an issued certificate without a broker. The error is the 400's message.
    pub fn issue(
        self: &Arc<Self>,
        csr: &str,
        registration_id: &str,
        validity: Duration,
        now: SystemTime,
    ) -> Result<Vec<String>, String> {
        let checked = check_csr(csr, registration_id, "2025-07-01-preview")?;
        let issuance = Issuance {
            ca: self.clone(),
            validity,
        };
        issuance
            .chain(&checked, registration_id, now, None)
            .ok_or_else(|| "the certificate could not be made".to_owned())
    }

    /// The CA certificate, PEM: what `openssl verify -CAfile` takes.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }
}

impl fmt::Debug for IssuingCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuingCa")
            .field("cert_pem", &self.cert_pem)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The issuing CA and how long what it issues is valid.
#[derive(Debug)]
pub(crate) struct Issuance {
    pub(crate) ca: Arc<IssuingCa>,
    pub(crate) validity: Duration,
}

/// A CSR that passed every check: the key to certify.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CheckedCsr {
    /// The `subjectPublicKey` bits (an uncompressed EC point).
    public_key: Vec<u8>,
    /// How that key's algorithm is written in a certificate.
    algorithm: &'static SignatureAlgorithm,
}

impl PublicKeyData for CheckedCsr {
    fn der_bytes(&self) -> &[u8] {
        &self.public_key
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.algorithm
    }
}

/// How a scripted assignment spoils the chain it returns, to test a device's checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainFault {
    /// No `issuedCertificateChain` at all.
    Missing,
    /// An empty array.
    Empty,
    /// A leaf that is not base64.
    Malformed,
    /// A leaf for another key than the CSR's.
    OtherKey,
    /// A leaf whose CN is not the registration id.
    OtherName,
    /// A leaf whose validity ended a day ago.
    Expired,
}

/// Checks a CSR as DPS does; the error is the 400's message.
pub(crate) fn check_csr(
    csr: &str,
    registration_id: &str,
    api_version: &str,
) -> Result<CheckedCsr, String> {
    if !dps_messages::ApiVersion::from(api_version).can_carry_csr() {
        return Err(format!(
            "api-version `{api_version}` cannot carry a CSR; use 2025-07-01-preview or later"
        ));
    }
    if csr.contains("-----BEGIN") {
        return Err("the CSR has PEM armour; send base64 DER without header or footer".into());
    }
    let der = base64::engine::general_purpose::STANDARD
        .decode(csr)
        .map_err(|e| format!("the CSR is not base64: {e}"))?;
    let (_, request) = X509CertificationRequest::from_der(&der)
        .map_err(|e| format!("the CSR is not a PKCS#10 request: {e}"))?;
    let info = &request.certification_request_info;
    let spki = &info.subject_pki;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    let algorithm = match (&spki.algorithm.algorithm, curve) {
        (alg, Some(curve)) if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY && curve == OID_EC_P256 => {
            &rcgen::PKCS_ECDSA_P256_SHA256
        }
        (alg, Some(curve)) if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY && curve == OID_NIST_EC_P384 => {
            &rcgen::PKCS_ECDSA_P384_SHA384
        }
        (alg, _) if *alg == x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION => {
            return Err("the CSR's key is RSA; only EC P-256 and P-384 keys are issued".into());
        }
        _ => return Err("the CSR's key is not EC P-256 or P-384".into()),
    };
    request
        .verify_signature()
        .map_err(|e| format!("the CSR's signature does not verify: {e}"))?;
    let cn = info
        .subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok());
    if cn != Some(registration_id) {
        return Err(format!(
            "the CSR's subject CN {cn:?} is not the registration id `{registration_id}`"
        ));
    }
    Ok(CheckedCsr {
        public_key: spki.subject_public_key.data.to_vec(),
        algorithm,
    })
}

impl Issuance {
    /// The `issuedCertificateChain` for `csr` (leaf, then the issuing CA, base64 DER), spoiled
    /// as `fault` says; `None` for [`ChainFault::Missing`].
    pub(crate) fn chain(
        &self,
        csr: &CheckedCsr,
        registration_id: &str,
        now: SystemTime,
        fault: Option<ChainFault>,
    ) -> Option<Vec<String>> {
        let b64 = |der: &[u8]| base64::engine::general_purpose::STANDARD.encode(der);
        let mut name = registration_id.to_owned();
        let mut not_after = now + self.validity;
        let mut other_key = None;
        match fault {
            None => {}
            Some(ChainFault::Missing) => return None,
            Some(ChainFault::Empty) => return Some(Vec::new()),
            Some(ChainFault::Malformed) => {
                return Some(vec!["not a certificate!".into(), b64(&self.ca.cert_der)]);
            }
            Some(ChainFault::OtherKey) => other_key = KeyPair::generate().ok(),
            Some(ChainFault::OtherName) => name.push_str("-other"),
            Some(ChainFault::Expired) => not_after = now - Duration::from_secs(86_400),
        }
        let leaf = match &other_key {
            Some(key) => self.leaf(key, &name, now, not_after),
            None => self.leaf(csr, &name, now, not_after),
        };
        match leaf {
            Ok(leaf) => Some(vec![b64(&leaf), b64(&self.ca.cert_der)]),
            Err(e) => {
                // rcgen fails only on parameters this function sets; say so rather than panic.
                tracing::error!("cannot issue a certificate for {registration_id}: {e}");
                None
            }
        }
    }

    fn leaf(
        &self,
        key: &impl PublicKeyData,
        name: &str,
        now: SystemTime,
        not_after: SystemTime,
    ) -> Result<Vec<u8>, rcgen::Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.not_before = (now - BACKDATE).into();
        params.not_after = not_after.into();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let mut serial = *uuid::Uuid::new_v4().as_bytes();
        serial[0] &= 0x7f; // positive
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        Ok(params.signed_by(key, &self.ca.issuer)?.der().to_vec())
    }
}

#[cfg(test)]
mod tests;
