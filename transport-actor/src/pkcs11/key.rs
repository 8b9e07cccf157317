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
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use dps_messages::x509::{KeySigner, SignError, ecdsa_der_from_raw};
use rustls::SignatureScheme;
use sha2::Digest;

use super::{Pin, Pkcs11Error, Pkcs11Token, Pkcs11Uri, public_key};

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
        let module = uri.module_or(module)?;
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
        // One read for all that the private key may say of itself: a search costs more than
        // a read on many tokens (SoftHSM2 opens every object's file at each search).
        let attributes = token.run("read the key", |session, _| {
            session.get_attributes(
                handle,
                &[
                    AttributeType::KeyType,
                    AttributeType::Id,
                    AttributeType::EcParams,
                    AttributeType::PublicKeyInfo,
                    AttributeType::Modulus,
                    AttributeType::PublicExponent,
                ],
            )
        })?;
        // The id found, so that the URI names this key alone from now on.
        if uri.id.is_none() {
            uri.id = attributes.iter().find_map(|a| match a {
                Attribute::Id(id) if !id.is_empty() => Some(id.clone()),
                _ => None,
            });
        }
        let (scheme, public_key) = public_key::read(token, &uri, attributes)?;
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
pub(super) fn find(
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
