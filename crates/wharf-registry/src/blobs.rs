//! Blobs as a repository sees them: a blob is readable through a repository
//! only if that repository holds a link to it (pushed there or mounted).

use std::ops::Range;

use wharf_core::{Digest, RegistryError, RepoName};
use wharf_storage::{ByteStream, StorageError};

use futures_util::StreamExt as _;

use crate::{meta_err, storage_err, unreachable, Registry, SMALL_BLOB_MAX};

/// A parsed `Range: bytes=…` request, before the blob's size is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=a-`
    From(u64),
    /// `bytes=a-b`, inclusive.
    FromTo(u64, u64),
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    /// Parses a single-range `Range` header value. Returns `None` for syntax
    /// we do not serve (other units, several ranges, malformed), in which case
    /// the whole blob is served, as HTTP allows.
    pub fn parse(header: &str) -> Option<ByteRange> {
        let spec = header.trim().strip_prefix("bytes=")?;
        if spec.contains(',') {
            return None;
        }
        let (a, b) = spec.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        match (a.is_empty(), b.is_empty()) {
            (true, false) => Some(ByteRange::Suffix(b.parse().ok()?)),
            (false, true) => Some(ByteRange::From(a.parse().ok()?)),
            (false, false) => {
                let (a, b) = (a.parse().ok()?, b.parse().ok()?);
                (a <= b).then_some(ByteRange::FromTo(a, b))
            }
            (true, true) => None,
        }
    }

    /// The half-open byte range this selects in a blob of `size` bytes, or
    /// `RangeNotSatisfiable`.
    pub fn resolve(self, size: u64) -> Result<Range<u64>, RegistryError> {
        let unsatisfiable = RegistryError::RangeNotSatisfiable { size };
        match self {
            ByteRange::From(a) if a < size => Ok(a..size),
            ByteRange::FromTo(a, b) if a < size => Ok(a..b.saturating_add(1).min(size)),
            ByteRange::Suffix(n) if n > 0 && size > 0 => Ok(size.saturating_sub(n)..size),
            _ => Err(unsatisfiable),
        }
    }
}

/// An open blob read.
pub struct BlobRead {
    /// Size of the whole blob.
    pub size: u64,
    /// The part being sent, when a range was asked for.
    pub range: Option<Range<u64>>,
    /// The bytes (of `range`, or of the whole blob).
    pub stream: ByteStream,
}

impl Registry {
    /// The size of blob `digest` in `repo`, or `BLOB_UNKNOWN`.
    pub async fn stat_blob(&self, repo: &RepoName, digest: &Digest) -> Result<u64, RegistryError> {
        let key = (repo.clone(), digest.clone());
        if let Some(size) = self
            .inner
            .links
            .get_fresh(&key, self.inner.config.link_cache_ttl)
        {
            self.touch_link(repo, digest);
            return Ok(size);
        }
        let size = match self.meta().blob_size(repo, digest).await {
            Ok(size) => size,
            // Metadata unreachable: a link this node saw is still good for
            // a pull (the bytes are immutable and stay until GC).
            Err(e) if unreachable(&e) => match self.inner.links.get(&key) {
                Some(size) => return Ok(size),
                None => return Err(meta_err(e)),
            },
            Err(e) => return Err(meta_err(e)),
        };
        match size {
            Some(size) => {
                self.inner.links.put(key, size);
                self.touch_link(repo, digest);
                Ok(size)
            }
            None => {
                self.inner.links.remove(&key);
                Err(RegistryError::BlobUnknown(digest.clone()))
            }
        }
    }

    /// Where a client may fetch blob `digest` of `repo` directly (a
    /// presigned object-store URL valid for `ttl`), when the storage offers
    /// it; `None` means the node serves the bytes itself.
    pub async fn blob_redirect(
        &self,
        repo: &RepoName,
        digest: &Digest,
        ttl: std::time::Duration,
    ) -> Result<Option<String>, RegistryError> {
        self.stat_blob(repo, digest).await?;
        self.blobs()
            .redirect_url(digest, ttl)
            .await
            .map_err(storage_err)
    }

    /// Opens blob `digest` of `repo` for reading, whole or a range of it.
    pub async fn get_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<BlobRead, RegistryError> {
        let size = self.stat_blob(repo, digest).await?;
        let range = range.map(|r| r.resolve(size)).transpose()?;
        if size <= SMALL_BLOB_MAX && self.inner.config.small_blob_cache_bytes > 0 {
            let whole = match self.inner.small_blobs.get_key(digest) {
                Some(b) => b,
                None => {
                    let b = self.read_small(digest, size).await.inspect_err(|e| {
                        if matches!(e, RegistryError::BlobUnknown(_)) {
                            tracing::error!(%repo, %digest, "blob linked in metadata is missing from storage");
                        }
                    })?;
                    if b.len() as u64 != size {
                        return Err(RegistryError::Internal(format!(
                            "blob {digest} holds {} bytes, its link says {size}",
                            b.len()
                        )));
                    }
                    self.inner.small_blobs.insert_key(digest.clone(), b.clone());
                    b
                }
            };
            let part = match &range {
                Some(r) => whole.slice(r.start as usize..r.end as usize),
                None => whole,
            };
            return Ok(BlobRead {
                size,
                range,
                stream: futures_util::stream::iter([Ok(part)]).boxed(),
            });
        }
        let stream = match self.blobs().get(digest, range.clone()).await {
            Ok(s) => s,
            Err(StorageError::NotFound) => {
                tracing::error!(%repo, %digest, "blob linked in metadata is missing from storage");
                return Err(RegistryError::BlobUnknown(digest.clone()));
            }
            Err(e) => return Err(storage_err(e)),
        };
        Ok(BlobRead {
            size,
            range,
            stream,
        })
    }

    /// Removes blob `digest` from `repo`. The bytes stay in storage while any
    /// repository (or manifest) may still use them; reclaiming unreferenced
    /// bytes is garbage collection's job.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<(), RegistryError> {
        let removed = self
            .meta()
            .unlink_blob(repo, digest)
            .await
            .map_err(meta_err)?;
        self.inner.links.remove(&(repo.clone(), digest.clone()));
        if removed {
            Ok(())
        } else {
            Err(RegistryError::BlobUnknown(digest.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges() {
        assert_eq!(ByteRange::parse("bytes=0-9"), Some(ByteRange::FromTo(0, 9)));
        assert_eq!(ByteRange::parse("bytes=5-"), Some(ByteRange::From(5)));
        assert_eq!(ByteRange::parse("bytes=-3"), Some(ByteRange::Suffix(3)));
        for ignored in [
            "bytes=9-0",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=-",
            "bytes=a-b",
        ] {
            assert_eq!(ByteRange::parse(ignored), None, "{ignored}");
        }
    }

    #[test]
    fn resolves_against_size() {
        assert_eq!(ByteRange::FromTo(0, 9).resolve(5).unwrap(), 0..5);
        // An end at the largest offset must not overflow.
        assert_eq!(ByteRange::FromTo(0, u64::MAX).resolve(5).unwrap(), 0..5);
        assert_eq!(ByteRange::From(4).resolve(5).unwrap(), 4..5);
        assert_eq!(ByteRange::Suffix(2).resolve(5).unwrap(), 3..5);
        assert_eq!(ByteRange::Suffix(9).resolve(5).unwrap(), 0..5);
        assert!(ByteRange::From(5).resolve(5).is_err());
        assert!(ByteRange::FromTo(7, 9).resolve(5).is_err());
        assert!(ByteRange::Suffix(0).resolve(5).is_err());
        assert!(ByteRange::Suffix(1).resolve(0).is_err());
    }
}
