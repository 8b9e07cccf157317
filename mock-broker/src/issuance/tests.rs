use std::time::SystemTime;

use base64::Engine;
use dps_messages::CertificateRequest;
use dps_messages::certificate::KeyCurve;
use dps_messages::error::CertificateError;

use super::*;

const PREVIEW: &str = "2025-07-01-preview";

/// An RSA-2048 CSR for `dev-1`, made with `openssl req -new -newkey rsa:2048 -subj /CN=dev-1
/// -outform DER | base64 -w0` (ring cannot make RSA keys).
const RSA_CSR: &str = include_str!("rsa-csr-dev-1.b64");

fn issuance() -> Issuance {
    Issuance {
        ca: Arc::new(IssuingCa::generate().unwrap()),
        validity: DEFAULT_ISSUED_VALIDITY,
    }
}

#[test]
fn a_good_csr_on_either_curve_gets_a_chain_the_device_accepts() {
    let issuance = issuance();
    let now = SystemTime::now();
    for curve in [KeyCurve::P256, KeyCurve::P384] {
        let request = CertificateRequest::generate_with("dev-1", curve).unwrap();
        let csr = check_csr(&request.csr_base64(), "dev-1", PREVIEW).unwrap();
        let chain = issuance.chain(&csr, "dev-1", now, None).unwrap();
        assert_eq!(chain.len(), 2);
        let issued = request.accept(&chain, now).unwrap();
        let leaf = issued.leaf();
        assert_eq!(leaf.subject, "CN=dev-1");
        assert!(
            leaf.issuer.contains("dps-mock-broker issuing CA"),
            "{leaf:?}"
        );
        let lifetime = leaf.not_after.duration_since(leaf.not_before).unwrap();
        assert_eq!(lifetime, DEFAULT_ISSUED_VALIDITY + BACKDATE);
        // The second entry is the issuing CA itself.
        let ca = base64::engine::general_purpose::STANDARD
            .decode(&chain[1])
            .unwrap();
        assert_eq!(ca, issuance.ca.cert_der);
    }
}

#[test]
fn each_documented_check_refuses_with_its_reason() {
    let request = CertificateRequest::generate_with("dev-1", KeyCurve::P256).unwrap();
    let good = request.csr_base64();
    let refused = |csr: &str, id: &str, version: &str| check_csr(csr, id, version).unwrap_err();

    assert!(refused(&good, "dev-1", "2021-06-01").contains("api-version `2021-06-01`"));
    assert!(refused(&good, "dev-2", PREVIEW).contains("is not the registration id `dev-2`"));
    let armoured =
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{good}\n-----END CERTIFICATE REQUEST-----");
    assert!(refused(&armoured, "dev-1", PREVIEW).contains("PEM armour"));
    assert!(refused("%%%", "dev-1", PREVIEW).contains("not base64"));
    let not_csr = base64::engine::general_purpose::STANDARD.encode(b"hello");
    assert!(refused(&not_csr, "dev-1", PREVIEW).contains("not a PKCS#10"));
    assert!(refused(RSA_CSR.trim(), "dev-1", PREVIEW).contains("RSA"));

    // A CSR whose signature was tampered with: the last byte of the DER is the signature's.
    let mut der = request.csr_der().to_vec();
    *der.last_mut().unwrap() ^= 0x01;
    let tampered = base64::engine::general_purpose::STANDARD.encode(&der);
    assert!(refused(&tampered, "dev-1", PREVIEW).contains("signature does not verify"));

    assert!(check_csr(&good, "dev-1", "2026-11-02-preview").is_ok());
}

#[test]
fn each_chain_fault_is_what_a_device_refuses() {
    let issuance = issuance();
    let now = SystemTime::now();
    let request = CertificateRequest::generate("dev-1").unwrap();
    let csr = check_csr(&request.csr_base64(), "dev-1", PREVIEW).unwrap();
    let chain = |fault| issuance.chain(&csr, "dev-1", now, Some(fault));
    assert_eq!(chain(ChainFault::Missing), None);
    let refusal = |fault| request.accept(&chain(fault).unwrap(), now).unwrap_err();
    assert_eq!(refusal(ChainFault::Empty), CertificateError::EmptyChain);
    assert!(matches!(
        refusal(ChainFault::Malformed),
        CertificateError::Undecodable { index: 0, .. }
    ));
    assert_eq!(
        refusal(ChainFault::OtherKey),
        CertificateError::LeafKeyMismatch
    );
    assert!(matches!(
        refusal(ChainFault::OtherName),
        CertificateError::LeafNameMismatch { found: Some(name), .. } if name == "dev-1-other"
    ));
    assert!(matches!(
        refusal(ChainFault::Expired),
        CertificateError::Expired { .. }
    ));
}

