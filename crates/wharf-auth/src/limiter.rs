//! Failed-login rate limiting: refuse a client or an account that keeps
//! getting passwords wrong, before any bcrypt is spent on it.
//!
//! Owns: counting failed password checks per client address and per account
//! name, in a fixed window that opens at the first failure, and answering
//! "refused, retry after …" ([`LoginLimiter::check`]) from those counts.
//!
//! Must never: grow without bound (each table holds at most
//! [`LimiterConfig::max_entries`] keys; the oldest are evicted first), keep
//! an account name in clear (accounts are keyed by a SHA-256 prefix, so a
//! flood of long names costs 16 bytes each), read the clock (callers pass
//! `now`, so tests need no sleeping), sleep, or do I/O.
//!
//! Why both keys: the per-client count stops one address from guessing
//! across many accounts (password spraying); the per-account count stops
//! many addresses from guessing one account. IPv6 clients are counted per
//! /64, the block one host usually gets, so rotating addresses within it
//! gains nothing; IPv4-mapped IPv6 addresses count as their IPv4 address.
//!
//! A success clears the account's count but not the client's, so a client
//! holding one valid account cannot use it to reset its spraying budget.
//! Checks and failures are separate calls, so concurrent attempts that all
//! passed `check` may overshoot a limit by the number of password checks in
//! flight (which the caller bounds).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

/// How many failures are allowed, over what window, and how many keys are
/// remembered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimiterConfig {
    /// Failures one client may have in [`LimiterConfig::client_window`]
    /// before it is refused; 0 disables the per-client limit.
    pub client_failures: u32,
    /// How long a client's failures are counted, from its first one.
    pub client_window: Duration,
    /// Failures one account may have in [`LimiterConfig::account_window`]
    /// before it is refused; 0 disables the per-account limit.
    pub account_failures: u32,
    /// How long an account's failures are counted, from its first one.
    pub account_window: Duration,
    /// The most keys each table (clients, accounts) remembers.
    pub max_entries: usize,
}

impl Default for LimiterConfig {
    /// 20 failures per client and 10 per account, each per 60 s, and 65,536
    /// keys per table (a few MiB at most).
    fn default() -> Self {
        LimiterConfig {
            client_failures: 20,
            client_window: Duration::from_secs(60),
            account_failures: 10,
            account_window: Duration::from_secs(60),
            max_entries: 65_536,
        }
    }
}

/// Failed-login counts per client and per account. Cheap to share behind an
/// `Arc`; every call takes a short lock and does O(1) amortized work.
#[derive(Debug)]
pub struct LoginLimiter {
    clients: Mutex<Table<IpAddr>>,
    accounts: Mutex<Table<AccountKey>>,
}

/// An account name as the tables keep it: the first 16 bytes of its SHA-256.
type AccountKey = [u8; 16];

impl LoginLimiter {
    pub fn new(config: LimiterConfig) -> LoginLimiter {
        LoginLimiter {
            clients: Mutex::new(Table::new(
                config.client_failures,
                config.client_window,
                config.max_entries,
            )),
            accounts: Mutex::new(Table::new(
                config.account_failures,
                config.account_window,
                config.max_entries,
            )),
        }
    }

    /// `Ok` if a password check for `account` from `ip` may go ahead; else
    /// how long until it may (the longer of the two blocks). Call it before
    /// verifying anything, so a refused attempt costs no bcrypt.
    pub fn check(&self, ip: Option<IpAddr>, account: &str, now: Instant) -> Result<(), Duration> {
        let client = match ip {
            Some(ip) => lock(&self.clients).blocked_for(&client_key(ip), now),
            None => None,
        };
        let account = lock(&self.accounts).blocked_for(&account_key(account), now);
        match client.max(account) {
            Some(retry_after) => Err(retry_after),
            None => Ok(()),
        }
    }

