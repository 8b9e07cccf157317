//! The transport's runs: provision every device (`dps bench`), or hold them all connected and
//! read the memory (`--hold`).

use std::time::{Duration, Instant};

use dps_messages::{Disconnect, ProvisioningError, Register, RegistrationRequest};
use dps_transport_actor::fleet::{Fleet, FleetDevice, FleetOptions, PacerOptions};
use dps_transport_actor::{ClientOptions, MqttRuntime};

use super::probes::{cpu_seconds, rss_mib};
use super::report::{BenchReport, Held, Measured, Progress, Ran};
use super::target::prepare_transport;
use super::{BenchArgs, registration_id};
use crate::setup;

/// The report of `args`'s transport run as `kind`, against `broker`.
fn report(measured: Measured, kind: &'static str, args: &BenchArgs, broker: String) -> BenchReport {
    measured.report(Ran {
        kind,
        devices: args.devices,
        concurrency: args.concurrency,
        protocol: if args.ws { "mqtt_ws" } else { "mqtt" },
        auth: args.auth,
        broker,
    })
}

/// Provisions every device with the transport's [`Fleet`], `concurrency` at a time, each with its
/// own client, transport and connection, all on one runtime thread beside their connections (a
/// request and its answer never change threads), unpaced: the mock has no quota.
pub(super) async fn run(args: &BenchArgs) -> Result<BenchReport, String> {
    let (target, config) = prepare_transport(args)?;
    // Each device's request is made when a worker takes it, not all up front.
    let (scope, uri) = (target.id_scope.clone(), target.uri.clone());
    let devices = target
        .credentials
        .into_iter()
        .enumerate()
        .map(move |(i, auth)| FleetDevice {
            request: RegistrationRequest::new(scope.clone(), registration_id(i))
                .with_endpoint(uri.clone()),
            auth,
        });
    let options = FleetOptions {
        concurrency: args.concurrency.max(1),
        runtimes: 1,
        client: ClientOptions {
            min_interval: Duration::ZERO,
            ..ClientOptions::default()
        },
        pacing: PacerOptions::unpaced(),
    };
    // The outcomes are read on the fleet's runtime thread too: each one then wakes no other
    // thread (reading them on this one cost 2 % more CPU per registration).
    let n = args.devices;
    let provisioned = MqttRuntime::shared()
        .map_err(|e| e.to_string())?
        .spawn_fn(move || async move {
            let progress = Progress::start(n);
            let cpu_before = cpu_seconds();
            let started = Instant::now();
            let mut run = Fleet::provision(config, devices, options).map_err(|e| e.to_string())?;
            let mut samples = Vec::with_capacity(n);
            let mut first_error = None;
            while let Some(outcome) = run.outcomes.recv().await {
                if let Err(e) = &outcome.result {
                    first_error.get_or_insert_with(|| e.to_string());
                }
                samples.push((outcome.elapsed, outcome.result.is_ok()));
                progress.tick();
            }
            let wall = started.elapsed();
            progress.finish();
            Ok::<_, String>(Measured {
                samples,
                first_error,
                wall,
                cpu_seconds: cpu_seconds() - cpu_before,
            })
        })
        .await
        .map_err(|e| e.to_string())??;
    Ok(report(provisioned, "transport", args, target.name))
}

/// `--hold`: every device connects and registers (its first request, answered `assigning`),
/// `concurrency` at a time, and stays connected; the resident memory with all of them connected
/// is read against the reading before the first. Then all disconnect.
pub(super) async fn hold(args: &BenchArgs) -> Result<BenchReport, String> {
    let (target, config) = prepare_transport(args)?;
    let config = config.build().map_err(|e| e.to_string())?;
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
                let transport = setup::transport(config, auth)?;
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
    if args.hold_for > 0 {
        eprintln!(
            "{} devices connected; holding them {} s",
            held.len(),
            args.hold_for
        );
        tokio::time::sleep(Duration::from_secs(args.hold_for)).await;
    }
    for transport in &held {
        let _ = transport.send(Disconnect::default()).await;
    }
    let provisioned = Measured {
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
        ..report(provisioned, "transport-hold", args, target.name)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn hold_measures_with_every_device_connected() {
        let args = BenchArgs {
            json: true,
            hold: true,
            ..super::super::test_args(3, 2)
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
