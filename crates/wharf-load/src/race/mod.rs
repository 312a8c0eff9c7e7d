//! `gc-race` and `gc-verify`: pushers racing the garbage collector, then a
//! check that everything they were told they hold pulls byte for byte.
//!
//! Modelled on Quay's soak test of its collector. N pushers, each on its
//! own keep-alive connection to one base URL (a node, or HAProxy in front
//! of several), loop until the time or push budget runs out. Each turn is
//! one operation, chosen at random:
//!
//! - **push** an image under one of the pusher's tags, as real clients do:
//!   `HEAD` every blob, upload the missing ones, several at once on
//!   connections of their own (single `POST`, `POST`+`PUT`, or
//!   `POST`+`PATCH`+`PUT`; sometimes a mount from another repository the
//!   pusher put it in), then `PUT` the manifest under the tag. A tag already
//!   held is moved. Sometimes the image is one deleted or untagged before,
//!   pushed again byte for byte (its bytes may be under review right then).
//!   A manifest refused with `MANIFEST_BLOB_UNKNOWN`, and any `503`/`429`, is
//!   retried from the `HEAD`s on, as a client would; each kind is counted.
//! - **delete a tag**, or **delete a manifest by digest** (with its tags);
//! - **pull** a held image by digest (manifest and every blob, bytes
//!   checked): content the collector must not touch, while it runs.
//!
//! At the end (after an optional final deletion of a fraction of the held
//! images, to leave the collector work), every tag the pushers hold is
//! pulled by tag through the same base URL and checked. Anything other than
//! the expected answers, a retriable refusal, or bytes that hash to their
//! digest is a failure; the run exits non-zero on any.
//!
//! Layout: [`image`] makes the content, [`client`] speaks HTTP, [`ledger`]
//! counts and remembers; this module drives the pushers and the check.

pub mod client;
pub mod image;
pub mod ledger;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::Method;
use serde_json::{json, Value};

pub use client::Endpoint;
use client::{Client, Resp};
use image::{sha256, Blob, Image, Rng, Shape, MANIFEST_TYPE};
use ledger::{classify_resp, Answer, Counts, Held, State, Tags};

/// Everything a `gc-race` run needs; built and checked by `main`.
#[derive(Debug)]
pub struct Plan {
    pub to: Endpoint,
    pub pushers: usize,
    pub duration: Duration,
    pub max_pushes: u64,
    pub seed: u64,
    /// Repositories `<prefix>/r0 ..`; a pusher's tag k lives in one of them.
    pub prefix: String,
    pub repos: usize,
    pub tags_per_pusher: usize,
    pub shape: Shape,
    pub p_delete_tag: f64,
    pub p_delete_manifest: f64,
    pub p_pull: f64,
    pub p_repush: f64,
    pub p_mount: f64,
    /// Connections a pusher uploads an image's blobs on at once.
    pub upload_lanes: usize,
    /// Tries of one operation before it counts as given up.
    pub max_tries: u32,
    /// Longest wait for one whole answer.
    pub deadline: Duration,
    /// Longest pause after a `503`/`429` (its `Retry-After`, capped).
    pub max_pause: Duration,
    /// After the race, delete (by digest) this fraction of held images.
    pub final_delete: f64,
    /// Pause before the final check (node-local tag caches expire).
    pub settle: Duration,
    /// Where to write the held tags, for a later `gc-verify`.
    pub state_out: Option<PathBuf>,
    pub label: String,
}

/// Everything a `gc-verify` run needs.
#[derive(Debug)]
pub struct VerifyPlan {
    pub to: Endpoint,
    pub state: PathBuf,
    pub clients: usize,
    pub deadline: Duration,
    pub max_pause: Duration,
    pub max_tries: u32,
    pub label: String,
}

/// How one operation ended, when it did not end well.
enum Fail {
    /// Refused (`503`/`429`, or a mix with `MANIFEST_BLOB_UNKNOWN`) every
    /// time it was tried.
    GaveUp(String),
    /// A push refused `MANIFEST_BLOB_UNKNOWN` at (at least half of) its
    /// tries.
    Starved(String),
    /// A failure of the run; `unanswered` when a write may or may not have
    /// landed (so the tag it touched is uncertain).
    Other { what: String, unanswered: bool },
}

fn other(what: String) -> Fail {
    Fail::Other {
        what,
        unanswered: false,
    }
}

