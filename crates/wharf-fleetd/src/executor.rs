//! The hook a tenant move's data copy plugs into: [`MoveExecutor`].
//!
//! The service decides moves (through `wharf_fleet`'s planner and applier)
//! and records them `planned`. An executor, when one is configured, is
//! handed each planned move once, as a [`MoveTask`], with a
//! [`MoveControl`] through which it reports and through which the service
//! keeps what it owns (the move's record, the tenant's home, the routes).
//!
//! The contract, in order:
//!
//! 1. the service marks the move `running` (step `started`) and calls
//!    [`MoveExecutor::execute`] once, on its own task;
//! 2. the executor copies (pre-copy, deltas) through the nodes' admin APIs,
//!    reporting with [`MoveControl::step`] (a step name and its counters);
//!    every report also says whether the move was cancelled meanwhile
//!    ([`MoveAborted::Cancelled`]): the executor then undoes what it did
//!    (lowers a fence it raised) and returns;
//! 3. it raises the tenant's write fence on the source and says so
//!    ([`MoveControl::fence_up`]), copies the last delta, then calls
//!    [`MoveControl::flip_route`] exactly once: the service makes the
//!    destination the tenant's home and pushes the route to HAProxy; from
//!    then on the move can no longer be cancelled;
//! 4. it lowers the fence ([`MoveControl::fence_down`]), keeps reads on the
//!    old cell for its grace period, and returns `Ok(())`: the service
//!    marks the move `done`. An `Err` marks it `failed` with that message
//!    (before the flip the tenant stays home; after it, at the
//!    destination).
//!
//! A move left `running` by a service that stopped is handed to the
//! executor again when the service starts (with [`MoveTask::flipped`]
//! saying whether its route had flipped, and [`MoveControl::fence_recorded`]
//! whether its fence was up), and a cancelled move nobody was
//! running is handed to [`MoveExecutor::roll_back`]; both must therefore be
//! idempotent.
//!
//! Owns: that contract. Must never: decide where a tenant goes, or write
//! the fleet's state except through [`MoveControl`].

use std::sync::Arc;

use async_trait::async_trait;

use crate::service::Fleetd;
use crate::store::{MoveState, MoveUpdate, StoreError};

/// One end of a move: a cell and its nodes' admin URLs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CellEndpoints {
    /// The cell's id.
    pub id: u32,
    /// Its nodes' admin base URLs.
    pub nodes: Vec<String>,
}

/// A move handed to an executor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoveTask {
    /// The move's id (`wharf fleet moves show ID`).
    pub id: i64,
    /// The tenant moved.
    pub tenant: String,
    /// Its own hostname, if it has one.
    pub hostname: Option<String>,
    /// The cell it leaves.
    pub from: CellEndpoints,
    /// The cell it goes to.
    pub to: CellEndpoints,
    /// Whether its route has flipped already: a move resumed after a
    /// restart of the service then only finishes (grace, source removal).
    pub flipped: bool,
}

/// Why an executor must stop.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoveAborted {
    /// An operator cancelled the move.
    #[error("the move was cancelled")]
    Cancelled,
    /// The fleet's database could not record the report.
    #[error("{0}")]
    Store(String),
}

impl From<StoreError> for MoveAborted {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(_) => MoveAborted::Cancelled,
            other => MoveAborted::Store(other.to_string()),
        }
    }
}

/// Copies a tenant from one cell to another (see the module doc for the
/// contract).
#[async_trait]
pub trait MoveExecutor: Send + Sync + 'static {
    /// Runs one move to its end. `Ok(())`: done (after
    /// [`MoveControl::flip_route`]); `Err(why)`: failed.
    async fn execute(&self, task: MoveTask, control: MoveControl) -> Result<(), String>;

    /// Undoes what a cancelled move left behind (a fence on the source, a
    /// partial copy on the destination), when no `execute` of it is
    /// running in this process to see the cancellation: after the service
    /// restarted. Called until it returns `Ok`. The default has nothing to
    /// undo.
    async fn roll_back(&self, task: MoveTask) -> Result<(), String> {
        let _ = task;
        Ok(())
    }
}

/// The executor's line back to the service, for one move.
#[derive(Clone)]
pub struct MoveControl {
    pub(crate) fleetd: Arc<Fleetd>,
    pub(crate) id: i64,
}

impl MoveControl {
    async fn update(&self, u: MoveUpdate) -> Result<(), MoveAborted> {
        let now = self.fleetd.now();
        let m = self.fleetd.store().update_move(self.id, &u, now).await?;
        if m.state == MoveState::Cancelled {
            return Err(MoveAborted::Cancelled);
        }
        Ok(())
    }

    /// Reports the current step (`copy`, `delta`, …) and its counters.
    pub async fn step(&self, step: &str, counters: serde_json::Value) -> Result<(), MoveAborted> {
        self.update(MoveUpdate {
            step: Some(step.to_string()),
            counters: Some(counters),
            ..MoveUpdate::default()
        })
        .await
    }

    /// Reports that the tenant's write fence is up on the source.
    pub async fn fence_up(&self) -> Result<(), MoveAborted> {
        self.update(MoveUpdate {
            step: Some("fenced".into()),
            fence_start: true,
            ..MoveUpdate::default()
        })
        .await
    }

    /// When the tenant's write fence went up (unix seconds), if the move's
    /// record says it is up ([`MoveControl::fence_up`] and no
    /// [`MoveControl::fence_down`] since): a move resumed after a restart
    /// of the service in its fenced state.
    pub async fn fence_recorded(&self) -> Result<Option<u64>, MoveAborted> {
        let m = self.fleetd.store().get_move(self.id).await?;
        if m.state == MoveState::Cancelled {
            return Err(MoveAborted::Cancelled);
        }
        Ok(m.fence_start_unix.filter(|_| m.fence_end_unix.is_none()))
    }

    /// Reports that the fence is down again.
    pub async fn fence_down(&self) -> Result<(), MoveAborted> {
        self.update(MoveUpdate {
            fence_end: true,
            ..MoveUpdate::default()
        })
        .await
    }

    /// Makes the destination the tenant's home and routes its traffic
    /// there. Once this returns `Ok`, the move cannot be cancelled.
    pub async fn flip_route(&self) -> Result<(), MoveAborted> {
        self.fleetd.flip_move(self.id).await
    }
}
