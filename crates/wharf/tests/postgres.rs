//! The real binary over a real PostgreSQL: the connection budget checked at
//! start, and static stability (design invariant 3) when the database stops
//! and comes back, asserted request by request.
//!
//! Each test runs its own throwaway cluster through `scripts/postgres.sh`
//! (it is stopped and started here, so it cannot be the suite-wide one).
//! Without PostgreSQL's binaries the tests skip, unless `CI` or
//! `WHARF_REQUIRE_POSTGRES` says they must run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::json;

mod common;
use common::{data, sha256, Wharf};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres.sh")
}

/// A PostgreSQL cluster of this test's own, stopped when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
    url: String,
}

impl Cluster {
    /// `None` (skip) when PostgreSQL is not installed and nothing requires it.
    fn start(port: u16) -> Option<Cluster> {
        if !Path::new("/usr/lib/postgresql").exists() {
            let required = std::env::var_os("CI").is_some()
                || std::env::var_os("WHARF_REQUIRE_POSTGRES").is_some();
            assert!(
                !required,
                "PostgreSQL is required here: run scripts/install-deps.sh"
            );
            eprintln!("skipped: PostgreSQL is not installed");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("wharf-pg")
            .tempdir_in("/tmp")
            .unwrap();
        let out = Command::new("bash")
            .arg(script())
            .args(["start"])
            .arg(dir.path())
            .arg(port.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
        Some(Cluster { dir, port, url })
    }

    fn stop(&self) {
        let ok = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    fn restart(&self) {
        let ok = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(self.dir.path())
            .arg(self.port.to_string())
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Pushes a config and a layer and a manifest tagged `tag`; returns the
/// manifest's digest and the layer's digest.
fn push_image(w: &Wharf, repo: &str, tag: &str, seed: u8) -> (String, String) {
    let c = client();
    let blob = |bytes: Vec<u8>| {
        let d = sha256(&bytes);
        let r = c
            .post(format!("{}/v2/{repo}/blobs/uploads/?digest={d}", w.base))
            .body(bytes.clone())
            .send()
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().unwrap());
        (d, bytes.len())
    };
    let (config, config_len) = blob(format!("{{\"seed\":{seed}}}").into_bytes());
    let (layer, layer_len) = blob(data(4096, seed));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_len},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_len}],
    })
    .to_string();
    let r = c
        .put(format!("{}/v2/{repo}/manifests/{tag}", w.base))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    (sha256(manifest.as_bytes()), layer)
}

fn status(url: &str) -> (u16, String, Duration) {
    let started = Instant::now();
    let r = client()
        .get(url)
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let code = r.status().as_u16();
    let _ = r.bytes();
    (code, retry, started.elapsed())
}

#[test]
fn pulls_survive_a_database_outage_and_pushes_fail_fast() {
    let Some(pg) = Cluster::start(15461) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let w = Wharf::start_with(dir.path(), &["--metadata-url", &pg.url, "--migrate"]);
    let (manifest, layer) = push_image(&w, "acme/app", "v1", 1);
    let by_tag = format!("{}/v2/acme/app/manifests/v1", w.base);
    let by_digest = format!("{}/v2/acme/app/manifests/{manifest}", w.base);
    let blob = format!("{}/v2/acme/app/blobs/{layer}", w.base);
    for url in [&by_tag, &by_digest, &blob] {
        assert_eq!(status(url).0, 200, "{url} before the outage");
    }

    pg.stop();
    // Pulls of content this node has seen keep working, request by request.
    for round in 0..3 {
        for url in [&by_tag, &by_digest, &blob] {
            let (code, _, took) = status(url);
            assert_eq!(code, 200, "{url} during the outage (round {round})");
            assert!(took < Duration::from_secs(3), "{url} took {took:?}");
        }
    }
    // A database every node shares being down must not drain the nodes:
    // they still serve what they know.
    let (code, _, _) = status(&format!("{}/readyz", w.admin));
    assert_eq!(code, 200, "readyz during the database outage");
    // Pushes and listings fail fast and honestly.
    let started = Instant::now();
    let r = client()
        .post(format!("{}/v2/acme/app/blobs/uploads/", w.base))
        .send()
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "push refusal took {:?}",
        started.elapsed()
    );
    let (code, retry, took) = status(&format!("{}/v2/acme/app/tags/list", w.base));
    assert_eq!(code, 503);
    assert!(!retry.is_empty());
    assert!(took < Duration::from_secs(6), "tags refusal took {took:?}");
    // Content never seen by this node cannot be vouched for.
    assert_eq!(
        status(&format!("{}/v2/acme/other/manifests/v1", w.base)).0,
        503
    );

    // The database returns; the node recovers without a restart.
    pg.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = client()
            .post(format!("{}/v2/acme/app/blobs/uploads/", w.base))
            .send()
            .unwrap();
        if r.status() == 202 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pushes did not recover: {}",
            r.status()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    push_image(&w, "acme/app", "v2", 2);
    assert_eq!(
        status(&format!("{}/v2/acme/app/manifests/v2", w.base)).0,
        200
    );
}

/// Object-store flags for a configuration that is only checked, never
/// used: a cluster must name shared storage. Nothing listens there, so a
/// start waits for it (not ready) and a check lists it as a problem,
/// beside the budget's verdict.
const SHARED_STORAGE: [&str; 8] = [
    "--s3-endpoint",
    "http://127.0.0.1:9",
    "--s3-bucket",
    "b",
    "--s3-access-key-id",
    "k",
    "--s3-secret-access-key",
    "s",
];

#[test]
fn a_cluster_whose_pools_overflow_the_database_is_refused() {
    let Some(pg) = Cluster::start(15462) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The throwaway cluster accepts 100 connections less 3 reserved: 80% is
    // 77. Ten nodes of 16 would be 160.
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--metadata-url",
            &pg.url,
            "--metadata-pool",
            "16",
            "--cluster-nodes",
            "10",
        ])
        .args(SHARED_STORAGE)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("160 connections"), "{err}");
    assert!(err.contains("refusing to start"), "{err}");

    // The same shape with smaller pools fits, and `wharf check` says so
    // (its only problem: the object store nobody runs here).
    let check = |pool: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args(["check", "--metadata-url", &pg.url, "--migrate"])
            .args(["--metadata-pool", pool, "--cluster-nodes", "10"])
            .args(SHARED_STORAGE)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let text = check("7");
    assert!(
        text.contains("connection budget: ok: 10 node(s) x 7 = 70 connections"),
        "{text}"
    );
    let problems: Vec<&str> = text.lines().filter(|l| l.starts_with("PROBLEM")).collect();
    assert_eq!(problems.len(), 1, "{text}");
    assert!(
        problems[0].contains("http://127.0.0.1:9, bucket b) did not answer"),
        "{text}"
    );
    let text = check("8");
    assert!(
        text.contains("PROBLEM: connection budget") && text.contains("80 connections"),
        "80 > 77 must be refused: {text}"
    );
}
