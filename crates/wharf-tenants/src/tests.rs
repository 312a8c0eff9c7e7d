//! Directory behaviour over an in-memory metadata store that implements only
//! the directory and namespace-usage calls, and can be switched to fail.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use wharf_auth::{parse_grant, Grant};
use wharf_core::{Digest, Quota, QuotaSource, RepoName, Tag, UploadId};
use wharf_meta::{
    DirectoryRecord, DirectorySnapshot, ManifestRecord, MetaError, MetaStore, NamespaceUsage,
    PurgeCounts, RefreshRecord, RefreshScope, UploadRecord, UploadUsage,
};

use crate::model::{DeletedTenant, KIND_DELETED_TENANT};
use crate::*;

/// Seconds since the epoch, far from both ends, for time-dependent checks.
const NOW: u64 = 1_700_000_000;

#[derive(Default)]
struct MemStore {
    state: Mutex<MemState>,
    failing: AtomicBool,
}

#[derive(Default)]
struct MemState {
    version: u64,
    records: BTreeMap<(String, String), String>,
    usage: HashMap<String, NamespaceUsage>,
    uploads: HashMap<String, UploadUsage>,
    /// Namespaces purged, in order.
    purged: Vec<String>,
}

impl MemStore {
    fn up(&self) -> Result<std::sync::MutexGuard<'_, MemState>, MetaError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(MetaError::Unavailable(
                "connection refused by db.internal:5432".into(),
            ));
        }
        Ok(self.state.lock().unwrap())
    }

    fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    fn set_repositories(&self, namespace: &str, repositories: u64, bytes: u64) {
        self.state.lock().unwrap().usage.insert(
            namespace.to_string(),
            NamespaceUsage {
                bytes,
                repositories,
                holds_digest: false,
            },
        );
    }

    fn has(&self, kind: &str, key: &str) -> bool {
        let state = self.state.lock().unwrap();
        state
            .records
            .contains_key(&(kind.to_string(), key.to_string()))
    }

    fn raw(&self, kind: &str, key: &str) -> String {
        let state = self.state.lock().unwrap();
        state.records[&(kind.to_string(), key.to_string())].clone()
    }

    /// Removes a record behind the directory's back (an interrupted
    /// deletion, another tool).
    fn remove(&self, kind: &str, key: &str) {
        let mut state = self.state.lock().unwrap();
        state.records.remove(&(kind.to_string(), key.to_string()));
        state.version += 1;
    }
}

fn unsupported<T>() -> Result<T, MetaError> {
    Err(MetaError::Internal("not in the test double".into()))
}

#[async_trait]
impl MetaStore for MemStore {
    async fn link_blob(&self, _: &RepoName, _: &Digest, _: u64) -> Result<(), MetaError> {
        unsupported()
    }
    async fn blob_size(&self, _: &RepoName, _: &Digest) -> Result<Option<u64>, MetaError> {
        unsupported()
    }
    async fn unlink_blob(&self, _: &RepoName, _: &Digest) -> Result<bool, MetaError> {
        unsupported()
    }
    async fn put_manifest(
        &self,
        _: &RepoName,
        _: &ManifestRecord,
        _: Option<&Tag>,
    ) -> Result<(), MetaError> {
        unsupported()
    }
    async fn get_manifest(
        &self,
        _: &RepoName,
        _: &Digest,
    ) -> Result<Option<ManifestRecord>, MetaError> {
        unsupported()
    }
    async fn delete_manifest(&self, _: &RepoName, _: &Digest) -> Result<bool, MetaError> {
        unsupported()
    }
    async fn get_tagged_manifest(
        &self,
        _: &RepoName,
        _: &Tag,
    ) -> Result<Option<ManifestRecord>, MetaError> {
        unsupported()
    }
    async fn resolve_tag(&self, _: &RepoName, _: &Tag) -> Result<Option<Digest>, MetaError> {
        unsupported()
    }
    async fn delete_tag(&self, _: &RepoName, _: &Tag) -> Result<bool, MetaError> {
        unsupported()
    }
    async fn list_tags(
        &self,
        _: &RepoName,
        _: Option<&str>,
        _: usize,
    ) -> Result<Vec<String>, MetaError> {
        unsupported()
    }
    async fn referrers(&self, _: &RepoName, _: &Digest) -> Result<Vec<ManifestRecord>, MetaError> {
        unsupported()
    }
    async fn repo_exists(&self, _: &RepoName) -> Result<bool, MetaError> {
        unsupported()
    }
    async fn list_repos(&self, _: Option<&str>, _: usize) -> Result<Vec<String>, MetaError> {
        unsupported()
    }
    async fn put_upload(&self, _: &UploadRecord) -> Result<(), MetaError> {
        unsupported()
    }
    async fn get_upload(&self, _: &UploadId) -> Result<Option<UploadRecord>, MetaError> {
        unsupported()
    }
    async fn delete_upload(&self, _: &UploadId) -> Result<(), MetaError> {
        unsupported()
    }
    async fn list_uploads(&self) -> Result<Vec<UploadRecord>, MetaError> {
        unsupported()
    }
    async fn set_upload_bytes(&self, _: &UploadId, _: u64) -> Result<(), MetaError> {
        unsupported()
    }
    async fn upload_usage(
        &self,
        namespace: &str,
        _: Option<&str>,
    ) -> Result<UploadUsage, MetaError> {
        Ok(self
            .up()?
            .uploads
            .get(namespace)
            .cloned()
            .unwrap_or_default())
    }

    async fn namespace_usage(
        &self,
        namespace: &str,
        _: Option<&Digest>,
    ) -> Result<NamespaceUsage, MetaError> {
        Ok(self.up()?.usage.get(namespace).cloned().unwrap_or_default())
    }

    async fn purge_namespace(&self, namespace: &str) -> Result<PurgeCounts, MetaError> {
        let mut state = self.up()?;
        let held = state.usage.remove(namespace).unwrap_or_default();
        state.uploads.remove(namespace);
        state.purged.push(namespace.to_string());
        Ok(PurgeCounts {
            repositories: held.repositories,
            ..PurgeCounts::default()
        })
    }

    async fn directory_put(
        &self,
        kind: &str,
        key: &str,
        value: &str,
        create_only: bool,
    ) -> Result<bool, MetaError> {
        let mut state = self.up()?;
        let k = (kind.to_string(), key.to_string());
        if create_only && state.records.contains_key(&k) {
            return Ok(false);
        }
        state.records.insert(k, value.to_string());
        state.version += 1;
        Ok(true)
    }

    async fn directory_delete(&self, kind: &str, key: &str) -> Result<bool, MetaError> {
        let mut state = self.up()?;
        let removed = state
            .records
            .remove(&(kind.to_string(), key.to_string()))
            .is_some();
        if removed {
            state.version += 1;
        }
        Ok(removed)
    }

    async fn directory_version(&self) -> Result<u64, MetaError> {
        Ok(self.up()?.version)
    }

