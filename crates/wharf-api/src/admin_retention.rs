//! The admin API's retention route: `POST /admin/v1/gc/retention`, which
//! plans each tenant's retention policy and (unless a dry run) applies it
//! through the registry (`wharf_registry::retention`).
//!
//! Owns: the route's query parameters and the JSON it answers with.
//!
//! Must never: apply a policy on a dry run, or run for a tenant whose
//! policy the operator did not set (the policies come from the tenant
//! directory, where only the admin API writes them).
//!
//! # The request
//!
//! - `dry_run=true|false` (default `false`): with `true`, nothing changes;
//!   the answer lists what a real run against the same state deletes.
//! - `tenant=T`: that tenant only (`404` if it has no policy); without it,
//!   every tenant that has one, by name.
//! - `as_of_unix=N`: measure ages as of moment `N` (seconds since the Unix
//!   epoch) instead of now. A what-if tool: "what would this policy delete
//!   in 30 days if nothing were pushed or pulled meanwhile?". Combined
//!   with a real run it applies the policy as it would stand then, so an
//!   operator can deliberately delete early; push and pull times are never
//!   changed by it.
//!
//! # The answer
//!
//! `200` with `{"dry_run", "as_of_unix", "tenants": [...]}`; per tenant:
//! `tenant`, `planned`, `deleted` and `skipped` (each deletion with its
//! `line`, the text logged for it, its `target` and its `reason`; skipped
//! ones with `skipped_because`), and `rendered`, the plan as the dry-run
//! text `wharf gc retention` prints (the rules, then one line per
//! deletion). A tenant whose plan cannot be made (metadata unreachable)
//! fails the whole request with `503`; deletions already made stay made.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use wharf_core::RegistryError;
use wharf_registry::retention::RetentionReport;
use wharf_retention::{CompiledPolicy, Deletion, Plan};

use crate::admin_api::{answer, AdminApi, Answer, Failure};

/// The retention route, to merge into the admin API's router.
pub(crate) fn routes() -> Router<Arc<AdminApi>> {
    Router::new().route("/admin/v1/gc/retention", post(post_retention))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionQuery {
    #[serde(default)]
    dry_run: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    as_of_unix: Option<u64>,
}

async fn post_retention(
    State(api): State<Arc<AdminApi>>,
    query: Result<Query<RetentionQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer {
    let Query(query) = query.map_err(|e| Failure::invalid(format!("bad query: {e}")))?;
    let dry_run = match query.dry_run.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(Failure::invalid(format!(
                "dry_run must be true or false, not {other:?}"
            )))
        }
    };
    let Some(registry) = &api.registry else {
        return Err(Failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "this admin API serves no registry".into(),
        ));
    };
    let policies: Vec<(String, Arc<CompiledPolicy>)> = match &query.tenant {
        Some(tenant) => {
            if api.directory.tenant(tenant).is_none() {
                return Err(Failure(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    format!("no tenant {tenant:?}"),
                ));
            }
            let policy = api.directory.retention_policy(tenant).ok_or_else(|| {
                Failure(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    format!(
                        "tenant {tenant:?} has no retention policy \
                         (set one with `wharf admin tenant set {tenant} --retention-json FILE`, \
                         or PATCH /admin/v1/tenants/{tenant} {{\"retention\": …}})"
                    ),
                )
            })?;
            vec![(tenant.clone(), policy)]
        }
        None => api.directory.retention_policies(),
    };
    let as_of = query.as_of_unix.unwrap_or_else(wharf_core::now_unix);
    let mut tenants = Vec::new();
    for (tenant, policy) in policies {
        let report = registry
            .apply_retention(&tenant, &policy, as_of, dry_run)
            .await
            .map_err(registry_failure)?;
        tracing::info!(
            %tenant,
            dry_run,
            planned = report.planned.len(),
            deleted = report.deleted.len(),
            skipped = report.skipped.len(),
            "admin: retention pass"
        );
        tenants.push(report_json(&report, &policy));
    }
    answer(
        StatusCode::OK,
        json!({ "dry_run": dry_run, "as_of_unix": as_of, "tenants": tenants }),
    )
}

fn deletion_json(d: &Deletion) -> Value {
    json!({ "line": d.to_string(), "target": d.target, "reason": d.reason })
}

fn report_json(report: &RetentionReport, policy: &CompiledPolicy) -> Value {
    let plan = Plan {
        deletions: report.planned.clone(),
        kept: Vec::new(),
    };
    let skipped: Vec<Value> = report
        .skipped
        .iter()
        .map(|s| {
            let mut v = deletion_json(&s.deletion);
            v["skipped_because"] = Value::from(s.skipped_because.clone());
            v
        })
        .collect();
    json!({
        "tenant": report.tenant,
        "planned": report.planned.iter().map(deletion_json).collect::<Vec<_>>(),
        "deleted": report.deleted.iter().map(deletion_json).collect::<Vec<_>>(),
        "skipped": skipped,
        "rendered": plan.render(policy),
    })
}

fn registry_failure(e: RegistryError) -> Failure {
    match e {
        RegistryError::Unavailable { reason, .. } => {
            Failure(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", reason)
        }
        other => Failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            other.to_string(),
        ),
    }
}
