//! The tests of `pacer`.

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Takes the next ticket and sends it at `at` if it is due by then.
fn send(pacer: &mut Pacer, at: Instant) -> Option<u64> {
    let ticket = pacer.ticket();
    (pacer.due(ticket, at) <= at).then(|| {
        pacer.went(ticket, at);
        ticket
    })
}

#[test]
fn slow_start_spaces_tickets_by_a_rate_that_grows_with_each_admission() {
    let t0 = Instant::now();
    let mut pacer = Pacer::new(PacerOptions {
        initial_rate: 10.0,
        ..PacerOptions::default()
    });
    let tickets: Vec<u64> = (0..4).map(|_| pacer.ticket()).collect();
    assert_eq!(tickets, [0, 1, 2, 3]);
    assert_eq!(pacer.due(0, t0), t0);
    assert_eq!(pacer.due(3, t0), t0 + ms(300));
    pacer.went(0, t0);
    // One admission adds SLOW_START_STEP: the waiting tickets come sooner, counted from
    // the next one not yet gone.
    pacer.admitted(0, t0);
    assert_eq!(pacer.rate(), 18.0);
    let sooner = pacer.due(3, t0);
    assert!(sooner < t0 + ms(300), "{:?}", sooner - t0);
    assert_eq!(
        pacer.due(1, t0),
        t0 + ms(100),
        "the next ticket keeps its time"
    );
    // Long idle, the next ticket is due at once.
    let later = t0 + Duration::from_secs(60);
    pacer.went(3, later);
    pacer.admitted(3, later);
    assert_eq!(pacer.due(4, later), later);
}

#[test]
fn the_first_refusal_sets_the_limit_to_what_the_service_admitted_over_the_last_second() {
    let t0 = Instant::now();
    let mut pacer = Pacer::new(PacerOptions::default());
    // 120 sent and admitted over 600 ms; the 121st is refused.
    for i in 0..120 {
        let at = t0 + ms(5 * i);
        pacer.went(i, at);
        pacer.admitted(i, at);
    }
    assert_eq!(pacer.rate(), 50.0 + 120.0 * SLOW_START_STEP);
    let refused = pacer.ticket();
    pacer.went(refused, t0 + ms(600));
    pacer.refused(refused, t0 + ms(601));
    assert_eq!(pacer.rate(), 120.0);
    // Admissions older than a second do not count.
    let mut pacer = Pacer::new(PacerOptions::default());
    for i in 0..100 {
        pacer.admitted(i, t0 + ms(i));
    }
    pacer.refused(100, t0 + ms(1_049));
    assert_eq!(pacer.rate(), 50.0, "the 50 admitted in the last second");
    // Refused before anything was admitted, there is no measure: a quarter off.
    let mut pacer = Pacer::new(PacerOptions::default());
    pacer.refused(0, t0);
    assert_eq!(pacer.rate(), 37.5);
}

/// A pacer whose limit is `limit` a second, found at `t0` (nothing sent in the last second).
fn limited(limit: u64, t0: Instant) -> Pacer {
    let mut pacer = Pacer::new(PacerOptions::default());
    let before = t0 - Duration::from_secs(2);
    for i in 0..limit {
        pacer.admitted(i, before);
    }
    pacer.refused(limit, before + ms(500));
    assert_eq!(pacer.rate(), limit as f64);
    // The tickets taken so far are spent.
    pacer.next_ticket = limit + 1;
    pacer.granted = limit + 1;
    pacer
}

#[test]
fn with_a_limit_at_most_that_many_go_in_any_second_each_as_a_slot_frees() {
    let t0 = Instant::now();
    let mut pacer = limited(3, t0);
    // Three go at once: the window is empty.
    let burst: Vec<_> = (0..3).map(|i| send(&mut pacer, t0 + ms(i))).collect();
    assert!(burst.iter().all(Option::is_some), "{burst:?}");
    // The fourth and fifth wait for the first and second slots to free, a second after
    // they went.
    let fourth = pacer.ticket();
    let fifth = pacer.ticket();
    assert_eq!(pacer.due(fourth, t0 + ms(10)), t0 + ms(1_000));
    assert_eq!(pacer.due(fifth, t0 + ms(10)), t0 + ms(1_001));
    // The seventh needs a slot the fourth will hold: a window from now at least.
    let seventh = (0..2).map(|_| pacer.ticket()).last().unwrap();
    assert_eq!(pacer.due(seventh, t0 + ms(10)), t0 + ms(1_010));
    // A register the service refused does not hold its slot: the fourth goes now. (This
    // refusal comes within a second of a cut, so it does not cut again.)
    let second = burst[1].unwrap();
    pacer.last_cut = Some(t0);
    pacer.refused(second, t0 + ms(20));
    assert_eq!(pacer.rate(), 3.0);
    assert_eq!(pacer.due(fourth, t0 + ms(20)), t0 + ms(20));
    pacer.went(fourth, t0 + ms(20));
    assert_eq!(pacer.due(fifth, t0 + ms(30)), t0 + ms(1_000));
}