    /// Counts a failed password check for `account` from `ip`.
    pub fn failed(&self, ip: Option<IpAddr>, account: &str, now: Instant) {
        if let Some(ip) = ip {
            lock(&self.clients).fail(client_key(ip), now);
        }
        lock(&self.accounts).fail(account_key(account), now);
    }

    /// A password check for `account` succeeded: forgets the account's
    /// failures (the client's stay counted, see the module docs).
    pub fn succeeded(&self, ip: Option<IpAddr>, account: &str, now: Instant) {
        let _ = (ip, now);
        lock(&self.accounts).forget(&account_key(account));
    }

    /// Clients currently remembered (for a saturation gauge).
    pub fn tracked_clients(&self) -> usize {
        lock(&self.clients).map.len()
    }

    /// Accounts currently remembered (for a saturation gauge).
    pub fn tracked_accounts(&self) -> usize {
        lock(&self.accounts).map.len()
    }
}

impl Default for LoginLimiter {
    fn default() -> Self {
        LoginLimiter::new(LimiterConfig::default())
    }
}

/// A poisoned lock only means another thread panicked mid-update; the counts
/// are still usable (at worst one is off by one), so keep limiting.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

fn account_key(account: &str) -> AccountKey {
    let digest = Sha256::digest(account.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// Failures of one key in its current window.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// When the window opened (the first failure of this window).
    start: Instant,
    failures: u32,
}

/// One bounded table of counts.
///
/// `order` lists `(key, window start)` in the order windows opened, which
/// (with a monotonic `now`) is also the order they expire in: expired and
/// oldest entries are both found at its front, in O(1). An item whose start
/// no longer matches the key's slot is stale (the key was forgotten or
/// reopened) and is skipped.
#[derive(Debug)]
struct Table<K> {
    limit: u32,
    window: Duration,
    cap: usize,
    map: HashMap<K, Slot>,
    order: VecDeque<(K, Instant)>,
}

impl<K: Hash + Eq + Copy> Table<K> {
    fn new(limit: u32, window: Duration, cap: usize) -> Self {
        Table {
            limit,
            window,
            cap: cap.max(1),
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn expired(&self, slot: &Slot, now: Instant) -> bool {
        now.saturating_duration_since(slot.start) >= self.window
    }

    fn blocked_for(&self, key: &K, now: Instant) -> Option<Duration> {
        if self.limit == 0 {
            return None;
        }
        let slot = self.map.get(key)?;
        if slot.failures < self.limit || self.expired(slot, now) {
            return None;
        }
        let until = slot.start + self.window;
        Some(
            until
                .saturating_duration_since(now)
                .max(Duration::from_secs(1)),
        )
    }

    fn fail(&mut self, key: K, now: Instant) {
        if self.limit == 0 {
            return;
        }
        self.purge_expired(now);
        match self.map.get_mut(&key) {
            Some(slot) if now.saturating_duration_since(slot.start) < self.window => {
                slot.failures = slot.failures.saturating_add(1);
            }
            _ => {
                self.map.insert(
                    key,
                    Slot {
                        start: now,
                        failures: 1,
                    },
                );
                self.order.push_back((key, now));
                self.evict_oldest();
            }
        }
        // Forgotten keys leave stale items behind; drop them once they are
        // as many as the live ones, so `order` stays within twice the cap.
        if self.order.len() > 2 * self.map.len().max(self.cap) {
            let map = &self.map;
            self.order
                .retain(|(k, start)| map.get(k).is_some_and(|s| s.start == *start));
        }
    }

    fn forget(&mut self, key: &K) {
        self.map.remove(key);
    }

    /// Is the front item of `order` current (its key's slot opened then)?
    fn front_is_current(&self) -> Option<bool> {
        let (key, start) = self.order.front()?;
        Some(self.map.get(key).is_some_and(|s| s.start == *start))
    }

    fn purge_expired(&mut self, now: Instant) {
        while let Some(current) = self.front_is_current() {
            let (key, start) = self.order[0];
            if current {
                if now.saturating_duration_since(start) < self.window {
                    break;
                }
                self.map.remove(&key);
            }
            self.order.pop_front();
        }
    }

    fn evict_oldest(&mut self) {
        while self.map.len() > self.cap {
            let Some((key, start)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&key).is_some_and(|s| s.start == start) {
                self.map.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)))
    }

    fn small() -> LimiterConfig {
        LimiterConfig {
            client_failures: 5,
            client_window: Duration::from_secs(60),
            account_failures: 3,
            account_window: Duration::from_secs(30),
            max_entries: 1000,
        }
    }

    #[test]
    fn defaults_are_twenty_per_client_and_ten_per_account_per_minute() {
        let c = LimiterConfig::default();
        assert_eq!((c.client_failures, c.account_failures), (20, 10));
        assert_eq!(c.client_window, Duration::from_secs(60));
        assert_eq!(c.account_window, Duration::from_secs(60));
    }

    #[test]
    fn per_client_block_hits_every_account_from_that_client() {
        let l = LoginLimiter::new(small());
        let t = Instant::now();
        for i in 0..5 {
            assert_eq!(l.check(ip(1), &format!("user{i}"), t), Ok(()));
            l.failed(ip(1), &format!("user{i}"), t);
        }
        let retry = l.check(ip(1), "someone-else", t).unwrap_err();
        assert_eq!(retry, Duration::from_secs(60));
        assert!(l.check(ip(1), "user0", t).is_err());
        // Another client is not affected, and neither is the account.
        assert_eq!(l.check(ip(2), "someone-else", t), Ok(()));
        assert_eq!(l.check(ip(2), "user0", t), Ok(()));
    }

    #[test]
    fn per_account_block_hits_every_client() {
        let l = LoginLimiter::new(small());
        let t = Instant::now();
        for i in 0..3 {
            l.failed(ip(i), "alice", t + Duration::from_secs(u64::from(i)));
        }
        let now = t + Duration::from_secs(10);
        assert_eq!(l.check(ip(200), "alice", now), Err(Duration::from_secs(20)));
        assert!(l.check(None, "alice", now).is_err());
        assert_eq!(l.check(ip(200), "bob", now), Ok(()));
    }

    #[test]
    fn the_longer_block_is_reported() {
        let l = LoginLimiter::new(small());
        let t = Instant::now();
        for _ in 0..5 {
            l.failed(ip(1), "alice", t);
        }
        // Client blocked 60 s, account 30 s: retry after the longer.
        assert_eq!(l.check(ip(1), "alice", t), Err(Duration::from_secs(60)));
    }

    #[test]
    fn window_expiry_unblocks() {
        let l = LoginLimiter::new(small());
        let t = Instant::now();
        for _ in 0..3 {
            l.failed(ip(1), "alice", t);
        }
        assert!(l
            .check(ip(1), "alice", t + Duration::from_secs(29))
            .is_err());
        assert_eq!(l.check(ip(1), "alice", t + Duration::from_secs(30)), Ok(()));
        // A new window opens with the next failure, counting from one.
        let later = t + Duration::from_secs(31);
        l.failed(ip(1), "alice", later);
        assert_eq!(l.check(ip(1), "alice", later), Ok(()));
    }

    #[test]
    fn retry_after_is_never_below_one_second() {
        let l = LoginLimiter::new(small());
        let t = Instant::now();
        for _ in 0..3 {
            l.failed(None, "alice", t);
        }
        let almost = t + Duration::from_millis(29_900);
        assert_eq!(l.check(None, "alice", almost), Err(Duration::from_secs(1)));
    }

    #[test]
    fn success_clears_the_account_but_not_the_client() {
        let l = LoginLimiter::new(small());
        let t = Instant::now();
        for _ in 0..3 {
            l.failed(ip(1), "alice", t);
        }
        assert!(l.check(ip(2), "alice", t).is_err());
        l.succeeded(ip(2), "alice", t);
        assert_eq!(l.check(ip(2), "alice", t), Ok(()));
        // Client 1 has 3 of its 5; two more failures block it.
        l.failed(ip(1), "x", t);
        l.failed(ip(1), "y", t);
        assert!(l.check(ip(1), "alice", t).is_err());
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_and_mapped_v4_as_v4() {
        let l = LoginLimiter::new(small());
        let t = Instant::now();
        for i in 0..5u16 {
            let a: Ipv6Addr = format!("2001:db8:1:2::{i:x}").parse().unwrap();
            l.failed(Some(IpAddr::V6(a)), &format!("u{i}"), t);
        }
        let same_64: Ipv6Addr = "2001:db8:1:2:ffff::1".parse().unwrap();
        let other_64: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert!(l.check(Some(IpAddr::V6(same_64)), "new", t).is_err());
        assert_eq!(l.check(Some(IpAddr::V6(other_64)), "new", t), Ok(()));

        for i in 0..5 {
            l.failed(ip(9), &format!("v{i}"), t);
        }
        let mapped = Ipv4Addr::new(192, 0, 2, 9).to_ipv6_mapped();
        assert!(l.check(Some(IpAddr::V6(mapped)), "new", t).is_err());
    }

    #[test]
    fn zero_disables_a_limit() {
        let l = LoginLimiter::new(LimiterConfig {
            account_failures: 0,
            ..small()
        });
        let t = Instant::now();
        for i in 0..4 {
            l.failed(ip(i), "alice", t);
        }
        assert_eq!(l.check(ip(100), "alice", t), Ok(()));
        assert_eq!(l.tracked_accounts(), 0);
    }

    #[test]
    fn memory_stays_bounded_under_a_million_distinct_keys() {
        let cap = 1000;
        let l = LoginLimiter::new(LimiterConfig {
            max_entries: cap,
            ..LimiterConfig::default()
        });
        let t = Instant::now();
        for i in 0..1_000_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(i));
            l.failed(Some(ip), &i.to_string(), t);
            if i % 4096 == 0 {
                assert!(l.tracked_clients() <= cap);
                assert!(l.tracked_accounts() <= cap);
            }
        }
        assert_eq!(l.tracked_clients(), cap);
        assert_eq!(l.tracked_accounts(), cap);
        for table in [lock(&l.clients).order.len(), lock(&l.accounts).order.len()] {
            assert!(table <= 2 * cap, "{table}");
        }
        // The newest keys are the ones kept.
        let newest = IpAddr::V4(Ipv4Addr::from(999_999u32));
        assert_eq!(lock(&l.clients).map[&newest].failures, 1);
    }

    #[test]
    fn forgotten_keys_do_not_grow_the_queue() {
        let cap = 100;
        let l = LoginLimiter::new(LimiterConfig {
            max_entries: cap,
            ..LimiterConfig::default()
        });
        let t = Instant::now();
        for i in 0..100_000u32 {
            let name = format!("user{}", i % 10);
            l.failed(None, &name, t);
            l.succeeded(None, &name, t);
        }
        assert_eq!(l.tracked_accounts(), 0);
        assert!(lock(&l.accounts).order.len() <= 2 * cap);
    }

    #[test]
    fn expired_entries_are_dropped_as_new_ones_arrive() {
        let l = LoginLimiter::new(small());
        let t = Instant::now();
        for i in 0..50 {
            l.failed(None, &format!("old{i}"), t);
        }
        assert_eq!(l.tracked_accounts(), 50);
        l.failed(None, "new", t + Duration::from_secs(30));
        assert_eq!(l.tracked_accounts(), 1);
    }

    #[test]
    fn limiter_is_shared_across_threads() {
        let l = std::sync::Arc::new(LoginLimiter::new(small()));
        let t = Instant::now();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || l.failed(ip(7), "carol", t))
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert!(l.check(ip(8), "carol", t).is_err());
    }
}
