//! Docker registry bearer tokens: JWTs signed with ES256 (ECDSA P-256,
//! SHA-256), issued by Wharf's token endpoint and verified on every node.
//!
//! Owns: the [`Claims`] of a token (the distribution project's "Token
//! Authentication Implementation": `iss`, `sub`, `aud`, `exp`, `nbf`, `iat`,
//! `jti` and `access`), signing them ([`encode`]), the keys ([`SigningKey`],
//! [`PublicKey`], [`KeySet`] by `kid`), verification ([`Verifier`]) and the
//! check that a verified token covers a request ([`Authorizer`]).
//!
//! Must never: call anything remote (design invariant 3: a node verifies
//! with the public keys it loaded), let the token's header choose the
//! algorithm, or parse a token's claims before its signature is verified.
//! Verification rejects: tokens over [`MAX_TOKEN_LEN`] before any decoding,
//! any `alg` but `ES256` (so `none` and the HS256-with-the-public-key
//! confusion), a missing or unknown `kid`, a `crit` header, a bad signature,
//! a wrong `iss` or `aud`, and tokens past `exp` or before `nbf` (with a
//! [`DEFAULT_LEEWAY`] of clock skew).
//!
//! # Why `p256` and a small JWS of our own rather than `jsonwebtoken`
//!
//! Wharf needs one algorithm in one serialization (JWS compact, ES256), so
//! the JOSE layer is about eighty lines here: split, base64url-decode, check
//! `alg == "ES256"`, look the key up by `kid`, verify. Signatures come from
//! `p256` (RustCrypto: pure Rust, constant-time, RFC 6979 deterministic
//! nonces, so signing needs no randomness; MSRV 1.85 like the workspace; no
//! OpenSSL and no C). `jsonwebtoken` was the other candidate: its 9.x line
//! has CVE-2026-25537 (an `exp`/`nbf` of the wrong JSON type was treated as
//! absent), fixed in 10.3, but 10.x needs Rust 1.88 and a crypto backend to be
//! picked, either `aws-lc-rs` (a C build) or `rust_crypto` (which brings RSA,
//! P-384 and Ed25519 code Wharf does not use). Here the claims are a typed
//! struct: an `exp` that is not an integer fails to parse and the token is
//! refused, and there is no algorithm table a header could select from.
//!
//! # Keys and rotation
//!
//! A key's `kid` is derived from the key itself (the libtrust form the
//! distribution spec's example shows: SHA-256 of the DER public key, 240 bits
//! in base32, in groups of four joined by `:`), so a `kid` can never name the
//! wrong key. Keys live in PEM files: public keys (`PUBLIC KEY`) for nodes
//! that only verify, private keys (`PRIVATE KEY`, PKCS#8, or `EC PRIVATE
//! KEY`, SEC1) for the issuer. To rotate: add the new public key to every
//! verifier's [`KeySet`] first, then give the issuer the new private key
//! (with [`SigningKey::load_newest`] this is dropping a file whose name sorts
//! last), and remove the old public key once the longest token lifetime has
//! passed; tokens signed with the old key verify until then.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, VerifyingKey};
use p256::elliptic_curve::Generate as _;
use p256::pkcs8::{
    DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _, EncodePublicKey as _,
    LineEnding,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use wharf_core::RepoName;

use crate::scope::{Access, Action, Resource, Scope};

/// The one signing algorithm Wharf issues and accepts.
pub const ALGORITHM: &str = "ES256";
/// Tokens longer than this are refused before any decoding. A Docker token
/// with a few dozen access entries is well under 4 KiB.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Clock skew tolerated on `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

pub use wharf_core::now_unix;

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("no private key (*.pem) in {0}")]
    NoSigningKey(PathBuf),
    #[error("{0}")]
    Pem(String),
}

