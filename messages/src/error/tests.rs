//! The error type's rules: what is retryable, what is unauthorized, how each reads.

use super::*;

#[test]
fn both_shapes_of_a_refused_credential_are_unauthorized() {
    let refused = |r| ProvisioningError::ConnectionRefused(r);
    assert!(ProvisioningError::from_service(ServiceError::from_body(401, b"")).is_unauthorized());
    assert!(refused(ConnackRefusal::NotAuthorized).is_unauthorized());
    assert!(refused(ConnackRefusal::BadUserNameOrPassword).is_unauthorized());
    assert!(!refused(ConnackRefusal::ServerUnavailable).is_unauthorized());
    assert!(!ProvisioningError::from_service(ServiceError::from_body(403, b"")).is_unauthorized());
    assert!(!ProvisioningError::from(AuthError::BadSymmetricKey).is_unauthorized());
}

#[test]
fn the_unreachable_the_lost_and_the_restarted_are_retryable_and_nothing_else() {
    let kind = |kind| ProvisioningError::from(TransportError::new(kind, "x"));
    for retryable in [
        kind(TransportErrorKind::Unreachable),
        ProvisioningError::timeout(Stage::Connect, Duration::ZERO),
        kind(TransportErrorKind::ConnectionLost),
        kind(TransportErrorKind::Publish),
        kind(TransportErrorKind::Restarted),
        ProvisioningError::timeout(Stage::Response, Duration::ZERO),
        ProvisioningError::timeout(Stage::PublishAck, Duration::ZERO),
    ] {
        assert!(retryable.is_retryable(), "{retryable:?}");
    }
    for final_ in [
        kind(TransportErrorKind::Connect),
        kind(TransportErrorKind::Subscribe),
        kind(TransportErrorKind::Unsubscribe),
        kind(TransportErrorKind::Disconnect),
        kind(TransportErrorKind::Shutdown),
        ProvisioningError::timeout(Stage::Subscribe, Duration::ZERO),
        ProvisioningError::timeout(Stage::Disconnect, Duration::ZERO),
        ProvisioningError::timeout(Stage::Registration, Duration::ZERO),
        ProvisioningError::OperationCancelled,
        ProvisioningError::OperationInProgress,
        ProvisioningError::from_service(ServiceError::from_body(401, b"")),
        ProvisioningError::ConnectionRefused(ConnackRefusal::NotAuthorized),
        ProvisioningError::Protocol(ProtocolError::MissingOperationId),
        ProvisioningError::InvalidRequest("x".into()),
        AuthError::Missing.into(),
    ] {
        assert!(!final_.is_retryable(), "{final_:?}");
    }
}

#[test]
fn a_proxy_error_names_the_proxy_and_what_it_said_and_only_some_are_retried() {
    let error =
        |kind, detail: &str| ProvisioningError::from(ProxyError::new("proxy:3128", kind, detail));
    let denied = error(
        ProxyErrorKind::AuthenticationRequired,
        "HTTP/1.1 407 Proxy Authentication Required",
    );
    assert_eq!(
        denied.to_string(),
        "proxy error: the proxy proxy:3128 wants credentials, or refused the ones given: \
         HTTP/1.1 407 Proxy Authentication Required"
    );
    assert!(!denied.is_retryable());
    for (kind, detail, retryable) in [
        (ProxyErrorKind::Unreachable, "connection refused", true),
        (ProxyErrorKind::Closed, "", true),
        (ProxyErrorKind::NoAnswer, "", true),
        (ProxyErrorKind::Refused, "HTTP/1.1 502 Bad Gateway", true),
        (
            ProxyErrorKind::Refused,
            "HTTP/1.0 503 Service Unavailable",
            true,
        ),
        (
            ProxyErrorKind::Refused,
            "HTTP/1.1 504 Gateway Timeout",
            true,
        ),
        (
            ProxyErrorKind::Refused,
            "HTTP/1.1 500 Internal Server Error",
            false,
        ),
        (ProxyErrorKind::Forbidden, "HTTP/1.1 403 Forbidden", false),
        (ProxyErrorKind::BadAnswer, "SSH-2.0", false),
    ] {
        assert_eq!(
            error(kind, detail).is_retryable(),
            retryable,
            "{kind:?} {detail}"
        );
    }
}

