use std::sync::Arc;
use std::time::Duration;

use dps_messages::{CertificateRequest, IssuedIdentity};
use dps_mock_broker::IssuingCa;
use serde_json::json;

use super::*;

const DAY: Duration = Duration::from_secs(86_400);

fn result(body: serde_json::Value) -> RegistrationResult {
    serde_json::from_value(body).unwrap()
}

fn assigned() -> RegistrationResult {
    result(
        json!({"status": "assigned", "registrationState": {"assignedHub": "h", "deviceId": "d"}}),
    )
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("dps-cache-{name}-{}.json", std::process::id()))
}

/// The cache as a client without a token reads it.
fn load(path: &Path, request: &RegistrationRequest, now: SystemTime) -> Lookup {
    super::load(path, request, now, &|uri| {
        Err(format!("no token for {uri}"))
    })
}

fn found(lookup: Lookup) -> Entry {
    match lookup {
        Lookup::Found(entry) => *entry,
        other => panic!("{other:?}"),
    }
}

/// A certificate for `dev` as DPS would issue it, valid for 30 days from `now`.
fn issued(now: SystemTime) -> IssuedIdentity {
    let ca = Arc::new(IssuingCa::generate().unwrap());
    let csr = CertificateRequest::generate("dev").unwrap();
    let chain = ca.issue(&csr.csr_base64(), "dev", 30 * DAY, now).unwrap();
    csr.accept(&chain, now).unwrap()
}

#[test]
fn the_cache_round_trips_and_belongs_to_one_device() {
    let path = temp("round-trip");
    let request = RegistrationRequest::new("scope", "dev");
    let now = SystemTime::now();
    assert!(matches!(load(&path, &request, now), Lookup::Missing));
    save(&path, &request, &assigned(), None).unwrap();
    let entry = found(load(&path, &request, now));
    assert_eq!(entry.result, assigned());
    assert!(matches!(entry.certificate, Certificate::Absent));
    let other = RegistrationRequest::new("scope", "other");
    assert!(matches!(load(&path, &other, now), Lookup::Missing));
    std::fs::write(&path, "{broken").unwrap();
    assert!(matches!(load(&path, &request, now), Lookup::Corrupt(e) if e.contains("parse")));
    let aside = set_aside(&path).unwrap();
    assert!(!path.exists() && aside.exists());
    assert!(aside.to_string_lossy().ends_with(".corrupt"));
    std::fs::remove_file(&aside).unwrap();
    // A missing file is no cache; one that cannot be read is left alone.
    let dir = temp("a-directory");
    std::fs::create_dir_all(&dir).unwrap();
    assert!(matches!(load(&dir, &request, now), Lookup::Unreadable(_)));
    std::fs::remove_dir(&dir).unwrap();
}

/// An entry without a hub (written by an older version, or by hand) is never used.
#[test]
fn an_assignment_without_a_hub_is_corrupt() {
    let path = temp("no-hub");
    let request = RegistrationRequest::new("scope", "dev");
    for body in [
        json!({"status": "assigned"}),
        json!({"status": "assigned", "registrationState": {"deviceId": "d"}}),
    ] {
        save(&path, &request, &result(body), None).unwrap();
        let Lookup::Corrupt(error) = load(&path, &request, SystemTime::now()) else {
            panic!("not corrupt")
        };
        assert!(
            error.contains("assignedHub") || error.contains("registrationState"),
            "{error}"
        );
    }
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_cached_certificate_is_kept_until_it_lapses_and_never_trusted_when_it_does_not_match() {
    let path = temp("certificate");
    let request = RegistrationRequest::new("scope", "dev");
    let now = SystemTime::now();
    let identity = issued(now);
    save(&path, &request, &assigned(), Some(&identity)).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the cache holds a key");
    }
    let entry = found(load(&path, &request, now));
    let Certificate::Valid(cached) = entry.certificate else {
        panic!("{:?}", entry.certificate)
    };
    assert_eq!(cached.leaf(), identity.leaf());
    // Lapsed: the assignment stays, the certificate is renewed.
    let entry = found(load(&path, &request, now + 31 * DAY));
    assert!(matches!(entry.certificate, Certificate::Lapsed));

    // Another key beside the chain: corrupt.
    let mut cached: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cached["certificate"]["key_pem"] = issued(now).private_key_pem().unwrap().into();
    std::fs::write(&path, cached.to_string()).unwrap();
    assert!(matches!(
        load(&path, &request, now),
        Lookup::Corrupt(e) if e.contains("public key")
    ));
    std::fs::remove_file(&path).unwrap();
}

/// A key held in a token is cached as its URI; a client that cannot open it keeps the
/// assignment and says why the certificate is out of reach, without calling the file corrupt.
#[test]
fn a_key_in_a_token_is_cached_as_its_uri_and_never_as_bytes() {
    let path = temp("token-key");
    let request = RegistrationRequest::new("scope", "dev");
    let now = SystemTime::now();
    save(&path, &request, &assigned(), Some(&issued(now))).unwrap();
    let mut cached: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let certificate = cached["certificate"].as_object_mut().unwrap();
    certificate.remove("key_pem");
    certificate.insert("key_uri".into(), "pkcs11:token=gw;object=k".into());
    std::fs::write(&path, cached.to_string()).unwrap();
    let entry = found(load(&path, &request, now));
    assert_eq!(entry.key_uri.as_deref(), Some("pkcs11:token=gw;object=k"));
    assert!(
        matches!(&entry.certificate, Certificate::Unopenable(why) if why.contains("pkcs11:token=gw")),
        "{:?}",
        entry.certificate
    );
    // Neither bytes nor a URI: corrupt.
    let certificate = cached["certificate"].as_object_mut().unwrap();
    certificate.remove("key_uri");
    std::fs::write(&path, cached.to_string()).unwrap();
    assert!(matches!(load(&path, &request, now), Lookup::Corrupt(e) if e.contains("no key")));
    std::fs::remove_file(&path).unwrap();
}
