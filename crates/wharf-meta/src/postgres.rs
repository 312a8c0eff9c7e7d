//! The PostgreSQL backend: [`PostgresStore`], registry metadata shared by
//! every node of a multi-node registry.
//!
//! Owns: the node's own bounded pool of connections to the server (design
//! invariant 2), the schema and its migrations, and the mapping of
//! PostgreSQL's answers onto [`MetaError`].
//!
//! Must never: wait without a bound, or leave a half-applied change visible.
//! Getting a connection waits at most `connect_timeout` for a free slot and
//! as long again to open one; every statement is bounded by the server's
//! `statement_timeout` (set on each connection), and a whole call by
//! `2 × connect_timeout + statement_timeout` on the client, so a server that
//! stops answering still yields a prompt [`MetaError::Unavailable`]. Every
//! mutating call is one transaction.
//!
//! # Crates
//!
//! [`tokio_postgres`] speaks the protocol; [`deadpool_postgres`] pools its
//! connections. deadpool over bb8 because it has exactly the knobs this
//! backend needs and little else: a hard `max_size`; separate wait, create
//! and recycle timeouts (bb8 has one `connection_timeout` for waiting and
//! connecting together); and a [`Status`](deadpool_postgres::Status) that
//! counts the callers waiting right now (bb8 only counts, afterwards, the
//! gets that had to wait). It spawns no background task of its own (bb8
//! runs a reaper), and its manager caches prepared statements per
//! connection, so a call pays no extra round trip to parse its SQL.
//!
//! # Schema
//!
//! Everything lives in the schema `wharf`, created by the migrations in
//! [`MIGRATIONS`]; `wharf.schema_version` records which have run. Every text
//! column uses the `"C"` collation, so comparisons and `ORDER BY` are
//! byte-wise whatever the database's locale: the same order as the
//! embedded backend's keys.
//!
//! | table        | key                  | columns                           |
//! |--------------|----------------------|-----------------------------------|
//! | `repos`      | `name`               | `created_unix`                    |
//! | `blobs`      | `(repo, digest)`     | `size`                            |
//! | `manifests`  | `(repo, digest)`     | `subject`, `record` (JSON of [`ManifestRecord`]), `pushed_unix`, `last_pulled_unix` (NULL: never) |
//! | `tags`       | `(repo, tag)`        | `digest` → `manifests`, `ON DELETE CASCADE`; `pushed_unix` |
//! | `uploads`    | `id`                 | `repo`, `started_unix`, `bytes`, `owner`, `namespace` (generated from `repo`, indexed) |
//! | `directory`  | `(kind, key)`        | `value`                           |
//! | `directory_version` | one row       | `version`                         |
//! | `gc_holds`   | `(digest, holder)`   | `until_unix`; indexed by `holder` (a tenant import's holds end together) |
//!
//! The referrers index is an index on `manifests (repo, subject, digest)`, so
//! it cannot disagree with the manifests it lists; tags reference their
//! manifest, so deleting a manifest takes its tags with it and no tag can
//! point at nothing. A namespace's repositories are found through the
//! primary keys of `blobs` and `manifests` by two range conditions on
//! `repo` (see `NAMESPACE_USAGE`), never by scanning other namespaces.
//!
//! # Concurrency
//!
//! Nodes write with `INSERT … ON CONFLICT` at `READ COMMITTED`: two nodes
//! pushing the same tag, blob or manifest at once serialise on that row and
//! the later commit wins, never a unique-violation error. Every transaction
//! takes its row locks in the same table order (blobs or manifests, then
//! tags, then repos), so they should never deadlock each other; should the
//! server still abort one for a conflict (SQLSTATE `40001` or `40P01`), it
//! is run again, at most [`CONFLICT_ATTEMPTS`] times within its deadline.
//! That is not a retry of a failing dependency (which the guard forbids):
//! the server rolled back a healthy transaction and asks for it again.
//!
//! Every directory write bumps the one `directory_version` row in its own
//! transaction, after its entry row: writers serialise on that row, and at
//! `READ COMMITTED` each `version + 1` reads the version the previous writer
//! committed, so no bump is lost. A snapshot reads the version and the
//! entries in one `REPEATABLE READ` transaction, so they agree.
//!
//! A call that is abandoned midway (its future dropped by a caller's
//! deadline) or fails does not hand its connection back to the pool: the
//! connection is closed, and if a statement was still running the server is
//! asked to cancel it, so no lock or backend is left busy on behalf of a
//! call nobody waits for any more.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};
use wharf_core::{Digest, RepoName, Tag, UploadId};

mod gc;
mod reach;

use crate::gc::{GcStatus, Known, ReviewPolicy, Verdict};
use crate::retention::{snapshots, RepoRead, PULL_RECORD_SECS};
use crate::{
    check_directory_text, check_namespace, DirectoryRecord, DirectorySnapshot, ManifestEntry,
    ManifestRecord, MetaError, MetaStore, NamespaceUsage, Pull, PurgeCounts, RefreshRecord,
    RefreshScope, RepoEntry, RepositorySnapshot, TagTimes, UploadRecord, UploadUsage, Upsert,
};

/// How a node reaches its PostgreSQL server.
#[derive(Clone)]
pub struct PostgresConfig {
    /// A libpq connection string, as a URL (`postgres://user@host:5432/db`)
    /// or as `key=value` pairs. TLS is not supported yet: use a trusted
    /// network or a local proxy.
    pub url: String,
    /// Connections this node may hold open at once. The sum over every node
    /// must fit in the server's `max_connections`; `connect` refuses a pool
    /// that alone would not.
    pub pool_size: usize,
    /// Bounds opening one connection, and separately waiting for a free one
    /// when all `pool_size` are in use.
    pub connect_timeout: Duration,
    /// The server's `statement_timeout` (and
    /// `idle_in_transaction_session_timeout`) on every connection.
    pub statement_timeout: Duration,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password.
        f.debug_struct("PostgresConfig")
            .field("url", &"<hidden>")
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// A snapshot of a [`PostgresStore`]'s connection pool, for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// The most connections the pool opens (`pool_size`).
    pub max_size: usize,
    /// Connections open now, in use or idle.
    pub open: usize,
    /// Connections checked out by a call now.
    pub in_use: usize,
    /// Calls waiting for a free connection now.
    pub waiting: usize,
}

/// What [`PostgresStore::probe`] learnt from the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerInfo {
    /// Connections the server accepts from ordinary roles
    /// (`max_connections - superuser_reserved_connections`): every node's
    /// `pool_size` together must fit in it.
    pub connection_limit: usize,
    /// The newest migration the database holds; 0 for a database Wharf
    /// never migrated.
    pub schema_version: i32,
}

/// Why [`PostgresStore::probe`] got no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeFailure {
    /// The server answered, and the answer will not change by asking again:
    /// the configuration (or the server's) must be fixed. In plain words,
    /// with what to do.
    Misconfigured(String),
    /// No answer, or a passing one (refused, timed out, starting up):
    /// the driver's own text.
    Unreachable(String),
}

impl fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeFailure::Misconfigured(m) | ProbeFailure::Unreachable(m) => f.write_str(m),
        }
    }
}

/// The message for a database a newer Wharf migrated.
pub fn schema_ahead(found: i32) -> String {
    format!(
        "the database's schema is at version {found}, newer than this build's {SCHEMA_VERSION}: \
         a newer wharf migrated it; run that version (or newer) of wharf on this node"
    )
}

/// `user@host:port/database` of a parsed configuration.
fn address_of(pg: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match pg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let user = pg.get_user().unwrap_or("(no user)");
    let db = pg.get_dbname().unwrap_or(user);
    format!("{user}@{host}:{port}/{db}")
}

/// Sorts a driver error met while connecting or probing into what asking
/// again cannot fix and what it may.
fn classify(e: &tokio_postgres::Error) -> ProbeFailure {
    let said = e
        .as_db_error()
        .map_or_else(|| full_text(e), |d| d.message().to_string());
    let code = e.code();
    let is = |c: &SqlState| code == Some(c);
    if is(&SqlState::INVALID_PASSWORD) {
        ProbeFailure::Misconfigured(format!(
            "authentication failed ({said}): the password in the URL is wrong, or the role may \
             not log in with a password; fix the password in --metadata-url (WHARF_METADATA_URL)"
        ))
    } else if is(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION) {
        ProbeFailure::Misconfigured(format!(
            "the server refused the login ({said}): check the user name in --metadata-url, that \
             the role exists (CREATE ROLE ... LOGIN) and that pg_hba.conf lets it in from here"
        ))
    } else if is(&SqlState::INVALID_CATALOG_NAME) {
        ProbeFailure::Misconfigured(format!(
            "{said}: create the database (`createdb -O <user> <name>`) or fix its name in \
             --metadata-url"
        ))
    } else if is(&SqlState::INSUFFICIENT_PRIVILEGE) {
        ProbeFailure::Misconfigured(format!(
            "permission denied ({said}): grant the role access to the database"
        ))
    } else if e.as_db_error().is_none() && said.contains("password missing") {
        ProbeFailure::Misconfigured(
            "the server asks for a password and --metadata-url gives none: add it to the URL \
             (postgres://user:password@host/db)"
                .into(),
        )
    } else {
        ProbeFailure::Unreachable(said)
    }
}

/// An error and its causes, as one line.
fn full_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text
}

/// The schema version this code writes and expects.
pub const SCHEMA_VERSION: i32 = 8;

/// Schema migrations, in order: `(version, SQL)`. Each runs once, in the
/// transaction of the first [`PostgresStore::migrate`] (`wharf migrate`, or
/// a node started with `--migrate`) that finds it missing. Never edit
/// one that has shipped: add the next.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
CREATE TABLE wharf.repos (
    name text COLLATE "C" PRIMARY KEY
);
CREATE TABLE wharf.blobs (
    repo   text COLLATE "C" NOT NULL,
    digest text COLLATE "C" NOT NULL,
    size   bigint NOT NULL CHECK (size >= 0),
    PRIMARY KEY (repo, digest)
);
CREATE TABLE wharf.manifests (
    repo    text COLLATE "C" NOT NULL,
    digest  text COLLATE "C" NOT NULL,
    subject text COLLATE "C",
    record  jsonb NOT NULL,
    PRIMARY KEY (repo, digest)
);
CREATE INDEX manifests_by_subject ON wharf.manifests (repo, subject, digest)
    WHERE subject IS NOT NULL;
