use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::*;
use crate::X509Identity;

/// A signer of a key in memory, through ring: what a secure element does, without one.
#[derive(Debug)]
pub(crate) struct SoftwareSigner {
    scheme: SignatureScheme,
    public_key: Vec<u8>,
    key: Arc<dyn rustls::sign::SigningKey>,
    pub(crate) fail: bool,
}

impl SoftwareSigner {
    pub(crate) fn new(key: &rcgen::KeyPair, scheme: SignatureScheme) -> Self {
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Self {
            scheme,
            public_key: key.public_key_raw().to_vec(),
            key: rustls::crypto::ring::sign::any_supported_type(&der).unwrap(),
            fail: false,
        }
    }
}

impl KeySigner for SoftwareSigner {
    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }

    fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        if self.fail {
            return Err(SignError::new(std::io::Error::other(
                "the element is locked",
            )));
        }
        let signer = self.key.choose_scheme(&[self.scheme]).unwrap();
        Ok(signer.sign(message).unwrap())
    }
}

fn certificate(key: &rcgen::KeyPair) -> CertificateDer<'static> {
    let params = rcgen::CertificateParams::new(vec!["dev-1".into()]).unwrap();
    params.self_signed(key).unwrap().der().clone()
}

#[test]
fn the_public_key_info_is_the_one_a_certificate_carries() {
    for (algorithm, scheme) in [
        (
            &rcgen::PKCS_ECDSA_P256_SHA256,
            SignatureScheme::ECDSA_NISTP256_SHA256,
        ),
        (
            &rcgen::PKCS_ECDSA_P384_SHA384,
            SignatureScheme::ECDSA_NISTP384_SHA384,
        ),
    ] {
        let key = rcgen::KeyPair::generate_for(algorithm).unwrap();
        let signer = SoftwareSigner::new(&key, scheme);
        let (rustls_algorithm, spki) = check(&signer).unwrap();
        assert_eq!(
            spki,
            rcgen::PublicKeyData::subject_public_key_info(&key),
            "{scheme:?}"
        );
        assert_eq!(subject_public_key_info(&signer).unwrap(), spki);
        assert_eq!(rustls_algorithm, rustls::SignatureAlgorithm::ECDSA);
    }
}

#[test]
fn an_identity_from_a_signer_presents_the_chain_and_signs_through_the_signer() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let signer = Arc::new(SoftwareSigner::new(
        &key,
        SignatureScheme::ECDSA_NISTP256_SHA256,
    ));
    let identity = X509Identity::from_signer(vec![certificate(&key)], signer).unwrap();
    assert!(identity.signer().is_some());
    let certified = identity.certified_key();
    assert!(certified.keys_match().is_ok());
    // Only the signer's scheme is chosen.
    assert!(
        certified
            .key
            .choose_scheme(&[SignatureScheme::ED25519])
            .is_none()
    );
    let chosen = certified
        .key
        .choose_scheme(&[
            SignatureScheme::ED25519,
            SignatureScheme::ECDSA_NISTP256_SHA256,
        ])
        .unwrap();
    assert_eq!(chosen.scheme(), SignatureScheme::ECDSA_NISTP256_SHA256);
    let signature = chosen.sign(b"handshake").unwrap();
    assert_eq!(signature[0], 0x30, "DER, as TLS carries it");
    assert!(format!("{identity:?}").contains("<held elsewhere>"));
}

#[test]
fn a_signer_for_another_key_than_the_leafs_is_refused() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let signer = Arc::new(SoftwareSigner::new(
        &other,
        SignatureScheme::ECDSA_NISTP256_SHA256,
    ));
    let error = X509Identity::from_signer(vec![certificate(&key)], signer).unwrap_err();
    assert!(matches!(error, AuthError::KeyMismatch(_)), "{error:?}");
    let signer = Arc::new(SoftwareSigner::new(
        &key,
        SignatureScheme::ECDSA_NISTP256_SHA256,
    ));
    let error = X509Identity::from_signer(vec![], signer).unwrap_err();
    assert!(matches!(error, AuthError::BadCertificate(_)), "{error:?}");
}

