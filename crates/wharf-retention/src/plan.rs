//! The planner: a compiled policy and a snapshot in, a [`Plan`] out.
//!
//! Owns: the semantics written in the crate documentation, the reasons
//! given for every decision, and the order of the deletions.
//!
//! Must never: delete what any rule keeps, an immutable tag, a manifest a
//! kept tag points at, the child of a kept index or a referrer of a kept
//! manifest; read a clock or a store; depend on the order of its input.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};
use wharf_core::{Digest, RepoName, Tag};

use crate::policy::{CompiledPolicy, CompiledRule, Kind, DAY_SECS};
use crate::snapshot::{ManifestRecord, RepositorySnapshot, Snapshot, TagRecord};

/// What a policy would delete from a snapshot, and why; and what it keeps,
/// and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The deletions in the order to apply them: repositories by name; in
    /// each, tags by name, then manifests with every index before its
    /// children and every referrer before its subject (ties by digest).
    pub deletions: Vec<Deletion>,
    /// Every tag and manifest of the snapshot that stays: repositories by
    /// name; in each, tags by name, then manifests by digest.
    pub kept: Vec<Kept>,
}

/// One tag or manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// A tag: removing it leaves the manifest it points at in place.
    Tag {
        /// Its repository.
        repository: RepoName,
        /// The tag.
        tag: Tag,
        /// The manifest it points at in the snapshot: an applier removes the
        /// tag only if it still points there.
        digest: Digest,
    },
    /// A manifest.
    Manifest {
        /// Its repository.
        repository: RepoName,
        /// Its digest.
        digest: Digest,
    },
}

/// One deletion and the reason for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deletion {
    /// What to delete.
    pub target: Target,
    /// Why.
    pub reason: Reason,
}

/// Why a tag or manifest is deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum Reason {
    /// A tag in a repository that keep rules cover, which none of them
    /// keeps.
    NotKept {
        /// For each keep rule covering the repository, in rule order, the
        /// first of its conditions the tag fails.
        misses: Vec<RuleMiss>,
    },
    /// An untagged manifest older than an untagged rule allows.
    Untagged {
        /// The first rule (by index) that deletes it.
        rule: usize,
        /// That rule's `untagged_older_than_days`.
        older_than_days: u32,
        /// Whole days since the manifest was pushed.
        age_days: u64,
        /// Whether it had tags in the snapshot, all removed by this plan.
        untagged_by_plan: bool,
    },
    /// An untagged referrer whose subject this plan deletes.
    ReferrerOfDeleted {
        /// The subject.
        subject: Digest,
    },
}

/// A keep rule that does not keep a tag, and the condition that fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleMiss {
    /// The rule's index.
    pub rule: usize,
    /// Its first failing condition.
    pub miss: Miss,
}

/// A failed condition of a keep rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "condition", rename_all = "snake_case")]
pub enum Miss {
    /// The tag's name does not match the rule's `tag` pattern.
    Tag {
        /// The pattern as written.
        pattern: String,
    },
    /// The tag is not among the rule's `keep_last` newest.
    KeepLast {
        /// Its place among the candidates, newest first, from 1.
        position: usize,
        /// How many tags of the repository the rule's `tag` matches.
        candidates: usize,
        /// The rule's `keep_last`.
        keep_last: u32,
    },
    /// The tag's manifest was not pulled within the rule's window.
    KeepPulled {
        /// The rule's `keep_pulled_within_days`.
        within_days: u32,
        /// Whole days since the last pull; `None` if never pulled.
        last_pulled_days_ago: Option<u64>,
    },
}

/// One tag or manifest that stays, and the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    /// What stays.
    pub target: Target,
    /// Why.
    pub reason: KeepReason,
}