fn invalid(path: &Path, reason: impl Into<String>) -> KeyError {
    KeyError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The libtrust key id: SHA-256 of the DER SubjectPublicKeyInfo, first 240
/// bits, base32 (RFC 4648, no padding), grouped by four with `:`.
fn key_id(key: &VerifyingKey) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    // A P-256 public key always encodes; the DER is a fixed 91 bytes.
    let der = key
        .to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .unwrap_or_default();
    let digest = Sha256::digest(&der);
    // 30 bytes = 240 bits = 48 base32 characters, 5 bytes per 8 characters.
    let mut base32 = Vec::with_capacity(48);
    for chunk in digest[..30].chunks(5) {
        let n = chunk.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        for j in 0..8 {
            base32.push(ALPHABET[((n >> (35 - 5 * j)) & 31) as usize]);
        }
    }
    base32
        .chunks(4)
        .map(|group| group.iter().map(|&b| char::from(b)).collect::<String>())
        .collect::<Vec<_>>()
        .join(":")
}

/// A P-256 public key and its `kid`.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    kid: String,
    key: VerifyingKey,
}

impl PublicKey {
    fn new(key: VerifyingKey) -> PublicKey {
        PublicKey {
            kid: key_id(&key),
            key,
        }
    }

    /// A `PUBLIC KEY` PEM (SubjectPublicKeyInfo); only P-256 keys parse.
    pub fn from_pem(pem: &str) -> Result<PublicKey, KeyError> {
        VerifyingKey::from_public_key_pem(pem)
            .map(PublicKey::new)
            .map_err(|e| KeyError::Pem(format!("not a P-256 public key: {e}")))
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.kid)
    }
}

/// A P-256 private key that signs tokens, and its `kid`.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    key: p256::ecdsa::SigningKey,
}

impl SigningKey {
    fn new(key: p256::ecdsa::SigningKey) -> SigningKey {
        SigningKey {
            kid: key_id(key.verifying_key()),
            key,
        }
    }

    /// A fresh random key from the operating system's generator.
    pub fn generate() -> SigningKey {
        SigningKey::new(p256::ecdsa::SigningKey::generate())
    }

    /// A `PRIVATE KEY` (PKCS#8) or `EC PRIVATE KEY` (SEC1) PEM; only P-256.
    pub fn from_pem(pem: &str) -> Result<SigningKey, KeyError> {
        parse_private_pem(pem).map_err(KeyError::Pem)
    }

    /// The private key in the `*.pem` file of `dir` whose name sorts last, so
    /// that naming key files by date (`2025-06-01.pem`) makes the newest one
    /// sign. Public-key files in the same directory are skipped.
    pub fn load_newest(dir: &Path) -> Result<SigningKey, KeyError> {
        let mut newest = None;
        for (path, text) in read_pem_dir(dir)? {
            if pem_label(&text).is_some_and(|l| l.ends_with("PRIVATE KEY")) {
                newest = Some((path, text));
            }
        }
        let (path, text) = newest.ok_or_else(|| KeyError::NoSigningKey(dir.to_path_buf()))?;
        parse_private_pem(&text).map_err(|reason| invalid(&path, reason))
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey::new(*self.key.verifying_key())
    }

    /// The key as a PKCS#8 `PRIVATE KEY` PEM, for writing a generated key to
    /// a file only the issuer can read (mode 0600). The returned string is a
    /// secret: never log it.
    pub fn to_pkcs8_pem(&self) -> String {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .unwrap_or_default()
    }

    /// Always the low-S form, the only one [`Verifier`] accepts.
    fn sign(&self, message: &[u8]) -> Signature {
        let signature: Signature = self.key.sign(message);
        signature.normalize_s()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.kid)
    }
}

fn parse_private_pem(text: &str) -> Result<SigningKey, String> {
    let (label, pem) = pem_block(text).ok_or("no PEM block")?;
    match label {
        "PRIVATE KEY" => p256::ecdsa::SigningKey::from_pkcs8_pem(pem)
            .map(SigningKey::new)
            .map_err(|e| format!("not a P-256 PKCS#8 private key: {e}")),
        "EC PRIVATE KEY" => p256::SecretKey::from_sec1_pem(pem)
            .map(|k| SigningKey::new(k.into()))
            .map_err(|e| format!("not a P-256 SEC1 private key: {e}")),
        other => Err(format!("unsupported PEM block {other:?}")),
    }
}

