//! The node config file (TOML):
//!
//! ```toml
//! name = "lobby"                 # this node's name in the cluster
//! cluster = "cluster.lua"        # the cluster config (skynet clustername form or TOML),
//!                                # relative to this file
//! listen = "127.0.0.1:2528"      # optional: default is this node's entry in the cluster config
//! call_timeout_ms = 30000        # optional: default timeout of calls
//! threads = 4                    # optional: worker threads (default: one per CPU core),
//!                                # as skynet's `thread`
//! busy_poll_us = 100             # optional: how long a connection keeps polling its
//!                                # socket after traffic before it sleeps (default 100,
//!                                # 0 = never); lower latency for a little CPU
//!
//! [[service]]
//! kind = "echo"                  # what to start (see `services.rs`)
//! name = "echo"                  # optional: register it in the cluster as "@echo"
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

/// One node's configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeConfig {
    /// The node's cluster name.
    pub name: String,
    /// Path of the cluster config.
    pub cluster: PathBuf,
    /// Listen address or node name; default: `name`.
    pub listen: Option<String>,
    /// Default call timeout.
    #[serde(default = "default_timeout")]
    pub call_timeout_ms: u64,
    /// Worker threads of the node's runtime; default: one per CPU core.
    pub threads: Option<usize>,
    /// Busy-poll window of the node's connections, in microseconds (0: off).
    #[serde(default = "default_busy_poll")]
    pub busy_poll_us: u64,
    /// Services to start, in order.
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceSpec>,
    /// Extra sections for services that need them (e.g. `[mysql]`), kept as TOML.
    #[serde(flatten)]
    pub extra: toml::Table,
    /// The directory of the config file (paths in service entries are relative to it).
    #[serde(skip)]
    pub dir: PathBuf,
}

fn default_timeout() -> u64 {
    30_000
}

fn default_busy_poll() -> u64 {
    u64::try_from(bee_transport::DEFAULT_BUSY_POLL.as_micros()).unwrap_or(u64::MAX)
}

/// One `[[service]]` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceSpec {
    /// Which built-in or demo service to start.
    pub kind: String,
    /// Cluster name to register it under.
    pub name: Option<String>,
    /// Kind-specific settings (e.g. `workers = 8`).
    #[serde(flatten)]
    pub options: toml::Table,
}

impl NodeConfig {
    /// Read and check a node config; the cluster path becomes relative to the file.
    /// `sections` are the extra tables the binary's service kinds read (e.g. `mysql`);
    /// any other unknown key is a typo and an error.
    pub fn load(path: &Path, sections: &[String]) -> Result<NodeConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read node config {}", path.display()))?;
        let mut cfg: NodeConfig =
            toml::from_str(&text).with_context(|| format!("bad node config {}", path.display()))?;
        // Sections other than the known ones are typos: say so instead of ignoring them.
        if let Some(key) = cfg.extra.keys().find(|k| !sections.contains(k)) {
            anyhow::bail!(
                "node config {}: unknown key {key:?} (known: name, cluster, listen, call_timeout_ms, threads, busy_poll_us, service, {})",
                path.display(),
                                sections.join(", ")
            );
        }
        if cfg.threads == Some(0) {
            anyhow::bail!("node config {}: threads must be at least 1", path.display());
        }
        if cfg.name.is_empty() {
            anyhow::bail!("node config {}: name is empty", path.display());
        }
        if let Some(dir) = path.parent() {
            cfg.dir = dir.to_path_buf();
        }
        if cfg.cluster.is_relative() {
            cfg.cluster = cfg.dir.join(&cfg.cluster);
        }
        Ok(cfg)
    }
}
