//! What the broker saw, per connection, for tests to assert on and the CLI to write as JSON
//! lines. Passwords are never recorded, only whether one came.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use dps_messages::Operation;
use dps_messages::response::ResponseTopic;
use serde::Serialize;

use crate::limits::ConnectionLimits;

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
        /// Its topic (cut at [`ConnectionLimits::max_recorded_topic`]).
        topic: String,
        /// Its payload, lossily decoded as UTF-8 and cut at
        /// [`ConnectionLimits::max_recorded_payload`].
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
        /// [`ConnectionLimits::max_recorded_payload`].
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
    /// [`ConnectionLimits::max_recorded_events`].
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

/// The broker's record of its connections, shared by its connections and its handle.
///
/// By default every record is kept for the broker's life, for tests to read. A recorder made
/// with `keep_ended: false` keeps only live connections: each record leaves when its connection
/// ends, written to the sink (if any), so a broker serving millions of connections holds only
/// the open ones.
pub struct Recorder {
    book: Mutex<Book>,
    /// Wakes async waiters ([`Recorder::wait_for`]) on every change.
    changed_async: tokio::sync::Notify,
    /// Events one record keeps; a connection that does more only counts them.
    max_events: usize,
    changed: Condvar,
    /// Threads in [`Recorder::wait_until`]. A notify is a system call even with nobody waiting,
    /// and the broker records several events per registration.
    waiting: AtomicUsize,
    keep_ended: bool,
    sink: Mutex<Option<Box<dyn Write + Send>>>,
}

