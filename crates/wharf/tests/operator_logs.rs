//! What an operator reads, on the real binary: the access log (on by
//! default, off on request), `--version`, `serve --help` with this
//! machine's values, and the messages that say what to do next (a data
//! directory another node holds, a missing admin token, a locked-out user).

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_wharf");

/// Starts `wharf serve` on loopback ports over `dir/data` with `extra`
/// (and `env`), its stderr into `dir/log`; waits until both listeners are
/// bound. The child, the registry's and the admin port's base URLs.
fn start(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> (Child, String, String) {
    let log = std::fs::File::create(dir.join("log")).unwrap();
    let (addr, admin) = (dir.join("addr"), dir.join("admin-addr"));
    let mut cmd = Command::new(BIN);
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ])
    .arg("--data-dir")
    .arg(dir.join("data"))
    .arg("--addr-file")
    .arg(&addr)
    .arg("--admin-addr-file")
    .arg(&admin)
    .args(extra)
    .env_remove("WHARF_ADMIN_TOKEN_FILE")
    .env_remove("WHARF_ADMIN_TOKEN_HASH_FILE")
    .env_remove("WHARF_ACCESS_LOG")
    .env_remove("WHARF_LOG")
    .stdout(Stdio::null())
    .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let (Ok(a), Ok(m)) = (
            std::fs::read_to_string(&addr),
            std::fs::read_to_string(&admin),
        ) {
            return (child, format!("http://{a}"), format!("http://{m}"));
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "wharf exited ({status}): {}",
                std::fs::read_to_string(dir.join("log")).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "wharf did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the node with SIGTERM (so its last lines are written), bounded.
fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
}

/// The JSON log lines of `dir/log`.
fn json_log(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn wharf(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("WHARF_ADMIN_TOKEN_FILE")
        .env_remove("WHARF_ADMIN_TOKEN")
        .env_remove("WHARF_ADMIN_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_access_log_is_on_by_default_and_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base, _) = start(dir.path(), &["--log-format", "json"], &[]);
    let client = reqwest::blocking::Client::new();
    let r = client
        .get(format!("{base}/v2/acme/app/manifests/v1"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let r = client.get(format!("{base}/v2/")).send().unwrap();
    assert_eq!(r.status(), 200);
    stop(child);
    let lines = json_log(dir.path());
    let access: Vec<&Value> = lines
        .iter()
        .filter(|v| v["target"] == "wharf::access")
        .collect();
    assert_eq!(access.len(), 2, "{access:?}");
    let line = access
        .iter()
        .find(|v| v["request_id"] == id.as_str())
        .expect("the 404's line, by the id it returned");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["status"], 404);
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/v2/acme/app/manifests/v1");
    assert_eq!(line["tenant"], "acme");
    assert_eq!(line["client"], "127.0.0.1");

    // Off: not a line, and still an id on every answer.
    let dir = tempfile::tempdir().unwrap();
    let (child, base, _) = start(
        dir.path(),
        &["--log-format", "json"],
        &[("WHARF_ACCESS_LOG", "off")],
    );
    let r = client.get(format!("{base}/v2/")).send().unwrap();
    assert!(r.headers().contains_key("x-request-id"));
    stop(child);
    let lines = json_log(dir.path());
    assert!(lines.iter().any(|v| v["message"] == "wharf listening"));
    assert!(
        !lines.iter().any(|v| v["target"] == "wharf::access"),
        "{lines:?}"
    );
}

#[test]
fn version_names_the_version_and_the_commit() {
    for args in [&["--version"][..], &["serve", "--version"]] {
        let out = wharf(args, &[]);
        assert!(out.status.success(), "{args:?}: {out:?}");
        let v = text(&out.stdout);
        let (_, rest) = v
            .split_once(&format!(" {} (commit ", env!("CARGO_PKG_VERSION")))
            .unwrap_or_else(|| panic!("{args:?}: {v}"));
        let commit = rest.trim().trim_end_matches(')');
        assert!(!commit.is_empty() && !commit.contains(' '), "{v}");
    }
}

#[test]
fn serve_help_shows_this_machines_limits_and_the_waiting_room() {
    // The open-file limit is set for the child; the cores are the test's.
    let out = Command::new("sh")
        .args(["-c", "ulimit -Sn 1024 && exec \"$0\" serve --help", BIN])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let help = text(&out.stdout);
    let cores = std::thread::available_parallelism().unwrap().get();
    let push = (cores * 32).clamp(8, 1024);
    for expected in [
        "on this machine (open-file limit 1024): 384".to_string(),
        "on this machine (open-file limit 1024): 192".to_string(),
        format!("on this machine ({cores} cores): {push}"),
    ] {
        assert!(help.contains(&expected), "{expected:?} not in:\n{help}");
    }
    assert!(help.contains("waiting room"), "{help}");
    assert!(!help.contains("more are answered `503` at once"), "{help}");
}

#[test]
fn a_second_node_on_the_same_data_directory_says_who_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let (child, _, _) = start(dir.path(), &[], &[]);
    let data = dir.path().join("data");
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    stop(child);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("another Wharf") && err.contains(&data.display().to_string()),
        "{err}"
    );
    assert!(err.contains("--data-dir"), "{err}");
}

#[test]
fn the_admin_cli_without_a_token_says_how_to_give_one() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("t");
    let made = wharf(&["admin", "token", "--out", tokens.to_str().unwrap()], &[]);
    assert!(made.status.success(), "{made:?}");
    let hash = tokens.join("admin-token.sha256");
    let (child, _, admin) = start(
        dir.path(),
        &[],
        &[("WHARF_ADMIN_TOKEN_HASH_FILE", hash.to_str().unwrap())],
    );
    let out = wharf(&["admin", "--url", &admin, "tenant", "list"], &[]);
    // A token that is not the one the server's hash was made from.
    let wrong = wharf(
        &["admin", "--url", &admin, "tenant", "list"],
        &[("WHARF_ADMIN_TOKEN", "wharf_admin_not-the-token")],
    );
    stop(child);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("401")
            && err.contains("--token-file")
            && err.contains("WHARF_ADMIN_TOKEN_FILE"),
        "{err}"
    );
    let err = text(&wrong.stderr);
    assert!(err.contains("401") && err.contains("not the one"), "{err}");
}