#[test]
fn a_scheme_or_a_public_key_tls_cannot_use_is_refused_by_name() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ed = SoftwareSigner::new(&key, SignatureScheme::ED25519);
    let error = check(&ed).unwrap_err();
    assert!(matches!(&error, AuthError::UnsupportedKey(why) if why.contains("ED25519")));
    // A P-256 point announced as P-384.
    let wrong_curve = SoftwareSigner::new(&key, SignatureScheme::ECDSA_NISTP384_SHA384);
    assert!(matches!(
        check(&wrong_curve),
        Err(AuthError::UnsupportedKey(_))
    ));
    let mut compressed = SoftwareSigner::new(&key, SignatureScheme::ECDSA_NISTP256_SHA256);
    compressed.public_key[0] = 0x02;
    assert!(matches!(
        check(&compressed),
        Err(AuthError::UnsupportedKey(_))
    ));
}

#[test]
fn a_signing_failure_reaches_rustls_as_the_signers_own_error() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut signer = SoftwareSigner::new(&key, SignatureScheme::ECDSA_NISTP256_SHA256);
    signer.fail = true;
    let identity = X509Identity::from_signer(vec![certificate(&key)], Arc::new(signer)).unwrap();
    let chosen = identity
        .certified_key()
        .key
        .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
        .unwrap();
    let rustls::Error::Other(other) = chosen.sign(b"x").unwrap_err() else {
        panic!("not the signer's error");
    };
    let error = other.0.downcast_ref::<SignError>().expect("a SignError");
    assert_eq!(error.inner().to_string(), "the element is locked");
    assert_eq!(error.to_string(), "the element is locked");
    // A handshake that failed so is the key's error, not a TLS one.
    let failure = crate::ProvisioningError::tls(rustls::Error::Other(other.clone()), None);
    assert!(
        matches!(&failure, crate::ProvisioningError::Key(_)),
        "{failure:?}"
    );
    assert_eq!(failure.to_string(), "device key: the element is locked");
    let alert = rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure);
    assert!(matches!(
        crate::ProvisioningError::tls(alert, None),
        crate::ProvisioningError::Tls(_)
    ));
}

#[test]
fn raw_ecdsa_signatures_become_der_integers() {
    // The top bit set: a zero in front, so the INTEGER stays positive.
    assert_eq!(
        ecdsa_der_from_raw(&[0x80, 1, 0, 2]).unwrap(),
        [0x30, 0x08, 0x02, 0x03, 0, 0x80, 1, 0x02, 0x01, 2]
    );
    // Leading zeros dropped; zero itself is one zero byte.
    assert_eq!(
        ecdsa_der_from_raw(&[0, 0, 0, 0]).unwrap(),
        [0x30, 0x06, 0x02, 0x01, 0, 0x02, 0x01, 0]
    );
    assert_eq!(ecdsa_der_from_raw(&[]), None);
    assert_eq!(ecdsa_der_from_raw(&[1, 2, 3]), None);
    // A P-384 signature with both top bits set: two 49-byte INTEGERs.
    let der = ecdsa_der_from_raw(&[0xff; 96]).unwrap();
    assert_eq!(&der[..5], [0x30, 102, 0x02, 49, 0]);
    assert_eq!(der.len(), 104);
}

/// An RSA key's public key info, from its PKCS#1 public key: the one a certificate carries.
#[cfg(feature = "issuance")]
#[test]
fn an_rsa_public_key_info_is_the_one_a_certificate_carries() {
    let pem = include_str!("../../certificate/private_key/pkcs1-rsa.key");
    let key = crate::certificate::key_pair_from_pem(pem).unwrap();
    let signer = SoftwareSigner::new(&key, SignatureScheme::RSA_PSS_SHA256);
    let (algorithm, spki) = check(&signer).unwrap();
    assert_eq!(algorithm, rustls::SignatureAlgorithm::RSA);
    assert_eq!(spki, rcgen::PublicKeyData::subject_public_key_info(&key));
}
