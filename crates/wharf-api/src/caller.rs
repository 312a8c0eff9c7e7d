//! [`Caller`]: who sent a request, as authentication verified it (the
//! owner recorded on an upload session, which the per-user session cap
//! counts).
//!
//! Must never: be filled from anything but [`crate::auth::check`]'s
//! verdict, or be used to decide access (that is `auth`'s alone).

/// Who sent a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    /// The verified subject (user or robot name); `None` with auth off,
    /// or for anonymous access.
    pub subject: Option<String>,
}
