//! What a directory call can fail with.
//!
//! Must never: carry the metadata store's own error text to a caller (it
//! can name hosts, paths or SQL): that is logged here, and the caller gets a
//! generic message.

use wharf_meta::MetaError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// No such tenant, user or robot (in that tenant).
    #[error("not found: {0}")]
    NotFound(String),
    /// The name is taken, or the tenant still holds repositories.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request breaks a rule of the directory's grammar or limits.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The metadata store could not be used; try again later.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl From<MetaError> for DirectoryError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::Unavailable(detail) => {
                // Not WARN: the directory refresher asks every second, and
                // the store itself tells an outage once (with its cause);
                // the refresher's own line says the snapshot is kept.
                tracing::debug!(%detail, "tenant directory: metadata store unavailable");
                DirectoryError::Unavailable("the metadata store is unavailable".into())
            }
            other @ (MetaError::Internal(_) | MetaError::Collecting(_) | MetaError::Missing(_)) => {
                tracing::error!(detail = %other, "tenant directory: metadata store error");
                DirectoryError::Unavailable("the metadata store failed".into())
            }
        }
    }
}
