//! The node config file (TOML): what `bee run FILE` reads, checked before the node starts.
//!
//! Every key, its default and what it does: `docs/node-config.md` (a test below fails
//! when a key this parser accepts is missing there). How the limits and liveness keys
//! map onto the transport's settings, and what to alert on: `docs/operations.md`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// One node's configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeConfig {
    /// The node's cluster name.
    pub name: String,
    /// Path of the cluster config (or an `etcd://host:port/PREFIX` URL).
    pub cluster: PathBuf,
    /// With an etcd `cluster`: the cluster file to run when etcd cannot be reached at
    /// start (the node keeps trying etcd and follows it once it answers).
    pub cluster_fallback: Option<PathBuf>,
    /// With an etcd `cluster`: how long the node keeps trying etcd at start before it
    /// runs `cluster_fallback`, or gives up without one.
    #[serde(default = "default_etcd_start_retry")]
    pub etcd_start_retry_ms: u64,
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
    /// Connections of the node busy-polling at once (`bee_transport::set_max_pollers`).
    #[serde(default = "default_busy_poll_max")]
    pub busy_poll_max: usize,
    /// Longest graceful drain at SIGTERM / Ctrl-C, in milliseconds.
    #[serde(default = "default_drain")]
    pub drain_timeout_ms: u64,
    /// The Unix control socket a successor (`bee run --takeover`) asks for the listening
    /// sockets on; relative to the config's directory. Default `<name>.handover.sock`.
    pub handover_socket: Option<PathBuf>,
    /// Address of the Prometheus endpoint (`host:port`); none: no metrics served.
    pub metrics_listen: Option<String>,
    /// Byte budgets and connection hygiene.
    #[serde(default)]
    pub limits: Limits,
    /// Dead-peer detection.
    #[serde(default)]
    pub liveness: Liveness,
    /// Node authentication (off when absent).
    pub auth: Option<Auth>,
    /// Actions on the status listener (off by default: read-only).
    #[serde(default)]
    pub admin: Admin,
    /// Services to start, in order.
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceSpec>,
    /// Extra sections for services that need them (e.g. `[mysql]`), kept as TOML.
    #[serde(flatten)]
    pub extra: toml::Table,
    /// The directory of the config file (paths in service entries are relative to it).
    #[serde(skip)]
    pub dir: PathBuf,
    /// Built from this skynet config (`bee run SKYNET_CONFIG`): skynet's single-node
    /// mode, no cluster listener.
    #[serde(skip)]
    pub skynet_config: Option<PathBuf>,
}

fn default_etcd_start_retry() -> u64 {
    10_000
}

fn default_timeout() -> u64 {
    30_000
}

fn default_busy_poll_max() -> usize {
    1
}

fn default_drain() -> u64 {
    10_000
}

fn default_busy_poll() -> u64 {
    u64::try_from(bee_transport::DEFAULT_BUSY_POLL.as_micros()).unwrap_or(u64::MAX)
}

const MIB: u64 = 1024 * 1024;

/// The `[limits]` table: node-wide byte budgets, per-peer bounds, connection hygiene.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Node-wide budget of inbound bytes held by every accepted connection (a request
    /// from the moment it is read until its service has finished with it, multi-part
    /// messages being assembled) and half-assembled multi-part responses on channels. A
    /// request that does not fit is answered `Overloaded`; the connection stays up.
    pub inbound_bytes: u64,
    /// Node-wide budget of bytes queued for writing on every channel; past it calls and
    /// pushes fail at once with `Overloaded`.
    pub outbound_bytes: u64,
    /// Per peer: bytes queued to one remote node (channel), and request bytes being
    /// handled for one connection, past which its requests are answered `Overloaded`.
    pub per_peer_bytes: u64,
    /// Inbound connections served at once (0: no limit).
    pub max_connections: usize,
    /// A connection that sent part of a frame and then nothing for this long is closed.
    pub read_timeout_ms: u64,
    /// An inbound connection idle this long is closed (0: never).
    pub idle_timeout_ms: u64,
    /// An unfinished multi-part message is dropped this long after its header (0: never).
    pub multipart_timeout_ms: u64,
    /// Per peer: bytes of pushes parked while it is away (`liveness.ride_through_ms`);
    /// they are charged to `outbound_bytes` too.
    pub parked_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            inbound_bytes: 1024 * MIB,
            outbound_bytes: 1024 * MIB,
            per_peer_bytes: 64 * MIB,
            max_connections: 10_000,
            read_timeout_ms: 30_000,
            idle_timeout_ms: 0,
            multipart_timeout_ms: 30_000,
            parked_bytes: 16 * MIB,
        }
    }
}

