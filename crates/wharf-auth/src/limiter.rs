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

//! Failed-login rate limiting that strangers cannot turn against users:
//! slow down whoever keeps getting passwords wrong, from where they do it,
//! before any bcrypt is spent on them.
//!
//! Owns: two bounded tables of failed password checks. Per *(account,
//! client address)*: a few free failures, then a block that doubles with
//! each further failure (1 s, 2 s, 4 s, … up to a ceiling), forgotten after
//! a quiet spell or a success. Per *client address* overall: a fixed window
//! of failures across all accounts (password spraying). Answering
//! "refused, retry after …" ([`LoginLimiter::check`]) from both.
//!
//! Must never: lock an account for everyone. There is deliberately no
//! per-account count: with one, ten wrong passwords a minute from anywhere
//! kept the real user out (an attack anyone could run on any name, robots
//! included). An attacker is slowed on the addresses it uses; the user on
//! their own address is not. Also never: grow without bound (each table
//! holds at most [`LimiterConfig::max_entries`] keys), keep an account name
//! in clear (keys are SHA-256 prefixes), read the clock (callers pass
//! `now`), sleep, or do I/O.
//!
//! Limits of the design: an attacker with many addresses guesses one
//! account at many times the per-pair rate (bcrypt's cost and the node's
//! bounded bcrypt slots are what bound it then; use long passwords, and
//! robots, whose 256-bit secrets make guessing pointless). IPv6 clients are
//! counted per /64, IPv4-mapped IPv6 addresses as their IPv4 address. A
//! success clears the pair's count but not the address's, so one valid
//! account cannot reset a sprayer's budget. Checks and failures are
//! separate calls, so concurrent attempts that all passed `check` may
//! overshoot by the number of password checks in flight (which the caller
//! bounds).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

/// How many failures are allowed, how blocks grow, and how many keys are
/// remembered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimiterConfig {
    /// Failures one client address may have in
    /// [`LimiterConfig::client_window`], across all accounts, before it is
    /// refused; 0 disables the per-client limit.
    pub client_failures: u32,
    /// How long a client's failures are counted, from its first one.
    pub client_window: Duration,
    /// Failures of one account from one address that cost nothing; the
    /// next one blocks that pair for [`LimiterConfig::pair_backoff`], and
    /// each further one doubles the block. 0 disables the per-pair limit.
    pub pair_failures: u32,
    /// The first block of a pair.
    pub pair_backoff: Duration,
    /// The longest block of a pair.
    pub pair_backoff_max: Duration,
    /// A pair with no failure for this long starts afresh.
    pub pair_memory: Duration,
    /// The most keys each table (clients, pairs) remembers.
    pub max_entries: usize,
}

impl Default for LimiterConfig {
    /// 20 failures per client address per 60 s; per account and address 5
    /// free failures, then blocks of 1 s doubling up to 15 min, forgotten
    /// after 15 min without a failure; 65,536 keys per table (a few MiB).
    fn default() -> Self {
        LimiterConfig {
            client_failures: 20,
            client_window: Duration::from_secs(60),
            pair_failures: 5,
            pair_backoff: Duration::from_secs(1),
            pair_backoff_max: Duration::from_secs(15 * 60),
            pair_memory: Duration::from_secs(15 * 60),
            max_entries: 65_536,
        }
    }
}

/// Failed-login counts per client and per (account, client). Cheap to
/// share behind an `Arc`; every call takes a short lock and does O(1)
/// amortized work.
#[derive(Debug)]
pub struct LoginLimiter {
    clients: Mutex<Table<IpAddr>>,
    pairs: Mutex<Pairs>,
}

/// An (account, client) pair as the table keeps it: the first 16 bytes of
/// the SHA-256 of both.
type PairKey = [u8; 16];

