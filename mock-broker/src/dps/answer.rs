//! DPS's own answers, where no script step decides: a register is `202 assigning` (or the
//! 400 or 401 the service gives), a poll the registration as it was decided, with the
//! certificate issued for a CSR.

use serde_json::{Value, json};

use dps_messages::Operation;
use dps_messages::service::RegisterBody;

use super::Ctx;
use super::register::Enrolled;
use crate::issuance::{ChainFault, CheckedCsr, check_csr};
use crate::operations::{Outcome, Pending};
use crate::registration::{Decision, RegistrationRecord, RegistrationStatus};
use crate::registration_id::check_registration_id;

/// What a register body says, as real DPS reads it: the body is optional (the Embedded C SDK
/// sends none), and so is its `registrationId` (the clientId names the device); what is there
/// must be a JSON object.
pub(super) fn read_register_body(body: &[u8]) -> Result<RegisterBody, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(RegisterBody {
            registration_id: None,
            payload: None,
            csr: None,
        });
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the register body is not JSON: {e}"))?;
    let kind = match &value {
        Value::Object(_) => None,
        Value::Null => Some("null"),
        Value::Array(_) => Some("an array"),
        Value::String(_) => Some("a string"),
        Value::Number(_) => Some("a number"),
        Value::Bool(_) => Some("a boolean"),
    };
    if let Some(kind) = kind {
        return Err(format!(
            "the register body must be a JSON object, not {kind}"
        ));
    }
    serde_json::from_value(value).map_err(|e| format!("the register body is not valid: {e}"))
}

impl Ctx<'_> {
    /// What real DPS answers: register -> 202 assigning; poll -> 200 assigned.
    pub(super) fn default_response(&mut self) -> (u16, Value, Option<String>) {
        self.default_response_with(None)
    }

    /// [`default_response`](Self::default_response), an issued chain spoiled as `fault` says.
    pub(super) fn default_response_with(
        &mut self,
        fault: Option<ChainFault>,
    ) -> (u16, Value, Option<String>) {
        match self.operation.clone() {
            Operation::Register => {
                let body = match read_register_body(self.body) {
                    Ok(body) => body,
                    Err(why) => return (400, self.error_body(400, &why), None),
                };
                if let Err(why) = check_registration_id(self.client_id) {
                    return (400, self.error_body(400, &why), None);
                }
                if body
                    .payload
                    .as_ref()
                    .is_some_and(|p| !p.is_null() && !p.is_object())
                {
                    let why = "the payload must be a JSON object";
                    return (400, self.error_body(400, why), None);
                }
                // The clientId names the device; a body may repeat it, never contradict it.
                if let Some(id) = &body.registration_id
                    && id != self.client_id
                {
                    let why = format!(
                        "registrationId `{id}` does not match the clientId `{}`",
                        self.client_id
                    );
                    return (400, self.error_body(400, &why), None);
                }
                let csr = match &body.csr {
                    None => None,
                    Some(csr) => match self.check_csr(csr) {
                        Ok(checked) => Some(checked),
                        Err(why) => return (400, self.error_body(400, &why), None),
                    },
                };
                let (outcome, webhook) = match self.enrolled_outcome(body.payload.as_ref()) {
                    Ok(Enrolled::Now(outcome)) => (outcome, None),
                    Ok(Enrolled::Ask(call)) => (Outcome::Allocating, Some(call)),
                    Err(refused) => return refused,
                };
                let operation_id = self.new_operation_with(body.payload, csr, outcome);
                if let Some(call) = webhook {
                    self.ask_webhook(&operation_id, call);
                }
                let retry_after = Some(self.config.retry_after.to_string());
                (
                    202,
                    json!({"operationId": operation_id, "status": "assigning"}),
                    retry_after,
                )
            }
            Operation::Poll { operation_id } if operation_id.is_empty() => {
                (400, self.error_body(400, "no operationId"), None)
            }
            Operation::Poll { operation_id: id } => {
                let now = self.now;
                let op = match self.books.operations.get_mut(&id, now) {
                    Some(op) if op.registration_id == self.client_id => {
                        if op.outcome != Outcome::Allocating {
                            op.finished.get_or_insert(now);
                        }
                        op.clone()
                    }
                    _ => return (404, self.error_body(404, "operation not found"), None),
                };
                let record = match op.outcome.clone() {
                    Outcome::Allocating => {
                        let retry_after = Some(self.config.retry_after.to_string());
                        let body = json!({"operationId": id, "status": "assigning"});
                        return (202, body, retry_after);
                    }
                    Outcome::Decided(record) => *record,
                    Outcome::Open => self.open_assignment(&op),
                };
                (200, self.answer(&id, &op, &record, fault), None)
            }
        }
    }

    /// A CSR checked as the service does, then against the enrollment's certificate policy.
    fn check_csr(&self, csr: &str) -> Result<CheckedCsr, String> {
        let checked = check_csr(csr, self.client_id, self.api_version)?;
        if self.config.issuance.is_none() {
            return Err("the enrollment has no certificate policy; register without a CSR".into());
        }
        Ok(checked)
    }

    /// The open broker's assignment: the broker's one hub, the device's payload echoed.
    fn open_assignment(&mut self, op: &Pending) -> RegistrationRecord {
        let decision = Decision::Assigned {
            hub: self.config.assigned_hub.clone(),
            device_id: op.registration_id.clone(),
            payload: op.payload.clone(),
            policy: Default::default(),
        };
        self.write_record(&op.registration_id, None, decision)
    }

    /// Writes `decision` into the device's record; returns the record.
    pub(super) fn write_record(
        &mut self,
        registration_id: &str,
        group: Option<&str>,
        decision: Decision,
    ) -> RegistrationRecord {
        let now = self.now;
        self.books
            .registrations
            .write(registration_id, group, decision, now)
    }

    /// The poll's answer for a decided registration: the record as the device sees it, and
    /// for an assignment, the certificate issued for its CSR.
    fn answer(
        &self,
        operation_id: &str,
        op: &Pending,
        record: &RegistrationRecord,
        fault: Option<ChainFault>,
    ) -> Value {
        let mut state = record.state();
        if record.status != RegistrationStatus::Assigned {
            // A refused device is told why, not where it was.
            if let Value::Object(map) = &mut state {
                for field in ["assignedHub", "deviceId", "substatus", "payload"] {
                    map.remove(field);
                }
            }
        } else if let (Some(csr), Some(issuance)) = (&op.csr, &self.config.issuance)
            && let Some(chain) = issuance.chain(csr, &op.registration_id, self.now, fault)
        {
            state["issuedCertificateChain"] = chain.into();
        }
        let status = state["status"].clone();
        json!({"operationId": operation_id, "status": status, "registrationState": state})
    }
}
