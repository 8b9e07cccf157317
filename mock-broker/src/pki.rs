//! A test PKI made with rcgen: a CA, a server certificate for `localhost` and `127.0.0.1`, and
//! device certificates whose CN is their registration id.

use std::fmt;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate and its private key, both PEM. `Debug` hides the key.
#[derive(Clone)]
pub struct CertifiedPem {
    /// The certificate (chain), PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
}

impl fmt::Debug for CertifiedPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertifiedPem")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A certificate authority that signs the server's and the devices' certificates.
pub struct TestPki {
    ca_cert_pem: String,
    ca_key_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificates above the leaf a device sends with its own: empty for a root CA,
    /// the intermediate (and those above it) for one made by [`TestPki::intermediate`].
    chain_pem: String,
    /// The server certificate (for `localhost` and `127.0.0.1`) and key.
    pub server: CertifiedPem,
}

/// A certificate could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// An existing CA certificate or key cannot be used.
    #[error("unusable CA: {0}")]
    BadCa(String),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl TestPki {
    /// A fresh CA named `dps-mock-broker test CA <random>` and a server certificate it signed.
    /// The random part keeps two test CAs apart: certificate chains are built by name.
    pub fn generate() -> Result<Self, PkiError> {
        let ca_key = KeyPair::generate()?;
        let ca = ca_params("dps-mock-broker test CA")?;
        let ca_cert_pem = ca.self_signed(&ca_key)?.pem();
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = Issuer::new(ca, ca_key);
        Self::with_issuer(ca_cert_pem, ca_key_pem, issuer, String::new())
    }

    /// An intermediate CA this CA signs, as a PKI of its own: its [`ca_pem`](Self::ca_pem) is
    /// the intermediate, its devices' certificates are signed by it, and
    /// [`device_with_chain`](Self::device_with_chain) adds the intermediate to what a device
    /// sends. For enrollment groups on an intermediate CA.
    pub fn intermediate(&self) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let params = ca_params("dps-mock-broker test intermediate CA")?;
        let cert_pem = params.signed_by(&key, &self.issuer)?.pem();
        let key_pem = key.serialize_pem();
        let issuer = Issuer::new(params, key);
        let chain_pem = format!("{cert_pem}{}", self.chain_pem);
        Self::with_issuer(cert_pem, key_pem, issuer, chain_pem)
    }

    /// A PKI around an existing CA (PEM certificate and a PKCS#8, SEC1 or PKCS#1 key), e.g.
    /// one written by [`TestPki::write_to`], so that another process can sign device
    /// certificates that chain to the CA a broker trusts.
    pub fn from_ca_pem(ca_cert_pem: &str, ca_key_pem: &str) -> Result<Self, PkiError> {
        let key = dps_messages::certificate::key_pair_from_pem(ca_key_pem)
            .map_err(|e| PkiError::BadCa(e.to_string()))?;
        let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, key)
            .map_err(|e| PkiError::BadCa(e.to_string()))?;
        Self::with_issuer(
            ca_cert_pem.to_owned(),
            ca_key_pem.to_owned(),
            issuer,
            String::new(),
        )
    }

    fn with_issuer(
        ca_cert_pem: String,
        ca_key_pem: String,
        issuer: Issuer<'static, KeyPair>,
        chain_pem: String,
    ) -> Result<Self, PkiError> {
        let server_key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = params.signed_by(&server_key, &issuer)?;
        let server = CertifiedPem {
            cert_pem: server_cert.pem(),
            key_pem: server_key.serialize_pem(),
        };
        Ok(Self {
            ca_cert_pem,
            ca_key_pem,
            issuer,
            chain_pem,
            server,
        })
    }

    /// The CA certificate, PEM: what clients trust and what the broker checks devices against.
    pub fn ca_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// A device certificate whose subject CN is `registration_id`, signed by the CA.
    pub fn device(&self, registration_id: &str) -> Result<CertifiedPem, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, registration_id);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertifiedPem {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// [`device`](Self::device) with the CA certificates above the leaf appended (none for a
    /// root CA; the intermediate for one made by [`TestPki::intermediate`]): the chain a
    /// device sends in its handshake.
    pub fn device_with_chain(&self, registration_id: &str) -> Result<CertifiedPem, PkiError> {
        let mut device = self.device(registration_id)?;
        device.cert_pem.push_str(&self.chain_pem);
        Ok(device)
    }

    /// A device certificate (PEM) whose subject CN is `registration_id`, signed by the CA, for
    /// a key the test does not hold: `public_key` is its `SubjectPublicKeyInfo` (DER), e.g. of
    /// a key in a PKCS#11 token.
    pub fn certify(&self, registration_id: &str, public_key: &[u8]) -> Result<String, PkiError> {
        let key = rcgen::SubjectPublicKeyInfo::from_der(public_key)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, registration_id);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        Ok(params.signed_by(&key, &self.issuer)?.pem())
    }

    /// Writes `ca.pem`, `ca.key`, `server.pem`, `server.key`, and `<id>.pem` / `<id>.key` for
    /// each device into `dir` (created if missing).
    pub fn write_to(&self, dir: &Path, registration_ids: &[String]) -> Result<(), PkiError> {
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            // Private keys are created readable by their owner only.
            #[cfg(unix)]
            if name.ends_with(".key") {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            options
                .open(&path)
                .and_then(|mut file| std::io::Write::write_all(&mut file, text.as_bytes()))
                .map_err(|source| PkiError::Write {
                    path: path.display().to_string(),
                    source,
                })
        };
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Write {
            path: dir.display().to_string(),
            source,
        })?;
        write("ca.pem", &self.ca_cert_pem)?;
        write("ca.key", &self.ca_key_pem)?;
        write("server.pem", &self.server.cert_pem)?;
        write("server.key", &self.server.key_pem)?;
        for id in registration_ids {
            let device = self.device(id)?;
            write(&format!("{id}.pem"), &device.cert_pem)?;
            write(&format!("{id}.key"), &device.key_pem)?;
        }
        Ok(())
    }
}

