//! The floor of DPS's exchange: after the bare handshake of `floor_wire.rs`, the MQTT packets a
//! registration needs, written by hand on the floor's one thread.
//!
//! The bare handshake prices TLS; a registration also sends CONNECT, SUBSCRIBE, the register,
//! a poll for each `assigning`, their PUBACKs, UNSUBSCRIBE and DISCONNECT, and reads the
//! answers. This is the least any client can do for that: no actors, no MQTT library, no
//! timers, no files, and every packet that may share a write with the one before does (the
//! PUBACK of an answer and the next poll, the last PUBACK and UNSUBSCRIBE, DISCONNECT and
//! `close_notify`). The answers are read with `dps_messages`, as the transport reads them, so
//! a device counts only when it is assigned with a hub. What a provisioning client costs above
//! this floor is its own machinery; what another costs, divided by it, is the most a client on
//! rustls and ring could beat it by on this machine for the whole registration.

use dps_messages::response::{RegistrationResponse, ResponseTopic};
use dps_messages::{ApiVersion, Operation, RegistrationRequest, RegistrationStatus};
use rustls::ClientConnection;
use std::io::{Read, Write};
use tokio::net::TcpStream;

use super::floor_wire::{flush, read_records};

/// MQTT 3.1.1 packet types (the high nibble of the first byte).
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const SUBACK: u8 = 9;
const UNSUBACK: u8 = 11;

/// The longest packet read from the broker: DPS's answers are a few hundred bytes, and the
/// bytes of a packet still coming are held until it is whole.
const MAX_PACKET: usize = 64 * 1024;

/// DISCONNECT, whole.
const DISCONNECT: [u8; 2] = [0xE0, 0];

/// The keep-alive announced at CONNECT, in seconds: the transport's.
const KEEP_ALIVE: u16 = 60;

/// The answers one device may read before it counts as failed: a broker that keeps saying
/// `assigning` must not hold the run.
const MOST_ANSWERS: usize = 20;

/// One device's registration over a connection whose handshake is done: everything up to a
/// queued DISCONNECT, which the caller sends with `close_notify`.
pub(super) async fn register(
    stream: &TcpStream,
    tls: &mut ClientConnection,
    out: &mut Vec<u8>,
    id_scope: &str,
    registration_id: &str,
) -> Result<(), String> {
    let mut inbound = Inbound::default();
    let username =
        dps_messages::connect::username(id_scope, registration_id, &ApiVersion::default());
    queue(tls, &connect(registration_id, &username))?;
    flush(stream, tls, out).await?;
    let connack = inbound.expect(stream, tls, CONNACK).await?;
    if connack.get(1) != Some(&0) {
        return Err(format!("CONNACK refused: {connack:?}"));
    }
    queue(tls, &subscribe(1, ResponseTopic::FILTER))?;
    flush(stream, tls, out).await?;
    let suback = inbound.expect(stream, tls, SUBACK).await?;
    if suback.get(2).is_none_or(|code| *code == 0x80) {
        return Err("the subscription was refused".into());
    }
    let request = RegistrationRequest::new(id_scope, registration_id);
    let mut operation = Operation::Register;
    for packet_id in 2..2 + MOST_ANSWERS as u16 {
        let rid = packet_id.to_string();
        queue(
            tls,
            &publish(packet_id, &operation.topic(&rid), &operation.body(&request)),
        )?;
        flush(stream, tls, out).await?;
        let (answer_id, topic, payload) = inbound.answer(stream, tls, packet_id).await?;
        if let Some(answer_id) = answer_id {
            queue(tls, &puback(answer_id))?;
        }
        let topic = ResponseTopic::parse(&topic).map_err(|e| e.to_string())?;
        if topic.rid != rid {
            return Err(format!(
                "an answer to $rid={} where {rid} was asked",
                topic.rid
            ));
        }
        let response = operation
            .read_response(
                &topic,
                &payload,
                RegistrationResponse::DEFAULT_POLLING_INTERVAL,
            )
            .map_err(|e| e.to_string())?;
        match response.result.status {
            RegistrationStatus::Assigned => {
                response
                    .result
                    .validate_assignment()
                    .map_err(|e| e.to_string())?;
                queue(tls, &unsubscribe(packet_id + 1, ResponseTopic::FILTER))?;
                flush(stream, tls, out).await?;
                inbound.expect(stream, tls, UNSUBACK).await?;
                return queue(tls, &DISCONNECT);
            }
            RegistrationStatus::Assigning | RegistrationStatus::Unassigned => {
                if !response.polling_interval.is_zero() {
                    // The PUBACK goes now; the poll waits as the service asked.
                    flush(stream, tls, out).await?;
                    tokio::time::sleep(response.polling_interval).await;
                }
                let operation_id = response.result.operation_id.unwrap_or_default();
                operation = Operation::poll(operation_id);
            }
            other => return Err(format!("the registration ended {other:?}")),
        }
    }
    Err(format!("not assigned after {MOST_ANSWERS} answers"))
}

