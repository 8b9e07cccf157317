//! Who may connect: the checks DPS makes on a CONNECT, as a pure function.
//!
//! The username must be `<idScope>/registrations/<clientId>/api-version=...`. An X.509 device
//! (its chain already verified by TLS against the device CA) must have the clientId as its
//! certificate's CN; a symmetric-key device must send a SAS token for
//! `<idScope>/registrations/<clientId>`, signed with its own key or its group-derived key, and
//! not expired.

use std::collections::BTreeMap;

use dps_messages::error::ConnackRefusal;
use dps_messages::service::{SasRejection, SasToken, derive_device_key};

/// The credentials the broker knows.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// The id scope devices must name.
    pub id_scope: String,
    /// Individual enrollments: registration id to base64 key.
    pub symmetric_keys: BTreeMap<String, String>,
    /// Group enrollment keys (base64); a device's key is derived from its registration id.
    pub group_keys: Vec<String>,
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
}

impl AuthMethod {
    /// The name written in the record.
    pub fn name(self) -> &'static str {
        match self {
            Self::X509 => "x509",
            Self::SymmetricKey => "symmetric_key",
            Self::GroupKey => "group_key",
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
mod tests {
    use super::*;

    #[test]
    fn the_api_version_is_read_from_the_username() {
        let user = "s/registrations/d/api-version=2025-07-01-preview&ClientVersion=x";
        assert_eq!(api_version(user), Some("2025-07-01-preview"));
        assert_eq!(
            api_version("s/registrations/d/ClientVersion=x&api-version=1"),
            Some("1")
        );
        assert_eq!(api_version("s/registrations/d/ClientVersion=x"), None);
        assert_eq!(api_version("no slash"), None);
    }
    use dps_messages::SymmetricKey;

    const KEY: &str = "O+H9VTcdJP0Tqkl7bh4nVG0OJNrAataMpuWB54D0VEc=";
    const GROUP: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn config() -> AuthConfig {
        AuthConfig {
            id_scope: "scope".into(),
            symmetric_keys: [("dev".to_owned(), KEY.to_owned())].into(),
            group_keys: vec![GROUP.into()],
        }
    }

    fn attempt<'a>(
        client_id: &'a str,
        username: &'a str,
        password: Option<&'a [u8]>,
    ) -> ConnectAttempt<'a> {
        ConnectAttempt {
            client_id,
            username: Some(username),
            password,
            peer_cert_cn: None,
            peer_cert_present: false,
            now: 100,
        }
    }

    fn token(key: &SymmetricKey, scope: &str, id: &str, expiry: u64) -> String {
        key.sas_token(scope, id, expiry).to_string()
    }

    const USER: &str = "scope/registrations/dev/api-version=2019-03-31&ClientVersion=x";

    #[test]
    fn accepts_an_individual_symmetric_key() {
        let password = token(&SymmetricKey::new(KEY).unwrap(), "scope", "dev", 200);
        let a = attempt("dev", USER, Some(password.as_bytes()));
        assert_eq!(authorize(&config(), &a), Ok(AuthMethod::SymmetricKey));
    }

    #[test]
    fn accepts_a_group_derived_key() {
        let password = token(
            &SymmetricKey::from_group_key(GROUP, "other").unwrap(),
            "scope",
            "other",
            200,
        );
        let user = "scope/registrations/other/api-version=2019-03-31";
        assert_eq!(
            authorize(
                &config(),
                &attempt("other", user, Some(password.as_bytes()))
            ),
            Ok(AuthMethod::GroupKey)
        );
    }

    #[test]
    fn rejects_bad_signatures_expired_tokens_and_unknown_devices() {
        let wrong = SymmetricKey::new("AAAA").unwrap();
        for (id, password) in [
            ("dev", token(&wrong, "scope", "dev", 200)),
            (
                "dev",
                token(&SymmetricKey::new(KEY).unwrap(), "scope", "dev", 50),
            ),
            (
                "dev",
                token(&SymmetricKey::new(KEY).unwrap(), "scope", "other", 200),
            ),
            ("dev", "SharedAccessSignature nonsense".to_owned()),
        ] {
            let user = format!("scope/registrations/{id}/api-version=1");
            let refusal =
                authorize(&config(), &attempt(id, &user, Some(password.as_bytes()))).unwrap_err();
            assert_eq!(
                refusal.code,
                ConnackRefusal::NotAuthorized,
                "{password}: {}",
                refusal.reason
            );
        }
        let no_groups = AuthConfig {
            group_keys: vec![],
            ..config()
        };
        let password = token(&SymmetricKey::new(KEY).unwrap(), "scope", "nobody", 200);
        let user = "scope/registrations/nobody/api-version=1";
        let refusal = authorize(
            &no_groups,
            &attempt("nobody", user, Some(password.as_bytes())),
        )
        .unwrap_err();
        assert!(
            refusal.reason.contains("no enrollment"),
            "{}",
            refusal.reason
        );
    }

    #[test]
    fn checks_the_username_form_and_scope() {
        let password = token(&SymmetricKey::new(KEY).unwrap(), "scope", "dev", 200);
        for (user, code) in [
            ("dev", ConnackRefusal::BadUserNameOrPassword),
            (
                "scope/registrations/dev",
                ConnackRefusal::BadUserNameOrPassword,
            ),
            (
                "scope/registrations/dev/x=1",
                ConnackRefusal::BadUserNameOrPassword,
            ),
            (
                "scope/registrations/other/api-version=1",
                ConnackRefusal::BadUserNameOrPassword,
            ),
            (
                "wrong/registrations/dev/api-version=1",
                ConnackRefusal::NotAuthorized,
            ),
        ] {
            let refusal =
                authorize(&config(), &attempt("dev", user, Some(password.as_bytes()))).unwrap_err();
            assert_eq!(refusal.code, code, "{user}");
        }
        let mut a = attempt("dev", USER, None);
        a.username = None;
        assert_eq!(
            authorize(&config(), &a).unwrap_err().code,
            ConnackRefusal::BadUserNameOrPassword
        );
    }

    #[test]
    fn x509_needs_the_cn_to_be_the_client_id() {
        let mut a = attempt("dev", USER, None);
        a.peer_cert_present = true;
        a.peer_cert_cn = Some("dev");
        assert_eq!(authorize(&config(), &a), Ok(AuthMethod::X509));
        a.peer_cert_cn = Some("someone-else");
        assert_eq!(
            authorize(&config(), &a).unwrap_err().code,
            ConnackRefusal::NotAuthorized
        );
        a.peer_cert_cn = None;
        assert_eq!(
            authorize(&config(), &a).unwrap_err().code,
            ConnackRefusal::NotAuthorized
        );
    }

    #[test]
    fn no_credentials_is_not_authorized() {
        let refusal = authorize(&config(), &attempt("dev", USER, None)).unwrap_err();
        assert_eq!(refusal.code, ConnackRefusal::NotAuthorized);
    }
}
