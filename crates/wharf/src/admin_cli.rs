//! `wharf admin`: a command-line client of the admin API (`/admin/v1` on
//! the admin port; `docs/admin-api.yaml` describes it, `docs/admin.md` is
//! the operator's guide).
//!
//! Owns: the command tree, reading its arguments into values checked
//! before anything is sent (sizes, durations, roles, grants, names), the
//! one HTTP request each command makes, and printing what comes back.
//! `wharf admin token` is the only command that makes no request: it
//! generates the token the server is started with.
//!
//! The request a command makes is built by [`call`], a pure function, so
//! tests check the method, path and body of every command without a server.
//!
//! Must never: print, log or put in an error message the admin token or a
//! password; take a secret from the command line (where `ps` and shell
//! history see it): the token comes from a file or the environment, a
//! password from stdin or the environment; follow a redirect (it would
//! carry the token elsewhere); or decide what the server enforces beyond
//! refusing what cannot be a valid request.

use std::io::{BufRead, IsTerminal as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr as _;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use clap::{Args, Subcommand};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION};
use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Map, Value};
use wharf_core::ImmutableTagRule;

/// The admin port's address when neither `--url` nor `WHARF_ADMIN_URL` is
/// given (the server's default `--admin-listen`).
pub(crate) const DEFAULT_URL: &str = "http://127.0.0.1:5001";
/// Every path of the admin API starts with this.
pub(crate) const API_PREFIX: &str = "/admin/v1";
/// Longest wait for a TCP connection to the admin port.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a whole request, from connecting to the last byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a garbage-collection request: a pass, or a retention
/// run deleting one item at a time, goes on until done (the server carries
/// on if the client gives up; what it deleted stays deleted).
const GC_REQUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Admin tokens start with this, so secret scanners can recognise them.
const ADMIN_TOKEN_PREFIX: &str = "wharf_admin_";
/// Random bytes in an admin token.
const ADMIN_TOKEN_BYTES: usize = 32;
/// The environment variable holding the admin token itself.
pub(crate) const TOKEN_ENV: &str = "WHARF_ADMIN_TOKEN";
/// The environment variable `user set` takes a password from.
const PASSWORD_ENV: &str = "WHARF_PASSWORD";

/// How a command reaches the admin API: the connection flags `wharf admin`
/// and `wharf gc` share.
#[derive(Args, Debug)]
pub(crate) struct Connection {
    /// Base URL of the server's admin port.
    #[arg(
        long,
        env = "WHARF_ADMIN_URL",
        default_value = DEFAULT_URL,
        global = true,
        value_name = "URL",
        help_heading = "Connection"
    )]
    url: String,

    /// File whose first line is the admin token (the plain token, not the
    /// `sha256:` line given to the server). Without it the token is taken
    /// from WHARF_ADMIN_TOKEN; without either, requests carry none (enough
    /// for a server started without --admin-token-file).
    #[arg(
        long,
        env = "WHARF_ADMIN_TOKEN_FILE",
        global = true,
        value_name = "FILE",
        help_heading = "Connection"
    )]
    token_file: Option<PathBuf>,
}

impl Connection {
    /// The admin port's base URL and the token to send, both checked
    /// before anything is sent.
    pub(crate) fn resolve(&self) -> Result<(Url, Option<String>), String> {
        let base = base_url(&self.url)?;
        let token = admin_token(
            self.token_file.as_deref(),
            std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()),
        )?;
        Ok((base, token))
    }
}

/// `wharf admin`: manage tenants, users and robot accounts through the
/// admin API of a running server.
#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(flatten)]
    connection: Connection,

    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Generate a new admin token.
    ///
    /// Prints the token (keep it secret) on the first line and, on the
    /// second, the `sha256:<hex>` line to put in the file given to
    /// `wharf serve --admin-token-file`.
    Token {
        /// Write `DIR/admin-token` (the token, mode 0600) and
        /// `DIR/admin-token.sha256` (for --admin-token-file) instead of
        /// printing them; neither may exist yet.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    #[command(flatten)]
    Api(ApiCommand),
}

/// The commands that make one request to the admin API.
#[derive(Subcommand, Debug)]
enum ApiCommand {
    /// Create, list, show, change and delete tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Set, list and delete a tenant's users.
    #[command(subcommand)]
    User(UserCommand),
    /// Create, list and revoke a tenant's robot accounts (for CI).
    #[command(subcommand)]
    Robot(RobotCommand),
    /// What a tenant holds (bytes, repositories) and its quota.
    Usage {
        /// The tenant.
        tenant: String,
    },
    /// End sessions: access and refresh tokens issued before stop working
    /// at once (passwords and robot secrets still log in).
    #[command(subcommand)]
    Sessions(SessionsCommand),
}

