#![doc = include_str!("../README.md")]
//!
//! # Where things are
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
//! * `certificate` (feature `issuance`): the key and CSR a device sends, and the chain it gets
//!   back, checked;
//! * [`service`]: the service's side of the exchange, for a DPS stand-in;
//! * the actix messages the transport actor takes (`Register`, `QueryStatus`, `Cancel`,
//!   `Disconnect`, `SetAuthentication`; feature `actix`).
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
mod der;
mod encoding;
pub mod error;
mod operation;
mod request;
pub mod response;
mod sas;
pub mod service;
pub mod x509;

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
