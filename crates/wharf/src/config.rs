//! Configuration of `wharf serve`: defaults, then a TOML file, then
//! environment variables, then flags; later sources win.
//!
//! Owns: the [`ServeArgs`] flags (clap reads the environment for each, so a
//! flag beats its variable), the [`FileConfig`] TOML shape, and merging them
//! into one [`Config`]. Must never: open files other than the config file,
//! or start anything.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

/// Where the registry listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5000";
/// Where data lives unless told otherwise (relative to the working dir).
pub const DEFAULT_DATA_DIR: &str = "./wharf-data";

/// Flags of `wharf serve`. Each can also be set by the environment variable
/// shown, or in the TOML file given by `--config`.
#[derive(Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// TOML configuration file. Its keys are the long flag names with `_`
    /// for `-` (e.g. `data_dir = "/var/lib/wharf"`).
    #[arg(long, env = "WHARF_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to listen on for registry traffic [default: 127.0.0.1:5000].
    /// Port 0 picks a free port (see --addr-file).
    #[arg(long, env = "WHARF_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Directory holding blobs, upload sessions and the embedded metadata
    /// database [default: ./wharf-data].
    #[arg(long, env = "WHARF_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Once listening, write the bound address (`ip:port`) to this file.
    #[arg(long, env = "WHARF_ADDR_FILE")]
    pub addr_file: Option<PathBuf>,

    /// Log filter, e.g. `info` or `wharf=debug` [default: info].
    #[arg(long, env = "WHARF_LOG")]
    pub log: Option<String>,

    /// Memory for cached manifests, in MiB [default: 64].
    #[arg(long, env = "WHARF_MANIFEST_CACHE_MIB")]
    pub manifest_cache_mib: Option<usize>,

    /// Upload sessions older than this many hours are removed [default: 24].
    #[arg(long, env = "WHARF_UPLOAD_EXPIRY_HOURS")]
    pub upload_expiry_hours: Option<u64>,
}

/// The TOML file: every key optional, same names as the flags.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub addr_file: Option<PathBuf>,
    pub log: Option<String>,
    pub manifest_cache_mib: Option<usize>,
    pub upload_expiry_hours: Option<u64>,
}

/// The merged configuration `wharf serve` runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub addr_file: Option<PathBuf>,
    pub log: String,
    pub manifest_cache_bytes: usize,
    pub upload_expiry: Duration,
}

impl Config {
    /// Merges flags/environment (`args`) over the file named by `--config`.
    pub fn load(args: &ServeArgs) -> Result<Config, String> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("reading {}: {e}", path.display()))?;
                toml::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        Ok(Config::merge(args.clone(), file))
    }

    fn merge(args: ServeArgs, file: FileConfig) -> Config {
        Config {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default")),
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            addr_file: args.addr_file.or(file.addr_file),
            log: args.log.or(file.log).unwrap_or_else(|| "info".into()),
            manifest_cache_bytes: args
                .manifest_cache_mib
                .or(file.manifest_cache_mib)
                .unwrap_or(64)
                * 1024
                * 1024,
            upload_expiry: Duration::from_secs(
                args.upload_expiry_hours
                    .or(file.upload_expiry_hours)
                    .unwrap_or(24)
                    * 3600,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = Config::merge(ServeArgs::default(), FileConfig::default());
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.log, "info");
    }

    #[test]
    fn flags_beat_file() {
        let file: FileConfig =
            toml::from_str("listen = \"127.0.0.1:7000\"\ndata_dir = \"/f\"\nlog = \"debug\"")
                .unwrap();
        let args = ServeArgs {
            listen: Some("127.0.0.1:8000".parse().unwrap()),
            ..Default::default()
        };
        let c = Config::merge(args, file);
        assert_eq!(c.listen.port(), 8000, "flag wins");
        assert_eq!(
            c.data_dir,
            PathBuf::from("/f"),
            "file fills what flags leave"
        );
        assert_eq!(c.log, "debug");
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        assert!(toml::from_str::<FileConfig>("lisen = \"x\"").is_err());
    }
}
