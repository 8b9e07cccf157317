//! The DPS model over TLS: enrollments, who matches, allocation across three hubs (a webhook
//! for `custom`), reprovisioning and its substatus, and DPS's refusals.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;

use dps_mock_broker::enrollment::{
    AllocationPolicy, EnrollmentGroup, IndividualEnrollment, LinkedHub, ReprovisionPolicy,
};
use dps_mock_broker::registration::Substatus;
use serde_json::Value;

use super::*;

const HUBS: [&str; 3] = ["hub-a.example", "hub-b.example", "hub-c.example"];

/// A device's registration to the end: the last response's status and body.
async fn provision(
    broker: &BrokerHandle,
    options: Options,
    payload: Option<Value>,
) -> (u16, Value) {
    let id = options.client_id.clone();
    let mut client = connect(broker, options).await.unwrap();
    client.subscribe().await;
    register(&client, &id, "r0", payload).await;
    for poll in 1..1000 {
        let (topic, body) = client.next(LONG).await.expect("an answer");
        let status = ResponseTopic::parse(&topic).unwrap().status;
        if status != 202 {
            client.sink.close();
            return (status, body);
        }
        let op = body["operationId"].as_str().unwrap().to_owned();
        if poll > 1 {
            // Still assigning (a webhook is deciding): poll at a device's pace, not in a loop
            // the broker's flood limit would end.
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        client
            .publish(&poll_topic(&format!("r{poll}"), &op), b"")
            .await;
    }
    panic!("still assigning after 1000 polls");
}

/// A device of `group_key`'s group, proving it with a SAS token.
fn group_device(broker: &BrokerHandle, id: &str) -> Options {
    let key = SymmetricKey::from_group_key(dps_mock_broker::TEST_GROUP_KEY, id).unwrap();
    let token = key.sas_token(dps_mock_broker::DEFAULT_ID_SCOPE, id, u64::MAX / 2);
    Options::new(broker, id).password(token.to_string())
}

fn own_key_device(broker: &BrokerHandle, id: &str) -> Options {
    let token = SymmetricKey::new(KEY).unwrap().sas_token(
        dps_mock_broker::DEFAULT_ID_SCOPE,
        id,
        u64::MAX / 2,
    );
    Options::new(broker, id).password(token.to_string())
}

fn start(builder: dps_mock_broker::BrokerBuilder) -> Arc<BrokerHandle> {
    Arc::new(builder.retry_after(0).start().unwrap())
}

fn hub_of(body: &Value) -> String {
    assert_eq!(body["status"], "assigned", "{body}");
    body["registrationState"]["assignedHub"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn hashed_allocation_spreads_devices_over_three_hubs_and_keeps_each_on_its_hub() {
    let group = EnrollmentGroup::symmetric_key("line-3", dps_mock_broker::TEST_GROUP_KEY)
        .hubs(HUBS)
        .allocation(AllocationPolicy::Hashed);
    let broker = start(MockBroker::builder().enrollment_group(group));
    let b = broker.clone();
    run(async move {
        let mut seen = std::collections::BTreeMap::new();
        for i in 0..24 {
            let id = format!("dev-{i}");
            let (status, body) = provision(&b, group_device(&b, &id), None).await;
            assert_eq!(status, 200);
            seen.insert(id, hub_of(&body));
        }
        let used: std::collections::BTreeSet<_> = seen.values().cloned().collect();
        assert_eq!(used.len(), 3, "every hub takes devices: {seen:?}");
        for (id, hub) in seen.iter().take(6) {
            let (_, again) = provision(&b, group_device(&b, id), None).await;
            assert_eq!(&hub_of(&again), hub, "{id} moved");
            assert_eq!(again["registrationState"]["substatus"], "initialAssignment");
        }
    });
    let record = broker.registration("DEV-0").unwrap();
    assert_eq!(record.enrollment_group_id.as_deref(), Some("line-3"));
}

#[test]
fn static_and_geo_latency_allocation() {
    let broker = start(
        MockBroker::builder()
            .linked_hub(LinkedHub::new(HUBS[0]).latency_ms(90))
            .linked_hub(LinkedHub::new(HUBS[1]).latency_ms(15))
            .linked_hub(LinkedHub::new(HUBS[2]).latency_ms(40))
            .enrollment(
                IndividualEnrollment::symmetric_key("pinned", KEY)
                    .hubs([HUBS[2]])
                    .allocation(AllocationPolicy::Static),
            )
            .enrollment_group(
                EnrollmentGroup::symmetric_key("near", dps_mock_broker::TEST_GROUP_KEY)
                    .allocation(AllocationPolicy::GeoLatency),
            ),
    );
    let b = broker.clone();
    run(async move {
        let (_, body) = provision(&b, own_key_device(&b, "pinned"), None).await;
        assert_eq!(hub_of(&body), HUBS[2]);
        for i in 0..5 {
            let (_, body) = provision(&b, group_device(&b, &format!("g{i}")), None).await;
            assert_eq!(hub_of(&body), HUBS[1], "the nearest linked hub");
        }
    });
}

/// A webhook on a loopback port: each request's JSON body goes to the receiver, and is
/// answered by `answer` (status and body), or not at all when it gives `None`.
fn webhook(
    answer: impl Fn(&Value) -> Option<(u16, String)> + Send + 'static,
) -> (String, mpsc::Receiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api/allocate", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let request: Value = serde_json::from_slice(&body).unwrap();
            let reply = answer(&request);
            let _ = tx.send(request);
            match reply {
                Some((status, body)) => {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
                None => held.push(stream),
            }
        }
    });
    (url, rx)
}

fn custom_broker(url: &str) -> Arc<BrokerHandle> {
    let group = EnrollmentGroup::symmetric_key("custom", dps_mock_broker::TEST_GROUP_KEY)
        .hubs(HUBS)
        .custom_allocation(url);
    start(
        MockBroker::builder()
            .enrollment_group(group)
            .webhook_timeout(Duration::from_millis(500)),
    )
}

#[test]
fn custom_allocation_assigns_as_the_webhook_answers() {
    let (url, requests) = webhook(|request| {
        let site = request["deviceRuntimeContext"]["payload"]["site"]
            .as_u64()
            .unwrap_or(0);
        // A roomy answer (well under the 256 KiB the mock reads) is read whole.
        let welcome = if request["deviceRuntimeContext"]["registrationId"] == "dev-roomy" {
            json!("x".repeat(10_000))
        } else {
            json!(site)
        };
        let answer =
            json!({"iotHubHostName": HUBS[site as usize], "payload": {"welcome": welcome}});
        Some((200, answer.to_string()))
    });
    let broker = custom_broker(&url);
    let b = broker.clone();
    run(async move {
        let (status, body) =
            provision(&b, group_device(&b, "dev-c"), Some(json!({"site": 2}))).await;
        assert_eq!(status, 200);
        assert_eq!(hub_of(&body), HUBS[2]);
        assert_eq!(body["registrationState"]["payload"], json!({"welcome": 2}));
    });
    let request = requests.recv_timeout(LONG).unwrap();
    assert_eq!(request["enrollmentGroup"]["enrollmentGroupId"], "custom");
    assert_eq!(request["deviceRuntimeContext"]["registrationId"], "dev-c");
    assert_eq!(
        request["deviceRuntimeContext"]["payload"],
        json!({"site": 2})
    );
    assert_eq!(request["linkedHubs"], json!(HUBS));
    // The device authenticated with a key (DPS says which kind, never the key itself).
    let context = &request["deviceRuntimeContext"];
    assert!(context.get("symmetricKey").is_some() && context.get("x509").is_none());
    // A first registration has no current assignment to tell the webhook.
    assert!(
        request["deviceRuntimeContext"]
            .get("currentIotHubHostName")
            .is_none()
    );
    let b = broker.clone();
    run(async move {
        let (_, body) =
            provision(&b, group_device(&b, "dev-roomy"), Some(json!({"site": 1}))).await;
        assert_eq!(hub_of(&body), HUBS[1]);
        let welcome = &body["registrationState"]["payload"]["welcome"];
        assert_eq!(welcome.as_str().map(str::len), Some(10_000));
    });
    requests.recv_timeout(LONG).unwrap();
    // Registering again, the device is on HUBS[2]: DPS tells the webhook where it is.
    let b = broker.clone();
    run(async move {
        provision(&b, group_device(&b, "dev-c"), Some(json!({"site": 0}))).await;
    });
    let again = &requests.recv_timeout(LONG).unwrap()["deviceRuntimeContext"];
    assert_eq!(again["currentIotHubHostName"], HUBS[2]);
    assert_eq!(again["currentDeviceId"], "dev-c");
}

#[test]
fn a_custom_allocation_whose_webhook_times_out_or_answers_badly_fails_the_registration() {
    let (url, _requests) = webhook(
        |request| match request["deviceRuntimeContext"]["registrationId"].as_str() {
            Some("silent") => None,
            Some("elsewhere") => {
                Some((200, json!({"iotHubHostName": "rogue.example"}).to_string()))
            }
            Some("broken") => Some((500, "{}".into())),
            // Past the 256 KiB the mock reads of an answer.
            Some("huge") => {
                let pad = "x".repeat(300 * 1024);
                let answer = json!({"iotHubHostName": HUBS[0], "payload": {"pad": pad}});
                Some((200, answer.to_string()))
            }
            _ => Some((200, "not json".into())),
        },
    );
    let broker = custom_broker(&url);
    let b = broker.clone();
    run(async move {
        for (id, why) in [
            ("silent", "did not answer"),
            ("elsewhere", "not one of the enrollment's hubs"),
            ("broken", "status code: 500"),
            ("huge", "size limit"),
            ("garbled", "not JSON"),
        ] {
            let (status, body) = provision(&b, group_device(&b, id), None).await;
            assert_eq!(status, 200, "{id}");
            assert_eq!(body["status"], "failed", "{id}: {body}");
            let state = &body["registrationState"];
            assert_eq!(state["status"], "failed");
            assert!(state.get("assignedHub").is_none(), "{id}: {body}");
            let message = state["errorMessage"].as_str().unwrap();
            assert!(message.contains(why), "{id}: {message}");
            assert!(state["errorCode"].as_u64().is_some());
        }
    });
}

#[test]
fn reprovisioning_follows_the_policy_with_dps_substatus() {
    let enrollment = |hub: &str, policy: ReprovisionPolicy| {
        IndividualEnrollment::symmetric_key("mover", KEY)
            .device_id("mover-device")
            .hubs([hub])
            .allocation(AllocationPolicy::Static)
            .reprovision(policy)
    };
    let migrate = ReprovisionPolicy::default();
    let reset = ReprovisionPolicy {
        update_hub_assignment: true,
        migrate_device_data: false,
    };
    let never = ReprovisionPolicy {
        update_hub_assignment: false,
        migrate_device_data: true,
    };
    let broker = start(MockBroker::builder().enrollment(enrollment(HUBS[0], migrate)));
    let b = broker.clone();
    run(async move {
        let steps = [
            (HUBS[0], migrate, HUBS[0], "initialAssignment"),
            (HUBS[1], migrate, HUBS[1], "deviceDataMigrated"),
            (HUBS[2], reset, HUBS[2], "deviceDataReset"),
            (HUBS[1], never, HUBS[2], "deviceDataReset"),
            (
                HUBS[0],
                migrate,
                HUBS[0],
                "reprovisionedToInitialAssignment",
            ),
        ];
        for (hub, policy, expected_hub, substatus) in steps {
            b.enrollments()
                .put_individual(enrollment(hub, policy), None, std::time::SystemTime::now())
                .unwrap();
            let (_, body) = provision(&b, own_key_device(&b, "mover"), None).await;
            assert_eq!(hub_of(&body), expected_hub);
            assert_eq!(body["registrationState"]["substatus"], substatus);
            assert_eq!(body["registrationState"]["deviceId"], "mover-device");
        }
        assert!(b.delete_registration("MOVER"));
        b.enrollments()
            .put_individual(
                enrollment(HUBS[1], migrate),
                None,
                std::time::SystemTime::now(),
            )
            .unwrap();
        let (_, body) = provision(&b, own_key_device(&b, "mover"), None).await;
        assert_eq!(hub_of(&body), HUBS[1]);
        assert_eq!(body["registrationState"]["substatus"], "initialAssignment");
    });
    let record = broker.registration("mover").unwrap();
    assert_eq!(record.substatus, Some(Substatus::InitialAssignment));
    assert_eq!(record.device_id.as_deref(), Some("mover-device"));
}

#[test]
fn a_disabled_match_is_refused_even_when_another_enrollment_would_take_the_device() {
    let root = pki();
    let intermediate = root.intermediate().unwrap();
    let blocked = root.device("blocked").unwrap();
    let broker = start(
        MockBroker::builder()
            .pki(root.clone())
            .enrollment_group(EnrollmentGroup::x509_ca("root", root.ca_pem()).hubs(HUBS))
            .enrollment_group(
                EnrollmentGroup::x509_ca("intermediate", intermediate.ca_pem())
                    .hubs(HUBS)
                    .disabled(),
            )
            .enrollment(IndividualEnrollment::x509("blocked", &blocked.cert_pem).disabled()),
    );
    let b = broker.clone();
    run(async move {
        // The intermediate's group is more specific than the root's, and disabled.
        let device = intermediate.device_with_chain("line-dev").unwrap();
        let (status, body) =
            provision(&b, Options::new(&b, "line-dev").identity(device), None).await;
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("disabled")),
            "{body}"
        );
        assert_eq!(body["registrationState"]["status"], "disabled");
        assert!(body["registrationState"].get("assignedHub").is_none());
        // A device of the root alone is fine.
        let device = root.device("root-dev").unwrap();
        let (_, body) = provision(&b, Options::new(&b, "root-dev").identity(device), None).await;
        hub_of(&body);
        // Its individual enrollment is disabled; the root's group would take its certificate.
        let (_, body) = provision(&b, Options::new(&b, "blocked").identity(blocked), None).await;
        assert_eq!(body["status"], "disabled", "{body}");
    });
    assert_eq!(
        broker.registration("line-dev").unwrap().status,
        dps_mock_broker::registration::RegistrationStatus::Disabled
    );
}

