//! `dps`: provision Azure IoT devices over MQTT, run the demo, scripted scenarios and benchmarks.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use dps_harness::connection::Connection;
use dps_harness::outcome::Outcome;
use dps_harness::provision::{Credential, DeviceKey, ProvisionArgs};
use dps_harness::token::TokenAccess;
use dps_harness::{demo, provision, scenario};

/// Azure IoT Device Provisioning Service over MQTT, from the command line.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Provision four devices against a mock DPS started in this process: X.509 over MQTT,
    /// X.509 over MQTT-over-WebSocket, a symmetric key from a group enrollment, and one that
    /// onboards with a group key, is issued a certificate, and provisions again with it.
    Demo,
    /// Provision one device against DPS (or any endpoint) and print its assignment.
    ///
    /// Exit codes: 0 assigned, 1 other error, 2 bad arguments or unusable local input (a key
    /// that is not base64, an unreadable file), 3 unauthorized by the service, 4 registration
    /// failed (failed, disabled or unassigned), 5 timeout, 6 transport, TLS or protocol error
    /// (including an issued certificate that fails its checks).
    Provision(Box<Provision>),
    /// Provision the devices a JSON Lines file lists, at the pace the service allows, appending
    /// each outcome to --out as it ends; a rerun skips the devices --out shows assigned.
    ///
    /// Each devices line: {"registration_id": "..", and "cert" + "key" (paths), or
    /// "symmetric_key", or "group_key"; optional "payload"}. Exit codes: 0 every device
    /// assigned, 1 some not, 2 bad arguments or files, 130 interrupted (Ctrl-C; --out holds
    /// whole lines only).
    Fleet(Box<FleetCmd>),
    /// Run scripted scenarios against the mock DPS.
    Scenario {
        #[command(subcommand)]
        command: ScenarioCommand,
    },
    /// Measure provisioning throughput, latency, memory and CPU.
    Bench(dps_harness::bench::BenchArgs),
}

#[derive(Subcommand)]
enum ScenarioCommand {
    /// Run scenario files (default: every file in harness/scenarios/); one line per scenario,
    /// then `N passed, N failed`.
    Run {
        /// Scenario files.
        files: Vec<PathBuf>,
    },
}

