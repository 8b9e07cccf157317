//! Disconnect, in every state: unsubscribe, close, their failures, their grace, and the request that waits for them.

use super::*;

// SRS_NODE_PROVISIONING_MQTT_18_052: disconnect while disconnected answers at once.
#[test]
fn srs_18_052_disconnect_while_disconnected() {
    let mut h = H::new();
    let actions = h.command(Command::Disconnect {
        token: 9,
        grace: None,
    });
    assert_eq!(actions.len(), 1);
    assert!(done_of(&actions, 9).is_ok());
}

// SRS_NODE_PROVISIONING_MQTT_18_061: disconnect while connecting drops the connection and
// cancels the request behind it.
#[test]
fn srs_18_061_disconnect_while_connecting() {
    let mut h = H::new();
    let Action::Open { link, .. } = h.register(1, "r1")[0].clone() else {
        panic!()
    };
    h.link = link;
    let actions = h.command(Command::Disconnect {
        token: 2,
        grace: None,
    });
    assert!(matches!(
        response_of(&actions, 1),
        Err(ProvisioningError::OperationCancelled)
    ));
    assert!(done_of(&actions, 2).is_ok());
    assert!(abandons(&actions));
    assert_eq!(h.s.state(), State::Disconnected);
}

// SRS_NODE_PROVISIONING_MQTT_18_054: disconnect while connected and idle disconnects;
// SRS_NODE_PROVISIONING_MQTT_18_044: unsubscribing first;
// SRS_NODE_PROVISIONING_MQTT_18_045: then disconnecting.
#[test]
fn srs_18_054_18_044_18_045_disconnect_unsubscribes_then_disconnects() {
    let mut h = H::connected();
    let actions = h.command(Command::Disconnect {
        token: 9,
        grace: None,
    });
    assert!(
        matches!(&actions[..], [Action::Link(_, LinkAction::Unsubscribe)]),
        "{actions:?}"
    );
    assert_eq!(h.s.state(), State::Disconnecting);
    let actions = h.event(LinkEvent::Unsubscribed(Ok(())));
    assert!(
        matches!(&actions[..], [Action::Link(_, LinkAction::Close)]),
        "{actions:?}"
    );
    // The close done, the link is left for good, then the caller answered.
    let actions = h.event(LinkEvent::Closed(Ok(())));
    assert!(
        matches!(
            &actions[..],
            [Action::Abandon { .. }, Action::Reply { token: 9, .. }]
        ),
        "{actions:?}"
    );
    assert!(done_of(&actions, 9).is_ok());
    assert_eq!(h.s.state(), State::Disconnected);
}

// SRS_NODE_PROVISIONING_MQTT_18_048: a failed unsubscribe or disconnect is reported, the
// disconnect's error preferred.
#[test]
fn srs_18_048_disconnect_reports_failures_preferring_the_disconnect_error() {
    let unsub: ProvisioningError = TransportError::new(TransportErrorKind::Unsubscribe, "u").into();
    let disc: ProvisioningError = TransportError::new(TransportErrorKind::Disconnect, "d").into();
    for (u, d, expected) in [
        (
            Err(unsub.clone()),
            Ok(()),
            Some(TransportErrorKind::Unsubscribe),
        ),
        (
            Ok(()),
            Err(disc.clone()),
            Some(TransportErrorKind::Disconnect),
        ),
        (
            Err(unsub.clone()),
            Err(disc.clone()),
            Some(TransportErrorKind::Disconnect),
        ),
        (Ok(()), Ok(()), None),
    ] {
        let mut h = H::connected();
        h.command(Command::Disconnect {
            token: 9,
            grace: None,
        });
        h.event(LinkEvent::Unsubscribed(u));
        let result = done_of(&h.event(LinkEvent::Closed(d)), 9);
        let kind = result.err().map(|e| match e {
            ProvisioningError::Transport(t) => t.kind,
            other => panic!("{other:?}"),
        });
        assert_eq!(kind, expected);
    }
}

