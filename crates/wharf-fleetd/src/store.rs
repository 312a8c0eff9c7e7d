//! The fleet service's state in a PostgreSQL database of its own:
//! [`FleetStore`].
//!
//! Owns: the bounded pool of connections to that database, the `fleet`
//! schema and its versioned migrations ([`MIGRATIONS`], applied under an
//! advisory lock like `wharf-meta`'s), and every read and write of cells,
//! nodes, tenants, moves and decisions, each one statement or one
//! transaction, each bounded by a deadline.
//!
//! Must never: decide anything (placement and plans are `wharf-fleet`'s,
//! reached through `service`), wait without a bound, or be touched by a
//! registry node: nothing on the data path reads this database, so the
//! registry keeps serving while it is down (design invariant 3).
//!
//! # Schema
//!
//! | table       | key                 | columns |
//! |-------------|---------------------|---------|
//! | `cells`     | `id`                | `zone`, `state` (`active`, `draining`, `retired`), `capacity[5]`, `threshold[5]`, `warn[5]` (per [`wharf_fleet::Dimension`] in index order), times |
//! | `nodes`     | `(cell, admin_url)` | |
//! | `tenants`   | `name` (and `id`, the placeable id) | `cell` (home), `hostname` (unique when set), `demand[5]` (the reservation asked for at placement), `rules` (JSON: anti-affinity, pins, exclusions), `created_unix`, `on_cell` (false from the placement until the cell has created the tenant: not routed meanwhile; migration 2), `quota` (JSON: what the tenant was created with on its cell) |
//! | `moves`     | `id`                | `tenant`, `from_cell`, `to_cell`, `state` (`planned`, `running`, `done`, `failed`, `cancelled`), `step`, `counters` (JSON), `reason`, times, `error`, `fence_start_unix`, `fence_end_unix` |
//! | `decisions` | `id`                | `at_unix`, `kind`, `subject`, `reason` (text), `detail` (JSON) |
//!
//! At most one move per tenant is in flight (`planned` or `running`): a
//! partial unique index says so, so two requests racing cannot both win.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use serde::{Deserialize, Serialize};
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Row};
use wharf_fleet::{Load, DIMS};

/// How the fleet service reaches its database.
#[derive(Clone)]
pub struct StoreConfig {
    /// A libpq connection string (`postgres://user@host:5432/fleet`).
    pub url: String,
    /// Connections the service holds at most.
    pub pool_size: usize,
    /// Bounds opening one connection, and separately waiting for a free
    /// one.
    pub connect_timeout: Duration,
    /// The server's `statement_timeout` on every connection.
    pub statement_timeout: Duration,
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password.
        f.debug_struct("StoreConfig")
            .field("url", &"<hidden>")
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// What went wrong with a store call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It exists already, or its state forbids the change.
    #[error("{0}")]
    Conflict(String),
    /// The input breaks a rule of the schema.
    #[error("{0}")]
    Invalid(String),
    /// The database could not be reached or answered too slowly.
    #[error("fleet database unavailable: {0}")]
    Unavailable(String),
}

/// The schema version this code writes and expects.
pub const SCHEMA_VERSION: i32 = 2;

/// Schema migrations, in order. Never edit one that has shipped: add the
/// next.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
CREATE TABLE fleet.cells (
    id           integer PRIMARY KEY CHECK (id >= 0),
    zone         integer NOT NULL CHECK (zone >= 0 AND zone < 65536),
    state        text NOT NULL CHECK (state IN ('active', 'draining', 'retired')),
    capacity     bigint[] NOT NULL CHECK (array_length(capacity, 1) = 5),
    threshold    double precision[] NOT NULL CHECK (array_length(threshold, 1) = 5),
    warn         double precision[] NOT NULL CHECK (array_length(warn, 1) = 5),
    created_unix bigint NOT NULL,
    updated_unix bigint NOT NULL
);
CREATE TABLE fleet.nodes (
    cell      integer NOT NULL REFERENCES fleet.cells (id),
    admin_url text COLLATE "C" NOT NULL,
    PRIMARY KEY (cell, admin_url)
);
CREATE TABLE fleet.tenants (
    id           integer GENERATED ALWAYS AS IDENTITY UNIQUE,
    name         text COLLATE "C" PRIMARY KEY,
    cell         integer NOT NULL REFERENCES fleet.cells (id),
    hostname     text COLLATE "C" UNIQUE,
    demand       bigint[] NOT NULL CHECK (array_length(demand, 1) = 5),
    rules        jsonb NOT NULL,
    created_unix bigint NOT NULL
);
CREATE INDEX tenants_by_cell ON fleet.tenants (cell);
CREATE TABLE fleet.moves (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant           text COLLATE "C" NOT NULL REFERENCES fleet.tenants (name),
    from_cell        integer NOT NULL REFERENCES fleet.cells (id),
    to_cell          integer NOT NULL REFERENCES fleet.cells (id),
    state            text NOT NULL
        CHECK (state IN ('planned', 'running', 'done', 'failed', 'cancelled')),
    step             text NOT NULL,
    counters         jsonb NOT NULL,
    reason           text NOT NULL,
    started_unix     bigint NOT NULL,
    updated_unix     bigint NOT NULL,
    step_since_unix  bigint NOT NULL,
    error            text,
    fence_start_unix bigint,
    fence_end_unix   bigint,
    CHECK (from_cell <> to_cell)
);
CREATE UNIQUE INDEX moves_one_in_flight ON fleet.moves (tenant)
    WHERE state IN ('planned', 'running');
