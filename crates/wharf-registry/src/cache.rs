//! A bounded in-memory cache of manifest bytes, keyed by repository and
//! digest. Content addressed by digest never changes, so an entry is valid
//! until its manifest is deleted; the only policy needed is a byte budget.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use wharf_core::{Digest, RepoName};

/// A cached manifest: what a `GET` needs to answer without I/O.
#[derive(Clone, Debug)]
pub(crate) struct Cached {
    pub media_type: String,
    pub bytes: Bytes,
}

type Key = (RepoName, Digest);

/// First-in, first-out eviction under a byte budget: simple, and manifests
/// are small enough that a hot set fits comfortably.
pub(crate) struct ManifestCache {
    /// Most bytes held at once; 0 disables caching.
    budget: usize,
    inner: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Entries by key.
    map: HashMap<Key, Cached>,
    /// Insertion order, for eviction.
    order: VecDeque<Key>,
    /// Bytes currently held.
    used: usize,
}

impl ManifestCache {
    pub fn new(budget: usize) -> Self {
        ManifestCache {
            budget,
            inner: Mutex::new(State::default()),
        }
    }

    pub fn get(&self, repo: &RepoName, digest: &Digest) -> Option<Cached> {
        let state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        state.map.get(&(repo.clone(), digest.clone())).cloned()
    }

    pub fn insert(&self, repo: &RepoName, digest: &Digest, entry: Cached) {
        let size = entry.bytes.len();
        if size > self.budget {
            return;
        }
        let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key = (repo.clone(), digest.clone());
        if state.map.contains_key(&key) {
            return;
        }
        while state.used + size > self.budget {
            let Some(old) = state.order.pop_front() else {
                break;
            };
            if let Some(e) = state.map.remove(&old) {
                state.used -= e.bytes.len();
            }
        }
        state.used += size;
        state.order.push_back(key.clone());
        state.map.insert(key, entry);
    }

    pub fn remove(&self, repo: &RepoName, digest: &Digest) {
        let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key = (repo.clone(), digest.clone());
        if let Some(e) = state.map.remove(&key) {
            state.used -= e.bytes.len();
            state.order.retain(|k| *k != key);
        }
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
    fn keyed_by_repository() {
        let c = ManifestCache::new(100);
        let d = Digest::sha256_of(b"1");
        c.insert(&"a".parse().unwrap(), &d, entry(1));
        assert!(c.get(&"b".parse().unwrap(), &d).is_none());
    }
}
