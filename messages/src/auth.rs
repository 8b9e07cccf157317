//! How a device proves who it is: an X.509 certificate or a symmetric key (SRS 18_001).

use std::fmt;

use crate::error::AuthError;
use crate::sas::{SAS_KEY_NAME, SasToken, derive_device_key};
use crate::x509::X509Identity;

/// A device's credentials.
#[derive(Clone, Debug)]
pub enum Authentication {
    /// A client certificate chain and its private key, presented in the TLS handshake.
    X509(X509Identity),
    /// A symmetric key; the device sends a SAS token made from it as its MQTT password.
    SymmetricKey(SymmetricKey),
}

impl From<X509Identity> for Authentication {
    fn from(identity: X509Identity) -> Self {
        Self::X509(identity)
    }
}

impl From<SymmetricKey> for Authentication {
    fn from(key: SymmetricKey) -> Self {
        Self::SymmetricKey(key)
    }
}

/// A device's symmetric key (base64). `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SymmetricKey {
    key_base64: String,
}

impl SymmetricKey {
    /// An individual enrollment's key, as base64.
    pub fn new(key_base64: impl Into<String>) -> Result<Self, AuthError> {
        let key_base64 = key_base64.into().trim().to_owned();
        // Validate now so a bad key is reported when it is set, not at first connect.
        derive_device_key(&key_base64, "")?;
        Ok(Self { key_base64 })
    }

    /// The key of `registration_id` in a group enrollment whose key is `group_key_base64`.
    pub fn from_group_key(
        group_key_base64: &str,
        registration_id: &str,
    ) -> Result<Self, AuthError> {
        Ok(Self {
            key_base64: derive_device_key(group_key_base64, registration_id)?,
        })
    }

    /// The SAS token for `registration_id` in `id_scope`, valid until `expiry` (Unix seconds).
    pub fn sas_token(&self, id_scope: &str, registration_id: &str, expiry: u64) -> SasToken {
        let resource = format!("{id_scope}/registrations/{registration_id}");
        SasToken::generate(&self.key_base64, &resource, expiry, Some(SAS_KEY_NAME))
            .expect("the key was validated when it was made")
    }
}

impl fmt::Debug for SymmetricKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SymmetricKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let key = SymmetricKey::new(KEY).unwrap();
        assert_eq!(format!("{key:?}"), "SymmetricKey(<redacted>)");
    }

    const KEY: &str = crate::sas::TEST_KEY;

    // SRS_NODE_PROVISIONING_MQTT_18_001 (symmetric-key half): the credentials a caller sets are
    // the ones the token is made from.
    #[test]
    fn srs_18_001_symmetric_key_makes_a_verifiable_dps_token() {
        let key = SymmetricKey::new(KEY).unwrap();
        let token = key.sas_token("scope", "dev", 1000);
        assert_eq!(token.decoded_resource(), "scope/registrations/dev");
        assert_eq!(token.key_name.as_deref(), Some("registration"));
        assert_eq!(token.verify(KEY, 999), Ok(()));
    }

    #[test]
    fn group_device_key_verifies_against_the_derived_key() {
        let key = SymmetricKey::from_group_key(KEY, "dev").unwrap();
        let token = key.sas_token("scope", "dev", 1000);
        let derived = derive_device_key(KEY, "dev").unwrap();
        assert_eq!(token.verify(&derived, 0), Ok(()));
        assert!(token.verify(KEY, 0).is_err());
    }

    #[test]
    fn rejects_a_key_that_is_not_base64_and_never_shows_it() {
        assert_eq!(
            SymmetricKey::new("not base64!"),
            Err(AuthError::BadSymmetricKey)
        );
        let key = SymmetricKey::new(KEY).unwrap();
        assert!(!format!("{key:?}").contains("O+H9"));
        assert!(!format!("{:?}", Authentication::from(key)).contains("O+H9"));
    }
}
