//! The fleet-wide pace of registrations, without IO: when the next register may go, and how
//! the pace answers the service.
//!
//! A fleet meets the service's registration quota long before its own limits. Sending
//! blindly, most requests would come back 429 and every device would back off on its own. The
//! pacer instead learns the quota and keeps to it, as TCP learns a link's:
//!
//! * **slow start**: registers are spaced at a rate that starts at `initial_rate` and grows by
//!   8 a second with each admitted one, so it doubles in under a tenth of a second. A round
//!   trip here is a millisecond; the sooner the quota is found, the less of it goes unused.
//! * **the first 429** shows the quota: a count per sliding second (DPS's per-minute quota,
//!   enforced as a rate), and the service admitted that many over the last second. From then
//!   on the pacer keeps a log of the registers it sent and lets at most that many go in any
//!   one second, as the service counts them. That uses the whole quota, bursts included: after
//!   slow start's burst the next registers go as the burst's slots free, where a smooth rate
//!   would leave them unused.
//! * **the window is a little longer than the service's**: the service counts a register when
//!   it arrives, the pacer when it goes, so the pacer's second is stretched by the slowest round
//!   trip of the last second. A slot the pacer frees is then free at the service too.
//! * **after that**: each second without a refusal adds half a percent to the limit (and at
//!   least one register), probing for room while more registers wait than the limit lets go
//!   in a second; a later 429 sets it to what was admitted over the last second, at least one
//!   less than before and never less than half, at most once a second (one burst of refusals
//!   is one signal).
//! * **quiet for longer** while registers wait: whoever shared the quota may have gone (other
//!   stations finished), so the growth doubles with each further second without a refusal,
//!   and the next 429 shows the new share. Gentle growth alone would take minutes to claim
//!   the room they left.
//!
//! The device that was refused still waits its retry-after before it tries again (its
//! [`ProvisioningClient`](crate::ProvisioningClient) sees to that), and its register leaves the
//! log: the service did not count it. A service that cannot be reached at all is an outage,
//! not a quota: registers then go one at a time as probes ([`outage`]) until it answers.

mod outage;

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use outage::Outage;

/// How a fleet paces its registrations ([`FleetOptions::pacing`](super::FleetOptions::pacing)):
/// the rate it starts at and the bounds it learns the service's quota within. The default
/// suits DPS's quotas; [`PacerOptions::unpaced`] suits a service without one.
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

impl PacerOptions {
    /// No pace until the service refuses: every register goes at once, and a 429 still sets a
    /// limit. For a service without a quota, such as a benchmark's.
    pub fn unpaced() -> Self {
        Self {
            initial_rate: f64::INFINITY,
            min_rate: 1.0,
            max_rate: f64::INFINITY,
        }
    }
}

/// Growth per admitted register in slow start, in requests per second: at rate `r`, `r`
/// admissions a second each add this, so the rate doubles in under a tenth of a second.
const SLOW_START_STEP: f64 = 8.0;
/// Growth of the limit per second without a refusal, as a share of the limit the last 429
/// left: one more register a second at DPS's 200 a second.
const GENTLE_GROWTH: f64 = 0.005;
/// The cut of a refusal in slow start when nothing was admitted to measure the quota by.
const CUT: f64 = 0.75;
/// The window the service counts its quota in. Refusals closer together than this are one
/// signal.
const WINDOW: Duration = Duration::from_secs(1);
/// How long without a refusal, while registers wait, before the growth speeds up: longer than
/// a pace at the quota goes between 429s. From then on it doubles each second.
const QUIET: Duration = Duration::from_secs(3);
/// The most the growth speeds up: 64 times, about 64 registers a second per second at DPS's
/// quota.
const MAX_BOOST: u32 = 4;
/// The longest a register's round trip may stretch the pacer's window: past this, a slow
/// answer is a slow service, not a register still on its way.
const MAX_GUARD: Duration = Duration::from_millis(250);

