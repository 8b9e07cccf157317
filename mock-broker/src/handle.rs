//! A running broker: its addresses, what it recorded and decided, and stopping it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::builder::StopSender;
use crate::enrollment::Enrollments;
use crate::record::ConnectionRecord;
use crate::recorder::{Recorder, WaitTimedOut};
use crate::registration::RegistrationRecord;
use crate::{IssuingCa, QuotaSummary, TestPki, server, service_api};

/// A running broker. Dropping it stops the broker.
pub struct BrokerHandle {
    pub(crate) addr: SocketAddr,
    pub(crate) ws_addr: Option<SocketAddr>,
    pub(crate) tcp_addr: Option<SocketAddr>,
    pub(crate) service_addr: Option<SocketAddr>,
    pub(crate) service_policy: Option<Arc<service_api::ServicePolicy>>,
    pub(crate) pki: Option<Arc<TestPki>>,
    pub(crate) ca_pem: Option<String>,
    pub(crate) issuing_ca: Option<Arc<IssuingCa>>,
    pub(crate) enrollments: Arc<Enrollments>,
    pub(crate) shared: Arc<server::Shared>,
    pub(crate) recorder: Arc<Recorder>,
    pub(crate) stop: Option<StopSender>,
    pub(crate) thread: Option<std::thread::JoinHandle<()>>,
}

impl BrokerHandle {
    /// The MQTT-over-TLS address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The MQTT-over-WebSocket address, if that listener is on.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_addr
    }

    /// The plain-TCP MQTT address, if that listener is on.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The service API's address, when it is served ([`BrokerBuilder::service_api`](crate::BrokerBuilder::service_api)).
    pub fn service_addr(&self) -> Option<SocketAddr> {
        self.service_addr
    }

    /// The connection string of the service API for the official service SDKs
    /// (`HostName=localhost;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=...`),
    /// when it is served. The SDKs dial port 443: the host carries the port only when the
    /// listener is elsewhere (for clients that take one, such as this crate's tests).
    pub fn service_connection_string(&self) -> Option<String> {
        let (addr, policy) = (self.service_addr?, self.service_policy.as_ref()?);
        let host = match addr.port() {
            443 => "localhost".to_owned(),
            port => format!("localhost:{port}"),
        };
        Some(policy.connection_string(&host))
    }

    /// `mqtts://127.0.0.1:<port>`, for a request's endpoint override.
    pub fn mqtts_uri(&self) -> String {
        format!("mqtts://{}", self.addr)
    }

    /// `wss://127.0.0.1:<port>/$iothub/websocket`, if the WebSocket listener is on.
    pub fn wss_uri(&self) -> Option<String> {
        self.ws_addr
            .map(|a| format!("wss://{a}{}", dps_messages::connect::WEBSOCKET_PATH))
    }

    /// The endpoint URI for `protocol`: [`BrokerHandle::mqtts_uri`] or
    /// [`BrokerHandle::wss_uri`]; `None` when that listener is off.
    pub fn uri(&self, protocol: dps_messages::Protocol) -> Option<String> {
        match protocol {
            dps_messages::Protocol::Mqtt => Some(self.mqtts_uri()),
            dps_messages::Protocol::MqttWs => self.wss_uri(),
        }
    }

    /// Requests the quotas admitted and throttled so far ([`BrokerBuilder::quotas`](crate::BrokerBuilder::quotas)).
    pub fn quota_summary(&self) -> QuotaSummary {
        self.shared.dps.quota_summary()
    }

    /// The CA that signs the certificates the broker issues, when it issues any
    /// ([`BrokerBuilder::issue_certificates`](crate::BrokerBuilder::issue_certificates)).
    pub fn issuing_ca(&self) -> Option<&Arc<IssuingCa>> {
        self.issuing_ca.as_ref()
    }

    /// The broker's enrollments, to change while it runs: a write takes effect from the next
    /// registration.
    pub fn enrollments(&self) -> &Enrollments {
        &self.enrollments
    }

    /// DPS's record of `registration_id` (any case): its hub, device id, status and
    /// substatus, once it has registered.
    pub fn registration(&self, registration_id: &str) -> Option<RegistrationRecord> {
        self.shared.dps.registration(registration_id)
    }

    /// Every registration record, by registration id.
    pub fn registrations(&self) -> Vec<RegistrationRecord> {
        self.shared.dps.registrations()
    }

    /// Deletes the record of `registration_id`, as DPS's service API does: the device's next
    /// registration is an initial assignment. Whether there was one.
    pub fn delete_registration(&self, registration_id: &str) -> bool {
        self.shared.dps.delete_registration(registration_id)
    }

    /// The test PKI the broker uses: the one given to [`BrokerBuilder::pki`](crate::BrokerBuilder::pki), or the one it
    /// generated. Mint device certificates with it (`broker.pki().unwrap().device("dev-1")`).
    /// `None` when the broker was given a server certificate of its own
    /// ([`BrokerBuilder::server_cert`](crate::BrokerBuilder::server_cert)) and no PKI.
    pub fn pki(&self) -> Option<&Arc<TestPki>> {
        self.pki.as_ref()
    }

    /// The CA certificate (PEM) clients must trust, when the broker knows it.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The record of every connection so far (of the live ones only, with
    /// [`BrokerBuilder::forget_ended`](crate::BrokerBuilder::forget_ended)).
    pub fn records(&self) -> Vec<ConnectionRecord> {
        self.recorder.snapshot()
    }

    /// Waits up to `timeout`, without blocking the thread, until `done` holds for the records:
    /// for async tests, on actix or tokio alike; it wakes on every change.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl FnMut(&[ConnectionRecord]) -> bool,
    ) -> Result<Vec<ConnectionRecord>, WaitTimedOut> {
        self.recorder.wait_for(timeout, done).await
    }

    /// Waits up to `timeout`, blocking the thread, until `done` holds for the records: for plain
    /// `#[test]`s and threads, never inside an async test (it would stall the test's actors);
    /// it wakes on every change.
    pub fn wait_until(
        &self,
        timeout: Duration,
        done: impl FnMut(&[ConnectionRecord]) -> bool,
    ) -> Result<Vec<ConnectionRecord>, WaitTimedOut> {
        self.recorder.wait_until(timeout, done)
    }

    /// Stops the broker and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for BrokerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}
