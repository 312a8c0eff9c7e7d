//! The shared behaviour suite every [`MetaStore`] backend must pass.
//!
//! Owns: one `pub async fn` per behaviour, each generic over the backend and
//! panicking (via `assert!`) when the backend gets it wrong, and the
//! [`meta_store_suite!`](crate::meta_store_suite) macro that turns them into
//! `#[tokio::test]`s for a backend.
//!
//! Must never: depend on one backend's quirks (order of [`MetaStore::list_uploads`],
//! say, is unspecified, so it is sorted before comparing), or share state
//! between tests: each test gets a fresh, empty store.
//!
//! # Using it
//!
//! Pass the macro an expression `make` such that `make()` is a future
//! resolving to `(store, guard)`: `store` is a fresh, empty backend and
//! `guard` is anything that must outlive the test (a temporary directory, a
//! container handle; `()` if nothing). An `async fn` is the easiest:
//!
//! ```ignore
//! async fn fresh() -> (EmbeddedStore, tempfile::TempDir) {
//!     let dir = tempfile::tempdir().unwrap();
//!     let store = EmbeddedStore::open(dir.path().join("meta.redb")).unwrap();
//!     (store, dir)
//! }
//!
//! wharf_meta::meta_store_suite!(fresh);
//! ```
//!
//! The macro expands to one test function per behaviour, named as below, so
//! invoke it once per module (wrap it in `mod x { ... }` to test several
//! backends in one file). The calling crate needs `tokio` (with the `macros`
//! and `rt-multi-thread` features) and `wharf-core` among its dependencies.

use std::collections::BTreeMap;
use std::sync::Arc;

use wharf_core::{Digest, RepoName, Tag, UploadId};

use crate::{ManifestRecord, MetaStore, UploadRecord};

/// Expands to the whole behaviour suite as `#[tokio::test]` functions; see
/// the [module docs](crate::suite) for what `$make` must be.
#[macro_export]
macro_rules! meta_store_suite {
    ($make:expr $(,)?) => {
        $crate::meta_store_suite!(@tests $make;
            blob_link_is_idempotent_and_scoped_to_repo,
            manifest_put_get_roundtrip,
            tag_moves_when_put_again,
            put_same_manifest_again_only_adds_tag,
            delete_manifest_removes_its_tags_and_referrer_entry,
            delete_tag_leaves_manifest,
            list_tags_paginates_in_lexical_order,
            list_repos_paginates_in_lexical_order,
            referrers_are_ordered_by_digest_and_scoped,
            repo_exists_after_link_blob_or_put_manifest,
            uploads_put_get_list_delete,
        );

        // Several worker threads, so the tasks really run at the same time.
        #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn concurrent_puts_from_16_tasks_all_land() {
            let (store, _guard) = ($make)().await;
            $crate::suite::concurrent_puts_from_16_tasks_all_land(::std::sync::Arc::new(store))
                .await;
        }
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test]
            async fn $name() {
                // `_guard`, not `_`: it must live until the test ends.
                let (store, _guard) = ($make)().await;
                $crate::suite::$name(::std::sync::Arc::new(store)).await;
            }
        )*
    };
}

// ---- fixtures ----

fn repo(s: &str) -> RepoName {
    s.parse().expect("fixture repository name")
}

fn tag(s: &str) -> Tag {
    s.parse().expect("fixture tag")
}

fn upload_id(s: &str) -> UploadId {
    s.parse().expect("fixture upload id")
}

/// A distinct, valid digest per `seed`.
fn digest(seed: &str) -> Digest {
    Digest::sha256_of(seed.as_bytes())
}

/// A minimal image manifest record.
fn manifest(seed: &str) -> ManifestRecord {
    ManifestRecord {
        digest: digest(seed),
        media_type: "application/vnd.oci.image.manifest.v1+json".to_string(),
        size: 100 + seed.len() as u64,
        artifact_type: None,
        annotations: None,
        subject: None,
        references: vec![
            digest(&format!("{seed}-config")),
            digest(&format!("{seed}-layer")),
        ],
    }
}

