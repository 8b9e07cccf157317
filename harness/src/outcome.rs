//! How a registration ended, in the few kinds a person or a script acts on; the `dps` exit codes
//! and the scenario expectations both speak in these.

use std::fmt;

use dps_messages::{ProvisioningError, RegistrationResult};
use serde::{Deserialize, Serialize};

/// The kind of ending of a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Assigned to a hub. Exit code 0.
    Assigned,
    /// A local input cannot be used (a key that is not base64, an unreadable certificate, a
    /// bad registration id or endpoint): nothing was sent. Exit code 2, as for bad arguments.
    InvalidInput,
    /// The service did not accept the credentials. Exit code 3.
    Unauthorized,
    /// The service failed, disabled or did not assign the registration. Exit code 4.
    Failed,
    /// A deadline passed. Exit code 5.
    Timeout,
    /// The network, the proxy, TLS or the protocol failed. Exit code 6.
    TransportError,
    /// Anything else (a bad argument, a cancelled operation ...). Exit code 1.
    Other,
}

impl Outcome {
    /// The kind of `result`.
    pub fn of(result: &Result<RegistrationResult, ProvisioningError>) -> Self {
        match result {
            Ok(_) => Outcome::Assigned,
            Err(e) => Self::of_error(e),
        }
    }

    /// The kind of a registration that ended with `error`.
    pub fn of_error(error: &ProvisioningError) -> Self {
        use ProvisioningError as E;
        match error {
            // The device's own credentials or request are unusable: not the service's verdict.
            E::Auth(_) | E::InvalidRequest(_) | E::Key(_) => Outcome::InvalidInput,
            E::Certificate(e) if e.is_local() => Outcome::InvalidInput,
            e if e.is_unauthorized() => Outcome::Unauthorized,
            E::RegistrationFailed(_) | E::RegistrationNotAssigned(_) => Outcome::Failed,
            E::Timeout { .. } => Outcome::Timeout,
            // An issued chain that fails a check is the service breaking its promise.
            E::Transport(_)
            | E::Tls(_)
            | E::Protocol(_)
            | E::ConnectionRefused(_)
            | E::Proxy(_)
            | E::Certificate(_) => Outcome::TransportError,
            _ => Outcome::Other,
        }
    }

    /// The process exit code of the `dps provision` command for this outcome.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Assigned => 0,
            Outcome::Other => 1,
            Outcome::InvalidInput => 2,
            Outcome::Unauthorized => 3,
            Outcome::Failed => 4,
            Outcome::Timeout => 5,
            Outcome::TransportError => 6,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Assigned => "assigned",
            Outcome::InvalidInput => "invalid_input",
            Outcome::Unauthorized => "unauthorized",
            Outcome::Failed => "failed",
            Outcome::Timeout => "timeout",
            Outcome::TransportError => "transport_error",
            Outcome::Other => "other",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dps_messages::error::{
        ConnackRefusal, ServiceError, Stage, TransportError, TransportErrorKind,
    };
    use std::time::Duration;

    #[test]
    fn every_error_maps_to_its_documented_exit_code() {
        let service = |status| {
            Err(ProvisioningError::from_service(ServiceError::from_body(
                status, b"",
            )))
        };
        let cases: Vec<(Result<RegistrationResult, ProvisioningError>, u8)> = vec![
            (
                Ok(serde_json::from_str(r#"{"status":"assigned"}"#).unwrap()),
                0,
            ),
            (service(401), 3),
            (
                Err(ProvisioningError::ConnectionRefused(
                    ConnackRefusal::NotAuthorized,
                )),
                3,
            ),
            (
                Err(ProvisioningError::ConnectionRefused(
                    ConnackRefusal::ServerUnavailable,
                )),
                6,
            ),
            (
                Err(ProvisioningError::RegistrationFailed(Box::new(
                    serde_json::from_str(r#"{"status":"failed"}"#).unwrap(),
                ))),
                4,
            ),
            (
                Err(ProvisioningError::timeout(
                    Stage::Registration,
                    Duration::ZERO,
                )),
                5,
            ),
            (
                Err(TransportError::new(TransportErrorKind::Connect, "x").into()),
                6,
            ),
            (service(400), 1),
            (Err(ProvisioningError::OperationCancelled), 1),
            (
                Err(dps_messages::error::AuthError::BadSymmetricKey.into()),
                2,
            ),
            (Err(ProvisioningError::InvalidRequest("x".into())), 2),
            (
                Err(
                    dps_messages::error::CertificateError::ApiVersionTooOld("2019-03-31".into())
                        .into(),
                ),
                2,
            ),
            (
                Err(dps_messages::error::CertificateError::Generate("x".into()).into()),
                2,
            ),
            (
                Err(dps_messages::error::CertificateError::LeafKeyMismatch.into()),
                6,
            ),
            (
                Err(dps_messages::error::CertificateError::NoChainIssued.into()),
                6,
            ),
        ];
        for (result, code) in cases {
            assert_eq!(Outcome::of(&result).exit_code(), code, "{result:?}");
        }
    }
}
