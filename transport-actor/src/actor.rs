//! `ProvisioningTransportActor`: the actix shell around the [`Session`].
//!
//! Handlers feed the session; the actor carries out the session's actions on the MQTT link and
//! feeds the link's events back. Replies travel on oneshot channels, so no handler ever blocks
//! the actor's mailbox while a request is in flight.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use actix::{
    Actor, Addr, AsyncContext, Context, Handler, Message, ResponseFuture, SpawnHandle, Supervised,
};
use dps_messages::error::{TransportError, TransportErrorKind};
use dps_messages::{
    Authentication, Cancel, Disconnect, Operation, ProvisioningError, QueryStatus, Register,
    RegistrationRequest, SetAuthentication,
};
use tokio::sync::oneshot;

use crate::RequestResult;
use crate::config::TransportConfig;
use crate::link::{Link, LinkEventMsg};
use crate::session::{Action, Command, LinkEvent, Reply, Session, State, Token};

/// The mailbox size of a transport started with
/// [`ProvisioningTransportActor::start_on_runtime`], as actix's own default.
const MAILBOX_CAPACITY: usize = 16;

/// Asks the actor for its [`State`]: for a supervisor deciding whether a transport stuck in
/// [`State::Connecting`] deserves a [`Restart`], or a health endpoint that reports it.
///
/// ```no_run
/// # use dps_transport_actor::{GetState, ProvisioningTransportActor, State};
/// # async fn example(transport: actix::Addr<ProvisioningTransportActor>) -> Result<(), actix::MailboxError> {
/// if transport.send(GetState).await? == State::Disconnected {
///     println!("idle");
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "State")]
pub struct GetState;

/// The DPS device transport over MQTT (`Mqtt`) or MQTT over WebSocket (`MqttWs`), as an actor.
///
/// Send it [`SetAuthentication`] once, then [`Register`] and [`QueryStatus`]; [`Cancel`] and
/// [`Disconnect`] end what is in flight. Each request gets exactly one answer. [`Restart`]
/// answers every pending request with a [`TransportErrorKind::Restarted`] error, drops the
/// connection and starts again from [`State::Disconnected`], keeping its credentials; the actor
/// also implements [`Supervised`].
///
/// ```no_run
/// use actix::Actor;
/// use dps_messages::{Protocol, Register, RegistrationRequest, SetAuthentication, SymmetricKey};
/// use dps_transport_actor::{ProvisioningTransportActor, TransportConfig};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let config = TransportConfig::builder(Protocol::Mqtt).build()?;
/// let transport = ProvisioningTransportActor::new(config).start();
/// let key = SymmetricKey::new("O+H9VTcdJP0Tqkl7bh4nVG0OJNrAataMpuWB54D0VEc=")?;
/// transport.send(SetAuthentication(key.into())).await?;
/// let request = RegistrationRequest::new("0ne00000001", "my-device");
/// let response = transport.send(Register { request }).await??;
/// println!("{:?} retry in {:?}", response.result.status, response.polling_interval);
/// # Ok(()) }
/// ```
pub struct ProvisioningTransportActor {
    config: TransportConfig,
    /// The protocol's state, the credentials among it.
    session: Session,
    /// The link the session has open, if any: an IO handle, never consulted for protocol state.
    link: Option<Link>,
    waiters: HashMap<Token, oneshot::Sender<Reply>>,
    next_token: Token,
    timer: Option<SpawnHandle>,
}

impl ProvisioningTransportActor {
    /// A disconnected transport with `config` and no credentials yet: send it
    /// [`SetAuthentication`] before any request, or build it
    /// [`with_authentication`](Self::with_authentication).
    pub fn new(config: TransportConfig) -> Self {
        let session = Session::new(config.inner.session.clone());
        Self {
            config,
            session,
            link: None,
            waiters: HashMap::new(),
            next_token: 0,
            timer: None,
        }
    }

    /// The same transport with `auth` as its credentials, as [`SetAuthentication`] would set
    /// them (SRS 18_001).
    ///
    /// ```no_run
    /// use actix::Actor;
    /// use dps_messages::{Protocol, SymmetricKey};
    /// use dps_transport_actor::{ProvisioningTransportActor, TransportConfig};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let key = SymmetricKey::new("O+H9VTcdJP0Tqkl7bh4nVG0OJNrAataMpuWB54D0VEc=")?;
    /// let config = TransportConfig::builder(Protocol::Mqtt).build()?;
    /// let transport = ProvisioningTransportActor::new(config).with_authentication(key).start();
    /// # let _ = transport; Ok(()) }
    /// ```
    pub fn with_authentication(mut self, auth: impl Into<Authentication>) -> Self {
        self.session.set_authentication(auth.into());
        self
    }

