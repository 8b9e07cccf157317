//! `dps bench`: provisions N distinct devices, each its own actor and connection, C at a time,
//! and reports throughput, latency percentiles, failures, peak memory and CPU time.
//!
//! By default the mock DPS runs in this process (so memory and CPU include it); with
//! `--broker` the devices go to any broker, such as `dps-mock-broker` in another process, which
//! is how BENCHMARKS.md compares this transport with the Node SDK. `--floor` measures instead
//! the same number of bare rustls handshakes with client certificates, in memory: the physical
//! limit the transport is measured against.

use std::cell::{Cell, RefCell};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dps_messages::{
    Authentication, Disconnect, Protocol, ProvisioningError, Register, RegistrationRequest,
};
use dps_mock_broker::{BrokerHandle, MockBroker, TestPki};
use dps_transport_actor::{ClientOptions, MqttRuntime, TransportConfig};
use serde::Serialize;

use crate::setup;

/// How to credential the benchmark devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthArg {
    /// A certificate per device, CN = its registration id.
    X509,
    /// A SAS token from a group enrollment key.
    Sas,
}

/// `dps bench` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// How many devices to provision (ids bench-0001, bench-0002, ...).
    #[arg(long, default_value_t = 100)]
    pub devices: usize,
    /// How many provision at once.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Use MQTT over WebSocket.
    #[arg(long)]
    pub ws: bool,
    /// How devices authenticate.
    #[arg(long, value_enum, default_value_t = AuthArg::X509)]
    pub auth: AuthArg,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Provision against this broker (HOST:PORT) instead of one started in this process.
    #[arg(long, requires_all = ["id_scope", "ca"])]
    pub broker: Option<String>,
    /// The id scope the external broker expects.
    #[arg(long)]
    pub id_scope: Option<String>,
    /// The CA (PEM) the external broker's certificate chains to.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// The device CA certificate (PEM) the external broker trusts; device certificates are
    /// signed with it.
    #[arg(long, requires = "device_ca_key")]
    pub device_ca_cert: Option<PathBuf>,
    /// The device CA's private key (PEM).
    #[arg(long, requires = "device_ca_cert")]
    pub device_ca_key: Option<PathBuf>,
    /// The external broker's group enrollment key, for `--auth sas`.
    #[arg(long)]
    pub group_key: Option<String>,
    /// Measure bare rustls handshakes with client certificates instead (the floor).
    #[arg(long, conflicts_with = "hold")]
    pub floor: bool,
    /// Measure memory per connected device instead: each device connects and sends its
    /// register request, stays connected until all have, and the resident memory is read
    /// then, against the reading before the first connection.
    #[arg(long)]
    pub hold: bool,
    /// Worker threads of the in-process broker.
    #[arg(long, default_value_t = 1)]
    pub broker_workers: usize,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// `transport` or `rustls-floor`.
    pub kind: &'static str,
    /// Devices (or handshakes).
    pub devices: usize,
    /// At once.
    pub concurrency: usize,
    /// `mqtt` or `mqtt_ws`.
    pub protocol: &'static str,
    /// `x509` or `sas`.
    pub auth: AuthArg,
    /// `in-process` or the external broker's address.
    pub broker: String,
    /// Successful registrations (or handshakes) per second of wall time.
    pub registrations_per_sec: f64,
    /// Wall time of the whole run, in milliseconds.
    pub wall_ms: f64,
    /// Registrations that did not end assigned.
    pub failed: usize,
    /// Median latency of one registration, in milliseconds.
    pub p50_ms: f64,
    /// 95th percentile latency, in milliseconds.
    pub p95_ms: f64,
    /// 99th percentile latency, in milliseconds.
    pub p99_ms: f64,
    /// Peak resident memory of this process, in MiB.
    pub peak_rss_mib: f64,
    /// CPU time of this process (user + system), in seconds.
    pub cpu_seconds: f64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// `--hold`: resident memory, in MiB, before the first connection and with every device
    /// connected, and the difference per device in KiB.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub held: Option<Held>,
}

