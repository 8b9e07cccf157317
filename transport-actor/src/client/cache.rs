//! The assignment cache: a restarted device that was assigned before does not provision again.
//!
//! One JSON file per device, written atomically. Only a complete assignment (a hub and a device
//! id) is saved, and only one is used: an entry that lacks either, or belongs to another device,
//! is ignored.

use std::path::{Path, PathBuf};

use dps_messages::{RegistrationRequest, RegistrationResult, RegistrationStatus};
use serde::{Deserialize, Serialize};

/// What the cache file holds.
#[derive(Serialize, Deserialize)]
struct Cached {
    id_scope: String,
    registration_id: String,
    result: RegistrationResult,
}

/// The assignment cached at `path` for `request`'s device: `Ok(None)` when there is none for it,
/// an error that says why when the file cannot be used.
pub(super) fn load(
    path: &Path,
    request: &RegistrationRequest,
) -> Result<Option<RegistrationResult>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let cached: Cached = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let same_device =
        cached.id_scope == request.id_scope && cached.registration_id == request.registration_id;
    if !same_device || cached.result.status != RegistrationStatus::Assigned {
        return Ok(None);
    }
    cached
        .result
        .validate_assignment()
        .map_err(|e| format!("the cached result is not a usable assignment: {e}"))?;
    Ok(Some(cached.result))
}

/// Writes the cache atomically: a temporary file beside it, then a rename.
pub(super) fn save(
    path: &Path,
    request: &RegistrationRequest,
    result: &RegistrationResult,
) -> std::io::Result<()> {
    let cached = Cached {
        id_scope: request.id_scope.clone(),
        registration_id: request.registration_id.clone(),
        result: result.clone(),
    };
    let text = serde_json::to_string_pretty(&cached).map_err(std::io::Error::other)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn result(body: serde_json::Value) -> RegistrationResult {
        serde_json::from_value(body).unwrap()
    }

    fn assigned() -> RegistrationResult {
        result(
            json!({"status": "assigned", "registrationState": {"assignedHub": "h", "deviceId": "d"}}),
        )
    }

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("dps-cache-{name}-{}.json", std::process::id()))
    }

    #[test]
    fn the_cache_round_trips_and_belongs_to_one_device() {
        let path = temp("round-trip");
        let request = RegistrationRequest::new("scope", "dev");
        assert_eq!(load(&path, &request), Ok(None));
        save(&path, &request, &assigned()).unwrap();
        assert_eq!(load(&path, &request).unwrap(), Some(assigned()));
        assert_eq!(
            load(&path, &RegistrationRequest::new("scope", "other")).unwrap(),
            None
        );
        std::fs::write(&path, "{broken").unwrap();
        assert!(load(&path, &request).is_err());
        std::fs::remove_file(&path).unwrap();
        // A missing file is no cache; one that cannot be read is an error to report.
        let dir = temp("a-directory");
        std::fs::create_dir_all(&dir).unwrap();
        assert!(load(&dir, &request).is_err());
        std::fs::remove_dir(&dir).unwrap();
    }

    /// An entry without a hub (written by an older version, or by hand) is never used.
    #[test]
    fn an_assignment_without_a_hub_is_not_used() {
        let path = temp("no-hub");
        let request = RegistrationRequest::new("scope", "dev");
        for body in [
            json!({"status": "assigned"}),
            json!({"status": "assigned", "registrationState": {"deviceId": "d"}}),
        ] {
            save(&path, &request, &result(body)).unwrap();
            let error = load(&path, &request).unwrap_err();
            assert!(
                error.contains("assignedHub") || error.contains("registrationState"),
                "{error}"
            );
        }
        std::fs::remove_file(&path).unwrap();
    }
}
