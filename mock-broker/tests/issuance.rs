//! Certificate issuance over real TLS and WebSocket, driven by a plain MQTT client: what the
//! mock DPS checks in a CSR, what it issues, and that it then accepts what it issued.

mod common;

use std::sync::Arc;

use base64::Engine;
use common::*;
use dps_messages::certificate::KeyCurve;
use dps_messages::response::ResponseTopic;
use dps_messages::{ApiVersion, CertificateRequest};
use dps_mock_broker::record::Connack;
use dps_mock_broker::script::{ChainFault, DeviceScript, Step};
use dps_mock_broker::{BrokerHandle, CertifiedPem, IssuingCa, MockBroker, Script, TestPki};
use serde_json::{Value, json};

const PREVIEW: ApiVersion = ApiVersion::V2025_07_01Preview;

/// A broker issuing certificates (unless `issuing` is false), following `script`.
fn start(issuing: bool, script: Script) -> (Arc<BrokerHandle>, Arc<TestPki>) {
    let pki = Arc::new(TestPki::generate().unwrap());
    let mut builder = MockBroker::builder()
        .pki(pki.clone())
        .retry_after(0)
        .script(script);
    if issuing {
        builder = builder.issue_certificates(Arc::new(IssuingCa::generate().unwrap()));
    }
    (Arc::new(builder.start().unwrap()), pki)
}

/// An X.509 device `id` announcing `version`.
fn device(broker: &BrokerHandle, pki: &TestPki, id: &str, version: &ApiVersion) -> Options {
    let username = dps_messages::connect::username(dps_mock_broker::DEFAULT_ID_SCOPE, id, version);
    Options::new(broker, id)
        .identity(pki.device(id).unwrap())
        .username(username)
}

/// Registers with `csr` in the body; the response's status and body.
async fn register_csr(client: &mut Client, id: &str, csr: &str) -> (u16, Value) {
    let body = json!({"registrationId": id, "csr": csr});
    client
        .publish(&register_topic("r1"), body.to_string().as_bytes())
        .await;
    let (topic, body) = client.next(LONG).await.unwrap();
    (ResponseTopic::parse(&topic).unwrap().status, body)
}

/// Polls `operation` once; the registration state answered.
async fn poll(client: &mut Client, operation: &Value) -> Value {
    let op = operation.as_str().unwrap();
    client.publish(&poll_topic("r2", op), b" ").await;
    let (topic, body) = client.next(LONG).await.unwrap();
    assert_eq!(ResponseTopic::parse(&topic).unwrap().status, 200, "{body}");
    body["registrationState"].clone()
}

#[test]
fn a_csr_gets_a_certificate_which_the_broker_then_accepts_as_the_devices() {
    let (broker, pki) = start(true, Script::new());
    let shared = broker.clone();
    run(async move {
        let broker = &*shared;
        for (via, curve) in [(Via::Tls, KeyCurve::P384), (Via::Wss, KeyCurve::P256)] {
            let csr = CertificateRequest::generate_with("dev-1", curve).unwrap();
            let options = device(broker, &pki, "dev-1", &PREVIEW.clone()).via(via);
            let mut client = connect(broker, options).await.unwrap();
            client.subscribe().await;
            let (status, body) = register_csr(&mut client, "dev-1", &csr.csr_base64()).await;
            assert_eq!(status, 202, "{body}");
            let state = poll(&mut client, &body["operationId"]).await;
            let chain: Vec<String> =
                serde_json::from_value(state["issuedCertificateChain"].clone()).unwrap();
            assert_eq!(chain.len(), 2, "leaf, then the issuing CA");
            let issued = csr.accept(&chain, std::time::SystemTime::now()).unwrap();
            let ca = broker.issuing_ca().unwrap().cert_pem();
            let ca_der = rustls::pki_types::pem::PemObject::from_pem_slice(ca.as_bytes())
                .map(|c: rustls::pki_types::CertificateDer| c.to_vec())
                .unwrap();
            let second = base64::engine::general_purpose::STANDARD
                .decode(&chain[1])
                .unwrap();
            assert_eq!(second, ca_der);
            client.sink.close();

            // The issued certificate is a device certificate the broker accepts.
            let issued = CertifiedPem {
                cert_pem: issued.chain_pem(),
                key_pem: issued.private_key_pem().unwrap(),
            };
            let options = device(broker, &pki, "dev-1", &ApiVersion::default())
                .identity(issued)
                .via(via);
            let client = connect(broker, options).await.unwrap();
            client.sink.close();
        }
    });
    let records = broker.records();
    let accepted = records
        .iter()
        .filter(|r| matches!(&r.connack, Connack::Accepted { method } if method == "x509"))
        .count();
    assert_eq!(accepted, 4);
    assert!(
        records[0]
            .username
            .as_deref()
            .unwrap()
            .contains("api-version=2025-07-01-preview")
    );
}

