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
//! | `native_master` | hands `"text"` frames to the native service named `target` (PTYPE_TEXT) and `"rpc_response"` frames as PTYPE_RESPONSE: the team's master in front of a C++ service; with `targets`, in front of several, each frame to the one its uid picks | `target = "shop"`, or `targets = ["shop1", "shop2"]` with `rule = "modulo"` (default: the team's `1 + uid % n`, uid 0 to all) or `"hash"` |
//! | `mysqlpool` | a pool of MySQL/MariaDB connections answering `"lua", "execute", sql` | the node's `[mysql]` table |
//! | `cservice` | a skynet C service module (`NAME.so`) loaded into the node (bee-capi) | `module = "path/NAME.so"` (relative to the node config), `args = "…"` (the init parameter); the node's `[env]` table is what `skynet_getenv` sees |
//! | `snlua` | skynet's Lua layer (`docs/lua.md`): loads a skynet tree's Lua library, then starts skynet's `snlua` module (found through `[env] cpath`) with `args`; skynet's log lines go to stdout (or the file `[env] logger`) in skynet's format | `liblua = "path/liblua.so"` (relative to the node config), `args = "bootstrap"` (the default); `[env]` holds skynet's config keys (`cpath`, `lua_path`, `lua_cpath`, `luaservice`, `lualoader`, `start`, …) |
//!
//! Each entry may carry `name = "…"`: the service gets that name (cluster-visible
//! unless it starts with `.`). A kind that names its services itself returns `None`.
//!
//! Entries start one after the other, in file order: an entry can rely on every entry
//! above it (a logger module loaded first, CServiceProxy before the native services
//! that send through it). In an entry's `args`, `{handle:NAME}` becomes the handle of
//! the service registered as `NAME` on this node, in decimal (as skynet's `%d`/`%u`
//! print it: what a module reads with `sscanf("%u")`), and `{hex:NAME}` the same
//! handle as `:%08x`. A name no earlier entry registered is a config error naming the
//! entry and the name ([`expand_args`]).
//!
//! A `snlua` entry running skynet's own bootstrap (`args = "bootstrap"`, the default)
//! counts as started once the bootstrap has its service manager up (the local name
//! `.service`, at most 30 s): the entries below it then find what skynet's Lua needs
//! (`skynet.uniqueservice`, `skynet.cluster`), as services the start script launches do.
//! The start script itself runs on meanwhile. Any other `snlua` entry counts as started
//! when its start function has returned (its `LAUNCHOK`, as skynet's launcher waits for):
//! only then is its name registered and the next entry started.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use bee_cluster::native::{CServiceProxy, NativeMaster, CSERVICE_PROXY};
use bee_cluster::Cluster;
use bee_runtime::builtin::{Echo, EchoValues, Sequence, Sink, Slow};
use bee_runtime::{Addr, Node, Service};

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
    /// Set by a kind whose service reports when its start is done (a Lua service's
    /// start function): the node waits for it before naming the service.
    start_report: std::sync::Mutex<Option<tokio::sync::oneshot::Receiver<bool>>>,
}

impl Spec<'_> {
    /// The service just started reports on `rx` when its start is done (`true`) or
    /// failed (`false`): [`Kinds::start_all`] names it and starts the next entry only
    /// then.
    pub fn report_start(&self, rx: tokio::sync::oneshot::Receiver<bool>) {
        *self
            .start_report
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(rx);
    }

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
    /// The built-in kinds of the production `bee` binary (`cservice` and `snlua` with the
    /// `capi` feature, `mysqlpool` with `mysql`).
    pub fn builtin() -> Kinds {
        let mut k = Kinds::default();
        k.service("echo", || Echo);
        k.service("echo_values", || EchoValues);
        k.service("sink", Sink::default);
        k.service("slow", || Slow);
        k.service("sequence", Sequence::default);
        k.add("cservice_proxy", |s| Ok(Some(CServiceProxy::spawn(s.node))));
        k.add("native_master", start_native_master);
        #[cfg(feature = "capi")]
        {
            // Keeps the skynet_* functions in the binary for the modules to find.
            bee_capi::link_exports();
            k.add("cservice", start_cservice);
            k.add("snlua", start_snlua);
        }
        #[cfg(feature = "mysql")]
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

    /// Add (or replace) a kind whose every entry is one service made by `make`, spawned
    /// under the entry's label: the common case of [`Kinds::add`].
    pub fn service<S: Service>(
        &mut self,
        kind: &str,
        make: impl Fn() -> S + Send + Sync + 'static,
    ) {
        self.add(kind, move |s| Ok(Some(s.node.spawn(s.label(), make()))));
    }

    /// The kind names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.kinds.keys().map(String::as_str).collect()
    }

    /// Start every service of the config, in file order; `{handle:NAME}` and
    /// `{hex:NAME}` in an entry's `args` are replaced first ([`expand_args`]). After
    /// skynet's bootstrap, the next entry waits for its service manager
    /// ([`wait_for_service_mgr`]).
    pub async fn start_all(&self, node: &Node, cluster: &Cluster, cfg: &NodeConfig) -> Result<()> {
        for (i, entry) in cfg.services.iter().enumerate() {
            let expanded = expand_entry(node, i, entry)?;
            let entry = expanded.as_ref().unwrap_or(entry);
            let spec = Spec {
                node,
                cluster,
                config: cfg,
                entry,
                start_report: std::sync::Mutex::new(None),
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
            let report = spec
                .start_report
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let (Some(report), Some(addr)) = (report, addr) {
                wait_for_start(node, addr, spec.label(), report, BOOTSTRAP_WAIT).await?;
            }
            if let (Some(name), Some(addr)) = (&entry.name, addr) {
                node.set_name(name, addr);
            }
            tracing::info!(node = %node.name(), kind = %entry.kind, name = ?entry.name, addr = %addr.map(bee_runtime::service::fmt_addr).unwrap_or_else(|| "(self-named)".into()), "service started");
            if let Some(addr) = addr.filter(|_| runs_skynet_bootstrap(entry)) {
                wait_for_service_mgr(node, addr, BOOTSTRAP_WAIT).await?;
            }
        }
        Ok(())
    }
}

