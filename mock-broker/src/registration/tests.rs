//! The tests of `registration`.

use std::time::Duration;

use super::*;

const MIGRATE: ReprovisionPolicy = ReprovisionPolicy {
    update_hub_assignment: true,
    migrate_device_data: true,
};
const RESET: ReprovisionPolicy = ReprovisionPolicy {
    update_hub_assignment: true,
    migrate_device_data: false,
};
const NEVER: ReprovisionPolicy = ReprovisionPolicy {
    update_hub_assignment: false,
    migrate_device_data: true,
};

fn assign(
    slot: &mut Option<RegistrationRecord>,
    hub: &str,
    policy: ReprovisionPolicy,
    t: u64,
) -> RegistrationRecord {
    let decision = Decision::Assigned {
        hub: hub.into(),
        device_id: "dev".into(),
        payload: None,
        policy,
    };
    record(
        slot,
        "dev",
        None,
        decision,
        SystemTime::UNIX_EPOCH + Duration::from_secs(t),
    )
}

#[test]
fn the_first_assignment_is_initial_and_again_to_the_same_hub_keeps_it() {
    let mut slot = None;
    let first = assign(&mut slot, "a", MIGRATE, 1);
    assert_eq!(
        (first.assigned_hub.as_deref(), first.substatus),
        (Some("a"), Some(Substatus::InitialAssignment))
    );
    let again = assign(&mut slot, "a", MIGRATE, 2);
    assert_eq!(again.substatus, Some(Substatus::InitialAssignment));
    assert_eq!(again.created, first.created);
    assert!(again.last_updated > first.last_updated);
    assert_ne!(again.etag, first.etag);
}

#[test]
fn moving_migrates_or_resets_by_policy_and_back_is_reprovisioned_to_initial() {
    let mut slot = None;
    assign(&mut slot, "a", MIGRATE, 1);
    assert_eq!(
        assign(&mut slot, "b", MIGRATE, 2).substatus,
        Some(Substatus::DeviceDataMigrated)
    );
    assert_eq!(
        assign(&mut slot, "c", RESET, 3).substatus,
        Some(Substatus::DeviceDataReset)
    );
    let back = assign(&mut slot, "a", RESET, 4);
    assert_eq!(back.assigned_hub.as_deref(), Some("a"));
    assert_eq!(
        back.substatus,
        Some(Substatus::ReprovisionedToInitialAssignment)
    );
}

#[test]
fn never_reprovision_keeps_the_hub() {
    let mut slot = None;
    assign(&mut slot, "a", MIGRATE, 1);
    let stayed = assign(&mut slot, "b", NEVER, 2);
    assert_eq!(stayed.assigned_hub.as_deref(), Some("a"));
    assert_eq!(stayed.substatus, Some(Substatus::InitialAssignment));
}

#[test]
fn a_failure_or_disabled_keeps_the_hub_and_a_deleted_record_starts_again() {
    let mut slot = None;
    assign(&mut slot, "a", MIGRATE, 1);
    let failed = record(
        &mut slot,
        "dev",
        Some("g"),
        Decision::Failed {
            code: 400_209,
            message: "webhook".into(),
        },
        SystemTime::UNIX_EPOCH,
    );
    assert_eq!(
        (failed.status, failed.error_code),
        (RegistrationStatus::Failed, Some(400_209))
    );
    assert_eq!(failed.assigned_hub.as_deref(), Some("a"));
    let disabled = record(
        &mut slot,
        "dev",
        None,
        Decision::Disabled,
        SystemTime::UNIX_EPOCH,
    );
    assert_eq!(
        (disabled.status, disabled.error_code),
        (RegistrationStatus::Disabled, None)
    );
    assert_eq!(
        assign(&mut slot, "b", MIGRATE, 5).substatus,
        Some(Substatus::DeviceDataMigrated)
    );
    let mut deleted = None;
    assert_eq!(
        assign(&mut deleted, "b", MIGRATE, 6).substatus,
        Some(Substatus::InitialAssignment)
    );
}

#[test]
fn the_record_reads_as_dps_device_registration_state() {
    let mut slot = None;
    let state = assign(&mut slot, "a", MIGRATE, 1_591_921_306).state();
    assert_eq!(state["registrationId"], "dev");
    assert_eq!(state["assignedHub"], "a");
    assert_eq!(state["deviceId"], "dev");
    assert_eq!(state["status"], "assigned");
    assert_eq!(state["substatus"], "initialAssignment");
    assert_eq!(state["createdDateTimeUtc"], "2020-06-12T00:21:46.000Z");
    assert!(state["etag"].as_str().is_some_and(|e| e.starts_with('"')));
    assert!(state.get("errorCode").is_none());
}

#[test]
fn the_records_are_bounded_and_the_oldest_made_go_first() {
    let mut records = Registrations::with_max(2);
    let assigned = || Decision::Assigned {
        hub: "a".into(),
        device_id: "d".into(),
        payload: None,
        policy: MIGRATE,
    };
    let t = SystemTime::UNIX_EPOCH;
    records.write("one", None, assigned(), t);
    records.write("Two", None, assigned(), t);
    records.write("ONE", None, assigned(), t); // an update: still two records
    assert_eq!(records.all().count(), 2);
    records.write("three", None, assigned(), t);
    assert!(records.get("one").is_none(), "the oldest made went first");
    assert!(records.get("two").is_some() && records.get("THREE").is_some());
    // Deleted records' ids do not pile up.
    for i in 0..20 {
        let id = format!("d{i}");
        records.write(&id, None, assigned(), t);
        records.remove(&id);
    }
    assert!(records.order.len() <= 2 * 2 + 1, "{}", records.order.len());
    assert_eq!(
        records.get("three").map(|r| r.assigned_hub.as_deref()),
        Some(Some("a"))
    );
}

#[test]
fn deleted_ids_are_compacted_only_past_twice_the_cap() {
    let mut records = Registrations::with_max(10);
    let t = SystemTime::UNIX_EPOCH;
    let assigned = || Decision::Assigned {
        hub: "a".into(),
        device_id: "d".into(),
        payload: None,
        policy: MIGRATE,
    };
    for i in 0..5 {
        records.write(&format!("keep-{i}"), None, assigned(), t);
    }
    // Each cycle makes a record and deletes it: the live ones stay five, under the cap, and the
    // order grows by one id a cycle...
    let mut lengths = Vec::new();
    for i in 0..17 {
        let id = format!("gone-{i}");
        records.write(&id, None, assigned(), t);
        lengths.push(records.order.len());
        records.remove(&id);
    }
    // ...to twice the cap and one more, then it drops to the live ids (and the new one).
    let expected: Vec<usize> = (6..=21).chain([6]).collect();
    assert_eq!(lengths, expected);
    assert_eq!(records.all().count(), 5);
}

#[test]
fn substatus_and_status_read_as_dps_spells_them() {
    for (substatus, text) in [
        (Substatus::InitialAssignment, "initialAssignment"),
        (Substatus::DeviceDataMigrated, "deviceDataMigrated"),
        (Substatus::DeviceDataReset, "deviceDataReset"),
        (
            Substatus::ReprovisionedToInitialAssignment,
            "reprovisionedToInitialAssignment",
        ),
    ] {
        assert_eq!(substatus.as_str(), text);
        assert_eq!(serde_json::json!(substatus), text);
    }
    assert_eq!(serde_json::json!(RegistrationStatus::Disabled), "disabled");
}
