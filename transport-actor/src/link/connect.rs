//! Opening a connection: TCP, TLS, (WebSocket,) and the MQTT CONNECT, with errors that say why
//! one could not be opened.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use dps_messages::connect::{ConnectParams, Credential};
use dps_messages::error::{ConnackRefusal, TransportError, TransportErrorKind};
use dps_messages::{Protocol, ProvisioningError};
use ntex::SharedCfg;
use ntex::connect::{Address, Connect, ConnectError};
use ntex::io::{Filter, Io, IoBoxed, Layer};
use ntex::service::{IntoServiceFactory, ServiceFactory};
use ntex::tls::rustls::TlsClientFilter;
use ntex::util::{ByteString, Bytes};
use ntex_mqtt::v3::{client, codec};
use rustls::pki_types::ServerName;

use super::names;
#[cfg(feature = "proxy")]
use super::tunnel::{self, ProxyHop};
use super::{LinkSpec, MAX_PACKET_BYTES};
use crate::tls::{error_in, rustls_error_in};

/// ntex's read and write buffer size (a 4 KiB allocation less ntex's header).
const IO_BUF_BYTES: usize = 4 * 1024 - 24;

/// Host and port kept apart: a `host:port` string would go to DNS whole. An IP address needs no
/// lookup; a name is resolved. The host is also the TLS server name.
#[derive(Clone, Debug)]
pub(super) struct Target {
    pub(super) host: String,
    pub(super) port: u16,
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
pub(super) fn mqtt_config() -> SharedCfg {
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

/// The session's CONNECT as ntex-mqtt writes it.
fn connect_packet(connect: &ConnectParams) -> codec::Connect {
    let password = match &connect.credential {
        Credential::SasToken(token) => Some(Bytes::from(token.clone().into_bytes())),
        Credential::Certificate(_) => None,
    };
    codec::Connect {
        clean_session: connect.clean_session,
        keep_alive: connect.keep_alive,
        client_id: ByteString::from(connect.client_id.clone()),
        username: Some(ByteString::from(connect.username.clone())),
        password,
        ..codec::Connect::default()
    }
}

/// Opens TCP, TLS, (WebSocket,) and MQTT; the error says why not, with the TLS reason when
/// there is one.
pub(super) async fn connect(spec: &LinkSpec) -> Result<client::Client, ProvisioningError> {
    let endpoint = &spec.connect.endpoint;
    let target = Target {
        host: endpoint.host.clone(),
        port: endpoint.port,
    };
    let packet = connect_packet(&spec.connect);
    let cfg = mqtt_config();
    let result = match (endpoint.protocol, &spec.proxy) {
        (Protocol::Mqtt, None) => {
            let (tls, direct_to) = (spec.tls.clone(), target.clone());
            let connector =
                move |_: Connect<Target>| direct_then_tls(tls.clone(), direct_to.clone());
            mqtt_handshake(connector, cfg, target, packet).await?
        }
        #[cfg(not(feature = "proxy"))]
        (Protocol::Mqtt, Some(hop)) => match *hop {},
        #[cfg(feature = "proxy")]
        (Protocol::Mqtt, Some(hop)) => {
            let (hop, tls, tunnel_to) = (hop.clone(), spec.tls.clone(), target.clone());
            let connector = move |_: Connect<Target>| {
                tunnel_then_tls(hop.clone(), tls.clone(), tunnel_to.clone())
            };
            mqtt_handshake(connector, cfg, target, packet).await?
        }
        #[cfg(feature = "websocket")]
        (Protocol::MqttWs, proxy) => {
            super::websocket::connect(spec, proxy.as_ref(), cfg, target, packet).await?
        }
        // A configuration for WebSocket is refused when it is built.
        #[cfg(not(feature = "websocket"))]
        (Protocol::MqttWs, _) => return Err(crate::config::no_websocket()),
    };
    result.map_err(|e| connect_error(e, spec))
}

/// TCP to `target` (its name looked up once for a while: [`names`]), and TLS over it.
pub(super) async fn direct_then_tls(
    tls: Arc<rustls::ClientConfig>,
    target: Target,
) -> Result<Io<Layer<TlsClientFilter>>, ConnectError> {
    let io = names::open_tcp(&target, mqtt_config()).await?;
    tls_over(io, tls, target).await
}

/// TLS to the service named `target` over `io`.
async fn tls_over<F: Filter>(
    io: Io<F>,
    tls: Arc<rustls::ClientConfig>,
    target: Target,
) -> Result<Io<Layer<TlsClientFilter, F>>, ConnectError> {
    let name =
        ServerName::try_from(target.host).map_err(|e| ConnectError::Io(io::Error::other(e)))?;
    Ok(TlsClientFilter::create(io, tls, name).await?)
}

/// A tunnel through the proxy to `target`, and TLS to the service inside it.
#[cfg(feature = "proxy")]
pub(super) async fn tunnel_then_tls(
    hop: ProxyHop,
    tls: Arc<rustls::ClientConfig>,
    target: Target,
) -> Result<Io<Layer<TlsClientFilter>>, ConnectError> {
    let io = tunnel::open(&hop, &target.host, target.port, mqtt_config())
        .await
        .map_err(|e| ConnectError::Io(io::Error::other(e)))?;
    tls_over(io, tls, target).await
}

/// CONNECT and CONNACK over whatever `connector` opens (TLS, or WebSocket over TLS).
pub(super) async fn mqtt_handshake<F, U>(
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
/// `NotConnected` is ntex-tls's word for a peer that closed during the TLS handshake: with
/// TLS 1.2 (all real DPS speaks) a service refusing the client certificate sends its alert
/// and closes there, and ntex-tls passes on neither the alert nor a reset.
fn is_reset(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::NotConnected
    )
}

/// Whether `error` says the service could not be reached, yet: what a device sees while its
/// network comes up, and what trying again later may fix.
fn is_unreachable(error: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | NetworkUnreachable
            | HostUnreachable
            | NetworkDown
            | AddrNotAvailable
            | NotConnected
            | TimedOut
    )
}

fn connect_error(
    error: client::ClientError<codec::ConnectAck>,
    spec: &LinkSpec,
) -> ProvisioningError {
    if let Some(tls) = spec.tls_errors.take() {
        return tls;
    }
    let connect = |detail: String| TransportError::new(TransportErrorKind::Connect, detail).into();
    let unreachable =
        |detail: String| TransportError::new(TransportErrorKind::Unreachable, detail).into();
    match error {
        client::ClientError::Ack(ack) => match ConnackRefusal::from_code(ack.return_code as u8) {
            Some(refusal) => ProvisioningError::ConnectionRefused(refusal),
            None => connect("CONNACK without a return code".into()),
        },
        client::ClientError::Connect(ConnectError::Resolver(e)) => unreachable(format!(
            "cannot resolve `{}`: {e}",
            spec.connect.endpoint.host
        )),
        client::ClientError::Connect(ConnectError::NoRecords) => unreachable(format!(
            "`{}` has no address records",
            spec.connect.endpoint.host
        )),
        client::ClientError::Connect(ConnectError::Io(e))
        | client::ClientError::Disconnected(Some(e)) => match rustls_error_in(&e) {
            Some(tls) => spec.tls_errors.failure(tls),
            None if let Some(proxy) = error_in::<dps_messages::error::ProxyError>(&e) => {
                proxy.into()
            }
            // The same rejection, when the service's close reset the connection.
            None if spec.presents_certificate() && is_reset(&e) => {
                connect(format!("{e}: {MAY_HAVE_REJECTED_CERTIFICATE}"))
            }
            None if is_unreachable(&e) => unreachable(e.to_string()),
            None => connect(e.to_string()),
        },
        // With TLS 1.3 the server checks the client certificate after the client's handshake is
        // over, and ntex closes without passing on the alert: say what it most likely means.
        client::ClientError::Disconnected(None) if spec.presents_certificate() => connect(format!(
            "the service closed the connection before CONNACK: {MAY_HAVE_REJECTED_CERTIFICATE}"
        )),
        client::ClientError::Disconnected(None) => {
            connect("the service closed the connection before CONNACK".into())
        }
        client::ClientError::HandshakeTimeout => unreachable("the MQTT handshake timed out".into()),
        other => connect(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use dps_messages::X509Identity;
    use dps_messages::connect::Endpoint;

    use super::*;
    use crate::TrustRoots;
    use crate::session::LinkId;
    use crate::tls::TlsSetup;

    fn spec(presents_certificate: bool) -> LinkSpec {
        let credential = if presents_certificate {
            let pki = dps_mock_broker::TestPki::generate().unwrap();
            let device = pki.device("dev").unwrap();
            let identity =
                X509Identity::from_pem(device.cert_pem.as_bytes(), device.key_pem.as_bytes())
                    .unwrap();
            Credential::Certificate(identity)
        } else {
            Credential::SasToken("SharedAccessSignature sr=..".into())
        };
        let (tls, tls_errors) = TlsSetup::new(&TrustRoots::public_web())
            .unwrap()
            .client_config(None)
            .unwrap();
        LinkSpec {
            id: LinkId(1),
            connect: ConnectParams {
                endpoint: Endpoint::parse("mqtts://dps.example.net").unwrap(),
                client_id: "dev".into(),
                username: "0ne00000001/registrations/dev/api-version=2019-03-31".into(),
                credential,
                clean_session: true,
                keep_alive: 60,
            },
            tls,
            tls_errors,
            proxy: None,
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
        // TLS 1.2, as real DPS: the alert comes mid-handshake and ntex-tls says only this. It
        // is a refusal, not an outage a fleet would wait out until the device's deadline.
        let mid_handshake = io::Error::new(io::ErrorKind::NotConnected, "disconnected");
        let closed = client::ClientError::Connect(ConnectError::Io(mid_handshake));
        let said = detail(connect_error(closed, &spec(true)));
        assert!(said.contains("client certificate"), "{said}");
        // Without a certificate, or for another failure, the error is passed on as it is.
        let reset = client::ClientError::Disconnected(Some(io::ErrorKind::ConnectionReset.into()));
        assert!(
            !connect_error(reset, &spec(false))
                .to_string()
                .contains("certificate")
        );
        let refused = client::ClientError::Connect(ConnectError::Io(io::Error::other("odd")));
        assert!(!detail(connect_error(refused, &spec(true))).contains("certificate"));
    }

    /// What a network that is not up yet looks like is worth trying again; the rest is not.
    #[test]
    fn a_service_not_reachable_yet_is_unreachable_and_retryable() {
        let kind_of = |error| match connect_error(error, &spec(false)) {
            ProvisioningError::Transport(e) => e.kind,
            other => panic!("{other:?}"),
        };
        let io = |kind: io::ErrorKind| client::ClientError::Connect(ConnectError::Io(kind.into()));
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::NetworkUnreachable,
            io::ErrorKind::HostUnreachable,
            io::ErrorKind::TimedOut,
        ] {
            assert_eq!(
                kind_of(io(kind)),
                TransportErrorKind::Unreachable,
                "{kind:?}"
            );
        }
        let dns = ConnectError::Resolver(io::Error::other("no such host"));
        assert_eq!(
            kind_of(client::ClientError::Connect(dns)),
            TransportErrorKind::Unreachable
        );
        assert_eq!(
            kind_of(client::ClientError::Connect(ConnectError::NoRecords)),
            TransportErrorKind::Unreachable
        );
        assert_eq!(
            kind_of(client::ClientError::HandshakeTimeout),
            TransportErrorKind::Unreachable
        );
        assert_eq!(
            kind_of(io(io::ErrorKind::PermissionDenied)),
            TransportErrorKind::Connect
        );
        assert_eq!(
            kind_of(client::ClientError::Disconnected(None)),
            TransportErrorKind::Connect
        );
    }
}
