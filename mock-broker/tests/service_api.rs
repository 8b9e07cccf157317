//! DPS's service API over real HTTPS: what the official service SDKs send, and what a test
//! reads back of the devices.

#[path = "common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use dps_messages::SymmetricKey;
use dps_messages::response::ResponseTopic;
use dps_messages::service::SasToken;
use dps_mock_broker::{BrokerHandle, MockBroker, TestPki};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

const SERVICE_KEY: &str = "c2VydmljZSBrZXkgZm9yIHRlc3RzIG9ubHksIG5ldmVyIHJlYWw=";

struct Api {
    broker: Arc<BrokerHandle>,
    addr: SocketAddr,
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn token(key: &str, expiry: u64) -> String {
    SasToken::generate(key, "localhost", expiry, Some("provisioningserviceowner"))
        .unwrap()
        .to_string()
}

fn good_token() -> String {
    token(SERVICE_KEY, dps_mock_broker_now() + 3600)
}

fn dps_mock_broker_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl Api {
    fn start() -> Self {
        let pki = Arc::new(TestPki::generate().unwrap());
        let broker = MockBroker::builder()
            .pki(pki)
            .retry_after(0)
            .service_api("127.0.0.1:0".parse().unwrap(), SERVICE_KEY)
            .start()
            .unwrap();
        let addr = broker.service_addr().unwrap();
        Self {
            broker: Arc::new(broker),
            addr,
        }
    }

    /// One HTTP/1.1 request over TLS, as the SDKs send it, with `headers`.
    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Option<&Value>,
    ) -> Answer {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.broker.ca_pem().unwrap().as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = "localhost".try_into().unwrap();
        let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let tcp = std::net::TcpStream::connect(self.addr).unwrap();
        let mut tls = rustls::StreamOwned::new(connection, tcp);
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut request = format!(
            "{method} {path}?api-version=2021-10-01 HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(&body);
        tls.write_all(request.as_bytes()).unwrap();
        let mut raw = Vec::new();
        let _ = tls.read_to_end(&mut raw);
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.lines();
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Answer {
            status,
            headers,
            body: serde_json::from_str(body).unwrap_or(Value::Null),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Answer {
        self.send(method, path, &[("authorization", good_token())], body)
    }
}

fn symmetric(id: &str) -> Value {
    json!({
        "registrationId": id,
        "attestation": {"type": "symmetricKey", "symmetricKey": {
            "primaryKey": dps_mock_broker::TEST_SYMMETRIC_KEY,
            "secondaryKey": dps_mock_broker::TEST_GROUP_KEY
        }},
        "iotHubHostName": "hub-a.example"
    })
}

#[test]
fn the_service_sas_is_required_and_checked() {
    let api = Api::start();
    let path = "/enrollments/dev-1";
    assert_eq!(api.send("GET", path, &[], None).status, 401);
    let wrong = token("d3Jvbmcga2V5", dps_mock_broker_now() + 3600);
    assert_eq!(
        api.send("GET", path, &[("authorization", wrong)], None)
            .status,
        401
    );
    let expired = token(SERVICE_KEY, dps_mock_broker_now() - 1);
    let answer = api.send("GET", path, &[("authorization", expired)], None);
    assert_eq!(answer.status, 401);
    assert!(
        answer.body["message"].as_str().unwrap().contains("expired"),
        "{}",
        answer.body
    );
    let other_policy = SasToken::generate(
        SERVICE_KEY,
        "localhost",
        dps_mock_broker_now() + 60,
        Some("registryRead"),
    )
    .unwrap()
    .to_string();
    assert_eq!(
        api.send("GET", path, &[("authorization", other_policy)], None)
            .status,
        401
    );
    // A good one gets as far as the resource.
    assert_eq!(api.call("GET", path, None).status, 404);
    let connection = api.broker.service_connection_string().unwrap();
    assert!(
        connection.starts_with("HostName=localhost:"),
        "{connection}"
    );
    assert!(connection.contains(";SharedAccessKeyName=provisioningserviceowner;SharedAccessKey="));
}

#[test]
fn enrollments_are_made_read_and_deleted_with_etags() {
    let api = Api::start();
    let put = api.call("PUT", "/enrollments/dev-1", Some(&symmetric("dev-1")));
    assert_eq!(put.status, 200, "{}", put.body);
    let etag = put.body["etag"].as_str().unwrap().to_owned();
    assert_eq!(put.header("etag"), Some(etag.as_str()));
    assert!(put.body["createdDateTimeUtc"].as_str().is_some());

    // Read back, in another case: no keys shown.
    let get = api.call("GET", "/Enrollments/DEV-1", None);
    assert_eq!(get.status, 200);
    assert_eq!(get.body["registrationId"], "dev-1");
    assert_eq!(get.body["attestation"]["type"], "symmetricKey");
    assert!(
        get.body["attestation"]["symmetricKey"]
            .get("primaryKey")
            .is_none(),
        "{}",
        get.body
    );
    let keys = api.call("POST", "/enrollments/dev-1/attestationmechanism", None);
    assert_eq!(
        keys.body["symmetricKey"]["primaryKey"],
        dps_mock_broker::TEST_SYMMETRIC_KEY
    );

    // A stale etag is refused: 412, DPS's error shape.
    let stale = "\"not-the-etag\"".to_owned();
    let refused = api.send(
        "PUT",
        "/enrollments/dev-1",
        &[("authorization", good_token()), ("if-match", stale.clone())],
        Some(&symmetric("dev-1")),
    );
    assert_eq!(refused.status, 412);
    for field in ["errorCode", "trackingId", "message", "timestampUtc"] {
        assert!(
            refused.body.get(field).is_some(),
            "{field}: {}",
            refused.body
        );
    }
    let updated = api.send(
        "PUT",
        "/enrollments/dev-1",
        &[("authorization", good_token()), ("if-match", etag.clone())],
        Some(&symmetric("dev-1")),
    );
    assert_eq!(updated.status, 200);
    let deleted = api.send(
        "DELETE",
        "/enrollments/dev-1",
        &[("authorization", good_token()), ("if-match", etag)],
        None,
    );
    assert_eq!(deleted.status, 412, "the etag changed with the update");
    assert_eq!(api.call("DELETE", "/enrollments/dev-1", None).status, 204);
    assert_eq!(api.call("GET", "/enrollments/dev-1", None).status, 404);

    // Bad bodies: DPS's 400.
    let bad = api.call(
        "PUT",
        "/enrollments/dev-2",
        Some(&json!({"attestation": 7})),
    );
    assert_eq!(bad.status, 400);
    assert!(bad.body["trackingId"].as_str().is_some());
    let mismatch = api.call("PUT", "/enrollments/dev-2", Some(&symmetric("dev-3")));
    assert_eq!(mismatch.status, 400);
}

#[test]
fn groups_queries_bulk_and_generated_keys() {
    let api = Api::start();
    // The Node service SDK writes the path in lower case; the key is left to the service.
    let group = json!({"attestation": {"type": "symmetricKey"}, "allocationPolicy": "hashed",
        "iotHubs": ["hub-a.example", "hub-b.example"]});
    let put = api.call("PUT", "/enrollmentgroups/line-3", Some(&group));
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(put.body["enrollmentGroupId"], "line-3");
    let generated = put.body["attestation"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(generated.len() >= 44);

    let bulk = api.call(
        "POST",
        "/enrollments",
        Some(&json!({"mode": "create", "enrollments": [symmetric("a"), symmetric("b"), symmetric("c")]})),
    );
    assert_eq!(bulk.body, json!({"isSuccessful": true, "errors": []}));
    let again = api.call(
        "POST",
        "/enrollments",
        Some(&json!({"mode": "create", "enrollments": [symmetric("a")]})),
    );
    assert_eq!(again.body["isSuccessful"], false);
    assert_eq!(again.body["errors"][0]["registrationId"], "a");

    let first = api.send(
        "POST",
        "/enrollments/query",
        &[
            ("authorization", good_token()),
            ("x-ms-max-item-count", "2".into()),
        ],
        Some(&json!({"query": "*"})),
    );
    assert_eq!(first.body.as_array().unwrap().len(), 2);
    assert_eq!(first.header("x-ms-item-type"), Some("Enrollment"));
    let continuation = first.header("x-ms-continuation").unwrap().to_owned();
    let rest = api.send(
        "POST",
        "/enrollments/query",
        &[
            ("authorization", good_token()),
            ("x-ms-continuation", continuation),
        ],
        Some(&json!({"query": "*"})),
    );
    assert_eq!(rest.body.as_array().unwrap().len(), 1);
    assert_eq!(rest.header("x-ms-continuation"), None);
    let groups = api.call(
        "POST",
        "/enrollmentGroups/query",
        Some(&json!({"query": "*"})),
    );
    assert_eq!(groups.body[0]["enrollmentGroupId"], "line-3");
    assert_eq!(
        api.call(
            "POST",
            "/enrollments/query",
            Some(&json!({"query": "SELECT * FROM enrollments WHERE x=1"}))
        )
        .status,
        400
    );

    let deleted = api.call(
        "POST",
        "/enrollments",
        Some(&json!({"mode": "delete", "enrollments": [symmetric("a"), symmetric("b")]})),
    );
    assert_eq!(deleted.body["isSuccessful"], true);
    let left = api.call("POST", "/enrollments/query", Some(&json!({"query": "*"})));
    assert_eq!(left.body.as_array().unwrap().len(), 1);
    assert_eq!(api.call("PATCH", "/enrollments/c", None).status, 405);
}

/// Registers `id` with `key` over MQTT and polls to the end; the final body.
async fn register_with(broker: &BrokerHandle, id: &str, key: &str) -> Value {
    let token = SymmetricKey::new(key).unwrap().sas_token(
        dps_mock_broker::DEFAULT_ID_SCOPE,
        id,
        u64::MAX / 2,
    );
    let mut client = connect(broker, Options::new(broker, id).password(token.to_string()))
        .await
        .unwrap();
    client.subscribe().await;
    client.publish(&register_topic("1"), b"{}").await;
    let (_, body) = client.next(LONG).await.unwrap();
    let op = body["operationId"].as_str().unwrap().to_owned();
    client.publish(&poll_topic("2", &op), b"").await;
    let (topic, body) = client.next(LONG).await.unwrap();
    assert_eq!(ResponseTopic::parse(&topic).unwrap().status, 200);
    client.sink.close();
    body
}

#[test]
fn registrations_are_read_queried_and_deleted_after_devices_register() {
    let api = Api::start();
    let group_key = dps_mock_broker::TEST_GROUP_KEY;
    let group = json!({"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": group_key}},
        "iotHubs": ["hub-a.example"]});
    assert_eq!(
        api.call("PUT", "/enrollmentGroups/floor", Some(&group))
            .status,
        200
    );
    let broker = api.broker.clone();
    run(async move {
        for id in ["d1", "d2"] {
            let key = dps_messages::service::derive_device_key(group_key, id).unwrap();
            let body = register_with(&broker, id, &key).await;
            assert_eq!(body["registrationState"]["assignedHub"], "hub-a.example");
        }
    });
    let record = api.call("GET", "/registrations/d1", None);
    assert_eq!(record.status, 200);
    assert_eq!(record.body["assignedHub"], "hub-a.example");
    assert_eq!(record.body["substatus"], "initialAssignment");
    let etag = record.body["etag"].as_str().unwrap().to_owned();
    let listed = api.call("POST", "/registrations/FLOOR/query", None);
    assert_eq!(listed.header("x-ms-item-type"), Some("DeviceRegistration"));
    let ids: Vec<&str> = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["registrationId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["d1", "d2"]);
    let stale = api.send(
        "DELETE",
        "/registrations/d1",
        &[
            ("authorization", good_token()),
            ("if-match", "\"x\"".into()),
        ],
        None,
    );
    assert_eq!(stale.status, 412);
    let gone = api.send(
        "DELETE",
        "/registrations/d1",
        &[("authorization", good_token()), ("if-match", etag)],
        None,
    );
    assert_eq!(gone.status, 204);
    assert_eq!(api.call("GET", "/registrations/d1", None).status, 404);
    assert!(api.broker.registration("d1").is_none());
}
