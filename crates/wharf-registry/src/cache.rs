//! Bounded in-memory caches of content bytes: manifests, keyed by
//! repository and digest, and small blobs, keyed by digest. Content
//! addressed by digest never changes, so an entry is valid until its
//! manifest is deleted (blobs: for ever; whether a repository may read a
//! blob is decided by its link, not here); the only policy needed is a byte
//! budget.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;

use bytes::Bytes;
use wharf_core::{Digest, RepoName};

/// A cached manifest: what a `GET` needs to answer without I/O.
#[derive(Clone, Debug)]
pub(crate) struct Cached {
    pub media_type: String,
    pub bytes: Bytes,
}

/// What a value or a key weighs against the budget: the memory it holds,
/// its own size and the heap it points to.
///
/// First-in, first-out eviction under a byte budget: simple, and manifests
/// are small enough that a hot set fits comfortably. The budget bounds the
/// memory the cache takes, not only the content bytes it holds: an entry
/// also holds its key twice (the map and the eviction order), the map's
/// slot, and the headers of its buffers. Counting the content alone let a
/// 64 MiB manifest cache take about 143 MiB with 1 KiB manifests (the scale
/// benchmark in docs/benchmarks.md); the estimate below is on the generous
/// side of the allocator's real cost.
pub(crate) trait Weighed {
    fn weight(&self) -> usize;
}

/// What the allocator takes for `len` bytes of heap: a header, rounded up
/// to 16 bytes (nothing for an empty buffer).
fn heap(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        (len + 16).next_multiple_of(16)
    }
}

/// The shared header a frozen `Bytes` points to besides its buffer.
const BYTES_SHARED: usize = 48;

impl Weighed for Cached {
    fn weight(&self) -> usize {
        std::mem::size_of::<Cached>()
            + heap(self.media_type.len())
            + BYTES_SHARED
            + heap(self.bytes.len())
    }
}

impl Weighed for Bytes {
    fn weight(&self) -> usize {
        std::mem::size_of::<Bytes>() + BYTES_SHARED + heap(self.len())
    }
}

impl Weighed for Digest {
    fn weight(&self) -> usize {
        std::mem::size_of::<Digest>() + heap(self.hex().len())
    }
}

impl Weighed for (RepoName, Digest) {
    fn weight(&self) -> usize {
        std::mem::size_of::<RepoName>() + heap(self.0.as_str().len()) + self.1.weight()
    }
}

/// What one entry costs: its value, its key twice (the map and the
/// eviction order) and the map's bookkeeping for the slot.
fn cost<K: Weighed, V: Weighed>(key: &K, value: &V) -> usize {
    value.weight() + 2 * key.weight() + 16
}

/// Manifests by repository and digest.
pub(crate) type ManifestCache = ByteCache<(RepoName, Digest), Cached>;
/// Small blobs by digest.
pub(crate) type BlobCache = ByteCache<Digest, Bytes>;

/// Entries of type `V` by `K`, oldest evicted first past a byte budget.
pub(crate) struct ByteCache<K, V> {
    /// Most bytes held at once; 0 disables caching.
    budget: usize,
    inner: Mutex<State<K, V>>,
}

struct State<K, V> {
    /// Entries by key, each with what it costs the budget.
    map: HashMap<K, (V, usize)>,
    /// Insertion order, for eviction.
    order: VecDeque<K>,
    /// Bytes currently held.
    used: usize,
}

impl<K: Hash + Eq + Clone + Weighed, V: Weighed + Clone> ByteCache<K, V> {
    pub fn with_budget(budget: usize) -> Self {
        ByteCache {
            budget,
            inner: Mutex::new(State {
                map: HashMap::new(),
                order: VecDeque::new(),
                used: 0,
            }),
        }
    }

    pub fn get_key(&self, key: &K) -> Option<V> {
        if self.budget == 0 {
            return None;
        }
        let state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        state.map.get(key).map(|(v, _)| v.clone())
    }

    pub fn insert_key(&self, key: K, entry: V) {
        let size = cost(&key, &entry);
        if size > self.budget {
            return;
        }
        let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if state.map.contains_key(&key) {
            return;
        }
        while state.used + size > self.budget {
            let Some(old) = state.order.pop_front() else {
                break;
            };
            if let Some((_, cost)) = state.map.remove(&old) {
                state.used -= cost;
            }
        }
        state.used += size;
        state.order.push_back(key.clone());
        state.map.insert(key, (entry, size));
    }

