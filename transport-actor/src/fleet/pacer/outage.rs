//! The pace while the service cannot be reached: probes, not a storm.
//!
//! A register whose connection is refused, reset or times out says nothing of the quota: the
//! service is not there. Were the pace to go on, every waiting device would try at the full
//! rate for as long as the outage lasts. Instead the fleet probes: one register at a time,
//! 100 ms apart at first, twice as far apart after each failure, at most a second. The first
//! answer (admitted or refused) ends the outage, and the pace the fleet had learned resumes
//! at once: an outage is not a sign that the quota shrank.

use std::time::{Duration, Instant};

/// The first spacing of probes.
pub(crate) const FIRST_PROBE: Duration = Duration::from_millis(100);
/// The widest spacing of probes: the most a recovered service waits for the fleet.
pub(crate) const MAX_PROBE: Duration = Duration::from_secs(1);

/// An outage in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outage {
    /// The spacing of probes now.
    spacing: Duration,
    /// When the last probe went.
    last_probe: Option<Instant>,
}

impl Outage {
    /// An outage that has just been seen.
    pub(crate) fn new() -> Self {
        Self {
            spacing: FIRST_PROBE,
            last_probe: None,
        }
    }

    /// Another probe failed: the next ones go twice as far apart.
    pub(crate) fn failed_again(&mut self) {
        self.spacing = (self.spacing * 2).min(MAX_PROBE);
    }

    /// When the register `ahead` places behind the next one may go, asked at `now`.
    pub(crate) fn due(&self, ahead: u64, now: Instant) -> Instant {
        let next = self
            .last_probe
            .map_or(now, |at| (at + self.spacing).max(now));
        next + self.spacing * u32::try_from(ahead).unwrap_or(u32::MAX)
    }

    /// A probe went at `now`.
    pub(crate) fn went(&mut self, now: Instant) {
        self.last_probe = Some(now);
    }
}
