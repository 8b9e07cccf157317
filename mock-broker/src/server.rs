//! The ntex wiring: TLS, the WebSocket upgrade, and the MQTT 3.1.1 server whose handlers feed
//! the [`Dps`] and the [`Recorder`].
//!
//! Traps this module avoids (see DESIGN.md): the ntex-mqtt server closes the connection on
//! SUBSCRIBE, UNSUBSCRIBE and PINGREQ unless the `protocol` service acks them; the WebSocket 101
//! must echo `Sec-WebSocket-Protocol: mqtt`, must not echo extensions, must not carry
//! `transfer-encoding`, and the frame limit must exceed DPS's 96 KB messages.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ntex::http::{self, Response, StatusCode, h1, header};
use ntex::io::{Filter, Io};
use ntex::service::{Pipeline, ServiceFactory, chain_factory, fn_factory_with_config, fn_service};
use ntex::time::{Millis, sleep};
use ntex::util::{ByteString, Bytes};
use ntex::{SharedCfg, ws};
use ntex_mqtt::v3::{self, ProtocolMessage, Session, codec};
use ntex_mqtt::{Control, MqttError, Reason};

use crate::auth::{AuthConfig, ConnectAttempt, authorize};
use crate::clock::unix_now;
use crate::dps::{Dps, Reply};
use crate::enrollment::Presented;
use crate::limits::{ConnectionLimits, Usage, prefix};
use crate::record::{Connack, ConnectionRecord, Event, Transport};
use crate::recorder::Recorder;
use crate::script::ConnectStep;
use crate::x509::subject_common_name;

/// The largest MQTT packet the broker reads, and the WebSocket frame limit: above DPS's 96 KB.
const MAX_PACKET_BYTES: usize = 512 * 1024;

/// What every connection shares.
pub(crate) struct Shared {
    pub(crate) dps: Dps,
    pub(crate) auth: AuthConfig,
    pub(crate) recorder: Arc<Recorder>,
    pub(crate) limits: ConnectionLimits,
}

/// An error that ends a connection.
#[derive(Debug)]
pub(crate) struct ConnError(pub(crate) String);

impl From<()> for ConnError {
    fn from((): ()) -> Self {
        ConnError("service failed".into())
    }
}

/// One accepted connection's state.
#[derive(Clone)]
pub(crate) struct Conn {
    id: u64,
    client_id: Rc<str>,
    /// The api-version the username announced (empty when none): it decides whether a CSR
    /// may be sent.
    api_version: Rc<str>,
    sink: v3::MqttSink,
    shared: Arc<Shared>,
    step: ConnectStep,
    /// Set when the broker closes the connection on purpose, to record why.
    closing: Rc<RefCell<Option<String>>>,
    /// What the connection has sent, against the limits.
    usage: Rc<Cell<Usage>>,
    /// The certificate chain and SAS token it connected with, for the enrollments.
    presented: Rc<Presented>,
}

impl Conn {
    fn close(&self, why: impl Into<String>) {
        self.mark_closing(why);
        self.sink.close();
    }

    /// Records why the connection is about to end (the first reason wins).
    fn mark_closing(&self, why: impl Into<String>) {
        self.closing.borrow_mut().get_or_insert_with(|| why.into());
    }
}

fn connack_code(code: u8) -> codec::ConnectAckReason {
    use codec::ConnectAckReason::*;
    match code {
        1 => UnacceptableProtocolVersion,
        2 => IdentifierRejected,
        3 => ServiceUnavailable,
        4 => BadUserNameOrPassword,
        5 => NotAuthorized,
        _ => Reserved,
    }
}

