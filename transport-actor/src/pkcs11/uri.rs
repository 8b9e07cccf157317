//! RFC 7512 PKCS#11 URIs: how a key in a token is named, on a command line, in a device line
//! of a fleet, and in the assignment cache instead of key bytes.
//!
//! `pkcs11:token=gw;object=device-key;type=private` names the private key labelled
//! `device-key` in the token labelled `gw`. The attributes a key needs are read (`token`,
//! `object`, `id`, `type`, `serial`, and `module-path` in the query); the descriptive ones
//! (`manufacturer`, `model`, `library-*`, `slot-*`) are accepted and not matched; any other is
//! an error, and so is a PIN (`pin-value`, `pin-source`): a PIN is never part of a name.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::Pkcs11Error;

/// A parsed PKCS#11 URI naming a key.
///
/// ```
/// use dps_transport_actor::pkcs11::Pkcs11Uri;
/// let uri: Pkcs11Uri = "pkcs11:token=gw;object=device%20key;id=%01%ff".parse()?;
/// assert_eq!(uri.token.as_deref(), Some("gw"));
/// assert_eq!(uri.object.as_deref(), Some("device key"));
/// assert_eq!(uri.id.as_deref(), Some(&[1, 255][..]));
/// assert_eq!(uri.to_string(), "pkcs11:token=gw;object=device%20key;id=%01%FF");
/// # Ok::<(), dps_transport_actor::pkcs11::Pkcs11Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Pkcs11Uri {
    /// The token's label (`token=`).
    pub token: Option<String>,
    /// The token's serial number (`serial=`).
    pub serial: Option<String>,
    /// The key's label (`CKA_LABEL`, `object=`).
    pub object: Option<String>,
    /// The key's id (`CKA_ID`, `id=`, percent-encoded bytes).
    pub id: Option<Vec<u8>>,
    /// The module to load (`?module-path=`), when the URI says.
    pub module_path: Option<PathBuf>,
}

impl Pkcs11Uri {
    /// Whether `text` is meant as a PKCS#11 URI (rather than a file path).
    pub fn is_uri(text: &str) -> bool {
        text.get(..7)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("pkcs11:"))
    }

    /// The module the URI names, or else `fallback` (an option, the environment);
    /// [`Pkcs11Error::NoModule`] when neither says.
    pub(super) fn module_or<'a>(
        &'a self,
        fallback: Option<&'a Path>,
    ) -> Result<&'a Path, Pkcs11Error> {
        self.module_path
            .as_deref()
            .or(fallback)
            .ok_or_else(|| Pkcs11Error::NoModule {
                uri: self.to_string(),
            })
    }
}

impl FromStr for Pkcs11Uri {
    type Err = Pkcs11Error;

    fn from_str(text: &str) -> Result<Self, Pkcs11Error> {
        let bad = |reason: String| Pkcs11Error::BadUri {
            // A PIN in the text is not repeated in the error.
            uri: match text.find("pin-") {
                Some(at) => format!("{}…", &text[..at]),
                None => text.to_owned(),
            },
            reason,
        };
        if !Self::is_uri(text) {
            return Err(bad("it does not start with `pkcs11:`".into()));
        }
        let (path, query) = match text[7..].split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (&text[7..], None),
        };
        let mut uri = Pkcs11Uri::default();
        for attribute in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attribute
                .split_once('=')
                .ok_or_else(|| bad(format!("`{attribute}` has no `=`")))?;
            let bytes = percent_decode(value).map_err(|e| bad(format!("{name}: {e}")))?;
            let text_value = || {
                String::from_utf8(bytes.clone()).map_err(|_| bad(format!("{name} is not UTF-8")))
            };
            match name {
                "token" => uri.token = Some(text_value()?),
                "serial" => uri.serial = Some(text_value()?),
                "object" => uri.object = Some(text_value()?),
                "id" => uri.id = Some(bytes),
                "type" => match text_value()?.as_str() {
                    // The private key is what signs; `cert` and `public` name its companions,
                    // found by the same label and id.
                    "private" | "public" | "cert" => {}
                    other => return Err(bad(format!("type={other} is not a key"))),
                },
                "manufacturer"
                | "model"
                | "library-manufacturer"
                | "library-description"
                | "library-version"
                | "slot-description"
                | "slot-manufacturer"
                | "slot-id" => {}
                other => return Err(bad(format!("unknown attribute `{other}`"))),
            }
        }
        for attribute in query.into_iter().flat_map(|q| q.split('&')) {
            let (name, value) = attribute.split_once('=').unwrap_or((attribute, ""));
            match name {
                "module-path" => {
                    let bytes = percent_decode(value).map_err(|e| bad(format!("{name}: {e}")))?;
                    let path = String::from_utf8(bytes)
                        .map_err(|_| bad("module-path is not UTF-8".into()))?;
                    uri.module_path = Some(PathBuf::from(path));
                }
                "pin-value" | "pin-source" => {
                    return Err(bad(
                        "a PIN is not part of a key's name: give it by --pin-file or \
                         DPS_PKCS11_PIN"
                            .into(),
                    ));
                }
                "module-name" | "" => {}
                other => return Err(bad(format!("unknown query attribute `{other}`"))),
            }
        }
        if uri.object.is_none() && uri.id.is_none() {
            return Err(bad("it names no key: add `object=<label>` or `id=`".into()));
        }
        Ok(uri)
    }
}

