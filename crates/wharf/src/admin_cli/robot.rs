//! `wharf admin robot create|list|revoke`: a tenant's robot accounts (for
//! CI).
//!
//! Owns: those commands' arguments, parsing grants and lifetimes, the
//! robot name check (a short name or `TENANT+NAME`), the request each
//! command makes, and `--secret-only` printing just the new secret.
//!
//! Must never: print a secret other than the one `robot create` was just
//! given (the server shows it only that once), or accept a grant the
//! server's grammar would not.

use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use super::connection::{segment, Call, Print};
use super::tenant::tenant_path;
use super::user::valid_user_name;

/// `wharf admin robot …`.
#[derive(Subcommand, Debug)]
pub(super) enum RobotCommand {
    /// Create a robot account; its secret is shown only this once.
    ///
    /// The robot logs in as `TENANT+NAME` with the secret as its password.
    Create {
        /// The tenant.
        tenant: String,
        /// The robot's short name (its login is `TENANT+NAME`; that form is
        /// taken too).
        name: String,
        /// What it may do: `acme/app:pull,push` (a repository or `acme/*`,
        /// then actions from pull, push, delete). Repeat for several.
        #[arg(
            long = "grant",
            value_name = "PATTERN:ACTIONS",
            required = true,
            value_parser = parse_grant
        )]
        grants: Vec<String>,
        /// Lifetime: `90s`, `15m`, `12h`, `30d` or seconds [default: no
        /// expiry].
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        expires_in: Option<u64>,
        /// Print only the secret (for scripts) instead of the whole answer.
        #[arg(long)]
        secret_only: bool,
    },
    /// List a tenant's robot accounts (secrets are never shown again).
    List {
        /// The tenant.
        tenant: String,
    },
    /// Revoke a robot account: its tokens are refused from then on.
    Revoke {
        /// The tenant.
        tenant: String,
        /// The robot: its short name (`ci`) or login (`acme+ci`).
        name: String,
    },
}

impl RobotCommand {
    /// The request this command makes.
    pub(super) fn call(&self) -> Result<Call, String> {
        Ok(match self {
            RobotCommand::Create {
                tenant,
                name,
                grants,
                expires_in,
                secret_only,
            } => {
                let path = format!("{}/robots", tenant_path(tenant)?);
                robot_segment(tenant, name)?;
                let mut body = json!({"name": name, "grants": grants});
                if let Some(secs) = expires_in {
                    body["expires_in_secs"] = json!(secs);
                }
                Call {
                    method: Method::POST,
                    path,
                    body: Some(body),
                    print: if *secret_only {
                        Print::Secret
                    } else {
                        Print::Json
                    },
                }
            }
            RobotCommand::List { tenant } => Call::json(
                Method::GET,
                format!("{}/robots", tenant_path(tenant)?),
                None,
            ),
            RobotCommand::Revoke { tenant, name } => Call::json(
                Method::DELETE,
                format!(
                    "{}/robots/{}",
                    tenant_path(tenant)?,
                    robot_segment(tenant, name)?
                ),
                None,
            ),
        })
    }
}

/// A robot: its short name (`ci`) or its login (`acme+ci`, with the
/// tenant's own name), as the server takes either.
fn robot_segment(tenant: &str, name: &str) -> Result<String, String> {
    let short = name
        .strip_prefix(tenant)
        .and_then(|rest| rest.strip_prefix('+'))
        .unwrap_or(name);
    if !valid_user_name(short) {
        return Err(format!(
            "robot name {name:?} must be NAME or {tenant}+NAME, NAME matching \
             [a-z0-9][a-z0-9._-]{{0,63}}"
        ));
    }
    segment("robot", name)
}

/// A duration in seconds: `90s`, `15m`, `12h`, `30d` or plain seconds;
/// more than zero.
fn parse_duration(s: &str) -> Result<u64, String> {
    let bad = || format!("duration {s:?} is not a whole number of seconds or of s, m, h or d");
    let text = s.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], Some(c)),
        _ => (text, None),
    };
    let seconds: u64 = match unit {
        None | Some('s') => 1,
        Some('m') => 60,
        Some('h') => 60 * 60,
        Some('d') => 24 * 60 * 60,
        Some(_) => return Err(bad()),
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let total = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(seconds))
        .ok_or_else(|| format!("duration {s:?} is too long"))?;
    if total == 0 {
        return Err(format!("duration {s:?} must be more than zero"));
    }
    Ok(total)
}

