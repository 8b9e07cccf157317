//! The MQTT runtime: one thread running an ntex system that drives the MQTT connections of any
//! number of actors.
//!
//! ntex-mqtt needs an ntex reactor on the thread that drives its sockets and panics inside a
//! plain actix system, so the connections live on a dedicated thread. Actors hand it `Send`
//! closures; the closures build the (non-`Send`) connection futures on that thread.

use std::future::Future;
use std::sync::OnceLock;

use dps_messages::{ProvisioningError, TransportError, TransportErrorKind};
use tokio::sync::mpsc;

type Job = Box<dyn FnOnce() + Send>;

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
                let result = ntex::rt::System::build()
                    .name(&system_name)
                    .disable_signals()
                    .build(ntex::rt::DefaultRuntime)
                    .run(move || {
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
            })?;
        Ok(MqttRuntime { jobs })
    }

    /// Runs `job` on the runtime thread, inside its ntex system (and tokio `LocalSet`).
    pub(crate) fn run(&self, job: impl FnOnce() + Send + 'static) -> Result<(), ProvisioningError> {
        self.jobs.send(Box::new(job)).map_err(|_| {
            TransportError::new(TransportErrorKind::Shutdown, "the MQTT runtime has stopped").into()
        })
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