/// An artifact manifest that refers to `subject`, with every optional field
/// set so a roundtrip exercises them all.
fn referrer(seed: &str, subject: &Digest) -> ManifestRecord {
    ManifestRecord {
        artifact_type: Some("application/vnd.example.sbom".to_string()),
        annotations: Some(BTreeMap::from([
            (
                "org.opencontainers.image.created".to_string(),
                "2024-01-01T00:00:00Z".to_string(),
            ),
            ("seed".to_string(), seed.to_string()),
        ])),
        subject: Some(subject.clone()),
        ..manifest(seed)
    }
}

// ---- behaviours ----

/// Linking twice is the same as once, sizes are per repository, and
/// unlinking reports whether there was anything to unlink.
pub async fn blob_link_is_idempotent_and_scoped_to_repo<S: MetaStore>(store: Arc<S>) {
    let (a, b) = (repo("team/a"), repo("team/b"));
    let blob = digest("blob");

    assert_eq!(store.blob_size(&a, &blob).await.unwrap(), None);
    store.link_blob(&a, &blob, 42).await.unwrap();
    store.link_blob(&a, &blob, 42).await.unwrap();
    assert_eq!(store.blob_size(&a, &blob).await.unwrap(), Some(42));
    assert_eq!(
        store.blob_size(&b, &blob).await.unwrap(),
        None,
        "leaked into another repo"
    );
    assert_eq!(store.blob_size(&a, &digest("other")).await.unwrap(), None);

    store.link_blob(&b, &blob, 42).await.unwrap();
    assert!(store.unlink_blob(&a, &blob).await.unwrap());
    assert_eq!(store.blob_size(&a, &blob).await.unwrap(), None);
    assert!(
        !store.unlink_blob(&a, &blob).await.unwrap(),
        "second unlink found a blob"
    );
    assert_eq!(
        store.blob_size(&b, &blob).await.unwrap(),
        Some(42),
        "unlink crossed repos"
    );
}

/// A stored record comes back equal, and only from its own repository.
pub async fn manifest_put_get_roundtrip<S: MetaStore>(store: Arc<S>) {
    let r = repo("app");
    let subject = manifest("subject");
    let record = referrer("sbom", &subject.digest);

    store.put_manifest(&r, &record, None).await.unwrap();
    assert_eq!(
        store.get_manifest(&r, &record.digest).await.unwrap(),
        Some(record.clone())
    );
    assert_eq!(
        store
            .get_manifest(&repo("other"), &record.digest)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.get_manifest(&r, &subject.digest).await.unwrap(), None);
    assert_eq!(
        store.list_tags(&r, None, 10).await.unwrap(),
        Vec::<String>::new()
    );
}

/// Putting another manifest under an existing tag moves the tag; the old
/// manifest stays.
pub async fn tag_moves_when_put_again<S: MetaStore>(store: Arc<S>) {
    let r = repo("app");
    let (old, new) = (manifest("old"), manifest("new"));
    let latest = tag("latest");

    store.put_manifest(&r, &old, Some(&latest)).await.unwrap();
    assert_eq!(
        store.resolve_tag(&r, &latest).await.unwrap(),
        Some(old.digest.clone())
    );
    store.put_manifest(&r, &new, Some(&latest)).await.unwrap();
    assert_eq!(
        store.resolve_tag(&r, &latest).await.unwrap(),
        Some(new.digest.clone())
    );
    assert_eq!(
        store.get_manifest(&r, &old.digest).await.unwrap(),
        Some(old)
    );
    assert_eq!(store.list_tags(&r, None, 10).await.unwrap(), vec!["latest"]);
    assert_eq!(
        store.resolve_tag(&repo("other"), &latest).await.unwrap(),
        None
    );
}

/// Re-putting a stored record adds the new tag, keeps the old one and does
/// not duplicate its referrers entry.
pub async fn put_same_manifest_again_only_adds_tag<S: MetaStore>(store: Arc<S>) {
    let r = repo("app");
    let subject = manifest("subject");
    let record = referrer("sig", &subject.digest);

    store
        .put_manifest(&r, &record, Some(&tag("v1")))
        .await
        .unwrap();
    store
        .put_manifest(&r, &record, Some(&tag("stable")))
        .await
        .unwrap();
    store.put_manifest(&r, &record, None).await.unwrap();
    assert_eq!(
        store.list_tags(&r, None, 10).await.unwrap(),
        vec!["stable", "v1"]
    );
    for t in ["v1", "stable"] {
        assert_eq!(
            store.resolve_tag(&r, &tag(t)).await.unwrap(),
            Some(record.digest.clone())
        );
    }
    assert_eq!(
        store.referrers(&r, &subject.digest).await.unwrap(),
        vec![record]
    );
}

