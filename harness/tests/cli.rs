//! The `dps` binary, run as a user runs it.

mod util;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use dps_mock_broker::script::{DeviceScript, Step};
use dps_mock_broker::{BrokerHandle, MockBroker, Script, TestPki};
use util::{Ran, run};

const GROUP_KEY: &str = dps_mock_broker::TEST_GROUP_KEY;

/// Runs `dps args`, without the caller's environment.
fn dps(args: &[&str]) -> Ran {
    run(&mut util::dps(args))
}

struct Setup {
    broker: BrokerHandle,
    dir: std::path::PathBuf,
}

impl Setup {
    fn new(name: &str, script: Script) -> Self {
        Self::with(name, script, |b| b)
    }

    fn with(
        name: &str,
        script: Script,
        tweak: impl FnOnce(dps_mock_broker::BrokerBuilder) -> dps_mock_broker::BrokerBuilder,
    ) -> Self {
        let pki = Arc::new(TestPki::generate().unwrap());
        let dir = std::env::temp_dir().join(format!("dps-cli-{name}-{}", std::process::id()));
        pki.write_to(&dir, &["cli-dev".into()]).unwrap();
        let builder = MockBroker::builder()
            .pki(pki)
            .group_key(GROUP_KEY)
            .retry_after(0)
            .script(script);
        let broker = tweak(builder).start().unwrap();
        Self { broker, dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn endpoint(&self) -> String {
        format!("localhost:{}", self.broker.addr().port())
    }

    /// `dps provision` of `cli-dev` at the broker, without the caller's key, proxy and trust
    /// store variables: each test sets the ones it is about.
    fn provision_command(&self) -> Command {
        let mut command = util::dps(["provision", "--endpoint", &self.endpoint()]);
        command
            .args(["--id-scope", dps_mock_broker::DEFAULT_ID_SCOPE])
            .args(["--registration-id", "cli-dev"]);
        command
    }

    fn provision(&self, extra: &[&str]) -> Ran {
        let (endpoint, ca) = (self.endpoint(), self.path("ca.pem"));
        let mut args = vec![
            "provision",
            "--endpoint",
            &endpoint,
            "--id-scope",
            dps_mock_broker::DEFAULT_ID_SCOPE,
            "--ca",
            &ca,
        ];
        args.extend_from_slice(extra);
        dps(&args)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn provision_with_a_certificate_prints_the_assignment_and_exits_0() {
    let s = Setup::new("cert", Script::new());
    let (cert, key) = (s.path("cli-dev.pem"), s.path("cli-dev.key"));
    let out = s.provision(&[
        "--registration-id",
        "cli-dev",
        "--cert",
        &cert,
        "--key",
        &key,
    ]);
    let out = out.expect(0);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("cli-dev is assigned to mock-hub.azure-devices.net as device cli-dev"),
        "{stdout}"
    );
}

#[test]
fn provision_json_with_a_group_key_over_websocket() {
    let s = Setup::new("json", Script::new());
    let endpoint = format!("localhost:{}", s.broker.ws_addr().unwrap().port());
    let ca = s.path("ca.pem");
    let out = dps(&[
        "provision",
        "--endpoint",
        &endpoint,
        "--ws",
        "--id-scope",
        dps_mock_broker::DEFAULT_ID_SCOPE,
        "--ca",
        &ca,
        "--registration-id",
        "grouped",
        "--group-key",
        GROUP_KEY,
        "--payload",
        r#"{"k":1}"#,
        "--json",
    ]);
    let out = out.expect(0);
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["status"], "assigned");
    assert_eq!(
        result["registrationState"]["payload"],
        serde_json::json!({"k": 1})
    );
}

/// `--issue-cert DIR` writes a chain `openssl verify` accepts against the mock's issuing CA,
/// and a key only its owner can read; with `--cache`, the next run uses the cached certificate.
#[test]
fn issue_cert_writes_a_chain_openssl_verifies_and_an_owner_only_key() {
    let ca = Arc::new(dps_mock_broker::IssuingCa::generate().unwrap());
    let s = Setup::with("issue", Script::new(), |b| b.issue_certificates(ca.clone()));
    let certs = s.path("issued");
    let cache = s.path("cache.json");
    let args = [
        "--registration-id",
        "cli-dev",
        "--group-key",
        GROUP_KEY,
        "--issue-cert",
        &certs,
        "--cache",
        &cache,
    ];
    let out = s.provision(&args);
    let out = out.expect(0);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("certificate (issued)"), "{stdout}");
    assert!(stdout.contains("subject CN=cli-dev"), "{stdout}");
    assert!(
        stdout.contains("issuer  CN=dps-mock-broker issuing CA"),
        "{stdout}"
    );
    assert!(stdout.contains("expires "), "{stdout}");

    let chain = Path::new(&certs).join("cli-dev.pem");
    let key = Path::new(&certs).join("cli-dev.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let ca_file = s.path("issuing-ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    if let Some(verify) = dps_mock_broker::system_tool::output_or_skip(
        Command::new("openssl")
            .args(["verify", "-CAfile", &ca_file])
            .arg(&chain),
    ) {
        assert!(
            verify.status.success() && text(&verify.stdout).contains(": OK"),
            "openssl verify: {} {}",
            text(&verify.stdout),
            text(&verify.stderr)
        );
    }
    // The key is the chain's: the issued pair loads as an identity.
    let identity = dps_messages::X509Identity::from_pem(
        &std::fs::read(&chain).unwrap(),
        &std::fs::read(&key).unwrap(),
    );
    assert!(identity.is_ok());

    // The second run uses the cached certificate: no new connection.
    let out = s.provision(&args);
    let out = out.expect(0);
    assert!(text(&out.stdout).contains("certificate (cached"));
    assert_eq!(s.broker.records().len(), 1);
}

/// A key on the command line works, with a warning; from a file or the environment it stays
/// off the command line, and a file others can read gets a warning.
#[test]
fn keys_come_from_files_and_the_environment_and_arguments_are_warned_about() {
    let s = Setup::new("secrets", Script::new());
    let base = |extra: &[&str]| extra.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let run = |args: Vec<String>, env: Option<(&str, &str)>| {
        let mut command = s.provision_command();
        command.arg("--ca").arg(s.path("ca.pem")).args(args);
        command.envs(env);
        run(&mut command)
    };

    let out = run(base(&["--group-key", GROUP_KEY]), None);
    let out = out.expect(0);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("warning: --group-key puts the key on the command line"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(GROUP_KEY),
        "the warning never repeats the key"
    );

    let out = run(base(&[]), Some(("DPS_GROUP_KEY", GROUP_KEY)));
    let out = out.expect(0);
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );

    let key_file = s.path("group.key");
    std::fs::write(&key_file, format!("{GROUP_KEY}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let out = run(base(&["--group-key-file", &key_file]), None);
        let out = out.expect(0);
        assert!(
            !text(&out.stderr).contains("warning"),
            "{}",
            text(&out.stderr)
        );
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = run(base(&["--group-key-file", &key_file]), None);
        let out = out.expect(0);
        assert!(text(&out.stderr).contains("can be read by other users (mode 644)"));
    }

    // The environment gives a key only when the arguments give none; two keys are refused.
    let out = run(base(&[]), Some(("DPS_SYMMETRIC_KEY", "AAAA")));
    assert_eq!(
        out.status.code(),
        Some(3),
        "the wrong key is refused by the service"
    );
    let out = run(base(&[]), None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("DPS_GROUP_KEY"),
        "{}",
        text(&out.stderr)
    );
    let connections = if cfg!(unix) { 5 } else { 3 };
    assert_eq!(
        s.broker.records().len(),
        connections,
        "the last run sent nothing"
    );
}

/// `--platform-roots` trusts the operating system's store, here pointed at the broker's CA
/// with `SSL_CERT_FILE` (as an IT department's corporate root would be installed);
/// `--extra-ca` adds a CA beside the public web's roots. Without either, the public roots
/// refuse the broker's certificate, and the error says which roots were tried.
#[test]
fn platform_roots_and_extra_cas_are_trusted_and_a_refusal_names_the_roots() {
    let s = Setup::new("trust", Script::new());
    let run = |trust: &[&str], env: Option<&str>| {
        let mut command = s.provision_command();
        command
            .args(["--timeout", "20"])
            .args(trust)
            .env("DPS_GROUP_KEY", GROUP_KEY);
        command.envs(env.map(|file| ("SSL_CERT_FILE", file)));
        run(&mut command)
    };
    let ca = s.path("ca.pem");
    run(&["--platform-roots"], Some(&ca)).expect(0);
    run(&["--extra-ca", &ca], None).expect(0);
    let out = run(&[], None);
    let out = out.expect(6);
    assert!(
        text(&out.stderr).contains("UnknownIssuer (trusted: the public web's roots)"),
        "{}",
        text(&out.stderr)
    );
    // --ca means that CA alone.
    run(&["--ca", &ca, "--extra-ca", &ca], None).expect(2);
}

/// `--proxy`, `HTTPS_PROXY` and `NO_PROXY`, and `--no-proxy`, through the test proxy; a 407
/// names the proxy and not the password, and is exit 6.
#[test]
fn the_proxy_comes_from_the_flag_or_the_environment_and_no_proxy_bypasses_it() {
    use dps_mock_broker::proxy::{ProxyMode, TestProxy};
    let s = Setup::new("proxy", Script::new());
    let proxy = TestProxy::start(ProxyMode::RequireCredentials {
        user: "dev".into(),
        password: "pa55".into(),
    })
    .unwrap();
    let run = |flags: &[&str], env: &[(&str, &str)]| {
        let mut command = s.provision_command();
        command
            .arg("--ca")
            .arg(s.path("ca.pem"))
            .args(flags)
            .env("DPS_GROUP_KEY", GROUP_KEY);
        command.envs(env.iter().copied());
        run(&mut command)
    };
    let good = proxy.url_with("dev", "pa55");
    run(&["--proxy", &good], &[]).expect(0);
    run(&[], &[("HTTPS_PROXY", &good)]).expect(0);
    assert_eq!(proxy.requests().len(), 2);

    // NO_PROXY names the endpoint's host, or --no-proxy: straight to the service.
    run(
        &[],
        &[
            ("HTTPS_PROXY", &good),
            ("NO_PROXY", "example.com,localhost"),
        ],
    )
    .expect(0);
    run(&["--no-proxy"], &[("https_proxy", &good)]).expect(0);
    assert_eq!(proxy.requests().len(), 2, "neither went through the proxy");
    assert_eq!(s.broker.records().len(), 4);

    let out = run(&["--proxy", &proxy.url_with("dev", "wrong")], &[]);
    let out = out.expect(6);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("the proxy {} wants credentials", proxy.addr())),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wrong"),
        "the password is never shown: {stderr}"
    );
}

