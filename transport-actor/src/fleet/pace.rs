//! The fleet's pace as its clients meet it: a register waits its turn, and every answer tells
//! the [`Pacer`] and the counts what the service said.
//!
//! Each device's [`ProvisioningClient`](crate::ProvisioningClient) holds a [`FleetPace`] and
//! passes its requests through it on their way to its transport. A register that waits for its
//! turn is part of the client's request: when the client gives up (its deadline, a cancel) the
//! wait ends with it, and nothing is sent.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dps_messages::commands::RequestResult;
use dps_messages::outcome::RETRY_STATUS;

use super::FleetProgress;
use super::pacer::{Pacer, PacerOptions};

/// How often a waiting register asks the pace again: it may have changed since.
const RECHECK: Duration = Duration::from_millis(50);

/// One fleet's pace and counts, shared by its clients on every runtime thread.
#[derive(Debug, Clone)]
pub(crate) struct FleetPace(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    pacer: Mutex<Pacer>,
    progress: FleetProgress,
}

impl FleetPace {
    pub(crate) fn new(options: PacerOptions, progress: FleetProgress) -> Self {
        let pace = Self(Arc::new(Shared {
            pacer: Mutex::new(Pacer::new(options)),
            progress,
        }));
        pace.pacer(|_| ());
        pace
    }

    /// Runs `f` on the pacer, and publishes the rate it leaves, under one lock.
    fn pacer<T>(&self, f: impl FnOnce(&mut Pacer) -> T) -> T {
        let mut pacer = self.0.pacer.lock().unwrap_or_else(PoisonError::into_inner);
        let result = f(&mut pacer);
        let rate = pacer.rate().to_bits();
        self.0.progress.0.rate.store(rate, Ordering::Relaxed);
        result
    }

    /// Waits for a register's turn, then sends it with `send` and tells the pacer the answer.
    pub(crate) async fn register<F, Fut>(&self, send: F) -> RequestResult
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = RequestResult>,
    {
        let ticket = self.pacer(Pacer::ticket);
        loop {
            let now = Instant::now();
            let due = self.pacer(|pacer| pacer.due(ticket, now));
            if due <= now {
                self.pacer(|pacer| pacer.went(ticket, now));
                break;
            }
            tokio::time::sleep_until(due.min(now + RECHECK).into()).await;
        }
        let counters = &self.0.progress.0;
        FleetProgress::add(&counters.registers);
        let answer = send().await;
        if refused(&answer) {
            FleetProgress::add(&counters.refused);
            self.pacer(|pacer| pacer.refused(ticket, Instant::now()));
        } else if answer.is_ok() {
            self.pacer(|pacer| pacer.admitted(ticket, Instant::now()));
        }
        answer
    }

    /// Sends a poll with `send` and counts it.
    pub(crate) async fn poll<F, Fut>(&self, send: F) -> RequestResult
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = RequestResult>,
    {
        let counters = &self.0.progress.0;
        FleetProgress::add(&counters.polls);
        let answer = send().await;
        if refused(&answer) {
            FleetProgress::add(&counters.refused);
        }
        answer
    }
}

/// Whether an answer is the service refusing for now (429; 5xx are the service failing).
fn refused(answer: &RequestResult) -> bool {
    answer
        .as_ref()
        .is_ok_and(|response| response.status_code == RETRY_STATUS)
}
