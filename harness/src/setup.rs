//! Building a transport and a client for one device: shared by the demo, the scenario runner,
//! the provision command and the benchmark.

use std::path::Path;

use actix::Addr;
use dps_messages::{Authentication, Protocol, ProvisioningError, SymmetricKey, X509Identity};
use dps_mock_broker::CertifiedPem;
use dps_transport_actor::{ProvisioningTransportActor, TransportConfig};

/// Reads a file as text, naming it in the error.
pub fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// An X.509 identity from a certificate and key made by the test PKI.
pub fn identity(pem: &CertifiedPem) -> Result<Authentication, ProvisioningError> {
    Ok(X509Identity::from_pem(pem.cert_pem.as_bytes(), pem.key_pem.as_bytes())?.into())
}

/// The credential of a device in a group enrollment.
pub fn group_device(
    group_key: &str,
    registration_id: &str,
) -> Result<Authentication, ProvisioningError> {
    Ok(SymmetricKey::from_group_key(group_key, registration_id)?.into())
}

/// A transport with `auth`, started beside its connections on the MQTT runtime thread.
pub fn transport(
    config: TransportConfig,
    auth: Authentication,
) -> Result<Addr<ProvisioningTransportActor>, ProvisioningError> {
    ProvisioningTransportActor::new(config)
        .with_authentication(auth)
        .start_on_runtime()
}

/// The endpoint URI for `HOST[:PORT]` over `protocol`, with the DPS default ports.
pub fn endpoint_uri(endpoint: &str, protocol: Protocol) -> String {
    match protocol {
        Protocol::Mqtt => format!("mqtts://{endpoint}"),
        Protocol::MqttWs => format!("wss://{endpoint}{}", dps_messages::connect::WEBSOCKET_PATH),
    }
}

/// A fresh random 32-byte key, base64: the kind of key DPS makes for an enrollment.
pub fn random_key() -> String {
    use base64::Engine as _;
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    let bytes: Vec<u8> = a.as_bytes().iter().chain(b.as_bytes()).copied().collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
