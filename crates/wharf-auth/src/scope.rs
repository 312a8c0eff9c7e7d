//! The Docker token `scope` parameter: `repository:acme/app:pull,push`.
//!
//! Owns: parsing and printing scopes (the grammar of the distribution
//! project's "Token Scope Documentation"), the [`Access`] model that is also
//! the `access` claim of a token, the [`Action`]s a token may grant, and the
//! intersection of what a client asks for with what it may have.
//!
//! Must never: widen access. A name that is not a valid repository name
//! (`ACME/app`, `acme/../other`, `acme%2fapp`, `host:5000/app`) is an error,
//! never normalised into some other repository; an action this module does not
//! know is dropped (narrowing), never read as another. Resource types other
//! than `repository` and `registry` are kept so that they print back, but
//! they grant nothing.
//!
//! The resource class (`repository(plugin)`) is deprecated by the spec and
//! "considered equal" to the bare type, so it is parsed and dropped.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use wharf_core::RepoName;

/// The longest `scope` value accepted, in bytes, summed over all the `scope`
/// parameters of one request (the distribution grammar sets no limit; every
/// input to Wharf is bounded).
pub const MAX_SCOPE_LEN: usize = 4096;
/// The most resource scopes accepted in one request or token. Docker asks
/// for one to three (a push with cross-repository mounts); sixteen entries of
/// the longest names still make a token under `token::MAX_TOKEN_LEN`.
pub const MAX_SCOPE_ENTRIES: usize = 16;
/// The longest name accepted for a resource type Wharf does not know.
const MAX_OTHER_NAME_LEN: usize = 255;

/// Why a scope string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("scope is longer than {MAX_SCOPE_LEN} bytes")]
    TooLong,
    #[error("scope names more than {MAX_SCOPE_ENTRIES} resources")]
    TooMany,
    #[error("scope entry {0:?} is not of the form type:name:actions")]
    Malformed(String),
    #[error("resource type {0:?} does not match [a-z0-9]+ with an optional (class)")]
    ResourceType(String),
    #[error("{resource_type} name {name:?} is invalid: {reason}")]
    Name {
        resource_type: String,
        name: String,
        reason: String,
    },
    #[error("action {0:?} does not match [a-z*]+")]
    Action(String),
}

/// Something a token lets its bearer do to a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Read: manifests, blobs, tags, referrers.
    Pull,
    /// Write: uploads, manifest and tag puts.
    Push,
    /// Delete manifests, tags and blobs.
    Delete,
    /// `*`: every action on the resource (the registry's catalog is guarded
    /// by `registry:catalog:*`).
    All,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
            Action::All => "*",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Action::Pull => 1,
            Action::Push => 2,
            Action::Delete => 4,
            Action::All => 8,
        }
    }

    /// Reads one action of a scope or a token. `Ok(None)` is a well-formed
    /// action Wharf does not know (such as `metadata_read`): the caller drops
    /// it, which can only narrow what is granted.
    fn parse_lenient(s: &str) -> Result<Option<Action>, ScopeError> {
        match s {
            "pull" => Ok(Some(Action::Pull)),
            "push" => Ok(Some(Action::Push)),
            "delete" => Ok(Some(Action::Delete)),
            "*" => Ok(Some(Action::All)),
            _ if !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') => {
                Ok(None)
            }
            _ => Err(ScopeError::Action(s.to_string())),
        }
    }
}

impl FromStr for Action {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::parse_lenient(s)?.ok_or_else(|| ScopeError::Action(s.to_string()))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`Action`]s. Holding `*` means holding every action, so a set
/// with `*` is kept as `*` alone.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Actions(u8);

/// The concrete actions, in the order they print.
const CONCRETE: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

impl Actions {
    /// No action at all.
    pub const NONE: Actions = Actions(0);
    /// `*`.
    pub const ALL: Actions = Actions(8);

    pub fn only(action: Action) -> Actions {
        Actions::NONE.with(action)
    }

    pub fn with(mut self, action: Action) -> Actions {
        self.insert(action);
        self
    }

