//! The enrollments a broker knows, shared by its connections and changed at run time (from
//! Rust, and from the service API): written whole, each write with a new etag, read by value.

use std::collections::BTreeMap;
use std::sync::{PoisonError, RwLock};
use std::time::SystemTime;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::{EnrollmentFile, EnrollmentGroup, EnrollmentSettings, IndividualEnrollment, LinkedHub};
use crate::clock::iso8601;
use crate::registration_id::check_registration_id;

/// An enrollment could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollmentError {
    /// The enrollment is not valid (what DPS answers 400 to).
    #[error("invalid enrollment: {0}")]
    Invalid(String),
    /// `If-Match` named an etag that is not the enrollment's (DPS answers 412).
    #[error("the etag {given} is not the enrollment's ({current})")]
    EtagMismatch {
        /// The etag the writer had.
        given: String,
        /// The enrollment's.
        current: String,
    },
    /// No such enrollment (DPS answers 404).
    #[error("no enrollment `{0}`")]
    NotFound(String),
}

/// An enrollment with its certificates read once, when it is written.
#[derive(Debug, Clone)]
pub(crate) struct Stored<T> {
    pub(crate) enrollment: T,
    /// The attestation's certificates (DER): the device's own for an individual X.509
    /// enrollment, the CAs' for a group.
    pub(crate) certs: Vec<CertificateDer<'static>>,
}

#[derive(Debug, Default)]
pub(crate) struct Inner {
    /// By lower-cased registration id: DPS's ids are case-insensitive.
    pub(crate) individual: BTreeMap<String, Stored<IndividualEnrollment>>,
    /// By lower-cased group id.
    pub(crate) groups: BTreeMap<String, Stored<EnrollmentGroup>>,
    pub(crate) linked_hubs: Vec<LinkedHub>,
}

/// The enrollments of one mock DPS. A broker with none answers as before enrollments existed:
/// any device its CA or keys admit, to its one hub ([`BrokerBuilder`](crate::BrokerBuilder)).
#[derive(Debug, Default)]
pub struct Enrollments {
    inner: RwLock<Inner>,
}

fn key(id: &str) -> String {
    id.to_ascii_lowercase()
}

/// One certificate from PEM or base64 DER.
fn read_certificate(text: &str) -> Result<CertificateDer<'static>, String> {
    let text = text.trim();
    let der = if text.starts_with("-----BEGIN") {
        CertificateDer::from_pem_slice(text.as_bytes()).map_err(|e| format!("PEM: {e}"))?
    } else {
        use base64::Engine as _;
        let der = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("neither PEM nor base64 DER: {e}"))?;
        CertificateDer::from(der)
    };
    x509_parser::parse_x509_certificate(&der).map_err(|e| format!("not a certificate: {e}"))?;
    Ok(der)
}

fn read_certificates(
    certs: Option<&super::X509Certificates>,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let Some(certs) = certs else {
        return Ok(Vec::new());
    };
    [&certs.primary, &certs.secondary]
        .into_iter()
        .flatten()
        .filter_map(|c| c.certificate.as_deref())
        .map(read_certificate)
        .collect()
}

fn check_keys(attestation: &super::Attestation) -> Result<(), String> {
    use base64::Engine as _;
    let Some(keys) = &attestation.symmetric_key else {
        return Err("a symmetricKey attestation needs `symmetricKey`".into());
    };
    let mut any = false;
    for k in [&keys.primary_key, &keys.secondary_key]
        .into_iter()
        .flatten()
    {
        base64::engine::general_purpose::STANDARD
            .decode(k)
            .map_err(|_| "a symmetric key is not base64".to_owned())?;
        any = true;
    }
    if !any {
        return Err("a symmetricKey attestation needs a primaryKey".into());
    }
    Ok(())
}

fn check_settings(settings: &EnrollmentSettings) -> Result<(), String> {
    use super::AllocationPolicy::{Custom, Static};
    match settings.allocation_policy {
        Some(Custom) if settings.custom_allocation_definition.is_none() => {
            return Err("a custom allocation needs `customAllocationDefinition`".into());
        }
        Some(Static) if settings.iot_hubs.len() > 1 => {
            return Err("a static allocation takes one hub".into());
        }
        _ => {}
    }
    if let Some(payload) = &settings.payload
        && !payload.is_object()
    {
        return Err("`payload` must be a JSON object".into());
    }
    Ok(())
}

