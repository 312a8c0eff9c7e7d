//! Builders shared by the planner tests: repositories written as a few
//! lines, manifests named by small numbers, times in days before `NOW`.

#![allow(dead_code)]

use wharf_core::{Digest, RepoName, Tag};
use wharf_retention::{
    CompiledPolicy, ManifestRecord, Plan, Policy, RepositorySnapshot, Snapshot, TagRecord, Target,
};

pub const DAY: u64 = 86_400;
/// The clock reading of every snapshot here.
pub const NOW: u64 = 20_000 * DAY;

/// The digest of manifest number `n`.
pub fn d(n: u32) -> Digest {
    Digest::sha256_of(format!("manifest {n}").as_bytes())
}

/// `days` days before `NOW`.
pub fn ago(days: u64) -> u64 {
    NOW - days * DAY
}

pub fn policy(json: &str) -> CompiledPolicy {
    serde_json::from_str::<Policy>(json)
        .expect("policy JSON")
        .compile()
        .expect("valid policy")
}

pub struct Repo(pub RepositorySnapshot);

pub fn repo(name: &str) -> Repo {
    Repo(RepositorySnapshot {
        name: name.parse().unwrap(),
        tags: Vec::new(),
        manifests: Vec::new(),
    })
}

impl Repo {
    /// An image manifest pushed `days` ago.
    pub fn image(self, n: u32, days: u64) -> Self {
        self.image_at(n, ago(days))
    }

    /// An image manifest pushed at `pushed_unix`.
    pub fn image_at(mut self, n: u32, pushed_unix: u64) -> Self {
        self.0.manifests.push(ManifestRecord {
            digest: d(n),
            pushed_unix,
            last_pulled_unix: None,
            subject: None,
            children: Vec::new(),
        });
        self
    }

    /// An index listing `children`, pushed `days` ago.
    pub fn index(mut self, n: u32, children: &[u32], days: u64) -> Self {
        self = self.image(n, days);
        self.last().children = children.iter().map(|c| d(*c)).collect();
        self
    }

    /// A referrer (signature, SBOM) of `subject`, pushed `days` ago.
    pub fn referrer(mut self, n: u32, subject: u32, days: u64) -> Self {
        self = self.image(n, days);
        self.last().subject = Some(d(subject));
        self
    }

    /// Manifest `n` was last pulled `days` ago.
    pub fn pulled(mut self, n: u32, days: u64) -> Self {
        let m = self
            .0
            .manifests
            .iter_mut()
            .find(|m| m.digest == d(n))
            .unwrap();
        m.last_pulled_unix = Some(ago(days));
        self
    }

    /// Tag `tag` on manifest `n`, pushed `days` ago.
    pub fn tag(self, tag: &str, n: u32, days: u64) -> Self {
        self.tag_at(tag, n, ago(days))
    }

    pub fn tag_at(mut self, tag: &str, n: u32, pushed_unix: u64) -> Self {
        self.0.tags.push(TagRecord {
            tag: tag.parse().unwrap(),
            digest: d(n),
            pushed_unix,
        });
        self
    }

    fn last(&mut self) -> &mut ManifestRecord {
        self.0.manifests.last_mut().unwrap()
    }
}

pub fn snapshot(repos: Vec<Repo>) -> Snapshot {
    Snapshot {
        now_unix: NOW,
        repositories: repos.into_iter().map(|r| r.0).collect(),
    }
}

pub fn no_immutable(_: &RepoName, _: &Tag) -> bool {
    false
}

/// Plans with no immutable tags.
pub fn plan(policy_json: &str, repos: Vec<Repo>) -> Plan {
    policy(policy_json).plan(&snapshot(repos), no_immutable)
}

/// The deleted tags as `repo:tag`, in plan order.
pub fn deleted_tags(plan: &Plan) -> Vec<String> {
    plan.deletions
        .iter()
        .filter_map(|del| match &del.target {
            Target::Tag {
                repository, tag, ..
            } => Some(format!("{repository}:{tag}")),
            Target::Manifest { .. } => None,
        })
        .collect()
}

/// The deleted manifests, in plan order.
pub fn deleted_manifests(plan: &Plan) -> Vec<Digest> {
    plan.deletions
        .iter()
        .filter_map(|del| match &del.target {
            Target::Manifest { digest, .. } => Some(digest.clone()),
            Target::Tag { .. } => None,
        })
        .collect()
}

/// The deletion line (its `Display`) for the manifest `n`.
pub fn manifest_line(plan: &Plan, n: u32) -> String {
    plan.deletions
        .iter()
        .find(|del| matches!(&del.target, Target::Manifest { digest, .. } if *digest == d(n)))
        .map(|del| del.to_string())
        .unwrap_or_else(|| panic!("manifest {n} is not deleted"))
}

/// The deletion line for tag `repo:tag`.
pub fn tag_line(plan: &Plan, repo_tag: &str) -> String {
    plan.deletions
        .iter()
        .find(|del| {
            matches!(&del.target, Target::Tag { repository, tag, .. }
                if format!("{repository}:{tag}") == repo_tag)
        })
        .map(|del| del.to_string())
        .unwrap_or_else(|| panic!("tag {repo_tag} is not deleted"))
}

/// The deleted manifests as a set, for plans whose order is by digest.
pub fn deleted_set(plan: &Plan) -> std::collections::BTreeSet<Digest> {
    deleted_manifests(plan).into_iter().collect()
}

/// The digests of manifests `ns` as a set.
pub fn digests(ns: &[u32]) -> std::collections::BTreeSet<Digest> {
    ns.iter().map(|n| d(*n)).collect()
}