impl fmt::Display for Pkcs11Uri {
    /// The canonical form: `token`, `serial`, `object`, `id` (each byte percent-encoded, as
    /// RFC 7512 writes ids), then the module path in the query.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = |name: &str, value: &Option<String>| {
            value
                .as_ref()
                .map(|v| format!("{name}={}", percent_encode(v.as_bytes())))
        };
        let id = self.id.as_ref().map(|id| {
            let hex: String = id.iter().map(|b| format!("%{b:02X}")).collect();
            format!("id={hex}")
        });
        let path: Vec<String> = [
            text("token", &self.token),
            text("serial", &self.serial),
            text("object", &self.object),
            id,
        ]
        .into_iter()
        .flatten()
        .collect();
        write!(f, "pkcs11:{}", path.join(";"))?;
        if let Some(module) = &self.module_path {
            let module = percent_encode(module.to_string_lossy().as_bytes());
            write!(f, "?module-path={module}")?;
        }
        Ok(())
    }
}

/// RFC 3986 unreserved characters and those RFC 7512 allows unescaped in a value.
fn percent_encode(value: &[u8]) -> String {
    value
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~:[]@!$'()*+,/".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn percent_decode(value: &str) -> Result<Vec<u8>, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = bytes
                .get(at + 1..at + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape at byte {at}"))?;
            out.push(hex);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_attributes_a_key_needs_and_writes_them_back() {
        let uri: Pkcs11Uri =
            "pkcs11:model=SoftHSM%20v2;token=gw;serial=1a2b;object=device-key;type=private\
             ?module-path=/usr/lib/softhsm/libsofthsm2.so"
                .parse()
                .unwrap();
        assert_eq!(uri.token.as_deref(), Some("gw"));
        assert_eq!(uri.serial.as_deref(), Some("1a2b"));
        assert_eq!(uri.object.as_deref(), Some("device-key"));
        assert_eq!(uri.id, None);
        assert_eq!(
            uri.module_path,
            Some(PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"))
        );
        assert_eq!(
            uri.to_string(),
            "pkcs11:token=gw;serial=1a2b;object=device-key\
             ?module-path=/usr/lib/softhsm/libsofthsm2.so"
        );
        assert_eq!(uri.to_string().parse::<Pkcs11Uri>().unwrap(), uri);
        let by_id: Pkcs11Uri = "PKCS11:id=%00%7f".parse().unwrap();
        assert_eq!(by_id.id, Some(vec![0, 0x7f]));
        assert_eq!(by_id.to_string(), "pkcs11:id=%00%7F");
    }

    #[test]
    fn a_pin_in_a_uri_is_refused_and_not_repeated() {
        for text in [
            "pkcs11:token=gw;object=k?pin-value=123456",
            "pkcs11:token=gw;object=k?pin-source=file:/pin",
        ] {
            let error = text.parse::<Pkcs11Uri>().unwrap_err();
            let shown = error.to_string();
            assert!(matches!(error, Pkcs11Error::BadUri { .. }));
            assert!(
                !shown.contains("123456") && !shown.contains("/pin"),
                "{shown}"
            );
            assert!(shown.contains("DPS_PKCS11_PIN"), "{shown}");
        }
    }

    #[test]
    fn what_is_not_a_key_uri_is_a_typed_error() {
        for (text, why) in [
            ("/etc/device.key", "pkcs11:"),
            ("pkcs11:token=gw", "names no key"),
            ("pkcs11:token=gw;object", "no `=`"),
            ("pkcs11:object=k;type=secret-key", "not a key"),
            ("pkcs11:object=k;colour=red", "unknown attribute"),
            ("pkcs11:object=k%zz", "percent escape"),
            ("pkcs11:object=k%f", "percent escape"),
            ("pkcs11:object=%ff", "UTF-8"),
            ("pkcs11:object=k?flavour=1", "unknown query"),
        ] {
            let error = text.parse::<Pkcs11Uri>().unwrap_err();
            assert!(error.to_string().contains(why), "{text}: {error}");
        }
        assert!(Pkcs11Uri::is_uri("pkcs11:object=k"));
        assert!(!Pkcs11Uri::is_uri("pkcs1"));
    }
}
