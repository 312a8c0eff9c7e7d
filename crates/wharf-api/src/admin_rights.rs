//! Who calls the admin API, and what a tenant's own account may do there.
//!
//! The operator holds the admin token and may call every route. A
//! tenant's user or robot may, with its own name and password (HTTP
//! Basic, as `docker login` takes them), call these routes, and only on
//! its own tenant: `GET …/tenants/{t}/usage` (any account of the
//! tenant), `DELETE …/tenants/{t}/repositories/{repo}` (an account that may
//! delete in that repository), `DELETE …/tenants/{t}/content` and the
//! tenant's notification endpoints, `…/tenants/{t}/notifications[/{id}]`
//! (an account that may delete in every repository of the tenant: the
//! `admin` role without a narrower pattern). Deleting there is what the
//! same account could already do one manifest and blob at a time on the
//! registry port, in one call. An endpoint a tenant account sets delivers
//! to public addresses only, and one the operator set is not its to change
//! (`crate::admin_notify`, `wharf_notify::public`).
//!
//! Owns: [`Caller`] (put in each admin request's extensions once it is
//! authorized), the list of routes open to tenant accounts and the rights
//! each needs, and the refusals (`401` without valid credentials, `403`
//! for a route, a tenant or a right the account does not have).
//!
//! Must never: let a tenant account reach any other route (tenants, users,
//! robots, quotas, rules, retention, fences, exports, blobs, garbage
//! collection are the operator's); let it act on another tenant; let it
//! remove a tag an immutable-tag rule protects (only the operator lifts a
//! rule, so only the operator purges what one guards); or check a password
//! other than through the registry's own login path (bcrypt off the
//! runtime, the failed-login limiter, the login cache).

use axum::http::{Method, StatusCode};
use wharf_auth::{Action, Grant, RepoPattern, Resource};
use wharf_core::RepoName;

use crate::admin_api::{AdminApi, Failure};
use crate::auth::Login;

/// Who an admin request comes from, once authorized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Caller {
    /// The operator: the admin token (or a node without one, whose admin
    /// port is open to whoever reaches it).
    Operator,
    /// A tenant's user or robot, by its own password.
    Tenant {
        /// The account's name (`tenant+name` for a robot).
        subject: String,
        /// Its tenant.
        tenant: String,
    },
}

/// A route a tenant account may call, with the tenant it names.
#[derive(Debug, PartialEq, Eq)]
enum TenantRoute {
    Usage {
        tenant: String,
    },
    DeleteRepository {
        tenant: String,
        repo: String,
    },
    DeleteContent {
        tenant: String,
    },
    /// Listing, reading, writing or deleting its notification endpoints.
    Notifications {
        tenant: String,
    },
}

impl TenantRoute {
    fn tenant(&self) -> &str {
        match self {
            TenantRoute::Usage { tenant }
            | TenantRoute::DeleteRepository { tenant, .. }
            | TenantRoute::DeleteContent { tenant }
            | TenantRoute::Notifications { tenant } => tenant,
        }
    }
}

/// The tenant route `method` and `path` are, if any. A path with a
/// percent sign is none of them (no tenant or repository name needs one,
/// and the check must see the names exactly as the handler will).
fn tenant_route(method: &Method, path: &str) -> Option<TenantRoute> {
    if path.contains('%') {
        return None;
    }
    let rest = path.strip_prefix("/admin/v1/tenants/")?;
    let (tenant, rest) = rest.split_once('/')?;
    if tenant.is_empty() {
        return None;
    }
    let tenant = tenant.to_string();
    let endpoint = rest
        .strip_prefix("notifications/")
        .is_some_and(|id| !id.is_empty() && !id.contains('/'));
    match (method, rest) {
        (&Method::GET, "notifications") => Some(TenantRoute::Notifications { tenant }),
        (&Method::GET | &Method::PUT | &Method::DELETE, _) if endpoint => {
            Some(TenantRoute::Notifications { tenant })
        }
        (&Method::GET, "usage") => Some(TenantRoute::Usage { tenant }),
        (&Method::DELETE, "content") => Some(TenantRoute::DeleteContent { tenant }),
        (&Method::DELETE, _) => {
            let repo = rest.strip_prefix("repositories/")?;
            (!repo.is_empty()).then(|| TenantRoute::DeleteRepository {
                tenant,
                repo: repo.to_string(),
            })
        }
        _ => None,
    }
}

fn denied(message: String) -> Failure {
    Failure(StatusCode::FORBIDDEN, "DENIED", message)
}