#[test]
fn an_issuing_ca_reloads_from_pem_and_keeps_its_key_secret() {
    let ca = IssuingCa::generate().unwrap();
    let key_pem = ca.issuer.key().serialize_pem();
    let reloaded = IssuingCa::from_pem(ca.cert_pem(), &key_pem).unwrap();
    let issuance = Issuance {
        ca: Arc::new(reloaded),
        validity: DEFAULT_ISSUED_VALIDITY,
    };
    let request = CertificateRequest::generate("dev-1").unwrap();
    let csr = check_csr(&request.csr_base64(), "dev-1", PREVIEW).unwrap();
    let chain = issuance
        .chain(&csr, "dev-1", SystemTime::now(), None)
        .unwrap();
    assert!(request.accept(&chain, SystemTime::now()).is_ok());
    assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
    assert!(IssuingCa::from_pem("garbage", &key_pem).is_err());
    assert!(IssuingCa::from_pem(ca.cert_pem(), "garbage").is_err());
    // Another CA's key with this CA's certificate is refused, by name.
    let other = IssuingCa::generate().unwrap().issuer.key().serialize_pem();
    let mismatch = IssuingCa::from_pem(ca.cert_pem(), &other).unwrap_err();
    assert!(
        mismatch.to_string().contains("not the certificate's"),
        "{mismatch}"
    );
}

#[test]
fn other_keys_are_named_apart_from_rsa_and_the_defaults_are_the_documented_ones() {
    // An Ed25519 key: neither EC P-256/P-384 nor RSA.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "dev-1");
    let csr = params.serialize_request(&key).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(csr.der());
    let error = check_csr(&b64, "dev-1", PREVIEW).unwrap_err();
    assert_eq!(error, "the CSR's key is not EC P-256 or P-384");
    assert_eq!(DEFAULT_ISSUED_VALIDITY, Duration::from_secs(30 * 24 * 3600));
}

#[test]
fn issue_gives_a_test_the_chain_the_service_would_and_debug_hides_the_key() {
    let ca = Arc::new(IssuingCa::generate().unwrap());
    let request = CertificateRequest::generate("dev-1").unwrap();
    let now = SystemTime::now();
    let chain = ca
        .issue(
            &request.csr_base64(),
            "dev-1",
            Duration::from_secs(3_600),
            now,
        )
        .unwrap();
    let leaf = request.accept(&chain, now).unwrap().leaf().clone();
    let lifetime = leaf.not_after.duration_since(leaf.not_before).unwrap();
    assert_eq!(lifetime, Duration::from_secs(3_600) + BACKDATE);
    assert!(
        ca.issue("%%%", "dev-1", Duration::from_secs(1), now)
            .is_err()
    );
    let debug = format!("{ca:?}");
    assert!(
        debug.starts_with("IssuingCa") && debug.contains("<redacted>"),
        "{debug}"
    );
}

#[test]
fn issued_serial_numbers_are_positive() {
    use x509_parser::prelude::X509Certificate;
    let issuance = issuance();
    for _ in 0..32 {
        let request = CertificateRequest::generate_with("dev-1", KeyCurve::P256).unwrap();
        let csr = check_csr(&request.csr_base64(), "dev-1", PREVIEW).unwrap();
        let chain = issuance
            .chain(&csr, "dev-1", SystemTime::now(), None)
            .unwrap();
        let der = base64::engine::general_purpose::STANDARD
            .decode(&chain[0])
            .unwrap();
        let (_, leaf) = X509Certificate::from_der(&der).unwrap();
        // 16 random bytes, the first below 0x80: a positive DER INTEGER needs no padding byte.
        let serial = leaf.raw_serial();
        assert!(serial.len() <= 16 && serial[0] & 0x80 == 0, "{serial:02x?}");
    }
}
