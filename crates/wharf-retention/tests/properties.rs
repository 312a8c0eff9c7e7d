//! Properties of the planner over many random policies and snapshots, each
//! made from one seed (a failing seed is printed and replays exactly).
//!
//! Checked against an oracle written apart from the planner: what rules
//! keep, which tags must stay, and that the kept manifests are closed over
//! tags, index children and referrers.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{d, DAY, NOW};
use wharf_core::{Digest, RepoName, Tag};
use wharf_retention::{
    KeepReason, ManifestRecord, Policy, Reason, RepositorySnapshot, Rule, Snapshot, TagRecord,
    Target,
};

/// xorshift64*: small, seedable, good enough to pick shapes.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

const REPOS: [&str; 4] = ["acme/app", "acme/app/web", "acme/db", "acme"];
const TAGS: [&str; 8] = ["v1", "v2", "v3", "v10", "latest", "a", "b", "dev"];

fn random_rule(rng: &mut Rng) -> Rule {
    let repository = rng
        .chance(50)
        .then(|| {
            rng.pick(&["app", "app/.*", "app(/.*)?", "db", ""])
                .to_string()
        })
        .filter(|p| !p.is_empty());
    if rng.chance(30) {
        return Rule {
            repository,
            untagged_older_than_days: Some(1 + rng.below(40) as u32),
            ..Rule::default()
        };
    }
    loop {
        let rule = Rule {
            repository: repository.clone(),
            tag: rng.chance(40).then(|| {
                rng.pick(&["v.*", "v[0-9]", "[a-c]", "latest|dev"])
                    .to_string()
            }),
            keep_last: rng.chance(50).then(|| 1 + rng.below(4) as u32),
            keep_pulled_within_days: rng.chance(40).then(|| 1 + rng.below(30) as u32),
            untagged_older_than_days: None,
        };
        if rule.tag.is_some() || rule.keep_last.is_some() || rule.keep_pulled_within_days.is_some()
        {
            return rule;
        }
    }
}

fn random_repo(rng: &mut Rng, name: &str) -> RepositorySnapshot {
    let count = rng.below(12) as u32;
    let mut manifests = Vec::new();
    for n in 0..count {
        // Subjects and children point only at lower numbers: a DAG, as
        // content addressing guarantees.
        let subject = (n > 0 && rng.chance(25)).then(|| d(rng.below(u64::from(n)) as u32));
        let children = if n > 1 && rng.chance(25) {
            let mut c: Vec<Digest> = (0..1 + rng.below(3))
                .map(|_| d(rng.below(u64::from(n)) as u32))
                .collect();
            c.dedup();
            c
        } else {
            Vec::new()
        };
        manifests.push(ManifestRecord {
            digest: d(n),
            pushed_unix: NOW - rng.below(60) * DAY - rng.below(DAY),
            last_pulled_unix: rng.chance(40).then(|| NOW - rng.below(40) * DAY),
            subject,
            children,
        });
    }
    let mut tags = Vec::new();
    for t in TAGS {
        if rng.chance(50) {
            tags.push(TagRecord {
                tag: t.parse().unwrap(),
                // Now and then a tag whose manifest is not in the snapshot.
                digest: d(rng.below(u64::from(count) + 1) as u32),
                pushed_unix: NOW - rng.below(20) * DAY,
            });
        }
    }
    RepositorySnapshot {
        name: name.parse().unwrap(),
        tags,
        manifests,
    }
}

struct Case {
    policy: Policy,
    snapshot: Snapshot,
    immutable: BTreeSet<(String, String)>,
}

fn random_case(seed: u64) -> Case {
    let mut rng = Rng::new(seed);
    let policy = Policy {
        rules: (0..rng.below(5)).map(|_| random_rule(&mut rng)).collect(),
    };
    let mut repositories = Vec::new();
    for name in REPOS {
        if rng.chance(70) {
            repositories.push(random_repo(&mut rng, name));
        }
    }
    let mut immutable = BTreeSet::new();
    for r in &repositories {
        for t in &r.tags {
            if rng.chance(10) {
                immutable.insert((r.name.to_string(), t.tag.to_string()));
            }
        }
    }
    Case {
        policy,
        snapshot: Snapshot {
            now_unix: NOW,
            repositories,
        },
        immutable,
    }
}

