//! DPS's throttling limits over a real connection: what is over a quota is answered 429 with
//! a retry-after, and the handle counts what was admitted and throttled.

mod common;

use common::*;
use dps_messages::response::ResponseTopic;
use dps_mock_broker::{MockBroker, QuotaSummary, Quotas, TestPki};

#[test]
fn requests_over_a_quota_get_429_with_a_retry_after_and_are_counted() {
    let pki = std::sync::Arc::new(TestPki::generate().unwrap());
    let broker = std::sync::Arc::new(
        MockBroker::builder()
            .pki(pki.clone())
            .retry_after(0)
            .quotas(Quotas {
                registrations_per_minute: Some(120),
                polls_per_device: Some(5),
                ..Quotas::default()
            })
            .start()
            .unwrap(),
    );
    let shared = broker.clone();
    run(async move {
        let broker = &*shared;
        let mut client = connect(
            broker,
            Options::new(broker, "dev-1").identity(pki.device("dev-1").unwrap()),
        )
        .await
        .unwrap();
        client.subscribe().await;
        let answer = async |client: &mut Client, topic: &str, body: &[u8]| {
            client.publish(topic, body).await;
            let (topic, body) = client.next(LONG).await.unwrap();
            (ResponseTopic::parse(&topic).unwrap(), body)
        };
        let register = br#"{"registrationId":"dev-1"}"#;
        let (first, body) = answer(&mut client, &register_topic("r1"), register).await;
        assert_eq!(first.status, 202);
        let operation = body["operationId"].as_str().unwrap().to_owned();
        let (second, _) = answer(&mut client, &register_topic("r2"), register).await;
        assert_eq!(second.status, 202);
        let (third, body) = answer(&mut client, &register_topic("r3"), register).await;
        assert_eq!((third.status, third.rid.as_str()), (429, "r3"));
        // 120 a minute is 2 per second: a slot frees within the second.
        assert_eq!(third.retry_after.as_deref(), Some("1"));
        assert_eq!(body["errorCode"], 429_001);

        for i in 0..5 {
            let (polled, _) =
                answer(&mut client, &poll_topic(&format!("p{i}"), &operation), b" ").await;
            assert_eq!(polled.status, 200, "poll {i}");
        }
        let (sixth, _) = answer(&mut client, &poll_topic("p5", &operation), b" ").await;
        assert_eq!(sixth.status, 429);
        let wait: u64 = sixth.retry_after.as_deref().unwrap().parse().unwrap();
        assert!((5..=10).contains(&wait), "{wait}");
        client.sink.close();
    });
    assert_eq!(
        broker.quota_summary(),
        QuotaSummary {
            registrations_accepted: 2,
            registrations_throttled: 1,
            polls_accepted: 5,
            polls_throttled: 1,
        }
    );
}
