//! One device on a small gateway: provision it and print where it belongs, with nothing but
//! the transport (no mock broker, no command-line parser), for the smallest binary.
//!
//! Settings come from the environment:
//!
//! ```sh
//! DPS_ENDPOINT=mqtts://global.azure-devices-provisioning.net \
//! DPS_ID_SCOPE=0ne00000A0A DPS_REGISTRATION_ID=my-device \
//! DPS_SYMMETRIC_KEY=... [DPS_CA_FILE=ca.pem] \
//! cargo run --profile small -p dps-transport-actor --example one_device
//! ```
//!
//! (`DPS_CERT_FILE` and `DPS_KEY_FILE` instead of `DPS_SYMMETRIC_KEY` for an X.509 device.)
//! The `small` profile optimises for size, with LTO, one codegen unit, no symbols and
//! `panic = "abort"`. A device that only speaks MQTT over TLS leaves out the WebSocket, proxy,
//! certificate issuance and platform trust store code with `--no-default-features`;
//! BENCHMARKS.md measures both builds.

use dps_transport_actor::dps_messages::{
    Authentication, Protocol, RegistrationRequest, SymmetricKey, X509Identity,
};
use dps_transport_actor::{ClientOptions, ProvisioningClient, TransportConfig};

fn var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = var("DPS_ENDPOINT")?;
    let protocol = if endpoint.starts_with("wss://") {
        Protocol::MqttWs
    } else {
        Protocol::Mqtt
    };
    let mut config = TransportConfig::builder(protocol);
    if let Ok(ca) = var("DPS_CA_FILE") {
        config = config.ca_pem(std::fs::read_to_string(ca)?);
    }
    let auth: Authentication = match var("DPS_SYMMETRIC_KEY") {
        Ok(key) => SymmetricKey::new(key)?.into(),
        Err(_) => X509Identity::from_pem(
            &std::fs::read(var("DPS_CERT_FILE")?)?,
            &std::fs::read(var("DPS_KEY_FILE")?)?,
        )?
        .into(),
    };
    let client = ProvisioningClient::start(config.build()?, auth, ClientOptions::default())?;
    let request = RegistrationRequest::new(var("DPS_ID_SCOPE")?, var("DPS_REGISTRATION_ID")?)
        .with_endpoint(endpoint);
    let result = client.register(request).await?;
    let state = result.registration_state.unwrap_or_default();
    println!(
        "assigned to {} as {}",
        state.assigned_hub.unwrap_or_default(),
        state.device_id.unwrap_or_default()
    );
    Ok(())
}
