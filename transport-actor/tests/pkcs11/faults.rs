//! Each way a token key fails is a typed error naming what failed, before any connection
//! where it can be; a token that drops its sessions is logged into again, and a key that
//! vanishes mid-life fails its registration as that key's error, within the deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dps_messages::{Protocol, ProvisioningError, RegistrationStatus, SymmetricKey};
use dps_mock_broker::script::Step;
use dps_mock_broker::{IssuingCa, Script};
use dps_transport_actor::pkcs11::{Pin, Pkcs11Error, Pkcs11Key, Pkcs11Uri, TokenKeys};
use dps_transport_actor::{CertificateOptions, ProvisioningClient};

use crate::common::*;
use crate::identity::token_identity;
use crate::softhsm::{PIN, SoftHsm, TestToken, hsm, raw_token};

fn open(hsm: &SoftHsm, uri: &str, pin: &str) -> Result<Pkcs11Key, Pkcs11Error> {
    let uri: Pkcs11Uri = uri.parse().unwrap();
    Pkcs11Key::open(&uri, hsm.module(), &Pin::new(pin).unwrap())
}

#[test]
fn a_module_that_is_missing_or_not_pkcs11_is_named() {
    let Some(hsm) = hsm() else { return };
    let uri: Pkcs11Uri = "pkcs11:token=faults;object=device-key".parse().unwrap();
    let missing = Pkcs11Key::open(&uri, Some("/no/such/module.so".as_ref()), &hsm.pin());
    assert_eq!(
        missing.unwrap_err(),
        Pkcs11Error::ModuleMissing {
            path: "/no/such/module.so".into()
        }
    );
    let text_file = hsm.conf();
    let error = Pkcs11Key::open(&uri, Some(&text_file), &hsm.pin()).unwrap_err();
    assert!(
        matches!(&error, Pkcs11Error::NotAModule { path, .. } if *path == text_file),
        "{error:?}"
    );
    // No module at all.
    let error = Pkcs11Key::open(&uri, None, &hsm.pin()).unwrap_err();
    assert!(matches!(error, Pkcs11Error::NoModule { .. }), "{error:?}");
    assert!(error.to_string().contains("DPS_PKCS11_MODULE"));
}

