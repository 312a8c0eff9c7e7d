//! The examples of docs/admin.md run as written, against a real node.
//!
//! A shell block right after a `<!-- example: NAME -->` line is an
//! example. Every example of the doc runs, in the doc's order, in one bash
//! session against a `wharf serve` started with an admin token, with the
//! admin CLI set up as the doc's "The admin token" says
//! (`WHARF_ADMIN_TOKEN_FILE`, `WHARF_ADMIN_URL`) and `/etc/wharf` and `~`
//! moved into a scratch directory. Each command line must succeed, except
//! one whose comment says it is refused, which must fail. What an example
//! takes for granted (an image in a repository, a password file, the
//! policy shown in the `json` block before it) is set up by [`SETUP`]
//! before it, and nothing else changes the doc's text. `docs_commands.rs`
//! checks every other `wharf` line of the docs as far as parsing goes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::docs::join_continued;
use common::Wharf;

/// What an example needs that the doc takes for granted: bash run just
/// before the example's line of that index (0: before it starts). Every
/// example the doc marks must be listed, and every one listed marked.
const SETUP: &[(&str, usize, &str)] = &[
    // "refused while it holds repositories": it holds one by then.
    ("tenants", 5, "push_image acme/app v1"),
    // A deleted tenant's name is free again after a few seconds.
    ("usage", 0, "create_again acme && push_image acme/app v1"),
    ("deleting", 0, "push_image acme/team/app v1"),
    // The example creates acme anew, with its rule.
    ("immutable-tags", 0, "wharf admin tenant delete acme --force >/dev/null && sleep 6"),
    // The policy is the one the doc shows just before.
    ("retention", 0, "printf '%s\\n' \"$DOC_JSON\" > policy.json && push_image acme/app/web v1"),
    ("users", 0, "printf '%s\\n' \"$PASSWORD\" > alice.password"),
    ("unlock", 0, ""),
    (
        "robots",
        0,
        "wharf admin robot create acme ci --grant 'acme/app:pull,push' --expires-in 90d --secret-only >/dev/null",
    ),
];

/// Bash functions the setups use.
const PRELUDE: &str = r#"
push_blob() { # REPO FILE: prints the digest
  local d
  d="sha256:$(sha256sum "$2" | cut -d' ' -f1)"
  curl -fsS -X POST -H "authorization: Bearer $TOKEN" -H 'content-type: application/octet-stream' --data-binary @"$2" \
    "$REGISTRY/v2/$1/blobs/uploads/?digest=$d" >/dev/null || return 1
  echo "$d"
}
create_again() { # TENANT: created once its name is free again (10 s at most)
  local i
  for ((i = 0; i < 50; i++)); do
    wharf admin tenant create "$1" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  wharf admin tenant create "$1" >/dev/null
}
# A bearer token that may push REPO, for a user the setup keeps in REPO's
# tenant (the node runs token auth, as the doc's tenants do).
push_token() { # REPO
  local tenant=${1%%/*} challenge realm service
  printf '%s\n' setup-password | wharf admin user set "$tenant" setup-pusher --role push --password-stdin >/dev/null || return 1
  challenge=$(curl -sS -o /dev/null -D - "$REGISTRY/v2/" | tr -d '\r' | grep -i '^www-authenticate:')
  realm=$(sed -n 's/.*realm="\([^"]*\)".*/\1/p' <<<"$challenge")
  service=$(sed -n 's/.*service="\([^"]*\)".*/\1/p' <<<"$challenge")
  curl -fsS -u setup-pusher:setup-password -G --data-urlencode "service=$service" \
    --data-urlencode "scope=repository:$1:pull,push" "$realm" | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p'
}
push_image() { # REPO TAG
  local dir c l
  TOKEN=$(push_token "$1") && [ -n "$TOKEN" ] || return 1
  dir=$(mktemp -d)
  printf '{"architecture":"amd64","os":"linux","repo":"%s"}' "$1" >"$dir/config"
  head -c 5000 /dev/urandom >"$dir/layer"
  c=$(push_blob "$1" "$dir/config") && l=$(push_blob "$1" "$dir/layer") || return 1
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":5000}]}' \
    "$c" "$(stat -c %s "$dir/config")" "$l" >"$dir/manifest"
  curl -fsS -X PUT -H "authorization: Bearer $TOKEN" -H 'content-type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary @"$dir/manifest" "$REGISTRY/v2/$1/manifests/$2" >/dev/null
}
"#;

struct Example {
    name: String,
    /// Where its block starts, `docs/admin.md:LINE`.
    place: String,
    /// Its logical command lines (continuations joined), with their line.
    lines: Vec<(usize, String)>,
    /// The last `json` block before it.
    json: Option<String>,
}

fn doc_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/admin.md")
}

fn examples(text: &str) -> Vec<Example> {
    let mut out = Vec::new();
    let mut json: Option<String> = None;
    let mut marked: Option<String> = None;
    let mut block: Option<(String, Vec<String>, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some((lang, body, start)) = block.as_mut() {
            if t.starts_with("```") {
                let (lang, body, start) = block.take().unwrap();
                if lang == "json" {
                    json = Some(body.join("\n"));
                } else if let Some(name) = marked.take() {
                    out.push(Example {
                        name,
                        place: format!("docs/admin.md:{start}"),
                        lines: logical(&body, start),
                        json: json.clone(),
                    });
                }
            } else {
                let _ = (&lang, &start);
                body.push(line.to_string());
            }
            continue;
        }
        if let Some(rest) = t.strip_prefix("<!-- example:") {
            marked = Some(rest.trim_end_matches("-->").trim().to_string());
        } else if let Some(info) = t.strip_prefix("```") {
            block = Some((info.trim().to_string(), Vec::new(), i + 2));
        } else if !t.is_empty() && marked.is_some() {
            panic!(
                "docs/admin.md:{}: text between an example marker and its block",
                i + 1
            );
        }
    }
    out
}

