//! The tests of the service API's routes and views, with no IO (`tests/service_api.rs` drives
//! them over HTTPS).

use std::time::SystemTime;

use serde_json::{Value, json};

use super::routes::{ApiRequest, ApiResponse, Service};
use super::*;
use crate::dps::{Dps, DpsConfig};
use crate::enrollment::{Enrollments, IndividualEnrollment, redacted_individual};
use crate::script::Script;

fn dps() -> Dps {
    Dps::new(DpsConfig::new("hub.example", 0), Script::new())
        .with_enrollments(Arc::new(Enrollments::new()))
}

fn call(dps: &Dps, method: &str, path: &str, body: Option<Value>) -> ApiResponse {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = ApiRequest {
        method,
        path,
        if_match: None,
        max_items: None,
        continuation: None,
        body: body.as_bytes(),
    };
    Service {
        enrollments: dps.enrollments(),
        dps,
    }
    .handle(&request, SystemTime::now())
}

#[test]
fn paths_are_matched_without_case_and_unknown_ones_are_dps_errors() {
    let d = dps();
    let group = json!({"attestation": {"type": "symmetricKey"}});
    assert_eq!(
        call(&d, "put", "/ENROLLMENTGROUPS/g1", Some(group)).status,
        200
    );
    assert_eq!(call(&d, "GET", "/enrollmentGroups/G1/", None).status, 200);
    let keys = call(
        &d,
        "POST",
        "/enrollmentgroups/g1/attestationmechanism",
        None,
    )
    .body
    .unwrap();
    assert!(
        keys["symmetricKey"]["primaryKey"].as_str().is_some(),
        "{keys}"
    );
    assert_eq!(
        call(
            &d,
            "POST",
            "/enrollmentGroups/none/attestationmechanism",
            None
        )
        .status,
        404
    );
    // Ids arrive URI-encoded, as `encodeURIComponent` writes them.
    let e = json!({"attestation": {"type": "symmetricKey"}});
    let put = call(&d, "PUT", "/enrollments/line%3A7.dev", Some(e))
        .body
        .unwrap();
    assert_eq!(put["registrationId"], "line:7.dev");
    assert_eq!(
        call(&d, "GET", "/enrollments/LINE%3a7.DEV", None).status,
        200
    );
    assert_eq!(call(&d, "GET", "/enrollments/bad%zz", None).status, 404);
    for (method, path, status) in [
        ("GET", "/", 404),
        ("GET", "/devices/x", 404),
        ("PUT", "/registrations/x", 405),
        ("GET", "/enrollments/x/attestationmechanism", 405),
        ("POST", "/enrollments/x/y/z", 405),
    ] {
        let answer = call(&d, method, path, None);
        assert_eq!(answer.status, status, "{method} {path}");
        let body = answer.body.unwrap();
        assert_eq!(body["errorCode"], u64::from(status) * 1000 + 1);
        assert!(body["trackingId"].as_str().is_some());
    }
}

