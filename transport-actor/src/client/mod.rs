//! `ProvisioningClient`: the whole registration in one call.
//!
//! It sends `Register`, then `QueryStatus` until the result is final, as the Node SDK's polling
//! state machine does, and goes further: it honours the service's retry-after with a floor,
//! backs off exponentially (with jitter on top) when throttled, retries a lost connection or a
//! lost response within an overall deadline, can be cancelled (or dropped) at any point, closes
//! the connection within a short grace whatever the service does, and can remember an
//! assignment in a file so a restarted device does not provision again.
//!
//! [`registration`] is the course of one registration without IO, [`polling`] its pacing
//! decisions, [`cache`] keeps the assignment; this module drives them with the actor and real
//! time.

mod cache;
#[cfg(feature = "issuance")]
mod certificate;
pub(crate) mod hook;
mod polling;
pub(crate) mod registration;
mod request_limit;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, Recipient};
use dps_messages::{
    Authentication, Disconnect, Operation, ProvisioningError, QueryStatus, Register,
    RegistrationRequest, RegistrationResult,
};
use tokio::sync::oneshot;
use tokio::time::sleep_until;

#[cfg(feature = "issuance")]
pub use self::certificate::{CertificateOptions, CsrPolicy, Provisioned};
use self::hook::RequestHook;
use self::registration::{Registration, Step};
pub use self::request_limit::RequestLimit;
pub(crate) use self::request_limit::RequestLog;
use crate::RequestResult;
use crate::rng::Rng;

/// How a [`ProvisioningClient`] paces and bounds a registration.
///
/// **Pacing.** After an `assigning` answer the next poll waits exactly the service's
/// `retry-after` (a device told 1 s polls after 1 s); when the service gives none, the
/// transport's default polling interval (2 s) within `min_interval` and `max_interval`. After
/// a throttled (429) or 5xx answer, the wait is the retry-after (or the default interval, at
/// least `min_interval`) doubled for each such answer in a row, capped at `max_interval` but
/// never below the retry-after; after a lost connection, publish or response it is
/// `min_interval` doubled the same way. With `jitter`, a random 0-25 % is added on top of
/// those back-off waits, so a fleet throttled together does not return together; jitter never
/// shortens a wait, so the client never comes back sooner than the service allowed. Whatever
/// those waits say, the device never sends more requests than its `request_limit` (DPS: 5 in
/// any 10 s, registers and polls together), across registrations of the same client.
///
/// **Bounds.** The whole registration ends by `deadline`; the disconnect after it takes at most
/// `close_grace` more, so [`ProvisioningClient::register`] returns within `deadline +
/// close_grace` whatever the service does.
///
/// **In tests.** The transport runs on real time: its waits are real timers, and
/// `tokio::time::pause()` does not make them shorter (it makes a registration time out at once
/// instead). For fast tests set `min_interval` to zero, a small `max_interval`, `jitter` off,
/// no `request_limit` when a test makes more than five requests, and have the mock DPS answer
/// with `retry-after` 0; the mock broker's README shows three complete tests.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The shortest wait the client chooses itself: the floor of the default polling interval
    /// and of its back-off when the service gave no retry-after. A retry-after from the
    /// service is waited exactly, even when it is shorter. Default 2 s.
    pub min_interval: Duration,
    /// The longest wait the client chooses itself: the cap of its back-off growth and of the
    /// default polling interval. A service's retry-after above it is still honoured.
    pub max_interval: Duration,
    /// The most requests the device sends in any window of time: [`RequestLimit::DPS`] (5 in
    /// any 10 s, the service's published limit) by default; `None` keeps no limit (a mock
    /// broker in a test).
    pub request_limit: Option<RequestLimit>,
    /// The whole registration's deadline, across every request and retry.
    pub deadline: Duration,
    /// How long the disconnect at the end may take (unsubscribe, DISCONNECT, close) before the
    /// connection is dropped.
    pub close_grace: Duration,
    /// Add 0-25 % of random jitter on top of back-off waits. Tests that time waits turn it off.
    pub jitter: bool,
    /// Where to remember a successful assignment (and an issued certificate with its key:
    /// the file is made readable by its owner only), if anywhere. One file serves one kind of
    /// call: a [`ProvisioningClient::register`] that provisions rewrites it without a
    /// certificate.
    pub cache_file: Option<PathBuf>,
    /// Provision even when the cache holds an assignment.
    pub force: bool,
}

