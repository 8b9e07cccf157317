//! Which server certificates the transport trusts, and the root store it builds from them.

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use dps_messages::ProvisioningError;

/// Which server certificates the transport trusts: any of the public web's roots, the
/// operating system's store, and CA certificates of one's own, together.
///
/// ```
/// use dps_transport_actor::TrustRoots;
///
/// // Real DPS: the public web's roots (the default).
/// let public = TrustRoots::public_web();
/// // Behind a proxy that inspects TLS with a corporate root: that root too.
/// # let corporate_root_pem = String::new();
/// let inspected = TrustRoots::public_web().with_extra_pem(corporate_root_pem);
/// // The roots the operating system trusts (where an IT department installs theirs).
/// # #[cfg(feature = "platform-roots")]
/// let platform = TrustRoots::platform();
/// // A test broker: its CA and nothing else.
/// # let test_ca_pem = String::new();
/// let test = TrustRoots::only_pem(test_ca_pem);
/// assert_eq!(public.to_string(), "the public web's roots");
/// assert_eq!(inspected.to_string(), "the public web's roots and 1 extra CA file");
/// # #[cfg(feature = "platform-roots")]
/// # let _ = platform;
/// # let _ = test;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustRoots {
    public_web: bool,
    platform: bool,
    pems: Vec<String>,
}

impl TrustRoots {
    /// The public web's roots (Mozilla's list, from `webpki-roots`): what real DPS needs, and
    /// the default.
    pub fn public_web() -> Self {
        Self {
            public_web: true,
            platform: false,
            pems: Vec::new(),
        }
    }

    /// The operating system's trust store (read with `rustls-native-certs`: on Linux the
    /// distribution's bundle, or the files `SSL_CERT_FILE` and `SSL_CERT_DIR` name). Feature
    /// `platform-roots`.
    #[cfg(feature = "platform-roots")]
    pub fn platform() -> Self {
        Self {
            public_web: false,
            platform: true,
            pems: Vec::new(),
        }
    }

    /// Only the CA certificates in `pem` (a test broker's CA, say).
    pub fn only_pem(pem: impl Into<String>) -> Self {
        Self {
            public_web: false,
            platform: false,
            pems: vec![pem.into()],
        }
    }

    /// These roots and the public web's.
    pub fn with_public_web(mut self) -> Self {
        self.public_web = true;
        self
    }

    /// These roots and the operating system's. Feature `platform-roots`.
    #[cfg(feature = "platform-roots")]
    pub fn with_platform(mut self) -> Self {
        self.platform = true;
        self
    }

    /// These roots and the CA certificates in `pem` besides (a corporate root, a root the
    /// service migrates to).
    pub fn with_extra_pem(mut self, pem: impl Into<String>) -> Self {
        self.pems.push(pem.into());
        self
    }
}

impl Default for TrustRoots {
    /// [`TrustRoots::public_web`].
    fn default() -> Self {
        Self::public_web()
    }
}

impl std::fmt::Display for TrustRoots {
    /// The roots in words, as a refused certificate's error names them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if self.public_web {
            parts.push("the public web's roots".to_owned());
        }
        if self.platform {
            parts.push("the platform's trust store".to_owned());
        }
        let base = !parts.is_empty();
        match (self.pems.len(), base) {
            (0, _) => {}
            (1, true) => parts.push("1 extra CA file".to_owned()),
            (n, true) => parts.push(format!("{n} extra CA files")),
            (1, false) => parts.push("the given CA file".to_owned()),
            (n, false) => parts.push(format!("the {n} given CA files")),
        }
        if parts.is_empty() {
            return f.write_str("no roots");
        }
        let last = parts.pop().unwrap_or_default();
        match parts.is_empty() {
            true => f.write_str(&last),
            false => write!(f, "{} and {last}", parts.join(", ")),
        }
    }
}

impl TrustRoots {
    /// The roots as rustls takes them: every certificate of every source. Fails on a PEM with
    /// no certificate, an unreadable one, an empty platform store, or no roots at all.
    pub(crate) fn root_store(&self) -> Result<RootCertStore, ProvisioningError> {
        let mut store = RootCertStore::empty();
        if self.public_web {
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        #[cfg(feature = "platform-roots")]
        if self.platform {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                return Err(bad_roots(format!(
                    "the platform's trust store has no usable certificate{}",
                    if errors.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", errors.join("; "))
                    }
                )));
            }
        }
        for pem in &self.pems {
            let before = store.len();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| bad_roots(e.to_string()))?;
                store.add(cert).map_err(|e| bad_roots(e.to_string()))?;
            }
            if store.len() == before {
                return Err(bad_roots("no CERTIFICATE block found".into()));
            }
        }
        if store.is_empty() {
            return Err(bad_roots("no roots to trust".into()));
        }
        Ok(store)
    }
}

fn bad_roots(why: String) -> ProvisioningError {
    ProvisioningError::InvalidRequest(format!("unusable trust roots: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_named_as_an_error_names_them() {
        let pem = || "pem".to_owned();
        let cases = [
            (TrustRoots::public_web(), "the public web's roots"),
            (TrustRoots::platform(), "the platform's trust store"),
            (TrustRoots::only_pem(pem()), "the given CA file"),
            (
                TrustRoots::public_web().with_platform(),
                "the public web's roots and the platform's trust store",
            ),
            (
                TrustRoots::only_pem(pem()).with_extra_pem(pem()),
                "the 2 given CA files",
            ),
            (
                TrustRoots::public_web().with_extra_pem(pem()),
                "the public web's roots and 1 extra CA file",
            ),
            (
                TrustRoots::platform()
                    .with_public_web()
                    .with_extra_pem(pem())
                    .with_extra_pem(pem()),
                "the public web's roots, the platform's trust store and 2 extra CA files",
            ),
        ];
        for (roots, words) in cases {
            assert_eq!(roots.to_string(), words);
        }
        let none = TrustRoots {
            public_web: false,
            platform: false,
            pems: vec![],
        };
        assert_eq!(none.to_string(), "no roots");
        assert!(none.root_store().is_err());
    }

    #[test]
    fn unusable_pem_roots_are_an_error() {
        for pem in [
            "",
            "garbage",
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        ] {
            assert!(
                matches!(
                    TrustRoots::only_pem(pem).root_store(),
                    Err(ProvisioningError::InvalidRequest(_))
                ),
                "{pem}"
            );
        }
    }

    /// Each source adds its roots: a CA file its certificate, the public web's Mozilla's list,
    /// and both together both.
    #[test]
    fn each_source_adds_its_roots() {
        let ca = dps_mock_broker::TestPki::generate()
            .unwrap()
            .ca_pem()
            .to_owned();
        assert_eq!(
            TrustRoots::only_pem(ca.clone()).root_store().unwrap().len(),
            1
        );
        let public = TrustRoots::public_web().root_store().unwrap().len();
        assert!(public > 100, "{public}");
        let both = TrustRoots::public_web()
            .with_extra_pem(ca)
            .root_store()
            .unwrap();
        assert_eq!(both.len(), public + 1);
    }

    /// The platform's store is usable exactly when it holds a certificate (this machine's
    /// bundle, or the files `SSL_CERT_FILE` and `SSL_CERT_DIR` name).
    #[cfg(feature = "platform-roots")]
    #[test]
    fn the_platform_store_is_used_when_it_holds_certificates() {
        let found = rustls_native_certs::load_native_certs().certs.len();
        let store = TrustRoots::platform().root_store();
        assert_eq!(store.is_ok(), found > 0, "{found} certificates found");
        if let Ok(store) = store {
            assert!(!store.is_empty());
        }
    }
}