/// Deleting a manifest takes every tag pointing at it and its referrers
/// entry with it, and nothing else.
pub async fn delete_manifest_removes_its_tags_and_referrer_entry<S: MetaStore>(store: Arc<S>) {
    let (r, other) = (repo("app"), repo("app/mirror"));
    let subject = manifest("subject");
    let doomed = referrer("doomed", &subject.digest);
    let kept = referrer("kept", &subject.digest);

    store
        .put_manifest(&r, &subject, Some(&tag("base")))
        .await
        .unwrap();
    store
        .put_manifest(&r, &doomed, Some(&tag("a")))
        .await
        .unwrap();
    store
        .put_manifest(&r, &doomed, Some(&tag("b")))
        .await
        .unwrap();
    store
        .put_manifest(&r, &kept, Some(&tag("c")))
        .await
        .unwrap();
    // The same manifest in another repository must survive.
    store
        .put_manifest(&other, &doomed, Some(&tag("a")))
        .await
        .unwrap();

    assert!(store.delete_manifest(&r, &doomed.digest).await.unwrap());
    assert_eq!(store.get_manifest(&r, &doomed.digest).await.unwrap(), None);
    assert_eq!(store.resolve_tag(&r, &tag("a")).await.unwrap(), None);
    assert_eq!(store.resolve_tag(&r, &tag("b")).await.unwrap(), None);
    assert_eq!(
        store.resolve_tag(&r, &tag("c")).await.unwrap(),
        Some(kept.digest.clone())
    );
    assert_eq!(
        store.resolve_tag(&r, &tag("base")).await.unwrap(),
        Some(subject.digest.clone())
    );
    assert_eq!(
        store.list_tags(&r, None, 10).await.unwrap(),
        vec!["base", "c"]
    );
    assert_eq!(
        store.referrers(&r, &subject.digest).await.unwrap(),
        vec![kept]
    );

    assert_eq!(
        store.get_manifest(&other, &doomed.digest).await.unwrap(),
        Some(doomed.clone())
    );
    assert_eq!(
        store.resolve_tag(&other, &tag("a")).await.unwrap(),
        Some(doomed.digest.clone())
    );
    assert_eq!(
        store.referrers(&other, &subject.digest).await.unwrap(),
        vec![doomed.clone()]
    );

    assert!(
        !store.delete_manifest(&r, &doomed.digest).await.unwrap(),
        "deleted twice"
    );
    assert!(!store.delete_manifest(&r, &digest("never")).await.unwrap());
}

/// Deleting a tag leaves the manifest and its other tags.
pub async fn delete_tag_leaves_manifest<S: MetaStore>(store: Arc<S>) {
    let r = repo("app");
    let m = manifest("m");
    store.put_manifest(&r, &m, Some(&tag("v1"))).await.unwrap();
    store
        .put_manifest(&r, &m, Some(&tag("latest")))
        .await
        .unwrap();

    assert!(store.delete_tag(&r, &tag("v1")).await.unwrap());
    assert_eq!(store.resolve_tag(&r, &tag("v1")).await.unwrap(), None);
    assert_eq!(
        store.resolve_tag(&r, &tag("latest")).await.unwrap(),
        Some(m.digest.clone())
    );
    assert_eq!(store.get_manifest(&r, &m.digest).await.unwrap(), Some(m));
    assert!(
        !store.delete_tag(&r, &tag("v1")).await.unwrap(),
        "deleted twice"
    );
    assert!(!store
        .delete_tag(&repo("other"), &tag("latest"))
        .await
        .unwrap());
}

