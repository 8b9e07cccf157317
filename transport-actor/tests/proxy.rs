//! Devices behind an HTTP proxy: MQTT over TLS and MQTT over WebSocket through a `CONNECT`
//! tunnel, with and without credentials, and each way a proxy says no. Against the mock
//! broker's test proxy, and once against tinyproxy when it is installed.

mod common;

use std::time::Duration;

use common::*;
use dps_messages::error::{ProxyErrorKind, Stage};
use dps_messages::{Protocol, ProvisioningError, RegistrationStatus};
use dps_mock_broker::Script;
use dps_mock_broker::proxy::{ProxyMode, TestProxy};
use dps_transport_actor::{ProvisioningClient, ProxyConfig};

const BOTH: [Protocol; 2] = [Protocol::Mqtt, Protocol::MqttWs];

/// Registers `sas-dev` over `protocol` through the proxy at `url`.
async fn register_via(
    f: &Fixture,
    protocol: Protocol,
    url: &str,
    deadline: Duration,
) -> Result<dps_messages::RegistrationResult, ProvisioningError> {
    let config = f
        .builder(protocol)
        .proxy(ProxyConfig::parse(url).unwrap())
        .build()
        .unwrap();
    let transport = f.transport_with(config, sas(KEY)).await;
    ProvisioningClient::new(transport, fast_within(deadline))
        .register(f.request(protocol, "sas-dev"))
        .await
}

fn proxy_error(error: &ProvisioningError) -> &dps_messages::error::ProxyError {
    match error {
        ProvisioningError::Proxy(proxy) => proxy,
        ProvisioningError::Timeout {
            last_failure: Some(last),
            ..
        } => proxy_error(last),
        other => panic!("not a proxy error: {other:?}"),
    }
}

#[actix_rt::test]
async fn mqtt_and_websocket_go_through_the_tunnel() {
    let f = Fixture::start(Script::new());
    let proxy = TestProxy::start(ProxyMode::Tunnel).unwrap();
    for protocol in BOTH {
        let result = register_via(&f, protocol, &proxy.url(), LONG)
            .await
            .unwrap();
        assert_eq!(result.status, RegistrationStatus::Assigned);
    }
    // The tunnels went to the broker's listeners, and nothing went around the proxy: the
    // broker saw both devices.
    let targets: Vec<String> = proxy.requests().into_iter().map(|r| r.target).collect();
    let port = |addr: std::net::SocketAddr| addr.port();
    assert_eq!(
        targets,
        vec![
            format!("127.0.0.1:{}", port(f.broker.addr())),
            format!("127.0.0.1:{}", port(f.broker.ws_addr().unwrap())),
        ]
    );
    assert_eq!(f.broker.records().len(), 2);
    assert!(proxy.requests().iter().all(|r| r.credentials.is_none()));
}

#[actix_rt::test]
async fn credentials_are_sent_and_a_missing_or_wrong_one_is_a_407_naming_the_proxy() {
    let f = Fixture::start(Script::new());
    let proxy = TestProxy::start(ProxyMode::RequireCredentials {
        user: "device".into(),
        password: "s3cret".into(),
    })
    .unwrap();
    for protocol in BOTH {
        let ok = register_via(&f, protocol, &proxy.url_with("device", "s3cret"), LONG).await;
        assert_eq!(ok.unwrap().status, RegistrationStatus::Assigned);
        for url in [proxy.url(), proxy.url_with("device", "wrong-s3cret")] {
            let error = register_via(&f, protocol, &url, LONG).await.unwrap_err();
            let proxy_error = proxy_error(&error);
            assert_eq!(proxy_error.kind, ProxyErrorKind::AuthenticationRequired);
            assert_eq!(proxy_error.proxy, proxy.addr().to_string());
            assert_eq!(
                proxy_error.detail,
                "HTTP/1.1 407 Proxy Authentication Required"
            );
            assert!(!error.to_string().contains("s3cret"), "{error}");
            assert!(!error.is_retryable());
        }
    }
    let credentials: Vec<Option<String>> = proxy
        .requests()
        .into_iter()
        .map(|r| r.credentials)
        .collect();
    assert_eq!(
        credentials[..3],
        [
            Some("device:s3cret".into()),
            None,
            Some("device:wrong-s3cret".into())
        ]
    );
}

