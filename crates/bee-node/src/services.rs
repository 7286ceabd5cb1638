//! Service kinds: what a node config's `[[service]]` entries can start.
//!
//! A kind is a name and a function that starts one service on the node from its
//! config entry ([`Spec`]: the entry's name and options, the node config's extra
//! sections, the node and its cluster). [`App`](crate::App) holds the kinds of one
//! binary; the production `bee` binary has the built-ins below, and a game's binary
//! adds its own with [`App::kind`](crate::App::kind).
//!
//! | kind | what it is | options |
//! |---|---|---|
//! | `echo` | replies with its arguments | |
//! | `sink` | counts pushes, answers `count` / `reset` | |
//! | `slow` | answers a call `(ms, ...)` with its arguments after `ms` milliseconds (for testing timeouts) | |
//! | `cservice_proxy` | `CServiceProxy` (also `.CServiceProxy`): pushes native services' frames to the node/service they name | |
//! | `native_master` | hands `"text"` frames to the native service named `target` (PTYPE_TEXT) and `"rpc_response"` frames as PTYPE_RESPONSE: the team's master in front of a C++ service | `target = "shop"` |
//! | `mysqlpool` | a pool of MySQL/MariaDB connections answering `"lua", "execute", sql` | the node's `[mysql]` table |
//! | `cservice` | a skynet C service module (`NAME.so`) loaded into the node (bee-capi) | `module = "path/NAME.so"` (relative to the node config), `args = "…"` (the init parameter); the node's `[env]` table is what `skynet_getenv` sees |
//! | `snlua` | skynet's Lua layer (`docs/lua.md`): loads a skynet tree's Lua library, then starts skynet's `snlua` module (found through `[env] cpath`) with `args`; skynet's log lines go to stdout (or the file `[env] logger`) in skynet's format | `liblua = "path/liblua.so"` (relative to the node config), `args = "bootstrap"` (the default); `[env]` holds skynet's config keys (`cpath`, `lua_path`, `lua_cpath`, `luaservice`, `lualoader`, `start`, …) |
//!
//! Each entry may carry `name = "…"`: the service gets that name (cluster-visible
//! unless it starts with `.`). A kind that names its services itself returns `None`.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{anyhow, Context as _, Result};
use bee_dispatch::builtin::{Echo, EchoValues, Sequence, Sink, Slow};
use bee_dispatch::native::{CServiceProxy, NativeMaster, CSERVICE_PROXY};
use bee_dispatch::{Addr, Cluster, Node};

use crate::config::{NodeConfig, ServiceSpec};

/// What a kind's start function gets: one `[[service]]` entry in its node.
pub struct Spec<'a> {
    /// The node the service starts on.
    pub node: &'a Node,
    /// The node's cluster handle.
    pub cluster: &'a Cluster,
    /// The whole node config (for sections such as `[mysql]`).
    pub config: &'a NodeConfig,
    /// The `[[service]]` entry.
    pub entry: &'a ServiceSpec,
}

impl Spec<'_> {
    /// The entry's name, or the kind when it has none (for labels).
    pub fn label(&self) -> &str {
        self.entry.name.as_deref().unwrap_or(&self.entry.kind)
    }

    /// A positive integer option, or `default` when absent.
    pub fn option_usize(&self, key: &str, default: usize) -> Result<usize> {
        match self.entry.options.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_integer()
                .filter(|n| *n > 0)
                .map(|n| n as usize)
                .ok_or_else(|| anyhow!("option {key} must be a positive integer, got {v}")),
        }
    }

    /// A string option, or `default` when absent.
    pub fn option_str<'b>(&'b self, key: &str, default: &'b str) -> Result<&'b str> {
        match self.entry.options.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_str()
                .ok_or_else(|| anyhow!("option {key} must be a string, got {v}")),
        }
    }

    /// A section of the node config (e.g. `[mysql]`), empty when absent.
    pub fn section(&self, name: &str) -> toml::Value {
        self.config
            .extra
            .get(name)
            .cloned()
            .unwrap_or_else(|| toml::Value::Table(Default::default()))
    }

    /// The address of the local CServiceProxy, for native services.
    pub fn proxy(&self) -> Result<Addr> {
        self.node
            .resolve(CSERVICE_PROXY)
            .map_err(|_| anyhow!("start a `cservice_proxy` service before native services"))
    }
}

