//! A reader of the Prometheus text format, just enough for `scrape`: sample
//! lines with a metric name, optional labels (values with `\\`, `\"` and
//! `\n` escapes) and a value (numbers, `NaN`, `+Inf`, `-Inf`), an optional
//! timestamp; comment and blank lines are skipped.
//!
//! Owns: turning text into [`Sample`]s. Must never: interpret what a metric
//! means (that is `scrape`'s), or accept a malformed line silently: a node
//! that writes garbage is a failed scrape, not a zero.

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The metric name.
    pub name: String,
    /// Its labels, in the order written.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A line that is not a sample, with its 1-based number.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("metrics line {line}: {what}")]
pub struct ParseError {
    /// The line number.
    pub line: usize,
    /// What is wrong.
    pub what: String,
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Every sample in `text`.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(parse_line(line).map_err(|what| ParseError { line: i + 1, what })?);
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let mut chars = line.char_indices().peekable();
    match chars.peek() {
        Some(&(_, c)) if is_name_start(c) => {}
        _ => return Err("expected a metric name".into()),
    }
    let mut end = line.len();
    for (i, c) in line.char_indices() {
        if !is_name_char(c) {
            end = i;
            break;
        }
    }
    let name = line[..end].to_string();
    let mut rest = &line[end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let (ls, after) = parse_labels(r)?;
        labels = ls;
        rest = after;
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("expected a value")?;
    let value = parse_value(value)?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if fields.next().is_some() {
        return Err("unexpected text after the value".into());
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// Labels after the `{`, and the text after the closing `}`.
/// Label pairs, in the order written.
type Labels = Vec<(String, String)>;

fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(r) = s.strip_prefix('}') {
            return Ok((labels, r));
        }
        let end = s
            .find(|c: char| !is_name_char(c))
            .ok_or("unterminated labels")?;
        if end == 0 {
            return Err(format!("expected a label name at {s:?}"));
        }
        let key = s[..end].to_string();
        s = s[end..].trim_start();
        s = s.strip_prefix('=').ok_or("expected = after a label name")?;
        s = s.trim_start();
        s = s.strip_prefix('"').ok_or("expected a quoted label value")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let close = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => {
                        return Err(format!(
                            "bad escape \\{}",
                            other.map(|x| x.1).unwrap_or(' ')
                        ))
                    }
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((key, value));
        s = s[close + 1..].trim_start();
        if let Some(r) = s.strip_prefix(',') {
            s = r;
        } else if !s.starts_with('}') {
            return Err("expected , or } after a label".into());
        }
    }
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => v.parse::<f64>().map_err(|_| format!("bad value {v:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_and_labels() {
        let text = "# HELP wharf_tenant_requests_total Requests.\n\
                    # TYPE wharf_tenant_requests_total counter\n\
                    wharf_tenant_requests_total{tenant=\"acme\",class=\"pull\"} 1027\n\
                    \n\
                    wharf_up 1\n\
                    wharf_dependency_pool_size{dependency=\"metadata\"} 16 1700000000000\n";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "wharf_tenant_requests_total");
        assert_eq!(s[0].label("tenant"), Some("acme"));
        assert_eq!(s[0].label("class"), Some("pull"));
        assert_eq!(s[0].value, 1027.0);
        assert_eq!(s[1].name, "wharf_up");
        assert!(s[1].labels.is_empty());
        assert_eq!(s[2].value, 16.0);
    }

    #[test]
    fn escaped_quotes_backslashes_and_newlines_in_label_values() {
        let s = parse(r#"m{a="q\"uo\\te",b="x\ny", c = "}" } 2.5e3"#).unwrap();
        assert_eq!(s[0].label("a"), Some("q\"uo\\te"));
        assert_eq!(s[0].label("b"), Some("x\ny"));
        assert_eq!(s[0].label("c"), Some("}"));
        assert_eq!(s[0].value, 2500.0);
    }

    #[test]
    fn special_values_and_trailing_comma() {
        let s = parse("a{x=\"1\",} +Inf\nb -Inf\nc NaN\n").unwrap();
        assert_eq!(s[0].value, f64::INFINITY);
        assert_eq!(s[1].value, f64::NEG_INFINITY);
        assert!(s[2].value.is_nan());
    }

    #[test]
    fn malformed_lines_are_errors_with_their_number() {
        for bad in [
            "ok 1\nm{a=\"1\" 2",
            "ok 1\nm{a=1} 2",
            "ok 1\nm one",
            "ok 1\nm{a=\"x\\q\"} 1",
            "ok 1\n{a=\"1\"} 1",
            "ok 1\nm",
            "ok 1\nm 1 2 3",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.line, 2, "{bad:?}: {e}");
        }
    }
}