CREATE TABLE wharf.tags (
    repo   text COLLATE "C" NOT NULL,
    tag    text COLLATE "C" NOT NULL,
    digest text COLLATE "C" NOT NULL,
    PRIMARY KEY (repo, tag),
    FOREIGN KEY (repo, digest) REFERENCES wharf.manifests (repo, digest) ON DELETE CASCADE
);
CREATE INDEX tags_by_digest ON wharf.tags (repo, digest);
CREATE TABLE wharf.uploads (
    id           text COLLATE "C" PRIMARY KEY,
    repo         text COLLATE "C" NOT NULL,
    started_unix bigint NOT NULL CHECK (started_unix >= 0)
);
"#,
    ),
    (
        2,
        r#"
CREATE TABLE wharf.directory (
    kind  text COLLATE "C" NOT NULL,
    key   text COLLATE "C" NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE wharf.directory_version (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version  bigint NOT NULL CHECK (version >= 0)
);
INSERT INTO wharf.directory_version (version) VALUES (0);
"#,
    ),
    (
        3,
        r#"
CREATE TABLE wharf.refresh_tokens (
    hash         text COLLATE "C" PRIMARY KEY,
    subject      text NOT NULL,
    identity     text COLLATE "C" NOT NULL,
    generation   text NOT NULL,
    tenant       text COLLATE "C" NOT NULL,
    service      text NOT NULL,
    created_unix bigint NOT NULL CHECK (created_unix >= 0),
    expires_unix bigint NOT NULL CHECK (expires_unix >= 0)
);
CREATE INDEX refresh_tokens_by_identity ON wharf.refresh_tokens (identity, created_unix, hash);
CREATE INDEX refresh_tokens_by_tenant ON wharf.refresh_tokens (tenant);
CREATE INDEX refresh_tokens_by_expiry ON wharf.refresh_tokens (expires_unix);
"#,
    ),
    // Upload sessions' received bytes and owner, and their namespace (the
    // repository's first component, generated, so no writer can get it
    // wrong and existing rows get it too) indexed for per-namespace
    // counts. Touches only `uploads`: independent of migration 3.
    (
        4,
        r#"
ALTER TABLE wharf.uploads
    ADD COLUMN bytes bigint NOT NULL DEFAULT 0 CHECK (bytes >= 0),
    ADD COLUMN owner text COLLATE "C",
    ADD COLUMN namespace text COLLATE "C" GENERATED ALWAYS AS (split_part(repo, '/', 1)) STORED;
CREATE INDEX uploads_by_namespace ON wharf.uploads (namespace, owner);
"#,
    ),
    // Garbage collection (see `crate::gc` and `postgres/gc.rs`): what each
    // manifest references, the digest indexes a review needs, the review
    // queue, tombstones and holds. References of manifests stored before
    // are filled in from their records.
    (
        5,
        r#"
CREATE TABLE wharf.refs (
    digest   text COLLATE "C" NOT NULL,
    repo     text COLLATE "C" NOT NULL,
    manifest text COLLATE "C" NOT NULL,
    PRIMARY KEY (digest, repo, manifest)
);
CREATE INDEX refs_by_manifest ON wharf.refs (repo, manifest);
INSERT INTO wharf.refs (digest, repo, manifest)
    SELECT DISTINCT r.value, m.repo, m.digest
    FROM wharf.manifests AS m,
         jsonb_array_elements_text(coalesce(m.record->'references', '[]'::jsonb)) AS r(value);
CREATE INDEX blobs_by_digest ON wharf.blobs (digest);
CREATE INDEX manifests_by_digest ON wharf.manifests (digest);
CREATE TABLE wharf.gc_queue (
    kind         text COLLATE "C" NOT NULL CHECK (kind IN ('l', 'c', 'o')),
    digest       text COLLATE "C" NOT NULL,
    repo         text COLLATE "C" NOT NULL DEFAULT '',
    touched_unix bigint NOT NULL,
    PRIMARY KEY (kind, digest, repo)
);
CREATE INDEX gc_queue_by_time ON wharf.gc_queue (touched_unix);
CREATE TABLE wharf.gc_tombstones (
    digest      text COLLATE "C" PRIMARY KEY,
    holder      text NOT NULL,
    lease_until bigint NOT NULL
);
CREATE TABLE wharf.gc_holds (
    digest     text COLLATE "C" NOT NULL,
    holder     text COLLATE "C" NOT NULL,
    until_unix bigint NOT NULL,
    PRIMARY KEY (digest, holder)
);
CREATE INDEX gc_holds_by_until ON wharf.gc_holds (until_unix);
"#,
    ),
    // Usage per namespace, kept by triggers on the two holder tables so
    // that every change counts (cascades and purges too): each distinct
    // digest once per namespace, and the repositories holding anything.
    (
        6,
        r#"
CREATE TABLE wharf.ns_content (
    ns      text COLLATE "C" NOT NULL,
    digest  text COLLATE "C" NOT NULL,
    holders bigint NOT NULL CHECK (holders > 0),
    size    bigint NOT NULL,
    PRIMARY KEY (ns, digest)
);
CREATE TABLE wharf.ns_usage (
    ns           text COLLATE "C" PRIMARY KEY,
    bytes        bigint NOT NULL,
    repositories bigint NOT NULL
);
CREATE INDEX ns_usage_by_bytes ON wharf.ns_usage (bytes DESC, ns);
CREATE TABLE wharf.repo_holders (
    repo    text COLLATE "C" PRIMARY KEY,
    holders bigint NOT NULL CHECK (holders > 0)
);
CREATE FUNCTION wharf.usage_add(p_repo text, p_digest text, p_size bigint) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_ns text := split_part(p_repo, '/', 1);
    v_first boolean;
    v_repo_first boolean;
BEGIN
    INSERT INTO wharf.ns_content AS c (ns, digest, holders, size) VALUES (v_ns, p_digest, 1, p_size)
        ON CONFLICT (ns, digest) DO UPDATE SET holders = c.holders + 1
        RETURNING (xmax = 0) INTO v_first;
    INSERT INTO wharf.repo_holders AS r (repo, holders) VALUES (p_repo, 1)
        ON CONFLICT (repo) DO UPDATE SET holders = r.holders + 1
        RETURNING (xmax = 0) INTO v_repo_first;
    IF v_first OR v_repo_first THEN
        INSERT INTO wharf.ns_usage AS u (ns, bytes, repositories)
            VALUES (v_ns, CASE WHEN v_first THEN p_size ELSE 0 END,
                    CASE WHEN v_repo_first THEN 1 ELSE 0 END)
            ON CONFLICT (ns) DO UPDATE SET bytes = u.bytes + EXCLUDED.bytes,
                repositories = u.repositories + EXCLUDED.repositories;
    END IF;
END
$fn$;
CREATE FUNCTION wharf.usage_remove(p_repo text, p_digest text) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_ns text := split_part(p_repo, '/', 1);
    v_left bigint;
    v_size bigint;
    v_repo_left bigint;
BEGIN
    UPDATE wharf.ns_content SET holders = holders - 1 WHERE ns = v_ns AND digest = p_digest
        AND holders > 1 RETURNING holders, size INTO v_left, v_size;
    IF v_left IS NULL THEN
        DELETE FROM wharf.ns_content WHERE ns = v_ns AND digest = p_digest
            RETURNING 0, size INTO v_left, v_size;
    END IF;
    UPDATE wharf.repo_holders SET holders = holders - 1 WHERE repo = p_repo AND holders > 1
        RETURNING holders INTO v_repo_left;
    IF v_repo_left IS NULL THEN
        DELETE FROM wharf.repo_holders WHERE repo = p_repo RETURNING 0 INTO v_repo_left;
    END IF;
    IF v_left = 0 OR v_repo_left = 0 THEN
        UPDATE wharf.ns_usage
            SET bytes = bytes - CASE WHEN v_left = 0 THEN v_size ELSE 0 END,
                repositories = repositories - CASE WHEN v_repo_left = 0 THEN 1 ELSE 0 END
            WHERE ns = v_ns;
        DELETE FROM wharf.ns_usage WHERE ns = v_ns AND bytes = 0 AND repositories = 0;
    END IF;
END
$fn$;
CREATE FUNCTION wharf.blobs_usage() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM wharf.usage_add(NEW.repo, NEW.digest, NEW.size);
    ELSE
        PERFORM wharf.usage_remove(OLD.repo, OLD.digest);
    END IF;
    RETURN NULL;
END
$fn$;
CREATE FUNCTION wharf.manifests_usage() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM wharf.usage_add(NEW.repo, NEW.digest, (NEW.record->>'size')::bigint);
    ELSE
        PERFORM wharf.usage_remove(OLD.repo, OLD.digest);
    END IF;
    RETURN NULL;
END
$fn$;
CREATE TRIGGER blobs_usage AFTER INSERT OR DELETE ON wharf.blobs
    FOR EACH ROW EXECUTE FUNCTION wharf.blobs_usage();
CREATE TRIGGER manifests_usage AFTER INSERT OR DELETE ON wharf.manifests
    FOR EACH ROW EXECUTE FUNCTION wharf.manifests_usage();
INSERT INTO wharf.ns_content (ns, digest, holders, size)
    SELECT split_part(repo, '/', 1), digest, count(*), max(size)
    FROM (SELECT repo, digest, size FROM wharf.blobs
          UNION ALL
          SELECT repo, digest, (record->>'size')::bigint FROM wharf.manifests) AS h
    GROUP BY 1, 2;
INSERT INTO wharf.repo_holders (repo, holders)
    SELECT repo, count(*)
    FROM (SELECT repo FROM wharf.blobs UNION ALL SELECT repo FROM wharf.manifests) AS h
    GROUP BY repo;
INSERT INTO wharf.ns_usage (ns, bytes, repositories)
    SELECT ns, sum(size), 0 FROM wharf.ns_content GROUP BY ns;
UPDATE wharf.ns_usage AS u SET repositories =
    (SELECT count(*) FROM wharf.repo_holders AS r WHERE split_part(r.repo, '/', 1) = u.ns);
"#,
    ),
    // Push and pull times for retention (see `crate::retention`). Rows
    // stored before get the migration's time as push and pull time: a
    // default that is not volatile is evaluated once and kept in the
    // catalog, so no table is rewritten whatever its size. The defaults
    // are then dropped: every write names the time, and a write that
    // forgot it fails instead of storing a time that would mislead
    // retention.
    (
        7,
        r#"
ALTER TABLE wharf.tags
    ADD COLUMN pushed_unix bigint NOT NULL DEFAULT (extract(epoch FROM now()))::bigint;
ALTER TABLE wharf.tags ALTER COLUMN pushed_unix DROP DEFAULT;
ALTER TABLE wharf.manifests
    ADD COLUMN pushed_unix bigint NOT NULL DEFAULT (extract(epoch FROM now()))::bigint,
    ADD COLUMN last_pulled_unix bigint DEFAULT (extract(epoch FROM now()))::bigint;
ALTER TABLE wharf.manifests
    ALTER COLUMN pushed_unix DROP DEFAULT,
    ALTER COLUMN last_pulled_unix DROP DEFAULT;
"#,
    ),
    // Repositories' creation times, which a tenant moved to another cell
    // keeps (rows stored before get the migration's time, as in 7), and
    // holds found by holder, for releasing a whole import's holds at once.
    (
        8,
        r#"
ALTER TABLE wharf.repos
    ADD COLUMN created_unix bigint NOT NULL DEFAULT (extract(epoch FROM now()))::bigint;
ALTER TABLE wharf.repos ALTER COLUMN created_unix DROP DEFAULT;
CREATE INDEX gc_holds_by_holder ON wharf.gc_holds (holder);
"#,
    ),
];

/// Key of the transaction-scoped advisory lock that serialises migrations
/// across nodes starting at once ("wharf_m1" in ASCII).
const MIGRATION_LOCK: i64 = 0x7768_6172_665f_6d31;

/// How often a transaction the server aborted for a conflict is run.
pub const CONFLICT_ATTEMPTS: u32 = 3;

const UPSERT_BLOB: &str = "INSERT INTO wharf.blobs (repo, digest, size) VALUES ($1, $2, $3) \
     ON CONFLICT (repo, digest) DO UPDATE SET size = EXCLUDED.size \
     WHERE wharf.blobs.size <> EXCLUDED.size";
const ENSURE_REPO: &str =
    "INSERT INTO wharf.repos (name, created_unix) VALUES ($1, $2) ON CONFLICT DO NOTHING";
const BLOB_SIZE: &str = "SELECT size FROM wharf.blobs WHERE repo = $1 AND digest = $2";
// The `WHERE` skips rewriting an identical row (re-pushes are common), which
// would only leave a dead tuple behind; the row is locked either way.
// `pushed_unix` (`$5`) is written when the row is first stored only.
const UPSERT_MANIFEST: &str =
    "INSERT INTO wharf.manifests (repo, digest, subject, record, pushed_unix) \
     VALUES ($1, $2, $3, $4::text::jsonb, $5) \
     ON CONFLICT (repo, digest) DO UPDATE SET subject = EXCLUDED.subject, record = EXCLUDED.record \
     WHERE (wharf.manifests.subject, wharf.manifests.record) \
         IS DISTINCT FROM (EXCLUDED.subject, EXCLUDED.record)";