/// Queues `packet` as TLS application data.
fn queue(tls: &mut ClientConnection, packet: &[u8]) -> Result<(), String> {
    tls.writer().write_all(packet).map_err(|e| e.to_string())
}

/// What the broker sent, decrypted, and not yet read as packets.
#[derive(Default)]
struct Inbound {
    plain: Vec<u8>,
    buf: Vec<u8>,
}

impl Inbound {
    /// The next whole packet: its first byte and its body.
    async fn next(
        &mut self,
        stream: &TcpStream,
        tls: &mut ClientConnection,
    ) -> Result<(u8, Vec<u8>), String> {
        loop {
            if let Some(packet) = split_packet(&mut self.plain)? {
                return Ok(packet);
            }
            if self.buf.is_empty() {
                self.buf = vec![0; 16 * 1024];
            }
            read_records(stream, tls, &mut self.buf).await?;
            let mut chunk = [0; 4096];
            loop {
                match tls.reader().read(&mut chunk) {
                    Ok(0) => return Err("the broker ended the TLS session".into()),
                    Ok(n) => self.plain.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
    }

    /// The body of the next packet, which must be of type `kind`.
    async fn expect(
        &mut self,
        stream: &TcpStream,
        tls: &mut ClientConnection,
        kind: u8,
    ) -> Result<Vec<u8>, String> {
        let (first, body) = self.next(stream, tls).await?;
        if first >> 4 != kind {
            return Err(format!(
                "packet type {} where {kind} was expected",
                first >> 4
            ));
        }
        Ok(body)
    }

    /// The PUBACK of `packet_id` and the service's answer, in either order: the answer's
    /// packet id (none at QoS 0), topic and payload.
    async fn answer(
        &mut self,
        stream: &TcpStream,
        tls: &mut ClientConnection,
        packet_id: u16,
    ) -> Result<Answer, String> {
        let mut acked = false;
        let mut answer = None;
        while !acked || answer.is_none() {
            let (first, body) = self.next(stream, tls).await?;
            match first >> 4 {
                PUBACK if body == packet_id.to_be_bytes() => acked = true,
                PUBLISH => answer = Some(read_publish(first, &body)?),
                kind => return Err(format!("packet type {kind} while waiting for an answer")),
            }
        }
        answer.ok_or_else(|| "no answer".into())
    }
}

/// A PUBLISH from the broker: its packet id (none at QoS 0), topic and payload.
type Answer = (Option<u16>, String, Vec<u8>);

/// Takes one whole packet off the front of `plain`, if there is one: its first byte and body.
fn split_packet(plain: &mut Vec<u8>) -> Result<Option<(u8, Vec<u8>)>, String> {
    let mut length = 0usize;
    for (i, byte) in plain.iter().skip(1).take(4).enumerate() {
        length |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            if length > MAX_PACKET {
                return Err(format!("a packet of {length} bytes, over {MAX_PACKET}"));
            }
            let start = i + 2;
            if plain.len() < start + length {
                return Ok(None);
            }
            let first = plain[0];
            let body = plain[start..start + length].to_vec();
            plain.drain(..start + length);
            return Ok(Some((first, body)));
        }
    }
    // Four length bytes, each saying another follows: MQTT allows no fifth.
    if plain.len() >= 5 {
        return Err("a packet length longer than four bytes".into());
    }
    Ok(None)
}

/// A PUBLISH of first byte `first` and `body`: its packet id, topic and payload.
fn read_publish(first: u8, body: &[u8]) -> Result<Answer, String> {
    let short = || "a PUBLISH shorter than its header".to_owned();
    let length = body.get(..2).ok_or_else(short)?;
    let topic_end = 2 + usize::from(u16::from_be_bytes([length[0], length[1]]));
    let topic = body.get(2..topic_end).ok_or_else(short)?;
    let topic = String::from_utf8(topic.to_vec()).map_err(|e| e.to_string())?;
    if (first >> 1) & 3 == 0 {
        return Ok((None, topic, body[topic_end..].to_vec()));
    }
    let id = body.get(topic_end..topic_end + 2).ok_or_else(short)?;
    let payload = body[topic_end + 2..].to_vec();
    Ok((Some(u16::from_be_bytes([id[0], id[1]])), topic, payload))
}

/// A packet of `first` byte and `body`, with its remaining length.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut length = body.len();
    loop {
        let byte = (length & 0x7F) as u8;
        length >>= 7;
        out.push(if length > 0 { byte | 0x80 } else { byte });
        if length == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A length-prefixed string.
fn string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// CONNECT with clean session, the username and no password (the certificate authenticates).
fn connect(client_id: &str, username: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(64 + username.len());
    string(&mut body, "MQTT");
    body.extend_from_slice(&[4, 0x80 | 0x02]);
    body.extend_from_slice(&KEEP_ALIVE.to_be_bytes());
    string(&mut body, client_id);
    string(&mut body, username);
    packet(0x10, &body)
}

fn subscribe(packet_id: u16, filter: &str) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    string(&mut body, filter);
    body.push(1);
    packet(0x82, &body)
}

fn publish(packet_id: u16, topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(4 + topic.len() + payload.len());
    string(&mut body, topic);
    body.extend_from_slice(&packet_id.to_be_bytes());
    body.extend_from_slice(payload);
    packet(0x32, &body)
}

fn puback(packet_id: u16) -> Vec<u8> {
    packet(0x40, &packet_id.to_be_bytes())
}

fn unsubscribe(packet_id: u16, filter: &str) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    string(&mut body, filter);
    packet(0xA2, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_are_split_whole_and_only_whole() {
        let long = publish(7, "$dps/registrations/res/200/?$rid=7", &[b'x'; 300]);
        let mut plain = puback(3);
        plain.extend_from_slice(&long[..100]);
        assert_eq!(split_packet(&mut plain), Ok(Some((0x40, vec![0, 3]))));
        assert_eq!(split_packet(&mut plain), Ok(None));
        plain.extend_from_slice(&long[100..]);
        let (first, body) = split_packet(&mut plain).unwrap().unwrap();
        assert_eq!(first >> 4, PUBLISH);
        let topic = "$dps/registrations/res/200/?$rid=7".to_owned();
        assert_eq!(
            read_publish(first, &body),
            Ok((Some(7), topic.clone(), vec![b'x'; 300]))
        );
        assert!(plain.is_empty());
        // At QoS 0 there is no packet id: the payload follows the topic.
        let mut qos0 = vec![0, topic.len() as u8];
        qos0.extend_from_slice(topic.as_bytes());
        qos0.extend_from_slice(b"{}");
        assert_eq!(read_publish(0x30, &qos0), Ok((None, topic, b"{}".to_vec())));
        // A QoS 1 answer may have no payload: the packet id ends it.
        let mut bare = vec![0, 1, b't', 0, 9];
        assert_eq!(read_publish(0x32, &bare), Ok((Some(9), "t".into(), vec![])));
        bare.pop();
        assert!(read_publish(0x32, &bare).is_err());
        assert!(read_publish(0x32, &[0, 9, b'a']).is_err());
        // A length may take four bytes; a fourth that says another follows is malformed.
        let mut endless = vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF];
        assert!(split_packet(&mut endless).is_err());
        let mut unfinished = vec![0x30, 0xFF, 0xFF, 0xFF];
        assert_eq!(split_packet(&mut unfinished), Ok(None));
        // A packet longer than any answer is refused before its bytes are held.
        let mut huge = packet(0x30, &vec![0; MAX_PACKET + 1])[..4].to_vec();
        assert!(split_packet(&mut huge).is_err());
        let mut largest = packet(0x30, &vec![0; MAX_PACKET])[..4].to_vec();
        assert_eq!(split_packet(&mut largest), Ok(None));
    }
}
