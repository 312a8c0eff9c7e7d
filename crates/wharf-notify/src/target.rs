//! Where events go: an endpoint's id, URL and secret, and the rules each
//! must meet (the same for the node's endpoints, given by the operator in
//! the configuration, and a tenant's, given through the admin API).
//!
//! Owns: [`Target`], [`Secret`] (never printed), [`check_id`],
//! [`check_url`], [`check_secret`] and [`generate_secret`].
//!
//! Must never: accept a URL that is not plain `http` or `https` to a host,
//! or one carrying credentials (`user:password@`: they would show wherever
//! the URL is shown; a receiver authenticates deliveries by their
//! signature); or show a secret in `Debug`.

use std::sync::Arc;

use reqwest::Url;

/// The longest endpoint URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;
/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;
/// The longest secret accepted, in bytes.
pub const MAX_SECRET_LEN: usize = 256;
/// Generated secrets start with this, so secret scanners can recognise
/// them.
pub const SECRET_PREFIX: &str = "whsec_";

/// An endpoint's signing secret. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    pub fn new(bytes: &[u8]) -> Secret {
        Secret(Arc::from(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// One endpoint events are delivered to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Its id: the `endpoint` label of its metrics and the name in logs.
    /// A node's endpoints are named in the configuration (`node-1`, … by
    /// default); a tenant's are `tenant/id`.
    pub id: String,
    pub url: Url,
    pub secret: Secret,
    /// Whether it gets `manifest.pull` events (off unless asked for).
    pub pulls: bool,
    /// Set by a tenant: deliveries connect to public addresses only
    /// ([`crate::public`]).
    pub public_only: bool,
}

impl Target {
    /// A target with `url` (checked by [`check_url`]).
    pub fn new(id: String, url: &str, secret: Secret, pulls: bool) -> Result<Target, String> {
        Ok(Target {
            id,
            url: check_url(url)?,
            secret,
            pulls,
            public_only: false,
        })
    }

    /// The same target, its deliveries limited to public addresses or not.
    pub fn with_public_only(mut self, public_only: bool) -> Target {
        self.public_only = public_only;
        self
    }

    /// The URL's scheme, host and port, for log lines (its path and query
    /// may carry a receiver's token).
    pub fn origin(&self) -> String {
        self.url.origin().ascii_serialization()
    }
}

/// An endpoint id: 1 to 32 of `a-z`, `0-9` and `-`, starting with a
/// letter or digit.
pub fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 32
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "endpoint id {:?} must be 1 to 32 characters of a-z, 0-9 and -, starting with a \
             letter or digit",
            clip(id)
        ))
    }
}

/// An endpoint URL: `http://` or `https://`, a host, no credentials, no
/// fragment, at most [`MAX_URL_LEN`] bytes.
pub fn check_url(url: &str) -> Result<Url, String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!(
            "the endpoint URL is longer than {MAX_URL_LEN} bytes"
        ));
    }
    let parsed =
        Url::parse(url).map_err(|e| format!("endpoint URL {:?} does not parse: {e}", clip(url)))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "endpoint URL {:?} must be http:// or https://, not {}://",
            clip(url),
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("endpoint URL {:?} names no host", clip(url)));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "an endpoint URL must not carry credentials (user:password@); receivers \
             authenticate deliveries by their X-Wharf-Signature"
                .into(),
        );
    }
    if parsed.fragment().is_some() {
        return Err(format!(
            "endpoint URL {:?} must not have a #fragment",
            clip(url)
        ));
    }
    Ok(parsed)
}

/// A secret: [`MIN_SECRET_LEN`] to [`MAX_SECRET_LEN`] bytes of visible
/// ASCII (no spaces or control characters, so it survives files, shells
/// and environment variables unchanged).
pub fn check_secret(secret: &str) -> Result<(), String> {
    if secret.len() < MIN_SECRET_LEN || secret.len() > MAX_SECRET_LEN {
        return Err(format!(
            "an endpoint secret must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN} bytes, not {}",
            secret.len()
        ));
    }
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("an endpoint secret must be visible ASCII characters only (no spaces)".into());
    }
    Ok(())
}

/// A new secret: `whsec_` and 256 random bits in hex.
pub fn generate_secret() -> Result<String, String> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "no randomness available for an endpoint secret".to_string())?;
    Ok(format!("{SECRET_PREFIX}{}", hex::encode(bytes)))
}

/// At most 64 characters of `s`, for messages.
fn clip(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_plain_http_or_https_to_a_host() {
        for good in [
            "http://127.0.0.1:9000/hook",
            "https://hooks.example.com/wharf?token=abc",
            "http://[::1]:8080/",
        ] {
            assert!(check_url(good).is_ok(), "{good}");
        }
        let refused = |u: &str| check_url(u).unwrap_err();
        assert!(refused("ftp://example.com/").contains("http:// or https://"));
        assert!(refused("file:///etc/passwd").contains("http:// or https://"));
        assert!(refused("example.com/hook").contains("does not parse"));
        assert!(refused("http://user:pw@example.com/").contains("credentials"));
        assert!(refused("http://example.com/#x").contains("fragment"));
        assert!(refused(&format!("http://e.com/{}", "a".repeat(MAX_URL_LEN))).contains("longer"));
    }

    #[test]
    fn ids_and_secrets() {
        assert!(check_id("ci-hooks").is_ok());
        assert!(check_id("1").is_ok());
        for bad in ["", "-x", "Upper", "a/b", "a_b", &"x".repeat(33)] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_secret("0123456789abcdef").is_ok());
        assert!(check_secret("short").is_err());
        assert!(check_secret("0123456789 abcdef").is_err());
        assert!(check_secret(&"x".repeat(257)).is_err());
        let s = generate_secret().unwrap();
        assert!(s.starts_with(SECRET_PREFIX) && s.len() == 6 + 64, "{s}");
        assert!(check_secret(&s).is_ok());
        assert_ne!(s, generate_secret().unwrap());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let t = Target::new(
            "a".into(),
            "http://127.0.0.1:1/x?token=t",
            Secret::new(b"topsecretvalue!!"),
            false,
        )
        .unwrap();
        let shown = format!("{t:?}");
        assert!(!shown.contains("topsecret"), "{shown}");
        assert_eq!(t.origin(), "http://127.0.0.1:1");
    }
}