/// Resident memory around `--hold`'s connections.
#[derive(Debug, Clone, Serialize)]
pub struct Held {
    /// Before the first connection, credentials made.
    pub before_rss_mib: f64,
    /// With every device connected.
    pub connected_rss_mib: f64,
    /// The difference, per device, in KiB.
    pub kib_per_connected_device: f64,
}

/// Runs the benchmark and prints its report.
pub async fn main(args: BenchArgs) -> ExitCode {
    let report = if args.floor {
        floor(&args)
    } else if args.hold {
        hold(&args).await
    } else {
        run(&args).await
    };
    match report {
        Ok(report) => {
            if args.json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            } else {
                print!("{}", human(&report));
            }
            if report.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("dps bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn registration_id(i: usize) -> String {
    format!("bench-{:04}", i + 1)
}

/// Where the devices go, and the credentials they use.
struct Target {
    _broker: Option<BrokerHandle>,
    name: String,
    uri: String,
    id_scope: String,
    ca_pem: String,
    credentials: Vec<Authentication>,
}

fn prepare(args: &BenchArgs, protocol: Protocol) -> Result<Target, String> {
    let n = args.devices;
    match &args.broker {
        None => {
            let pki = Arc::new(TestPki::generate().map_err(|e| e.to_string())?);
            let group_key = setup::random_key();
            let broker = MockBroker::builder()
                .pki(pki.clone())
                .group_key(group_key.clone())
                .retry_after(0)
                .ws_listen(args.ws.then(|| ([127, 0, 0, 1], 0).into()))
                .workers(args.broker_workers)
                .forget_ended()
                .start()
                .map_err(|e| e.to_string())?;
            let uri = broker.uri(protocol).unwrap_or_default();
            let credentials = credentials(args.auth, n, Some(&pki), Some(&group_key))?;
            let ca_pem = broker.ca_pem().unwrap_or_default().to_owned();
            Ok(Target {
                _broker: Some(broker),
                name: "in-process".into(),
                uri,
                id_scope: dps_mock_broker::DEFAULT_ID_SCOPE.into(),
                ca_pem,
                credentials,
            })
        }
        Some(address) => {
            let pki = match (&args.device_ca_cert, &args.device_ca_key) {
                (Some(cert), Some(key)) => Some(
                    TestPki::from_ca_pem(&setup::read(cert)?, &setup::read(key)?)
                        .map_err(|e| e.to_string())?,
                ),
                _ => None,
            };
            let credentials = credentials(args.auth, n, pki.as_ref(), args.group_key.as_deref())?;
            Ok(Target {
                _broker: None,
                name: address.clone(),
                uri: setup::endpoint_uri(address, protocol),
                id_scope: args.id_scope.clone().unwrap_or_default(),
                ca_pem: setup::read(args.ca.as_ref().ok_or("--ca is required with --broker")?)?,
                credentials,
            })
        }
    }
}

fn credentials(
    auth: AuthArg,
    n: usize,
    pki: Option<&TestPki>,
    group_key: Option<&str>,
) -> Result<Vec<Authentication>, String> {
    (0..n)
        .map(|i| {
            let id = registration_id(i);
            match auth {
                AuthArg::X509 => {
                    let pki =
                        pki.ok_or("x509 devices need --device-ca-cert and --device-ca-key")?;
                    setup::identity(&pki.device(&id).map_err(|e| e.to_string())?)
                        .map_err(|e| e.to_string())
                }
                AuthArg::Sas => {
                    setup::group_device(group_key.ok_or("sas devices need --group-key")?, &id)
                        .map_err(|e| e.to_string())
                }
            }
        })
        .collect()
}

/// The devices' target, and the one configuration every device's transport shares: one parsed
/// set of trust roots, one check of the broker's certificate chain, one runtime thread.
fn prepare_transport(args: &BenchArgs) -> Result<(Target, TransportConfig, MqttRuntime), String> {
    let protocol = if args.ws {
        Protocol::MqttWs
    } else {
        Protocol::Mqtt
    };
    let target = prepare(args, protocol)?;
    let runtime = MqttRuntime::shared().map_err(|e| e.to_string())?;
    let config = TransportConfig::builder(protocol)
        .ca_pem(target.ca_pem.clone())
        .runtime(runtime.clone())
        .build()
        .map_err(|e| e.to_string())?;
    Ok((target, config, runtime))
}

/// What the devices' registrations came to.
struct Provisioned {
    /// Each registration's latency and whether it succeeded.
    samples: Vec<(Duration, bool)>,
    first_error: Option<String>,
    wall: Duration,
    cpu_seconds: f64,
}

impl Provisioned {
    /// The report of `args`'s run as `kind`, against `broker`; latencies are those of the
    /// registrations that succeeded.
    fn report(self, kind: &'static str, args: &BenchArgs, broker: String) -> BenchReport {
        let failed = self.samples.iter().filter(|(_, ok)| !ok).count();
        let mut latencies: Vec<Duration> = self
            .samples
            .iter()
            .filter(|(_, ok)| *ok)
            .map(|(d, _)| *d)
            .collect();
        latencies.sort();
        BenchReport {
            kind,
            devices: args.devices,
            concurrency: args.concurrency,
            protocol: if args.ws { "mqtt_ws" } else { "mqtt" },
            auth: args.auth,
            broker,
            registrations_per_sec: latencies.len() as f64 / self.wall.as_secs_f64(),
            wall_ms: self.wall.as_secs_f64() * 1000.0,
            failed,
            p50_ms: percentile(&latencies, 0.50),
            p95_ms: percentile(&latencies, 0.95),
            p99_ms: percentile(&latencies, 0.99),
            peak_rss_mib: peak_rss_mib(),
            cpu_seconds: self.cpu_seconds,
            first_error: self.first_error,
            held: None,
        }
    }
}

async fn run(args: &BenchArgs) -> Result<BenchReport, String> {
    let (target, config, runtime) = prepare_transport(args)?;
    let (n, concurrency) = (args.devices, args.concurrency.max(1));
    let (uri, scope) = (target.uri.clone(), target.id_scope.clone());
    let credentials = target.credentials;
    // The clients run on the runtime thread, beside their transports and connections, as the
    // README suggests for a fleet: a request and its answer never change threads.
    let provisioned = runtime
        .spawn_fn(move || provision_all(n, concurrency, config, uri, scope, credentials))
        .await
        .map_err(|e| e.to_string())?;
    Ok(provisioned?.report("transport", args, target.name))
}

/// Registers every device, `concurrency` at a time, each with its own client, transport and
/// connection.
async fn provision_all(
    n: usize,
    concurrency: usize,
    config: TransportConfig,
    uri: String,
    scope: String,
    credentials: Vec<Authentication>,
) -> Result<Provisioned, String> {
    let options = ClientOptions {
        min_interval: Duration::ZERO,
        ..ClientOptions::default()
    };
    let next = Rc::new(Cell::new(0usize));
    let credentials = Rc::new(RefCell::new(
        credentials.into_iter().map(Some).collect::<Vec<_>>(),
    ));
    let samples = Rc::new(RefCell::new(Vec::with_capacity(n)));
    let first_error = Rc::new(RefCell::new(None::<String>));
    let progress = Progress::start(n);
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (next, credentials, samples, first_error, progress) = (
            next.clone(),
            credentials.clone(),
            samples.clone(),
            first_error.clone(),
            progress.clone(),
        );
        let (config, options, uri, scope) =
            (config.clone(), options.clone(), uri.clone(), scope.clone());
        workers.push(actix_rt::spawn(async move {
            loop {
                let i = next.get();
                if i >= n {
                    break;
                }
                next.set(i + 1);
                let auth = credentials.borrow_mut()[i]
                    .take()
                    .expect("each credential is used once");
                let request = RegistrationRequest::new(scope.clone(), registration_id(i))
                    .with_endpoint(uri.clone());
                let t0 = Instant::now();
                let result = match setup::client(config.clone(), auth, options.clone()).await {
                    Ok(client) => client.register(request).await,
                    Err(e) => Err(e),
                };
                let ok = result.is_ok();
                if let Err(e) = result {
                    first_error
                        .borrow_mut()
                        .get_or_insert_with(|| e.to_string());
                }
                samples.borrow_mut().push((t0.elapsed(), ok));
                progress.tick();
            }
        }));
    }
    for worker in workers {
        worker.await.map_err(|e| e.to_string())?;
    }
    let wall = started.elapsed();
    progress.finish();
    Ok(Provisioned {
        samples: samples.take(),
        first_error: first_error.take(),
        wall,
        cpu_seconds: cpu_seconds() - cpu_before,
    })
}

/// `--hold`: every device connects and registers (its first request, answered `assigning`),
/// `concurrency` at a time, and stays connected; the resident memory with all of them connected
/// is read against the reading before the first. Then all disconnect.
async fn hold(args: &BenchArgs) -> Result<BenchReport, String> {
    let (target, config, _) = prepare_transport(args)?;
    let n = args.devices;
    let before_rss_mib = rss_mib();
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let mut held = Vec::with_capacity(n);
    let mut samples = Vec::with_capacity(n);
    let mut first_error = None;
    let mut credentials = target.credentials.into_iter().enumerate();
    loop {
        let batch: Vec<_> = credentials.by_ref().take(args.concurrency.max(1)).collect();
        if batch.is_empty() {
            break;
        }
        let registrations = batch.into_iter().map(|(i, auth)| {
            let (config, request) = (
                config.clone(),
                RegistrationRequest::new(target.id_scope.clone(), registration_id(i))
                    .with_endpoint(target.uri.clone()),
            );
            async move {
                let t0 = Instant::now();
                let transport = setup::transport(config, auth).await?;
                let response = transport.send(Register { request }).await??;
                Ok::<_, ProvisioningError>((transport, response, t0.elapsed()))
            }
        });
        for outcome in join_all(registrations).await? {
            match outcome {
                Ok((transport, _, latency)) => {
                    held.push(transport);
                    samples.push((latency, true));
                }
                Err(e) => {
                    first_error.get_or_insert_with(|| e.to_string());
                    samples.push((Duration::ZERO, false));
                }
            }
        }
    }
    let wall = started.elapsed();
    let connected_rss_mib = rss_mib();
    let cpu_seconds = cpu_seconds() - cpu_before;
    for transport in &held {
        let _ = transport.send(Disconnect::default()).await;
    }
    let provisioned = Provisioned {
        samples,
        first_error,
        wall,
        cpu_seconds,
    };
    Ok(BenchReport {
        held: Some(Held {
            before_rss_mib,
            connected_rss_mib,
            kib_per_connected_device: (connected_rss_mib - before_rss_mib) * 1024.0
                / n.max(1) as f64,
        }),
        ..provisioned.report("transport-hold", args, target.name)
    })
}

/// Runs every future at once on this thread and waits for them all.
async fn join_all<F>(futures: impl IntoIterator<Item = F>) -> Result<Vec<F::Output>, String>
where
    F: std::future::Future + 'static,
    F::Output: 'static,
{
    let handles: Vec<_> = futures.into_iter().map(actix_rt::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.map_err(|e| e.to_string())?);
    }
    Ok(outputs)
}

