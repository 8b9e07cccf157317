//! The network's failures: a connection refused, lost or never opened, a TLS handshake that
//! failed, a deadline that passed, a CONNACK that said no.

use std::fmt;

use super::ProvisioningError;

/// A network failure: what was being done, and what the network layer said.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {detail}")]
pub struct TransportError {
    /// What failed.
    pub kind: TransportErrorKind,
    /// The underlying cause, as the network layer reported it.
    pub detail: String,
}

impl TransportError {
    /// Builds a transport error of `kind` with a cause.
    pub fn new(kind: TransportErrorKind, detail: impl fmt::Display) -> Self {
        Self {
            kind,
            detail: detail.to_string(),
        }
    }
}

/// The kind of network failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// Opening the connection failed for a reason that trying again will not fix by itself
    /// (the WebSocket upgrade refused, the service closing the connection before its CONNACK,
    /// perhaps because it refused the client certificate).
    Connect,
    /// The service could not be reached, yet: its name does not resolve, the connection was
    /// refused, reset or timed out, or the network is unreachable. What a device sees while its
    /// network comes up at boot; worth trying again.
    Unreachable,
    /// The connection was lost while it was in use.
    ConnectionLost,
    /// The SUBSCRIBE failed or was refused (SUBACK 0x80).
    Subscribe,
    /// A PUBLISH could not be sent or was not acknowledged.
    Publish,
    /// The UNSUBSCRIBE failed.
    Unsubscribe,
    /// The disconnect failed: the connection broke (was reset, or the service broke the
    /// protocol) while it was being closed.
    Disconnect,
    /// The actor or runtime that owns the connection is gone: give up.
    Shutdown,
    /// The transport actor restarted (a `Restart` message, or its supervisor) while the request
    /// waited. Nothing is wrong with the request: send it again. The actor kept its credentials.
    Restarted,
}

impl fmt::Display for TransportErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect failed",
            Self::Unreachable => "service unreachable",
            Self::ConnectionLost => "connection lost",
            Self::Subscribe => "subscribe failed",
            Self::Publish => "publish failed",
            Self::Unsubscribe => "unsubscribe failed",
            Self::Disconnect => "disconnect failed",
            Self::Shutdown => "transport shut down",
            Self::Restarted => "transport restarted, send the request again",
        })
    }
}

/// The stage of a request a deadline belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Opening the connection: TCP, TLS, WebSocket and CONNACK.
    Connect,
    /// The SUBACK for the response topic subscription.
    Subscribe,
    /// The PUBACK for a register or poll publish.
    PublishAck,
    /// The service's response on the response topic.
    Response,
    /// The UNSUBSCRIBE acknowledgement and the close of the connection.
    Disconnect,
    /// The whole registration, across every request and retry.
    Registration,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Connect => "the connection (CONNACK)",
            Stage::Subscribe => "the subscription (SUBACK)",
            Stage::PublishAck => "the publish acknowledgement (PUBACK)",
            Stage::Response => "the service's response",
            Stage::Disconnect => "the disconnect to finish",
            Stage::Registration => "the registration to finish",
        })
    }
}

/// A CONNACK return code other than "accepted" (MQTT 3.1.1, section 3.2.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnackRefusal {
    /// 1: unacceptable protocol version.
    UnacceptableProtocolVersion,
    /// 2: identifier rejected.
    IdentifierRejected,
    /// 3: server unavailable.
    ServerUnavailable,
    /// 4: bad user name or password.
    BadUserNameOrPassword,
    /// 5: not authorized.
    NotAuthorized,
    /// Any other (reserved) code.
    Other(u8),
}

impl ConnackRefusal {
    /// The refusal a CONNACK return code stands for; `None` for 0 (accepted).
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => return None,
            1 => Self::UnacceptableProtocolVersion,
            2 => Self::IdentifierRejected,
            3 => Self::ServerUnavailable,
            4 => Self::BadUserNameOrPassword,
            5 => Self::NotAuthorized,
            other => Self::Other(other),
        })
    }

    /// The return code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Self::UnacceptableProtocolVersion => 1,
            Self::IdentifierRejected => 2,
            Self::ServerUnavailable => 3,
            Self::BadUserNameOrPassword => 4,
            Self::NotAuthorized => 5,
            Self::Other(code) => code,
        }
    }
}

impl fmt::Display for ConnackRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::UnacceptableProtocolVersion => "unacceptable protocol version",
            Self::IdentifierRejected => "identifier rejected",
            Self::ServerUnavailable => "server unavailable",
            Self::BadUserNameOrPassword => "bad user name or password",
            Self::NotAuthorized => "not authorized",
            Self::Other(_) => "unknown return code",
        };
        write!(f, "{text} (CONNACK code {})", self.code())
    }
}

/// A failed TLS handshake: the rustls reason, and which roots a server certificate was checked
/// against (`the public web's roots and 1 extra CA`), since "unknown issuer" on a network that
/// inspects TLS is only understood with them.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFailure {
    /// Why the handshake failed.
    pub error: rustls::Error,
    /// The roots the server's certificate was checked against, as words.
    pub trusted: Option<String>,
}

impl TlsFailure {
    /// `error`, with the roots that were `trusted`.
    pub fn new(error: rustls::Error, trusted: Option<String>) -> Self {
        Self { error, trusted }
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)?;
        match (&self.error, &self.trusted) {
            (rustls::Error::InvalidCertificate(_), Some(trusted)) => {
                write!(f, " (trusted: {trusted})")
            }
            _ => Ok(()),
        }
    }
}

impl std::error::Error for TlsFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<rustls::Error> for ProvisioningError {
    fn from(error: rustls::Error) -> Self {
        Self::tls(error, None)
    }
}
