//! Running the `dps` binary as a test: with none of the developer's environment it reads, and
//! with the command and its output in the message when an expectation fails (as ripgrep's
//! `tests/util.rs` does).
#![allow(dead_code)]

use std::ffi::OsStr;
use std::ops::Deref;
use std::process::{Command, Output};

/// Variables `dps` (or what it links) reads besides the `DPS_*` ones: the proxy, the platform
/// trust store, the log filter. A developer with a proxy set would otherwise see failures.
const READ_BY_DPS: &[&str] = &[
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "RUST_LOG",
    // The PKCS#11 module SoftHSM2 finds its tokens by.
    "SOFTHSM2_CONF",
];

/// The `dps` binary with `args`, and none of the environment it reads: a test sets what it is
/// about with `.env(..)`.
pub fn dps<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(env!("CARGO_BIN_EXE_dps"));
    for (name, _) in std::env::vars_os() {
        let read = name
            .to_str()
            .is_some_and(|name| name.starts_with("DPS_") || READ_BY_DPS.contains(&name));
        if read {
            command.env_remove(&name);
        }
    }
    command.args(args);
    command
}

/// What a command did; derefs to its [`Output`].
pub struct Ran {
    command: String,
    output: Output,
}

impl Deref for Ran {
    type Target = Output;

    fn deref(&self) -> &Output {
        &self.output
    }
}

impl Ran {
    /// What it printed on standard output.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    /// What it printed on standard error.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Asserts that it exited with `code`; the message shows the command and both outputs.
    #[track_caller]
    pub fn expect(self, code: i32) -> Self {
        assert_eq!(
            self.output.status.code(),
            Some(code),
            "`{}` exited {:?}, not {code}\n--- stdout\n{}\n--- stderr\n{}",
            self.command,
            self.output.status,
            self.stdout_text(),
            self.stderr_text()
        );
        self
    }
}

/// Runs `command` to its end.
pub fn run(command: &mut Command) -> Ran {
    let output = command.output().expect("the command starts");
    let args: Vec<_> = command.get_args().map(|a| a.to_string_lossy()).collect();
    Ran {
        command: format!(
            "{} {}",
            command.get_program().to_string_lossy(),
            args.join(" ")
        ),
        output,
    }
}
