//! Issue 20, item 2: an issuing CA whose key is in any form openssl writes. The keys and CA
//! certificates are made by openssl itself, as a user makes them; the issued certificates are
//! checked by `openssl verify`. Where openssl is missing the tests say SKIPPED (and fail
//! under CI, which installs it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use dps_messages::CertificateRequest;
use dps_mock_broker::IssuingCa;
use dps_mock_broker::system_tool::output_or_skip;

/// How openssl makes each form of key: SEC1 (`ecparam -genkey` writes `EC PARAMETERS` and
/// `EC PRIVATE KEY` by default), PKCS#1 RSA, and PKCS#8 for comparison.
const FORMS: &[(&str, &[&str])] = &[
    ("sec1-p256", &["ecparam", "-genkey", "-name", "prime256v1"]),
    (
        "sec1-p384",
        &["ecparam", "-genkey", "-name", "secp384r1", "-noout"],
    ),
    ("pkcs1-rsa", &["genrsa", "-traditional", "2048"]),
    (
        "pkcs8-p256",
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ],
    ),
];

/// A folder of this test's own.
fn folder(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dps-ca-keys-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs openssl with `args` in `dir`; `None` where openssl is missing.
fn openssl(dir: &Path, args: &[&str]) -> Option<String> {
    let out = output_or_skip(Command::new("openssl").args(args).current_dir(dir))?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        text(&out.stderr)
    );
    Some(text(&out.stdout))
}

/// A CA key of `form` and a self-signed CA certificate for it, made by openssl in `dir`:
/// (`ca.pem`, `<form>.key`).
fn openssl_ca(dir: &Path, form: &str, make: &[&str]) -> Option<(PathBuf, PathBuf)> {
    let key = format!("{form}.key");
    let cert = format!("{form}.pem");
    // `-out` right after the command: genrsa takes its key size last.
    let mut args = vec![make[0], "-out", &key];
    args.extend(&make[1..]);
    openssl(dir, &args)?;
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &key,
            "-subj",
            "/CN=openssl issuing CA",
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            &cert,
        ],
    )?;
    Some((dir.join(cert), dir.join(key)))
}

#[test]
fn an_issuing_ca_key_in_any_form_openssl_writes_issues_certificates_openssl_verifies() {
    let dir = folder("lib");
    for (form, make) in FORMS {
        let Some((cert, key)) = openssl_ca(&dir, form, make) else {
            return;
        };
        let key_pem = std::fs::read_to_string(&key).unwrap();
        let expected_label = match *form {
            "sec1-p256" | "sec1-p384" => "BEGIN EC PRIVATE KEY",
            "pkcs1-rsa" => "BEGIN RSA PRIVATE KEY",
            _ => "BEGIN PRIVATE KEY",
        };
        assert!(key_pem.contains(expected_label), "{form}: {key_pem:.40}");
        let ca = IssuingCa::from_pem(&std::fs::read_to_string(&cert).unwrap(), &key_pem)
            .unwrap_or_else(|e| panic!("{form}: {e}"));
        let ca = std::sync::Arc::new(ca);

        let csr = CertificateRequest::generate("dev-1").unwrap();
        let chain = ca
            .issue(
                &csr.csr_base64(),
                "dev-1",
                Duration::from_secs(3600),
                SystemTime::now(),
            )
            .unwrap();
        let issued = csr.accept(&chain, SystemTime::now()).unwrap();
        let leaf = dir.join(format!("{form}-leaf.pem"));
        std::fs::write(&leaf, issued.chain_pem()).unwrap();
        let verified = openssl(
            &dir,
            &[
                "verify",
                "-CAfile",
                cert.to_str().unwrap(),
                leaf.to_str().unwrap(),
            ],
        )
        .unwrap();
        assert!(verified.contains(": OK"), "{form}: {verified}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The command line, as the issue met it: `--issuing-ca-key` with a SEC1 or PKCS#1 key
/// refused to start with "Could not parse key pair".
#[test]
fn the_broker_starts_with_an_issuing_ca_key_in_any_form_and_names_the_forms_when_none_fits() {
    let dir = folder("cli");
    let broker = |cert: &Path, key: &Path| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dps-mock-broker"))
            .args(["--listen", "127.0.0.1:0", "--no-ws", "--issuing-ca-cert"])
            .arg(cert)
            .arg("--issuing-ca-key")
            .arg(key)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The first line says it listens, or why it will not: then it exits.
        let mut first = String::new();
        let stdout = child.stdout.take().unwrap();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut first).unwrap();
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        (first, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    for (form, make) in FORMS {
        let Some((cert, key)) = openssl_ca(&dir, form, make) else {
            return;
        };
        let (stdout, stderr) = broker(&cert, &key);
        assert!(
            stdout.contains("listening") && stdout.contains("issuing certificates"),
            "{form}: {stdout} {stderr}"
        );
    }
    let (cert, _) = openssl_ca(&dir, FORMS[0].0, FORMS[0].1).unwrap();
    let not_a_key = dir.join("not-a-key.pem");
    std::fs::copy(&cert, &not_a_key).unwrap();
    let (stdout, stderr) = broker(&cert, &not_a_key);
    assert!(!stdout.contains("listening"), "{stdout}");
    for form in ["PKCS#8", "SEC1", "PKCS#1"] {
        assert!(stderr.contains(form), "{stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
