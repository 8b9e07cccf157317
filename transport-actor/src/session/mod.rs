//! The sans-IO core of the transport: the state machine of one device's MQTT session.
//!
//! Inputs are caller [`Command`]s, [`LinkEvent`]s from the MQTT link and the passing of time;
//! outputs are [`Action`]s (MQTT operations and replies to callers) and the next deadline. No
//! sockets, no runtime, no clock: `now` is always a parameter. Every ordering, cancel and
//! disconnect rule of the spec lives here and is tested here, in microseconds.
//!
//! ```text
//!                 Register / QueryStatus
//!  Disconnected ─────────────────────────▶ Connecting ──(connected, subscribed)──▶ InRequest
//!       ▲  ▲                                  │                                   │   │
//!       │  └──── connect/subscribe failed ────┘                response / failure │   │
//!       │        or cancelled                                                     ▼   │
//!       │                                            Connected ◀──────────────────┘   │
//!       │                                                │ Disconnect                  │ Disconnect
//!       └────────────── closed ── Disconnecting ◀────────┴─────────────────────────────┘
//! ```
//!
//! A request that arrives while disconnecting waits for the close, then connects again (as the
//! Node transport defers it). A connection that closes or breaks is reported with what it
//! interrupted ("before the PUBACK"); one that breaks while being closed fails the disconnect.

mod api;
mod phase;
mod transitions;

use std::fmt;
use std::time::{Duration, Instant};

use dps_messages::{Protocol, ProvisioningError};

pub use self::api::{Action, Command, LinkEvent, LinkId, Reply, Token};
use self::phase::Phase;
use self::transitions::Effects;

/// How long the session waits for each stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP, TLS, WebSocket and CONNACK.
    pub connect: Duration,
    /// SUBACK.
    pub subscribe: Duration,
    /// PUBACK of a register or poll.
    pub publish_ack: Duration,
    /// The service's response after the PUBACK.
    pub response: Duration,
    /// UNSUBACK and the close of the connection.
    pub disconnect: Duration,
}

impl Default for Timeouts {
    /// 30 seconds for every stage.
    fn default() -> Self {
        let d = Duration::from_secs(30);
        Self {
            connect: d,
            subscribe: d,
            publish_ack: d,
            response: d,
            disconnect: d,
        }
    }
}

/// The session's settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// MQTT over TLS or over WebSocket.
    pub protocol: Protocol,
    /// Deadlines per stage.
    pub timeouts: Timeouts,
    /// The polling interval when the service gives no `retry-after`.
    pub default_polling_interval: Duration,
}

/// The state a caller can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// No connection.
    Disconnected,
    /// Connecting and subscribing, on behalf of a request.
    Connecting,
    /// Connected and subscribed, no request in flight.
    Connected,
    /// A register or poll is waiting for its response.
    InRequest,
    /// Unsubscribing and disconnecting.
    Disconnecting,
}

/// One device's MQTT session with DPS.
///
/// The phase leaves the session only in `Session::step`, to be replaced by what a transition
/// returns.
pub struct Session {
    phase: Phase,
    effects: Effects,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("state", &self.state())
            .field("deadline", &self.phase.deadline())
            .finish()
    }
}

impl Session {
    /// A disconnected session.
    pub fn new(config: SessionConfig) -> Self {
        Self {
            phase: Phase::Disconnected,
            effects: Effects::new(config),
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.phase.state()
    }

    /// Whether credentials are set; without them a request that needs a connection fails with
    /// [`dps_messages::AuthError::Missing`].
    pub fn set_authenticated(&mut self, authenticated: bool) {
        self.effects.authenticated = authenticated;
    }

    /// The next action to carry out, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.effects.actions.pop_front()
    }

    /// When [`Session::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.phase.deadline().map(|deadline| deadline.at)
    }

    /// Takes a caller's command.
    pub fn handle_command(&mut self, command: Command, now: Instant) {
        self.step(|effects, phase| effects.command(phase, command, now));
    }

    /// Takes an event from link `link`; events from links the session has left are ignored.
    pub fn handle_link_event(&mut self, link: LinkId, event: LinkEvent, now: Instant) {
        if self.phase.link() != Some(link) {
            tracing::trace!(
                ?link,
                ?event,
                "ignoring an event from a link the session has left"
            );
            return;
        }
        self.step(|effects, phase| effects.event(phase, event, now));
    }

    /// Fails whatever waits whose deadline has passed at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|at| now >= at) {
            self.step(|effects, phase| effects.deadline_passed(phase, now));
        }
    }

    /// Answers everything waiting with `error` and leaves the link: for an actor that stops or
    /// restarts. The session is then [`State::Disconnected`].
    pub fn abort(&mut self, error: ProvisioningError) {
        self.step(|effects, phase| effects.abort(phase, error));
    }

    /// Runs one transition: the phase goes in, the next comes out, and the change is logged.
    fn step(&mut self, transition: impl FnOnce(&mut Effects, Phase) -> Phase) {
        let from = self.phase.state();
        let phase = std::mem::take(&mut self.phase);
        self.phase = transition(&mut self.effects, phase);
        log_transition(from, self.phase.state());
    }
}

/// Logs a change of state (every one is a tracing event); says whether there was one.
fn log_transition(from: State, to: State) -> bool {
    let changed = from != to;
    if changed {
        tracing::debug!(?from, ?to, "transport state");
    }
    changed
}

#[cfg(test)]
mod tests;
