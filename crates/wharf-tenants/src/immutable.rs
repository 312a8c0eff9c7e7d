//! A tenant's immutable-tag rules: checked when the operator writes them,
//! compiled once per snapshot, matched from memory on the request path.
//!
//! Owns: what a rule may be (two regular expressions of bounded length and
//! compiled size, at most [`MAX_IMMUTABLE_TAG_RULES`] per tenant), how it
//! is anchored (whole tag, whole repository path inside the tenant), and
//! which rule protects a tag (`TenantRules::protecting`).
//!
//! Patterns are matched as ASCII, because tags and repository names are:
//! `\w` is `[0-9A-Za-z_]`, `\d` is `[0-9]`, `(?i)` folds ASCII case. With
//! Unicode classes `[\w][\w.-]{0,127}` (the tag grammar itself) would
//! compile to 6 MB; as ASCII it takes 18 KB. `(?u)` turns Unicode back
//! on, within the same size limit.
//!
//! Must never: compile a pattern on the request path (rules are compiled
//! when a snapshot is built and shared by every request that reads it);
//! accept a pattern the admin API cannot show back as written; or let a
//! stored rule that no longer compiles drop its protection (it then
//! protects every tag of the tenant, and says so in the log, until the
//! operator fixes it: an immutable tag that silently became mutable could
//! not be undone).

use regex::bytes::{Regex, RegexBuilder};
use wharf_core::{ImmutableTagRule, RepoName, Tag};

use crate::validate::clip;

/// The most immutable-tag rules of one tenant.
pub const MAX_IMMUTABLE_TAG_RULES: usize = 32;
/// The longest pattern of a rule, in bytes.
pub const MAX_TAG_RULE_PATTERN_LEN: usize = 256;
/// The largest compiled form of one pattern, in bytes: enough for anything
/// a tag or repository path needs (`v[0-9]+\.[0-9]+\.[0-9]+(-rc[0-9]+)?`
/// takes 1 KB, `[\w][\w.-]{0,127}` 18 KB), small enough that a tenant's
/// rules cannot use much of a node's memory (every node holds every
/// tenant's rules: 32 rules of two patterns, 4 MiB at the very most).
pub const MAX_TAG_RULE_COMPILED_BYTES: usize = 64 * 1024;
/// The most memory one pattern's lazy DFA may use while matching.
const TAG_RULE_DFA_BYTES: usize = 256 * 1024;
/// The deepest nesting of groups and repetitions in a pattern.
const TAG_RULE_NEST_LIMIT: u32 = 32;

/// One rule, compiled.
#[derive(Clone, Debug)]
struct Compiled {
    /// As the operator wrote it: what refusals show.
    rule: ImmutableTagRule,
    tag: Regex,
    /// `None`: every repository of the tenant.
    repository: Option<Regex>,
}

/// The compiled rules of one tenant, in the order they were written (the
/// first that protects a tag is the one a refusal names).
#[derive(Clone, Debug, Default)]
pub(crate) struct TenantRules(Vec<Compiled>);

