//! The fleet-wide pace of registrations, without IO: how soon the next register may go, and
//! how the pace answers the service.
//!
//! A fleet meets the service's registration quota long before its own limits. Sending
//! blindly, most requests would come back 429 and every device would back off on its own; the
//! pacer instead finds the quota's rate and stays just under it, as TCP finds a link's:
//!
//! * **slow start**: from `initial_rate`, each admitted register raises the rate by two
//!   requests per second, so it doubles every half second while nothing is refused;
//! * **on a 429**: the service has shown what it admits: the rate drops to 95 % of the rate it
//!   admitted over the last second, and at least by 5 % (by a quarter, when nothing was
//!   admitted yet), at most once
//!   a second (one burst of refusals is one signal), and growth turns gentle;
//! * **after that**: each second of admitted registers adds 5 % of the rate the last cut left,
//!   probing for room until the next refusal.
//!
//! The device that was refused still waits its retry-after before it tries again (its
//! [`ProvisioningClient`](crate::ProvisioningClient) sees to that); the pacer only spaces the
//! others.

use std::collections::VecDeque;
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

/// How much a refusal cuts the rate when the admitted rate is not known.
const CUT: f64 = 0.75;
/// The share of the admitted rate a refusal sets the pace to.
const UNDER_ADMITTED: f64 = 0.95;
/// Refusals closer together than this are one signal; also the window the admitted rate is
/// measured over.
const CUT_GAP: Duration = Duration::from_secs(1);
/// Growth per admitted register in slow start, in requests per second.
const SLOW_START_STEP: f64 = 2.0;
/// Growth per second after the first refusal, as a share of the rate the last cut left.
const GENTLE_GROWTH: f64 = 0.05;

/// The pace.
#[derive(Debug)]
pub(crate) struct Pacer {
    options: PacerOptions,
    rate: f64,
    /// Tickets are taken in order; ticket `n` is due `(n - base_ticket) / rate` after
    /// `base_time`. When the rate changes the base moves to the next ticket not yet granted,
    /// so waiting tickets speed up or slow down with it instead of keeping the slot they were
    /// given at a pace that no longer holds.
    next_ticket: u64,
    granted: u64,
    base_ticket: u64,
    base_time: Option<Instant>,
    slow_start: bool,
    last_cut: Option<Instant>,
    /// The rate right after the last cut: gentle growth is a share of it.
    floor_after_cut: f64,
    /// When registers were admitted in the last second, to measure the admitted rate.
    admitted_at: VecDeque<Instant>,
    /// The first admission, so a rate measured over less than a second is scaled to one.
    first_admitted: Option<Instant>,
}

impl Pacer {
    pub(crate) fn new(options: PacerOptions) -> Self {
        let rate = options
            .initial_rate
            .clamp(options.min_rate, options.max_rate);
        Self {
            options,
            rate,
            next_ticket: 0,
            granted: 0,
            base_ticket: 0,
            base_time: None,
            slow_start: true,
            last_cut: None,
            floor_after_cut: rate,
            admitted_at: VecDeque::new(),
            first_admitted: None,
        }
    }

    /// Registrations per second now.
    pub(crate) fn rate(&self) -> f64 {
        self.rate
    }

    /// A place in the queue of registers.
    pub(crate) fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket - 1
    }

    /// When `ticket` may go at the pace now, asked at `now` (the first ticket goes at once).
    /// Waiters ask again every so often: the pace may have changed since.
    pub(crate) fn due(&mut self, ticket: u64, now: Instant) -> Instant {
        let base = *self.base_time.get_or_insert(now);
        let ahead = ticket.saturating_sub(self.base_ticket) as f64;
        base + Duration::from_secs_f64(ahead / self.rate)
    }

    /// `ticket` went at `now`.
    pub(crate) fn went(&mut self, ticket: u64) {
        self.granted = self.granted.max(ticket + 1);
    }

    /// Moves the base to the next ticket not yet granted, before the rate changes at `now`.
    fn rebase(&mut self, now: Instant) {
        let next_due = self.due(self.granted, now);
        self.base_time = Some(next_due.max(now));
        self.base_ticket = self.granted;
    }

    /// A register was admitted (answered anything but 429) at `now`.
    pub(crate) fn admitted(&mut self, now: Instant) {
        self.rebase(now);
        self.first_admitted.get_or_insert(now);
        self.admitted_at.push_back(now);
        self.forget_before(now);
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
        self.rebase(now);
        let target = match self.admitted_rate(now) {
            Some(admitted) => admitted * UNDER_ADMITTED,
            None => self.rate * CUT,
        };
        let before = self.rate;
        self.rate = target
            .min(self.rate * UNDER_ADMITTED)
            .max(self.options.min_rate);
        tracing::debug!(
            before,
            after = self.rate,
            "a register was refused; slowing down"
        );
        self.floor_after_cut = self.rate;
    }
}