/// Tags list in byte order, page by page, scoped to their repository.
pub async fn list_tags_paginates_in_lexical_order<S: MetaStore>(store: Arc<S>) {
    let r = repo("app");
    let m = manifest("m");
    // Inserted out of order; byte order puts "v10" before "v2".
    for t in ["v2", "latest", "v10", "b", "v1", "a"] {
        store.put_manifest(&r, &m, Some(&tag(t))).await.unwrap();
    }
    // Repositories whose names extend "app" must not bleed into its list.
    store
        .put_manifest(&repo("app/sub"), &m, Some(&tag("aa")))
        .await
        .unwrap();
    store
        .put_manifest(&repo("app-x"), &m, Some(&tag("aa")))
        .await
        .unwrap();
    store
        .put_manifest(&repo("ap"), &m, Some(&tag("zz")))
        .await
        .unwrap();

    let all = store.list_tags(&r, None, 100).await.unwrap();
    assert_eq!(all, vec!["a", "b", "latest", "v1", "v10", "v2"]);

    assert_eq!(store.list_tags(&r, None, 2).await.unwrap(), vec!["a", "b"]);
    assert_eq!(
        store.list_tags(&r, Some("b"), 2).await.unwrap(),
        vec!["latest", "v1"]
    );
    assert_eq!(
        store.list_tags(&r, Some("v1"), 2).await.unwrap(),
        vec!["v10", "v2"]
    );
    assert_eq!(
        store.list_tags(&r, Some("v2"), 2).await.unwrap(),
        Vec::<String>::new()
    );
    // `last` need not be a tag that exists.
    assert_eq!(
        store.list_tags(&r, Some("c"), 1).await.unwrap(),
        vec!["latest"]
    );
    assert_eq!(
        store.list_tags(&r, Some("zzz"), 5).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        store.list_tags(&r, None, 0).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        store.list_tags(&repo("nothing"), None, 5).await.unwrap(),
        Vec::<String>::new()
    );
}