#[test]
fn the_window_is_stretched_by_the_slowest_round_trip_of_the_last_second() {
    let t0 = Instant::now();
    let mut pacer = limited(2, t0);
    let first = send(&mut pacer, t0).unwrap();
    let second = send(&mut pacer, t0).unwrap();
    pacer.admitted(first, t0 + ms(3));
    pacer.admitted(second, t0 + ms(40));
    let third = pacer.ticket();
    assert_eq!(pacer.due(third, t0 + ms(50)), t0 + ms(1_040));
    // Still in the log a second after it went: the pacer's second is longer.
    assert_eq!(pacer.due(third, t0 + ms(1_020)), t0 + ms(1_040));
    pacer.went(third, t0 + ms(1_020));
    assert_eq!(pacer.sent.len(), 3, "the first two kept for their guard");
    // The slowest leaves with its second: then the next slowest of those left counts.
    let mut pacer = limited(10, t0);
    for (went, answered) in [(0, 3), (0, 40), (100, 110), (1_040, 1_045)] {
        let ticket = send(&mut pacer, t0 + ms(went)).unwrap();
        pacer.admitted(ticket, t0 + ms(answered));
    }
    assert_eq!(
        pacer.guard,
        ms(10),
        "the third's 10 ms; the second's 40 ms left"
    );
    // A round trip never stretches it by more than MAX_GUARD.
    let mut pacer = limited(1, t0);
    let slow = send(&mut pacer, t0).unwrap();
    pacer.admitted(slow, t0 + Duration::from_secs(5));
    assert_eq!(pacer.guard, MAX_GUARD);
}

#[test]
fn a_later_refusal_takes_at_least_one_off_and_never_more_than_half() {
    let t0 = Instant::now();
    let mut pacer = limited(200, t0);
    (0..300).for_each(|_| {
        pacer.ticket();
    });
    // 210 admitted over the last second, the limit grown past 201, then a refusal: one
    // off, though more than that were admitted.
    for i in 0..210 {
        pacer.admitted(1_000 + i, t0 + ms(2 * i));
    }
    let grown = pacer.rate();
    assert!(grown > 201.0 && grown < 201.5, "{grown}");
    pacer.refused(5_000, t0 + ms(450));
    assert_eq!(pacer.rate(), 200.0, "floor({grown}) - 1");
    // More refusals of the same burst are the same signal.
    pacer.refused(5_001, t0 + ms(900));
    assert_eq!(pacer.rate(), 200.0);
    // Exactly a second after the cut, a refusal is a new signal; with nothing admitted in
    // the last second, no more than half off.
    pacer.refused(5_002, t0 + ms(1_450));
    assert_eq!(pacer.rate(), 100.0);
    // 60 admitted: down to them.
    let at = t0 + Duration::from_secs(20);
    for i in 0..60 {
        pacer.admitted(6_000 + i, at);
    }
    pacer.refused(6_100, at + ms(1));
    assert_eq!(pacer.rate(), 60.0);
}

#[test]
fn a_second_of_admissions_without_a_refusal_adds_half_a_percent_while_enough_wait() {
    let t0 = Instant::now();
    let mut pacer = limited(200, t0);
    // 199 registers waiting: fewer than the limit lets go in a second, no probing.
    (0..199).for_each(|_| {
        pacer.ticket();
    });
    for i in 0..100 {
        pacer.admitted(1_000 + i, t0 + ms(5 * i));
    }
    assert_eq!(pacer.rate(), 200.0);
    // More waiting: each admission adds its share.
    (0..10).for_each(|_| {
        pacer.ticket();
    });
    for i in 100..300 {
        pacer.admitted(1_000 + i, t0 + ms(5 * i));
    }
    let grown = pacer.rate();
    assert!((grown - 201.0).abs() < 0.01, "{grown}");
}

