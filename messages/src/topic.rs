//! DPS topics: the two request topics a device publishes to, the response subscription, and
//! parsing a response topic.
//!
//! The wire has `$rid=` in the register topic even though the Node spec's text drops the `=`.

use crate::encoding::{HexCase, percent_encode};

/// The topic filter a device subscribes to, at QoS 1, before its first request (SRS 18_042).
pub const RESPONSE_TOPIC_FILTER: &str = "$dps/registrations/res/#";

/// The prefix of every response topic.
pub const RESPONSE_TOPIC_PREFIX: &str = "$dps/registrations/res/";

/// The prefix of the register topic (before the request id).
pub const REGISTER_TOPIC_PREFIX: &str = "$dps/registrations/PUT/iotdps-register/?$rid=";

/// The prefix of the poll topic (before the request id).
pub const POLL_TOPIC_PREFIX: &str = "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=";

/// The topic of a register request with request id `rid` (SRS 18_003).
pub fn register_topic(rid: &str) -> String {
    format!(
        "{REGISTER_TOPIC_PREFIX}{}",
        percent_encode(rid, HexCase::Upper)
    )
}

/// The topic of an operation status poll with request id `rid` (SRS 18_017).
pub fn poll_topic(rid: &str, operation_id: &str) -> String {
    format!(
        "{POLL_TOPIC_PREFIX}{}&operationId={}",
        percent_encode(rid, HexCase::Upper),
        percent_encode(operation_id, HexCase::Upper)
    )
}

/// A parsed response topic: `$dps/registrations/res/<status>/?$rid=<rid>[&retry-after=<s>]...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseTopic {
    /// The HTTP-like status of the response.
    pub status: u16,
    /// The request id the response answers.
    pub rid: String,
    /// The raw `retry-after` value, if any; see [`crate::outcome::polling_interval`].
    pub retry_after: Option<String>,
    /// Every other query parameter, decoded, in the order received.
    pub params: Vec<(String, String)>,
}

/// Why a topic is not a DPS response topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The topic does not have the `$dps/registrations/res/<status>/?<query>` shape.
    #[error("`{0}` is not of the form $dps/registrations/res/<status>/?<query>")]
    NotAResponseTopic(String),
    /// The status segment is not a number.
    #[error("status `{status}` in `{topic}` is not a number")]
    BadStatus {
        /// The status segment.
        status: String,
        /// The whole topic.
        topic: String,
    },
    /// The query has no `$rid`.
    #[error("`{0}` has no $rid")]
    MissingRid(String),
}

impl ResponseTopic {
    /// Parses a response topic (SRS 18_010, 18_024).
    pub fn parse(topic: &str) -> Result<Self, TopicError> {
        let not_response = || TopicError::NotAResponseTopic(topic.to_owned());
        let rest = topic
            .strip_prefix(RESPONSE_TOPIC_PREFIX)
            .ok_or_else(not_response)?;
        let (status, query) = rest.split_once("/?").ok_or_else(not_response)?;
        // u16::from_str accepts a leading '+'; a status is digits only.
        if status.is_empty() || !status.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TopicError::BadStatus {
                status: status.to_owned(),
                topic: topic.to_owned(),
            });
        }
        let status = status.parse::<u16>().map_err(|_| TopicError::BadStatus {
            status: status.to_owned(),
            topic: topic.to_owned(),
        })?;

        let mut rid = None;
        let mut retry_after = None;
        let mut params = Vec::new();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "$rid" if rid.is_none() => rid = Some(value.into_owned()),
                "retry-after" if retry_after.is_none() => retry_after = Some(value.into_owned()),
                _ => params.push((key.into_owned(), value.into_owned())),
            }
        }
        let rid = rid.ok_or_else(|| TopicError::MissingRid(topic.to_owned()))?;
        Ok(Self {
            status,
            rid,
            retry_after,
            params,
        })
    }

    /// Builds the topic text for this response (the mock broker's side of the exchange).
    pub fn to_topic(&self) -> String {
        let mut topic = format!(
            "{RESPONSE_TOPIC_PREFIX}{}/?$rid={}",
            self.status,
            percent_encode(&self.rid, HexCase::Upper)
        );
        if let Some(retry_after) = &self.retry_after {
            topic.push_str("&retry-after=");
            topic.push_str(&percent_encode(retry_after, HexCase::Upper));
        }
        for (key, value) in &self.params {
            topic.push('&');
            topic.push_str(&percent_encode(key, HexCase::Upper));
            topic.push('=');
            topic.push_str(&percent_encode(value, HexCase::Upper));
        }
        topic
    }
}

/// A request a device published, as the service sees it: which kind, its `$rid`, and for a poll
/// the operation id. Used by the mock broker; parsing is the mirror of [`register_topic`] and
/// [`poll_topic`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestTopic {
    /// `$dps/registrations/PUT/iotdps-register/?$rid=<rid>`.
    Register {
        /// The request id.
        rid: String,
    },
    /// `$dps/registrations/GET/iotdps-get-operationstatus/?$rid=<rid>&operationId=<id>`.
    Poll {
        /// The request id.
        rid: String,
        /// The operation polled for; `None` when the device sent none.
        operation_id: Option<String>,
    },
}

