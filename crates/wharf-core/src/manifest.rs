//! Manifest parsing: turns the bytes of a `PUT` into a [`Manifest`] that
//! says what it references, or a `MANIFEST_INVALID` error saying why not.
//!
//! The stored bytes are never re-serialised: the registry keeps exactly what
//! the client sent (its digest is over those bytes); this module only reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::RegistryError;
use crate::media;

/// A content descriptor as it appears in manifests and referrers lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

/// Whether a manifest points at blobs (an image) or at other manifests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestKind {
    Image,
    Index,
}

/// What the registry needs to know about a manifest it is asked to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The effective media type (from the body, else the `Content-Type`).
    pub media_type: String,
    pub kind: ManifestKind,
    /// Config blob of an image manifest.
    pub config: Option<Descriptor>,
    /// Layer blobs of an image manifest.
    pub layers: Vec<Descriptor>,
    /// Child manifests of an index.
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to (signatures, SBOMs, attestations).
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

/// The fields of either manifest shape, all optional so that we can say
/// precisely which one is missing.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    artifact_type: Option<String>,
    annotations: Option<BTreeMap<String, String>>,
}

fn invalid(msg: impl Into<String>) -> RegistryError {
    RegistryError::ManifestInvalid(msg.into())
}

impl Manifest {
    /// Parses and validates `bytes`, sent with `content_type` (if any).
    pub fn parse(content_type: Option<&str>, bytes: &[u8]) -> Result<Manifest, RegistryError> {
        if bytes.len() > media::MAX_MANIFEST_BYTES {
            return Err(RegistryError::ManifestTooLarge {
                size: bytes.len() as u64,
                limit: media::MAX_MANIFEST_BYTES as u64,
            });
        }
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        if raw.schema_version != Some(2) {
            return Err(invalid("schemaVersion must be 2"));
        }
        let header = content_type.map(media::essence).filter(|t| !t.is_empty());
        let media_type = match (raw.media_type.as_deref(), header) {
            (Some(body), Some(h)) if body != h && media::is_manifest_type(h) => {
                return Err(invalid(format!(
                    "mediaType {body:?} in the body does not match Content-Type {h:?}"
                )))
            }
            (Some(body), _) => body.to_string(),
            (None, Some(h)) if media::is_manifest_type(h) => h.to_string(),
            // No usable type anywhere: OCI allows omitting mediaType, so
            // infer it from the shape.
            (None, _) if raw.manifests.is_some() => media::OCI_INDEX.to_string(),
            (None, _) if raw.config.is_some() => media::OCI_MANIFEST.to_string(),
            (None, h) => {
                return Err(invalid(format!(
                    "unsupported manifest media type {:?}",
                    h.unwrap_or("")
                )))
            }
        };
        let kind = match media_type.as_str() {
            media::OCI_MANIFEST | media::DOCKER_MANIFEST => ManifestKind::Image,
            media::OCI_INDEX | media::DOCKER_MANIFEST_LIST => ManifestKind::Index,
            other => {
                return Err(invalid(format!(
                    "unsupported manifest media type {other:?}"
                )))
            }
        };
        let manifest = match kind {
            ManifestKind::Image => {
                if raw.manifests.is_some() {
                    return Err(invalid("an image manifest must not list manifests"));
                }
                Manifest {
                    config: Some(raw.config.ok_or_else(|| invalid("config is required"))?),
                    layers: raw.layers.ok_or_else(|| invalid("layers is required"))?,
                    manifests: Vec::new(),
                    media_type,
                    kind,
                    subject: raw.subject,
                    artifact_type: raw.artifact_type,
                    annotations: raw.annotations,
                }
            }
            ManifestKind::Index => {
                if raw.config.is_some() || raw.layers.is_some() {
                    return Err(invalid("an index must not have config or layers"));
                }
                Manifest {
                    manifests: raw
                        .manifests
                        .ok_or_else(|| invalid("manifests is required"))?,
                    config: None,
                    layers: Vec::new(),
                    media_type,
                    kind,
                    subject: raw.subject,
                    artifact_type: raw.artifact_type,
                    annotations: raw.annotations,
                }
            }
        };
        Ok(manifest)
    }

