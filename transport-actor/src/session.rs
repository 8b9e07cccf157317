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

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use dps_messages::outcome::{RequestKind, classify_with_default};
use dps_messages::request::POLL_BODY;
use dps_messages::topic::{ResponseTopic, poll_topic, register_topic};
use dps_messages::{
    AuthError, ConnectParams, Protocol, ProvisioningError, RegistrationRequest,
    RegistrationResponse, Stage, TransportError, TransportErrorKind,
};

/// Identifies a caller waiting for a [`Reply`].
pub type Token = u64;

/// Identifies one MQTT connection; events from a link the session has left are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkId(pub u64);

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

/// What a caller asks for.
#[derive(Debug, Clone)]
pub enum Command {
    /// Register a device (publish to the register topic with request id `rid`).
    Register {
        /// Who to answer.
        token: Token,
        /// The device.
        request: RegistrationRequest,
        /// A fresh request id.
        rid: String,
    },
    /// Poll an operation.
    QueryStatus {
        /// Who to answer.
        token: Token,
        /// The device.
        request: RegistrationRequest,
        /// The operation.
        operation_id: String,
        /// A fresh request id.
        rid: String,
    },
    /// Cancel the request in flight.
    Cancel {
        /// Who to answer.
        token: Token,
    },
    /// Cancel the request in flight, unsubscribe and disconnect.
    Disconnect {
        /// Who to answer.
        token: Token,
        /// How long the unsubscribe and the close may take before the link is dropped;
        /// `None`: [`Timeouts::disconnect`].
        grace: Option<Duration>,
    },
}

/// What the MQTT link reports.
#[derive(Debug, Clone)]
pub enum LinkEvent {
    /// CONNACK accepted.
    Connected,
    /// The connection could not be opened.
    ConnectFailed(ProvisioningError),
    /// SUBACK granted.
    Subscribed,
    /// The subscription failed or was refused.
    SubscribeFailed(ProvisioningError),
    /// The PUBACK of request `rid` arrived.
    PublishAcked {
        /// The request id.
        rid: String,
    },
    /// The publish of request `rid` failed.
    PublishFailed {
        /// The request id.
        rid: String,
        /// Why.
        error: ProvisioningError,
    },
    /// A message arrived.
    Message {
        /// Its topic.
        topic: String,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// The UNSUBSCRIBE finished.
    Unsubscribed(Result<(), ProvisioningError>),
    /// The DISCONNECT was sent and the connection closed; an error if it broke on the way.
    Closed(Result<(), ProvisioningError>),
    /// The service closed the connection cleanly without being asked to.
    ClosedByService,
    /// The connection broke without being asked to close (a reset, a protocol violation by
    /// the service, a keep-alive that went unanswered).
    ConnectionLost(ProvisioningError),
}

/// What the session asks of the link, or says to a caller.
#[derive(Debug, Clone)]
pub enum Action {
    /// Open a new connection with these parameters.
    Connect {
        /// The new link.
        link: LinkId,
        /// Endpoint, clientId, username, clean session. Boxed, as [`Reply::Response`] is: the
        /// largest variant sets the size of every slot in the queue the session keeps.
        params: Box<ConnectParams>,
    },
    /// Subscribe to the response topic at QoS 1.
    Subscribe {
        /// On this link.
        link: LinkId,
    },
    /// Publish at QoS 1.
    Publish {
        /// On this link.
        link: LinkId,
        /// The request id.
        rid: String,
        /// The topic.
        topic: String,
        /// The body.
        payload: Vec<u8>,
    },
    /// Unsubscribe from the response topic.
    Unsubscribe {
        /// On this link.
        link: LinkId,
    },
    /// Send DISCONNECT if connected, and close. The session has left the link unless it is
    /// [`State::Disconnecting`] and waits for [`LinkEvent::Closed`].
    Close {
        /// This link.
        link: LinkId,
    },
    /// Answer a caller.
    Reply {
        /// The caller.
        token: Token,
        /// The answer.
        reply: Reply,
    },
}

/// An answer to a caller.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The answer to a register or poll. Boxed: actions wait in a queue whose capacity the
    /// session keeps, so every action is as small as the largest one.
    Response(Result<Box<RegistrationResponse>, ProvisioningError>),
    /// The answer to a cancel or disconnect.
    Done(Result<(), ProvisioningError>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum OpKind {
    Register,
    Poll { operation_id: String },
}

/// A register or poll in flight.
#[derive(Debug, Clone)]
struct Op {
    token: Token,
    kind: OpKind,
    rid: String,
    payload: Vec<u8>,
    acked: bool,
}

impl Op {
    fn topic(&self) -> String {
        match &self.kind {
            OpKind::Register => register_topic(&self.rid),
            OpKind::Poll { operation_id } => poll_topic(&self.rid, operation_id),
        }
    }

    fn request_kind(&self) -> RequestKind<'_> {
        match &self.kind {
            OpKind::Register => RequestKind::Register,
            OpKind::Poll { operation_id } => RequestKind::Poll { operation_id },
        }
    }
}

#[derive(Debug)]
enum Phase {
    Disconnected,
    Connecting {
        link: LinkId,
        op: Op,
        subscribing: bool,
    },
    Connected {
        link: LinkId,
    },
    InRequest {
        link: LinkId,
        op: Op,
    },
    Disconnecting {
        link: LinkId,
        waiters: Vec<Token>,
        unsubscribed: Option<Result<(), ProvisioningError>>,
        /// A request that came during the disconnect: it starts once the link is closed, as
        /// the Node transport defers it.
        next: Option<Box<Deferred>>,
    },
}

/// A request waiting for a disconnect to end.
#[derive(Debug)]
struct Deferred {
    params: ConnectParams,
    op: Op,
}

impl Phase {
    fn state(&self) -> State {
        match self {
            Phase::Disconnected => State::Disconnected,
            Phase::Connecting { .. } => State::Connecting,
            Phase::Connected { .. } => State::Connected,
            Phase::InRequest { .. } => State::InRequest,
            Phase::Disconnecting { .. } => State::Disconnecting,
        }
    }