impl RequestTopic {
    /// Parses a request topic; `None` when it is neither a register nor a poll topic, or has no
    /// `$rid`.
    pub fn parse(topic: &str) -> Option<Self> {
        let (is_register, query) =
            if let Some(q) = topic.strip_prefix("$dps/registrations/PUT/iotdps-register/?") {
                (true, q)
            } else {
                (
                    false,
                    topic.strip_prefix("$dps/registrations/GET/iotdps-get-operationstatus/?")?,
                )
            };
        let mut rid = None;
        let mut operation_id = None;
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "$rid" => rid = Some(value.into_owned()),
                "operationId" => operation_id = Some(value.into_owned()),
                _ => {}
            }
        }
        let rid = rid?;
        Some(if is_register {
            Self::Register { rid }
        } else {
            Self::Poll { rid, operation_id }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parameter sent twice: the first counts, the rest are kept as they came.
    #[test]
    fn the_first_of_a_repeated_rid_or_retry_after_counts() {
        let parsed = ResponseTopic::parse(
            "$dps/registrations/res/202/?$rid=a&retry-after=3&$rid=b&retry-after=9",
        )
        .unwrap();
        assert_eq!(parsed.rid, "a");
        assert_eq!(parsed.retry_after.as_deref(), Some("3"));
        assert_eq!(
            parsed.params,
            vec![
                ("$rid".to_owned(), "b".to_owned()),
                ("retry-after".to_owned(), "9".to_owned())
            ]
        );
    }

    // SRS_NODE_PROVISIONING_MQTT_18_003: register publishes to
    // $dps/registrations/PUT/iotdps-register/?$rid=<rid>.
    #[test]
    fn srs_18_003_register_topic_carries_the_rid() {
        assert_eq!(
            register_topic("42"),
            "$dps/registrations/PUT/iotdps-register/?$rid=42"
        );
        assert_eq!(
            RequestTopic::parse(&register_topic("a b")),
            Some(RequestTopic::Register { rid: "a b".into() })
        );
    }

    // SRS_NODE_PROVISIONING_MQTT_18_017: poll publishes to
    // $dps/registrations/GET/iotdps-get-operationstatus/?$rid=<rid>&operationId=<operationId>.
    #[test]
    fn srs_18_017_poll_topic_carries_rid_and_operation_id() {
        assert_eq!(
            poll_topic("7", "4.abc.def"),
            "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=7&operationId=4.abc.def"
        );
        // An operation id with reserved characters survives the round trip.
        let topic = poll_topic("7", "a&b=c");
        assert_eq!(
            RequestTopic::parse(&topic),
            Some(RequestTopic::Poll {
                rid: "7".into(),
                operation_id: Some("a&b=c".into())
            })
        );
    }

    // SRS_NODE_PROVISIONING_MQTT_18_010: responses to a register come on
    // $dps/registrations/res/<status>/?$rid=<rid>.
    #[test]
    fn srs_18_010_parses_register_response_topic() {
        let t = ResponseTopic::parse("$dps/registrations/res/202/?$rid=1&retry-after=3").unwrap();
        assert_eq!(t.status, 202);
        assert_eq!(t.rid, "1");
        assert_eq!(t.retry_after.as_deref(), Some("3"));
        assert!(t.params.is_empty());
    }

    // SRS_NODE_PROVISIONING_MQTT_18_024: responses to a poll come on the same topic shape.
    #[test]
    fn srs_18_024_parses_poll_response_topic_with_extra_params() {
        let t = ResponseTopic::parse("$dps/registrations/res/200/?$rid=abc&x=1&y=%2F").unwrap();
        assert_eq!(
            (t.status, t.rid.as_str(), t.retry_after),
            (200, "abc", None)
        );
        assert_eq!(
            t.params,
            vec![("x".into(), "1".into()), ("y".into(), "/".into())]
        );
    }

    #[test]
    fn response_topic_round_trips() {
        let t = ResponseTopic {
            status: 429,
            rid: "r/1".into(),
            retry_after: Some("5".into()),
            params: vec![("k".into(), "v w".into())],
        };
        assert_eq!(ResponseTopic::parse(&t.to_topic()).unwrap(), t);
    }

    #[test]
    fn rejects_topics_of_another_shape() {
        for topic in [
            "",
            "$dps/registrations/res/",
            "$dps/registrations/res/200",
            "$dps/registrations/res/200?$rid=1",
            "$dps/registrations/PUT/iotdps-register/?$rid=1",
            "devices/x/messages",
        ] {
            assert!(
                matches!(
                    ResponseTopic::parse(topic),
                    Err(TopicError::NotAResponseTopic(_))
                ),
                "{topic}"
            );
        }
    }

    #[test]
    fn rejects_non_numeric_status() {
        for status in ["abc", "+200", "-1", "", "2 0", "99999", "1e3"] {
            let topic = format!("$dps/registrations/res/{status}/?$rid=1");
            assert!(
                matches!(
                    ResponseTopic::parse(&topic),
                    Err(TopicError::BadStatus { .. })
                ),
                "{topic}"
            );
        }
    }

    #[test]
    fn rejects_a_response_without_rid() {
        assert!(matches!(
            ResponseTopic::parse("$dps/registrations/res/200/?retry-after=1"),
            Err(TopicError::MissingRid(_))
        ));
    }

    #[test]
    fn request_topic_rejects_other_topics() {
        assert_eq!(
            RequestTopic::parse("$dps/registrations/res/200/?$rid=1"),
            None
        );
        assert_eq!(
            RequestTopic::parse("$dps/registrations/PUT/iotdps-register/?x=1"),
            None
        );
    }
}
