//! Testing a device application against the mock DPS: the tests the mock broker's guide
//! (`mock-broker/README.md`, "Testing your device app") shows, compiled and run here. They use
//! only public API. The guide quotes everything between the two `guide` markers; the last test
//! checks that it still does.

// guide:start
use std::time::Duration;

use dps_messages::error::Stage;
use dps_messages::{Protocol, ProvisioningError, RegistrationRequest, SymmetricKey};
use dps_mock_broker::script::{DeviceScript, Step};
use dps_mock_broker::{BrokerHandle, MockBroker, Script};
use dps_transport_actor::{ClientOptions, ProvisioningClient, TransportConfig};
use serde_json::json;

const KEY: &str = dps_mock_broker::TEST_SYMMETRIC_KEY;

/// The device application under test: it provisions with a symmetric key and returns the hub
/// it was assigned to. Its settings are what a test changes.
struct DeviceApp {
    endpoint: String,
    ca_pem: String,
    response_timeout: Duration,
    options: ClientOptions,
}

impl DeviceApp {
    /// The app pointed at `broker`, with what makes timed behaviour fast in a test: no floor
    /// between requests, a small cap, no jitter, short deadlines. The transport runs on real
    /// time, so these (and the broker's retry-after) are what set a test's pace.
    fn against(broker: &BrokerHandle) -> Self {
        Self {
            endpoint: broker.mqtts_uri(),
            ca_pem: broker.ca_pem().unwrap().to_owned(),
            response_timeout: Duration::from_secs(5),
            options: ClientOptions {
                min_interval: Duration::ZERO,
                max_interval: Duration::from_millis(100),
                jitter: false,
                deadline: Duration::from_secs(10),
                close_grace: Duration::from_millis(200),
                ..ClientOptions::default()
            },
        }
    }

    async fn provision(&self, registration_id: &str) -> Result<String, ProvisioningError> {
        let config = TransportConfig::builder(Protocol::Mqtt)
            .ca_pem(self.ca_pem.clone())
            .response_timeout(self.response_timeout)
            .build()?;
        let client =
            ProvisioningClient::start(config, SymmetricKey::new(KEY)?, self.options.clone())?;
        let request = RegistrationRequest::new(dps_mock_broker::DEFAULT_ID_SCOPE, registration_id)
            .with_endpoint(&self.endpoint);
        let result = client.register(request).await?;
        Ok(result
            .registration_state
            .and_then(|state| state.assigned_hub)
            .unwrap_or_default())
    }
}

/// A mock DPS that knows `my-device`'s key and answers its requests from `steps`, then as DPS
/// does (`202 assigning` with retry-after 0, then `200 assigned`).
fn dps(steps: DeviceScript) -> BrokerHandle {
    MockBroker::builder()
        .symmetric_key("my-device", KEY)
        .retry_after(0)
        .script(Script::new().device("my-device", steps))
        .start()
        .unwrap()
}

#[actix_rt::test]
async fn throttled_twice_then_assigned() {
    let broker = dps(DeviceScript::new()
        .request(Step::respond(429).with_retry_after(0))
        .request(Step::respond(429).with_retry_after(0)));

    let hub = DeviceApp::against(&broker)
        .provision("my-device")
        .await
        .unwrap();
    assert_eq!(hub, dps_mock_broker::DEFAULT_ASSIGNED_HUB);

    // What the service saw: three registers (two throttled), then one poll.
    let record = &broker.records()[0];
    let responses = record.responses();
    let statuses: Vec<u16> = responses.iter().filter_map(|r| r.status()).collect();
    assert_eq!(statuses, [429, 429, 202, 200]);
    let requests = record.requests();
    assert!(requests[..3].iter().all(|r| r.is_register()) && requests[3].is_poll());
    // Each request came no sooner than the retry-after of the answer before it.
    for (answer, next) in responses.iter().zip(&requests[1..]) {
        let seconds = answer
            .retry_after()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        assert!(next.at >= answer.at + Duration::from_secs(seconds));
    }
}

#[actix_rt::test]
async fn a_401_with_error_code_401002_is_unauthorized() {
    let refusal = json!({
        "errorCode": 401002,
        "trackingId": "trk-1",
        "message": "The device is not authorized.",
        "timestampUtc": "2026-12-02T00:00:00Z",
    });
    let broker = dps(DeviceScript::new().request(Step::respond(401).with_body(refusal)));

    let error = DeviceApp::against(&broker)
        .provision("my-device")
        .await
        .unwrap_err();
    assert!(error.is_unauthorized(), "{error}");
    let details = error.service_error().unwrap();
    assert_eq!(details.error_code, Some(401002));
    assert_eq!(details.tracking_id.as_deref(), Some("trk-1"));
    // The service's verdict is final: no second register.
    assert_eq!(broker.records()[0].requests().len(), 1);
}

#[actix_rt::test]
async fn a_silent_service_ends_at_the_deadline() {
    let silent = (0..20).fold(DeviceScript::new(), |s, _| s.request(Step::Silent));
    let broker = dps(silent);
    let mut app = DeviceApp::against(&broker);
    app.response_timeout = Duration::from_millis(300);
    app.options.deadline = Duration::from_secs(1);

    let error = app.provision("my-device").await.unwrap_err();
    // The deadline ended it, and says what the last attempt ran into.
    let ProvisioningError::Timeout {
        stage: Stage::Registration,
        last_failure: Some(last),
        ..
    } = &error
    else {
        panic!("{error:?}")
    };
    assert!(matches!(
        **last,
        ProvisioningError::Timeout {
            stage: Stage::Response,
            ..
        }
    ));

    // Each unanswered register was sent again after its response timeout, and the app
    // disconnected at the end. `wait_for` waits without blocking the test's thread.
    let records = broker
        .wait_for(Duration::from_secs(5), |records| {
            records.iter().all(|r| r.is_closed())
        })
        .await
        .expect("the app closes its connection");
    let requests = records[0].requests();
    assert!(requests.len() >= 2 && requests.iter().all(|r| r.is_register()));
}
// guide:end

/// The guide quotes this file's tests as they are.
#[test]
fn the_guide_shows_these_tests_as_they_are() {
    let this = include_str!("device_app.rs");
    let start = this.find("// guide:start\n").unwrap() + "// guide:start\n".len();
    let end = this.find("// guide:end").unwrap();
    let guide = include_str!("../../mock-broker/README.md");
    assert!(
        guide.contains(&this[start..end]),
        "mock-broker/README.md must quote transport-actor/tests/device_app.rs between its guide markers"
    );
}
