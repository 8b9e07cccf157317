//! A fleet provisioned from one process against the mock DPS with its quotas on: every device
//! gets exactly one outcome, the pace finds the quota, and one device's failure is its own.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use dps_messages::{Protocol, RegistrationRequest, SymmetricKey};
use dps_mock_broker::script::{DeviceScript, Step};
use dps_mock_broker::{Quotas, Script};
use dps_transport_actor::ClientOptions;
use dps_transport_actor::fleet::{Fleet, FleetDevice, FleetOptions, PacerOptions};

fn devices(f: &Fixture, n: usize) -> Vec<FleetDevice> {
    (0..n)
        .map(|i| {
            let id = format!("fleet-{i:03}");
            FleetDevice {
                request: RegistrationRequest::new(SCOPE, &id)
                    .with_endpoint(f.broker.uri(Protocol::Mqtt).unwrap()),
                auth: SymmetricKey::from_group_key(GROUP_KEY, &id).unwrap().into(),
            }
        })
        .collect()
}

fn options(concurrency: usize, initial_rate: f64) -> FleetOptions {
    FleetOptions {
        concurrency,
        runtimes: 2,
        client: ClientOptions {
            min_interval: Duration::ZERO,
            max_interval: Duration::from_millis(50),
            deadline: LONG,
            ..ClientOptions::default()
        },
        pacing: PacerOptions {
            initial_rate,
            ..PacerOptions::default()
        },
    }
}

/// 60 devices against a quota of 20 registrations a second, starting at twice that: the
/// service refuses some, the pace comes down, every device is assigned once, and the counts
/// agree with the broker's.
#[actix_rt::test]
async fn a_fleet_over_the_quota_slows_down_and_every_device_is_assigned_once() {
    let f = Fixture::start_with(Script::new(), |b| {
        b.quotas(Quotas {
            registrations_per_minute: Some(1_200),
            ..Quotas::default()
        })
    });
    let config = f.builder(Protocol::Mqtt);
    let mut run = Fleet::provision(config, devices(&f, 60), options(30, 40.0)).unwrap();
    let mut seen = HashSet::new();
    while let Some(outcome) = run.outcomes.recv().await {
        let result = outcome.result.unwrap();
        assert_eq!(result.status, dps_messages::RegistrationStatus::Assigned);
        assert!(seen.insert(outcome.registration_id), "one outcome each");
    }
    assert_eq!(seen.len(), 60);
    let progress = run.progress.snapshot();
    let quota = f.broker.quota_summary();
    assert_eq!(
        (progress.total, progress.finished, progress.assigned),
        (60, 60, 60)
    );
    assert_eq!(
        progress.refused,
        quota.throttled(),
        "{progress:?} {quota:?}"
    );
    assert_eq!(
        progress.registers,
        quota.registrations_accepted + quota.registrations_throttled
    );
    assert!(
        progress.refused > 0,
        "the start was over the quota: {progress:?}"
    );
    assert!(progress.rate < 40.0, "the pace came down: {progress:?}");
}

/// A device the service refuses is its own outcome; the others are assigned.
#[actix_rt::test]
async fn a_device_that_fails_among_many_is_its_own_outcome() {
    let script = Script::new().device("fleet-007", DeviceScript::new().request(Step::respond(401)));
    let f = Fixture::start(script);
    let mut run = Fleet::provision(
        f.builder(Protocol::Mqtt),
        devices(&f, 20),
        options(8, 500.0),
    )
    .unwrap();
    let mut failed = Vec::new();
    let mut assigned = 0;
    while let Some(outcome) = run.outcomes.recv().await {
        match outcome.result {
            Ok(_) => assigned += 1,
            Err(e) => failed.push((outcome.registration_id, e.is_unauthorized())),
        }
    }
    assert_eq!(assigned, 19);
    assert_eq!(failed, vec![("fleet-007".to_owned(), true)]);
    assert_eq!(run.progress.snapshot().assigned, 19);
}

/// A device whose deadline passes while its register waits for the pace is not registered
/// after all: the client gave up, so the service never hears of it.
#[actix_rt::test]
async fn a_register_still_waiting_when_its_deadline_passes_is_never_sent() {
    let f = Fixture::start(Script::new());
    let mut options = options(3, 1.0);
    // One register a second, whatever the service says; each device gives up after 400 ms.
    options.pacing.max_rate = 1.0;
    options.client.deadline = Duration::from_millis(400);
    let started = std::time::Instant::now();
    let mut run = Fleet::provision(f.builder(Protocol::Mqtt), devices(&f, 3), options).unwrap();
    let mut outcomes = Vec::new();
    while let Some(outcome) = run.outcomes.recv().await {
        outcomes.push(outcome.result.is_ok());
    }
    outcomes.sort();
    assert_eq!(outcomes, [false, false, true], "the first went at once");
    // The other two were due one and two seconds in; wait past that, then look.
    let past = started + Duration::from_millis(2_500);
    tokio::time::sleep_until(past.into()).await;
    assert_eq!(
        f.broker.records().len(),
        1,
        "only the first device ever connected"
    );
    assert_eq!(run.progress.snapshot().registers, 1);
}

