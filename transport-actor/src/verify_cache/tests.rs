//! The tests of `verify_cache`.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// Accepts chains whose end entity is not `b"bad"` while `now` is before `expires`;
/// counts the chain verifications it is asked for.
#[derive(Debug, Default)]
struct Counting {
    expires: u64,
    chains: AtomicUsize,
}

impl ServerCertVerifier for Counting {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.chains.fetch_add(1, Ordering::SeqCst);
        if end_entity.as_ref() == b"bad" {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ));
        }
        if now.as_secs() >= self.expires {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        unreachable!("the tests verify no handshake signature")
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        unreachable!("the tests verify no handshake signature")
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ECDSA_NISTP256_SHA256]
    }
}

struct Fixture {
    cache: VerifyCache,
    counting: Arc<Counting>,
}

fn cache(expires: u64) -> Fixture {
    let counting = Arc::new(Counting {
        expires,
        ..Counting::default()
    });
    Fixture {
        cache: VerifyCache::new(counting.clone()),
        counting,
    }
}

fn name(host: &str) -> ServerName<'static> {
    ServerName::try_from(host.to_owned()).unwrap()
}

fn at(secs: u64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(secs))
}

fn verify(
    f: &Fixture,
    end_entity: &[u8],
    intermediates: &[&[u8]],
    host: &str,
    now: u64,
) -> Result<ServerCertVerified, rustls::Error> {
    let intermediates: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|c| CertificateDer::from(*c))
        .collect();
    f.cache.verify_server_cert(
        &CertificateDer::from(end_entity),
        &intermediates,
        &name(host),
        &[],
        at(now),
    )
}

fn chains(f: &Fixture) -> usize {
    f.counting.chains.load(Ordering::SeqCst)
}

#[test]
fn the_same_chain_and_name_are_verified_once_within_the_window() {
    let cache = cache(u64::MAX);
    verify(&cache, b"server", &[b"ca"], "dps.example", 1_000).unwrap();
    // The first verification checks now and the end of the window.
    assert_eq!(chains(&cache), 2);
    for now in [1_000, 1_030, 1_060] {
        verify(&cache, b"server", &[b"ca"], "dps.example", now).unwrap();
    }
    assert_eq!(chains(&cache), 2);
    // Past the window, or with the clock set back, the chain is verified again.
    verify(&cache, b"server", &[b"ca"], "dps.example", 1_061).unwrap();
    assert_eq!(chains(&cache), 4);
    verify(&cache, b"server", &[b"ca"], "dps.example", 999).unwrap();
    assert_eq!(chains(&cache), 6);
}

#[test]
fn another_name_or_other_bytes_are_verified_afresh() {
    let cache = cache(u64::MAX);
    verify(&cache, b"server", &[b"ca"], "dps.example", 1_000).unwrap();
    verify(&cache, b"server", &[b"ca"], "other.example", 1_000).unwrap();
    assert_eq!(chains(&cache), 4);
    verify(&cache, b"server2", &[b"ca"], "dps.example", 1_000).unwrap();
    assert_eq!(chains(&cache), 6);
    verify(&cache, b"server", &[b"ca2"], "dps.example", 1_000).unwrap();
    verify(&cache, b"server", &[], "dps.example", 1_000).unwrap();
    verify(&cache, b"server", &[b"ca", b"ca"], "dps.example", 1_000).unwrap();
    assert_eq!(chains(&cache), 12);
}

#[test]
fn failures_are_never_remembered() {
    let cache = cache(u64::MAX);
    for _ in 0..3 {
        assert!(verify(&cache, b"bad", &[], "dps.example", 1_000).is_err());
    }
    assert_eq!(chains(&cache), 3);
}

#[test]
fn a_chain_expiring_within_the_window_is_not_remembered() {
    let cache = cache(1_030);
    verify(&cache, b"server", &[], "dps.example", 1_000).unwrap();
    verify(&cache, b"server", &[], "dps.example", 1_010).unwrap();
    assert_eq!(chains(&cache), 4);
    assert!(verify(&cache, b"server", &[], "dps.example", 1_030).is_err());
}

#[test]
fn holds_at_most_capacity_chains() {
    let cache = cache(u64::MAX);
    for i in 0..CAPACITY + 3 {
        verify(
            &cache,
            format!("server{i}").as_bytes(),
            &[],
            "dps.example",
            1_000,
        )
        .unwrap();
    }
    assert_eq!(cache.cache.verified.lock().unwrap().len(), CAPACITY);
    // The newest are kept.
    let before = chains(&cache);
    let newest = format!("server{}", CAPACITY + 2);
    verify(&cache, newest.as_bytes(), &[], "dps.example", 1_000).unwrap();
    assert_eq!(chains(&cache), before);
}
