//! Who may connect: the checks DPS makes on a CONNECT, as a pure function.
//!
//! The username must be `<idScope>/registrations/<clientId>/api-version=...`. An X.509 device
//! (its chain already verified by TLS against the device CA) must have the clientId as its
//! certificate's CN; a symmetric-key device must send a SAS token for
//! `<idScope>/registrations/<clientId>`, signed with its own key or its group-derived key, and
//! not expired. A broker with enrollments checks the username, the scope and the CN here, and
//! the credential itself at the register, against the enrollments, as DPS does.

use std::collections::BTreeMap;
use std::sync::Arc;

use dps_messages::error::ConnackRefusal;
use dps_messages::service::{SasRejection, SasToken, derive_device_key};

use crate::enrollment::Enrollments;

/// The credentials the broker knows.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// The id scope devices must name.
    pub id_scope: String,
    /// Individual enrollments: registration id to base64 key.
    pub symmetric_keys: BTreeMap<String, String>,
    /// Group enrollment keys (base64); a device's key is derived from its registration id.
    pub group_keys: Vec<String>,
    /// The enrollments: with any, the credential is checked at the register instead.
    pub enrollments: Arc<Enrollments>,
}

/// What a device presented.
#[derive(Debug, Clone, Copy)]
pub struct ConnectAttempt<'a> {
    /// The CONNECT clientId.
    pub client_id: &'a str,
    /// The CONNECT username.
    pub username: Option<&'a str>,
    /// The CONNECT password.
    pub password: Option<&'a [u8]>,
    /// The CN of the client certificate, when one was presented (and verified by TLS).
    pub peer_cert_cn: Option<&'a str>,
    /// Whether a client certificate was presented at all.
    pub peer_cert_present: bool,
    /// The time, in Unix seconds.
    pub now: u64,
}

/// How an accepted device proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A client certificate.
    X509,
    /// A SAS token from an individual enrollment's key.
    SymmetricKey,
    /// A SAS token from a key derived from a group enrollment's key.
    GroupKey,
    /// A SAS token the register checks against the enrollments.
    SasToken,
}

impl AuthMethod {
    /// The name written in the record.
    pub fn name(self) -> &'static str {
        match self {
            Self::X509 => "x509",
            Self::SymmetricKey => "symmetric_key",
            Self::GroupKey => "group_key",
            Self::SasToken => "sas_token",
        }
    }
}

/// Why a CONNECT is refused: the CONNACK code and a reason for the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The CONNACK return code.
    pub code: ConnackRefusal,
    /// Why.
    pub reason: String,
}

fn refuse(code: ConnackRefusal, reason: impl Into<String>) -> Refusal {
    Refusal {
        code,
        reason: reason.into(),
    }
}

/// Decides a CONNECT.
pub fn authorize(config: &AuthConfig, attempt: &ConnectAttempt<'_>) -> Result<AuthMethod, Refusal> {
    use ConnackRefusal::{BadUserNameOrPassword, NotAuthorized};

    let username = attempt
        .username
        .ok_or_else(|| refuse(BadUserNameOrPassword, "no username"))?;
    let (scope, registration_id) = parse_username(username).ok_or_else(|| {
        refuse(
            BadUserNameOrPassword,
            format!("username `{username}` is not <idScope>/registrations/<id>/api-version=..."),
        )
    })?;
    if registration_id != attempt.client_id {
        return Err(refuse(
            BadUserNameOrPassword,
            format!(
                "username names `{registration_id}` but the clientId is `{}`",
                attempt.client_id
            ),
        ));
    }
    if scope != config.id_scope {
        return Err(refuse(NotAuthorized, format!("unknown id scope `{scope}`")));
    }

    if attempt.peer_cert_present {
        return match attempt.peer_cert_cn {
            Some(cn) if cn == attempt.client_id => Ok(AuthMethod::X509),
            Some(cn) => Err(refuse(
                NotAuthorized,
                format!("certificate CN `{cn}` is not the clientId"),
            )),
            None => Err(refuse(NotAuthorized, "the certificate has no CN")),
        };
    }

    if !config.enrollments.is_empty() {
        return Ok(AuthMethod::SasToken);
    }
    let password = attempt
        .password
        .ok_or_else(|| refuse(NotAuthorized, "no certificate and no password"))?;
    let password = std::str::from_utf8(password)
        .map_err(|_| refuse(NotAuthorized, "password is not UTF-8"))?;
    let token = SasToken::parse(password).map_err(|e| refuse(NotAuthorized, e.to_string()))?;
    let resource = format!("{}/registrations/{}", config.id_scope, attempt.client_id);
    if token.decoded_resource() != resource {
        return Err(refuse(
            NotAuthorized,
            format!("SAS sr `{}` is not `{resource}`", token.decoded_resource()),
        ));
    }

    let mut keys: Vec<(String, AuthMethod)> = Vec::new();
    if let Some(key) = config.symmetric_keys.get(attempt.client_id) {
        keys.push((key.clone(), AuthMethod::SymmetricKey));
    }
    for group_key in &config.group_keys {
        if let Ok(key) = derive_device_key(group_key, attempt.client_id) {
            keys.push((key, AuthMethod::GroupKey));
        }
    }
    if keys.is_empty() {
        return Err(refuse(
            NotAuthorized,
            format!("no enrollment for `{}`", attempt.client_id),
        ));
    }
    // Report the most telling rejection: a token signed with a right key but expired says more
    // than the other keys' signature mismatches.
    let mut rejection = None;
    for (key, method) in keys {
        match token.verify(&key, attempt.now) {
            Ok(()) => return Ok(method),
            Err(e @ SasRejection::Expired { .. }) => rejection = Some(e),
            Err(e) => rejection = rejection.or(Some(e)),
        }
    }
    let why = rejection.map(|e| e.to_string()).unwrap_or_default();
    Err(refuse(NotAuthorized, format!("SAS token rejected: {why}")))
}

/// The `api-version` a username announces, if any.
pub fn api_version(username: &str) -> Option<&str> {
    let (_, query) = username.rsplit_once('/')?;
    query
        .split('&')
        .find_map(|p| p.strip_prefix("api-version="))
}

/// Splits `<idScope>/registrations/<id>/api-version=<v>[&...]` into scope and id.
pub fn parse_username(username: &str) -> Option<(&str, &str)> {
    let (scope, rest) = username.split_once("/registrations/")?;
    let (id, query) = rest.split_once('/')?;
    let has_version = query.split('&').any(|p| {
        p.strip_prefix("api-version=")
            .is_some_and(|v| !v.is_empty())
    });
    (!scope.is_empty() && !id.is_empty() && has_version).then_some((scope, id))
}

#[cfg(test)]
mod tests;
