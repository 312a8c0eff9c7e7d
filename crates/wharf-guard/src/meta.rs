//! [`GuardedMetaStore`]: any `MetaStore` behind a [`Guard`].

use std::sync::Arc;

use async_trait::async_trait;
use wharf_core::{Digest, RepoName, Tag, UploadId};
use wharf_meta::gc::{GcStatus, Known, ReviewPolicy, Verdict};
use wharf_meta::{
    DirectorySnapshot, ManifestEntry, ManifestRecord, MetaError, MetaStore, NamespaceUsage, Pull,
    PurgeCounts, RefreshRecord, RefreshScope, RepoEntry, RepositorySnapshot, TagTimes,
    UploadRecord, UploadUsage, Upsert,
};

use crate::{Guard, GuardError};

/// A metadata store whose every call has a slot, a deadline and a breaker.
pub struct GuardedMetaStore {
    inner: Arc<dyn MetaStore>,
    guard: Guard,
}

impl GuardedMetaStore {
    pub fn new(inner: Arc<dyn MetaStore>, guard: Guard) -> Self {
        GuardedMetaStore { inner, guard }
    }

    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    async fn call<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, MetaError>>,
    ) -> Result<T, MetaError> {
        let failure = |e: &MetaError| matches!(e, MetaError::Unavailable(_));
        self.guard.run(true, failure, f).await.map_err(|e| match e {
            GuardError::Inner(e) => e,
            other => MetaError::Unavailable(format!("{}: {other}", self.guard.name())),
        })
    }
}

#[async_trait]
impl MetaStore for GuardedMetaStore {
    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<(), MetaError> {
        self.call(self.inner.link_blob(repo, digest, size)).await
    }