/// Lines joined across trailing backslashes; comment-only and empty lines
/// dropped.
fn logical(body: &[String], first: usize) -> Vec<(usize, String)> {
    let numbered = body
        .iter()
        .enumerate()
        .map(|(k, l)| (first + k, l.as_str()));
    join_continued(numbered)
        .into_iter()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim().starts_with('#'))
        .collect()
}

/// The part of `line` after its comment's `#` (outside quotes), if any.
fn comment(line: &str) -> Option<&str> {
    let (mut single, mut double) = (false, false);
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev.is_whitespace() => return Some(&line[i + 1..]),
            _ => {}
        }
        prev = c;
    }
    None
}

/// Single-quotes `s` for bash.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[test]
fn the_admin_examples_run_as_written() {
    let text = std::fs::read_to_string(doc_path()).unwrap();
    let all = examples(&text);
    let names: Vec<&str> = all.iter().map(|e| e.name.as_str()).collect();
    for (name, _, _) in SETUP {
        assert!(
            names.contains(name),
            "SETUP names {name}, which docs/admin.md does not mark"
        );
    }
    for n in &names {
        assert!(
            SETUP.iter().any(|(s, _, _)| s == n),
            "docs/admin.md marks example {n}: say in SETUP what it needs (\"\" for nothing)"
        );
    }

    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let etc = s.join("etc/wharf");
    let home = s.join("home");
    let work = s.join("work");
    for d in [&etc, &home, &work] {
        std::fs::create_dir_all(d).unwrap();
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_wharf"));
    // The doc's first step, "The admin token": the node gets the hash.
    let out = Command::new(bin)
        .args(["admin", "token", "--out"])
        .arg(etc.join("admin"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Token auth with a signing key, as docs/auth.md sets a node up for
    // tenants.
    let out = Command::new(bin)
        .arg("keygen")
        .arg(etc.join("keys"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = etc.join("admin/admin-token.sha256");
    let keys = etc.join("keys");
    let w = Wharf::start_with(
        &s.join("data"),
        &[
            "--admin-token-file",
            hash.to_str().unwrap(),
            "--auth",
            "token",
            "--token-signing-key",
            keys.to_str().unwrap(),
        ],
    );

    let mut script = String::from("set -o pipefail\n");
    script.push_str(PRELUDE);
    let mut count = 0;
    for e in &all {
        script.push_str(&format!("echo '== example {} ({})'\n", e.name, e.place));
        if let Some(j) = &e.json {
            script.push_str(&format!("DOC_JSON={}\n", quote(j)));
        }
        for (k, (line_no, line)) in e.lines.iter().enumerate() {
            for (_, _, setup) in SETUP.iter().filter(|(n, at, _)| *n == e.name && *at == k) {
                if !setup.is_empty() {
                    script.push_str(&format!(
                        "{setup} || {{ echo 'setup of {} failed' >&2; exit 1; }}\n",
                        e.name
                    ));
                }
            }
            let command = match comment(line) {
                Some(c) => &line[..line.len() - c.len() - 1],
                None => line.as_str(),
            };
            assert!(
                !command.contains('…') && !command.trim_start().starts_with("wharf serve"),
                "docs/admin.md:{line_no}: an example line that cannot run as written: {line}"
            );
            let runnable = line.replace("/etc/wharf", etc.to_str().unwrap());
            let refused = comment(line).is_some_and(|c| c.contains("refused"));
            let place = format!("docs/admin.md:{line_no}");
            script.push_str(&format!("echo {}\n", quote(&format!("$ {}", line.trim()))));
            script.push_str(&format!("eval {}\nrc=$?\n", quote(&runnable)));
            if refused {
                script.push_str(&format!(
                    "[ $rc -ne 0 ] || {{ echo {} >&2; exit 1; }}\n",
                    quote(&format!(
                        "{place}: the doc says this is refused, but it succeeded"
                    ))
                ));
            } else {
                script.push_str(&format!(
                    "[ $rc -eq 0 ] || {{ echo {}\" (exit $rc)\" >&2; exit 1; }}\n",
                    quote(&format!("{place}: failed"))
                ));
            }
            count += 1;
        }
    }
    assert!(count >= 20, "only {count} example lines in docs/admin.md");
    let path = std::env::var("PATH").unwrap_or_default();
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&work)
        .env_clear()
        .env(
            "PATH",
            format!("{}:{path}", bin.parent().unwrap().display()),
        )
        .env("HOME", &home)
        .env("REGISTRY", &w.base)
        .env("WHARF_ADMIN_URL", &w.admin)
        .env("WHARF_ADMIN_TOKEN_FILE", etc.join("admin/admin-token"))
        .env("PASSWORD", "a-password-of-alice")
        .env("PW", "a-password-of-alice")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the examples stopped:\n{stdout}\n--- stderr:\n{stderr}"
    );
    println!(
        "{count} example lines of {} examples ran:\n{stdout}",
        all.len()
    );
}
