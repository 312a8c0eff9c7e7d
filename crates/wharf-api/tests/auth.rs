//! Authentication on a real server: bearer tokens (fetched from the
//! node's own `/auth/token`), htpasswd Basic, anonymous pull, and the
//! refusals (`401` with the right challenge) for everything else.

mod common;

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::*;
use reqwest::Method;
use wharf_api::auth::{parse_grants, parse_patterns, Auth, TokenService, Users};
use wharf_auth::{
    encode, BasicChallenge, BearerChallenge, Claims, Htpasswd, Issuer, KeySet, SigningKey, Verifier,
};

const SERVICE: &str = "wharf-test";
const ISSUER: &str = "wharf-test-issuer";
const REALM: &str = "http://registry.test/auth/token";

fn users() -> Arc<Users> {
    let line = |u: &str| format!("{u}:{}\n", bcrypt::hash(format!("{u}-pw"), 4).unwrap());
    let htpasswd = Htpasswd::parse(&format!(
        "{}{}{}",
        line("alice"),
        line("bob"),
        line("carol")
    ))
    .unwrap();
    let grants = parse_grants(
        r#"
[[user]]
name = "alice"
grants = ["acme/*:pull,push,delete", "public/*:pull,push"]
[[user]]
name = "bob"
grants = ["globex/*:pull,push"]
[[user]]
name = "carol"
grants = ["acme/app:pull"]
"#,
    )
    .unwrap();
    Arc::new(Users::new(htpasswd, Some(grants)))
}

/// A server in token mode that also issues tokens; anyone may pull
/// `anonymous`.
async fn token_server(anonymous: &[&str]) -> (Server, SigningKey) {
    let key = SigningKey::generate();
    let mut keys = KeySet::new();
    keys.insert(key.public_key());
    let anonymous: Arc<[_]> = parse_patterns(anonymous).unwrap().into();
    let issuer = Issuer::new(key.clone(), ISSUER, SERVICE);
    // Refresh tokens live in a metadata store of their own here.
    let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
    let store = Arc::new(
        wharf_meta::embedded::EmbeddedStore::open(dir.path().join("refresh.redb")).unwrap(),
    );
    let users = users();
    let tokens = TokenService::new(
        users.clone(),
        issuer,
        SERVICE,
        BasicChallenge::new("wharf").unwrap(),
        anonymous.clone(),
        store,
    );
    let server = Server::start_with(|s| {
        s.auth = Auth::Token {
            verifier: Arc::new(Verifier::new(keys, ISSUER, SERVICE)),
            challenge: BearerChallenge::new(REALM, SERVICE).unwrap(),
            anonymous_pull: anonymous,
            identities: Some(users),
        };
        s.token_service = Some(Arc::new(tokens));
    })
    .await;
    (server, key)
}

/// A token from the server's endpoint for `user` (its password is
/// `<user>-pw`) asking for `scope`.
async fn token(s: &Server, user: &str, scope: &str) -> String {
    let r = s
        .req(Method::GET, "/auth/token")
        .query(&[("service", SERVICE), ("scope", scope)])
        .basic_auth(user, Some(format!("{user}-pw")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["token"], v["access_token"]);
    assert!(v["expires_in"].as_u64().unwrap() >= 60);
    assert!(v["issued_at"].as_str().unwrap().ends_with('Z'));
    v["token"].as_str().unwrap().to_string()
}

/// Pushes a small image with `token`; the status of the first refused
/// request, or 201.
async fn push_with(s: &Server, repo: &str, token: &str) -> (u16, String) {
    let config = b"{\"a\":1}".to_vec();
    let d = sha256(&config);
    let r = s
        .req(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
        )
        .bearer_auth(token)
        .body(config.clone())
        .send()
        .await
        .unwrap();
    if r.status() != 201 {
        return (r.status().as_u16(), header(&r, "www-authenticate"));
    }
    let body = image_manifest(&d, config.len(), &d, config.len(), "");
    let r = s
        .req(Method::PUT, &format!("/v2/{repo}/manifests/v1"))
        .bearer_auth(token)
        .header("content-type", OCI_MANIFEST)
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), header(&r, "www-authenticate"))
}

