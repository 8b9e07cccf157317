//! One simulated world: a device's registration (the client's [`Registration`] course driving
//! a [`Session`]), its links, and the mock broker's DPS core, in memory, on a virtual clock.
//!
//! Events wait in a queue ordered by virtual time; handling one may schedule others. The
//! network between the session and the service is modelled here, with the faults a seed
//! chooses: refused and silent connects, CONNACK refusals, SUBACK failures, connections lost
//! at any moment, messages delayed (past deadlines), duplicated and reordered.
//!
//! Each link has a latency of its own, the same both ways, so what one side sends in order the
//! other gets in order, as over TCP; a message arrives out of order only when the service sends
//! it out of order (a response held up past the next request, a PUBACK after the response).

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use dps_messages::connect::ConnectOptions;
use dps_messages::error::{ConnackRefusal, TransportError, TransportErrorKind};
use dps_messages::{
    Protocol, ProvisioningError, RegistrationRequest, RegistrationResponse, RegistrationResult,
    SymmetricKey,
};
use dps_mock_broker::dps::{Dps, DpsConfig, Reply as DpsReply};
use dps_mock_broker::script::{ConnectStep, Script};

use crate::client::ClientOptions;
use crate::client::RequestLog;
use crate::client::registration::{Registration, Step};
use crate::rng::Rng;
use crate::session::{
    Action, Command, LinkAction, LinkEvent, LinkId, Reply, Session, SessionConfig, State, Timeouts,
    Token,
};

/// The registration id of the simulated device.
pub(super) const DEVICE: &str = "sim-dev";

/// The device as the service sees it: its clientId and the Node SDK's api-version.
const DEVICE_CLIENT: dps_mock_broker::dps::Client<'static> = dps_mock_broker::dps::Client {
    id: DEVICE,
    api_version: "2019-03-31",
    presented: &dps_mock_broker::enrollment::Presented {
        chain: Vec::new(),
        sas: None,
    },
};

/// The simulated device's symmetric key (the simulated service checks no credentials).
const SIM_KEY: &str = dps_mock_broker::TEST_SYMMETRIC_KEY;

/// How the network and the people around the device misbehave in one run.
#[derive(Debug, Clone)]
pub(super) struct Faults {
    /// A connect is refused at the TCP level.
    pub(super) refuse_connect: f64,
    /// A connect is never answered.
    pub(super) silent_connect: f64,
    /// An open connection is lost at a random moment.
    pub(super) lose_connection: f64,
    /// A message from the service arrives twice.
    pub(super) duplicate: f64,
    /// A message from the service is held up for a long while (past deadlines).
    pub(super) hold_up: f64,
    /// The service sends a response before the PUBACK of its request.
    pub(super) reorder: f64,
    /// An UNSUBACK or a close never comes.
    pub(super) silent_close: f64,
    /// The registration is cancelled at a random moment.
    pub(super) cancel: f64,
    /// Another caller disconnects the transport at a random moment.
    pub(super) stray_disconnect: f64,
}

/// What the run measured, for the invariants.
#[derive(Debug)]
pub(super) struct Outcome {
    pub(super) started: Instant,
    pub(super) options: ClientOptions,
    /// When the registration finished, and how.
    pub(super) finished: Option<(Instant, Result<RegistrationResult, ProvisioningError>)>,
    /// The replies each caller's token got.
    pub(super) replies: BTreeMap<Token, u32>,
    /// When the device published each request.
    pub(super) publishes: Vec<Instant>,
    pub(super) opened: u32,
    pub(super) abandoned: u32,
    pub(super) final_state: State,
    /// A line per event, for a replayed seed.
    pub(super) trace: Vec<String>,
}

#[derive(Debug)]
enum Event {
    Link(LinkId, LinkEvent),
    SessionDeadline,
    CourseWake,
    CloseGraceOver,
    Cancel,
    StrayDisconnect(Option<Duration>),
}

/// What the model knows of a link.
#[derive(Debug)]
struct LinkModel {
    step: ConnectStep,
    /// One way, device to service or back.
    latency: Duration,
    /// Its final event was delivered: it says nothing more.
    ended: bool,
}

pub(super) struct World {
    rng: Rng,
    faults: Faults,
    now: Instant,
    epoch: SystemTime,
    queue: BTreeMap<(Instant, u64), Event>,
    seq: u64,
    session: Session,
    /// The session's deadline last scheduled, so each is scheduled once.
    session_deadline: Option<Instant>,
    course: Registration,
    request: RegistrationRequest,
    dps: Dps,
    links: BTreeMap<u64, LinkModel>,
    next_token: Token,
    in_flight: Option<Token>,
    closing: Option<Token>,
    out: Outcome,
    tracing: bool,
}

