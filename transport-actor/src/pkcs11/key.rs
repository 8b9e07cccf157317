//! A private key inside a PKCS#11 token, as a [`KeySigner`]: found by its URI, checked once
//! (its type, its curve, the token's mechanism for it), then asked for one signature per TLS
//! handshake. Its bytes never leave the token.
//!
//! ECDSA P-256 and P-384 sign with `CKM_ECDSA` over a digest made here, the signature
//! re-encoded from `r ‖ s` to DER. RSA signs with `CKM_RSA_PKCS_PSS` (SHA-256, MGF1, a 32-byte
//! salt), since TLS 1.3 takes RSA only in PSS.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use cryptoki::error::Error as CkError;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use dps_messages::x509::{KeySigner, SignError, ecdsa_der_from_raw, rsa_public_key};
use rustls::SignatureScheme;
use sha2::Digest;

use super::{Pin, Pkcs11Error, Pkcs11Token, Pkcs11Uri};

/// DER of the curves' OIDs, as `CKA_EC_PARAMS` holds them.
const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// A key in a token, named by a PKCS#11 URI, that signs in the token.
///
/// ```no_run
/// use std::sync::Arc;
/// use dps_messages::X509Identity;
/// use dps_transport_actor::pkcs11::{Pin, Pkcs11Key};
///
/// let pin = Pin::from_env("DPS_PKCS11_PIN").expect("a PIN")?;
/// let key = Pkcs11Key::open(
///     &"pkcs11:token=gw;object=device-key".parse()?,
///     Some("/usr/lib/softhsm/libsofthsm2.so".as_ref()),
///     &pin,
/// )?;
/// let chain = std::fs::read("device.pem")?;
/// let identity = X509Identity::from_pem_and_signer(&chain, Arc::new(key))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Pkcs11Key {
    token: Pkcs11Token,
    /// The URI that finds it again: the token's label, the key's label and id, the module.
    uri: Pkcs11Uri,
    scheme: SignatureScheme,
    public_key: Vec<u8>,
    /// The private key's handle, found again when a new session needs it.
    handle: Mutex<Option<ObjectHandle>>,
}

impl Pkcs11Key {
    /// The private key `uri` names, in the module `uri` names or else at `module`, logged in
    /// with `pin`. Checks the key's type and the token's mechanism for it now, so that a key
    /// that cannot sign TLS is an error before any connection.
    pub fn open(uri: &Pkcs11Uri, module: Option<&Path>, pin: &Pin) -> Result<Self, Pkcs11Error> {
        let module =
            uri.module_path
                .as_deref()
                .or(module)
                .ok_or_else(|| Pkcs11Error::NoModule {
                    uri: uri.to_string(),
                })?;
        let token = Pkcs11Token::open(module, uri, pin)?;
        Self::in_token(&token, uri)
    }