#[test]
fn a_limit_cut_deep_grows_by_at_least_one_a_second() {
    let t0 = Instant::now();
    let mut pacer = limited(6, t0);
    (0..100).for_each(|_| {
        pacer.ticket();
    });
    // Six admissions, a second's worth at 6 a second: one more.
    for i in 0..6 {
        pacer.admitted(1_000 + i, t0 + ms(150 * i));
    }
    assert!((pacer.rate() - 7.0).abs() < 0.1, "{}", pacer.rate());
}

#[test]
fn the_pace_stays_within_its_bounds() {
    let t0 = Instant::now();
    let options = PacerOptions {
        initial_rate: 2.0,
        min_rate: 1.0,
        max_rate: 30.0,
    };
    let mut pacer = Pacer::new(options);
    for i in 0..10 {
        pacer.admitted(i, t0);
    }
    assert_eq!(pacer.rate(), 30.0);
    // 100 admitted in the last second, but no more than max_rate.
    for i in 0..100 {
        pacer.admitted(i, t0);
    }
    pacer.refused(200, t0);
    assert_eq!(pacer.rate(), 30.0);
    for i in 1..10 {
        pacer.refused(200 + i, t0 + Duration::from_secs(2 * i));
    }
    assert_eq!(pacer.rate(), 1.0);
    let initial = |initial_rate| {
        Pacer::new(PacerOptions {
            initial_rate,
            ..options
        })
        .rate()
    };
    assert_eq!(initial(0.0), 1.0);
    assert_eq!(initial(99.0), 30.0);
}

#[test]
fn the_log_of_sent_registers_holds_a_window_at_most() {
    let t0 = Instant::now();
    let mut pacer = Pacer::new(PacerOptions::unpaced());
    for i in 0..5_000 {
        let at = t0 + ms(i);
        pacer.went(i, at);
        pacer.admitted(i, at);
    }
    assert_eq!(pacer.sent.len(), 1_000);
    assert_eq!(pacer.admitted_at.len(), 1_000);
}

#[test]
fn unpaced_every_ticket_is_due_at_once_until_a_refusal() {
    let t0 = Instant::now();
    let mut pacer = Pacer::new(PacerOptions::unpaced());
    for i in 0..1_000 {
        assert_eq!(send(&mut pacer, t0), Some(i));
        pacer.admitted(i, t0);
    }
    pacer.refused(1_000, t0 + ms(1));
    assert_eq!(pacer.rate(), 1_000.0);
    let next = pacer.ticket();
    assert!(pacer.due(next, t0 + ms(2)) > t0 + ms(2));
}

#[test]
fn an_unreachable_service_gets_probes_spaced_wider_and_the_pace_resumes_when_it_answers() {
    let t0 = Instant::now();
    let mut pacer = Pacer::new(PacerOptions {
        initial_rate: 100.0,
        ..PacerOptions::default()
    });
    // A quota learned before the outage: registers admitted as they fall due, then a 429.
    let mut at = t0;
    for _ in 0..40 {
        let ticket = pacer.ticket();
        at = pacer.due(ticket, at);
        pacer.went(ticket, at);
        pacer.admitted(ticket, at);
    }
    let ticket = pacer.ticket();
    at = pacer.due(ticket, at);
    pacer.went(ticket, at);
    pacer.refused(ticket, at);
    let limit = pacer.limit.expect("the 429 set a limit");

    // The service goes away: the first register that finds it gone starts the probes.
    let t1 = at + ms(2_000);
    let lost = send(&mut pacer, t1).unwrap();
    pacer.unreachable(lost);
    assert!(pacer.in_outage());
    let (a, b, c) = (pacer.ticket(), pacer.ticket(), pacer.ticket());
    assert_eq!(pacer.due(a, t1), t1, "the first probe goes at once");
    pacer.went(a, t1);
    assert_eq!(pacer.due(b, t1), t1 + outage::FIRST_PROBE);
    assert_eq!(
        pacer.due(c, t1),
        t1 + outage::FIRST_PROBE * 2,
        "one at a time"
    );
    // Each failed probe doubles the spacing, up to a second.
    for _ in 0..10 {
        pacer.unreachable(a);
    }
    assert_eq!(pacer.due(b, t1), t1 + outage::MAX_PROBE);
    // Over a 15 s outage, at most one probe a second once the spacing is wide: no storm.
    let mut probes = 0;
    let mut at = t1;
    while at < t1 + ms(15_000) {
        let ticket = pacer.ticket();
        at = pacer.due(ticket, at);
        pacer.went(ticket, at);
        pacer.unreachable(ticket);
        probes += 1;
    }
    assert!(probes <= 16, "{probes} probes in 15 s");

    // The service answers: the pace it had resumes at once.
    let back = pacer.ticket();
    let t2 = pacer.due(back, at);
    pacer.went(back, t2);
    pacer.admitted(back, t2);
    assert!(!pacer.in_outage());
    assert_eq!(pacer.rate(), limit, "an outage is not a smaller quota");
    let next = pacer.ticket();
    assert!(pacer.due(next, t2) <= t2 + ms(50));
}