/// The pace.
#[derive(Debug)]
pub(crate) struct Pacer {
    options: PacerOptions,
    /// Slow start's rate, while there is no limit yet.
    rate: f64,
    /// Registers allowed in any one window, once a 429 has shown the quota.
    limit: Option<f64>,
    /// The limit right after the last 429: gentle growth is a share of it.
    floor_after_cut: f64,
    last_cut: Option<Instant>,
    /// Tickets are taken in order; in slow start ticket `n` is due `(n - base_ticket) / rate`
    /// after `base_time`. When the rate changes the base moves to the next ticket not yet
    /// granted, so waiting tickets speed up with it instead of keeping the slot they were
    /// given at a pace that no longer holds.
    next_ticket: u64,
    granted: u64,
    base_ticket: u64,
    base_time: Option<Instant>,
    /// The registers sent within the last window (and guard) that the service has not
    /// refused: the pacer's copy of the service's count. Pruned as registers go, so it holds
    /// at most a window's worth.
    sent: VecDeque<(u64, Instant)>,
    /// When registers were admitted in the last window: what a 429 says the quota is.
    admitted_at: VecDeque<Instant>,
    /// The round trips of the last window that no later one exceeds, slowest first: the
    /// front is the slowest of the window, kept without a scan of the whole window.
    slowest: VecDeque<(Instant, Duration)>,
    /// How much longer than the service's the pacer's window is: the slowest round trip of
    /// the last window. The service counts a register when it arrives, the pacer when it
    /// goes; a slot the pacer frees is free at the service once a register sent then cannot
    /// arrive before the one that held it.
    guard: Duration,
    /// Set while the service cannot be reached: registers go as probes.
    outage: Option<Outage>,
    /// Tickets not yet granted whose register will never go (its client gave up waiting):
    /// they hold no place in the queue.
    abandoned: BTreeSet<u64>,
}

impl Pacer {
    pub(crate) fn new(options: PacerOptions) -> Self {
        let rate = options
            .initial_rate
            .clamp(options.min_rate, options.max_rate);
        Self {
            options,
            rate,
            limit: None,
            floor_after_cut: rate,
            last_cut: None,
            next_ticket: 0,
            granted: 0,
            base_ticket: 0,
            base_time: None,
            sent: VecDeque::new(),
            admitted_at: VecDeque::new(),
            slowest: VecDeque::new(),
            guard: Duration::ZERO,
            outage: None,
            abandoned: BTreeSet::new(),
        }
    }

    /// Registrations per second now: slow start's rate, then the limit per window.
    pub(crate) fn rate(&self) -> f64 {
        self.limit.unwrap_or(self.rate)
    }

