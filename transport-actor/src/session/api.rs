//! What goes into the session and what comes out of it: the caller's [`Command`]s, the link's
//! [`LinkEvent`]s, and the [`Action`]s the session asks for in return.

use std::time::{Duration, SystemTime};

use dps_messages::connect::ConnectParams;
use dps_messages::{Operation, ProvisioningError, RegistrationRequest, RegistrationResponse};

/// Identifies a caller waiting for a [`Reply`].
pub type Token = u64;

/// Identifies one MQTT connection; events from a link the session has left are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkId(pub u64);

/// What a caller asks for.
#[derive(Debug, Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "a command is handled as it comes, never kept in a queue"
)]
pub enum Command {
    /// Send `operation` for `request`'s device: a register or a poll.
    Request {
        /// Who to answer.
        token: Token,
        /// What to send.
        operation: Operation,
        /// The device.
        request: RegistrationRequest,
        /// A fresh request id.
        rid: String,
        /// The wall-clock time the request was made: a SAS token made to connect for it is
        /// valid from then.
        made_at: SystemTime,
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
        /// `None`: [`Timeouts::disconnect`](super::Timeouts::disconnect).
        grace: Option<Duration>,
    },
}

/// What the MQTT link reports.
#[derive(Debug, Clone)]
pub enum LinkEvent {
    /// CONNACK accepted.
    Connected,
    /// The connection could not be opened. The link has ended.
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
    /// The close the session asked for ([`Action::Close`]) is done; an error if the connection
    /// broke on the way. The link has ended.
    Closed(Result<(), ProvisioningError>),
    /// The service closed the connection cleanly without being asked to. The link has ended.
    ClosedByService,
    /// The connection broke without being asked to close (a reset, a protocol violation by
    /// the service, a keep-alive that went unanswered). The link has ended.
    ConnectionLost(ProvisioningError),
}

/// What the session asks of its links, or says to a caller.
///
/// Links are owned explicitly: every link the session [`Open`](Action::Open)s, it later
/// [`Abandon`](Action::Abandon)s exactly once, and nothing else ends a link's handle. A graceful
/// [`Close`](LinkAction::Close) comes before the abandon when the session waits for the close.
#[derive(Debug, Clone)]
pub enum Action {
    /// Open a new connection and send this CONNECT.
    Open {
        /// The new link.
        link: LinkId,
        /// The whole CONNECT: endpoint, clientId, username, credential, keep-alive. Boxed, as
        /// [`Reply::Response`] is: the largest variant sets the size of every slot in the queue
        /// the session keeps.
        connect: Box<ConnectParams>,
    },
    /// Do this on `link`: the link carries it out as it is, in order.
    Link(LinkId, LinkAction),
    /// The session has left this link: close it if it is still open, without waiting, and
    /// forget it. Its later events are ignored.
    Abandon {
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

/// What the session asks of an open link, handed to the link as it is.
#[derive(Debug, Clone)]
pub enum LinkAction {
    /// Subscribe to the response topic at QoS 1.
    Subscribe,
    /// Publish at QoS 1.
    Publish {
        /// The request id.
        rid: String,
        /// The topic.
        topic: String,
        /// The body.
        payload: Vec<u8>,
    },
    /// Unsubscribe from the response topic.
    Unsubscribe,
    /// Send DISCONNECT and close the connection; the session waits for [`LinkEvent::Closed`].
    Close,
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