impl Default for ClientOptions {
    /// 2 s floor, 60 s back-off cap, DPS's request limit, 5-minute deadline, 1 s close grace,
    /// jitter, no cache.
    fn default() -> Self {
        Self {
            min_interval: Duration::from_secs(2),
            max_interval: Duration::from_secs(60),
            request_limit: Some(RequestLimit::DPS),
            deadline: Duration::from_secs(300),
            close_grace: Duration::from_secs(1),
            jitter: true,
            cache_file: None,
            force: false,
        }
    }
}

/// The messages a [`ProvisioningClient`] sends, as recipients: any actor that handles
/// [`Register`], [`QueryStatus`] and [`Disconnect`] will do, the
/// [`ProvisioningTransportActor`](crate::ProvisioningTransportActor) or one of your own (a
/// wrapper that logs, a fake for a test).
#[derive(Clone)]
pub struct TransportRecipients {
    register: Recipient<Register>,
    query_status: Recipient<QueryStatus>,
    disconnect: Recipient<Disconnect>,
}

impl TransportRecipients {
    /// Recipients of each message; they may belong to different actors.
    pub fn new(
        register: Recipient<Register>,
        query_status: Recipient<QueryStatus>,
        disconnect: Recipient<Disconnect>,
    ) -> Self {
        Self {
            register,
            query_status,
            disconnect,
        }
    }
}

impl<A> From<Addr<A>> for TransportRecipients
where
    A: Actor + Handler<Register> + Handler<QueryStatus> + Handler<Disconnect>,
    A::Context: ToEnvelope<A, Register> + ToEnvelope<A, QueryStatus> + ToEnvelope<A, Disconnect>,
{
    fn from(addr: Addr<A>) -> Self {
        Self::new(
            addr.clone().recipient(),
            addr.clone().recipient(),
            addr.recipient(),
        )
    }
}

/// Registers a device through a transport actor until it is assigned.
///
/// ```no_run
/// # use dps_transport_actor::{ClientOptions, ProvisioningClient, ProvisioningTransportActor};
/// # async fn example(transport: actix::Addr<ProvisioningTransportActor>) -> Result<(), dps_messages::ProvisioningError> {
/// let client = ProvisioningClient::new(transport, ClientOptions::default());
/// let request = dps_messages::RegistrationRequest::new("0ne00000001", "my-device");
/// let result = client.register(request).await?;
/// let state = result.registration_state.unwrap_or_default();
/// println!("assigned to {:?} as {:?}", state.assigned_hub, state.device_id);
/// # Ok(()) }
/// ```
///
/// **What it retries.** A service that cannot be reached yet (a name that does not resolve, a
/// connection refused or reset, an unreachable network, a connect or TLS handshake that timed
/// out: a device whose network comes up after it boots), a lost connection, a publish that was
/// not acknowledged, a response that did not come within the transport's response timeout, and
/// a transport that restarted are tried again (the same request), as often as the deadline
/// allows, after the back-off on [`ClientOptions`] (at least 100 ms the first time, doubling);
/// so are throttled (429) and 5xx answers, after their retry-after. Anything else ends the
/// registration at once: the service's verdict (`failed`, `disabled`, a 4xx), credentials or
/// certificates refused (CONNACK, TLS), a protocol error, a local mistake. The rule is
/// [`ProvisioningError::is_retryable`]; a registration the deadline ends says how many
/// attempts it made and why the last one failed.
#[derive(Clone)]
pub struct ProvisioningClient {
    transport: TransportRecipients,
    options: ClientOptions,
    /// The running registration's cancel switch; `Some` while one runs.
    running: Arc<Mutex<Option<oneshot::Sender<()>>>>,
    /// When the device's last requests were answered, so that a registration after another
    /// keeps the request limit too.
    log: Arc<Mutex<RequestLog>>,
    /// What its requests pass through on their way to the transport: a fleet's pace, for a
    /// client of a [`Fleet`](crate::fleet::Fleet).
    hook: Option<Arc<dyn RequestHook>>,
}

/// The running registration's claim on the client. Dropped, it frees the client for the next
/// call; dropped while still armed (the caller dropped the registration's future: an outer
/// timeout, a `select!`), it also ends what the transport is doing for it.
struct Running<'a> {
    client: &'a ProvisioningClient,
    armed: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        *self
            .client
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        if self.armed {
            tracing::debug!("registration dropped unfinished; disconnecting");
            // A request may be in flight: it counts for the device's limit from now (the
            // disconnect is on its way), as a request given up on does.
            if let Some(limit) = &self.client.options.request_limit {
                self.client.log().record(Instant::now(), limit);
            }
            // Cancels the request in flight and closes the connection within the grace; a
            // registration started next waits for that, then connects again.
            self.client
                .transport
                .disconnect
                .do_send(Disconnect::within(self.client.options.close_grace));
        }
    }
}

