//! Provisioning a fleet: many devices from one process, at the pace the service allows.
//!
//! A gateway provisioning its downstream devices, a factory station, a fleet re-provisioning
//! after a hub migration: each is limited by the service's quota (DPS: 1,000 registrations a
//! minute per unit), not by this crate. [`Fleet::provision`] spreads the devices over several
//! MQTT runtime threads, provisions a bounded number at once, each with its own transport and
//! [`ProvisioningClient`], and spaces the registrations of all of them with one adaptive pace
//! ([`PacerOptions`]) that learns the quota and keeps to it. Each client passes its requests through
//! the fleet's hook (`hook.rs`) on their way to its transport, so a register waiting for its
//! turn is part of the client's request and ends with it. Each device's outcome comes back as
//! soon as it is known, and [`FleetProgress`] counts as it goes. Read the outcomes on the
//! fleet's runtime thread (with one runtime, [`MqttRuntime::spawn_fn`]) and no outcome wakes
//! another thread; `dps bench` does.
//!
//! ```no_run
//! # use dps_transport_actor::TransportConfig;
//! # use dps_transport_actor::fleet::{Fleet, FleetDevice, FleetOptions};
//! # async fn example(devices: Vec<FleetDevice>) -> Result<(), dps_messages::ProvisioningError> {
//! let config = TransportConfig::builder(dps_messages::Protocol::Mqtt);
//! let mut run = Fleet::provision(config, devices, FleetOptions::default())?;
//! while let Some(outcome) = run.outcomes.recv().await {
//!     println!("{}: {:?}", outcome.registration_id, outcome.result.map(|r| r.status));
//! }
//! println!("{:?}", run.progress.snapshot());
//! # Ok(()) }
//! ```

mod hook;
mod pacer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix::Actor;
use dps_messages::error::{TransportError, TransportErrorKind};
use dps_messages::{Authentication, ProvisioningError, RegistrationRequest, RegistrationResult};
use tokio::sync::mpsc;

use self::hook::FleetHook;
pub use self::pacer::PacerOptions;
use crate::{
    ClientOptions, MqttRuntime, ProvisioningClient, ProvisioningTransportActor, TransportConfig,
    TransportConfigBuilder,
};

/// One device of a fleet: what to register, and its credential.
#[derive(Debug, Clone)]
pub struct FleetDevice {
    /// The registration (id scope, registration id, endpoint, payload ...).
    pub request: RegistrationRequest,
    /// The device's credential.
    pub auth: Authentication,
}

/// How a fleet is provisioned.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Devices provisioned at once, across all runtimes.
    pub concurrency: usize,
    /// MQTT runtime threads to spread the connections over; 0 means one per available core.
    pub runtimes: usize,
    /// Each device's client options (deadline, floor between polls, ...).
    pub client: ClientOptions,
    /// The fleet-wide pace of registrations.
    pub pacing: PacerOptions,
}

impl Default for FleetOptions {
    /// 50 at once, a runtime per core, the default client, a pace from 50 registrations a
    /// second.
    fn default() -> Self {
        Self {
            concurrency: 50,
            runtimes: 0,
            client: ClientOptions::default(),
            pacing: PacerOptions::default(),
        }
    }
}

/// How one device's provisioning ended, as it comes on [`FleetRun::outcomes`].
#[derive(Debug)]
pub struct FleetOutcome {
    /// The device.
    pub registration_id: String,
    /// Its assignment, or why not.
    pub result: Result<RegistrationResult, ProvisioningError>,
    /// From its first request to its end.
    pub elapsed: Duration,
}

/// Counts of a running fleet, readable from any thread: a progress line, a dashboard, or a
/// test that checks how many requests the service refused.
#[derive(Debug, Clone, Default)]
pub struct FleetProgress(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    total: AtomicU64,
    finished: AtomicU64,
    assigned: AtomicU64,
    registers: AtomicU64,
    polls: AtomicU64,
    refused: AtomicU64,
    unreachable: AtomicU64,
    /// The pace, as `f64` bits.
    rate: AtomicU64,
}

