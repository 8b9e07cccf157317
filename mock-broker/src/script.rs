//! Scripts: what the broker answers, per registration id, one step per connection or request.
//!
//! A script is JSON (see `mock-broker/scenarios/`) or built in code:
//!
//! ```
//! use dps_mock_broker::script::{ConnectStep, DeviceScript, Script, Step};
//!
//! let script = Script::new()
//!     .device("dev-1", DeviceScript::new()
//!         .request(Step::respond(429).with_retry_after("1"))
//!         .request(Step::Default { delay_ms: 0 }))
//!     .fallback(DeviceScript::new().connect(ConnectStep::Refuse { code: 5 }));
//! assert_eq!(script.devices["dev-1"].requests.len(), 2);
//! ```
//!
//! Each registration id works through its own copy of its steps (the fallback's, when the script
//! names no steps for it). When the steps run out, the broker behaves as real DPS does by
//! default: register answers `202 assigning`, poll answers `200 assigned`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

pub use crate::issuance::ChainFault;

/// A whole script: steps per registration id, and steps for any other id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Steps for named registration ids.
    #[serde(default)]
    pub devices: BTreeMap<String, DeviceScript>,
    /// Steps every other registration id works through (each its own copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<DeviceScript>,
}

/// One device's steps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceScript {
    /// One step per connection, in order; then `accept`.
    #[serde(default)]
    pub connect: Vec<ConnectStep>,
    /// One step per register or poll request, in order; then `default`.
    #[serde(default)]
    pub requests: Vec<Step>,
}

/// What the broker does with a connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ConnectStep {
    /// Check the credentials and answer CONNACK as DPS would.
    Accept,
    /// Refuse with this CONNACK return code (1..=5), whatever the credentials.
    Refuse {
        /// The CONNACK return code.
        code: u8,
    },
    /// Wait before answering CONNACK.
    DelayConnack {
        /// How long, in milliseconds.
        ms: u64,
    },
    /// Close the connection without sending CONNACK.
    DropBeforeConnack,
    /// Accept, then close the connection at once.
    CloseAfterConnack,
    /// Accept, then refuse every subscription (SUBACK 0x80).
    FailSuback,
    /// Accept, then close the connection right after sending the SUBACK.
    CloseAfterSuback,
}

/// What the broker does with one register or poll request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Answer as DPS does by default.
    Default {
        /// Wait this long first, in milliseconds.
        #[serde(default)]
        delay_ms: u64,
    },
    /// Answer with this status.
    Respond {
        /// The status on the response topic.
        status: u16,
        /// A JSON body. Absent: the default body for a status below 300, else a DPS error
        /// body. For a status below 300, an object without `operationId` gets the request's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<Value>,
        /// A body sent as these exact bytes instead (for bodies that are not JSON).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        raw_body: Option<String>,
        /// The `retry-after` query parameter, sent as given (a number or any text).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "text_or_number"
        )]
        retry_after: Option<String>,
        /// Wait this long first, in milliseconds.
        #[serde(default)]
        delay_ms: u64,
    },
    /// Never answer.
    Silent,
    /// Close the connection instead of answering (after acknowledging the request).
    Close {
        /// Wait this long first, in milliseconds.
        #[serde(default)]
        delay_ms: u64,
    },
    /// Close the connection on the request, without acknowledging it (no PUBACK): the device's
    /// publish fails.
    CloseOnPublish,
    /// Answer with something broken.
    Malformed {
        /// What to break.
        what: Malformation,
    },
    /// For a register that carries a CSR: refuse it with this status (as an enrollment without
    /// a certificate policy does). Any other request gets the default answer.
    RefuseCsr {
        /// The status, e.g. 400.
        status: u16,
        /// The body's `errorCode`; absent: the status times 1000 plus 1.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error_code: Option<u64>,
    },
    /// Answer as DPS does by default, but spoil the certificate chain an assignment carries.
    SpoilChain {
        /// How.
        fault: ChainFault,
    },
}

/// The ways [`Step::Malformed`] breaks a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Malformation {
    /// Status 200 with a body that is not JSON.
    BadJson,
    /// A response topic without `$rid`.
    NoRid,
    /// A well-formed response carrying another request's `$rid`.
    WrongRid,
    /// A response topic whose status is not a number.
    NonNumericStatus,
    /// Status 200 with a 256 KiB body, over the DPS message limit.
    Oversized,
}

fn text_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

impl Step {
    /// A response with `status` and the default body for it: below 300, DPS's default answer
    /// to the request (`202 assigning` for a register, `200 assigned` for a poll); from 300, a
    /// DPS error body whose `errorCode` is the status times 1000 plus 1 (`401001` for 401) and
    /// whose `message` is "scripted failure". Give a body of your own with
    /// [`with_body`](Self::with_body), e.g. `{"errorCode": 401002, ...}`.
    pub fn respond(status: u16) -> Self {
        Self::Respond {
            status,
            body: None,
            raw_body: None,
            retry_after: None,
            delay_ms: 0,
        }
    }

    /// Sets the JSON body of a [`Step::Respond`]; other steps are returned as they are.
    pub fn with_body(mut self, value: Value) -> Self {
        if let Self::Respond { body, .. } = &mut self {
            *body = Some(value);
        }
        self
    }

    /// Sets the raw body of a [`Step::Respond`].
    pub fn with_raw_body(mut self, text: impl Into<String>) -> Self {
        if let Self::Respond { raw_body, .. } = &mut self {
            *raw_body = Some(text.into());
        }
        self
    }

    /// Sets the `retry-after` of a [`Step::Respond`].
    pub fn with_retry_after(mut self, value: impl ToString) -> Self {
        if let Self::Respond { retry_after, .. } = &mut self {
            *retry_after = Some(value.to_string());
        }
        self
    }

