//! A token key's public half, as TLS and a CSR need it: the algorithm it signs with and the
//! key a certificate carries. Read from the private key's own attributes where the token keeps
//! them there (`CKA_PUBLIC_KEY_INFO`, RSA's modulus), else from the public key object beside it
//! (same label and id): a private EC key holds no point.
//!
//! The token must also offer the mechanism the key signs with (`CKM_ECDSA`,
//! `CKM_RSA_PKCS_PSS`), so that a key that cannot sign TLS is an error before any connection.

use cryptoki::mechanism::MechanismType;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use dps_messages::x509::rsa_public_key;
use rustls::SignatureScheme;

use super::key::find;
use super::{Pkcs11Error, Pkcs11Token, Pkcs11Uri};

/// DER of the curves' OIDs, as `CKA_EC_PARAMS` holds them.
const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// The bytes before the point in a P-256 and a P-384 `SubjectPublicKeyInfo`.
const P256_SPKI: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
const P384_SPKI: &[u8] = &[
    0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
    0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
];

/// The scheme and public key of the private key whose `attributes` were read, in `token`.
pub(super) fn read(
    token: &Pkcs11Token,
    uri: &Pkcs11Uri,
    attributes: Vec<Attribute>,
) -> Result<(SignatureScheme, Vec<u8>), Pkcs11Error> {
    let unsupported = |reason: String| Pkcs11Error::Unsupported {
        uri: uri.to_string(),
        reason,
    };
    let (mut key_type, mut params, mut info, mut modulus, mut exponent) =
        (None, None, None, None, None);
    for attribute in attributes {
        match attribute {
            Attribute::KeyType(kind) => key_type = Some(kind),
            Attribute::EcParams(p) => params = Some(p),
            Attribute::PublicKeyInfo(i) => info = Some(i),
            Attribute::Modulus(n) => modulus = Some(n),
            Attribute::PublicExponent(e) => exponent = Some(e),
            _ => {}
        }
    }
    let offers = |mechanism| token.mechanisms().map(|m| m.contains(&mechanism));
    match key_type {
        Some(KeyType::EC) => {
            if !offers(MechanismType::ECDSA)? {
                return Err(unsupported("the token does not offer CKM_ECDSA".into()));
            }
            let (scheme, size) = match params.as_deref() {
                Some(P256) => (SignatureScheme::ECDSA_NISTP256_SHA256, 65),
                Some(P384) => (SignatureScheme::ECDSA_NISTP384_SHA384, 97),
                _ => {
                    return Err(unsupported(
                        "an EC key on a curve other than P-256 or P-384".into(),
                    ));
                }
            };
            let point = ec_point(info.as_deref(), size, || public_point(token, uri))?
                .map_err(unsupported)?;
            Ok((scheme, point))
        }
        Some(KeyType::RSA) => {
            if !offers(MechanismType::RSA_PKCS_PSS)? {
                return Err(unsupported(
                    "the token does not offer CKM_RSA_PKCS_PSS, which TLS 1.3 needs for RSA".into(),
                ));
            }
            let (Some(modulus), Some(exponent)) = (modulus, exponent) else {
                return Err(unsupported("the RSA key hides its modulus".into()));
            };
            Ok((
                SignatureScheme::RSA_PSS_SHA256,
                rsa_public_key(&modulus, &exponent),
            ))
        }
        other => Err(unsupported(format!(
            "a {} key; ECDSA P-256, P-384 or RSA is needed",
            other.map_or("typeless".into(), |k| k.to_string())
        ))),
    }
}

/// The point of an EC key whose points are `size` bytes: from its public key info when the
/// token keeps one there, else from `public_object` (the public key's `CKA_EC_POINT`), asked
/// only then. The inner error says why the key is unusable.
fn ec_point(
    info: Option<&[u8]>,
    size: usize,
    public_object: impl FnOnce() -> Result<Option<Vec<u8>>, Pkcs11Error>,
) -> Result<Result<Vec<u8>, String>, Pkcs11Error> {
    if let Some(point) = info
        .and_then(point_in_spki)
        .filter(|point| point.len() == size)
    {
        return Ok(Ok(point.to_vec()));
    }
    let Some(point) = public_object()? else {
        return Ok(Err(
            "no public key object beside it (same label and id) to read its point from".into(),
        ));
    };
    Ok(unwrap_point(&point, size).ok_or_else(|| format!("an EC point of {} bytes", point.len())))
}

/// The `CKA_EC_POINT` of the public key object with the URI's label and id, if there is one.
fn public_point(token: &Pkcs11Token, uri: &Pkcs11Uri) -> Result<Option<Vec<u8>>, Pkcs11Error> {
    token.run("read the public key", |session, _| {
        let Some(public) = find(session, uri, ObjectClass::PUBLIC_KEY)?
            .first()
            .copied()
        else {
            return Ok(None);
        };
        let attributes = session.get_attributes(public, &[AttributeType::EcPoint])?;
        Ok(attributes.into_iter().find_map(|a| match a {
            Attribute::EcPoint(point) => Some(point),
            _ => None,
        }))
    })
}

