//! Every `wharf` command line in the README and in `docs/` parses, and so
//! does every docker, podman, skopeo and buildah line.
//!
//! The shell blocks (```sh, bash, shell, console) of README.md and
//! docs/*.md are read; every command in them that runs `wharf` (also as
//! `target/release/wharf` or `cargo run … -p wharf --`) is run again as
//! `wharf ARGS… --help`. Clap reads the arguments before it answers the
//! `--help` at their end, so a subcommand or flag that does not exist, or
//! a value a flag does not take, fails here with the doc's file and line,
//! while nothing is served or changed. Shell variables stand for a value
//! (`"$X"` and `a:$X` become a placeholder); an unquoted `$X` alone may be
//! any number of words and is left out, as is `…`, which the docs write for
//! "the other flags". `docs_examples.rs` runs the examples of
//! docs/admin.md as written against a real node.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::docs::join_continued;

/// One command line found in a doc.
struct Found {
    place: String,
    /// `wharf`, or one of [`CLIENTS`].
    tool: &'static str,
    args: Vec<String>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The docs whose shell blocks are checked.
fn docs() -> Vec<PathBuf> {
    let mut all = vec![root().join("README.md")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    more.sort();
    all.extend(more);
    all
}

/// The logical lines of the shell blocks of `text` (continuations joined),
/// each with the line number it starts on.
fn shell_lines(text: &str) -> Vec<(usize, String)> {
    let mut shell = Vec::new();
    let mut in_shell = false;
    let mut in_block = false;
    for (i, line) in text.lines().enumerate() {
        if let Some(info) = line.trim_start().strip_prefix("```") {
            if in_block {
                in_block = false;
                in_shell = false;
            } else {
                in_block = true;
                let lang = info.split_whitespace().next().unwrap_or("");
                in_shell = matches!(lang, "sh" | "bash" | "shell" | "console");
            }
        } else if in_shell {
            shell.push((i + 1, line));
        }
    }
    join_continued(shell)
}

/// A word of a command, and whether any of it was quoted.
#[derive(Debug)]
struct Word {
    text: String,
    quoted: bool,
    /// Whether it held a `$` expansion.
    expands: bool,
}

/// Splits `line` into commands of words: a small shell reader that knows
/// quotes, comments, `$(…)` and `$((…))` (each `$(…)` is a command of its
/// own; the word it sits in gets a placeholder) and the operators that
/// separate commands. Redirections are dropped with their target.
fn commands(line: &str) -> Vec<Vec<Word>> {
    let chars: Vec<char> = line.chars().collect();
    let mut all: Vec<Vec<Word>> = vec![Vec::new()];
    let mut cur: Option<Word> = None;
    let mut i = 0;
    let mut skip_next_word = false;
    let finish = |cur: &mut Option<Word>, all: &mut Vec<Vec<Word>>, skip: &mut bool| {
        if let Some(w) = cur.take() {
            if *skip {
                *skip = false;
            } else {
                all.last_mut().unwrap().push(w);
            }
        }
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' => finish(&mut cur, &mut all, &mut skip_next_word),
            '#' if cur.is_none() => break,
            '\'' => {
                let w = word(&mut cur);
                w.quoted = true;
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    w.text.push(chars[i]);
                    i += 1;
                }
            }
            '"' => {
                let w = word(&mut cur);
                w.quoted = true;
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '$' {
                        w.expands = true;
                    }
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        i += 1;
                    }
                    w.text.push(chars[i]);
                    i += 1;
                }
            }
            '$' if chars.get(i + 1) == Some(&'(') => {
                // Find the matching parenthesis.
                let arith = chars.get(i + 2) == Some(&'(');
                let mut depth = 0;
                let mut j = i + 1;
                while j < chars.len() {
                    match chars[j] {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                if !arith {
                    let inner: String = chars[i + 2..j.min(chars.len())].iter().collect();
                    let nested = commands(&inner);
                    let at = all.len() - 1;
                    for n in nested.into_iter().filter(|c| !c.is_empty()) {
                        all.insert(at, n);
                    }
                }
                let w = word(&mut cur);
                w.text.push_str(if arith { "1" } else { "x" });
                w.expands = true;
                i = j;
            }
            '$' => {
                let w = word(&mut cur);
                w.expands = true;
                w.text.push('$');
            }
            '|' | ';' | '&' => {
                finish(&mut cur, &mut all, &mut skip_next_word);
                while i + 1 < chars.len() && matches!(chars[i + 1], '|' | '&') {
                    i += 1;
                }
                all.push(Vec::new());
            }
            '<' | '>' => {
                // `2>&1`, `> file`, `< file`: the target goes too.
                let fd_only = cur
                    .as_ref()
                    .is_some_and(|w| w.text.chars().all(|c| c.is_ascii_digit()));
                if fd_only {
                    cur = None;
                } else {
                    finish(&mut cur, &mut all, &mut skip_next_word);
                }
                while i + 1 < chars.len() && matches!(chars[i + 1], '>' | '&') {
                    i += 1;
                }
                if chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()) {
                    i += 1;
                } else {
                    skip_next_word = true;
                }
            }
            '\\' if i + 1 < chars.len() => {
                i += 1;
                word(&mut cur).text.push(chars[i]);
            }
            _ => word(&mut cur).text.push(c),
        }
        i += 1;
    }
    finish(&mut cur, &mut all, &mut skip_next_word);
    all.retain(|c| !c.is_empty());
    all
}

