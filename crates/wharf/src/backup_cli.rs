//! `wharf backup --to DIR` and `wharf restore --from DIR`: a whole
//! registry's tenants copied out of a running node into a directory, and
//! back into another node, through the admin API (`docs/backup.md`).
//!
//! Both go through a running node rather than reading its stores: the
//! node holds the embedded database's lock while it serves, and through
//! its admin API the same commands work whatever the backends are
//! (embedded and filesystem, or PostgreSQL and S3). They reuse the routes
//! a tenant move uses: the per-tenant NDJSON export and its `sync` import,
//! and the blob copies under a named garbage-collection hold.
//!
//! A backup directory holds `tenants/<tenant>.ndjson` (the export, cut to
//! a consistent state, see [`Consistent`]), `blobs/sha256/<hex>` (each
//! blob once, its digest checked as it was written) and, written last,
//! `wharf-backup.json`, whose presence marks the backup complete.
//!
//! Owns: the backup directory's layout and its summary file, taking the
//! export of each tenant and cutting it to a state that existed, copying
//! and verifying blobs with bounded parallelism, and the order of a
//! restore (blobs under a hold, then the imports, then the hold released).
//!
//! Must never: write into a backup directory that holds anything (a
//! backup is never mixed with another), restore into a node that holds
//! tenants unless told to (`--force`), keep a blob whose bytes do not hash
//! to its digest, hold a blob in memory (bodies stream to and from files),
//! or print a secret (an export holds password hashes: the directory is
//! created mode 0700 and its files 0600).

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::Args;
use reqwest::blocking::{Client, Response};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::admin_cli::connection::Connection;

/// The summary file; written last, so a backup without it is incomplete.
const SUMMARY: &str = "wharf-backup.json";
/// The layout version this code writes and reads.
const FORMAT: u64 = 1;
/// Longest wait for a TCP connection to the admin port.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for one tenant's export or import, start to end.
const TENANT_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// `wharf backup`.
#[derive(Args, Debug)]
pub struct BackupArgs {
    #[command(flatten)]
    connection: Connection,
    /// Directory to write the backup into: new, or empty.
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    /// Only this tenant; repeat for several [default: every tenant].
    #[arg(long = "tenant", value_name = "T")]
    tenants: Vec<String>,
    /// Blobs copied at once.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=32))]
    parallel: u16,
}

/// `wharf restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    #[command(flatten)]
    connection: Connection,
    /// A directory `wharf backup` wrote.
    #[arg(long, value_name = "DIR")]
    from: PathBuf,
    /// Restore even though the node already holds tenants: the backup's
    /// tenants are made exactly as backed up (what they hold beyond it is
    /// deleted); other tenants are left alone.
    #[arg(long)]
    force: bool,
    /// Blobs copied at once.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=32))]
    parallel: u16,
}

pub fn run_backup(args: BackupArgs) -> ExitCode {
    finish("backup", backup(&args))
}

pub fn run_restore(args: RestoreArgs) -> ExitCode {
    finish("restore", restore(&args))
}

