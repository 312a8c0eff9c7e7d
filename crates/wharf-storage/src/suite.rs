//! The behaviour every [`BlobStore`](crate::BlobStore) backend must show.
//!
//! Owns: [`blob_store_suite!`](crate::blob_store_suite), a macro that expands
//! to one `#[tokio::test]` per rule of the contract, and the small helpers
//! those tests share. A backend's test file invokes it with an expression
//! that yields a fresh, empty store and a guard that keeps its backing
//! resources (a temporary directory, a bucket) alive:
//!
//! ```ignore
//! wharf_storage::blob_store_suite!(async {
//!     let dir = tempfile::tempdir().unwrap();
//!     let store = FsStore::open(dir.path()).await.unwrap();
//!     (store, dir)
//! });
//! ```
//!
//! The expression is evaluated afresh in every test. The using crate needs
//! `tokio` (with `macros` and `rt-multi-thread`), `bytes` and
//! `futures-util` as dev-dependencies.
//!
//! Must never: depend on a particular backend, or on timing.

use bytes::Bytes;
use futures_util::StreamExt;
use wharf_core::{Algorithm, Digest, UploadId};

use crate::ByteStream;

/// Deterministic, incompressible-looking test content of `len` bytes.
pub fn content(len: usize, seed: u8) -> Bytes {
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed).wrapping_mul(0x0101_0101);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// The sha256 digest of `bytes`.
pub fn sha256(bytes: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, bytes)
}

/// A fresh upload id.
pub fn upload_id(n: u32) -> UploadId {
    UploadId::new(format!("suite-upload-{n}")).expect("valid upload id")
}

/// A body that yields `bytes` in pieces of `piece` bytes.
pub fn body(bytes: Bytes, piece: usize) -> ByteStream {
    let pieces: Vec<Result<Bytes, std::io::Error>> = (0..bytes.len())
        .step_by(piece.max(1))
        .map(|at| Ok(bytes.slice(at..(at + piece).min(bytes.len()))))
        .collect();
    futures_util::stream::iter(pieces).boxed()
}

/// A body that yields `bytes` and then fails, as a client that goes away.
pub fn failing_body(bytes: Bytes) -> ByteStream {
    futures_util::stream::iter(vec![
        Ok(bytes),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ])
    .boxed()
}

/// Collects a blob stream.
pub async fn collect(mut stream: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(piece) = stream.next().await {
        out.extend_from_slice(&piece.expect("blob stream failed"));
    }
    out
}