CREATE INDEX moves_by_state ON fleet.moves (state, id);
CREATE TABLE fleet.decisions (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_unix bigint NOT NULL,
    kind    text NOT NULL,
    subject text NOT NULL,
    reason  text NOT NULL,
    detail  jsonb NOT NULL
);
CREATE INDEX decisions_by_time ON fleet.decisions (at_unix DESC, id DESC);
"#,
    ),
    // Placement creates the tenant on its cell: the step between the
    // recorded placement and the cell's answer is kept, so that a service
    // restarted in between finishes it (tenants placed before were created
    // by hand, hence the default).
    (
        2,
        r#"
ALTER TABLE fleet.tenants ADD COLUMN on_cell boolean NOT NULL DEFAULT true;
ALTER TABLE fleet.tenants ADD COLUMN quota jsonb NOT NULL DEFAULT '{}'::jsonb;
"#,
    ),
];

/// Key of the advisory lock that serialises migrations ("fleet_m1").
const MIGRATION_LOCK: i64 = 0x666c_6565_745f_6d31;

/// Key of the advisory lock a running fleet service holds for as long as
/// it runs ("fleet_sv"): one service per database.
const SERVICE_LOCK: i64 = 0x666c_6565_745f_7376;

/// The session advisory lock that makes one fleet service the only one on
/// its database ([`FleetStore::lock_service`]). PostgreSQL holds it for as
/// long as this lock's own connection (not a pooled one) stays open.
pub struct ServiceLock {
    client: tokio_postgres::Client,
    connection: tokio::task::JoinHandle<()>,
}

impl ServiceLock {
    /// Whether the lock is still held: its connection is open.
    pub fn held(&self) -> bool {
        !self.client.is_closed() && !self.connection.is_finished()
    }
}

impl Drop for ServiceLock {
    fn drop(&mut self) {
        // Closing the connection releases the lock.
        self.connection.abort();
    }
}

/// A cell's lifecycle state as stored (`Unknown` is never stored: it is
/// what the scrape readings say, not what an operator decided).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CellLifecycle {
    /// Serving and accepting tenants.
    Active,
    /// Being emptied: tenants leave, none arrive.
    Draining,
    /// Out of the fleet; kept so ids stay stable.
    Retired,
}

impl CellLifecycle {
    fn as_str(self) -> &'static str {
        match self {
            CellLifecycle::Active => "active",
            CellLifecycle::Draining => "draining",
            CellLifecycle::Retired => "retired",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "active" => Ok(CellLifecycle::Active),
            "draining" => Ok(CellLifecycle::Draining),
            "retired" => Ok(CellLifecycle::Retired),
            other => Err(StoreError::Invalid(format!("unknown cell state {other:?}"))),
        }
    }
}

/// A cell as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CellRecord {
    /// Its id (`cell_<id>` is its HAProxy backend).
    pub id: u32,
    /// Its failure domain.
    pub zone: u16,
    /// Its lifecycle.
    pub state: CellLifecycle,
    /// What it carries at 100%, per dimension in index order.
    pub capacity: [u64; DIMS],
    /// The most each dimension may be used (0.7 = 70%).
    pub threshold: [f64; DIMS],
    /// Where the warning alert fires.
    pub warn: [f64; DIMS],
    /// The admin URLs of its nodes (their `/metrics` are scraped).
    pub nodes: Vec<String>,
    /// When it was added.
    pub created_unix: u64,
    /// When its state last changed.
    pub updated_unix: u64,
}

/// The rules a tenant's placement keeps, as stored in `tenants.rules`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantRules {
    /// Anti-affinity groups it belongs to.
    #[serde(default)]
    pub anti_affinity: Vec<GroupRule>,
    /// If not empty, the only cells it may live in.
    #[serde(default)]
    pub pinned_to: Vec<u32>,
    /// Cells it must never live in.
    #[serde(default)]
    pub excluded: Vec<u32>,
}

/// Membership of one anti-affinity group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRule {
    /// Group name, shared by the members.
    pub group: String,
    /// `cell` or `zone`.
    pub scope: GroupScope,
}

/// How far apart the members of a group stay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupScope {
    /// Never two members in one cell.
    Cell,
    /// Never two members in one zone.
    Zone,
}

/// A tenant as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TenantRecord {
    /// Its placeable id in the placement engine.
    pub id: u32,
    /// Its name (the registry's tenant, the first path component).
    pub name: String,
    /// The cell it is served from.
    pub cell: u32,
    /// Its own hostname, if it has one.
    pub hostname: Option<String>,
    /// The reservation asked for at placement, per dimension.
    pub demand: [u64; DIMS],
    /// Its placement rules.
    pub rules: TenantRules,
    /// When it was placed.
    pub created_unix: u64,
    /// Whether its cell has created it (else the placement is recorded but
    /// the tenant is neither routed nor moved yet).
    pub on_cell: bool,
    /// The quota it is created with on its cell.
    pub quota: CellQuota,
}

/// The quota a tenant is created with on its cell (the node's tenant
/// `quota`); `None` leaves a limit to the cell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellQuota {
    /// Bytes of distinct blobs and manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Repositories holding anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repositories: Option<u64>,
}

/// A new tenant, placed on `cell`.
#[derive(Clone, Debug)]
pub struct NewTenant {
    /// Its name.
    pub name: String,
    /// Its home cell.
    pub cell: u32,
    /// Its own hostname, if any.
    pub hostname: Option<String>,
    /// Its reservation.
    pub demand: Load,
    /// Its rules.
    pub rules: TenantRules,
    /// The quota to create it with on its cell.
    pub quota: CellQuota,
}

/// Where a move is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MoveState {
    /// Recorded, waiting for an executor.
    Planned,
    /// An executor is copying, fencing or flipping.
    Running,
    /// Finished: the tenant lives in the destination.
    Done,
    /// Stopped by an error; the tenant stays at its source.
    Failed,
    /// Stopped by an operator; the tenant stays at its source.
    Cancelled,
}