/// The path part of a `Location` (absolute URLs included), with `key=value`
/// appended to its query.
fn location_with(location: &str, query: &str) -> String {
    let path = match location.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => location,
    };
    if query.is_empty() {
        path.to_string()
    } else if path.contains('?') {
        format!("{path}&{query}")
    } else {
        format!("{path}?{query}")
    }
}

fn header(name: &'static str, value: &str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(name),
        HeaderValue::from_str(value).expect("ASCII header value"),
    )
}

/// One connection's worth of requests, counted, with the retry pause.
struct Wire {
    client: Client,
    counts: Counts,
    max_pause: Duration,
    rng: Rng,
}

impl Wire {
    /// One request; `503`/`429` answers are counted here.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
        ok: &[u16],
    ) -> Result<(Answer, Resp), String> {
        self.counts.requests += 1;
        let resp = self
            .client
            .send(method.clone(), path, headers, body)
            .await?;
        let answer = classify_resp(&format!("{method} {path}"), &resp, ok);
        match answer {
            Answer::Unavailable => self.counts.refused_503 += 1,
            Answer::TooMany => self.counts.refused_429 += 1,
            _ => {}
        }
        Ok((answer, resp))
    }

    /// The pause after a refusal: what `Retry-After` asks, capped, at least
    /// a little, with jitter so pushers do not come back in step.
    async fn pause(&mut self, resp: &Resp) {
        let asked = resp.retry_after().min(self.max_pause);
        let floor = Duration::from_millis(20 + self.rng.below(80));
        tokio::time::sleep(asked.max(floor)).await;
    }

    /// `GET` `path`, retrying refusals; the body must hash to `digest`
    /// (and be `size` bytes, when given).
    async fn fetch(
        &mut self,
        path: &str,
        accept: Option<&str>,
        digest: &str,
        size: Option<u64>,
        max_tries: u32,
    ) -> Result<Bytes, Fail> {
        let headers: Vec<_> = accept.map(|a| header("accept", a)).into_iter().collect();
        for _ in 0..max_tries {
            let (answer, resp) = self
                .call(Method::GET, path, &headers, Bytes::new(), &[200])
                .await
                .map_err(other)?;
            match answer {
                Answer::Expected(_) => {
                    let got = sha256(&resp.body);
                    if got != digest {
                        return Err(other(format!(
                            "GET {path}: {} bytes hashing to {got}, want {digest}",
                            resp.body.len()
                        )));
                    }
                    if size.is_some_and(|s| s != resp.body.len() as u64) {
                        return Err(other(format!(
                            "GET {path}: {} bytes, the manifest says {}",
                            resp.body.len(),
                            size.unwrap_or(0)
                        )));
                    }
                    if let Some(d) = resp.header("docker-content-digest") {
                        if d != digest {
                            return Err(other(format!(
                                "GET {path}: Docker-Content-Digest {d}, want {digest}"
                            )));
                        }
                    }
                    return Ok(resp.body);
                }
                Answer::Unavailable | Answer::TooMany => self.pause(&resp).await,
                Answer::BlobUnknown => return Err(other(format!("GET {path}: 400 blob unknown"))),
                Answer::Other(what) => return Err(other(what)),
            }
        }
        Err(Fail::GaveUp(format!(
            "GET {path}: refused {max_tries} times"
        )))
    }
}

struct Pusher {
    id: usize,
    plan: Arc<Plan>,
    pool: Arc<Vec<Blob>>,
    wire: Wire,
    /// More connections, for uploading an image's blobs in parallel.
    lanes: Vec<Wire>,
    tags: Tags,
    /// The image behind each held tag.
    images: HashMap<(String, String), Image>,
    /// Images deleted or untagged lately: pushed again now and then.
    deleted: VecDeque<Image>,
    /// Where this pusher last put each blob (a mount's `from`).
    put_in: HashMap<String, String>,
    seq: u64,
}

const MAX_DELETED: usize = 16;

impl Pusher {
    fn new(id: usize, plan: Arc<Plan>, pool: Arc<Vec<Blob>>) -> Pusher {
        let seed = plan.seed ^ (id as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407);
        Pusher {
            id,
            wire: Wire {
                client: Client::new(&plan.to, plan.deadline),
                counts: Counts::default(),
                max_pause: plan.max_pause,
                rng: Rng::new(seed),
            },
            lanes: (1..plan.upload_lanes)
                .map(|l| Wire {
                    client: Client::new(&plan.to, plan.deadline),
                    counts: Counts::default(),
                    max_pause: plan.max_pause,
                    rng: Rng::new(seed ^ (l as u64).wrapping_mul(0x9E37_79B9)),
                })
                .collect(),
            plan,
            pool,
            tags: Tags::default(),
            images: HashMap::new(),
            deleted: VecDeque::new(),
            put_in: HashMap::new(),
            seq: 0,
        }
    }