/// The `[liveness]` table: how fast a dead peer is noticed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Liveness {
    /// Bound on noticing a dead peer on a channel (`TCP_USER_TIMEOUT`, keepalive, an
    /// unanswered heartbeat); 0 turns dead-peer detection off.
    pub bound_ms: u64,
    /// A heartbeat call after this long without receiving anything (0: none).
    pub heartbeat_ms: u64,
    /// Calls in a row timing out with nothing received recycle the connection (0: never).
    pub max_timeouts: u32,
    /// Keepalive and `TCP_USER_TIMEOUT` bound of accepted sockets (0: system defaults).
    pub accepted_bound_ms: u64,
    /// Silence on an accepted socket before keepalive probes start (then
    /// `accepted_bound_ms` to answer them).
    pub accepted_idle_ms: u64,
    /// While a peer is away (restarting, handing over, unreachable), calls to it wait and
    /// pushes to it are parked this long before they fail (0: fail at once).
    pub ride_through_ms: u64,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            bound_ms: 4_000,
            heartbeat_ms: 1_000,
            max_timeouts: 3,
            accepted_bound_ms: 10_000,
            accepted_idle_ms: 60_000,
            ride_through_ms: 0,
        }
    }
}

/// The `[admin]` table: actions (drain, config push) on the status listener.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Serve `POST /api/v1/admin/drain` and `/api/v1/admin/config` (see `actions.rs`).
    pub enabled: bool,
}

/// The `[auth]` table: node authentication with a shared secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// The shared secret itself (prefer `secret_file`).
    pub secret: Option<String>,
    /// A file holding the secret (relative to the node config); trailing `\r`/`\n` are
    /// not part of it.
    pub secret_file: Option<PathBuf>,
    /// Peer IP addresses served without authentication (stock skynet nodes).
    #[serde(default)]
    pub allow: Vec<IpAddr>,
    /// How long a connecting peer has to authenticate.
    #[serde(default = "default_auth_timeout")]
    pub timeout_ms: u64,
    /// Nodes this node calls without authenticating (stock skynet nodes, which cannot
    /// answer the exchange).
    #[serde(default)]
    pub plain_nodes: Vec<String>,
}

fn default_auth_timeout() -> u64 {
    5_000
}

impl Auth {
    /// The secret's bytes: `secret`, or the contents of `secret_file` (relative to
    /// `dir`) without trailing line breaks. Exactly one must be given; empty is an error.
    pub fn secret_bytes(&self, dir: &Path) -> Result<Vec<u8>> {
        let bytes = match (&self.secret, &self.secret_file) {
            (Some(s), None) => s.as_bytes().to_vec(),
            (None, Some(f)) => {
                let path = dir.join(f);
                let mut b = std::fs::read(&path)
                    .with_context(|| format!("cannot read auth.secret_file {}", path.display()))?;
                while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                    b.pop();
                }
                b
            }
            (Some(_), Some(_)) => bail!("[auth] has both secret and secret_file: give one"),
            (None, None) => bail!("[auth] needs secret or secret_file"),
        };
        if bytes.is_empty() {
            bail!("[auth] secret is empty");
        }
        Ok(bytes)
    }
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
                "node config {}: unknown key {key:?} (known: name, cluster, cluster_fallback, etcd_start_retry_ms, listen, call_timeout_ms, threads, busy_poll_us, busy_poll_max, drain_timeout_ms, handover_socket, metrics_listen, limits, liveness, auth, admin, service, {})",
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
        cfg.check()
            .with_context(|| format!("node config {}", path.display()))?;
        let etcd = cfg.cluster.to_string_lossy().starts_with("etcd://");
        if cfg.cluster_fallback.is_some() && !etcd {
            anyhow::bail!(
                "node config {}: cluster_fallback is for a cluster config in etcd (cluster = \"etcd://host:port/PREFIX\"); this node reads the file {}",
                path.display(),
                cfg.cluster.display()
            );
        }
        if cfg.cluster.is_relative() {
            cfg.cluster = cfg.dir.join(&cfg.cluster);
        }
        if let Some(f) = &cfg.cluster_fallback {
            if f.is_relative() {
                cfg.cluster_fallback = Some(cfg.dir.join(f));
            }
        }
        Ok(cfg)
    }

    /// The checks serde cannot do: values that would make the node useless.
    fn check(&self) -> Result<()> {
        let l = &self.limits;
        for (key, v) in [
            ("inbound_bytes", l.inbound_bytes),
            ("outbound_bytes", l.outbound_bytes),
            ("per_peer_bytes", l.per_peer_bytes),
            ("parked_bytes", l.parked_bytes),
        ] {
            if v == 0 {
                bail!("limits.{key} must be at least 1");
            }
            if usize::try_from(v).is_err() {
                bail!("limits.{key} = {v} is larger than this machine can address");
            }
        }
        if let Some(m) = &self.metrics_listen {
            m.parse::<std::net::SocketAddr>().with_context(|| {
                format!("metrics_listen = {m:?} is not an address (`host:port`, e.g. \"127.0.0.1:9100\")")
            })?;
        }
        if let Some(auth) = &self.auth {
            auth.secret_bytes(&self.dir)?;
            if auth.timeout_ms == 0 {
                bail!("auth.timeout_ms must be at least 1");
            }
        }
        Ok(())
    }
}

/// The etcd URL of a node config's `cluster` setting, when it is one. (The node config
/// turns a relative `cluster` into a path under the config's directory; an `etcd://` URL
/// is found inside it.)
pub fn etcd_url_of(cfg: &NodeConfig) -> Option<String> {
    let text = cfg.cluster.to_string_lossy();
    text.find("etcd://").map(|i| text[i..].to_string())
}

