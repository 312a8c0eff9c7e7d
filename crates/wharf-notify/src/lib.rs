//! Event notifications: what happened to a manifest or a tag, sent as a
//! signed JSON document to the webhook endpoints an operator (for the
//! whole node) or a tenant's configuration (for that tenant) names
//! (docs/notifications.md).
//!
//! Owns:
//!
//! - [`event`]: the event schema ([`Event`], [`Action`], [`Actor`]) and
//!   the envelope a delivery carries (`{"events": [...]}`), times as
//!   RFC 3339.
//! - [`sign`]: the `X-Wharf-Signature` HMAC-SHA256 over the timestamp and
//!   the body, with the endpoint's secret, and its verification.
//! - [`target`]: an endpoint ([`Target`]: id, URL, secret, whether it
//!   wants pulls), the grammar of endpoint ids, URLs and secrets, and
//!   secret generation.
//! - [`Notifier`]: one bounded queue and one delivery task per endpoint,
//!   retries with exponential back-off (bounded attempts and age), a
//!   timeout per delivery, and the `wharf_notify_*` metrics.
//!
//! Must never: make the request that caused an event wait or fail
//! ([`Notifier::notify`] only serializes the event once and `try_send`s
//! it to each endpoint's queue: a full queue drops the event and counts
//! it, it never blocks); let one endpoint's slowness or failure delay
//! another's deliveries (each has its own queue and task); follow a
//! redirect (it would carry a signed body elsewhere); put a secret in a
//! log line, a metric, an error or `Debug`, or an endpoint URL in a
//! metric label (labels are endpoint ids, a bounded set); or know about
//! tenants, HTTP routes or the registry (the API layer says what
//! happened, to whom it matters, and hands over the endpoints).
//!
//! Guarantees are those of a best-effort sender: each event goes to each
//! endpoint at most [`NotifyConfig::max_attempts`] times, in the order it
//! was queued, and is given up once older than [`NotifyConfig::max_age`];
//! events queued when the process stops are lost.

#![forbid(unsafe_code)]

pub mod event;
mod metrics;
mod notifier;
pub mod public;
pub mod sign;
pub mod target;

pub use event::{Action, Actor, ActorKind, Event};
pub use notifier::{EndpointStats, Notifier, NotifyConfig};
pub use target::{Secret, Target};
