//! Token scopes (`wharf_auth::Scope`, the `scope` parameter and a token's
//! `access` claim) and grants (`wharf_auth::parse_grant`, robot accounts):
//! never panic; an accepted scope respects its bounds and prints back to a
//! scope that parses to the same value (also through JSON); a grant prints
//! back to the same grant.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf_auth::scope::{MAX_SCOPE_ENTRIES, MAX_SCOPE_LEN};
use wharf_auth::{parse_grant, Scope};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(scope) = s.parse::<Scope>() {
        assert!(s.len() <= MAX_SCOPE_LEN);
        assert!(scope.entries().len() <= MAX_SCOPE_ENTRIES, "{s:?}");
        let printed = scope.to_string();
        let again: Scope = printed
            .parse()
            .unwrap_or_else(|e| panic!("{s:?} printed as {printed:?}, refused: {e}"));
        assert_eq!(again, scope, "{s:?} -> {printed:?}");
        let json = serde_json::to_string(&scope).unwrap();
        let back: Scope = serde_json::from_str(&json).unwrap();
        assert_eq!(back, scope);
        // Intersecting with itself keeps every entry of a known type that
        // names an action, and nothing else.
        let known = |a: &&wharf_auth::Access| {
            !matches!(a.resource(), wharf_auth::Resource::Other { .. }) && !a.actions().is_empty()
        };
        let kept: Vec<_> = scope.entries().iter().filter(known).cloned().collect();
        assert_eq!(scope.intersect(&scope).entries(), &kept[..], "{s:?}");
    }
    // Several `scope` parameters, split on newlines.
    let _ = Scope::parse_all(s.lines());
    // A token's `access` claim comes as JSON.
    let _ = serde_json::from_slice::<Scope>(data);
    if let Ok(grant) = parse_grant(s) {
        let printed = grant.to_string();
        let again = parse_grant(&printed)
            .unwrap_or_else(|e| panic!("{s:?} printed as {printed:?}, refused: {e}"));
        assert_eq!(again.to_string(), printed);
    }
});
