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

/// After a lull in the writes the writer saves redb's allocator state once
/// (so that a crash then needs no full repair), and not again until
/// something new is committed: an idle store makes no commits of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allocator_state_is_saved_once_per_lull_after_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("meta.redb")).unwrap();
    let repo: RepoName = "team/app".parse().unwrap();
    let settle = || tokio::time::sleep(std::time::Duration::from_millis(600));
    // The open's own commits are saved after the first lull.
    settle().await;
    assert_eq!(
        store.allocator_saves(),
        1,
        "no save after the open's commits"
    );
    settle().await;
    assert_eq!(
        store.allocator_saves(),
        1,
        "saved again with nothing written"
    );
    for i in 0..20u32 {
        let d = Digest::sha256_of(&i.to_be_bytes());
        store.link_blob(&repo, &d, 1).await.unwrap();
    }
    settle().await;
    assert_eq!(
        store.allocator_saves(),
        2,
        "no save after the lull that followed writes"
    );
    settle().await;
    assert_eq!(
        store.allocator_saves(),
        2,
        "saved again with nothing written"
    );
}

/// Concurrent writes share durable commits (group commit): 200 links made at
/// once take fewer fsyncs than writes, and every one of them is on disk when
/// the store is dropped and the file reopened at once (dropping the last
/// clone waits for the writer thread, which releases the file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_durable_commits_and_all_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let repo: RepoName = "team/app".parse().unwrap();
    let digests: Vec<Digest> = (0..200u32)
        .map(|i| Digest::sha256_of(&i.to_be_bytes()))
        .collect();
    {
        let store = EmbeddedStore::open(&path).unwrap();
        let mut tasks = Vec::new();
        for (i, d) in digests.iter().enumerate() {
            let (store, repo, d) = (store.clone(), repo.clone(), d.clone());
            tasks.push(tokio::spawn(async move {
                store.link_blob(&repo, &d, i as u64).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let (writes, durable) = store.write_counts();
        assert_eq!(writes, 200);
        assert!(
            durable < writes,
            "{durable} durable commits for {writes} concurrent writes: nothing was grouped"
        );
    }
    let store = EmbeddedStore::open(&path).expect("the file is released when the store drops");
    for (i, d) in digests.iter().enumerate() {
        assert_eq!(store.blob_size(&repo, d).await.unwrap(), Some(i as u64));
    }
}