    fn rng(&mut self) -> &mut Rng {
        &mut self.wire.rng
    }

    fn counts(&mut self) -> &mut Counts {
        &mut self.wire.counts
    }

    fn remember_deleted(&mut self, image: Image) {
        if self.deleted.len() == MAX_DELETED {
            self.deleted.pop_front();
        }
        self.deleted.push_back(image);
    }

    async fn race(mut self, end: Instant, budget: Arc<AtomicU64>) -> Pusher {
        let p = self.plan.clone();
        while Instant::now() < end {
            let held = self.tags.len();
            let r = self.rng().unit();
            let pick = self.rng().below(held.max(1) as u64) as usize;
            if held > 0 && r < p.p_delete_tag {
                self.delete(pick, false).await;
            } else if held > 0 && r < p.p_delete_tag + p.p_delete_manifest {
                self.delete(pick, true).await;
            } else if held > 0 && r < p.p_delete_tag + p.p_delete_manifest + p.p_pull {
                self.pull(pick).await;
            } else {
                if budget.fetch_add(1, Ordering::Relaxed) >= p.max_pushes {
                    break;
                }
                self.push_op().await;
            }
        }
        self
    }

    async fn push_op(&mut self) {
        let slots = self.plan.tags_per_pusher as u64;
        let k = self.rng().below(slots) as usize;
        let repo = format!("{}/r{}", self.plan.prefix, (self.id + k) % self.plan.repos);
        let tag = format!("p{}-{k}", self.id);
        let p_repush = self.plan.p_repush;
        let again = !self.deleted.is_empty() && self.rng().chance(p_repush);
        let image = if again {
            let n = self.deleted.len() as u64;
            let i = self.rng().below(n) as usize;
            self.deleted.remove(i).expect("index within the queue")
        } else {
            self.seq += 1;
            let (id, seq, pool, shape) = (
                self.id,
                self.seq,
                self.pool.clone(),
                self.plan.shape.clone(),
            );
            Image::generate(self.rng(), &pool, &shape, id, seq)
        };
        self.counts().pushes_attempted += 1;
        match self.push(&repo, &tag, &image).await {
            Ok((blob_unknown, busy)) => {
                let c = self.counts();
                c.pushes_acknowledged += 1;
                c.repushes += again as u64;
                c.blob_unknown_then_ok += blob_unknown as u64;
                c.busy_then_ok += busy as u64;
                if self.tags.acknowledged(&repo, &tag, &image) {
                    self.counts().tags_moved += 1;
                }
                if let Some(old) = self.images.insert((repo, tag), image) {
                    self.remember_deleted(old);
                }
            }
            Err(Fail::GaveUp(what)) => {
                self.counts().gave_up += 1;
                self.counts()
                    .fail(format!("push {repo}:{tag} gave up: {what}"));
            }
            Err(Fail::Starved(_)) => self.counts().starved += 1,
            Err(Fail::Other { what, unanswered }) => {
                if unanswered {
                    self.tags.uncertain(&repo, &tag);
                    self.images.remove(&(repo.clone(), tag.clone()));
                }
                self.counts().fail(format!("push {repo}:{tag}: {what}"));
            }
        }
    }