impl LoginLimiter {
    pub fn new(config: LimiterConfig) -> LoginLimiter {
        LoginLimiter {
            clients: Mutex::new(Table::new(
                config.client_failures,
                config.client_window,
                config.max_entries,
            )),
            pairs: Mutex::new(Pairs::new(config)),
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
        let pair = lock(&self.pairs).blocked_for(&pair_key(ip, account), now);
        match client.max(pair) {
            Some(retry_after) => Err(retry_after.max(Duration::from_secs(1))),
            None => Ok(()),
        }
    }

    /// Counts a failed password check for `account` from `ip`.
    pub fn failed(&self, ip: Option<IpAddr>, account: &str, now: Instant) {
        if let Some(ip) = ip {
            lock(&self.clients).fail(client_key(ip), now);
        }
        lock(&self.pairs).fail(pair_key(ip, account), account_tag(account), now);
    }

    /// A password check for `account` from `ip` succeeded: forgets that
    /// pair's failures (the client's stay counted, see the module docs).
    pub fn succeeded(&self, ip: Option<IpAddr>, account: &str, now: Instant) {
        let _ = now;
        lock(&self.pairs).map.remove(&pair_key(ip, account));
    }

    /// Ends `account`'s blocks now (an operator's unlock): from `ip` only,
    /// together with that address's own count across accounts, or from
    /// every address when `ip` is `None`. Returns how many entries were
    /// forgotten (0: nothing was blocked or counted).
    pub fn unlock(&self, account: &str, ip: Option<IpAddr>) -> usize {
        match ip {
            Some(ip) => {
                let pair = usize::from(
                    lock(&self.pairs)
                        .map
                        .remove(&pair_key(Some(ip), account))
                        .is_some(),
                );
                let client = usize::from(lock(&self.clients).map.remove(&client_key(ip)).is_some());
                pair + client
            }
            None => {
                let tag = account_tag(account);
                let mut pairs = lock(&self.pairs);
                let before = pairs.map.len();
                pairs.map.retain(|_, s| s.account != tag);
                before - pairs.map.len()
            }
        }
    }

    /// Clients currently remembered (for a saturation gauge).
    pub fn tracked_clients(&self) -> usize {
        lock(&self.clients).map.len()
    }

    /// (account, client) pairs currently remembered.
    pub fn tracked_pairs(&self) -> usize {
        lock(&self.pairs).map.len()
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

fn pair_key(ip: Option<IpAddr>, account: &str) -> PairKey {
    let mut h = Sha256::new();
    match ip.map(client_key) {
        Some(IpAddr::V4(v4)) => h.update(v4.octets()),
        Some(IpAddr::V6(v6)) => h.update(v6.octets()),
        None => h.update(b"no address"),
    }
    h.update(b"\0");
    h.update(account.as_bytes());
    let digest = h.finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// The account of a pair, as a SHA-256 prefix (so that an unlock can find
/// every pair of one account without keeping its name).
fn account_tag(account: &str) -> [u8; 8] {
    let digest = Sha256::digest(account.as_bytes());
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&digest[..8]);
    tag
}

/// One pair's failures and the block they earned.
#[derive(Debug, Clone, Copy)]
struct PairSlot {
    /// Whose pair it is ([`account_tag`]).
    account: [u8; 8],
    failures: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

/// The per-(account, client) table.
#[derive(Debug)]
struct Pairs {
    config: LimiterConfig,
    map: HashMap<PairKey, PairSlot>,
}

impl Pairs {
    fn new(config: LimiterConfig) -> Pairs {
        Pairs {
            config,
            map: HashMap::new(),
        }
    }

    fn live<'a>(&'a self, key: &PairKey, now: Instant) -> Option<&'a PairSlot> {
        self.map
            .get(key)
            .filter(|s| now.saturating_duration_since(s.last) < self.config.pair_memory)
    }

    fn blocked_for(&self, key: &PairKey, now: Instant) -> Option<Duration> {
        let until = self.live(key, now)?.blocked_until?;
        (until > now).then(|| until - now)
    }

    fn fail(&mut self, key: PairKey, account: [u8; 8], now: Instant) {
        let c = self.config;
        if c.pair_failures == 0 {
            return;
        }
        let failures = self.live(&key, now).map_or(0, |s| s.failures) + 1;
        let blocked_until = failures.checked_sub(c.pair_failures + 1).map(|extra| {
            let factor = 1u32.checked_shl(extra.min(31)).unwrap_or(u32::MAX);
            now + c
                .pair_backoff
                .saturating_mul(factor)
                .min(c.pair_backoff_max)
        });
        self.map.insert(
            key,
            PairSlot {
                account,
                failures,
                last: now,
                blocked_until,
            },
        );
        if self.map.len() > c.max_entries.max(1) {
            self.shrink(now);
        }
    }

    /// Over the cap: drop the pairs quiet long enough to be forgotten, and,
    /// if that is not enough, the older half (amortized O(log n) a failure,
    /// since it runs once per cap/2 new keys).
    fn shrink(&mut self, now: Instant) {
        let memory = self.config.pair_memory;
        self.map
            .retain(|_, s| now.saturating_duration_since(s.last) < memory);
        let cap = self.config.max_entries.max(1);
        if self.map.len() <= cap {
            return;
        }
        let mut lasts: Vec<Instant> = self.map.values().map(|s| s.last).collect();
        let middle = lasts.len() / 2;
        let (_, median, _) = lasts.select_nth_unstable(middle);
        let median = *median;
        self.map.retain(|_, s| s.last > median);
    }
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
            pair_failures: 3,
            pair_backoff: Duration::from_secs(1),
            pair_backoff_max: Duration::from_secs(8),
            pair_memory: Duration::from_secs(100),
            max_entries: 1000,
        }
    }