/// One credential at most on the command line; without one, `DPS_SYMMETRIC_KEY` or
/// `DPS_GROUP_KEY` from the environment.
#[derive(Args)]
#[command(group(clap::ArgGroup::new("credential").args(["cert", "symmetric_key", "symmetric_key_file", "group_key", "group_key_file"])))]
struct Provision {
    #[command(flatten)]
    connection: ConnectionFlags,
    /// The DPS instance's id scope.
    #[arg(long)]
    id_scope: String,
    /// The device's registration id.
    #[arg(long)]
    registration_id: String,
    /// The device certificate chain (PEM); its CN must be the registration id.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// The device certificate's private key: a PEM file, or a key in a PKCS#11 token by its
    /// URI (`pkcs11:token=gw;object=device-key`; see --pkcs11-module and --pin-file).
    #[arg(long, requires = "cert", value_name = "FILE|URI")]
    key: Option<PathBuf>,
    /// An individual enrollment's symmetric key (base64). Visible to every user of the
    /// machine: prefer --symmetric-key-file or DPS_SYMMETRIC_KEY.
    #[arg(long)]
    symmetric_key: Option<String>,
    /// A file holding an individual enrollment's symmetric key (mode 600).
    #[arg(long, value_name = "FILE")]
    symmetric_key_file: Option<PathBuf>,
    /// A group enrollment's key (base64); the device key is derived from the registration id.
    /// Visible to every user of the machine: prefer --group-key-file or DPS_GROUP_KEY.
    #[arg(long)]
    group_key: Option<String>,
    /// A file holding a group enrollment's key (mode 600).
    #[arg(long, value_name = "FILE")]
    group_key_file: Option<PathBuf>,
    /// Custom allocation data, JSON.
    #[arg(long, value_parser = parse_json)]
    payload: Option<serde_json::Value>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Remember the assignment in this file and reuse it next time.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Provision even when --cache holds an assignment.
    #[arg(long)]
    force: bool,
    /// Ask DPS for a certificate (api-version 2025-07-01-preview): make a key and a CSR, and
    /// write the issued chain to `DIR/<registration-id>.pem` and the key to
    /// `DIR/<registration-id>.key` (owner only). With --cache, the certificate is kept and
    /// renewed in the last third of its lifetime.
    #[arg(long, value_name = "DIR")]
    issue_cert: Option<PathBuf>,
    /// The curve of the key made for --issue-cert: p384 (the service's recommendation) or p256.
    #[arg(long, default_value = "p384", requires = "issue_cert")]
    key_curve: dps_messages::certificate::KeyCurve,
    /// Make --issue-cert's key inside a PKCS#11 token, labelled as the URI's `object=`
    /// (`pkcs11:token=gw;object=issued`): it never leaves the token, no key file is written,
    /// and --cache keeps its URI.
    #[arg(long, value_name = "URI", requires = "issue_cert", value_parser = parse_pkcs11_uri)]
    issue_key: Option<dps_transport_actor::pkcs11::Pkcs11Uri>,
    #[command(flatten)]
    token: TokenFlags,
    /// Print the whole result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct FleetCmd {
    #[command(flatten)]
    connection: ConnectionFlags,
    /// The DPS instance's id scope.
    #[arg(long)]
    id_scope: String,
    /// The devices, JSON Lines.
    #[arg(long, value_name = "FILE")]
    devices: PathBuf,
    /// Where each outcome is appended, JSON Lines.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Devices provisioned at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// MQTT runtime threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    runtimes: usize,
    /// Registrations per second at the start; the pace then follows the service.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Each device's deadline, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// The shortest wait a device chooses itself, in milliseconds, where the service gave no
    /// retry-after (a retry-after is waited exactly; DPS's 5 requests per device in any 10 s
    /// are kept whatever this says).
    #[arg(long, default_value_t = 2000)]
    min_interval_ms: u64,
    #[command(flatten)]
    token: TokenFlags,
}

/// How to reach a PKCS#11 token, for keys given as `pkcs11:` URIs.
#[derive(Args)]
struct TokenFlags {
    /// The PKCS#11 module (a shared library: /usr/lib/softhsm/libsofthsm2.so,
    /// /usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so ...); else DPS_PKCS11_MODULE.
    #[arg(long, value_name = "PATH")]
    pkcs11_module: Option<PathBuf>,
    /// A file holding the token's user PIN (mode 600); else DPS_PKCS11_PIN. Never on the
    /// command line.
    #[arg(long, value_name = "FILE")]
    pin_file: Option<PathBuf>,
}

impl From<TokenFlags> for TokenAccess {
    fn from(flags: TokenFlags) -> Self {
        TokenAccess::new(flags.pkcs11_module, flags.pin_file)
    }
}

fn parse_pkcs11_uri(text: &str) -> Result<dps_transport_actor::pkcs11::Pkcs11Uri, String> {
    text.parse()
        .map_err(|e: dps_transport_actor::pkcs11::Pkcs11Error| e.to_string())
}

/// How to reach the service: the same flags for `provision` and `fleet`.
#[derive(Args)]
struct ConnectionFlags {
    /// The DPS endpoint, `HOST[:PORT]` (port 8883, or 443 with --ws).
    #[arg(long, default_value = dps_messages::RegistrationRequest::DEFAULT_HOST)]
    endpoint: String,
    /// Trust this CA (PEM) and nothing else.
    #[arg(long, conflicts_with_all = ["platform_roots", "extra_ca"])]
    ca: Option<PathBuf>,
    /// Trust the operating system's store (where IT installs a corporate root; on Linux the
    /// distribution's bundle, or SSL_CERT_FILE / SSL_CERT_DIR) instead of the public web's
    /// roots.
    #[arg(long)]
    platform_roots: bool,
    /// Trust this CA (PEM) besides the public web's roots (or the platform's); repeatable.
    #[arg(long, value_name = "FILE")]
    extra_ca: Vec<PathBuf>,
    /// Connect through this HTTP proxy, `http://[user:password@]host:port` (a CONNECT tunnel
    /// for MQTT and WebSocket alike). Without it, HTTPS_PROXY (or https_proxy) is used unless
    /// NO_PROXY names the endpoint's host.
    #[arg(long, value_name = "URL", conflicts_with = "no_proxy")]
    proxy: Option<String>,
    /// Connect directly, whatever HTTPS_PROXY says.
    #[arg(long)]
    no_proxy: bool,
    /// Use MQTT over WebSocket (wss://HOST:443/$iothub/websocket).
    #[arg(long)]
    ws: bool,
}

