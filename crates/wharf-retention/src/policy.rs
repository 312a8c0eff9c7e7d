//! Retention policies: the rules as a tenant writes them ([`Policy`], JSON)
//! and as the planner uses them ([`CompiledPolicy`]).
//!
//! Owns: the grammar and the limits of a rule, what each field means, and
//! the errors that say why a rule is refused.
//!
//! Must never: accept a rule whose meaning is unclear. A misspelt field, an
//! empty or unparsable pattern, a zero or absurd number, or a rule that mixes
//! a deletion with keep conditions is refused here, with the rule's index and
//! the field, so that no policy deletes something its author did not mean.

use std::fmt;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

/// The most rules one policy may hold.
pub const MAX_RULES: usize = 64;
/// The longest pattern (`repository` or `tag`) accepted, in bytes.
pub const MAX_PATTERN_LEN: usize = 1024;
/// The most memory one compiled pattern may take, in bytes: bounds what a
/// pattern like `(a{100}){100}` can cost.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// The largest number of days any field accepts (about 100 years).
pub const MAX_DAYS: u32 = 36_500;
/// The largest `keep_last` accepted.
pub const MAX_KEEP_LAST: u32 = 100_000;

/// Seconds in a day: every `*_days` field counts whole days of 86,400 s.
pub(crate) const DAY_SECS: u64 = 86_400;

/// A tenant's retention policy: rules that combine with OR.
///
/// No rule, or no policy at all, deletes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The rules, referred to by their index (from 0) in every reason.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// One retention rule. Its conditions combine with AND.
///
/// A rule is one of two kinds, by its fields:
///
/// - a **keep rule** has at least one of `tag`, `keep_last`,
///   `keep_pulled_within_days`: it keeps the tags of the repositories it
///   covers that meet all of its conditions, and (if it has only
///   `keep_pulled_within_days`) the untagged manifests pulled recently;
/// - an **untagged rule** has `untagged_older_than_days` (and at most
///   `repository`): it deletes the untagged manifests of the repositories it
///   covers that were pushed longer ago than that.
///
/// See the crate documentation for the exact semantics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Which repositories the rule covers: a regular expression that must
    /// match the whole repository path inside the tenant (`app/web` for
    /// `acme/app/web`). Absent: every repository of the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Keep only tags whose whole name matches this regular expression.
    /// It also narrows the tags `keep_last` counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Keep the N most recently pushed tags (among those `tag` matches) of
    /// each covered repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Keep tags whose manifest was pulled within this many days; in a rule
    /// with no other keep condition, also untagged manifests pulled within
    /// it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_pulled_within_days: Option<u32>,
    /// Delete untagged manifests pushed more than this many days ago.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untagged_older_than_days: Option<u32>,
}

/// Why a policy is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// More rules than [`MAX_RULES`].
    #[error("a policy holds at most {max} rules; this one has {count}")]
    TooManyRules {
        /// How many rules the policy has.
        count: usize,
        /// [`MAX_RULES`].
        max: usize,
    },
    /// One rule is refused.
    #[error("rule {index}: {error}")]
    Rule {
        /// The rule's index in [`Policy::rules`], from 0.
        index: usize,
        /// What is wrong with it.
        error: RuleError,
    },
}

