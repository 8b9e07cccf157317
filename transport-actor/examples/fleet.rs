//! A gateway provisions a fleet of devices from one process, with `Fleet`.
//!
//! Every device has its own transport actor and connection; the connections are spread over
//! one MQTT runtime thread per core, 20 provision at once, and their registrations share one
//! adaptive pace that settles under the service's quota. The service is the in-process mock
//! DPS broker, here enforcing 6,000 registrations a minute (100 a second), so this runs with
//! no account:
//!
//! ```sh
//! cargo run --release -p dps-transport-actor --example fleet
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use dps_messages::{Protocol, RegistrationRequest, X509Identity};
use dps_mock_broker::{MockBroker, Quotas, TestPki};
use dps_transport_actor::fleet::{Fleet, FleetDevice, FleetOptions};
use dps_transport_actor::{ClientOptions, TransportConfig};

/// How many devices the gateway provisions.
const DEVICES: usize = 200;

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pki = Arc::new(TestPki::generate()?);
    let broker = MockBroker::builder()
        .pki(pki.clone())
        .retry_after(0)
        .quotas(Quotas {
            registrations_per_minute: Some(6_000),
            ..Quotas::default()
        })
        .forget_ended()
        .start()?;

    // Each device's request and certificate (a gateway would read them from its store).
    let mut devices = Vec::with_capacity(DEVICES);
    for i in 1..=DEVICES {
        let id = format!("fleet-{i:03}");
        let pem = pki.device(&id)?;
        let identity = X509Identity::from_pem(pem.cert_pem.as_bytes(), pem.key_pem.as_bytes())?;
        let request = RegistrationRequest::new(dps_mock_broker::DEFAULT_ID_SCOPE, id)
            .with_endpoint(broker.mqtts_uri());
        devices.push(FleetDevice {
            request,
            auth: identity.into(),
        });
    }

    let config =
        TransportConfig::builder(Protocol::Mqtt).ca_pem(broker.ca_pem().unwrap_or_default());
    let options = FleetOptions {
        concurrency: 20,
        client: ClientOptions {
            // The mock service asks for no wait between polls; against real DPS keep the
            // default 2-second floor.
            min_interval: Duration::ZERO,
            ..ClientOptions::default()
        },
        ..FleetOptions::default()
    };
    let started = Instant::now();
    let mut run = Fleet::provision(config, devices, options)?;
    let (mut assigned, mut failed) = (0, 0);
    while let Some(outcome) = run.outcomes.recv().await {
        match outcome.result {
            Ok(result) => {
                assigned += 1;
                // The first few, to show what an assignment looks like.
                if assigned <= 3 {
                    let state = result.registration_state.unwrap_or_default();
                    println!(
                        "{}: device {} on {}",
                        outcome.registration_id,
                        state.device_id.as_deref().unwrap_or("?"),
                        state.assigned_hub.as_deref().unwrap_or("?")
                    );
                }
            }
            Err(e) => {
                failed += 1;
                println!("{}: {e}", outcome.registration_id);
            }
        }
    }
    let elapsed = started.elapsed();
    let progress = run.progress.snapshot();
    println!(
        "{assigned} of {DEVICES} devices assigned in {:.2} s ({:.0}/s), {failed} failed; \
         {} requests refused by the quota, pace at the end {:.0}/s",
        elapsed.as_secs_f64(),
        assigned as f64 / elapsed.as_secs_f64(),
        progress.refused,
        progress.rate
    );
    broker.stop();
    if failed == 0 {
        Ok(())
    } else {
        Err(format!("{failed} devices were not assigned").into())
    }
}