async fn get_manifest(s: &Server, repo: &str, token: Option<&str>) -> reqwest::Response {
    let mut r = s
        .req(Method::GET, &format!("/v2/{repo}/manifests/v1"))
        .header("accept", OCI_MANIFEST);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn no_credentials_gets_401_and_a_bearer_challenge() {
    let (s, _) = token_server(&[]).await;
    let r = s.req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        header(&r, "www-authenticate"),
        format!("Bearer realm=\"{REALM}\",service=\"{SERVICE}\"")
    );
    assert_eq!(error_code(r).await, "UNAUTHORIZED");
    let r = get_manifest(&s, "acme/app", None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        header(&r, "www-authenticate"),
        format!(
            "Bearer realm=\"{REALM}\",service=\"{SERVICE}\",scope=\"repository:acme/app:pull\""
        )
    );
    let r = s.req(Method::GET, "/v2/_catalog").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(header(&r, "www-authenticate").contains("scope=\"registry:catalog:*\""));
}

#[tokio::test]
async fn token_flow_pushes_and_pulls() {
    let (s, _) = token_server(&[]).await;
    let t = token(&s, "alice", "repository:acme/app:pull,push").await;
    let r = s
        .req(Method::GET, "/v2/")
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(push_with(&s, "acme/app", &t).await.0, 201);
    assert_eq!(get_manifest(&s, "acme/app", Some(&t)).await.status(), 200);
    // Asking for more than granted is not an error: the token carries less.
    let t = token(&s, "carol", "repository:acme/app:pull,push,delete").await;
    assert_eq!(get_manifest(&s, "acme/app", Some(&t)).await.status(), 200);
}

#[tokio::test]
async fn pull_token_used_to_push_is_insufficient_scope() {
    let (s, _) = token_server(&[]).await;
    let t = token(&s, "carol", "repository:acme/app:pull,push").await;
    let (status, challenge) = push_with(&s, "acme/app", &t).await;
    assert_eq!(status, 401);
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("scope=\"repository:acme/app:pull,push\""),
        "{challenge}"
    );
}

