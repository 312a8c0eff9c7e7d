//! htpasswd files with bcrypt entries, for the simple single-operator mode.
//!
//! Owns: parsing `user:hash` lines (as written by `htpasswd -B`) and checking
//! a user's password.
//!
//! Must never: accept a weak or unknown hash scheme (MD5 `$apr1$`, `{SHA}`,
//! `crypt`, plain text): they are refused when the file is loaded, naming
//! the line, rather than failing logins later; reveal through timing which
//! users exist (an unknown user is checked against a dummy hash of the same
//! cost); or log a password or hash.
//!
//! bcrypt is slow by design (cost 10 is tens of milliseconds of CPU): the
//! caller runs [`Htpasswd::verify`] off the async runtime and bounds how many
//! run at once. bcrypt reads only the first 72 bytes of a password, as
//! Apache's `htpasswd` does.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Why an htpasswd file was refused.
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("line {line}: expected user:hash")]
    Malformed { line: usize },
    #[error("line {line}: user {user:?} uses {scheme}; only bcrypt ($2y$, $2b$, $2a$) is accepted (re-create it with `htpasswd -B`)")]
    UnsupportedScheme {
        line: usize,
        user: String,
        scheme: &'static str,
    },
    #[error("line {line}: user {user:?} has a malformed bcrypt hash")]
    InvalidHash { line: usize, user: String },
    #[error("line {line}: user {user:?} appears twice")]
    DuplicateUser { line: usize, user: String },
}

/// The cost of the dummy hash when the file has no entries.
const DEFAULT_COST: u32 = 10;

/// Users and their bcrypt hashes.
pub struct Htpasswd {
    users: HashMap<String, String>,
    /// Checked for unknown users so they take as long as known ones.
    dummy_hash: String,
}

impl fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Htpasswd({} users)", self.users.len())
    }
}

fn scheme_of(hash: &str) -> Result<(), &'static str> {
    if ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)) {
        return Ok(());
    }
    Err(if hash.starts_with("$apr1$") {
        "MD5 ($apr1$)"
    } else if hash.starts_with("{SHA}") {
        "SHA-1 ({SHA})"
    } else if hash.starts_with("$2x$") {
        "the legacy bcrypt variant $2x$"
    } else if hash.starts_with("$1$") {
        "MD5-crypt ($1$)"
    } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
        "SHA-crypt ($5$/$6$)"
    } else if hash.starts_with('$') {
        "an unknown hash scheme"
    } else {
        "crypt(3) or plain text"
    })
}

