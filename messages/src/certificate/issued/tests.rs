use std::time::{Duration, SystemTime};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, IsCa, Issuer,
    KeyPair,
};

use super::*;
use crate::certificate::CertificateRequest;

const DAY: Duration = Duration::from_secs(86_400);

/// A CA that signs what a test asks it to, as DPS's issuing CA would (or would not).
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: Vec<u8>,
}

impl Ca {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "test issuing CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let der = params.self_signed(&key).unwrap().der().to_vec();
        Self {
            issuer: Issuer::new(params, key),
            der,
        }
    }

    /// Signs `request`'s CSR, then lets `edit` change the leaf (its CN, validity ...).
    fn issue(
        &self,
        request: &CertificateRequest,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> Vec<String> {
        let csr =
            CertificateSigningRequestParams::from_der(&request.csr_der().to_vec().into()).unwrap();
        let mut params = csr.params.clone();
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2026, 1, 31);
        edit(&mut params);
        let leaf = params.signed_by(&csr.public_key, &self.issuer).unwrap();
        [leaf.der().to_vec(), self.der.clone()]
            .iter()
            .map(|der| base64::engine::general_purpose::STANDARD.encode(der))
            .collect()
    }
}

/// Mid-January 2026, inside the default leaf's validity.
fn january_15() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_768_435_200)
}

#[test]
fn an_issued_chain_for_the_csr_becomes_an_identity() {
    let ca = Ca::new();
    let request = CertificateRequest::generate("dev-1").unwrap();
    let chain = ca.issue(&request, |_| {});
    let issued = request.accept(&chain, january_15()).unwrap();
    assert_eq!(issued.identity().cert_chain().len(), 2);
    let leaf = issued.leaf();
    assert_eq!(leaf.subject, "CN=dev-1");
    assert_eq!(leaf.issuer, "CN=test issuing CA");
    assert_eq!(
        leaf.not_after.duration_since(leaf.not_before).unwrap(),
        30 * DAY
    );
    // The last third of 30 days begins on day 20.
    assert_eq!(leaf.renewal_starts(1.0 / 3.0), leaf.not_before + 20 * DAY);
    assert_eq!(leaf.renewal_starts(0.0), leaf.not_after);
    assert_eq!(leaf.renewal_starts(7.0), leaf.not_before);
    assert_eq!(leaf.renewal_starts(f64::NAN), leaf.not_after);

    // Written out and read back, it is the same identity.
    let pem = issued.chain_pem();
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(pem.lines().all(|line| line.len() <= 64));
    let key = issued.private_key_pem().unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let again = IssuedIdentity::from_pem(&pem, &key, "dev-1", january_15()).unwrap();
    assert_eq!(again.leaf(), issued.leaf());
    assert_eq!(
        again.identity().cert_chain(),
        issued.identity().cert_chain()
    );
    let debug = format!("{issued:?}");
    assert!(
        debug.contains("<redacted>") && !debug.contains("PRIVATE"),
        "{debug}"
    );
}

#[test]
fn each_failed_check_is_named() {
    let ca = Ca::new();
    let request = CertificateRequest::generate("dev-1").unwrap();
    let now = january_15();
    assert_eq!(
        request.accept(&[], now).unwrap_err(),
        CertificateError::EmptyChain
    );

    let mut chain = ca.issue(&request, |_| {});
    chain[1] = "not base64!".into();
    assert!(matches!(
        request.accept(&chain, now).unwrap_err(),
        CertificateError::Undecodable { index: 1, reason } if reason.contains("base64")
    ));
    chain[1] = base64::engine::general_purpose::STANDARD.encode(b"not a certificate");
    assert!(matches!(
        request.accept(&chain, now).unwrap_err(),
        CertificateError::Undecodable { index: 1, .. }
    ));

    // Another key's certificate.
    let other = CertificateRequest::generate("dev-1").unwrap();
    let chain = ca.issue(&other, |_| {});
    assert_eq!(
        request.accept(&chain, now).unwrap_err(),
        CertificateError::LeafKeyMismatch
    );

    let chain = ca.issue(&request, |p| {
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, "dev-2");
    });
    assert_eq!(
        request.accept(&chain, now).unwrap_err(),
        CertificateError::LeafNameMismatch {
            expected: "dev-1".into(),
            found: Some("dev-2".into())
        }
    );
    let chain = ca.issue(&request, |p| {
        p.distinguished_name = rcgen::DistinguishedName::new()
    });
    assert!(matches!(
        request.accept(&chain, now).unwrap_err(),
        CertificateError::LeafNameMismatch { found: None, .. }
    ));

    let chain = ca.issue(&request, |_| {});
    assert!(matches!(
        request.accept(&chain, now - 30 * DAY).unwrap_err(),
        CertificateError::NotYetValid { .. }
    ));
    let error = request.accept(&chain, now + 30 * DAY).unwrap_err();
    assert!(
        matches!(&error, CertificateError::Expired { not_after } if not_after.contains("2026")),
        "{error}"
    );
    // The first and last second of the validity are inside it.
    let leaf = request.accept(&chain, now).unwrap().leaf().clone();
    assert!(request.accept(&chain, leaf.not_before).is_ok());
    assert!(request.accept(&chain, leaf.not_after).is_ok());
}

