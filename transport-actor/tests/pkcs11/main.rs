//! Device keys in a PKCS#11 token (SoftHSM2), over real TLS against the mock broker.

#[path = "../common/mod.rs"]
mod common;
mod faults;
mod identity;
mod issuance;
mod pool;
mod softhsm;
