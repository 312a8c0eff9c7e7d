//! The `wharf` binary: parses the command line and runs a subcommand.
//!
//! `wharf serve` runs a complete registry with the embedded default: blobs on
//! the local filesystem and metadata in an embedded database under the data
//! directory, with no other service needed.

#![forbid(unsafe_code)]

use std::sync::Arc;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use wharf_meta::embedded::EmbeddedStore;
use wharf_registry::{Registry, RegistryConfig};
use wharf_storage::fs::FsStore;

mod config;

use config::{Config, ServeArgs};

/// Wharf: an OCI Distribution registry that keeps answering.
#[derive(Parser, Debug)]
#[command(name = "wharf", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the registry.
    Serve(ServeArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = match Config::load(&args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("wharf: {e}");
                    return std::process::ExitCode::from(2);
                }
            };
            init_logging(&config.log);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match runtime.block_on(serve(config)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("wharf: {e}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn serve(config: Config) -> Result<(), String> {
    let data = &config.data_dir;
    let blobs = FsStore::open(data)
        .await
        .map_err(|e| format!("opening blob storage in {}: {e}", data.display()))?;
    let meta = EmbeddedStore::open(data.join("meta.redb"))
        .map_err(|e| format!("opening metadata in {}: {e}", data.display()))?;
    let registry = Registry::new(
        Arc::new(blobs),
        Arc::new(meta),
        RegistryConfig {
            manifest_cache_bytes: config.manifest_cache_bytes,
            upload_expiry: config.upload_expiry,
        },
    );
    match registry.expire_uploads(true).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed expired or orphaned upload sessions"),
        Err(e) => tracing::warn!("upload sweep at start-up failed: {e}"),
    }
    let sweeper = registry.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(sweeper.upload_sweep_interval());
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = sweeper.expire_uploads(false).await {
                tracing::warn!("upload sweep failed: {e}");
            }
        }
    });

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("binding {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    if let Some(path) = &config.addr_file {
        // Written via a temporary file and a rename, so a reader never sees
        // a half-written address.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, addr.to_string())
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    tracing::info!(%addr, data_dir = %data.display(), "wharf listening");
    wharf_api::serve(listener, wharf_api::app(registry), shutdown_signal())
        .await
        .map_err(|e| format!("serving: {e}"))?;
    tracing::info!("wharf stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}
