//! The HAProxy writer: keeps the router's two map files and the running
//! HAProxy's copy of them equal to the fleet's routes.
//!
//! The router HAProxy picks a tenant's backend (`cell_<id>`) from
//! `hosts.map` (`<hostname> <backend>`, for tenants with their own
//! hostname) and `tenants.map` (`<tenant> <backend>`, by the first path
//! component). On every change [`Router::sync`] (a) rewrites the files
//! atomically (a temporary file, fsynced, renamed over the old one), so an
//! HAProxy (re)started later loads the current routes, and (b) tells the
//! running HAProxy through its runtime API on a unix socket (`set map`,
//! `add map` for a new key, `del map` for a removed one), checking every
//! answer and bounding every exchange by a timeout. The first sync after
//! start, and the first after any failure, reconciles against what HAProxy
//! actually holds (`show map`), so a restarted HAProxy is made consistent.
//!
//! Owns: the map files, the runtime API conversation, [`RouteTable`].
//! Must never: decide a route (routes come from the tenants' home cells),
//! or stall the service: an HAProxy that does not answer is a failed sync,
//! retried on the next one, and HAProxy keeps its last map meanwhile, so
//! the data path does not need this process (design invariant 3).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::Mutex;

/// The map file of tenants' own hostnames.
pub const HOSTS_MAP: &str = "hosts.map";
/// The map file of tenant names.
pub const TENANTS_MAP: &str = "tenants.map";
/// The largest answer read from the runtime API.
const MAX_ANSWER: usize = 64 << 20;

/// The HAProxy backend of a cell.
pub fn backend(cell: u32) -> String {
    format!("cell_{cell}")
}

/// Every route: hostname → backend and tenant → backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteTable {
    /// Hostname (lower case) → backend.
    pub hosts: BTreeMap<String, String>,
    /// Tenant → backend.
    pub tenants: BTreeMap<String, String>,
}

impl RouteTable {
    /// Routes for `(tenant, hostname, home cell)` triples.
    pub fn from_homes<'a>(
        homes: impl IntoIterator<Item = (&'a str, Option<&'a str>, u32)>,
    ) -> RouteTable {
        let mut t = RouteTable::default();
        for (name, host, cell) in homes {
            t.tenants.insert(name.to_string(), backend(cell));
            if let Some(h) = host {
                t.hosts.insert(h.to_ascii_lowercase(), backend(cell));
            }
        }
        t
    }
}

/// Where the router's files and socket are.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// The directory holding `hosts.map` and `tenants.map`, spelled as
    /// HAProxy's configuration spells it (the runtime API names a map by
    /// the path it was loaded from).
    pub maps_dir: PathBuf,
    /// HAProxy's runtime API socket (`stats socket … level admin`); `None`:
    /// only the files are written.
    pub socket: Option<PathBuf>,
    /// Bounds one runtime API exchange.
    pub timeout: Duration,
}

/// What a sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Whether the files were rewritten.
    pub files_written: bool,
    /// Runtime API commands that changed an entry.
    pub commands: usize,
}

/// Keeps HAProxy's maps equal to a [`RouteTable`].
pub struct Router {
    config: RouterConfig,
    /// What the files hold and what HAProxy holds, as far as we know:
    /// `None` until a sync succeeded, and again after one failed.
    state: Mutex<(Option<RouteTable>, Option<RouteTable>)>,
}

impl Router {
    /// A router writing into `config.maps_dir`.
    pub fn new(config: RouterConfig) -> Router {
        Router {
            config,
            state: Mutex::new((None, None)),
        }
    }

    fn map_path(&self, file: &str) -> PathBuf {
        self.config.maps_dir.join(file)
    }

    /// Makes the files and the running HAProxy hold `table`.
    pub async fn sync(&self, table: &RouteTable) -> Result<SyncReport, String> {
        let mut state = self.state.lock().await;
        let mut report = SyncReport::default();
        if state.0.as_ref() != Some(table) {
            state.0 = None;
            write_map(&self.map_path(HOSTS_MAP), &table.hosts).await?;
            write_map(&self.map_path(TENANTS_MAP), &table.tenants).await?;
            state.0 = Some(table.clone());
            report.files_written = true;
        }
        let Some(socket) = self.config.socket.clone() else {
            return Ok(report);
        };
        if state.1.as_ref() == Some(table) {
            return Ok(report);
        }
        let known = state.1.take();
        let api = RuntimeApi {
            socket,
            timeout: self.config.timeout,
        };
        for (file, want, had) in [
            (
                HOSTS_MAP,
                &table.hosts,
                known.as_ref().map(|k| k.hosts.clone()),
            ),
            (
                TENANTS_MAP,
                &table.tenants,
                known.as_ref().map(|k| k.tenants.clone()),
            ),
        ] {
            let path = self.map_path(file);
            let path = path.to_string_lossy();
            let had = match had {
                Some(h) => h,
                None => api.show_map(&path).await?,
            };
            report.commands += api.reconcile(&path, &had, want).await?;
        }
        state.1 = Some(table.clone());
        Ok(report)
    }
}