impl Htpasswd {
    /// Parses the text of an htpasswd file. Blank lines and lines starting
    /// with `#` are skipped.
    pub fn parse(text: &str) -> Result<Htpasswd, HtpasswdError> {
        let mut users = HashMap::new();
        let mut costs: HashMap<u32, usize> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let entry = raw.trim_end_matches('\r');
            if entry.trim().is_empty() || entry.trim_start().starts_with('#') {
                continue;
            }
            let (user, hash) = entry
                .split_once(':')
                .filter(|(u, h)| !u.is_empty() && !h.is_empty())
                .ok_or(HtpasswdError::Malformed { line })?;
            let user = user.to_string();
            if let Err(scheme) = scheme_of(hash) {
                return Err(HtpasswdError::UnsupportedScheme { line, user, scheme });
            }
            let cost = hash
                .parse::<bcrypt::HashParts>()
                .ok()
                .map(|parts| parts.get_cost())
                .filter(|c| (4..=31).contains(c))
                .ok_or_else(|| HtpasswdError::InvalidHash {
                    line,
                    user: user.clone(),
                })?;
            if users.contains_key(&user) {
                return Err(HtpasswdError::DuplicateUser { line, user });
            }
            *costs.entry(cost).or_default() += 1;
            users.insert(user, hash.to_string());
        }
        // The most common cost (the highest on a tie), so an unknown user
        // takes as long as most known ones.
        let cost = costs
            .into_iter()
            .max_by_key(|&(cost, n)| (n, cost))
            .map_or(DEFAULT_COST, |(cost, _)| cost);
        let dummy_hash = dummy_hash(cost);
        Ok(Htpasswd { users, dummy_hash })
    }

    /// Reads and parses an htpasswd file.
    pub fn load(path: &Path) -> Result<Htpasswd, HtpasswdError> {
        let text = std::fs::read_to_string(path).map_err(|source| HtpasswdError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Htpasswd::parse(&text)
    }

    /// Whether `password` is `user`'s. Takes one bcrypt computation whether
    /// or not the user exists.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let (hash, known) = match self.users.get(user) {
            Some(hash) => (hash.as_str(), true),
            None => (self.dummy_hash.as_str(), false),
        };
        let matches = bcrypt::verify(password, hash).unwrap_or(false);
        matches && known
    }

    /// Spends one bcrypt computation on nothing: what a check of a name
    /// that must be refused anyway costs, so that its answer takes as long
    /// as any other (no oracle of which names exist or were deleted).
    pub fn spend_one_check(&self, password: &str) {
        let _ = bcrypt::verify(password, &self.dummy_hash);
    }

    /// A short fingerprint of `user`'s stored hash (`None`: no such user):
    /// it changes when the password does, so it serves as the credential
    /// generation of an htpasswd account.
    pub fn fingerprint(&self, user: &str) -> Option<String> {
        use sha2::Digest as _;
        let hash = self.users.get(user)?;
        let digest = sha2::Sha256::digest(hash.as_bytes());
        Some(hex::encode(&digest[..8]))
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// A bcrypt hash of a fixed password nobody is told, at `cost`. The salt is
/// fixed: this hash guards nothing, it only spends the same time.
fn dummy_hash(cost: u32) -> String {
    bcrypt::hash_with_salt("wharf: no such user", cost, [0x5a; 16])
        .map(|parts| parts.format_for_version(bcrypt::Version::TwoY))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// The lowest cost, so tests stay fast.
    fn entry(user: &str, password: &str) -> String {
        format!("{user}:{}", bcrypt::hash(password, 4).unwrap())
    }

    #[test]
    fn verifies_the_right_password_and_refuses_a_wrong_one() {
        let h = Htpasswd::parse(&entry("alice", "s3cret")).unwrap();
        assert!(h.verify("alice", "s3cret"));
        assert!(!h.verify("alice", "s3cre"));
        assert!(!h.verify("alice", ""));
    }

    #[test]
    fn unknown_user_is_refused_even_with_the_dummy_password() {
        let h = Htpasswd::parse(&entry("alice", "s3cret")).unwrap();
        assert!(!h.verify("bob", "s3cret"));
        assert!(!h.verify("bob", "wharf: no such user"));
    }

    #[test]
    fn accepts_2y_2b_and_2a_prefixes() {
        let hash = bcrypt::hash("pw", 4).unwrap(); // $2b$
        let text = format!(
            "y:{}\nb:{}\na:{}\n",
            hash.replacen("$2b$", "$2y$", 1),
            hash,
            hash.replacen("$2b$", "$2a$", 1)
        );
        let h = Htpasswd::parse(&text).unwrap();
        assert_eq!(h.len(), 3);
        assert!(h.verify("y", "pw") && h.verify("b", "pw") && h.verify("a", "pw"));
    }

    #[test]
    fn skips_comments_blank_lines_and_crlf() {
        let text = format!("# users\n\n{}\r\n", entry("alice", "pw"));
        let h = Htpasswd::parse(&text).unwrap();
        assert_eq!(h.len(), 1);
        assert!(h.verify("alice", "pw"));
    }

    #[test]
    fn other_hash_schemes_are_refused_at_load_naming_the_line() {
        for (hash, scheme) in [
            ("$apr1$abc$defghijklmnopqrstuvwx.", "MD5 ($apr1$)"),
            ("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1 ({SHA})"),
            ("rOsIr5KqVq1UM", "crypt(3) or plain text"),
            ("$6$salt$hash", "SHA-crypt ($5$/$6$)"),
        ] {
            let text = format!("{}\nbob:{hash}\n", entry("alice", "pw"));
            match Htpasswd::parse(&text) {
                Err(HtpasswdError::UnsupportedScheme {
                    line,
                    user,
                    scheme: s,
                }) => {
                    assert_eq!((line, user.as_str(), s), (2, "bob", scheme));
                }
                other => panic!("{hash}: {other:?}"),
            }
        }
    }

    #[test]
    fn truncated_bcrypt_hash_is_refused_at_load() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let text = format!("alice:{}", &hash[..40]);
        assert!(matches!(
            Htpasswd::parse(&text),
            Err(HtpasswdError::InvalidHash { line: 1, .. })
        ));
    }

    #[test]
    fn line_without_colon_is_malformed() {
        assert!(matches!(
            Htpasswd::parse("alice\n"),
            Err(HtpasswdError::Malformed { line: 1 })
        ));
        assert!(matches!(
            Htpasswd::parse(":$2y$05$x\n"),
            Err(HtpasswdError::Malformed { line: 1 })
        ));
    }

    #[test]
    fn duplicate_user_is_refused() {
        let text = format!("{}\n{}\n", entry("alice", "a"), entry("alice", "b"));
        assert!(matches!(
            Htpasswd::parse(&text),
            Err(HtpasswdError::DuplicateUser { line: 2, .. })
        ));
    }

    #[test]
    fn dummy_hash_uses_the_cost_of_the_entries() {
        let h = Htpasswd::parse(&entry("alice", "pw")).unwrap();
        let parts: bcrypt::HashParts = h.dummy_hash.parse().unwrap();
        assert_eq!(parts.get_cost(), 4);
    }

    #[test]
    fn unknown_user_costs_a_bcrypt_computation_like_a_known_one() {
        // Cost 10 makes one bcrypt far slower than a map lookup, so a
        // missing dummy check shows as a ratio of thousands; a factor of 3
        // leaves room for a noisy machine.
        let text = format!("alice:{}", bcrypt::hash("pw", 10).unwrap());
        let h = Htpasswd::parse(&text).unwrap();
        let time = |user: &str| {
            let start = Instant::now();
            assert!(!h.verify(user, "wrong"));
            start.elapsed()
        };
        // The fastest of five, taken in turns: a busy machine slows some
        // rounds of either, never makes a missing bcrypt look like one.
        let (mut known, mut unknown) = (std::time::Duration::MAX, std::time::Duration::MAX);
        for _ in 0..5 {
            known = known.min(time("alice"));
            unknown = unknown.min(time("nobody"));
        }
        assert!(
            unknown * 3 > known,
            "known {known:?} vs unknown {unknown:?}"
        );
    }

    #[test]
    fn load_reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, entry("alice", "pw")).unwrap();
        assert!(Htpasswd::load(&path).unwrap().verify("alice", "pw"));
        assert!(matches!(
            Htpasswd::load(&dir.path().join("missing")),
            Err(HtpasswdError::Io { .. })
        ));
    }

    #[test]
    fn debug_output_shows_no_hashes() {
        let h = Htpasswd::parse(&entry("alice", "pw")).unwrap();
        assert_eq!(format!("{h:?}"), "Htpasswd(1 users)");
    }
}
