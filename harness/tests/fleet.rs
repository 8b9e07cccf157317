//! `dps fleet`, run as a user runs it: outcomes appended as they end, a rerun resumes, a
//! failing device is one line among many, and Ctrl-C leaves only whole lines.

mod util;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use dps_mock_broker::script::{DeviceScript, Step};
use dps_mock_broker::{BrokerHandle, MockBroker, Quotas, Script, TestPki};
use util::Ran;

const GROUP_KEY: &str = dps_mock_broker::TEST_GROUP_KEY;

struct Setup {
    broker: BrokerHandle,
    dir: PathBuf,
}

impl Setup {
    fn new(name: &str, script: Script, quotas: Quotas) -> Self {
        let pki = Arc::new(TestPki::generate().unwrap());
        let dir = std::env::temp_dir().join(format!("dps-fleet-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        pki.write_to(&dir, &[]).unwrap();
        let broker = MockBroker::builder()
            .pki(pki)
            .group_key(GROUP_KEY)
            .retry_after(0)
            .script(script)
            .quotas(quotas)
            .start()
            .unwrap();
        Self { broker, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes a devices file of `ids`, each with the group key, and returns its path.
    fn devices(&self, ids: &[String], extra: &[&str]) -> PathBuf {
        let mut text: String = ids
            .iter()
            .map(|id| format!("{{\"registration_id\":\"{id}\",\"group_key\":\"{GROUP_KEY}\"}}\n"))
            .collect();
        for line in extra {
            text.push_str(line);
            text.push('\n');
        }
        let path = self.path("devices.jsonl");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn command(&self, devices: &Path, out: &Path) -> Command {
        let mut command = util::dps(["fleet"]);
        command
            .args([
                "--endpoint",
                &format!("localhost:{}", self.broker.addr().port()),
            ])
            .arg("--ca")
            .arg(self.path("ca.pem"))
            .args(["--id-scope", dps_mock_broker::DEFAULT_ID_SCOPE])
            .arg("--devices")
            .arg(devices)
            .arg("--out")
            .arg(out)
            .args([
                "--concurrency",
                "8",
                "--runtimes",
                "2",
                "--min-interval-ms",
                "0",
            ])
            .args(["--timeout", "60"]);
        command
    }

    fn run(&self, devices: &Path, out: &Path) -> Ran {
        util::run(&mut self.command(devices, out))
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("fleet-{i:03}")).collect()
}

/// The out file's lines, each parsed (a line that does not parse fails the test).
fn lines(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

/// How often each device appears assigned in the out file.
fn assigned(out: &Path) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for line in lines(out) {
        if line["outcome"] == "assigned" {
            *counts
                .entry(line["registration_id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    counts
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_failing_device_is_one_line_among_many_and_a_rerun_resumes() {
    let script = Script::new().device("fleet-017", DeviceScript::new().request(Step::respond(401)));
    let s = Setup::new("resume", script, Quotas::default());
    let all = ids(30);
    let devices = s.devices(&all, &[r#"{"registration_id":"no-key"}"#]);
    let out = s.path("out.jsonl");
    // A partial out file from an earlier run: ten assigned, and a torn last line.
    let earlier: String = all[..10]
        .iter()
        .map(|id| {
            format!("{{\"registration_id\":\"{id}\",\"outcome\":\"assigned\",\"elapsed_ms\":1}}\n")
        })
        .collect();
    std::fs::write(&out, format!("{earlier}{{\"registration_id\":\"fleet-0")).unwrap();

    let first = s.run(&devices, &out);
    let first = first.expect(1);
    assert!(
        text(&first.stdout).starts_with("19 assigned, 2 failed, 10 skipped"),
        "{}",
        text(&first.stdout)
    );
    assert_eq!(
        s.broker.records().len(),
        20,
        "the ten assigned before were skipped"
    );
    // The torn line was set aside; the file holds whole lines only.
    assert_eq!(
        std::fs::read_to_string(s.path("out.jsonl.torn")).unwrap(),
        "{\"registration_id\":\"fleet-0\n"
    );
    let outcomes: HashMap<String, String> = lines(&out)[10..]
        .iter()
        .map(|l| {
            (
                l["registration_id"].as_str().unwrap().to_owned(),
                l["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        outcomes.len(),
        21,
        "twenty provisioned and one without a key"
    );
    assert_eq!(outcomes["fleet-017"], "unauthorized");
    assert_eq!(outcomes["no-key"], "invalid_input");

    // The rerun provisions only what is not assigned yet: fleet-017 (now the service takes
    // it) and the device without a key (still not).
    let second = s.run(&devices, &out);
    let second = second.expect(1);
    assert!(
        text(&second.stdout).starts_with("1 assigned, 1 failed, 29 skipped"),
        "{}",
        text(&second.stdout)
    );
    let counts = assigned(&out);
    assert_eq!(
        counts.len(),
        30,
        "the ten before, the 19 of the first run and fleet-017"
    );
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
}

/// Ctrl-C stops the run with exit 130; the out file holds whole lines only, and the rerun
/// finishes the rest: every device assigned exactly once across both runs.
#[cfg(unix)]
#[test]
fn ctrl_c_leaves_whole_lines_and_the_rerun_finishes() {
    // 20 registrations a second: 60 devices take about three seconds.
    let quotas = Quotas {
        registrations_per_minute: Some(1_200),
        ..Quotas::default()
    };
    let s = Setup::new("interrupt", Script::new(), quotas);
    let all = ids(60);
    let devices = s.devices(&all, &[]);
    let out = s.path("out.jsonl");
    let child = s
        .command(&devices, &out)
        .args(["--rate", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until some devices are done, then interrupt as a terminal's Ctrl-C does.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while lines(&out).len() < 5 {
        assert!(std::time::Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let interrupted = child.wait_with_output().unwrap();
    assert_eq!(
        interrupted.status.code(),
        Some(130),
        "{}",
        text(&interrupted.stderr)
    );
    let done = lines(&out).len();
    assert!((5..60).contains(&done), "{done}");

    s.run(&devices, &out).expect(0);
    let counts = assigned(&out);
    assert_eq!(counts.len(), 60);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
}

/// A station killed (SIGKILL) at several moments, and once cut mid-write as a power cut would,
/// then run again with the same files: every device ends with exactly one `assigned` line, and
/// the torn line is set aside, never misread.
#[cfg(unix)]
#[test]
fn a_killed_station_resumes_with_one_assigned_line_per_device() {
    // 40 registrations a second: 120 devices take about three seconds.
    let quotas = Quotas {
        registrations_per_minute: Some(2_400),
        ..Quotas::default()
    };
    let s = Setup::new("kill", Script::new(), quotas);
    let all = ids(120);
    let devices = s.devices(&all, &[]);
    let out = s.path("out.jsonl");
    let whole_lines = |out: &Path| {
        std::fs::read_to_string(out)
            .unwrap_or_default()
            .lines()
            .count()
    };
    // Kill before any outcome, after a few, and well into the run.
    for kill_after in [0, 10, 50] {
        let mut child = s
            .command(&devices, &out)
            .args(["--rate", "40"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while whole_lines(&out) < kill_after {
            assert!(std::time::Instant::now() < deadline, "no progress");
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // Every line the killed run left is whole.
        let before = lines(&out).len();
        assert!(before >= kill_after, "{before} < {kill_after}");
    }
    // A power cut mid-write: the last line is cut short, naming a device that is not done.
    let pending = all
        .iter()
        .find(|id| !assigned(&out).contains_key(*id))
        .unwrap()
        .clone();
    let fragment = format!("{{\"registration_id\":\"{pending}\",\"outcome\":\"assigned\",\"ela");
    let mut file = std::fs::OpenOptions::new().append(true).open(&out).unwrap();
    std::io::Write::write_all(&mut file, fragment.as_bytes()).unwrap();
    drop(file);

    let last = s.run(&devices, &out).expect(0);
    assert!(
        text(&last.stderr).contains("torn line"),
        "{}",
        text(&last.stderr)
    );
    let counts = assigned(&out);
    assert_eq!(counts.len(), 120, "every device assigned");
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    let torn = std::fs::read_to_string(s.path("out.jsonl.torn")).unwrap();
    assert_eq!(torn, format!("{fragment}\n"));
}
