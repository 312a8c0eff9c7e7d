//! Pulls gathered for retention: the manifests this node served lately,
//! written to metadata together once every [`FLUSH_AFTER`] rather than one
//! write each.
//!
//! A registry pulled uniformly across a million manifests meets a manifest
//! it has not recorded lately on almost every pull; one metadata write per
//! pull then keeps the embedded store's writer (or PostgreSQL) busy at the
//! pull rate, and every request pays for it in CPU. Gathered, the same pulls
//! cost one transaction per [`BATCH`] manifests.
//!
//! Owns: [`PullLog`], the bounded set of pulls not yet written (the latest
//! time per repository and manifest), and whose turn it is to write them:
//! one background task at a time, started by the first pull gathered while
//! none runs, ending when it finds nothing left.
//!
//! Must never: make a request wait (gathering is a map insert under a
//! lock), hold more than its capacity (past it a pull is not gathered; the
//! caller does not mark it recorded, so the manifest's next pull tries
//! again), or let two tasks write at once. A node that stops loses the pulls
//! of its last moment (at most [`FLUSH_AFTER`] and one write); retention
//! measures days, so that matters only for a manifest pulled then and never
//! again within a rule's window.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use wharf_core::{Digest, RepoName};
use wharf_meta::Pull;

/// How long pulls gather before they are written: a moment, so a busy node
/// writes a few large batches a second instead of one record per manifest.
pub(crate) const FLUSH_AFTER: Duration = Duration::from_millis(500);

/// The most pulls one metadata call records: the embedded store's writer
/// does nothing else meanwhile, so a batch is kept to a few milliseconds.
pub(crate) const BATCH: usize = 1_000;

/// What [`PullLog::gather`] did with a pull.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Gathered {
    /// Gathered, and no task is writing: the caller starts one.
    StartWriting,
    /// Gathered; the running task will write it.
    Queued,
    /// Not gathered: the log is full.
    Full,
}

pub(crate) struct PullLog {
    capacity: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    pending: HashMap<(RepoName, Digest), u64>,
    /// A task is writing (or about to): it takes `pending` until empty.
    writing: bool,
    /// Pulls turned away because the log was full, ever.
    refused: u64,
}

impl PullLog {
    pub fn new(capacity: usize) -> Self {
        PullLog {
            capacity,
            state: Mutex::new(State::default()),
        }
    }

    /// Gathers a pull of `digest` from `repo` at `at_unix` (a manifest
    /// gathered twice keeps its latest time).
    pub fn gather(&self, repo: &RepoName, digest: &Digest, at_unix: u64) -> Gathered {
        let mut guard = self.lock();
        let s = &mut *guard;
        let key = (repo.clone(), digest.clone());
        let full = s.pending.len() >= self.capacity;
        match s.pending.get_mut(&key) {
            Some(at) => *at = (*at).max(at_unix),
            None if full => {
                s.refused += 1;
                return Gathered::Full;
            }
            None => {
                s.pending.insert(key, at_unix);
            }
        }
        if s.writing {
            Gathered::Queued
        } else {
            s.writing = true;
            Gathered::StartWriting
        }
    }

    /// Everything gathered so far, taken out of the log; `None` when
    /// nothing is, which ends the writing task's turn (the next pull
    /// gathered starts another).
    pub fn take(&self) -> Option<Vec<Pull>> {
        let mut s = self.lock();
        if s.pending.is_empty() {
            s.writing = false;
            return None;
        }
        let pulls = std::mem::take(&mut s.pending)
            .into_iter()
            .map(|((repo, digest), at_unix)| Pull {
                repo,
                digest,
                at_unix,
            })
            .collect();
        Some(pulls)
    }

    /// Pulls waiting to be written, and pulls ever turned away full.
    pub fn usage(&self) -> (usize, u64) {
        let s = self.lock();
        (s.pending.len(), s.refused)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(r: &str, seed: &str) -> (RepoName, Digest) {
        (r.parse().unwrap(), Digest::sha256_of(seed.as_bytes()))
    }

    #[test]
    fn one_writer_at_a_time_until_the_log_is_empty() {
        let log = PullLog::new(10);
        let (r, a) = key("acme/app", "a");
        let (_, b) = key("acme/app", "b");
        assert_eq!(log.gather(&r, &a, 100), Gathered::StartWriting);
        assert_eq!(log.gather(&r, &b, 100), Gathered::Queued);
        assert_eq!(log.gather(&r, &a, 105), Gathered::Queued);
        assert_eq!(log.gather(&r, &a, 101), Gathered::Queued);
        let mut taken = log.take().unwrap();
        taken.sort_by(|x, y| x.digest.cmp(&y.digest));
        let mut expect = vec![(a.clone(), 105), (b.clone(), 100)];
        expect.sort();
        let got: Vec<(Digest, u64)> = taken.into_iter().map(|p| (p.digest, p.at_unix)).collect();
        assert_eq!(got, expect, "each manifest once, at its latest pull");
        // Gathered while the task writes: the same task takes it next.
        assert_eq!(log.gather(&r, &b, 106), Gathered::Queued);
        assert_eq!(log.take().unwrap().len(), 1);
        // Nothing left: the turn ends, and the next pull starts a new one.
        assert!(log.take().is_none());
        assert_eq!(log.gather(&r, &b, 107), Gathered::StartWriting);
    }

    #[test]
    fn a_full_log_turns_new_pulls_away_but_updates_what_it_holds() {
        let log = PullLog::new(2);
        let (r, a) = key("acme/app", "a");
        let (_, b) = key("acme/app", "b");
        let (_, c) = key("acme/app", "c");
        log.gather(&r, &a, 1);
        log.gather(&r, &b, 1);
        assert_eq!(log.gather(&r, &c, 1), Gathered::Full);
        assert_eq!(log.gather(&r, &a, 2), Gathered::Queued, "held already");
        assert_eq!(log.usage(), (2, 1));
        assert_eq!(log.take().unwrap().len(), 2);
        assert_eq!(log.gather(&r, &c, 3), Gathered::Queued, "room again");
    }
}
