//! `wharf admin usage TENANT`: what a tenant holds (bytes, repositories)
//! and its quota.
//!
//! Owns: the command's argument and the one read it makes.
//!
//! Must never: change anything (it is a GET), or work out usage itself:
//! the server's count is the one quotas are enforced against.

use clap::Args;
use reqwest::Method;

use super::connection::Call;
use super::tenant::tenant_path;

/// The arguments of `wharf admin usage`.
#[derive(Args, Debug)]
pub(super) struct UsageArgs {
    /// The tenant.
    tenant: String,
}

impl UsageArgs {
    /// The request this command makes.
    pub(super) fn call(&self) -> Result<Call, String> {
        Ok(Call::json(
            Method::GET,
            format!("{}/usage", tenant_path(&self.tenant)?),
            None,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::assert_call;
    use super::*;

    #[test]
    fn usage_reads_the_tenants_usage() {
        assert_call(
            &["usage", "acme"],
            Method::GET,
            "/admin/v1/tenants/acme/usage",
            None,
        );
    }
}