impl MoveState {
    /// Every state, for metrics.
    pub const ALL: [MoveState; 5] = [
        MoveState::Planned,
        MoveState::Running,
        MoveState::Done,
        MoveState::Failed,
        MoveState::Cancelled,
    ];

    /// Its name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            MoveState::Planned => "planned",
            MoveState::Running => "running",
            MoveState::Done => "done",
            MoveState::Failed => "failed",
            MoveState::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        MoveState::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| StoreError::Invalid(format!("unknown move state {s:?}")))
    }

    /// Whether the move still holds capacity at both ends.
    pub fn in_flight(self) -> bool {
        matches!(self, MoveState::Planned | MoveState::Running)
    }
}

/// A move as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MoveRecord {
    /// Its id.
    pub id: i64,
    /// The tenant moved.
    pub tenant: String,
    /// The cell it leaves.
    pub from: u32,
    /// The cell it goes to.
    pub to: u32,
    /// Where it is in its life.
    pub state: MoveState,
    /// The executor's current step (`planned` until one starts).
    pub step: String,
    /// The executor's counters (bytes copied, …), as it reports them.
    pub counters: serde_json::Value,
    /// Why it was requested.
    pub reason: String,
    /// When it was recorded.
    pub started_unix: u64,
    /// When anything about it last changed.
    pub updated_unix: u64,
    /// When its current step began.
    pub step_since_unix: u64,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// When the tenant's write fence went up, if it did.
    pub fence_start_unix: Option<u64>,
    /// When it came down.
    pub fence_end_unix: Option<u64>,
}

/// A decision as recorded.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DecisionRecord {
    /// Its id.
    pub id: i64,
    /// When it was made.
    pub at_unix: u64,
    /// What kind: `place`, `refuse`, `move`, `rebalance`, `plan-infeasible`,
    /// `drain`, `retire`, `cell-add`, `cancel`, `route`.
    pub kind: String,
    /// What it is about: a tenant, a cell (`c3`) or `fleet`.
    pub subject: String,
    /// Why, for people.
    pub reason: String,
    /// Why, as data.
    pub detail: serde_json::Value,
}

/// The fleet service's database.
#[derive(Clone)]
pub struct FleetStore {
    pool: Pool,
    deadline: Duration,
    /// How to open a connection of its own (the service lock's).
    pg: tokio_postgres::Config,
}

impl fmt::Debug for FleetStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetStore")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

fn db_err(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let msg = db.message().to_string();
        if *code == SqlState::UNIQUE_VIOLATION {
            return StoreError::Conflict(msg);
        }
        if *code == SqlState::FOREIGN_KEY_VIOLATION {
            return StoreError::NotFound(msg);
        }
        if *code == SqlState::CHECK_VIOLATION || *code == SqlState::NOT_NULL_VIOLATION {
            return StoreError::Invalid(msg);
        }
    }
    StoreError::Unavailable(e.to_string())
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn load_of(v: Vec<i64>) -> [u64; DIMS] {
    let mut out = [0u64; DIMS];
    for (o, x) in out.iter_mut().zip(v) {
        *o = u64_of(x);
    }
    out
}

fn ratios_of(v: Vec<f64>) -> [f64; DIMS] {
    let mut out = [0.0; DIMS];
    for (o, x) in out.iter_mut().zip(v) {
        *o = x;
    }
    out
}

const CELL_COLUMNS: &str = "c.id, c.zone, c.state, c.capacity, c.threshold, c.warn, \
     c.created_unix, c.updated_unix, \
     coalesce((SELECT array_agg(n.admin_url ORDER BY n.admin_url) FROM fleet.nodes n \
               WHERE n.cell = c.id), '{}')";

fn cell_of(r: &Row) -> Result<CellRecord, StoreError> {
    Ok(CellRecord {
        id: r.get::<_, i32>(0) as u32,
        zone: r.get::<_, i32>(1) as u16,
        state: CellLifecycle::parse(r.get(2))?,
        capacity: load_of(r.get(3)),
        threshold: ratios_of(r.get(4)),
        warn: ratios_of(r.get(5)),
        created_unix: u64_of(r.get(6)),
        updated_unix: u64_of(r.get(7)),
        nodes: r.get(8),
    })
}

const TENANT_COLUMNS: &str =
    "id, name, cell, hostname, demand, rules::text, created_unix, on_cell, quota::text";

fn tenant_of(r: &Row) -> Result<TenantRecord, StoreError> {
    let rules: String = r.get(5);
    Ok(TenantRecord {
        id: r.get::<_, i32>(0) as u32,
        name: r.get(1),
        cell: r.get::<_, i32>(2) as u32,
        hostname: r.get(3),
        demand: load_of(r.get(4)),
        rules: serde_json::from_str(&rules)
            .map_err(|e| StoreError::Invalid(format!("stored tenant rules: {e}")))?,
        created_unix: u64_of(r.get(6)),
        on_cell: r.get(7),
        quota: serde_json::from_str(r.get::<_, &str>(8))
            .map_err(|e| StoreError::Invalid(format!("stored tenant quota: {e}")))?,
    })
}

const MOVE_COLUMNS: &str = "id, tenant, from_cell, to_cell, state, step, counters::text, reason, \
     started_unix, updated_unix, step_since_unix, error, fence_start_unix, fence_end_unix";

fn move_of(r: &Row) -> Result<MoveRecord, StoreError> {
    let counters: String = r.get(6);
    Ok(MoveRecord {
        id: r.get(0),
        tenant: r.get(1),
        from: r.get::<_, i32>(2) as u32,
        to: r.get::<_, i32>(3) as u32,
        state: MoveState::parse(r.get(4))?,
        step: r.get(5),
        counters: serde_json::from_str(&counters).unwrap_or(serde_json::Value::Null),
        reason: r.get(7),
        started_unix: u64_of(r.get(8)),
        updated_unix: u64_of(r.get(9)),
        step_since_unix: u64_of(r.get(10)),
        error: r.get(11),
        fence_start_unix: r.get::<_, Option<i64>>(12).map(u64_of),
        fence_end_unix: r.get::<_, Option<i64>>(13).map(u64_of),
    })
}

