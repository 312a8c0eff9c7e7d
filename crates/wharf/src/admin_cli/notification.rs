//! `wharf admin notification set|list|show|delete`: a tenant's webhook
//! endpoints, which get its events (docs/notifications.md).
//!
//! Owns: those commands' arguments, checking the endpoint id and URL with
//! the server's own rules before sending, reading the signing secret of
//! `notification set` from a file (`--secret-file`), the request each
//! command makes, and `--secret-only` printing just a generated secret.
//!
//! Must never: take a secret from the command line (where `ps` and shell
//! history see it), or print one but the secret the server generated and
//! shows that once.

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::connection::{segment, Call, Print};
use super::tenant::tenant_path;

/// `wharf admin notification …`.
#[derive(Subcommand, Debug)]
pub(super) enum NotificationCommand {
    /// Create a tenant's webhook, or change one: its URL, its signing
    /// secret, whether it gets pulls.
    ///
    /// Without --secret-file a new webhook gets a generated secret, shown
    /// only in this answer; a changed one keeps its secret.
    Set {
        /// The tenant.
        tenant: String,
        /// The webhook's id within the tenant (1 to 32 of a-z, 0-9, -).
        id: String,
        /// Where events are POSTed: http:// or https://. (Not `url`: that
        /// is `wharf admin --url`, the admin port, in clap's ids.)
        #[arg(value_name = "URL", value_parser = parse_url)]
        webhook_url: String,
        /// File whose first line is the signing secret (16 to 256 visible
        /// ASCII characters).
        #[arg(long, value_name = "FILE")]
        secret_file: Option<std::path::PathBuf>,
        /// Send it manifest pull events too (`--pulls false` stops them)
        /// [default: off when created, unchanged when changed].
        #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
        pulls: Option<bool>,
        /// Print only the generated secret (for scripts) instead of the
        /// whole answer.
        #[arg(long)]
        secret_only: bool,
    },
    /// List a tenant's webhooks, with this node's delivery counters
    /// (secrets are never shown again).
    List {
        /// The tenant.
        tenant: String,
    },
    /// Show one of a tenant's webhooks.
    Show {
        /// The tenant.
        tenant: String,
        /// The webhook's id.
        id: String,
    },
    /// Delete a tenant's webhook (events already queued for it are still
    /// delivered).
    Delete {
        /// The tenant.
        tenant: String,
        /// The webhook's id.
        id: String,
    },
}

impl NotificationCommand {
    /// The secret `notification set --secret-file` sends, read from its
    /// file; none for the other commands.
    pub(super) fn secret(&self) -> Result<Option<String>, String> {
        let NotificationCommand::Set {
            secret_file: Some(path),
            ..
        } = self
        else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--secret-file {}: {e}", path.display()))?;
        let secret = text.lines().next().unwrap_or_default().trim().to_string();
        wharf_notify::target::check_secret(&secret)
            .map_err(|e| format!("--secret-file {}: {e}", path.display()))?;
        Ok(Some(secret))
    }

    /// The request this command makes; `secret` is what
    /// [`NotificationCommand::secret`] read.
    pub(super) fn call(&self, secret: Option<&str>) -> Result<Call, String> {
        Ok(match self {
            NotificationCommand::Set {
                tenant,
                id,
                webhook_url,
                secret_file: _,
                pulls,
                secret_only,
            } => {
                let mut body = Map::new();
                body.insert("url".into(), json!(webhook_url));
                if let Some(s) = secret {
                    body.insert("secret".into(), json!(s));
                }
                if let Some(p) = pulls {
                    body.insert("pulls".into(), json!(p));
                }
                Call {
                    method: Method::PUT,
                    path: endpoint_path(tenant, id)?,
                    body: Some(Value::Object(body)),
                    print: if *secret_only {
                        Print::Secret
                    } else {
                        Print::Json
                    },
                }
            }
            NotificationCommand::List { tenant } => Call::json(
                Method::GET,
                format!("{}/notifications", tenant_path(tenant)?),
                None,
            ),
            NotificationCommand::Show { tenant, id } => {
                Call::json(Method::GET, endpoint_path(tenant, id)?, None)
            }
            NotificationCommand::Delete { tenant, id } => {
                Call::json(Method::DELETE, endpoint_path(tenant, id)?, None)
            }
        })
    }
}