#[test]
fn a_read_shows_a_certificate_as_its_info_and_never_a_key() {
    let pki = crate::TestPki::generate().unwrap();
    let device = pki.device("dev-x").unwrap();
    let shown = json!(redacted_individual(IndividualEnrollment::x509(
        "dev-x",
        &device.cert_pem
    )));
    let primary = &shown["attestation"]["x509"]["clientCertificates"]["primary"];
    assert!(primary.get("certificate").is_none(), "{shown}");
    let info = &primary["info"];
    assert_eq!(info["subjectName"], "CN=dev-x");
    assert!(
        info["issuerName"]
            .as_str()
            .unwrap()
            .contains("dps-mock-broker test CA")
    );
    assert_eq!(info["sha256Thumbprint"].as_str().unwrap().len(), 64);
    assert_eq!(info["version"], 3);
    // The validity in ISO 8601 (which compares as text): the certificate is valid now.
    let now = crate::clock::iso8601(SystemTime::now());
    let (not_before, not_after) = (
        info["notBeforeUtc"].as_str().unwrap(),
        info["notAfterUtc"].as_str().unwrap(),
    );
    assert!(
        not_before < now.as_str() && now.as_str() < not_after,
        "{not_before} {now} {not_after}"
    );

    let d = dps();
    let e = json!({"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": crate::TEST_SYMMETRIC_KEY}}});
    call(&d, "PUT", "/enrollments/k", Some(e));
    let read = call(&d, "GET", "/enrollments/k", None).body.unwrap();
    assert_eq!(read["attestation"]["symmetricKey"], json!({}), "{read}");
    let queried = call(
        &d,
        "POST",
        "/enrollments/query",
        Some(json!({"query": "*"})),
    )
    .body
    .unwrap();
    assert_eq!(queried[0]["attestation"]["symmetricKey"], json!({}));
    let keys = call(&d, "POST", "/enrollments/K/attestationMechanism", None)
        .body
        .unwrap();
    assert_eq!(
        keys["symmetricKey"]["primaryKey"],
        crate::TEST_SYMMETRIC_KEY
    );
    // The service made the secondary key the enrollment was written without.
    assert!(
        keys["symmetricKey"]["secondaryKey"]
            .as_str()
            .is_some_and(|k| k.len() >= 44)
    );
}

#[test]
fn bulk_updates_if_match_etag_and_reports_each_failure() {
    let d = dps();
    let e = |id: &str, etag: Option<&str>| {
        let mut e = json!({"registrationId": id, "attestation": {"type": "symmetricKey"}});
        if let Some(etag) = etag {
            e["etag"] = etag.into();
        }
        e
    };
    let made = call(
        &d,
        "POST",
        "/enrollments",
        Some(json!({"mode": "create", "enrollments": [e("a", None), e("b", None)]})),
    );
    assert_eq!(made.body.unwrap()["isSuccessful"], true);
    let etag = d
        .enrollments()
        .individual("a")
        .unwrap()
        .settings
        .etag
        .unwrap();
    let update = json!({"mode": "updateIfMatchETag", "enrollments": [e("a", Some(&etag)), e("b", Some("\"stale\""))]});
    let answer = call(&d, "POST", "/enrollments", Some(update)).body.unwrap();
    assert_eq!(answer["isSuccessful"], false);
    assert_eq!(answer["errors"].as_array().unwrap().len(), 1);
    assert_eq!(answer["errors"][0]["registrationId"], "b");
    assert!(
        call(
            &d,
            "POST",
            "/enrollments",
            Some(json!({"mode": "upsert", "enrollments": []}))
        )
        .status
            == 400
    );
    assert!(call(&d, "POST", "/enrollments", Some(json!({"mode": "create"}))).status == 400);
    let paged = ApiRequest {
        method: "POST",
        path: "/enrollments/query",
        if_match: None,
        max_items: Some(1),
        continuation: Some("not a number"),
        body: br#"{"query": "*"}"#,
    };
    let service = Service {
        enrollments: d.enrollments(),
        dps: &d,
    };
    assert_eq!(service.handle(&paged, SystemTime::now()).status, 400);
    // A page size of 0 is no size: every enrollment in one page, and nothing to continue.
    let all = ApiRequest {
        max_items: Some(0),
        continuation: None,
        ..paged
    };
    let answer = service.handle(&all, SystemTime::now());
    let count = d.enrollments().individuals().len();
    assert!(count > 1, "{count}");
    assert_eq!(
        answer.body.as_ref().and_then(Value::as_array).map(Vec::len),
        Some(count)
    );
    assert!(
        !answer
            .headers
            .iter()
            .any(|(name, _)| *name == "x-ms-continuation"),
        "{:?}",
        answer.headers
    );
}

#[test]
fn a_policy_shows_its_name_and_never_its_key() {
    let policy = ServicePolicy {
        name: "provisioningserviceowner".into(),
        key: "c2VjcmV0IHNlcnZpY2Uga2V5".into(),
    };
    let shown = format!("{policy:?}");
    assert!(
        shown.contains("provisioningserviceowner")
            && shown.contains("<redacted>")
            && !shown.contains("c2VjcmV0"),
        "{shown}"
    );
}
