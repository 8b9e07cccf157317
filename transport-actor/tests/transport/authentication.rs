//! The device's credentials (`setAuthentication`, SRS 18_001 and 18_037), and the certificate
//! and token checks on both sides of the TLS handshake.

use super::*;
use dps_mock_broker::TlsVersions;

// SRS_NODE_PROVISIONING_MQTT_18_001: the certificate and key set by setAuthentication are used
// to connect;
// SRS_NODE_PROVISIONING_MQTT_18_037: the X.509 certificate is passed when connecting.
#[actix_rt::test]
async fn srs_18_001_and_18_037_the_x509_identity_is_presented() {
    let f = Fixture::start(Script::new());
    let (_, polled) = register_and_poll(&f, MQTT, "cert-dev").await;
    assert_eq!(polled.result.status, RegistrationStatus::Assigned);
    let record = &f.broker.records()[0];
    assert_eq!(record.peer_cert_cn.as_deref(), Some("cert-dev"));
    assert_eq!(
        record.connack,
        Connack::Accepted {
            method: "x509".into()
        }
    );
    assert!(!record.password_present);
}

// SRS_NODE_PROVISIONING_MQTT_18_001 (symmetric key): the key set by setAuthentication signs the
// SAS token the device connects with.
#[actix_rt::test]
async fn srs_18_001_a_symmetric_key_signs_the_password() {
    let f = Fixture::start(Script::new());
    let t = f.transport_with(f.config(MQTT), sas(KEY)).await;
    let r = f.register(&t, MQTT, "sas-dev").await.unwrap();
    assert_eq!(r.status_code, 202);
    let record = &f.broker.records()[0];
    assert!(record.password_present && record.peer_cert_cn.is_none());
    assert_eq!(
        record.connack,
        Connack::Accepted {
            method: "symmetric_key".into()
        }
    );
}

#[actix_rt::test]
async fn a_group_enrollment_device_key_connects() {
    let f = Fixture::start(Script::new());
    let key = dps_messages::SymmetricKey::from_group_key(GROUP_KEY, "grouped-7").unwrap();
    let t = f.transport_with(f.config(WS), key.into()).await;
    let r = f.register(&t, WS, "grouped-7").await.unwrap();
    assert_eq!(r.status_code, 202);
    assert_eq!(
        f.broker.records()[0].connack,
        Connack::Accepted {
            method: "group_key".into()
        }
    );
}

#[actix_rt::test]
async fn an_untrusted_server_certificate_fails_with_the_tls_reason() {
    let f = Fixture::start(Script::new());
    let stranger = dps_mock_broker::TestPki::generate().unwrap();
    for protocol in [MQTT, WS] {
        let config = f
            .builder(protocol)
            .ca_pem(stranger.ca_pem())
            .build()
            .unwrap();
        let t = f.transport_with(config, f.x509("dev")).await;
        let err = f.register(&t, protocol, "dev").await.unwrap_err();
        let ProvisioningError::Tls(tls) = &err else {
            panic!("{protocol:?}: {err:?}")
        };
        assert!(
            matches!(
                tls.error,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            ),
            "{tls:?}"
        );
        // The error says what was trusted, so "unknown issuer" can be understood.
        assert_eq!(
            err.to_string(),
            "TLS handshake failed: invalid peer certificate: UnknownIssuer (trusted: the given \
             CA file)"
        );
    }
    assert!(f.broker.records().is_empty());
}

/// A server that presents `chain_pem` but signs with `key_pem`, another key: an impostor that
/// copied a real server's public certificate. Serves one handshake attempt.
fn impostor(chain_pem: &str, key_pem: &str) -> std::net::SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::server::{ClientHello, ResolvesServerCert};
    use rustls::sign::CertifiedKey;

    #[derive(Debug)]
    struct Fixed(Arc<CertifiedKey>);
    impl ResolvesServerCert for Fixed {
        fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            Some(self.0.clone())
        }
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(Arc::new(CertifiedKey::new(chain, key)))));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        let mut tls = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        while tls.complete_io(&mut tcp).is_ok() && tls.is_handshaking() {}
    });
    addr
}

