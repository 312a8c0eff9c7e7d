//! `wharf admin sessions revoke`: end sessions, so that access and refresh
//! tokens issued before stop working at once.
//!
//! Owns: the command's arguments (one user, one tenant, or `--all`) and
//! the request it makes.
//!
//! Must never: guess whose sessions end (a command line naming no one is
//! refused before anything is sent).

use clap::Subcommand;
use reqwest::Method;

use super::connection::{Call, API_PREFIX};
use super::tenant::tenant_path;
use super::user::user_path;

/// `wharf admin sessions …`.
#[derive(Subcommand, Debug)]
pub(super) enum SessionsCommand {
    /// Revoke the sessions of one user (--tenant and --user), of every
    /// account of a tenant (--tenant), or of everyone (--all).
    Revoke {
        /// The tenant whose sessions end.
        #[arg(long, conflicts_with = "all")]
        tenant: Option<String>,
        /// Only this user of the tenant.
        #[arg(long, requires = "tenant")]
        user: Option<String>,
        /// Every session of the registry, the operator's own included.
        #[arg(long)]
        all: bool,
    },
}

impl SessionsCommand {
    /// The request this command makes.
    pub(super) fn call(&self) -> Result<Call, String> {
        let SessionsCommand::Revoke { tenant, user, all } = self;
        let path = match (tenant, user, all) {
            (Some(t), Some(u), false) => format!("{}/sessions", user_path(t, u)?),
            (Some(t), None, false) => format!("{}/sessions", tenant_path(t)?),
            (None, None, true) => format!("{API_PREFIX}/sessions"),
            _ => {
                return Err(
                    "name whose sessions end: --tenant T, --tenant T --user U, or --all".into(),
                )
            }
        };
        Ok(Call::json(Method::DELETE, path, None))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_call, call_with};
    use super::*;

    #[test]
    fn sessions_revoke_names_a_user_a_tenant_or_everyone() {
        assert_call(
            &["sessions", "revoke", "--tenant", "acme", "--user", "alice"],
            Method::DELETE,
            "/admin/v1/tenants/acme/users/alice/sessions",
            None,
        );
        assert_call(
            &["sessions", "revoke", "--tenant", "acme"],
            Method::DELETE,
            "/admin/v1/tenants/acme/sessions",
            None,
        );
        assert_call(
            &["sessions", "revoke", "--all"],
            Method::DELETE,
            "/admin/v1/sessions",
            None,
        );
        assert!(call_with(&["sessions", "revoke"], None).is_err());
    }
}