    pub fn insert(&mut self, action: Action) {
        if action == Action::All {
            self.0 = Action::All.bit();
        } else if !self.is_all() {
            self.0 |= action.bit();
        }
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn is_all(self) -> bool {
        self.0 & Action::All.bit() != 0
    }

    /// Whether this set permits `action` (`*` permits everything; only `*`
    /// permits `*`).
    pub fn covers(self, action: Action) -> bool {
        self.is_all() || self.0 & action.bit() != 0
    }

    pub fn union(self, other: Actions) -> Actions {
        if self.is_all() || other.is_all() {
            Actions::ALL
        } else {
            Actions(self.0 | other.0)
        }
    }

    /// What of this (requested) set `granted` allows: `*` requested of a
    /// grant without `*` yields the grant's concrete actions.
    pub fn intersect(self, granted: Actions) -> Actions {
        if granted.is_all() {
            return self;
        }
        CONCRETE
            .into_iter()
            .filter(|&a| self.covers(a) && granted.covers(a))
            .collect()
    }

    /// The actions in print order (`*` alone when the set holds it).
    pub fn iter(self) -> impl Iterator<Item = Action> {
        let all = self.is_all();
        let concrete = CONCRETE
            .into_iter()
            .filter(move |&a| !all && self.covers(a));
        all.then_some(Action::All).into_iter().chain(concrete)
    }
}

impl FromIterator<Action> for Actions {
    fn from_iter<I: IntoIterator<Item = Action>>(iter: I) -> Self {
        let mut set = Actions::NONE;
        for a in iter {
            set.insert(a);
        }
        set
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(a.as_str())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{self}]")
    }
}

/// What an [`Access`] is about, each kind holding a name that is valid for it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// `repository:<name>`: one repository; its tenant is
    /// [`RepoName::namespace`].
    Repository(RepoName),
    /// `registry:<name>`: registry-wide resources; `catalog` is the one Wharf
    /// uses.
    Registry(String),
    /// A type Wharf does not know, kept to print back; grants nothing.
    Other { resource_type: String, name: String },
}

impl Resource {
    /// `registry:catalog`, which guards `GET /v2/_catalog`.
    pub fn catalog() -> Resource {
        Resource::Registry("catalog".to_string())
    }

    /// Checks `name` against what `resource_type` allows. The resource class
    /// (`repository(plugin)`) is dropped.
    pub fn new(resource_type: &str, name: &str) -> Result<Resource, ScopeError> {
        let bare = parse_type(resource_type)?;
        let bad = |reason: String| ScopeError::Name {
            resource_type: bare.to_string(),
            name: name.to_string(),
            reason,
        };
        match bare {
            "repository" => name
                .parse::<RepoName>()
                .map(Resource::Repository)
                .map_err(|e| bad(e.to_string())),
            "registry" => {
                let ok = !name.is_empty()
                    && name.len() <= 64
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
                if ok {
                    Ok(Resource::Registry(name.to_string()))
                } else {
                    Err(bad("registry resource names match [a-z0-9]{1,64}".into()))
                }
            }
            other => {
                // Kept only to print back, so only characters that can never
                // break a quoted header value or the scope grammar.
                let ok = !name.is_empty()
                    && name.len() <= MAX_OTHER_NAME_LEN
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b','));
                if ok {
                    Ok(Resource::Other {
                        resource_type: other.to_string(),
                        name: name.to_string(),
                    })
                } else {
                    Err(bad(
                        "must be 1 to 255 visible ASCII characters, without '\"', '\\' or ','"
                            .into(),
                    ))
                }
            }
        }
    }

    pub fn resource_type(&self) -> &str {
        match self {
            Resource::Repository(_) => "repository",
            Resource::Registry(_) => "registry",
            Resource::Other { resource_type, .. } => resource_type,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Resource::Repository(r) => r.as_str(),
            Resource::Registry(n) => n,
            Resource::Other { name, .. } => name,
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.resource_type(), self.name())
    }
}

/// `resourcetype := [a-z0-9]+ [ '(' [a-z0-9]+ ')' ]`; returns the bare type.
fn parse_type(s: &str) -> Result<&str, ScopeError> {
    let word = |w: &str| {
        !w.is_empty()
            && w.len() <= 64
            && w.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    let (bare, class) = match s.split_once('(') {
        Some((bare, rest)) => (bare, rest.strip_suffix(')')),
        None => (s, Some("x")),
    };
    match class {
        Some(class) if word(bare) && word(class) => Ok(bare),
        _ => Err(ScopeError::ResourceType(s.to_string())),
    }
}

/// One resource scope: a resource and the actions on it. This is both an
/// entry of the `scope` parameter and an entry of a token's `access` claim,
/// whose JSON is `{"type": …, "name": …, "actions": […]}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    resource: Resource,
    actions: Actions,
}

impl Access {
    pub fn new(resource: Resource, actions: Actions) -> Access {
        Access { resource, actions }
    }

