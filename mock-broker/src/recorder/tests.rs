//! Keeping records and waiting on them.

use std::sync::Arc;

use super::*;

#[test]
fn an_async_waiter_wakes_on_the_change_it_waits_for_and_gives_up_at_its_timeout() {
    let recorder = Arc::new(Recorder::new(None, true));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let changer = recorder.clone();
        let change = async move {
            // Let the waiter count itself in and wait first.
            tokio::task::yield_now().await;
            let id = changer.open(ConnectionRecord::for_test("dev"));
            changer.event(id, Event::Ping);
        };
        let wait = recorder.wait_for(Duration::from_secs(60), |r| {
            r.iter().any(|c| !c.events.is_empty())
        });
        let (records, ()) = tokio::join!(wait, change);
        let records = records.unwrap();
        assert_eq!(records[0].kinds().collect::<Vec<_>>(), vec![&Event::Ping]);
        let timed_out = recorder
            .wait_for(Duration::from_millis(10), |r| r.len() > 1)
            .await
            .expect_err("nothing came: the timeout ends the wait");
        assert_eq!(timed_out.seen.len(), 1);
    });
    assert_eq!(recorder.waiting.load(Ordering::SeqCst), 0);
}

#[test]
fn a_full_record_counts_what_it_no_longer_keeps() {
    let recorder = Recorder::new(None, true).with_max_events(2);
    let id = recorder.open(ConnectionRecord::for_test("chatty"));
    for _ in 0..5 {
        recorder.event(id, Event::Ping);
    }
    let held = &recorder.snapshot()[0];
    assert_eq!((held.events.len(), held.events_dropped), (2, 3));
}

#[test]
fn a_waiter_wakes_on_the_change_it_waits_for() {
    let recorder = Arc::new(Recorder::new(None, true));
    let waiter = {
        let recorder = recorder.clone();
        std::thread::spawn(move || {
            recorder.wait_until(Duration::from_secs(60), |r| {
                r.iter().any(|c| c.events.len() == 2)
            })
        })
    };
    // Changes made with nobody waiting wake nobody; once the waiter counts itself, each
    // change wakes it to look again.
    while recorder.waiting.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    let id = recorder.open(ConnectionRecord::for_test("dev"));
    recorder.event(id, Event::Disconnect);
    recorder.event(id, Event::Disconnect);
    let records = waiter.join().unwrap().unwrap();
    assert_eq!(records[0].events.len(), 2);
    assert_eq!(recorder.waiting.load(Ordering::SeqCst), 0);
}

#[test]
fn without_keep_ended_only_live_connections_stay() {
    let recorder = Recorder::new(None, false);
    let first = recorder.open(ConnectionRecord::for_test("one"));
    let second = recorder.open(ConnectionRecord::for_test("two"));
    recorder.event(first, Event::Disconnect);
    recorder.close(first, "gone");
    // Events and closes for a record that has left are ignored.
    recorder.event(first, Event::Ping);
    recorder.close(first, "again");
    recorder.event(second, Event::Ping);
    let third = recorder.open(ConnectionRecord::for_test("three"));
    let held = recorder.snapshot();
    let ids: Vec<(u64, &str)> = held.iter().map(|r| (r.id, r.client_id.as_str())).collect();
    assert_eq!(ids, vec![(1, "two"), (2, "three")]);
    assert_eq!(held[0].kinds().collect::<Vec<_>>(), vec![&Event::Ping]);
    assert_eq!((first, second, third), (0, 1, 2));

    // A connection refused before CONNACK is born ended and never held.
    let mut refused = ConnectionRecord::for_test("refused");
    refused.ended = Some("refused".into());
    assert_eq!(recorder.open(refused), 3);
    assert_eq!(recorder.snapshot().len(), 2);
}
