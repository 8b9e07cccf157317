//! The session's transitions: each takes the phase it leaves and returns the phase it enters,
//! so a transition that forgets where to go does not compile. What a transition asks for on
//! the way (MQTT operations, answers to callers) goes into [`Effects`].
//!
//! Every ordering, cancel and disconnect rule of the spec is one arm here, named by its
//! requirement. A link event is matched on exhaustively, event first and then phase, so a new
//! event or phase does not compile until each transition says what it does with it.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use dps_messages::connect::ConnectParams;
use dps_messages::error::{AuthError, Stage, TransportError, TransportErrorKind};
use dps_messages::response::ResponseTopic;
use dps_messages::{
    Authentication, Operation, ProvisioningError, RegistrationRequest, RegistrationResponse,
};

use super::SessionConfig;
use super::api::{Action, Command, LinkAction, LinkEvent, LinkId, Reply, Token};
use super::phase::{Deadline, Deferred, Op, Phase};

/// What the transitions read and write besides the phase: the settings, the credentials, and
/// the actions they ask for, in order.
#[derive(Debug)]
pub(super) struct Effects {
    pub(super) config: SessionConfig,
    pub(super) auth: Option<Authentication>,
    pub(super) actions: VecDeque<Action>,
    next_link: u64,
}

impl Effects {
    pub(super) fn new(config: SessionConfig) -> Self {
        Self {
            config,
            auth: None,
            actions: VecDeque::new(),
            next_link: 0,
        }
    }

    /// A caller's command.
    pub(super) fn command(&mut self, phase: Phase, command: Command, now: Instant) -> Phase {
        match command {
            Command::Request {
                token,
                operation,
                request,
                rid,
                made_at,
            } => self.request(phase, token, operation, &request, rid, made_at, now),
            Command::Cancel { token } => {
                let next = self.cancel(phase);
                self.reply(token, Reply::Done(Ok(())));
                next
            }
            Command::Disconnect { token, grace } => self.disconnect(phase, token, grace, now),
        }
    }

    /// An event of the phase's own link.
    pub(super) fn event(&mut self, phase: Phase, event: LinkEvent, now: Instant) -> Phase {
        match event {
            LinkEvent::Connected => self.connected(phase, now),
            LinkEvent::Subscribed => self.subscribed(phase, now),
            LinkEvent::ConnectFailed(error) | LinkEvent::SubscribeFailed(error) => {
                self.connect_failed(phase, error)
            }
            LinkEvent::PublishAcked { rid } => self.publish_acked(phase, &rid, now),
            LinkEvent::PublishFailed { rid, error } => self.publish_failed(phase, &rid, error),
            LinkEvent::Message { topic, payload } => self.message(phase, &topic, &payload),
            LinkEvent::Unsubscribed(result) => self.unsubscribed(phase, result),
            LinkEvent::Closed(result) => self.closed(phase, result, now),
            LinkEvent::ClosedByService => self.ended(phase, None, now),
            LinkEvent::ConnectionLost(error) => self.ended(phase, Some(error), now),
        }
    }

    /// SRS 18_042: after connecting, subscribe to the response topic.
    fn connected(&mut self, phase: Phase, now: Instant) -> Phase {
        match phase {
            Phase::Connecting {
                link,
                connect,
                op,
                subscribing: false,
                ..
            } => {
                self.actions
                    .push_back(Action::Link(link, LinkAction::Subscribe));
                let subscribe = self.config.timeouts.subscribe;
                Phase::Connecting {
                    link,
                    connect,
                    op,
                    subscribing: true,
                    deadline: Deadline::new(now, Stage::Subscribe, subscribe),
                }
            }
            phase @ (Phase::Disconnected
            | Phase::Connecting { .. }
            | Phase::Connected { .. }
            | Phase::InRequest { .. }
            | Phase::Disconnecting { .. }) => unexpected(phase, "a CONNACK"),
        }
    }

    /// Subscribed: publish the request the connection was opened for.
    fn subscribed(&mut self, phase: Phase, now: Instant) -> Phase {
        match phase {
            Phase::Connecting {
                link,
                connect,
                op,
                subscribing: true,
                ..
            } => self.publish(link, connect, op, now),
            phase @ (Phase::Disconnected
            | Phase::Connecting { .. }
            | Phase::Connected { .. }
            | Phase::InRequest { .. }
            | Phase::Disconnecting { .. }) => unexpected(phase, "a SUBACK"),
        }
    }

