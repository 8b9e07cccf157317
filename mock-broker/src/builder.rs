//! Starting a broker: its settings ([`BrokerBuilder`]), its listeners, and the thread that runs
//! its ntex runtime.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use ntex::service::chain_factory;

use crate::auth::AuthConfig;
use crate::dps::{Dps, DpsConfig};
use crate::enrollment::{
    EnrollmentFile, EnrollmentGroup, Enrollments, IndividualEnrollment, LinkedHub,
};
use crate::record::Transport;
use crate::recorder::Recorder;
use crate::server::{self, Shared, mqtt_config, mqtt_server, websocket_server};
use crate::{
    BrokerError, BrokerHandle, CertifiedPem, ConnectionLimits, DEFAULT_ASSIGNED_HUB,
    DEFAULT_ID_SCOPE, IssuingCa, Quotas, Script, TestPki, TlsVersions, issuance, service_api, tls,
    webhook,
};

/// The broker's settings.
pub struct BrokerBuilder {
    listen: SocketAddr,
    ws_listen: Option<SocketAddr>,
    tcp_listen: Option<SocketAddr>,
    pki: Option<Arc<TestPki>>,
    server_cert: Option<CertifiedPem>,
    server_ca_pem: Option<String>,
    device_ca_pem: Option<String>,
    id_scope: String,
    assigned_hub: String,
    retry_after: u64,
    symmetric_keys: BTreeMap<String, String>,
    group_keys: Vec<String>,
    script: Script,
    workers: usize,
    record_sink: Option<Box<dyn Write + Send>>,
    keep_ended: bool,
    limits: ConnectionLimits,
    tls_versions: TlsVersions,
    issuing_ca: Option<Arc<IssuingCa>>,
    issued_validity: Duration,
    quotas: Quotas,
    enrollments: EnrollmentFile,
    webhook_timeout: Duration,
    service_api: Option<(SocketAddr, String)>,
}

impl Default for BrokerBuilder {
    fn default() -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            listen: loopback,
            ws_listen: Some(loopback),
            tcp_listen: None,
            pki: None,
            server_cert: None,
            server_ca_pem: None,
            device_ca_pem: None,
            id_scope: DEFAULT_ID_SCOPE.to_owned(),
            assigned_hub: DEFAULT_ASSIGNED_HUB.to_owned(),
            retry_after: 1,
            symmetric_keys: BTreeMap::new(),
            group_keys: Vec::new(),
            script: Script::default(),
            workers: 1,
            record_sink: None,
            keep_ended: true,
            limits: ConnectionLimits::default(),
            tls_versions: TlsVersions::default(),
            issuing_ca: None,
            issued_validity: issuance::DEFAULT_ISSUED_VALIDITY,
            quotas: Quotas::default(),
            enrollments: EnrollmentFile::default(),
            webhook_timeout: webhook::DEFAULT_WEBHOOK_TIMEOUT,
            service_api: None,
        }
    }
}

impl BrokerBuilder {
    /// The MQTT-over-TLS address (port 0: an ephemeral port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// The MQTT-over-WebSocket-over-TLS address, or `None` for no WebSocket listener.
    pub fn ws_listen(mut self, addr: Option<SocketAddr>) -> Self {
        self.ws_listen = addr;
        self
    }

    /// A plain-TCP MQTT listener, for tests of the protocol alone. Off by default.
    pub fn tcp_listen(mut self, addr: Option<SocketAddr>) -> Self {
        self.tcp_listen = addr;
        self
    }

    /// Uses `pki`'s server certificate, and its CA as the device CA (unless set otherwise).
    pub fn pki(mut self, pki: Arc<TestPki>) -> Self {
        self.pki = Some(pki);
        self
    }

    /// Uses this server certificate chain and key; `ca_pem` is what clients should trust (for
    /// [`BrokerHandle::ca_pem`]).
    pub fn server_cert(mut self, cert: CertifiedPem, ca_pem: Option<String>) -> Self {
        self.server_cert = Some(cert);
        self.server_ca_pem = ca_pem;
        self
    }

    /// Gives the enrollments a certificate policy: a register that carries a CSR (api-version
    /// `2025-07-01-preview`) is answered with a certificate `ca` signs, and certificates `ca`
    /// signed are accepted as device certificates. Without it, a CSR is refused with a 400.
    /// [`IssuingCa::generate`] makes one for the run.
    pub fn issue_certificates(mut self, ca: Arc<IssuingCa>) -> Self {
        self.issuing_ca = Some(ca);
        self
    }

