//! The attacks a registry's token check must withstand, end to end through
//! the library's public API: an issuer signs, a verifier with only public keys
//! checks, the authorizer decides.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use wharf_auth::token::{now_unix, MAX_TOKEN_LEN};
use wharf_auth::{
    encode, Access, Action, Actions, Authorizer, Claims, Grant, Issuer, KeySet, Principal,
    RepoPattern, Resource, Scope, ScopeError, SigningKey, TokenError, Verifier,
};
use wharf_core::RepoName;

const ISS: &str = "wharf-token";
const AUD: &str = "registry.example";

struct World {
    key: SigningKey,
    issuer: Issuer,
    verifier: Verifier,
    now: u64,
}

fn world() -> World {
    let key = SigningKey::generate();
    let mut keys = KeySet::new();
    keys.insert(key.public_key());
    World {
        issuer: Issuer::new(key.clone(), ISS, AUD),
        verifier: Verifier::new(keys, ISS, AUD),
        key,
        now: now_unix(),
    }
}

fn repo(s: &str) -> RepoName {
    s.parse().unwrap()
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn parts(token: &str) -> (String, String, String) {
    let mut it = token.split('.').map(str::to_string);
    (it.next().unwrap(), it.next().unwrap(), it.next().unwrap())
}

/// Claims a real issuer would sign for `access`, valid now.
fn claims(w: &World, access: &str) -> Claims {
    Claims {
        iss: ISS.into(),
        sub: "mallory".into(),
        aud: AUD.into(),
        exp: w.now + 300,
        nbf: w.now,
        iat: w.now,
        jti: "jti-1".into(),
        uid: None,
        gen: None,
        access: access.parse().unwrap(),
    }
}

fn payload_b64(c: &Claims) -> String {
    b64(serde_json::to_vec(c).unwrap())
}

/// HMAC-SHA256 (RFC 2104), written out so the test needs no HMAC crate.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

#[test]
fn genuine_token_passes_so_the_rejections_below_mean_something() {
    let w = world();
    let c = claims(&w, "repository:acme/app:pull");
    let v = w.verifier.verify(&encode(&c, &w.key)).unwrap();
    assert!(Authorizer::check(&v, &repo("acme/app"), Action::Pull).is_ok());
}

#[test]
fn forged_signature_is_rejected() {
    let w = world();
    let token = encode(&claims(&w, "repository:acme/app:pull"), &w.key);
    let (h, p, s) = parts(&token);
    let mut sig = URL_SAFE_NO_PAD.decode(&s).unwrap();
    sig[10] ^= 0x01;
    let forged = format!("{h}.{p}.{}", b64(&sig));
    assert_eq!(w.verifier.verify(&forged), Err(TokenError::BadSignature));
}

#[test]
fn signature_by_an_untrusted_key_under_the_trusted_kid_is_rejected() {
    let w = world();
    let attacker = SigningKey::generate();
    let (_, _, attacker_sig) = parts(&encode(&claims(&w, "repository:acme/app:push"), &attacker));
    let (h, p, _) = parts(&encode(&claims(&w, "repository:acme/app:push"), &w.key));
    let forged = format!("{h}.{p}.{attacker_sig}");
    assert_eq!(w.verifier.verify(&forged), Err(TokenError::BadSignature));
}

#[test]
fn claims_edited_after_signing_are_rejected() {
    let w = world();
    let (h, _, s) = parts(&encode(&claims(&w, "repository:acme/app:pull"), &w.key));
    let escalated = payload_b64(&claims(&w, "repository:acme/app:pull,push,delete"));
    assert_eq!(
        w.verifier.verify(&format!("{h}.{escalated}.{s}")),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn der_encoded_signature_is_rejected() {
    let w = world();
    let (h, p, s) = parts(&encode(&claims(&w, ""), &w.key));
    let raw = URL_SAFE_NO_PAD.decode(s).unwrap();
    // An ASN.1 SEQUENCE of two INTEGERs, the form some libraries emit.
    let mut der = vec![0x30, 68, 0x02, 32];
    der.extend_from_slice(&raw[..32]);
    der.extend_from_slice(&[0x02, 32]);
    der.extend_from_slice(&raw[32..]);
    assert_eq!(
        w.verifier.verify(&format!("{h}.{p}.{}", b64(der))),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn alg_none_token_is_rejected() {
    let w = world();
    let p = payload_b64(&claims(&w, "repository:acme/app:*"));
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = b64(format!(
            r#"{{"alg":"{alg}","kid":"{}","typ":"JWT"}}"#,
            w.key.kid()
        ));
        for token in [format!("{h}.{p}."), format!("{h}.{p}")] {
            assert!(
                matches!(
                    w.verifier.verify(&token),
                    Err(TokenError::Algorithm(_) | TokenError::Malformed(_))
                ),
                "{alg}: {token}"
            );
        }
        assert_eq!(
            w.verifier.verify(&format!("{h}.{p}.")),
            Err(TokenError::Algorithm(alg.into()))
        );
    }
}

#[test]
fn hs256_token_keyed_with_the_public_key_is_rejected() {
    // The classic confusion: a verifier that lets the header pick HMAC would
    // use the (public) verification key as the HMAC secret.
    let w = world();
    let public_pem = w.key.public_key().to_pem();
    let h = b64(format!(
        r#"{{"alg":"HS256","kid":"{}","typ":"JWT"}}"#,
        w.key.kid()
    ));
    let p = payload_b64(&claims(&w, "repository:acme/app:*"));
    let input = format!("{h}.{p}");
    for secret in [public_pem.as_bytes(), public_pem.trim_end().as_bytes()] {
        let token = format!("{input}.{}", b64(hmac_sha256(secret, input.as_bytes())));
        assert_eq!(
            w.verifier.verify(&token),
            Err(TokenError::Algorithm("HS256".into()))
        );
    }
}

#[test]
fn every_algorithm_but_es256_is_rejected_even_with_a_valid_es256_signature() {
    let w = world();
    let p = payload_b64(&claims(&w, "repository:acme/app:pull"));
    for alg in [
        "ES384", "ES512", "RS256", "PS256", "EdDSA", "HS512", "es256", "ES256 ", "",
    ] {
        let h = b64(format!(r#"{{"alg":"{alg}","kid":"{}"}}"#, w.key.kid()));
        // The signature is genuine; only the header's algorithm is wrong.
        let token = sign_raw(&w.key, &format!("{h}.{p}"));
        assert!(
            matches!(w.verifier.verify(&token), Err(TokenError::Algorithm(_))),
            "{alg:?} not refused as an algorithm"
        );
    }
}

#[test]
fn missing_alg_is_rejected() {
    let w = world();
    let h = b64(format!(r#"{{"kid":"{}"}}"#, w.key.kid()));
    let (_, p, s) = parts(&encode(&claims(&w, ""), &w.key));
    assert!(matches!(
        w.verifier.verify(&format!("{h}.{p}.{s}")),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn unknown_or_path_like_kid_is_rejected() {
    let w = world();
    let (_, p, s) = parts(&encode(&claims(&w, ""), &w.key));
    for kid in ["AAAA:BBBB", "../../etc/passwd", "", "*"] {
        let h = b64(format!(r#"{{"alg":"ES256","kid":"{kid}"}}"#));
        assert!(
            matches!(
                w.verifier.verify(&format!("{h}.{p}.{s}")),
                Err(TokenError::UnknownKey(_))
            ),
            "{kid:?}"
        );
    }
}

#[test]
fn expired_token_is_rejected() {
    let w = world();
    let mut c = claims(&w, "repository:acme/app:pull");
    c.iat = w.now - 600;
    c.nbf = w.now - 600;
    c.exp = w.now - 31;
    assert_eq!(
        w.verifier.verify(&encode(&c, &w.key)),
        Err(TokenError::Expired)
    );
}

#[test]
fn token_from_the_future_is_rejected() {
    let w = world();
    let mut c = claims(&w, "repository:acme/app:pull");
    c.nbf = w.now + 3600;
    c.iat = w.now + 3600;
    c.exp = w.now + 7200;
    assert_eq!(
        w.verifier.verify(&encode(&c, &w.key)),
        Err(TokenError::NotYetValid)
    );
}

#[test]
fn wrong_audience_is_rejected() {
    let w = world();
    let mut c = claims(&w, "repository:acme/app:pull");
    c.aud = "other-registry.example".into();
    assert_eq!(
        w.verifier.verify(&encode(&c, &w.key)),
        Err(TokenError::WrongAudience("other-registry.example".into()))
    );
}

#[test]
fn array_audience_is_rejected_as_malformed() {
    let w = world();
    let mut body = serde_json::to_value(claims(&w, "")).unwrap();
    body["aud"] = serde_json::json!([AUD, "other"]);
    let h = b64(format!(r#"{{"alg":"ES256","kid":"{}"}}"#, w.key.kid()));
    let input = format!("{h}.{}", b64(serde_json::to_vec(&body).unwrap()));
    // Refused for its shape, not read as "the audiences include us".
    let token = sign_raw(&w.key, &input);
    assert!(matches!(
        w.verifier.verify(&token),
        Err(TokenError::Malformed(_))
    ));
}

/// A genuine ES256 signature by a trusted key over any `header.payload`, so
/// a test can show the verifier refuses a token's shape even when its
/// signature is real (`encode` only ever writes well-formed tokens).
fn sign_raw(key: &SigningKey, input: &str) -> String {
    use p256::ecdsa::signature::Signer as _;
    let pem = key.to_pkcs8_pem();
    let raw =
        <p256::ecdsa::SigningKey as p256::pkcs8::DecodePrivateKey>::from_pkcs8_pem(&pem).unwrap();
    let sig: p256::ecdsa::Signature = raw.sign(input.as_bytes());
    // Low-S, as a genuine issuer signs (the verifier refuses the twin).
    format!("{input}.{}", b64(sig.normalize_s().to_bytes()))
}

#[test]
fn wrong_issuer_is_rejected() {
    let w = world();
    let mut c = claims(&w, "repository:acme/app:pull");
    c.iss = "evil-issuer".into();
    assert!(matches!(
        w.verifier.verify(&encode(&c, &w.key)),
        Err(TokenError::WrongIssuer(_))
    ));
}

#[test]
fn token_for_repository_a_does_not_open_repository_b() {
    let w = world();
    let v = w
        .verifier
        .verify(&encode(
            &claims(&w, "repository:acme/app:pull,push"),
            &w.key,
        ))
        .unwrap();
    for other in [
        "acme/other",
        "globex/app",
        "acme/app/sub",
        "acme",
        "acme/ap",
    ] {
        assert!(
            Authorizer::check(&v, &repo(other), Action::Pull).is_err(),
            "{other} opened"
        );
    }
}

#[test]
fn pull_token_cannot_push_or_delete() {
    let w = world();
    let v = w
        .verifier
        .verify(&encode(&claims(&w, "repository:acme/app:pull"), &w.key))
        .unwrap();
    let denied = Authorizer::check(&v, &repo("acme/app"), Action::Push).unwrap_err();
    assert_eq!(denied.required().to_string(), "repository:acme/app:push");
    assert!(Authorizer::check(&v, &repo("acme/app"), Action::Delete).is_err());
    assert!(Authorizer::check_resource(&v, &Resource::catalog(), Action::All).is_err());
}

#[test]
fn issuer_never_grants_beyond_the_principal_even_when_asked() {
    let w = world();
    let alice = Principal::new(
        "alice",
        vec![Grant::new(
            "acme/*".parse::<RepoPattern>().unwrap(),
            Actions::only(Action::Pull),
        )],
    );
    let asked: Scope =
        "repository:acme/app:pull,push,delete repository:globex/app:* registry:catalog:* widget:x:pull"
            .parse()
            .unwrap();
    let t = w.issuer.issue(&alice, &asked, AUD).unwrap();
    assert_eq!(t.access.to_string(), "repository:acme/app:pull");
    let v = w.verifier.verify(&t.token).unwrap();
    assert!(Authorizer::check(&v, &repo("acme/app"), Action::Pull).is_ok());
    assert!(Authorizer::check(&v, &repo("acme/app"), Action::Push).is_err());
    assert!(Authorizer::check(&v, &repo("globex/app"), Action::Pull).is_err());
}

#[test]
fn tenant_prefix_grant_does_not_reach_a_lookalike_tenant() {
    let w = world();
    let acme = Principal::new(
        "ci",
        vec![Grant::new(
            "acme/*".parse::<RepoPattern>().unwrap(),
            Actions::ALL,
        )],
    );
    let asked: Scope =
        "repository:acme-evil/app:pull repository:acmecorp/app:pull repository:acme:pull"
            .parse()
            .unwrap();
    assert!(w
        .issuer
        .issue(&acme, &asked, AUD)
        .unwrap()
        .access
        .is_empty());
}

#[test]
fn case_dotdot_and_encoded_slash_names_are_refused_in_scopes() {
    for trick in [
        "repository:ACME/app:pull",
        "repository:Acme/App:pull",
        "repository:acme/../other/app:pull",
        "repository:acme/./app:pull",
        "repository:acme%2fapp:pull",
        "repository:acme%2Fapp:pull",
        "repository:acme/app%00:pull",
        "repository:acme\\app:pull",
        "repository:acme/app/:pull",
    ] {
        assert!(
            matches!(trick.parse::<Scope>(), Err(ScopeError::Name { .. })),
            "{trick} accepted"
        );
    }
    for trick in ["ACME/app", "acme/../other/app", "acme%2fapp"] {
        assert!(trick.parse::<RepoName>().is_err(), "{trick} is a RepoName");
        assert!(
            trick.parse::<RepoPattern>().is_err(),
            "{trick} is a pattern"
        );
    }
}

#[test]
fn signed_token_whose_access_names_a_trick_repository_is_rejected() {
    let w = world();
    let mut body = serde_json::to_value(claims(&w, "")).unwrap();
    body["access"] = serde_json::json!([
        {"type": "repository", "name": "acme/../globex/app", "actions": ["push"]}
    ]);
    let h = b64(format!(r#"{{"alg":"ES256","kid":"{}"}}"#, w.key.kid()));
    let token = sign_raw(
        &w.key,
        &format!("{h}.{}", b64(serde_json::to_vec(&body).unwrap())),
    );
    assert!(matches!(
        w.verifier.verify(&token),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn oversized_token_is_rejected_before_parsing() {
    let w = world();
    // Not even three parts: a parser would call it malformed; the size check
    // must come first.
    let junk = "A".repeat(MAX_TOKEN_LEN + 1);
    assert_eq!(w.verifier.verify(&junk), Err(TokenError::TooLarge));
    // A genuinely signed token that is too big is refused too.
    let big: Scope = (0..200)
        .map(|i| Access::repository(repo(&format!("acme/repository-number-{i}")), Actions::ALL))
        .collect();
    let mut c = claims(&w, "");
    c.access = big;
    let token = encode(&c, &w.key);
    assert!(token.len() > MAX_TOKEN_LEN);
    assert_eq!(w.verifier.verify(&token), Err(TokenError::TooLarge));
    // Exactly at the limit is not refused for its size.
    let at_limit = "A".repeat(MAX_TOKEN_LEN);
    assert_ne!(w.verifier.verify(&at_limit), Err(TokenError::TooLarge));
}

#[test]
fn structural_tricks_are_malformed() {
    let w = world();
    let token = encode(&claims(&w, "repository:acme/app:pull"), &w.key);
    let (h, p, s) = parts(&token);
    for bad in [
        format!("{token}."),
        format!("{h}.{p}.{s}.{s}"),
        format!("{h}=.{p}.{s}"),
        format!("{h}.{p}=.{s}"),
        format!(" {token}"),
        format!("{h}.{p}"),
        String::new(),
    ] {
        let err = w.verifier.verify(&bad).unwrap_err();
        assert!(
            matches!(err, TokenError::Malformed(_) | TokenError::BadSignature),
            "{bad:?}: {err:?}"
        );
    }
}

#[test]
fn removed_key_stops_verifying_its_tokens() {
    let w = world();
    let token = encode(&claims(&w, "repository:acme/app:pull"), &w.key);
    let mut keys = w.verifier.keys().clone();
    assert!(keys.remove(w.key.kid()));
    let rotated = Verifier::new(keys, ISS, AUD);
    assert!(matches!(
        rotated.verify(&token),
        Err(TokenError::UnknownKey(_))
    ));
}

/// ECDSA signatures come in twins: (r, s) and (r, n - s) both verify. Only
/// the low-S one is accepted, so a token has exactly one valid form (no
/// re-encoded twin that passes a denylist of the original string).
#[test]
fn a_high_s_twin_of_a_valid_signature_is_refused() {
    use p256::ecdsa::Signature;
    let w = world();
    let token = encode(&claims(&w, "repository:acme/app:pull"), &w.key);
    w.verifier
        .verify_at(&token, w.now)
        .expect("the low-S original verifies");
    let (h, p, sig) = parts(&token);
    let bytes = URL_SAFE_NO_PAD.decode(&sig).unwrap();
    let low = Signature::from_slice(&bytes).unwrap();
    assert_eq!(low.normalize_s(), low, "the issuer signs low-S");
    let (r, s) = low.split_scalars();
    let high = Signature::from_scalars(r, -s).unwrap();
    assert_ne!(high, low);
    let twin = format!("{h}.{p}.{}", b64(high.to_bytes()));
    assert!(matches!(
        w.verifier.verify_at(&twin, w.now),
        Err(TokenError::BadSignature)
    ));
}
