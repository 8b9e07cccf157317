//! The token's PIN: a secret, read from a file or the environment, never from a command line,
//! never logged, never in a `Debug`.

use std::fmt;
use std::path::Path;

use cryptoki::types::AuthPin;

use super::Pkcs11Error;

/// A token's user PIN.
///
/// ```
/// use dps_transport_actor::pkcs11::Pin;
/// let pin = Pin::new("1234").unwrap();
/// assert_eq!(format!("{pin:?}"), "Pin(<redacted>)");
/// ```
#[derive(Clone)]
pub struct Pin(AuthPin);

impl Pin {
    /// A PIN given as text (from a prompt, a secret store). Surrounding whitespace and a final
    /// newline are not part of it; an empty PIN is [`Pkcs11Error::PinUnreadable`].
    pub fn new(pin: impl Into<String>) -> Result<Self, Pkcs11Error> {
        let pin = pin.into();
        let trimmed = pin.trim();
        if trimmed.is_empty() {
            return Err(Pkcs11Error::PinUnreadable("the PIN is empty".into()));
        }
        Ok(Self(AuthPin::from(trimmed.to_owned())))
    }

    /// The PIN in a file (its first line), for a file readable by the device's user alone.
    pub fn from_file(path: &Path) -> Result<Self, Pkcs11Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Pkcs11Error::PinUnreadable(format!("{}: {e}", path.display())))?;
        Self::new(text.lines().next().unwrap_or_default())
            .map_err(|_| Pkcs11Error::PinUnreadable(format!("{} is empty", path.display())))
    }

    /// The PIN in the environment variable `name` (`DPS_PKCS11_PIN` for the `dps` command);
    /// `None` when it is not set.
    pub fn from_env(name: &str) -> Option<Result<Self, Pkcs11Error>> {
        let value = std::env::var_os(name)?;
        Some(match value.into_string() {
            Ok(text) => {
                Self::new(text).map_err(|_| Pkcs11Error::PinUnreadable(format!("${name} is empty")))
            }
            Err(_) => Err(Pkcs11Error::PinUnreadable(format!("${name} is not UTF-8"))),
        })
    }

    pub(super) fn auth(&self) -> &AuthPin {
        &self.0
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_file_gives_its_first_line_and_an_empty_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("dps-pin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pin");
        std::fs::write(&file, "4711\nnot the pin\n").unwrap();
        assert!(Pin::from_file(&file).is_ok());
        std::fs::write(&file, "\n4711\n").unwrap();
        let empty = Pin::from_file(&file).unwrap_err();
        assert!(matches!(&empty, Pkcs11Error::PinUnreadable(why) if why.contains("is empty")));
        let missing = Pin::from_file(&dir.join("none")).unwrap_err();
        assert!(matches!(missing, Pkcs11Error::PinUnreadable(_)));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(Pin::new("  ").is_err());
    }

    #[test]
    fn a_pin_is_never_shown() {
        let pin = Pin::new("4711").unwrap();
        assert_eq!(format!("{pin:?}"), "Pin(<redacted>)");
        assert!(Pin::from_env("DPS_TEST_NO_SUCH_VARIABLE").is_none());
    }
}