    /// What a connection lost now was waiting for, for the error that reports it.
    fn waiting_for(&self) -> &'static str {
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

    fn link(&self) -> Option<LinkId> {
        match self {
            Phase::Disconnected => None,
            Phase::Connecting { link, .. }
            | Phase::Connected { link }
            | Phase::InRequest { link, .. }
            | Phase::Disconnecting { link, .. } => Some(*link),
        }
    }
}

/// One device's MQTT session with DPS.
pub struct Session {
    config: SessionConfig,
    phase: Phase,
    /// The state last reported, so that each transition is logged from and to.
    shown: State,
    /// Who the connection is for; a request for another device must not reuse it.
    connected_as: Option<ConnectParams>,
    next_link: u64,
    deadline: Option<(Instant, Stage, Duration)>,
    authenticated: bool,
    actions: VecDeque<Action>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("state", &self.state())
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl Session {
    /// A disconnected session.
    pub fn new(config: SessionConfig) -> Self {
        Self {
            config,
            phase: Phase::Disconnected,
            shown: State::Disconnected,
            connected_as: None,
            next_link: 0,
            deadline: None,
            authenticated: false,
            actions: VecDeque::new(),
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.phase.state()
    }

    /// Whether credentials are set; without them a request that needs a connection fails with
    /// [`AuthError::Missing`].
    pub fn set_authenticated(&mut self, authenticated: bool) {
        self.authenticated = authenticated;
    }

    /// The next action to carry out, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Session::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline.map(|(at, _, _)| at)
    }

    /// Takes a caller's command.
    pub fn handle_command(&mut self, command: Command, now: Instant) {
        match command {
            Command::Register {
                token,
                request,
                rid,
            } => self.request(
                token,
                &request,
                OpKind::Register,
                rid,
                request.register_body(),
                now,
            ),
            Command::QueryStatus {
                token,
                request,
                operation_id,
                rid,
            } => {
                let kind = OpKind::Poll { operation_id };
                self.request(token, &request, kind, rid, POLL_BODY.to_vec(), now)
            }
            Command::Cancel { token } => self.cancel(token),
            Command::Disconnect { token, grace } => self.disconnect(token, grace, now),
        }
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
        match (
            std::mem::replace(&mut self.phase, Phase::Disconnected),
            event,
        ) {
            // SRS 18_042: after connecting, subscribe to the response topic.
            (
                Phase::Connecting {
                    link,
                    op,
                    subscribing: false,
                },
                LinkEvent::Connected,
            ) => {
                self.actions.push_back(Action::Subscribe { link });
                self.set_deadline(now, Stage::Subscribe, self.config.timeouts.subscribe);
                self.enter(Phase::Connecting {
                    link,
                    op,
                    subscribing: true,
                });
            }
            (
                Phase::Connecting {
                    link,
                    op,
                    subscribing: true,
                },
                LinkEvent::Subscribed,
            ) => {
                self.publish(link, op, now);
            }
            // SRS 18_041, 18_043: a failed connect or subscribe fails the request;
            // SRS 18_051: and disconnects the transport.
            (
                Phase::Connecting { link, op, .. },
                LinkEvent::ConnectFailed(e) | LinkEvent::SubscribeFailed(e),
            ) => {
                self.respond(op.token, Err(e));
                self.drop_link(link);
            }
            (Phase::InRequest { link, mut op }, LinkEvent::PublishAcked { rid })
                if rid == op.rid && !op.acked =>
            {
                op.acked = true;
                self.set_deadline(now, Stage::Response, self.config.timeouts.response);
                self.enter(Phase::InRequest { link, op });
            }
            // SRS 18_004, 18_018: a failed publish fails the request.
            (Phase::InRequest { link, op }, LinkEvent::PublishFailed { rid, error })
                if rid == op.rid =>
            {
                self.respond(op.token, Err(error));
                self.idle(link);
            }
            (Phase::InRequest { link, op }, LinkEvent::Message { topic, payload }) => {
                self.on_message(link, op, &topic, &payload);
            }
            (
                Phase::Disconnecting {
                    link,
                    waiters,
                    unsubscribed: None,
                    next,
                },
                LinkEvent::Unsubscribed(result),
            ) => {
                // SRS 18_045: after unsubscribing, disconnect.
                self.actions.push_back(Action::Close { link });
                self.enter(Phase::Disconnecting {
                    link,
                    waiters,
                    unsubscribed: Some(result),
                    next,
                });
            }
            (
                Phase::Disconnecting {
                    waiters,
                    unsubscribed,
                    next,
                    ..
                },
                LinkEvent::Closed(closed),
            ) => {
                // SRS 18_048: report a failure of either, preferring the disconnect's.
                let result = closed.and(unsubscribed.unwrap_or(Ok(())));
                self.forget_link();
                self.end_disconnect(waiters, result, next, now);
            }
            // The goal of a disconnect is reached: the service closed first.
            (
                Phase::Disconnecting {
                    waiters,
                    unsubscribed,
                    next,
                    ..
                },
                LinkEvent::ClosedByService,
            ) => {
                self.forget_link();
                self.end_disconnect(waiters, unsubscribed.unwrap_or(Ok(())), next, now);
            }
            // SRS 18_048: the connection broke while it was being closed: the disconnect failed.
            (Phase::Disconnecting { waiters, next, .. }, LinkEvent::ConnectionLost(error)) => {
                tracing::debug!(%error, "connection lost during the disconnect");
                self.drop_link(link);
                self.end_disconnect(waiters, Err(disconnect_error(error)), next, now);
            }
            (
                Phase::Connected { .. },
                LinkEvent::ClosedByService | LinkEvent::ConnectionLost(_),
            ) => {
                tracing::debug!("the connection closed while idle");
                self.drop_link(link);
            }
            (phase, event @ (LinkEvent::ClosedByService | LinkEvent::ConnectionLost(_))) => {
                let error = lost(&phase, event);
                tracing::debug!(state = ?phase.state(), %error, "connection lost");
                if let Phase::Connecting { op, .. } | Phase::InRequest { op, .. } = phase {
                    self.respond(op.token, Err(error));
                }
                self.drop_link(link);
            }
            (phase, event) => {
                tracing::debug!(state = ?phase.state(), ?event, "ignoring an event the session does not expect now");
                self.phase = phase;
            }
        }
    }

    /// Fails whatever waits whose deadline has passed at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some((at, stage, after)) = self.deadline else {
            return;
        };
        if now < at {
            return;
        }
        let error = ProvisioningError::timeout(stage, after);
        tracing::debug!(%error, "deadline passed");
        match std::mem::replace(&mut self.phase, Phase::Disconnected) {
            Phase::Connecting { link, op, .. } => {
                self.respond(op.token, Err(error));
                self.drop_link(link);
            }
            // Without a PUBACK the link cannot be trusted; without a response it can.
            Phase::InRequest { link, op } if !op.acked => {
                self.respond(op.token, Err(error));
                self.drop_link(link);
            }
            Phase::InRequest { link, op } => {
                self.respond(op.token, Err(error));
                self.idle(link);
            }
            Phase::Disconnecting {
                link,
                waiters,
                next,
                ..
            } => {
                self.drop_link(link);
                self.end_disconnect(waiters, Err(error), next, now);
            }
            phase @ (Phase::Connected { .. } | Phase::Disconnected) => {
                self.deadline = None;
                self.phase = phase;
            }
        }
    }