/// A fleet's counts at one moment, from [`FleetProgress::snapshot`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProgressSnapshot {
    /// Devices in the fleet.
    pub total: u64,
    /// Devices whose provisioning ended.
    pub finished: u64,
    /// Of those, the assigned.
    pub assigned: u64,
    /// Register requests sent.
    pub registers: u64,
    /// Poll requests sent.
    pub polls: u64,
    /// Requests the service answered 429.
    pub refused: u64,
    /// Registers that could not reach the service (an outage): the fleet probes meanwhile.
    pub unreachable: u64,
    /// The pace now, in registrations per second.
    pub rate: f64,
}

impl FleetProgress {
    /// The counts now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        let c = &self.0;
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        ProgressSnapshot {
            total: load(&c.total),
            finished: load(&c.finished),
            assigned: load(&c.assigned),
            registers: load(&c.registers),
            polls: load(&c.polls),
            refused: load(&c.refused),
            unreachable: load(&c.unreachable),
            rate: f64::from_bits(load(&c.rate)),
        }
    }

    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A fleet being provisioned.
#[derive(Debug)]
pub struct FleetRun {
    /// Each device's outcome, as it ends; the channel closes after the last.
    pub outcomes: mpsc::UnboundedReceiver<FleetOutcome>,
    /// The counts as it goes.
    pub progress: FleetProgress,
}

/// Provisions fleets; see the [module docs](self).
pub struct Fleet;

impl Fleet {
    /// Starts provisioning `devices` with transports built from `config` (one configuration per
    /// runtime thread, so the runtime set on `config` is replaced), as `options` says. Returns
    /// at once; the outcomes come on [`FleetRun::outcomes`].
    ///
    /// A device is taken from `devices` when a worker is free for it: a `Vec` will do, and an
    /// iterator that builds each device as it is taken keeps only the devices in flight.
    pub fn provision<D>(
        config: TransportConfigBuilder,
        devices: D,
        options: FleetOptions,
    ) -> Result<FleetRun, ProvisioningError>
    where
        D: IntoIterator<Item = FleetDevice>,
        D::IntoIter: ExactSizeIterator + Send + 'static,
    {
        let devices = devices.into_iter();
        let count = devices.len();
        let progress = FleetProgress::default();
        progress.0.total.store(count as u64, Ordering::Relaxed);
        let (results, outcomes) = mpsc::unbounded_channel();
        let runtimes = runtimes(options.runtimes, count)?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Box::new(devices)),
            hook: Arc::new(FleetHook::new(options.pacing, progress.clone())),
            progress: progress.clone(),
            client: options.client.clone(),
        });
        let workers = options.concurrency.max(1);
        for (i, runtime) in runtimes.iter().enumerate() {
            let config = config.clone().runtime(runtime.clone()).build()?;
            // The workers, spread evenly: runtime i takes every n-th.
            let mine = (i..workers).step_by(runtimes.len()).count();
            for _ in 0..mine {
                let (shared, config, results) = (shared.clone(), config.clone(), results.clone());
                runtime.spawn(move || worker(shared, config, results))?;
            }
        }
        Ok(FleetRun { outcomes, progress })
    }
}

/// `wanted` runtime threads (one per core for 0), never more than there are devices.
fn runtimes(wanted: usize, devices: usize) -> Result<Vec<MqttRuntime>, ProvisioningError> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let n = if wanted == 0 { cores } else { wanted }.clamp(1, devices.max(1));
    if n == 1 {
        return Ok(vec![MqttRuntime::shared()?]);
    }
    (0..n)
        .map(|i| {
            MqttRuntime::start(&format!("dps-fleet-{i}"))
                .map_err(|e| TransportError::new(TransportErrorKind::Shutdown, e).into())
        })
        .collect()
}