/// `…/tenants/TENANT/notifications/ID`, the id checked as the server
/// checks it.
fn endpoint_path(tenant: &str, id: &str) -> Result<String, String> {
    wharf_notify::target::check_id(id)?;
    Ok(format!(
        "{}/notifications/{}",
        tenant_path(tenant)?,
        segment("webhook", id)?
    ))
}

/// A webhook URL, checked with the server's rules.
fn parse_url(s: &str) -> Result<String, String> {
    wharf_notify::target::check_url(s).map(|_| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_call, call_with, refused};
    use super::*;

    #[test]
    fn set_sends_the_url_and_what_is_given() {
        let c = call_with(
            &[
                "notification",
                "set",
                "acme",
                "ci",
                "https://hooks.example/x?t=1",
            ],
            None,
        )
        .unwrap();
        assert_eq!(c.method, Method::PUT);
        assert_eq!(c.path, "/admin/v1/tenants/acme/notifications/ci");
        assert_eq!(c.body, Some(json!({"url": "https://hooks.example/x?t=1"})));
        assert_eq!(c.print, Print::Json);
        let c = call_with(
            &[
                "notification",
                "set",
                "acme",
                "ci",
                "http://127.0.0.1:9/h",
                "--pulls",
                "--secret-only",
            ],
            Some("0123456789abcdef"),
        )
        .unwrap();
        assert_eq!(
            c.body,
            Some(
                json!({"url": "http://127.0.0.1:9/h", "secret": "0123456789abcdef", "pulls": true})
            )
        );
        assert_eq!(c.print, Print::Secret);
        let c = call_with(
            &[
                "notification",
                "set",
                "acme",
                "ci",
                "http://x/",
                "--pulls",
                "false",
            ],
            None,
        )
        .unwrap();
        assert_eq!(c.body.unwrap()["pulls"], false);
    }

    #[test]
    fn list_show_and_delete() {
        assert_call(
            &["notification", "list", "acme"],
            Method::GET,
            "/admin/v1/tenants/acme/notifications",
            None,
        );
        assert_call(
            &["notification", "show", "acme", "ci"],
            Method::GET,
            "/admin/v1/tenants/acme/notifications/ci",
            None,
        );
        assert_call(
            &["notification", "delete", "acme", "ci"],
            Method::DELETE,
            "/admin/v1/tenants/acme/notifications/ci",
            None,
        );
    }

    #[test]
    fn bad_urls_ids_and_secrets_are_refused_before_anything_is_sent() {
        let e = refused(&["notification", "set", "acme", "ci", "ftp://x/"]);
        assert!(e.contains("http:// or https://"), "{e}");
        refused(&["notification", "set", "acme", "ci"]);
        // A secret is never an argument.
        refused(&[
            "notification",
            "set",
            "acme",
            "ci",
            "http://x/",
            "--secret",
            "0123456789abcdef",
        ]);
        for id in ["", "..", "Bad", "a/b"] {
            assert!(
                call_with(&["notification", "show", "acme", id], None).is_err(),
                "{id:?}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "short\n").unwrap();
        let set = super::super::tests::parse(&[
            "notification",
            "set",
            "acme",
            "ci",
            "http://x/",
            "--secret-file",
            file.to_str().unwrap(),
        ]);
        let super::super::AdminCommand::Api(super::super::ApiCommand::Notification(cmd)) =
            set.command
        else {
            panic!("a notification command");
        };
        assert!(cmd.secret().unwrap_err().contains("16 to 256"));
        std::fs::write(&file, "0123456789abcdef-from-file\nignored\n").unwrap();
        assert_eq!(
            cmd.secret().unwrap().as_deref(),
            Some("0123456789abcdef-from-file")
        );
    }
}
