//! How `dps` reaches the service: the endpoint, MQTT or WebSocket, the trust roots and the
//! proxy. `dps provision` and `dps fleet` take the same flags for them.

use std::path::PathBuf;

use dps_messages::{Protocol, ProvisioningError};
use dps_transport_actor::{TransportConfig, TransportConfigBuilder, TrustRoots};

use crate::{proxy_env, setup};

/// The connection flags.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// `HOST[:PORT]`.
    pub endpoint: String,
    /// MQTT over WebSocket instead of MQTT over TLS.
    pub websocket: bool,
    /// A CA (PEM) to trust instead of any other roots.
    pub ca: Option<PathBuf>,
    /// Trust the operating system's store instead of the public web's roots.
    pub platform_roots: bool,
    /// CAs (PEM) to trust besides the public web's roots (or the platform's).
    pub extra_ca: Vec<PathBuf>,
    /// `--proxy URL`.
    pub proxy: Option<String>,
    /// `--no-proxy`: ignore `HTTPS_PROXY`.
    pub no_proxy: bool,
}

impl Connection {
    /// MQTT or MQTT over WebSocket.
    pub fn protocol(&self) -> Protocol {
        if self.websocket {
            Protocol::MqttWs
        } else {
            Protocol::Mqtt
        }
    }

    /// The endpoint URI requests carry.
    pub fn endpoint_uri(&self) -> String {
        setup::endpoint_uri(&self.endpoint, self.protocol())
    }

    /// The transport settings these flags (and `HTTPS_PROXY`/`NO_PROXY`) ask for.
    pub fn transport(&self) -> Result<TransportConfigBuilder, ProvisioningError> {
        let mut builder = TransportConfig::builder(self.protocol()).trust(self.trust_roots()?);
        let host = dps_messages::connect::Endpoint::parse(&self.endpoint_uri())?.host;
        let env = |name: &str| std::env::var(name).ok();
        if let Some(proxy) = proxy_env::choose(self.proxy.as_deref(), self.no_proxy, &host, env)? {
            tracing::info!(%proxy, "connecting through the proxy");
            builder = builder.proxy(proxy);
        }
        Ok(builder)
    }

    /// The roots `--ca`, `--platform-roots` and `--extra-ca` ask for.
    fn trust_roots(&self) -> Result<TrustRoots, ProvisioningError> {
        let read = |path: &PathBuf| setup::read(path).map_err(ProvisioningError::InvalidRequest);
        let mut roots = match (&self.ca, self.platform_roots) {
            (Some(ca), _) => TrustRoots::only_pem(read(ca)?),
            (None, true) => TrustRoots::platform(),
            (None, false) => TrustRoots::public_web(),
        };
        for extra in &self.extra_ca {
            roots = roots.with_extra_pem(read(extra)?);
        }
        Ok(roots)
    }
}
