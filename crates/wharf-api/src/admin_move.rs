//! The admin API's tenant-move routes: a tenant's export and import as
//! NDJSON, blob bytes in and out of the cell's blob store under named
//! garbage-collection holds, and the purges of one repository or of all of
//! a tenant's content.
//!
//! Owns: the routes below, the NDJSON line format (what each `kind` of line
//! holds), the export's order, reading an import stream line by line within
//! [`MAX_LINE`], and the counts the import and purges answer with.
//!
//! Must never: buffer a blob or a whole export or import in memory (blob
//! bodies stream; an export holds one repository's manifest digests and
//! edges at a time, an import one repository's seen keys); store bytes
//! outside the registry's hold protocol (`wharf_registry::moving`); or
//! apply client rules (fence, quota, immutable tags) to an import: it
//! makes this cell a copy of another on the operator's order.
//!
//! # Routes
//!
//! - `GET /admin/v1/tenants/{tenant}/export`: `application/x-ndjson`, one
//!   JSON object a line, each with `kind`:
//!   `tenant` (`record`: the stored tenant, fence left out), `user` and
//!   `robot` (`record`: as stored, hashes included, so the account is
//!   recreated identically), `refresh` (`record`: one refresh token of
//!   the tenant's accounts as stored: the hash of its secret, the identity
//!   and generation it is bound to, its service and times, so that it is
//!   honoured on the other cell), `repository` (`name`, `created`), `blob`
//!   (`repo`, `digest`, `size`), `manifest` (`repo`, `digest`,
//!   `media_type`, `body`: base64 of the exact bytes, `pushed`,
//!   `last_pulled` when ever pulled, `subject` when it has one), `tag`
//!   (`repo`, `tag`, `digest`, `pushed`). Order: the tenant, its users,
//!   its robots (by name), then per repository (by name): the repository,
//!   its blobs (by digest), its manifests (children and subjects before
//!   what needs them, ties by digest), its tags (by name). Times are RFC
//!   3339 UTC at the second, the precision metadata keeps. Refresh tokens
//!   come after the robots (by hash).
//! - `POST /admin/v1/tenants/{tenant}/import?mode=merge|sync`: the export
//!   format as body, lines of at most [`MAX_LINE`] bytes, the tenant line
//!   first and every line of a repository after its `repository` line.
//!   Upserts keeping the given times; blobs must already be in the blob
//!   store (`PUT /admin/v1/blobs/{digest}`). `sync` also deletes what the
//!   tenant has here and the stream lacks. Answers `200` with
//!   `{"created","updated","unchanged","deleted"}` in total and per kind
//!   (`tenant`, `users`, `robots`, `refresh_tokens`, `repositories`,
//!   `blobs`, `manifests`, `tags`); a refresh token of an account the
//!   stream does not list is left out, and `sync` deletes the tenant's
//!   refresh tokens the stream lacks (used or revoked on the source). A line refused stops the import there (`400`/`404`, the
//!   message names the line and the digest); what came before stays, and
//!   running the import again is safe.
//! - `GET`/`HEAD /admin/v1/blobs/{digest}`: the bytes (`404 BLOB_UNKNOWN`).
//! - `PUT /admin/v1/blobs/{digest}?hold={hold_id}`: streams the body in,
//!   verified (`400 DIGEST_INVALID`, nothing stored); `201` when written,
//!   `200` when it was already there; with `hold`, a garbage-collection
//!   hold named `hold_id` protects the digest until released.
//! - `DELETE /admin/v1/holds/{hold_id}`: releases every hold of that id
//!   (`{"released": n}`).
//! - `DELETE /admin/v1/tenants/{tenant}/repositories/{repo}` (the full
//!   repository name, inside the tenant) and
//!   `DELETE /admin/v1/tenants/{tenant}/content`: the purges, answering
//!   their counts.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use wharf_core::{Digest, RegistryError, RepoName, Tag};
use wharf_meta::{ManifestEntry, PurgeCounts, UpsertCounts};
use wharf_registry::Registry;
use wharf_tenants::TenantExport;

use crate::admin_api::{answer, known_tenant, AdminApi, Answer, Caller, Failure};
use crate::auth::rfc3339;

/// The longest import line read (a manifest is at most 4 MiB, base64 makes
/// it a third longer).
pub const MAX_LINE: usize = 8 * 1024 * 1024;

/// Entries read from metadata per call of an export or a sync.
const PAGE: usize = 500;

