//! The fleet's pace as its clients meet it: the [`RequestHook`] each device's client is given.
//! A register waits its turn, and every answer tells the [`Pacer`] and the counts what the
//! service said.
//!
//! Each device's [`ProvisioningClient`](crate::ProvisioningClient) passes its requests through
//! the fleet's [`FleetHook`] on their way to its transport. A register that waits for its turn
//! is part of the client's request: when the client gives up (its deadline, a cancel) the wait
//! ends with it, and nothing is sent.

use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use dps_messages::Operation;

use super::FleetProgress;
use super::pacer::{Pacer, PacerOptions};
use crate::RequestResult;
use crate::client::hook::{RequestHook, Unsent};

/// How often a waiting register asks the pace again: it may have changed since.
const RECHECK: Duration = Duration::from_millis(50);

/// One fleet's pace and counts, shared by its clients on every runtime thread.
#[derive(Debug)]
pub(crate) struct FleetHook {
    pacer: Mutex<Pacer>,
    progress: FleetProgress,
}

impl FleetHook {
    pub(crate) fn new(options: PacerOptions, progress: FleetProgress) -> Self {
        let hook = Self {
            pacer: Mutex::new(Pacer::new(options)),
            progress,
        };
        hook.pacer(|_| ());
        hook
    }

    /// Runs `f` on the pacer, and publishes the rate it leaves, under one lock.
    fn pacer<T>(&self, f: impl FnOnce(&mut Pacer) -> T) -> T {
        let mut pacer = self.pacer.lock().unwrap_or_else(PoisonError::into_inner);
        let result = f(&mut pacer);
        let rate = pacer.rate().to_bits();
        self.progress.0.rate.store(rate, Ordering::Relaxed);
        result
    }

    /// Waits for a register's turn, then sends it and tells the pacer the answer.
    async fn register(&self, send: Unsent<'_>) -> RequestResult {
        let mut waiting = Waiting {
            hook: self,
            ticket: self.pacer(Pacer::ticket),
            gone: false,
        };
        let ticket = waiting.ticket;
        loop {
            let now = Instant::now();
            let due = self.pacer(|pacer| pacer.due(ticket, now));
            if due <= now {
                self.pacer(|pacer| pacer.went(ticket, now));
                waiting.gone = true;
                break;
            }
            tokio::time::sleep_until(due.min(now + RECHECK).into()).await;
        }
        let counters = &self.progress.0;
        FleetProgress::add(&counters.registers);
        let answer = send.await;
        if refused(&answer) {
            FleetProgress::add(&counters.refused);
            self.pacer(|pacer| pacer.refused(ticket, Instant::now()));
        } else if answer.is_ok() {
            self.pacer(|pacer| pacer.admitted(ticket, Instant::now()));
        } else if unreachable(&answer) {
            FleetProgress::add(&counters.unreachable);
            self.pacer(|pacer| pacer.unreachable(ticket));
        } else {
            // Any other failure (a 4xx, a refused subscription) is still the service answering.
            self.pacer(|pacer| pacer.answered(Instant::now()));
        }
        answer
    }

    /// Sends a poll and counts it. Polls are not paced (the service limits them per device,
    /// and each client keeps to that), except during an outage: then a poll that would open a
    /// connection is a probe like a register, so a fleet's devices do not all reconnect at once.
    async fn poll(&self, send: Unsent<'_>) -> RequestResult {
        loop {
            let now = Instant::now();
            match self.pacer(|pacer| pacer.claim_probe(now)) {
                Ok(()) => break,
                Err(due) => tokio::time::sleep_until(due.min(now + RECHECK).into()).await,
            }
        }
        let counters = &self.progress.0;
        FleetProgress::add(&counters.polls);
        let answer = send.await;
        if refused(&answer) {
            FleetProgress::add(&counters.refused);
        }
        if unreachable(&answer) {
            self.pacer(Pacer::probe_failed);
        } else {
            // Any answer, a 404 for an operation a restarted service lost included.
            self.pacer(|pacer| pacer.answered(Instant::now()));
        }
        answer
    }
}

/// A register's place in the queue while it waits: a client that gives up the wait (its
/// deadline, a cancel) drops it, and the registers behind move up.
struct Waiting<'a> {
    hook: &'a FleetHook,
    ticket: u64,
    gone: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.gone {
            let ticket = self.ticket;
            self.hook.pacer(|pacer| pacer.abandon(ticket));
        }
    }
}

impl RequestHook for FleetHook {
    fn send<'a>(&'a self, operation: &Operation, send: Unsent<'a>) -> Unsent<'a> {
        match operation {
            Operation::Register => Box::pin(self.register(send)),
            Operation::Poll { .. } => Box::pin(self.poll(send)),
        }
    }
}

/// Whether a register never reached the service: its connection refused, reset, timed out or
/// closed before the answer. A fleet-wide signal to probe, not a quota.
fn unreachable(answer: &RequestResult) -> bool {
    use dps_messages::error::TransportErrorKind::{Connect, ConnectionLost, Unreachable};
    answer
        .as_ref()
        .err()
        .and_then(dps_messages::ProvisioningError::transport_kind)
        .is_some_and(|kind| matches!(kind, Unreachable | ConnectionLost | Connect))
}

/// Whether an answer is the service refusing for now (429; 5xx are the service failing).
fn refused(answer: &RequestResult) -> bool {
    answer
        .as_ref()
        .is_ok_and(dps_messages::RegistrationResponse::is_throttled)
}
