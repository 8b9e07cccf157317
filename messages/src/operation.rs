//! A register or a poll: the two requests a device sends, each with its topic, its body and the
//! rules that read its answer.
//!
//! One type carries the operation from the client's course to the wire and back: the client
//! decides which [`Operation`] comes next, the transport publishes it to
//! [`Operation::topic`] with [`Operation::body`], and reads the service's answer with
//! [`Operation::read_response`]. A DPS stand-in reads the same topics back with
//! [`Operation::from_topic`].
//!
//! The wire has `$rid=` in the register topic even though the Node spec's text drops the `=`.

use std::time::Duration;

use crate::encoding::{HexCase, percent_encode};
use crate::error::ProvisioningError;
use crate::request::RegistrationRequest;
use crate::response::{RegistrationResponse, ResponseTopic};

/// The prefix of the register topic, before the request id.
pub(crate) const REGISTER_TOPIC_PREFIX: &str = "$dps/registrations/PUT/iotdps-register/?";

/// The prefix of the poll topic, before the request id.
pub(crate) const POLL_TOPIC_PREFIX: &str = "$dps/registrations/GET/iotdps-get-operationstatus/?";

/// The body of a poll publish. Both official SDKs send a single space; the service ignores it.
const POLL_BODY: &[u8] = b" ";

/// What a device asks the service: to register it, or how the registration it started stands.
///
/// ```
/// use dps_messages::{Operation, RegistrationRequest};
///
/// let request = RegistrationRequest::new("0ne00000001", "dev-1");
/// let register = Operation::Register;
/// assert_eq!(register.topic("1"), "$dps/registrations/PUT/iotdps-register/?$rid=1");
/// assert_eq!(register.body(&request), br#"{"registrationId":"dev-1"}"#);
///
/// let poll = Operation::poll("4.abc");
/// assert_eq!(
///     poll.topic("2"),
///     "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=4.abc"
/// );
/// // The service's side reads the topic back.
/// assert_eq!(Operation::from_topic(&poll.topic("2")), Some((poll, "2".to_owned())));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Register the device (`PUT iotdps-register`, SRS 18_003).
    Register,
    /// Ask how operation `operation_id` stands (`GET iotdps-get-operationstatus`, SRS 18_017).
    Poll {
        /// The operation id of an earlier register response. Empty when a device sent none
        /// (only a service reading a topic meets that).
        operation_id: String,
    },
}

impl Operation {
    /// A poll of `operation_id`.
    pub fn poll(operation_id: impl Into<String>) -> Self {
        Self::Poll {
            operation_id: operation_id.into(),
        }
    }

    /// Whether this is a register.
    pub fn is_register(&self) -> bool {
        matches!(self, Self::Register)
    }

    /// The topic this operation is published to with request id `rid` (SRS 18_003, 18_017).
    pub fn topic(&self, rid: &str) -> String {
        let rid = percent_encode(rid, HexCase::Upper);
        match self {
            Self::Register => format!("{REGISTER_TOPIC_PREFIX}$rid={rid}"),
            Self::Poll { operation_id } => format!(
                "{POLL_TOPIC_PREFIX}$rid={rid}&operationId={}",
                percent_encode(operation_id, HexCase::Upper)
            ),
        }
    }

    /// The body this operation carries for `request`'s device: the register body
    /// (`{"registrationId":..}`, plus `"payload"` and `"csr"` when the request has them: SRS
    /// 06_001, 06_002), or the single space both official SDKs send with a poll.
    pub fn body(&self, request: &RegistrationRequest) -> Vec<u8> {
        match self {
            Self::Register => request.register_body(),
            Self::Poll { .. } => POLL_BODY.to_vec(),
        }
    }

    /// What the service's answer to this operation says: a response with its polling interval,
    /// or a typed error (SRS 18_012 .. 18_015, 18_026 .. 18_029, 06_003 .. 06_006). Where the
    /// service gives no usable `retry-after`, the polling interval is `default_interval`. The
    /// rules are in [`crate::response`]'s documentation.
    pub fn read_response(
        &self,
        topic: &ResponseTopic,
        body: &[u8],
        default_interval: Duration,
    ) -> Result<RegistrationResponse, ProvisioningError> {
        crate::classify::classify(self, topic, body, default_interval)
    }

    /// The operation and request id of a request topic, as the service reads what a device
    /// published; `None` when the topic is neither a register nor a poll, or has no `$rid`.
    pub fn from_topic(topic: &str) -> Option<(Self, String)> {
        let (is_register, query) = match topic.strip_prefix(REGISTER_TOPIC_PREFIX) {
            Some(query) => (true, query),
            None => (false, topic.strip_prefix(POLL_TOPIC_PREFIX)?),
        };
        let mut rid = None;
        let mut operation_id = None;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "$rid" => rid = Some(value.into_owned()),
                "operationId" => operation_id = Some(value.into_owned()),
                _ => {}
            }
        }
        let operation = if is_register {
            Self::Register
        } else {
            Self::poll(operation_id.unwrap_or_default())
        };
        Some((operation, rid?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // SRS_NODE_PROVISIONING_MQTT_18_003: register publishes to
    // $dps/registrations/PUT/iotdps-register/?$rid=<rid>.
    #[test]
    fn srs_18_003_register_topic_carries_the_rid() {
        assert_eq!(
            Operation::Register.topic("42"),
            "$dps/registrations/PUT/iotdps-register/?$rid=42"
        );
        assert_eq!(
            Operation::from_topic(&Operation::Register.topic("a b")),
            Some((Operation::Register, "a b".into()))
        );
    }

    // SRS_NODE_PROVISIONING_MQTT_18_017: poll publishes to
    // $dps/registrations/GET/iotdps-get-operationstatus/?$rid=<rid>&operationId=<operationId>.
    #[test]
    fn srs_18_017_poll_topic_carries_rid_and_operation_id() {
        assert_eq!(
            Operation::poll("4.abc.def").topic("7"),
            "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=7&operationId=4.abc.def"
        );
        // An operation id with reserved characters survives the round trip.
        let poll = Operation::poll("a&b=c");
        assert_eq!(
            Operation::from_topic(&poll.topic("7")),
            Some((poll, "7".into()))
        );
    }

    #[test]
    fn a_poll_carries_a_single_space_and_a_register_the_request() {
        let request = RegistrationRequest::new("scope", "dev-1");
        assert_eq!(Operation::poll("op").body(&request), b" ");
        assert_eq!(Operation::Register.body(&request), request.register_body());
        assert!(Operation::Register.is_register());
        assert!(!Operation::poll("op").is_register());
    }

    #[test]
    fn the_service_reads_only_request_topics_with_a_rid() {
        for topic in [
            "$dps/registrations/res/200/?$rid=1",
            "$dps/registrations/PUT/iotdps-register/?x=1",
            "$dps/registrations/GET/iotdps-get-operationstatus/?operationId=1",
            "devices/x/messages",
        ] {
            assert_eq!(Operation::from_topic(topic), None, "{topic}");
        }
        // A poll without an operation id is read with an empty one, for the service to refuse.
        assert_eq!(
            Operation::from_topic("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=9"),
            Some((Operation::poll(""), "9".into()))
        );
    }
}
