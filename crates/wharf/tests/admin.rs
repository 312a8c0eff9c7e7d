//! The admin port and the process's life cycle on the real binary: health,
//! readiness (and what turns it off), the metrics contract the shipped alert
//! rules rely on, the graceful drain on SIGTERM, and `wharf admin` setting
//! and lifting an immutable-tag rule that the running server enforces.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;

mod common;
use common::{data, sha256, Wharf};

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn get(url: &str) -> (u16, String) {
    let r = client().get(url).send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

/// The value of one sample line (`name{labels} value`) in an exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// Polls `f` until it returns true, for at most `within`.
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

fn push_blob(w: &Wharf, repo: &str, bytes: Vec<u8>) -> String {
    let d = sha256(&bytes);
    let r = client()
        .post(format!("{}/v2/{repo}/blobs/uploads/?digest={d}", w.base))
        .body(bytes)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    d
}

#[test]
fn admin_port_answers_health_readiness_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let w = Wharf::start_with(
        dir.path(),
        &[
            "--pull-limit",
            "7",
            "--storage-pool",
            "5",
            "--max-waiting-connections",
            "33",
        ],
    );
    assert_eq!(get(&format!("{}/healthz", w.admin)).0, 200);
    assert_eq!(get(&format!("{}/readyz", w.admin)).0, 200);
    // Client traffic, to see it counted.
    assert_eq!(get(&format!("{}/v2/", w.base)).0, 200);
    push_blob(&w, "team/app", data(1000, 1));

    let (status, text) = get(&format!("{}/metrics", w.admin));
    assert_eq!(status, 200);
    // Every family the alert rules in deploy/ use is exported.
    for family in [
        "wharf_connections_open",
        "wharf_connections_limit",
        "wharf_connections_waiting",
        "wharf_connections_waiting_limit",
        "wharf_connections_refused_total",
        "wharf_requests_in_flight",
        "wharf_requests_in_flight_limit",
        "wharf_requests_shed_total",
        "wharf_http_request_duration_seconds",
        "wharf_http_request_bytes_total",
        "wharf_http_response_bytes_total",
        "wharf_dependency_pool_size",
        "wharf_dependency_pool_in_use",
        "wharf_dependency_breaker_open",
        "wharf_dependency_timeouts_total",
        "wharf_dependency_call_duration_seconds",
        "wharf_ready",
        "wharf_process_open_fds",
        "wharf_process_max_fds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing from /metrics"
        );
    }
    assert_eq!(
        sample(&text, r#"wharf_requests_in_flight_limit{class="pull"}"#),
        Some(7.0),
        "the flag sets the limit"
    );
    assert_eq!(
        sample(&text, "wharf_connections_waiting_limit"),
        Some(33.0),
        "the flag sets the waiting room's size"
    );
    assert_eq!(sample(&text, "wharf_connections_waiting"), Some(0.0));
    assert_eq!(
        sample(
            &text,
            r#"wharf_dependency_pool_size{dependency="blob_storage"}"#
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(&text, r#"wharf_requests_admitted_total{class="push"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "wharf_http_request_bytes_total"),
        Some(1000.0)
    );
    assert_eq!(sample(&text, "wharf_ready"), Some(1.0));
}

#[test]
fn a_saturated_class_turns_the_node_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let w = Wharf::start_with(dir.path(), &["--pull-limit", "1", "--max-wait-ms", "3000"]);
    // A blob larger than the socket buffers: a client that does not read
    // it keeps its pull slot.
    let blob = push_blob(&w, "a/big", data(48 << 20, 2));
    let mut holder = TcpStream::connect(w.addr()).unwrap();
    write!(
        holder,
        "GET /v2/a/big/blobs/{blob} HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    let mut first = [0u8; 12];
    holder.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    // A second pull now waits for the slot (bounded by --max-wait-ms), and
    // while it waits the node says it is saturated.
    let waiter_url = format!("{}/v2/a/big/manifests/v1", w.base);
    let waiter = std::thread::spawn(move || client().head(waiter_url).send().unwrap().status());
    let readyz = format!("{}/readyz", w.admin);
    let mut seen = String::new();
    assert!(
        eventually(Duration::from_secs(3), || {
            let (s, body) = get(&readyz);
            seen = body;
            s == 503
        }),
        "readyz stayed ready while pulls queued: {seen}"
    );
    assert!(seen.contains("pull"), "{seen}");
    // The waiter is refused when its bounded wait ends: honest and fast.
    assert_eq!(waiter.join().unwrap(), 503);
    drop(holder);
    assert!(
        eventually(Duration::from_secs(3), || get(&readyz).0 == 200),
        "ready again once the slot is free"
    );
}

#[test]
fn sigterm_turns_not_ready_and_drains_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Wharf::start_with(dir.path(), &["--shutdown-grace-secs", "20"]);
    let c = client();
    let r = c
        .post(format!("{}/v2/a/app/blobs/uploads/", w.base))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let body = data(64 * 1024, 3);
    let digest = sha256(&body);

    // A PUT whose body is half sent when the signal arrives.
    let mut put = TcpStream::connect(w.addr()).unwrap();
    put.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let sep = if location.contains('?') { '&' } else { '?' };
    write!(
        put,
        "PUT {location}{sep}digest={digest} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
        body.len()
    )
    .unwrap();
    put.write_all(&body[..body.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(200));

    w.terminate();
    let readyz = format!("{}/readyz", w.admin);
    let mut seen = String::new();
    assert!(
        eventually(Duration::from_secs(3), || {
            match client().get(&readyz).send() {
                Ok(r) if r.status() == 503 => {
                    seen = r.text().unwrap_or_default();
                    true
                }
                _ => false,
            }
        }),
        "readyz did not turn 503 on SIGTERM"
    );
    assert!(seen.contains("shutting down"), "{seen}");
    // No new client connections are taken.
    assert!(
        eventually(Duration::from_secs(3), || TcpStream::connect(w.addr())
            .is_err()),
        "still accepting after SIGTERM"
    );

    // The request in flight finishes and is acknowledged.
    put.write_all(&body[body.len() / 2..]).unwrap();
    let mut answer = String::new();
    let _ = put.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let status = w
        .wait_exit(Duration::from_secs(10))
        .expect("exits after the drain");
    assert!(status.success(), "{status:?}");

    // What was acknowledged is there after a restart.
    let w = Wharf::start(dir.path());
    let r = client()
        .get(format!("{}/v2/a/app/blobs/{digest}", w.base))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().as_ref(), body.as_slice());
}

#[test]
fn serve_help_documents_every_limit() {
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--listen",
        "--data-dir",
        "--admin-listen",
        "--max-connections",
        "--max-waiting-connections",
        "--max-uploads-per-tenant",
        "--max-uploads-per-user",
        "--pull-limit",
        "--push-limit",
        "--admin-limit",
        "--tenant-share",
        "--max-wait-ms",
        "--adaptive",
        "--header-timeout-secs",
        "--idle-timeout-secs",
        "--min-upload-rate",
        "--storage-pool",
        "--metadata-pool",
        "--dependency-deadline-ms",
        "--shutdown-grace-secs",
    ] {
        assert!(help.contains(flag), "{flag} missing from serve --help");
    }
}