// The push time (`$4`) changes with the target only.
const UPSERT_TAG: &str = "INSERT INTO wharf.tags (repo, tag, digest, pushed_unix) \
     VALUES ($1, $2, $3, $4) \
     ON CONFLICT (repo, tag) DO UPDATE SET digest = EXCLUDED.digest, pushed_unix = EXCLUDED.pushed_unix \
     WHERE wharf.tags.digest <> EXCLUDED.digest";
const GET_MANIFEST: &str =
    "SELECT record::text FROM wharf.manifests WHERE repo = $1 AND digest = $2";
// Tags go with it through their foreign key's ON DELETE CASCADE.
const DELETE_MANIFEST: &str =
    "DELETE FROM wharf.manifests WHERE repo = $1 AND digest = $2 RETURNING record::text";
/// The source link of a mount, locked so no link review removes it first.
const LOCK_SOURCE_LINK: &str =
    "SELECT size FROM wharf.blobs WHERE repo = $1 AND digest = $2 FOR SHARE";
/// Removes a link and queues its content for review (touched at `$3`,
/// unless queued earlier); how many links went.
const UNLINK_BLOB: &str = "WITH gone AS (          DELETE FROM wharf.blobs WHERE repo = $1 AND digest = $2 RETURNING digest),      queued AS (          INSERT INTO wharf.gc_queue (kind, digest, repo, touched_unix)          SELECT 'c', digest, '', $3 FROM gone          ON CONFLICT (kind, digest, repo) DO UPDATE SET touched_unix = EXCLUDED.touched_unix          WHERE wharf.gc_queue.touched_unix > EXCLUDED.touched_unix)      SELECT count(*) FROM gone";
const RESOLVE_TAG: &str = "SELECT digest FROM wharf.tags WHERE repo = $1 AND tag = $2";
const GET_TAGGED_MANIFEST: &str = "SELECT m.record::text FROM wharf.tags t \
     JOIN wharf.manifests m ON m.repo = t.repo AND m.digest = t.digest \
     WHERE t.repo = $1 AND t.tag = $2";
const DELETE_TAG: &str = "DELETE FROM wharf.tags WHERE repo = $1 AND tag = $2";
const DELETE_TAG_AT: &str = "DELETE FROM wharf.tags WHERE repo = $1 AND tag = $2 AND digest = $3";
/// The bound on pull writes is in the `WHERE`: a row pulled less than
/// `$4` seconds before `$3` is not rewritten (see `crate::retention`).
const RECORD_PULLS: &str = "UPDATE wharf.manifests m SET last_pulled_unix = p.at \
     FROM unnest($1::text[], $2::text[], $3::bigint[]) AS p(repo, digest, at) \
     WHERE m.repo = p.repo AND m.digest = p.digest \
     AND (m.last_pulled_unix IS NULL OR m.last_pulled_unix <= p.at - $4::bigint)";
/// Locks the manifest row, so a concurrent put of a tag on it (whose
/// foreign key check shares the row) either committed before and shows to
/// the next statement, or waits until the delete is done.
const LOCK_MANIFEST: &str =
    "SELECT 1 FROM wharf.manifests WHERE repo = $1 AND digest = $2 FOR UPDATE";
/// Whether anything of repository `$1` still needs manifest `$2`: a tag,
/// an index listing it (`refs`), a referrer naming it as subject.
const MANIFEST_NEEDED: &str =
    "SELECT EXISTS (SELECT 1 FROM wharf.tags WHERE repo = $1 AND digest = $2) \
     OR EXISTS (SELECT 1 FROM wharf.refs WHERE digest = $2 AND repo = $1) \
     OR EXISTS (SELECT 1 FROM wharf.manifests WHERE repo = $1 AND subject = $2)";
/// The digest's lock of `crate::gc`, exclusive: every `put_manifest` that
/// references the digest (or stores it) holds it shared until it commits.
const LOCK_DIGEST: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))";
/// A namespace's manifests and tags, by the ranges of `NAMESPACE_USAGE`.
const RETENTION_MANIFESTS: &str = "SELECT repo, record::text, pushed_unix, last_pulled_unix \
     FROM wharf.manifests WHERE repo = $1 OR (repo >= $2 AND repo < $3) ORDER BY repo, digest";
const RETENTION_TAGS: &str = "SELECT repo, tag, digest, pushed_unix \
     FROM wharf.tags WHERE repo = $1 OR (repo >= $2 AND repo < $3) ORDER BY repo, tag";
// Tags and repository names are never empty, so `> ''` is "from the start";
// `coalesce` keeps the bound an index condition (an `OR` would not be).
const LIST_TAGS: &str = "SELECT tag FROM wharf.tags WHERE repo = $1 AND tag > coalesce($2, '') \
     ORDER BY tag LIMIT $3";
const REFERRERS: &str =
    "SELECT record::text FROM wharf.manifests WHERE repo = $1 AND subject = $2 ORDER BY digest";
const REPO_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM wharf.repos WHERE name = $1)";
const LIST_REPOS: &str =
    "SELECT name FROM wharf.repos WHERE name > coalesce($1, '') ORDER BY name LIMIT $2";
const UPSERT_UPLOAD: &str =
    "INSERT INTO wharf.uploads (id, repo, started_unix, bytes, owner) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (id) DO UPDATE SET repo = EXCLUDED.repo, started_unix = EXCLUDED.started_unix, \
         bytes = EXCLUDED.bytes, owner = EXCLUDED.owner";
const GET_UPLOAD: &str =
    "SELECT id, repo, started_unix, bytes, owner FROM wharf.uploads WHERE id = $1";
const DELETE_UPLOAD: &str = "DELETE FROM wharf.uploads WHERE id = $1";
const LIST_UPLOADS: &str =
    "SELECT id, repo, started_unix, bytes, owner FROM wharf.uploads ORDER BY id";
const SET_UPLOAD_BYTES: &str = "UPDATE wharf.uploads SET bytes = $2 WHERE id = $1 AND bytes <> $2";
/// `$1` is the namespace, `$2` the owner asked about or NULL (which equals
/// nothing, so counts none).
const UPLOAD_USAGE: &str = "SELECT count(*), coalesce(sum(bytes), 0)::bigint, \
     count(*) FILTER (WHERE owner = $2) FROM wharf.uploads WHERE namespace = $1";
// Purging: the namespace's ranges as in `NAMESPACE_USAGE`. Row locks in the
// one order: blobs, manifests (their tags go by cascade, counted first),
// repos; uploads stand alone.
const PURGE_COUNT_TAGS: &str =
    "SELECT count(*) FROM wharf.tags WHERE repo = $1 OR (repo >= $2 AND repo < $3)";
// Every digest a purge removes is queued for a content review (`$4`: now).
const PURGE_BLOBS: &str = "WITH gone AS (          DELETE FROM wharf.blobs WHERE repo = $1 OR (repo >= $2 AND repo < $3) RETURNING digest),      queued AS (          INSERT INTO wharf.gc_queue (kind, digest, repo, touched_unix)          SELECT DISTINCT 'c', digest, '', $4::bigint FROM gone          ON CONFLICT (kind, digest, repo) DO UPDATE SET touched_unix = EXCLUDED.touched_unix          WHERE wharf.gc_queue.touched_unix > EXCLUDED.touched_unix)      SELECT count(*) FROM gone";
const PURGE_MANIFESTS: &str = "WITH gone AS (          DELETE FROM wharf.manifests WHERE repo = $1 OR (repo >= $2 AND repo < $3) RETURNING digest),      queued AS (          INSERT INTO wharf.gc_queue (kind, digest, repo, touched_unix)          SELECT DISTINCT 'c', digest, '', $4::bigint FROM gone          ON CONFLICT (kind, digest, repo) DO UPDATE SET touched_unix = EXCLUDED.touched_unix          WHERE wharf.gc_queue.touched_unix > EXCLUDED.touched_unix)      SELECT count(*) FROM gone";
const PURGE_REFS: &str = "DELETE FROM wharf.refs WHERE repo = $1 OR (repo >= $2 AND repo < $3)";
const PURGE_REPOS: &str = "DELETE FROM wharf.repos WHERE name = $1 OR (name >= $2 AND name < $3)";
const PURGE_UPLOADS: &str = "DELETE FROM wharf.uploads WHERE namespace = $1";
const PURGE_REPO_UPLOADS: &str = "DELETE FROM wharf.uploads WHERE repo = $1";
// Export: a namespace's repositories (ranges as in `NAMESPACE_USAGE`) and
// one repository's links, manifests and tags, each a page by key.
const NAMESPACE_REPOS: &str = "SELECT name, created_unix FROM wharf.repos \
     WHERE (name = $1 OR (name >= $2 AND name < $3)) AND name > coalesce($4, '') \
     ORDER BY name LIMIT $5";
const LIST_BLOB_LINKS: &str = "SELECT digest, size FROM wharf.blobs \
     WHERE repo = $1 AND digest > coalesce($2, '') ORDER BY digest LIMIT $3";
const LIST_MANIFESTS: &str = "SELECT record::text, pushed_unix, last_pulled_unix \
     FROM wharf.manifests WHERE repo = $1 AND digest > coalesce($2, '') ORDER BY digest LIMIT $3";
const LIST_TAG_ENTRIES: &str = "SELECT tag, digest, pushed_unix FROM wharf.tags \
     WHERE repo = $1 AND tag > coalesce($2, '') ORDER BY tag LIMIT $3";
// Import: upserts that say what they did. A row comes back when one was
// written, `xmax = 0` for an insert; none when the row was already so.
const IMPORT_REPO: &str = "INSERT INTO wharf.repos (name, created_unix) VALUES ($1, $2) \
     ON CONFLICT (name) DO UPDATE SET created_unix = EXCLUDED.created_unix \
     WHERE wharf.repos.created_unix <> EXCLUDED.created_unix RETURNING (xmax = 0)";
const IMPORT_MANIFEST: &str = "INSERT INTO wharf.manifests \
     (repo, digest, subject, record, pushed_unix, last_pulled_unix) \
     VALUES ($1, $2, $3, $4::text::jsonb, $5, $6) \
     ON CONFLICT (repo, digest) DO UPDATE SET subject = EXCLUDED.subject, \
         record = EXCLUDED.record, pushed_unix = EXCLUDED.pushed_unix, \
         last_pulled_unix = EXCLUDED.last_pulled_unix \
     WHERE (wharf.manifests.subject, wharf.manifests.record, wharf.manifests.pushed_unix, \
            wharf.manifests.last_pulled_unix) \
         IS DISTINCT FROM (EXCLUDED.subject, EXCLUDED.record, EXCLUDED.pushed_unix, \
            EXCLUDED.last_pulled_unix) \
     RETURNING (xmax = 0)";
/// The manifest a tag is imported onto, locked as the tag's foreign key
/// check would lock it.
const MANIFEST_FOR_TAG: &str =
    "SELECT 1 FROM wharf.manifests WHERE repo = $1 AND digest = $2 FOR SHARE";
const IMPORT_TAG: &str = "INSERT INTO wharf.tags (repo, tag, digest, pushed_unix) \
     VALUES ($1, $2, $3, $4) \
     ON CONFLICT (repo, tag) DO UPDATE SET digest = EXCLUDED.digest, \
         pushed_unix = EXCLUDED.pushed_unix \
     WHERE (wharf.tags.digest, wharf.tags.pushed_unix) \
         IS DISTINCT FROM (EXCLUDED.digest, EXCLUDED.pushed_unix) \
     RETURNING (xmax = 0)";
/// Ends every hold of `$1` and queues a content review of each digest it
/// held (touched at `$2`, unless queued earlier); how many holds ended.
const UNHOLD_ALL: &str = "WITH gone AS ( \
         DELETE FROM wharf.gc_holds WHERE holder = $1 RETURNING digest), \
     queued AS ( \
         INSERT INTO wharf.gc_queue (kind, digest, repo, touched_unix) \
         SELECT DISTINCT 'c', digest, '', $2::bigint FROM gone \
         ON CONFLICT (kind, digest, repo) DO UPDATE SET touched_unix = EXCLUDED.touched_unix \
         WHERE wharf.gc_queue.touched_unix > EXCLUDED.touched_unix) \
     SELECT count(*) FROM gone";
