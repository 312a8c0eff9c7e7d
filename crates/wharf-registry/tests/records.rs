//! What metadata keeps of a pushed manifest: annotations and an artifact
//! type only for a referrer (a manifest with a subject), the one place they
//! are reported; every manifest's bytes are served exactly as pushed.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use wharf_core::{Digest, Reference, RepoName};
use wharf_meta::embedded::EmbeddedStore;
use wharf_meta::MetaStore;
use wharf_registry::{Registry, RegistryConfig};
use wharf_storage::fs::FsStore;

async fn push_blob(reg: &Registry, repo: &RepoName, bytes: &'static [u8]) -> Digest {
    let digest = Digest::sha256_of(bytes);
    let body = futures_util::stream::iter([Ok(Bytes::from_static(bytes))]).boxed();
    reg.push_blob(repo, &digest, body, None).await.unwrap();
    digest
}

#[tokio::test]
async fn annotations_are_kept_for_referrers_only_and_bytes_are_served_as_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Arc::new(FsStore::open(dir.path().join("blobs")).await.unwrap());
    let meta = Arc::new(EmbeddedStore::open(dir.path().join("meta.redb")).unwrap());
    let reg = Registry::new(blobs, meta.clone(), RegistryConfig::default());
    let repo: RepoName = "team/app".parse().unwrap();
    let config = push_blob(&reg, &repo, br#"{"architecture":"amd64","os":"linux"}"#).await;
    let image = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example.image","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":37}},"layers":[],"annotations":{{"org.opencontainers.image.version":"1.0"}}}}"#
    );
    let image_put = reg
        .put_manifest(
            &repo,
            &"v1".parse().unwrap(),
            None,
            Bytes::from(image.clone()),
        )
        .await
        .unwrap();
    let referrer = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example.sbom","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{config}","size":37}},"layers":[],"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{}}},"annotations":{{"made.by":"test"}}}}"#,
        image_put.digest,
        image.len()
    );
    let referrer_put = reg
        .put_manifest(
            &repo,
            &Reference::Digest(Digest::sha256_of(referrer.as_bytes())),
            None,
            Bytes::from(referrer.clone()),
        )
        .await
        .unwrap();

    let kept = meta
        .get_manifest(&repo, &image_put.digest)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((kept.annotations, kept.artifact_type), (None, None));
    let kept = meta
        .get_manifest(&repo, &referrer_put.digest)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        kept.annotations.unwrap().get("made.by").map(String::as_str),
        Some("test")
    );
    assert_eq!(
        kept.artifact_type.as_deref(),
        Some("application/vnd.example.sbom")
    );

    // The referrers list reports the referrer's; the bytes are as pushed.
    let listed = reg.referrers(&repo, &image_put.digest, None).await.unwrap();
    assert_eq!(listed.len(), 1);
    for (digest, bytes) in [(image_put.digest, image), (referrer_put.digest, referrer)] {
        let got = reg
            .get_manifest(&repo, &Reference::Digest(digest))
            .await
            .unwrap();
        assert_eq!(got.bytes, bytes.as_bytes());
    }
}