    #[test]
    fn defaults_are_twenty_per_client_and_five_free_per_pair() {
        let c = LimiterConfig::default();
        assert_eq!((c.client_failures, c.pair_failures), (20, 5));
        assert_eq!(c.client_window, Duration::from_secs(60));
        assert_eq!(c.pair_backoff, Duration::from_secs(1));
        assert_eq!(c.pair_backoff_max, Duration::from_secs(900));
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
        // Another client is not affected, and neither are the accounts.
        assert_eq!(l.check(ip(2), "someone-else", t), Ok(()));
        assert_eq!(l.check(ip(2), "user0", t), Ok(()));
    }

    #[test]
    fn a_stranger_hammering_an_account_never_blocks_its_owner() {
        let l = LoginLimiter::new(LimiterConfig {
            client_failures: 0,
            ..small()
        });
        let t = Instant::now();
        for i in 0..1000u64 {
            l.failed(ip(66), "alice", t + Duration::from_millis(i));
        }
        assert!(l.check(ip(66), "alice", t).is_err());
        assert_eq!(l.check(ip(7), "alice", t), Ok(()));
        // Robot names are no different: no per-account lockout at all.
        for _ in 0..1000 {
            l.failed(ip(66), "acme+ci", t);
        }
        assert_eq!(l.check(ip(8), "acme+ci", t), Ok(()));
    }

    #[test]
    fn a_pair_gets_free_failures_then_doubling_blocks_up_to_the_ceiling() {
        let l = LoginLimiter::new(LimiterConfig {
            client_failures: 0,
            ..small()
        });
        let t = Instant::now();
        for _ in 0..3 {
            l.failed(ip(1), "alice", t);
            assert_eq!(l.check(ip(1), "alice", t), Ok(()));
        }
        let mut blocks = Vec::new();
        for _ in 0..6 {
            l.failed(ip(1), "alice", t);
            blocks.push(l.check(ip(1), "alice", t).unwrap_err().as_secs());
        }
        assert_eq!(blocks, vec![1, 2, 4, 8, 8, 8]);
        assert_eq!(l.check(ip(1), "alice", t + Duration::from_secs(8)), Ok(()));
        // The same account from elsewhere, and another account from here.
        assert_eq!(l.check(ip(2), "alice", t), Ok(()));
        assert_eq!(l.check(ip(1), "bob", t), Ok(()));
    }