impl Pacer {
    fn forget_before(&mut self, now: Instant) {
        while self
            .admitted_at
            .front()
            .is_some_and(|at| now.duration_since(*at) >= CUT_GAP)
        {
            self.admitted_at.pop_front();
        }
    }

    /// Registers admitted per second over the last second (or since the first admission, if
    /// that is shorter, but at least a tenth of a second); `None` before any.
    fn admitted_rate(&mut self, now: Instant) -> Option<f64> {
        self.forget_before(now);
        let since = now.duration_since(self.first_admitted?).min(CUT_GAP);
        let seconds = since.as_secs_f64().max(0.1);
        Some(self.admitted_at.len() as f64 / seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_spaced_by_the_rate_and_follow_it_when_it_changes() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(PacerOptions {
            initial_rate: 10.0,
            ..PacerOptions::default()
        });
        let tickets: Vec<u64> = (0..4).map(|_| pacer.ticket()).collect();
        assert_eq!(tickets, [0, 1, 2, 3]);
        assert_eq!(pacer.due(0, t0), t0);
        assert_eq!(pacer.due(3, t0), t0 + Duration::from_millis(300));
        pacer.went(0);
        // Five admissions double the rate: the waiting tickets come sooner.
        for _ in 0..5 {
            pacer.admitted(t0);
        }
        assert_eq!(pacer.rate(), 20.0);
        let due = pacer.due(3, t0);
        assert!(due < t0 + Duration::from_millis(300), "{:?}", due - t0);
        // A refusal slows them down again, from the next ticket not yet gone.
        pacer.refused(t0);
        assert!(pacer.due(3, t0) > due);
        // Long idle, the next ticket is due at once.
        let later = t0 + Duration::from_secs(60);
        pacer.went(3);
        pacer.admitted(later);
        assert_eq!(pacer.due(4, later), later);
    }

    #[test]
    fn slow_start_doubles_until_a_refusal_which_sets_the_pace_under_what_was_admitted() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(PacerOptions::default());
        // A refusal before anything was admitted cuts by a quarter.
        pacer.refused(t0);
        assert_eq!(pacer.rate(), 37.5);
        let mut pacer = Pacer::new(PacerOptions::default());
        // 200 admitted over the second before t0 + 2 s, evenly.
        let start = t0 + Duration::from_secs(1);
        for i in 0..200 {
            pacer.admitted(start + Duration::from_millis(5 * i));
        }
        assert_eq!(pacer.rate(), 450.0, "50 + 200 x 2");
        let at = start + Duration::from_millis(999);
        pacer.refused(at);
        let cut = pacer.rate();
        assert!(
            (cut - 190.0).abs() < 0.5,
            "95 % of the 200 a second admitted: {cut}"
        );
        // More refusals of the same burst are the same signal.
        pacer.refused(at + Duration::from_millis(500));
        assert_eq!(pacer.rate(), cut);
        // A second's worth of admitted registers adds 5 % of the floor.
        let later = at + Duration::from_secs(2);
        for i in 0..190 {
            pacer.admitted(later + Duration::from_millis(5 * i));
        }
        assert!((pacer.rate() - cut * 1.05).abs() < 0.5, "{}", pacer.rate());
        // Measured over less than a second since the first admission, the rate is scaled up.
        let mut young = Pacer::new(PacerOptions::default());
        for i in 0..50 {
            young.admitted(t0 + Duration::from_millis(4 * i));
        }
        young.refused(t0 + Duration::from_millis(250));
        // 200 a second admitted, but it was sending 150: a refusal always slows down.
        assert!((young.rate() - 142.5).abs() < 0.01, "{}", young.rate());
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
            pacer.admitted(t0);
        }
        assert_eq!(pacer.rate(), 3.0);
        for i in 0..10 {
            pacer.refused(t0 + Duration::from_secs(i));
        }
        assert_eq!(pacer.rate(), 1.0);
        let at = t0 + Duration::from_secs(9);
        let (first, second) = (pacer.ticket(), pacer.ticket());
        assert!(pacer.due(second, at) >= pacer.due(first, at) + Duration::from_secs(1));
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
