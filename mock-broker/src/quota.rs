//! DPS's published throttling limits, enforced on request: registrations per minute and
//! operations per minute (per service), and polls per device per 10 seconds. A request over a
//! limit is answered `429` with a `retry-after` saying when a slot frees, as the service
//! answers it; nothing else happens to it.
//!
//! Off by default, so benchmarks against the broker stay comparable. The windows slide: a
//! request is admitted when fewer than the limit were admitted in the window before it. A
//! limit per minute is enforced as a sixtieth of it per sliding second, so that a burst cannot
//! take a minute's allowance at once and the limit acts as the rate it is meant to be: 12,000
//! a minute lets 2,000 devices through in 10 s at best, as the service's would (DPS does not
//! document its window). Time is a
//! parameter, so the rules are tested without waiting.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

/// The window per-minute limits are enforced over, with a sixtieth of the limit.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// A per-minute limit's share of a [`RATE_WINDOW`] (at least one).
fn per_window(per_minute: u32) -> u32 {
    per_minute.div_ceil(60).max(1)
}

/// The polls-per-device window.
const POLL_WINDOW: Duration = Duration::from_secs(10);

/// Which limits apply; `None` is no limit. [`Quotas::dps`] gives the service's published ones
/// for one unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quotas {
    /// Register requests admitted per minute, service-wide (DPS: 1,000 per unit).
    pub registrations_per_minute: Option<u32>,
    /// Register and poll requests admitted per minute, service-wide (DPS: 1,000 per unit).
    pub operations_per_minute: Option<u32>,
    /// Polls admitted per device per 10 seconds (DPS: 5, not adjustable).
    pub polls_per_device: Option<u32>,
}

impl Quotas {
    /// DPS's published limits for `units` units: 1,000 registrations and 1,000 operations per
    /// minute per unit, 5 polls per device per 10 s.
    pub fn dps(units: u32) -> Self {
        Self {
            registrations_per_minute: Some(1_000 * units),
            operations_per_minute: Some(1_000 * units),
            polls_per_device: Some(5),
        }
    }

    /// Whether any limit applies.
    pub fn any(&self) -> bool {
        self.registrations_per_minute.is_some()
            || self.operations_per_minute.is_some()
            || self.polls_per_device.is_some()
    }
}

/// Requests admitted and throttled, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaSummary {
    /// Register requests admitted.
    pub registrations_accepted: u64,
    /// Register requests answered 429.
    pub registrations_throttled: u64,
    /// Poll requests admitted.
    pub polls_accepted: u64,
    /// Poll requests answered 429.
    pub polls_throttled: u64,
}

impl QuotaSummary {
    /// All requests answered 429.
    pub fn throttled(&self) -> u64 {
        self.registrations_throttled + self.polls_throttled
    }
}

impl std::fmt::Display for QuotaSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "registrations: {} accepted, {} throttled; polls: {} accepted, {} throttled",
            self.registrations_accepted,
            self.registrations_throttled,
            self.polls_accepted,
            self.polls_throttled
        )
    }
}

/// What a request is, for the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Register,
    Poll,
}

/// The windows and the counts.
#[derive(Debug, Default)]
pub(crate) struct QuotaState {
    registrations: VecDeque<SystemTime>,
    operations: VecDeque<SystemTime>,
    polls: HashMap<String, VecDeque<SystemTime>>,
    /// The size of `polls` after its last sweep: it is swept again when it doubles, so idle
    /// devices cost memory only until the next sweep.
    polls_swept_at: usize,
    summary: QuotaSummary,
}

impl QuotaState {
    /// Admits a request of `kind` from `device` at `now`, or says how long until it would be
    /// (at least a second: `retry-after` is whole seconds).
    pub(crate) fn admit(
        &mut self,
        quotas: &Quotas,
        kind: Kind,
        device: &str,
        now: SystemTime,
    ) -> Result<(), Duration> {
        let verdict = self.check(quotas, kind, device, now);
        let (accepted, throttled) = match kind {
            Kind::Register => (
                &mut self.summary.registrations_accepted,
                &mut self.summary.registrations_throttled,
            ),
            Kind::Poll => (
                &mut self.summary.polls_accepted,
                &mut self.summary.polls_throttled,
            ),
        };
        match verdict {
            Ok(()) => {
                *accepted += 1;
                if quotas.operations_per_minute.is_some() {
                    self.operations.push_back(now);
                }
                match kind {
                    Kind::Register if quotas.registrations_per_minute.is_some() => {
                        self.registrations.push_back(now)
                    }
                    Kind::Poll if quotas.polls_per_device.is_some() => self
                        .polls
                        .entry(device.to_owned())
                        .or_default()
                        .push_back(now),
                    _ => {}
                }
                Ok(())
            }
            Err(wait) => {
                *throttled += 1;
                Err(wait)
            }
        }
    }

    /// The counts so far.
    pub(crate) fn summary(&self) -> QuotaSummary {
        self.summary
    }

    fn check(
        &mut self,
        quotas: &Quotas,
        kind: Kind,
        device: &str,
        now: SystemTime,
    ) -> Result<(), Duration> {
        let mut wait = Duration::ZERO;
        if let Some(limit) = quotas.operations_per_minute {
            let limit = per_window(limit);
            wait = wait.max(window_wait(&mut self.operations, limit, RATE_WINDOW, now));
        }
        match kind {
            Kind::Register => {
                if let Some(limit) = quotas.registrations_per_minute {
                    let limit = per_window(limit);
                    wait = wait.max(window_wait(
                        &mut self.registrations,
                        limit,
                        RATE_WINDOW,
                        now,
                    ));
                }
            }
            Kind::Poll => {
                if let Some(limit) = quotas.polls_per_device {
                    self.sweep_polls(now);
                    if let Some(polls) = self.polls.get_mut(device) {
                        wait = wait.max(window_wait(polls, limit, POLL_WINDOW, now));
                    }
                }
            }
        }
        if wait.is_zero() {
            Ok(())
        } else {
            Err(Duration::from_secs(
                wait.as_secs_f64().ceil().max(1.0) as u64
            ))
        }
    }