    #[test]
    fn an_unlock_ends_an_accounts_blocks_from_one_address_or_all() {
        let l = LoginLimiter::new(small());
        let t = Instant::now();
        for _ in 0..4 {
            for client in [ip(1), ip(2)] {
                l.failed(client, "alice", t);
                l.failed(client, "bob", t);
            }
        }
        assert!(l.check(ip(1), "alice", t).is_err());
        // One address: its pair and its own count (8 failures, over 5).
        assert_eq!(l.unlock("alice", ip(1)), 2);
        assert_eq!(l.check(ip(1), "alice", t), Ok(()));
        assert!(
            l.check(ip(2), "alice", t).is_err(),
            "still blocked elsewhere"
        );
        // Every address; bob's blocks stay.
        assert_eq!(l.unlock("alice", None), 1);
        assert_eq!(
            l.check(ip(2), "alice", t).map_err(|_| ()),
            Err(()),
            "ip 2's own count"
        );
        assert_eq!(
            l.unlock("alice", ip(2)),
            1,
            "ip 2's count, the pair is gone"
        );
        assert_eq!(l.check(ip(2), "alice", t), Ok(()));
        for client in [ip(1), ip(2)] {
            assert!(
                l.check(client, "bob", t).is_err(),
                "bob's pairs stay blocked"
            );
        }
        assert_eq!(l.unlock("nobody", None), 0);
    }

    #[test]
    fn a_quiet_pair_is_forgotten_and_a_success_clears_it() {
        let l = LoginLimiter::new(LimiterConfig {
            client_failures: 0,
            ..small()
        });
        let t = Instant::now();
        for _ in 0..5 {
            l.failed(ip(1), "alice", t);
        }
        let later = t + Duration::from_secs(100);
        // After the memory, one failure is a first failure again.
        l.failed(ip(1), "alice", later);
        assert_eq!(l.check(ip(1), "alice", later), Ok(()));
        for _ in 0..5 {
            l.failed(ip(3), "bob", t);
        }
        assert!(l.check(ip(3), "bob", t).is_err());
        l.succeeded(ip(3), "bob", t);
        assert_eq!(l.check(ip(3), "bob", t), Ok(()));
    }

    #[test]
    fn success_clears_the_pair_but_not_the_client() {
        let l = LoginLimiter::new(small());
        let t = Instant::now();
        for i in 0..4 {
            l.failed(ip(1), &format!("u{i}"), t);
        }
        l.succeeded(ip(1), "u0", t);
        l.failed(ip(1), "x", t);
        assert!(l.check(ip(1), "alice", t).is_err());
    }

    #[test]
    fn retry_after_is_never_below_one_second() {
        let l = LoginLimiter::new(small());
        let t = Instant::now();
        for _ in 0..4 {
            l.failed(None, "alice", t);
        }
        let almost = t + Duration::from_millis(900);
        assert_eq!(l.check(None, "alice", almost), Err(Duration::from_secs(1)));
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
            pair_failures: 0,
            client_failures: 0,
            ..small()
        });
        let t = Instant::now();
        for _ in 0..50 {
            l.failed(ip(1), "alice", t);
        }
        assert_eq!(l.check(ip(1), "alice", t), Ok(()));
        assert_eq!(l.tracked_pairs(), 0);
        assert_eq!(l.tracked_clients(), 0);
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
            l.failed(
                Some(ip),
                &i.to_string(),
                t + Duration::from_micros(u64::from(i)),
            );
            if i % 4096 == 0 {
                assert!(l.tracked_clients() <= cap);
                assert!(l.tracked_pairs() <= cap);
            }
        }
        assert_eq!(l.tracked_clients(), cap);
        assert!(l.tracked_pairs() <= cap);
        assert!(lock(&l.clients).order.len() <= 2 * cap);
        // The newest pair is one of those kept.
        let newest = Some(IpAddr::V4(Ipv4Addr::from(999_999u32)));
        assert!(lock(&l.pairs).map.contains_key(&pair_key(newest, "999999")));
    }

    #[test]
    fn expired_client_entries_are_dropped_as_new_ones_arrive() {
        let l = LoginLimiter::new(small());
        let t = Instant::now();
        for i in 0..50 {
            l.failed(ip(i), "x", t);
        }
        assert_eq!(l.tracked_clients(), 50);
        l.failed(ip(200), "x", t + Duration::from_secs(60));
        assert_eq!(l.tracked_clients(), 1);
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
        assert!(l.check(ip(7), "carol", t).is_err());
    }
}
