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

/// First-in, first-out eviction under a byte budget: simple, and manifests
/// are small enough that a hot set fits comfortably.
/// What an entry weighs against the budget.
pub(crate) trait Weighed: Clone {
    fn weight(&self) -> usize;
}

impl Weighed for Cached {
    fn weight(&self) -> usize {
        self.bytes.len()
    }
}

impl Weighed for Bytes {
    fn weight(&self) -> usize {
        self.len()
    }
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
    /// Entries by key.
    map: HashMap<K, V>,
    /// Insertion order, for eviction.
    order: VecDeque<K>,
    /// Bytes currently held.
    used: usize,
}

impl<K: Hash + Eq + Clone, V: Weighed> ByteCache<K, V> {
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
        state.map.get(key).cloned()
    }

    pub fn insert_key(&self, key: K, entry: V) {
        let size = entry.weight();
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
            if let Some(e) = state.map.remove(&old) {
                state.used -= e.weight();
            }
        }
        state.used += size;
        state.order.push_back(key.clone());
        state.map.insert(key, entry);
    }

    pub fn remove_key(&self, key: &K) {
        let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = state.map.remove(key) {
            state.used -= e.weight();
            state.order.retain(|k| k != key);
        }
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

    #[test]
    fn evicts_oldest_past_budget() {
        let c = ManifestCache::new(10);
        let r: RepoName = "a".parse().unwrap();
        let d1 = Digest::sha256_of(b"1");
        let d2 = Digest::sha256_of(b"2");
        c.insert(&r, &d1, entry(6));
        c.insert(&r, &d2, entry(6));
        assert!(c.get(&r, &d1).is_none());
        assert!(c.get(&r, &d2).is_some());
        c.remove(&r, &d2);
        assert!(c.get(&r, &d2).is_none());
        c.insert(&r, &d1, entry(11));
        assert!(c.get(&r, &d1).is_none(), "larger than budget is never held");
    }

    #[test]
    fn blob_cache_holds_small_blobs_within_its_budget() {
        let c = BlobCache::with_budget(8);
        let d1 = Digest::sha256_of(b"1");
        let d2 = Digest::sha256_of(b"2");
        c.insert_key(d1.clone(), Bytes::from_static(b"12345"));
        assert_eq!(c.get_key(&d1).as_deref(), Some(&b"12345"[..]));
        c.insert_key(d2.clone(), Bytes::from_static(b"6789"));
        assert!(c.get_key(&d1).is_none(), "evicted past the budget");
        assert!(c.get_key(&d2).is_some());
        let off = BlobCache::with_budget(0);
        off.insert_key(d1.clone(), Bytes::new());
        assert!(off.get_key(&d1).is_none(), "a zero budget holds nothing");
    }

    #[test]
    fn keyed_by_repository() {
        let c = ManifestCache::new(100);
        let d = Digest::sha256_of(b"1");
        c.insert(&"a".parse().unwrap(), &d, entry(1));
        assert!(c.get(&"b".parse().unwrap(), &d).is_none());
    }
}
