//! The topic a response comes on: `$dps/registrations/res/<status>/?$rid=<rid>[&retry-after=<s>]`.

/// The prefix of every response topic.
pub(crate) const RESPONSE_TOPIC_PREFIX: &str = "$dps/registrations/res/";

/// A parsed response topic: `$dps/registrations/res/<status>/?$rid=<rid>[&retry-after=<s>]...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseTopic {
    /// The HTTP-like status of the response.
    pub status: u16,
    /// The request id the response answers.
    pub rid: String,
    /// The raw `retry-after` value, if any; read by [`Operation::read_response`](crate::Operation::read_response).
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
    /// The topic filter a device subscribes to, at QoS 1, before its first request (SRS
    /// 18_042).
    pub const FILTER: &str = "$dps/registrations/res/#";

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
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
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
}
