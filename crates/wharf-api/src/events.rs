//! Event notifications from the registry port (docs/notifications.md):
//! which requests make events, what each carries, and handing them to the
//! node's [`wharf_notify::Notifier`] once the response is made.
//!
//! A manifest `PUT` makes a `manifest.push` (and a `tag.move` after it
//! when a push by tag moved the tag from another manifest); a `DELETE` by
//! digest a `manifest.delete`, by tag a `tag.delete`; a manifest `GET`
//! (not `HEAD`) a `manifest.pull`, only when an endpoint asked for pulls.
//! Each goes to the node's endpoints and to the endpoints of the tenant
//! whose repository it names, and to no other tenant's.
//!
//! Owns: [`Pending`] (the events a handler attaches to its response),
//! whether anyone listens ([`listening`]), the actor of an event (the
//! caller as authentication verified it, classified by the tenant
//! directory), and [`send`], which `answer` calls on every response.
//!
//! Must never: make a request slower or fail because of an event. The
//! only extra work on a request's path is a metadata read that describes
//! an event (the manifest a tag pointed at before a push; what a delete
//! removes), made only when some endpoint listens to the tenant and
//! ignored when it fails; the events are queued with `try_send` after the
//! response is made, and only for a success. Nor may it describe an event
//! from anything but what the registry did: an event is attached only
//! once the registry call has succeeded.
//!
//! Not atomic: the tag read before a push and the push are two metadata
//! calls, so two pushes racing on one tag may both report the same
//! previous manifest (as with immutable tags, `wharf_registry::immutable`).

use std::sync::Arc;

use axum::response::Response;
use wharf_core::{Reference, RepoName};
use wharf_notify::{Action, Actor, ActorKind, Event, Target};
use wharf_tenants::SubjectStatus;

use crate::{AppState, Req};

/// Events a handler made, in its response's extensions until [`send`].
#[derive(Clone, Debug)]
pub(crate) struct Pending(pub Vec<Event>);

/// `repo`'s tenant's endpoints.
fn tenant_targets(state: &AppState, tenant: &str) -> Option<Arc<[Arc<Target>]>> {
    state.directory.as_ref()?.notify_targets(tenant)
}

/// Whether an event of `action` in `repo` would go anywhere: the caller
/// makes it (and reads what it needs for it) only then.
pub(crate) fn listening(state: &AppState, repo: &RepoName, action: Action) -> bool {
    let Some(notifier) = &state.notifier else {
        return false;
    };
    let targets = tenant_targets(state, repo.namespace());
    notifier.wants(action, targets.as_deref().unwrap_or_default())
}

/// Who sent `req`, for an event.
fn actor(state: &AppState, req: &Req) -> Actor {
    let Some(subject) = &req.caller.subject else {
        return Actor::anonymous();
    };
    let in_directory = state.directory.as_ref().is_some_and(|d| {
        d.subject_active(subject, wharf_core::now_unix()) != SubjectStatus::NotInDirectory
    });
    let kind = match in_directory {
        true if subject.contains(wharf_tenants::validate::ROBOT_SEPARATOR) => ActorKind::Robot,
        true => ActorKind::User,
        // Authenticated, and not one of the tenants' accounts: the
        // operator's own (htpasswd).
        false => ActorKind::Operator,
    };
    Actor {
        kind,
        name: Some(subject.clone()),
    }
}

/// A new event of `action` in `repo` for `req`, by `reference` (its tag
/// filled in when it is one).
pub(crate) fn event(
    state: &AppState,
    req: &Req,
    action: Action,
    repo: &RepoName,
    reference: &Reference,
) -> Event {
    let node = state.notifier.as_ref().map_or("", |n| n.node());
    let mut e = Event::new(
        action,
        repo.as_str(),
        actor(state, req),
        req.request_id.clone(),
        node,
    );
    if let Reference::Tag(t) = reference {
        e.tag = Some(t.to_string());
    }
    e
}

/// Attaches `events` to `resp`, for [`send`].
pub(crate) fn attach(resp: &mut Response, events: Vec<Event>) {
    if !events.is_empty() {
        resp.extensions_mut().insert(Pending(events));
    }
}

/// Queues the events attached to `response` if it is a success (and
/// removes them either way). Never waits.
pub(crate) fn send(state: &AppState, response: &mut Response) {
    let Some(Pending(events)) = response.extensions_mut().remove::<Pending>() else {
        return;
    };
    let Some(notifier) = &state.notifier else {
        return;
    };
    if !response.status().is_success() {
        return;
    }
    for e in &events {
        let targets = tenant_targets(state, &e.tenant);
        notifier.notify(e, targets.as_deref().unwrap_or_default());
    }
}
