//! `wharf admin repo delete TENANT/REPO`: deletes one repository and
//! everything in it (manifests, tags, blob links, upload sessions).
//!
//! Owns: the command's argument, checking it is a repository name inside
//! a tenant, and the one request it makes.
//!
//! Must never: send a name the server could read as another path (each
//! component of a valid repository name is path-safe as it is, and the
//! name is checked before anything is sent), or delete anything itself:
//! the server purges and counts.

use clap::Subcommand;
use reqwest::Method;

use super::connection::Call;
use super::tenant::tenant_path;

/// `wharf admin repo …`.
#[derive(Subcommand, Debug)]
pub(super) enum RepoCommand {
    /// Delete a repository and everything in it, at once.
    ///
    /// Its manifests, tags, blob links and upload sessions go; the
    /// tenant's usage drops at once; garbage collection reclaims the bytes
    /// no other repository links. Prints what was deleted. Works with the
    /// admin token, or as a tenant account that may delete in the
    /// repository (--as-user).
    Delete {
        /// The full repository name, tenant first: `acme/team/app`.
        repository: String,
    },
}

impl RepoCommand {
    /// The request this command makes.
    pub(super) fn call(&self) -> Result<Call, String> {
        match self {
            RepoCommand::Delete { repository } => {
                Ok(Call::json(Method::DELETE, repo_path(repository)?, None))
            }
        }
    }
}

/// `/admin/v1/tenants/TENANT/repositories/TENANT/REPO` for `name`.
fn repo_path(name: &str) -> Result<String, String> {
    let repo: wharf_core::RepoName = name.parse().map_err(|e| {
        format!("{name:?} is not a repository name ({e}); give it whole, tenant first: acme/app")
    })?;
    let tenant = repo.namespace();
    Ok(format!("{}/repositories/{repo}", tenant_path(tenant)?))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_call, call_with};
    use super::*;

    #[test]
    fn repo_delete_names_the_tenant_and_the_whole_repository() {
        assert_call(
            &["repo", "delete", "acme/team/app"],
            Method::DELETE,
            "/admin/v1/tenants/acme/repositories/acme/team/app",
            None,
        );
        assert_call(
            &["repo", "delete", "acme"],
            Method::DELETE,
            "/admin/v1/tenants/acme/repositories/acme",
            None,
        );
        for bad in ["Acme/app", "acme/../x", "acme//app", "acme/app?x", ""] {
            assert!(
                call_with(&["repo", "delete", bad], None).is_err(),
                "{bad:?}"
            );
        }
    }
}
