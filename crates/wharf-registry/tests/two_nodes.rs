//! Two registry nodes over the same storage and metadata (as behind a load
//! balancer): what one node changes shows on the other within the cache TTL,
//! even for content the other holds in memory.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use wharf_core::{Digest, Reference, RegistryError, RepoName};
use wharf_meta::embedded::EmbeddedStore;
use wharf_registry::{Registry, RegistryConfig};
use wharf_storage::fs::FsStore;

const TTL: Duration = Duration::from_millis(150);

async fn two_nodes(dir: &std::path::Path) -> (Registry, Registry) {
    let blobs = Arc::new(FsStore::open(dir.join("blobs")).await.unwrap());
    let meta = Arc::new(EmbeddedStore::open(dir.join("meta.redb")).unwrap());
    let config = RegistryConfig {
        tag_cache_ttl: TTL,
        link_cache_ttl: TTL,
        ..RegistryConfig::default()
    };
    (
        Registry::new(blobs.clone(), meta.clone(), config.clone()),
        Registry::new(blobs, meta, config),
    )
}

async fn push_blob(node: &Registry, repo: &RepoName, bytes: &'static [u8]) -> Digest {
    let digest = Digest::sha256_of(bytes);
    let body = futures_util::stream::iter([Ok(Bytes::from_static(bytes))]).boxed();
    node.push_blob(repo, &digest, body, None).await.unwrap();
    digest
}

/// A manifest node B has served (and so holds in memory) is deleted through
/// node A: B stops serving it within the TTL, by digest and by tag.
#[tokio::test]
async fn a_manifest_deleted_through_one_node_stops_being_served_by_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_nodes(dir.path()).await;
    let repo: RepoName = "team/app".parse().unwrap();
    let config = push_blob(&a, &repo, br#"{"architecture":"amd64","os":"linux"}"#).await;
    let layer = push_blob(&a, &repo, b"a layer").await;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":37}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":7}}]}}"#
    );
    let tag: Reference = "v1".parse().unwrap();
    let put = a
        .put_manifest(&repo, &tag, None, Bytes::from(manifest.clone()))
        .await
        .unwrap();
    let by_digest = Reference::Digest(put.digest.clone());

    // B serves it (and keeps it in memory), twice, the second from memory.
    for _ in 0..2 {
        let got = b.get_manifest(&repo, &by_digest).await.unwrap();
        assert_eq!(got.bytes, manifest.as_bytes());
        assert_eq!(
            b.get_manifest(&repo, &tag).await.unwrap().digest,
            put.digest
        );
    }

    a.delete_manifest(&repo, &by_digest).await.unwrap();
    assert!(matches!(
        a.get_manifest(&repo, &by_digest).await,
        Err(RegistryError::ManifestUnknown(_))
    ));

    tokio::time::sleep(TTL + Duration::from_millis(100)).await;
    let r = b.get_manifest(&repo, &by_digest).await;
    assert!(
        matches!(r, Err(RegistryError::ManifestUnknown(_))),
        "node B still serves a deleted manifest by digest: {:?}",
        r.map(|m| m.digest)
    );
    let r = b.get_manifest(&repo, &tag).await;
    assert!(
        matches!(r, Err(RegistryError::ManifestUnknown(_))),
        "node B still serves a deleted manifest by tag: {:?}",
        r.map(|m| m.digest)
    );
}
