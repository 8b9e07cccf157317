//! The DPS service behind the broker, with no IO: given a request a device published, what to
//! answer. The server module carries out the [`Reply`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use dps_messages::Operation;
use dps_messages::response::ResponseTopic;
use dps_messages::service::{RESPONSE_TOPIC_PREFIX, RegisterBody, response_topic};
use serde_json::{Value, json};

use crate::clock::iso8601;
use crate::issuance::{ChainFault, CheckedCsr, Issuance, check_csr};
use crate::operations::{Operations, Pending};
use crate::quota::{Kind, QuotaState, QuotaSummary, Quotas};
use crate::script::{ConnectStep, Malformation, Script, Step};

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

#[derive(Default)]
struct State {
    devices: HashMap<String, Device>,
    operations: Operations,
    quota: QuotaState,
}

/// The scripted DPS: the script, the default behaviour and the operations in flight.
pub struct Dps {
    config: DpsConfig,
    script: Script,
    state: Mutex<State>,
}

impl Dps {
    /// A service that follows `script`, then `config`'s default behaviour.
    pub fn new(config: DpsConfig, script: Script) -> Self {
        Self {
            config,
            script,
            state: Mutex::new(State::default()),
        }
    }

    fn with_device<T>(
        &self,
        registration_id: &str,
        f: impl FnOnce(&mut Device, &mut Operations) -> T,
    ) -> T {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let State {
            devices,
            operations,
            ..
        } = &mut *state;
        if let Some(device) = devices.get_mut(registration_id) {
            return f(device, operations);
        }
        let steps = self.script.steps_for(registration_id);
        let mut device = Device {
            connect: steps.connect.into(),
            requests: steps.requests.into(),
        };
        if device.connect.is_empty() && device.requests.is_empty() {
            // An unscripted device always gets the default behaviour: nothing to remember, so
            // a broker serving millions of them does not keep an entry for each.
            return f(&mut device, operations);
        }
        let device = devices.entry(registration_id.to_owned()).or_insert(device);
        f(device, operations)
    }

