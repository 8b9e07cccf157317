//! The tests of `dps`.

use super::*;
use crate::script::DeviceScript;

fn register_topic(rid: &str) -> String {
    Operation::Register.topic(rid)
}

fn poll_topic(rid: &str, operation_id: &str) -> String {
    Operation::poll(operation_id).topic(rid)
}

fn dps(script: Script) -> Dps {
    Dps::new(
        DpsConfig {
            assigned_hub: "hub.example".into(),
            retry_after: 1,
            issuance: None,
            quotas: Quotas::default(),
            id_scope: crate::DEFAULT_ID_SCOPE.into(),
            webhook_timeout: Duration::from_secs(5),
        },
        script,
    )
}

/// A device that presented no credential (the open broker checked it at CONNECT).
static NOTHING: Presented = Presented {
    chain: Vec::new(),
    sas: None,
};

/// A device announcing the Node SDK's api-version.
fn client(id: &str) -> Client<'_> {
    Client {
        id,
        api_version: "2019-03-31",
        presented: &NOTHING,
    }
}

fn parts(reply: Reply) -> (ResponseTopic, Value) {
    let Reply::Send { topic, payload, .. } = reply else {
        panic!("{reply:?}")
    };
    (
        ResponseTopic::parse(&topic).unwrap(),
        serde_json::from_slice(&payload).unwrap(),
    )
}

fn register(d: &Dps, id: &str, body: Value) -> Reply {
    d.on_publish(
        client(id),
        &register_topic("r1"),
        body.to_string().as_bytes(),
        SystemTime::now(),
    )
}

#[test]
fn default_register_then_poll_assigns_and_echoes_the_payload() {
    let d = dps(Script::new());
    let (topic, body) = parts(register(
        &d,
        "dev",
        json!({"registrationId": "dev", "payload": {"a": 1}}),
    ));
    assert_eq!(
        (
            topic.status,
            topic.rid.as_str(),
            topic.retry_after.as_deref()
        ),
        (202, "r1", Some("1"))
    );
    assert_eq!(body["status"], "assigning");
    let op = body["operationId"].as_str().unwrap().to_owned();

    let (topic, body) = parts(d.on_publish(
        client("dev"),
        &poll_topic("r2", &op),
        b" ",
        SystemTime::now(),
    ));
    assert_eq!((topic.status, topic.rid.as_str()), (200, "r2"));
    assert_eq!(body["operationId"], op.as_str());
    let state = &body["registrationState"];
    assert_eq!(state["assignedHub"], "hub.example");
    assert_eq!(state["deviceId"], "dev");
    assert_eq!(state["substatus"], "initialAssignment");
    assert_eq!(state["payload"], json!({"a": 1}));
    assert!(state["etag"].is_string() && state["createdDateTimeUtc"].is_string());
}

