//! Garbage collection as the registry's writes see it: holds on content
//! about to be written, the touches that postpone a blob's review, and what
//! the node forgets when a review removes a link.
//!
//! Owns: [`Registry::hold_content`] (and `hold_content_until`, the hold a
//! tenant import names and releases, `crate::moving`), [`Registry::touch_link`] and
//! [`Registry::forget_link`]. The argument these serve is in
//! `wharf_meta::gc`: bytes are stored before they are recorded, so a hold
//! must stand from before the bytes are written until the record holds them.
//!
//! Must never: delay a pull for garbage collection's sake (touches run off
//! the request path), or store bytes of a digest whose hold was refused.

use std::time::Duration;

use wharf_core::{now_unix, Digest, RegistryError, RepoName};
use wharf_meta::gc::HOLD_SECS;
use wharf_meta::MetaError;

use crate::{meta_err, Registry};

/// Tries of a hold refused because the digest's bytes are being deleted
/// right now (a deletion takes milliseconds), before the client is asked to
/// retry.
const HOLD_TRIES: u32 = 5;
/// The pause between them.
const HOLD_PAUSE: Duration = Duration::from_millis(100);
/// How often one blob link's review is postponed by this node at most.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

impl Registry {
    /// Protects `digest` from garbage collection while `holder` writes and
    /// records it. A digest being deleted at this moment is waited for a
    /// little; past that, the refusal is a `503` with `Retry-After`.
    pub(crate) async fn hold_content(
        &self,
        digest: &Digest,
        holder: &str,
    ) -> Result<(), RegistryError> {
        let until = now_unix().saturating_add(HOLD_SECS);
        self.hold_content_until(digest, holder, until).await
    }

    /// [`Registry::hold_content`] until `until` (seconds since the epoch)
    /// rather than for [`HOLD_SECS`]: a tenant import holds what it copies
    /// until it has linked it.
    pub(crate) async fn hold_content_until(
        &self,
        digest: &Digest,
        holder: &str,
        until: u64,
    ) -> Result<(), RegistryError> {
        let mut tries = 0;
        loop {
            match self.meta().gc_hold(digest, holder, until).await {
                Ok(()) => return Ok(()),
                Err(MetaError::Collecting(_)) if tries + 1 < HOLD_TRIES => {
                    tries += 1;
                    tokio::time::sleep(HOLD_PAUSE).await;
                }
                Err(e) => return Err(meta_err(e)),
            }
        }
    }

    /// Ends `holder`'s hold on `digest` once its record has committed (in
    /// the background: a hold left behind only delays collection until it
    /// expires).
    pub(crate) fn end_hold(&self, digest: &Digest, holder: &str) {
        let (this, digest, holder) = (self.clone(), digest.clone(), holder.to_string());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                // A busy metadata store refuses a call now and then (its
                // bounded pool); a hold left standing postpones its
                // digest's collection until it expires, so try again.
                let mut pause = HOLD_PAUSE;
                for tries in 1..=HOLD_TRIES {
                    match this.meta().gc_unhold(&digest, &holder).await {
                        Ok(()) => return,
                        Err(e) if tries == HOLD_TRIES => tracing::warn!(
                            error = %e, %digest,
                            "ending a hold failed; it expires by itself within an hour"
                        ),
                        Err(_) => {
                            tokio::time::sleep(pause).await;
                            pause *= 2;
                        }
                    }
                }
            });
        }
    }

    /// Postpones the garbage-collection review of (`repo`, `digest`): a
    /// client just checked for or fetched the blob, so a push may be about
    /// to use it. At most once a minute per link, in the background.
    pub(crate) fn touch_link(&self, repo: &RepoName, digest: &Digest) {
        let key = (repo.clone(), digest.clone());
        if self.inner.touched.get_fresh(&key, TOUCH_EVERY).is_some() {
            return;
        }
        self.inner.touched.put(key, ());
        let (this, repo, digest) = (self.clone(), repo.clone(), digest.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = this.meta().gc_touch(&repo, &digest, now_unix()).await {
                    tracing::debug!(error = %e, %repo, %digest, "postponing a blob's review");
                }
            });
        }
    }

    /// Forgets what this node cached of link (`repo`, `digest`), which
    /// garbage collection or a refused manifest showed to be gone: the next
    /// `HEAD` asks metadata, so a client uploads the blob again.
    pub fn forget_link(&self, repo: &RepoName, digest: &Digest) {
        self.inner.links.remove(&(repo.clone(), digest.clone()));
    }
}
