//! Cancel, in every state.

use super::*;

// SRS_NODE_PROVISIONING_MQTT_18_030: cancel while disconnected answers at once.
#[test]
fn srs_18_030_cancel_while_disconnected() {
    let mut h = H::new();
    let actions = h.command(Command::Cancel { token: 9 });
    assert_eq!(actions.len(), 1);
    assert!(done_of(&actions, 9).is_ok());
    assert_eq!(h.s.state(), State::Disconnected);
}

// SRS_NODE_PROVISIONING_MQTT_18_062: cancel while connecting disconnects and cancels the
// request that started the connection.
#[test]
fn srs_18_062_cancel_while_connecting() {
    for subscribing in [false, true] {
        let mut h = H::new();
        let Action::Open { link, .. } = h.register(1, "r1")[0].clone() else {
            panic!()
        };
        h.link = link;
        if subscribing {
            h.event(LinkEvent::Connected);
        }
        let actions = h.command(Command::Cancel { token: 2 });
        assert!(matches!(
            response_of(&actions, 1),
            Err(ProvisioningError::OperationCancelled)
        ));
        assert!(done_of(&actions, 2).is_ok());
        assert!(abandons(&actions));
        assert_eq!(h.s.state(), State::Disconnected);
        // The old link's late events change nothing.
        assert!(h.event(LinkEvent::Subscribed).is_empty());
    }
}

// SRS_NODE_PROVISIONING_MQTT_18_032: cancel while connected and idle answers at once.
#[test]
fn srs_18_032_cancel_while_connected_idle() {
    let mut h = H::connected();
    let actions = h.command(Command::Cancel { token: 9 });
    assert_eq!(actions.len(), 1);
    assert!(done_of(&actions, 9).is_ok());
    assert_eq!(h.s.state(), State::Connected);
}

// SRS_NODE_PROVISIONING_MQTT_18_033: cancel during a register stops listening and the register
// ends with OperationCancelled.
#[test]
fn srs_18_033_cancel_during_register() {
    let mut h = H::in_request(1, "r1");
    let actions = h.command(Command::Cancel { token: 2 });
    assert!(matches!(
        response_of(&actions, 1),
        Err(ProvisioningError::OperationCancelled)
    ));
    assert!(done_of(&actions, 2).is_ok());
    assert_eq!(h.s.state(), State::Connected);
    // The response that comes after is not delivered to anyone.
    assert!(
        h.event(response(202, "r1", json!({"status": "assigning"})))
            .is_empty()
    );
}

// SRS_NODE_PROVISIONING_MQTT_18_034: cancel during a poll ends it with OperationCancelled.
#[test]
fn srs_18_034_cancel_during_poll() {
    let mut h = H::connected();
    h.poll(2, "p", "op");
    let actions = h.command(Command::Cancel { token: 3 });
    assert!(matches!(
        response_of(&actions, 2),
        Err(ProvisioningError::OperationCancelled)
    ));
    assert_eq!(h.s.state(), State::Connected);
}
