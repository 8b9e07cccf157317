//! What the broker saw, per connection, for tests to assert on and the CLI to write as JSON
//! lines. Passwords are never recorded, only whether one came.

use std::time::{Duration, Instant};

use dps_messages::Operation;
use dps_messages::response::ResponseTopic;
use serde::Serialize;

/// How a connection reached the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// MQTT over TLS.
    Tls,
    /// MQTT over WebSocket over TLS.
    Wss,
    /// MQTT over plain TCP (tests only).
    Tcp,
}

/// The broker's answer to a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Connack {
    /// Accepted; `method` says how the device authenticated.
    Accepted {
        /// `x509`, `symmetric_key`, `group_key`.
        method: String,
    },
    /// Refused with a return code, and why.
    Refused {
        /// The CONNACK return code.
        code: u8,
        /// Why the broker refused.
        reason: String,
    },
    /// No CONNACK was sent: the connection was dropped on purpose.
    Dropped,
}

/// One thing that happened on a connection after CONNECT, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A SUBSCRIBE entry, and whether it was granted.
    Subscribe {
        /// The topic filter.
        topic: String,
        /// The QoS asked for.
        qos: u8,
        /// Whether the SUBACK granted it.
        granted: bool,
    },
    /// An UNSUBSCRIBE.
    Unsubscribe {
        /// The topic filters.
        topics: Vec<String>,
    },
    /// A PUBLISH from the device.
    Publish {
        /// Its topic (cut at [`crate::ConnectionLimits::max_recorded_topic`]).
        topic: String,
        /// Its payload, lossily decoded as UTF-8 and cut at
        /// [`crate::ConnectionLimits::max_recorded_payload`].
        payload: String,
        /// The payload's whole length in bytes.
        payload_len: usize,
        /// Its QoS.
        qos: u8,
    },
    /// A response the broker published to the device.
    Response {
        /// Its topic.
        topic: String,
        /// Its payload, lossily decoded as UTF-8 and cut at
        /// [`crate::ConnectionLimits::max_recorded_payload`].
        payload: String,
        /// The payload's whole length in bytes.
        payload_len: usize,
    },
    /// A PINGREQ.
    Ping,
    /// A DISCONNECT packet.
    Disconnect,
}

/// An event of a connection, and when it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timed {
    /// Since the broker took the connection's CONNECT (`at_ms` in JSON, in milliseconds).
    #[serde(rename = "at_ms", serialize_with = "as_millis")]
    pub at: Duration,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

fn as_millis<S: serde::Serializer>(at: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(at.as_secs_f64() * 1000.0)
}

/// A register or poll the device published, as the service read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// Since the connection's CONNECT.
    pub at: Duration,
    /// The topic as published.
    pub topic: String,
    /// What the topic asked for and its `$rid`; `None` for a publish that is not a DPS request.
    request: Option<(Operation, String)>,
    /// The body (cut as the record cuts payloads).
    pub body: String,
    /// The body's whole length in bytes.
    pub body_len: usize,
}

impl RequestRecord {
    /// What the topic asked for; `None` for a publish that is not a DPS request.
    pub fn operation(&self) -> Option<&Operation> {
        self.request.as_ref().map(|(operation, _)| operation)
    }

    /// Whether it is a register.
    pub fn is_register(&self) -> bool {
        matches!(self.operation(), Some(Operation::Register))
    }

    /// Whether it is a poll.
    pub fn is_poll(&self) -> bool {
        matches!(self.operation(), Some(Operation::Poll { .. }))
    }

    /// Its `$rid`.
    pub fn rid(&self) -> Option<&str> {
        self.request.as_ref().map(|(_, rid)| rid.as_str())
    }

    /// The operation a poll asked about; `None` for a register, or a poll that named none.
    pub fn operation_id(&self) -> Option<&str> {
        match self.operation() {
            Some(Operation::Poll { operation_id }) if !operation_id.is_empty() => {
                Some(operation_id)
            }
            _ => None,
        }
    }
}

/// A response the broker published to the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseRecord {
    /// Since the connection's CONNECT.
    pub at: Duration,
    /// The topic as published.
    pub topic: String,
    /// Status, `$rid` and `retry-after`; `None` for a topic that is not a DPS response topic
    /// (a malformed step's).
    pub response: Option<ResponseTopic>,
    /// The body (cut as the record cuts payloads).
    pub body: String,
    /// The body's whole length in bytes.
    pub body_len: usize,
}