/// The bare rustls floor: the same number of full TLS handshakes with client certificates,
/// client and server in memory, spread over every core.
fn floor(args: &BenchArgs) -> Result<BenchReport, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

    let n = args.devices;
    let pki = TestPki::generate().map_err(|e| e.to_string())?;
    let provider = dps_messages::x509::shared_provider();
    let ca = CertificateDer::from_pem_slice(pki.ca_pem().as_bytes()).map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).map_err(|e| e.to_string())?;
    let roots = Arc::new(roots);
    let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| e.to_string())?;
    let server_chain = CertificateDer::pem_slice_iter(pki.server.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let server_key =
        PrivateKeyDer::from_pem_slice(pki.server.key_pem.as_bytes()).map_err(|e| e.to_string())?;
    let server = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(server_chain, server_key)
            .map_err(|e| e.to_string())?,
    );
    // Device identities are made (keys loaded) before the clock starts, as in the transport
    // benchmark; each handshake builds its client configuration, as each connection does.
    let devices: Vec<dps_messages::X509Identity> = (0..n)
        .map(|i| {
            let pem = pki.device(&registration_id(i)).map_err(|e| e.to_string())?;
            dps_messages::X509Identity::from_pem(pem.cert_pem.as_bytes(), pem.key_pem.as_bytes())
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, String>>()?;
    let threads = std::thread::available_parallelism()
        .map_or(1, |p| p.get())
        .min(n.max(1));
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let chunks: Vec<Vec<dps_messages::X509Identity>> = (0..threads)
        .map(|t| devices.iter().skip(t).step_by(threads).cloned().collect())
        .collect();
    let results: Vec<Result<Vec<Duration>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let (server, roots, provider) = (server.clone(), roots.clone(), provider.clone());
                scope.spawn(move || {
                    let mut latencies = Vec::with_capacity(chunk.len());
                    for device in chunk {
                        let t0 = Instant::now();
                        let client = rustls::ClientConfig::builder_with_provider(provider.clone())
                            .with_safe_default_protocol_versions()
                            .map_err(|e| e.to_string())?
                            .with_root_certificates(roots.clone())
                            .with_client_cert_resolver(device.client_cert_resolver());
                        let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
                        let mut c = rustls::ClientConnection::new(Arc::new(client), name)
                            .map_err(|e| e.to_string())?;
                        let mut s = rustls::ServerConnection::new(server.clone())
                            .map_err(|e| e.to_string())?;
                        handshake(&mut c, &mut s)?;
                        latencies.push(t0.elapsed());
                    }
                    Ok(latencies)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a handshake thread panicked".into()))
            })
            .collect()
    });
    let wall = started.elapsed();
    let mut latencies = Vec::with_capacity(n);
    for r in results {
        latencies.extend(r?);
    }
    latencies.sort();
    Ok(BenchReport {
        kind: "rustls-floor",
        devices: n,
        concurrency: threads,
        protocol: "tls",
        auth: AuthArg::X509,
        broker: "in-memory".into(),
        registrations_per_sec: n as f64 / wall.as_secs_f64(),
        wall_ms: wall.as_secs_f64() * 1000.0,
        failed: n - latencies.len(),
        p50_ms: percentile(&latencies, 0.50),
        p95_ms: percentile(&latencies, 0.95),
        p99_ms: percentile(&latencies, 0.99),
        peak_rss_mib: peak_rss_mib(),
        cpu_seconds: cpu_seconds() - cpu_before,
        first_error: None,
        held: None,
    })
}

