//! The mock DPS as a model of the service: the tests the mock broker's guide
//! (`mock-broker/README.md`, "A mock that models DPS") shows, compiled and run here, one per
//! section. They use only public API. The guide quotes each section between its markers; the
//! last test checks that it still does.

// guide:model:start
use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, SystemTime};

use dps_messages::{
    Protocol, ProvisioningError, RegistrationRequest, RegistrationResult, SymmetricKey,
};
use dps_mock_broker::enrollment::{
    AllocationPolicy, EnrollmentGroup, IndividualEnrollment, ReprovisionPolicy,
};
use dps_mock_broker::{BrokerHandle, MockBroker, TEST_GROUP_KEY};
use dps_transport_actor::{ClientOptions, ProvisioningClient, TransportConfig};
use serde_json::json;

const HUBS: [&str; 3] = ["hub-1.example", "hub-2.example", "hub-3.example"];

/// Provisions `id` at `broker` with its key derived from the group key.
async fn provision(
    broker: &BrokerHandle,
    id: &str,
) -> Result<RegistrationResult, ProvisioningError> {
    let config = TransportConfig::builder(Protocol::Mqtt)
        .ca_pem(broker.ca_pem().unwrap())
        .build()?;
    let options = ClientOptions {
        min_interval: Duration::ZERO,
        max_interval: Duration::from_millis(100),
        deadline: Duration::from_secs(10),
        ..ClientOptions::default()
    };
    let key = SymmetricKey::from_group_key(TEST_GROUP_KEY, id)?;
    let client = ProvisioningClient::start(config, key, options)?;
    let request = RegistrationRequest::new(dps_mock_broker::DEFAULT_ID_SCOPE, id)
        .with_endpoint(broker.mqtts_uri());
    client.register(request).await
}

/// The hub and substatus a registration ended with.
fn hub_and_substatus(result: &RegistrationResult) -> (String, String) {
    let state = result.registration_state.clone().unwrap_or_default();
    (
        state.assigned_hub.unwrap_or_default(),
        state.substatus.unwrap_or_default(),
    )
}

#[actix_rt::test]
async fn only_an_enabled_enrollment_admits_a_device() {
    let broker = MockBroker::builder()
        .retry_after(0)
        .enrollment_group(EnrollmentGroup::symmetric_key("factory", TEST_GROUP_KEY).hubs([HUBS[0]]))
        // An individual enrollment wins over the group, here to refuse one device.
        .enrollment(
            IndividualEnrollment::symmetric_key(
                "stolen-7",
                &dps_messages::service::derive_device_key(TEST_GROUP_KEY, "stolen-7").unwrap(),
            )
            .disabled(),
        )
        .start()
        .unwrap();

    let result = provision(&broker, "sensor-1").await.unwrap();
    assert_eq!(
        hub_and_substatus(&result),
        (HUBS[0].into(), "initialAssignment".into())
    );

    let refused = provision(&broker, "stolen-7").await.unwrap_err();
    assert!(
        matches!(refused, ProvisioningError::RegistrationNotAssigned(r) if r.status.as_str() == "disabled")
    );
    // What DPS keeps of each device.
    assert_eq!(
        broker
            .registration("sensor-1")
            .unwrap()
            .assigned_hub
            .as_deref(),
        Some(HUBS[0])
    );
}
// guide:model:end

// guide:allocation:start
#[actix_rt::test]
async fn hashed_allocation_spreads_a_fleet_over_three_hubs() {
    let broker = MockBroker::builder()
        .retry_after(0)
        .enrollment_group(
            EnrollmentGroup::symmetric_key("fleet", TEST_GROUP_KEY)
                .hubs(HUBS)
                .allocation(AllocationPolicy::Hashed),
        )
        .start()
        .unwrap();
    let mut per_hub = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..12 {
        let result = provision(&broker, &format!("unit-{i}")).await.unwrap();
        *per_hub.entry(hub_and_substatus(&result).0).or_default() += 1;
    }
    assert_eq!(per_hub.len(), 3, "{per_hub:?}");
    // The same device always lands on the same hub.
    let again = provision(&broker, "unit-0").await.unwrap();
    assert_eq!(
        Some(hub_and_substatus(&again).0),
        broker.registration("unit-0").unwrap().assigned_hub
    );
}
// guide:allocation:end

