//! The Azure IoT Device Provisioning Service device transport over MQTT, as an actix actor.
//!
//! * [`ProvisioningTransportActor`] takes the [`dps_messages`] commands (`Register`,
//!   `QueryStatus`, `Cancel`, `Disconnect`, `SetAuthentication`) and speaks DPS over MQTT/TLS
//!   (port 8883) or MQTT over WebSocket (`wss://<host>:443/$iothub/websocket`). Start it on
//!   your arbiter like any actor, or with [`ProvisioningTransportActor::start_on_runtime`]
//!   beside its connections.
//! * [`ProvisioningClient`] runs a whole registration (register, poll until assigned) in one
//!   call.
//! * [`session`] is its sans-IO core: the state machine every rule of the spec lives in.
//! * [`MqttRuntime`] is the thread the MQTT connections of all actors run on.
//!
//! ```no_run
//! use actix::Actor;
//! use dps_messages::{Protocol, RegistrationRequest, SetAuthentication, X509Identity};
//! use dps_transport_actor::{ClientOptions, ProvisioningClient, ProvisioningTransportActor, TransportConfig};
//!
//! #[actix_rt::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let identity = X509Identity::from_pem(&std::fs::read("device.pem")?, &std::fs::read("device.key")?)?;
//!     let config = TransportConfig::builder(Protocol::Mqtt).build()?; // public web roots, 30 s deadlines
//!     let transport = ProvisioningTransportActor::new(config).start();
//!     transport.send(SetAuthentication(identity.into())).await?;
//!
//!     let client = ProvisioningClient::new(transport, ClientOptions::default());
//!     let result = client.register(RegistrationRequest::new("0ne00000A0A", "my-device")).await?;
//!     let state = result.registration_state.unwrap_or_default();
//!     println!("assigned to {:?} as {:?}", state.assigned_hub, state.device_id);
//!     Ok(())
//! }
//! ```
#![warn(missing_docs)]

mod actor;
mod client;
mod config;
mod inbox;
mod link;
mod rng;
pub mod runtime;
pub mod session;
#[cfg(test)]
mod sim;
mod tls;
mod verify_cache;

pub use actor::{GetState, ProvisioningTransportActor, Restart};
pub use client::{ClientOptions, ProvisioningClient, TransportRecipients};
pub use config::{TransportConfig, TransportConfigBuilder};
pub use runtime::MqttRuntime;
pub use session::{State, Timeouts};
pub use tls::TrustRoots;

pub use dps_messages;