#[test]
fn the_issued_validity_is_the_brokers_setting() {
    let pki = Arc::new(TestPki::generate().unwrap());
    let broker = Arc::new(
        MockBroker::builder()
            .pki(pki.clone())
            .retry_after(0)
            .issue_certificates(Arc::new(IssuingCa::generate().unwrap()))
            .issued_validity(std::time::Duration::from_secs(3_600))
            .start()
            .unwrap(),
    );
    let shared = broker.clone();
    run(async move {
        let broker = &*shared;
        let csr = CertificateRequest::generate("dev-1").unwrap();
        let mut client = connect(broker, device(broker, &pki, "dev-1", &PREVIEW.clone()))
            .await
            .unwrap();
        client.subscribe().await;
        let (_, body) = register_csr(&mut client, "dev-1", &csr.csr_base64()).await;
        let state = poll(&mut client, &body["operationId"]).await;
        let chain: Vec<String> =
            serde_json::from_value(state["issuedCertificateChain"].clone()).unwrap();
        let leaf = csr
            .accept(&chain, std::time::SystemTime::now())
            .unwrap()
            .leaf()
            .clone();
        let lifetime = leaf.not_after.duration_since(leaf.not_before).unwrap();
        // An hour, and the five minutes it is backdated.
        assert_eq!(lifetime.as_secs(), 3_600 + 300);
    });
}

#[test]
fn each_documented_csr_check_is_a_400_that_says_which() {
    let (broker, pki) = start(true, Script::new());
    let (plain, plain_pki) = start(false, Script::new());
    run(async move {
        let good = CertificateRequest::generate("dev-1").unwrap();
        let b64 = good.csr_base64();
        let armoured = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n"
        );
        let other_cn = CertificateRequest::generate("dev-2").unwrap().csr_base64();
        let mut tampered = good.csr_der().to_vec();
        *tampered.last_mut().unwrap() ^= 1;
        let tampered = base64::engine::general_purpose::STANDARD.encode(tampered);
        let rsa = include_str!("../src/issuance/rsa-csr-dev-1.b64").trim();
        let cases: [(&str, &str, &ApiVersion, &str); 7] = [
            ("PEM armour", &armoured, &PREVIEW, "PEM armour"),
            ("bad base64", "%%%", &PREVIEW, "not base64"),
            ("RSA", rsa, &PREVIEW, "RSA"),
            ("another CN", &other_cn, &PREVIEW, "not the registration id"),
            (
                "bad signature",
                &tampered,
                &PREVIEW,
                "signature does not verify",
            ),
            (
                "old api-version",
                &b64,
                &ApiVersion::V2021_06_01,
                "api-version `2021-06-01`",
            ),
            ("no policy", &b64, &PREVIEW, "no certificate policy"),
        ];
        for (case, csr, version, says) in cases {
            let (broker, pki) = if case == "no policy" {
                (&*plain, &*plain_pki)
            } else {
                (&*broker, &*pki)
            };
            let mut client = connect(broker, device(broker, pki, "dev-1", version))
                .await
                .unwrap();
            client.subscribe().await;
            let (status, body) = register_csr(&mut client, "dev-1", csr).await;
            assert_eq!(status, 400, "{case}: {body}");
            let message = body["message"].as_str().unwrap();
            assert!(message.contains(says), "{case}: {message}");
            assert_eq!(body["errorCode"], 400001, "{case}");
            client.sink.close();
        }
    });
}

#[test]
fn scripted_refusals_and_spoiled_chains_reach_the_device() {
    let script = Script::new()
        .device(
            "refused",
            DeviceScript::new().request(Step::RefuseCsr {
                status: 403,
                error_code: Some(403_123),
            }),
        )
        .device(
            "spoiled",
            DeviceScript::new()
                .request(Step::Default { delay_ms: 0 })
                .request(Step::SpoilChain {
                    fault: ChainFault::Missing,
                }),
        );
    let (broker, pki) = start(true, script);
    run(async move {
        let broker = &*broker;
        let csr = CertificateRequest::generate("refused").unwrap();
        let options = device(broker, &pki, "refused", &PREVIEW.clone()).via(Via::Wss);
        let mut client = connect(broker, options).await.unwrap();
        client.subscribe().await;
        let (status, body) = register_csr(&mut client, "refused", &csr.csr_base64()).await;
        assert_eq!((status, &body["errorCode"]), (403, &json!(403_123)));
        // Without a CSR the same device registers.
        client
            .publish(&register_topic("r3"), br#"{"registrationId":"refused"}"#)
            .await;
        let (topic, _) = client.next(LONG).await.unwrap();
        assert_eq!(ResponseTopic::parse(&topic).unwrap().status, 202);

        let csr = CertificateRequest::generate("spoiled").unwrap();
        let mut client = connect(broker, device(broker, &pki, "spoiled", &PREVIEW.clone()))
            .await
            .unwrap();
        client.subscribe().await;
        let (status, body) = register_csr(&mut client, "spoiled", &csr.csr_base64()).await;
        assert_eq!(status, 202);
        let state = poll(&mut client, &body["operationId"]).await;
        assert_eq!(state["status"], "assigned");
        assert!(state.get("issuedCertificateChain").is_none(), "{state}");
    });
}
