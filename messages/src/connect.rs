//! The MQTT CONNECT parameters of a DPS device: endpoint, clientId, username, clean session.

use std::fmt;
use std::sync::OnceLock;

use crate::api_version::ApiVersion;
use crate::encoding::{HexCase, percent_encode};
use crate::error::ProvisioningError;
use crate::request::RegistrationRequest;

/// The MQTT port of DPS.
pub const MQTTS_PORT: u16 = 8883;

/// The WebSocket port of DPS.
pub const WSS_PORT: u16 = 443;

/// The WebSocket path of DPS.
pub const WEBSOCKET_PATH: &str = "/$iothub/websocket";

/// The WebSocket subprotocol of MQTT.
pub const WEBSOCKET_SUBPROTOCOL: &str = "mqtt";

/// The user agent sent in the username's `ClientVersion`: this crate, its version and the
/// platform, as the Azure SDKs do.
pub fn user_agent() -> String {
    format!(
        "{}/{} (rust; {}; {})",
        env!("CARGO_PKG_NAME"),
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

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

/// Everything in a DPS device's MQTT CONNECT except the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectParams {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// The DPS instance's id scope, which a symmetric-key device's SAS token names.
    pub id_scope: String,
    /// The MQTT clientId: the registration id (SRS 18_035).
    pub client_id: String,
    /// `<idScope>/registrations/<registrationId>/api-version=<version>&ClientVersion=<ua>`
    /// (SRS 18_038); the version is the request's
    /// [`api_version`](RegistrationRequest::api_version).
    pub username: String,
    /// Always true: DPS keeps no session (SRS 18_036).
    pub clean_session: bool,
    /// The `api-version` the username announces: what the service will accept in the
    /// register body (a CSR needs `2025-07-01-preview` or later).
    pub api_version: ApiVersion,
}

impl ConnectParams {
    /// The connect parameters for `request` over `protocol`; the request's endpoint, when set,
    /// replaces the host-derived one (SRS 18_039).
    pub fn new(
        protocol: Protocol,
        request: &RegistrationRequest,
    ) -> Result<Self, ProvisioningError> {
        request.validate()?;
        let endpoint = match &request.endpoint {
            Some(uri) => Endpoint::parse(uri)?,
            None => Endpoint::for_host(protocol, &request.provisioning_host)?,
        };
        let api_version = request.api_version();
        Ok(Self {
            endpoint,
            id_scope: request.id_scope.clone(),
            client_id: request.registration_id.clone(),
            username: username(&request.id_scope, &request.registration_id, &api_version),
            clean_session: true,
            api_version,
        })
    }
}

/// The MQTT username of a DPS device announcing `api_version` (SRS 18_038). The spec's text says
/// `clientVersion`; every SDK's code sends `ClientVersion`, and so do we.
pub fn username(id_scope: &str, registration_id: &str, api_version: &ApiVersion) -> String {
    // The user agent is the same for the life of the process: encode it once, not per connect.
    static CLIENT_VERSION: OnceLock<String> = OnceLock::new();
    let client_version =
        CLIENT_VERSION.get_or_init(|| percent_encode(&user_agent(), HexCase::Upper));
    format!(
        "{id_scope}/registrations/{registration_id}/api-version={api_version}&ClientVersion={client_version}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_take_addresses_and_refuse_credentials_and_empty_hosts() {
        // `url` reads an address as one in wss (a special scheme), as a name in mqtts.
        for uri in ["mqtts://127.0.0.1:9000", "wss://127.0.0.1:9000"] {
            let ip = Endpoint::parse(uri).unwrap();
            assert_eq!((ip.host.as_str(), ip.port), ("127.0.0.1", 9000), "{uri}");
        }
        assert_eq!(
            Endpoint::parse("mqtts://127.0.0.1:9000")
                .unwrap()
                .to_string(),
            "mqtts://127.0.0.1:9000"
        );
        let v6 = Endpoint::parse("wss://[::1]:9443").unwrap();
        assert_eq!(v6.host, "::1");
        for bad in [
            "mqtts://user@dps.example.net",
            "mqtts://:secret@dps.example.net",
            "mqtts://user:secret@dps.example.net",
            "mqtts://:8883",
            "mqtts://",
        ] {
            assert!(
                matches!(
                    Endpoint::parse(bad),
                    Err(ProvisioningError::InvalidRequest(_))
                ),
                "{bad}"
            );
        }
    }

    fn request() -> RegistrationRequest {
        RegistrationRequest::new("0ne00000001", "dev-1").with_host("dps.example.net")
    }

    // SRS_NODE_PROVISIONING_MQTT_18_035: the clientId is the registration id.
    #[test]
    fn srs_18_035_client_id_is_registration_id() {
        let p = ConnectParams::new(Protocol::Mqtt, &request()).unwrap();
        assert_eq!(p.client_id, "dev-1");
    }

    // SRS_NODE_PROVISIONING_MQTT_18_036: clean session is true.
    #[test]
    fn srs_18_036_clean_session_is_true() {
        for protocol in [Protocol::Mqtt, Protocol::MqttWs] {
            assert!(
                ConnectParams::new(protocol, &request())
                    .unwrap()
                    .clean_session
            );
        }
    }

    #[test]
    fn the_username_announces_the_requests_api_version() {
        let version = |request: RegistrationRequest| {
            let username = ConnectParams::new(Protocol::Mqtt, &request)
                .unwrap()
                .username;
            let (_, rest) = username.split_once("/api-version=").unwrap();
            rest.split_once('&').unwrap().0.to_owned()
        };
        assert_eq!(version(request()), "2019-03-31");
        assert_eq!(
            version(request().with_api_version("2021-06-01")),
            "2021-06-01"
        );
        let csr = crate::CertificateRequest::generate_with("dev-1", crate::KeyCurve::P256).unwrap();
        assert_eq!(version(request().with_csr(&csr)), "2025-07-01-preview");
        // A CSR with a version that cannot carry it never reaches a CONNECT.
        let old = request().with_csr(&csr).with_api_version("2019-03-31");
        assert!(ConnectParams::new(Protocol::Mqtt, &old).is_err());
    }

    // SRS_NODE_PROVISIONING_MQTT_18_038: username is
    // <idScope>/registrations/<registrationId>/api-version=<v>&ClientVersion=<urlencoded ua>.
    #[test]
    fn srs_18_038_username_carries_scope_id_api_version_and_encoded_user_agent() {
        let p = ConnectParams::new(Protocol::Mqtt, &request()).unwrap();
        let prefix = "0ne00000001/registrations/dev-1/api-version=2019-03-31&ClientVersion=";
        let ua = p.username.strip_prefix(prefix).expect(&p.username);
        assert_eq!(ua, percent_encode(&user_agent(), HexCase::Upper));
        assert!(
            ua.starts_with(&format!("dps-messages%2F{}%20", env!("CARGO_PKG_VERSION"))),
            "{ua}"
        );
        // Nothing in the encoded agent can break the query apart.
        assert!(!ua.contains(['&', '=', ' ', '/', '(', ';']), "{ua}");
    }

    // SRS_NODE_PROVISIONING_MQTT_18_050: the Mqtt uri is 'mqtts://' + provisioningDeviceHost.
    #[test]
    fn srs_18_050_mqtt_uri_is_mqtts_host() {
        let p = ConnectParams::new(Protocol::Mqtt, &request()).unwrap();
        assert_eq!(
            p.endpoint,
            Endpoint {
                protocol: Protocol::Mqtt,
                host: "dps.example.net".into(),
                port: 8883,
                path: String::new()
            }
        );
        assert_eq!(p.endpoint.uri(), "mqtts://dps.example.net:8883");
    }

    // SRS_NODE_PROVISIONING_MQTT_18_049: MqttWs uses 'wss://<host>:443/$iothub/websocket'.
    #[test]
    fn srs_18_049_websocket_uri() {
        let p = ConnectParams::new(Protocol::MqttWs, &request()).unwrap();
        assert_eq!(
            p.endpoint.uri(),
            "wss://dps.example.net:443/$iothub/websocket"
        );
        assert_eq!(
            (p.endpoint.port, p.endpoint.path.as_str()),
            (443, "/$iothub/websocket")
        );
    }

    // SRS_NODE_PROVISIONING_MQTT_18_039: a uri in the request replaces the derived one.
    #[test]
    fn srs_18_039_request_endpoint_overrides_the_host() {
        let req = request().with_endpoint("mqtts://127.0.0.1:40123");
        let p = ConnectParams::new(Protocol::Mqtt, &req).unwrap();
        assert_eq!(
            (p.endpoint.host.as_str(), p.endpoint.port),
            ("127.0.0.1", 40123)
        );

        let req = request().with_endpoint("wss://localhost:4443");
        let p = ConnectParams::new(Protocol::Mqtt, &req).unwrap();
        assert_eq!(p.endpoint.protocol, Protocol::MqttWs);
        assert_eq!(p.endpoint.uri(), "wss://localhost:4443/$iothub/websocket");

        let p = Endpoint::parse("mqtts://[::1]:1").unwrap();
        assert_eq!(
            (p.host.as_str(), p.uri()),
            ("::1", "mqtts://[::1]:1".to_owned())
        );
    }

    #[test]
    fn rejects_unusable_endpoints() {
        for uri in [
            "http://host",
            "mqtt://host",
            "mqtts://",
            "not a uri",
            "mqtts://host/path",
            "mqtts://user:pw@host",
            "mqtts://host:99999",
        ] {
            assert!(
                matches!(
                    Endpoint::parse(uri),
                    Err(ProvisioningError::InvalidRequest(_))
                ),
                "{uri}"
            );
        }
    }

    #[test]
    fn a_host_with_a_port_keeps_it() {
        let e = Endpoint::for_host(Protocol::Mqtt, "localhost:1883").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("localhost", 1883));
    }

    #[test]
    fn protocols_have_json_names() {
        assert_eq!(
            serde_json::to_string(&Protocol::MqttWs).unwrap(),
            r#""mqtt_ws""#
        );
        assert_eq!(
            serde_json::from_str::<Protocol>(r#""mqtt""#).unwrap(),
            Protocol::Mqtt
        );
    }

    #[test]
    fn carries_the_id_scope_for_the_sas_token() {
        let p = ConnectParams::new(Protocol::Mqtt, &request()).unwrap();
        assert_eq!(p.id_scope, "0ne00000001");
    }
}
