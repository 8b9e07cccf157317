//! A token, found by its label or serial, logged in once, and one pool of sessions for the
//! whole process: a factory station signs for hundreds of devices with one HSM, and every
//! connection that uses the token shares them.
//!
//! Sessions are opened on demand up to [`MAX_SESSIONS`]; a signature takes one from the pool
//! and gives it back. A session the token closed (the token was reset, removed and put back,
//! or logged out) is dropped, and the operation runs once more on a fresh, logged-in session.
//! A PIN the token refused is never offered again: tokens lock after a few wrong PINs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;

use super::{Pin, Pkcs11Error, Pkcs11Uri};

/// The most sessions one token has open at a time: each signature takes one for a few
/// milliseconds, so a handful serve hundreds of handshakes a second.
pub const MAX_SESSIONS: usize = 4;

/// How long a signature waits for a session when all are busy, before
/// [`Pkcs11Error::Busy`].
const BUSY_WAIT: Duration = Duration::from_secs(5);

/// A logged-in token: the slot, its label, and its pool of sessions. Cheap to clone; clones
/// share the pool.
#[derive(Clone)]
pub struct Pkcs11Token {
    inner: Arc<TokenInner>,
}

struct TokenInner {
    context: Pkcs11,
    module: PathBuf,
    slot: Slot,
    label: String,
    pin: Pin,
    pool: Mutex<Pool>,
    freed: Condvar,
    /// The mechanisms the token offers, asked once.
    mechanisms: OnceLock<Vec<MechanismType>>,
}

/// Every token the process opened, by module and slot.
type Tokens = HashMap<(PathBuf, u64), Arc<TokenInner>>;

#[derive(Default)]
struct Pool {
    idle: Vec<Session>,
    open: usize,
    /// The token refused the PIN (incorrect, locked): it is not offered again while the
    /// process lives, and this is the answer instead.
    refused: Option<Pkcs11Error>,
}