/// Starts one service of a kind; returns the address to give the entry's name (`None`
/// when the service named itself).
pub type StartFn = Arc<dyn Fn(&Spec<'_>) -> Result<Option<Addr>> + Send + Sync>;

/// The service kinds of one binary.
#[derive(Clone, Default)]
pub struct Kinds {
    kinds: BTreeMap<String, StartFn>,
}

impl Kinds {
    /// The built-in kinds of the production `bee` binary.
    pub fn builtin() -> Kinds {
        let mut k = Kinds::default();
        k.add("echo", |s| Ok(Some(s.node.spawn(s.label(), Echo))));
        k.add("echo_values", |s| {
            Ok(Some(s.node.spawn(s.label(), EchoValues)))
        });
        k.add("sink", |s| {
            Ok(Some(s.node.spawn(s.label(), Sink::default())))
        });
        k.add("slow", |s| Ok(Some(s.node.spawn(s.label(), Slow))));
        k.add("sequence", |s| {
            Ok(Some(s.node.spawn(s.label(), Sequence::default())))
        });
        k.add("cservice_proxy", |s| Ok(Some(CServiceProxy::spawn(s.node))));
        k.add("native_master", |s| {
            let target = s.option_str("target", "")?;
            if target.is_empty() {
                anyhow::bail!("native_master needs target = \"<the native service's name>\"");
            }
            Ok(Some(s.node.spawn(s.label(), NativeMaster::new(target))))
        });
        // Keeps the skynet_* functions in the binary for the modules to find.
        bee_capi::link_exports();
        k.add("cservice", start_cservice);
        k.add("snlua", start_snlua);
        k.add("mysqlpool", |s| {
            let mysql: bee_mysql::MysqlConfig = s
                .section("mysql")
                .try_into()
                .context("bad [mysql] section in the node config")?;
            Ok(Some(bee_mysql::start(s.node, mysql)))
        });
        k
    }

    /// Add (or replace) a kind.
    pub fn add(
        &mut self,
        kind: &str,
        start: impl Fn(&Spec<'_>) -> Result<Option<Addr>> + Send + Sync + 'static,
    ) {
        self.kinds.insert(kind.to_string(), Arc::new(start));
    }

    /// The kind names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.kinds.keys().map(String::as_str).collect()
    }

    /// Start every service of the config, in order.
    pub fn start_all(&self, node: &Node, cluster: &Cluster, cfg: &NodeConfig) -> Result<()> {
        for entry in &cfg.services {
            let spec = Spec {
                node,
                cluster,
                config: cfg,
                entry,
            };
            let start = self.kinds.get(&entry.kind).ok_or_else(|| {
                anyhow!(
                    "unknown service kind {:?} (known: {})",
                    entry.kind,
                    self.names().join(", ")
                )
            })?;
            let addr = start(&spec)
                .with_context(|| format!("cannot start service kind {:?}", entry.kind))?;
            if let (Some(name), Some(addr)) = (&entry.name, addr) {
                node.set_name(name, addr);
            }
            tracing::info!(node = %node.name(), kind = %entry.kind, name = ?entry.name, addr = %addr.map(bee_dispatch::service::fmt_addr).unwrap_or_else(|| "(self-named)".into()), "service started");
        }
        Ok(())
    }
}

/// The `cservice` kind: load `module` (relative to the node config's directory unless
/// absolute), give the node's C host the `[env]` values, start an instance with `args`.
fn start_cservice(s: &Spec<'_>) -> Result<Option<Addr>> {
    if let Some(key) = s
        .entry
        .options
        .keys()
        .find(|k| !matches!(k.as_str(), "module" | "args"))
    {
        anyhow::bail!("cservice: unknown option {key:?} (known: module, args)");
    }
    let module = s.option_str("module", "")?;
    if module.is_empty() {
        anyhow::bail!("cservice: the entry needs module = \"path/to/NAME.so\"");
    }
    let path = std::path::Path::new(module);
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        s.config.dir.join(path)
    };
    let args = s.option_str("args", "")?;
    let host = bee_capi::Host::of(s.node)?;
    set_env(s, &host)?;
    let started = bee_capi::start(s.node, &path, args)?;
    Ok(Some(started.addr))
}

/// The node config's `[env]` table into the node's C host (what `skynet_getenv` sees).
fn set_env(s: &Spec<'_>, host: &bee_capi::Host) -> Result<()> {
    if let toml::Value::Table(env) = s.section("env") {
        for (key, value) in env {
            let text = match value {
                toml::Value::String(v) => v,
                toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                    value.to_string()
                }
                other => {
                    anyhow::bail!("[env] {key}: a string, number or boolean expected, got {other}")
                }
            };
            host.set_env(&key, &text)?;
        }
    }
    Ok(())
}

/// The `snlua` kind: skynet's Lua layer in the node. Loads the Lua library `liblua`
/// (a skynet tree's own patched Lua, built by `cargo xtask skynet`), sends skynet log
/// lines where skynet's logger would (stdout, or the file `[env] logger`), and starts
/// skynet's `snlua` module — found through `[env] cpath` as skynet finds C services —
/// with `args` (default `bootstrap`: skynet's own bootstrap, which starts the launcher,
/// the service manager and the `[env] start` script).
fn start_snlua(s: &Spec<'_>) -> Result<Option<Addr>> {
    if let Some(key) = s
        .entry
        .options
        .keys()
        .find(|k| !matches!(k.as_str(), "liblua" | "args"))
    {
        anyhow::bail!("snlua: unknown option {key:?} (known: liblua, args)");
    }
    let liblua = s.option_str("liblua", "")?;
    if liblua.is_empty() {
        anyhow::bail!(
            "snlua: the entry needs liblua = \"path/to/liblua.so\" (a skynet tree's Lua, built by `cargo xtask skynet`)"
        );
    }
    let liblua = std::path::Path::new(liblua);
    let liblua = if liblua.is_absolute() {
        liblua.to_path_buf()
    } else {
        s.config.dir.join(liblua)
    };
    let args = s.option_str("args", "bootstrap")?;
    let host = bee_capi::Host::of(s.node)?;
    set_env(s, &host)?;
    if host.env("cpath").is_none() {
        anyhow::bail!("snlua: [env] needs cpath (where skynet's C services are, e.g. \"skynet/cservice/?.so\")");
    }
    bee_capi::load_lua(&liblua)?;
    let log = host.env("logger").map(std::path::PathBuf::from);
    host.log_like_skynet(log.as_deref())?;
    let snlua = host.find_module("snlua")?;
    let started = bee_capi::start(s.node, &snlua, args)?;
    Ok(Some(started.addr))
}
