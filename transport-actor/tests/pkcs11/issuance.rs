//! Certificate issuance with a key made inside the token: the pair generated there, the CSR
//! signed there, the cache holding the key's URI (never bytes), a second provisioning with the
//! issued certificate, and renewal replacing the key only once its successor is stored.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use dps_messages::certificate::KeyCurve;
use dps_messages::{Protocol, RegistrationStatus, SymmetricKey};
use dps_mock_broker::{IssuingCa, Script};
use dps_transport_actor::pkcs11::{Pkcs11Uri, TokenKeys};
use dps_transport_actor::{CertificateOptions, ClientOptions, ProvisioningClient};

use crate::common::*;
use crate::softhsm::{PIN, SoftHsm, TestToken, hsm, raw_token};

fn issuing() -> Fixture {
    let ca = Arc::new(IssuingCa::generate().unwrap());
    Fixture::start_with(Script::new(), |b| b.issue_certificates(ca))
}

fn temp(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("dps-hsm-{name}-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

fn keys(hsm: &SoftHsm, token: &str) -> TokenKeys {
    let uri: Pkcs11Uri = format!("pkcs11:token={token};object=issued")
        .parse()
        .unwrap();
    TokenKeys::open(&uri, hsm.module(), &hsm.pin()).unwrap()
}

/// A group-enrollment device's client, caching in `cache`.
fn client(f: &Fixture, id: &str, cache: &Path) -> ProvisioningClient {
    let key = SymmetricKey::from_group_key(GROUP_KEY, id).unwrap();
    let options = ClientOptions {
        cache_file: Some(cache.to_owned()),
        ..fast_within(LONG)
    };
    ProvisioningClient::start(f.config(Protocol::Mqtt), key, options).unwrap()
}

/// The token's objects labelled `issued`, of `class`, and the ids they have, read with
/// cryptoki itself (the test's own session on the module the library loaded).
fn issued_objects(hsm: &SoftHsm, token: &str, class: ObjectClass) -> Vec<Vec<u8>> {
    let out = hsm
        .tool(token)
        .args(["--list-objects", "--type", class_name(class)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // pkcs11-tool prints each object's label, then its ID as hex.
    let mut ids = Vec::new();
    let mut label_is_issued = false;
    for line in text.lines().map(str::trim) {
        if let Some(label) = line.strip_prefix("label:") {
            label_is_issued = label.trim() == "issued";
        } else if let Some(id) = line.strip_prefix("ID:")
            && label_is_issued
        {
            ids.push(hex(id.trim()));
        }
    }
    ids
}

fn class_name(class: ObjectClass) -> &'static str {
    if class == ObjectClass::PRIVATE_KEY {
        "privkey"
    } else {
        "pubkey"
    }
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
        .collect()
}

#[actix_rt::test]
async fn a_key_made_in_the_token_is_certified_and_provisions_again_without_leaving_it() {
    let Some(hsm) = hsm() else { return };
    let f = issuing();
    let cache = temp("issue");
    let options = CertificateOptions {
        curve: KeyCurve::P256,
        token_keys: Some(keys(hsm, "issue")),
        ..CertificateOptions::default()
    };
    let provisioned = client(&f, "hsm-issued", &cache)
        .register_with_certificate(f.request(Protocol::Mqtt, "hsm-issued"), &options)
        .await
        .unwrap();
    let issued = provisioned.certificate.unwrap();
    assert_eq!(issued.leaf().subject, "CN=hsm-issued");
    // The curve asked for.
    let scheme = issued.identity().signer().unwrap().scheme();
    assert_eq!(scheme, rustls::SignatureScheme::ECDSA_NISTP256_SHA256);
    assert_eq!(issued.private_key_pem(), None, "the key stays in the token");
    let uri = issued.identity().signer().unwrap().locator().unwrap();
    assert!(
        uri.starts_with("pkcs11:token=issue;object=issued;id=%"),
        "{uri}"
    );

    // The cache names the key; no key bytes were written there, nor beside it.
    let text = std::fs::read_to_string(&cache).unwrap();
    let cached: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(cached["certificate"]["key_uri"], uri.as_str());
    assert!(cached["certificate"].get("key_pem").is_none());
    assert!(!text.contains("PRIVATE KEY"));
    let dir = cache.parent().unwrap();
    let stem = cache.file_name().unwrap().to_string_lossy().into_owned();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&stem) && name != stem {
            panic!("a file beside the cache: {name}");
        }
    }

    // The token keeps the private key sensitive and unextractable: its value cannot be read.
    let uri: Pkcs11Uri = uri.parse().unwrap();
    let key = dps_transport_actor::pkcs11::Pkcs11Key::open(&uri, None, &hsm.pin()).unwrap();
    let attributes = read_private_attributes(hsm, &uri);
    assert!(
        attributes.contains(&Attribute::Sensitive(true)),
        "{attributes:?}"
    );
    assert!(
        attributes.contains(&Attribute::Extractable(false)),
        "{attributes:?}"
    );
    assert!(
        attributes.contains(&Attribute::NeverExtractable(true)),
        "{attributes:?}"
    );
    assert!(
        !attributes.iter().any(|a| matches!(a, Attribute::Value(_))),
        "CKA_VALUE was readable: {attributes:?}"
    );
    drop(key);

    // Provisioning again with the issued certificate, signed in the token.
    let again = ProvisioningClient::start(
        f.config(Protocol::Mqtt),
        issued.identity().clone(),
        fast_within(LONG),
    )
    .unwrap()
    .register(f.request(Protocol::Mqtt, "hsm-issued"))
    .await
    .unwrap();
    assert_eq!(again.status, RegistrationStatus::Assigned);
    let records = f.wait_all_closed().await;
    let last = records
        .iter()
        .rfind(|r| r.client_id == "hsm-issued")
        .unwrap();
    assert_eq!(last.peer_cert_cn.as_deref(), Some("hsm-issued"));

    // A restarted device reads its certificate back from the cache, the key by its URI.
    let cached = client(&f, "hsm-issued", &cache)
        .register_with_certificate(f.request(Protocol::Mqtt, "hsm-issued"), &options)
        .await
        .unwrap();
    assert!(cached.from_cache);
    assert_eq!(cached.certificate.unwrap().leaf(), issued.leaf());
    std::fs::remove_file(&cache).unwrap();
}

/// The private key's attributes as the token reports them (`CKA_VALUE` is asked for too).
fn read_private_attributes(hsm: &SoftHsm, uri: &Pkcs11Uri) -> Vec<Attribute> {
    let (context, slot, _) = raw_token(hsm, "issue");
    let session = context.open_ro_session(slot).unwrap();
    let _ = session.login(
        cryptoki::session::UserType::User,
        Some(&cryptoki::types::AuthPin::from(PIN.to_owned())),
    );
    let template = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Id(uri.id.clone().unwrap()),
    ];
    let key = session.find_objects(&template).unwrap()[0];
    session
        .get_attributes(
            key,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
                AttributeType::Value,
            ],
        )
        .unwrap()
}

