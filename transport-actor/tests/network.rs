//! The networks devices really live on: a service that is not reachable yet when the device
//! boots, over real sockets.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use common::*;
use dps_messages::error::{Stage, TransportErrorKind};
use dps_messages::{Protocol, ProvisioningError};
use dps_mock_broker::{MockBroker, Script};
use dps_transport_actor::ProvisioningClient;

/// Accepts `n` connections on `listener` and resets each at once (RST), as a port whose
/// service has not started behind a load balancer does; returns when all `n` came.
fn reset_connections(listener: TcpListener, n: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for _ in 0..n {
            let (stream, _) = listener.accept().unwrap();
            let socket = socket2::Socket::from(stream);
            socket.set_linger(Some(Duration::ZERO)).unwrap();
            drop(socket);
        }
    })
}

/// At boot the network and the service come up after the device starts: its first attempts
/// are reset, then the service listens on the same port and the registration succeeds within
/// its deadline.
#[actix_rt::test]
async fn a_service_that_comes_up_late_is_reached_within_the_deadline() {
    let early = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = early.local_addr().unwrap();
    let resetter = reset_connections(early, 2);

    // The broker-to-be's PKI, so the client trusts it from the start.
    let pki = std::sync::Arc::new(dps_mock_broker::TestPki::generate().unwrap());
    let config = dps_transport_actor::TransportConfig::builder(Protocol::Mqtt)
        .ca_pem(pki.ca_pem())
        .build()
        .unwrap();
    let transport = {
        use actix::Actor;
        let addr = dps_transport_actor::ProvisioningTransportActor::new(config).start();
        addr.send(dps_messages::SetAuthentication(sas(KEY)))
            .await
            .unwrap();
        addr
    };
    let client = ProvisioningClient::new(transport, fast_within(LONG));
    let request = dps_messages::RegistrationRequest::new(SCOPE, "sas-dev")
        .with_endpoint(format!("mqtts://localhost:{}", addr.port()));
    let registration = actix_rt::spawn(async move { client.register(request).await });

    // Two attempts reset; then the service starts listening where the device looks for it.
    actix_rt::task::spawn_blocking(move || resetter.join().unwrap())
        .await
        .unwrap();
    let broker = MockBroker::builder()
        .pki(pki)
        .listen(addr)
        .retry_after(0)
        .symmetric_key("sas-dev", KEY)
        .start()
        .unwrap();
    let result = registration.await.unwrap().unwrap();
    assert_eq!(result.status, dps_messages::RegistrationStatus::Assigned);
    assert_eq!(broker.records().len(), 1);
}

/// A service that never comes up ends the registration at its deadline, and the error keeps
/// the last cause (refused) and how many attempts were made.
#[actix_rt::test]
async fn a_service_never_reached_times_out_with_the_last_cause_and_the_attempts() {
    let closed: SocketAddr = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let f = Fixture::start(Script::new());
    let transport = f.transport_with(f.config(Protocol::Mqtt), sas(KEY)).await;
    let client = ProvisioningClient::new(transport, fast_within(Duration::from_millis(600)));
    let request = dps_messages::RegistrationRequest::new(SCOPE, "sas-dev")
        .with_endpoint(format!("mqtts://127.0.0.1:{}", closed.port()));
    let error = client.register(request).await.unwrap_err();
    let ProvisioningError::Timeout {
        stage: Stage::Registration,
        attempts,
        last_failure: Some(last),
        ..
    } = &error
    else {
        panic!("{error:?}")
    };
    assert!(*attempts >= 2, "{error}");
    assert_eq!(last.transport_kind(), Some(TransportErrorKind::Unreachable));
    assert!(error.to_string().contains("attempts)"), "{error}");
    assert!(
        error.to_string().to_lowercase().contains("refused"),
        "{error}"
    );
}

/// Credentials the service refuses are not a network that is not up yet: no retry.
#[actix_rt::test]
async fn a_refused_credential_is_not_retried() {
    let f = Fixture::start(Script::new());
    let wrong = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let transport = f.transport_with(f.config(Protocol::Mqtt), sas(wrong)).await;
    let client = ProvisioningClient::new(transport, fast_within(LONG));
    let error = client
        .register(f.request(Protocol::Mqtt, "sas-dev"))
        .await
        .unwrap_err();
    assert!(error.is_unauthorized(), "{error:?}");
    assert_eq!(f.broker.records().len(), 1, "one attempt");
}

/// On a network that inspects TLS with a corporate root, the public web's roots fail and say
/// so; with the corporate root as an extra CA beside them, the device gets through.
#[actix_rt::test]
async fn an_extra_ca_beside_the_public_roots_is_trusted_and_a_refusal_names_the_roots() {
    use dps_transport_actor::TrustRoots;
    let f = Fixture::start(Script::new());
    for protocol in [Protocol::Mqtt, Protocol::MqttWs] {
        let public = f
            .builder(protocol)
            .trust(TrustRoots::public_web())
            .build()
            .unwrap();
        let transport = f.transport_with(public, sas(KEY)).await;
        let error = ProvisioningClient::new(transport, fast_within(LONG))
            .register(f.request(protocol, "sas-dev"))
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .ends_with("UnknownIssuer (trusted: the public web's roots)"),
            "{error}"
        );

        let roots = TrustRoots::public_web().with_extra_pem(f.broker.ca_pem().unwrap());
        let config = f.builder(protocol).trust(roots).build().unwrap();
        let transport = f.transport_with(config, sas(KEY)).await;
        let result = ProvisioningClient::new(transport, fast_within(LONG))
            .register(f.request(protocol, "sas-dev"))
            .await
            .unwrap();
        assert_eq!(result.status, dps_messages::RegistrationStatus::Assigned);
    }
}
