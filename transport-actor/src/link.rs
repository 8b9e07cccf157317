//! The MQTT link: one connection, run on the MQTT runtime thread, taking [`LinkCommand`]s from
//! the actor and reporting [`LinkEvent`]s back to it.
//!
//! The link holds no protocol state: it does what the session asks and says what happened.

use std::cell::Cell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;

use actix::{Message, Recipient};
use dps_messages::{
    ConnackRefusal, ConnectParams, Protocol, ProvisioningError, TransportError, TransportErrorKind,
};
use ntex::connect::{Address, Connect, ConnectError};
use ntex::io::IoBoxed;
use ntex::service::{IntoServiceFactory, ServiceFactory, fn_service};
use ntex::util::{ByteString, Bytes};
use ntex::{SharedCfg, ws};
use ntex_mqtt::error::SendPacketError;
use ntex_mqtt::v3::{self, client, codec};
use tokio::sync::oneshot;

use crate::inbox::{self, inbox};
use crate::runtime::{self, MqttRuntime};
use crate::session::{LinkEvent, LinkId};
use crate::tls::{TlsErrorSlot, rustls_error_in};

/// The largest MQTT packet (and WebSocket frame) the link reads. Above DPS's 96 KB limit, so an
/// oversized response reaches the protocol layer and fails as a typed error there.
const MAX_PACKET_BYTES: usize = 1024 * 1024;

/// ntex's read and write buffer size (a 4 KiB allocation less ntex's header).
const IO_BUF_BYTES: usize = 4 * 1024 - 24;

/// A link event, addressed to the actor.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct LinkEventMsg {
    pub(crate) link: LinkId,
    pub(crate) event: LinkEvent,
}

/// What the actor asks of a link.
#[derive(Debug)]
pub(crate) enum LinkCommand {
    Subscribe,
    /// Boxed: the command channel allocates room for 32 commands at a time, each as large as
    /// the largest.
    Publish(Box<Publish>),
    Unsubscribe,
    Close,
}

/// A QoS 1 publish.
#[derive(Debug)]
pub(crate) struct Publish {
    pub(crate) rid: String,
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
}

/// Everything a link needs to connect.
pub(crate) struct LinkSpec {
    pub(crate) id: LinkId,
    pub(crate) params: ConnectParams,
    /// A SAS token for symmetric-key devices. Never logged.
    pub(crate) password: Option<String>,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    pub(crate) tls_errors: TlsErrorSlot,
    pub(crate) keep_alive: u16,
    /// Whether the device presents a client certificate (for a better error when the service
    /// hangs up during the handshake).
    pub(crate) presents_certificate: bool,
}

/// The actor's handle to a link. Dropping it closes the link.
pub(crate) struct Link {
    pub(crate) id: LinkId,
    commands: inbox::Sender<LinkCommand>,
}

impl Link {
    /// Starts connecting on `runtime`; events go to `events`.
    pub(crate) fn open(
        runtime: &MqttRuntime,
        spec: LinkSpec,
        events: Recipient<LinkEventMsg>,
    ) -> Result<Link, ProvisioningError> {
        let (commands, rx) = inbox();
        let id = spec.id;
        runtime.spawn(move || run(Box::new(spec), rx, events))?;
        Ok(Link { id, commands })
    }

    /// Sends a command; a link that has ended has already reported why.
    pub(crate) fn send(&self, command: LinkCommand) {
        self.commands.send(command);
    }
}

/// Reports events of one link.
#[derive(Clone)]
struct Events {
    link: LinkId,
    to: Recipient<LinkEventMsg>,
}

impl Events {
    fn emit(&self, event: LinkEvent) {
        self.to.do_send(LinkEventMsg {
            link: self.link,
            event,
        });
    }
}

