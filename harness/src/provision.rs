//! `dps provision`: provisions one device against real DPS or any endpoint.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dps_messages::{
    Authentication, IssuedIdentity, KeyCurve, Protocol, ProvisioningError, RegistrationRequest,
    RegistrationResult, SymmetricKey, X509Identity,
};
use dps_transport_actor::durable::{self, Readers};
use dps_transport_actor::{
    CertificateOptions, ClientOptions, Provisioned, TransportConfig, TrustRoots,
};

use crate::{proxy_env, setup};

/// What to provision, and how.
#[derive(Debug, Clone)]
pub struct ProvisionArgs {
    /// `HOST[:PORT]`.
    pub endpoint: String,
    /// The DPS id scope.
    pub id_scope: String,
    /// The device's registration id.
    pub registration_id: String,
    /// The device's credential.
    pub credential: Credential,
    /// A CA (PEM) to trust instead of any other roots.
    pub ca: Option<PathBuf>,
    /// Trust the operating system's store instead of the public web's roots.
    pub platform_roots: bool,
    /// CAs (PEM) to trust besides the public web's roots (or the platform's).
    pub extra_ca: Vec<PathBuf>,
    /// `--proxy URL`.
    pub proxy: Option<String>,
    /// `--no-proxy`: ignore `HTTPS_PROXY`.
    pub no_proxy: bool,
    /// MQTT over WebSocket instead of MQTT over TLS.
    pub websocket: bool,
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
}

/// A device credential given on the command line.
#[derive(Debug, Clone)]
pub enum Credential {
    /// Certificate chain and key files (PEM).
    X509 {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// An individual enrollment's key.
    SymmetricKey(String),
    /// A group enrollment's key; the device key is derived from the registration id.
    GroupKey(String),
}

impl Credential {
    fn load(&self, registration_id: &str) -> Result<Authentication, ProvisioningError> {
        Ok(match self {
            Credential::X509 { cert, key } => {
                let cert = setup::read(cert).map_err(ProvisioningError::InvalidRequest)?;
                let key = setup::read(key).map_err(ProvisioningError::InvalidRequest)?;
                X509Identity::from_pem(cert.as_bytes(), key.as_bytes())?.into()
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
    /// The key file (PEM, mode 0600).
    pub key: PathBuf,
    /// Whether it came from the cache rather than a registration.
    pub from_cache: bool,
}

/// The roots `--ca`, `--platform-roots` and `--extra-ca` ask for.
fn trust_roots(args: &ProvisionArgs) -> Result<TrustRoots, ProvisioningError> {
    let read = |path: &PathBuf| setup::read(path).map_err(ProvisioningError::InvalidRequest);
    let mut roots = match (&args.ca, args.platform_roots) {
        (Some(ca), _) => TrustRoots::only_pem(read(ca)?),
        (None, true) => TrustRoots::platform(),
        (None, false) => TrustRoots::public_web(),
    };
    for extra in &args.extra_ca {
        roots = roots.with_extra_pem(read(extra)?);
    }
    Ok(roots)
}

/// Provisions the device; the error says why not.
pub async fn run(args: ProvisionArgs) -> Result<ProvisionOutcome, ProvisioningError> {
    let protocol = if args.websocket {
        Protocol::MqttWs
    } else {
        Protocol::Mqtt
    };
    let mut builder = TransportConfig::builder(protocol);
    builder = builder.trust(trust_roots(&args)?);
    let uri = setup::endpoint_uri(&args.endpoint, protocol);
    let host = dps_messages::Endpoint::parse(&uri)?.host;
    let env = |name: &str| std::env::var(name).ok();
    if let Some(proxy) = proxy_env::choose(args.proxy.as_deref(), args.no_proxy, &host, env)? {
        tracing::info!(%proxy, "connecting through the proxy");
        builder = builder.proxy(proxy);
    }
    let auth = args.credential.load(&args.registration_id)?;
    let options = ClientOptions {
        deadline: args.timeout,
        cache_file: args.cache.clone(),
        force: args.force,
        ..ClientOptions::default()
    };
    let client = setup::client(builder.build()?, auth, options).await?;
    let mut request = RegistrationRequest::new(args.id_scope, args.registration_id.clone())
        .with_endpoint(setup::endpoint_uri(&args.endpoint, protocol));
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
    let options = CertificateOptions {
        curve: args.key_curve,
        ..CertificateOptions::default()
    };
    let Provisioned {
        result,
        certificate,
        from_cache,
    } = client.register_with_certificate(request, &options).await?;
    let certificate = match certificate {
        Some(identity) => Some(write_certificate(
            dir,
            &args.registration_id,
            identity,
            from_cache,
        )?),
        None => None,
    };
    Ok(ProvisionOutcome {
        result,
        certificate,
    })
}

/// Writes `<dir>/<id>.pem` (the chain) and `<dir>/<id>.key` (the key, owner-only), durably.
fn write_certificate(
    dir: &Path,
    registration_id: &str,
    identity: IssuedIdentity,
    from_cache: bool,
) -> Result<WrittenCertificate, ProvisioningError> {
    let chain = dir.join(format!("{registration_id}.pem"));
    let key = dir.join(format!("{registration_id}.key"));
    let write = |path: &Path, text: String, readers| {
        durable::write(path, text.as_bytes(), readers).map_err(|e| {
            ProvisioningError::InvalidRequest(format!("cannot write {}: {e}", path.display()))
        })
    };
    write(&key, identity.private_key_pem(), Readers::OwnerOnly)?;
    write(&chain, identity.chain_pem(), Readers::Anyone)?;
    Ok(WrittenCertificate {
        identity,
        chain,
        key,
        from_cache,
    })
}

/// The lines `dps provision --issue-cert` prints about the certificate.
pub fn certificate_summary(written: &WrittenCertificate) -> String {
    let leaf = written.identity.leaf();
    let origin = if written.from_cache {
        "cached, not yet due for renewal"
    } else {
        "issued"
    };
    format!(
        "certificate ({origin}): {}\n  subject {}\n  issuer  {}\n  expires {}\nkey: {} (owner only)",
        written.chain.display(),
        leaf.subject,
        leaf.issuer,
        leaf.not_after_text,
        written.key.display()
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
