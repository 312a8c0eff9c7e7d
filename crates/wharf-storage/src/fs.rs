//! The filesystem backend: blobs as files under one root directory.
//!
//! Owns: the on-disk layout below `root`, which is
//!
//! ```text
//! blobs/<algorithm>/<first two hex>/<hex>   verified, durable blobs
//! uploads/<upload id>                       bytes of open upload sessions
//! tmp/                                      small puts being written
//! ```
//!
//! and the in-memory hash state of open uploads, so that committing an
//! upload does not read its bytes back: they are hashed as they arrive. That
//! state is only a cache; after a restart it is rebuilt by hashing the upload
//! file once, on the session's next use.
//!
//! Must never: make a blob visible before its bytes are verified and
//! fsynced. Every blob reaches its final name by `rename` of a complete,
//! fsynced file, followed by an fsync of the directory, so `kill -9` (or a
//! power cut) at any moment leaves either the whole blob or nothing. Must
//! never block an async worker on disk I/O either: all file work runs on the
//! blocking pool in large pieces (1 MiB read or written; past the first
//! piece, blob reads map 4 MiB windows and fault them in there), so a slow
//! disk costs blocking threads, not the event loop; the one exception is a
//! small read the kernel answers from its caches without waiting, or
//! refuses ([`read_if_cached`]). Paths are built only from parsed digests and
//! upload ids, whose grammars exclude `/` and `..`, so no request can name a
//! file outside `root`.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use wharf_core::{Algorithm, Digest, Hasher, UploadId};

use crate::{BlobStore, ByteStream, StorageError};

/// Size of the pieces in which bytes are read from and written to disk.
const CHUNK: usize = 1 << 20;

/// A [`BlobStore`] on a local filesystem.
#[derive(Clone)]
pub struct FsStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    /// Hash state of upload sessions touched since start-up. One async mutex
    /// per session serialises its appends and its commit.
    uploads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<UploadState>>>>,
}

/// What we know about one upload session's file.
struct UploadState {
    /// Set once the session was committed or cancelled: a task that was
    /// waiting for the lock must then report the session as gone.
    gone: bool,
    /// Bytes in the file, and the sha256 of exactly those bytes. `None`
    /// when unknown (after a restart, or after a failed write): the next
    /// use re-reads the file to rebuild it.
    known: Option<(u64, Hasher)>,
}

impl FsStore {
    /// Opens (creating if needed) a store rooted at `root`. Leftovers of
    /// interrupted small puts in `tmp/` are removed; open uploads are kept so
    /// that clients can resume them.
    pub async fn open(root: impl AsRef<Path>) -> Result<FsStore, StorageError> {
        let root = root.as_ref().to_path_buf();
        let inner = Arc::new(Inner {
            root,
            uploads: Mutex::new(HashMap::new()),
        });
        let setup = inner.clone();
        blocking(move || {
            for dir in ["blobs", "uploads", "tmp"] {
                fs::create_dir_all(setup.root.join(dir))?;
            }
            for entry in fs::read_dir(setup.root.join("tmp"))? {
                let _ = fs::remove_file(entry?.path());
            }
            Ok(())
        })
        .await?;
        Ok(FsStore { inner })
    }

    /// The directory this store keeps its files in.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    fn upload_state(&self, id: &UploadId) -> Arc<tokio::sync::Mutex<UploadState>> {
        let mut map = self.inner.uploads.lock().expect("upload map poisoned");
        map.entry(id.as_str().to_owned())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(UploadState {
                    gone: false,
                    known: None,
                }))
            })
            .clone()
    }

    fn forget_upload(&self, id: &UploadId) {
        self.inner
            .uploads
            .lock()
            .expect("upload map poisoned")
            .remove(id.as_str());
    }
}

impl Inner {
    fn blob_dir(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(&digest.hex()[..2])
    }

    /// `blob_dir` joined with the hex, built in one allocation: it is on
    /// every pull's path.
    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let (algorithm, hex) = (digest.algorithm().as_str(), digest.hex());
        let root = self.root.as_os_str();
        let mut path = std::ffi::OsString::with_capacity(root.len() + 16 + hex.len());
        path.push(root);
        for part in ["/blobs/", algorithm, "/", &hex[..2], "/", hex] {
            path.push(part);
        }
        PathBuf::from(path)
    }

    fn upload_path(&self, id: &UploadId) -> PathBuf {
        self.root.join("uploads").join(id.as_str())
    }

    /// Moves the complete, fsynced file `from` to the blob's final name and
    /// makes the rename itself durable.
    fn publish(&self, from: &Path, digest: &Digest) -> io::Result<()> {
        let dir = self.blob_dir(digest);
        fs::create_dir_all(&dir)?;
        fs::rename(from, dir.join(digest.hex()))?;
        sync_dir(&dir)
    }
}

