//! Where a session stands: its [`Phase`], and everything each phase holds.
//!
//! Each phase carries exactly what it needs and nothing stale: the link, the request in flight,
//! the connection's parameters and the deadline it waits on live inside the phase, so leaving a
//! phase leaves all of them at once.

use std::time::{Duration, Instant};

use dps_messages::outcome::RequestKind;
use dps_messages::topic::{poll_topic, register_topic};
use dps_messages::{ConnectParams, ProvisioningError, Stage};

use super::State;
use super::api::{LinkId, Token};

/// What a register or poll is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum OpKind {
    Register,
    Poll { operation_id: String },
}

/// A register or poll in flight.
#[derive(Debug, Clone)]
pub(super) struct Op {
    pub(super) token: Token,
    pub(super) kind: OpKind,
    pub(super) rid: String,
    pub(super) payload: Vec<u8>,
    /// Whether its PUBACK came.
    pub(super) acked: bool,
}

impl Op {
    pub(super) fn topic(&self) -> String {
        match &self.kind {
            OpKind::Register => register_topic(&self.rid),
            OpKind::Poll { operation_id } => poll_topic(&self.rid, operation_id),
        }
    }

    pub(super) fn request_kind(&self) -> RequestKind<'_> {
        match &self.kind {
            OpKind::Register => RequestKind::Register,
            OpKind::Poll { operation_id } => RequestKind::Poll { operation_id },
        }
    }
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
    pub(super) params: Box<ConnectParams>,
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
        params: Box<ConnectParams>,
        op: Op,
        subscribing: bool,
        deadline: Deadline,
    },
    /// Connected and subscribed, nothing in flight.
    Connected {
        link: LinkId,
        params: Box<ConnectParams>,
    },
    /// `op` was published; waiting for its PUBACK, then its response.
    InRequest {
        link: LinkId,
        params: Box<ConnectParams>,
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
