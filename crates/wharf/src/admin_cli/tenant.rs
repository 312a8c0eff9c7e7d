//! `wharf admin tenant create|list|show|set|delete`: tenants and their
//! settings (quotas, share, hostname, immutable-tag rules, retention
//! policy).
//!
//! Owns: those commands' arguments, parsing their values (sizes, counts,
//! shares, hostnames, `none`, immutable-tag rules, the retention policy
//! file) before anything is sent, the request each makes, and the tenant
//! name check and path every command about a tenant's contents starts
//! from ([`tenant_path`]; `wharf gc retention --tenant` uses
//! [`tenant_segment`]).
//!
//! Must never: send a field `tenant set` was not given (an absent key
//! keeps its value on the server), or judge what only the server can
//! (whether patterns compile, what a retention rule means).

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Map, Value};
use wharf_core::ImmutableTagRule;

use super::connection::{segment, Call, API_PREFIX};

/// `wharf admin tenant …`.
#[derive(Subcommand, Debug)]
pub(super) enum TenantCommand {
    /// Create a tenant: it owns the repositories named `NAME/…`.
    Create {
        /// The tenant's name: the first component of its repositories' names.
        name: String,
        /// Most bytes its repositories may hold: a number of bytes or one
        /// with a suffix (KiB MiB GiB TiB, or K M G T as the same; KB MB GB
        /// TB are powers of 1000) [default: unlimited].
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        quota_bytes: Option<u64>,
        /// Most repositories it may have [default: unlimited].
        #[arg(long, value_name = "N", value_parser = parse_count)]
        quota_repos: Option<u64>,
        /// Its own share of each request class, a fraction in (0, 1]
        /// [default: the server's --tenant-share].
        #[arg(long, value_name = "F", value_parser = parse_share)]
        share: Option<f64>,
        /// A hostname whose requests belong to this tenant.
        #[arg(long, value_name = "H", value_parser = parse_hostname)]
        hostname: Option<String>,
        /// An immutable-tag rule: tags matching REGEX, in the repositories
        /// whose path inside the tenant matches REPO_REGEX (every one
        /// without it), cannot be moved or deleted once pushed. Both match
        /// whole. Repeat for several.
        #[arg(long = "immutable-tag", value_name = "REGEX[@REPO_REGEX]", value_parser = parse_immutable_tag)]
        immutable_tags: Vec<ImmutableTagRule>,
    },
    /// List every tenant.
    List,
    /// Show one tenant.
    Show {
        /// The tenant.
        name: String,
    },
    /// Change a tenant's settings; `none` clears one, one not given is kept.
    Set {
        /// The tenant.
        name: String,
        /// Most bytes its repositories may hold (SIZE as for `create`), or
        /// `none`.
        #[arg(long, value_name = "SIZE|none", value_parser = or_none(parse_size))]
        quota_bytes: Option<Setting<u64>>,
        /// Most repositories it may have, or `none`.
        #[arg(long, value_name = "N|none", value_parser = or_none(parse_count))]
        quota_repos: Option<Setting<u64>>,
        /// Its share of each request class, in (0, 1], or `none`.
        #[arg(long, value_name = "F|none", value_parser = or_none(parse_share))]
        share: Option<Setting<f64>>,
        /// Its hostname, or `none`.
        #[arg(long, value_name = "H|none", value_parser = or_none(parse_hostname))]
        hostname: Option<Setting<String>>,
        /// An immutable-tag rule (as for `create`). Repeat for several;
        /// given rules replace all the old ones.
        #[arg(long = "immutable-tag", value_name = "REGEX[@REPO_REGEX]", value_parser = parse_immutable_tag)]
        immutable_tags: Vec<ImmutableTagRule>,
        /// Lift every immutable-tag rule: the tenant's tags can be moved
        /// and deleted again.
        #[arg(long, conflicts_with = "immutable_tags")]
        clear_immutable_tags: bool,
        /// The tenant's retention policy: a JSON file (`-`: stdin) holding
        /// `{"rules": [...]}` (docs/admin.md, "Retention"). It replaces the
        /// old policy; the server refuses rules it cannot check.
        #[arg(long, value_name = "FILE|-", value_parser = read_retention_json)]
        retention_json: Option<RetentionJson>,
        /// Remove the tenant's retention policy: retention deletes nothing
        /// of it any more.
        #[arg(long, conflicts_with = "retention_json")]
        clear_retention: bool,
    },
    /// Delete a tenant with its users and robot accounts.
    ///
    /// Without --force a tenant that still holds repositories is refused
    /// (`content delete` empties it first); with it, everything its
    /// repositories hold is deleted too.
    Delete {
        /// The tenant.
        name: String,
        /// Delete it even though it holds repositories, with their content.
        #[arg(long)]
        force: bool,
    },
}

