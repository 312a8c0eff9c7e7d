//! The embedded (redb) backend against the shared behaviour suite, plus what
//! only a file-backed store must do: keep its data across a reopen.

use wharf_core::{Digest, RepoName, Tag};
use wharf_meta::embedded::EmbeddedStore;
use wharf_meta::{ManifestRecord, MetaStore};

/// A fresh store in its own temporary directory, which lives as long as the
/// returned guard.
async fn fresh() -> (EmbeddedStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = EmbeddedStore::open(dir.path().join("meta.redb")).expect("open store");
    (store, dir)
}

wharf_meta::meta_store_suite!(fresh);

#[tokio::test]
async fn reopen_on_same_path_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    // A parent directory that does not exist yet: `open` must create it.
    let path = dir.path().join("nested").join("meta.redb");
    let repo: RepoName = "team/app".parse().unwrap();
    let tag: Tag = "latest".parse().unwrap();
    let blob = Digest::sha256_of(b"layer");
    let record = ManifestRecord {
        digest: Digest::sha256_of(b"manifest"),
        media_type: "application/vnd.oci.image.manifest.v1+json".to_string(),
        size: 321,
        artifact_type: None,
        annotations: None,
        subject: None,
        references: vec![blob.clone()],
    };

    {
        let store = EmbeddedStore::open(&path).unwrap();
        store.link_blob(&repo, &blob, 1234).await.unwrap();
        store
            .put_manifest(&repo, &record, Some(&tag))
            .await
            .unwrap();
        // Every clone shares the database; all must be gone before reopening.
        drop(store.clone());
    }

    let store = EmbeddedStore::open(&path).unwrap();
    assert_eq!(store.blob_size(&repo, &blob).await.unwrap(), Some(1234));
    assert_eq!(
        store.get_manifest(&repo, &record.digest).await.unwrap(),
        Some(record.clone())
    );
    assert_eq!(
        store.resolve_tag(&repo, &tag).await.unwrap(),
        Some(record.digest)
    );
    assert!(store.repo_exists(&repo).await.unwrap());
    assert_eq!(store.list_repos(None, 10).await.unwrap(), vec!["team/app"]);
}