// SRS_NODE_PROVISIONING_MQTT_18_055: disconnect during a register cancels it and disconnects.
#[test]
fn srs_18_055_disconnect_during_register() {
    let mut h = H::in_request(1, "r1");
    let actions = h.command(Command::Disconnect {
        token: 2,
        grace: None,
    });
    assert!(matches!(
        response_of(&actions, 1),
        Err(ProvisioningError::OperationCancelled)
    ));
    assert!(matches!(
        actions.last(),
        Some(Action::Link(_, LinkAction::Unsubscribe))
    ));
    h.event(LinkEvent::Unsubscribed(Ok(())));
    assert!(done_of(&h.event(LinkEvent::Closed(Ok(()))), 2).is_ok());
}

// SRS_NODE_PROVISIONING_MQTT_18_056: disconnect during a poll cancels it and disconnects.
#[test]
fn srs_18_056_disconnect_during_poll() {
    let mut h = H::connected();
    h.poll(2, "p", "op");
    let actions = h.command(Command::Disconnect {
        token: 3,
        grace: None,
    });
    assert!(matches!(
        response_of(&actions, 2),
        Err(ProvisioningError::OperationCancelled)
    ));
    assert_eq!(h.s.state(), State::Disconnecting);
    // A second disconnect waits for the same close.
    assert!(
        h.command(Command::Disconnect {
            token: 4,
            grace: None
        })
        .is_empty()
    );
    h.event(LinkEvent::Unsubscribed(Ok(())));
    let actions = h.event(LinkEvent::Closed(Ok(())));
    assert!(done_of(&actions, 3).is_ok() && done_of(&actions, 4).is_ok());
}

// SRS_NODE_PROVISIONING_MQTT_18_048: a connection that breaks while it is being closed is the
// disconnect failing; a service that closes it first has done the disconnect's work.
#[test]
fn srs_18_048_a_connection_broken_during_the_disconnect_fails_it() {
    let mut h = H::connected();
    h.command(Command::Disconnect {
        token: 9,
        grace: None,
    });
    let err = done_of(&h.event(LinkEvent::ConnectionLost(lost())), 9).unwrap_err();
    assert_eq!(err.transport_kind(), Some(TransportErrorKind::Disconnect));
    assert!(
        err.to_string().contains("reset during the disconnect"),
        "{err}"
    );
    assert_eq!(h.s.state(), State::Disconnected);

    let mut h = H::connected();
    h.command(Command::Disconnect {
        token: 9,
        grace: None,
    });
    assert!(done_of(&h.event(LinkEvent::ClosedByService), 9).is_ok());
    assert_eq!(h.s.state(), State::Disconnected);

    // A protocol violation stays what it is.
    let mut h = H::connected();
    h.command(Command::Disconnect {
        token: 9,
        grace: None,
    });
    h.event(LinkEvent::Unsubscribed(Ok(())));
    let violation: ProvisioningError = ProtocolError::Violation("garbage".into()).into();
    let err = done_of(&h.event(LinkEvent::ConnectionLost(violation)), 9).unwrap_err();
    assert!(
        matches!(
            err,
            ProvisioningError::Protocol(ProtocolError::Violation(_))
        ),
        "{err:?}"
    );
}

/// A disconnect's grace bounds it: the link is dropped when it passes. A second disconnect
/// with a shorter grace shortens the wait; a longer one does not lengthen it.
#[test]
fn a_disconnect_grace_bounds_the_wait() {
    let grace = Duration::from_millis(300);
    let mut h = H::connected();
    h.command(Command::Disconnect {
        token: 8,
        grace: Some(Duration::from_secs(3)),
    });
    assert_eq!(h.s.poll_timeout(), Some(h.now + Duration::from_secs(3)));
    h.command(Command::Disconnect {
        token: 9,
        grace: Some(grace),
    });
    assert_eq!(h.s.poll_timeout(), Some(h.now + grace));
    h.command(Command::Disconnect {
        token: 10,
        grace: None,
    });
    assert_eq!(h.s.poll_timeout(), Some(h.now + grace));
    let actions = h.advance(grace);
    for token in [8, 9, 10] {
        assert!(matches!(
            done_of(&actions, token),
            Err(ProvisioningError::Timeout {
                stage: Stage::Disconnect,
                after,
                ..
            }) if after == grace
        ));
    }
    assert!(abandons(&actions));
    assert_eq!(h.s.state(), State::Disconnected);
}

