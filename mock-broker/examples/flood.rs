//! Floods a broker the way a broken or hostile device would: one symmetric-key device
//! publishing COUNT junk messages of SIZE bytes, as fast as the connection takes them.
//!
//! For checking that a broker stays bounded; against `dps-mock-broker`:
//!
//! ```sh
//! cargo run --release -p dps-mock-broker -- --no-ws --ca-out ca.pem \
//!     --symmetric-key flood-dev=O+H9VTcdJP0Tqkl7bh4nVG0OJNrAataMpuWB54D0VEc=
//! # in another terminal (watch the broker's VmHWM in /proc/PID/status):
//! cargo run --release -p dps-mock-broker --example flood -- 8883 ca.pem 600 512000
//! ```

use std::io::{Read, Write};
use std::sync::Arc;

use dps_messages::SymmetricKey;
use dps_mock_broker::hostile::packets::{publish, remaining_length};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

const KEY: &str = dps_mock_broker::TEST_SYMMETRIC_KEY;
const ID: &str = "flood-dev";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [port, ca, count, size] = args.as_slice() else {
        return Err("usage: flood PORT CA_PEM COUNT SIZE".into());
    };
    let (port, count, size): (u16, usize, usize) = (port.parse()?, count.parse()?, size.parse()?);

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = rustls::ClientConnection::new(Arc::new(config), "localhost".try_into()?)?;
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port))?;
    let mut stream = rustls::StreamOwned::new(tls, tcp);

    let scope = dps_mock_broker::DEFAULT_ID_SCOPE;
    let password = SymmetricKey::new(KEY)?
        .sas_token(scope, ID, 4_000_000_000)
        .to_string();
    stream.write_all(&connect(
        ID,
        &dps_messages::connect::username(scope, ID, &Default::default()),
        &password,
    ))?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack)?;
    if connack != [0x20, 0x02, 0x00, 0x00] {
        return Err(format!("refused: CONNACK {connack:02x?}").into());
    }

    let packet = publish(b"junk/topic", 0, None, &vec![b'j'; size]);
    let started = std::time::Instant::now();
    let mut sent = 0;
    while sent < count
        && stream
            .write_all(&packet)
            .and_then(|()| stream.flush())
            .is_ok()
    {
        sent += 1;
    }
    // Until the broker closes the connection (or drops it for its keep-alive).
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    println!(
        "sent {sent} of {count} messages; connection closed after {:?}",
        started.elapsed()
    );
    Ok(())
}

/// An MQTT 3.1.1 CONNECT with a username and password, clean session, keep-alive 60.
fn connect(client_id: &str, username: &str, password: &str) -> Vec<u8> {
    let mut body = Vec::new();
    let mut string = |bytes: &[u8]| {
        body.extend((bytes.len() as u16).to_be_bytes());
        body.extend_from_slice(bytes);
    };
    string(b"MQTT");
    body.extend([4, 0xc2, 0, 60]);
    for field in [client_id, username, password] {
        body.extend((field.len() as u16).to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    let mut packet = vec![0x10];
    packet.extend(remaining_length(body.len()));
    packet.extend(body);
    packet
}
