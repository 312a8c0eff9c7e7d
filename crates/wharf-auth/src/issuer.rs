//! The token endpoint's side: from verified credentials to a signed token.
//!
//! Owns: what a [`Principal`] may do ([`Grant`]s over repository patterns),
//! the access a token gets (the requested [`Scope`] intersected with the
//! grants, as the token spec requires: asking for more than is allowed is not
//! an error, the token simply carries less), signing it with a short lifetime
//! ([`Issuer`]), and opaque refresh tokens ([`RefreshToken`]) with the
//! hashing that keeps them, and robot secrets, unreadable at rest
//! ([`hash_secret`], [`verify_secret`]).
//!
//! Must never: check a password (callers pass a principal whose credentials
//! they already verified), sign a token for a service it does not serve, let
//! a grant pattern match outside its prefix (`acme/*` never matches
//! `acme-evil/x` or `acme` itself), or store or log a refresh secret in
//! clear. The registry catalog (`registry:catalog:*`) lists every tenant's
//! repositories, so repository grants never yield it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use wharf_core::RepoName;

use crate::scope::{Action, Actions, Resource, Scope};
use crate::token::{encode, now_unix, Claims, SigningKey};

/// How long an issued token lives unless configured otherwise.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// The shortest lifetime: the token spec says clients must get at least 60 s.
pub const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// The longest lifetime: a bearer token cannot be revoked before it expires.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(60 * 60);
/// The longest subject put in a token (so a token always fits
/// [`crate::token::MAX_TOKEN_LEN`]).
pub const MAX_SUBJECT_LEN: usize = 255;
/// Refresh tokens start with this, so secret scanners can recognise them.
pub const REFRESH_TOKEN_PREFIX: &str = "wharf_rt_";

/// A repository pattern in a grant: `acme/app` (that repository) or
/// `acme/*` (every repository under `acme/`, at any depth).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RepoPattern {
    Exact(RepoName),
    Under(RepoName),
}

/// Why a grant pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("repository pattern {0:?} is neither a repository name nor a name followed by /*")]
pub struct PatternError(String);

impl RepoPattern {
    pub fn matches(&self, repo: &RepoName) -> bool {
        match self {
            RepoPattern::Exact(name) => name == repo,
            RepoPattern::Under(prefix) => repo
                .as_str()
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.starts_with('/')),
        }
    }

    /// The tenant whose repositories this pattern can match.
    pub fn tenant(&self) -> &str {
        match self {
            RepoPattern::Exact(name) | RepoPattern::Under(name) => name.namespace(),
        }
    }
}

impl FromStr for RepoPattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PatternError(s.to_string());
        match s.strip_suffix("/*") {
            Some(prefix) => prefix.parse().map(RepoPattern::Under).map_err(|_| bad()),
            None => s.parse().map(RepoPattern::Exact).map_err(|_| bad()),
        }
    }
}

impl fmt::Display for RepoPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoPattern::Exact(name) => write!(f, "{name}"),
            RepoPattern::Under(prefix) => write!(f, "{prefix}/*"),
        }
    }
}

/// Some actions on the repositories a pattern matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub pattern: RepoPattern,
    pub actions: Actions,
}

impl Grant {
    pub fn new(pattern: RepoPattern, actions: Actions) -> Grant {
        Grant { pattern, actions }
    }
}

/// `acme/*:pull,push`: the form [`parse_grant`] reads back.
impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.pattern, self.actions)
    }
}

/// `acme/*:pull,push` or `acme/app:pull`: a pattern, `:`, and a
/// comma-separated list of `pull`, `push` and `delete` (`*` is refused: a
/// grant names what it allows).
pub fn parse_grant(s: &str) -> Result<Grant, String> {
    let (pattern, actions) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("grant {s:?} is not pattern:actions"))?;
    let pattern: RepoPattern = pattern.parse().map_err(|e| format!("grant {s:?}: {e}"))?;
    let mut set = Actions::NONE;
    for a in actions.split(',') {
        match a.trim() {
            "pull" => set.insert(Action::Pull),
            "push" => set.insert(Action::Push),
            "delete" => set.insert(Action::Delete),
            other => {
                return Err(format!(
                    "grant {s:?}: action {other:?} is not pull, push or delete"
                ))
            }
        }
    }
    Ok(Grant::new(pattern, set))
}

