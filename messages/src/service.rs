//! The service's side of the exchange, for a DPS stand-in (the mock broker, a test's own fake
//! service): reading what a device sends and writing what DPS answers.
//!
//! A device needs none of this. A stand-in reads a request's topic with
//! [`Operation::from_topic`](crate::Operation::from_topic), its body with [`RegisterBody`], a
//! symmetric-key device's password with [`SasToken`], and answers on [`response_topic`] (a
//! [`ResponseTopic`] made text). [`percent_decode`] reads what clients percent-encode (a SAS
//! token's fields, an SDK's URI path segments) as the service does.
//!
//! ```
//! use dps_messages::response::ResponseTopic;
//! use dps_messages::service::response_topic;
//!
//! let answer = ResponseTopic {
//!     status: 202,
//!     rid: "1".into(),
//!     retry_after: Some("3".into()),
//!     params: vec![],
//! };
//! assert_eq!(response_topic(&answer), "$dps/registrations/res/202/?$rid=1&retry-after=3");
//! ```

use serde_json::Value;

pub use crate::encoding::percent_decode;
use crate::encoding::{HexCase, percent_encode};
use crate::response::ResponseTopic;
pub use crate::sas::{SasRejection, SasToken, derive_device_key};

/// The prefix of every response topic, for a stand-in that writes topics of its own (a
/// malformed one, say).
pub const RESPONSE_TOPIC_PREFIX: &str = crate::response::RESPONSE_TOPIC_PREFIX;

/// What a register body says, as the service reads it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterBody {
    /// The registration id in the body.
    pub registration_id: Option<String>,
    /// Custom allocation data; `None` for both an absent and a `null` payload.
    #[serde(default)]
    pub payload: Option<Value>,
    /// A certificate signing request, as sent (base64 DER is what the service accepts).
    #[serde(default)]
    pub csr: Option<String>,
}

/// The topic text of `response`: `$dps/registrations/res/<status>/?$rid=<rid>`, then
/// `&retry-after=<s>` and the other parameters, each percent-encoded. A device reads it back
/// with [`ResponseTopic::parse`].
pub fn response_topic(response: &ResponseTopic) -> String {
    let mut topic = format!(
        "{RESPONSE_TOPIC_PREFIX}{}/?$rid={}",
        response.status,
        percent_encode(&response.rid, HexCase::Upper)
    );
    if let Some(retry_after) = &response.retry_after {
        topic.push_str("&retry-after=");
        topic.push_str(&percent_encode(retry_after, HexCase::Upper));
    }
    for (key, value) in &response.params {
        topic.push('&');
        topic.push_str(&percent_encode(key, HexCase::Upper));
        topic.push('=');
        topic.push_str(&percent_encode(value, HexCase::Upper));
    }
    topic
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{Operation, RegistrationRequest};

    #[test]
    fn a_response_topic_round_trips() {
        let response = ResponseTopic {
            status: 429,
            rid: "r/1".into(),
            retry_after: Some("5".into()),
            params: vec![("k".into(), "v w".into())],
        };
        assert_eq!(
            ResponseTopic::parse(&response_topic(&response)).unwrap(),
            response
        );
    }

    #[test]
    fn a_register_body_reads_back() {
        let request = RegistrationRequest::new("s", "d").with_payload(json!({"k": 1}));
        let body: RegisterBody =
            serde_json::from_slice(&Operation::Register.body(&request)).unwrap();
        assert_eq!(body.registration_id.as_deref(), Some("d"));
        assert_eq!(body.payload, Some(json!({"k": 1})));
        assert_eq!(body.csr, None);
    }
}
