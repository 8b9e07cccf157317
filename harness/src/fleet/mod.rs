//! `dps fleet`: provisions the devices a JSON Lines file lists, at the pace the service allows,
//! and appends each one's outcome to another JSON Lines file as it ends.
//!
//! The out file is the run's memory (`out_file.rs`): outcomes are group-committed (one write
//! and one `fdatasync` for those that end within a few milliseconds of each other) and counted
//! done only once synced, so a
//! crash or a Ctrl-C leaves only whole lines, and a rerun skips the devices it already shows
//! assigned.

mod out_file;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dps_messages::{Authentication, ProvisioningError, RegistrationRequest};
use dps_transport_actor::ClientOptions;
use dps_transport_actor::fleet::{
    Fleet, FleetDevice, FleetOptions, PacerOptions, ProgressSnapshot,
};
use serde::{Deserialize, Serialize};

use crate::connection::Connection;
use crate::outcome::Outcome;
use crate::provision::{Credential, DeviceKey};
use crate::setup;
use crate::token::TokenAccess;
use out_file::{OutFile, assigned_in};

/// How long a batch of outcomes stays open after its first one: the outcomes that end
/// meanwhile share its write and its `fdatasync`. At full speed (about a thousand outcomes a
/// second) a sync per outcome, or per the few that end during one sync, cost a twentieth of the
/// client's CPU; a few milliseconds more before an outcome counts as done is nothing beside the
/// registration it ends.
const BATCH_WINDOW: Duration = Duration::from_millis(5);

/// A line of the devices file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceLine {
    /// The device's registration id.
    pub registration_id: String,
    /// Its certificate chain (PEM), with `key`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The certificate's private key: a PEM file, or a `pkcs11:` URI of a key in a token.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// An individual enrollment's key (base64).
    #[serde(default)]
    pub symmetric_key: Option<String>,
    /// A group enrollment's key (base64); the device key is derived from it.
    #[serde(default)]
    pub group_key: Option<String>,
    /// Custom allocation data.
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
}

impl DeviceLine {
    fn auth(&self, token: &TokenAccess) -> Result<Authentication, ProvisioningError> {
        let credential = match (&self.cert, &self.key, &self.symmetric_key, &self.group_key) {
            (Some(cert), Some(key), None, None) => Credential::X509 {
                cert: cert.clone(),
                key: DeviceKey::parse(key, token).map_err(ProvisioningError::InvalidRequest)?,
            },
            (None, None, Some(key), None) => Credential::SymmetricKey(key.clone()),
            (None, None, None, Some(key)) => Credential::GroupKey(key.clone()),
            _ => {
                return Err(ProvisioningError::InvalidRequest(
                    "give one credential: cert and key, symmetric_key, or group_key".into(),
                ));
            }
        };
        credential.load(&self.registration_id)
    }
}

/// A line of the out file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutLine {
    /// The device.
    pub registration_id: String,
    /// How it ended (`assigned`, `unauthorized`, `timeout` ...; `dps provision`'s kinds).
    pub outcome: Outcome,
    /// Its hub, when assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_hub: Option<String>,
    /// Its device id, when assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Why not, when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long it took.
    pub elapsed_ms: u64,
}