#[test]
fn growth_speeds_up_after_quiet_seconds_so_a_station_claims_room_others_left() {
    let t0 = Instant::now();
    let mut pacer = Pacer::new(PacerOptions::default());
    // A share of 60 a second learned from a 429.
    let mut at = t0;
    for _ in 0..60 {
        let ticket = pacer.ticket();
        at = pacer.due(ticket, at).max(at);
        pacer.went(ticket, at);
        pacer.admitted(ticket, at);
    }
    let ticket = pacer.ticket();
    pacer.went(ticket, at);
    pacer.refused(ticket, at);
    let share = pacer.limit.unwrap();
    let cut_at = at;
    // Many registers wait; every one sent is admitted: nobody else is there any more.
    let waiting: Vec<u64> = (0..2_000).map(|_| pacer.ticket()).collect();
    let limit_after = |pacer: &mut Pacer, seconds: u64, at: &mut Instant, next: &mut usize| {
        while *at < cut_at + ms(seconds * 1_000) {
            let ticket = waiting[*next];
            *at = pacer.due(ticket, *at).max(*at);
            pacer.went(ticket, *at);
            pacer.admitted(ticket, *at);
            *next += 1;
        }
        pacer.limit.unwrap()
    };
    let mut next = 0;
    let gentle = limit_after(&mut pacer, QUIET.as_secs(), &mut at, &mut next);
    assert!(
        gentle - share <= QUIET.as_secs() as f64 + 1.0,
        "gentle at first: {share} -> {gentle}"
    );
    let later = limit_after(&mut pacer, QUIET.as_secs() + 5, &mut at, &mut next);
    // 2 + 4 + 8 + 16 + 16 a second over the five quiet seconds, not 5.
    assert!(later - gentle > 30.0, "{gentle} -> {later}");
    // A refusal ends it: growth is gentle again.
    let ticket = waiting[next];
    pacer.went(ticket, at);
    pacer.refused(ticket, at);
    let cut = pacer.limit.unwrap();
    next += 1;
    let start = at;
    while at < start + ms(1_000) {
        let ticket = waiting[next];
        at = pacer.due(ticket, at).max(at);
        pacer.went(ticket, at);
        pacer.admitted(ticket, at);
        next += 1;
    }
    assert!(
        pacer.limit.unwrap() - cut <= 2.0,
        "{cut} -> {}",
        pacer.limit.unwrap()
    );
}

#[test]
fn a_place_its_client_gave_up_leaves_the_queue() {
    let t0 = Instant::now();
    let mut pacer = Pacer::new(PacerOptions {
        initial_rate: 10.0,
        ..PacerOptions::default()
    });
    let (a, b, c, d) = (
        pacer.ticket(),
        pacer.ticket(),
        pacer.ticket(),
        pacer.ticket(),
    );
    assert_eq!(pacer.due(c, t0), t0 + ms(200));
    // The first two clients give up waiting: the third is next.
    pacer.abandon(a);
    pacer.abandon(b);
    assert_eq!(pacer.ahead_of(c), 0);
    assert_eq!(pacer.waiting(), 2);
    // One behind that gives up too leaves no gap once the one before it goes.
    let e = pacer.ticket();
    pacer.abandon(d);
    pacer.went(c, t0);
    assert_eq!(pacer.ahead_of(e), 0, "d's place is gone");
    assert!(
        pacer.abandoned.is_empty(),
        "nothing kept below the granted tickets"
    );
    // A ticket that already went is not abandoned.
    pacer.abandon(c);
    assert!(pacer.abandoned.is_empty());
}