#[test]
fn an_intermediate_ca_group_takes_a_device_with_its_chain_or_its_leaf_alone() {
    let root = pki();
    let intermediate = root.intermediate().unwrap();
    let broker = start(MockBroker::builder().pki(root.clone()).enrollment_group(
        EnrollmentGroup::x509_ca("intermediate", intermediate.ca_pem()).hubs([HUBS[1]]),
    ));
    let b = broker.clone();
    run(async move {
        for (id, device) in [
            (
                "chained",
                intermediate.device_with_chain("chained").unwrap(),
            ),
            ("leaf-only", intermediate.device("leaf-only").unwrap()),
        ] {
            let (_, body) = provision(&b, Options::new(&b, id).identity(device), None).await;
            assert_eq!(hub_of(&body), HUBS[1], "{id}");
        }
        // Signed by the root, not the intermediate: no enrollment.
        let outsider = root.device("outsider").unwrap();
        let (status, _) =
            provision(&b, Options::new(&b, "outsider").identity(outsider), None).await;
        assert_eq!(status, 401);
    });
}

#[test]
fn no_enrollment_is_dps_401_and_its_rules_are_400() {
    let root = pki();
    let broker = start(
        MockBroker::builder()
            .pki(root.clone())
            .enrollment(IndividualEnrollment::symmetric_key("known", KEY)),
    );
    let b = broker.clone();
    run(async move {
        // A certificate from a CA nobody enrolled: TLS lets it in, as DPS does; the register
        // says 401.
        let stranger = TestPki::generate().unwrap().device("stranger").unwrap();
        let mut tracking = std::collections::HashSet::new();
        for options in [
            Options::new(&b, "stranger").identity(stranger),
            own_key_device(&b, "unknown"),
        ] {
            let (status, body) = provision(&b, options, None).await;
            assert_eq!(status, 401, "{body}");
            assert_eq!(body["errorCode"], 401_002);
            assert!(body["timestampUtc"].as_str().is_some());
            assert!(tracking.insert(body["trackingId"].as_str().unwrap().to_owned()));
        }
        let (status, body) = provision(&b, own_key_device(&b, "known"), Some(json!([1, 2]))).await;
        assert_eq!(status, 400, "a payload must be an object: {body}");
        let long = "x".repeat(129);
        let (status, _) = provision(&b, own_key_device(&b, &long), None).await;
        assert_eq!(status, 400, "a registration id of 129 characters");
    });
}

#[test]
fn a_scripted_step_still_overrides_the_model_for_its_device() {
    let group =
        EnrollmentGroup::symmetric_key("g", dps_mock_broker::TEST_GROUP_KEY).hubs([HUBS[0]]);
    let script = Script::new().device("scripted", DeviceScript::new().request(Step::respond(503)));
    let broker = start(MockBroker::builder().enrollment_group(group).script(script));
    let b = broker.clone();
    run(async move {
        let (status, _) = provision(&b, group_device(&b, "scripted"), None).await;
        assert_eq!(status, 503, "the script's answer, not the model's");
        // Its next request, past the script, is the model's; another device is the model's.
        let (_, body) = provision(&b, group_device(&b, "scripted"), None).await;
        assert_eq!(hub_of(&body), HUBS[0]);
        let (_, body) = provision(&b, group_device(&b, "other"), None).await;
        assert_eq!(hub_of(&body), HUBS[0]);
    });
}