/// What every worker of a fleet shares.
struct Shared {
    /// The devices not yet taken.
    queue: Mutex<Box<dyn Iterator<Item = FleetDevice> + Send>>,
    hook: Arc<FleetHook>,
    progress: FleetProgress,
    client: ClientOptions,
}

impl Shared {
    fn next_device(&self) -> Option<FleetDevice> {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .next()
    }
}

/// Provisions devices from the queue, one at a time, until it is empty.
async fn worker(
    shared: Arc<Shared>,
    config: TransportConfig,
    results: mpsc::UnboundedSender<FleetOutcome>,
) {
    while let Some(device) = shared.next_device() {
        let started = Instant::now();
        let registration_id = device.request.registration_id.clone();
        let deadline = shared.client.deadline;
        let mut attempt = 1;
        let mut result = provision_one(&shared, &config, device.clone(), deadline).await;
        // A device an outage broke (its connection refused, lost, or closed before CONNACK,
        // its operation lost by a restarted service) is provisioned again within its deadline.
        while let Err(error) = &result
            && again(error, attempt)
            && let Some(left) = deadline.checked_sub(started.elapsed())
        {
            attempt += 1;
            result = provision_one(&shared, &config, device.clone(), left).await;
        }
        let counters = &shared.progress.0;
        FleetProgress::add(&counters.finished);
        if result.is_ok() {
            FleetProgress::add(&counters.assigned);
        }
        let _ = results.send(FleetOutcome {
            registration_id,
            result,
            elapsed: started.elapsed(),
        });
    }
}

/// Whether a device whose provisioning ended with `error` after `attempts` is worth another:
/// a lost connection or an unreachable service until its deadline (the pace probes meanwhile),
/// a connection closed before CONNACK three times (a service going down does that, and so does
/// one refusing the certificate), an operation the service no longer knows (a service that
/// restarted) once.
fn again(error: &ProvisioningError, attempts: u32) -> bool {
    use TransportErrorKind::{Connect, ConnectionLost, Unreachable};
    match (error, error.transport_kind()) {
        (_, Some(Unreachable | ConnectionLost)) => true,
        (_, Some(Connect)) => attempts < 3,
        (ProvisioningError::DeviceNotFound(_), _) => attempts < 2,
        _ => false,
    }
}

async fn provision_one(
    shared: &Arc<Shared>,
    config: &TransportConfig,
    device: FleetDevice,
    deadline: Duration,
) -> Result<RegistrationResult, ProvisioningError> {
    let transport = ProvisioningTransportActor::new(config.clone())
        .with_authentication(device.auth)
        .start();
    let options = ClientOptions {
        deadline,
        ..shared.client.clone()
    };
    ProvisioningClient::new(transport, options)
        .hooked(shared.hook.clone())
        .register(device.request)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use dps_messages::error::ServiceError;

    fn transport(kind: TransportErrorKind) -> ProvisioningError {
        TransportError::new(kind, "x").into()
    }

    #[test]
    fn a_device_an_outage_broke_is_worth_another_attempt_and_others_are_not() {
        for kind in [
            TransportErrorKind::Unreachable,
            TransportErrorKind::ConnectionLost,
        ] {
            assert!(again(&transport(kind), 1) && again(&transport(kind), 10));
        }
        let closed = transport(TransportErrorKind::Connect);
        assert!(again(&closed, 1) && again(&closed, 2) && !again(&closed, 3));
        let lost_operation = ProvisioningError::from_service(ServiceError {
            status: 404,
            error_code: None,
            tracking_id: None,
            message: None,
            timestamp_utc: None,
            body: String::new(),
        });
        assert!(again(&lost_operation, 1) && !again(&lost_operation, 2));
        for final_error in [
            transport(TransportErrorKind::Shutdown),
            ProvisioningError::OperationCancelled,
        ] {
            assert!(!again(&final_error, 1), "{final_error:?}");
        }
    }
}