#[derive(Subcommand, Debug)]
enum SessionsCommand {
    /// Revoke the sessions of one user (--tenant and --user), of every
    /// account of a tenant (--tenant), or of everyone (--all).
    Revoke {
        /// The tenant whose sessions end.
        #[arg(long, conflicts_with = "all")]
        tenant: Option<String>,
        /// Only this user of the tenant.
        #[arg(long, requires = "tenant")]
        user: Option<String>,
        /// Every session of the registry, the operator's own included.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand, Debug)]
enum TenantCommand {
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
    /// Its repositories' data is not deleted; without --force a tenant that
    /// still holds repositories is refused.
    Delete {
        /// The tenant.
        name: String,
        /// Delete it even though it holds repositories.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create a user or change one: its password and roles.
    ///
    /// The password is read from stdin (--password-stdin) or WHARF_PASSWORD,
    /// never from the command line; it is required when the user is created.
    Set {
        /// The tenant.
        tenant: String,
        /// The user's name, unique across all tenants.
        name: String,
        /// A role: `admin`, `push` or `pull`, optionally on a repository
        /// pattern (`push:acme/app`, `pull:acme/*`) [default pattern:
        /// `TENANT/*`]. Repeat for several; given roles replace the old ones.
        #[arg(long = "role", value_name = "ROLE[:PATTERN]", value_parser = parse_role)]
        roles: Vec<Role>,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List a tenant's users.
    List {
        /// The tenant.
        tenant: String,
    },
    /// Delete a user.
    Delete {
        /// The tenant.
        tenant: String,
        /// The user.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum RobotCommand {
    /// Create a robot account; its secret is shown only this once.
    ///
    /// The robot logs in as `TENANT+NAME` with the secret as its password.
    Create {
        /// The tenant.
        tenant: String,
        /// The robot's short name (its login is `TENANT+NAME`; that form is
        /// taken too).
        name: String,
        /// What it may do: `acme/app:pull,push` (a repository or `acme/*`,
        /// then actions from pull, push, delete). Repeat for several.
        #[arg(
            long = "grant",
            value_name = "PATTERN:ACTIONS",
            required = true,
            value_parser = parse_grant
        )]
        grants: Vec<String>,
        /// Lifetime: `90s`, `15m`, `12h`, `30d` or seconds [default: no
        /// expiry].
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        expires_in: Option<u64>,
        /// Print only the secret (for scripts) instead of the whole answer.
        #[arg(long)]
        secret_only: bool,
    },
    /// List a tenant's robot accounts (secrets are never shown again).
    List {
        /// The tenant.
        tenant: String,
    },
    /// Revoke a robot account: its tokens are refused from then on.
    Revoke {
        /// The tenant.
        tenant: String,
        /// The robot: its short name (`ci`) or login (`acme+ci`).
        name: String,
    },
}

/// A value of `tenant set`: a new one, or `none` to clear it.
#[derive(Clone, Debug, PartialEq)]
enum Setting<T> {
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
struct RetentionJson(Value);

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

/// A role of `user set --role`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Role {
    /// `admin`, `push` or `pull`.
    role: &'static str,
    /// The repositories it applies to; `None` leaves the server's default
    /// (every repository of the tenant).
    repositories: Option<String>,
}

/// One request of the admin API, built and checked before it is sent.
#[derive(Debug, PartialEq)]
pub(crate) struct Call {
    pub(crate) method: Method,
    /// From `/admin/v1` on, path segments percent-encoded, with any query.
    pub(crate) path: String,
    pub(crate) body: Option<Value>,
    pub(crate) print: Print,
}

/// What to print of a successful answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Print {
    /// The JSON body, pretty-printed (nothing for an empty body).
    Json,
    /// Only the body's `secret` field.
    Secret,
    /// A retention pass, as text (`crate::gc_cli::render_retention`).
    Retention,
}

/// Runs `wharf admin …`: 0 on success, 1 with a message on stderr if
/// anything failed (clap itself exits with 2 on a bad command line).
pub fn run(args: AdminArgs) -> ExitCode {
    match execute(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("wharf admin: {message}");
            ExitCode::FAILURE
        }
    }
}

fn execute(args: AdminArgs) -> Result<(), String> {
    let command = match args.command {
        AdminCommand::Token { out } => return token_command(out.as_deref()),
        AdminCommand::Api(command) => command,
    };
    // The URL and token are checked before anyone is asked for a password.
    let (base, token) = args.connection.resolve()?;
    let password = match &command {
        ApiCommand::User(UserCommand::Set { password_stdin, .. }) => {
            let env = std::env::var(PASSWORD_ENV).ok();
            let stdin = std::io::stdin();
            if *password_stdin && stdin.is_terminal() {
                eprintln!("password (one line, shown as typed):");
            }
            read_password(*password_stdin, env, stdin.lock())?
        }
        _ => None,
    };
    let call = call(&command, password.as_deref())?;
    send(&base, token.as_deref(), &call)
}

/// The request `command` makes; `password` is what `user set` read from
/// stdin or the environment.
fn call(command: &ApiCommand, password: Option<&str>) -> Result<Call, String> {
    let json_call = |method, path: String, body| Call {
        method,
        path,
        body,
        print: Print::Json,
    };
    let tenants = API_PREFIX.to_string() + "/tenants";
    Ok(match command {
        ApiCommand::Tenant(TenantCommand::Create {
            name,
            quota_bytes,
            quota_repos,
            share,
            hostname,
            immutable_tags,
        }) => {
            tenant_segment(name)?;
            let body = json!({
                "name": name,
                "hostname": hostname,
                "quota": {"bytes": quota_bytes, "repositories": quota_repos},
                "concurrency_share": share,
                "immutable_tags": immutable_tags,
            });
            json_call(Method::POST, tenants, Some(body))
        }
        ApiCommand::Tenant(TenantCommand::List) => json_call(Method::GET, tenants, None),
        ApiCommand::Tenant(TenantCommand::Show { name }) => json_call(
            Method::GET,
            format!("{tenants}/{}", tenant_segment(name)?),
            None,
        ),
        ApiCommand::Tenant(TenantCommand::Set {
            name,
            quota_bytes,
            quota_repos,
            share,
            hostname,
            immutable_tags,
            clear_immutable_tags,
            retention_json,
            clear_retention,
        }) => {
            let path = format!("{tenants}/{}", tenant_segment(name)?);
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
            json_call(Method::PATCH, path, Some(Value::Object(body)))
        }
        ApiCommand::Tenant(TenantCommand::Delete { name, force }) => {
            let mut path = format!("{tenants}/{}", tenant_segment(name)?);
            if *force {
                path.push_str("?force=true");
            }
            json_call(Method::DELETE, path, None)
        }
        ApiCommand::Usage { tenant } => json_call(
            Method::GET,
            format!("{tenants}/{}/usage", tenant_segment(tenant)?),
            None,
        ),
        ApiCommand::User(UserCommand::Set {
            tenant,
            name,
            roles,
            password_stdin: _,
        }) => {
            let path = format!(
                "{tenants}/{}/users/{}",
                tenant_segment(tenant)?,
                user_segment(name)?
            );
            let mut body = Map::new();
            if let Some(p) = password {
                body.insert("password".into(), json!(p));
            }
            if !roles.is_empty() {
                let roles = roles
                    .iter()
                    .map(|r| {
                        let mut role = Map::new();
                        role.insert("role".into(), json!(r.role));
                        if let Some(pattern) = &r.repositories {
                            role.insert("repositories".into(), json!(pattern));
                        }
                        Value::Object(role)
                    })
                    .collect();
                body.insert("roles".into(), Value::Array(roles));
            }
            if body.is_empty() {
                return Err(format!(
                    "user set: nothing to set (give --role, or a password with \
                     --password-stdin or {PASSWORD_ENV})"
                ));
            }
            json_call(Method::PUT, path, Some(Value::Object(body)))
        }
        ApiCommand::User(UserCommand::List { tenant }) => json_call(
            Method::GET,
            format!("{tenants}/{}/users", tenant_segment(tenant)?),
            None,
        ),
        ApiCommand::User(UserCommand::Delete { tenant, name }) => json_call(
            Method::DELETE,
            format!(
                "{tenants}/{}/users/{}",
                tenant_segment(tenant)?,
                user_segment(name)?
            ),
            None,
        ),
        ApiCommand::Robot(RobotCommand::Create {
            tenant,
            name,
            grants,
            expires_in,
            secret_only,
        }) => {
            let path = format!("{tenants}/{}/robots", tenant_segment(tenant)?);
            robot_segment(tenant, name)?;
            let mut body = json!({"name": name, "grants": grants});
            if let Some(secs) = expires_in {
                body["expires_in_secs"] = json!(secs);
            }
            Call {
                method: Method::POST,
                path,
                body: Some(body),
                print: if *secret_only {
                    Print::Secret
                } else {
                    Print::Json
                },
            }
        }
        ApiCommand::Robot(RobotCommand::List { tenant }) => json_call(
            Method::GET,
            format!("{tenants}/{}/robots", tenant_segment(tenant)?),
            None,
        ),
        ApiCommand::Sessions(SessionsCommand::Revoke { tenant, user, all }) => {
            let path = match (tenant, user, all) {
                (Some(t), Some(u), false) => format!(
                    "{tenants}/{}/users/{}/sessions",
                    tenant_segment(t)?,
                    user_segment(u)?
                ),
                (Some(t), None, false) => format!("{tenants}/{}/sessions", tenant_segment(t)?),
                (None, None, true) => "/admin/v1/sessions".to_string(),
                _ => {
                    return Err(
                        "name whose sessions end: --tenant T, --tenant T --user U, or --all".into(),
                    )
                }
            };
            json_call(Method::DELETE, path, None)
        }
        ApiCommand::Robot(RobotCommand::Revoke { tenant, name }) => json_call(
            Method::DELETE,
            format!(
                "{tenants}/{}/robots/{}",
                tenant_segment(tenant)?,
                robot_segment(tenant, name)?
            ),
            None,
        ),
    })
}

/// `value` as one path segment: percent-encoded, and refused when empty or
/// a dot segment (which URL parsing would resolve into another path).
fn segment(what: &str, value: &str) -> Result<String, String> {
    if value.is_empty() || value == "." || value == ".." {
        return Err(format!("{what} {value:?} is not a name"));
    }
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
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

/// User names and robots' short names: `[a-z0-9][a-z0-9._-]{0,63}`.
fn valid_user_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=64).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

fn user_segment(name: &str) -> Result<String, String> {
    if !valid_user_name(name) {
        return Err(format!(
            "user name {name:?} must match [a-z0-9][a-z0-9._-]{{0,63}}"
        ));
    }
    segment("user", name)
}

/// A robot: its short name (`ci`) or its login (`acme+ci`, with the
/// tenant's own name), as the server takes either.
fn robot_segment(tenant: &str, name: &str) -> Result<String, String> {
    let short = name
        .strip_prefix(tenant)
        .and_then(|rest| rest.strip_prefix('+'))
        .unwrap_or(name);
    if !valid_user_name(short) {
        return Err(format!(
            "robot name {name:?} must be NAME or {tenant}+NAME, NAME matching \
             [a-z0-9][a-z0-9._-]{{0,63}}"
        ));
    }
    segment("robot", name)
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

/// A duration in seconds: `90s`, `15m`, `12h`, `30d` or plain seconds;
/// more than zero.
fn parse_duration(s: &str) -> Result<u64, String> {
    let bad = || format!("duration {s:?} is not a whole number of seconds or of s, m, h or d");
    let text = s.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], Some(c)),
        _ => (text, None),
    };
    let seconds: u64 = match unit {
        None | Some('s') => 1,
        Some('m') => 60,
        Some('h') => 60 * 60,
        Some('d') => 24 * 60 * 60,
        Some(_) => return Err(bad()),
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let total = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(seconds))
        .ok_or_else(|| format!("duration {s:?} is too long"))?;
    if total == 0 {
        return Err(format!("duration {s:?} must be more than zero"));
    }
    Ok(total)
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