#[test]
fn a_written_identity_that_does_not_match_is_refused() {
    let ca = Ca::new();
    let request = CertificateRequest::generate("dev-1").unwrap();
    let issued = request
        .accept(&ca.issue(&request, |_| {}), january_15())
        .unwrap();
    let other = CertificateRequest::generate("dev-1").unwrap();
    let other = other
        .accept(&ca.issue(&other, |_| {}), january_15())
        .unwrap();
    let now = january_15();
    assert_eq!(
        IssuedIdentity::from_pem(
            &issued.chain_pem(),
            &other.private_key_pem().unwrap(),
            "dev-1",
            now
        )
        .unwrap_err(),
        CertificateError::LeafKeyMismatch
    );
    assert!(matches!(
        IssuedIdentity::from_pem(&issued.chain_pem(), "garbage", "dev-1", now).unwrap_err(),
        CertificateError::BadKey(_)
    ));
    assert_eq!(
        IssuedIdentity::from_pem("", &issued.private_key_pem().unwrap(), "dev-1", now).unwrap_err(),
        CertificateError::EmptyChain
    );
    let torn = "-----BEGIN CERTIFICATE-----\nMIIB\n";
    assert!(matches!(
        IssuedIdentity::from_pem(torn, &issued.private_key_pem().unwrap(), "dev-1", now)
            .unwrap_err(),
        CertificateError::Undecodable { index: 0, .. }
    ));
    assert!(matches!(
        IssuedIdentity::from_pem(
            &issued.chain_pem(),
            &issued.private_key_pem().unwrap(),
            "dev-2",
            now
        ),
        Err(CertificateError::LeafNameMismatch { .. })
    ));
}

#[test]
fn times_before_1970_stay_before_1970() {
    assert_eq!(
        system_time(-5),
        SystemTime::UNIX_EPOCH - Duration::from_secs(5)
    );
    assert_eq!(
        system_time(5),
        SystemTime::UNIX_EPOCH + Duration::from_secs(5)
    );
}

/// A key held elsewhere: the CSR is signed by its signer, the issued chain is accepted with
/// it, and no key bytes come out.
#[test]
fn a_key_held_elsewhere_signs_its_csr_and_becomes_the_identity_without_its_bytes() {
    use crate::x509::signer::tests::SoftwareSigner;
    use rustls::SignatureScheme;
    use std::sync::Arc;
    use x509_parser::prelude::{FromDer, X509CertificationRequest};

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let signer = Arc::new(SoftwareSigner::new(
        &key,
        SignatureScheme::ECDSA_NISTP256_SHA256,
    ));
    let request = CertificateRequest::with_signer("dev-1", signer).unwrap();
    assert_eq!(request.curve(), crate::certificate::KeyCurve::P256);
    assert_eq!(request.public_key(), key.public_key_raw());
    let (_, csr) = X509CertificationRequest::from_der(request.csr_der()).unwrap();
    csr.verify_signature().unwrap();

    let ca = Ca::new();
    let issued = request
        .accept(&ca.issue(&request, |_| {}), january_15())
        .unwrap();
    assert_eq!(
        issued.private_key_pem(),
        None,
        "no bytes of a key held elsewhere"
    );
    assert!(issued.identity().signer().is_some());
    let again = IssuedIdentity::from_pem_and_signer(
        &issued.chain_pem(),
        issued.identity().signer().unwrap().clone(),
        "dev-1",
        january_15(),
    )
    .unwrap();
    assert_eq!(again.leaf(), issued.leaf());
    // Another key's signer does not read the chain back.
    let other = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let other = Arc::new(SoftwareSigner::new(
        &other,
        SignatureScheme::ECDSA_NISTP256_SHA256,
    ));
    assert_eq!(
        IssuedIdentity::from_pem_and_signer(&issued.chain_pem(), other, "dev-1", january_15())
            .unwrap_err(),
        CertificateError::LeafKeyMismatch
    );
}

#[test]
fn a_key_dps_cannot_certify_is_refused_before_a_csr() {
    use crate::x509::signer::tests::SoftwareSigner;
    use rustls::SignatureScheme;
    use std::sync::Arc;

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let rsa = Arc::new(SoftwareSigner::new(&key, SignatureScheme::RSA_PSS_SHA256));
    let error = CertificateRequest::with_signer("dev-1", rsa).unwrap_err();
    assert!(
        matches!(&error, CertificateError::BadKey(why) if why.contains("RSA_PSS")),
        "{error:?}"
    );
    let mut failing = SoftwareSigner::new(&key, SignatureScheme::ECDSA_NISTP256_SHA256);
    failing.fail = true;
    let error = CertificateRequest::with_signer("dev-1", Arc::new(failing)).unwrap_err();
    assert!(
        matches!(&error, CertificateError::Generate(why) if why.contains("the element is locked")),
        "{error:?}"
    );
}