impl ResponseRecord {
    /// The status.
    pub fn status(&self) -> Option<u16> {
        self.response.as_ref().map(|r| r.status)
    }

    /// The `$rid` it answers.
    pub fn rid(&self) -> Option<&str> {
        self.response.as_ref().map(|r| r.rid.as_str())
    }

    /// The `retry-after`, as sent.
    pub fn retry_after(&self) -> Option<&str> {
        self.response
            .as_ref()
            .and_then(|r| r.retry_after.as_deref())
    }

    /// The body as JSON, when it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// Everything about one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionRecord {
    /// The connection's number, from 0 in the order of CONNECTs.
    pub id: u64,
    /// TLS or WebSocket.
    pub transport: Transport,
    /// The CONNECT clientId.
    pub client_id: String,
    /// The CONNECT username.
    pub username: Option<String>,
    /// Whether a password came (never its value).
    pub password_present: bool,
    /// The CONNECT clean-session flag.
    pub clean_session: bool,
    /// The CONNECT keep-alive, in seconds.
    pub keep_alive: u16,
    /// The subject CN of the client certificate, if one was presented.
    pub peer_cert_cn: Option<String>,
    /// The TLS server name (SNI) the client asked for, if any.
    pub server_name: Option<String>,
    /// The broker's answer.
    pub connack: Connack,
    /// What happened afterwards, in order and timed, up to
    /// [`crate::ConnectionLimits::max_recorded_events`].
    pub events: Vec<Timed>,
    /// Events that happened after the record was full, counted only.
    pub events_dropped: u64,
    /// How the connection ended, once it has.
    pub ended: Option<String>,
    /// When the broker took the CONNECT; events are timed from it.
    #[serde(skip)]
    pub(crate) started: Instant,
}

impl ConnectionRecord {
    /// A record of a TCP connection from `client_id`, with nothing in it yet.
    #[cfg(test)]
    pub(crate) fn for_test(client_id: &str) -> Self {
        Self {
            id: 0,
            transport: Transport::Tcp,
            client_id: client_id.to_owned(),
            username: None,
            password_present: false,
            clean_session: true,
            keep_alive: 0,
            peer_cert_cn: None,
            server_name: None,
            connack: Connack::Dropped,
            events: Vec::new(),
            events_dropped: 0,
            ended: None,
            started: Instant::now(),
        }
    }

    /// When the broker took the CONNECT: the origin of the record's times, to compare times of
    /// two connections.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The events alone, in order, without their times.
    pub fn kinds(&self) -> impl Iterator<Item = &Event> {
        self.events.iter().map(|timed| &timed.event)
    }

    /// The topics the device subscribed to.
    pub fn subscriptions(&self) -> Vec<&str> {
        self.kinds()
            .filter_map(|e| match e {
                Event::Subscribe { topic, .. } => Some(topic.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The device's publishes, as (topic, payload).
    pub fn publishes(&self) -> Vec<(&str, &str)> {
        self.kinds()
            .filter_map(|e| match e {
                Event::Publish { topic, payload, .. } => Some((topic.as_str(), payload.as_str())),
                _ => None,
            })
            .collect()
    }

    /// The device's publishes as requests: register or poll, `$rid`, operation id, body, time.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.events
            .iter()
            .filter_map(|timed| match &timed.event {
                Event::Publish {
                    topic,
                    payload,
                    payload_len,
                    ..
                } => Some(RequestRecord {
                    at: timed.at,
                    topic: topic.clone(),
                    request: Operation::from_topic(topic),
                    body: payload.clone(),
                    body_len: *payload_len,
                }),
                _ => None,
            })
            .collect()
    }

    /// The broker's responses: status, `$rid`, `retry-after`, body, time.
    pub fn responses(&self) -> Vec<ResponseRecord> {
        self.events
            .iter()
            .filter_map(|timed| match &timed.event {
                Event::Response {
                    topic,
                    payload,
                    payload_len,
                } => Some(ResponseRecord {
                    at: timed.at,
                    topic: topic.clone(),
                    response: ResponseTopic::parse(topic).ok(),
                    body: payload.clone(),
                    body_len: *payload_len,
                }),
                _ => None,
            })
            .collect()
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.ended.is_some()
    }
}

#[cfg(test)]
mod tests;
