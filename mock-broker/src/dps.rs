//! The DPS service behind the broker, with no IO: given a request a device published, what to
//! answer. The server module carries out the [`Reply`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use dps_messages::Operation;
use dps_messages::response::ResponseTopic;
use dps_messages::service::{RESPONSE_TOPIC_PREFIX, response_topic};
use serde_json::{Value, json};

use crate::clock::iso8601;
use crate::enrollment::{Enrollments, Presented};
use crate::issuance::{ChainFault, CheckedCsr, Issuance};
use crate::operations::{Operations, Outcome, Pending};
use crate::quota::{Kind, QuotaState, QuotaSummary, Quotas};
use crate::registration::{RegistrationRecord, Registrations};
use crate::script::{ConnectStep, Malformation, Script, Step};
use crate::webhook::WebhookCall;

/// The service settings the default behaviour uses.
#[derive(Debug, Clone)]
pub struct DpsConfig {
    /// The hub every device is assigned to.
    pub assigned_hub: String,
    /// The `retry-after` of a `202 assigning`, in seconds (0 allowed).
    pub retry_after: u64,
    /// The enrollments' certificate policy: with one, a register that carries a CSR is
    /// answered with a certificate; without, such a register is refused (400).
    pub(crate) issuance: Option<Arc<Issuance>>,
    /// The throttling limits (none by default).
    pub(crate) quotas: Quotas,
    /// The id scope a SAS token's resource names.
    pub(crate) id_scope: String,
    /// How long a custom allocation webhook has to answer.
    pub(crate) webhook_timeout: Duration,
}

impl DpsConfig {
    /// A service assigning every device to `assigned_hub`, answering `202 assigning` with
    /// `retry_after` seconds, with no certificate policy.
    pub fn new(assigned_hub: impl Into<String>, retry_after: u64) -> Self {
        Self {
            assigned_hub: assigned_hub.into(),
            retry_after,
            issuance: None,
            quotas: Quotas::default(),
            id_scope: crate::DEFAULT_ID_SCOPE.to_owned(),
            webhook_timeout: crate::webhook::DEFAULT_WEBHOOK_TIMEOUT,
        }
    }
}

/// What to do about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Publish `payload` on `topic` to the device after `delay`.
    Send {
        /// The response topic.
        topic: String,
        /// The response body.
        payload: Vec<u8>,
        /// How long to wait first.
        delay: Duration,
    },
    /// Answer nothing.
    Silent,
    /// Close the device's connection after `delay`.
    Close {
        /// How long to wait first.
        delay: Duration,
    },
    /// Close the device's connection at once, without acknowledging its PUBLISH: the device's
    /// publish fails.
    CloseWithoutPuback,
}

struct Device {
    connect: VecDeque<ConnectStep>,
    requests: VecDeque<Step>,
}

/// What the service keeps of registrations: the operations in flight and each device's record.
#[derive(Default)]
struct Books {
    operations: Operations,
    registrations: Registrations,
}

#[derive(Default)]
struct State {
    devices: HashMap<String, Device>,
    books: Books,
    quota: QuotaState,
}

/// The scripted DPS: the script, the enrollments, the default behaviour and the operations in
/// flight.
pub struct Dps {
    config: DpsConfig,
    script: Script,
    enrollments: Arc<Enrollments>,
    /// Where custom allocation requests go to be sent (the server's webhook task).
    webhooks: Option<tokio::sync::mpsc::Sender<WebhookCall>>,
    state: Mutex<State>,
}

impl Dps {
    /// A service that follows `script`, then `config`'s default behaviour.
    pub fn new(config: DpsConfig, script: Script) -> Self {
        Self {
            config,
            script,
            enrollments: Arc::default(),
            webhooks: None,
            state: Mutex::new(State::default()),
        }
    }

    /// The same service, admitting devices by `enrollments` (when it has any).
    pub(crate) fn with_enrollments(mut self, enrollments: Arc<Enrollments>) -> Self {
        self.enrollments = enrollments;
        self
    }

    /// The enrollments it admits devices by.
    pub(crate) fn enrollments(&self) -> &Enrollments {
        &self.enrollments
    }

