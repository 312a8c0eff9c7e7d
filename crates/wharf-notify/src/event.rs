//! The event schema (docs/notifications.md, "The event"): one JSON object
//! per thing that happened, sent in an envelope `{"events": [event]}`.
//!
//! Owns: [`Event`] and its fields' names and meanings, [`Action`] (the
//! fixed set of what can happen), [`Actor`] (who did it), the envelope
//! ([`Event::body`]) and its media type ([`MEDIA_TYPE`]), and the RFC 3339
//! form of times ([`rfc3339_millis`]).
//!
//! Must never: carry a credential (an actor is a name and a kind), or
//! change a field's name or meaning within version 1 of the media type:
//! receivers rely on them. New fields may be added; receivers are told to
//! ignore the ones they do not know.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;

/// The `Content-Type` of a delivery.
pub const MEDIA_TYPE: &str = "application/vnd.wharf.events.v1+json";

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Action {
    /// A manifest was stored (by digest, or by tag: then `tag` is set).
    /// Sent for every successful `PUT`, a re-push of the same manifest
    /// included.
    #[serde(rename = "manifest.push")]
    ManifestPush,
    /// A push by tag moved the tag from another manifest
    /// (`previous_digest`) to this one; sent after that push's
    /// [`Action::ManifestPush`].
    #[serde(rename = "tag.move")]
    TagMove,
    /// A manifest was deleted by digest (with every tag pointing at it).
    #[serde(rename = "manifest.delete")]
    ManifestDelete,
    /// A tag was deleted (the manifest stays).
    #[serde(rename = "tag.delete")]
    TagDelete,
    /// A manifest was pulled (`GET`, not `HEAD`); only to endpoints that
    /// asked for pulls.
    #[serde(rename = "manifest.pull")]
    ManifestPull,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::ManifestPush,
        Action::TagMove,
        Action::ManifestDelete,
        Action::TagDelete,
        Action::ManifestPull,
    ];

    /// The name in events (`manifest.push`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ManifestPush => "manifest.push",
            Action::TagMove => "tag.move",
            Action::ManifestDelete => "manifest.delete",
            Action::TagDelete => "tag.delete",
            Action::ManifestPull => "manifest.pull",
        }
    }

    /// Whether only endpoints that asked for pulls get it.
    pub fn is_pull(self) -> bool {
        self == Action::ManifestPull
    }
}

/// What kind of caller did it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    /// A tenant's user (of the tenant directory).
    User,
    /// A tenant's robot account (`tenant+name`).
    Robot,
    /// One of the operator's own accounts (the htpasswd file).
    Operator,
    /// No credentials: anonymous pulls, or a node without authentication.
    Anonymous,
}

/// Who did it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Actor {
    pub kind: ActorKind,
    /// The user or robot name; `null` for [`ActorKind::Anonymous`].
    pub name: Option<String>,
}

impl Actor {
    pub fn anonymous() -> Actor {
        Actor {
            kind: ActorKind::Anonymous,
            name: None,
        }
    }
}

/// One event. Every field is always present (`null` when it does not
/// apply or is not known), in this order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Unique per event (a UUID); a receiver that sees it twice (a
    /// delivery retried after the receiver had in fact taken it) can drop
    /// the second.
    pub id: String,
    pub action: Action,
    /// When it happened, RFC 3339 in UTC with milliseconds.
    pub time: String,
    /// The tenant: the repository's first path component (its namespace).
    pub tenant: String,
    /// The repository, `tenant/…`.
    pub repository: String,
    /// The manifest's digest; for `tag.delete`, the manifest the tag
    /// pointed at (`null` if that could not be read before the delete).
    pub digest: Option<String>,
    /// The tag pushed, moved, deleted or pulled by; `null` for a push,
    /// pull or delete by digest.
    pub tag: Option<String>,
    /// `tag.move` only: the manifest the tag pointed at before.
    pub previous_digest: Option<String>,
    /// The manifest's media type (`null` when a delete could not read it).
    pub media_type: Option<String>,
    /// The manifest's size in bytes (`null` likewise).
    pub size: Option<u64>,
    pub actor: Actor,
    /// The request's `X-Request-Id` (as in the access log).
    pub request_id: Option<String>,
    /// The node that served the request (`--node-name`).
    pub node: String,
}