    pub fn repository(repo: RepoName, actions: Actions) -> Access {
        Access::new(Resource::Repository(repo), actions)
    }

    pub fn resource(&self) -> &Resource {
        &self.resource
    }

    pub fn resource_type(&self) -> &str {
        self.resource.resource_type()
    }

    pub fn name(&self) -> &str {
        self.resource.name()
    }

    pub fn actions(&self) -> Actions {
        self.actions
    }
}

impl FromStr for Access {
    type Err = ScopeError;

    /// `type:name:actions`. The name may itself contain `:` (the grammar
    /// allows `host:port/…`), so the type ends at the first `:` and the
    /// actions start after the last one; such a name then fails the
    /// repository grammar.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || ScopeError::Malformed(s.to_string());
        let (resource_type, rest) = s.split_once(':').ok_or_else(malformed)?;
        let (name, actions) = rest.rsplit_once(':').ok_or_else(malformed)?;
        let resource = Resource::new(resource_type, name)?;
        let mut set = Actions::NONE;
        for a in actions.split(',').filter(|a| !a.is_empty()) {
            if let Some(a) = Action::parse_lenient(a)? {
                set.insert(a);
            }
        }
        Ok(Access::new(resource, set))
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.resource, self.actions)
    }
}

/// The Docker `access` claim entry, as it is on the wire.
#[derive(Serialize, Deserialize)]
struct AccessJson {
    #[serde(rename = "type")]
    resource_type: String,
    name: String,
    actions: Vec<String>,
}

impl Serialize for Access {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        AccessJson {
            resource_type: self.resource_type().to_string(),
            name: self.name().to_string(),
            actions: self
                .actions
                .iter()
                .map(|a| a.as_str().to_string())
                .collect(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Access {
    /// Re-checks the name, so a claim can never carry a name the grammar
    /// refuses.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let raw = AccessJson::deserialize(d)?;
        let resource = Resource::new(&raw.resource_type, &raw.name).map_err(D::Error::custom)?;
        let mut actions = Actions::NONE;
        for a in &raw.actions {
            if let Some(a) = Action::parse_lenient(a).map_err(D::Error::custom)? {
                actions.insert(a);
            }
        }
        Ok(Access::new(resource, actions))
    }
}

/// A list of resource scopes, one entry per resource (repeats are merged),
/// in the order first named.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope(Vec<Access>);

impl Scope {
    pub fn new() -> Scope {
        Scope::default()
    }

    /// Parses every `scope` parameter of a request (the token endpoint may get
    /// several; each may hold several space-separated scopes).
    pub fn parse_all<'a, I>(params: I) -> Result<Scope, ScopeError>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut scope = Scope::new();
        let mut len = 0usize;
        let mut entries = 0usize;
        for param in params {
            len = len.saturating_add(param.len());
            if len > MAX_SCOPE_LEN {
                return Err(ScopeError::TooLong);
            }
            for entry in param.split(' ').filter(|e| !e.is_empty()) {
                entries += 1;
                if entries > MAX_SCOPE_ENTRIES {
                    return Err(ScopeError::TooMany);
                }
                scope.add(entry.parse()?);
            }
        }
        Ok(scope)
    }

    /// Adds an entry, merging its actions into an existing entry for the same
    /// resource.
    pub fn add(&mut self, access: Access) {
        match self.0.iter_mut().find(|a| a.resource == access.resource) {
            Some(existing) => existing.actions = existing.actions.union(access.actions),
            None => self.0.push(access),
        }
    }

    pub fn entries(&self) -> &[Access] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Everything this scope allows on `resource`.
    pub fn actions_on(&self, resource: &Resource) -> Actions {
        self.0
            .iter()
            .filter(|a| &a.resource == resource)
            .fold(Actions::NONE, |acc, a| acc.union(a.actions))
    }

    /// Whether this scope allows `action` on `resource`. Resources of types
    /// Wharf does not know are never covered.
    pub fn covers(&self, resource: &Resource, action: Action) -> bool {
        !matches!(resource, Resource::Other { .. }) && self.actions_on(resource).covers(action)
    }

    /// What of this (requested) scope `granted` allows, entry by entry;
    /// entries left with no action, and unknown resource types, are dropped.
    pub fn intersect(&self, granted: &Scope) -> Scope {
        self.intersect_with(|resource| granted.actions_on(resource))
    }

