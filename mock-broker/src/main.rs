//! `dps-mock-broker`: a scripted DPS on a real MQTT server, from the command line.

mod open_files;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use dps_mock_broker::enrollment::EnrollmentFile;
use dps_mock_broker::{CertifiedPem, IssuingCa, MockBroker, Quotas, Script, TestPki, TlsVersions};

/// A stand-in for the Azure IoT Device Provisioning Service's MQTT endpoint.
///
/// Devices connect over MQTT/TLS (and MQTT over WebSocket at /$iothub/websocket), authenticate
/// with an X.509 certificate whose CN is their registration id or a SAS token, register, and
/// poll until assigned, exactly as against real DPS. A scenario file scripts other answers:
/// throttling, failures, silence, dropped connections, malformed responses.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: Serve,
}

#[derive(Subcommand)]
enum Command {
    /// Write a test PKI: ca.pem, server.pem/server.key (localhost, 127.0.0.1), and <id>.pem/<id>.key
    /// for each registration id.
    Pki {
        /// The folder to write into (created if missing).
        #[arg(long, default_value = "pki")]
        out: PathBuf,
        /// Registration ids to make device certificates for.
        ids: Vec<String>,
        /// Also make certificates for <PREFIX>0001 .. <PREFIX><COUNT> (for benchmarks).
        #[arg(long, default_value_t = 0)]
        count: usize,
        /// The prefix of the --count registration ids.
        #[arg(long, default_value = "bench-")]
        prefix: String,
    },
}

#[derive(clap::Args)]
struct Serve {
    /// MQTT over TLS listen address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8883")]
    listen: SocketAddr,
    /// MQTT over WebSocket over TLS listen address.
    #[arg(long, default_value = "127.0.0.1:8443")]
    ws_listen: SocketAddr,
    /// Turn the WebSocket listener off.
    #[arg(long)]
    no_ws: bool,
    /// Server certificate chain (PEM). Without it, a PKI is generated for this run.
    #[arg(long, requires = "server_key")]
    server_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, requires = "server_cert")]
    server_key: Option<PathBuf>,
    /// CA (PEM) that device certificates must chain to. Defaults to the generated CA.
    #[arg(long)]
    device_ca: Option<PathBuf>,
    /// With a generated PKI, write its CA certificate here for clients to trust.
    #[arg(long)]
    ca_out: Option<PathBuf>,
    /// An individual symmetric-key enrollment, REGID=BASE64KEY (repeatable).
    #[arg(long, value_parser = parse_key)]
    symmetric_key: Vec<(String, String)>,
    /// A group enrollment key, BASE64 (repeatable); device keys are derived from it.
    #[arg(long)]
    group_key: Vec<String>,
    /// The id scope devices must use.
    #[arg(long, default_value = dps_mock_broker::DEFAULT_ID_SCOPE)]
    id_scope: String,
    /// The IoT hub devices are assigned to.
    #[arg(long, default_value = dps_mock_broker::DEFAULT_ASSIGNED_HUB)]
    assigned_hub: String,
    /// The retry-after, in seconds, of a 202 assigning response.
    #[arg(long, default_value_t = 1)]
    retry_after: u64,
    /// A scenario (script) file; see mock-broker/scenarios/.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Enrollments and linked hubs, as DPS's own enrollment objects (JSON: `linkedHubs`,
    /// `individualEnrollments`, `enrollmentGroups`). With any, the broker models DPS: only an
    /// enrollment admits a device, and its allocation policy picks the hub.
    #[arg(long, value_name = "FILE")]
    enrollments: Option<PathBuf>,
    /// Serve DPS's service API (HTTPS) on this address, e.g. 127.0.0.1:443: the official
    /// service SDKs dial port 443. Needs --service-key.
    #[arg(long, value_name = "ADDR", requires = "service_key")]
    service_listen: Option<SocketAddr>,
    /// The key (base64) of the `provisioningserviceowner` policy the service API checks
    /// requests against.
    #[arg(long, value_name = "KEY", requires = "service_listen")]
    service_key: Option<String>,
    /// Append each connection's record, as a JSON line, to this file.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Worker threads serving connections.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Seconds a client has, after TLS, to send its whole CONNECT.
    #[arg(long, default_value_t = 10)]
    connect_timeout: u64,
    /// The TLS versions to accept: 1.2, 1.3 or both (real DPS speaks TLS 1.2 only).
    #[arg(long, default_value = "1.2")]
    tls_versions: TlsVersions,
    /// Issue certificates: a register carrying a CSR (api-version 2025-07-01-preview) gets a
    /// certificate signed by an issuing CA generated for this run (or the one given below).
    #[arg(long)]
    issue_certs: bool,
    /// The issuing CA's certificate (PEM); implies --issue-certs.
    #[arg(long, requires = "issuing_ca_key")]
    issuing_ca_cert: Option<PathBuf>,
    /// The issuing CA's private key (PEM).
    #[arg(long, requires = "issuing_ca_cert")]
    issuing_ca_key: Option<PathBuf>,
    /// Write the issuing CA's certificate here (e.g. for `openssl verify -CAfile`).
    #[arg(long)]
    issuing_ca_out: Option<PathBuf>,
    /// Throttle registrations over N per minute (DPS: 1,000 per unit; enforced as N/60 per
    /// sliding second), answering 429 with a retry-after. Quotas are off by default.
    #[arg(long, value_name = "N")]
    quota_registrations_per_minute: Option<u32>,
    /// Throttle registrations and polls together over N per minute (DPS: 1,000 per unit).
    #[arg(long, value_name = "N")]
    quota_operations_per_minute: Option<u32>,
    /// Throttle a device's polls over N per 10 seconds (DPS: 5).
    #[arg(long, value_name = "N")]
    quota_polls_per_device: Option<u32>,
    /// How long issued certificates are valid: seconds, or a number with s, m, h or d.
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    issued_validity: std::time::Duration,
}

