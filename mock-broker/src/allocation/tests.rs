//! The tests of `allocation`.

use super::*;
use crate::enrollment::{EnrollmentGroup, IndividualEnrollment};

const HUBS: [&str; 3] = ["hub-a.example", "hub-b.example", "hub-c.example"];

fn group(policy: AllocationPolicy) -> Matched {
    Matched::Group(
        EnrollmentGroup::symmetric_key("g", crate::TEST_GROUP_KEY)
            .hubs(HUBS)
            .allocation(policy),
    )
}

fn hub(allocation: Allocation) -> String {
    match allocation {
        Allocation::Hub(hub) => hub,
        other => panic!("{other:?}"),
    }
}

#[test]
fn hashed_spreads_evenly_and_is_stable_per_registration_id() {
    let matched = group(AllocationPolicy::Hashed);
    let mut counts = [0usize; 3];
    for i in 0..3000 {
        let id = format!("dev-{i}");
        let first = hub(allocate(&matched, &[], &id));
        // Stable: the same id, any case, lands on the same hub.
        assert_eq!(first, hub(allocate(&matched, &[], &id.to_uppercase())));
        counts[HUBS.iter().position(|h| *h == first).unwrap()] += 1;
    }
    for count in counts {
        assert!((900..=1100).contains(&count), "uneven spread: {counts:?}");
    }
}

#[test]
fn static_takes_the_one_hub_and_the_default_policy_is_hashed() {
    let matched = Matched::Individual(
        IndividualEnrollment::symmetric_key("d", crate::TEST_SYMMETRIC_KEY)
            .hubs(["only.example"])
            .allocation(AllocationPolicy::Static),
    );
    assert_eq!(hub(allocate(&matched, &[], "d")), "only.example");
    let default =
        Matched::Group(EnrollmentGroup::symmetric_key("g", crate::TEST_GROUP_KEY).hubs(HUBS));
    let hashed = group(AllocationPolicy::Hashed);
    for id in ["a", "b", "c", "d"] {
        assert_eq!(allocate(&default, &[], id), allocate(&hashed, &[], id));
    }
}

#[test]
fn geo_latency_takes_the_nearest_linked_hub_and_hashes_among_ties() {
    let linked = [
        LinkedHub::new("hub-a.example").latency_ms(80),
        LinkedHub::new("hub-b.example").latency_ms(20),
        LinkedHub::new("hub-c.example").latency_ms(50),
    ];
    let matched = group(AllocationPolicy::GeoLatency);
    for i in 0..20 {
        assert_eq!(
            hub(allocate(&matched, &linked, &format!("d{i}"))),
            "hub-b.example"
        );
    }
    let tied = [
        LinkedHub::new("hub-a.example").latency_ms(10),
        LinkedHub::new("hub-b.example").latency_ms(10),
        LinkedHub::new("hub-c.example").latency_ms(90),
    ];
    let chosen: std::collections::BTreeSet<String> = (0..50)
        .map(|i| hub(allocate(&matched, &tied, &format!("d{i}"))))
        .collect();
    assert_eq!(
        chosen.into_iter().collect::<Vec<_>>(),
        ["hub-a.example", "hub-b.example"]
    );
}

#[test]
fn an_enrollment_without_hubs_uses_the_linked_ones_and_none_is_no_hub() {
    let matched = Matched::Group(EnrollmentGroup::symmetric_key("g", crate::TEST_GROUP_KEY));
    let linked = [LinkedHub::new("linked.example")];
    assert_eq!(hub(allocate(&matched, &linked, "d")), "linked.example");
    assert!(matches!(allocate(&matched, &[], "d"), Allocation::NoHub(_)));
}

#[test]
fn custom_asks_the_webhook_with_dps_request_shape() {
    let matched = Matched::Group(
        EnrollmentGroup::symmetric_key("g", crate::TEST_GROUP_KEY)
            .hubs(HUBS)
            .custom_allocation("http://127.0.0.1:9/alloc"),
    );
    let Allocation::Webhook(definition) = allocate(&matched, &[], "d") else {
        panic!()
    };
    assert_eq!(definition.webhook_url, "http://127.0.0.1:9/alloc");
    let payload = json!({"site": 3});
    let request = webhook_request(
        &matched,
        &[],
        "d",
        Some(("hub-a.example", "d")),
        false,
        Some(&payload),
    );
    assert_eq!(request["enrollmentGroup"]["enrollmentGroupId"], "g");
    assert_eq!(request["deviceRuntimeContext"]["registrationId"], "d");
    assert_eq!(
        request["deviceRuntimeContext"]["currentIotHubHostName"],
        "hub-a.example"
    );
    assert_eq!(request["deviceRuntimeContext"]["payload"], payload);
    assert_eq!(request["deviceRuntimeContext"]["symmetricKey"], json!({}));
    assert_eq!(request["linkedHubs"], json!(HUBS));
    assert!(request.get("individualEnrollment").is_none());
    // The group key stays with the service.
    assert!(
        !request.to_string().contains(crate::TEST_GROUP_KEY),
        "{request}"
    );
}

#[test]
fn a_webhook_answer_must_name_an_offered_hub_and_an_object_payload() {
    let offered: Vec<String> = HUBS.iter().map(|h| h.to_string()).collect();
    let good = read_webhook_answer(
        br#"{"iotHubHostName": "HUB-B.example", "payload": {"x": 1}}"#,
        &offered,
    )
    .unwrap();
    assert_eq!(good.hub, "HUB-B.example");
    assert_eq!(good.payload, Some(json!({"x": 1})));
    for bad in [
        &b"not json"[..],
        br#"{"payload": {}}"#,
        br#"{"iotHubHostName": "elsewhere.example"}"#,
        br#"{"iotHubHostName": 7}"#,
        br#"{"iotHubHostName": "hub-a.example", "payload": [1]}"#,
    ] {
        assert!(
            read_webhook_answer(bad, &offered).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}