/// `push`, `pull:acme/app` or `admin:acme/*`.
fn parse_role(s: &str) -> Result<Role, String> {
    let (name, pattern) = match s.split_once(':') {
        Some((name, pattern)) => (name, Some(pattern)),
        None => (s, None),
    };
    let role = match name {
        "admin" => "admin",
        "push" => "push",
        "pull" => "pull",
        _ => {
            return Err(format!(
                "role {name:?} is not admin, push or pull (in --role ROLE[:PATTERN])"
            ))
        }
    };
    let repositories = match pattern {
        Some(p) => Some(
            wharf_auth::RepoPattern::from_str(p)
                .map_err(|e| format!("role {s:?}: {e}"))?
                .to_string(),
        ),
        None => None,
    };
    Ok(Role { role, repositories })
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

/// `acme/app:pull,push`: checked with the grammar the server uses for
/// grants, and sent in its canonical form.
fn parse_grant(s: &str) -> Result<String, String> {
    wharf_auth::parse_grant(s).map(|grant| grant.to_string())
}

/// The password of `user set`: the first line of `stdin` (without its line
/// ending) with --password-stdin, else `env` (WHARF_PASSWORD), else none.
fn read_password(
    from_stdin: bool,
    env: Option<String>,
    mut stdin: impl BufRead,
) -> Result<Option<String>, String> {
    let password = if from_stdin {
        let mut line = String::new();
        stdin
            .read_line(&mut line)
            .map_err(|e| format!("reading the password from stdin: {e}"))?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        line.to_string()
    } else {
        match env {
            Some(p) => p,
            None => return Ok(None),
        }
    };
    if password.is_empty() {
        return Err(if from_stdin {
            "the password read from stdin is empty".into()
        } else {
            format!("{PASSWORD_ENV} is empty")
        });
    }
    Ok(Some(password))
}

/// The admin token to send: the first line of `file` if given, else `env`
/// (WHARF_ADMIN_TOKEN), else none.
pub(crate) fn admin_token(
    file: Option<&Path>,
    env: Option<String>,
) -> Result<Option<String>, String> {
    let Some(path) = file else {
        return Ok(env);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the admin token from {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(format!("{} holds no admin token", path.display()));
    }
    if token.starts_with("sha256:") && !token.starts_with(ADMIN_TOKEN_PREFIX) {
        return Err(format!(
            "{} holds the token's hash (the server's --admin-token-file); \
             --token-file wants the token itself",
            path.display()
        ));
    }
    Ok(Some(token.to_string()))
}

/// The admin port's base URL, checked before anything is sent.
pub(crate) fn base_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| format!("--url {url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("--url {url:?}: the scheme must be http or https"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // Error messages show the URL; the token belongs in --token-file.
        return Err("--url must not hold credentials: give the token with --token-file".into());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("--url {url:?}: no query or fragment, please"));
    }
    Ok(parsed)
}