impl World {
    pub(super) fn new(
        rng: Rng,
        timeouts: Timeouts,
        options: ClientOptions,
        script: Script,
        faults: Faults,
        tracing: bool,
    ) -> Self {
        let now = Instant::now();
        let mut session = Session::new(SessionConfig {
            connect: ConnectOptions {
                protocol: Protocol::Mqtt,
                keep_alive: Duration::from_secs(60),
                sas_token_ttl: Duration::from_secs(3600),
            },
            timeouts,
            default_polling_interval: RegistrationResponse::DEFAULT_POLLING_INTERVAL,
        });
        session.set_authentication(SymmetricKey::new(SIM_KEY).expect("a valid key").into());
        let dps = Dps::new(DpsConfig::new("sim-hub.azure-devices.net", 1), script);
        let mut jitter = rng.clone();
        jitter.next_u64();
        Self {
            faults,
            now,
            epoch: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            queue: BTreeMap::new(),
            seq: 0,
            session,
            session_deadline: None,
            course: Registration::new(options.clone(), now, jitter, RequestLog::default()),
            request: RegistrationRequest::new("0ne00000001", DEVICE)
                .with_endpoint("mqtts://sim.invalid"),
            dps,
            links: BTreeMap::new(),
            next_token: 0,
            in_flight: None,
            closing: None,
            out: Outcome {
                started: now,
                options,
                finished: None,
                replies: BTreeMap::new(),
                publishes: Vec::new(),
                opened: 0,
                abandoned: 0,
                final_state: State::Disconnected,
                trace: Vec::new(),
            },
            tracing,
            rng,
        }
    }

    /// Runs until nothing is left to happen, and returns what was measured.
    pub(super) fn run(mut self) -> Outcome {
        let deadline = self.out.options.deadline;
        self.schedule(Duration::ZERO, Event::CourseWake);
        if self.rng.chance(self.faults.cancel) {
            let at = self.random_within(deadline);
            self.schedule(at, Event::Cancel);
        }
        if self.rng.chance(self.faults.stray_disconnect) {
            let at = self.random_within(deadline);
            let grace = self
                .rng
                .chance(0.5)
                .then(|| Duration::from_millis(self.rng.below(3_000)));
            self.schedule(at, Event::StrayDisconnect(grace));
        }
        // Far past every deadline: a run that gets here is a hang, which the invariants show.
        let give_up = self.now + deadline + Duration::from_secs(3_600);
        while let Some(((at, _), event)) = self.queue.pop_first() {
            if at > give_up {
                break;
            }
            self.now = at;
            self.handle(event);
        }
        self.out.final_state = self.session.state();
        self.out
    }

    fn handle(&mut self, event: Event) {
        if self.tracing {
            let at = self.now - self.out.started;
            let what = match &event {
                Event::Link(link, LinkEvent::Message { topic, payload }) => {
                    format!("{link:?} message on {topic} ({} bytes)", payload.len())
                }
                other => format!("{other:?}"),
            };
            self.out.trace.push(format!("{at:>12?} {what}"));
        }
        match event {
            Event::Link(link, event) => self.deliver(link, event),
            Event::SessionDeadline => {
                self.session_deadline = None;
                self.session.handle_timeout(self.now);
            }
            Event::CourseWake => self.step_course(),
            Event::CloseGraceOver => {
                // The client stops waiting for the disconnect's answer at the grace.
                if self.closing.is_some() {
                    self.course.closed(self.now);
                    self.step_course();
                }
            }
            Event::Cancel => {
                self.course.cancel();
                self.step_course();
            }
            Event::StrayDisconnect(grace) => {
                let token = self.token();
                self.command(Command::Disconnect { token, grace });
            }
        }
        self.drain();
    }

    /// A link event, unless that link already said its last.
    fn deliver(&mut self, link: LinkId, event: LinkEvent) {
        let Some(model) = self.links.get_mut(&link.0) else {
            return;
        };
        if model.ended {
            return;
        }
        model.ended = matches!(
            event,
            LinkEvent::ConnectFailed(_)
                | LinkEvent::Closed(_)
                | LinkEvent::ClosedByService
                | LinkEvent::ConnectionLost(_)
        );
        self.session.handle_link_event(link, event, self.now);
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        self.out.replies.insert(self.next_token, 0);
        self.next_token
    }

    fn command(&mut self, command: Command) {
        self.session.handle_command(command, self.now);
    }

