//! The live registry of one node: the cluster config it currently uses (with its version,
//! content hash, when and from where it was applied), the names its services registered,
//! this node's incarnation and the ones learned from peers, with reload/replace/apply
//! diffs, generation counters for caches, and a broadcast of every change.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, watch};

use crate::config::{ClusterConfig, ConfigHash, NodeEntry};
use crate::error::RegistryError;

/// A service's 32-bit address (skynet prints it as `:0100000a`).
pub type ServiceAddr = u32;

/// How many events a slow subscriber may fall behind before it sees `Lagged`.
const EVENT_CAPACITY: usize = 1024;

/// What a reload or replace changed in the cluster config. Every list is sorted by node
/// name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigDiff {
    /// Nodes new to the config, with their address.
    pub added: Vec<(String, String)>,
    /// Nodes whose address changed: name, old address, new address.
    pub changed: Vec<(String, String, String)>,
    /// Nodes now marked down (`false`), including ones the config did not name before.
    pub marked_down: Vec<String>,
    /// Nodes no longer in the config (only [`Registry::replace`] removes nodes).
    pub removed: Vec<String>,
    /// Nodes that were marked down and now have an address.
    pub brought_up: Vec<(String, String)>,
    /// Option keys (`__nowaiting` included) that were set, changed or removed.
    pub options_changed: Vec<String>,
    /// The config version went from the first to the second number.
    pub version_changed: Option<(u64, u64)>,
}

impl ConfigDiff {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.changed.is_empty()
            && self.marked_down.is_empty()
            && self.removed.is_empty()
            && self.brought_up.is_empty()
            && self.options_changed.is_empty()
            && self.version_changed.is_none()
    }

    /// Record how one node goes from `old` to `new`.
    fn node(&mut self, name: &str, old: Option<&NodeEntry>, new: &NodeEntry) {
        match (old, new) {
            (None, NodeEntry::Up(a)) => self.added.push((name.to_string(), a.clone())),
            (Some(NodeEntry::Up(a)), NodeEntry::Up(b)) if a != b => {
                self.changed.push((name.to_string(), a.clone(), b.clone()));
            }
            (None | Some(NodeEntry::Up(_)), NodeEntry::Down) => {
                self.marked_down.push(name.to_string());
            }
            (Some(NodeEntry::Down), NodeEntry::Up(b)) => {
                self.brought_up.push((name.to_string(), b.clone()));
            }
            _ => {}
        }
    }
}

impl fmt::Display for ConfigDiff {
    /// One line, e.g. `added lobby=127.0.0.1:1; changed x 1->2; down y`, or `no change`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no change");
        }
        let mut parts: Vec<String> = Vec::new();
        let join = |items: Vec<String>| items.join(", ");
        if !self.added.is_empty() {
            let items = self.added.iter().map(|(n, a)| format!("{n}={a}")).collect();
            parts.push(format!("added {}", join(items)));
        }
        if !self.changed.is_empty() {
            let items = self
                .changed
                .iter()
                .map(|(n, old, new)| format!("{n} {old}->{new}"))
                .collect();
            parts.push(format!("changed {}", join(items)));
        }
        if !self.marked_down.is_empty() {
            parts.push(format!("down {}", self.marked_down.join(", ")));
        }
        if !self.brought_up.is_empty() {
            let items = self
                .brought_up
                .iter()
                .map(|(n, a)| format!("{n}={a}"))
                .collect();
            parts.push(format!("up {}", join(items)));
        }
        if !self.removed.is_empty() {
            parts.push(format!("removed {}", self.removed.join(", ")));
        }
        if !self.options_changed.is_empty() {
            parts.push(format!("options {}", self.options_changed.join(", ")));
        }
        if let Some((old, new)) = self.version_changed {
            parts.push(format!("version {old}->{new}"));
        }
        f.write_str(&parts.join("; "))
    }
}

/// A change announced to [`Registry::subscribe`]rs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryEvent {
    /// The cluster config changed (by reload or replace).
    ConfigChanged(ConfigDiff),
    /// A name now points at `addr`; `previous` is where it pointed before, if anywhere.
    NameRegistered {
        /// The registered name.
        name: String,
        /// Its new address.
        addr: ServiceAddr,
        /// The address it had before (the name moved).
        previous: Option<ServiceAddr>,
    },
    /// A name was removed.
    NameUnregistered {
        /// The removed name.
        name: String,
        /// The address it had.
        addr: ServiceAddr,
    },
    /// A node's address changed in the config ("X moved old → new"): drop any connection
    /// or sender cached for `from`. Sent after the [`RegistryEvent::ConfigChanged`] that
    /// carries the same change, one per moved node.
    NodeMoved {
        /// The node.
        node: String,
        /// The address it had.
        from: String,
        /// The address it has now.
        to: String,
    },
    /// A peer connected with another incarnation than the one learned before: it
    /// restarted ("X restarted a → b"). Whatever was cached about it (names, sessions)
    /// belongs to the old process.
    PeerRestarted {
        /// The peer node.
        node: String,
        /// The incarnation learned before.
        previous: u64,
        /// The incarnation it has now.
        incarnation: u64,
    },
    /// A peer's cluster-visible names changed ("names of X changed"): names it registered,
    /// dropped, or pointed at another service since this node last learnt them. Learnt
    /// from the peer's `hello` answer (each (re)connect, and when the peer says its names
    /// changed); a service that cached the peer's names or queried addresses re-queries.
    /// After a [`RegistryEvent::PeerRestarted`] every name of the new run is `moved`
    /// (addresses are never reused across runs).
    PeerNamesChanged {
        /// The peer node.
        node: String,
        /// Names it has now and did not have, sorted.
        added: Vec<String>,
        /// Names it had and has no more, sorted.
        removed: Vec<String>,
        /// Names it still has, now at another address, sorted.
        moved: Vec<String>,
    },
}

