//! The floor over the wire: the client's side of bare TLS handshakes with a real broker over
//! TCP, as many as a run has devices, `concurrency` at a time on one thread.
//!
//! The in-memory floor (`floor.rs`) prices the handshake's cryptography for both ends; a
//! provisioning client also pays the kernel for its connection (`connect`, the flights sent and
//! read, `close`), which on loopback includes the receiving side's TCP work. This floor pays both
//! and nothing else: no MQTT, no actors, no files; the server's chain is verified once (as the
//! transport's verdict cache does) and its signature over every handshake each time. What a
//! provisioning client costs above it is its own; what another client costs, divided by it, is
//! the most any client built on rustls and ring could beat that client by on this machine.
//! With `--exchange`, each connection also carries DPS's MQTT exchange (`floor_exchange.rs`).

use std::cell::Cell;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dps_messages::Authentication;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;

use super::probes::cpu_seconds;
use super::report::{BenchReport, Measured, Ran};
use super::target::prepare_transport;
use super::{AuthArg, BenchArgs, floor_exchange, registration_id};

/// How long one connection may take before it counts as failed: a broker that accepts and
/// then says nothing must not hold the run.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// `--floor --broker`: bare TLS handshakes with the broker, each device presenting its own
/// certificate, then `close_notify` and close; with `--exchange`, each device's registration
/// between the handshake and the close.
pub(super) async fn floor(args: &BenchArgs) -> Result<BenchReport, String> {
    if args.auth != AuthArg::X509 || args.ws {
        return Err("the floor over the wire is for X.509 devices over TCP".into());
    }
    let (target, _) = prepare_transport(args)?;
    let address = args.broker.clone().unwrap_or_default();
    let addr = address
        .to_socket_addrs()
        .map_err(|e| format!("{address}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address}: no address"))?;
    let host = address
        .rsplit_once(':')
        .map_or(address.as_str(), |(h, _)| h);
    let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(target.ca_pem.as_bytes()) {
        roots
            .add(ca.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let verifier = Arc::new(ChainOnce {
        inner: WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| e.to_string())?,
        verified: OnceLock::new(),
    });
    let keys: Vec<(String, Arc<CertifiedKey>)> = target
        .credentials
        .iter()
        .enumerate()
        .filter_map(|(i, auth)| match auth {
            Authentication::X509(identity) => Some((registration_id(i), identity.certified_key())),
            Authentication::SymmetricKey(_) => None,
        })
        .collect();
    // The id scope each registration names, with --exchange.
    let exchange: Option<Rc<str>> = args.exchange.then(|| target.id_scope.as_str().into());
    let n = keys.len();
    let keys = Rc::new(keys);
    let next = Rc::new(Cell::new(0));
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency.clamp(1, n.max(1)))
        .map(|_| {
            let (keys, next, provider, verifier, name, exchange) = (
                keys.clone(),
                next.clone(),
                provider.clone(),
                verifier.clone(),
                name.clone(),
                exchange.clone(),
            );
            actix_rt::spawn(async move {
                let mut samples = Vec::new();
                let mut first_error = None;
                loop {
                    let i = next.get();
                    let Some((id, key)) = keys.get(i) else { break };
                    next.set(i + 1);
                    let t0 = Instant::now();
                    // One configuration per connection, as the transport makes them.
                    let config = ClientConfig::builder_with_provider(provider.clone())
                        .with_safe_default_protocol_versions()
                        .map_err(|e| e.to_string())
                        .map(|b| {
                            b.dangerous()
                                .with_custom_certificate_verifier(verifier.clone())
                                .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(
                                    key.clone(),
                                )))
                        });
                    let done = match config {
                        Ok(config) => {
                            let config = Arc::new(config);
                            let registration =
                                exchange.as_deref().map(|scope| (scope, id.as_str()));
                            let connection = Connection {
                                addr,
                                config,
                                name: name.clone(),
                            };
                            connection.within(HANDSHAKE_DEADLINE, registration).await
                        }
                        Err(e) => Err(e),
                    };
                    samples.push((t0.elapsed(), done.is_ok()));
                    if let Err(e) = done {
                        first_error.get_or_insert(e);
                    }
                }
                (samples, first_error)
            })
        })
        .collect();
    let mut samples = Vec::with_capacity(n);
    let mut first_error = None;
    for worker in workers {
        let (done, error) = worker.await.map_err(|e| e.to_string())?;
        samples.extend(done);
        first_error = first_error.or(error);
    }
    let measured = Measured {
        samples,
        first_error,
        wall: started.elapsed(),
        cpu_seconds: cpu_seconds() - cpu_before,
    };
    Ok(measured.report(Ran {
        kind: if args.exchange {
            "mqtt-floor-tcp"
        } else {
            "rustls-floor-tcp"
        },
        devices: n,
        concurrency: args.concurrency,
        protocol: "tls",
        auth: AuthArg::X509,
        broker: address,
    }))
}

