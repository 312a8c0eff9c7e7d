//! `wharf admin content delete TENANT`: deletes everything a tenant's
//! repositories hold, keeping the tenant, its settings and its accounts.
//!
//! Owns: the command's argument and the one request it makes.
//!
//! Must never: delete the tenant or its accounts (that is `tenant delete
//! --force`), or delete anything itself: the server purges and counts.

use clap::Subcommand;
use reqwest::Method;

use super::connection::Call;
use super::tenant::tenant_path;

/// `wharf admin content …`.
#[derive(Subcommand, Debug)]
pub(super) enum ContentCommand {
    /// Delete every repository of a tenant and everything in them, at once.
    ///
    /// The tenant, its settings, users and robots stay; its usage drops to
    /// zero at once; garbage collection reclaims the bytes no other
    /// tenant links. Prints what was deleted. Works with the admin token,
    /// or as a tenant account with the admin role over the whole tenant
    /// (--as-user).
    Delete {
        /// The tenant.
        tenant: String,
    },
}

impl ContentCommand {
    /// The request this command makes.
    pub(super) fn call(&self) -> Result<Call, String> {
        match self {
            ContentCommand::Delete { tenant } => Ok(Call::json(
                Method::DELETE,
                format!("{}/content", tenant_path(tenant)?),
                None,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_call, call_with};
    use super::*;

    #[test]
    fn content_delete_names_the_tenant() {
        assert_call(
            &["content", "delete", "acme"],
            Method::DELETE,
            "/admin/v1/tenants/acme/content",
            None,
        );
        assert!(call_with(&["content", "delete", "acme/app"], None).is_err());
    }
}
