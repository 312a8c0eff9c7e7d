//! What an operator meets first, on the real binary: safe defaults off
//! loopback, the log filter and format, the version in the log and the
//! metrics, and the server's admin token variable kept apart from the
//! admin CLI's.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `wharf serve` with `extra` (and `env`), its stderr into
/// `dir/log`; waits until both listeners are bound. The child and the
/// admin base URL.
fn start(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    let log = std::fs::File::create(dir.join("log")).unwrap();
    let (addr, admin) = (dir.join("addr"), dir.join("admin-addr"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
    cmd.args(["serve", "--admin-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--addr-file")
        .arg(&addr)
        .arg("--admin-addr-file")
        .arg(&admin)
        .args(extra)
        .env_remove("WHARF_ADMIN_TOKEN_FILE")
        .env_remove("WHARF_ADMIN_TOKEN_HASH_FILE")
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let (Ok(_), Ok(a)) = (
            std::fs::read_to_string(&addr),
            std::fs::read_to_string(&admin),
        ) {
            return (child, format!("http://{a}"));
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

/// `wharf serve ARGS` must refuse to start (exit 2): its stderr.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .args(args)
        .env_remove("WHARF_ADMIN_TOKEN_FILE")
        .env_remove("WHARF_ADMIN_TOKEN_HASH_FILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{err}");
    err
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn an_unauthenticated_registry_off_loopback_needs_the_explicit_flag() {
    let err = refused(&["--listen", "0.0.0.0:0"], &[]);
    assert!(
        err.contains("--allow-unauthenticated") && err.contains("--auth"),
        "{err}"
    );
    assert_eq!(err.matches("is not a loopback").count(), 1, "once: {err}");

    // On purpose: it starts, and says so at every start.
    let dir = tempfile::tempdir().unwrap();
    let (child, _) = start(
        dir.path(),
        &["--listen", "0.0.0.0:0"],
        &[("WHARF_ALLOW_UNAUTHENTICATED", "true")],
    );
    stop(child);
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(log.contains("THE REGISTRY IS OPEN"), "{log}");
}

#[test]
fn a_log_filter_that_does_not_parse_is_refused() {
    let err = refused(&["--log", "wharf=loud"], &[]);
    assert!(err.contains("--log") && err.contains("wharf=loud"), "{err}");
}

#[test]
fn json_logs_are_one_object_per_line_and_start_with_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let (child, admin) = start(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--log-format", "json"],
        &[],
    );
    let metrics = reqwest::blocking::get(format!("{admin}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    stop(child);
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let first = lines.first().expect("a start-up line");
    assert_eq!(first["message"], "wharf starting", "{first}");
    assert_eq!(first["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(first["level"], "INFO");
    assert!(first["timestamp"].is_string(), "{first}");
    let commit = first["commit"].as_str().unwrap().to_string();
    assert!(!commit.is_empty());
    let info = format!(
        "wharf_build_info{{version=\"{}\",commit=\"{commit}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(metrics.contains(&info), "{info} not in:\n{metrics}");

    // `wharf --version` names the same version.
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .arg("--version")
        .output()
        .unwrap();
    let v = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        v.trim(),
        format!("wharf {} (commit {commit})", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_server_and_the_admin_cli_read_different_token_variables() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["admin", "token", "--out"])
        .arg(dir.path().join("t"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let plain = dir.path().join("t/admin-token");
    let hash = dir.path().join("t/admin-token.sha256");

    // A shell set up for the admin CLI (docs/admin.md) does not change
    // what the server asks for: the plain token file in the CLI's variable
    // is not read by `serve`.
    let node = tempfile::tempdir().unwrap();
    let (child, admin) = start(
        node.path(),
        &["--listen", "127.0.0.1:0"],
        &[("WHARF_ADMIN_TOKEN_FILE", plain.to_str().unwrap())],
    );
    let open = reqwest::blocking::get(format!("{admin}/admin/v1/tenants")).unwrap();
    assert_eq!(
        open.status(),
        200,
        "no token asked for: none was configured"
    );
    stop(child);

    // The server's own variable takes the hash line...
    let node = tempfile::tempdir().unwrap();
    let (child, admin) = start(
        node.path(),
        &["--listen", "127.0.0.1:0"],
        &[("WHARF_ADMIN_TOKEN_HASH_FILE", hash.to_str().unwrap())],
    );
    let closed = reqwest::blocking::get(format!("{admin}/admin/v1/tenants")).unwrap();
    assert_eq!(closed.status(), 401);
    let token = std::fs::read_to_string(&plain).unwrap();
    let with = reqwest::blocking::Client::new()
        .get(format!("{admin}/admin/v1/tenants"))
        .bearer_auth(token.trim())
        .send()
        .unwrap();
    assert_eq!(with.status(), 200);
    stop(child);

    // ...and given the plain token by mistake, says which file it wants.
    let err = refused(
        &["--listen", "127.0.0.1:0"],
        &[("WHARF_ADMIN_TOKEN_HASH_FILE", plain.to_str().unwrap())],
    );
    assert!(
        err.contains("plain token") && err.contains("admin-token.sha256"),
        "{err}"
    );
}