    /// SRS 18_041, 18_043: a failed connect or subscribe fails the request; SRS 18_051: and
    /// disconnects the transport.
    fn connect_failed(&mut self, phase: Phase, error: ProvisioningError) -> Phase {
        match phase {
            Phase::Connecting { link, op, .. } => {
                self.respond(op.token, Err(error));
                self.abandon(link)
            }
            phase @ (Phase::Disconnected
            | Phase::Connected { .. }
            | Phase::InRequest { .. }
            | Phase::Disconnecting { .. }) => unexpected(phase, "a failed connect or subscribe"),
        }
    }

    /// The request's PUBACK: now wait for its response. A PUBACK of another request, or a
    /// second one, changes nothing.
    fn publish_acked(&mut self, phase: Phase, rid: &str, now: Instant) -> Phase {
        match phase {
            Phase::InRequest {
                link,
                connect,
                mut op,
                ..
            } if rid == op.rid && !op.acked => {
                op.acked = true;
                let response = self.config.timeouts.response;
                Phase::InRequest {
                    link,
                    connect,
                    op,
                    deadline: Deadline::new(now, Stage::Response, response),
                }
            }
            phase @ (Phase::Disconnected
            | Phase::Connecting { .. }
            | Phase::Connected { .. }
            | Phase::InRequest { .. }
            | Phase::Disconnecting { .. }) => unexpected(phase, "a PUBACK"),
        }
    }

    /// SRS 18_004, 18_018: a failed publish fails the request.
    fn publish_failed(&mut self, phase: Phase, rid: &str, error: ProvisioningError) -> Phase {
        match phase {
            Phase::InRequest {
                link, connect, op, ..
            } if rid == op.rid => {
                self.respond(op.token, Err(error));
                Phase::Connected { link, connect }
            }
            phase @ (Phase::Disconnected
            | Phase::Connecting { .. }
            | Phase::Connected { .. }
            | Phase::InRequest { .. }
            | Phase::Disconnecting { .. }) => unexpected(phase, "a failed publish"),
        }
    }

    /// SRS 18_010, 18_024: only `$dps/registrations/res/<status>/?$rid=<rid>` answers the
    /// request; anything else is logged and ignored.
    fn message(&mut self, phase: Phase, topic: &str, payload: &[u8]) -> Phase {
        let Phase::InRequest {
            link,
            connect,
            op,
            deadline,
        } = phase
        else {
            tracing::warn!(
                state = ?phase.state(),
                topic,
                "ignoring a message with no request in flight"
            );
            return phase;
        };
        let parsed = match ResponseTopic::parse(topic) {
            Ok(parsed) if parsed.rid == op.rid => parsed,
            Ok(parsed) => {
                tracing::warn!(
                    rid = parsed.rid,
                    expected = op.rid,
                    "ignoring a response to another request"
                );
                return Phase::InRequest {
                    link,
                    connect,
                    op,
                    deadline,
                };
            }
            Err(e) => {
                tracing::warn!(topic, error = %e, "ignoring a message on an unexpected topic");
                return Phase::InRequest {
                    link,
                    connect,
                    op,
                    deadline,
                };
            }
        };
        // SRS 18_012 .. 18_015, 18_026 .. 18_029, 06_003 .. 06_006.
        let result =
            op.operation
                .read_response(&parsed, payload, self.config.default_polling_interval);
        if let Ok(response) = &result
            && let Some(raw) = &response.invalid_retry_after
        {
            tracing::warn!(retry_after = raw, interval = ?response.polling_interval, "retry-after is not a whole number of seconds; using the default interval");
        }
        self.respond(op.token, result);
        Phase::Connected { link, connect }
    }

    /// SRS 18_045: after unsubscribing, disconnect.
    fn unsubscribed(&mut self, phase: Phase, result: Result<(), ProvisioningError>) -> Phase {
        match phase {
            Phase::Disconnecting {
                link,
                waiters,
                unsubscribed: None,
                next,
                deadline,
            } => {
                self.actions
                    .push_back(Action::Link(link, LinkAction::Close));
                Phase::Disconnecting {
                    link,
                    waiters,
                    unsubscribed: Some(result),
                    next,
                    deadline,
                }
            }
            phase @ (Phase::Disconnected
            | Phase::Connecting { .. }
            | Phase::Connected { .. }
            | Phase::InRequest { .. }
            | Phase::Disconnecting { .. }) => unexpected(phase, "an UNSUBACK"),
        }
    }