#[test]
fn a_locked_out_user_is_unlocked_by_the_admin_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base, admin) = start(dir.path(), &["--auth", "htpasswd"], &[]);
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["admin", "--url", &admin];
        all.extend_from_slice(args);
        let out = wharf(&all, env);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    run(&["tenant", "create", "locks"], &[]);
    run(
        &["user", "set", "locks", "lockee", "--role", "pull"],
        &[("WHARF_PASSWORD", "the-right-password")],
    );
    let client = reqwest::blocking::Client::new();
    let login = |user: &str, password: &str| {
        client
            .get(format!("{base}/v2/"))
            .basic_auth(user, Some(password))
            .send()
            .unwrap()
    };
    // Twenty failures from this address (across names, so no single pair
    // is blocked first) lock the address out for the rest of the minute.
    let mut locked = None;
    for i in 0..30 {
        let r = login(&format!("guess{}", i % 4), "wrong-password");
        if r.status() == 429 {
            locked = Some(r);
            break;
        }
        assert_eq!(r.status(), 401, "attempt {i}");
    }
    let locked = locked.expect("locked out within 30 failures");
    let retry: u64 = locked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        retry >= 10,
        "a long enough block to see it end early: {retry}"
    );
    assert_eq!(login("lockee", "the-right-password").status(), 429);

    let answer = run(&["user", "unlock", "lockee", "--client", "127.0.0.1"], &[]);
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert!(v["cleared"].as_u64().unwrap() >= 1, "{answer}");
    assert_eq!(login("lockee", "the-right-password").status(), 200);
    stop(child);
    let lines = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(
        lines.contains("locked out") && lines.contains("client=127.0.0.1"),
        "{lines}"
    );
    assert!(!lines.contains("wrong-password") && !lines.contains("the-right-password"));
}

/// `scripts/postgres.sh ACTION DIR [PORT]`; its stdout.
fn postgres(action: &str, dir: &Path, port: Option<u16>) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(script).arg(action).arg(dir);
    if let Some(p) = port {
        cmd.arg(p.to_string());
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "postgres.sh {action}: {}",
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_string()
}

#[test]
fn a_database_outage_is_logged_once_with_the_address_then_its_end() {
    if !Path::new("/usr/lib/postgresql").exists() {
        let required = std::env::var_os("CI").is_some()
            || std::env::var_os("WHARF_REQUIRE_POSTGRES").is_some();
        assert!(
            !required,
            "PostgreSQL is required here: run scripts/install-deps.sh"
        );
        eprintln!("skipped: PostgreSQL is not installed");
        return;
    }
    const PORT: u16 = 16400;
    let pg = tempfile::Builder::new()
        .prefix("wharf-pg")
        .tempdir_in("/tmp")
        .unwrap();
    let url = postgres("start", pg.path(), Some(PORT));
    let dir = tempfile::tempdir().unwrap();
    let (child, base, _) = start(dir.path(), &["--migrate", "--metadata-url", &url], &[]);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let tags = format!("{base}/v2/outage/app/tags/list");
    assert_eq!(client.get(&tags).send().unwrap().status(), 404);

    postgres("stop", pg.path(), None);
    // Several seconds of directory refreshes (one a second) and requests,
    // each failing to connect.
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(4) {
        assert_eq!(client.get(&tags).send().unwrap().status(), 503);
        std::thread::sleep(Duration::from_millis(200));
    }
    postgres("start", pg.path(), Some(PORT));
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(&tags).send().unwrap().status() != 404 {
        assert!(Instant::now() < deadline, "metadata did not come back");
        std::thread::sleep(Duration::from_millis(200));
    }
    stop(child);
    postgres("stop", pg.path(), None);

    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    let lines = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(lines("cannot connect to PostgreSQL (metadata)"), 1, "{log}");
    let first = log
        .lines()
        .find(|l| l.contains("cannot connect to PostgreSQL (metadata)"))
        .unwrap();
    assert!(
        first.contains("WARN")
            && first.contains(&format!("127.0.0.1:{PORT}"))
            && first.contains("error="),
        "{first}"
    );
    assert_eq!(lines("still cannot connect"), 0, "under a minute: {log}");
    assert_eq!(
        lines("connected to PostgreSQL (metadata) again"),
        1,
        "{log}"
    );
    // Nothing repeats the outage every second: besides the lines above,
    // the directory refresher's and the breaker's (once each), and the
    // pool's own (one per pooled connection lost when the server went).
    let warnings = |pool: bool| {
        log.lines()
            .filter(|l| l.contains(" WARN ") && l.contains("deadpool") == pool)
            .count()
    };
    assert!(warnings(false) <= 4, "{}:\n{log}", warnings(false));
    assert!(warnings(true) <= 2 * 16, "{}:\n{log}", warnings(true));
}
