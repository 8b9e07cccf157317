//! Each way a PKCS#11 key can fail, named by what failed. A PIN is never in one.

use std::path::PathBuf;

/// What went wrong with a PKCS#11 module, token or key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs11Error {
    /// The module path names no file.
    #[error("the PKCS#11 module {path} does not exist")]
    ModuleMissing {
        /// The path given.
        path: PathBuf,
    },
    /// The file is not a loadable PKCS#11 module, or it refused to initialise.
    #[error("{path} is not a usable PKCS#11 module: {reason}")]
    NotAModule {
        /// The path given.
        path: PathBuf,
        /// What the loader or `C_Initialize` said.
        reason: String,
    },
    /// No module path was given, in the URI (`module-path`), by option or environment.
    #[error("no PKCS#11 module for {uri}: give --pkcs11-module or DPS_PKCS11_MODULE")]
    NoModule {
        /// The key's URI.
        uri: String,
    },
    /// No slot holds a token with that label.
    #[error("no PKCS#11 token labelled `{label}` in {module} (tokens: {found})")]
    NoToken {
        /// The label asked for.
        label: String,
        /// The module searched.
        module: PathBuf,
        /// The labels of the tokens there, for the person reading the error.
        found: String,
    },
    /// The URI names no token (`token=`) and the module holds more than one.
    #[error("{uri} names no token and the module holds {count}; add `token=<label>`")]
    AmbiguousToken {
        /// The key's URI.
        uri: String,
        /// How many tokens there are.
        count: usize,
    },
    /// The PIN was refused (`CKR_PIN_INCORRECT`). It is not tried again: tokens lock after a
    /// few wrong PINs, so the process remembers the refusal and answers every later open of
    /// the token with it, whatever PIN is given, until it restarts.
    #[error(
        "the PIN of token `{label}` is incorrect (not retried: the token locks after a few tries)"
    )]
    PinIncorrect {
        /// The token's label.
        label: String,
    },
    /// The token's user PIN is locked (`CKR_PIN_LOCKED` or the token's flag): an officer must
    /// unlock it. Nothing was tried.
    #[error("the user PIN of token `{label}` is locked; an officer must unblock it")]
    PinLocked {
        /// The token's label.
        label: String,
    },
    /// The PIN could not be read from its file or the environment, or is empty.
    #[error("cannot read the PIN: {0}")]
    PinUnreadable(String),
    /// No private key matches the URI.
    #[error("no private key in the token for {uri}")]
    NoObject {
        /// The key's URI (it never holds a PIN).
        uri: String,
    },
    /// More than one private key matches the URI.
    #[error("{count} private keys match {uri}; add `id=` or a distinct `object=`")]
    AmbiguousObject {
        /// The key's URI.
        uri: String,
        /// How many matched.
        count: usize,
    },
    /// The key is of a type, a curve or a size this crate cannot sign TLS with, or the token
    /// lacks the mechanism for it (`CKM_ECDSA`, `CKM_RSA_PKCS_PSS`).
    #[error("the key {uri} is not usable: {reason}")]
    Unsupported {
        /// The key's URI.
        uri: String,
        /// What is missing.
        reason: String,
    },
    /// A URI that does not parse as RFC 7512, or holds what it must not (a PIN).
    #[error("bad PKCS#11 URI `{uri}`: {reason}")]
    BadUri {
        /// The text given (a `pin-value` in it is not repeated).
        uri: String,
        /// Why.
        reason: String,
    },
    /// The token failed an operation (signing, generating, reading an attribute), with the
    /// PKCS#11 return value. A removed token or a closed session ends up here when a fresh
    /// session could not be opened either.
    #[error("PKCS#11 {operation} failed on token `{label}`: {reason}")]
    Token {
        /// What was being done.
        operation: &'static str,
        /// The token's label.
        label: String,
        /// The return value, as cryptoki names it.
        reason: String,
    },
    /// Every session of the pool stayed busy for longer than a signature may take.
    #[error("all {max} sessions of token `{label}` stayed busy")]
    Busy {
        /// The token's label.
        label: String,
        /// The pool's size.
        max: usize,
    },
}