    /// Answers everything waiting with `error` and leaves the link: for an actor that stops or
    /// restarts. The session is then [`State::Disconnected`].
    pub fn abort(&mut self, error: ProvisioningError) {
        match std::mem::replace(&mut self.phase, Phase::Disconnected) {
            Phase::Connecting { link, op, .. } | Phase::InRequest { link, op } => {
                self.respond(op.token, Err(error));
                self.drop_link(link);
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
                self.drop_link(link);
            }
            Phase::Connected { link } => self.drop_link(link),
            Phase::Disconnected => {}
        }
    }

    fn request(
        &mut self,
        token: Token,
        request: &RegistrationRequest,
        kind: OpKind,
        rid: String,
        payload: Vec<u8>,
        now: Instant,
    ) {
        // SRS 18_035, 18_036, 18_038, 18_039, 18_049, 18_050: the connect parameters.
        let params = match ConnectParams::new(self.config.protocol, request) {
            Ok(params) => params,
            Err(e) => return self.respond(token, Err(e)),
        };
        let op = Op {
            token,
            kind,
            rid,
            payload,
            acked: false,
        };
        self.start(params, op, now);
    }

    /// Starts `op`, connecting for it first when needed.
    fn start(&mut self, params: ConnectParams, op: Op, now: Instant) {
        let token = op.token;
        match std::mem::replace(&mut self.phase, Phase::Disconnected) {
            // SRS 18_002, 18_016: connect and subscribe when disconnected.
            Phase::Disconnected if !self.authenticated => {
                self.respond(token, Err(AuthError::Missing.into()));
            }
            Phase::Disconnected => {
                self.next_link += 1;
                let link = LinkId(self.next_link);
                self.actions.push_back(Action::Connect {
                    link,
                    params: Box::new(params.clone()),
                });
                self.connected_as = Some(params);
                self.set_deadline(now, Stage::Connect, self.config.timeouts.connect);
                self.enter(Phase::Connecting {
                    link,
                    op,
                    subscribing: false,
                });
            }
            Phase::Connected { link } if self.connected_as.as_ref() != Some(&params) => {
                let who = self
                    .connected_as
                    .as_ref()
                    .map(|p| p.client_id.as_str())
                    .unwrap_or_default();
                let error = ProvisioningError::InvalidRequest(format!(
                    "the transport is connected as `{who}` to {}; disconnect before using it for `{}` at {}",
                    self.connected_as
                        .as_ref()
                        .map(|p| p.endpoint.uri())
                        .unwrap_or_default(),
                    params.client_id,
                    params.endpoint.uri(),
                ));
                self.phase = Phase::Connected { link };
                self.respond(token, Err(error));
            }
            Phase::Connected { link } => self.publish(link, op, now),
            // A request during a disconnect waits for it to end, then connects again.
            Phase::Disconnecting {
                link,
                waiters,
                unsubscribed,
                next: None,
            } => {
                self.phase = Phase::Disconnecting {
                    link,
                    waiters,
                    unsubscribed,
                    next: Some(Box::new(Deferred { params, op })),
                };
            }
            // One request at a time: the one in flight is left untouched.
            phase => {
                self.phase = phase;
                self.respond(token, Err(ProvisioningError::OperationInProgress));
            }
        }
    }

