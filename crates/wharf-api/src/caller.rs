//! [`Caller`]: who sent a request, as far as the registry needs to know
//! (the owner recorded on an upload session, which the per-user session
//! cap counts).
//!
//! Interim: [`subject`] reads the subject from the request's
//! `Authorization` header itself, *without verifying anything*. It is only
//! sound because it is called after [`crate::auth`] has verified that very
//! header (a request that reaches a handler with auth on carried valid
//! credentials), and its answer only picks which cap counts a session, never
//! what the request may do. It is to be replaced by the identity `auth`
//! verified, once `auth::check` hands that out.
//!
//! Must never: be used to decide access, or be called on a request that
//! authentication has not accepted.

use axum::http::HeaderMap;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;

use crate::headers;

/// Who sent a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    /// The authenticated subject (user or robot name); `None` without
    /// authentication or credentials.
    pub subject: Option<String>,
}

impl Caller {
    /// The caller of a request that authentication accepted (see the
    /// module docs); `auth_on` false gives the anonymous caller.
    pub fn of(headers: &HeaderMap, auth_on: bool) -> Caller {
        Caller {
            subject: if auth_on { subject(headers) } else { None },
        }
    }
}

/// The subject named by the request's `Authorization` header: the user
/// name of `Basic` credentials, the `sub` claim of a `Bearer` JWT. Nothing
/// is verified (see the module docs): call only after auth accepted the
/// request.
pub fn subject(headers: &HeaderMap) -> Option<String> {
    let value = headers::get(headers, "authorization")?.trim();
    let (scheme, credentials) = value.split_once(' ')?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD.decode(credentials).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, _password) = decoded.split_once(':')?;
        (!user.is_empty()).then(|| user.to_string())
    } else if scheme.eq_ignore_ascii_case("bearer") {
        let payload = credentials.split('.').nth(1)?;
        let payload = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
        let claims: serde_json::Value = serde_json::from_slice(&payload).ok()?;
        let sub = claims.get("sub")?.as_str()?;
        (!sub.is_empty()).then(|| sub.to_string())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", auth.parse().unwrap());
        h
    }

    #[test]
    fn basic_credentials_give_the_user_name() {
        let h = with(&format!(
            "Basic {}",
            STANDARD.encode("alice:pw:with:colons")
        ));
        assert_eq!(subject(&h).as_deref(), Some("alice"));
        assert_eq!(
            Caller::of(&h, true).subject.as_deref(),
            Some("alice"),
            "auth on"
        );
        assert_eq!(Caller::of(&h, false), Caller::default(), "auth off");
    }

    #[test]
    fn a_bearer_jwt_gives_its_sub_claim() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"acme+ci","access":[]}"#);
        let h = with(&format!("Bearer eyJhbGciOiJFZERTQSJ9.{payload}.c2ln"));
        assert_eq!(subject(&h).as_deref(), Some("acme+ci"));
    }

    #[test]
    fn anything_else_has_no_subject() {
        assert_eq!(subject(&HeaderMap::new()), None);
        for bad in [
            "Basic !!!",
            "Basic ".to_string().as_str(),
            &format!("Basic {}", STANDARD.encode("no-colon")),
            &format!("Basic {}", STANDARD.encode(":pw")),
            "Bearer not-a-jwt",
            &format!("Bearer a.{}.c", URL_SAFE_NO_PAD.encode(br#"{"iss":"x"}"#)),
            "Digest user=alice",
        ] {
            assert_eq!(subject(&with(bad)), None, "{bad:?}");
        }
    }
}
