//! The session's transitions: each takes the phase it leaves and returns the phase it enters,
//! so a transition that forgets where to go does not compile. What a transition asks for on
//! the way (MQTT operations, answers to callers) goes into [`Effects`].
//!
//! Every ordering, cancel and disconnect rule of the spec is one arm here, named by its
//! requirement.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use dps_messages::outcome::classify_with_default;
use dps_messages::request::POLL_BODY;
use dps_messages::topic::ResponseTopic;
use dps_messages::{
    AuthError, ConnectParams, ProvisioningError, RegistrationRequest, RegistrationResponse, Stage,
    TransportError, TransportErrorKind,
};

use super::SessionConfig;
use super::api::{Action, Command, LinkEvent, LinkId, Reply, Token};
use super::phase::{Deadline, Deferred, Op, OpKind, Phase};

/// What the transitions read and write besides the phase: the settings, and the actions they
/// ask for, in order.
#[derive(Debug)]
pub(super) struct Effects {
    pub(super) config: SessionConfig,
    pub(super) authenticated: bool,
    pub(super) actions: VecDeque<Action>,
    next_link: u64,
}

impl Effects {
    pub(super) fn new(config: SessionConfig) -> Self {
        Self {
            config,
            authenticated: false,
            actions: VecDeque::new(),
            next_link: 0,
        }
    }