    /// A place in the queue of registers.
    pub(crate) fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket - 1
    }

    /// When `ticket` may go, asked at `now` (the first ticket goes at once). Waiters ask again
    /// every so often: the pace may have changed since.
    pub(crate) fn due(&mut self, ticket: u64, now: Instant) -> Instant {
        if let Some(outage) = &self.outage {
            return outage.due(self.ahead_of(ticket), now);
        }
        match self.limit {
            None => {
                let base = *self.base_time.get_or_insert(now);
                let ahead = ticket.saturating_sub(self.base_ticket) as f64;
                base + Duration::from_secs_f64(ahead / self.rate)
            }
            Some(limit) => self.slot_frees(limit, ticket, now),
        }
    }

    /// With at most `limit` registers in any window: when the slot `ticket` needs frees. The
    /// tickets not yet granted before it take the slots that free first.
    fn slot_frees(&mut self, limit: f64, ticket: u64, now: Instant) -> Instant {
        let window = WINDOW + self.guard;
        forget_before(&mut self.sent, now, window, |(_, at)| *at);
        let limit = (limit as usize).max(1);
        let ahead = self.ahead_of(ticket) as usize;
        let taken = self.sent.len() + ahead;
        if taken < limit {
            return now;
        }
        // The slot this ticket needs is the one the (taken - limit)-th register in the log
        // holds; past the log, a ticket not yet granted holds it: a window from now at least.
        match self.sent.get(taken - limit) {
            Some((_, at)) => *at + window,
            None => now + window,
        }
    }

    /// Tickets taken and not yet gone.
    fn waiting(&self) -> u64 {
        self.next_ticket
            .saturating_sub(self.granted)
            .saturating_sub(self.abandoned.len() as u64)
    }

    /// The tickets still waiting before `ticket`.
    fn ahead_of(&self, ticket: u64) -> u64 {
        let abandoned = self.abandoned.range(self.granted..ticket).count() as u64;
        ticket
            .saturating_sub(self.granted)
            .saturating_sub(abandoned)
    }

    /// `ticket`'s register will never go (its client gave up while it waited): the tickets
    /// behind it move up.
    pub(crate) fn abandon(&mut self, ticket: u64) {
        if ticket >= self.granted {
            self.abandoned.insert(ticket);
            self.skip_abandoned();
        }
    }

    /// Moves `granted` past abandoned tickets at its front.
    fn skip_abandoned(&mut self) {
        while self.abandoned.remove(&self.granted) {
            self.granted += 1;
        }
        let granted = self.granted;
        self.abandoned.retain(|&t| t >= granted);
    }

    /// `ticket` went at `now`.
    pub(crate) fn went(&mut self, ticket: u64, now: Instant) {
        self.granted = self.granted.max(ticket + 1);
        self.skip_abandoned();
        if let Some(outage) = &mut self.outage {
            outage.went(now);
        }
        self.sent.push_back((ticket, now));
        forget_before(&mut self.sent, now, WINDOW + self.guard, |(_, at)| *at);
    }

    /// Moves slow start's base to the next ticket not yet granted, before the rate changes.
    fn rebase(&mut self, now: Instant) {
        let next_due = self.due(self.granted, now);
        self.base_time = Some(next_due.max(now));
        self.base_ticket = self.granted;
    }

    /// `ticket`'s register was admitted (answered anything but 429) at `now`.
    pub(crate) fn admitted(&mut self, ticket: u64, now: Instant) {
        self.end_outage(now);
        // From the back: the registers answered are the recent ones.
        let round_trip = self
            .sent
            .iter()
            .rev()
            .find(|(t, _)| *t == ticket)
            .map_or(Duration::ZERO, |(_, at)| now.duration_since(*at));
        let round_trip = round_trip.min(MAX_GUARD);
        self.admitted_at.push_back(now);
        while self.slowest.back().is_some_and(|(_, rt)| *rt <= round_trip) {
            self.slowest.pop_back();
        }
        self.slowest.push_back((now, round_trip));
        self.forget_admitted(now);
        let waiting = self.waiting() as f64;
        match &mut self.limit {
            None => {
                self.rebase(now);
                self.rate = (self.rate + SLOW_START_STEP).min(self.options.max_rate);
            }
            // Probing for room costs a refusal, and a refused device waits its retry-after: it
            // is worth it only while more registers wait than the limit lets go in a second.
            // With fewer waiting (the fleet's concurrency is the bound, or its last devices are
            // going), more room would go unused.
            Some(limit) if waiting >= *limit => {
                // `limit` registers a second, each adding this: GENTLE_GROWTH of the floor a
                // second, and at least one register a second, so a limit cut deep (a quota
                // counted over a longer window than a second) comes back in seconds.
                // Quiet for longer than a pace at the quota stays: the growth doubles with
                // each further second, to claim room others left.
                let quiet = self
                    .last_cut
                    .map_or(Duration::ZERO, |at| now.duration_since(at))
                    .saturating_sub(QUIET);
                let boost = f64::from(1u32 << (quiet.as_secs() as u32).min(MAX_BOOST));
                let step = boost * (GENTLE_GROWTH * self.floor_after_cut).max(1.0) / *limit;
                *limit = (*limit + step).min(self.options.max_rate);
            }
            Some(_) => {}
        }
    }

    /// `ticket`'s register was refused with 429 at `now`.
    pub(crate) fn refused(&mut self, ticket: u64, now: Instant) {
        self.end_outage(now);
        // The service did not count it: its slot is free.
        self.forget_sent(ticket);
        if self
            .last_cut
            .is_some_and(|at| now.duration_since(at) < WINDOW)
        {
            return;
        }
        self.last_cut = Some(now);
        self.forget_admitted(now);
        let admitted = self.admitted_at.len() as f64;
        let before = self.rate();
        let limit = match self.limit {
            // Slow start's rate overshoots by design: what the service admitted over the last
            // window is its quota. With nothing admitted (the quota taken by others, or counted
            // over a longer window) there is no measure: a quarter off.
            None if admitted > 0.0 => admitted,
            None => before * CUT,
            // Near the quota already: at least one less than before, and one signal never
            // takes more than half.
            Some(limit) => admitted.clamp(limit / 2.0, (limit.floor() - 1.0).max(1.0)),
        }
        .clamp(self.options.min_rate, self.options.max_rate);
        tracing::debug!(
            before,
            after = limit,
            "a register was refused; slowing down"
        );
        self.limit = Some(limit);
        self.floor_after_cut = limit;
    }

    /// `ticket`'s register could not reach the service (refused, reset or timed out before any
    /// answer): the fleet probes until the service answers again.
    pub(crate) fn unreachable(&mut self, ticket: u64) {
        // The service did not count it.
        self.forget_sent(ticket);
        self.probe_failed();
    }

    /// Takes `ticket`'s register out of the log of those the service counts.
    fn forget_sent(&mut self, ticket: u64) {
        if let Some(i) = self.sent.iter().rposition(|(t, _)| *t == ticket) {
            self.sent.remove(i);
        }
    }

    /// A request (a register, or a poll: polls take no ticket) found the service unreachable.
    pub(crate) fn probe_failed(&mut self) {
        match &mut self.outage {
            Some(outage) => outage.failed_again(),
            None => {
                tracing::info!("the service cannot be reached; probing until it answers");
                self.outage = Some(Outage::new());
            }
        }
    }

    /// May a poll go at `now`? At once while the service answers; during an outage, as a probe
    /// in the registers' probe spacing (`Err` says when to ask again).
    pub(crate) fn claim_probe(&mut self, now: Instant) -> Result<(), Instant> {
        let Some(outage) = &mut self.outage else {
            return Ok(());
        };
        let next = outage.due(0, now);
        if next > now {
            return Err(next);
        }
        outage.went(now);
        Ok(())
    }

    /// A poll was answered at `now`: the service is back.
    pub(crate) fn answered(&mut self, now: Instant) {
        self.end_outage(now);
    }

    /// The service answered: the pace it had resumes, counted from `now`.
    fn end_outage(&mut self, now: Instant) {
        if self.outage.take().is_some() {
            tracing::info!("the service answers again; the pace resumes");
            self.base_ticket = self.granted;
            self.base_time = Some(now);
        }
    }

    /// Whether registers go as probes now.
    #[cfg(test)]
    pub(crate) fn in_outage(&self) -> bool {
        self.outage.is_some()
    }

    /// Forgets admissions older than a window, and sets the guard from those left.
    fn forget_admitted(&mut self, now: Instant) {
        forget_before(&mut self.admitted_at, now, WINDOW, |at| *at);
        forget_before(&mut self.slowest, now, WINDOW, |(at, _)| *at);
        self.guard = self.slowest.front().map_or(Duration::ZERO, |(_, rt)| *rt);
    }
}

/// Drops from the front of `log` what left the `window` before `now`.
fn forget_before<T>(
    log: &mut VecDeque<T>,
    now: Instant,
    window: Duration,
    at: impl Fn(&T) -> Instant,
) {
    while log
        .front()
        .is_some_and(|entry| now.duration_since(at(entry)) >= window)
    {
        log.pop_front();
    }
}

#[cfg(test)]
mod tests;