#[test]
fn a_token_label_no_slot_has_is_named_with_the_labels_there() {
    let Some(hsm) = hsm() else { return };
    let error = open(hsm, "pkcs11:token=nowhere;object=device-key", PIN).unwrap_err();
    let Pkcs11Error::NoToken { label, found, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(label, "nowhere");
    assert!(found.contains("`faults`"), "{found}");
}

#[test]
fn an_object_the_token_lacks_is_named_by_its_uri_without_a_pin() {
    let Some(hsm) = hsm() else { return };
    let error = open(hsm, "pkcs11:token=faults;object=no-such-key", PIN).unwrap_err();
    assert_eq!(
        error,
        Pkcs11Error::NoObject {
            uri: format!(
                "pkcs11:token=faults;object=no-such-key?module-path={}",
                hsm.module.display()
            )
        }
    );
    assert!(!error.to_string().contains(PIN));
}

#[test]
fn a_key_on_a_curve_tls_cannot_use_is_refused_before_any_connection() {
    let Some(hsm) = hsm() else { return };
    let error = open(hsm, "pkcs11:token=faults;object=k1-key", PIN).unwrap_err();
    assert!(
        matches!(&error, Pkcs11Error::Unsupported { reason, .. } if reason.contains("P-256 or P-384")),
        "{error:?}"
    );
}

/// A wrong PIN is refused once, and never offered again: a second open, even with the right
/// PIN, answers from memory, so the token's retry counter is not spent.
#[test]
fn a_wrong_pin_is_a_typed_error_and_never_retried() {
    let Some(hsm) = hsm() else { return };
    let error = open(hsm, "pkcs11:token=wrong-pin;object=device-key", "0000").unwrap_err();
    assert_eq!(
        error,
        Pkcs11Error::PinIncorrect {
            label: "wrong-pin".into()
        }
    );
    assert!(!error.to_string().contains("0000"));
    let again = open(hsm, "pkcs11:token=wrong-pin;object=device-key", PIN).unwrap_err();
    assert_eq!(again, error);
    // The token counted one failure only.
    let out = std::process::Command::new("pkcs11-tool")
        .arg("--module")
        .arg(&hsm.module)
        .arg("-L")
        .env("SOFTHSM2_CONF", hsm.conf())
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(!listing.contains("final try"), "{listing}");
}

/// Someone logs the token out (all of the process's sessions with it): the next registration
/// logs in on a new session and succeeds.
#[actix_rt::test]
async fn a_token_that_dropped_its_login_is_logged_into_again() {
    let Some(hsm) = hsm() else { return };
    let f = Fixture::start(Script::new());
    let identity = token_identity(&f, hsm, "relogin", "device-key", "hsm-relogin");
    let client =
        ProvisioningClient::start(f.config(Protocol::Mqtt), identity, fast_within(LONG)).unwrap();
    let request = f.request(Protocol::Mqtt, "hsm-relogin");
    assert_eq!(
        client.register(request.clone()).await.unwrap().status,
        RegistrationStatus::Assigned
    );
    // The pool the device's key uses: one session, for one handshake at a time.
    let pool = Pkcs11Key::open(&hsm.uri("relogin", "device-key"), hsm.module(), &hsm.pin())
        .unwrap()
        .token()
        .clone();
    assert_eq!(pool.open_sessions(), 1);
    log_out(hsm, "relogin");
    assert_eq!(
        client.register(request).await.unwrap().status,
        RegistrationStatus::Assigned
    );
    // The session the logout ended was closed, and one new one took its place.
    assert_eq!(pool.open_sessions(), 1);
}

/// Logs the user out of `token` in this process, as a token reset would.
fn log_out(hsm: &SoftHsm, token: &str) {
    let (context, slot, _) = raw_token(hsm, token);
    let session = context.open_ro_session(slot).unwrap();
    session.logout().unwrap();
}

/// The key is destroyed while the device uses it: the handshake's signature fails, and the
/// registration ends with that key's error (not a TLS alert), well within its deadline.
#[actix_rt::test]
async fn a_key_gone_from_the_token_fails_the_handshake_as_the_keys_error() {
    let Some(hsm) = hsm() else { return };
    let f = Fixture::start(Script::new());
    let identity = token_identity(&f, hsm, "vanish", "device-key", "hsm-vanish");
    let uri: Pkcs11Uri = identity
        .signer()
        .unwrap()
        .locator()
        .unwrap()
        .parse()
        .unwrap();
    let deadline = Duration::from_secs(5);
    let client =
        ProvisioningClient::start(f.config(Protocol::Mqtt), identity, fast_within(deadline))
            .unwrap();
    let request = f.request(Protocol::Mqtt, "hsm-vanish");
    assert!(client.register(request.clone()).await.is_ok());
    let key = Pkcs11Key::open(&uri, None, &hsm.pin()).unwrap();
    key.destroy().unwrap();
    let started = Instant::now();
    let error = client.register(request).await.unwrap_err();
    assert!(started.elapsed() < deadline + Duration::from_secs(1));
    let ProvisioningError::Key(key_error) = &error else {
        panic!("not the key's error: {error:?}");
    };
    let pkcs11 = key_error.inner().downcast_ref::<Pkcs11Error>().unwrap();
    assert!(
        matches!(
            pkcs11,
            Pkcs11Error::Token {
                operation: "sign",
                ..
            }
        ),
        "{pkcs11:?}"
    );
}

/// A registration that fails after its key was made leaves no key behind in the token.
#[actix_rt::test]
async fn a_failed_issuance_destroys_the_key_it_made() {
    let Some(hsm) = hsm() else { return };
    let ca = Arc::new(IssuingCa::generate().unwrap());
    let refuse = Step::RefuseCsr {
        status: 400,
        error_code: Some(400_209),
    };
    let f = Fixture::start_with(steps("hsm-refused", [refuse]), |b| b.issue_certificates(ca));
    let uri: Pkcs11Uri = "pkcs11:token=faults;object=refused".parse().unwrap();
    let options = CertificateOptions {
        token_keys: Some(TokenKeys::open(&uri, hsm.module(), &hsm.pin()).unwrap()),
        ..CertificateOptions::default()
    };
    let key = SymmetricKey::from_group_key(GROUP_KEY, "hsm-refused").unwrap();
    let client =
        ProvisioningClient::start(f.config(Protocol::Mqtt), key, fast_within(LONG)).unwrap();
    let error = client
        .register_with_certificate(f.request(Protocol::Mqtt, "hsm-refused"), &options)
        .await
        .unwrap_err();
    assert_eq!(error.service_error().map(|e| e.status), Some(400));
    let left = open(hsm, "pkcs11:token=faults;object=refused", PIN).unwrap_err();
    assert!(matches!(left, Pkcs11Error::NoObject { .. }), "{left:?}");
}

/// The token is deleted while the device uses it (SoftHSM2's removal): the next registration
/// fails at once with the key's error, within its deadline, and nothing hangs.
#[actix_rt::test]
async fn a_token_removed_under_the_device_fails_its_next_registration_in_time() {
    let Some(hsm) = hsm() else { return };
    let f = Fixture::start(Script::new());
    let identity = token_identity(&f, hsm, "removed", "device-key", "hsm-removed");
    let deadline = Duration::from_secs(5);
    let client =
        ProvisioningClient::start(f.config(Protocol::Mqtt), identity, fast_within(deadline))
            .unwrap();
    let request = f.request(Protocol::Mqtt, "hsm-removed");
    assert!(client.register(request.clone()).await.is_ok());
    let pool = Pkcs11Key::open(&hsm.uri("removed", "device-key"), hsm.module(), &hsm.pin())
        .unwrap()
        .token()
        .clone();
    hsm.run(std::process::Command::new("softhsm2-util").args([
        "--delete-token",
        "--token",
        "removed",
    ]));
    let started = Instant::now();
    let error = client.register(request).await.unwrap_err();
    assert!(started.elapsed() < deadline + Duration::from_secs(1));
    assert!(matches!(error, ProvisioningError::Key(_)), "{error:?}");
    // The sessions of the removed token are all closed; none could be opened again.
    assert_eq!(pool.open_sessions(), 0);
}

/// A token is found by its serial number as well as its label, and both must agree.
#[test]
fn a_token_is_found_by_its_serial_and_a_wrong_one_is_no_token() {
    let Some(hsm) = hsm() else { return };
    let (_, _, info) = raw_token(hsm, "faults");
    let serial = info.serial_number().trim().to_owned();
    let key = open(
        hsm,
        &format!("pkcs11:serial={serial};object=device-key"),
        PIN,
    )
    .unwrap();
    assert_eq!(key.token().label(), "faults");
    let error = open(
        hsm,
        "pkcs11:token=faults;serial=0000000000000000;object=device-key",
        PIN,
    )
    .unwrap_err();
    assert!(matches!(error, Pkcs11Error::NoToken { .. }), "{error:?}");
}