#[actix_rt::test]
async fn renewal_makes_a_new_token_key_and_destroys_the_old_one_after_storing_the_new() {
    let Some(hsm) = hsm() else { return };
    let f = issuing();
    let cache = temp("renew");
    let options = CertificateOptions {
        token_keys: Some(keys(hsm, "renew")),
        // Every registration renews.
        renewal_window: 1.0,
        ..CertificateOptions::default()
    };
    let first = client(&f, "hsm-renew", &cache)
        .register_with_certificate(f.request(Protocol::Mqtt, "hsm-renew"), &options)
        .await
        .unwrap()
        .certificate
        .unwrap();
    // The default curve, P-384, as the service documents.
    let scheme = first.identity().signer().unwrap().scheme();
    assert_eq!(scheme, rustls::SignatureScheme::ECDSA_NISTP384_SHA384);
    let first_uri: Pkcs11Uri = first
        .identity()
        .signer()
        .unwrap()
        .locator()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        issued_objects(hsm, "renew", ObjectClass::PRIVATE_KEY),
        [first_uri.id.clone().unwrap()]
    );

    let second = client(&f, "hsm-renew", &cache)
        .register_with_certificate(f.request(Protocol::Mqtt, "hsm-renew"), &options)
        .await
        .unwrap();
    assert!(!second.from_cache);
    let second = second.certificate.unwrap();
    let second_uri: Pkcs11Uri = second
        .identity()
        .signer()
        .unwrap()
        .locator()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(second_uri.id, first_uri.id, "a new key");
    // The old pair is gone, the new one is the only one, and the cache names it.
    assert_eq!(
        issued_objects(hsm, "renew", ObjectClass::PRIVATE_KEY),
        [second_uri.id.clone().unwrap()]
    );
    assert_eq!(
        issued_objects(hsm, "renew", ObjectClass::PUBLIC_KEY),
        [second_uri.id.clone().unwrap()]
    );
    let cached: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cache).unwrap()).unwrap();
    assert_eq!(cached["certificate"]["key_uri"], second_uri.to_string());
    std::fs::remove_file(&cache).unwrap();
}
