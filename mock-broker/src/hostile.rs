//! A tiny MQTT server that misbehaves on purpose, for tests of what a client does when the
//! service breaks its promises.
//!
//! The mock broker is a real MQTT server (ntex-mqtt), which cannot be made to send bytes that are
//! not MQTT, a QoS 2 message, or half a packet. This one speaks just enough MQTT 3.1.1 by hand,
//! over TLS (rustls on plain threads): it accepts CONNECT, grants SUBSCRIBE, and then does the
//! one bad thing its [`Misbehaviour`] names. It records what each connection sent, and when the
//! client went away, so a test can check that the client dropped the connection.
//!
//! ```no_run
//! use dps_mock_broker::hostile::{HostileServer, Misbehaviour};
//!
//! let server = HostileServer::start(Misbehaviour::SilentAfterSuback).unwrap();
//! // Point a client at server.uri(), trusting server.ca_pem(); its register is never answered.
//! # let _ = server;
//! ```

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::WaitTimedOut;
use crate::pki::TestPki;

/// What the server does wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Misbehaviour {
    /// After the SUBACK, nothing: no PUBACK, no response, no UNSUBACK, no close. A half-open
    /// link, as on a cellular network whose far end vanished.
    SilentAfterSuback,
    /// After the SUBACK, the header of a PUBLISH that declares `declared` bytes, then one byte
    /// of it every `every`.
    TrickleAfterSuback {
        /// The remaining length the PUBLISH header declares.
        declared: usize,
        /// How long between bytes.
        every: Duration,
    },
    /// After the SUBACK (in the same write), these bytes; see [`packets`] for some.
    SendAfterSuback(Vec<u8>),
    /// Behave until the UNSUBSCRIBE; answer it with UNSUBACK and reset the connection (RST)
    /// at once, so the client's disconnect breaks.
    ResetAfterUnsuback,
}

/// Hand-made packets for [`Misbehaviour::SendAfterSuback`].
pub mod packets {
    /// Bytes that are not MQTT: a reserved packet type (0) and noise.
    pub fn garbage() -> Vec<u8> {
        vec![0x00, 0xff, 0xde, 0xad, 0xbe, 0xef]
    }

    /// A PUBLISH header that declares a `declared`-byte packet (over a client's limit, say),
    /// followed by a few bytes of it.
    pub fn oversized(declared: usize) -> Vec<u8> {
        let mut bytes = vec![0x30];
        bytes.extend(remaining_length(declared));
        bytes.extend_from_slice(b"\x00\x01x");
        bytes
    }

    /// A QoS 0 PUBLISH whose topic is not UTF-8.
    pub fn invalid_utf8_topic() -> Vec<u8> {
        publish(&[0xff, 0xfe, b'/', 0xc3], 0, None, b"{}")
    }

    /// A QoS 2 PUBLISH (packet id 7) on a DPS response topic; DPS publishes at QoS 1.
    pub fn qos2_publish() -> Vec<u8> {
        publish(
            b"$dps/registrations/res/202/?$rid=1",
            2,
            Some(7),
            br#"{"status":"assigning"}"#,
        )
    }

    /// A PUBLISH packet.
    pub fn publish(topic: &[u8], qos: u8, packet_id: Option<u16>, payload: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend((topic.len() as u16).to_be_bytes());
        body.extend_from_slice(topic);
        if let Some(id) = packet_id {
            body.extend(id.to_be_bytes());
        }
        body.extend_from_slice(payload);
        let mut bytes = vec![0x30 | (qos << 1)];
        bytes.extend(remaining_length(body.len()));
        bytes.extend(body);
        bytes
    }

    /// MQTT's variable-length encoding of a remaining length.
    pub fn remaining_length(mut len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut byte = (len % 128) as u8;
            len /= 128;
            if len > 0 {
                byte |= 0x80;
            }
            out.push(byte);
            if len == 0 {
                return out;
            }
        }
    }
}

/// What one connection sent, and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// The packet types the client sent, in order (`CONNECT`, `SUBSCRIBE`, `PUBLISH`,
    /// `PUBACK`, `PUBREC`, `UNSUBSCRIBE`, `PINGREQ`, `DISCONNECT`, or `other`).
    pub packets: Vec<String>,
    /// When the client closed or reset the connection, since the server accepted it.
    pub closed_after: Option<Duration>,
}

#[derive(Default)]
struct Log {
    connections: Mutex<Vec<Seen>>,
    changed: Condvar,
}