/// Why one rule is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// Neither a keep condition nor `untagged_older_than_days`.
    #[error(
        "the rule has no condition: give at least one of tag, keep_last, \
         keep_pulled_within_days or untagged_older_than_days (repository alone \
         only says where a rule applies)"
    )]
    NoCondition,
    /// `untagged_older_than_days` together with a keep condition.
    #[error(
        "untagged_older_than_days deletes untagged manifests and cannot share a \
         rule with {field}, which keeps; write them as two rules (a keep from \
         any rule always wins over a deletion)"
    )]
    UntaggedWithKeep {
        /// The keep condition found beside it.
        field: &'static str,
    },
    /// An empty pattern (omit the field to match everything).
    #[error("{field}: the pattern is empty; omit the field to match everything")]
    EmptyPattern {
        /// `repository` or `tag`.
        field: &'static str,
    },
    /// A pattern longer than [`MAX_PATTERN_LEN`].
    #[error("{field}: the pattern is {len} bytes long; at most {max} are allowed")]
    PatternTooLong {
        /// `repository` or `tag`.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// [`MAX_PATTERN_LEN`].
        max: usize,
    },
    /// A pattern that does not compile (bad syntax, or bigger than
    /// [`REGEX_SIZE_LIMIT`] once compiled).
    #[error("{field}: not a usable regular expression: {message}")]
    BadPattern {
        /// `repository` or `tag`.
        field: &'static str,
        /// The regex engine's explanation.
        message: String,
    },
    /// A number outside its range.
    #[error("{field} is {value}; it must be between {min} and {max}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value given.
        value: u32,
        /// The smallest allowed.
        min: u32,
        /// The largest allowed.
        max: u32,
    },
}

impl Policy {
    /// Checks every rule and compiles its patterns.
    pub fn compile(&self) -> Result<CompiledPolicy, PolicyError> {
        if self.rules.len() > MAX_RULES {
            return Err(PolicyError::TooManyRules {
                count: self.rules.len(),
                max: MAX_RULES,
            });
        }
        let rules = self
            .rules
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                CompiledRule::new(rule).map_err(|error| PolicyError::Rule { index, error })
            })
            .collect::<Result<_, _>>()?;
        Ok(CompiledPolicy { rules })
    }
}

impl fmt::Display for Rule {
    /// The rule's fields in one line, `repository app/.*, keep_last 5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(p) = &self.repository {
            parts.push(format!("repository {p}"));
        }
        if let Some(p) = &self.tag {
            parts.push(format!("tag {p}"));
        }
        if let Some(n) = self.keep_last {
            parts.push(format!("keep_last {n}"));
        }
        if let Some(d) = self.keep_pulled_within_days {
            parts.push(format!("keep_pulled_within_days {d}"));
        }
        if let Some(d) = self.untagged_older_than_days {
            parts.push(format!("untagged_older_than_days {d}"));
        }
        f.write_str(&parts.join(", "))
    }
}

/// A checked policy, ready to plan with ([`CompiledPolicy::plan`]).
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub(crate) rules: Vec<CompiledRule>,
}

impl CompiledPolicy {
    /// The rules as written, in order.
    pub fn rules(&self) -> impl ExactSizeIterator<Item = &Rule> {
        self.rules.iter().map(|r| &r.source)
    }
}

/// What a rule does, decided once from its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Keeps tags (and, if `pulled_only`, recently pulled untagged
    /// manifests).
    Keep { pulled_only: bool },
    /// Deletes untagged manifests older than this many seconds.
    Untagged { older_than_secs: u64 },
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledRule {
    pub(crate) source: Rule,
    pub(crate) kind: Kind,
    repository: Option<Regex>,
    pub(crate) tag: Option<Regex>,
}

impl CompiledRule {
    fn new(rule: &Rule) -> Result<CompiledRule, RuleError> {
        let repository = rule
            .repository
            .as_deref()
            .map(|p| compile_pattern("repository", p))
            .transpose()?;
        let tag = rule
            .tag
            .as_deref()
            .map(|p| compile_pattern("tag", p))
            .transpose()?;
        if let Some(n) = rule.keep_last {
            check_range("keep_last", n, 1, MAX_KEEP_LAST)?;
        }
        if let Some(d) = rule.keep_pulled_within_days {
            check_range("keep_pulled_within_days", d, 1, MAX_DAYS)?;
        }
        let keep_field = [
            ("tag", rule.tag.is_some()),
            ("keep_last", rule.keep_last.is_some()),
            (
                "keep_pulled_within_days",
                rule.keep_pulled_within_days.is_some(),
            ),
        ]
        .into_iter()
        .find_map(|(field, present)| present.then_some(field));
        let kind = match (rule.untagged_older_than_days, keep_field) {
            (Some(_), Some(field)) => return Err(RuleError::UntaggedWithKeep { field }),
            (Some(days), None) => {
                // At least a day: an index's children are pushed, untagged,
                // before the index itself; a zero delay could condemn them
                // while the push is still under way.
                check_range("untagged_older_than_days", days, 1, MAX_DAYS)?;
                Kind::Untagged {
                    older_than_secs: u64::from(days) * DAY_SECS,
                }
            }
            (None, Some(_)) => Kind::Keep {
                pulled_only: rule.tag.is_none() && rule.keep_last.is_none(),
            },
            (None, None) => return Err(RuleError::NoCondition),
        };
        Ok(CompiledRule {
            source: rule.clone(),
            kind,
            repository,
            tag,
        })
    }

