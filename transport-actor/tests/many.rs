//! Many actors at once, on one shared MQTT runtime thread.

mod common;

use common::*;
use dps_messages::{Protocol, QueryStatus, Register, RegistrationStatus, SymmetricKey};
use dps_mock_broker::Script;

#[actix_rt::test]
async fn a_thousand_actors_provision_concurrently() {
    const N: usize = 1_000;
    let f = Fixture::start(Script::new());
    // One configuration: one shared runtime thread and one parsed set of trust roots for all.
    let config = f.config(Protocol::Mqtt);
    let mut tasks = Vec::with_capacity(N);
    for i in 0..N {
        let id = format!("many-{i:04}");
        let key = SymmetricKey::from_group_key(GROUP_KEY, &id).unwrap();
        let transport = f.transport_with(config.clone(), key.into()).await;
        let request = f.request(Protocol::Mqtt, &id);
        tasks.push(actix_rt::spawn(async move {
            let registered = transport
                .send(Register {
                    request: request.clone(),
                })
                .await
                .unwrap()?;
            let operation_id = registered.result.operation_id.unwrap_or_default();
            transport
                .send(QueryStatus {
                    request,
                    operation_id,
                })
                .await
                .unwrap()
        }));
    }
    let mut assigned = 0;
    for task in tasks {
        let response = task.await.unwrap().unwrap();
        assert_eq!(response.result.status, RegistrationStatus::Assigned);
        assigned += 1;
    }
    assert_eq!(assigned, N);
    let records = f.broker.records();
    assert_eq!(records.len(), N, "one connection per actor");
    assert!(records.iter().all(|r| r.responses().len() == 2));
}
