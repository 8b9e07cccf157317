//! A gateway provisions a fleet of devices from one process.
//!
//! Every device has its own transport actor and connection; all of them share one
//! `TransportConfig` (one check of the service's certificate chain) and one MQTT runtime thread.
//! The transports start beside their connections (`start_on_runtime`) and the clients run there
//! too (`MqttRuntime::spawn_fn`), so no request or answer changes threads. The service is the
//! in-process mock DPS broker, so this runs with no account:
//!
//! ```sh
//! cargo run --release -p dps-transport-actor --example fleet
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use dps_messages::{
    Protocol, ProvisioningError, RegistrationRequest, RegistrationResult, SetAuthentication,
    X509Identity,
};
use dps_mock_broker::{MockBroker, TestPki};
use dps_transport_actor::{
    ClientOptions, MqttRuntime, ProvisioningClient, ProvisioningTransportActor, TransportConfig,
};

/// How many devices the gateway provisions.
const DEVICES: usize = 200;
/// How many provision at once.
const AT_ONCE: usize = 20;

/// Registers one device over a transport of its own.
async fn provision(
    config: TransportConfig,
    identity: X509Identity,
    request: RegistrationRequest,
) -> Result<RegistrationResult, ProvisioningError> {
    let transport = ProvisioningTransportActor::start_on_runtime(config)?;
    transport.send(SetAuthentication(identity.into())).await?;
    let options = ClientOptions {
        // The mock service asks for no wait between polls; against real DPS keep the default
        // 2-second floor.
        min_interval: Duration::ZERO,
        ..ClientOptions::default()
    };
    // The client disconnects when the registration ends, and the actor stops with its address.
    ProvisioningClient::new(transport, options)
        .register(request)
        .await
}

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pki = Arc::new(TestPki::generate()?);
    let broker = MockBroker::builder()
        .pki(pki.clone())
        .retry_after(0)
        .forget_ended()
        .start()?;
    let runtime = MqttRuntime::shared()?;
    let config = TransportConfig::builder(Protocol::Mqtt)
        .ca_pem(broker.ca_pem().unwrap_or_default())
        .runtime(runtime.clone())
        .build()?;

    // Each device's request and certificate (a gateway would read them from its store).
    let mut devices = Vec::with_capacity(DEVICES);
    for i in 1..=DEVICES {
        let id = format!("fleet-{i:03}");
        let pem = pki.device(&id)?;
        let identity = X509Identity::from_pem(pem.cert_pem.as_bytes(), pem.key_pem.as_bytes())?;
        let request = RegistrationRequest::new(dps_mock_broker::DEFAULT_ID_SCOPE, id)
            .with_endpoint(broker.mqtts_uri());
        devices.push((request, identity));
    }

    let started = Instant::now();
    let mut outcomes = runtime
        .spawn_fn(move || async move {
            // AT_ONCE workers on the runtime thread, each taking the next device in turn.
            let queue = std::rc::Rc::new(std::cell::RefCell::new(devices.into_iter()));
            let workers: Vec<_> = (0..AT_ONCE)
                .map(|_| {
                    let (queue, config) = (queue.clone(), config.clone());
                    actix_rt::spawn(async move {
                        let mut outcomes = Vec::new();
                        loop {
                            let next = queue.borrow_mut().next();
                            let Some((request, identity)) = next else {
                                break;
                            };
                            let id = request.registration_id.clone();
                            outcomes.push((id, provision(config.clone(), identity, request).await));
                        }
                        outcomes
                    })
                })
                .collect();
            let mut outcomes = Vec::with_capacity(DEVICES);
            for worker in workers {
                outcomes.extend(worker.await.unwrap_or_default());
            }
            outcomes
        })
        .await?;
    let elapsed = started.elapsed();

    outcomes.sort_by(|a, b| a.0.cmp(&b.0));
    let mut failed = 0;
    for (i, (id, outcome)) in outcomes.iter().enumerate() {
        match outcome {
            // The first few, to show what an assignment looks like.
            Ok(result) if i < 3 => {
                let state = result.registration_state.as_ref();
                let hub = state.and_then(|s| s.assigned_hub.as_deref());
                let device = state.and_then(|s| s.device_id.as_deref());
                println!(
                    "{id}: device {} on {}",
                    device.unwrap_or("?"),
                    hub.unwrap_or("?")
                );
            }
            Ok(_) => {}
            Err(e) => {
                failed += 1;
                println!("{id}: {e}");
            }
        }
    }
    println!(
        "{} of {DEVICES} devices assigned in {:.2} s ({:.0}/s), {failed} failed",
        outcomes.len() - failed,
        elapsed.as_secs_f64(),
        outcomes.len() as f64 / elapsed.as_secs_f64()
    );
    broker.stop();
    if failed == 0 {
        Ok(())
    } else {
        Err(format!("{failed} devices were not assigned").into())
    }
}