/// A CA's parameters, its name made unique: certificate chains are built by name.
fn ca_params(name: &str) -> Result<CertificateParams, PkiError> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    ca.distinguished_name
        .push(DnType::CommonName, format!("{name} {tag}"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(ca)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dps_messages::X509Identity;

    #[test]
    fn device_certificates_carry_the_registration_id_and_load_as_identities() {
        let pki = TestPki::generate().unwrap();
        let device = pki.device("dev-7").unwrap();
        let identity =
            X509Identity::from_pem(device.cert_pem.as_bytes(), device.key_pem.as_bytes()).unwrap();
        let cn = crate::x509::subject_common_name(identity.cert_chain()[0].as_ref());
        assert_eq!(cn.as_deref(), Some("dev-7"));
        assert!(!format!("{device:?}").contains("PRIVATE"));
    }

    #[test]
    fn a_reloaded_ca_signs_certificates_that_chain_to_the_original() {
        let original = TestPki::generate().unwrap();
        let reloaded = TestPki::from_ca_pem(original.ca_pem(), &original.ca_key_pem).unwrap();
        let device = reloaded.device("dev-9").unwrap();
        // Verify the device chain with the original CA as the only root.
        let verifier = {
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(
                    rustls::pki_types::CertificateDer::from_pem_slice(original.ca_pem().as_bytes())
                        .unwrap(),
                )
                .unwrap();
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                std::sync::Arc::new(roots),
                crate::tls::provider(),
            )
            .build()
            .unwrap()
        };
        use rustls::pki_types::pem::PemObject;
        let leaf =
            rustls::pki_types::CertificateDer::from_pem_slice(device.cert_pem.as_bytes()).unwrap();
        let now = rustls::pki_types::UnixTime::now();
        verifier.verify_client_cert(&leaf, &[], now).unwrap();
        assert!(TestPki::from_ca_pem("garbage", "garbage").is_err());
    }

    #[test]
    fn writes_every_file() {
        let dir = std::env::temp_dir().join(format!("dps-pki-test-{}", std::process::id()));
        TestPki::generate()
            .unwrap()
            .write_to(&dir, &["a".into(), "b".into()])
            .unwrap();
        for name in [
            "ca.pem",
            "server.pem",
            "server.key",
            "a.pem",
            "a.key",
            "b.pem",
            "b.key",
        ] {
            assert!(dir.join(name).is_file(), "{name}");
            #[cfg(unix)]
            if name.ends_with(".key") {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(dir.join(name))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o077, 0, "{name} is readable by others");
            }
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
