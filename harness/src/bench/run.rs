//! The transport's runs: provision every device (`dps bench`), or hold them all connected and
//! read the memory (`--hold`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use dps_messages::{Authentication, Disconnect, ProvisioningError, Register, RegistrationRequest};
use dps_transport_actor::{ClientOptions, TransportConfig};

use super::probes::{cpu_seconds, peak_rss_mib, rss_mib};
use super::report::{BenchReport, Held, Progress, percentile};
use super::target::prepare_transport;
use super::{BenchArgs, registration_id};
use crate::setup;

/// What the devices' registrations came to.
struct Provisioned {
    /// Each registration's latency and whether it succeeded.
    samples: Vec<(Duration, bool)>,
    first_error: Option<String>,
    wall: Duration,
    cpu_seconds: f64,
}

impl Provisioned {
    /// The report of `args`'s run as `kind`, against `broker`; latencies are those of the
    /// registrations that succeeded.
    fn report(self, kind: &'static str, args: &BenchArgs, broker: String) -> BenchReport {
        let failed = self.samples.iter().filter(|(_, ok)| !ok).count();
        let mut latencies: Vec<Duration> = self
            .samples
            .iter()
            .filter(|(_, ok)| *ok)
            .map(|(d, _)| *d)
            .collect();
        latencies.sort();
        BenchReport {
            kind,
            devices: args.devices,
            concurrency: args.concurrency,
            protocol: if args.ws { "mqtt_ws" } else { "mqtt" },
            auth: args.auth,
            broker,
            registrations_per_sec: latencies.len() as f64 / self.wall.as_secs_f64(),
            wall_ms: self.wall.as_secs_f64() * 1000.0,
            failed,
            p50_ms: percentile(&latencies, 0.50),
            p95_ms: percentile(&latencies, 0.95),
            p99_ms: percentile(&latencies, 0.99),
            peak_rss_mib: peak_rss_mib(),
            cpu_seconds: self.cpu_seconds,
            first_error: self.first_error,
            held: None,
        }
    }
}

pub(super) async fn run(args: &BenchArgs) -> Result<BenchReport, String> {
    let (target, config, runtime) = prepare_transport(args)?;
    let (n, concurrency) = (args.devices, args.concurrency.max(1));
    let (uri, scope) = (target.uri.clone(), target.id_scope.clone());
    let credentials = target.credentials;
    // The clients run on the runtime thread, beside their transports and connections, as the
    // README suggests for a fleet: a request and its answer never change threads.
    let provisioned = runtime
        .spawn_fn(move || provision_all(n, concurrency, config, uri, scope, credentials))
        .await
        .map_err(|e| e.to_string())?;
    Ok(provisioned?.report("transport", args, target.name))
}

/// Registers every device, `concurrency` at a time, each with its own client, transport and
/// connection.
async fn provision_all(
    n: usize,
    concurrency: usize,
    config: TransportConfig,
    uri: String,
    scope: String,
    credentials: Vec<Authentication>,
) -> Result<Provisioned, String> {
    let options = ClientOptions {
        min_interval: Duration::ZERO,
        ..ClientOptions::default()
    };
    let next = Rc::new(Cell::new(0usize));
    let credentials = Rc::new(RefCell::new(
        credentials.into_iter().map(Some).collect::<Vec<_>>(),
    ));
    let samples = Rc::new(RefCell::new(Vec::with_capacity(n)));
    let first_error = Rc::new(RefCell::new(None::<String>));
    let progress = Progress::start(n);
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (next, credentials, samples, first_error, progress) = (
            next.clone(),
            credentials.clone(),
            samples.clone(),
            first_error.clone(),
            progress.clone(),
        );
        let (config, options, uri, scope) =
            (config.clone(), options.clone(), uri.clone(), scope.clone());
        workers.push(actix_rt::spawn(async move {
            loop {
                let i = next.get();
                if i >= n {
                    break;
                }
                next.set(i + 1);
                let auth = credentials.borrow_mut()[i]
                    .take()
                    .expect("each credential is used once");
                let request = RegistrationRequest::new(scope.clone(), registration_id(i))
                    .with_endpoint(uri.clone());
                let t0 = Instant::now();
                let result = match setup::client(config.clone(), auth, options.clone()).await {
                    Ok(client) => client.register(request).await,
                    Err(e) => Err(e),
                };
                let ok = result.is_ok();
                if let Err(e) = result {
                    first_error
                        .borrow_mut()
                        .get_or_insert_with(|| e.to_string());
                }
                samples.borrow_mut().push((t0.elapsed(), ok));
                progress.tick();
            }
        }));
    }
    for worker in workers {
        worker.await.map_err(|e| e.to_string())?;
    }
    let wall = started.elapsed();
    progress.finish();
    Ok(Provisioned {
        samples: samples.take(),
        first_error: first_error.take(),
        wall,
        cpu_seconds: cpu_seconds() - cpu_before,
    })
}

/// `--hold`: every device connects and registers (its first request, answered `assigning`),
/// `concurrency` at a time, and stays connected; the resident memory with all of them connected
/// is read against the reading before the first. Then all disconnect.
pub(super) async fn hold(args: &BenchArgs) -> Result<BenchReport, String> {
    let (target, config, _) = prepare_transport(args)?;
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
                let transport = setup::transport(config, auth).await?;
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
    for transport in &held {
        let _ = transport.send(Disconnect::default()).await;
    }
    let provisioned = Provisioned {
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
        ..provisioned.report("transport-hold", args, target.name)
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
