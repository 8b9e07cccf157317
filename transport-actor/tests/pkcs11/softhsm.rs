//! The test binary's SoftHSM2: one configuration in a temporary folder, one token per test so
//! that tests run in parallel. SoftHSM2 reads its tokens when the module is initialised and
//! never again, so every token of the binary ([`TOKENS`]) is made before the first test loads
//! the module.

use std::sync::OnceLock;

use dps_mock_broker::softhsm::KeySpec;
pub use dps_mock_broker::softhsm::{PIN, SoftHsm};
use dps_transport_actor::pkcs11::{Pin, Pkcs11Uri};

/// Each test's token, and the keys made in it before the tests run.
const TOKENS: &[(&str, &[KeySpec])] = &[
    ("p256", &[("EC:prime256v1", "device-key", "01")]),
    ("p384", &[("EC:secp384r1", "device-key", "02")]),
    ("rsa", &[("rsa:2048", "device-key", "03")]),
    ("issue", &[]),
    ("renew", &[]),
    (
        "faults",
        &[
            ("EC:prime256v1", "device-key", "05"),
            ("EC:secp256k1", "k1-key", "06"),
        ],
    ),
    ("wrong-pin", &[("EC:prime256v1", "device-key", "07")]),
    ("relogin", &[("EC:prime256v1", "device-key", "08")]),
    ("vanish", &[("EC:prime256v1", "device-key", "09")]),
    ("removed", &[("EC:prime256v1", "device-key", "0a")]),
    (
        "pool",
        &[
            ("EC:prime256v1", "key-a", "0b"),
            ("EC:secp384r1", "key-b", "0c"),
        ],
    ),
];

/// The SoftHSM2 of this test binary, made on first use; `None` (after `SKIPPED`) where the
/// tools are missing outside CI.
pub fn hsm() -> Option<&'static SoftHsm> {
    static HSM: OnceLock<Option<SoftHsm>> = OnceLock::new();
    HSM.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("dps-softhsm-{}", std::process::id()));
        let hsm = SoftHsm::create(&dir, TOKENS)?;
        // SAFETY: set once, before this process first loads the module (it reads the variable
        // in C_Initialize); nothing else in the test binary writes the environment.
        unsafe { std::env::set_var("SOFTHSM2_CONF", hsm.conf()) };
        Some(hsm)
    })
    .as_ref()
}

/// The test's own handle on the module (sharing the library's initialisation of it), the
/// slot of `token`, and the token's information, for what a test checks behind the library.
pub fn raw_token(
    hsm: &SoftHsm,
    token: &str,
) -> (
    cryptoki::context::Pkcs11,
    cryptoki::slot::Slot,
    cryptoki::slot::TokenInfo,
) {
    let context = cryptoki::context::Pkcs11::new(&hsm.module).unwrap();
    // The library (or another test) initialised the module already; this context shares it.
    let _ = context.initialize(cryptoki::context::CInitializeArgs::new(
        cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
    ));
    let (slot, info) = context
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find_map(|slot| {
            let info = context.get_token_info(slot).ok()?;
            (info.label() == token).then_some((slot, info))
        })
        .unwrap();
    (context, slot, info)
}

/// What the tests ask of the test token.
pub trait TestToken {
    /// The URI of `object` in `token`.
    fn uri(&self, token: &str, object: &str) -> Pkcs11Uri;
    /// The test PIN.
    fn pin(&self) -> Pin;
    /// The module, as `Pkcs11Key::open` takes it.
    fn module(&self) -> Option<&std::path::Path>;
}

impl TestToken for SoftHsm {
    fn uri(&self, token: &str, object: &str) -> Pkcs11Uri {
        format!("pkcs11:token={token};object={object}")
            .parse()
            .unwrap()
    }

    fn pin(&self) -> Pin {
        Pin::new(PIN).unwrap()
    }

    fn module(&self) -> Option<&std::path::Path> {
        Some(&self.module)
    }
}