    pub fn remove_key(&self, key: &K) {
        let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, cost)) = state.map.remove(key) {
            state.used -= cost;
            state.order.retain(|k| k != key);
        }
    }

    /// Bytes held against the budget, and entries.
    pub fn usage(&self) -> (usize, usize) {
        let state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (state.used, state.map.len())
    }

    /// The budget in bytes.
    pub fn budget(&self) -> usize {
        self.budget
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap().map.len()
    }
}

impl ManifestCache {
    pub fn new(budget: usize) -> Self {
        ByteCache::with_budget(budget)
    }

    pub fn get(&self, repo: &RepoName, digest: &Digest) -> Option<Cached> {
        self.get_key(&(repo.clone(), digest.clone()))
    }

    pub fn insert(&self, repo: &RepoName, digest: &Digest, entry: Cached) {
        self.insert_key((repo.clone(), digest.clone()), entry)
    }

    pub fn remove(&self, repo: &RepoName, digest: &Digest) {
        self.remove_key(&(repo.clone(), digest.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: usize) -> Cached {
        Cached {
            media_type: "x".into(),
            bytes: Bytes::from(vec![0u8; n]),
        }
    }

    /// What one manifest entry of `n` content bytes costs, under `r`.
    fn manifest_cost(r: &RepoName, n: usize) -> usize {
        cost(&(r.clone(), Digest::sha256_of(b"any")), &entry(n))
    }

    #[test]
    fn evicts_oldest_past_budget() {
        let r: RepoName = "a".parse().unwrap();
        // Room for one 6-byte entry and a half.
        let c = ManifestCache::new(manifest_cost(&r, 6) * 3 / 2);
        let d1 = Digest::sha256_of(b"1");
        let d2 = Digest::sha256_of(b"2");
        c.insert(&r, &d1, entry(6));
        c.insert(&r, &d2, entry(6));
        assert!(c.get(&r, &d1).is_none());
        assert!(c.get(&r, &d2).is_some());
        c.remove(&r, &d2);
        assert!(c.get(&r, &d2).is_none());
        c.insert(&r, &d1, entry(manifest_cost(&r, 6)));
        assert!(c.get(&r, &d1).is_none(), "larger than budget is never held");
    }

    #[test]
    fn blob_cache_holds_small_blobs_within_its_budget() {
        let d1 = Digest::sha256_of(b"1");
        let d2 = Digest::sha256_of(b"2");
        let one = cost(&d1, &Bytes::from_static(b"12345"));
        let c = BlobCache::with_budget(one * 3 / 2);
        c.insert_key(d1.clone(), Bytes::from_static(b"12345"));
        assert_eq!(c.get_key(&d1).as_deref(), Some(&b"12345"[..]));
        c.insert_key(d2.clone(), Bytes::from_static(b"6789"));
        assert!(c.get_key(&d1).is_none(), "evicted past the budget");
        assert!(c.get_key(&d2).is_some());
        let off = BlobCache::with_budget(0);
        off.insert_key(d1.clone(), Bytes::new());
        assert!(off.get_key(&d1).is_none(), "a zero budget holds nothing");
    }

    /// The budget counts what an entry holds besides its content: 100-byte
    /// manifests in a 64 KiB cache are far fewer than 64 KiB / 100.
    #[test]
    fn the_budget_counts_keys_and_headers_too() {
        let r: RepoName = "acme/app".parse().unwrap();
        let budget = 64 * 1024;
        let c = ManifestCache::new(budget);
        for i in 0..2_000u32 {
            c.insert(&r, &Digest::sha256_of(&i.to_be_bytes()), entry(100));
        }
        let per_entry = manifest_cost(&r, 100);
        assert!(
            per_entry > 100 + 2 * 64,
            "{per_entry}: the key twice and more"
        );
        assert_eq!(c.len(), budget / per_entry);
        assert!(c.len() < budget / 300, "{} entries", c.len());
    }

    #[test]
    fn keyed_by_repository() {
        let c = ManifestCache::new(100_000);
        let d = Digest::sha256_of(b"1");
        c.insert(&"a".parse().unwrap(), &d, entry(1));
        assert!(c.get(&"b".parse().unwrap(), &d).is_none());
    }
}