/// Whether a `--cluster` argument names an etcd URL (`etcd://host:port/PREFIX`) rather
/// than a file.
pub fn is_etcd_url(cluster: &std::path::Path) -> bool {
    cluster.to_string_lossy().starts_with("etcd://")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The reference page every key must be listed in.
    const REFERENCE: &str = include_str!("../../../docs/node-config.md");

    /// The keys the reference documents, as `table.key` (`key` at the top level): every
    /// `key = ...` line, commented out or not, in its ```toml blocks.
    fn documented() -> BTreeSet<String> {
        let mut keys = BTreeSet::new();
        let (mut in_toml, mut table) = (false, String::new());
        for line in REFERENCE.lines() {
            if line.starts_with("```") {
                in_toml = line == "```toml";
                table.clear();
                continue;
            }
            if !in_toml {
                continue;
            }
            let code = line.trim_start().trim_start_matches('#').trim_start();
            if let Some(head) = code.strip_prefix('[') {
                table = head.trim_matches(|c| c == '[' || c == ']').to_string();
                table = table.split(']').next().unwrap_or_default().to_string();
                keys.insert(table.clone());
                continue;
            }
            let Some((key, _)) = code.split_once('=') else {
                continue;
            };
            let key = key.trim();
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                keys.insert(if table.is_empty() {
                    key.to_string()
                } else {
                    format!("{table}.{key}")
                });
            }
        }
        keys
    }

    /// The field names in a value's pretty `Debug` output, as `parent.field` (`field`
    /// at the top), read from the derive: every field shows there, `None` ones too.
    fn fields(debug: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut seen: Vec<(usize, String)> = Vec::new();
        for line in debug.lines() {
            let indent = line.len() - line.trim_start().len();
            let Some((name, _)) = line.trim_start().split_once(": ") else {
                continue;
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                continue; // a map key ("k": ...) or a value, not a field
            }
            let parent = seen
                .iter()
                .rev()
                .find(|(i, _)| *i < indent)
                .map(|(_, n)| n.clone());
            seen.push((indent, name.to_string()));
            out.push(match parent {
                Some(p) => format!("{p}.{name}"),
                None => name.to_string(),
            });
        }
        out
    }

    /// Every key the parser accepts: the fields of a config with every table present.
    fn accepted() -> BTreeSet<String> {
        let dir = std::env::temp_dir().join(format!("bee-node-config-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.toml");
        std::fs::write(
            &path,
            "name = \"a\"\ncluster = \"cluster.lua\"\n[auth]\nsecret = \"s\"\n[[service]]\nkind = \"echo\"\n",
        )
        .unwrap();
        let cfg = NodeConfig::load(&path, &[]).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let mut keys = BTreeSet::new();
        for f in fields(&format!("{cfg:#?}")) {
            // `extra` holds the tables a binary's kinds read; `dir` is not read from the
            // file; a service entry's other keys belong to its kind.
            if f == "extra" || f == "dir" || f == "skynet_config" || f.ends_with(".options") {
                continue;
            }
            keys.insert(match f.strip_prefix("services") {
                Some(rest) => format!("service{rest}"),
                None => f,
            });
        }
        // The tables the `bee` binary's kinds read (`App::new`).
        keys.extend(["mysql".to_string(), "env".to_string()]);
        #[cfg(feature = "mysql")]
        for f in fields(&format!("{:#?}", bee_mysql::MysqlConfig::default())) {
            keys.insert(format!("mysql.{f}"));
        }
        keys
    }

    #[test]
    fn every_key_the_parser_accepts_is_in_the_reference() {
        let (documented, accepted) = (documented(), accepted());
        assert!(accepted.contains("limits.inbound_bytes"), "{accepted:?}");
        assert!(accepted.contains("auth.plain_nodes"), "{accepted:?}");
        assert!(accepted.contains("service.kind"), "{accepted:?}");
        let missing: Vec<_> = accepted.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "docs/node-config.md does not list {missing:?}: add them to its toml block"
        );
        let unknown: Vec<_> = documented.difference(&accepted).collect();
        assert!(
            unknown.is_empty(),
            "docs/node-config.md lists {unknown:?}, which the parser does not accept"
        );
    }

    #[test]
    fn the_references_example_loads() {
        // The uncommented lines of the reference's toml block are a config a node
        // accepts (the cluster file need not exist for the check).
        let block = REFERENCE
            .split("```toml\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("a toml block in docs/node-config.md");
        let dir = std::env::temp_dir().join(format!("bee-node-config-ref-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.toml");
        std::fs::write(&path, block).unwrap();
        std::fs::write(dir.join("cluster.secret"), "s3cret\n").unwrap();
        let loaded = NodeConfig::load(&path, &["mysql".to_string(), "env".to_string()]);
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = loaded.unwrap();
        assert_eq!(cfg.limits.per_peer_bytes, Limits::default().per_peer_bytes);
        assert_eq!(cfg.liveness.bound_ms, Liveness::default().bound_ms);
        assert_eq!(cfg.services.len(), 1);
    }
}
