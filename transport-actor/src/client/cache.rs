//! The assignment cache: a restarted device that was assigned before does not provision again,
//! and one that was issued a certificate keeps it until renewal is due.
//!
//! One JSON file per device holds the assignment and, when one was issued, the certificate
//! chain and its private key (both PEM), or, for a key made in a token, the key's PKCS#11 URI
//! instead of its bytes. One file, so one rename commits them together: no crash leaves a new
//! key beside an old chain. It is written durably and, since it can hold a key, readable by
//! its owner only ([`crate::durable`]).
//!
//! Only a complete assignment (a hub and a device id) is used, and only the cached device's:
//! an entry for another device is no entry. A file that does not parse, an assignment without
//! a hub, or a certificate that does not match its key or its device is corrupt: the client
//! sets it aside (renames it) with a warning and provisions again, and never trusts it.

use std::path::{Path, PathBuf};
#[cfg(feature = "issuance")]
use std::sync::Arc;
use std::time::SystemTime;

#[cfg(feature = "issuance")]
use dps_messages::error::CertificateError;
use dps_messages::{RegistrationRequest, RegistrationResult, RegistrationStatus};
use serde::{Deserialize, Serialize};

use crate::durable::{self, Readers};

/// What the cache file holds.
#[derive(Serialize, Deserialize)]
struct Cached {
    id_scope: String,
    registration_id: String,
    result: RegistrationResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    certificate: Option<CachedCertificate>,
}

#[derive(Serialize, Deserialize)]
struct CachedCertificate {
    chain_pem: String,
    /// The key's bytes (PEM), for a key made in memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_pem: Option<String>,
    /// Where the key is, for a key held elsewhere ([`KeySigner::locator`]: a PKCS#11 URI).
    ///
    /// [`KeySigner::locator`]: dps_messages::x509::KeySigner::locator
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_uri: Option<String>,
}

/// Finds a key held elsewhere by the URI the cache recorded; an error says why it cannot.
#[cfg(feature = "issuance")]
pub(super) type KeyOpener<'a> =
    &'a dyn Fn(&str) -> Result<Arc<dyn dps_messages::x509::KeySigner>, String>;

/// A build without the `issuance` feature opens no key.
#[cfg(not(feature = "issuance"))]
pub(super) type KeyOpener<'a> = &'a ();

/// A certificate the service issued, checked: none can be, in a build without the
/// `issuance` feature, and the cache then reads and writes assignments alone.
#[cfg(feature = "issuance")]
pub(super) type Issued = dps_messages::IssuedIdentity;

/// A certificate the service issued: none can be, in a build without the `issuance` feature.
#[cfg(not(feature = "issuance"))]
#[derive(Debug)]
pub(super) enum Issued {}

impl CachedCertificate {
    /// What the cache keeps of `identity`; `None` for a key that is neither bytes nor
    /// findable again (a signer without a locator).
    #[cfg(feature = "issuance")]
    fn of(identity: &Issued) -> Option<Self> {
        let key_pem = identity.private_key_pem();
        let key_uri = identity.identity().signer().and_then(|s| s.locator());
        (key_pem.is_some() || key_uri.is_some()).then(|| Self {
            chain_pem: identity.chain_pem(),
            key_pem,
            key_uri,
        })
    }

    #[cfg(not(feature = "issuance"))]
    fn of(identity: &Issued) -> Option<Self> {
        match *identity {}
    }

    /// The cached certificate for `request`'s device, checked at `now`; an error says why it
    /// is corrupt.
    #[cfg(feature = "issuance")]
    fn read(
        &self,
        request: &RegistrationRequest,
        now: SystemTime,
        open: KeyOpener<'_>,
    ) -> Result<Certificate, String> {
        let id = &request.registration_id;
        let read = match (&self.key_pem, &self.key_uri) {
            (Some(key_pem), _) => Issued::from_pem(&self.chain_pem, key_pem, id, now),
            (None, Some(uri)) => match open(uri) {
                Ok(signer) => Issued::from_pem_and_signer(&self.chain_pem, signer, id, now),
                // Not corrupt: this client cannot reach the token (none configured, the token
                // is absent). The assignment stands; a certificate is made again.
                Err(why) => return Ok(Certificate::Unopenable(why)),
            },
            (None, None) => return Err("the cached certificate has no key".into()),
        };
        match read {
            Ok(identity) => Ok(Certificate::Valid(identity)),
            // Lapsed, not corrupt: renewal replaces it.
            Err(CertificateError::Expired { .. } | CertificateError::NotYetValid { .. }) => {
                Ok(Certificate::Lapsed)
            }
            Err(e) => Err(format!("the cached certificate: {e}")),
        }
    }

