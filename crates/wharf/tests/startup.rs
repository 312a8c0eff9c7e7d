//! The start of a node and `wharf check`, on the real binary: one
//! validation path for both (every bad file, a bad S3 key or bucket, a bad
//! PostgreSQL password or database stop a start and fail a check, each
//! named with its address and cause, and a check changes nothing), explicit
//! migrations (`wharf migrate`, `serve --migrate`, a schema behind or ahead
//! refused), a dependency that does not answer yet keeping a node up but
//! not ready until it does, and the configuration printed under its key
//! names.
//!
//! The PostgreSQL cases need `WHARF_TEST_POSTGRES_URL`, the S3 cases
//! Garage's `WHARF_TEST_S3_*`; each skips without them unless `CI`,
//! `WHARF_REQUIRE_POSTGRES=1` or `WHARF_REQUIRE_S3=1` says it must run.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PG_VAR: &str = "WHARF_TEST_POSTGRES_URL";

fn required(var: &str) -> bool {
    std::env::var_os("CI").is_some() || std::env::var(var).is_ok_and(|v| v == "1")
}

fn postgres() -> Option<String> {
    if let Some(u) = std::env::var(PG_VAR).ok().filter(|u| !u.is_empty()) {
        return Some(u);
    }
    assert!(
        !required("WHARF_REQUIRE_POSTGRES"),
        "{PG_VAR} is not set, but PostgreSQL is required"
    );
    eprintln!("skipped: set {PG_VAR}");
    None
}

/// Garage's endpoint, bucket, region, key id and secret.
struct S3 {
    endpoint: String,
    bucket: String,
    region: String,
    key_id: String,
    secret: String,
}

fn s3() -> Option<S3> {
    let var = |n: &str| std::env::var(format!("WHARF_TEST_S3_{n}")).ok();
    let Some(endpoint) = var("ENDPOINT") else {
        assert!(
            !required("WHARF_REQUIRE_S3"),
            "an S3 store is required here: run scripts/garage.sh"
        );
        eprintln!("skipped: set WHARF_TEST_S3_* (scripts/garage.sh start DIR PORT)");
        return None;
    };
    Some(S3 {
        endpoint,
        bucket: var("BUCKET").expect("WHARF_TEST_S3_BUCKET"),
        region: var("REGION").unwrap_or_else(|| "garage".into()),
        key_id: var("ACCESS_KEY_ID").expect("WHARF_TEST_S3_ACCESS_KEY_ID"),
        secret: var("SECRET_ACCESS_KEY").expect("WHARF_TEST_S3_SECRET_ACCESS_KEY"),
    })
}

impl S3 {
    /// The flags for this store, with the secret through the environment
    /// as an operator would give it.
    fn args(&self, bucket: &str, key_id: &str) -> Vec<String> {
        [
            "--s3-endpoint",
            &self.endpoint,
            "--s3-bucket",
            bucket,
            "--s3-region",
            &self.region,
            "--s3-access-key-id",
            key_id,
            "--s3-prefix",
            &format!("startup-{}", std::process::id()),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Runs `sql` on `url`; the first column of each row, as text.
fn sql(url: &str, stmt: &str) -> Vec<String> {
    block(async {
        let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
        tokio::spawn(conn);
        c.simple_query(stmt)
            .await
            .unwrap_or_else(|e| panic!("{stmt}: {e}"))
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some(r.get(0).unwrap_or_default().to_string())
                }
                _ => None,
            })
            .collect()
    })
}

/// A database of its own, dropped at the end.
struct Db {
    admin: String,
    name: String,
}

impl Db {
    fn create(admin: &str, tag: &str) -> Db {
        let name = format!("startup_{tag}_{}", std::process::id());
        sql(admin, &format!("DROP DATABASE IF EXISTS \"{name}\""));
        sql(admin, &format!("CREATE DATABASE \"{name}\""));
        Db {
            admin: admin.into(),
            name,
        }
    }