#[test]
fn a_cluster_without_shared_storage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["check", "--cluster-nodes", "3"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("needs shared storage"), "{err}");
}

/// `wharf serve` with `admin_listen` and `extra`, which must stop the start
/// (exit 2); its error output.
fn refused_start(admin_listen: &str, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            admin_listen,
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .args(extra)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn nonsense_limits_stop_the_start_with_a_reason() {
    let err = refused_start("127.0.0.1:0", &["--tenant-share", "2"]);
    assert!(err.contains("--tenant-share"), "{err}");
}

#[test]
fn an_open_admin_api_off_loopback_is_refused_at_start() {
    let err = refused_start("0.0.0.0:0", &[]);
    assert!(
        err.contains("--admin-token-file") && err.contains("--admin-insecure"),
        "{err}"
    );
}

#[test]
fn metrics_can_require_the_admin_token_while_probes_never_do() {
    let dir = tempfile::tempdir().unwrap();
    let token = "wharf-admin-test-token";
    let hash = format!("sha256:{}\n", wharf_auth::hash_secret(token));
    let file = dir.path().join("admin.sha256");
    std::fs::write(&file, hash).unwrap();
    let data = dir.path().join("data");
    let w = Wharf::start_with(
        &data,
        &[
            "--admin-token-file",
            file.to_str().unwrap(),
            "--metrics-require-token",
        ],
    );
    assert_eq!(get(&format!("{}/metrics", w.admin)).0, 401);
    assert_eq!(get(&format!("{}/healthz", w.admin)).0, 200);
    assert_eq!(get(&format!("{}/readyz", w.admin)).0, 200);
    let r = client()
        .get(format!("{}/metrics", w.admin))
        .bearer_auth(token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().unwrap().contains("wharf_ready"));
}

/// `wharf admin --url ADMIN ARGS…` with no token (the server asks for
/// none); its exit code, stdout and stderr.
fn wharf_admin(w: &Wharf, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["admin", "--url", &w.admin])
        .args(args)
        .env_remove("WHARF_ADMIN_TOKEN")
        .env_remove("WHARF_ADMIN_TOKEN_FILE")
        .env_remove("WHARF_ADMIN_URL")
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code(), text(out.stdout), text(out.stderr))
}