/// Makes the entries of `dir` (a rename or an unlink in it) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Opens `path` (resolved as `resolve` allows) and reads its start into
/// `buf` from the page cache only (`RWF_NOWAIT`: `EAGAIN` rather than a
/// wait for the disk).
fn read_nowait(
    path: &Path,
    resolve: rustix::fs::ResolveFlags,
    buf: &mut [u8],
) -> rustix::io::Result<usize> {
    use rustix::fs::{Mode, OFlags, CWD};
    let fd = rustix::fs::openat2(
        CWD,
        path,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        resolve,
    )?;
    rustix::io::preadv2(
        &fd,
        &mut [io::IoSliceMut::new(buf)],
        0,
        rustix::io::ReadWriteFlags::NOWAIT,
    )
}

/// Whether this kernel, its seccomp filter and the filesystem of `file`
/// let [`read_if_cached`] work at all (`openat2`, and `preadv2` with
/// `RWF_NOWAIT`): tests of it say so rather than fail where it cannot.
#[doc(hidden)]
pub fn cached_reads_supported(file: &Path) -> bool {
    match read_nowait(file, rustix::fs::ResolveFlags::empty(), &mut [0u8; 1]) {
        Ok(_) => true,
        Err(e) => e == rustix::io::Errno::AGAIN,
    }
}

/// The largest content [`read_if_cached`] is tried for.
const CACHED_READ_MAX: u64 = 256 * 1024;

/// The whole file `path` of `size` bytes if the kernel can hand it over
/// from its caches without waiting for a disk: the path resolved from the
/// directory-entry cache alone (`openat2` with `RESOLVE_CACHED`) and every
/// byte read from the page cache (`preadv2` with `RWF_NOWAIT`). `None`
/// otherwise (anything not cached, a short read, an error, an older kernel),
/// and the caller reads on the blocking pool as before: the one read done on
/// an async worker, because a manifest read from memory costs less than the
/// trip to the blocking pool (a wake-up and two context switches) and can
/// never wait on a slow disk.
#[doc(hidden)]
pub fn read_if_cached(path: &Path, size: u64) -> Option<Bytes> {
    // One byte more than expected: a file longer than its record is read
    // by the slow path, which reads it all.
    let mut buf = vec![0u8; size as usize + 1];
    let n = read_nowait(path, rustix::fs::ResolveFlags::CACHED, &mut buf).ok()?;
    if n as u64 != size {
        return None;
    }
    buf.truncate(n);
    Some(Bytes::from(buf))
}

/// Runs file work on the blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, StorageError>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(StorageError::from),
        Err(e) => Err(StorageError::Io(io::Error::other(e))),
    }
}

fn not_found_as(e: io::Error, what: StorageError) -> StorageError {
    if e.kind() == io::ErrorKind::NotFound {
        what
    } else {
        StorageError::Io(e)
    }
}

/// Hashes the file at `path` with `algorithm`, returning its length too.
fn hash_file(path: &Path, algorithm: Algorithm) -> io::Result<(u64, Hasher)> {
    let mut file = File::open(path)?;
    let mut hasher = Hasher::new(algorithm);
    let mut buf = vec![0u8; CHUNK];
    let mut len = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, hasher))
}

/// Reads up to `len` bytes from `file` (fewer only at end of file), into
/// a buffer that is not zeroed first: on the pull path every pass over
/// memory counts, and a zeroing pass is pure waste before a read fills it.
fn read_piece(file: &mut File, len: usize) -> io::Result<Bytes> {
    let mut buf = Vec::with_capacity(len);
    file.take(len as u64).read_to_end(&mut buf)?;
    Ok(Bytes::from(buf))
}

/// Size of the windows in which the rest of a large blob is mapped.
const MAP_WINDOW: usize = 4 << 20;

