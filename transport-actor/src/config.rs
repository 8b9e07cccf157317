//! The transport's settings, built once and shared by any number of actors.

use std::sync::Arc;
use std::time::Duration;

use dps_messages::connect::ConnectOptions;
use dps_messages::{Protocol, ProvisioningError, RegistrationResponse};

use crate::TrustRoots;
use crate::link::LinkSetup;
#[cfg(feature = "proxy")]
use crate::link::tunnel::ProxyHop;
#[cfg(feature = "proxy")]
use crate::proxy::ProxyConfig;
use crate::runtime::MqttRuntime;
use crate::session::{SessionConfig, Timeouts};
use crate::tls::TlsSetup;

/// Settings of a [`crate::ProvisioningTransportActor`]; cheap to clone.
///
/// Give the actors of a fleet clones of one configuration: their connections then share its TLS
/// verifier, which remembers a server certificate chain it has verified, so many connections
/// to the same service cost one chain verification instead of one each (every handshake still
/// checks that the server holds the certificate's key).
#[derive(Clone, Debug)]
pub struct TransportConfig {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    /// What each actor's session is made with.
    pub(crate) session: SessionConfig,
    /// What each connection shares: TLS, the proxy.
    pub(crate) link: LinkSetup,
    pub(crate) runtime: MqttRuntime,
}

impl TransportConfig {
    /// Settings for `protocol`, with the defaults: the public web's trust roots, 30-second
    /// deadlines, a 2-second default polling interval, a 60-second keep-alive, one-hour SAS
    /// tokens, and the shared MQTT runtime.
    pub fn builder(protocol: Protocol) -> TransportConfigBuilder {
        TransportConfigBuilder {
            protocol,
            trust: TrustRoots::public_web(),
            timeouts: Timeouts::default(),
            default_polling_interval: RegistrationResponse::DEFAULT_POLLING_INTERVAL,
            keep_alive: Duration::from_secs(60),
            sas_token_ttl: Duration::from_secs(3600),
            runtime: None,
            #[cfg(feature = "proxy")]
            proxy: None,
        }
    }

    /// The protocol.
    pub fn protocol(&self) -> Protocol {
        self.inner.session.connect.protocol
    }
}

/// Builds a [`TransportConfig`].
#[derive(Clone, Debug)]
pub struct TransportConfigBuilder {
    protocol: Protocol,
    trust: TrustRoots,
    timeouts: Timeouts,
    default_polling_interval: Duration,
    keep_alive: Duration,
    sas_token_ttl: Duration,
    runtime: Option<MqttRuntime>,
    #[cfg(feature = "proxy")]
    proxy: Option<ProxyConfig>,
}

impl TransportConfigBuilder {
    /// Which server certificates to trust (the public web's by default).
    pub fn trust(mut self, roots: TrustRoots) -> Self {
        self.trust = roots;
        self
    }

    /// Trust only the CA certificates in `pem` (a test broker's CA, say).
    pub fn ca_pem(self, pem: impl Into<String>) -> Self {
        self.trust(TrustRoots::only_pem(pem))
    }

    /// All the deadlines at once.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// How long to wait for TCP, TLS, WebSocket and CONNACK.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.connect = timeout;
        self
    }

    /// How long to wait for the SUBACK.
    pub fn subscribe_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.subscribe = timeout;
        self
    }

    /// How long to wait for a PUBACK.
    pub fn publish_ack_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.publish_ack = timeout;
        self
    }

    /// How long to wait for the service's response after the PUBACK.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.response = timeout;
        self
    }

    /// How long to wait for the UNSUBACK and the close.
    pub fn disconnect_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.disconnect = timeout;
        self
    }

    /// The polling interval reported when the service gives no `retry-after`.
    pub fn default_polling_interval(mut self, interval: Duration) -> Self {
        self.default_polling_interval = interval;
        self
    }

    /// The MQTT keep-alive (whole seconds, at most 65,535; 0 turns it off).
    pub fn keep_alive(mut self, keep_alive: Duration) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// How long a symmetric-key device's SAS token is valid from the moment it connects.
    pub fn sas_token_ttl(mut self, ttl: Duration) -> Self {
        self.sas_token_ttl = ttl;
        self
    }

    /// Connects through this HTTP proxy (a `CONNECT` tunnel, for MQTT and WebSocket alike).
    /// The proxy's answer is awaited for four fifths of the connect deadline.
    #[cfg(feature = "proxy")]
    pub fn proxy(mut self, proxy: ProxyConfig) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// Runs the connections on this runtime instead of the shared one.
    pub fn runtime(mut self, runtime: MqttRuntime) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Checks the settings and builds them. Fails on unusable trust roots, on MQTT over
    /// WebSocket in a build without the `websocket` feature, or when the MQTT runtime cannot
    /// start.
    pub fn build(self) -> Result<TransportConfig, ProvisioningError> {
        if cfg!(not(feature = "websocket")) && self.protocol == Protocol::MqttWs {
            return Err(no_websocket());
        }
        let runtime = match self.runtime {
            Some(runtime) => runtime,
            None => MqttRuntime::shared()?,
        };
        Ok(TransportConfig {
            inner: Arc::new(Inner {
                session: SessionConfig {
                    connect: ConnectOptions {
                        protocol: self.protocol,
                        keep_alive: self.keep_alive,
                        sas_token_ttl: self.sas_token_ttl,
                    },
                    timeouts: self.timeouts,
                    default_polling_interval: self.default_polling_interval,
                },
                link: LinkSetup {
                    tls: TlsSetup::new(&self.trust)?,
                    #[cfg(feature = "proxy")]
                    proxy: self.proxy.map(|proxy| ProxyHop {
                        proxy,
                        answer_timeout: self.timeouts.connect.mul_f64(0.8),
                    }),
                    #[cfg(not(feature = "proxy"))]
                    proxy: None,
                },
                runtime,
            }),
        })
    }
}

/// The error of MQTT over WebSocket in a build without the `websocket` feature.
pub(crate) fn no_websocket() -> ProvisioningError {
    ProvisioningError::InvalidRequest(
        "MQTT over WebSocket needs dps-transport-actor's `websocket` feature".into(),
    )
}
