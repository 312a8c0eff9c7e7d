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
//!
//! # Layout
//!
//! One file per command word of `wharf admin`, each with its arguments,
//! value parsers, the request it makes and its tests:
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | `wharf admin` itself: [`AdminArgs`], the command enum, [`run`] and the dispatch to each command's file; shared test helpers |
//! | `connection.rs` | `--url`, `--token-file`, `--as-user` and `--password-file` ([`Connection`], also flattened into `wharf gc`, `wharf backup` and `wharf restore`); [`Call`] and [`Print`](connection::Print); sending a call, printing its answer, describing errors |
//! | `token.rs` | `wharf admin token` (generating an admin token and its hash line) |
//! | `tenant.rs` | `wharf admin tenant` (`create`, `list`, `show`, `set`, `delete`): quotas, share, hostname, immutable-tag rules (`--immutable-tag`), retention policy (`--retention-json`); the tenant name check and path |
//! | `user.rs` | `wharf admin user` (`set`, `list`, `delete`): roles, the password from stdin or WHARF_PASSWORD; the user name check |
//! | `robot.rs` | `wharf admin robot` (`create`, `list`, `revoke`): grants, lifetimes, `--secret-only` |
//! | `usage.rs` | `wharf admin usage` |
//! | `repo.rs` | `wharf admin repo delete` (one repository and everything in it) |
//! | `content.rs` | `wharf admin content delete` (everything a tenant's repositories hold) |
//! | `sessions.rs` | `wharf admin sessions revoke` |
//! | `notification.rs` | `wharf admin notification` (`set`, `list`, `show`, `delete`): a tenant's webhooks, the signing secret from `--secret-file`, `--secret-only` |
//!
//! Running retention or garbage collection is `wharf gc` (`crate::gc_cli`),
//! which reuses `connection.rs`.

use std::process::ExitCode;

use clap::{Args, Subcommand};

pub(crate) mod connection;
mod content;
mod notification;
mod repo;
mod robot;
mod sessions;
pub(crate) mod tenant;
mod token;
mod usage;
mod user;

use connection::{send, Call, Connection};
use content::ContentCommand;
use notification::NotificationCommand;
use repo::RepoCommand;
use robot::RobotCommand;
use sessions::SessionsCommand;
use tenant::TenantCommand;
use token::TokenArgs;
use usage::UsageArgs;
use user::UserCommand;

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
    Token(TokenArgs),
    #[command(flatten)]
    Api(ApiCommand),
}

/// The commands that make one request to the admin API.
#[derive(Subcommand, Debug)]
enum ApiCommand {
    /// Create, list, show, change and delete tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Set, list and delete a tenant's users; unlock one locked out by
    /// failed logins.
    #[command(subcommand)]
    User(UserCommand),
    /// Create, list and revoke a tenant's robot accounts (for CI).
    #[command(subcommand)]
    Robot(RobotCommand),
    /// What a tenant holds (bytes, repositories) and its quota.
    Usage(UsageArgs),
    /// Delete a repository and everything in it.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Delete everything a tenant's repositories hold (the tenant stays).
    #[command(subcommand)]
    Content(ContentCommand),
    /// End sessions: access and refresh tokens issued before stop working
    /// at once (passwords and robot secrets still log in).
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Set, list, show and delete a tenant's webhooks: where its events
    /// (pushes, tag moves, deletes, pulls if asked) are sent, signed.
    #[command(subcommand)]
    Notification(NotificationCommand),
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
        AdminCommand::Token(token) => return token.run(),
        AdminCommand::Api(command) => command,
    };
    // The URL and token are checked before anyone is asked for a password.
    let (base, auth) = args.connection.resolve()?;
    let password = match &command {
        ApiCommand::User(user) => user.password()?,
        ApiCommand::Notification(n) => n.secret()?,
        _ => None,
    };
    let call = call(&command, password.as_deref())?;
    send(&base, auth.as_deref(), &call)
}

/// The request `command` makes; `password` is what `user set` read from
/// stdin or the environment, or the secret `notification set` read from
/// its file.
fn call(command: &ApiCommand, password: Option<&str>) -> Result<Call, String> {
    match command {
        ApiCommand::Tenant(tenant) => tenant.call(),
        ApiCommand::User(user) => user.call(password),
        ApiCommand::Robot(robot) => robot.call(),
        ApiCommand::Usage(usage) => usage.call(),
        ApiCommand::Repo(repo) => repo.call(),
        ApiCommand::Content(content) => content.call(),
        ApiCommand::Sessions(sessions) => sessions.call(),
        ApiCommand::Notification(n) => n.call(password),
    }
}

/// Parsing a `wharf admin` command line and the call it makes, for the
/// tests of every command's file.
#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser};
    use reqwest::Method;
    use serde_json::Value;

    use super::*;

    /// `wharf admin` as a root command, as `main` nests it.
    #[derive(Parser, Debug)]
    struct TestCli {
        #[command(flatten)]
        admin: AdminArgs,
    }

    pub(super) fn parse(args: &[&str]) -> AdminArgs {
        let argv = std::iter::once("admin").chain(args.iter().copied());
        TestCli::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .admin
    }

    /// The error `args` is refused with by the command-line parser.
    pub(super) fn refused(args: &[&str]) -> String {
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
    pub(super) fn call_with(args: &[&str], password: Option<&str>) -> Result<Call, String> {
        call(&api(args), password)
    }

    pub(super) fn call_of(args: &[&str]) -> Call {
        call_with(args, None).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    pub(super) fn assert_call(args: &[&str], method: Method, path: &str, body: Option<Value>) {
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
}
