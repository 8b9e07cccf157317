//! The MQTT link: one connection, run on the MQTT runtime thread, taking the session's
//! [`LinkAction`]s as the actor hands them on and reporting [`LinkEvent`]s back to it.
//!
//! The link holds no protocol state: it does what the session asks and says what happened.
//! [`connect`] opens the connection; [`ending`] says how it ended.

mod connect;
mod ending;
mod names;
#[cfg(feature = "proxy")]
pub(crate) mod tunnel;
#[cfg(not(feature = "proxy"))]
#[path = "no_tunnel.rs"]
pub(crate) mod tunnel;
#[cfg(feature = "websocket")]
mod websocket;

use std::sync::Arc;

use actix::{Message, WeakRecipient};
use dps_messages::ProvisioningError;
use dps_messages::connect::{ConnectParams, Credential};
use dps_messages::error::{TransportError, TransportErrorKind};
use dps_messages::response::ResponseTopic;
use ntex::service::fn_service;
use ntex::util::{ByteString, Bytes};
use ntex_mqtt::Control;
use ntex_mqtt::error::SendPacketError;
use ntex_mqtt::v3::{self, client, codec};
use tokio::sync::oneshot;

use self::connect::connect;
use self::ending::{EndingSlot, Refused};
use crate::inbox::{self, inbox};
use crate::runtime::{self, MqttRuntime};
use crate::session::{LinkAction, LinkEvent, LinkId};
use crate::tls::{TlsErrorSlot, TlsSetup};

/// The largest MQTT packet (and WebSocket frame) the link reads. Above DPS's 96 KB limit, so an
/// oversized response reaches the protocol layer and fails as a typed error there.
const MAX_PACKET_BYTES: usize = 1024 * 1024;

/// A link event, addressed to the actor.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct LinkEventMsg {
    pub(crate) link: LinkId,
    pub(crate) event: LinkEvent,
}

/// What every link of a transport shares: how it sets up TLS, and the proxy it goes through.
#[derive(Debug)]
pub(crate) struct LinkSetup {
    pub(crate) tls: TlsSetup,
    /// The HTTP proxy to tunnel through, if any.
    pub(crate) proxy: Option<tunnel::ProxyHop>,
}

/// Everything one link needs to connect: the session's CONNECT and the TLS configuration made
/// for it.
pub(crate) struct LinkSpec {
    pub(crate) id: LinkId,
    /// The CONNECT, its SAS token included. Never logged.
    pub(crate) connect: ConnectParams,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    pub(crate) tls_errors: TlsErrorSlot,
    /// The HTTP proxy to tunnel through, if any.
    pub(crate) proxy: Option<tunnel::ProxyHop>,
}

impl LinkSpec {
    /// Whether the device presents a client certificate (for a better error when the service
    /// hangs up during the handshake).
    pub(crate) fn presents_certificate(&self) -> bool {
        matches!(self.connect.credential, Credential::Certificate(_))
    }
}

/// The actor's handle to a link. Dropping it closes the link.
pub(crate) struct Link {
    pub(crate) id: LinkId,
    actions: inbox::Sender<LinkAction>,
}

impl Link {
    /// Starts link `id` connecting with `connect` on `runtime`; events go to `events`.
    pub(crate) fn open(
        runtime: &MqttRuntime,
        id: LinkId,
        connect: ConnectParams,
        setup: &LinkSetup,
        events: WeakRecipient<LinkEventMsg>,
    ) -> Result<Link, ProvisioningError> {
        let identity = match &connect.credential {
            Credential::Certificate(identity) => Some(identity),
            Credential::SasToken(_) => None,
        };
        let (tls, tls_errors) = setup.tls.client_config(identity)?;
        let spec = LinkSpec {
            id,
            connect,
            tls,
            tls_errors,
            proxy: setup.proxy.clone(),
        };
        let (actions, rx) = inbox();
        runtime.spawn(move || run(Box::new(spec), rx, events))?;
        Ok(Link { id, actions })
    }

    /// Hands the link an action of the session; a link that has ended has already reported
    /// why.
    pub(crate) fn send(&self, action: LinkAction) {
        self.actions.send(action);
    }
}

/// Reports events of one link.
///
/// The actor is held weakly: a link must not keep alive an actor whose every address its user
/// dropped. That actor stops, drops its link handle, and the link closes.
#[derive(Clone)]
struct Events {
    link: LinkId,
    to: WeakRecipient<LinkEventMsg>,
}

impl Events {
    fn emit(&self, event: LinkEvent) {
        if let Some(to) = self.to.upgrade() {
            to.do_send(LinkEventMsg {
                link: self.link,
                event,
            });
        }
    }
}