/// Writes `entries` to `path` atomically: a temporary file beside it,
/// fsynced, renamed over it, and the directory fsynced.
async fn write_map(path: &Path, entries: &BTreeMap<String, String>) -> Result<(), String> {
    let mut text = String::from("# written by wharf fleet serve; edits are overwritten\n");
    for (k, v) in entries {
        check_token(k)?;
        check_token(v)?;
        text.push_str(k);
        text.push(' ');
        text.push_str(v);
        text.push('\n');
    }
    let dir = path
        .parent()
        .ok_or_else(|| format!("{}: no directory", path.display()))?
        .to_path_buf();
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("map"),
        std::process::id()
    ));
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&dir)?.sync_all()
    })
    .await
    .map_err(|e| format!("writing a map: {e}"))?
    .map_err(|e| format!("writing a map file: {e}"))
}

/// A map key or value must be one word of printable ASCII: HAProxy splits
/// map lines and runtime commands on whitespace.
fn check_token(s: &str) -> Result<(), String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic()) || s.contains(';') {
        return Err(format!("{s:?} cannot be a map key or value"));
    }
    Ok(())
}

/// HAProxy's runtime API, one command per connection.
struct RuntimeApi {
    socket: PathBuf,
    timeout: Duration,
}

impl RuntimeApi {
    /// Sends one command; HAProxy's whole answer.
    async fn command(&self, cmd: &str) -> Result<String, String> {
        let exchange = async {
            let mut s = UnixStream::connect(&self.socket)
                .await
                .map_err(|e| format!("HAProxy socket {}: {e}", self.socket.display()))?;
            s.write_all(format!("{cmd}\n").as_bytes())
                .await
                .map_err(|e| format!("HAProxy socket: {e}"))?;
            let mut out = Vec::new();
            (&mut s)
                .take(MAX_ANSWER as u64)
                .read_to_end(&mut out)
                .await
                .map_err(|e| format!("HAProxy socket: {e}"))?;
            Ok(String::from_utf8_lossy(&out).into_owned())
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "HAProxy did not answer {cmd:?} within {:?}",
                self.timeout
            )),
        }
    }

    /// A command whose success is an empty answer.
    async fn change(&self, cmd: &str) -> Result<(), String> {
        let answer = self.command(cmd).await?;
        if answer.trim().is_empty() {
            Ok(())
        } else {
            Err(format!("HAProxy refused {cmd:?}: {}", answer.trim()))
        }
    }

    /// What HAProxy holds in the map loaded from `path`.
    async fn show_map(&self, path: &str) -> Result<BTreeMap<String, String>, String> {
        let answer = self.command(&format!("show map {path}")).await?;
        let mut out = BTreeMap::new();
        for line in answer.lines() {
            let mut f = line.split_whitespace();
            match (f.next(), f.next(), f.next()) {
                (Some(ptr), Some(k), Some(v)) if ptr.starts_with("0x") => {
                    out.insert(k.to_string(), v.to_string());
                }
                (None, _, _) => {}
                _ => return Err(format!("HAProxy: show map {path}: {}", answer.trim())),
            }
        }
        Ok(out)
    }

    /// Brings the map at `path` from `had` to `want`; commands sent.
    async fn reconcile(
        &self,
        path: &str,
        had: &BTreeMap<String, String>,
        want: &BTreeMap<String, String>,
    ) -> Result<usize, String> {
        let mut n = 0;
        for k in had.keys().filter(|k| !want.contains_key(*k)) {
            self.change(&format!("del map {path} {k}")).await?;
            n += 1;
        }
        for (k, v) in want {
            match had.get(k) {
                Some(old) if old == v => {}
                Some(_) => {
                    self.change(&format!("set map {path} {k} {v}")).await?;
                    n += 1;
                }
                None => {
                    self.change(&format!("add map {path} {k} {v}")).await?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_come_from_homes() {
        let t = RouteTable::from_homes([("acme", Some("Reg.Acme.Example"), 3), ("beta", None, 1)]);
        assert_eq!(t.tenants["acme"], "cell_3");
        assert_eq!(t.tenants["beta"], "cell_1");
        assert_eq!(t.hosts["reg.acme.example"], "cell_3");
        assert_eq!(t.hosts.len(), 1);
    }

    #[test]
    fn map_tokens_are_single_words() {
        assert!(check_token("acme").is_ok());
        for bad in ["", "a b", "a;b", "a\nb", "é"] {
            assert!(check_token(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn files_are_rewritten_atomically_and_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let r = Router::new(RouterConfig {
            maps_dir: dir.path().to_path_buf(),
            socket: None,
            timeout: Duration::from_secs(1),
        });
        let t = RouteTable::from_homes([("acme", Some("r.acme.io"), 2)]);
        assert!(r.sync(&t).await.unwrap().files_written);
        assert!(!r.sync(&t).await.unwrap().files_written);
        let hosts = std::fs::read_to_string(dir.path().join(HOSTS_MAP)).unwrap();
        let tenants = std::fs::read_to_string(dir.path().join(TENANTS_MAP)).unwrap();
        assert!(hosts.lines().any(|l| l == "r.acme.io cell_2"));
        assert!(tenants.lines().any(|l| l == "acme cell_2"));
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
