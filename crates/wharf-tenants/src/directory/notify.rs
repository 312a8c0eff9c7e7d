//! A tenant's notification endpoints in the directory: read from the
//! snapshot (the request path asks for a tenant's targets on every event),
//! written through the store like every other admin mutation.
//!
//! Owns: [`Directory::notify_targets`], the admin reads and
//! [`Directory::put_notify_endpoint`] / [`Directory::delete_notify_endpoint`].
//!
//! Must never: call the store on the request path, or return a secret
//! but the one [`Directory::put_notify_endpoint`] generated.

use super::*;
use crate::notify::{
    GeneratedSecret, NotifyEndpointInput, NotifyEndpointView, NotifyRecord, KIND_NOTIFY,
    MAX_NOTIFY_ENDPOINTS,
};

impl Directory {
    /// Where `tenant`'s events go besides the node's endpoints, from the
    /// snapshot; `None` when nowhere.
    pub fn notify_targets(&self, tenant: &str) -> Option<Arc<[Arc<wharf_notify::Target>]>> {
        self.snap().notify.get(tenant).cloned()
    }

    /// `tenant`'s endpoints, by id.
    pub fn notify_endpoints(
        &self,
        tenant: &str,
    ) -> Result<Vec<NotifyEndpointView>, DirectoryError> {
        let snap = self.snap();
        require_tenant(&snap, tenant)?;
        let mut all: Vec<NotifyEndpointView> = snap
            .notify_records
            .values()
            .filter(|r| r.tenant == tenant)
            .map(NotifyRecord::view)
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    /// `tenant`'s endpoint `id`.
    pub fn notify_endpoint(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<NotifyEndpointView, DirectoryError> {
        let snap = self.snap();
        require_tenant(&snap, tenant)?;
        snap.notify_records
            .get(&NotifyRecord::key(tenant, id))
            .map(NotifyRecord::view)
            .ok_or_else(|| not_found(tenant, id))
    }

    /// Creates `tenant`'s endpoint `id`, or replaces it (a secret or
    /// `pulls` not given keeps the current one), as the operator (`by`
    /// `None`) or as a tenant account (`by` its subject: the endpoint then
    /// delivers to public addresses only, and one the operator set may not
    /// be replaced). Returns its view, whether it was created, and the
    /// secret if one was generated (shown only this once).
    pub async fn put_notify_endpoint(
        &self,
        tenant: &str,
        id: &str,
        input: NotifyEndpointInput,
        by: Option<&str>,
    ) -> Result<(NotifyEndpointView, bool, Option<GeneratedSecret>), DirectoryError> {
        wharf_notify::target::check_id(id).map_err(DirectoryError::Invalid)?;
        wharf_notify::target::check_url(&input.url).map_err(DirectoryError::Invalid)?;
        if let Some(secret) = &input.secret {
            wharf_notify::target::check_secret(secret).map_err(DirectoryError::Invalid)?;
        }
        let _one_writer = self.inner.writes.lock().await;
        let snap = self.fresh().await?;
        require_tenant(&snap, tenant)?;
        let key = NotifyRecord::key(tenant, id);
        let current = snap.notify_records.get(&key);
        if let Some(c) = current {
            set_by_operator_refused(c, by)?;
        }
        if current.is_none() {
            let count = snap
                .notify_records
                .values()
                .filter(|r| r.tenant == tenant)
                .count();
            if count >= MAX_NOTIFY_ENDPOINTS {
                return Err(DirectoryError::Conflict(format!(
                    "tenant {tenant} has {count} notification endpoints, the most it may have \
                     ({MAX_NOTIFY_ENDPOINTS}); delete one first"
                )));
            }
        }
        let (secret, generated) = match (&input.secret, current) {
            (Some(s), _) => (s.clone(), None),
            (None, Some(c)) => (c.secret.clone(), None),
            (None, None) => {
                let s = wharf_notify::target::generate_secret().map_err(|e| {
                    tracing::error!(error = %e, "the operating system's random generator failed");
                    DirectoryError::Unavailable(e)
                })?;
                (s.clone(), Some(GeneratedSecret(s)))
            }
        };
        let record = NotifyRecord {
            tenant: tenant.to_string(),
            id: id.to_string(),
            url: input.url,
            secret,
            pulls: input
                .pulls
                .unwrap_or_else(|| current.is_some_and(|c| c.pulls)),
            created_unix: current.map_or_else(now_unix, |c| c.created_unix),
            set_by: by.map(str::to_string),
        };
        record.check().map_err(DirectoryError::Invalid)?;
        // A record of a deleted tenant of the same name may still hold the
        // key: overwritten, not refused.
        self.put(KIND_NOTIFY, &key, &record, false).await?;
        self.load().await?;
        Ok((record.view(), current.is_none(), generated))
    }

    /// Deletes `tenant`'s endpoint `id`, as the operator (`by` `None`) or
    /// as a tenant account (which may not delete one the operator set).
    /// Events already queued for it are still delivered.
    pub async fn delete_notify_endpoint(
        &self,
        tenant: &str,
        id: &str,
        by: Option<&str>,
    ) -> Result<(), DirectoryError> {
        let _one_writer = self.inner.writes.lock().await;
        let snap = self.fresh().await?;
        require_tenant(&snap, tenant)?;
        let key = NotifyRecord::key(tenant, id);
        let Some(current) = snap.notify_records.get(&key) else {
            return Err(not_found(tenant, id));
        };
        set_by_operator_refused(current, by)?;
        if !self.inner.store.directory_delete(KIND_NOTIFY, &key).await? {
            return Err(not_found(tenant, id));
        }
        self.load().await
    }
}

/// A tenant account (`by`) may not change an endpoint the operator set.
fn set_by_operator_refused(current: &NotifyRecord, by: Option<&str>) -> Result<(), DirectoryError> {
    match (by, &current.set_by) {
        (Some(who), None) => Err(DirectoryError::Conflict(format!(
            "notification endpoint {} of tenant {} was set by the operator; {who} may not \
             change or delete it (choose another id)",
            clip(&current.id),
            current.tenant
        ))),
        _ => Ok(()),
    }
}

fn not_found(tenant: &str, id: &str) -> DirectoryError {
    DirectoryError::NotFound(format!(
        "notification endpoint {} of tenant {tenant}",
        clip(id)
    ))
}