/// A request sent during a disconnect waits for it, then connects again (the Node transport
/// defers it the same way); a second one meanwhile is refused.
#[test]
fn a_request_during_a_disconnect_starts_once_it_ends() {
    for end in [
        (|h: &mut H| {
            h.event(LinkEvent::Unsubscribed(Ok(())));
            h.event(LinkEvent::Closed(Ok(())))
        }) as fn(&mut H) -> Vec<Action>,
        |h| h.event(LinkEvent::ClosedByService),
        |h| h.event(LinkEvent::ConnectionLost(lost())),
        |h| h.advance(DISCONNECT),
    ] {
        let mut h = H::connected();
        h.command(Command::Disconnect {
            token: 9,
            grace: None,
        });
        let old = h.link;
        assert!(h.register(2, "r2").is_empty(), "the request waits");
        assert!(matches!(
            response_of(&h.register(3, "r3"), 3),
            Err(ProvisioningError::OperationInProgress)
        ));
        assert_eq!(h.s.state(), State::Disconnecting);
        let actions = end(&mut h);
        assert_eq!(
            replies(&actions).len(),
            1,
            "only the disconnect answers: {actions:?}"
        );
        let Some(Action::Open { link, .. }) = actions.last() else {
            panic!("{actions:?}")
        };
        assert_ne!(*link, old);
        assert_eq!(h.s.state(), State::Connecting);
    }
}

/// Found by the simulation (seed 7972): a request waiting for a disconnect to end survived a
/// second disconnect (a client closing after its deadline), and connected again after the
/// registration was over, its caller long gone. A disconnect or a cancel cancels it, as they
/// cancel a request in flight.
#[test]
fn a_disconnect_or_cancel_cancels_the_request_waiting_for_a_disconnect() {
    for second in [
        Command::Disconnect {
            token: 10,
            grace: None,
        },
        Command::Cancel { token: 10 },
    ] {
        let mut h = H::connected();
        h.command(Command::Disconnect {
            token: 9,
            grace: None,
        });
        assert!(h.register(2, "r2").is_empty(), "the request waits");
        let actions = h.command(second);
        assert!(matches!(
            response_of(&actions, 2),
            Err(ProvisioningError::OperationCancelled)
        ));
        // The disconnect ends; nothing connects again.
        h.event(LinkEvent::Unsubscribed(Ok(())));
        let actions = h.event(LinkEvent::Closed(Ok(())));
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Open { .. })),
            "{actions:?}"
        );
        assert_eq!(h.s.state(), State::Disconnected);
    }
}

/// A restart answers the request waiting for a disconnect too.
#[test]
fn a_restart_answers_the_request_waiting_for_a_disconnect() {
    let mut h = H::connected();
    h.command(Command::Disconnect {
        token: 9,
        grace: None,
    });
    h.register(2, "r2");
    h.s.abort(ProvisioningError::OperationCancelled);
    let actions = h.drain();
    assert!(done_of(&actions, 9).is_err());
    assert!(response_of(&actions, 2).is_err());
}

/// A second disconnect whose grace ends exactly when the first's does leaves the first's
/// deadline, and its error, as they were.
#[test]
fn a_disconnect_with_the_same_end_keeps_the_first_deadline() {
    let mut h = H::connected();
    h.command(Command::Disconnect {
        token: 8,
        grace: Some(Duration::from_secs(3)),
    });
    h.now += Duration::from_secs(1);
    h.command(Command::Disconnect {
        token: 9,
        grace: Some(Duration::from_secs(2)),
    });
    let actions = h.advance(Duration::from_secs(2));
    assert!(matches!(
        done_of(&actions, 9),
        Err(ProvisioningError::Timeout { after, .. }) if after == Duration::from_secs(3)
    ));
}
