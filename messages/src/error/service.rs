//! What the service said when it failed a request.

use std::fmt;

/// What the service said when it failed a request: its status, and the fields of its JSON error
/// body when there was one (`{"errorCode","trackingId","message","timestampUtc"}`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceError {
    /// The status from the response topic.
    pub status: u16,
    /// DPS's six-digit error code, e.g. `401002`.
    pub error_code: Option<i64>,
    /// The service's tracking id for a support request.
    pub tracking_id: Option<String>,
    /// The service's human-readable message.
    pub message: Option<String>,
    /// When the service failed the request.
    pub timestamp_utc: Option<String>,
    /// The response body as received (lossily decoded as UTF-8).
    pub body: String,
}

impl ServiceError {
    /// Reads a failure body. A body that is not the documented JSON shape is kept only as text:
    /// the status alone is enough to classify the failure.
    pub fn from_body(status: u16, body: &[u8]) -> Self {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire {
            error_code: Option<serde_json::Value>,
            tracking_id: Option<String>,
            message: Option<String>,
            timestamp_utc: Option<String>,
        }
        let wire: Option<Wire> = serde_json::from_slice(body).ok();
        let (error_code, tracking_id, message, timestamp_utc) = match wire {
            Some(w) => (
                w.error_code.and_then(crate::response::error_code_from),
                w.tracking_id,
                w.message,
                w.timestamp_utc,
            ),
            None => (None, None, None, None),
        };
        Self {
            status,
            error_code,
            tracking_id,
            message,
            timestamp_utc,
            body: String::from_utf8_lossy(body).into_owned(),
        }
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.message, self.error_code) {
            (Some(m), Some(c)) => write!(f, "{m} (errorCode {c})")?,
            (Some(m), None) => f.write_str(m)?,
            (None, Some(c)) => write!(f, "errorCode {c}")?,
            (None, None) => write!(f, "status {}", self.status)?,
        }
        if let Some(t) = &self.tracking_id {
            write!(f, ", trackingId {t}")?;
        }
        Ok(())
    }
}