/// The first PEM block that is not `EC PARAMETERS` (which `openssl ecparam
/// -genkey` writes before the key): its label and the block itself.
fn pem_block(text: &str) -> Option<(&str, &str)> {
    let mut rest = text;
    loop {
        let begin = rest.find("-----BEGIN ")?;
        let label_start = begin + "-----BEGIN ".len();
        let label = &rest[label_start..label_start + rest[label_start..].find("-----")?];
        let end_marker = format!("-----END {label}-----");
        let end = rest[label_start..].find(&end_marker)? + label_start + end_marker.len();
        if label != "EC PARAMETERS" {
            return Some((label, &rest[begin..end]));
        }
        rest = &rest[end..];
    }
}

fn pem_label(text: &str) -> Option<&str> {
    pem_block(text).map(|(label, _)| label)
}

/// Every `*.pem` file of `dir`, sorted by file name.
fn read_pem_dir(dir: &Path) -> Result<Vec<(PathBuf, String)>, KeyError> {
    let io = |path: &Path, source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let path = entry.map_err(|e| io(dir, e))?.path();
        if path.extension().is_some_and(|e| e == "pem") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            std::fs::read_to_string(&p)
                .map(|t| (p.clone(), t))
                .map_err(|e| io(&p, e))
        })
        .collect()
}

/// The public keys a node trusts, by `kid`.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: BTreeMap<String, PublicKey>,
}

impl KeySet {
    pub fn new() -> KeySet {
        KeySet::default()
    }

    /// Every `*.pem` in `dir`: public keys, and the public half of private
    /// keys (so one directory serves a single node that both issues and
    /// verifies). Any other file content is an error: a key that silently
    /// failed to load would fail every token it signed.
    pub fn load_dir(dir: &Path) -> Result<KeySet, KeyError> {
        let mut set = KeySet::new();
        for (path, text) in read_pem_dir(dir)? {
            let key = match pem_block(&text) {
                Some(("PUBLIC KEY", pem)) => VerifyingKey::from_public_key_pem(pem)
                    .map(PublicKey::new)
                    .map_err(|e| invalid(&path, format!("not a P-256 public key: {e}")))?,
                Some((l, _)) if l.ends_with("PRIVATE KEY") => parse_private_pem(&text)
                    .map_err(|reason| invalid(&path, reason))?
                    .public_key(),
                Some((other, _)) => {
                    return Err(invalid(&path, format!("unsupported PEM block {other:?}")))
                }
                None => return Err(invalid(&path, "no PEM block")),
            };
            set.insert(key);
        }
        Ok(set)
    }

    pub fn insert(&mut self, key: PublicKey) {
        self.keys.insert(key.kid.clone(), key);
    }

    /// Stops trusting a key: tokens it signed fail from now on.
    pub fn remove(&mut self, kid: &str) -> bool {
        self.keys.remove(kid).is_some()
    }

    pub fn get(&self, kid: &str) -> Option<&PublicKey> {
        self.keys.get(kid)
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The claim set of a Docker registry token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: who signed it (Wharf's token service name).
    pub iss: String,
    /// Subject: the principal it was issued to; empty for anonymous.
    pub sub: String,
    /// Audience: the service (registry) it is for.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before, seconds since the epoch.
    pub nbf: u64,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// A unique id, for audit logs and replay checks.
    pub jti: String,
    /// What the bearer may do.
    pub access: Scope,
    /// The identity it was issued to (`uid`: an id never reused, unlike a
    /// subject name), absent for anonymous tokens and tokens of issuers
    /// that do not bind them. A verifier that knows identities refuses a
    /// named subject's token without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The credential generation of that identity when the token was
    /// issued (`gen`); it changes on a password or role change, deletion
    /// and revocation, and the token stops being honoured at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gen: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: std::borrow::Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    kid: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    typ: Option<std::borrow::Cow<'a, str>>,
    /// Present only to be refused: Wharf understands no JWS extension.
    #[serde(default, skip_serializing)]
    crit: Option<serde::de::IgnoredAny>,
}

/// Signs `claims` with `key` into a compact JWS (`header.payload.signature`).
pub fn encode(claims: &Claims, key: &SigningKey) -> String {
    let header = Header {
        alg: ALGORITHM.into(),
        kid: Some(key.kid().into()),
        typ: Some("JWT".into()),
        crit: None,
    };
    // Serialising structs of strings and integers cannot fail.
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let payload = serde_json::to_vec(claims).unwrap_or_default();
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(payload));
    let signature = key.sign(token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature.to_bytes()));
    token
}

