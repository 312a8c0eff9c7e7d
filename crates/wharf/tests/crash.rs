//! Crash tests on the real binary: SIGKILL in the middle of an upload and in
//! the middle of a manifest `PUT`, then restart on the same data directory.
//! Nothing half-written may become visible, nothing stored may be corrupt,
//! and the interrupted push must be completable.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::blocking::Client;
use sha2::{Digest as _, Sha256};

mod common;
use common::{data, sha256, Wharf};

/// Sends a request whose body is only partly written, then returns with
/// the connection still open (the server is then killed mid-body).
fn send_partial(addr: &str, head: &str, body: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    s.flush().unwrap();
    // Give the server time to receive and write what was sent.
    std::thread::sleep(Duration::from_millis(500));
    s
}

/// Every file under blobs/ hashes to its own name: nothing partial or
/// corrupt is ever visible under a digest.
fn assert_blob_files_verified(root: &Path) {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
    }
    let mut files = Vec::new();
    walk(&root.join("blobs/sha256"), &mut files);
    assert!(!files.is_empty());
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        let name = f.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            name,
            "{} is corrupt",
            f.display()
        );
    }
}

#[test]
fn sigkill_mid_upload_then_resume() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::new();
    let blob = data(8 * 1024 * 1024, 1);
    let digest = sha256(&blob);

    let w = Wharf::start(dir.path());
    let r = client
        .post(format!("{}/v2/crash/up/blobs/uploads/", w.base))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    // A PATCH announcing the whole blob but delivering only 3 MiB of it.
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        w.addr(),
        blob.len()
    );
    let _conn = send_partial(w.addr(), &head, &blob[..3 * 1024 * 1024]);
    w.kill();

    let w = Wharf::start(dir.path());
    // Not visible as a blob.
    let r = client
        .head(format!("{}/v2/crash/up/blobs/{digest}", w.base))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    // The session survived, holding at most what was sent.
    let r = client.get(format!("{}{loc}", w.base)).send().unwrap();
    assert_eq!(r.status(), 204);
    let range = r.headers()["range"].to_str().unwrap().to_string();
    let end: u64 = range.split('-').nth(1).unwrap().parse().unwrap();
    let have = if end == 0 { 0 } else { end + 1 };
    assert!(have <= 3 * 1024 * 1024, "{range}");
    // Resume from what the server has, then finish.
    let r = client
        .patch(format!("{}{loc}", w.base))
        .header("content-range", format!("{have}-{}", blob.len() - 1))
        .body(blob[have as usize..].to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().unwrap());
    let r = client
        .put(format!("{}{loc}?digest={digest}", w.base))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let got = client
        .get(format!("{}/v2/crash/up/blobs/{digest}", w.base))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert!(got.as_ref() == blob.as_slice(), "resumed blob differs");
    w.kill();
    assert_blob_files_verified(dir.path());
}

#[test]
fn sigkill_mid_manifest_put_then_complete() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::new();
    let w = Wharf::start(dir.path());
    let config = b"{\"crash\":true}".to_vec();
    let layer = data(64 * 1024, 2);
    for b in [&config, &layer] {
        let r = client
            .post(format!(
                "{}/v2/crash/m/blobs/uploads/?digest={}",
                w.base,
                sha256(b)
            ))
            .body(b.to_vec())
            .send()
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
        sha256(&config),
        config.len(),
        sha256(&layer),
        layer.len()
    );
    let head = format!(
        "PUT /v2/crash/m/manifests/v1 HTTP/1.1\r\nHost: {}\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\n\r\n",
        w.addr(),
        manifest.len()
    );
    let _conn = send_partial(w.addr(), &head, &manifest.as_bytes()[..manifest.len() / 2]);
    w.kill();

    let w = Wharf::start(dir.path());
    let r = client
        .get(format!("{}/v2/crash/m/manifests/v1", w.base))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404, "a half-sent manifest must not be visible");
    let r = client
        .get(format!("{}/v2/crash/m/tags/list", w.base))
        .send()
        .unwrap();
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["tags"], serde_json::json!([]));
    // The blobs pushed before the crash are intact and the push completes.
    let r = client
        .put(format!("{}/v2/crash/m/manifests/v1", w.base))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let r = client
        .get(format!("{}/v2/crash/m/manifests/v1", w.base))
        .send()
        .unwrap();
    assert_eq!(r.text().unwrap(), manifest);
    w.kill();
    assert_blob_files_verified(dir.path());
}