#[test]
fn a_refused_server_certificate_says_which_roots_were_tried() {
    let refused = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
    let trusted = Some("the public web's roots and 1 extra CA".to_owned());
    let failure = ProvisioningError::Tls(Box::new(TlsFailure::new(refused, trusted.clone())));
    assert_eq!(
        failure.to_string(),
        "TLS handshake failed: invalid peer certificate: UnknownIssuer (trusted: the public \
         web's roots and 1 extra CA)"
    );
    // Other failures are not about the roots.
    let other = rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure);
    let failure = TlsFailure::new(other.clone(), trusted);
    assert_eq!(failure.to_string(), other.to_string());
    assert!(std::error::Error::source(&failure).is_some());
    let plain = ProvisioningError::from(other);
    assert!(matches!(plain, ProvisioningError::Tls(f) if f.trusted.is_none()));
}

#[test]
fn a_timeout_says_what_failed_last() {
    let bare = ProvisioningError::timeout(Stage::Registration, Duration::from_secs(10));
    assert_eq!(
        bare.to_string(),
        "timed out after 10s waiting for the registration to finish"
    );
    let lost = TransportError::new(TransportErrorKind::ConnectionLost, "reset").into();
    let with = ProvisioningError::timeout_after(
        Stage::Registration,
        Duration::from_secs(10),
        3,
        Some(lost),
    );
    assert_eq!(
        with.to_string(),
        "timed out after 10s waiting for the registration to finish (3 attempts); the last \
         attempt failed: transport error: connection lost: reset"
    );
    let once = ProvisioningError::timeout_after(Stage::Registration, Duration::ZERO, 1, None);
    assert!(
        once.to_string().ends_with("to finish (1 attempt)"),
        "{once}"
    );
}

#[test]
fn failures_and_kinds_read_as_sentences() {
    let failed: RegistrationResult = serde_json::from_value(serde_json::json!({
        "status": "failed",
        "registrationState": {"errorCode": 400209, "errorMessage": "no hub"}
    }))
    .unwrap();
    assert_eq!(
        ProvisioningError::RegistrationFailed(Box::new(failed)).to_string(),
        "the registration failed: errorCode 400209: no hub"
    );
    assert_eq!(
        Stage::PublishAck.to_string(),
        "the publish acknowledgement (PUBACK)"
    );
    assert_eq!(
        TransportErrorKind::Restarted.to_string(),
        "transport restarted, send the request again"
    );
}

#[test]
fn the_error_stays_small_enough_to_return_by_value() {
    // Large details are boxed, so Result<_, ProvisioningError> stays cheap to move and
    // clippy's result_large_err stays quiet in callers' code.
    assert!(
        std::mem::size_of::<ProvisioningError>() <= 64,
        "{}",
        std::mem::size_of::<ProvisioningError>()
    );
}

#[test]
fn service_errors_translate_by_status_and_keep_their_details() {
    let e = ProvisioningError::from_service(ServiceError::from_body(
        429,
        br#"{"errorCode":"429001","message":"slow down"}"#,
    ));
    let details = e.service_error().unwrap();
    assert_eq!((details.status, details.error_code), (429, Some(429001)));
    assert!(e.to_string().contains("slow down"), "{e}");
    assert!(
        ProvisioningError::OperationCancelled
            .service_error()
            .is_none()
    );
}

#[cfg(feature = "actix")]
#[test]
fn a_gone_actor_is_a_shutdown_transport_error() {
    let e = ProvisioningError::from(actix::MailboxError::Closed);
    assert!(matches!(
        e,
        ProvisioningError::Transport(TransportError {
            kind: TransportErrorKind::Shutdown,
            ..
        })
    ));
    assert_eq!(e.transport_kind(), Some(TransportErrorKind::Shutdown));
    assert_eq!(ProvisioningError::OperationCancelled.transport_kind(), None);
}

#[test]
fn connack_codes_round_trip() {
    assert_eq!(ConnackRefusal::from_code(0), None);
    for code in 1..=7u8 {
        assert_eq!(ConnackRefusal::from_code(code).unwrap().code(), code);
    }
    assert!(
        ConnackRefusal::NotAuthorized
            .to_string()
            .contains("not authorized")
    );
}
