//! Certificate issuance end to end: `ProvisioningClient::register_with_certificate` against the
//! mock DPS over real TLS and WebSocket, from the CSR to the checked chain, the cache, renewal,
//! and provisioning again with the certificate the device was issued.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::*;
use dps_messages::error::CertificateError;
use dps_messages::{ApiVersion, Authentication, Protocol, ProvisioningError, SymmetricKey};
use dps_mock_broker::script::{ChainFault, DeviceScript, Step};
use dps_mock_broker::{IssuingCa, Script};
use dps_transport_actor::{CertificateOptions, ClientOptions, CsrPolicy, ProvisioningClient};

/// A broker issuing certificates, following `script`.
fn issuing(script: Script) -> Fixture {
    let ca = Arc::new(IssuingCa::generate().unwrap());
    Fixture::start_with(script, |b| b.issue_certificates(ca))
}

/// A device of the group enrollment: it onboards with a key derived from the group key.
fn group_device(id: &str) -> Authentication {
    SymmetricKey::from_group_key(GROUP_KEY, id).unwrap().into()
}

async fn client(
    f: &Fixture,
    protocol: Protocol,
    id: &str,
    options: ClientOptions,
) -> ProvisioningClient {
    let transport = f.transport_with(f.config(protocol), group_device(id)).await;
    ProvisioningClient::new(transport, options)
}

fn temp(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("dps-cert-{name}-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

#[actix_rt::test]
async fn a_device_is_issued_a_certificate_and_provisions_again_with_it() {
    let f = issuing(Script::new());
    for (protocol, id) in [(Protocol::Mqtt, "cert-mqtt"), (Protocol::MqttWs, "cert-ws")] {
        let provisioned = client(&f, protocol, id, fast_within(LONG))
            .await
            .register_with_certificate(f.request(protocol, id), &CertificateOptions::default())
            .await
            .unwrap();
        assert!(!provisioned.from_cache);
        let state = provisioned.result.registration_state.as_ref().unwrap();
        assert_eq!(state.device_id.as_deref(), Some(id));
        let issued = provisioned.certificate.unwrap();
        assert_eq!(issued.leaf().subject, format!("CN={id}"));
        assert!(issued.leaf().issuer.contains("issuing CA"));

        // On the wire: the preview api-version, and the CSR in the register body.
        let records = f.wait_all_closed().await;
        let record = records.iter().rev().find(|r| r.client_id == id).unwrap();
        let username = record.username.as_deref().unwrap();
        assert!(
            username.contains("/api-version=2025-07-01-preview&"),
            "{username}"
        );
        let (_, body) = &record.publishes()[0];
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["registrationId"], id);
        assert!(body["csr"].as_str().is_some_and(|c| !c.contains("-----")));

        // The issued certificate is an X.509 identity the service accepts.
        let transport = f
            .transport_with(f.config(protocol), issued.identity().clone().into())
            .await;
        let again = ProvisioningClient::new(transport, fast_within(LONG))
            .register(f.request(protocol, id))
            .await
            .unwrap();
        assert_eq!(again.status, dps_messages::RegistrationStatus::Assigned);
        let records = f.wait_all_closed().await;
        let last = records.iter().rev().find(|r| r.client_id == id).unwrap();
        assert_eq!(last.peer_cert_cn.as_deref(), Some(id));
        assert!(
            matches!(&last.connack, dps_mock_broker::record::Connack::Accepted { method } if method == "x509")
        );
    }
}

#[actix_rt::test]
async fn a_refused_csr_is_the_error_when_required_and_retried_without_it_if_offered() {
    let refuse = || Step::RefuseCsr {
        status: 400,
        error_code: Some(400_209),
    };
    let f = issuing(steps("refused", [refuse(), refuse()]));
    let error = client(&f, Protocol::Mqtt, "refused", fast_within(LONG))
        .await
        .register_with_certificate(
            f.request(Protocol::Mqtt, "refused"),
            &CertificateOptions::default(),
        )
        .await
        .unwrap_err();
    let service = error.service_error().expect("a service error");
    assert_eq!((service.status, service.error_code), (400, Some(400_209)));

    let if_offered = CertificateOptions {
        policy: CsrPolicy::IfOffered,
        ..CertificateOptions::default()
    };
    let provisioned = client(&f, Protocol::MqttWs, "refused", fast_within(LONG))
        .await
        .register_with_certificate(f.request(Protocol::MqttWs, "refused"), &if_offered)
        .await
        .unwrap();
    assert!(provisioned.certificate.is_none());
    assert_eq!(
        provisioned.result.status,
        dps_messages::RegistrationStatus::Assigned
    );
    // The fallback registered again without the CSR, announcing the default version.
    let records = f.wait_all_closed().await;
    let last = records.last().unwrap();
    assert!(
        last.username
            .as_deref()
            .unwrap()
            .contains("api-version=2019-03-31")
    );
    assert!(!last.publishes()[0].1.contains("csr"));
}

#[actix_rt::test]
async fn a_missing_chain_is_an_error_when_required_and_no_identity_if_offered() {
    let missing = || Step::SpoilChain {
        fault: ChainFault::Missing,
    };
    let default = || Step::Default { delay_ms: 0 };
    let f = issuing(steps(
        "nochain",
        [default(), missing(), default(), missing()],
    ));
    let path = temp("nochain");
    let options = ClientOptions {
        cache_file: Some(path.clone()),
        ..fast_within(LONG)
    };
    let error = client(&f, Protocol::Mqtt, "nochain", options.clone())
        .await
        .register_with_certificate(
            f.request(Protocol::Mqtt, "nochain"),
            &CertificateOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ProvisioningError::Certificate(CertificateError::NoChainIssued)
        ),
        "{error:?}"
    );
    assert!(!path.exists(), "nothing is cached");
    let if_offered = CertificateOptions {
        policy: CsrPolicy::IfOffered,
        ..CertificateOptions::default()
    };
    let provisioned = client(&f, Protocol::Mqtt, "nochain", options)
        .await
        .register_with_certificate(f.request(Protocol::Mqtt, "nochain"), &if_offered)
        .await
        .unwrap();
    assert!(provisioned.certificate.is_none() && !provisioned.from_cache);
    std::fs::remove_file(&path).unwrap();
}

