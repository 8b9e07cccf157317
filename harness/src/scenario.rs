//! Scripted scenarios: a mock-broker script, the client's request, the expected outcome and the
//! expected wire record. `dps scenario run` runs them; the test suite runs every file in
//! `harness/scenarios/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dps_messages::{Protocol, RegistrationRequest};
use dps_mock_broker::record::Connack;
use dps_mock_broker::record::{Event, Transport};
use dps_mock_broker::{ConnectionRecord, MockBroker, Script, TestPki};
use dps_transport_actor::{ClientOptions, ProvisioningClient, TransportConfig};
use serde::Deserialize;
use serde_json::Value;

use crate::outcome::Outcome;
use crate::setup;

/// The individual enrollment key scenarios with `"auth": "symmetric_key"` use.
pub const SCENARIO_KEY: &str = dps_mock_broker::TEST_SYMMETRIC_KEY;
/// The group enrollment key scenarios with `"auth": "group_key"` use.
pub const SCENARIO_GROUP_KEY: &str = dps_mock_broker::TEST_GROUP_KEY;

/// One scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A short name, printed in the report.
    pub name: String,
    /// What the scenario shows.
    #[serde(default)]
    pub description: String,
    /// `mqtt` or `mqtt_ws`.
    #[serde(default = "mqtt")]
    pub protocol: Protocol,
    /// `x509`, `symmetric_key` or `group_key`.
    #[serde(default = "x509")]
    pub auth: AuthKind,
    /// The device.
    #[serde(default = "device")]
    pub registration_id: String,
    /// Custom allocation data to send.
    #[serde(default)]
    pub payload: Option<Value>,
    /// The client's overall deadline, in milliseconds.
    #[serde(default = "ten_seconds")]
    pub deadline_ms: u64,
    /// The transport's per-response deadline, in milliseconds.
    #[serde(default = "ten_seconds")]
    pub response_timeout_ms: u64,
    /// The broker's settings.
    #[serde(default)]
    pub broker: BrokerSettings,
    /// What the client must end with.
    pub expect: Expectation,
    /// What the broker must have seen.
    #[serde(default)]
    pub wire: WireExpectation,
}

/// A credential kind in a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// A device certificate from the test PKI.
    X509,
    /// [`SCENARIO_KEY`] as an individual enrollment.
    SymmetricKey,
    /// A key derived from [`SCENARIO_GROUP_KEY`].
    GroupKey,
}

fn mqtt() -> Protocol {
    Protocol::Mqtt
}
fn x509() -> AuthKind {
    AuthKind::X509
}
fn device() -> String {
    "scenario-device".into()
}
fn ten_seconds() -> u64 {
    10_000
}

/// The broker side of a scenario.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSettings {
    /// The `retry-after` of `202 assigning`, in seconds.
    #[serde(default)]
    pub retry_after: u64,
    /// The assigned hub.
    #[serde(default)]
    pub assigned_hub: Option<String>,
    /// The mock broker script (see `mock-broker/scenarios/README.md`).
    #[serde(default)]
    pub script: Script,
}

/// What the client must end with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// The kind of ending.
    pub outcome: Outcome,
    /// The hub, when assigned.
    #[serde(default)]
    pub assigned_hub: Option<String>,
    /// The payload the service returned, when assigned.
    #[serde(default)]
    pub payload: Option<Value>,
    /// The registration state's errorCode, when the registration failed.
    #[serde(default)]
    pub error_code: Option<i64>,
}

/// What the broker must have recorded.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireExpectation {
    /// How many connections the device opened.
    #[serde(default)]
    pub connections: Option<usize>,
    /// The requests published over all connections, in order: `register` or `poll`.
    #[serde(default)]
    pub requests: Option<Vec<String>>,
    /// The statuses of the responses the broker sent, in order.
    #[serde(default)]
    pub statuses: Option<Vec<u16>>,
    /// `tls` or `wss`, for every connection.
    #[serde(default)]
    pub transport: Option<String>,
    /// Whether the last connection ended with the device's DISCONNECT.
    #[serde(default)]
    pub disconnected: Option<bool>,
    /// The CONNACK of the first connection: `accepted` or a refusal code.
    #[serde(default)]
    pub refused_with: Option<u8>,
}

/// A scenario's verdict.
#[derive(Debug, Clone)]
pub struct Report {
    /// The scenario's name.
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// What did not match; empty when it passed.
    pub failures: Vec<String>,
}

