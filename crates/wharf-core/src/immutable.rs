//! Immutable tags as the registry sees them: which rule, if any, forbids
//! moving or deleting a tag.
//!
//! Owns: the [`ImmutableTagRule`] value (a rule as the operator wrote it,
//! shown in every refusal), the [`ImmutableTagSource`] lookup the registry
//! consults when a manifest is put under a tag or a tag or manifest is
//! deleted, and the [`ImmutableRefusal`] that names the rule to the client.
//! Where rules come from (the tenant directory, which compiles them) and
//! when a request is refused (the registry) are not its business.
//!
//! Must never: do I/O or compile a pattern. A lookup is answered from
//! memory, on the request path, so it must be cheap and must not block.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::names::{RepoName, Tag};

/// One immutable-tag rule: tags matching `tag` in the repositories whose
/// path inside the tenant matches `repository` (every repository of the
/// tenant when `None`) cannot be moved or deleted once pushed. Both are
/// regular expressions matched against the whole text (anchored).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImmutableTagRule {
    /// A regular expression over the whole tag (`v[0-9]+\..*`).
    pub tag: String,
    /// A regular expression over the whole repository path inside the
    /// tenant (`team/.*` for `acme/team/…`); `None`: every repository.
    #[serde(default)]
    pub repository: Option<String>,
}

impl fmt::Display for ImmutableTagRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repository {
            Some(r) => write!(f, "tag `{}` in repositories `{r}`", self.tag),
            None => write!(f, "tag `{}` in every repository", self.tag),
        }
    }
}

/// Where the registry looks immutable-tag rules up.
pub trait ImmutableTagSource: Send + Sync + 'static {
    /// The first rule of `repo`'s tenant (its namespace) that protects
    /// `tag` in `repo`; `None` when no rule does.
    fn protecting(&self, repo: &RepoName, tag: &Tag) -> Option<ImmutableTagRule>;

    /// Whether some rule of `repo`'s tenant applies to `repo` at all
    /// (whatever the tag). `false` spares a delete by digest the work of
    /// looking for protected tags that point at the manifest.
    fn guards(&self, repo: &RepoName) -> bool;
}

/// What an immutable-tag rule refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImmutableAction {
    /// A manifest put under the tag whose digest differs from the tag's.
    Move,
    /// A delete of the tag.
    DeleteTag,
    /// A delete, by digest, of the manifest the tag points at.
    DeleteManifest,
}

impl ImmutableAction {
    /// As it appears in the error's `detail`.
    pub fn as_str(self) -> &'static str {
        match self {
            ImmutableAction::Move => "move",
            ImmutableAction::DeleteTag => "delete-tag",
            ImmutableAction::DeleteManifest => "delete-manifest",
        }
    }
}

/// A request refused because a tag is immutable: which tag, where it
/// points, what was asked and the rule that forbids it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImmutableRefusal {
    pub repository: RepoName,
    pub tag: Tag,
    /// What the tag points at (and keeps pointing at).
    pub digest: Digest,
    pub action: ImmutableAction,
    pub rule: ImmutableTagRule,
}

impl fmt::Display for ImmutableRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (repo, tag, digest) = (&self.repository, self.tag.as_str(), &self.digest);
        match self.action {
            ImmutableAction::Move => {
                write!(
                    f,
                    "tag {tag} of {repo} points at {digest} and cannot be moved"
                )
            }
            ImmutableAction::DeleteTag => {
                write!(
                    f,
                    "tag {tag} of {repo} points at {digest} and cannot be deleted"
                )
            }
            ImmutableAction::DeleteManifest => write!(
                f,
                "manifest {digest} of {repo} cannot be deleted: tag {tag} points at it"
            ),
        }?;
        write!(
            f,
            "; the tag is immutable under the tenant's rule {}, which only the registry operator can lift",
            self.rule
        )
    }
}

impl ImmutableRefusal {
    /// The error's `detail` object.
    pub fn detail(&self) -> serde_json::Value {
        serde_json::json!({
            "repository": self.repository.to_string(),
            "tag": self.tag.as_str(),
            "digest": self.digest.to_string(),
            "action": self.action.as_str(),
            "rule": {"tag": self.rule.tag, "repository": self.rule.repository},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RegistryError;

    fn refusal(action: ImmutableAction, repository: Option<&str>) -> RegistryError {
        RegistryError::TagImmutable(Box::new(ImmutableRefusal {
            repository: "acme/team/app".parse().unwrap(),
            tag: "v1.0".parse().unwrap(),
            digest: Digest::sha256_of(b"m"),
            action,
            rule: ImmutableTagRule {
                tag: r"v[0-9]+\..*".into(),
                repository: repository.map(str::to_string),
            },
        }))
    }

    #[test]
    fn the_refusal_names_the_rule_and_carries_it_in_its_detail() {
        let d = Digest::sha256_of(b"m").to_string();
        for (action, says) in [
            (ImmutableAction::Move, "cannot be moved"),
            (ImmutableAction::DeleteTag, "cannot be deleted"),
            (ImmutableAction::DeleteManifest, "tag v1.0 points at it"),
        ] {
            let err = refusal(action, Some("team/.*"));
            let body = err.to_json();
            let entry = &body["errors"][0];
            assert_eq!(entry["code"], "DENIED");
            let message = entry["message"].as_str().unwrap();
            for part in [says, r"`v[0-9]+\..*`", "`team/.*`", "acme/team/app", &d] {
                assert!(message.contains(part), "{part:?} not in {message}");
            }
            assert_eq!(entry["detail"]["action"], action.as_str());
            assert_eq!(entry["detail"]["tag"], "v1.0");
            assert_eq!(entry["detail"]["digest"], d);
            assert_eq!(entry["detail"]["repository"], "acme/team/app");
            assert_eq!(entry["detail"]["rule"]["tag"], r"v[0-9]+\..*");
            assert_eq!(entry["detail"]["rule"]["repository"], "team/.*");
        }
        let every = refusal(ImmutableAction::Move, None).to_json();
        assert!(every["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("in every repository"));
        assert!(every["errors"][0]["detail"]["rule"]["repository"].is_null());
    }

    #[test]
    fn rules_read_json_with_an_optional_repository() {
        let r: ImmutableTagRule = serde_json::from_str(r#"{"tag":"v.*"}"#).unwrap();
        assert_eq!(r.repository, None);
        let r: ImmutableTagRule =
            serde_json::from_str(r#"{"tag":"v.*","repository":"team/.*"}"#).unwrap();
        assert_eq!(r.repository.as_deref(), Some("team/.*"));
        assert!(serde_json::from_str::<ImmutableTagRule>(r#"{"tag":"v","repo":"x"}"#).is_err());
        assert!(serde_json::from_str::<ImmutableTagRule>(r#"{"repository":"x"}"#).is_err());
    }
}