/// The Embedded C SDK sends no register body at all; JSON without a registrationId is
/// legal too. Both register the device the clientId names.
#[test]
fn an_empty_body_or_one_without_registration_id_registers_the_client() {
    let d = dps(Script::new());
    for body in [&b""[..], b"  ", b"{}", br#"{"payload":{"a":1}}"#] {
        let reply = d.on_publish(client("dev"), &register_topic("r"), body, SystemTime::now());
        let (topic, answer) = parts(reply);
        assert_eq!(
            topic.status,
            202,
            "{:?}: {answer}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn a_register_body_that_is_not_an_object_says_what_it_is() {
    let d = dps(Script::new());
    for (body, says) in [
        (&b"null"[..], "not null"),
        (b"[]", "not an array"),
        (b"7", "not a number"),
        (br#""dev""#, "not a string"),
        (b"{nope", "not JSON"),
        (br#"{"registrationId": 7}"#, "not valid"),
    ] {
        let reply = d.on_publish(client("dev"), &register_topic("r"), body, SystemTime::now());
        let (topic, answer) = parts(reply);
        assert_eq!(topic.status, 400);
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
}

#[test]
fn a_poll_of_a_finished_operation_expires() {
    let d = dps(Script::new());
    let t0 = SystemTime::now();
    let (_, body) = parts(d.on_publish(client("dev"), &register_topic("r1"), b"", t0));
    let op = body["operationId"].as_str().unwrap().to_owned();
    let poll = |at| {
        parts(d.on_publish(client("dev"), &poll_topic("r2", &op), b" ", at))
            .0
            .status
    };
    assert_eq!(poll(t0), 200);
    assert_eq!(
        poll(t0 + Duration::from_secs(4 * 60)),
        200,
        "still there 4 minutes on"
    );
    let gone = t0 + crate::operations::FINISHED_OPERATION_TTL;
    assert_eq!(poll(gone), 404);
}

#[test]
fn default_rejects_bad_registers_and_unknown_operations() {
    let d = dps(Script::new());
    let reply = d.on_publish(
        client("dev"),
        &register_topic("r"),
        b"nope",
        SystemTime::now(),
    );
    assert_eq!(parts(reply).0.status, 400);
    assert_eq!(
        parts(register(&d, "dev", json!({"registrationId": "other"})))
            .0
            .status,
        400
    );
    let reply = d.on_publish(
        client("dev"),
        &poll_topic("r", "missing"),
        b" ",
        SystemTime::now(),
    );
    let (topic, body) = parts(reply);
    assert_eq!(topic.status, 404);
    assert_eq!(body["errorCode"], 404001);
    // Another device's operation is not yours.
    let (_, body) = parts(register(&d, "dev", json!({"registrationId": "dev"})));
    let op = body["operationId"].as_str().unwrap();
    assert_eq!(
        parts(d.on_publish(client("eve"), &poll_topic("r", op), b" ", SystemTime::now()))
            .0
            .status,
        404
    );
}

#[test]
fn only_scripted_devices_are_remembered_and_their_steps_are_not_replayed() {
    let script = Script::new().device(
        "scripted",
        DeviceScript::new().connect(ConnectStep::Refuse { code: 5 }),
    );
    let d = dps(script);
    assert_eq!(d.next_connect_step("plain"), ConnectStep::Accept);
    assert_eq!(
        parts(register(&d, "plain", json!({"registrationId": "plain"})))
            .0
            .status,
        202
    );
    assert_eq!(
        d.next_connect_step("scripted"),
        ConnectStep::Refuse { code: 5 }
    );
    // Used up, the script is not started again on the next connection.
    assert_eq!(d.next_connect_step("scripted"), ConnectStep::Accept);
    let state = d.state.lock().unwrap();
    assert!(state.devices.contains_key("scripted"));
    assert!(!state.devices.contains_key("plain"));
}

#[test]
fn scripted_steps_are_consumed_in_order_then_default() {
    let script = Script::new().device(
        "dev",
        DeviceScript::new()
            .request(Step::respond(429).with_retry_after(3))
            .request(Step::Silent)
            .request(Step::Close { delay_ms: 7 }),
    );
    let d = dps(script);
    let body = json!({"registrationId": "dev"});
    let (topic, _) = parts(register(&d, "dev", body.clone()));
    assert_eq!(
        (topic.status, topic.retry_after.as_deref()),
        (429, Some("3"))
    );
    assert_eq!(register(&d, "dev", body.clone()), Reply::Silent);
    assert_eq!(
        register(&d, "dev", body.clone()),
        Reply::Close {
            delay: Duration::from_millis(7)
        }
    );
    assert_eq!(parts(register(&d, "dev", body)).0.status, 202);
}

#[test]
fn each_device_gets_its_own_copy_of_the_fallback() {
    let d = dps(Script::new().fallback(DeviceScript::new().request(Step::Silent)));
    assert_eq!(
        register(&d, "a", json!({"registrationId": "a"})),
        Reply::Silent
    );
    assert_eq!(
        register(&d, "b", json!({"registrationId": "b"})),
        Reply::Silent
    );
    assert_eq!(
        parts(register(&d, "a", json!({"registrationId": "a"})))
            .0
            .status,
        202
    );
}

#[test]
fn scripted_success_bodies_get_the_operation_id() {
    let script = Script::new().device(
        "dev",
        DeviceScript::new()
            .request(Step::respond(200).with_body(json!({"status": "failed"})))
            .request(Step::respond(401)),
    );
    let d = dps(script);
    let reply = d.on_publish(
        client("dev"),
        &poll_topic("r", "op-9"),
        b" ",
        SystemTime::now(),
    );
    assert_eq!(
        parts(reply).1,
        json!({"status": "failed", "operationId": "op-9"})
    );
    let (topic, body) = parts(register(&d, "dev", json!({})));
    assert_eq!(topic.status, 401);
    assert_eq!(body["errorCode"], 401001);
    assert!(body["trackingId"].is_string() && body["timestampUtc"].is_string());
}

#[test]
fn malformed_steps_break_what_they_say() {
    use Malformation::*;
    let steps = [BadJson, NoRid, WrongRid, NonNumericStatus, Oversized];
    let mut script = DeviceScript::new();
    for what in steps {
        script = script.request(Step::Malformed { what });
    }
    let d = dps(Script::new().device("dev", script));
    let body = json!({"registrationId": "dev"});
    let mut replies = steps
        .iter()
        .map(|_| match register(&d, "dev", body.clone()) {
            Reply::Send { topic, payload, .. } => (topic, payload),
            other => panic!("{other:?}"),
        });
    let (topic, payload) = replies.next().unwrap();
    assert_eq!(ResponseTopic::parse(&topic).unwrap().status, 200);
    assert!(serde_json::from_slice::<Value>(&payload).is_err());
    let (topic, _) = replies.next().unwrap();
    assert!(ResponseTopic::parse(&topic).is_err());
    let (topic, _) = replies.next().unwrap();
    assert_eq!(ResponseTopic::parse(&topic).unwrap().rid, "r1-not-yours");
    let (topic, _) = replies.next().unwrap();
    assert!(ResponseTopic::parse(&topic).is_err());
    let (_, payload) = replies.next().unwrap();
    assert!(payload.len() > 256 * 1024);
}

#[test]
fn connect_steps_run_out_into_accept() {
    let d = dps(Script::new().device("dev", DeviceScript::new().connect(ConnectStep::FailSuback)));
    assert_eq!(d.next_connect_step("dev"), ConnectStep::FailSuback);
    assert_eq!(d.next_connect_step("dev"), ConnectStep::Accept);
    assert_eq!(d.next_connect_step("other"), ConnectStep::Accept);
}

#[test]
fn ignores_publishes_that_are_not_requests() {
    let d = dps(Script::new());
    assert_eq!(
        d.on_publish(
            client("dev"),
            "devices/dev/messages/events/",
            b"x",
            SystemTime::now()
        ),
        Reply::Silent
    );
    assert_eq!(
        d.on_publish(
            client("dev"),
            "$dps/registrations/PUT/iotdps-register/?x=1",
            b"{}",
            SystemTime::now()
        ),
        Reply::Silent
    );
}

/// A scripted refusal of a CSR is about the CSR: a register without one is answered as
/// usual, and so is a poll.
#[test]
fn a_csr_refusal_step_lets_a_register_without_a_csr_through() {
    let refuse = || Step::RefuseCsr {
        status: 400,
        error_code: None,
    };
    let d = dps(Script::new().device(
        "dev",
        DeviceScript::new().request(refuse()).request(refuse()),
    ));
    let (topic, body) = parts(register(&d, "dev", json!({"registrationId": "dev"})));
    assert_eq!(topic.status, 202, "{body}");
    let op = body["operationId"].as_str().unwrap().to_owned();
    let (topic, _) = parts(d.on_publish(
        client("dev"),
        &poll_topic("r2", &op),
        b" ",
        SystemTime::now(),
    ));
    assert_eq!(topic.status, 200);
}

/// A scripted 2xx without a body gets the default body; one without an operationId gets
/// a real one the device can poll.
#[test]
fn a_scripted_success_is_filled_in_with_a_pollable_operation() {
    let d = dps(Script::new().device(
        "dev",
        DeviceScript::new()
            .request(Step::respond(202).with_body(json!({"status": "assigning"})))
            .request(Step::respond(202)),
    ));
    // A body without an operationId to the register: a new operation's.
    let (topic, body) = parts(register(&d, "dev", json!({"registrationId": "dev"})));
    assert_eq!(
        (topic.status, body["status"].as_str()),
        (202, Some("assigning"))
    );
    let op = body["operationId"].as_str().unwrap().to_owned();
    assert!(op.starts_with("4."), "{op}");
    // A body without an operationId to the poll: the polled one.
    let poll = |rid| {
        parts(d.on_publish(
            client("dev"),
            &poll_topic(rid, &op),
            b" ",
            SystemTime::now(),
        ))
    };
    let (topic, body) = poll("p1");
    assert_eq!(
        (topic.status, body["operationId"].as_str()),
        (202, Some(op.as_str()))
    );
    let (topic, body) = poll("p2");
    assert_eq!(
        (topic.status, body["status"].as_str()),
        (200, Some("assigned"))
    );
}

#[test]
fn a_poll_without_an_operation_id_is_a_400_and_an_unknown_one_a_404() {
    let d = dps(Script::new());
    let (topic, body) = parts(d.on_publish(
        client("dev"),
        &poll_topic("r1", ""),
        b" ",
        SystemTime::now(),
    ));
    assert_eq!(topic.status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("no operationId"),
        "{body}"
    );
    let (topic, _) = parts(d.on_publish(
        client("dev"),
        &poll_topic("r2", "no-such-operation"),
        b" ",
        SystemTime::now(),
    ));
    assert_eq!(topic.status, 404);
}
