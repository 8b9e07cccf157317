//! `dps provision` and `dps fleet` with device keys in a PKCS#11 token (SoftHSM2, a token of
//! each test's own): the key by its URI, the module and PIN from flags or the environment,
//! issuance into the token, and the faults a user meets first, each an exit 2 that names them.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use dps_mock_broker::softhsm::{KeySpec, PIN, SoftHsm};
use dps_mock_broker::{BrokerHandle, IssuingCa, MockBroker, Script, TestPki};
use util::{Ran, run};

const GROUP_KEY: &str = dps_mock_broker::TEST_GROUP_KEY;

/// A mock DPS, a token of the test's own with `keys` in it (label `gw`), and a PIN file.
struct Setup {
    broker: BrokerHandle,
    pki: Arc<TestPki>,
    hsm: SoftHsm,
    dir: PathBuf,
}

impl Setup {
    fn new(name: &str, keys: &[KeySpec]) -> Option<Self> {
        let dir = std::env::temp_dir().join(format!("dps-cli-hsm-{name}-{}", std::process::id()));
        let hsm = SoftHsm::create(&dir.join("hsm"), &[("gw", keys)])?;
        let pki = Arc::new(TestPki::generate().unwrap());
        std::fs::write(dir.join("ca.pem"), pki.ca_pem()).unwrap();
        std::fs::write(dir.join("pin"), format!("{PIN}\n")).unwrap();
        let issuing = Arc::new(IssuingCa::generate().unwrap());
        let broker = MockBroker::builder()
            .pki(pki.clone())
            .group_key(GROUP_KEY)
            .retry_after(0)
            .issue_certificates(issuing)
            .script(Script::new())
            .start()
            .unwrap();
        Some(Self {
            broker,
            pki,
            hsm,
            dir,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A certificate for `id` for the token's key `label`, written to `<id>.pem`.
    fn certify(&self, label: &str, id: &str) -> PathBuf {
        let public = self.path(&format!("{label}.pub.der"));
        self.hsm.run(
            self.hsm
                .tool("gw")
                .args(["--read-object", "--type", "pubkey", "--label", label, "-o"])
                .arg(&public),
        );
        let pem = self
            .pki
            .certify(id, &std::fs::read(&public).unwrap())
            .unwrap();
        let path = self.path(&format!("{id}.pem"));
        std::fs::write(&path, pem).unwrap();
        path
    }

    /// `dps <command>` at the broker, seeing the test's token.
    fn dps(&self, command: &str) -> Command {
        let mut dps = util::dps([command]);
        let (name, conf) = self.hsm.env();
        dps.env(name, conf)
            .args([
                "--endpoint",
                &format!("localhost:{}", self.broker.addr().port()),
            ])
            .args(["--id-scope", dps_mock_broker::DEFAULT_ID_SCOPE])
            .arg("--ca")
            .arg(self.path("ca.pem"));
        dps
    }

    /// `dps provision` of `id` with `--cert` and the token key `label`, module and PIN given
    /// by flags.
    fn provision_with_flags(&self, id: &str, label: &str, pin_file: &Path) -> Ran {
        let cert = self.certify(label, id);
        run(self
            .dps("provision")
            .args(["--registration-id", id, "--cert"])
            .arg(cert)
            .args(["--key", &format!("pkcs11:token=gw;object={label}")])
            .arg("--pkcs11-module")
            .arg(&self.hsm.module)
            .arg("--pin-file")
            .arg(pin_file))
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn provision_signs_with_a_token_key_named_by_its_uri() {
    let Some(s) = Setup::new("x509", &[("EC:prime256v1", "device-key", "01")]) else {
        return;
    };
    let out = s.provision_with_flags("hsm-cli", "device-key", &s.path("pin"));
    let out = out.expect(0);
    assert!(
        out.stdout_text().contains("hsm-cli is assigned to"),
        "{}",
        out.stdout_text()
    );
    let record = &s.broker.records()[0];
    assert_eq!(record.peer_cert_cn.as_deref(), Some("hsm-cli"));

    // The module and the PIN from the environment instead.
    let cert = s.path("hsm-cli.pem");
    let out = run(s
        .dps("provision")
        .args(["--registration-id", "hsm-cli", "--cert"])
        .arg(&cert)
        .args(["--key", "pkcs11:token=gw;object=device-key"])
        .env("DPS_PKCS11_MODULE", &s.hsm.module)
        .env("DPS_PKCS11_PIN", PIN));
    out.expect(0);
}

/// A wrong PIN, a missing PIN and a key the token lacks are each exit 2 before any
/// connection, named, and never echo the PIN.
#[test]
fn token_faults_are_exit_2_and_name_what_failed() {
    let Some(s) = Setup::new("faults", &[("EC:prime256v1", "device-key", "01")]) else {
        return;
    };
    let wrong = s.path("wrong-pin");
    std::fs::write(&wrong, "999999\n").unwrap();
    let out = s
        .provision_with_flags("hsm-cli", "device-key", &wrong)
        .expect(2);
    let stderr = out.stderr_text();
    assert!(
        stderr.contains("PIN of token `gw` is incorrect"),
        "{stderr}"
    );
    assert!(!stderr.contains("999999"), "{stderr}");

    let cert = s.path("hsm-cli.pem");
    let base = |key: &str| {
        let mut command = s.dps("provision");
        command
            .args(["--registration-id", "hsm-cli", "--cert"])
            .arg(&cert)
            .args(["--key", key])
            .arg("--pkcs11-module")
            .arg(&s.hsm.module);
        command
    };
    let out = run(&mut base("pkcs11:token=gw;object=device-key")).expect(2);
    assert!(
        out.stderr_text().contains("--pin-file or DPS_PKCS11_PIN"),
        "{}",
        out.stderr_text()
    );

    let out = run(base("pkcs11:token=gw;object=nothing").env("DPS_PKCS11_PIN", PIN)).expect(2);
    assert!(
        out.stderr_text()
            .contains("no private key in the token for pkcs11:token=gw;object=nothing"),
        "{}",
        out.stderr_text()
    );
    let out =
        run(base("pkcs11:token=gw;object=k?pin-value=1234").env("DPS_PKCS11_PIN", PIN)).expect(2);
    assert!(!out.stderr_text().contains("1234"), "{}", out.stderr_text());
    assert!(s.broker.records().is_empty(), "nothing connected");
}

/// `--issue-key`: the issued certificate's key is made in the token; the chain is written,
/// no key file is, and the summary names the key by its URI.
#[test]
fn issue_key_makes_the_certificates_key_in_the_token() {
    let Some(s) = Setup::new("issue", &[]) else {
        return;
    };
    let certs = s.path("issued");
    let out = run(s
        .dps("provision")
        .args(["--registration-id", "hsm-issued", "--group-key", GROUP_KEY])
        .arg("--issue-cert")
        .arg(&certs)
        .args([
            "--issue-key",
            "pkcs11:token=gw;object=issued",
            "--key-curve",
            "p256",
        ])
        .arg("--pkcs11-module")
        .arg(&s.hsm.module)
        .arg("--pin-file")
        .arg(s.path("pin")))
    .expect(0);
    let stdout = out.stdout_text();
    assert!(stdout.contains("certificate (issued)"), "{stdout}");
    assert!(
        stdout.contains("key: pkcs11:token=gw;object=issued;id=%"),
        "{stdout}"
    );
    assert!(stdout.contains("(in the token)"), "{stdout}");
    assert!(certs.join("hsm-issued.pem").exists());
    assert!(
        !certs.join("hsm-issued.key").exists(),
        "no key file for a token key"
    );
    let listing = s.hsm.run(
        s.hsm
            .tool("gw")
            .args(["--list-objects", "--type", "privkey"]),
    );
    assert!(listing.contains("label:      issued"), "{listing}");
}

/// `dps fleet` device lines name their keys by URI; every device is assigned.
#[test]
fn fleet_device_lines_take_token_keys() {
    let keys: [KeySpec; 3] = [
        ("EC:prime256v1", "key-0", "10"),
        ("EC:prime256v1", "key-1", "11"),
        ("EC:prime256v1", "key-2", "12"),
    ];
    let Some(s) = Setup::new("fleet", &keys) else {
        return;
    };
    let lines: String = (0..3)
        .map(|i| {
            let cert = s.certify(&format!("key-{i}"), &format!("hsm-fleet-{i}"));
            format!(
                "{{\"registration_id\":\"hsm-fleet-{i}\",\"cert\":\"{}\",\"key\":\"pkcs11:token=gw;object=key-{i}\"}}\n",
                cert.display()
            )
        })
        .collect();
    let devices = s.path("devices.jsonl");
    std::fs::write(&devices, lines).unwrap();
    let out_file = s.path("out.jsonl");
    let out = run(s
        .dps("fleet")
        .arg("--devices")
        .arg(&devices)
        .arg("--out")
        .arg(&out_file)
        .args(["--min-interval-ms", "0"])
        .env("DPS_PKCS11_MODULE", &s.hsm.module)
        .env("DPS_PKCS11_PIN", PIN))
    .expect(0);
    assert!(
        out.stdout_text().starts_with("3 assigned, 0 failed"),
        "{}",
        out.stdout_text()
    );
}
