//! What a record says: events timed from the connect, requests and responses read as DPS
//! reads them.

use super::*;
use crate::recorder::Recorder;

#[test]
fn events_are_timed_from_the_connect() {
    let recorder = Recorder::new(None, true);
    let mut early = ConnectionRecord::for_test("dev");
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
    let id = recorder.open(ConnectionRecord::for_test("dev"));
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