    /// Forgets devices that have not polled within the window, when the map has doubled.
    fn sweep_polls(&mut self, now: SystemTime) {
        if self.polls.len() < (2 * self.polls_swept_at).max(1_024) {
            return;
        }
        self.polls.retain(|_, polls| {
            polls
                .back()
                .is_some_and(|last| now.duration_since(*last).unwrap_or_default() < POLL_WINDOW)
        });
        self.polls_swept_at = self.polls.len();
    }
}

/// Drops what left the `window` before `now`; how long until fewer than `limit` remain (zero
/// when that is so already).
fn window_wait(
    admitted: &mut VecDeque<SystemTime>,
    limit: u32,
    window: Duration,
    now: SystemTime,
) -> Duration {
    while admitted
        .front()
        .is_some_and(|t| now.duration_since(*t).unwrap_or_default() >= window)
    {
        admitted.pop_front();
    }
    let limit = limit as usize;
    if admitted.len() < limit {
        return Duration::ZERO;
    }
    // The request that frees the slot this one needs.
    let frees = admitted[admitted.len() - limit];
    (frees + window).duration_since(now).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn registrations_over_the_limit_wait_for_the_oldest_to_leave_the_window() {
        // 180 a minute: 3 per second.
        let quotas = Quotas {
            registrations_per_minute: Some(180),
            ..Quotas::default()
        };
        let mut state = QuotaState::default();
        for (i, t) in [0, 100, 200].into_iter().enumerate() {
            let device = format!("d{i}");
            assert_eq!(state.admit(&quotas, Kind::Register, &device, at(t)), Ok(()));
        }
        // The fourth at 300 ms waits until the first leaves the window at 1 s: less than a
        // second is still a whole second, as retry-after is.
        assert_eq!(
            state.admit(&quotas, Kind::Register, "d3", at(300)),
            Err(Duration::from_secs(1))
        );
        assert_eq!(
            state.admit(&quotas, Kind::Register, "d3", at(999)),
            Err(Duration::from_secs(1))
        );
        assert_eq!(
            state.admit(&quotas, Kind::Register, "d3", at(1_000)),
            Ok(())
        );
        // Polls are not registrations.
        assert_eq!(state.admit(&quotas, Kind::Poll, "d0", at(1_000)), Ok(()));
        assert_eq!(
            state.summary(),
            QuotaSummary {
                registrations_accepted: 4,
                registrations_throttled: 2,
                polls_accepted: 1,
                polls_throttled: 0,
            }
        );
        assert_eq!(state.summary().throttled(), 2);
    }

    #[test]
    fn a_device_polling_more_than_five_times_in_ten_seconds_is_throttled_alone() {
        let quotas = Quotas::dps(1);
        let mut state = QuotaState::default();
        for i in 0..5 {
            assert_eq!(
                state.admit(&quotas, Kind::Poll, "busy", at(i * 1_000)),
                Ok(())
            );
        }
        assert_eq!(
            state.admit(&quotas, Kind::Poll, "busy", at(5_000)),
            Err(Duration::from_secs(5))
        );
        assert_eq!(state.admit(&quotas, Kind::Poll, "calm", at(5_000)), Ok(()));
        assert_eq!(state.admit(&quotas, Kind::Poll, "busy", at(10_000)), Ok(()));
        assert_eq!(state.summary().polls_throttled, 1);
    }

    #[test]
    fn operations_count_registers_and_polls_together() {
        let quotas = Quotas {
            operations_per_minute: Some(120),
            ..Quotas::default()
        };
        let mut state = QuotaState::default();
        assert_eq!(state.admit(&quotas, Kind::Register, "d", at(0)), Ok(()));
        assert_eq!(state.admit(&quotas, Kind::Poll, "d", at(100)), Ok(()));
        assert_eq!(
            state.admit(&quotas, Kind::Poll, "e", at(200)),
            Err(Duration::from_secs(1))
        );
        assert_eq!(state.admit(&quotas, Kind::Poll, "e", at(1_000)), Ok(()));
        // A limit below 60 a minute still lets one through per second.
        assert_eq!((per_window(1), per_window(60), per_window(61)), (1, 1, 2));
        assert!(!Quotas::default().any() && Quotas::dps(2).any());
        assert_eq!(Quotas::dps(2).registrations_per_minute, Some(2_000));
    }

    #[test]
    fn idle_devices_are_forgotten_so_memory_stays_bounded() {
        let quotas = Quotas {
            polls_per_device: Some(5),
            ..Quotas::default()
        };
        let mut state = QuotaState::default();
        // 5,000 devices polling at once are all within their window: all remembered.
        for i in 0..5_000 {
            let _ = state.admit(&quotas, Kind::Poll, &format!("d{i}"), at(0));
        }
        assert_eq!(state.polls.len(), 5_000);
        // A minute later others poll; when the map has doubled, the idle ones are forgotten.
        for i in 0..4_000 {
            let _ = state.admit(&quotas, Kind::Poll, &format!("e{i}"), at(60_000));
        }
        assert!(state.polls.len() <= 4_000, "{}", state.polls.len());
        assert!(state.polls.keys().all(|k| k.starts_with('e')));
        assert_eq!(state.summary().polls_accepted, 9_000);
    }
}
