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

use crate::{
    DirectoryRecord, DirectorySnapshot, ManifestEntry, ManifestRecord, MetaError, MetaStore,
    NamespaceUsage, PurgeCounts, RefreshRecord, RefreshScope, TagTimes, UploadRecord, UploadUsage,
    Upsert,
};

/// Expands to the whole behaviour suite as `#[tokio::test]` functions; see
/// the [module docs](crate::suite) for what `$make` must be.
#[macro_export]
macro_rules! meta_store_suite {
    ($make:expr $(,)?) => {
        $crate::meta_store_suite!(@tests $make;
            blob_link_is_idempotent_and_scoped_to_repo,
            manifest_put_get_roundtrip,
            tag_moves_when_put_again,
            a_tagged_manifest_is_read_with_its_tag,
            put_same_manifest_again_only_adds_tag,
            delete_manifest_removes_its_tags_and_referrer_entry,
            delete_tag_leaves_manifest,
            list_tags_paginates_in_lexical_order,
            list_repos_paginates_in_lexical_order,
            referrers_are_ordered_by_digest_and_scoped,
            repo_exists_after_link_blob_or_put_manifest,
            uploads_put_get_list_delete,
            upload_bytes_are_recorded_and_kept_across_a_put,
            upload_usage_counts_a_namespace_and_its_owner_only,
            directory_put_and_delete_bump_the_version,
            directory_snapshot_is_ordered_by_kind_then_key,
            directory_values_round_trip_byte_exact,
            directory_and_namespace_refuse_what_no_backend_can_store,
            namespace_usage_counts_distinct_content_of_its_repositories,
            namespace_usage_of_an_empty_namespace_is_zero,
            refresh_tokens_are_taken_once,
            refresh_tokens_are_bounded_per_identity_oldest_first,
            refresh_tokens_are_revoked_by_identity_tenant_or_all_and_pruned,
            purge_namespace_removes_everything_of_the_namespace_only,
            purge_namespace_is_safe_to_repeat_and_refuses_a_non_namespace,
            put_manifest_refuses_what_is_missing_and_writes_nothing,
            mount_links_only_what_the_source_holds,
            gc_collects_exactly_what_nothing_references,
            gc_reviews_wait_for_the_delay_and_a_touch_postpones_them,
            gc_tombstone_refuses_links_manifests_and_holds,
            gc_keeps_held_and_shared_content,
            gc_tombstones_past_their_lease_are_claimed_again,
            gc_orphans_are_queued_only_when_unknown_and_wait_their_age,
            gc_dry_run_decides_exactly_what_a_pass_does_and_changes_nothing,
            gc_purge_queues_every_digest_it_removed,
            namespace_bytes_follow_links_manifests_and_collection,
            push_times_follow_tags_and_manifests,
            record_pull_writes_at_most_once_per_interval,
            record_pulls_writes_a_batch_as_single_pulls_would,
            retention_snapshot_lists_a_namespace_with_children_and_subjects,
            retention_deletes_recheck_the_live_state_in_their_transaction,
            retention_deletes_queue_what_they_free_for_collection,
            export_lists_page_through_a_namespace_with_times,
            import_keeps_given_times_and_says_what_it_did,
            import_refuses_what_the_repository_does_not_hold,
            purge_repository_removes_one_repository_and_queues_its_content,
            gc_unhold_all_ends_one_holders_holds_and_queues_their_content,
        );

        $crate::meta_store_suite!(@concurrent $make;
            concurrent_puts_from_16_tasks_all_land,
            concurrent_directory_puts_all_land_and_bump_once_each,
            directory_snapshot_agrees_with_its_version_under_writes,
            gc_concurrent_collectors_doom_each_digest_once,
        );
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
    (@concurrent $make:expr; $($name:ident),* $(,)?) => {
        $(
            // Several worker threads, so the tasks really run at the same time.
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
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

/// A minimal image manifest record. It references nothing, so it can be
/// stored anywhere; [`image`] makes one whose blobs are linked first.
fn manifest(seed: &str) -> ManifestRecord {
    ManifestRecord {
        digest: digest(seed),
        media_type: "application/vnd.oci.image.manifest.v1+json".to_string(),
        size: 100 + seed.len() as u64,
        artifact_type: None,
        annotations: None,
        subject: None,
        references: Vec::new(),
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

/// A directory record.
fn entry(kind: &str, key: &str, value: &str) -> DirectoryRecord {
    DirectoryRecord {
        kind: kind.to_string(),
        key: key.to_string(),
        value: value.to_string(),
    }
}

fn assert_internal<T: std::fmt::Debug>(result: Result<T, MetaError>, what: &str) {
    assert!(
        matches!(result, Err(MetaError::Internal(_))),
        "{what}: expected Internal, got {result:?}"
    );
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

/// A tag and the record it points at, read together: the record follows
/// the tag as it moves, and is gone with the tag or the manifest.
pub async fn a_tagged_manifest_is_read_with_its_tag<S: MetaStore>(store: Arc<S>) {
    let r = repo("app");
    let (old, new) = (manifest("old"), manifest("new"));
    let latest = tag("latest");
    assert_eq!(store.get_tagged_manifest(&r, &latest).await.unwrap(), None);
    store.put_manifest(&r, &old, Some(&latest)).await.unwrap();
    assert_eq!(
        store.get_tagged_manifest(&r, &latest).await.unwrap(),
        Some(old.clone())
    );
    store.put_manifest(&r, &new, Some(&latest)).await.unwrap();
    assert_eq!(
        store.get_tagged_manifest(&r, &latest).await.unwrap(),
        Some(new.clone())
    );
    assert_eq!(
        store
            .get_tagged_manifest(&repo("other"), &latest)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.get_tagged_manifest(&r, &tag("v1")).await.unwrap(),
        None
    );
    store
        .put_manifest(&r, &old, Some(&tag("v1")))
        .await
        .unwrap();
    assert!(store.delete_tag(&r, &tag("v1")).await.unwrap());
    assert_eq!(
        store.get_tagged_manifest(&r, &tag("v1")).await.unwrap(),
        None
    );
    assert!(store.delete_manifest(&r, &new.digest).await.unwrap());
    assert_eq!(store.get_tagged_manifest(&r, &latest).await.unwrap(), None);
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
        bytes: t % 1000,
        owner: t.is_multiple_of(2).then(|| "alice".to_string()),
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

/// An upload session record with no bytes yet.
fn session(id: &str, r: &str, owner: Option<&str>) -> UploadRecord {
    UploadRecord {
        id: upload_id(id),
        repo: repo(r),
        started_unix: 1_700_000_000,
        bytes: 0,
        owner: owner.map(str::to_string),
    }
}

/// `set_upload_bytes` changes only the byte count of its session, is read
/// back by `get_upload`, `list_uploads` and `upload_usage`, and is no
/// error for a session that is gone.
pub async fn upload_bytes_are_recorded_and_kept_across_a_put<S: MetaStore>(store: Arc<S>) {
    let a = session("aa-1", "acme/app", Some("alice"));
    let b = session("bb-2", "acme/app", None);
    store.put_upload(&a).await.unwrap();
    store.put_upload(&b).await.unwrap();

    store.set_upload_bytes(&a.id, 61_440).await.unwrap();
    let got = store.get_upload(&a.id).await.unwrap().unwrap();
    assert_eq!(
        got,
        UploadRecord {
            bytes: 61_440,
            ..a.clone()
        }
    );
    assert_eq!(store.get_upload(&b.id).await.unwrap(), Some(b.clone()));
    store.set_upload_bytes(&a.id, 70_000).await.unwrap();
    store.set_upload_bytes(&b.id, 5).await.unwrap();
    let mut listed = store.list_uploads().await.unwrap();
    listed.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(
        listed.iter().map(|u| u.bytes).collect::<Vec<_>>(),
        vec![70_000, 5]
    );
    assert_eq!(
        store.upload_usage("acme", Some("alice")).await.unwrap(),
        UploadUsage {
            sessions: 2,
            bytes: 70_005,
            owned: 1,
        }
    );

    // A session that is gone: nothing happens, nothing comes back.
    store.delete_upload(&a.id).await.unwrap();
    store.set_upload_bytes(&a.id, 1).await.unwrap();
    assert_eq!(store.get_upload(&a.id).await.unwrap(), None);
    store
        .set_upload_bytes(&upload_id("never-was"), 1)
        .await
        .unwrap();
    assert_eq!(
        store.upload_usage("acme", None).await.unwrap(),
        UploadUsage {
            sessions: 1,
            bytes: 5,
            owned: 0,
        }
    );
}

/// `upload_usage` counts the sessions of the namespace's repositories
/// (`ns` and `ns/…`), never those of repositories merely named like it,
/// and of those the ones the owner asked about opened; a deleted session
/// stops counting.
pub async fn upload_usage_counts_a_namespace_and_its_owner_only<S: MetaStore>(store: Arc<S>) {
    assert_eq!(
        store.upload_usage("acme", Some("alice")).await.unwrap(),
        UploadUsage::default()
    );
    let ours = [
        session("a1", "acme", Some("alice")),
        session("a2", "acme/app", Some("alice")),
        session("a3", "acme/team/deep", Some("bob")),
        session("a4", "acme/app", None),
    ];
    let theirs = [
        session("b1", "acme-evil/x", Some("alice")),
        session("b2", "acmex/y", Some("alice")),
        session("b3", "acme0", Some("alice")),
        session("b4", "acm", Some("alice")),
    ];
    for (i, u) in ours.iter().chain(&theirs).enumerate() {
        store.put_upload(u).await.unwrap();
        store
            .set_upload_bytes(&u.id, 10 * (i as u64 + 1))
            .await
            .unwrap();
    }
    assert_eq!(
        store.upload_usage("acme", Some("alice")).await.unwrap(),
        UploadUsage {
            sessions: 4,
            bytes: 10 + 20 + 30 + 40,
            owned: 2,
        }
    );
    assert_eq!(
        store.upload_usage("acme", Some("bob")).await.unwrap().owned,
        1
    );
    assert_eq!(
        store.upload_usage("acme", None).await.unwrap(),
        UploadUsage {
            sessions: 4,
            bytes: 100,
            owned: 0,
        },
        "no owner asked about: none owned, sessions without owner included"
    );
    assert_eq!(
        store
            .upload_usage("acme-evil", Some("alice"))
            .await
            .unwrap(),
        UploadUsage {
            sessions: 1,
            bytes: 50,
            owned: 1,
        }
    );
    assert_eq!(
        store.upload_usage("nobody", Some("alice")).await.unwrap(),
        UploadUsage::default()
    );

    store.delete_upload(&ours[1].id).await.unwrap();
    assert_eq!(
        store.upload_usage("acme", Some("alice")).await.unwrap(),
        UploadUsage {
            sessions: 3,
            bytes: 10 + 30 + 40,
            owned: 1,
        }
    );
    for bad in ["", "acme/app", "Acme"] {
        assert_internal(
            store.upload_usage(bad, None).await,
            &format!("upload usage of {bad:?}"),
        );
    }
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

/// Every write bumps the directory version by one, in step with what a
/// snapshot shows; a `create_only` put over an existing entry and a delete
/// of an absent one change nothing, the version included.
pub async fn directory_put_and_delete_bump_the_version<S: MetaStore>(store: Arc<S>) {
    let at = |version: u64, records: &[DirectoryRecord]| DirectorySnapshot {
        version,
        records: records.to_vec(),
    };
    assert_eq!(store.directory_version().await.unwrap(), 0);
    assert_eq!(store.directory_snapshot().await.unwrap(), at(0, &[]));

    assert!(store
        .directory_put("tenant", "acme", "v1", true)
        .await
        .unwrap());
    assert_eq!(store.directory_version().await.unwrap(), 1);
    assert!(
        !store
            .directory_put("tenant", "acme", "v2", true)
            .await
            .unwrap(),
        "create_only wrote over an existing entry"
    );
    assert_eq!(
        store.directory_snapshot().await.unwrap(),
        at(1, &[entry("tenant", "acme", "v1")]),
        "a refused create_only put changed something"
    );

    assert!(store
        .directory_put("tenant", "acme", "v3", false)
        .await
        .unwrap());
    assert_eq!(store.directory_version().await.unwrap(), 2);
    // Writing the same value again is still a write.
    assert!(store
        .directory_put("tenant", "acme", "v3", false)
        .await
        .unwrap());
    // The same key under another kind is another entry.
    assert!(store
        .directory_put("user", "acme", "u", true)
        .await
        .unwrap());
    assert_eq!(
        store.directory_snapshot().await.unwrap(),
        at(
            4,
            &[entry("tenant", "acme", "v3"), entry("user", "acme", "u")]
        )
    );

    assert!(store.directory_delete("tenant", "acme").await.unwrap());
    assert_eq!(store.directory_version().await.unwrap(), 5);
    assert!(
        !store.directory_delete("tenant", "acme").await.unwrap(),
        "deleted twice"
    );
    assert!(!store.directory_delete("robot", "acme").await.unwrap());
    assert!(!store.directory_delete("user", "acm").await.unwrap());
    assert_eq!(
        store.directory_snapshot().await.unwrap(),
        at(5, &[entry("user", "acme", "u")]),
        "deleting absent entries changed something"
    );

    assert!(store
        .directory_put("tenant", "acme", "again", true)
        .await
        .unwrap());
    assert_eq!(
        store.directory_snapshot().await.unwrap(),
        at(
            6,
            &[entry("tenant", "acme", "again"), entry("user", "acme", "u")]
        )
    );
}

/// A snapshot lists entries by kind, then key, both in byte order (so no
/// kind's entries interleave with a kind it is a prefix of), with the
/// version they were read at.
pub async fn directory_snapshot_is_ordered_by_kind_then_key<S: MetaStore>(store: Arc<S>) {
    // In the order expected back: 'R' < 'r', 'B' < 'a', '-' < '/' < 'b',
    // 'z' < 'é' (0xc3), and "tenant" < "tenant-x", "user" < "users" as
    // kinds whatever their keys.
    let expected = [
        ("Robot", "x"),
        ("robot", "ci"),
        ("tenant", "B"),
        ("tenant", "a"),
        ("tenant", "a-b"),
        ("tenant", "a/b"),
        ("tenant", "ab"),
        ("tenant", "z"),
        ("tenant", "é"),
        ("tenant-x", "a"),
        ("user", "z"),
        ("users", "a"),
    ];
    // Written in another order.
    for (kind, key) in expected
        .iter()
        .rev()
        .step_by(2)
        .chain(expected.iter().step_by(2))
    {
        let value = format!("{kind}={key}");
        assert!(store.directory_put(kind, key, &value, true).await.unwrap());
    }

    let snapshot = store.directory_snapshot().await.unwrap();
    let listed: Vec<(&str, &str)> = snapshot
        .records
        .iter()
        .map(|r| (r.kind.as_str(), r.key.as_str()))
        .collect();
    assert_eq!(listed, expected);
    for r in &snapshot.records {
        assert_eq!(r.value, format!("{}={}", r.kind, r.key));
    }
    assert_eq!(snapshot.version, expected.len() as u64);
    assert_eq!(store.directory_version().await.unwrap(), snapshot.version);
}

/// Kinds, keys and values come back exactly as written: any Unicode,
/// quotes, backslashes, wildcard characters, whitespace, the empty string
/// and a value of about 64 KiB.
pub async fn directory_values_round_trip_byte_exact<S: MetaStore>(store: Arc<S>) {
    let piece = "Zoë's \"layer\" 🚀 \\n\n";
    let large = piece.repeat(64 * 1024 / piece.len() + 1);
    assert!(
        large.len() >= 64 * 1024,
        "large value is {} bytes",
        large.len()
    );
    let mut written = vec![
        entry(
            "tenant",
            "plain",
            r#"{"name":"acme","quota":{"max_bytes":1000}}"#,
        ),
        entry("tenant", "empty", ""),
        entry(
            "tenant",
            "quotes 'single' \"double\" `back`",
            r#"{"q":"\"","s":"'","b":"\\","u":"\u00e9"}"#,
        ),
        entry("user", "100%_off*?[x]", "%_*?[]^$.\\"),
        entry("user", "Zoë 日本語 🚀", "日本語 🚀 émoji\u{200b}"),
        entry("user", " spaced ", "  leading and trailing  \r\n\ttabs\n"),
        entry("robot", "large", &large),
    ];
    for r in &written {
        assert!(store
            .directory_put(&r.kind, &r.key, &r.value, false)
            .await
            .unwrap());
    }
    written.sort_by(|a, b| (&a.kind, &a.key).cmp(&(&b.kind, &b.key)));
    let snapshot = store.directory_snapshot().await.unwrap();
    assert_eq!(snapshot.records.len(), written.len());
    for (got, want) in snapshot.records.iter().zip(&written) {
        assert!(got == want, "{:?} came back changed", want.key);
    }

    // Overwriting the large value with a short one leaves nothing behind.
    assert!(store
        .directory_put("robot", "large", "short", false)
        .await
        .unwrap());
    let snapshot = store.directory_snapshot().await.unwrap();
    let large = snapshot.records.iter().find(|r| r.key == "large").unwrap();
    assert_eq!(large.value, "short");
}

/// NUL in directory text, and a namespace that is not one repository-name
/// component, are refused alike by every backend, and change nothing.
pub async fn directory_and_namespace_refuse_what_no_backend_can_store<S: MetaStore>(store: Arc<S>) {
    assert_internal(
        store.directory_put("tenant", "a\0b", "v", false).await,
        "NUL in a key",
    );
    assert_internal(
        store.directory_put("ten\0ant", "a", "v", true).await,
        "NUL in a kind",
    );
    assert_internal(
        store.directory_put("tenant", "a", "v\0", false).await,
        "NUL in a value",
    );
    assert_internal(
        store.directory_delete("tenant", "a\0").await,
        "NUL in a deleted key",
    );
    assert_eq!(
        store.directory_snapshot().await.unwrap(),
        DirectorySnapshot::default()
    );

    store
        .link_blob(&repo("acme/app"), &digest("blob"), 1)
        .await
        .unwrap();
    for bad in ["", "acme/app", "acme/", "Acme", "acme\0", "-acme"] {
        assert_internal(
            store.namespace_usage(bad, None).await,
            &format!("namespace {bad:?}"),
        );
    }
}

/// A namespace's usage counts each distinct blob and manifest once across
/// all its repositories (`ns` itself and everything under `ns/`), and
/// nothing of repositories whose names merely start like it.
pub async fn namespace_usage_counts_distinct_content_of_its_repositories<S: MetaStore>(
    store: Arc<S>,
) {
    let shared = digest("shared-layer");
    let only_a = digest("a-layer");
    let top = digest("top-layer");
    let deep = digest("deep-layer");
    // In two repositories of the namespace: counted once.
    store
        .link_blob(&repo("acme/a"), &shared, 1000)
        .await
        .unwrap();
    store
        .link_blob(&repo("acme/b"), &shared, 1000)
        .await
        .unwrap();
    store
        .link_blob(&repo("acme/a"), &only_a, 100)
        .await
        .unwrap();
    // The repository named just like the namespace belongs to it.
    store.link_blob(&repo("acme"), &top, 10).await.unwrap();
    store
        .link_blob(&repo("acme/team/app"), &deep, 1)
        .await
        .unwrap();
    let m = manifest("m");
    let n = manifest("n");
    store
        .put_manifest(&repo("acme/a"), &m, Some(&tag("v1")))
        .await
        .unwrap();
    store.put_manifest(&repo("acme/c"), &m, None).await.unwrap();
    store.put_manifest(&repo("acme"), &n, None).await.unwrap();
    // A repository that held something and holds nothing now.
    let gone = digest("gone");
    store.link_blob(&repo("acme/gone"), &gone, 7).await.unwrap();
    assert!(store.unlink_blob(&repo("acme/gone"), &gone).await.unwrap());

    // Neighbours whose names start like the namespace.
    let foreign = digest("foreign");
    let evil = manifest("evil");
    for name in ["acme-evil/x", "acmex/y", "acm", "acme0"] {
        store.link_blob(&repo(name), &foreign, 5000).await.unwrap();
    }
    store
        .link_blob(&repo("acme-evil/x"), &shared, 1000)
        .await
        .unwrap();
    store
        .put_manifest(&repo("acme-evil/x"), &evil, None)
        .await
        .unwrap();

    let usage = store.namespace_usage("acme", None).await.unwrap();
    assert_eq!(
        usage,
        NamespaceUsage {
            bytes: 1000 + 100 + 10 + 1 + m.size + n.size,
            // acme, acme/a, acme/b, acme/c, acme/team/app
            repositories: 5,
            holds_digest: false,
        }
    );
    for (asked, held) in [
        (&shared, true),
        (&only_a, true),
        (&top, true),
        (&deep, true),
        (&m.digest, true),
        (&n.digest, true),
        (&gone, false),
        (&foreign, false),
        (&evil.digest, false),
        (&digest("never"), false),
    ] {
        let usage = store.namespace_usage("acme", Some(asked)).await.unwrap();
        assert_eq!(usage.holds_digest, held, "holds {asked}?");
        assert_eq!(usage.bytes, 1000 + 100 + 10 + 1 + m.size + n.size);
    }

    assert_eq!(
        store
            .namespace_usage("acme-evil", Some(&shared))
            .await
            .unwrap(),
        NamespaceUsage {
            bytes: 5000 + 1000 + evil.size,
            repositories: 1,
            holds_digest: true,
        }
    );
    for ns in ["acmex", "acm", "acme0"] {
        assert_eq!(
            store.namespace_usage(ns, Some(&foreign)).await.unwrap(),
            NamespaceUsage {
                bytes: 5000,
                repositories: 1,
                holds_digest: true,
            },
            "namespace {ns}"
        );
    }
}

/// A namespace holding nothing reports zeros, however much its neighbours
/// hold.
pub async fn namespace_usage_of_an_empty_namespace_is_zero<S: MetaStore>(store: Arc<S>) {
    let blob = digest("blob");
    assert_eq!(
        store.namespace_usage("acme", None).await.unwrap(),
        NamespaceUsage::default()
    );
    assert_eq!(
        store.namespace_usage("acme", Some(&blob)).await.unwrap(),
        NamespaceUsage::default()
    );

    for name in [
        "acme-evil/x",
        "acmex/y",
        "acme0",
        "acme0/x",
        "acme.x/y",
        "acm/e",
        "a",
    ] {
        store.link_blob(&repo(name), &blob, 10).await.unwrap();
        store
            .put_manifest(&repo(name), &manifest(name), None)
            .await
            .unwrap();
    }
    assert_eq!(
        store.namespace_usage("acme", Some(&blob)).await.unwrap(),
        NamespaceUsage::default()
    );
}

/// Fills repository `r` with a blob, a manifest tagged `v1`, a referrer of
/// it and an upload session.
async fn fill<S: MetaStore>(store: &S, r: &str) -> (Digest, ManifestRecord, ManifestRecord) {
    let blob = digest(&format!("{r}-blob"));
    let m = manifest(&format!("{r}-m"));
    let sbom = referrer(&format!("{r}-sbom"), &m.digest);
    store.link_blob(&repo(r), &blob, 100).await.unwrap();
    store
        .put_manifest(&repo(r), &m, Some(&tag("v1")))
        .await
        .unwrap();
    store.put_manifest(&repo(r), &sbom, None).await.unwrap();
    store
        .put_upload(&session(
            &format!("up-{}", r.replace(['/', '.'], "-")),
            r,
            None,
        ))
        .await
        .unwrap();
    (blob, m, sbom)
}

/// Purging `acme` removes every blob link, manifest, tag, referrers entry,
/// repository and upload record of `acme` and `acme/…`, and nothing of
/// neighbours whose names start like it.
pub async fn purge_namespace_removes_everything_of_the_namespace_only<S: MetaStore>(store: Arc<S>) {
    let ours = ["acme", "acme/app", "acme/team/deep"];
    let theirs = ["acme-evil/x", "acmex/y", "acme0", "acm", "acme.x/y"];
    let mut filled = Vec::new();
    for r in ours.iter().chain(&theirs) {
        filled.push((*r, fill(&*store, r).await));
    }
    let before_theirs: Vec<NamespaceUsage> = {
        let mut v = Vec::new();
        for ns in ["acme-evil", "acmex", "acme0", "acm", "acme.x"] {
            v.push(store.namespace_usage(ns, None).await.unwrap());
        }
        v
    };

    let counts = store.purge_namespace("acme").await.unwrap();
    assert_eq!(
        counts,
        PurgeCounts {
            blobs: 3,
            manifests: 6,
            tags: 3,
            repositories: 3,
            uploads: 3,
        }
    );
    assert_eq!(
        store.namespace_usage("acme", None).await.unwrap(),
        NamespaceUsage::default()
    );
    assert_eq!(
        store.upload_usage("acme", None).await.unwrap(),
        UploadUsage::default()
    );
    for (r, (blob, m, sbom)) in &filled {
        let gone = ours.contains(r);
        let rn = repo(r);
        let what = |x: &str| format!("{x} of {r} after purging acme");
        assert_eq!(
            store.blob_size(&rn, blob).await.unwrap().is_none(),
            gone,
            "{}",
            what("blob")
        );
        assert_eq!(
            store.get_manifest(&rn, &m.digest).await.unwrap().is_none(),
            gone,
            "{}",
            what("manifest")
        );
        assert_eq!(
            store.resolve_tag(&rn, &tag("v1")).await.unwrap().is_none(),
            gone,
            "{}",
            what("tag")
        );
        let referrers = store.referrers(&rn, &m.digest).await.unwrap();
        let expected = if gone { vec![] } else { vec![sbom.clone()] };
        assert_eq!(referrers, expected, "{}", what("referrers"));
        assert_eq!(
            store.list_tags(&rn, None, 10).await.unwrap().is_empty(),
            gone,
            "{}",
            what("tag list")
        );
        assert_eq!(
            !store.repo_exists(&rn).await.unwrap(),
            gone,
            "{}",
            what("repository")
        );
        let id = upload_id(&format!("up-{}", r.replace(['/', '.'], "-")));
        assert_eq!(
            store.get_upload(&id).await.unwrap().is_none(),
            gone,
            "{}",
            what("upload")
        );
    }
    let mut after_theirs = Vec::new();
    for ns in ["acme-evil", "acmex", "acme0", "acm", "acme.x"] {
        after_theirs.push(store.namespace_usage(ns, None).await.unwrap());
    }
    assert_eq!(after_theirs, before_theirs);
    let mut names = theirs.to_vec();
    names.sort_unstable();
    assert_eq!(store.list_repos(None, 100).await.unwrap(), names);
    assert_eq!(store.list_uploads().await.unwrap().len(), theirs.len());

    // The namespace can be filled again from nothing.
    fill(&*store, "acme/app").await;
    assert_eq!(
        store
            .namespace_usage("acme", None)
            .await
            .unwrap()
            .repositories,
        1
    );
}

/// Purging twice, or purging a namespace that never held anything, is no
/// error and removes nothing more; a name that is not one namespace is
/// refused and removes nothing.
pub async fn purge_namespace_is_safe_to_repeat_and_refuses_a_non_namespace<S: MetaStore>(
    store: Arc<S>,
) {
    assert_eq!(
        store.purge_namespace("acme").await.unwrap(),
        PurgeCounts::default()
    );
    fill(&*store, "acme/app").await;
    fill(&*store, "acme-evil/app").await;
    for bad in ["", "acme/app", "acme/", "Acme", "acme\0", "-acme"] {
        assert_internal(
            store.purge_namespace(bad).await,
            &format!("purge of {bad:?}"),
        );
    }
    assert!(store.repo_exists(&repo("acme/app")).await.unwrap());
    assert_eq!(store.purge_namespace("acme").await.unwrap().repositories, 1);
    assert_eq!(
        store.purge_namespace("acme").await.unwrap(),
        PurgeCounts::default()
    );
    assert!(store.repo_exists(&repo("acme-evil/app")).await.unwrap());
}

/// Sixteen tasks writing directory entries at once all land, and the
/// version moves by exactly one per write: no bump is lost. Of sixteen
/// `create_only` puts of the same entry, exactly one wins.
pub async fn concurrent_directory_puts_all_land_and_bump_once_each<S: MetaStore>(store: Arc<S>) {
    const TASKS: usize = 16;
    assert!(store
        .directory_put("tenant", "seed", "{}", false)
        .await
        .unwrap());
    let before = store.directory_version().await.unwrap();

    let handles: Vec<_> = (0..TASKS)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mine = store
                    .directory_put("user", &format!("u{i:02}"), &format!("{{\"n\":{i}}}"), true)
                    .await
                    .unwrap();
                assert!(mine, "u{i:02} existed before it was written");
                store
                    .directory_put("tenant", "contested", &format!("{i}"), true)
                    .await
                    .unwrap()
                    .then_some(i)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for h in handles {
        winners.extend(h.await.expect("writer task panicked"));
    }
    assert_eq!(
        winners.len(),
        1,
        "winners of the contested entry: {winners:?}"
    );

    let snapshot = store.directory_snapshot().await.unwrap();
    assert_eq!(snapshot.version, before + TASKS as u64 + 1);
    assert_eq!(store.directory_version().await.unwrap(), snapshot.version);
    let mut expected = vec![
        entry("tenant", "contested", &winners[0].to_string()),
        entry("tenant", "seed", "{}"),
    ];
    expected
        .extend((0..TASKS).map(|i| entry("user", &format!("u{i:02}"), &format!("{{\"n\":{i}}}"))));
    assert_eq!(snapshot.records, expected);
}

/// Snapshots taken while two tasks keep adding entries each agree with
/// their version: with only new entries written to an empty directory, a
/// consistent snapshot holds exactly `version` of them.
pub async fn directory_snapshot_agrees_with_its_version_under_writes<S: MetaStore>(store: Arc<S>) {
    const PER_WRITER: usize = 20;
    let writers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|writer| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0..PER_WRITER {
                    let key = format!("{writer}{i:02}");
                    assert!(store.directory_put("user", &key, "{}", true).await.unwrap());
                }
            })
        })
        .collect();

    let mut last = 0;
    let mut snapshots = 0;
    while writers.iter().any(|w| !w.is_finished()) || snapshots == 0 {
        let snapshot = store.directory_snapshot().await.unwrap();
        assert_eq!(
            snapshot.records.len() as u64,
            snapshot.version,
            "a snapshot disagrees with its version"
        );
        assert!(snapshot.version >= last, "the version went back");
        last = snapshot.version;
        snapshots += 1;
        tokio::task::yield_now().await;
    }
    for w in writers {
        w.await.expect("writer task panicked");
    }
    let snapshot = store.directory_snapshot().await.unwrap();
    assert_eq!(snapshot.version, 2 * PER_WRITER as u64);
    assert_eq!(snapshot.records.len(), 2 * PER_WRITER);
}

fn refresh(hash: &str, identity: &str, tenant: &str, created: u64, expires: u64) -> RefreshRecord {
    RefreshRecord {
        hash: hash.to_string(),
        subject: format!("{identity}-name"),
        identity: identity.to_string(),
        generation: "0.0.0".to_string(),
        tenant: tenant.to_string(),
        service: "registry.test".to_string(),
        created_unix: created,
        expires_unix: expires,
    }
}

/// A refresh token comes back whole once, then is gone.
pub async fn refresh_tokens_are_taken_once<S: MetaStore>(store: Arc<S>) {
    let r = refresh("h1", "id-a", "acme", 10, 1_000);
    store.refresh_put(&r, 10, 10).await.unwrap();
    assert_eq!(store.refresh_take("h1").await.unwrap(), Some(r));
    assert_eq!(store.refresh_take("h1").await.unwrap(), None);
    assert_eq!(store.refresh_take("never").await.unwrap(), None);
}

/// Past the bound the oldest tokens of that identity go, expired ones go
/// first, and other identities are untouched.
pub async fn refresh_tokens_are_bounded_per_identity_oldest_first<S: MetaStore>(store: Arc<S>) {
    store
        .refresh_put(&refresh("other", "id-b", "acme", 1, 1_000), 3, 1)
        .await
        .unwrap();
    for i in 0..5u64 {
        let r = refresh(&format!("a{i}"), "id-a", "acme", 10 + i, 1_000);
        store.refresh_put(&r, 3, 10 + i).await.unwrap();
    }
    for gone in ["a0", "a1"] {
        assert_eq!(store.refresh_take(gone).await.unwrap(), None, "{gone}");
    }
    // An expired one is dropped by the next put of its identity.
    store
        .refresh_put(&refresh("old", "id-c", "acme", 1, 5), 3, 1)
        .await
        .unwrap();
    store
        .refresh_put(&refresh("new", "id-c", "acme", 6, 1_000), 3, 6)
        .await
        .unwrap();
    assert_eq!(store.refresh_take("old").await.unwrap(), None);
    for kept in ["a2", "a3", "a4", "other", "new"] {
        assert!(store.refresh_take(kept).await.unwrap().is_some(), "{kept}");
    }
}

/// Revocation removes exactly what it names; pruning only the expired.
pub async fn refresh_tokens_are_revoked_by_identity_tenant_or_all_and_pruned<S: MetaStore>(
    store: Arc<S>,
) {
    let put = |hash: &'static str, id: &'static str, tenant: &'static str, expires: u64| {
        let store = Arc::clone(&store);
        async move {
            store
                .refresh_put(&refresh(hash, id, tenant, 1, expires), 10, 1)
                .await
                .unwrap()
        }
    };
    put("a1", "id-a", "acme", 100).await;
    put("a2", "id-a", "acme", 100).await;
    put("b1", "id-b", "acme", 100).await;
    put("g1", "id-g", "globex", 100).await;
    put("h1", "id-h", "", 100).await;
    put("x1", "id-x", "globex", 5).await;
    let n = store
        .refresh_revoke(&RefreshScope::Identity("id-a".into()))
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert!(store.refresh_take("a1").await.unwrap().is_none());
    assert_eq!(
        store
            .refresh_revoke(&RefreshScope::Tenant("acme".into()))
            .await
            .unwrap(),
        1
    );
    assert!(store.refresh_take("b1").await.unwrap().is_none());
    assert_eq!(store.refresh_prune(50).await.unwrap(), 1);
    assert!(store.refresh_take("x1").await.unwrap().is_none());
    assert_eq!(store.refresh_revoke(&RefreshScope::All).await.unwrap(), 2);
    assert!(store.refresh_take("g1").await.unwrap().is_none());
    assert!(store.refresh_take("h1").await.unwrap().is_none());
}

// ---- garbage collection (see `crate::gc`) ----

/// Links each blob of `layers` (and a config) into `r` and stores an image
/// manifest referencing them, tagged `t`.
async fn image<S: MetaStore>(
    store: &S,
    r: &str,
    seed: &str,
    layers: &[&Digest],
    t: Option<&str>,
) -> ManifestRecord {
    let config = digest(&format!("{seed}-config"));
    store.link_blob(&repo(r), &config, 10).await.unwrap();
    for layer in layers {
        store.link_blob(&repo(r), layer, 1000).await.unwrap();
    }
    let mut references = vec![config];
    references.extend(layers.iter().map(|d| (*d).clone()));
    let record = ManifestRecord {
        references,
        ..manifest(seed)
    };
    store
        .put_manifest(&repo(r), &record, t.map(tag).as_ref())
        .await
        .unwrap();
    record
}

/// A pass's policy at `now` with delay `delay`.
fn policy(now: u64, delay: u64, holder: &str) -> crate::gc::ReviewPolicy {
    crate::gc::ReviewPolicy {
        now_unix: now,
        review_delay_secs: delay,
        orphan_age_secs: delay,
        lease_secs: 600,
        holder: holder.to_string(),
        limit: 10_000,
        dry_run: false,
    }
}

fn now() -> u64 {
    wharf_core::now_unix()
}

/// The digests a set of verdicts dooms, sorted.
fn doomed(verdicts: &[crate::gc::Verdict]) -> Vec<Digest> {
    let mut out: Vec<Digest> = verdicts
        .iter()
        .filter_map(|v| match v {
            crate::gc::Verdict::Doomed { digest, .. } => Some(digest.clone()),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

/// The links a set of verdicts removes, sorted.
fn unlinked(verdicts: &[crate::gc::Verdict]) -> Vec<(String, Digest)> {
    let mut out: Vec<(String, Digest)> = verdicts
        .iter()
        .filter_map(|v| match v {
            crate::gc::Verdict::Unlinked { repo, digest, .. } => {
                Some((repo.to_string(), digest.clone()))
            }
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn sorted(mut v: Vec<Digest>) -> Vec<Digest> {
    v.sort();
    v
}

/// Releases every tombstone `verdicts` took for `holder`.
async fn release_all<S: MetaStore>(store: &S, verdicts: &[crate::gc::Verdict], holder: &str) {
    for d in doomed(verdicts) {
        assert!(store.gc_release(&d, holder).await.unwrap(), "release {d}");
    }
}

pub async fn put_manifest_refuses_what_is_missing_and_writes_nothing<S: MetaStore>(store: Arc<S>) {
    let r = repo("acme/app");
    let layer = digest("layer");
    let record = ManifestRecord {
        references: vec![layer.clone()],
        ..manifest("m")
    };
    match store.put_manifest(&r, &record, Some(&tag("v1"))).await {
        Err(MetaError::Missing(d)) => assert_eq!(d, layer),
        other => panic!("expected Missing, got {other:?}"),
    }
    assert_eq!(store.get_manifest(&r, &record.digest).await.unwrap(), None);
    assert_eq!(store.resolve_tag(&r, &tag("v1")).await.unwrap(), None);
    // Linked elsewhere is not held here.
    store
        .link_blob(&repo("acme/other"), &layer, 5)
        .await
        .unwrap();
    assert!(matches!(
        store.put_manifest(&r, &record, None).await,
        Err(MetaError::Missing(_))
    ));
    // An index's child must be a manifest of the repository.
    store.link_blob(&r, &layer, 5).await.unwrap();
    store
        .put_manifest(&r, &record, Some(&tag("v1")))
        .await
        .unwrap();
    let index = ManifestRecord {
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        references: vec![record.digest.clone(), digest("absent-child")],
        ..manifest("index")
    };
    match store.put_manifest(&r, &index, None).await {
        Err(MetaError::Missing(d)) => assert_eq!(d, digest("absent-child")),
        other => panic!("expected Missing, got {other:?}"),
    }
    let index = ManifestRecord {
        references: vec![record.digest.clone()],
        ..index
    };
    store.put_manifest(&r, &index, None).await.unwrap();
}

pub async fn mount_links_only_what_the_source_holds<S: MetaStore>(store: Arc<S>) {
    let (from, to) = (repo("acme/from"), repo("acme/to"));
    let d = digest("shared");
    assert_eq!(store.mount_blob(&from, &to, &d).await.unwrap(), None);
    assert_eq!(store.blob_size(&to, &d).await.unwrap(), None);
    store.link_blob(&from, &d, 77).await.unwrap();
    assert_eq!(store.mount_blob(&from, &to, &d).await.unwrap(), Some(77));
    assert_eq!(store.blob_size(&to, &d).await.unwrap(), Some(77));
    assert!(store.repo_exists(&to).await.unwrap());
}

pub async fn gc_collects_exactly_what_nothing_references<S: MetaStore>(store: Arc<S>) {
    let (l1, l2, stray) = (digest("l1"), digest("l2"), digest("stray"));
    let kept = image(&*store, "acme/app", "kept", &[&l1], Some("v1")).await;
    let gone = image(&*store, "acme/app", "gone", &[&l1, &l2], Some("v2")).await;
    store.link_blob(&repo("acme/app"), &stray, 3).await.unwrap();
    let t = now();

    // Nothing referenced is collected; the stray link and its bytes are.
    let verdicts = store.gc_review(&policy(t, 0, "a")).await.unwrap();
    assert_eq!(
        unlinked(&verdicts),
        vec![("acme/app".to_string(), stray.clone())]
    );
    assert_eq!(doomed(&verdicts), vec![stray.clone()]);
    release_all(&*store, &verdicts, "a").await;

    // Deleting one image frees only what it alone referenced.
    assert!(store
        .delete_manifest(&repo("acme/app"), &gone.digest)
        .await
        .unwrap());
    let t = now();
    let verdicts = store.gc_review(&policy(t, 0, "a")).await.unwrap();
    let gone_config = digest("gone-config");
    let mut expect_unlinked = vec![
        ("acme/app".to_string(), l2.clone()),
        ("acme/app".to_string(), gone_config.clone()),
    ];
    expect_unlinked.sort();
    assert_eq!(unlinked(&verdicts), expect_unlinked);
    assert_eq!(
        doomed(&verdicts),
        sorted(vec![l2.clone(), gone_config, gone.digest.clone()])
    );
    release_all(&*store, &verdicts, "a").await;
    // What the kept image needs is all still there.
    assert_eq!(
        store.blob_size(&repo("acme/app"), &l1).await.unwrap(),
        Some(1000)
    );
    assert!(store
        .get_manifest(&repo("acme/app"), &kept.digest)
        .await
        .unwrap()
        .is_some());
    let known = store.gc_known(&policy(t, 0, "a")).await.unwrap();
    for d in &kept.references {
        assert!(known.held.contains(d), "{d} held");
    }
    assert!(known.queued.is_empty(), "{:?}", known.queued);
    // Nothing is left to review.
    assert!(store
        .gc_review(&policy(t, 0, "a"))
        .await
        .unwrap()
        .is_empty());
}

pub async fn gc_reviews_wait_for_the_delay_and_a_touch_postpones_them<S: MetaStore>(store: Arc<S>) {
    let r = repo("acme/app");
    let d = digest("layer");
    let t = now();
    store.link_blob(&r, &d, 10).await.unwrap();
    let status = store.gc_status(&policy(t, 100, "a")).await.unwrap();
    assert_eq!((status.queued, status.due), (1, 0));
    assert!(store
        .gc_review(&policy(t, 100, "a"))
        .await
        .unwrap()
        .is_empty());
    // A HEAD moves the review on: due 100 s after it, not after the link.
    store.gc_touch(&r, &d, t + 50).await.unwrap();
    assert!(store
        .gc_review(&policy(t + 120, 100, "a"))
        .await
        .unwrap()
        .is_empty());
    let status = store.gc_status(&policy(t + 160, 100, "a")).await.unwrap();
    assert_eq!(status.due, 1);
    assert_eq!(status.oldest_due_unix, Some(t + 150));
    let verdicts = store.gc_review(&policy(t + 160, 100, "a")).await.unwrap();
    assert_eq!(
        unlinked(&verdicts),
        vec![("acme/app".to_string(), d.clone())]
    );
    assert_eq!(doomed(&verdicts), vec![d.clone()]);
    // A touch of what is not queued queues nothing.
    store.gc_touch(&r, &digest("never"), t).await.unwrap();
    let status = store.gc_status(&policy(t + 1000, 100, "a")).await.unwrap();
    assert_eq!((status.queued, status.tombstones), (0, 1));
}

pub async fn gc_tombstone_refuses_links_manifests_and_holds<S: MetaStore>(store: Arc<S>) {
    let r = repo("acme/app");
    let d = digest("victim");
    store.link_blob(&r, &d, 10).await.unwrap();
    assert!(store.unlink_blob(&r, &d).await.unwrap());
    let verdicts = store.gc_review(&policy(now(), 0, "a")).await.unwrap();
    assert_eq!(doomed(&verdicts), vec![d.clone()]);

    let collecting = |what: &str, e: Result<(), MetaError>| match e {
        Err(MetaError::Collecting(x)) => assert_eq!(x, d, "{what}"),
        other => panic!("{what}: expected Collecting, got {other:?}"),
    };
    collecting("link", store.link_blob(&r, &d, 10).await);
    collecting("hold", store.gc_hold(&d, "uploader", now() + 60).await);
    let as_manifest = ManifestRecord {
        digest: d.clone(),
        ..manifest("victim")
    };
    collecting("manifest", store.put_manifest(&r, &as_manifest, None).await);
    assert_eq!(store.blob_size(&r, &d).await.unwrap(), None);
    // Another collector cannot release it; its own can, and then the
    // content can be stored again.
    assert!(!store.gc_release(&d, "b").await.unwrap());
    assert!(store.gc_release(&d, "a").await.unwrap());
    store.link_blob(&r, &d, 10).await.unwrap();
    store.gc_hold(&d, "uploader", now() + 60).await.unwrap();
}

pub async fn gc_keeps_held_and_shared_content<S: MetaStore>(store: Arc<S>) {
    let (a, b) = (repo("acme/a"), repo("other/b"));
    let shared = digest("shared");
    let held = digest("held");
    store.link_blob(&a, &shared, 10).await.unwrap();
    // Another tenant's image uses the same layer.
    image(&*store, "other/b", "b", &[&shared], None).await;
    assert!(store.unlink_blob(&a, &shared).await.unwrap());
    // Bytes being written: held, so a review keeps them.
    store.link_blob(&a, &held, 10).await.unwrap();
    assert!(store.unlink_blob(&a, &held).await.unwrap());
    let t = now();
    store.gc_hold(&held, "upload-1", t + 100).await.unwrap();
    let verdicts = store.gc_review(&policy(t, 0, "a")).await.unwrap();
    assert!(doomed(&verdicts).is_empty(), "{verdicts:?}");
    assert_eq!(store.blob_size(&b, &shared).await.unwrap(), Some(1000));
    let status = store.gc_status(&policy(t, 0, "a")).await.unwrap();
    assert_eq!(status.holds, 1);
    // Once the hold has ended, nothing keeps it.
    let verdicts = store.gc_review(&policy(t + 101, 0, "a")).await.unwrap();
    assert_eq!(doomed(&verdicts), vec![held]);
}

pub async fn gc_tombstones_past_their_lease_are_claimed_again<S: MetaStore>(store: Arc<S>) {
    let r = repo("acme/app");
    let d = digest("orphaned-tombstone");
    store.link_blob(&r, &d, 10).await.unwrap();
    assert!(store.unlink_blob(&r, &d).await.unwrap());
    let t = now();
    let mut first = policy(t, 0, "dead");
    first.lease_secs = 5;
    assert_eq!(
        doomed(&store.gc_review(&first).await.unwrap()),
        vec![d.clone()]
    );
    // Within the lease nobody else takes it.
    assert!(store
        .gc_review(&policy(t + 2, 0, "alive"))
        .await
        .unwrap()
        .is_empty());
    let verdicts = store.gc_review(&policy(t + 10, 0, "alive")).await.unwrap();
    assert!(
        matches!(
            verdicts.as_slice(),
            [crate::gc::Verdict::Doomed {
                reclaimed: true,
                ..
            }]
        ),
        "{verdicts:?}"
    );
    assert!(!store.gc_release(&d, "dead").await.unwrap());
    assert!(store.gc_release(&d, "alive").await.unwrap());
}

pub async fn gc_orphans_are_queued_only_when_unknown_and_wait_their_age<S: MetaStore>(
    store: Arc<S>,
) {
    let r = repo("acme/app");
    let known = digest("known");
    let unknown = digest("unknown");
    store.link_blob(&r, &known, 10).await.unwrap();
    let t = now();
    let queued = store
        .gc_enqueue_orphans(&[known.clone(), unknown.clone()], t)
        .await
        .unwrap();
    assert_eq!(queued, 1);
    // Queued once only.
    assert_eq!(
        store
            .gc_enqueue_orphans(std::slice::from_ref(&unknown), t)
            .await
            .unwrap(),
        0
    );
    let mut young = policy(t + 50, 1_000_000, "a");
    young.orphan_age_secs = 100;
    assert!(store.gc_review(&young).await.unwrap().is_empty());
    let mut old = policy(t + 150, 1_000_000, "a");
    old.orphan_age_secs = 100;
    assert_eq!(doomed(&store.gc_review(&old).await.unwrap()), vec![unknown]);
}

pub async fn gc_dry_run_decides_exactly_what_a_pass_does_and_changes_nothing<S: MetaStore>(
    store: Arc<S>,
) {
    let l = digest("l");
    let m = image(&*store, "acme/app", "m", &[&l], None).await;
    assert!(store
        .delete_manifest(&repo("acme/app"), &m.digest)
        .await
        .unwrap());
    let t = now();
    let before = store.gc_status(&policy(t, 0, "a")).await.unwrap();
    let mut dry = policy(t, 0, "a");
    dry.dry_run = true;
    let planned = store.gc_review(&dry).await.unwrap();
    assert_eq!(store.gc_status(&policy(t, 0, "a")).await.unwrap(), before);
    assert_eq!(
        store.blob_size(&repo("acme/app"), &l).await.unwrap(),
        Some(1000)
    );
    let done = store.gc_review(&policy(t, 0, "a")).await.unwrap();
    assert_eq!(doomed(&planned), doomed(&done));
    assert_eq!(unlinked(&planned), unlinked(&done));
    assert_eq!(doomed(&done).len(), 3, "{done:?}");
}

pub async fn gc_purge_queues_every_digest_it_removed<S: MetaStore>(store: Arc<S>) {
    let l = digest("l");
    let m = image(&*store, "acme/app", "m", &[&l], Some("v1")).await;
    image(&*store, "other/app", "n", &[&l], Some("v1")).await;
    store.purge_namespace("acme").await.unwrap();
    let verdicts = store.gc_review(&policy(now(), 0, "a")).await.unwrap();
    // The layer is still held by the other tenant.
    assert_eq!(
        doomed(&verdicts),
        sorted(vec![m.digest.clone(), digest("m-config")])
    );
}

pub async fn namespace_bytes_follow_links_manifests_and_collection<S: MetaStore>(store: Arc<S>) {
    let d = digest("d");
    store.link_blob(&repo("acme/a"), &d, 100).await.unwrap();
    store.link_blob(&repo("acme/b"), &d, 100).await.unwrap();
    let usage = store.namespace_usage("acme", Some(&d)).await.unwrap();
    assert_eq!(
        (usage.bytes, usage.repositories, usage.holds_digest),
        (100, 2, true)
    );
    let m = ManifestRecord {
        references: vec![d.clone()],
        ..manifest("m")
    };
    store
        .put_manifest(&repo("acme/a"), &m, Some(&tag("v1")))
        .await
        .unwrap();
    let with_m = 100 + m.size;
    assert_eq!(
        store.namespace_usage("acme", None).await.unwrap().bytes,
        with_m
    );
    assert!(store.unlink_blob(&repo("acme/b"), &d).await.unwrap());
    let usage = store.namespace_usage("acme", None).await.unwrap();
    assert_eq!((usage.bytes, usage.repositories), (with_m, 1));
    assert!(store
        .delete_manifest(&repo("acme/a"), &m.digest)
        .await
        .unwrap());
    assert_eq!(
        store.namespace_usage("acme", None).await.unwrap().bytes,
        100
    );
    // Collection removes the last link, and the bytes leave the count.
    let verdicts = store.gc_review(&policy(now(), 0, "a")).await.unwrap();
    release_all(&*store, &verdicts, "a").await;
    let usage = store.namespace_usage("acme", Some(&d)).await.unwrap();
    assert_eq!(
        (usage.bytes, usage.repositories, usage.holds_digest),
        (0, 0, false)
    );
    assert_eq!(
        store.largest_namespaces(10).await.unwrap(),
        Vec::<(String, u64)>::new()
    );
    store.link_blob(&repo("big/x"), &d, 100).await.unwrap();
    store
        .link_blob(&repo("small/x"), &digest("s"), 1)
        .await
        .unwrap();
    assert_eq!(
        store.largest_namespaces(10).await.unwrap(),
        vec![("big".to_string(), 100), ("small".to_string(), 1)]
    );
}

pub async fn gc_concurrent_collectors_doom_each_digest_once<S: MetaStore>(store: Arc<S>) {
    let r = repo("acme/app");
    let mut all = Vec::new();
    for i in 0..60 {
        let d = digest(&format!("garbage-{i}"));
        store.link_blob(&r, &d, 1).await.unwrap();
        all.push(d);
    }
    let t = now();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let mut p = policy(t, 0, &format!("w{w}"));
                p.limit = 5;
                let v = store.gc_review(&p).await.unwrap();
                if v.is_empty() {
                    break;
                }
                mine.extend(doomed(&v));
            }
            mine
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.extend(t.await.unwrap());
    }
    assert_eq!(sorted(seen), sorted(all));
}

// ---- retention ----

/// The snapshot entry of repository `name`, if it is listed.
async fn repo_snapshot<S: MetaStore>(store: &S, name: &str) -> Option<crate::RepositorySnapshot> {
    let namespace = name.split('/').next().unwrap();
    store
        .retention_snapshot(namespace)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.name.as_str() == name)
}

fn tag_time(r: &crate::RepositorySnapshot, name: &str) -> Option<u64> {
    r.tags
        .iter()
        .find(|t| t.tag.as_str() == name)
        .map(|t| t.pushed_unix)
}

fn manifest_times(r: &crate::RepositorySnapshot, d: &Digest) -> Option<crate::ManifestTimes> {
    r.manifests.iter().find(|m| m.digest == *d).cloned()
}

/// A tag's push time is set when it is created or moved (not when pushed
/// again at the same manifest); a manifest's when it is first stored.
pub async fn push_times_follow_tags_and_manifests<S: MetaStore>(store: Arc<S>) {
    let r = repo("acme/app");
    let (one, two) = (manifest("one"), manifest("two"));
    let before = wharf_core::now_unix();
    store
        .put_manifest(&r, &one, Some(&tag("v1")))
        .await
        .unwrap();
    let after = wharf_core::now_unix();
    let snap = repo_snapshot(&*store, "acme/app").await.unwrap();
    let first = tag_time(&snap, "v1").unwrap();
    assert!((before..=after).contains(&first), "tag time {first}");
    let m = manifest_times(&snap, &one.digest).unwrap();
    assert!((before..=after).contains(&m.pushed_unix));
    assert_eq!(m.last_pulled_unix, None, "never pulled");

    // Times are whole seconds: let one pass.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    store
        .put_manifest(&r, &one, Some(&tag("v1")))
        .await
        .unwrap();
    store
        .put_manifest(&r, &one, Some(&tag("v2")))
        .await
        .unwrap();
    let snap = repo_snapshot(&*store, "acme/app").await.unwrap();
    assert_eq!(tag_time(&snap, "v1"), Some(first), "same target: unchanged");
    let v2 = tag_time(&snap, "v2").unwrap();
    assert!(v2 > first, "a new tag is pushed now");
    assert_eq!(
        manifest_times(&snap, &one.digest).unwrap().pushed_unix,
        m.pushed_unix,
        "stored again: first push kept"
    );

    store
        .put_manifest(&r, &two, Some(&tag("v1")))
        .await
        .unwrap();
    let snap = repo_snapshot(&*store, "acme/app").await.unwrap();
    assert!(
        tag_time(&snap, "v1").unwrap() > first,
        "a moved tag is pushed now"
    );
    assert_eq!(snap.tags.len(), 2);

    // Deleting takes the times along; a manifest pushed again starts over.
    assert!(store.delete_tag(&r, &tag("v2")).await.unwrap());
    assert!(store.delete_manifest(&r, &two.digest).await.unwrap());
    let snap = repo_snapshot(&*store, "acme/app").await.unwrap();
    assert!(snap.tags.is_empty(), "{:?}", snap.tags);
    assert!(manifest_times(&snap, &two.digest).is_none());
    store.put_manifest(&r, &two, None).await.unwrap();
    let snap = repo_snapshot(&*store, "acme/app").await.unwrap();
    assert!(manifest_times(&snap, &two.digest).unwrap().pushed_unix > m.pushed_unix);
}

/// A pull is written only when none was recorded within the interval, and
/// only for a manifest the repository holds.
pub async fn record_pull_writes_at_most_once_per_interval<S: MetaStore>(store: Arc<S>) {
    use crate::retention::PULL_RECORD_SECS;
    let (r, other) = (repo("acme/app"), repo("acme/other"));
    let m = manifest("pulled");
    store.put_manifest(&r, &m, Some(&tag("v1"))).await.unwrap();
    let t = wharf_core::now_unix();
    assert!(store.record_pull(&r, &m.digest, t).await.unwrap(), "first");
    for later in [t, t + 1, t + PULL_RECORD_SECS - 1] {
        assert!(
            !store.record_pull(&r, &m.digest, later).await.unwrap(),
            "within the interval: {}",
            later - t
        );
    }
    // A pull recorded in the future (another node's clock) is not lowered.
    assert!(!store.record_pull(&r, &m.digest, t - 10).await.unwrap());
    let pulled = |snap: crate::RepositorySnapshot| {
        manifest_times(&snap, &m.digest).unwrap().last_pulled_unix
    };
    assert_eq!(
        pulled(repo_snapshot(&*store, "acme/app").await.unwrap()),
        Some(t)
    );
    let next = t + PULL_RECORD_SECS;
    assert!(store.record_pull(&r, &m.digest, next).await.unwrap());
    assert_eq!(
        pulled(repo_snapshot(&*store, "acme/app").await.unwrap()),
        Some(next)
    );

    // Not held here, or not at all: nothing written.
    assert!(!store
        .record_pull(&other, &m.digest, next + PULL_RECORD_SECS)
        .await
        .unwrap());
    assert!(!store
        .record_pull(&r, &digest("absent"), next)
        .await
        .unwrap());
    assert!(repo_snapshot(&*store, "acme/other").await.is_none());
}

/// A batch of pulls writes what the same pulls one by one would: each
/// manifest the repository holds, once per interval, the latest pull of a
/// manifest named twice; nothing for one it does not hold.
pub async fn record_pulls_writes_a_batch_as_single_pulls_would<S: MetaStore>(store: Arc<S>) {
    use crate::retention::PULL_RECORD_SECS;
    use crate::Pull;
    let (r, other) = (repo("acme/app"), repo("acme/other"));
    let (a, b, c) = (manifest("a"), manifest("b"), manifest("c"));
    for (m, t) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        store.put_manifest(&r, m, Some(&tag(t))).await.unwrap();
    }
    let t = wharf_core::now_unix();
    let pull = |repo: &RepoName, m: &ManifestRecord, at: u64| Pull {
        repo: repo.clone(),
        digest: m.digest.clone(),
        at_unix: at,
    };
    // c was pulled moments ago, through another node.
    assert!(store.record_pull(&r, &c.digest, t).await.unwrap());
    let batch = [
        pull(&r, &a, t),
        pull(&r, &b, t),
        pull(&r, &b, t + 5),
        pull(&r, &c, t + 1),
        pull(&other, &a, t),
        Pull {
            repo: r.clone(),
            digest: digest("absent"),
            at_unix: t,
        },
    ];
    let written = store.record_pulls(&batch).await.unwrap();
    assert_eq!(written, 2, "a and b, once each");
    let snap = repo_snapshot(&*store, "acme/app").await.unwrap();
    let pulled = |m: &ManifestRecord| manifest_times(&snap, &m.digest).unwrap().last_pulled_unix;
    assert_eq!(pulled(&a), Some(t));
    assert!(
        pulled(&b) == Some(t) || pulled(&b) == Some(t + 5),
        "{:?}",
        pulled(&b)
    );
    assert_eq!(pulled(&c), Some(t), "within the interval: left");
    assert!(repo_snapshot(&*store, "acme/other").await.is_none());
    // The same batch again writes nothing; an interval on, all three.
    assert_eq!(store.record_pulls(&batch).await.unwrap(), 0);
    let later: Vec<Pull> = [&a, &b, &c]
        .into_iter()
        .map(|m| pull(&r, m, t + 5 + PULL_RECORD_SECS))
        .collect();
    assert_eq!(store.record_pulls(&later).await.unwrap(), 3);
    assert_eq!(store.record_pulls(&[]).await.unwrap(), 0);
}

/// A namespace's snapshot: its repositories with a manifest (by name), tags
/// by name, manifests by digest, children (manifest references only) and
/// subjects; nothing of another namespace.
pub async fn retention_snapshot_lists_a_namespace_with_children_and_subjects<S: MetaStore>(
    store: Arc<S>,
) {
    let app = repo("acme/app");
    let layer = digest("layer");
    store.link_blob(&app, &layer, 5).await.unwrap();
    let child = ManifestRecord {
        references: vec![layer.clone()],
        ..manifest("child")
    };
    store.put_manifest(&app, &child, None).await.unwrap();
    let index = ManifestRecord {
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        references: vec![child.digest.clone()],
        ..manifest("index")
    };
    store
        .put_manifest(&app, &index, Some(&tag("latest")))
        .await
        .unwrap();
    store
        .put_manifest(&app, &index, Some(&tag("b")))
        .await
        .unwrap();
    let sbom = referrer("sbom", &index.digest);
    store.put_manifest(&app, &sbom, None).await.unwrap();
    store
        .put_manifest(&repo("acme"), &manifest("top"), Some(&tag("x")))
        .await
        .unwrap();
    store
        .link_blob(&repo("acme/blobs-only"), &layer, 5)
        .await
        .unwrap();
    for other in ["acme-other/app", "acmex"] {
        store
            .put_manifest(&repo(other), &manifest("elsewhere"), Some(&tag("x")))
            .await
            .unwrap();
    }

    let snap = store.retention_snapshot("acme").await.unwrap();
    let names: Vec<&str> = snap.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["acme", "acme/app"]);
    let a = &snap[1];
    let tags: Vec<(&str, &Digest)> = a.tags.iter().map(|t| (t.tag.as_str(), &t.digest)).collect();
    assert_eq!(tags, [("b", &index.digest), ("latest", &index.digest)]);
    let mut digests: Vec<&Digest> = vec![&child.digest, &index.digest, &sbom.digest];
    digests.sort();
    let listed: Vec<&Digest> = a.manifests.iter().map(|m| &m.digest).collect();
    assert_eq!(listed, digests, "by digest");
    let get = |d: &Digest| manifest_times(a, d).unwrap();
    assert_eq!(get(&index.digest).children, vec![child.digest.clone()]);
    assert!(get(&child.digest).children.is_empty(), "a blob is no child");
    assert_eq!(get(&sbom.digest).subject, Some(index.digest.clone()));
    assert_eq!(get(&index.digest).subject, None);
    assert_internal(
        store.retention_snapshot("acme/app").await,
        "not a namespace",
    );
    assert!(store.retention_snapshot("nobody").await.unwrap().is_empty());
}

/// The conditional deletes retention applies: a tag only while it points
/// at the planned manifest, a manifest only while no tag points at it.
pub async fn retention_deletes_recheck_the_live_state_in_their_transaction<S: MetaStore>(
    store: Arc<S>,
) {
    let r = repo("acme/app");
    let (one, two) = (manifest("one"), manifest("two"));
    store
        .put_manifest(&r, &one, Some(&tag("v1")))
        .await
        .unwrap();
    store.put_manifest(&r, &two, None).await.unwrap();

    assert!(!store
        .delete_tag_at(&r, &tag("v1"), &two.digest)
        .await
        .unwrap());
    assert_eq!(
        store.resolve_tag(&r, &tag("v1")).await.unwrap(),
        Some(one.digest.clone())
    );
    assert!(!store
        .delete_tag_at(&r, &tag("absent"), &one.digest)
        .await
        .unwrap());

    assert!(
        !store
            .delete_untagged_manifest(&r, &one.digest)
            .await
            .unwrap(),
        "tagged"
    );
    assert!(store.get_manifest(&r, &one.digest).await.unwrap().is_some());
    assert!(store
        .delete_tag_at(&r, &tag("v1"), &one.digest)
        .await
        .unwrap());
    assert_eq!(store.resolve_tag(&r, &tag("v1")).await.unwrap(), None);
    assert!(store
        .delete_untagged_manifest(&r, &one.digest)
        .await
        .unwrap());
    assert!(store.get_manifest(&r, &one.digest).await.unwrap().is_none());
    assert!(
        !store
            .delete_untagged_manifest(&r, &one.digest)
            .await
            .unwrap(),
        "gone"
    );

    // The untagged one goes, and its content is queued for review as with
    // any deleted manifest.
    assert!(store
        .delete_untagged_manifest(&r, &two.digest)
        .await
        .unwrap());
    let snap = store.retention_snapshot("acme").await.unwrap();
    assert!(snap.is_empty(), "{snap:?}");
    let usage = store.namespace_usage("acme", None).await.unwrap();
    assert_eq!(usage.bytes, 0);

    // Still needed: the child of an index, the subject of a referrer. Each
    // goes once what needed it is gone.
    let child = manifest("child");
    store.put_manifest(&r, &child, None).await.unwrap();
    let index = ManifestRecord {
        references: vec![child.digest.clone()],
        ..manifest("index")
    };
    store.put_manifest(&r, &index, None).await.unwrap();
    let sig = referrer("sig", &index.digest);
    store.put_manifest(&r, &sig, None).await.unwrap();
    assert!(
        !store
            .delete_untagged_manifest(&r, &child.digest)
            .await
            .unwrap(),
        "listed"
    );
    assert!(
        !store
            .delete_untagged_manifest(&r, &index.digest)
            .await
            .unwrap(),
        "subject"
    );
    for (d, what) in [
        (&sig.digest, "sig"),
        (&index.digest, "index"),
        (&child.digest, "child"),
    ] {
        assert!(
            store.delete_untagged_manifest(&r, d).await.unwrap(),
            "{what}"
        );
    }
    // An index elsewhere does not hold a manifest of this repository.
    let other = repo("acme/other");
    store.put_manifest(&other, &child, None).await.unwrap();
    store.put_manifest(&r, &child, None).await.unwrap();
    store.put_manifest(&other, &index, None).await.unwrap();
    assert!(store
        .delete_untagged_manifest(&r, &child.digest)
        .await
        .unwrap());
}

/// A manifest retention deletes is collected like one a user deletes: its
/// own content and what it alone referenced; what a kept image shares
/// stays.
pub async fn retention_deletes_queue_what_they_free_for_collection<S: MetaStore>(store: Arc<S>) {
    let (shared, own) = (digest("shared"), digest("own"));
    let kept = image(&*store, "acme/app", "kept", &[&shared], Some("v1")).await;
    let gone = image(&*store, "acme/app", "gone", &[&shared, &own], None).await;
    // Nothing collectable before.
    let verdicts = store.gc_review(&policy(now(), 0, "a")).await.unwrap();
    assert!(doomed(&verdicts).is_empty(), "{verdicts:?}");

    assert!(store
        .delete_untagged_manifest(&repo("acme/app"), &gone.digest)
        .await
        .unwrap());
    let verdicts = store.gc_review(&policy(now(), 0, "a")).await.unwrap();
    assert_eq!(
        doomed(&verdicts),
        sorted(vec![own, digest("gone-config"), gone.digest.clone()])
    );
    release_all(&*store, &verdicts, "a").await;
    assert!(store
        .get_manifest(&repo("acme/app"), &kept.digest)
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        store.blob_size(&repo("acme/app"), &shared).await.unwrap(),
        Some(1000)
    );
}

// ---- moving a tenant: export lists, imports, repository purge, holds ----

/// The lists an export pages through: a namespace's repositories (never
/// another's), and one repository's links, manifests and tags, each in key
/// order, with the times metadata keeps.
pub async fn export_lists_page_through_a_namespace_with_times<S: MetaStore>(store: Arc<S>) {
    let before = now();
    for r in ["acme", "acme/a", "acme/b/c", "acme-x/a", "acmex", "zed/a"] {
        store.link_blob(&repo(r), &digest(r), 7).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut last: Option<String> = None;
    loop {
        let page = store
            .namespace_repos("acme", last.as_deref(), 2)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        for e in &page {
            assert!(e.created_unix >= before && e.created_unix <= now(), "{e:?}");
            seen.push(e.name.to_string());
        }
        last = page.last().map(|e| e.name.to_string());
    }
    assert_eq!(seen, ["acme", "acme/a", "acme/b/c"]);
    assert_internal(
        store.namespace_repos("acme/a", None, 5).await,
        "not a namespace",
    );

    let app = repo("acme/app");
    let (l1, l2) = (digest("l1"), digest("l2"));
    store.link_blob(&app, &l1, 11).await.unwrap();
    store.link_blob(&app, &l2, 22).await.unwrap();
    let mut links = vec![(l1.clone(), 11), (l2.clone(), 22), (digest("x"), 0)];
    links.pop();
    links.sort();
    let first = store.list_blob_links(&app, None, 1).await.unwrap();
    assert_eq!(first, links[..1]);
    let rest = store
        .list_blob_links(&app, Some(&first[0].0.to_string()), 10)
        .await
        .unwrap();
    assert_eq!(rest, links[1..]);

    let m = image(&*store, "acme/app", "m", &[&l1], Some("v1")).await;
    let n = image(&*store, "acme/app", "n", &[&l2], Some("v2")).await;
    store.record_pull(&app, &m.digest, now()).await.unwrap();
    let manifests = store.list_manifests(&app, None, 10).await.unwrap();
    let mut expect: Vec<&Digest> = vec![&m.digest, &n.digest];
    expect.sort();
    let listed: Vec<&Digest> = manifests.iter().map(|e| &e.record.digest).collect();
    assert_eq!(listed, expect, "by digest");
    for e in &manifests {
        assert!(e.pushed_unix >= before, "{e:?}");
        let want = if e.record.digest == m.digest { &m } else { &n };
        assert_eq!(&e.record, want);
        assert_eq!(e.last_pulled_unix.is_some(), e.record.digest == m.digest);
    }
    let after_first = store
        .list_manifests(&app, Some(&expect[0].to_string()), 10)
        .await
        .unwrap();
    assert_eq!(after_first.len(), 1);
    assert_eq!(&after_first[0].record.digest, expect[1]);

    let tags = store.list_tag_entries(&app, None, 10).await.unwrap();
    let got: Vec<(&str, &Digest)> = tags.iter().map(|t| (t.tag.as_str(), &t.digest)).collect();
    assert_eq!(got, [("v1", &m.digest), ("v2", &n.digest)]);
    assert!(tags.iter().all(|t| t.pushed_unix >= before));
    let page = store.list_tag_entries(&app, Some("v1"), 10).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].tag.as_str(), "v2");
}

/// Imports store what they are given, times included, and report whether
/// they created, updated or left each entry; usage and the referrers
/// index follow as for a push.
pub async fn import_keeps_given_times_and_says_what_it_did<S: MetaStore>(store: Arc<S>) {
    let app = repo("acme/app");
    assert_eq!(
        store.import_repo(&app, 1000).await.unwrap(),
        Upsert::Created
    );
    assert_eq!(
        store.import_repo(&app, 1000).await.unwrap(),
        Upsert::Unchanged
    );
    assert_eq!(store.import_repo(&app, 999).await.unwrap(), Upsert::Updated);
    let listed = store.namespace_repos("acme", None, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].created_unix, 999);

    let layer = digest("layer");
    store.link_blob(&app, &layer, 50).await.unwrap();
    let base = ManifestEntry {
        record: ManifestRecord {
            references: vec![layer.clone()],
            ..manifest("base")
        },
        pushed_unix: 1_000,
        last_pulled_unix: None,
    };
    assert_eq!(
        store.import_manifest(&app, &base).await.unwrap(),
        Upsert::Created
    );
    assert_eq!(
        store.import_manifest(&app, &base).await.unwrap(),
        Upsert::Unchanged
    );
    let pulled = ManifestEntry {
        last_pulled_unix: Some(2_000),
        ..base.clone()
    };
    assert_eq!(
        store.import_manifest(&app, &pulled).await.unwrap(),
        Upsert::Updated
    );
    let sig = ManifestEntry {
        record: referrer("sig", &base.record.digest),
        pushed_unix: 1_500,
        last_pulled_unix: Some(1_600),
    };
    assert_eq!(
        store.import_manifest(&app, &sig).await.unwrap(),
        Upsert::Created
    );
    let listed = store.list_manifests(&app, None, 10).await.unwrap();
    let mut want = vec![pulled.clone(), sig.clone()];
    want.sort_by(|a, b| a.record.digest.cmp(&b.record.digest));
    assert_eq!(listed, want, "records and times as given");
    assert_eq!(
        store.referrers(&app, &base.record.digest).await.unwrap(),
        vec![sig.record.clone()]
    );

    let v1 = TagTimes {
        tag: tag("v1"),
        digest: base.record.digest.clone(),
        pushed_unix: 1_100,
    };
    assert_eq!(store.import_tag(&app, &v1).await.unwrap(), Upsert::Created);
    assert_eq!(
        store.import_tag(&app, &v1).await.unwrap(),
        Upsert::Unchanged
    );
    let moved = TagTimes {
        digest: sig.record.digest.clone(),
        pushed_unix: 1_700,
        ..v1.clone()
    };
    assert_eq!(
        store.import_tag(&app, &moved).await.unwrap(),
        Upsert::Updated
    );
    assert_eq!(
        store.list_tag_entries(&app, None, 10).await.unwrap(),
        vec![moved.clone()]
    );

    let used = store.namespace_usage("acme", None).await.unwrap();
    assert_eq!(
        used.bytes,
        50 + base.record.size + sig.record.size,
        "usage counts imported content"
    );
    assert_eq!(used.repositories, 1);
    // What an imported manifest references is protected like a pushed one's.
    let verdicts = store.gc_review(&policy(now(), 0, "a")).await.unwrap();
    assert!(unlinked(&verdicts).is_empty(), "{verdicts:?}");
    assert!(doomed(&verdicts).is_empty(), "{verdicts:?}");
}

/// An import refuses a manifest whose references the repository does not
/// hold, and a tag on a manifest it does not hold, writing nothing.
pub async fn import_refuses_what_the_repository_does_not_hold<S: MetaStore>(store: Arc<S>) {
    let app = repo("acme/app");
    let layer = digest("layer");
    let entry = ManifestEntry {
        record: ManifestRecord {
            references: vec![layer.clone()],
            ..manifest("m")
        },
        pushed_unix: 5,
        last_pulled_unix: None,
    };
    match store.import_manifest(&app, &entry).await {
        Err(MetaError::Missing(d)) => assert_eq!(d, layer),
        other => panic!("expected Missing, got {other:?}"),
    }
    assert!(store
        .list_manifests(&app, None, 10)
        .await
        .unwrap()
        .is_empty());
    let t = TagTimes {
        tag: tag("v1"),
        digest: entry.record.digest.clone(),
        pushed_unix: 5,
    };
    match store.import_tag(&app, &t).await {
        Err(MetaError::Missing(d)) => assert_eq!(d, entry.record.digest),
        other => panic!("expected Missing, got {other:?}"),
    }
    assert!(store
        .list_tag_entries(&app, None, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(!store.repo_exists(&app).await.unwrap());
}

/// Purging one repository removes it alone (not `repo/…`, not a sibling),
/// usage follows at once, and what it held goes to garbage collection's
/// review queue.
pub async fn purge_repository_removes_one_repository_and_queues_its_content<S: MetaStore>(
    store: Arc<S>,
) {
    let shared = digest("shared");
    let m = image(&*store, "acme/app", "m", &[&shared], Some("v1")).await;
    let sig = referrer("sig", &m.digest);
    store
        .put_manifest(&repo("acme/app"), &sig, None)
        .await
        .unwrap();
    let nested = image(&*store, "acme/app/sub", "n", &[&shared], Some("v1")).await;
    let sibling = image(&*store, "acme/app-x", "s", &[], Some("v1")).await;
    let before = store.namespace_usage("acme", None).await.unwrap();

    let counts = store.purge_repository(&repo("acme/app")).await.unwrap();
    assert_eq!(
        counts,
        PurgeCounts {
            blobs: 2,
            manifests: 2,
            tags: 1,
            repositories: 1,
            uploads: 0,
        }
    );
    assert!(!store.repo_exists(&repo("acme/app")).await.unwrap());
    for (r, rec) in [("acme/app/sub", &nested), ("acme/app-x", &sibling)] {
        assert!(store
            .get_manifest(&repo(r), &rec.digest)
            .await
            .unwrap()
            .is_some());
        assert!(store
            .resolve_tag(&repo(r), &tag("v1"))
            .await
            .unwrap()
            .is_some());
    }
    let after = store.namespace_usage("acme", None).await.unwrap();
    assert_eq!(after.repositories, before.repositories - 1);
    assert_eq!(
        after.bytes,
        before.bytes - m.size - sig.size - 10,
        "the shared layer still counts once"
    );
    let verdicts = store.gc_review(&policy(now(), 0, "a")).await.unwrap();
    assert_eq!(
        doomed(&verdicts),
        sorted(vec![
            m.digest.clone(),
            sig.digest.clone(),
            digest("m-config")
        ])
    );
    assert_eq!(
        store.purge_repository(&repo("acme/app")).await.unwrap(),
        PurgeCounts::default(),
        "safe to repeat"
    );
}

/// Ending a holder's holds ends those only, and queues each digest for a
/// content review, so bytes no record took over are collected.
pub async fn gc_unhold_all_ends_one_holders_holds_and_queues_their_content<S: MetaStore>(
    store: Arc<S>,
) {
    let (both, mine, theirs) = (digest("both"), digest("mine"), digest("theirs"));
    let until = now() + 3600;
    for d in [&both, &mine] {
        store.gc_hold(d, "import:x", until).await.unwrap();
    }
    store.gc_hold(&both, "other", until).await.unwrap();
    store.gc_hold(&theirs, "other", until).await.unwrap();
    assert_eq!(
        store.gc_status(&policy(now(), 0, "a")).await.unwrap().holds,
        4
    );

    assert_eq!(store.gc_unhold_all("import:x", now()).await.unwrap(), 2);
    assert_eq!(store.gc_unhold_all("import:x", now()).await.unwrap(), 0);
    assert_eq!(
        store.gc_status(&policy(now(), 0, "a")).await.unwrap().holds,
        2
    );
    let verdicts = store.gc_review(&policy(now(), 0, "a")).await.unwrap();
    assert_eq!(doomed(&verdicts), vec![mine.clone()], "{verdicts:?}");
    // `both` was reviewed too, and kept for the other holder's hold.
    assert!(
        verdicts.iter().any(|v| matches!(
            v,
            crate::gc::Verdict::Kept { digest, .. } if *digest == both
        )),
        "{verdicts:?}"
    );
}