    /// SRS 18_048: the close the session asked for is done; report a failure of either the
    /// unsubscribe or the close, preferring the close's.
    fn closed(
        &mut self,
        phase: Phase,
        closed: Result<(), ProvisioningError>,
        now: Instant,
    ) -> Phase {
        match phase {
            Phase::Disconnecting {
                link,
                waiters,
                unsubscribed,
                next,
                ..
            } => {
                let result = closed.and(unsubscribed.unwrap_or(Ok(())));
                self.end_disconnect(link, waiters, result, next, now)
            }
            // Only a disconnect asks for a close.
            phase @ (Phase::Disconnected
            | Phase::Connecting { .. }
            | Phase::Connected { .. }
            | Phase::InRequest { .. }) => unexpected(phase, "the end of a close"),
        }
    }

    /// The connection ended without the session asking: the service closed it (`lost` is
    /// `None`), or it broke.
    fn ended(&mut self, phase: Phase, lost: Option<ProvisioningError>, now: Instant) -> Phase {
        let (kind, waiting_for) = (phase.loss_kind(), phase.waiting_for());
        match phase {
            Phase::Disconnecting {
                link,
                waiters,
                unsubscribed,
                next,
                ..
            } => {
                let result = match lost {
                    // The goal of a disconnect is reached: the service closed first.
                    None => unsubscribed.unwrap_or(Ok(())),
                    // SRS 18_048: the connection broke while it was being closed: the
                    // disconnect failed.
                    Some(error) => {
                        tracing::debug!(%error, "connection lost during the disconnect");
                        Err(disconnect_error(error))
                    }
                };
                self.end_disconnect(link, waiters, result, next, now)
            }
            Phase::Connected { link, .. } => {
                tracing::debug!("the connection closed while idle");
                self.abandon(link)
            }
            Phase::Connecting { link, op, .. } | Phase::InRequest { link, op, .. } => {
                let error = match lost {
                    Some(ProvisioningError::Transport(TransportError {
                        kind: TransportErrorKind::ConnectionLost,
                        detail,
                    })) => interrupted(kind, &detail, waiting_for),
                    // A protocol violation, say, already says all there is to say.
                    Some(other) => other,
                    None => interrupted(kind, "the service closed the connection", waiting_for),
                };
                tracing::debug!(%error, "connection lost");
                self.respond(op.token, Err(error));
                self.abandon(link)
            }
            Phase::Disconnected => unexpected(phase, "the end of a connection"),
        }
    }

    /// The phase's deadline has passed.
    pub(super) fn deadline_passed(&mut self, phase: Phase, now: Instant) -> Phase {
        let Some(deadline) = phase.deadline() else {
            return phase;
        };
        let error = deadline.error();
        tracing::debug!(%error, "deadline passed");
        match phase {
            Phase::Connecting { link, op, .. } => {
                self.respond(op.token, Err(error));
                self.abandon(link)
            }
            // Without a PUBACK the link cannot be trusted; without a response it can.
            Phase::InRequest { link, op, .. } if !op.acked => {
                self.respond(op.token, Err(error));
                self.abandon(link)
            }
            Phase::InRequest {
                link, connect, op, ..
            } => {
                self.respond(op.token, Err(error));
                Phase::Connected { link, connect }
            }
            Phase::Disconnecting {
                link,
                waiters,
                next,
                ..
            } => self.end_disconnect(link, waiters, Err(error), next, now),
            phase @ (Phase::Connected { .. } | Phase::Disconnected) => phase,
        }
    }

    /// Answers everything waiting with `error` and leaves the link.
    pub(super) fn abort(&mut self, phase: Phase, error: ProvisioningError) -> Phase {
        match phase {
            Phase::Connecting { link, op, .. } | Phase::InRequest { link, op, .. } => {
                self.respond(op.token, Err(error));
                self.abandon(link)
            }
            Phase::Disconnecting {
                link,
                waiters,
                next,
                ..
            } => {
                for token in waiters {
                    self.reply(token, Reply::Done(Err(error.clone())));
                }
                if let Some(deferred) = next {
                    self.respond(deferred.op.token, Err(error));
                }
                self.abandon(link)
            }
            Phase::Connected { link, .. } => self.abandon(link),
            Phase::Disconnected => Phase::Disconnected,
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "a request's parts, taken apart once"
    )]
    fn request(
        &mut self,
        phase: Phase,
        token: Token,
        operation: Operation,
        request: &RegistrationRequest,
        rid: String,
        made_at: SystemTime,
        now: Instant,
    ) -> Phase {
        // SRS 18_001, 18_035, 18_036, 18_038, 18_039, 18_049, 18_050: the whole CONNECT. A
        // request the service would refuse is refused first, then one without credentials.
        let connect = match &self.auth {
            Some(auth) => ConnectParams::new(&self.config.connect, request, auth, made_at),
            None => request.validate().and(Err(AuthError::Missing.into())),
        };
        let connect = match connect {
            Ok(connect) => Box::new(connect),
            Err(error) => {
                self.respond(token, Err(error));
                return phase;
            }
        };
        let op = Op {
            token,
            payload: operation.body(request),
            operation,
            rid,
            acked: false,
        };
        self.start(phase, connect, op, now)
    }

