//! TLS for the listeners: the certificate a node serves, reloaded without a
//! restart, and the client certificates it may require.
//!
//! Owns: reading the PEM files (certificate chain, private key, optional
//! client CA bundle), checking that a key matches its certificate before it
//! is served, swapping in a new pair when the files change (polled) or on
//! `SIGHUP`, and the rustls configuration (TLS 1.2 and 1.3, ALPN `h2` then
//! `http/1.1`). The listener ([`crate::server`]) owns when a handshake
//! happens and how long it may take.
//!
//! Must never: serve a pair whose key does not match its certificate, drop
//! the pair being served because a new one is bad (a bad pair is refused
//! with a log line and the old one keeps serving), or print key material.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

/// Where a listener's TLS material is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, PEM, the server's own certificate first.
    pub cert: PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by one of these
    /// CAs (PEM bundle) to complete the handshake.
    pub client_ca: Option<PathBuf>,
}

/// A listener's TLS: the rustls configuration and the pair it serves now.
/// Cheap to share; [`TlsServer::reload`] swaps the pair for every new
/// handshake, connections already open keep theirs.
pub struct TlsServer {
    files: TlsFiles,
    resolver: Arc<Resolver>,
    acceptor: tokio_rustls::TlsAcceptor,
    /// The files' stamps when the pair in use was read (or last refused),
    /// so that the poll reads them again only when they change.
    stamp: RwLock<Stamp>,
    /// Reloads that took a new pair, and reloads refused.
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// What identifies a file's content without reading it.
type Stamp = Vec<Option<(SystemTime, u64)>>;

fn stamp(paths: &[&Path]) -> Stamp {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
        })
        .collect()
}

/// Hands every handshake the pair in use now.
#[derive(Debug)]
struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks a certificate chain and its key.
fn load_pair(files: &TlsFiles) -> Result<Arc<CertifiedKey>, String> {
    let cert_path = files.cert.display();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| format!("TLS certificate {cert_path}: {}", pem_error(&e)))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("TLS certificate {cert_path}: {}", pem_error(&e)))?;
    if chain.is_empty() {
        return Err(format!(
            "TLS certificate {cert_path}: no CERTIFICATE block in the file"
        ));
    }
    let key_path = files.key.display();
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("TLS key {key_path}: {}", pem_error(&e)))?;
    let key = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "TLS key {key_path} does not belong to the certificate {cert_path} \
             (their public keys differ): give the key the certificate was issued for"
        ),
        e => format!("TLS pair {cert_path} / {key_path}: {e}"),
    })?;
    Ok(Arc::new(key))
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::Io(e) => format!("cannot read it: {e}"),
        E::NoItemsFound => "no PEM block of the expected kind in the file".into(),
        e => format!("not valid PEM: {e}"),
    }
}

/// Reads the client CA bundle into a verifier's roots.
fn load_client_roots(path: &Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let mut roots = RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("TLS client CA {shown}: {}", pem_error(&e)))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("TLS client CA {shown}: {}", pem_error(&e)))?;
    if certs.is_empty() {
        return Err(format!(
            "TLS client CA {shown}: no CERTIFICATE block in the file"
        ));
    }
    for c in certs {
        roots
            .add(c)
            .map_err(|e| format!("TLS client CA {shown}: {e}"))?;
    }
    Ok(roots)
}

impl TlsServer {
    /// Reads `files` and builds the configuration; every error names the
    /// file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Arc<TlsServer>, String> {
        let pair = load_pair(&files)?;
        let resolver = Arc::new(Resolver {
            current: RwLock::new(pair),
        });
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = match &files.client_ca {
            Some(ca) => {
                let roots = load_client_roots(ca)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| format!("TLS client CA {}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let stamp = RwLock::new(stamp(&[&files.cert, &files.key]));
        Ok(Arc::new(TlsServer {
            files,
            resolver,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            stamp,
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        }))
    }

    /// The files this listener serves.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    pub(crate) fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }

    /// Reads the pair again and serves it from the next handshake on; a
    /// pair that does not load is refused and the one in use stays.
    pub fn reload(&self) -> Result<(), String> {
        *self.stamp.write().unwrap_or_else(|e| e.into_inner()) =
            stamp(&[&self.files.cert, &self.files.key]);
        match load_pair(&self.files) {
            Ok(pair) => {
                *self
                    .resolver
                    .current
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = pair;
                self.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Whether the files changed since they were last read.
    fn changed(&self) -> bool {
        let now = stamp(&[&self.files.cert, &self.files.key]);
        *self.stamp.read().unwrap_or_else(|e| e.into_inner()) != now
    }

    /// Reloads when the files change (checked every `every`) or the process
    /// gets `SIGHUP`, logging each outcome, for as long as the runtime runs.
    pub fn spawn_reloader(self: &Arc<Self>, name: &'static str, every: Duration) {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let asked = tokio::select! {
                    _ = tick.tick() => false,
                    Some(()) = async {
                        match hangup.as_mut() {
                            Some(h) => h.recv().await,
                            None => std::future::pending().await,
                        }
                    } => true,
                };
                if !asked && !tls.changed() {
                    continue;
                }
                let why = if asked { "SIGHUP" } else { "the files changed" };
                match tls.reload() {
                    Ok(()) => tracing::info!(
                        listener = name,
                        cert = %tls.files.cert.display(),
                        "TLS certificate reloaded ({why})"
                    ),
                    Err(e) => tracing::error!(
                        listener = name,
                        "TLS certificate not reloaded ({why}), the previous one keeps serving: {e}"
                    ),
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_and_the_fault() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("missing.pem"),
            key: dir.path().join("key.pem"),
            client_ca: None,
        };
        let e = TlsServer::load(files.clone()).unwrap_err();
        assert!(
            e.contains("missing.pem") && e.contains("cannot read"),
            "{e}"
        );

        std::fs::write(&files.cert, "not a certificate\n").unwrap();
        let e = TlsServer::load(files).unwrap_err();
        assert!(
            e.contains("no CERTIFICATE block") || e.contains("no PEM block"),
            "{e}"
        );
    }
}