    /// A build without the `issuance` feature reads no certificate: the assignment is used
    /// alone, as a plain registration would.
    #[cfg(not(feature = "issuance"))]
    fn read(
        &self,
        _: &RegistrationRequest,
        _: SystemTime,
        _: KeyOpener<'_>,
    ) -> Result<Certificate, String> {
        Ok(Certificate::Absent)
    }
}

/// A usable cache entry.
#[derive(Debug)]
pub(super) struct Entry {
    /// The assignment.
    pub(super) result: RegistrationResult,
    /// The certificate cached with it.
    #[cfg_attr(
        not(feature = "issuance"),
        expect(dead_code, reason = "only certificate issuance reads it")
    )]
    pub(super) certificate: Certificate,
    /// Where the cached certificate's key is, when a token holds it: the key a renewal
    /// destroys once its successor is stored.
    #[cfg_attr(
        not(feature = "issuance"),
        expect(dead_code, reason = "only certificate issuance reads it")
    )]
    pub(super) key_uri: Option<String>,
}

/// The certificate of a cache entry.
#[derive(Debug)]
#[cfg_attr(
    not(feature = "issuance"),
    expect(dead_code, reason = "without issuance, no certificate is read")
)]
pub(super) enum Certificate {
    /// None was cached: the device registered without a CSR.
    Absent,
    /// One was cached but its validity has ended (or not begun): renew it.
    Lapsed,
    /// One within its validity, checked against its key and the device.
    Valid(Issued),
    /// One whose key is in a token this client cannot open now; why.
    Unopenable(String),
}

/// What the cache says for a device.
#[derive(Debug)]
pub(super) enum Lookup {
    /// Nothing for this device.
    Missing,
    /// An entry to use.
    Found(Box<Entry>),
    /// The file cannot be read (permissions, a folder in its place): left as it is.
    Unreadable(String),
    /// The file is not a usable entry: set it aside.
    Corrupt(String),
}

/// The cache at `path` for `request`'s device, its certificate checked at `now`, a key held
/// elsewhere found with `open`.
pub(super) fn load(
    path: &Path,
    request: &RegistrationRequest,
    now: SystemTime,
    open: KeyOpener<'_>,
) -> Lookup {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Missing,
        Err(e) => return Lookup::Unreadable(e.to_string()),
    };
    let cached: Cached = match serde_json::from_str(&text) {
        Ok(cached) => cached,
        Err(e) => return Lookup::Corrupt(format!("it does not parse: {e}")),
    };
    let same_device =
        cached.id_scope == request.id_scope && cached.registration_id == request.registration_id;
    if !same_device || cached.result.status != RegistrationStatus::Assigned {
        return Lookup::Missing;
    }
    if let Err(e) = cached.result.validate_assignment() {
        return Lookup::Corrupt(format!("the cached result is not a usable assignment: {e}"));
    }
    let key_uri = cached.certificate.as_ref().and_then(|c| c.key_uri.clone());
    let certificate = match cached.certificate.map(|c| c.read(request, now, open)) {
        None => Certificate::Absent,
        Some(Ok(certificate)) => certificate,
        Some(Err(corrupt)) => return Lookup::Corrupt(corrupt),
    };
    Lookup::Found(Box::new(Entry {
        result: cached.result,
        certificate,
        key_uri,
    }))
}

/// Writes the cache durably, owner-only.
pub(super) fn save(
    path: &Path,
    request: &RegistrationRequest,
    result: &RegistrationResult,
    certificate: Option<&Issued>,
) -> std::io::Result<()> {
    let cached = Cached {
        id_scope: request.id_scope.clone(),
        registration_id: request.registration_id.clone(),
        result: result.clone(),
        certificate: certificate.and_then(CachedCertificate::of),
    };
    let text = serde_json::to_string_pretty(&cached).map_err(std::io::Error::other)?;
    durable::write(path, text.as_bytes(), Readers::OwnerOnly)
}

/// Moves a corrupt cache out of the way, to `<path>.corrupt`, keeping it for a person to look
/// at; returns where it went.
pub(super) fn set_aside(path: &Path) -> std::io::Result<PathBuf> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".corrupt");
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

#[cfg(test)]
mod tests;