/// Boxed `spec`: the task keeps only a pointer for its life, and the spec (with its strings and
/// any SAS token) is freed once connected.
async fn run(
    spec: Box<LinkSpec>,
    mut actions: inbox::Receiver<LinkAction>,
    to: WeakRecipient<LinkEventMsg>,
) {
    let id = spec.id;
    let events = Events { link: id, to };
    // Closed (or dropped) while waiting or connecting: the session has already moved on. The
    // wait counts against the session's connect deadline.
    let turn = tokio::select! {
        turn = runtime::opening_turn() => turn,
        _ = closed_while_connecting(&mut actions) => return,
    };
    let client = tokio::select! {
        // Boxed: connecting takes a large future (TCP, TLS, WebSocket, MQTT) that the task
        // would otherwise carry for the whole life of the connection.
        client = Box::pin(connect(&spec)) => client,
        _ = closed_while_connecting(&mut actions) => return,
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
    let ending = EndingSlot::default();
    let (gone_tx, mut gone) = oneshot::channel::<()>();
    let (inbound, observed) = (events.clone(), ending.clone());
    ntex::rt::spawn(async move {
        // The result says nothing the control service has not seen: the slot has the reason.
        let _ = client
            .start_with_control(
                fn_service(move |message: client::ProtocolMessage| {
                    let events = inbound.clone();
                    async move { deliver(message, &events).await }
                }),
                fn_service(move |control: Control<Refused>| {
                    observed.observe(&control);
                    async { Ok::<_, Refused>(None) }
                }),
            )
            .await;
        let _ = gone_tx.send(());
    });

    loop {
        tokio::select! {
            action = actions.recv() => match action {
                Some(LinkAction::Subscribe) => spawn_subscribe(&sink, &events),
                Some(LinkAction::Publish { rid, topic, payload }) => {
                    spawn_publish(&sink, &events, rid, topic, payload)
                }
                Some(LinkAction::Unsubscribe) => spawn_unsubscribe(&sink, &events),
                Some(LinkAction::Close) | None => {
                    // SRS 18_045: DISCONNECT, then close. ntex gives the close its disconnect
                    // timeout (1 s) before it cuts the connection.
                    sink.close();
                    let _ = gone.await;
                    return events.emit(ending.take().closed());
                }
            },
            _ = &mut gone => return events.emit(ending.take().unasked()),
        }
    }
}

async fn closed_while_connecting(actions: &mut inbox::Receiver<LinkAction>) {
    loop {
        match actions.recv().await {
            Some(LinkAction::Close) | None => return,
            // Nothing else is sent before Connected.
            Some(_) => {}
        }
    }
}

/// Hands a message from the service to the session, and acknowledges it.
async fn deliver(
    message: client::ProtocolMessage,
    events: &Events,
) -> Result<v3::ProtocolMessageAck, Refused> {
    match message {
        client::ProtocolMessage::Publish(publish) => {
            // ntex-mqtt's client would answer a QoS 2 PUBLISH with a PUBACK, which is not the
            // MQTT answer (PUBREC). DPS publishes at QoS 1; refusing ends the connection as a
            // protocol violation, said as such.
            if publish.packet().qos == codec::QoS::ExactlyOnce {
                return Err(Refused("a QoS 2 PUBLISH, which DPS never sends"));
            }
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
            Ok(publish.ack())
        }
        other => Ok(other.ack()),
    }
}

// A subscribe, publish or unsubscribe that fails because the connection went away reports
// nothing: the link reports how the connection ended, once, with the real reason.

fn spawn_subscribe(sink: &v3::MqttSink, events: &Events) {
    let (sink, events) = (sink.clone(), events.clone());
    ntex::rt::spawn(async move {
        let filter = ByteString::from_static(ResponseTopic::FILTER);
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
            Err(SendPacketError::Disconnected) => return,
            Err(e) => LinkEvent::SubscribeFailed(
                TransportError::new(TransportErrorKind::Subscribe, e).into(),
            ),
        });
    });
}

fn spawn_publish(
    sink: &v3::MqttSink,
    events: &Events,
    rid: String,
    topic: String,
    payload: Vec<u8>,
) {
    tracing::debug!(link = ?events.link, topic, "publishing");
    let (sink, events) = (sink.clone(), events.clone());
    ntex::rt::spawn(async move {
        let result = sink
            .publish(ByteString::from(topic))
            .send_at_least_once(Bytes::from(payload))
            .await;
        events.emit(match result {
            Ok(()) => LinkEvent::PublishAcked { rid },
            Err(SendPacketError::Disconnected) => return,
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
        let filter = ByteString::from_static(ResponseTopic::FILTER);
        let result = sink.unsubscribe().topic_filter(filter).send().await;
        events.emit(LinkEvent::Unsubscribed(match result {
            Ok(()) => Ok(()),
            Err(SendPacketError::Disconnected) => return,
            Err(e) => Err(TransportError::new(TransportErrorKind::Unsubscribe, e).into()),
        }));
    });
}
