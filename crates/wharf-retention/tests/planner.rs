//! The planner's semantics, one rule shape or interaction per test.

mod common;

use common::*;
use wharf_core::{RepoName, Tag};
use wharf_retention::{KeepReason, Reason, Target};

#[test]
fn empty_policy_deletes_nothing() {
    let p = plan(
        r#"{"rules":[]}"#,
        vec![repo("acme/app")
            .image(1, 900)
            .tag("old", 1, 900)
            .image(2, 900)],
    );
    assert!(p.is_empty());
    assert_eq!(p.kept.len(), 3);
}

#[test]
fn keep_last_keeps_the_newest_tags_by_push_time() {
    // Push times, not names or manifest ages, decide; a tie goes by name.
    let p = plan(
        r#"{"rules":[{"keep_last":2}]}"#,
        vec![repo("acme/app")
            .image(1, 50)
            .image(2, 40)
            .tag("a", 1, 3)
            .tag("b", 2, 1)
            .tag("c", 2, 2)
            .tag_at("d", 1, ago(2))],
    );
    assert_eq!(deleted_tags(&p), ["acme/app:a", "acme/app:d"]);
    assert_eq!(
        tag_line(&p, "acme/app:d"),
        "delete tag acme/app:d — no rule keeps it: rule 0: 3rd newest of 4, keep_last 2"
    );
    // Both manifests keep a tag; nothing else goes.
    assert!(deleted_manifests(&p).is_empty());
}

#[test]
fn tag_pattern_keeps_matching_tags() {
    let p = plan(
        r#"{"rules":[{"tag":"v[0-9]+(\\.[0-9]+)*"}]}"#,
        vec![repo("acme/app")
            .image(1, 5)
            .tag("v1", 1, 5)
            .tag("v1.2.3", 1, 5)
            .tag("v1-rc", 1, 5)
            .tag("latest", 1, 5)
            .tag("xv1", 1, 5)],
    );
    assert_eq!(
        deleted_tags(&p),
        ["acme/app:latest", "acme/app:v1-rc", "acme/app:xv1"]
    );
    assert_eq!(
        tag_line(&p, "acme/app:latest"),
        "delete tag acme/app:latest — no rule keeps it: rule 0: name does not match tag v[0-9]+(\\.[0-9]+)*"
    );
}

#[test]
fn keep_pulled_keeps_tags_pulled_within_the_window() {
    let p = plan(
        r#"{"rules":[{"keep_pulled_within_days":30}]}"#,
        vec![repo("acme/app")
            .image(1, 100)
            .pulled(1, 30)
            .image(2, 100)
            .image(3, 100)
            .tag("exactly-30-days", 1, 100)
            .tag("never", 2, 100)
            .tag("long-ago", 3, 100)
            .pulled(3, 31)],
    );
    assert_eq!(deleted_tags(&p), ["acme/app:long-ago", "acme/app:never"]);
    assert_eq!(
        tag_line(&p, "acme/app:never"),
        "delete tag acme/app:never — no rule keeps it: rule 0: never pulled, keep_pulled_within_days 30"
    );
    assert_eq!(
        tag_line(&p, "acme/app:long-ago"),
        "delete tag acme/app:long-ago — no rule keeps it: rule 0: last pulled 31 days ago, keep_pulled_within_days 30"
    );
}