impl Log {
    fn update(&self, index: usize, f: impl FnOnce(&mut Seen)) {
        let mut all = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(seen) = all.get_mut(index) {
            f(seen);
        }
        self.changed.notify_all();
    }
}

/// A running hostile server; dropping it stops accepting.
pub struct HostileServer {
    addr: SocketAddr,
    ca_pem: String,
    log: Arc<Log>,
    stop: Arc<AtomicBool>,
}

impl HostileServer {
    /// Starts a server on an ephemeral loopback port, with a fresh test PKI.
    pub fn start(misbehaviour: Misbehaviour) -> io::Result<Self> {
        let pki = TestPki::generate().map_err(io::Error::other)?;
        let chain = CertificateDer::pem_slice_iter(pki.server.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(io::Error::other)?;
        let key = PrivateKeyDer::from_pem_slice(pki.server.key_pem.as_bytes())
            .map_err(io::Error::other)?;
        let config = ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(io::Error::other)?;
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let log = Arc::new(Log::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (accept_log, accept_stop) = (log.clone(), stop.clone());
        std::thread::Builder::new()
            .name("hostile-accept".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if accept_stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let index = {
                        let mut all = accept_log
                            .connections
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner);
                        all.push(Seen::default());
                        all.len() - 1
                    };
                    let connection = Connection {
                        config: config.clone(),
                        misbehaviour: misbehaviour.clone(),
                        log: accept_log.clone(),
                        stop: accept_stop.clone(),
                        index,
                        accepted: Instant::now(),
                    };
                    let _ = std::thread::Builder::new()
                        .name("hostile-conn".into())
                        .spawn(move || connection.serve(stream));
                }
            })?;
        Ok(Self {
            addr,
            ca_pem: pki.ca_pem().to_owned(),
            log,
            stop,
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `mqtts://127.0.0.1:<port>`.
    pub fn uri(&self) -> String {
        format!("mqtts://{}", self.addr)
    }

    /// The CA certificate (PEM) a client must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// What each connection so far sent.
    pub fn seen(&self) -> Vec<Seen> {
        self.log
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits up to `timeout`, blocking the thread, for `done` to hold over the connections,
    /// and returns them; when `timeout` passes first, [`WaitTimedOut`] carries what was seen.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[Seen]) -> bool,
    ) -> Result<Vec<Seen>, WaitTimedOut<Seen>> {
        let deadline = Instant::now() + timeout;
        let mut all = self
            .log
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            if done(&all) {
                return Ok(all.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(WaitTimedOut::new(timeout, &all));
            }
            all = self
                .log
                .changed
                .wait_timeout(all, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

struct Connection {
    config: Arc<ServerConfig>,
    misbehaviour: Misbehaviour,
    log: Arc<Log>,
    stop: Arc<AtomicBool>,
    index: usize,
    accepted: Instant,
}

type Tls = StreamOwned<ServerConnection, TcpStream>;

/// The longest a connection's read or write waits: far past any test's deadlines, so that a
/// client that neither speaks nor closes still frees its thread.
const CONNECTION_LIMIT: Duration = Duration::from_secs(120);

impl Connection {
    fn serve(self, stream: TcpStream) {
        // No connection thread outlives its test by much, whatever the client does.
        let bounded = stream
            .set_read_timeout(Some(CONNECTION_LIMIT))
            .and_then(|()| stream.set_write_timeout(Some(CONNECTION_LIMIT)));
        let Ok(session) = ServerConnection::new(self.config.clone()) else {
            return;
        };
        if bounded.is_err() {
            return;
        }
        let mut tls = StreamOwned::new(session, stream);
        let _ = self.converse(&mut tls);
        let closed_after = self.accepted.elapsed();
        self.log
            .update(self.index, |seen| seen.closed_after = Some(closed_after));
    }

    /// Reads packets until the client goes away; the misbehaviour decides the answers.
    fn converse(&self, tls: &mut Tls) -> io::Result<()> {
        loop {
            let (kind, body) = read_packet(tls)?;
            self.log
                .update(self.index, |seen| seen.packets.push(name(kind).into()));
            match kind {
                // CONNECT: accepted.
                1 => send(tls, &[0x20, 0x02, 0x00, 0x00])?,
                // SUBSCRIBE: granted at QoS 1, then the misbehaviour.
                8 => {
                    let mut suback = vec![0x90, 0x03];
                    suback.extend_from_slice(body.get(..2).unwrap_or(&[0, 1]));
                    suback.push(0x01);
                    match &self.misbehaviour {
                        Misbehaviour::SendAfterSuback(bytes) => {
                            suback.extend_from_slice(bytes);
                            send(tls, &suback)?;
                        }
                        Misbehaviour::TrickleAfterSuback { declared, every } => {
                            send(tls, &suback)?;
                            return self.trickle(tls, *declared, *every);
                        }
                        Misbehaviour::SilentAfterSuback | Misbehaviour::ResetAfterUnsuback => {
                            send(tls, &suback)?;
                        }
                    }
                }
                // PUBLISH at QoS 1: acknowledged, unless silent.
                3 if self.misbehaviour != Misbehaviour::SilentAfterSuback => {
                    if let Some(id) = publish_packet_id(&body) {
                        send(tls, &[0x40, 0x02, (id >> 8) as u8, id as u8])?;
                    }
                }
                // UNSUBSCRIBE.
                10 => match self.misbehaviour {
                    Misbehaviour::SilentAfterSuback => {}
                    Misbehaviour::ResetAfterUnsuback => {
                        let id = body.get(..2).unwrap_or(&[0, 1]);
                        send(tls, &[0xb0, 0x02, id[0], id[1]])?;
                        // SO_LINGER 0: close with a reset, not a FIN.
                        socket2::SockRef::from(&tls.sock).set_linger(Some(Duration::ZERO))?;
                        return Ok(());
                    }
                    _ => {
                        let id = body.get(..2).unwrap_or(&[0, 1]);
                        send(tls, &[0xb0, 0x02, id[0], id[1]])?;
                    }
                },
                // PINGREQ.
                12 if self.misbehaviour != Misbehaviour::SilentAfterSuback => {
                    send(tls, &[0xd0, 0x00])?;
                }
                // DISCONNECT.
                14 => {
                    // Wait for the client to close its side, as a broker does.
                    let mut rest = Vec::new();
                    let _ = tls.read_to_end(&mut rest);
                    return Ok(());
                }
                _ => {}
            }
        }
    }

    fn trickle(&self, tls: &mut Tls, declared: usize, every: Duration) -> io::Result<()> {
        let mut header = vec![0x30];
        header.extend(packets::remaining_length(declared));
        send(tls, &header)?;
        // Only writes from here: a client that gave up shows as a failed write.
        let _ = tls.sock.shutdown(Shutdown::Read);
        while !self.stop.load(Ordering::SeqCst) {
            std::thread::sleep(every);
            send(tls, b"x")?;
        }
        Ok(())
    }
}

fn send(tls: &mut Tls, bytes: &[u8]) -> io::Result<()> {
    tls.write_all(bytes)?;
    tls.flush()
}

/// Reads one packet: its type and its body.
fn read_packet(tls: &mut Tls) -> io::Result<(u8, Vec<u8>)> {
    let mut first = [0u8; 1];
    tls.read_exact(&mut first)?;
    let mut len = 0usize;
    for shift in 0..4 {
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte)?;
        len |= usize::from(byte[0] & 0x7f) << (7 * shift);
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    // A client sends small packets; refuse to buffer a huge one.
    if len > 1024 * 1024 {
        return Err(io::Error::other("packet too large"));
    }
    let mut body = vec![0u8; len];
    tls.read_exact(&mut body)?;
    Ok((first[0] >> 4, body))
}

/// The packet id of a PUBLISH body at QoS 1 or 2 (after the topic).
fn publish_packet_id(body: &[u8]) -> Option<u16> {
    let topic_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let at = 2 + topic_len;
    Some(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]))
}

fn name(kind: u8) -> &'static str {
    match kind {
        1 => "CONNECT",
        3 => "PUBLISH",
        4 => "PUBACK",
        5 => "PUBREC",
        8 => "SUBSCRIBE",
        10 => "UNSUBSCRIBE",
        12 => "PINGREQ",
        14 => "DISCONNECT",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::packets::*;

    #[test]
    fn remaining_lengths_are_mqtt_varints() {
        assert_eq!(remaining_length(0), vec![0]);
        assert_eq!(remaining_length(127), vec![0x7f]);
        assert_eq!(remaining_length(128), vec![0x80, 0x01]);
        assert_eq!(
            remaining_length(2 * 1024 * 1024),
            vec![0x80, 0x80, 0x80, 0x01]
        );
    }

    #[test]
    fn a_publish_carries_its_qos_topic_and_packet_id() {
        let bytes = publish(b"t", 2, Some(7), b"p");
        assert_eq!(bytes, vec![0x34, 6, 0, 1, b't', 0, 7, b'p']);
        assert_eq!(super::publish_packet_id(&bytes[2..]), Some(7));
    }
}