/// The word being read, started if there is none.
fn word(cur: &mut Option<Word>) -> &mut Word {
    cur.get_or_insert_with(|| Word {
        text: String::new(),
        quoted: false,
        expands: false,
    })
}

/// The client tools whose command lines in the docs are checked too, as
/// `TOOL SUBCOMMAND --help ARGS…` (their parsers refuse an unknown flag
/// even after `--help`, and never act on a `--help` command).
const CLIENTS: [&str; 4] = ["docker", "podman", "skopeo", "buildah"];

/// The client tool `words` runs and its arguments (placeholders as for
/// wharf), if it runs one of [`CLIENTS`].
fn client_args(words: &[Word]) -> Option<(&'static str, Vec<String>)> {
    let first = words
        .iter()
        .find(|w| w.quoted || !w.text.contains('=') || w.text.starts_with('-'))?;
    let tool = *CLIENTS.iter().find(|t| first.text == **t)?;
    let at = words.iter().position(|w| std::ptr::eq(w, first))?;
    let args = placeholders(words[at + 1..].iter());
    Some((tool, args))
}

/// The arguments after `wharf` if `words` runs it.
fn wharf_args(words: &[Word]) -> Option<Vec<String>> {
    // Leading `NAME=value` assignments set the environment.
    let mut rest = words
        .iter()
        .skip_while(|w| !w.quoted && w.text.contains('=') && !w.text.starts_with('-'));
    let first = rest.next()?;
    let after: Vec<&Word> = if first.text == "wharf" || first.text.ends_with("/wharf") {
        rest.collect()
    } else if first.text == "cargo" {
        let all: Vec<&Word> = rest.collect();
        let is_run = all.first().is_some_and(|w| w.text == "run");
        let runs_wharf = all
            .windows(2)
            .any(|p| p[0].text == "-p" && p[1].text == "wharf");
        let dashes = all.iter().position(|w| w.text == "--")?;
        if !(is_run && runs_wharf) {
            return None;
        }
        all[dashes + 1..].to_vec()
    } else {
        return None;
    };
    Some(placeholders(after.into_iter()))
}

/// `words` as arguments: a variable stands for a value, an unquoted `$X`
/// alone and `…` are left out.
fn placeholders<'a>(words: impl Iterator<Item = &'a Word>) -> Vec<String> {
    let mut args = Vec::new();
    for w in words {
        if w.text == "…" || w.text == "..." {
            continue;
        }
        if w.expands && !w.quoted && w.text.starts_with('$') && !w.text.contains(['/', ':', '=']) {
            // `$F` alone: any number of words.
            if w.text
                .chars()
                .skip(1)
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '{' || c == '}')
            {
                continue;
            }
        }
        let text = if w.expands && w.text.contains('$') {
            // A variable inside a word stands for a value.
            let mut t = String::new();
            let mut chars = w.text.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '$' {
                    while chars
                        .peek()
                        .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '{' | '}'))
                    {
                        chars.next();
                    }
                    t.push('x');
                } else {
                    t.push(c);
                }
            }
            t
        } else {
            w.text.clone()
        };
        args.push(text);
    }
    args
}

fn found() -> Vec<Found> {
    let mut all = Vec::new();
    for doc in docs() {
        let text = std::fs::read_to_string(&doc).unwrap();
        let name = doc
            .strip_prefix(root())
            .unwrap_or(&doc)
            .display()
            .to_string();
        let name = name.trim_start_matches("../").to_string();
        for (line, cmd_line) in shell_lines(&text) {
            for words in commands(&cmd_line) {
                let place = format!("{name}:{line}");
                if let Some(args) = wharf_args(&words) {
                    all.push(Found {
                        place,
                        tool: "wharf",
                        args,
                    });
                } else if let Some((tool, args)) = client_args(&words) {
                    all.push(Found { place, tool, args });
                }
            }
        }
    }
    all
}

