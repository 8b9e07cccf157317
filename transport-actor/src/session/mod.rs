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
//!
//! # Driving a session
//!
//! A driver (the actor; the simulation in tests) owns one session and keeps three promises:
//!
//! 1. It hands the session every input with the current time: a caller's [`Command`]
//!    ([`Session::handle_command`]), an event of a link ([`Session::handle_link_event`]), and
//!    the passing of the deadline ([`Session::handle_timeout`]).
//! 2. After each input it takes every [`Action`] with [`Session::poll_action`] until there is
//!    none, and carries them out in order: it opens a link on [`Action::Open`] with the
//!    CONNECT given, and drops it on [`Action::Abandon`], which comes exactly once per link.
//! 3. It keeps one timer at [`Session::poll_timeout`], asked again after every input.
//!
//! Every request then gets exactly one [`Reply`], by its deadline.

mod api;
mod phase;
mod transitions;

use std::fmt;
use std::time::{Duration, Instant};

use dps_messages::connect::ConnectOptions;
use dps_messages::{Authentication, ProvisioningError};

pub(crate) use self::api::{Action, Command, LinkAction, LinkEvent, LinkId, Reply, Token};
use self::phase::Phase;
use self::transitions::Effects;

/// How long the transport waits for each stage of a request; set all at once with
/// [`TransportConfigBuilder::timeouts`](crate::TransportConfigBuilder::timeouts), or one by one
/// with its `*_timeout` methods. Each that passes ends the request with a
/// [`ProvisioningError::Timeout`] naming its stage.
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
pub(crate) struct SessionConfig {
    /// The protocol, keep-alive and SAS token lifetime of every CONNECT.
    pub(crate) connect: ConnectOptions,
    /// Deadlines per stage.
    pub(crate) timeouts: Timeouts,
    /// The polling interval when the service gives no `retry-after`.
    pub(crate) default_polling_interval: Duration,
}

/// Where a transport stands, as [`GetState`](crate::GetState) reports it; every change is also a
/// `debug` tracing event.
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
pub(crate) struct Session {
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
    /// A disconnected session, without credentials.
    pub(crate) fn new(config: SessionConfig) -> Self {
        Self {
            phase: Phase::Disconnected,
            effects: Effects::new(config),
        }
    }

    /// The current state.
    pub(crate) fn state(&self) -> State {
        self.phase.state()
    }

    /// The credentials of every connection from the next on (SRS 18_001); without them a
    /// request fails with [`AuthError::Missing`](dps_messages::error::AuthError::Missing).
    pub(crate) fn set_authentication(&mut self, auth: Authentication) {
        self.effects.auth = Some(auth);
    }

    /// The next action to carry out, in order.
    #[must_use]
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.effects.actions.pop_front()
    }

    /// When [`Session::handle_timeout`] should next be called.
    #[must_use]
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.phase.deadline().map(|deadline| deadline.at)
    }

    /// Takes a caller's command.
    pub(crate) fn handle_command(&mut self, command: Command, now: Instant) {
        self.step(|effects, phase| effects.command(phase, command, now));
    }

    /// Takes an event from link `link`; events from links the session has left are ignored.
    pub(crate) fn handle_link_event(&mut self, link: LinkId, event: LinkEvent, now: Instant) {
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
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|at| now >= at) {
            self.step(|effects, phase| effects.deadline_passed(phase, now));
        }
    }

    /// Answers everything waiting with `error` and leaves the link: for an actor that stops or
    /// restarts. The session is then [`State::Disconnected`].
    pub(crate) fn abort(&mut self, error: ProvisioningError) {
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