/// Repositories list in byte order, page by page, each once.
pub async fn list_repos_paginates_in_lexical_order<S: MetaStore>(store: Arc<S>) {
    let blob = digest("blob");
    // '-' (0x2d) sorts before '/' (0x2f): "a" < "a-b" < "a/x" < "b" < "c/d".
    for name in ["b", "a/x", "a"] {
        store.link_blob(&repo(name), &blob, 1).await.unwrap();
    }
    for name in ["c/d", "a-b", "a"] {
        store
            .put_manifest(&repo(name), &manifest(name), None)
            .await
            .unwrap();
    }
    store
        .link_blob(&repo("b"), &digest("again"), 1)
        .await
        .unwrap();

    let all = store.list_repos(None, 100).await.unwrap();
    assert_eq!(all, vec!["a", "a-b", "a/x", "b", "c/d"]);

    assert_eq!(store.list_repos(None, 2).await.unwrap(), vec!["a", "a-b"]);
    assert_eq!(
        store.list_repos(Some("a-b"), 2).await.unwrap(),
        vec!["a/x", "b"]
    );
    assert_eq!(store.list_repos(Some("b"), 2).await.unwrap(), vec!["c/d"]);
    assert_eq!(
        store.list_repos(Some("c/d"), 2).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(store.list_repos(Some("a/"), 1).await.unwrap(), vec!["a/x"]);
    assert_eq!(
        store.list_repos(Some("zzz"), 5).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        store.list_repos(None, 0).await.unwrap(),
        Vec::<String>::new()
    );
}

/// Referrers come back ordered by digest string, only those of the asked
/// subject in the asked repository.
pub async fn referrers_are_ordered_by_digest_and_scoped<S: MetaStore>(store: Arc<S>) {
    let (r, other) = (repo("app"), repo("other"));
    let subject = manifest("subject");
    let second = manifest("second");
    store.put_manifest(&r, &subject, None).await.unwrap();
    store.put_manifest(&r, &second, None).await.unwrap();

    let mut expected: Vec<ManifestRecord> = (0..5)
        .map(|i| referrer(&format!("ref-{i}"), &subject.digest))
        .collect();
    for record in &expected {
        store.put_manifest(&r, record, None).await.unwrap();
    }
    expected.sort_by_key(|m| m.digest.to_string());

    let of_second = referrer("of-second", &second.digest);
    store.put_manifest(&r, &of_second, None).await.unwrap();
    let elsewhere = referrer("elsewhere", &subject.digest);
    store.put_manifest(&other, &elsewhere, None).await.unwrap();

    assert_eq!(
        store.referrers(&r, &subject.digest).await.unwrap(),
        expected
    );
    assert_eq!(
        store.referrers(&r, &second.digest).await.unwrap(),
        vec![of_second]
    );
    assert_eq!(
        store.referrers(&other, &subject.digest).await.unwrap(),
        vec![elsewhere]
    );
    assert_eq!(
        store.referrers(&r, &digest("nobody")).await.unwrap(),
        vec![]
    );
    // A subject need not be stored for its referrers to be listed.
    assert_eq!(
        store.referrers(&other, &second.digest).await.unwrap(),
        vec![]
    );
}

/// A repository exists once a blob is linked or a manifest put in it.
pub async fn repo_exists_after_link_blob_or_put_manifest<S: MetaStore>(store: Arc<S>) {
    let (a, b) = (repo("team/a"), repo("team/b"));
    assert!(!store.repo_exists(&a).await.unwrap());
    store.link_blob(&a, &digest("blob"), 7).await.unwrap();
    assert!(store.repo_exists(&a).await.unwrap());
    assert!(!store.repo_exists(&b).await.unwrap());
    assert!(
        !store.repo_exists(&repo("team")).await.unwrap(),
        "a prefix is not a repo"
    );

    store.put_manifest(&b, &manifest("m"), None).await.unwrap();
    assert!(store.repo_exists(&b).await.unwrap());
}

/// Upload sessions can be recorded, fetched, listed and forgotten.
pub async fn uploads_put_get_list_delete<S: MetaStore>(store: Arc<S>) {
    let record = |id: &str, r: &str, t: u64| UploadRecord {
        id: upload_id(id),
        repo: repo(r),
        started_unix: t,
    };
    let uploads = [
        record("3f1c-aa", "app", 1_700_000_000),
        record("0b2d-bb", "app", 1_700_000_001),
        record("9e4f-cc", "team/lib", 1_700_000_002),
    ];

    assert_eq!(store.list_uploads().await.unwrap(), vec![]);
    for u in &uploads {
        store.put_upload(u).await.unwrap();
    }
    for u in &uploads {
        assert_eq!(store.get_upload(&u.id).await.unwrap().as_ref(), Some(u));
    }
    assert_eq!(store.get_upload(&upload_id("missing")).await.unwrap(), None);

    let sorted = |mut v: Vec<UploadRecord>| {
        v.sort_by(|x, y| x.id.cmp(&y.id));
        v
    };
    assert_eq!(
        sorted(store.list_uploads().await.unwrap()),
        sorted(uploads.to_vec())
    );

    store.delete_upload(&uploads[0].id).await.unwrap();
    assert_eq!(store.get_upload(&uploads[0].id).await.unwrap(), None);
    assert_eq!(
        sorted(store.list_uploads().await.unwrap()),
        sorted(uploads[1..].to_vec())
    );
    // Deleting what is not there is fine.
    store.delete_upload(&uploads[0].id).await.unwrap();
    store.delete_upload(&upload_id("missing")).await.unwrap();
}

/// Sixteen tasks writing at once through one shared store all land.
pub async fn concurrent_puts_from_16_tasks_all_land<S: MetaStore>(store: Arc<S>) {
    const TASKS: usize = 16;
    let r = repo("busy");
    let subject = manifest("subject");

    let handles: Vec<_> = (0..TASKS)
        .map(|i| {
            let (store, r, subject) = (Arc::clone(&store), r.clone(), subject.digest.clone());
            tokio::spawn(async move {
                let record = referrer(&format!("m{i:02}"), &subject);
                store
                    .put_manifest(&r, &record, Some(&tag(&format!("t{i:02}"))))
                    .await
                    .unwrap();
                store
                    .link_blob(&r, &digest(&format!("blob{i}")), i as u64)
                    .await
                    .unwrap();
                record
            })
        })
        .collect();
    let mut records = Vec::new();
    for h in handles {
        records.push(h.await.expect("writer task panicked"));
    }

    let tags = store.list_tags(&r, None, 100).await.unwrap();
    let expected: Vec<String> = (0..TASKS).map(|i| format!("t{i:02}")).collect();
    assert_eq!(tags, expected);
    for (i, record) in records.iter().enumerate() {
        let t = tag(&format!("t{i:02}"));
        assert_eq!(
            store.resolve_tag(&r, &t).await.unwrap(),
            Some(record.digest.clone())
        );
        let blob = digest(&format!("blob{i}"));
        assert_eq!(store.blob_size(&r, &blob).await.unwrap(), Some(i as u64));
    }
    assert_eq!(
        store.referrers(&r, &subject.digest).await.unwrap().len(),
        TASKS
    );
}
