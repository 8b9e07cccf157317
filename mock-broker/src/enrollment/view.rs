//! Enrollments as the service shows them outside: DPS never returns a key or a certificate it
//! holds, only what it says of them (`info`), in the service API's reads and in a custom
//! allocation request alike; the keys come from the API's `attestationmechanism`.

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{
    Attestation, EnrollmentGroup, IndividualEnrollment, X509CertificateWithInfo, X509Certificates,
};

/// An individual enrollment without its keys and certificates.
pub(crate) fn redacted_individual(mut e: IndividualEnrollment) -> IndividualEnrollment {
    e.attestation = redacted(e.attestation);
    e
}

/// A group without its keys and certificates.
pub(crate) fn redacted_group(mut g: EnrollmentGroup) -> EnrollmentGroup {
    g.attestation = redacted(g.attestation);
    g
}

/// The attestation with its keys, as `POST .../attestationmechanism` returns it.
pub(crate) fn attestation_mechanism(attestation: Attestation) -> Value {
    json!(attestation)
}

fn redacted(mut attestation: Attestation) -> Attestation {
    if let Some(keys) = &mut attestation.symmetric_key {
        keys.primary_key = None;
        keys.secondary_key = None;
    }
    if let Some(x509) = &mut attestation.x509 {
        for certs in [
            &mut x509.client_certificates,
            &mut x509.signing_certificates,
        ]
        .into_iter()
        .flatten()
        {
            described(certs);
        }
    }
    attestation
}

fn described(certs: &mut X509Certificates) {
    for cert in [&mut certs.primary, &mut certs.secondary]
        .into_iter()
        .flatten()
    {
        let X509CertificateWithInfo { certificate, info } = cert;
        if let Some(text) = certificate.take() {
            *info = Some(certificate_info(&text));
        }
    }
}

/// What DPS says of a certificate (its `X509CertificateInfo`).
fn certificate_info(text: &str) -> Value {
    let text = text.trim();
    let der = if text.starts_with("-----BEGIN") {
        CertificateDer::from_pem_slice(text.as_bytes()).ok()
    } else {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()
            .map(CertificateDer::from)
    };
    let Some(der) = der else { return json!({}) };
    let Ok((_, cert)) = X509Certificate::from_der(&der) else {
        return json!({});
    };
    let thumbprint: String = Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    let time = |t: x509_parser::time::ASN1Time| {
        let secs = u64::try_from(t.timestamp()).unwrap_or(0);
        crate::clock::iso8601(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
    };
    json!({
        "subjectName": cert.subject().to_string(),
        "issuerName": cert.issuer().to_string(),
        "sha256Thumbprint": thumbprint,
        "notBeforeUtc": time(cert.validity().not_before),
        "notAfterUtc": time(cert.validity().not_after),
        "serialNumber": cert.raw_serial_as_string().replace(':', "").to_ascii_uppercase(),
        "version": cert.version().0 + 1,
    })
}