/// Boxed `spec`: the task keeps only a pointer for its life, and the spec (with its strings and
/// any SAS token) is freed once connected.
async fn run(
    spec: Box<LinkSpec>,
    mut commands: inbox::Receiver<LinkCommand>,
    to: Recipient<LinkEventMsg>,
) {
    let id = spec.id;
    let events = Events { link: id, to };
    // Closed (or dropped) while waiting or connecting: the session has already moved on. The
    // wait counts against the session's connect deadline.
    let turn = tokio::select! {
        turn = runtime::opening_turn() => turn,
        _ = closed_while_connecting(&mut commands) => return,
    };
    let client = tokio::select! {
        // Boxed: connecting takes a large future (TCP, TLS, WebSocket, MQTT) that the task
        // would otherwise carry for the whole life of the connection.
        client = Box::pin(connect(&spec)) => client,
        _ = closed_while_connecting(&mut commands) => return,
    };
    drop(turn);
    drop(spec);
    let client = match client {
        Ok(client) => client,
        Err(error) => {
            tracing::debug!(link = ?id, %error, "connect failed");
            return events.emit(LinkEvent::ConnectFailed(error));
        }
    };
    events.emit(LinkEvent::Connected);

    let sink = client.sink();
    let closing = Rc::new(Cell::new(false));
    let (gone_tx, mut gone) = oneshot::channel();
    let inbound = events.clone();
    ntex::rt::spawn(async move {
        let result = client
            .start(fn_service(move |message: client::ProtocolMessage| {
                let events = inbound.clone();
                async move { Ok::<_, ()>(deliver(message, &events).await) }
            }))
            .await;
        let _ = gone_tx.send(result.err().map(|e| format!("{e:?}")));
    });

    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(LinkCommand::Subscribe) => spawn_subscribe(&sink, &events),
                Some(LinkCommand::Publish(publish)) => spawn_publish(&sink, &events, &closing, *publish),
                Some(LinkCommand::Unsubscribe) => spawn_unsubscribe(&sink, &events),
                Some(LinkCommand::Close) | None => {
                    closing.set(true);
                    // SRS 18_045: DISCONNECT, then close.
                    sink.close();
                    let _ = gone.await;
                    return events.emit(LinkEvent::Closed(Ok(())));
                }
            },
            ended = &mut gone => {
                let why = ended.ok().flatten().unwrap_or_else(|| "the service closed the connection".to_owned());
                let error = TransportError::new(TransportErrorKind::ConnectionLost, why);
                return events.emit(LinkEvent::ConnectionLost(error.into()));
            }
        }
    }
}

async fn closed_while_connecting(commands: &mut inbox::Receiver<LinkCommand>) {
    loop {
        match commands.recv().await {
            Some(LinkCommand::Close) | None => return,
            // Nothing else is sent before Connected.
            Some(_) => {}
        }
    }
}

async fn deliver(message: client::ProtocolMessage, events: &Events) -> v3::ProtocolMessageAck {
    match message {
        client::ProtocolMessage::Publish(publish) => {
            let topic = publish.packet().topic.to_string();
            match publish.read_all().await {
                Ok(payload) => events.emit(LinkEvent::Message {
                    topic,
                    payload: payload.to_vec(),
                }),
                Err(e) => tracing::warn!(
                    topic,
                    "dropping a message whose payload could not be read: {e:?}"
                ),
            }
            publish.ack()
        }
        other => other.ack(),
    }
}

fn spawn_subscribe(sink: &v3::MqttSink, events: &Events) {
    let (sink, events) = (sink.clone(), events.clone());
    ntex::rt::spawn(async move {
        let filter = ByteString::from_static(dps_messages::topic::RESPONSE_TOPIC_FILTER);
        let result = sink
            .subscribe()
            .topic_filter(filter, codec::QoS::AtLeastOnce)
            .send()
            .await;
        events.emit(match result {
            Ok(codes)
                if codes
                    .iter()
                    .all(|c| matches!(c, codec::SubscribeReturnCode::Success(_))) =>
            {
                LinkEvent::Subscribed
            }
            Ok(codes) => LinkEvent::SubscribeFailed(
                TransportError::new(
                    TransportErrorKind::Subscribe,
                    format!("the service refused the subscription: {codes:?}"),
                )
                .into(),
            ),
            Err(e) => LinkEvent::SubscribeFailed(
                TransportError::new(TransportErrorKind::Subscribe, e).into(),
            ),
        });
    });
}

fn spawn_publish(sink: &v3::MqttSink, events: &Events, closing: &Rc<Cell<bool>>, publish: Publish) {
    let (sink, events, closing) = (sink.clone(), events.clone(), closing.clone());
    let Publish {
        rid,
        topic,
        payload,
    } = publish;
    ntex::rt::spawn(async move {
        let result = sink
            .publish(ByteString::from(topic))
            .send_at_least_once(Bytes::from(payload))
            .await;
        events.emit(match result {
            Ok(()) => LinkEvent::PublishAcked { rid },
            // The connection went away under the publish, not closed by us: report the loss
            // now, with the publish's error, so that the session leaves the connection at once
            // (and a request right after reconnects) rather than when the dispatcher's own report
            // comes in.
            Err(SendPacketError::Disconnected) if !closing.get() => LinkEvent::ConnectionLost(
                TransportError::new(
                    TransportErrorKind::Publish,
                    "the connection closed before the PUBACK",
                )
                .into(),
            ),
            Err(e) => LinkEvent::PublishFailed {
                rid,
                error: TransportError::new(TransportErrorKind::Publish, e).into(),
            },
        });
    });
}