    /// Starts this transport on its MQTT runtime thread, beside its connections, and returns
    /// its address, usable from any thread: no actix system is needed.
    ///
    /// The actor and its connection exchange about a dozen messages per registration; on one
    /// thread none of them has to wake another thread, which cuts the process's context
    /// switches by about 40 % when many devices provision at once (`dps bench` uses this). The
    /// actor stops when its last address is dropped, not with the caller's actix system, and
    /// is not supervised: use [`Actor::start`] or [`actix::Supervisor`] on your own arbiter for
    /// that.
    pub fn start_on_runtime(self) -> Result<Addr<Self>, ProvisioningError> {
        let (tx, rx) = actix::dev::channel::channel(MAILBOX_CAPACITY);
        let runtime = self.config.inner.runtime.clone();
        runtime.run(move || {
            Context::with_receiver(rx).run(self);
        })?;
        Ok(Addr::new(tx))
    }

    /// The session's state.
    pub fn state(&self) -> State {
        self.session.state()
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        self.next_token
    }

    /// Hands the session `make(token)` and returns where its answer will come.
    fn command(
        &mut self,
        ctx: &mut Context<Self>,
        make: impl FnOnce(Token) -> Command,
    ) -> oneshot::Receiver<Reply> {
        let token = self.token();
        let (tx, rx) = oneshot::channel();
        self.waiters.insert(token, tx);
        self.session.handle_command(make(token), Instant::now());
        self.drive(ctx);
        rx
    }

    /// Carries out everything the session asks, then arms the timer for its next deadline.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        while let Some(action) = self.session.poll_action() {
            match action {
                Action::Open { link, connect } => {
                    tracing::debug!(?link, client_id = connect.client_id, endpoint = %connect.endpoint, "connecting");
                    let inner = &self.config.inner;
                    let events = ctx.address().recipient().downgrade();
                    // Replacing a link closes the old one (dropping its handle).
                    match Link::open(&inner.runtime, link, *connect, &inner.link, events) {
                        Ok(opened) => self.link = Some(opened),
                        Err(error) => self.session.handle_link_event(
                            link,
                            LinkEvent::ConnectFailed(error),
                            Instant::now(),
                        ),
                    }
                }
                Action::Link(link, action) => match &self.link {
                    Some(current) if current.id == link => current.send(action),
                    _ => tracing::trace!(?link, ?action, "no such link"),
                },
                // Dropping the handle closes a link that is still open.
                Action::Abandon { link } => {
                    if self.link.as_ref().is_some_and(|current| current.id == link) {
                        self.link = None;
                    }
                }
                Action::Reply { token, reply } => match self.waiters.remove(&token) {
                    Some(waiter) => drop(waiter.send(reply)),
                    None => tracing::error!(token, ?reply, "a reply for no caller"),
                },
            }
        }
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        if let Some(at) = self.session.poll_timeout() {
            let after = at.saturating_duration_since(Instant::now());
            self.timer = Some(ctx.run_later(after, |actor, ctx| {
                actor.timer = None;
                actor.session.handle_timeout(Instant::now());
                actor.drive(ctx);
            }));
        }
    }

    /// Answers everything pending with [`TransportErrorKind::Restarted`], drops the connection
    /// and starts again from [`State::Disconnected`] with the same credentials.
    fn restart(&mut self, ctx: &mut Context<Self>) {
        tracing::info!("transport actor restarting");
        self.abort(ctx, restarted());
    }

    /// Hands the session a register or a poll, and returns its answer.
    fn request(
        &mut self,
        ctx: &mut Context<Self>,
        operation: Operation,
        request: RegistrationRequest,
    ) -> ResponseFuture<RequestResult> {
        let rid = uuid::Uuid::new_v4().to_string();
        let reply = self.command(ctx, |token| Command::Request {
            token,
            operation,
            request,
            rid,
            made_at: SystemTime::now(),
        });
        Box::pin(async move { response(reply.await) })
    }

    /// Answers everything pending with `error` and drops the connection.
    fn abort(&mut self, ctx: &mut Context<Self>, error: ProvisioningError) {
        self.session.abort(error);
        self.drive(ctx);
        // Anything the session did not know about (it cannot happen, but never leave a caller
        // hanging): a dropped sender answers "shut down".
        self.waiters.clear();
    }
}

