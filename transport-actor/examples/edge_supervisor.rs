//! An edge application's supervising actor provisions its device through actor messages, and
//! restarts the transport when it gets stuck.
//!
//! `DeviceManager` owns a supervised `ProvisioningTransportActor`, registers, polls at the
//! interval the service asks for, disconnects once assigned, and reports where the device
//! belongs. A watchdog restarts the transport when a request goes unanswered for two seconds:
//! the request waiting is answered with a `Restarted` error, which says "send it again", and
//! the manager does. The service is the in-process mock DPS broker, scripted to leave the first
//! poll unanswered, so this runs with no account and shows the restart:
//!
//! ```sh
//! cargo run -p dps-transport-actor --example edge_supervisor
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use dps_messages::{
    Disconnect, Protocol, ProvisioningError, QueryStatus, Register, RegistrationRequest,
    RegistrationResponse, RegistrationStatus, SetAuthentication, X509Identity,
};
use dps_mock_broker::script::{DeviceScript, Step};
use dps_mock_broker::{MockBroker, Script, TestPki};
use dps_transport_actor::{ProvisioningTransportActor, Restart, TransportConfig};

/// Where the device ended up, or why not.
type Outcome = Result<String, ProvisioningError>;

/// How long a request may go unanswered before the transport is restarted.
const WATCHDOG: Duration = Duration::from_secs(2);

/// The edge application's actor in charge of the device's identity.
struct DeviceManager {
    transport: Addr<ProvisioningTransportActor>,
    request: RegistrationRequest,
    /// The operation to poll, once the service gave one.
    operation_id: Option<String>,
    watchdog: Option<SpawnHandle>,
    done: Option<tokio::sync::oneshot::Sender<Outcome>>,
}

impl Actor for DeviceManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.send_next(ctx);
    }
}

fn flatten(
    result: Result<Result<RegistrationResponse, ProvisioningError>, MailboxError>,
) -> Result<RegistrationResponse, ProvisioningError> {
    result.unwrap_or_else(|e| Err(e.into()))
}

impl DeviceManager {
    /// Sends the next request (a poll of the operation, or a register), under the watchdog.
    fn send_next(&mut self, ctx: &mut Context<Self>) {
        let request = self.request.clone();
        let next: Pin<Box<dyn Future<Output = _>>> = match self.operation_id.clone() {
            Some(operation_id) => Box::pin(self.transport.send(QueryStatus {
                request,
                operation_id,
            })),
            None => Box::pin(self.transport.send(Register { request })),
        };
        self.watchdog = Some(ctx.run_later(WATCHDOG, |manager, _| {
            println!("no answer in {WATCHDOG:?}: restarting the transport");
            manager.transport.do_send(Restart);
        }));
        ctx.spawn(
            next.into_actor(self)
                .map(|result, manager, ctx| manager.on_response(flatten(result), ctx)),
        );
    }

    fn on_response(
        &mut self,
        result: Result<RegistrationResponse, ProvisioningError>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(watchdog) = self.watchdog.take() {
            ctx.cancel_future(watchdog);
        }
        let response = match result {
            Ok(response) => response,
            // A restart (or a lost connection) says "send it again".
            Err(error) if error.is_retryable() => {
                println!("{error}: asking again");
                return self.send_next(ctx);
            }
            Err(error) => return self.finish(Err(error), ctx),
        };
        println!(
            "service: {} ({}), next check in {:?}",
            response.result.status, response.status_code, response.polling_interval
        );
        match response.result.status {
            RegistrationStatus::Assigned => {
                let hub = response
                    .result
                    .registration_state
                    .and_then(|s| s.assigned_hub)
                    .unwrap_or_default();
                self.finish(Ok(hub), ctx);
            }
            RegistrationStatus::Assigning | RegistrationStatus::Registering => {
                // Poll the operation; a throttled register (no operation yet) registers again.
                self.operation_id = response.result.operation_id;
                ctx.run_later(response.polling_interval, |manager, ctx| {
                    manager.send_next(ctx)
                });
            }
            other => self.finish(
                Err(ProvisioningError::InvalidRequest(format!(
                    "registration ended as {other}"
                ))),
                ctx,
            ),
        }
    }

    fn finish(&mut self, outcome: Outcome, ctx: &mut Context<Self>) {
        let disconnect = self.transport.send(Disconnect::default());
        ctx.spawn(disconnect.into_actor(self).map(move |_, manager, ctx| {
            if let Some(done) = manager.done.take() {
                let _ = done.send(outcome);
            }
            ctx.stop();
        }));
    }
}

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The stand-in for DPS: a real MQTT server over TLS with a generated PKI. It answers the
    // register, then never answers the first poll; later polls get DPS's default answer.
    let pki = Arc::new(TestPki::generate()?);
    let script = Script::new().device(
        "edge-gateway-01",
        DeviceScript::new()
            .request(Step::Default { delay_ms: 0 })
            .request(Step::Silent),
    );
    let broker = MockBroker::builder()
        .pki(pki.clone())
        .retry_after(1)
        .script(script)
        .start()?;
    let device = pki.device("edge-gateway-01")?;

    let config = TransportConfig::builder(Protocol::Mqtt)
        .ca_pem(broker.ca_pem().unwrap_or_default())
        .build()?;
    let transport = Supervisor::start(move |_| ProvisioningTransportActor::new(config));
    let identity = X509Identity::from_pem(device.cert_pem.as_bytes(), device.key_pem.as_bytes())?;
    transport.send(SetAuthentication(identity.into())).await?;

    let request = RegistrationRequest::new(dps_mock_broker::DEFAULT_ID_SCOPE, "edge-gateway-01")
        .with_endpoint(broker.mqtts_uri());
    let (done, outcome) = tokio::sync::oneshot::channel();
    DeviceManager {
        transport,
        request,
        operation_id: None,
        watchdog: None,
        done: Some(done),
    }
    .start();

    match outcome.await? {
        Ok(hub) => println!("edge-gateway-01 is assigned to {hub}"),
        Err(error) => println!("provisioning failed: {error}"),
    }
    broker.stop();
    Ok(())
}