    /// Pushes `image` under `repo:tag` until acknowledged; whether it was
    /// refused with `MANIFEST_BLOB_UNKNOWN`, and with `503`/`429`, on the way.
    async fn push(&mut self, repo: &str, tag: &str, image: &Image) -> Result<(bool, bool), Fail> {
        let (mut blob_unknown, mut busy) = (false, false);
        let mut refusals = 0u32;
        let path = format!("/v2/{repo}/manifests/{tag}");
        let ct = [header("content-type", MANIFEST_TYPE)];
        for _ in 0..self.plan.max_tries {
            if let Some(resp) = self.ensure_blobs(repo, image).await? {
                busy = true;
                self.wire.pause(&resp).await;
                continue;
            }
            let (answer, resp) = self
                .wire
                .call(Method::PUT, &path, &ct, image.manifest.clone(), &[201])
                .await
                .map_err(|what| Fail::Other {
                    what,
                    unanswered: true,
                })?;
            match answer {
                Answer::Expected(_) => {
                    let d = resp.header("docker-content-digest").unwrap_or("");
                    if d != image.digest {
                        return Err(other(format!(
                            "PUT {path}: 201 with Docker-Content-Digest '{d}', want {}",
                            image.digest
                        )));
                    }
                    return Ok((blob_unknown, busy));
                }
                Answer::BlobUnknown => {
                    blob_unknown = true;
                    self.counts().refused_blob_unknown += 1;
                    // Back off, as clients do: through a load balancer the
                    // next `HEAD` may reach a node whose memory of the link
                    // is a moment stale, and retrying at once would spend
                    // every try inside that moment.
                    refusals += 1;
                    let ms = (50u64 << refusals.min(5)).min(self.plan.max_pause.as_millis() as u64);
                    let jitter = self.rng().below(ms / 2 + 1);
                    tokio::time::sleep(Duration::from_millis(ms / 2 + jitter)).await;
                }
                Answer::Unavailable | Answer::TooMany => {
                    busy = true;
                    self.wire.pause(&resp).await;
                }
                Answer::Other(what) => return Err(other(what)),
            }
        }
        // Mostly refused for a collected layer (the rest `503`s of a busy
        // node): starved by the collector, not refused by the registry.
        if refusals * 2 >= self.plan.max_tries {
            return Err(Fail::Starved(format!(
                "MANIFEST_BLOB_UNKNOWN {refusals} times"
            )));
        }
        Err(Fail::GaveUp(format!(
            "refused {} times",
            self.plan.max_tries
        )))
    }

    /// Makes sure every blob of `image` is in `repo`, several at once (one
    /// connection each, as clients upload layers in parallel: the shorter
    /// the time from the first upload to the manifest, the less a zero-delay
    /// collector takes from under it). `Some(answer)` when refused with
    /// `503`/`429` on the way.
    async fn ensure_blobs(&mut self, repo: &str, image: &Image) -> Result<Option<Resp>, Fail> {
        let Pusher {
            plan,
            wire,
            lanes,
            put_in,
            ..
        } = self;
        let n = lanes.len() + 1;
        let (plan, put_in) = (&**plan, &*put_in);
        let work = std::iter::once(wire)
            .chain(lanes.iter_mut())
            .enumerate()
            .map(|(i, w)| async move {
                let mut uploaded = Vec::new();
                for blob in image.blobs.iter().skip(i).step_by(n) {
                    match ensure_blob(w, plan, put_in, repo, blob).await {
                        Ok(Ensured::Present) => {}
                        Ok(Ensured::Uploaded) => uploaded.push(blob.digest.clone()),
                        Ok(Ensured::Refused(resp)) => return (Ok(Some(resp)), uploaded),
                        Err(f) => return (Err(f), uploaded),
                    }
                }
                (Ok(None), uploaded)
            });
        let results = futures_util::future::join_all(work).await;
        let mut out = Ok(None);
        for (r, uploaded) in results {
            for d in uploaded {
                self.put_in.insert(d, repo.to_string());
            }
            match (r, &out) {
                (Err(f), Ok(_)) => out = Err(f),
                (Ok(Some(resp)), Ok(None)) => out = Ok(Some(resp)),
                _ => {}
            }
        }
        out
    }

    /// Deletes the `pick`-th held tag, or (`by_digest`) its manifest.
    async fn delete(&mut self, pick: usize, by_digest: bool) {
        let Some(h) = self.tags.nth(pick).cloned() else {
            return;
        };
        let reference = if by_digest { &h.digest } else { &h.tag };
        let path = format!("/v2/{}/manifests/{reference}", h.repo);
        for _ in 0..self.plan.max_tries {
            let (answer, resp) = match self
                .wire
                .call(Method::DELETE, &path, &[], Bytes::new(), &[202])
                .await
            {
                Ok(a) => a,
                Err(what) => {
                    self.tags.uncertain(&h.repo, &h.tag);
                    self.images.remove(&(h.repo.clone(), h.tag.clone()));
                    self.counts().fail(what);
                    return;
                }
            };
            match answer {
                Answer::Expected(_) => {
                    let key = (h.repo.clone(), h.tag.clone());
                    if by_digest {
                        self.tags.manifest_deleted(&h.repo, &h.digest);
                        self.counts().manifests_deleted += 1;
                    } else {
                        self.tags.tag_deleted(&h.repo, &h.tag);
                        self.counts().tags_deleted += 1;
                    }
                    if let Some(img) = self.images.remove(&key) {
                        self.remember_deleted(img);
                    }
                    return;
                }
                Answer::Unavailable | Answer::TooMany => self.wire.pause(&resp).await,
                Answer::BlobUnknown => {
                    self.counts().fail(format!("DELETE {path}: 400"));
                    return;
                }
                Answer::Other(what) => {
                    self.counts().fail(what);
                    return;
                }
            }
        }
        let what = format!("DELETE {path}: refused {} times", self.plan.max_tries);
        self.counts().gave_up += 1;
        self.counts().fail(what);
    }