impl Event {
    /// An event of `action` on `repository` (`tenant/…`) happening now,
    /// with a new id; the manifest fields are left for the caller.
    pub fn new(
        action: Action,
        repository: &str,
        actor: Actor,
        request_id: Option<String>,
        node: &str,
    ) -> Event {
        let tenant = repository
            .split_once('/')
            .map_or(repository, |(t, _)| t)
            .to_string();
        Event {
            id: uuid::Uuid::new_v4().to_string(),
            action,
            time: rfc3339_millis(SystemTime::now()),
            tenant,
            repository: repository.to_string(),
            digest: None,
            tag: None,
            previous_digest: None,
            media_type: None,
            size: None,
            actor,
            request_id,
            node: node.to_string(),
        }
    }

    /// The body of a delivery of this event: `{"events": [event]}`. An
    /// array, as in Docker's registry notifications, so that a later
    /// version can batch without changing the shape.
    pub fn body(&self) -> Bytes {
        #[derive(Serialize)]
        struct Envelope<'a> {
            events: [&'a Event; 1],
        }
        let json = serde_json::to_vec(&Envelope { events: [self] })
            .expect("an event is plain strings and numbers");
        Bytes::from(json)
    }
}

/// `t` as RFC 3339 in UTC with milliseconds: `2025-05-01T12:00:00.123Z`.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Year, month, day of day `z` since 1970-01-01 (Howard Hinnant's
/// algorithm, proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        let at = |secs: u64, ms: u64| {
            rfc3339_millis(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.007Z");
        assert_eq!(at(1_746_100_800, 123), "2025-05-01T12:00:00.123Z");
        assert_eq!(at(4_102_444_799, 999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn the_envelope_holds_one_event_with_every_field() {
        let mut e = Event::new(
            Action::TagMove,
            "acme/team/app",
            Actor {
                kind: ActorKind::Robot,
                name: Some("acme+ci".into()),
            },
            Some("req-1".into()),
            "node-a",
        );
        e.digest = Some("sha256:new".into());
        e.previous_digest = Some("sha256:old".into());
        e.tag = Some("v1".into());
        e.media_type = Some("application/vnd.oci.image.manifest.v1+json".into());
        e.size = Some(42);
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        let events = v["events"].as_array().unwrap();
        assert_eq!(events.len(), 1);
        let got = &events[0];
        assert_eq!(got["id"], e.id.as_str());
        assert_eq!(got["action"], "tag.move");
        assert_eq!(got["tenant"], "acme");
        assert_eq!(got["repository"], "acme/team/app");
        assert_eq!(got["digest"], "sha256:new");
        assert_eq!(got["previous_digest"], "sha256:old");
        assert_eq!(got["tag"], "v1");
        assert_eq!(got["size"], 42);
        assert_eq!(got["actor"]["kind"], "robot");
        assert_eq!(got["actor"]["name"], "acme+ci");
        assert_eq!(got["request_id"], "req-1");
        assert_eq!(got["node"], "node-a");
        assert!(got["time"].as_str().unwrap().ends_with('Z'));
        // Unknown values are null, not absent.
        let bare = Event::new(Action::TagDelete, "x/y", Actor::anonymous(), None, "n");
        let v: serde_json::Value = serde_json::from_slice(&bare.body()).unwrap();
        let obj = v["events"][0].as_object().unwrap();
        assert_eq!(obj.len(), 13, "{obj:?}");
        assert!(obj["digest"].is_null() && obj["request_id"].is_null());
        assert_eq!(
            obj["actor"],
            serde_json::json!({"kind": "anonymous", "name": null})
        );
        for a in Action::ALL {
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
    }

    #[test]
    fn ids_are_unique() {
        let a = Event::new(Action::ManifestPush, "a/b", Actor::anonymous(), None, "n");
        let b = Event::new(Action::ManifestPush, "a/b", Actor::anonymous(), None, "n");
        assert_ne!(a.id, b.id);
    }
}
