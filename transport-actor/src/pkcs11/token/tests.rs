use cryptoki::context::Function;

use super::*;

fn failure(rv: RvError) -> CkError {
    CkError::Pkcs11(rv, Function::Login)
}

#[test]
fn a_login_is_read_by_its_return_value() {
    assert_eq!(login_outcome("gw", Ok(())), Ok(()));
    let already = login_outcome("gw", Err(failure(RvError::UserAlreadyLoggedIn)));
    assert_eq!(already, Ok(()));
    assert_eq!(
        login_outcome("gw", Err(failure(RvError::PinIncorrect))),
        Err(Pkcs11Error::PinIncorrect { label: "gw".into() })
    );
    // SoftHSM2 never locks a PIN; a hardware token does.
    assert_eq!(
        login_outcome("gw", Err(failure(RvError::PinLocked))),
        Err(Pkcs11Error::PinLocked { label: "gw".into() })
    );
    let other = login_outcome("gw", Err(failure(RvError::DeviceError))).unwrap_err();
    assert!(matches!(
        other,
        Pkcs11Error::Token {
            operation: "log in",
            ..
        }
    ));
}

#[test]
fn only_a_lost_session_or_key_handle_is_run_again() {
    for rv in [
        RvError::SessionHandleInvalid,
        RvError::SessionClosed,
        RvError::UserNotLoggedIn,
        RvError::TokenNotPresent,
        RvError::DeviceRemoved,
        RvError::KeyHandleInvalid,
        RvError::ObjectHandleInvalid,
    ] {
        assert!(is_stale(&failure(rv)), "{rv:?}");
    }
    for rv in [
        RvError::PinIncorrect,
        RvError::MechanismInvalid,
        RvError::DeviceError,
    ] {
        assert!(!is_stale(&failure(rv)), "{rv:?}");
    }
}
