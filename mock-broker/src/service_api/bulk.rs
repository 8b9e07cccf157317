//! `POST /enrollments` and `POST /enrollmentGroups`: bulk operations, each item done or
//! reported in `errors`, as DPS's `BulkEnrollmentOperationResult`.

use std::time::SystemTime;

use serde_json::{Value, json};

use super::routes::{
    ApiRequest, ApiResponse, Collection, Service, error, from_enrollment_error, generated_keys,
    read_body,
};
use crate::enrollment::{EnrollmentError, EnrollmentGroup, IndividualEnrollment};

impl Service<'_> {
    /// `POST /enrollments` and `POST /enrollmentGroups`: a bulk operation, each item done or
    /// reported in `errors`.
    pub(super) fn bulk(
        &self,
        collection: Collection,
        request: &ApiRequest<'_>,
        now: SystemTime,
    ) -> ApiResponse {
        let body: Value = match read_body(request.body) {
            Ok(body) => body,
            Err(e) => return from_enrollment_error(&e, now),
        };
        let mode = body["mode"].as_str().unwrap_or_default().to_owned();
        if !["create", "update", "updateIfMatchETag", "delete"].contains(&mode.as_str()) {
            return error(400, &format!("unknown bulk mode `{mode}`"), now);
        }
        let (field, id_field) = match collection {
            Collection::Enrollments => ("enrollments", "registrationId"),
            _ => ("enrollmentGroups", "enrollmentGroupId"),
        };
        let Some(items) = body[field].as_array() else {
            return error(400, &format!("a bulk operation needs `{field}`"), now);
        };
        let mut errors = Vec::new();
        for item in items {
            let id = item[id_field].as_str().unwrap_or_default().to_owned();
            if let Err(e) = self.bulk_one(collection, &mode, item, &id, now) {
                let status = from_enrollment_error(&e, now).status;
                errors.push(json!({
                    id_field: id,
                    "errorCode": u64::from(status) * 1000 + 1,
                    "errorStatus": e.to_string(),
                }));
            }
        }
        ApiResponse::json(
            200,
            json!({"isSuccessful": errors.is_empty(), "errors": errors}),
        )
    }

    fn bulk_one(
        &self,
        collection: Collection,
        mode: &str,
        item: &Value,
        id: &str,
        now: SystemTime,
    ) -> Result<(), EnrollmentError> {
        let etag = item["etag"].as_str();
        let exists = match collection {
            Collection::Enrollments => self.enrollments.individual(id).is_some(),
            _ => self.enrollments.group(id).is_some(),
        };
        let if_match = match mode {
            "create" if exists => {
                return Err(EnrollmentError::Invalid(format!("`{id}` exists already")));
            }
            "updateIfMatchETag" => Some(etag.unwrap_or("\"\"")),
            _ => None,
        };
        if mode == "delete" {
            return match collection {
                Collection::Enrollments => self.enrollments.delete_individual(id, etag),
                _ => self.enrollments.delete_group(id, etag),
            };
        }
        let bytes = item.to_string();
        match collection {
            Collection::Enrollments => {
                let mut e: IndividualEnrollment = read_body(bytes.as_bytes())?;
                e.attestation = generated_keys(e.attestation);
                self.enrollments.put_individual(e, if_match, now).map(drop)
            }
            _ => {
                let mut g: EnrollmentGroup = read_body(bytes.as_bytes())?;
                g.attestation = generated_keys(g.attestation);
                self.enrollments.put_group(g, if_match, now).map(drop)
            }
        }
    }
}