#[test]
fn an_immutable_tag_rule_set_with_the_cli_holds_until_the_operator_lifts_it() {
    let dir = tempfile::tempdir().unwrap();
    let w = Wharf::start(dir.path());
    let (code, _, err) = wharf_admin(
        &w,
        &["tenant", "create", "acme", "--immutable-tag", "v[0-9"],
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains("400 INVALID") && err.contains("v[0-9"),
        "{err}"
    );
    let (code, out, err) = wharf_admin(
        &w,
        &[
            "tenant",
            "create",
            "acme",
            "--immutable-tag",
            r"v[0-9]+@team/.*",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(r#""repository": "team/.*""#), "{out}");

    let repo = "acme/team/app";
    let put = |seed: u8| {
        let config = push_blob(&w, repo, data(100, seed));
        let layer = push_blob(&w, repo, data(200, seed));
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":100}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":200}}]}}"#
        );
        let r = client()
            .put(format!("{}/v2/{repo}/manifests/v1", w.base))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    assert_eq!(put(1).0, 201, "first push");
    let (status, body) = put(2);
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains(r#""code":"DENIED""#)
            && body.contains("`v[0-9]+`")
            && body.contains("`team/.*`"),
        "{body}"
    );

    let (code, out, err) = wharf_admin(&w, &["tenant", "set", "acme", "--clear-immutable-tags"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(r#""immutable_tags": []"#), "{out}");
    assert_eq!(put(2).0, 201, "moved once the operator lifted the rule");
}

/// `wharf admin --url ADMIN ARGS…` with `env` set (and nothing else of
/// the admin CLI's environment); its exit code, stdout and stderr.
fn wharf_admin_env(
    w: &Wharf,
    env: &[(&str, &str)],
    args: &[&str],
) -> (Option<i32>, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wharf"));
    c.args(["admin", "--url", &w.admin]).args(args);
    for v in [
        "WHARF_ADMIN_TOKEN",
        "WHARF_ADMIN_TOKEN_FILE",
        "WHARF_ADMIN_URL",
        "WHARF_ADMIN_USER",
        "WHARF_ADMIN_PASSWORD",
        "WHARF_ADMIN_PASSWORD_FILE",
    ] {
        c.env_remove(v);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code(), text(out.stdout), text(out.stderr))
}

/// Pushes a one-layer image of `seed` as `repo:tag`.
fn push_image(w: &Wharf, repo: &str, tag: &str, seed: u8) {
    let config = push_blob(w, repo, data(100, seed));
    let layer = push_blob(w, repo, data(5000, seed));
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":100}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":5000}}]}}"#
    );
    let r = client()
        .put(format!("{}/v2/{repo}/manifests/{tag}", w.base))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[test]
