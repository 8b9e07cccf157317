//! A register at a broker with enrollments: who the device is enrolled as, whether it may
//! register, and which hub it goes to. A broker with none assigns at the poll, as it always
//! did ([`Outcome::Open`]).

use std::time::SystemTime;

use serde_json::Value;

use super::{Ctx, Dps};
use crate::allocation::{Allocation, WebhookAnswer, allocate, webhook_request};
use crate::clock::unix_now;
use crate::enrollment::{Matched, NoMatch, find_match};
use crate::operations::Outcome;
use crate::registration::Decision;
use crate::webhook::WebhookCall;

/// DPS's code for a device it cannot authenticate (an unknown certificate or key).
pub(crate) const UNAUTHORIZED_CODE: u32 = 401_002;

/// The mock's code for a custom allocation that failed (DPS's is not published).
pub(crate) const CUSTOM_ALLOCATION_FAILED_CODE: u32 = 400_209;

/// What a register at a broker with enrollments comes to.
pub(super) enum Enrolled {
    /// Decided now (or, with no enrollments, at the poll).
    Now(Outcome),
    /// A custom allocation: decided when the webhook answers.
    Ask(Box<WebhookCall>),
}

impl Ctx<'_> {
    /// The outcome of a register from a device that passed the body checks, or the refusal
    /// to answer (status, body, retry-after) when no enrollment admits it.
    pub(super) fn enrolled_outcome(
        &mut self,
        payload: Option<&Value>,
    ) -> Result<Enrolled, (u16, Value, Option<String>)> {
        let enrollments = self.dps.enrollments.clone();
        if enrollments.is_empty() {
            return Ok(Enrolled::Now(Outcome::Open));
        }
        let current = self.current_assignment();
        let found = enrollments.with(|inner| {
            let matched = find_match(
                inner,
                &self.config.id_scope,
                self.client_id,
                self.presented,
                unix_now(),
            )?;
            let allocation = allocate(&matched, &inner.linked_hubs, self.client_id);
            let offered = matched.settings().candidate_hubs(&inner.linked_hubs);
            let request = webhook_request(
                &matched,
                &inner.linked_hubs,
                self.client_id,
                current.as_ref().map(|(h, d)| (h.as_str(), d.as_str())),
                !self.presented.chain.is_empty(),
                payload,
            );
            Ok((matched, allocation, offered, request))
        });
        let (matched, allocation, offered, request) = match found {
            Ok(found) => found,
            Err(NoMatch(why)) => {
                tracing::info!(
                    client_id = self.client_id,
                    why,
                    "no enrollment admits the device"
                );
                let mut body = self.error_body(401, &format!("Unauthorized: {why}"));
                body["errorCode"] = UNAUTHORIZED_CODE.into();
                return Err((401, body, None));
            }
        };
        let group = matched.group_id().map(str::to_owned);
        let decision = if !matched.settings().is_enabled() {
            Decision::Disabled
        } else {
            match allocation {
                Allocation::Hub(hub) => assigned(&matched, self.client_id, hub, None),
                Allocation::NoHub(why) => Decision::Failed {
                    code: CUSTOM_ALLOCATION_FAILED_CODE,
                    message: why,
                },
                Allocation::Webhook(definition) => {
                    return Ok(Enrolled::Ask(Box::new(WebhookCall {
                        operation_id: String::new(),
                        registration_id: self.client_id.to_owned(),
                        url: definition.webhook_url,
                        body: request,
                        offered,
                        timeout: self.config.webhook_timeout,
                        matched,
                    })));
                }
            }
        };
        let record = self.write_record(self.client_id, group.as_deref(), decision);
        Ok(Enrolled::Now(Outcome::Decided(Box::new(record))))
    }

    /// Hands `call` for operation `operation_id` to the server's webhook task; when there is
    /// none, or its queue is full, the registration fails at once.
    pub(super) fn ask_webhook(&mut self, operation_id: &str, mut call: Box<WebhookCall>) {
        call.operation_id = operation_id.to_owned();
        let why = match &self.dps.webhooks {
            None => "no webhook client is running",
            Some(webhooks) => match webhooks.try_send((*call).clone()) {
                Ok(()) => return,
                Err(_) => "too many custom allocations in flight",
            },
        };
        let decision = failed(why);
        let record = self.write_record(self.client_id, call.matched.group_id(), decision);
        if let Some(op) = self.books.operations.get_mut(operation_id, self.now) {
            op.outcome = Outcome::Decided(Box::new(record));
        }
    }

    /// The hub and device id of the device's current assignment, if it has one.
    fn current_assignment(&self) -> Option<(String, String)> {
        let record = self.books.registrations.get(self.client_id)?;
        Some((record.assigned_hub.clone()?, record.device_id.clone()?))
    }
}

fn failed(why: &str) -> Decision {
    Decision::Failed {
        code: CUSTOM_ALLOCATION_FAILED_CODE,
        message: format!("Custom allocation failed: {why}"),
    }
}

/// An assignment to `hub` under `matched`: the payload a custom allocation returned, else the
/// enrollment's.
fn assigned(
    matched: &Matched,
    registration_id: &str,
    hub: String,
    payload: Option<Value>,
) -> Decision {
    Decision::Assigned {
        hub,
        device_id: matched.device_id(registration_id),
        payload: payload.or_else(|| matched.settings().payload.clone()),
        policy: matched.settings().reprovision_policy(),
    }
}

impl Dps {
    /// A custom allocation's webhook answered (or failed to): the registration is decided, and
    /// the device's next poll of the call's operation gets it.
    pub(crate) fn webhook_answered(
        &self,
        call: &WebhookCall,
        answer: Result<WebhookAnswer, String>,
        now: SystemTime,
    ) {
        let decision = match answer {
            Ok(WebhookAnswer { hub, payload }) => {
                assigned(&call.matched, &call.registration_id, hub, payload)
            }
            Err(why) => {
                tracing::info!(
                    registration_id = call.registration_id,
                    why,
                    "custom allocation failed"
                );
                failed(&why)
            }
        };
        let mut state = self.lock();
        let books = &mut state.books;
        let written = books.registrations.write(
            &call.registration_id,
            call.matched.group_id(),
            decision,
            now,
        );
        if let Some(op) = books.operations.get_mut(&call.operation_id, now) {
            op.outcome = Outcome::Decided(Box::new(written));
        }
    }
}
