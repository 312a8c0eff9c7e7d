//! The real binary over a real S3-compatible store (Garage, started by the
//! test command, reached through the `WHARF_TEST_S3_*` variables): a push
//! and a byte-identical pull with blobs in the object store, and blob GETs
//! answered with a redirect to a presigned URL when asked to.
//!
//! Without those variables the tests skip, unless `CI` or `WHARF_REQUIRE_S3`
//! says they must run.

use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::redirect::Policy;

mod common;
use common::{data, sha256, Wharf};

/// The flags pointing a node at the test store, under a prefix of its own.
fn s3_flags(prefix: &str) -> Option<Vec<String>> {
    let var = |n: &str| std::env::var(format!("WHARF_TEST_S3_{n}")).ok();
    let Some(endpoint) = var("ENDPOINT") else {
        let required =
            std::env::var_os("CI").is_some() || std::env::var_os("WHARF_REQUIRE_S3").is_some();
        assert!(
            !required,
            "an S3 store is required here: run scripts/garage.sh"
        );
        eprintln!("skipped: set WHARF_TEST_S3_* (scripts/garage.sh start DIR PORT)");
        return None;
    };
    let unique = format!("{prefix}-{}", std::process::id());
    Some(vec![
        "--s3-endpoint".into(),
        endpoint,
        "--s3-bucket".into(),
        var("BUCKET").expect("WHARF_TEST_S3_BUCKET"),
        "--s3-region".into(),
        var("REGION").unwrap_or_else(|| "garage".into()),
        "--s3-access-key-id".into(),
        var("ACCESS_KEY_ID").expect("WHARF_TEST_S3_ACCESS_KEY_ID"),
        "--s3-secret-access-key".into(),
        var("SECRET_ACCESS_KEY").expect("WHARF_TEST_S3_SECRET_ACCESS_KEY"),
        "--s3-prefix".into(),
        unique,
    ])
}

fn client(follow: bool) -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(if follow {
            Policy::limited(3)
        } else {
            Policy::none()
        })
        .build()
        .unwrap()
}

fn push_blob(w: &Wharf, repo: &str, bytes: &[u8]) -> String {
    let d = sha256(bytes);
    let c = client(false);
    // Chunked: start, two PATCHes, then PUT with the digest.
    let r = c
        .post(format!("{}/v2/{repo}/blobs/uploads/", w.base))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let mut location = r.headers()["location"].to_str().unwrap().to_string();
    let half = bytes.len() / 2;
    for (start, part) in [(0, &bytes[..half]), (half, &bytes[half..])] {
        let r = c
            .patch(format!("{}{location}", w.base))
            .header("content-type", "application/octet-stream")
            .header(
                "content-range",
                format!("{start}-{}", start + part.len() - 1),
            )
            .body(part.to_vec())
            .send()
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().unwrap());
        location = r.headers()["location"].to_str().unwrap().to_string();
    }
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{}{location}{sep}digest={d}", w.base))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    d
}

#[test]
fn blobs_round_trip_through_the_object_store() {
    let Some(flags) = s3_flags("roundtrip") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let w = Wharf::start_with(dir.path(), &args);
    let bytes = data(12 << 20, 7);
    let d = push_blob(&w, "team/app", &bytes);
    let r = client(false)
        .get(format!("{}/v2/team/app/blobs/{d}", w.base))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().as_ref(), bytes.as_slice());
    let r = client(false)
        .get(format!("{}/v2/team/app/blobs/{d}", w.base))
        .header("range", "bytes=1000-1999")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().unwrap().as_ref(), &bytes[1000..2000]);
    // Nothing of the blob is under the node's data directory (only the
    // embedded metadata database is).
    let mut local = 0u64;
    for e in walk(dir.path()) {
        if e.file_name().is_some_and(|n| n != "meta.redb") {
            local += std::fs::metadata(e).map(|m| m.len()).unwrap_or(0);
        }
    }
    assert!(local < (1 << 20), "{local} bytes stored locally");
}

#[test]
fn blob_gets_redirect_to_a_presigned_url_when_asked() {
    let Some(mut flags) = s3_flags("presign") else {
        return;
    };
    flags.push("--s3-presign-redirects".into());
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let w = Wharf::start_with(dir.path(), &args);
    let bytes = data(300_000, 9);
    let d = push_blob(&w, "team/app", &bytes);
    let url = format!("{}/v2/team/app/blobs/{d}", w.base);
    let r = client(false).get(&url).send().unwrap();
    assert_eq!(r.status(), 307);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(location.contains("X-Amz-Signature"), "{location}");
    let r = client(true).get(&url).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().as_ref(), bytes.as_slice());
    // HEAD and ranged GETs are still answered by the node itself.
    let r = client(false).head(&url).send().unwrap();
    assert_eq!(r.status(), 200);
    let r = client(false)
        .get(&url)
        .header("range", "bytes=0-9")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    // Unknown blobs are not redirected.
    let other = sha256(b"never pushed");
    let r = client(false)
        .get(format!("{}/v2/team/app/blobs/{other}", w.base))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