impl ProvisioningClient {
    /// A client over a transport of its own, made with `config` and the device's credentials
    /// `auth`: the one step to provision a device.
    ///
    /// The transport runs on its MQTT runtime thread
    /// ([`ProvisioningTransportActor::start_on_runtime`](crate::ProvisioningTransportActor::start_on_runtime)),
    /// so no actix system is needed; the client's calls need a tokio runtime with timers (an
    /// actix system has one). The transport stops when the last clone of the client is
    /// dropped.
    ///
    /// ```no_run
    /// use dps_messages::{Protocol, RegistrationRequest, SymmetricKey};
    /// use dps_transport_actor::{ClientOptions, ProvisioningClient, TransportConfig};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let key = SymmetricKey::new("O+H9VTcdJP0Tqkl7bh4nVG0OJNrAataMpuWB54D0VEc=")?;
    /// let config = TransportConfig::builder(Protocol::Mqtt).build()?;
    /// let client = ProvisioningClient::start(config, key, ClientOptions::default())?;
    /// let result = client.register(RegistrationRequest::new("0ne00000A0A", "my-device")).await?;
    /// # let _ = result; Ok(()) }
    /// ```
    pub fn start(
        config: crate::TransportConfig,
        auth: impl Into<Authentication>,
        options: ClientOptions,
    ) -> Result<Self, ProvisioningError> {
        let transport = crate::ProvisioningTransportActor::new(config)
            .with_authentication(auth)
            .start_on_runtime()?;
        Ok(Self::new(transport, options))
    }

    /// A client using `transport` (an `Addr` of the transport actor, or [`TransportRecipients`]),
    /// which must have its credentials before the first registration
    /// ([`SetAuthentication`](dps_messages::SetAuthentication), or
    /// [`ProvisioningTransportActor::with_authentication`](crate::ProvisioningTransportActor::with_authentication)).
    pub fn new(transport: impl Into<TransportRecipients>, options: ClientOptions) -> Self {
        Self {
            transport: transport.into(),
            options,
            running: Arc::new(Mutex::new(None)),
            log: Arc::default(),
            hook: None,
        }
    }

    /// The same client, its requests passing through `hook`.
    pub(crate) fn hooked(self, hook: Arc<dyn RequestHook>) -> Self {
        Self {
            hook: Some(hook),
            ..self
        }
    }

    /// Registers `request`'s device and polls until the service decides.
    ///
    /// `assigned` with a hub and a device id returns the result; `assigned` without either is
    /// a [`ProvisioningError::Protocol`] error; `failed` is
    /// [`ProvisioningError::RegistrationFailed`]; `disabled`, `unassigned` and unknown statuses
    /// are [`ProvisioningError::RegistrationNotAssigned`]. When the deadline ends it, the
    /// [`ProvisioningError::Timeout`] keeps why the last attempt failed. A second call while
    /// one runs gets [`ProvisioningError::OperationInProgress`]. The transport is disconnected
    /// at the end, within [`ClientOptions::close_grace`]; dropping the future ends the
    /// registration the same way.
    pub async fn register(
        &self,
        request: RegistrationRequest,
    ) -> Result<RegistrationResult, ProvisioningError> {
        // Only the assignment is used here: a key in a token is not opened.
        #[cfg(feature = "issuance")]
        let open: cache::KeyOpener<'_> = &|_| Err("not needed".into());
        #[cfg(not(feature = "issuance"))]
        let open = &();
        if let Some(cached) = self.cached(&request, open) {
            tracing::info!(
                registration_id = request.registration_id,
                "using the cached assignment"
            );
            return Ok(cached.result);
        }
        let outcome = self.run(&request).await;
        if let Ok(result) = &outcome {
            self.save(&request, result, None);
        }
        outcome
    }

    /// One registration, from the first request to the disconnect, without the cache.
    async fn run(
        &self,
        request: &RegistrationRequest,
    ) -> Result<RegistrationResult, ProvisioningError> {
        self.run_within(request, self.options.deadline).await
    }

