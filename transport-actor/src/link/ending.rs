//! How a connection ended, in the words the session needs.
//!
//! ntex-mqtt tells why its dispatcher stopped only to the connection's control service (the
//! client's `start` answers `Ok` whatever happened), and a publish or subscribe that was waiting
//! just fails with "Peer is disconnected". The link therefore keeps the control service's stop
//! reason, and reports every end of a connection from it: a clean close, a broken connection, or
//! a service that broke the protocol.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;

use dps_messages::ProvisioningError;
use dps_messages::error::{ProtocolError, TransportError, TransportErrorKind};
use ntex_mqtt::error::ProtocolError as MqttProtocolError;
use ntex_mqtt::{Control, Reason};

use crate::session::LinkEvent;
use crate::tls::rustls_error_in;

/// Why the link refused what the service sent, ending the connection.
#[derive(Debug)]
pub(super) struct Refused(pub(super) &'static str);

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ending {
    /// Closed cleanly, by either side.
    Clean,
    /// The connection broke: reset, timed out, or failed to read or write.
    Broken(String),
    /// The service sent something that is not MQTT, or that DPS never sends.
    Violation(String),
}

impl Ending {
    /// The ending a dispatcher's stop reason stands for.
    pub(super) fn of(reason: &Reason<Refused>) -> Self {
        match reason {
            Reason::Error(refused) => Ending::Violation(refused.get_ref().0.to_owned()),
            Reason::Protocol(error) => match error.get_ref() {
                MqttProtocolError::KeepAliveTimeout | MqttProtocolError::ReadTimeout => {
                    Ending::Broken("the service stopped answering (keep-alive timeout)".into())
                }
                other => Ending::Violation(other.to_string()),
            },
            Reason::PeerGone(gone) => match gone.err() {
                None => Ending::Clean,
                Some(error) => Ending::Broken(describe(error)),
            },
        }
    }

    /// The event for a connection that ended without being asked to.
    pub(super) fn unasked(self) -> LinkEvent {
        match self {
            Ending::Clean => LinkEvent::ClosedByService,
            Ending::Broken(why) => LinkEvent::ConnectionLost(
                TransportError::new(TransportErrorKind::ConnectionLost, why).into(),
            ),
            Ending::Violation(why) => {
                LinkEvent::ConnectionLost(ProtocolError::Violation(why).into())
            }
        }
    }

    /// The result of a close the link asked for (SRS 18_048: a close can fail too).
    pub(super) fn closed(self) -> LinkEvent {
        LinkEvent::Closed(match self {
            Ending::Clean => Ok(()),
            Ending::Broken(why) => {
                Err(TransportError::new(TransportErrorKind::Disconnect, why).into())
            }
            Ending::Violation(why) => {
                Err(ProvisioningError::Protocol(ProtocolError::Violation(why)))
            }
        })
    }
}

/// An IO error as a person reads it, with the TLS reason when there is one.
fn describe(error: &io::Error) -> String {
    match rustls_error_in(error) {
        Some(tls) => format!("TLS: {tls}"),
        None => error.to_string(),
    }
}

/// Where the control service leaves the stop reason for the link task.
#[derive(Clone, Default)]
pub(super) struct EndingSlot(Rc<RefCell<Option<Ending>>>);

impl EndingSlot {
    /// Keeps the first stop reason of `control`; other control messages are ignored.
    pub(super) fn observe(&self, control: &Control<Refused>) {
        if let Control::Stop(reason) = control {
            let mut slot = self.0.borrow_mut();
            if slot.is_none() {
                *slot = Some(Ending::of(reason));
            }
        }
    }

    /// The ending, once the dispatcher has stopped; a dispatcher that stopped without a reason
    /// closed cleanly.
    pub(super) fn take(&self) -> Ending {
        self.0.borrow_mut().take().unwrap_or(Ending::Clean)
    }
}

#[cfg(test)]
mod tests {
    use ntex_mqtt::error::DecodeError;

    use super::*;

    #[test]
    fn a_clean_close_is_neither_lost_nor_failed() {
        assert!(matches!(
            Ending::Clean.unasked(),
            LinkEvent::ClosedByService
        ));
        assert!(matches!(Ending::Clean.closed(), LinkEvent::Closed(Ok(()))));
    }

    #[test]
    fn a_broken_connection_is_lost_or_fails_the_disconnect() {
        let LinkEvent::ConnectionLost(lost) = Ending::Broken("reset".into()).unasked() else {
            panic!()
        };
        assert_eq!(
            lost.transport_kind(),
            Some(TransportErrorKind::ConnectionLost)
        );
        let LinkEvent::Closed(Err(failed)) = Ending::Broken("reset".into()).closed() else {
            panic!()
        };
        assert_eq!(
            failed.transport_kind(),
            Some(TransportErrorKind::Disconnect)
        );
    }

    #[test]
    fn a_protocol_violation_is_a_protocol_error_either_way() {
        let violation = || Ending::Violation("Decoding error".into());
        for event in [violation().unasked(), violation().closed()] {
            let error = match event {
                LinkEvent::ConnectionLost(e) | LinkEvent::Closed(Err(e)) => e,
                other => panic!("{other:?}"),
            };
            assert!(
                matches!(&error, ProvisioningError::Protocol(ProtocolError::Violation(why)) if why == "Decoding error"),
                "{error:?}"
            );
            assert!(
                error.to_string().contains("broke the MQTT protocol"),
                "{error}"
            );
        }
    }

    #[test]
    fn a_broken_connection_says_why_with_the_tls_reason_when_there_is_one() {
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(describe(&reset), reset.to_string());
        let tls = rustls::Error::AlertReceived(rustls::AlertDescription::BadRecordMac);
        let wrapped = io::Error::new(io::ErrorKind::InvalidData, tls);
        assert_eq!(
            describe(&wrapped),
            "TLS: received fatal alert: BadRecordMac"
        );
    }

    #[test]
    fn stop_reasons_map_to_endings() {
        let slot = EndingSlot::default();
        assert_eq!(slot.take(), Ending::Clean, "no reason: a clean close");
        let decode = MqttProtocolError::Decode(DecodeError::Utf8Error);
        slot.observe(&Control::Stop(Reason::Protocol(
            ntex_mqtt::control::ProtocolError::new(decode),
        )));
        // Only the first reason counts.
        slot.observe(&Control::Stop(Reason::Error(
            ntex_mqtt::control::Error::new(Refused("later")),
        )));
        assert!(matches!(slot.take(), Ending::Violation(why) if why.contains("Utf8")));
        assert!(matches!(
            Ending::of(&Reason::Error(ntex_mqtt::control::Error::new(Refused(
                "a QoS 2 PUBLISH"
            )))),
            Ending::Violation(why) if why == "a QoS 2 PUBLISH"
        ));
        assert!(matches!(
            Ending::of(&Reason::Protocol(ntex_mqtt::control::ProtocolError::new(
                MqttProtocolError::KeepAliveTimeout
            ))),
            Ending::Broken(_)
        ));
    }
}