/// Why a tag or manifest stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum KeepReason {
    /// A tag that this rule (the first by index that does) keeps.
    Rule {
        /// The rule's index.
        rule: usize,
    },
    /// A tag no rule keeps, which is immutable.
    Immutable,
    /// A tag in a repository no keep rule covers.
    NoKeepRule,
    /// A manifest that still has a tag after the plan.
    Tagged,
    /// An untagged manifest pulled within a `keep_pulled_within_days`-only
    /// rule's window.
    Pulled {
        /// The rule's index.
        rule: usize,
        /// Whole days since the last pull.
        days_ago: u64,
    },
    /// A manifest listed by a kept index.
    ChildOf {
        /// The index.
        index: Digest,
    },
    /// A manifest whose subject is kept.
    ReferrerOf {
        /// The subject.
        subject: Digest,
    },
    /// A manifest in a repository no untagged rule covers.
    NoUntaggedRule,
    /// An untagged manifest not yet older than any untagged rule covering
    /// its repository allows.
    NotOldEnough,
}

impl CompiledPolicy {
    /// Plans what this policy deletes from `snapshot`.
    ///
    /// `is_immutable(repository, tag)` says whether a tag is protected by an
    /// immutability rule; such a tag is never deleted. Pure: the same
    /// arguments give the same plan, whatever the order of the snapshot's
    /// lists.
    pub fn plan(
        &self,
        snapshot: &Snapshot,
        is_immutable: impl Fn(&RepoName, &Tag) -> bool,
    ) -> Plan {
        let mut repositories: Vec<&RepositorySnapshot> = snapshot.repositories.iter().collect();
        repositories.sort_by(|a, b| a.name.cmp(&b.name));
        let mut plan = Plan::default();
        for repository in repositories {
            RepositoryPlanner::new(self, snapshot.now_unix, repository)
                .run(&is_immutable, &mut plan);
        }
        plan
    }
}

/// A manifest's standing before the kept set is closed over children and
/// referrers.
enum Standing {
    /// Kept in its own right.
    Root(KeepReason),
    /// Deleted unless something kept reaches it.
    Condemned {
        rule: usize,
        older_than_days: u32,
        age_days: u64,
    },
    /// An untagged referrer no rule deletes by age, whose subject is in the
    /// repository: it stays exactly if its subject does.
    FollowsSubject,
}

struct RepositoryPlanner<'a> {
    repository: &'a RepositorySnapshot,
    now: u64,
    /// Keep rules covering the repository, with their indexes.
    keep_rules: Vec<(usize, &'a CompiledRule)>,
    /// Untagged rules covering the repository: index, days, seconds.
    untagged_rules: Vec<(usize, u32, u64)>,
    tags: BTreeMap<&'a Tag, &'a TagRecord>,
    manifests: BTreeMap<&'a Digest, &'a ManifestRecord>,
}

impl<'a> RepositoryPlanner<'a> {
    fn new(policy: &'a CompiledPolicy, now: u64, repository: &'a RepositorySnapshot) -> Self {
        let path = repository.path_in_tenant();
        let mut keep_rules = Vec::new();
        let mut untagged_rules = Vec::new();
        for (index, rule) in policy.rules.iter().enumerate() {
            if !rule.covers(path) {
                continue;
            }
            match rule.kind {
                Kind::Keep { .. } => keep_rules.push((index, rule)),
                Kind::Untagged { older_than_secs } => {
                    let days = rule.source.untagged_older_than_days.unwrap_or_default();
                    untagged_rules.push((index, days, older_than_secs));
                }
            }
        }
        let mut tags = BTreeMap::new();
        for t in &repository.tags {
            tags.entry(&t.tag).or_insert(t);
        }
        let mut manifests = BTreeMap::new();
        for m in &repository.manifests {
            manifests.entry(&m.digest).or_insert(m);
        }
        RepositoryPlanner {
            repository,
            now,
            keep_rules,
            untagged_rules,
            tags,
            manifests,
        }
    }

    fn run(&self, is_immutable: &impl Fn(&RepoName, &Tag) -> bool, plan: &mut Plan) {
        let kept_tags = self.judge_tags(is_immutable, plan);
        self.judge_manifests(&kept_tags, plan);
    }

    /// Seconds since `t` (0 for a time in the future).
    fn age(&self, t: u64) -> u64 {
        self.now.saturating_sub(t)
    }

    fn pulled_age(&self, digest: &Digest) -> Option<u64> {
        let m = self.manifests.get(digest)?;
        m.last_pulled_unix.map(|t| self.age(t))
    }