    /// Requests admitted and throttled by the quotas so far.
    pub fn quota_summary(&self) -> QuotaSummary {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .quota
            .summary()
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
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
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
        self.with_device(client_id, |device, operations| {
            let step = device
                .requests
                .pop_front()
                .unwrap_or(Step::Default { delay_ms: 0 });
            let mut ctx = Ctx {
                config: &self.config,
                operations,
                client_id,
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

/// Who sent a request: the clientId, and the api-version its username announced.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    /// The MQTT clientId (the registration id).
    pub id: &'a str,
    /// The `api-version` in the username; empty when it had none.
    pub api_version: &'a str,
}

/// What a register body says, as real DPS reads it: the body is optional (the Embedded C SDK
/// sends none), and so is its `registrationId` (the clientId names the device); what is there
/// must be a JSON object.
fn read_register_body(body: &[u8]) -> Result<RegisterBody, String> {
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

/// One request being answered.
struct Ctx<'a> {
    config: &'a DpsConfig,
    operations: &'a mut Operations,
    client_id: &'a str,
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
    fn rid(&self) -> &str {
        self.rid
    }

    fn reply(&mut self, step: Step) -> Reply {
        match step {
            Step::Default { delay_ms } => self.default_reply(None, delay_ms),
            Step::SpoilChain { fault } => self.default_reply(Some(fault), 0),
            Step::RefuseCsr { status, error_code } => {
                let has_csr = read_register_body(self.body).is_ok_and(|b| b.csr.is_some());
                if !self.operation.is_register() || !has_csr {
                    return self.default_reply(None, 0);
                }
                let mut body = self.error_body(status, "the CSR was refused (scripted)");
                if let Some(code) = error_code {
                    body["errorCode"] = code.into();
                }
                send(status, self.rid(), None, body.to_string().into_bytes(), 0)
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
                send(status, self.rid(), retry_after, payload, delay_ms)
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
            self.rid(),
            retry_after,
            body.to_string().into_bytes(),
            delay_ms,
        )
    }

    fn malformed(&mut self, what: Malformation) -> Reply {
        let rid = self.rid().to_owned();
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
        self.new_operation_with(payload, None)
    }

    fn new_operation_with(&mut self, payload: Option<Value>, csr: Option<CheckedCsr>) -> String {
        let id = format!(
            "4.{}.{}",
            &uuid::Uuid::new_v4().simple().to_string()[..16],
            uuid::Uuid::new_v4()
        );
        self.operations.insert(
            id.clone(),
            Pending {
                registration_id: self.client_id.to_owned(),
                payload,
                csr,
                created: self.now,
                finished: None,
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

    /// What real DPS answers: register -> 202 assigning; poll -> 200 assigned.
    fn default_response(&mut self) -> (u16, Value, Option<String>) {
        self.default_response_with(None)
    }

    /// [`default_response`](Self::default_response), an issued chain spoiled as `fault` says.
    fn default_response_with(&mut self, fault: Option<ChainFault>) -> (u16, Value, Option<String>) {
        match self.operation.clone() {
            Operation::Register => {
                let body = match read_register_body(self.body) {
                    Ok(body) => body,
                    Err(why) => return (400, self.error_body(400, &why), None),
                };
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
                let operation_id = self.new_operation_with(body.payload, csr);
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
                match self.operations.get_mut(&id, now) {
                    Some(op) if op.registration_id == self.client_id => {
                        op.finished.get_or_insert(now);
                        let op = op.clone();
                        (200, self.assignment(&id, &op, fault), None)
                    }
                    _ => (404, self.error_body(404, "operation not found"), None),
                }
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

    fn assignment(&self, operation_id: &str, op: &Pending, fault: Option<ChainFault>) -> Value {
        let mut state = json!({
            "registrationId": op.registration_id,
            "createdDateTimeUtc": iso8601(op.created),
            "assignedHub": self.config.assigned_hub,
            "deviceId": op.registration_id,
            "status": "assigned",
            "substatus": "initialAssignment",
            "lastUpdatedDateTimeUtc": iso8601(self.now),
            "etag": format!("\"{}\"", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        });
        if let Some(payload) = &op.payload {
            state["payload"] = payload.clone();
        }
        if let (Some(csr), Some(issuance)) = (&op.csr, &self.config.issuance)
            && let Some(chain) = issuance.chain(csr, &op.registration_id, self.now, fault)
        {
            state["issuedCertificateChain"] = chain.into();
        }
        json!({"operationId": operation_id, "status": "assigned", "registrationState": state})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::DeviceScript;

    fn register_topic(rid: &str) -> String {
        Operation::Register.topic(rid)
    }

    fn poll_topic(rid: &str, operation_id: &str) -> String {
        Operation::poll(operation_id).topic(rid)
    }

    fn dps(script: Script) -> Dps {
        Dps::new(
            DpsConfig {
                assigned_hub: "hub.example".into(),
                retry_after: 1,
                issuance: None,
                quotas: Quotas::default(),
            },
            script,
        )
    }

    /// A device announcing the Node SDK's api-version.
    fn client(id: &str) -> Client<'_> {
        Client {
            id,
            api_version: "2019-03-31",
        }
    }

    fn parts(reply: Reply) -> (ResponseTopic, Value) {
        let Reply::Send { topic, payload, .. } = reply else {
            panic!("{reply:?}")
        };
        (
            ResponseTopic::parse(&topic).unwrap(),
            serde_json::from_slice(&payload).unwrap(),
        )
    }

    fn register(d: &Dps, id: &str, body: Value) -> Reply {
        d.on_publish(
            client(id),
            &register_topic("r1"),
            body.to_string().as_bytes(),
            SystemTime::now(),
        )
    }

    #[test]
    fn default_register_then_poll_assigns_and_echoes_the_payload() {
        let d = dps(Script::new());
        let (topic, body) = parts(register(
            &d,
            "dev",
            json!({"registrationId": "dev", "payload": {"a": 1}}),
        ));
        assert_eq!(
            (
                topic.status,
                topic.rid.as_str(),
                topic.retry_after.as_deref()
            ),
            (202, "r1", Some("1"))
        );
        assert_eq!(body["status"], "assigning");
        let op = body["operationId"].as_str().unwrap().to_owned();

        let (topic, body) = parts(d.on_publish(
            client("dev"),
            &poll_topic("r2", &op),
            b" ",
            SystemTime::now(),
        ));
        assert_eq!((topic.status, topic.rid.as_str()), (200, "r2"));
        assert_eq!(body["operationId"], op.as_str());
        let state = &body["registrationState"];
        assert_eq!(state["assignedHub"], "hub.example");
        assert_eq!(state["deviceId"], "dev");
        assert_eq!(state["substatus"], "initialAssignment");
        assert_eq!(state["payload"], json!({"a": 1}));
        assert!(state["etag"].is_string() && state["createdDateTimeUtc"].is_string());
    }

    /// The Embedded C SDK sends no register body at all; JSON without a registrationId is
    /// legal too. Both register the device the clientId names.
    #[test]
    fn an_empty_body_or_one_without_registration_id_registers_the_client() {
        let d = dps(Script::new());
        for body in [&b""[..], b"  ", b"{}", br#"{"payload":{"a":1}}"#] {
            let reply = d.on_publish(client("dev"), &register_topic("r"), body, SystemTime::now());
            let (topic, answer) = parts(reply);
            assert_eq!(
                topic.status,
                202,
                "{:?}: {answer}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_register_body_that_is_not_an_object_says_what_it_is() {
        let d = dps(Script::new());
        for (body, says) in [
            (&b"null"[..], "not null"),
            (b"[]", "not an array"),
            (b"7", "not a number"),
            (br#""dev""#, "not a string"),
            (b"{nope", "not JSON"),
            (br#"{"registrationId": 7}"#, "not valid"),
        ] {
            let reply = d.on_publish(client("dev"), &register_topic("r"), body, SystemTime::now());
            let (topic, answer) = parts(reply);
            assert_eq!(topic.status, 400);
            let message = answer["message"].as_str().unwrap();
            assert!(message.contains(says), "{message}");
        }
    }

    #[test]
    fn a_poll_of_a_finished_operation_expires() {
        let d = dps(Script::new());
        let t0 = SystemTime::now();
        let (_, body) = parts(d.on_publish(client("dev"), &register_topic("r1"), b"", t0));
        let op = body["operationId"].as_str().unwrap().to_owned();
        let poll = |at| {
            parts(d.on_publish(client("dev"), &poll_topic("r2", &op), b" ", at))
                .0
                .status
        };
        assert_eq!(poll(t0), 200);
        assert_eq!(
            poll(t0 + Duration::from_secs(4 * 60)),
            200,
            "still there 4 minutes on"
        );
        let gone = t0 + crate::operations::FINISHED_OPERATION_TTL;
        assert_eq!(poll(gone), 404);
    }

    #[test]
    fn default_rejects_bad_registers_and_unknown_operations() {
        let d = dps(Script::new());
        let reply = d.on_publish(
            client("dev"),
            &register_topic("r"),
            b"nope",
            SystemTime::now(),
        );
        assert_eq!(parts(reply).0.status, 400);
        assert_eq!(
            parts(register(&d, "dev", json!({"registrationId": "other"})))
                .0
                .status,
            400
        );
        let reply = d.on_publish(
            client("dev"),
            &poll_topic("r", "missing"),
            b" ",
            SystemTime::now(),
        );
        let (topic, body) = parts(reply);
        assert_eq!(topic.status, 404);
        assert_eq!(body["errorCode"], 404001);
        // Another device's operation is not yours.
        let (_, body) = parts(register(&d, "dev", json!({"registrationId": "dev"})));
        let op = body["operationId"].as_str().unwrap();
        assert_eq!(
            parts(d.on_publish(client("eve"), &poll_topic("r", op), b" ", SystemTime::now()))
                .0
                .status,
            404
        );
    }

    #[test]
    fn only_scripted_devices_are_remembered_and_their_steps_are_not_replayed() {
        let script = Script::new().device(
            "scripted",
            DeviceScript::new().connect(ConnectStep::Refuse { code: 5 }),
        );
        let d = dps(script);
        assert_eq!(d.next_connect_step("plain"), ConnectStep::Accept);
        assert_eq!(
            parts(register(&d, "plain", json!({"registrationId": "plain"})))
                .0
                .status,
            202
        );
        assert_eq!(
            d.next_connect_step("scripted"),
            ConnectStep::Refuse { code: 5 }
        );
        // Used up, the script is not started again on the next connection.
        assert_eq!(d.next_connect_step("scripted"), ConnectStep::Accept);
        let state = d.state.lock().unwrap();
        assert!(state.devices.contains_key("scripted"));
        assert!(!state.devices.contains_key("plain"));
    }

    #[test]
    fn scripted_steps_are_consumed_in_order_then_default() {
        let script = Script::new().device(
            "dev",
            DeviceScript::new()
                .request(Step::respond(429).with_retry_after(3))
                .request(Step::Silent)
                .request(Step::Close { delay_ms: 7 }),
        );
        let d = dps(script);
        let body = json!({"registrationId": "dev"});
        let (topic, _) = parts(register(&d, "dev", body.clone()));
        assert_eq!(
            (topic.status, topic.retry_after.as_deref()),
            (429, Some("3"))
        );
        assert_eq!(register(&d, "dev", body.clone()), Reply::Silent);
        assert_eq!(
            register(&d, "dev", body.clone()),
            Reply::Close {
                delay: Duration::from_millis(7)
            }
        );
        assert_eq!(parts(register(&d, "dev", body)).0.status, 202);
    }

    #[test]
    fn each_device_gets_its_own_copy_of_the_fallback() {
        let d = dps(Script::new().fallback(DeviceScript::new().request(Step::Silent)));
        assert_eq!(
            register(&d, "a", json!({"registrationId": "a"})),
            Reply::Silent
        );
        assert_eq!(
            register(&d, "b", json!({"registrationId": "b"})),
            Reply::Silent
        );
        assert_eq!(
            parts(register(&d, "a", json!({"registrationId": "a"})))
                .0
                .status,
            202
        );
    }

    #[test]
    fn scripted_success_bodies_get_the_operation_id() {
        let script = Script::new().device(
            "dev",
            DeviceScript::new()
                .request(Step::respond(200).with_body(json!({"status": "failed"})))
                .request(Step::respond(401)),
        );
        let d = dps(script);
        let reply = d.on_publish(
            client("dev"),
            &poll_topic("r", "op-9"),
            b" ",
            SystemTime::now(),
        );
        assert_eq!(
            parts(reply).1,
            json!({"status": "failed", "operationId": "op-9"})
        );
        let (topic, body) = parts(register(&d, "dev", json!({})));
        assert_eq!(topic.status, 401);
        assert_eq!(body["errorCode"], 401001);
        assert!(body["trackingId"].is_string() && body["timestampUtc"].is_string());
    }

    #[test]
    fn malformed_steps_break_what_they_say() {
        use Malformation::*;
        let steps = [BadJson, NoRid, WrongRid, NonNumericStatus, Oversized];
        let mut script = DeviceScript::new();
        for what in steps {
            script = script.request(Step::Malformed { what });
        }
        let d = dps(Script::new().device("dev", script));
        let body = json!({"registrationId": "dev"});
        let mut replies = steps
            .iter()
            .map(|_| match register(&d, "dev", body.clone()) {
                Reply::Send { topic, payload, .. } => (topic, payload),
                other => panic!("{other:?}"),
            });
        let (topic, payload) = replies.next().unwrap();
        assert_eq!(ResponseTopic::parse(&topic).unwrap().status, 200);
        assert!(serde_json::from_slice::<Value>(&payload).is_err());
        let (topic, _) = replies.next().unwrap();
        assert!(ResponseTopic::parse(&topic).is_err());
        let (topic, _) = replies.next().unwrap();
        assert_eq!(ResponseTopic::parse(&topic).unwrap().rid, "r1-not-yours");
        let (topic, _) = replies.next().unwrap();
        assert!(ResponseTopic::parse(&topic).is_err());
        let (_, payload) = replies.next().unwrap();
        assert!(payload.len() > 256 * 1024);
    }

    #[test]
    fn connect_steps_run_out_into_accept() {
        let d =
            dps(Script::new().device("dev", DeviceScript::new().connect(ConnectStep::FailSuback)));
        assert_eq!(d.next_connect_step("dev"), ConnectStep::FailSuback);
        assert_eq!(d.next_connect_step("dev"), ConnectStep::Accept);
        assert_eq!(d.next_connect_step("other"), ConnectStep::Accept);
    }

    #[test]
    fn ignores_publishes_that_are_not_requests() {
        let d = dps(Script::new());
        assert_eq!(
            d.on_publish(
                client("dev"),
                "devices/dev/messages/events/",
                b"x",
                SystemTime::now()
            ),
            Reply::Silent
        );
        assert_eq!(
            d.on_publish(
                client("dev"),
                "$dps/registrations/PUT/iotdps-register/?x=1",
                b"{}",
                SystemTime::now()
            ),
            Reply::Silent
        );
    }

    /// A scripted refusal of a CSR is about the CSR: a register without one is answered as
    /// usual, and so is a poll.
    #[test]
    fn a_csr_refusal_step_lets_a_register_without_a_csr_through() {
        let refuse = || Step::RefuseCsr {
            status: 400,
            error_code: None,
        };
        let d = dps(Script::new().device(
            "dev",
            DeviceScript::new().request(refuse()).request(refuse()),
        ));
        let (topic, body) = parts(register(&d, "dev", json!({"registrationId": "dev"})));
        assert_eq!(topic.status, 202, "{body}");
        let op = body["operationId"].as_str().unwrap().to_owned();
        let (topic, _) = parts(d.on_publish(
            client("dev"),
            &poll_topic("r2", &op),
            b" ",
            SystemTime::now(),
        ));
        assert_eq!(topic.status, 200);
    }

    /// A scripted 2xx without a body gets the default body; one without an operationId gets
    /// a real one the device can poll.
    #[test]
    fn a_scripted_success_is_filled_in_with_a_pollable_operation() {
        let d = dps(Script::new().device(
            "dev",
            DeviceScript::new()
                .request(Step::respond(202).with_body(json!({"status": "assigning"})))
                .request(Step::respond(202)),
        ));
        // A body without an operationId to the register: a new operation's.
        let (topic, body) = parts(register(&d, "dev", json!({"registrationId": "dev"})));
        assert_eq!(
            (topic.status, body["status"].as_str()),
            (202, Some("assigning"))
        );
        let op = body["operationId"].as_str().unwrap().to_owned();
        assert!(op.starts_with("4."), "{op}");
        // A body without an operationId to the poll: the polled one.
        let poll = |rid| {
            parts(d.on_publish(
                client("dev"),
                &poll_topic(rid, &op),
                b" ",
                SystemTime::now(),
            ))
        };
        let (topic, body) = poll("p1");
        assert_eq!(
            (topic.status, body["operationId"].as_str()),
            (202, Some(op.as_str()))
        );
        let (topic, body) = poll("p2");
        assert_eq!(
            (topic.status, body["status"].as_str()),
            (200, Some("assigned"))
        );
    }
}