fn finish(what: &str, outcome: Result<Value, String>) -> ExitCode {
    match outcome {
        Ok(summary) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&summary).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wharf {what}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The admin API as these commands use it: a base URL, the
/// `Authorization` value, one HTTP client.
struct Api {
    base: Url,
    auth: Option<String>,
    client: Client,
}

impl Api {
    fn new(connection: &Connection) -> Result<Api, String> {
        let (base, auth) = connection.resolve()?;
        let client = Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(None)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("setting up the HTTP client: {e}"))?;
        Ok(Api { base, auth, client })
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        timeout: Duration,
    ) -> reqwest::blocking::RequestBuilder {
        let url = format!("{}{path}", self.base.as_str().trim_end_matches('/'));
        let mut r = self.client.request(method, url).timeout(timeout);
        if let Some(auth) = &self.auth {
            if let Ok(mut v) = HeaderValue::from_str(auth) {
                v.set_sensitive(true);
                r = r.header(AUTHORIZATION, v);
            }
        }
        r
    }

    /// Sends `r`; the response when it succeeded, else what went wrong.
    fn send(&self, what: &str, r: reqwest::blocking::RequestBuilder) -> Result<Response, String> {
        let resp = r.send().map_err(|e| {
            if e.is_connect() {
                format!(
                    "{what}: cannot connect to {} (is the node running, and is --url its admin port?)",
                    self.base
                )
            } else {
                format!("{what}: {e}")
            }
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                let e = &v["errors"][0];
                Some(format!(
                    "{} {}",
                    e["code"].as_str()?,
                    e["message"].as_str()?
                ))
            })
            .unwrap_or_else(|| text.chars().take(200).collect());
        Err(format!("{what}: {} {message}", status.as_u16()))
    }

    fn json(&self, method: Method, path: &str) -> Result<Value, String> {
        let r = self.request(method.clone(), path, Duration::from_secs(60));
        self.send(&format!("{method} {path}"), r)?
            .json()
            .map_err(|e| format!("{path}: the answer is not JSON: {e}"))
    }

    fn tenants(&self) -> Result<Vec<String>, String> {
        let v = self.json(Method::GET, "/admin/v1/tenants")?;
        Ok(v["tenants"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// How long copying `size` bytes may take: two minutes, plus a second per
/// MiB (a copy slower than 1 MiB/s is stuck, not slow).
fn blob_timeout(size: u64) -> Duration {
    Duration::from_secs(120 + size / (1 << 20))
}

/// A tenant name as a file name and path segment: tenant names are
/// repository name components, which are both safe as they are.
fn checked_tenant(name: &str) -> Result<&str, String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && !name.starts_with('.');
    ok.then_some(name)
        .ok_or_else(|| format!("{name:?} is not a tenant name"))
}

/// `sha256:<hex>` as its file in the backup, refusing anything else.
fn blob_file(dir: &Path, digest: &str) -> Result<PathBuf, String> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        })
        .ok_or_else(|| format!("{digest:?} is not a sha256 digest"))?;
    Ok(dir.join("blobs").join("sha256").join(hex))
}

fn private_dir(path: &Path) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn private_file(path: &Path) -> Result<File, String> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(0o600);
    }
    o.open(path)
        .map_err(|e| format!("creating {}: {e}", path.display()))
}

/// Writes through to `inner` while hashing and counting.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

// ---- backup ----

