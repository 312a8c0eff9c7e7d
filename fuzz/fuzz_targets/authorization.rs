//! The `Authorization` header (`wharf_api::auth::presented`): never panics
//! on any header value; `Basic` credentials render back (base64 of
//! `user:password`) to the same credentials, and a `Bearer` token is the
//! trimmed rest of the value.
#![no_main]

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::{header, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use wharf_api::auth::{presented, Presented, MAX_AUTHORIZATION_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, value);
    let got = presented(&headers);
    if data.len() > MAX_AUTHORIZATION_LEN {
        assert!(got.is_err());
        return;
    }
    match got.expect("within the limit") {
        Presented::None => panic!("a header was present"),
        Presented::Malformed => {}
        Presented::Bearer(token) => {
            let s = std::str::from_utf8(data).unwrap();
            let scheme = s.split(' ').next().unwrap();
            assert!(scheme.eq_ignore_ascii_case("bearer"), "{s:?}");
            assert_eq!(token, token.trim());
        }
        Presented::Basic { user, password } => {
            assert!(!user.contains(':'));
            let rendered = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
            let mut again = HeaderMap::new();
            again.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&rendered).unwrap(),
            );
            match presented(&again).unwrap() {
                Presented::Basic {
                    user: u,
                    password: p,
                } => {
                    assert_eq!((u, p), (user, password));
                }
                _ => panic!("{rendered:?} did not read back as Basic"),
            }
        }
    }
});