/// `$1` is the namespace, `$2` and `$3` are `$1 || '/'` and `$1 || '0'`
/// (`'0'` is the byte after `'/'`): `repo = $1 OR repo >= $2 AND repo < $3`
/// is exactly the repositories named `$1` or `$1/…`, two ranges of each
/// table's primary key. The bounds are bound values, not patterns, so no
/// character of a name is a wildcard; the columns are `COLLATE "C"`, so
/// the ranges are byte-wise. `$4` is the digest asked about, or NULL.
/// What namespace `$1` holds, from the counts the usage triggers keep
/// (migration 6), and whether it holds digest `$2` (NULL: none asked).
const NAMESPACE_USAGE: &str = "SELECT \
     coalesce((SELECT bytes FROM wharf.ns_usage WHERE ns = $1), 0), \
     coalesce((SELECT repositories FROM wharf.ns_usage WHERE ns = $1), 0), \
     EXISTS (SELECT 1 FROM wharf.ns_content WHERE ns = $1 AND digest = $2)";
const LARGEST_NAMESPACES: &str =
    "SELECT ns, bytes FROM wharf.ns_usage ORDER BY bytes DESC, ns LIMIT $1";
const INSERT_DIRECTORY: &str =
    "INSERT INTO wharf.directory (kind, key, value) VALUES ($1, $2, $3) \
     ON CONFLICT (kind, key) DO NOTHING";
const UPSERT_DIRECTORY: &str =
    "INSERT INTO wharf.directory (kind, key, value) VALUES ($1, $2, $3) \
     ON CONFLICT (kind, key) DO UPDATE SET value = EXCLUDED.value";
const DELETE_DIRECTORY: &str = "DELETE FROM wharf.directory WHERE kind = $1 AND key = $2";
const BUMP_DIRECTORY_VERSION: &str =
    "UPDATE wharf.directory_version SET version = version + 1 RETURNING version";
const DIRECTORY_VERSION: &str = "SELECT version FROM wharf.directory_version";
const DIRECTORY_ENTRIES: &str = "SELECT kind, key, value FROM wharf.directory ORDER BY kind, key";

/// Registry metadata in PostgreSQL. Cloning is cheap and every clone shares
/// the same pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// Bounds one whole call, retries included.
    deadline: Duration,
    /// Bounds the cancel request sent for an abandoned statement.
    connect_timeout: Duration,
    /// Connections the server accepts from non-superusers.
    server_limit: usize,
    /// `user@host:port/database`, for messages (never the password).
    address: String,
    /// Whether the server is reached, told in the log once per outage.
    reach: std::sync::Arc<reach::Reach>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("pool", &self.pool_stats())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Builds the pool, then, in one transaction under an advisory lock (so
    /// nodes starting together take turns), brings the schema up to
    /// [`SCHEMA_VERSION`] (see [`migrate`](Self::migrate)). For tests and
    /// tools; a node opens, probes and migrates only when told.
    ///
    /// Fails with [`MetaError::Unavailable`] when the server cannot be
    /// reached, and with [`MetaError::Internal`] for a bad configuration, a
    /// pool larger than the server accepts, or a schema newer than this code.
    pub async fn connect(config: PostgresConfig) -> Result<Self, MetaError> {
        let pool_size = config.pool_size;
        let mut store = PostgresStore::open(config)?;
        store.migrate().await?;
        let info = store.probe().await.map_err(|f| match f {
            ProbeFailure::Misconfigured(m) => MetaError::Internal(m),
            ProbeFailure::Unreachable(m) => MetaError::Unavailable(m),
        })?;
        store.server_limit = info.connection_limit;
        if pool_size > store.server_limit {
            return Err(MetaError::Internal(format!(
                "invalid PostgreSQL config: pool_size {pool_size} exceeds the {} connections \
                 the server accepts",
                store.server_limit
            )));
        }
        tracing::debug!(
            pool_size,
            server_limit = store.server_limit,
            "connected to PostgreSQL metadata store"
        );
        Ok(store)
    }

    /// Builds the pool without connecting: the first call (or
    /// [`probe`](Self::probe)) opens the first connection. Fails only for a
    /// configuration that cannot work (an unparsable URL, a zero size or
    /// timeout).
    pub fn open(config: PostgresConfig) -> Result<Self, MetaError> {
        let invalid =
            |what: &str| MetaError::Internal(format!("invalid PostgreSQL config: {what}"));
        if config.pool_size == 0 {
            return Err(invalid("pool_size must be at least 1"));
        }
        if config.connect_timeout.is_zero() || config.statement_timeout.is_zero() {
            // A zero statement_timeout would mean "none" to the server.
            return Err(invalid(
                "connect_timeout and statement_timeout must be positive",
            ));
        }
        let mut pg: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| invalid(&format!("url: {e}")))?;
        let address = address_of(&pg);
        pg.connect_timeout(config.connect_timeout);
        if pg.get_application_name().is_none() {
            pg.application_name("wharf");
        }
        let timeout_ms = config.statement_timeout.as_millis().max(1);
        let session = format!(
            "-c statement_timeout={timeout_ms} -c idle_in_transaction_session_timeout={timeout_ms}"
        );
        let options = match pg.get_options() {
            Some(given) if !given.trim().is_empty() => format!("{given} {session}"),
            _ => session,
        };
        pg.options(options);

        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                // `is_closed` only: a dead connection is found on first use
                // and then dropped, rather than paying a round trip per call.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.connect_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| MetaError::Internal(format!("cannot build the connection pool: {e}")))?;
        Ok(PostgresStore {
            pool,
            deadline: config.connect_timeout * 2 + config.statement_timeout,
            connect_timeout: config.connect_timeout,
            server_limit: 0,
            address: address.clone(),
            reach: std::sync::Arc::new(reach::Reach::new(address)),
        })
    }

    /// `user@host:port/database` of the server, for messages: never the
    /// password.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Asks the server, with the configured credentials, what a start needs
    /// to know: how many connections it accepts and which schema version the
    /// database holds. Changes nothing (no schema, no table is created).
    ///
    /// A failure is [`ProbeFailure::Misconfigured`] when asking again cannot
    /// help (authentication failed, no such role or database, no
    /// permission), and [`ProbeFailure::Unreachable`] otherwise (refused,
    /// timed out, the server starting or shutting down).
    pub async fn probe(&self) -> Result<ServerInfo, ProbeFailure> {
        let ask = async {
            let obj = self.pool.get().await.map_err(|e| match e {
                PoolError::Backend(e) => classify(&e),
                PoolError::Timeout(kind) => ProbeFailure::Unreachable(format!(
                    "no connection within {:?} ({kind:?})",
                    self.connect_timeout
                )),
                other => ProbeFailure::Unreachable(other.to_string()),
            })?;
            let row = obj
                .query_one(
                    "SELECT current_setting('max_connections')::int \
                          - current_setting('superuser_reserved_connections')::int, \
                     to_regclass('wharf.schema_version') IS NOT NULL",
                    &[],
                )
                .await
                .map_err(|e| classify(&e))?;
            let limit: i32 = row.get(0);
            let versioned: bool = row.get(1);
            let schema_version: i32 = if versioned {
                obj.query_one(
                    "SELECT coalesce(max(version), 0) FROM wharf.schema_version",
                    &[],
                )
                .await
                .map_err(|e| classify(&e))?
                .get(0)
            } else {
                0
            };
            Ok(ServerInfo {
                connection_limit: usize::try_from(limit).unwrap_or(0),
                schema_version,
            })
        };
        match tokio::time::timeout(self.deadline, ask).await {
            Ok(result) => result,
            Err(_) => Err(ProbeFailure::Unreachable(format!(
                "no answer within {:?}",
                self.deadline
            ))),
        }
    }

    /// The pool's size, use and waiters right now.
    pub fn pool_stats(&self) -> PoolStats {
        let status = self.pool.status();
        PoolStats {
            max_size: status.max_size,
            open: status.size,
            in_use: status.size.saturating_sub(status.available),
            waiting: status.waiting,
        }
    }

    /// How many connections the server accepts from ordinary roles
    /// (`max_connections - superuser_reserved_connections`), read at
    /// [`connect`](Self::connect): every node's `pool_size` together must
    /// fit in it.
    pub fn server_connection_limit(&self) -> usize {
        self.server_limit
    }

    /// Applies the migrations the database lacks, in one transaction under
    /// an advisory lock (so several nodes or `wharf migrate`s take turns);
    /// returns the versions applied, none when the schema was current.
    /// Refuses a schema newer than this code. Creates the schema `wharf` in
    /// an empty database.
    pub async fn migrate(&self) -> Result<Vec<i32>, MetaError> {
        self.call("migrate", || async move {
            let mut c = self.conn().await?;
            c.batch("BEGIN").await?;
            c.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            // Asked first rather than `IF NOT EXISTS`, which makes the
            // server send a NOTICE (logged by the driver) on every run.
            let rows = c
                .query(
                    "SELECT to_regclass('wharf.schema_version') IS NOT NULL",
                    &[],
                )
                .await?;
            let versioned: bool = rows[0].try_get(0).map_err(Failure::from)?;
            if !versioned {
                c.batch(
                    "CREATE SCHEMA IF NOT EXISTS wharf; \
                     CREATE TABLE wharf.schema_version ( \
                         version integer PRIMARY KEY, \
                         applied_at timestamptz NOT NULL DEFAULT now())",
                )
                .await?;
            }
            let rows = c
                .query(
                    "SELECT coalesce(max(version), 0) FROM wharf.schema_version",
                    &[],
                )
                .await?;
            let current: i32 = rows[0].try_get(0).map_err(Failure::from)?;
            if current > SCHEMA_VERSION {
                return Err(MetaError::Internal(schema_ahead(current)).into());
            }
            let mut applied = Vec::new();
            for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
                c.batch(sql).await?;
                c.execute(
                    "INSERT INTO wharf.schema_version (version) VALUES ($1)",
                    &[version],
                )
                .await?;
                tracing::info!(version, "applied metadata schema migration");
                applied.push(*version);
            }
            c.batch("COMMIT").await?;
            c.release();
            Ok(applied)
        })
        .await
    }

    /// One directory write: `sql` on an entry and, if it changed a row, the
    /// version bump, in one transaction (row locks in the one order every
    /// directory write uses: the entry, then the version). Whether a row
    /// changed.
    async fn directory_change(
        &self,
        what: &'static str,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<bool, MetaError> {
        self.call(what, || async move {
            let mut c = self.conn().await?;
            c.batch("BEGIN").await?;
            if c.execute(sql, params).await? == 0 {
                c.batch("ROLLBACK").await?;
                c.release();
                return Ok(false);
            }
            let rows = c.query(BUMP_DIRECTORY_VERSION, &[]).await?;
            directory_version(&rows)?;
            c.batch("COMMIT").await?;
            c.release();
            Ok(true)
        })
        .await
    }

    /// Runs `attempt` (one whole call: check out, statements, commit) within
    /// the call's deadline, again while the server aborts it for a conflict.
    async fn call<T, F, Fut>(&self, what: &'static str, mut attempt: F) -> Result<T, MetaError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let attempts = async {
            let mut tries = 1;
            let mut refreshed = false;
            loop {
                match attempt().await {
                    Ok(out) => return Ok(out),
                    Err(f) if f.conflict && tries < CONFLICT_ATTEMPTS => {
                        tracing::debug!(call = what, error = %f.error, "metadata transaction conflict; running it again");
                        tries += 1;
                    }
                    // After a server restart every pooled connection is dead
                    // and would fail one call each: drop the idle ones and
                    // try once more on a fresh connection.
                    Err(f) if f.stale && !refreshed => {
                        tracing::debug!(call = what, error = %f.error, "stale PostgreSQL connection; dropping idle ones and trying once more");
                        self.pool.retain(|_, _| false);
                        refreshed = true;
                    }
                    Err(f) => return Err(f.error),
                }
            }
        };
        match tokio::time::timeout(self.deadline, attempts).await {
            Ok(result) => result,
            Err(_) => Err(MetaError::Unavailable(format!(
                "{what}: no answer from PostgreSQL within {:?}",
                self.deadline
            ))),
        }
    }

    /// Runs one `DELETE` keyed by (repository, `key`); whether a row went.
    async fn delete_row(
        &self,
        what: &'static str,
        sql: &'static str,
        repo: &str,
        key: &str,
    ) -> Result<bool, MetaError> {
        self.call(what, || async move {
            let mut c = self.conn().await?;
            let removed = c.execute(sql, &[&repo, &key]).await?;
            c.release();
            Ok(removed > 0)
        })
        .await
    }

    /// Checks a connection out of the pool, waiting at most
    /// `connect_timeout` for one to be free (and as long to open one).
    async fn conn(&self) -> Result<Conn, Failure> {
        let got = self.pool.get().await;
        if got.is_ok() {
            if let Some(line) = self.reach.connected(std::time::Instant::now()) {
                self.reach.log(line, "");
            }
        }
        // A connection that could not be made is told in the log once per
        // outage (reach.rs); the error names the server and the cause.
        let unreachable = |cause: String| {
            if let Some(line) = self.reach.failed(std::time::Instant::now()) {
                self.reach.log(line, &cause);
            }
            MetaError::Unavailable(format!(
                "cannot connect to PostgreSQL at {}: {cause}",
                self.reach.address
            ))
        };
        let obj = got.map_err(|e| match e {
            PoolError::Timeout(deadpool_postgres::TimeoutType::Create) => unreachable(format!(
                "no connection within {:?} (server down, or a firewall dropping packets?)",
                self.connect_timeout
            )),
            PoolError::Timeout(kind) => MetaError::Unavailable(format!(
                "no PostgreSQL connection within the timeout ({kind:?}); pool: {:?}",
                self.pool_stats()
            )),
            PoolError::Backend(e) => unreachable(error_chain(&e)),
            PoolError::Closed => {
                MetaError::Unavailable("the PostgreSQL connection pool is closed".into())
            }
            PoolError::PostCreateHook(e) => {
                MetaError::Unavailable(format!("cannot set up a PostgreSQL connection: {e}"))
            }
            PoolError::NoRuntimeSpecified => {
                MetaError::Internal("the PostgreSQL pool has no runtime".into())
            }
        })?;
        Ok(Conn {
            obj: Some(obj),
            busy: false,
            cancel_timeout: self.connect_timeout,
        })
    }
}