/// Sends `call` and prints the answer as `call.print` says; an error answer
/// becomes the `Err`.
pub(crate) fn send(base: &Url, token: Option<&str>, call: &Call) -> Result<(), String> {
    let text = fetch(base, token, call)?;
    if let Some(out) = render(call.print, &text)? {
        println!("{out}");
    }
    Ok(())
}

/// Sends `call`; the body of a successful answer, an error answer as the
/// `Err`.
pub(crate) fn fetch(base: &Url, token: Option<&str>, call: &Call) -> Result<String, String> {
    // A garbage-collection pass runs as long as it has work.
    let timeout = match call.path.starts_with(&format!("{API_PREFIX}/gc")) {
        true => GC_REQUEST_TIMEOUT,
        false => REQUEST_TIMEOUT,
    };
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("setting up the HTTP client: {e}"))?;
    let url = format!("{}{}", base.as_str().trim_end_matches('/'), call.path);
    let mut request = client
        .request(call.method.clone(), &url)
        .header(ACCEPT, "application/json");
    if let Some(token) = token {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the admin token holds characters a header cannot carry".to_string())?;
        value.set_sensitive(true);
        request = request.header(AUTHORIZATION, value);
    }
    if let Some(body) = &call.body {
        request = request.json(body);
    }
    let response = request
        .send()
        .map_err(|e| describe_send_error(base, &e, timeout))?;
    let status = response.status();
    let text = response
        .text()
        .map_err(|e| format!("reading the answer from {base}: {e}"))?;
    if !status.is_success() {
        return Err(describe_error(status, &text));
    }
    Ok(text)
}