/// Pumps TLS records between the two sides until both finish the handshake.
fn handshake(
    client: &mut rustls::ClientConnection,
    server: &mut rustls::ServerConnection,
) -> Result<(), String> {
    let mut buf = Vec::with_capacity(16 * 1024);
    for _ in 0..64 {
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
        buf.clear();
        while client.wants_write() {
            client.write_tls(&mut buf).map_err(|e| e.to_string())?;
        }
        let mut slice = &buf[..];
        while !slice.is_empty() {
            server.read_tls(&mut slice).map_err(|e| e.to_string())?;
            server.process_new_packets().map_err(|e| e.to_string())?;
        }
        buf.clear();
        while server.wants_write() {
            server.write_tls(&mut buf).map_err(|e| e.to_string())?;
        }
        let mut slice = &buf[..];
        while !slice.is_empty() {
            client.read_tls(&mut slice).map_err(|e| e.to_string())?;
            client.process_new_packets().map_err(|e| e.to_string())?;
        }
    }
    Err("the handshake did not finish".into())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1000.0
}

/// Peak resident set size of this process (VmHWM), in MiB; 0 where /proc is missing.
pub fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

/// Resident memory of this process now, in MiB (0 where `/proc` is not available).
pub fn rss_mib() -> f64 {
    status_mib("VmRSS:")
}