/// Which account a subject name stands for, now: an id that is never
/// given to another account (a user deleted and created again, or a name
/// taken by another tenant, gets a new one), and the generation of its
/// credentials, which changes whenever what it may do changes (password,
/// roles, revocation). Tokens carry both; a token whose pair is not the
/// account's current one is refused.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub id: String,
    pub generation: String,
}

/// Someone whose credentials were verified, and what they may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    subject: String,
    grants: Vec<Grant>,
    identity: Option<Identity>,
}

impl Principal {
    pub fn new(subject: impl Into<String>, grants: Vec<Grant>) -> Principal {
        Principal {
            subject: subject.into(),
            grants,
            identity: None,
        }
    }

    /// Binds the tokens issued to this principal to `identity`.
    pub fn with_identity(mut self, identity: Identity) -> Principal {
        self.identity = Some(identity);
        self
    }

    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// No credentials: subject `""` (as the token spec asks) and no grants.
    pub fn anonymous() -> Principal {
        Principal::new("", Vec::new())
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn grants(&self) -> &[Grant] {
        &self.grants
    }

    /// Everything this principal may do on `resource`.
    pub fn actions_on(&self, resource: &Resource) -> Actions {
        match resource {
            Resource::Repository(repo) => self
                .grants
                .iter()
                .filter(|g| g.pattern.matches(repo))
                .fold(Actions::NONE, |acc, g| acc.union(g.actions)),
            Resource::Registry(_) | Resource::Other { .. } => Actions::NONE,
        }
    }

    /// The part of `requested` this principal may have.
    pub fn grant(&self, requested: &Scope) -> Scope {
        requested.intersect_with(|resource| self.actions_on(resource))
    }
}

/// Why no token was issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    #[error("service {0:?} is not served by this token issuer")]
    UnknownService(String),
    #[error("subject is longer than {MAX_SUBJECT_LEN} bytes")]
    SubjectTooLong,
    #[error("the operating system's random generator failed: {0}")]
    Random(String),
}

fn random_bytes<const N: usize>() -> Result<[u8; N], IssueError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| IssueError::Random(e.to_string()))?;
    Ok(buf)
}

/// A signed token and what the token endpoint returns with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    /// The compact JWS, for both `token` and `access_token` in the response.
    pub token: String,
    /// What it grants (the response's `scope` in the OAuth2 flow).
    pub access: Scope,
    /// Seconds it lives (`expires_in`).
    pub expires_in: u64,
    /// When it was issued, seconds since the epoch (`issued_at`, RFC 3339 in
    /// the response).
    pub issued_at: u64,
    /// Its unique id, for the audit log.
    pub jti: String,
}

/// Signs tokens for one service with the current key.
#[derive(Clone, Debug)]
pub struct Issuer {
    key: SigningKey,
    issuer: String,
    service: String,
    lifetime: Duration,
}

impl Issuer {
    /// `issuer` goes in `iss` (verifiers must expect the same); `service` is
    /// the only audience this issuer signs for.
    pub fn new(key: SigningKey, issuer: impl Into<String>, service: impl Into<String>) -> Issuer {
        Issuer {
            key,
            issuer: issuer.into(),
            service: service.into(),
            lifetime: DEFAULT_TOKEN_LIFETIME,
        }
    }

