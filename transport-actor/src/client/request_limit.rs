//! The service's limit on one device's requests, kept by the client itself.
//!
//! DPS answers a device that sends more than 5 requests in any 10 seconds with 429. The client
//! used to stay inside that with a floor of 2 s between requests, which also made it wait 2 s
//! where the service asked for 1. Instead it now keeps the limit as what it is, a sliding
//! window over the device's own requests (registers and polls together), and otherwise waits
//! exactly what the service asks.
//!
//! The window counts a request from the moment its answer came (or the registration gave up
//! on it), not from the moment it was handed to the transport: a request may reach the service
//! long after it was sent (a slow connect, the fleet's pace), but never after its answer. So
//! "the sixth request goes a window after the first one's answer" keeps any six requests a
//! window apart where the service counts them.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// At most a number of requests in any window of time, from one device.
///
/// [`RequestLimit::DPS`] is the service's published limit and [`ClientOptions`]'s default;
/// a test against a mock broker that does not enforce it can set
/// [`ClientOptions::request_limit`] to `None`.
///
/// [`ClientOptions`]: super::ClientOptions
/// [`ClientOptions::request_limit`]: super::ClientOptions::request_limit
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimit {
    requests: u32,
    window: Duration,
}

impl RequestLimit {
    /// DPS's limit: 5 requests per device in any 10 seconds (not adjustable on the service).
    pub const DPS: Self = Self {
        requests: 5,
        window: Duration::from_secs(10),
    };

    /// At most `requests` (at least 1) in any `window`.
    pub fn new(requests: u32, window: Duration) -> Self {
        Self {
            requests: requests.max(1),
            window,
        }
    }

    /// How many requests a window admits.
    pub fn requests(&self) -> u32 {
        self.requests
    }

    /// How long the window is.
    pub fn window(&self) -> Duration {
        self.window
    }
}

/// When a device's last requests were answered: as many as a [`RequestLimit`] admits in a
/// window, oldest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestLog(VecDeque<Instant>);

impl RequestLog {
    /// `at`, or the first moment after it at which a request keeps within `limit` (`None`: no
    /// limit).
    pub(crate) fn earliest(&self, at: Instant, limit: Option<&RequestLimit>) -> Instant {
        limit
            .and_then(|limit| self.next_allowed(limit))
            .map_or(at, |allowed| allowed.max(at))
    }

    /// The earliest moment the next request keeps within `limit`: a window after the answer of
    /// the request `limit` requests back, or `None` when fewer went.
    fn next_allowed(&self, limit: &RequestLimit) -> Option<Instant> {
        let back = self.0.len().checked_sub(limit.requests as usize)?;
        Some(self.0[back] + limit.window)
    }

    /// A request was answered (or given up on) at `at`.
    pub(crate) fn record(&mut self, at: Instant, limit: &RequestLimit) {
        self.0.push_back(at);
        while self.0.len() > limit.requests as usize {
            self.0.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sixth_request_waits_a_window_after_the_first_answer() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let limit = RequestLimit::DPS;
        let mut log = RequestLog::default();
        for i in 0..5 {
            assert_eq!(log.next_allowed(&limit), None, "request {i} may go at once");
            log.record(t0 + s(i), &limit);
        }
        assert_eq!(log.next_allowed(&limit), Some(t0 + s(10)));
        log.record(t0 + s(10), &limit);
        // The window slides: the second answer is now the oldest that counts.
        assert_eq!(log.next_allowed(&limit), Some(t0 + s(11)));
        assert_eq!(log.0.len(), 5, "the log keeps no more than a window admits");
        // A request meant for later than the window allows goes when it was meant to.
        assert_eq!(log.earliest(t0 + s(12), Some(&limit)), t0 + s(12));
        assert_eq!(log.earliest(t0 + s(2), Some(&limit)), t0 + s(11));
        assert_eq!(log.earliest(t0 + s(2), None), t0 + s(2));
    }

    #[test]
    fn a_limit_admits_at_least_one_request() {
        let t0 = Instant::now();
        assert_eq!(RequestLimit::DPS.requests(), 5);
        assert_eq!(RequestLimit::DPS.window(), Duration::from_secs(10));
        let limit = RequestLimit::new(0, Duration::from_secs(3));
        assert_eq!(limit.requests(), 1);
        assert_eq!(limit.window(), Duration::from_secs(3));
        let mut log = RequestLog::default();
        assert_eq!(log.next_allowed(&limit), None);
        log.record(t0, &limit);
        assert_eq!(log.next_allowed(&limit), Some(t0 + Duration::from_secs(3)));
    }
}
