//! Where a session stands: its [`Phase`], and everything each phase holds.
//!
//! Each phase carries exactly what it needs and nothing stale: the link, the request in flight,
//! the connection's parameters and the deadline it waits on live inside the phase, so leaving a
//! phase leaves all of them at once.

use std::time::{Duration, Instant};

use dps_messages::connect::ConnectParams;
use dps_messages::error::{Stage, TransportErrorKind};
use dps_messages::{Operation, ProvisioningError};

use super::State;
use super::api::{LinkId, Token};

/// A register or poll in flight.
#[derive(Debug, Clone)]
pub(super) struct Op {
    pub(super) token: Token,
    pub(super) operation: Operation,
    pub(super) rid: String,
    pub(super) payload: Vec<u8>,
    /// Whether its PUBACK came.
    pub(super) acked: bool,
}

/// A point in time a phase waits for, and what it waits for then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Deadline {
    pub(super) at: Instant,
    pub(super) stage: Stage,
    pub(super) after: Duration,
}

impl Deadline {
    pub(super) fn new(now: Instant, stage: Stage, after: Duration) -> Self {
        Self {
            at: now + after,
            stage,
            after,
        }
    }

    /// The error of a wait that ran out.
    pub(super) fn error(&self) -> ProvisioningError {
        ProvisioningError::timeout(self.stage, self.after)
    }
}

/// A request waiting for a disconnect to end.
#[derive(Debug)]
pub(super) struct Deferred {
    pub(super) connect: Box<ConnectParams>,
    pub(super) op: Op,
}

/// The phases of a session.
#[derive(Debug, Default)]
pub(super) enum Phase {
    #[default]
    Disconnected,
    /// Opening `link` and subscribing, for `op`.
    Connecting {
        link: LinkId,
        connect: Box<ConnectParams>,
        op: Op,
        subscribing: bool,
        deadline: Deadline,
    },
    /// Connected and subscribed, nothing in flight.
    Connected {
        link: LinkId,
        connect: Box<ConnectParams>,
    },
    /// `op` was published; waiting for its PUBACK, then its response.
    InRequest {
        link: LinkId,
        connect: Box<ConnectParams>,
        op: Op,
        deadline: Deadline,
    },
    /// Unsubscribing, then closing; `waiters` are answered when the link is closed.
    Disconnecting {
        link: LinkId,
        waiters: Vec<Token>,
        unsubscribed: Option<Result<(), ProvisioningError>>,
        /// A request that came during the disconnect: it starts once the link is closed, as
        /// the Node transport defers it.
        next: Option<Box<Deferred>>,
        deadline: Deadline,
    },
}

impl Phase {
    pub(super) fn state(&self) -> State {
        match self {
            Phase::Disconnected => State::Disconnected,
            Phase::Connecting { .. } => State::Connecting,
            Phase::Connected { .. } => State::Connected,
            Phase::InRequest { .. } => State::InRequest,
            Phase::Disconnecting { .. } => State::Disconnecting,
        }
    }

    pub(super) fn link(&self) -> Option<LinkId> {
        match self {
            Phase::Disconnected => None,
            Phase::Connecting { link, .. }
            | Phase::Connected { link, .. }
            | Phase::InRequest { link, .. }
            | Phase::Disconnecting { link, .. } => Some(*link),
        }
    }

    pub(super) fn deadline(&self) -> Option<Deadline> {
        match self {
            Phase::Connecting { deadline, .. }
            | Phase::InRequest { deadline, .. }
            | Phase::Disconnecting { deadline, .. } => Some(*deadline),
            Phase::Disconnected | Phase::Connected { .. } => None,
        }
    }

    /// What a connection lost now interrupted: the publish, before its PUBACK (SRS 18_004,
    /// 18_018), or the connection.
    pub(super) fn loss_kind(&self) -> TransportErrorKind {
        match self {
            Phase::InRequest { op, .. } if !op.acked => TransportErrorKind::Publish,
            _ => TransportErrorKind::ConnectionLost,
        }
    }

    /// What a connection lost now was waiting for, for the error that reports it.
    pub(super) fn waiting_for(&self) -> &'static str {
        match self {
            Phase::Connecting {
                subscribing: false, ..
            } => "before the CONNACK",
            Phase::Connecting {
                subscribing: true, ..
            } => "before the SUBACK",
            Phase::InRequest { op, .. } if !op.acked => "before the PUBACK",
            Phase::InRequest { .. } => "while waiting for the response",
            Phase::Connected { .. } => "while idle",
            Phase::Disconnecting { .. } => "during the disconnect",
            Phase::Disconnected => "",
        }
    }
}
