//! Which proxy `dps` uses: `--proxy URL`, else `HTTPS_PROXY` (or `https_proxy`) unless the
//! service's host is in `NO_PROXY` (or `no_proxy`); `--no-proxy` turns both off. The library
//! itself never reads the environment: a program embedding it decides.

use dps_messages::ProvisioningError;
use dps_transport_actor::ProxyConfig;

/// The proxy for a connection to `host`, from the flags and the environment (`env` reads a
/// variable; `std::env::var(..).ok()` in the program).
pub fn choose(
    proxy_flag: Option<&str>,
    no_proxy_flag: bool,
    host: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<ProxyConfig>, ProvisioningError> {
    if no_proxy_flag {
        return Ok(None);
    }
    if let Some(url) = proxy_flag {
        return ProxyConfig::parse(url).map(Some);
    }
    let read = |names: [&str; 2]| {
        names
            .into_iter()
            .filter_map(&env)
            .map(|v| v.trim().to_owned())
            .find(|v| !v.is_empty())
    };
    let Some(url) = read(["HTTPS_PROXY", "https_proxy"]) else {
        return Ok(None);
    };
    if let Some(list) = read(["NO_PROXY", "no_proxy"])
        && bypasses(&list, host)
    {
        return Ok(None);
    }
    ProxyConfig::parse(&url).map(Some)
}

/// Whether `NO_PROXY`'s `list` names `host`: `*`, the host itself, or a domain it is in
/// (`example.com` and `.example.com` both cover `dps.example.com`); a port on an entry is
/// ignored. Addresses match exactly (no CIDR ranges).
fn bypasses(list: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    list.split(',').map(str::trim).any(|entry| {
        if entry == "*" {
            return true;
        }
        let entry = match entry.rsplit_once(':') {
            // `host:port`, but not a bare IPv6 address.
            Some((name, port)) if !name.contains(':') && port.parse::<u16>().is_ok() => name,
            _ => entry,
        };
        let entry = entry
            .trim_start_matches('.')
            .trim_matches(|c| c == '[' || c == ']')
            .to_ascii_lowercase();
        !entry.is_empty() && (host == entry || host.ends_with(&format!(".{entry}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn flags_win_over_the_environment() {
        let vars = [("HTTPS_PROXY", "http://env-proxy:1")];
        let chosen = |flag, off| choose(flag, off, "dps.example.com", env(&vars)).unwrap();
        assert_eq!(chosen(None, false).unwrap().address(), "env-proxy:1");
        assert_eq!(
            chosen(Some("http://flag:2"), false).unwrap().address(),
            "flag:2"
        );
        assert!(chosen(Some("http://flag:2"), true).is_none());
        assert!(chosen(None, true).is_none());
        let lower = [("https_proxy", "http://lower:3")];
        let chosen = choose(None, false, "h", env(&lower)).unwrap();
        assert_eq!(chosen.unwrap().address(), "lower:3");
        assert!(choose(None, false, "h", env(&[])).unwrap().is_none());
        assert!(
            choose(None, false, "h", env(&[("HTTPS_PROXY", " ")]))
                .unwrap()
                .is_none()
        );
        assert!(choose(Some("ftp://x"), false, "h", env(&[])).is_err());
    }

    #[test]
    fn no_proxy_names_hosts_domains_and_everything() {
        let through = |list: &str, host: &str| {
            let vars = [("HTTPS_PROXY", "http://p:1"), ("NO_PROXY", list)];
            choose(None, false, host, env(&vars)).unwrap().is_some()
        };
        let host = "global.azure-devices-provisioning.net";
        assert!(through("", host));
        assert!(through("localhost,127.0.0.1", host));
        assert!(!through("*", host));
        assert!(!through("azure-devices-provisioning.net", host));
        assert!(!through(".azure-devices-provisioning.net", host));
        assert!(!through("GLOBAL.azure-devices-provisioning.net:8883", host));
        assert!(through("devices-provisioning.net.evil", host));
        assert!(!through("localhost, 127.0.0.1", "127.0.0.1"));
        assert!(!through("::1", "::1") && !through("[::1]", "::1"));
        assert!(
            through("ice-provisioning.net", host),
            "a suffix is not a domain"
        );
        let lower = [("HTTPS_PROXY", "http://p:1"), ("no_proxy", "*")];
        assert!(choose(None, false, "h", env(&lower)).unwrap().is_none());
    }
}