/// Counts a waiter in for as long as it lives, so that changes wake it.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn count(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::SeqCst);
        Self(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The records held, in the order of their ids.
#[derive(Default)]
struct Book {
    records: Vec<ConnectionRecord>,
    next_id: u64,
}

impl Book {
    /// Where record `id` is. Ids are handed out in increasing order and records leave without
    /// reordering the rest, so the list stays sorted by id.
    fn position(&self, id: u64) -> Option<usize> {
        self.records.binary_search_by_key(&id, |r| r.id).ok()
    }
}

impl Recorder {
    /// An empty record; each ended connection is written to `sink` as a JSON line, and kept in
    /// memory too when `keep_ended` is true.
    pub fn new(sink: Option<Box<dyn Write + Send>>, keep_ended: bool) -> Self {
        Self {
            book: Mutex::new(Book::default()),
            changed_async: tokio::sync::Notify::new(),
            max_events: ConnectionLimits::default().max_recorded_events,
            changed: Condvar::new(),
            waiting: AtomicUsize::new(0),
            keep_ended,
            sink: Mutex::new(sink),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        // A panic elsewhere must not stop the record from being read.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a new connection and returns its id.
    pub(crate) fn open(&self, mut record: ConnectionRecord) -> u64 {
        let mut book = self.lock();
        record.id = book.next_id;
        book.next_id += 1;
        let id = record.id;
        // A connection refused before CONNACK is born ended.
        let ended = if !record.is_closed() {
            book.records.push(record);
            None
        } else if self.keep_ended {
            book.records.push(record.clone());
            Some(record)
        } else {
            Some(record)
        };
        drop(book);
        if let Some(record) = ended {
            self.write(&record);
        }
        self.notify();
        id
    }

    /// Keeps at most `max` events per record.
    pub(crate) fn with_max_events(mut self, max: usize) -> Self {
        self.max_events = max;
        self
    }

    /// Adds an event to connection `id`, or counts it when the record is full.
    pub(crate) fn event(&self, id: u64, event: Event) {
        let mut book = self.lock();
        if let Some(at) = book.position(id) {
            let record = &mut book.records[at];
            if record.events.len() < self.max_events {
                let at = record.started.elapsed();
                record.events.push(Timed { at, event });
            } else {
                record.events_dropped += 1;
            }
        }
        drop(book);
        self.notify();
    }

    /// Marks connection `id` ended (the first reason wins) and writes it to the sink.
    pub(crate) fn close(&self, id: u64, reason: impl Into<String>) {
        let mut book = self.lock();
        let Some(at) = book.position(id) else {
            return;
        };
        let r = &mut book.records[at];
        if r.ended.is_some() {
            return;
        }
        r.ended = Some(reason.into());
        let record = if self.keep_ended {
            r.clone()
        } else {
            // Shifts the live records after it: few (a benchmark's concurrency) next to the
            // ended ones this stops keeping.
            book.records.remove(at)
        };
        drop(book);
        self.write(&record);
        self.notify();
    }

    /// Wakes the waiters, if any. Called after a change made under the lock: a waiter counts
    /// itself under the lock before it looks at the records, so it either sees the change or
    /// is counted here.
    fn notify(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.changed.notify_all();
            self.changed_async.notify_waiters();
        }
    }

    fn write(&self, record: &ConnectionRecord) {
        let mut sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(out) = sink.as_mut() {
            let line = serde_json::to_string(record).unwrap_or_default();
            if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                tracing::warn!("cannot write the record: {e}");
            }
        }
    }

    /// A copy of every record held: every connection's so far, or only the live ones'.
    pub fn snapshot(&self) -> Vec<ConnectionRecord> {
        self.lock().records.clone()
    }

    /// Waits, without blocking the thread, until `done` holds for the records or `timeout`
    /// passes; returns the records and whether `done` held. Wakes on every change, so a test
    /// waits exactly as long as needed.
    ///
    /// For async tests (`#[actix_rt::test]`, `#[tokio::test]`): it runs on any tokio runtime,
    /// actix's included, and leaves the thread to the actors and connections the test drives.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[ConnectionRecord]) -> bool,
    ) -> (Vec<ConnectionRecord>, bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        let _counted = Waiting::count(&self.waiting);
        loop {
            // Listen before looking, so that a change between the two is not missed.
            let changed = self.changed_async.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let book = self.lock();
                if done(&book.records) {
                    return (book.records.clone(), true);
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let book = self.lock();
                let held = done(&book.records);
                return (book.records.clone(), held);
            }
        }
    }

    /// Waits, blocking the thread, until `done` holds for the records or `timeout` passes;
    /// returns the records and whether `done` held. Wakes on every change.
    ///
    /// For plain `#[test]` functions and other threads. Inside an async test it would stall the
    /// runtime the test drives its actors on (they share the thread): use
    /// [`wait_for`](Self::wait_for) there.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[ConnectionRecord]) -> bool,
    ) -> (Vec<ConnectionRecord>, bool) {
        let deadline = Instant::now() + timeout;
        let mut book = self.lock();
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let outcome = loop {
            if done(&book.records) {
                break (book.records.clone(), true);
            }
            let now = Instant::now();
            if now >= deadline {
                break (book.records.clone(), false);
            }
            book = self
                .changed
                .wait_timeout(book, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn record(client_id: &str) -> ConnectionRecord {
        ConnectionRecord {
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

    #[test]
    fn an_async_waiter_wakes_on_the_change_it_waits_for_and_gives_up_at_its_timeout() {
        let recorder = Arc::new(Recorder::new(None, true));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let changer = recorder.clone();
            let change = async move {
                // Let the waiter count itself in and wait first.
                tokio::task::yield_now().await;
                let id = changer.open(record("dev"));
                changer.event(id, Event::Ping);
            };
            let wait = recorder.wait_for(Duration::from_secs(60), |r| {
                r.iter().any(|c| !c.events.is_empty())
            });
            let ((records, done), ()) = tokio::join!(wait, change);
            assert!(done);
            assert_eq!(records[0].kinds().collect::<Vec<_>>(), vec![&Event::Ping]);
            let (_, done) = recorder
                .wait_for(Duration::from_millis(10), |r| r.len() > 1)
                .await;
            assert!(!done, "nothing came: the timeout ends the wait");
        });
        assert_eq!(recorder.waiting.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn events_are_timed_from_the_connect() {
        let recorder = Recorder::new(None, true);
        let mut early = record("dev");
        early.started = Instant::now() - Duration::from_secs(5);
        let id = recorder.open(early);
        recorder.event(id, Event::Ping);
        let at = recorder.snapshot()[0].events[0].at;
        assert!(
            at >= Duration::from_secs(5) && at < Duration::from_secs(60),
            "{at:?}"
        );
        let json = serde_json::to_value(&recorder.snapshot()[0].events[0]).unwrap();
        assert_eq!(json["event"], "ping");
        assert!(json["at_ms"].as_f64().unwrap() >= 5000.0, "{json}");
    }

    /// The typed views read what the raw events hold: which request, its `$rid` and
    /// operation, which status and retry-after, and when.
    #[test]
    fn requests_and_responses_read_as_what_they_are() {
        let recorder = Recorder::new(None, true);
        let id = recorder.open(record("dev"));
        let publish = |topic: &str, payload: &str| Event::Publish {
            topic: topic.into(),
            payload: payload.into(),
            payload_len: payload.len() + 10,
            qos: 1,
        };
        recorder.event(
            id,
            publish("$dps/registrations/PUT/iotdps-register/?$rid=r1", "{}"),
        );
        recorder.event(
            id,
            Event::Response {
                topic: "$dps/registrations/res/429/?$rid=r1&retry-after=3".into(),
                payload: r#"{"errorCode":429001}"#.into(),
                payload_len: 20,
            },
        );
        recorder.event(
            id,
            publish(
                "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=r2&operationId=op-1",
                " ",
            ),
        );
        recorder.event(id, publish("devices/dev/messages/events/", "junk"));
        recorder.event(
            id,
            Event::Response {
                topic: "$dps/registrations/res/abc/?$rid=r2".into(),
                payload: "not json".into(),
                payload_len: 8,
            },
        );
        let held = &recorder.snapshot()[0];

        let requests = held.requests();
        let kinds: Vec<(bool, bool, Option<&str>, Option<&str>)> = requests
            .iter()
            .map(|r| (r.is_register(), r.is_poll(), r.rid(), r.operation_id()))
            .collect();
        assert_eq!(
            kinds,
            [
                (true, false, Some("r1"), None),
                (false, true, Some("r2"), Some("op-1")),
                (false, false, None, None),
            ]
        );
        assert_eq!(
            (requests[0].body.as_str(), requests[0].body_len),
            ("{}", 12)
        );
        assert!(requests[1].at >= requests[0].at);

        let responses = held.responses();
        assert_eq!(responses[0].status(), Some(429));
        assert_eq!(responses[0].rid(), Some("r1"));
        assert_eq!(responses[0].retry_after(), Some("3"));
        assert_eq!(
            responses[0].json(),
            Some(serde_json::json!({"errorCode": 429001}))
        );
        // A topic that is not a response topic: kept, but with nothing parsed.
        assert_eq!(
            (
                responses[1].status(),
                responses[1].rid(),
                responses[1].retry_after()
            ),
            (None, None, None)
        );
        assert_eq!(responses[1].json(), None);
    }

    #[test]
    fn a_full_record_counts_what_it_no_longer_keeps() {
        let recorder = Recorder::new(None, true).with_max_events(2);
        let id = recorder.open(record("chatty"));
        for _ in 0..5 {
            recorder.event(id, Event::Ping);
        }
        let held = &recorder.snapshot()[0];
        assert_eq!((held.events.len(), held.events_dropped), (2, 3));
    }

    #[test]
    fn a_waiter_wakes_on_the_change_it_waits_for() {
        let recorder = Arc::new(Recorder::new(None, true));
        let waiter = {
            let recorder = recorder.clone();
            std::thread::spawn(move || {
                recorder.wait_until(Duration::from_secs(60), |r| {
                    r.iter().any(|c| c.events.len() == 2)
                })
            })
        };
        // Changes made with nobody waiting wake nobody; once the waiter counts itself, each
        // change wakes it to look again.
        while recorder.waiting.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        let id = recorder.open(record("dev"));
        recorder.event(id, Event::Disconnect);
        recorder.event(id, Event::Disconnect);
        let (records, done) = waiter.join().unwrap();
        assert!(done);
        assert_eq!(records[0].events.len(), 2);
        assert_eq!(recorder.waiting.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn without_keep_ended_only_live_connections_stay() {
        let recorder = Recorder::new(None, false);
        let first = recorder.open(record("one"));
        let second = recorder.open(record("two"));
        recorder.event(first, Event::Disconnect);
        recorder.close(first, "gone");
        // Events and closes for a record that has left are ignored.
        recorder.event(first, Event::Ping);
        recorder.close(first, "again");
        recorder.event(second, Event::Ping);
        let third = recorder.open(record("three"));
        let held = recorder.snapshot();
        let ids: Vec<(u64, &str)> = held.iter().map(|r| (r.id, r.client_id.as_str())).collect();
        assert_eq!(ids, vec![(1, "two"), (2, "three")]);
        assert_eq!(held[0].kinds().collect::<Vec<_>>(), vec![&Event::Ping]);
        assert_eq!((first, second, third), (0, 1, 2));

        // A connection refused before CONNACK is born ended and never held.
        let mut refused = record("refused");
        refused.ended = Some("refused".into());
        assert_eq!(recorder.open(refused), 3);
        assert_eq!(recorder.snapshot().len(), 2);
    }
}