    /// Decides every tag; returns the digests kept tags point at.
    fn judge_tags(
        &self,
        is_immutable: &impl Fn(&RepoName, &Tag) -> bool,
        plan: &mut Plan,
    ) -> BTreeSet<&'a Digest> {
        let name = &self.repository.name;
        let target = |t: &TagRecord| Target::Tag {
            repository: name.clone(),
            tag: t.tag.clone(),
            digest: t.digest.clone(),
        };
        let mut kept_digests = BTreeSet::new();
        if self.keep_rules.is_empty() {
            for t in self.tags.values() {
                kept_digests.insert(&t.digest);
                plan.kept.push(Kept {
                    target: target(t),
                    reason: KeepReason::NoKeepRule,
                });
            }
            return kept_digests;
        }
        let ranks: Vec<HashMap<&Tag, (usize, usize)>> = self
            .keep_rules
            .iter()
            .map(|(_, rule)| self.rank(rule))
            .collect();
        for t in self.tags.values() {
            let mut misses = Vec::new();
            let mut kept_by = None;
            for ((index, rule), rank) in self.keep_rules.iter().zip(&ranks) {
                match self.judge_tag(rule, rank, t) {
                    None => {
                        kept_by = Some(*index);
                        break;
                    }
                    Some(miss) => misses.push(RuleMiss { rule: *index, miss }),
                }
            }
            let reason = match kept_by {
                Some(rule) => KeepReason::Rule { rule },
                None if is_immutable(name, &t.tag) => KeepReason::Immutable,
                None => {
                    plan.deletions.push(Deletion {
                        target: target(t),
                        reason: Reason::NotKept { misses },
                    });
                    continue;
                }
            };
            kept_digests.insert(&t.digest);
            plan.kept.push(Kept {
                target: target(t),
                reason,
            });
        }
        kept_digests
    }

    /// The place (from 1, newest first) of each tag the rule's `tag`
    /// pattern matches, and how many it matches. Ties in push time go by
    /// name, so the ranking never depends on input order.
    fn rank(&self, rule: &CompiledRule) -> HashMap<&'a Tag, (usize, usize)> {
        let mut candidates: Vec<&TagRecord> = self
            .tags
            .values()
            .copied()
            .filter(|t| {
                rule.tag
                    .as_ref()
                    .is_none_or(|re| re.is_match(t.tag.as_str()))
            })
            .collect();
        candidates.sort_by(|a, b| {
            (Reverse(a.pushed_unix), &a.tag).cmp(&(Reverse(b.pushed_unix), &b.tag))
        });
        let total = candidates.len();
        candidates
            .into_iter()
            .enumerate()
            .map(|(i, t)| (&t.tag, (i + 1, total)))
            .collect()
    }

    /// `None` if the rule keeps the tag, else its first failing condition.
    fn judge_tag(
        &self,
        rule: &CompiledRule,
        rank: &HashMap<&Tag, (usize, usize)>,
        t: &TagRecord,
    ) -> Option<Miss> {
        if let (Some(re), Some(pattern)) = (&rule.tag, &rule.source.tag) {
            if !re.is_match(t.tag.as_str()) {
                return Some(Miss::Tag {
                    pattern: pattern.clone(),
                });
            }
        }
        if let Some(keep_last) = rule.source.keep_last {
            let (position, candidates) = rank.get(&t.tag).copied().unwrap_or((usize::MAX, 0));
            if position > keep_last as usize {
                return Some(Miss::KeepLast {
                    position,
                    candidates,
                    keep_last,
                });
            }
        }
        if let Some(days) = rule.source.keep_pulled_within_days {
            let pulled = self.pulled_age(&t.digest);
            if pulled.is_none_or(|age| age > u64::from(days) * DAY_SECS) {
                return Some(Miss::KeepPulled {
                    within_days: days,
                    last_pulled_days_ago: pulled.map(|age| age / DAY_SECS),
                });
            }
        }
        None
    }

    /// Decides every manifest, given the digests kept tags point at.
    fn judge_manifests(&self, tagged: &BTreeSet<&'a Digest>, plan: &mut Plan) {
        let name = &self.repository.name;
        let target = |d: &Digest| Target::Manifest {
            repository: name.clone(),
            digest: d.clone(),
        };
        if self.untagged_rules.is_empty() {
            for d in self.manifests.keys() {
                let reason = if tagged.contains(d) {
                    KeepReason::Tagged
                } else {
                    KeepReason::NoUntaggedRule
                };
                plan.kept.push(Kept {
                    target: target(d),
                    reason,
                });
            }
            return;
        }

        let mut standing: BTreeMap<&Digest, Standing> = self
            .manifests
            .iter()
            .map(|(d, m)| (*d, self.standing(m, tagged.contains(d))))
            .collect();
        self.settle_subject_loops(&mut standing);
        let kept = self.close(&standing);

        let tagged_before: HashSet<&Digest> = self.tags.values().map(|t| &t.digest).collect();
        let deleted: BTreeSet<&Digest> = self
            .manifests
            .keys()
            .copied()
            .filter(|d| !kept.contains_key(d))
            .collect();
        for d in self.deletion_order(&deleted) {
            let m = self.manifests[d];
            let reason = match (self.subject_here(m), &standing[d]) {
                (Some(subject), _) if deleted.contains(subject) => Reason::ReferrerOfDeleted {
                    subject: subject.clone(),
                },
                (
                    _,
                    Standing::Condemned {
                        rule,
                        older_than_days,
                        age_days,
                    },
                ) => Reason::Untagged {
                    rule: *rule,
                    older_than_days: *older_than_days,
                    age_days: *age_days,
                    untagged_by_plan: tagged_before.contains(d),
                },
                // Roots are kept, and a follower is deleted only with its
                // subject (handled above).
                _ => unreachable!("manifest {d} deleted without a reason"),
            };
            plan.deletions.push(Deletion {
                target: target(d),
                reason,
            });
        }
        for (d, reason) in kept {
            plan.kept.push(Kept {
                target: target(d),
                reason,
            });
        }
    }

    /// A manifest's standing on its own, before children and referrers.
    fn standing(&self, m: &ManifestRecord, tagged: bool) -> Standing {
        if tagged {
            return Standing::Root(KeepReason::Tagged);
        }
        if let Some(age) = m.last_pulled_unix.map(|t| self.age(t)) {
            let pulled_rule = self.keep_rules.iter().find_map(|(index, rule)| {
                let pulled_only = matches!(rule.kind, Kind::Keep { pulled_only: true });
                let days = rule.source.keep_pulled_within_days?;
                (pulled_only && age <= u64::from(days) * DAY_SECS).then_some(*index)
            });
            if let Some(rule) = pulled_rule {
                return Standing::Root(KeepReason::Pulled {
                    rule,
                    days_ago: age / DAY_SECS,
                });
            }
        }
        let age = self.age(m.pushed_unix);
        let condemned = self
            .untagged_rules
            .iter()
            .find(|(_, _, secs)| age > *secs)
            .map(|&(rule, older_than_days, _)| Standing::Condemned {
                rule,
                older_than_days,
                age_days: age / DAY_SECS,
            });
        match condemned {
            Some(c) => c,
            None if self.subject_here(m).is_some() => Standing::FollowsSubject,
            None => Standing::Root(KeepReason::NotOldEnough),
        }
    }

    /// The manifest's subject, if it is another manifest of the repository.
    fn subject_here(&self, m: &ManifestRecord) -> Option<&'a Digest> {
        let (s, _) = self.manifests.get_key_value(m.subject.as_ref()?)?;
        (*s != &m.digest).then_some(*s)
    }

    /// A referrer that follows its subject needs a chain of subjects that
    /// ends in a manifest with a standing of its own. A chain that loops
    /// (impossible with real digests, possible in a bad snapshot) decides
    /// nothing, so its members, and the referrers that lead into it, stay as
    /// any young untagged manifest does.
    fn settle_subject_loops(&self, standing: &mut BTreeMap<&'a Digest, Standing>) {
        let follows = |s: &Standing| matches!(s, Standing::FollowsSubject);
        let mut grounded: HashMap<&Digest, bool> = HashMap::new();
        for (d, m) in &self.manifests {
            if !follows(&standing[d]) || grounded.contains_key(d) {
                continue;
            }
            let mut path = Vec::new();
            let mut on_path = HashSet::new();
            let (mut cur, mut cur_m): (&Digest, &ManifestRecord) = (d, m);
            let result = loop {
                if let Some(&g) = grounded.get(cur) {
                    break g;
                }
                if !follows(&standing[cur]) {
                    break true;
                }
                if !on_path.insert(cur) {
                    break false;
                }
                path.push(cur);
                // A manifest that follows its subject has one here.
                let Some(next) = self.subject_here(cur_m) else {
                    break true;
                };
                (cur, cur_m) = (next, self.manifests[next]);
            };
            for p in path {
                grounded.insert(p, result);
            }
        }
        for (d, g) in grounded {
            if !g {
                standing.insert(d, Standing::Root(KeepReason::NotOldEnough));
            }
        }
    }

    /// The kept manifests: the roots, then, transitively, the children of
    /// kept indexes and the referrers of kept manifests; each with the
    /// first reason found (breadth first, roots in digest order).
    fn close(&self, standing: &BTreeMap<&'a Digest, Standing>) -> BTreeMap<&'a Digest, KeepReason> {
        let mut referrers: HashMap<&Digest, Vec<&'a Digest>> = HashMap::new();
        for (d, m) in &self.manifests {
            if let Some(s) = self.subject_here(m) {
                referrers.entry(s).or_default().push(*d);
            }
        }
        let mut kept: BTreeMap<&'a Digest, KeepReason> = BTreeMap::new();
        let mut queue = VecDeque::new();
        for (d, s) in standing {
            if let Standing::Root(reason) = s {
                kept.insert(*d, reason.clone());
                queue.push_back(*d);
            }
        }
        while let Some(d) = queue.pop_front() {
            let m = self.manifests[d];
            let children = m
                .children
                .iter()
                .filter_map(|c| self.manifests.get_key_value(c).map(|(c, _)| *c))
                .map(|c| (c, KeepReason::ChildOf { index: d.clone() }));
            let refs = referrers
                .get(d)
                .into_iter()
                .flatten()
                .map(|r| (*r, KeepReason::ReferrerOf { subject: d.clone() }));
            for (next, reason) in children.chain(refs) {
                if !kept.contains_key(next) {
                    kept.insert(next, reason);
                    queue.push_back(next);
                }
            }
        }
        kept
    }

    /// `deleted` ordered so that nothing is deleted while a deleted index
    /// still lists it or a deleted referrer still names it as subject; ties
    /// (and any loop a bad snapshot holds) by digest.
    fn deletion_order(&self, deleted: &BTreeSet<&'a Digest>) -> Vec<&'a Digest> {
        let edges = |d: &Digest| -> Vec<&'a Digest> {
            let m = self.manifests[d];
            m.children
                .iter()
                .chain(m.subject.as_ref())
                .filter_map(|t| deleted.get(t).copied())
                .collect()
        };
        let mut pending: BTreeMap<&Digest, usize> = deleted.iter().map(|d| (*d, 0)).collect();
        for d in deleted {
            for t in edges(d) {
                *pending.get_mut(t).expect("edge inside deleted") += 1;
            }
        }
        let mut ready: BTreeSet<&Digest> = pending
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(d, _)| *d)
            .collect();
        let mut order = Vec::with_capacity(deleted.len());
        let mut placed = HashSet::new();
        while let Some(d) = ready.pop_first() {
            order.push(d);
            placed.insert(d);
            for t in edges(d) {
                let n = pending.get_mut(t).expect("edge inside deleted");
                *n -= 1;
                if *n == 0 {
                    ready.insert(t);
                }
            }
        }
        order.extend(deleted.iter().copied().filter(|d| !placed.contains(d)));
        order
    }
}

