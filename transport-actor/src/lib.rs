#![doc = include_str!("../README.md")]
//!
//! # Where things are
//!
//! * [`ProvisioningClient`] runs a whole registration; [`ClientOptions`] paces and bounds it.
//! * [`ProvisioningTransportActor`] takes the [`dps_messages`] commands and speaks DPS over
//!   MQTT; [`TransportConfig`] says how (protocol, [`TrustRoots`], deadlines, proxy, runtime).
//! * [`MqttRuntime`] is the thread the MQTT connections of all actors run on.
//! * [`fleet`] provisions many devices at the pace of the service's quota.
//!
//! # Life of a registration
//!
//! The path of one registration, from the call to the bytes and back, file by file:
//!
//! 1. `client/mod.rs`: [`ProvisioningClient::register`] asks the registration's course
//!    (`client/registration.rs`, no IO) what to do. It says `Send(Operation::Register)`; the
//!    client sends the actix message [`dps_messages::Register`] to the actor (through the
//!    fleet's hook, `client/hook.rs`, for a client of a fleet).
//! 2. `actor.rs`: the handler gives the request a token and a fresh `$rid`, and hands
//!    `Command::Request` with [`Operation::Register`](dps_messages::Operation::Register) to
//!    the session (`session/`, the sans-IO core, whose module documentation states how a
//!    driver drives it).
//! 3. `session/transitions.rs`: with no connection, the transition from `Disconnected` asks for
//!    `Action::Open` and enters `Connecting`, which holds the request and the connect deadline
//!    (`session/phase.rs`).
//! 4. `actor.rs` carries the action out: `link/mod.rs` starts the link's task on the MQTT
//!    runtime thread (`runtime.rs`), which waits its turn and connects with the session's
//!    CONNECT (`link/connect.rs`: TCP, TLS with `tls.rs` and `verify_cache.rs`, the WebSocket
//!    upgrade in `link/websocket.rs`, the proxy's tunnel in `link/tunnel.rs`, CONNECT and
//!    CONNACK).
//! 5. The link reports `LinkEvent::Connected` back to the actor (an actix message), which hands
//!    it to the session: `Action::Subscribe`. On `Subscribed`, `Action::Publish` of the
//!    operation's topic and body ([`Operation::topic`](dps_messages::Operation::topic),
//!    [`Operation::body`](dps_messages::Operation::body)), and the phase is `InRequest`.
//! 6. The PUBACK comes back as `LinkEvent::PublishAcked`, the response as `LinkEvent::Message`.
//!    The session matches its `$rid` and reads it
//!    ([`Operation::read_response`](dps_messages::Operation::read_response)), answers with
//!    `Action::Reply`, and is `Connected` again.
//! 7. The actor sends the reply down the caller's oneshot channel. The client gives it to the
//!    course, whose pacing (`client/polling.rs`) decides: assigned, poll after the interval,
//!    try again, or give up.
//! 8. At the end the course says `Close`: the client sends `Disconnect::within(grace)`, the
//!    session unsubscribes, asks for `Action::Close` (the link sends DISCONNECT; `link/ending.rs`
//!    says how the connection ended) and then `Action::Abandon`, and the actor drops the link.
//!
//! A transport started with [`ProvisioningTransportActor::start_on_runtime`] (as
//! [`ProvisioningClient::start`] starts one), driven from [`MqttRuntime::spawn_fn`], does all
//! of this on one thread. `sim/` (tests only) runs steps
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
#[cfg(feature = "pkcs11")]
#[cfg_attr(docsrs, doc(cfg(feature = "pkcs11")))]
pub mod pkcs11;
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
