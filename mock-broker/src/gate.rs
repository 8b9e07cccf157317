//! The door between TLS (or the WebSocket upgrade) and the MQTT server: every connection must
//! send a whole MQTT 3.1.1 CONNECT within a deadline.
//!
//! Without it a client that finishes TLS and then sends nothing, half a packet, or a byte a
//! second would hold its connection forever. And ntex-mqtt answers a CONNECT for another MQTT
//! version (paho retries with 3.1 after a refusal) by closing without a word; MQTT 3.1.1 asks a
//! server to answer CONNACK 0x01 (unacceptable protocol version) [MQTT-3.1.2-2], as DPS does.
//! The gate looks at the buffered bytes without taking them, so the MQTT server reads the same
//! CONNECT next; each connection it turns away is recorded with the reason, and logged.

use std::io;
use std::time::Duration;

use ntex::codec::Decoder;
use ntex::io::{Filter, Io};
use ntex::time::{Millis, timeout};
use ntex::util::BytesMut;
use ntex_mqtt::MqttError;
use ntex_mqtt::v3::codec;

use crate::record::{Connack, ConnectionRecord, Transport};
use crate::server::{ConnError, Shared};

/// What the first bytes of a connection are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Peek {
    /// A whole MQTT 3.1.1 CONNECT: the MQTT server takes it from here.
    Connect,
    /// A CONNECT for another protocol name or level (MQTT 3.1 is `MQIsdp` level 3, MQTT 5 is
    /// level 5).
    OtherVersion {
        /// The protocol name.
        protocol: String,
        /// The protocol level.
        level: u8,
        /// The clientId, when the packet is whole and laid out as in 3.1 and 3.1.1.
        client_id: Option<String>,
    },
    /// Not a CONNECT: why.
    NotConnect(String),
}

/// The decoder that only looks: it answers once the buffered bytes tell what they are, and
/// leaves them where they are.
struct ConnectPeek {
    max_packet: usize,
}

impl Decoder for ConnectPeek {
    type Item = Peek;
    type Error = io::Error;

    fn decode(&self, src: &mut BytesMut) -> Result<Option<Peek>, io::Error> {
        Ok(peek(src, self.max_packet))
    }
}

/// What `buf` holds so far; `None` until it can tell.
pub(crate) fn peek(buf: &[u8], max_packet: usize) -> Option<Peek> {
    let first = *buf.first()?;
    if first != 0x10 {
        return Some(Peek::NotConnect(format!(
            "the first packet is not a CONNECT (first byte 0x{first:02x})"
        )));
    }
    let (len, header) = match remaining_length(&buf[1..]) {
        Err(()) => return Some(Peek::NotConnect("a malformed remaining length".into())),
        Ok(None) => return None,
        Ok(Some(found)) => found,
    };
    if len > max_packet {
        return Some(Peek::NotConnect(format!(
            "a CONNECT of {len} bytes, over the {max_packet}-byte limit"
        )));
    }
    let total = 1 + header + len;
    let whole = buf.len() >= total;
    let body = &buf[1 + header..buf.len().min(total)];
    let Some(name_len) = body
        .get(..2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    else {
        return whole.then(|| Peek::NotConnect("a CONNECT too short for its protocol".into()));
    };
    let (Some(name), Some(&level)) = (body.get(2..2 + name_len), body.get(2 + name_len)) else {
        return whole.then(|| Peek::NotConnect("a CONNECT too short for its protocol".into()));
    };
    if name == b"MQTT" && level == 4 {
        return whole.then_some(Peek::Connect);
    }
    let client_id = (whole && level <= 4)
        .then(|| {
            // Connect flags (1) and keep-alive (2), then the clientId as a string.
            let at = 2 + name_len + 1 + 3;
            let id_len = usize::from(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]));
            let id = body.get(at + 2..at + 2 + id_len)?;
            Some(String::from_utf8_lossy(id).into_owned())
        })
        .flatten();
    Some(Peek::OtherVersion {
        protocol: String::from_utf8_lossy(name).into_owned(),
        level,
        client_id,
    })
}

/// MQTT's variable-length remaining length: the length and the bytes it took, `Ok(None)` if
/// more bytes are needed, `Err` if it runs over four bytes.
fn remaining_length(buf: &[u8]) -> Result<Option<(usize, usize)>, ()> {
    let mut len = 0usize;
    for (i, byte) in buf.iter().take(4).enumerate() {
        len |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((len, i + 1)));
        }
    }
    if buf.len() >= 4 { Err(()) } else { Ok(None) }
}

