//! The grammar of the directory's names, checked before anything is stored.
//!
//! Owns: what a tenant name, user name, robot name and hostname may look
//! like, and whether a repository pattern stays inside a tenant.
//!
//! Must never: normalise a refused value into an accepted one (an upper-case
//! hostname is refused, not lower-cased, so what is stored is what was
//! asked for), or accept a pattern that could match another tenant's
//! repositories.

use wharf_auth::RepoPattern;
use wharf_core::RepoName;

/// The longest tenant name.
pub const MAX_TENANT_NAME_LEN: usize = 64;
/// The longest user name, and the longest robot short name.
pub const MAX_USER_NAME_LEN: usize = 64;
/// The longest hostname, without its port (the DNS limit).
pub const MAX_HOSTNAME_LEN: usize = 253;
/// Separates a robot's tenant from its short name: `acme+ci`.
pub const ROBOT_SEPARATOR: char = '+';

/// A tenant name is its namespace, so it is exactly one repository name
/// component (`[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, the distribution
/// grammar `wharf_core` enforces), at most 64 bytes.
pub fn tenant_name(name: &str) -> Result<(), String> {
    let refuse = || {
        Err(format!(
            "tenant name {:?} must be one repository name component \
             ([a-z0-9] runs joined by '.', '_', '__' or '-'), at most {MAX_TENANT_NAME_LEN} bytes",
            clip(name)
        ))
    };
    if name.is_empty() || name.len() > MAX_TENANT_NAME_LEN || name.contains('/') {
        return refuse();
    }
    match name.parse::<RepoName>() {
        Ok(_) => Ok(()),
        Err(_) => refuse(),
    }
}

/// `[a-z0-9][a-z0-9._-]{0,63}`: what `docker login` can send, with no `+`
/// (robots have it) and no `:` (it ends the user name in Basic auth).
pub fn user_name(name: &str) -> Result<(), String> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= MAX_USER_NAME_LEN
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "user name {:?} must match [a-z0-9][a-z0-9._-]{{0,63}}",
            clip(name)
        ))
    }
}

/// A robot's short name follows the user-name grammar.
pub fn robot_short_name(short: &str) -> Result<(), String> {
    user_name(short).map_err(|_| {
        format!(
            "robot name {:?} must match [a-z0-9][a-z0-9._-]{{0,63}}",
            clip(short)
        )
    })
}

/// `<tenant>+<short>`.
pub fn robot_name(tenant: &str, short: &str) -> String {
    format!("{tenant}{ROBOT_SEPARATOR}{short}")
}

/// A lower-case DNS name (labels of `[a-z0-9]`, inner `-`, 1 to 63 bytes
/// each, 253 in all), optionally followed by `:port` (1 to 65535).
pub fn hostname(host: &str) -> Result<(), String> {
    let refuse = || {
        Err(format!(
            "hostname {:?} must be a lower-case DNS name with an optional :port",
            clip(host)
        ))
    };
    let Some((name, _port)) = split_host(host) else {
        return refuse();
    };
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
            && b.iter()
                .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    };
    if name.is_empty() || name.len() > MAX_HOSTNAME_LEN || !name.split('.').all(label_ok) {
        return refuse();
    }
    Ok(())
}

/// Splits `host[:port]`. `None` if the port is present but not a number in
/// 1..=65535. An IPv6 literal (`[::1]:5000`) splits into a name that never
/// matches a tenant's hostname.
pub(crate) fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    match host.rsplit_once(':') {
        None => Some((host, None)),
        Some((name, port)) => {
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            match port.parse::<u16>() {
                Ok(0) | Err(_) => None,
                Ok(p) => Some((name, Some(p))),
            }
        }
    }
}