    /// The private key `uri` names (its `object=` label and `id=`) in `token`.
    pub fn in_token(token: &Pkcs11Token, uri: &Pkcs11Uri) -> Result<Self, Pkcs11Error> {
        let mut uri = uri.clone();
        uri.token = Some(token.label().to_owned());
        uri.module_path = Some(token.module().to_owned());
        let found = token.run("find the key", |session, _| {
            find(session, &uri, ObjectClass::PRIVATE_KEY)
        })?;
        let handle = match found.as_slice() {
            [handle] => *handle,
            [] => {
                return Err(Pkcs11Error::NoObject {
                    uri: uri.to_string(),
                });
            }
            many => {
                return Err(Pkcs11Error::AmbiguousObject {
                    uri: uri.to_string(),
                    count: many.len(),
                });
            }
        };
        let attributes = token.run("read the key", |session, _| {
            session.get_attributes(handle, &[AttributeType::KeyType, AttributeType::Id])
        })?;
        let key_type = attributes.iter().find_map(|a| match a {
            Attribute::KeyType(kind) => Some(*kind),
            _ => None,
        });
        // The id found, so that the URI names this key alone from now on.
        if uri.id.is_none() {
            uri.id = attributes.iter().find_map(|a| match a {
                Attribute::Id(id) if !id.is_empty() => Some(id.clone()),
                _ => None,
            });
        }
        let unsupported = |reason: String| Pkcs11Error::Unsupported {
            uri: uri.to_string(),
            reason,
        };
        let mechanisms = token
            .context()
            .get_mechanism_list(token.slot())
            .map_err(|e| token.failed("list the mechanisms", e))?;
        let (scheme, public_key) = match key_type {
            Some(KeyType::EC) => {
                if !mechanisms.contains(&MechanismType::ECDSA) {
                    return Err(unsupported("the token does not offer CKM_ECDSA".into()));
                }
                ec_public_key(token, &uri).map_err(|e| match e {
                    KeyProblem::Token(e) => e,
                    KeyProblem::Unsupported(why) => unsupported(why),
                })?
            }
            Some(KeyType::RSA) => {
                if !mechanisms.contains(&MechanismType::RSA_PKCS_PSS) {
                    return Err(unsupported(
                        "the token does not offer CKM_RSA_PKCS_PSS, which TLS 1.3 needs for RSA"
                            .into(),
                    ));
                }
                let attributes = token.run("read the key", |session, _| {
                    session.get_attributes(
                        handle,
                        &[AttributeType::Modulus, AttributeType::PublicExponent],
                    )
                })?;
                let (mut modulus, mut exponent) = (None, None);
                for attribute in attributes {
                    match attribute {
                        Attribute::Modulus(n) => modulus = Some(n),
                        Attribute::PublicExponent(e) => exponent = Some(e),
                        _ => {}
                    }
                }
                let (Some(modulus), Some(exponent)) = (modulus, exponent) else {
                    return Err(unsupported("the RSA key hides its modulus".into()));
                };
                (
                    SignatureScheme::RSA_PSS_SHA256,
                    rsa_public_key(&modulus, &exponent),
                )
            }
            other => {
                return Err(unsupported(format!(
                    "a {} key; ECDSA P-256, P-384 or RSA is needed",
                    other.map_or("typeless".into(), |k| k.to_string())
                )));
            }
        };
        Ok(Self {
            token: token.clone(),
            uri,
            scheme,
            public_key,
            handle: Mutex::new(Some(handle)),
        })
    }

    /// The URI that finds this key again (with the token's label, the key's id and the
    /// module's path filled in). It never holds a PIN.
    pub fn uri(&self) -> &Pkcs11Uri {
        &self.uri
    }

    /// The token the key is in.
    pub fn token(&self) -> &Pkcs11Token {
        &self.token
    }

    /// The private key's handle in `session`: the one found before, or found again (`fresh`:
    /// a new session after the token dropped the old ones).
    fn handle(&self, session: &Session, fresh: bool) -> Result<ObjectHandle, CkError> {
        let mut handle = self.handle.lock().unwrap_or_else(PoisonError::into_inner);
        if let (Some(known), false) = (*handle, fresh) {
            return Ok(known);
        }
        let found = find(session, &self.uri, ObjectClass::PRIVATE_KEY)?;
        // Gone: the next call says so as the token does.
        let found = found.first().copied().ok_or(CkError::Pkcs11(
            cryptoki::error::RvError::KeyHandleInvalid,
            cryptoki::context::Function::FindObjects,
        ))?;
        *handle = Some(found);
        Ok(found)
    }

    /// The private and public objects of this key, for removing them.
    #[cfg(feature = "issuance")]
    pub(super) fn objects(&self, session: &Session) -> Result<Vec<ObjectHandle>, CkError> {
        let mut objects = find(session, &self.uri, ObjectClass::PRIVATE_KEY)?;
        objects.extend(find(session, &self.uri, ObjectClass::PUBLIC_KEY)?);
        Ok(objects)
    }

    /// A key just made in `token`, named by `uri`.
    #[cfg(feature = "issuance")]
    pub(super) fn from_parts(
        token: &Pkcs11Token,
        uri: Pkcs11Uri,
        scheme: SignatureScheme,
        public_key: Vec<u8>,
    ) -> Self {
        Self {
            token: token.clone(),
            uri,
            scheme,
            public_key,
            handle: Mutex::new(None),
        }
    }
}