#[test]
fn untagged_older_than_deletes_old_untagged_manifests_only() {
    let r = repo("acme/app")
        .image(1, 31) // untagged, old: deleted
        .image(2, 30) // untagged, exactly 30 days: not older than 30
        .image_at(4, ago(30) - 1) // one second more: older than 30 days
        .image(3, 400) // tagged: kept
        .tag("latest", 3, 400);
    let p = plan(r#"{"rules":[{"untagged_older_than_days":30}]}"#, vec![r]);
    assert_eq!(deleted_set(&p), digests(&[1, 4]));
    assert!(
        deleted_tags(&p).is_empty(),
        "an untagged rule says nothing about tags"
    );
    assert_eq!(
        manifest_line(&p, 1),
        format!(
            "delete manifest acme/app@{} — untagged, pushed 31 days ago: rule 0: untagged_older_than_days 30",
            d(1)
        )
    );
}

#[test]
fn conditions_in_one_rule_combine_with_and() {
    // The 2 newest tags matching v.*: keep_last counts among v tags only.
    let p = plan(
        r#"{"rules":[{"tag":"v.*","keep_last":2}]}"#,
        vec![repo("acme/app")
            .image(1, 10)
            .tag("v1", 1, 10)
            .tag("v2", 1, 9)
            .tag("v3", 1, 8)
            .tag("latest", 1, 1)],
    );
    assert_eq!(deleted_tags(&p), ["acme/app:latest", "acme/app:v1"]);
    assert_eq!(
        tag_line(&p, "acme/app:v1"),
        "delete tag acme/app:v1 — no rule keeps it: rule 0: 3rd newest of 3, keep_last 2"
    );

    // keep_last AND keep_pulled: newest but never pulled is not enough.
    let p = plan(
        r#"{"rules":[{"keep_last":2,"keep_pulled_within_days":7}]}"#,
        vec![repo("acme/app")
            .image(1, 10)
            .image(2, 10)
            .pulled(2, 1)
            .tag("new-unpulled", 1, 1)
            .tag("new-pulled", 2, 2)
            .tag("old-pulled", 2, 3)],
    );
    assert_eq!(
        deleted_tags(&p),
        ["acme/app:new-unpulled", "acme/app:old-pulled"]
    );
}

#[test]
fn rules_combine_with_or() {
    let p = plan(
        r#"{"rules":[{"keep_last":1},{"tag":"release-.*"},{"keep_pulled_within_days":7}]}"#,
        vec![repo("acme/app")
            .image(1, 10)
            .image(2, 10)
            .pulled(2, 3)
            .tag("newest", 1, 1)
            .tag("release-1", 1, 5)
            .tag("pulled", 2, 6)
            .tag("nothing", 1, 7)],
    );
    assert_eq!(deleted_tags(&p), ["acme/app:nothing"]);
    assert_eq!(
        tag_line(&p, "acme/app:nothing"),
        "delete tag acme/app:nothing — no rule keeps it: rule 0: 4th newest of 4, keep_last 1; \
         rule 1: name does not match tag release-.*; \
         rule 2: never pulled, keep_pulled_within_days 7"
    );
    let reasons: Vec<(String, KeepReason)> = p
        .kept
        .iter()
        .filter_map(|k| match &k.target {
            Target::Tag { tag, .. } => Some((tag.to_string(), k.reason.clone())),
            Target::Manifest { .. } => None,
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("newest".to_string(), KeepReason::Rule { rule: 0 }),
            ("pulled".to_string(), KeepReason::Rule { rule: 2 }),
            ("release-1".to_string(), KeepReason::Rule { rule: 1 }),
        ]
    );
}

#[test]
fn repository_pattern_scopes_rules_to_paths_inside_the_tenant() {
    let repos = || {
        vec![
            repo("acme/app/web")
                .image(1, 90)
                .tag("a", 1, 9)
                .tag("b", 1, 8),
            repo("acme/app").image(1, 90).tag("a", 1, 9).tag("b", 1, 8),
            repo("acme/db")
                .image(1, 90)
                .tag("a", 1, 9)
                .tag("b", 1, 8)
                .image(2, 90),
            repo("acme").image(1, 90).tag("a", 1, 9).tag("b", 1, 8),
        ]
    };
    // `app/.*` matches the path `app/web` (namespace removed), not `app`
    // nor `db`; the repository named after the namespace has path "".
    let p = plan(
        r#"{"rules":[{"repository":"app/.*","keep_last":1},{"repository":"app/.*","untagged_older_than_days":1}]}"#,
        repos(),
    );
    assert_eq!(deleted_tags(&p), ["acme/app/web:a"]);
    assert!(
        deleted_manifests(&p).is_empty(),
        "acme/db is covered by no rule"
    );

    // The pattern matches the whole path: `app` covers acme/app only.
    let p = plan(r#"{"rules":[{"repository":"app","keep_last":1}]}"#, repos());
    assert_eq!(deleted_tags(&p), ["acme/app:a"]);
    // No pattern: every repository.
    let p = plan(r#"{"rules":[{"keep_last":1}]}"#, repos());
    assert_eq!(
        deleted_tags(&p),
        ["acme:a", "acme/app:a", "acme/app/web:a", "acme/db:a"]
    );
}

#[test]
fn immutable_tags_are_never_deleted() {
    let r = || {
        repo("acme/app")
            .image(1, 90)
            .image(2, 90)
            .tag("v1", 1, 90)
            .tag("v2", 2, 80)
            .tag("v3", 2, 1)
    };
    let immutable = |_: &RepoName, t: &Tag| t.as_str() == "v1";
    let policy = policy(r#"{"rules":[{"keep_last":1},{"untagged_older_than_days":1}]}"#);
    let p = policy.plan(&snapshot(vec![r()]), immutable);
    assert_eq!(deleted_tags(&p), ["acme/app:v2"]);
    // v1 stays, so its manifest is still tagged and stays too.
    assert!(deleted_manifests(&p).is_empty());
    let v1 = p
        .kept
        .iter()
        .find(|k| matches!(&k.target, Target::Tag { tag, .. } if tag.as_str() == "v1"))
        .unwrap();
    assert_eq!(v1.reason, KeepReason::Immutable);
    // Immutable tags still count in keep_last's ranking: v3 alone is kept
    // by rule 0, v2 goes even though v1 is older.
    let p = policy.plan(&snapshot(vec![r()]), |_, _| true);
    assert!(p.is_empty());
}

#[test]
fn a_manifest_untagged_by_the_plan_is_judged_as_untagged_in_it() {
    let p = plan(
        r#"{"rules":[{"keep_last":2},{"untagged_older_than_days":30}]}"#,
        vec![repo("acme/app")
            .image(1, 100) // loses its only tag, old: deleted
            .image(2, 10) // loses its only tag, young: stays untagged
            .image(3, 100) // loses one of two tags: still tagged
            .tag("v1", 1, 100)
            .tag("v2", 2, 10)
            .tag("v3", 3, 9)
            .tag("v4", 3, 1)
            .tag("v5", 3, 2)],
    );
    assert_eq!(
        deleted_tags(&p),
        ["acme/app:v1", "acme/app:v2", "acme/app:v3"]
    );
    assert_eq!(deleted_manifests(&p), [d(1)]);
    assert_eq!(
        manifest_line(&p, 1),
        format!(
            "delete manifest acme/app@{} — untagged (its last tag removed by this plan), \
             pushed 100 days ago: rule 1: untagged_older_than_days 30",
            d(1)
        )
    );
}

#[test]
fn children_of_a_kept_index_are_kept() {
    // 10 is a tagged index of 1 and 2; 11 a young untagged index of 3;
    // 12 an old untagged index of 4 and of 1 (shared with 10).
    let p = plan(
        r#"{"rules":[{"untagged_older_than_days":7}]}"#,
        vec![repo("acme/app")
            .image(1, 100)
            .image(2, 100)
            .image(3, 100)
            .image(4, 100)
            .index(10, &[1, 2], 100)
            .index(11, &[3], 1)
            .index(12, &[4, 1], 100)
            .tag("latest", 10, 100)],
    );
    // 12 goes before its child 4; 1 stays as a child of 10.
    assert_eq!(deleted_manifests(&p), [d(12), d(4)]);
    let reason = |n: u32| {
        p.kept
            .iter()
            .find(|k| matches!(&k.target, Target::Manifest { digest, .. } if *digest == d(n)))
            .map(|k| k.reason.clone())
            .unwrap()
    };
    assert_eq!(reason(1), KeepReason::ChildOf { index: d(10) });
    assert_eq!(reason(3), KeepReason::ChildOf { index: d(11) });
    assert_eq!(reason(11), KeepReason::NotOldEnough);
    assert_eq!(reason(10), KeepReason::Tagged);
}

#[test]
fn referrers_of_a_kept_manifest_are_kept() {
    // A tagged image with an old signature, and an old SBOM whose own
    // signature is old too.
    let p = plan(
        r#"{"rules":[{"untagged_older_than_days":7}]}"#,
        vec![repo("acme/app")
            .image(1, 100)
            .referrer(2, 1, 100)
            .referrer(3, 1, 100)
            .referrer(4, 3, 100)
            .tag("latest", 1, 100)],
    );
    assert!(p.is_empty(), "{:?}", p.deletions);
    assert!(p
        .kept
        .iter()
        .any(|k| k.reason == KeepReason::ReferrerOf { subject: d(3) }));
}

#[test]
fn an_untagged_referrer_of_a_deleted_manifest_goes_with_it() {
    // 1 is old and untagged; 2 a young signature of it; 3 a young SBOM of
    // it and 4 a young signature of that SBOM.
    let p = plan(
        r#"{"rules":[{"untagged_older_than_days":30}]}"#,
        vec![repo("acme/app")
            .image(1, 100)
            .referrer(2, 1, 1)
            .referrer(3, 1, 1)
            .referrer(4, 3, 1)],
    );
    let deleted = deleted_manifests(&p);
    assert_eq!(deleted.len(), 4);
    // Referrers before their subjects.
    let pos = |n: u32| deleted.iter().position(|x| *x == d(n)).unwrap();
    assert!(pos(2) < pos(1) && pos(3) < pos(1) && pos(4) < pos(3));
    assert_eq!(
        manifest_line(&p, 4),
        format!(
            "delete manifest acme/app@{} — untagged referrer of {}, which this plan deletes",
            d(4),
            d(3)
        )
    );
    let reason = &p
        .deletions
        .iter()
        .find(|x| matches!(&x.target, Target::Manifest { digest, .. } if *digest == d(2)))
        .unwrap()
        .reason;
    assert_eq!(reason, &Reason::ReferrerOfDeleted { subject: d(1) });
}

#[test]
fn a_tagged_referrer_is_judged_on_its_own() {
    let p = plan(
        r#"{"rules":[{"untagged_older_than_days":30}]}"#,
        vec![repo("acme/app")
            .image(1, 100)
            .referrer(2, 1, 100)
            .tag("sig", 2, 100)
            .referrer(3, 2, 1)],
    );
    // The subject goes; the tagged signature stays, and so does its own
    // young referrer (its subject is kept).
    assert_eq!(deleted_manifests(&p), [d(1)]);
}

#[test]
fn a_referrer_kept_for_another_reason_outlives_its_subject() {
    // The signature 2 of the deleted 1 is a child of the kept index 10
    // (odd, but a snapshot may say so); 3 was pulled yesterday and a
    // pulled-only rule covers it.
    let p = plan(
        r#"{"rules":[{"untagged_older_than_days":30},{"keep_pulled_within_days":7}]}"#,
        vec![repo("acme/app")
            .image(1, 100)
            .referrer(2, 1, 1)
            .referrer(3, 1, 1)
            .pulled(3, 1)
            .index(10, &[2], 1)
            .tag("x", 10, 1)],
    );
    assert_eq!(deleted_manifests(&p), [d(1)]);
}

#[test]
fn a_pulled_only_rule_keeps_untagged_manifests_pulled_by_digest() {
    let r = || {
        repo("acme/app")
            .image(1, 100)
            .pulled(1, 2) // pinned by digest somewhere, pulled 2 days ago
            .image(2, 100)
            .pulled(2, 20)
    };
    let p = plan(
        r#"{"rules":[{"untagged_older_than_days":30},{"keep_pulled_within_days":7}]}"#,
        vec![r()],
    );
    assert_eq!(deleted_manifests(&p), [d(2)]);
    assert!(p.kept.iter().any(|k| k.reason
        == KeepReason::Pulled {
            rule: 1,
            days_ago: 2
        }));
    // With a tag condition the rule cannot hold for an untagged manifest.
    let p = plan(
        r#"{"rules":[{"untagged_older_than_days":30},{"tag":".*","keep_pulled_within_days":7}]}"#,
        vec![r()],
    );
    assert_eq!(deleted_set(&p), digests(&[1, 2]));
}

#[test]
fn a_referrer_loop_in_a_bad_snapshot_deletes_nothing_young() {
    let p = plan(
        r#"{"rules":[{"untagged_older_than_days":30}]}"#,
        vec![repo("acme/app")
            .referrer(1, 2, 1)
            .referrer(2, 1, 1)
            .referrer(3, 3, 1)
            .referrer(4, 1, 1)],
    );
    assert!(p.is_empty(), "{:?}", p.deletions);
}

#[test]
fn times_in_the_future_count_as_age_zero() {
    let r = repo("acme/app").image_at(1, NOW + 100 * DAY);
    let p = plan(r#"{"rules":[{"untagged_older_than_days":1}]}"#, vec![r]);
    assert!(p.is_empty());
}

#[test]
fn the_plan_does_not_depend_on_input_order() {
    let repos = || {
        vec![
            repo("acme/b")
                .image(1, 100)
                .image(2, 100)
                .referrer(3, 1, 100)
                .index(4, &[1, 2], 100)
                .tag("v1", 4, 9)
                .tag("v2", 2, 9)
                .tag("v3", 2, 8),
            repo("acme/a")
                .image(1, 100)
                .image(2, 50)
                .tag("x", 1, 3)
                .tag("y", 2, 3),
        ]
    };
    let json = r#"{"rules":[{"keep_last":1},{"untagged_older_than_days":30}]}"#;
    let forward = plan(json, repos());
    let mut reversed = repos();
    reversed.reverse();
    for r in &mut reversed {
        r.0.tags.reverse();
        r.0.manifests.reverse();
    }
    let backward = plan(json, reversed);
    assert_eq!(forward, backward);
    // Repositories by name; tags by name before manifests; the index (4)
    // before its child (1), the referrer (3) before its subject (1).
    let lines: Vec<String> = forward
        .deletions
        .iter()
        .map(|x| x.target.to_string())
        .collect();
    assert_eq!(
        lines[..4],
        [
            "tag acme/a:y".to_string(),
            format!("manifest acme/a@{}", d(2)),
            "tag acme/b:v1".to_string(),
            "tag acme/b:v2".to_string(),
        ]
    );
    let b: Vec<_> = deleted_manifests(&forward)[1..].to_vec();
    assert_eq!(b.len(), 3);
    assert_eq!(b[2], d(1), "{b:?}");
}

#[test]
fn the_dry_run_renders_rules_deletions_and_counts() {
    let policy =
        policy(r#"{"rules":[{"repository":"app","keep_last":1},{"untagged_older_than_days":30}]}"#);
    let p = policy.plan(
        &snapshot(vec![repo("acme/app")
            .image(1, 40)
            .image(2, 1)
            .tag("old", 1, 40)
            .tag("new", 2, 1)]),
        no_immutable,
    );
    assert_eq!(
        p.render(&policy),
        format!(
            "rule 0: repository app, keep_last 1\n\
             rule 1: untagged_older_than_days 30\n\
             delete tag acme/app:old — no rule keeps it: rule 0: 2nd newest of 2, keep_last 1\n\
             delete manifest acme/app@{} — untagged (its last tag removed by this plan), pushed 40 days ago: rule 1: untagged_older_than_days 30\n\
             1 tag and 1 manifest to delete\n",
            d(1)
        )
    );
    // The plan is data: it round-trips through JSON for the admin API.
    let json = serde_json::to_string(&p).unwrap();
    assert!(json.contains(r#""why":"not_kept""#), "{json}");
    assert_eq!(
        serde_json::from_str::<wharf_retention::Plan>(&json).unwrap(),
        p
    );
}

#[test]
fn every_tag_and_manifest_is_either_deleted_or_kept_once() {
    let repos = vec![
        repo("acme/app")
            .image(1, 100)
            .image(2, 100)
            .index(3, &[1, 2], 100)
            .referrer(4, 3, 100)
            .tag("a", 3, 5)
            .tag("b", 3, 6),
        repo("acme/other").image(1, 100),
    ];
    let total: usize = repos
        .iter()
        .map(|r| r.0.tags.len() + r.0.manifests.len())
        .sum();
    let p = plan(
        r#"{"rules":[{"repository":"app","keep_last":1},{"untagged_older_than_days":1}]}"#,
        repos,
    );
    assert_eq!(p.deletions.len() + p.kept.len(), total);
    assert_eq!(deleted_tags(&p), ["acme/app:b"]);
}
