//! The service API's requests and answers, with no IO: a method, a path, a few headers and a
//! body in; a status, headers and a JSON body out.
//!
//! Paths are matched without case (the Node service SDK writes `/enrollmentgroups/`), ids
//! too (DPS's ids are case-insensitive), and the api-version is not checked: every SDK's
//! version speaks the shapes of `2021-10-01`.

use std::time::SystemTime;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::clock::iso8601;
use crate::dps::Dps;
use crate::enrollment::{
    EnrollmentError, EnrollmentGroup, Enrollments, IndividualEnrollment, attestation_mechanism,
    redacted_group, redacted_individual,
};

/// One request, as the HTTP layer read it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ApiRequest<'a> {
    pub(crate) method: &'a str,
    /// The path, without the query.
    pub(crate) path: &'a str,
    pub(crate) if_match: Option<&'a str>,
    /// `x-ms-max-item-count`: a query's page size.
    pub(crate) max_items: Option<usize>,
    /// `x-ms-continuation`: where a query's page starts.
    pub(crate) continuation: Option<&'a str>,
    pub(crate) body: &'a [u8],
}

/// One answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Option<Value>,
}

impl ApiResponse {
    pub(super) fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Some(body),
        }
    }

    fn empty(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: None,
        }
    }

    fn with_etag(mut self, etag: Option<&str>) -> Self {
        if let Some(etag) = etag {
            self.headers.push(("etag", etag.to_owned()));
        }
        self
    }
}

/// DPS's error body: `{errorCode, trackingId, message, timestampUtc}`, a new tracking id each
/// time. The code is `<status>001` (the mock's; DPS publishes few of its six-digit codes).
pub(crate) fn error(status: u16, message: &str, now: SystemTime) -> ApiResponse {
    ApiResponse::json(
        status,
        json!({
            "errorCode": u64::from(status) * 1000 + 1,
            "trackingId": uuid::Uuid::new_v4().to_string(),
            "message": message,
            "timestampUtc": iso8601(now),
        }),
    )
}

pub(super) fn from_enrollment_error(e: &EnrollmentError, now: SystemTime) -> ApiResponse {
    let status = match e {
        EnrollmentError::Invalid(_) => 400,
        EnrollmentError::EtagMismatch { .. } => 412,
        EnrollmentError::NotFound(_) => 404,
    };
    error(status, &e.to_string(), now)
}

/// What the service API works on.
pub(crate) struct Service<'a> {
    pub(crate) enrollments: &'a Enrollments,
    pub(crate) dps: &'a Dps,
}

/// The kind of thing a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Collection {
    Enrollments,
    Groups,
    Registrations,
}

