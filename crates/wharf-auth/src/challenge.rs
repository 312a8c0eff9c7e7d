//! `WWW-Authenticate` header values: what a `401` tells a client to do.
//!
//! Owns: `Bearer realm="…",service="…",scope="…"` for token mode (with
//! `error="invalid_token"` or `error="insufficient_scope"` when a token was
//! presented; RFC 6750 §3), and `Basic realm="…"` for htpasswd mode.
//!
//! Must never: emit a value that breaks out of its quoted string. `realm`
//! and `service` come from configuration and are checked once, at
//! construction (visible ASCII and spaces only, so no CR/LF can split the
//! header); every quoted value is escaped (`\` and `"`) as RFC 9110's
//! quoted-string requires. Scopes printed here come from parsed
//! [`Scope`]s, whose names cannot hold quotes or spaces.

use std::fmt::Write as _;

use crate::scope::Scope;

/// The longest `realm` or `service` accepted.
const MAX_PARAM_LEN: usize = 1024;

/// Why a challenge could not be configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    #[error("{0} must be 1 to 1024 printable ASCII characters")]
    Invalid(&'static str),
}

/// What was wrong with the token a client presented (RFC 6750 §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BearerError {
    /// Malformed, expired, wrongly signed, or for another service.
    InvalidToken,
    /// Valid, but does not grant what the request needs.
    InsufficientScope,
}

impl BearerError {
    pub fn as_str(self) -> &'static str {
        match self {
            BearerError::InvalidToken => "invalid_token",
            BearerError::InsufficientScope => "insufficient_scope",
        }
    }
}

fn check(value: &str, what: &'static str) -> Result<String, ChallengeError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_PARAM_LEN
        && value.bytes().all(|b| (0x20..0x7f).contains(&b));
    if ok {
        Ok(value.to_string())
    } else {
        Err(ChallengeError::Invalid(what))
    }
}

/// Appends `name="value"`, escaping as a quoted-string.
fn push_param(out: &mut String, name: &str, value: &str) {
    if !out.ends_with(' ') {
        out.push(',');
    }
    let _ = write!(out, "{name}=\"");
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// The token-mode challenge of one registry: where to get a token and for
/// which service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BearerChallenge {
    realm: String,
    service: String,
}

impl BearerChallenge {
    /// `realm` is the token endpoint's URL; `service` the audience tokens
    /// must name.
    pub fn new(realm: &str, service: &str) -> Result<BearerChallenge, ChallengeError> {
        Ok(BearerChallenge {
            realm: check(realm, "realm")?,
            service: check(service, "service")?,
        })
    }

    /// The header value for a request that needs `required` (empty for
    /// `GET /v2/`, which needs no scope). `error` is `None` when no token
    /// was presented.
    pub fn header_value(&self, required: &Scope, error: Option<BearerError>) -> String {
        let mut out = String::from("Bearer ");
        push_param(&mut out, "realm", &self.realm);
        push_param(&mut out, "service", &self.service);
        if !required.is_empty() {
            push_param(&mut out, "scope", &required.to_string());
        }
        if let Some(error) = error {
            push_param(&mut out, "error", error.as_str());
        }
        out
    }
}

/// The htpasswd-mode challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasicChallenge {
    realm: String,
}

impl BasicChallenge {
    pub fn new(realm: &str) -> Result<BasicChallenge, ChallengeError> {
        Ok(BasicChallenge {
            realm: check(realm, "realm")?,
        })
    }

    pub fn header_value(&self) -> String {
        let mut out = String::from("Basic ");
        push_param(&mut out, "realm", &self.realm);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer() -> BearerChallenge {
        BearerChallenge::new("https://auth.example/token", "registry.example").unwrap()
    }

    #[test]
    fn bearer_challenge_names_realm_service_and_scope() {
        let scope: Scope = "repository:samalba/my-app:pull,push".parse().unwrap();
        assert_eq!(
            bearer().header_value(&scope, None),
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:samalba/my-app:pull,push""#
        );
    }

    #[test]
    fn bearer_challenge_without_required_scope_has_no_scope_param() {
        assert_eq!(
            bearer().header_value(&Scope::new(), None),
            r#"Bearer realm="https://auth.example/token",service="registry.example""#
        );
    }

    #[test]
    fn bearer_challenge_puts_several_scopes_space_separated_in_one_param() {
        let scope: Scope = "repository:a/b:pull,push repository:c/d:pull"
            .parse()
            .unwrap();
        assert!(bearer()
            .header_value(&scope, None)
            .ends_with(r#"scope="repository:a/b:pull,push repository:c/d:pull""#));
    }

    #[test]
    fn insufficient_scope_is_reported_after_the_scope() {
        let scope: Scope = "repository:a/b:push".parse().unwrap();
        assert!(bearer()
            .header_value(&scope, Some(BearerError::InsufficientScope))
            .ends_with(r#",scope="repository:a/b:push",error="insufficient_scope""#));
    }

    #[test]
    fn invalid_token_error_is_reported() {
        assert!(bearer()
            .header_value(&Scope::new(), Some(BearerError::InvalidToken))
            .ends_with(r#",error="invalid_token""#));
    }

    #[test]
    fn quotes_and_backslashes_in_values_are_escaped() {
        let c = BearerChallenge::new(r#"https://a/"x"\y"#, "s").unwrap();
        assert!(c
            .header_value(&Scope::new(), None)
            .starts_with(r#"Bearer realm="https://a/\"x\"\\y","#));
    }

    #[test]
    fn control_characters_and_empty_values_are_refused_at_construction() {
        for bad in ["", "https://a\r\nSet-Cookie: x", "tab\there", "caf\u{e9}"] {
            assert!(BearerChallenge::new(bad, "s").is_err(), "{bad:?} accepted");
            assert!(BasicChallenge::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(BearerChallenge::new("r", "a\nb").is_err());
        assert!(BearerChallenge::new(&"r".repeat(1025), "s").is_err());
    }

    #[test]
    fn basic_challenge_names_the_realm() {
        assert_eq!(
            BasicChallenge::new("Wharf Registry")
                .unwrap()
                .header_value(),
            r#"Basic realm="Wharf Registry""#
        );
    }
}
