//! Whether this node reaches its PostgreSQL server, told to the operator
//! without flooding the log: the first failed connection at `WARN` with
//! the server's address and the cause, then at most one reminder a
//! [`REMIND_EVERY`] while it lasts (with how many attempts failed since),
//! and one `INFO` line when a connection succeeds again.
//!
//! Owns: that state and its log lines. Must never: hold a lock across an
//! await, cost a successful call more than one atomic load, or log a
//! password (the address is built from the host, port, database and user
//! only).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most often a connection failure that goes on is logged again.
pub(super) const REMIND_EVERY: Duration = Duration::from_secs(60);

/// What to log after an attempt, decided by [`Reach`].
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line {
    /// The first failure of an outage.
    Down,
    /// A reminder: this many failures since the last line.
    Still { failures: u64, for_secs: u64 },
    /// Connected again after this many failures, for this long.
    Back { failures: u64, for_secs: u64 },
}

/// The reachability of one server, shared by every clone of the store.
#[derive(Debug)]
pub(super) struct Reach {
    /// `host:port/database as user`, for every line.
    pub(super) address: String,
    /// Set while connections fail (the fast path of a success reads it).
    failing: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    since: Option<Instant>,
    last_line: Option<Instant>,
    /// Failures since the last line.
    unreported: u64,
    /// Failures of this outage.
    total: u64,
}

impl Reach {
    pub(super) fn new(address: String) -> Reach {
        Reach {
            address,
            failing: AtomicBool::new(false),
            state: Mutex::new(State::default()),
        }
    }

    /// A connection could not be made at `now`; what to log, if anything.
    pub(super) fn failed(&self, now: Instant) -> Option<Line> {
        self.failing.store(true, Ordering::Relaxed);
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.total += 1;
        let Some(since) = s.since else {
            s.since = Some(now);
            s.last_line = Some(now);
            s.unreported = 0;
            return Some(Line::Down);
        };
        s.unreported += 1;
        let due = s
            .last_line
            .is_none_or(|l| now.saturating_duration_since(l) >= REMIND_EVERY);
        if !due {
            return None;
        }
        s.last_line = Some(now);
        let failures = std::mem::take(&mut s.unreported);
        Some(Line::Still {
            failures,
            for_secs: now.saturating_duration_since(since).as_secs(),
        })
    }

    /// A connection was made at `now`; the recovery line after an outage.
    pub(super) fn connected(&self, now: Instant) -> Option<Line> {
        if !self.failing.load(Ordering::Relaxed) {
            return None;
        }
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.failing.store(false, Ordering::Relaxed);
        let since = s.since.take()?;
        let failures = std::mem::take(&mut s.total);
        s.unreported = 0;
        s.last_line = None;
        Some(Line::Back {
            failures,
            for_secs: now.saturating_duration_since(since).as_secs(),
        })
    }

    /// Writes `line` about this server; `cause` is the last error.
    pub(super) fn log(&self, line: Line, cause: &str) {
        let address = self.address.as_str();
        match line {
            Line::Down => tracing::warn!(
                %address, error = %cause,
                "cannot connect to PostgreSQL (metadata); requests that need it get 503 until it answers. \
                 Check that the server runs and accepts this node (address, credentials, pg_hba.conf, max_connections)"
            ),
            Line::Still { failures, for_secs } => tracing::warn!(
                %address, error = %cause, failures, for_secs,
                "still cannot connect to PostgreSQL (metadata)"
            ),
            Line::Back { failures, for_secs } => tracing::info!(
                %address, failures, for_secs,
                "connected to PostgreSQL (metadata) again"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_told_once_then_once_a_minute_then_its_end() {
        let r = Reach::new("db:5432/wharf".into());
        let t = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(r.connected(t), None, "nothing to tell when all is well");
        assert_eq!(r.failed(t), Some(Line::Down));
        for i in 1..60 {
            assert_eq!(r.failed(t + s(i)), None, "second {i}");
        }
        assert_eq!(
            r.failed(t + s(60)),
            Some(Line::Still {
                failures: 60,
                for_secs: 60
            })
        );
        assert_eq!(r.failed(t + s(61)), None);
        assert_eq!(
            r.connected(t + s(90)),
            Some(Line::Back {
                failures: 62,
                for_secs: 90
            })
        );
        assert_eq!(r.connected(t + s(91)), None);
        // The next outage starts afresh.
        assert_eq!(r.failed(t + s(100)), Some(Line::Down));
    }

    #[test]
    fn the_address_names_host_port_database_and_user_never_the_password() {
        let c: tokio_postgres::Config = "postgres://wharf:hunter2@db.internal:6543/registry"
            .parse()
            .unwrap();
        assert_eq!(
            super::super::address_of(&c),
            "wharf@db.internal:6543/registry"
        );
        let c: tokio_postgres::Config = "host=/run/postgresql user=w password=x".parse().unwrap();
        assert_eq!(super::super::address_of(&c), "w@/run/postgresql:5432/w");
    }
}