/// What to print of a successful answer's body; `None` for nothing.
pub(crate) fn render(print: Print, body: &str) -> Result<Option<String>, String> {
    if body.trim().is_empty() {
        return match print {
            Print::Json => Ok(None),
            Print::Secret => Err("the answer holds no secret".into()),
            Print::Retention => Err("the answer is empty".into()),
        };
    }
    let value: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(_) if print == Print::Json => return Ok(Some(body.trim_end().to_string())),
        Err(e) => return Err(format!("the answer is not JSON: {e}")),
    };
    match print {
        Print::Json => serde_json::to_string_pretty(&value)
            .map(Some)
            .map_err(|e| e.to_string()),
        Print::Secret => value
            .get("secret")
            .and_then(Value::as_str)
            .map(|s| Some(s.to_string()))
            .ok_or_else(|| "the answer holds no secret".into()),
        Print::Retention => Ok(Some(crate::gc_cli::render_retention(&value))),
    }
}

/// `<status> <code>: <message>` for each error of an OCI error envelope;
/// for another body, the status and the start of the body.
fn describe_error(status: StatusCode, body: &str) -> String {
    let errors = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        let list = v.get("errors")?.as_array()?.clone();
        let lines: Vec<String> = list
            .iter()
            .map(|e| {
                let code = e.get("code").and_then(Value::as_str).unwrap_or("UNKNOWN");
                let message = e.get("message").and_then(Value::as_str).unwrap_or("");
                format!("{} {code}: {message}", status.as_u16())
            })
            .collect();
        (!lines.is_empty()).then_some(lines)
    });
    match errors {
        Some(lines) => lines.join("\nwharf admin: "),
        None => {
            let reason = status.canonical_reason().unwrap_or("error");
            let text: String = body.trim().chars().take(200).collect();
            if text.is_empty() {
                format!("{} {reason}", status.as_u16())
            } else {
                format!("{} {reason}: {text}", status.as_u16())
            }
        }
    }
}

/// A request that got no answer: why, in words an operator can act on.
fn describe_send_error(base: &Url, e: &reqwest::Error, timeout: Duration) -> String {
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if e.is_timeout() {
        format!("no answer from {base} within {} s", timeout.as_secs())
    } else if e.is_connect() {
        format!(
            "cannot connect to {base}: {cause} (is `wharf serve` running, and is \
             --url or WHARF_ADMIN_URL its admin port?)"
        )
    } else {
        format!("request to {base} failed: {e}: {cause}")
    }
}