/// Lines an export buffers ahead of a slow reader.
const EXPORT_BUFFER: usize = 32;

/// The tenant-move routes, to merge into the admin API's router.
pub(crate) fn routes() -> Router<Arc<AdminApi>> {
    Router::new()
        .route("/admin/v1/tenants/{tenant}/export", get(get_export))
        .route("/admin/v1/tenants/{tenant}/import", post(post_import))
        .route("/admin/v1/tenants/{tenant}/content", delete(delete_content))
        .route(
            "/admin/v1/tenants/{tenant}/repositories/{*repo}",
            delete(delete_repository),
        )
        .route("/admin/v1/blobs/{digest}", get(get_blob).put(put_blob))
        .route("/admin/v1/holds/{hold_id}", delete(delete_holds))
}

/// One NDJSON line of an export or import.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub(crate) enum Line {
    Tenant {
        record: Value,
    },
    User {
        record: Value,
    },
    Robot {
        record: Value,
    },
    Refresh {
        record: Value,
    },
    Repository {
        name: String,
        created: String,
    },
    Blob {
        repo: String,
        digest: String,
        size: u64,
    },
    Manifest {
        repo: String,
        digest: String,
        media_type: String,
        body: String,
        pushed: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_pulled: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<String>,
    },
    Tag {
        repo: String,
        tag: String,
        digest: String,
        pushed: String,
    },
}

fn registry(api: &AdminApi) -> Result<&Registry, Failure> {
    api.registry.as_ref().ok_or_else(|| {
        Failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "this admin API serves no registry".into(),
        )
    })
}

/// A registry error as an admin API failure: the OCI code and status of
/// the one table in `wharf-core`.
fn failure(e: RegistryError) -> Failure {
    let (code, status) = e.classify();
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Failure(status, code.as_str(), e.to_string())
}

/// `failure(e)` with what was being done in front of its message.
fn failure_at(at: &str, e: RegistryError) -> Failure {
    let Failure(status, code, message) = failure(e);
    Failure(status, code, format!("{at}: {message}"))
}

fn counts_json(c: &UpsertCounts) -> Value {
    json!({
        "created": c.created,
        "updated": c.updated,
        "unchanged": c.unchanged,
        "deleted": c.deleted,
    })
}

fn purge_json(c: &PurgeCounts) -> Value {
    json!({
        "repositories": c.repositories,
        "manifests": c.manifests,
        "tags": c.tags,
        "blobs": c.blobs,
        "uploads": c.uploads,
    })
}

// ---- export ----

