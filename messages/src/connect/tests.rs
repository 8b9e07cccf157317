//! The CONNECT a device sends, and the endpoints it connects to.

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

const KEY: &str = crate::sas::TEST_KEY;

fn options(protocol: Protocol) -> ConnectOptions {
    ConnectOptions {
        protocol,
        keep_alive: Duration::from_secs(60),
        sas_token_ttl: Duration::from_secs(3600),
    }
}

/// The CONNECT of a symmetric-key device at a fixed time.
fn connect(
    protocol: Protocol,
    request: &RegistrationRequest,
) -> Result<ConnectParams, ProvisioningError> {
    let auth = crate::SymmetricKey::new(KEY).unwrap().into();
    ConnectParams::new(&options(protocol), request, &auth, UNIX_EPOCH + NOW)
}

const NOW: Duration = Duration::from_secs(1_800_000_000);

// SRS_NODE_PROVISIONING_MQTT_18_035: the clientId is the registration id.
#[test]
fn srs_18_035_client_id_is_registration_id() {
    let p = connect(Protocol::Mqtt, &request()).unwrap();
    assert_eq!(p.client_id, "dev-1");
}

// SRS_NODE_PROVISIONING_MQTT_18_036: clean session is true.
#[test]
fn srs_18_036_clean_session_is_true() {
    for protocol in [Protocol::Mqtt, Protocol::MqttWs] {
        assert!(connect(protocol, &request()).unwrap().clean_session);
    }
}

#[test]
fn the_username_announces_the_requests_api_version() {
    let version = |request: RegistrationRequest| {
        let username = connect(Protocol::Mqtt, &request).unwrap().username;
        let (_, rest) = username.split_once("/api-version=").unwrap();
        rest.split_once('&').unwrap().0.to_owned()
    };
    assert_eq!(version(request()), "2019-03-31");
    assert_eq!(
        version(request().with_api_version("2021-06-01")),
        "2021-06-01"
    );
    #[cfg(feature = "issuance")]
    {
        let csr =
            crate::CertificateRequest::generate_with("dev-1", crate::certificate::KeyCurve::P256)
                .unwrap();
        assert_eq!(version(request().with_csr(&csr)), "2025-07-01-preview");
        // A CSR with a version that cannot carry it never reaches a CONNECT.
        let old = request().with_csr(&csr).with_api_version("2019-03-31");
        assert!(connect(Protocol::Mqtt, &old).is_err());
    }
}