impl From<ConnectionFlags> for Connection {
    fn from(flags: ConnectionFlags) -> Self {
        Connection {
            endpoint: flags.endpoint,
            websocket: flags.ws,
            ca: flags.ca,
            platform_roots: flags.platform_roots,
            extra_ca: flags.extra_ca,
            proxy: flags.proxy,
            no_proxy: flags.no_proxy,
        }
    }
}

fn parse_json(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))
}

/// Makes glibc's allocator keep one arena instead of one per thread. `dps` runs an actix thread
/// and MQTT runtime threads; with an arena each, memory freed on one thread sits unused while
/// another grows its own. `dps bench` at 1,000 devices, concurrency 50: peak RSS 15.6-15.9 MiB
/// with arenas per thread, 14.8 MiB with one, the same CPU. (Set `MALLOC_ARENA_MAX=1` in the
/// environment for the same in a program of your own.)
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` changes a setting of the allocator; it is called before any thread of
    // ours starts, and glibc takes its own lock for it.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

fn main() -> ExitCode {
    one_malloc_arena();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    actix_rt::System::new().block_on(async move {
        match cli.command {
            Command::Demo => run_demo().await,
            Command::Provision(args) => run_provision(*args).await,
            Command::Scenario {
                command: ScenarioCommand::Run { files },
            } => run_scenarios(files).await,
            Command::Bench(args) => dps_harness::bench::main(args).await,
            Command::Fleet(args) => run_fleet(*args).await,
        }
    })
}

async fn run_demo() -> ExitCode {
    println!(
        "Starting a mock DPS (MQTT/TLS and MQTT/WebSocket, generated PKI, issuing certificates) and provisioning four devices...\n"
    );
    match demo::run().await {
        Ok(rows) => {
            println!("{}", demo::table(&rows));
            if rows.iter().all(|r| r.result.is_ok()) {
                println!("\nAll {} registrations assigned.", rows.len());
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("dps demo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The credential from the arguments, or else from the environment; warnings on stderr.
fn credential(p: &mut Provision, token: &TokenAccess) -> Result<Credential, String> {
    use dps_harness::secrets::{self, KeyArg, KeyKind};
    let mut warn = |warning: String| eprintln!("{warning}");
    let arg = |value: Option<String>, file: Option<PathBuf>| {
        value.map(KeyArg::Value).or(file.map(KeyArg::File))
    };
    let symmetric = arg(p.symmetric_key.take(), p.symmetric_key_file.take());
    let group = arg(p.group_key.take(), p.group_key_file.take());
    match (p.cert.take(), p.key.take(), symmetric, group) {
        (Some(cert), Some(key), None, None) => Ok(Credential::X509 {
            cert,
            key: DeviceKey::parse(&key, token)?,
        }),
        (None, None, Some(arg), None) => Ok(Credential::SymmetricKey(secrets::read(
            KeyKind::Symmetric,
            arg,
            &mut warn,
        )?)),
        (None, None, None, Some(arg)) => Ok(Credential::GroupKey(secrets::read(
            KeyKind::Group,
            arg,
            &mut warn,
        )?)),
        (None, None, None, None) => match (
            secrets::from_environment(KeyKind::Symmetric),
            secrets::from_environment(KeyKind::Group),
        ) {
            (Some(key), None) => Ok(Credential::SymmetricKey(key)),
            (None, Some(key)) => Ok(Credential::GroupKey(key)),
            (Some(_), Some(_)) => Err(format!(
                "both {} and {} are set; set one",
                secrets::SYMMETRIC_KEY_VAR,
                secrets::GROUP_KEY_VAR
            )),
            (None, None) => Err(format!(
                "give one credential: --cert and --key, --symmetric-key-file, --group-key-file, \
                 or {} or {} in the environment",
                secrets::SYMMETRIC_KEY_VAR,
                secrets::GROUP_KEY_VAR
            )),
        },
        _ => Err("give one credential: --cert and --key, a symmetric key, or a group key".into()),
    }
}

async fn run_provision(mut p: Provision) -> ExitCode {
    let token = TokenAccess::new(p.token.pkcs11_module.take(), p.token.pin_file.take());
    let credential = match credential(&mut p, &token) {
        Ok(credential) => credential,
        Err(e) => {
            eprintln!("dps provision: {e}");
            return ExitCode::from(2);
        }
    };
    let registration_id = p.registration_id.clone();
    let args = ProvisionArgs {
        connection: p.connection.into(),
        id_scope: p.id_scope,
        registration_id: p.registration_id,
        credential,
        payload: p.payload,
        timeout: Duration::from_secs(p.timeout),
        cache: p.cache,
        force: p.force,
        issue_cert: p.issue_cert,
        key_curve: p.key_curve,
        issue_key: p.issue_key,
        token,
    };
    let provisioned = provision::run(args).await;
    let outcome = match &provisioned {
        Ok(_) => Outcome::Assigned,
        Err(e) => Outcome::of_error(e),
    };
    match &provisioned {
        Ok(done) if p.json => println!(
            "{}",
            serde_json::to_string_pretty(&done.result).unwrap_or_default()
        ),
        Ok(done) => println!("{}", provision::summary(&registration_id, &done.result)),
        Err(e) => eprintln!("dps provision: {outcome}: {e}"),
    }
    if let Ok(provision::ProvisionOutcome {
        certificate: Some(written),
        ..
    }) = &provisioned
    {
        let lines = provision::certificate_summary(written);
        // With --json, stdout holds the JSON alone.
        if p.json {
            eprintln!("{lines}");
        } else {
            println!("{lines}");
        }
    }
    ExitCode::from(outcome.exit_code())
}

async fn run_fleet(f: FleetCmd) -> ExitCode {
    use dps_harness::fleet::{self, FleetArgs};
    let args = FleetArgs {
        connection: f.connection.into(),
        id_scope: f.id_scope,
        devices: f.devices,
        out: f.out.clone(),
        concurrency: f.concurrency,
        runtimes: f.runtimes,
        rate: f.rate,
        timeout: Duration::from_secs(f.timeout),
        min_interval: Duration::from_millis(f.min_interval_ms),
        token: f.token.into(),
    };
    let stop = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    match fleet::run(args, stop).await {
        Ok(summary) => {
            println!(
                "{} assigned, {} failed, {} skipped (assigned before); {} registers and {} polls sent, {} refused with 429, {} registers found the service unreachable; outcomes in {}",
                summary.assigned,
                summary.failed,
                summary.skipped,
                summary.registers,
                summary.polls,
                summary.refused,
                summary.unreachable,
                f.out.display()
            );
            if summary.interrupted {
                eprintln!("dps fleet: interrupted; run it again to go on");
                ExitCode::from(130)
            } else if summary.failed > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("dps fleet: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run_scenarios(files: Vec<PathBuf>) -> ExitCode {
    let files = if files.is_empty() {
        match scenario::files_in(&scenario::shipped_dir()) {
            Ok(files) => files,
            Err(e) => {
                eprintln!("dps scenario run: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        files
    };
    let (mut passed, mut failed) = (0, 0);
    for file in &files {
        let report = scenario::run_file(file).await;
        if report.passed() {
            passed += 1;
            println!("ok    {}", report.name);
        } else {
            failed += 1;
            println!("FAIL  {} ({})", report.name, report.file.display());
            for failure in &report.failures {
                println!("        {failure}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