/// How long a node waits for skynet's bootstrap to bring up its service manager.
const BOOTSTRAP_WAIT: Duration = Duration::from_secs(30);

/// The local name skynet's service manager (`service_mgr`) registers.
const SERVICE_MGR: &str = ".service";

/// Whether `entry` starts skynet's own bootstrap (`snlua` with `args = "bootstrap"`, the
/// default), which starts the launcher, the service manager and the `start` script.
fn runs_skynet_bootstrap(entry: &ServiceSpec) -> bool {
    entry.kind == "snlua"
        && entry
            .options
            .get("args")
            .map_or(Some("bootstrap"), toml::Value::as_str)
            .is_some_and(|a| a.trim() == "bootstrap")
}

/// Wait until skynet's service manager is up (the local name `.service` is set) after
/// the bootstrap at `bootstrap` started: the services configured after it may then use
/// `skynet.uniqueservice` (and so `skynet.cluster`) at once. An error if the bootstrap
/// stops first or `within` passes.
async fn wait_for_service_mgr(node: &Node, bootstrap: Addr, within: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    let mut names = node.watch_names();
    loop {
        names.borrow_and_update();
        if node.resolve(SERVICE_MGR).is_ok() {
            return Ok(());
        }
        if !node.is_alive(bootstrap) {
            anyhow::bail!(
                "skynet's bootstrap ({}) stopped before its service manager registered {SERVICE_MGR}: see skynet's log lines for why",
                bee_runtime::service::fmt_addr(bootstrap)
            );
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "skynet's bootstrap ({}) did not bring up its service manager ({SERVICE_MGR}) within {within:?}",
                bee_runtime::service::fmt_addr(bootstrap)
            );
        }
        // A name change wakes this at once; the bootstrap's end is noticed within 20 ms.
        let _ = tokio::time::timeout(Duration::from_millis(20), names.changed()).await;
    }
}

/// Wait until the service at `addr` (labelled `what`) reports its start done, as
/// skynet's launcher waits before `skynet.newservice` returns: until then a caller could
/// reach a Lua service whose `skynet.dispatch` is not set yet and get an empty error. An
/// error if it reports a failure or stops first; after `within`, a warning and the node
/// goes on (a script that never calls `skynet.start` never reports).
async fn wait_for_start(
    node: &Node,
    addr: Addr,
    what: &str,
    mut report: tokio::sync::oneshot::Receiver<bool>,
    within: Duration,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    let at = bee_runtime::service::fmt_addr(addr);
    loop {
        match tokio::time::timeout(Duration::from_millis(20), &mut report).await {
            Ok(Ok(true)) => return Ok(()),
            Ok(Ok(false)) => anyhow::bail!(
                "service {what} ({at}) failed in its start function: see skynet's log lines for why"
            ),
            Ok(Err(_)) => anyhow::bail!(
                "service {what} ({at}) stopped before its start function returned: see skynet's log lines for why"
            ),
            Err(_) => {}
        }
        if !node.is_alive(addr) {
            anyhow::bail!(
                "service {what} ({at}) stopped before its start function returned: see skynet's log lines for why"
            );
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(node = %node.name(), service = %what, addr = %at, "its start function has not returned within {within:?}; the node goes on without waiting for it");
            return Ok(());
        }
    }
}