/// One connection of the floor: where to, and as whom.
struct Connection {
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl Connection {
    /// [`Connection::run`], failed when it has not ended by `deadline`.
    async fn within(
        self,
        deadline: Duration,
        registration: Option<(&str, &str)>,
    ) -> Result<(), String> {
        tokio::time::timeout(deadline, self.run(registration))
            .await
            .unwrap_or_else(|_| Err(format!("no handshake within {deadline:?}")))
    }

    /// TCP, the TLS handshake, the registration of (id scope, registration id) when there is
    /// one, `close_notify`, close.
    async fn run(self, registration: Option<(&str, &str)>) -> Result<(), String> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut tls = ClientConnection::new(self.config, self.name).map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(4096);
        let mut buf = vec![0; 16 * 1024];
        loop {
            flush(&stream, &mut tls, &mut out).await?;
            if !tls.is_handshaking() {
                break;
            }
            read_records(&stream, &mut tls, &mut buf).await?;
        }
        if let Some((id_scope, registration_id)) = registration {
            floor_exchange::register(&stream, &mut tls, &mut out, id_scope, registration_id)
                .await?;
        }
        tls.send_close_notify();
        flush(&stream, &mut tls, &mut out).await
    }
}

/// Waits for what the broker sends and hands the TLS records in it to `tls`.
pub(super) async fn read_records(
    stream: &TcpStream,
    tls: &mut ClientConnection,
    buf: &mut [u8],
) -> Result<(), String> {
    stream.readable().await.map_err(|e| e.to_string())?;
    match stream.try_read(buf) {
        Ok(0) => Err("the broker closed the connection".into()),
        Ok(read) => {
            let mut records = &buf[..read];
            while !records.is_empty() {
                tls.read_tls(&mut records).map_err(|e| e.to_string())?;
                tls.process_new_packets().map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Sends whatever TLS has to send, in one write where the socket takes it.
pub(super) async fn flush(
    stream: &TcpStream,
    tls: &mut ClientConnection,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    out.clear();
    while tls.wants_write() {
        tls.write_tls(out).map_err(|e| e.to_string())?;
    }
    let mut rest = &out[..];
    while !rest.is_empty() {
        stream.writable().await.map_err(|e| e.to_string())?;
        match stream.try_write(rest) {
            Ok(sent) => rest = &rest[sent..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// The WebPKI verifier, asked about the server's chain once: the first chain it accepts is
/// taken again byte for byte. The server's signature over each handshake is always checked.
#[derive(Debug)]
struct ChainOnce {
    inner: Arc<WebPkiServerVerifier>,
    verified: OnceLock<Vec<u8>>,
}

impl ServerCertVerifier for ChainOnce {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.verified.get().map(Vec::as_slice) != Some(end_entity.as_ref()) {
            self.inner.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            )?;
            let _ = self.verified.set(end_entity.to_vec());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dps_mock_broker::{MockBroker, TestPki};

    /// A broker from `builder` on a fresh test PKI written to a folder of `name`'s own, and the
    /// arguments of a floor over the wire against it for `devices` devices, `concurrency` at
    /// once: bare handshakes (set `exchange` for registrations).
    fn floor_against(
        name: &str,
        builder: dps_mock_broker::BrokerBuilder,
        devices: usize,
        concurrency: usize,
    ) -> (dps_mock_broker::BrokerHandle, BenchArgs, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("dps-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Arc::new(TestPki::generate().unwrap());
        pki.write_to(&dir, &[]).unwrap();
        let broker = builder.pki(pki).start().unwrap();
        let args = BenchArgs {
            floor: true,
            broker: Some(format!("localhost:{}", broker.addr().port())),
            id_scope: Some(dps_mock_broker::DEFAULT_ID_SCOPE.into()),
            ca: Some(dir.join("ca.pem")),
            device_ca_cert: Some(dir.join("ca.pem")),
            device_ca_key: Some(dir.join("ca.key")),
            ..super::super::test_args(devices, concurrency)
        };
        (broker, args, dir)
    }

    #[actix_rt::test]
    async fn the_floor_over_the_wire_completes_real_handshakes_with_a_broker() {
        let builder = MockBroker::builder().retry_after(0);
        let (broker, args, dir) = floor_against("floor-wire", builder, 3, 2);
        let report = floor(&args).await.unwrap();
        assert_eq!(
            (
                report.kind,
                report.devices,
                report.failed,
                report.first_error
            ),
            ("rustls-floor-tcp", 3, 0, None)
        );
        // With --exchange each device registers too, and counts only once assigned.
        let exchange = BenchArgs {
            exchange: true,
            ..args.clone()
        };
        let report = floor(&exchange).await.unwrap();
        assert_eq!(
            (
                report.kind,
                report.devices,
                report.failed,
                report.first_error
            ),
            ("mqtt-floor-tcp", 3, 0, None)
        );
        assert_eq!(broker.registrations().len(), 3);
        let sas = BenchArgs {
            auth: AuthArg::Sas,
            ..args
        };
        assert!(floor(&sas).await.unwrap_err().contains("X.509"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[actix_rt::test]
    async fn the_exchange_floor_waits_the_retry_after_the_service_asks_for() {
        let builder = MockBroker::builder().retry_after(1);
        let (broker, args, dir) = floor_against("floor-retry-after", builder, 1, 1);
        let args = BenchArgs {
            exchange: true,
            ..args
        };
        let started = Instant::now();
        let report = floor(&args).await.unwrap();
        assert_eq!((report.failed, report.first_error), (0, None));
        // `202 assigning` said retry-after 1: the poll went no sooner.
        assert!(started.elapsed() >= Duration::from_secs(1));
        assert_eq!(broker.registrations().len(), 1);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[actix_rt::test]
    async fn a_registration_the_service_never_decides_fails_after_twenty_answers() {
        use dps_mock_broker::Script;
        use dps_mock_broker::script::{DeviceScript, Step};
        let assigning = Step::respond(202)
            .with_body(serde_json::json!({"operationId": "op-1", "status": "assigning"}))
            .with_retry_after(0);
        let steps = (0..30).fold(DeviceScript::new(), |s, _| s.request(assigning.clone()));
        let script = Script::new().device("bench-0001", steps);
        let builder = MockBroker::builder().script(script);
        let (broker, args, dir) = floor_against("floor-undecided", builder, 1, 1);
        let args = BenchArgs {
            exchange: true,
            ..args
        };
        let report = floor(&args).await.unwrap();
        assert_eq!(report.failed, 1);
        assert_eq!(
            report.first_error.as_deref(),
            Some("not assigned after 20 answers")
        );
        let publishes = broker.records()[0]
            .events
            .iter()
            .filter(|e| matches!(e.event, dps_mock_broker::record::Event::Publish { .. }))
            .count();
        assert_eq!(publishes, 20, "the register and 19 polls");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[actix_rt::test]
    async fn a_broker_that_accepts_and_says_nothing_fails_the_handshake_at_its_deadline() {
        // The kernel completes the TCP handshake from the backlog; nobody ever answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
        let name = ServerName::try_from("localhost").unwrap();
        let deadline = Duration::from_millis(100);
        let connection = Connection {
            addr: silent.local_addr().unwrap(),
            config: Arc::new(config),
            name,
        };
        let outcome = connection.within(deadline, None).await;
        assert_eq!(outcome, Err("no handshake within 100ms".into()));
    }
}
