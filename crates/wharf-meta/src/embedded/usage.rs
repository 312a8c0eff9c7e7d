//! What each namespace holds, kept up to date by every write that adds or
//! removes a holder (a blob link or a manifest record), so a quota check
//! reads a few keys instead of scanning the namespace.
//!
//! | table          | key              | value                                   |
//! |----------------|------------------|-----------------------------------------|
//! | `ns_content`   | `ns\0digest`     | (holders in the namespace, size)        |
//! | `ns_usage`     | `ns`             | (bytes of distinct content, repositories holding anything) |
//! | `repo_holders` | `repo`           | links and manifests the repository holds |
//!
//! Must never: count a digest twice in one namespace (two links, or a link
//! and a manifest, of one digest are one digest's bytes), or be written
//! outside the transaction of the change it counts.

use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use super::{engine, key2, BLOBS, MANIFESTS, SEP};
use crate::MetaError;

pub(super) const NS_CONTENT: TableDefinition<&str, (u64, u64)> = TableDefinition::new("ns_content");
pub(super) const NS_USAGE: TableDefinition<&str, (u64, u64)> = TableDefinition::new("ns_usage");
pub(super) const REPO_HOLDERS: TableDefinition<&str, u64> = TableDefinition::new("repo_holders");

fn namespace(repo: &str) -> &str {
    repo.split('/').next().unwrap_or(repo)
}

/// Creates the tables and, for a database written before they existed,
/// counts what it holds.
pub(super) fn open_tables(txn: &WriteTransaction) -> Result<(), MetaError> {
    txn.open_table(NS_CONTENT).map_err(engine)?;
    txn.open_table(NS_USAGE).map_err(engine)?;
    txn.open_table(REPO_HOLDERS).map_err(engine)?;
    let mut schema = txn.open_table(super::gc::SCHEMA).map_err(engine)?;
    if schema.get("usage").map_err(engine)?.is_some() {
        return Ok(());
    }
    let mut found = Vec::new();
    for entry in txn
        .open_table(BLOBS)
        .map_err(engine)?
        .iter()
        .map_err(engine)?
    {
        let (k, v) = entry.map_err(engine)?;
        if let Some((repo, digest)) = k.value().split_once(SEP) {
            found.push((repo.to_string(), digest.to_string(), v.value()));
        }
    }
    for entry in txn
        .open_table(MANIFESTS)
        .map_err(engine)?
        .iter()
        .map_err(engine)?
    {
        let (k, v) = entry.map_err(engine)?;
        if let Some((repo, digest)) = k.value().split_once(SEP) {
            let size = super::decode_manifest(v.value())?.size;
            found.push((repo.to_string(), digest.to_string(), size));
        }
    }
    for (repo, digest, size) in found {
        held(txn, &repo, &digest, size)?;
    }
    schema.insert("usage", 1).map_err(engine)?;
    Ok(())
}

/// One more holder of `digest` (of `size` bytes) in `repo`.
pub(super) fn held(
    txn: &WriteTransaction,
    repo: &str,
    digest: &str,
    size: u64,
) -> Result<(), MetaError> {
    let ns = namespace(repo);
    let mut content = txn.open_table(NS_CONTENT).map_err(engine)?;
    let key = key2(ns, digest);
    let current = content
        .get(key.as_str())
        .map_err(engine)?
        .map(|v| v.value());
    let (holders, first) = match current {
        Some((n, s)) => ((n + 1, s), false),
        None => ((1, size), true),
    };
    content.insert(key.as_str(), holders).map_err(engine)?;
    let mut repos = txn.open_table(REPO_HOLDERS).map_err(engine)?;
    let in_repo = repos.get(repo).map_err(engine)?.map_or(0, |v| v.value());
    repos.insert(repo, in_repo + 1).map_err(engine)?;
    if first || in_repo == 0 {
        let mut usage = txn.open_table(NS_USAGE).map_err(engine)?;
        let (bytes, count) = usage.get(ns).map_err(engine)?.map_or((0, 0), |v| v.value());
        let bytes = if first {
            bytes.saturating_add(size)
        } else {
            bytes
        };
        let count = if in_repo == 0 { count + 1 } else { count };
        usage.insert(ns, (bytes, count)).map_err(engine)?;
    }
    Ok(())
}

/// One holder fewer of `digest` in `repo`.
pub(super) fn unheld(
    txn: &WriteTransaction,
    repo: &str,
    digest: &str,
    _size: u64,
) -> Result<(), MetaError> {
    let ns = namespace(repo);
    let mut content = txn.open_table(NS_CONTENT).map_err(engine)?;
    let key = key2(ns, digest);
    let Some((n, size)) = content
        .get(key.as_str())
        .map_err(engine)?
        .map(|v| v.value())
    else {
        return Ok(());
    };
    let last = n <= 1;
    if last {
        content.remove(key.as_str()).map_err(engine)?;
    } else {
        content
            .insert(key.as_str(), (n - 1, size))
            .map_err(engine)?;
    }
    let mut repos = txn.open_table(REPO_HOLDERS).map_err(engine)?;
    let in_repo = repos.get(repo).map_err(engine)?.map_or(0, |v| v.value());
    let emptied = in_repo <= 1;
    if emptied {
        repos.remove(repo).map_err(engine)?;
    } else {
        repos.insert(repo, in_repo - 1).map_err(engine)?;
    }
    if last || emptied {
        let mut usage = txn.open_table(NS_USAGE).map_err(engine)?;
        let (bytes, count) = usage.get(ns).map_err(engine)?.map_or((0, 0), |v| v.value());
        let bytes = if last {
            bytes.saturating_sub(size)
        } else {
            bytes
        };
        let count = if emptied {
            count.saturating_sub(1)
        } else {
            count
        };
        if bytes == 0 && count == 0 {
            usage.remove(ns).map_err(engine)?;
        } else {
            usage.insert(ns, (bytes, count)).map_err(engine)?;
        }
    }
    Ok(())
}

/// (bytes, repositories) of `ns`, and whether it holds `digest`.
pub(super) fn read(
    txn: &ReadTransaction,
    ns: &str,
    digest: Option<&str>,
) -> Result<(u64, u64, bool), MetaError> {
    let usage = txn.open_table(NS_USAGE).map_err(engine)?;
    let (bytes, repos) = usage.get(ns).map_err(engine)?.map_or((0, 0), |v| v.value());
    let holds = match digest {
        Some(d) => txn
            .open_table(NS_CONTENT)
            .map_err(engine)?
            .get(key2(ns, d).as_str())
            .map_err(engine)?
            .is_some(),
        None => false,
    };
    Ok((bytes, repos, holds))
}

/// Every namespace's stored bytes, largest first, at most `n`.
pub(super) fn largest(txn: &ReadTransaction, n: usize) -> Result<Vec<(String, u64)>, MetaError> {
    let mut all = Vec::new();
    for entry in txn
        .open_table(NS_USAGE)
        .map_err(engine)?
        .iter()
        .map_err(engine)?
    {
        let (k, v) = entry.map_err(engine)?;
        all.push((k.value().to_string(), v.value().0));
    }
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(n);
    Ok(all)
}