async fn get_export(State(api): State<Arc<AdminApi>>, Path(tenant): Path<String>) -> Answer {
    let registry = registry(&api)?.clone();
    // The accounts as the store holds them now, not as of the last
    // background refresh.
    if let Err(e) = api.directory.load().await {
        tracing::debug!(error = %e, "export: directory reload failed; using the snapshot");
    }
    let mut accounts = api.directory.export_accounts(&tenant)?;
    accounts.refresh = api.directory.export_refresh(&tenant).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(EXPORT_BUFFER);
    tokio::spawn(async move {
        if let Err(e) = export(&registry, &tenant, accounts, &tx).await {
            tracing::warn!(%tenant, error = %e, "export cut short");
            // The body ends in an error, so the reader sees it incomplete.
            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

type Lines = tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>;

/// Sends `line`; `Err` when the reader has gone (the export stops).
async fn send(tx: &Lines, line: &Line) -> Result<(), RegistryError> {
    let mut text = serde_json::to_vec(line)
        .map_err(|e| RegistryError::Internal(format!("encoding an export line: {e}")))?;
    text.push(b'\n');
    tx.send(Ok(Bytes::from(text)))
        .await
        .map_err(|_| RegistryError::Internal("the export's reader went away".into()))
}

async fn export(
    registry: &Registry,
    tenant: &str,
    accounts: TenantExport,
    tx: &Lines,
) -> Result<(), RegistryError> {
    send(
        tx,
        &Line::Tenant {
            record: accounts.tenant,
        },
    )
    .await?;
    for record in accounts.users {
        send(tx, &Line::User { record }).await?;
    }
    for record in accounts.robots {
        send(tx, &Line::Robot { record }).await?;
    }
    for record in accounts.refresh {
        send(tx, &Line::Refresh { record }).await?;
    }
    let mut last: Option<String> = None;
    loop {
        let repos = registry.export_repos(tenant, last.as_deref(), PAGE).await?;
        let Some(end) = repos.last() else {
            return Ok(());
        };
        last = Some(end.name.to_string());
        for r in repos {
            export_repo(registry, &r.name, r.created_unix, tx).await?;
        }
    }
}

async fn export_repo(
    registry: &Registry,
    repo: &RepoName,
    created_unix: u64,
    tx: &Lines,
) -> Result<(), RegistryError> {
    let name = repo.to_string();
    send(
        tx,
        &Line::Repository {
            name: name.clone(),
            created: rfc3339(created_unix),
        },
    )
    .await?;
    let mut last: Option<String> = None;
    loop {
        let links = registry
            .export_blob_links(repo, last.as_deref(), PAGE)
            .await?;
        let Some(end) = links.last() else { break };
        last = Some(end.0.to_string());
        for (digest, size) in links {
            send(
                tx,
                &Line::Blob {
                    repo: name.clone(),
                    digest: digest.to_string(),
                    size,
                },
            )
            .await?;
        }
    }
    // Manifests: digests and edges of the whole repository, then each
    // body read and sent one at a time in dependency order.
    let mut entries: BTreeMap<Digest, ManifestEntry> = BTreeMap::new();
    let mut last: Option<String> = None;
    loop {
        let page = registry
            .export_manifests(repo, last.as_deref(), PAGE)
            .await?;
        let Some(end) = page.last() else { break };
        last = Some(end.record.digest.to_string());
        for mut e in page {
            // Only what the line and the order need stays in memory.
            e.record.annotations = None;
            e.record.artifact_type = None;
            entries.insert(e.record.digest.clone(), e);
        }
    }
    for digest in dependency_order(&entries) {
        let e = &entries[&digest];
        let body = registry.manifest_bytes(&e.record).await?;
        send(
            tx,
            &Line::Manifest {
                repo: name.clone(),
                digest: digest.to_string(),
                media_type: e.record.media_type.clone(),
                body: STANDARD.encode(&body),
                pushed: rfc3339(e.pushed_unix),
                last_pulled: e.last_pulled_unix.map(rfc3339),
                subject: e.record.subject.as_ref().map(Digest::to_string),
            },
        )
        .await?;
    }
    drop(entries);
    let mut last: Option<String> = None;
    loop {
        let tags = registry.export_tags(repo, last.as_deref(), PAGE).await?;
        let Some(end) = tags.last() else { break };
        last = Some(end.tag.to_string());
        for t in tags {
            send(
                tx,
                &Line::Tag {
                    repo: name.clone(),
                    tag: t.tag.to_string(),
                    digest: t.digest.to_string(),
                    pushed: rfc3339(t.pushed_unix),
                },
            )
            .await?;
        }
    }
    Ok(())
}

/// The manifests of one repository in an order where each comes after the
/// manifests of the repository it references (an index's children) and
/// its subject: repeatedly the smallest digest whose needs are all out.
/// Content addressing rules out cycles; should the records hold one, what
/// is left follows by digest.
fn dependency_order(entries: &BTreeMap<Digest, ManifestEntry>) -> Vec<Digest> {
    let needs = |e: &ManifestEntry| -> BTreeSet<Digest> {
        e.record
            .references
            .iter()
            .chain(e.record.subject.iter())
            .filter(|d| **d != e.record.digest && entries.contains_key(*d))
            .cloned()
            .collect()
    };
    let mut waiting: BTreeMap<&Digest, BTreeSet<Digest>> =
        entries.iter().map(|(d, e)| (d, needs(e))).collect();
    let mut needed_by: BTreeMap<Digest, Vec<&Digest>> = BTreeMap::new();
    for (d, n) in &waiting {
        for x in n {
            needed_by.entry(x.clone()).or_default().push(d);
        }
    }
    let mut ready: BTreeSet<&Digest> = waiting
        .iter()
        .filter(|(_, n)| n.is_empty())
        .map(|(d, _)| *d)
        .collect();
    let mut out = Vec::with_capacity(entries.len());
    while let Some(d) = ready.pop_first() {
        waiting.remove(d);
        out.push(d.clone());
        for parent in needed_by.get(d).into_iter().flatten() {
            if let Some(n) = waiting.get_mut(parent) {
                n.remove(d);
                if n.is_empty() {
                    ready.insert(parent);
                }
            }
        }
    }
    out.extend(waiting.into_keys().cloned());
    out
}

// ---- import ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportQuery {
    #[serde(default)]
    mode: Option<String>,
}

/// What an import did, per kind.
#[derive(Default)]
struct Imported {
    tenant: UpsertCounts,
    users: UpsertCounts,
    robots: UpsertCounts,
    refresh: UpsertCounts,
    repositories: UpsertCounts,
    blobs: UpsertCounts,
    manifests: UpsertCounts,
    tags: UpsertCounts,
}

impl Imported {
    fn to_json(&self) -> Value {
        let mut total = UpsertCounts::default();
        for c in [
            &self.tenant,
            &self.users,
            &self.robots,
            &self.refresh,
            &self.repositories,
            &self.blobs,
            &self.manifests,
            &self.tags,
        ] {
            total.add(c);
        }
        let mut v = counts_json(&total);
        v["tenant"] = counts_json(&self.tenant);
        v["users"] = counts_json(&self.users);
        v["robots"] = counts_json(&self.robots);
        v["refresh_tokens"] = counts_json(&self.refresh);
        v["repositories"] = counts_json(&self.repositories);
        v["blobs"] = counts_json(&self.blobs);
        v["manifests"] = counts_json(&self.manifests);
        v["tags"] = counts_json(&self.tags);
        v
    }
}

/// What the stream named of the repository being imported.
struct RepoSeen {
    name: RepoName,
    blobs: HashSet<Digest>,
    manifests: HashSet<Digest>,
    tags: HashSet<String>,
}

/// One import in progress.
struct Import<'a> {
    api: &'a AdminApi,
    registry: &'a Registry,
    tenant: &'a str,
    sync: bool,
    /// The account lines, until the first repository line applies them.
    accounts: Option<TenantExport>,
    accounts_done: bool,
    current: Option<RepoSeen>,
    /// Every repository the stream named (for `sync`).
    repos: HashSet<RepoName>,
    done: Imported,
}

async fn post_import(
    State(api): State<Arc<AdminApi>>,
    Path(tenant): Path<String>,
    query: Result<Query<ImportQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Answer {
    let Query(query) = query.map_err(|e| Failure::invalid(format!("bad query: {e}")))?;
    let sync = match query.mode.as_deref() {
        None | Some("merge") => false,
        Some("sync") => true,
        Some(other) => {
            return Err(Failure::invalid(format!(
                "mode must be merge or sync, not {other:?}"
            )))
        }
    };
    wharf_tenants::validate::tenant_name(&tenant).map_err(Failure::invalid)?;
    let registry = registry(&api)?;
    let mut import = Import {
        api: &api,
        registry,
        tenant: &tenant,
        sync,
        accounts: None,
        accounts_done: false,
        current: None,
        repos: HashSet::new(),
        done: Imported::default(),
    };
    let mut lines = LineReader::new(body);
    let mut n = 0u64;
    while let Some(line) = lines.next().await? {
        n += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed: Line = serde_json::from_slice(&line)
            .map_err(|e| Failure::invalid(format!("line {n}: not an export line: {e}")))?;
        import.line(n, parsed).await?;
    }
    import.finish().await?;
    tracing::info!(%tenant, sync, lines = n, "admin: tenant imported");
    answer(StatusCode::OK, import.done.to_json())
}

/// Parses an export time.
fn time(at: &str, what: &str, text: &str) -> Result<u64, Failure> {
    parse_rfc3339(text).ok_or_else(|| {
        Failure::invalid(format!(
            "{at}: {what} {text:?} is not an RFC 3339 UTC time (YYYY-MM-DDTHH:MM:SSZ)"
        ))
    })
}

fn parse<T: std::str::FromStr>(at: &str, what: &str, text: &str) -> Result<T, Failure>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e| Failure::invalid(format!("{at}: bad {what} {text:?}: {e}")))
}

impl Import<'_> {
    async fn line(&mut self, n: u64, line: Line) -> Result<(), Failure> {
        let at = format!("line {n}");
        let at = at.as_str();
        match line {
            Line::Tenant { record } => {
                if self.accounts.is_some() || self.accounts_done {
                    return Err(Failure::invalid(format!("{at}: a second tenant line")));
                }
                self.accounts = Some(TenantExport {
                    tenant: record,
                    users: Vec::new(),
                    robots: Vec::new(),
                    refresh: Vec::new(),
                });
            }
            Line::User { record } => self.account_lines(at)?.users.push(record),
            Line::Robot { record } => self.account_lines(at)?.robots.push(record),
            Line::Refresh { record } => self.account_lines(at)?.refresh.push(record),
            Line::Repository { name, created } => {
                self.apply_accounts(at).await?;
                self.end_repository().await?;
                let repo: RepoName = parse(at, "repository name", &name)?;
                if repo.namespace() != self.tenant {
                    return Err(Failure::invalid(format!(
                        "{at}: repository {repo} is not in tenant {}",
                        self.tenant
                    )));
                }
                if !self.repos.insert(repo.clone()) {
                    return Err(Failure::invalid(format!(
                        "{at}: repository {repo} appears twice"
                    )));
                }
                let created = time(at, "created", &created)?;
                let outcome = self
                    .registry
                    .import_repo(&repo, created)
                    .await
                    .map_err(|e| failure_at(at, e))?;
                self.done.repositories.count(outcome);
                self.current = Some(RepoSeen {
                    name: repo,
                    blobs: HashSet::new(),
                    manifests: HashSet::new(),
                    tags: HashSet::new(),
                });
            }
            Line::Blob { repo, digest, size } => {
                let digest: Digest = parse(at, "digest", &digest)?;
                let seen = self.in_repository(at, &repo)?;
                let repo = seen.name.clone();
                seen.blobs.insert(digest.clone());
                let outcome = self
                    .registry
                    .import_blob_link(&repo, &digest, size)
                    .await
                    .map_err(|e| failure_at(&format!("{at} (blob {digest})"), e))?;
                self.done.blobs.count(outcome);
            }
            Line::Manifest {
                repo,
                digest,
                media_type,
                body,
                pushed,
                last_pulled,
                subject: _,
            } => {
                let digest: Digest = parse(at, "digest", &digest)?;
                let bytes = STANDARD
                    .decode(body.as_bytes())
                    .map_err(|e| Failure::invalid(format!("{at}: body is not base64: {e}")))?;
                let pushed = time(at, "pushed", &pushed)?;
                let pulled = last_pulled
                    .map(|t| time(at, "last_pulled", &t))
                    .transpose()?;
                let seen = self.in_repository(at, &repo)?;
                let repo = seen.name.clone();
                seen.manifests.insert(digest.clone());
                let outcome = self
                    .registry
                    .import_manifest(
                        &repo,
                        &digest,
                        &media_type,
                        Bytes::from(bytes),
                        pushed,
                        pulled,
                    )
                    .await
                    .map_err(|e| failure_at(&format!("{at} (manifest {digest})"), e))?;
                self.done.manifests.count(outcome);
            }
            Line::Tag {
                repo,
                tag,
                digest,
                pushed,
            } => {
                let tag: Tag = parse(at, "tag", &tag)?;
                let digest: Digest = parse(at, "digest", &digest)?;
                let pushed = time(at, "pushed", &pushed)?;
                let seen = self.in_repository(at, &repo)?;
                let repo = seen.name.clone();
                seen.tags.insert(tag.to_string());
                let outcome = self
                    .registry
                    .import_tag(&repo, &tag, &digest, pushed)
                    .await
                    .map_err(|e| failure_at(&format!("{at} (tag {tag})"), e))?;
                self.done.tags.count(outcome);
            }
        }
        Ok(())
    }

    fn account_lines(&mut self, at: &str) -> Result<&mut TenantExport, Failure> {
        match (&mut self.accounts, self.accounts_done) {
            (Some(a), false) => Ok(a),
            _ => Err(Failure::invalid(format!(
                "{at}: user, robot and refresh lines follow the tenant line, before any repository"
            ))),
        }
    }

    /// The repository being imported, which a blob, manifest or tag line
    /// must name.
    fn in_repository(&mut self, at: &str, repo: &str) -> Result<&mut RepoSeen, Failure> {
        match &mut self.current {
            Some(seen) if seen.name.as_str() == repo => Ok(seen),
            _ => Err(Failure::invalid(format!(
                "{at}: the lines of repository {repo:?} must follow its repository line"
            ))),
        }
    }

    /// Applies the tenant, user and robot lines (once, before the first
    /// repository).
    async fn apply_accounts(&mut self, at: &str) -> Result<(), Failure> {
        if self.accounts_done {
            return Ok(());
        }
        let accounts = self.accounts.take().ok_or_else(|| {
            Failure::invalid(format!("{at}: the stream must start with the tenant line"))
        })?;
        let done = self
            .api
            .directory
            .import_accounts(self.tenant, accounts, self.sync)
            .await?;
        self.done.tenant = done.tenant;
        self.done.users = done.users;
        self.done.robots = done.robots;
        self.done.refresh = done.refresh;
        self.accounts_done = true;
        Ok(())
    }

    /// With `sync`, removes what the finished repository holds here and
    /// the stream did not name: tags, then manifests, then blob links.
    async fn end_repository(&mut self) -> Result<(), Failure> {
        let Some(seen) = self.current.take() else {
            return Ok(());
        };
        if !self.sync {
            return Ok(());
        }
        let (reg, repo) = (self.registry, &seen.name);
        let at = format!("syncing {repo}");
        let mut last: Option<String> = None;
        let mut doomed_tags = Vec::new();
        loop {
            let page = reg
                .export_tags(repo, last.as_deref(), PAGE)
                .await
                .map_err(|e| failure_at(&at, e))?;
            let Some(end) = page.last() else { break };
            last = Some(end.tag.to_string());
            doomed_tags.extend(
                page.into_iter()
                    .filter(|t| !seen.tags.contains(t.tag.as_str()))
                    .map(|t| t.tag),
            );
        }
        for t in doomed_tags {
            if reg
                .remove_tag(repo, &t)
                .await
                .map_err(|e| failure_at(&at, e))?
            {
                self.done.tags.deleted += 1;
            }
        }
        let mut last: Option<String> = None;
        let mut doomed = Vec::new();
        loop {
            let page = reg
                .export_manifests(repo, last.as_deref(), PAGE)
                .await
                .map_err(|e| failure_at(&at, e))?;
            let Some(end) = page.last() else { break };
            last = Some(end.record.digest.to_string());
            doomed.extend(
                page.into_iter()
                    .map(|e| e.record.digest)
                    .filter(|d| !seen.manifests.contains(d)),
            );
        }
        for d in doomed {
            if reg
                .remove_manifest(repo, &d)
                .await
                .map_err(|e| failure_at(&at, e))?
            {
                self.done.manifests.deleted += 1;
            }
        }
        let mut last: Option<String> = None;
        let mut doomed = Vec::new();
        loop {
            let page = reg
                .export_blob_links(repo, last.as_deref(), PAGE)
                .await
                .map_err(|e| failure_at(&at, e))?;
            let Some(end) = page.last() else { break };
            last = Some(end.0.to_string());
            doomed.extend(
                page.into_iter()
                    .map(|(d, _)| d)
                    .filter(|d| !seen.blobs.contains(d)),
            );
        }
        for d in doomed {
            if reg
                .remove_blob_link(repo, &d)
                .await
                .map_err(|e| failure_at(&at, e))?
            {
                self.done.blobs.deleted += 1;
            }
        }
        Ok(())
    }

    /// The end of the stream: accounts applied (a stream of accounts
    /// only), the last repository synced, and with `sync` every repository
    /// of the tenant the stream did not name purged.
    async fn finish(&mut self) -> Result<(), Failure> {
        self.apply_accounts("the end of the stream").await?;
        self.end_repository().await?;
        if !self.sync {
            return Ok(());
        }
        let mut last: Option<String> = None;
        let mut doomed = Vec::new();
        loop {
            let page = self
                .registry
                .export_repos(self.tenant, last.as_deref(), PAGE)
                .await
                .map_err(failure)?;
            let Some(end) = page.last() else { break };
            last = Some(end.name.to_string());
            doomed.extend(
                page.into_iter()
                    .map(|r| r.name)
                    .filter(|r| !self.repos.contains(r)),
            );
        }
        for repo in doomed {
            let c = self
                .registry
                .purge_repository(&repo)
                .await
                .map_err(|e| failure_at(&format!("syncing {repo}"), e))?;
            self.done.repositories.deleted += c.repositories;
            self.done.manifests.deleted += c.manifests;
            self.done.tags.deleted += c.tags;
            self.done.blobs.deleted += c.blobs;
        }
        Ok(())
    }
}