    /// Whether the rule covers the repository at `path` (inside the tenant).
    pub(crate) fn covers(&self, path: &str) -> bool {
        self.repository.as_ref().is_none_or(|r| r.is_match(path))
    }
}

fn check_range(field: &'static str, value: u32, min: u32, max: u32) -> Result<(), RuleError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(RuleError::OutOfRange {
            field,
            value,
            min,
            max,
        })
    }
}

/// Compiles `pattern` anchored at both ends.
///
/// The pattern is first compiled alone: only a pattern that parses by itself
/// is wrapped in `^(?:…)$`, so that one such as `a)|(b` cannot close the
/// group and escape the anchors.
fn compile_pattern(field: &'static str, pattern: &str) -> Result<Regex, RuleError> {
    if pattern.is_empty() {
        return Err(RuleError::EmptyPattern { field });
    }
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(RuleError::PatternTooLong {
            field,
            len: pattern.len(),
            max: MAX_PATTERN_LEN,
        });
    }
    let build = |p: &str| {
        RegexBuilder::new(p)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| RuleError::BadPattern {
                field,
                message: e.to_string(),
            })
    };
    build(pattern)?;
    build(&format!("^(?:{pattern})$"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule_error(rule: Rule) -> RuleError {
        match (Policy { rules: vec![rule] }).compile() {
            Err(PolicyError::Rule { index: 0, error }) => error,
            other => panic!("expected a rule error, got {other:?}"),
        }
    }

    #[test]
    fn a_rule_needs_a_condition() {
        let e = rule_error(Rule {
            repository: Some("app".into()),
            ..Rule::default()
        });
        assert_eq!(e, RuleError::NoCondition);
    }

    #[test]
    fn untagged_cannot_share_a_rule_with_a_keep() {
        for (rule, field) in [
            (
                Rule {
                    tag: Some("v.*".into()),
                    ..Rule::default()
                },
                "tag",
            ),
            (
                Rule {
                    keep_last: Some(3),
                    ..Rule::default()
                },
                "keep_last",
            ),
            (
                Rule {
                    keep_pulled_within_days: Some(3),
                    ..Rule::default()
                },
                "keep_pulled_within_days",
            ),
        ] {
            let e = rule_error(Rule {
                untagged_older_than_days: Some(30),
                ..rule
            });
            assert_eq!(e, RuleError::UntaggedWithKeep { field });
        }
    }

    #[test]
    fn numbers_out_of_range_are_refused() {
        let cases = [
            (
                Rule {
                    keep_last: Some(0),
                    ..Rule::default()
                },
                "keep_last",
                0,
            ),
            (
                Rule {
                    keep_last: Some(MAX_KEEP_LAST + 1),
                    ..Rule::default()
                },
                "keep_last",
                MAX_KEEP_LAST + 1,
            ),
            (
                Rule {
                    keep_pulled_within_days: Some(0),
                    ..Rule::default()
                },
                "keep_pulled_within_days",
                0,
            ),
            (
                Rule {
                    untagged_older_than_days: Some(0),
                    ..Rule::default()
                },
                "untagged_older_than_days",
                0,
            ),
            (
                Rule {
                    untagged_older_than_days: Some(MAX_DAYS + 1),
                    ..Rule::default()
                },
                "untagged_older_than_days",
                MAX_DAYS + 1,
            ),
        ];
        for (rule, field, value) in cases {
            match rule_error(rule) {
                RuleError::OutOfRange {
                    field: f, value: v, ..
                } => assert_eq!((f, v), (field, value)),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        let tag = |p: &str| {
            rule_error(Rule {
                tag: Some(p.into()),
                ..Rule::default()
            })
        };
        assert!(matches!(
            tag("v(1"),
            RuleError::BadPattern { field: "tag", .. }
        ));
        assert!(matches!(tag(""), RuleError::EmptyPattern { field: "tag" }));
        // Would escape the anchors if wrapped without being parsed alone.
        assert!(matches!(tag("a)|(b"), RuleError::BadPattern { .. }));
        assert!(matches!(
            tag(&"a".repeat(MAX_PATTERN_LEN + 1)),
            RuleError::PatternTooLong { len, .. } if len == MAX_PATTERN_LEN + 1
        ));
        // Short to write, huge once compiled.
        match tag("(\\w{100}){100}") {
            RuleError::BadPattern { message, .. } => {
                assert!(message.contains("size limit"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        let e = rule_error(Rule {
            repository: Some("[".into()),
            keep_last: Some(1),
            ..Rule::default()
        });
        assert!(matches!(
            e,
            RuleError::BadPattern {
                field: "repository",
                ..
            }
        ));
    }

    #[test]
    fn too_many_rules_are_refused() {
        let rule = Rule {
            keep_last: Some(1),
            ..Rule::default()
        };
        let e = Policy {
            rules: vec![rule; MAX_RULES + 1],
        }
        .compile()
        .unwrap_err();
        assert_eq!(
            e,
            PolicyError::TooManyRules {
                count: MAX_RULES + 1,
                max: MAX_RULES
            }
        );
    }

    #[test]
    fn errors_name_the_rule_and_field() {
        let policy = Policy {
            rules: vec![
                Rule {
                    keep_last: Some(5),
                    ..Rule::default()
                },
                Rule {
                    tag: Some("v(".into()),
                    ..Rule::default()
                },
            ],
        };
        let text = policy.compile().unwrap_err().to_string();
        assert!(
            text.starts_with("rule 1: tag: not a usable regular expression"),
            "{text}"
        );
    }

    #[test]
    fn patterns_match_whole_names_only() {
        let policy = Policy {
            rules: vec![Rule {
                repository: Some("app|web".into()),
                tag: Some("v[0-9]+".into()),
                ..Rule::default()
            }],
        }
        .compile()
        .unwrap();
        let rule = &policy.rules[0];
        assert!(rule.covers("app") && rule.covers("web"));
        assert!(!rule.covers("app/web") && !rule.covers("myapp"));
        let tag = rule.tag.as_ref().unwrap();
        assert!(tag.is_match("v12"));
        assert!(!tag.is_match("v12-rc") && !tag.is_match("xv1"));
    }

    #[test]
    fn json_round_trips_and_refuses_unknown_fields() {
        let text =
            r#"{"rules":[{"repository":"app/.*","keep_last":5},{"untagged_older_than_days":30}]}"#;
        let policy: Policy = serde_json::from_str(text).unwrap();
        assert_eq!(policy.rules[0].keep_last, Some(5));
        assert_eq!(serde_json::to_string(&policy).unwrap(), text);
        policy.compile().unwrap();
        // A typo must not silently become "no condition here".
        let typo = r#"{"rules":[{"keep_lst":5}]}"#;
        let e = serde_json::from_str::<Policy>(typo).unwrap_err();
        assert!(e.to_string().contains("keep_lst"), "{e}");
        let empty: Policy = serde_json::from_str("{}").unwrap();
        assert!(empty.compile().unwrap().rules().len() == 0);
    }

    #[test]
    fn rules_display_their_fields() {
        let rule = Rule {
            repository: Some("app/.*".into()),
            tag: Some("v.*".into()),
            keep_last: Some(5),
            ..Rule::default()
        };
        assert_eq!(rule.to_string(), "repository app/.*, tag v.*, keep_last 5");
    }
}