    /// SRS 18_003, 18_017: publish the request at QoS 1 and wait for its PUBACK.
    fn publish(&mut self, link: LinkId, op: Op, now: Instant) {
        self.actions.push_back(Action::Publish {
            link,
            rid: op.rid.clone(),
            topic: op.topic(),
            payload: op.payload.clone(),
        });
        self.set_deadline(now, Stage::PublishAck, self.config.timeouts.publish_ack);
        self.enter(Phase::InRequest { link, op });
    }

    /// SRS 18_010, 18_024: only `$dps/registrations/res/<status>/?$rid=<rid>` answers the request.
    fn on_message(&mut self, link: LinkId, op: Op, topic: &str, payload: &[u8]) {
        let parsed = match ResponseTopic::parse(topic) {
            Ok(parsed) => parsed,
            Err(e) => {
                tracing::warn!(topic, error = %e, "ignoring a message on an unexpected topic");
                self.phase = Phase::InRequest { link, op };
                return;
            }
        };
        if parsed.rid != op.rid {
            tracing::warn!(
                rid = parsed.rid,
                expected = op.rid,
                "ignoring a response to another request"
            );
            self.phase = Phase::InRequest { link, op };
            return;
        }
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
        self.idle(link);
    }

    fn cancel(&mut self, token: Token) {
        match std::mem::replace(&mut self.phase, Phase::Disconnected) {
            // SRS 18_062: cancelling a connect disconnects and cancels the request behind it.
            Phase::Connecting { link, op, .. } => {
                self.respond(op.token, Err(ProvisioningError::OperationCancelled));
                self.drop_link(link);
            }
            // SRS 18_033, 18_034: stop listening and cancel the request.
            Phase::InRequest { link, op } => {
                self.respond(op.token, Err(ProvisioningError::OperationCancelled));
                self.idle(link);
            }
            // SRS 18_030, 18_032: nothing to cancel.
            phase => self.phase = phase,
        }
        self.reply(token, Reply::Done(Ok(())));
    }

