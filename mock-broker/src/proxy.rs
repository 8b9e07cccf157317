//! A small HTTP `CONNECT` proxy for tests of devices behind one, as on factory floors and
//! enterprise sites: it tunnels, or refuses with a chosen status, or requires credentials, or
//! drops the tunnel, or never answers, and records each request it saw.
//!
//! Plain threads and blocking sockets, like [`crate::hostile`]: a proxy is a byte pump, and a
//! test proxy need not be fast. Every read and write is bounded (120 s), so a client that
//! stalls does not keep a thread forever.
//!
//! ```no_run
//! use dps_mock_broker::proxy::{ProxyMode, TestProxy};
//!
//! let proxy = TestProxy::start(ProxyMode::RequireCredentials {
//!     user: "device".into(),
//!     password: "s3cret".into(),
//! })
//! .unwrap();
//! // Point a client at proxy.url_with("device", "s3cret").
//! # let _ = proxy;
//! ```

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine;

/// How long any read or write may stall.
const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// The most a request head may take.
const MAX_HEAD_BYTES: usize = 8 * 1024;

/// What the proxy does with a `CONNECT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyMode {
    /// Open the tunnel.
    Tunnel,
    /// Open it only for `Proxy-Authorization: Basic` with these credentials; answer 407
    /// otherwise.
    RequireCredentials {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// Answer with this status line's status and reason, e.g. `403 Forbidden`.
    Refuse {
        /// The status.
        status: u16,
        /// The reason phrase.
        reason: String,
    },
    /// Close the connection after reading the request, without answering.
    Drop,
    /// Read the request and never answer.
    Silent,
}

/// A `CONNECT` the proxy saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRequest {
    /// The request target, `host:port`.
    pub target: String,
    /// The `Proxy-Authorization` header, decoded from Basic (`user:password`), if any.
    pub credentials: Option<String>,
    /// The status the proxy answered, if it answered.
    pub status: Option<u16>,
}

/// A running test proxy; dropping it stops accepting (open tunnels run until either side
/// closes).
pub struct TestProxy {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<ProxyRequest>>>,
    stop: Arc<AtomicBool>,
}

impl TestProxy {
    /// Starts a proxy on an ephemeral loopback port.
    pub fn start(mode: ProxyMode) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (requests.clone(), stop.clone());
        std::thread::Builder::new()
            .name("test-proxy".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stopped.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (mode, seen) = (mode.clone(), seen.clone());
                    let _ = std::thread::Builder::new()
                        .name("test-proxy-conn".into())
                        .spawn(move || {
                            if let Err(e) = serve(stream, &mode, &seen) {
                                tracing::debug!("test proxy connection: {e}");
                            }
                        });
                }
            })?;
        Ok(Self {
            addr,
            requests,
            stop,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://user:password@127.0.0.1:<port>` (both percent-encoded as needed by the caller).
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{}", self.addr)
    }

    /// The requests seen so far.
    pub fn requests(&self) -> Vec<ProxyRequest> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(
    mut client: TcpStream,
    mode: &ProxyMode,
    seen: &Mutex<Vec<ProxyRequest>>,
) -> io::Result<()> {
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    client.set_write_timeout(Some(IO_TIMEOUT))?;
    let head = read_head(&mut client)?;
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let credentials = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("proxy-authorization"))
        .and_then(|(_, value)| value.trim().strip_prefix("Basic ").map(str::to_owned))
        .and_then(|token| base64::engine::general_purpose::STANDARD.decode(token).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    let record = |status: Option<u16>| {
        seen.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ProxyRequest {
                target: target.to_owned(),
                credentials: credentials.clone(),
                status,
            });
    };
    let answer = |client: &mut TcpStream, status: u16, reason: &str, extra: &str| {
        record(Some(status));
        write!(
            client,
            "HTTP/1.1 {status} {reason}\r\n{extra}Content-Length: 0\r\n\r\n"
        )
    };
    if method != "CONNECT" {
        return answer(&mut client, 405, "Method Not Allowed", "");
    }
    match mode {
        ProxyMode::Tunnel => {}
        ProxyMode::RequireCredentials { user, password } => {
            if credentials.as_deref() != Some(&format!("{user}:{password}")) {
                let challenge = "Proxy-Authenticate: Basic realm=\"test proxy\"\r\n";
                return answer(&mut client, 407, "Proxy Authentication Required", challenge);
            }
        }
        ProxyMode::Refuse { status, reason } => return answer(&mut client, *status, reason, ""),
        ProxyMode::Drop => {
            record(None);
            return client.shutdown(Shutdown::Both);
        }
        ProxyMode::Silent => {
            record(None);
            // Hold the connection open without a word, until the client gives up.
            let mut sink = [0u8; 256];
            while client.read(&mut sink).is_ok_and(|n| n > 0) {}
            return Ok(());
        }
    }
    let service = match TcpStream::connect(target) {
        Ok(service) => service,
        Err(e) => return answer(&mut client, 502, "Bad Gateway", "").and(Err(e)),
    };
    answer(&mut client, 200, "Connection established", "")?;
    service.set_read_timeout(Some(IO_TIMEOUT))?;
    service.set_write_timeout(Some(IO_TIMEOUT))?;
    let (mut client_read, mut service_write) = (client.try_clone()?, service.try_clone()?);
    let upstream = std::thread::spawn(move || {
        let _ = io::copy(&mut client_read, &mut service_write);
        let _ = service_write.shutdown(Shutdown::Write);
    });
    let (mut service_read, mut client_write) = (service, client);
    let _ = io::copy(&mut service_read, &mut client_write);
    let _ = client_write.shutdown(Shutdown::Write);
    let _ = upstream.join();
    Ok(())
}

/// Reads up to the blank line that ends the request head.
fn read_head(stream: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > MAX_HEAD_BYTES {
            return Err(io::Error::other("request head too long"));
        }
        match stream.read(&mut byte)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            _ => head.push(byte[0]),
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}