    /// [`Scope::intersect`] against a function giving what is granted on each
    /// resource.
    pub fn intersect_with(&self, mut granted: impl FnMut(&Resource) -> Actions) -> Scope {
        let mut out = Scope::new();
        for a in &self.0 {
            if matches!(a.resource, Resource::Other { .. }) {
                continue;
            }
            let actions = a.actions.intersect(granted(&a.resource));
            if !actions.is_empty() {
                out.add(Access::new(a.resource.clone(), actions));
            }
        }
        out
    }
}

impl FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::parse_all([s])
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

impl FromIterator<Access> for Scope {
    fn from_iter<I: IntoIterator<Item = Access>>(iter: I) -> Self {
        let mut scope = Scope::new();
        for a in iter {
            scope.add(a);
        }
        scope
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let entries = Vec::<Access>::deserialize(d)?;
        if entries.len() > MAX_SCOPE_ENTRIES {
            return Err(serde::de::Error::custom(ScopeError::TooMany));
        }
        Ok(entries.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> Resource {
        Resource::Repository(s.parse().unwrap())
    }

    fn acts(list: &[Action]) -> Actions {
        list.iter().copied().collect()
    }

    #[test]
    fn parses_repository_scope_with_two_actions() {
        let a: Access = "repository:acme/app:pull,push".parse().unwrap();
        assert_eq!(a.resource(), &repo("acme/app"));
        assert_eq!(a.resource_type(), "repository");
        assert_eq!(a.name(), "acme/app");
        assert_eq!(a.actions(), acts(&[Action::Pull, Action::Push]));
    }

    #[test]
    fn parses_wildcard_action_as_all() {
        let a: Access = "repository:acme/app:*".parse().unwrap();
        assert!(a.actions().is_all());
        assert!(a.actions().covers(Action::Delete));
    }

    #[test]
    fn parses_registry_catalog_scope() {
        let a: Access = "registry:catalog:*".parse().unwrap();
        assert_eq!(a.resource(), &Resource::catalog());
        assert_eq!(a.to_string(), "registry:catalog:*");
    }

    #[test]
    fn parses_several_space_separated_scopes_in_order() {
        let s: Scope = "repository:acme/app:pull,push repository:acme/base:pull"
            .parse()
            .unwrap();
        assert_eq!(s.entries().len(), 2);
        assert_eq!(s.entries()[1].resource(), &repo("acme/base"));
        assert_eq!(s.entries()[1].actions(), Actions::only(Action::Pull));
    }

    #[test]
    fn parse_all_joins_several_scope_parameters() {
        let s = Scope::parse_all(["repository:a/b:pull", "repository:c/d:push"]).unwrap();
        assert_eq!(s.to_string(), "repository:a/b:pull repository:c/d:push");
    }

    #[test]
    fn repeated_resource_is_merged_into_one_entry() {
        let s: Scope = "repository:a/b:push repository:a/b:pull".parse().unwrap();
        assert_eq!(s.to_string(), "repository:a/b:pull,push");
    }

    #[test]
    fn prints_back_what_it_parsed_in_canonical_order() {
        for (input, printed) in [
            (
                "repository:acme/app:push,pull",
                "repository:acme/app:pull,push",
            ),
            ("repository:acme/app:*", "repository:acme/app:*"),
            ("repository:acme/app:pull,*", "repository:acme/app:*"),
            ("registry:catalog:*", "registry:catalog:*"),
            (
                "repository:acme/app:pull,delete",
                "repository:acme/app:pull,delete",
            ),
        ] {
            let s: Scope = input.parse().unwrap();
            assert_eq!(s.to_string(), printed, "{input}");
            assert_eq!(s.to_string().parse::<Scope>().unwrap(), s);
        }
    }

    #[test]
    fn resource_class_is_dropped() {
        let a: Access = "repository(plugin):acme/app:pull".parse().unwrap();
        assert_eq!(a.resource(), &repo("acme/app"));
    }

    #[test]
    fn unknown_resource_type_is_kept_and_prints_back() {
        let a: Access = "widget:acme/app:pull".parse().unwrap();
        assert_eq!(
            a.resource(),
            &Resource::Other {
                resource_type: "widget".into(),
                name: "acme/app".into()
            }
        );
        assert_eq!(a.to_string(), "widget:acme/app:pull");
    }

    #[test]
    fn unknown_resource_type_grants_nothing() {
        let requested: Scope = "widget:acme/app:pull".parse().unwrap();
        let granted: Scope = "widget:acme/app:pull".parse().unwrap();
        assert!(requested.intersect(&granted).is_empty());
        assert!(!granted.covers(requested.entries()[0].resource(), Action::Pull));
    }

    #[test]
    fn invalid_repository_names_are_errors() {
        for bad in [
            "repository:ACME/app:pull",
            "repository:acme/../other/app:pull",
            "repository:acme%2fapp:pull",
            "repository:/acme/app:pull",
            "repository:acme//app:pull",
            "repository:localhost:5000/acme/app:pull",
            "repository::pull",
        ] {
            assert!(
                matches!(bad.parse::<Access>(), Err(ScopeError::Name { .. })),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn entry_without_two_colons_is_malformed() {
        for bad in ["repository", "repository:acme/app", ""] {
            assert!(
                matches!(bad.parse::<Access>(), Err(ScopeError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn invalid_resource_types_are_errors() {
        for bad in [
            "Repository:a:pull",
            "repo sitory:a:pull",
            "repository(:a:pull",
            "a()b:c:pull",
        ] {
            assert!(bad.parse::<Access>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn unknown_action_is_dropped_and_bad_action_is_an_error() {
        let a: Access = "repository:a/b:pull,metadata_read".parse().unwrap();
        assert_eq!(a.actions(), Actions::only(Action::Pull));
        assert!(matches!(
            "repository:a/b:PULL".parse::<Access>(),
            Err(ScopeError::Action(_))
        ));
        assert!("repository:a/b:pu$h".parse::<Access>().is_err());
    }

    #[test]
    fn empty_action_list_parses_to_no_action() {
        let a: Access = "repository:a/b:".parse().unwrap();
        assert!(a.actions().is_empty());
    }

    #[test]
    fn oversized_scope_is_refused() {
        let one = "repository:a/b:pull ";
        let long = one.repeat(MAX_SCOPE_LEN / one.len() + 1);
        assert_eq!(long.parse::<Scope>(), Err(ScopeError::TooLong));
    }

    #[test]
    fn too_many_entries_are_refused() {
        let many: Vec<String> = (0..=MAX_SCOPE_ENTRIES)
            .map(|i| format!("repository:a/r{i}:pull"))
            .collect();
        assert_eq!(
            Scope::parse_all(many.iter().map(String::as_str)),
            Err(ScopeError::TooMany)
        );
    }

    #[test]
    fn intersect_keeps_only_granted_actions() {
        let requested: Scope = "repository:a/b:pull,push".parse().unwrap();
        let granted: Scope = "repository:a/b:pull".parse().unwrap();
        assert_eq!(
            requested.intersect(&granted).to_string(),
            "repository:a/b:pull"
        );
    }

    #[test]
    fn intersect_drops_resources_not_granted() {
        let requested: Scope = "repository:a/b:pull repository:c/d:pull".parse().unwrap();
        let granted: Scope = "repository:c/d:pull,push".parse().unwrap();
        assert_eq!(
            requested.intersect(&granted).to_string(),
            "repository:c/d:pull"
        );
    }

    #[test]
    fn wildcard_request_gets_only_the_granted_concrete_actions() {
        let requested: Scope = "repository:a/b:*".parse().unwrap();
        let granted: Scope = "repository:a/b:pull,push".parse().unwrap();
        assert_eq!(
            requested.intersect(&granted).to_string(),
            "repository:a/b:pull,push"
        );
    }

    #[test]
    fn wildcard_grant_gives_exactly_what_was_requested() {
        let requested: Scope = "repository:a/b:pull registry:catalog:*".parse().unwrap();
        let granted: Scope = "repository:a/b:* registry:catalog:*".parse().unwrap();
        assert_eq!(requested.intersect(&granted), requested);
    }

    #[test]
    fn wildcard_action_is_only_covered_by_wildcard() {
        assert!(!acts(&[Action::Pull, Action::Push, Action::Delete]).covers(Action::All));
        assert!(Actions::ALL.covers(Action::All));
    }

    #[test]
    fn access_serialises_as_the_docker_access_claim() {
        let a: Access = "repository:samalba/my-app:push,pull".parse().unwrap();
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(
            json,
            r#"{"type":"repository","name":"samalba/my-app","actions":["pull","push"]}"#
        );
        assert_eq!(serde_json::from_str::<Access>(&json).unwrap(), a);
    }

    #[test]
    fn access_claim_with_invalid_name_does_not_deserialise() {
        let json = r#"{"type":"repository","name":"acme/../x","actions":["pull"]}"#;
        assert!(serde_json::from_str::<Access>(json).is_err());
    }
}