    /// Pulls the `pick`-th held image by digest, checking every byte.
    async fn pull(&mut self, pick: usize) {
        let Some(h) = self.tags.nth(pick).cloned() else {
            return;
        };
        let tries = self.plan.max_tries;
        let r = pull_held(&mut self.wire, &h, false, tries, &mut BTreeSet::new()).await;
        match r {
            Ok(_) => self.counts().pulls_ok += 1,
            Err(Fail::GaveUp(what)) | Err(Fail::Starved(what)) | Err(Fail::Other { what, .. }) => {
                self.counts().fail(format!(
                    "pull of held {}:{} ({}): {what}",
                    h.repo, h.tag, h.digest
                ))
            }
        }
    }

    /// After the race: deletes about `fraction` of the held images by digest.
    async fn final_deletes(&mut self, fraction: f64) -> u64 {
        let mut n = 0;
        let mut i = 0;
        while i < self.tags.len() {
            let before = self.tags.len();
            if self.wire.rng.chance(fraction) {
                self.delete(i, true).await;
                n += 1;
            }
            if self.tags.len() == before {
                i += 1;
            }
        }
        n
    }
}

/// What [`ensure_blob`] found or did.
enum Ensured {
    Present,
    Uploaded,
    /// Refused with `503`/`429`: the answer, for its `Retry-After`.
    Refused(Resp),
}

/// Makes sure `blob` is in `repo`, on `w`: `HEAD`, and upload (or mount
/// from where `put_in` says this pusher put it) when missing.
async fn ensure_blob(
    w: &mut Wire,
    plan: &Plan,
    put_in: &HashMap<String, String>,
    repo: &str,
    blob: &Blob,
) -> Result<Ensured, Fail> {
    let path = format!("/v2/{repo}/blobs/{}", blob.digest);
    let (answer, resp) = w
        .call(Method::HEAD, &path, &[], Bytes::new(), &[200, 404])
        .await
        .map_err(other)?;
    match answer {
        Answer::Expected(200) => {
            let len = resp
                .header("content-length")
                .and_then(|l| l.parse::<u64>().ok());
            if len != Some(blob.size()) {
                return Err(other(format!(
                    "HEAD {path}: 200 with Content-Length {len:?}, want {}",
                    blob.size()
                )));
            }
            w.counts.blobs_present += 1;
            return Ok(Ensured::Present);
        }
        Answer::Expected(_) => {}
        Answer::Unavailable | Answer::TooMany => return Ok(Ensured::Refused(resp)),
        Answer::BlobUnknown => return Err(other(format!("HEAD {path}: 400"))),
        Answer::Other(what) => return Err(other(what)),
    }
    upload(w, plan, put_in, repo, blob).await
}

