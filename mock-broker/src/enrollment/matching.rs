//! Who matches: the enrollment DPS applies to a device, from what the device presented.
//!
//! An individual enrollment for the registration id wins over every group, and must accept
//! the device's credential. Among X.509 groups the most specific CA wins: the one nearest the
//! leaf on the path the device's chain (leaf and the intermediates it sent in the handshake)
//! verifies along. Whether the winner is enabled is the caller's question: a disabled match
//! refuses the device even when a less specific group would take it.

use dps_messages::service::{SasToken, derive_device_key};
use rustls::pki_types::{CertificateDer, UnixTime};

use super::store::{Inner, Stored};
use super::{EnrollmentGroup, EnrollmentSettings, IndividualEnrollment};

/// What a device presented when it connected. `Debug` shows the chain's length and whether a
/// token was sent, never the token.
#[derive(Clone, Default)]
pub struct Presented {
    /// The certificate chain of the TLS handshake (leaf first), empty when none.
    pub chain: Vec<CertificateDer<'static>>,
    /// The CONNECT password (a SAS token), when any.
    pub sas: Option<String>,
}

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presented")
            .field("chain", &format_args!("{} certificates", self.chain.len()))
            .field("sas", &self.sas.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The enrollment that applies to a device.
#[derive(Debug, Clone)]
pub(crate) enum Matched {
    /// Its individual enrollment.
    Individual(IndividualEnrollment),
    /// A group.
    Group(EnrollmentGroup),
}

impl Matched {
    pub(crate) fn settings(&self) -> &EnrollmentSettings {
        match self {
            Matched::Individual(e) => &e.settings,
            Matched::Group(g) => &g.settings,
        }
    }

    /// The device id the hub gets.
    pub(crate) fn device_id(&self, registration_id: &str) -> String {
        match self {
            Matched::Individual(e) => e.device_id.clone(),
            Matched::Group(_) => None,
        }
        .unwrap_or_else(|| registration_id.to_owned())
    }

    /// The group's id, when the device matched a group.
    pub(crate) fn group_id(&self) -> Option<&str> {
        match self {
            Matched::Individual(_) => None,
            Matched::Group(g) => Some(&g.enrollment_group_id),
        }
    }
}

/// Why no enrollment applies, for the 401's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NoMatch(pub(crate) String);

/// The enrollment that applies to `registration_id` presenting `presented` at `now` (Unix
/// seconds), under `scope`.
pub(crate) fn find_match(
    inner: &Inner,
    scope: &str,
    registration_id: &str,
    presented: &Presented,
    now: u64,
) -> Result<Matched, NoMatch> {
    if let Some(stored) = inner.individual.get(&registration_id.to_ascii_lowercase()) {
        return individual(stored, scope, registration_id, presented, now)
            .map(|()| Matched::Individual(stored.enrollment.clone()));
    }
    if presented.chain.is_empty() {
        by_group_key(inner, scope, registration_id, presented, now)
    } else {
        by_group_ca(inner, presented)
    }
}

fn individual(
    stored: &Stored<IndividualEnrollment>,
    scope: &str,
    registration_id: &str,
    presented: &Presented,
    now: u64,
) -> Result<(), NoMatch> {
    let attestation = &stored.enrollment.attestation;
    match attestation.kind.as_str() {
        "x509" => {
            let leaf = presented.chain.first().ok_or_else(|| {
                NoMatch("the enrollment is X.509; no certificate was presented".into())
            })?;
            if stored.certs.iter().any(|c| c == leaf) {
                Ok(())
            } else {
                Err(NoMatch("the certificate is not the enrollment's".into()))
            }
        }
        "symmetricKey" => {
            let keys = attestation.symmetric_key.iter().flat_map(|k| {
                [k.primary_key.clone(), k.secondary_key.clone()]
                    .into_iter()
                    .flatten()
            });
            sas_verifies(presented, scope, registration_id, keys, now)
        }
        other => Err(NoMatch(format!("the mock cannot attest `{other}`"))),
    }
}

/// `Ok` when the presented SAS token is for the device and signed with one of `keys`.
fn sas_verifies(
    presented: &Presented,
    scope: &str,
    registration_id: &str,
    keys: impl IntoIterator<Item = String>,
    now: u64,
) -> Result<(), NoMatch> {
    let token = presented
        .sas
        .as_deref()
        .ok_or_else(|| NoMatch("no certificate and no SAS token".into()))?;
    let token = SasToken::parse(token).map_err(|e| NoMatch(e.to_string()))?;
    let resource = format!("{scope}/registrations/{registration_id}");
    if !token.decoded_resource().eq_ignore_ascii_case(&resource) {
        return Err(NoMatch(format!("the SAS token is not for `{resource}`")));
    }
    let mut why = String::from("no key");
    for key in keys {
        match token.verify(&key, now) {
            Ok(()) => return Ok(()),
            Err(e) => why = e.to_string(),
        }
    }
    Err(NoMatch(format!("SAS token rejected: {why}")))
}

fn by_group_key(
    inner: &Inner,
    scope: &str,
    registration_id: &str,
    presented: &Presented,
    now: u64,
) -> Result<Matched, NoMatch> {
    for stored in inner.groups.values() {
        let group = &stored.enrollment;
        let Some(keys) = &group.attestation.symmetric_key else {
            continue;
        };
        let derived = [&keys.primary_key, &keys.secondary_key]
            .into_iter()
            .flatten()
            .filter_map(|k| derive_device_key(k, registration_id).ok());
        if sas_verifies(presented, scope, registration_id, derived, now).is_ok() {
            return Ok(Matched::Group(group.clone()));
        }
    }
    Err(NoMatch(format!("no enrollment for `{registration_id}`")))
}

fn by_group_ca(inner: &Inner, presented: &Presented) -> Result<Matched, NoMatch> {
    let (leaf, intermediates) = presented
        .chain
        .split_first()
        .ok_or_else(|| NoMatch("no certificate".into()))?;
    let Ok(leaf) = webpki::EndEntityCert::try_from(leaf) else {
        return Err(NoMatch("the certificate cannot be read".into()));
    };
    let algorithms = rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .all;
    let now = UnixTime::now();
    // (intermediates on the path, group): fewer is nearer the leaf, so more specific.
    let mut best: Option<(usize, &EnrollmentGroup)> = None;
    for stored in inner.groups.values() {
        for ca in &stored.certs {
            let Ok(anchor) = webpki::anchor_from_trusted_cert(ca) else {
                continue;
            };
            let anchors = [anchor];
            let Ok(path) = leaf.verify_for_usage(
                algorithms,
                &anchors,
                intermediates,
                now,
                webpki::KeyUsage::client_auth(),
                None,
                None,
            ) else {
                continue;
            };
            let depth = path.intermediate_certificates().count();
            if best.is_none_or(|(d, _)| depth < d) {
                best = Some((depth, &stored.enrollment));
            }
        }
    }
    best.map(|(_, g)| Matched::Group(g.clone()))
        .ok_or_else(|| NoMatch("no enrollment group's CA is on the certificate's chain".into()))
}