/// The `native_master` kind: one `target`, or `targets` picked by uid (a
/// [`ShardMaster`](bee_runtime::shard::ShardMaster) whose worker `i` is a master in
/// front of `targets[i]`; `rule` defaults to the team's `1 + uid % n`).
fn start_native_master(s: &Spec<'_>) -> Result<Option<Addr>> {
    if let Some(key) = s
        .entry
        .options
        .keys()
        .find(|k| !matches!(k.as_str(), "target" | "targets" | "rule"))
    {
        anyhow::bail!("native_master: unknown option {key:?} (known: target, targets, rule)");
    }
    let targets: Vec<String> = match s.entry.options.get("targets") {
        None => Vec::new(),
        Some(toml::Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("native_master: targets holds {v}, not a service name"))
            })
            .collect::<Result<_>>()?,
        Some(v) => anyhow::bail!("native_master: targets must be a list of names, got {v}"),
    };
    let target = s.option_str("target", "")?;
    match (target.is_empty(), targets.is_empty()) {
        (false, true) => {
            if s.entry.options.contains_key("rule") {
                anyhow::bail!("native_master: rule picks among targets = [...]; one target needs none");
            }
            Ok(Some(s.node.spawn(s.label(), NativeMaster::new(target))))
        }
        (true, false) => {
            let rule = bee_runtime::shard::ShardRule::parse(s.option_str("rule", "modulo")?)
                .map_err(|e| anyhow!("native_master: {e}"))?;
            let n = targets.len();
            let master = bee_runtime::shard::ShardMaster::new(
                s.label(),
                n,
                Box::new(move |i| -> bee_runtime::BoxService {
                    Box::new(NativeMaster::new(&targets[i]))
                }),
            )
            .rule(rule);
            Ok(Some(master.spawn(s.node, s.label())))
        }
        _ => anyhow::bail!(
            "native_master needs target = \"<the native service's name>\" or targets = [\"<name>\", ...] (not both)"
        ),
    }
}

/// What an entry is called in errors: `[[service]] #2 (kind "cservice", name "shop")`.
fn describe_entry(index: usize, entry: &ServiceSpec) -> String {
    match &entry.name {
        Some(name) => format!(
            "[[service]] #{} (kind {:?}, name {name:?})",
            index + 1,
            entry.kind
        ),
        None => format!("[[service]] #{} (kind {:?})", index + 1, entry.kind),
    }
}

/// The entry with its `args` expanded, or `None` when it has no `args` string with a
/// placeholder.
fn expand_entry(node: &Node, index: usize, entry: &ServiceSpec) -> Result<Option<ServiceSpec>> {
    let Some(toml::Value::String(args)) = entry.options.get("args") else {
        return Ok(None);
    };
    if !args.contains("{handle:") && !args.contains("{hex:") {
        return Ok(None);
    }
    let expanded = expand_args(args, |name| resolve_local(node, name))
        .map_err(|e| anyhow!("{}: args {args:?}: {e}", describe_entry(index, entry)))?;
    let mut entry = entry.clone();
    entry
        .options
        .insert("args".to_string(), toml::Value::String(expanded));
    Ok(Some(entry))
}

/// A name of this node's table; `.NAME` also finds a cluster-visible `NAME` (bee keeps
/// one table: `CServiceProxy` is registered under both spellings, a module's own
/// `REG .x` under `.x`).
fn resolve_local(node: &Node, name: &str) -> Option<Addr> {
    node.resolve(name).ok().or_else(|| {
        name.strip_prefix('.')
            .filter(|n| !n.is_empty())
            .and_then(|n| node.resolve(n).ok())
    })
}

/// Replace every `{handle:NAME}` in `args` with `NAME`'s handle in decimal and every
/// `{hex:NAME}` with it as `:%08x`; `resolve` gives the handle of a name started so far.
/// Any other text, braces included, is kept as written. A name `resolve` does not know,
/// an empty name or a placeholder without its closing `}` is an error saying which.
pub fn expand_args(args: &str, resolve: impl Fn(&str) -> Option<Addr>) -> Result<String> {
    let mut out = String::with_capacity(args.len());
    let mut rest = args;
    loop {
        let next = ["{handle:", "{hex:"]
            .iter()
            .filter_map(|p| rest.find(p).map(|at| (at, *p)))
            .min_by_key(|(at, _)| *at);
        let Some((at, prefix)) = next else {
            out.push_str(rest);
            return Ok(out);
        };
        out.push_str(&rest[..at]);
        let after = &rest[at + prefix.len()..];
        let Some(end) = after.find('}') else {
            anyhow::bail!("{prefix}... has no closing `}}`");
        };
        let name = after[..end].trim();
        if name.is_empty() {
            anyhow::bail!("{prefix}}} names no service");
        }
        let addr = resolve(name).ok_or_else(|| {
            anyhow!(
                "{prefix}{name}}} names no service started so far: no service registered as \
                 {name:?} on this node (services start in file order; name it in an entry above \
                 this one)"
            )
        })?;
        if prefix == "{hex:" {
            out.push_str(&bee_runtime::service::fmt_addr(addr));
        } else {
            out.push_str(&addr.to_string());
        }
        rest = &after[end + 1..];
    }
}

