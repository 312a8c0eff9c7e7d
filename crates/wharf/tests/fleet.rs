//! `wharf fleet simulate` through the real binary.

use std::process::Command;

#[test]
fn incident_preset_writes_a_report_showing_both_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["fleet", "simulate", "--incident", "--hours", "72", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("wharf: anti-affinity pairs together (max) 0, 504s 0,"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("permissive: anti-affinity pairs together (max) 0,"),
        "{stdout}"
    );
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("| | wharf | permissive |"));
    for name in ["utilisation", "worst-cell", "alerts", "moves"] {
        for p in ["wharf", "permissive"] {
            assert!(dir.path().join(format!("{p}-{name}.png")).exists());
        }
    }
}

#[test]
fn simulate_help_documents_the_knobs_and_bad_values_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["fleet", "simulate", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--out",
        "--seed",
        "--incident",
        "--scale",
        "--policy",
        "--cells",
        "--tenants",
        "--crunch-at-hour",
        "--api-call-share",
        "--max-moves-per-cell",
        "--growth-alpha",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args([
            "fleet",
            "simulate",
            "--out",
            "/nonexistent-never",
            "--cells",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
