//! Where a device connects: [`Protocol`] and [`Endpoint`], host and port kept apart.

use std::fmt;
use std::net::Ipv6Addr;

use crate::error::ProvisioningError;

/// The MQTT port of DPS.
const MQTTS_PORT: u16 = 8883;

/// The WebSocket port of DPS.
const WSS_PORT: u16 = 443;

/// The WebSocket path of DPS.
pub const WEBSOCKET_PATH: &str = "/$iothub/websocket";

/// The WebSocket subprotocol of MQTT.
pub const WEBSOCKET_SUBPROTOCOL: &str = "mqtt";

/// How the device reaches the service. In JSON: `"mqtt"` or `"mqtt_ws"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// MQTT over TLS, `mqtts://<host>`, port 8883 (the Node SDK's `Mqtt`).
    Mqtt,
    /// MQTT over WebSocket over TLS, `wss://<host>:443/$iothub/websocket` (`MqttWs`).
    MqttWs,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Mqtt => "mqtts",
            Protocol::MqttWs => "wss",
        })
    }
}

/// Where to connect: protocol, host and port kept apart (a `host:port` string would be looked up
/// in DNS whole), and the WebSocket path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// MQTT over TLS or over WebSocket.
    pub protocol: Protocol,
    /// The host name or IP address, also the TLS server name. IPv6 addresses have no brackets.
    pub host: String,
    /// The TCP port.
    pub port: u16,
    /// The WebSocket path (empty for [`Protocol::Mqtt`]).
    pub path: String,
}

impl Endpoint {
    /// The endpoint the spec derives from a provisioning host: `mqtts://<host>` (SRS 18_050) or
    /// `wss://<host>:443/$iothub/websocket` (SRS 18_049).
    pub fn for_host(protocol: Protocol, host: &str) -> Result<Self, ProvisioningError> {
        match protocol {
            Protocol::Mqtt => Self::parse(&format!("mqtts://{host}")),
            Protocol::MqttWs => Self::parse(&format!("wss://{host}:{WSS_PORT}{WEBSOCKET_PATH}")),
        }
    }

    /// Parses an endpoint URI: `mqtts://host[:port]` (port 8883 by default) or
    /// `wss://host[:port][/path]` (port 443 and path `/$iothub/websocket` by default). The host
    /// is a DNS name (ASCII, kept in lower case), an IPv4 address, or an IPv6 address in
    /// brackets; credentials, a query and a fragment have no place in an endpoint.
    pub fn parse(uri: &str) -> Result<Self, ProvisioningError> {
        let bad = |why: &str| ProvisioningError::InvalidRequest(format!("endpoint `{uri}`: {why}"));
        let (scheme, rest) = uri
            .split_once("://")
            .ok_or_else(|| bad("not of the form <scheme>://<host>"))?;
        let protocol = match scheme.to_ascii_lowercase().as_str() {
            "mqtts" => Protocol::Mqtt,
            "wss" => Protocol::MqttWs,
            _ => return Err(bad(&format!("scheme `{scheme}` is not mqtts or wss"))),
        };
        if rest.contains(['?', '#']) {
            return Err(bad("an endpoint has no query or fragment"));
        }
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.contains('@') {
            return Err(bad("credentials do not belong in the endpoint"));
        }
        let (host, port) = split_host_port(authority).map_err(|why| bad(&why))?;
        let (default_port, path) = match (protocol, path) {
            (Protocol::Mqtt, "" | "/") => (MQTTS_PORT, String::new()),
            (Protocol::Mqtt, _) => return Err(bad("an mqtts endpoint has no path")),
            (Protocol::MqttWs, "" | "/") => (WSS_PORT, WEBSOCKET_PATH.to_owned()),
            (Protocol::MqttWs, path) => (WSS_PORT, path.to_owned()),
        };
        Ok(Self {
            protocol,
            host,
            port: port.unwrap_or(default_port),
            path,
        })
    }

    /// The endpoint as a URI.
    pub fn uri(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{}://{}:{}{}", self.protocol, host, self.port, self.path)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

/// Splits `host[:port]` (an IPv6 host in brackets): the host, without brackets and in lower
/// case, and the port if one is given.
fn split_host_port(authority: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (v6, after) = bracketed
                .split_once(']')
                .ok_or("an IPv6 address without its closing bracket")?;
            let v6: Ipv6Addr = v6
                .parse()
                .map_err(|_| format!("`{v6}` is not an IPv6 address"))?;
            let port = match after {
                "" => None,
                after => Some(
                    after
                        .strip_prefix(':')
                        .ok_or("text after the IPv6 address")?,
                ),
            };
            (v6.to_string(), port)
        }
        None => {
            let (host, port) = match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            };
            // A DNS name or an IPv4 address (an IPv6 address comes in brackets).
            let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
            if !host.chars().all(name_char) {
                return Err(format!("`{host}` is not a host name or an IP address"));
            }
            (host.to_ascii_lowercase(), port)
        }
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    let port = match port {
        // `host:` names the default port, as URLs have it.
        None | Some("") => None,
        Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => Some(
            digits
                .parse::<u16>()
                .map_err(|_| format!("port `{digits}` is over 65535"))?,
        ),
        Some(other) => return Err(format!("port `{other}` is not a number")),
    };
    Ok((host, port))
}
