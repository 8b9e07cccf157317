//! Who may use the service API: the `Authorization` header the official service SDKs send,
//! `SharedAccessSignature sr=<host>&sig=<signature>&se=<expiry>&skn=<policy>`, signed with the
//! policy's key (HMAC-SHA256 over the URL-encoded host and the expiry, as for a device).

use dps_messages::service::SasToken;

/// The shared access policy DPS makes for its owner, and the name the connection strings of
/// its portal carry.
pub const DEFAULT_POLICY_NAME: &str = "provisioningserviceowner";

/// A shared access policy: its name and key (base64).
#[derive(Clone)]
pub(crate) struct ServicePolicy {
    pub(crate) name: String,
    pub(crate) key: String,
}

impl std::fmt::Debug for ServicePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServicePolicy")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl ServicePolicy {
    /// `Ok` when `authorization` is a token signed with this policy's key, not expired at
    /// `now` (Unix seconds); else why not.
    pub(crate) fn check(&self, authorization: Option<&str>, now: u64) -> Result<(), String> {
        let header = authorization.ok_or("no Authorization header")?;
        let token = SasToken::parse(header.trim()).map_err(|e| e.to_string())?;
        match token.key_name() {
            Some(name) if name.eq_ignore_ascii_case(&self.name) => {}
            Some(name) => return Err(format!("unknown shared access policy `{name}`")),
            None => return Err("the token names no policy (skn)".into()),
        }
        token.verify(&self.key, now).map_err(|e| e.to_string())
    }

    /// The connection string the official service SDKs take, for `host` (a port only when it
    /// is not 443: the SDKs dial 443).
    pub(crate) fn connection_string(&self, host: &str) -> String {
        format!(
            "HostName={host};SharedAccessKeyName={};SharedAccessKey={}",
            self.name, self.key
        )
    }
}
