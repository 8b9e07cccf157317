//! DPS's rule for a registration id (and an enrollment group id): at most 128 characters,
//! alphanumerics and `- . _ :`, compared without case.

/// The longest registration id DPS takes.
pub(crate) const MAX_REGISTRATION_ID_LEN: usize = 128;

/// `Ok` when `id` is one DPS takes, else why not.
pub(crate) fn check_registration_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("the registration id is empty".into());
    }
    if id.len() > MAX_REGISTRATION_ID_LEN {
        return Err(format!(
            "the registration id is {} characters long; at most {MAX_REGISTRATION_ID_LEN}",
            id.len()
        ));
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':')))
    {
        Some(c) => Err(format!(
            "the registration id has `{}`: only alphanumerics and - . _ : are allowed",
            c.escape_default()
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_dps_ids_and_refuses_others() {
        for ok in ["dev-1", "A.b_c:d", &"x".repeat(128), "0"] {
            assert_eq!(check_registration_id(ok), Ok(()), "{ok}");
        }
        for bad in ["", "dev 1", "dev/1", "dév", "a#b", &"x".repeat(129)] {
            assert!(check_registration_id(bad).is_err(), "{bad}");
        }
    }
}
