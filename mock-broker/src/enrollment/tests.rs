//! The tests of `enrollment`: DPS's JSON, the store's etags, and who matches.

use std::time::SystemTime;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::json;

use super::*;
use crate::TestPki;

fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(Result::unwrap)
        .collect()
}

fn x509(pem: &str) -> Presented {
    Presented {
        chain: chain(pem),
        sas: None,
    }
}

fn matched(store: &Enrollments, id: &str, presented: &Presented) -> Result<String, String> {
    store
        .with(|inner| find_match(inner, "scope", id, presented, crate::clock::unix_now()))
        .map(|m| match m {
            Matched::Individual(e) => format!("individual:{}", e.registration_id),
            Matched::Group(g) => format!("group:{}", g.enrollment_group_id),
        })
        .map_err(|NoMatch(why)| why)
}

#[test]
fn reads_and_writes_dps_enrollment_json() {
    let text = json!({
        "linkedHubs": [{"name": "hub-a.example", "latencyMs": 30}],
        "individualEnrollments": [{
            "registrationId": "dev-1",
            "deviceId": "device-one",
            "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": crate::TEST_SYMMETRIC_KEY}},
            "provisioningStatus": "disabled",
            "reprovisionPolicy": {"updateHubAssignment": true, "migrateDeviceData": false},
            "capabilities": {"iotEdge": true},
            "initialTwin": {"tags": {"a": 1}}
        }],
        "enrollmentGroups": [{
            "enrollmentGroupId": "line-3",
            "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": crate::TEST_GROUP_KEY}},
            "allocationPolicy": "geoLatency",
            "iotHubs": ["hub-a.example"]
        }]
    })
    .to_string();
    let file = EnrollmentFile::from_json(&text).unwrap();
    let e = &file.individual_enrollments[0];
    assert_eq!(e.device_id.as_deref(), Some("device-one"));
    assert!(!e.is_enabled());
    assert!(!e.settings.reprovision_policy().migrate_device_data);
    assert_eq!(
        e.settings.capabilities,
        Some(Capabilities { iot_edge: true })
    );
    assert_eq!(
        file.enrollment_groups[0].settings.allocation_policy,
        Some(AllocationPolicy::GeoLatency)
    );
    assert_eq!(file.linked_hubs[0].latency_ms, 30);
    // What was read writes back as DPS spells it.
    let back = serde_json::to_value(e).unwrap();
    assert_eq!(back["attestation"]["type"], "symmetricKey");
    assert_eq!(back["provisioningStatus"], "disabled");
    assert_eq!(back["initialTwin"], json!({"tags": {"a": 1}}));
    assert!(
        EnrollmentFile::from_json(r#"{"enrollments": []}"#).is_err(),
        "unknown top-level field"
    );
}