/// Uploads `blob` into `repo` on `w`: a mount sometimes, else one of the
/// ways clients upload (single `POST`; `POST`+`PUT`; `POST`+`PATCH`+`PUT`).
async fn upload(
    w: &mut Wire,
    plan: &Plan,
    put_in: &HashMap<String, String>,
    repo: &str,
    blob: &Blob,
) -> Result<Ensured, Fail> {
    let uploads = format!("/v2/{repo}/blobs/uploads/");
    let octets = [header("content-type", "application/octet-stream")];
    let d = &blob.digest;
    let refused = |resp| Ok(Ensured::Refused(resp));
    // A mount, when this pusher put the blob in another repository.
    let from = put_in.get(d).filter(|r| *r != repo).cloned();
    let mut session = None;
    if let Some(from) = from.filter(|_| w.rng.chance(plan.p_mount)) {
        let path = format!("{uploads}?mount={d}&from={from}");
        let (answer, resp) = w
            .call(Method::POST, &path, &[], Bytes::new(), &[201, 202])
            .await
            .map_err(other)?;
        match answer {
            Answer::Expected(201) => {
                w.counts.blobs_mounted += 1;
                return Ok(Ensured::Uploaded);
            }
            // Not mountable (any more): the spec's fallback, a session.
            Answer::Expected(_) => session = Some(resp),
            Answer::Unavailable | Answer::TooMany => return refused(resp),
            Answer::BlobUnknown => return Err(other(format!("POST {path}: 400"))),
            Answer::Other(what) => return Err(other(what)),
        }
    }
    let mode = if session.is_some() {
        1 + w.rng.below(2)
    } else {
        w.rng.below(3)
    };
    let session = match session {
        Some(s) => s,
        None if mode == 0 => {
            // One POST with the digest and the bytes.
            let path = format!("{uploads}?digest={d}");
            let (answer, resp) = w
                .call(Method::POST, &path, &octets, blob.bytes.clone(), &[201])
                .await
                .map_err(other)?;
            return uploaded(w, answer, resp);
        }
        None => {
            let (answer, resp) = w
                .call(Method::POST, &uploads, &[], Bytes::new(), &[202])
                .await
                .map_err(other)?;
            match answer {
                Answer::Expected(_) => resp,
                Answer::Unavailable | Answer::TooMany => return refused(resp),
                Answer::BlobUnknown => return Err(other(format!("POST {uploads}: 400"))),
                Answer::Other(what) => return Err(other(what)),
            }
        }
    };
    let mut location = session
        .header("location")
        .ok_or_else(|| other(format!("POST {uploads}: 202 without Location")))?
        .to_string();
    let mut body = blob.bytes.clone();
    if mode == 2 {
        // The bytes in a PATCH, then an empty PUT (what docker does).
        let path = location_with(&location, "");
        let (answer, resp) = w
            .call(Method::PATCH, &path, &octets, body, &[202])
            .await
            .map_err(other)?;
        match answer {
            Answer::Expected(_) => {}
            Answer::Unavailable | Answer::TooMany => return refused(resp),
            Answer::BlobUnknown => return Err(other(format!("PATCH {path}: 400"))),
            Answer::Other(what) => return Err(other(what)),
        }
        location = resp
            .header("location")
            .ok_or_else(|| other(format!("PATCH {path}: 202 without Location")))?
            .to_string();
        body = Bytes::new();
    }
    let path = location_with(&location, &format!("digest={d}"));
    let (answer, resp) = w
        .call(Method::PUT, &path, &octets, body, &[201])
        .await
        .map_err(other)?;
    uploaded(w, answer, resp)
}

fn uploaded(w: &mut Wire, answer: Answer, resp: Resp) -> Result<Ensured, Fail> {
    match answer {
        Answer::Expected(_) => {
            w.counts.blobs_uploaded += 1;
            Ok(Ensured::Uploaded)
        }
        Answer::Unavailable | Answer::TooMany => Ok(Ensured::Refused(resp)),
        Answer::BlobUnknown => Err(other("blob upload: 400 MANIFEST_BLOB_UNKNOWN".into())),
        Answer::Other(what) => Err(other(what)),
    }
}

/// Pulls `h` (by tag when `by_tag`, else by digest) and every blob it
/// references that `checked` does not list yet; returns the blobs checked.
async fn pull_held(
    wire: &mut Wire,
    h: &Held,
    by_tag: bool,
    tries: u32,
    checked: &mut BTreeSet<(String, String)>,
) -> Result<u64, Fail> {
    let reference = if by_tag { &h.tag } else { &h.digest };
    let path = format!("/v2/{}/manifests/{reference}", h.repo);
    let body = wire
        .fetch(&path, Some(MANIFEST_TYPE), &h.digest, None, tries)
        .await?;
    let refs = image::references(&body)
        .ok_or_else(|| other(format!("GET {path}: not an image manifest")))?;
    let want: Vec<(String, u64)> = h.blobs.iter().map(|b| (b.digest.clone(), b.size)).collect();
    if refs != want {
        return Err(other(format!(
            "GET {path}: references {refs:?}, want {want:?}"
        )));
    }
    let mut n = 0;
    for b in &h.blobs {
        if !checked.insert((h.repo.clone(), b.digest.clone())) {
            continue;
        }
        let path = format!("/v2/{}/blobs/{}", h.repo, b.digest);
        wire.fetch(&path, None, &b.digest, Some(b.size), tries)
            .await?;
        n += 1;
    }
    Ok(n)
}

/// The final check's result.
#[derive(Default)]
struct Checked {
    ok: u64,
    failed: u64,
    blobs: u64,
    failures: Vec<String>,
    counts: Counts,
}

