//! The service's answers as the device reads them.

use super::*;
use serde_json::json;

#[test]
fn statuses_display_as_on_the_wire() {
    assert_eq!(RegistrationStatus::Assigning.to_string(), "assigning");
    assert_eq!(RegistrationStatus::Other("x".into()).to_string(), "x");
}

#[test]
fn parses_a_full_assignment_and_keeps_unknown_fields() {
    let body = json!({
        "operationId": "4.abc",
        "status": "assigned",
        "future": 1,
        "registrationState": {
            "registrationId": "dev",
            "createdDateTimeUtc": "2026-01-01T00:00:00Z",
            "assignedHub": "hub.azure-devices.net",
            "deviceId": "dev",
            "status": "assigned",
            "substatus": "initialAssignment",
            "lastUpdatedDateTimeUtc": "2026-01-01T00:00:01Z",
            "etag": "IjA=",
            "payload": {"x": 1},
            "x509": {"enrollmentGroupId": "g"},
            "newField": [1]
        }
    });
    let r: RegistrationResult = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(r.operation_id.as_deref(), Some("4.abc"));
    assert_eq!(r.status, RegistrationStatus::Assigned);
    assert_eq!(r.extra.get("future"), Some(&json!(1)));
    let s = r.registration_state.as_ref().unwrap();
    assert_eq!(s.assigned_hub.as_deref(), Some("hub.azure-devices.net"));
    assert_eq!(s.device_id.as_deref(), Some("dev"));
    assert_eq!(s.substatus.as_deref(), Some("initialAssignment"));
    assert_eq!(s.payload, Some(json!({"x": 1})));
    assert_eq!(s.x509, Some(json!({"enrollmentGroupId": "g"})));
    assert_eq!(s.extra.get("newField"), Some(&json!([1])));
    // Nothing is lost on the way back out.
    assert_eq!(serde_json::to_value(&r).unwrap(), body);
}

#[test]
fn status_knows_the_documented_values_and_keeps_others() {
    for (text, status) in [
        ("unassigned", RegistrationStatus::Unassigned),
        ("assigning", RegistrationStatus::Assigning),
        ("assigned", RegistrationStatus::Assigned),
        ("failed", RegistrationStatus::Failed),
        ("disabled", RegistrationStatus::Disabled),
        ("registering", RegistrationStatus::Registering),
        ("new", RegistrationStatus::Other("new".into())),
    ] {
        let parsed: RegistrationStatus = serde_json::from_value(json!(text)).unwrap();
        assert_eq!(parsed, status);
        assert_eq!(serde_json::to_value(&status).unwrap(), json!(text));
    }
    assert!(!RegistrationStatus::Assigning.is_final());
    assert!(!RegistrationStatus::Registering.is_final());
    assert!(RegistrationStatus::Assigned.is_final());
    assert!(RegistrationStatus::Other("x".into()).is_final());
}

#[test]
fn error_codes_read_as_numbers_or_numeric_strings() {
    let state: RegistrationState =
        serde_json::from_value(json!({"errorCode": 400209, "errorMessage": "m"})).unwrap();
    assert_eq!(state.error_code, Some(400209));
    let state: RegistrationState = serde_json::from_value(json!({"errorCode": "42"})).unwrap();
    assert_eq!(state.error_code, Some(42));
    let state: RegistrationState = serde_json::from_value(json!({"errorCode": {}})).unwrap();
    assert_eq!(state.error_code, None);
}

#[test]
fn an_assignment_must_name_the_hub_and_the_device() {
    let check = |body: Value| {
        serde_json::from_value::<RegistrationResult>(body)
            .unwrap()
            .validate_assignment()
    };
    let missing = |missing| Err(ProtocolError::IncompleteAssignment { missing });
    assert_eq!(
        check(
            json!({"status": "assigned", "registrationState": {"assignedHub": "h", "deviceId": "d"}})
        ),
        Ok(())
    );
    assert_eq!(
        check(json!({"status": "assigned"})),
        missing("registrationState")
    );
    assert_eq!(
        check(json!({"status": "assigned", "registrationState": {"deviceId": "d"}})),
        missing("registrationState.assignedHub")
    );
    assert_eq!(
        check(
            json!({"status": "assigned", "registrationState": {"assignedHub": "", "deviceId": "d"}})
        ),
        missing("registrationState.assignedHub")
    );
    assert_eq!(
        check(json!({"status": "assigned", "registrationState": {"assignedHub": "h"}})),
        missing("registrationState.deviceId")
    );
    // Other statuses claim no assignment.
    assert_eq!(check(json!({"status": "assigning"})), Ok(()));
    assert_eq!(check(json!({"status": "failed"})), Ok(()));
}

#[test]
fn a_result_needs_a_status() {
    assert!(serde_json::from_value::<RegistrationResult>(json!({"operationId": "x"})).is_err());
}

/// A throttled answer (429) is a retry-later one; so is a 5xx; nothing below 429 is.
#[test]
fn throttled_and_retry_later_answers_are_told_by_their_status() {
    let response = |status_code| RegistrationResponse {
        status_code,
        result: RegistrationResult::pending(RegistrationStatus::Registering, None),
        polling_interval: Duration::from_secs(1),
        retry_after: None,
        invalid_retry_after: None,
    };
    for (status, throttled, retry_later) in [
        (200, false, false),
        (202, false, false),
        (428, false, false),
        (429, true, true),
        (430, false, true),
        (503, false, true),
    ] {
        assert_eq!(response(status).is_throttled(), throttled, "{status}");
        assert_eq!(response(status).is_retry_later(), retry_later, "{status}");
    }
}