/// A `kB` line of `/proc/self/status`, in MiB.
fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(field)
                    .map(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
        })
        .flatten()
        .map_or(0.0, |kib| kib / 1024.0)
}

/// User + system CPU time of this process so far, in seconds (Linux clock ticks of 1/100 s).
pub fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The command name may contain spaces; fields resume after its closing parenthesis.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn human(r: &BenchReport) -> String {
    let what = if r.kind == "rustls-floor" {
        "handshakes"
    } else {
        "registrations"
    };
    format!(
        "{kind}: {n} {what} ({protocol}, {auth:?}, {c} at once, broker {broker})\n\
         throughput   {rate:.1} {what}/s over {wall:.0} ms\n\
         latency      p50 {p50:.1} ms, p95 {p95:.1} ms, p99 {p99:.1} ms\n\
         failures     {failed}{first}\n\
         peak RSS     {rss:.1} MiB\n\
         CPU          {cpu:.2} s\n{held}",
        kind = r.kind,
        n = r.devices,
        protocol = r.protocol,
        auth = r.auth,
        c = r.concurrency,
        broker = r.broker,
        rate = r.registrations_per_sec,
        wall = r.wall_ms,
        p50 = r.p50_ms,
        p95 = r.p95_ms,
        p99 = r.p99_ms,
        failed = r.failed,
        first = r
            .first_error
            .as_ref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
        rss = r.peak_rss_mib,
        cpu = r.cpu_seconds,
        held = r
            .held
            .as_ref()
            .map(|h| format!(
                "connected    {:.1} MiB, {:.1} MiB before: {:.1} KiB per connected device\n",
                h.connected_rss_mib, h.before_rss_mib, h.kib_per_connected_device
            ))
            .unwrap_or_default(),
    )
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
#[derive(Clone)]
struct Progress {
    done: Rc<Cell<usize>>,
    total: usize,
    draw: bool,
}

impl Progress {
    fn start(total: usize) -> Self {
        let progress = Self {
            done: Rc::new(Cell::new(0)),
            total,
            draw: std::io::stderr().is_terminal(),
        };
        if progress.draw {
            let p = progress.clone();
            actix_rt::spawn(async move {
                while p.done.get() < p.total {
                    p.render();
                    actix_rt::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
        progress
    }

    fn tick(&self) {
        self.done.set(self.done.get() + 1);
    }

    fn render(&self) {
        let width = 40;
        let filled = self.done.get() * width / self.total.max(1);
        eprint!(
            "\r[{}{}] {}/{}",
            "=".repeat(filled),
            " ".repeat(width - filled),
            self.done.get(),
            self.total
        );
    }

    fn finish(&self) {
        if self.draw {
            self.render();
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let ms = |v: u64| Duration::from_millis(v);
        let sorted: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&sorted, 0.50), 50.0);
        assert_eq!(percentile(&sorted, 0.99), 99.0);
        assert_eq!(percentile(&[ms(7)], 0.95), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn process_figures_are_read() {
        assert!(peak_rss_mib() > 0.0);
        assert!(cpu_seconds() >= 0.0);
    }

    #[test]
    fn the_floor_completes_real_handshakes() {
        let args = BenchArgs {
            devices: 4,
            concurrency: 1,
            ws: false,
            auth: AuthArg::X509,
            json: false,
            broker: None,
            id_scope: None,
            ca: None,
            device_ca_cert: None,
            device_ca_key: None,
            group_key: None,
            floor: true,
            hold: false,
            broker_workers: 1,
        };
        let report = floor(&args).unwrap();
        assert_eq!((report.devices, report.failed), (4, 0));
        assert!(report.registrations_per_sec > 0.0);
    }

    #[actix_rt::test]
    async fn hold_measures_with_every_device_connected() {
        let args = BenchArgs {
            devices: 3,
            concurrency: 2,
            ws: false,
            auth: AuthArg::X509,
            json: true,
            broker: None,
            id_scope: None,
            ca: None,
            device_ca_cert: None,
            device_ca_key: None,
            group_key: None,
            floor: false,
            hold: true,
            broker_workers: 1,
        };
        let report = hold(&args).await.unwrap();
        assert_eq!(
            (report.kind, report.devices, report.failed),
            ("transport-hold", 3, 0)
        );
        let held = report.held.unwrap();
        assert!(
            held.connected_rss_mib > 0.0 && held.before_rss_mib > 0.0,
            "{held:?}"
        );
        let json = serde_json::to_value(BenchReport {
            held: Some(held),
            ..report
        })
        .unwrap();
        assert!(json["kib_per_connected_device"].is_number(), "{json}");
    }
}
