//! An HTTP proxy that did not open its tunnel.

use std::fmt;

use super::ProvisioningError;

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
