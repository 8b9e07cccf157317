//! Errors that are nobody's fault on the network: the service breaking the protocol, the
//! device's own credentials, and certificate issuance.

use crate::response::TopicError;

/// The service broke the protocol.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A message arrived on a topic that is not a DPS response topic.
    #[error("bad response topic: {0}")]
    BadTopic(#[from] TopicError),
    /// A success response whose body is not a registration result.
    #[error("bad response body for status {status}: {detail}")]
    BadJson {
        /// The response status.
        status: u16,
        /// What the JSON parser said.
        detail: String,
        /// The body as received (lossily decoded as UTF-8).
        body: String,
    },
    /// A response body larger than the 128 KiB a device reads (DPS sends at most 96 KB).
    #[error("response body of {len} bytes is over the {max} byte limit")]
    PayloadTooLarge {
        /// The body's size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A poll answered without an `operationId` when the request needs one.
    #[error("the response carries no operationId")]
    MissingOperationId,
    /// The service broke the MQTT protocol (bytes that are not MQTT, an oversized packet, a
    /// topic that is not UTF-8, a QoS 2 message), so the device dropped the connection.
    #[error("the service broke the MQTT protocol ({0}); the connection was dropped")]
    Violation(String),
    /// The service answered `assigned` without what a device needs to reach its hub.
    #[error("the service answered `assigned` without {missing}")]
    IncompleteAssignment {
        /// What is missing: `registrationState`, its `assignedHub` or its `deviceId`.
        missing: &'static str,
    },
}

/// The device's credentials are missing or unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A request was made before any credentials were set.
    #[error("no authentication was set; send SetAuthentication first")]
    Missing,
    /// The certificate PEM holds no certificate, or cannot be read.
    #[error("unreadable certificate PEM: {0}")]
    BadCertificate(String),
    /// The private key PEM holds no key, or cannot be read.
    #[error("unreadable private key PEM: {0}")]
    BadPrivateKey(String),
    /// The private key does not belong to the certificate, or is of an unsupported kind.
    #[error("the private key does not match the certificate: {0}")]
    KeyMismatch(String),
    /// A key held elsewhere ([`KeySigner`](crate::x509::KeySigner)) of an algorithm TLS here
    /// cannot use, or whose public key is malformed.
    #[error("the device key is not usable for TLS: {0}")]
    UnsupportedKey(String),
    /// A symmetric key that is not valid base64.
    #[error("the symmetric key is not valid base64")]
    BadSymmetricKey,
    /// A SAS token that cannot be parsed.
    #[error("malformed SAS token: {0}")]
    BadToken(String),
}

/// What went wrong with a certificate request or an issued certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// A request carries a CSR but announces an api-version that cannot carry one; nothing was
    /// sent.
    #[error("a CSR needs api-version 2025-07-01-preview or later; the request announces `{0}`")]
    ApiVersionTooOld(String),
    /// The key pair or the CSR could not be made.
    #[error("cannot make the key or the CSR: {0}")]
    Generate(String),
    /// A private key (from a file or a cache) does not parse.
    #[error("the private key is not usable: {0}")]
    BadKey(String),
    /// The service assigned the device but returned no `issuedCertificateChain`, although the
    /// request carried a CSR.
    #[error("the service assigned the device but issued no certificate chain for its CSR")]
    NoChainIssued,
    /// The issued chain has no certificate.
    #[error("the issued certificate chain is empty")]
    EmptyChain,
    /// An entry of the chain is not a base64 DER X.509 certificate.
    #[error("certificate {index} of the issued chain does not decode: {reason}")]
    Undecodable {
        /// Its position, 0 for the leaf.
        index: usize,
        /// Why.
        reason: String,
    },
    /// The leaf certificate certifies another public key than the CSR's.
    #[error("the issued leaf certificate's public key is not the CSR's")]
    LeafKeyMismatch,
    /// The leaf certificate's subject CN is not the registration id.
    #[error("the issued leaf certificate's CN is {found:?}, not the registration id `{expected}`")]
    LeafNameMismatch {
        /// The registration id.
        expected: String,
        /// The leaf's CN, if it has one.
        found: Option<String>,
    },
    /// The leaf certificate's validity has not begun.
    #[error("the issued leaf certificate is not valid before {not_before}")]
    NotYetValid {
        /// Its `notBefore`.
        not_before: String,
    },
    /// The leaf certificate's validity has ended.
    #[error("the issued leaf certificate expired at {not_after}")]
    Expired {
        /// Its `notAfter`.
        not_after: String,
    },
    /// rustls cannot use the chain and key for TLS.
    #[error("the issued chain and the key are not usable for TLS: {0}")]
    Unusable(String),
}

impl CertificateError {
    /// Whether the mistake is the device's own (a request that cannot be sent, a key that
    /// cannot be made or read), rather than something the service issued.
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            Self::ApiVersionTooOld(_) | Self::Generate(_) | Self::BadKey(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_device_got_wrong_itself_is_local() {
        for local in [
            CertificateError::ApiVersionTooOld("2019-03-31".into()),
            CertificateError::Generate("x".into()),
            CertificateError::BadKey("x".into()),
        ] {
            assert!(local.is_local(), "{local}");
        }
        for issued in [
            CertificateError::NoChainIssued,
            CertificateError::EmptyChain,
            CertificateError::LeafKeyMismatch,
            CertificateError::Unusable("x".into()),
        ] {
            assert!(!issued.is_local(), "{issued}");
        }
    }
}