/// What `dps fleet` does.
#[derive(Debug, Clone)]
pub struct FleetArgs {
    /// How to reach the service.
    pub connection: Connection,
    /// The DPS instance's id scope.
    pub id_scope: String,
    /// The devices file (JSON Lines of [`DeviceLine`]).
    pub devices: PathBuf,
    /// The out file (JSON Lines of [`OutLine`]), appended to.
    pub out: PathBuf,
    /// Devices provisioned at once.
    pub concurrency: usize,
    /// MQTT runtime threads (0: one per core).
    pub runtimes: usize,
    /// Registrations per second at the start.
    pub rate: f64,
    /// Each device's deadline.
    pub timeout: Duration,
    /// The shortest wait between one device's requests.
    pub min_interval: Duration,
    /// How to reach the token of devices whose key is a `pkcs11:` URI.
    pub token: TokenAccess,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetSummary {
    /// Devices the out file already showed assigned, skipped.
    pub skipped: usize,
    /// Devices assigned in this run.
    pub assigned: usize,
    /// Devices that failed in this run.
    pub failed: usize,
    /// Register requests sent.
    pub registers: u64,
    /// Poll requests sent.
    pub polls: u64,
    /// Registers and polls the service answered 429.
    pub refused: u64,
    /// Registers that found the service unreachable (an outage: the fleet probed meanwhile).
    pub unreachable: u64,
    /// Whether the run was stopped before the end.
    pub interrupted: bool,
}

/// Runs the fleet until every device has an outcome, or until `stop` resolves (Ctrl-C); the
/// error is a file that cannot be read or written, or a devices file that does not parse.
pub async fn run(
    args: FleetArgs,
    stop: impl std::future::Future<Output = ()>,
) -> Result<FleetSummary, String> {
    let lines = read_devices(&args.devices)?;
    let done = assigned_in(&args.out)?;
    let mut out = OutFile::open(&args.out)?;
    let mut summary = FleetSummary::default();
    let mut devices = Vec::new();
    for line in lines {
        if done.contains(&line.registration_id) {
            summary.skipped += 1;
            continue;
        }
        let auth = match line.auth(&args.token) {
            Ok(auth) => auth,
            Err(e) => {
                // A device whose credential cannot be used is its own outcome, not the run's.
                out.push(&out_line(&line.registration_id, &Err(e), 0))?;
                continue;
            }
        };
        let mut request = RegistrationRequest::new(&args.id_scope, &line.registration_id)
            .with_endpoint(args.connection.endpoint_uri());
        if let Some(payload) = line.payload {
            request = request.with_payload(payload);
        }
        devices.push(FleetDevice { request, auth });
    }
    summary.count(&out.commit()?);
    let total = devices.len();
    let options = FleetOptions {
        concurrency: args.concurrency,
        runtimes: args.runtimes,
        client: ClientOptions {
            deadline: args.timeout,
            min_interval: args.min_interval,
            ..ClientOptions::default()
        },
        pacing: PacerOptions {
            initial_rate: args.rate,
            ..PacerOptions::default()
        },
    };
    let config = args.connection.transport().map_err(|e| e.to_string())?;
    let mut run = Fleet::provision(config, devices, options).map_err(|e| e.to_string())?;
    let terminal = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            outcome = run.outcomes.recv() => {
                let Some(outcome) = outcome else { break };
                // Group commit: this outcome and every other one that ends within
                // BATCH_WINDOW of it, in one write and one sync. The window is slept out
                // rather than woken for each outcome in it (each wake is a thread switch);
                // outcomes wait in the channel meanwhile.
                let mut next = Some(outcome);
                tokio::time::sleep(BATCH_WINDOW).await;
                while let Some(outcome) = next {
                    let elapsed = u64::try_from(outcome.elapsed.as_millis()).unwrap_or(u64::MAX);
                    out.push(&out_line(&outcome.registration_id, &outcome.result, elapsed))?;
                    next = run.outcomes.try_recv().ok();
                }
                summary.count(&out.commit()?);
            }
            _ = tick.tick(), if terminal => {
                eprint!("\r{}", progress_line(&run.progress.snapshot(), total, started.elapsed()));
            }
            () = &mut stop => {
                summary.interrupted = true;
                break;
            }
        }
    }
    if terminal {
        eprintln!(
            "\r{}",
            progress_line(&run.progress.snapshot(), total, started.elapsed())
        );
    }
    let counts = run.progress.snapshot();
    (
        summary.registers,
        summary.polls,
        summary.refused,
        summary.unreachable,
    ) = (
        counts.registers,
        counts.polls,
        counts.refused,
        counts.unreachable,
    );
    Ok(summary)
}

