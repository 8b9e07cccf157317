//! MQTT over WebSocket: the HTTP upgrade to `wss://<host>:<port>/$iothub/websocket` with the
//! `mqtt` subprotocol, over TLS (and through the proxy's tunnel, if there is one), then the
//! same CONNECT and CONNACK as over TLS alone. One MQTT packet is one WebSocket frame.

use std::io;
use std::rc::Rc;

use dps_messages::ProvisioningError;
use dps_messages::error::{TransportError, TransportErrorKind};
use ntex::connect::{Connect, ConnectError};
use ntex::http::Uri;
use ntex::io::{Filter, Io};
use ntex::service::ServiceFactory;
use ntex::{SharedCfg, ws};
use ntex_mqtt::v3::{client, codec};

#[cfg(feature = "proxy")]
use super::connect::tunnel_then_tls;
use super::connect::{Target, direct_then_tls, mqtt_handshake};
use super::tunnel::ProxyHop;
use super::{LinkSpec, MAX_PACKET_BYTES};

/// The WebSocket upgrade to `spec`'s endpoint, directly or through `proxy`, then CONNECT and
/// CONNACK.
pub(super) async fn connect(
    spec: &LinkSpec,
    proxy: Option<&ProxyHop>,
    cfg: SharedCfg,
    target: Target,
    packet: codec::Connect,
) -> Result<Result<client::Client, client::ClientError<codec::ConnectAck>>, ProvisioningError> {
    let host = if target.host.contains(':') {
        format!("[{}]", target.host)
    } else {
        target.host.clone()
    };
    let uri = format!(
        "https://{host}:{}{}",
        target.port, spec.connect.endpoint.path
    );
    let mut builder = ws::WsClient::builder(uri.as_str());
    builder
        .protocols([dps_messages::connect::WEBSOCKET_SUBPROTOCOL])
        .max_frame_size(MAX_PACKET_BYTES);
    match proxy {
        None => {
            let (tls, direct_to) = (spec.tls.clone(), target.clone());
            let connector = ntex::service::fn_service(move |_: Connect<Uri>| {
                direct_then_tls(tls.clone(), direct_to.clone())
            });
            upgrade(builder.connector(connector), cfg, target, packet).await
        }
        #[cfg(not(feature = "proxy"))]
        Some(hop) => match *hop {},
        #[cfg(feature = "proxy")]
        Some(hop) => {
            let (hop, tls, tunnel_to) = (hop.clone(), spec.tls.clone(), target.clone());
            let connector = ntex::service::fn_service(move |_: Connect<Uri>| {
                tunnel_then_tls(hop.clone(), tls.clone(), tunnel_to.clone())
            });
            upgrade(builder.connector(connector), cfg, target, packet).await
        }
    }
}

/// The WebSocket upgrade over what `builder`'s connector opens, then CONNECT and CONNACK.
async fn upgrade<F, T>(
    mut builder: ws::WsClientBuilder<F, T>,
    cfg: SharedCfg,
    target: Target,
    packet: codec::Connect,
) -> Result<Result<client::Client, client::ClientError<codec::ConnectAck>>, ProvisioningError>
where
    F: Filter,
    T: ServiceFactory<Connect<Uri>, SharedCfg, Response = Io<F>, Error = ConnectError>,
    T::InitError: std::fmt::Debug,
{
    let ws_client = builder.build(cfg.clone()).await.map_err(|e| {
        TransportError::new(
            TransportErrorKind::Connect,
            format!("WebSocket client: {e:?}"),
        )
    })?;
    let ws_client = Rc::new(ws_client);
    let connector = move |_: Connect<Target>| {
        let ws_client = ws_client.clone();
        async move {
            let connection = ws_client.connect().await.map_err(|e| match e {
                // What the connector said (the proxy, TLS, TCP), as it said it.
                ws::error::WsClientError::Connect(e) => e,
                other => ConnectError::Io(io::Error::other(format!("WebSocket upgrade: {other}"))),
            })?;
            Ok(connection.into_transport())
        }
    };
    mqtt_handshake(connector, cfg, target, packet).await
}