fn backup(args: &BackupArgs) -> Result<Value, String> {
    let api = Api::new(&args.connection)?;
    let dir = &args.to;
    if let Ok(mut entries) = std::fs::read_dir(dir) {
        if entries.next().is_some() {
            return Err(format!(
                "{} is not empty: back up into a new or empty directory",
                dir.display()
            ));
        }
    }
    let started = Instant::now();
    let mut tenants = api.tenants()?;
    if !args.tenants.is_empty() {
        for t in &args.tenants {
            if !tenants.contains(t) {
                return Err(format!("the node has no tenant {t}"));
            }
        }
        tenants = args.tenants.clone();
    }
    for t in &tenants {
        checked_tenant(t)?;
    }
    private_dir(dir)?;
    private_dir(&dir.join("tenants"))?;
    private_dir(&dir.join("blobs").join("sha256"))?;

    // Each tenant's export as the node streams it, and the blobs it names.
    let mut blobs: BTreeMap<String, u64> = BTreeMap::new();
    for t in &tenants {
        let raw = dir.join("tenants").join(format!("{t}.export"));
        let path = format!("/admin/v1/tenants/{t}/export");
        let mut resp = api.send(
            &format!("exporting tenant {t}"),
            api.request(Method::GET, &path, TENANT_TIMEOUT),
        )?;
        let mut out = BufWriter::new(private_file(&raw)?);
        resp.copy_to(&mut out)
            .map_err(|e| format!("exporting tenant {t}: {e} (the export was cut short)"))?;
        out.flush().map_err(|e| format!("{}: {e}", raw.display()))?;
        for line in lines(&raw)? {
            let v = line?;
            if v["kind"] == "blob" {
                let digest = v["digest"].as_str().unwrap_or_default().to_string();
                blobs.insert(digest, v["size"].as_u64().unwrap_or(0));
            }
        }
    }

    // Every blob once, verified as written.
    let fetched = copy_out(&api, dir, &blobs, args.parallel)?;

    // Each export cut to a state that existed.
    let mut summary_tenants = Vec::new();
    let mut totals = Consistent::default();
    for t in &tenants {
        let raw = dir.join("tenants").join(format!("{t}.export"));
        let kept = dir.join("tenants").join(format!("{t}.ndjson"));
        let mut cut = Consistent::default();
        let mut out = BufWriter::new(private_file(&kept)?);
        for line in lines(&raw)? {
            let v = line?;
            if cut.keep(&v, &fetched.stored) {
                serde_json::to_writer(&mut out, &v).map_err(|e| e.to_string())?;
                out.write_all(b"\n").map_err(|e| e.to_string())?;
            }
        }
        out.flush()
            .map_err(|e| format!("{}: {e}", kept.display()))?;
        out.get_ref()
            .sync_all()
            .map_err(|e| format!("{}: {e}", kept.display()))?;
        std::fs::remove_file(&raw).map_err(|e| format!("{}: {e}", raw.display()))?;
        summary_tenants
            .push(json!({"name": t, "kept": cut.kept_json(), "left_out": cut.left_json()}));
        totals.add(&cut);
    }
    let summary = json!({
        "format": FORMAT,
        "created_unix": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        "source": api.base.as_str(),
        "tenants": summary_tenants,
        "kept": totals.kept_json(),
        "left_out": totals.left_json(),
        "blobs": fetched.stored.len(),
        "blob_bytes": fetched.bytes,
        "blobs_gone": fetched.gone,
        "seconds": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    });
    let tmp = dir.join(format!("{SUMMARY}.tmp"));
    let mut f = private_file(&tmp)?;
    f.write_all(
        serde_json::to_string_pretty(&summary)
            .unwrap_or_default()
            .as_bytes(),
    )
    .and_then(|_| f.sync_all())
    .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(SUMMARY)).map_err(|e| format!("{}: {e}", tmp.display()))?;
    Ok(summary)
}

/// The lines of an NDJSON file, each parsed.
fn lines(path: &Path) -> Result<impl Iterator<Item = Result<Value, String>>, String> {
    let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let shown = path.display().to_string();
    Ok(BufReader::new(f)
        .lines()
        .filter(|l| !matches!(l, Ok(text) if text.trim().is_empty()))
        .enumerate()
        .map(move |(n, l)| {
            let l = l.map_err(|e| format!("{shown}: {e}"))?;
            serde_json::from_str(&l).map_err(|e| format!("{shown} line {}: {e}", n + 1))
        }))
}

/// What the blob copy ended with.
struct Fetched {
    /// Digests stored in the backup, verified.
    stored: HashSet<String>,
    bytes: u64,
    /// Blobs the export named but the node no longer had (removed while
    /// the backup ran); what needed them is left out.
    gone: u64,
}