#[tokio::test]
async fn token_for_one_repository_is_refused_on_another() {
    let (s, _) = token_server(&[]).await;
    let t = token(&s, "alice", "repository:acme/app:pull,push").await;
    let (status, challenge) = push_with(&s, "acme/other", &t).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("insufficient_scope"));
    // Another tenant's grants yield nothing on acme, asked for in any form.
    let t = token(&s, "bob", "repository:acme/app:pull,push").await;
    let r = get_manifest(&s, "acme/app", Some(&t)).await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn tenant_name_tricks_are_refused() {
    let (s, _) = token_server(&[]).await;
    let alice = token(&s, "alice", "repository:acme/app:pull,push").await;
    assert_eq!(push_with(&s, "acme/app", &alice).await.0, 201);
    let bob = token(&s, "bob", "repository:globex/app:pull").await;
    let auth = format!("Authorization: Bearer {bob}\r\n");
    for path in [
        "/v2/ACME/app/manifests/v1",
        "/v2/globex/../acme/app/manifests/v1",
        "/v2/globex/%2e%2e/acme/app/manifests/v1",
        "/v2/acme%2fapp/manifests/v1",
        "/v2/globex%2f..%2facme%2fapp/manifests/v1",
        "/v2/acme/app/manifests/v1",
    ] {
        let (status, body) = s.raw_get_with(path, &auth).await;
        assert!(matches!(status, 400 | 401 | 404), "{path}: {status} {body}");
        assert!(!body.contains("schemaVersion"), "{path} leaked: {body}");
    }
    // A scope naming a repository by a trick is refused, never normalised.
    for scope in [
        "repository:ACME/app:pull",
        "repository:globex/../acme/app:pull",
        "repository:acme%2fapp:pull",
    ] {
        let r = s
            .req(Method::GET, "/auth/token")
            .query(&[("service", SERVICE), ("scope", scope)])
            .basic_auth("bob", Some("bob-pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{scope}");
    }
}

fn claims(access: &str, exp_from_now: i64) -> Claims {
    let now = wharf_auth::token::now_unix();
    Claims {
        iss: ISSUER.into(),
        sub: "mallory".into(),
        aud: SERVICE.into(),
        exp: (now as i64 + exp_from_now) as u64,
        nbf: now - 600,
        iat: now - 600,
        jti: "j".into(),
        uid: None,
        gen: None,
        access: access.parse().unwrap(),
    }
}

async fn expect_invalid_token(s: &Server, token: &str, why: &str) {
    let r = get_manifest(s, "acme/app", Some(token)).await;
    assert_eq!(r.status(), 401, "{why}");
    assert!(
        header(&r, "www-authenticate").contains("error=\"invalid_token\""),
        "{why}"
    );
}

#[tokio::test]
async fn forged_unsigned_and_expired_tokens_are_refused() {
    let (s, key) = token_server(&[]).await;
    let access = "repository:acme/app:pull";
    // Signed by a key the server does not trust.
    let other = SigningKey::generate();
    expect_invalid_token(&s, &encode(&claims(access, 300), &other), "unknown key").await;
    // The trusted key's kid, someone else's signature.
    let good = encode(&claims(access, 300), &key);
    let forged = encode(&claims(access, 300), &other);
    let (g, f) = (
        good.rsplit_once('.').unwrap(),
        forged.rsplit_once('.').unwrap(),
    );
    let header_of_good = g.0.split('.').next().unwrap();
    let payload_of_forged = f.0.split('.').nth(1).unwrap();
    expect_invalid_token(
        &s,
        &format!("{header_of_good}.{payload_of_forged}.{}", f.1),
        "forged signature",
    )
    .await;
    // A tampered payload under a valid signature.
    let wider = encode(&claims("repository:acme/app:pull,push", 300), &other);
    let wider_payload = wider.split('.').nth(1).unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    expect_invalid_token(
        &s,
        &format!("{}.{wider_payload}.{}", parts[0], parts[2]),
        "tampered payload",
    )
    .await;
    // alg: none, with and without a signature.
    let none = URL_SAFE_NO_PAD.encode(format!(
        "{{\"alg\":\"none\",\"typ\":\"JWT\",\"kid\":\"{}\"}}",
        key.kid()
    ));
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(access, 300)).unwrap());
    expect_invalid_token(&s, &format!("{none}.{payload}."), "alg none").await;
    expect_invalid_token(&s, &format!("{none}.{payload}.{}", parts[2]), "alg none").await;
    // Expired (past the leeway), though signed by the trusted key.
    expect_invalid_token(&s, &encode(&claims(access, -120), &key), "expired").await;
    expect_invalid_token(&s, "not-a-token", "garbage").await;
    // Signed with the trusted key, but for a subject no account is
    // (and without the identity every issued token carries): refused.
    expect_invalid_token(&s, &good, "a subject nobody is").await;
    // A token the endpoint issued passes (the manifest does not exist).
    let issued = token(&s, "alice", access).await;
    let r = get_manifest(&s, "acme/app", Some(&issued)).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn oversized_authorization_header_is_refused_at_once() {
    let (s, _) = token_server(&["public/*"]).await;
    let huge = "a".repeat(9 * 1024);
    let r = get_manifest(&s, "public/app", Some(&huge)).await;
    assert!(matches!(r.status().as_u16(), 400 | 401), "{}", r.status());
    assert_eq!(error_code(r).await, "UNSUPPORTED");
}