#[test]
fn the_store_refuses_invalid_enrollments() {
    let store = Enrollments::new();
    let now = SystemTime::now();
    let bad_id = IndividualEnrollment::symmetric_key("dev 1", crate::TEST_SYMMETRIC_KEY);
    assert!(matches!(
        store.put_individual(bad_id, None, now),
        Err(EnrollmentError::Invalid(_))
    ));
    let bad_key = IndividualEnrollment::symmetric_key("dev", "not base64!");
    assert!(store.put_individual(bad_key, None, now).is_err());
    let bad_cert = IndividualEnrollment::x509(
        "dev",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    assert!(store.put_individual(bad_cert, None, now).is_err());
    let bad_payload =
        EnrollmentGroup::symmetric_key("g", crate::TEST_GROUP_KEY).payload(json!([1]));
    assert!(store.put_group(bad_payload, None, now).is_err());
    let two_static = EnrollmentGroup::symmetric_key("g", crate::TEST_GROUP_KEY)
        .hubs(["a", "b"])
        .allocation(AllocationPolicy::Static);
    assert!(store.put_group(two_static, None, now).is_err());
    assert!(store.is_empty());
}

#[test]
fn every_write_has_a_new_etag_and_a_stale_if_match_is_refused() {
    let store = Enrollments::new();
    let now = SystemTime::now();
    let e = IndividualEnrollment::symmetric_key("Dev-1", crate::TEST_SYMMETRIC_KEY);
    let first = store.put_individual(e.clone(), None, now).unwrap();
    let etag = first.settings.etag.clone().unwrap();
    let second = store.put_individual(e.clone(), Some(&etag), now).unwrap();
    let current = second.settings.etag.clone().unwrap();
    assert_ne!(etag, current);
    assert_eq!(
        second.settings.created_date_time_utc,
        first.settings.created_date_time_utc
    );
    assert!(matches!(
        store.put_individual(e.clone(), Some(&etag), now),
        Err(EnrollmentError::EtagMismatch { .. })
    ));
    assert!(store.put_individual(e, Some("*"), now).is_ok());
    // Ids are case-insensitive.
    assert!(store.individual("dev-1").is_some());
    assert!(store.delete_individual("DEV-1", Some(&etag)).is_err());
    store.delete_individual("DEV-1", None).unwrap();
    assert_eq!(
        store.delete_individual("dev-1", None),
        Err(EnrollmentError::NotFound("dev-1".into()))
    );
}

#[test]
fn custom_allocation_needs_its_webhook_and_static_allocation_takes_one_hub() {
    let store = Enrollments::new();
    let now = SystemTime::now();
    let key = crate::TEST_GROUP_KEY;
    let refused = |result: Result<EnrollmentGroup, EnrollmentError>, why: &str| matches!(result, Err(EnrollmentError::Invalid(w)) if w.contains(why));
    let no_webhook =
        EnrollmentGroup::symmetric_key("custom", key).allocation(AllocationPolicy::Custom);
    assert!(refused(
        store.put_group(no_webhook, None, now),
        "customAllocationDefinition"
    ));
    let custom = EnrollmentGroup::symmetric_key("custom", key)
        .custom_allocation("http://127.0.0.1:9/api/allocate");
    assert!(store.put_group(custom, None, now).is_ok());
    let one_hub = EnrollmentGroup::symmetric_key("static", key)
        .hubs(["a"])
        .allocation(AllocationPolicy::Static);
    assert!(store.put_group(one_hub, None, now).is_ok());
    let two_hubs = EnrollmentGroup::symmetric_key("static", key)
        .hubs(["a", "b"])
        .allocation(AllocationPolicy::Static);
    assert!(refused(store.put_group(two_hubs, None, now), "one hub"));
}

#[test]
fn an_if_match_without_its_quotes_names_the_same_etag() {
    let store = Enrollments::new();
    let now = SystemTime::now();
    let e = IndividualEnrollment::symmetric_key("dev", crate::TEST_SYMMETRIC_KEY);
    let etag = store
        .put_individual(e.clone(), None, now)
        .unwrap()
        .settings
        .etag
        .unwrap();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let bare = etag.trim_matches('"').to_owned();
    assert!(store.put_individual(e.clone(), Some(&bare), now).is_ok());
    // Now stale, quoted or not.
    assert!(matches!(
        store.put_individual(e, Some(&bare), now),
        Err(EnrollmentError::EtagMismatch { .. })
    ));
}

#[test]
fn groups_are_stamped_and_their_etags_checked_as_individual_enrollments_are() {
    let store = Enrollments::new();
    let now = SystemTime::now();
    let later = now + std::time::Duration::from_secs(60);
    let g = EnrollmentGroup::symmetric_key("Line-1", crate::TEST_GROUP_KEY);
    let first = store.put_group(g.clone(), None, now).unwrap();
    let etag = first.settings.etag.clone().unwrap();
    let second = store.put_group(g.clone(), Some(&etag), later).unwrap();
    assert_ne!(second.settings.etag, first.settings.etag);
    assert_eq!(
        second.settings.created_date_time_utc,
        first.settings.created_date_time_utc
    );
    assert_ne!(
        second.settings.last_updated_date_time_utc,
        first.settings.last_updated_date_time_utc
    );
    assert_eq!(
        store.group("line-1").unwrap().settings.etag,
        second.settings.etag
    );
    assert!(matches!(
        store.put_group(g, Some(&etag), later),
        Err(EnrollmentError::EtagMismatch { .. })
    ));
    assert!(matches!(
        store.delete_group("LINE-1", Some(&etag)),
        Err(EnrollmentError::EtagMismatch { .. })
    ));
    store
        .delete_group("line-1", second.settings.etag.as_deref())
        .unwrap();
    assert_eq!(
        store.delete_group("line-1", None),
        Err(EnrollmentError::NotFound("line-1".into()))
    );
}

#[test]
fn a_file_gives_its_hubs_and_enrollments_and_a_bad_enrollment_is_its_error() {
    let hubs = vec![
        LinkedHub::new("hub-a.example"),
        LinkedHub::new("hub-b.example"),
    ];
    let store = Enrollments::from_file(EnrollmentFile {
        linked_hubs: hubs.clone(),
        individual_enrollments: vec![IndividualEnrollment::symmetric_key(
            "dev",
            crate::TEST_SYMMETRIC_KEY,
        )],
        enrollment_groups: vec![EnrollmentGroup::symmetric_key("g", crate::TEST_GROUP_KEY)],
    })
    .unwrap();
    assert_eq!(store.linked_hubs(), hubs);
    assert!(store.individual("dev").is_some() && store.group("g").is_some());
    let bad = EnrollmentFile {
        individual_enrollments: vec![IndividualEnrollment::symmetric_key(
            "dev 1",
            crate::TEST_SYMMETRIC_KEY,
        )],
        ..EnrollmentFile::default()
    };
    assert!(matches!(
        Enrollments::from_file(bad),
        Err(EnrollmentError::Invalid(_))
    ));
}

#[test]
fn an_individual_enrollment_wins_over_a_group_and_must_accept_the_credential() {
    let pki = TestPki::generate().unwrap();
    let store = Enrollments::new();
    let now = SystemTime::now();
    let device = pki.device("dev").unwrap();
    store
        .put_group(EnrollmentGroup::x509_ca("root", pki.ca_pem()), None, now)
        .unwrap();
    assert_eq!(
        matched(&store, "dev", &x509(&device.cert_pem)),
        Ok("group:root".into())
    );
    store
        .put_individual(
            IndividualEnrollment::x509("dev", &device.cert_pem),
            None,
            now,
        )
        .unwrap();
    assert_eq!(
        matched(&store, "dev", &x509(&device.cert_pem)),
        Ok("individual:dev".into())
    );
    // Another certificate for the same id: the individual enrollment refuses it, even though
    // the group's CA signed it.
    let other = pki.device("dev").unwrap();
    assert!(matched(&store, "dev", &x509(&other.cert_pem)).is_err());
}

#[test]
fn the_most_specific_ca_on_the_chain_wins() {
    let root = TestPki::generate().unwrap();
    let intermediate = root.intermediate().unwrap();
    let store = Enrollments::new();
    let now = SystemTime::now();
    store
        .put_group(EnrollmentGroup::x509_ca("a-root", root.ca_pem()), None, now)
        .unwrap();
    store
        .put_group(
            EnrollmentGroup::x509_ca("b-intermediate", intermediate.ca_pem()),
            None,
            now,
        )
        .unwrap();
    let with_chain = intermediate.device_with_chain("dev").unwrap();
    assert_eq!(
        matched(&store, "dev", &x509(&with_chain.cert_pem)),
        Ok("group:b-intermediate".into())
    );
    // The leaf alone still reaches the intermediate group (its CA signed the leaf).
    let leaf_only = intermediate.device("dev").unwrap();
    assert_eq!(
        matched(&store, "dev", &x509(&leaf_only.cert_pem)),
        Ok("group:b-intermediate".into())
    );
    // With only the root enrolled, the chain must be sent.
    store.delete_group("b-intermediate", None).unwrap();
    assert_eq!(
        matched(&store, "dev", &x509(&with_chain.cert_pem)),
        Ok("group:a-root".into())
    );
    assert!(matched(&store, "dev", &x509(&leaf_only.cert_pem)).is_err());
    // A device of another CA matches nothing.
    let stranger = TestPki::generate().unwrap().device("dev").unwrap();
    assert!(matched(&store, "dev", &x509(&stranger.cert_pem)).is_err());
}

#[test]
fn two_groups_of_the_same_ca_tie_to_the_first_by_id_whatever_the_order_written() {
    let pki = TestPki::generate().unwrap();
    let store = Enrollments::new();
    let now = SystemTime::now();
    for id in ["b-root", "a-root", "c-root"] {
        store
            .put_group(EnrollmentGroup::x509_ca(id, pki.ca_pem()), None, now)
            .unwrap();
    }
    let device = pki.device("dev").unwrap();
    assert_eq!(
        matched(&store, "dev", &x509(&device.cert_pem)),
        Ok("group:a-root".into())
    );
}

#[test]
fn the_hub_gets_the_enrollments_device_id_else_the_registration_id() {
    let key = crate::TEST_SYMMETRIC_KEY;
    let named =
        Matched::Individual(IndividualEnrollment::symmetric_key("dev", key).device_id("hub-dev-7"));
    assert_eq!(named.device_id("dev"), "hub-dev-7");
    let unnamed = Matched::Individual(IndividualEnrollment::symmetric_key("dev", key));
    assert_eq!(unnamed.device_id("dev"), "dev");
    // A group names no device: each device is known by its registration id.
    let group = Matched::Group(EnrollmentGroup::symmetric_key("g", key));
    assert_eq!(group.device_id("dev-9"), "dev-9");
}

#[test]
fn symmetric_keys_match_individual_then_group_and_a_wrong_token_matches_nothing() {
    use dps_messages::SymmetricKey;
    let store = Enrollments::new();
    let now = SystemTime::now();
    store
        .put_group(
            EnrollmentGroup::symmetric_key("g", crate::TEST_GROUP_KEY),
            None,
            now,
        )
        .unwrap();
    store
        .put_individual(
            IndividualEnrollment::symmetric_key("own", crate::TEST_SYMMETRIC_KEY),
            None,
            now,
        )
        .unwrap();
    let sas = |key: &str, id: &str| Presented {
        chain: vec![],
        sas: Some(
            SymmetricKey::new(key)
                .unwrap()
                .sas_token("scope", id, crate::clock::unix_now() + 3600)
                .to_string(),
        ),
    };
    let derived =
        dps_messages::service::derive_device_key(crate::TEST_GROUP_KEY, "member").unwrap();
    assert_eq!(
        matched(&store, "member", &sas(&derived, "member")),
        Ok("group:g".into())
    );
    assert_eq!(
        matched(&store, "own", &sas(crate::TEST_SYMMETRIC_KEY, "own")),
        Ok("individual:own".into())
    );
    // The group key would derive a good token for `own`, but its individual enrollment wins.
    let derived_own =
        dps_messages::service::derive_device_key(crate::TEST_GROUP_KEY, "own").unwrap();
    assert!(matched(&store, "own", &sas(&derived_own, "own")).is_err());
    assert!(matched(&store, "member", &sas(crate::TEST_SYMMETRIC_KEY, "member")).is_err());
    assert!(matched(&store, "member", &Presented::default()).is_err());
}

#[test]
fn debug_never_shows_a_token_or_a_key() {
    let presented = Presented {
        chain: vec![],
        sas: Some("SharedAccessSignature sr=a&sig=SECRET&se=1".into()),
    };
    let shown = format!("{presented:?}");
    assert!(
        !shown.contains("SECRET") && shown.contains("<redacted>"),
        "{shown}"
    );
}