/// `acme/app:pull,push`: checked with the grammar the server uses for
/// grants, and sent in its canonical form.
fn parse_grant(s: &str) -> Result<String, String> {
    wharf_auth::parse_grant(s).map(|grant| grant.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_call, call_of, call_with};
    use super::*;

    #[test]
    fn durations_take_s_m_h_d_or_plain_seconds() {
        let cases: &[(&str, u64)] = &[
            ("1", 1),
            ("3600", 3600),
            ("90s", 90),
            ("15m", 900),
            ("12h", 43_200),
            ("30d", 2_592_000),
        ];
        for (text, secs) in cases {
            assert_eq!(parse_duration(text), Ok(*secs), "{text}");
        }
    }

    #[test]
    fn bad_durations_are_refused() {
        for text in [
            "", "s", "0", "0d", "-5m", "1.5h", "2w", "12 h", "h12", "1h30m", "forever",
        ] {
            assert!(parse_duration(text).is_err(), "{text} was accepted");
        }
        assert!(parse_duration("999999999999999999d")
            .unwrap_err()
            .contains("too long"));
    }

    #[test]
    fn grants_are_checked_and_sent_in_canonical_form() {
        assert_eq!(
            parse_grant("acme/app:pull,push"),
            Ok("acme/app:pull,push".into())
        );
        assert_eq!(
            parse_grant("acme/*:push, pull"),
            Ok("acme/*:pull,push".into())
        );
        assert_eq!(
            parse_grant("acme/*:delete,pull,push"),
            Ok("acme/*:pull,push,delete".into())
        );
        for bad in [
            "acme/app",
            "acme/app:",
            "acme/app:write",
            "Acme/app:pull",
            ":pull",
            "acme/app:*",
        ] {
            assert!(parse_grant(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn robot_create_sends_grants_and_lifetime() {
        let c = call_of(&[
            "robot",
            "create",
            "acme",
            "ci",
            "--grant",
            "acme/app:push,pull",
            "--grant",
            "acme/cache/*:pull",
            "--expires-in",
            "30d",
        ]);
        assert_eq!(c.method, Method::POST);
        assert_eq!(c.path, "/admin/v1/tenants/acme/robots");
        assert_eq!(
            c.body,
            Some(json!({
                "name": "ci",
                "grants": ["acme/app:pull,push", "acme/cache/*:pull"],
                "expires_in_secs": 2_592_000,
            }))
        );
        assert_eq!(c.print, Print::Json);
        let c = call_of(&[
            "robot",
            "create",
            "acme",
            "ci",
            "--grant",
            "acme/*:pull",
            "--secret-only",
        ]);
        assert_eq!(
            c.body,
            Some(json!({"name": "ci", "grants": ["acme/*:pull"]}))
        );
        assert_eq!(c.print, Print::Secret);
    }

    #[test]
    fn robot_list_and_revoke_by_short_or_full_name() {
        assert_call(
            &["robot", "list", "acme"],
            Method::GET,
            "/admin/v1/tenants/acme/robots",
            None,
        );
        assert_call(
            &["robot", "revoke", "acme", "ci"],
            Method::DELETE,
            "/admin/v1/tenants/acme/robots/ci",
            None,
        );
        assert_call(
            &["robot", "revoke", "acme", "acme+ci"],
            Method::DELETE,
            "/admin/v1/tenants/acme/robots/acme+ci",
            None,
        );
    }

    #[test]
    fn robot_names_cannot_escape_their_path_segment() {
        for robot in ["", "..", "other+ci", "acme+", "c i", "ci/x", "CI"] {
            assert!(
                call_with(&["robot", "revoke", "acme", robot], None).is_err(),
                "{robot:?}"
            );
        }
        // Creating takes either form too.
        let c = call_of(&[
            "robot",
            "create",
            "acme",
            "acme+ci",
            "--grant",
            "acme/*:pull",
        ]);
        assert_eq!(c.body.unwrap()["name"], "acme+ci");
        assert!(call_with(
            &[
                "robot",
                "create",
                "acme",
                "other+ci",
                "--grant",
                "acme/*:pull"
            ],
            None
        )
        .is_err());
    }
}
