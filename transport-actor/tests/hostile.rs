//! The transport and the client against a service that breaks its promises: silence after the
//! SUBACK (a half-open link), a packet that trickles in, bytes that are not MQTT, a QoS 2
//! message, and a connection reset during the disconnect. Over real TLS sockets, against the
//! mock broker crate's hostile test server.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use common::*;
use dps_messages::error::{ProtocolError, Stage, TransportErrorKind};
use dps_messages::{
    Disconnect, ProvisioningError, Register, RegistrationRequest, SetAuthentication,
};
use dps_mock_broker::hostile::{HostileServer, Misbehaviour, Seen, packets};
use dps_transport_actor::{
    ClientOptions, ProvisioningClient, ProvisioningTransportActor, Timeouts, TransportConfig,
};

/// The client's deadline and grace in these tests.
const DEADLINE: Duration = Duration::from_millis(400);
const GRACE: Duration = Duration::from_millis(300);
/// What a call may take beyond its deadline and grace on a loaded machine; far below the
/// transport's own stage timeouts (`LONG`), which the old behaviour waited out.
const SLACK: Duration = Duration::from_secs(3);

fn server(misbehaviour: Misbehaviour) -> Arc<HostileServer> {
    Arc::new(HostileServer::start(misbehaviour).unwrap())
}

/// A transport trusting `server`, whose own stage deadlines are all `LONG`, so that only the
/// deadline and grace under test can end a call in time.
async fn transport(server: &HostileServer) -> Addr<ProvisioningTransportActor> {
    let config = TransportConfig::builder(dps_messages::Protocol::Mqtt)
        .ca_pem(server.ca_pem())
        .timeouts(Timeouts {
            connect: LONG,
            subscribe: LONG,
            publish_ack: LONG,
            response: LONG,
            disconnect: LONG,
        })
        .build()
        .unwrap();
    let t = ProvisioningTransportActor::new(config).start();
    t.send(SetAuthentication(sas(KEY))).await.unwrap();
    t
}

fn request(server: &HostileServer) -> RegistrationRequest {
    RegistrationRequest::new(SCOPE, "dev").with_endpoint(server.uri())
}

fn options() -> ClientOptions {
    ClientOptions {
        min_interval: Duration::ZERO,
        max_interval: Duration::from_millis(50),
        deadline: DEADLINE,
        close_grace: GRACE,
        ..ClientOptions::default()
    }
}

/// Waits (off the actor's thread) until `done` holds for what the server saw.
async fn wait_for(
    server: &Arc<HostileServer>,
    done: impl FnMut(&[Seen]) -> bool + Send + 'static,
) -> Vec<Seen> {
    let server = server.clone();
    tokio::task::spawn_blocking(move || server.wait_until(LONG, done))
        .await
        .unwrap()
        .unwrap()
}

/// Waits until the client has closed every connection it opened.
async fn all_closed(server: &Arc<HostileServer>) -> Vec<Seen> {
    wait_for(server, |seen| {
        !seen.is_empty() && seen.iter().all(|s| s.closed_after.is_some())
    })
    .await
}

/// A registration against `server` returns within its deadline plus the close grace, and the
/// connection is dropped.
async fn registration_is_bounded(server: Arc<HostileServer>) {
    registration_within(server, SLACK, || ()).await;
}

