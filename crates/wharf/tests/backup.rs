//! `wharf backup` and `wharf restore` on the real binary: a node with
//! token auth, several tenants, users and a robot, tags, an index and a
//! referrer is backed up while pushes and pulls go on, then restored into
//! a fresh node over an empty data directory; every image pulls there
//! byte-identical (digests compared), the accounts log in and a token
//! issued before the backup still works, usage is equal, and the content
//! pushed during the backup is there whole or not at all.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::Value;

mod common;
use common::{data, sha256, Wharf};

const ADMIN_TOKEN: &str = "wharf-backup-test-admin-token";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `wharf ARGS…` with the admin token in the environment; exit code,
/// stdout, stderr.
fn wharf(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wharf"));
    c.args(args)
        .env("WHARF_ADMIN_TOKEN", ADMIN_TOKEN)
        .env_remove("WHARF_ADMIN_TOKEN_FILE")
        .env_remove("WHARF_ADMIN_URL")
        .env_remove("WHARF_ADMIN_USER");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code(), text(out.stdout), text(out.stderr))
}

/// A node with token auth over `data`, sharing keys, operator accounts and
/// the admin token (as a restored node would be configured).
fn start(root: &std::path::Path, data: &str) -> Wharf {
    let keys = root.join("keys");
    let hash = root.join("admin.sha256");
    let htpasswd = root.join("htpasswd");
    Wharf::start_with(
        &root.join(data),
        &[
            "--auth",
            "token",
            "--htpasswd",
            htpasswd.to_str().unwrap(),
            "--token-keys",
            keys.to_str().unwrap(),
            "--token-signing-key",
            keys.to_str().unwrap(),
            "--admin-token-file",
            hash.to_str().unwrap(),
        ],
    )
}

/// A token for `user` with `scope` from `w`'s token endpoint, or the
/// status it was refused with.
fn token(w: &Wharf, user: &str, password: &str, scope: &str) -> Result<String, u16> {
    let r = client()
        .get(format!("{}/auth/token", w.base))
        .query(&[("service", "wharf"), ("scope", scope)])
        .basic_auth(user, Some(password))
        .send()
        .unwrap();
    if r.status() != 200 {
        return Err(r.status().as_u16());
    }
    let v: Value = r.json().unwrap();
    Ok(v["token"].as_str().unwrap().to_string())
}

/// The operator (an htpasswd account that may do everything), for `repo`.
fn op(w: &Wharf, repo: &str) -> String {
    token(
        w,
        "op",
        "op-password",
        &format!("repository:{repo}:pull,push"),
    )
    .unwrap()
}

fn push_blob(w: &Wharf, t: &str, repo: &str, bytes: &[u8]) -> String {
    let d = sha256(bytes);
    let r = client()
        .post(format!("{}/v2/{repo}/blobs/uploads/?digest={d}", w.base))
        .bearer_auth(t)
        .body(bytes.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{repo} {d}");
    d
}

fn put_manifest(
    w: &Wharf,
    t: &str,
    repo: &str,
    reference: &str,
    media: &str,
    body: &str,
) -> String {
    let r = client()
        .put(format!("{}/v2/{repo}/manifests/{reference}", w.base))
        .bearer_auth(t)
        .header("content-type", media)
        .body(body.to_string())
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        201,
        "{repo}:{reference}: {}",
        r.text().unwrap_or_default()
    );
    sha256(body.as_bytes())
}

/// An image of one config and one layer of `size` bytes; its manifest.
fn image(w: &Wharf, t: &str, repo: &str, seed: u8, size: usize, subject: Option<&str>) -> String {
    let config = format!("{{\"seed\":{seed}}}");
    let cd = push_blob(w, t, repo, config.as_bytes());
    let layer = data(size, seed);
    let ld = push_blob(w, t, repo, &layer);
    let subject = subject.map_or(String::new(), |s| {
        format!(r#","subject":{{"mediaType":"{MANIFEST}","digest":"{s}","size":1}},"artifactType":"application/vnd.example.sbom""#)
    });
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{ld}","size":{size}}}]{subject}}}"#,
        config.len()
    )
}