/// The transport remembers a server chain it verified (one verification for many connections),
/// but every handshake must still prove the server holds the certificate's key.
#[actix_rt::test]
async fn a_remembered_server_certificate_without_its_key_is_refused() {
    let f = Fixture::start(Script::new());
    let config = f.config(MQTT);
    let t = f.transport_with(config.clone(), f.x509("dev")).await;
    assert!(f.register(&t, MQTT, "dev").await.is_ok());

    let other_key = dps_mock_broker::TestPki::generate().unwrap().server.key_pem;
    let addr = impostor(&f.pki.server.cert_pem, &other_key);
    let request = request_to(addr, "dev");
    let t = f.transport_with(config, f.x509("dev")).await;
    let err = t.send(Register { request }).await.unwrap().unwrap_err();
    let ProvisioningError::Tls(tls) = &err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(
            tls.error,
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)
        ),
        "{tls:?}"
    );
}

#[actix_rt::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    // TLS 1.2 (the broker's default, as real DPS): the broker sends its alert mid-handshake and
    // closes. TLS 1.3: it rejects the certificate after the client's handshake is over and
    // closes. Either way the alert or the close names the certificate: a refusal, never an
    // outage a fleet would wait out.
    for versions in [TlsVersions::Tls12, TlsVersions::Tls13] {
        let f = Fixture::start_with(Script::new(), |b| b.tls_versions(versions));
        let stranger = dps_mock_broker::TestPki::generate().unwrap();
        let device = stranger.device("dev").unwrap();
        let identity = dps_messages::X509Identity::from_pem(
            device.cert_pem.as_bytes(),
            device.key_pem.as_bytes(),
        )
        .unwrap();
        let t = f.transport_with(f.config(MQTT), identity.into()).await;
        let err = f.register(&t, MQTT, "dev").await.unwrap_err();
        match &err {
            ProvisioningError::Tls(_) => {}
            ProvisioningError::Transport(TransportError {
                kind: TransportErrorKind::Connect,
                detail,
            }) => {
                assert!(
                    detail.contains("client certificate"),
                    "{versions:?}: {detail}"
                )
            }
            other => panic!("{versions:?}: {other:?}"),
        }
        assert!(f.broker.records().is_empty());
    }
}

#[actix_rt::test]
async fn a_certificate_for_another_device_is_not_authorized() {
    let f = Fixture::start(Script::new());
    let t = f
        .transport_with(f.config(MQTT), f.x509("someone-else"))
        .await;
    let err = f.register(&t, MQTT, "dev").await.unwrap_err();
    assert!(
        matches!(
            err,
            ProvisioningError::ConnectionRefused(ConnackRefusal::NotAuthorized)
        ),
        "{err:?}"
    );
}

#[actix_rt::test]
async fn an_expired_sas_token_is_not_authorized() {
    let f = Fixture::start(Script::new());
    let config = f
        .builder(MQTT)
        .sas_token_ttl(Duration::ZERO)
        .build()
        .unwrap();
    let t = f.transport_with(config, sas(KEY)).await;
    let err = f.register(&t, MQTT, "sas-dev").await.unwrap_err();
    assert!(
        matches!(
            err,
            ProvisioningError::ConnectionRefused(ConnackRefusal::NotAuthorized)
        ),
        "{err:?}"
    );
    assert!(
        matches!(&f.broker.records()[0].connack, Connack::Refused { reason, .. } if reason.contains("expired"))
    );
}

#[actix_rt::test]
async fn a_request_without_credentials_fails_without_connecting() {
    let f = Fixture::start(Script::new());
    let t = ProvisioningTransportActor::new(f.config(MQTT)).start();
    let err = f.register(&t, MQTT, "dev").await.unwrap_err();
    assert!(matches!(err, ProvisioningError::Auth(AuthError::Missing)));
    assert!(f.broker.records().is_empty());
}