    /// The same service, sending custom allocation requests to `webhooks`.
    pub(crate) fn with_webhooks(
        mut self,
        webhooks: tokio::sync::mpsc::Sender<WebhookCall>,
    ) -> Self {
        self.webhooks = Some(webhooks);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The record of `registration_id` (any case), if the device has registered.
    pub(crate) fn registration(&self, registration_id: &str) -> Option<RegistrationRecord> {
        self.lock()
            .books
            .registrations
            .get(registration_id)
            .cloned()
    }

    /// Every registration record, by registration id.
    pub(crate) fn registrations(&self) -> Vec<RegistrationRecord> {
        let mut all: Vec<_> = self.lock().books.registrations.all().cloned().collect();
        all.sort_by(|a, b| a.registration_id.cmp(&b.registration_id));
        all
    }

    /// Forgets the record of `registration_id`: its next registration is an initial
    /// assignment. Whether there was one.
    pub(crate) fn delete_registration(&self, registration_id: &str) -> bool {
        self.lock()
            .books
            .registrations
            .remove(registration_id)
            .is_some()
    }

    /// Deletes the record of `registration_id` when `if_match` (if given) is its etag, as
    /// the service API's `DELETE /registrations/{id}` does.
    pub(crate) fn delete_registration_if(
        &self,
        registration_id: &str,
        if_match: Option<&str>,
    ) -> Result<(), crate::enrollment::EnrollmentError> {
        use crate::enrollment::{EnrollmentError, check_etag};
        let mut state = self.lock();
        let record = state
            .books
            .registrations
            .get(registration_id)
            .ok_or_else(|| EnrollmentError::NotFound(registration_id.to_owned()))?;
        check_etag(if_match, Some(&record.etag))?;
        state.books.registrations.remove(registration_id);
        Ok(())
    }

    fn with_device<T>(
        &self,
        registration_id: &str,
        f: impl FnOnce(&mut Device, &mut Books) -> T,
    ) -> T {
        let mut state = self.lock();
        let State { devices, books, .. } = &mut *state;
        if let Some(device) = devices.get_mut(registration_id) {
            return f(device, books);
        }
        let steps = self.script.steps_for(registration_id);
        let mut device = Device {
            connect: steps.connect.into(),
            requests: steps.requests.into(),
        };
        if device.connect.is_empty() && device.requests.is_empty() {
            // An unscripted device always gets the default behaviour: nothing to remember, so
            // a broker serving millions of them does not keep an entry for each.
            return f(&mut device, books);
        }
        let device = devices.entry(registration_id.to_owned()).or_insert(device);
        f(device, books)
    }

    /// Requests admitted and throttled by the quotas so far.
    pub fn quota_summary(&self) -> QuotaSummary {
        self.lock().quota.summary()
    }

    /// A 429 when `request` is over a quota, as DPS answers it.
    fn throttle(
        &self,
        operation: &Operation,
        rid: &str,
        client_id: &str,
        now: SystemTime,
    ) -> Option<Reply> {
        let quotas = &self.config.quotas;
        if !quotas.any() {
            return None;
        }
        let kind = match operation {
            Operation::Register => Kind::Register,
            Operation::Poll { .. } => Kind::Poll,
        };
        let mut state = self.lock();
        let wait = state.quota.admit(quotas, kind, client_id, now).err()?;
        let body = json!({
            "errorCode": 429_001,
            "trackingId": uuid::Uuid::new_v4().to_string(),
            "message": "Operations are being throttled for this tenant.",
            "timestampUtc": iso8601(now),
        });
        let retry_after = Some(wait.as_secs().to_string());
        Some(send(
            429,
            rid,
            retry_after,
            body.to_string().into_bytes(),
            0,
        ))
    }

    /// The step for the next connection of `client_id`.
    pub fn next_connect_step(&self, client_id: &str) -> ConnectStep {
        self.with_device(client_id, |d, _| d.connect.pop_front())
            .unwrap_or(ConnectStep::Accept)
    }

    /// The reply to a publish from `client_id`, whose username announced `api_version`.
    pub fn on_publish(
        &self,
        client: Client<'_>,
        topic: &str,
        body: &[u8],
        now: SystemTime,
    ) -> Reply {
        let Client {
            id: client_id,
            api_version,
            presented,
        } = client;
        let Some((operation, rid)) = Operation::from_topic(topic) else {
            tracing::debug!(
                client_id,
                topic,
                "ignoring a publish that is not a DPS request"
            );
            return Reply::Silent;
        };
        if let Some(throttled) = self.throttle(&operation, &rid, client_id, now) {
            return throttled;
        }
        self.with_device(client_id, |device, books| {
            let step = device
                .requests
                .pop_front()
                .unwrap_or(Step::Default { delay_ms: 0 });
            let mut ctx = Ctx {
                dps: self,
                config: &self.config,
                books,
                client_id,
                presented,
                api_version,
                operation: &operation,
                rid: &rid,
                body,
                now,
            };
            ctx.reply(step)
        })
    }
}

/// Who sent a request: the clientId, the api-version its username announced, and the
/// credentials it connected with.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    /// The MQTT clientId (the registration id).
    pub id: &'a str,
    /// The `api-version` in the username; empty when it had none.
    pub api_version: &'a str,
    /// Its certificate chain and SAS token, which the enrollments are matched against.
    pub presented: &'a Presented,
}

/// One request being answered.
struct Ctx<'a> {
    dps: &'a Dps,
    config: &'a DpsConfig,
    books: &'a mut Books,
    client_id: &'a str,
    presented: &'a Presented,
    api_version: &'a str,
    operation: &'a Operation,
    rid: &'a str,
    body: &'a [u8],
    now: SystemTime,
}