    /// [`run`](Self::run) with what is left of a deadline.
    async fn run_within(
        &self,
        request: &RegistrationRequest,
        deadline: Duration,
    ) -> Result<RegistrationResult, ProvisioningError> {
        let (cancel_tx, mut cancelled) = oneshot::channel();
        let mut running = self.claim(cancel_tx)?;

        let options = ClientOptions {
            deadline,
            ..self.options.clone()
        };
        let log = self.log().clone();
        let mut course = Registration::new(options, Instant::now(), Rng::from_entropy(), log);
        let outcome = loop {
            match course.step(Instant::now()) {
                Step::Send(what) => {
                    let deadline = course.deadline().into();
                    tokio::select! {
                        answer = self.send(request, what) => {
                            course.answered(answer, Instant::now());
                            // Kept at once: the caller may drop this future at any await.
                            self.log().clone_from(course.log());
                        }
                        _ = &mut cancelled => course.cancel(),
                        () = sleep_until(deadline) => {}
                    }
                }
                Step::Sleep(until) => tokio::select! {
                    () = sleep_until(until.into()) => {}
                    _ = &mut cancelled => course.cancel(),
                },
                Step::Close(grace) => {
                    // From here the client closes the connection itself.
                    running.armed = false;
                    self.close(grace).await;
                    course.closed(Instant::now());
                }
                Step::Finish(outcome) => break *outcome,
            }
        };
        self.log().clone_from(course.log());
        drop(running);
        outcome
    }

    /// When the device's last requests were answered.
    fn log(&self) -> std::sync::MutexGuard<'_, RequestLog> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers an assignment (and an issued identity) in the cache file, if there is one;
    /// whether it is stored there (`false` without a cache file).
    fn save(
        &self,
        request: &RegistrationRequest,
        result: &RegistrationResult,
        certificate: Option<&cache::Issued>,
    ) -> bool {
        let Some(path) = &self.options.cache_file else {
            return false;
        };
        match cache::save(path, request, result, certificate) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot save the assignment: {e}");
                false
            }
        }
    }

    /// Ends the running registration, if any, with [`ProvisioningError::OperationCancelled`].
    pub fn cancel(&self) {
        if let Some(cancel) = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = cancel.send(());
        }
    }

    /// Takes the client for one registration, or says another one runs.
    fn claim(&self, cancel: oneshot::Sender<()>) -> Result<Running<'_>, ProvisioningError> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if running.is_some() {
            return Err(ProvisioningError::OperationInProgress);
        }
        *running = Some(cancel);
        Ok(Running {
            client: self,
            armed: true,
        })
    }

    /// Sends a register or a poll, through the hook if there is one, and waits for its answer.
    async fn send(&self, request: &RegistrationRequest, operation: Operation) -> RequestResult {
        let request = request.clone();
        let (register, query_status) = (&self.transport.register, &self.transport.query_status);
        // Nothing is sent before the future is first polled: a hook may hold it back.
        let send = async {
            let sent = match &operation {
                Operation::Register => register.send(Register { request }).await,
                Operation::Poll { operation_id } => {
                    let operation_id = operation_id.clone();
                    query_status
                        .send(QueryStatus {
                            request,
                            operation_id,
                        })
                        .await
                }
            };
            sent.unwrap_or_else(|e| Err(e.into()))
        };
        match &self.hook {
            Some(hook) => hook.send(&operation, Box::pin(send)).await,
            None => send.await,
        }
    }

    /// Disconnects (SRS 18_055: cancelling whatever is in flight), waiting at most `grace`
    /// even if the actor is slow to answer.
    async fn close(&self, grace: Duration) {
        let disconnect = self.transport.disconnect.send(Disconnect::within(grace));
        match tokio::time::timeout(grace, disconnect).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::debug!("disconnect after the registration failed: {e}"),
            Ok(Err(e)) => tracing::debug!("disconnect after the registration failed: {e}"),
            Err(_) => tracing::debug!(?grace, "the disconnect did not finish within the grace"),
        }
    }

    /// The cache's entry for `request`'s device, unless there is no cache, `force` is set, or
    /// the entry cannot be used (a corrupt one is set aside, with a warning).
    fn cached(
        &self,
        request: &RegistrationRequest,
        open: cache::KeyOpener<'_>,
    ) -> Option<cache::Entry> {
        let path = self
            .options
            .cache_file
            .as_ref()
            .filter(|_| !self.options.force)?;
        match cache::load(path, request, std::time::SystemTime::now(), open) {
            cache::Lookup::Found(entry) => Some(*entry),
            cache::Lookup::Missing => None,
            cache::Lookup::Unreadable(e) => {
                tracing::warn!(path = %path.display(), "ignoring the cache: {e}");
                None
            }
            cache::Lookup::Corrupt(e) => {
                match cache::set_aside(path) {
                    Ok(aside) => tracing::warn!(
                        path = %path.display(),
                        aside = %aside.display(),
                        "the cache is corrupt ({e}); set it aside and provisioning again"
                    ),
                    Err(io) => tracing::warn!(
                        path = %path.display(),
                        "the cache is corrupt ({e}) and cannot be set aside ({io}); ignoring it"
                    ),
                }
                None
            }
        }
    }
}
