//! Registration records: what DPS keeps of each device it assigned, and what a second
//! registration does to it under the enrollment's reprovision policy, with no IO.
//!
//! The substatus says what happened, in DPS's words: `initialAssignment` (first assignment, or
//! again to the same hub), `deviceDataMigrated` and `deviceDataReset` (moved to another hub,
//! its data kept or started again from the enrollment), `reprovisionedToInitialAssignment`
//! (moved back to the hub of its first assignment). A deleted record makes the next
//! registration an initial assignment again.

use std::collections::{HashMap, VecDeque};
use std::time::SystemTime;

use serde::{Serialize, Serializer};
use serde_json::{Value, json};

use crate::clock::iso8601;
use crate::enrollment::ReprovisionPolicy;

/// What happened at a device's latest assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Substatus {
    /// Assigned for the first time (or again to the hub it is on).
    InitialAssignment,
    /// Moved to another hub, its data with it.
    DeviceDataMigrated,
    /// Moved to another hub, its data started again from the enrollment.
    DeviceDataReset,
    /// Moved back to the hub of its first assignment.
    ReprovisionedToInitialAssignment,
}

impl Substatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InitialAssignment => "initialAssignment",
            Self::DeviceDataMigrated => "deviceDataMigrated",
            Self::DeviceDataReset => "deviceDataReset",
            Self::ReprovisionedToInitialAssignment => "reprovisionedToInitialAssignment",
        }
    }
}

/// Where a registration ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RegistrationStatus {
    /// Assigned to a hub.
    Assigned,
    /// The enrollment is disabled.
    Disabled,
    /// Allocation failed (a custom allocation's webhook, or no hub to use).
    Failed,
}

/// DPS's record of one device (its `DeviceRegistrationState`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationRecord {
    /// The registration id, as the device spelled it first.
    pub registration_id: String,
    /// The device id on the hub.
    pub device_id: Option<String>,
    /// The hub the device is assigned to (kept through a later failure).
    pub assigned_hub: Option<String>,
    /// Where the latest registration ended.
    pub status: RegistrationStatus,
    /// What the latest assignment did.
    pub substatus: Option<Substatus>,
    /// The enrollment group the device registered through, if not an individual enrollment.
    #[serde(skip)]
    pub enrollment_group_id: Option<String>,
    /// The error of a failed registration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u32>,
    /// Its message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// The payload returned to the device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// When the record was made.
    #[serde(rename = "createdDateTimeUtc", serialize_with = "as_iso8601")]
    pub created: SystemTime,
    /// When it last changed.
    #[serde(rename = "lastUpdatedDateTimeUtc", serialize_with = "as_iso8601")]
    pub last_updated: SystemTime,
    /// Its version, new on every change.
    pub etag: String,
    /// The hub of the first assignment: moving back to it is `reprovisionedToInitialAssignment`.
    #[serde(skip)]
    pub(crate) initial_hub: Option<String>,
}

fn as_iso8601<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&iso8601(*time))
}

impl RegistrationRecord {
    /// The record as a device reads it in `registrationState`.
    pub(crate) fn state(&self) -> Value {
        json!(self)
    }
}

/// Where a device goes, and what that is called, when allocation picked `allocated` and the
/// device's record is `previous` (a record whose device has no hub counts as none).
pub(crate) fn reassign(
    previous: Option<&RegistrationRecord>,
    allocated: &str,
    policy: ReprovisionPolicy,
) -> (String, Substatus) {
    let Some((current, previous)) =
        previous.and_then(|p| p.assigned_hub.as_deref().map(|hub| (hub, p)))
    else {
        return (allocated.to_owned(), Substatus::InitialAssignment);
    };
    let kept = previous.substatus.unwrap_or(Substatus::InitialAssignment);
    if !policy.update_hub_assignment || current.eq_ignore_ascii_case(allocated) {
        return (current.to_owned(), kept);
    }
    let substatus = if previous
        .initial_hub
        .as_deref()
        .is_some_and(|initial| initial.eq_ignore_ascii_case(allocated))
    {
        Substatus::ReprovisionedToInitialAssignment
    } else if policy.migrate_device_data {
        Substatus::DeviceDataMigrated
    } else {
        Substatus::DeviceDataReset
    };
    (allocated.to_owned(), substatus)
}

