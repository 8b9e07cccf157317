//! The `dps-mock-broker` command line, run as a user runs it.

use std::io::BufRead;
use std::process::{Command, Stdio};

/// Starts the broker with `args`, and returns its first line of output and its stderr.
fn first_line(args: &[&str]) -> (String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dps-mock-broker"))
        .args(["--listen", "127.0.0.1:0", "--no-ws"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let stdout = child.stdout.take().unwrap();
    std::io::BufReader::new(stdout)
        .read_line(&mut first)
        .unwrap();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (first, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn enrollments_come_from_a_file_of_dps_enrollment_objects() {
    let dir = std::env::temp_dir().join(format!("dps-mock-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("enrollments.json");
    let file = serde_json::json!({
        "linkedHubs": [{"name": "hub-a.example", "latencyMs": 10}, {"name": "hub-b.example"}],
        "individualEnrollments": [{
            "registrationId": "dev-1",
            "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": dps_mock_broker::TEST_SYMMETRIC_KEY}}
        }],
        "enrollmentGroups": [{
            "enrollmentGroupId": "line-3",
            "allocationPolicy": "geoLatency",
            "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": dps_mock_broker::TEST_GROUP_KEY}}
        }]
    });
    std::fs::write(&good, file.to_string()).unwrap();
    let (stdout, stderr) = first_line(&["--enrollments", good.to_str().unwrap()]);
    assert!(
        stdout.contains("listening")
            && stdout.contains("1 individual enrollments, 1 enrollment groups"),
        "{stdout} {stderr}"
    );

    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"individualEnrollments": [{"registrationId": "no attestation"}]}"#,
    )
    .unwrap();
    let (stdout, stderr) = first_line(&["--enrollments", bad.to_str().unwrap()]);
    assert!(!stdout.contains("listening"), "{stdout}");
    assert!(
        stderr.contains("bad.json") && stderr.contains("attestation"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_service_api_prints_the_connection_string_the_sdks_take() {
    let key = "c2VydmljZSBrZXkgZm9yIHRlc3RzIG9ubHksIG5ldmVyIHJlYWw=";
    let mut child = Command::new(env!("CARGO_BIN_EXE_dps-mock-broker"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--no-ws",
            "--service-listen",
            "127.0.0.1:0",
        ])
        .args(["--service-key", key])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let listening = lines.next().unwrap().unwrap();
    let service = lines.next().unwrap().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening.contains("listening"), "{listening}");
    assert!(
        service.starts_with("service API on https://127.0.0.1:"),
        "{service}"
    );
    let expected = format!(";SharedAccessKeyName=provisioningserviceowner;SharedAccessKey={key}");
    assert!(
        service.contains("connection string: HostName=localhost:") && service.ends_with(&expected),
        "{service}"
    );

    // The key must be given with the address, and be base64.
    let (stdout, stderr) = first_line(&["--service-listen", "127.0.0.1:0"]);
    assert!(
        !stdout.contains("listening") && stderr.contains("--service-key"),
        "{stderr}"
    );
    let (stdout, stderr) = first_line(&[
        "--service-listen",
        "127.0.0.1:0",
        "--service-key",
        "not base64!",
    ]);
    assert!(
        !stdout.contains("listening") && stderr.contains("base64"),
        "{stderr}"
    );
}

/// The broker raises its soft open-file limit to the hard one, and says what it has.
#[cfg(unix)]
#[test]
fn the_broker_raises_its_open_file_limit_and_says_so() {
    let broker = env!("CARGO_BIN_EXE_dps-mock-broker");
    let said = |limits: &str| {
        let script = format!("{limits}; exec '{broker}' --listen 127.0.0.1:0 --no-ws");
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The limit is said before it listens; once it listens, stop it.
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let raised = said("ulimit -Sn 256 && ulimit -Hn 512");
    assert!(
        raised.contains("open files: at most 512 (raised from 256)"),
        "{raised}"
    );
    let capped = said("ulimit -n 512");
    assert!(capped.contains("open files: at most 512"), "{capped}");
    assert!(!capped.contains("raised"), "{capped}");
}