    /// Token lifetime, kept within [`MIN_TOKEN_LIFETIME`] and
    /// [`MAX_TOKEN_LIFETIME`].
    pub fn with_lifetime(mut self, lifetime: Duration) -> Issuer {
        self.lifetime = lifetime.clamp(MIN_TOKEN_LIFETIME, MAX_TOKEN_LIFETIME);
        self
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    pub fn kid(&self) -> &str {
        self.key.kid()
    }

    /// `Ok` if this issuer signs for `service`.
    pub fn check_service(&self, service: &str) -> Result<(), IssueError> {
        if service != self.service {
            return Err(IssueError::UnknownService(
                service.chars().take(64).collect(),
            ));
        }
        Ok(())
    }

    /// A token for `principal` carrying the part of `requested` it may have.
    pub fn issue(
        &self,
        principal: &Principal,
        requested: &Scope,
        service: &str,
    ) -> Result<IssuedToken, IssueError> {
        self.issue_at(principal, requested, service, now_unix())
    }

    /// [`Issuer::issue`] at `now` (seconds since the epoch).
    pub fn issue_at(
        &self,
        principal: &Principal,
        requested: &Scope,
        service: &str,
        now: u64,
    ) -> Result<IssuedToken, IssueError> {
        self.check_service(service)?;
        if principal.subject.len() > MAX_SUBJECT_LEN {
            return Err(IssueError::SubjectTooLong);
        }
        let access = principal.grant(requested);
        let jti = URL_SAFE_NO_PAD.encode(random_bytes::<16>()?);
        let expires_in = self.lifetime.as_secs();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: principal.subject.clone(),
            aud: self.service.clone(),
            exp: now.saturating_add(expires_in),
            nbf: now,
            iat: now,
            jti: jti.clone(),
            access: access.clone(),
            uid: principal.identity.as_ref().map(|i| i.id.clone()),
            gen: principal.identity.as_ref().map(|i| i.generation.clone()),
        };
        Ok(IssuedToken {
            token: encode(&claims, &self.key),
            access,
            expires_in,
            issued_at: now,
            jti,
        })
    }
}

/// An opaque refresh token. The client gets [`RefreshToken::secret`] once;
/// the server keeps only [`RefreshToken::hash`] (with the subject and
/// service it is bound to, as the token spec requires).
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken {
    secret: String,
}

impl RefreshToken {
    /// `wharf_rt_` and 256 random bits in base64url.
    pub fn generate() -> Result<RefreshToken, IssueError> {
        let secret = format!(
            "{REFRESH_TOKEN_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(random_bytes::<32>()?)
        );
        Ok(RefreshToken { secret })
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }

    pub fn hash(&self) -> String {
        hash_secret(&self.secret)
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(<redacted>)")
    }
}

/// The form in which a refresh token or robot secret is stored: SHA-256,
/// lower-case hex. A fast hash is enough because these secrets are 256
/// random bits, not something a person chose; a password needs bcrypt.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` hashes to `stored_hash`, compared in constant time.
pub fn verify_secret(secret: &str, stored_hash: &str) -> bool {
    hash_secret(secret)
        .as_bytes()
        .ct_eq(stored_hash.as_bytes())
        .into()
}

