//! The embedded store's references table: which manifests of which
//! repositories reference a digest (a blob, or a manifest an index lists).
//! Garbage collection asks it whether a digest or a link is still needed,
//! so it holds one entry per reference of every manifest: four or more per
//! manifest, the largest table of the file once it held text keys.
//!
//! Owns: the table `refs`, its key form, and the one-time move of the
//! text-keyed table of earlier versions (by the same name) into that form.
//! The name is kept on purpose: a build from before the move that opens a
//! moved file stops at "table type mismatch" instead of finding no
//! references and letting garbage collection unlink what manifests use.
//!
//! A key is `digest repo \0 manifest`, each digest as its algorithm's byte
//! and raw hash (see [`record`](super::record)): 33 + repo + 1 + 33 bytes for
//! sha256, half of the text form, in the same order (lowercase hex sorts as
//! its bytes do, and the algorithm bytes as the algorithm names). So every
//! reference to a digest, or to a digest from one repository, is a range
//! scan from a prefix, as before.
//!
//! Must never: leave a file with references in both forms (the move is one
//! transaction with the mark that it happened), or open a file whose mark
//! names a newer form.

use std::path::Path;
use std::time::Instant;

use redb::{ReadableTable, Table, TableDefinition, TableHandle, WriteTransaction};
use wharf_core::Digest;

use super::{corrupt, engine, SEP};
use crate::MetaError;

/// The references, by digest.
const REFS: TableDefinition<&[u8], ()> = TableDefinition::new("refs");
/// Earlier versions' table: `digest\0repo\0manifest` as text.
const TEXT_REFS: TableDefinition<&str, ()> = TableDefinition::new("refs");
/// [`TEXT_REFS`] while its entries are moved.
const MOVING: TableDefinition<&str, ()> = TableDefinition::new("refs_text");

/// The `schema` entry naming the key form of [`REFS`].
const FORMAT_KEY: &str = "refs_key_format";
const FORM: u64 = 1;

/// Creates the table, or moves a text-keyed one of an earlier version into
/// it (in the caller's transaction, logged with its count and time), or
/// refuses a file marked by a newer build. The old table's pages are freed,
/// not returned: the file keeps its size and later writes reuse them.
pub(super) fn open(txn: &WriteTransaction, path: &Path) -> Result<(), MetaError> {
    let marked = super::gc::mark_form(txn, path, FORMAT_KEY, FORM, "reference keys")?;
    let has_text = marked.is_none()
        && txn
            .list_tables()
            .map_err(engine)?
            .any(|t| t.name() == TEXT_REFS.name());
    if !has_text {
        txn.open_table(REFS).map_err(engine)?;
        return Ok(());
    }
    let started = Instant::now();
    let mut moved = 0u64;
    txn.rename_table(TEXT_REFS, MOVING).map_err(engine)?;
    {
        let text = txn.open_table(MOVING).map_err(engine)?;
        let mut refs = txn.open_table(REFS).map_err(engine)?;
        for entry in text.iter().map_err(engine)? {
            let (k, _) = entry.map_err(engine)?;
            let mut parts = k.value().splitn(3, SEP);
            let (Some(digest), Some(repo), Some(manifest)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(corrupt("reference", format_args!("{:?}", k.value())));
            };
            refs.insert(key(digest, repo, manifest)?.as_slice(), ())
                .map_err(engine)?;
            moved += 1;
        }
    }
    txn.delete_table(MOVING).map_err(engine)?;
    tracing::info!(
        references = moved,
        seconds = started.elapsed().as_secs_f64(),
        "metadata: references moved to binary keys"
    );
    Ok(())
}

/// The table, opened in `txn`.
pub(super) fn table<'t>(
    txn: &'t WriteTransaction,
) -> Result<Table<'t, &'static [u8], ()>, MetaError> {
    txn.open_table(REFS).map_err(engine)
}

/// The entry for "`manifest` in `repo` references `digest`".
pub(super) fn key(digest: &str, repo: &str, manifest: &str) -> Result<Vec<u8>, MetaError> {
    let mut out = prefix(digest, Some(repo))?;
    put(&mut out, manifest)?;
    Ok(out)
}

/// The start of every entry for `digest`, or for `digest` from `repo`.
pub(super) fn prefix(digest: &str, repo: Option<&str>) -> Result<Vec<u8>, MetaError> {
    let mut out = Vec::with_capacity(66 + repo.map_or(0, str::len) + 2);
    put(&mut out, digest)?;
    if let Some(repo) = repo {
        out.extend_from_slice(repo.as_bytes());
        out.push(0);
    }
    Ok(out)
}