fn is_immutable(set: &BTreeSet<(String, String)>) -> impl Fn(&RepoName, &Tag) -> bool + '_ {
    |r, t| set.contains(&(r.to_string(), t.to_string()))
}

// The oracle: each rule read straight from its fields.

fn anchored(p: &str) -> regex::Regex {
    thread_local! {
        static CACHE: std::cell::RefCell<BTreeMap<String, regex::Regex>> = Default::default();
    }
    CACHE.with_borrow_mut(|cache| {
        cache
            .entry(p.to_string())
            .or_insert_with(|| regex::Regex::new(&format!("^(?:{p})$")).unwrap())
            .clone()
    })
}

fn covers(rule: &Rule, repo: &RepositorySnapshot) -> bool {
    let path = repo.name.as_str().split_once('/').map_or("", |x| x.1);
    rule.repository
        .as_deref()
        .is_none_or(|p| anchored(p).is_match(path))
}

fn is_keep(rule: &Rule) -> bool {
    rule.untagged_older_than_days.is_none()
}

fn pulled_within(repo: &RepositorySnapshot, digest: &Digest, days: u32) -> bool {
    repo.manifests
        .iter()
        .find(|m| &m.digest == digest)
        .and_then(|m| m.last_pulled_unix)
        .is_some_and(|t| NOW.saturating_sub(t) <= u64::from(days) * DAY)
}

fn rule_keeps_tag(rule: &Rule, repo: &RepositorySnapshot, t: &TagRecord) -> bool {
    let matches = |x: &TagRecord| {
        rule.tag
            .as_deref()
            .is_none_or(|p| anchored(p).is_match(x.tag.as_str()))
    };
    if !matches(t) {
        return false;
    }
    if let Some(n) = rule.keep_last {
        let newer = repo
            .tags
            .iter()
            .filter(|x| matches(x))
            .filter(|x| {
                (x.pushed_unix, std::cmp::Reverse(&x.tag))
                    > (t.pushed_unix, std::cmp::Reverse(&t.tag))
            })
            .count();
        if newer >= n as usize {
            return false;
        }
    }
    if let Some(days) = rule.keep_pulled_within_days {
        if !pulled_within(repo, &t.digest, days) {
            return false;
        }
    }
    true
}

