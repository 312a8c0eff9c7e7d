//! Retention at the registry layer: a plan applied after the state moved
//! on skips exactly the deletions the live state no longer allows (a tag
//! moved, a tag made immutable, a manifest tagged again), and pulls are
//! recorded once, off the request path, however often a manifest is
//! pulled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use wharf_core::{Digest, ImmutableTagRule, ImmutableTagSource, Reference, RepoName, Tag};
use wharf_meta::embedded::EmbeddedStore;
use wharf_meta::MetaStore;
use wharf_registry::{Registry, RegistryConfig};
use wharf_retention::{Policy, Target};
use wharf_storage::fs::FsStore;

const DAY: u64 = 86_400;

/// Protects tag `b` once switched on.
#[derive(Default)]
struct LateRule {
    on: AtomicBool,
}

impl ImmutableTagSource for LateRule {
    fn protecting(&self, _: &RepoName, tag: &Tag) -> Option<ImmutableTagRule> {
        (self.on.load(Ordering::SeqCst) && tag.as_str() == "b").then(|| ImmutableTagRule {
            tag: "b".into(),
            repository: None,
        })
    }

    fn guards(&self, _: &RepoName) -> bool {
        self.on.load(Ordering::SeqCst)
    }
}

async fn registry(dir: &std::path::Path, rule: Arc<LateRule>) -> (Registry, Arc<EmbeddedStore>) {
    let blobs = Arc::new(FsStore::open(dir.join("blobs")).await.unwrap());
    let meta = Arc::new(EmbeddedStore::open(dir.join("meta.redb")).unwrap());
    let reg =
        Registry::new(blobs, meta.clone(), RegistryConfig::default()).with_immutable_tags(rule);
    (reg, meta)
}

/// Pushes image `seed` to `repo` under `tag`; its digest.
async fn push(reg: &Registry, repo: &RepoName, tag: &str, seed: &str) -> Digest {
    let config = format!("{{\"seed\":\"{seed}\"}}");
    let layer = format!("layer of {seed}");
    let mut digests = Vec::new();
    for bytes in [config.as_bytes(), layer.as_bytes()] {
        let digest = Digest::sha256_of(bytes);
        let body = futures_util::stream::iter([Ok(Bytes::copy_from_slice(bytes))]).boxed();
        reg.push_blob(repo, &digest, body, None).await.unwrap();
        digests.push(digest);
    }
    let body = Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
        digests[0],
        config.len(),
        digests[1],
        layer.len()
    ));
    reg.put_manifest(repo, &reference(tag), None, body)
        .await
        .unwrap()
        .digest
}

fn reference(tag: &str) -> Reference {
    Reference::Tag(tag.parse().unwrap())
}

fn target_text(t: &Target) -> String {
    match t {
        Target::Tag { tag, .. } => format!("tag {tag}"),
        Target::Manifest { digest, .. } => format!("manifest {digest}"),
    }
}

