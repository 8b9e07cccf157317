//! What the broker tolerates from one connection, so that any client, however hostile, costs
//! bounded memory and time, and every connection the broker ends has a recorded reason.
//!
//! DPS itself takes at most 96 KB per message; the rest are the broker's own bounds, far above
//! what a device needs (a registration is a handful of packets of a few hundred bytes).

use std::time::Duration;

/// The largest message DPS takes (96 KB). A PUBLISH with a larger payload ends the connection.
pub const DPS_MAX_MESSAGE_BYTES: usize = 96 * 1024;

/// How long a client has, after TLS (and the WebSocket upgrade), to send its whole CONNECT.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The bounds on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// The time from the end of TLS (or the WebSocket upgrade) to a complete CONNECT.
    pub connect_timeout: Duration,
    /// PUBLISH packets one connection may send; the next ends it as a flood.
    pub max_publishes: u32,
    /// PUBLISH payload bytes one connection may send in all; more ends it as a flood.
    pub max_publish_bytes: u64,
    /// Events a connection's record keeps; later ones are counted, not kept.
    pub max_recorded_events: usize,
    /// The bytes of each payload a record keeps (with the payload's full length).
    pub max_recorded_payload: usize,
    /// The bytes of each topic a record keeps.
    pub max_recorded_topic: usize,
}

impl Default for ConnectionLimits {
    /// A 10 s CONNECT deadline; 512 publishes or 8 MiB per connection; records of at most
    /// 1,024 events, payloads cut at 4 KiB and topics at 512 bytes.
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_publishes: 512,
            max_publish_bytes: 8 * 1024 * 1024,
            max_recorded_events: 1024,
            max_recorded_payload: 4 * 1024,
            max_recorded_topic: 512,
        }
    }
}

/// What one connection has sent so far, against its [`ConnectionLimits`].
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Usage {
    publishes: u32,
    bytes: u64,
}

impl Usage {
    /// Counts a PUBLISH with a `len`-byte payload; the reason to end the connection when it
    /// breaks a limit.
    pub(crate) fn publish(&mut self, len: usize, limits: &ConnectionLimits) -> Option<String> {
        if len > DPS_MAX_MESSAGE_BYTES {
            return Some(format!(
                "a PUBLISH of {len} bytes, over DPS's {DPS_MAX_MESSAGE_BYTES}-byte message limit"
            ));
        }
        self.publishes = self.publishes.saturating_add(1);
        self.bytes = self.bytes.saturating_add(len as u64);
        if self.publishes > limits.max_publishes {
            return Some(format!(
                "flood: more than {} PUBLISH packets on one connection",
                limits.max_publishes
            ));
        }
        if self.bytes > limits.max_publish_bytes {
            return Some(format!(
                "flood: more than {} bytes of PUBLISH payload on one connection",
                limits.max_publish_bytes
            ));
        }
        None
    }
}

/// The first `max` bytes of `text`, cut at a character boundary.
pub(crate) fn prefix(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_over_the_dps_limit_ends_the_connection_at_once() {
        let limits = ConnectionLimits::default();
        let mut usage = Usage::default();
        assert_eq!(usage.publish(DPS_MAX_MESSAGE_BYTES, &limits), None);
        let why = usage.publish(DPS_MAX_MESSAGE_BYTES + 1, &limits).unwrap();
        assert!(why.contains("98305 bytes"), "{why}");
    }

    #[test]
    fn many_publishes_or_many_bytes_are_a_flood() {
        let limits = ConnectionLimits {
            max_publishes: 3,
            max_publish_bytes: 100,
            ..ConnectionLimits::default()
        };
        let mut usage = Usage::default();
        for _ in 0..3 {
            assert_eq!(usage.publish(1, &limits), None);
        }
        assert!(
            usage
                .publish(1, &limits)
                .unwrap()
                .contains("more than 3 PUBLISH")
        );
        // Up to the limit is allowed; one byte more is a flood.
        let mut usage = Usage::default();
        assert_eq!(usage.publish(60, &limits), None);
        assert_eq!(usage.publish(40, &limits), None);
        let why = usage.publish(1, &limits).unwrap();
        assert!(why.contains("more than 100 bytes"), "{why}");
    }

    #[test]
    fn prefixes_cut_at_character_boundaries() {
        assert_eq!(prefix("abc", 5), "abc");
        assert_eq!(prefix("abcdef", 3), "abc");
        // "é" is two bytes: a cut inside it backs off before it.
        assert_eq!(prefix("aé", 2), "a");
    }
}