impl Plan {
    /// Whether the plan deletes nothing.
    pub fn is_empty(&self) -> bool {
        self.deletions.is_empty()
    }

    /// The dry run as text: the policy's rules (which the reasons cite by
    /// index), one line per deletion, and a count.
    pub fn render(&self, policy: &CompiledPolicy) -> String {
        let mut out = String::new();
        for (i, rule) in policy.rules().enumerate() {
            out.push_str(&format!("rule {i}: {rule}\n"));
        }
        for d in &self.deletions {
            out.push_str(&format!("{d}\n"));
        }
        let tags = self
            .deletions
            .iter()
            .filter(|d| matches!(d.target, Target::Tag { .. }))
            .count();
        let manifests = self.deletions.len() - tags;
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        out.push_str(&format!(
            "{} and {} to delete\n",
            plural(tags, "tag"),
            plural(manifests, "manifest")
        ));
        out
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tag {
                repository, tag, ..
            } => write!(f, "tag {repository}:{tag}"),
            Target::Manifest { repository, digest } => {
                write!(f, "manifest {repository}@{digest}")
            }
        }
    }
}

impl fmt::Display for Deletion {
    /// `delete tag acme/app:v1 — no rule keeps it: …`, the line a dry run
    /// prints and a deletion is logged with.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "delete {} — {}", self.target, self.reason)
    }
}

