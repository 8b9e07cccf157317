//! The registration operations the mock DPS has open, with an end to each.
//!
//! Every register creates an operation for the device to poll. A broker that serves millions of
//! registrations must not keep them all: an operation expires a while after it finished (the
//! poll that answered `assigned`), or after a long while if it never did, and there is a cap;
//! the oldest go first. A poll of an operation that has gone gets a 404, as one of an unknown id.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::issuance::CheckedCsr;
use crate::registration::RegistrationRecord;

/// How long a finished operation can still be polled.
pub(crate) const FINISHED_OPERATION_TTL: Duration = Duration::from_secs(5 * 60);

/// How long an operation nobody finished is kept.
pub(crate) const UNFINISHED_OPERATION_TTL: Duration = Duration::from_secs(60 * 60);

/// The most operations kept at once.
pub(crate) const MAX_OPERATIONS: usize = 100_000;

/// One registration operation the service keeps until its device polls it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pending {
    pub(crate) registration_id: String,
    pub(crate) payload: Option<Value>,
    /// The CSR the register carried, checked: the assignment issues a certificate for it.
    pub(crate) csr: Option<CheckedCsr>,
    pub(crate) created: SystemTime,
    pub(crate) finished: Option<SystemTime>,
    /// Where the registration stands.
    pub(crate) outcome: Outcome,
}

/// Where a registration operation stands.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// The broker has no enrollments: the device is assigned to the broker's one hub when it
    /// polls, as before enrollments existed.
    Open,
    /// A custom allocation's webhook has not answered yet: polls get `assigning`.
    Allocating,
    /// Decided: the device's record as the registration left it.
    Decided(Box<RegistrationRecord>),
}

impl Pending {
    fn expired(&self, now: SystemTime) -> bool {
        let (since, ttl) = match self.finished {
            Some(at) => (at, FINISHED_OPERATION_TTL),
            None => (self.created, UNFINISHED_OPERATION_TTL),
        };
        now.duration_since(since).is_ok_and(|age| age >= ttl)
    }
}

/// The open operations, oldest first.
#[derive(Debug)]
pub(crate) struct Operations {
    entries: HashMap<String, Pending>,
    /// Ids in the order they were made; ids whose operation has gone are skipped.
    order: VecDeque<String>,
    max: usize,
}

impl Default for Operations {
    fn default() -> Self {
        Self::with_max(MAX_OPERATIONS)
    }
}

impl Operations {
    /// At most `max` operations at once.
    pub(crate) fn with_max(max: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            max: max.max(1),
        }
    }

    /// Adds operation `id`, making room first.
    pub(crate) fn insert(&mut self, id: String, operation: Pending, now: SystemTime) {
        self.prune(now);
        while self.entries.len() >= self.max {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        self.order.push_back(id.clone());
        self.entries.insert(id, operation);
    }

    /// Pending `id`, unless it has expired.
    pub(crate) fn get_mut(&mut self, id: &str, now: SystemTime) -> Option<&mut Pending> {
        if self.entries.get(id).is_some_and(|op| op.expired(now)) {
            self.entries.remove(id);
            return None;
        }
        self.entries.get_mut(id)
    }

    /// How many operations are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Drops expired operations from the old end. An operation that finished early behind an
    /// older one still open waits for its turn; the cap bounds them all.
    fn prune(&mut self, now: SystemTime) {
        while let Some(oldest) = self.order.front() {
            match self.entries.get(oldest) {
                Some(op) if !op.expired(now) => break,
                Some(_) => {
                    self.entries.remove(oldest);
                }
                None => {}
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(created: SystemTime) -> Pending {
        Pending {
            registration_id: "dev".into(),
            payload: None,
            csr: None,
            created,
            finished: None,
            outcome: Outcome::Open,
        }
    }

    #[test]
    fn finished_operations_expire_after_their_ttl() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut ops = Operations::default();
        ops.insert("a".into(), op(t0), t0);
        ops.get_mut("a", t0).unwrap().finished = Some(t0);
        let later = t0 + FINISHED_OPERATION_TTL - Duration::from_secs(1);
        assert!(ops.get_mut("a", later).is_some());
        assert!(ops.get_mut("a", t0 + FINISHED_OPERATION_TTL).is_none());
        assert_eq!(ops.len(), 0);
    }

    #[test]
    fn unfinished_operations_expire_later_and_are_pruned_on_insert() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut ops = Operations::default();
        ops.insert("old".into(), op(t0), t0);
        let still = t0 + FINISHED_OPERATION_TTL;
        assert!(
            ops.get_mut("old", still).is_some(),
            "not finished: kept longer"
        );
        let expired = t0 + UNFINISHED_OPERATION_TTL;
        ops.insert("new".into(), op(expired), expired);
        assert_eq!(ops.len(), 1);
        assert!(ops.get_mut("old", expired).is_none());
    }

    #[test]
    fn the_cap_drops_the_oldest() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut ops = Operations::with_max(3);
        for id in ["a", "b", "c", "d"] {
            ops.insert(id.into(), op(t0), t0);
        }
        assert_eq!(ops.len(), 3);
        assert!(ops.get_mut("a", t0).is_none());
        assert!(ops.get_mut("d", t0).is_some());
    }
}
