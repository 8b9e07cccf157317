//! Runs a hostile MQTT server for trying a client by hand: it accepts CONNECT and SUBSCRIBE,
//! then misbehaves.
//!
//! ```sh
//! cargo run -p dps-mock-broker --example hostile_server -- silent   # or: trickle
//! # prints the port and writes the CA to hostile-ca.pem; then, in another terminal:
//! cargo run -p dps-harness -- provision --endpoint localhost:PORT --ca hostile-ca.pem \
//!     --id-scope 0ne00000001 --registration-id dev \
//!     --group-key AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8= --timeout 10
//! ```

use std::time::Duration;

use dps_mock_broker::hostile::{HostileServer, Misbehaviour};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let misbehaviour = match std::env::args().nth(1).as_deref() {
        None | Some("silent") => Misbehaviour::SilentAfterSuback,
        Some("trickle") => Misbehaviour::TrickleAfterSuback {
            declared: 512 * 1024,
            every: Duration::from_secs(1),
        },
        Some(other) => {
            return Err(format!("unknown misbehaviour `{other}`: silent or trickle").into());
        }
    };
    let server = HostileServer::start(misbehaviour)?;
    std::fs::write("hostile-ca.pem", server.ca_pem())?;
    println!(
        "listening on port {} (CA in hostile-ca.pem); Ctrl-C to stop",
        server.addr().port()
    );
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