/// A 403 ends the registration at once; a 502 (the proxy cannot reach the service), a proxy
/// that drops the tunnel and one that never answers are tried again until the deadline, which
/// then names the proxy's last failure.
#[actix_rt::test]
async fn each_refusal_is_named_and_only_the_transient_ones_are_retried() {
    let f = Fixture::start(Script::new());
    let forbidden = TestProxy::start(ProxyMode::Refuse {
        status: 403,
        reason: "Forbidden".into(),
    })
    .unwrap();
    let error = register_via(&f, Protocol::Mqtt, &forbidden.url(), LONG)
        .await
        .unwrap_err();
    assert_eq!(proxy_error(&error).kind, ProxyErrorKind::Forbidden);
    assert_eq!(forbidden.requests().len(), 1, "not retried");
    assert_eq!(
        error.to_string(),
        format!(
            "proxy error: the proxy {} does not allow a tunnel to the service: HTTP/1.1 403 \
             Forbidden",
            forbidden.addr()
        )
    );

    let deadline = Duration::from_millis(500);
    let bad_gateway = TestProxy::start(ProxyMode::Refuse {
        status: 502,
        reason: "Bad Gateway".into(),
    })
    .unwrap();
    let dropping = TestProxy::start(ProxyMode::Drop).unwrap();
    for (proxy, kind) in [
        (&bad_gateway, ProxyErrorKind::Refused),
        (&dropping, ProxyErrorKind::Closed),
    ] {
        let error = register_via(&f, Protocol::MqttWs, &proxy.url(), deadline)
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                ProvisioningError::Timeout {
                    stage: Stage::Registration,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(proxy_error(&error).kind, kind, "{error}");
        assert!(proxy.requests().len() >= 2, "retried: {error}");
    }
    assert!(f.broker.records().is_empty());
}

/// A proxy that takes the request and says nothing: the connect deadline covers the proxy
/// hop, and the error says it was the proxy.
#[actix_rt::test]
async fn a_silent_proxy_is_bounded_by_the_connect_deadline_and_named() {
    let f = Fixture::start(Script::new());
    let silent = TestProxy::start(ProxyMode::Silent).unwrap();
    let config = f
        .builder(Protocol::Mqtt)
        .connect_timeout(Duration::from_millis(300))
        .proxy(ProxyConfig::parse(&silent.url()).unwrap())
        .build()
        .unwrap();
    let transport = f.transport_with(config, sas(KEY)).await;
    let started = std::time::Instant::now();
    let error = ProvisioningClient::new(transport, fast_within(Duration::from_millis(700)))
        .register(f.request(Protocol::Mqtt, "sas-dev"))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let proxy_error = proxy_error(&error);
    assert_eq!(proxy_error.kind, ProxyErrorKind::NoAnswer, "{error}");
    assert!(proxy_error.detail.contains("240ms"), "{error}");
}

/// The same through a real proxy, tinyproxy, when it is installed (`.ci/run` installs it).
#[actix_rt::test]
async fn mqtt_and_websocket_go_through_tinyproxy() {
    let Some(tinyproxy) = Tinyproxy::start() else {
        return;
    };
    let f = Fixture::start(Script::new());
    for protocol in BOTH {
        let result = register_via(&f, protocol, &tinyproxy.url(), LONG)
            .await
            .unwrap();
        assert_eq!(result.status, RegistrationStatus::Assigned);
    }
    assert_eq!(f.broker.records().len(), 2);
}

/// tinyproxy on an ephemeral port, allowing CONNECT to any port on loopback; stopped on drop.
struct Tinyproxy {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Tinyproxy {
    /// `None`, with the reason printed, when tinyproxy cannot be run here.
    fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let dir = std::env::temp_dir().join(format!("dps-tinyproxy-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("tinyproxy.conf");
        // No ConnectPort line: CONNECT to every port (the default file allows 443 and 563).
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 60\nAllow 127.0.0.1\nMaxClients 20\n\
                 LogLevel Warning\n"
            ),
        )
        .unwrap();
        let child = dps_mock_broker::system_tool::spawn_or_skip(
            std::process::Command::new("tinyproxy")
                .arg("-d")
                .arg("-c")
                .arg(&conf)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null()),
        )?;
        let proxy = Self { child, port, dir };
        // Wait until it listens (it starts in milliseconds; give up after 10 s).
        for _ in 0..1000 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(proxy);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("tinyproxy never listened on {port}");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