/// The `cservice` kind: load `module` (relative to the node config's directory unless
/// absolute), give the node's C host the `[env]` values, start an instance with `args`.
#[cfg(feature = "capi")]
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
#[cfg(feature = "capi")]
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
#[cfg(feature = "capi")]
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
    // On a cluster node (a bee node config), skynet's `clusterd` (what `skynet.cluster`
    // asks for) is bee's: cluster.* from Lua goes through the node's own cluster layer.
    // A skynet config run as it is keeps skynet's own cluster Lua.
    if s.config.skynet_config.is_none() {
        if let Ok(cluster) = bee_cluster::ClusterExt::cluster(s.node) {
            crate::lua_cluster::install(&host, cluster);
        }
    }
    let snlua = host.find_module("snlua")?;
    if args.trim() == "bootstrap" {
        // skynet's bootstrap: the node waits for its service manager instead.
        return Ok(Some(bee_capi::start(s.node, &snlua, args)?.addr));
    }
    let (started, report) = bee_capi::start_reporting(s.node, &snlua, args)?;
    s.report_start(report);
    Ok(Some(started.addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(name: &str) -> Option<Addr> {
        match name {
            ".CServiceProxy" | "CServiceProxy" => Some(0x0053_a1c3),
            "logger" => Some(7),
            _ => None,
        }
    }

    fn spec(kind: &str, args: Option<&str>) -> ServiceSpec {
        let mut options = toml::Table::new();
        if let Some(a) = args {
            options.insert("args".into(), a.into());
        }
        ServiceSpec {
            kind: kind.into(),
            name: None,
            options,
        }
    }

    #[test]
    fn only_skynets_own_bootstrap_is_waited_for() {
        assert!(runs_skynet_bootstrap(&spec("snlua", None)));
        assert!(runs_skynet_bootstrap(&spec("snlua", Some("bootstrap"))));
        assert!(!runs_skynet_bootstrap(&spec("snlua", Some("lobby"))));
        assert!(!runs_skynet_bootstrap(&spec("cservice", None)));
    }

    #[tokio::test]
    async fn the_wait_for_the_service_manager_ends_with_it_or_says_why() {
        let node = Node::new("t", bee_runtime::RuntimeConfig::default());
        let boot = node.spawn("bootstrap", bee_runtime::builtin::Echo);
        let mgr = node.spawn("service_mgr", bee_runtime::builtin::Echo);
        let waiting = {
            let node = node.clone();
            tokio::spawn(
                async move { wait_for_service_mgr(&node, boot, Duration::from_secs(10)).await },
            )
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "waits while .service is not set");
        node.set_name(".service", mgr);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the wait ends when .service is set")
            .unwrap()
            .unwrap();
        // A bootstrap that stopped, and one that never gets there.
        let other = Node::new("u", bee_runtime::RuntimeConfig::default());
        let gone = other.spawn("bootstrap", bee_runtime::builtin::Echo);
        other.kill(gone);
        let e = wait_for_service_mgr(&other, gone, Duration::from_secs(10))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("stopped before"), "{e}");
        let stuck = other.spawn("bootstrap", bee_runtime::builtin::Echo);
        let e = wait_for_service_mgr(&other, stuck, Duration::from_millis(100))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("did not bring up"), "{e}");
    }

    #[test]
    fn placeholders_become_handles_in_decimal_and_hex() {
        assert_eq!(
            expand_args("{handle:.CServiceProxy}", names).unwrap(),
            "5480899"
        );
        assert_eq!(
            expand_args("proxy={hex:CServiceProxy} log={handle:logger} x", names).unwrap(),
            "proxy=:0053a1c3 log=7 x"
        );
        assert_eq!(
            expand_args("{json} {handle: logger }{", names).unwrap(),
            "{json} 7{"
        );
        assert_eq!(expand_args("", names).unwrap(), "");
    }

    #[test]
    fn unknown_names_and_broken_placeholders_are_errors_that_say_which() {
        let e = expand_args("a {handle:.shop} b", names)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("{handle:.shop}") && e.contains("file order"),
            "{e}"
        );
        let e = expand_args("{hex:logger", names).unwrap_err().to_string();
        assert!(e.contains("no closing"), "{e}");
        let e = expand_args("{handle:}", names).unwrap_err().to_string();
        assert!(e.contains("names no service"), "{e}");
    }
}
