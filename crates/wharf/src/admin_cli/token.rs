//! `wharf admin token [--out DIR]`: generate a new admin token.
//!
//! Owns: the admin token's form (a recognisable prefix and 32 random
//! bytes), the `sha256:<hex>` line the server is given, and writing both
//! to private files.
//!
//! Must never: make a request (the token is what the server is started
//! with); replace an existing token file; or write the token anywhere but
//! stdout or a file only its owner can read.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use clap::Args;

/// Admin tokens start with this, so secret scanners can recognise them.
pub(super) const ADMIN_TOKEN_PREFIX: &str = "wharf_admin_";
/// Random bytes in an admin token.
const ADMIN_TOKEN_BYTES: usize = 32;

/// The arguments of `wharf admin token`.
#[derive(Args, Debug)]
pub(super) struct TokenArgs {
    /// Write `DIR/admin-token` (the token, mode 0600) and
    /// `DIR/admin-token.sha256` (for --admin-token-file) instead of
    /// printing them; neither may exist yet.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

impl TokenArgs {
    /// `wharf admin token [--out DIR]`: prints the token and its hash
    /// line, or writes them under `--out`.
    pub(super) fn run(&self) -> Result<(), String> {
        let (token, hash) = new_admin_token()?;
        match self.out.as_deref() {
            None => {
                println!("{token}");
                println!("{hash}");
            }
            Some(dir) => {
                let (token_path, hash_path) = write_token_files(dir, &token, &hash)?;
                println!(
                    "admin token (keep secret; for --token-file): {}",
                    token_path.display()
                );
                println!(
                    "for wharf serve --admin-token-file: {}",
                    hash_path.display()
                );
            }
        }
        Ok(())
    }
}

/// A new admin token and the `sha256:<hex>` line the server is given.
fn new_admin_token() -> Result<(String, String), String> {
    let mut bytes = [0u8; ADMIN_TOKEN_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|e| format!("the operating system's random generator failed: {e}"))?;
    let token = format!("{ADMIN_TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = format!("sha256:{}", wharf_auth::hash_secret(&token));
    Ok((token, hash))
}

/// Writes `dir/admin-token` (mode 0600) and `dir/admin-token.sha256`,
/// creating `dir` (mode 0700) if needed; refuses to replace either file.
fn write_token_files(dir: &Path, token: &str, hash: &str) -> Result<(PathBuf, PathBuf), String> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let token_path = dir.join("admin-token");
    let hash_path = dir.join("admin-token.sha256");
    // Checked first so that a refusal leaves no half-written pair behind.
    for path in [&token_path, &hash_path] {
        if path.exists() {
            return Err(format!(
                "{} exists: not replacing it (remove it or choose another --out)",
                path.display()
            ));
        }
    }
    let write = |path: &Path, text: &str, mode: u32| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
            .map_err(|e| format!("writing {}: {e}", path.display()))
    };
    write(&token_path, &format!("{token}\n"), 0o600)?;
    write(&hash_path, &format!("{hash}\n"), 0o644)?;
    Ok((token_path, hash_path))
}

#[cfg(test)]
mod tests {
    use super::super::connection::admin_token;
    use super::*;

    #[test]
    fn generated_tokens_are_random_and_match_their_hash_line() {
        let (token, hash) = new_admin_token().unwrap();
        let random = token.strip_prefix(ADMIN_TOKEN_PREFIX).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(random).unwrap().len(), 32);
        let hex = hash.strip_prefix("sha256:").unwrap();
        assert_eq!(hex.len(), 64);
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert!(wharf_auth::verify_secret(&token, hex));
        assert_ne!(new_admin_token().unwrap().0, token);
    }

    #[test]
    fn token_files_are_private_and_never_replaced() {
        use std::os::unix::fs::PermissionsExt as _;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("secrets");
        let (token, hash) = new_admin_token().unwrap();
        let (t, h) = write_token_files(&dir, &token, &hash).unwrap();
        assert_eq!(std::fs::read_to_string(&t).unwrap(), format!("{token}\n"));
        assert_eq!(std::fs::read_to_string(&h).unwrap(), format!("{hash}\n"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&t), 0o600);
        assert_eq!(mode(&dir), 0o700);
        // The token file reads back as the token to send.
        assert_eq!(admin_token(Some(&t), None), Ok(Some(token.clone())));

        let e = write_token_files(&dir, "other", "sha256:other").unwrap_err();
        assert!(e.contains("exists"), "{e}");
        assert_eq!(std::fs::read_to_string(&t).unwrap(), format!("{token}\n"));
    }
}