/// Authorizes a request that came with a tenant account's Basic
/// credentials: the password through the registry's login path, then the
/// route, the tenant and the right it needs.
pub(crate) async fn tenant_caller(
    api: &AdminApi,
    method: &Method,
    path: &str,
    user: &str,
    password: &str,
    client: Option<std::net::IpAddr>,
) -> Result<Caller, Failure> {
    let wrong = || {
        Failure(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "wrong user name or password".into(),
        )
    };
    let credential = api.directory.credential(user);
    let login = api
        .logins
        .login(user, password, client, "admin API")
        .await
        .map_err(|e| {
            let (code, status) = e.classify();
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
            Failure(status, code.as_str(), e.to_string())
        })?;
    // Only the directory's accounts belong to a tenant; an operator's
    // htpasswd account is no admin credential.
    let (Login::Ok, Some(credential)) = (login, credential) else {
        return Err(wrong());
    };
    let subject = credential.subject().to_string();
    let own = credential.tenant().to_string();
    let Some(route) = tenant_route(method, path) else {
        return Err(denied(format!(
            "{subject} is a tenant account: with its own password it may only read its \
             tenant's usage, delete its repositories or content and manage its notification \
             endpoints (GET /admin/v1/tenants/{own}/usage, DELETE …/repositories/REPO, \
             DELETE …/content, …/notifications[/ID]); everything else needs the operator's \
             admin token"
        )));
    };
    if route.tenant() != own {
        return Err(denied(format!(
            "{subject} belongs to tenant {own} and may act only on it, not on {}",
            route.tenant()
        )));
    }
    let grants = api.directory.grants_of(&subject).unwrap_or_default();
    match &route {
        TenantRoute::Usage { .. } => {}
        TenantRoute::DeleteRepository { repo, .. } => {
            let may = repo
                .parse::<RepoName>()
                .ok()
                .map(Resource::Repository)
                .is_some_and(|r| api.logins.actions_on(&subject, &r).covers(Action::Delete));
            if !may {
                return Err(denied(format!(
                    "{subject} may not delete in repository {repo} (it needs the admin role, \
                     or a robot grant with delete, covering it)"
                )));
            }
        }
        TenantRoute::DeleteContent { tenant } => {
            if !covers_whole_tenant(&grants, tenant) {
                return Err(denied(format!(
                    "{subject} may not delete all of tenant {tenant}'s content (it needs the \
                     admin role over the whole tenant, {tenant}/*)"
                )));
            }
        }
        TenantRoute::Notifications { tenant } => {
            if !covers_whole_tenant(&grants, tenant) {
                return Err(denied(format!(
                    "{subject} may not manage tenant {tenant}'s notification endpoints (it \
                     needs the admin role over the whole tenant, {tenant}/*)"
                )));
            }
        }
    }
    tracing::info!(%subject, tenant = %own, %method, %path, "admin API: tenant account");
    Ok(Caller::Tenant {
        subject,
        tenant: own,
    })
}

/// Whether `grants` allow deleting in every repository of `tenant`.
fn covers_whole_tenant(grants: &[Grant], tenant: &str) -> bool {
    grants.iter().any(|g| {
        g.actions.covers(Action::Delete)
            && matches!(&g.pattern, RepoPattern::Under(p) if p.as_str() == tenant)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_these_routes_are_open_to_tenant_accounts() {
        let t = |m: Method, p: &str| tenant_route(&m, p);
        assert_eq!(
            t(Method::GET, "/admin/v1/tenants/acme/usage"),
            Some(TenantRoute::Usage {
                tenant: "acme".into()
            })
        );
        assert_eq!(
            t(Method::DELETE, "/admin/v1/tenants/acme/content"),
            Some(TenantRoute::DeleteContent {
                tenant: "acme".into()
            })
        );
        assert_eq!(
            t(
                Method::DELETE,
                "/admin/v1/tenants/acme/repositories/acme/a/b"
            ),
            Some(TenantRoute::DeleteRepository {
                tenant: "acme".into(),
                repo: "acme/a/b".into()
            })
        );
        for (m, p) in [
            (Method::GET, "/admin/v1/tenants/acme/notifications"),
            (Method::GET, "/admin/v1/tenants/acme/notifications/ci"),
            (Method::PUT, "/admin/v1/tenants/acme/notifications/ci"),
            (Method::DELETE, "/admin/v1/tenants/acme/notifications/ci"),
        ] {
            assert_eq!(
                t(m.clone(), p),
                Some(TenantRoute::Notifications {
                    tenant: "acme".into()
                }),
                "{m} {p}"
            );
        }
        for (m, p) in [
            (Method::PUT, "/admin/v1/tenants/acme/notifications"),
            (Method::POST, "/admin/v1/tenants/acme/notifications/ci"),
            (Method::GET, "/admin/v1/tenants/acme/notifications/"),
            (Method::GET, "/admin/v1/tenants/acme/notifications/ci/x"),
            (Method::GET, "/admin/v1/tenants"),
            (Method::DELETE, "/admin/v1/tenants/acme"),
            (Method::GET, "/admin/v1/tenants/acme"),
            (Method::PATCH, "/admin/v1/tenants/acme"),
            (Method::GET, "/admin/v1/tenants/acme/users"),
            (Method::DELETE, "/admin/v1/tenants/acme/users/bob"),
            (Method::GET, "/admin/v1/tenants/acme/export"),
            (Method::DELETE, "/admin/v1/tenants/acme/fence"),
            (Method::POST, "/admin/v1/gc/run"),
            (Method::GET, "/admin/v1/tenants/acme/content"),
            (Method::DELETE, "/admin/v1/tenants/acme/repositories/"),
            (
                Method::DELETE,
                "/admin/v1/tenants/acme/repositories%2Facme/app",
            ),
            (Method::DELETE, "/admin/v1/tenants//content"),
        ] {
            assert_eq!(t(m.clone(), p), None, "{m} {p}");
        }
    }

    #[test]
    fn content_needs_delete_over_the_whole_tenant() {
        let g = |p: &str, a: &str| wharf_auth::parse_grant(&format!("{p}:{a}")).unwrap();
        assert!(covers_whole_tenant(
            &[g("acme/*", "pull,push,delete")],
            "acme"
        ));
        assert!(!covers_whole_tenant(&[g("acme/*", "pull,push")], "acme"));
        assert!(!covers_whole_tenant(&[g("acme/app", "delete")], "acme"));
        assert!(!covers_whole_tenant(&[g("acme/team/*", "delete")], "acme"));
        assert!(!covers_whole_tenant(&[g("acme2/*", "delete")], "acme"));
    }
}