/// Stamps a write: a new etag, the creation time kept from `previous`.
fn stamp(
    settings: &mut EnrollmentSettings,
    previous: Option<&EnrollmentSettings>,
    now: SystemTime,
) {
    settings.etag = Some(new_etag());
    settings.created_date_time_utc = previous
        .and_then(|p| p.created_date_time_utc.clone())
        .or_else(|| Some(iso8601(now)));
    settings.last_updated_date_time_utc = Some(iso8601(now));
}

/// A fresh etag, quoted as HTTP writes one.
pub(crate) fn new_etag() -> String {
    format!("\"{}\"", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

/// An enrollment's etag ("" before the store stamped one).
fn etag_of(settings: &EnrollmentSettings) -> &str {
    settings.etag.as_deref().unwrap_or_default()
}

/// Refuses a write whose `If-Match` is stale; `*` matches anything that exists.
/// `current` is the etag of what exists, if anything does (an enrollment or a registration
/// record).
pub(crate) fn check_etag(
    if_match: Option<&str>,
    current: Option<&str>,
) -> Result<(), EnrollmentError> {
    let (Some(given), Some(current)) = (if_match, current) else {
        return Ok(());
    };
    if given == "*" || given == current || given.trim_matches('"') == current.trim_matches('"') {
        return Ok(());
    }
    Err(EnrollmentError::EtagMismatch {
        given: given.to_owned(),
        current: current.to_owned(),
    })
}

impl Enrollments {
    /// No enrollments.
    pub fn new() -> Self {
        Self::default()
    }

    /// The enrollments and linked hubs of `file`.
    pub fn from_file(file: EnrollmentFile) -> Result<Self, EnrollmentError> {
        let store = Self::new();
        store.set_linked_hubs(file.linked_hubs);
        let now = SystemTime::now();
        for e in file.individual_enrollments {
            store.put_individual(e, None, now)?;
        }
        for g in file.enrollment_groups {
            store.put_group(g, None, now)?;
        }
        Ok(store)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` over the enrollments as they are now.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&Inner) -> T) -> T {
        f(&self.read())
    }

    /// Whether there are any: with none, the broker admits devices as it always did.
    pub fn is_empty(&self) -> bool {
        let inner = self.read();
        inner.individual.is_empty() && inner.groups.is_empty()
    }

    /// The hubs linked to the DPS (what an enrollment without hubs allocates among).
    pub fn set_linked_hubs(&self, hubs: Vec<LinkedHub>) {
        self.write().linked_hubs = hubs;
    }

    /// The hubs linked to the DPS.
    pub fn linked_hubs(&self) -> Vec<LinkedHub> {
        self.read().linked_hubs.clone()
    }

    /// Makes or replaces an individual enrollment. `if_match`, when given, must be the
    /// current etag (or `*`). Returns the enrollment as stored (etag and times set).
    pub fn put_individual(
        &self,
        enrollment: IndividualEnrollment,
        if_match: Option<&str>,
        now: SystemTime,
    ) -> Result<IndividualEnrollment, EnrollmentError> {
        let invalid = EnrollmentError::Invalid;
        check_registration_id(&enrollment.registration_id).map_err(invalid)?;
        check_settings(&enrollment.settings).map_err(invalid)?;
        let certs = match enrollment.attestation.kind.as_str() {
            "x509" => {
                let x509 = enrollment.attestation.x509.as_ref();
                let certs = read_certificates(x509.and_then(|x| x.client_certificates.as_ref()))
                    .map_err(invalid)?;
                if certs.is_empty() {
                    return Err(invalid(
                        "an individual X.509 enrollment needs `clientCertificates`".into(),
                    ));
                }
                certs
            }
            "symmetricKey" => {
                check_keys(&enrollment.attestation).map_err(invalid)?;
                Vec::new()
            }
            "tpm" => Vec::new(),
            other => return Err(invalid(format!("unknown attestation type `{other}`"))),
        };
        let id = key(&enrollment.registration_id);
        put_in(
            &mut self.write().individual,
            id,
            enrollment,
            certs,
            if_match,
            now,
        )
    }

    /// Makes or replaces an enrollment group, as [`put_individual`](Self::put_individual).
    pub fn put_group(
        &self,
        group: EnrollmentGroup,
        if_match: Option<&str>,
        now: SystemTime,
    ) -> Result<EnrollmentGroup, EnrollmentError> {
        let invalid = EnrollmentError::Invalid;
        check_registration_id(&group.enrollment_group_id).map_err(invalid)?;
        check_settings(&group.settings).map_err(invalid)?;
        let certs = match group.attestation.kind.as_str() {
            "x509" => {
                let x509 = group.attestation.x509.as_ref();
                let certs = read_certificates(x509.and_then(|x| x.signing_certificates.as_ref()))
                    .map_err(invalid)?;
                if certs.is_empty() && x509.and_then(|x| x.ca_references.as_ref()).is_none() {
                    return Err(invalid(
                        "an X.509 group needs `signingCertificates` or `caReferences`".into(),
                    ));
                }
                certs
            }
            "symmetricKey" => {
                check_keys(&group.attestation).map_err(invalid)?;
                Vec::new()
            }
            other => return Err(invalid(format!("attestation type `{other}` for a group"))),
        };
        let id = key(&group.enrollment_group_id);
        put_in(&mut self.write().groups, id, group, certs, if_match, now)
    }

    /// The individual enrollment of `registration_id` (any case).
    pub fn individual(&self, registration_id: &str) -> Option<IndividualEnrollment> {
        let inner = self.read();
        inner
            .individual
            .get(&key(registration_id))
            .map(|s| s.enrollment.clone())
    }

    /// The enrollment group `id` (any case).
    pub fn group(&self, id: &str) -> Option<EnrollmentGroup> {
        let inner = self.read();
        inner.groups.get(&key(id)).map(|s| s.enrollment.clone())
    }

    /// Every individual enrollment, by registration id.
    pub fn individuals(&self) -> Vec<IndividualEnrollment> {
        let inner = self.read();
        inner
            .individual
            .values()
            .map(|s| s.enrollment.clone())
            .collect()
    }

    /// Every enrollment group, by id.
    pub fn groups(&self) -> Vec<EnrollmentGroup> {
        let inner = self.read();
        inner
            .groups
            .values()
            .map(|s| s.enrollment.clone())
            .collect()
    }

    /// Deletes an individual enrollment; `if_match` as for a write.
    pub fn delete_individual(
        &self,
        registration_id: &str,
        if_match: Option<&str>,
    ) -> Result<(), EnrollmentError> {
        delete_in(&mut self.write().individual, registration_id, if_match)
    }

    /// Deletes an enrollment group; `if_match` as for a write.
    pub fn delete_group(&self, id: &str, if_match: Option<&str>) -> Result<(), EnrollmentError> {
        delete_in(&mut self.write().groups, id, if_match)
    }
}

/// What the store keeps of either kind of enrollment: its settings (etag and times).
trait Enrolled: Clone {
    fn settings(&self) -> &EnrollmentSettings;
    fn settings_mut(&mut self) -> &mut EnrollmentSettings;
}

impl Enrolled for IndividualEnrollment {
    fn settings(&self) -> &EnrollmentSettings {
        &self.settings
    }
    fn settings_mut(&mut self) -> &mut EnrollmentSettings {
        &mut self.settings
    }
}

impl Enrolled for EnrollmentGroup {
    fn settings(&self) -> &EnrollmentSettings {
        &self.settings
    }
    fn settings_mut(&mut self) -> &mut EnrollmentSettings {
        &mut self.settings
    }
}

/// Writes `enrollment` (already checked) under `id`: its `If-Match` checked against what is
/// there, the write stamped. Returns it as stored.
fn put_in<T: Enrolled>(
    map: &mut BTreeMap<String, Stored<T>>,
    id: String,
    mut enrollment: T,
    certs: Vec<CertificateDer<'static>>,
    if_match: Option<&str>,
    now: SystemTime,
) -> Result<T, EnrollmentError> {
    let previous = map.get(&id).map(|s| s.enrollment.settings());
    check_etag(if_match, previous.map(etag_of))?;
    stamp(enrollment.settings_mut(), previous, now);
    map.insert(
        id,
        Stored {
            enrollment: enrollment.clone(),
            certs,
        },
    );
    Ok(enrollment)
}

/// Deletes the enrollment `id` (any case) if `if_match` allows.
fn delete_in<T: Enrolled>(
    map: &mut BTreeMap<String, Stored<T>>,
    id: &str,
    if_match: Option<&str>,
) -> Result<(), EnrollmentError> {
    let key = key(id);
    let current = map
        .get(&key)
        .ok_or_else(|| EnrollmentError::NotFound(id.to_owned()))?;
    check_etag(if_match, Some(etag_of(current.enrollment.settings())))?;
    map.remove(&key);
    Ok(())
}
