//! Authentication and authorization for Wharf: who may pull, push and
//! delete what, decided on the node that serves the request.
//!
//! Owns the Docker token protocol as the distribution project specifies it
//! ("Token Authentication Specification", "Token Scope Documentation",
//! "Token Authentication Implementation", "OAuth2 Token Authentication"):
//!
//! - [`scope`]: the `scope` grammar, the [`Access`] model (also the
//!   token's `access` claim), [`Action`]s, and intersecting what is asked
//!   for with what is granted.
//! - [`token`]: ES256 JWTs — [`Claims`], signing ([`encode`]), keys by `kid`
//!   ([`SigningKey`], [`PublicKey`], [`KeySet`]), local verification
//!   ([`Verifier`]) and the per-request check ([`Authorizer`]).
//! - [`challenge`]: the `WWW-Authenticate` values of a `401`.
//! - [`htpasswd`]: bcrypt htpasswd files for the single-operator mode.
//! - [`issuer`]: the token endpoint's logic — grants over repository
//!   patterns, issuing short-lived tokens, refresh tokens and hashed secrets.
//! - [`limiter`]: failed-login counts per client and per account
//!   ([`LoginLimiter`]), consulted before any password is checked.
//!
//! Must never: call another service while verifying (design invariant 3: a
//! node checks tokens with the public keys it has loaded, so pulls keep
//! working with the control plane down); let a token's header choose how it
//! is verified; widen a scope when a name is odd (it is refused instead);
//! log or `Debug`-print a token secret, password, hash or private key; or
//! know about HTTP servers: it returns values (header strings, [`Denied`],
//! [`TokenError`]) that the HTTP layer turns into responses. The only I/O is
//! reading key and htpasswd files when the caller asks, at start-up.
//!
//! A repository's tenant is its first path component
//! ([`wharf_core::RepoName::namespace`]); repository names in scopes, claims
//! and grants are [`wharf_core::RepoName`]s, so they obey the same grammar as
//! the `/v2/` paths they guard.

#![forbid(unsafe_code)]

pub mod challenge;
pub mod htpasswd;
pub mod issuer;
pub mod limiter;
pub mod scope;
pub mod token;

pub use challenge::{BasicChallenge, BearerChallenge, BearerError, ChallengeError};
pub use htpasswd::{Htpasswd, HtpasswdError};
pub use issuer::{
    hash_secret, parse_grant, parse_token_hash, verify_secret, Grant, Identity, IssueError,
    IssuedToken, Issuer, PatternError, Principal, RefreshToken, RepoPattern,
};
pub use limiter::{LimiterConfig, LoginLimiter};
pub use scope::{Access, Action, Actions, Resource, Scope, ScopeError};
pub use token::{
    encode, AuthError, Authorizer, Claims, Denied, KeyError, KeySet, PublicKey, SigningKey,
    TokenError, VerifiedToken, Verifier,
};