/// A new admin token and the `sha256:<hex>` line the server is given.
fn new_admin_token() -> Result<(String, String), String> {
    let mut bytes = [0u8; ADMIN_TOKEN_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|e| format!("the operating system's random generator failed: {e}"))?;
    let token = format!("{ADMIN_TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = format!("sha256:{}", wharf_auth::hash_secret(&token));
    Ok((token, hash))
}

/// `wharf admin token [--out DIR]`.
fn token_command(out: Option<&Path>) -> Result<(), String> {
    let (token, hash) = new_admin_token()?;
    match out {
        None => {
            println!("{token}");
            println!("{hash}");
        }
        Some(dir) => {
            let (token_path, hash_path) = write_token_files(dir, &token, &hash)?;
            println!(
                "admin token (keep secret; for --token-file): {}",
                token_path.display()
            );
            println!(
                "for wharf serve --admin-token-file: {}",
                hash_path.display()
            );
        }
    }
    Ok(())
}

/// Writes `dir/admin-token` (mode 0600) and `dir/admin-token.sha256`,
/// creating `dir` (mode 0700) if needed; refuses to replace either file.
fn write_token_files(dir: &Path, token: &str, hash: &str) -> Result<(PathBuf, PathBuf), String> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let token_path = dir.join("admin-token");
    let hash_path = dir.join("admin-token.sha256");
    // Checked first so that a refusal leaves no half-written pair behind.
    for path in [&token_path, &hash_path] {
        if path.exists() {
            return Err(format!(
                "{} exists: not replacing it (remove it or choose another --out)",
                path.display()
            ));
        }
    }
    let write = |path: &Path, text: &str, mode: u32| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
            .map_err(|e| format!("writing {}: {e}", path.display()))
    };
    write(&token_path, &format!("{token}\n"), 0o600)?;
    write(&hash_path, &format!("{hash}\n"), 0o644)?;
    Ok((token_path, hash_path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory as _, Parser};

    /// `wharf admin` as a root command, as `main` nests it.
    #[derive(Parser, Debug)]
    struct TestCli {
        #[command(flatten)]
        admin: AdminArgs,
    }

    fn parse(args: &[&str]) -> AdminArgs {
        let argv = std::iter::once("admin").chain(args.iter().copied());
        TestCli::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .admin
    }

    fn refused(args: &[&str]) -> String {
        let argv = std::iter::once("admin").chain(args.iter().copied());
        match TestCli::try_parse_from(argv) {
            Ok(cli) => panic!("{args:?} parsed: {:?}", cli.admin),
            Err(e) => e.to_string(),
        }
    }

    fn api(args: &[&str]) -> ApiCommand {
        match parse(args).command {
            AdminCommand::Api(command) => command,
            other => panic!("{args:?} is not an API command: {other:?}"),
        }
    }

    /// The call `args` makes, with `password` as read for `user set`.
    fn call_with(args: &[&str], password: Option<&str>) -> Result<Call, String> {
        call(&api(args), password)
    }

    fn call_of(args: &[&str]) -> Call {
        call_with(args, None).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn assert_call(args: &[&str], method: Method, path: &str, body: Option<Value>) {
        let c = call_of(args);
        assert_eq!(
            (c.method, c.path.as_str(), c.body),
            (method, path, body),
            "{args:?}"
        );
    }

    #[test]
    fn the_command_tree_is_well_formed() {
        TestCli::command().debug_assert();
    }

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
    fn durations_take_s_m_h_d_or_plain_seconds() {
        let cases: &[(&str, u64)] = &[
            ("1", 1),
            ("3600", 3600),
            ("90s", 90),
            ("15m", 900),
            ("12h", 43_200),
            ("30d", 2_592_000),
        ];
        for (text, secs) in cases {
            assert_eq!(parse_duration(text), Ok(*secs), "{text}");
        }
    }

    #[test]
    fn bad_durations_are_refused() {
        for text in [
            "", "s", "0", "0d", "-5m", "1.5h", "2w", "12 h", "h12", "1h30m", "forever",
        ] {
            assert!(parse_duration(text).is_err(), "{text} was accepted");
        }
        assert!(parse_duration("999999999999999999d")
            .unwrap_err()
            .contains("too long"));
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
    fn roles_name_a_role_and_optionally_a_pattern() {
        assert_eq!(
            parse_role("push"),
            Ok(Role {
                role: "push",
                repositories: None
            })
        );
        assert_eq!(
            parse_role("admin:acme/*"),
            Ok(Role {
                role: "admin",
                repositories: Some("acme/*".into())
            })
        );
        assert_eq!(
            parse_role("pull:acme/team/app"),
            Ok(Role {
                role: "pull",
                repositories: Some("acme/team/app".into())
            })
        );
        for bad in [
            "owner",
            "Push",
            "",
            "push:",
            "push:Acme/*",
            "push:acme/*/x",
            "pull:acme/app:x",
        ] {
            assert!(parse_role(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn grants_are_checked_and_sent_in_canonical_form() {
        assert_eq!(
            parse_grant("acme/app:pull,push"),
            Ok("acme/app:pull,push".into())
        );
        assert_eq!(
            parse_grant("acme/*:push, pull"),
            Ok("acme/*:pull,push".into())
        );
        assert_eq!(
            parse_grant("acme/*:delete,pull,push"),
            Ok("acme/*:pull,push,delete".into())
        );
        for bad in [
            "acme/app",
            "acme/app:",
            "acme/app:write",
            "Acme/app:pull",
            ":pull",
            "acme/app:*",
        ] {
            assert!(parse_grant(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn bad_values_are_refused_by_the_command_line_parser() {
        let e = refused(&["tenant", "create", "acme", "--quota-bytes", "10XB"]);
        assert!(e.contains("unknown suffix"), "{e}");
        let e = refused(&[
            "robot",
            "create",
            "acme",
            "ci",
            "--grant",
            "acme/app:pull",
            "--expires-in",
            "1w",
        ]);
        assert!(e.contains("duration"), "{e}");
        refused(&["robot", "create", "acme", "ci"]);
        refused(&["user", "set", "acme", "alice", "--role", "owner"]);
        refused(&["tenant", "set", "acme", "--share", "2"]);
        // A password is never an argument.
        refused(&["user", "set", "acme", "alice", "--password", "hunter2"]);
    }

    #[test]
    fn global_options_go_before_or_after_the_command() {
        let a = parse(&["--url", "http://10.0.0.1:5001", "tenant", "list"]);
        assert_eq!(a.connection.url, "http://10.0.0.1:5001");
        let a = parse(&[
            "tenant",
            "list",
            "--token-file",
            "/run/t",
            "--url",
            "http://h:1",
        ]);
        assert_eq!(a.connection.url, "http://h:1");
        assert_eq!(
            a.connection.token_file.as_deref(),
            Some(Path::new("/run/t"))
        );
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
    fn tenant_list_show_usage_and_delete() {
        assert_call(&["tenant", "list"], Method::GET, "/admin/v1/tenants", None);
        assert_call(
            &["tenant", "show", "acme"],
            Method::GET,
            "/admin/v1/tenants/acme",
            None,
        );
        assert_call(
            &["usage", "acme"],
            Method::GET,
            "/admin/v1/tenants/acme/usage",
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
    fn user_set_sends_the_password_and_roles() {
        let c = call_with(
            &[
                "user",
                "set",
                "acme",
                "alice",
                "--role",
                "push",
                "--role",
                "admin:acme/team/*",
                "--password-stdin",
            ],
            Some("s3cret pass"),
        )
        .unwrap();
        assert_eq!(c.method, Method::PUT);
        assert_eq!(c.path, "/admin/v1/tenants/acme/users/alice");
        assert_eq!(
            c.body,
            Some(json!({
                "password": "s3cret pass",
                "roles": [
                    {"role": "push"},
                    {"role": "admin", "repositories": "acme/team/*"},
                ],
            }))
        );
        // Roles alone (an update), or the password alone.
        assert_call(
            &["user", "set", "acme", "bob", "--role", "pull:acme/app"],
            Method::PUT,
            "/admin/v1/tenants/acme/users/bob",
            Some(json!({"roles": [{"role": "pull", "repositories": "acme/app"}]})),
        );
        let c = call_with(&["user", "set", "acme", "bob"], Some("pw")).unwrap();
        assert_eq!(c.body, Some(json!({"password": "pw"})));
        let e = call_with(&["user", "set", "acme", "bob"], None).unwrap_err();
        assert!(e.contains("nothing to set"), "{e}");
    }

    #[test]
    fn user_list_and_delete() {
        assert_call(
            &["user", "list", "acme"],
            Method::GET,
            "/admin/v1/tenants/acme/users",
            None,
        );
        assert_call(
            &["user", "delete", "acme", "alice"],
            Method::DELETE,
            "/admin/v1/tenants/acme/users/alice",
            None,
        );
    }

    #[test]
    fn sessions_revoke_names_a_user_a_tenant_or_everyone() {
        assert_call(
            &["sessions", "revoke", "--tenant", "acme", "--user", "alice"],
            Method::DELETE,
            "/admin/v1/tenants/acme/users/alice/sessions",
            None,
        );
        assert_call(
            &["sessions", "revoke", "--tenant", "acme"],
            Method::DELETE,
            "/admin/v1/tenants/acme/sessions",
            None,
        );
        assert_call(
            &["sessions", "revoke", "--all"],
            Method::DELETE,
            "/admin/v1/sessions",
            None,
        );
        assert!(call_with(&["sessions", "revoke"], None).is_err());
    }

    #[test]
    fn robot_create_sends_grants_and_lifetime() {
        let c = call_of(&[
            "robot",
            "create",
            "acme",
            "ci",
            "--grant",
            "acme/app:push,pull",
            "--grant",
            "acme/cache/*:pull",
            "--expires-in",
            "30d",
        ]);
        assert_eq!(c.method, Method::POST);
        assert_eq!(c.path, "/admin/v1/tenants/acme/robots");
        assert_eq!(
            c.body,
            Some(json!({
                "name": "ci",
                "grants": ["acme/app:pull,push", "acme/cache/*:pull"],
                "expires_in_secs": 2_592_000,
            }))
        );
        assert_eq!(c.print, Print::Json);
        let c = call_of(&[
            "robot",
            "create",
            "acme",
            "ci",
            "--grant",
            "acme/*:pull",
            "--secret-only",
        ]);
        assert_eq!(
            c.body,
            Some(json!({"name": "ci", "grants": ["acme/*:pull"]}))
        );
        assert_eq!(c.print, Print::Secret);
    }

    #[test]
    fn robot_list_and_revoke_by_short_or_full_name() {
        assert_call(
            &["robot", "list", "acme"],
            Method::GET,
            "/admin/v1/tenants/acme/robots",
            None,
        );
        assert_call(
            &["robot", "revoke", "acme", "ci"],
            Method::DELETE,
            "/admin/v1/tenants/acme/robots/ci",
            None,
        );
        assert_call(
            &["robot", "revoke", "acme", "acme+ci"],
            Method::DELETE,
            "/admin/v1/tenants/acme/robots/acme+ci",
            None,
        );
    }

    #[test]
    fn names_cannot_escape_their_path_segment() {
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
        for user in ["", "..", "Alice", "a/b", "_alice", &"a".repeat(65)] {
            assert!(
                call_with(&["user", "delete", "acme", user], None).is_err(),
                "{user:?}"
            );
        }
        for robot in ["", "..", "other+ci", "acme+", "c i", "ci/x", "CI"] {
            assert!(
                call_with(&["robot", "revoke", "acme", robot], None).is_err(),
                "{robot:?}"
            );
        }
        // Creating takes either form too.
        let c = call_of(&[
            "robot",
            "create",
            "acme",
            "acme+ci",
            "--grant",
            "acme/*:pull",
        ]);
        assert_eq!(c.body.unwrap()["name"], "acme+ci");
        assert!(call_with(
            &[
                "robot",
                "create",
                "acme",
                "other+ci",
                "--grant",
                "acme/*:pull"
            ],
            None
        )
        .is_err());
        // Whatever passes is still encoded, never interpreted.
        assert_eq!(
            segment("x", "a b/c?d#e%+~"),
            Ok("a%20b%2Fc%3Fd%23e%25+~".into())
        );
        let longest = "a".repeat(64);
        assert!(call_with(&["user", "delete", "acme", &longest], None).is_ok());
    }

    #[test]
    fn the_password_comes_from_stdin_or_the_environment() {
        let stdin = |s: &'static str| std::io::Cursor::new(s.as_bytes());
        assert_eq!(
            read_password(true, None, stdin("hunter2\nignored\n")),
            Ok(Some("hunter2".into()))
        );
        assert_eq!(
            read_password(true, None, stdin("a b\r\n")),
            Ok(Some("a b".into()))
        );
        assert_eq!(
            read_password(true, None, stdin("no newline")),
            Ok(Some("no newline".into()))
        );
        // --password-stdin wins over the environment.
        assert_eq!(
            read_password(true, Some("env".into()), stdin("typed\n")),
            Ok(Some("typed".into()))
        );
        assert_eq!(
            read_password(false, Some("env".into()), stdin("")),
            Ok(Some("env".into()))
        );
        assert_eq!(read_password(false, None, stdin("unread\n")), Ok(None));
        assert!(read_password(true, None, stdin("\n")).is_err());
        assert!(read_password(true, None, stdin("")).is_err());
        assert!(read_password(false, Some(String::new()), stdin("")).is_err());
    }

    #[test]
    fn the_token_comes_from_the_file_first_then_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin-token");
        std::fs::write(&file, "wharf_admin_abc \nsecond line\n").unwrap();
        assert_eq!(
            admin_token(Some(&file), Some("from-env".into())),
            Ok(Some("wharf_admin_abc".into()))
        );
        assert_eq!(
            admin_token(None, Some("from-env".into())),
            Ok(Some("from-env".into()))
        );
        assert_eq!(admin_token(None, None), Ok(None));

        let hash = dir.path().join("admin-token.sha256");
        std::fs::write(&hash, format!("sha256:{}\n", "0".repeat(64))).unwrap();
        let e = admin_token(Some(&hash), None).unwrap_err();
        assert!(e.contains("hash"), "{e}");
        std::fs::write(&file, "\n").unwrap();
        assert!(admin_token(Some(&file), None).is_err());
        assert!(admin_token(Some(&dir.path().join("missing")), None).is_err());
    }

    #[test]
    fn generated_tokens_are_random_and_match_their_hash_line() {
        let (token, hash) = new_admin_token().unwrap();
        let random = token.strip_prefix(ADMIN_TOKEN_PREFIX).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(random).unwrap().len(), 32);
        let hex = hash.strip_prefix("sha256:").unwrap();
        assert_eq!(hex.len(), 64);
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert!(wharf_auth::verify_secret(&token, hex));
        assert_ne!(new_admin_token().unwrap().0, token);
    }

    #[test]
    fn token_files_are_private_and_never_replaced() {
        use std::os::unix::fs::PermissionsExt as _;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("secrets");
        let (token, hash) = new_admin_token().unwrap();
        let (t, h) = write_token_files(&dir, &token, &hash).unwrap();
        assert_eq!(std::fs::read_to_string(&t).unwrap(), format!("{token}\n"));
        assert_eq!(std::fs::read_to_string(&h).unwrap(), format!("{hash}\n"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&t), 0o600);
        assert_eq!(mode(&dir), 0o700);
        // The token file reads back as the token to send.
        assert_eq!(admin_token(Some(&t), None), Ok(Some(token.clone())));

        let e = write_token_files(&dir, "other", "sha256:other").unwrap_err();
        assert!(e.contains("exists"), "{e}");
        assert_eq!(std::fs::read_to_string(&t).unwrap(), format!("{token}\n"));
    }

    #[test]
    fn base_urls_are_checked() {
        assert!(base_url("http://127.0.0.1:5001").is_ok());
        assert!(base_url("https://admin.example/wharf/").is_ok());
        for bad in [
            "127.0.0.1:5001",
            "ftp://h",
            "http://user:pw@h",
            "http://h/?x=1",
            "not a url",
        ] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_answers_show_status_code_and_message() {
        let body = r#"{"errors":[{"code":"CONFLICT","message":"tenant \"acme\" exists"}]}"#;
        assert_eq!(
            describe_error(StatusCode::CONFLICT, body),
            "409 CONFLICT: tenant \"acme\" exists"
        );
        let two =
            r#"{"errors":[{"code":"INVALID","message":"a"},{"code":"INVALID","message":"b"}]}"#;
        assert_eq!(
            describe_error(StatusCode::BAD_REQUEST, two),
            "400 INVALID: a\nwharf admin: 400 INVALID: b"
        );
        assert_eq!(
            describe_error(StatusCode::BAD_GATEWAY, "<html>upstream down</html>"),
            "502 Bad Gateway: <html>upstream down</html>"
        );
        assert_eq!(describe_error(StatusCode::NOT_FOUND, ""), "404 Not Found");
        // A redirect is not followed: it ends up here too.
        assert_eq!(describe_error(StatusCode::FOUND, ""), "302 Found");
    }

    #[test]
    fn answers_are_pretty_printed_or_reduced_to_the_secret() {
        let created = r#"{"name":"acme+ci","secret":"wharf_robot_x"}"#;
        assert_eq!(
            render(Print::Json, created),
            Ok(Some(
                "{\n  \"name\": \"acme+ci\",\n  \"secret\": \"wharf_robot_x\"\n}".into()
            ))
        );
        assert_eq!(
            render(Print::Secret, created),
            Ok(Some("wharf_robot_x".into()))
        );
        assert!(render(Print::Secret, r#"{"name":"acme+ci"}"#).is_err());
        assert!(render(Print::Secret, "").is_err());
        assert_eq!(render(Print::Json, ""), Ok(None));
        assert_eq!(
            render(Print::Json, "plain text\n"),
            Ok(Some("plain text".into()))
        );
    }
}