/// What a pull of `repo:reference` returns: status, body, the blobs'
/// digests recomputed from what was served.
fn pull(w: &Wharf, t: &str, repo: &str, reference: &str) -> (u16, String, Vec<String>) {
    let c = client();
    let r = c
        .get(format!("{}/v2/{repo}/manifests/{reference}", w.base))
        .bearer_auth(t)
        .header("accept", format!("{MANIFEST}, {INDEX}"))
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().unwrap();
    if status != 200 {
        return (status, body, vec![]);
    }
    let m: Value = serde_json::from_str(&body).unwrap();
    let mut blobs = Vec::new();
    let descriptors = m["config"]
        .as_object()
        .map(|_| m["config"].clone())
        .into_iter()
        .chain(m["layers"].as_array().cloned().unwrap_or_default());
    for d in descriptors {
        let digest = d["digest"].as_str().unwrap();
        let r = c
            .get(format!("{}/v2/{repo}/blobs/{digest}", w.base))
            .bearer_auth(t)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{repo} blob {digest}");
        let got = sha256(&r.bytes().unwrap());
        assert_eq!(got, digest, "{repo} blob served with other bytes");
        blobs.push(got);
    }
    (status, body, blobs)
}

fn usage(w: &Wharf, tenant: &str) -> Value {
    let r = client()
        .get(format!("{}/admin/v1/tenants/{tenant}/usage", w.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut v: Value = r.json().unwrap();
    v.as_object_mut().unwrap().remove("quota");
    v
}

#[test]
fn a_backup_taken_under_load_restores_into_a_fresh_node_byte_for_byte() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (code, _, err) = wharf(&["keygen", root.join("keys").to_str().unwrap()], &[]);
    assert_eq!(code, Some(0), "{err}");
    std::fs::write(
        root.join("htpasswd"),
        format!("op:{}\n", bcrypt::hash("op-password", 4).unwrap()),
    )
    .unwrap();
    std::fs::write(
        root.join("admin.sha256"),
        format!("sha256:{}\n", wharf_auth::hash_secret(ADMIN_TOKEN)),
    )
    .unwrap();
    let a = start(root, "a");
    let admin_a = ["admin", "--url", a.admin.as_str()];
    let run_admin = |args: &[&str], env: &[(&str, &str)]| {
        let all: Vec<&str> = admin_a.iter().chain(args).copied().collect();
        let (code, out, err) = wharf(&all, env);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        out
    };
    for t in ["acme", "beta", "gamma"] {
        run_admin(&["tenant", "create", t], &[]);
    }
    run_admin(
        &["user", "set", "acme", "alice", "--role", "admin"],
        &[("WHARF_PASSWORD", "alice-password")],
    );
    run_admin(
        &["user", "set", "beta", "bob", "--role", "push"],
        &[("WHARF_PASSWORD", "bob-password")],
    );
    let secret = run_admin(
        &[
            "robot",
            "create",
            "acme",
            "ci",
            "--grant",
            "acme/app:pull,push",
            "--secret-only",
        ],
        &[],
    )
    .trim()
    .to_string();

    // Content: tags, an index of two images, a referrer, three tenants.
    let t = op(&a, "acme/app");
    let v1 = image(&a, &t, "acme/app", 1, 300_000, None);
    let v1d = put_manifest(&a, &t, "acme/app", "v1", MANIFEST, &v1);
    let v2 = image(&a, &t, "acme/app", 2, 200_000, None);
    let v2d = put_manifest(&a, &t, "acme/app", "v2", MANIFEST, &v2);
    let arm = image(&a, &t, "acme/app", 3, 100_000, None);
    let armd = put_manifest(&a, &t, "acme/app", &sha256(arm.as_bytes()), MANIFEST, &arm);
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{INDEX}","manifests":[{{"mediaType":"{MANIFEST}","digest":"{v1d}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"{MANIFEST}","digest":"{armd}","size":{},"platform":{{"architecture":"arm64","os":"linux"}}}}]}}"#,
        v1.len(),
        arm.len()
    );
    let indexd = put_manifest(&a, &t, "acme/app", "multi", INDEX, &index);
    let sbom = image(&a, &t, "acme/app", 4, 1000, Some(&v1d));
    let sbomd = put_manifest(
        &a,
        &t,
        "acme/app",
        &sha256(sbom.as_bytes()),
        MANIFEST,
        &sbom,
    );
    let tb = op(&a, "beta/tool");
    let tool = image(&a, &tb, "beta/tool", 5, 150_000, None);
    put_manifest(&a, &tb, "beta/tool", "latest", MANIFEST, &tool);
    let tg = op(&a, "gamma/busy");
    let base = image(&a, &tg, "gamma/busy", 6, 50_000, None);
    put_manifest(&a, &tg, "gamma/busy", "base", MANIFEST, &base);
    // A token issued before the backup, to use on the restored node.
    let alice_before = token(&a, "alice", "alice-password", "repository:acme/app:pull").unwrap();

    let expected: Vec<(&str, &str, String)> = vec![
        ("acme/app", "v1", v1.clone()),
        ("acme/app", "v2", v2.clone()),
        ("acme/app", "multi", index.clone()),
        ("acme/app", armd.as_str(), arm.clone()),
        ("acme/app", sbomd.as_str(), sbom.clone()),
        ("beta/tool", "latest", tool.clone()),
        ("gamma/busy", "base", base.clone()),
    ];

    // Pushes to gamma and pulls of acme go on while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let pushed: Arc<Mutex<Vec<(String, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let pulls_failed = Arc::new(Mutex::new(Vec::new()));
    let load = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(60);
            for i in 0..200u32 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                let tag = format!("t{i}");
                let m = image(
                    &a,
                    &tg,
                    "gamma/busy",
                    10 + (i % 200) as u8,
                    20_000 + i as usize,
                    None,
                );
                put_manifest(&a, &tg, "gamma/busy", &tag, MANIFEST, &m);
                pushed.lock().unwrap().push((tag, m));
            }
        });
        let reader = s.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && n < 2000 {
                let (status, body, _) = pull(&a, &t, "acme/app", "v1");
                if status != 200 || body != v1 {
                    pulls_failed.lock().unwrap().push(status);
                }
                n += 1;
            }
            n
        });
        // Let the load start, then back up under it.
        std::thread::sleep(Duration::from_millis(300));
        let to = root.join("backup");
        let out = wharf(
            &["backup", "--url", &a.admin, "--to", to.to_str().unwrap()],
            &[],
        );
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        let pulls = reader.join().unwrap();
        (out, pulls)
    });
    let ((code, out, err), pulls) = load;
    assert_eq!(code, Some(0), "backup: {err}");
    assert!(pulls > 0);
    assert!(
        pulls_failed.lock().unwrap().is_empty(),
        "pulls failed during the backup"
    );
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["tenants"].as_array().unwrap().len(), 3, "{summary}");
    assert_eq!(summary["blobs_gone"], 0, "{summary}");
    let pushed = pushed.lock().unwrap().clone();
    assert!(!pushed.is_empty(), "no push ran during the backup");

    // A backup directory is never written twice.
    let (code, _, err) = wharf(
        &[
            "backup",
            "--url",
            &a.admin,
            "--to",
            root.join("backup").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("not empty"), "{err}");

    let acme_usage = usage(&a, "acme");
    let beta_usage = usage(&a, "beta");
    drop(a);

    // Restore into a fresh node.
    let b = start(root, "b");
    let from = root.join("backup");
    let (code, out, err) = wharf(
        &[
            "restore",
            "--url",
            &b.admin,
            "--from",
            from.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "restore: {err}");
    let restored: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(restored["blobs"], summary["blobs"], "{restored}");
    // Into a node that holds tenants: refused unless told.
    let (code, _, err) = wharf(
        &[
            "restore",
            "--url",
            &b.admin,
            "--from",
            from.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("--force"), "{err}");

    // Every image pulls byte-identical, by tag and by digest.
    let tok = |repo: &str| op(&b, repo);
    for (repo, reference, body) in &expected {
        let t = tok(repo);
        let (status, got, blobs) = pull(&b, &t, repo, reference);
        assert_eq!(status, 200, "{repo}:{reference}");
        assert_eq!(&got, body, "{repo}:{reference} differs");
        let (status, by_digest, _) = pull(&b, &t, repo, &sha256(body.as_bytes()));
        assert_eq!((status, &by_digest), (200, body), "{repo}@digest");
        // `pull` checked each blob's bytes against its digest: an image's
        // config and layer, none for the index.
        let want = if body.contains("\"layers\"") { 2 } else { 0 };
        assert_eq!(blobs.len(), want, "{repo}:{reference}");
    }
    let r = client()
        .get(format!("{}/v2/acme/app/referrers/{v1d}", b.base))
        .bearer_auth(tok("acme/app"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let refs: Value = r.json().unwrap();
    let listed: Vec<&str> = refs["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![sbomd.as_str()], "{refs}");
    let (status, _, _) = pull(&b, &tok("acme/app"), "acme/app", &indexd);
    assert_eq!(status, 200);
    assert_eq!(pull(&b, &tok("acme/app"), "acme/app", &v2d).0, 200);

    // What was pushed during the backup is there whole, or not at all:
    // every tag the restored node has pulls, and equals what was pushed.
    let tg_b = tok("gamma/busy");
    let mut restored_tags = 0;
    for (tag, body) in &pushed {
        let (status, got, _) = pull(&b, &tg_b, "gamma/busy", tag);
        match status {
            200 => {
                assert_eq!(&got, body, "gamma/busy:{tag}");
                restored_tags += 1;
            }
            404 => {}
            other => panic!("gamma/busy:{tag}: {other}"),
        }
    }
    eprintln!(
        "pushed during the backup: {}, in it: {restored_tags}; pulls during it: {pulls}",
        pushed.len()
    );

    // The quiet tenants' usage is the same.
    assert_eq!(usage(&b, "acme"), acme_usage);
    assert_eq!(usage(&b, "beta"), beta_usage);

    // Accounts: passwords and the robot's secret log in; a wrong password
    // does not; a token issued by the old node before the backup works.
    let alice = token(&b, "alice", "alice-password", "repository:acme/app:pull").unwrap();
    assert_eq!(pull(&b, &alice, "acme/app", "v1").0, 200);
    let ci = token(&b, "acme+ci", &secret, "repository:acme/app:pull,push").unwrap();
    assert_eq!(pull(&b, &ci, "acme/app", "v2").0, 200);
    assert_eq!(
        token(&b, "bob", "wrong-password", "repository:beta/tool:pull"),
        Err(401)
    );
    let bob = token(&b, "bob", "bob-password", "repository:beta/tool:pull").unwrap();
    assert_eq!(pull(&b, &bob, "beta/tool", "latest").0, 200);
    assert_eq!(pull(&b, &alice_before, "acme/app", "v1").0, 200);
}

/// The flags pointing a node at the test S3 store under `prefix`, and at
/// a fresh database `db` of the test PostgreSQL; `None` (skip) without
/// them, unless `CI` or `WHARF_REQUIRE_POSTGRES`/`WHARF_REQUIRE_S3` says
/// they must be there.
fn shared_backends(admin_url: &str, db: &str, prefix: &str) -> Vec<String> {
    let var = |n: &str| std::env::var(format!("WHARF_TEST_S3_{n}")).unwrap();
    let sep = if admin_url.contains('?') { '&' } else { '?' };
    vec![
        // A fresh database: its schema is made at the node's start.
        "--migrate".into(),
        "--metadata-url".into(),
        format!("{admin_url}{sep}dbname={db}"),
        "--s3-endpoint".into(),
        var("ENDPOINT"),
        "--s3-bucket".into(),
        var("BUCKET"),
        "--s3-region".into(),
        std::env::var("WHARF_TEST_S3_REGION").unwrap_or_else(|_| "garage".into()),
        "--s3-access-key-id".into(),
        var("ACCESS_KEY_ID"),
        "--s3-secret-access-key".into(),
        var("SECRET_ACCESS_KEY"),
        "--s3-prefix".into(),
        prefix.into(),
    ]
}

/// Runs `sql` on the test PostgreSQL.
fn psql(admin_url: &str, sql: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, conn) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let running = tokio::spawn(conn);
        client.batch_execute(sql).await.unwrap();
        drop(client);
        let _ = running.await;
    });
}

#[test]
fn backup_and_restore_through_postgresql_and_garage() {
    let pg = std::env::var("WHARF_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let s3 = std::env::var("WHARF_TEST_S3_ENDPOINT").ok();
    let (Some(pg), Some(_)) = (pg, s3) else {
        let required = std::env::var_os("CI").is_some()
            || std::env::var_os("WHARF_REQUIRE_POSTGRES").is_some()
            || std::env::var_os("WHARF_REQUIRE_S3").is_some();
        assert!(
            !required,
            "PostgreSQL and S3 are required here (scripts/test.sh starts them)"
        );
        eprintln!("skipped: set WHARF_TEST_POSTGRES_URL and WHARF_TEST_S3_* to run");
        return;
    };
    let unique = std::process::id();
    let (db_a, db_b) = (format!("backup_a_{unique}"), format!("backup_b_{unique}"));
    for db in [&db_a, &db_b] {
        psql(&pg, &format!("CREATE DATABASE {db}"));
    }
    let root = tempfile::tempdir().unwrap();
    let flags = |db: &str, prefix: &str| shared_backends(&pg, db, &format!("{prefix}-{unique}"));
    let fa = flags(&db_a, "backup-a");
    let a = Wharf::start_with(
        &root.path().join("a"),
        &fa.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let run = |w: &Wharf, args: &[&str]| {
        let all: Vec<&str> = ["admin", "--url", w.admin.as_str()]
            .iter()
            .chain(args)
            .copied()
            .collect();
        let (code, out, err) = wharf(&all, &[("WHARF_ADMIN_TOKEN", "")]);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        out
    };
    run(&a, &["tenant", "create", "acme", "--quota-bytes", "1GiB"]);
    run(&a, &["tenant", "create", "beta"]);
    // No auth on this loopback node: an empty bearer is never checked.
    let t = "";
    let mut expected = Vec::new();
    for (repo, tag, seed) in [
        ("acme/app", "v1", 1u8),
        ("acme/app", "v2", 2),
        ("beta/db", "15", 3),
    ] {
        let m = image(&a, t, repo, seed, 400_000, None);
        put_manifest(&a, t, repo, tag, MANIFEST, &m);
        expected.push((repo, tag, m));
    }
    let backup = root.path().join("backup");
    let (code, out, err) = wharf(
        &[
            "backup",
            "--url",
            &a.admin,
            "--to",
            backup.to_str().unwrap(),
        ],
        &[("WHARF_ADMIN_TOKEN", "")],
    );
    assert_eq!(code, Some(0), "backup: {err}");
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["kept"]["manifests"], 3, "{summary}");
    let usage_a: Vec<Value> = ["acme", "beta"].iter().map(|t| usage_open(&a, t)).collect();
    drop(a);

    let fb = flags(&db_b, "backup-b");
    let b = Wharf::start_with(
        &root.path().join("b"),
        &fb.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let (code, _, err) = wharf(
        &[
            "restore",
            "--url",
            &b.admin,
            "--from",
            backup.to_str().unwrap(),
        ],
        &[("WHARF_ADMIN_TOKEN", "")],
    );
    assert_eq!(code, Some(0), "restore: {err}");
    for (repo, tag, body) in &expected {
        let (status, got, blobs) = pull(&b, t, repo, tag);
        assert_eq!((status, &got), (200, body), "{repo}:{tag}");
        assert_eq!(blobs.len(), 2);
    }
    let usage_b: Vec<Value> = ["acme", "beta"].iter().map(|t| usage_open(&b, t)).collect();
    assert_eq!(usage_a, usage_b);
    let shown = run(&b, &["tenant", "show", "acme"]);
    assert!(shown.contains("1073741824"), "the quota came back: {shown}");
    drop(b);
    for db in [&db_a, &db_b] {
        psql(&pg, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    }
}

/// A tenant's usage from a node without an admin token.
fn usage_open(w: &Wharf, tenant: &str) -> Value {
    let r = client()
        .get(format!("{}/admin/v1/tenants/{tenant}/usage", w.admin))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut v: Value = r.json().unwrap();
    v.as_object_mut().unwrap().remove("quota");
    v
}