// SRS_NODE_PROVISIONING_MQTT_18_038: username is
// <idScope>/registrations/<registrationId>/api-version=<v>&ClientVersion=<urlencoded ua>.
#[test]
fn srs_18_038_username_carries_scope_id_api_version_and_encoded_user_agent() {
    let p = connect(Protocol::Mqtt, &request()).unwrap();
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
    let p = connect(Protocol::Mqtt, &request()).unwrap();
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
    let p = connect(Protocol::MqttWs, &request()).unwrap();
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
    let p = connect(Protocol::Mqtt, &req).unwrap();
    assert_eq!(
        (p.endpoint.host.as_str(), p.endpoint.port),
        ("127.0.0.1", 40123)
    );

    let req = request().with_endpoint("wss://localhost:4443");
    let p = connect(Protocol::MqttWs, &req).unwrap();
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

/// The endpoint grammar, read without the url crate: what it takes and what it refuses.
#[test]
fn endpoints_are_read_as_scheme_host_port_and_path() {
    let e = Endpoint::parse("MQTTS://DPS.Example.NET:8884").unwrap();
    assert_eq!(
        (e.protocol, e.host.as_str(), e.port),
        (Protocol::Mqtt, "dps.example.net", 8884)
    );
    // `host:` is the default port, as in a URL.
    assert_eq!(Endpoint::parse("mqtts://h:").unwrap().port, 8883);
    let e = Endpoint::parse("wss://[::1]/custom/path").unwrap();
    assert_eq!(
        (e.host.as_str(), e.port, e.path.as_str()),
        ("::1", 443, "/custom/path")
    );
    assert_eq!(
        Endpoint::parse("wss://h/").unwrap().path,
        "/$iothub/websocket"
    );
    for bad in [
        "mqtts://h?x=1",
        "wss://h/p#frag",
        "mqtts://::1",
        "mqtts://[::1",
        "mqtts://[::1]x",
        "mqtts://[not-v6]:1",
        "mqtts://h:-1",
        "mqtts://h:1x",
        "mqtts://h:+1",
        "mqtts://bad host",
        "mqtts://h\u{e9}te",
        "mqtts:/h",
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

/// Where to connect has one source: an endpoint of the other protocol is an error, not a
/// silent switch.
#[test]
fn an_endpoint_of_the_other_protocol_is_refused() {
    for (protocol, uri) in [
        (Protocol::Mqtt, "wss://localhost:4443"),
        (Protocol::MqttWs, "mqtts://localhost:8883"),
    ] {
        let err = connect(protocol, &request().with_endpoint(uri)).unwrap_err();
        assert!(
            matches!(
                &err,
                ProvisioningError::EndpointMismatch { configured, endpoint }
                    if *configured == protocol && endpoint == uri
            ),
            "{err:?}"
        );
    }
}

// SRS_NODE_PROVISIONING_MQTT_18_001 (symmetric-key half): the key makes the password, a SAS
// token for the device valid from the time given for the configured lifetime.
#[test]
fn srs_18_001_a_symmetric_key_makes_a_sas_token_password_from_the_time_given() {
    let p = connect(Protocol::Mqtt, &request()).unwrap();
    let Credential::SasToken(token) = &p.credential else {
        panic!("{:?}", p.credential)
    };
    let parsed = crate::service::SasToken::parse(token).unwrap();
    assert_eq!(parsed.expiry, (NOW + Duration::from_secs(3600)).as_secs());
    assert_eq!(parsed.decoded_resource(), "0ne00000001/registrations/dev-1");
    assert!(parsed.verify(KEY, NOW.as_secs()).is_ok());
    assert_eq!(p.keep_alive, 60);
    // The token is never shown.
    assert!(!format!("{p:?}").contains(token.as_str()));
    assert!(format!("{p:?}").contains("SasToken(<redacted>)"));
}

#[test]
fn a_keep_alive_past_what_mqtt_carries_is_the_most_it_carries() {
    let auth = crate::SymmetricKey::new(KEY).unwrap().into();
    let options = ConnectOptions {
        keep_alive: Duration::from_secs(1 << 20),
        ..options(Protocol::Mqtt)
    };
    let p = ConnectParams::new(&options, &request(), &auth, UNIX_EPOCH).unwrap();
    assert_eq!(p.keep_alive, u16::MAX);
}

#[test]
fn a_connection_serves_the_same_device_at_the_same_endpoint_whatever_its_token() {
    let first = connect(Protocol::Mqtt, &request()).unwrap();
    let auth = crate::SymmetricKey::new(KEY).unwrap().into();
    let later = ConnectParams::new(
        &options(Protocol::Mqtt),
        &request(),
        &auth,
        UNIX_EPOCH + NOW + Duration::from_secs(60),
    )
    .unwrap();
    assert!(first.same_connection(&later));
    let other_device = connect(
        Protocol::Mqtt,
        &RegistrationRequest::new("0ne00000001", "dev-2").with_host("dps.example.net"),
    )
    .unwrap();
    assert!(!first.same_connection(&other_device));
    let other_host = connect(Protocol::Mqtt, &request().with_host("other.example.net")).unwrap();
    assert!(!first.same_connection(&other_host));
    let other_version = connect(Protocol::Mqtt, &request().with_api_version("2021-06-01")).unwrap();
    assert!(!first.same_connection(&other_version));
}
