//! What the pushers count and what they believe they hold (pure; no I/O).
//!
//! [`Counts`] are per pusher and added up at the end. [`Tags`] is a
//! pusher's belief about its own tags: the last manifest acknowledged under
//! each (`201`), minus the tags it deleted and the manifests it deleted by
//! digest since. Pushers use disjoint tag names, so the union of their
//! beliefs is the whole truth the registry must serve at the end. A tag
//! whose last write got no answer (the request may or may not have landed)
//! is *uncertain*: left out of the verification, and its write counted as
//! a failure.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::client::Resp;
use super::image::Image;

/// How an answer is taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// One of the statuses the step expects.
    Expected(u16),
    /// `400` with `MANIFEST_BLOB_UNKNOWN`: a referenced blob is not (or no
    /// longer) in the repository; push it again and retry.
    BlobUnknown,
    /// `503`: retry after `Retry-After`.
    Unavailable,
    /// `429`: retry after `Retry-After`.
    TooMany,
    /// Anything else: a failure of the run.
    Other(String),
}

/// The OCI error codes in an error body (`{"errors":[{"code":...}]}`).
pub fn error_codes(body: &[u8]) -> Vec<String> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v["errors"].as_array().map(|a| {
                a.iter()
                    .filter_map(|e| e["code"].as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Classifies `status` (with `body`) for a step that expects `ok`.
pub fn classify(step: &str, status: u16, body: &[u8], ok: &[u16]) -> Answer {
    if ok.contains(&status) {
        return Answer::Expected(status);
    }
    let codes = error_codes(body);
    match status {
        400 if codes.iter().any(|c| c == "MANIFEST_BLOB_UNKNOWN") => Answer::BlobUnknown,
        503 => Answer::Unavailable,
        429 => Answer::TooMany,
        _ => {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
            Answer::Other(format!("{step} -> {status} {}", text.trim()))
        }
    }
}

/// [`classify`] for a whole answer.
pub fn classify_resp(step: &str, resp: &Resp, ok: &[u16]) -> Answer {
    classify(step, resp.status, &resp.body, ok)
}

/// At most this many failure descriptions are kept (the count is exact).
pub const MAX_SAMPLES: usize = 20;

/// Counters of one pusher, or of all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Pushes started (an image under a tag: blobs, then the manifest).
    pub pushes_attempted: u64,
    /// Pushes whose manifest `PUT` was answered `201`.
    pub pushes_acknowledged: u64,
    /// Of those, pushes of a manifest deleted earlier, pushed again byte
    /// for byte.
    pub repushes: u64,
    /// Acknowledged pushes that moved a tag from another manifest.
    pub tags_moved: u64,
    /// Manifest `PUT`s refused with `MANIFEST_BLOB_UNKNOWN`.
    pub refused_blob_unknown: u64,
    /// Pushes refused so at least once that were then acknowledged.
    pub blob_unknown_then_ok: u64,
    /// `503` answers (any request of the run), each retried.
    pub refused_503: u64,
    /// `429` answers (any request of the run), each retried.
    pub refused_429: u64,
    /// Pushes refused with `503`/`429` at least once, then acknowledged.
    pub busy_then_ok: u64,
    /// Pushes and deletes still refused (`503`/`429`) after the last retry.
    pub gave_up: u64,
    /// Pushes whose manifest was refused `MANIFEST_BLOB_UNKNOWN` at least at
    /// half of their tries (the others `503`): the collector reclaimed a layer between its upload and the
    /// manifest every time. Nothing is stored for them (reported, not a
    /// failure: with a zero review delay a push slower than a collector
    /// pass can always lose this way; safety is what the run asserts).
    pub starved: u64,
    /// Blobs found by `HEAD` (no upload needed).
    pub blobs_present: u64,
    /// Blobs uploaded (`POST`+`PUT`, single `POST`, or `POST`+`PATCH`+`PUT`).
    pub blobs_uploaded: u64,
    /// Blobs mounted from another repository (`201` to a mount).
    pub blobs_mounted: u64,
    /// Tags deleted (`DELETE .../manifests/<tag>`: `202`).
    pub tags_deleted: u64,
    /// Manifests deleted by digest (`202`), the final deletions included.
    pub manifests_deleted: u64,
    /// Held images pulled during the race (manifest by digest and every
    /// blob, bytes checked).
    pub pulls_ok: u64,
    /// Requests sent.
    pub requests: u64,
    /// Anything else: unexpected statuses, wrong bytes, no answer. Must be 0.
    pub other: u64,
    /// The first [`MAX_SAMPLES`] of those, described.
    pub other_samples: Vec<String>,
}

impl Counts {
    pub fn fail(&mut self, what: String) {
        self.other += 1;
        if self.other_samples.len() < MAX_SAMPLES {
            self.other_samples.push(what);
        }
    }

    pub fn add(&mut self, o: &Counts) {
        self.pushes_attempted += o.pushes_attempted;
        self.pushes_acknowledged += o.pushes_acknowledged;
        self.repushes += o.repushes;
        self.tags_moved += o.tags_moved;
        self.refused_blob_unknown += o.refused_blob_unknown;
        self.blob_unknown_then_ok += o.blob_unknown_then_ok;
        self.refused_503 += o.refused_503;
        self.refused_429 += o.refused_429;
        self.busy_then_ok += o.busy_then_ok;
        self.gave_up += o.gave_up;
        self.starved += o.starved;
        self.blobs_present += o.blobs_present;
        self.blobs_uploaded += o.blobs_uploaded;
        self.blobs_mounted += o.blobs_mounted;
        self.tags_deleted += o.tags_deleted;
        self.manifests_deleted += o.manifests_deleted;
        self.pulls_ok += o.pulls_ok;
        self.requests += o.requests;
        self.other += o.other;
        for s in &o.other_samples {
            if self.other_samples.len() < MAX_SAMPLES {
                self.other_samples.push(s.clone());
            }
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "pushes": {
                "attempted": self.pushes_attempted,
                "acknowledged": self.pushes_acknowledged,
                "repushes": self.repushes,
                "tags_moved": self.tags_moved,
                "refused_manifest_blob_unknown": self.refused_blob_unknown,
                "manifest_blob_unknown_then_ok": self.blob_unknown_then_ok,
                "busy_then_ok": self.busy_then_ok,
                "gave_up": self.gave_up,
                "starved_by_collector": self.starved,
            },
            "refused_503": self.refused_503,
            "refused_429": self.refused_429,
            "blobs": {
                "present": self.blobs_present,
                "uploaded": self.blobs_uploaded,
                "mounted": self.blobs_mounted,
            },
            "tags_deleted": self.tags_deleted,
            "manifests_deleted": self.manifests_deleted,
            "pulls_ok": self.pulls_ok,
            "requests": self.requests,
            "other": self.other,
            "other_samples": self.other_samples,
        })
    }
}

/// A tag the pushers hold: the manifest last acknowledged under it and the
/// blobs that manifest references (config first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub repo: String,
    pub tag: String,
    pub digest: String,
    pub blobs: Vec<HeldBlob>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldBlob {
    pub digest: String,
    pub size: u64,
}

/// One pusher's belief about its tags.
#[derive(Clone, Debug, Default)]
pub struct Tags {
    held: BTreeMap<(String, String), Held>,
    uncertain: BTreeSet<(String, String)>,
}

impl Tags {
    /// `image` was acknowledged under `repo:tag`; true when that moved the
    /// tag from another manifest.
    pub fn acknowledged(&mut self, repo: &str, tag: &str, image: &Image) -> bool {
        let key = (repo.to_string(), tag.to_string());
        self.uncertain.remove(&key);
        let held = Held {
            repo: repo.to_string(),
            tag: tag.to_string(),
            digest: image.digest.clone(),
            blobs: image
                .blobs
                .iter()
                .map(|b| HeldBlob {
                    digest: b.digest.clone(),
                    size: b.size(),
                })
                .collect(),
        };
        self.held
            .insert(key, held)
            .is_some_and(|old| old.digest != image.digest)
    }

    pub fn tag_deleted(&mut self, repo: &str, tag: &str) {
        self.held.remove(&(repo.to_string(), tag.to_string()));
    }

    /// The manifest `digest` was deleted from `repo`, and with it every tag
    /// on it there; how many of ours that was.
    pub fn manifest_deleted(&mut self, repo: &str, digest: &str) -> usize {
        let before = self.held.len();
        self.held
            .retain(|(r, _), h| !(r == repo && h.digest == digest));
        before - self.held.len()
    }

    /// A write to `repo:tag` got no answer: what it points at is unknown.
    pub fn uncertain(&mut self, repo: &str, tag: &str) {
        let key = (repo.to_string(), tag.to_string());
        self.held.remove(&key);
        self.uncertain.insert(key);
    }

    #[cfg(test)]
    pub fn get(&self, repo: &str, tag: &str) -> Option<&Held> {
        self.held.get(&(repo.to_string(), tag.to_string()))
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// The `i`-th held tag (in name order), for picking one at random.
    pub fn nth(&self, i: usize) -> Option<&Held> {
        self.held.values().nth(i)
    }

    pub fn held(&self) -> impl Iterator<Item = &Held> {
        self.held.values()
    }

    pub fn uncertain_count(&self) -> usize {
        self.uncertain.len()
    }

    pub fn absorb(&mut self, other: Tags) {
        self.held.extend(other.held);
        self.uncertain.extend(other.uncertain);
    }
}

/// What `gc-race --state-out` writes and `gc-verify --state` reads.
#[derive(Debug, Serialize, Deserialize)]
pub struct State {
    pub tags: Vec<Held>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::race::image::{shared_pool, Rng, Shape};

    #[test]
    fn classification() {
        let mbu = br#"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"x"}]}"#;
        assert_eq!(classify("put", 201, b"", &[201]), Answer::Expected(201));
        assert_eq!(classify("put", 400, mbu, &[201]), Answer::BlobUnknown);
        assert_eq!(classify("put", 503, b"", &[201]), Answer::Unavailable);
        assert_eq!(classify("put", 429, b"", &[201]), Answer::TooMany);
        // Another 400 is a failure, and so is a 404 where 200 was expected.
        let invalid = br#"{"errors":[{"code":"MANIFEST_INVALID"}]}"#;
        assert!(
            matches!(classify("put", 400, invalid, &[201]), Answer::Other(s) if s.contains("MANIFEST_INVALID"))
        );
        assert!(matches!(
            classify("get", 404, b"", &[200]),
            Answer::Other(_)
        ));
        assert_eq!(
            classify("head", 404, b"", &[200, 404]),
            Answer::Expected(404)
        );
        assert_eq!(error_codes(b"nonsense"), Vec::<String>::new());
    }

    fn image(seq: u64) -> Image {
        let shape = Shape {
            shared: 4,
            min_layer: 16,
            max_layer: 32,
        };
        let pool = shared_pool(1, &shape);
        Image::generate(&mut Rng::new(seq), &pool, &shape, 0, seq)
    }

    #[test]
    fn tags_follow_acknowledgements_and_deletions() {
        let mut t = Tags::default();
        let (a, b) = (image(1), image(2));
        assert!(!t.acknowledged("r0", "t1", &a), "a new tag is not a move");
        assert!(
            !t.acknowledged("r0", "t1", &a),
            "the same manifest again is not a move"
        );
        assert!(t.acknowledged("r0", "t1", &b), "another manifest moves it");
        assert_eq!(t.get("r0", "t1").unwrap().digest, b.digest);
        assert_eq!(t.get("r0", "t1").unwrap().blobs.len(), b.blobs.len());
        t.acknowledged("r0", "t2", &b);
        t.acknowledged("r1", "t3", &b);
        // Deleting b from r0 removes both of its r0 tags, not r1's.
        assert_eq!(t.manifest_deleted("r0", &b.digest), 2);
        assert_eq!(t.len(), 1);
        assert!(t.get("r1", "t3").is_some());
        t.tag_deleted("r1", "t3");
        assert_eq!(t.len(), 0);
        t.acknowledged("r0", "t4", &a);
        t.uncertain("r0", "t4");
        assert_eq!((t.len(), t.uncertain_count()), (0, 1));
        t.acknowledged("r0", "t4", &a);
        assert_eq!((t.len(), t.uncertain_count()), (1, 0));
    }

    #[test]
    fn counts_add_up_and_cap_samples() {
        let mut a = Counts::default();
        for i in 0..30 {
            a.fail(format!("f{i}"));
        }
        a.pushes_attempted = 3;
        let mut total = Counts::default();
        total.add(&a);
        total.add(&a);
        assert_eq!(total.other, 60);
        assert_eq!(total.other_samples.len(), MAX_SAMPLES);
        assert_eq!(total.pushes_attempted, 6);
        assert_eq!(total.to_json()["pushes"]["attempted"], 6);
    }
}