impl Service<'_> {
    /// The answer to `request` (already authenticated) at `now`.
    pub(crate) fn handle(&self, request: &ApiRequest<'_>, now: SystemTime) -> ApiResponse {
        // The SDKs write ids URI-encoded (`encodeURIComponent`: a `:` is `%3A`).
        let decoded: Vec<String> = request
            .path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .map(dps_messages::service::percent_decode)
            .collect();
        let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
        let Some((first, rest)) = segments.split_first() else {
            return error(404, "no such resource", now);
        };
        let collection = match first.to_ascii_lowercase().as_str() {
            "enrollments" => Collection::Enrollments,
            "enrollmentgroups" => Collection::Groups,
            "registrations" => Collection::Registrations,
            _ => return error(404, &format!("no such resource `{}`", request.path), now),
        };
        let method = request.method.to_ascii_uppercase();
        let lower: Vec<String> = rest.iter().map(|s| s.to_ascii_lowercase()).collect();
        let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
        use Collection::*;
        match (collection, method.as_str(), lower.as_slice()) {
            (Enrollments | Groups, "POST", []) => self.bulk(collection, request, now),
            (Enrollments | Groups, "POST", ["query"]) => self.query(collection, None, request, now),
            (Registrations, "POST", [_, "query"]) => {
                self.query(collection, Some(rest[0]), request, now)
            }
            (Enrollments | Groups, "POST", [_, "attestationmechanism"]) => {
                self.attestation(collection, rest[0], now)
            }
            (_, "GET", [_]) => self.get(collection, rest[0], now),
            (_, "DELETE", [_]) => self.delete(collection, rest[0], request.if_match, now),
            (Enrollments | Groups, "PUT", [_]) => self.put(collection, rest[0], request, now),
            _ => error(
                405,
                &format!("{method} is not allowed on `{}`", request.path),
                now,
            ),
        }
    }

    fn get(&self, collection: Collection, id: &str, now: SystemTime) -> ApiResponse {
        let found = match collection {
            Collection::Enrollments => self.enrollments.individual(id).map(|e| {
                let etag = e.settings.etag.clone();
                (json!(redacted_individual(e)), etag)
            }),
            Collection::Groups => self.enrollments.group(id).map(|g| {
                let etag = g.settings.etag.clone();
                (json!(redacted_group(g)), etag)
            }),
            Collection::Registrations => self
                .dps
                .registration(id)
                .map(|r| (r.state(), Some(r.etag.clone()))),
        };
        match found {
            Some((body, etag)) => ApiResponse::json(200, body).with_etag(etag.as_deref()),
            None => error(404, &format!("`{id}` not found"), now),
        }
    }

    fn delete(
        &self,
        collection: Collection,
        id: &str,
        if_match: Option<&str>,
        now: SystemTime,
    ) -> ApiResponse {
        let deleted = match collection {
            Collection::Enrollments => self.enrollments.delete_individual(id, if_match),
            Collection::Groups => self.enrollments.delete_group(id, if_match),
            Collection::Registrations => self.dps.delete_registration_if(id, if_match),
        };
        match deleted {
            Ok(()) => ApiResponse::empty(204),
            Err(e) => from_enrollment_error(&e, now),
        }
    }

    fn put(
        &self,
        collection: Collection,
        id: &str,
        request: &ApiRequest<'_>,
        now: SystemTime,
    ) -> ApiResponse {
        let written = match collection {
            Collection::Enrollments => {
                read_body::<IndividualEnrollment>(request.body).and_then(|mut e| {
                    same_id(&mut e.registration_id, id)?;
                    e.attestation = generated_keys(e.attestation);
                    let stored = self.enrollments.put_individual(e, request.if_match, now)?;
                    Ok((json!(stored), stored.settings.etag))
                })
            }
            Collection::Groups => read_body::<EnrollmentGroup>(request.body).and_then(|mut g| {
                same_id(&mut g.enrollment_group_id, id)?;
                g.attestation = generated_keys(g.attestation);
                let stored = self.enrollments.put_group(g, request.if_match, now)?;
                Ok((json!(stored), stored.settings.etag))
            }),
            Collection::Registrations => unreachable!("routed to PUT for enrollments only"),
        };
        match written {
            Ok((body, etag)) => ApiResponse::json(200, body).with_etag(etag.as_deref()),
            Err(e) => from_enrollment_error(&e, now),
        }
    }

    fn attestation(&self, collection: Collection, id: &str, now: SystemTime) -> ApiResponse {
        let attestation = match collection {
            Collection::Enrollments => self.enrollments.individual(id).map(|e| e.attestation),
            _ => self.enrollments.group(id).map(|g| g.attestation),
        };
        match attestation {
            Some(a) => ApiResponse::json(200, attestation_mechanism(a)),
            None => error(404, &format!("`{id}` not found"), now),
        }
    }

    fn query(
        &self,
        collection: Collection,
        group: Option<&str>,
        request: &ApiRequest<'_>,
        now: SystemTime,
    ) -> ApiResponse {
        if collection != Collection::Registrations {
            #[derive(Deserialize)]
            struct QuerySpecification {
                query: String,
            }
            let spec = match read_body::<QuerySpecification>(request.body) {
                Ok(spec) => spec,
                Err(e) => return from_enrollment_error(&e, now),
            };
            let query = spec.query.trim().to_ascii_lowercase();
            let everything = query == "*" || query.starts_with("select * from");
            if !everything || query.contains(" where ") {
                let why = format!("the mock answers `*` queries only, not `{}`", spec.query);
                return error(400, &why, now);
            }
        }
        let (items, item_type): (Vec<Value>, &str) = match collection {
            Collection::Enrollments => (
                self.enrollments
                    .individuals()
                    .into_iter()
                    .map(|e| json!(redacted_individual(e)))
                    .collect(),
                "Enrollment",
            ),
            Collection::Groups => (
                self.enrollments
                    .groups()
                    .into_iter()
                    .map(|g| json!(redacted_group(g)))
                    .collect(),
                "EnrollmentGroup",
            ),
            Collection::Registrations => {
                let group = group.unwrap_or_default();
                let records = self.dps.registrations().into_iter().filter(|r| {
                    r.enrollment_group_id
                        .as_deref()
                        .is_some_and(|g| g.eq_ignore_ascii_case(group))
                });
                (records.map(|r| r.state()).collect(), "DeviceRegistration")
            }
        };
        let start: usize = match request.continuation.map(str::parse).transpose() {
            Ok(start) => start.unwrap_or(0),
            Err(_) => {
                return error(
                    400,
                    "the continuation token is not one the service gave",
                    now,
                );
            }
        };
        let size = request.max_items.filter(|&n| n > 0).unwrap_or(usize::MAX);
        let end = start.saturating_add(size).min(items.len());
        let page: Vec<Value> = items
            .get(start..end)
            .map(<[Value]>::to_vec)
            .unwrap_or_default();
        let mut response = ApiResponse::json(200, Value::Array(page));
        response
            .headers
            .push(("x-ms-item-type", item_type.to_owned()));
        if end < items.len() {
            response
                .headers
                .push(("x-ms-continuation", end.to_string()));
        }
        response
    }
}

pub(super) fn read_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, EnrollmentError> {
    serde_json::from_slice(body).map_err(|e| EnrollmentError::Invalid(format!("the body: {e}")))
}

/// The id in the path names the enrollment; a body may repeat it (any case), or leave it out.
fn same_id(in_body: &mut String, in_path: &str) -> Result<(), EnrollmentError> {
    if in_body.is_empty() {
        *in_body = in_path.to_owned();
    }
    if !in_body.eq_ignore_ascii_case(in_path) {
        return Err(EnrollmentError::Invalid(format!(
            "the body names `{in_body}`, the path `{in_path}`"
        )));
    }
    Ok(())
}

/// A symmetric-key attestation without keys gets keys made by the service, as DPS makes them.
pub(super) fn generated_keys(
    mut attestation: crate::enrollment::Attestation,
) -> crate::enrollment::Attestation {
    if attestation.kind == "symmetricKey" {
        let keys = attestation
            .symmetric_key
            .get_or_insert_with(Default::default);
        keys.primary_key.get_or_insert_with(random_key);
        keys.secondary_key.get_or_insert_with(random_key);
    }
    attestation
}

/// 64 random bytes, base64, as DPS's generated keys are.
fn random_key() -> String {
    use base64::Engine as _;
    let bytes: Vec<u8> = (0..4)
        .flat_map(|_| uuid::Uuid::new_v4().into_bytes())
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
