//! Immutable tags at the registry layer, with a rule source counting its
//! lookups: a delete by digest finds a protected tag past the first page of
//! tags, and a repository no rule covers costs no tag lookup at all.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use wharf_core::{
    Digest, ImmutableTagRule, ImmutableTagSource, Reference, RegistryError, RepoName, Tag,
};
use wharf_meta::embedded::EmbeddedStore;
use wharf_registry::{Registry, RegistryConfig};
use wharf_storage::fs::FsStore;

/// Protects tags starting with `v` in repositories under `acme/prod/`.
#[derive(Default)]
struct ReleasesInProd {
    lookups: AtomicUsize,
}

impl ImmutableTagSource for ReleasesInProd {
    fn protecting(&self, repo: &RepoName, tag: &Tag) -> Option<ImmutableTagRule> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        (self.guards(repo) && tag.as_str().starts_with('v')).then(|| ImmutableTagRule {
            tag: "v.*".into(),
            repository: Some("prod/.*".into()),
        })
    }

    fn guards(&self, repo: &RepoName) -> bool {
        repo.as_str().starts_with("acme/prod/")
    }
}

async fn registry(dir: &std::path::Path, rules: Arc<ReleasesInProd>) -> Registry {
    let blobs = Arc::new(FsStore::open(dir.join("blobs")).await.unwrap());
    let meta = Arc::new(EmbeddedStore::open(dir.join("meta.redb")).unwrap());
    Registry::new(blobs, meta, RegistryConfig::default()).with_immutable_tags(rules)
}

/// Pushes a one-layer image to `repo`; its manifest bytes.
async fn image(reg: &Registry, repo: &RepoName) -> Bytes {
    let mut digests = Vec::new();
    for bytes in [&br#"{"os":"linux"}"#[..], b"a layer"] {
        let digest = Digest::sha256_of(bytes);
        let body = futures_util::stream::iter([Ok(Bytes::copy_from_slice(bytes))]).boxed();
        reg.push_blob(repo, &digest, body, None).await.unwrap();
        digests.push(digest);
    }
    Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":15}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":7}}]}}"#,
        digests[0], digests[1]
    ))
}

fn tag(t: &str) -> Reference {
    Reference::Tag(t.parse().unwrap())
}

#[tokio::test]
async fn a_delete_by_digest_finds_a_protected_tag_past_the_first_page() {
    let dir = tempfile::tempdir().unwrap();
    let rules = Arc::new(ReleasesInProd::default());
    let reg = registry(dir.path(), rules.clone()).await;
    let repo: RepoName = "acme/prod/api".parse().unwrap();
    let manifest = image(&reg, &repo).await;
    // 1,001 unprotected tags sort before `v1`: it is on the second page.
    for i in 0..=1000 {
        reg.put_manifest(
            &repo,
            &tag(&format!("build-{i:04}")),
            None,
            manifest.clone(),
        )
        .await
        .unwrap();
    }
    let put = reg
        .put_manifest(&repo, &tag("v1"), None, manifest.clone())
        .await
        .unwrap();
    let by_digest = Reference::Digest(put.digest.clone());
    match reg.delete_manifest(&repo, &by_digest).await {
        Err(RegistryError::TagImmutable(refusal)) => {
            assert_eq!(refusal.tag.as_str(), "v1");
            assert_eq!(refusal.digest, put.digest);
        }
        other => panic!("delete by digest: {other:?}"),
    }
    assert_eq!(
        reg.get_manifest(&repo, &tag("v1")).await.unwrap().digest,
        put.digest
    );
    // The same manifest may be pushed to it again; it may not be deleted.
    reg.put_manifest(&repo, &tag("v1"), None, manifest.clone())
        .await
        .unwrap();
    assert!(matches!(
        reg.delete_manifest(&repo, &tag("v1")).await,
        Err(RegistryError::TagImmutable(_))
    ));
}

#[tokio::test]
async fn a_repository_no_rule_covers_costs_no_lookup_on_delete_by_digest() {
    let dir = tempfile::tempdir().unwrap();
    let rules = Arc::new(ReleasesInProd::default());
    let reg = registry(dir.path(), rules.clone()).await;
    let repo: RepoName = "acme/dev/api".parse().unwrap();
    let manifest = image(&reg, &repo).await;
    for t in ["v1", "v2", "latest"] {
        reg.put_manifest(&repo, &tag(t), None, manifest.clone())
            .await
            .unwrap();
    }
    let before = rules.lookups.load(Ordering::SeqCst);
    let digest = Digest::sha256_of(&manifest);
    reg.delete_manifest(&repo, &Reference::Digest(digest))
        .await
        .unwrap();
    assert_eq!(rules.lookups.load(Ordering::SeqCst), before);
    assert!(matches!(
        reg.get_manifest(&repo, &tag("v1")).await,
        Err(RegistryError::ManifestUnknown(_))
    ));
}