impl fmt::Display for RegistryEvent {
    /// One line for logs, e.g. `lobby moved 127.0.0.1:1 -> 127.0.0.1:2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryEvent::ConfigChanged(diff) => write!(f, "cluster config changed: {diff}"),
            RegistryEvent::NameRegistered {
                name,
                addr,
                previous: Some(old),
            } => write!(f, "name {name} moved :{old:08x} -> :{addr:08x}"),
            RegistryEvent::NameRegistered { name, addr, .. } => {
                write!(f, "name {name} registered at :{addr:08x}")
            }
            RegistryEvent::NameUnregistered { name, addr } => {
                write!(f, "name {name} unregistered (was :{addr:08x})")
            }
            RegistryEvent::NodeMoved { node, from, to } => {
                write!(f, "{node} moved {from} -> {to}")
            }
            RegistryEvent::PeerRestarted {
                node,
                previous,
                incarnation,
            } => write!(f, "{node} restarted {previous} -> {incarnation}"),
            RegistryEvent::PeerNamesChanged {
                node,
                added,
                removed,
                moved,
            } => {
                let mut parts = Vec::new();
                for (word, list) in [("added", added), ("removed", removed), ("moved", moved)] {
                    if !list.is_empty() {
                        parts.push(format!("{word} {}", list.join(", ")));
                    }
                }
                write!(f, "names of {node} changed: {}", parts.join("; "))
            }
        }
    }
}

/// What a peer said about its cluster-visible names ([`Registry::set_peer_names`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerNames {
    /// The peer's run.
    pub incarnation: u64,
    /// Its names generation in that run (grows with every name change).
    pub generation: u64,
    /// Name → service address on the peer.
    pub names: BTreeMap<String, ServiceAddr>,
}

/// Where the running config came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// Given in code: [`Registry::new`], [`Registry::reload`], [`Registry::replace`].
    Local,
    /// Read from this file.
    File(PathBuf),
    /// Pushed by another process (`from` names it, e.g. `"bee config push@10.0.0.5"`).
    Push {
        /// Who pushed it.
        from: String,
    },
    /// Read from this etcd key.
    Etcd {
        /// The key, e.g. `/bee/prod/config`.
        key: String,
    },
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::Local => f.write_str("local"),
            ConfigSource::File(p) => write!(f, "file {}", p.display()),
            ConfigSource::Push { from } => write!(f, "push from {from}"),
            ConfigSource::Etcd { key } => write!(f, "etcd key {key}"),
        }
    }
}

/// What a node runs: the version and content hash of its config, when it was applied and
/// where it came from. Always read together with the config it describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigMeta {
    /// [`ClusterConfig::version`] of the running config.
    pub version: u64,
    /// [`ClusterConfig::content_hash`] of the running config.
    pub hash: ConfigHash,
    /// When the running config was applied (the registry's creation for the first one).
    pub applied_at: SystemTime,
    /// Where it came from.
    pub source: ConfigSource,
}

impl fmt::Display for ConfigMeta {
    /// `version 7 hash 0123456789abcdef from file cluster.lua`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "version {} hash {} from {}",
            self.version, self.hash, self.source
        )
    }
}

/// The config and its meta, behind one lock so a reader never sees one without the other.
struct Live {
    config: ClusterConfig,
    meta: ConfigMeta,
}

impl Live {
    fn new(config: ClusterConfig, source: ConfigSource) -> Live {
        let meta = ConfigMeta {
            version: config.version,
            hash: config.content_hash(),
            applied_at: SystemTime::now(),
            source,
        };
        Live { config, meta }
    }
}

/// Last incarnation handed out in this process, so two registries started within the same
/// millisecond (tests run many nodes in one process) still differ.
static LAST_INCARNATION: AtomicU64 = AtomicU64::new(0);

/// A new incarnation: the wall clock in milliseconds since 1970, raised above every one
/// this process handed out before.
fn fresh_incarnation() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64)
        .max(1);
    let mut last = LAST_INCARNATION.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST_INCARNATION.compare_exchange_weak(
            last,
            next,
            Ordering::AcqRel,
            Ordering::Relaxed,
        ) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

struct Inner {
    live: RwLock<Live>,
    /// This node's name in the config, when the registry knows it.
    self_name: RwLock<Option<String>>,
    /// This process's incarnation.
    incarnation: u64,
    /// Peer node -> the incarnation it reported on its last connect.
    peers: Mutex<HashMap<String, u64>>,
    /// Peer node -> the cluster-visible names it reported last.
    peer_names: Mutex<HashMap<String, PeerNames>>,
    names: RwLock<HashMap<String, ServiceAddr>>,
    generation: AtomicU64,
    config_generation: AtomicU64,
    events: broadcast::Sender<RegistryEvent>,
    /// Carries the config generation; wakes [`Registry::wait_for_node`].
    config_watch: watch::Sender<u64>,
}

/// One node's registry: the cluster config and the names registered on this node.
///
/// Cloning is cheap (an `Arc`); every clone sees the same state. All methods take `&self`
/// and may be called from any thread; no lock is held across an `.await`.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

