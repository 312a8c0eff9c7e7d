//! The embedded backend: [`EmbeddedStore`], registry metadata in one redb file.
//!
//! Owns: the redb database file and eight tables in it. Composite keys join
//! their parts with `"\0"`; repository names, tags and digests can never
//! contain NUL (their grammars forbid it), nor may directory kinds and keys
//! (the trait refuses them), so a key splits back unambiguously and every
//! entry of a repository sorts inside `"repo\0" .. "repo\x01"`. The entries
//! of a namespace `ns` are those two ranges: `"ns\0" .. "ns\x01"` (the
//! repository named `ns`) and `"ns/" .. "ns0"` (`'0'` is the byte after
//! `'/'`), so a namespace is counted without reading any other.
//!
//! | table               | key                     | value                      |
//! |---------------------|-------------------------|----------------------------|
//! | `blobs`             | `repo\0digest`          | blob size (`u64`)          |
//! | `manifests`         | `repo\0digest`          | JSON of [`ManifestRecord`] |
//! | `tags`              | `repo\0tag`             | digest string              |
//! | `referrers`         | `repo\0subject\0digest` | `()`                       |
//! | `repos`             | `repo`                  | `()`                       |
//! | `repo_times`        | `repo`                  | creation time (`u64`)      |
//! | `uploads`           | `upload id`             | JSON of [`UploadRecord`]   |
//! | `upload_index`      | `repo\0upload id`       | `()`: the sessions of a namespace, found by its two ranges |
//! | `directory`         | `kind\0key`             | the entry's value          |
//! | `directory_version` | `()`                    | version (`u64`), bumped in every directory write |
//! | `refresh`           | secret hash             | JSON of [`RefreshRecord`]  |
//! | `refresh_by_identity` | `identity\0created\0hash` (created zero-padded) | `()` |
//! | `tag_times`         | `repo\0tag`             | the tag's push time (`u64`) |
//! | `manifest_times`    | `repo\0digest`          | (push time, last pull time or 0 for never) |
//!
//! `tag_times`, `manifest_times` and `repo_times` hold an entry for
//! exactly the keys of `tags`, `manifests` and `repos`, written and removed
//! in the same transactions
//! (see [`crate::retention`] for what the times mean); a database written
//! before they existed has them filled in at open, with the open's time.
//!
//! Must never: block the async runtime on a write, or answer a write before
//! it is durable. redb serialises write transactions and a durable commit
//! waits on fsync, so every write runs on one writer thread, with *group
//! commit*: the writer takes every write queued at that moment, runs each in
//! its own transaction committed without fsync (`Durability::None`, so one
//! write's error rolls back only that write), then makes the whole batch
//! durable with one empty `Durability::Immediate` commit, and only then
//! answers each caller. Concurrent pushes share fsyncs instead of queueing
//! for one each. Reads use MVCC snapshots that never wait for a writer, so
//! short reads run inline; they may see a batch's writes up to one fsync
//! before those are durable (and before their callers are answered).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use async_trait::async_trait;
use redb::{
    AccessGuard, Database, Durability, ReadOnlyTable, ReadTransaction, ReadableTable,
    ReadableTableMetadata, TableDefinition, WriteTransaction,
};
use wharf_core::{Digest, RepoName, Tag, UploadId};

mod gc;
mod record;
mod refs;
mod usage;

use crate::gc::{GcStatus, Known, ReviewKind, ReviewPolicy, Verdict};
use crate::retention::{pull_due, snapshots, RepoRead};
use crate::{
    check_directory_text, check_namespace, DirectoryRecord, DirectorySnapshot, ManifestEntry,
    ManifestRecord, MetaError, MetaStore, NamespaceUsage, Pull, PurgeCounts, RefreshRecord,
    RefreshScope, RepoEntry, RepositorySnapshot, TagTimes, UploadRecord, UploadUsage, Upsert,
};

const BLOBS: TableDefinition<&str, u64> = TableDefinition::new("blobs");
const MANIFESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("manifests");
const TAGS: TableDefinition<&str, &str> = TableDefinition::new("tags");
const REFERRERS: TableDefinition<&str, ()> = TableDefinition::new("referrers");
const REPOS: TableDefinition<&str, ()> = TableDefinition::new("repos");
const UPLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads");
const UPLOAD_INDEX: TableDefinition<&str, ()> = TableDefinition::new("upload_index");
const DIRECTORY: TableDefinition<&str, &str> = TableDefinition::new("directory");
const DIRECTORY_VERSION: TableDefinition<(), u64> = TableDefinition::new("directory_version");
const REFRESH: TableDefinition<&str, &[u8]> = TableDefinition::new("refresh");
const REFRESH_BY_IDENTITY: TableDefinition<&str, ()> = TableDefinition::new("refresh_by_identity");
const TAG_TIMES: TableDefinition<&str, u64> = TableDefinition::new("tag_times");
const MANIFEST_TIMES: TableDefinition<&str, (u64, u64)> = TableDefinition::new("manifest_times");
const REPO_TIMES: TableDefinition<&str, u64> = TableDefinition::new("repo_times");

/// Separates the parts of a composite key.
const SEP: char = '\0';
/// The character right after [`SEP`]: `prefix + SEP .. prefix + END` covers
/// exactly the keys that start with `prefix + SEP`.
const END: char = '\x01';

/// Registry metadata in an embedded redb database. Cloning is cheap and every
/// clone shares the same open database.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    writer: Arc<Writer>,
}

/// A write queued for the writer thread: runs its transaction (committed
/// without fsync, or rolled back) and returns whether it committed, and how
/// to answer its caller once the batch's durable commit is known.
type Job = Box<dyn FnOnce(&Database) -> Ran + Send>;

struct Ran {
    committed: bool,
    answer: Box<dyn FnOnce(Result<(), MetaError>) + Send>,
}

/// Most writes in one group commit.
const MAX_BATCH: usize = 64;

/// The writer thread and its queue. Dropped with the last store clone: the
/// queue closes, the thread finishes what it holds and is joined, so the
/// database file is released before the drop returns (a reopen right after
/// does not find it held).
struct Writer {
    queue: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// Writes run, durable commits (fsyncs) made for them, and saves of
    /// the allocator state after a lull.
    counts: Arc<[AtomicU64; 3]>,
}

impl Writer {
    fn start(db: Arc<Database>) -> Result<Writer, MetaError> {
        let (queue, jobs) = mpsc::channel::<Job>();
        let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
        let counted = Arc::clone(&counts);
        let thread = std::thread::Builder::new()
            .name("wharf-meta-writer".into())
            .spawn(move || group_commits(&db, &jobs, &counted))
            .map_err(|e| MetaError::Internal(format!("cannot start the metadata writer: {e}")))?;
        Ok(Writer {
            queue: Some(queue),
            thread: Some(thread),
            counts,
        })
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How long the writer thread waits with nothing queued, after a durable
/// commit, before it saves redb's allocator state (see [`save_allocator`]).
const LULL: std::time::Duration = std::time::Duration::from_millis(200);

/// The writer thread's loop: a batch is every job queued when the first one
/// is taken (at most [`MAX_BATCH`]); one durable commit covers them all.
/// After a lull of [`LULL`] that follows a durable commit, the allocator
/// state is saved once, so a crash while no write is going on costs no
/// repair at the next start.
fn group_commits(db: &Database, jobs: &mpsc::Receiver<Job>, counts: &[AtomicU64; 3]) {
    // The open's own commits are not saved yet.
    let mut unsaved = true;
    loop {
        let first = if unsaved {
            match jobs.recv_timeout(LULL) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    unsaved = false;
                    let started = std::time::Instant::now();
                    match save_allocator(db) {
                        Ok(()) => {
                            counts[2].fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(
                                seconds = started.elapsed().as_secs_f64(),
                                "metadata: allocator state saved"
                            );
                        }
                        Err(e) => tracing::warn!(
                            error = %e,
                            "metadata: cannot save the allocator state; a crash now \
                             would need a full repair at the next start"
                        ),
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match jobs.recv() {
                Ok(job) => job,
                Err(_) => break,
            }
        };
        let mut batch = vec![first(db)];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job(db)),
                Err(_) => break,
            }
        }
        counts[0].fetch_add(batch.len() as u64, Ordering::Relaxed);
        let durable = if batch.iter().any(|r| r.committed) {
            counts[1].fetch_add(1, Ordering::Relaxed);
            unsaved = true;
            make_durable(db)
        } else {
            Ok(())
        };
        for ran in batch {
            (ran.answer)(durable.clone());
        }
    }
}

/// Persists every commit made without fsync so far: an empty transaction
/// committed with the default, immediate durability.
fn make_durable(db: &Database) -> Result<(), MetaError> {
    let mut txn = db.begin_write().map_err(engine)?;
    txn.set_durability(Durability::Immediate);
    txn.commit().map_err(engine)
}

