//! Manifest and index parsing (`wharf_core::Manifest::parse`): never
//! panics, whatever the body and `Content-Type`; an accepted manifest is an
//! image (config, no child manifests) or an index (no config or layers) of
//! a supported media type, and re-serialising what was read parses to the
//! same manifest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use wharf_core::manifest::{Manifest, ManifestKind};

const TYPES: [&str; 6] = [
    "",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/json; charset=utf-8",
];

fuzz_target!(|data: &[u8]| {
    // The first byte picks the Content-Type (or none), the rest is the body.
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let content_type = match pick as usize % (TYPES.len() + 1) {
        0 => None,
        i => Some(TYPES[i - 1]),
    };
    let Ok(m) = Manifest::parse(content_type, body) else {
        return;
    };
    match m.kind {
        ManifestKind::Image => {
            assert!(m.config.is_some() && m.manifests.is_empty());
        }
        ManifestKind::Index => {
            assert!(m.config.is_none() && m.layers.is_empty());
        }
    }
    assert!(
        TYPES[1..5].contains(&m.media_type.as_str()),
        "{:?}",
        m.media_type
    );
    // What was read, written back, reads the same.
    let mut v = json!({ "schemaVersion": 2, "mediaType": m.media_type });
    match m.kind {
        ManifestKind::Image => {
            v["config"] = serde_json::to_value(&m.config).unwrap();
            v["layers"] = serde_json::to_value(&m.layers).unwrap();
        }
        ManifestKind::Index => {
            v["manifests"] = serde_json::to_value(&m.manifests).unwrap();
        }
    }
    if let Some(s) = &m.subject {
        v["subject"] = serde_json::to_value(s).unwrap();
    }
    if let Some(a) = &m.artifact_type {
        v["artifactType"] = json!(a);
    }
    if let Some(a) = &m.annotations {
        v["annotations"] = json!(a);
    }
    let bytes = serde_json::to_vec(&v).unwrap();
    let again = Manifest::parse(content_type, &bytes);
    // Only the size limit can refuse the rewrite (it may be longer).
    if let Ok(again) = again {
        assert_eq!(again, m);
    } else if bytes.len() <= wharf_core::media::MAX_MANIFEST_BYTES {
        panic!("re-serialised manifest refused: {again:?}");
    }
    let _ = m.required_blobs().count();
    let _ = m.referrer_artifact_type();
});