#[actix_rt::test]
async fn a_spoiled_chain_is_refused_by_the_check_it_fails_and_not_cached() {
    let faults = [
        ("malformed", ChainFault::Malformed),
        ("empty", ChainFault::Empty),
        ("otherkey", ChainFault::OtherKey),
        ("othername", ChainFault::OtherName),
        ("expired", ChainFault::Expired),
    ];
    let script = faults.iter().fold(Script::new(), |script, (id, fault)| {
        script.device(
            *id,
            DeviceScript::new()
                .request(Step::Default { delay_ms: 0 })
                .request(Step::SpoilChain { fault: *fault }),
        )
    });
    let f = issuing(script);
    for (id, fault) in faults {
        let path = temp(id);
        let options = ClientOptions {
            cache_file: Some(path.clone()),
            ..fast_within(LONG)
        };
        let protocol = if id.len() % 2 == 0 {
            Protocol::Mqtt
        } else {
            Protocol::MqttWs
        };
        let error = client(&f, protocol, id, options)
            .await
            .register_with_certificate(f.request(protocol, id), &CertificateOptions::default())
            .await
            .unwrap_err();
        let ProvisioningError::Certificate(error) = error else {
            panic!("{id}: {error:?}")
        };
        let named = match fault {
            ChainFault::Malformed => {
                matches!(error, CertificateError::Undecodable { index: 0, .. })
            }
            ChainFault::Empty => error == CertificateError::EmptyChain,
            ChainFault::OtherKey => error == CertificateError::LeafKeyMismatch,
            ChainFault::OtherName => matches!(error, CertificateError::LeafNameMismatch { .. }),
            ChainFault::Expired => matches!(error, CertificateError::Expired { .. }),
            ChainFault::Missing => unreachable!(),
        };
        assert!(named, "{id}: {error:?}");
        assert!(!path.exists(), "{id}: nothing is cached");
    }
}

