//! Reading a private key that signs certificates (an issuing CA's, an issued certificate's),
//! in any of the forms openssl writes.
//!
//! TLS keys are read by rustls, which takes PKCS#8, SEC1 and PKCS#1. A key that signs
//! certificates is an rcgen `KeyPair`, and rcgen over ring reads PKCS#8 alone: `openssl ecparam
//! -genkey` (SEC1, `BEGIN EC PRIVATE KEY`, after an `EC PARAMETERS` block) and `openssl genrsa
//! -traditional` (PKCS#1, `BEGIN RSA PRIVATE KEY`) keys were refused with "Could not parse key
//! pair". The other two forms are the same key inside less wrapping, so they are wrapped as
//! PKCS#8 (RFC 5208: version, algorithm, the key as an octet string) and read as such.

use rcgen::KeyPair;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::der::der;
use crate::error::CertificateError;

/// The forms tried, as an error names them.
const FORMATS: &str = "PKCS#8 (`BEGIN PRIVATE KEY`), SEC1 (`BEGIN EC PRIVATE KEY`) and PKCS#1 \
                       (`BEGIN RSA PRIVATE KEY`)";

/// AlgorithmIdentifier contents: rsaEncryption (1.2.840.113549.1.1.1) with NULL parameters.
const RSA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];
/// id-ecPublicKey (1.2.840.10045.2.1) on P-256 (1.2.840.10045.3.1.7).
const EC_P256: &[u8] = &[
    0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d,
    0x03, 0x01, 0x07,
];
/// id-ecPublicKey on P-384 (1.3.132.0.34).
const EC_P384: &[u8] = &[
    0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22,
];

/// The first private key in `pem`, as PKCS#8, SEC1 (P-256 or P-384) or PKCS#1: a key pair that
/// can sign certificates and CSRs. Other PEM blocks (`EC PARAMETERS`, certificates) are
/// skipped. The error names the forms tried, or what the key found is and why it cannot sign;
/// it never contains key material.
pub fn key_pair_from_pem(pem: &str) -> Result<KeyPair, CertificateError> {
    let bad = |why: String| CertificateError::BadKey(why);
    let key = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| {
        bad(if pem.contains("ENCRYPTED PRIVATE KEY") {
            "the key is encrypted; decrypt it first (`openssl pkey -in KEY -out PLAIN`)".into()
        } else {
            format!("no private key found; tried {FORMATS}")
        })
    })?;
    let (form, wrapped) = match &key {
        PrivateKeyDer::Pkcs8(key) => ("a PKCS#8 key", vec![key.secret_pkcs8_der().to_vec()]),
        PrivateKeyDer::Sec1(key) => (
            "a SEC1 key",
            // The curve is the one whose wrapping ring accepts: it checks the key's length
            // and the curve the key names, if it names one.
            [EC_P256, EC_P384]
                .iter()
                .map(|curve| pkcs8(curve, key.secret_sec1_der()))
                .collect(),
        ),
        PrivateKeyDer::Pkcs1(key) => ("a PKCS#1 key", vec![pkcs8(RSA, key.secret_pkcs1_der())]),
        _ => ("a key", Vec::new()),
    };
    wrapped
        .into_iter()
        .find_map(|der| KeyPair::try_from(&PrivatePkcs8KeyDer::from(der)).ok())
        .ok_or_else(|| {
            bad(format!(
                "{form} that cannot sign here: ECDSA P-256 and P-384, RSA and Ed25519 keys can"
            ))
        })
}

/// A PKCS#8 `PrivateKeyInfo` of `key` under the AlgorithmIdentifier contents `algorithm`.
fn pkcs8(algorithm: &[u8], key: &[u8]) -> Vec<u8> {
    let version = [0x02, 0x01, 0x00];
    der(
        0x30,
        &[&version[..], &der(0x30, algorithm), &der(0x04, key)].concat(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys as openssl 3.0 writes them: `ecparam -genkey -name prime256v1` (with its `EC
    /// PARAMETERS` block), `ecparam -genkey -name secp384r1 -noout`, `genrsa -traditional
    /// 2048`, `pkcs8 -topk8 -nocrypt` of the first, `ecparam -genkey -name secp521r1 -noout`
    /// and `genpkey -algorithm ed448`. Test keys, made for these tests only.
    const SEC1_P256: &str = include_str!("private_key/sec1-p256.key");
    const SEC1_P384: &str = include_str!("private_key/sec1-p384.key");
    const PKCS1_RSA: &str = include_str!("private_key/pkcs1-rsa.key");
    const PKCS8_P256: &str = include_str!("private_key/pkcs8-p256.key");
    const SEC1_P521: &str = include_str!("private_key/sec1-p521.key");
    const PKCS8_ED448: &str = include_str!("private_key/pkcs8-ed448.key");

    #[test]
    fn every_form_openssl_writes_reads_as_the_same_kind_of_key() {
        for (pem, alg) in [
            (SEC1_P256, &rcgen::PKCS_ECDSA_P256_SHA256),
            (SEC1_P384, &rcgen::PKCS_ECDSA_P384_SHA384),
            (PKCS1_RSA, &rcgen::PKCS_RSA_SHA256),
            (PKCS8_P256, &rcgen::PKCS_ECDSA_P256_SHA256),
        ] {
            let key = key_pair_from_pem(pem).unwrap();
            assert_eq!(key.algorithm(), alg);
        }
        // The SEC1 key and its PKCS#8 form are one key.
        assert_eq!(
            key_pair_from_pem(SEC1_P256).unwrap().public_key_raw(),
            key_pair_from_pem(PKCS8_P256).unwrap().public_key_raw()
        );
    }

    #[test]
    fn a_key_read_from_another_form_signs_a_certificate() {
        for pem in [SEC1_P256, SEC1_P384, PKCS1_RSA] {
            let key = key_pair_from_pem(pem).unwrap();
            let cert = rcgen::CertificateParams::new(vec!["x".into()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            let (_, parsed) = x509_parser::parse_x509_certificate(cert.der()).unwrap();
            assert!(parsed.verify_signature(None).is_ok());
        }
    }

    #[test]
    fn what_cannot_be_read_is_named_without_the_key() {
        let error = |pem: &str| key_pair_from_pem(pem).unwrap_err().to_string();
        let none = error("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        assert!(
            none.contains("PKCS#8") && none.contains("SEC1") && none.contains("PKCS#1"),
            "{none}"
        );
        assert!(error("garbage").contains("tried PKCS#8"));
        let p521 = error(SEC1_P521);
        assert!(p521.contains("a SEC1 key that cannot sign"), "{p521}");
        assert!(error(PKCS8_ED448).contains("a PKCS#8 key that cannot sign"));
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(error(encrypted).contains("encrypted"));
        for pem in [SEC1_P521, PKCS8_ED448] {
            let body = pem.lines().nth(1).unwrap();
            assert!(!error(pem).contains(body), "the error shows the key");
        }
    }
}
