//! What a client's requests pass through on their way to the transport, when it is given
//! something to pass them through.
//!
//! A client alone sends each request as soon as its course says so. A client of a
//! [`Fleet`](crate::fleet::Fleet) is given the fleet's hook, which makes a register wait for
//! its turn in the fleet's pace and counts every answer; the client knows no more of the fleet
//! than this trait.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use dps_messages::Operation;

use crate::RequestResult;

/// A request on its way to the transport, not yet sent: nothing reaches the transport until it
/// is first polled.
pub(crate) type Unsent<'a> = Pin<Box<dyn Future<Output = RequestResult> + Send + 'a>>;

/// Decides when a request goes, and sees its answer.
pub(crate) trait RequestHook: Send + Sync + fmt::Debug {
    /// Sends `operation` by running `send`, when the hook allows, and returns its answer. A
    /// hook that never runs `send` (the client gave up while it waited) sends nothing.
    fn send<'a>(&'a self, operation: &Operation, send: Unsent<'a>) -> Unsent<'a>;
}