#[tokio::test]
async fn anonymous_pull_where_configured_and_push_still_refused() {
    let (s, _) = token_server(&["public/*"]).await;
    let alice = token(&s, "alice", "repository:public/app:pull,push").await;
    assert_eq!(push_with(&s, "public/app", &alice).await.0, 201);
    assert_eq!(get_manifest(&s, "public/app", None).await.status(), 200);
    // `/v2/` still challenges, or clients would never send credentials.
    let r = s.req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = s
        .req(Method::POST, "/v2/public/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(header(&r, "www-authenticate").contains("repository:public/app:pull,push"));
    assert_eq!(get_manifest(&s, "acme/app", None).await.status(), 401);
    // Anonymous tokens from the endpoint carry only anonymous pulls.
    let r = s
        .req(Method::GET, "/auth/token")
        .query(&[
            ("service", SERVICE),
            ("scope", "repository:public/app:pull,push"),
        ])
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    let t = v["token"].as_str().unwrap();
    assert_eq!(push_with(&s, "public/app", t).await.0, 401);
    assert_eq!(get_manifest(&s, "public/app", Some(t)).await.status(), 200);
}

#[tokio::test]
async fn token_endpoint_refuses_wrong_password_and_serves_refresh_tokens() {
    let (s, _) = token_server(&[]).await;
    let r = s
        .req(Method::GET, "/auth/token")
        .query(&[("service", SERVICE)])
        .basic_auth("alice", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(header(&r, "www-authenticate"), "Basic realm=\"wharf\"");
    let r = s
        .req(Method::GET, "/auth/token")
        .query(&[("service", "elsewhere")])
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a service this issuer does not serve");

    let form = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", v.replace(':', "%3A").replace('/', "%2F")))
            .collect::<Vec<_>>()
            .join("&")
    };
    let r = s
        .req(Method::POST, "/auth/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "alice-pw"),
            ("service", SERVICE),
            ("scope", "repository:acme/app:pull"),
            ("client_id", "test"),
            ("access_type", "offline"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["scope"], "repository:acme/app:pull");
    let refresh = v["refresh_token"].as_str().unwrap().to_string();
    assert!(refresh.starts_with("wharf_rt_"));
    let r = s
        .req(Method::POST, "/auth/token")
        .body(form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("service", SERVICE),
            ("scope", "repository:acme/app:pull,push"),
            ("client_id", "test"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let t = v["access_token"].as_str().unwrap();
    assert_eq!(push_with(&s, "acme/app", t).await.0, 201);
    let r = s
        .req(Method::POST, "/auth/token")
        .body(form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "wharf_rt_guessed"),
            ("service", SERVICE),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn htpasswd_mode_checks_passwords_and_grants() {
    let s = Server::start_with(|s| {
        s.auth = Auth::Htpasswd {
            users: users(),
            challenge: BasicChallenge::new("wharf").unwrap(),
            anonymous_pull: Arc::from(Vec::new()),
        };
    })
    .await;
    let get = |user: &str, pw: &str, path: &str| {
        s.req(Method::GET, path)
            .basic_auth(user, Some(pw.to_string()))
            .send()
    };
    let r = s.req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(header(&r, "www-authenticate"), "Basic realm=\"wharf\"");
    let r = get("alice", "wrong", "/v2/").await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(error_code(r).await, "UNAUTHORIZED");
    let r = get("nobody", "nobody-pw", "/v2/").await.unwrap();
    assert_eq!(r.status(), 401);
    // Twice: the second answer comes from the cache.
    for _ in 0..2 {
        let r = get("alice", "alice-pw", "/v2/").await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = get("carol", "carol-pw", "/v2/acme/app/manifests/v1")
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "allowed, and the manifest is unknown");
    let r = get("carol", "carol-pw", "/v2/acme/other/manifests/v1")
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(error_code(r).await, "DENIED");
    let r = s
        .req(Method::POST, "/v2/acme/app/blobs/uploads/")
        .basic_auth("carol", Some("carol-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "carol may only pull");
}

#[tokio::test]
async fn unauthenticated_requests_never_take_admission_slots() {
    use std::time::Duration;
    use wharf_admission::{Admission, Class, ClassLimits};
    let limits = ClassLimits {
        max_in_flight: 1,
        tenant_share: 1.0,
        max_wait: Duration::from_millis(1),
        max_waiters: 1,
        adaptive: None,
    };
    let admission = Admission::new(limits.clone(), limits.clone(), limits);
    let (key, mut keys) = (SigningKey::generate(), KeySet::new());
    keys.insert(key.public_key());
    let held = admission.clone();
    let s = Server::start_with(|s| {
        s.admission = Some(admission);
        s.auth = Auth::Token {
            verifier: Arc::new(Verifier::new(keys, ISSUER, SERVICE)),
            challenge: BearerChallenge::new(REALM, SERVICE).unwrap(),
            anonymous_pull: Arc::from(Vec::new()),
            identities: None,
        };
    })
    .await;
    // The pull class is full: someone holds its only slot.
    let _slot = held.acquire(Class::Pull, "acme").await.unwrap();
    // Without a valid token: 401 at once, not a wait for (or 503 from) a slot.
    for _ in 0..20 {
        let r = get_manifest(&s, "acme/app", Some("forged")).await;
        assert_eq!(r.status(), 401);
        let r = get_manifest(&s, "acme/app", None).await;
        assert_eq!(r.status(), 401);
    }
    // With one, the request reaches admission and is refused there.
    let good = encode(&claims("repository:acme/app:pull", 300), &key);
    let r = get_manifest(&s, "acme/app", Some(&good)).await;
    assert_eq!(r.status(), 503);
}
