//! `dps demo`: four devices provisioned against the mock DPS started in this process. The
//! fourth is issued a certificate (onboarding with a group key and a CSR), then provisions
//! again with that certificate, so it has two rows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dps_messages::{
    Authentication, Protocol, ProvisioningError, RegistrationRequest, RegistrationResult,
};
use dps_mock_broker::{BrokerHandle, IssuingCa, MockBroker, TestPki};
use dps_transport_actor::{CertificateOptions, ClientOptions, ProvisioningClient, TransportConfig};

use crate::setup;

/// One demo device and how it went.
pub struct DemoRow {
    /// The registration id.
    pub registration_id: String,
    /// How it authenticated.
    pub credential: &'static str,
    /// How it connected.
    pub protocol: Protocol,
    /// The registration's end.
    pub result: Result<RegistrationResult, ProvisioningError>,
    /// How long it took.
    pub elapsed: Duration,
}

/// The device that is issued a certificate.
const ISSUED: &str = "demo-issued-cert";

/// Starts the mock DPS, provisions the demo devices concurrently and returns their rows.
pub async fn run() -> Result<Vec<DemoRow>, String> {
    let pki = Arc::new(TestPki::generate().map_err(|e| e.to_string())?);
    let issuing_ca = Arc::new(IssuingCa::generate().map_err(|e| e.to_string())?);
    let group_key = setup::random_key();
    let broker = MockBroker::builder()
        .pki(pki.clone())
        .group_key(group_key.clone())
        .issue_certificates(issuing_ca)
        .retry_after(1)
        .start()
        .map_err(|e| e.to_string())?;
    let devices: [(&str, &'static str, Protocol, Authentication); 3] = [
        (
            "demo-x509-mqtt",
            "X.509 certificate",
            Protocol::Mqtt,
            device_cert(&pki, "demo-x509-mqtt")?,
        ),
        (
            "demo-x509-websocket",
            "X.509 certificate",
            Protocol::MqttWs,
            device_cert(&pki, "demo-x509-websocket")?,
        ),
        (
            "demo-group-sas",
            "symmetric key (group)",
            Protocol::Mqtt,
            setup::group_device(&group_key, "demo-group-sas").map_err(|e| e.to_string())?,
        ),
    ];
    let mut tasks = Vec::new();
    for (id, credential, protocol, auth) in devices {
        let (request, config) = target(&broker, protocol, id)?;
        tasks.push(actix_rt::spawn(async move {
            let started = Instant::now();
            let result = match ProvisioningClient::start(config, auth, options()) {
                Ok(client) => client.register(request).await,
                Err(e) => Err(e),
            };
            vec![DemoRow {
                registration_id: id.to_owned(),
                credential,
                protocol,
                result,
                elapsed: started.elapsed(),
            }]
        }));
    }
    let onboarding = setup::group_device(&group_key, ISSUED).map_err(|e| e.to_string())?;
    let first = target(&broker, Protocol::Mqtt, ISSUED)?;
    let second = target(&broker, Protocol::MqttWs, ISSUED)?;
    tasks.push(actix_rt::spawn(issued_certificate(
        onboarding, first, second,
    )));
    let mut rows = Vec::new();
    for task in tasks {
        rows.extend(task.await.map_err(|e| e.to_string())?);
    }
    broker.stop();
    Ok(rows)
}

/// The request and transport configuration of device `id` over `protocol`.
fn target(
    broker: &BrokerHandle,
    protocol: Protocol,
    id: &str,
) -> Result<(RegistrationRequest, TransportConfig), String> {
    let request = RegistrationRequest::new(dps_mock_broker::DEFAULT_ID_SCOPE, id)
        .with_endpoint(broker.uri(protocol).unwrap_or_default());
    let config = TransportConfig::builder(protocol)
        .ca_pem(broker.ca_pem().unwrap_or_default())
        .build()
        .map_err(|e| e.to_string())?;
    Ok((request, config))
}

/// The mock service asks for 1 s between polls; no need for real DPS's 2 s floor.
fn options() -> ClientOptions {
    ClientOptions {
        min_interval: Duration::ZERO,
        deadline: Duration::from_secs(30),
        ..ClientOptions::default()
    }
}

/// Onboards with a group key and a CSR over MQTT, then provisions again over WebSocket with
/// the certificate it was issued: two rows.
async fn issued_certificate(
    onboarding: Authentication,
    (first_request, first_config): (RegistrationRequest, TransportConfig),
    (second_request, second_config): (RegistrationRequest, TransportConfig),
) -> Vec<DemoRow> {
    let started = Instant::now();
    let provisioned = match ProvisioningClient::start(first_config, onboarding, options()) {
        Ok(client) => {
            client
                .register_with_certificate(first_request, &CertificateOptions::default())
                .await
        }
        Err(e) => Err(e),
    };
    let mut rows = vec![DemoRow {
        registration_id: ISSUED.to_owned(),
        credential: "group key + CSR",
        protocol: Protocol::Mqtt,
        result: provisioned
            .as_ref()
            .map(|p| p.result.clone())
            .map_err(Clone::clone),
        elapsed: started.elapsed(),
    }];
    let Some(issued) = provisioned.ok().and_then(|p| p.certificate) else {
        return rows;
    };
    let started = Instant::now();
    let result =
        match ProvisioningClient::start(second_config, issued.identity().clone(), options()) {
            Ok(client) => client.register(second_request).await,
            Err(e) => Err(e),
        };
    rows.push(DemoRow {
        registration_id: ISSUED.to_owned(),
        credential: "issued certificate",
        protocol: Protocol::MqttWs,
        result,
        elapsed: started.elapsed(),
    });
    rows
}

fn device_cert(pki: &TestPki, id: &str) -> Result<Authentication, String> {
    let pem = pki.device(id).map_err(|e| e.to_string())?;
    setup::identity(&pem).map_err(|e| e.to_string())
}

/// The rows as a table.
pub fn table(rows: &[DemoRow]) -> String {
    let header = [
        "DEVICE",
        "CREDENTIAL",
        "TRANSPORT",
        "RESULT",
        "ASSIGNED HUB",
        "DEVICE ID",
        "TIME",
    ];
    let mut lines: Vec<[String; 7]> = vec![header.map(str::to_owned)];
    for row in rows {
        let transport = match row.protocol {
            Protocol::Mqtt => "MQTT/TLS",
            Protocol::MqttWs => "MQTT/WebSocket",
        };
        let (status, hub, device) = match &row.result {
            Ok(result) => {
                let state = result.registration_state.clone().unwrap_or_default();
                (
                    result.status.to_string(),
                    state.assigned_hub.unwrap_or_default(),
                    state.device_id.unwrap_or_default(),
                )
            }
            Err(e) => (format!("error: {e}"), String::new(), String::new()),
        };
        lines.push([
            row.registration_id.clone(),
            row.credential.to_owned(),
            transport.to_owned(),
            status,
            hub,
            device,
            format!("{:.2} s", row.elapsed.as_secs_f64()),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    lines
        .iter()
        .map(|l| {
            l.iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}