/// What a new move records.
#[derive(Clone, Debug)]
pub struct NewMove {
    /// The tenant.
    pub tenant: String,
    /// Its current home.
    pub from: u32,
    /// Where it goes.
    pub to: u32,
    /// Why, for people.
    pub reason: String,
}

/// A change an executor reports for a running move.
#[derive(Clone, Debug, Default)]
pub struct MoveUpdate {
    /// A new state, if it changes.
    pub state: Option<MoveState>,
    /// A new step, if it changes (resets the step's clock).
    pub step: Option<String>,
    /// New counters, if any.
    pub counters: Option<serde_json::Value>,
    /// The error, when it fails.
    pub error: Option<String>,
    /// The fence went up now (an earlier fence's end is forgotten: a
    /// resumed move raises a new fence).
    pub fence_start: bool,
    /// The fence came down now.
    pub fence_end: bool,
}

impl FleetStore {
    /// Builds the bounded pool and checks the server answers; does not
    /// migrate (see [`FleetStore::migrate`]).
    pub async fn connect(config: StoreConfig) -> Result<FleetStore, StoreError> {
        let invalid = |what: String| StoreError::Invalid(format!("fleet database config: {what}"));
        if config.pool_size == 0 {
            return Err(invalid("the pool size must be at least 1".into()));
        }
        if config.connect_timeout.is_zero() || config.statement_timeout.is_zero() {
            return Err(invalid("timeouts must be positive".into()));
        }
        let mut pg: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| invalid(format!("url: {e}")))?;
        pg.connect_timeout(config.connect_timeout);
        if pg.get_application_name().is_none() {
            pg.application_name("wharf-fleet");
        }
        let ms = config.statement_timeout.as_millis().max(1);
        let session =
            format!("-c statement_timeout={ms} -c idle_in_transaction_session_timeout={ms}");
        let options = match pg.get_options() {
            Some(given) if !given.trim().is_empty() => format!("{given} {session}"),
            _ => session,
        };
        pg.options(options);
        let manager = Manager::from_config(
            pg.clone(),
            NoTls,
            ManagerConfig {
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
            .map_err(|e| invalid(format!("pool: {e}")))?;
        let store = FleetStore {
            pool,
            deadline: config.connect_timeout * 2 + config.statement_timeout,
            pg,
        };
        store
            .call(|c| async move {
                c.simple_query("SELECT 1").await.map_err(db_err)?;
                Ok(())
            })
            .await?;
        Ok(store)
    }

    /// Runs `f` with a pooled connection, the whole call bounded by the
    /// store's deadline. A connection whose call failed or was abandoned is
    /// dropped rather than reused.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Object) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let work = async {
            let obj = self
                .pool
                .get()
                .await
                .map_err(|e| StoreError::Unavailable(format!("no connection: {e}")))?;
            f(obj).await
        };
        match tokio::time::timeout(self.deadline, work).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer within {:?}",
                self.deadline
            ))),
        }
    }

    /// Takes the service lock on a connection of its own, without waiting:
    /// Conflict (naming the holder's connection) when another fleet service
    /// holds it, so that two services never run the same fleet's moves.
    pub async fn lock_service(&self) -> Result<ServiceLock, StoreError> {
        let work = async {
            let (client, connection) = self.pg.connect(NoTls).await.map_err(db_err)?;
            let connection = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "the fleet service lock's connection closed");
                }
            });
            let lock = ServiceLock { client, connection };
            let got: bool = lock
                .client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&SERVICE_LOCK])
                .await
                .map_err(db_err)?
                .get(0);
            if got {
                return Ok(lock);
            }
            let holder = lock
                .client
                .query_opt(
                    "SELECT a.pid, coalesce(host(a.client_addr), 'a local socket'), \
                            a.application_name, \
                            to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS UTC') \
                     FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
                       AND l.database = (SELECT oid FROM pg_database \
                                         WHERE datname = current_database()) \
                       AND ((l.classid::bigint << 32) | l.objid::bigint) = $1 LIMIT 1",
                    &[&SERVICE_LOCK],
                )
                .await
                .ok()
                .flatten()
                .map(|r| {
                    format!(
                        " (database session {} from {}, {}, since {})",
                        r.get::<_, i32>(0),
                        r.get::<_, String>(1),
                        r.get::<_, String>(2),
                        r.get::<_, String>(3)
                    )
                })
                .unwrap_or_default();
            Err(StoreError::Conflict(format!(
                "another fleet service is running on this database{holder}:                  one `wharf fleet serve` per fleet database; stop the other first"
            )))
        };
        match tokio::time::timeout(self.deadline, work).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer within {:?}",
                self.deadline
            ))),
        }
    }

    /// Applies the missing migrations in one transaction under an advisory
    /// lock; returns how many ran. Idempotent.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        self.call(|mut c| async move {
            let tx = c.transaction().await.map_err(db_err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(db_err)?;
            tx.batch_execute(
                "CREATE SCHEMA IF NOT EXISTS fleet; \
                 CREATE TABLE IF NOT EXISTS fleet.schema_version ( \
                     version integer PRIMARY KEY, \
                     applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .await
            .map_err(db_err)?;
            let row = tx
                .query_one(
                    "SELECT coalesce(max(version), 0) FROM fleet.schema_version",
                    &[],
                )
                .await
                .map_err(db_err)?;
            let current: i32 = row.get(0);
            if current > SCHEMA_VERSION {
                return Err(StoreError::Conflict(format!(
                    "fleet schema version {current} is newer than this build's {SCHEMA_VERSION}"
                )));
            }
            let mut ran = 0;
            for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
                tx.batch_execute(sql).await.map_err(db_err)?;
                tx.execute(
                    "INSERT INTO fleet.schema_version (version) VALUES ($1)",
                    &[version],
                )
                .await
                .map_err(db_err)?;
                tracing::info!(version, "applied fleet schema migration");
                ran += 1;
            }
            tx.commit().await.map_err(db_err)?;
            Ok(ran)
        })
        .await
    }

    /// The schema version in the database (0: none).
    pub async fn schema_version(&self) -> Result<i32, StoreError> {
        self.call(|c| async move {
            let row = c
                .query_one(
                    "SELECT CASE WHEN to_regclass('fleet.schema_version') IS NULL THEN 0 \
                     ELSE (SELECT coalesce(max(version), 0) FROM fleet.schema_version) END",
                    &[],
                )
                .await
                .map_err(db_err)?;
            Ok(row.get(0))
        })
        .await
    }

    /// Adds a cell with its nodes, active. Conflict if the id is taken.
    pub async fn add_cell(&self, cell: &CellRecord, now: u64) -> Result<CellRecord, StoreError> {
        let cell = cell.clone();
        self.call(|mut c| async move {
            let tx = c.transaction().await.map_err(db_err)?;
            let cap: Vec<i64> = cell.capacity.iter().map(|&x| i64_of(x)).collect();
            tx.execute(
                "INSERT INTO fleet.cells (id, zone, state, capacity, threshold, warn, \
                 created_unix, updated_unix) VALUES ($1, $2, 'active', $3, $4, $5, $6, $6)",
                &[
                    &(cell.id as i32),
                    &i32::from(cell.zone),
                    &cap,
                    &cell.threshold.to_vec(),
                    &cell.warn.to_vec(),
                    &i64_of(now),
                ],
            )
            .await
            .map_err(|e| match db_err(e) {
                StoreError::Conflict(_) => {
                    StoreError::Conflict(format!("cell {} exists already", cell.id))
                }
                other => other,
            })?;
            for url in &cell.nodes {
                tx.execute(
                    "INSERT INTO fleet.nodes (cell, admin_url) VALUES ($1, $2) \
                     ON CONFLICT DO NOTHING",
                    &[&(cell.id as i32), url],
                )
                .await
                .map_err(db_err)?;
            }
            tx.commit().await.map_err(db_err)?;
            Ok(())
        })
        .await?;
        self.cell(cell.id).await
    }

    /// Sets a cell's capacity, threshold and warning ratios. NotFound if
    /// there is no such cell.
    pub async fn set_cell_limits(
        &self,
        id: u32,
        capacity: [u64; DIMS],
        threshold: [f64; DIMS],
        warn: [f64; DIMS],
        now: u64,
    ) -> Result<CellRecord, StoreError> {
        self.call(|c| async move {
            let capacity: Vec<i64> = capacity.iter().map(|&v| i64_of(v)).collect();
            let n = c
                .execute(
                    "UPDATE fleet.cells SET capacity = $2, threshold = $3, warn = $4, \
                     updated_unix = $5 WHERE id = $1",
                    &[
                        &(id as i32),
                        &capacity,
                        &threshold.to_vec(),
                        &warn.to_vec(),
                        &i64_of(now),
                    ],
                )
                .await
                .map_err(db_err)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("no cell {id}")));
            }
            Ok(())
        })
        .await?;
        self.cell(id).await
    }

    /// Replaces a cell's nodes (their admin URLs), in one transaction.
    /// NotFound if there is no such cell.
    pub async fn set_cell_nodes(
        &self,
        id: u32,
        nodes: &[String],
        now: u64,
    ) -> Result<CellRecord, StoreError> {
        let nodes = nodes.to_vec();
        self.call(|mut c| async move {
            let tx = c.transaction().await.map_err(db_err)?;
            let n = tx
                .execute(
                    "UPDATE fleet.cells SET updated_unix = $2 WHERE id = $1",
                    &[&(id as i32), &i64_of(now)],
                )
                .await
                .map_err(db_err)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("no cell {id}")));
            }
            tx.execute("DELETE FROM fleet.nodes WHERE cell = $1", &[&(id as i32)])
                .await
                .map_err(db_err)?;
            for url in &nodes {
                tx.execute(
                    "INSERT INTO fleet.nodes (cell, admin_url) VALUES ($1, $2) \
                     ON CONFLICT DO NOTHING",
                    &[&(id as i32), url],
                )
                .await
                .map_err(db_err)?;
            }
            tx.commit().await.map_err(db_err)?;
            Ok(())
        })
        .await?;
        self.cell(id).await
    }

    /// Every cell, by id.
    pub async fn cells(&self) -> Result<Vec<CellRecord>, StoreError> {
        self.call(|c| async move {
            let sql = format!("SELECT {CELL_COLUMNS} FROM fleet.cells c ORDER BY c.id");
            let rows = c.query(&sql, &[]).await.map_err(db_err)?;
            rows.iter().map(cell_of).collect()
        })
        .await
    }

    /// One cell.
    pub async fn cell(&self, id: u32) -> Result<CellRecord, StoreError> {
        self.call(|c| async move {
            let sql = format!("SELECT {CELL_COLUMNS} FROM fleet.cells c WHERE c.id = $1");
            let row = c
                .query_opt(&sql, &[&(id as i32)])
                .await
                .map_err(db_err)?
                .ok_or_else(|| StoreError::NotFound(format!("no cell {id}")))?;
            cell_of(&row)
        })
        .await
    }

    /// Moves a cell to `to` if it is in one of `from`; Conflict otherwise.
    /// Retiring needs the cell empty: no tenant homed there and no move in
    /// flight to or from it.
    pub async fn set_cell_state(
        &self,
        id: u32,
        from: &[CellLifecycle],
        to: CellLifecycle,
        now: u64,
    ) -> Result<CellRecord, StoreError> {
        let from: Vec<String> = from.iter().map(|s| s.as_str().to_string()).collect();
        self.call(|mut c| async move {
            let tx = c.transaction().await.map_err(db_err)?;
            let row = tx
                .query_opt(
                    "SELECT state FROM fleet.cells WHERE id = $1 FOR UPDATE",
                    &[&(id as i32)],
                )
                .await
                .map_err(db_err)?
                .ok_or_else(|| StoreError::NotFound(format!("no cell {id}")))?;
            let state: String = row.get(0);
            if state == to.as_str() {
                return Ok(());
            }
            if !from.contains(&state) {
                return Err(StoreError::Conflict(format!(
                    "cell {id} is {state}; only a cell that is {} can become {}",
                    from.join(" or "),
                    to.as_str()
                )));
            }
            if to == CellLifecycle::Retired {
                let row = tx
                    .query_one(
                        "SELECT (SELECT count(*) FROM fleet.tenants WHERE cell = $1), \
                         (SELECT count(*) FROM fleet.moves WHERE state IN ('planned', 'running') \
                          AND (from_cell = $1 OR to_cell = $1))",
                        &[&(id as i32)],
                    )
                    .await
                    .map_err(db_err)?;
                let (tenants, moves): (i64, i64) = (row.get(0), row.get(1));
                if tenants > 0 || moves > 0 {
                    return Err(StoreError::Conflict(format!(
                        "cell {id} still homes {tenants} tenant(s) and has {moves} move(s) in \
                         flight: drain it first"
                    )));
                }
            }
            tx.execute(
                "UPDATE fleet.cells SET state = $2, updated_unix = $3 WHERE id = $1",
                &[&(id as i32), &to.as_str(), &i64_of(now)],
            )
            .await
            .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            Ok(())
        })
        .await?;
        self.cell(id).await
    }

    /// Records a placed tenant, not yet created on its cell (`on_cell`
    /// false: see [`FleetStore::set_on_cell`]). Conflict if the name or
    /// hostname is taken.
    pub async fn add_tenant(&self, t: &NewTenant, now: u64) -> Result<TenantRecord, StoreError> {
        let t = t.clone();
        self.call(|c| async move {
            let demand: Vec<i64> = t.demand.0.iter().map(|&x| i64_of(x)).collect();
            let rules = serde_json::to_string(&t.rules).unwrap_or_else(|_| "{}".into());
            let quota = serde_json::to_string(&t.quota).unwrap_or_else(|_| "{}".into());
            let sql = format!(
                "INSERT INTO fleet.tenants \
                 (name, cell, hostname, demand, rules, created_unix, on_cell, quota) \
                 VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, false, $7::text::jsonb) \
                 RETURNING {TENANT_COLUMNS}"
            );
            let row = c
                .query_one(
                    &sql,
                    &[
                        &t.name,
                        &(t.cell as i32),
                        &t.hostname,
                        &demand,
                        &rules,
                        &i64_of(now),
                        &quota,
                    ],
                )
                .await
                .map_err(|e| match db_err(e) {
                    StoreError::Conflict(_) => StoreError::Conflict(format!(
                        "tenant {} (or its hostname) is placed already",
                        t.name
                    )),
                    other => other,
                })?;
            tenant_of(&row)
        })
        .await
    }

    /// Records that tenant `name`'s cell has created it: from now on it is
    /// routed. Idempotent.
    pub async fn set_on_cell(&self, name: &str) -> Result<TenantRecord, StoreError> {
        let name = name.to_string();
        self.call(|c| async move {
            let sql = format!(
                "UPDATE fleet.tenants SET on_cell = true WHERE name = $1 RETURNING {TENANT_COLUMNS}"
            );
            let row = c
                .query_opt(&sql, &[&name])
                .await
                .map_err(db_err)?
                .ok_or_else(|| StoreError::NotFound(format!("no tenant {name}")))?;
            tenant_of(&row)
        })
        .await
    }

    /// Forgets a placement its cell refused: only while the tenant is not
    /// on its cell (so never one that was routed). Whether it was removed.
    pub async fn drop_placement(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.call(|c| async move {
            let n = c
                .execute(
                    "DELETE FROM fleet.tenants WHERE name = $1 AND NOT on_cell \
                     AND NOT EXISTS (SELECT 1 FROM fleet.moves m WHERE m.tenant = $1)",
                    &[&name],
                )
                .await
                .map_err(db_err)?;
            Ok(n == 1)
        })
        .await
    }

    /// Every tenant, by name.
    pub async fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        self.call(|c| async move {
            let sql = format!("SELECT {TENANT_COLUMNS} FROM fleet.tenants ORDER BY name");
            let rows = c.query(&sql, &[]).await.map_err(db_err)?;
            rows.iter().map(tenant_of).collect()
        })
        .await
    }

    /// One tenant.
    pub async fn tenant(&self, name: &str) -> Result<TenantRecord, StoreError> {
        let name = name.to_string();
        self.call(|c| async move {
            let sql = format!("SELECT {TENANT_COLUMNS} FROM fleet.tenants WHERE name = $1");
            let row = c
                .query_opt(&sql, &[&name])
                .await
                .map_err(db_err)?
                .ok_or_else(|| StoreError::NotFound(format!("no tenant {name}")))?;
            tenant_of(&row)
        })
        .await
    }

    /// Records moves (all or none). Conflict if a tenant already has one in
    /// flight or is no longer homed on the move's source.
    pub async fn add_moves(&self, moves: &[NewMove], now: u64) -> Result<Vec<i64>, StoreError> {
        let moves = moves.to_vec();
        self.call(|mut c| async move {
            let tx = c.transaction().await.map_err(db_err)?;
            let mut ids = Vec::with_capacity(moves.len());
            for m in &moves {
                let row = tx
                    .query_opt(
                        "SELECT cell FROM fleet.tenants WHERE name = $1 FOR UPDATE",
                        &[&m.tenant],
                    )
                    .await
                    .map_err(db_err)?
                    .ok_or_else(|| StoreError::NotFound(format!("no tenant {}", m.tenant)))?;
                let home: i32 = row.get(0);
                if home as u32 != m.from {
                    return Err(StoreError::Conflict(format!(
                        "tenant {} lives in cell {home}, not {}",
                        m.tenant, m.from
                    )));
                }
                let row = tx
                    .query_one(
                        "INSERT INTO fleet.moves (tenant, from_cell, to_cell, state, step, \
                         counters, reason, started_unix, updated_unix, step_since_unix) \
                         VALUES ($1, $2, $3, 'planned', 'planned', '{}', $4, $5, $5, $5) \
                         RETURNING id",
                        &[
                            &m.tenant,
                            &(m.from as i32),
                            &(m.to as i32),
                            &m.reason,
                            &i64_of(now),
                        ],
                    )
                    .await
                    .map_err(|e| match db_err(e) {
                        StoreError::Conflict(_) => StoreError::Conflict(format!(
                            "tenant {} already has a move in flight",
                            m.tenant
                        )),
                        other => other,
                    })?;
                ids.push(row.get(0));
            }
            tx.commit().await.map_err(db_err)?;
            Ok(ids)
        })
        .await
    }

    /// Moves, newest first; only those in `states` when given, at most
    /// `limit`.
    pub async fn moves(
        &self,
        states: Option<&[MoveState]>,
        limit: i64,
    ) -> Result<Vec<MoveRecord>, StoreError> {
        let states: Vec<String> = states
            .unwrap_or(&MoveState::ALL)
            .iter()
            .map(|s| s.as_str().to_string())
            .collect();
        self.call(|c| async move {
            let sql = format!(
                "SELECT {MOVE_COLUMNS} FROM fleet.moves WHERE state = ANY($1) \
                 ORDER BY id DESC LIMIT $2"
            );
            let rows = c.query(&sql, &[&states, &limit]).await.map_err(db_err)?;
            rows.iter().map(move_of).collect()
        })
        .await
    }

    /// How many moves are in each state.
    pub async fn move_counts(&self) -> Result<Vec<(MoveState, u64)>, StoreError> {
        self.call(|c| async move {
            let rows = c
                .query(
                    "SELECT state, count(*) FROM fleet.moves GROUP BY state",
                    &[],
                )
                .await
                .map_err(db_err)?;
            let mut out: Vec<(MoveState, u64)> = MoveState::ALL.iter().map(|&s| (s, 0)).collect();
            for r in rows {
                let s = MoveState::parse(r.get(0))?;
                let n: i64 = r.get(1);
                if let Some(e) = out.iter_mut().find(|(k, _)| *k == s) {
                    e.1 = u64_of(n);
                }
            }
            Ok(out)
        })
        .await
    }

    /// One move.
    pub async fn get_move(&self, id: i64) -> Result<MoveRecord, StoreError> {
        self.call(|c| async move {
            let sql = format!("SELECT {MOVE_COLUMNS} FROM fleet.moves WHERE id = $1");
            let row = c
                .query_opt(&sql, &[&id])
                .await
                .map_err(db_err)?
                .ok_or_else(|| StoreError::NotFound(format!("no move {id}")))?;
            move_of(&row)
        })
        .await
    }

    /// Changes a move that is still in flight; Conflict once it has ended
    /// (a cancelled move's executor learns so here).
    pub async fn update_move(
        &self,
        id: i64,
        u: &MoveUpdate,
        now: u64,
    ) -> Result<MoveRecord, StoreError> {
        let u = u.clone();
        self.call(|mut c| async move {
            let tx = c.transaction().await.map_err(db_err)?;
            let row = tx
                .query_opt(
                    "SELECT state FROM fleet.moves WHERE id = $1 FOR UPDATE",
                    &[&id],
                )
                .await
                .map_err(db_err)?
                .ok_or_else(|| StoreError::NotFound(format!("no move {id}")))?;
            let state = MoveState::parse(row.get(0))?;
            if !state.in_flight() {
                return Err(StoreError::Conflict(format!(
                    "move {id} is {} already",
                    state.as_str()
                )));
            }
            let counters = u.counters.as_ref().map(|v| v.to_string());
            let sql = format!(
                "UPDATE fleet.moves SET \
                   state = coalesce($2, state), \
                   step_since_unix = CASE WHEN $3::text IS NOT NULL AND $3::text <> step \
                                          THEN $6 ELSE step_since_unix END, \
                   step = coalesce($3, step), \
                   counters = coalesce($4::text::jsonb, counters), \
                   error = coalesce($5, error), \
                   updated_unix = $6, \
                   fence_start_unix = CASE WHEN $7 THEN $6 ELSE fence_start_unix END, \
                   fence_end_unix = CASE WHEN $8 THEN $6 WHEN $7 THEN NULL \
                                         ELSE fence_end_unix END \
                 WHERE id = $1 RETURNING {MOVE_COLUMNS}"
            );
            let row = tx
                .query_one(
                    &sql,
                    &[
                        &id,
                        &u.state.map(|s| s.as_str()),
                        &u.step,
                        &counters,
                        &u.error,
                        &i64_of(now),
                        &u.fence_start,
                        &u.fence_end,
                    ],
                )
                .await
                .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            move_of(&row)
        })
        .await
    }

    /// The route flip of a move in flight: the tenant's home becomes the
    /// destination and the step `flipped`, in one transaction. Conflict if
    /// the move is not in flight.
    pub async fn flip_move(&self, id: i64, now: u64) -> Result<MoveRecord, StoreError> {
        self.call(|mut c| async move {
            let tx = c.transaction().await.map_err(db_err)?;
            let row = tx
                .query_opt(
                    "SELECT state, tenant, to_cell FROM fleet.moves WHERE id = $1 FOR UPDATE",
                    &[&id],
                )
                .await
                .map_err(db_err)?
                .ok_or_else(|| StoreError::NotFound(format!("no move {id}")))?;
            let state = MoveState::parse(row.get(0))?;
            if !state.in_flight() {
                return Err(StoreError::Conflict(format!(
                    "move {id} is {} already",
                    state.as_str()
                )));
            }
            let tenant: String = row.get(1);
            let to: i32 = row.get(2);
            tx.execute(
                "UPDATE fleet.tenants SET cell = $2 WHERE name = $1",
                &[&tenant, &to],
            )
            .await
            .map_err(db_err)?;
            let sql = format!(
                "UPDATE fleet.moves SET step = 'flipped', updated_unix = $2, \
                 step_since_unix = $2 WHERE id = $1 RETURNING {MOVE_COLUMNS}"
            );
            let row = tx
                .query_one(&sql, &[&id, &i64_of(now)])
                .await
                .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            move_of(&row)
        })
        .await
    }

    /// Records the rollback step of a cancelled move (`rolling-back`,
    /// `rolled-back`); a move in any other state is left alone.
    pub async fn set_cancelled_step(
        &self,
        id: i64,
        step: &str,
        now: u64,
    ) -> Result<(), StoreError> {
        let step = step.to_string();
        self.call(|c| async move {
            c.execute(
                "UPDATE fleet.moves SET step = $2, updated_unix = $3, step_since_unix = $3 \
                 WHERE id = $1 AND state = 'cancelled'",
                &[&id, &step, &i64_of(now)],
            )
            .await
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    /// Cancels a move in flight whose route has not flipped; Conflict
    /// otherwise.
    pub async fn cancel_move(&self, id: i64, now: u64) -> Result<MoveRecord, StoreError> {
        self.call(|mut c| async move {
            let tx = c.transaction().await.map_err(db_err)?;
            let row = tx
                .query_opt(
                    "SELECT m.state, t.cell = m.to_cell FROM fleet.moves m \
                     JOIN fleet.tenants t ON t.name = m.tenant WHERE m.id = $1 FOR UPDATE",
                    &[&id],
                )
                .await
                .map_err(db_err)?
                .ok_or_else(|| StoreError::NotFound(format!("no move {id}")))?;
            let state = MoveState::parse(row.get(0))?;
            let flipped: bool = row.get(1);
            if !state.in_flight() {
                return Err(StoreError::Conflict(format!(
                    "move {id} is {} already",
                    state.as_str()
                )));
            }
            if flipped {
                return Err(StoreError::Conflict(format!(
                    "move {id} has flipped its route already; it can only finish"
                )));
            }
            let sql = format!(
                "UPDATE fleet.moves SET state = 'cancelled', updated_unix = $2 \
                 WHERE id = $1 RETURNING {MOVE_COLUMNS}"
            );
            let row = tx
                .query_one(&sql, &[&id, &i64_of(now)])
                .await
                .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            move_of(&row)
        })
        .await
    }

    /// Records a decision.
    pub async fn record_decision(
        &self,
        kind: &str,
        subject: &str,
        reason: &str,
        detail: &serde_json::Value,
        now: u64,
    ) -> Result<i64, StoreError> {
        let (kind, subject, reason) = (kind.to_string(), subject.to_string(), reason.to_string());
        let detail = detail.to_string();
        self.call(|c| async move {
            let row = c
                .query_one(
                    "INSERT INTO fleet.decisions (at_unix, kind, subject, reason, detail) \
                     VALUES ($1, $2, $3, $4, $5::text::jsonb) RETURNING id",
                    &[&i64_of(now), &kind, &subject, &reason, &detail],
                )
                .await
                .map_err(db_err)?;
            Ok(row.get(0))
        })
        .await
    }

    /// The most recent decisions, newest first.
    pub async fn decisions(&self, limit: i64) -> Result<Vec<DecisionRecord>, StoreError> {
        self.call(|c| async move {
            let rows = c
                .query(
                    "SELECT id, at_unix, kind, subject, reason, detail::text FROM fleet.decisions \
                     ORDER BY at_unix DESC, id DESC LIMIT $1",
                    &[&limit],
                )
                .await
                .map_err(db_err)?;
            Ok(rows
                .iter()
                .map(|r| {
                    let detail: String = r.get(5);
                    DecisionRecord {
                        id: r.get(0),
                        at_unix: u64_of(r.get(1)),
                        kind: r.get(2),
                        subject: r.get(3),
                        reason: r.get(4),
                        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                    }
                })
                .collect())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_up_to_the_schema_version() {
        for (i, (v, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*v, i as i32 + 1);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.0), Some(SCHEMA_VERSION));
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for s in MoveState::ALL {
            assert_eq!(MoveState::parse(s.as_str()).unwrap(), s);
        }
        for s in [
            CellLifecycle::Active,
            CellLifecycle::Draining,
            CellLifecycle::Retired,
        ] {
            assert_eq!(CellLifecycle::parse(s.as_str()).unwrap(), s);
        }
        assert!(MoveState::parse("lost").is_err());
        assert!(MoveState::Planned.in_flight() && MoveState::Running.in_flight());
        assert!(!MoveState::Done.in_flight());
    }

    #[test]
    fn config_debug_hides_the_url() {
        let c = StoreConfig {
            url: "postgres://u:secret@h/db".into(),
            pool_size: 2,
            connect_timeout: Duration::from_secs(1),
            statement_timeout: Duration::from_secs(1),
        };
        assert!(!format!("{c:?}").contains("secret"));
    }
}
