//! `wharf admin user set|list|delete`: a tenant's users, their passwords
//! and roles.
//!
//! Owns: those commands' arguments, parsing roles, reading the password of
//! `user set` from stdin or WHARF_PASSWORD, the request each command
//! makes, and the user name check (robots' short names follow the same
//! grammar, [`valid_user_name`]; `sessions revoke --user` uses
//! [`user_path`]).
//!
//! Must never: take a password from the command line (where `ps` and shell
//! history see it), print or echo one back, or send an empty one.

use std::io::{BufRead, IsTerminal as _};
use std::str::FromStr as _;

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::connection::{segment, Call, API_PREFIX};
use super::tenant::tenant_path;

/// The environment variable `user set` takes a password from.
const PASSWORD_ENV: &str = "WHARF_PASSWORD";

/// `wharf admin user …`.
#[derive(Subcommand, Debug)]
pub(super) enum UserCommand {
    /// Create a user or change one: its password and roles.
    ///
    /// The password is read from stdin (--password-stdin) or WHARF_PASSWORD,
    /// never from the command line; it is required when the user is created.
    Set {
        /// The tenant.
        tenant: String,
        /// The user's name, unique across all tenants.
        name: String,
        /// A role: `admin`, `push` or `pull`, optionally on a repository
        /// pattern (`push:acme/app`, `pull:acme/*`) [default pattern:
        /// `TENANT/*`]. Repeat for several; given roles replace the old ones.
        #[arg(long = "role", value_name = "ROLE[:PATTERN]", value_parser = parse_role)]
        roles: Vec<Role>,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List a tenant's users.
    List {
        /// The tenant.
        tenant: String,
    },
    /// Delete a user.
    Delete {
        /// The tenant.
        tenant: String,
        /// The user.
        name: String,
    },
    /// End a user's lockout after failed logins now, on the node asked
    /// (each node counts failures itself: in a cluster, ask every node's
    /// admin port). Without it the lockout ends by itself, at most 15
    /// minutes after the last failure. Works for htpasswd users too.
    Unlock {
        /// The user name, as the client sent it.
        name: String,
        /// Only from this client address, whose own count of failures
        /// (across accounts) is cleared too [default: every address].
        #[arg(long, value_name = "IP")]
        client: Option<std::net::IpAddr>,
    },
}

impl UserCommand {
    /// The password `user set` sends, read from stdin (with a prompt on a
    /// terminal) or WHARF_PASSWORD; none for the other commands.
    pub(super) fn password(&self) -> Result<Option<String>, String> {
        let UserCommand::Set { password_stdin, .. } = self else {
            return Ok(None);
        };
        let env = std::env::var(PASSWORD_ENV).ok();
        let stdin = std::io::stdin();
        if *password_stdin && stdin.is_terminal() {
            eprintln!("password (one line, shown as typed):");
        }
        read_password(*password_stdin, env, stdin.lock())
    }

    /// The request this command makes; `password` is what
    /// [`UserCommand::password`] read.
    pub(super) fn call(&self, password: Option<&str>) -> Result<Call, String> {
        Ok(match self {
            UserCommand::Set {
                tenant,
                name,
                roles,
                password_stdin: _,
            } => {
                let path = user_path(tenant, name)?;
                let mut body = Map::new();
                if let Some(p) = password {
                    body.insert("password".into(), json!(p));
                }
                if !roles.is_empty() {
                    let roles = roles
                        .iter()
                        .map(|r| {
                            let mut role = Map::new();
                            role.insert("role".into(), json!(r.role));
                            if let Some(pattern) = &r.repositories {
                                role.insert("repositories".into(), json!(pattern));
                            }
                            Value::Object(role)
                        })
                        .collect();
                    body.insert("roles".into(), Value::Array(roles));
                }
                if body.is_empty() {
                    return Err(format!(
                        "user set: nothing to set (give --role, or a password with \
                         --password-stdin or {PASSWORD_ENV})"
                    ));
                }
                Call::json(Method::PUT, path, Some(Value::Object(body)))
            }
            UserCommand::List { tenant } => {
                Call::json(Method::GET, format!("{}/users", tenant_path(tenant)?), None)
            }
            UserCommand::Delete { tenant, name } => {
                Call::json(Method::DELETE, user_path(tenant, name)?, None)
            }
            UserCommand::Unlock { name, client } => {
                if name.is_empty() || name.len() > 256 {
                    return Err("user unlock: the name must be 1 to 256 bytes".into());
                }
                let mut body = Map::new();
                body.insert("user".into(), json!(name));
                if let Some(ip) = client {
                    body.insert("client".into(), json!(ip.to_string()));
                }
                Call::json(
                    Method::POST,
                    format!("{API_PREFIX}/logins/unlock"),
                    Some(Value::Object(body)),
                )
            }
        })
    }
}

/// User names and robots' short names: `[a-z0-9][a-z0-9._-]{0,63}`.
pub(super) fn valid_user_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=64).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

