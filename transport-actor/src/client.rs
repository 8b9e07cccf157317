//! `ProvisioningClient`: the whole registration in one call.
//!
//! It sends `Register`, then `QueryStatus` until the result is final, as the Node SDK's polling
//! state machine does, and goes further: it honours the service's retry-after with a floor and
//! a cap, backs off exponentially (with jitter) when throttled, retries a lost connection or a
//! lost response within an overall deadline, can be cancelled at any point, and can remember an
//! assignment in a file so a restarted device does not provision again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix::Addr;
use dps_messages::{
    Cancel, Disconnect, ProvisioningError, QueryStatus, Register, RegistrationRequest,
    RegistrationResponse, RegistrationResult, RegistrationStatus, Stage, TransportError,
    TransportErrorKind,
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::actor::ProvisioningTransportActor;

/// How a [`ProvisioningClient`] paces and bounds a registration.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The shortest wait between requests, whatever the service says. Real DPS throttles a
    /// device that polls more than 5 times in 10 seconds, so the default is 2 s; tests against
    /// a mock broker can set 0.
    pub min_interval: Duration,
    /// The longest wait between requests, also the cap of the throttling back-off.
    pub max_interval: Duration,
    /// The whole registration's deadline, across every request and retry.
    pub deadline: Duration,
    /// Where to remember a successful assignment, if anywhere.
    pub cache_file: Option<PathBuf>,
    /// Provision even when the cache holds an assignment.
    pub force: bool,
}

impl Default for ClientOptions {
    /// 2 s floor, 60 s cap, 5-minute deadline, no cache.
    fn default() -> Self {
        Self {
            min_interval: Duration::from_secs(2),
            max_interval: Duration::from_secs(60),
            deadline: Duration::from_secs(300),
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
    /// `assigned` returns the result; `failed` is [`ProvisioningError::RegistrationFailed`];
    /// `disabled`, `unassigned` and unknown statuses are
    /// [`ProvisioningError::RegistrationNotAssigned`]. A second call while one runs gets
    /// [`ProvisioningError::OperationInProgress`]. The transport is disconnected at the end.
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
        {
            let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            if running.is_some() {
                return Err(ProvisioningError::OperationInProgress);
            }
            *running = Some(cancel_tx);
        }

        let deadline = tokio::time::sleep(self.options.deadline);
        let outcome = tokio::select! {
            outcome = self.run(&request) => outcome,
            _ = cancel_rx => Err(Stop::Cancelled),
            () = deadline => Err(Stop::Deadline),
        };
        *self.running.lock().unwrap_or_else(PoisonError::into_inner) = None;
        let outcome = match outcome {
            Ok(result) => result,
            Err(stop) => {
                // Whatever is in flight ends now; its answer no longer matters.
                let _ = self.transport.send(Cancel).await;
                Err(match stop {
                    Stop::Cancelled => ProvisioningError::OperationCancelled,
                    Stop::Deadline => {
                        ProvisioningError::timeout(Stage::Registration, self.options.deadline)
                    }
                })
            }
        };
        if let Err(e) = self
            .transport
            .send(Disconnect)
            .await
            .unwrap_or_else(|e| Err(e.into()))
        {
            tracing::debug!("disconnect after the registration failed: {e}");
        }
        if let (Ok(result), Some(path)) = (&outcome, &self.options.cache_file)
            && let Err(e) = save_cache(path, &request, result)
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

    /// The register-and-poll loop; never returns a `Stop`, only the service's final word.
    ///
    /// The decisions are [`Polling`]'s; this only sends and waits, so the future a caller holds
    /// stays small (no response is kept across an await).
    async fn run(
        &self,
        request: &RegistrationRequest,
    ) -> Result<Result<RegistrationResult, ProvisioningError>, Stop> {
        let mut polling = Polling::default();
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
                Next::Done(result) => return Ok(result),
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
        match load_cache(path, request) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring an unreadable cache: {e}");
                None
            }
        }
    }
}