    /// Drives the registration as `ProvisioningClient` does, until it waits for something.
    fn step_course(&mut self) {
        if self.out.finished.is_some() {
            return;
        }
        match self.course.step(self.now) {
            Step::Send(operation) => {
                let token = self.token();
                self.in_flight = Some(token);
                let rid = format!("rid-{}", self.rng.next_u64());
                let request = self.request.clone();
                let made_at = self.epoch + (self.now - self.out.started);
                self.command(Command::Request {
                    token,
                    operation,
                    request,
                    rid,
                    made_at,
                });
                // The client races the answer with the deadline.
                let deadline = self.course.deadline();
                self.schedule_at(deadline, Event::CourseWake);
            }
            Step::Sleep(until) => self.schedule_at(until, Event::CourseWake),
            Step::Close(grace) => {
                if self.closing.is_none() {
                    let token = self.token();
                    self.closing = Some(token);
                    self.command(Command::Disconnect {
                        token,
                        grace: Some(grace),
                    });
                    self.schedule(grace, Event::CloseGraceOver);
                }
            }
            Step::Finish(outcome) => self.out.finished = Some((self.now, *outcome)),
        }
    }

    /// Carries out the session's actions, and schedules its next deadline.
    fn drain(&mut self) {
        while let Some(action) = self.session.poll_action() {
            self.act(action);
        }
        if let Some(at) = self.session.poll_timeout()
            && self.session_deadline != Some(at)
        {
            self.session_deadline = Some(at);
            self.schedule_at(at, Event::SessionDeadline);
        }
    }

    fn act(&mut self, action: Action) {
        if self.tracing {
            self.out
                .trace
                .push(format!("{:>12}   -> {}", "", describe(&action)));
        }
        match action {
            Action::Open { link, connect } => {
                self.out.opened += 1;
                let step = self.dps.next_connect_step(&connect.client_id);
                let latency = Duration::from_millis(1 + self.rng.below(80));
                self.links.insert(
                    link.0,
                    LinkModel {
                        step: step.clone(),
                        latency,
                        ended: false,
                    },
                );
                self.open(link, step);
            }
            Action::Link(link, LinkAction::Subscribe) => {
                let step = self.links.get(&link.0).map(|m| m.step.clone());
                match step {
                    Some(ConnectStep::FailSuback) => {
                        let refused = TransportError::new(TransportErrorKind::Subscribe, "0x80");
                        self.link_event(link, LinkEvent::SubscribeFailed(refused.into()));
                    }
                    Some(ConnectStep::CloseAfterSuback) => {
                        self.link_event(link, LinkEvent::Subscribed);
                        self.link_event(link, LinkEvent::ClosedByService);
                    }
                    _ => self.link_event(link, LinkEvent::Subscribed),
                }
            }
            Action::Link(
                link,
                LinkAction::Publish {
                    rid,
                    topic,
                    payload,
                },
            ) => {
                self.out.publishes.push(self.now);
                let at = self.epoch + (self.now - self.out.started);
                match self.dps.on_publish(DEVICE_CLIENT, &topic, &payload, at) {
                    DpsReply::Send {
                        topic,
                        payload,
                        delay,
                    } => {
                        let acked = LinkEvent::PublishAcked { rid };
                        if self.rng.chance(self.faults.reorder) {
                            self.message(link, delay, topic, payload);
                            self.answer(link, delay + Duration::from_millis(1), acked);
                        } else {
                            self.link_event(link, acked);
                            self.message(link, delay, topic, payload);
                        }
                    }
                    DpsReply::Silent => self.link_event(link, LinkEvent::PublishAcked { rid }),
                    DpsReply::Close { delay } => {
                        self.link_event(link, LinkEvent::PublishAcked { rid });
                        self.answer(link, delay, LinkEvent::ClosedByService);
                    }
                    DpsReply::CloseWithoutPuback => {
                        self.link_event(link, LinkEvent::ClosedByService);
                    }
                }
            }
            Action::Link(link, LinkAction::Unsubscribe) => {
                if !self.rng.chance(self.faults.silent_close) {
                    self.link_event(link, LinkEvent::Unsubscribed(Ok(())));
                }
            }
            Action::Link(link, LinkAction::Close) => {
                if !self.rng.chance(self.faults.silent_close) {
                    self.link_event(link, LinkEvent::Closed(Ok(())));
                }
            }
            Action::Abandon { .. } => self.out.abandoned += 1,
            Action::Reply { token, reply } => self.reply(token, reply),
        }
    }