#[test]
fn sigkill_during_a_stream_of_pushes_leaves_a_consistent_store() {
    let dir = tempfile::tempdir().unwrap();
    let w = Wharf::start(dir.path());
    let base = w.base.clone();
    // Push blobs and manifests in a background thread; kill the server while
    // it is busy. Bounded: at most 200 pushes.
    let pusher = std::thread::spawn(move || {
        let client = Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let mut acknowledged = Vec::new();
        for i in 0..200u32 {
            let b = data(256 * 1024 + i as usize, (i % 251) as u8);
            let d = sha256(&b);
            match client
                .post(format!("{base}/v2/crash/many/blobs/uploads/?digest={d}"))
                .body(b)
                .send()
            {
                Ok(r) if r.status() == 201 => acknowledged.push(d),
                _ => break,
            }
        }
        acknowledged
    });
    std::thread::sleep(Duration::from_millis(700));
    w.kill();
    let acknowledged = pusher.join().unwrap();
    assert!(
        !acknowledged.is_empty(),
        "nothing was pushed before the kill"
    );

    let w = Wharf::start(dir.path());
    let client = Client::new();
    // Every acknowledged blob is there and intact.
    for d in &acknowledged {
        let r = client
            .get(format!("{}/v2/crash/many/blobs/{d}", w.base))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "acknowledged blob {d} lost");
        assert_eq!(&sha256(&r.bytes().unwrap()), d);
    }
    w.kill();
    assert_blob_files_verified(dir.path());
}

/// A node killed with SIGKILL right after writes leaves its metadata store
/// to be repaired at the next start (redb reads the whole file to rebuild
/// its allocator state: seconds on a large store). The restarted node says
/// so in its log, so that an operator waiting for it knows why. A clean
/// stop needs no repair, nor does a kill after a lull in the writes (the
/// writer saved the allocator state during the lull).
#[test]
fn a_restart_after_sigkill_mid_writes_says_the_store_is_being_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("node.log");
    // The log is written by the node's own thread: give it a moment.
    // Each start writes its log afresh.
    let repaired = |log: &Path| {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if std::fs::read_to_string(log)
                .unwrap()
                .contains("repairing it")
            {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let push = |w: &Wharf| {
        for i in 0..5u8 {
            let b = data(1000 + i as usize, i);
            let r = Client::new()
                .post(format!(
                    "{}/v2/crash/log/blobs/uploads/?digest={}",
                    w.base,
                    sha256(&b)
                ))
                .body(b)
                .send()
                .unwrap();
            assert_eq!(r.status(), 201);
        }
    };
    let data_dir = dir.path().join("data");
    let mut w = Wharf::start_logging(&data_dir, &[], Some(&log));
    push(&w);
    // A clean stop: the next start repairs nothing.
    w.terminate();
    assert!(
        w.wait_exit(Duration::from_secs(30)).is_some(),
        "no exit after SIGTERM"
    );
    let w = Wharf::start_logging(&data_dir, &[], Some(&log));
    assert!(!repaired(&log), "a clean stop left a repair");
    push(&w);
    w.kill();
    let w = Wharf::start_logging(&data_dir, &[], Some(&log));
    assert!(repaired(&log), "no word of the repair after SIGKILL");
    push(&w);
    // A lull: the writer saves the allocator state after 200 ms of it.
    std::thread::sleep(Duration::from_millis(1500));
    w.kill();
    let w = Wharf::start_logging(&data_dir, &[], Some(&log));
    assert!(
        !repaired(&log),
        "a kill after a lull in the writes left a repair"
    );
    w.kill();
}