async fn handshake(
    h: v3::Handshake,
    shared: Arc<Shared>,
    transport: Transport,
) -> Result<v3::HandshakeAck<Conn>, ConnError> {
    let packet = h.packet();
    let client_id = packet.client_id.to_string();
    let peer_cert = h.io().query::<ntex::tls::rustls::PeerCert<'static>>();
    let peer_cert = peer_cert.as_ref().map(|c| c.0.as_ref().to_vec());
    let peer_cert_cn = peer_cert.as_deref().and_then(subject_common_name);
    let chain = h
        .io()
        .query::<ntex::tls::rustls::PeerCertChain<'static>>()
        .as_ref()
        .map(|c| c.0.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    let presented = Presented {
        chain,
        sas: packet
            .password
            .as_ref()
            .and_then(|p| std::str::from_utf8(p).ok())
            .map(str::to_owned),
    };
    let server_name = h
        .io()
        .query::<ntex::tls::Servername>()
        .as_ref()
        .map(|name| name.0.clone());
    let mut record = ConnectionRecord {
        id: 0,
        transport,
        client_id: client_id.clone(),
        username: packet.username.as_ref().map(|u| u.to_string()),
        password_present: packet.password.is_some(),
        clean_session: packet.clean_session,
        keep_alive: packet.keep_alive,
        peer_cert_cn: peer_cert_cn.clone(),
        server_name,
        connack: Connack::Dropped,
        events: Vec::new(),
        events_dropped: 0,
        ended: None,
        started: Instant::now(),
    };

    let step = shared.dps.next_connect_step(&client_id);
    let verdict = match &step {
        ConnectStep::DropBeforeConnack => {
            record.ended = Some("dropped before CONNACK (scripted)".into());
            shared.recorder.open(record);
            return Err(ConnError("scripted drop before CONNACK".into()));
        }
        ConnectStep::Refuse { code } => Err((*code, "scripted refusal".to_owned())),
        ConnectStep::DelayConnack { ms } => {
            sleep(Millis(u32::try_from(*ms).unwrap_or(u32::MAX))).await;
            Ok(())
        }
        _ => Ok(()),
    };
    let verdict = verdict.and_then(|()| {
        let password = packet.password.as_ref().map(|p| p.as_ref());
        let attempt = ConnectAttempt {
            client_id: &client_id,
            username: packet.username.as_deref(),
            password,
            peer_cert_cn: peer_cert_cn.as_deref(),
            peer_cert_present: peer_cert.is_some(),
            now: unix_now(),
        };
        authorize(&shared.auth, &attempt).map_err(|r| (r.code.code(), r.reason))
    });

    match verdict {
        Ok(method) => {
            record.connack = Connack::Accepted {
                method: method.name().to_owned(),
            };
            let id = shared.recorder.open(record);
            let conn = Conn {
                id,
                client_id: client_id.into(),
                api_version: packet
                    .username
                    .as_deref()
                    .and_then(crate::auth::api_version)
                    .unwrap_or_default()
                    .into(),
                sink: h.sink(),
                shared: shared.clone(),
                step,
                closing: Rc::default(),
                usage: Rc::default(),
                presented: Rc::new(presented),
            };
            // Keep the connection up as long as the device keeps its keep-alive.
            Ok(h.ack(conn, false))
        }
        Err((code, reason)) => {
            tracing::info!(client_id, code, reason, "refusing connection");
            record.connack = Connack::Refused {
                code,
                reason: reason.clone(),
            };
            record.ended = Some(format!("refused: {reason}"));
            shared.recorder.open(record);
            Ok(h.failed(connack_code(code)))
        }
    }
}

/// What a record keeps of a payload: its first bytes, as text.
fn shown(payload: &[u8], limits: &ConnectionLimits) -> String {
    let kept = &payload[..payload.len().min(limits.max_recorded_payload)];
    String::from_utf8_lossy(kept).into_owned()
}

async fn publish(conn: Session<Conn>, publish: v3::Publish) -> Result<(), ConnError> {
    let limits = &conn.shared.limits;
    let mut usage = conn.usage.get();
    let over = usage.publish(publish.payload_size(), limits);
    conn.usage.set(usage);
    if let Some(why) = over {
        // Refused before its payload is read: a flood costs no more than its packets.
        tracing::info!(client_id = &*conn.client_id, why, "closing the connection");
        conn.mark_closing(why.clone());
        return Err(ConnError(why));
    }
    let topic = publish.publish_topic().to_owned();
    let payload = publish
        .read_all()
        .await
        .map_err(|e| ConnError(format!("payload: {e:?}")))?;
    let recorder = &conn.shared.recorder;
    recorder.event(
        conn.id,
        Event::Publish {
            topic: prefix(&topic, limits.max_recorded_topic).to_owned(),
            payload: shown(&payload, limits),
            payload_len: payload.len(),
            qos: publish.qos() as u8,
        },
    );

    let reply = conn.shared.dps.on_publish(
        crate::dps::Client {
            id: &conn.client_id,
            api_version: &conn.api_version,
            presented: &conn.presented,
        },
        &topic,
        &payload,
        SystemTime::now(),
    );
    let conn = (*conn).clone();
    match reply {
        Reply::Silent => {}
        Reply::CloseWithoutPuback => {
            let why = "closed on the publish, without a PUBACK (scripted)";
            conn.mark_closing(why);
            return Err(ConnError(why.into()));
        }
        Reply::Send {
            topic,
            payload,
            delay,
        } => {
            ntex::rt::spawn(async move {
                wait(delay).await;
                let limits = &conn.shared.limits;
                conn.shared.recorder.event(
                    conn.id,
                    Event::Response {
                        topic: prefix(&topic, limits.max_recorded_topic).to_owned(),
                        payload: shown(&payload, limits),
                        payload_len: payload.len(),
                    },
                );
                let sent = conn
                    .sink
                    .publish(ByteString::from(topic))
                    .send_at_least_once(Bytes::from(payload))
                    .await;
                if let Err(e) = sent {
                    tracing::debug!(client_id = &*conn.client_id, "response not delivered: {e}");
                }
            });
        }
        Reply::Close { delay } => {
            ntex::rt::spawn(async move {
                wait(delay).await;
                conn.close("closed by the broker (scripted)");
            });
        }
    }
    Ok(())
}

async fn wait(delay: Duration) {
    if !delay.is_zero() {
        sleep(Millis(u32::try_from(delay.as_millis()).unwrap_or(u32::MAX))).await;
    }
}

fn protocol(conn: &Conn, msg: ProtocolMessage) -> v3::ProtocolMessageAck {
    let recorder = &conn.shared.recorder;
    match msg {
        ProtocolMessage::Subscribe(mut subscribe) => {
            let fail = conn.step == ConnectStep::FailSuback;
            for mut entry in subscribe.iter_mut() {
                let asked = entry.qos();
                // DPS grants what it is asked, up to QoS 1.
                let granted = if asked == codec::QoS::AtMostOnce {
                    asked
                } else {
                    codec::QoS::AtLeastOnce
                };
                if fail {
                    entry.fail();
                } else {
                    entry.confirm(granted);
                }
                recorder.event(
                    conn.id,
                    Event::Subscribe {
                        topic: entry.topic().to_string(),
                        qos: asked as u8,
                        granted: !fail,
                    },
                );
            }
            if conn.step == ConnectStep::CloseAfterSuback {
                let conn = conn.clone();
                ntex::rt::spawn(async move { conn.close("closed after SUBACK (scripted)") });
            }
            subscribe.ack()
        }
        ProtocolMessage::Unsubscribe(unsubscribe) => {
            let topics = unsubscribe.iter().map(|t| t.to_string()).collect();
            recorder.event(conn.id, Event::Unsubscribe { topics });
            unsubscribe.ack()
        }
        ProtocolMessage::Disconnect(disconnect) => {
            recorder.event(conn.id, Event::Disconnect);
            conn.mark_closing("client sent DISCONNECT");
            disconnect.ack()
        }
        ProtocolMessage::Ping(ping) => {
            recorder.event(conn.id, Event::Ping);
            ping.ack()
        }
        other @ ProtocolMessage::PublishRelease(_) => other.ack(),
    }
}

fn stop_reason(conn: &Conn, reason: &Reason<ConnError>) -> String {
    if let Some(why) = conn.closing.borrow().as_ref() {
        return why.clone();
    }
    match reason {
        Reason::Error(e) => format!("error: {}", e.get_ref().0),
        Reason::Protocol(e) => format!("protocol error: {}", e.get_ref()),
        Reason::PeerGone(gone) => match gone.err() {
            Some(e) => format!("connection lost: {e}"),
            None => "connection closed by the client".to_owned(),
        },
    }
}

/// The server for one listener: the [`gate`](crate::gate) (a whole MQTT 3.1.1 CONNECT within
/// the deadline), then MQTT.
pub(crate) fn mqtt_server<F: Filter>(
    shared: Arc<Shared>,
    transport: Transport,
) -> impl ServiceFactory<Io<F>, SharedCfg, Response = (), Error = MqttError<ConnError>, InitError = ()>
{
    let at_gate = shared.clone();
    let gate = fn_service(move |io: Io<F>| {
        let shared = at_gate.clone();
        async move { crate::gate::admit(io, &shared, transport, MAX_PACKET_BYTES).await }
    });
    chain_factory(gate).and_then(mqtt(shared, transport))
}

/// The MQTT 3.1.1 server proper.
fn mqtt<F: Filter>(
    shared: Arc<Shared>,
    transport: Transport,
) -> impl ServiceFactory<Io<F>, SharedCfg, Response = (), Error = MqttError<ConnError>, InitError = ()>
{
    v3::MqttServer::new(move |h: v3::Handshake| handshake(h, shared.clone(), transport))
        .control(fn_factory_with_config(async |conn: Session<Conn>| {
            Ok::<_, ConnError>(fn_service(move |control: Control<ConnError>| {
                if let Control::Stop(reason) = &control {
                    conn.shared
                        .recorder
                        .close(conn.id, stop_reason(&conn, reason));
                }
                async { Ok::<_, ConnError>(None) }
            }))
        }))
        .protocol(fn_factory_with_config(async |conn: Session<Conn>| {
            if conn.step == ConnectStep::CloseAfterConnack {
                // The CONNACK is already in the write buffer; close flushes it first.
                conn.close("closed after CONNACK (scripted)");
            }
            Ok::<_, ConnError>(fn_service(move |msg| {
                let ack = protocol(&conn, msg);
                async { Ok::<_, ConnError>(ack) }
            }))
        }))
        .publish(fn_factory_with_config(async |conn: Session<Conn>| {
            Ok::<_, ConnError>(fn_service(move |p: v3::Publish| publish(conn.clone(), p)))
        }))
}

/// The 101 answer to a WebSocket upgrade on `/$iothub/websocket` asking for `mqtt`, or why not.
fn websocket_response(req: &http::Request) -> Result<Response, Response> {
    let not_found = || Response::build(StatusCode::NOT_FOUND).body("not a DPS WebSocket path");
    if req.path() != dps_messages::connect::WEBSOCKET_PATH {
        return Err(not_found());
    }
    ws::verify_handshake(req.head())
        .map_err(|e| Response::build(StatusCode::BAD_REQUEST).body(format!("{e:?}")))?;
    let wants_mqtt = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == "mqtt");
    if !wants_mqtt {
        return Err(
            Response::build(StatusCode::BAD_REQUEST).body("the mqtt subprotocol is required")
        );
    }
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| ws::hash_key(k.as_ref()));
    let Some(Ok(accept)) = key else {
        return Err(Response::build(StatusCode::BAD_REQUEST).body("bad Sec-WebSocket-Key"));
    };
    Ok(Response::build(StatusCode::SWITCHING_PROTOCOLS)
        .upgrade("websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .header(header::SEC_WEBSOCKET_PROTOCOL, "mqtt")
        .finish())
}

