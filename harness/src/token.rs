//! How the command line reaches a PKCS#11 token: the module (`--pkcs11-module` or
//! `DPS_PKCS11_MODULE`) and the PIN (`--pin-file` or `DPS_PKCS11_PIN`; never an argument,
//! which every user of the machine could read).

use std::path::PathBuf;
use std::sync::Arc;

use dps_messages::ProvisioningError;
use dps_messages::x509::SignError;
use dps_transport_actor::pkcs11::{Pin, Pkcs11Error, Pkcs11Key, Pkcs11Uri, TokenKeys};

/// The environment variable naming the PKCS#11 module.
pub const MODULE_VAR: &str = "DPS_PKCS11_MODULE";
/// The environment variable holding the token's PIN.
pub const PIN_VAR: &str = "DPS_PKCS11_PIN";

/// Where a token's module and PIN come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenAccess {
    /// The module, from the argument or else `DPS_PKCS11_MODULE` (a key's URI may name its own).
    pub module: Option<PathBuf>,
    /// The file holding the PIN; without it, `DPS_PKCS11_PIN`.
    pub pin_file: Option<PathBuf>,
}

impl TokenAccess {
    /// The arguments, completed from the environment.
    pub fn new(module: Option<PathBuf>, pin_file: Option<PathBuf>) -> Self {
        Self {
            module: module.or_else(|| std::env::var_os(MODULE_VAR).map(PathBuf::from)),
            pin_file,
        }
    }

    /// The PIN, read now.
    pub fn pin(&self) -> Result<Pin, Pkcs11Error> {
        match &self.pin_file {
            Some(file) => Pin::from_file(file),
            None => Pin::from_env(PIN_VAR).unwrap_or_else(|| {
                Err(Pkcs11Error::PinUnreadable(format!(
                    "a key in a token needs the token's PIN: --pin-file or {PIN_VAR}"
                )))
            }),
        }
    }

    /// The key `uri` names, in its token.
    pub fn key(&self, uri: &Pkcs11Uri) -> Result<Arc<Pkcs11Key>, ProvisioningError> {
        let open = || Pkcs11Key::open(uri, self.module.as_deref(), &self.pin()?);
        open().map(Arc::new).map_err(key_error)
    }

    /// The token and label `uri` names, to make issued certificates' keys in.
    pub fn keys(&self, uri: &Pkcs11Uri) -> Result<TokenKeys, ProvisioningError> {
        let open = || TokenKeys::open(uri, self.module.as_deref(), &self.pin()?);
        open().map_err(key_error)
    }
}

/// A device key's failure, as the provisioning error it is.
pub fn key_error(error: Pkcs11Error) -> ProvisioningError {
    ProvisioningError::Key(SignError::new(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_pin_names_both_ways_to_give_it() {
        let access = TokenAccess {
            module: None,
            pin_file: None,
        };
        // The test environment does not set the variable.
        if std::env::var_os(PIN_VAR).is_none() {
            let error = access.pin().unwrap_err();
            assert!(error.to_string().contains("--pin-file"), "{error}");
            assert!(error.to_string().contains(PIN_VAR), "{error}");
        }
        let missing = TokenAccess {
            pin_file: Some("/no/such/pin".into()),
            ..access
        };
        assert!(matches!(missing.pin(), Err(Pkcs11Error::PinUnreadable(_))));
    }
}
