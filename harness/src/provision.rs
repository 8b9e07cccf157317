//! `dps provision`: provisions one device against real DPS or any endpoint.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dps_messages::certificate::KeyCurve;
use dps_messages::{
    Authentication, IssuedIdentity, ProvisioningError, RegistrationRequest, RegistrationResult,
    SymmetricKey, X509Identity,
};
use dps_transport_actor::pkcs11::Pkcs11Uri;
use dps_transport_actor::{CertificateOptions, ClientOptions, Provisioned, ProvisioningClient};

use crate::connection::Connection;
use crate::setup;
use crate::token::TokenAccess;

/// What to provision, and how.
#[derive(Debug, Clone)]
pub struct ProvisionArgs {
    /// How to reach the service.
    pub connection: Connection,
    /// The DPS id scope.
    pub id_scope: String,
    /// The device's registration id.
    pub registration_id: String,
    /// The device's credential.
    pub credential: Credential,
    /// Custom allocation data.
    pub payload: Option<serde_json::Value>,
    /// The overall deadline.
    pub timeout: Duration,
    /// Where to cache the assignment.
    pub cache: Option<PathBuf>,
    /// Provision even when cached.
    pub force: bool,
    /// Ask the service for a certificate, and write it (`<id>.pem`) and its key (`<id>.key`)
    /// into this folder.
    pub issue_cert: Option<PathBuf>,
    /// The curve of the key made for the certificate.
    pub key_curve: KeyCurve,
    /// Make the certificate's key in this token, with this label (`object=`), instead of
    /// in memory: the key stays there, and no key file is written.
    pub issue_key: Option<Pkcs11Uri>,
    /// How to reach a token (`issue_key`'s, or the device key's).
    pub token: TokenAccess,
}

/// A device credential given on the command line.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A certificate chain file (PEM) and its key.
    X509 {
        /// The certificate file.
        cert: PathBuf,
        /// The key: a file, or a key in a token.
        key: DeviceKey,
    },
    /// An individual enrollment's key.
    SymmetricKey(String),
    /// A group enrollment's key; the device key is derived from the registration id.
    GroupKey(String),
}

/// Where an X.509 device's private key is.
#[derive(Debug, Clone)]
pub enum DeviceKey {
    /// A PEM file.
    File(PathBuf),
    /// A key in a PKCS#11 token, named by its URI, reached as `access` says.
    Token(Pkcs11Uri, TokenAccess),
}

impl DeviceKey {
    /// `text` as a key: a `pkcs11:` URI, or else a file's path.
    pub fn parse(text: &Path, access: &TokenAccess) -> Result<Self, String> {
        match text.to_str().filter(|t| Pkcs11Uri::is_uri(t)) {
            Some(uri) => Ok(Self::Token(
                uri.parse()
                    .map_err(|e: dps_transport_actor::pkcs11::Pkcs11Error| e.to_string())?,
                access.clone(),
            )),
            None => Ok(Self::File(text.to_owned())),
        }
    }
}

impl Credential {
    /// The credential of `registration_id`, its files read (`dps fleet` loads each device's
    /// this way too).
    pub fn load(&self, registration_id: &str) -> Result<Authentication, ProvisioningError> {
        Ok(match self {
            Credential::X509 { cert, key } => {
                let cert = setup::read(cert).map_err(ProvisioningError::InvalidRequest)?;
                match key {
                    DeviceKey::File(key) => {
                        let key = setup::read(key).map_err(ProvisioningError::InvalidRequest)?;
                        X509Identity::from_pem(cert.as_bytes(), key.as_bytes())?.into()
                    }
                    DeviceKey::Token(uri, access) => {
                        let key = access.key(uri)?;
                        X509Identity::from_pem_and_signer(cert.as_bytes(), key)?.into()
                    }
                }
            }
            Credential::SymmetricKey(key) => SymmetricKey::new(key.clone())?.into(),
            Credential::GroupKey(key) => SymmetricKey::from_group_key(key, registration_id)?.into(),
        })
    }
}

/// What `dps provision` got: the assignment, and the certificate it was issued if it asked.
#[derive(Debug)]
pub struct ProvisionOutcome {
    /// The assignment.
    pub result: RegistrationResult,
    /// With `--issue-cert`: the certificate and where it was written.
    pub certificate: Option<WrittenCertificate>,
}