fn send(
    status: u16,
    rid: &str,
    retry_after: Option<String>,
    payload: Vec<u8>,
    delay_ms: u64,
) -> Reply {
    let topic = response_topic(&ResponseTopic {
        status,
        rid: rid.to_owned(),
        retry_after,
        params: vec![],
    });
    Reply::Send {
        topic,
        payload,
        delay: Duration::from_millis(delay_ms),
    }
}

impl Ctx<'_> {
    fn reply(&mut self, step: Step) -> Reply {
        match step {
            Step::Default { delay_ms } => self.default_reply(None, delay_ms),
            Step::SpoilChain { fault } => self.default_reply(Some(fault), 0),
            Step::RefuseCsr { status, error_code } => {
                let has_csr = answer::read_register_body(self.body).is_ok_and(|b| b.csr.is_some());
                if !self.operation.is_register() || !has_csr {
                    return self.default_reply(None, 0);
                }
                let mut body = self.error_body(status, "the CSR was refused (scripted)");
                if let Some(code) = error_code {
                    body["errorCode"] = code.into();
                }
                send(status, self.rid, None, body.to_string().into_bytes(), 0)
            }
            Step::Respond {
                status,
                body,
                raw_body,
                retry_after,
                delay_ms,
            } => {
                let payload = match (raw_body, body) {
                    (Some(raw), _) => raw.into_bytes(),
                    (None, Some(mut body)) => {
                        if status < 300 {
                            self.fill_operation_id(&mut body);
                        }
                        body.to_string().into_bytes()
                    }
                    (None, None) if status < 300 => {
                        self.default_response().1.to_string().into_bytes()
                    }
                    (None, None) => self
                        .error_body(status, "scripted failure")
                        .to_string()
                        .into_bytes(),
                };
                send(status, self.rid, retry_after, payload, delay_ms)
            }
            Step::Silent => Reply::Silent,
            Step::Close { delay_ms } => Reply::Close {
                delay: Duration::from_millis(delay_ms),
            },
            Step::CloseOnPublish => Reply::CloseWithoutPuback,
            Step::Malformed { what } => self.malformed(what),
        }
    }

    /// DPS's default answer, its chain spoiled as `fault` says.
    fn default_reply(&mut self, fault: Option<ChainFault>, delay_ms: u64) -> Reply {
        let (status, body, retry_after) = self.default_response_with(fault);
        send(
            status,
            self.rid,
            retry_after,
            body.to_string().into_bytes(),
            delay_ms,
        )
    }

    fn malformed(&mut self, what: Malformation) -> Reply {
        let rid = self.rid.to_owned();
        let (_, good_body, _) = self.default_response();
        let good = good_body.to_string().into_bytes();
        let reply = |topic: String, payload: Vec<u8>| Reply::Send {
            topic,
            payload,
            delay: Duration::ZERO,
        };
        match what {
            Malformation::BadJson => send(200, &rid, None, b"{this is not json".to_vec(), 0),
            Malformation::NoRid => {
                reply(format!("{RESPONSE_TOPIC_PREFIX}200/?retry-after=1"), good)
            }
            Malformation::WrongRid => send(200, &format!("{rid}-not-yours"), None, good, 0),
            Malformation::NonNumericStatus => {
                reply(format!("{RESPONSE_TOPIC_PREFIX}abc/?$rid={rid}"), good)
            }
            Malformation::Oversized => {
                let padding = "x".repeat(256 * 1024);
                send(
                    200,
                    &rid,
                    None,
                    json!({"status": "assigned", "padding": padding})
                        .to_string()
                        .into_bytes(),
                    0,
                )
            }
        }
    }

    /// An object body without `operationId` gets the one this request is about.
    fn fill_operation_id(&mut self, body: &mut Value) {
        if let Value::Object(map) = body
            && !map.contains_key("operationId")
        {
            let id = match self.operation {
                Operation::Poll { operation_id } if !operation_id.is_empty() => {
                    operation_id.clone()
                }
                _ => self.new_operation(None),
            };
            map.insert("operationId".into(), Value::String(id));
        }
    }

    fn new_operation(&mut self, payload: Option<Value>) -> String {
        self.new_operation_with(payload, None, Outcome::Open)
    }

    fn new_operation_with(
        &mut self,
        payload: Option<Value>,
        csr: Option<CheckedCsr>,
        outcome: Outcome,
    ) -> String {
        let id = format!(
            "4.{}.{}",
            &uuid::Uuid::new_v4().simple().to_string()[..16],
            uuid::Uuid::new_v4()
        );
        self.books.operations.insert(
            id.clone(),
            Pending {
                registration_id: self.client_id.to_owned(),
                payload,
                csr,
                created: self.now,
                finished: None,
                outcome,
            },
            self.now,
        );
        id
    }

    fn error_body(&self, status: u16, message: &str) -> Value {
        json!({
            "errorCode": u64::from(status) * 1000 + 1,
            "trackingId": uuid::Uuid::new_v4().to_string(),
            "message": message,
            "timestampUtc": iso8601(self.now),
        })
    }
}

mod answer;
mod register;
#[cfg(test)]
mod tests;