// guide:reprovision:start
#[actix_rt::test]
async fn a_device_moved_to_another_hub_is_told_how() {
    let on = |hub: &str| {
        EnrollmentGroup::symmetric_key("fleet", TEST_GROUP_KEY)
            .hubs([hub])
            .allocation(AllocationPolicy::Static)
            .reprovision(ReprovisionPolicy {
                update_hub_assignment: true,
                migrate_device_data: false,
            })
    };
    let broker = MockBroker::builder()
        .retry_after(0)
        .enrollment_group(on(HUBS[0]))
        .start()
        .unwrap();
    let first = provision(&broker, "unit-9").await.unwrap();
    assert_eq!(
        hub_and_substatus(&first),
        (HUBS[0].into(), "initialAssignment".into())
    );

    // The operator moves the group to another hub; the device registers again.
    broker
        .enrollments()
        .put_group(on(HUBS[1]), None, SystemTime::now())
        .unwrap();
    let moved = provision(&broker, "unit-9").await.unwrap();
    assert_eq!(
        hub_and_substatus(&moved),
        (HUBS[1].into(), "deviceDataReset".into())
    );

    // Deleting its record makes the next registration an initial assignment again.
    assert!(broker.delete_registration("unit-9"));
    let fresh = provision(&broker, "unit-9").await.unwrap();
    assert_eq!(
        hub_and_substatus(&fresh),
        (HUBS[1].into(), "initialAssignment".into())
    );
}
// guide:reprovision:end

// guide:custom:start
/// A custom allocation webhook, as an Azure Function would be: it sends devices whose payload
/// names a site to that site's hub, with a welcome payload. One request per connection.
fn start_webhook() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api/allocate", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                if let Some(n) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = n.trim().parse().unwrap();
                }
                line.clear();
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            // DPS's request: the enrollment, the device's context, the hubs it may use.
            let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let site = request["deviceRuntimeContext"]["payload"]["site"]
                .as_u64()
                .unwrap_or(0);
            let hub = &request["linkedHubs"][site as usize];
            let answer = json!({"iotHubHostName": hub, "payload": {"welcome": site}}).to_string();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                answer.len()
            );
            stream
                .write_all(format!("{head}{answer}").as_bytes())
                .unwrap();
        }
    });
    url
}

#[actix_rt::test]
async fn custom_allocation_asks_the_webhook() {
    let broker = MockBroker::builder()
        .retry_after(0)
        .enrollment_group(
            EnrollmentGroup::symmetric_key("sites", TEST_GROUP_KEY)
                .hubs(HUBS)
                .custom_allocation(start_webhook()),
        )
        .start()
        .unwrap();
    let config = TransportConfig::builder(Protocol::Mqtt)
        .ca_pem(broker.ca_pem().unwrap())
        .build()
        .unwrap();
    let key = SymmetricKey::from_group_key(TEST_GROUP_KEY, "gate-4").unwrap();
    let options = ClientOptions {
        min_interval: Duration::from_millis(20),
        deadline: Duration::from_secs(10),
        ..ClientOptions::default()
    };
    let client = ProvisioningClient::start(config, key, options).unwrap();
    let request = RegistrationRequest::new(dps_mock_broker::DEFAULT_ID_SCOPE, "gate-4")
        .with_endpoint(broker.mqtts_uri())
        .with_payload(json!({"site": 2}));
    let state = client
        .register(request)
        .await
        .unwrap()
        .registration_state
        .unwrap();
    assert_eq!(state.assigned_hub.as_deref(), Some(HUBS[2]));
    assert_eq!(state.payload, Some(json!({"welcome": 2})));
}
// guide:custom:end

/// The guide quotes each section of this file as it is.
#[test]
fn the_guide_shows_these_tests_as_they_are() {
    let this = include_str!("dps_model.rs");
    let guide = include_str!("../../mock-broker/README.md");
    for section in ["model", "allocation", "reprovision", "custom"] {
        let (start, end) = (
            format!("// guide:{section}:start\n"),
            format!("// guide:{section}:end"),
        );
        let from = this.find(&start).unwrap() + start.len();
        let to = this.find(&end).unwrap();
        assert!(
            guide.contains(&this[from..to]),
            "mock-broker/README.md must quote the `{section}` section of transport-actor/tests/dps_model.rs"
        );
    }
}