fn spawn_unsubscribe(sink: &v3::MqttSink, events: &Events) {
    let (sink, events) = (sink.clone(), events.clone());
    ntex::rt::spawn(async move {
        let filter = ByteString::from_static(dps_messages::topic::RESPONSE_TOPIC_FILTER);
        let result = sink.unsubscribe().topic_filter(filter).send().await;
        events.emit(LinkEvent::Unsubscribed(result.map_err(|e| {
            TransportError::new(TransportErrorKind::Unsubscribe, e).into()
        })));
    });
}

/// Host and port kept apart: a `host:port` string would go to DNS whole. An IP address needs no
/// lookup; a name is resolved. The host is also the TLS server name.
#[derive(Clone, Debug)]
struct Target {
    host: String,
    port: u16,
}

impl Address for Target {
    fn host(&self) -> &str {
        &self.host
    }

    fn port(&self) -> Option<u16> {
        Some(self.port)
    }

    fn addr(&self) -> Option<SocketAddr> {
        self.host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }
}

/// The MQTT settings of every connection on this runtime thread. Built once: ntex keeps the
/// defaults it fills in for a configuration in a thread-local map for as long as the thread
/// lives, so a configuration per connection would grow that map with every connection.
fn mqtt_config() -> SharedCfg {
    thread_local! {
        static CONFIG: SharedCfg = SharedCfg::new("dps-transport")
            .add(ntex_mqtt::MqttServiceConfig::new().set_max_size(MAX_PACKET_BYTES as u32))
            // DPS packets are small (a few hundred bytes): 4 KiB buffers instead of ntex's
            // 16 KiB defaults save about 5 KiB per open connection. Larger packets still fit;
            // the buffers grow by 4 KiB steps.
            .add(
                ntex::io::IoConfig::new()
                    .set_read_buf(IO_BUF_BYTES, 512, 128)
                    .set_write_buf(IO_BUF_BYTES, 512, 128)
                    .set_write_page_size(ntex::util::BytePageSize::Size4),
            )
            .build();
    }
    CONFIG.with(SharedCfg::clone)
}

fn connect_packet(spec: &LinkSpec) -> codec::Connect {
    codec::Connect {
        clean_session: spec.params.clean_session,
        keep_alive: spec.keep_alive,
        client_id: ByteString::from(spec.params.client_id.clone()),
        username: Some(ByteString::from(spec.params.username.clone())),
        password: spec.password.clone().map(|p| Bytes::from(p.into_bytes())),
        ..codec::Connect::default()
    }
}

/// Opens TCP, TLS, (WebSocket,) and MQTT; the error says why not, with the TLS reason when
/// there is one.
async fn connect(spec: &LinkSpec) -> Result<client::Client, ProvisioningError> {
    let endpoint = &spec.params.endpoint;
    let target = Target {
        host: endpoint.host.clone(),
        port: endpoint.port,
    };
    let packet = connect_packet(spec);
    let cfg = mqtt_config();
    let result = match endpoint.protocol {
        Protocol::Mqtt => {
            let connector = ntex::connect::rustls::TlsConnector::from(spec.tls.clone());
            mqtt_handshake(connector, cfg, target, packet).await?
        }
        Protocol::MqttWs => {
            let host = if target.host.contains(':') {
                format!("[{}]", target.host)
            } else {
                target.host.clone()
            };
            let uri = format!("https://{host}:{}{}", target.port, endpoint.path);
            let mut builder = ws::WsClient::builder(uri.as_str());
            builder
                .protocols([dps_messages::connect::WEBSOCKET_SUBPROTOCOL])
                .max_frame_size(MAX_PACKET_BYTES);
            if let Some(addr) = target.addr() {
                builder.address(addr);
            }
            let ws_client = builder
                .rustls(spec.tls.clone())
                .build(cfg.clone())
                .await
                .map_err(|e| {
                    TransportError::new(
                        TransportErrorKind::Connect,
                        format!("WebSocket client: {e:?}"),
                    )
                })?;
            let ws_client = Rc::new(ws_client);
            let connector = move |_: Connect<Target>| {
                let ws_client = ws_client.clone();
                async move {
                    let connection = ws_client.connect().await.map_err(|e| {
                        ConnectError::Io(io::Error::other(format!("WebSocket upgrade: {e}")))
                    })?;
                    Ok(connection.into_transport())
                }
            };
            mqtt_handshake(connector, cfg, target, packet).await?
        }
    };
    result.map_err(|e| connect_error(e, spec))
}

