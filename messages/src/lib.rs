//! The Azure IoT Device Provisioning Service (DPS) MQTT wire protocol, with no IO and no runtime.
//!
//! This crate holds every rule of the protocol that can be stated without a socket, for the
//! device side (a transport, such as `dps-transport-actor`) and for a stand-in of the service
//! (such as `dps-mock-broker`):
//!
//! * [`RegistrationRequest`]: who the device is and where it registers;
//! * [`Operation`]: a register or a poll, with its topic, its body and the rules that read its
//!   answer;
//! * [`response`]: the service's answer ([`RegistrationResponse`], [`RegistrationResult`]);
//! * [`connect`]: the MQTT CONNECT of a DPS device ([`Protocol`], endpoint, clientId,
//!   username, credential);
//! * [`Authentication`]: the device's credentials, an [`X509Identity`] or a [`SymmetricKey`];
//! * [`ApiVersion`]: the `api-version` the username announces;
//! * [`error`]: the one error type every part of the workspace reports, [`ProvisioningError`];
//! * [`certificate`] (feature `issuance`): certificate issuance, the key and CSR a device
//!   sends and the chain it gets back, checked;
//! * [`service`]: the service's side of the exchange, for a DPS stand-in;
//! * the actix messages the transport actor takes ([`Register`], [`QueryStatus`], [`Cancel`],
//!   [`Disconnect`], [`SetAuthentication`]; feature `actix`).
//!
//! Time is always a parameter, never read from a clock, so every rule is testable in
//! microseconds.
//!
//! # Features
//!
//! * `actix` (default): the actix messages, so that an application can hold a
//!   `Recipient<Register>` without depending on the transport. A DPS stand-in leaves it out.
//! * `issuance` (default): certificate issuance (rcgen and x509-parser). A device that never
//!   asks DPS for a certificate leaves it out.
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod api_version;
mod auth;
#[cfg(feature = "issuance")]
pub mod certificate;
mod classify;
#[cfg(feature = "actix")]
mod commands;
pub mod connect;
mod encoding;
pub mod error;
mod operation;
mod request;
pub mod response;
mod sas;
pub mod service;
mod x509;

pub use api_version::ApiVersion;
pub use auth::{Authentication, SymmetricKey};
#[cfg(feature = "issuance")]
pub use certificate::{CertificateRequest, IssuedIdentity};
#[cfg(feature = "actix")]
pub use commands::{Cancel, Disconnect, QueryStatus, Register, SetAuthentication};
pub use connect::Protocol;
pub use error::ProvisioningError;
pub use operation::Operation;
pub use request::RegistrationRequest;
pub use response::{
    RegistrationResponse, RegistrationResult, RegistrationState, RegistrationStatus,
};
pub use x509::X509Identity;
