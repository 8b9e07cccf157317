//! The fleet-wide pace of registrations, without IO: how soon the next register may go, and
//! how the pace answers the service.
//!
//! A fleet meets the service's registration quota long before its own limits. Sending
//! blindly, most requests would come back 429 and every device would back off on its own; the
//! pacer instead finds the quota's rate and stays just under it, as TCP finds a link's:
//!
//! * **slow start**: from `initial_rate`, each admitted register raises the rate by half a
//!   request per second, so it grows about 1.6 times a second while nothing is refused;
//! * **on a 429**: the rate drops by a quarter (at most once a second: one burst of refusals is
//!   one signal), and growth turns gentle;
//! * **after that**: each second of admitted registers adds 2 % of the rate the last cut left.
//!
//! The device that was refused still waits its retry-after before it tries again (its
//! [`ProvisioningClient`](crate::ProvisioningClient) sees to that); the pacer only spaces the
//! others.

use std::time::{Duration, Instant};

/// The pacer's bounds and start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PacerOptions {
    /// Registrations per second at the start.
    pub initial_rate: f64,
    /// The slowest pace, whatever the service says.
    pub min_rate: f64,
    /// The fastest pace, whatever the service allows.
    pub max_rate: f64,
}

impl Default for PacerOptions {
    /// From 50 a second, between 1 and 5,000 a second.
    fn default() -> Self {
        Self {
            initial_rate: 50.0,
            min_rate: 1.0,
            max_rate: 5_000.0,
        }
    }
}

/// How much a refusal cuts the rate.
const CUT: f64 = 0.75;
/// Refusals closer together than this are one signal.
const CUT_GAP: Duration = Duration::from_secs(1);
/// Growth per admitted register in slow start, in requests per second.
const SLOW_START_STEP: f64 = 0.5;
/// Growth per second after the first refusal, as a share of the rate the last cut left.
const GENTLE_GROWTH: f64 = 0.02;

/// The pace.
#[derive(Debug)]
pub(crate) struct Pacer {
    options: PacerOptions,
    rate: f64,
    next: Option<Instant>,
    slow_start: bool,
    last_cut: Option<Instant>,
    /// The rate right after the last cut: gentle growth is a share of it.
    floor_after_cut: f64,
}

impl Pacer {
    pub(crate) fn new(options: PacerOptions) -> Self {
        let rate = options
            .initial_rate
            .clamp(options.min_rate, options.max_rate);
        Self {
            options,
            rate,
            next: None,
            slow_start: true,
            last_cut: None,
            floor_after_cut: rate,
        }
    }

    /// Registrations per second now.
    pub(crate) fn rate(&self) -> f64 {
        self.rate
    }

    /// When the next register may go, asked at `now`; the slot after it is one interval later.
    pub(crate) fn slot(&mut self, now: Instant) -> Instant {
        let at = self.next.map_or(now, |next| next.max(now));
        self.next = Some(at + Duration::from_secs_f64(1.0 / self.rate));
        at
    }

    /// A register was admitted (answered anything but 429).
    pub(crate) fn admitted(&mut self) {
        let step = if self.slow_start {
            SLOW_START_STEP
        } else {
            // `rate` registers a second, each adding this: GENTLE_GROWTH of the floor a second.
            GENTLE_GROWTH * self.floor_after_cut / self.rate
        };
        self.rate = (self.rate + step).min(self.options.max_rate);
    }

    /// A register was refused with 429 at `now`.
    pub(crate) fn refused(&mut self, now: Instant) {
        self.slow_start = false;
        if self
            .last_cut
            .is_some_and(|at| now.duration_since(at) < CUT_GAP)
        {
            return;
        }
        self.last_cut = Some(now);
        self.rate = (self.rate * CUT).max(self.options.min_rate);
        self.floor_after_cut = self.rate;
        // The next slot moves out to the new pace.
        let interval = Duration::from_secs_f64(1.0 / self.rate);
        self.next = Some(self.next.map_or(now + interval, |n| n.max(now + interval)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_spaced_by_the_rate_and_never_in_the_past() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(PacerOptions {
            initial_rate: 10.0,
            ..PacerOptions::default()
        });
        assert_eq!(pacer.slot(t0), t0);
        assert_eq!(pacer.slot(t0), t0 + Duration::from_millis(100));
        // Asked later than the next slot: now.
        let later = t0 + Duration::from_secs(5);
        assert_eq!(pacer.slot(later), later);
    }

    #[test]
    fn slow_start_grows_until_a_refusal_then_cuts_once_per_burst_and_grows_gently() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(PacerOptions::default());
        for _ in 0..100 {
            pacer.admitted();
        }
        assert_eq!(pacer.rate(), 100.0, "50 + 100 x 0.5");
        pacer.refused(t0);
        assert_eq!(pacer.rate(), 75.0);
        // More refusals of the same burst are the same signal.
        pacer.refused(t0 + Duration::from_millis(500));
        assert_eq!(pacer.rate(), 75.0);
        pacer.refused(t0 + Duration::from_millis(1_000));
        assert_eq!(pacer.rate(), 56.25);
        // A second's worth of admitted registers adds about 2 % of the floor.
        let before = pacer.rate();
        for _ in 0..56 {
            pacer.admitted();
        }
        let grown = pacer.rate() - before;
        assert!((1.0..1.2).contains(&grown), "{grown}");
    }

    #[test]
    fn the_rate_stays_within_its_bounds_and_a_cut_moves_the_next_slot_out() {
        let t0 = Instant::now();
        let options = PacerOptions {
            initial_rate: 2.0,
            min_rate: 1.0,
            max_rate: 3.0,
        };
        let mut pacer = Pacer::new(options);
        for _ in 0..10 {
            pacer.admitted();
        }
        assert_eq!(pacer.rate(), 3.0);
        for i in 0..10 {
            pacer.refused(t0 + Duration::from_secs(i));
        }
        assert_eq!(pacer.rate(), 1.0);
        let at = t0 + Duration::from_secs(9);
        assert!(pacer.slot(at) >= at + Duration::from_secs(1));
        assert_eq!(
            Pacer::new(PacerOptions {
                initial_rate: 0.0,
                ..options
            })
            .rate(),
            1.0
        );
    }
}
