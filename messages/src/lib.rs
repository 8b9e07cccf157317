//! The Azure IoT Device Provisioning Service (DPS) MQTT wire protocol, with no IO and no runtime.
//!
//! This crate holds every rule of the protocol that can be stated without a socket:
//!
//! * [`topic`]: the register and poll topics, and parsing a response topic;
//! * [`request`]: what a device asks for, and the register body it sends;
//! * [`connect`]: the MQTT CONNECT parameters (clientId, username, endpoint);
//! * [`response`]: the service's answer (`RegistrationResult`, `RegistrationState`);
//! * [`outcome`]: turning a response into a result, a retry or a typed error, and the polling
//!   interval;
//! * [`x509`] and [`sas`]: device credentials;
//! * [`certificate`]: certificate issuance: the key and CSR a device sends, and the chain it
//!   gets back, checked;
//! * [`api_version`]: the `api-version` the username announces;
//! * [`error`]: the one error type every part of the workspace reports;
//! * [`commands`]: the actix messages the transport actor takes.
//!
//! Time is always a parameter, never read from a clock, so every rule is testable in microseconds.
#![warn(missing_docs)]

pub mod api_version;
pub mod auth;
pub mod certificate;
pub mod commands;
pub mod connect;
mod encoding;
pub mod error;
pub mod outcome;
pub mod request;
pub mod response;
pub mod sas;
pub mod topic;
pub mod x509;

pub use api_version::ApiVersion;
pub use auth::{Authentication, SymmetricKey};
pub use certificate::{
    CertificateError, CertificateRequest, IssuedIdentity, KeyCurve, LeafCertificate,
};
pub use commands::{Cancel, Disconnect, QueryStatus, Register, RequestResult, SetAuthentication};
pub use connect::{ConnectParams, Endpoint, Protocol};
pub use error::{
    AuthError, ConnackRefusal, ProtocolError, ProvisioningError, ProxyError, ProxyErrorKind,
    ServiceError, Stage, TlsFailure, TransportError, TransportErrorKind,
};
pub use outcome::{DEFAULT_POLLING_INTERVAL, RegistrationResponse, RequestKind};
pub use request::RegistrationRequest;
pub use response::{RegistrationResult, RegistrationState, RegistrationStatus};
pub use topic::ResponseTopic;
pub use x509::X509Identity;
