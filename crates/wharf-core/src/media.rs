//! The media types Wharf stores and serves as manifests.

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Config of an artifact with no meaningful config (image-spec 1.1).
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// Manifests larger than this are refused (the spec suggests registries
/// accept at least 4 MiB; we accept exactly that much).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// Whether a media type names one of the manifest formats Wharf accepts.
pub fn is_manifest_type(media_type: &str) -> bool {
    matches!(
        media_type,
        OCI_MANIFEST | OCI_INDEX | DOCKER_MANIFEST | DOCKER_MANIFEST_LIST
    )
}

/// Strips parameters (`; charset=utf-8`) and surrounding white space.
pub fn essence(media_type: &str) -> &str {
    media_type.split(';').next().unwrap_or("").trim()
}
