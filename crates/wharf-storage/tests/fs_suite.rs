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

/// The path of stored blob `digest` below the store's root.
fn blob_file(root: &Path, digest: &wharf_core::Digest) -> std::path::PathBuf {
    root.join("blobs/sha256")
        .join(&digest.hex()[..2])
        .join(digest.hex())
}

#[tokio::test]
async fn read_small_reads_what_the_file_holds_when_its_record_is_wrong() {
    // A file longer or shorter than the size its record gives (damage, or
    // a record out of step) is read whole by the slow path, never cut.
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).await.unwrap();
    let bytes = content(5000, 40);
    let digest = sha256(&bytes);
    store.put(&digest, bytes.clone()).await.unwrap();
    for recorded in [10, 4999, 5001, 1 << 20] {
        let got = store.read_small(&digest, recorded).await.unwrap();
        assert!(got == bytes, "recorded as {recorded}: the whole file");
    }
}

#[test]
fn a_small_read_from_the_kernels_caches_is_answered_without_the_blocking_pool() {
    // Just written, so the file's path and pages are in the kernel's
    // caches: read_if_cached answers (no disk, no blocking pool).
    let dir = tempfile::tempdir().unwrap();
    let bytes = content(2000, 41);
    let digest = sha256(&bytes);
    let path = blob_file(dir.path(), &digest);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    std::fs::read(&path).unwrap();
    match wharf_storage::fs::read_if_cached(&path, 2000) {
        Some(got) => assert!(got == bytes),
        None if !wharf_storage::fs::cached_reads_supported(&path) => {
            eprintln!("openat2 or RWF_NOWAIT reads are not available here: not shown");
        }
        None => panic!("a cached file was not read from the caches"),
    }
    // Not the recorded size, or no such file: left to the slow path.
    assert!(wharf_storage::fs::read_if_cached(&path, 1999).is_none());
    assert!(wharf_storage::fs::read_if_cached(&path, 2001).is_none());
    assert!(wharf_storage::fs::read_if_cached(&dir.path().join("nothing"), 10).is_none());
}
