//! Wharf's retention planner: a tenant's retention policy and a snapshot of
//! its repositories in, a plan of tag and manifest deletions out, each with
//! the reason and the rule that caused it.
//!
//! Layout:
//!
//! - [`policy`]: the rules as written ([`Policy`], [`Rule`], JSON), their
//!   checks and errors ([`PolicyError`], [`RuleError`]), and the compiled
//!   form ([`CompiledPolicy`]).
//! - [`snapshot`]: the input ([`Snapshot`]): tags, manifests, push and pull
//!   times, subjects and index children, and the clock reading.
//! - [`plan`]: the planner ([`CompiledPolicy::plan`]) and its output
//!   ([`Plan`], [`Deletion`], [`Reason`], [`Kept`], [`KeepReason`]), with the
//!   dry-run text ([`Plan::render`]).
//!
//! Owns: what a retention rule means, and which tags and manifests a policy
//! deletes from a given state.
//!
//! Must never: do I/O, read a clock, block or await, or know about HTTP, the
//! metadata store or blob storage. The caller builds the snapshot and
//! applies the plan (re-checking each deletion against the state it then
//! finds: a tag is removed only if it still points at the digest in the
//! plan, a manifest deleted only if it is still untagged); it also logs each
//! [`Deletion`], whose `Display` is the log line. Blobs are not this
//! crate's business: garbage collection reclaims them once no manifest
//! refers to them.
//!
//! # Semantics
//!
//! A repository's **path** is its name inside the tenant, the namespace
//! removed (`app/web` for `acme/app/web`). A rule **covers** a repository
//! when its `repository` pattern matches the whole path (no pattern: every
//! repository). Patterns are regular expressions of the `regex` crate
//! (linear-time matching, no look-around or back-references), always
//! matched against the whole string, as if written `^(?:…)$`.
//!
//! A rule is either a **keep rule** (any of `tag`, `keep_last`,
//! `keep_pulled_within_days`) or an **untagged rule**
//! (`untagged_older_than_days`, beside at most `repository`); a rule with
//! both, or with neither, is refused. A keep from any rule always wins over
//! a deletion.
//!
//! 1. **No policy, no deletion.** An empty policy deletes nothing; so does
//!    a policy none of whose rules covers a repository, for that
//!    repository.
//! 2. **Tags.** Tags are deleted only in repositories that at least one
//!    keep rule covers; untagged rules say nothing about tags. A keep rule
//!    keeps a tag when every condition it has holds (AND):
//!    - `tag`: the tag's name matches the pattern;
//!    - `keep_last N`: the tag is among the N most recently pushed tags of
//!      the repository *that the rule's `tag` matches* (all tags if it has
//!      none), ranked by the tag's push time, newest first, ties by name;
//!      `{tag: "v.*", keep_last: 5}` keeps the 5 newest `v` tags;
//!    - `keep_pulled_within_days D`: the manifest the tag points at was
//!      last pulled no more than D days (D × 86,400 s) before `now_unix`.
//!      Pull times are per manifest: two tags on one manifest share them.
//!
//!    A tag is kept when any covering keep rule keeps it (OR), or when
//!    `is_immutable(repository, tag)` says so (immutable tags are never
//!    deleted, whatever the rules; they still count in `keep_last`'s
//!    ranking). Every other tag of the repository is deleted, its reason
//!    listing, for each covering keep rule, the first condition it fails.
//! 3. **Untagged manifests.** A manifest is *untagged* when no tag points at
//!    it once this plan's tag deletions are made: a manifest whose last tag
//!    the plan removes is judged as untagged in the same plan (the dry run
//!    shows the whole effect, and the reason says the plan untagged it).
//!    An untagged rule condemns an untagged manifest of a repository it
//!    covers that was pushed more than D days before `now_unix`. The age
//!    is measured from the manifest's push, not from when it lost its last
//!    tag: the snapshot has no such time. Several untagged rules: the
//!    first (by index) that condemns it is named.
//! 4. **What keeps a manifest** (any of these wins over rule 3):
//!    - a tag that stays points at it;
//!    - it is untagged, was pulled within D days, and a covering keep rule
//!      has `keep_pulled_within_days D` and no other keep condition (a
//!      rule with `tag` or `keep_last` cannot hold for an untagged
//!      manifest, so it keeps none);
//!    - no untagged rule condemns it (too young, or none covers the
//!      repository);
//!    - a kept index lists it as a child, or its `subject` is a kept
//!      manifest (a signature, SBOM or other referrer of a kept manifest).
//!
//!    The last point applies transitively: the children and referrers of
//!    anything kept are kept, and theirs, and so on.
//! 5. **Referrers of deleted manifests.** An untagged referrer whose subject
//!    (in the same repository) the plan deletes is deleted with it, reason
//!    `ReferrerOfDeleted` naming the subject, even if it is too young for
//!    any untagged rule, unless rule 4 keeps it for another reason (pulled,
//!    child of a kept index). A referrer that keeps a tag is judged by the
//!    rules on its own, like any tagged manifest, and stays. A referrer
//!    whose subject is not in the snapshot is judged as any untagged
//!    manifest.
//! 6. **Order and determinism.** Deletions come repository by repository
//!    (by name): tags by name, then manifests with each index before its
//!    children and each referrer before its subject, ties by digest. The
//!    plan depends only on the policy, the snapshot's content (not the
//!    order of its lists) and `is_immutable`.
//!
//! Times in the future count as age zero. "Within D days" includes exactly
//! D days; "older than D days" means strictly more.
//!
//! # Example
//!
//! ```
//! use wharf_retention::{ManifestRecord, Policy, RepositorySnapshot, Snapshot, TagRecord};
//! use wharf_core::Digest;
//!
//! const DAY: u64 = 86_400;
//! let policy: Policy = serde_json::from_str(
//!     r#"{"rules": [
//!         {"repository": "app/.*", "tag": "v.*", "keep_last": 1},
//!         {"untagged_older_than_days": 30}
//!     ]}"#,
//! )?;
//! let policy = policy.compile()?;
//!
//! let (old, new) = (Digest::sha256_of(b"old"), Digest::sha256_of(b"new"));
//! let manifest = |digest: &Digest, pushed_unix| ManifestRecord {
//!     digest: digest.clone(),
//!     pushed_unix,
//!     last_pulled_unix: None,
//!     subject: None,
//!     children: vec![],
//! };
//! let tag = |name: &str, digest: &Digest, pushed_unix| TagRecord {
//!     tag: name.parse().unwrap(),
//!     digest: digest.clone(),
//!     pushed_unix,
//! };
//! let snapshot = Snapshot {
//!     now_unix: 100 * DAY,
//!     repositories: vec![RepositorySnapshot {
//!         name: "acme/app/web".parse()?,
//!         tags: vec![tag("v1", &old, 10 * DAY), tag("v2", &new, 90 * DAY)],
//!         manifests: vec![manifest(&old, 10 * DAY), manifest(&new, 90 * DAY)],
//!     }],
//! };
//!
//! // No tag is immutable here.
//! let plan = policy.plan(&snapshot, |_repository, _tag| false);
//! let lines: Vec<String> = plan.deletions.iter().map(|d| d.to_string()).collect();
//! assert_eq!(lines, [
//!     "delete tag acme/app/web:v1 — no rule keeps it: rule 0: 2nd newest of 2, keep_last 1".to_string(),
//!     format!("delete manifest acme/app/web@{old} — untagged (its last tag removed by this plan), \
//!              pushed 90 days ago: rule 1: untagged_older_than_days 30"),
//! ]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod plan;
pub mod policy;
pub mod snapshot;

pub use plan::{Deletion, KeepReason, Kept, Miss, Plan, Reason, RuleMiss, Target};
pub use policy::{
    CompiledPolicy, Policy, PolicyError, Rule, RuleError, MAX_DAYS, MAX_KEEP_LAST, MAX_PATTERN_LEN,
    MAX_RULES, REGEX_SIZE_LIMIT,
};
pub use snapshot::{ManifestRecord, RepositorySnapshot, Snapshot, TagRecord};