impl FleetSummary {
    /// Counts outcomes once they are durable.
    fn count(&mut self, committed: &[Outcome]) {
        for outcome in committed {
            match outcome {
                Outcome::Assigned => self.assigned += 1,
                _ => self.failed += 1,
            }
        }
    }
}

/// `1200/2000 assigned 1195 failed 5 refused 12 | 196/s, ETA 4 s`.
fn progress_line(p: &ProgressSnapshot, total: usize, elapsed: Duration) -> String {
    let per_second = p.finished as f64 / elapsed.as_secs_f64().max(0.001);
    let left = (total as u64).saturating_sub(p.finished) as f64;
    let eta = if per_second > 0.0 {
        format!("{:.0} s", left / per_second)
    } else {
        "?".into()
    };
    let unreachable = if p.unreachable > 0 {
        format!(" unreachable {}", p.unreachable)
    } else {
        String::new()
    };
    format!(
        "{}/{total} assigned {} failed {} refused {}{unreachable} | {per_second:.0}/s, ETA {eta}   ",
        p.finished,
        p.assigned,
        p.finished - p.assigned,
        p.refused
    )
}

fn out_line(
    registration_id: &str,
    result: &Result<dps_messages::RegistrationResult, ProvisioningError>,
    elapsed_ms: u64,
) -> OutLine {
    let state = result
        .as_ref()
        .ok()
        .and_then(|r| r.registration_state.clone())
        .unwrap_or_default();
    OutLine {
        registration_id: registration_id.to_owned(),
        outcome: Outcome::of(result),
        assigned_hub: state.assigned_hub,
        device_id: state.device_id,
        error: result.as_ref().err().map(ToString::to_string),
        elapsed_ms,
    }
}

/// The devices file, each line parsed; the error names the line.
fn read_devices(path: &Path) -> Result<Vec<DeviceLine>, String> {
    let text = setup::read(path)?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("dps-fleet-{name}-{}", std::process::id()))
    }

    #[test]
    fn a_devices_file_names_its_bad_line_and_each_credential_is_checked() {
        let path = temp("devices.jsonl");
        std::fs::write(
            &path,
            "{\"registration_id\":\"a\",\"group_key\":\"AAAA\"}\n\nnot json\n",
        )
        .unwrap();
        let error = read_devices(&path).unwrap_err();
        assert!(
            error.ends_with(&format!(
                "{} line 3: expected ident at line 1 column 2",
                path.display()
            )),
            "{error}"
        );
        std::fs::remove_file(&path).unwrap();
        let line = |json: &str| serde_json::from_str::<DeviceLine>(json).unwrap();
        assert!(
            line(r#"{"registration_id":"a","group_key":"AAAA"}"#)
                .auth(&TokenAccess::default())
                .is_ok()
        );
        assert!(
            line(r#"{"registration_id":"a","symmetric_key":"AAAA"}"#)
                .auth(&TokenAccess::default())
                .is_ok()
        );
        for bad in [
            r#"{"registration_id":"a"}"#,
            r#"{"registration_id":"a","group_key":"AAAA","symmetric_key":"AAAA"}"#,
            r#"{"registration_id":"a","cert":"x.pem"}"#,
        ] {
            assert!(line(bad).auth(&TokenAccess::default()).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<DeviceLine>(r#"{"registration_id":"a","typo":1}"#).is_err());
    }

    #[test]
    fn progress_says_how_far_how_fast_and_how_long_to_go() {
        let snapshot = ProgressSnapshot {
            total: 100,
            finished: 50,
            assigned: 49,
            registers: 60,
            polls: 50,
            refused: 3,
            unreachable: 0,
            rate: 20.0,
        };
        let line = progress_line(&snapshot, 100, Duration::from_secs(5));
        assert_eq!(
            line.trim_end(),
            "50/100 assigned 49 failed 1 refused 3 | 10/s, ETA 5 s"
        );
    }
}
