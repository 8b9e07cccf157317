//! An HTTP proxy between the device and the service, as factory floors and enterprise sites
//! have: MQTT over TLS (8883) and MQTT over WebSocket (443) both run through a `CONNECT`
//! tunnel it opens, with `Proxy-Authorization: Basic` when credentials are given.
//!
//! The transport uses only the proxy it is given; reading `HTTPS_PROXY` and `NO_PROXY` is the
//! application's choice (the `dps` command does). The password is never shown: not in
//! `Debug`, not in errors, not in logs.

use std::fmt;

use base64::Engine;
use dps_messages::ProvisioningError;

/// An `http://[user:password@]host[:port]` proxy.
///
/// ```
/// use dps_transport_actor::ProxyConfig;
///
/// let proxy = ProxyConfig::parse("http://device:s3cret@proxy.factory.local:3128")?;
/// assert_eq!(proxy.address(), "proxy.factory.local:3128");
/// assert!(!format!("{proxy:?}").contains("s3cret"));
/// # Ok::<(), dps_messages::ProvisioningError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
}

impl ProxyConfig {
    /// Reads a proxy URL: scheme `http` (the tunnel's own TLS protects the traffic), a host,
    /// a port (80 if none), and optional percent-encoded credentials.
    pub fn parse(url: &str) -> Result<Self, ProvisioningError> {
        // Never echo the URL: it may hold a password.
        let bad = |why: &str| ProvisioningError::InvalidRequest(format!("proxy URL: {why}"));
        let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if parsed.scheme() != "http" {
            return Err(bad(&format!(
                "scheme `{}` is not http (a proxy reached over TLS is not supported)",
                parsed.scheme()
            )));
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(bad("no host")),
        };
        if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
            return Err(bad("a proxy URL has no path or query"));
        }
        let decode = |text: &str| {
            percent_decode(text)
                .ok_or_else(|| bad("the credentials are not valid percent-encoded UTF-8"))
        };
        let credentials = match (parsed.username(), parsed.password()) {
            ("", None) => None,
            (user, password) => Some((decode(user)?, decode(password.unwrap_or(""))?)),
        };
        Ok(Self {
            host,
            port: parsed.port_or_known_default().unwrap_or(80),
            credentials,
        })
    }

    /// The proxy's host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port` (an IPv6 host in brackets): how errors name the proxy.
    pub fn address(&self) -> String {
        authority(&self.host, self.port)
    }

    /// Whether credentials are sent.
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// The `Proxy-Authorization` value, when there are credentials.
    pub(crate) fn authorization(&self) -> Option<String> {
        let (user, password) = self.credentials.as_ref()?;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Some(format!("Basic {token}"))
    }
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("address", &self.address())
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl fmt::Display for ProxyConfig {
    /// `http://host:port`, without credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.address())
    }
}

/// `host:port`, an IPv6 host in brackets, as a `CONNECT` request and a `Host` header write it.
pub(crate) fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Decodes `%XX` escapes; `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = tail.get(..2)?;
            let hex = std::str::from_utf8(hex).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_url_gives_host_port_and_credentials() {
        let proxy = ProxyConfig::parse("http://us%40er:p%3Ass@10.0.0.1:3128/").unwrap();
        assert_eq!((proxy.host(), proxy.port()), ("10.0.0.1", 3128));
        assert_eq!(proxy.address(), "10.0.0.1:3128");
        // "us@er:p:ss" in base64.
        assert_eq!(proxy.authorization().unwrap(), "Basic dXNAZXI6cDpzcw==");
        assert!(proxy.has_credentials());
        assert_eq!(proxy.to_string(), "http://10.0.0.1:3128");

        let plain = ProxyConfig::parse("http://proxy").unwrap();
        assert_eq!(plain.address(), "proxy:80");
        assert_eq!(plain.authorization(), None);
        assert!(!plain.has_credentials());
        let v6 = ProxyConfig::parse("http://[::1]:8080").unwrap();
        assert_eq!(v6.address(), "[::1]:8080");
        let user_only = ProxyConfig::parse("http://user@proxy:1").unwrap();
        assert_eq!(user_only.authorization().unwrap(), "Basic dXNlcjo=");
    }

    #[test]
    fn a_bad_proxy_url_is_refused_without_showing_its_password() {
        for url in [
            "https://proxy:3128",
            "socks5://proxy:1080",
            "http://",
            "proxy:3128",
            "http://proxy:3128/path",
            "http://user:secret%zz@proxy:1",
            "http://user:secret%ff@proxy:1",
        ] {
            let error = ProxyConfig::parse(url).unwrap_err();
            assert!(
                matches!(error, ProvisioningError::InvalidRequest(_)),
                "{url}"
            );
            assert!(!error.to_string().contains("secret"), "{url}: {error}");
        }
        let proxy = ProxyConfig::parse("http://u:secret@p:1").unwrap();
        assert!(!format!("{proxy:?}{proxy}").contains("secret"));
        let debug = format!("{proxy:?}");
        assert!(
            debug.contains("p:1") && debug.contains("<redacted>"),
            "{debug}"
        );
    }
}
