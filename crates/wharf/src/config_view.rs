//! The resolved configuration as an operator writes it: every key of the
//! TOML file (the long flag names with `_` for `-`), its value in force and
//! where that value came from, for the start-up log and `wharf check`.
//!
//! Owns: [`entries`], the one list of keys and how each is shown. Must
//! never: print a secret (the S3 secret key, a password in the metadata
//! URL, the notification secret, a webhook URL's query), or read anything
//! but the [`Config`] it is given.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::config::{AuthMode, Config, LogFormat, Source};

/// One key of the configuration in force.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// The TOML key (`--` + the key with `-` for `_` is its flag).
    pub key: &'static str,
    /// The value as a TOML literal; `None` when unset (and nothing is used
    /// in its place).
    pub value: Option<String>,
    /// Where the value came from: `flag or environment`, `config file`,
    /// `default`, or `derived from this machine: …`.
    pub origin: String,
}

/// Keys whose default is derived from the machine.
const DERIVED: [&str; 7] = [
    "max_connections",
    "max_waiting_connections",
    "pull_limit",
    "push_limit",
    "admin_limit",
    "storage_pool",
    "metadata_pool",
];

fn text(s: &str) -> String {
    format!("{s:?}")
}

fn path(p: &Path) -> String {
    text(&p.display().to_string())
}

fn secs(d: Duration) -> String {
    d.as_secs().to_string()
}

