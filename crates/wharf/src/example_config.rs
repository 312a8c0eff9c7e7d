//! The check that `docs/wharf.example.toml` keeps up with the
//! configuration: every key `wharf serve` accepts is in the example, and
//! every key the example shows is one `wharf serve` accepts, with a value
//! of the right type.
//!
//! Owns: that test only. Must never: be compiled into the binary.

use clap::Args as _;

use crate::config::ServeArgs;

/// The example, as shipped.
const EXAMPLE: &str = include_str!("../../../docs/wharf.example.toml");

/// The keys the example shows, with its commented-out settings turned on:
/// a line `# key = value` (at the start of a line, a lower-case key).
fn uncommented() -> String {
    EXAMPLE
        .lines()
        .filter_map(|l| {
            let setting = l.strip_prefix("# ")?;
            let (key, _) = setting.split_once(" = ")?;
            key.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                .then_some(setting)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_example_configuration_names_every_key_serve_accepts() {
    let text = uncommented();
    // Every key shown parses, with its value's type, into the flags'
    // structure (which refuses unknown keys).
    let parsed: ServeArgs = toml::from_str(&text)
        .unwrap_or_else(|e| panic!("docs/wharf.example.toml, settings uncommented: {e}"));
    let shown: toml::Table = toml::from_str(&text).unwrap();
    // Every flag of `wharf serve` but --config itself is shown.
    let command = ServeArgs::augment_args(clap::Command::new("serve"));
    let missing: Vec<String> = command
        .get_arguments()
        .map(|a| a.get_id().as_str().to_string())
        .filter(|id| id != "config" && !shown.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/wharf.example.toml lacks these keys of `wharf serve` (add each, commented, \
         with its meaning and default): {missing:?}"
    );
    // A spot check that values land where they should.
    assert_eq!(parsed.listen, Some("127.0.0.1:5000".parse().unwrap()));
    assert_eq!(parsed.shutdown_grace_secs, Some(30));
}

#[test]
fn the_example_sets_nothing_as_shipped() {
    // Everything is commented out, so copying it changes no default.
    let active: toml::Table = toml::from_str(EXAMPLE).unwrap();
    assert!(active.is_empty(), "active keys: {active:?}");
}
