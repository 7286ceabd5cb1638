//! The services a node config can start, by `kind`:
//!
//! | kind | what it is | options |
//! |---|---|---|
//! | `echo` | replies with its arguments | |
//! | `sink` | counts pushes, answers `count` / `reset` | |
//! | `slow` | answers a call `(ms, ...)` with its arguments after `ms` milliseconds (for testing timeouts) | |
//! | `cservice_proxy` | `CServiceProxy`: forwards proxy-header frames from native services | |
//! | `lpersistence` | the demo's persistence service (`"lua"` + `"text"`) | |
//! | `mysqlpool` | a pool of MySQL/MariaDB connections answering `"lua", "execute", sql` | the node's `[mysql]` table |
//! | `activity_master` | uid-sharded master with `workers` activity workers | `workers = 8` |
//! | `shop_master` | redirects game frames to the service registered as `target` | `target = "shop"` |
//! | `native_shop` | the native (C++-style) shop service, bytes in and out | needs `cservice_proxy` first |
//! | `lobby` | the demo's scenario driver, with the native `lobby_native` | needs `cservice_proxy` first |
//!
//! Each may carry `name = "…"` to be registered in the cluster as `"@name"` (and as a
//! local name). Native services register their own name.

use anyhow::{anyhow, bail, Context as _, Result};
use bee_dispatch::builtin::{Echo, Sink, Slow};
use bee_dispatch::native::{spawn_native, CServiceProxy, CSERVICE_PROXY};
use bee_dispatch::{Addr, Cluster, Node};

use crate::config::{NodeConfig, ServiceSpec};

/// Every kind this binary can start (for error messages).
const KINDS: &str = "echo, sink, slow, cservice_proxy, lpersistence, mysqlpool, activity_master, shop_master, native_shop, lobby";

/// Start every service of the config, in order.
pub async fn start_all(node: &Node, cluster: &Cluster, cfg: &NodeConfig) -> Result<()> {
    for spec in &cfg.services {
        let addr = start(node, cfg, spec)
            .with_context(|| format!("cannot start service kind {:?}", spec.kind))?;
        if let (Some(name), Some(addr)) = (&spec.name, addr) {
            cluster.register(name, addr)?;
            node.set_name(name, addr);
        }
        tracing::info!(node = %node.name(), kind = %spec.kind, name = ?spec.name, addr = %addr.map(bee_dispatch::service::fmt_addr).unwrap_or_else(|| "(native)".into()), "service started");
    }
    Ok(())
}

fn proxy_of(node: &Node) -> Result<Addr> {
    node.resolve(CSERVICE_PROXY)
        .map_err(|_| anyhow!("start a `cservice_proxy` service before native services"))
}

fn option_usize(spec: &ServiceSpec, key: &str, default: usize) -> Result<usize> {
    match spec.options.get(key) {
        None => Ok(default),
        Some(v) => v
            .as_integer()
            .filter(|n| *n > 0)
            .map(|n| n as usize)
            .ok_or_else(|| anyhow!("option {key} must be a positive integer, got {v}")),
    }
}

fn option_str<'a>(spec: &'a ServiceSpec, key: &str, default: &'a str) -> Result<&'a str> {
    match spec.options.get(key) {
        None => Ok(default),
        Some(v) => v
            .as_str()
            .ok_or_else(|| anyhow!("option {key} must be a string, got {v}")),
    }
}

/// Start one service; returns the address to register under the spec's name (None
/// for native services, which register themselves).
fn start(node: &Node, cfg: &NodeConfig, spec: &ServiceSpec) -> Result<Option<Addr>> {
    let label = spec.name.as_deref().unwrap_or(&spec.kind);
    Ok(match spec.kind.as_str() {
        "echo" => Some(node.spawn(label, Echo)),
        "sink" => Some(node.spawn(label, Sink::default())),
        "slow" => Some(node.spawn(label, Slow)),
        "cservice_proxy" => Some(node.spawn_named(CSERVICE_PROXY, CServiceProxy)),
        "lpersistence" => Some(node.spawn(label, bee_demo::persistence::service())),
        "mysqlpool" => {
            let section = cfg
                .extra
                .get("mysql")
                .cloned()
                .unwrap_or_else(|| toml::Value::Table(Default::default()));
            let mysql: bee_mysql::MysqlConfig = section
                .try_into()
                .context("bad [mysql] section in the node config")?;
            Some(bee_mysql::start(node, mysql))
        }
        "activity_master" => Some(bee_demo::activity::start(
            node,
            option_usize(spec, "workers", bee_dispatch::shard::DEFAULT_WORKERS)?,
        )),
        "shop_master" => Some(node.spawn(
            label,
            bee_demo::shop::ShopMaster::new(option_str(spec, "target", "shop")?),
        )),
        "native_shop" => {
            let name = spec.name.as_deref().unwrap_or("shop");
            let handler = bee_demo::shop::NativeShop::new(&format!("{}/{name}", node.name()));
            spawn_native(node, proxy_of(node)?, name, handler).map_err(|e| anyhow!("{e}"))?;
            None
        }
        "lobby" => Some(bee_demo::lobby::start(node, proxy_of(node)?).map_err(|e| anyhow!("{e}"))?),
        other => bail!("unknown service kind {other:?} (known: {KINDS})"),
    })
}
