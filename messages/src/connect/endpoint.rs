//! Where a device connects: [`Protocol`] and [`Endpoint`], host and port kept apart.

use std::fmt;

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
    /// `wss://host[:port][/path]` (port 443 and path `/$iothub/websocket` by default).
    pub fn parse(uri: &str) -> Result<Self, ProvisioningError> {
        let bad = |why: &str| ProvisioningError::InvalidRequest(format!("endpoint `{uri}`: {why}"));
        let url = url::Url::parse(uri).map_err(|e| bad(&e.to_string()))?;
        let protocol = match url.scheme() {
            "mqtts" => Protocol::Mqtt,
            "wss" => Protocol::MqttWs,
            other => return Err(bad(&format!("scheme `{other}` is not mqtts or wss"))),
        };
        let host = match url.host() {
            // `url` reports an empty host as missing, never as an empty domain.
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(bad("no host")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("credentials do not belong in the endpoint"));
        }
        let (default_port, path) = match protocol {
            Protocol::Mqtt => {
                if !matches!(url.path(), "" | "/") {
                    return Err(bad("an mqtts endpoint has no path"));
                }
                (MQTTS_PORT, String::new())
            }
            Protocol::MqttWs => {
                let path = match url.path() {
                    "" | "/" => WEBSOCKET_PATH.to_owned(),
                    p => p.to_owned(),
                };
                (WSS_PORT, path)
            }
        };
        Ok(Self {
            protocol,
            host,
            port: url.port().unwrap_or(default_port),
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