    /// Blobs that must exist in the repository before this manifest may be
    /// stored: the config and every layer, except foreign layers that are
    /// fetched from their `urls` rather than from a registry.
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config
            .iter()
            .chain(self.layers.iter().filter(|d| !is_foreign(d)))
    }

    /// The artifact type reported for this manifest in a referrers list:
    /// `artifactType`, else the config's media type (image-spec 1.1).
    pub fn referrer_artifact_type(&self) -> Option<String> {
        self.artifact_type
            .clone()
            .or_else(|| self.config.as_ref().map(|c| c.media_type.clone()))
    }
}

/// Docker foreign layers and OCI non-distributable layers live elsewhere.
fn is_foreign(d: &Descriptor) -> bool {
    d.urls.as_ref().is_some_and(|u| !u.is_empty())
        && (d.media_type.contains("foreign") || d.media_type.contains("nondistributable"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":3}}]{extra}}}"#,
            media::OCI_MANIFEST,
            digest('a'),
            digest('b')
        )
    }

    #[test]
    fn parses_image_manifest() {
        let m = Manifest::parse(Some(media::OCI_MANIFEST), image("").as_bytes()).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.required_blobs().count(), 2);
        assert_eq!(
            m.referrer_artifact_type().as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn parses_subject_and_artifact_type() {
        let extra = format!(
            r#","artifactType":"application/x-sig","subject":{{"mediaType":"{}","digest":"{}","size":9}}"#,
            media::OCI_MANIFEST,
            digest('c')
        );
        let m = Manifest::parse(None, image(&extra).as_bytes()).unwrap();
        assert_eq!(m.subject.as_ref().unwrap().digest.to_string(), digest('c'));
        assert_eq!(
            m.referrer_artifact_type().as_deref(),
            Some("application/x-sig")
        );
    }

    #[test]
    fn parses_index_without_media_type_field() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":5,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            media::OCI_MANIFEST,
            digest('d')
        );
        let m = Manifest::parse(Some(media::OCI_INDEX), body.as_bytes()).unwrap();
        assert_eq!(m.kind, ManifestKind::Index);
        assert_eq!(m.manifests.len(), 1);
        assert_eq!(m.required_blobs().count(), 0);
    }

    #[test]
    fn refuses_invalid() {
        let cases = [
            "not json".to_string(),
            "[]".to_string(),
            r#"{"schemaVersion":1}"#.to_string(),
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{}","layers":[]}}"#,
                media::OCI_MANIFEST
            ),
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{}"}}"#,
                media::OCI_INDEX
            ),
            r#"{"schemaVersion":2,"mediaType":"text/plain"}"#.to_string(),
            image("").replace(&digest('a'), "sha256:nothex"),
        ];
        for body in cases {
            let err = Manifest::parse(None, body.as_bytes()).unwrap_err();
            assert!(
                matches!(err, RegistryError::ManifestInvalid(_)),
                "{body}: {err:?}"
            );
        }
    }

    #[test]
    fn refuses_content_type_mismatch() {
        let err = Manifest::parse(Some(media::OCI_INDEX), image("").as_bytes()).unwrap_err();
        assert!(matches!(err, RegistryError::ManifestInvalid(_)));
    }

    #[test]
    fn refuses_oversized() {
        let big = vec![b' '; media::MAX_MANIFEST_BYTES + 1];
        assert!(matches!(
            Manifest::parse(None, &big),
            Err(RegistryError::ManifestTooLarge { .. })
        ));
    }

    #[test]
    fn foreign_layers_are_not_required() {
        let body = image("").replace(
            r#""size":3}"#,
            r#""size":3,"urls":["https://example.invalid/x"]}"#,
        );
        let body = body.replace(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        );
        let m = Manifest::parse(None, body.as_bytes()).unwrap();
        assert_eq!(m.required_blobs().count(), 1);
    }
}
