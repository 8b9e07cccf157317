//! Certificate issuance (api-version `2025-07-01-preview`): the device sends a certificate
//! signing request with its registration, and DPS answers the assignment with the certificate
//! chain the device then uses for its IoT hub.
//!
//! * [`request`]: the device's new key pair and the PKCS#10 CSR it sends ([`CertificateRequest`]);
//! * [`issued`]: the chain the service issued, checked against that key and made into a TLS
//!   identity ([`IssuedIdentity`]);
//! * [`key_pair_from_pem`]: a signing key in any form openssl writes (PKCS#8, SEC1, PKCS#1);
//! * [`CertificateError`]: each way either can fail, named by the check that failed.
//!
//! Everything here is pure: keys, CSRs and checks, with the time passed in.

pub mod issued;
mod private_key;
pub mod request;

pub use issued::{IssuedIdentity, LeafCertificate};
pub use private_key::key_pair_from_pem;
pub use request::{CertificateRequest, KeyCurve};

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
