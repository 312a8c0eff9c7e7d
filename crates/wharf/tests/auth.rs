//! Token authentication on the real binary: `wharf keygen`, then
//! `wharf serve --auth token` issuing its own tokens, and a client that
//! follows the challenge as Docker does.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;
use std::time::Duration;

use reqwest::blocking::Client;

mod common;
use common::{sha256, Wharf};

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// `key="value"` out of a `WWW-Authenticate` header.
fn param(challenge: &str, key: &str) -> String {
    let start = challenge.find(&format!("{key}=\"")).expect(key) + key.len() + 2;
    let len = challenge[start..].find('"').unwrap();
    challenge[start..start + len].to_string()
}

#[test]
fn keygen_then_token_flow_on_the_real_binary() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .arg("keygen")
        .arg(&keys)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut files: Vec<_> = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    let private = files
        .iter()
        .find(|p| p.to_string_lossy().ends_with(".private.pem"))
        .unwrap();
    let mode = std::fs::metadata(private).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("alice:{}\n", bcrypt::hash("alice-pw", 4).unwrap()),
    )
    .unwrap();
    let grants = dir.path().join("grants.toml");
    std::fs::write(
        &grants,
        "[[user]]\nname = \"alice\"\ngrants = [\"acme/*:pull,push\"]\n",
    )
    .unwrap();
    let (k, h, g) = (
        keys.to_str().unwrap(),
        htpasswd.to_str().unwrap(),
        grants.to_str().unwrap(),
    );
    let w = Wharf::start_with(
        &dir.path().join("data"),
        &[
            "--auth",
            "token",
            "--htpasswd",
            h,
            "--grants",
            g,
            "--token-keys",
            k,
            "--token-signing-key",
            k,
            "--anonymous-pull",
            "public/*",
        ],
    );
    let c = client();

    // Push as Docker does: try, read the challenge, fetch a token, retry.
    let config = b"{\"layers\":0}".to_vec();
    let d = sha256(&config);
    let upload = format!("{}/v2/acme/app/blobs/uploads/?digest={d}", w.base);
    let r = c.post(&upload).body(config.clone()).send().unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    let realm = param(&challenge, "realm");
    assert_eq!(realm, format!("{}/auth/token", w.base));
    assert_eq!(param(&challenge, "service"), "wharf");
    let scope = param(&challenge, "scope");
    assert_eq!(scope, "repository:acme/app:pull,push");

    let r = c
        .get(&realm)
        .query(&[("service", "wharf"), ("scope", scope.as_str())])
        .basic_auth("alice", Some("wrong"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(&realm)
        .query(&[("service", "wharf"), ("scope", scope.as_str())])
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().unwrap();
    let token = v["token"].as_str().unwrap().to_string();
    assert_eq!(v["expires_in"], 300);

    let r = c
        .post(&upload)
        .bearer_auth(&token)
        .body(config)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{d}","size":12}},"layers":[]}}"#
    );
    let url = format!("{}/v2/acme/app/manifests/v1", w.base);
    let r = c
        .put(&url)
        .bearer_auth(&token)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .get(&url)
        .bearer_auth(&token)
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), manifest);
    // Without the token: refused; another tenant's repository: refused.
    assert_eq!(c.get(&url).send().unwrap().status(), 401);
    let other = format!("{}/v2/globex/app/manifests/v1", w.base);
    let r = c.get(&other).bearer_auth(&token).send().unwrap();
    assert_eq!(r.status(), 401);
    // Anonymous pull is on for public/*: allowed through auth (unknown).
    let public = format!("{}/v2/public/app/manifests/v1", w.base);
    assert_eq!(c.get(&public).send().unwrap().status(), 404);
}
