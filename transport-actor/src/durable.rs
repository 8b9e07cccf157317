//! Files that survive a crash or a power cut: a device that was issued a certificate must not
//! wake up with half a key.
//!
//! A file is written beside its final name, synced, renamed over it, and the folder synced, so
//! the name holds either the old contents or the new, never a mix. Secrets are created mode
//! 0600 (on Unix) before a byte is written, so no other user can read them even for a moment.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Who may read a file [`write()`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readers {
    /// Anyone the umask allows (a certificate chain, an assignment).
    #[cfg_attr(
        not(feature = "issuance"),
        expect(dead_code, reason = "only an issued chain is written for anyone")
    )]
    Anyone,
    /// The owner only: mode 0600 on Unix (a private key, a cache that holds one).
    OwnerOnly,
}

/// Writes `contents` to `path` durably and atomically; see the module docs.
pub fn write(path: &Path, contents: &[u8], readers: Readers) -> io::Result<()> {
    let tmp = temporary_name(path);
    let result = write_synced(&tmp, contents, readers).and_then(|()| {
        std::fs::rename(&tmp, path)?;
        sync_folder(path)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn temporary_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp-{}", std::process::id()));
    PathBuf::from(name)
}

fn write_synced(path: &Path, contents: &[u8], readers: Readers) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if readers == Readers::OwnerOnly {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    if readers == Readers::OwnerOnly {
        // A file left by an earlier crash keeps its mode through `create`: set it again.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(contents)?;
    file.sync_all()
}

/// Makes the rename itself durable: on Unix a folder is synced by syncing it opened as a file
/// (other systems cannot open a folder so, and make renames durable themselves).
fn sync_folder(path: &Path) -> io::Result<()> {
    if cfg!(unix) {
        File::open(folder_of(path))?.sync_all()?;
    }
    Ok(())
}

/// The folder `path` is in: `.` for a bare file name.
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path of this process's own in the temporary folder; each test removes what it made.
    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("dps-durable-{}-{name}", std::process::id()))
    }

    #[test]
    fn a_file_is_replaced_whole_and_leaves_no_temporary() {
        let path = temp("replace.txt");
        write(&path, b"first", Readers::Anyone).unwrap();
        write(&path, b"second", Readers::Anyone).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert!(!temporary_name(&path).exists());
        #[cfg(unix)]
        {
            // A file for anyone gets the mode any new file gets here (the umask decides).
            use std::os::unix::fs::PermissionsExt;
            let probe = temp("probe.txt");
            std::fs::write(&probe, b"x").unwrap();
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), mode(&probe));
            std::fs::remove_file(&probe).unwrap();
        }
        std::fs::remove_file(&path).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_is_readable_by_its_owner_only_even_over_an_open_file() {
        use std::os::unix::fs::PermissionsExt;
        let path = temp("secret.key");
        // Someone left a world-readable file, and a temporary, behind.
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(temporary_name(&path), b"stale").unwrap();
        std::fs::set_permissions(
            temporary_name(&path),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        write(&path, b"key", Readers::OwnerOnly).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"key");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn the_folder_synced_is_the_files_own() {
        assert_eq!(folder_of(Path::new("cache.json")), Path::new("."));
        assert_eq!(folder_of(Path::new("state/cache.json")), Path::new("state"));
        assert_eq!(
            folder_of(Path::new("/var/lib/dps/cache.json")),
            Path::new("/var/lib/dps")
        );
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let path = temp("no-such-folder").join("file");
        assert!(write(&path, b"x", Readers::Anyone).is_err());
        let dir = temp("a-folder");
        std::fs::create_dir_all(dir.join("inside")).unwrap();
        // Renaming a file over a non-empty folder fails: the temporary must go.
        assert!(write(&dir, b"x", Readers::Anyone).is_err());
        assert!(!temporary_name(&dir).exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
