//! The one error type of the workspace, [`ProvisioningError`], and the details it carries.
//!
//! Every error is `Clone + Send + 'static` so that an actor can answer a request with it, keep a
//! copy for its logs, and hand it across threads.

use std::time::Duration;

mod local;
mod proxy;
mod service;
mod transport;

pub use self::local::{AuthError, CertificateError, ProtocolError};
pub use self::proxy::{ProxyError, ProxyErrorKind};
pub use self::service::ServiceError;
pub use self::transport::{ConnackRefusal, Stage, TlsFailure, TransportError, TransportErrorKind};
use crate::connect::Protocol;
use crate::response::RegistrationResult;

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
    /// The request's endpoint is for another protocol than the transport's (a `wss://` URI
    /// given to an MQTT/TLS transport, say). Nothing was sent: the transport's protocol and
    /// the endpoint must say the same.
    #[error(
        "the request's endpoint `{endpoint}` does not use the transport's protocol ({configured}://)"
    )]
    EndpointMismatch {
        /// The transport's protocol.
        configured: Protocol,
        /// The request's endpoint, as given.
        endpoint: String,
    },
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
    /// A device key held elsewhere (a token, a secure element) failed: it could not be found,
    /// made, or asked to sign, in a TLS handshake too. The key's own error is the source
    /// (a `dps_transport_actor::pkcs11::Pkcs11Error`, say).
    #[error("device key: {0}")]
    Key(#[from] crate::x509::SignError),
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

    /// A failed TLS handshake: [`ProvisioningError::Key`] when the device's own key failed to
    /// sign (its error is what went wrong, not the alert that followed), else
    /// [`ProvisioningError::Tls`] naming the `trusted` roots.
    pub fn tls(error: rustls::Error, trusted: Option<String>) -> Self {
        if let rustls::Error::Other(other) = &error
            && let Some(signing) = other.0.downcast_ref::<crate::x509::SignError>()
        {
            return Self::Key(signing.clone());
        }
        Self::Tls(Box::new(TlsFailure::new(error, trusted)))
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
#[cfg(feature = "actix")]
impl From<actix::MailboxError> for ProvisioningError {
    fn from(error: actix::MailboxError) -> Self {
        TransportError::new(TransportErrorKind::Shutdown, error).into()
    }
}

#[cfg(test)]
mod tests;
