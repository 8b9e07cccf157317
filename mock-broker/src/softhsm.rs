//! SoftHSM2 as the PKCS#11 token of tests: a configuration of its own in a folder the test
//! chooses (`SOFTHSM2_CONF`), tokens with known PINs, and keys made by `pkcs11-tool` as an
//! operator would make them. Nothing touches the machine's own tokens.
//!
//! SoftHSM2 reads its tokens when a process initialises the module, and never again: a test
//! process that loads the module itself makes every token it needs first. A test that runs the
//! `dps` command gives each run the configuration in its environment ([`SoftHsm::env`]).
//!
//! Where SoftHSM2 or OpenSC's `pkcs11-tool` is missing, [`SoftHsm::create`] says `SKIPPED`;
//! under CI it fails (`.ci/run` installs `softhsm2` and `opensc`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::system_tool::output_or_skip;

/// The user PIN of every test token.
pub const PIN: &str = "4711";
/// The security officer's PIN of every test token.
pub const SO_PIN: &str = "0815";

/// Where Debian and its derivatives put the module.
const MODULES: [&str; 2] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
];

/// A key for `pkcs11-tool --keypairgen` to make: its key type (`EC:prime256v1`,
/// `EC:secp384r1`, `rsa:2048` ...), label and id (hex).
pub type KeySpec = (&'static str, &'static str, &'static str);

/// A SoftHSM2 of a test's own.
#[derive(Debug)]
pub struct SoftHsm {
    /// The module (`libsofthsm2.so`).
    pub module: PathBuf,
    /// The folder holding the configuration and the tokens.
    pub dir: PathBuf,
}

impl SoftHsm {
    /// A configuration in `dir` (made afresh) and, in it, each token of `tokens` (a label and
    /// the keys made in it) with the test PINs; `None`, after `SKIPPED`, where the tools are
    /// missing outside CI.
    pub fn create(dir: &Path, tokens: &[(&str, &[KeySpec])]) -> Option<Self> {
        output_or_skip(Command::new("softhsm2-util").arg("--version"))?;
        output_or_skip(Command::new("pkcs11-tool").arg("--help"))?;
        let Some(module) = MODULES.iter().map(PathBuf::from).find(|m| m.exists()) else {
            let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
            crate::system_tool::skip("libsofthsm2.so".as_ref(), &missing);
            return None;
        };
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("tokens")).expect("a folder for the tokens");
        std::fs::write(
            dir.join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.join("tokens").display()
            ),
        )
        .expect("the configuration written");
        let hsm = Self {
            module,
            dir: dir.to_owned(),
        };
        for (label, keys) in tokens {
            hsm.run(Command::new("softhsm2-util").args([
                "--init-token",
                "--free",
                "--label",
                label,
                "--pin",
                PIN,
                "--so-pin",
                SO_PIN,
            ]));
            for (key_type, object, id) in *keys {
                hsm.run(hsm.tool(label).args([
                    "--keypairgen",
                    "--key-type",
                    key_type,
                    "--label",
                    object,
                    "--id",
                    id,
                ]));
            }
        }
        Some(hsm)
    }

    /// The configuration file: what `SOFTHSM2_CONF` names.
    pub fn conf(&self) -> PathBuf {
        self.dir.join("softhsm2.conf")
    }

    /// The environment a process needs to see these tokens.
    pub fn env(&self) -> (&'static str, PathBuf) {
        ("SOFTHSM2_CONF", self.conf())
    }

    /// `pkcs11-tool` on `token`, logged in, in this configuration.
    pub fn tool(&self, token: &str) -> Command {
        let mut command = Command::new("pkcs11-tool");
        command
            .arg("--module")
            .arg(&self.module)
            .args(["--token-label", token, "--login", "--pin", PIN])
            .env("SOFTHSM2_CONF", self.conf());
        command
    }

    /// Runs `command` in this configuration; panics with its output when it fails.
    pub fn run(&self, command: &mut Command) -> String {
        let out = command
            .env("SOFTHSM2_CONF", self.conf())
            .output()
            .expect("the tool runs");
        assert!(
            out.status.success(),
            "{command:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
