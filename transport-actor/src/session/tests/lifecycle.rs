//! What holds in every state: each stage's deadline, an abort, exactly one reply per request, and what the session shows.

use super::*;

#[test]
fn each_stage_times_out_with_its_own_stage_and_deadline() {
    // Connect.
    let mut h = H::new();
    h.register(1, "r");
    assert_eq!(h.s.poll_timeout(), Some(h.now + CONNECT));
    assert!(h.advance(CONNECT - Duration::from_millis(1)).is_empty());
    let actions = h.advance(Duration::from_millis(1));
    assert!(matches!(
        response_of(&actions, 1),
        Err(ProvisioningError::Timeout {
            stage: Stage::Connect,
            after: CONNECT,
            last_failure: None,
            attempts: 0,
        })
    ));
    assert!(abandons(&actions));

    // Subscribe.
    let mut h = H::new();
    let Action::Open { link, .. } = h.register(1, "r")[0].clone() else {
        panic!()
    };
    h.link = link;
    h.event(LinkEvent::Connected);
    let actions = h.advance(SUBSCRIBE);
    assert!(matches!(
        response_of(&actions, 1),
        Err(ProvisioningError::Timeout {
            stage: Stage::Subscribe,
            ..
        })
    ));
    assert_eq!(h.s.state(), State::Disconnected);

    // PUBACK: the link is dropped.
    let mut h = H::in_request(1, "r");
    let actions = h.advance(PUBACK);
    assert!(matches!(
        response_of(&actions, 1),
        Err(ProvisioningError::Timeout {
            stage: Stage::PublishAck,
            ..
        })
    ));
    assert!(abandons(&actions));
    assert_eq!(h.s.state(), State::Disconnected);

    // Response: the connection stays.
    let mut h = H::in_request(1, "r");
    h.event(LinkEvent::PublishAcked { rid: "r".into() });
    assert_eq!(h.s.poll_timeout(), Some(h.now + RESPONSE));
    let actions = h.advance(RESPONSE);
    assert!(matches!(
        response_of(&actions, 1),
        Err(ProvisioningError::Timeout {
            stage: Stage::Response,
            ..
        })
    ));
    assert!(!abandons(&actions));
    assert_eq!(h.s.state(), State::Connected);
    assert_eq!(h.s.poll_timeout(), None);

    // Disconnect: the link is dropped and the waiter told.
    let mut h = H::connected();
    h.command(Command::Disconnect {
        token: 9,
        grace: None,
    });
    let actions = h.advance(DISCONNECT);
    assert!(matches!(
        done_of(&actions, 9),
        Err(ProvisioningError::Timeout {
            stage: Stage::Disconnect,
            ..
        })
    ));
    assert!(abandons(&actions));
    assert_eq!(h.s.state(), State::Disconnected);
}

#[test]
fn abort_answers_everything_waiting() {
    let mut h = H::in_request(1, "r");
    let error: ProvisioningError =
        TransportError::new(TransportErrorKind::Shutdown, "restart").into();
    h.s.abort(error);
    let actions = h.drain();
    assert!(matches!(
        response_of(&actions, 1),
        Err(ProvisioningError::Transport(_))
    ));
    assert!(abandons(&actions));
    assert_eq!(h.s.state(), State::Disconnected);

    let mut h = H::connected();
    h.command(Command::Disconnect {
        token: 7,
        grace: None,
    });
    h.s.abort(ProvisioningError::OperationCancelled);
    assert!(done_of(&h.drain(), 7).is_err());
}

#[test]
fn every_request_gets_exactly_one_reply_whatever_the_event_order() {
    // An exhaustive walk: cut into each prefix of a full exchange with each fault, then replay
    // the whole exchange and let every deadline pass.
    type Fault = fn(&mut H) -> Vec<Action>;
    let faults: [Fault; 8] = [
        |h| h.event(LinkEvent::ConnectionLost(lost())),
        |h| h.event(LinkEvent::ClosedByService),
        |h| {
            let mut actions = h.command(Command::Disconnect {
                token: 52,
                grace: Some(Duration::from_millis(1)),
            });
            actions.extend(h.register(53, "r"));
            actions
        },
        |h| h.command(Command::Cancel { token: 50 }),
        |h| {
            h.command(Command::Disconnect {
                token: 51,
                grace: None,
            })
        },
        |h| h.advance(Duration::from_secs(60)),
        |h| h.event(LinkEvent::ConnectFailed(lost())),
        |h| h.event(response(500, "r", json!(null))),
    ];
    let steps: [fn(&mut H) -> Vec<Action>; 4] = [
        |h| h.event(LinkEvent::Connected),
        |h| h.event(LinkEvent::Subscribed),
        |h| h.event(LinkEvent::PublishAcked { rid: "r".into() }),
        |h| h.event(response(202, "r", json!({"status": "assigning"}))),
    ];
    for cut in 0..=steps.len() {
        for fault in faults {
            let mut h = H::new();
            let mut all = h.register(1, "r");
            let Action::Open { link, .. } = all[0].clone() else {
                panic!()
            };
            h.link = link;
            for step in &steps[..cut] {
                all.extend(step(&mut h));
            }
            all.extend(fault(&mut h));
            for step in &steps {
                all.extend(step(&mut h));
            }
            all.extend(h.advance(Duration::from_secs(600)));
            let count = replies(&all).iter().filter(|(t, _)| *t == 1).count();
            assert_eq!(count, 1, "cut {cut}: {all:?}");
            // Every link opened is abandoned once, but the one still in use.
            let opened = all
                .iter()
                .filter(|a| matches!(a, Action::Open { .. }))
                .count();
            let left = all
                .iter()
                .filter(|a| matches!(a, Action::Abandon { .. }))
                .count();
            let in_use = usize::from(h.s.state() != State::Disconnected);
            assert_eq!(opened, left + in_use, "cut {cut}: {all:?}");
        }
    }
}

#[test]
fn transitions_are_logged_only_when_the_state_changes() {
    assert!(log_transition(State::Connected, State::InRequest));
    assert!(!log_transition(State::Connected, State::Connected));
}

#[test]
fn debug_shows_the_state_and_the_deadline() {
    let mut h = H::new();
    assert_eq!(
        format!("{:?}", h.s),
        "Session { state: Disconnected, deadline: None }"
    );
    h.register(1, "r1");
    let shown = format!("{:?}", h.s);
    assert!(
        shown.contains("Connecting") && shown.contains("Connect"),
        "{shown}"
    );
}
