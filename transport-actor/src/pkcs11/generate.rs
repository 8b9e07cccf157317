//! Keys made inside the token, for certificate issuance: the pair is generated there
//! (sensitive, never extractable), the CSR is signed there, and an old key is destroyed only
//! once its successor's certificate is checked and stored.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use dps_messages::certificate::KeyCurve;

use super::public_key::{curve, unwrap_point};
use super::{Pkcs11Error, Pkcs11Key, Pkcs11Token, Pkcs11Uri};

/// The bytes of a generated key's `CKA_ID`: random, so that each renewal's key is told from
/// the last one of the same label.
const ID_LEN: u32 = 16;

impl Pkcs11Token {
    /// Makes an EC key pair on `curve` in the token, labelled `label` with a new random id:
    /// the private key `CKA_SENSITIVE`, not `CKA_EXTRACTABLE`, `CKA_TOKEN` (it survives the
    /// session), usable only to sign. Its [`uri`](Pkcs11Key::uri) names it by label and id.
    pub fn generate_key(&self, label: &str, curve: KeyCurve) -> Result<Pkcs11Key, Pkcs11Error> {
        let (params, scheme, size) = self::curve(curve == KeyCurve::P384);
        let (public, id) = self.run("generate a key pair", |session, _| {
            let id = session.generate_random_vec(ID_LEN)?;
            let common = [
                Attribute::Token(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id.clone()),
                Attribute::KeyType(KeyType::EC),
            ];
            let mut public = common.to_vec();
            public.extend([
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::EcParams(params.to_vec()),
                Attribute::Verify(true),
                Attribute::Private(false),
            ]);
            let mut private = common.to_vec();
            private.extend([
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
            ]);
            let (public, _) =
                session.generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)?;
            let point =
                session.get_attributes(public, &[cryptoki::object::AttributeType::EcPoint])?;
            Ok((point, id))
        })?;
        let uri = Pkcs11Uri {
            token: Some(self.label().to_owned()),
            object: Some(label.to_owned()),
            id: Some(id),
            module_path: Some(self.module().to_owned()),
            ..Pkcs11Uri::default()
        };
        let point = public
            .into_iter()
            .find_map(|a| match a {
                Attribute::EcPoint(point) => unwrap_point(&point, size),
                _ => None,
            })
            .ok_or_else(|| Pkcs11Error::Unsupported {
                uri: uri.to_string(),
                reason: "the generated key's point is unreadable".into(),
            })?;
        tracing::info!(key = %uri, "generated a key pair in the token");
        Ok(Pkcs11Key::from_parts(self, uri, scheme, point))
    }
}

impl Pkcs11Key {
    /// Destroys the key's private and public objects in the token. For a key replaced by a
    /// renewal, once the new certificate is stored.
    pub fn destroy(&self) -> Result<(), Pkcs11Error> {
        self.token().run("destroy a key", |session, _| {
            for object in self.objects(session)? {
                session.destroy_object(object)?;
            }
            Ok(())
        })
    }
}

/// Where certificate issuance makes its keys: a token, and the label each key gets
/// ([`CertificateOptions::token_keys`](crate::CertificateOptions::token_keys)).
///
/// ```no_run
/// use dps_transport_actor::pkcs11::{Pin, TokenKeys};
/// let pin = Pin::from_env("DPS_PKCS11_PIN").expect("a PIN")?;
/// let keys = TokenKeys::open(
///     &"pkcs11:token=gw;object=issued".parse()?,
///     Some("/usr/lib/softhsm/libsofthsm2.so".as_ref()),
///     &pin,
/// )?;
/// # Ok::<(), dps_transport_actor::pkcs11::Pkcs11Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct TokenKeys {
    token: Pkcs11Token,
    label: String,
}

impl TokenKeys {
    /// Keys labelled `label` in `token`.
    pub fn new(token: Pkcs11Token, label: impl Into<String>) -> Self {
        Self {
            token,
            label: label.into(),
        }
    }

    /// The token `uri` names (its module from the URI or else `module`), logged in with `pin`,
    /// and the label `uri`'s `object=` gives.
    pub fn open(
        uri: &Pkcs11Uri,
        module: Option<&std::path::Path>,
        pin: &super::Pin,
    ) -> Result<Self, Pkcs11Error> {
        let label = uri.object.clone().ok_or_else(|| Pkcs11Error::BadUri {
            uri: uri.to_string(),
            reason: "a key to be made needs `object=<label>`".into(),
        })?;
        let module = uri.module_or(module)?;
        Ok(Self::new(Pkcs11Token::open(module, uri, pin)?, label))
    }

    /// A new key pair on `curve`.
    pub fn make(&self, curve: KeyCurve) -> Result<Pkcs11Key, Pkcs11Error> {
        self.token.generate_key(&self.label, curve)
    }

    /// The key a URI written earlier names, in this token.
    pub fn find(&self, uri: &str) -> Result<Pkcs11Key, Pkcs11Error> {
        Pkcs11Key::in_token(&self.token, &uri.parse()?)
    }
}
