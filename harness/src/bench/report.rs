//! What a run measured, as JSON or for a person, and the progress bar while it runs.

use std::cell::Cell;
use std::io::IsTerminal;
use std::rc::Rc;
use std::time::Duration;

use serde::Serialize;

use super::AuthArg;

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// `transport`, `transport-hold`, `rustls-floor`, `rustls-floor-tcp` or `mqtt-floor-tcp`.
    pub kind: &'static str,
    /// Devices (or handshakes).
    pub devices: usize,
    /// At once.
    pub concurrency: usize,
    /// `mqtt` or `mqtt_ws`.
    pub protocol: &'static str,
    /// `x509` or `sas`.
    pub auth: AuthArg,
    /// `in-process` or the external broker's address.
    pub broker: String,
    /// Successful registrations (or handshakes) per second of wall time.
    pub registrations_per_sec: f64,
    /// Wall time of the whole run, in milliseconds.
    pub wall_ms: f64,
    /// Registrations that did not end assigned.
    pub failed: usize,
    /// Median latency of one registration, in milliseconds.
    pub p50_ms: f64,
    /// 95th percentile latency, in milliseconds.
    pub p95_ms: f64,
    /// 99th percentile latency, in milliseconds.
    pub p99_ms: f64,
    /// Peak resident memory of this process, in MiB.
    pub peak_rss_mib: f64,
    /// CPU time of this process (user + system), in seconds.
    pub cpu_seconds: f64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// `--hold`: resident memory, in MiB, before the first connection and with every device
    /// connected, and the difference per device in KiB.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub held: Option<Held>,
}

/// Resident memory around `--hold`'s connections.
#[derive(Debug, Clone, Serialize)]
pub struct Held {
    /// Before the first connection, credentials made.
    pub before_rss_mib: f64,
    /// With every device connected.
    pub connected_rss_mib: f64,
    /// The difference, per device, in KiB.
    pub kib_per_connected_device: f64,
}

/// What ran: the fields of a report that say what was measured.
pub(super) struct Ran {
    pub(super) kind: &'static str,
    pub(super) devices: usize,
    pub(super) concurrency: usize,
    pub(super) protocol: &'static str,
    pub(super) auth: AuthArg,
    pub(super) broker: String,
}

/// What a run's operations (registrations, or handshakes) came to.
pub(super) struct Measured {
    /// Each operation's latency and whether it succeeded.
    pub(super) samples: Vec<(Duration, bool)>,
    pub(super) first_error: Option<String>,
    pub(super) wall: Duration,
    pub(super) cpu_seconds: f64,
}

impl Measured {
    /// The report of `ran`: throughput and latencies from the operations that succeeded.
    pub(super) fn report(self, ran: Ran) -> BenchReport {
        let failed = self.samples.iter().filter(|(_, ok)| !ok).count();
        let mut latencies: Vec<Duration> = self
            .samples
            .iter()
            .filter(|(_, ok)| *ok)
            .map(|(d, _)| *d)
            .collect();
        latencies.sort();
        BenchReport {
            kind: ran.kind,
            devices: ran.devices,
            concurrency: ran.concurrency,
            protocol: ran.protocol,
            auth: ran.auth,
            broker: ran.broker,
            registrations_per_sec: latencies.len() as f64 / self.wall.as_secs_f64(),
            wall_ms: self.wall.as_secs_f64() * 1000.0,
            failed,
            p50_ms: percentile(&latencies, 0.50),
            p95_ms: percentile(&latencies, 0.95),
            p99_ms: percentile(&latencies, 0.99),
            peak_rss_mib: super::probes::peak_rss_mib(),
            cpu_seconds: self.cpu_seconds,
            first_error: self.first_error,
            held: None,
        }
    }
}

/// The `p` percentile (nearest rank) of `sorted`, in milliseconds.
pub(super) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1000.0
}

/// The report as a person reads it.
pub(super) fn human(r: &BenchReport) -> String {
    let what = if r.kind.starts_with("rustls-floor") {
        "handshakes"
    } else {
        "registrations"
    };
    format!(
        "{kind}: {n} {what} ({protocol}, {auth:?}, {c} at once, broker {broker})\n\
         throughput   {rate:.1} {what}/s over {wall:.0} ms\n\
         latency      p50 {p50:.1} ms, p95 {p95:.1} ms, p99 {p99:.1} ms\n\
         failures     {failed}{first}\n\
         peak RSS     {rss:.1} MiB\n\
         CPU          {cpu:.2} s\n{held}",
        kind = r.kind,
        n = r.devices,
        protocol = r.protocol,
        auth = r.auth,
        c = r.concurrency,
        broker = r.broker,
        rate = r.registrations_per_sec,
        wall = r.wall_ms,
        p50 = r.p50_ms,
        p95 = r.p95_ms,
        p99 = r.p99_ms,
        failed = r.failed,
        first = r
            .first_error
            .as_ref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
        rss = r.peak_rss_mib,
        cpu = r.cpu_seconds,
        held = r
            .held
            .as_ref()
            .map(|h| format!(
                "connected    {:.1} MiB, {:.1} MiB before: {:.1} KiB per connected device\n",
                h.connected_rss_mib, h.before_rss_mib, h.kib_per_connected_device
            ))
            .unwrap_or_default(),
    )
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
#[derive(Clone)]
pub(super) struct Progress {
    done: Rc<Cell<usize>>,
    total: usize,
    draw: bool,
}

impl Progress {
    pub(super) fn start(total: usize) -> Self {
        let progress = Self {
            done: Rc::new(Cell::new(0)),
            total,
            draw: std::io::stderr().is_terminal(),
        };
        if progress.draw {
            let p = progress.clone();
            actix_rt::spawn(async move {
                while p.done.get() < p.total {
                    p.render();
                    actix_rt::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
        progress
    }

    pub(super) fn tick(&self) {
        self.done.set(self.done.get() + 1);
    }

    fn render(&self) {
        let width = 40;
        let filled = self.done.get() * width / self.total.max(1);
        eprint!(
            "\r[{}{}] {}/{}",
            "=".repeat(filled),
            " ".repeat(width - filled),
            self.done.get(),
            self.total
        );
    }

    pub(super) fn finish(&self) {
        if self.draw {
            self.render();
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_counts_what_succeeded_and_says_what_ran() {
        let ms = Duration::from_millis;
        let report = Measured {
            samples: vec![(ms(30), true), (ms(10), true), (ms(99), false)],
            first_error: Some("refused".into()),
            wall: Duration::from_secs(2),
            cpu_seconds: 0.5,
        }
        .report(Ran {
            kind: "rustls-floor-tcp",
            devices: 3,
            concurrency: 2,
            protocol: "tls",
            auth: AuthArg::X509,
            broker: "localhost:1".into(),
        });
        assert_eq!((report.failed, report.registrations_per_sec), (1, 1.0));
        assert_eq!((report.wall_ms, report.cpu_seconds), (2000.0, 0.5));
        assert_eq!((report.p50_ms, report.p99_ms), (10.0, 30.0));
        assert_eq!(report.first_error.as_deref(), Some("refused"));
        // A floor counts handshakes, over the wire as in memory.
        assert!(
            human(&report).contains("3 handshakes"),
            "{}",
            human(&report)
        );
    }

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let ms = |v: u64| Duration::from_millis(v);
        let sorted: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&sorted, 0.50), 50.0);
        assert_eq!(percentile(&sorted, 0.99), 99.0);
        assert_eq!(percentile(&[ms(7)], 0.95), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
