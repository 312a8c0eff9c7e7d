//! Wharf's fleet logic: which cell each tenant registry and control-plane
//! component lives in, how to move them when cells fill, and a simulator
//! that drives the same code through time.
//!
//! Owns, one module each:
//! - [`model`]: cells, placeables, where each one is, the policy;
//! - [`place`]: hard-rule filters, the score, refusals that explain;
//! - [`plan`]: rebalance and drain plans in steps, and the applier that
//!   re-checks every step;
//! - [`alert`]: alert records (warning before the threshold, critical at it);
//! - [`sim`]: a deterministic simulation from one seed, with the incident
//!   replay;
//! - [`report`]: writes a simulation's markdown report and PNG plots.
//!
//! Must never: relax a hard rule to make something fit, depend on wall-clock
//! time or ambient randomness (time and seeds are inputs), or do I/O outside
//! [`report`]. Everything but the report writer is pure, synchronous and
//! deterministic: the same input gives the same output.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod alert;
pub mod model;
pub mod place;
pub mod plan;
pub mod report;
pub mod sim;

pub use alert::{utilisation_alerts, Alert, Severity};
pub use model::{
    AntiAffinity, Cell, CellId, CellState, Dimension, Fleet, Kind, Load, Location, Placeable,
    PlaceableId, Policy, Scope, ZoneId, DIMS,
};
pub use place::{filter, place, Placement, Reason, Refusal, Rejection};
pub use plan::{apply, apply_step, drain, rebalance, Move, NoPlan, Plan, Step, Violation};