/// The answer to a register or poll: a response, or why there is none.
fn response(reply: Result<Reply, oneshot::error::RecvError>) -> RequestResult {
    match reply {
        Ok(Reply::Response(result)) => result.map(|response| *response),
        Ok(Reply::Done(_)) => Err(mismatched()),
        Err(_) => Err(shut_down()),
    }
}

/// The answer to a cancel or disconnect.
fn done(reply: Result<Reply, oneshot::error::RecvError>) -> Result<(), ProvisioningError> {
    match reply {
        Ok(Reply::Done(result)) => result,
        Ok(Reply::Response(_)) => Err(mismatched()),
        Err(_) => Err(shut_down()),
    }
}

/// The session answered a request with the wrong kind of reply: a bug, reported, never a hang.
fn mismatched() -> ProvisioningError {
    tracing::error!("the session answered with the wrong kind of reply");
    TransportError::new(
        TransportErrorKind::Shutdown,
        "internal error: the wrong kind of reply",
    )
    .into()
}

fn shut_down() -> ProvisioningError {
    TransportError::new(TransportErrorKind::Shutdown, "the transport actor stopped").into()
}

fn restarted() -> ProvisioningError {
    TransportError::new(
        TransportErrorKind::Restarted,
        "the transport actor restarted while the request waited",
    )
    .into()
}

impl Actor for ProvisioningTransportActor {
    type Context = Context<Self>;

    fn stopped(&mut self, ctx: &mut Self::Context) {
        self.abort(ctx, shut_down());
    }
}

/// Under an [`actix::Supervisor`], an actor that stopped starts again: actix runs
/// [`Actor::stopped`] (which answers what was pending with a shutdown error) and then
/// `restarting`, which starts from [`State::Disconnected`] with the same credentials.
/// [`Restart`] does not stop the actor at all.
impl Supervised for ProvisioningTransportActor {
    fn restarting(&mut self, ctx: &mut Self::Context) {
        self.restart(ctx);
    }
}

impl Handler<SetAuthentication> for ProvisioningTransportActor {
    type Result = ();

    fn handle(&mut self, msg: SetAuthentication, _: &mut Context<Self>) {
        self.session.set_authentication(msg.0);
    }
}

impl Handler<Register> for ProvisioningTransportActor {
    type Result = ResponseFuture<RequestResult>;

    fn handle(&mut self, msg: Register, ctx: &mut Context<Self>) -> Self::Result {
        self.request(ctx, Operation::Register, msg.request)
    }
}

impl Handler<QueryStatus> for ProvisioningTransportActor {
    type Result = ResponseFuture<RequestResult>;

    fn handle(&mut self, msg: QueryStatus, ctx: &mut Context<Self>) -> Self::Result {
        self.request(ctx, Operation::poll(msg.operation_id), msg.request)
    }
}

impl Handler<Cancel> for ProvisioningTransportActor {
    type Result = ResponseFuture<Result<(), ProvisioningError>>;

    fn handle(&mut self, _: Cancel, ctx: &mut Context<Self>) -> Self::Result {
        let reply = self.command(ctx, |token| Command::Cancel { token });
        Box::pin(async move { done(reply.await) })
    }
}

impl Handler<Disconnect> for ProvisioningTransportActor {
    type Result = ResponseFuture<Result<(), ProvisioningError>>;

    fn handle(&mut self, msg: Disconnect, ctx: &mut Context<Self>) -> Self::Result {
        let reply = self.command(ctx, |token| Command::Disconnect {
            token,
            grace: msg.grace,
        });
        Box::pin(async move { done(reply.await) })
    }
}

impl Handler<LinkEventMsg> for ProvisioningTransportActor {
    type Result = ();

    fn handle(&mut self, msg: LinkEventMsg, ctx: &mut Context<Self>) {
        self.session
            .handle_link_event(msg.link, msg.event, Instant::now());
        self.drive(ctx);
    }
}

impl Handler<GetState> for ProvisioningTransportActor {
    type Result = actix::MessageResult<GetState>;

    fn handle(&mut self, _: GetState, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(self.session.state())
    }
}

/// Restarts the transport in place, supervised or not: every request and disconnect waiting is
/// answered with a [`TransportErrorKind::Restarted`] error (send it again), the connection is
/// dropped, and the actor starts again from [`State::Disconnected`] with its credentials. For a
/// supervisor that suspects the connection is stuck.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Restart;

impl Handler<Restart> for ProvisioningTransportActor {
    type Result = ();

    fn handle(&mut self, _: Restart, ctx: &mut Context<Self>) {
        self.restart(ctx);
    }
}