    /// The connect of `link`, as the network and the script's `step` make it go.
    fn open(&mut self, link: LinkId, step: ConnectStep) {
        if self.rng.chance(self.faults.refuse_connect) {
            let refused =
                TransportError::new(TransportErrorKind::Unreachable, "connection refused");
            return self.link_event(link, LinkEvent::ConnectFailed(refused.into()));
        }
        if self.rng.chance(self.faults.silent_connect) {
            return;
        }
        match step {
            ConnectStep::Refuse { code } => {
                let refusal =
                    ConnackRefusal::from_code(code).unwrap_or(ConnackRefusal::Other(code));
                self.link_event(
                    link,
                    LinkEvent::ConnectFailed(ProvisioningError::ConnectionRefused(refusal)),
                );
            }
            ConnectStep::DropBeforeConnack => {
                let dropped =
                    TransportError::new(TransportErrorKind::Connect, "closed before CONNACK");
                self.link_event(link, LinkEvent::ConnectFailed(dropped.into()));
            }
            ConnectStep::DelayConnack { ms } => {
                self.answer(link, Duration::from_millis(ms), LinkEvent::Connected);
            }
            ConnectStep::CloseAfterConnack => {
                self.link_event(link, LinkEvent::Connected);
                self.link_event(link, LinkEvent::ClosedByService);
            }
            _ => {
                self.link_event(link, LinkEvent::Connected);
                if self.rng.chance(self.faults.lose_connection) {
                    let after = Duration::from_millis(self.rng.below(20_000));
                    let reset = TransportError::new(TransportErrorKind::ConnectionLost, "reset");
                    self.schedule(
                        after,
                        Event::Link(link, LinkEvent::ConnectionLost(reset.into())),
                    );
                }
            }
        }
    }

    /// A response the service sends `delay` after the request reached it, maybe held up
    /// longer or sent twice.
    fn message(&mut self, link: LinkId, delay: Duration, topic: String, payload: Vec<u8>) {
        let mut after = delay;
        if self.rng.chance(self.faults.hold_up) {
            after += Duration::from_millis(self.rng.below(60_000));
        }
        let event = LinkEvent::Message { topic, payload };
        if self.rng.chance(self.faults.duplicate) {
            let again = after + Duration::from_millis(1 + self.rng.below(2_000));
            self.answer(link, again, event.clone());
        }
        self.answer(link, after, event);
    }

    fn reply(&mut self, token: Token, reply: Reply) {
        *self.out.replies.entry(token).or_insert(0) += 1;
        if Some(token) == self.in_flight {
            self.in_flight = None;
            if let Reply::Response(answer) = reply {
                self.course
                    .answered(answer.map(|response| *response), self.now);
                self.step_course();
            }
        } else if Some(token) == self.closing {
            self.course.closed(self.now);
            self.step_course();
        }
    }

    /// The service's answer to what the device just sent on `link`, at once: one round trip.
    fn link_event(&mut self, link: LinkId, event: LinkEvent) {
        self.answer(link, Duration::ZERO, event);
    }

    /// The service's answer to what the device just sent, sent `after` the request reached
    /// it: it arrives a round trip plus `after` from now.
    fn answer(&mut self, link: LinkId, after: Duration, event: LinkEvent) {
        let latency = self
            .links
            .get(&link.0)
            .map_or(Duration::ZERO, |m| m.latency);
        self.schedule(latency * 2 + after, Event::Link(link, event));
    }

    fn random_within(&mut self, span: Duration) -> Duration {
        Duration::from_millis(self.rng.below(span.as_millis() as u64 + 1))
    }

    fn schedule(&mut self, after: Duration, event: Event) {
        let at = self.now + after;
        self.schedule_at(at, event);
    }

    fn schedule_at(&mut self, at: Instant, event: Event) {
        self.seq += 1;
        self.queue.insert((at.max(self.now), self.seq), event);
    }
}

/// An action in a line of the trace.
fn describe(action: &Action) -> String {
    match action {
        Action::Open { link, .. } => format!("open {link:?}"),
        Action::Link(link, LinkAction::Subscribe) => format!("subscribe on {link:?}"),
        Action::Link(link, LinkAction::Publish { topic, .. }) => {
            format!("publish {topic} on {link:?}")
        }
        Action::Link(link, LinkAction::Unsubscribe) => format!("unsubscribe on {link:?}"),
        Action::Link(link, LinkAction::Close) => format!("close {link:?}"),
        Action::Abandon { link } => format!("abandon {link:?}"),
        Action::Reply { token, reply } => {
            let said = match reply {
                Reply::Response(Ok(response)) => {
                    format!("{} {}", response.status_code, response.result.status)
                }
                Reply::Response(Err(e)) | Reply::Done(Err(e)) => e.to_string(),
                Reply::Done(Ok(())) => "done".into(),
            };
            format!("reply to {token}: {said}")
        }
    }
}
