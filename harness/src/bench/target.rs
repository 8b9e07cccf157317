//! Where the benchmark's devices go (a mock DPS in this process, or an external broker) and the
//! credentials they use, made before the clock starts.

use std::sync::Arc;

use dps_messages::{Authentication, Protocol};
use dps_mock_broker::{BrokerHandle, MockBroker, TestPki};
use dps_transport_actor::{TransportConfig, TransportConfigBuilder};

use super::{AuthArg, BenchArgs, registration_id};
use crate::setup;

/// Where the devices go, and the credentials they use.
pub(super) struct Target {
    _broker: Option<BrokerHandle>,
    pub(super) name: String,
    pub(super) uri: String,
    pub(super) id_scope: String,
    pub(super) ca_pem: String,
    pub(super) credentials: Vec<Authentication>,
}

fn prepare(args: &BenchArgs, protocol: Protocol) -> Result<Target, String> {
    let n = args.devices;
    match &args.broker {
        None => {
            let pki = Arc::new(TestPki::generate().map_err(|e| e.to_string())?);
            let group_key = setup::random_key();
            let broker = MockBroker::builder()
                .pki(pki.clone())
                .group_key(group_key.clone())
                .retry_after(0)
                .ws_listen(args.ws.then(|| ([127, 0, 0, 1], 0).into()))
                .workers(args.broker_workers)
                .forget_ended()
                .start()
                .map_err(|e| e.to_string())?;
            let uri = broker.uri(protocol).unwrap_or_default();
            let credentials = credentials(args.auth, n, Some(&pki), Some(&group_key))?;
            let ca_pem = broker.ca_pem().unwrap_or_default().to_owned();
            Ok(Target {
                _broker: Some(broker),
                name: "in-process".into(),
                uri,
                id_scope: dps_mock_broker::DEFAULT_ID_SCOPE.into(),
                ca_pem,
                credentials,
            })
        }
        Some(address) => {
            let pki = match (&args.device_ca_cert, &args.device_ca_key) {
                (Some(cert), Some(key)) => Some(
                    TestPki::from_ca_pem(&setup::read(cert)?, &setup::read(key)?)
                        .map_err(|e| e.to_string())?,
                ),
                _ => None,
            };
            let credentials = credentials(args.auth, n, pki.as_ref(), args.group_key.as_deref())?;
            Ok(Target {
                _broker: None,
                name: address.clone(),
                uri: setup::endpoint_uri(address, protocol),
                id_scope: args.id_scope.clone().unwrap_or_default(),
                ca_pem: setup::read(args.ca.as_ref().ok_or("--ca is required with --broker")?)?,
                credentials,
            })
        }
    }
}

fn credentials(
    auth: AuthArg,
    n: usize,
    pki: Option<&TestPki>,
    group_key: Option<&str>,
) -> Result<Vec<Authentication>, String> {
    (0..n)
        .map(|i| {
            let id = registration_id(i);
            match auth {
                AuthArg::X509 => {
                    let pki =
                        pki.ok_or("x509 devices need --device-ca-cert and --device-ca-key")?;
                    setup::identity(&pki.device(&id).map_err(|e| e.to_string())?)
                        .map_err(|e| e.to_string())
                }
                AuthArg::Sas => {
                    setup::group_device(group_key.ok_or("sas devices need --group-key")?, &id)
                        .map_err(|e| e.to_string())
                }
            }
        })
        .collect()
}

/// The devices' target, and the configuration every device's transport shares: one parsed set
/// of trust roots, one check of the broker's certificate chain.
pub(super) fn prepare_transport(
    args: &BenchArgs,
) -> Result<(Target, TransportConfigBuilder), String> {
    let protocol = if args.ws {
        Protocol::MqttWs
    } else {
        Protocol::Mqtt
    };
    let target = prepare(args, protocol)?;
    let config = TransportConfig::builder(protocol).ca_pem(target.ca_pem.clone());
    Ok((target, config))
}