    /// Delays a [`Step::Default`], [`Step::Respond`] or [`Step::Close`].
    pub fn after_ms(mut self, ms: u64) -> Self {
        match &mut self {
            Self::Default { delay_ms }
            | Self::Respond { delay_ms, .. }
            | Self::Close { delay_ms } => *delay_ms = ms,
            Self::Silent
            | Self::CloseOnPublish
            | Self::Malformed { .. }
            | Self::RefuseCsr { .. }
            | Self::SpoilChain { .. } => {}
        }
        self
    }
}

impl DeviceScript {
    /// No steps: the device gets the default behaviour.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a connection step.
    pub fn connect(mut self, step: ConnectStep) -> Self {
        self.connect.push(step);
        self
    }

    /// Adds a request step.
    pub fn request(mut self, step: Step) -> Self {
        self.requests.push(step);
        self
    }
}

/// A script that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The file cannot be read.
    #[error("cannot read script {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The JSON is not a script.
    #[error("invalid script: {0}")]
    Parse(#[from] serde_json::Error),
}

impl Script {
    /// An empty script: default behaviour for everyone.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the steps of `registration_id`.
    pub fn device(mut self, registration_id: impl Into<String>, steps: DeviceScript) -> Self {
        self.devices.insert(registration_id.into(), steps);
        self
    }

    /// Sets the steps of every other registration id.
    pub fn fallback(mut self, steps: DeviceScript) -> Self {
        self.fallback = Some(steps);
        self
    }

    /// Reads a script from JSON text.
    pub fn from_json(text: &str) -> Result<Self, ScriptError> {
        Ok(serde_json::from_str(text)?)
    }

    /// Reads a script from a JSON file.
    pub fn load(path: &Path) -> Result<Self, ScriptError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScriptError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// The steps `registration_id` starts with.
    pub(crate) fn steps_for(&self, registration_id: &str) -> DeviceScript {
        self.devices
            .get(registration_id)
            .or(self.fallback.as_ref())
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_steps_read_from_json_as_documented() {
        let steps: Vec<Step> = serde_json::from_str(
            r#"[{"kind":"refuse_csr","status":400,"error_code":400209},
                {"kind":"refuse_csr","status":403},
                {"kind":"spoil_chain","fault":"other_key"}]"#,
        )
        .unwrap();
        assert_eq!(
            steps,
            vec![
                Step::RefuseCsr {
                    status: 400,
                    error_code: Some(400_209)
                },
                Step::RefuseCsr {
                    status: 403,
                    error_code: None
                },
                Step::SpoilChain {
                    fault: ChainFault::OtherKey
                },
            ]
        );
        // Delays do not apply to them.
        assert_eq!(steps[2].clone().after_ms(5), steps[2]);
    }
    use serde_json::json;

    #[test]
    fn reads_every_step_kind_from_json() {
        let script = Script::from_json(
            r#"{
              "devices": {
                "dev": {
                  "connect": [
                    {"kind": "refuse", "code": 5}, {"kind": "delay_connack", "ms": 10},
                    {"kind": "drop_before_connack"}, {"kind": "close_after_connack"},
                    {"kind": "fail_suback"}, {"kind": "close_after_suback"}, {"kind": "accept"}
                  ],
                  "requests": [
                    {"kind": "respond", "status": 429, "retry_after": 1},
                    {"kind": "respond", "status": 200, "retry_after": "abc", "body": {"status": "assigned"}},
                    {"kind": "respond", "status": 500, "raw_body": "oops", "delay_ms": 5},
                    {"kind": "silent"}, {"kind": "close"}, {"kind": "default", "delay_ms": 3},
                    {"kind": "close_on_publish"},
                    {"kind": "malformed", "what": "bad_json"}, {"kind": "malformed", "what": "no_rid"},
                    {"kind": "malformed", "what": "wrong_rid"},
                    {"kind": "malformed", "what": "non_numeric_status"},
                    {"kind": "malformed", "what": "oversized"}
                  ]
                }
              },
              "fallback": {"requests": [{"kind": "silent"}]}
            }"#,
        )
        .unwrap();
        let dev = &script.devices["dev"];
        assert_eq!(dev.connect.len(), 7);
        assert_eq!(dev.requests.len(), 12);
        assert_eq!(dev.requests[0], Step::respond(429).with_retry_after(1));
        assert_eq!(
            dev.requests[1],
            Step::respond(200)
                .with_retry_after("abc")
                .with_body(json!({"status": "assigned"}))
        );
        assert_eq!(
            dev.requests[2],
            Step::respond(500).with_raw_body("oops").after_ms(5)
        );
        assert_eq!(script.steps_for("other").requests, vec![Step::Silent]);
        assert_eq!(script.steps_for("dev"), *dev);
    }

    #[test]
    fn rejects_unknown_kinds_and_fields() {
        assert!(
            Script::from_json(r#"{"devices": {"d": {"requests": [{"kind": "dance"}]}}}"#).is_err()
        );
        assert!(Script::from_json(r#"{"devices": {}, "extra": 1}"#).is_err());
        assert!(Script::from_json("not json").is_err());
    }

    #[test]
    fn round_trips_through_json() {
        let script = Script::new()
            .device(
                "a",
                DeviceScript::new()
                    .connect(ConnectStep::FailSuback)
                    .request(Step::Silent),
            )
            .fallback(DeviceScript::new().request(Step::Close { delay_ms: 1 }));
        let text = serde_json::to_string(&script).unwrap();
        assert_eq!(Script::from_json(&text).unwrap(), script);
    }

    #[test]
    fn an_empty_script_gives_every_device_no_steps() {
        assert_eq!(Script::new().steps_for("x"), DeviceScript::default());
    }
}