/// Locks are only held for map operations that cannot panic; a poisoned lock still holds
/// consistent data, so take it rather than propagate the poison.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(lock: &Mutex<T>) -> MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    /// A registry using `config`, with no names registered. It does not know which node it
    /// belongs to (see [`Registry::with_self`]); its source is [`ConfigSource::Local`].
    pub fn new(config: ClusterConfig) -> Registry {
        Self::build(None, config, ConfigSource::Local)
    }

    /// A registry for node `name` using `config`: [`Registry::apply`] then refuses a config
    /// that drops this node's own entry.
    pub fn with_self(name: &str, config: ClusterConfig) -> Registry {
        Self::build(Some(name.to_string()), config, ConfigSource::Local)
    }

    /// A registry for node `name` using `config`, which came from `source` (e.g. an etcd
    /// key read at start). The config is checked first.
    pub fn with_source(
        name: &str,
        config: ClusterConfig,
        source: ConfigSource,
    ) -> Result<Registry, RegistryError> {
        config.validate()?;
        Ok(Self::build(Some(name.to_string()), config, source))
    }

    /// A registry for node `name` whose config is read from the file at `path` (Lua form,
    /// or TOML for `*.toml`) and checked; its source is [`ConfigSource::File`].
    pub fn load_file(name: &str, path: &Path) -> Result<Registry, RegistryError> {
        let config = ClusterConfig::load(path)?;
        config.validate()?;
        Ok(Self::build(
            Some(name.to_string()),
            config,
            ConfigSource::File(path.to_path_buf()),
        ))
    }

    fn build(self_name: Option<String>, config: ClusterConfig, source: ConfigSource) -> Registry {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (config_watch, _) = watch::channel(0);
        Registry {
            inner: Arc::new(Inner {
                live: RwLock::new(Live::new(config, source)),
                self_name: RwLock::new(self_name),
                incarnation: fresh_incarnation(),
                peers: Mutex::new(HashMap::new()),
                peer_names: Mutex::new(HashMap::new()),
                names: RwLock::new(HashMap::new()),
                generation: AtomicU64::new(0),
                config_generation: AtomicU64::new(0),
                events,
                config_watch,
            }),
        }
    }

    /// A snapshot of the current cluster config.
    pub fn config(&self) -> ClusterConfig {
        read(&self.inner.live).config.clone()
    }

    /// What the node runs: version, hash, when and from where it was applied.
    pub fn meta(&self) -> ConfigMeta {
        read(&self.inner.live).meta.clone()
    }

    /// The config and its meta, taken together (no apply can fall between the two).
    pub fn snapshot(&self) -> (ClusterConfig, ConfigMeta) {
        let live = read(&self.inner.live);
        (live.config.clone(), live.meta.clone())
    }

    /// This node's name, when the registry knows it.
    pub fn self_name(&self) -> Option<String> {
        read(&self.inner.self_name).clone()
    }

    /// Tell the registry which node it belongs to (for a registry made with
    /// [`Registry::new`]).
    pub fn set_self_name(&self, name: &str) {
        *write(&self.inner.self_name) = Some(name.to_string());
    }

    /// This process's incarnation: milliseconds since 1970 when the registry was made,
    /// raised if needed so every registry of this process has its own. A peer that sees
    /// another incarnation under the same node name knows the node restarted.
    pub fn incarnation(&self) -> u64 {
        self.inner.incarnation
    }

    /// Record the incarnation peer `node` reported on connect. Returns the one known
    /// before; when that differs, subscribers get [`RegistryEvent::PeerRestarted`].
    pub fn set_peer_incarnation(&self, node: &str, incarnation: u64) -> Option<u64> {
        let mut peers = lock(&self.inner.peers);
        let previous = peers.insert(node.to_string(), incarnation);
        if let Some(previous) = previous.filter(|p| *p != incarnation) {
            tracing::info!("{node} restarted: incarnation {previous} -> {incarnation}");
            let _ = self.inner.events.send(RegistryEvent::PeerRestarted {
                node: node.to_string(),
                previous,
                incarnation,
            });
        }
        drop(peers);
        previous
    }

    /// Record the cluster-visible names peer `node` reported (its run `incarnation`, its
    /// names `generation`, name → address). A report older than the one recorded (an
    /// earlier run, or an earlier generation of the same run) is ignored and returns
    /// false. When names differ from the ones recorded before, subscribers get
    /// [`RegistryEvent::PeerNamesChanged`]; the first report of a peer is recorded without
    /// an event (nothing was known to change).
    pub fn set_peer_names(
        &self,
        node: &str,
        incarnation: u64,
        generation: u64,
        names: BTreeMap<String, ServiceAddr>,
    ) -> bool {
        let mut all = lock(&self.inner.peer_names);
        let before = all.get(node);
        if let Some(b) = before {
            if (incarnation, generation) <= (b.incarnation, b.generation) {
                return false;
            }
        }
        let event = before.and_then(|b| {
            let added: Vec<String> = names
                .keys()
                .filter(|n| !b.names.contains_key(*n))
                .cloned()
                .collect();
            let removed: Vec<String> = b
                .names
                .keys()
                .filter(|n| !names.contains_key(*n))
                .cloned()
                .collect();
            let moved: Vec<String> = names
                .iter()
                .filter(|(n, a)| b.names.get(*n).is_some_and(|old| old != *a))
                .map(|(n, _)| n.clone())
                .collect();
            (!added.is_empty() || !removed.is_empty() || !moved.is_empty()).then(|| {
                RegistryEvent::PeerNamesChanged {
                    node: node.to_string(),
                    added,
                    removed,
                    moved,
                }
            })
        });
        all.insert(
            node.to_string(),
            PeerNames {
                incarnation,
                generation,
                names,
            },
        );
        if let Some(event) = event {
            tracing::info!("{event}");
            // Under the lock: two reports of one peer are announced in the order recorded.
            let _ = self.inner.events.send(event);
        }
        true
    }

    /// The cluster-visible names peer `node` reported last, with its incarnation and
    /// names generation then.
    pub fn peer_names(&self, node: &str) -> Option<PeerNames> {
        lock(&self.inner.peer_names).get(node).cloned()
    }

    /// The incarnation peer `node` reported last, if it has connected.
    pub fn peer_incarnation(&self, node: &str) -> Option<u64> {
        lock(&self.inner.peers).get(node).copied()
    }

    /// The `"host:port"` of `node`.
    pub fn lookup(&self, node: &str) -> Result<String, RegistryError> {
        let live = read(&self.inner.live);
        let config = &live.config;
        match config.nodes.get(node) {
            Some(NodeEntry::Up(addr)) => Ok(addr.clone()),
            Some(NodeEntry::Down) => Err(RegistryError::NodeDown {
                node: node.to_string(),
            }),
            None => Err(RegistryError::UnknownNode {
                node: node.to_string(),
                known: config.nodes.keys().cloned().collect(),
            }),
        }
    }

    /// The `"host:port"` of `node`, waiting up to `timeout` for a reload that names it
    /// (skynet's behaviour without `__nowaiting`). A node marked down fails at once, also
    /// when a reload marks it down while waiting; on timeout the error is `UnknownNode`.
    pub async fn wait_for_node(
        &self,
        node: &str,
        timeout: Duration,
    ) -> Result<String, RegistryError> {
        let mut changes = self.inner.config_watch.subscribe();
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        loop {
            // Mark the current config seen before reading it, so no reload is missed.
            changes.borrow_and_update();
            let unknown = match self.lookup(node) {
                Err(e @ RegistryError::UnknownNode { .. }) => e,
                done => return done,
            };
            let woke = match deadline {
                Some(at) => tokio::time::timeout_at(at, changes.changed()).await,
                None => Ok(changes.changed().await),
            };
            match woke {
                Ok(Ok(())) => continue,
                // The sender lives as long as `self`; a closed channel cannot happen, but
                // would mean no reload can come either.
                Ok(Err(_)) => return Err(unknown),
                Err(_elapsed) => {
                    tracing::debug!(node, ?timeout, "gave up waiting for cluster node");
                    return self.lookup(node);
                }
            }
        }
    }

    /// Merge `config` into the current one, as skynet's `reload`: its nodes overwrite
    /// (an address, or `false` to mark down), nodes it does not name stay as they were.
    /// Its options overwrite the ones it names (others stay); `nowaiting` takes its value.
    /// A non-zero version in `config` becomes the running version; no check is made (see
    /// [`Registry::apply`] for the checked path).
    pub fn reload(&self, config: ClusterConfig) -> ConfigDiff {
        let mut live = write(&self.inner.live);
        self.commit(&mut live, config, false, ConfigSource::Local)
    }

    /// Replace the whole config: nodes absent from `config` are removed (`diff.removed`),
    /// options, `nowaiting` and the version become exactly its own. No check is made (see
    /// [`Registry::apply`] for the checked path).
    pub fn replace(&self, config: ClusterConfig) -> ConfigDiff {
        let mut live = write(&self.inner.live);
        self.commit(&mut live, config, true, ConfigSource::Local)
    }

    /// Check `config` and make it the whole running config, atomically: the one entry
    /// point for a file reload, a push and etcd. Refused (and the running config left as
    /// it was) when:
    ///
    /// - a node name or address is malformed ([`RegistryError::BadAddress`],
    ///   [`RegistryError::BadOption`]);
    /// - its version is below the running one ([`RegistryError::VersionBehind`]), or equal
    ///   and non-zero with other content ([`RegistryError::VersionConflict`]), unless
    ///   `force`;
    /// - the running config names this node and `config` does not
    ///   ([`RegistryError::OwnEntryDropped`]; `force` does not override this).
    ///
    /// Applying the config already running changes nothing and sends no event.
    pub fn apply(
        &self,
        config: ClusterConfig,
        source: ConfigSource,
        force: bool,
    ) -> Result<ConfigDiff, RegistryError> {
        config.validate()?;
        let hash = config.content_hash();
        let self_name = self.self_name();
        let mut live = write(&self.inner.live);
        let running = &live.meta;
        if !force {
            if config.version < running.version {
                return Err(RegistryError::VersionBehind {
                    offered: config.version,
                    running: running.version,
                });
            }
            if config.version == running.version && config.version != 0 && hash != running.hash {
                return Err(RegistryError::VersionConflict {
                    version: config.version,
                    offered_hash: hash.short(),
                    running_hash: running.hash.short(),
                });
            }
        }
        if let Some(me) = self_name {
            if live.config.nodes.contains_key(&me) && !config.nodes.contains_key(&me) {
                return Err(RegistryError::OwnEntryDropped { node: me });
            }
        }
        Ok(self.commit(&mut live, config, true, source))
    }

    /// Record that the running config now comes from `source`, when its content hash is
    /// `hash` (the same config arrived from elsewhere, e.g. from etcd after a node started
    /// from its fallback file). Returns whether it did. Nothing else changes and nothing
    /// is announced: the config is the same.
    pub fn set_source(&self, hash: &ConfigHash, source: ConfigSource) -> bool {
        let mut live = write(&self.inner.live);
        if live.meta.hash != *hash || live.meta.source == source {
            return false;
        }
        tracing::info!("cluster config ({}) now from {source}", live.meta);
        live.meta.source = source;
        true
    }

    /// Read the file at `path` and [`Registry::apply`] it with [`ConfigSource::File`].
    pub fn apply_file(&self, path: &Path, force: bool) -> Result<ConfigDiff, RegistryError> {
        let config = ClusterConfig::load(path)?;
        self.apply(config, ConfigSource::File(path.to_path_buf()), force)
    }

    /// Compute the diff and, when it is not empty, change the config and its meta, then
    /// announce it. Runs under the write lock, so readers see the old or the new config,
    /// never a mix.
    fn commit(
        &self,
        live: &mut Live,
        new: ClusterConfig,
        whole: bool,
        source: ConfigSource,
    ) -> ConfigDiff {
        let current = &mut live.config;
        let mut diff = ConfigDiff::default();
        for (name, entry) in &new.nodes {
            diff.node(name, current.nodes.get(name), entry);
        }
        if whole {
            diff.removed = current
                .nodes
                .keys()
                .filter(|n| !new.nodes.contains_key(*n))
                .cloned()
                .collect();
        }
        let mut options_changed: Vec<String> = new
            .options
            .iter()
            .filter(|(k, v)| current.options.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        if whole {
            options_changed.extend(
                current
                    .options
                    .keys()
                    .filter(|k| !new.options.contains_key(*k))
                    .cloned(),
            );
        }
        if current.nowaiting != new.nowaiting {
            options_changed.push("__nowaiting".to_string());
        }
        options_changed.sort();
        options_changed.dedup();
        diff.options_changed = options_changed;
        let new_version = if whole || new.version != 0 {
            new.version
        } else {
            current.version
        };
        if new_version != current.version {
            diff.version_changed = Some((current.version, new_version));
        }
        if diff.is_empty() {
            return diff;
        }

        if whole {
            *current = new;
        } else {
            current.nowaiting = new.nowaiting;
            current.version = new_version;
            current.nodes.extend(new.nodes);
            current.options.extend(new.options);
        }
        live.meta = ConfigMeta {
            version: live.config.version,
            hash: live.config.content_hash(),
            applied_at: SystemTime::now(),
            source,
        };
        let generation = self.inner.config_generation.fetch_add(1, Ordering::AcqRel) + 1;
        tracing::info!(
            generation,
            "cluster config {} ({}): {diff}",
            if whole { "replaced" } else { "reloaded" },
            live.meta
        );
        // Announced under the lock, so subscribers see changes in the order they happened.
        let _ = self
            .inner
            .events
            .send(RegistryEvent::ConfigChanged(diff.clone()));
        for (node, from, to) in &diff.changed {
            let _ = self.inner.events.send(RegistryEvent::NodeMoved {
                node: node.clone(),
                from: from.clone(),
                to: to.clone(),
            });
        }
        self.inner.config_watch.send_replace(generation);
        diff
    }

    /// Make local service `addr` reachable as `name` from other nodes. Returns the address
    /// the name had before: registering a name that already points elsewhere moves it.
    pub fn register(
        &self,
        name: &str,
        addr: ServiceAddr,
    ) -> Result<Option<ServiceAddr>, RegistryError> {
        check_service_name(name)?;
        let mut names = write(&self.inner.names);
        let previous = names.insert(name.to_string(), addr);
        if previous == Some(addr) {
            return Ok(previous);
        }
        let generation = self.inner.generation.fetch_add(1, Ordering::AcqRel) + 1;
        match previous {
            Some(old) => {
                tracing::info!(
                    generation,
                    "name {name} moved from :{old:08x} to :{addr:08x}"
                )
            }
            None => tracing::info!(generation, "name {name} registered at :{addr:08x}"),
        }
        let _ = self.inner.events.send(RegistryEvent::NameRegistered {
            name: name.to_string(),
            addr,
            previous,
        });
        drop(names);
        Ok(previous)
    }

    /// Remove a registered name; returns the address it had (None if it had none).
    pub fn unregister(&self, name: &str) -> Option<ServiceAddr> {
        let mut names = write(&self.inner.names);
        let addr = names.remove(name)?;
        let generation = self.inner.generation.fetch_add(1, Ordering::AcqRel) + 1;
        tracing::info!(generation, "name {name} unregistered (was :{addr:08x})");
        let _ = self.inner.events.send(RegistryEvent::NameUnregistered {
            name: name.to_string(),
            addr,
        });
        drop(names);
        Some(addr)
    }

    /// The address registered as `name` on this node (a read lock and one hash lookup).
    pub fn query(&self, name: &str) -> Option<ServiceAddr> {
        read(&self.inner.names).get(name).copied()
    }

    /// Every registered name with its address, sorted by name.
    pub fn names(&self) -> Vec<(String, ServiceAddr)> {
        let mut all: Vec<(String, ServiceAddr)> = read(&self.inner.names)
            .iter()
            .map(|(n, a)| (n.clone(), *a))
            .collect();
        all.sort();
        all
    }

    /// Bumps on every name change (register that changes something, unregister of a
    /// registered name). A cache of name lookups taken at generation `g` is valid while
    /// this still returns `g`: read the generation before the lookups it guards.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Bumps on every reload/replace that changes the config.
    pub fn config_generation(&self) -> u64 {
        self.inner.config_generation.load(Ordering::Acquire)
    }

    /// Every later change, in order. A subscriber that falls more than 1024 events behind
    /// gets `RecvError::Lagged` and should re-read [`Registry::config`] / [`Registry::names`].
    pub fn subscribe(&self) -> broadcast::Receiver<RegistryEvent> {
        self.inner.events.subscribe()
    }

    /// Every node of the config, sorted by name.
    pub fn nodes(&self) -> Vec<(String, NodeEntry)> {
        read(&self.inner.live)
            .config
            .nodes
            .iter()
            .map(|(n, e)| (n.clone(), e.clone()))
            .collect()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("nodes", &read(&self.inner.live).config.nodes.len())
            .field("self_name", &self.self_name())
            .field("incarnation", &self.incarnation())
            .field("names", &read(&self.inner.names).len())
            .field("generation", &self.generation())
            .field("config_generation", &self.config_generation())
            .finish()
    }
}