fn check(seed: u64) {
    let case = random_case(seed);
    let compiled = case
        .policy
        .compile()
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let plan = compiled.plan(&case.snapshot, is_immutable(&case.immutable));
    let ctx = |what: &str| {
        format!(
            "seed {seed}: {what}\npolicy: {:?}\nplan:\n{}",
            case.policy,
            plan.render(&compiled)
        )
    };

    // Every tag and manifest appears exactly once, deleted or kept.
    let total: usize = case
        .snapshot
        .repositories
        .iter()
        .map(|r| r.tags.len() + r.manifests.len())
        .sum();
    assert_eq!(
        plan.deletions.len() + plan.kept.len(),
        total,
        "{}",
        ctx("partition")
    );

    let mut deleted_tags: BTreeSet<(String, String)> = BTreeSet::new();
    let mut deleted_manifests: BTreeMap<(String, Digest), Reason> = BTreeMap::new();
    for del in &plan.deletions {
        match &del.target {
            Target::Tag {
                repository, tag, ..
            } => {
                deleted_tags.insert((repository.to_string(), tag.to_string()));
            }
            Target::Manifest { repository, digest } => {
                deleted_manifests
                    .insert((repository.to_string(), digest.clone()), del.reason.clone());
            }
        }
    }
    let kept_reason: BTreeMap<(String, String), KeepReason> = plan
        .kept
        .iter()
        .filter_map(|k| match &k.target {
            Target::Manifest { repository, digest } => Some((
                (repository.to_string(), digest.to_string()),
                k.reason.clone(),
            )),
            Target::Tag { .. } => None,
        })
        .collect();

    for repo in &case.snapshot.repositories {
        let name = repo.name.to_string();
        let rules: Vec<&Rule> = case
            .policy
            .rules
            .iter()
            .filter(|r| covers(r, repo))
            .collect();
        let keep_rules: Vec<&Rule> = rules.iter().copied().filter(|r| is_keep(r)).collect();
        let untagged_days: Vec<u32> = rules
            .iter()
            .filter_map(|r| r.untagged_older_than_days)
            .collect();

        // Tags: exactly those no covering keep rule keeps, in a repository
        // some keep rule covers, and not immutable.
        for t in &repo.tags {
            let key = (name.clone(), t.tag.to_string());
            let should_delete = !keep_rules.is_empty()
                && !keep_rules.iter().any(|r| rule_keeps_tag(r, repo, t))
                && !case.immutable.contains(&key);
            assert_eq!(
                deleted_tags.contains(&key),
                should_delete,
                "{}",
                ctx(&format!("tag {key:?}"))
            );
        }

        let present: BTreeSet<&Digest> = repo.manifests.iter().map(|m| &m.digest).collect();
        let is_deleted = |dg: &Digest| deleted_manifests.contains_key(&(name.clone(), dg.clone()));
        let remaining_tags: Vec<&TagRecord> = repo
            .tags
            .iter()
            .filter(|t| !deleted_tags.contains(&(name.clone(), t.tag.to_string())))
            .collect();

        // No policy that deletes no untagged manifest here deletes one.
        if untagged_days.is_empty() {
            assert!(
                repo.manifests.iter().all(|m| !is_deleted(&m.digest)),
                "{}",
                ctx("uncovered")
            );
        }
        // What a remaining tag points at stays.
        for t in &remaining_tags {
            assert!(
                !is_deleted(&t.digest),
                "{}",
                ctx(&format!("tagged {}", t.tag))
            );
        }
        for m in &repo.manifests {
            if is_deleted(&m.digest) {
                // Deleted: untagged, not pulled-kept, and condemned by age
                // or following a deleted subject.
                assert!(
                    remaining_tags.iter().all(|t| t.digest != m.digest),
                    "{}",
                    ctx("deleted but tagged")
                );
                let pulled_kept = keep_rules.iter().any(|r| {
                    r.tag.is_none()
                        && r.keep_last.is_none()
                        && r.keep_pulled_within_days
                            .is_some_and(|days| pulled_within(repo, &m.digest, days))
                });
                assert!(!pulled_kept, "{}", ctx("deleted but pulled"));
                let age = NOW.saturating_sub(m.pushed_unix);
                let old = untagged_days
                    .iter()
                    .any(|days| age > u64::from(*days) * DAY);
                let subject_deleted = m
                    .subject
                    .as_ref()
                    .is_some_and(|s| present.contains(s) && is_deleted(s));
                assert!(old || subject_deleted, "{}", ctx("deleted without cause"));
                match &deleted_manifests[&(name.clone(), m.digest.clone())] {
                    Reason::ReferrerOfDeleted { subject } => {
                        assert!(subject_deleted && m.subject.as_ref() == Some(subject))
                    }
                    Reason::Untagged { .. } => assert!(old && !subject_deleted),
                    Reason::NotKept { .. } => panic!("{}", ctx("manifest with a tag reason")),
                }
            } else {
                // Kept: so are its children and its referrers.
                for c in m.children.iter().filter(|c| present.contains(c)) {
                    assert!(!is_deleted(c), "{}", ctx("child of a kept index deleted"));
                }
                for r in repo
                    .manifests
                    .iter()
                    .filter(|r| r.subject.as_ref() == Some(&m.digest))
                {
                    assert!(
                        !is_deleted(&r.digest),
                        "{}",
                        ctx("referrer of a kept manifest deleted")
                    );
                }
                // And the reason given holds.
                let reason = &kept_reason[&(name.clone(), m.digest.to_string())];
                match reason {
                    KeepReason::Tagged => {
                        assert!(remaining_tags.iter().any(|t| t.digest == m.digest))
                    }
                    KeepReason::ChildOf { index } => {
                        assert!(!is_deleted(index));
                        let idx = repo.manifests.iter().find(|x| &x.digest == index).unwrap();
                        assert!(idx.children.contains(&m.digest));
                    }
                    KeepReason::ReferrerOf { subject } => {
                        assert!(!is_deleted(subject) && m.subject.as_ref() == Some(subject))
                    }
                    KeepReason::NoUntaggedRule => assert!(untagged_days.is_empty()),
                    KeepReason::NotOldEnough => {
                        let age = NOW.saturating_sub(m.pushed_unix);
                        assert!(untagged_days
                            .iter()
                            .all(|days| age <= u64::from(*days) * DAY))
                    }
                    KeepReason::Pulled { rule, .. } => {
                        let r = &case.policy.rules[*rule];
                        assert!(covers(r, repo) && r.tag.is_none() && r.keep_last.is_none());
                        assert!(pulled_within(
                            repo,
                            &m.digest,
                            r.keep_pulled_within_days.unwrap()
                        ))
                    }
                    other => panic!("{}", ctx(&format!("manifest kept as {other:?}"))),
                }
            }
        }
    }

    // Order: within a repository an index before its children and a
    // referrer before its subject.
    let position: BTreeMap<(String, Digest), usize> = plan
        .deletions
        .iter()
        .enumerate()
        .filter_map(|(i, del)| match &del.target {
            Target::Manifest { repository, digest } => {
                Some(((repository.to_string(), digest.clone()), i))
            }
            Target::Tag { .. } => None,
        })
        .collect();
    for repo in &case.snapshot.repositories {
        let name = repo.name.to_string();
        for m in &repo.manifests {
            let Some(&at) = position.get(&(name.clone(), m.digest.clone())) else {
                continue;
            };
            for target in m.children.iter().chain(m.subject.as_ref()) {
                if let Some(&then) = position.get(&(name.clone(), target.clone())) {
                    assert!(at < then, "{}", ctx("deletion order"));
                }
            }
        }
    }

    // Determinism: the same content in another order plans the same.
    let mut shuffled = case.snapshot.clone();
    let mut rng = Rng::new(seed ^ 0xDEAD_BEEF);
    shuffled.repositories.reverse();
    for r in &mut shuffled.repositories {
        for i in (1..r.tags.len()).rev() {
            r.tags.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for i in (1..r.manifests.len()).rev() {
            r.manifests.swap(i, rng.below(i as u64 + 1) as usize);
        }
    }
    assert_eq!(
        compiled.plan(&shuffled, is_immutable(&case.immutable)),
        plan,
        "seed {seed}: order"
    );
}

#[test]
fn random_policies_and_snapshots_keep_what_they_must() {
    for seed in 0..3_000 {
        check(seed);
    }
}

#[test]
fn the_generator_reaches_the_interesting_cases() {
    // Guards the property test against a generator that never deletes a
    // referrer with its subject or keeps a child of a kept index.
    let mut seen = BTreeSet::new();
    for seed in 0..3_000 {
        let case = random_case(seed);
        let plan = case
            .policy
            .compile()
            .unwrap()
            .plan(&case.snapshot, is_immutable(&case.immutable));
        for del in &plan.deletions {
            seen.insert(match del.reason {
                Reason::NotKept { .. } => "not_kept",
                Reason::Untagged {
                    untagged_by_plan: true,
                    ..
                } => "untagged_by_plan",
                Reason::Untagged { .. } => "untagged",
                Reason::ReferrerOfDeleted { .. } => "referrer_of_deleted",
            });
        }
        for k in &plan.kept {
            seen.insert(match k.reason {
                KeepReason::ChildOf { .. } => "child_of",
                KeepReason::ReferrerOf { .. } => "referrer_of",
                KeepReason::Immutable => "immutable",
                KeepReason::Pulled { .. } => "pulled",
                _ => "other",
            });
        }
    }
    assert_eq!(seen.len(), 9, "{seen:?}");
}