/// Lets `io` through once a whole MQTT 3.1.1 CONNECT is buffered; turns anything else away,
/// with a record of why.
pub(crate) async fn admit<F: Filter>(
    io: Io<F>,
    shared: &Shared,
    transport: Transport,
    max_packet: usize,
) -> Result<Io<F>, MqttError<ConnError>> {
    let deadline = shared.limits.connect_timeout;
    let peeked = timeout(millis(deadline), io.recv(&ConnectPeek { max_packet })).await;
    let (client_id, connack, reason) = match peeked {
        Ok(Ok(Some(Peek::Connect))) => return Ok(io),
        Ok(Ok(None)) | Ok(Err(_)) => {
            tracing::debug!(?transport, "the client left before CONNECT");
            return Err(turned_away("the client left before CONNECT"));
        }
        Err(()) => (
            String::new(),
            Connack::Dropped,
            format!("no complete CONNECT within {deadline:?}"),
        ),
        Ok(Ok(Some(Peek::NotConnect(why)))) => (String::new(), Connack::Dropped, why),
        Ok(Ok(Some(Peek::OtherVersion {
            protocol,
            level,
            client_id,
        }))) => {
            let reason = format!(
                "unacceptable protocol version: {protocol} level {level} (DPS speaks MQTT 3.1.1)"
            );
            let connack = codec::Encoded::Packet(codec::Packet::ConnectAck(codec::ConnectAck {
                session_present: false,
                return_code: codec::ConnectAckReason::UnacceptableProtocolVersion,
            }));
            if let Err(e) = io.send(connack, &codec::Codec::default()).await {
                tracing::debug!("CONNACK 0x01 not sent: {e:?}");
            }
            let refused = Connack::Refused {
                code: 1,
                reason: reason.clone(),
            };
            (client_id.unwrap_or_default(), refused, reason)
        }
    };
    tracing::info!(?transport, client_id, reason, "turning a connection away");
    let server_name = io
        .query::<ntex::tls::Servername>()
        .as_ref()
        .map(|name| name.0.clone());
    shared.recorder.open(ConnectionRecord {
        id: 0,
        transport,
        client_id,
        username: None,
        password_present: false,
        clean_session: false,
        keep_alive: 0,
        peer_cert_cn: None,
        server_name,
        connack,
        events: Vec::new(),
        events_dropped: 0,
        ended: Some(reason.clone()),
        started: std::time::Instant::now(),
    });
    let _ = io.shutdown().await;
    Err(turned_away(&reason))
}

fn turned_away(why: &str) -> MqttError<ConnError> {
    MqttError::Service(ConnError(why.to_owned()))
}

fn millis(d: Duration) -> Millis {
    Millis(u32::try_from(d.as_millis()).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CONNECT with `name`, `level` and clientId `id`.
    fn connect(name: &[u8], level: u8, id: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend((name.len() as u16).to_be_bytes());
        body.extend_from_slice(name);
        body.push(level);
        body.extend([0x02, 0x00, 0x3c]); // clean session, keep-alive 60
        body.extend((id.len() as u16).to_be_bytes());
        body.extend_from_slice(id);
        let mut packet = vec![0x10, body.len() as u8];
        packet.extend(body);
        packet
    }

    #[test]
    fn a_whole_mqtt_311_connect_goes_through_and_half_of_one_waits() {
        let packet = connect(b"MQTT", 4, b"dev");
        assert_eq!(peek(&packet, 1024), Some(Peek::Connect));
        for cut in 0..packet.len() {
            assert_eq!(peek(&packet[..cut], 1024), None, "cut at {cut}");
        }
    }

    #[test]
    fn mqtt_31_and_5_are_other_versions_with_their_client_id() {
        assert_eq!(
            peek(&connect(b"MQIsdp", 3, b"paho-dev"), 1024),
            Some(Peek::OtherVersion {
                protocol: "MQIsdp".into(),
                level: 3,
                client_id: Some("paho-dev".into())
            })
        );
        // Known as soon as the level arrives, before the rest of the packet.
        let packet = connect(b"MQTT", 5, b"v5");
        assert!(matches!(
            peek(&packet[..9], 1024),
            Some(Peek::OtherVersion {
                level: 5,
                client_id: None,
                ..
            })
        ));
        // Whole, an MQTT 5 CONNECT is not read as 3.1.1 (its properties come first).
        assert!(matches!(
            peek(&packet, 1024),
            Some(Peek::OtherVersion {
                level: 5,
                client_id: None,
                ..
            })
        ));
    }

    #[test]
    fn a_connect_of_exactly_the_limit_goes_through() {
        let packet = connect(b"MQTT", 4, b"dev");
        let len = packet.len() - 2;
        assert_eq!(peek(&packet, len), Some(Peek::Connect));
        assert!(matches!(peek(&packet, len - 1), Some(Peek::NotConnect(_))));
    }

    #[test]
    fn anything_else_is_not_a_connect() {
        for bytes in [
            &b"\x30\x00"[..],            // a PUBLISH first
            b"GET / HTTP/1.1\r\n",       // not MQTT at all
            b"\x10\xff\xff\xff\xff\x01", // a remaining length over four bytes
            b"\x10\x00",                 // a CONNECT with no body
        ] {
            assert!(
                matches!(peek(bytes, 1024), Some(Peek::NotConnect(_))),
                "{bytes:?}"
            );
        }
        assert!(matches!(
            peek(b"\x10\x80\x80\x01", 1024),
            Some(Peek::NotConnect(why)) if why.contains("over the 1024-byte limit")
        ));
    }
}
