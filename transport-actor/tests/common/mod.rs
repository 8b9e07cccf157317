//! A mock DPS broker and transports pointed at it, for tests over real sockets.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
/// What a register or a poll answers.
type RequestResult = Result<dps_messages::RegistrationResponse, dps_messages::ProvisioningError>;
use dps_messages::{
    Authentication, Protocol, Register, RegistrationRequest, SetAuthentication, SymmetricKey,
    X509Identity,
};
use dps_mock_broker::script::{DeviceScript, Step};
use dps_mock_broker::{BrokerHandle, ConnectionRecord, MockBroker, Script, TestPki};
use dps_transport_actor::{
    ClientOptions, ProvisioningTransportActor, TransportConfig, TransportConfigBuilder,
};

pub const KEY: &str = dps_mock_broker::TEST_SYMMETRIC_KEY;
pub const GROUP_KEY: &str = dps_mock_broker::TEST_GROUP_KEY;
pub const SCOPE: &str = dps_mock_broker::DEFAULT_ID_SCOPE;
/// Long enough never to fire in a passing test; short enough that a hang fails the test.
pub const LONG: Duration = Duration::from_secs(20);
/// For tests that wait for a deadline on purpose.
pub const SHORT: Duration = Duration::from_millis(400);

/// Client options that end within `deadline`: no floor between polls, retries at most 50 ms
/// apart, without jitter.
pub fn fast_within(deadline: Duration) -> ClientOptions {
    ClientOptions {
        min_interval: Duration::ZERO,
        max_interval: Duration::from_millis(50),
        deadline,
        jitter: false,
        ..ClientOptions::default()
    }
}

/// A script in which device `id` meets `steps`, one per request.
pub fn steps(id: &str, steps: impl IntoIterator<Item = Step>) -> Script {
    Script::new().device(
        id,
        steps
            .into_iter()
            .fold(DeviceScript::new(), DeviceScript::request),
    )
}

pub struct Fixture {
    pub broker: Arc<BrokerHandle>,
    pub pki: Arc<TestPki>,
}

impl Fixture {
    pub fn start(script: Script) -> Self {
        Self::start_with(script, |b| b)
    }

    pub fn start_with(
        script: Script,
        tweak: impl FnOnce(dps_mock_broker::BrokerBuilder) -> dps_mock_broker::BrokerBuilder,
    ) -> Self {
        let pki = Arc::new(TestPki::generate().unwrap());
        let builder = MockBroker::builder()
            .pki(pki.clone())
            .retry_after(0)
            .symmetric_key("sas-dev", KEY)
            .group_key(GROUP_KEY)
            .script(script);
        Self {
            broker: Arc::new(tweak(builder).start().unwrap()),
            pki,
        }
    }

    pub fn builder(&self, protocol: Protocol) -> TransportConfigBuilder {
        TransportConfig::builder(protocol)
            .ca_pem(self.broker.ca_pem().unwrap())
            .timeouts(dps_transport_actor::Timeouts {
                connect: LONG,
                subscribe: LONG,
                publish_ack: LONG,
                response: LONG,
                disconnect: LONG,
            })
    }

    pub fn config(&self, protocol: Protocol) -> TransportConfig {
        self.builder(protocol).build().unwrap()
    }

    /// A request for `id` pointed at the broker's listener for `protocol` (SRS 18_039).
    pub fn request(&self, protocol: Protocol, id: &str) -> RegistrationRequest {
        RegistrationRequest::new(SCOPE, id).with_endpoint(self.broker.uri(protocol).unwrap())
    }

    /// Registers `id` through `transport` at the broker's `protocol` listener.
    pub async fn register(
        &self,
        transport: &Addr<ProvisioningTransportActor>,
        protocol: Protocol,
        id: &str,
    ) -> RequestResult {
        let request = self.request(protocol, id);
        transport.send(Register { request }).await.unwrap()
    }

    pub fn x509(&self, id: &str) -> Authentication {
        let device = self.pki.device(id).unwrap();
        X509Identity::from_pem(device.cert_pem.as_bytes(), device.key_pem.as_bytes())
            .unwrap()
            .into()
    }

    /// A started transport with `auth`, configured by `config`.
    pub async fn transport_with(
        &self,
        config: TransportConfig,
        auth: Authentication,
    ) -> Addr<ProvisioningTransportActor> {
        let addr = ProvisioningTransportActor::new(config).start();
        addr.send(SetAuthentication(auth)).await.unwrap();
        addr
    }

    /// A started X.509 transport for `id`.
    pub async fn transport(
        &self,
        protocol: Protocol,
        id: &str,
    ) -> Addr<ProvisioningTransportActor> {
        self.transport_with(self.config(protocol), self.x509(id))
            .await
    }

    /// Waits, leaving the thread to the actors, until `done` holds for the broker's records.
    pub async fn wait_for(
        &self,
        done: impl FnMut(&[ConnectionRecord]) -> bool,
    ) -> Vec<ConnectionRecord> {
        self.broker.wait_for(LONG, done).await.unwrap()
    }

    /// Waits until the broker has recorded `n` publishes on its latest connection.
    pub async fn wait_for_publishes(&self, n: usize) -> Vec<ConnectionRecord> {
        self.wait_for(move |r| r.last().is_some_and(|c| c.publishes().len() >= n))
            .await
    }

    /// Waits until every connection the broker saw has ended.
    pub async fn wait_all_closed(&self) -> Vec<ConnectionRecord> {
        self.wait_for(|r| !r.is_empty() && r.iter().all(|c| c.is_closed()))
            .await
    }
}

pub fn sas(key: &str) -> Authentication {
    SymmetricKey::new(key).unwrap().into()
}