/// What to do after an answer.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "matched at once, never kept across an await"
)]
enum Next {
    /// Wait this long, then send the next request: a poll when there is an operation id, else
    /// a register.
    Wait(Duration),
    /// The service's final word.
    Done(Result<RegistrationResult, ProvisioningError>),
}

/// The register-and-poll decisions, without IO: which request comes next and how long to wait
/// before it.
#[derive(Debug, Default)]
struct Polling {
    operation_id: Option<String>,
    /// Throttled answers in a row.
    throttled: u32,
    /// Lost connections or responses in a row.
    transient: u32,
}

impl Polling {
    /// The operation to poll; `None` means register (again).
    fn operation_id(&self) -> Option<&str> {
        self.operation_id.as_deref()
    }

    /// Takes the answer to the last request.
    fn answer(
        &mut self,
        answer: Result<RegistrationResponse, ProvisioningError>,
        options: &ClientOptions,
    ) -> Next {
        let backoff =
            |base, attempt| backoff(base, attempt, options.min_interval, options.max_interval);
        let response = match answer {
            Ok(response) => response,
            Err(error) if is_transient(&error) => {
                // The same request again.
                self.transient += 1;
                let wait = backoff(options.min_interval, self.transient);
                tracing::info!(%error, ?wait, "retrying after a transient failure");
                return Next::Wait(wait);
            }
            Err(error) => return Next::Done(Err(error)),
        };
        self.transient = 0;
        let RegistrationResponse {
            status_code,
            result,
            polling_interval,
            ..
        } = response;
        tracing::debug!(status = %result.status, status_code, ?polling_interval, "registration status");
        match result.status {
            RegistrationStatus::Assigned => Next::Done(Ok(result)),
            RegistrationStatus::Failed => {
                Next::Done(Err(ProvisioningError::RegistrationFailed(Box::new(result))))
            }
            RegistrationStatus::Assigning | RegistrationStatus::Registering => {
                // A poll answered without an operationId starts again from register.
                self.operation_id = result.operation_id;
                Next::Wait(if status_code >= dps_messages::outcome::RETRY_STATUS {
                    self.throttled += 1;
                    backoff(polling_interval, self.throttled)
                } else {
                    self.throttled = 0;
                    polling_interval.clamp(
                        options.min_interval,
                        options.max_interval.max(options.min_interval),
                    )
                })
            }
            _ => Next::Done(Err(ProvisioningError::RegistrationNotAssigned(Box::new(
                result,
            )))),
        }
    }
}

/// `base` (at least `floor`) doubled for each attempt after the first, capped at `cap`, less up
/// to 25 % jitter so that a fleet throttled together does not retry together; never below
/// `floor`.
fn backoff(base: Duration, attempt: u32, floor: Duration, cap: Duration) -> Duration {
    let cap = cap.max(floor);
    let doublings = attempt.clamp(1, 17) - 1;
    let grown = base.max(floor).saturating_mul(1u32 << doublings).min(cap);
    let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as f64 / 4000.0;
    grown.mul_f64(1.0 - jitter).max(floor)
}

/// Failures worth another try within the deadline: the connection or a response was lost.
fn is_transient(error: &ProvisioningError) -> bool {
    matches!(
        error,
        ProvisioningError::Transport(TransportError {
            kind: TransportErrorKind::ConnectionLost | TransportErrorKind::Publish,
            ..
        }) | ProvisioningError::Timeout {
            stage: Stage::Response | Stage::PublishAck,
            ..
        }
    )
}

/// What the cache file holds.
#[derive(Serialize, Deserialize)]
struct Cached {
    id_scope: String,
    registration_id: String,
    result: RegistrationResult,
}

fn load_cache(
    path: &Path,
    request: &RegistrationRequest,
) -> Result<Option<RegistrationResult>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let cached: Cached = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let same_device =
        cached.id_scope == request.id_scope && cached.registration_id == request.registration_id;
    Ok(
        (same_device && cached.result.status == RegistrationStatus::Assigned)
            .then_some(cached.result),
    )
}

