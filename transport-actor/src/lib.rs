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
//!
//! # Life of a registration
//!
//! The path of one registration, from the call to the bytes and back, file by file:
//!
//! 1. `client/mod.rs`: [`ProvisioningClient::register`] asks the registration's course
//!    (`client/registration.rs`, no IO) what to do. It says `Send(Register)`; the client sends
//!    the actix message [`dps_messages::Register`] to the actor.
//! 2. `actor.rs`: the handler gives the request a token and a fresh `$rid`, and hands
//!    `Command::Register` to the [`session`].
//! 3. `session/transitions.rs`: with no connection, the transition from `Disconnected` asks for
//!    `Action::Open` and enters `Connecting`, which holds the request and the connect deadline
//!    (`session/phase.rs`).
//! 4. `actor.rs` carries the action out: `link/mod.rs` starts the link's task on the MQTT
//!    runtime thread (`runtime.rs`), which waits its turn and connects (`link/connect.rs`: TCP,
//!    TLS with `tls.rs` and `verify_cache.rs`, the WebSocket upgrade, CONNECT and CONNACK).
//! 5. The link reports `LinkEvent::Connected` back to the actor (an actix message), which hands
//!    it to the session: `Action::Subscribe`. On `Subscribed`, `Action::Publish` of the register
//!    topic and body ([`dps_messages::topic`], [`dps_messages::request`]), and the phase is
//!    `InRequest`.
//! 6. The PUBACK comes back as `LinkEvent::PublishAcked`, the response as `LinkEvent::Message`.
//!    The session matches its `$rid` and classifies it ([`dps_messages::outcome`]), answers
//!    with `Action::Reply`, and is `Connected` again.
//! 7. The actor sends the reply down the caller's oneshot channel. The client gives it to the
//!    course, whose pacing (`client/polling.rs`) decides: assigned, poll after the interval,
//!    try again, or give up.
//! 8. At the end the course says `Close`: the client sends `Disconnect::within(grace)`, the
//!    session unsubscribes, asks for `Action::Close` (the link sends DISCONNECT; `link/ending.rs`
//!    says how the connection ended) and then `Action::Abandon`, and the actor drops the link.
//!
//! A transport started with [`ProvisioningTransportActor::start_on_runtime`], driven from
//! [`MqttRuntime::spawn_fn`], does all of this on one thread. `sim/` (tests only) runs steps
//! 1 to 8 in memory with a virtual clock and injected faults, for thousands of seeds.
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod actor;
mod client;
mod config;
mod durable;
pub mod fleet;
mod inbox;
mod link;
#[cfg(feature = "proxy")]
mod proxy;
mod rng;
mod runtime;
mod session;
#[cfg(test)]
mod sim;
mod tls;
mod trust;
mod verify_cache;

pub use actor::{GetState, ProvisioningTransportActor, Restart};
#[cfg(feature = "issuance")]
pub use client::{CertificateOptions, CsrPolicy, Provisioned};
pub use client::{ClientOptions, ProvisioningClient, RequestLimit, TransportRecipients};
pub use config::{TransportConfig, TransportConfigBuilder};
#[cfg(feature = "proxy")]
pub use proxy::ProxyConfig;
pub use runtime::MqttRuntime;
pub use session::{State, Timeouts};
pub use trust::TrustRoots;

pub use dps_messages;

/// What a register or a poll answers: the response, or why there is none.
pub(crate) type RequestResult =
    Result<dps_messages::RegistrationResponse, dps_messages::ProvisioningError>;