fn user_segment(name: &str) -> Result<String, String> {
    if !valid_user_name(name) {
        return Err(format!(
            "user name {name:?} must match [a-z0-9][a-z0-9._-]{{0,63}}"
        ));
    }
    segment("user", name)
}

/// `/admin/v1/tenants/TENANT/users/NAME`, both names checked (the tenant
/// first).
pub(super) fn user_path(tenant: &str, name: &str) -> Result<String, String> {
    Ok(format!(
        "{}/users/{}",
        tenant_path(tenant)?,
        user_segment(name)?
    ))
}

/// A role of `user set --role`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Role {
    /// `admin`, `push` or `pull`.
    role: &'static str,
    /// The repositories it applies to; `None` leaves the server's default
    /// (every repository of the tenant).
    repositories: Option<String>,
}

/// `push`, `pull:acme/app` or `admin:acme/*`.
fn parse_role(s: &str) -> Result<Role, String> {
    let (name, pattern) = match s.split_once(':') {
        Some((name, pattern)) => (name, Some(pattern)),
        None => (s, None),
    };
    let role = match name {
        "admin" => "admin",
        "push" => "push",
        "pull" => "pull",
        _ => {
            return Err(format!(
                "role {name:?} is not admin, push or pull (in --role ROLE[:PATTERN])"
            ))
        }
    };
    let repositories = match pattern {
        Some(p) => Some(
            wharf_auth::RepoPattern::from_str(p)
                .map_err(|e| format!("role {s:?}: {e}"))?
                .to_string(),
        ),
        None => None,
    };
    Ok(Role { role, repositories })
}

