//! The directory over the real embedded (redb) metadata store: two nodes
//! sharing one store, quota usage from real blob links, and a reopen.

use std::sync::Arc;
use std::time::Duration;

use wharf_auth::parse_grant;
use wharf_core::{Digest, QuotaSource, RepoName};
use wharf_meta::embedded::EmbeddedStore;
use wharf_meta::MetaStore;
use wharf_tenants::{
    verify_password, Directory, DirectoryError, NewTenant, Role, RoleSpec, SubjectStatus,
    TenantQuota,
};

const NOW: u64 = 1_700_000_000;

fn new_tenant(name: &str) -> NewTenant {
    NewTenant {
        name: name.to_string(),
        ..NewTenant::default()
    }
}

fn repo(s: &str) -> RepoName {
    s.parse().unwrap()
}

#[tokio::test]
async fn two_nodes_share_one_embedded_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let store: Arc<dyn MetaStore> =
        Arc::new(EmbeddedStore::open(tmp.path().join("meta.redb")).unwrap());
    let a = Directory::open(store.clone()).await.unwrap();
    let b = Directory::open(store.clone()).await.unwrap();

    a.create_tenant(NewTenant {
        hostname: Some("reg.acme.io".into()),
        quota: TenantQuota {
            bytes: Some(1000),
            repositories: Some(5),
        },
        ..new_tenant("acme")
    })
    .await
    .unwrap();
    a.put_user(
        "acme",
        "alice",
        Some("correct horse"),
        &[RoleSpec::tenant_wide(Role::Push)],
    )
    .await
    .unwrap();
    let (_, secret) = a
        .create_robot(
            "acme",
            "ci",
            vec![parse_grant("acme/app:pull").unwrap()],
            Some(Duration::from_secs(3600)),
        )
        .await
        .unwrap();

    assert!(b.refresh().await.unwrap());
    assert_eq!(b.tenant_for_host("reg.acme.io"), Some("acme".into()));
    assert_eq!(b.quota("acme").unwrap().max_bytes, Some(1000));
    let alice = b.credential("alice").unwrap();
    assert!(verify_password(&alice, "correct horse", NOW));
    let robot = b.credential("acme+ci").unwrap();
    assert!(verify_password(&robot, secret.expose(), NOW));

    // Names are claimed in the store, so node b cannot take them again.
    assert!(matches!(
        b.create_tenant(new_tenant("acme")).await,
        Err(DirectoryError::Conflict(_))
    ));
    b.create_tenant(new_tenant("globex")).await.unwrap();
    assert!(matches!(
        b.put_user("globex", "alice", Some("battery staple"), &[])
            .await,
        Err(DirectoryError::Conflict(_))
    ));

    b.revoke_robot("acme", "ci").await.unwrap();
    a.refresh().await.unwrap();
    assert_eq!(a.subject_active("acme+ci", NOW), SubjectStatus::Inactive);
    assert_eq!(a.version(), b.version());
}

#[tokio::test]
async fn usage_and_deletion_follow_what_the_namespace_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let embedded = Arc::new(EmbeddedStore::open(tmp.path().join("meta.redb")).unwrap());
    let dir = Directory::open(embedded.clone()).await.unwrap();
    dir.create_tenant(new_tenant("acme")).await.unwrap();
    dir.put_user("acme", "alice", Some("correct horse"), &[])
        .await
        .unwrap();

    let layer = Digest::sha256_of(b"layer");
    embedded
        .link_blob(&repo("acme/app"), &layer, 300)
        .await
        .unwrap();
    embedded
        .link_blob(&repo("acme/team/lib"), &layer, 300)
        .await
        .unwrap();
    embedded
        .link_blob(&repo("acme-other/app"), &Digest::sha256_of(b"x"), 9)
        .await
        .unwrap();

    let usage = dir.usage("acme").await.unwrap();
    assert_eq!((usage.bytes, usage.repositories), (300, 2));

    assert!(matches!(
        dir.delete_tenant("acme", false).await,
        Err(DirectoryError::Conflict(_))
    ));
    dir.delete_tenant("acme", true).await.unwrap();
    assert!(dir.tenant("acme").is_none());
    assert!(dir.credential("alice").is_none());
    // Only the deleted users' names are left (retired, so their tokens
    // are refused), and the tenant's tombstone.
    let left = embedded.directory_snapshot().await.unwrap();
    assert!(
        left.records
            .iter()
            .all(|r| (r.kind == "retired-user" && r.key == "alice")
                || (r.kind == "deleted-tenant" && r.key == "acme")),
        "{:?}",
        left.records
    );
    assert_eq!(
        dir.subject_active("alice", 0),
        wharf_tenants::SubjectStatus::Inactive
    );
    // Forced, its content went too; the neighbour's stays.
    let usage = embedded.namespace_usage("acme", None).await.unwrap();
    assert_eq!((usage.bytes, usage.repositories), (0, 0));
    assert!(!embedded.repo_exists(&repo("acme/team/lib")).await.unwrap());
    assert!(embedded.repo_exists(&repo("acme-other/app")).await.unwrap());
}

#[tokio::test]
async fn the_directory_outlives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("meta.redb");
    {
        let store = Arc::new(EmbeddedStore::open(&path).unwrap());
        let dir = Directory::open(store).await.unwrap();
        dir.create_tenant(new_tenant("acme")).await.unwrap();
        dir.create_robot(
            "acme",
            "ci",
            vec![parse_grant("acme/*:pull").unwrap()],
            None,
        )
        .await
        .unwrap();
    }
    let store = Arc::new(EmbeddedStore::open(&path).unwrap());
    let dir = Directory::open(store).await.unwrap();
    assert!(dir.tenant("acme").is_some());
    assert_eq!(dir.subject_active("acme+ci", NOW), SubjectStatus::Active);
}
