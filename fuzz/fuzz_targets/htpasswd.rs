//! htpasswd files (`wharf_auth::Htpasswd::parse`): never panics; every
//! user of an accepted file is known (has a fingerprint), and nothing else.
//! Inputs naming a bcrypt cost above 5 are skipped: the parser hashes a
//! dummy password at the file's usual cost, which would only slow the
//! fuzzer down (an operator's file, not a client's, chooses it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf_auth::Htpasswd;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let entries: Vec<(&str, &str)> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .collect();
    let costly = entries.iter().any(|(_, h)| {
        h.parse::<bcrypt::HashParts>()
            .is_ok_and(|p| p.get_cost() > 5)
    });
    if costly {
        return;
    }
    let Ok(file) = Htpasswd::parse(text) else {
        return;
    };
    assert_eq!(file.len(), entries.len(), "{text:?}");
    for (user, _) in &entries {
        assert!(file.fingerprint(user).is_some(), "{user:?}");
    }
    assert!(file.fingerprint("\u{0}not-a-user").is_none() || text.contains('\u{0}'));
});