    /// Starts `op`, connecting for it first when needed.
    fn start(&mut self, phase: Phase, connect: Box<ConnectParams>, op: Op, now: Instant) -> Phase {
        match phase {
            // SRS 18_002, 18_016: connect and subscribe when disconnected.
            Phase::Disconnected => {
                self.next_link += 1;
                let link = LinkId(self.next_link);
                self.actions.push_back(Action::Open {
                    link,
                    connect: connect.clone(),
                });
                let timeout = self.config.timeouts.connect;
                Phase::Connecting {
                    link,
                    connect,
                    op,
                    subscribing: false,
                    deadline: Deadline::new(now, Stage::Connect, timeout),
                }
            }
            // A connection is for one device at one endpoint.
            Phase::Connected {
                link,
                connect: current,
            } if !current.same_connection(&connect) => {
                let error = ProvisioningError::InvalidRequest(format!(
                    "the transport is connected as `{}` to {}; disconnect before using it for `{}` at {}",
                    current.client_id,
                    current.endpoint.uri(),
                    connect.client_id,
                    connect.endpoint.uri(),
                ));
                self.respond(op.token, Err(error));
                Phase::Connected {
                    link,
                    connect: current,
                }
            }
            Phase::Connected {
                link,
                connect: current,
            } => self.publish(link, current, op, now),
            // A request during a disconnect waits for it to end, then connects again.
            Phase::Disconnecting {
                link,
                waiters,
                unsubscribed,
                next: None,
                deadline,
            } => Phase::Disconnecting {
                link,
                waiters,
                unsubscribed,
                next: Some(Box::new(Deferred { connect, op })),
                deadline,
            },
            // One request at a time: the one in flight is left untouched.
            phase @ (Phase::Connecting { .. }
            | Phase::InRequest { .. }
            | Phase::Disconnecting { .. }) => {
                self.respond(op.token, Err(ProvisioningError::OperationInProgress));
                phase
            }
        }
    }

    /// SRS 18_003, 18_017: publish the request at QoS 1 and wait for its PUBACK.
    fn publish(
        &mut self,
        link: LinkId,
        connect: Box<ConnectParams>,
        op: Op,
        now: Instant,
    ) -> Phase {
        let publish = LinkAction::Publish {
            rid: op.rid.clone(),
            topic: op.operation.topic(&op.rid),
            payload: op.payload.clone(),
        };
        self.actions.push_back(Action::Link(link, publish));
        let publish_ack = self.config.timeouts.publish_ack;
        Phase::InRequest {
            link,
            connect,
            op,
            deadline: Deadline::new(now, Stage::PublishAck, publish_ack),
        }
    }

    fn cancel(&mut self, phase: Phase) -> Phase {
        match phase {
            // SRS 18_062: cancelling a connect disconnects and cancels the request behind it.
            Phase::Connecting { link, op, .. } => {
                self.respond(op.token, Err(ProvisioningError::OperationCancelled));
                self.abandon(link)
            }
            // SRS 18_033, 18_034: stop listening and cancel the request.
            Phase::InRequest {
                link, connect, op, ..
            } => {
                self.respond(op.token, Err(ProvisioningError::OperationCancelled));
                Phase::Connected { link, connect }
            }
            // The request waiting for a disconnect is the one in flight: it is cancelled.
            Phase::Disconnecting {
                link,
                waiters,
                unsubscribed,
                next: Some(deferred),
                deadline,
            } => {
                self.respond(
                    deferred.op.token,
                    Err(ProvisioningError::OperationCancelled),
                );
                Phase::Disconnecting {
                    link,
                    waiters,
                    unsubscribed,
                    next: None,
                    deadline,
                }
            }
            // SRS 18_030, 18_032: nothing to cancel.
            phase @ (Phase::Disconnected
            | Phase::Connected { .. }
            | Phase::Disconnecting { next: None, .. }) => phase,
        }
    }