#[test]
fn exit_codes_name_the_kind_of_failure() {
    // 3: unauthorized (the wrong key).
    let s = Setup::new(
        "codes",
        Script::new()
            .device("silent-dev", DeviceScript::new().request(Step::Silent))
            .device(
                "dropped-dev",
                DeviceScript::new()
                    .connect(dps_mock_broker::script::ConnectStep::DropBeforeConnack),
            ),
    );
    let out = s.provision(&["--registration-id", "cli-dev", "--group-key", "AAAA"]);
    let out = out.expect(3);
    // The key on the command line gets its warning; then the one line of the failure.
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].starts_with("warning: --group-key"), "{stderr}");
    assert!(
        lines[1].starts_with("dps provision: unauthorized:"),
        "{stderr}"
    );

    // 5: timeout.
    s.provision(&[
        "--registration-id",
        "silent-dev",
        "--group-key",
        GROUP_KEY,
        "--timeout",
        "1",
    ])
    .expect(5);

    // 6: transport (the service closes the connection before its CONNACK).
    s.provision(&["--registration-id", "dropped-dev", "--group-key", GROUP_KEY])
        .expect(6);

    // 5 as well: nothing listens there, and the device keeps trying until its timeout, as a
    // device whose network is not up yet does. The error says what the last attempt met.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = dps(&[
        "provision",
        "--endpoint",
        &closed.to_string(),
        "--id-scope",
        "s",
        "--registration-id",
        "x",
        "--group-key",
        GROUP_KEY,
        "--ca",
        &s.path("ca.pem"),
        "--timeout",
        "3",
    ]);
    let out = out.expect(5);
    // Two attempts: at once, and after the 2 s floor (and its jitter).
    let stderr = text(&out.stderr).to_lowercase();
    assert!(
        stderr.contains("attempts)") && stderr.contains("refused"),
        "{stderr}"
    );

    // 2: bad arguments.
    assert_eq!(
        dps(&["provision", "--id-scope", "s", "--registration-id", "x"])
            .status
            .code(),
        Some(2)
    );
}