/// The same token: one pool, shared.
impl PartialEq for Pkcs11Token {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for Pkcs11Token {}

impl std::fmt::Debug for Pkcs11Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Token")
            .field("module", &self.inner.module)
            .field("label", &self.inner.label)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Token {
    /// The token `uri` names (`token=` label or `serial=`; the only one when it names
    /// neither) in the module at `module`, logged in with `pin`. The same token opened twice
    /// in a process is one pool.
    pub fn open(module: &Path, uri: &Pkcs11Uri, pin: &Pin) -> Result<Self, Pkcs11Error> {
        // Kept for the process: the pool, and the memory of a refused PIN.
        static TOKENS: OnceLock<Mutex<Tokens>> = OnceLock::new();
        let context = super::module::load(module)?;
        let (slot, label) = find_slot(&context, module, uri)?;
        let mut tokens = TOKENS
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = (module.to_owned(), slot.id());
        let inner = tokens.entry(key).or_insert_with(|| {
            Arc::new(TokenInner {
                context,
                module: module.to_owned(),
                slot,
                label,
                pin: pin.clone(),
                pool: Mutex::default(),
                freed: Condvar::new(),
                mechanisms: OnceLock::new(),
            })
        });
        let token = Self {
            inner: inner.clone(),
        };
        drop(tokens);
        // Log in now (a token opened before: its pool's session, or the PIN it refused), so that
        // a wrong PIN is an error here, before any connection.
        let session = token.take()?;
        token.give_back(session);
        Ok(token)
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// How many sessions the pool has open now (at most [`MAX_SESSIONS`]).
    pub fn open_sessions(&self) -> usize {
        let pool = self
            .inner
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        pool.open
    }

    /// The module's path.
    pub fn module(&self) -> &Path {
        &self.inner.module
    }

    /// The mechanisms the token offers.
    pub(super) fn mechanisms(&self) -> Result<&[MechanismType], Pkcs11Error> {
        if let Some(known) = self.inner.mechanisms.get() {
            return Ok(known);
        }
        let listed = self
            .inner
            .context
            .get_mechanism_list(self.inner.slot)
            .map_err(|e| self.failed("list the mechanisms", e))?;
        Ok(self.inner.mechanisms.get_or_init(|| listed))
    }

    /// The error of `operation` failing with `error`.
    pub(super) fn failed(&self, operation: &'static str, error: CkError) -> Pkcs11Error {
        Pkcs11Error::Token {
            operation,
            label: self.inner.label.clone(),
            reason: error.to_string(),
        }
    }

    /// Runs `f` on a pooled session. When the token closed the session (or logged it out),
    /// `f` runs once more on a fresh one, told so (`true`) so that it finds its objects again.
    pub(super) fn run<R>(
        &self,
        operation: &'static str,
        mut f: impl FnMut(&Session, bool) -> Result<R, CkError>,
    ) -> Result<R, Pkcs11Error> {
        let session = self.take()?;
        match f(&session, false) {
            Ok(value) => {
                self.give_back(session);
                Ok(value)
            }
            Err(e) if is_stale(&e) => {
                tracing::warn!(
                    token = self.inner.label,
                    "PKCS#11 {operation}: {e}; retrying on a new session"
                );
                self.discard(session);
                let session = self.take()?;
                let result = f(&session, true);
                match &result {
                    Err(e) if is_stale(e) => self.discard(session),
                    _ => self.give_back(session),
                }
                result.map_err(|e| self.failed(operation, e))
            }
            Err(e) => {
                self.give_back(session);
                Err(self.failed(operation, e))
            }
        }
    }

    /// An idle session, or a new logged-in one while fewer than [`MAX_SESSIONS`] are open,
    /// or the next one given back.
    fn take(&self) -> Result<Session, Pkcs11Error> {
        let inner = &self.inner;
        let mut pool = inner.pool.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(session) = pool.idle.pop() {
                return Ok(session);
            }
            if pool.open < MAX_SESSIONS {
                if let Some(refused) = &pool.refused {
                    return Err(refused.clone());
                }
                pool.open += 1;
                drop(pool);
                let opened = self.open_session();
                let mut pool = inner.pool.lock().unwrap_or_else(PoisonError::into_inner);
                return opened.inspect_err(|e| {
                    pool.open -= 1;
                    if matches!(
                        e,
                        Pkcs11Error::PinIncorrect { .. } | Pkcs11Error::PinLocked { .. }
                    ) {
                        pool.refused = Some(e.clone());
                    }
                });
            }
            let (next, waited) = inner
                .freed
                .wait_timeout(pool, BUSY_WAIT)
                .unwrap_or_else(PoisonError::into_inner);
            pool = next;
            if waited.timed_out() && pool.idle.is_empty() {
                return Err(Pkcs11Error::Busy {
                    label: inner.label.clone(),
                    max: MAX_SESSIONS,
                });
            }
        }
    }

    fn give_back(&self, session: Session) {
        let mut pool = self
            .inner
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        pool.idle.push(session);
        self.inner.freed.notify_one();
    }

    /// Closes a session the token no longer honours.
    fn discard(&self, session: Session) {
        drop(session);
        let mut pool = self
            .inner
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        pool.open -= 1;
        // Every idle session is as stale: a logout or a removal ends them all.
        let stale = std::mem::take(&mut pool.idle);
        pool.open -= stale.len();
        drop(pool);
        drop(stale);
        self.inner.freed.notify_all();
    }

    /// A read-write session (key generation needs one), logged in as the user.
    fn open_session(&self) -> Result<Session, Pkcs11Error> {
        let inner = &self.inner;
        let session = inner
            .context
            .open_rw_session(inner.slot)
            .map_err(|e| self.failed("open a session", e))?;
        // A token checks the PIN at login, and the login holds for all of the process's
        // sessions; a new session after a logout logs in again.
        let login = session.login(UserType::User, Some(inner.pin.auth()));
        login_outcome(&inner.label, login).map(|()| session)
    }
}

/// What a login's return value means.
fn login_outcome(label: &str, login: Result<(), CkError>) -> Result<(), Pkcs11Error> {
    let label = label.to_owned();
    match login {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => Err(Pkcs11Error::PinIncorrect { label }),
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(Pkcs11Error::PinLocked { label }),
        Err(e) => Err(Pkcs11Error::Token {
            operation: "log in",
            label,
            reason: e.to_string(),
        }),
    }
}

/// The slot of the token `uri` names, and the token's label. A token whose user PIN is
/// locked is refused here, before any PIN is offered.
fn find_slot(
    context: &Pkcs11,
    module: &Path,
    uri: &Pkcs11Uri,
) -> Result<(Slot, String), Pkcs11Error> {
    let failed = |operation, e: CkError| Pkcs11Error::Token {
        operation,
        label: uri.token.clone().unwrap_or_default(),
        reason: e.to_string(),
    };
    let slots = context
        .get_slots_with_token()
        .map_err(|e| failed("list the slots", e))?;
    let mut found = Vec::new();
    for slot in slots {
        // A token that cannot be read (removed, broken) is not the one asked for; the others
        // are still found.
        let info = match context.get_token_info(slot) {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(
                    slot = slot.id(),
                    "skipping a token that cannot be read: {e}"
                );
                continue;
            }
        };
        let label = info.label().trim().to_owned();
        let serial = info.serial_number().trim().to_owned();
        found.push((slot, label, serial, info.user_pin_locked()));
    }
    let matching: Vec<_> = found
        .iter()
        .filter(|(_, label, serial, _)| {
            uri.token.as_ref().is_none_or(|want| want == label)
                && uri.serial.as_ref().is_none_or(|want| want == serial)
        })
        .collect();
    match matching.as_slice() {
        [(slot, label, _, locked)] => {
            if *locked {
                return Err(Pkcs11Error::PinLocked {
                    label: label.clone(),
                });
            }
            Ok((*slot, label.clone()))
        }
        [] => Err(Pkcs11Error::NoToken {
            label: uri
                .token
                .clone()
                .or_else(|| uri.serial.as_ref().map(|s| format!("serial {s}")))
                .unwrap_or_default(),
            module: module.to_owned(),
            found: found
                .iter()
                .map(|(_, label, _, _)| format!("`{label}`"))
                .collect::<Vec<_>>()
                .join(", "),
        }),
        many => Err(Pkcs11Error::AmbiguousToken {
            uri: uri.to_string(),
            count: many.len(),
        }),
    }
}

/// Whether `error` says the session (not the request) is gone: run again on a new one.
fn is_stale(error: &CkError) -> bool {
    matches!(
        error,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::TokenNotPresent
                | RvError::DeviceRemoved
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid,
            _
        )
    )
}

#[cfg(test)]
mod tests;
