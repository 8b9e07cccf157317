//! The client's rustls configuration, and keeping the real reason of a TLS failure.
//!
//! ntex-tls reports a failed handshake as a bare disconnect. Each connection therefore gets a
//! verifier that wraps the WebPKI verifier and keeps the error it returned, so the caller sees
//! "invalid peer certificate: UnknownIssuer", not "disconnected".

use std::sync::{Arc, Mutex, PoisonError};

use dps_messages::{ProvisioningError, TlsFailure, X509Identity};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::verify_cache::VerifyCache;

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
/// let platform = TrustRoots::platform();
/// // A test broker: its CA and nothing else.
/// # let test_ca_pem = String::new();
/// let test = TrustRoots::only_pem(test_ca_pem);
/// assert_eq!(public.to_string(), "the public web's roots");
/// assert_eq!(inspected.to_string(), "the public web's roots and 1 extra CA file");
/// # let _ = (platform, test);
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
    /// distribution's bundle, or the files `SSL_CERT_FILE` and `SSL_CERT_DIR` name).
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

    /// These roots and the operating system's.
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

/// What a connection's verifier saw go wrong, if anything, and the roots it had.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsErrorSlot {
    error: Arc<Mutex<Option<rustls::Error>>>,
    trusted: Arc<str>,
}

impl TlsErrorSlot {
    fn set(&self, error: rustls::Error) {
        *self.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
    }

    /// The error the verifier returned, if it failed.
    pub(crate) fn take(&self) -> Option<ProvisioningError> {
        let error = self
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        Some(self.failure(error))
    }

    /// `error` as the connection's TLS failure, naming the roots.
    pub(crate) fn failure(&self, error: rustls::Error) -> ProvisioningError {
        let trusted = Some(self.trusted.to_string()).filter(|t| !t.is_empty());
        ProvisioningError::Tls(Box::new(TlsFailure::new(error, trusted)))
    }
}

/// The shared verifier, keeping its error in a slot the connection can read.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<VerifyCache>,
    slot: TlsErrorSlot,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .inspect_err(|e| self.slot.set(e.clone()))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .verify_tls12_signature(message, cert, dss)
            .inspect_err(|e| self.slot.set(e.clone()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .verify_tls13_signature(message, cert, dss)
            .inspect_err(|e| self.slot.set(e.clone()))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The parts of a client configuration that every connection of a transport shares.
#[derive(Debug, Clone)]
pub(crate) struct TlsSetup {
    provider: Arc<CryptoProvider>,
    /// The WebPKI verifier behind a cache of the chains it accepted, shared by every connection
    /// of the transport (and of its clones).
    verifier: Arc<VerifyCache>,
    /// The roots, in words, for errors.
    trusted: Arc<str>,
}

impl TlsSetup {
    /// Builds the server verifier for `roots`.
    pub(crate) fn new(roots: &TrustRoots) -> Result<Self, ProvisioningError> {
        let provider = dps_messages::x509::shared_provider();
        let mut store = RootCertStore::empty();
        if roots.public_web {
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        if roots.platform {
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
        for pem in &roots.pems {
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
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
                .map_err(|e| bad_roots(e.to_string()))?;
        let verifier = Arc::new(VerifyCache::new(verifier));
        Ok(Self {
            provider,
            verifier,
            trusted: roots.to_string().into(),
        })
    }

    /// A configuration for one connection: TLS 1.2 or 1.3, the server verified, the device's
    /// certificate presented when it has one.
    pub(crate) fn client_config(
        &self,
        identity: Option<&X509Identity>,
    ) -> Result<(Arc<ClientConfig>, TlsErrorSlot), ProvisioningError> {
        let slot = TlsErrorSlot {
            error: Arc::default(),
            trusted: self.trusted.clone(),
        };
        let verifier = Arc::new(RecordingVerifier {
            inner: self.verifier.clone(),
            slot: slot.clone(),
        });
        let builder = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(ProvisioningError::from)?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match identity {
            Some(id) => builder.with_client_cert_resolver(id.client_cert_resolver()),
            None => builder.with_no_client_auth(),
        };
        // Each connection has a configuration of its own, so a session cache could never be
        // used again; rustls' default one would cost 14 KiB per connection for nothing.
        config.resumption = rustls::client::Resumption::disabled();
        Ok((Arc::new(config), slot))
    }
}

fn bad_roots(why: String) -> ProvisioningError {
    ProvisioningError::InvalidRequest(format!("unusable trust roots: {why}"))
}

/// The rustls error inside an IO error, if ntex kept one there.
pub(crate) fn rustls_error_in(error: &std::io::Error) -> Option<rustls::Error> {
    error_in::<rustls::Error>(error)
}

/// The error of type `T` inside an IO error (rustls', the proxy's), however deep ntex put it.
pub(crate) fn error_in<T>(error: &std::io::Error) -> Option<T>
where
    T: std::error::Error + Clone + 'static,
{
    let mut source: Option<&(dyn std::error::Error + 'static)> = error.get_ref().map(|e| e as _);
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found.clone());
        }
        // An io::Error's source() skips the error it wraps; look at that error itself.
        source = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => e.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_roots_load() {
        assert!(TlsSetup::new(&TrustRoots::public_web()).is_ok());
        assert!(TlsSetup::new(&TrustRoots::default()).is_ok());
    }

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
        assert!(TlsSetup::new(&none).is_err());
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
                    TlsSetup::new(&TrustRoots::only_pem(pem)),
                    Err(ProvisioningError::InvalidRequest(_))
                ),
                "{pem}"
            );
        }
    }

    #[test]
    fn finds_a_rustls_error_wrapped_in_io_errors() {
        let tls = rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls.clone());
        assert_eq!(rustls_error_in(&io), Some(tls.clone()));
        let outer = std::io::Error::other(io);
        assert_eq!(rustls_error_in(&outer), Some(tls));
        assert_eq!(rustls_error_in(&std::io::Error::other("plain")), None);
    }
}