fn check_service_name(name: &str) -> Result<(), RegistryError> {
    let bad = |reason: &str| {
        Err(RegistryError::BadName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("a name cannot be empty");
    }
    if name.starts_with('@') {
        return bad(
            "register the name without the `@` (callers write \"@name\", the name is \"name\")",
        );
    }
    if name.chars().any(char::is_control) {
        return bad("a name cannot contain control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::broadcast::error::TryRecvError;

    fn cfg(text: &str) -> ClusterConfig {
        ClusterConfig::parse_lua(text).unwrap()
    }

    fn s(x: &str) -> String {
        x.to_string()
    }

    #[test]
    fn lookup_answers_and_errors() {
        let r = Registry::new(cfg("lobby = \"127.0.0.1:1\"\nshop_master = false\n"));
        assert_eq!(r.lookup("lobby").unwrap(), "127.0.0.1:1");
        assert_eq!(
            r.lookup("shop_master"),
            Err(RegistryError::NodeDown {
                node: s("shop_master")
            })
        );
        assert_eq!(
            r.lookup("lpersistence_3"),
            Err(RegistryError::UnknownNode {
                node: s("lpersistence_3"),
                known: vec![s("lobby"), s("shop_master")]
            })
        );
        assert_eq!(
            r.nodes(),
            vec![
                (s("lobby"), NodeEntry::Up(s("127.0.0.1:1"))),
                (s("shop_master"), NodeEntry::Down)
            ]
        );
    }

    #[test]
    fn reload_merges() {
        let r = Registry::new(cfg(
            "a = \"h:1\"\nb = \"h:2\"\nc = false\nd = \"h:4\"\nkeep = \"h:9\"\n__opt = 1\n",
        ));
        let diff = r.reload(cfg(
            "a = \"h:1\"\nb = \"h:22\"\nc = \"h:3\"\nd = false\ne = \"h:5\"\nf = false\n__nowaiting = true\n",
        ));
        assert_eq!(diff.added, vec![(s("e"), s("h:5"))]);
        assert_eq!(diff.changed, vec![(s("b"), s("h:2"), s("h:22"))]);
        assert_eq!(diff.brought_up, vec![(s("c"), s("h:3"))]);
        assert_eq!(diff.marked_down, vec![s("d"), s("f")]);
        assert!(diff.removed.is_empty());
        assert_eq!(diff.options_changed, vec![s("__nowaiting")]);
        assert_eq!(
            diff.to_string(),
            "added e=h:5; changed b h:2->h:22; down d, f; up c=h:3; options __nowaiting"
        );
        let now = r.config();
        assert_eq!(now.nodes.len(), 7);
        assert_eq!(r.lookup("keep").unwrap(), "h:9");
        assert_eq!(r.lookup("b").unwrap(), "h:22");
        assert!(now.nowaiting);
        assert_eq!(now.options.get("__opt").map(String::as_str), Some("1"));
        assert_eq!(r.config_generation(), 1);

        // The same reload again changes nothing and bumps nothing.
        let again = r.reload(cfg(
            "a = \"h:1\"\nb = \"h:22\"\nc = \"h:3\"\nd = false\ne = \"h:5\"\nf = false\n__nowaiting = true\n",
        ));
        assert!(again.is_empty());
        assert_eq!(again.to_string(), "no change");
        assert_eq!(r.config_generation(), 1);
    }

    #[test]
    fn replace_removes_absent_nodes_and_options() {
        let r = Registry::new(cfg("a = \"h:1\"\nb = \"h:2\"\nc = false\n__opt = 1\n"));
        let diff = r.replace(cfg("a = \"h:1\"\nb = \"h:3\"\n"));
        assert_eq!(diff.removed, vec![s("c")]);
        assert_eq!(diff.changed, vec![(s("b"), s("h:2"), s("h:3"))]);
        assert_eq!(diff.options_changed, vec![s("__opt")]);
        assert_eq!(
            diff.to_string(),
            "changed b h:2->h:3; removed c; options __opt"
        );
        assert_eq!(r.config(), cfg("a = \"h:1\"\nb = \"h:3\"\n"));
        assert_eq!(r.config_generation(), 1);
        assert!(r.replace(cfg("b = \"h:3\"\na = \"h:1\"\n")).is_empty());
        assert_eq!(r.config_generation(), 1);
    }

    #[test]
    fn names_register_move_unregister() {
        let r = Registry::new(ClusterConfig::default());
        assert_eq!(r.generation(), 0);
        assert_eq!(r.register("lpersistence", 0x0100_000a), Ok(None));
        assert_eq!(r.generation(), 1);
        assert_eq!(r.query("lpersistence"), Some(0x0100_000a));
        // Registering the same again changes nothing.
        assert_eq!(
            r.register("lpersistence", 0x0100_000a),
            Ok(Some(0x0100_000a))
        );
        assert_eq!(r.generation(), 1);
        // Moving the name.
        assert_eq!(
            r.register("lpersistence", 0x0100_000b),
            Ok(Some(0x0100_000a))
        );
        assert_eq!(r.generation(), 2);
        assert_eq!(r.query("lpersistence"), Some(0x0100_000b));
        r.register("another", 7).unwrap();
        assert_eq!(
            r.names(),
            vec![(s("another"), 7), (s("lpersistence"), 0x0100_000b)]
        );
        assert_eq!(r.unregister("lpersistence"), Some(0x0100_000b));
        assert_eq!(r.generation(), 4);
        assert_eq!(r.query("lpersistence"), None);
        assert_eq!(r.unregister("lpersistence"), None);
        assert_eq!(r.generation(), 4);
        // A name change does not touch the config generation, and the other way round.
        assert_eq!(r.config_generation(), 0);
        r.reload(cfg("x = \"h:1\""));
        assert_eq!(r.generation(), 4);
    }

    #[test]
    fn bad_names_are_refused() {
        let r = Registry::new(ClusterConfig::default());
        for name in ["", "@lobby", "a\nb"] {
            match r.register(name, 1) {
                Err(e @ RegistryError::BadName { .. }) => {
                    assert!(e.to_string().starts_with("cannot register name"), "{e}")
                }
                other => panic!("{name:?}: {other:?}"),
            }
        }
        assert!(r.names().is_empty());
        assert_eq!(r.generation(), 0);
    }

    #[test]
    fn subscribers_see_every_change_in_order() {
        let r = Registry::new(cfg("a = \"h:1\""));
        let mut rx = r.subscribe();
        r.register("svc", 5).unwrap();
        r.register("svc", 6).unwrap();
        r.register("svc", 6).unwrap(); // no change, no event
        r.unregister("svc");
        r.unregister("svc"); // nothing to remove, no event
        let diff = r.reload(cfg("a = false"));
        r.reload(cfg("a = false")); // no change, no event
        assert_eq!(
            rx.try_recv(),
            Ok(RegistryEvent::NameRegistered {
                name: s("svc"),
                addr: 5,
                previous: None
            })
        );
        assert_eq!(
            rx.try_recv(),
            Ok(RegistryEvent::NameRegistered {
                name: s("svc"),
                addr: 6,
                previous: Some(5)
            })
        );
        assert_eq!(
            rx.try_recv(),
            Ok(RegistryEvent::NameUnregistered {
                name: s("svc"),
                addr: 6
            })
        );
        assert_eq!(
            rx.try_recv(),
            Ok(RegistryEvent::ConfigChanged(diff.clone()))
        );
        assert_eq!(diff.marked_down, vec![s("a")]);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        // Clones share state and the channel.
        let clone = r.clone();
        clone.register("other", 1).unwrap();
        assert_eq!(r.query("other"), Some(1));
        assert!(matches!(
            rx.try_recv(),
            Ok(RegistryEvent::NameRegistered { .. })
        ));
    }

    #[tokio::test]
    async fn wait_for_node_resolves_on_reload() {
        let r = Registry::new(cfg("a = \"h:1\""));
        let waiter = {
            let r = r.clone();
            tokio::spawn(async move { r.wait_for_node("late", Duration::from_secs(30)).await })
        };
        // An unrelated reload wakes the waiter, which keeps waiting.
        tokio::task::yield_now().await;
        r.reload(cfg("other = \"h:2\""));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        r.reload(cfg("late = \"127.0.0.1:7\""));
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter should wake on the reload")
            .unwrap();
        assert_eq!(got.unwrap(), "127.0.0.1:7");
        // Already present: answers at once, even with a zero timeout.
        assert_eq!(r.wait_for_node("a", Duration::ZERO).await.unwrap(), "h:1");
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_node_times_out_as_unknown() {
        let r = Registry::new(cfg("a = \"h:1\""));
        let started = tokio::time::Instant::now();
        let e = r
            .wait_for_node("ghost", Duration::from_secs(3))
            .await
            .unwrap_err();
        assert!(started.elapsed() >= Duration::from_secs(3));
        assert_eq!(
            e,
            RegistryError::UnknownNode {
                node: s("ghost"),
                known: vec![s("a")]
            }
        );
        let e = r.wait_for_node("ghost", Duration::ZERO).await.unwrap_err();
        assert!(matches!(e, RegistryError::UnknownNode { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_node_fails_at_once_when_down() {
        let r = Registry::new(cfg("down = false"));
        let started = tokio::time::Instant::now();
        let e = r
            .wait_for_node("down", Duration::from_secs(60))
            .await
            .unwrap_err();
        assert_eq!(e, RegistryError::NodeDown { node: s("down") });
        assert_eq!(started.elapsed(), Duration::ZERO);

        // Marked down while waiting: the waiter fails then, not at its timeout.
        let waiter = {
            let r = r.clone();
            tokio::spawn(async move { r.wait_for_node("late", Duration::from_secs(60)).await })
        };
        tokio::task::yield_now().await;
        r.reload(cfg("late = false"));
        let e = waiter.await.unwrap().unwrap_err();
        assert_eq!(e, RegistryError::NodeDown { node: s("late") });
        assert!(started.elapsed() < Duration::from_secs(60));
    }

    fn drain(rx: &mut broadcast::Receiver<RegistryEvent>) -> Vec<RegistryEvent> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            out.push(e);
        }
        out
    }

    #[test]
    fn meta_records_what_runs() {
        let before = SystemTime::now();
        let r = Registry::with_self("a", cfg("__version = 3\na = \"h:1\"\nb = \"h:2\""));
        let m = r.meta();
        assert_eq!(m.version, 3);
        assert_eq!(m.hash, r.config().content_hash());
        assert_eq!(m.source, ConfigSource::Local);
        assert!(m.applied_at >= before);
        assert_eq!(r.self_name().as_deref(), Some("a"));

        let next = cfg("__version = 4\na = \"h:1\"\nb = \"h:3\"");
        let diff = r
            .apply(next.clone(), ConfigSource::Push { from: s("ops") }, false)
            .unwrap();
        assert_eq!(diff.version_changed, Some((3, 4)));
        assert_eq!(diff.changed, vec![(s("b"), s("h:2"), s("h:3"))]);
        assert_eq!(diff.to_string(), "changed b h:2->h:3; version 3->4");
        let (now, m) = r.snapshot();
        assert_eq!(now, next);
        assert_eq!(m.version, 4);
        assert_eq!(m.hash, next.content_hash());
        assert_eq!(m.source, ConfigSource::Push { from: s("ops") });
        assert_eq!(
            m.to_string(),
            format!("version 4 hash {} from push from ops", next.content_hash())
        );
        // The same config again: nothing changes, not even the meta.
        let again = r
            .apply(next.clone(), ConfigSource::Etcd { key: s("/k") }, false)
            .unwrap();
        assert!(again.is_empty());
        assert_eq!(r.meta(), m);
        // Only the version raised: applied, the diff says so, the hash stays.
        let bumped = ClusterConfig {
            version: 5,
            ..next.clone()
        };
        let diff = r
            .apply(bumped, ConfigSource::Etcd { key: s("/k") }, false)
            .unwrap();
        assert_eq!(diff.to_string(), "version 4->5");
        assert_eq!(r.meta().version, 5);
        assert_eq!(r.meta().hash, next.content_hash());
        assert_eq!(r.meta().source, ConfigSource::Etcd { key: s("/k") });
    }

    /// Every refusal: a typed error with clear words, the running config, its meta and
    /// the generation untouched, no event sent.
    #[test]
    fn refused_configs_leave_the_running_one_intact() {
        let running = cfg("__version = 7\nme = \"127.0.0.1:1\"\npeer = \"127.0.0.1:2\"");
        let r = Registry::with_self("me", running.clone());
        let meta = r.meta();
        let mut rx = r.subscribe();
        let src = || ConfigSource::Push { from: s("test") };

        let mut bad_addr = running.clone();
        bad_addr.version = 8;
        bad_addr
            .nodes
            .insert(s("peer"), NodeEntry::Up(s("127.0.0.1")));
        let lower = cfg("__version = 6\nme = \"127.0.0.1:1\"\npeer = \"127.0.0.1:9\"");
        let conflict = cfg("__version = 7\nme = \"127.0.0.1:1\"\npeer = \"127.0.0.1:9\"");
        let dropped = cfg("__version = 8\npeer = \"127.0.0.1:2\"");
        let cases: Vec<(ClusterConfig, bool, RegistryError, &str)> = vec![
            (
                bad_addr,
                false,
                RegistryError::BadAddress {
                    node: s("peer"),
                    addr: s("127.0.0.1"),
                    line: None,
                    reason: s("\"127.0.0.1\" has no `:port`; write \"host:port\", e.g. \"127.0.0.1:2528\""),
                },
                "node `peer`: \"127.0.0.1\" has no `:port`",
            ),
            (
                lower.clone(),
                false,
                RegistryError::VersionBehind {
                    offered: 6,
                    running: 7,
                },
                "config version 6 is older than the running version 7",
            ),
            (
                conflict.clone(),
                false,
                RegistryError::VersionConflict {
                    version: 7,
                    offered_hash: conflict.content_hash().short(),
                    running_hash: running.content_hash().short(),
                },
                "config version 7 has content",
            ),
            (
                dropped.clone(),
                false,
                RegistryError::OwnEntryDropped { node: s("me") },
                "the new config drops this node `me`",
            ),
            // force overrides the version, not the own entry.
            (
                dropped,
                true,
                RegistryError::OwnEntryDropped { node: s("me") },
                "write `me = false` to mark it down",
            ),
        ];
        for (offered, force, want, words) in cases {
            let e = r.apply(offered, src(), force).unwrap_err();
            assert_eq!(e, want);
            assert!(e.to_string().contains(words), "{e}");
            assert_eq!(r.config(), running);
            assert_eq!(r.meta(), meta);
            assert_eq!(r.config_generation(), 0);
        }
        assert!(drain(&mut rx).is_empty());

        // Marking itself down is not dropping itself.
        let down = cfg("__version = 8\nme = false\npeer = \"127.0.0.1:2\"");
        assert_eq!(
            r.apply(down, src(), false).unwrap().marked_down,
            vec![s("me")]
        );
        // Forced: a lower version goes through.
        let diff = r.apply(lower.clone(), src(), true).unwrap();
        assert_eq!(diff.version_changed, Some((8, 6)));
        assert_eq!(r.config(), lower);
    }

    #[test]
    fn malformed_text_and_files_leave_the_running_one_intact() {
        let dir = std::env::temp_dir().join(format!("bee-registry-apply-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cluster.lua");
        std::fs::write(&file, "__version = 1\nme = \"127.0.0.1:1\"\n").unwrap();
        let r = Registry::load_file("me", &file).unwrap();
        assert_eq!(r.meta().source, ConfigSource::File(file.clone()));
        assert_eq!(r.meta().version, 1);
        let before = r.snapshot();

        std::fs::write(&file, "__version = 2\nme = \"127.0.0.1:1\"\nother = \n").unwrap();
        let e = r.apply_file(&file, false).unwrap_err();
        assert!(matches!(e, RegistryError::Parse { line: 3, .. }), "{e:?}");
        assert!(e.to_string().starts_with("line 3: "), "{e}");
        std::fs::write(
            &file,
            "__version = 2\nme = \"127.0.0.1:1\"\nme = \"127.0.0.1:2\"\n",
        )
        .unwrap();
        let e = r.apply_file(&file, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 3: node `me` is set twice (first on line 2); keep one"
        );
        let e = r.apply_file(&dir.join("missing.lua"), false).unwrap_err();
        assert!(matches!(e, RegistryError::Io { .. }), "{e:?}");
        assert_eq!(r.snapshot(), before);

        std::fs::write(
            &file,
            "__version = 2\nme = \"127.0.0.1:1\"\nother = false\n",
        )
        .unwrap();
        let diff = r.apply_file(&file, false).unwrap();
        assert_eq!(diff.to_string(), "down other; version 1->2");
        // A bad file at start is an error, not a registry.
        std::fs::write(&file, "me = \"nowhere\"\n").unwrap();
        assert!(matches!(
            Registry::load_file("me", &file),
            Err(RegistryError::BadAddress { line: Some(1), .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reload_and_replace_carry_the_version() {
        let r = Registry::new(cfg("__version = 2\na = \"h:1\""));
        // A merge without a version keeps the running one.
        let diff = r.reload(cfg("b = \"h:2\""));
        assert_eq!(diff.version_changed, None);
        assert_eq!(r.meta().version, 2);
        assert_eq!(r.meta().hash, r.config().content_hash());
        let diff = r.reload(cfg("__version = 5"));
        assert_eq!(diff.to_string(), "version 2->5");
        assert_eq!(r.config().version, 5);
        let diff = r.replace(cfg("a = \"h:1\""));
        assert_eq!(diff.version_changed, Some((5, 0)));
        assert_eq!(diff.removed, vec![s("b")]);
        assert_eq!(r.meta().version, 0);
    }

    #[test]
    fn moved_nodes_are_announced() {
        let r = Registry::with_self("me", cfg("me = \"h:1\"\nx = \"h:2\"\ny = \"h:3\""));
        let mut rx = r.subscribe();
        let diff = r
            .apply(
                cfg("__version = 1\nme = \"h:1\"\nx = \"h:20\"\ny = \"h:30\""),
                ConfigSource::Local,
                false,
            )
            .unwrap();
        let events = drain(&mut rx);
        assert_eq!(
            events,
            vec![
                RegistryEvent::ConfigChanged(diff),
                RegistryEvent::NodeMoved {
                    node: s("x"),
                    from: s("h:2"),
                    to: s("h:20")
                },
                RegistryEvent::NodeMoved {
                    node: s("y"),
                    from: s("h:3"),
                    to: s("h:30")
                },
            ]
        );
        assert_eq!(events[1].to_string(), "x moved h:2 -> h:20");
        // reload announces moves too.
        r.reload(cfg("x = \"h:21\""));
        let events = drain(&mut rx);
        assert_eq!(events.len(), 2);
        assert!(matches!(&events[1], RegistryEvent::NodeMoved { to, .. } if to == "h:21"));
    }

    #[test]
    fn incarnations() {
        let a = Registry::new(ClusterConfig::default());
        let b = Registry::new(ClusterConfig::default());
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(a.incarnation() > 0);
        assert!(b.incarnation() > a.incarnation(), "each registry its own");
        assert!(a.incarnation() <= now_ms + 1000 && a.incarnation() + 60_000 > now_ms);
        assert_eq!(a.incarnation(), a.clone().incarnation());

        let mut rx = a.subscribe();
        assert_eq!(a.peer_incarnation("lobby"), None);
        assert_eq!(a.set_peer_incarnation("lobby", 100), None);
        assert_eq!(a.set_peer_incarnation("lobby", 100), Some(100));
        assert!(
            drain(&mut rx).is_empty(),
            "first sight and the same again: no event"
        );
        assert_eq!(a.set_peer_incarnation("lobby", 200), Some(100));
        assert_eq!(a.peer_incarnation("lobby"), Some(200));
        let events = drain(&mut rx);
        assert_eq!(
            events,
            vec![RegistryEvent::PeerRestarted {
                node: s("lobby"),
                previous: 100,
                incarnation: 200
            }]
        );
        assert_eq!(events[0].to_string(), "lobby restarted 100 -> 200");
        let r = Registry::new(ClusterConfig::default());
        assert_eq!(r.self_name(), None);
        r.set_self_name("late");
        assert_eq!(r.self_name().as_deref(), Some("late"));
    }

    /// Readers racing an apply see the old config or the new one, never a mix, and the
    /// meta always matches the config it is read with.
    #[test]
    fn apply_is_atomic_for_readers() {
        let make = |v: u64, port: u16| {
            let mut c = ClusterConfig {
                version: v,
                ..ClusterConfig::default()
            };
            for i in 0..50 {
                c.nodes.insert(
                    format!("n{i:02}"),
                    NodeEntry::Up(format!("127.0.0.1:{port}")),
                );
            }
            c
        };
        let r = Registry::new(make(1, 1000));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let r = r.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut seen = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let (c, m) = r.snapshot();
                        let first = c.nodes.values().next().cloned();
                        assert!(
                            c.nodes.values().all(|e| Some(e) == first.as_ref()),
                            "mixed config"
                        );
                        assert_eq!(m.version, c.version);
                        assert_eq!(m.hash, c.content_hash());
                        seen += 1;
                    }
                    seen
                })
            })
            .collect();
        for v in 2..200u64 {
            r.apply(make(v, 1000 + v as u16), ConfigSource::Local, false)
                .unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        for h in readers {
            assert!(h.join().unwrap() > 0);
        }
        assert_eq!(r.meta().version, 199);
    }

    #[test]
    fn registry_is_shared_across_threads() {
        let r = Registry::new(ClusterConfig::default());
        let handles: Vec<_> = (0..4u32)
            .map(|t| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for i in 0..100u32 {
                        r.register(&format!("t{t}-{i}"), t * 1000 + i).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(r.names().len(), 400);
        assert_eq!(r.generation(), 400);
        assert_eq!(r.query("t3-99"), Some(3099));
    }
}