/// An issued certificate written to files.
#[derive(Debug)]
pub struct WrittenCertificate {
    /// The chain and key.
    pub identity: IssuedIdentity,
    /// The chain file (PEM).
    pub chain: PathBuf,
    /// The key file (PEM, mode 0600); `None` for a key in a token.
    pub key: Option<PathBuf>,
    /// Whether it came from the cache rather than a registration.
    pub from_cache: bool,
}

/// Provisions the device; the error says why not.
pub async fn run(args: ProvisionArgs) -> Result<ProvisionOutcome, ProvisioningError> {
    let builder = args.connection.transport()?;
    let auth = args.credential.load(&args.registration_id)?;
    let options = ClientOptions {
        deadline: args.timeout,
        cache_file: args.cache.clone(),
        force: args.force,
        ..ClientOptions::default()
    };
    let client = ProvisioningClient::start(builder.build()?, auth, options)?;
    let mut request = RegistrationRequest::new(args.id_scope, args.registration_id.clone())
        .with_endpoint(args.connection.endpoint_uri());
    if let Some(payload) = args.payload {
        request = request.with_payload(payload);
    }
    let Some(dir) = &args.issue_cert else {
        let result = client.register(request).await?;
        return Ok(ProvisionOutcome {
            result,
            certificate: None,
        });
    };
    // A folder that cannot be made is a local mistake: say so before provisioning.
    std::fs::create_dir_all(dir).map_err(|e| {
        ProvisioningError::InvalidRequest(format!("cannot create {}: {e}", dir.display()))
    })?;
    let token_keys = match &args.issue_key {
        Some(uri) => Some(args.token.keys(uri)?),
        None => None,
    };
    let options = CertificateOptions {
        curve: args.key_curve,
        token_keys,
        ..CertificateOptions::default()
    };
    let provisioned = client.register_with_certificate(request, &options).await?;
    let certificate = write_certificate(dir, &args.registration_id, &provisioned)?;
    Ok(ProvisionOutcome {
        result: provisioned.result,
        certificate,
    })
}

/// Writes `<dir>/<id>.pem` (the chain) and `<dir>/<id>.key` (the key, owner-only; not for a
/// key in a token), durably; `None` when no certificate was issued.
fn write_certificate(
    dir: &Path,
    registration_id: &str,
    provisioned: &Provisioned,
) -> Result<Option<WrittenCertificate>, ProvisioningError> {
    let Some(identity) = &provisioned.certificate else {
        return Ok(None);
    };
    let chain = dir.join(format!("{registration_id}.pem"));
    let key = dir.join(format!("{registration_id}.key"));
    provisioned.write_pem(&chain, &key).map_err(|e| {
        ProvisioningError::InvalidRequest(format!(
            "cannot write {} and {}: {e}",
            chain.display(),
            key.display()
        ))
    })?;
    Ok(Some(WrittenCertificate {
        identity: identity.clone(),
        chain,
        key: identity.private_key_pem().map(|_| key),
        from_cache: provisioned.from_cache,
    }))
}

/// The lines `dps provision --issue-cert` prints about the certificate.
pub fn certificate_summary(written: &WrittenCertificate) -> String {
    let leaf = written.identity.leaf();
    let origin = if written.from_cache {
        "cached, not yet due for renewal"
    } else {
        "issued"
    };
    let key = match (&written.key, written.identity.identity().signer()) {
        (Some(file), _) => format!("{} (owner only)", file.display()),
        (None, Some(signer)) => format!(
            "{} (in the token)",
            signer.locator().unwrap_or_else(|| "held elsewhere".into())
        ),
        (None, None) => "not written".into(),
    };
    format!(
        "certificate ({origin}): {}\n  subject {}\n  issuer  {}\n  expires {}\nkey: {key}",
        written.chain.display(),
        leaf.subject,
        leaf.issuer,
        leaf.not_after_text,
    )
}

/// The one-paragraph human summary of an assignment.
pub fn summary(registration_id: &str, result: &RegistrationResult) -> String {
    let state = result.registration_state.clone().unwrap_or_default();
    let mut text = format!(
        "{registration_id} is assigned to {} as device {}",
        state.assigned_hub.as_deref().unwrap_or("?"),
        state.device_id.as_deref().unwrap_or("?")
    );
    if let Some(sub) = &state.substatus {
        text.push_str(&format!(" ({sub})"));
    }
    if let Some(payload) = &state.payload {
        text.push_str(&format!("\npayload: {payload}"));
    }
    text
}
