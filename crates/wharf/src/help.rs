//! The command line as this machine sees it: `--help` of `wharf serve` (and
//! `wharf check`, which takes the same flags) shows, beside each limit that
//! is derived from the machine, the value it resolves to here, as
//! docs/operations.md ("Defaults") promises.
//!
//! Owns: reading the machine once before parsing and writing the resolved
//! values into the help text. Must never: change what a flag means or its
//! default (that is `config`'s), or fail: a machine it cannot read gets the
//! same fallbacks `Limits::derive` uses.

use clap::{Command, CommandFactory, FromArgMatches};

use crate::config::{Limits, Machine, ServeArgs};

/// Parses the command line into `T`, with help texts that show this
/// machine's derived defaults (exits on `--help`, `--version` or an error,
/// as clap does).
pub fn parse<T: CommandFactory + FromArgMatches>() -> T {
    let cmd = with_machine_defaults(T::command(), Machine::read());
    let matches = cmd.get_matches();
    T::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// `cmd` with the help of each derived limit of its `serve` and `check`
/// subcommands ending in `on this machine: N` inside its `[default: ...]`.
pub fn with_machine_defaults(cmd: Command, machine: Machine) -> Command {
    let Ok(derived) = Limits::derive(&ServeArgs::default(), machine) else {
        return cmd;
    };
    let values = [
        ("max_connections", derived.max_connections),
        ("max_waiting_connections", derived.max_waiting),
        ("pull_limit", derived.pull),
        ("push_limit", derived.push),
        ("admin_limit", derived.admin),
        ("storage_pool", derived.storage_pool),
        ("metadata_pool", derived.metadata_pool),
    ];
    let note = |id: &str, value: usize| {
        let files = match machine.open_files {
            Some(n) => format!("open-file limit {n}"),
            None => "no open-file limit".to_string(),
        };
        let on_this = match id {
            "max_connections" | "max_waiting_connections" => files,
            _ => format!("{} cores", machine.cores),
        };
        format!("on this machine ({on_this}): {value}")
    };
    let mut cmd = cmd;
    for sub in ["serve", "check"] {
        if cmd.find_subcommand(sub).is_none() {
            continue;
        }
        cmd = cmd.mut_subcommand(sub, |mut s| {
            for (id, value) in values {
                let text = note(id, value);
                s = s.mut_arg(id, |arg| {
                    let short = arg.get_help().map(|h| with_note(&h.to_string(), &text));
                    let long = arg
                        .get_long_help()
                        .map(|h| with_note(&h.to_string(), &text));
                    let arg = match short {
                        Some(h) => arg.help(h),
                        None => arg,
                    };
                    match long {
                        Some(h) => arg.long_help(h),
                        None => arg,
                    }
                });
            }
            s
        });
    }
    cmd
}

/// `help` with `; text` added inside its closing `[default: ...]`, or
/// `[text]` appended when it has none.
fn with_note(help: &str, text: &str) -> String {
    let trimmed = help.trim_end();
    match (trimmed.strip_suffix(']'), trimmed.rfind("[default:")) {
        (Some(head), Some(_)) => format!("{head}; {text}]"),
        _ => format!("{trimmed} [{text}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_note_goes_inside_the_default() {
        assert_eq!(
            with_note(
                "Pulls at once [default: 128 per core]",
                "on this machine: 256"
            ),
            "Pulls at once [default: 128 per core; on this machine: 256]"
        );
        assert_eq!(with_note("Pulls", "x"), "Pulls [x]");
    }
}