/// `e` and its causes, each once: `error connecting to server: Connection
/// refused (os error 111)`, `password authentication failed for user …`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
        source = cause.source();
    }
    text
}

/// A pooled connection checked out for one call.
///
/// Only [`Conn::release`], reached when the call finished cleanly, returns
/// it to the pool. Dropped any other way (an error, or the call's future
/// abandoned) it is closed instead, since its state (an open transaction, a
/// statement still running) is unknown; if a statement was in flight the
/// server is first asked to cancel it.
struct Conn {
    obj: Option<Object>,
    /// A request has been sent and its answer not yet read.
    busy: bool,
    cancel_timeout: Duration,
}

impl Conn {
    fn client(&self) -> &Object {
        self.obj
            .as_ref()
            .expect("a Conn holds its connection until dropped")
    }

    async fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Failure> {
        self.busy = true;
        let client = self
            .obj
            .as_ref()
            .expect("a Conn holds its connection until dropped");
        let result = async {
            let statement = client.prepare_cached(sql).await?;
            client.query(&statement, params).await
        }
        .await;
        self.busy = false;
        Ok(result?)
    }

    /// Runs one statement; the number of rows it changed.
    async fn execute(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Failure> {
        self.busy = true;
        let client = self
            .obj
            .as_ref()
            .expect("a Conn holds its connection until dropped");
        let result = async {
            let statement = client.prepare_cached(sql).await?;
            client.execute(&statement, params).await
        }
        .await;
        self.busy = false;
        Ok(result?)
    }

    /// Runs SQL without parameters (`BEGIN`, `COMMIT`, DDL).
    async fn batch(&mut self, sql: &str) -> Result<(), Failure> {
        self.busy = true;
        let result = self.client().batch_execute(sql).await;
        self.busy = false;
        Ok(result?)
    }

    /// Returns the connection to the pool: the call is over, no transaction
    /// is open and no statement runs.
    fn release(mut self) {
        drop(self.obj.take());
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let Some(obj) = self.obj.take() else {
            return;
        };
        if self.busy && !obj.is_closed() {
            // Closing the socket alone does not stop a statement that waits
            // on a lock: the server notices only when it next talks to us.
            let token = obj.cancel_token();
            let bound = self.cancel_timeout;
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = tokio::time::timeout(bound, token.cancel_query(NoTls)).await;
                });
            }
        }
        // Taken out of the pool, the connection closes when dropped here.
        drop(Object::take(obj));
    }
}

/// Why one attempt at a call failed.
struct Failure {
    error: MetaError,
    /// The server rolled the transaction back for a conflict with another;
    /// running it again is expected to succeed.
    conflict: bool,
    /// The connection itself was found dead (closed by a server restart or
    /// a network cut while it sat in the pool): every idle connection of
    /// the pool is then suspect, and one fresh attempt is worth making.
    stale: bool,
}

impl From<MetaError> for Failure {
    fn from(error: MetaError) -> Self {
        Failure {
            error,
            conflict: false,
            stale: false,
        }
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        let conflict = matches!(
            e.code(),
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
        );
        let stale = e.is_closed()
            || matches!(
                e.code(),
                Some(c) if *c == SqlState::ADMIN_SHUTDOWN || *c == SqlState::CRASH_SHUTDOWN
            );
        Failure {
            error: pg_error(e),
            conflict,
            stale,
        }
    }
}

/// Maps a PostgreSQL error as the embedded backend maps redb's: trouble
/// reaching or with the server is `Unavailable`, anything else (a
/// constraint, a type, SQL the server rejects: bugs) is `Internal`.
fn pg_error(e: tokio_postgres::Error) -> MetaError {
    let Some(db) = e.as_db_error() else {
        // Not an answer from the server: I/O, a closed connection, a
        // connect timeout, the protocol breaking down.
        return MetaError::Unavailable(format!("PostgreSQL: {e}"));
    };
    let code = db.code().code();
    let unavailable = matches!(
        &code[..2],
        "08" // connection exception
        | "53" // insufficient resources: too many connections, disk full
        | "57" // operator intervention: statement_timeout, cancel, shutdown
        | "58" // system error: I/O outside PostgreSQL
        | "40" // transaction rollback, left after its retries
    ) || matches!(
        code,
        "55P03" // lock_not_available
        | "25006" // read_only_sql_transaction: a standby after failover
    );
    let message = format!("PostgreSQL {code}: {}", db.message());
    if unavailable {
        MetaError::Unavailable(message)
    } else {
        MetaError::Internal(message)
    }
}

fn corrupt(what: &str, e: impl fmt::Display) -> MetaError {
    MetaError::Internal(format!("stored {what} is corrupt: {e}"))
}

/// A `u64` as PostgreSQL's `bigint`.
fn to_db(value: u64, what: &str) -> Result<i64, MetaError> {
    i64::try_from(value)
        .map_err(|_| MetaError::Internal(format!("{what} {value} does not fit in a bigint")))
}

/// A `bigint` column back as a `u64`.
fn from_db(value: i64, what: &str) -> Result<u64, MetaError> {
    u64::try_from(value).map_err(|_| corrupt(what, format_args!("negative value {value}")))
}

/// A page size as a `LIMIT`.
fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T, Failure> {
    Ok(row.try_get(idx)?)
}

fn decode_manifest(json: &str) -> Result<ManifestRecord, MetaError> {
    serde_json::from_str(json).map_err(|e| corrupt("manifest record", e))
}

/// The directory version from a one-row, one-column answer; a missing row
/// means the migration's row was deleted behind this code's back.
fn directory_version(rows: &[Row]) -> Result<u64, Failure> {
    let row = rows
        .first()
        .ok_or_else(|| corrupt("directory version", "its row is missing"))?;
    Ok(from_db(get(row, 0)?, "directory version")?)
}

fn decode_upload(row: &Row) -> Result<UploadRecord, Failure> {
    let id: &str = get(row, 0)?;
    let repo: &str = get(row, 1)?;
    Ok(UploadRecord {
        id: id.parse().map_err(|e| corrupt("upload id", e))?,
        repo: repo.parse().map_err(|e| corrupt("upload repository", e))?,
        started_unix: from_db(get(row, 2)?, "upload start time")?,
        bytes: from_db(get(row, 3)?, "upload size")?,
        owner: get(row, 4)?,
    })
}

const REFRESH_COLUMNS: &str =
    "hash, subject, identity, generation, tenant, service, created_unix, expires_unix";

fn decode_refresh(row: &Row) -> Result<RefreshRecord, Failure> {
    Ok(RefreshRecord {
        hash: get(row, 0)?,
        subject: get(row, 1)?,
        identity: get(row, 2)?,
        generation: get(row, 3)?,
        tenant: get(row, 4)?,
        service: get(row, 5)?,
        created_unix: from_db(get(row, 6)?, "refresh token creation time")?,
        expires_unix: from_db(get(row, 7)?, "refresh token expiry")?,
    })
}

/// Links `digest` into `repo` inside the caller's transaction: the
/// digest's shared lock and tombstone check, then its link review's queue
/// row, then the link row (the order `gc` documents).
async fn link(c: &mut Conn, repo: &str, digest: &str, size: i64, now: i64) -> Result<(), Failure> {
    gc::share_digest(c, digest).await?;
    c.execute(gc::TOUCH, &[&"l", &digest, &repo, &now]).await?;
    c.execute(UPSERT_BLOB, &[&repo, &digest, &size]).await?;
    c.execute(ENSURE_REPO, &[&repo, &now]).await?;
    Ok(())
}

/// Ends the transaction `out` ran in: committed when it succeeded, rolled
/// back (and the connection kept) when it was refused for garbage
/// collection's sake, abandoned with the connection otherwise.
async fn finish<T>(mut c: Conn, out: Result<T, Failure>) -> Result<T, Failure> {
    match out {
        Ok(v) => {
            c.batch("COMMIT").await?;
            c.release();
            Ok(v)
        }
        Err(f) if matches!(f.error, MetaError::Collecting(_) | MetaError::Missing(_)) => {
            c.batch("ROLLBACK").await?;
            c.release();
            Err(f)
        }
        Err(f) => Err(f),
    }
}

/// Deletes manifest `digest` of `repo` (the row, which is also its
/// referrers entry, and by cascade every tag pointing at it) and queues
/// what it referenced for review, in the caller's transaction; false if it
/// was absent.
async fn remove_manifest(
    c: &mut Conn,
    repo: &str,
    digest: &str,
    now: i64,
) -> Result<bool, Failure> {
    let rows = c.query(DELETE_MANIFEST, &[&repo, &digest]).await?;
    let Some(row) = rows.first() else {
        return Ok(false);
    };
    let record = decode_manifest(get(row, 0)?)?;
    let references: Vec<String> = record.references.iter().map(Digest::to_string).collect();
    c.execute(gc::DELETE_REFS, &[&repo, &digest]).await?;
    if !references.is_empty() {
        c.execute(gc::TOUCH_LINKS, &[&repo, &references, &now])
            .await?;
    }
    c.execute(gc::TOUCH_KEEP_EARLIER, &[&"c", &digest, &"", &now])
        .await?;
    Ok(true)
}

/// What an upsert `RETURNING (xmax = 0)` did: no row, nothing written.
fn upserted(rows: &[Row]) -> Result<Upsert, Failure> {
    Ok(match rows.first() {
        None => Upsert::Unchanged,
        Some(row) if get::<bool>(row, 0)? => Upsert::Created,
        Some(_) => Upsert::Updated,
    })
}

