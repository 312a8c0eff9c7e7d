//! The shipped deployment files against the real tools: the systemd unit
//! passes `systemd-analyze verify` (with the real binary as its
//! `ExecStart`), runs as a user of its own with its hardening, and gives
//! the drain its time. (The nginx example runs for real in the end-to-end
//! group `nginx`, tests/e2e/nginx.sh; the Kubernetes manifests are checked
//! by scripts/check-kubernetes.sh.)

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// `key=value` lines of a unit file, in order.
fn settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn the_systemd_unit_verifies_with_the_real_binary() {
    let unit = std::fs::read_to_string(repo_file("deploy/systemd/wharf.service")).unwrap();
    let exec = "ExecStart=/usr/local/bin/wharf serve";
    assert!(unit.contains(exec), "the unit runs {exec}");
    // systemd-analyze checks that ExecStart's binary exists: point it at
    // the one this test was built with.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("wharf.service");
    let real = format!("ExecStart={} serve", env!("CARGO_BIN_EXE_wharf"));
    std::fs::write(&copy, unit.replace(exec, &real)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (package systemd; scripts/install-deps.sh installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // It exits 0 on an unknown key, but says so: any remark about this
    // unit fails the test.
    let remarks: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("wharf.service"))
        .collect();
    assert!(
        out.status.success() && remarks.is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

#[test]
fn the_systemd_unit_runs_unprivileged_and_outlasts_the_drain() {
    let unit = std::fs::read_to_string(repo_file("deploy/systemd/wharf.service")).unwrap();
    let s = settings(&unit);
    let get = |k: &str| {
        s.iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .next_back()
    };
    assert_eq!(get("User"), Some("wharf"));
    for (k, v) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(get(k), Some(v), "{k}");
    }
    assert!(get("LoadCredential").is_some_and(|v| v.starts_with("admin-token.sha256:")));
    assert!(s.iter().any(
        |(k, v)| k == "Environment" && v == "WHARF_ADMIN_TOKEN_HASH_FILE=%d/admin-token.sha256"
    ));
    // The stop timeout leaves the default drain (shutdown_grace_secs, as
    // the example configuration gives it) at least 10 s to spare.
    let example = std::fs::read_to_string(repo_file("docs/wharf.example.toml")).unwrap();
    let grace: u64 = example
        .lines()
        .find_map(|l| l.strip_prefix("# shutdown_grace_secs = "))
        .expect("shutdown_grace_secs in the example")
        .parse()
        .unwrap();
    let stop: u64 = get("TimeoutStopSec").unwrap().parse().unwrap();
    assert!(stop >= grace + 10, "TimeoutStopSec={stop}, grace {grace} s");
    let nofile: u64 = get("LimitNOFILE").unwrap().parse().unwrap();
    assert!(
        nofile >= 2 * 16384 + 256,
        "LimitNOFILE={nofile} below the largest derived cap"
    );
}
