//! The command line's open-file limit. A broker holds a file per connection: thousands of
//! devices at once need more than the usual soft limit of 1,024, so the broker raises its soft
//! limit to its hard one when it starts, and says what it has (and why not, when it cannot).

/// Raises the soft open-file limit to the hard one (at most 1,048,576, Linux's default
/// ceiling); the sentence to print.
#[cfg(unix)]
pub(crate) fn raise() -> String {
    const CEILING: libc::rlim_t = 1 << 20;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the rlimit it is given, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return format!(
            "cannot read the open-file limit: {}",
            std::io::Error::last_os_error()
        );
    }
    let wanted = limit.rlim_max.min(CEILING);
    if limit.rlim_cur >= wanted {
        return format!("open files: at most {}", limit.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: wanted,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads the rlimit it is given, which lives for the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        format!(
            "open files: at most {wanted} (raised from {})",
            limit.rlim_cur
        )
    } else {
        format!(
            "open files: at most {} (cannot raise it to {wanted}: {}); each connection holds one",
            limit.rlim_cur,
            std::io::Error::last_os_error()
        )
    }
}

/// Elsewhere the limit is the platform's.
#[cfg(not(unix))]
pub(crate) fn raise() -> String {
    "open files: the platform's limit".into()
}
