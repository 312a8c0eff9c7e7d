//! The Wharf fleet service (`wharf fleet serve`): the control plane that
//! places tenants on cells, watches the cells fill, plans moves, and keeps
//! the router's maps, around `wharf_fleet`'s pure placement engine.
//!
//! # Layout
//!
//! Dependencies point down this list; `wharf_fleet` (all placement,
//! scoring, planning and plan checking) is below them all and knows
//! nothing of HTTP, SQL or clocks.
//!
//! - [`api`]: the fleet admin API (`/fleet/v1/…`, `docs/fleet-api.yaml`)
//!   and the `/metrics` route. Owns routes, the admin token check, bodies
//!   and the error envelope; must never decide anything: one service call
//!   per handler.
//! - [`metrics`]: the service's own metrics page. Owns rendering; must
//!   never change state or fail when the database is down.
//! - [`service`]: [`Fleetd`] and [`serve`]: the scrape / route / rebalance
//!   loop and every decision, each under one lock, by `wharf_fleet`, and
//!   recorded with its reason. Must never re-implement a placement rule or
//!   sit on the data path (the registry serves without it).
//! - [`executor`]: the [`MoveExecutor`] hook a tenant move's data copy
//!   plugs into, and its contract. Must never decide where a tenant goes.
//! - [`mover`]: [`mover::HttpMover`], the executor that copies a tenant
//!   through the nodes' admin APIs (export, blobs, import), fences it,
//!   checks both copies and removes the source after the grace period.
//!   Must never decide where a tenant goes or flip a route itself.
//! - [`provision`]: [`provision::Provisioner`], which creates a placed
//!   tenant on its cell through a node's admin API. Must never decide
//!   where a tenant goes, or record or route anything.
//! - [`view`]: stored state plus readings as a `wharf_fleet::Fleet`. Must
//!   never decide or do I/O.
//! - [`scrape`]: each cell's real use from its nodes' `/metrics`, with a
//!   bounded client per cell. Must never report an unread cell as idle.
//! - [`prom`]: a small reader of the Prometheus text format. Must never
//!   accept a malformed line silently.
//! - [`router`]: the HAProxy map files and runtime API. Must never decide a
//!   route or stall the service on an HAProxy that does not answer.
//! - [`store`]: the fleet's own PostgreSQL database, its migrations and
//!   bounded pool. Must never decide anything, or be needed by a node.
//!
//! Statically stable: if this process is down, nodes keep serving and the
//! router keeps its last maps; only placement, moves and the view of use
//! wait for it to come back.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod executor;
pub mod metrics;
pub mod mover;
pub mod prom;
pub mod provision;
pub mod router;
pub mod scrape;
pub mod service;
pub mod store;
pub mod view;

pub use executor::{CellEndpoints, MoveAborted, MoveControl, MoveExecutor, MoveTask};
pub use service::{serve, Fleetd, ServiceConfig, ServiceError};
pub use store::{FleetStore, StoreConfig, StoreError};