/// The metadata URL without its password.
fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((userinfo, host)) if userinfo.contains(':') => {
                let user = userinfo.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}:<hidden>@{host}")
            }
            _ => url.to_string(),
        },
        // key=value form: hide a password=… pair.
        None => url
            .split_whitespace()
            .map(|kv| {
                if kv.starts_with("password=") {
                    "password=<hidden>"
                } else {
                    kv
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// A webhook URL without its query, which may hold the receiver's token.
fn redact_query(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?<hidden>"),
        None => url.to_string(),
    }
}

/// Every key of the configuration in force, in the order of `--help`.
pub fn entries(c: &Config) -> Vec<Entry> {
    let l = &c.limits;
    let s3 = c.s3.as_ref();
    let a = &c.auth;
    let out: Vec<(&'static str, Option<String>)> = vec![
        ("listen", Some(text(&c.listen.to_string()))),
        ("data_dir", Some(path(&c.data_dir))),
        ("addr_file", c.addr_file.as_deref().map(path)),
        ("admin_listen", Some(text(&c.admin_listen.to_string()))),
        ("admin_addr_file", c.admin_addr_file.as_deref().map(path)),
        (
            "metadata_url",
            c.metadata_url.as_deref().map(|u| text(&redact_url(u))),
        ),
        ("migrate", Some(c.migrate.to_string())),
        ("s3_endpoint", s3.map(|s| text(&s.endpoint))),
        ("s3_bucket", s3.map(|s| text(&s.bucket))),
        ("s3_region", s3.map(|s| text(&s.region))),
        ("s3_access_key_id", s3.map(|s| text(&s.access_key_id))),
        ("s3_secret_access_key", s3.map(|_| text("<set, not shown>"))),
        (
            "s3_prefix",
            s3.map(|s| text(&s.prefix)).filter(|p| p != "\"\""),
        ),
        (
            "s3_presign_redirects",
            s3.map(|s| s.presign_redirects.to_string()),
        ),
        (
            "storage_max_connections",
            c.storage_max_connections.map(|n| n.to_string()),
        ),
        ("cluster_nodes", Some(c.cluster_nodes.to_string())),
        ("log", Some(text(&c.log))),
        (
            "access_log",
            Some(text(if c.access_log { "on" } else { "off" })),
        ),
        (
            "log_format",
            Some(text(match c.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            })),
        ),
        (
            "manifest_cache_mib",
            Some((c.manifest_cache_bytes / (1024 * 1024)).to_string()),
        ),
        (
            "small_blob_cache_mib",
            Some((c.small_blob_cache_bytes / (1024 * 1024)).to_string()),
        ),
        ("last_known_entries", Some(c.last_known_entries.to_string())),
        (
            "metadata_cache_mib",
            Some((c.metadata_cache_bytes / (1024 * 1024)).to_string()),
        ),
        (
            "upload_expiry_hours",
            Some((c.upload_expiry.as_secs() / 3600).to_string()),
        ),
        ("gc_enabled", Some(c.gc.enabled.to_string())),
        ("gc_review_delay_secs", Some(secs(c.gc.review_delay))),
        ("gc_interval_secs", Some(secs(c.gc.interval))),
        ("gc_orphan_age_secs", Some(secs(c.gc.orphan_age))),
        (
            "gc_orphan_scan_interval_secs",
            Some(secs(c.gc.orphan_scan_interval)),
        ),
        (
            "retention_interval_secs",
            Some(c.retention_interval.map_or("0".into(), secs)),
        ),
        ("gc_lease_secs", Some(secs(c.gc.lease))),
        (
            "gc_max_reviews_per_sec",
            c.gc.max_reviews_per_sec.map(|r| r.to_string()),
        ),
        (
            "max_uploads_per_tenant",
            Some(c.max_uploads_per_tenant.to_string()),
        ),
        (
            "max_uploads_per_user",
            Some(c.max_uploads_per_user.to_string()),
        ),
        ("max_connections", Some(l.max_connections.to_string())),
        ("max_waiting_connections", Some(l.max_waiting.to_string())),
        ("pull_limit", Some(l.pull.to_string())),
        ("push_limit", Some(l.push.to_string())),
        ("admin_limit", Some(l.admin.to_string())),
        ("tenant_share", Some(l.tenant_share.to_string())),
        ("max_wait_ms", Some(l.max_wait.as_millis().to_string())),
        ("adaptive", Some(l.adaptive.to_string())),
        ("header_timeout_secs", Some(secs(l.header_timeout))),
        ("idle_timeout_secs", Some(secs(l.idle_timeout))),
        ("min_upload_rate", Some(l.min_upload_rate.to_string())),
        ("storage_pool", Some(l.storage_pool.to_string())),
        ("metadata_pool", Some(l.metadata_pool.to_string())),
        (
            "dependency_deadline_ms",
            Some(l.dependency_deadline.as_millis().to_string()),
        ),
        ("shutdown_grace_secs", Some(secs(l.shutdown_grace))),
        (
            "auth",
            Some(text(match a.mode {
                AuthMode::None => "none",
                AuthMode::Htpasswd => "htpasswd",
                AuthMode::Token => "token",
            })),
        ),
        (
            "allow_unauthenticated",
            Some(c.allow_unauthenticated.to_string()),
        ),
        ("htpasswd", a.htpasswd.as_deref().map(path)),
        ("grants", a.grants.as_deref().map(path)),
        (
            "anonymous_pull",
            Some(format!(
                "[{}]",
                a.anonymous_pull
                    .iter()
                    .map(|p| text(&p.to_string()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        ),
        ("token_realm", a.token_realm.as_deref().map(text)),
        ("token_service", Some(text(&a.token_service))),
        ("token_issuer", Some(text(&a.token_issuer))),
        ("token_keys", a.token_keys.as_deref().map(path)),
        (
            "token_signing_key",
            a.token_signing_key.as_deref().map(path),
        ),
        ("token_lifetime_secs", Some(secs(a.token_lifetime))),
        ("admin_token_file", c.admin_token_file.as_deref().map(path)),
        ("admin_insecure", Some(c.admin_insecure.to_string())),
        (
            "metrics_require_token",
            Some(c.metrics_require_token.to_string()),
        ),
        ("tls_cert", c.tls.as_ref().map(|t| path(&t.cert))),
        ("tls_key", c.tls.as_ref().map(|t| path(&t.key))),
        (
            "tls_client_ca",
            c.tls
                .as_ref()
                .and_then(|t| t.client_ca.as_deref())
                .map(path),
        ),
        ("admin_tls", Some(c.admin_tls.to_string())),
        ("node_name", Some(text(&c.node_name))),
        (
            "notify_endpoint",
            Some(format!(
                "[{}]",
                c.notify
                    .endpoints
                    .iter()
                    .map(|(name, url)| text(&format!("{name}={}", redact_query(url))))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        ),
        (
            "notify_secret_file",
            c.notify.secret_file.as_deref().map(path),
        ),
        ("notify_pulls", Some(c.notify.pulls.to_string())),
        ("notify_queue_size", Some(c.notify.queue_size.to_string())),
        (
            "notify_timeout_ms",
            Some(c.notify.timeout.as_millis().to_string()),
        ),
        (
            "notify_max_attempts",
            Some(c.notify.max_attempts.to_string()),
        ),
        ("notify_max_age_secs", Some(secs(c.notify.max_age))),
    ];
    let machine = format!(
        "derived from this machine: {} cores, {} open files",
        c.machine.cores,
        c.machine
            .open_files
            .map_or("unlimited".into(), |n| n.to_string())
    );
    out.into_iter()
        .map(|(key, value)| {
            let origin = match c.sources.get(key) {
                Some(Source::Given) => "flag or environment".to_string(),
                Some(Source::File) => "config file".to_string(),
                None if DERIVED.contains(&key) => machine.clone(),
                None if value.is_none() => "unset".to_string(),
                None => "default".to_string(),
            };
            Entry { key, value, origin }
        })
        .collect()
}

/// The configuration as TOML an operator could keep: one `key = value`
/// line per key set, with its origin as a comment; unset keys commented
/// out.
pub fn render(c: &Config) -> Vec<String> {
    let entries = entries(c);
    let width = entries
        .iter()
        .map(|e| e.key.len() + e.value.as_ref().map_or(0, |v| v.len()) + 3)
        .max()
        .unwrap_or(0);
    entries
        .iter()
        .map(|e| match &e.value {
            Some(v) => {
                let line = format!("{} = {v}", e.key);
                format!("{line:width$}  # {}", e.origin)
            }
            None => format!("# {} (unset)", e.key),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServeArgs;
    use clap::CommandFactory;

    /// `wharf serve`'s flags, as a clap command of their own.
    #[derive(clap::Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    #[test]
    fn every_flag_is_shown_under_its_file_key() {
        let c = Config::load(&ServeArgs::default()).unwrap();
        let shown: Vec<&str> = entries(&c).iter().map(|e| e.key).collect();
        for arg in Serve::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "config" {
                continue;
            }
            let key = long.replace('-', "_");
            assert!(shown.contains(&key.as_str()), "{key} is not shown");
        }
    }

    #[test]
    fn origins_and_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wharf.toml");
        std::fs::write(&file, "push_limit = 3\n").unwrap();
        let args = ServeArgs {
            config: Some(file),
            pull_limit: Some(7),
            metadata_url: Some("postgres://wharf:hunter2@db:5432/wharf".into()),
            s3_endpoint: Some("http://s3:3900".into()),
            s3_bucket: Some("b".into()),
            s3_access_key_id: Some("GK1".into()),
            s3_secret_access_key: Some("verysecret".into()),
            ..Default::default()
        };
        let c = Config::load(&args).unwrap();
        let by_key = |k: &str| entries(&c).into_iter().find(|e| e.key == k).unwrap();
        assert_eq!(by_key("pull_limit").origin, "flag or environment");
        assert_eq!(by_key("pull_limit").value.as_deref(), Some("7"));
        assert_eq!(by_key("push_limit").origin, "config file");
        assert!(by_key("storage_pool")
            .origin
            .starts_with("derived from this machine"));
        assert_eq!(by_key("listen").origin, "default");
        assert_eq!(by_key("token_realm").origin, "unset");
        let all = render(&c).join("\n");
        assert!(
            !all.contains("hunter2") && !all.contains("verysecret"),
            "{all}"
        );
        assert!(
            all.contains("postgres://wharf:<hidden>@db:5432/wharf"),
            "{all}"
        );
    }
}
