//! Running a system tool from a test (openssl, tinyproxy): a real part where the machine has it.
//!
//! A developer's machine may lack the tool; the test then says `SKIPPED` and passes. CI
//! installs every tool (`.ci/run`), so there a missing tool fails the test instead: a missing
//! install step cannot hide behind a skip. "CI" is the `CI` environment variable being set to
//! anything but an empty string, `0` or `false`.

use std::ffi::OsStr;
use std::process::{Child, Command, Output};

/// Runs `command` to its end and returns what it printed; `None` where its program cannot be
/// started here (after printing `SKIPPED`). Under CI, a program that cannot be started panics.
pub fn output_or_skip(command: &mut Command) -> Option<Output> {
    command
        .output()
        .map_err(|e| skip(command.get_program(), &e))
        .ok()
}

/// Starts `command`; `None` where its program cannot be started here (after printing
/// `SKIPPED`). Under CI, a program that cannot be started panics.
pub fn spawn_or_skip(command: &mut Command) -> Option<Child> {
    command
        .spawn()
        .map_err(|e| skip(command.get_program(), &e))
        .ok()
}

/// Whether the tests run under CI, where every tool must be present.
fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

/// Says `SKIPPED` for `program`, which cannot be used here; under CI, panics.
pub(crate) fn skip(program: &OsStr, error: &std::io::Error) {
    let program = program.to_string_lossy();
    assert!(
        !under_ci(),
        "{program} cannot be run here ({error}), and CI must have it: `.ci/run` installs it"
    );
    println!("SKIPPED: {program} cannot be run here ({error}); `.ci/run` installs it");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_that_exists_runs_and_one_that_does_not_is_skipped_outside_ci() {
        if under_ci() {
            let missing = std::panic::catch_unwind(|| {
                output_or_skip(&mut Command::new("dps-no-such-tool-anywhere"))
            });
            assert!(missing.is_err(), "under CI a missing tool fails");
        } else {
            assert!(output_or_skip(&mut Command::new("dps-no-such-tool-anywhere")).is_none());
            assert!(spawn_or_skip(&mut Command::new("dps-no-such-tool-anywhere")).is_none());
        }
        let out = output_or_skip(Command::new("sh").args(["-c", "echo here"])).unwrap();
        assert_eq!(out.stdout, b"here\n");
    }
}
