//! Reading certificates that arrive from the network, with x509-parser: the subject common
//! name, the one field DPS checks against the clientId. A malformed certificate yields `None`,
//! never a panic.

use x509_parser::prelude::{FromDer, X509Certificate};

/// The subject common name of a DER certificate, if it parses and has one.
pub fn subject_common_name(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(dn: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["x".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (ty, value) in dn {
            params.distinguished_name.push(ty.clone(), *value);
        }
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_the_subject_common_name() {
        let der = cert_with(&[
            (rcgen::DnType::OrganizationName, "org"),
            (rcgen::DnType::CommonName, "dev-1"),
        ]);
        assert_eq!(subject_common_name(&der).as_deref(), Some("dev-1"));
    }

    #[test]
    fn a_certificate_without_cn_has_none() {
        let der = cert_with(&[(rcgen::DnType::OrganizationName, "org")]);
        assert_eq!(subject_common_name(&der), None);
    }

    #[test]
    fn garbage_and_truncations_never_panic() {
        let der = cert_with(&[(rcgen::DnType::CommonName, "dev-1")]);
        for len in 0..der.len() {
            assert_eq!(subject_common_name(&der[..len]), None);
        }
        assert_eq!(
            subject_common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(subject_common_name(&[0xff; 64]), None);
        let mut flipped = der.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0x55;
            let _ = subject_common_name(&flipped);
            flipped[i] ^= 0x55;
        }
    }
}
