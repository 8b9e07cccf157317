//! `dps-mock-broker`: a scripted DPS on a real MQTT server, from the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use dps_mock_broker::{CertifiedPem, MockBroker, Script, TestPki, TlsVersions};

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
    /// Append each connection's record, as a JSON line, to this file.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Worker threads serving connections.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Seconds a client has, after TLS, to send its whole CONNECT.
    #[arg(long, default_value_t = 10)]
    connect_timeout: u64,
    /// The TLS versions to accept: 1.2, 1.3 or both (real DPS requires 1.2 at least).
    #[arg(long, default_value = "both")]
    tls_versions: TlsVersions,
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
    for (id, key) in args.symmetric_key {
        builder = builder.symmetric_key(id, key);
    }
    for key in args.group_key {
        builder = builder.group_key(key);
    }
    if let Some(path) = &args.scenario {
        builder = builder.script(Script::load(path).map_err(|e| e.to_string())?);
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
    println!(
        "dps-mock-broker listening on {}{ws}{ca}",
        broker.mqtts_uri()
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime
        .block_on(tokio::signal::ctrl_c())
        .map_err(|e| e.to_string())?;
    eprintln!("stopping");
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
        None => serve(cli.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dps-mock-broker: {e}");
            ExitCode::FAILURE
        }
    }
}