/// The point of a P-256 or P-384 `SubjectPublicKeyInfo`.
fn point_in_spki(spki: &[u8]) -> Option<&[u8]> {
    [(P256_SPKI, 65), (P384_SPKI, 97)]
        .into_iter()
        .find_map(|(prefix, size)| {
            spki.strip_prefix(prefix)
                .filter(|point| point.len() == size && point[0] == 0x04)
        })
}

/// `CKA_EC_POINT` is a DER OCTET STRING holding the point; some tokens give the bare point.
pub(super) fn unwrap_point(value: &[u8], size: usize) -> Option<Vec<u8>> {
    match value {
        [0x04, ..] if value.len() == size => Some(value.to_vec()),
        [0x04, len, rest @ ..] if usize::from(*len) == size && rest.len() == size => {
            Some(rest.to_vec())
        }
        [0x04, 0x81, len, rest @ ..] if usize::from(*len) == size && rest.len() == size => {
            Some(rest.to_vec())
        }
        _ => None,
    }
}

/// The curve's `CKA_EC_PARAMS`, the scheme and the point's size of a P-256 (`false`) or
/// P-384 (`true`) key.
#[cfg(feature = "issuance")]
pub(super) fn curve(p384: bool) -> (&'static [u8], SignatureScheme, usize) {
    if p384 {
        (P384, SignatureScheme::ECDSA_NISTP384_SHA384, 97)
    } else {
        (P256, SignatureScheme::ECDSA_NISTP256_SHA256, 65)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_is_read_bare_or_in_its_octet_string() {
        let point = [vec![0x04], vec![7; 64]].concat();
        assert_eq!(unwrap_point(&point, 65), Some(point.clone()));
        let wrapped = [vec![0x04, 65], point.clone()].concat();
        assert_eq!(unwrap_point(&wrapped, 65), Some(point.clone()));
        let long = [vec![0x04, 0x81, 65], point.clone()].concat();
        assert_eq!(unwrap_point(&long, 65), Some(point.clone()));
        assert_eq!(unwrap_point(&wrapped, 97), None);
        // A length byte that disagrees with what follows, either way.
        assert_eq!(
            unwrap_point(&[vec![0x04, 65], point[..64].to_vec()].concat(), 65),
            None
        );
        assert_eq!(
            unwrap_point(&[vec![0x04, 64], point.clone()].concat(), 65),
            None
        );
        assert_eq!(
            unwrap_point(&[vec![0x04, 0x81, 65], point[..64].to_vec()].concat(), 65),
            None
        );
        assert_eq!(
            unwrap_point(&[vec![0x04, 0x81, 64], point.clone()].concat(), 65),
            None
        );
        assert_eq!(unwrap_point(&point[..64], 65), None);
        assert_eq!(unwrap_point(&[], 65), None);
    }

    #[test]
    fn the_public_object_is_asked_only_when_the_key_info_has_no_point_of_the_curve() {
        let point = [vec![0x04], vec![5; 64]].concat();
        let info = [P256_SPKI.to_vec(), point.clone()].concat();
        let never = || -> Result<Option<Vec<u8>>, Pkcs11Error> { panic!("searched") };
        assert_eq!(ec_point(Some(&info), 65, never), Ok(Ok(point.clone())));
        let object = || Ok(Some([vec![0x04, 65], point.clone()].concat()));
        // No info, empty info (SoftHSM2's), and the info of another curve.
        assert_eq!(ec_point(None, 65, object), Ok(Ok(point.clone())));
        assert_eq!(ec_point(Some(&[]), 65, object), Ok(Ok(point.clone())));
        let p384 = [P384_SPKI.to_vec(), vec![0x04], vec![5; 96]].concat();
        assert_eq!(ec_point(Some(&p384), 65, object), Ok(Ok(point.clone())));
        let missing = ec_point(None, 65, || Ok(None)).unwrap().unwrap_err();
        assert!(missing.contains("no public key object"), "{missing}");
        let short = ec_point(None, 65, || Ok(Some(vec![0x04; 3])))
            .unwrap()
            .unwrap_err();
        assert_eq!(short, "an EC point of 3 bytes");
        let failed = Pkcs11Error::PinUnreadable("x".into());
        assert_eq!(ec_point(None, 65, || Err(failed.clone())), Err(failed));
    }

    #[test]
    fn a_public_key_info_gives_its_point_only_for_the_two_curves() {
        let point = [vec![0x04], vec![9; 64]].concat();
        let spki = [P256_SPKI.to_vec(), point.clone()].concat();
        assert_eq!(point_in_spki(&spki), Some(&point[..]));
        let p384 = [vec![0x04], vec![9; 96]].concat();
        let spki = [P384_SPKI.to_vec(), p384.clone()].concat();
        assert_eq!(point_in_spki(&spki), Some(&p384[..]));
        // A P-256 header with a P-384-sized point, and a compressed point.
        assert_eq!(point_in_spki(&[P256_SPKI, &p384].concat()), None);
        let compressed = [vec![0x02], vec![9; 64]].concat();
        assert_eq!(point_in_spki(&[P256_SPKI, &compressed].concat()), None);
    }
}