impl Report {
    /// Whether everything matched.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Reads a scenario file.
pub fn load(path: &Path) -> Result<Scenario, String> {
    let text = setup::read(path)?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The `.json` files of `dir`, sorted.
pub fn files_in(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    Ok(files)
}

/// The scenarios shipped with the harness.
pub fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// Runs the scenario in `path`.
pub async fn run_file(path: &Path) -> Report {
    let failures = match load(path) {
        Ok(scenario) => {
            let name = scenario.name.clone();
            let failures = match run(&scenario).await {
                Ok(failures) => failures,
                Err(e) => vec![format!("could not run: {e}")],
            };
            return Report {
                name,
                file: path.to_owned(),
                failures,
            };
        }
        Err(e) => vec![e],
    };
    Report {
        name: path.display().to_string(),
        file: path.to_owned(),
        failures,
    }
}

/// Runs one scenario and lists what did not match.
pub async fn run(scenario: &Scenario) -> Result<Vec<String>, String> {
    let pki = Arc::new(TestPki::generate().map_err(|e| e.to_string())?);
    let mut builder = MockBroker::builder()
        .pki(pki.clone())
        .retry_after(scenario.broker.retry_after)
        .symmetric_key(scenario.registration_id.clone(), SCENARIO_KEY)
        .group_key(SCENARIO_GROUP_KEY)
        .script(scenario.broker.script.clone());
    if let Some(hub) = &scenario.broker.assigned_hub {
        builder = builder.assigned_hub(hub.clone());
    }
    let broker = builder.start().map_err(|e| e.to_string())?;

    let id = &scenario.registration_id;
    let protocol = scenario.protocol;
    let uri = broker.uri(protocol).unwrap_or_default();
    let auth = match scenario.auth {
        AuthKind::X509 => setup::identity(&pki.device(id).map_err(|e| e.to_string())?),
        AuthKind::SymmetricKey => dps_messages::SymmetricKey::new(SCENARIO_KEY)
            .map(Into::into)
            .map_err(Into::into),
        AuthKind::GroupKey => setup::group_device(SCENARIO_GROUP_KEY, id),
    }
    .map_err(|e| e.to_string())?;
    let config = TransportConfig::builder(protocol)
        .ca_pem(broker.ca_pem().unwrap_or_default())
        .response_timeout(Duration::from_millis(scenario.response_timeout_ms))
        .build()
        .map_err(|e| e.to_string())?;
    let options = ClientOptions {
        min_interval: Duration::ZERO,
        max_interval: Duration::from_millis(200),
        deadline: Duration::from_millis(scenario.deadline_ms),
        ..ClientOptions::default()
    };
    let client = ProvisioningClient::start(config, auth, options).map_err(|e| e.to_string())?;
    let mut request =
        RegistrationRequest::new(dps_mock_broker::DEFAULT_ID_SCOPE, id.clone()).with_endpoint(uri);
    if let Some(payload) = &scenario.payload {
        request = request.with_payload(payload.clone());
    }
    let result = client.register(request).await;

    // The client disconnects before it returns; give the broker the moment it needs to record
    // the close, waiting on the record itself rather than on a clock.
    // A record still open after the wait is reported as it stands.
    let records = broker
        .wait_until(Duration::from_secs(5), |r| r.iter().all(|c| c.is_closed()))
        .unwrap_or_else(|timed_out| timed_out.seen);
    broker.stop();
    Ok(check(scenario, &result, &records))
}

fn check(
    scenario: &Scenario,
    result: &Result<dps_messages::RegistrationResult, dps_messages::ProvisioningError>,
    records: &[ConnectionRecord],
) -> Vec<String> {
    let mut failures = Vec::new();
    let mut expect = |what: &str, ok: bool, detail: String| {
        if !ok {
            failures.push(format!("{what}: {detail}"));
        }
    };
    let outcome = Outcome::of(result);
    let shown = match result {
        Ok(r) => format!("{:?}", r.status),
        Err(e) => e.to_string(),
    };
    expect(
        "outcome",
        outcome == scenario.expect.outcome,
        format!(
            "expected {}, got {outcome} ({shown})",
            scenario.expect.outcome
        ),
    );
    let state = result
        .as_ref()
        .ok()
        .and_then(|r| r.registration_state.clone());
    if let Some(hub) = &scenario.expect.assigned_hub {
        let got = state.as_ref().and_then(|s| s.assigned_hub.clone());
        expect(
            "assigned hub",
            got.as_ref() == Some(hub),
            format!("expected {hub}, got {got:?}"),
        );
    }
    if let Some(payload) = &scenario.expect.payload {
        let got = state.as_ref().and_then(|s| s.payload.clone());
        expect(
            "payload",
            got.as_ref() == Some(payload),
            format!("expected {payload}, got {got:?}"),
        );
    }
    if let Some(code) = scenario.expect.error_code {
        let got = match result {
            Err(dps_messages::ProvisioningError::RegistrationFailed(r)) => {
                r.registration_state.as_ref().and_then(|s| s.error_code)
            }
            Err(e) => e.service_error().and_then(|s| s.error_code),
            Ok(_) => None,
        };
        expect(
            "error code",
            got == Some(code),
            format!("expected {code}, got {got:?}"),
        );
    }

    let wire = &scenario.wire;
    if let Some(n) = wire.connections {
        expect(
            "connections",
            records.len() == n,
            format!("expected {n}, got {}", records.len()),
        );
    }
    if let Some(requests) = &wire.requests {
        let got: Vec<&str> = records
            .iter()
            .flat_map(|r| r.requests())
            .map(|request| {
                if request.is_register() {
                    "register"
                } else {
                    "poll"
                }
            })
            .collect();
        expect(
            "requests",
            got == *requests,
            format!("expected {requests:?}, got {got:?}"),
        );
    }
    if let Some(statuses) = &wire.statuses {
        let got: Vec<u16> = records
            .iter()
            .flat_map(|r| r.responses())
            .filter_map(|response| response.status())
            .collect();
        expect(
            "statuses",
            got == *statuses,
            format!("expected {statuses:?}, got {got:?}"),
        );
    }
    if let Some(transport) = &wire.transport {
        let want = if transport == "wss" {
            Transport::Wss
        } else {
            Transport::Tls
        };
        let all = !records.is_empty() && records.iter().all(|r| r.transport == want);
        expect(
            "transport",
            all,
            format!("expected every connection over {transport}"),
        );
    }
    if let Some(disconnected) = wire.disconnected {
        let got = records
            .last()
            .is_some_and(|r| r.kinds().any(|e| matches!(e, Event::Disconnect)));
        expect(
            "disconnected",
            got == disconnected,
            format!("expected {disconnected}, got {got}"),
        );
    }
    if let Some(code) = wire.refused_with {
        let got = records.first().map(|r| &r.connack);
        let ok = matches!(got, Some(Connack::Refused { code: c, .. }) if *c == code);
        expect(
            "connack",
            ok,
            format!("expected a refusal with code {code}, got {got:?}"),
        );
    }
    failures
}