    fn disconnect(
        &mut self,
        phase: Phase,
        token: Token,
        grace: Option<Duration>,
        now: Instant,
    ) -> Phase {
        let within = grace.unwrap_or(self.config.timeouts.disconnect);
        match phase {
            // SRS 18_052: nothing to do.
            Phase::Disconnected => {
                self.reply(token, Reply::Done(Ok(())));
                Phase::Disconnected
            }
            // SRS 18_061: drop the connection and cancel the request behind it.
            Phase::Connecting { link, op, .. } => {
                self.respond(op.token, Err(ProvisioningError::OperationCancelled));
                let next = self.abandon(link);
                self.reply(token, Reply::Done(Ok(())));
                next
            }
            // SRS 18_054, 18_044: unsubscribe, then disconnect.
            Phase::Connected { link, .. } => self.begin_disconnect(link, token, within, now),
            // SRS 18_055, 18_056: cancel the request, then disconnect.
            Phase::InRequest { link, op, .. } => {
                self.respond(op.token, Err(ProvisioningError::OperationCancelled));
                self.begin_disconnect(link, token, within, now)
            }
            // Already disconnecting: answer this caller too, within the shorter of the waits. A
            // request that waited to connect again after the first disconnect is cancelled, as
            // a disconnect cancels the request in flight (SRS 18_055, 18_056).
            Phase::Disconnecting {
                link,
                mut waiters,
                unsubscribed,
                next,
                deadline,
            } => {
                if let Some(deferred) = next {
                    self.respond(
                        deferred.op.token,
                        Err(ProvisioningError::OperationCancelled),
                    );
                }
                waiters.push(token);
                let sooner = Deadline::new(now, Stage::Disconnect, within);
                Phase::Disconnecting {
                    link,
                    waiters,
                    unsubscribed,
                    next: None,
                    deadline: if sooner.at < deadline.at {
                        sooner
                    } else {
                        deadline
                    },
                }
            }
        }
    }

    fn begin_disconnect(
        &mut self,
        link: LinkId,
        token: Token,
        within: Duration,
        now: Instant,
    ) -> Phase {
        self.actions
            .push_back(Action::Link(link, LinkAction::Unsubscribe));
        Phase::Disconnecting {
            link,
            waiters: vec![token],
            unsubscribed: None,
            next: None,
            deadline: Deadline::new(now, Stage::Disconnect, within),
        }
    }

    /// Leaves `link`, answers the disconnect's callers with `result`, then starts the request
    /// that waited for it, if any.
    fn end_disconnect(
        &mut self,
        link: LinkId,
        waiters: Vec<Token>,
        result: Result<(), ProvisioningError>,
        next: Option<Box<Deferred>>,
        now: Instant,
    ) -> Phase {
        let disconnected = self.abandon(link);
        for token in waiters {
            self.reply(token, Reply::Done(result.clone()));
        }
        match next {
            Some(deferred) => {
                let Deferred { connect, op } = *deferred;
                self.start(disconnected, connect, op, now)
            }
            None => disconnected,
        }
    }

    /// Leaves `link` for good.
    fn abandon(&mut self, link: LinkId) -> Phase {
        self.actions.push_back(Action::Abandon { link });
        Phase::Disconnected
    }

    fn respond(&mut self, token: Token, result: Result<RegistrationResponse, ProvisioningError>) {
        self.reply(token, Reply::Response(result.map(Box::new)));
    }

    fn reply(&mut self, token: Token, reply: Reply) {
        self.actions.push_back(Action::Reply { token, reply });
    }
}

/// The error for a connection that closed or broke, naming what it interrupted ("before the
/// PUBACK").
fn interrupted(kind: TransportErrorKind, detail: &str, waiting_for: &str) -> ProvisioningError {
    TransportError::new(kind, format!("{detail} {waiting_for}")).into()
}

/// A broken connection, reported as the disconnect's failure (SRS 18_048).
fn disconnect_error(error: ProvisioningError) -> ProvisioningError {
    match error {
        ProvisioningError::Transport(TransportError { detail, .. }) => TransportError::new(
            TransportErrorKind::Disconnect,
            format!("{detail} during the disconnect"),
        )
        .into(),
        other => other,
    }
}

/// An event the phase does not expect now (a late PUBACK, a second SUBACK): logged, and the
/// phase is kept.
fn unexpected(phase: Phase, what: &str) -> Phase {
    tracing::debug!(state = ?phase.state(), "ignoring {what}, which the session does not expect now");
    phase
}
