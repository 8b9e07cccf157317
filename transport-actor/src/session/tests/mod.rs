//! The session driven through every state and input, with no sockets, one concern per file.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dps_messages::connect::{ConnectOptions, Credential, Endpoint};
use dps_messages::error::{AuthError, ProtocolError, Stage, TransportError, TransportErrorKind};
use dps_messages::{
    Operation, Protocol, ProvisioningError, RegistrationRequest, RegistrationResponse,
    RegistrationStatus, SymmetricKey,
};
use serde_json::json;

use super::*;

mod cancel;
mod connect;
mod disconnect;
mod lifecycle;
mod loss;
mod request;

const CONNECT: Duration = Duration::from_secs(1);
const SUBSCRIBE: Duration = Duration::from_secs(2);
const PUBACK: Duration = Duration::from_secs(3);
const RESPONSE: Duration = Duration::from_secs(4);
const DISCONNECT: Duration = Duration::from_secs(5);

fn config(protocol: Protocol) -> SessionConfig {
    SessionConfig {
        connect: ConnectOptions {
            protocol,
            keep_alive: Duration::from_secs(60),
            sas_token_ttl: Duration::from_secs(3600),
        },
        timeouts: Timeouts {
            connect: CONNECT,
            subscribe: SUBSCRIBE,
            publish_ack: PUBACK,
            response: RESPONSE,
            disconnect: DISCONNECT,
        },
        default_polling_interval: Duration::from_secs(2),
    }
}

fn request() -> RegistrationRequest {
    RegistrationRequest::new("scope", "dev").with_host("dps.example.net")
}

/// The device's symmetric key.
const KEY: &str = dps_mock_broker::TEST_SYMMETRIC_KEY;

/// The wall-clock time every request is made at.
fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// A register of `request` as request `rid`, answered to `token`.
fn register(token: Token, request: RegistrationRequest, rid: &str) -> Command {
    Command::Request {
        token,
        operation: Operation::Register,
        request,
        rid: rid.into(),
        made_at: wall(),
    }
}

struct H {
    s: Session,
    now: Instant,
    link: LinkId,
}

impl H {
    fn new() -> Self {
        Self::with(Protocol::Mqtt)
    }

    fn with(protocol: Protocol) -> Self {
        let mut h = Self::unauthenticated(protocol);
        h.s.set_authentication(SymmetricKey::new(KEY).unwrap().into());
        h
    }

    /// A session given no credentials.
    fn unauthenticated(protocol: Protocol) -> Self {
        let s = Session::new(config(protocol));
        Self {
            s,
            now: Instant::now(),
            link: LinkId(0),
        }
    }

    fn drain(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.s.poll_action()).collect()
    }

    fn command(&mut self, command: Command) -> Vec<Action> {
        self.s.handle_command(command, self.now);
        self.drain()
    }

    fn event(&mut self, event: LinkEvent) -> Vec<Action> {
        self.s.handle_link_event(self.link, event, self.now);
        self.drain()
    }

    fn register(&mut self, token: Token, rid: &str) -> Vec<Action> {
        self.command(register(token, request(), rid))
    }

    fn poll(&mut self, token: Token, rid: &str, operation_id: &str) -> Vec<Action> {
        self.command(Command::Request {
            token,
            operation: Operation::poll(operation_id),
            request: request(),
            rid: rid.into(),
            made_at: wall(),
        })
    }

    fn advance(&mut self, by: Duration) -> Vec<Action> {
        self.now += by;
        self.s.handle_timeout(self.now);
        self.drain()
    }

    /// Register, and take the link through connect and subscribe to the publish.
    fn in_request(token: Token, rid: &str) -> Self {
        let mut h = Self::new();
        let actions = h.register(token, rid);
        let Action::Open { link, .. } = &actions[0] else {
            panic!("{actions:?}")
        };
        h.link = *link;
        h.event(LinkEvent::Connected);
        h.event(LinkEvent::Subscribed);
        assert_eq!(h.s.state(), State::InRequest);
        h
    }

    /// Connected and idle after one answered register.
    fn connected() -> Self {
        let mut h = Self::in_request(1, "r1");
        h.event(LinkEvent::PublishAcked { rid: "r1".into() });
        h.event(response(
            202,
            "r1",
            json!({"operationId": "op", "status": "assigning"}),
        ));
        assert_eq!(h.s.state(), State::Connected);
        h
    }
}

fn response(status: u16, rid: &str, body: serde_json::Value) -> LinkEvent {
    LinkEvent::Message {
        topic: format!("$dps/registrations/res/{status}/?$rid={rid}&retry-after=3"),
        payload: body.to_string().into_bytes(),
    }
}

fn replies(actions: &[Action]) -> Vec<(Token, &Reply)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Reply { token, reply } => Some((*token, reply)),
            _ => None,
        })
        .collect()
}

fn response_of(
    actions: &[Action],
    token: Token,
) -> Result<RegistrationResponse, ProvisioningError> {
    let found = replies(actions).into_iter().find(|(t, _)| *t == token);
    match found {
        Some((_, Reply::Response(result))) => result.clone().map(|response| *response),
        other => panic!("no response for {token} in {actions:?}: {other:?}"),
    }
}

fn done_of(actions: &[Action], token: Token) -> Result<(), ProvisioningError> {
    let found = replies(actions).into_iter().find(|(t, _)| *t == token);
    match found {
        Some((_, Reply::Done(result))) => result.clone(),
        other => panic!("no done for {token} in {actions:?}: {other:?}"),
    }
}

/// Whether the session left its link in `actions`.
fn abandons(actions: &[Action]) -> bool {
    actions.iter().any(|a| matches!(a, Action::Abandon { .. }))
}

fn lost() -> ProvisioningError {
    TransportError::new(TransportErrorKind::ConnectionLost, "reset").into()
}
