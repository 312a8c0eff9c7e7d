//! The `/v2/` path parser (`wharf_api::routes::parse`): never panics; an
//! accepted path names valid parts (repository grammar), and rendering the
//! endpoint back to a path parses to the same endpoint.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf_api::routes::{parse, repo_of, Endpoint};

/// The distribution spec's name grammar:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
fn valid_name(name: &str) -> bool {
    name.split('/').all(|c| {
        let b = c.as_bytes();
        if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !alnum(b[i]) {
                i += 1;
            }
            let sep = &c[start..i];
            let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
            if !ok {
                return false;
            }
        }
        true
    })
}

fn alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn render(e: &Endpoint) -> String {
    match e {
        Endpoint::Base => "/v2/".into(),
        Endpoint::Catalog => "/v2/_catalog".into(),
        Endpoint::Tags(r) => format!("/v2/{r}/tags/list"),
        Endpoint::Manifest(r, reference) => format!("/v2/{r}/manifests/{reference}"),
        Endpoint::Blob(r, d) => format!("/v2/{r}/blobs/{d}"),
        Endpoint::Uploads(r) => format!("/v2/{r}/blobs/uploads/"),
        Endpoint::Upload(r, id) => format!("/v2/{r}/blobs/uploads/{id}"),
        Endpoint::Referrers(r, d) => format!("/v2/{r}/referrers/{d}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(endpoint) = parse(path) else {
        return;
    };
    if let Some(repo) = repo_of(&endpoint) {
        let name = repo.to_string();
        assert!(
            valid_name(&name),
            "accepted a bad name {name:?} in {path:?}"
        );
        assert!(!name.contains('%'), "{path:?}");
    }
    let again = render(&endpoint);
    assert_eq!(parse(&again).ok(), Some(endpoint), "{path:?} -> {again:?}");
});