/// Pulls every held tag by tag, `clients` at a time, checking every byte.
async fn verify(
    to: &Endpoint,
    held: Vec<Held>,
    clients: usize,
    deadline: Duration,
    max_pause: Duration,
    tries: u32,
) -> Checked {
    let held = Arc::new(held);
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..clients.max(1))
        .map(|i| {
            let (held, next, to) = (held.clone(), next.clone(), to.clone());
            tokio::spawn(async move {
                let mut wire = Wire {
                    client: Client::new(&to, deadline),
                    counts: Counts::default(),
                    max_pause,
                    rng: Rng::new(i as u64),
                };
                let mut out = Checked::default();
                // Blobs are checked once per repository and client.
                let mut checked = BTreeSet::new();
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(h) = held.get(k) else { break };
                    match pull_held(&mut wire, h, true, tries, &mut checked).await {
                        Ok(n) => {
                            out.ok += 1;
                            out.blobs += n;
                        }
                        Err(Fail::GaveUp(what))
                        | Err(Fail::Starved(what))
                        | Err(Fail::Other { what, .. }) => {
                            out.failed += 1;
                            if out.failures.len() < ledger::MAX_SAMPLES {
                                out.failures
                                    .push(format!("{}:{} ({}): {what}", h.repo, h.tag, h.digest));
                            }
                        }
                    }
                }
                out.counts = wire.counts;
                out
            })
        })
        .collect();
    let mut all = Checked::default();
    for t in tasks {
        match t.await {
            Ok(c) => {
                all.ok += c.ok;
                all.failed += c.failed;
                all.blobs += c.blobs;
                all.counts.add(&c.counts);
                for f in c.failures {
                    if all.failures.len() < ledger::MAX_SAMPLES {
                        all.failures.push(f);
                    }
                }
            }
            Err(e) => {
                all.failed += 1;
                all.failures.push(format!("verifier task failed: {e}"));
            }
        }
    }
    all
}

fn verify_json(tags: usize, c: &Checked, uncertain: usize) -> Value {
    json!({
        "tags": tags,
        "ok": c.ok,
        "failed": c.failed,
        "blobs_checked": c.blobs,
        "uncertain_tags": uncertain,
        "refused_503": c.counts.refused_503,
        "refused_429": c.counts.refused_429,
        "requests": c.counts.requests,
        "failures": c.failures,
    })
}

