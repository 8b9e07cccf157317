//! The one error type of the workspace, [`ProvisioningError`], and the details it carries.
//!
//! Every error is `Clone + Send + 'static` so that an actor can answer a request with it, keep a
//! copy for its logs, and hand it across threads.

use std::fmt;
use std::time::Duration;

use crate::certificate::CertificateError;
use crate::response::RegistrationResult;
use crate::topic::TopicError;

/// Everything that can go wrong while provisioning a device.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisioningError {
    /// The service rejected the request as malformed (status 400).
    #[error("the service rejected the request as invalid (400): {0}")]
    Argument(Box<ServiceError>),
    /// The service did not accept the device's credentials (status 401).
    #[error("the service did not accept the device's credentials (401): {0}")]
    Unauthorized(Box<ServiceError>),
    /// The service knows no enrollment or operation for the device (status 404).
    #[error("device or operation not found (404): {0}")]
    DeviceNotFound(Box<ServiceError>),
    /// The service failed internally (status 500).
    #[error("the service failed internally (500): {0}")]
    InternalServer(Box<ServiceError>),
    /// Any other failure status in `300..=428`.
    #[error("the service answered with status {status}: {0}", status = .0.status)]
    Service(Box<ServiceError>),
    /// The registration ended with status `failed`; the result carries `errorCode` and
    /// `errorMessage`.
    #[error("the registration failed: {}", failure_summary(.0))]
    RegistrationFailed(Box<RegistrationResult>),
    /// The registration ended with a final status other than `assigned` or `failed`
    /// (`disabled`, `unassigned`, or one this crate does not know).
    #[error("the registration ended with status `{}`", .0.status)]
    RegistrationNotAssigned(Box<RegistrationResult>),
    /// The operation was cancelled by a `Cancel` or `Disconnect` before it finished.
    #[error("the operation was cancelled")]
    OperationCancelled,
    /// A deadline passed.
    #[error("timed out after {after:?} waiting for {stage}{}{}", attempts_suffix(*.attempts), last_failure_suffix(.last_failure.as_deref()))]
    Timeout {
        /// What was being waited for.
        stage: Stage,
        /// The deadline that passed.
        after: Duration,
        /// For a deadline over several attempts (a whole registration), why the last attempt
        /// failed: what kept the registration from finishing.
        last_failure: Option<Box<ProvisioningError>>,
        /// For a deadline over several attempts, how many requests were sent (0 for the
        /// deadline of one stage).
        attempts: u32,
    },
    /// A request arrived while another was still in flight; the first is left untouched.
    #[error("another operation is in progress")]
    OperationInProgress,
    /// The request could not be made as given (bad registration id, endpoint, payload ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The broker refused the MQTT connection in its CONNACK.
    #[error("the service refused the connection: {0}")]
    ConnectionRefused(ConnackRefusal),
    /// The TLS handshake failed; the rustls reason says why (unknown issuer, bad name ...), and
    /// for a server certificate that was refused, which roots it was checked against.
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] Box<TlsFailure>),
    /// The HTTP proxy did not open a tunnel to the service.
    #[error("proxy error: {0}")]
    Proxy(Box<ProxyError>),
    /// The network connection failed or was lost.
    #[error("transport error: {0}")]
    Transport(#[from] TransportError),
    /// The service sent something that breaks the protocol.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The device's credentials are missing or unusable.
    #[error("authentication error: {0}")]
    Auth(#[from] AuthError),
    /// Certificate issuance failed: the request could not carry its CSR, or the chain the
    /// service issued did not pass a check.
    #[error("certificate issuance: {0}")]
    Certificate(#[from] CertificateError),
}

fn attempts_suffix(attempts: u32) -> String {
    match attempts {
        0 => String::new(),
        1 => " (1 attempt)".to_owned(),
        n => format!(" ({n} attempts)"),
    }
}

fn last_failure_suffix(last: Option<&ProvisioningError>) -> String {
    last.map(|e| format!("; the last attempt failed: {e}"))
        .unwrap_or_default()
}

fn failure_summary(result: &RegistrationResult) -> String {
    let state = result.registration_state.as_ref();
    let code = state.and_then(|s| s.error_code);
    let message = state.and_then(|s| s.error_message.clone());
    match (code, message) {
        (Some(code), Some(message)) => format!("errorCode {code}: {message}"),
        (Some(code), None) => format!("errorCode {code}"),
        (None, Some(message)) => message,
        (None, None) => "no reason given".to_owned(),
    }
}

impl ProvisioningError {
    /// Builds the error the service meant by a failure status (`300..=428`), per the Node SDK's
    /// `translateError`: 400, 401, 404 and 500 have their own variants, the rest are
    /// [`ProvisioningError::Service`].
    pub fn from_service(error: ServiceError) -> Self {
        let error = Box::new(error);
        match error.status {
            400 => Self::Argument(error),
            401 => Self::Unauthorized(error),
            404 => Self::DeviceNotFound(error),
            500 => Self::InternalServer(error),
            _ => Self::Service(error),
        }
    }

    /// Shorthand for a [`ProvisioningError::Timeout`] with no earlier failure.
    pub fn timeout(stage: Stage, after: Duration) -> Self {
        Self::Timeout {
            stage,
            after,
            last_failure: None,
            attempts: 0,
        }
    }

    /// A [`ProvisioningError::Timeout`] of a deadline that ended `attempts` attempts, keeping
    /// why the last one failed.
    pub fn timeout_after(
        stage: Stage,
        after: Duration,
        attempts: u32,
        last_failure: Option<Self>,
    ) -> Self {
        Self::Timeout {
            stage,
            after,
            last_failure: last_failure.map(Box::new),
            attempts,
        }
    }

    /// The service's error details, when the service answered with a failure status.
    pub fn service_error(&self) -> Option<&ServiceError> {
        match self {
            Self::Argument(e)
            | Self::Unauthorized(e)
            | Self::DeviceNotFound(e)
            | Self::InternalServer(e)
            | Self::Service(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the service refused the device's credentials, in either of the two ways it can:
    /// a CONNACK refusal (bad user name or password, not authorized) or a 401 answer to a
    /// request. A credential the device could not even use locally is an
    /// [`ProvisioningError::Auth`] error instead.
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self,
            Self::Unauthorized(_)
                | Self::ConnectionRefused(
                    ConnackRefusal::NotAuthorized | ConnackRefusal::BadUserNameOrPassword
                )
        )
    }

    /// Whether the same request may succeed if sent again, within a deadline: the service (or
    /// the proxy on the way, see [`ProxyError::is_retryable`]) could not be reached yet ([`TransportErrorKind::Unreachable`]: a name that does not
    /// resolve, a connection refused or reset, an unreachable network; or a connect that timed
    /// out, TLS handshake included), the connection, the publish or the response was lost (a
    /// [`TransportErrorKind::ConnectionLost`] or [`TransportErrorKind::Publish`] error, or a
    /// timeout waiting for a PUBACK or a response), or the transport restarted under it
    /// ([`TransportErrorKind::Restarted`]).
    ///
    /// Everything else is final for this attempt: the service's verdict (a 4xx, `failed`,
    /// `disabled`), a connection refused in its CONNACK or by TLS (credentials, certificates),
    /// a protocol error, a transport that shut down, a cancel, a local mistake. Throttling (429) and 5xx answers
    /// are not errors at all: they come back as a `registering` or `assigning` response with a
    /// polling interval. This is the rule `ProvisioningClient` retries by; a user of the raw
    /// transport actor can follow the same one.
    pub fn is_retryable(&self) -> bool {
        if let Self::Proxy(proxy) = self {
            return proxy.is_retryable();
        }
        matches!(
            self,
            Self::Transport(TransportError {
                kind: TransportErrorKind::Unreachable
                    | TransportErrorKind::ConnectionLost
                    | TransportErrorKind::Publish
                    | TransportErrorKind::Restarted,
                ..
            }) | Self::Timeout {
                stage: Stage::Connect | Stage::Response | Stage::PublishAck,
                ..
            }
        )
    }

    /// The kind of network failure, when this is one: what a supervisor looks at to decide
    /// whether to try again (a lost connection, a transport that restarted) or to give up (a
    /// transport that shut down).
    pub fn transport_kind(&self) -> Option<TransportErrorKind> {
        match self {
            Self::Transport(e) => Some(e.kind),
            _ => None,
        }
    }
}

/// An actor that can no longer take messages: the transport has shut down.
impl From<actix::MailboxError> for ProvisioningError {
    fn from(error: actix::MailboxError) -> Self {
        TransportError::new(TransportErrorKind::Shutdown, error).into()
    }
}

/// An HTTP proxy that did not open the tunnel: which proxy (`host:port`, never its
/// credentials), what went wrong, and its status line when it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyError {
    /// The proxy, `host:port`.
    pub proxy: String,
    /// What went wrong.
    pub kind: ProxyErrorKind,
    /// The proxy's status line (`HTTP/1.1 407 Proxy Authentication Required`), when it
    /// answered; otherwise what happened.
    pub detail: String,
}

/// The ways a proxy can fail to open a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyErrorKind {
    /// The proxy could not be reached (refused, unreachable, its name does not resolve).
    Unreachable,
    /// 407: the proxy wants credentials, or did not take the ones given.
    AuthenticationRequired,
    /// 403: the proxy does not allow a tunnel to the service (its port, its host).
    Forbidden,
    /// Any other status that is not a success, e.g. 502 when the proxy cannot reach the
    /// service.
    Refused,
    /// The proxy closed the connection instead of answering.
    Closed,
    /// The proxy did not answer within the connect deadline.
    NoAnswer,
    /// The proxy answered something that is not HTTP.
    BadAnswer,
}

impl ProxyError {
    /// A proxy error of `kind` for `proxy` (`host:port`).
    pub fn new(proxy: impl Into<String>, kind: ProxyErrorKind, detail: impl Into<String>) -> Self {
        Self {
            proxy: proxy.into(),
            kind,
            detail: detail.into(),
        }
    }

    /// Whether trying again may help: a proxy not reachable yet, one that closed or did not
    /// answer, or one that could not reach the service (502, 503, 504). Refused credentials
    /// (407), a forbidden tunnel (403), other refusals and answers that are not HTTP are final.
    pub fn is_retryable(&self) -> bool {
        match self.kind {
            ProxyErrorKind::Unreachable | ProxyErrorKind::Closed | ProxyErrorKind::NoAnswer => true,
            ProxyErrorKind::Refused => ["502", "503", "504"]
                .iter()
                .any(|s| self.detail.split(' ').nth(1) == Some(s)),
            _ => false,
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ProxyErrorKind::Unreachable => "cannot be reached",
            ProxyErrorKind::AuthenticationRequired => {
                "wants credentials, or refused the ones given"
            }
            ProxyErrorKind::Forbidden => "does not allow a tunnel to the service",
            ProxyErrorKind::Refused => "refused the tunnel",
            ProxyErrorKind::Closed => "closed the connection instead of answering",
            ProxyErrorKind::NoAnswer => "did not answer",
            ProxyErrorKind::BadAnswer => "did not answer in HTTP",
        };
        write!(f, "the proxy {} {what}: {}", self.proxy, self.detail)
    }
}

impl std::error::Error for ProxyError {}

impl From<ProxyError> for ProvisioningError {
    fn from(error: ProxyError) -> Self {
        Self::Proxy(Box::new(error))
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
        Self::Tls(Box::new(TlsFailure::new(error, None)))
    }
}

/// What the service said when it failed a request: its status, and the fields of its JSON error
/// body when there was one (`{"errorCode","trackingId","message","timestampUtc"}`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceError {
    /// The status from the response topic.
    pub status: u16,
    /// DPS's six-digit error code, e.g. `401002`.
    pub error_code: Option<i64>,
    /// The service's tracking id for a support request.
    pub tracking_id: Option<String>,
    /// The service's human-readable message.
    pub message: Option<String>,
    /// When the service failed the request.
    pub timestamp_utc: Option<String>,
    /// The response body as received (lossily decoded as UTF-8).
    pub body: String,
}