impl TenantCommand {
    /// The request this command makes.
    pub(super) fn call(&self) -> Result<Call, String> {
        let tenants = format!("{API_PREFIX}/tenants");
        Ok(match self {
            TenantCommand::Create {
                name,
                quota_bytes,
                quota_repos,
                share,
                hostname,
                immutable_tags,
            } => {
                tenant_segment(name)?;
                let body = json!({
                    "name": name,
                    "hostname": hostname,
                    "quota": {"bytes": quota_bytes, "repositories": quota_repos},
                    "concurrency_share": share,
                    "immutable_tags": immutable_tags,
                });
                Call::json(Method::POST, tenants, Some(body))
            }
            TenantCommand::List => Call::json(Method::GET, tenants, None),
            TenantCommand::Show { name } => Call::json(Method::GET, tenant_path(name)?, None),
            TenantCommand::Set {
                name,
                quota_bytes,
                quota_repos,
                share,
                hostname,
                immutable_tags,
                clear_immutable_tags,
                retention_json,
                clear_retention,
            } => {
                let path = tenant_path(name)?;
                // Only what was given is sent: an absent key keeps its value,
                // `null` clears it (inside `quota` too).
                let mut body = Map::new();
                if let Some(h) = hostname {
                    body.insert("hostname".into(), h.to_json());
                }
                let mut quota = Map::new();
                if let Some(b) = quota_bytes {
                    quota.insert("bytes".into(), b.to_json());
                }
                if let Some(r) = quota_repos {
                    quota.insert("repositories".into(), r.to_json());
                }
                if !quota.is_empty() {
                    body.insert("quota".into(), Value::Object(quota));
                }
                if let Some(s) = share {
                    body.insert("concurrency_share".into(), s.to_json());
                }
                if *clear_immutable_tags {
                    body.insert("immutable_tags".into(), Value::Null);
                } else if !immutable_tags.is_empty() {
                    body.insert("immutable_tags".into(), json!(immutable_tags));
                }
                if *clear_retention {
                    body.insert("retention".into(), Value::Null);
                } else if let Some(RetentionJson(policy)) = retention_json {
                    body.insert("retention".into(), policy.clone());
                }
                if body.is_empty() {
                    return Err(
                        "tenant set: nothing to change (give --quota-bytes, --quota-repos, \
                         --share, --hostname, --immutable-tag, --clear-immutable-tags, \
                         --retention-json or --clear-retention)"
                            .into(),
                    );
                }
                Call::json(Method::PATCH, path, Some(Value::Object(body)))
            }
            TenantCommand::Delete { name, force } => {
                let mut path = tenant_path(name)?;
                if *force {
                    path.push_str("?force=true");
                }
                Call::json(Method::DELETE, path, None)
            }
        })
    }
}

/// A tenant is the first component of its repositories' names, so its name
/// follows that grammar (lower-case letters and digits, separated by `.`,
/// `_`, `__` or dashes), in at most 64 bytes.
pub(crate) fn tenant_segment(name: &str) -> Result<String, String> {
    let valid =
        name.len() <= 64 && !name.contains('/') && name.parse::<wharf_core::RepoName>().is_ok();
    if !valid {
        return Err(format!(
            "tenant name {name:?} must be one repository name component (lower-case \
             letters and digits, joined by '.', '_', '__' or '-'), at most 64 bytes"
        ));
    }
    segment("tenant", name)
}