/// Copies `blobs` out of the node into `dir`, `parallel` at a time.
fn copy_out(
    api: &Api,
    dir: &Path,
    blobs: &BTreeMap<String, u64>,
    parallel: u16,
) -> Result<Fetched, String> {
    let queue = Mutex::new(blobs.iter().collect::<Vec<_>>());
    let stored = Mutex::new(HashSet::new());
    let (bytes, gone) = (AtomicU64::new(0), AtomicU64::new(0));
    let failed: Mutex<Option<String>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let Some((digest, size)) = queue.lock().expect("queue").pop() else {
                        return;
                    };
                    match fetch_blob(api, dir, digest, *size) {
                        Ok(Some(n)) => {
                            bytes.fetch_add(n, Ordering::Relaxed);
                            stored.lock().expect("stored").insert(digest.clone());
                        }
                        Ok(None) => {
                            gone.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            stop.store(true, Ordering::Relaxed);
                            let mut first = failed.lock().expect("failed");
                            if first.is_none() {
                                *first = Some(e);
                            }
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().expect("failed") {
        return Err(e);
    }
    Ok(Fetched {
        stored: stored.into_inner().expect("stored"),
        bytes: bytes.into_inner(),
        gone: gone.into_inner(),
    })
}

/// One blob into the backup, its digest and size checked before it is
/// kept; `None` when the node no longer has it.
fn fetch_blob(api: &Api, dir: &Path, digest: &str, size: u64) -> Result<Option<u64>, String> {
    let path = blob_file(dir, digest)?;
    let r = api.request(
        Method::GET,
        &format!("/admin/v1/blobs/{digest}"),
        blob_timeout(size),
    );
    let mut resp = match r.send() {
        Ok(resp) if resp.status() == StatusCode::NOT_FOUND => return Ok(None),
        Ok(resp) => resp,
        Err(e) => return Err(format!("copying blob {digest}: {e}")),
    };
    if !resp.status().is_success() {
        return Err(format!("copying blob {digest}: {}", resp.status()));
    }
    let part = path.with_extension("part");
    let mut out = Hashing {
        inner: BufWriter::new(private_file(&part)?),
        hash: Sha256::new(),
        len: 0,
    };
    resp.copy_to(&mut out)
        .map_err(|e| format!("copying blob {digest}: {e}"))?;
    out.flush()
        .map_err(|e| format!("{}: {e}", part.display()))?;
    let got = format!("sha256:{}", hex::encode(out.hash.finalize()));
    if got != digest || out.len != size {
        let _ = std::fs::remove_file(&part);
        return Err(format!(
            "blob {digest}: the node sent {} bytes hashing to {got}, expected {size} bytes",
            out.len
        ));
    }
    out.inner
        .get_ref()
        .sync_all()
        .map_err(|e| format!("{}: {e}", part.display()))?;
    std::fs::rename(&part, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(size))
}

/// Cuts an export, taken while the node served, to a state that existed.
///
/// An export reads each repository's blob links, then its manifests, then
/// its tags, page by page; a push that lands meanwhile can show a manifest
/// whose blobs were linked after their page was read, or a tag whose
/// manifest came after its page. Each repository is therefore kept as of
/// the moment its blob links were read, less what was removed later: a
/// blob is kept when its bytes were copied; a manifest when every blob it
/// needs and every child it lists are kept (children come first in the
/// export); a tag when its manifest is kept. Whatever is cut was written
/// while the backup ran and is counted in `left_out`.
#[derive(Default)]
struct Consistent {
    repo_blobs: HashSet<String>,
    repo_manifests: HashSet<String>,
    kept: [u64; 4],
    left: [u64; 3],
}

impl Consistent {
    /// Whether line `v` stays.
    fn keep(&mut self, v: &Value, stored: &HashSet<String>) -> bool {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        match v["kind"].as_str() {
            Some("repository") => {
                self.repo_blobs.clear();
                self.repo_manifests.clear();
                self.kept[0] += 1;
                true
            }
            Some("blob") => {
                let d = s("digest");
                let keep = stored.contains(&d);
                if keep {
                    self.repo_blobs.insert(d);
                }
                self.count(1, keep)
            }
            Some("manifest") => {
                let keep = self.complete(v);
                if keep {
                    self.repo_manifests.insert(s("digest"));
                }
                self.count(2, keep)
            }
            Some("tag") => {
                let keep = self.repo_manifests.contains(&s("digest"));
                self.count(3, keep)
            }
            _ => true,
        }
    }

    fn count(&mut self, i: usize, keep: bool) -> bool {
        match keep {
            true => self.kept[i] += 1,
            false => self.left[i - 1] += 1,
        }
        keep
    }

    /// Whether everything manifest line `v` needs is kept.
    fn complete(&self, v: &Value) -> bool {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v["body"].as_str().unwrap_or_default())
            .unwrap_or_default();
        let media_type = v["media_type"].as_str();
        let Ok(m) = wharf_core::manifest::Manifest::parse(media_type, &bytes) else {
            return false;
        };
        m.required_blobs()
            .all(|b| self.repo_blobs.contains(&b.digest.to_string()))
            && m.manifests
                .iter()
                .all(|c| self.repo_manifests.contains(&c.digest.to_string()))
    }

    fn add(&mut self, other: &Consistent) {
        for i in 0..4 {
            self.kept[i] += other.kept[i];
        }
        for i in 0..3 {
            self.left[i] += other.left[i];
        }
    }

    fn kept_json(&self) -> Value {
        json!({"repositories": self.kept[0], "blobs": self.kept[1],
               "manifests": self.kept[2], "tags": self.kept[3]})
    }

    fn left_json(&self) -> Value {
        json!({"blobs": self.left[0], "manifests": self.left[1], "tags": self.left[2]})
    }
}

// ---- restore ----

fn restore(args: &RestoreArgs) -> Result<Value, String> {
    let dir = &args.from;
    let text = std::fs::read_to_string(dir.join(SUMMARY)).map_err(|e| {
        format!(
            "{}: {e} (a backup is complete only once `wharf backup` wrote {SUMMARY})",
            dir.join(SUMMARY).display()
        )
    })?;
    let summary: Value = serde_json::from_str(&text).map_err(|e| format!("{SUMMARY}: {e}"))?;
    if summary["format"].as_u64() != Some(FORMAT) {
        return Err(format!(
            "{SUMMARY}: format {} is not {FORMAT}, the one this wharf reads",
            summary["format"]
        ));
    }
    let tenants: Vec<String> = summary["tenants"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for t in &tenants {
        checked_tenant(t)?;
    }
    let api = Api::new(&args.connection)?;
    let present = api.tenants()?;
    if !present.is_empty() && !args.force {
        return Err(format!(
            "the node already holds tenants ({}): restore into a node started over an empty \
             data directory (or an empty database and bucket), or give --force to make the \
             backup's tenants exactly as backed up",
            present.join(", ")
        ));
    }
    let started = Instant::now();
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| format!("no randomness: {e}"))?;
    let hold = format!("restore-{}", hex::encode(random));
    let outcome = restore_into(&api, dir, &tenants, &hold, args.parallel);
    // The hold goes whatever happened: what was imported is linked, and
    // what was not is the collector's, as after any failed copy.
    let released = api.json(Method::DELETE, &format!("/admin/v1/holds/{hold}"));
    let (blobs, imports) = outcome?;
    released?;
    Ok(json!({
        "tenants": imports,
        "blobs": blobs.0,
        "blob_bytes": blobs.1,
        "seconds": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    }))
}

type Restored = ((u64, u64), Value);

fn restore_into(
    api: &Api,
    dir: &Path,
    tenants: &[String],
    hold: &str,
    parallel: u16,
) -> Result<Restored, String> {
    let blob_dir = dir.join("blobs").join("sha256");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&blob_dir).map_err(|e| format!("{}: {e}", blob_dir.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".part") {
            continue;
        }
        let digest = format!("sha256:{name}");
        blob_file(dir, &digest)?;
        files.push(digest);
    }
    let count = files.len() as u64;
    let queue = Mutex::new(files);
    let bytes = AtomicU64::new(0);
    let failed: Mutex<Option<String>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let Some(digest) = queue.lock().expect("queue").pop() else {
                        return;
                    };
                    match put_blob(api, dir, &digest, hold) {
                        Ok(n) => {
                            bytes.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) => {
                            stop.store(true, Ordering::Relaxed);
                            let mut first = failed.lock().expect("failed");
                            if first.is_none() {
                                *first = Some(e);
                            }
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().expect("failed") {
        return Err(e);
    }
    let mut imports = serde_json::Map::new();
    for t in tenants {
        let path = dir.join("tenants").join(format!("{t}.ndjson"));
        let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        let r = api
            .request(
                Method::POST,
                &format!("/admin/v1/tenants/{t}/import?mode=sync"),
                TENANT_TIMEOUT,
            )
            .header(CONTENT_TYPE, "application/x-ndjson")
            .body(reqwest::blocking::Body::sized(file, len));
        let answer: Value = api
            .send(&format!("importing tenant {t}"), r)?
            .json()
            .map_err(|e| format!("importing tenant {t}: the answer is not JSON: {e}"))?;
        imports.insert(t.clone(), answer);
    }
    Ok(((count, bytes.into_inner()), Value::Object(imports)))
}

/// One blob of the backup into the node under `hold`; its size. The node
/// checks the digest as it stores the bytes.
fn put_blob(api: &Api, dir: &Path, digest: &str, hold: &str) -> Result<u64, String> {
    let path = blob_file(dir, digest)?;
    let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let body = reqwest::blocking::Body::sized(file, len);
    let r = api
        .request(
            Method::PUT,
            &format!("/admin/v1/blobs/{digest}?hold={hold}"),
            blob_timeout(len),
        )
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(body);
    api.send(&format!("restoring blob {digest}"), r)?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_line(digest: &str, blobs: &[&str], children: &[&str]) -> Value {
        let body = if children.is_empty() {
            let layers: Vec<Value> = blobs[1..]
                .iter()
                .map(|d| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": 1}))
                .collect();
            json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blobs[0], "size": 1},
                   "layers": layers})
        } else {
            let m: Vec<Value> = children
                .iter()
                .map(|d| json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": 1}))
                .collect();
            json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": m})
        };
        let media = body["mediaType"].clone();
        json!({"kind": "manifest", "repo": "acme/app", "digest": digest, "media_type": media,
               "body": base64::engine::general_purpose::STANDARD.encode(body.to_string())})
    }

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn an_export_taken_during_pushes_is_cut_to_what_existed() {
        let stored: HashSet<String> = [d('a'), d('b'), d('c')].into_iter().collect();
        let mut cut = Consistent::default();
        let blob = |x: &str| json!({"kind": "blob", "repo": "acme/app", "digest": x, "size": 1});
        let tag =
            |t: &str, x: &str| json!({"kind": "tag", "repo": "acme/app", "tag": t, "digest": x});
        let lines = vec![
            (json!({"kind": "tenant", "record": {}}), true),
            (json!({"kind": "repository", "name": "acme/app"}), true),
            (blob(&d('a')), true),
            (blob(&d('b')), true),
            // Named by the export, gone from the store before it was copied.
            (blob(&d('e')), false),
            // Complete: config a, layer b.
            (manifest_line(&d('1'), &[&d('a'), &d('b')], &[]), true),
            // Its layer c was linked after the blob page was read.
            (manifest_line(&d('2'), &[&d('a'), &d('c')], &[]), false),
            // An index of a kept and a cut manifest is cut; of kept ones, kept.
            (manifest_line(&d('3'), &[], &[&d('1'), &d('2')]), false),
            (manifest_line(&d('4'), &[], &[&d('1')]), true),
            (tag("v1", &d('1')), true),
            (tag("v2", &d('2')), false),
            (tag("multi", &d('4')), true),
            // A new repository starts afresh: its manifest needs its own links.
            (json!({"kind": "repository", "name": "acme/other"}), true),
            (manifest_line(&d('5'), &[&d('a'), &d('b')], &[]), false),
        ];
        for (line, expected) in lines {
            assert_eq!(cut.keep(&line, &stored), expected, "{line}");
        }
        assert_eq!(cut.kept, [2, 2, 2, 2]);
        assert_eq!(cut.left, [1, 3, 1]);
    }

    #[test]
    fn only_sha256_digests_and_tenant_names_become_paths() {
        let dir = Path::new("/b");
        assert!(blob_file(dir, &d('a')).is_ok());
        for bad in ["sha256:../../etc", "sha512:aa", &d('A'), "sha256:abc"] {
            assert!(blob_file(dir, bad).is_err(), "{bad}");
        }
        assert!(checked_tenant("acme-1.x").is_ok());
        for bad in ["", "../x", "a/b", "Acme", ".hidden"] {
            assert!(checked_tenant(bad).is_err(), "{bad}");
        }
    }
}
