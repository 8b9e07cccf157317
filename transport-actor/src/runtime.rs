//! The MQTT runtime: one thread running an ntex system that drives the MQTT connections of any
//! number of actors.
//!
//! ntex-mqtt needs an ntex reactor on the thread that drives its sockets and panics inside a
//! plain actix system, so the connections live on a dedicated thread. Actors hand it `Send`
//! closures; the closures build the (non-`Send`) connection futures on that thread.

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dps_messages::ProvisioningError;
use dps_messages::error::{TransportError, TransportErrorKind};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// How many connections one runtime thread opens (TCP, TLS, WebSocket, CONNACK) at a time.
///
/// A herd of devices connecting at once (a gateway starting, or coming back after an outage)
/// would otherwise hold every handshake half done, each with its buffers and key exchange, while
/// the thread's CPU serves all of them in turn: all finish late together. Taking turns, they
/// finish in order and hold a fraction of the memory. Against a distant service a connection
/// takes a few round trips; at 300 ms each, 64 at a time still open about 200 connections a
/// second per runtime thread. Start more runtimes for more.
pub(crate) const MAX_OPENING: usize = 64;

/// Turns to open a connection, `limit` at a time.
#[derive(Debug, Clone)]
pub(crate) struct Turns(Arc<Semaphore>);

impl Turns {
    pub(crate) fn new(limit: usize) -> Self {
        Self(Arc::new(Semaphore::new(limit)))
    }

    /// Waits for a turn; it ends when the returned permit is dropped.
    pub(crate) async fn wait(&self) -> Option<OwnedSemaphorePermit> {
        // The semaphore is never closed, so this never yields `None`; without a permit the
        // connection simply goes ahead.
        self.0.clone().acquire_owned().await.ok()
    }
}

thread_local! {
    /// The turns of the runtime thread this runs on.
    static OPENING: Turns = Turns::new(MAX_OPENING);
}

/// A turn to open a connection on this runtime thread (see [`MAX_OPENING`]).
pub(crate) async fn opening_turn() -> Option<OwnedSemaphorePermit> {
    OPENING.with(Turns::clone).wait().await
}

type Job = Box<dyn FnOnce() + Send>;

/// How long a worker of ntex's blocking thread pool waits for work before it ends.
///
/// Nothing of ours runs on that pool (names are looked up on tokio's: `link::names`), but a
/// worker that ntex (3.17) started must not outlive the pool's channels: once they are gone (the
/// system dropped when it stops) the worker spins on them, a core's worth of CPU for the rest of
/// the process. So the runtime thread keeps its system, and with it the channels, until idle
/// workers have ended.
const POOL_IDLE: Duration = Duration::from_millis(500);

/// A handle to an MQTT runtime thread. Cheap to clone; the thread stops when the last handle
/// is dropped (the [`MqttRuntime::shared`] one lives as long as the process).
#[derive(Clone, Debug)]
pub struct MqttRuntime {
    jobs: mpsc::UnboundedSender<Job>,
}

impl MqttRuntime {
    /// The process-wide runtime, started on first use.
    pub fn shared() -> Result<MqttRuntime, ProvisioningError> {
        static SHARED: OnceLock<Result<MqttRuntime, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| MqttRuntime::start("dps-mqtt").map_err(|e| e.to_string()))
            .clone()
            .map_err(|e| TransportError::new(TransportErrorKind::Shutdown, e).into())
    }

    /// Starts a runtime on a new thread named `name`.
    pub fn start(name: &str) -> std::io::Result<MqttRuntime> {
        let (jobs, mut rx) = mpsc::unbounded_channel::<Job>();
        let system_name = name.to_owned();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let kept = Rc::new(Cell::new(None));
                let keep = kept.clone();
                let result = ntex::rt::System::build()
                    .name(&system_name)
                    .disable_signals()
                    // ntex's watchdog pings the system's arbiters every 2 s (and wakes the
                    // thread again a second later to check the pong): two wake-ups every
                    // two seconds for as long as the process lives, for a latency report
                    // nobody reads here. An idle device's runtime sleeps instead.
                    .ping_interval(0)
                    .thread_pool_recv_timeout(POOL_IDLE)
                    .build(ntex::rt::DefaultRuntime)
                    .run(move || {
                        keep.set(Some(ntex::rt::System::current()));
                        ntex::rt::spawn(async move {
                            while let Some(job) = rx.recv().await {
                                job();
                            }
                            ntex::rt::System::current().stop();
                        });
                        Ok(())
                    });
                if let Err(e) = result {
                    tracing::error!("the MQTT runtime stopped: {e}");
                }
                // Keep the system, and its pool's channels, while the pool's idle workers end
                // (see `POOL_IDLE`).
                std::thread::sleep(POOL_IDLE * 2);
                drop(kept);
            })?;
        Ok(MqttRuntime { jobs })
    }

    /// Runs `job` on the runtime thread, inside its ntex system (and tokio `LocalSet`).
    pub(crate) fn run(&self, job: impl FnOnce() + Send + 'static) -> Result<(), ProvisioningError> {
        self.jobs.send(Box::new(job)).map_err(|_| stopped())
    }

    /// Runs the future `make` builds on the runtime thread, beside the connections, and returns
    /// its output to whichever thread awaits it.
    ///
    /// For fleet code: a [`ProvisioningClient`](crate::ProvisioningClient) driven from here, over
    /// transports started with
    /// [`start_on_runtime`](crate::ProvisioningTransportActor::start_on_runtime), sends its
    /// requests and gets their answers without a thread switch. The future need not be `Send`
    /// (it is built on the runtime thread) and may spawn local tasks. If the runtime has
    /// stopped, or stops first, or the future panics (which ends its task only, not the
    /// runtime), the output is a [`TransportErrorKind::Shutdown`] error that says which.
    pub fn spawn_fn<F, Fut>(
        &self,
        make: F,
    ) -> impl Future<Output = Result<Fut::Output, ProvisioningError>> + Send + 'static
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        // When the job cannot run, it is dropped with `tx`, and `rx` says so.
        let _ = self.run(move || {
            let task = ntex::rt::spawn(make());
            ntex::rt::spawn(async move {
                let _ = tx.send(task.await.map_err(|_| {
                    TransportError::new(TransportErrorKind::Shutdown, "the future panicked").into()
                }));
            })
            .detach();
        });
        async move { rx.await.map_err(|_| stopped())? }
    }

    /// Runs the future `make` builds on the runtime thread.
    pub(crate) fn spawn<F, Fut>(&self, make: F) -> Result<(), ProvisioningError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.run(move || {
            ntex::rt::spawn(make()).detach();
        })
    }
}

