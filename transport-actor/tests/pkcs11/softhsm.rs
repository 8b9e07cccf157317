//! SoftHSM2 as the token of the tests: one configuration per test binary in a temporary
//! folder (`SOFTHSM2_CONF`), one token per test, so that tests run in parallel and never touch
//! the machine's own tokens. Keys are made with `pkcs11-tool`, as an operator would make them.
//!
//! SoftHSM2 reads its tokens when the module is initialised and never again, so every token of
//! the binary ([`TOKENS`]) is made before the first test loads the module.
//!
//! Where SoftHSM2 is not installed, [`hsm`] says `SKIPPED` and the test passes; under CI it
//! fails (`.ci/run` installs `softhsm2` and `opensc`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use dps_mock_broker::system_tool::output_or_skip;
use dps_transport_actor::pkcs11::{Pin, Pkcs11Uri};

/// The user PIN of every test token.
pub const PIN: &str = "4711";
/// The security officer's PIN.
const SO_PIN: &str = "0815";

/// Where Debian and its derivatives put the module.
const MODULES: [&str; 2] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
];

/// A key `pkcs11-tool` makes: its key type, label and id (hex).
type Key = (&'static str, &'static str, &'static str);

/// The tokens of the binary: each test's label, and the keys made in it before the test runs
/// (`pkcs11-tool` key type, label, id).
const TOKENS: &[(&str, &[Key])] = &[
    ("p256", &[("EC:prime256v1", "device-key", "01")]),
    ("p384", &[("EC:secp384r1", "device-key", "02")]),
    ("rsa", &[("rsa:2048", "device-key", "03")]),
    ("issue", &[]),
    ("renew", &[]),
    (
        "faults",
        &[
            ("EC:prime256v1", "device-key", "05"),
            ("EC:secp256k1", "k1-key", "06"),
        ],
    ),
    ("wrong-pin", &[("EC:prime256v1", "device-key", "07")]),
    ("relogin", &[("EC:prime256v1", "device-key", "08")]),
    ("vanish", &[("EC:prime256v1", "device-key", "09")]),
    ("cli", &[("EC:prime256v1", "device-key", "0a")]),
];

/// The test binary's SoftHSM2: its module and its token folder.
pub struct SoftHsm {
    pub module: PathBuf,
    pub dir: PathBuf,
}

/// The SoftHSM2 of this test binary, set up on first use; `None` (after `SKIPPED`) where the
/// tools are missing outside CI.
pub fn hsm() -> Option<&'static SoftHsm> {
    static HSM: OnceLock<Option<SoftHsm>> = OnceLock::new();
    HSM.get_or_init(SoftHsm::set_up).as_ref()
}

impl SoftHsm {
    fn set_up() -> Option<Self> {
        // Both tools are needed; each says SKIPPED (or fails under CI) when missing.
        output_or_skip(Command::new("softhsm2-util").arg("--version"))?;
        output_or_skip(Command::new("pkcs11-tool").arg("--help"))?;
        let module = MODULES.iter().map(PathBuf::from).find(|m| m.exists())?;
        let dir = std::env::temp_dir().join(format!("dps-softhsm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tokens")).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.join("tokens").display()
            ),
        )
        .unwrap();
        // SAFETY: set once, before the module is first loaded by this process (it reads the
        // variable in C_Initialize); nothing else in the test binary writes the environment.
        unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
        let hsm = Self { module, dir };
        for (token, keys) in TOKENS {
            hsm.token(token);
            for (key_type, label, id) in *keys {
                hsm.keypair(token, key_type, label, id);
            }
        }
        Some(hsm)
    }

    /// A new token labelled `label`, with the test PINs.
    fn token(&self, label: &str) {
        self.run(Command::new("softhsm2-util").args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            PIN,
            "--so-pin",
            SO_PIN,
        ]));
    }

    /// A key pair made in `token` by `pkcs11-tool` (`EC:prime256v1`, `EC:secp384r1`,
    /// `rsa:2048` ...), labelled `label` with id `id` (hex).
    fn keypair(&self, token: &str, key_type: &str, label: &str, id: &str) {
        self.run(self.tool(token).args([
            "--keypairgen",
            "--key-type",
            key_type,
            "--label",
            label,
            "--id",
            id,
        ]));
    }

    /// `pkcs11-tool` on `token`, logged in.
    pub fn tool(&self, token: &str) -> Command {
        let mut command = Command::new("pkcs11-tool");
        command.arg("--module").arg(&self.module).args([
            "--token-label",
            token,
            "--login",
            "--pin",
            PIN,
        ]);
        command
    }

    /// The URI of `object` in `token`, with this module.
    pub fn uri(&self, token: &str, object: &str) -> Pkcs11Uri {
        format!("pkcs11:token={token};object={object}")
            .parse()
            .unwrap()
    }

    pub fn pin(&self) -> Pin {
        Pin::new(PIN).unwrap()
    }

    pub fn module(&self) -> Option<&Path> {
        Some(&self.module)
    }

    fn run(&self, command: &mut Command) -> String {
        let out = command
            .env("SOFTHSM2_CONF", self.dir.join("softhsm2.conf"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{command:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