fn put(out: &mut Vec<u8>, digest: &str) -> Result<(), MetaError> {
    let d: Digest = digest.parse().map_err(|e| corrupt("digest", e))?;
    super::record::put_digest(out, &d);
    Ok(())
}

/// One entry, read back: who references the digest its key starts with.
pub(super) struct Reference {
    pub repo: String,
    pub manifest: Digest,
}

/// Reads an entry's key.
pub(super) fn parse(mut key: &[u8]) -> Result<Reference, MetaError> {
    let bad = |why: String| corrupt("reference", why);
    super::record::take_digest(&mut key).map_err(bad)?;
    let at = key
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| bad("no end to the repository".into()))?;
    let repo = std::str::from_utf8(&key[..at])
        .map_err(|e| bad(e.to_string()))?
        .to_string();
    let mut rest = &key[at + 1..];
    let manifest = super::record::take_digest(&mut rest).map_err(bad)?;
    if !rest.is_empty() {
        return Err(bad(format!("{} bytes past the key's end", rest.len())));
    }
    Ok(Reference { repo, manifest })
}

/// The first entry under `prefix`, if any.
pub(super) fn first_under(
    table: &impl ReadableTable<&'static [u8], ()>,
    prefix: &[u8],
) -> Result<Option<Reference>, MetaError> {
    let first = table
        .range::<&[u8]>(prefix..)
        .map_err(engine)?
        .next()
        .transpose()
        .map_err(engine)?;
    match first {
        Some((k, _)) if k.value().starts_with(prefix) => parse(k.value()).map(Some),
        _ => Ok(None),
    }
}

/// Every digest referenced, each once, in order.
pub(super) fn digests(txn: &redb::ReadTransaction) -> Result<Vec<Digest>, MetaError> {
    let table = txn.open_table(REFS).map_err(engine)?;
    let mut out: Vec<Digest> = Vec::new();
    for entry in table.iter().map_err(engine)? {
        let (k, _) = entry.map_err(engine)?;
        let mut key = k.value();
        let d = super::record::take_digest(&mut key).map_err(|e| corrupt("reference", e))?;
        if out.last() != Some(&d) {
            out.push(d);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(seed: &str) -> String {
        Digest::sha256_of(seed.as_bytes()).to_string()
    }

    #[test]
    fn a_key_reads_back_and_is_half_the_text() {
        let (d, m) = (digest("blob"), digest("manifest"));
        let k = key(&d, "t01/app", &m).unwrap();
        let text = format!("{d}\0t01/app\0{m}");
        assert!(
            k.len() * 2 <= text.len() + 10,
            "{} vs {}",
            k.len(),
            text.len()
        );
        let r = parse(&k).unwrap();
        assert_eq!((r.repo.as_str(), r.manifest.to_string()), ("t01/app", m));
        assert!(k.starts_with(&prefix(&d, Some("t01/app")).unwrap()));
        assert!(k.starts_with(&prefix(&d, None).unwrap()));
        assert!(!k.starts_with(&prefix(&d, Some("t01/ap")).unwrap()));
    }

    #[test]
    fn keys_sort_as_their_text_did() {
        let mut pairs: Vec<(String, Vec<u8>)> = (0..200)
            .map(|i| {
                let (d, m) = (digest(&format!("d{}", i % 7)), digest(&format!("m{i}")));
                let repo = format!("t{}/r{}", i % 3, i % 11);
                (format!("{d}\0{repo}\0{m}"), key(&d, &repo, &m).unwrap())
            })
            .collect();
        let sha512 = "sha512:".to_string() + &"ab".repeat(64);
        pairs.push((
            format!("{sha512}\0a/b\0{}", digest("x")),
            key(&sha512, "a/b", &digest("x")).unwrap(),
        ));
        let mut by_text = pairs.clone();
        by_text.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(by_text, pairs);
    }

    #[test]
    fn malformed_keys_and_digests_are_refused() {
        assert!(key("sha256:zz", "a", &digest("m")).is_err());
        let k = key(&digest("d"), "a", &digest("m")).unwrap();
        for cut in 0..k.len() {
            assert!(parse(&k[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = k.clone();
        long.push(1);
        assert!(parse(&long).is_err());
    }
}
