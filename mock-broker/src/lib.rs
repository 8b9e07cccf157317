//! A real MQTT 3.1.1 server that speaks the Azure IoT Device Provisioning Service protocol from a
//! script, so that transport tests, demos and benchmarks run over real sockets with no cloud
//! account.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use dps_mock_broker::script::{DeviceScript, Step};
//! use dps_mock_broker::{MockBroker, Script, TestPki};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! // A PKI of your own (or the one the broker makes: `broker.pki()`), a script, a broker.
//! let pki = Arc::new(TestPki::generate()?);
//! let script = Script::new().device("dev-1", DeviceScript::new().request(Step::respond(429)));
//! let broker = MockBroker::builder().pki(pki.clone()).script(script).start()?;
//! let device = pki.device("dev-1")?; // certificate and key for the device
//! println!("DPS at {} (trust {:?})", broker.mqtts_uri(), broker.ca_pem());
//!
//! // ... the device registers and polls ... then, in an async test, wait for what it did:
//! let records = broker
//!     .wait_for(Duration::from_secs(10), |records| records.iter().any(|r| r.is_closed()))
//!     .await?; // or a `WaitTimedOut` with what the broker saw
//! for request in records[0].requests() {
//!     println!("{:?} at {:?}: register? {}", request.rid(), request.at, request.is_register());
//! }
//! for response in records[0].responses() {
//!     println!("{:?} retry-after {:?}", response.status(), response.retry_after());
//! }
//! # let _ = device; Ok(()) }
//! ```
//!
//! The broker runs on a thread of its own with its own ntex runtime, so any test runtime can
//! drive clients against it: [`BrokerHandle::wait_for`] waits for its record without blocking
//! (actix and tokio tests), [`BrokerHandle::wait_until`] by blocking (plain threads). It checks
//! credentials as DPS does (a device certificate from its CA whose CN is the clientId, or a
//! SAS token from a listed or group key), answers from a [`script::Script`] and then DPS's
//! default behaviour ([`dps`]); given [`enrollment`]s it models the service (who matches,
//! allocation across hubs, [`registration`] records and reprovisioning), set up in Rust, from
//! a file, or through DPS's own [`service_api`]; stays bounded whatever a client does ([`ConnectionLimits`]),
//! and records every connection ([`record`]). The crate's README has a guide to testing a
//! device application with it, with three complete tests.
//!
//! # Features
//!
//! * `cli` (default): the `dps-mock-broker` command line (clap, tracing-subscriber). A test
//!   that uses the broker as a library leaves it out.
//! * `test-servers`: servers for tests that are not DPS: a [`hostile`] MQTT server that
//!   misbehaves on purpose, an HTTP CONNECT [`proxy`], [`system_tool`], which finds a tool
//!   such as openssl or says SKIPPED, and [`softhsm`], a PKCS#11 token of a test's own.
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod allocation;
mod auth;
mod builder;
mod clock;
pub mod dps;
pub mod enrollment;
mod gate;
mod handle;
#[cfg(feature = "test-servers")]
pub mod hostile;
mod issuance;
mod limits;
mod operations;
mod pki;
#[cfg(feature = "test-servers")]
pub mod proxy;
mod quota;
pub mod record;
mod recorder;
pub mod registration;
mod registration_id;
pub mod script;
mod server;
pub mod service_api;
#[cfg(feature = "test-servers")]
pub mod softhsm;
#[cfg(feature = "test-servers")]
pub mod system_tool;
mod tls;
mod webhook;
mod x509;

use std::net::SocketAddr;

pub use crate::builder::BrokerBuilder;
pub use crate::handle::BrokerHandle;
pub use crate::issuance::IssuingCa;
pub use crate::limits::ConnectionLimits;
pub use crate::pki::{CertifiedPem, PkiError, TestPki};
pub use crate::quota::{QuotaSummary, Quotas};
pub use crate::record::ConnectionRecord;
pub use crate::recorder::WaitTimedOut;
pub use crate::script::Script;
pub use crate::tls::TlsVersions;

/// The id scope the broker expects unless told otherwise.
pub const DEFAULT_ID_SCOPE: &str = "0ne00000001";

/// The hub the broker assigns unless told otherwise.
pub const DEFAULT_ASSIGNED_HUB: &str = "mock-hub.azure-devices.net";

/// A symmetric key for tests and demos: public (another Azure SDK's known answer uses it), so
/// never a real device's.
pub const TEST_SYMMETRIC_KEY: &str = "O+H9VTcdJP0Tqkl7bh4nVG0OJNrAataMpuWB54D0VEc=";

/// A group enrollment key for tests and demos: public, so never a real enrollment's.
pub const TEST_GROUP_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// The broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS configuration is unusable.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The test PKI could not be made.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    /// The broker's thread failed to start.
    #[error("the broker thread failed: {0}")]
    Thread(String),
    /// The service API's key is not base64.
    #[error("the service API key is not base64")]
    ServiceKey,
    /// An enrollment given to the builder is not valid.
    #[error(transparent)]
    Enrollment(#[from] enrollment::EnrollmentError),
}

/// Starts brokers; see [`BrokerBuilder`].
pub struct MockBroker;

impl MockBroker {
    /// A builder with the defaults: TLS and WebSocket listeners on ephemeral loopback ports, a
    /// freshly generated PKI, [`DEFAULT_ID_SCOPE`], retry-after 1 s, no script.
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::default()
    }
}
