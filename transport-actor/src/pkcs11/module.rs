//! The PKCS#11 module: a shared library loaded at run time (no link-time dependency), and
//! initialised once per process with OS locking so that every thread may call it. Every token
//! of a module shares the one loaded copy.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};

use super::Pkcs11Error;

/// The module at `path`, loaded and initialised once per process (with OS locking, so that
/// every thread may call it).
pub(super) fn load(path: &Path) -> Result<Pkcs11, Pkcs11Error> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut modules = MODULES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(context) = modules.get(path) {
        return Ok(context.clone());
    }
    if !path.exists() {
        return Err(Pkcs11Error::ModuleMissing {
            path: path.to_owned(),
        });
    }
    let not_a_module = |e: CkError| Pkcs11Error::NotAModule {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let context = Pkcs11::new(path).map_err(not_a_module)?;
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Another part of the process initialised it: it is as usable.
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(not_a_module(e)),
    }
    modules.insert(path.to_owned(), context.clone());
    Ok(context)
}