/// The WebSocket listener's service: HTTP/1 that only upgrades, then MQTT over the frames.
pub(crate) fn websocket_server<F: Filter>(
    shared: Arc<Shared>,
) -> impl ServiceFactory<Io<F>, SharedCfg, Response = (), Error = ConnError, InitError = ()> {
    let h1 = http::HttpService::h1(|_req: http::Request| async {
        Ok::<_, std::io::Error>(
            Response::build(StatusCode::NOT_FOUND).body("use a WebSocket upgrade"),
        )
    })
    .control(fn_factory_with_config(move |_cfg: SharedCfg| {
        let shared = shared.clone();
        async move {
            let mqtt = Pipeline::new(
                chain_factory(mqtt_server::<_>(shared, Transport::Wss))
                    .create(SharedCfg::default())
                    .await?,
            );
            Ok::<_, ()>(fn_service(move |msg: h1::Control<F, std::io::Error>| {
                let ack = match msg {
                    h1::Control::Upgrade(upgrade) => match websocket_response(upgrade.get_ref()) {
                        Err(refusal) => upgrade.fail_with(refusal),
                        Ok(response) => {
                            let mqtt = mqtt.clone();
                            upgrade.handle(move |_req, io, codec| async move {
                                let (head, _) = response.into_parts();
                                io.send(
                                    h1::Message::Item((
                                        head.drop_body(),
                                        http::body::BodySize::None,
                                    )),
                                    &codec,
                                )
                                .await
                                .map_err(|e| tracing::debug!("WebSocket 101 not sent: {e:?}"))?;
                                let ws_io = ws::WsTransport::create(
                                    io,
                                    ws::Codec::new().max_size(MAX_PACKET_BYTES),
                                );
                                mqtt.call(ws_io)
                                    .await
                                    .map_err(|e| tracing::debug!("WebSocket MQTT: {e:?}"))
                            })
                        }
                    },
                    other => other.ack(),
                };
                async move { Ok::<_, std::io::Error>(ack) }
            }))
        }
    }));
    chain_factory(h1)
        .map_err(|e| ConnError(format!("http: {e:?}")))
        .map_init_err(|_| ())
}

/// The MQTT packet limit as ntex-mqtt wants it.
pub(crate) fn mqtt_config() -> SharedCfg {
    SharedCfg::new("dps-mock-broker")
        .add(ntex_mqtt::MqttServiceConfig::new().set_max_size(MAX_PACKET_BYTES as u32))
        .build()
}
