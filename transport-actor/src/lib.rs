//! The Azure IoT Device Provisioning Service device transport over MQTT, as an actix actor.
//!
//! * [`ProvisioningTransportActor`] takes the [`dps_messages`] commands (`Register`,
//!   `QueryStatus`, `Cancel`, `Disconnect`, `SetAuthentication`) and speaks DPS over MQTT/TLS
//!   (port 8883) or MQTT over WebSocket (`wss://<host>:443/$iothub/websocket`).
//! * [`ProvisioningClient`] runs a whole registration (register, poll until assigned) in one
//!   call.
//! * [`session`] is its sans-IO core: the state machine every rule of the spec lives in.
//! * [`MqttRuntime`] is the thread the MQTT connections of all actors run on.
#![warn(missing_docs)]

mod actor;
mod client;
mod config;
mod link;
pub mod runtime;
pub mod session;
mod tls;

pub use actor::{GetState, ProvisioningTransportActor, Restart};
pub use client::{ClientOptions, ProvisioningClient};
pub use config::{TransportConfig, TransportConfigBuilder};
pub use runtime::MqttRuntime;
pub use session::{State, Timeouts};
pub use tls::TrustRoots;

pub use dps_messages;
