//! What each table of an embedded metadata file takes: entries, pages and
//! bytes, to see where a store's size per manifest goes. Run it on a copy,
//! or on the file of a stopped node (it opens the file for writing, as a
//! node does):
//!
//!     cargo run --release -p wharf-meta --example table_sizes -- DATA/meta.redb

use redb::{Database, ReadableTableMetadata, TableHandle};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: table_sizes FILE")?;
    let db = Database::open(&path)?;
    let txn = db.begin_read()?;
    let mut rows = Vec::new();
    for handle in txn.list_tables()? {
        let table = txn.open_untyped_table(handle.clone())?;
        let s = table.stats()?;
        let pages = s.leaf_pages() + s.branch_pages();
        rows.push((pages, handle.name().to_string(), table.len()?, s));
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    println!(
        "{:<22} {:>10} {:>9} {:>7} {:>12} {:>11} {:>12} {:>7}",
        "table", "entries", "pages", "height", "stored B", "meta B", "fragment B", "B/entry"
    );
    let mut total = 0;
    for (pages, name, len, s) in rows {
        total += pages;
        println!(
            "{:<22} {:>10} {:>9} {:>7} {:>12} {:>11} {:>12} {:>7}",
            name,
            len,
            pages,
            s.tree_height(),
            s.stored_bytes(),
            s.metadata_bytes(),
            s.fragmented_bytes(),
            (pages * 4096).checked_div(len).unwrap_or(0)
        );
    }
    let file = std::fs::metadata(&path)?.len();
    println!(
        "pages in tables: {total} ({} MiB); file {} MiB",
        (total * 4096) >> 20,
        file >> 20
    );
    Ok(())
}