#[actix_rt::test]
async fn a_csr_with_an_api_version_too_old_is_refused_before_connecting() {
    let f = issuing(Script::new());
    let request = f
        .request(Protocol::Mqtt, "old")
        .with_api_version(ApiVersion::V2021_06_01);
    let error = client(&f, Protocol::Mqtt, "old", fast_within(LONG))
        .await
        .register_with_certificate(request, &CertificateOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            ProvisioningError::Certificate(CertificateError::ApiVersionTooOld(v)) if v == "2021-06-01"
        ),
        "{error:?}"
    );
    assert!(f.broker.records().is_empty(), "nothing was sent");
}

/// The cache returns the certificate until its renewal window, then a new key is issued a new
/// certificate; a renewal that fails leaves the old certificate in place.
#[actix_rt::test]
async fn a_cached_certificate_is_kept_outside_its_renewal_window_and_renewed_inside() {
    let default = || Step::Default { delay_ms: 0 };
    let refuse = Step::RefuseCsr {
        status: 400,
        error_code: None,
    };
    let f = issuing(steps(
        "renew",
        [default(), default(), default(), default(), refuse],
    ));
    let path = temp("renew");
    let options = ClientOptions {
        cache_file: Some(path.clone()),
        ..fast_within(LONG)
    };
    let provision = |window: f64| {
        let options = options.clone();
        let f = &f;
        async move {
            let certificate = CertificateOptions {
                renewal_window: window,
                ..CertificateOptions::default()
            };
            client(f, Protocol::Mqtt, "renew", options)
                .await
                .register_with_certificate(f.request(Protocol::Mqtt, "renew"), &certificate)
                .await
        }
    };
    let first = provision(1.0 / 3.0).await.unwrap();
    let first_pem = first.certificate.as_ref().unwrap().chain_pem();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the cache holds the key");
    }

    // A fresh 30-day certificate is outside the last third: from the cache, no connection.
    let cached = provision(1.0 / 3.0).await.unwrap();
    assert!(cached.from_cache);
    assert_eq!(cached.certificate.unwrap().chain_pem(), first_pem);
    assert_eq!(f.broker.records().len(), 1);

    // A window of the whole lifetime: renewal is due now. A new key, a new certificate.
    let renewed = provision(1.0).await.unwrap();
    assert!(!renewed.from_cache);
    let renewed_pem = renewed.certificate.unwrap().chain_pem();
    assert_ne!(renewed_pem, first_pem);
    assert_eq!(f.broker.records().len(), 2);

    // The next renewal is refused: the error is returned and the cache still holds the last
    // good certificate.
    let error = provision(1.0).await.unwrap_err();
    assert_eq!(error.service_error().map(|e| e.status), Some(400));
    let kept = provision(1.0 / 3.0).await.unwrap();
    assert!(kept.from_cache);
    assert_eq!(kept.certificate.unwrap().chain_pem(), renewed_pem);
    std::fs::remove_file(&path).unwrap();
}

#[actix_rt::test]
async fn a_corrupt_cache_is_set_aside_and_never_trusted() {
    let f = issuing(Script::new());
    let path = temp("corrupt");
    let options = ClientOptions {
        cache_file: Some(path.clone()),
        ..fast_within(LONG)
    };
    // Half a file, as a crash in an older version's plain write could leave.
    std::fs::write(&path, r#"{"id_scope": "0ne0000"#).unwrap();
    let provisioned = client(&f, Protocol::Mqtt, "corrupt", options)
        .await
        .register_with_certificate(
            f.request(Protocol::Mqtt, "corrupt"),
            &CertificateOptions::default(),
        )
        .await
        .unwrap();
    assert!(!provisioned.from_cache && provisioned.certificate.is_some());
    let aside = PathBuf::from(format!("{}.corrupt", path.display()));
    assert_eq!(
        std::fs::read_to_string(&aside).unwrap(),
        r#"{"id_scope": "0ne0000"#
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(saved["certificate"]["chain_pem"].is_string());
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(&aside).unwrap();
}