/// Why a token was refused. The variants are for logs and metrics; a client
/// is only told `invalid_token`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLarge,
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    #[error("token algorithm {0:?} is not ES256")]
    Algorithm(String),
    #[error("token has no key id")]
    MissingKeyId,
    #[error("token key id {0:?} is not trusted")]
    UnknownKey(String),
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token issuer {0:?} is not trusted")]
    WrongIssuer(String),
    #[error("token audience {0:?} is not this service")]
    WrongAudience(String),
    #[error("token expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
}

/// Claims whose signature, issuer, audience and times were checked; only a
/// [`Verifier`] makes one, so [`Authorizer::check`] cannot be handed claims
/// that were merely decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedToken {
    claims: Claims,
    kid: String,
}

impl VerifiedToken {
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    pub fn subject(&self) -> &str {
        &self.claims.sub
    }

    /// The key that signed it.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

/// Checks tokens against trusted keys, one issuer and one audience, locally.
#[derive(Clone, Debug)]
pub struct Verifier {
    keys: KeySet,
    issuer: String,
    audience: String,
    leeway: u64,
}

impl Verifier {
    pub fn new(keys: KeySet, issuer: impl Into<String>, audience: impl Into<String>) -> Verifier {
        Verifier {
            keys,
            issuer: issuer.into(),
            audience: audience.into(),
            leeway: DEFAULT_LEEWAY.as_secs(),
        }
    }

    pub fn with_leeway(mut self, leeway: Duration) -> Verifier {
        self.leeway = leeway.as_secs();
        self
    }

    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    pub fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        self.verify_at(token, now_unix())
    }

    /// [`Verifier::verify`] at `now` (seconds since the epoch).
    pub fn verify_at(&self, token: &str, now: u64) -> Result<VerifiedToken, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLarge);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("not three dot-separated parts"));
        };
        let header_json = b64(header_b64, "header is not base64url")?;
        let header: Header<'_> = serde_json::from_slice(&header_json)
            .map_err(|_| TokenError::Malformed("header is not a JOSE header"))?;
        // The algorithm is fixed; the header can only agree with it.
        if header.alg != ALGORITHM {
            return Err(TokenError::Algorithm(header.alg.chars().take(16).collect()));
        }
        if header.crit.is_some() {
            return Err(TokenError::Malformed(
                "critical header extensions are not supported",
            ));
        }
        let kid = header.kid.ok_or(TokenError::MissingKeyId)?;
        let key = self
            .keys
            .get(&kid)
            .ok_or_else(|| TokenError::UnknownKey(kid.chars().take(64).collect()))?;

        let signature = b64(signature_b64, "signature is not base64url")?;
        let signature = Signature::from_slice(&signature).map_err(|_| TokenError::BadSignature)?;
        // Only the low-S form: a high-S twin of a valid signature verifies
        // too, and would make one token two different strings.
        if signature.normalize_s() != signature {
            return Err(TokenError::BadSignature);
        }
        let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
        key.key
            .verify(signing_input.as_bytes(), &signature)
            .map_err(|_| TokenError::BadSignature)?;

        // Only signed bytes are parsed past this point.
        let payload = b64(payload_b64, "payload is not base64url")?;
        let claims: Claims = serde_json::from_slice(&payload)
            .map_err(|_| TokenError::Malformed("claims are missing or of the wrong type"))?;
        if claims.iss != self.issuer {
            return Err(TokenError::WrongIssuer(
                claims.iss.chars().take(64).collect(),
            ));
        }
        if claims.aud != self.audience {
            return Err(TokenError::WrongAudience(
                claims.aud.chars().take(64).collect(),
            ));
        }
        if now >= claims.exp.saturating_add(self.leeway) {
            return Err(TokenError::Expired);
        }
        if claims.nbf > now.saturating_add(self.leeway) {
            return Err(TokenError::NotYetValid);
        }
        Ok(VerifiedToken {
            claims,
            kid: key.kid.clone(),
        })
    }
}