/// `/admin/v1/tenants/NAME`, the name checked: the path of tenant `name`,
/// and the start of the paths of what it holds (usage, users, robots,
/// sessions).
pub(super) fn tenant_path(name: &str) -> Result<String, String> {
    Ok(format!("{API_PREFIX}/tenants/{}", tenant_segment(name)?))
}

/// A value of `tenant set`: a new one, or `none` to clear it.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Setting<T> {
    Clear,
    To(T),
}

impl<T: serde::Serialize> Setting<T> {
    fn to_json(&self) -> Value {
        match self {
            Setting::Clear => Value::Null,
            Setting::To(v) => json!(v),
        }
    }
}

/// The JSON of `tenant set --retention-json`, read when the command line
/// is parsed.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct RetentionJson(Value);

/// Reads a retention policy from file `arg` (`-`: stdin): a JSON object.
/// What its rules mean is the server's to check.
fn read_retention_json(arg: &str) -> Result<RetentionJson, String> {
    let text = if arg == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| format!("reading stdin: {e}"))?;
        text
    } else {
        std::fs::read_to_string(arg).map_err(|e| format!("reading {arg}: {e}"))?
    };
    let value: Value = serde_json::from_str(&text).map_err(|e| format!("{arg}: not JSON: {e}"))?;
    if !value.is_object() {
        return Err(format!(
            "{arg}: a retention policy is a JSON object {{\"rules\": [...]}}"
        ));
    }
    Ok(RetentionJson(value))
}

/// A size in bytes: `1073741824`, `10GiB`, `10G` (the same), `10GB`
/// (10⁹); suffixes K, M, G, T in those three forms, any case, and `B`.
fn parse_size(s: &str) -> Result<u64, String> {
    let bad = |why: &str| format!("size {s:?} {why}");
    let text = s.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits);
    if number.is_empty() {
        return Err(bad(
            "is not a whole number of bytes, optionally with a suffix (KiB MiB GiB TiB, \
             K M G T, KB MB GB TB)",
        ));
    }
    let multiplier: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(bad(
                "has an unknown suffix (use KiB MiB GiB TiB, K M G T, KB MB GB TB)",
            ))
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| bad("is too large"))
}

/// A quota on the number of repositories.
fn parse_count(s: &str) -> Result<u64, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))
}

/// A tenant's concurrency share: a fraction in (0, 1].
fn parse_share(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!(
            "share {s:?} is not a fraction in (0, 1], such as 0.25"
        )),
    }
}

/// A hostname with an optional `:port`. Only what could never be one is
/// refused here; the server checks the rest (and refuses upper case rather
/// than changing what was asked for, so neither does this).
fn parse_hostname(s: &str) -> Result<String, String> {
    let valid = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
    if !valid {
        return Err(format!(
            "hostname {s:?} is not a host name (letters, digits, '.', '-', and an optional :port)"
        ));
    }
    Ok(s.to_string())
}

/// Wraps a value parser so that `none` means "clear this setting".
fn or_none<T>(
    parse: fn(&str) -> Result<T, String>,
) -> impl Fn(&str) -> Result<Setting<T>, String> + Clone + Send + Sync + 'static
where
    T: Clone + Send + Sync + 'static,
{
    move |s: &str| {
        if s == "none" {
            Ok(Setting::Clear)
        } else {
            parse(s).map(Setting::To)
        }
    }
}

