//! The out file: the run's memory, one JSON line per device outcome.
//!
//! Lines are group-committed: the outcomes ready together are written in one `write` and made
//! durable with one `fdatasync`, and only then counted as done. A killed process leaves whole
//! lines only (each batch is one append); a power cut mid-write can leave a torn last line,
//! which the next run sets aside in `<out>.torn` and cuts from the file, so it is never misread
//! and the file holds whole lines again. A rerun skips the devices the file shows assigned.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::OutLine;
use crate::outcome::Outcome;

/// The out file, open to append.
pub(crate) struct OutFile {
    file: File,
    path: PathBuf,
    /// Lines written by [`push`](Self::push), not yet committed.
    batch: String,
    batched: Vec<Outcome>,
}

impl OutFile {
    /// Opens (or makes) `path` to append, first setting a torn last line aside.
    pub(crate) fn open(path: &Path) -> Result<Self, String> {
        let cannot = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(cannot)?;
        let text = std::fs::read(path).map_err(cannot)?;
        if text.last().is_some_and(|&b| b != b'\n') {
            let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let torn_path = torn_path(path);
            let mut torn = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&torn_path)
                .map_err(cannot)?;
            torn.write_all(&text[whole..])
                .and_then(|()| torn.write_all(b"\n"))
                .and_then(|()| torn.sync_data())
                .map_err(cannot)?;
            file.set_len(whole as u64)
                .and_then(|()| file.sync_data())
                .map_err(cannot)?;
            eprintln!(
                "{} ended in a torn line (a write cut short); it is set aside in {}",
                path.display(),
                torn_path.display()
            );
        }
        Ok(Self {
            file,
            path: path.to_owned(),
            batch: String::new(),
            batched: Vec::new(),
        })
    }

    /// Adds `line` to the batch.
    pub(crate) fn push(&mut self, line: &OutLine) -> Result<(), String> {
        let text = serde_json::to_string(line).map_err(|e| e.to_string())?;
        self.batch.push_str(&text);
        self.batch.push('\n');
        self.batched.push(line.outcome);
        Ok(())
    }

    /// Writes the batch in one append and syncs it; returns the outcomes now durable.
    pub(crate) fn commit(&mut self) -> Result<Vec<Outcome>, String> {
        if self.batch.is_empty() {
            return Ok(Vec::new());
        }
        self.file
            .write_all(self.batch.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
        self.batch.clear();
        Ok(std::mem::take(&mut self.batched))
    }
}

/// Where a torn last line of `out` is set aside.
pub(crate) fn torn_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".torn");
    PathBuf::from(name)
}

/// The devices the out file shows assigned; a line that does not parse is skipped.
pub(crate) fn assigned_in(path: &Path) -> Result<HashSet<String>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str::<OutLine>(line).ok())
        .filter(|line| line.outcome == Outcome::Assigned)
        .map(|line| line.registration_id)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dps_messages::ProvisioningError;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("dps-out-file-{name}-{}", std::process::id()))
    }

    fn line(id: &str, outcome: Outcome) -> OutLine {
        OutLine {
            registration_id: id.into(),
            outcome,
            assigned_hub: None,
            device_id: None,
            error: None,
            elapsed_ms: 1,
        }
    }

    #[test]
    fn a_torn_last_line_is_set_aside_and_never_misread() {
        let path = temp("torn.jsonl");
        let torn = torn_path(&path);
        let _ = std::fs::remove_file(&torn);
        let assigned = r#"{"registration_id":"a","outcome":"assigned","elapsed_ms":1}"#;
        let failed = r#"{"registration_id":"b","outcome":"unauthorized","elapsed_ms":1}"#;
        // Cut mid-write: the line names `c` as assigned, but is not whole.
        let fragment = r#"{"registration_id":"c","outcome":"assigned","ela"#;
        std::fs::write(&path, format!("{assigned}\n{failed}\n{fragment}")).unwrap();
        let mut out = OutFile::open(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&torn).unwrap(),
            format!("{fragment}\n")
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{assigned}\n{failed}\n")
        );
        assert_eq!(assigned_in(&path).unwrap(), HashSet::from(["a".to_owned()]));

        // One batch: one write of whole lines, counted when synced.
        out.push(&line("c", Outcome::Assigned)).unwrap();
        out.push(&line(
            "d",
            Outcome::of(&Err(ProvisioningError::OperationCancelled)),
        ))
        .unwrap();
        let committed = out.commit().unwrap();
        assert_eq!(committed.len(), 2);
        assert!(out.commit().unwrap().is_empty(), "nothing left to commit");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.lines()
                .all(|l| serde_json::from_str::<OutLine>(l).is_ok())
        );
        assert_eq!(assigned_in(&path).unwrap().len(), 2);
        // A file that ends whole is left alone.
        drop(out);
        OutFile::open(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        for p in [&path, &torn] {
            std::fs::remove_file(p).unwrap();
        }
        assert!(assigned_in(&temp("missing")).unwrap().is_empty());
    }
}