    fn url(&self) -> String {
        with_db(&self.admin, &self.name)
    }

    /// Whether Wharf's schema exists in this database.
    fn has_schema(&self) -> bool {
        sql(
            &self.url(),
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'wharf'",
        ) == ["1"]
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let (a, n) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            block(async {
                if let Ok((c, conn)) = tokio_postgres::connect(&a, tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    let _ = c
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{n}\" WITH (FORCE)"))
                        .await;
                }
            })
        })
        .join();
    }
}

fn with_db(url: &str, db: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}dbname={db}")
}

/// `host:port` of a `postgres://user@host:port/db` URL.
fn host_port(url: &str) -> String {
    let rest = url.split_once('@').expect("a user in the URL").1;
    rest.split(['/', '?']).next().unwrap().to_string()
}

/// `wharf ARGS` with `env`, run to its end.
fn wharf(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
    cmd.args(args)
        .env_remove("WHARF_ADMIN_TOKEN_FILE")
        .env_remove("WHARF_ADMIN_TOKEN_HASH_FILE")
        .env_remove("WHARF_S3_SECRET_ACCESS_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `wharf serve` over `data` with `extra`: it must refuse to start, within
/// a bound; all it printed.
fn serve_refused(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> String {
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
    cmd.args(&args)
        .env_remove("WHARF_S3_SECRET_ACCESS_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("wharf serve did not stop: {}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    text(&out)
}

/// A running `wharf serve`, its stderr in `dir/log`, killed when dropped.
struct Node {
    child: Child,
    admin: String,
    log: std::path::PathBuf,
}

impl Node {
    fn start(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Node {
        let log = dir.join("log");
        let (addr, admin) = (dir.join("addr"), dir.join("admin-addr"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
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
        .env_remove("WHARF_S3_SECRET_ACCESS_KEY")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let (Ok(_), Ok(a)) = (
                std::fs::read_to_string(&addr),
                std::fs::read_to_string(&admin),
            ) {
                return Node {
                    child,
                    admin: format!("http://{a}"),
                    log,
                };
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "wharf exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "wharf did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `/readyz`: status and body.
    fn ready(&self) -> (u16, String) {
        let r = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
            .get(format!("{}/readyz", self.admin))
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until `/readyz` answers `code`.
    fn wait_ready(&self, code: u16, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let (got, body) = self.ready();
            if got == code {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "readyz stayed {got} ({body}); log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn check_lists_every_bad_file_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("not-yet");
    let data_arg = data.to_str().unwrap();
    // Two missing files: both named, not only the first.
    let out = wharf(
        &[
            "check",
            "--data-dir",
            data_arg,
            "--auth",
            "token",
            "--htpasswd",
            "/nonexistent/users.htpasswd",
            "--token-signing-key",
            "/nonexistent/signing.pem",
        ],
        &[],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("PROBLEM: --htpasswd") && t.contains("users.htpasswd"),
        "{t}"
    );
    assert!(
        t.contains("PROBLEM: --token-signing-key /nonexistent/signing.pem"),
        "{t}"
    );
    assert!(!data.exists(), "a check created {}", data.display());
    // `serve` refuses the same configuration, for the same reasons.
    let t = serve_refused(
        &data,
        &[
            "--auth",
            "token",
            "--htpasswd",
            "/nonexistent/users.htpasswd",
            "--token-signing-key",
            "/nonexistent/signing.pem",
        ],
        &[],
    );
    assert!(t.contains("2 problems") && t.contains("signing.pem"), "{t}");
    assert!(!data.exists(), "a refused start created {}", data.display());

    // An admin token file holding the plain token, not its hash.
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "wharf_admin_0123456789abcdef\n").unwrap();
    let mut args = vec!["check", "--data-dir", data_arg, "--admin-token-file"];
    args.push(token.to_str().unwrap());
    let out = wharf(&args, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("--admin-token-file") && t.contains("admin.token"),
        "{t}"
    );

    // A good configuration passes, prints its keys as the file spells them
    // and where each value came from, and still creates nothing.
    let out = wharf(&["check", "--data-dir", data_arg, "--pull-limit", "9"], &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(!data.exists(), "a check created {}", data.display());
    let line = |key: &str| {
        t.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} line in:\n{t}"))
            .to_string()
    };
    assert!(
        line("pull_limit").contains("= 9") && line("pull_limit").contains("# flag or environment")
    );
    assert!(
        line("push_limit").contains("# derived from this machine:"),
        "{t}"
    );
    assert!(line("listen").contains("\"127.0.0.1:5000\"") && line("listen").contains("# default"));
    assert!(
        t.contains("a start creates it, with a new, empty embedded metadata store"),
        "{t}"
    );
    assert!(!t.contains("Limits {"), "a Debug structure: {t}");
    let out = wharf(&["check", "--data-dir", data_arg, "--json"], &[]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys: Vec<&str> = v["config"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&"metadata_pool") && keys.contains(&"migrate"),
        "{keys:?}"
    );
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
}

#[test]
fn the_embedded_default_starts_on_a_fresh_directory_and_logs_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--log", "info"], &[]);
    node.wait_ready(200, Duration::from_secs(10));
    assert!(dir.path().join("data/meta.redb").exists());
    let log = node.log();
    assert!(log.contains("configuration: pull_limit = "), "{log}");
    assert!(log.contains("derived from this machine"), "{log}");
    assert!(!log.contains("limits in force"), "{log}");
    let out = wharf(
        &[
            "migrate",
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("no schema migrations"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_bad_s3_key_or_a_missing_bucket_stops_the_start_with_the_cause() {
    let Some(s3) = s3() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let name = format!(
        "blob storage (S3 {}, bucket ",
        s3.endpoint.trim_end_matches('/')
    );
    let cases: [(&str, Vec<String>, &str, &[&str]); 3] = [
        (
            "a wrong secret",
            s3.args(&s3.bucket, &s3.key_id),
            "not-the-secret-0000",
            &[
                "SignatureDoesNotMatch",
                "Forbidden",
                "AccessDenied",
                "access denied",
            ],
        ),
        (
            "an unknown key id",
            s3.args(&s3.bucket, "GK0000000000000000deadbeef"),
            &s3.secret,
            &[
                "InvalidAccessKeyId",
                "Forbidden",
                "AccessDenied",
                "access denied",
            ],
        ),
        (
            "a missing bucket",
            s3.args("no-such-bucket-wharf", &s3.key_id),
            &s3.secret,
            &["does not exist"],
        ),
    ];
    for (case, args, secret, causes) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env = [("WHARF_S3_SECRET_ACCESS_KEY", secret)];
        let t = serve_refused(&data, &args, &env);
        assert!(t.contains(&name), "{case}: {t}");
        assert!(t.contains("refusing to start"), "{case}: {t}");
        assert!(causes.iter().any(|c| t.contains(c)), "{case}: {t}");
        assert!(!t.contains(secret), "{case}: the secret is printed: {t}");
        let mut check = vec!["check", "--data-dir", data.to_str().unwrap()];
        check.extend_from_slice(&args);
        let out = wharf(&check, &env);
        let c = text(&out);
        assert_eq!(out.status.code(), Some(1), "{case}: {c}");
        assert!(c.contains("PROBLEM: ") && c.contains(&name), "{case}: {c}");
        assert!(!c.contains(secret), "{case}: the secret is printed: {c}");
    }
    // The right key and bucket pass, and the check wrote nothing.
    let args = s3.args(&s3.bucket, &s3.key_id);
    let mut check: Vec<&str> = vec!["check", "--data-dir", data.to_str().unwrap()];
    check.extend(args.iter().map(String::as_str));
    let out = wharf(&check, &[("WHARF_S3_SECRET_ACCESS_KEY", &s3.secret)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("answered"), "{}", text(&out));
}

#[test]
fn an_unreachable_s3_store_keeps_the_node_up_and_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on the discard port.
    let node = Node::start(
        dir.path(),
        &[
            "--s3-endpoint",
            "http://127.0.0.1:9",
            "--s3-bucket",
            "b",
            "--s3-access-key-id",
            "k",
        ],
        &[("WHARF_S3_SECRET_ACCESS_KEY", "s")],
    );
    let body = node.wait_ready(503, Duration::from_secs(5));
    assert!(body.contains("waiting for blob_storage"), "{body}");
    let log = node.log();
    assert!(
        log.contains("WARN")
            && log.contains("did not answer at start")
            && log.contains("127.0.0.1:9"),
        "{log}"
    );
    // Still up, still not ready, and not logging it every second.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(node.ready().0, 503);
    let log = node.log();
    assert_eq!(log.matches("did not answer at start").count(), 1, "{log}");
    assert_eq!(log.matches("still does not answer").count(), 0, "{log}");
}

#[test]
fn a_bad_postgres_password_or_database_stops_the_start_with_the_cause() {
    let Some(admin) = postgres() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hp = host_port(&admin);

    // A database that does not exist.
    let missing = format!("postgres://wharf@{hp}/no_such_db_wharf");
    let t = serve_refused(&data, &["--metadata-url", &missing], &[]);
    assert!(
        t.contains(&format!(
            "metadata (PostgreSQL wharf@{hp}/no_such_db_wharf)"
        )) && t.contains("does not exist")
            && t.contains("createdb"),
        "{t}"
    );
    let out = wharf(
        &[
            "check",
            "--data-dir",
            data.to_str().unwrap(),
            "--metadata-url",
            &missing,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("PROBLEM: metadata (PostgreSQL"),
        "{}",
        text(&out)
    );

    // A wrong password (the test cluster asks this role for one: see
    // scripts/postgres.sh).
    let rules = sql(
        &admin,
        "SELECT count(*) FROM pg_hba_file_rules \
         WHERE 'wharf_password_check' = ANY(user_name) AND auth_method = 'scram-sha-256'",
    );
    if rules != ["1"] {
        assert!(
            !required("WHARF_REQUIRE_POSTGRES"),
            "the test PostgreSQL does not ask wharf_password_check for a password: start it \
             afresh with scripts/postgres.sh"
        );
        eprintln!("skipped the password case: the server trusts every role");
    } else {
        sql(
            &admin,
            "DO $$ BEGIN \
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'wharf_password_check') THEN \
                 CREATE ROLE wharf_password_check LOGIN PASSWORD 'the-right-one'; \
               END IF; END $$",
        );
        let wrong = format!("postgres://wharf_password_check:hunter2-wrong@{hp}/wharf");
        let t = serve_refused(&data, &["--metadata-url", &wrong], &[]);
        assert!(
            t.contains(&format!(
                "metadata (PostgreSQL wharf_password_check@{hp}/wharf)"
            )) && t.contains("authentication failed")
                && t.contains("password"),
            "{t}"
        );
        assert!(!t.contains("hunter2-wrong"), "the password is printed: {t}");
        let out = wharf(
            &[
                "check",
                "--data-dir",
                data.to_str().unwrap(),
                "--metadata-url",
                &wrong,
            ],
            &[],
        );
        let c = text(&out);
        assert_eq!(out.status.code(), Some(1), "{c}");
        assert!(
            c.contains("authentication failed") && !c.contains("hunter2-wrong"),
            "{c}"
        );
    }
    assert!(!data.exists(), "nothing may create {}", data.display());
}

#[test]
fn migrations_are_explicit_and_a_check_applies_none() {
    let Some(admin) = postgres() else { return };
    let db = Db::create(&admin, "migrate");
    let url = db.url();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();

    // A check of an empty database says what to do, and leaves it empty.
    let out = wharf(
        &["check", "--data-dir", data_arg, "--metadata-url", &url],
        &[],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("holds no Wharf schema yet") && t.contains("wharf migrate"),
        "{t}"
    );
    assert!(!db.has_schema(), "wharf check created the schema");
    // So is a check that says `--migrate`: it would, it does not.
    let out = wharf(
        &[
            "check",
            "--data-dir",
            data_arg,
            "--metadata-url",
            &url,
            "--migrate",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("would apply migrations 1..="),
        "{}",
        text(&out)
    );
    assert!(!db.has_schema(), "wharf check --migrate created the schema");

    // `serve` on the empty database is refused, with the way out.
    let t = serve_refused(&data, &["--metadata-url", &url], &[]);
    assert!(
        t.contains("run `wharf migrate`") && t.contains("--migrate"),
        "{t}"
    );
    assert!(!db.has_schema());

    // `wharf migrate` applies them and says which; once more, none.
    let out = wharf(&["migrate", "--metadata-url", &url], &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("applied migration 1") && t.contains("schema now at version"),
        "{t}"
    );
    let out = wharf(&["migrate", "--metadata-url", &url], &[]);
    assert!(text(&out).contains("nothing to apply"), "{}", text(&out));

    // Then a node starts, turns ready, and logs no schema NOTICE.
    let node = Node::start(dir.path(), &["--metadata-url", &url, "--log", "info"], &[]);
    node.wait_ready(200, Duration::from_secs(20));
    let log = node.log();
    assert!(!log.contains("NOTICE"), "{log}");
    assert!(log.contains("as this build expects"), "{log}");
    drop(node);

    // A schema a newer wharf migrated is refused, by serve and migrate.
    sql(
        &url,
        "INSERT INTO wharf.schema_version (version) VALUES (9999)",
    );
    let t = serve_refused(&data, &["--metadata-url", &url, "--migrate"], &[]);
    assert!(t.contains("9999") && t.contains("newer"), "{t}");
    let out = wharf(&["migrate", "--metadata-url", &url], &[]);
    assert!(
        !out.status.success() && text(&out).contains("newer"),
        "{}",
        text(&out)
    );

    // And `serve --migrate` brings an empty database up by itself.
    let fresh = Db::create(&admin, "serve_migrate");
    let dir2 = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir2.path(),
        &["--metadata-url", &fresh.url(), "--migrate"],
        &[],
    );
    node.wait_ready(200, Duration::from_secs(20));
    assert!(fresh.has_schema());
}

/// Forwards every connection accepted on `listener` to `upstream`, in
/// threads of its own, until the process ends.
fn forward(listener: TcpListener, upstream: String) {
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let pipe = |mut from: TcpStream, mut to: TcpStream| {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            };
            pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
            pipe(server, client);
        }
    });
}

#[test]
fn an_unreachable_database_keeps_the_node_not_ready_until_it_answers() {
    let Some(admin) = postgres() else { return };
    let db = Db::create(&admin, "late");
    let out = wharf(&["migrate", "--metadata-url", &db.url()], &[]);
    assert!(out.status.success(), "{}", text(&out));
    // A port nobody listens on yet: the node's database address.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let late = with_db(
        &format!("postgres://wharf@127.0.0.1:{port}/wharf"),
        &db.name,
    );
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--metadata-url", &late], &[]);
    let body = node.wait_ready(503, Duration::from_secs(5));
    assert!(body.contains("waiting for metadata"), "{body}");
    let log = node.log();
    assert!(
        log.contains("WARN")
            && log.contains(&format!("metadata (PostgreSQL wharf@127.0.0.1:{port}/"))
            && log.contains("did not answer at start"),
        "{log}"
    );
    // The database appears at that address: the node turns ready, and says so.
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    forward(listener, host_port(&admin));
    node.wait_ready(200, Duration::from_secs(15));
    assert!(
        node.log().contains("answered: no longer waiting for it"),
        "{}",
        node.log()
    );
}