/// Reads an admin token file: one line `sha256:<64 hex>`, the SHA-256 of
/// the token (so the file holds no secret). Returns the hex.
pub fn parse_token_hash(text: &str) -> Result<String, String> {
    let line = text.lines().next().unwrap_or("").trim();
    let Some(hex) = line.strip_prefix("sha256:") else {
        return Err(if line.starts_with("wharf_admin_") {
            "this file holds a plain token (what `wharf admin --token-file` and \
             WHARF_ADMIN_TOKEN_FILE read); the server takes its hash, the line \
             sha256:<hex> that `wharf admin token --out DIR` writes to \
             DIR/admin-token.sha256"
                .into()
        } else {
            "the admin token file must hold one line sha256:<64 hex digits>".into()
        });
    };
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("the admin token file must hold one line sha256:<64 hex digits>".into());
    }
    Ok(hex.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::{Access, MAX_SCOPE_ENTRIES};
    use crate::token::{KeySet, Verifier, MAX_TOKEN_LEN};
    use wharf_core::names::MAX_NAME_LEN;

    const NOW: u64 = 1_700_000_000;

    fn pattern(s: &str) -> RepoPattern {
        s.parse().unwrap()
    }

    fn repo(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    fn pull_push() -> Actions {
        Actions::only(Action::Pull).with(Action::Push)
    }

    fn alice() -> Principal {
        Principal::new(
            "alice",
            vec![
                Grant::new(pattern("acme/*"), Actions::only(Action::Pull)),
                Grant::new(pattern("acme/app"), Actions::only(Action::Push)),
            ],
        )
    }

    fn issuer() -> (Issuer, Verifier) {
        let key = SigningKey::generate();
        let mut keys = KeySet::new();
        keys.insert(key.public_key());
        (
            Issuer::new(key, "wharf-token", "registry.example"),
            Verifier::new(keys, "wharf-token", "registry.example"),
        )
    }

    #[test]
    fn under_pattern_matches_repositories_below_the_prefix_only() {
        let p = pattern("acme/*");
        assert!(p.matches(&repo("acme/app")));
        assert!(p.matches(&repo("acme/team/app")));
        assert!(!p.matches(&repo("acme")));
        assert!(!p.matches(&repo("acme-evil/app")));
        assert!(!p.matches(&repo("acmex/app")));
        assert!(!p.matches(&repo("other/acme/app")));
    }

    #[test]
    fn exact_pattern_matches_only_that_repository() {
        let p = pattern("acme/app");
        assert!(p.matches(&repo("acme/app")));
        assert!(!p.matches(&repo("acme/app/sub")));
        assert!(!p.matches(&repo("acme/app2")));
    }

    #[test]
    fn invalid_patterns_are_refused() {
        for bad in [
            "*",
            "acme*",
            "acme/*/app",
            "ACME/*",
            "acme/../*",
            "acme/",
            "",
        ] {
            assert!(bad.parse::<RepoPattern>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn grant_parses_and_prints_back() {
        let g = parse_grant("acme/team/*:push,pull").unwrap();
        assert_eq!(g.pattern, pattern("acme/team/*"));
        assert_eq!(g.actions, pull_push());
        assert_eq!(g.to_string(), "acme/team/*:pull,push");
        assert_eq!(parse_grant(&g.to_string()), Ok(g));
        for bad in ["acme/*", "acme/*:fly", "acme/*:*", "ACME/*:pull", ":pull"] {
            assert!(parse_grant(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn pattern_prints_back_and_names_its_tenant() {
        assert_eq!(pattern("acme/team/*").to_string(), "acme/team/*");
        assert_eq!(pattern("acme/team/*").tenant(), "acme");
        assert_eq!(pattern("acme/app").tenant(), "acme");
    }

    #[test]
    fn grants_are_unioned_over_matching_patterns() {
        let a = alice();
        assert_eq!(
            a.actions_on(&Resource::Repository(repo("acme/app"))),
            pull_push()
        );
        assert_eq!(
            a.actions_on(&Resource::Repository(repo("acme/lib"))),
            Actions::only(Action::Pull)
        );
        assert!(a
            .actions_on(&Resource::Repository(repo("globex/app")))
            .is_empty());
    }

    #[test]
    fn granted_access_is_the_intersection_with_the_request() {
        let requested: Scope = "repository:acme/lib:pull,push repository:acme/app:pull,push repository:globex/app:pull"
            .parse()
            .unwrap();
        assert_eq!(
            alice().grant(&requested).to_string(),
            "repository:acme/lib:pull repository:acme/app:pull,push"
        );
    }

    #[test]
    fn catalog_is_never_granted_by_repository_grants() {
        let admin = Principal::new("root", vec![Grant::new(pattern("acme/*"), Actions::ALL)]);
        let requested: Scope = "registry:catalog:*".parse().unwrap();
        assert!(admin.grant(&requested).is_empty());
    }

    #[test]
    fn anonymous_gets_an_empty_subject_and_nothing() {
        let (issuer, verifier) = issuer();
        let requested: Scope = "repository:acme/app:pull".parse().unwrap();
        let t = issuer
            .issue_at(&Principal::anonymous(), &requested, "registry.example", NOW)
            .unwrap();
        let v = verifier.verify_at(&t.token, NOW).unwrap();
        assert_eq!(v.subject(), "");
        assert!(v.claims().access.is_empty());
    }

    #[test]
    fn issued_token_verifies_and_carries_the_granted_access() {
        let (issuer, verifier) = issuer();
        let requested: Scope = "repository:acme/lib:pull,push".parse().unwrap();
        let t = issuer
            .issue_at(&alice(), &requested, "registry.example", NOW)
            .unwrap();
        assert_eq!(t.access.to_string(), "repository:acme/lib:pull");
        let v = verifier.verify_at(&t.token, NOW).unwrap();
        assert_eq!(v.claims().access, t.access);
        assert_eq!(v.claims().sub, "alice");
        assert_eq!(v.claims().jti, t.jti);
        assert_eq!(v.kid(), issuer.kid());
    }

    #[test]
    fn default_lifetime_is_five_minutes() {
        let (issuer, verifier) = issuer();
        let t = issuer
            .issue_at(&alice(), &Scope::new(), "registry.example", NOW)
            .unwrap();
        assert_eq!(t.expires_in, 300);
        assert_eq!(t.issued_at, NOW);
        let c = verifier.verify_at(&t.token, NOW).unwrap().claims().clone();
        assert_eq!((c.iat, c.nbf, c.exp), (NOW, NOW, NOW + 300));
    }

    #[test]
    fn lifetime_is_kept_between_one_minute_and_one_hour() {
        let (issuer, _) = issuer();
        assert_eq!(
            issuer
                .clone()
                .with_lifetime(Duration::from_secs(5))
                .lifetime(),
            MIN_TOKEN_LIFETIME
        );
        assert_eq!(
            issuer
                .clone()
                .with_lifetime(Duration::from_secs(86_400))
                .lifetime(),
            MAX_TOKEN_LIFETIME
        );
        assert_eq!(
            issuer.with_lifetime(Duration::from_secs(600)).lifetime(),
            Duration::from_secs(600)
        );
    }

    #[test]
    fn other_service_gets_no_token() {
        let (issuer, _) = issuer();
        assert_eq!(
            issuer.issue_at(&alice(), &Scope::new(), "evil.example", NOW),
            Err(IssueError::UnknownService("evil.example".into()))
        );
    }

    #[test]
    fn largest_possible_token_still_fits_the_verifiers_size_limit() {
        let (issuer, verifier) = issuer();
        let long = |i: usize| {
            let name = format!("acme/{i:02}{}", "a".repeat(MAX_NAME_LEN - 7));
            assert_eq!(name.len(), MAX_NAME_LEN);
            name
        };
        let requested: Scope = (0..MAX_SCOPE_ENTRIES)
            .map(|i| Access::repository(repo(&long(i)), pull_push().with(Action::Delete)))
            .collect();
        let everything = Principal::new(
            "s".repeat(MAX_SUBJECT_LEN),
            vec![Grant::new(
                pattern("acme/*"),
                pull_push().with(Action::Delete),
            )],
        );
        let t = issuer
            .issue_at(&everything, &requested, "registry.example", NOW)
            .unwrap();
        assert_eq!(t.access.entries().len(), MAX_SCOPE_ENTRIES);
        assert!(t.token.len() <= MAX_TOKEN_LEN, "{} bytes", t.token.len());
        assert!(verifier.verify_at(&t.token, NOW).is_ok());
    }

    #[test]
    fn overlong_subject_gets_no_token() {
        let (issuer, _) = issuer();
        let p = Principal::new("s".repeat(MAX_SUBJECT_LEN + 1), Vec::new());
        assert_eq!(
            issuer.issue_at(&p, &Scope::new(), "registry.example", NOW),
            Err(IssueError::SubjectTooLong)
        );
    }

    #[test]
    fn each_token_gets_a_fresh_jti() {
        let (issuer, _) = issuer();
        let a = issuer
            .issue_at(&alice(), &Scope::new(), "registry.example", NOW)
            .unwrap();
        let b = issuer
            .issue_at(&alice(), &Scope::new(), "registry.example", NOW)
            .unwrap();
        assert_ne!(a.jti, b.jti);
    }

    #[test]
    fn refresh_tokens_are_prefixed_random_and_distinct() {
        let a = RefreshToken::generate().unwrap();
        let b = RefreshToken::generate().unwrap();
        assert!(a.secret().starts_with(REFRESH_TOKEN_PREFIX));
        assert_eq!(a.secret().len(), REFRESH_TOKEN_PREFIX.len() + 43);
        assert_ne!(a.secret(), b.secret());
        assert_eq!(format!("{a:?}"), "RefreshToken(<redacted>)");
    }

    #[test]
    fn hash_secret_is_sha256_hex() {
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn stored_hash_verifies_only_its_own_secret() {
        let t = RefreshToken::generate().unwrap();
        let stored = t.hash();
        assert_ne!(stored, t.secret());
        assert!(verify_secret(t.secret(), &stored));
        assert!(!verify_secret(
            RefreshToken::generate().unwrap().secret(),
            &stored
        ));
        assert!(!verify_secret(t.secret(), &stored[..63]));
        assert!(!verify_secret(t.secret(), ""));
    }
}
