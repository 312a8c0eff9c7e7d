//! What this node last learned from metadata, kept for when metadata cannot
//! be reached (design invariant 3: pulls of known content survive a
//! control-plane outage).
//!
//! Owns: [`LastKnown`], a bounded map of the answers pulls depend on: which
//! repository holds a blob (and its size) and which digest a tag names. It is
//! fed by every successful lookup and by this node's own writes, and emptied
//! of an entry by this node's deletes.
//!
//! Must never: answer for blob links while metadata is reachable (the store
//! stays the source of truth, so a delete made through another node takes
//! effect at once there), answer for a tag learned longer ago than the tag
//! TTL while metadata is reachable, or grow without a bound.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A bounded map, oldest insertion evicted first.
pub(crate) struct LastKnown<K, V> {
    capacity: usize,
    inner: Mutex<Entries<K, V>>,
}

struct Entries<K, V> {
    /// Each value with the generation and the time it was inserted at.
    map: HashMap<K, (V, u64, Instant)>,
    /// Insertion order as (key, generation); an item whose generation no
    /// longer matches the map's is stale and skipped on eviction.
    order: VecDeque<(K, u64)>,
    next: u64,
}

impl<K: Eq + Hash + Clone, V: Clone> LastKnown<K, V> {
    pub fn new(capacity: usize) -> Self {
        LastKnown {
            capacity,
            inner: Mutex::new(Entries {
                map: HashMap::new(),
                order: VecDeque::new(),
                next: 0,
            }),
        }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        self.lock().map.get(key).map(|(v, _, _)| v.clone())
    }

    /// The value if it was learned less than `ttl` ago.
    pub fn get_fresh(&self, key: &K, ttl: Duration) -> Option<V> {
        self.lock()
            .map
            .get(key)
            .filter(|(_, _, at)| at.elapsed() < ttl)
            .map(|(v, _, _)| v.clone())
    }

    pub fn put(&self, key: K, value: V) {
        if self.capacity == 0 {
            return;
        }
        let mut e = self.lock();
        // A key already held is updated in place: it keeps its place in
        // the queue, so puts of held keys (most of them: every pull of a
        // known tag) leave nothing behind to clean up.
        if let Some(slot) = e.map.get_mut(&key) {
            slot.0 = value;
            slot.2 = Instant::now();
            return;
        }
        let generation = e.next;
        e.next += 1;
        e.map
            .insert(key.clone(), (value, generation, Instant::now()));
        e.order.push_back((key, generation));
        // Evict the oldest live entries past the capacity (stale items met
        // on the way are dropped).
        while e.map.len() > self.capacity {
            let Some((old, g)) = e.order.pop_front() else {
                break;
            };
            if e.map.get(&old).is_some_and(|(_, cur, _)| *cur == g) {
                e.map.remove(&old);
            }
        }
        // Removals leave stale items in the queue; past twice the capacity
        // a few are looked at per put (dropped if stale, requeued if live),
        // never the whole queue: walking it inside one put, under the lock,
        // stalled pulls for 50 to 100 ms at 10^6 manifests.
        let mut steps = 0;
        while e.order.len() > 2 * self.capacity && steps < 8 {
            steps += 1;
            let Some((old, g)) = e.order.pop_front() else {
                break;
            };
            if e.map.get(&old).is_some_and(|(_, cur, _)| *cur == g) {
                e.order.push_back((old, g));
            }
        }
    }

    pub fn remove(&self, key: &K) {
        self.lock().map.remove(key);
    }

    /// Entries held, and items in the eviction queue (at most twice the
    /// capacity).
    pub fn usage(&self) -> (usize, usize) {
        let e = self.lock();
        (e.map.len(), e.order.len())
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Removes every entry for which `f` is true.
    pub fn remove_where(&self, f: impl Fn(&K, &V) -> bool) {
        self.lock().map.retain(|k, (v, _, _)| !f(k, v));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<K, V>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_its_capacity_oldest_out_first() {
        let c = LastKnown::new(2);
        c.put("a", 1);
        c.put("b", 2);
        c.put("c", 3);
        assert_eq!(c.get(&"a"), None);
        assert_eq!(c.get(&"b"), Some(2));
        assert_eq!(c.get(&"c"), Some(3));
    }

    #[test]
    fn updates_and_removals() {
        let c = LastKnown::new(4);
        c.put("t", 1);
        c.put("t", 2);
        assert_eq!(c.get(&"t"), Some(2));
        c.remove(&"t");
        assert_eq!(c.get(&"t"), None);
        c.put("x", 7);
        c.put("y", 8);
        c.remove_where(|_, v| *v == 7);
        assert_eq!(c.get(&"x"), None);
        assert_eq!(c.get(&"y"), Some(8));
    }

    #[test]
    fn fresh_only_within_the_ttl() {
        let c = LastKnown::new(4);
        c.put("t", 1);
        assert_eq!(c.get_fresh(&"t", Duration::from_secs(60)), Some(1));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(c.get_fresh(&"t", Duration::from_millis(10)), None);
        assert_eq!(c.get(&"t"), Some(1), "still there for outages");
    }

    /// Puts of keys already held change their values and nothing else:
    /// the queue does not grow, nothing is evicted, and the oldest key
    /// inserted is still the first out.
    #[test]
    fn puts_of_held_keys_update_in_place() {
        let c = LastKnown::new(1000);
        for k in 0..1000 {
            c.put(k, k);
        }
        for i in 0..5000 {
            c.put(7, i);
        }
        assert_eq!(c.usage(), (1000, 1000));
        assert_eq!(c.get(&0), Some(0), "nothing evicted");
        assert_eq!(c.get(&7), Some(4999));
        c.put(5000, 1);
        assert_eq!(c.get(&0), None, "the oldest goes first");
        assert_eq!(c.get(&1), Some(1));
    }

    #[test]
    fn churn_stays_bounded() {
        let c = LastKnown::new(8);
        for i in 0..10_000 {
            c.put(i % 50, i);
            if i % 3 == 0 {
                c.remove(&(i % 50));
            }
        }
        let e = c.lock();
        assert!(e.map.len() <= 8);
        assert!(e.order.len() <= 16);
    }
}
