//! Bearer tokens (`wharf_auth::Verifier::verify_at`): never panics on any
//! string. Half the inputs are read as the token itself; the other half as
//! a claims payload, signed with the trusted key, so the claims parser
//! behind the signature check is reached too: accepted claims are those
//! given (issuer, audience and times as the verifier demands), and claims
//! that parse and re-sign verify the same.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wharf_auth::token::{encode, Claims, KeySet, SigningKey, Verifier};

const ISSUER: &str = "wharf-token";
const AUDIENCE: &str = "wharf";
const NOW: u64 = 1_700_000_000;

fn fixture() -> &'static (SigningKey, Verifier) {
    static F: OnceLock<(SigningKey, Verifier)> = OnceLock::new();
    F.get_or_init(|| {
        let key = SigningKey::generate();
        let mut keys = KeySet::new();
        keys.insert(key.public_key());
        (key, Verifier::new(keys, ISSUER, AUDIENCE))
    })
}

fuzz_target!(|data: &[u8]| {
    let (key, verifier) = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let Ok(token) = std::str::from_utf8(rest) else {
            return;
        };
        let _ = verifier.verify_at(token, NOW);
        return;
    }
    // Claims as JSON: if they parse, sign them and check what verifies.
    let Ok(claims) = serde_json::from_slice::<Claims>(rest) else {
        return;
    };
    let token = encode(&claims, key);
    let got = verifier.verify_at(&token, NOW);
    let should = claims.iss == ISSUER
        && claims.aud == AUDIENCE
        && NOW < claims.exp.saturating_add(30)
        && claims.nbf <= NOW + 30;
    match got {
        Ok(v) => {
            assert!(should, "{claims:?}");
            assert_eq!(v.claims(), &claims);
        }
        Err(e) => {
            // Only a token past the size limit may fail otherwise.
            assert!(
                !should || token.len() > wharf_auth::token::MAX_TOKEN_LEN,
                "{e}: {claims:?}"
            );
        }
    }
});