fn repositories_and_tenant_content_are_deleted_with_the_cli_by_operator_and_tenant_admin() {
    let dir = tempfile::tempdir().unwrap();
    let token = "wharf-admin-delete-token";
    let file = dir.path().join("admin.sha256");
    std::fs::write(
        &file,
        format!("sha256:{}\n", wharf_auth::hash_secret(token)),
    )
    .unwrap();
    let w = Wharf::start_with(
        &dir.path().join("data"),
        &["--admin-token-file", file.to_str().unwrap()],
    );
    let op = [("WHARF_ADMIN_TOKEN", token)];
    for t in ["acme", "beta"] {
        let (code, _, err) = wharf_admin_env(&w, &op, &["tenant", "create", t]);
        assert_eq!(code, Some(0), "{err}");
    }
    for (tenant, user) in [("acme", "alice"), ("beta", "eve")] {
        let (code, _, err) = wharf_admin_env(
            &w,
            &[
                ("WHARF_ADMIN_TOKEN", token),
                ("WHARF_PASSWORD", "password-of-it"),
            ],
            &["user", "set", tenant, user, "--role", "admin"],
        );
        assert_eq!(code, Some(0), "{err}");
    }
    push_image(&w, "acme/app", "v1", 1);
    push_image(&w, "acme/web", "v1", 2);
    push_image(&w, "beta/app", "v1", 3);
    let usage = |env: &[(&str, &str)]| -> serde_json::Value {
        let (code, out, err) = wharf_admin_env(&w, env, &["usage", "acme"]);
        assert_eq!(code, Some(0), "{err}");
        serde_json::from_str(&out).unwrap()
    };
    let before = usage(&op);
    assert_eq!(before["repositories"], 2, "{before}");

    // A tenant with repositories is not deleted without --force, and the
    // refusal says what to run.
    let (code, _, err) = wharf_admin_env(&w, &op, &["tenant", "delete", "acme"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("409 CONFLICT") && err.contains("wharf admin content delete acme"),
        "{err}"
    );

    // The tenant's admin, with its own password: its own repository, yes.
    let alice = [
        ("WHARF_ADMIN_USER", "alice"),
        ("WHARF_ADMIN_PASSWORD", "password-of-it"),
    ];
    let (code, out, err) = wharf_admin_env(&w, &alice, &["repo", "delete", "acme/app"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(r#""repositories": 1"#), "{out}");
    let after = usage(&alice);
    assert_eq!(after["repositories"], 1, "{after}");
    assert!(
        after["bytes"].as_u64() < before["bytes"].as_u64(),
        "{after}"
    );
    let r = client()
        .get(format!("{}/v2/acme/app/manifests/v1", w.base))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);

    // Another tenant's admin: refused; no credentials: refused.
    let eve = [
        ("WHARF_ADMIN_USER", "eve"),
        ("WHARF_ADMIN_PASSWORD", "password-of-it"),
    ];
    let (code, _, err) = wharf_admin_env(&w, &eve, &["content", "delete", "acme"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("403 DENIED"), "{err}");
    let (code, _, err) = wharf_admin_env(&w, &[], &["repo", "delete", "acme/web"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("401 UNAUTHORIZED"), "{err}");
    // A tenant account manages no tenant.
    let (code, _, err) = wharf_admin_env(&w, &alice, &["tenant", "delete", "acme", "--force"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("403 DENIED"), "{err}");

    // The operator empties the tenant; usage is zero at once; then the
    // tenant goes without --force, and the other tenant is untouched.
    let (code, out, err) = wharf_admin_env(&w, &op, &["content", "delete", "acme"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(r#""repositories": 1"#), "{out}");
    let empty = usage(&op);
    assert_eq!(
        (&empty["bytes"], &empty["repositories"]),
        (&serde_json::json!(0), &serde_json::json!(0)),
        "{empty}"
    );
    let (code, _, err) = wharf_admin_env(&w, &op, &["tenant", "delete", "acme"]);
    assert_eq!(code, Some(0), "{err}");
    let r = client()
        .get(format!("{}/v2/beta/app/manifests/v1", w.base))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Each in-memory cache is exported beside its bound, so that an operator
/// can tell memory taken by caches filling up from a leak: pulled manifests
/// show in `wharf_cache_entries` and `wharf_cache_bytes`, under the budget
/// the flag set.
#[test]
fn the_caches_are_exported_beside_their_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let w = Wharf::start_with(dir.path(), &["--manifest-cache-mib", "1"]);
    let metrics = || get(&format!("{}/metrics", w.admin)).1;
    let before = metrics();
    assert_eq!(
        sample(&before, r#"wharf_cache_budget_bytes{cache="manifests"}"#),
        Some(1048576.0)
    );
    for cache in ["links", "tags", "manifests_seen", "touched", "pulled"] {
        let max = sample(
            &before,
            &format!(r#"wharf_cache_max_entries{{cache="{cache}"}}"#),
        );
        assert!(max.is_some_and(|m| m >= 1.0), "{cache}: {max:?}");
    }
    let held = |text: &str| sample(text, r#"wharf_cache_entries{cache="manifests"}"#);
    let start = held(&before).expect("wharf_cache_entries for manifests");
    for (i, tag) in ["a", "b", "c"].into_iter().enumerate() {
        push_image(&w, "team/app", tag, i as u8 + 1);
        let r = client()
            .get(format!("{}/v2/team/app/manifests/{tag}", w.base))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let after = metrics();
    assert!(held(&after).unwrap() >= start + 3.0, "{after}");
    let bytes = sample(&after, r#"wharf_cache_bytes{cache="manifests"}"#).unwrap();
    assert!(bytes > 0.0 && bytes <= 1048576.0, "{bytes}");
    assert!(
        sample(&after, r#"wharf_cache_entries{cache="tags"}"#).unwrap() >= 3.0,
        "{after}"
    );
}