/// Reads a body line by line, each at most [`MAX_LINE`] bytes.
struct LineReader {
    body: axum::body::BodyDataStream,
    buf: BytesMut,
    ended: bool,
}

impl LineReader {
    fn new(body: Body) -> LineReader {
        LineReader {
            body: body.into_data_stream(),
            buf: BytesMut::new(),
            ended: false,
        }
    }

    /// The next line without its `\n`; `None` at the end.
    async fn next(&mut self) -> Result<Option<Bytes>, Failure> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(i + 1);
                return Ok(Some(line.freeze().slice(..i)));
            }
            if self.buf.len() > MAX_LINE {
                return Err(Failure::invalid(format!(
                    "an import line is longer than {MAX_LINE} bytes"
                )));
            }
            if self.ended {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(self.buf.split().freeze()));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    return Err(Failure::invalid(format!("reading the import body: {e}")))
                }
                None => self.ended = true,
            }
        }
    }
}

/// Reads `YYYY-MM-DDTHH:MM:SSZ` (what [`rfc3339`] writes) as seconds since
/// the Unix epoch.
fn parse_rfc3339(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    // Howard Hinnant's days-from-civil, the inverse of `rfc3339`'s.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    let secs = u64::try_from(secs).ok()?;
    // A day past the month's end (Feb 30) would not read back the same.
    (rfc3339(secs) == text).then_some(secs)
}

