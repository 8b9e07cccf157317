//! The `CONNECT` tunnel through an HTTP proxy: TCP to the proxy, `CONNECT host:port`, and a
//! `2xx` answer; then TLS (and the WebSocket upgrade) run inside the tunnel as they would on a
//! direct connection.
//!
//! Every way the proxy can say no is a [`ProxyError`] naming the proxy and its status line:
//! never the password. The proxy's answer is awaited for four fifths of the connect deadline,
//! so a silent proxy is reported as one before the whole connect times out.

use std::io;
use std::time::Duration;

use dps_messages::error::{ProxyError, ProxyErrorKind};
use ntex::SharedCfg;
use ntex::codec::{BytesCodec, Decoder};
use ntex::io::Io;
use ntex::util::{Bytes, BytesMut, Either};

use super::connect::Target;
use crate::proxy::{ProxyConfig, authority};

/// The most a proxy's answer head may take.
const MAX_ANSWER_BYTES: usize = 8 * 1024;

/// A proxy to tunnel through, and how long its answer may take.
#[derive(Debug, Clone)]
pub(crate) struct ProxyHop {
    pub(crate) proxy: ProxyConfig,
    pub(crate) answer_timeout: Duration,
}

/// Opens a tunnel to `host:port` through `hop`'s proxy: a connection whose bytes reach the
/// service.
pub(super) async fn open(
    hop: &ProxyHop,
    host: &str,
    port: u16,
    cfg: SharedCfg,
) -> Result<Io, ProxyError> {
    let proxy = &hop.proxy;
    let fail = |kind, detail: String| ProxyError::new(proxy.address(), kind, detail);
    let target = Target {
        host: proxy.host().to_owned(),
        port: proxy.port(),
    };
    let io = super::names::open_tcp(&target, cfg)
        .await
        .map_err(|e| fail(ProxyErrorKind::Unreachable, e.to_string()))?;

    let authority = authority(host, port);
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(authorization) = proxy.authorization() {
        request.push_str(&format!("Proxy-Authorization: {authorization}\r\n"));
    }
    request.push_str("\r\n");
    io.send(Bytes::from(request), &BytesCodec)
        .await
        .map_err(|e| fail(ProxyErrorKind::Closed, either(e).to_string()))?;

    let head = match ntex::time::timeout(hop.answer_timeout, io.recv(&AnswerHead)).await {
        Err(()) => {
            let waited = format!("no answer to CONNECT within {:?}", hop.answer_timeout);
            return Err(fail(ProxyErrorKind::NoAnswer, waited));
        }
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => {
            return Err(fail(
                ProxyErrorKind::Closed,
                "before its answer to CONNECT".into(),
            ));
        }
        Ok(Err(Either::Left(bad))) => return Err(fail(ProxyErrorKind::BadAnswer, bad.to_string())),
        Ok(Err(Either::Right(e))) => return Err(fail(ProxyErrorKind::Closed, e.to_string())),
    };
    let status_line = head.lines().next().unwrap_or_default().to_owned();
    match status_of(&status_line) {
        Some(200..=299) => Ok(io),
        Some(407) => Err(fail(ProxyErrorKind::AuthenticationRequired, status_line)),
        Some(403) => Err(fail(ProxyErrorKind::Forbidden, status_line)),
        Some(_) => Err(fail(ProxyErrorKind::Refused, status_line)),
        None => Err(fail(ProxyErrorKind::BadAnswer, printable(&status_line))),
    }
}

fn either(e: Either<io::Error, io::Error>) -> io::Error {
    match e {
        Either::Left(e) | Either::Right(e) => e,
    }
}

/// The status of `HTTP/1.x NNN reason`.
fn status_of(line: &str) -> Option<u16> {
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    (code.len() == 3).then_some(())?;
    code.parse().ok()
}

/// At most 80 characters of `text`, for an error about an answer that is not HTTP.
fn printable(text: &str) -> String {
    let kept: String = text.chars().take(80).collect();
    format!("{kept:?}")
}

/// Decodes the head of the proxy's answer, up to its blank line, leaving what follows in the
/// read buffer (it belongs to the tunnel).
struct AnswerHead;

impl Decoder for AnswerHead {
    type Item = String;
    type Error = io::Error;

    fn decode(&self, src: &mut BytesMut) -> Result<Option<String>, io::Error> {
        let Some(end) = src.windows(4).position(|w| w == b"\r\n\r\n") else {
            if src.len() > MAX_ANSWER_BYTES {
                return Err(io::Error::other(format!(
                    "an answer head over {MAX_ANSWER_BYTES} bytes"
                )));
            }
            return Ok(None);
        };
        let head = src.split_to(end + 4);
        Ok(Some(String::from_utf8_lossy(&head).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read_and_anything_else_is_not_http() {
        assert_eq!(status_of("HTTP/1.1 200 Connection established"), Some(200));
        assert_eq!(
            status_of("HTTP/1.0 407 Proxy Authentication Required"),
            Some(407)
        );
        assert_eq!(status_of("HTTP/1.1 502"), Some(502));
        for bad in [
            "SSH-2.0-OpenSSH",
            "HTTP/2 200",
            "HTTP/1.1 2000 x",
            "HTTP/1.1 abc",
            "",
        ] {
            assert_eq!(status_of(bad), None, "{bad}");
        }
        assert_eq!(printable(&"x".repeat(200)).len(), 82);
    }

    #[test]
    fn the_answer_head_ends_at_its_blank_line_and_is_bounded() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nVia: x\r\n\r\n\x16\x03"[..]);
        let head = AnswerHead.decode(&mut buf).unwrap().unwrap();
        assert_eq!(head, "HTTP/1.1 200 OK\r\nVia: x\r\n\r\n");
        assert_eq!(&buf[..], b"\x16\x03", "what follows stays for the tunnel");
        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\n"[..]);
        assert_eq!(AnswerHead.decode(&mut partial).unwrap(), None);
        let mut flood = BytesMut::from(&vec![b'a'; MAX_ANSWER_BYTES + 1][..]);
        assert!(AnswerHead.decode(&mut flood).is_err());
    }
}