/// An empty durable commit with redb's quick repair: it saves the
/// allocator state beside the commit (and commits in two phases), so that
/// if this stays the last durable commit, opening the file after a crash
/// loads that state instead of rebuilding it by reading the whole file
/// (seconds at a million manifests). Any later durable commit drops the
/// saved state again. Saving it at every commit would spare the repair
/// after a crash in the middle of writes too, but it tripled a push's time
/// at 10^5 manifests (docs/benchmarks.md, "Cost as the work grows"); once
/// per lull costs a push nothing unless it arrives during the save.
fn save_allocator(db: &Database) -> Result<(), MetaError> {
    let mut txn = db.begin_write().map_err(engine)?;
    txn.set_durability(Durability::Immediate);
    txn.set_quick_repair(true);
    txn.commit().map_err(engine)
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

/// The memory [`EmbeddedStore::open`] gives redb's page cache: the pages of
/// the file it keeps in memory, read and written. Without a size redb
/// takes 1 GiB, which a store of a few hundred thousand manifests fills, so
/// a node's resident memory would follow the content up to that; past the
/// cache, pages are read from the file (through the operating system's page
/// cache, which is not the node's and is given back under pressure).
pub const DEFAULT_CACHE_BYTES: usize = 256 * 1024 * 1024;

impl EmbeddedStore {
    /// Opens the database at `path`, creating it (and its parent directory)
    /// if needed, and makes sure every table exists, with a page cache of
    /// [`DEFAULT_CACHE_BYTES`].
    ///
    /// Synchronous: call it at start-up, before serving, or from
    /// `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, MetaError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// [`EmbeddedStore::open`] with a page cache of at most `cache_bytes`
    /// (redb splits it: nine tenths for pages read, one tenth for pages
    /// written and not yet flushed).
    pub fn open_with_cache(path: impl AsRef<Path>, cache_bytes: usize) -> Result<Self, MetaError> {
        let path = path.as_ref();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                MetaError::Unavailable(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        // After a crash redb rebuilds its allocator state by reading the
        // whole file before the node can start (about 4 s at 10^5
        // manifests, 7 s at 10^6 in the scale benchmark), unless the last
        // durable commit saved that state: the writer thread saves it after
        // every lull in the writes (`save_allocator`), so only a crash in
        // the middle of writes pays the repair, and the node says so.
        let shown = path.display().to_string();
        let opening = std::time::Instant::now();
        let repairing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = Arc::clone(&repairing);
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .set_repair_callback(move |_| {
                if !seen.swap(true, Ordering::Relaxed) {
                    tracing::warn!(path = %shown,
                        "metadata: the store was not closed cleanly (the node was killed or crashed); \
                         repairing it, which reads the whole file");
                }
            })
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => already_open(path),
                e => engine(e),
            })?;

        if repairing.load(Ordering::Relaxed) {
            tracing::warn!(
                seconds = opening.elapsed().as_secs_f64(),
                "metadata: store repaired"
            );
        }

        // Create every table up front, so read transactions can always open
        // them and never see "table does not exist".
        let txn = db.begin_write().map_err(engine)?;
        txn.open_table(BLOBS).map_err(engine)?;
        txn.open_table(MANIFESTS).map_err(engine)?;
        txn.open_table(TAGS).map_err(engine)?;
        txn.open_table(REFERRERS).map_err(engine)?;
        txn.open_table(REPOS).map_err(engine)?;
        txn.open_table(UPLOADS).map_err(engine)?;
        index_uploads(&txn)?;
        txn.open_table(REPO_TIMES).map_err(engine)?;
        txn.open_table(DIRECTORY).map_err(engine)?;
        txn.open_table(DIRECTORY_VERSION).map_err(engine)?;
        txn.open_table(REFRESH).map_err(engine)?;
        txn.open_table(REFRESH_BY_IDENTITY).map_err(engine)?;
        refs::open(&txn, path)?;
        gc::open_tables(&txn)?;
        usage::open_tables(&txn)?;
        fill_times(&txn, wharf_core::now_unix())?;
        record::check_format(&txn, path)?;
        txn.commit().map_err(engine)?;

        tracing::debug!(path = %path.display(), "opened embedded metadata store");
        let db = Arc::new(db);
        let writer = Arc::new(Writer::start(Arc::clone(&db))?);
        Ok(EmbeddedStore { db, writer })
    }

    /// Writes run so far, and the durable commits (fsyncs) that covered
    /// them: with concurrent writers, fewer commits than writes.
    pub fn write_counts(&self) -> (u64, u64) {
        let c = &self.writer.counts;
        (c[0].load(Ordering::Relaxed), c[1].load(Ordering::Relaxed))
    }

    /// Times the allocator state was saved after a lull in the writes (see
    /// [`save_allocator`]): at most once per lull, and only when something
    /// was committed since the last save.
    pub fn allocator_saves(&self) -> u64 {
        self.writer.counts[2].load(Ordering::Relaxed)
    }

    /// Runs `f` in one write transaction on the writer thread, commits it if
    /// `f` succeeds (on error nothing `f` did becomes visible), and answers
    /// once the commit is durable.
    async fn write<T, F>(&self, f: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, MetaError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<T, MetaError>>();
        let job: Job = Box::new(move |db: &Database| {
            let out = run_one(db, f);
            Ran {
                committed: out.is_ok(),
                answer: Box::new(move |durable| {
                    let _ = tx.send(out.and_then(|v| durable.map(|()| v)));
                }),
            }
        });
        self.submit(job, rx).await
    }

    /// Runs `f` in a write transaction on the writer thread and rolls it
    /// back whatever it returns: what `f` would have done, with nothing
    /// done (a dry run).
    async fn write_and_abort<T, F>(&self, f: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, MetaError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<T, MetaError>>();
        let job: Job = Box::new(move |db: &Database| {
            let out = db.begin_write().map_err(engine).and_then(|txn| {
                let out = f(&txn);
                txn.abort().map_err(engine)?;
                out
            });
            Ran {
                committed: false,
                answer: Box::new(move |_| {
                    let _ = tx.send(out);
                }),
            }
        });
        self.submit(job, rx).await
    }

    /// Queues `job` for the writer thread and waits for the answer it
    /// sends on `rx`.
    async fn submit<T>(
        &self,
        job: Job,
        rx: tokio::sync::oneshot::Receiver<Result<T, MetaError>>,
    ) -> Result<T, MetaError> {
        let queue = self
            .writer
            .queue
            .as_ref()
            .expect("the queue lives as long as the store");
        queue
            .send(job)
            .map_err(|_| MetaError::Internal("the metadata writer has stopped".into()))?;
        rx.await
            .map_err(|_| MetaError::Internal("the metadata writer dropped a write".into()))?
    }

    /// Runs `f` on a read snapshot, inline.
    fn read<T>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, MetaError>,
    ) -> Result<T, MetaError> {
        let txn = self.db.begin_read().map_err(engine)?;
        f(&txn)
    }
}

/// One write in its own transaction, committed without fsync (the batch's
/// durable commit follows) or rolled back if `f` fails.
fn run_one<T>(
    db: &Database,
    f: impl FnOnce(&WriteTransaction) -> Result<T, MetaError>,
) -> Result<T, MetaError> {
    let mut txn = db.begin_write().map_err(engine)?;
    txn.set_durability(Durability::None);
    match f(&txn) {
        Ok(out) => {
            txn.commit().map_err(engine)?;
            Ok(out)
        }
        Err(e) => {
            // Abort explicitly: the caller's error matters more than a
            // failure to roll back, so the latter is only logged.
            if let Err(abort) = txn.abort() {
                tracing::warn!(error = %abort, "aborting metadata transaction failed");
            }
            Err(e)
        }
    }
}

/// Maps any redb error: I/O trouble and a database held by another process
/// mean the store is unavailable; everything else is internal.
/// The database file is locked by another process: say who that probably
/// is and what to do, naming the data directory (the file's parent).
fn already_open(path: &Path) -> MetaError {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    MetaError::Unavailable(format!(
        "{} is already open in another process: another Wharf (or another program) \
         uses the data directory {}. Stop it first, or give this one a data directory \
         of its own (--data-dir)",
        path.display(),
        dir.display()
    ))
}

fn engine(e: impl Into<redb::Error>) -> MetaError {
    match e.into() {
        e @ (redb::Error::Io(_) | redb::Error::DatabaseAlreadyOpen) => {
            MetaError::Unavailable(e.to_string())
        }
        e => MetaError::Internal(e.to_string()),
    }
}

fn corrupt(what: &str, e: impl fmt::Display) -> MetaError {
    MetaError::Internal(format!("stored {what} is corrupt: {e}"))
}

/// `a\0b`.
fn key2(a: &str, b: &str) -> String {
    format!("{a}{SEP}{b}")
}

/// `a\0b\0c`.
fn key3(a: &str, b: &str, c: &str) -> String {
    format!("{a}{SEP}{b}{SEP}{c}")
}

/// The bounds of a page of keys under `prefix` (which ends in [`SEP`]):
/// those strictly after `prefix + last` (or all, without `last`) and before
/// the end of the prefix range. `None` when `last` is at or past the end, so
/// the caller never builds an inverted range.
fn page_bounds(prefix: &str, last: Option<&str>) -> Option<(Bound<String>, Bound<String>)> {
    // `prefix` ends in SEP; swapping it for END gives the first key past
    // every key that starts with `prefix`.
    let end = format!("{}{END}", &prefix[..prefix.len() - SEP.len_utf8()]);
    let start = match last {
        Some(last) => {
            let start = format!("{prefix}{last}");
            if start >= end {
                return None;
            }
            Bound::Excluded(start)
        }
        None => Bound::Included(prefix.to_string()),
    };
    Some((start, Bound::Excluded(end)))
}

/// Borrows owned range bounds as the `&str` keys redb compares with.
fn borrowed(bounds: &(Bound<String>, Bound<String>)) -> (Bound<&str>, Bound<&str>) {
    (
        bounds.0.as_ref().map(String::as_str),
        bounds.1.as_ref().map(String::as_str),
    )
}

/// Calls `f(repo, rest, value)` for every entry of `table` (keyed
/// `repo\0rest`) whose repository belongs to `namespace`, by two range
/// scans (see the module docs).
fn for_each_in_namespace<V: redb::Value + 'static>(
    table: &ReadOnlyTable<&'static str, V>,
    namespace: &str,
    mut f: impl FnMut(&str, &str, AccessGuard<'_, V>) -> Result<(), MetaError>,
) -> Result<(), MetaError> {
    for (start, end) in &namespace_ranges(namespace) {
        for entry in table.range(start.as_str()..end.as_str()).map_err(engine)? {
            let (k, v) = entry.map_err(engine)?;
            let (repo, rest) = k
                .value()
                .split_once(SEP)
                .ok_or_else(|| corrupt("key", format_args!("{:?} has no separator", k.value())))?;
            f(repo, rest, v)?;
        }
    }
    Ok(())
}

