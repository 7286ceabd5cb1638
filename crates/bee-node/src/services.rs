//! The services a node config can start, by `kind`:
//!
//! | kind | what it is |
//! |---|---|
//! | `echo` | replies with its arguments |
//! | `sink` | counts pushes, answers `count` / `reset` |
//!
//! Each may carry `name = "…"` to be registered in the cluster as `"@name"`.

use anyhow::{bail, Result};
use bee_dispatch::builtin::{Echo, Sink};
use bee_dispatch::{Addr, Cluster, Node};

use crate::config::{NodeConfig, ServiceSpec};

/// Start every service of the config, in order.
pub async fn start_all(node: &Node, cluster: &Cluster, cfg: &NodeConfig) -> Result<()> {
    for spec in &cfg.services {
        let addr = start(node, cluster, cfg, spec).await?;
        if let Some(name) = &spec.name {
            cluster.register(name, addr)?;
            node.set_name(name, addr);
        }
        tracing::info!(node = %node.name(), kind = %spec.kind, name = ?spec.name, addr = %bee_dispatch::service::fmt_addr(addr), "service started");
    }
    Ok(())
}

async fn start(node: &Node, _cluster: &Cluster, _cfg: &NodeConfig, spec: &ServiceSpec) -> Result<Addr> {
    let label = spec.name.as_deref().unwrap_or(&spec.kind);
    Ok(match spec.kind.as_str() {
        "echo" => node.spawn(label, Echo),
        "sink" => node.spawn(label, Sink::default()),
        other => bail!("unknown service kind {other:?} (known: echo, sink)"),
    })
}