/// `90`, `90s`, `15m`, `12h`, `30d`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a number of seconds, or with s, m, h or d"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        other => return Err(format!("`{other}`: expected s, m, h or d")),
    };
    number
        .checked_mul(unit)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("`{text}` is too long"))
}

fn parse_key(text: &str) -> Result<(String, String), String> {
    let (id, key) = text.split_once('=').ok_or("expected REGID=BASE64KEY")?;
    dps_messages::SymmetricKey::new(key).map_err(|e| e.to_string())?;
    Ok((id.to_owned(), key.to_owned()))
}

fn read(path: &PathBuf) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn serve(args: Serve) -> Result<(), String> {
    let mut builder = MockBroker::builder()
        .listen(args.listen)
        .ws_listen((!args.no_ws).then_some(args.ws_listen))
        .id_scope(args.id_scope)
        .assigned_hub(args.assigned_hub)
        .retry_after(args.retry_after)
        .workers(args.workers)
        .connect_timeout(std::time::Duration::from_secs(args.connect_timeout))
        .tls_versions(args.tls_versions)
        .quotas(Quotas {
            registrations_per_minute: args.quota_registrations_per_minute,
            operations_per_minute: args.quota_operations_per_minute,
            polls_per_device: args.quota_polls_per_device,
        })
        // Nothing here reads the records in memory: each goes to --record, if given, and a
        // long run holds only its live connections.
        .forget_ended();
    match (&args.server_cert, &args.server_key) {
        (Some(cert), Some(key)) => {
            builder = builder.server_cert(
                CertifiedPem {
                    cert_pem: read(cert)?,
                    key_pem: read(key)?,
                },
                None,
            );
        }
        _ => {
            let pki = Arc::new(TestPki::generate().map_err(|e| e.to_string())?);
            if let Some(path) = &args.ca_out {
                std::fs::write(path, pki.ca_pem())
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            }
            builder = builder.pki(pki);
        }
    }
    if let Some(ca) = &args.device_ca {
        builder = builder.device_ca(read(ca)?);
    }
    let issuing_ca = match (&args.issuing_ca_cert, &args.issuing_ca_key) {
        (Some(cert), Some(key)) => Some(IssuingCa::from_pem(&read(cert)?, &read(key)?)),
        _ if args.issue_certs => Some(IssuingCa::generate()),
        _ => None,
    };
    if let Some(ca) = issuing_ca {
        let ca = ca.map_err(|e| e.to_string())?;
        if let Some(path) = &args.issuing_ca_out {
            std::fs::write(path, ca.cert_pem())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        builder = builder
            .issue_certificates(Arc::new(ca))
            .issued_validity(args.issued_validity);
    }
    for (id, key) in args.symmetric_key {
        builder = builder.symmetric_key(id, key);
    }
    for key in args.group_key {
        builder = builder.group_key(key);
    }
    if let Some(path) = &args.scenario {
        builder = builder.script(Script::load(path).map_err(|e| e.to_string())?);
    }
    if let (Some(addr), Some(key)) = (args.service_listen, &args.service_key) {
        builder = builder.service_api(addr, key.clone());
    }
    let mut enrolled = String::new();
    if let Some(path) = &args.enrollments {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let file =
            EnrollmentFile::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        enrolled = format!(
            "; {} individual enrollments, {} enrollment groups",
            file.individual_enrollments.len(),
            file.enrollment_groups.len()
        );
        builder = builder.enrollments(file);
    }
    if let Some(path) = &args.record {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        builder = builder.record_to(Box::new(file));
    }

    let broker = builder.start().map_err(|e| e.to_string())?;
    let ws = broker
        .wss_uri()
        .map(|u| format!(" and {u}"))
        .unwrap_or_default();
    let ca = args
        .ca_out
        .as_ref()
        .map(|p| format!("; trust {}", p.display()))
        .unwrap_or_default();
    let quotas = args.quota_registrations_per_minute.is_some()
        || args.quota_operations_per_minute.is_some()
        || args.quota_polls_per_device.is_some();
    let issuing = if broker.issuing_ca().is_some() {
        "; issuing certificates"
    } else {
        ""
    };
    println!(
        "dps-mock-broker listening on {}{ws}{ca}{issuing}{enrolled}",
        broker.mqtts_uri()
    );
    if let (Some(addr), Some(connection)) =
        (broker.service_addr(), broker.service_connection_string())
    {
        println!("service API on https://{addr}; connection string: {connection}");
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime
        .block_on(tokio::signal::ctrl_c())
        .map_err(|e| e.to_string())?;
    eprintln!("stopping");
    if quotas {
        println!("quotas: {}", broker.quota_summary());
    }
    broker.stop();
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Pki {
            out,
            mut ids,
            count,
            prefix,
        }) => {
            ids.extend((1..=count).map(|i| format!("{prefix}{i:04}")));
            TestPki::generate()
                .and_then(|pki| pki.write_to(&out, &ids))
                .map(|()| println!("wrote the test PKI to {}", out.display()))
                .map_err(|e| e.to_string())
        }
        None => {
            eprintln!("dps-mock-broker: {}", open_files::raise());
            serve(cli.serve)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dps-mock-broker: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn durations_take_a_unit() {
        let parse = super::parse_duration;
        assert_eq!(parse("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7_200)));
        assert_eq!(parse("30d"), Ok(Duration::from_secs(2_592_000)));
        for bad in ["", "d", "3w", "-1", "99999999999999999999d"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
