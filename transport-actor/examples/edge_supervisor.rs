//! An edge application's supervising actor provisions its device through actor messages.
//!
//! `DeviceManager` owns a supervised `ProvisioningTransportActor`, registers, polls at the
//! interval the service asks for, disconnects once assigned, and reports where the device
//! belongs. The service is the in-process mock DPS broker, so this runs with no account:
//!
//! ```sh
//! cargo run -p dps-transport-actor --example edge_supervisor
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix::prelude::*;
use dps_messages::{
    Disconnect, Protocol, ProvisioningError, QueryStatus, Register, RegistrationRequest,
    RegistrationResponse, RegistrationStatus, SetAuthentication, X509Identity,
};
use dps_mock_broker::{MockBroker, TestPki};
use dps_transport_actor::{ProvisioningTransportActor, TransportConfig};

/// Where the device ended up, or why not.
type Outcome = Result<String, ProvisioningError>;

/// The edge application's actor in charge of the device's identity.
struct DeviceManager {
    transport: Addr<ProvisioningTransportActor>,
    request: RegistrationRequest,
    done: Option<tokio::sync::oneshot::Sender<Outcome>>,
}

impl Actor for DeviceManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let register = self.transport.send(Register {
            request: self.request.clone(),
        });
        ctx.spawn(
            register
                .into_actor(self)
                .map(|result, manager, ctx| manager.on_response(flatten(result), ctx)),
        );
    }
}

fn flatten(
    result: Result<Result<RegistrationResponse, ProvisioningError>, MailboxError>,
) -> Result<RegistrationResponse, ProvisioningError> {
    result.unwrap_or_else(|e| Err(e.into()))
}

impl DeviceManager {
    fn on_response(
        &mut self,
        result: Result<RegistrationResponse, ProvisioningError>,
        ctx: &mut Context<Self>,
    ) {
        let response = match result {
            Ok(response) => response,
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
                let operation_id = response.result.operation_id;
                ctx.run_later(response.polling_interval, move |manager, ctx| {
                    let request = manager.request.clone();
                    // Poll the operation; a throttled register (no operation yet) registers again.
                    let next: Pin<Box<dyn Future<Output = _>>> = match operation_id {
                        Some(operation_id) => Box::pin(manager.transport.send(QueryStatus {
                            request,
                            operation_id,
                        })),
                        None => Box::pin(manager.transport.send(Register { request })),
                    };
                    ctx.spawn(
                        next.into_actor(manager)
                            .map(|result, manager, ctx| manager.on_response(flatten(result), ctx)),
                    );
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
    // The stand-in for DPS: a real MQTT server over TLS with a generated PKI.
    let pki = Arc::new(TestPki::generate()?);
    let broker = MockBroker::builder()
        .pki(pki.clone())
        .retry_after(1)
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