#[tokio::test]
async fn a_stale_plan_skips_what_changed_since_and_makes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let rule = Arc::new(LateRule::default());
    let (reg, _) = registry(dir.path(), rule.clone()).await;
    let repo: RepoName = "acme/app".parse().unwrap();
    let a = push(&reg, &repo, "a", "a").await;
    let b = push(&reg, &repo, "b", "b").await;
    let c = push(&reg, &repo, "c", "c").await;
    let policy: Policy =
        serde_json::from_str(r#"{"rules": [{"tag": "keep"}, {"untagged_older_than_days": 1}]}"#)
            .unwrap();
    let policy = policy.compile().unwrap();
    let as_of = wharf_core::now_unix() + 2 * DAY;
    let plan = reg.plan_retention("acme", &policy, as_of).await.unwrap();
    assert_eq!(plan.deletions.len(), 6, "three tags and their manifests");

    // Since the plan: `a` moved to c's manifest, `b` became immutable.
    push(&reg, &repo, "a", "c").await;
    rule.on.store(true, Ordering::SeqCst);

    let report = reg.apply_plan("acme", plan, as_of).await;
    let mut deleted: Vec<String> = report
        .deleted
        .iter()
        .map(|d| target_text(&d.target))
        .collect();
    deleted.sort();
    let mut expected = vec!["tag c".to_string(), format!("manifest {a}")];
    expected.sort();
    assert_eq!(deleted, expected, "{report:#?}");
    let skipped: Vec<(String, &str)> = report
        .skipped
        .iter()
        .map(|s| (target_text(&s.deletion.target), s.skipped_because.as_str()))
        .collect();
    assert_eq!(skipped.len(), 4, "{skipped:#?}");
    let why = |what: &str| {
        skipped
            .iter()
            .find(|(t, _)| t == what)
            .map(|(_, w)| *w)
            .unwrap_or_else(|| panic!("{what} not skipped: {skipped:#?}"))
    };
    assert!(why("tag a").contains("no longer points at"));
    assert!(why("tag b").contains("immutable now"));
    assert!(why(&format!("manifest {b}")).contains("tagged"));
    assert!(why(&format!("manifest {c}")).contains("tagged"));

    // The live state: `a` and `b` stand, on c's and b's manifests.
    let get = |t: &'static str| {
        let (reg, repo) = (&reg, &repo);
        async move { reg.get_manifest(repo, &reference(t)).await }
    };
    assert_eq!(get("a").await.unwrap().digest, c);
    assert_eq!(get("b").await.unwrap().digest, b);
    assert!(get("c").await.is_err());
    assert!(reg
        .get_manifest(&repo, &Reference::Digest(a.clone()))
        .await
        .is_err());
}

#[tokio::test]
async fn pulls_are_recorded_once_off_the_request_path() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, meta) = registry(dir.path(), Arc::default()).await;
    let repo: RepoName = "acme/app".parse().unwrap();
    let d = push(&reg, &repo, "v1", "one").await;
    let pulled = || async {
        let snap = meta.retention_snapshot("acme").await.unwrap();
        snap[0].manifests[0].last_pulled_unix
    };
    assert_eq!(pulled().await, None);
    reg.get_manifest(&repo, &reference("v1")).await.unwrap();
    let mut recorded = None;
    for _ in 0..100 {
        recorded = pulled().await;
        if recorded.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(recorded.is_some(), "the pull was recorded");
    let (writes, _) = meta.write_counts();
    // By tag and by digest, many times: this node asks no more this hour.
    for _ in 0..20 {
        reg.get_manifest(&repo, &reference("v1")).await.unwrap();
        reg.get_manifest(&repo, &Reference::Digest(d.clone()))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(meta.write_counts().0, writes, "no more writes");
    assert_eq!(pulled().await, recorded);
}

/// Pulls of many manifests at once are gathered and written together: a
/// few metadata writes, not one per manifest, and every pull is recorded.
#[tokio::test]
async fn pulls_of_many_manifests_are_written_together() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, meta) = registry(dir.path(), Arc::default()).await;
    let repo: RepoName = "acme/app".parse().unwrap();
    let mut tags = Vec::new();
    for i in 0..40 {
        let tag = format!("v{i}");
        push(&reg, &repo, &tag, &format!("seed {i}")).await;
        tags.push(tag);
    }
    let (before, _) = meta.write_counts();
    for tag in &tags {
        reg.get_manifest(&repo, &reference(tag)).await.unwrap();
    }
    let recorded = || async {
        let snap = meta.retention_snapshot("acme").await.unwrap();
        let manifests = &snap[0].manifests;
        manifests
            .iter()
            .filter(|m| m.last_pulled_unix.is_some())
            .count()
    };
    let mut seen = 0;
    for _ in 0..100 {
        seen = recorded().await;
        if seen == tags.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, tags.len(), "every pull was recorded");
    let writes = meta.write_counts().0 - before;
    assert!(
        writes <= 2,
        "{writes} metadata writes for {} manifests pulled",
        tags.len()
    );
}
