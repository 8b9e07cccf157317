//! `dps bench`: provisions N distinct devices, each its own actor and connection, C at a time,
//! and reports throughput, latency percentiles, failures, peak memory and CPU time.
//!
//! By default the mock DPS runs in this process (so memory and CPU include it); with
//! `--broker` the devices go to any broker, such as `dps-mock-broker` in another process, which
//! is how BENCHMARKS.md compares this transport with the Node SDK. `--floor` measures instead
//! the same number of bare rustls handshakes with client certificates, in memory: the physical
//! limit the transport is measured against; with `--broker`, the client's side of them over
//! TCP with that broker, the kernel's share of a connection included.
//!
//! `target.rs` prepares where the devices go and their credentials; `run.rs` provisions them
//! (or holds them connected); `floor.rs` makes the bare handshakes in memory, `floor_wire.rs`
//! over TCP, and `floor_exchange.rs` adds DPS's MQTT packets to them; `probes.rs` reads this
//! process's memory and CPU; `report.rs` says what was measured.

mod floor;
mod floor_exchange;
mod floor_wire;
mod probes;
mod report;
mod run;
mod target;

use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;

pub use self::probes::{cpu_seconds, peak_rss_mib, rss_mib};
pub use self::report::{BenchReport, Held};

/// How to credential the benchmark devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthArg {
    /// A certificate per device, CN = its registration id.
    X509,
    /// A SAS token from a group enrollment key.
    Sas,
}

/// `dps bench` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// How many devices to provision (ids bench-0001, bench-0002, ...).
    #[arg(long, default_value_t = 100)]
    pub devices: usize,
    /// How many provision at once.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Use MQTT over WebSocket.
    #[arg(long)]
    pub ws: bool,
    /// How devices authenticate.
    #[arg(long, value_enum, default_value_t = AuthArg::X509)]
    pub auth: AuthArg,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Provision against this broker (HOST:PORT) instead of one started in this process.
    #[arg(long, requires_all = ["id_scope", "ca"])]
    pub broker: Option<String>,
    /// The id scope the external broker expects.
    #[arg(long)]
    pub id_scope: Option<String>,
    /// The CA (PEM) the external broker's certificate chains to.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// The device CA certificate (PEM) the external broker trusts; device certificates are
    /// signed with it.
    #[arg(long, requires = "device_ca_key")]
    pub device_ca_cert: Option<PathBuf>,
    /// The device CA's private key (PEM).
    #[arg(long, requires = "device_ca_cert")]
    pub device_ca_key: Option<PathBuf>,
    /// The external broker's group enrollment key, for `--auth sas`.
    #[arg(long)]
    pub group_key: Option<String>,
    /// Measure bare rustls handshakes with client certificates instead (the floor): in memory,
    /// or with --broker the client's side of them over TCP with that broker.
    #[arg(long, conflicts_with = "hold")]
    pub floor: bool,
    /// With --floor --broker: each device also registers between its handshake and its close,
    /// with DPS's MQTT packets written by hand on one thread (no actors, no MQTT library, no
    /// files): the floor of the whole registration.
    #[arg(long, requires_all = ["floor", "broker"])]
    pub exchange: bool,
    /// Measure memory per connected device instead: each device connects and sends its
    /// register request, stays connected until all have, and the resident memory is read
    /// then, against the reading before the first connection.
    #[arg(long)]
    pub hold: bool,
    /// With --hold, keep every device connected this many seconds after the last has
    /// connected (to load a broker while something else is measured).
    #[arg(long, value_name = "SECONDS", default_value_t = 0, requires = "hold")]
    pub hold_for: u64,
    /// Worker threads of the in-process broker.
    #[arg(long, default_value_t = 1)]
    pub broker_workers: usize,
}

/// Runs the benchmark and prints its report.
pub async fn main(args: BenchArgs) -> ExitCode {
    let report = if args.floor && args.broker.is_some() {
        floor_wire::floor(&args).await
    } else if args.floor {
        floor::floor(&args)
    } else if args.hold {
        run::hold(&args).await
    } else {
        run::run(&args).await
    };
    match report {
        Ok(report) => {
            if args.json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            } else {
                print!("{}", report::human(&report));
            }
            if report.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("dps bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The registration id of device `i` (from 0): `bench-0001` ...
pub(crate) fn registration_id(i: usize) -> String {
    format!("bench-{:04}", i + 1)
}

#[cfg(test)]
/// Arguments for a small in-process run in tests.
pub(crate) fn test_args(devices: usize, concurrency: usize) -> BenchArgs {
    BenchArgs {
        devices,
        concurrency,
        ws: false,
        auth: AuthArg::X509,
        json: false,
        broker: None,
        id_scope: None,
        ca: None,
        device_ca_cert: None,
        device_ca_key: None,
        group_key: None,
        floor: false,
        exchange: false,
        hold: false,
        hold_for: 0,
        broker_workers: 1,
    }
}
