//! `dps provision`: provisions one device against real DPS or any endpoint.

use std::path::PathBuf;
use std::time::Duration;

use dps_messages::{
    Authentication, Protocol, ProvisioningError, RegistrationRequest, RegistrationResult,
    SymmetricKey, X509Identity,
};
use dps_transport_actor::{ClientOptions, TransportConfig};

use crate::setup;

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
    /// A CA (PEM) to trust instead of the public web roots.
    pub ca: Option<PathBuf>,
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

/// Provisions the device; the error says why not.
pub async fn run(args: ProvisionArgs) -> Result<RegistrationResult, ProvisioningError> {
    let protocol = if args.websocket {
        Protocol::MqttWs
    } else {
        Protocol::Mqtt
    };
    let mut builder = TransportConfig::builder(protocol);
    if let Some(ca) = &args.ca {
        builder = builder.ca_pem(setup::read(ca).map_err(ProvisioningError::InvalidRequest)?);
    }
    let auth = args.credential.load(&args.registration_id)?;
    let options = ClientOptions {
        deadline: args.timeout,
        cache_file: args.cache.clone(),
        force: args.force,
        ..ClientOptions::default()
    };
    let client = setup::client(builder.build()?, auth, options).await?;
    let mut request = RegistrationRequest::new(args.id_scope, args.registration_id)
        .with_endpoint(setup::endpoint_uri(&args.endpoint, protocol));
    if let Some(payload) = args.payload {
        request = request.with_payload(payload);
    }
    client.register(request).await
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
