//! The tests of `auth`.

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

const KEY: &str = crate::TEST_SYMMETRIC_KEY;
const GROUP: &str = crate::TEST_GROUP_KEY;

fn config() -> AuthConfig {
    AuthConfig {
        id_scope: "scope".into(),
        symmetric_keys: [("dev".to_owned(), KEY.to_owned())].into(),
        group_keys: vec![GROUP.into()],
        enrollments: Default::default(),
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