/// What one registration decided, to write into the record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    /// Assigned to `hub` as `device_id`.
    Assigned {
        hub: String,
        device_id: String,
        payload: Option<Value>,
        policy: ReprovisionPolicy,
    },
    /// Refused: the enrollment is disabled.
    Disabled,
    /// Allocation failed.
    Failed { code: u32, message: String },
}

/// Writes `decision` into the record of `registration_id` (made when there is none), and
/// returns the record as it now is.
pub(crate) fn record(
    slot: &mut Option<RegistrationRecord>,
    registration_id: &str,
    group: Option<&str>,
    decision: Decision,
    now: SystemTime,
) -> RegistrationRecord {
    let record = slot.get_or_insert_with(|| RegistrationRecord {
        registration_id: registration_id.to_owned(),
        device_id: None,
        assigned_hub: None,
        status: RegistrationStatus::Failed,
        substatus: None,
        enrollment_group_id: None,
        error_code: None,
        error_message: None,
        payload: None,
        created: now,
        last_updated: now,
        etag: String::new(),
        initial_hub: None,
    });
    match decision {
        Decision::Assigned {
            hub,
            device_id,
            payload,
            policy,
        } => {
            let (hub, substatus) = reassign(Some(record), &hub, policy);
            record.initial_hub.get_or_insert_with(|| hub.clone());
            record.assigned_hub = Some(hub);
            record.device_id = Some(device_id);
            record.status = RegistrationStatus::Assigned;
            record.substatus = Some(substatus);
            record.error_code = None;
            record.error_message = None;
            record.payload = payload;
        }
        Decision::Disabled => {
            record.status = RegistrationStatus::Disabled;
            record.error_code = None;
            record.error_message = None;
        }
        Decision::Failed { code, message } => {
            record.status = RegistrationStatus::Failed;
            record.error_code = Some(code);
            record.error_message = Some(message);
        }
    }
    record.enrollment_group_id = group.map(str::to_owned);
    record.last_updated = now;
    record.etag = crate::enrollment::new_etag();
    record.clone()
}

/// The most records a broker keeps: past it, the oldest made go first (a device whose record
/// went registers as an initial assignment), so a broker serving millions of devices stays
/// bounded.
pub(crate) const MAX_REGISTRATIONS: usize = 100_000;

/// The records DPS keeps, by registration id without case, at most `max`.
#[derive(Debug)]
pub(crate) struct Registrations {
    records: HashMap<String, RegistrationRecord>,
    /// Ids in the order their records were made; ids whose record has gone are skipped.
    order: VecDeque<String>,
    max: usize,
}

impl Default for Registrations {
    fn default() -> Self {
        Self::with_max(MAX_REGISTRATIONS)
    }
}

impl Registrations {
    /// At most `max` records.
    pub(crate) fn with_max(max: usize) -> Self {
        Self {
            records: HashMap::new(),
            order: VecDeque::new(),
            max: max.max(1),
        }
    }

    /// The record of `registration_id`.
    pub(crate) fn get(&self, registration_id: &str) -> Option<&RegistrationRecord> {
        self.records.get(&registration_id.to_ascii_lowercase())
    }

    /// Removes the record of `registration_id`, and returns it.
    pub(crate) fn remove(&mut self, registration_id: &str) -> Option<RegistrationRecord> {
        self.records.remove(&registration_id.to_ascii_lowercase())
    }

    /// Every record, in no order.
    pub(crate) fn all(&self) -> impl Iterator<Item = &RegistrationRecord> {
        self.records.values()
    }

    /// Writes `decision` into the record of `registration_id` (made, and the oldest dropped
    /// past the cap, when there is none) and returns the record as it now is.
    pub(crate) fn write(
        &mut self,
        registration_id: &str,
        group: Option<&str>,
        decision: Decision,
        now: SystemTime,
    ) -> RegistrationRecord {
        let key = registration_id.to_ascii_lowercase();
        let mut slot = self.records.remove(&key);
        if slot.is_none() {
            self.make_room();
            self.order.push_back(key.clone());
        }
        let written = record(&mut slot, registration_id, group, decision, now);
        self.records.insert(key, written.clone());
        written
    }

    fn make_room(&mut self) {
        while self.records.len() >= self.max {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.records.remove(&oldest);
        }
        // Deleted records leave their ids behind; drop them before they outnumber the rest.
        if self.order.len() > 2 * self.max {
            let records = &self.records;
            self.order.retain(|id| records.contains_key(id));
        }
    }
}

#[cfg(test)]
mod tests;
