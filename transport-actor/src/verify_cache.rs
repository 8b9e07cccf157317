//! Reusing the verdict on a server's certificate chain, so that many connections to the same
//! service pay for one chain verification instead of one each.
//!
//! A gateway provisioning a fleet opens one TLS connection per device to the same DPS endpoint,
//! which presents the same chain every time; checking the signatures up that chain is the largest
//! single cost of the client's handshake. With no revocation lists (this transport configures
//! none) the verdict depends only on the chain's bytes, the server name, the trust roots (one
//! cache per verifier) and the time. So a chain that verified is trusted again, byte for byte and
//! for the same name, within a short window over which it was checked to stay valid at both ends.
//!
//! What is never skipped: the server's signature over each handshake (`CertificateVerify`), the
//! proof that this server holds the certificate's key. Failures are never remembered.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// How long a verdict is reused. The chain is verified at both ends of the window, and validity
/// periods are intervals, so it is valid throughout.
const WINDOW: Duration = Duration::from_secs(60);

/// How many distinct chains are remembered; a transport talks to one or a few endpoints.
const CAPACITY: usize = 8;

/// A chain that verified, and the span of time it is known valid for.
#[derive(Debug)]
struct Verified {
    server_name: ServerName<'static>,
    end_entity: Vec<u8>,
    intermediates: Vec<Vec<u8>>,
    from: u64,
    until: u64,
}

impl Verified {
    fn matches(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> bool {
        (self.from..=self.until).contains(&now.as_secs())
            && self.server_name == *server_name
            && self.end_entity == end_entity.as_ref()
            && self.intermediates.len() == intermediates.len()
            && self
                .intermediates
                .iter()
                .zip(intermediates)
                .all(|(a, b)| a.as_slice() == b.as_ref())
    }
}

/// A verifier that remembers which chains `inner` accepted; signatures go to `inner` every time.
#[derive(Debug)]
pub(crate) struct VerifyCache {
    inner: Arc<dyn ServerCertVerifier>,
    verified: Mutex<Vec<Verified>>,
}

impl VerifyCache {
    pub(crate) fn new(inner: Arc<dyn ServerCertVerifier>) -> Self {
        Self {
            inner,
            verified: Mutex::new(Vec::new()),
        }
    }

    fn remembers(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> bool {
        let verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        verified
            .iter()
            .any(|v| v.matches(end_entity, intermediates, server_name, now))
    }

    fn remember(&self, entry: Verified) {
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        verified.retain(|v| v.until >= entry.from);
        if verified.len() >= CAPACITY {
            verified.remove(0);
        }
        verified.push(entry);
    }
}

impl ServerCertVerifier for VerifyCache {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.remembers(end_entity, intermediates, server_name, now) {
            return Ok(ServerCertVerified::assertion());
        }
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let until = UnixTime::since_unix_epoch(Duration::from_secs(now.as_secs()) + WINDOW);
        let stays_valid = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, until)
            .is_ok();
        if stays_valid {
            self.remember(Verified {
                server_name: server_name.to_owned(),
                end_entity: end_entity.to_vec(),
                intermediates: intermediates.iter().map(|c| c.to_vec()).collect(),
                from: now.as_secs(),
                until: until.as_secs(),
            });
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests;
