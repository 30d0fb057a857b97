//! `samu-gateway cache keygen|stats|purge`: the summary cache's master key and maintenance.
//! Stats and purge open the state directory, so they run while the gateway is stopped; a
//! running gateway purges expired entries itself and exports the same counts in /metrics.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use super::Failure;
use crate::cache::sealed::MasterKey;
use crate::config::Config;
use crate::state::{StateError, Stores};

#[derive(Debug, Subcommand)]
pub(super) enum CacheCommand {
    /// Create a master key file (32 random bytes, hex, mode 0600; never overwrites).
    Keygen {
        /// Where to write it.
        path: PathBuf,
    },
    /// Count cached summaries (without opening them).
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete expired summaries (older than cache.max_stale_seconds), or all of them.
    Purge {
        /// Delete every cached summary.
        #[arg(long)]
        all: bool,
    },
}

pub(super) fn run(config_path: &Path, command: CacheCommand) -> Result<ExitCode, Failure> {
    let keygen = matches!(command, CacheCommand::Keygen { .. });
    let outcome = run_command(config_path, command);
    // The stores are closed by now: whatever root created in the service's state
    // directory, on opening or on closing them, goes back to the service.
    if !keygen && let Ok(config) = Config::read(config_path) {
        crate::state::hand_to_owner(&config.storage.state_dir).with_context(|| {
            format!(
                "cannot give {} back to its owner",
                config.storage.state_dir.display()
            )
        })?;
    }
    outcome
}

fn run_command(config_path: &Path, command: CacheCommand) -> Result<ExitCode, Failure> {
    match command {
        CacheCommand::Keygen { path } => {
            MasterKey::generate(&path).context("cannot create the key")?;
            out!("cache master key written to {} (mode 0600)", path.display());
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Stats { json } => {
            let (config, stores) = summaries(config_path)?;
            let stats = stores
                .cache
                .stats(crate::clock::now().1)
                .context("cannot read the cache")?;
            if json {
                out!(
                    "{}",
                    serde_json::to_string(&stats).context("cannot encode")?
                );
            } else {
                out!(
                    "{} cached summaries, {} bytes, oldest {} s (fresh for {} s, kept up to {} s)",
                    stats.entries,
                    stats.bytes,
                    stats.oldest_secs,
                    config.cache.fresh_seconds,
                    config.cache.max_stale_seconds
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Purge { all } => {
            let (config, stores) = summaries(config_path)?;
            let now = crate::clock::now().1;
            let limit = config.cache.max_stale_seconds * 1000;
            let removed = stores
                .cache
                .purge(|at| all || at.is_none_or(|at| now.saturating_sub(at) > limit))
                .context("cannot purge the cache")?;
            stores.cache.flush().context("cannot flush the cache")?;
            out!("{removed} cached summaries deleted");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The configuration and the open stores (their lock held).
fn summaries(config_path: &Path) -> Result<(Config, Stores), Failure> {
    let config = Config::load(config_path)?;
    let stores = open(&config)?;
    Ok((config, stores))
}

fn open(config: &Config) -> Result<Stores, Failure> {
    Stores::open(&config.storage.state_dir).map_err(|e| match e {
        StateError::Locked { .. } => Failure::Runtime(anyhow::anyhow!(
            "{e}: the running gateway purges expired summaries every cache.purge_interval_secs and exports samu_gateway_cache_entries in /metrics; stop it to purge by hand"
        )),
        other => Failure::Runtime(other.into()),
    })
}
