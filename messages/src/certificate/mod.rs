//! Certificate issuance (api-version `2025-07-01-preview`): the device sends a certificate
//! signing request with its registration, and DPS answers the assignment with the certificate
//! chain the device then uses for its IoT hub.
//!
//! * [`CertificateRequest`]: the device's new key pair and the PKCS#10 CSR it sends;
//! * [`IssuedIdentity`]: the chain the service issued, checked against that key and made into a
//!   TLS identity;
//! * [`key_pair_from_pem`]: a signing key in any form openssl writes (PKCS#8, SEC1, PKCS#1);
//! * [`CertificateError`](crate::error::CertificateError): each way either can fail, named by
//!   the check that failed.
//!
//! Everything here is pure: keys, CSRs and checks, with the time passed in.

mod issued;
mod private_key;
mod request;

pub use issued::{IssuedIdentity, LeafCertificate};
pub use private_key::key_pair_from_pem;
pub use request::{CertificateRequest, KeyCurve};