/// The two key ranges of `namespace` in a table keyed `repo\0…` (see the
/// module docs).
fn namespace_ranges(namespace: &str) -> [(String, String); 2] {
    [
        (key2(namespace, ""), format!("{namespace}{END}")),
        (format!("{namespace}/"), format!("{namespace}0")),
    ]
}

/// Which repositories a purge removes: a namespace's, or one repository.
#[derive(Clone, Copy)]
enum Scope<'a> {
    Namespace(&'a str),
    Repository(&'a str),
}

impl Scope<'_> {
    /// The key ranges of the scope in a table keyed `repo\0…` or by the
    /// repository name alone. The repository named `r` is `r` itself (in
    /// `repos`) and `r\0…` (everywhere else): both sort inside
    /// `r .. r\x01`.
    fn ranges(self) -> Vec<(String, String)> {
        match self {
            Scope::Namespace(ns) => vec![
                (ns.to_string(), format!("{ns}{END}")),
                (format!("{ns}/"), format!("{ns}0")),
            ],
            Scope::Repository(r) => vec![(r.to_string(), format!("{r}{END}"))],
        }
    }

    /// Whether a key of `repos` (a name alone) is in the scope: the first
    /// range of a namespace holds nothing but `ns` there, and `ns`
    /// followed by anything else (`ns-x`, `nsx`) is another namespace.
    fn owns(self, name: &str) -> bool {
        match self {
            Scope::Namespace(ns) => {
                name == ns || name.strip_prefix(ns).is_some_and(|r| r.starts_with('/'))
            }
            Scope::Repository(r) => name == r,
        }
    }
}

/// Every key of `table` (keyed `repo\0…`, or by the repository name alone)
/// whose repository is in `scope`.
fn keys_in<V: redb::Value + 'static>(
    table: &impl ReadableTable<&'static str, V>,
    scope: Scope<'_>,
) -> Result<Vec<String>, MetaError> {
    let mut keys = Vec::new();
    for (start, end) in &scope.ranges() {
        for entry in table.range(start.as_str()..end.as_str()).map_err(engine)? {
            let (k, _) = entry.map_err(engine)?;
            keys.push(k.value().to_string());
        }
    }
    Ok(keys)
}

/// Removes every key in `keys` from `table`; how many were there.
fn remove_all<V: redb::Value + 'static>(
    table: &mut redb::Table<'_, &'static str, V>,
    keys: &[String],
) -> Result<u64, MetaError> {
    let mut removed = 0;
    for key in keys {
        if table.remove(key.as_str()).map_err(engine)?.is_some() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Builds the per-repository index of upload sessions for a database
/// written before it existed (its sessions are then all unindexed): run at
/// open, a no-op once every session is indexed.
fn index_uploads(txn: &WriteTransaction) -> Result<(), MetaError> {
    let uploads = txn.open_table(UPLOADS).map_err(engine)?;
    let mut index = txn.open_table(UPLOAD_INDEX).map_err(engine)?;
    if index.len().map_err(engine)? >= uploads.len().map_err(engine)? {
        return Ok(());
    }
    for entry in uploads.iter().map_err(engine)? {
        let (k, v) = entry.map_err(engine)?;
        let record = decode_upload(v.value())?;
        index
            .insert(key2(record.repo.as_str(), k.value()).as_str(), ())
            .map_err(engine)?;
    }
    Ok(())
}

/// Gives every tag and manifest without times (a database written before
/// they existed) `now` as push time, and as pull time for manifests (see
/// [`crate::retention`]), and every repository without a creation time
/// `now` as one: run at open, a no-op once every entry has them.
fn fill_times(txn: &WriteTransaction, now: u64) -> Result<(), MetaError> {
    let tags = txn.open_table(TAGS).map_err(engine)?;
    let mut tag_times = txn.open_table(TAG_TIMES).map_err(engine)?;
    if tag_times.len().map_err(engine)? < tags.len().map_err(engine)? {
        for entry in tags.iter().map_err(engine)? {
            let (k, _) = entry.map_err(engine)?;
            if tag_times.get(k.value()).map_err(engine)?.is_none() {
                tag_times.insert(k.value(), now).map_err(engine)?;
            }
        }
    }
    let repos = txn.open_table(REPOS).map_err(engine)?;
    let mut repo_times = txn.open_table(REPO_TIMES).map_err(engine)?;
    if repo_times.len().map_err(engine)? < repos.len().map_err(engine)? {
        for entry in repos.iter().map_err(engine)? {
            let (k, _) = entry.map_err(engine)?;
            if repo_times.get(k.value()).map_err(engine)?.is_none() {
                repo_times.insert(k.value(), now).map_err(engine)?;
            }
        }
    }
    let manifests = txn.open_table(MANIFESTS).map_err(engine)?;
    let mut manifest_times = txn.open_table(MANIFEST_TIMES).map_err(engine)?;
    if manifest_times.len().map_err(engine)? < manifests.len().map_err(engine)? {
        for entry in manifests.iter().map_err(engine)? {
            let (k, _) = entry.map_err(engine)?;
            if manifest_times.get(k.value()).map_err(engine)?.is_none() {
                manifest_times
                    .insert(k.value(), (now, now))
                    .map_err(engine)?;
            }
        }
    }
    Ok(())
}

/// The keys (`repo\0tag`) of the tags of `repo` pointing at `digest`:
/// tags are keyed by name, so this scans the repository's tags.
fn tags_pointing_at(
    txn: &WriteTransaction,
    repo: &str,
    digest: &str,
) -> Result<Vec<String>, MetaError> {
    let tags = txn.open_table(TAGS).map_err(engine)?;
    let prefix = key2(repo, "");
    let end = format!("{repo}{END}");
    let mut found = Vec::new();
    for entry in tags.range(prefix.as_str()..end.as_str()).map_err(engine)? {
        let (k, v) = entry.map_err(engine)?;
        if v.value() == digest {
            found.push(k.value().to_string());
        }
    }
    Ok(found)
}

/// Whether an index of `repo` lists manifest `digest`, or a referrer of
/// `repo` names it as subject.
fn still_needed(txn: &WriteTransaction, repo: &str, digest: &str) -> Result<bool, MetaError> {
    let refs = refs::table(txn)?;
    if refs::first_under(&refs, &refs::prefix(digest, Some(repo))?)?.is_some() {
        return Ok(true);
    }
    let named_from = key3(repo, digest, "");
    let named_to = format!("{}{END}", key2(repo, digest));
    let referrers = txn.open_table(REFERRERS).map_err(engine)?;
    let named = referrers
        .range(named_from.as_str()..named_to.as_str())
        .map_err(engine)?
        .next()
        .is_some();
    Ok(named)
}

/// Removes manifest `digest` from `repo` with its tags, its referrers entry
/// and its times, and queues what it referenced for review; false if it
/// was absent. With `untagged_only`, a manifest a tag points at, an index
/// lists or a referrer names as subject is left alone (false).
fn remove_manifest(
    txn: &WriteTransaction,
    repo: &str,
    digest: &str,
    now: u64,
    untagged_only: bool,
) -> Result<bool, MetaError> {
    let doomed = tags_pointing_at(txn, repo, digest)?;
    if untagged_only && (!doomed.is_empty() || still_needed(txn, repo, digest)?) {
        return Ok(false);
    }
    let removed = txn
        .open_table(MANIFESTS)
        .map_err(engine)?
        .remove(key2(repo, digest).as_str())
        .map_err(engine)?
        .map(|v| decode_manifest(v.value()))
        .transpose()?;
    let Some(record) = removed else {
        return Ok(false);
    };
    let references: Vec<String> = record.references.iter().map(Digest::to_string).collect();
    usage::unheld(txn, repo, digest, record.size)?;
    gc::manifest_removed(txn, repo, digest, &references, now)?;

    if let Some(subject) = &record.subject {
        txn.open_table(REFERRERS)
            .map_err(engine)?
            .remove(key3(repo, &subject.to_string(), digest).as_str())
            .map_err(engine)?;
    }
    txn.open_table(MANIFEST_TIMES)
        .map_err(engine)?
        .remove(key2(repo, digest).as_str())
        .map_err(engine)?;
    let mut tags = txn.open_table(TAGS).map_err(engine)?;
    let mut tag_times = txn.open_table(TAG_TIMES).map_err(engine)?;
    for key in doomed {
        tags.remove(key.as_str()).map_err(engine)?;
        tag_times.remove(key.as_str()).map_err(engine)?;
    }
    Ok(true)
}

/// Removes everything `scope` holds in metadata (see
/// [`MetaStore::purge_namespace`]), in the caller's transaction.
fn purge(txn: &WriteTransaction, scope: Scope<'_>, now: u64) -> Result<PurgeCounts, MetaError> {
    let mut counts = PurgeCounts::default();
    // Links first, so the manifests' removal below queues no
    // review of a link that is already gone; every removed digest
    // is queued for a content review.
    let mut blobs = txn.open_table(BLOBS).map_err(engine)?;
    let doomed = keys_in(&blobs, scope)?;
    let mut removed = Vec::new();
    for key in &doomed {
        if let Some(size) = blobs.remove(key.as_str()).map_err(engine)? {
            removed.push((key.clone(), size.value()));
        }
    }
    drop(blobs);
    counts.blobs = removed.len() as u64;
    for (key, size) in removed {
        let (repo, digest) = key.split_once(SEP).unwrap_or_default();
        usage::unheld(txn, repo, digest, size)?;
        gc::unlinked(txn, repo, digest, now)?;
    }
    let mut manifests = txn.open_table(MANIFESTS).map_err(engine)?;
    let doomed = keys_in(&manifests, scope)?;
    let mut removed = Vec::new();
    for key in &doomed {
        if let Some(v) = manifests.remove(key.as_str()).map_err(engine)? {
            removed.push((key.clone(), decode_manifest(v.value())?));
        }
    }
    drop(manifests);
    counts.manifests = removed.len() as u64;
    for (key, record) in removed {
        let (repo, digest) = key.split_once(SEP).unwrap_or_default();
        let references: Vec<String> = record.references.iter().map(Digest::to_string).collect();
        usage::unheld(txn, repo, digest, record.size)?;
        gc::manifest_removed(txn, repo, digest, &references, now)?;
    }
    let mut tags = txn.open_table(TAGS).map_err(engine)?;
    let doomed = keys_in(&tags, scope)?;
    counts.tags = remove_all(&mut tags, &doomed)?;
    let mut tag_times = txn.open_table(TAG_TIMES).map_err(engine)?;
    let doomed = keys_in(&tag_times, scope)?;
    remove_all(&mut tag_times, &doomed)?;
    let mut manifest_times = txn.open_table(MANIFEST_TIMES).map_err(engine)?;
    let doomed = keys_in(&manifest_times, scope)?;
    remove_all(&mut manifest_times, &doomed)?;
    let mut referrers = txn.open_table(REFERRERS).map_err(engine)?;
    let doomed = keys_in(&referrers, scope)?;
    remove_all(&mut referrers, &doomed)?;
    let mut repos = txn.open_table(REPOS).map_err(engine)?;
    let doomed: Vec<String> = keys_in(&repos, scope)?
        .into_iter()
        .filter(|k| scope.owns(k))
        .collect();
    counts.repositories = remove_all(&mut repos, &doomed)?;
    remove_all(&mut txn.open_table(REPO_TIMES).map_err(engine)?, &doomed)?;
    let mut index = txn.open_table(UPLOAD_INDEX).map_err(engine)?;
    let indexed = keys_in(&index, scope)?;
    remove_all(&mut index, &indexed)?;
    let mut uploads = txn.open_table(UPLOADS).map_err(engine)?;
    let ids: Vec<String> = indexed
        .iter()
        .filter_map(|k| k.split_once(SEP).map(|(_, id)| id.to_string()))
        .collect();
    counts.uploads = remove_all(&mut uploads, &ids)?;
    Ok(counts)
}

fn decode_upload(bytes: &[u8]) -> Result<UploadRecord, MetaError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt("upload record", e))
}