/// CONNECT and CONNACK over whatever `connector` opens (TLS, or WebSocket over TLS).
async fn mqtt_handshake<F, U>(
    connector: F,
    cfg: SharedCfg,
    target: Target,
    packet: codec::Connect,
) -> Result<Result<client::Client, client::ClientError<codec::ConnectAck>>, ProvisioningError>
where
    F: IntoServiceFactory<U, Connect<Target>, SharedCfg>,
    U: ServiceFactory<Connect<Target>, SharedCfg, Error = ConnectError>,
    IoBoxed: From<U::Response>,
{
    let service = client::MqttConnector::new()
        .connector(connector)
        .pipeline(cfg)
        .await
        .map_err(|_| {
            TransportError::new(TransportErrorKind::Connect, "the connector could not start")
        })?;
    Ok(service.call(client::Connect::with(target, packet)).await)
}

/// What a service closing the connection during the handshake most likely means when the
/// device presents a certificate.
const MAY_HAVE_REJECTED_CERTIFICATE: &str = "it may have rejected the client certificate (does \
     it chain to the CA of the enrollment?)";

/// Whether `error` is the connection being cut rather than failing for a reason of its own.
fn is_reset(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

fn connect_error(
    error: client::ClientError<codec::ConnectAck>,
    spec: &LinkSpec,
) -> ProvisioningError {
    if let Some(tls) = spec.tls_errors.take() {
        return ProvisioningError::Tls(tls);
    }
    let connect = |detail: String| TransportError::new(TransportErrorKind::Connect, detail).into();
    match error {
        client::ClientError::Ack(ack) => match ConnackRefusal::from_code(ack.return_code as u8) {
            Some(refusal) => ProvisioningError::ConnectionRefused(refusal),
            None => connect("CONNACK without a return code".into()),
        },
        client::ClientError::Connect(ConnectError::Io(e))
        | client::ClientError::Disconnected(Some(e)) => match rustls_error_in(&e) {
            Some(tls) => ProvisioningError::Tls(tls),
            // The same rejection, when the service's close reset the connection.
            None if spec.presents_certificate && is_reset(&e) => {
                connect(format!("{e}: {MAY_HAVE_REJECTED_CERTIFICATE}"))
            }
            None => connect(e.to_string()),
        },
        // With TLS 1.3 the server checks the client certificate after the client's handshake is
        // over, and ntex closes without passing on the alert: say what it most likely means.
        client::ClientError::Disconnected(None) if spec.presents_certificate => connect(format!(
            "the service closed the connection before CONNACK: {MAY_HAVE_REJECTED_CERTIFICATE}"
        )),
        client::ClientError::Disconnected(None) => {
            connect("the service closed the connection before CONNACK".into())
        }
        client::ClientError::HandshakeTimeout => connect("the MQTT handshake timed out".into()),
        other => connect(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use dps_messages::RegistrationRequest;

    use super::*;
    use crate::tls::{TlsSetup, TrustRoots};

    fn spec(presents_certificate: bool) -> LinkSpec {
        let request = RegistrationRequest::new("0ne00000001", "dev");
        let (tls, tls_errors) = TlsSetup::new(&TrustRoots::PublicWeb)
            .unwrap()
            .client_config(None)
            .unwrap();
        LinkSpec {
            id: LinkId(1),
            params: ConnectParams::new(Protocol::Mqtt, &request).unwrap(),
            password: None,
            tls,
            tls_errors,
            keep_alive: 60,
            presents_certificate,
        }
    }

    fn detail(error: ProvisioningError) -> String {
        match error {
            ProvisioningError::Transport(TransportError {
                kind: TransportErrorKind::Connect,
                detail,
            }) => detail,
            other => panic!("{other:?}"),
        }
    }

    /// A service that rejects the client certificate closes the connection; depending on
    /// timing the client sees a close or a reset. Either names the likely cause.
    #[test]
    fn a_cut_handshake_with_a_certificate_names_the_certificate() {
        let closed = client::ClientError::Disconnected(None);
        assert!(detail(connect_error(closed, &spec(true))).contains("client certificate"));
        for kind in [io::ErrorKind::ConnectionReset, io::ErrorKind::BrokenPipe] {
            let reset = client::ClientError::Disconnected(Some(io::Error::from(kind)));
            let detail = detail(connect_error(reset, &spec(true)));
            assert!(detail.contains("client certificate"), "{detail}");
        }
        // Without a certificate, or for another failure, the error is passed on as it is.
        let reset = client::ClientError::Disconnected(Some(io::ErrorKind::ConnectionReset.into()));
        assert!(!detail(connect_error(reset, &spec(false))).contains("certificate"));
        let refused =
            client::ClientError::Connect(ConnectError::Io(io::ErrorKind::ConnectionRefused.into()));
        assert!(!detail(connect_error(refused, &spec(true))).contains("certificate"));
    }
}
