//! The actix messages the transport actor takes, with their result types.
//!
//! They live here, not beside the actor, so that an application can hold a
//! `Recipient<Register>` without depending on the transport's internals.

use std::time::Duration;

use actix::Message;

use crate::auth::Authentication;
use crate::error::ProvisioningError;
use crate::request::RegistrationRequest;
use crate::response::RegistrationResponse;

/// Registers a device: connects and subscribes if needed, publishes the register request, and
/// answers with the service's response (SRS 18_002 .. 18_015).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<RegistrationResponse, ProvisioningError>")]
pub struct Register {
    /// The device and where to register it.
    pub request: RegistrationRequest,
}

/// Asks for the status of a registration operation (SRS 18_016 .. 18_029).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<RegistrationResponse, ProvisioningError>")]
pub struct QueryStatus {
    /// The device and where it registered.
    pub request: RegistrationRequest,
    /// The operation id from an earlier register response.
    pub operation_id: String,
}

/// Cancels the request in flight, if any, which then answers `OperationCancelled`
/// (SRS 18_030 .. 18_034, 18_062). Always answers `Ok`.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<(), ProvisioningError>")]
pub struct Cancel;

/// Cancels the request in flight, if any, unsubscribes and disconnects (SRS 18_044 .. 18_061).
///
/// The unsubscribe and the close take as long as the service takes to answer, up to `grace`
/// (or the transport's disconnect timeout, when `grace` is `None`); then the connection is
/// dropped without waiting further and the answer is a [`ProvisioningError::Timeout`] for
/// [`Stage::Disconnect`](crate::error::Stage::Disconnect). A request sent while the transport disconnects waits for the
/// disconnect to end, then connects again.
///
/// ```
/// use std::time::Duration;
/// use dps_messages::Disconnect;
///
/// let graceful = Disconnect::default(); // up to the transport's disconnect timeout
/// let brief = Disconnect::within(Duration::from_secs(1)); // then drop the connection
/// assert_eq!(brief.grace, Some(Duration::from_secs(1)));
/// # let _ = graceful;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Message)]
#[rtype(result = "Result<(), ProvisioningError>")]
pub struct Disconnect {
    /// How long the unsubscribe and the close may take before the connection is dropped;
    /// `None`: the transport's disconnect timeout.
    pub grace: Option<Duration>,
}

impl Disconnect {
    /// A disconnect that drops the connection when `grace` has passed.
    pub const fn within(grace: Duration) -> Self {
        Self { grace: Some(grace) }
    }
}

/// Sets the credentials used from the next connection on (SRS 18_001).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct SetAuthentication(pub Authentication);
