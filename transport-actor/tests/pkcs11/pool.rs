//! One token, one pool: keys of the same token share its sessions, and however many threads
//! sign at once, the pool never opens more than `MAX_SESSIONS`.

use std::sync::Arc;

use dps_messages::x509::KeySigner;
use dps_transport_actor::pkcs11::{MAX_SESSIONS, Pkcs11Key};

use crate::softhsm::{TestToken, hsm};

#[test]
fn keys_of_one_token_share_a_bounded_pool_across_threads() {
    let Some(hsm) = hsm() else { return };
    let a = Pkcs11Key::open(&hsm.uri("pool", "key-a"), hsm.module(), &hsm.pin()).unwrap();
    let b = Pkcs11Key::open(&hsm.uri("pool", "key-b"), hsm.module(), &hsm.pin()).unwrap();
    assert_eq!(a.token(), b.token(), "one token, one pool");
    let other = Pkcs11Key::open(&hsm.uri("p256", "device-key"), hsm.module(), &hsm.pin()).unwrap();
    assert_ne!(a.token(), other.token(), "another token, another pool");
    let shown = format!("{:?}", a.token());
    assert!(
        shown.contains("\"pool\"") && !shown.contains(crate::softhsm::PIN),
        "{shown}"
    );
    // Each key's URI names it alone: the token's label, and the id read from the key.
    assert_eq!(a.uri().token.as_deref(), Some("pool"));
    assert_eq!(a.uri().id.as_deref(), Some(&[0x0b][..]));
    assert_eq!(b.uri().id.as_deref(), Some(&[0x0c][..]));
    let keys = [Arc::new(a), Arc::new(b)];
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let key = keys[i % 2].clone();
            std::thread::spawn(move || {
                for round in 0..25 {
                    let signature = key.sign(format!("message {i} {round}").as_bytes()).unwrap();
                    assert_eq!(signature[0], 0x30, "DER");
                    assert!(key.token().open_sessions() <= MAX_SESSIONS);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let open = keys[0].token().open_sessions();
    assert!((1..=MAX_SESSIONS).contains(&open), "{open} sessions open");
}