    async fn directory_snapshot(&self) -> Result<DirectorySnapshot, MetaError> {
        let state = self.up()?;
        Ok(DirectorySnapshot {
            version: state.version,
            records: state
                .records
                .iter()
                .map(|((kind, key), value)| DirectoryRecord {
                    kind: kind.clone(),
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
        })
    }

    async fn refresh_put(&self, _: &RefreshRecord, _: usize, _: u64) -> Result<(), MetaError> {
        unsupported()
    }
    async fn refresh_take(&self, _: &str) -> Result<Option<RefreshRecord>, MetaError> {
        unsupported()
    }
    /// The double keeps no refresh tokens: revoking them finds none.
    async fn refresh_revoke(&self, _: &RefreshScope) -> Result<u64, MetaError> {
        self.up().map(|_| 0)
    }
    async fn refresh_list(&self, _: &str) -> Result<Vec<RefreshRecord>, MetaError> {
        Ok(Vec::new())
    }

    async fn refresh_prune(&self, _: u64) -> Result<u64, MetaError> {
        unsupported()
    }
    async fn mount_blob(
        &self,
        _: &RepoName,
        _: &RepoName,
        _: &Digest,
    ) -> Result<Option<u64>, MetaError> {
        unsupported()
    }
    async fn gc_touch(&self, _: &RepoName, _: &Digest, _: u64) -> Result<(), MetaError> {
        unsupported()
    }
    async fn gc_hold(&self, _: &Digest, _: &str, _: u64) -> Result<(), MetaError> {
        unsupported()
    }
    async fn gc_review(
        &self,
        _: &wharf_meta::gc::ReviewPolicy,
    ) -> Result<Vec<wharf_meta::gc::Verdict>, MetaError> {
        unsupported()
    }
    async fn purge_repository(&self, _: &RepoName) -> Result<PurgeCounts, MetaError> {
        unsupported()
    }
    async fn namespace_repos(
        &self,
        _: &str,
        _: Option<&str>,
        _: usize,
    ) -> Result<Vec<wharf_meta::RepoEntry>, MetaError> {
        unsupported()
    }
    async fn list_blob_links(
        &self,
        _: &RepoName,
        _: Option<&str>,
        _: usize,
    ) -> Result<Vec<(Digest, u64)>, MetaError> {
        unsupported()
    }
    async fn list_manifests(
        &self,
        _: &RepoName,
        _: Option<&str>,
        _: usize,
    ) -> Result<Vec<wharf_meta::ManifestEntry>, MetaError> {
        unsupported()
    }
    async fn list_tag_entries(
        &self,
        _: &RepoName,
        _: Option<&str>,
        _: usize,
    ) -> Result<Vec<wharf_meta::TagTimes>, MetaError> {
        unsupported()
    }
    async fn import_repo(&self, _: &RepoName, _: u64) -> Result<wharf_meta::Upsert, MetaError> {
        unsupported()
    }
    async fn import_manifest(
        &self,
        _: &RepoName,
        _: &wharf_meta::ManifestEntry,
    ) -> Result<wharf_meta::Upsert, MetaError> {
        unsupported()
    }
    async fn import_tag(
        &self,
        _: &RepoName,
        _: &wharf_meta::TagTimes,
    ) -> Result<wharf_meta::Upsert, MetaError> {
        unsupported()
    }
    async fn gc_unhold_all(&self, _: &str, _: u64) -> Result<u64, MetaError> {
        unsupported()
    }
    async fn gc_unhold(&self, _: &Digest, _: &str) -> Result<(), MetaError> {
        unsupported()
    }
    async fn gc_release(&self, _: &Digest, _: &str) -> Result<bool, MetaError> {
        unsupported()
    }
    async fn gc_enqueue_orphans(&self, _: &[Digest], _: u64) -> Result<u64, MetaError> {
        unsupported()
    }
    async fn largest_namespaces(&self, _: usize) -> Result<Vec<(String, u64)>, MetaError> {
        unsupported()
    }
    async fn gc_status(
        &self,
        _: &wharf_meta::gc::ReviewPolicy,
    ) -> Result<wharf_meta::gc::GcStatus, MetaError> {
        unsupported()
    }
    async fn gc_known(
        &self,
        _: &wharf_meta::gc::ReviewPolicy,
    ) -> Result<wharf_meta::gc::Known, MetaError> {
        unsupported()
    }
    async fn record_pulls(&self, _: &[wharf_meta::Pull]) -> Result<u64, MetaError> {
        unsupported()
    }
    async fn retention_snapshot(
        &self,
        _: &str,
    ) -> Result<Vec<wharf_meta::RepositorySnapshot>, MetaError> {
        unsupported()
    }
    async fn delete_tag_at(&self, _: &RepoName, _: &Tag, _: &Digest) -> Result<bool, MetaError> {
        unsupported()
    }
    async fn delete_untagged_manifest(&self, _: &RepoName, _: &Digest) -> Result<bool, MetaError> {
        unsupported()
    }
}

async fn setup() -> (Arc<MemStore>, Directory) {
    let store = Arc::new(MemStore::default());
    let dir = Directory::open(store.clone()).await.unwrap();
    (store, dir)
}

fn new_tenant(name: &str) -> NewTenant {
    NewTenant {
        name: name.to_string(),
        ..NewTenant::default()
    }
}

fn grant(s: &str) -> Grant {
    parse_grant(s).unwrap()
}

fn grants_text(grants: &[Grant]) -> Vec<String> {
    grants.iter().map(Grant::to_string).collect()
}

fn invalid(r: Result<impl std::fmt::Debug, DirectoryError>) -> String {
    match r {
        Err(DirectoryError::Invalid(m)) => m,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn conflict(r: Result<impl std::fmt::Debug, DirectoryError>) -> String {
    match r {
        Err(DirectoryError::Conflict(m)) => m,
        other => panic!("expected Conflict, got {other:?}"),
    }
}

fn not_found(r: Result<impl std::fmt::Debug, DirectoryError>) {
    match r {
        Err(DirectoryError::NotFound(_)) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
}

// ---- tenants ----

#[tokio::test]
async fn created_tenant_is_visible_with_its_limits() {
    let (_, dir) = setup().await;
    let t = dir
        .create_tenant(NewTenant {
            name: "acme".into(),
            hostname: Some("reg.acme.io".into()),
            quota: TenantQuota {
                bytes: Some(1 << 30),
                repositories: None,
            },
            concurrency_share: Some(0.25),
            immutable_tags: vec![],
            retention: None,
        })
        .await
        .unwrap();
    assert!(t.created_unix > 0);
    assert_eq!(dir.tenant("acme"), Some(t.clone()));
    assert_eq!(dir.tenants(), vec![t]);
    assert_eq!(dir.concurrency_share("acme"), Some(0.25));
    assert_eq!(dir.concurrency_share("globex"), None);
    assert_eq!(
        dir.quota("acme"),
        Some(Quota {
            max_bytes: Some(1 << 30),
            max_repositories: None
        })
    );
    assert_eq!(dir.tenant_for_host("Reg.Acme.IO:443"), Some("acme".into()));
    assert!(dir.version() > 0);
}

#[tokio::test]
async fn tenant_without_limits_has_no_quota() {
    let (_, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    assert_eq!(dir.quota("acme"), None);
    assert_eq!(dir.quota("unknown"), None);
}

#[tokio::test]
async fn invalid_tenants_are_refused() {
    let (store, dir) = setup().await;
    for name in ["", "Acme", "acme/app", "acme+x", "-acme", &"a".repeat(65)] {
        invalid(dir.create_tenant(new_tenant(name)).await);
    }
    for host in [
        "REG.acme.io",
        "reg acme",
        "reg.acme.io:0",
        "reg.acme.io:99999",
    ] {
        invalid(
            dir.create_tenant(NewTenant {
                hostname: Some(host.into()),
                ..new_tenant("acme")
            })
            .await,
        );
    }
    for share in [0.0, -1.0, 1.5, f64::NAN] {
        invalid(
            dir.create_tenant(NewTenant {
                concurrency_share: Some(share),
                ..new_tenant("acme")
            })
            .await,
        );
    }
    assert_eq!(store.state.lock().unwrap().version, 0, "nothing written");
}

#[tokio::test]
async fn tenant_names_are_taken_once() {
    let (_, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    conflict(dir.create_tenant(new_tenant("acme")).await);
}

#[tokio::test]
async fn hostnames_are_unique_across_tenants_whatever_the_port() {
    let (_, dir) = setup().await;
    let with_host = |name: &str, host: &str| NewTenant {
        hostname: Some(host.into()),
        ..new_tenant(name)
    };
    dir.create_tenant(with_host("acme", "reg.acme.io"))
        .await
        .unwrap();
    conflict(dir.create_tenant(with_host("globex", "reg.acme.io")).await);
    conflict(
        dir.create_tenant(with_host("globex", "reg.acme.io:5000"))
            .await,
    );
    dir.create_tenant(with_host("globex", "reg.globex.io"))
        .await
        .unwrap();

    let take = TenantPatch {
        hostname: Some(Some("reg.acme.io".into())),
        ..TenantPatch::default()
    };
    conflict(dir.update_tenant("globex", &take).await);
    // A tenant may keep or re-port its own hostname.
    let report = TenantPatch {
        hostname: Some(Some("reg.acme.io:5000".into())),
        ..TenantPatch::default()
    };
    dir.update_tenant("acme", &report).await.unwrap();
    assert_eq!(dir.tenant_for_host("reg.acme.io"), None);
    assert_eq!(dir.tenant_for_host("reg.acme.io:5000"), Some("acme".into()));

    // Cleared, it is free again.
    let clear = TenantPatch {
        hostname: Some(None),
        ..TenantPatch::default()
    };
    dir.update_tenant("acme", &clear).await.unwrap();
    dir.update_tenant("globex", &take).await.unwrap();
    assert_eq!(dir.tenant_for_host("reg.acme.io"), Some("globex".into()));
}

#[tokio::test]
async fn update_tenant_patches_and_validates() {
    let (_, dir) = setup().await;
    dir.create_tenant(NewTenant {
        concurrency_share: Some(0.5),
        quota: TenantQuota {
            bytes: Some(100),
            repositories: Some(3),
        },
        ..new_tenant("acme")
    })
    .await
    .unwrap();
    let patch: TenantPatch =
        serde_json::from_str(r#"{"quota":{"repositories":null},"concurrency_share":0.75}"#)
            .unwrap();
    let t = dir.update_tenant("acme", &patch).await.unwrap();
    assert_eq!(t.quota.bytes, Some(100));
    assert_eq!(t.quota.repositories, None);
    assert_eq!(dir.concurrency_share("acme"), Some(0.75));

    let bad: TenantPatch = serde_json::from_str(r#"{"concurrency_share":2}"#).unwrap();
    invalid(dir.update_tenant("acme", &bad).await);
    assert_eq!(dir.concurrency_share("acme"), Some(0.75));
    not_found(dir.update_tenant("globex", &patch).await);
}

fn tag_rule(tag: &str, repository: Option<&str>) -> wharf_core::ImmutableTagRule {
    wharf_core::ImmutableTagRule {
        tag: tag.into(),
        repository: repository.map(str::to_string),
    }
}

#[tokio::test]
async fn immutable_tag_rules_are_checked_then_answered_from_memory() {
    use wharf_core::ImmutableTagSource as _;
    let (store, dir) = setup().await;
    let repo = |s: &str| s.parse::<RepoName>().unwrap();
    let tag = |s: &str| s.parse::<Tag>().unwrap();

    for bad in [
        vec![tag_rule("v[0-9", None)],
        vec![tag_rule("v.*", Some("team/("))],
        vec![tag_rule("", None)],
        vec![tag_rule(&"v".repeat(300), None)],
        vec![tag_rule("v.*", None); 33],
    ] {
        let msg = invalid(
            dir.create_tenant(NewTenant {
                immutable_tags: bad,
                ..new_tenant("acme")
            })
            .await,
        );
        assert!(msg.contains("immutable-tag rule"), "{msg}");
    }
    assert_eq!(store.state.lock().unwrap().version, 0, "nothing written");

    dir.create_tenant(NewTenant {
        immutable_tags: vec![tag_rule(r"v[0-9]+", Some("team/.*"))],
        ..new_tenant("acme")
    })
    .await
    .unwrap();
    dir.create_tenant(new_tenant("globex")).await.unwrap();
    assert_eq!(
        dir.protecting(&repo("acme/team/app"), &tag("v1")),
        Some(tag_rule(r"v[0-9]+", Some("team/.*")))
    );
    assert_eq!(dir.protecting(&repo("acme/app"), &tag("v1")), None);
    assert_eq!(dir.protecting(&repo("globex/team/app"), &tag("v1")), None);
    assert_eq!(dir.protecting(&repo("nobody/team/app"), &tag("v1")), None);
    assert!(dir.guards(&repo("acme/team/app")));
    assert!(!dir.guards(&repo("acme/app")));
    assert!(!dir.guards(&repo("globex/team/app")));

    // A bad change is refused whole and changes nothing.
    let bad: TenantPatch = serde_json::from_str(
        r#"{"concurrency_share":0.5,"immutable_tags":[{"tag":"ok"},{"tag":"(?P<"}]}"#,
    )
    .unwrap();
    let msg = invalid(dir.update_tenant("acme", &bad).await);
    assert!(msg.starts_with("immutable-tag rule 2:"), "{msg}");
    assert_eq!(dir.concurrency_share("acme"), None);
    assert!(dir.guards(&repo("acme/team/app")));

    // The operator replaces the rules, then lifts them.
    let every: TenantPatch =
        serde_json::from_str(r#"{"immutable_tags":[{"tag":"latest"}]}"#).unwrap();
    let t = dir.update_tenant("acme", &every).await.unwrap();
    assert_eq!(t.immutable_tags, vec![tag_rule("latest", None)]);
    assert_eq!(dir.protecting(&repo("acme/team/app"), &tag("v1")), None);
    assert!(dir.protecting(&repo("acme/app"), &tag("latest")).is_some());
    let lift: TenantPatch = serde_json::from_str(r#"{"immutable_tags":null}"#).unwrap();
    let t = dir.update_tenant("acme", &lift).await.unwrap();
    assert!(t.immutable_tags.is_empty());
    assert!(!dir.guards(&repo("acme/app")));
    assert!(!store.raw("tenant", "acme").contains("latest"));
}

#[tokio::test]
async fn a_stored_rule_that_does_not_compile_protects_every_tag() {
    use wharf_core::ImmutableTagSource as _;
    let (store, dir) = setup().await;
    let written = serde_json::json!({"name": "acme", "created_unix": 1,
        "immutable_tags": [{"tag": "v[", "repository": "nowhere"}]});
    store
        .directory_put("tenant", "acme", &written.to_string(), true)
        .await
        .unwrap();
    dir.load().await.unwrap();
    let repo: RepoName = "acme/app".parse().unwrap();
    let rule = dir.protecting(&repo, &"latest".parse().unwrap()).unwrap();
    assert_eq!(rule, tag_rule("v[", Some("nowhere")));
    assert!(
        dir.tenant("acme").is_some(),
        "the tenant itself still loads"
    );
}

#[tokio::test]
async fn delete_tenant_refuses_while_it_holds_repositories_unless_forced() {
    let (store, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    dir.put_user("acme", "alice", Some("correct horse"), &[])
        .await
        .unwrap();
    dir.create_robot("acme", "ci", vec![grant("acme/*:pull")], None)
        .await
        .unwrap();
    store.set_repositories("acme", 2, 1234);

    let msg = conflict(dir.delete_tenant("acme", false).await);
    assert!(msg.contains("2 repositories"), "{msg}");
    assert!(dir.tenant("acme").is_some());

    dir.delete_tenant("acme", true).await.unwrap();
    assert!(dir.tenant("acme").is_none());
    assert!(!store.has("tenant", "acme"));
    assert!(!store.has("user", "alice"), "users removed");
    assert!(!store.has("robot", "acme+ci"), "robots removed");
    // Retired, so tokens already issued to alice are refused.
    assert_eq!(dir.subject_active("alice", NOW), SubjectStatus::Inactive);
    assert_eq!(dir.subject_active("acme+ci", NOW), SubjectStatus::Inactive);
    not_found(dir.delete_tenant("acme", true).await);
    // Forced, the namespace is purged all the same, and the name is
    // tombstoned.
    assert_eq!(store.state.lock().unwrap().purged, vec!["acme"]);
    assert!(store.has(KIND_DELETED_TENANT, "acme"));
}

#[tokio::test]
async fn deleting_an_empty_tenant_purges_and_tombstones_it_too() {
    let (store, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    dir.delete_tenant("acme", false).await.unwrap();
    assert_eq!(store.state.lock().unwrap().purged, vec!["acme"]);
    let tombstone: DeletedTenant =
        serde_json::from_str(&store.raw(KIND_DELETED_TENANT, "acme")).unwrap();
    assert!(tombstone.deleted_unix_ms > NOW * 1000);
}

/// Re-creating a deleted tenant's name purges the namespace again (an
/// interrupted deletion, a push a node let through from its caches), is
/// refused with the reason while the deletion is younger than the settle
/// time, and afterwards succeeds and drops the tombstone.
#[tokio::test]
async fn recreating_a_deleted_name_purges_again_and_waits_out_the_settle_time() {
    let (store, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    dir.delete_tenant("acme", true).await.unwrap();
    // Content the deletion did not catch.
    store.set_repositories("acme", 1, 10);

    let msg = conflict(dir.create_tenant(new_tenant("acme")).await);
    assert!(
        msg.starts_with("tenant acme was deleted 0 s ago; its name can be taken again in 5 s"),
        "{msg}"
    );
    assert!(msg.contains("caches (2 s)"), "{msg}");
    assert!(dir.tenant("acme").is_none());
    assert_eq!(store.state.lock().unwrap().purged, vec!["acme", "acme"]);
    assert_eq!(
        dir.usage("acme").await.unwrap_err(),
        DirectoryError::NotFound("tenant acme".into())
    );
    assert!(
        !store.state.lock().unwrap().usage.contains_key("acme"),
        "purged even though refused"
    );

    // Backdate the deletion past the settle time.
    let old = DeletedTenant {
        deleted_unix_ms: NOW * 1000,
    };
    store
        .directory_put(
            KIND_DELETED_TENANT,
            "acme",
            &serde_json::to_string(&old).unwrap(),
            false,
        )
        .await
        .unwrap();
    store.set_repositories("acme", 1, 10);
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    assert!(dir.tenant("acme").is_some());
    assert!(!store.has(KIND_DELETED_TENANT, "acme"), "tombstone dropped");
    assert_eq!(store.state.lock().unwrap().purged.len(), 3);
    assert_eq!(dir.usage("acme").await.unwrap().repositories, 0);
    // A name never deleted is not purged.
    dir.create_tenant(new_tenant("globex")).await.unwrap();
    assert_eq!(store.state.lock().unwrap().purged.len(), 3);
}

#[tokio::test]
async fn empty_tenant_deletes_without_force() {
    let (store, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    store.set_repositories("acme-other", 5, 5);
    dir.delete_tenant("acme", false).await.unwrap();
    assert!(dir.tenants().is_empty());
}

#[tokio::test]
async fn identities_of_a_half_deleted_tenant_are_inactive_and_never_come_back() {
    let (store, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    dir.put_user("acme", "alice", Some("correct horse"), &[])
        .await
        .unwrap();
    dir.create_robot("acme", "ci", vec![grant("acme/*:pull")], None)
        .await
        .unwrap();

    // A deletion cut short after the tenant record went.
    store.remove("tenant", "acme");
    dir.load().await.unwrap();
    assert_eq!(dir.subject_active("alice", NOW), SubjectStatus::Inactive);
    assert!(dir.credential("alice").is_none());
    assert!(dir.grants_of("acme+ci").is_none());

    // A new tenant of the same name starts empty.
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    assert!(dir.credential("alice").is_none());
    assert!(dir.credential("acme+ci").is_none());
    assert!(dir.users("acme").unwrap().is_empty());
    assert!(dir.robots("acme").unwrap().is_empty());
    assert!(!store.has("user", "alice"));
    assert_eq!(
        dir.subject_active("alice", NOW),
        SubjectStatus::NotInDirectory
    );
}

#[tokio::test]
async fn an_orphaned_user_name_can_be_taken_by_another_tenant() {
    let (store, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    dir.create_tenant(new_tenant("globex")).await.unwrap();
    dir.put_user("acme", "alice", Some("correct horse"), &[])
        .await
        .unwrap();
    store.remove("tenant", "acme");
    assert!(dir
        .put_user("globex", "alice", Some("battery staple"), &[])
        .await
        .unwrap());
    match dir.credential("alice") {
        Some(Credential::User { tenant, .. }) => assert_eq!(tenant, "globex"),
        other => panic!("{other:?}"),
    }
}

// ---- users ----

#[tokio::test]
async fn users_get_tenant_wide_roles_by_default_and_verify_with_bcrypt() {
    let (_, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    let created = dir
        .put_user(
            "acme",
            "alice",
            Some("correct horse"),
            &[
                RoleSpec::tenant_wide(Role::Pull),
                RoleSpec {
                    role: Role::Admin,
                    repositories: Some("acme/team/*".parse().unwrap()),
                },
            ],
        )
        .await
        .unwrap();
    assert!(created);
    assert_eq!(
        grants_text(&dir.grants_of("alice").unwrap()),
        ["acme/*:pull", "acme/team/*:pull,push,delete"]
    );
    let cred = dir.credential("alice").unwrap();
    assert_eq!((cred.subject(), cred.tenant()), ("alice", "acme"));
    match &cred {
        Credential::User { bcrypt_hash, .. } => assert!(bcrypt_hash.starts_with("$2b$10$")),
        other => panic!("{other:?}"),
    }
    assert!(verify_password(&cred, "correct horse", NOW));
    assert!(!verify_password(&cred, "correct horsf", NOW));
    assert_eq!(dir.subject_active("alice", NOW), SubjectStatus::Active);
    assert_eq!(
        dir.subject_active("nobody", NOW),
        SubjectStatus::NotInDirectory
    );
    assert!(dir.credential("nobody").is_none());
    assert!(dir.grants_of("nobody").is_none());
}

#[tokio::test]
async fn updating_a_user_keeps_its_password_unless_given() {
    let (_, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    dir.put_user("acme", "alice", Some("correct horse"), &[])
        .await
        .unwrap();
    let before = dir.credential("alice").unwrap();
    let created = dir
        .put_user("acme", "alice", None, &[RoleSpec::tenant_wide(Role::Push)])
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(dir.credential("alice").unwrap(), before);
    assert_eq!(
        grants_text(&dir.grants_of("alice").unwrap()),
        ["acme/*:pull,push"]
    );
    assert_eq!(dir.users("acme").unwrap()[0].roles.len(), 1);
}

#[tokio::test]
async fn user_input_is_validated() {
    let (store, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    let version = store.state.lock().unwrap().version;
    let pw = Some("correct horse");
    for name in ["", "Alice", "acme+ci", "al:ice", ".alice", &"a".repeat(65)] {
        invalid(dir.put_user("acme", name, pw, &[]).await);
    }
    let msg = invalid(dir.put_user("acme", "alice", None, &[]).await);
    assert!(msg.contains("password"), "{msg}");
    invalid(dir.put_user("acme", "alice", Some("short"), &[]).await);
    invalid(
        dir.put_user("acme", "alice", Some(&"x".repeat(72)), &[])
            .await,
    );
    let too_many = vec![RoleSpec::tenant_wide(Role::Pull); MAX_ROLE_BINDINGS + 1];
    invalid(dir.put_user("acme", "alice", pw, &too_many).await);
    not_found(dir.put_user("globex", "alice", pw, &[]).await);
    assert_eq!(
        store.state.lock().unwrap().version,
        version,
        "nothing written"
    );
}

#[tokio::test]
async fn user_roles_outside_the_tenant_are_refused() {
    let (_, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    for pattern in [
        "globex/*",
        "globex/app",
        "acme-evil/*",
        "acmex/app",
        "acme-evil",
    ] {
        let spec = RoleSpec {
            role: Role::Pull,
            repositories: Some(pattern.parse().unwrap()),
        };
        let msg = invalid(dir.put_user("acme", "alice", None, &[spec]).await);
        assert!(msg.contains("outside tenant acme"), "{msg}");
    }
}

#[tokio::test]
async fn user_names_are_unique_across_tenants() {
    let (_, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    dir.create_tenant(new_tenant("globex")).await.unwrap();
    dir.put_user("acme", "alice", Some("correct horse"), &[])
        .await
        .unwrap();
    conflict(
        dir.put_user("globex", "alice", Some("battery staple"), &[])
            .await,
    );
    // Nor can another tenant change or delete it.
    conflict(dir.put_user("globex", "alice", None, &[]).await);
    not_found(dir.delete_user("globex", "alice").await);
    assert_eq!(dir.credential("alice").unwrap().tenant(), "acme");
}

#[tokio::test]
async fn deleted_user_leaves_the_directory() {
    let (_, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    dir.put_user("acme", "alice", Some("correct horse"), &[])
        .await
        .unwrap();
    dir.delete_user("acme", "alice").await.unwrap();
    assert!(dir.credential("alice").is_none());
    assert!(dir.users("acme").unwrap().is_empty());
    // Retired, so tokens already issued to alice are refused...
    assert_eq!(dir.subject_active("alice", NOW), SubjectStatus::Inactive);
    not_found(dir.delete_user("acme", "alice").await);
    not_found(dir.users("globex"));
    // ...until the name is given to a user again.
    dir.put_user("acme", "alice", Some("battery staple"), &[])
        .await
        .unwrap();
    assert_eq!(dir.subject_active("alice", NOW), SubjectStatus::Active);
    // A name the directory never had may be an htpasswd user's.
    assert_eq!(
        dir.subject_active("bob", NOW),
        SubjectStatus::NotInDirectory
    );
}

// ---- robots ----

#[tokio::test]
async fn robot_gets_a_one_time_secret_that_verifies() {
    let (store, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    let (view, secret) = dir
        .create_robot(
            "acme",
            "ci",
            vec![grant("acme/app:pull,push"), grant("acme/team/*:pull")],
            None,
        )
        .await
        .unwrap();
    assert_eq!(view.name, "acme+ci");
    assert_eq!(view.tenant, "acme");
    assert!(!view.revoked);
    assert_eq!(view.expires_unix, None);
    let text = secret.expose();
    assert!(text.starts_with(ROBOT_SECRET_PREFIX));
    assert_eq!(text.len(), ROBOT_SECRET_PREFIX.len() + 43, "256 bits");
    assert_eq!(format!("{secret:?}"), "RobotSecret(<redacted>)");
    assert!(
        !store.raw("robot", "acme+ci").contains(text),
        "stored hashed"
    );

    let cred = dir.credential("acme+ci").unwrap();
    assert!(verify_password(&cred, text, NOW));
    assert!(!verify_password(&cred, "wharf_robot_guess", NOW));
    assert_eq!(
        grants_text(&dir.grants_of("acme+ci").unwrap()),
        ["acme/app:pull,push", "acme/team/*:pull"]
    );
    assert_eq!(dir.subject_active("acme+ci", NOW), SubjectStatus::Active);
    assert_eq!(dir.robots("acme").unwrap(), vec![view]);

    let (_, other) = dir
        .create_robot("acme", "ci2", vec![grant("acme/*:pull")], None)
        .await
        .unwrap();
    assert_ne!(other.expose(), text);
}

#[tokio::test]
async fn revoked_robot_is_refused_everywhere_but_kept() {
    let (store, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    let (_, secret) = dir
        .create_robot("acme", "ci", vec![grant("acme/*:pull")], None)
        .await
        .unwrap();
    let view = dir.revoke_robot("acme", "ci").await.unwrap();
    assert!(view.revoked);
    assert!(store.has("robot", "acme+ci"), "record kept");
    let cred = dir.credential("acme+ci").unwrap();
    assert!(!verify_password(&cred, secret.expose(), NOW));
    assert!(dir.grants_of("acme+ci").is_none());
    assert_eq!(dir.subject_active("acme+ci", NOW), SubjectStatus::Inactive);
    assert!(dir.robots("acme").unwrap()[0].revoked);

    // Idempotent, and the name cannot be reused while the record stays.
    assert!(dir.revoke_robot("acme", "ci").await.unwrap().revoked);
    conflict(
        dir.create_robot("acme", "ci", vec![grant("acme/*:pull")], None)
            .await,
    );
    not_found(dir.revoke_robot("acme", "nope").await);
    not_found(dir.revoke_robot("globex", "ci").await);
}

#[tokio::test]
async fn robot_expires_at_its_time() {
    let (_, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    let (view, secret) = dir
        .create_robot(
            "acme",
            "ci",
            vec![grant("acme/*:pull")],
            Some(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let expires = view.expires_unix.unwrap();
    assert!(expires >= view.created_unix + 3600);
    let cred = dir.credential("acme+ci").unwrap();
    assert!(verify_password(&cred, secret.expose(), expires - 1));
    assert!(!verify_password(&cred, secret.expose(), expires));
    assert!(dir.grants_of_at("acme+ci", expires - 1).is_some());
    assert!(dir.grants_of_at("acme+ci", expires).is_none());
    assert_eq!(
        dir.subject_active("acme+ci", expires - 1),
        SubjectStatus::Active
    );
    assert_eq!(
        dir.subject_active("acme+ci", expires),
        SubjectStatus::Inactive
    );
    invalid(
        dir.create_robot(
            "acme",
            "ci0",
            vec![grant("acme/*:pull")],
            Some(Duration::from_millis(500)),
        )
        .await,
    );
}

#[tokio::test]
async fn unknown_robot_looking_names_are_inactive() {
    let (_, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    for subject in ["acme+ghost", "globex+ci", "+", "a+b+c"] {
        assert_eq!(dir.subject_active(subject, NOW), SubjectStatus::Inactive);
        assert!(dir.credential(subject).is_none());
    }
    assert_eq!(dir.subject_active("", NOW), SubjectStatus::NotInDirectory);
}

#[tokio::test]
async fn robot_input_is_validated() {
    let (_, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    for short in ["", "CI", "c+i", "c:i", &"c".repeat(65)] {
        invalid(
            dir.create_robot("acme", short, vec![grant("acme/*:pull")], None)
                .await,
        );
    }
    invalid(dir.create_robot("acme", "ci", vec![], None).await);
    for outside in ["globex/*:pull", "acme-evil/*:pull", "acmex:pull"] {
        let msg = invalid(
            dir.create_robot("acme", "ci", vec![grant(outside)], None)
                .await,
        );
        assert!(msg.contains("outside tenant acme"), "{msg}");
    }
    let nothing = Grant::new("acme/*".parse().unwrap(), wharf_auth::Actions::NONE);
    invalid(dir.create_robot("acme", "ci", vec![nothing], None).await);
    let many = vec![grant("acme/*:pull"); MAX_ROBOT_GRANTS + 1];
    invalid(dir.create_robot("acme", "ci", many, None).await);
    not_found(
        dir.create_robot("globex", "ci", vec![grant("globex/*:pull")], None)
            .await,
    );
    assert!(dir.robots("acme").unwrap().is_empty());
}

#[tokio::test]
async fn robot_star_grant_is_stored_as_its_actions() {
    let (_, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    let all = Grant::new("acme/*".parse().unwrap(), wharf_auth::Actions::ALL);
    let (view, _) = dir
        .create_robot("acme", "ci", vec![all], None)
        .await
        .unwrap();
    assert_eq!(grants_text(&view.grants), ["acme/*:pull,push,delete"]);
    dir.load().await.unwrap();
    assert_eq!(
        grants_text(&dir.grants_of("acme+ci").unwrap()),
        ["acme/*:pull,push,delete"]
    );
}

// ---- views ----

#[tokio::test]
async fn views_never_carry_a_hash() {
    let (store, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    dir.put_user("acme", "alice", Some("correct horse"), &[])
        .await
        .unwrap();
    let (robot, secret) = dir
        .create_robot("acme", "ci", vec![grant("acme/*:pull")], None)
        .await
        .unwrap();
    let user_hash = match dir.credential("alice").unwrap() {
        Credential::User { bcrypt_hash, .. } => bcrypt_hash,
        other => panic!("{other:?}"),
    };
    let robot_hash = wharf_auth::hash_secret(secret.expose());
    assert!(store.raw("user", "alice").contains(&user_hash));
    assert!(store.raw("robot", "acme+ci").contains(&robot_hash));

    let shown = [
        serde_json::to_string(&dir.users("acme").unwrap()).unwrap(),
        serde_json::to_string(&dir.robots("acme").unwrap()).unwrap(),
        serde_json::to_string(&robot).unwrap(),
        serde_json::to_string(&dir.tenants()).unwrap(),
        serde_json::to_string(&dir.usage("acme").await.unwrap()).unwrap(),
        format!("{:?}", dir.credential("alice")),
        format!("{:?}", dir.credential("acme+ci")),
        format!("{dir:?}"),
    ];
    for text in shown {
        assert!(!text.contains(&user_hash), "{text}");
        assert!(!text.contains(&robot_hash), "{text}");
        assert!(!text.contains(secret.expose()), "{text}");
        assert!(!text.contains("hash"), "{text}");
    }
}

#[tokio::test]
async fn usage_reports_the_store_and_the_quota() {
    let (store, dir) = setup().await;
    dir.create_tenant(NewTenant {
        quota: TenantQuota {
            bytes: Some(10),
            repositories: Some(2),
        },
        ..new_tenant("acme")
    })
    .await
    .unwrap();
    store.set_repositories("acme", 1, 7);
    store.state.lock().unwrap().uploads.insert(
        "acme".into(),
        UploadUsage {
            sessions: 2,
            bytes: 60,
            owned: 0,
        },
    );
    let u = dir.usage("acme").await.unwrap();
    assert_eq!(
        u,
        Usage {
            tenant: "acme".into(),
            bytes: 7,
            repositories: 1,
            upload_sessions: 2,
            upload_bytes: 60,
            quota: TenantQuota {
                bytes: Some(10),
                repositories: Some(2)
            },
        }
    );
    assert_eq!(
        serde_json::to_value(&u).unwrap(),
        serde_json::json!({"tenant": "acme", "bytes": 7, "repositories": 1,
            "upload_sessions": 2, "upload_bytes": 60,
            "quota": {"bytes": 10, "repositories": 2}})
    );
    not_found(dir.usage("globex").await);
}

// ---- nodes, refresh and outages ----

#[tokio::test]
async fn refresh_picks_up_changes_made_on_another_node() {
    let store = Arc::new(MemStore::default());
    let a = Directory::open(store.clone()).await.unwrap();
    let b = Directory::open(store.clone()).await.unwrap();
    assert!(!b.refresh().await.unwrap(), "nothing changed yet");

    a.create_tenant(new_tenant("acme")).await.unwrap();
    a.create_robot("acme", "ci", vec![grant("acme/*:pull")], None)
        .await
        .unwrap();
    assert!(b.credential("acme+ci").is_none(), "b has not refreshed");
    assert!(b.refresh().await.unwrap());
    assert!(b.credential("acme+ci").is_some());
    assert!(!b.refresh().await.unwrap());
    assert_eq!(a.version(), b.version());

    // A revocation on b reaches a.
    b.revoke_robot("acme", "ci").await.unwrap();
    assert_eq!(a.subject_active("acme+ci", NOW), SubjectStatus::Active);
    a.refresh().await.unwrap();
    assert_eq!(a.subject_active("acme+ci", NOW), SubjectStatus::Inactive);

    // Both nodes' checks see each other's names.
    conflict(b.create_tenant(new_tenant("acme")).await);
}

#[tokio::test(start_paused = true)]
async fn background_refresher_follows_the_store_and_stops_with_the_directory() {
    let store = Arc::new(MemStore::default());
    let a = Directory::open(store.clone()).await.unwrap();
    let b = Directory::open(store.clone()).await.unwrap();
    let refresher = b.spawn_refresher(Duration::from_secs(5));

    a.create_tenant(new_tenant("acme")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(b.tenant("acme").is_some());

    a.create_tenant(new_tenant("globex")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(b.tenants().len(), 2);

    drop(b);
    tokio::time::timeout(Duration::from_secs(30), refresher)
        .await
        .expect("the refresher ends once the directory is gone")
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn snapshot_survives_a_failing_store() {
    let store = Arc::new(MemStore::default());
    let dir = Directory::open(store.clone()).await.unwrap();
    dir.create_tenant(NewTenant {
        hostname: Some("reg.acme.io".into()),
        ..new_tenant("acme")
    })
    .await
    .unwrap();
    let (_, secret) = dir
        .create_robot("acme", "ci", vec![grant("acme/*:pull")], None)
        .await
        .unwrap();
    let refresher = dir.spawn_refresher(Duration::from_secs(1));

    store.fail(true);
    tokio::time::sleep(Duration::from_secs(10)).await;
    match dir.refresh().await {
        Err(DirectoryError::Unavailable(msg)) => {
            assert!(!msg.contains("db.internal"), "store detail leaked: {msg}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        dir.load().await,
        Err(DirectoryError::Unavailable(_))
    ));
    // Everything the request path needs still answers.
    let cred = dir.credential("acme+ci").unwrap();
    assert!(verify_password(&cred, secret.expose(), NOW));
    assert!(dir.grants_of("acme+ci").is_some());
    assert_eq!(dir.tenant_for_host("reg.acme.io"), Some("acme".into()));
    // Mutations fail fast and clearly.
    assert!(matches!(
        dir.create_tenant(new_tenant("globex")).await,
        Err(DirectoryError::Unavailable(_))
    ));
    assert!(matches!(
        dir.usage("acme").await,
        Err(DirectoryError::Unavailable(_))
    ));

    store.fail(false);
    store.remove("robot", "acme+ci");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(dir.credential("acme+ci").is_none(), "refresher recovered");
    refresher.abort();
}

#[tokio::test]
async fn internal_store_errors_become_a_generic_unavailable() {
    let e: DirectoryError = MetaError::Internal("duplicate key in pg_catalog".into()).into();
    match e {
        DirectoryError::Unavailable(msg) => assert!(!msg.contains("pg_catalog")),
        other => panic!("{other:?}"),
    }
}

// ---- identities and credential generations ----

#[tokio::test]
async fn a_name_created_again_is_another_identity() {
    let (_, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    dir.create_tenant(new_tenant("globex")).await.unwrap();
    let roles = [RoleSpec::tenant_wide(Role::Push)];
    dir.put_user("acme", "bob", Some("password-1"), &roles)
        .await
        .unwrap();
    let first = dir.identity_of("bob", NOW).unwrap();
    dir.delete_user("acme", "bob").await.unwrap();
    assert_eq!(dir.identity_of("bob", NOW), None, "a deleted user has none");
    dir.put_user("globex", "bob", Some("password-1"), &roles)
        .await
        .unwrap();
    let second = dir.identity_of("bob", NOW).unwrap();
    assert_ne!(first.id, second.id);
}

#[tokio::test]
async fn the_generation_follows_password_role_and_revocations() {
    let (_, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    let push = [RoleSpec::tenant_wide(Role::Push)];
    dir.put_user("acme", "alice", Some("password-1"), &push)
        .await
        .unwrap();
    let first = dir.identity_of("alice", NOW).unwrap();
    // The same roles again, no password: nothing changes.
    dir.put_user("acme", "alice", None, &push).await.unwrap();
    assert_eq!(dir.identity_of("alice", NOW), Some(first.clone()));
    let mut seen = vec![first];
    let mut changed = |what: &str, now: wharf_auth::Identity| {
        assert_eq!(now.id, seen[0].id, "{what}: same account");
        assert!(
            seen.iter().all(|s| s.generation != now.generation),
            "{what}: a new generation, not one seen before"
        );
        seen.push(now);
    };
    dir.put_user("acme", "alice", Some("password-2"), &push)
        .await
        .unwrap();
    changed("password", dir.identity_of("alice", NOW).unwrap());
    dir.put_user("acme", "alice", None, &[RoleSpec::tenant_wide(Role::Pull)])
        .await
        .unwrap();
    changed("role", dir.identity_of("alice", NOW).unwrap());
    dir.revoke_user_sessions("acme", "alice").await.unwrap();
    changed("user revocation", dir.identity_of("alice", NOW).unwrap());
    dir.revoke_tenant_sessions("acme").await.unwrap();
    changed("tenant revocation", dir.identity_of("alice", NOW).unwrap());
    dir.revoke_all_sessions().await.unwrap();
    changed("global revocation", dir.identity_of("alice", NOW).unwrap());
}

#[tokio::test]
async fn revoked_or_expired_robots_have_no_identity() {
    let (_, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    let (ci, _) = dir
        .create_robot("acme", "ci", vec![grant("acme/*:pull")], None)
        .await
        .unwrap();
    assert!(dir.identity_of(&ci.name, NOW).is_some());
    dir.revoke_robot("acme", "ci").await.unwrap();
    assert_eq!(dir.identity_of(&ci.name, NOW), None);
    let (short, _) = dir
        .create_robot(
            "acme",
            "short",
            vec![grant("acme/*:pull")],
            Some(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    let expiry = short.expires_unix.unwrap();
    assert!(dir.identity_of(&short.name, expiry - 1).is_some());
    assert_eq!(dir.identity_of(&short.name, expiry), None);
}

// ---- retention ----

fn policy(json: &str) -> wharf_retention::Policy {
    serde_json::from_str(json).unwrap()
}

#[tokio::test]
async fn retention_policies_are_checked_when_written_and_compiled_with_the_snapshot() {
    let (_, dir) = setup().await;
    let bad = NewTenant {
        retention: Some(policy(r#"{"rules": [{"keep_last": 1}, {"tag": "v("}]}"#)),
        ..new_tenant("acme")
    };
    let m = invalid(dir.create_tenant(bad).await);
    assert!(m.starts_with("retention: rule 1: tag:"), "{m}");
    assert!(dir.tenant("acme").is_none(), "nothing written");

    dir.create_tenant(NewTenant {
        retention: Some(policy(r#"{"rules": [{"keep_last": 3}]}"#)),
        ..new_tenant("acme")
    })
    .await
    .unwrap();
    dir.create_tenant(new_tenant("globex")).await.unwrap();
    assert_eq!(dir.retention_policy("acme").unwrap().rules().len(), 1);
    assert!(dir.retention_policy("globex").is_none());
    let names: Vec<String> = dir
        .retention_policies()
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(names, ["acme"]);

    // A bad patch changes nothing; `null` removes the policy.
    let patch = |json: &str| serde_json::from_str::<TenantPatch>(json).unwrap();
    let m = invalid(
        dir.update_tenant(
            "acme",
            &patch(r#"{"retention": {"rules": [{"repository": "x"}]}}"#),
        )
        .await,
    );
    assert!(m.contains("no condition"), "{m}");
    assert_eq!(
        dir.tenant("acme").unwrap().retention,
        Some(policy(r#"{"rules": [{"keep_last": 3}]}"#))
    );
    dir.update_tenant("acme", &patch(r#"{"retention": null}"#))
        .await
        .unwrap();
    assert!(dir.retention_policy("acme").is_none());
    assert!(dir.tenant("acme").unwrap().retention.is_none());
}

// ---- moving a tenant: the fence and the accounts' export and import ----

#[tokio::test]
async fn the_fence_is_stored_in_the_tenant_and_keeps_its_start() {
    let (_store, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    assert_eq!(dir.fence("acme"), None);
    let t = dir.set_fence("acme", true, Some(9), None).await.unwrap();
    let first = t.fence.unwrap();
    assert_eq!(first.retry_after_secs, 9);
    assert_eq!(dir.fence("acme"), Some(first));
    // Up again with another Retry-After: the start stays.
    let again = dir
        .set_fence("acme", true, None, None)
        .await
        .unwrap()
        .fence
        .unwrap();
    assert_eq!(
        (again.retry_after_secs, again.since_unix),
        (DEFAULT_FENCE_RETRY_SECS, first.since_unix)
    );
    invalid(dir.set_fence("acme", true, Some(0), None).await);
    invalid(
        dir.set_fence("acme", true, Some(MAX_FENCE_RETRY_SECS + 1), None)
            .await,
    );
    dir.set_fence("acme", false, None, None).await.unwrap();
    assert_eq!(dir.fence("acme"), None);
    not_found(dir.set_fence("nobody", true, None, None).await);
}

#[tokio::test]
async fn a_leased_fence_lapses_unless_renewed_and_a_lapsed_one_starts_anew() {
    let (_store, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    invalid(dir.set_fence("acme", true, None, Some(0)).await);
    invalid(
        dir.set_fence("acme", true, None, Some(MAX_FENCE_LEASE_SECS + 1))
            .await,
    );
    let first = dir
        .set_fence("acme", true, None, Some(2))
        .await
        .unwrap()
        .fence
        .unwrap();
    let until = first.until_unix_ms.expect("a leased fence has an end");
    assert!(first.stands_at(until - 1) && !first.stands_at(until));
    assert_eq!(dir.fence("acme"), Some(first), "it stands within its lease");
    // Renewed before the end: it stands on, with its start kept.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let renewed = dir
        .set_fence("acme", true, None, Some(2))
        .await
        .unwrap()
        .fence
        .unwrap();
    assert_eq!(renewed.since_unix, first.since_unix);
    assert!(renewed.until_unix_ms.unwrap() > until);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    dir.refresh().await.unwrap();
    assert!(
        dir.fence("acme").is_some(),
        "past the first lease's end, the renewed lease holds it"
    );
    // Not renewed and past its end: until this node reads the store again
    // it cannot know there was no renewal, so the fence still stands.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        dir.fence("acme").is_some(),
        "not re-read since before its end: the fence holds"
    );
    // Read again after its end, and not renewed: it has lapsed.
    dir.refresh().await.unwrap();
    assert_eq!(dir.fence("acme"), None, "a lapsed lease refuses nothing");
    // Put up again after it lapsed: a new fence, with a new start.
    let anew = dir
        .set_fence("acme", true, None, Some(2))
        .await
        .unwrap()
        .fence
        .unwrap();
    assert!(
        anew.since_unix > first.since_unix,
        "3.4 s later, a later second"
    );
    // A fence without a lease has no end.
    let lasting = dir
        .set_fence("acme", true, None, None)
        .await
        .unwrap()
        .fence
        .unwrap();
    assert_eq!(lasting.until_unix_ms, None);
    assert!(lasting.stands_at(u64::MAX));
    dir.set_fence("acme", false, None, None).await.unwrap();
    assert_eq!(dir.fence("acme"), None);
}

#[tokio::test]
async fn accounts_export_and_import_identically_without_the_fence() {
    let (_a_store, a) = setup().await;
    a.create_tenant(new_tenant("acme")).await.unwrap();
    a.put_user(
        "acme",
        "alice",
        Some("alice-password"),
        &[RoleSpec::tenant_wide(Role::Pull)],
    )
    .await
    .unwrap();
    a.create_robot("acme", "ci", vec![grant("acme/*:pull")], None)
        .await
        .unwrap();
    a.set_fence("acme", true, None, None).await.unwrap();
    let export = a.export_accounts("acme").unwrap();
    assert!(export.tenant.get("fence").is_none(), "the fence stays home");
    assert!(export.users[0]["password_hash"]
        .as_str()
        .unwrap()
        .starts_with("$2"));

    let (_b_store, b) = setup().await;
    let done = b
        .import_accounts("acme", export.clone(), false)
        .await
        .unwrap();
    assert_eq!(
        (done.tenant.created, done.users.created, done.robots.created),
        (1, 1, 1)
    );
    assert_eq!(b.fence("acme"), None);
    let again = b.export_accounts("acme").unwrap();
    assert_eq!(
        (&again.tenant, &again.users, &again.robots),
        (&export.tenant, &export.users, &export.robots)
    );
    let cred = b.credential("alice").expect("alice is a user of b");
    let ok = tokio::task::spawn_blocking(move || {
        verify_password(&cred, "alice-password", wharf_core::now_unix())
    })
    .await
    .unwrap();
    assert!(ok, "the same password logs in");
    let done = b
        .import_accounts("acme", export.clone(), false)
        .await
        .unwrap();
    assert_eq!((done.users.unchanged, done.robots.unchanged), (1, 1));

    // A sync without the users and robots deletes them.
    let mut bare = export.clone();
    bare.users.clear();
    bare.robots.clear();
    let done = b.import_accounts("acme", bare, true).await.unwrap();
    assert_eq!((done.users.deleted, done.robots.deleted), (1, 1));
    assert!(b.users("acme").unwrap().is_empty());

    // Records reaching outside the tenant are refused.
    let mut outside = export.clone();
    outside.robots[0]["grants"] = serde_json::json!(["other/*:pull"]);
    invalid(b.import_accounts("acme", outside, false).await);
    let mut renamed = export;
    renamed.users[0]["tenant"] = serde_json::json!("other");
    invalid(b.import_accounts("acme", renamed, false).await);
}

// ---- notification endpoints ----

fn endpoint(url: &str, secret: Option<&str>) -> NotifyEndpointInput {
    NotifyEndpointInput {
        url: url.into(),
        secret: secret.map(str::to_string),
        pulls: None,
    }
}

#[tokio::test]
async fn notification_endpoints_are_kept_per_tenant_with_their_secret_shown_once() {
    let (store, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    dir.create_tenant(new_tenant("globex")).await.unwrap();
    assert!(dir.notify_targets("acme").is_none());

    // Without a secret: one is generated and returned this once.
    let (view, created, secret) = dir
        .put_notify_endpoint(
            "acme",
            "ci",
            endpoint("http://127.0.0.1:9/hook", None),
            None,
        )
        .await
        .unwrap();
    assert!(created);
    let secret = secret.expect("a generated secret");
    assert!(secret.expose().starts_with("whsec_"));
    assert!(!format!("{secret:?}").contains(secret.expose()));
    assert_eq!(
        (view.tenant.as_str(), view.id.as_str(), view.pulls),
        ("acme", "ci", false)
    );
    // With one: kept as given, never shown.
    let mut input = endpoint("https://hooks.example/x", Some("0123456789abcdef-given"));
    input.pulls = Some(true);
    let (_, created, none) = dir
        .put_notify_endpoint("globex", "audit", input, None)
        .await
        .unwrap();
    assert!(created && none.is_none());

    let targets = dir.notify_targets("acme").unwrap();
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].id, "acme/ci");
    assert_eq!(targets[0].secret.expose(), secret.expose().as_bytes());
    assert!(!targets[0].pulls);
    let g = dir.notify_targets("globex").unwrap();
    assert_eq!((g[0].id.as_str(), g[0].pulls), ("globex/audit", true));
    assert_eq!(g[0].secret.expose(), b"0123456789abcdef-given");

    // Views never hold the secret.
    let shown = serde_json::to_string(&dir.notify_endpoints("acme").unwrap()).unwrap();
    assert!(
        !shown.contains(secret.expose()) && !shown.contains("secret"),
        "{shown}"
    );
    assert_eq!(dir.notify_endpoint("acme", "ci").unwrap(), view);

    // Replacing keeps the secret, pulls and creation time unless given.
    let (again, created, none) = dir
        .put_notify_endpoint(
            "acme",
            "ci",
            endpoint("http://127.0.0.1:10/other", None),
            None,
        )
        .await
        .unwrap();
    assert!(!created && none.is_none());
    assert_eq!(again.url, "http://127.0.0.1:10/other");
    assert_eq!(again.created_unix, view.created_unix);
    let t = dir.notify_targets("acme").unwrap();
    assert_eq!(t[0].secret.expose(), secret.expose().as_bytes());
    assert_eq!(t[0].url.as_str(), "http://127.0.0.1:10/other");

    // Another node loading the store sees the same.
    let other = Directory::open(store.clone()).await.unwrap();
    assert_eq!(other.notify_endpoints("acme").unwrap(), vec![again]);

    dir.delete_notify_endpoint("acme", "ci", None)
        .await
        .unwrap();
    assert!(dir.notify_targets("acme").is_none());
    not_found(dir.delete_notify_endpoint("acme", "ci", None).await);
    not_found(dir.notify_endpoint("acme", "ci"));
    not_found(dir.notify_endpoints("nobody"));
    not_found(
        dir.put_notify_endpoint("nobody", "ci", endpoint("http://x/", None), None)
            .await,
    );
}

#[tokio::test]
async fn a_tenant_set_endpoint_is_public_only_and_the_operators_are_not_the_tenants_to_change() {
    let (_, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    // The operator's endpoint: any address, left alone by tenant accounts.
    dir.put_notify_endpoint("acme", "ops", endpoint("http://10.0.0.5/hook", None), None)
        .await
        .unwrap();
    for refused in [
        dir.put_notify_endpoint(
            "acme",
            "ops",
            endpoint("https://hooks.example/x", None),
            Some("acme/alice"),
        )
        .await
        .map(|_| ()),
        dir.delete_notify_endpoint("acme", "ops", Some("acme/alice"))
            .await,
    ] {
        match refused {
            Err(DirectoryError::Conflict(m)) => {
                assert!(
                    m.contains("set by the operator") && m.contains("acme/alice"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
    // The tenant's own: marked, public-only where events are sent.
    let (view, created, _) = dir
        .put_notify_endpoint(
            "acme",
            "ci",
            endpoint("https://hooks.example/ci", None),
            Some("acme/alice"),
        )
        .await
        .unwrap();
    assert!(created);
    assert_eq!(view.set_by.as_deref(), Some("acme/alice"));
    let targets = dir.notify_targets("acme").unwrap();
    let public_only = |id: &str| targets.iter().find(|t| t.id == id).unwrap().public_only;
    assert!(public_only("acme/ci"));
    assert!(!public_only("acme/ops"));
    // The operator may replace it, and it is the operator's then.
    let (view, _, _) = dir
        .put_notify_endpoint("acme", "ci", endpoint("http://10.0.0.6/", None), None)
        .await
        .unwrap();
    assert_eq!(view.set_by, None);
    assert!(!dir
        .notify_targets("acme")
        .unwrap()
        .iter()
        .any(|t| t.public_only));
    dir.put_notify_endpoint(
        "acme",
        "ci",
        endpoint("https://hooks.example/ci", None),
        Some("acme/bob"),
    )
    .await
    .unwrap_err();
    dir.delete_notify_endpoint("acme", "ops", None)
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_notification_endpoints_are_refused_and_capped_per_tenant() {
    let (_, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    let put = |id: &'static str, input: NotifyEndpointInput| {
        let dir = dir.clone();
        async move { dir.put_notify_endpoint("acme", id, input, None).await }
    };
    let msg = invalid(put("ci", endpoint("ftp://example.com/", None)).await);
    assert!(msg.contains("http:// or https://"), "{msg}");
    let msg = invalid(put("ci", endpoint("http://u:p@example.com/", None)).await);
    assert!(msg.contains("credentials"), "{msg}");
    let msg = invalid(put("ci", endpoint("http://example.com/", Some("short"))).await);
    assert!(msg.contains("16 to 256 bytes"), "{msg}");
    invalid(put("Bad_Id", endpoint("http://example.com/", None)).await);
    for id in ["a", "b", "c", "d"] {
        put(id, endpoint("http://example.com/", None))
            .await
            .unwrap();
    }
    let msg = conflict(put("e", endpoint("http://example.com/", None)).await);
    assert!(msg.contains("at most") || msg.contains("the most"), "{msg}");
    // Replacing one is not a fifth.
    put("a", endpoint("http://example.com/2", None))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_deleted_tenant_takes_its_notification_endpoints_along() {
    let (store, dir) = setup().await;
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    dir.put_notify_endpoint("acme", "ci", endpoint("http://127.0.0.1:9/", None), None)
        .await
        .unwrap();
    assert!(store.has(KIND_NOTIFY, "acme/ci"));
    dir.delete_tenant("acme", false).await.unwrap();
    assert!(!store.has(KIND_NOTIFY, "acme/ci"));
    assert!(dir.notify_targets("acme").is_none());

    // An endpoint a cut-short deletion left behind is inert, and swept
    // when the name is taken again.
    dir.create_tenant(new_tenant("globex")).await.unwrap();
    dir.put_notify_endpoint("globex", "ci", endpoint("http://127.0.0.1:9/", None), None)
        .await
        .unwrap();
    store.remove("tenant", "globex");
    dir.load().await.unwrap();
    assert!(dir.notify_targets("globex").is_none());
    dir.create_tenant(new_tenant("globex")).await.unwrap();
    assert!(!store.has(KIND_NOTIFY, "globex/ci"));
    assert!(dir.notify_endpoints("globex").unwrap().is_empty());
}