impl TenantRules {
    /// Compiles `rules` as stored. A rule that no longer compiles (written
    /// behind the directory's back) protects every tag of the tenant.
    pub fn build(tenant: &str, rules: &[ImmutableTagRule]) -> TenantRules {
        TenantRules(
            rules
                .iter()
                .map(|rule| {
                    compile(rule).unwrap_or_else(|e| {
                        tracing::error!(tenant, error = %e,
                            "an immutable-tag rule does not compile; it protects every tag of the tenant until fixed");
                        Compiled {
                            rule: rule.clone(),
                            tag: anchored(".*").expect("matches everything"),
                            repository: None,
                        }
                    })
                })
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first rule that protects `tag` in `repo` (a repository of this
    /// tenant).
    pub fn protecting(&self, repo: &RepoName, tag: &Tag) -> Option<&ImmutableTagRule> {
        let path = path_in_tenant(repo);
        self.0
            .iter()
            .find(|c| covers(c, path) && c.tag.is_match(tag.as_str().as_bytes()))
            .map(|c| &c.rule)
    }

    /// Whether some rule applies to `repo` at all.
    pub fn guards(&self, repo: &RepoName) -> bool {
        let path = path_in_tenant(repo);
        self.0.iter().any(|c| covers(c, path))
    }
}

fn covers(c: &Compiled, path: &str) -> bool {
    c.repository
        .as_ref()
        .is_none_or(|r| r.is_match(path.as_bytes()))
}

/// The repository's path inside its tenant: `team/app` for
/// `acme/team/app`, empty for the bare repository `acme`.
fn path_in_tenant(repo: &RepoName) -> &str {
    let name = repo.as_str();
    name[repo.namespace().len()..].trim_start_matches('/')
}

/// Checks the rules of one tenant as the admin API sends them: at most
/// [`MAX_IMMUTABLE_TAG_RULES`], each pattern valid, at most
/// [`MAX_TAG_RULE_PATTERN_LEN`] bytes and compiling within
/// [`MAX_TAG_RULE_COMPILED_BYTES`].
pub fn check_rules(rules: &[ImmutableTagRule]) -> Result<(), String> {
    if rules.len() > MAX_IMMUTABLE_TAG_RULES {
        return Err(format!(
            "a tenant may have at most {MAX_IMMUTABLE_TAG_RULES} immutable-tag rules, not {}",
            rules.len()
        ));
    }
    for (i, rule) in rules.iter().enumerate() {
        compile(rule).map_err(|e| format!("immutable-tag rule {}: {e}", i + 1))?;
    }
    Ok(())
}

fn compile(rule: &ImmutableTagRule) -> Result<Compiled, String> {
    Ok(Compiled {
        tag: pattern("tag", &rule.tag)?,
        repository: rule
            .repository
            .as_deref()
            .map(|r| pattern("repository", r))
            .transpose()?,
        rule: rule.clone(),
    })
}

/// One pattern, checked and compiled anchored at both ends.
fn pattern(what: &str, p: &str) -> Result<Regex, String> {
    if p.is_empty() {
        return Err(format!(
            "the {what} pattern is empty (leave the repository pattern out to cover every repository)"
        ));
    }
    if p.len() > MAX_TAG_RULE_PATTERN_LEN {
        return Err(format!(
            "the {what} pattern {:?}… is {} bytes; the limit is {MAX_TAG_RULE_PATTERN_LEN}",
            clip(p),
            p.len()
        ));
    }
    if p.chars().any(char::is_control) {
        return Err(format!(
            "the {what} pattern {:?} holds a control character",
            clip(p)
        ));
    }
    let refuse = |e: regex::Error| {
        let reason = match e {
            regex::Error::CompiledTooBig(_) => {
                format!("compiles larger than {MAX_TAG_RULE_COMPILED_BYTES} bytes; simplify it")
            }
            other => other.to_string(),
        };
        format!(
            "the {what} pattern {:?} is not a valid regular expression: {reason}",
            clip(p)
        )
    };
    // Alone first: a pattern such as `a)|(b` would otherwise close the
    // anchoring group and match unanchored.
    builder(p).build().map_err(refuse)?;
    anchored(p).map_err(refuse)
}

fn anchored(p: &str) -> Result<Regex, regex::Error> {
    builder(&format!("^(?:{p})$")).build()
}

fn builder(p: &str) -> RegexBuilder {
    let mut b = RegexBuilder::new(p);
    b.unicode(false)
        .size_limit(MAX_TAG_RULE_COMPILED_BYTES)
        .dfa_size_limit(TAG_RULE_DFA_BYTES)
        .nest_limit(TAG_RULE_NEST_LIMIT);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(tag: &str, repository: Option<&str>) -> ImmutableTagRule {
        ImmutableTagRule {
            tag: tag.into(),
            repository: repository.map(str::to_string),
        }
    }

    fn repo(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    fn tag(s: &str) -> Tag {
        s.parse().unwrap()
    }

    #[test]
    fn patterns_match_the_whole_tag_and_the_whole_path_inside_the_tenant() {
        let rules = TenantRules::build(
            "acme",
            &[
                rule(r"v[0-9]+\.[0-9]+", Some("team/.*")),
                rule("release-.*", None),
            ],
        );
        let protects = |r: &str, t: &str| rules.protecting(&repo(r), &tag(t)).cloned();
        assert_eq!(
            protects("acme/team/app", "v1.2"),
            Some(rule(r"v[0-9]+\.[0-9]+", Some("team/.*")))
        );
        // Anchored: neither a prefix nor a suffix of the tag is enough.
        assert_eq!(protects("acme/team/app", "v1.2-rc1"), None);
        assert_eq!(protects("acme/team/app", "xv1.2"), None);
        // The repository pattern sees the path without the tenant, whole.
        assert_eq!(protects("acme/other/app", "v1.2"), None);
        assert_eq!(protects("acme/myteam/app", "v1.2"), None);
        assert_eq!(protects("acme/team", "v1.2"), None);
        // A rule without a repository pattern covers every repository,
        // the bare `acme` included.
        for r in ["acme/team/app", "acme/other", "acme"] {
            assert_eq!(
                protects(r, "release-7"),
                Some(rule("release-.*", None)),
                "{r}"
            );
        }
        assert_eq!(protects("acme/other", "latest"), None);
        assert!(rules.guards(&repo("acme/other")));
        let team_only = TenantRules::build("acme", &[rule("v.*", Some("team/.*"))]);
        assert!(team_only.guards(&repo("acme/team/app")));
        assert!(!team_only.guards(&repo("acme/app")));
        assert!(TenantRules::default().is_empty());
    }

    #[test]
    fn the_first_matching_rule_is_the_one_named() {
        let rules = TenantRules::build("acme", &[rule("v1", None), rule("v.*", None)]);
        assert_eq!(
            rules.protecting(&repo("acme/app"), &tag("v1")).unwrap().tag,
            "v1"
        );
        assert_eq!(
            rules.protecting(&repo("acme/app"), &tag("v2")).unwrap().tag,
            "v.*"
        );
    }

    #[test]
    fn an_alternation_cannot_escape_the_anchors() {
        let rules = TenantRules::build("acme", &[rule("v1|latest", None)]);
        assert!(rules
            .protecting(&repo("acme/app"), &tag("latest"))
            .is_some());
        assert!(rules.protecting(&repo("acme/app"), &tag("v1x")).is_none());
        assert!(rules
            .protecting(&repo("acme/app"), &tag("xlatest"))
            .is_none());
        assert!(check_rules(&[rule("a)|(b", None)]).is_err());
        assert!(check_rules(&[rule("v1", Some("a)|(.*"))]).is_err());
    }

    #[test]
    fn invalid_rules_are_refused_with_a_reason() {
        let refused = |r: ImmutableTagRule| check_rules(&[r]).unwrap_err();
        let e = refused(rule("v[0-9", None));
        assert!(
            e.contains("rule 1") && e.contains("not a valid regular expression"),
            "{e}"
        );
        let e = refused(rule("v.*", Some("team/(")));
        assert!(
            e.contains("repository pattern") && e.contains("team/("),
            "{e}"
        );
        assert!(refused(rule("", None)).contains("empty"));
        assert!(refused(rule("v.*", Some(""))).contains("empty"));
        let long = "a".repeat(MAX_TAG_RULE_PATTERN_LEN + 1);
        assert!(refused(rule(&long, None)).contains("the limit is 256"));
        assert!(check_rules(&[rule(&"a".repeat(MAX_TAG_RULE_PATTERN_LEN), None)]).is_ok());
        assert!(refused(rule("v1\n", None)).contains("control character"));
        // Short to write, huge to compile.
        for huge in [r"\w{1000}\w{1000}", r"(?u)\w{100}", "(a{100}){100}"] {
            let e = refused(rule(huge, None));
            assert!(e.contains("compiles larger than"), "{huge}: {e}");
        }
        let e = refused(rule(&"(".repeat(40), None));
        assert!(e.contains("not a valid regular expression"), "{e}");

        let many = vec![rule("v.*", None); MAX_IMMUTABLE_TAG_RULES + 1];
        assert!(check_rules(&many).unwrap_err().contains("at most 32"));
        assert!(check_rules(&many[1..]).is_ok());
        // Which rule is wrong is said.
        let e = check_rules(&[rule("ok", None), rule("*", None)]).unwrap_err();
        assert!(e.starts_with("immutable-tag rule 2:"), "{e}");
    }

    #[test]
    fn ordinary_patterns_fit_the_limits() {
        for (t, r) in [
            (r"v[0-9]+\.[0-9]+\.[0-9]+(-rc[0-9]+)?", None),
            (r"(?i)release-\d{4}-\d{2}-\d{2}", Some("team/[a-z0-9-]+")),
            (r"[\w][\w.-]{0,127}", Some(".*")),
            ("latest|stable", Some("(prod|staging)/.*")),
            (r"\w{200}\w{200}", Some("[^/]+/.*")),
        ] {
            assert!(check_rules(&[rule(t, r)]).is_ok(), "{t} {r:?}");
        }
    }

    #[test]
    fn classes_and_case_folding_are_ascii() {
        let rules = TenantRules::build("acme", &[rule(r"(?i)rel-\d+-\w+", Some(r"[^/]+/svc-.*"))]);
        let protects = |r: &str, t: &str| rules.protecting(&repo(r), &tag(t)).is_some();
        assert!(protects("acme/team/svc-a", "REL-42-x_Y"));
        assert!(!protects("acme/team/svc-a", "rel-4a-x"));
        assert!(
            !protects("acme/svc-a", "rel-1-x"),
            "[^/]+/ needs a path component"
        );
    }

    #[test]
    fn a_stored_rule_that_no_longer_compiles_protects_everything() {
        let rules = TenantRules::build("acme", &[rule("v[", Some("nowhere"))]);
        let named = rules.protecting(&repo("acme/any"), &tag("latest")).unwrap();
        assert_eq!(named.tag, "v[");
        assert!(rules.guards(&repo("acme")));
    }
}