    /// Enforces DPS's throttling limits ([`Quotas::dps`] gives the published ones): requests
    /// over a limit are answered 429 with a `retry-after`. None by default.
    pub fn quotas(mut self, quotas: Quotas) -> Self {
        self.quotas = quotas;
        self
    }

    /// How long issued certificates are valid (default 30 days).
    pub fn issued_validity(mut self, validity: Duration) -> Self {
        self.issued_validity = validity;
        self
    }

    /// Verifies device certificates against this CA (PEM).
    pub fn device_ca(mut self, pem: impl Into<String>) -> Self {
        self.device_ca_pem = Some(pem.into());
        self
    }

    /// The id scope devices must name.
    pub fn id_scope(mut self, scope: impl Into<String>) -> Self {
        self.id_scope = scope.into();
        self
    }

    /// The hub devices are assigned to.
    pub fn assigned_hub(mut self, hub: impl Into<String>) -> Self {
        self.assigned_hub = hub.into();
        self
    }

    /// The `retry-after` of a `202 assigning`, in seconds (0 allowed).
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = seconds;
        self
    }

    /// An individual symmetric-key enrollment.
    pub fn symmetric_key(
        mut self,
        registration_id: impl Into<String>,
        key_base64: impl Into<String>,
    ) -> Self {
        self.symmetric_keys
            .insert(registration_id.into(), key_base64.into());
        self
    }

    /// A symmetric-key group enrollment.
    pub fn group_key(mut self, key_base64: impl Into<String>) -> Self {
        self.group_keys.push(key_base64.into());
        self
    }

    /// An individual enrollment. With any enrollment (or group), the broker models DPS: a
    /// device registers only as an enrollment admits it, is assigned by the enrollment's
    /// allocation policy, and a device no enrollment admits gets DPS's 401 (see
    /// [`enrollment`](crate::enrollment)). Without, it admits any device its CA or keys do, to its one hub.
    pub fn enrollment(mut self, enrollment: IndividualEnrollment) -> Self {
        self.enrollments.individual_enrollments.push(enrollment);
        self
    }

    /// An enrollment group (see [`enrollment`](Self::enrollment)).
    pub fn enrollment_group(mut self, group: EnrollmentGroup) -> Self {
        self.enrollments.enrollment_groups.push(group);
        self
    }

    /// A hub linked to the DPS: what an enrollment without hubs of its own allocates among,
    /// and the latency `geoLatency` compares. The assigned hub alone when none is given.
    pub fn linked_hub(mut self, hub: LinkedHub) -> Self {
        self.enrollments.linked_hubs.push(hub);
        self
    }

    /// The enrollments and linked hubs of a file ([`EnrollmentFile::from_json`]), added to
    /// those given already.
    pub fn enrollments(mut self, file: EnrollmentFile) -> Self {
        self.enrollments.linked_hubs.extend(file.linked_hubs);
        self.enrollments
            .individual_enrollments
            .extend(file.individual_enrollments);
        self.enrollments
            .enrollment_groups
            .extend(file.enrollment_groups);
        self
    }

    /// How long a custom allocation webhook has to answer (default 5 s) before the
    /// registration fails.
    pub fn webhook_timeout(mut self, timeout: Duration) -> Self {
        self.webhook_timeout = timeout;
        self
    }

    /// Serves DPS's service API ([`service_api`]) over HTTPS on `addr`, to requests signed
    /// with `key_base64`, the key of the shared access policy
    /// [`provisioningserviceowner`](service_api::DEFAULT_POLICY_NAME).
    /// [`BrokerHandle::service_connection_string`] is what the official service SDKs take.
    pub fn service_api(mut self, addr: SocketAddr, key_base64: impl Into<String>) -> Self {
        self.service_api = Some((addr, key_base64.into()));
        self
    }

    /// The script to answer from.
    pub fn script(mut self, script: Script) -> Self {
        self.script = script;
        self
    }

    /// The number of worker threads serving connections (default 1).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Writes each connection's record, as a JSON line, to `sink` when it ends.
    pub fn record_to(mut self, sink: Box<dyn Write + Send>) -> Self {
        self.record_sink = Some(sink);
        self
    }

    /// Keeps only the records of live connections: each ended connection's record goes to the
    /// [`record_to`](Self::record_to) sink, if any, and is dropped. For long runs (benchmarks,
    /// soak tests) that nobody reads in memory; [`BrokerHandle::records`] then shows the live
    /// connections only. By default every record is kept, for tests to assert on.
    pub fn forget_ended(mut self) -> Self {
        self.keep_ended = false;
        self
    }

    /// How long a client has, after TLS (and the WebSocket upgrade), to send its whole CONNECT
    /// (default 10 s); one that takes longer is disconnected, with a record that says so.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.limits.connect_timeout = timeout;
        self
    }

    /// The bounds on one connection: the CONNECT deadline, the flood limits, and how much of
    /// a connection its record keeps (see [`ConnectionLimits`]).
    pub fn limits(mut self, limits: ConnectionLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The TLS versions the listeners accept: TLS 1.2 only by default, as real DPS (see
    /// [`TlsVersions::Tls12`]). A test can offer 1.3 as well, or 1.3 only, to see a client
    /// with either.
    pub fn tls_versions(mut self, versions: TlsVersions) -> Self {
        self.tls_versions = versions;
        self
    }

    /// Binds the listeners and starts serving on a thread of the broker's own. Returns once
    /// every listener accepts connections.
    pub fn start(self) -> Result<BrokerHandle, BrokerError> {
        let pki = match (&self.pki, &self.server_cert) {
            (Some(pki), _) => Some(pki.clone()),
            (None, None) => Some(Arc::new(TestPki::generate()?)),
            (None, Some(_)) => None,
        };
        let (server_cert, ca_pem) = match (&self.server_cert, &pki) {
            (Some(cert), _) => (cert.clone(), self.server_ca_pem.clone()),
            (None, Some(pki)) => (pki.server.clone(), Some(pki.ca_pem().to_owned())),
            (None, None) => unreachable!("a PKI is generated when no certificate is given"),
        };
        let device_ca = self
            .device_ca_pem
            .clone()
            .or_else(|| pki.as_ref().map(|p| p.ca_pem().to_owned()));
        // A device provisions again with the certificate it was issued.
        let device_ca = match (device_ca, &self.issuing_ca) {
            (Some(ca), Some(issuing)) => Some(format!("{ca}\n{}", issuing.cert_pem())),
            (None, Some(issuing)) => Some(issuing.cert_pem().to_owned()),
            (ca, None) => ca,
        };
        let mut file = self.enrollments;
        if file.linked_hubs.is_empty() {
            file.linked_hubs
                .push(LinkedHub::new(self.assigned_hub.clone()));
        }
        let enrollments = Arc::new(Enrollments::from_file(file)?);
        let tls = tls::server_config(
            &server_cert.cert_pem,
            &server_cert.key_pem,
            device_ca.as_deref(),
            self.tls_versions,
            enrollments.clone(),
        )?;

        let bind = |addr: SocketAddr| {
            TcpListener::bind(addr).map_err(|source| BrokerError::Bind { addr, source })
        };
        let tls_listener = bind(self.listen)?;
        let ws_listener = self.ws_listen.map(bind).transpose()?;
        let tcp_listener = self.tcp_listen.map(bind).transpose()?;
        let service = match &self.service_api {
            Some((addr, key)) => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(key)
                    .map_err(|_| BrokerError::ServiceKey)?;
                let policy = Arc::new(service_api::ServicePolicy {
                    name: service_api::DEFAULT_POLICY_NAME.to_owned(),
                    key: key.clone(),
                });
                let tls = tls::service_config(&server_cert.cert_pem, &server_cert.key_pem)?;
                Some((bind(*addr)?, tls, policy))
            }
            None => None,
        };
        let local = |l: &TcpListener| {
            l.local_addr()
                .map_err(|e| BrokerError::Thread(e.to_string()))
        };
        let addr = local(&tls_listener)?;
        let ws_addr = ws_listener.as_ref().map(local).transpose()?;
        let tcp_addr = tcp_listener.as_ref().map(local).transpose()?;
        let service_addr = service.as_ref().map(|(l, _, _)| local(l)).transpose()?;
        let service_policy = service.as_ref().map(|(_, _, p)| p.clone());

        let recorder = Arc::new(
            Recorder::new(self.record_sink, self.keep_ended)
                .with_max_events(self.limits.max_recorded_events),
        );
        let (webhook_tx, webhook_rx) = tokio::sync::mpsc::channel(webhook::MAX_WEBHOOK_CALLS);
        let shared = Arc::new(Shared {
            dps: Dps::new(
                DpsConfig {
                    assigned_hub: self.assigned_hub,
                    retry_after: self.retry_after,
                    issuance: self.issuing_ca.clone().map(|ca| {
                        Arc::new(issuance::Issuance {
                            ca,
                            validity: self.issued_validity,
                        })
                    }),
                    quotas: self.quotas,
                    id_scope: self.id_scope.clone(),
                    webhook_timeout: self.webhook_timeout,
                },
                self.script,
            )
            .with_enrollments(enrollments.clone())
            .with_webhooks(webhook_tx),
            auth: AuthConfig {
                id_scope: self.id_scope,
                symmetric_keys: self.symmetric_keys,
                group_keys: self.group_keys,
                enrollments: enrollments.clone(),
            },
            recorder: recorder.clone(),
            limits: self.limits,
        });
        let listeners = Listeners {
            tls_listener,
            ws_listener,
            tcp_listener,
            service,
        };
        let (stop_tx, thread) =
            spawn_runtime(shared.clone(), tls, listeners, self.workers, webhook_rx)?;
        Ok(BrokerHandle {
            addr,
            ws_addr,
            tcp_addr,
            service_addr,
            service_policy,
            pki,
            ca_pem,
            issuing_ca: self.issuing_ca,
            enrollments,
            shared,
            recorder,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

struct Listeners {
    tls_listener: TcpListener,
    ws_listener: Option<TcpListener>,
    tcp_listener: Option<TcpListener>,
    service: Option<(
        TcpListener,
        Arc<rustls::ServerConfig>,
        Arc<service_api::ServicePolicy>,
    )>,
}

pub(crate) type StopSender = tokio::sync::oneshot::Sender<()>;

fn spawn_runtime(
    shared: Arc<Shared>,
    tls: Arc<rustls::ServerConfig>,
    listeners: Listeners,
    workers: usize,
    webhooks: tokio::sync::mpsc::Receiver<webhook::WebhookCall>,
) -> Result<(StopSender, std::thread::JoinHandle<()>), BrokerError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("dps-mock-broker".into())
        .spawn(move || {
            let failed = ready_tx.clone();
            let result = ntex::rt::System::build()
                .name("dps-mock-broker")
                .disable_signals()
                .build(ntex::rt::DefaultRuntime)
                .run(move || {
                    ntex::rt::spawn(webhook::serve(shared.clone(), webhooks));
                    let server = build_server(shared, tls, listeners, workers)?.run();
                    ntex::rt::spawn(async move {
                        // A dropped handle stops the broker too.
                        let _ = stop_rx.await;
                        server.stop(false).await;
                        ntex::rt::System::current().stop();
                    });
                    let _ = ready_tx.send(Ok(()));
                    Ok(())
                });
            if let Err(e) = result {
                let _ = failed.send(Err(e.to_string()));
            }
        })
        .map_err(|e| BrokerError::Thread(e.to_string()))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok((stop_tx, thread)),
        Ok(Err(e)) => Err(BrokerError::Thread(e)),
        Err(_) => Err(BrokerError::Thread(
            "the broker thread ended before it was ready".into(),
        )),
    }
}

fn build_server(
    shared: Arc<Shared>,
    tls: Arc<rustls::ServerConfig>,
    listeners: Listeners,
    workers: usize,
) -> std::io::Result<ntex::server::ServerBuilder> {
    use ntex::tls::rustls::TlsAcceptor;

    let tls_error = |e: std::io::Error| {
        tracing::debug!("TLS handshake failed: {e}");
        ntex_mqtt::MqttError::Service(server::ConnError(format!("tls: {e}")))
    };
    let s = shared.clone();
    let t = tls.clone();
    let mut builder = ntex::server::build()
        .name("dps-mock-broker")
        .workers(workers)
        .disable_signals()
        .listen("mqtts", listeners.tls_listener, async move |_| {
            chain_factory(TlsAcceptor::new(t.clone()))
                .map_err(tls_error)
                .and_then(mqtt_server(s.clone(), Transport::Tls))
        })?
        .config("mqtts", mqtt_config());
    if let Some(listener) = listeners.ws_listener {
        let s = shared.clone();
        let t = tls.clone();
        builder = builder
            .listen("wss", listener, async move |_| {
                chain_factory(TlsAcceptor::new(t.clone()))
                    .map_err(|e| server::ConnError(format!("tls: {e}")))
                    .and_then(websocket_server(s.clone()))
            })?
            .config("wss", mqtt_config());
    }
    if let Some((listener, tls, policy)) = listeners.service {
        let s = shared.clone();
        builder = builder.listen("service", listener, async move |_| {
            chain_factory(TlsAcceptor::new(tls.clone()))
                .map_err(|e| server::ConnError(format!("tls: {e}")))
                .and_then(service_api::service_api_server(s.clone(), policy.clone()))
        })?;
    }
    if let Some(listener) = listeners.tcp_listener {
        let s = shared.clone();
        builder = builder
            .listen("mqtt", listener, async move |_| {
                mqtt_server(s.clone(), Transport::Tcp)
            })?
            .config("mqtt", mqtt_config());
    }
    Ok(builder)
}
