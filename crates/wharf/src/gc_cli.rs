//! `wharf gc`: storage lifecycle commands, clients of the admin API like
//! `wharf admin` (same `--url` and `--token-file`).
//!
//! Owns: the `wharf gc` commands (`run`, `status`, `scan-orphans`, `check`,
//! `retention`), the request each makes and how its answer prints, and the
//! exit code of a check that finds storage and metadata disagreeing.
//!
//! Must never: apply retention or collect when `--dry-run` was given (the
//! request then says `dry_run=true`, and the server changes nothing), or
//! print a secret.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

use crate::admin_cli::connection::{
    base_url, fetch, render, Call, Connection, Print, API_PREFIX, TOKEN_ENV,
};
use crate::admin_cli::tenant::tenant_segment;

/// `wharf gc`: garbage collection and retention on a running server.
#[derive(Args, Debug)]
pub struct GcArgs {
    #[command(flatten)]
    connection: Connection,

    #[command(subcommand)]
    command: GcCommand,
}

#[derive(Subcommand, Debug)]
pub enum GcCommand {
    /// Run a garbage-collection pass now: decide every due review and
    /// delete what nothing holds. Prints what it did, each decision with
    /// its reason.
    Run {
        /// Decide the reviews in a transaction that is rolled back: exactly
        /// what a pass would do now, with nothing done.
        #[arg(long)]
        dry_run: bool,
        /// Decide at most this many reviews (a dry run: default 1000).
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
    /// The review queue: queued, due, the oldest overdue, tombstones, holds.
    Status,
    /// List the blob store and queue for review the bytes metadata does
    /// not know (crash leftovers); they are collected after the orphan age.
    ScanOrphans,
    /// Check that storage and metadata agree (as `wharf check --storage`);
    /// exits non-zero when they do not.
    Check,
    /// Apply the tenants' retention policies now (each deletion logged by
    /// the server with its rule), or with --dry-run list what they would
    /// delete and why, changing nothing.
    Retention {
        /// Change nothing: print the plan.
        #[arg(long)]
        dry_run: bool,
        /// Only this tenant [default: every tenant with a policy].
        #[arg(long, value_name = "T")]
        tenant: Option<String>,
        /// Plan as of this moment (seconds since the Unix epoch) instead of
        /// now: what the policies would delete then, if nothing were pushed
        /// or pulled meanwhile.
        #[arg(long, value_name = "UNIX")]
        as_of_unix: Option<u64>,
    },
}

/// Runs `wharf gc …`: 0 on success, 1 with a message on stderr.
pub fn run_gc(args: GcArgs) -> ExitCode {
    let outcome = (|| -> Result<String, String> {
        let (base, token) = args.connection.resolve()?;
        let (text, print) = match &args.command {
            GcCommand::Run {
                dry_run: false,
                limit,
            } => (run_in_rounds(&base, token.as_deref(), *limit)?, Print::Json),
            command => {
                let call = gc_call(command)?;
                (fetch(&base, token.as_deref(), &call)?, call.print)
            }
        };
        if let Some(out) = render(print, &text)? {
            println!("{out}");
        }
        Ok(text)
    })();
    match outcome {
        Ok(text) if matches!(args.command, GcCommand::Check) && !check_is_clean(&text) => {
            eprintln!("wharf gc: storage and metadata disagree (see above)");
            ExitCode::FAILURE
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("wharf gc: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Reviews one request of `wharf gc run` decides at most: a round ends
/// well within the admin port's idle limit (2 minutes) even at a slow
/// metadata store's ~200 reviews a second.
const ROUND: u64 = 10_000;

/// A real pass as rounds of at most [`ROUND`] reviews, until a round
/// decides fewer than it was allowed (nothing more is due) or `limit` is
/// reached: one answer, the rounds' counts summed and their verdicts in
/// order.
fn run_in_rounds(
    base: &reqwest::Url,
    token: Option<&str>,
    limit: Option<u64>,
) -> Result<String, String> {
    let mut total = serde_json::json!({
        "dry_run": false, "reviewed": 0, "unlinked": 0, "deleted": 0,
        "bytes_reclaimed": 0, "failures": 0, "seconds": 0.0, "verdicts": [], "rounds": 0,
    });
    let mut left = limit.unwrap_or(u64::MAX);
    while left > 0 {
        let round = left.min(ROUND);
        let call = gc_call(&GcCommand::Run {
            dry_run: false,
            limit: Some(round),
        })?;
        let answer: Value = serde_json::from_str(&fetch(base, token, &call)?)
            .map_err(|e| format!("the pass's answer is not JSON: {e}"))?;
        let reviewed = answer["reviewed"].as_u64().unwrap_or(0);
        for key in [
            "reviewed",
            "unlinked",
            "deleted",
            "bytes_reclaimed",
            "failures",
        ] {
            let sum = total[key].as_u64().unwrap_or(0) + answer[key].as_u64().unwrap_or(0);
            total[key] = sum.into();
        }
        let seconds =
            total["seconds"].as_f64().unwrap_or(0.0) + answer["seconds"].as_f64().unwrap_or(0.0);
        total["seconds"] = seconds.into();
        total["rounds"] = (total["rounds"].as_u64().unwrap_or(0) + 1).into();
        if let (Some(all), Some(these)) = (
            total["verdicts"].as_array_mut(),
            answer["verdicts"].as_array(),
        ) {
            all.extend(these.iter().cloned());
        }
        left -= reviewed.min(left);
        if reviewed < round {
            break;
        }
    }
    Ok(total.to_string())
}

/// Whether a check's answer says `"clean": true`.
fn check_is_clean(body: &str) -> bool {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("clean")?.as_bool())
        .unwrap_or(false)
}

/// The check through the admin API at `url` (for `wharf check --storage`
/// while an embedded node holds the database), printed; whether clean.
pub fn gc_check_remote(url: &str) -> Result<bool, String> {
    let base = base_url(url)?;
    let token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
    let call = gc_call(&GcCommand::Check)?;
    let text = fetch(&base, token.as_deref(), &call)?;
    if let Some(out) = render(call.print, &text)? {
        println!("{out}");
    }
    Ok(check_is_clean(&text))
}

/// The request `command` makes.
fn gc_call(command: &GcCommand) -> Result<Call, String> {
    let gc = format!("{API_PREFIX}/gc");
    let json = |method, path: String| Call {
        method,
        path,
        body: None,
        print: Print::Json,
    };
    match command {
        GcCommand::Run { dry_run, limit } => {
            let mut query = Vec::new();
            if *dry_run {
                query.push("dry_run=true".to_string());
            }
            if let Some(n) = limit {
                query.push(format!("limit={n}"));
            }
            Ok(match query.is_empty() {
                true => json(Method::POST, format!("{gc}/run")),
                false => json(Method::POST, format!("{gc}/run?{}", query.join("&"))),
            })
        }
        GcCommand::Status => Ok(json(Method::GET, gc)),
        GcCommand::ScanOrphans => Ok(json(Method::POST, format!("{gc}/scan-orphans"))),
        GcCommand::Check => Ok(json(Method::GET, format!("{gc}/check"))),
        GcCommand::Retention {
            dry_run,
            tenant,
            as_of_unix,
        } => {
            let mut path = format!("{API_PREFIX}/gc/retention?dry_run={dry_run}");
            if let Some(t) = tenant {
                path.push_str(&format!("&tenant={}", tenant_segment(t)?));
            }
            if let Some(t) = as_of_unix {
                path.push_str(&format!("&as_of_unix={t}"));
            }
            Ok(Call {
                method: Method::POST,
                path,
                body: None,
                print: Print::Retention,
            })
        }
    }
}

/// A retention answer as text: per tenant, the plan as the server rendered
/// it and, for a real run, what was deleted and what skipped, and why.
pub(crate) fn render_retention(answer: &Value) -> String {
    let dry_run = answer["dry_run"].as_bool().unwrap_or(true);
    let tenants = answer["tenants"].as_array().cloned().unwrap_or_default();
    if tenants.is_empty() {
        return "no tenant has a retention policy".into();
    }
    let mut out = String::new();
    for t in &tenants {
        let name = t["tenant"].as_str().unwrap_or("?");
        out.push_str(&format!("== tenant {name}"));
        out.push_str(if dry_run { " (dry run)\n" } else { "\n" });
        out.push_str(t["rendered"].as_str().unwrap_or(""));
        if dry_run {
            continue;
        }
        let count = |k: &str| t[k].as_array().map_or(0, Vec::len);
        out.push_str(&format!(
            "deleted {}, skipped {}\n",
            count("deleted"),
            count("skipped")
        ));
        for s in t["skipped"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "skipped: {} — because {}\n",
                s["line"].as_str().unwrap_or("?"),
                s["skipped_because"].as_str().unwrap_or("?")
            ));
        }
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::json;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        gc: GcArgs,
    }

    fn call_of(args: &[&str]) -> Call {
        let cli = Cli::try_parse_from(std::iter::once("gc").chain(args.iter().copied())).unwrap();
        gc_call(&cli.gc.command).unwrap()
    }

    #[test]
    fn collector_commands_make_their_one_request() {
        for (args, method, path) in [
            (&["run"][..], Method::POST, "/admin/v1/gc/run"),
            (
                &["run", "--dry-run"][..],
                Method::POST,
                "/admin/v1/gc/run?dry_run=true",
            ),
            (
                &["run", "--dry-run", "--limit", "10"][..],
                Method::POST,
                "/admin/v1/gc/run?dry_run=true&limit=10",
            ),
            (&["status"][..], Method::GET, "/admin/v1/gc"),
            (
                &["scan-orphans"][..],
                Method::POST,
                "/admin/v1/gc/scan-orphans",
            ),
            (&["check"][..], Method::GET, "/admin/v1/gc/check"),
        ] {
            let c = call_of(args);
            assert_eq!(
                (c.method, c.path.as_str(), c.body),
                (method, path, None),
                "{args:?}"
            );
        }
        assert!(check_is_clean(r#"{"clean": true, "stored": 3}"#));
        assert!(!check_is_clean(r#"{"clean": false}"#));
        assert!(!check_is_clean("not json"));
    }

    #[test]
    fn retention_posts_the_dry_run_tenant_and_moment_it_was_given() {
        let c = call_of(&["retention", "--dry-run", "--tenant", "acme"]);
        assert_eq!(c.method, Method::POST);
        assert_eq!(c.path, "/admin/v1/gc/retention?dry_run=true&tenant=acme");
        assert_eq!(c.body, None);
        let c = call_of(&["retention", "--as-of-unix", "99"]);
        assert_eq!(c.path, "/admin/v1/gc/retention?dry_run=false&as_of_unix=99");
        let cli = Cli::try_parse_from(["gc", "retention", "--tenant", "a/b"]).unwrap();
        assert!(gc_call(&cli.gc.command).is_err(), "not a tenant name");
    }

    #[test]
    fn retention_answers_print_the_plan_and_what_was_skipped() {
        let answer = json!({"dry_run": false, "tenants": [{
            "tenant": "acme",
            "rendered": "rule 0: keep_last 1\ndelete tag acme/app:v1 — …\n1 tag and 0 manifests to delete\n",
            "deleted": [],
            "skipped": [{"line": "delete tag acme/app:v1 — …", "skipped_because": "moved"}],
        }]});
        let text = render_retention(&answer);
        assert!(
            text.starts_with("== tenant acme\nrule 0: keep_last 1\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "deleted 0, skipped 1\nskipped: delete tag acme/app:v1 — … — because moved"
            ),
            "{text}"
        );
        let none = render_retention(&json!({"dry_run": true, "tenants": []}));
        assert_eq!(none, "no tenant has a retention policy");
    }
}