/// The password of `user set`: the first line of `stdin` (without its line
/// ending) with --password-stdin, else `env` (WHARF_PASSWORD), else none.
fn read_password(
    from_stdin: bool,
    env: Option<String>,
    mut stdin: impl BufRead,
) -> Result<Option<String>, String> {
    let password = if from_stdin {
        let mut line = String::new();
        stdin
            .read_line(&mut line)
            .map_err(|e| format!("reading the password from stdin: {e}"))?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        line.to_string()
    } else {
        match env {
            Some(p) => p,
            None => return Ok(None),
        }
    };
    if password.is_empty() {
        return Err(if from_stdin {
            "the password read from stdin is empty".into()
        } else {
            format!("{PASSWORD_ENV} is empty")
        });
    }
    Ok(Some(password))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_call, call_with};
    use super::*;

    #[test]
    fn roles_name_a_role_and_optionally_a_pattern() {
        assert_eq!(
            parse_role("push"),
            Ok(Role {
                role: "push",
                repositories: None
            })
        );
        assert_eq!(
            parse_role("admin:acme/*"),
            Ok(Role {
                role: "admin",
                repositories: Some("acme/*".into())
            })
        );
        assert_eq!(
            parse_role("pull:acme/team/app"),
            Ok(Role {
                role: "pull",
                repositories: Some("acme/team/app".into())
            })
        );
        for bad in [
            "owner",
            "Push",
            "",
            "push:",
            "push:Acme/*",
            "push:acme/*/x",
            "pull:acme/app:x",
        ] {
            assert!(parse_role(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn user_set_sends_the_password_and_roles() {
        let c = call_with(
            &[
                "user",
                "set",
                "acme",
                "alice",
                "--role",
                "push",
                "--role",
                "admin:acme/team/*",
                "--password-stdin",
            ],
            Some("s3cret pass"),
        )
        .unwrap();
        assert_eq!(c.method, Method::PUT);
        assert_eq!(c.path, "/admin/v1/tenants/acme/users/alice");
        assert_eq!(
            c.body,
            Some(json!({
                "password": "s3cret pass",
                "roles": [
                    {"role": "push"},
                    {"role": "admin", "repositories": "acme/team/*"},
                ],
            }))
        );
        // Roles alone (an update), or the password alone.
        assert_call(
            &["user", "set", "acme", "bob", "--role", "pull:acme/app"],
            Method::PUT,
            "/admin/v1/tenants/acme/users/bob",
            Some(json!({"roles": [{"role": "pull", "repositories": "acme/app"}]})),
        );
        let c = call_with(&["user", "set", "acme", "bob"], Some("pw")).unwrap();
        assert_eq!(c.body, Some(json!({"password": "pw"})));
        let e = call_with(&["user", "set", "acme", "bob"], None).unwrap_err();
        assert!(e.contains("nothing to set"), "{e}");
    }

    #[test]
    fn user_list_and_delete() {
        assert_call(
            &["user", "list", "acme"],
            Method::GET,
            "/admin/v1/tenants/acme/users",
            None,
        );
        assert_call(
            &["user", "delete", "acme", "alice"],
            Method::DELETE,
            "/admin/v1/tenants/acme/users/alice",
            None,
        );
    }

    #[test]
    fn user_unlock_names_the_user_and_optionally_the_client() {
        assert_call(
            &["user", "unlock", "alice"],
            Method::POST,
            "/admin/v1/logins/unlock",
            Some(json!({ "user": "alice" })),
        );
        assert_call(
            &["user", "unlock", "alice", "--client", "10.0.0.7"],
            Method::POST,
            "/admin/v1/logins/unlock",
            Some(json!({ "user": "alice", "client": "10.0.0.7" })),
        );
        super::super::tests::refused(&["user", "unlock", "alice", "--client", "ten"]);
    }

    #[test]
    fn user_names_cannot_escape_their_path_segment() {
        for user in ["", "..", "Alice", "a/b", "_alice", &"a".repeat(65)] {
            assert!(
                call_with(&["user", "delete", "acme", user], None).is_err(),
                "{user:?}"
            );
        }
        let longest = "a".repeat(64);
        assert!(call_with(&["user", "delete", "acme", &longest], None).is_ok());
    }

    #[test]
    fn the_password_comes_from_stdin_or_the_environment() {
        let stdin = |s: &'static str| std::io::Cursor::new(s.as_bytes());
        assert_eq!(
            read_password(true, None, stdin("hunter2\nignored\n")),
            Ok(Some("hunter2".into()))
        );
        assert_eq!(
            read_password(true, None, stdin("a b\r\n")),
            Ok(Some("a b".into()))
        );
        assert_eq!(
            read_password(true, None, stdin("no newline")),
            Ok(Some("no newline".into()))
        );
        // --password-stdin wins over the environment.
        assert_eq!(
            read_password(true, Some("env".into()), stdin("typed\n")),
            Ok(Some("typed".into()))
        );
        assert_eq!(
            read_password(false, Some("env".into()), stdin("")),
            Ok(Some("env".into()))
        );
        assert_eq!(read_password(false, None, stdin("unread\n")), Ok(None));
        assert!(read_password(true, None, stdin("\n")).is_err());
        assert!(read_password(true, None, stdin("")).is_err());
        assert!(read_password(false, Some(String::new()), stdin("")).is_err());
    }
}