fn stopped() -> ProvisioningError {
    TransportError::new(TransportErrorKind::Shutdown, "the MQTT runtime has stopped").into()
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;

    fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(Waker::noop()))
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn spawn_fn_runs_on_the_runtime_thread_and_returns_the_output() {
        let runtime = MqttRuntime::start("spawn-fn-test").unwrap();
        let ran_on = block_on(runtime.spawn_fn(|| async {
            // A local task, as fleet code spawns one per device.
            let local = ntex::rt::spawn(async { std::thread::current().name().map(str::to_owned) });
            local.await.unwrap()
        }));
        assert_eq!(ran_on.unwrap().as_deref(), Some("spawn-fn-test"));
    }

    /// The threads of this process whose name starts with `prefix` (as the kernel keeps it:
    /// the first 15 bytes).
    fn threads_named(prefix: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with(prefix))
            .count()
    }

    /// Voluntary context switches (sleeps ended by a wake-up) of this process's threads
    /// named `name`.
    #[cfg(target_os = "linux")]
    fn wakeups_of(name: &str) -> u64 {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| {
                let task = task.ok()?.path();
                let comm = std::fs::read_to_string(task.join("comm")).ok()?;
                if comm.trim_end() != name {
                    return None;
                }
                let status = std::fs::read_to_string(task.join("status")).ok()?;
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn an_idle_runtime_thread_sleeps_with_no_watchdog_waking_it() {
        let runtime = MqttRuntime::start("idle-rt").unwrap();
        // Started, one job run to its end, and back asleep (a thread's switch is counted
        // when it goes to sleep, so its last one must be behind us).
        assert_eq!(block_on(runtime.spawn_fn(|| async { 1 })).unwrap(), 1);
        std::thread::sleep(std::time::Duration::from_millis(200));
        let before = wakeups_of("idle-rt");
        // Past ntex's watchdog interval (2 s), which woke the thread twice in it.
        std::thread::sleep(std::time::Duration::from_millis(2_500));
        assert_eq!(wakeups_of("idle-rt") - before, 0);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_runtime_that_stops_leaves_no_blocking_worker_behind() {
        // ntex names its pool's workers "<system>:pool-wrk:<n>". With the system dropped at
        // once when it stopped, the worker spun on the pool's closed channels for good.
        let runtime = MqttRuntime::start("rtstop").unwrap();
        let on_pool = block_on(runtime.spawn_fn(|| ntex::rt::spawn_blocking(|| 7)));
        assert_eq!(on_pool.unwrap().unwrap(), 7);
        assert_eq!(threads_named("rtstop:pool"), 1);
        drop(runtime);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while threads_named("rtstop:pool") > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the blocking worker outlived its runtime"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn spawn_fn_reports_a_runtime_that_stops_first() {
        let runtime = MqttRuntime::start("spawn-fn-stop").unwrap();
        let never = runtime.spawn_fn(std::future::pending::<()>);
        // The last handle gone, the runtime stops and drops the unfinished future.
        drop(runtime);
        let err = block_on(never).unwrap_err();
        assert_eq!(
            err.transport_kind(),
            Some(TransportErrorKind::Shutdown),
            "{err:?}"
        );
    }

    #[test]
    fn spawn_fn_reports_a_panic_and_the_runtime_carries_on() {
        let runtime = MqttRuntime::start("spawn-fn-panic").unwrap();
        let err =
            block_on(runtime.spawn_fn(|| async { panic!("fleet code went wrong") })).unwrap_err();
        assert!(err.to_string().contains("panicked"), "{err}");
        assert_eq!(block_on(runtime.spawn_fn(|| async { 7 })).unwrap(), 7);
    }

    #[test]
    fn turns_are_given_limit_at_a_time_and_come_back_when_dropped() {
        let turns = Turns::new(2);
        let Poll::Ready(Some(first)) = poll_once(pin!(turns.wait())) else {
            panic!("the first turn waits")
        };
        let Poll::Ready(Some(_second)) = poll_once(pin!(turns.wait())) else {
            panic!("the second turn waits")
        };
        let mut third = pin!(turns.wait());
        assert!(poll_once(third.as_mut()).is_pending());
        drop(first);
        assert!(matches!(poll_once(third.as_mut()), Poll::Ready(Some(_))));
    }
}
