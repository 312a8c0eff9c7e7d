//! Reading the shell blocks of the project's Markdown docs, for the tests
//! that check them (`docs_commands.rs`, `docs_examples.rs`).

/// `lines` (each with its line number) joined across trailing
/// backslashes, as a shell reads continuations: each logical line with the
/// number of the line it starts on, its indentation and a `$ ` prompt
/// dropped.
pub fn join_continued<'a>(
    lines: impl IntoIterator<Item = (usize, &'a str)>,
) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (number, line) in lines {
        let trimmed = line.trim_start();
        let body = trimmed.strip_prefix("$ ").unwrap_or(trimmed);
        let (start, mut joined) = pending.take().unwrap_or((number, String::new()));
        match body.trim_end().strip_suffix('\\') {
            Some(head) => {
                joined.push_str(head);
                joined.push(' ');
                pending = Some((start, joined));
            }
            None => {
                joined.push_str(body);
                out.push((start, joined));
            }
        }
    }
    out
}
