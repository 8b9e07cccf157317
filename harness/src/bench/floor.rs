//! The floor: the same number of full TLS handshakes with client certificates as a run has
//! devices, client and server in memory, over every core. No transport can beat it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dps_mock_broker::TestPki;

use super::probes::cpu_seconds;
use super::report::{BenchReport, Measured, Ran};
use super::{AuthArg, BenchArgs, registration_id};

/// The bare rustls floor: the same number of full TLS handshakes with client certificates,
/// client and server in memory, spread over every core.
pub(super) fn floor(args: &BenchArgs) -> Result<BenchReport, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

    let n = args.devices;
    let pki = TestPki::generate().map_err(|e| e.to_string())?;
    // ring, AES-128-GCM first, as the transport's connections negotiate it.
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    let provider = Arc::new(provider);
    let ca = CertificateDer::from_pem_slice(pki.ca_pem().as_bytes()).map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).map_err(|e| e.to_string())?;
    let roots = Arc::new(roots);
    let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| e.to_string())?;
    let server_chain = CertificateDer::pem_slice_iter(pki.server.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let server_key =
        PrivateKeyDer::from_pem_slice(pki.server.key_pem.as_bytes()).map_err(|e| e.to_string())?;
    let server = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(server_chain, server_key)
            .map_err(|e| e.to_string())?,
    );
    // Device identities are made (keys loaded) before the clock starts, as in the transport
    // benchmark; each handshake builds its client configuration, as each connection does.
    let devices: Vec<dps_messages::X509Identity> = (0..n)
        .map(|i| {
            let pem = pki.device(&registration_id(i)).map_err(|e| e.to_string())?;
            dps_messages::X509Identity::from_pem(pem.cert_pem.as_bytes(), pem.key_pem.as_bytes())
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, String>>()?;
    let threads = std::thread::available_parallelism()
        .map_or(1, |p| p.get())
        .min(n.max(1));
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let chunks: Vec<Vec<dps_messages::X509Identity>> = (0..threads)
        .map(|t| devices.iter().skip(t).step_by(threads).cloned().collect())
        .collect();
    let results: Vec<Result<Vec<Duration>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let (server, roots, provider) = (server.clone(), roots.clone(), provider.clone());
                scope.spawn(move || {
                    let mut latencies = Vec::with_capacity(chunk.len());
                    for device in chunk {
                        let t0 = Instant::now();
                        let client = rustls::ClientConfig::builder_with_provider(provider.clone())
                            .with_safe_default_protocol_versions()
                            .map_err(|e| e.to_string())?
                            .with_root_certificates(roots.clone())
                            .with_client_cert_resolver(Arc::new(
                                rustls::sign::SingleCertAndKey::from(device.certified_key()),
                            ));
                        let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
                        let mut c = rustls::ClientConnection::new(Arc::new(client), name)
                            .map_err(|e| e.to_string())?;
                        let mut s = rustls::ServerConnection::new(server.clone())
                            .map_err(|e| e.to_string())?;
                        handshake(&mut c, &mut s)?;
                        latencies.push(t0.elapsed());
                    }
                    Ok(latencies)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a handshake thread panicked".into()))
            })
            .collect()
    });
    let wall = started.elapsed();
    let mut samples = Vec::with_capacity(n);
    for r in results {
        samples.extend(r?.into_iter().map(|latency| (latency, true)));
    }
    let measured = Measured {
        samples,
        first_error: None,
        wall,
        cpu_seconds: cpu_seconds() - cpu_before,
    };
    Ok(measured.report(Ran {
        kind: "rustls-floor",
        devices: n,
        concurrency: threads,
        protocol: "tls",
        auth: AuthArg::X509,
        broker: "in-memory".into(),
    }))
}

/// Pumps TLS records between the two sides until both finish the handshake.
fn handshake(
    client: &mut rustls::ClientConnection,
    server: &mut rustls::ServerConnection,
) -> Result<(), String> {
    let mut buf = Vec::with_capacity(16 * 1024);
    for _ in 0..64 {
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
        buf.clear();
        while client.wants_write() {
            client.write_tls(&mut buf).map_err(|e| e.to_string())?;
        }
        let mut slice = &buf[..];
        while !slice.is_empty() {
            server.read_tls(&mut slice).map_err(|e| e.to_string())?;
            server.process_new_packets().map_err(|e| e.to_string())?;
        }
        buf.clear();
        while server.wants_write() {
            server.write_tls(&mut buf).map_err(|e| e.to_string())?;
        }
        let mut slice = &buf[..];
        while !slice.is_empty() {
            client.read_tls(&mut slice).map_err(|e| e.to_string())?;
            client.process_new_packets().map_err(|e| e.to_string())?;
        }
    }
    Err("the handshake did not finish".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_completes_real_handshakes() {
        let args = BenchArgs {
            floor: true,
            ..super::super::test_args(4, 1)
        };
        let report = floor(&args).unwrap();
        assert_eq!((report.devices, report.failed), (4, 0));
        assert!(report.registrations_per_sec > 0.0);
    }
}