    /// A caller's command.
    pub(super) fn command(&mut self, phase: Phase, command: Command, now: Instant) -> Phase {
        match command {
            Command::Register {
                token,
                request,
                rid,
            } => {
                let body = request.register_body();
                self.request(phase, token, &request, OpKind::Register, rid, body, now)
            }
            Command::QueryStatus {
                token,
                request,
                operation_id,
                rid,
            } => {
                let kind = OpKind::Poll { operation_id };
                self.request(phase, token, &request, kind, rid, POLL_BODY.to_vec(), now)
            }
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
        let timeouts = self.config.timeouts;
        match (phase, event) {
            // SRS 18_042: after connecting, subscribe to the response topic.
            (
                Phase::Connecting {
                    link,
                    params,
                    op,
                    subscribing: false,
                    ..
                },
                LinkEvent::Connected,
            ) => {
                self.actions.push_back(Action::Subscribe { link });
                Phase::Connecting {
                    link,
                    params,
                    op,
                    subscribing: true,
                    deadline: Deadline::new(now, Stage::Subscribe, timeouts.subscribe),
                }
            }
            (
                Phase::Connecting {
                    link,
                    params,
                    op,
                    subscribing: true,
                    ..
                },
                LinkEvent::Subscribed,
            ) => self.publish(link, params, op, now),
            // SRS 18_041, 18_043: a failed connect or subscribe fails the request;
            // SRS 18_051: and disconnects the transport.
            (
                Phase::Connecting { link, op, .. },
                LinkEvent::ConnectFailed(error) | LinkEvent::SubscribeFailed(error),
            ) => {
                self.respond(op.token, Err(error));
                self.abandon(link)
            }
            (
                Phase::InRequest {
                    link,
                    params,
                    mut op,
                    ..
                },
                LinkEvent::PublishAcked { rid },
            ) if rid == op.rid && !op.acked => {
                op.acked = true;
                Phase::InRequest {
                    link,
                    params,
                    op,
                    deadline: Deadline::new(now, Stage::Response, timeouts.response),
                }
            }
            // SRS 18_004, 18_018: a failed publish fails the request.
            (
                Phase::InRequest {
                    link, params, op, ..
                },
                LinkEvent::PublishFailed { rid, error },
            ) if rid == op.rid => {
                self.respond(op.token, Err(error));
                Phase::Connected { link, params }
            }
            (
                Phase::InRequest {
                    link,
                    params,
                    op,
                    deadline,
                },
                LinkEvent::Message { topic, payload },
            ) => self.message(link, params, op, deadline, &topic, &payload),
            // SRS 18_045: after unsubscribing, disconnect.
            (
                Phase::Disconnecting {
                    link,
                    waiters,
                    unsubscribed: None,
                    next,
                    deadline,
                },
                LinkEvent::Unsubscribed(result),
            ) => {
                self.actions.push_back(Action::Close { link });
                Phase::Disconnecting {
                    link,
                    waiters,
                    unsubscribed: Some(result),
                    next,
                    deadline,
                }
            }
            // SRS 18_048: report a failure of either, preferring the disconnect's.
            (
                Phase::Disconnecting {
                    link,
                    waiters,
                    unsubscribed,
                    next,
                    ..
                },
                LinkEvent::Closed(closed),
            ) => {
                let result = closed.and(unsubscribed.unwrap_or(Ok(())));
                self.end_disconnect(link, waiters, result, next, now)
            }
            // The goal of a disconnect is reached: the service closed first.
            (
                Phase::Disconnecting {
                    link,
                    waiters,
                    unsubscribed,
                    next,
                    ..
                },
                LinkEvent::ClosedByService,
            ) => self.end_disconnect(link, waiters, unsubscribed.unwrap_or(Ok(())), next, now),
            // SRS 18_048: the connection broke while it was being closed: the disconnect failed.
            (
                Phase::Disconnecting {
                    link,
                    waiters,
                    next,
                    ..
                },
                LinkEvent::ConnectionLost(error),
            ) => {
                tracing::debug!(%error, "connection lost during the disconnect");
                self.end_disconnect(link, waiters, Err(disconnect_error(error)), next, now)
            }
            (
                Phase::Connected { link, .. },
                LinkEvent::ClosedByService | LinkEvent::ConnectionLost(_),
            ) => {
                tracing::debug!("the connection closed while idle");
                self.abandon(link)
            }
            (
                phase @ (Phase::Connecting { .. } | Phase::InRequest { .. }),
                event @ (LinkEvent::ClosedByService | LinkEvent::ConnectionLost(_)),
            ) => {
                let error = lost(&phase, event);
                tracing::debug!(state = ?phase.state(), %error, "connection lost");
                match phase {
                    Phase::Connecting { link, op, .. } | Phase::InRequest { link, op, .. } => {
                        self.respond(op.token, Err(error));
                        self.abandon(link)
                    }
                    other => other,
                }
            }
            (phase, event) => {
                tracing::debug!(state = ?phase.state(), ?event, "ignoring an event the session does not expect now");
                phase
            }
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
                link, params, op, ..
            } => {
                self.respond(op.token, Err(error));
                Phase::Connected { link, params }
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
        request: &RegistrationRequest,
        kind: OpKind,
        rid: String,
        payload: Vec<u8>,
        now: Instant,
    ) -> Phase {
        // SRS 18_035, 18_036, 18_038, 18_039, 18_049, 18_050: the connect parameters.
        let params = match ConnectParams::new(self.config.protocol, request) {
            Ok(params) => Box::new(params),
            Err(error) => {
                self.respond(token, Err(error));
                return phase;
            }
        };
        let op = Op {
            token,
            kind,
            rid,
            payload,
            acked: false,
        };
        self.start(phase, params, op, now)
    }

    /// Starts `op`, connecting for it first when needed.
    fn start(&mut self, phase: Phase, params: Box<ConnectParams>, op: Op, now: Instant) -> Phase {
        match phase {
            // SRS 18_002, 18_016: connect and subscribe when disconnected.
            Phase::Disconnected if !self.authenticated => {
                self.respond(op.token, Err(AuthError::Missing.into()));
                Phase::Disconnected
            }
            Phase::Disconnected => {
                self.next_link += 1;
                let link = LinkId(self.next_link);
                self.actions.push_back(Action::Open {
                    link,
                    params: params.clone(),
                });
                let connect = self.config.timeouts.connect;
                Phase::Connecting {
                    link,
                    params,
                    op,
                    subscribing: false,
                    deadline: Deadline::new(now, Stage::Connect, connect),
                }
            }
            // A connection is for one device at one endpoint.
            Phase::Connected {
                link,
                params: current,
            } if current != params => {
                let error = ProvisioningError::InvalidRequest(format!(
                    "the transport is connected as `{}` to {}; disconnect before using it for `{}` at {}",
                    current.client_id,
                    current.endpoint.uri(),
                    params.client_id,
                    params.endpoint.uri(),
                ));
                self.respond(op.token, Err(error));
                Phase::Connected {
                    link,
                    params: current,
                }
            }
            Phase::Connected { link, params } => self.publish(link, params, op, now),
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
                next: Some(Box::new(Deferred { params, op })),
                deadline,
            },
            // One request at a time: the one in flight is left untouched.
            phase => {
                self.respond(op.token, Err(ProvisioningError::OperationInProgress));
                phase
            }
        }
    }

    /// SRS 18_003, 18_017: publish the request at QoS 1 and wait for its PUBACK.
    fn publish(&mut self, link: LinkId, params: Box<ConnectParams>, op: Op, now: Instant) -> Phase {
        self.actions.push_back(Action::Publish {
            link,
            rid: op.rid.clone(),
            topic: op.topic(),
            payload: op.payload.clone(),
        });
        let publish_ack = self.config.timeouts.publish_ack;
        Phase::InRequest {
            link,
            params,
            op,
            deadline: Deadline::new(now, Stage::PublishAck, publish_ack),
        }
    }

    /// SRS 18_010, 18_024: only `$dps/registrations/res/<status>/?$rid=<rid>` answers the
    /// request; anything else is logged and ignored.
    fn message(
        &mut self,
        link: LinkId,
        params: Box<ConnectParams>,
        op: Op,
        deadline: Deadline,
        topic: &str,
        payload: &[u8],
    ) -> Phase {
        let parsed = match ResponseTopic::parse(topic) {
            Ok(parsed) if parsed.rid == op.rid => Some(parsed),
            Ok(parsed) => {
                tracing::warn!(
                    rid = parsed.rid,
                    expected = op.rid,
                    "ignoring a response to another request"
                );
                None
            }
            Err(e) => {
                tracing::warn!(topic, error = %e, "ignoring a message on an unexpected topic");
                None
            }
        };
        let Some(parsed) = parsed else {
            return Phase::InRequest {
                link,
                params,
                op,
                deadline,
            };
        };
        // SRS 18_012 .. 18_015, 18_026 .. 18_029, 06_003 .. 06_006.
        let result = classify_with_default(
            op.request_kind(),
            &parsed,
            payload,
            self.config.default_polling_interval,
        );
        if let Ok(response) = &result
            && let Some(raw) = &response.invalid_retry_after
        {
            tracing::warn!(retry_after = raw, interval = ?response.polling_interval, "retry-after is not a whole number of seconds; using the default interval");
        }
        self.respond(op.token, result);
        Phase::Connected { link, params }
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
                link, params, op, ..
            } => {
                self.respond(op.token, Err(ProvisioningError::OperationCancelled));
                Phase::Connected { link, params }
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
            phase => phase,
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
                let next = None;
                waiters.push(token);
                let sooner = Deadline::new(now, Stage::Disconnect, within);
                Phase::Disconnecting {
                    link,
                    waiters,
                    unsubscribed,
                    next,
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
        self.actions.push_back(Action::Unsubscribe { link });
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
                let Deferred { params, op } = *deferred;
                self.start(disconnected, params, op, now)
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

/// The error for a connection that closed or broke in `phase`, naming what it was waiting for.
/// A loss before the PUBACK is the publish failing (SRS 18_004, 18_018).
fn lost(phase: &Phase, event: LinkEvent) -> ProvisioningError {
    let detail = match event {
        LinkEvent::ConnectionLost(ProvisioningError::Transport(TransportError {
            kind: TransportErrorKind::ConnectionLost,
            detail,
        })) => detail,
        // A protocol violation, say, already says all there is to say.
        LinkEvent::ConnectionLost(other) => return other,
        _ => "the service closed the connection".to_owned(),
    };
    let kind = match phase {
        Phase::InRequest { op, .. } if !op.acked => TransportErrorKind::Publish,
        _ => TransportErrorKind::ConnectionLost,
    };
    TransportError::new(kind, format!("{detail} {}", phase.waiting_for())).into()
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
