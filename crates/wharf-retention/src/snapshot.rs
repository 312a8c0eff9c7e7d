//! The planner's input: one tenant's repositories as they stood at one
//! moment, with the clock reading of that moment.
//!
//! Owns: the shape of that input and what each field means.
//!
//! Must never: be read from or written to a store here. The caller builds a
//! snapshot from its metadata store; the planner only reads it.

use serde::{Deserialize, Serialize};
use wharf_core::{Digest, RepoName, Tag};

/// One tenant's repositories at `now_unix`.
///
/// Preconditions (the caller's to keep): each repository appears once;
/// within one, each tag name and each manifest digest appears once; all
/// repositories belong to the tenant whose policy is applied. If a tag or
/// digest appears twice, its first occurrence counts (and the plan then
/// depends on the order of the lists); a repository listed twice is planned
/// twice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The clock reading the ages are measured from, in seconds since the
    /// Unix epoch. An input, so that a plan can be replayed.
    pub now_unix: u64,
    /// The tenant's repositories, in any order.
    pub repositories: Vec<RepositorySnapshot>,
}

/// One repository: its tags and its manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositorySnapshot {
    /// The full repository name, namespace included (`acme/app/web`).
    pub name: RepoName,
    /// Every tag of the repository.
    pub tags: Vec<TagRecord>,
    /// Every manifest of the repository, tagged or not, indexes and their
    /// children included.
    pub manifests: Vec<ManifestRecord>,
}

/// A tag and where it points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    /// The tag's name.
    pub tag: Tag,
    /// The manifest it points at.
    pub digest: Digest,
    /// When the tag was last pushed (created or moved): what `keep_last`
    /// ranks by.
    pub pushed_unix: u64,
}

/// A manifest and what it refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRecord {
    /// The manifest's digest.
    pub digest: Digest,
    /// When it was first pushed: what `untagged_older_than_days` measures.
    pub pushed_unix: u64,
    /// When it was last pulled (by tag or by digest), if ever. The store may
    /// record this coarsely (at most one write per manifest per hour); the
    /// planner takes it as given.
    pub last_pulled_unix: Option<u64>,
    /// The manifest this one refers to (`subject`: it is a signature, an
    /// SBOM or another referrer of that manifest).
    pub subject: Option<Digest>,
    /// The manifests an index lists (empty for an image manifest).
    pub children: Vec<Digest>,
}

impl RepositorySnapshot {
    /// The repository's path inside its tenant: the name without its first
    /// component (`app/web` for `acme/app/web`; empty for a repository named
    /// after the namespace alone). Rule `repository` patterns match this.
    pub fn path_in_tenant(&self) -> &str {
        self.name
            .as_str()
            .split_once('/')
            .map_or("", |(_, rest)| rest)
    }
}