/// `REGEX[@REPO_REGEX]`, split at the first `@` (neither a tag nor a
/// repository name can hold one). Only an empty pattern is refused here;
/// the server compiles both and refuses what does not compile.
fn parse_immutable_tag(s: &str) -> Result<ImmutableTagRule, String> {
    let (tag, repository) = match s.split_once('@') {
        Some((tag, repo)) => (tag, Some(repo)),
        None => (s, None),
    };
    if tag.is_empty() || repository.is_some_and(str::is_empty) {
        return Err(format!(
            "{s:?}: give a tag pattern, and after an @ a repository pattern \
             (--immutable-tag REGEX[@REPO_REGEX])"
        ));
    }
    Ok(ImmutableTagRule {
        tag: tag.to_string(),
        repository: repository.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_call, call_with, refused};
    use super::*;

    #[test]
    fn sizes_take_binary_and_decimal_suffixes() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("1536", 1536),
            ("1B", 1),
            ("1KiB", 1024),
            ("1K", 1024),
            ("1KB", 1000),
            ("10MiB", 10 << 20),
            ("10M", 10 << 20),
            ("10MB", 10_000_000),
            ("5GiB", 5 << 30),
            ("5gib", 5 << 30),
            ("5 GiB", 5 << 30),
            ("5G", 5 << 30),
            ("5GB", 5_000_000_000),
            ("2TiB", 2 << 40),
            ("2T", 2 << 40),
            ("2TB", 2_000_000_000_000),
            ("18446744073709551615", u64::MAX),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_size(text), Ok(*bytes), "{text}");
        }
    }

    #[test]
    fn bad_sizes_are_refused_with_a_reason() {
        for text in ["", "GiB", "-1", "1.5GiB", "10 PiB", "10XB", "ten", "0x10"] {
            let e = parse_size(text).expect_err(text);
            assert!(e.contains(&format!("{text:?}")), "{text}: {e}");
        }
        let e = parse_size("20000000TiB").unwrap_err();
        assert!(e.contains("too large"), "{e}");
        assert!(parse_size("18446744073709551616")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn shares_counts_and_hostnames_are_checked() {
        assert_eq!(parse_share("0.25"), Ok(0.25));
        assert_eq!(parse_share("1"), Ok(1.0));
        for bad in ["0", "1.5", "-0.1", "NaN", "inf", "half"] {
            assert!(parse_share(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_count("12"), Ok(12));
        assert!(parse_count("-1").is_err());
        assert!(parse_count("1k").is_err());
        assert_eq!(
            parse_hostname("registry.acme.example:5000"),
            Ok("registry.acme.example:5000".into())
        );
        for bad in [
            "",
            "acme example",
            "https://acme.example",
            "acme.example/v2",
        ] {
            assert!(parse_hostname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tenant_create_sends_every_field() {
        assert_call(
            &["tenant", "create", "acme"],
            Method::POST,
            "/admin/v1/tenants",
            Some(json!({
                "name": "acme",
                "hostname": null,
                "quota": {"bytes": null, "repositories": null},
                "concurrency_share": null,
                "immutable_tags": [],
            })),
        );
        assert_call(
            &[
                "tenant",
                "create",
                "acme",
                "--quota-bytes",
                "10GiB",
                "--quota-repos",
                "50",
                "--share",
                "0.25",
                "--hostname",
                "acme.registry.example",
                "--immutable-tag",
                r"v[0-9]+\..*",
                "--immutable-tag",
                "stable@prod/.*",
            ],
            Method::POST,
            "/admin/v1/tenants",
            Some(json!({
                "name": "acme",
                "hostname": "acme.registry.example",
                "quota": {"bytes": 10u64 << 30, "repositories": 50},
                "concurrency_share": 0.25,
                "immutable_tags": [
                    {"tag": r"v[0-9]+\..*", "repository": null},
                    {"tag": "stable", "repository": "prod/.*"},
                ],
            })),
        );
    }

    #[test]
    fn tenant_list_show_and_delete() {
        assert_call(&["tenant", "list"], Method::GET, "/admin/v1/tenants", None);
        assert_call(
            &["tenant", "show", "acme"],
            Method::GET,
            "/admin/v1/tenants/acme",
            None,
        );
        assert_call(
            &["tenant", "delete", "acme"],
            Method::DELETE,
            "/admin/v1/tenants/acme",
            None,
        );
        assert_call(
            &["tenant", "delete", "acme", "--force"],
            Method::DELETE,
            "/admin/v1/tenants/acme?force=true",
            None,
        );
    }

    #[test]
    fn tenant_set_sends_only_what_was_given_and_null_for_none() {
        assert_call(
            &["tenant", "set", "acme", "--quota-bytes", "1TB"],
            Method::PATCH,
            "/admin/v1/tenants/acme",
            Some(json!({"quota": {"bytes": 1_000_000_000_000u64}})),
        );
        assert_call(
            &[
                "tenant",
                "set",
                "acme",
                "--quota-repos",
                "none",
                "--share",
                "none",
            ],
            Method::PATCH,
            "/admin/v1/tenants/acme",
            Some(json!({"quota": {"repositories": null}, "concurrency_share": null})),
        );
        assert_call(
            &[
                "tenant",
                "set",
                "acme",
                "--hostname",
                "none",
                "--quota-bytes",
                "none",
                "--quota-repos",
                "7",
                "--share",
                "0.5",
            ],
            Method::PATCH,
            "/admin/v1/tenants/acme",
            Some(json!({
                "hostname": null,
                "quota": {"bytes": null, "repositories": 7},
                "concurrency_share": 0.5,
            })),
        );
        assert_call(
            &["tenant", "set", "acme", "--hostname", "acme.example"],
            Method::PATCH,
            "/admin/v1/tenants/acme",
            Some(json!({"hostname": "acme.example"})),
        );
        let e = call_with(&["tenant", "set", "acme"], None).unwrap_err();
        assert!(e.contains("nothing to change"), "{e}");
    }

    #[test]
    fn tenant_set_sends_or_clears_a_retention_policy_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("retention.json");
        let policy = json!({"rules": [{"keep_last": 5}, {"untagged_older_than_days": 30}]});
        std::fs::write(&file, policy.to_string()).unwrap();
        let file = file.to_str().unwrap();
        assert_call(
            &["tenant", "set", "acme", "--retention-json", file],
            Method::PATCH,
            "/admin/v1/tenants/acme",
            Some(json!({ "retention": policy })),
        );
        assert_call(
            &["tenant", "set", "acme", "--clear-retention"],
            Method::PATCH,
            "/admin/v1/tenants/acme",
            Some(json!({ "retention": null })),
        );
        std::fs::write(dir.path().join("bad.json"), "[1, 2]").unwrap();
        let bad = dir.path().join("bad.json");
        let e = refused(&[
            "tenant",
            "set",
            "acme",
            "--retention-json",
            bad.to_str().unwrap(),
        ]);
        assert!(e.contains("JSON object"), "{e}");
        let e = refused(&[
            "tenant",
            "set",
            "acme",
            "--retention-json",
            "/nonexistent/x.json",
        ]);
        assert!(e.contains("/nonexistent/x.json"), "{e}");
    }

    #[test]
    fn tenant_set_replaces_or_lifts_immutable_tag_rules() {
        assert_call(
            &[
                "tenant",
                "set",
                "acme",
                "--immutable-tag",
                "v.*@team/.*",
                "--immutable-tag",
                "latest",
            ],
            Method::PATCH,
            "/admin/v1/tenants/acme",
            Some(json!({"immutable_tags": [
                {"tag": "v.*", "repository": "team/.*"},
                {"tag": "latest", "repository": null},
            ]})),
        );
        assert_call(
            &["tenant", "set", "acme", "--clear-immutable-tags"],
            Method::PATCH,
            "/admin/v1/tenants/acme",
            Some(json!({"immutable_tags": null})),
        );
        // Split at the first @ only; the server judges the patterns.
        assert_eq!(
            parse_immutable_tag("(a|b)@x@y").unwrap(),
            ImmutableTagRule {
                tag: "(a|b)".into(),
                repository: Some("x@y".into()),
            }
        );
        assert!(parse_immutable_tag("v[").is_ok());
        for bad in ["", "@team/.*", "v.*@"] {
            let e = refused(&["tenant", "set", "acme", "--immutable-tag", bad]);
            assert!(e.contains("REGEX[@REPO_REGEX]"), "{bad:?}: {e}");
        }
        refused(&[
            "tenant",
            "set",
            "acme",
            "--immutable-tag",
            "v.*",
            "--clear-immutable-tags",
        ]);
    }

    #[test]
    fn tenant_names_cannot_escape_their_path_segment() {
        for tenant in [
            "",
            ".",
            "..",
            "acme/other",
            "Acme",
            "ac me",
            "acme?x=1",
            "acme-",
            "a__b___c",
        ] {
            assert!(
                call_with(&["tenant", "show", tenant], None).is_err(),
                "{tenant:?}"
            );
        }
    }
}