/// The service goes away for three seconds while 300 devices provision, and comes back on the
/// same address: meanwhile the fleet probes instead of storming (each device's own retries are
/// 50 ms apart here, so without the probes 50 devices would try 1,000 times a second), and every
/// device still ends assigned, once.
#[actix_rt::test]
async fn an_outage_mid_run_is_probed_not_stormed_and_every_device_ends_assigned_once() {
    use dps_mock_broker::{MockBroker, TestPki};
    use std::sync::Arc;

    let pki = Arc::new(TestPki::generate().unwrap());
    let start = |addr: std::net::SocketAddr| {
        MockBroker::builder()
            .pki(pki.clone())
            .listen(addr)
            .ws_listen(None)
            .retry_after(0)
            .group_key(GROUP_KEY)
            .quotas(Quotas {
                registrations_per_minute: Some(6_000),
                ..Quotas::default()
            })
            .start()
            .unwrap()
    };
    let first = start("127.0.0.1:0".parse().unwrap());
    let addr = first.addr();
    let config = dps_transport_actor::TransportConfig::builder(Protocol::Mqtt)
        .ca_pem(pki.ca_pem())
        .timeouts(dps_transport_actor::Timeouts {
            connect: Duration::from_secs(2),
            subscribe: Duration::from_secs(2),
            publish_ack: Duration::from_secs(2),
            response: Duration::from_secs(2),
            disconnect: Duration::from_secs(2),
        });
    let devices: Vec<FleetDevice> = (0..300)
        .map(|i| {
            let id = format!("outage-{i:03}");
            FleetDevice {
                request: RegistrationRequest::new(SCOPE, &id)
                    .with_endpoint(format!("mqtts://{addr}")),
                auth: SymmetricKey::from_group_key(GROUP_KEY, &id).unwrap().into(),
            }
        })
        .collect();
    let mut run = Fleet::provision(config, devices, options(50, 100.0)).unwrap();
    let mut first = Some(first);
    let mut seen = HashSet::new();
    let mut outage: Option<(
        dps_transport_actor::fleet::ProgressSnapshot,
        std::time::Instant,
    )> = None;
    let mut during = None;
    let mut second = None;
    loop {
        let next = tokio::time::timeout(Duration::from_millis(100), run.outcomes.recv()).await;
        match next {
            Ok(Some(outcome)) => {
                let result = outcome
                    .result
                    .unwrap_or_else(|e| panic!("{}: {e}", outcome.registration_id));
                assert_eq!(result.status, dps_messages::RegistrationStatus::Assigned);
                assert!(seen.insert(outcome.registration_id), "one outcome each");
            }
            Ok(None) => break,
            Err(_) => {}
        }
        // A third of the way in, the service goes away; three seconds later it is back.
        if seen.len() >= 100
            && let Some(broker) = first.take()
        {
            broker.stop();
            outage = Some((run.progress.snapshot(), std::time::Instant::now()));
        }
        if let Some((before, since)) = &outage
            && second.is_none()
            && since.elapsed() >= Duration::from_secs(3)
        {
            let now = run.progress.snapshot();
            let attempts = (now.registers + now.polls) - (before.registers + before.polls);
            during = Some((attempts, since.elapsed(), now.unreachable));
            second = Some(start(addr));
        }
    }
    assert_eq!(seen.len(), 300);
    let (attempts, lasted, unreachable) = during.expect("the outage happened");
    let per_second = attempts as f64 / lasted.as_secs_f64();
    eprintln!(
        "outage: {attempts} registers and polls in {lasted:?} ({per_second:.1}/s), {unreachable} unreachable"
    );
    assert!(unreachable > 0, "the fleet saw the outage");
    assert!(
        per_second < 40.0,
        "{attempts} attempts in {lasted:?}: a storm"
    );
}

/// Three fleets (three stations, each with its own pace, learning from 429s alone, starting
/// together at 15 a second each) share one quota of 60 registrations a second: every device of each is assigned once, and the service
/// refuses few of their requests (450 devices: about eight seconds). `bench/stations.sh` is the full-size run, with its timings.
#[actix_rt::test]
async fn three_stations_share_one_quota_learning_from_429s_alone() {
    let f = Fixture::start_with(Script::new(), |b| {
        b.quotas(Quotas {
            registrations_per_minute: Some(3_600),
            ..Quotas::default()
        })
    });
    let station = |s: usize| {
        let devices: Vec<FleetDevice> = (0..150)
            .map(|i| {
                let id = format!("station{s}-{i:03}");
                FleetDevice {
                    request: RegistrationRequest::new(SCOPE, &id)
                        .with_endpoint(f.broker.uri(Protocol::Mqtt).unwrap()),
                    auth: SymmetricKey::from_group_key(GROUP_KEY, &id).unwrap().into(),
                }
            })
            .collect();
        Fleet::provision(f.builder(Protocol::Mqtt), devices, options(30, 15.0)).unwrap()
    };
    let mut runs: Vec<_> = (0..3).map(station).collect();
    let mut seen = HashSet::new();
    for run in &mut runs {
        while let Some(outcome) = run.outcomes.recv().await {
            outcome.result.unwrap();
            assert!(seen.insert(outcome.registration_id), "one outcome each");
        }
    }
    assert_eq!(seen.len(), 450);
    let (requests, refused) = runs.iter().fold((0, 0), |(n, r), run| {
        let p = run.progress.snapshot();
        (n + p.registers + p.polls, r + p.refused)
    });
    let quota = f.broker.quota_summary();
    assert_eq!(
        refused,
        quota.throttled(),
        "the stations' counts are the service's"
    );
    eprintln!("three stations: {refused} of {requests} requests refused");
    // Most refusals come while the three slow starts find the quota (4-9 % seen here);
    // `bench/stations.sh` (700 devices each) stays under 3 %.
    assert!(
        refused * 100 < requests * 15,
        "{refused} of {requests} refused"
    );
}