/// A time read from the database (never negative: written from `u64`s).
fn time(row: &Row, idx: usize, what: &str) -> Result<u64, Failure> {
    Ok(from_db(get(row, idx)?, what)?)
}

#[async_trait]
impl MetaStore for PostgresStore {
    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<(), MetaError> {
        let size = to_db(size, "blob size")?;
        let (repo, digest) = (repo.as_str(), digest.to_string());
        let now = to_db(wharf_core::now_unix(), "clock")?;
        self.call("link_blob", || {
            let digest = digest.clone();
            async move {
                let mut c = self.conn().await?;
                c.batch("BEGIN").await?;
                let out = link(&mut c, repo, &digest, size, now).await;
                finish(c, out).await
            }
        })
        .await
    }

    async fn mount_blob(
        &self,
        from: &RepoName,
        to: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, MetaError> {
        let (from, to, digest) = (from.as_str(), to.as_str(), digest.to_string());
        let now = to_db(wharf_core::now_unix(), "clock")?;
        self.call("mount_blob", || {
            let digest = digest.clone();
            async move {
                let mut c = self.conn().await?;
                c.batch("BEGIN").await?;
                let out = async {
                    gc::share_digest(&mut c, &digest).await?;
                    let rows = c.query(LOCK_SOURCE_LINK, &[&from, &digest]).await?;
                    let Some(row) = rows.first() else {
                        return Ok(None);
                    };
                    let size: i64 = get(row, 0)?;
                    link(&mut c, to, &digest, size, now).await?;
                    Ok(Some(from_db(size, "blob size")?))
                }
                .await;
                finish(c, out).await
            }
        })
        .await
    }

    async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, MetaError> {
        let (repo, digest) = (repo.as_str(), &digest.to_string());
        self.call("blob_size", || async move {
            let mut c = self.conn().await?;
            let rows = c.query(BLOB_SIZE, &[&repo, digest]).await?;
            c.release();
            match rows.first() {
                Some(row) => Ok(Some(from_db(get(row, 0)?, "blob size")?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError> {
        let (repo, digest) = (repo.as_str(), &digest.to_string());
        let now = to_db(wharf_core::now_unix(), "clock")?;
        self.call("unlink_blob", || async move {
            let mut c = self.conn().await?;
            let rows = c.query(UNLINK_BLOB, &[&repo, digest, &now]).await?;
            c.release();
            let removed: i64 = get(&rows[0], 0)?;
            Ok(removed > 0)
        })
        .await
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        record: &ManifestRecord,
        tag: Option<&Tag>,
    ) -> Result<(), MetaError> {
        let json = &serde_json::to_string(record)
            .map_err(|e| MetaError::Internal(format!("cannot encode: {e}")))?;
        let repo = repo.as_str();
        let digest = &record.digest.to_string();
        let subject = &record.subject.as_ref().map(Digest::to_string);
        let tag = tag.map(Tag::as_str);
        let references: &Vec<String> = &record.references.iter().map(Digest::to_string).collect();
        let mut locked: Vec<String> = references.clone();
        locked.push(digest.clone());
        locked.sort();
        locked.dedup();
        let locked = &locked;
        let now = &to_db(wharf_core::now_unix(), "clock")?;
        self.call("put_manifest", || async move {
            let mut c = self.conn().await?;
            c.batch("BEGIN").await?;
            let out = async {
                // Digest locks, then the tombstone and reference checks
                // under them (see `gc`); then row locks in the one order
                // every transaction uses: manifest, tag, repository.
                gc::share_digests(&mut c, locked).await?;
                gc::refuse_if_tombstoned(&mut c, digest).await?;
                gc::check_held(&mut c, repo, references).await?;
                c.execute(UPSERT_MANIFEST, &[&repo, digest, subject, json, now])
                    .await?;
                if !references.is_empty() {
                    c.execute(gc::INSERT_REFS, &[references, &repo, digest])
                        .await?;
                }
                if let Some(tag) = &tag {
                    c.execute(UPSERT_TAG, &[&repo, tag, digest, now]).await?;
                }
                c.execute(ENSURE_REPO, &[&repo, now]).await?;
                Ok(())
            }
            .await;
            finish(c, out).await
        })
        .await
    }

    async fn get_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ManifestRecord>, MetaError> {
        let (repo, digest) = (repo.as_str(), &digest.to_string());
        self.call("get_manifest", || async move {
            let mut c = self.conn().await?;
            let rows = c.query(GET_MANIFEST, &[&repo, digest]).await?;
            c.release();
            match rows.first() {
                Some(row) => Ok(Some(decode_manifest(get(row, 0)?)?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError> {
        // The row (which is also its referrers entry) and, by cascade, every
        // tag pointing at it; then what it referenced, queued for review.
        let (repo, digest) = (repo.as_str(), &digest.to_string());
        let now = to_db(wharf_core::now_unix(), "clock")?;
        self.call("delete_manifest", || async move {
            let mut c = self.conn().await?;
            c.batch("BEGIN").await?;
            let removed = remove_manifest(&mut c, repo, digest, now).await?;
            c.batch("COMMIT").await?;
            c.release();
            Ok(removed)
        })
        .await
    }

    async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, MetaError> {
        let (repo, tag) = (repo.as_str(), tag.as_str());
        self.call("resolve_tag", || async move {
            let mut c = self.conn().await?;
            let rows = c.query(RESOLVE_TAG, &[&repo, &tag]).await?;
            c.release();
            match rows.first() {
                Some(row) => {
                    let digest: &str = get(row, 0)?;
                    Ok(Some(digest.parse().map_err(|e| corrupt("tag target", e))?))
                }
                None => Ok(None),
            }
        })
        .await
    }

    async fn get_tagged_manifest(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<ManifestRecord>, MetaError> {
        let (repo, tag) = (repo.as_str(), tag.as_str());
        self.call("get_tagged_manifest", || async move {
            let mut c = self.conn().await?;
            let rows = c.query(GET_TAGGED_MANIFEST, &[&repo, &tag]).await?;
            c.release();
            match rows.first() {
                Some(row) => Ok(Some(decode_manifest(get(row, 0)?)?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, MetaError> {
        self.delete_row("delete_tag", DELETE_TAG, repo.as_str(), tag.as_str())
            .await
    }

    async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>, MetaError> {
        let (repo, n) = (repo.as_str(), limit(n));
        self.call("list_tags", || async move {
            let mut c = self.conn().await?;
            let rows = c.query(LIST_TAGS, &[&repo, &last, &n]).await?;
            c.release();
            rows.iter().map(|row| get(row, 0)).collect()
        })
        .await
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<ManifestRecord>, MetaError> {
        let (repo, subject) = (repo.as_str(), &subject.to_string());
        self.call("referrers", || async move {
            let mut c = self.conn().await?;
            let rows = c.query(REFERRERS, &[&repo, subject]).await?;
            c.release();
            rows.iter()
                .map(|row| Ok(decode_manifest(get(row, 0)?)?))
                .collect()
        })
        .await
    }

    async fn repo_exists(&self, repo: &RepoName) -> Result<bool, MetaError> {
        let repo = repo.as_str();
        self.call("repo_exists", || async move {
            let mut c = self.conn().await?;
            let rows = c.query(REPO_EXISTS, &[&repo]).await?;
            c.release();
            get(&rows[0], 0)
        })
        .await
    }

    async fn list_repos(&self, last: Option<&str>, n: usize) -> Result<Vec<String>, MetaError> {
        let n = limit(n);
        self.call("list_repos", || async move {
            let mut c = self.conn().await?;
            let rows = c.query(LIST_REPOS, &[&last, &n]).await?;
            c.release();
            rows.iter().map(|row| get(row, 0)).collect()
        })
        .await
    }

    async fn put_upload(&self, upload: &UploadRecord) -> Result<(), MetaError> {
        let started = to_db(upload.started_unix, "upload start time")?;
        let bytes = to_db(upload.bytes, "upload size")?;
        let (id, repo) = (upload.id.as_str(), upload.repo.as_str());
        let owner = upload.owner.as_deref();
        self.call("put_upload", || async move {
            let mut c = self.conn().await?;
            c.execute(UPSERT_UPLOAD, &[&id, &repo, &started, &bytes, &owner])
                .await?;
            c.release();
            Ok(())
        })
        .await
    }

    async fn get_upload(&self, id: &UploadId) -> Result<Option<UploadRecord>, MetaError> {
        let id = id.as_str();
        self.call("get_upload", || async move {
            let mut c = self.conn().await?;
            let rows = c.query(GET_UPLOAD, &[&id]).await?;
            c.release();
            rows.first().map(decode_upload).transpose()
        })
        .await
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<(), MetaError> {
        let id = id.as_str();
        self.call("delete_upload", || async move {
            let mut c = self.conn().await?;
            c.execute(DELETE_UPLOAD, &[&id]).await?;
            c.release();
            Ok(())
        })
        .await
    }

    async fn list_uploads(&self) -> Result<Vec<UploadRecord>, MetaError> {
        self.call("list_uploads", || async move {
            let mut c = self.conn().await?;
            let rows = c.query(LIST_UPLOADS, &[]).await?;
            c.release();
            rows.iter().map(decode_upload).collect()
        })
        .await
    }

    async fn set_upload_bytes(&self, id: &UploadId, bytes: u64) -> Result<(), MetaError> {
        let bytes = to_db(bytes, "upload size")?;
        let id = id.as_str();
        self.call("set_upload_bytes", || async move {
            let mut c = self.conn().await?;
            c.execute(SET_UPLOAD_BYTES, &[&id, &bytes]).await?;
            c.release();
            Ok(())
        })
        .await
    }

    async fn upload_usage(
        &self,
        namespace: &str,
        owner: Option<&str>,
    ) -> Result<UploadUsage, MetaError> {
        check_namespace(namespace)?;
        self.call("upload_usage", || async move {
            let mut c = self.conn().await?;
            let rows = c.query(UPLOAD_USAGE, &[&namespace, &owner]).await?;
            c.release();
            let row = rows
                .first()
                .ok_or_else(|| MetaError::Internal("upload usage returned no row".into()))?;
            Ok(UploadUsage {
                sessions: from_db(get(row, 0)?, "upload count")?,
                bytes: from_db(get(row, 1)?, "upload bytes")?,
                owned: from_db(get(row, 2)?, "owned upload count")?,
            })
        })
        .await
    }

    async fn namespace_usage(
        &self,
        namespace: &str,
        digest: Option<&Digest>,
    ) -> Result<NamespaceUsage, MetaError> {
        check_namespace(namespace)?;
        let digest = &digest.map(Digest::to_string);
        self.call("namespace_usage", || async move {
            let mut c = self.conn().await?;
            let rows = c.query(NAMESPACE_USAGE, &[&namespace, digest]).await?;
            c.release();
            let row = rows
                .first()
                .ok_or_else(|| MetaError::Internal("namespace usage returned no row".into()))?;
            Ok(NamespaceUsage {
                bytes: from_db(get(row, 0)?, "namespace size")?,
                repositories: from_db(get(row, 1)?, "repository count")?,
                holds_digest: get(row, 2)?,
            })
        })
        .await
    }

    async fn purge_namespace(&self, namespace: &str) -> Result<PurgeCounts, MetaError> {
        check_namespace(namespace)?;
        let (below, past) = (&format!("{namespace}/"), &format!("{namespace}0"));
        let now = &to_db(wharf_core::now_unix(), "clock")?;
        self.call("purge_namespace", || async move {
            let range: [&(dyn ToSql + Sync); 3] = [&namespace, below, past];
            let mut c = self.conn().await?;
            c.batch("BEGIN").await?;
            let with_now: [&(dyn ToSql + Sync); 4] = [&namespace, below, past, &now];
            let tags: i64 = get(&c.query(PURGE_COUNT_TAGS, &range).await?[0], 0)?;
            let blobs: i64 = get(&c.query(PURGE_BLOBS, &with_now).await?[0], 0)?;
            let manifests: i64 = get(&c.query(PURGE_MANIFESTS, &with_now).await?[0], 0)?;
            c.execute(PURGE_REFS, &range).await?;
            let (blobs, manifests) = (
                from_db(blobs, "blob count")?,
                from_db(manifests, "manifest count")?,
            );
            let repositories = c.execute(PURGE_REPOS, &range).await?;
            let uploads = c.execute(PURGE_UPLOADS, &[&namespace]).await?;
            c.batch("COMMIT").await?;
            c.release();
            Ok(PurgeCounts {
                blobs,
                manifests,
                tags: from_db(tags, "tag count")?,
                repositories,
                uploads,
            })
        })
        .await
    }

    async fn purge_repository(&self, repo: &RepoName) -> Result<PurgeCounts, MetaError> {
        let repo = repo.as_str();
        let now = &to_db(wharf_core::now_unix(), "clock")?;
        self.call("purge_repository", || async move {
            // The purge statements' ranges with the second one empty:
            // exactly the repository named `repo`.
            let range: [&(dyn ToSql + Sync); 3] = [&repo, &"", &""];
            let with_now: [&(dyn ToSql + Sync); 4] = [&repo, &"", &"", &now];
            let mut c = self.conn().await?;
            c.batch("BEGIN").await?;
            let tags: i64 = get(&c.query(PURGE_COUNT_TAGS, &range).await?[0], 0)?;
            let blobs: i64 = get(&c.query(PURGE_BLOBS, &with_now).await?[0], 0)?;
            let manifests: i64 = get(&c.query(PURGE_MANIFESTS, &with_now).await?[0], 0)?;
            c.execute(PURGE_REFS, &range).await?;
            let repositories = c.execute(PURGE_REPOS, &range).await?;
            let uploads = c.execute(PURGE_REPO_UPLOADS, &[&repo]).await?;
            c.batch("COMMIT").await?;
            c.release();
            Ok(PurgeCounts {
                blobs: from_db(blobs, "blob count")?,
                manifests: from_db(manifests, "manifest count")?,
                tags: from_db(tags, "tag count")?,
                repositories,
                uploads,
            })
        })
        .await
    }

    async fn directory_put(
        &self,
        kind: &str,
        key: &str,
        value: &str,
        create_only: bool,
    ) -> Result<bool, MetaError> {
        check_directory_text(&[kind, key, value])?;
        let sql = if create_only {
            INSERT_DIRECTORY
        } else {
            UPSERT_DIRECTORY
        };
        // Only `DO NOTHING` changes no row: the entry exists.
        self.directory_change("directory_put", sql, &[&kind, &key, &value])
            .await
    }

    async fn directory_delete(&self, kind: &str, key: &str) -> Result<bool, MetaError> {
        check_directory_text(&[kind, key])?;
        self.directory_change("directory_delete", DELETE_DIRECTORY, &[&kind, &key])
            .await
    }

    async fn directory_version(&self) -> Result<u64, MetaError> {
        self.call("directory_version", || async move {
            let mut c = self.conn().await?;
            let rows = c.query(DIRECTORY_VERSION, &[]).await?;
            c.release();
            directory_version(&rows)
        })
        .await
    }

    async fn directory_snapshot(&self) -> Result<DirectorySnapshot, MetaError> {
        self.call("directory_snapshot", || async move {
            let mut c = self.conn().await?;
            c.batch("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .await?;
            let version = directory_version(&c.query(DIRECTORY_VERSION, &[]).await?)?;
            let rows = c.query(DIRECTORY_ENTRIES, &[]).await?;
            c.batch("COMMIT").await?;
            c.release();
            let records = rows
                .iter()
                .map(|row| {
                    Ok(DirectoryRecord {
                        kind: get(row, 0)?,
                        key: get(row, 1)?,
                        value: get(row, 2)?,
                    })
                })
                .collect::<Result<_, Failure>>()?;
            Ok(DirectorySnapshot { version, records })
        })
        .await
    }

    async fn refresh_put(
        &self,
        record: &RefreshRecord,
        max_per_identity: usize,
        now_unix: u64,
    ) -> Result<(), MetaError> {
        let r = record;
        check_directory_text(&[
            &r.hash,
            &r.subject,
            &r.identity,
            &r.generation,
            &r.tenant,
            &r.service,
        ])?;
        let created = to_db(r.created_unix, "refresh token creation time")?;
        let expires = to_db(r.expires_unix, "refresh token expiry")?;
        let now = to_db(now_unix, "time")?;
        let keep = to_db(max_per_identity.max(1) as u64, "refresh token bound")?;
        let insert = format!(
            "INSERT INTO wharf.refresh_tokens ({REFRESH_COLUMNS})              VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        );
        let insert = insert.as_str();
        self.call("refresh_put", || async move {
            let mut c = self.conn().await?;
            c.batch("BEGIN").await?;
            c.execute(
                insert,
                &[
                    &r.hash,
                    &r.subject,
                    &r.identity,
                    &r.generation,
                    &r.tenant,
                    &r.service,
                    &created,
                    &expires,
                ],
            )
            .await?;
            c.execute(
                "DELETE FROM wharf.refresh_tokens WHERE identity = $1 AND expires_unix <= $2",
                &[&r.identity, &now],
            )
            .await?;
            // Past the bound, the oldest go (the index gives the order).
            c.execute(
                "DELETE FROM wharf.refresh_tokens WHERE hash IN ( \
                     SELECT hash FROM wharf.refresh_tokens WHERE identity = $1 \
                     ORDER BY created_unix DESC, hash DESC OFFSET $2)",
                &[&r.identity, &keep],
            )
            .await?;
            c.batch("COMMIT").await?;
            c.release();
            Ok(())
        })
        .await
    }

    async fn refresh_take(&self, hash: &str) -> Result<Option<RefreshRecord>, MetaError> {
        let sql =
            format!("DELETE FROM wharf.refresh_tokens WHERE hash = $1 RETURNING {REFRESH_COLUMNS}");
        let sql = sql.as_str();
        self.call("refresh_take", || async move {
            let mut c = self.conn().await?;
            let rows = c.query(sql, &[&hash]).await?;
            c.release();
            rows.first().map(decode_refresh).transpose()
        })
        .await
    }

    async fn refresh_list(&self, tenant: &str) -> Result<Vec<RefreshRecord>, MetaError> {
        let sql = format!(
            "SELECT {REFRESH_COLUMNS} FROM wharf.refresh_tokens WHERE tenant = $1 ORDER BY hash"
        );
        let sql = sql.as_str();
        self.call("refresh_list", || async move {
            let mut c = self.conn().await?;
            let rows = c.query(sql, &[&tenant]).await?;
            c.release();
            rows.iter().map(decode_refresh).collect()
        })
        .await
    }

    async fn refresh_revoke(&self, which: &RefreshScope) -> Result<u64, MetaError> {
        self.call("refresh_revoke", || async move {
            let mut c = self.conn().await?;
            let removed = match which {
                RefreshScope::Identity(id) => {
                    c.execute(
                        "DELETE FROM wharf.refresh_tokens WHERE identity = $1",
                        &[id],
                    )
                    .await?
                }
                RefreshScope::Tenant(t) => {
                    c.execute("DELETE FROM wharf.refresh_tokens WHERE tenant = $1", &[t])
                        .await?
                }
                RefreshScope::All => c.execute("DELETE FROM wharf.refresh_tokens", &[]).await?,
            };
            c.release();
            Ok(removed)
        })
        .await
    }

    async fn refresh_prune(&self, now_unix: u64) -> Result<u64, MetaError> {
        let now = to_db(now_unix, "time")?;
        self.call("refresh_prune", || async move {
            let mut c = self.conn().await?;
            let removed = c
                .execute(
                    "DELETE FROM wharf.refresh_tokens WHERE expires_unix <= $1",
                    &[&now],
                )
                .await?;
            c.release();
            Ok(removed)
        })
        .await
    }

    async fn gc_touch(
        &self,
        repo: &RepoName,
        digest: &Digest,
        now_unix: u64,
    ) -> Result<(), MetaError> {
        let (repo, digest) = (repo.as_str(), &digest.to_string());
        let now = to_db(now_unix, "clock")?;
        self.call("gc_touch", || async move {
            let mut c = self.conn().await?;
            gc::touch_if_queued(&mut c, repo, digest, now).await?;
            c.release();
            Ok(())
        })
        .await
    }

    async fn gc_hold(
        &self,
        digest: &Digest,
        holder: &str,
        until_unix: u64,
    ) -> Result<(), MetaError> {
        let digest = &digest.to_string();
        let until = to_db(until_unix, "hold end")?;
        self.call("gc_hold", || async move {
            let mut c = self.conn().await?;
            c.batch("BEGIN").await?;
            let out = async {
                gc::share_digest(&mut c, digest).await?;
                c.execute(gc::UPSERT_HOLD, &[digest, &holder, &until])
                    .await?;
                Ok(())
            }
            .await;
            finish(c, out).await
        })
        .await
    }

    async fn gc_unhold(&self, digest: &Digest, holder: &str) -> Result<(), MetaError> {
        let digest = &digest.to_string();
        self.call("gc_unhold", || async move {
            let mut c = self.conn().await?;
            c.execute(gc::UNHOLD, &[digest, &holder]).await?;
            c.release();
            Ok(())
        })
        .await
    }

    async fn gc_review(&self, policy: &ReviewPolicy) -> Result<Vec<Verdict>, MetaError> {
        let now = to_db(policy.now_unix, "clock")?;
        if policy.dry_run {
            // Every decision in one transaction, rolled back: what a pass
            // would do, step after step, with nothing done.
            return self
                .call("gc_review", || async move {
                    let mut c = self.conn().await?;
                    c.batch("BEGIN").await?;
                    let mut verdicts = Vec::new();
                    while verdicts.len() < policy.limit {
                        match gc::decide_one(&mut c, policy, true).await? {
                            Some(v) => verdicts.push(v),
                            None => break,
                        }
                    }
                    c.batch("ROLLBACK").await?;
                    c.release();
                    Ok(verdicts)
                })
                .await;
        }
        let mut verdicts = Vec::new();
        // First the tombstones whose collector died (each claim is one
        // statement, committed by itself), then the due reviews.
        while verdicts.len() < policy.limit {
            let claimed = self
                .call("gc_review", || async move {
                    let mut c = self.conn().await?;
                    let claimed = gc::claim_expired(&mut c, policy).await?;
                    c.release();
                    Ok(claimed)
                })
                .await?;
            match claimed {
                Some(v) => verdicts.push(v),
                None => break,
            }
        }
        while verdicts.len() < policy.limit {
            // One short transaction per review.
            let verdict = self
                .call("gc_review", || async move {
                    let mut c = self.conn().await?;
                    c.batch("BEGIN").await?;
                    let verdict = gc::decide_one(&mut c, policy, false).await?;
                    c.batch("COMMIT").await?;
                    c.release();
                    Ok(verdict)
                })
                .await?;
            match verdict {
                Some(v) => verdicts.push(v),
                None => break,
            }
        }
        self.call("gc_prune_holds", || async move {
            let mut c = self.conn().await?;
            gc::prune_holds(&mut c, now).await?;
            c.release();
            Ok(())
        })
        .await?;
        Ok(verdicts)
    }

    async fn gc_release(&self, digest: &Digest, holder: &str) -> Result<bool, MetaError> {
        let digest = &digest.to_string();
        self.call("gc_release", || async move {
            let mut c = self.conn().await?;
            let released = gc::release(&mut c, digest, holder).await?;
            c.release();
            Ok(released)
        })
        .await
    }

    async fn gc_enqueue_orphans(
        &self,
        digests: &[Digest],
        now_unix: u64,
    ) -> Result<u64, MetaError> {
        let digests = &digests.iter().map(Digest::to_string).collect::<Vec<_>>();
        let now = to_db(now_unix, "clock")?;
        self.call("gc_enqueue_orphans", || async move {
            let mut c = self.conn().await?;
            let queued = gc::enqueue_orphans(&mut c, digests, now).await?;
            c.release();
            Ok(queued)
        })
        .await
    }

    async fn largest_namespaces(&self, n: usize) -> Result<Vec<(String, u64)>, MetaError> {
        self.call("largest_namespaces", || async move {
            let mut c = self.conn().await?;
            let rows = c.query(LARGEST_NAMESPACES, &[&limit(n)]).await?;
            c.release();
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.push((get(row, 0)?, from_db(get(row, 1)?, "namespace size")?));
            }
            Ok(out)
        })
        .await
    }

    async fn gc_status(&self, policy: &ReviewPolicy) -> Result<GcStatus, MetaError> {
        self.call("gc_status", || async move {
            let mut c = self.conn().await?;
            let status = gc::status(&mut c, policy).await?;
            c.release();
            Ok(status)
        })
        .await
    }

    async fn record_pulls(&self, pulls: &[Pull]) -> Result<u64, MetaError> {
        // One row per manifest, the latest pull, in key order (rows locked
        // in the same order by every node; a deadlock is retried anyway).
        let mut latest: BTreeMap<(&str, String), u64> = BTreeMap::new();
        for p in pulls {
            let at = latest
                .entry((p.repo.as_str(), p.digest.to_string()))
                .or_default();
            *at = (*at).max(p.at_unix);
        }
        if latest.is_empty() {
            return Ok(0);
        }
        let mut repos = Vec::with_capacity(latest.len());
        let mut digests = Vec::with_capacity(latest.len());
        let mut times = Vec::with_capacity(latest.len());
        for ((repo, digest), at) in latest {
            repos.push(repo);
            digests.push(digest);
            times.push(to_db(at, "clock")?);
        }
        let interval = &to_db(PULL_RECORD_SECS, "pull interval")?;
        let (repos, digests, times) = (&repos, &digests, &times);
        self.call("record_pulls", || async move {
            let mut c = self.conn().await?;
            let written = c
                .execute(RECORD_PULLS, &[repos, digests, times, interval])
                .await?;
            c.release();
            Ok(written)
        })
        .await
    }

    async fn retention_snapshot(
        &self,
        namespace: &str,
    ) -> Result<Vec<RepositorySnapshot>, MetaError> {
        check_namespace(namespace)?;
        let (below, past) = (&format!("{namespace}/"), &format!("{namespace}0"));
        self.call("retention_snapshot", || async move {
            let range: [&(dyn ToSql + Sync); 3] = [&namespace, below, past];
            let mut c = self.conn().await?;
            // Tags and manifests from one snapshot, so every tag's manifest
            // is in the answer.
            c.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await?;
            let manifest_rows = c.query(RETENTION_MANIFESTS, &range).await?;
            let tag_rows = c.query(RETENTION_TAGS, &range).await?;
            c.batch("COMMIT").await?;
            c.release();
            let mut repos: BTreeMap<String, RepoRead> = BTreeMap::new();
            for row in &manifest_rows {
                let repo: String = get(row, 0)?;
                let record = decode_manifest(get(row, 1)?)?;
                let pushed = time(row, 2, "push time")?;
                let pulled: Option<i64> = get(row, 3)?;
                let pulled = pulled.map(|t| from_db(t, "pull time")).transpose()?;
                repos
                    .entry(repo)
                    .or_default()
                    .1
                    .push((record, pushed, pulled));
            }
            for row in &tag_rows {
                let repo: String = get(row, 0)?;
                let tag: &str = get(row, 1)?;
                let digest: &str = get(row, 2)?;
                let entry = TagTimes {
                    tag: tag.parse().map_err(|e| corrupt("tag", e))?,
                    digest: digest.parse().map_err(|e| corrupt("tag target", e))?,
                    pushed_unix: time(row, 3, "push time")?,
                };
                repos.entry(repo).or_default().0.push(entry);
            }
            Ok(snapshots(repos)?)
        })
        .await
    }

    async fn delete_tag_at(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<bool, MetaError> {
        let (repo, tag, digest) = (repo.as_str(), tag.as_str(), &digest.to_string());
        self.call("delete_tag_at", || async move {
            let mut c = self.conn().await?;
            let removed = c.execute(DELETE_TAG_AT, &[&repo, &tag, digest]).await?;
            c.release();
            Ok(removed > 0)
        })
        .await
    }

    async fn delete_untagged_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<bool, MetaError> {
        let (repo, digest) = (repo.as_str(), &digest.to_string());
        let now = to_db(wharf_core::now_unix(), "clock")?;
        self.call("delete_untagged_manifest", || async move {
            let mut c = self.conn().await?;
            c.batch("BEGIN").await?;
            // The digest lock first (the order every transaction takes
            // them in), each lock in its own statement so the check after
            // reads a snapshot taken under both.
            c.query(LOCK_DIGEST, &[digest]).await?;
            let present = !c.query(LOCK_MANIFEST, &[&repo, digest]).await?.is_empty();
            let needed: bool = if present {
                get(&c.query(MANIFEST_NEEDED, &[&repo, digest]).await?[0], 0)?
            } else {
                false
            };
            if !present || needed {
                c.batch("ROLLBACK").await?;
                c.release();
                return Ok(false);
            }
            let removed = remove_manifest(&mut c, repo, digest, now).await?;
            c.batch("COMMIT").await?;
            c.release();
            Ok(removed)
        })
        .await
    }

    async fn gc_known(&self, policy: &ReviewPolicy) -> Result<Known, MetaError> {
        self.call("gc_known", || async move {
            let mut c = self.conn().await?;
            let known = gc::known(&mut c, policy).await?;
            c.release();
            Ok(known)
        })
        .await
    }

    async fn namespace_repos(
        &self,
        namespace: &str,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<RepoEntry>, MetaError> {
        check_namespace(namespace)?;
        let (below, past) = (&format!("{namespace}/"), &format!("{namespace}0"));
        let n = limit(n);
        self.call("namespace_repos", || async move {
            let mut c = self.conn().await?;
            let rows = c
                .query(NAMESPACE_REPOS, &[&namespace, below, past, &last, &n])
                .await?;
            c.release();
            rows.iter()
                .map(|row| {
                    let name: &str = get(row, 0)?;
                    Ok(RepoEntry {
                        name: name.parse().map_err(|e| corrupt("repository name", e))?,
                        created_unix: time(row, 1, "repository creation time")?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn list_blob_links(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<(Digest, u64)>, MetaError> {
        let (repo, n) = (repo.as_str(), limit(n));
        self.call("list_blob_links", || async move {
            let mut c = self.conn().await?;
            let rows = c.query(LIST_BLOB_LINKS, &[&repo, &last, &n]).await?;
            c.release();
            rows.iter()
                .map(|row| {
                    let digest: &str = get(row, 0)?;
                    Ok((
                        digest.parse().map_err(|e| corrupt("blob digest", e))?,
                        time(row, 1, "blob size")?,
                    ))
                })
                .collect()
        })
        .await
    }

    async fn list_manifests(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<ManifestEntry>, MetaError> {
        let (repo, n) = (repo.as_str(), limit(n));
        self.call("list_manifests", || async move {
            let mut c = self.conn().await?;
            let rows = c.query(LIST_MANIFESTS, &[&repo, &last, &n]).await?;
            c.release();
            rows.iter()
                .map(|row| {
                    let pulled: Option<i64> = get(row, 2)?;
                    Ok(ManifestEntry {
                        record: decode_manifest(get(row, 0)?)?,
                        pushed_unix: time(row, 1, "push time")?,
                        last_pulled_unix: pulled.map(|t| from_db(t, "pull time")).transpose()?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn list_tag_entries(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<TagTimes>, MetaError> {
        let (repo, n) = (repo.as_str(), limit(n));
        self.call("list_tag_entries", || async move {
            let mut c = self.conn().await?;
            let rows = c.query(LIST_TAG_ENTRIES, &[&repo, &last, &n]).await?;
            c.release();
            rows.iter()
                .map(|row| {
                    let tag: &str = get(row, 0)?;
                    let digest: &str = get(row, 1)?;
                    Ok(TagTimes {
                        tag: tag.parse().map_err(|e| corrupt("tag", e))?,
                        digest: digest.parse().map_err(|e| corrupt("tag target", e))?,
                        pushed_unix: time(row, 2, "push time")?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn import_repo(&self, repo: &RepoName, created_unix: u64) -> Result<Upsert, MetaError> {
        let repo = repo.as_str();
        let created = &to_db(created_unix, "creation time")?;
        self.call("import_repo", || async move {
            let mut c = self.conn().await?;
            let rows = c.query(IMPORT_REPO, &[&repo, created]).await?;
            c.release();
            upserted(&rows)
        })
        .await
    }

    async fn import_manifest(
        &self,
        repo: &RepoName,
        entry: &ManifestEntry,
    ) -> Result<Upsert, MetaError> {
        let record = &entry.record;
        let json = &serde_json::to_string(record)
            .map_err(|e| MetaError::Internal(format!("cannot encode: {e}")))?;
        let repo = repo.as_str();
        let digest = &record.digest.to_string();
        let subject = &record.subject.as_ref().map(Digest::to_string);
        let references: &Vec<String> = &record.references.iter().map(Digest::to_string).collect();
        let mut locked: Vec<String> = references.clone();
        locked.push(digest.clone());
        locked.sort();
        locked.dedup();
        let locked = &locked;
        let pushed = &to_db(entry.pushed_unix, "push time")?;
        let pulled = &entry
            .last_pulled_unix
            .map(|t| to_db(t, "pull time"))
            .transpose()?;
        let now = &to_db(wharf_core::now_unix(), "clock")?;
        self.call("import_manifest", || async move {
            let mut c = self.conn().await?;
            c.batch("BEGIN").await?;
            let out = async {
                // As `put_manifest`: digest locks, the tombstone and
                // reference checks under them, then the rows.
                gc::share_digests(&mut c, locked).await?;
                gc::refuse_if_tombstoned(&mut c, digest).await?;
                gc::check_held(&mut c, repo, references).await?;
                let rows = c
                    .query(
                        IMPORT_MANIFEST,
                        &[&repo, digest, subject, json, pushed, pulled],
                    )
                    .await?;
                if !references.is_empty() {
                    c.execute(gc::INSERT_REFS, &[references, &repo, digest])
                        .await?;
                }
                c.execute(ENSURE_REPO, &[&repo, now]).await?;
                upserted(&rows)
            }
            .await;
            finish(c, out).await
        })
        .await
    }

    async fn import_tag(&self, repo: &RepoName, tag: &TagTimes) -> Result<Upsert, MetaError> {
        let (repo, name) = (repo.as_str(), tag.tag.as_str());
        let digest = &tag.digest.to_string();
        let pushed = &to_db(tag.pushed_unix, "push time")?;
        let missing = tag.digest.clone();
        self.call("import_tag", || {
            let missing = missing.clone();
            async move {
                let mut c = self.conn().await?;
                c.batch("BEGIN").await?;
                let out = async {
                    if c.query(MANIFEST_FOR_TAG, &[&repo, digest])
                        .await?
                        .is_empty()
                    {
                        return Err(MetaError::Missing(missing).into());
                    }
                    let rows = c.query(IMPORT_TAG, &[&repo, &name, digest, pushed]).await?;
                    upserted(&rows)
                }
                .await;
                finish(c, out).await
            }
        })
        .await
    }

    async fn gc_unhold_all(&self, holder: &str, now_unix: u64) -> Result<u64, MetaError> {
        let now = &to_db(now_unix, "clock")?;
        self.call("gc_unhold_all", || async move {
            let mut c = self.conn().await?;
            let rows = c.query(UNHOLD_ALL, &[&holder, now]).await?;
            c.release();
            let ended: i64 = get(&rows[0], 0)?;
            Ok(from_db(ended, "hold count")?)
        })
        .await
    }
}