    fn disconnect(&mut self, token: Token, grace: Option<Duration>, now: Instant) {
        let within = grace.unwrap_or(self.config.timeouts.disconnect);
        match std::mem::replace(&mut self.phase, Phase::Disconnected) {
            // SRS 18_052: nothing to do.
            Phase::Disconnected => self.reply(token, Reply::Done(Ok(()))),
            // SRS 18_061: drop the connection and cancel the request behind it.
            Phase::Connecting { link, op, .. } => {
                self.respond(op.token, Err(ProvisioningError::OperationCancelled));
                self.drop_link(link);
                self.reply(token, Reply::Done(Ok(())));
            }
            // SRS 18_054, 18_044: unsubscribe, then disconnect.
            Phase::Connected { link } => self.begin_disconnect(link, token, within, now),
            // SRS 18_055, 18_056: cancel the request, then disconnect.
            Phase::InRequest { link, op } => {
                self.respond(op.token, Err(ProvisioningError::OperationCancelled));
                self.begin_disconnect(link, token, within, now);
            }
            // Already disconnecting: answer this caller too, within the shorter of the waits.
            Phase::Disconnecting {
                link,
                mut waiters,
                unsubscribed,
                next,
            } => {
                waiters.push(token);
                if self.deadline.is_none_or(|(at, _, _)| now + within < at) {
                    self.set_deadline(now, Stage::Disconnect, within);
                }
                self.phase = Phase::Disconnecting {
                    link,
                    waiters,
                    unsubscribed,
                    next,
                };
            }
        }
    }

    fn begin_disconnect(&mut self, link: LinkId, token: Token, within: Duration, now: Instant) {
        self.actions.push_back(Action::Unsubscribe { link });
        self.set_deadline(now, Stage::Disconnect, within);
        self.enter(Phase::Disconnecting {
            link,
            waiters: vec![token],
            unsubscribed: None,
            next: None,
        });
    }

    /// Answers the disconnect's callers with `result` once the link is left, then starts the
    /// request that waited for it, if any.
    fn end_disconnect(
        &mut self,
        waiters: Vec<Token>,
        result: Result<(), ProvisioningError>,
        next: Option<Box<Deferred>>,
        now: Instant,
    ) {
        for token in waiters {
            self.reply(token, Reply::Done(result.clone()));
        }
        if let Some(deferred) = next {
            let Deferred { params, op } = *deferred;
            self.start(params, op, now);
        }
    }

    /// Back to connected and idle.
    fn idle(&mut self, link: LinkId) {
        self.deadline = None;
        self.enter(Phase::Connected { link });
    }

    /// Closes `link` without waiting for it and forgets it.
    fn drop_link(&mut self, link: LinkId) {
        self.actions.push_back(Action::Close { link });
        self.forget_link();
    }

    /// Back to disconnected, with nothing to wait for.
    fn forget_link(&mut self) {
        self.deadline = None;
        self.connected_as = None;
        self.enter(Phase::Disconnected);
    }

    fn set_deadline(&mut self, now: Instant, stage: Stage, after: Duration) {
        self.deadline = Some((now + after, stage, after));
    }

    /// Moves to `phase`, logging the transition.
    fn enter(&mut self, phase: Phase) {
        let to = phase.state();
        if to != self.shown {
            tracing::debug!(from = ?self.shown, to = ?to, "transport state");
            self.shown = to;
        }
        self.phase = phase;
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

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