impl ServiceError {
    /// Reads a failure body. A body that is not the documented JSON shape is kept only as text:
    /// the status alone is enough to classify the failure.
    pub fn from_body(status: u16, body: &[u8]) -> Self {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire {
            error_code: Option<serde_json::Value>,
            tracking_id: Option<String>,
            message: Option<String>,
            timestamp_utc: Option<String>,
        }
        let wire: Option<Wire> = serde_json::from_slice(body).ok();
        let (error_code, tracking_id, message, timestamp_utc) = match wire {
            Some(w) => (
                w.error_code.and_then(crate::response::error_code_from),
                w.tracking_id,
                w.message,
                w.timestamp_utc,
            ),
            None => (None, None, None, None),
        };
        Self {
            status,
            error_code,
            tracking_id,
            message,
            timestamp_utc,
            body: String::from_utf8_lossy(body).into_owned(),
        }
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.message, self.error_code) {
            (Some(m), Some(c)) => write!(f, "{m} (errorCode {c})")?,
            (Some(m), None) => f.write_str(m)?,
            (None, Some(c)) => write!(f, "errorCode {c}")?,
            (None, None) => write!(f, "status {}", self.status)?,
        }
        if let Some(t) = &self.tracking_id {
            write!(f, ", trackingId {t}")?;
        }
        Ok(())
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

/// The service broke the protocol.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A message arrived on a topic that is not a DPS response topic.
    #[error("bad response topic: {0}")]
    BadTopic(#[from] TopicError),
    /// A success response whose body is not a registration result.
    #[error("bad response body for status {status}: {detail}")]
    BadJson {
        /// The response status.
        status: u16,
        /// What the JSON parser said.
        detail: String,
        /// The body as received (lossily decoded as UTF-8).
        body: String,
    },
    /// A response body larger than [`crate::outcome::MAX_RESPONSE_BYTES`].
    #[error("response body of {len} bytes is over the {max} byte limit")]
    PayloadTooLarge {
        /// The body's size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A poll answered without an `operationId` when the request needs one.
    #[error("the response carries no operationId")]
    MissingOperationId,
    /// The service broke the MQTT protocol (bytes that are not MQTT, an oversized packet, a
    /// topic that is not UTF-8, a QoS 2 message), so the device dropped the connection.
    #[error("the service broke the MQTT protocol ({0}); the connection was dropped")]
    Violation(String),
    /// The service answered `assigned` without what a device needs to reach its hub.
    #[error("the service answered `assigned` without {missing}")]
    IncompleteAssignment {
        /// What is missing: `registrationState`, its `assignedHub` or its `deviceId`.
        missing: &'static str,
    },
}

/// The device's credentials are missing or unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A request was made before any credentials were set.
    #[error("no authentication was set; send SetAuthentication first")]
    Missing,
    /// The certificate PEM holds no certificate, or cannot be read.
    #[error("unreadable certificate PEM: {0}")]
    BadCertificate(String),
    /// The private key PEM holds no key, or cannot be read.
    #[error("unreadable private key PEM: {0}")]
    BadPrivateKey(String),
    /// The private key does not belong to the certificate, or is of an unsupported kind.
    #[error("the private key does not match the certificate: {0}")]
    KeyMismatch(String),
    /// A symmetric key that is not valid base64.
    #[error("the symmetric key is not valid base64")]
    BadSymmetricKey,
    /// A SAS token that cannot be parsed.
    #[error("malformed SAS token: {0}")]
    BadToken(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shapes_of_a_refused_credential_are_unauthorized() {
        let refused = |r| ProvisioningError::ConnectionRefused(r);
        assert!(
            ProvisioningError::from_service(ServiceError::from_body(401, b"")).is_unauthorized()
        );
        assert!(refused(ConnackRefusal::NotAuthorized).is_unauthorized());
        assert!(refused(ConnackRefusal::BadUserNameOrPassword).is_unauthorized());
        assert!(!refused(ConnackRefusal::ServerUnavailable).is_unauthorized());
        assert!(
            !ProvisioningError::from_service(ServiceError::from_body(403, b"")).is_unauthorized()
        );
        assert!(!ProvisioningError::from(AuthError::BadSymmetricKey).is_unauthorized());
    }

    #[test]
    fn the_unreachable_the_lost_and_the_restarted_are_retryable_and_nothing_else() {
        let kind = |kind| ProvisioningError::from(TransportError::new(kind, "x"));
        for retryable in [
            kind(TransportErrorKind::Unreachable),
            ProvisioningError::timeout(Stage::Connect, Duration::ZERO),
            kind(TransportErrorKind::ConnectionLost),
            kind(TransportErrorKind::Publish),
            kind(TransportErrorKind::Restarted),
            ProvisioningError::timeout(Stage::Response, Duration::ZERO),
            ProvisioningError::timeout(Stage::PublishAck, Duration::ZERO),
        ] {
            assert!(retryable.is_retryable(), "{retryable:?}");
        }
        for final_ in [
            kind(TransportErrorKind::Connect),
            kind(TransportErrorKind::Subscribe),
            kind(TransportErrorKind::Unsubscribe),
            kind(TransportErrorKind::Disconnect),
            kind(TransportErrorKind::Shutdown),
            ProvisioningError::timeout(Stage::Subscribe, Duration::ZERO),
            ProvisioningError::timeout(Stage::Disconnect, Duration::ZERO),
            ProvisioningError::timeout(Stage::Registration, Duration::ZERO),
            ProvisioningError::OperationCancelled,
            ProvisioningError::OperationInProgress,
            ProvisioningError::from_service(ServiceError::from_body(401, b"")),
            ProvisioningError::ConnectionRefused(ConnackRefusal::NotAuthorized),
            ProvisioningError::Protocol(ProtocolError::MissingOperationId),
            ProvisioningError::InvalidRequest("x".into()),
            AuthError::Missing.into(),
        ] {
            assert!(!final_.is_retryable(), "{final_:?}");
        }
    }

    #[test]
    fn a_proxy_error_names_the_proxy_and_what_it_said_and_only_some_are_retried() {
        let error = |kind, detail: &str| {
            ProvisioningError::from(ProxyError::new("proxy:3128", kind, detail))
        };
        let denied = error(
            ProxyErrorKind::AuthenticationRequired,
            "HTTP/1.1 407 Proxy Authentication Required",
        );
        assert_eq!(
            denied.to_string(),
            "proxy error: the proxy proxy:3128 wants credentials, or refused the ones given: \
             HTTP/1.1 407 Proxy Authentication Required"
        );
        assert!(!denied.is_retryable());
        for (kind, detail, retryable) in [
            (ProxyErrorKind::Unreachable, "connection refused", true),
            (ProxyErrorKind::Closed, "", true),
            (ProxyErrorKind::NoAnswer, "", true),
            (ProxyErrorKind::Refused, "HTTP/1.1 502 Bad Gateway", true),
            (
                ProxyErrorKind::Refused,
                "HTTP/1.0 503 Service Unavailable",
                true,
            ),
            (
                ProxyErrorKind::Refused,
                "HTTP/1.1 504 Gateway Timeout",
                true,
            ),
            (
                ProxyErrorKind::Refused,
                "HTTP/1.1 500 Internal Server Error",
                false,
            ),
            (ProxyErrorKind::Forbidden, "HTTP/1.1 403 Forbidden", false),
            (ProxyErrorKind::BadAnswer, "SSH-2.0", false),
        ] {
            assert_eq!(
                error(kind, detail).is_retryable(),
                retryable,
                "{kind:?} {detail}"
            );
        }
    }

    #[test]
    fn a_refused_server_certificate_says_which_roots_were_tried() {
        let refused = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let trusted = Some("the public web's roots and 1 extra CA".to_owned());
        let failure = ProvisioningError::Tls(Box::new(TlsFailure::new(refused, trusted.clone())));
        assert_eq!(
            failure.to_string(),
            "TLS handshake failed: invalid peer certificate: UnknownIssuer (trusted: the public \
             web's roots and 1 extra CA)"
        );
        // Other failures are not about the roots.
        let other = rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure);
        let failure = TlsFailure::new(other.clone(), trusted);
        assert_eq!(failure.to_string(), other.to_string());
        assert!(std::error::Error::source(&failure).is_some());
        let plain = ProvisioningError::from(other);
        assert!(matches!(plain, ProvisioningError::Tls(f) if f.trusted.is_none()));
    }

    #[test]
    fn a_timeout_says_what_failed_last() {
        let bare = ProvisioningError::timeout(Stage::Registration, Duration::from_secs(10));
        assert_eq!(
            bare.to_string(),
            "timed out after 10s waiting for the registration to finish"
        );
        let lost = TransportError::new(TransportErrorKind::ConnectionLost, "reset").into();
        let with = ProvisioningError::timeout_after(
            Stage::Registration,
            Duration::from_secs(10),
            3,
            Some(lost),
        );
        assert_eq!(
            with.to_string(),
            "timed out after 10s waiting for the registration to finish (3 attempts); the last \
             attempt failed: transport error: connection lost: reset"
        );
        let once = ProvisioningError::timeout_after(Stage::Registration, Duration::ZERO, 1, None);
        assert!(
            once.to_string().ends_with("to finish (1 attempt)"),
            "{once}"
        );
    }

    #[test]
    fn failures_and_kinds_read_as_sentences() {
        let failed: RegistrationResult = serde_json::from_value(serde_json::json!({
            "status": "failed",
            "registrationState": {"errorCode": 400209, "errorMessage": "no hub"}
        }))
        .unwrap();
        assert_eq!(
            ProvisioningError::RegistrationFailed(Box::new(failed)).to_string(),
            "the registration failed: errorCode 400209: no hub"
        );
        assert_eq!(
            Stage::PublishAck.to_string(),
            "the publish acknowledgement (PUBACK)"
        );
        assert_eq!(
            TransportErrorKind::Restarted.to_string(),
            "transport restarted, send the request again"
        );
    }

    #[test]
    fn the_error_stays_small_enough_to_return_by_value() {
        // Large details are boxed, so Result<_, ProvisioningError> stays cheap to move and
        // clippy's result_large_err stays quiet in callers' code.
        assert!(
            std::mem::size_of::<ProvisioningError>() <= 64,
            "{}",
            std::mem::size_of::<ProvisioningError>()
        );
    }

    #[test]
    fn service_errors_translate_by_status_and_keep_their_details() {
        let e = ProvisioningError::from_service(ServiceError::from_body(
            429,
            br#"{"errorCode":"429001","message":"slow down"}"#,
        ));
        let details = e.service_error().unwrap();
        assert_eq!((details.status, details.error_code), (429, Some(429001)));
        assert!(e.to_string().contains("slow down"), "{e}");
        assert!(
            ProvisioningError::OperationCancelled
                .service_error()
                .is_none()
        );
    }

    #[test]
    fn a_gone_actor_is_a_shutdown_transport_error() {
        let e = ProvisioningError::from(actix::MailboxError::Closed);
        assert!(matches!(
            e,
            ProvisioningError::Transport(TransportError {
                kind: TransportErrorKind::Shutdown,
                ..
            })
        ));
        assert_eq!(e.transport_kind(), Some(TransportErrorKind::Shutdown));
        assert_eq!(ProvisioningError::OperationCancelled.transport_kind(), None);
    }

    #[test]
    fn connack_codes_round_trip() {
        assert_eq!(ConnackRefusal::from_code(0), None);
        for code in 1..=7u8 {
            assert_eq!(ConnackRefusal::from_code(code).unwrap().code(), code);
        }
        assert!(
            ConnackRefusal::NotAuthorized
                .to_string()
                .contains("not authorized")
        );
    }
}
