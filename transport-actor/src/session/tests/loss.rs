//! A connection that closes or breaks without being asked to.

use super::*;

#[test]
fn connection_lost_mid_request_answers_at_once_and_the_next_request_reconnects() {
    let mut h = H::in_request(1, "r1");
    let actions = h.event(LinkEvent::ConnectionLost(lost()));
    assert!(matches!(
        response_of(&actions, 1),
        Err(ProvisioningError::Transport(_))
    ));
    assert_eq!(h.s.state(), State::Disconnected);
    assert_eq!(h.s.poll_timeout(), None, "nothing is left to wait for");
    let old = h.link;
    let actions = h.register(2, "r2");
    let Action::Open { link, .. } = actions[0] else {
        panic!("{actions:?}")
    };
    assert_ne!(link, old);
    // Late events of the lost link are ignored.
    h.link = old;
    assert!(h.event(LinkEvent::Connected).is_empty());
}

#[test]
fn connection_lost_while_idle_or_connecting() {
    let mut h = H::connected();
    assert!(matches!(
        &h.event(LinkEvent::ConnectionLost(lost()))[..],
        [Action::Abandon { .. }]
    ));
    assert_eq!(h.s.state(), State::Disconnected);

    let mut h = H::new();
    let Action::Open { link, .. } = h.register(1, "r1")[0].clone() else {
        panic!()
    };
    h.link = link;
    let actions = h.event(LinkEvent::ConnectionLost(lost()));
    assert!(response_of(&actions, 1).is_err());
}

/// A lost connection is reported with what it interrupted, so that "connection lost" alone
/// never reaches a user. A loss before the PUBACK is the publish failing (SRS 18_004).
#[test]
fn a_lost_connection_names_the_stage_it_interrupted() {
    let closed = || LinkEvent::ClosedByService;
    let reset = || LinkEvent::ConnectionLost(lost());

    // Before the SUBACK.
    for event in [closed(), reset()] {
        let mut h = H::new();
        let Action::Open { link, .. } = h.register(1, "r1")[0].clone() else {
            panic!()
        };
        h.link = link;
        h.event(LinkEvent::Connected);
        let err = response_of(&h.event(event), 1).unwrap_err();
        assert_eq!(
            err.transport_kind(),
            Some(TransportErrorKind::ConnectionLost)
        );
        assert!(err.to_string().ends_with("before the SUBACK"), "{err}");
        assert_eq!(h.s.state(), State::Disconnected);
    }
    // Before the PUBACK.
    let mut h = H::in_request(1, "r1");
    let err = response_of(&h.event(closed()), 1).unwrap_err();
    assert_eq!(err.transport_kind(), Some(TransportErrorKind::Publish));
    assert_eq!(
        err.to_string(),
        "transport error: publish failed: the service closed the connection before the PUBACK"
    );
    // Waiting for the response.
    let mut h = H::in_request(1, "r1");
    h.event(LinkEvent::PublishAcked { rid: "r1".into() });
    let err = response_of(&h.event(reset()), 1).unwrap_err();
    assert_eq!(
        err.transport_kind(),
        Some(TransportErrorKind::ConnectionLost)
    );
    assert!(
        err.to_string()
            .ends_with("reset while waiting for the response"),
        "{err}"
    );
    // A protocol violation is reported as such, whatever the stage.
    let mut h = H::in_request(1, "r1");
    let violation: ProvisioningError = ProtocolError::Violation("Decoding error".into()).into();
    let err = response_of(&h.event(LinkEvent::ConnectionLost(violation)), 1).unwrap_err();
    assert!(
        matches!(
            err,
            ProvisioningError::Protocol(ProtocolError::Violation(_))
        ),
        "{err:?}"
    );
    // While idle, nobody waits: the link is left.
    let mut h = H::connected();
    assert!(matches!(&h.event(closed())[..], [Action::Abandon { .. }]));
    assert_eq!(h.s.state(), State::Disconnected);
}