/// A key that is not base64 is the user's mistake, found before anything is sent: exit 2 (bad
/// arguments) with the reason, not 3 (which means the service refused the device).
#[test]
fn a_malformed_local_key_is_exit_2_before_any_connection() {
    let s = Setup::new("bad-key", Script::new());
    let out = s.provision(&[
        "--registration-id",
        "cli-dev",
        "--group-key",
        "this is not base64!",
    ]);
    let out = out.expect(2);
    assert_eq!(
        text(&out.stderr).lines().last(),
        Some(
            "dps provision: invalid_input: authentication error: the symmetric key is not valid base64"
        )
    );
    assert!(s.broker.records().is_empty(), "nothing may be sent");
}

/// `--timeout` is a promise: against a service that goes silent after the SUBACK (a
/// half-open link), `dps provision` exits within the timeout and the one-second close grace.
/// It used to wait 30 s more for an UNSUBACK that never came.
#[test]
fn provision_returns_within_its_timeout_against_a_silent_service() {
    use dps_mock_broker::hostile::{HostileServer, Misbehaviour};

    let server = HostileServer::start(Misbehaviour::SilentAfterSuback).unwrap();
    let dir = std::env::temp_dir().join(format!("dps-cli-silent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, server.ca_pem()).unwrap();
    let started = std::time::Instant::now();
    let out = dps(&[
        "provision",
        "--endpoint",
        &format!("localhost:{}", server.addr().port()),
        "--ca",
        &ca.display().to_string(),
        "--id-scope",
        dps_mock_broker::DEFAULT_ID_SCOPE,
        "--registration-id",
        "cli-dev",
        "--group-key",
        GROUP_KEY,
        "--timeout",
        "1",
    ]);
    let took = started.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    out.expect(5);
    // 1 s deadline + 1 s grace, and room for a process start on a loaded machine.
    assert!(took < std::time::Duration::from_secs(6), "took {took:?}");
}

/// An `assigned` answer without a hub is not a success: exit 6 (protocol), and never cached.
#[test]
fn assigned_without_a_hub_exits_6_and_is_not_cached() {
    let script = Script::new().device(
        "cli-dev",
        DeviceScript::new()
            .request(Step::Default { delay_ms: 0 })
            .request(Step::respond(200).with_body(serde_json::json!({"status": "assigned"}))),
    );
    let s = Setup::new("no-hub", script);
    let cache = s.path("cache.json");
    let out = s.provision(&[
        "--registration-id",
        "cli-dev",
        "--group-key",
        GROUP_KEY,
        "--cache",
        &cache,
    ]);
    let out = out.expect(6);
    assert!(
        text(&out.stderr).contains("answered `assigned` without registrationState"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !Path::new(&cache).exists(),
        "an incomplete assignment was cached"
    );
    assert!(text(&out.stdout).is_empty());
}

#[test]
fn provision_reports_a_failed_registration_with_exit_4() {
    let failed = serde_json::json!({"status": "failed", "registrationState": {"errorCode": 400209, "errorMessage": "nope"}});
    let script = Script::new().device(
        "cli-dev",
        DeviceScript::new()
            .request(Step::Default { delay_ms: 0 })
            .request(Step::respond(200).with_body(failed)),
    );
    let s = Setup::new("failed", script);
    let (cert, key) = (s.path("cli-dev.pem"), s.path("cli-dev.key"));
    let out = s.provision(&[
        "--registration-id",
        "cli-dev",
        "--cert",
        &cert,
        "--key",
        &key,
    ]);
    let out = out.expect(4);
    assert!(
        text(&out.stderr).contains("400209: nope"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_demo_provisions_four_devices_one_of_them_twice() {
    let out = dps(&["demo"]).expect(0);
    let stdout = text(&out.stdout);
    let issued: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("demo-issued-cert"))
        .collect();
    assert_eq!(issued.len(), 2, "{stdout}");
    assert!(issued[0].contains("group key + CSR") && issued[0].contains("MQTT/TLS"));
    assert!(issued[1].contains("issued certificate") && issued[1].contains("MQTT/WebSocket"));
    for device in [
        "demo-x509-mqtt",
        "demo-x509-websocket",
        "demo-group-sas",
        "demo-issued-cert",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(device))
            .unwrap_or_else(|| panic!("{stdout}"));
        assert!(
            line.contains("assigned") && line.contains("mock-hub.azure-devices.net"),
            "{line}"
        );
    }
}

#[test]
fn scenario_run_prints_one_line_each_and_a_total() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/01-happy-path.json");
    let out = dps(&["scenario", "run", &file.display().to_string()]);
    let out = out.expect(0);
    assert_eq!(text(&out.stdout).lines().last(), Some("1 passed, 0 failed"));
}

#[test]
fn bench_prints_json_with_the_documented_fields() {
    let out = dps(&[
        "bench",
        "--devices",
        "20",
        "--concurrency",
        "5",
        "--auth",
        "sas",
        "--json",
    ]);
    let out = out.expect(0);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for field in [
        "registrations_per_sec",
        "wall_ms",
        "failed",
        "peak_rss_mib",
        "p50_ms",
        "p99_ms",
        "cpu_seconds",
    ] {
        assert!(report.get(field).is_some(), "{field} in {report}");
    }
    assert_eq!(report["failed"], 0);
    assert_eq!(report["devices"], 20);
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["demo", "--help"],
        vec!["provision", "--help"],
        vec!["scenario", "run", "--help"],
        vec!["bench", "--help"],
    ] {
        let out = dps(&args).expect(0);
        assert!(!out.stdout.is_empty());
    }
}

/// An enrollment group of `GROUP_KEY` that assigns to `hub` alone.
fn group_on(hub: &str) -> dps_mock_broker::enrollment::EnrollmentGroup {
    dps_mock_broker::enrollment::EnrollmentGroup::symmetric_key("movers", GROUP_KEY)
        .hubs([hub])
        .allocation(dps_mock_broker::enrollment::AllocationPolicy::Static)
}

#[test]
fn provision_shows_the_new_hub_and_substatus_after_a_reprovision() {
    let s = Setup::with("reprovision", Script::new(), |b| {
        b.enrollment_group(group_on("hub-a.example"))
    });
    let provision = || {
        let out = s
            .provision(&["--registration-id", "mover", "--group-key", GROUP_KEY])
            .expect(0);
        text(&out.stdout)
    };
    let first = provision();
    assert!(
        first.contains("mover is assigned to hub-a.example as device mover (initialAssignment)"),
        "{first}"
    );
    s.broker
        .enrollments()
        .put_group(
            group_on("hub-b.example"),
            None,
            std::time::SystemTime::now(),
        )
        .unwrap();
    let moved = provision();
    assert!(
        moved.contains("mover is assigned to hub-b.example as device mover (deviceDataMigrated)"),
        "{moved}"
    );
}
