//! Where `dps provision` reads a symmetric key from, and the warnings that keep keys off the
//! command line.
//!
//! An argument is visible to every user of the machine (`ps`, `/proc/<pid>/cmdline`) and
//! stays in shell history. A file readable by the owner alone, or an environment variable
//! (readable only by the process's user), is not. Keys given the visible way still work,
//! with a warning on stderr, so existing scripts keep running.

use std::path::{Path, PathBuf};

/// The environment variable of an individual enrollment's key.
pub const SYMMETRIC_KEY_VAR: &str = "DPS_SYMMETRIC_KEY";
/// The environment variable of a group enrollment's key.
pub const GROUP_KEY_VAR: &str = "DPS_GROUP_KEY";

/// Which enrollment a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// An individual enrollment's key.
    Symmetric,
    /// A group enrollment's key.
    Group,
}

impl KeyKind {
    fn flag(self) -> &'static str {
        match self {
            KeyKind::Symmetric => "--symmetric-key",
            KeyKind::Group => "--group-key",
        }
    }

    fn variable(self) -> &'static str {
        match self {
            KeyKind::Symmetric => SYMMETRIC_KEY_VAR,
            KeyKind::Group => GROUP_KEY_VAR,
        }
    }
}

/// A key given on the command line: as the argument itself, or as a file to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyArg {
    /// `--symmetric-key KEY` / `--group-key KEY`: works, with a warning.
    Value(String),
    /// `--symmetric-key-file F` / `--group-key-file F`.
    File(PathBuf),
}

/// Reads `arg`, warning through `warn` when it is visible to other users (an argument, or a
/// file that others can read). The error names the file and never holds the key.
pub fn read(kind: KeyKind, arg: KeyArg, warn: &mut dyn FnMut(String)) -> Result<String, String> {
    match arg {
        KeyArg::Value(key) => {
            warn(format!(
                "warning: {} puts the key on the command line, where every user of this machine \
                 can read it (ps, /proc/*/cmdline); use {}-file or {} instead",
                kind.flag(),
                kind.flag(),
                kind.variable()
            ));
            Ok(key)
        }
        KeyArg::File(path) => read_file(&path, warn),
    }
}

/// The key in `variable` (`DPS_SYMMETRIC_KEY` or `DPS_GROUP_KEY`), when it is set and not
/// empty.
pub fn from_environment(kind: KeyKind) -> Option<String> {
    std::env::var(kind.variable())
        .ok()
        .map(|key| key.trim().to_owned())
        .filter(|key| !key.is_empty())
}

fn read_file(path: &Path, warn: &mut dyn FnMut(String)) -> Result<String, String> {
    let text = crate::setup::read(path)?;
    let key = text.trim();
    if key.is_empty() {
        return Err(format!("{} holds no key", path.display()));
    }
    #[cfg(unix)]
    if let Ok(metadata) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            warn(format!(
                "warning: {} can be read by other users (mode {mode:03o}); chmod 600 it",
                path.display()
            ));
        }
    }
    Ok(key.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(kind: KeyKind, arg: KeyArg) -> (Result<String, String>, Vec<String>) {
        let mut warnings = Vec::new();
        let key = read(kind, arg, &mut |w| warnings.push(w));
        (key, warnings)
    }

    #[test]
    fn an_argument_works_with_a_warning_that_names_the_safe_ways() {
        let (key, warnings) = collect(KeyKind::Group, KeyArg::Value("k".into()));
        assert_eq!(key.unwrap(), "k");
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("--group-key-file") && warnings[0].contains("DPS_GROUP_KEY"));
        assert!(
            !warnings[0].contains(" k "),
            "the warning never repeats the key"
        );
    }

    #[test]
    fn a_file_is_read_trimmed_and_judged_by_its_mode() {
        let dir = std::env::temp_dir().join(format!("dps-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, "c2VjcmV0\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            let (key, warnings) = collect(KeyKind::Symmetric, KeyArg::File(path.clone()));
            assert_eq!((key.unwrap().as_str(), warnings.len()), ("c2VjcmV0", 0));
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
            let (key, warnings) = collect(KeyKind::Symmetric, KeyArg::File(path.clone()));
            assert!(key.is_ok());
            assert!(warnings[0].contains("mode 640"), "{warnings:?}");
        }
        std::fs::write(&path, " \n").unwrap();
        let (key, _) = collect(KeyKind::Symmetric, KeyArg::File(path.clone()));
        assert!(key.unwrap_err().contains("holds no key"));
        let (key, _) = collect(KeyKind::Symmetric, KeyArg::File(dir.join("missing")));
        assert!(key.unwrap_err().contains("cannot read"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