    async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, MetaError> {
        self.call(self.inner.blob_size(repo, digest)).await
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError> {
        self.call(self.inner.unlink_blob(repo, digest)).await
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        record: &ManifestRecord,
        tag: Option<&Tag>,
    ) -> Result<(), MetaError> {
        self.call(self.inner.put_manifest(repo, record, tag)).await
    }

    async fn get_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ManifestRecord>, MetaError> {
        self.call(self.inner.get_manifest(repo, digest)).await
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError> {
        self.call(self.inner.delete_manifest(repo, digest)).await
    }

    async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, MetaError> {
        self.call(self.inner.resolve_tag(repo, tag)).await
    }

    async fn get_tagged_manifest(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<ManifestRecord>, MetaError> {
        self.call(self.inner.get_tagged_manifest(repo, tag)).await
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, MetaError> {
        self.call(self.inner.delete_tag(repo, tag)).await
    }

    async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>, MetaError> {
        self.call(self.inner.list_tags(repo, last, n)).await
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<ManifestRecord>, MetaError> {
        self.call(self.inner.referrers(repo, subject)).await
    }

    async fn repo_exists(&self, repo: &RepoName) -> Result<bool, MetaError> {
        self.call(self.inner.repo_exists(repo)).await
    }

    async fn list_repos(&self, last: Option<&str>, n: usize) -> Result<Vec<String>, MetaError> {
        self.call(self.inner.list_repos(last, n)).await
    }

    async fn put_upload(&self, upload: &UploadRecord) -> Result<(), MetaError> {
        self.call(self.inner.put_upload(upload)).await
    }

    async fn get_upload(&self, id: &UploadId) -> Result<Option<UploadRecord>, MetaError> {
        self.call(self.inner.get_upload(id)).await
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<(), MetaError> {
        self.call(self.inner.delete_upload(id)).await
    }

    async fn list_uploads(&self) -> Result<Vec<UploadRecord>, MetaError> {
        self.call(self.inner.list_uploads()).await
    }

    async fn set_upload_bytes(&self, id: &UploadId, bytes: u64) -> Result<(), MetaError> {
        self.call(self.inner.set_upload_bytes(id, bytes)).await
    }

    async fn upload_usage(
        &self,
        namespace: &str,
        owner: Option<&str>,
    ) -> Result<UploadUsage, MetaError> {
        self.call(self.inner.upload_usage(namespace, owner)).await
    }

    async fn namespace_usage(
        &self,
        namespace: &str,
        digest: Option<&Digest>,
    ) -> Result<NamespaceUsage, MetaError> {
        self.call(self.inner.namespace_usage(namespace, digest))
            .await
    }

    async fn purge_namespace(&self, namespace: &str) -> Result<PurgeCounts, MetaError> {
        self.call(self.inner.purge_namespace(namespace)).await
    }

    async fn purge_repository(&self, repo: &RepoName) -> Result<PurgeCounts, MetaError> {
        self.call(self.inner.purge_repository(repo)).await
    }

    async fn namespace_repos(
        &self,
        namespace: &str,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<RepoEntry>, MetaError> {
        self.call(self.inner.namespace_repos(namespace, last, n))
            .await
    }

    async fn list_blob_links(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<(Digest, u64)>, MetaError> {
        self.call(self.inner.list_blob_links(repo, last, n)).await
    }

    async fn list_manifests(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<ManifestEntry>, MetaError> {
        self.call(self.inner.list_manifests(repo, last, n)).await
    }

    async fn list_tag_entries(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<TagTimes>, MetaError> {
        self.call(self.inner.list_tag_entries(repo, last, n)).await
    }

    async fn import_repo(&self, repo: &RepoName, created_unix: u64) -> Result<Upsert, MetaError> {
        self.call(self.inner.import_repo(repo, created_unix)).await
    }

    async fn import_manifest(
        &self,
        repo: &RepoName,
        entry: &ManifestEntry,
    ) -> Result<Upsert, MetaError> {
        self.call(self.inner.import_manifest(repo, entry)).await
    }

    async fn import_tag(&self, repo: &RepoName, tag: &TagTimes) -> Result<Upsert, MetaError> {
        self.call(self.inner.import_tag(repo, tag)).await
    }

    async fn directory_put(
        &self,
        kind: &str,
        key: &str,
        value: &str,
        create_only: bool,
    ) -> Result<bool, MetaError> {
        self.call(self.inner.directory_put(kind, key, value, create_only))
            .await
    }

    async fn directory_delete(&self, kind: &str, key: &str) -> Result<bool, MetaError> {
        self.call(self.inner.directory_delete(kind, key)).await
    }

    async fn directory_version(&self) -> Result<u64, MetaError> {
        self.call(self.inner.directory_version()).await
    }

    async fn directory_snapshot(&self) -> Result<DirectorySnapshot, MetaError> {
        self.call(self.inner.directory_snapshot()).await
    }

    async fn refresh_put(
        &self,
        record: &RefreshRecord,
        max_per_identity: usize,
        now_unix: u64,
    ) -> Result<(), MetaError> {
        self.call(self.inner.refresh_put(record, max_per_identity, now_unix))
            .await
    }

    async fn refresh_take(&self, hash: &str) -> Result<Option<RefreshRecord>, MetaError> {
        self.call(self.inner.refresh_take(hash)).await
    }

    async fn refresh_revoke(&self, which: &RefreshScope) -> Result<u64, MetaError> {
        self.call(self.inner.refresh_revoke(which)).await
    }

    async fn refresh_list(&self, tenant: &str) -> Result<Vec<RefreshRecord>, MetaError> {
        self.call(self.inner.refresh_list(tenant)).await
    }

    async fn refresh_prune(&self, now_unix: u64) -> Result<u64, MetaError> {
        self.call(self.inner.refresh_prune(now_unix)).await
    }

    async fn mount_blob(
        &self,
        from: &RepoName,
        to: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, MetaError> {
        self.call(self.inner.mount_blob(from, to, digest)).await
    }

    async fn gc_touch(
        &self,
        repo: &RepoName,
        digest: &Digest,
        now_unix: u64,
    ) -> Result<(), MetaError> {
        self.call(self.inner.gc_touch(repo, digest, now_unix)).await
    }

    async fn gc_hold(
        &self,
        digest: &Digest,
        holder: &str,
        until_unix: u64,
    ) -> Result<(), MetaError> {
        self.call(self.inner.gc_hold(digest, holder, until_unix))
            .await
    }

    async fn gc_unhold(&self, digest: &Digest, holder: &str) -> Result<(), MetaError> {
        self.call(self.inner.gc_unhold(digest, holder)).await
    }

    async fn gc_unhold_all(&self, holder: &str, now_unix: u64) -> Result<u64, MetaError> {
        self.call(self.inner.gc_unhold_all(holder, now_unix)).await
    }

    async fn gc_review(&self, policy: &ReviewPolicy) -> Result<Vec<Verdict>, MetaError> {
        self.call(self.inner.gc_review(policy)).await
    }

    async fn gc_release(&self, digest: &Digest, holder: &str) -> Result<bool, MetaError> {
        self.call(self.inner.gc_release(digest, holder)).await
    }

    async fn gc_enqueue_orphans(
        &self,
        digests: &[Digest],
        now_unix: u64,
    ) -> Result<u64, MetaError> {
        self.call(self.inner.gc_enqueue_orphans(digests, now_unix))
            .await
    }

    async fn largest_namespaces(&self, n: usize) -> Result<Vec<(String, u64)>, MetaError> {
        self.call(self.inner.largest_namespaces(n)).await
    }

    async fn gc_status(&self, policy: &ReviewPolicy) -> Result<GcStatus, MetaError> {
        self.call(self.inner.gc_status(policy)).await
    }

    async fn gc_known(&self, policy: &ReviewPolicy) -> Result<Known, MetaError> {
        self.call(self.inner.gc_known(policy)).await
    }

    async fn record_pulls(&self, pulls: &[Pull]) -> Result<u64, MetaError> {
        self.call(self.inner.record_pulls(pulls)).await
    }

    async fn retention_snapshot(
        &self,
        namespace: &str,
    ) -> Result<Vec<RepositorySnapshot>, MetaError> {
        self.call(self.inner.retention_snapshot(namespace)).await
    }

    async fn delete_tag_at(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<bool, MetaError> {
        self.call(self.inner.delete_tag_at(repo, tag, digest)).await
    }

    async fn delete_untagged_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<bool, MetaError> {
        self.call(self.inner.delete_untagged_manifest(repo, digest))
            .await
    }
}