impl fmt::Display for Kept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "keep {} — {}", self.target, self.reason)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotKept { misses } => {
                f.write_str("no rule keeps it: ")?;
                for (i, m) in misses.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "rule {}: {}", m.rule, m.miss)?;
                }
                Ok(())
            }
            Reason::Untagged {
                rule,
                older_than_days,
                age_days,
                untagged_by_plan,
            } => {
                write!(f, "untagged")?;
                if *untagged_by_plan {
                    write!(f, " (its last tag removed by this plan)")?;
                }
                write!(
                    f,
                    ", pushed {age_days} days ago: rule {rule}: untagged_older_than_days {older_than_days}"
                )
            }
            Reason::ReferrerOfDeleted { subject } => {
                write!(f, "untagged referrer of {subject}, which this plan deletes")
            }
        }
    }
}

impl fmt::Display for Miss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Miss::Tag { pattern } => write!(f, "name does not match tag {pattern}"),
            Miss::KeepLast {
                position,
                candidates,
                keep_last,
            } => write!(
                f,
                "{} newest of {candidates}, keep_last {keep_last}",
                Ordinal(*position)
            ),
            Miss::KeepPulled {
                within_days,
                last_pulled_days_ago,
            } => {
                match last_pulled_days_ago {
                    Some(days) => write!(f, "last pulled {days} days ago")?,
                    None => f.write_str("never pulled")?,
                }
                write!(f, ", keep_pulled_within_days {within_days}")
            }
        }
    }
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepReason::Rule { rule } => write!(f, "kept by rule {rule}"),
            KeepReason::Immutable => f.write_str("immutable (no rule keeps it)"),
            KeepReason::NoKeepRule => f.write_str("no keep rule covers the repository"),
            KeepReason::Tagged => f.write_str("still tagged"),
            KeepReason::Pulled { rule, days_ago } => {
                write!(f, "pulled {days_ago} days ago: kept by rule {rule}")
            }
            KeepReason::ChildOf { index } => write!(f, "child of kept index {index}"),
            KeepReason::ReferrerOf { subject } => write!(f, "referrer of kept manifest {subject}"),
            KeepReason::NoUntaggedRule => f.write_str("no untagged rule covers the repository"),
            KeepReason::NotOldEnough => f.write_str("not old enough for any untagged rule"),
        }
    }
}

/// `1st`, `2nd`, `3rd`, `4th`, `11th`, `21st`.
struct Ordinal(usize);

impl fmt::Display for Ordinal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        let suffix = match (n % 10, n % 100) {
            (_, 11..=13) => "th",
            (1, _) => "st",
            (2, _) => "nd",
            (3, _) => "rd",
            _ => "th",
        };
        write!(f, "{n}{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::Ordinal;

    #[test]
    fn ordinals() {
        let got: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111]
            .map(|n| Ordinal(n).to_string())
            .into();
        assert_eq!(
            got,
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st",
                "111th"
            ]
        );
    }
}
