//! `ProvisioningClient`: the whole registration in one call.
//!
//! It sends `Register`, then `QueryStatus` until the result is final, as the Node SDK's polling
//! state machine does, and goes further: it honours the service's retry-after with a floor,
//! backs off exponentially (with jitter on top) when throttled, retries a lost connection or a
//! lost response within an overall deadline, can be cancelled (or dropped) at any point, closes
//! the connection within a short grace whatever the service does, and can remember an
//! assignment in a file so a restarted device does not provision again.
//!
//! [`polling`] makes the decisions; [`cache`] keeps the assignment.

mod cache;
mod polling;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix::Addr;
use dps_messages::{
    Disconnect, ProvisioningError, QueryStatus, Register, RegistrationRequest, RegistrationResult,
    Stage,
};
use tokio::sync::oneshot;

use self::polling::{Next, Polling};
use crate::actor::ProvisioningTransportActor;

/// How a [`ProvisioningClient`] paces and bounds a registration.
///
/// **Pacing.** After an `assigning` answer the next poll waits the service's `retry-after`,
/// never less than `min_interval`; when the service gives none, the transport's default polling
/// interval (2 s) within `min_interval` and `max_interval`. After a throttled (429) or 5xx
/// answer, the wait is the retry-after (or the default interval; at least `min_interval`)
/// doubled for each such answer in a row, capped at `max_interval` but never below the
/// retry-after; after a lost connection, publish or response it is `min_interval` doubled the
/// same way. With `jitter`, a random 0-25 % is added on top of those back-off waits, so a fleet
/// throttled together does not return together; jitter never shortens a wait, so the client
/// never comes back sooner than the service allowed.
///
/// **Bounds.** The whole registration ends by `deadline`; the disconnect after it takes at most
/// `close_grace` more, so [`ProvisioningClient::register`] returns within `deadline +
/// close_grace` whatever the service does.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The shortest wait between requests, whatever the service says. Real DPS throttles a
    /// device that polls more than 5 times in 10 seconds, so the default is 2 s; tests against
    /// a mock broker can set 0.
    pub min_interval: Duration,
    /// The longest wait the client chooses itself: the cap of its back-off growth and of the
    /// default polling interval. A service's retry-after above it is still honoured.
    pub max_interval: Duration,
    /// The whole registration's deadline, across every request and retry.
    pub deadline: Duration,
    /// How long the disconnect at the end may take (unsubscribe, DISCONNECT, close) before the
    /// connection is dropped.
    pub close_grace: Duration,
    /// Add 0-25 % of random jitter on top of back-off waits. Tests that time waits turn it off.
    pub jitter: bool,
    /// Where to remember a successful assignment, if anywhere.
    pub cache_file: Option<PathBuf>,
    /// Provision even when the cache holds an assignment.
    pub force: bool,
}

impl Default for ClientOptions {
    /// 2 s floor, 60 s back-off cap, 5-minute deadline, 1 s close grace, jitter, no cache.
    fn default() -> Self {
        Self {
            min_interval: Duration::from_secs(2),
            max_interval: Duration::from_secs(60),
            deadline: Duration::from_secs(300),
            close_grace: Duration::from_secs(1),
            jitter: true,
            cache_file: None,
            force: false,
        }
    }
}

/// Registers a device through a [`ProvisioningTransportActor`] until it is assigned.
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
#[derive(Clone)]
pub struct ProvisioningClient {
    transport: Addr<ProvisioningTransportActor>,
    options: ClientOptions,
    /// The running registration's cancel switch; `Some` while one runs.
    running: Arc<Mutex<Option<oneshot::Sender<()>>>>,
}

/// Why the loop stopped waiting.
enum Stop {
    Cancelled,
    Deadline,
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
            // Cancels the request in flight and closes the connection within the grace; a
            // registration started next waits for that, then connects again.
            self.client
                .transport
                .do_send(Disconnect::within(self.client.options.close_grace));
        }
    }
}

impl ProvisioningClient {
    /// A client using `transport`, which must already have its credentials.
    pub fn new(transport: Addr<ProvisioningTransportActor>, options: ClientOptions) -> Self {
        Self {
            transport,
            options,
            running: Arc::new(Mutex::new(None)),
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
        if let Some(cached) = self.cached(&request) {
            tracing::info!(
                registration_id = request.registration_id,
                "using the cached assignment"
            );
            return Ok(cached);
        }
        let (cancel_tx, cancel_rx) = oneshot::channel();
        let mut running = self.claim(cancel_tx)?;

        let mut polling = Polling::default();
        let deadline = tokio::time::sleep(self.options.deadline);
        let stopped = tokio::select! {
            outcome = self.run(&request, &mut polling) => Ok(outcome),
            _ = cancel_rx => Err(Stop::Cancelled),
            () = deadline => Err(Stop::Deadline),
        };
        let outcome = stopped.unwrap_or_else(|stop| {
            Err(match stop {
                Stop::Cancelled => ProvisioningError::OperationCancelled,
                Stop::Deadline => ProvisioningError::timeout_after(
                    Stage::Registration,
                    self.options.deadline,
                    polling.take_last_failure(),
                ),
            })
        });

        // From here the client closes the connection itself (SRS 18_055: a disconnect cancels
        // whatever is in flight), and bounds the wait by the grace even if the actor is slow.
        running.armed = false;
        let grace = self.options.close_grace;
        let closed = tokio::time::timeout(grace, self.transport.send(Disconnect::within(grace)));
        match closed.await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::debug!("disconnect after the registration failed: {e}"),
            Ok(Err(e)) => tracing::debug!("disconnect after the registration failed: {e}"),
            Err(_) => tracing::debug!(?grace, "the disconnect did not finish within the grace"),
        }
        drop(running);
        if let (Ok(result), Some(path)) = (&outcome, &self.options.cache_file)
            && let Err(e) = cache::save(path, &request, result)
        {
            tracing::warn!(path = %path.display(), "cannot save the assignment: {e}");
        }
        outcome
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

    /// The register-and-poll loop; ends only with the service's final word.
    ///
    /// The decisions are [`Polling`]'s; this only sends and waits, so the future a caller holds
    /// stays small (no response is kept across an await).
    async fn run(
        &self,
        request: &RegistrationRequest,
        polling: &mut Polling,
    ) -> Result<RegistrationResult, ProvisioningError> {
        loop {
            let sent = match polling.operation_id() {
                None => {
                    self.transport
                        .send(Register {
                            request: request.clone(),
                        })
                        .await
                }
                Some(id) => {
                    self.transport
                        .send(QueryStatus {
                            request: request.clone(),
                            operation_id: id.to_owned(),
                        })
                        .await
                }
            };
            match polling.answer(sent.unwrap_or_else(|e| Err(e.into())), &self.options) {
                Next::Done(result) => return result,
                Next::Wait(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    fn cached(&self, request: &RegistrationRequest) -> Option<RegistrationResult> {
        let path = self
            .options
            .cache_file
            .as_ref()
            .filter(|_| !self.options.force)?;
        match cache::load(path, request) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring the cache: {e}");
                None
            }
        }
    }
}