/// Adds one to the directory version, in the caller's transaction.
fn bump_directory_version(txn: &WriteTransaction) -> Result<(), MetaError> {
    let mut table = txn.open_table(DIRECTORY_VERSION).map_err(engine)?;
    let current = table.get(()).map_err(engine)?.map_or(0, |v| v.value());
    let next = current
        .checked_add(1)
        .ok_or_else(|| corrupt("directory version", "it cannot grow any more"))?;
    table.insert((), next).map_err(engine)?;
    Ok(())
}

fn decode_manifest(bytes: &[u8]) -> Result<ManifestRecord, MetaError> {
    record::decode(bytes)
}

/// Links `digest` (of `size` bytes) into `repo`, refused under a
/// tombstone, queueing (or postponing) its link review.
fn link(
    txn: &WriteTransaction,
    repo: &str,
    digest: &str,
    size: u64,
    now: u64,
) -> Result<(), MetaError> {
    gc::refuse_if_tombstoned(txn, digest)?;
    let previous = txn
        .open_table(BLOBS)
        .map_err(engine)?
        .insert(key2(repo, digest).as_str(), size)
        .map_err(engine)?
        .map(|v| v.value());
    if previous.is_none() {
        usage::held(txn, repo, digest, size)?;
    }
    gc::linked(txn, repo, digest, now)?;
    ensure_repo(txn, repo, now)
}