#[test]
fn the_shell_reader_splits_commands_as_a_shell_would() {
    let texts = |line: &str| -> Vec<Vec<String>> {
        commands(line)
            .into_iter()
            .map(|c| c.into_iter().map(|w| w.text).collect())
            .collect()
    };
    assert_eq!(
        texts(r#"printf '%s\n' "$PW" | wharf admin user set acme a --password-stdin # note"#),
        vec![
            vec!["printf", "%s\\n", "$PW"],
            vec![
                "wharf",
                "admin",
                "user",
                "set",
                "acme",
                "a",
                "--password-stdin"
            ]
        ]
    );
    assert_eq!(
        texts("SECRET=$(wharf admin robot create acme ci --secret-only) && echo ok"),
        vec![
            vec![
                "wharf",
                "admin",
                "robot",
                "create",
                "acme",
                "ci",
                "--secret-only"
            ],
            vec!["SECRET=x"],
            vec!["echo", "ok"]
        ]
    );
    assert_eq!(
        texts("wharf gc retention --as-of-unix $(( $(date +%s) + 30*86400 )) < in 2>&1 > out &"),
        vec![vec!["wharf", "gc", "retention", "--as-of-unix", "1"]]
    );
    let args = |line: &str| wharf_args(&commands(line).remove(0));
    assert_eq!(
        args(r#"target/release/wharf fleet cells $F list --url "$A" --x=a:$B"#).unwrap(),
        vec!["fleet", "cells", "list", "--url", "x", "--x=a:x"]
    );
    assert_eq!(
        args("cargo run --release -p wharf -- serve --tls-cert c …").unwrap(),
        vec!["serve", "--tls-cert", "c"]
    );
    assert!(args("cargo test -p wharf --test x").is_none());
    assert!(args("systemctl start wharf").is_none());
}

#[test]
fn every_wharf_command_in_the_docs_parses() {
    let all: Vec<Found> = found().into_iter().filter(|f| f.tool == "wharf").collect();
    // The docs hold about eighty; a reader that finds few is broken.
    assert!(
        all.len() >= 60,
        "only {} wharf commands found in the docs",
        all.len()
    );
    let mut per_doc = std::collections::BTreeMap::new();
    for f in &all {
        *per_doc
            .entry(f.place.split(':').next().unwrap())
            .or_insert(0) += 1;
    }
    println!("wharf commands checked per doc: {per_doc:?}");
    let mut failures = Vec::new();
    for f in &all {
        let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args(&f.args)
            .arg("--help")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        // A flag whose value is a file the doc assumes is there (its
        // parser reads it) parsed as far as it can here.
        let missing_file = err.contains("No such file or directory");
        if !out.status.success() && !missing_file {
            let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            failures.push(format!(
                "{}: wharf {}\n    {first}",
                f.place,
                f.args.join(" ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} documented wharf commands do not parse:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

/// Whether `tool` runs here.
fn installed(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn every_client_command_in_the_docs_parses() {
    let all: Vec<Found> = found().into_iter().filter(|f| f.tool != "wharf").collect();
    assert!(
        all.len() >= 10,
        "only {} client commands found in the docs",
        all.len()
    );
    // Where the test command runs, install-deps has put every client on
    // the machine; elsewhere a missing one is skipped unless required.
    let required = std::env::var("WHARF_REQUIRE_CLIENTS").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    let mut checked = std::collections::BTreeMap::new();
    for tool in CLIENTS {
        if !installed(tool) {
            assert!(
                !required,
                "{tool} is not installed (WHARF_REQUIRE_CLIENTS=1)"
            );
            println!("{tool} is not installed here: its doc lines are not checked");
        }
    }
    for f in all.iter().filter(|f| installed(f.tool)) {
        // `--help` right after the subcommand: these tools stop reading
        // flags after a positional argument (`docker tag A B --help` is
        // three arguments; in `podman run IMAGE …` what follows the image
        // is the container's), so at the end it could even run something.
        // Flags after it are still checked.
        let mut args = f.args.clone();
        let at = args
            .iter()
            .position(|a| !a.starts_with('-'))
            .map_or(args.len(), |i| i + 1);
        args.insert(at, "--help".into());
        let out = Command::new(f.tool).args(&args).output().unwrap();
        *checked.entry(f.tool).or_insert(0) += 1;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            failures.push(format!(
                "{}: {} {}\n    {first}",
                f.place,
                f.tool,
                f.args.join(" ")
            ));
        }
    }
    println!("client commands checked: {checked:?}");
    assert!(
        failures.is_empty(),
        "{} documented client commands do not parse:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