/// Whether `pattern` can only ever match repositories of `tenant`: its
/// namespace ([`RepoPattern::tenant`], the first path component) is the
/// tenant's. Because patterns are made of `RepoName`s, none can hold `..`,
/// a wildcard inside a name or an upper-case twin, so none escapes it.
/// The bare repository `acme` is the tenant's too, as the metadata store's
/// namespace usage counts it.
pub fn pattern_in_tenant(pattern: &RepoPattern, tenant: &str) -> bool {
    pattern.tenant() == tenant
}

/// A concurrency share: a finite fraction in (0, 1].
pub fn concurrency_share(share: f64) -> Result<(), String> {
    if share.is_finite() && share > 0.0 && share <= 1.0 {
        Ok(())
    } else {
        Err(format!(
            "concurrency share {share} must be greater than 0 and at most 1"
        ))
    }
}

/// A refused value is echoed in errors; keep that short.
pub(crate) fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_follow_the_component_grammar() {
        for ok in [
            "acme",
            "a",
            "acme-corp",
            "acme.io",
            "a1_b2",
            &"a".repeat(64),
        ] {
            assert!(tenant_name(ok).is_ok(), "{ok:?} refused");
        }
        for bad in [
            "",
            "Acme",
            "acme/app",
            "-acme",
            "acme-",
            "acme..io",
            "ac me",
            "acme+x",
            "acme:5000",
            &"a".repeat(65),
        ] {
            assert!(tenant_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn user_names_follow_their_grammar_without_plus_or_colon() {
        for ok in ["alice", "0day", "a.b_c-d", &"a".repeat(64)] {
            assert!(user_name(ok).is_ok(), "{ok:?} refused");
        }
        for bad in [
            "",
            ".alice",
            "-alice",
            "Alice",
            "acme+ci",
            "al:ice",
            "al ice",
            "al/ice",
            "é",
            &"a".repeat(65),
        ] {
            assert!(user_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(robot_short_name("ci").is_ok());
        assert!(robot_short_name("c+i").is_err());
        assert_eq!(robot_name("acme", "ci"), "acme+ci");
    }

    #[test]
    fn hostnames_are_lower_case_dns_names_with_an_optional_port() {
        for ok in [
            "registry.acme.com",
            "localhost",
            "reg-1.acme.io:5000",
            "a.b:1",
            "x:65535",
        ] {
            assert!(hostname(ok).is_ok(), "{ok:?} refused");
        }
        let long_label = format!("{}.com", "a".repeat(64));
        let too_long = vec!["a".repeat(63); 5].join(".");
        for bad in [
            "",
            "Registry.acme.com",
            "reg.acme.com.",
            "-reg.acme.com",
            "reg-.acme.com",
            "reg..acme.com",
            "reg_1.acme.com",
            "reg.acme.com:",
            "reg.acme.com:0",
            "reg.acme.com:65536",
            "reg.acme.com:http",
            "reg.acme.com:5000:1",
            "[::1]:5000",
            "acme.com/path",
            long_label.as_str(),
            too_long.as_str(),
        ] {
            assert!(hostname(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn patterns_must_stay_inside_the_tenant() {
        let p = |s: &str| s.parse::<RepoPattern>().unwrap();
        for ok in ["acme/*", "acme/app", "acme/team/*", "acme/team/app", "acme"] {
            assert!(pattern_in_tenant(&p(ok), "acme"), "{ok:?} refused");
        }
        for bad in [
            "globex/*",
            "globex/app",
            "acme-evil/*",
            "acmex/app",
            "acme-evil",
            "other/acme/*",
        ] {
            assert!(!pattern_in_tenant(&p(bad), "acme"), "{bad:?} accepted");
        }
    }

    #[test]
    fn shares_are_fractions_up_to_one() {
        for ok in [0.001, 0.5, 1.0] {
            assert!(concurrency_share(ok).is_ok());
        }
        for bad in [0.0, -0.1, 1.01, f64::NAN, f64::INFINITY] {
            assert!(concurrency_share(bad).is_err());
        }
    }
}