/// Expands to the shared behaviour tests; see the module documentation.
#[macro_export]
macro_rules! blob_store_suite {
    ($make:expr) => {
        mod blob_store_suite {
            #[allow(unused_imports)]
            use super::*;
            use $crate::suite::{body, collect, content, failing_body, sha256, upload_id};
            use $crate::{BlobStore, StorageError};

            #[tokio::test]
            async fn put_then_stat_and_get_return_the_same_bytes() {
                let (store, _guard) = $make.await;
                let bytes = content(3000, 1);
                let digest = sha256(&bytes);
                assert_eq!(store.stat(&digest).await.unwrap(), None);
                store.put(&digest, bytes.clone()).await.unwrap();
                assert_eq!(store.stat(&digest).await.unwrap(), Some(3000));
                let got = collect(store.get(&digest, None).await.unwrap()).await;
                assert_eq!(got, bytes.to_vec());
            }

            #[tokio::test]
            async fn put_with_a_wrong_digest_stores_nothing() {
                let (store, _guard) = $make.await;
                let bytes = content(100, 2);
                let claimed = sha256(b"something else");
                match store.put(&claimed, bytes.clone()).await {
                    Err(StorageError::DigestMismatch { expected, actual }) => {
                        assert_eq!(expected, claimed);
                        assert_eq!(actual, sha256(&bytes));
                    }
                    other => panic!("expected a digest mismatch, got {other:?}"),
                }
                assert_eq!(store.stat(&claimed).await.unwrap(), None);
                assert_eq!(store.stat(&sha256(&bytes)).await.unwrap(), None);
                assert!(store.list().await.unwrap().is_empty());
            }

            #[tokio::test]
            async fn put_of_stored_content_is_a_no_op() {
                let (store, _guard) = $make.await;
                let bytes = content(10, 3);
                let digest = sha256(&bytes);
                store.put(&digest, bytes.clone()).await.unwrap();
                store.put(&digest, bytes.clone()).await.unwrap();
                assert_eq!(store.list().await.unwrap(), vec![digest]);
            }

            #[tokio::test]
            async fn ranged_get_returns_exactly_the_range_across_pieces() {
                let (store, _guard) = $make.await;
                // Larger than a read piece (1 MiB) plus two mapped windows
                // (4 MiB), so ranges cross piece and window borders.
                let bytes = content(9 * (1 << 20) + 123, 4);
                let digest = sha256(&bytes);
                let id = upload_id(1);
                store.upload_start(&id).await.unwrap();
                store
                    .upload_append(&id, 0, body(bytes.clone(), 64 * 1024))
                    .await
                    .unwrap();
                store.upload_commit(&id, &digest).await.unwrap();
                for (start, end) in [
                    (0u64, 1u64),
                    (5, 1 << 20),
                    ((1 << 20) - 7, (2 << 20) + 9),
                    ((5 << 20) - 3, (9 << 20) + 1),
                    ((1 << 20) + 4095, (1 << 20) + 4097),
                    (100, bytes.len() as u64),
                ] {
                    let got = collect(store.get(&digest, Some(start..end)).await.unwrap()).await;
                    assert_eq!(
                        got,
                        bytes[start as usize..end as usize].to_vec(),
                        "range {start}..{end}"
                    );
                }
                let whole = collect(store.get(&digest, None).await.unwrap()).await;
                assert_eq!(whole.len(), bytes.len());
                assert!(whole == bytes.to_vec());
            }

            #[tokio::test]
            async fn read_small_returns_the_whole_content_or_not_found() {
                let (store, _guard) = $make.await;
                for (len, seed) in [(0, 30), (1, 31), (4096, 32), (300_000, 33)] {
                    let bytes = content(len, seed);
                    let digest = sha256(&bytes);
                    store.put(&digest, bytes.clone()).await.unwrap();
                    let got = store.read_small(&digest, len as u64).await.unwrap();
                    assert!(got == bytes, "{len} bytes read back whole");
                }
                assert!(matches!(
                    store.read_small(&sha256(b"never stored"), 10).await,
                    Err(StorageError::NotFound)
                ));
            }

            #[tokio::test]
            async fn get_and_delete_of_a_missing_blob_are_not_found() {
                let (store, _guard) = $make.await;
                let digest = sha256(b"never stored");
                assert!(matches!(
                    store.get(&digest, None).await,
                    Err(StorageError::NotFound)
                ));
                assert!(matches!(
                    store.delete(&digest).await,
                    Err(StorageError::NotFound)
                ));
            }

            #[tokio::test]
            async fn delete_removes_the_blob_and_only_it() {
                let (store, _guard) = $make.await;
                let a = content(50, 5);
                let b = content(60, 6);
                store.put(&sha256(&a), a.clone()).await.unwrap();
                store.put(&sha256(&b), b.clone()).await.unwrap();
                store.delete(&sha256(&a)).await.unwrap();
                assert_eq!(store.stat(&sha256(&a)).await.unwrap(), None);
                assert_eq!(store.stat(&sha256(&b)).await.unwrap(), Some(60));
                assert_eq!(store.list().await.unwrap(), vec![sha256(&b)]);
            }

            #[tokio::test]
            async fn empty_blob_can_be_uploaded_and_read() {
                let (store, _guard) = $make.await;
                let digest = sha256(b"");
                let id = upload_id(2);
                store.upload_start(&id).await.unwrap();
                assert_eq!(store.upload_commit(&id, &digest).await.unwrap(), 0);
                assert_eq!(store.stat(&digest).await.unwrap(), Some(0));
                assert!(collect(store.get(&digest, None).await.unwrap())
                    .await
                    .is_empty());
            }

            #[tokio::test]
            async fn chunked_upload_commits_the_concatenation() {
                let (store, _guard) = $make.await;
                let bytes = content(2_500_000, 7);
                let digest = sha256(&bytes);
                let id = upload_id(3);
                store.upload_start(&id).await.unwrap();
                let cuts = [0usize, 1, 700_000, 2_000_000, bytes.len()];
                for w in cuts.windows(2) {
                    let piece = bytes.slice(w[0]..w[1]);
                    let size = store
                        .upload_append(&id, w[0] as u64, body(piece, 8192))
                        .await
                        .unwrap();
                    assert_eq!(size, w[1] as u64);
                    assert_eq!(store.upload_size(&id).await.unwrap(), w[1] as u64);
                }
                assert_eq!(
                    store.stat(&digest).await.unwrap(),
                    None,
                    "visible before commit"
                );
                assert_eq!(
                    store.upload_commit(&id, &digest).await.unwrap(),
                    bytes.len() as u64
                );
                assert!(collect(store.get(&digest, None).await.unwrap()).await == bytes.to_vec());
                assert!(matches!(
                    store.upload_size(&id).await,
                    Err(StorageError::NotFound)
                ));
                assert!(store.upload_list().await.unwrap().is_empty());
            }

            #[tokio::test]
            async fn append_at_the_wrong_offset_writes_nothing() {
                let (store, _guard) = $make.await;
                let id = upload_id(4);
                store.upload_start(&id).await.unwrap();
                store
                    .upload_append(&id, 0, body(content(10, 8), 4))
                    .await
                    .unwrap();
                for wrong in [0u64, 5, 11] {
                    match store
                        .upload_append(&id, wrong, body(content(10, 9), 4))
                        .await
                    {
                        Err(StorageError::OffsetMismatch { size }) => assert_eq!(size, 10),
                        other => panic!("offset {wrong}: expected a mismatch, got {other:?}"),
                    }
                }
                assert_eq!(store.upload_size(&id).await.unwrap(), 10);
                let digest = sha256(&content(10, 8));
                assert_eq!(store.upload_commit(&id, &digest).await.unwrap(), 10);
            }

            #[tokio::test]
            async fn a_failed_body_keeps_what_arrived_and_the_upload_resumes() {
                let (store, _guard) = $make.await;
                let bytes = content(300_000, 10);
                let id = upload_id(5);
                store.upload_start(&id).await.unwrap();
                let first = bytes.slice(..120_000);
                match store.upload_append(&id, 0, failing_body(first)).await {
                    Err(StorageError::Body(_)) => {}
                    other => panic!("expected a body error, got {other:?}"),
                }
                let kept = store.upload_size(&id).await.unwrap();
                assert_eq!(kept, 120_000);
                let rest = bytes.slice(kept as usize..);
                store
                    .upload_append(&id, kept, body(rest, 10_000))
                    .await
                    .unwrap();
                let digest = sha256(&bytes);
                store.upload_commit(&id, &digest).await.unwrap();
                assert!(collect(store.get(&digest, None).await.unwrap()).await == bytes.to_vec());
            }

            #[tokio::test]
            async fn commit_with_a_wrong_digest_discards_the_upload() {
                let (store, _guard) = $make.await;
                let bytes = content(1000, 11);
                let id = upload_id(6);
                let wrong = sha256(b"not these bytes");
                store.upload_start(&id).await.unwrap();
                store
                    .upload_append(&id, 0, body(bytes.clone(), 100))
                    .await
                    .unwrap();
                match store.upload_commit(&id, &wrong).await {
                    Err(StorageError::DigestMismatch { expected, actual }) => {
                        assert_eq!(expected, wrong);
                        assert_eq!(actual, sha256(&bytes));
                    }
                    other => panic!("expected a digest mismatch, got {other:?}"),
                }
                assert_eq!(store.stat(&wrong).await.unwrap(), None);
                assert_eq!(store.stat(&sha256(&bytes)).await.unwrap(), None);
                assert!(store.list().await.unwrap().is_empty());
                assert!(matches!(
                    store.upload_size(&id).await,
                    Err(StorageError::NotFound)
                ));
            }

            #[tokio::test]
            async fn sha512_uploads_are_verified_with_sha512() {
                let (store, _guard) = $make.await;
                let bytes = content(70_000, 12);
                let digest = wharf_core::Digest::of(wharf_core::Algorithm::Sha512, &bytes);
                let id = upload_id(7);
                store.upload_start(&id).await.unwrap();
                store
                    .upload_append(&id, 0, body(bytes.clone(), 5000))
                    .await
                    .unwrap();
                assert_eq!(store.upload_commit(&id, &digest).await.unwrap(), 70_000);
                assert_eq!(store.stat(&digest).await.unwrap(), Some(70_000));
                assert!(collect(store.get(&digest, None).await.unwrap()).await == bytes.to_vec());
                assert_eq!(store.list().await.unwrap(), vec![digest]);
            }

            #[tokio::test]
            async fn cancel_discards_the_upload() {
                let (store, _guard) = $make.await;
                let id = upload_id(8);
                store.upload_start(&id).await.unwrap();
                store
                    .upload_append(&id, 0, body(content(10, 13), 3))
                    .await
                    .unwrap();
                assert_eq!(store.upload_list().await.unwrap(), vec![id.clone()]);
                store.upload_cancel(&id).await.unwrap();
                assert!(store.upload_list().await.unwrap().is_empty());
                assert!(matches!(
                    store.upload_size(&id).await,
                    Err(StorageError::NotFound)
                ));
                assert!(matches!(
                    store.upload_cancel(&id).await,
                    Err(StorageError::NotFound)
                ));
                assert!(matches!(
                    store.upload_append(&id, 10, body(content(1, 1), 1)).await,
                    Err(StorageError::NotFound)
                ));
            }

            #[tokio::test]
            async fn unknown_uploads_are_not_found() {
                let (store, _guard) = $make.await;
                let id = upload_id(9);
                assert!(matches!(
                    store.upload_size(&id).await,
                    Err(StorageError::NotFound)
                ));
                assert!(matches!(
                    store.upload_append(&id, 0, body(content(1, 1), 1)).await,
                    Err(StorageError::NotFound)
                ));
                assert!(matches!(
                    store.upload_commit(&id, &sha256(b"")).await,
                    Err(StorageError::NotFound)
                ));
            }

            #[tokio::test]
            async fn concurrent_appends_to_one_upload_are_serialised() {
                let (store, _guard) = $make.await;
                let store = std::sync::Arc::new(store);
                let id = upload_id(10);
                store.upload_start(&id).await.unwrap();
                // Eight writers all claim offset 0 with different bytes:
                // exactly one may win, the rest must see a mismatch.
                let mut tasks = Vec::new();
                for seed in 0..8u8 {
                    let store = store.clone();
                    let id = id.clone();
                    tasks.push(tokio::spawn(async move {
                        let bytes = content(200_000, 100 + seed);
                        store
                            .upload_append(&id, 0, body(bytes.clone(), 4096))
                            .await
                            .map(|_| bytes)
                    }));
                }
                let mut winners = Vec::new();
                for t in tasks {
                    match t.await.unwrap() {
                        Ok(bytes) => winners.push(bytes),
                        Err(StorageError::OffsetMismatch { size }) => assert_eq!(size, 200_000),
                        Err(e) => panic!("unexpected error {e:?}"),
                    }
                }
                assert_eq!(winners.len(), 1);
                let digest = sha256(&winners[0]);
                assert_eq!(store.upload_commit(&id, &digest).await.unwrap(), 200_000);
            }

            #[tokio::test]
            async fn many_uploads_in_parallel_all_land() {
                let (store, _guard) = $make.await;
                let store = std::sync::Arc::new(store);
                let mut tasks = Vec::new();
                for n in 0..16u32 {
                    let store = store.clone();
                    tasks.push(tokio::spawn(async move {
                        let bytes = content(50_000 + n as usize, n as u8);
                        let id = upload_id(100 + n);
                        store.upload_start(&id).await.unwrap();
                        store
                            .upload_append(&id, 0, body(bytes.clone(), 7000))
                            .await
                            .unwrap();
                        let digest = sha256(&bytes);
                        store.upload_commit(&id, &digest).await.unwrap();
                        digest
                    }));
                }
                let mut digests = Vec::new();
                for t in tasks {
                    digests.push(t.await.unwrap());
                }
                digests.sort();
                assert_eq!(store.list().await.unwrap(), digests);
            }
        }
    };
}