pub async fn run(plan: Plan) -> Result<(Value, bool), String> {
    let plan = Arc::new(plan);
    let pool = Arc::new(image::shared_pool(plan.seed, &plan.shape));
    let budget = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + plan.duration;
    let tasks: Vec<_> = (0..plan.pushers)
        .map(|id| {
            let p = Pusher::new(id, plan.clone(), pool.clone());
            tokio::spawn(p.race(end, budget.clone()))
        })
        .collect();
    let mut pushers = Vec::new();
    for t in tasks {
        pushers.push(t.await.map_err(|e| format!("pusher task failed: {e}"))?);
    }
    let raced = start.elapsed();
    let mut final_deleted = 0;
    if plan.final_delete > 0.0 {
        let tasks: Vec<_> = pushers
            .into_iter()
            .map(|mut p| {
                let f = plan.final_delete;
                tokio::spawn(async move {
                    let n = p.final_deletes(f).await;
                    (p, n)
                })
            })
            .collect();
        pushers = Vec::new();
        for t in tasks {
            let (p, n) = t.await.map_err(|e| format!("pusher task failed: {e}"))?;
            final_deleted += n;
            pushers.push(p);
        }
    }
    let mut counts = Counts::default();
    let mut tags = Tags::default();
    for p in pushers {
        counts.add(&p.wire.counts);
        for l in &p.lanes {
            counts.add(&l.counts);
        }
        tags.absorb(p.tags);
    }
    let held: Vec<Held> = tags.held().cloned().collect();
    if let Some(path) = &plan.state_out {
        let state = State { tags: held.clone() };
        let text = serde_json::to_string_pretty(&state).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    tokio::time::sleep(plan.settle).await;
    let checked = verify(
        &plan.to,
        held.clone(),
        plan.pushers,
        plan.deadline,
        plan.max_pause,
        plan.max_tries,
    )
    .await;
    // Safety is asserted (every acknowledged tag pulls byte-identical, no
    // error of any other kind); liveness only as far as a collector with a
    // zero delay allows: most pushes must still get through.
    let live =
        counts.pushes_attempted == 0 || counts.pushes_acknowledged * 2 >= counts.pushes_attempted;
    let ok = counts.other == 0 && counts.gave_up == 0 && checked.failed == 0 && live;
    let mut report = json!({
        "mode": "gc-race",
        "label": plan.label,
        "target": plan.to.authority,
        "seed": plan.seed,
        "pushers": plan.pushers,
        "race_secs": (raced.as_secs_f64() * 10.0).round() / 10.0,
        "budget_hit": budget.load(Ordering::Relaxed) >= plan.max_pushes,
        "final_deleted": final_deleted,
        "verify": verify_json(held.len(), &checked, tags.uncertain_count()),
        "ok": ok,
    });
    if let (Value::Object(r), Value::Object(c)) = (&mut report, counts.to_json()) {
        r.extend(c);
    }
    print_summary(&report);
    Ok((report, ok))
}

pub async fn run_verify(plan: VerifyPlan) -> Result<(Value, bool), String> {
    let text = std::fs::read_to_string(&plan.state)
        .map_err(|e| format!("reading {}: {e}", plan.state.display()))?;
    let state: State =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", plan.state.display()))?;
    let n = state.tags.len();
    let checked = verify(
        &plan.to,
        state.tags,
        plan.clients,
        plan.deadline,
        plan.max_pause,
        plan.max_tries,
    )
    .await;
    let ok = checked.failed == 0;
    let report = json!({
        "mode": "gc-verify",
        "label": plan.label,
        "target": plan.to.authority,
        "verify": verify_json(n, &checked, 0),
        "ok": ok,
    });
    eprintln!(
        "gc-verify {}: {} tags, {} pulled byte-identical, {} failed, {} blobs checked",
        plan.to.authority, n, checked.ok, checked.failed, checked.blobs
    );
    for f in &checked.failures {
        eprintln!("  FAILED {f}");
    }
    Ok((report, ok))
}

fn print_summary(r: &Value) {
    let p = &r["pushes"];
    let v = &r["verify"];
    eprintln!(
        "gc-race {} ({} pushers, {} s): pushes attempted {}, acknowledged {}; \
         refused MANIFEST_BLOB_UNKNOWN {} (pushes then acknowledged: {}); \
         refused 503 {}, 429 {} (pushes then acknowledged: {}); gave up {}; \
         starved by the collector {}; anything else {}",
        r["target"].as_str().unwrap_or(""),
        r["pushers"],
        r["race_secs"],
        p["attempted"],
        p["acknowledged"],
        p["refused_manifest_blob_unknown"],
        p["manifest_blob_unknown_then_ok"],
        r["refused_503"],
        r["refused_429"],
        p["busy_then_ok"],
        p["gave_up"],
        p["starved_by_collector"],
        r["other"],
    );
    eprintln!(
        "  tags moved {}, tags deleted {}, manifests deleted {} (+{} at the end), re-pushes {}, \
         pulls during the race {}; blobs present {}, uploaded {}, mounted {}",
        p["tags_moved"],
        r["tags_deleted"],
        r["manifests_deleted"].as_u64().unwrap_or(0) - r["final_deleted"].as_u64().unwrap_or(0),
        r["final_deleted"],
        p["repushes"],
        r["pulls_ok"],
        r["blobs"]["present"],
        r["blobs"]["uploaded"],
        r["blobs"]["mounted"],
    );
    eprintln!(
        "  verified: {} of {} held tags pull byte-identical ({} blobs checked), {} failed{}",
        v["ok"],
        v["tags"],
        v["blobs_checked"],
        v["failed"],
        if r["ok"] == true { "" } else { "  => FAILED" }
    );
    for s in r["other_samples"].as_array().into_iter().flatten() {
        eprintln!("  other: {}", s.as_str().unwrap_or(""));
    }
    for s in v["failures"].as_array().into_iter().flatten() {
        eprintln!("  verify: {}", s.as_str().unwrap_or(""));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            location_with("/v2/a/blobs/uploads/x", "digest=sha256:1"),
            "/v2/a/blobs/uploads/x?digest=sha256:1"
        );
        assert_eq!(
            location_with("/v2/a/blobs/uploads/x?state=s", "digest=d"),
            "/v2/a/blobs/uploads/x?state=s&digest=d"
        );
        assert_eq!(
            location_with("http://127.0.0.1:5000/v2/a/blobs/uploads/x", ""),
            "/v2/a/blobs/uploads/x"
        );
    }
}
