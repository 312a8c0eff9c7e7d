//! Garbage collection through the real binary: `wharf gc` and `wharf check
//! --storage` against a running node, the admin routes behind the admin
//! token, and the collector's metrics.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{data, sha256, Wharf};
use reqwest::blocking::Client;
use serde_json::Value;

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn push_blob(w: &Wharf, repo: &str, bytes: &[u8]) -> String {
    let d = sha256(bytes);
    let r = client()
        .post(format!("{}/v2/{repo}/blobs/uploads/?digest={d}", w.base))
        .body(bytes.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    d
}

/// Pushes an image of `config` and `layers` under `tag`; its manifest's
/// bytes.
fn push_image(w: &Wharf, repo: &str, tag: &str, config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    let desc = |media: &str, b: &[u8]| {
        format!(
            r#"{{"mediaType":"{media}","digest":"{}","size":{}}}"#,
            push_blob(w, repo, b),
            b.len()
        )
    };
    let layers: Vec<String> = layers
        .iter()
        .map(|l| desc("application/vnd.oci.image.layer.v1.tar", l))
        .collect();
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[{}]}}"#,
        desc("application/vnd.oci.image.config.v1+json", config),
        layers.join(",")
    );
    let r = client()
        .put(format!("{}/v2/{repo}/manifests/{tag}", w.base))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    body.into_bytes()
}

/// `wharf ARGS…` against `w`'s admin port; (exit code, stdout, stderr).
fn wharf(w: &Wharf, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(args)
        .env("WHARF_ADMIN_URL", &w.admin)
        .env_remove("WHARF_ADMIN_TOKEN")
        .env_remove("WHARF_ADMIN_TOKEN_FILE")
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code(), text(out.stdout), text(out.stderr))
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Bytes of every file under `dir`.
fn bytes_under(dir: &std::path::Path) -> u64 {
    let mut sum = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            sum += bytes_under(&entry.path());
        } else {
            sum += meta.len();
        }
    }
    sum
}

