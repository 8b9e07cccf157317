//! Credentials checked as DPS checks them: the certificate's CN and CA, and SAS tokens.

use super::*;

#[test]
fn x509_cn_must_match_the_client_id_and_chain_to_the_device_ca() {
    let (broker, pki) = broker_with(Script::new());
    let stranger = TestPki::generate().unwrap();
    let shared = broker.clone();
    run(async move {
        let b = &*shared;
        // A valid certificate for someone else.
        let mismatched = Options::new(b, "dev").identity(pki.device("not-dev").unwrap());
        assert_eq!(
            refused_with(connect(b, mismatched).await),
            ConnectAckReason::NotAuthorized
        );
        // A certificate from a CA the broker does not trust: the TLS handshake fails.
        let untrusted = Options::new(b, "dev").identity(stranger.device("dev").unwrap());
        assert!(connect(b, untrusted).await.is_err());
    });
    let records = broker.records();
    assert!(
        matches!(&records[0].connack, Connack::Refused { code: 5, reason } if reason.contains("CN")),
        "{records:?}"
    );
    assert_eq!(records[0].peer_cert_cn.as_deref(), Some("not-dev"));
    // The untrusted device never got as far as CONNECT.
    assert_eq!(records.len(), 1);
}

#[test]
fn sas_tokens_are_verified() {
    const GROUP: &str = dps_mock_broker::TEST_GROUP_KEY;
    let broker = Arc::new(
        MockBroker::builder()
            .symmetric_key("sas-dev", KEY)
            .group_key(GROUP)
            .start()
            .unwrap(),
    );
    let shared = broker.clone();
    run(async move {
        let b = &*shared;
        let group_device = SymmetricKey::from_group_key(GROUP, "grouped").unwrap();
        let token =
            group_device.sas_token(dps_mock_broker::DEFAULT_ID_SCOPE, "grouped", far_future());
        let ok = Options::new(b, "grouped").password(token.to_string());
        assert!(connect(b, ok).await.is_ok());
        assert!(
            connect(b, sas(b, "sas-dev", KEY, far_future()))
                .await
                .is_ok()
        );

        let wrong_key = sas(b, "sas-dev", "AAAA", far_future());
        assert_eq!(
            refused_with(connect(b, wrong_key).await),
            ConnectAckReason::NotAuthorized
        );
        let expired = sas(b, "sas-dev", KEY, 1_000);
        assert_eq!(
            refused_with(connect(b, expired).await),
            ConnectAckReason::NotAuthorized
        );
        let no_broker_without_group = MockBroker::builder()
            .symmetric_key("sas-dev", KEY)
            .start()
            .unwrap();
        let unknown = sas(&no_broker_without_group, "stranger", KEY, far_future());
        assert_eq!(
            refused_with(connect(&no_broker_without_group, unknown).await),
            ConnectAckReason::NotAuthorized
        );
        let bad_user = sas(b, "sas-dev", KEY, far_future()).username("sas-dev");
        assert_eq!(
            refused_with(connect(b, bad_user).await),
            ConnectAckReason::BadUserNameOrPassword
        );
        let wrong_scope = sas(b, "sas-dev", KEY, far_future())
            .username(common::username("0ne99999999", "sas-dev"));
        assert_eq!(
            refused_with(connect(b, wrong_scope).await),
            ConnectAckReason::NotAuthorized
        );
    });
    let records = broker.records();
    assert_eq!(
        records[0].connack,
        Connack::Accepted {
            method: "group_key".into()
        }
    );
    let reasons: Vec<String> = records[2..]
        .iter()
        .map(|r| match &r.connack {
            Connack::Refused { reason, .. } => reason.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(reasons[0].contains("signature"), "{reasons:?}");
    assert!(reasons[1].contains("expired"), "{reasons:?}");
    assert!(reasons[2].contains("username"), "{reasons:?}");
    assert!(reasons[3].contains("scope"), "{reasons:?}");
}
