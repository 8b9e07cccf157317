//! Device keys that never leave the hardware: PKCS#11 (an HSM, a TPM through `tpm2-pkcs11`, a
//! smart card, SoftHSM2 in tests), behind the `pkcs11` feature.
//!
//! * [`Pkcs11Uri`]: an RFC 7512 URI naming a key (`pkcs11:token=gw;object=device-key`);
//! * [`Pin`]: the token's PIN, from a file or the environment, never shown;
//! * [`Pkcs11Token`]: one logged-in token and its pool of sessions, shared by the process;
//! * [`Pkcs11Key`]: a key in the token as a [`KeySigner`](dps_messages::x509::KeySigner), for
//!   [`X509Identity::from_signer`](dps_messages::X509Identity::from_signer) and for a CSR
//!   ([`Pkcs11Token::generate_key`] makes one in the token);
//! * [`Pkcs11Error`]: each way it fails, naming what failed.
//!
//! The module is loaded at run time (`cryptoki`, no link-time dependency) and initialised once
//! per process with OS locking, so that every thread may sign.

mod error;
#[cfg(feature = "issuance")]
mod generate;
mod key;
mod module;
mod pin;
mod public_key;
mod token;
mod uri;

pub use error::Pkcs11Error;
#[cfg(feature = "issuance")]
pub use generate::TokenKeys;
pub use key::Pkcs11Key;
pub use pin::Pin;
pub use token::{MAX_SESSIONS, Pkcs11Token};
pub use uri::Pkcs11Uri;