impl KeySigner for Pkcs11Key {
    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }

    fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let (mechanism, digest) = match self.scheme {
            SignatureScheme::ECDSA_NISTP384_SHA384 => {
                (Mechanism::Ecdsa, sha2::Sha384::digest(message).to_vec())
            }
            SignatureScheme::RSA_PSS_SHA256 => (
                Mechanism::RsaPkcsPss(PkcsPssParams {
                    hash_alg: MechanismType::SHA256,
                    mgf: PkcsMgfType::MGF1_SHA256,
                    s_len: 32.into(),
                }),
                sha2::Sha256::digest(message).to_vec(),
            ),
            _ => (Mechanism::Ecdsa, sha2::Sha256::digest(message).to_vec()),
        };
        let signature = self
            .token
            .run("sign", |session, fresh| {
                let handle = self.handle(session, fresh)?;
                session.sign(&mechanism, handle, &digest)
            })
            .map_err(SignError::new)?;
        if matches!(mechanism, Mechanism::Ecdsa) {
            return ecdsa_der_from_raw(&signature).ok_or_else(|| {
                SignError::new(Pkcs11Error::Token {
                    operation: "sign",
                    label: self.token.label().to_owned(),
                    reason: format!("an ECDSA signature of {} bytes", signature.len()),
                })
            });
        }
        Ok(signature)
    }

    fn locator(&self) -> Option<String> {
        Some(self.uri.to_string())
    }
}

/// Objects of `class` with the URI's label and id.
fn find(
    session: &Session,
    uri: &Pkcs11Uri,
    class: ObjectClass,
) -> Result<Vec<ObjectHandle>, CkError> {
    let mut template = vec![Attribute::Class(class)];
    if let Some(label) = &uri.object {
        template.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    session.find_objects(&template)
}

enum KeyProblem {
    Token(Pkcs11Error),
    Unsupported(String),
}

/// The scheme and public point of an EC key: its curve from the private key, its point from
/// the public key beside it (a private key object holds no point).
fn ec_public_key(
    token: &Pkcs11Token,
    uri: &Pkcs11Uri,
) -> Result<(SignatureScheme, Vec<u8>), KeyProblem> {
    let attributes = token
        .run("read the public key", |session, _| {
            let Some(public) = find(session, uri, ObjectClass::PUBLIC_KEY)?
                .first()
                .copied()
            else {
                return Ok(Vec::new());
            };
            session.get_attributes(public, &[AttributeType::EcParams, AttributeType::EcPoint])
        })
        .map_err(KeyProblem::Token)?;
    let (mut params, mut point) = (None, None);
    for attribute in attributes {
        match attribute {
            Attribute::EcParams(p) => params = Some(p),
            Attribute::EcPoint(p) => point = Some(p),
            _ => {}
        }
    }
    let (Some(params), Some(point)) = (params, point) else {
        return Err(KeyProblem::Unsupported(
            "no public key object beside it (same label and id) to read its point from".into(),
        ));
    };
    let (scheme, size) = match params.as_slice() {
        P256 => (SignatureScheme::ECDSA_NISTP256_SHA256, 65),
        P384 => (SignatureScheme::ECDSA_NISTP384_SHA384, 97),
        _ => {
            return Err(KeyProblem::Unsupported(
                "an EC key on a curve other than P-256 or P-384".into(),
            ));
        }
    };
    let point = unwrap_point(&point, size)
        .ok_or_else(|| KeyProblem::Unsupported(format!("an EC point of {} bytes", point.len())))?;
    Ok((scheme, point))
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

#[cfg(feature = "issuance")]
/// The curve's `CKA_EC_PARAMS` and the scheme of a P-256 (`false`) or P-384 (`true`) key.
pub(super) fn curve(p384: bool) -> (&'static [u8], SignatureScheme, usize) {
    if p384 {
        (P384, SignatureScheme::ECDSA_NISTP384_SHA384, 97)
    } else {
        (P256, SignatureScheme::ECDSA_NISTP256_SHA256, 65)
    }
}
