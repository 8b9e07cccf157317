//! The MQTT CONNECT of a DPS device, made in one place: endpoint, clientId, username, clean
//! session, keep-alive, and the credential (a client certificate or a SAS token).

mod endpoint;

use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use self::endpoint::{Endpoint, Protocol, WEBSOCKET_PATH, WEBSOCKET_SUBPROTOCOL};
use crate::api_version::ApiVersion;
use crate::auth::Authentication;
use crate::encoding::{HexCase, percent_encode};
use crate::error::ProvisioningError;
use crate::request::RegistrationRequest;
use crate::x509::X509Identity;

/// The user agent sent in the username's `ClientVersion`: this crate, its version and the
/// platform, as the Azure SDKs do.
fn user_agent() -> String {
    format!(
        "{}/{} (rust; {}; {})",
        env!("CARGO_PKG_NAME"),
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// How a transport connects, whatever the device: the settings a [`ConnectParams`] is made
/// with besides the request and the credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectOptions {
    /// MQTT over TLS or over WebSocket; a request's endpoint must say the same.
    pub protocol: Protocol,
    /// The MQTT keep-alive; whole seconds, at most 65,535, zero for none.
    pub keep_alive: Duration,
    /// How long a symmetric-key device's SAS token is valid from the moment it is made.
    pub sas_token_ttl: Duration,
}

/// How a device proves who it is in its CONNECT.
#[derive(Clone)]
pub enum Credential {
    /// A client certificate, presented in the TLS handshake; the CONNECT has no password.
    Certificate(X509Identity),
    /// A SAS token, sent as the MQTT password (SRS 18_001's symmetric-key half). `Debug`
    /// never shows it.
    SasToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Certificate(identity) => f.debug_tuple("Certificate").field(identity).finish(),
            Self::SasToken(_) => f.write_str("SasToken(<redacted>)"),
        }
    }
}

/// A DPS device's whole MQTT CONNECT: where to connect, the clientId and username, and the
/// credential, made in one place ([`ConnectParams::new`]) from the request, the credentials
/// and the time.
#[derive(Debug, Clone)]
pub struct ConnectParams {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// The MQTT clientId: the registration id (SRS 18_035).
    pub client_id: String,
    /// `<idScope>/registrations/<registrationId>/api-version=<version>&ClientVersion=<ua>`
    /// (SRS 18_038); the version is the request's
    /// [`api_version`](RegistrationRequest::api_version).
    pub username: String,
    /// The certificate for the TLS handshake, or the SAS token for the password.
    pub credential: Credential,
    /// Always true: DPS keeps no session (SRS 18_036).
    pub clean_session: bool,
    /// The keep-alive in whole seconds; 0 for none.
    pub keep_alive: u16,
}

impl ConnectParams {
    /// The CONNECT of `request`'s device with `auth`, over `options.protocol`: the request's
    /// endpoint, when set, replaces the host-derived one (SRS 18_039) and must be of the same
    /// protocol ([`ProvisioningError::EndpointMismatch`]); a SAS token is valid from `now` for
    /// `options.sas_token_ttl`.
    pub fn new(
        options: &ConnectOptions,
        request: &RegistrationRequest,
        auth: &Authentication,
        now: SystemTime,
    ) -> Result<Self, ProvisioningError> {
        request.validate()?;
        let endpoint = match &request.endpoint {
            Some(uri) => {
                let endpoint = Endpoint::parse(uri)?;
                if endpoint.protocol != options.protocol {
                    return Err(ProvisioningError::EndpointMismatch {
                        configured: options.protocol,
                        endpoint: uri.clone(),
                    });
                }
                endpoint
            }
            None => Endpoint::for_host(options.protocol, &request.provisioning_host)?,
        };
        let credential = match auth {
            Authentication::X509(identity) => Credential::Certificate(identity.clone()),
            Authentication::SymmetricKey(key) => {
                let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
                let expiry = (since_epoch + options.sas_token_ttl).as_secs();
                let token = key.sas_token(&request.id_scope, &request.registration_id, expiry);
                Credential::SasToken(token.to_string())
            }
        };
        let api_version = request.api_version();
        Ok(Self {
            endpoint,
            client_id: request.registration_id.clone(),
            username: username(&request.id_scope, &request.registration_id, &api_version),
            credential,
            clean_session: true,
            keep_alive: u16::try_from(options.keep_alive.as_secs()).unwrap_or(u16::MAX),
        })
    }

    /// Whether a connection opened with `self` serves a request that would connect with
    /// `other`: the same device at the same endpoint, announcing the same version. The
    /// credential is not compared: a SAS token made later differs and still names the device.
    pub fn same_connection(&self, other: &ConnectParams) -> bool {
        self.endpoint == other.endpoint
            && self.client_id == other.client_id
            && self.username == other.username
    }
}

/// The MQTT username of a DPS device announcing `api_version` (SRS 18_038). The spec's text says
/// `clientVersion`; every SDK's code sends `ClientVersion`, and so do we.
pub fn username(id_scope: &str, registration_id: &str, api_version: &ApiVersion) -> String {
    // The user agent is the same for the life of the process: encode it once, not per connect.
    static CLIENT_VERSION: OnceLock<String> = OnceLock::new();
    let client_version =
        CLIENT_VERSION.get_or_init(|| percent_encode(&user_agent(), HexCase::Upper));
    format!(
        "{id_scope}/registrations/{registration_id}/api-version={api_version}&ClientVersion={client_version}"
    )
}

#[cfg(test)]
mod tests;
