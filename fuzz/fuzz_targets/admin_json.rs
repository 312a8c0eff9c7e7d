//! The admin API's JSON bodies (`wharf_api::parse_admin_body`, the request
//! types of each route): never panics, whatever the bytes, for every body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf_api::{parse_admin_body, AdminBody};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the body; every body sees the rest too, so a
    // seed for one exercises the others' refusals.
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let all = AdminBody::ALL;
    let first = all[pick as usize % all.len()];
    let _ = parse_admin_body(first, body);
    for kind in all {
        if kind != first {
            let _ = parse_admin_body(kind, body);
        }
    }
});
