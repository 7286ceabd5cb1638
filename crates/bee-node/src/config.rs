//! The node config file (TOML):
//!
//! ```toml
//! name = "lobby"                 # this node's name in the cluster
//! cluster = "cluster.lua"        # the cluster config (skynet clustername form or TOML),
//!                                # relative to this file
//! listen = "127.0.0.1:2528"      # optional: default is this node's entry in the cluster config
//! call_timeout_ms = 30000        # optional: default timeout of calls
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
    /// Services to start, in order.
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceSpec>,
    /// Extra sections for services that need them (e.g. `[mysql]`), kept as TOML.
    #[serde(flatten)]
    pub extra: toml::Table,
}

/// Sections for services, besides the node's own keys.
const EXTRA_SECTIONS: &[&str] = &["mysql"];

fn default_timeout() -> u64 {
    30_000
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
    pub fn load(path: &Path) -> Result<NodeConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read node config {}", path.display()))?;
        let mut cfg: NodeConfig =
            toml::from_str(&text).with_context(|| format!("bad node config {}", path.display()))?;
        // Sections other than the known ones are typos: say so instead of ignoring them.
        if let Some(key) = cfg
            .extra
            .keys()
            .find(|k| !EXTRA_SECTIONS.contains(&k.as_str()))
        {
            anyhow::bail!(
                "node config {}: unknown key {key:?} (known: name, cluster, listen, call_timeout_ms, service, {})",
                path.display(),
                EXTRA_SECTIONS.join(", ")
            );
        }
        if cfg.name.is_empty() {
            anyhow::bail!("node config {}: name is empty", path.display());
        }
        if cfg.cluster.is_relative() {
            if let Some(dir) = path.parent() {
                cfg.cluster = dir.join(&cfg.cluster);
            }
        }
        Ok(cfg)
    }
}