/// Records repository `repo`, created at `now` unless it exists.
fn ensure_repo(txn: &WriteTransaction, repo: &str, now: u64) -> Result<(), MetaError> {
    let fresh = txn
        .open_table(REPOS)
        .map_err(engine)?
        .insert(repo, ())
        .map_err(engine)?
        .is_none();
    if fresh {
        txn.open_table(REPO_TIMES)
            .map_err(engine)?
            .insert(repo, now)
            .map_err(engine)?;
    }
    Ok(())
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, MetaError> {
    serde_json::to_vec(value).map_err(|e| MetaError::Internal(format!("cannot encode: {e}")))
}

#[async_trait]
impl MetaStore for EmbeddedStore {
    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<(), MetaError> {
        let repo = repo.to_string();
        let digest = digest.to_string();
        let now = wharf_core::now_unix();
        self.write(move |txn| link(txn, &repo, &digest, size, now))
            .await
    }

    async fn mount_blob(
        &self,
        from: &RepoName,
        to: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, MetaError> {
        let (from, to, digest) = (from.to_string(), to.to_string(), digest.to_string());
        let now = wharf_core::now_unix();
        self.write(move |txn| {
            let size = txn
                .open_table(BLOBS)
                .map_err(engine)?
                .get(key2(&from, &digest).as_str())
                .map_err(engine)?
                .map(|v| v.value());
            let Some(size) = size else {
                return Ok(None);
            };
            link(txn, &to, &digest, size, now)?;
            Ok(Some(size))
        })
        .await
    }

    async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, MetaError> {
        let key = key2(repo.as_str(), &digest.to_string());
        self.read(|txn| {
            let table = txn.open_table(BLOBS).map_err(engine)?;
            let size = table.get(key.as_str()).map_err(engine)?;
            Ok(size.map(|v| v.value()))
        })
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        let now = wharf_core::now_unix();
        self.write(move |txn| {
            let mut table = txn.open_table(BLOBS).map_err(engine)?;
            let removed = table
                .remove(key2(&repo, &digest).as_str())
                .map_err(engine)?
                .map(|v| v.value());
            drop(table);
            let Some(size) = removed else {
                return Ok(false);
            };
            usage::unheld(txn, &repo, &digest, size)?;
            gc::unlinked(txn, &repo, &digest, now)?;
            Ok(true)
        })
        .await
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        record: &ManifestRecord,
        tag: Option<&Tag>,
    ) -> Result<(), MetaError> {
        let repo = repo.to_string();
        let digest = record.digest.to_string();
        let subject = record.subject.as_ref().map(Digest::to_string);
        let bytes = record::encode(record);
        let tag = tag.map(Tag::to_string);
        let references: Vec<String> = record.references.iter().map(Digest::to_string).collect();
        let size = record.size;
        let now = wharf_core::now_unix();
        self.write(move |txn| {
            gc::refuse_if_tombstoned(txn, &digest)?;
            gc::check_held(txn, &repo, &references)?;
            let key = key2(&repo, &digest);
            let mut manifests = txn.open_table(MANIFESTS).map_err(engine)?;
            let previous = manifests
                .insert(key.as_str(), bytes.as_slice())
                .map_err(engine)?
                .map(|old| decode_manifest(old.value()))
                .transpose()?;
            drop(manifests);
            // The same digest is the same bytes, so a record stored again
            // references the same content: count and index it once.
            if previous.is_none() {
                usage::held(txn, &repo, &digest, size)?;
                gc::manifest_stored(txn, &repo, &digest, &references)?;
                txn.open_table(MANIFEST_TIMES)
                    .map_err(engine)?
                    .insert(key.as_str(), (now, 0))
                    .map_err(engine)?;
            }

            let mut referrers = txn.open_table(REFERRERS).map_err(engine)?;
            // Same digest means same bytes, so the subject cannot really
            // change; still, never leave an index entry the record disowns.
            if let Some(old_subject) = previous.and_then(|p| p.subject) {
                let old_subject = old_subject.to_string();
                if subject.as_deref() != Some(old_subject.as_str()) {
                    referrers
                        .remove(key3(&repo, &old_subject, &digest).as_str())
                        .map_err(engine)?;
                }
            }
            if let Some(subject) = &subject {
                referrers
                    .insert(key3(&repo, subject, &digest).as_str(), ())
                    .map_err(engine)?;
            }

            if let Some(tag) = &tag {
                let tag_key = key2(&repo, tag);
                let moved = txn
                    .open_table(TAGS)
                    .map_err(engine)?
                    .insert(tag_key.as_str(), digest.as_str())
                    .map_err(engine)?
                    .is_none_or(|old| old.value() != digest);
                if moved {
                    txn.open_table(TAG_TIMES)
                        .map_err(engine)?
                        .insert(tag_key.as_str(), now)
                        .map_err(engine)?;
                }
            }
            ensure_repo(txn, &repo, now)
        })
        .await
    }

    async fn get_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ManifestRecord>, MetaError> {
        let key = key2(repo.as_str(), &digest.to_string());
        self.read(|txn| {
            let table = txn.open_table(MANIFESTS).map_err(engine)?;
            let value = table.get(key.as_str()).map_err(engine)?;
            value.map(|v| decode_manifest(v.value())).transpose()
        })
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError> {
        let repo = repo.to_string();
        let digest = digest.to_string();
        let now = wharf_core::now_unix();
        self.write(move |txn| remove_manifest(txn, &repo, &digest, now, false))
            .await
    }

    async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, MetaError> {
        let key = key2(repo.as_str(), tag.as_str());
        self.read(|txn| {
            let table = txn.open_table(TAGS).map_err(engine)?;
            let value = table.get(key.as_str()).map_err(engine)?;
            value
                .map(|v| v.value().parse().map_err(|e| corrupt("tag target", e)))
                .transpose()
        })
    }

    async fn get_tagged_manifest(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<ManifestRecord>, MetaError> {
        let key = key2(repo.as_str(), tag.as_str());
        self.read(|txn| {
            let tags = txn.open_table(TAGS).map_err(engine)?;
            let Some(target) = tags.get(key.as_str()).map_err(engine)? else {
                return Ok(None);
            };
            let manifests = txn.open_table(MANIFESTS).map_err(engine)?;
            let record = manifests
                .get(key2(repo.as_str(), target.value()).as_str())
                .map_err(engine)?
                .ok_or_else(|| {
                    corrupt(
                        "tag",
                        format_args!(
                            "{repo}:{tag} points at {} which is not stored",
                            target.value()
                        ),
                    )
                })?;
            decode_manifest(record.value()).map(Some)
        })
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, MetaError> {
        let key = key2(repo.as_str(), tag.as_str());
        self.write(move |txn| {
            let mut table = txn.open_table(TAGS).map_err(engine)?;
            let removed = table.remove(key.as_str()).map_err(engine)?.is_some();
            drop(table);
            if removed {
                txn.open_table(TAG_TIMES)
                    .map_err(engine)?
                    .remove(key.as_str())
                    .map_err(engine)?;
            }
            Ok(removed)
        })
        .await
    }

    async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<String>, MetaError> {
        let prefix = key2(repo.as_str(), "");
        let Some(bounds) = page_bounds(&prefix, last) else {
            return Ok(Vec::new());
        };
        self.read(|txn| {
            let table = txn.open_table(TAGS).map_err(engine)?;
            let mut out = Vec::new();
            for entry in table
                .range::<&str>(borrowed(&bounds))
                .map_err(engine)?
                .take(n)
            {
                let (k, _) = entry.map_err(engine)?;
                // The range only holds keys starting with `prefix`.
                out.push(k.value()[prefix.len()..].to_string());
            }
            Ok(out)
        })
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<ManifestRecord>, MetaError> {
        let prefix = key3(repo.as_str(), &subject.to_string(), "");
        let bounds = page_bounds(&prefix, None).expect("without `last` a range is never empty");
        self.read(|txn| {
            let index = txn.open_table(REFERRERS).map_err(engine)?;
            let manifests = txn.open_table(MANIFESTS).map_err(engine)?;
            let mut out = Vec::new();
            // Keys end in the referrer's digest, so key order is digest order.
            for entry in index.range::<&str>(borrowed(&bounds)).map_err(engine)? {
                let (k, _) = entry.map_err(engine)?;
                let digest = &k.value()[prefix.len()..];
                let record = manifests
                    .get(key2(repo.as_str(), digest).as_str())
                    .map_err(engine)?;
                // The entry and its manifest are always written and removed
                // in the same transaction, so a dangling entry is corruption.
                let bytes = record.ok_or_else(|| {
                    corrupt(
                        "referrers index",
                        format_args!("{repo}: {digest} is indexed but not stored"),
                    )
                })?;
                out.push(decode_manifest(bytes.value())?);
            }
            Ok(out)
        })
    }

    async fn repo_exists(&self, repo: &RepoName) -> Result<bool, MetaError> {
        self.read(|txn| {
            let table = txn.open_table(REPOS).map_err(engine)?;
            Ok(table.get(repo.as_str()).map_err(engine)?.is_some())
        })
    }

    async fn list_repos(&self, last: Option<&str>, n: usize) -> Result<Vec<String>, MetaError> {
        self.read(|txn| {
            let table = txn.open_table(REPOS).map_err(engine)?;
            let start = match last {
                Some(last) => Bound::Excluded(last),
                None => Bound::Unbounded,
            };
            let mut out = Vec::new();
            for entry in table
                .range::<&str>((start, Bound::Unbounded))
                .map_err(engine)?
                .take(n)
            {
                let (k, _) = entry.map_err(engine)?;
                out.push(k.value().to_string());
            }
            Ok(out)
        })
    }

    async fn put_upload(&self, upload: &UploadRecord) -> Result<(), MetaError> {
        let id = upload.id.to_string();
        let repo = upload.repo.to_string();
        let bytes = encode(upload)?;
        self.write(move |txn| {
            let previous = txn
                .open_table(UPLOADS)
                .map_err(engine)?
                .insert(id.as_str(), bytes.as_slice())
                .map_err(engine)?
                .map(|v| decode_upload(v.value()))
                .transpose()?;
            let mut index = txn.open_table(UPLOAD_INDEX).map_err(engine)?;
            if let Some(previous) = previous.filter(|p| p.repo.as_str() != repo) {
                index
                    .remove(key2(previous.repo.as_str(), &id).as_str())
                    .map_err(engine)?;
            }
            index
                .insert(key2(&repo, &id).as_str(), ())
                .map_err(engine)?;
            Ok(())
        })
        .await
    }

    async fn get_upload(&self, id: &UploadId) -> Result<Option<UploadRecord>, MetaError> {
        self.read(|txn| {
            let table = txn.open_table(UPLOADS).map_err(engine)?;
            let value = table.get(id.as_str()).map_err(engine)?;
            value.map(|v| decode_upload(v.value())).transpose()
        })
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<(), MetaError> {
        let id = id.to_string();
        self.write(move |txn| {
            let removed = txn
                .open_table(UPLOADS)
                .map_err(engine)?
                .remove(id.as_str())
                .map_err(engine)?
                .map(|v| decode_upload(v.value()))
                .transpose()?;
            if let Some(record) = removed {
                txn.open_table(UPLOAD_INDEX)
                    .map_err(engine)?
                    .remove(key2(record.repo.as_str(), &id).as_str())
                    .map_err(engine)?;
            }
            Ok(())
        })
        .await
    }

    async fn list_uploads(&self) -> Result<Vec<UploadRecord>, MetaError> {
        self.read(|txn| {
            let table = txn.open_table(UPLOADS).map_err(engine)?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(engine)? {
                let (_, v) = entry.map_err(engine)?;
                out.push(decode_upload(v.value())?);
            }
            Ok(out)
        })
    }

    async fn set_upload_bytes(&self, id: &UploadId, bytes: u64) -> Result<(), MetaError> {
        let id = id.to_string();
        self.write(move |txn| {
            let mut table = txn.open_table(UPLOADS).map_err(engine)?;
            let current = table
                .get(id.as_str())
                .map_err(engine)?
                .map(|v| decode_upload(v.value()))
                .transpose()?;
            let Some(mut record) = current else {
                return Ok(());
            };
            if record.bytes != bytes {
                record.bytes = bytes;
                table
                    .insert(id.as_str(), encode(&record)?.as_slice())
                    .map_err(engine)?;
            }
            Ok(())
        })
        .await
    }

    async fn upload_usage(
        &self,
        namespace: &str,
        owner: Option<&str>,
    ) -> Result<UploadUsage, MetaError> {
        check_namespace(namespace)?;
        self.read(|txn| {
            let index = txn.open_table(UPLOAD_INDEX).map_err(engine)?;
            let uploads = txn.open_table(UPLOADS).map_err(engine)?;
            let mut usage = UploadUsage::default();
            for_each_in_namespace(&index, namespace, |repo, id, _| {
                // Written and removed with its record in one transaction.
                let record = uploads.get(id).map_err(engine)?.ok_or_else(|| {
                    corrupt(
                        "upload index",
                        format_args!("{repo}: session {id} is indexed but not stored"),
                    )
                })?;
                let record = decode_upload(record.value())?;
                usage.sessions += 1;
                usage.bytes = usage.bytes.saturating_add(record.bytes);
                if owner.is_some() && record.owner.as_deref() == owner {
                    usage.owned += 1;
                }
                Ok(())
            })?;
            Ok(usage)
        })
    }

    async fn namespace_usage(
        &self,
        namespace: &str,
        digest: Option<&Digest>,
    ) -> Result<NamespaceUsage, MetaError> {
        check_namespace(namespace)?;
        let asked = digest.map(Digest::to_string);
        self.read(|txn| {
            let (bytes, repositories, holds_digest) =
                usage::read(txn, namespace, asked.as_deref())?;
            Ok(NamespaceUsage {
                bytes,
                repositories,
                holds_digest,
            })
        })
    }

    async fn purge_namespace(&self, namespace: &str) -> Result<PurgeCounts, MetaError> {
        check_namespace(namespace)?;
        let namespace = namespace.to_string();
        let now = wharf_core::now_unix();
        self.write(move |txn| purge(txn, Scope::Namespace(&namespace), now))
            .await
    }

    async fn purge_repository(&self, repo: &RepoName) -> Result<PurgeCounts, MetaError> {
        let repo = repo.to_string();
        let now = wharf_core::now_unix();
        self.write(move |txn| purge(txn, Scope::Repository(&repo), now))
            .await
    }

    async fn directory_put(
        &self,
        kind: &str,
        key: &str,
        value: &str,
        create_only: bool,
    ) -> Result<bool, MetaError> {
        check_directory_text(&[kind, key, value])?;
        let key = key2(kind, key);
        let value = value.to_string();
        self.write(move |txn| {
            let mut table = txn.open_table(DIRECTORY).map_err(engine)?;
            if create_only && table.get(key.as_str()).map_err(engine)?.is_some() {
                return Ok(false);
            }
            table.insert(key.as_str(), value.as_str()).map_err(engine)?;
            bump_directory_version(txn)?;
            Ok(true)
        })
        .await
    }

    async fn directory_delete(&self, kind: &str, key: &str) -> Result<bool, MetaError> {
        check_directory_text(&[kind, key])?;
        let key = key2(kind, key);
        self.write(move |txn| {
            let mut table = txn.open_table(DIRECTORY).map_err(engine)?;
            if table.remove(key.as_str()).map_err(engine)?.is_none() {
                return Ok(false);
            }
            bump_directory_version(txn)?;
            Ok(true)
        })
        .await
    }

    async fn directory_version(&self) -> Result<u64, MetaError> {
        self.read(|txn| {
            let table = txn.open_table(DIRECTORY_VERSION).map_err(engine)?;
            Ok(table.get(()).map_err(engine)?.map_or(0, |v| v.value()))
        })
    }

    async fn directory_snapshot(&self) -> Result<DirectorySnapshot, MetaError> {
        self.read(|txn| {
            let version = txn
                .open_table(DIRECTORY_VERSION)
                .map_err(engine)?
                .get(())
                .map_err(engine)?
                .map_or(0, |v| v.value());
            let table = txn.open_table(DIRECTORY).map_err(engine)?;
            let mut records = Vec::new();
            // Kinds hold no NUL, so `kind\0key` order is kind-then-key order.
            for entry in table.iter().map_err(engine)? {
                let (k, v) = entry.map_err(engine)?;
                let (kind, key) = k.value().split_once(SEP).ok_or_else(|| {
                    corrupt(
                        "directory key",
                        format_args!("{:?} has no separator", k.value()),
                    )
                })?;
                records.push(DirectoryRecord {
                    kind: kind.to_string(),
                    key: key.to_string(),
                    value: v.value().to_string(),
                });
            }
            Ok(DirectorySnapshot { version, records })
        })
    }

    async fn refresh_put(
        &self,
        record: &RefreshRecord,
        max_per_identity: usize,
        now_unix: u64,
    ) -> Result<(), MetaError> {
        check_directory_text(&[&record.hash, &record.identity])?;
        let record = record.clone();
        let bytes = encode(&record)?;
        self.write(move |txn| {
            let mut tokens = txn.open_table(REFRESH).map_err(engine)?;
            let mut index = txn.open_table(REFRESH_BY_IDENTITY).map_err(engine)?;
            tokens
                .insert(record.hash.as_str(), bytes.as_slice())
                .map_err(engine)?;
            index
                .insert(refresh_index_key(&record).as_str(), ())
                .map_err(engine)?;
            // The identity's tokens, oldest first (the index orders them).
            let prefix = format!("{}{SEP}", record.identity);
            let bounds = page_bounds(&prefix, None).expect("a prefix without last has bounds");
            let mut live = Vec::new();
            let mut doomed = Vec::new();
            for entry in index.range::<&str>(borrowed(&bounds)).map_err(engine)? {
                let (k, _) = entry.map_err(engine)?;
                let key = k.value().to_string();
                let hash = key.rsplit(SEP).next().unwrap_or_default().to_string();
                let expired = match tokens.get(hash.as_str()).map_err(engine)? {
                    Some(v) => decode_refresh(v.value())?.expires_unix <= now_unix,
                    None => true,
                };
                if expired {
                    doomed.push((key, hash));
                } else {
                    live.push((key, hash));
                }
            }
            let excess = live.len().saturating_sub(max_per_identity.max(1));
            doomed.extend(live.into_iter().take(excess));
            for (key, hash) in doomed {
                index.remove(key.as_str()).map_err(engine)?;
                tokens.remove(hash.as_str()).map_err(engine)?;
            }
            Ok(())
        })
        .await
    }

    async fn refresh_take(&self, hash: &str) -> Result<Option<RefreshRecord>, MetaError> {
        let hash = hash.to_string();
        self.write(move |txn| {
            let mut tokens = txn.open_table(REFRESH).map_err(engine)?;
            let Some(record) = tokens
                .remove(hash.as_str())
                .map_err(engine)?
                .map(|v| decode_refresh(v.value()))
                .transpose()?
            else {
                return Ok(None);
            };
            txn.open_table(REFRESH_BY_IDENTITY)
                .map_err(engine)?
                .remove(refresh_index_key(&record).as_str())
                .map_err(engine)?;
            Ok(Some(record))
        })
        .await
    }

    async fn refresh_list(&self, tenant: &str) -> Result<Vec<RefreshRecord>, MetaError> {
        let tenant = tenant.to_string();
        self.read(move |txn| {
            let tokens = txn.open_table(REFRESH).map_err(engine)?;
            let mut out = Vec::new();
            for entry in tokens.iter().map_err(engine)? {
                let (_, v) = entry.map_err(engine)?;
                let r = decode_refresh(v.value())?;
                if r.tenant == tenant {
                    out.push(r);
                }
            }
            Ok(out)
        })
    }

    async fn refresh_revoke(&self, which: &RefreshScope) -> Result<u64, MetaError> {
        let which = which.clone();
        self.write(move |txn| remove_refresh_where(txn, |r| refresh_in_scope(r, &which)))
            .await
    }

    async fn refresh_prune(&self, now_unix: u64) -> Result<u64, MetaError> {
        self.write(move |txn| remove_refresh_where(txn, |r| r.expires_unix <= now_unix))
            .await
    }

    async fn gc_touch(
        &self,
        repo: &RepoName,
        digest: &Digest,
        now_unix: u64,
    ) -> Result<(), MetaError> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.write(move |txn| {
            gc::touch(txn, ReviewKind::Link, &digest, &repo, now_unix, true, false)
        })
        .await
    }

    async fn gc_hold(
        &self,
        digest: &Digest,
        holder: &str,
        until_unix: u64,
    ) -> Result<(), MetaError> {
        let (digest, holder) = (digest.to_string(), holder.to_string());
        self.write(move |txn| gc::hold(txn, &digest, &holder, until_unix))
            .await
    }

    async fn gc_unhold(&self, digest: &Digest, holder: &str) -> Result<(), MetaError> {
        let (digest, holder) = (digest.to_string(), holder.to_string());
        self.write(move |txn| gc::unhold(txn, &digest, &holder))
            .await
    }

    async fn gc_review(&self, policy: &ReviewPolicy) -> Result<Vec<Verdict>, MetaError> {
        let policy = policy.clone();
        if policy.dry_run {
            return self
                .write_and_abort(move |txn| gc::review(txn, &policy))
                .await;
        }
        self.write(move |txn| gc::review(txn, &policy)).await
    }

    async fn gc_release(&self, digest: &Digest, holder: &str) -> Result<bool, MetaError> {
        let (digest, holder) = (digest.to_string(), holder.to_string());
        self.write(move |txn| gc::release(txn, &digest, &holder))
            .await
    }

    async fn gc_enqueue_orphans(
        &self,
        digests: &[Digest],
        now_unix: u64,
    ) -> Result<u64, MetaError> {
        let digests: Vec<String> = digests.iter().map(Digest::to_string).collect();
        self.write(move |txn| gc::enqueue_orphans(txn, &digests, now_unix))
            .await
    }

    async fn largest_namespaces(&self, n: usize) -> Result<Vec<(String, u64)>, MetaError> {
        self.read(|txn| usage::largest(txn, n))
    }

    async fn gc_status(&self, policy: &ReviewPolicy) -> Result<GcStatus, MetaError> {
        self.read(|txn| gc::status(txn, policy))
    }

    async fn gc_known(&self, policy: &ReviewPolicy) -> Result<Known, MetaError> {
        self.read(|txn| gc::known_all(txn, policy))
    }

    async fn record_pulls(&self, pulls: &[Pull]) -> Result<u64, MetaError> {
        let last_pull = |times: (u64, u64)| (times.1 != 0).then_some(times.1);
        // In key order, so the lookups walk the tree's pages in order.
        let mut keyed: Vec<(String, u64)> = pulls
            .iter()
            .map(|p| (key2(p.repo.as_str(), &p.digest.to_string()), p.at_unix))
            .collect();
        keyed.sort_unstable();
        // Reads first, inline and never waiting for the writer: pulls of
        // manifests recorded lately queue nothing.
        let due = self.read(|txn| {
            let table = txn.open_table(MANIFEST_TIMES).map_err(engine)?;
            let mut due = Vec::new();
            for (key, at) in keyed {
                let times = table.get(key.as_str()).map_err(engine)?;
                if times.is_some_and(|t| pull_due(last_pull(t.value()), at)) {
                    due.push((key, at));
                }
            }
            Ok(due)
        })?;
        if due.is_empty() {
            return Ok(0);
        }
        // Checked again in the write: another pull may have landed since.
        self.write(move |txn| {
            let mut table = txn.open_table(MANIFEST_TIMES).map_err(engine)?;
            let mut written = 0;
            for (key, at) in &due {
                let times = table.get(key.as_str()).map_err(engine)?.map(|t| t.value());
                if let Some(t) = times.filter(|t| pull_due(last_pull(*t), *at)) {
                    table
                        .insert(key.as_str(), (t.0, (*at).max(1)))
                        .map_err(engine)?;
                    written += 1;
                }
            }
            Ok(written)
        })
        .await
    }

    async fn retention_snapshot(
        &self,
        namespace: &str,
    ) -> Result<Vec<RepositorySnapshot>, MetaError> {
        check_namespace(namespace)?;
        self.read(|txn| {
            let manifests = txn.open_table(MANIFESTS).map_err(engine)?;
            let manifest_times = txn.open_table(MANIFEST_TIMES).map_err(engine)?;
            let tags = txn.open_table(TAGS).map_err(engine)?;
            let tag_times = txn.open_table(TAG_TIMES).map_err(engine)?;
            // Per repository: its tags, and its manifests with their times.
            let mut repos: BTreeMap<String, RepoRead> = BTreeMap::new();
            for_each_in_namespace(&manifests, namespace, |repo, digest, v| {
                let record = decode_manifest(v.value())?;
                let times = manifest_times
                    .get(key2(repo, digest).as_str())
                    .map_err(engine)?
                    .map_or((0, 0), |t| t.value());
                // 0: never pulled.
                let (pushed, pulled) = (times.0, (times.1 != 0).then_some(times.1));
                repos
                    .entry(repo.to_string())
                    .or_default()
                    .1
                    .push((record, pushed, pulled));
                Ok(())
            })?;
            for_each_in_namespace(&tags, namespace, |repo, tag, v| {
                let pushed_unix = tag_times
                    .get(key2(repo, tag).as_str())
                    .map_err(engine)?
                    .map_or(0, |t| t.value());
                let entry = TagTimes {
                    tag: tag.parse().map_err(|e| corrupt("tag", e))?,
                    digest: v.value().parse().map_err(|e| corrupt("tag target", e))?,
                    pushed_unix,
                };
                repos.entry(repo.to_string()).or_default().0.push(entry);
                Ok(())
            })?;
            snapshots(repos)
        })
    }

    async fn delete_tag_at(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<bool, MetaError> {
        let key = key2(repo.as_str(), tag.as_str());
        let digest = digest.to_string();
        self.write(move |txn| {
            let mut table = txn.open_table(TAGS).map_err(engine)?;
            let points = table
                .get(key.as_str())
                .map_err(engine)?
                .is_some_and(|v| v.value() == digest);
            if !points {
                return Ok(false);
            }
            table.remove(key.as_str()).map_err(engine)?;
            txn.open_table(TAG_TIMES)
                .map_err(engine)?
                .remove(key.as_str())
                .map_err(engine)?;
            Ok(true)
        })
        .await
    }

    async fn delete_untagged_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<bool, MetaError> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        let now = wharf_core::now_unix();
        self.write(move |txn| remove_manifest(txn, &repo, &digest, now, true))
            .await
    }

    async fn namespace_repos(
        &self,
        namespace: &str,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<RepoEntry>, MetaError> {
        check_namespace(namespace)?;
        self.read(|txn| {
            let repos = txn.open_table(REPO_TIMES).map_err(engine)?;
            let scope = Scope::Namespace(namespace);
            let mut out = Vec::new();
            for (start, end) in scope.ranges() {
                let from = match last {
                    Some(l) if l >= start.as_str() => Bound::Excluded(l),
                    _ => Bound::Included(start.as_str()),
                };
                if let Bound::Excluded(l) = from {
                    if l >= end.as_str() {
                        continue;
                    }
                }
                let range = (from, Bound::Excluded(end.as_str()));
                for entry in repos.range::<&str>(range).map_err(engine)? {
                    if out.len() >= n {
                        return Ok(out);
                    }
                    let (k, v) = entry.map_err(engine)?;
                    if !scope.owns(k.value()) {
                        continue;
                    }
                    out.push(RepoEntry {
                        name: k
                            .value()
                            .parse()
                            .map_err(|e| corrupt("repository name", e))?,
                        created_unix: v.value(),
                    });
                }
            }
            Ok(out)
        })
    }

    async fn list_blob_links(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<(Digest, u64)>, MetaError> {
        let prefix = key2(repo.as_str(), "");
        let Some(bounds) = page_bounds(&prefix, last) else {
            return Ok(Vec::new());
        };
        self.read(|txn| {
            let table = txn.open_table(BLOBS).map_err(engine)?;
            let mut out = Vec::new();
            for entry in table
                .range::<&str>(borrowed(&bounds))
                .map_err(engine)?
                .take(n)
            {
                let (k, v) = entry.map_err(engine)?;
                let digest = k.value()[prefix.len()..]
                    .parse()
                    .map_err(|e| corrupt("blob digest", e))?;
                out.push((digest, v.value()));
            }
            Ok(out)
        })
    }

    async fn list_manifests(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<ManifestEntry>, MetaError> {
        let prefix = key2(repo.as_str(), "");
        let Some(bounds) = page_bounds(&prefix, last) else {
            return Ok(Vec::new());
        };
        self.read(|txn| {
            let table = txn.open_table(MANIFESTS).map_err(engine)?;
            let times = txn.open_table(MANIFEST_TIMES).map_err(engine)?;
            let mut out = Vec::new();
            for entry in table
                .range::<&str>(borrowed(&bounds))
                .map_err(engine)?
                .take(n)
            {
                let (k, v) = entry.map_err(engine)?;
                let (pushed, pulled) = times
                    .get(k.value())
                    .map_err(engine)?
                    .map_or((0, 0), |t| t.value());
                out.push(ManifestEntry {
                    record: decode_manifest(v.value())?,
                    pushed_unix: pushed,
                    last_pulled_unix: (pulled != 0).then_some(pulled),
                });
            }
            Ok(out)
        })
    }

    async fn list_tag_entries(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<TagTimes>, MetaError> {
        let prefix = key2(repo.as_str(), "");
        let Some(bounds) = page_bounds(&prefix, last) else {
            return Ok(Vec::new());
        };
        self.read(|txn| {
            let table = txn.open_table(TAGS).map_err(engine)?;
            let times = txn.open_table(TAG_TIMES).map_err(engine)?;
            let mut out = Vec::new();
            for entry in table
                .range::<&str>(borrowed(&bounds))
                .map_err(engine)?
                .take(n)
            {
                let (k, v) = entry.map_err(engine)?;
                let pushed_unix = times
                    .get(k.value())
                    .map_err(engine)?
                    .map_or(0, |t| t.value());
                out.push(TagTimes {
                    tag: k.value()[prefix.len()..]
                        .parse()
                        .map_err(|e| corrupt("tag", e))?,
                    digest: v.value().parse().map_err(|e| corrupt("tag target", e))?,
                    pushed_unix,
                });
            }
            Ok(out)
        })
    }

    async fn import_repo(&self, repo: &RepoName, created_unix: u64) -> Result<Upsert, MetaError> {
        let repo = repo.to_string();
        self.write(move |txn| {
            let existed = txn
                .open_table(REPOS)
                .map_err(engine)?
                .insert(repo.as_str(), ())
                .map_err(engine)?
                .is_some();
            let previous = txn
                .open_table(REPO_TIMES)
                .map_err(engine)?
                .insert(repo.as_str(), created_unix)
                .map_err(engine)?
                .map(|v| v.value());
            Ok(match (existed, previous) {
                (false, _) => Upsert::Created,
                (true, Some(p)) if p == created_unix => Upsert::Unchanged,
                (true, _) => Upsert::Updated,
            })
        })
        .await
    }

    async fn import_manifest(
        &self,
        repo: &RepoName,
        entry: &ManifestEntry,
    ) -> Result<Upsert, MetaError> {
        let repo = repo.to_string();
        let record = entry.record.clone();
        let bytes = record::encode(&record);
        let times = (entry.pushed_unix, entry.last_pulled_unix.unwrap_or(0));
        let now = wharf_core::now_unix();
        self.write(move |txn| {
            let digest = record.digest.to_string();
            let references: Vec<String> = record.references.iter().map(Digest::to_string).collect();
            gc::refuse_if_tombstoned(txn, &digest)?;
            gc::check_held(txn, &repo, &references)?;
            let key = key2(&repo, &digest);
            let previous = txn
                .open_table(MANIFESTS)
                .map_err(engine)?
                .insert(key.as_str(), bytes.as_slice())
                .map_err(engine)?
                .map(|old| decode_manifest(old.value()))
                .transpose()?;
            let old_times = txn
                .open_table(MANIFEST_TIMES)
                .map_err(engine)?
                .insert(key.as_str(), times)
                .map_err(engine)?
                .map(|t| t.value());
            let mut referrers = txn.open_table(REFERRERS).map_err(engine)?;
            match &previous {
                None => {
                    usage::held(txn, &repo, &digest, record.size)?;
                    gc::manifest_stored(txn, &repo, &digest, &references)?;
                }
                Some(old) if old.references != record.references => {
                    // The same digest is the same bytes: references cannot
                    // really differ; keep the index true to the record.
                    let old_refs: Vec<String> =
                        old.references.iter().map(Digest::to_string).collect();
                    gc::manifest_removed(txn, &repo, &digest, &old_refs, now)?;
                    gc::manifest_stored(txn, &repo, &digest, &references)?;
                }
                Some(_) => {}
            }
            if let Some(old_subject) = previous.as_ref().and_then(|p| p.subject.as_ref()) {
                referrers
                    .remove(key3(&repo, &old_subject.to_string(), &digest).as_str())
                    .map_err(engine)?;
            }
            if let Some(subject) = &record.subject {
                referrers
                    .insert(key3(&repo, &subject.to_string(), &digest).as_str(), ())
                    .map_err(engine)?;
            }
            drop(referrers);
            ensure_repo(txn, &repo, now)?;
            Ok(match previous {
                None => Upsert::Created,
                Some(old) if old == record && old_times == Some(times) => Upsert::Unchanged,
                Some(_) => Upsert::Updated,
            })
        })
        .await
    }

    async fn import_tag(&self, repo: &RepoName, tag: &TagTimes) -> Result<Upsert, MetaError> {
        let key = key2(repo.as_str(), tag.tag.as_str());
        let (repo, digest, pushed) = (repo.to_string(), tag.digest.to_string(), tag.pushed_unix);
        self.write(move |txn| {
            let held = txn
                .open_table(MANIFESTS)
                .map_err(engine)?
                .get(key2(&repo, &digest).as_str())
                .map_err(engine)?
                .is_some();
            if !held {
                return Err(MetaError::Missing(
                    digest.parse().map_err(|e| corrupt("digest", e))?,
                ));
            }
            let old_target = txn
                .open_table(TAGS)
                .map_err(engine)?
                .insert(key.as_str(), digest.as_str())
                .map_err(engine)?
                .map(|v| v.value().to_string());
            let old_time = txn
                .open_table(TAG_TIMES)
                .map_err(engine)?
                .insert(key.as_str(), pushed)
                .map_err(engine)?
                .map(|v| v.value());
            Ok(match old_target {
                None => Upsert::Created,
                Some(t) if t == digest && old_time == Some(pushed) => Upsert::Unchanged,
                Some(_) => Upsert::Updated,
            })
        })
        .await
    }

    async fn gc_unhold_all(&self, holder: &str, now_unix: u64) -> Result<u64, MetaError> {
        let holder = holder.to_string();
        self.write(move |txn| gc::unhold_all(txn, &holder, now_unix))
            .await
    }
}

fn refresh_index_key(r: &RefreshRecord) -> String {
    key3(&r.identity, &format!("{:020}", r.created_unix), &r.hash)
}

fn decode_refresh(bytes: &[u8]) -> Result<RefreshRecord, MetaError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt("refresh token record", e))
}

fn refresh_in_scope(r: &RefreshRecord, which: &RefreshScope) -> bool {
    match which {
        RefreshScope::Identity(id) => r.identity == *id,
        RefreshScope::Tenant(t) => r.tenant == *t,
        RefreshScope::All => true,
    }
}

/// Deletes every refresh token `doomed` picks (a scan: revocations and
/// pruning are rare, unlike puts and takes); how many.
fn remove_refresh_where(
    txn: &WriteTransaction,
    doomed: impl Fn(&RefreshRecord) -> bool,
) -> Result<u64, MetaError> {
    let mut tokens = txn.open_table(REFRESH).map_err(engine)?;
    let mut index = txn.open_table(REFRESH_BY_IDENTITY).map_err(engine)?;
    let mut picked = Vec::new();
    for entry in tokens.iter().map_err(engine)? {
        let (_, v) = entry.map_err(engine)?;
        let record = decode_refresh(v.value())?;
        if doomed(&record) {
            picked.push(record);
        }
    }
    for r in &picked {
        tokens.remove(r.hash.as_str()).map_err(engine)?;
        index
            .remove(refresh_index_key(r).as_str())
            .map_err(engine)?;
    }
    Ok(picked.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file a newer build marked with a record form this one cannot read
    /// is refused at open, naming what to do; the current form opens.
    #[tokio::test]
    async fn a_file_marked_with_a_newer_record_form_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        drop(EmbeddedStore::open(&path).unwrap());
        let mark = |form: u64| {
            let db = Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            let was = {
                let mut schema = txn.open_table(gc::SCHEMA).unwrap();
                let was = schema.insert("manifest_record_format", form).unwrap();
                was.map(|v| v.value())
            };
            txn.commit().unwrap();
            was
        };
        assert_eq!(mark(2), Some(1), "marked at open");
        let e = EmbeddedStore::open(&path).unwrap_err();
        assert!(e.to_string().contains("newer Wharf"), "{e}");
        assert_eq!(mark(1), Some(2), "the refused open changed nothing");
        EmbeddedStore::open(&path).unwrap();
    }

    /// A file whose references an earlier version wrote as text keys has
    /// them moved to the binary form at open, entry for entry, under the
    /// same table name (so that earlier version now refuses the file), and
    /// garbage collection still finds them.
    #[tokio::test]
    async fn references_written_as_text_are_moved_to_binary_keys() {
        const BINARY: TableDefinition<&[u8], ()> = TableDefinition::new("refs");
        const TEXT: TableDefinition<&str, ()> = TableDefinition::new("refs");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        let repo: RepoName = "acme/app".parse().unwrap();
        let (layer, config) = (Digest::sha256_of(b"layer"), Digest::sha256_of(b"config"));
        {
            let store = EmbeddedStore::open(&path).unwrap();
            for d in [&layer, &config] {
                store.link_blob(&repo, d, 5).await.unwrap();
            }
            let record = ManifestRecord {
                digest: Digest::sha256_of(b"manifest"),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                size: 300,
                artifact_type: None,
                annotations: None,
                subject: None,
                references: vec![config.clone(), layer.clone()],
            };
            let tag: Tag = "v1".parse().unwrap();
            store
                .put_manifest(&repo, &record, Some(&tag))
                .await
                .unwrap();
        }
        let binary_keys = || -> Vec<Vec<u8>> {
            let db = Database::open(&path).unwrap();
            let txn = db.begin_read().unwrap();
            let table = txn.open_table(BINARY).unwrap();
            let keys = table.iter().unwrap().map(|e| e.unwrap().0.value().to_vec());
            keys.collect()
        };
        let written = binary_keys();
        assert_eq!(written.len(), 2);
        // Back to what an earlier version wrote: text keys, no mark.
        {
            let db = Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.delete_table(BINARY).unwrap();
            {
                let mut text = txn.open_table(TEXT).unwrap();
                for k in &written {
                    let mut rest = k.as_slice();
                    let digest = record::take_digest(&mut rest).unwrap();
                    let r = refs::parse(k).unwrap();
                    let key = key3(&digest.to_string(), &r.repo, &r.manifest.to_string());
                    text.insert(key.as_str(), ()).unwrap();
                }
                let mut schema = txn.open_table(gc::SCHEMA).unwrap();
                assert_eq!(
                    schema.remove("refs_key_format").unwrap().unwrap().value(),
                    1
                );
            }
            txn.commit().unwrap();
        }
        let store = EmbeddedStore::open(&path).unwrap();
        let policy = ReviewPolicy {
            now_unix: wharf_core::now_unix(),
            review_delay_secs: 0,
            orphan_age_secs: 0,
            lease_secs: 60,
            holder: "test".into(),
            limit: 100,
            dry_run: true,
        };
        let held = store.gc_known(&policy).await.unwrap().held;
        assert!(held.contains(&layer) && held.contains(&config), "{held:?}");
        drop(store);
        assert_eq!(binary_keys(), written, "moved entry for entry");
        let db = Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        assert!(
            txn.open_table(TEXT).is_err(),
            "an earlier version must not read the moved table as text"
        );
        let names: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|t| redb::TableHandle::name(&t).to_string())
            .collect();
        assert!(!names.iter().any(|n| n == "refs_text"), "{names:?}");
        let schema = txn.open_table(gc::SCHEMA).unwrap();
        assert_eq!(schema.get("refs_key_format").unwrap().unwrap().value(), 1);
    }

    /// The page cache is the size asked for: 4 MiB of entries read back
    /// through a 1 MiB cache evict pages, through the default cache none.
    /// (redb counts evictions only with its `cache_metrics` feature, which
    /// the tests turn on.)
    #[tokio::test]
    async fn the_page_cache_is_bounded_by_the_size_given() {
        async fn evictions(cache_bytes: usize) -> u64 {
            let dir = tempfile::tempdir().unwrap();
            let store =
                EmbeddedStore::open_with_cache(dir.path().join("meta.redb"), cache_bytes).unwrap();
            let value = "v".repeat(200);
            store
                .write(move |txn| {
                    let mut t = txn.open_table(DIRECTORY).map_err(engine)?;
                    for i in 0..20_000 {
                        t.insert(format!("k\0{i:06}").as_str(), value.as_str())
                            .map_err(engine)?;
                    }
                    Ok(())
                })
                .await
                .unwrap();
            let before = store.db.cache_stats().evictions();
            let read = store
                .read(|txn| {
                    let t = txn.open_table(DIRECTORY).map_err(engine)?;
                    let mut n = 0;
                    for i in 0..20_000 {
                        n += usize::from(
                            t.get(format!("k\0{i:06}").as_str())
                                .map_err(engine)?
                                .is_some(),
                        );
                    }
                    Ok(n)
                })
                .unwrap();
            assert_eq!(read, 20_000);
            store.db.cache_stats().evictions() - before
        }
        assert!(
            evictions(1024 * 1024).await > 0,
            "a 1 MiB cache holds 4 MiB"
        );
        assert_eq!(evictions(DEFAULT_CACHE_BYTES).await, 0);
    }

    /// A database written before tags, manifests and repositories had times
    /// gets them at open: the open's time, as push time and as pull time,
    /// and as creation time.
    #[tokio::test]
    async fn times_are_filled_in_for_a_database_written_before_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        let record = ManifestRecord {
            digest: Digest::sha256_of(b"old"),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 3,
            artifact_type: None,
            annotations: None,
            subject: None,
            references: vec![],
        };
        {
            let store = EmbeddedStore::open(&path).unwrap();
            let (bytes, digest) = (encode(&record).unwrap(), record.digest.to_string());
            // As an older build wrote them: no times.
            store
                .write(move |txn| {
                    txn.open_table(MANIFESTS)
                        .map_err(engine)?
                        .insert(key2("acme/app", &digest).as_str(), bytes.as_slice())
                        .map_err(engine)?;
                    txn.open_table(TAGS)
                        .map_err(engine)?
                        .insert(key2("acme/app", "v1").as_str(), digest.as_str())
                        .map_err(engine)?;
                    txn.open_table(REPOS)
                        .map_err(engine)?
                        .insert("acme/app", ())
                        .map_err(engine)?;
                    txn.open_table(REPO_TIMES)
                        .map_err(engine)?
                        .remove("acme/app")
                        .map_err(engine)?;
                    Ok(())
                })
                .await
                .unwrap();
        }
        let before = wharf_core::now_unix();
        let store = EmbeddedStore::open(&path).unwrap();
        let snap = store.retention_snapshot("acme").await.unwrap();
        let (tag, manifest) = (&snap[0].tags[0], &snap[0].manifests[0]);
        assert!(tag.pushed_unix >= before, "{tag:?}");
        assert!(manifest.pushed_unix >= before, "{manifest:?}");
        assert_eq!(manifest.last_pulled_unix, Some(manifest.pushed_unix));
        let repos = store.namespace_repos("acme", None, 10).await.unwrap();
        assert_eq!(repos.len(), 1);
        assert!(repos[0].created_unix >= before, "{repos:?}");
        // Filled once: a second open changes nothing.
        drop(store);
        let store = EmbeddedStore::open(&path).unwrap();
        assert_eq!(store.retention_snapshot("acme").await.unwrap(), snap);
    }

    /// In a group commit, a write that fails is rolled back alone: the
    /// writes batched with it commit, and only its caller sees the error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_in_a_batch_rolls_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("meta.redb")).unwrap();
        let mut tasks = Vec::new();
        for i in 0..64u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .write(move |txn| {
                        let mut t = txn.open_table(BLOBS).map_err(engine)?;
                        t.insert(format!("r\0{i}").as_str(), i).map_err(engine)?;
                        if i % 8 == 0 {
                            return Err(MetaError::Internal(format!("write {i} fails")));
                        }
                        Ok(i)
                    })
                    .await
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let r = t.await.unwrap();
            if i % 8 == 0 {
                assert!(r.is_err(), "write {i} should have failed");
            } else {
                assert_eq!(r.unwrap(), i as u64);
            }
        }
        let (writes, durable) = store.write_counts();
        assert_eq!(writes, 64);
        assert!((1..=64).contains(&durable));
        store
            .read(|txn| {
                let t = txn.open_table(BLOBS).map_err(engine)?;
                for i in 0..64u64 {
                    let got = t.get(format!("r\0{i}").as_str()).map_err(engine)?;
                    assert_eq!(got.map(|v| v.value()), (i % 8 != 0).then_some(i), "key {i}");
                }
                Ok(())
            })
            .unwrap();
    }
}