/// Maps `len` bytes of `file` from `offset` (pages faulted in here, on the
/// blocking pool, so the socket write that follows never waits on the
/// disk). The bytes then go from the page cache to the socket in one copy
/// instead of two (no copy into a buffer of ours first), and the mapping is
/// released as soon as the piece is sent, so resident memory stays bounded
/// by the pieces in flight whatever the blob's size.
#[allow(unsafe_code)]
fn map_piece(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    // SAFETY: a mapping is undefined behaviour only if the file changes
    // under it. Blob files are immutable: they reach their final name by
    // rename of a complete, fsynced file and are never written, truncated
    // or reused afterwards (a delete unlinks the name; the mapping keeps the
    // old inode alive). Nothing else in Wharf opens them for writing.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(len)
            .populate()
            .map(file)?
    };
    Ok(Bytes::from_owner(map))
}

#[async_trait]
impl BlobStore for FsStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        let path = self.inner.blob_path(digest);
        match blocking(move || fs::metadata(path)).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(StorageError::Io(e)) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn read_small(&self, digest: &Digest, size: u64) -> Result<Bytes, StorageError> {
        let path = self.inner.blob_path(digest);
        if size <= CACHED_READ_MAX {
            if let Some(bytes) = read_if_cached(&path, size) {
                return Ok(bytes);
            }
        }
        blocking(move || {
            let mut file = File::open(path)?;
            let mut buf = Vec::with_capacity(size.min(crate::SMALL_READ_MAX) as usize);
            file.read_to_end(&mut buf)?;
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(|e| match e {
            StorageError::Io(e) => not_found_as(e, StorageError::NotFound),
            other => other,
        })
    }

    async fn get(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, StorageError> {
        let path = self.inner.blob_path(digest);
        // Open, seek and read the first piece in one trip to the blocking
        // pool: most blobs (configs, small layers) are then served whole.
        let opened = blocking(move || {
            let mut file = File::open(path)?;
            let end = match &range {
                Some(r) => r.end,
                None => file.metadata()?.len(),
            };
            let start = range.map_or(0, |r| r.start);
            if start > 0 {
                file.seek(SeekFrom::Start(start))?;
            }
            let want = (end.saturating_sub(start)).min(CHUNK as u64) as usize;
            let first = read_piece(&mut file, want)?;
            let pos = start + first.len() as u64;
            Ok((file, first, pos, end))
        })
        .await
        .map_err(|e| match e {
            StorageError::Io(e) => not_found_as(e, StorageError::NotFound),
            other => other,
        })?;

        let (file, first, pos, end) = opened;
        if pos >= end || first.is_empty() {
            return Ok(futures_util::stream::iter([Ok(first)]).boxed());
        }
        // The rest, one piece per trip, only as fast as the client takes it.
        let rest = futures_util::stream::unfold(Some((file, pos)), move |state| async move {
            let (file, pos) = state?;
            if pos >= end {
                return None;
            }
            let want = (end - pos).min(MAP_WINDOW as u64) as usize;
            let read = tokio::task::spawn_blocking(move || {
                let piece = map_piece(&file, pos, want);
                (file, piece)
            })
            .await;
            match read {
                Ok((file, Ok(piece))) if !piece.is_empty() => {
                    let next = pos + piece.len() as u64;
                    Some((Ok(piece), Some((file, next))))
                }
                Ok((_, Ok(_))) => Some((
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "blob file is shorter than expected",
                    )),
                    None,
                )),
                Ok((_, Err(e))) => Some((Err(e), None)),
                Err(e) => Some((Err(io::Error::other(e)), None)),
            }
        });
        Ok(futures_util::stream::iter([Ok(first)]).chain(rest).boxed())
    }

    async fn put(&self, digest: &Digest, bytes: Bytes) -> Result<(), StorageError> {
        let inner = self.inner.clone();
        let expected = digest.clone();
        let digest = digest.clone();
        blocking(move || {
            let actual = Digest::of(digest.algorithm(), &bytes);
            if actual != digest {
                return Err(io::Error::other(MismatchMarker(actual)));
            }
            let final_path = inner.blob_path(&digest);
            if final_path.exists() {
                return Ok(());
            }
            let tmp = inner
                .root
                .join("tmp")
                .join(format!("{}-{}", digest.hex(), uuid_like()));
            let result = (|| {
                let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
                file.write_all(&bytes)?;
                file.sync_all()?;
                inner.publish(&tmp, &digest)
            })();
            if result.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            result
        })
        .await
        .map_err(|e| match e {
            StorageError::Io(e) => match MismatchMarker::take(e, expected) {
                Ok(mismatch) => mismatch,
                Err(e) => StorageError::Io(e),
            },
            other => other,
        })
    }

    async fn delete(&self, digest: &Digest) -> Result<(), StorageError> {
        let inner = self.inner.clone();
        let digest = digest.clone();
        blocking(move || {
            fs::remove_file(inner.blob_path(&digest))?;
            sync_dir(&inner.blob_dir(&digest))
        })
        .await
        .map_err(|e| match e {
            StorageError::Io(e) => not_found_as(e, StorageError::NotFound),
            other => other,
        })
    }

    async fn list(&self) -> Result<Vec<Digest>, StorageError> {
        let root = self.inner.root.join("blobs");
        blocking(move || {
            let mut out = Vec::new();
            for alg in fs::read_dir(&root)? {
                let alg = alg?;
                let alg_name = alg.file_name().to_string_lossy().into_owned();
                for prefix in fs::read_dir(alg.path())? {
                    for blob in fs::read_dir(prefix?.path())? {
                        let name = blob?.file_name().to_string_lossy().into_owned();
                        if let Ok(d) = format!("{alg_name}:{name}").parse::<Digest>() {
                            out.push(d);
                        }
                    }
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn upload_start(&self, id: &UploadId) -> Result<(), StorageError> {
        let path = self.inner.upload_path(id);
        blocking(move || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map(drop)
        })
        .await?;
        let state = self.upload_state(id);
        let mut state = state.lock().await;
        *state = UploadState {
            gone: false,
            known: Some((0, Hasher::new(Algorithm::Sha256))),
        };
        Ok(())
    }

    async fn upload_size(&self, id: &UploadId) -> Result<u64, StorageError> {
        let state = self.upload_state(id);
        let state = state.lock().await;
        if state.gone {
            return Err(StorageError::NotFound);
        }
        if let Some((size, _)) = &state.known {
            return Ok(*size);
        }
        let path = self.inner.upload_path(id);
        match blocking(move || fs::metadata(path)).await {
            Ok(meta) => Ok(meta.len()),
            Err(StorageError::Io(e)) => {
                drop(state);
                let e = not_found_as(e, StorageError::NotFound);
                if matches!(e, StorageError::NotFound) {
                    self.forget_upload(id);
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    async fn upload_append(
        &self,
        id: &UploadId,
        offset: u64,
        mut body: ByteStream,
    ) -> Result<u64, StorageError> {
        let cell = self.upload_state(id);
        let mut state = cell.lock().await;
        if state.gone {
            return Err(StorageError::NotFound);
        }
        let path = self.inner.upload_path(id);
        let (size, hasher) = match state.known.take() {
            Some(known) => known,
            None => {
                let p = path.clone();
                blocking(move || hash_file(&p, Algorithm::Sha256))
                    .await
                    .map_err(|e| match e {
                        StorageError::Io(e) => not_found_as(e, StorageError::NotFound),
                        other => other,
                    })?
            }
        };
        if offset != size {
            state.known = Some((size, hasher));
            return Err(StorageError::OffsetMismatch { size });
        }

        let file = blocking(move || OpenOptions::new().append(true).open(path))
            .await
            .map_err(|e| match e {
                StorageError::Io(e) => not_found_as(e, StorageError::NotFound),
                other => other,
            })?;

        // Gather the body into 1 MiB pieces; each piece is hashed and written
        // on the blocking pool, never on the event loop.
        let mut writer = Some((file, hasher));
        let mut size = size;
        let mut pending = BytesMut::new();
        let mut body_error = None;
        loop {
            let next = body.next().await;
            let done = match next {
                Some(Ok(chunk)) => {
                    pending.extend_from_slice(&chunk);
                    false
                }
                Some(Err(e)) => {
                    body_error = Some(e.to_string());
                    true
                }
                None => true,
            };
            if pending.len() >= CHUNK || (done && !pending.is_empty()) {
                let piece = pending.split().freeze();
                let (mut file, mut hasher) = writer.take().expect("writer is returned");
                let written = tokio::task::spawn_blocking(move || {
                    let result = file.write_all(&piece);
                    if result.is_ok() {
                        hasher.update(&piece);
                    }
                    (file, hasher, result, piece.len())
                })
                .await;
                match written {
                    Ok((file, hasher, Ok(()), n)) => {
                        size += n as u64;
                        writer = Some((file, hasher));
                    }
                    // A failed write may have written part of the piece:
                    // forget the hash state so the next use re-reads the file.
                    Ok((_, _, Err(e), _)) => return Err(StorageError::Io(e)),
                    Err(e) => return Err(StorageError::Io(io::Error::other(e))),
                }
            }
            if done {
                break;
            }
        }
        let (_, hasher) = writer.take().expect("writer is returned");
        state.known = Some((size, hasher));
        match body_error {
            Some(e) => Err(StorageError::Body(e)),
            None => Ok(size),
        }
    }

    async fn upload_commit(&self, id: &UploadId, digest: &Digest) -> Result<u64, StorageError> {
        let cell = self.upload_state(id);
        let mut state = cell.lock().await;
        if state.gone {
            return Err(StorageError::NotFound);
        }
        let inner = self.inner.clone();
        let path = inner.upload_path(id);
        let known = state
            .known
            .take()
            .filter(|(_, h)| h.algorithm() == digest.algorithm());
        let wanted = digest.clone();
        let outcome = blocking(move || {
            let (size, hasher) = match known {
                Some(known) => known,
                None => hash_file(&path, wanted.algorithm())?,
            };
            let actual = hasher.finish();
            if actual != wanted {
                fs::remove_file(&path)?;
                return Ok(Err((actual, wanted)));
            }
            File::open(&path)?.sync_all()?;
            inner.publish(&path, &wanted)?;
            Ok(Ok(size))
        })
        .await;
        match outcome {
            Ok(Ok(size)) => {
                state.gone = true;
                drop(state);
                self.forget_upload(id);
                Ok(size)
            }
            Ok(Err((actual, expected))) => {
                state.gone = true;
                drop(state);
                self.forget_upload(id);
                Err(StorageError::DigestMismatch { expected, actual })
            }
            Err(StorageError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                state.gone = true;
                drop(state);
                self.forget_upload(id);
                Err(StorageError::NotFound)
            }
            Err(e) => Err(e),
        }
    }

    async fn upload_cancel(&self, id: &UploadId) -> Result<(), StorageError> {
        let cell = self.upload_state(id);
        let mut state = cell.lock().await;
        let was_gone = state.gone;
        state.gone = true;
        drop(state);
        self.forget_upload(id);
        if was_gone {
            return Err(StorageError::NotFound);
        }
        let path = self.inner.upload_path(id);
        blocking(move || fs::remove_file(path))
            .await
            .map_err(|e| match e {
                StorageError::Io(e) => not_found_as(e, StorageError::NotFound),
                other => other,
            })
    }

    async fn upload_list(&self) -> Result<Vec<UploadId>, StorageError> {
        let dir = self.inner.root.join("uploads");
        blocking(move || {
            let mut out = Vec::new();
            for entry in fs::read_dir(dir)? {
                let name = entry?.file_name().to_string_lossy().into_owned();
                if let Ok(id) = name.parse::<UploadId>() {
                    out.push(id);
                }
            }
            out.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            Ok(out)
        })
        .await
    }
}

/// Carries a digest mismatch out of a blocking closure through `io::Error`.
#[derive(Debug)]
struct MismatchMarker(Digest);

impl std::fmt::Display for MismatchMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "content hashes to {}", self.0)
    }
}

impl std::error::Error for MismatchMarker {}

impl MismatchMarker {
    fn take(e: io::Error, expected: Digest) -> Result<StorageError, io::Error> {
        if e.get_ref()
            .is_some_and(|inner| inner.is::<MismatchMarker>())
        {
            let marker = e
                .into_inner()
                .and_then(|b| b.downcast::<MismatchMarker>().ok())
                .expect("checked above");
            Ok(StorageError::DigestMismatch {
                expected,
                actual: marker.0,
            })
        } else {
            Err(e)
        }
    }
}

/// A name part unique enough for temporary files of one process.
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-allocation path is the joined one, with or without a
    /// trailing slash on the root, for both algorithms.
    #[test]
    fn a_blob_path_is_its_directory_joined_with_the_hex() {
        for root in ["/srv/wharf", "/srv/wharf/", "relative/dir"] {
            let inner = Inner {
                root: PathBuf::from(root),
                uploads: Mutex::default(),
            };
            for d in [
                Digest::sha256_of(b"x"),
                Digest::of(wharf_core::Algorithm::Sha512, b"x"),
            ] {
                assert_eq!(inner.blob_path(&d), inner.blob_dir(&d).join(d.hex()));
            }
        }
    }
}