#[test]
fn gc_run_reclaims_exactly_a_deleted_images_own_bytes_and_the_check_stays_clean() {
    let dir = tempfile::tempdir().unwrap();
    // A zero delay, and no background pass for an hour: only the passes
    // this test asks for run.
    let w = Wharf::start_with(
        dir.path(),
        &["--gc-review-delay-secs", "0", "--gc-interval-secs", "3600"],
    );
    let repo = "acme/app";
    let shared = data(40_000, 1);
    let kept = push_image(&w, repo, "kept", &data(300, 2), &[&shared, &data(5000, 3)]);
    let gone_config = data(310, 4);
    let gone_layer = data(7000, 5);
    let gone = push_image(&w, repo, "gone", &gone_config, &[&shared, &gone_layer]);
    // Nothing unreferenced yet: a pass reclaims nothing.
    let (code, out, err) = wharf(&w, &["gc", "run"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(json(&out)["deleted"], 0, "{out}");

    let r = client()
        .delete(format!("{}/v2/{repo}/manifests/{}", w.base, sha256(&gone)))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let expected = (gone.len() + gone_config.len() + gone_layer.len()) as u64;
    let mut doomed = vec![sha256(&gone), sha256(&gone_config), sha256(&gone_layer)];
    doomed.sort();

    let blobs = dir.path().join("blobs");
    let before = bytes_under(&blobs);
    let (code, out, err) = wharf(&w, &["gc", "run", "--dry-run"]);
    assert_eq!(code, Some(0), "{err}");
    let dry = json(&out);
    let mut listed: Vec<String> = dry["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["verdict"] == "doomed")
        .map(|v| v["digest"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, doomed, "{out}");
    assert_eq!(dry["bytes_reclaimed"], expected);
    assert_eq!(bytes_under(&blobs), before, "a dry run deletes nothing");

    let (code, out, err) = wharf(&w, &["gc", "run"]);
    assert_eq!(code, Some(0), "{err}");
    let report = json(&out);
    assert_eq!(report["deleted"], 3, "{out}");
    assert_eq!(report["bytes_reclaimed"], expected);
    assert_eq!(bytes_under(&blobs), before - expected);

    // The kept image pulls whole.
    let r = client()
        .get(format!("{}/v2/{repo}/manifests/kept", w.base))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap();
    assert_eq!(r.bytes().unwrap().to_vec(), kept);
    let r = client()
        .get(format!("{}/v2/{repo}/blobs/{}", w.base, sha256(&shared)))
        .send()
        .unwrap();
    assert_eq!(r.bytes().unwrap().to_vec(), shared);

    let (code, out, err) = wharf(&w, &["gc", "status"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(json(&out)["queued"], 0, "{out}");
    // The embedded database is the running node's: the check asks it.
    let (code, out, err) = wharf(
        &w,
        &[
            "check",
            "--storage",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--admin-listen",
            w.admin.trim_start_matches("http://"),
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(json(&out)["clean"], true);
    let metrics = client()
        .get(format!("{}/metrics", w.admin))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("wharf_gc_blobs_deleted_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("wharf_gc_bytes_reclaimed_total {expected}")),
        "{metrics}"
    );
    assert!(metrics.contains("wharf_gc_queue_depth 0"), "{metrics}");
    assert!(
        metrics.contains("wharf_namespace_stored_bytes{namespace=\"acme\"}"),
        "{metrics}"
    );

    // Stopped, the node's stores are the check's own to open.
    drop(w);
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["check", "--storage", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json(&String::from_utf8(out.stdout).unwrap())["clean"], true);
}

#[test]
fn the_gc_routes_need_the_admin_token_and_a_disabled_collector_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let token = "wharf-admin-gc-token";
    let file = dir.path().join("admin.sha256");
    std::fs::write(
        &file,
        format!("sha256:{}\n", wharf_auth::hash_secret(token)),
    )
    .unwrap();
    let w = Wharf::start_with(
        &dir.path().join("data"),
        &[
            "--admin-token-file",
            file.to_str().unwrap(),
            "--gc-enabled",
            "false",
        ],
    );
    for (method, path) in [
        ("GET", "/admin/v1/gc"),
        ("POST", "/admin/v1/gc/run"),
        ("POST", "/admin/v1/gc/scan-orphans"),
        ("GET", "/admin/v1/gc/check"),
    ] {
        let url = format!("{}{path}", w.admin);
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = client().request(m.clone(), &url).send().unwrap();
        assert_eq!(r.status(), 401, "{method} {path}");
        let r = client().request(m, &url).bearer_auth(token).send().unwrap();
        assert_eq!(r.status(), 200, "{method} {path}");
    }
    let metrics = client()
        .get(format!("{}/metrics", w.admin))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(metrics.contains("wharf_gc_enabled 0"), "{metrics}");
    let (code, _, err) = wharf(&w, &["gc", "status"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("401"), "{err}");
}

#[test]
fn a_node_applies_retention_policies_on_its_own_every_interval() {
    let dir = tempfile::tempdir().unwrap();
    let w = Wharf::start_with(dir.path(), &["--retention-interval-secs", "1"]);
    let admin = |method: reqwest::Method, path: &str, body: Value| {
        let r = client()
            .request(method, format!("{}/admin/v1/{path}", w.admin))
            .json(&body)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.text().unwrap());
    };
    admin(
        reqwest::Method::POST,
        "tenants",
        serde_json::json!({"name": "acme"}),
    );
    admin(
        reqwest::Method::PATCH,
        "tenants/acme",
        serde_json::json!({"retention": {"rules": [{"keep_last": 1}]}}),
    );
    let repo = "acme/app";
    push_image(&w, repo, "v1", &data(100, 1), &[&data(1000, 2)]);
    // Push times count in seconds: the second tag is newer.
    std::thread::sleep(Duration::from_millis(1100));
    push_image(&w, repo, "v2", &data(100, 3), &[&data(1000, 4)]);
    let status = |tag: &str| {
        client()
            .get(format!("{}/v2/{repo}/manifests/{tag}", w.base))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while status("v1") != 404 {
        assert!(
            std::time::Instant::now() < deadline,
            "retention never removed the older tag"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(status("v2"), 200, "the newest tag stays");
}