/// A registration against `server`, with `load` held while it runs, times out within its
/// deadline plus the close grace plus `slack`, and the connection is dropped; how long it took.
async fn registration_within<L>(
    server: Arc<HostileServer>,
    slack: Duration,
    load: impl FnOnce() -> L,
) -> Duration {
    let client = ProvisioningClient::new(transport(&server).await, options());
    let load = load();
    let started = Instant::now();
    let err = client.register(request(&server)).await.unwrap_err();
    let took = started.elapsed();
    drop(load);
    assert!(
        matches!(
            err,
            ProvisioningError::Timeout {
                stage: Stage::Registration,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        took < DEADLINE + GRACE + slack,
        "register took {took:?}, over its deadline {DEADLINE:?} + grace {GRACE:?} + {slack:?}"
    );
    all_closed(&server).await;
    took
}

/// Issue 10, item 1: a service that goes silent after the SUBACK (a half-open link) once held
/// `register` for the deadline plus the transport's 30 s disconnect timeout (UNSUBSCRIBE
/// waiting for its UNSUBACK). The close after a deadline is brief now.
#[actix_rt::test]
async fn a_deadline_is_kept_against_a_service_silent_after_suback() {
    let server = server(Misbehaviour::SilentAfterSuback);
    registration_is_bounded(server.clone()).await;
    // The register went out and was never acknowledged.
    assert!(server.seen()[0].packets.contains(&"PUBLISH".to_owned()));
}

/// The same for a service that declares a large packet after the SUBACK and trickles it.
#[actix_rt::test]
async fn a_deadline_is_kept_against_a_service_that_trickles_a_packet() {
    registration_is_bounded(server(Misbehaviour::TrickleAfterSuback {
        declared: 512 * 1024,
        every: Duration::from_millis(50),
    }))
    .await;
}

/// Threads that keep every core busy until dropped.
struct BusyCores {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl BusyCores {
    fn start() -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut spins = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        spins = std::hint::black_box(spins.wrapping_add(1));
                    }
                    spins
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for BusyCores {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Issue 20, item 3: the deadline holds on a loaded machine too. Every core spins while the
/// service declares a 50,000-byte PUBLISH after the SUBACK and sends it a byte a second: the
/// call returns within its deadline plus the close grace plus half a second.
#[actix_rt::test]
async fn a_deadline_is_kept_against_a_trickle_while_every_core_is_busy() {
    let server = server(Misbehaviour::TrickleAfterSuback {
        declared: 50_000,
        every: Duration::from_secs(1),
    });
    let took = registration_within(server, Duration::from_millis(500), BusyCores::start).await;
    println!("returned after {took:?} with every core busy");
}

/// Dropping the future of `register` (an outer timeout, a `select!`) frees the client for the
/// next call and cancels what was in flight: the connection is closed.
#[actix_rt::test]
async fn a_dropped_registration_frees_the_client_and_closes_the_connection() {
    let server = server(Misbehaviour::SilentAfterSuback);
    let client = ProvisioningClient::new(
        transport(&server).await,
        ClientOptions {
            deadline: LONG,
            ..options()
        },
    );
    let dropped = tokio::time::timeout(DEADLINE, client.register(request(&server))).await;
    assert!(dropped.is_err(), "the outer timeout ended the registration");
    all_closed(&server).await;
    // The next call runs (rather than failing with OperationInProgress) and reconnects.
    let next = tokio::time::timeout(DEADLINE, client.register(request(&server))).await;
    assert!(
        next.is_err(),
        "the second registration ran until the outer timeout"
    );
    let seen = all_closed(&server).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
}

/// A bare `Disconnect` with a grace, on a half-open link: answered when the grace passes (the
/// UNSUBACK never came), and the connection is dropped.
#[actix_rt::test]
async fn a_disconnect_within_a_grace_is_bounded_on_a_half_open_link() {
    let server = server(Misbehaviour::SilentAfterSuback);
    let t = transport(&server).await;
    let pending = t.send(Register {
        request: request(&server),
    });
    // CONNECT, SUBSCRIBE, PUBLISH: the register is in flight.
    wait_for(&server, |seen| {
        seen.first().is_some_and(|s| s.packets.len() >= 3)
    })
    .await;
    let started = Instant::now();
    let result = t.send(Disconnect::within(GRACE)).await.unwrap();
    assert!(started.elapsed() < GRACE + SLACK);
    assert!(
        matches!(
            result,
            Err(ProvisioningError::Timeout {
                stage: Stage::Disconnect,
                after,
                ..
            }) if after == GRACE
        ),
        "{result:?}"
    );
    assert!(matches!(
        pending.await.unwrap(),
        Err(ProvisioningError::OperationCancelled)
    ));
    let seen = all_closed(&server).await;
    assert!(
        seen[0].packets.contains(&"UNSUBSCRIBE".to_owned()),
        "{seen:?}"
    );
}

/// Issue 10, item 4: a service that breaks the protocol is named as such, not as "subscribe
/// failed: Peer is disconnected".
#[actix_rt::test]
async fn a_service_that_breaks_the_protocol_is_named() {
    for (what, bytes, says) in [
        ("garbage", packets::garbage(), "Decod"),
        ("oversized", packets::oversized(2 * 1024 * 1024), "Decod"),
        ("invalid UTF-8 topic", packets::invalid_utf8_topic(), "Utf8"),
        ("QoS 2", packets::qos2_publish(), "QoS 2 PUBLISH"),
    ] {
        let server = server(Misbehaviour::SendAfterSuback(bytes));
        let t = transport(&server).await;
        let err = t
            .send(Register {
                request: request(&server),
            })
            .await
            .unwrap()
            .unwrap_err();
        let ProvisioningError::Protocol(ProtocolError::Violation(why)) = &err else {
            panic!("{what}: {err:?}")
        };
        assert!(why.contains(says), "{what}: {why}");
        assert!(
            err.to_string().contains("broke the MQTT protocol"),
            "{what}: {err}"
        );
        let seen = all_closed(&server).await;
        // A QoS 2 PUBLISH is not answered with a PUBACK.
        assert!(
            !seen[0].packets.contains(&"PUBACK".to_owned()),
            "{what}: {seen:?}"
        );
    }
}

// SRS_NODE_PROVISIONING_MQTT_18_048: a disconnect whose connection breaks (here: reset right
// after the UNSUBACK) reports the failure, as the disconnect's error.
#[actix_rt::test]
async fn srs_18_048_a_connection_reset_during_the_disconnect_is_its_error() {
    let server = server(Misbehaviour::ResetAfterUnsuback);
    let config = TransportConfig::builder(dps_messages::Protocol::Mqtt)
        .ca_pem(server.ca_pem())
        .response_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let t = ProvisioningTransportActor::new(config).start();
    t.send(SetAuthentication(sas(KEY))).await.unwrap();
    // The PUBLISH is acknowledged and never answered: connected and idle afterwards.
    let err = t
        .send(Register {
            request: request(&server),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProvisioningError::Timeout {
                stage: Stage::Response,
                ..
            }
        ),
        "{err:?}"
    );
    let err = t.send(Disconnect::default()).await.unwrap().unwrap_err();
    assert_eq!(
        err.transport_kind(),
        Some(TransportErrorKind::Disconnect),
        "{err:?}"
    );
}

/// After retries end at the deadline, the error keeps the cause of the last failure.
#[actix_rt::test]
async fn a_deadline_after_retries_keeps_the_last_failure() {
    let server = server(Misbehaviour::SendAfterSuback(Vec::new()));
    // Each attempt's response never comes; the transport's own response deadline, shorter than
    // the registration's, ends each one and the client tries again.
    let config = TransportConfig::builder(dps_messages::Protocol::Mqtt)
        .ca_pem(server.ca_pem())
        .response_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let t = ProvisioningTransportActor::new(config).start();
    t.send(SetAuthentication(sas(KEY))).await.unwrap();
    let client = ProvisioningClient::new(t, options());
    let err = client.register(request(&server)).await.unwrap_err();
    let ProvisioningError::Timeout {
        stage: Stage::Registration,
        last_failure: Some(last),
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert!(
        matches!(
            **last,
            ProvisioningError::Timeout {
                stage: Stage::Response,
                ..
            }
        ),
        "{last:?}"
    );
    assert!(
        err.to_string().contains(
            "the last attempt failed: timed out after 100ms waiting for the service's response"
        ),
        "{err}"
    );
}