// ---- blobs and holds ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldQuery {
    #[serde(default)]
    hold: Option<String>,
}

fn digest_param(text: &str) -> Result<Digest, Failure> {
    text.parse()
        .map_err(|e| failure(RegistryError::DigestInvalid(format!("{text:?}: {e}"))))
}

async fn get_blob(
    State(api): State<Arc<AdminApi>>,
    method: Method,
    Path(digest): Path<String>,
) -> Answer {
    let registry = registry(&api)?;
    let digest = digest_param(&digest)?;
    let size = registry
        .stored_size(&digest)
        .await
        .map_err(failure)?
        .ok_or_else(|| failure(RegistryError::BlobUnknown(digest.clone())))?;
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        let stream = registry.stored_bytes(&digest).await.map_err(failure)?;
        Body::from_stream(stream)
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(v) = HeaderValue::from_str(&digest.to_string()) {
        h.insert("docker-content-digest", v);
    }
    Ok(resp)
}

async fn put_blob(
    State(api): State<Arc<AdminApi>>,
    Path(digest): Path<String>,
    query: Result<Query<HoldQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Answer {
    let Query(query) = query.map_err(|e| Failure::invalid(format!("bad query: {e}")))?;
    let registry = registry(&api)?;
    let digest = digest_param(&digest)?;
    let stream = body
        .into_data_stream()
        .map_err(std::io::Error::other)
        .boxed();
    let stored = registry
        .store_blob(&digest, stream, query.hold.as_deref())
        .await
        .map_err(failure)?;
    let status = if stored.written {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    answer(
        status,
        json!({
            "digest": digest.to_string(),
            "size": stored.size,
            "written": stored.written,
            "hold": query.hold,
        }),
    )
}

async fn delete_holds(State(api): State<Arc<AdminApi>>, Path(hold_id): Path<String>) -> Answer {
    let released = registry(&api)?
        .release_holds(&hold_id)
        .await
        .map_err(failure)?;
    tracing::info!(%hold_id, released, "admin: import holds released");
    answer(StatusCode::OK, json!({ "released": released }))
}

// ---- purges ----

async fn delete_repository(
    State(api): State<Arc<AdminApi>>,
    Extension(caller): Extension<Caller>,
    Path((tenant, repo)): Path<(String, String)>,
) -> Answer {
    let record = known_tenant(&api, &tenant)?;
    let repo: RepoName = repo
        .parse()
        .map_err(|e| Failure::invalid(format!("bad repository name {repo:?}: {e}")))?;
    if repo.namespace() != tenant {
        return Err(Failure::invalid(format!(
            "repository {repo} is not in tenant {tenant} (name the full repository, {tenant}/…)"
        )));
    }
    let registry = registry(&api)?;
    if let Caller::Tenant { subject, .. } = &caller {
        tenant_may_purge(&api, &record)?;
        if let Some((tag, rule)) = protected_tag(registry, &repo).await? {
            return Err(Failure(
                StatusCode::FORBIDDEN,
                "DENIED",
                format!(
                    "{subject} may not delete repository {repo}: its tag {tag} is immutable under \
                     the tenant's rule {rule}, which only the registry operator can lift"
                ),
            ));
        }
    }
    let counts = registry.purge_repository(&repo).await.map_err(failure)?;
    if counts == PurgeCounts::default() {
        return Err(Failure(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no repository {repo}"),
        ));
    }
    tracing::info!(%tenant, %repo, ?counts, by = %caller_name(&caller), "admin: repository deleted");
    answer(StatusCode::OK, purge_json(&counts))
}

async fn delete_content(
    State(api): State<Arc<AdminApi>>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
) -> Answer {
    let record = known_tenant(&api, &tenant)?;
    if let Caller::Tenant { subject, .. } = &caller {
        tenant_may_purge(&api, &record)?;
        if !record.immutable_tags.is_empty() {
            return Err(Failure(
                StatusCode::FORBIDDEN,
                "DENIED",
                format!(
                    "{subject} may not delete all of tenant {tenant}'s content while the tenant \
                     has immutable-tag rules, which only the registry operator can lift; delete \
                     repositories one by one (those without protected tags), or ask the operator"
                ),
            ));
        }
    }
    let counts = registry(&api)?
        .purge_namespace(&tenant)
        .await
        .map_err(failure)?;
    tracing::info!(%tenant, ?counts, by = %caller_name(&caller), "admin: tenant content deleted");
    answer(StatusCode::OK, purge_json(&counts))
}

fn caller_name(caller: &Caller) -> &str {
    match caller {
        Caller::Operator => "operator",
        Caller::Tenant { subject, .. } => subject,
    }
}

/// A tenant's own purge waits for a move's write fence to be lifted, as
/// its pushes and deletes on the registry port do.
fn tenant_may_purge(api: &AdminApi, record: &wharf_tenants::Tenant) -> Result<(), Failure> {
    if api.directory.fence(&record.name).is_some() {
        return Err(Failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            format!(
                "tenant {} is being moved to another cell: its writes are paused; try again later",
                record.name
            ),
        ));
    }
    Ok(())
}

/// A tag of `repo` an immutable-tag rule protects, with the rule.
async fn protected_tag(
    registry: &Registry,
    repo: &RepoName,
) -> Result<Option<(Tag, String)>, Failure> {
    let mut last: Option<String> = None;
    loop {
        let tags = registry
            .export_tags(repo, last.as_deref(), PAGE)
            .await
            .map_err(failure)?;
        let Some(end) = tags.last() else {
            return Ok(None);
        };
        last = Some(end.tag.to_string());
        for t in tags {
            if let Some(rule) = registry.immutable_rule(repo, &t.tag) {
                let rule = match &rule.repository {
                    Some(r) => format!("tag `{}` in `{r}`", rule.tag),
                    None => format!("tag `{}`", rule.tag),
                };
                return Ok(Some((t.tag, rule)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seed: &str, refs: &[&Digest], subject: Option<&Digest>) -> ManifestEntry {
        ManifestEntry {
            record: wharf_meta::ManifestRecord {
                digest: Digest::sha256_of(seed.as_bytes()),
                media_type: "m".into(),
                size: 1,
                artifact_type: None,
                annotations: None,
                subject: subject.cloned(),
                references: refs.iter().map(|d| (*d).clone()).collect(),
            },
            pushed_unix: 0,
            last_pulled_unix: None,
        }
    }

    #[test]
    fn children_and_subjects_come_first() {
        let child_a = entry("a", &[], None);
        let child_b = entry("b", &[], None);
        let (a, b) = (child_a.record.digest.clone(), child_b.record.digest.clone());
        let index = entry("index", &[&a, &b, &Digest::sha256_of(b"layer")], None);
        let i = index.record.digest.clone();
        let sig = entry("sig", &[], Some(&i));
        let s = sig.record.digest.clone();
        let sig_of_sig = entry("sig2", &[], Some(&s));
        let s2 = sig_of_sig.record.digest.clone();
        let all: BTreeMap<Digest, ManifestEntry> = [child_a, child_b, index, sig, sig_of_sig]
            .into_iter()
            .map(|e| (e.record.digest.clone(), e))
            .collect();
        let order = dependency_order(&all);
        let pos = |d: &Digest| order.iter().position(|x| x == d).unwrap();
        assert_eq!(order.len(), 5);
        assert!(pos(&a) < pos(&i) && pos(&b) < pos(&i));
        assert!(pos(&i) < pos(&s));
        assert!(pos(&s) < pos(&s2));
        assert_eq!(dependency_order(&all), order, "deterministic");
    }

    #[test]
    fn times_read_back_what_rfc3339_writes() {
        for secs in [0, 1, 951_782_400, 1_700_000_000, 4_102_444_799] {
            assert_eq!(parse_rfc3339(&rfc3339(secs)), Some(secs));
        }
        for bad in [
            "2024-02-30T00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01 00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00.5Z",
            "",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