/// Writes the cache atomically: a temporary file beside it, then a rename.
fn save_cache(
    path: &Path,
    request: &RegistrationRequest,
    result: &RegistrationResult,
) -> std::io::Result<()> {
    let cached = Cached {
        id_scope: request.id_scope.clone(),
        registration_id: request.registration_id.clone(),
        result: result.clone(),
    };
    let text = serde_json::to_string_pretty(&cached).map_err(std::io::Error::other)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(status: &str) -> RegistrationResult {
        serde_json::from_value(
            serde_json::json!({"status": status, "registrationState": {"assignedHub": "h"}}),
        )
        .unwrap()
    }

    fn response(status_code: u16, body: serde_json::Value, interval: u64) -> RegistrationResponse {
        RegistrationResponse {
            status_code,
            result: serde_json::from_value(body).unwrap(),
            polling_interval: Duration::from_secs(interval),
            invalid_retry_after: None,
        }
    }

    fn options(min: u64, max: u64) -> ClientOptions {
        ClientOptions {
            min_interval: Duration::from_secs(min),
            max_interval: Duration::from_secs(max),
            ..ClientOptions::default()
        }
    }

    fn assigning(operation_id: Option<&str>, interval: u64) -> RegistrationResponse {
        let mut body = serde_json::json!({"status": "assigning"});
        if let Some(id) = operation_id {
            body["operationId"] = id.into();
        }
        response(202, body, interval)
    }

    fn wait(next: Next) -> Duration {
        match next {
            Next::Wait(wait) => wait,
            Next::Done(done) => panic!("expected a wait, got {done:?}"),
        }
    }

    #[test]
    fn polling_ends_with_the_service_decision() {
        let o = options(0, 60);
        let mut p = Polling::default();
        let Next::Done(Ok(result)) = p.answer(
            Ok(response(200, serde_json::json!({"status": "assigned"}), 0)),
            &o,
        ) else {
            panic!("assigned ends the registration")
        };
        assert_eq!(result.status, RegistrationStatus::Assigned);
        let failed = serde_json::json!({"status": "failed", "registrationState": {"errorCode": 400207, "errorMessage": "no hub"}});
        let Next::Done(Err(ProvisioningError::RegistrationFailed(result))) =
            p.answer(Ok(response(200, failed, 0)), &o)
        else {
            panic!("failed is RegistrationFailed")
        };
        assert_eq!(result.registration_state.unwrap().error_code, Some(400207));
        for status in ["disabled", "unassigned", "something-new"] {
            let next = p.answer(
                Ok(response(200, serde_json::json!({"status": status}), 0)),
                &o,
            );
            assert!(
                matches!(
                    next,
                    Next::Done(Err(ProvisioningError::RegistrationNotAssigned(_)))
                ),
                "{status}: {next:?}"
            );
        }
        let next = p.answer(Err(ProvisioningError::OperationCancelled), &o);
        assert!(matches!(
            next,
            Next::Done(Err(ProvisioningError::OperationCancelled))
        ));
    }

    #[test]
    fn polling_follows_the_operation_and_its_interval_within_floor_and_cap() {
        let o = options(2, 30);
        let mut p = Polling::default();
        assert_eq!(p.operation_id(), None);
        assert_eq!(
            wait(p.answer(Ok(assigning(Some("op-1"), 5)), &o)),
            Duration::from_secs(5)
        );
        assert_eq!(p.operation_id(), Some("op-1"));
        assert_eq!(
            wait(p.answer(Ok(assigning(Some("op-1"), 0)), &o)),
            Duration::from_secs(2)
        );
        assert_eq!(
            wait(p.answer(Ok(assigning(Some("op-1"), 90)), &o)),
            Duration::from_secs(30)
        );
        // A poll answered without an operationId starts again from register.
        wait(p.answer(Ok(assigning(None, 1)), &o));
        assert_eq!(p.operation_id(), None);
    }

    #[test]
    fn throttling_backs_off_and_a_normal_answer_resets_it() {
        let o = options(1, 60);
        let mut p = Polling::default();
        let throttled = || response(429, serde_json::json!({"status": "registering"}), 2);
        let first = wait(p.answer(Ok(throttled()), &o));
        assert!(
            first <= Duration::from_secs(2) && first >= Duration::from_millis(1500),
            "{first:?}"
        );
        wait(p.answer(Ok(throttled()), &o));
        let third = wait(p.answer(Ok(throttled()), &o));
        assert!(
            third >= Duration::from_secs(6) && third <= Duration::from_secs(8),
            "{third:?}"
        );
        assert_eq!(
            wait(p.answer(Ok(assigning(Some("op"), 2)), &o)),
            Duration::from_secs(2)
        );
        let again = wait(p.answer(Ok(throttled()), &o));
        assert!(again <= Duration::from_secs(2), "{again:?}");
    }

    #[test]
    fn a_lost_answer_repeats_the_same_request_after_a_back_off() {
        let o = options(1, 60);
        let mut p = Polling::default();
        wait(p.answer(Ok(assigning(Some("op-7"), 1)), &o));
        let lost = || TransportError::new(TransportErrorKind::ConnectionLost, "gone").into();
        // The floor bounds the jitter from below: the first retry waits exactly the floor.
        assert_eq!(wait(p.answer(Err(lost()), &o)), Duration::from_secs(1));
        let second = wait(p.answer(Err(lost()), &o));
        assert!(second >= Duration::from_millis(1500), "{second:?}");
        assert_eq!(
            p.operation_id(),
            Some("op-7"),
            "the poll is repeated, not the register"
        );
    }

    #[test]
    fn the_cache_round_trips_and_belongs_to_one_device() {
        let path = std::env::temp_dir().join(format!("dps-cache-test-{}.json", std::process::id()));
        let request = RegistrationRequest::new("scope", "dev");
        assert_eq!(load_cache(&path, &request), Ok(None));
        save_cache(&path, &request, &result("assigned")).unwrap();
        assert_eq!(
            load_cache(&path, &request).unwrap(),
            Some(result("assigned"))
        );
        assert_eq!(
            load_cache(&path, &RegistrationRequest::new("scope", "other")).unwrap(),
            None
        );
        std::fs::write(&path, "{broken").unwrap();
        assert!(load_cache(&path, &request).is_err());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn backoff_grows_caps_jitters_and_respects_the_floor() {
        let s = Duration::from_secs;
        for _ in 0..100 {
            let first = backoff(s(2), 1, s(1), s(60));
            assert!(first <= s(2) && first >= s(2).mul_f64(0.75), "{first:?}");
            let third = backoff(s(2), 3, s(1), s(60));
            assert!(third <= s(8) && third >= s(6), "{third:?}");
            assert!(backoff(s(2), 40, s(1), s(60)) <= s(60));
            assert!(backoff(Duration::ZERO, 5, s(3), s(60)) >= s(3));
            assert_eq!(
                backoff(Duration::ZERO, 5, Duration::ZERO, s(60)),
                Duration::ZERO
            );
        }
    }

    #[test]
    fn transient_failures_are_the_lost_ones() {
        assert!(is_transient(
            &TransportError::new(TransportErrorKind::ConnectionLost, "x").into()
        ));
        assert!(is_transient(&ProvisioningError::timeout(
            Stage::Response,
            Duration::ZERO
        )));
        assert!(!is_transient(&ProvisioningError::timeout(
            Stage::Connect,
            Duration::ZERO
        )));
        assert!(!is_transient(
            &TransportError::new(TransportErrorKind::Connect, "x").into()
        ));
        assert!(!is_transient(&ProvisioningError::OperationCancelled));
    }
}