fn b64(part: &str, what: &'static str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed(what))
}

/// A verified token does not grant what a request needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token does not grant {action} on {resource}")]
pub struct Denied {
    pub resource: Resource,
    pub action: Action,
}

impl Denied {
    /// The access the request needed, for the challenge's `scope`.
    pub fn required(&self) -> Access {
        Access::new(
            self.resource.clone(),
            crate::scope::Actions::only(self.action),
        )
    }
}

/// Why a request with a bearer token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Answer `401` with `error="invalid_token"`.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Answer `401` with `error="insufficient_scope"` (Docker clients fetch
    /// a new token only after a 401).
    #[error(transparent)]
    Denied(#[from] Denied),
}

/// Verifies bearer tokens and checks them against what a request needs.
#[derive(Clone, Debug)]
pub struct Authorizer {
    verifier: Verifier,
}

impl Authorizer {
    pub fn new(verifier: Verifier) -> Authorizer {
        Authorizer { verifier }
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Verifies `token` and checks that it allows `action` on `resource`.
    pub fn authorize(
        &self,
        token: &str,
        resource: &Resource,
        action: Action,
    ) -> Result<VerifiedToken, AuthError> {
        let verified = self.verifier.verify(token)?;
        Authorizer::check_resource(&verified, resource, action)?;
        Ok(verified)
    }

    /// Whether a verified token allows `action` on repository `repo`. A
    /// request touching several repositories (a cross-repository mount)
    /// checks each; a push checks both `Pull` and `Push`, as distribution does.
    pub fn check(token: &VerifiedToken, repo: &RepoName, action: Action) -> Result<(), Denied> {
        Authorizer::check_resource(token, &Resource::Repository(repo.clone()), action)
    }

    /// [`Authorizer::check`] for any resource (`registry:catalog` for the
    /// catalog, with `Action::All`).
    pub fn check_resource(
        token: &VerifiedToken,
        resource: &Resource,
        action: Action,
    ) -> Result<(), Denied> {
        if token.claims.access.covers(resource, action) {
            Ok(())
        } else {
            Err(Denied {
                resource: resource.clone(),
                action,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "wharf-token";
    const AUD: &str = "registry.example";
    const NOW: u64 = 1_700_000_000;

    fn claims(access: &str) -> Claims {
        Claims {
            iss: ISS.into(),
            sub: "alice".into(),
            aud: AUD.into(),
            exp: NOW + 300,
            nbf: NOW,
            iat: NOW,
            jti: "j1".into(),
            uid: None,
            gen: None,
            access: access.parse().unwrap(),
        }
    }

    fn verifier_for(keys: &[&SigningKey]) -> Verifier {
        let mut set = KeySet::new();
        for k in keys {
            set.insert(k.public_key());
        }
        Verifier::new(set, ISS, AUD)
    }

    fn repo(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    #[test]
    fn issued_token_verifies_and_round_trips_claims() {
        let key = SigningKey::generate();
        let c = claims("repository:acme/app:pull,push");
        let token = encode(&c, &key);
        let v = verifier_for(&[&key]).verify_at(&token, NOW).unwrap();
        assert_eq!(v.claims(), &c);
        assert_eq!(v.kid(), key.kid());
        assert_eq!(v.subject(), "alice");
    }

    #[test]
    fn header_names_es256_jwt_and_the_kid() {
        let key = SigningKey::generate();
        let token = encode(&claims(""), &key);
        let header = URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap();
        let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["kid"], key.kid());
    }

    #[test]
    fn claims_serialise_with_the_docker_field_names() {
        let json = serde_json::to_value(claims("repository:a/b:pull")).unwrap();
        for field in ["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "access"] {
            assert!(json.get(field).is_some(), "{field} missing");
        }
        assert_eq!(json["access"][0]["type"], "repository");
        assert_eq!(json["access"][0]["name"], "a/b");
        assert_eq!(json["access"][0]["actions"][0], "pull");
    }

    #[test]
    fn kid_is_libtrust_shaped_and_stable_for_a_key() {
        let key = SigningKey::generate();
        let kid = key.kid();
        assert_eq!(kid.len(), 59);
        assert_eq!(kid.split(':').count(), 12);
        assert!(kid.split(':').all(|g| g.len() == 4
            && g.bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))));
        assert_eq!(key.public_key().kid(), kid);
        assert_ne!(SigningKey::generate().kid(), kid);
    }

    #[test]
    fn token_signed_with_old_key_verifies_while_old_key_is_in_the_set() {
        let old = SigningKey::generate();
        let new = SigningKey::generate();
        let token = encode(&claims(""), &old);
        let mut v = verifier_for(&[&old, &new]);
        assert!(v.verify_at(&token, NOW).is_ok());
        v.keys.remove(old.kid());
        assert!(matches!(
            v.verify_at(&token, NOW),
            Err(TokenError::UnknownKey(_))
        ));
    }

    #[test]
    fn unknown_kid_is_rejected() {
        let signer = SigningKey::generate();
        let trusted = SigningKey::generate();
        let token = encode(&claims(""), &signer);
        assert!(matches!(
            verifier_for(&[&trusted]).verify_at(&token, NOW),
            Err(TokenError::UnknownKey(_))
        ));
    }

    #[test]
    fn token_with_another_keys_signature_under_a_trusted_kid_is_rejected() {
        let trusted = SigningKey::generate();
        let attacker = SigningKey::generate();
        let token = encode(&claims(""), &trusted);
        let (input, _) = token.rsplit_once('.').unwrap();
        let forged = format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(attacker.sign(input.as_bytes()).to_bytes())
        );
        assert_eq!(
            verifier_for(&[&trusted]).verify_at(&forged, NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn missing_kid_is_rejected() {
        let key = SigningKey::generate();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims("")).unwrap());
        let input = format!("{header}.{payload}");
        let sig = URL_SAFE_NO_PAD.encode(key.sign(input.as_bytes()).to_bytes());
        assert_eq!(
            verifier_for(&[&key]).verify_at(&format!("{input}.{sig}"), NOW),
            Err(TokenError::MissingKeyId)
        );
    }

    #[test]
    fn crit_header_is_rejected() {
        let key = SigningKey::generate();
        let header = format!(r#"{{"alg":"ES256","kid":"{}","crit":["exp"]}}"#, key.kid());
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims("")).unwrap())
        );
        let sig = URL_SAFE_NO_PAD.encode(key.sign(input.as_bytes()).to_bytes());
        assert!(matches!(
            verifier_for(&[&key]).verify_at(&format!("{input}.{sig}"), NOW),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn string_typed_exp_is_rejected_not_ignored() {
        let key = SigningKey::generate();
        let header = format!(r#"{{"alg":"ES256","kid":"{}"}}"#, key.kid());
        let mut body = serde_json::to_value(claims("")).unwrap();
        body["exp"] = serde_json::Value::String("99999999999".into());
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&body).unwrap())
        );
        let sig = URL_SAFE_NO_PAD.encode(key.sign(input.as_bytes()).to_bytes());
        assert!(matches!(
            verifier_for(&[&key]).verify_at(&format!("{input}.{sig}"), NOW),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn wrong_issuer_is_rejected() {
        let key = SigningKey::generate();
        let mut c = claims("");
        c.iss = "someone-else".into();
        assert!(matches!(
            verifier_for(&[&key]).verify_at(&encode(&c, &key), NOW),
            Err(TokenError::WrongIssuer(_))
        ));
    }

    #[test]
    fn expiry_allows_the_leeway_and_no_more() {
        let key = SigningKey::generate();
        let c = claims("");
        let token = encode(&c, &key);
        let v = verifier_for(&[&key]);
        assert!(v.verify_at(&token, c.exp + 29).is_ok());
        assert_eq!(v.verify_at(&token, c.exp + 30), Err(TokenError::Expired));
        let strict = verifier_for(&[&key]).with_leeway(Duration::ZERO);
        assert_eq!(strict.verify_at(&token, c.exp), Err(TokenError::Expired));
    }

    #[test]
    fn not_before_allows_the_leeway_and_no_more() {
        let key = SigningKey::generate();
        let c = claims("");
        let token = encode(&c, &key);
        let v = verifier_for(&[&key]);
        assert!(v.verify_at(&token, c.nbf - 30).is_ok());
        assert_eq!(
            v.verify_at(&token, c.nbf - 31),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn check_allows_granted_action_on_granted_repository() {
        let key = SigningKey::generate();
        let token = encode(&claims("repository:acme/app:pull,push"), &key);
        let v = verifier_for(&[&key]).verify_at(&token, NOW).unwrap();
        assert!(Authorizer::check(&v, &repo("acme/app"), Action::Pull).is_ok());
        assert!(Authorizer::check(&v, &repo("acme/app"), Action::Push).is_ok());
    }

    #[test]
    fn check_denies_other_repository_and_other_action() {
        let key = SigningKey::generate();
        let token = encode(&claims("repository:acme/app:pull"), &key);
        let v = verifier_for(&[&key]).verify_at(&token, NOW).unwrap();
        let denied = Authorizer::check(&v, &repo("acme/app"), Action::Push).unwrap_err();
        assert_eq!(denied.required().to_string(), "repository:acme/app:push");
        assert!(Authorizer::check(&v, &repo("acme/other"), Action::Pull).is_err());
        assert!(Authorizer::check(&v, &repo("acme/app/sub"), Action::Pull).is_err());
    }

    #[test]
    fn wildcard_access_covers_delete_and_catalog_needs_its_own_entry() {
        let key = SigningKey::generate();
        let token = encode(&claims("repository:acme/app:*"), &key);
        let v = verifier_for(&[&key]).verify_at(&token, NOW).unwrap();
        assert!(Authorizer::check(&v, &repo("acme/app"), Action::Delete).is_ok());
        assert!(Authorizer::check_resource(&v, &Resource::catalog(), Action::All).is_err());
        let token = encode(&claims("registry:catalog:*"), &key);
        let v = verifier_for(&[&key]).verify_at(&token, NOW).unwrap();
        assert!(Authorizer::check_resource(&v, &Resource::catalog(), Action::All).is_ok());
    }

    #[test]
    fn authorize_reports_invalid_token_and_denial_apart() {
        let key = SigningKey::generate();
        let a = Authorizer::new(verifier_for(&[&key]));
        let mut c = claims("repository:acme/app:pull");
        c.exp = now_unix() + 300;
        c.nbf = now_unix();
        let token = encode(&c, &key);
        let app = Resource::Repository(repo("acme/app"));
        assert!(a.authorize(&token, &app, Action::Pull).is_ok());
        assert!(matches!(
            a.authorize(&token, &app, Action::Push),
            Err(AuthError::Denied(_))
        ));
        assert!(matches!(
            a.authorize("x.y.z", &app, Action::Pull),
            Err(AuthError::Token(_))
        ));
    }

    #[test]
    fn pem_round_trip_keeps_the_kid() {
        let key = SigningKey::generate();
        let again = SigningKey::from_pem(&key.to_pkcs8_pem()).unwrap();
        assert_eq!(again.kid(), key.kid());
        let public = PublicKey::from_pem(&key.public_key().to_pem()).unwrap();
        assert_eq!(public.kid(), key.kid());
    }

    #[test]
    fn sec1_ec_private_key_pem_loads() {
        let key = SigningKey::generate();
        let sec1 = p256::SecretKey::from(key.key.as_nonzero_scalar())
            .to_sec1_pem(LineEnding::LF)
            .unwrap();
        assert_eq!(SigningKey::from_pem(&sec1).unwrap().kid(), key.kid());
        // As `openssl ecparam -genkey` writes it: the curve's parameters first.
        let with_params = format!(
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{}",
            sec1.as_str()
        );
        assert_eq!(SigningKey::from_pem(&with_params).unwrap().kid(), key.kid());
    }

    #[test]
    fn key_set_loads_public_and_private_pems_from_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let a = SigningKey::generate();
        let b = SigningKey::generate();
        std::fs::write(dir.path().join("a.pem"), a.public_key().to_pem()).unwrap();
        std::fs::write(dir.path().join("b.pem"), b.to_pkcs8_pem()).unwrap();
        std::fs::write(dir.path().join("README.txt"), "not a key").unwrap();
        let set = KeySet::load_dir(dir.path()).unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.get(a.kid()).is_some() && set.get(b.kid()).is_some());
    }

    #[test]
    fn key_set_refuses_a_pem_that_is_not_a_p256_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cert.pem"),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(matches!(
            KeySet::load_dir(dir.path()),
            Err(KeyError::Invalid { .. })
        ));
    }

    #[test]
    fn load_newest_picks_the_private_key_whose_name_sorts_last() {
        let dir = tempfile::tempdir().unwrap();
        let old = SigningKey::generate();
        let new = SigningKey::generate();
        std::fs::write(dir.path().join("2025-01-01.pem"), old.to_pkcs8_pem()).unwrap();
        std::fs::write(dir.path().join("2025-06-01.pem"), new.to_pkcs8_pem()).unwrap();
        std::fs::write(
            dir.path().join("2099-public.pem"),
            SigningKey::generate().public_key().to_pem(),
        )
        .unwrap();
        assert_eq!(
            SigningKey::load_newest(dir.path()).unwrap().kid(),
            new.kid()
        );
    }

    #[test]
    fn load_newest_without_private_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            SigningKey::load_newest(dir.path()),
            Err(KeyError::NoSigningKey(_))
        ));
    }

    #[test]
    fn debug_output_never_shows_the_private_key() {
        let key = SigningKey::generate();
        let shown = format!("{key:?}");
        assert_eq!(shown, format!("SigningKey({})", key.kid()));
    }

    /// The example key of the distribution spec's "Token Authentication
    /// Implementation" page (x, y of its JWK).
    fn spec_example_key() -> VerifyingKey {
        let x = URL_SAFE_NO_PAD
            .decode("m7zUpx3b-zmVE5cymSs64POG9QcyEpJaYCD82-549_Q")
            .unwrap();
        let y = URL_SAFE_NO_PAD
            .decode("dU3biz8sZ_8GPB-odm8Wxz3lNDr1xcAQQPQaOcr1fmc")
            .unwrap();
        let point = [&[4u8][..], &x, &y].concat();
        VerifyingKey::from_sec1_bytes(&point).unwrap()
    }

    #[test]
    fn kid_matches_the_spec_example() {
        assert_eq!(
            key_id(&spec_example_key()),
            "PYYO:TEWU:V7JH:26JV:AQTZ:LJC3:SXVJ:XGHA:34F2:2LAQ:ZRMK:Z7Q6"
        );
    }

    /// The spec page's example token itself does not verify (its signature
    /// fails under OpenSSL too), so this signs the page's claim set with the
    /// page's private key `d` and checks the rest of the example.
    #[test]
    fn spec_example_key_and_claims_make_a_token_that_verifies() {
        let d = URL_SAFE_NO_PAD
            .decode("R7OnbfMaD5J2jl7GeE8ESo7CnHSBm_1N2k9IXYFrKJA")
            .unwrap();
        let key = SigningKey::new(p256::ecdsa::SigningKey::from_slice(&d).unwrap());
        assert_eq!(key.public_key().key, spec_example_key());
        assert_eq!(
            key.kid(),
            "PYYO:TEWU:V7JH:26JV:AQTZ:LJC3:SXVJ:XGHA:34F2:2LAQ:ZRMK:Z7Q6"
        );
        let claims: Claims = serde_json::from_str(
            r#"{"iss":"auth.docker.com","sub":"jlhawn","aud":"registry.docker.com","exp":1415387315,"nbf":1415387015,"iat":1415387015,"jti":"tYJCO1c6cnyy7kAn0c7rKPgbV1H1bFws","access":[{"type":"repository","name":"samalba/my-app","actions":["push"]}]}"#,
        )
        .unwrap();
        let token = encode(&claims, &key);
        let mut keys = KeySet::new();
        keys.insert(PublicKey::new(spec_example_key()));
        let v = Verifier::new(keys, "auth.docker.com", "registry.docker.com")
            .verify_at(&token, 1_415_387_100)
            .unwrap();
        assert_eq!(v.subject(), "jlhawn");
        assert!(Authorizer::check(&v, &repo("samalba/my-app"), Action::Push).is_ok());
        assert!(Authorizer::check(&v, &repo("samalba/my-app"), Action::Pull).is_err());
    }
}
