//! An X.509 identity whose key is in the token: ECDSA P-256 and P-384, and RSA-PSS, over TLS
//! and over WebSocket, with the key never leaving SoftHSM2.

use std::sync::Arc;

use dps_messages::x509::subject_public_key_info;
use dps_messages::{Protocol, RegistrationStatus, X509Identity};
use dps_mock_broker::Script;
use dps_transport_actor::ProvisioningClient;
use dps_transport_actor::pkcs11::Pkcs11Key;
use rustls::SignatureScheme;

use crate::common::*;
use crate::softhsm::{SoftHsm, TestToken, hsm};

/// The device `id`'s identity: the key `object` in `token`, certified by the broker's CA.
pub fn token_identity(
    f: &Fixture,
    hsm: &SoftHsm,
    token: &str,
    object: &str,
    id: &str,
) -> X509Identity {
    let key = Pkcs11Key::open(&hsm.uri(token, object), hsm.module(), &hsm.pin()).unwrap();
    let cert_pem = f
        .pki
        .certify(id, &subject_public_key_info(&key).unwrap())
        .unwrap();
    X509Identity::from_pem_and_signer(cert_pem.as_bytes(), Arc::new(key)).unwrap()
}

/// Provisions `id` with `identity` over `protocol` and checks the broker saw its certificate.
async fn provisions(f: &Fixture, identity: X509Identity, protocol: Protocol, id: &str) {
    let client =
        ProvisioningClient::start(f.config(protocol), identity, fast_within(LONG)).unwrap();
    let result = client.register(f.request(protocol, id)).await.unwrap();
    assert_eq!(result.status, RegistrationStatus::Assigned);
    let state = result.registration_state.unwrap();
    assert!(state.assigned_hub.is_some_and(|hub| !hub.is_empty()));
    let records = f.broker.records();
    let record = records.iter().rfind(|r| r.peer_cert_cn.is_some()).unwrap();
    assert_eq!(record.peer_cert_cn.as_deref(), Some(id));
}

#[actix_rt::test]
async fn a_p256_key_in_the_token_provisions_over_tls_and_websocket() {
    let Some(hsm) = hsm() else { return };
    let f = Fixture::start(Script::new());
    let identity = token_identity(&f, hsm, "p256", "device-key", "hsm-p256");
    let signer = identity.signer().unwrap();
    assert_eq!(signer.scheme(), SignatureScheme::ECDSA_NISTP256_SHA256);
    // The URI names the key alone from now on: its id was found and added.
    assert_eq!(
        signer.locator().unwrap(),
        format!(
            "pkcs11:token=p256;object=device-key;id=%01?module-path={}",
            hsm.module.display()
        )
    );
    provisions(&f, identity.clone(), Protocol::Mqtt, "hsm-p256").await;
    provisions(&f, identity, Protocol::MqttWs, "hsm-p256").await;
}

#[actix_rt::test]
async fn a_p384_key_in_the_token_provisions() {
    let Some(hsm) = hsm() else { return };
    let f = Fixture::start(Script::new());
    let identity = token_identity(&f, hsm, "p384", "device-key", "hsm-p384");
    assert_eq!(
        identity.signer().unwrap().scheme(),
        SignatureScheme::ECDSA_NISTP384_SHA384
    );
    provisions(&f, identity, Protocol::Mqtt, "hsm-p384").await;
}

#[actix_rt::test]
async fn an_rsa_key_in_the_token_signs_with_pss() {
    let Some(hsm) = hsm() else { return };
    let f = Fixture::start(Script::new());
    let identity = token_identity(&f, hsm, "rsa", "device-key", "hsm-rsa");
    assert_eq!(
        identity.signer().unwrap().scheme(),
        SignatureScheme::RSA_PSS_SHA256
    );
    provisions(&f, identity, Protocol::Mqtt, "hsm-rsa").await;
}
