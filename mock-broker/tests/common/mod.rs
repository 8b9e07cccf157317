//! A small MQTT test client on ntex-mqtt, over TLS or WebSocket, for driving the broker.
#![allow(dead_code)]

use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use dps_mock_broker::{BrokerHandle, CertifiedPem};
use ntex::connect::{Connect, ConnectError};
use ntex::io::IoBoxed;
use ntex::service::{IntoServiceFactory, ServiceFactory, fn_service};
use ntex::util::{ByteString, Bytes};
use ntex::{SharedCfg, ws};
use ntex_mqtt::v3::{self, client};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;

/// Runs `f` on a fresh ntex system on this thread.
pub fn run<F: Future<Output = ()> + 'static>(f: F) {
    ntex::rt::System::build()
        .name("test")
        .build(ntex::rt::DefaultRuntime)
        .block_on(f)
}

pub const KEY: &str = dps_mock_broker::TEST_SYMMETRIC_KEY;

pub fn username(scope: &str, id: &str) -> String {
    dps_messages::connect::username(scope, id, &Default::default())
}

/// The topic a device publishes a register to.
pub fn register_topic(rid: &str) -> String {
    dps_messages::Operation::Register.topic(rid)
}

/// The topic a device publishes a poll of `operation_id` to.
pub fn poll_topic(rid: &str, operation_id: &str) -> String {
    dps_messages::Operation::poll(operation_id).topic(rid)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Via {
    Tls,
    Wss,
}

pub struct Options {
    pub via: Via,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub identity: Option<CertifiedPem>,
    pub trust_pem: String,
}

impl Options {
    pub fn new(broker: &BrokerHandle, client_id: &str) -> Self {
        Self {
            via: Via::Tls,
            client_id: client_id.into(),
            username: Some(username(dps_mock_broker::DEFAULT_ID_SCOPE, client_id)),
            password: None,
            identity: None,
            trust_pem: broker.ca_pem().unwrap().to_owned(),
        }
    }

    pub fn via(mut self, via: Via) -> Self {
        self.via = via;
        self
    }

    pub fn identity(mut self, identity: CertifiedPem) -> Self {
        self.identity = Some(identity);
        self
    }

    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// The client TLS configuration: trust `trust_pem`, present `identity` if any.
    pub fn tls(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.trust_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = match &self.identity {
            Some(id) => {
                let chain = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
                    .map(Result::unwrap)
                    .collect();
                let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        Arc::new(config)
    }
}

pub struct Client {
    pub sink: v3::MqttSink,
    pub messages: mpsc::UnboundedReceiver<(String, Bytes)>,
    pub closed: tokio::sync::oneshot::Receiver<()>,
}

pub type ConnectResult = Result<Client, client::ClientError<v3::codec::ConnectAck>>;

pub async fn connect(broker: &BrokerHandle, options: Options) -> ConnectResult {
    let tls = options.tls();
    let mut connect = client::Connect::new("localhost")
        .client_id(options.client_id.clone())
        .clean_session();
    if let Some(u) = &options.username {
        connect = connect.username(u.clone());
    }
    if let Some(p) = &options.password {
        connect = connect.password(Bytes::from(p.clone().into_bytes()));
    }
    let client = match options.via {
        Via::Tls => {
            let addr = broker.addr();
            let connector = ntex::connect::rustls::TlsConnector::from(tls);
            mqtt_handshake(connector, Target(addr), connect_packet(connect)).await?
        }
        Via::Wss => {
            let url = broker.wss_uri().unwrap().replace("127.0.0.1", "localhost");
            let addr = broker.ws_addr().unwrap();
            let mut builder = ws::WsClient::builder(url.as_str());
            builder
                .address(addr)
                .protocols(["mqtt"])
                .max_frame_size(512 * 1024);
            let ws_client = Rc::new(
                builder
                    .rustls(tls)
                    .build(SharedCfg::default())
                    .await
                    .unwrap(),
            );
            let connector = move |_: Connect<&str>| {
                let ws_client = ws_client.clone();
                async move {
                    Ok(ws_client
                        .connect()
                        .await
                        .map_err(|e| ConnectError::Io(io::Error::other(e.to_string())))?
                        .into_transport())
                }
            };
            mqtt_handshake(connector, "localhost", connect_packet(connect)).await?
        }
    };
    Ok(start(client))
}

/// CONNECT and CONNACK over whatever `connector` opens (TLS, or WebSocket over TLS).
async fn mqtt_handshake<A, F, U>(
    connector: F,
    address: A,
    packet: v3::codec::Connect,
) -> Result<client::Client, client::ClientError<v3::codec::ConnectAck>>
where
    A: ntex::connect::Address,
    F: IntoServiceFactory<U, Connect<A>, SharedCfg>,
    U: ServiceFactory<Connect<A>, SharedCfg, Error = ConnectError>,
    IoBoxed: From<U::Response>,
{
    client::MqttConnector::new()
        .connector(connector)
        .pipeline(SharedCfg::default())
        .await
        .unwrap_or_else(|_| panic!("the test connector could not start"))
        .call(client::Connect::with(address, packet))
        .await
}

/// Connects to `localhost` (the TLS server name) at a known address, with no DNS.
#[derive(Clone, Copy)]
struct Target(std::net::SocketAddr);

impl ntex::connect::Address for Target {
    fn host(&self) -> &str {
        "localhost"
    }
    fn port(&self) -> Option<u16> {
        Some(self.0.port())
    }
    fn addr(&self) -> Option<std::net::SocketAddr> {
        Some(self.0)
    }
}

fn connect_packet<A: ntex::connect::Address>(c: client::Connect<A>) -> v3::codec::Connect {
    let mut packet = None;
    let _ = c.packet(|p| packet = Some(p.clone()));
    packet.unwrap()
}

fn start(client: client::Client) -> Client {
    let sink = client.sink();
    let (tx, messages) = mpsc::unbounded_channel();
    let (closed_tx, closed) = tokio::sync::oneshot::channel();
    ntex::rt::spawn(async move {
        let _ = client
            .start(fn_service(move |msg: client::ProtocolMessage| {
                let tx = tx.clone();
                async move {
                    match msg {
                        client::ProtocolMessage::Publish(p) => {
                            let topic = p.packet().topic.to_string();
                            let payload = p.read_all().await.unwrap_or_default();
                            let _ = tx.send((topic, payload));
                            Ok::<_, ()>(p.ack())
                        }
                        other => Ok(other.ack()),
                    }
                }
            }))
            .await;
        let _ = closed_tx.send(());
    });
    Client {
        sink,
        messages,
        closed,
    }
}

impl Client {
    pub async fn subscribe(&self) -> Vec<v3::codec::SubscribeReturnCode> {
        self.sink
            .subscribe()
            .topic_filter(
                ByteString::from_static("$dps/registrations/res/#"),
                v3::codec::QoS::AtLeastOnce,
            )
            .send()
            .await
            .unwrap()
    }

    pub async fn publish(&self, topic: &str, payload: &[u8]) {
        self.sink
            .publish(ByteString::from(topic.to_owned()))
            .send_at_least_once(Bytes::copy_from_slice(payload))
            .await
            .unwrap();
    }

    /// The next message, or None after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<(String, serde_json::Value)> {
        let (topic, payload) = tokio::time::timeout(timeout, self.messages.recv())
            .await
            .ok()??;
        Some((
            topic,
            serde_json::from_slice(&payload).unwrap_or(serde_json::Value::Null),
        ))
    }

    pub async fn next_raw(&mut self, timeout: Duration) -> Option<(String, Bytes)> {
        tokio::time::timeout(timeout, self.messages.recv())
            .await
            .ok()?
    }

    /// Waits for the connection to close; false after `timeout`.
    pub async fn closed(&mut self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, &mut self.closed)
            .await
            .is_ok()
    }
}

pub const LONG: Duration = Duration::from_secs(10);

/// A raw TLS connection to the broker, for clients that break MQTT on purpose.
pub struct Raw {
    pub tls: rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
}

impl Raw {
    /// Connects to `addr` and finishes the TLS handshake (trusting `trust_pem`, offering
    /// `versions`), without sending any MQTT.
    pub fn connect(
        addr: std::net::SocketAddr,
        trust_pem: &str,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> io::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(trust_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn =
            rustls::ClientConnection::new(Arc::new(config), name).map_err(io::Error::other)?;
        let sock = std::net::TcpStream::connect(addr)?;
        sock.set_read_timeout(Some(LONG))?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(Self { tls })
    }

    /// Writes `bytes`.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write;
        self.tls.write_all(bytes)?;
        self.tls.flush()
    }

    /// Reads until the broker closes the connection (or `LONG` passes); what it sent, and
    /// whether it closed.
    pub fn read_until_closed(&mut self) -> (Vec<u8>, bool) {
        use std::io::Read;
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match self.tls.read(&mut buf) {
                Ok(0) => return (got, true),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return (got, false);
                }
                // Reset, or closed without a TLS close_notify: closed all the same.
                Err(_) => return (got, true),
            }
        }
    }
}

/// A CONNECT packet for `protocol` name and `level`, clean session, keep-alive 60.
pub fn connect_bytes(protocol: &[u8], level: u8, client_id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend((protocol.len() as u16).to_be_bytes());
    body.extend_from_slice(protocol);
    body.push(level);
    body.extend([0x02, 0x00, 0x3c]);
    body.extend((client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10];
    packet.extend(dps_mock_broker::hostile::packets::remaining_length(
        body.len(),
    ));
    packet.extend(body);
    packet
}
