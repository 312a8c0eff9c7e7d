//! The filesystem backend against the shared blob-store suite, plus what only
//! a filesystem can show: restart recovery and the absence of partial files.

use std::path::Path;

use wharf_storage::fs::FsStore;
use wharf_storage::suite::{body, collect, content, sha256, upload_id};
use wharf_storage::BlobStore;

wharf_storage::blob_store_suite!(async {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).await.unwrap();
    (store, dir)
});

/// Every regular file below `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                out.push(
                    entry
                        .path()
                        .strip_prefix(dir)
                        .unwrap()
                        .display()
                        .to_string(),
                );
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn an_upload_survives_a_restart_and_commits_correctly() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = content(1_500_000, 21);
    let id = upload_id(1);
    {
        let store = FsStore::open(dir.path()).await.unwrap();
        store.upload_start(&id).await.unwrap();
        store
            .upload_append(&id, 0, body(bytes.slice(..600_000), 9000))
            .await
            .unwrap();
    }
    // A new process: the hash state is gone and must be rebuilt from disk.
    let store = FsStore::open(dir.path()).await.unwrap();
    assert_eq!(store.upload_list().await.unwrap(), vec![id.clone()]);
    assert_eq!(store.upload_size(&id).await.unwrap(), 600_000);
    store
        .upload_append(&id, 600_000, body(bytes.slice(600_000..), 9000))
        .await
        .unwrap();
    let digest = sha256(&bytes);
    store.upload_commit(&id, &digest).await.unwrap();
    assert!(collect(store.get(&digest, None).await.unwrap()).await == bytes.to_vec());
}

#[tokio::test]
async fn a_restart_commit_without_further_appends_rehashes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = content(10_000, 22);
    let id = upload_id(2);
    {
        let store = FsStore::open(dir.path()).await.unwrap();
        store.upload_start(&id).await.unwrap();
        store
            .upload_append(&id, 0, body(bytes.clone(), 999))
            .await
            .unwrap();
    }
    let store = FsStore::open(dir.path()).await.unwrap();
    let wrong = sha256(b"x");
    assert!(store.upload_commit(&id, &wrong).await.is_err());
    assert_eq!(store.stat(&wrong).await.unwrap(), None);
}

#[tokio::test]
async fn nothing_appears_under_blobs_until_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).await.unwrap();
    let bytes = content(200_000, 23);
    let id = upload_id(3);
    store.upload_start(&id).await.unwrap();
    store
        .upload_append(&id, 0, body(bytes.clone(), 4096))
        .await
        .unwrap();
    assert_eq!(files_under(dir.path()), vec![format!("uploads/{id}")]);
    let digest = sha256(&bytes);
    store.upload_commit(&id, &digest).await.unwrap();
    assert_eq!(
        files_under(dir.path()),
        vec![format!(
            "blobs/sha256/{}/{}",
            &digest.hex()[..2],
            digest.hex()
        )]
    );
}

#[tokio::test]
async fn leftover_temporary_files_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(FsStore::open(dir.path()).await.unwrap());
    std::fs::write(dir.path().join("tmp/half-written"), b"partial").unwrap();
    let store = FsStore::open(dir.path()).await.unwrap();
    assert!(files_under(dir.path()).is_empty());
    assert!(store.list().await.unwrap().is_empty());
}
