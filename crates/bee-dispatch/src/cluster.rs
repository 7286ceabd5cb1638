//! The cluster, as skynet's `skynet.cluster` offers it: `call`, `send`, `query`,
//! `register`/`unregister`, `open`, `reload`, `proxy` — built from local services so
//! each piece shows up in the node's service list under skynet's names:
//!
//! - `bee_clusterd` (one per node, also named `bee_config`): the config, registered
//!   names, listening. Answers `"lua"` commands for the console (`services`, `senders`,
//!   `nodes`, `names`, `reload`, `register`, `unregister`, `query`, `config`, `ping`,
//!   `events`) and the config lifecycle's requests (`config_push`, `hello`,
//!   `names_changed`; see [`crate::lifecycle`]).
//! - `bee_clustersender(<node>)` (one per remote node): owns that node's
//!   [`bee_transport::Channel`] (its connection and session table). Callers use the
//!   channel directly, so a call costs no extra hop through a mailbox.
//! - `bee_clusteragent(<peer>)` (one per accepted connection): reads that peer's
//!   requests, resolves `"@name"` and numeric addresses and name queries, delivers to
//!   local services, and writes their replies back.
//!
//! A call to the node's own name is delivered locally without a socket.
//!
//! **Config lifecycle.** [`Cluster::apply`] is the checked way to change the config
//! (version, own entry, validity; see `docs/config.md`): the channels of nodes that moved,
//! were marked down or removed are closed, so the next call dials the new address. A
//! push arrives as `config_push` and goes the same way. Each node run has an incarnation
//! (the registry's); service addresses start from a value derived from it, so an address
//! from an earlier run is answered with an error saying the node restarted, never by
//! whatever service now has that number. A channel learns its peer's incarnation with a
//! `hello` after each (re)connect; a change is announced as
//! [`RegistryEvent::PeerRestarted`] to [`Cluster::watch`]ers.
//!
//! **Peers' names.** The `hello` answer also carries the node's cluster-visible names and
//! their generation, so a peer learns them on every (re)connect. A node remembers which
//! config nodes said hello on which accepted connection; when its own names change it
//! tells each of them (`names_changed`, a small call with bounded retries), and they say
//! hello again to read the names. A difference is announced as
//! [`RegistryEvent::PeerNamesChanged`] ("names of X changed: added …; removed …").

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bee_codec::cluster::{Address, Request};
use bee_codec::seri::{self, Table, Value};
use bee_registry::{
    ClusterConfig, ConfigDiff, ConfigSource, Registry, RegistryError, RegistryEvent,
};
use bee_transport::throttle::warn_allowed;
use bee_transport::{
    Acceptor, Channel, ChannelConfig, Dispatched, Inbound, Listener, ListenerConfig, TransportError,
};
use bytes::Bytes;
use dashmap::DashMap;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::fasthash::FastBuild;
use crate::lifecycle::{
    dead_address_text, first_addr_for, pusher_node, unix_ms, ConfigReport, Hello, PushOutcome,
    PushRefusal, CLUSTERD_NAME, CONFIG_NAME,
};
use crate::service::{
    fmt_addr, Addr, CallError, Context, HandleResult, Message, Node, Service, ServiceError,
};

/// How long a `hello` to a peer may take.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// [`Sender::hello`] before any hello went out (or after one failed to reach the peer).
const NO_HELLO: u64 = u64::MAX;

/// How long one `names_changed` call to a peer may take.
const NAMES_TELL_TIMEOUT: Duration = Duration::from_secs(3);
/// How many times a node tries to tell one peer that its names changed.
const NAMES_TELL_ATTEMPTS: u32 = 3;
/// Name changes closer together than this are told to peers once.
const NAMES_SETTLE: Duration = Duration::from_millis(20);
/// How many recent registry events `bee_clusterd events` keeps.
const RECENT_EVENTS: usize = 64;

/// `ctx.cluster()` / `node.cluster()`: the cluster handle wherever a [`Context`] or a
/// [`Node`] is at hand, with a typed error when the cluster layer is not started.
pub trait ClusterExt {
    /// The node's cluster handle.
    fn cluster(&self) -> Result<Cluster, CallError>;
}

impl ClusterExt for Node {
    fn cluster(&self) -> Result<Cluster, CallError> {
        Cluster::of(self).ok_or_else(|| {
            CallError::Unavailable(format!(
                "node {}: the cluster layer is not started (Cluster::start)",
                self.name()
            ))
        })
    }
}

impl ClusterExt for Context {
    fn cluster(&self) -> Result<Cluster, CallError> {
        self.node().cluster()
    }
}

/// Where a cluster message goes on the remote node: a numeric address or a registered
/// name (written `"@name"` in skynet; the `@` is optional here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A service address on the remote node.
    Addr(Addr),
    /// A name registered there with `register`.
    Name(String),
}

impl From<Addr> for Target {
    fn from(a: Addr) -> Self {
        Target::Addr(a)
    }
}

impl From<&str> for Target {
    fn from(s: &str) -> Self {
        Target::Name(s.trim_start_matches('@').to_string())
    }
}

impl From<String> for Target {
    fn from(s: String) -> Self {
        Target::from(s.as_str())
    }
}

impl Target {
    fn wire(&self) -> Address {
        match self {
            Target::Addr(a) => Address::Id(*a),
            Target::Name(n) => Address::Name(Bytes::from(format!("@{n}"))),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Addr(a) => f.write_str(&fmt_addr(*a)),
            Target::Name(n) => write!(f, "@{n}"),
        }
    }
}

/// Settings of the cluster layer.
#[derive(Debug, Clone, Default)]
pub struct ClusterSettings {
    /// Connection settings for every remote node (timeouts, queue bounds, back-off).
    pub channel: ChannelConfig,
    /// Settings of the listening side.
    pub listener: ListenerConfig,
    /// How long a call to a node missing from the config waits for a `reload` to name
    /// it (skynet waits forever; bee waits this long). Ignored with `__nowaiting`.
    pub wait_for_node: Option<Duration>,
    /// Nodes called without node authentication even when `channel.auth_secret` is set
    /// (stock skynet nodes, which cannot answer the exchange).
    pub plain_nodes: Vec<String>,
}

struct Sender {
    channel: Channel,
    service: Addr,
    /// The channel's reconnect count when the last `hello` was started ([`NO_HELLO`]:
    /// none yet): a different count means a new connection, maybe another process.
    hello: Arc<AtomicU64>,
}

/// What a call needs of a sender: its channel and its hello mark.
struct Link {
    channel: Channel,
    hello: Arc<AtomicU64>,
}

struct Inner {
    node: crate::service::WeakNode,
    node_name: String,
    registry: Registry,
    settings: ClusterSettings,
    senders: DashMap<String, Sender, FastBuild>,
    proxies: DashMap<(String, String), Addr>,
    listening: Mutex<Vec<SocketAddr>>,
    /// Open inbound connections, one counter per listener.
    inbound: Mutex<Vec<Arc<std::sync::atomic::AtomicUsize>>>,
    /// A second descriptor of each listening socket, for a hot update's successor;
    /// dropped when the node stops accepting (so the socket really closes).
    listen_fds: Mutex<Vec<(SocketAddr, std::os::fd::OwnedFd)>>,
    /// Per listener: cancelled once its task closed its descriptor of the listening
    /// socket ([`bee_transport::Listener::unbound`]).
    unbound: Mutex<Vec<CancellationToken>>,
    shutdown: CancellationToken,
    /// Cancelled when the node stops accepting peers (drain); a child of `shutdown`.
    stop_accepting: CancellationToken,
    clusterd: Mutex<Addr>,
    started: Instant,
    /// Nodes that membership (e.g. an etcd lease) says are gone, with why; calls to them
    /// fail at once. `down_count` keeps the call path to one atomic load while it is empty.
    down: DashMap<String, String>,
    down_count: std::sync::atomic::AtomicUsize,
    /// Accepted connections (by their `bee_clusteragent`'s address): the peer's socket
    /// address, and the config node that said hello on it (told when names change).
    agents: DashMap<Addr, AgentInfo>,
    /// The last registry events, with when they happened (ms since 1970), for the console.
    recent: Mutex<std::collections::VecDeque<(u64, String)>>,
    /// What `bee_clusterd status` answers, when the node program set it.
    status: Mutex<Option<StatusSource>>,
}

/// Makes the text `bee_clusterd status` answers (see [`Cluster::set_status`]).
pub type StatusSource = Arc<dyn Fn() -> String + Send + Sync>;

/// What a node knows about one accepted connection.
struct AgentInfo {
    peer: SocketAddr,
    /// The config node that said `hello` on it, if one did.
    node: Option<String>,
}

/// The node's cluster handle (cheap to clone). Get it with [`Cluster::start`] once, then
/// [`Cluster::of`] anywhere a [`Node`] is at hand.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.inner.node_name)
            .finish()
    }
}

impl Cluster {
    /// Attach the cluster layer to `node` with this registry; starts `bee_clusterd`
    /// (named `bee_clusterd` and `bee_config`). Calling it twice returns the first handle.
    ///
    /// The registry learns the node's name when it does not know it yet (so
    /// [`Cluster::apply`] refuses a config that drops this node), and the node's service
    /// addresses start from [`first_addr_for`] the registry's incarnation when no
    /// service was spawned on it yet.
    pub fn start(node: &Node, registry: Registry, settings: ClusterSettings) -> Cluster {
        let mut created = false;
        let cluster = node.extension_or_insert_with(|| {
            created = true;
            if registry.self_name().is_none() {
                registry.set_self_name(node.name());
            }
            if !node.set_first_addr(first_addr_for(registry.incarnation())) {
                tracing::debug!(node = %node.name(), "services were spawned before the cluster layer; addresses keep counting from 1");
            }
            Arc::new({
                let shutdown = CancellationToken::new();
                let cluster = Cluster {
                    inner: Arc::new(Inner {
                        node: node.downgrade(),
                        node_name: node.name().to_string(),
                        registry,
                        settings,
                        senders: DashMap::default(),
                        proxies: DashMap::new(),
                        listening: Mutex::new(Vec::new()),
                        inbound: Mutex::new(Vec::new()),
                        listen_fds: Mutex::new(Vec::new()),
                        unbound: Mutex::new(Vec::new()),
                        stop_accepting: shutdown.child_token(),
                        shutdown,
                        clusterd: Mutex::new(0),
                        started: Instant::now(),
                        down: DashMap::new(),
                        down_count: std::sync::atomic::AtomicUsize::new(0),
                        agents: DashMap::new(),
                        recent: Mutex::new(std::collections::VecDeque::new()),
                        status: Mutex::new(None),
                    }),
                };
                let addr = node.spawn_named(
                    CLUSTERD_NAME,
                    Clusterd {
                        cluster: cluster.clone(),
                    },
                );
                node.set_name(CONFIG_NAME, addr);
                *cluster
                    .inner
                    .clusterd
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = addr;
                cluster
            })
        });
        let cluster = Cluster::clone(&cluster);
        if created {
            // The runtime knows nothing of the cluster: it only runs this hook.
            let c = cluster.clone();
            node.on_shutdown(move || c.shutdown());
            // Both hold the cluster weakly: they end with it (or at shutdown).
            let weak = Arc::downgrade(&cluster.inner);
            let stop = cluster.inner.shutdown.clone();
            tokio::spawn(keep_recent_events(
                weak.clone(),
                stop.clone(),
                cluster.watch(),
            ));
            tokio::spawn(tell_name_changes(weak, stop, node.watch_names()));
        }
        cluster
    }

    /// The last registry events (at most 64), oldest first, with when they happened in
    /// milliseconds since 1970: what `bee_clusterd events` answers.
    pub fn recent_events(&self) -> Vec<(u64, String)> {
        self.inner
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Set what `bee_clusterd status` answers: the node program's own description of
    /// the node (`bee run` answers its status page's JSON, see bee-node's `status`
    /// module). Without one, `status` is refused with an error saying so.
    pub fn set_status(&self, source: StatusSource) {
        *self.inner.status.lock().unwrap_or_else(|e| e.into_inner()) = Some(source);
    }

    /// The nodes membership marked down ([`Cluster::mark_down`]), with why.
    pub fn down_nodes(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self
            .inner
            .down
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        v.sort();
        v
    }

    /// Add a line to the recent events (`bee_clusterd events`), stamped now.
    fn note_event(&self, text: String) {
        push_recent(&self.inner, text);
    }

    /// Tell `peer` that this node's names changed (generation `generation`), trying
    /// [`NAMES_TELL_ATTEMPTS`] times; the peer then says hello to read them.
    async fn tell_names(self, peer: String, generation: u64) {
        let Ok(payload) = seri::pack(&[
            Value::from("lua"),
            Value::from("names_changed"),
            Value::from(self.inner.node_name.as_str()),
            Value::Integer(i64::try_from(self.incarnation()).unwrap_or(i64::MAX)),
            Value::Integer(i64::try_from(generation).unwrap_or(i64::MAX)),
        ]) else {
            return;
        };
        let mut wait = Duration::from_millis(200);
        for attempt in 1..=NAMES_TELL_ATTEMPTS {
            let told = self
                .call_timeout(
                    &peer,
                    Target::Name(CLUSTERD_NAME.to_string()),
                    payload.clone(),
                    Some(NAMES_TELL_TIMEOUT),
                )
                .await;
            match told {
                Ok(_) => return,
                Err(e) if attempt == NAMES_TELL_ATTEMPTS => {
                    tracing::warn!(node = %self.inner.node_name, %peer, error = %e, "cannot tell {peer} that the names of {} changed; it learns them when it next connects", self.inner.node_name);
                }
                Err(e) => {
                    tracing::debug!(node = %self.inner.node_name, %peer, attempt, error = %e, "names_changed not delivered; retrying in {wait:?}");
                    tokio::select! {
                        _ = self.inner.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait *= 4;
                }
            }
        }
    }

    /// The cluster handle of a node, if [`Cluster::start`] ran.
    pub fn of(node: &Node) -> Option<Cluster> {
        node.extension::<Cluster>().map(|c| Cluster::clone(&c))
    }

    /// This node's name.
    pub fn node_name(&self) -> &str {
        &self.inner.node_name
    }

    pub(crate) fn node(&self) -> Result<Node, CallError> {
        self.inner
            .node
            .upgrade()
            .ok_or_else(|| CallError::Unavailable("node is shut down".into()))
    }

    /// The registry (config and names) this cluster uses.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Address of `bee_clusterd`.
    pub fn clusterd(&self) -> Addr {
        *self
            .inner
            .clusterd
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Listen for peers: `listen` is a node name from the config (its address is used)
    /// or an address `host:port`, or a bare port (all interfaces, as skynet's number).
    pub async fn open(&self, listen: &str) -> Result<SocketAddr, CallError> {
        let bind = if let Ok(addr) = self.inner.registry.lookup(listen) {
            addr.to_string()
        } else if let Ok(port) = listen.parse::<u16>() {
            format!("0.0.0.0:{port}")
        } else if listen.contains(':') {
            listen.to_string()
        } else {
            return Err(CallError::Unavailable(format!(
                "cannot open {listen:?}: not a node in the cluster config, nor host:port, nor a port"
            )));
        };
        let listener = Listener::bind(&bind, self.inner.settings.listener.clone())
            .await
            .map_err(CallError::Transport)?;
        self.serve_listener(listener)
    }

    /// Listen on a socket handed over by this node's previous process (hot update).
    pub fn open_inherited(&self, socket: std::net::TcpListener) -> Result<SocketAddr, CallError> {
        let listener = Listener::from_std(socket, self.inner.settings.listener.clone())
            .map_err(CallError::Transport)?;
        self.serve_listener(listener)
    }

    /// Second descriptors of the listening sockets, with their addresses: what a hot
    /// update hands to the successor (empty once the node stopped accepting).
    pub fn listening_sockets(&self) -> Vec<(SocketAddr, std::os::fd::OwnedFd)> {
        self.inner
            .listen_fds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|(a, fd)| fd.try_clone().ok().map(|fd| (*a, fd)))
            .collect()
    }

    fn serve_listener(&self, listener: Listener) -> Result<SocketAddr, CallError> {
        let local = listener.local_addr();
        self.inner
            .unbound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener.unbound());
        match listener.dup_socket() {
            Ok(fd) => self
                .inner
                .listen_fds
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((local, fd)),
            Err(e) => {
                tracing::warn!(node = %self.inner.node_name, %local, error = %e, "cannot keep a second descriptor of the listening socket; no hot update for it")
            }
        }
        tracing::info!(node = %self.inner.node_name, %local, "cluster listening");
        self.inner
            .listening
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(local);
        let acceptor = Arc::new(AgentFactory {
            cluster: self.clone(),
        });
        self.inner
            .inbound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener.open_connections());
        tokio::spawn(listener.run_until(
            acceptor,
            self.inner.stop_accepting.clone(),
            self.inner.shutdown.child_token(),
        ));
        Ok(local)
    }

    /// Addresses this node listens on.
    pub fn listening(&self) -> Vec<SocketAddr> {
        self.inner
            .listening
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Find (or create) the channel to `node`, waiting for a reload to name it when the
    /// config does not (unless `__nowaiting`).
    async fn channel(&self, node: &str) -> Result<Link, CallError> {
        if self.inner.down_count.load(Ordering::Acquire) > 0 {
            if let Some(why) = self.inner.down.get(node) {
                return Err(CallError::Unavailable(format!(
                    "node {node} is down: {}",
                    *why
                )));
            }
        }
        if let Some(s) = self.inner.senders.get(node) {
            return Ok(Link {
                channel: s.channel.clone(),
                hello: s.hello.clone(),
            });
        }
        let addr = match self.inner.registry.lookup(node) {
            Ok(a) => a,
            Err(RegistryError::UnknownNode { .. }) if !self.inner.registry.config().nowaiting => {
                let wait = self
                    .inner
                    .settings
                    .wait_for_node
                    .unwrap_or(self.inner.settings.channel.call_timeout);
                tracing::info!(node = %self.inner.node_name, target = %node, "waiting for cluster node {node} to appear in the config");
                self.inner.registry.wait_for_node(node, wait).await?
            }
            Err(e) => return Err(e.into()),
        };
        let this = self.node()?;
        let entry = self.inner.senders.entry(node.to_string()).or_insert_with(|| {
            let mut config = self.inner.settings.channel.clone();
            if self.inner.settings.plain_nodes.iter().any(|n| n == node) {
                config.auth_secret = None;
            }
            let channel = Channel::new(node, addr.to_string(), config);
            let service = this.spawn(
                &format!("bee_clustersender({node})"),
                SenderService {
                    channel: channel.clone(),
                },
            );
            tracing::info!(node = %self.inner.node_name, target = %node, addr = %addr, "cluster sender created");
            Sender {
                channel,
                service,
                hello: Arc::new(AtomicU64::new(NO_HELLO)),
            }
        });
        Ok(Link {
            channel: entry.channel.clone(),
            hello: entry.hello.clone(),
        })
    }

    /// After a call or push that reached `node`: when the channel connected anew since
    /// the last `hello`, send one (in the background) to learn which run of the peer
    /// answers now. One atomic load when nothing changed.
    fn after_use(&self, node: &str, link: &Link) {
        let seen = link.channel.reconnects();
        let last = link.hello.load(Ordering::Relaxed);
        if last == seen
            || link
                .hello
                .compare_exchange(last, seen, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let (cluster, node, channel, mark) = (
            self.clone(),
            node.to_string(),
            link.channel.clone(),
            link.hello.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = cluster.hello_on(&node, &channel).await {
                if matches!(e, CallError::Transport(ref t) if !matches!(t, TransportError::Remote { .. }))
                {
                    // Not through: try again after the next call that gets through.
                    let _ =
                        mark.compare_exchange(seen, NO_HELLO, Ordering::AcqRel, Ordering::Relaxed);
                }
                tracing::debug!(node = %cluster.inner.node_name, peer = %node, error = %e, "hello not answered (a stock skynet peer has no incarnation)");
            }
        });
    }

    /// Send `hello` on `channel` and record the peer's incarnation in the registry (a
    /// change is announced as [`RegistryEvent::PeerRestarted`]).
    async fn hello_on(&self, node: &str, channel: &Channel) -> Result<Hello, CallError> {
        let payload = seri::pack(&[
            Value::from("lua"),
            Value::from("hello"),
            Value::from(self.inner.node_name.as_str()),
            Value::Integer(i64::try_from(self.incarnation()).unwrap_or(i64::MAX)),
        ])?;
        let reply = channel
            .call(
                Address::Name(Bytes::from(format!("@{CLUSTERD_NAME}"))),
                payload,
                Some(HELLO_TIMEOUT),
            )
            .await
            .map_err(transport_error)?;
        let bad = |reason: String| CallError::BadReply {
            node: node.to_string(),
            reason,
        };
        let values = seri::unpack(&reply).map_err(|e| bad(format!("hello reply: {e}")))?;
        let hello = Hello::from_values(&values).map_err(bad)?;
        if hello.node != node {
            tracing::warn!(node = %self.inner.node_name, peer = %node, answered = %hello.node, addr = %channel.addr(), "the address the config gives {node} is answered by node {}: check the cluster config", hello.node);
        }
        self.inner
            .registry
            .set_peer_incarnation(node, hello.incarnation);
        if let Some((generation, names)) = &hello.names {
            self.inner
                .registry
                .set_peer_names(node, hello.incarnation, *generation, names.clone());
        }
        Ok(hello)
    }

    /// Ask `node` who it is (`hello`): its name and incarnation, recorded in the registry
    /// (a new incarnation is announced as [`RegistryEvent::PeerRestarted`]).
    pub async fn hello(&self, node: &str) -> Result<Hello, CallError> {
        if node == self.inner.node_name {
            return Ok(self.own_hello());
        }
        let link = self.channel(node).await?;
        let hello = self.hello_on(node, &link.channel).await?;
        // This connection's hello is done.
        link.hello
            .store(link.channel.reconnects(), Ordering::Relaxed);
        Ok(hello)
    }

    /// Call `target` on `node` with a packed payload; returns the packed reply.
    pub async fn call(
        &self,
        node: &str,
        target: impl Into<Target>,
        payload: Bytes,
    ) -> Result<Bytes, CallError> {
        self.call_timeout(node, target, payload, None).await
    }

    /// [`Cluster::call`] with a timeout for this call (default: the channel's).
    pub async fn call_timeout(
        &self,
        node: &str,
        target: impl Into<Target>,
        payload: Bytes,
        timeout: Option<Duration>,
    ) -> Result<Bytes, CallError> {
        // Unknown or marked-down nodes and names fail without waiting: count the call
        // against the task's budget, so a caller retrying in a loop cannot hold its
        // runtime thread (and the tasks queued on it) forever.
        tokio::task::coop::consume_budget().await;
        let target = target.into();
        if node == self.inner.node_name {
            let n = self.node()?;
            let addr = self.local_target(&target)?;
            return n.call_from(0, addr, payload, timeout).await;
        }
        // Waiting for the node to appear in the config counts against the call's own
        // timeout: the call ends by its deadline.
        let after = timeout.unwrap_or(self.inner.settings.channel.call_timeout);
        let t0 = std::time::Instant::now();
        let link = match tokio::time::timeout(after, self.channel(node)).await {
            Ok(link) => link?,
            Err(_) => {
                return Err(CallError::Transport(TransportError::Timeout {
                    node: node.to_string(),
                    after,
                }))
            }
        };
        let left = after.saturating_sub(t0.elapsed());
        let result = link.channel.call(target.wire(), payload, Some(left)).await;
        let result = match result {
            // The timeout the caller gave, not what was left of it.
            Err(TransportError::Timeout { node, .. }) => {
                Err(TransportError::Timeout { node, after })
            }
            other => other,
        };
        if matches!(&result, Ok(_) | Err(TransportError::Remote { .. })) {
            self.after_use(node, &link);
        }
        result.map_err(transport_error)
    }

    /// Push a packed payload to `target` on `node`; no reply. Errors only when bee can
    /// tell at once that it cannot be delivered (unknown node, connection down).
    pub async fn send(
        &self,
        node: &str,
        target: impl Into<Target>,
        payload: Bytes,
    ) -> Result<(), CallError> {
        // As for calls: a send that fails at once still counts against the task's budget.
        tokio::task::coop::consume_budget().await;
        let target = target.into();
        if node == self.inner.node_name {
            let n = self.node()?;
            let addr = self.local_target(&target)?;
            return n.send(addr, payload).await;
        }
        let link = self.channel(node).await?;
        let result = link.channel.push(target.wire(), payload).await;
        if result.is_ok() {
            self.after_use(node, &link);
        }
        result.map_err(transport_error)
    }

    /// Ask `node` for the address registered there as `name`.
    pub async fn query(&self, node: &str, name: &str) -> Result<Addr, CallError> {
        let name = name.trim_start_matches('@');
        if node == self.inner.node_name {
            return self
                .node()?
                .resolve_public(name)
                .ok_or_else(|| CallError::NameNotFound {
                    node: node.to_string(),
                    name: name.to_string(),
                });
        }
        let payload = seri::pack(&[Value::from(name)])?;
        let reply = match self.call(node, Target::Addr(0), payload).await {
            // skynet answers an unknown name with the error text "name not found".
            Err(CallError::Remote { message, .. }) if message.contains("name not found") => {
                return Err(CallError::NameNotFound {
                    node: node.to_string(),
                    name: name.to_string(),
                })
            }
            other => other?,
        };
        let bad = |reason: String| CallError::BadReply {
            node: node.to_string(),
            reason,
        };
        let values = seri::unpack(&reply).map_err(|e| bad(format!("query reply: {e}")))?;
        match values.first().and_then(Value::as_int) {
            Some(a) if (0..=u32::MAX as i64).contains(&a) => Ok(a as Addr),
            _ => Err(bad(format!(
                "query reply: expected an address, got {} value(s)",
                values.len()
            ))),
        }
    }

    fn local_target(&self, target: &Target) -> Result<Addr, CallError> {
        match target {
            Target::Addr(a) => Ok(*a),
            Target::Name(n) => {
                self.node()?
                    .resolve_public(n)
                    .ok_or_else(|| CallError::NameNotFound {
                        node: self.inner.node_name.clone(),
                        name: n.clone(),
                    })
            }
        }
    }

    /// Make local service `addr` reachable from other nodes as `"@name"` and by query:
    /// the same as [`Node::set_name`] with a cluster-visible name (one name table; a
    /// name starting with `.` is local and refused here).
    pub fn register(&self, name: &str, addr: Addr) -> Result<(), CallError> {
        let name = name.trim_start_matches('@');
        let reason = if name.is_empty() {
            Some("the name is empty")
        } else if name.starts_with('.') {
            Some("names starting with '.' are local to a node; register a name without it")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(RegistryError::BadName {
                name: name.to_string(),
                reason: reason.to_string(),
            }
            .into());
        }
        self.node()?.set_name(name, addr);
        Ok(())
    }

    /// Remove a registered name; returns the address it had.
    pub fn unregister(&self, name: &str) -> Option<Addr> {
        self.node().ok()?.remove_name(name.trim_start_matches('@'))
    }

    /// Merge a new cluster config: nodes whose address changed or that are now marked
    /// down lose their connection (calls waiting on it fail); new calls use the new one.
    /// No check is made (skynet's `reload`); [`Cluster::apply`] is the checked path.
    pub fn reload(&self, config: ClusterConfig) -> ConfigDiff {
        let diff = self.inner.registry.reload(config);
        self.close_changed(&diff);
        tracing::info!(node = %self.inner.node_name, ?diff, "cluster config reloaded");
        diff
    }

    /// Check `config` and make it the whole running config ([`Registry::apply`]: refused,
    /// with the running config untouched, when malformed, older than the running one or
    /// the same version with other content unless `force`, or when it drops this node).
    /// Channels of nodes that moved, were marked down or removed are closed (calls waiting
    /// on them fail); the next call dials the new address.
    pub fn apply(
        &self,
        config: ClusterConfig,
        source: ConfigSource,
        force: bool,
    ) -> Result<ConfigDiff, RegistryError> {
        let diff = self.inner.registry.apply(config, source, force)?;
        self.close_changed(&diff);
        tracing::info!(node = %self.inner.node_name, meta = %self.inner.registry.meta(), %diff, "cluster config applied");
        Ok(diff)
    }

    fn close_changed(&self, diff: &ConfigDiff) {
        let mut drop_nodes: Vec<&String> = diff.changed.iter().map(|c| &c.0).collect();
        drop_nodes.extend(diff.marked_down.iter());
        drop_nodes.extend(diff.removed.iter());
        for name in drop_nodes {
            self.drop_sender(name, "cluster config changed");
        }
    }

    /// Mark `node` down because membership says it is gone (e.g. its etcd lease
    /// expired): its connection is closed and calls to it fail at once with
    /// `node NODE is down: WHY` until [`Cluster::mark_up`]. The config is not changed.
    pub fn mark_down(&self, node: &str, why: &str) {
        if self
            .inner
            .down
            .insert(node.to_string(), why.to_string())
            .is_none()
        {
            self.inner.down_count.fetch_add(1, Ordering::AcqRel);
            tracing::warn!(node = %self.inner.node_name, peer = %node, why, "cluster node marked down");
        }
        self.drop_sender(node, why);
    }

    /// Undo [`Cluster::mark_down`]: `node` is back.
    pub fn mark_up(&self, node: &str) {
        if self.inner.down.remove(node).is_some() {
            self.inner.down_count.fetch_sub(1, Ordering::AcqRel);
            tracing::info!(node = %self.inner.node_name, peer = %node, "cluster node up again");
        }
    }

    /// Every later registry event, in order: config changes, `NodeMoved` ("X moved old →
    /// new"), `PeerRestarted` ("X restarted a → b", learnt by `hello` when a channel
    /// connects anew, or when a peer says hello) and `PeerNamesChanged` ("names of X
    /// changed: added …; removed …; moved …", learnt from X's hello answer, which X asks
    /// for with `names_changed` when its names change). See [`Registry::subscribe`].
    pub fn watch(&self) -> tokio::sync::broadcast::Receiver<RegistryEvent> {
        self.inner.registry.subscribe()
    }

    /// What this node answers to `hello`: its name, incarnation and cluster-visible names.
    fn own_hello(&self) -> Hello {
        Hello {
            node: self.inner.node_name.clone(),
            incarnation: self.incarnation(),
            names: self.node().ok().map(|n| n.public_names()),
        }
    }

    /// This node run's incarnation (the registry's).
    pub fn incarnation(&self) -> u64 {
        self.inner.registry.incarnation()
    }

    /// How long the cluster layer has run.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// What this node runs, as the `config` command reports it.
    pub fn report(&self) -> ConfigReport {
        let meta = self.inner.registry.meta();
        let services = self.node().map(|n| n.services()).unwrap_or_default();
        let senders = self.senders();
        ConfigReport {
            services: services.len() as u64,
            handled: services.iter().map(|s| s.handled).sum(),
            queued: services.iter().map(|s| s.queued as u64).sum(),
            peers_in: services
                .iter()
                .filter(|s| s.label.starts_with("bee_clusteragent("))
                .count() as u64,
            peers_out: senders.len() as u64,
            peers_out_connected: senders.iter().filter(|s| s.1.connected).count() as u64,
            node: self.inner.node_name.clone(),
            version: meta.version,
            hash: meta.hash.short(),
            applied_at_ms: unix_ms(meta.applied_at),
            source: meta.source.to_string(),
            incarnation: self.incarnation(),
            uptime_ms: u64::try_from(self.uptime().as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Handle a pushed config text (the `config_push` command): parse it (either form),
    /// [`Cluster::apply`] it, and say what happened. A refusal is an answer, not an
    /// error: the running config stays as it was. A push whose `from` says `node NAME`
    /// (see [`crate::lifecycle::pusher_node`]) is refused when NAME is in neither the
    /// running nor the pushed config.
    pub fn push_text(&self, text: &str, force: bool, from: &str) -> PushOutcome {
        self.push_checked(text, force, from, None)
    }

    /// [`Cluster::push_text`] for a push that arrived on the accepted connection from
    /// `peer` (if any): on a node with authentication, a connection served without it
    /// (an `[auth]` allow-listed address) may not push.
    fn push_checked(
        &self,
        text: &str,
        force: bool,
        from: &str,
        peer: Option<SocketAddr>,
    ) -> PushOutcome {
        let listener = &self.inner.settings.listener;
        // The listener serves such a peer at once, without the exchange (see
        // `bee_transport::auth`): it is not authenticated.
        let unauthenticated = peer
            .filter(|p| listener.auth_secret.is_some() && listener.auth_allow.contains(&p.ip()));
        let outcome = match unauthenticated {
            Some(peer) => Err(PushRefusal::NotAuthenticated { peer }.to_string()),
            None => ClusterConfig::parse_any(text)
                .map_err(|e| e.to_string())
                .and_then(|cfg| {
                    self.check_pusher(from, &cfg)?;
                    self.apply(
                        cfg,
                        ConfigSource::Push {
                            from: from.to_string(),
                        },
                        force,
                    )
                    .map_err(|e| e.to_string())
                }),
        };
        let meta = self.inner.registry.meta();
        match outcome {
            Ok(diff) => PushOutcome::Applied {
                version: meta.version,
                hash: meta.hash.short(),
                diff: diff.to_string(),
            },
            Err(reason) => {
                tracing::warn!(node = %self.inner.node_name, %from, ?peer, error = %reason, "pushed cluster config refused");
                PushOutcome::Rejected {
                    reason,
                    version: meta.version,
                    hash: meta.hash.short(),
                }
            }
        }
    }

    /// Push a config text to `node` as this node does it on its own: a `config_push` to
    /// its `@bee_config` with `from` = `node SELF` (the convention that says a cluster
    /// node pushes; the receiver refuses it when this node is in neither its running
    /// config nor `text`). Returns the node's answer.
    pub async fn push_config_to(
        &self,
        node: &str,
        text: &str,
        force: bool,
    ) -> Result<PushOutcome, CallError> {
        let from = format!("node {} (pid {})", self.inner.node_name, std::process::id());
        let payload = seri::pack(&[
            Value::from("lua"),
            Value::from("config_push"),
            Value::from(text),
            Value::from(force),
            Value::from(from.as_str()),
        ])?;
        let reply = self
            .call(node, Target::Name(CONFIG_NAME.to_string()), payload)
            .await?;
        let bad = |reason: String| CallError::BadReply {
            node: node.to_string(),
            reason,
        };
        let values = seri::unpack(&reply).map_err(|e| bad(format!("config_push reply: {e}")))?;
        PushOutcome::from_values(&values).map_err(bad)
    }

    /// A push that says it comes from cluster node NAME: NAME must be a node of the
    /// running config or of the pushed one.
    fn check_pusher(&self, from: &str, offered: &ClusterConfig) -> Result<(), String> {
        let Some(node) = pusher_node(from) else {
            return Ok(());
        };
        let (running, meta) = self.inner.registry.snapshot();
        if running.nodes.contains_key(node) || offered.nodes.contains_key(node) {
            return Ok(());
        }
        let names = |c: &ClusterConfig| c.nodes.keys().cloned().collect::<Vec<_>>().join(", ");
        Err(PushRefusal::UnknownPusher {
            node: node.to_string(),
            running_version: meta.version,
            running: names(&running),
            offered_version: offered.version,
            offered: names(offered),
        }
        .to_string())
    }

    fn drop_sender(&self, name: &str, why: &str) {
        if let Some((_, s)) = self.inner.senders.remove(name) {
            tracing::info!(node = %self.inner.node_name, target = %name, why, "closing cluster sender");
            s.channel.close();
            if let Ok(n) = self.node() {
                n.kill(s.service);
            }
        }
    }

    /// A local service that forwards every message to `name` on `node` (calls wait for
    /// the remote reply). Created once per node and name, then reused.
    pub fn proxy(&self, node: &str, name: &str) -> Result<Addr, CallError> {
        let key = (node.to_string(), name.trim_start_matches('@').to_string());
        let this = self.node()?;
        if let Some(a) = self.inner.proxies.get(&key) {
            if this.is_alive(*a) {
                return Ok(*a);
            }
        }
        let addr = this.spawn(
            &format!("bee_proxy({}@{})", key.0, key.1),
            ProxyService {
                cluster: self.clone(),
                node: key.0.clone(),
                target: Target::Name(key.1.clone()),
            },
        );
        self.inner.proxies.insert(key, addr);
        Ok(addr)
    }

    /// The remote nodes this node has a sender for, with their channel state.
    pub fn senders(&self) -> Vec<(String, bee_transport::ChannelStats, Addr)> {
        let mut v: Vec<_> = self
            .inner
            .senders
            .iter()
            .map(|e| (e.key().clone(), e.channel.stats(), e.service))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Close every listening socket: new peers are refused (or, after a handover, reach
    /// the successor); open connections keep being served. The first step of a drain.
    pub fn stop_accepting(&self) {
        self.inner
            .listen_fds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.inner.stop_accepting.cancel();
    }

    /// Whether the node is draining: it stopped accepting peers ([`Cluster::stop_accepting`],
    /// the first step of a drain at SIGTERM or a handover).
    pub fn draining(&self) -> bool {
        self.inner.stop_accepting.is_cancelled()
    }

    /// Wait (at most `within`) until every listening socket of this node is really
    /// closed after [`Cluster::stop_accepting`] — its listener task has let go of it, so
    /// a peer connecting now is refused rather than queued by the kernel and then reset.
    /// Whether all were closed in time.
    pub async fn stopped_accepting(&self, within: Duration) -> bool {
        let tokens = self
            .inner
            .unbound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let all = futures::future::join_all(tokens.iter().map(|t| t.cancelled()));
        tokio::time::timeout(within, all).await.is_ok()
    }

    /// Inbound connections open now, on every listener.
    pub fn inbound_connections(&self) -> usize {
        self.inner
            .inbound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|c| c.load(Ordering::Acquire))
            .sum()
    }

    /// `node` said it is going away: retire the connection to it (new messages open a
    /// new one; see [`Channel::retire`]). Whether there was a channel to retire.
    pub fn retire(&self, node: &str) -> bool {
        match self.inner.senders.get(node) {
            Some(s) => {
                s.channel.retire();
                true
            }
            None => false,
        }
    }

    /// The bee nodes of the config this node has exchanged `hello` with (so they speak
    /// `goaway`), itself excluded.
    pub fn bee_peers(&self) -> Vec<String> {
        let registry = &self.inner.registry;
        registry
            .config()
            .nodes
            .keys()
            .filter(|n| **n != self.inner.node_name && registry.peer_incarnation(n).is_some())
            .cloned()
            .collect()
    }

    /// Tell `peer` this node is going away (`goaway` to its `bee_clusterd`), so it sends
    /// new messages on a new connection.
    pub async fn say_goaway(&self, peer: &str, timeout: Duration) -> Result<(), CallError> {
        let payload = seri::pack(&[
            Value::from("lua"),
            Value::from("goaway"),
            Value::from(self.inner.node_name.as_str()),
        ])?;
        self.call_timeout(
            peer,
            format!("@{CLUSTERD_NAME}").as_str(),
            payload,
            Some(timeout),
        )
        .await
        .map(|_| ())
    }

    /// Stop listening, close every channel (called by [`Node::shutdown`]).
    pub fn shutdown(&self) {
        self.stop_accepting();
        self.inner.shutdown.cancel();
        let names: Vec<String> = self.inner.senders.iter().map(|e| e.key().clone()).collect();
        for n in names {
            self.drop_sender(&n, "node shutting down");
        }
    }
}

/// Keep the last [`RECENT_EVENTS`] registry events of a cluster for `bee_clusterd events`.
async fn keep_recent_events(
    cluster: std::sync::Weak<Inner>,
    stop: CancellationToken,
    mut events: tokio::sync::broadcast::Receiver<RegistryEvent>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let text = tokio::select! {
            _ = stop.cancelled() => return,
            e = events.recv() => match e {
                Ok(e) => e.to_string(),
                Err(RecvError::Lagged(n)) => format!("({n} events missed)"),
                Err(RecvError::Closed) => return,
            },
        };
        let Some(inner) = cluster.upgrade() else {
            return;
        };
        push_recent(&inner, text);
    }
}

/// Keep `text` among the last [`RECENT_EVENTS`] events, stamped now.
fn push_recent(inner: &Inner, text: String) {
    let mut recent = inner.recent.lock().unwrap_or_else(|e| e.into_inner());
    if recent.len() == RECENT_EVENTS {
        recent.pop_front();
    }
    recent.push_back((unix_ms(std::time::SystemTime::now()), text));
}

/// When a node's cluster-visible names change, tell every config node that said hello
/// on one of its accepted connections (they are the ones that may cache them).
async fn tell_name_changes(
    cluster: std::sync::Weak<Inner>,
    stop: CancellationToken,
    mut changes: tokio::sync::watch::Receiver<u64>,
) {
    let mut told: Option<std::collections::BTreeMap<String, Addr>> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
        }
        // A burst of changes (a service registering several names) is told once.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(NAMES_SETTLE) => {}
        }
        changes.borrow_and_update();
        let Some(inner) = cluster.upgrade() else {
            return;
        };
        let cluster = Cluster { inner };
        let Ok(node) = cluster.node() else { return };
        let (generation, names) = node.public_names();
        if told.as_ref() == Some(&names) {
            continue;
        }
        told = Some(names);
        let peers: std::collections::BTreeSet<String> = cluster
            .inner
            .agents
            .iter()
            .filter_map(|a| a.node.clone())
            .collect();
        for peer in peers {
            tokio::spawn(cluster.clone().tell_names(peer, generation));
        }
    }
}

fn transport_error(e: TransportError) -> CallError {
    match e {
        // The remote handler's own words, as a Lua caller would see them, and which
        // node said them.
        TransportError::Remote { node, message } => CallError::Remote { node, message },
        other => CallError::Transport(other),
    }
}

/// `bee_clustersender(<node>)`: owns a channel; answers `"lua", "stats"`.
struct SenderService {
    channel: Channel,
}

impl Service for SenderService {
    async fn handle(&mut self, _ctx: &mut Context, msg: Message) -> HandleResult {
        let args = seri::unpack(&msg.payload)?;
        match args.get(1).and_then(Value::as_bytes) {
            Some(b"stats") => {
                let s = self.channel.stats();
                let mut t = Table::default();
                t.insert(Value::from("node"), Value::from(self.channel.node()));
                t.insert(Value::from("addr"), Value::from(self.channel.addr()));
                t.insert(Value::from("connected"), Value::from(s.connected));
                t.insert(Value::from("in_flight"), Value::from(s.in_flight as i64));
                t.insert(Value::from("reconnects"), Value::from(s.reconnects as i64));
                Ok(Some(seri::pack(&[Value::Table(t)])?))
            }
            _ => Err(ServiceError::msg(
                "bee_clustersender answers \"lua\", \"stats\"",
            )),
        }
    }
}

/// A `cluster.proxy` stand-in: forwards to one remote service.
struct ProxyService {
    cluster: Cluster,
    node: String,
    target: Target,
}

impl Service for ProxyService {
    async fn handle(&mut self, ctx: &mut Context, msg: Message) -> HandleResult {
        match ctx.take_reply() {
            None => {
                self.cluster
                    .send(&self.node, self.target.clone(), msg.payload)
                    .await
                    .map_err(ServiceError::from)?;
            }
            Some(reply) => {
                // Answer from a task so this proxy keeps forwarding while calls wait.
                let (cluster, node, target) =
                    (self.cluster.clone(), self.node.clone(), self.target.clone());
                tokio::spawn(async move {
                    match cluster.call(&node, target, msg.payload).await {
                        Ok(b) => reply.ok(b),
                        Err(e) => reply.fail(e),
                    }
                });
            }
        }
        Ok(None)
    }
}

/// How the error text begins that a draining node answers a new call from a caller
/// outside its cluster config with.
pub const DRAINING: &str = "bee: draining";

/// Creates one `bee_clusteragent` per accepted connection.
struct AgentFactory {
    cluster: Cluster,
}

impl Acceptor for AgentFactory {
    fn accept(&self, peer: SocketAddr) -> Arc<dyn Inbound> {
        let node = self.cluster.node().ok();
        let addr = node
            .as_ref()
            .map(|n| n.spawn(&format!("bee_clusteragent({peer})"), AgentService { peer }))
            .unwrap_or(0);
        tracing::info!(node = %self.cluster.inner.node_name, %peer, agent = %fmt_addr(addr), "cluster peer connected");
        if addr != 0 {
            self.cluster
                .inner
                .agents
                .insert(addr, AgentInfo { peer, node: None });
        }
        Arc::new(Agent {
            cluster: self.cluster.clone(),
            node,
            addr,
            peer,
            names: Mutex::new((u64::MAX, HashMap::default())),
            bee: AtomicBool::new(false),
        })
    }
}

/// The visible face of an agent in the service list; answers `"lua", "peer"`.
struct AgentService {
    peer: SocketAddr,
}

impl Service for AgentService {
    async fn handle(&mut self, _ctx: &mut Context, _msg: Message) -> HandleResult {
        Ok(Some(seri::pack(&[Value::from(self.peer.to_string())])?))
    }
}

/// The per-connection request handler behind `bee_clusteragent`.
struct Agent {
    cluster: Cluster,
    node: Option<Node>,
    addr: Addr,
    peer: SocketAddr,
    /// `"@name"` → address, valid while the registry generation is unchanged.
    names: Mutex<(u64, HashMap<Bytes, Addr, FastBuild>)>,
    /// The caller called one of bee's own names (`@bee_...`): a bee node.
    bee: AtomicBool,
}

impl Agent {
    /// Whether a node of the cluster config said `hello` on this connection.
    fn is_config_node(&self) -> bool {
        self.cluster
            .inner
            .agents
            .get(&self.addr)
            .is_some_and(|a| a.node.is_some())
    }

    fn resolve_name(&self, wire: &Bytes) -> Option<Addr> {
        let node = self.node.as_ref()?;
        let generation = node.names_generation();
        let mut cache = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if cache.0 != generation {
            cache.0 = generation;
            cache.1.clear();
        }
        if let Some(a) = cache.1.get(wire) {
            return Some(*a);
        }
        let name = std::str::from_utf8(wire).ok()?.strip_prefix('@')?;
        let addr = node.resolve_public(name)?;
        cache.1.insert(wire.clone(), addr);
        Some(addr)
    }

    fn answer_query(&self, payload: &Bytes) -> Result<Bytes, String> {
        let values = seri::unpack(payload).map_err(|e| e.to_string())?;
        let name = values
            .first()
            .and_then(Value::as_str)
            .ok_or_else(|| "name not found".to_string())?;
        let node = self
            .node
            .as_ref()
            .ok_or_else(|| "node is shutting down".to_string())?;
        match node.resolve_public(name.trim_start_matches('@')) {
            Some(addr) => seri::pack(&[Value::Integer(addr as i64)]).map_err(|e| e.to_string()),
            None => Err("name not found".to_string()),
        }
    }
}

impl Inbound for Agent {
    fn dispatch(&self, req: Request) -> BoxFuture<'_, Dispatched> {
        Box::pin(async move {
            let Some(node) = self.node.as_ref() else {
                return Dispatched::Ready(Err("node is shutting down".into()));
            };
            if !self.bee.load(Ordering::Relaxed)
                && matches!(&req.address, Address::Name(n) if n.starts_with(b"@bee_"))
            {
                self.bee.store(true, Ordering::Relaxed);
            }
            // Draining: a bee caller outside the cluster config was told `goaway` and gets
            // no new call served here; config nodes and stock skynet callers are served
            // until they have moved away or the node is quiet, as before.
            if !req.push
                && self.cluster.inner.stop_accepting.is_cancelled()
                && self.bee.load(Ordering::Relaxed)
                && !self.is_config_node()
            {
                return Dispatched::Ready(Err(format!(
                    "{DRAINING}: node {} is draining (stopping or handing over) and takes no new calls from nodes outside its cluster config; call again later",
                    self.cluster.inner.node_name
                )));
            }
            let target = match &req.address {
                Address::Id(0) => {
                    return if req.push {
                        Dispatched::NoReply
                    } else {
                        Dispatched::Ready(self.answer_query(&req.payload))
                    }
                }
                Address::Id(a) => *a,
                Address::Name(n) => match self.resolve_name(n) {
                    Some(a) => a,
                    None => {
                        if req.push {
                            if let Some(suppressed) =
                                warn_allowed("push_unknown_name", &self.peer.ip())
                            {
                                tracing::warn!(peer = %self.peer, name = %String::from_utf8_lossy(n), suppressed, "push to unknown name dropped");
                            }
                            return Dispatched::NoReply;
                        }
                        return Dispatched::Ready(Err("Invalid name".into()));
                    }
                },
            };
            // No service at the address: say whether it is from an earlier run of this
            // node (one table lookup per message: the delivery's own).
            let dead = |e: &CallError| {
                matches!(e, CallError::NoSuchService { .. }).then(|| {
                    dead_address_text(
                        node.name(),
                        target,
                        node.handed_out(target),
                        self.cluster.incarnation(),
                        self.cluster.uptime(),
                    )
                })
            };
            if req.push {
                if let Err(e) = node.send_from(self.addr, target, req.payload).await {
                    if let Some(suppressed) = warn_allowed("push_dropped", &self.peer.ip()) {
                        match dead(&e) {
                            Some(text) => {
                                tracing::warn!(peer = %self.peer, suppressed, "push dropped: {text}")
                            }
                            None => {
                                tracing::warn!(peer = %self.peer, target = %fmt_addr(target), error = %e, suppressed, "push dropped")
                            }
                        }
                    }
                }
                Dispatched::NoReply
            } else {
                match node.start_call(self.addr, target, req.payload).await {
                    Ok(reply) => {
                        Dispatched::Later(reply.map(|r| r.map_err(|e| e.remote_text())).boxed())
                    }
                    Err(e) => Dispatched::Ready(Err(dead(&e).unwrap_or_else(|| e.remote_text()))),
                }
            }
        })
    }

    fn closed(&self, reason: &str) {
        tracing::info!(node = %self.cluster.inner.node_name, peer = %self.peer, reason, "cluster peer disconnected");
        self.cluster.inner.agents.remove(&self.addr);
        if let Some(n) = &self.node {
            n.kill(self.addr);
        }
    }
}

/// `bee_clusterd`: the console face of the cluster layer.
struct Clusterd {
    cluster: Cluster,
}

impl Service for Clusterd {
    async fn handle(&mut self, ctx: &mut Context, msg: Message) -> HandleResult {
        let args = seri::unpack(&msg.payload)?;
        // ("lua", command, args…) as services send it, or (command, args…) as typed
        // on a console (`bee call … bee_clusterd services`).
        let args: Vec<Value> = match args.first().and_then(Value::as_bytes) {
            Some(b"lua") => args.into_iter().skip(1).collect(),
            _ => args,
        };
        let cmd = args.first().and_then(Value::as_str).unwrap_or("");
        let arg = |i: usize| args.get(i).and_then(Value::as_str).map(str::to_string);
        let reply: Vec<Value> = match cmd {
            "services" => ctx
                .node()
                .services()
                .into_iter()
                .map(|s| {
                    let mut t = Table::default();
                    t.insert(Value::from("addr"), Value::from(fmt_addr(s.addr)));
                    t.insert(Value::from("label"), Value::from(s.label));
                    t.insert(Value::from("names"), Value::from(s.names.join(",")));
                    t.insert(Value::from("handled"), Value::Integer(s.handled as i64));
                    t.insert(Value::from("queued"), Value::Integer(s.queued as i64));
                    Value::Table(t)
                })
                .collect(),
            "senders" => self
                .cluster
                .senders()
                .into_iter()
                .map(|(n, s, _)| {
                    Value::from(format!(
                        "{n} connected={} in_flight={} reconnects={}",
                        s.connected, s.in_flight, s.reconnects
                    ))
                })
                .collect(),
            "nodes" => vec![Value::from(self.cluster.inner.registry.config().to_lua_string())],
                            "names" => ctx
                    .node()
                    .names()
                    .into_iter()
                .map(|(n, a)| Value::from(format!("{n} = {}", fmt_addr(a))))
                .collect(),
            "reload" => {
                let text = arg(1).ok_or_else(|| ServiceError::msg("reload needs the config text"))?;
                let cfg = ClusterConfig::parse_lua(&text)?;
                let diff = self.cluster.reload(cfg);
                vec![Value::from(diff.to_string())]
            }
            "register" => {
                let name = arg(1).ok_or_else(|| ServiceError::msg("register needs a name"))?;
                let addr = args.get(2).and_then(Value::as_int).unwrap_or(msg.source as i64) as Addr;
                self.cluster.register(&name, addr)?;
                vec![Value::Integer(addr as i64)]
            }
            "unregister" => {
                let name = arg(1).ok_or_else(|| ServiceError::msg("unregister needs a name"))?;
                vec![self
                    .cluster
                    .unregister(&name)
                    .map(|a| Value::Integer(a as i64))
                    .unwrap_or(Value::Nil)]
            }
            "config" => vec![self.cluster.report().to_value()],
            "goaway" => {
                // A peer drains: what we send it next goes on a new connection.
                let peer = arg(1).ok_or_else(|| ServiceError::msg("goaway needs a node name"))?;
                self.cluster.note_event(format!("{peer} is draining (said goaway)"));
                vec![Value::Boolean(self.cluster.retire(&peer))]
            }
            "config_push" => {
                let text = arg(1)
                    .ok_or_else(|| ServiceError::msg("config_push needs the config text"))?;
                let force = args.get(2).and_then(Value::as_bool).unwrap_or(false);
                let from = arg(3).unwrap_or_else(|| fmt_addr(msg.source));
                // Pushed over an accepted connection: which peer, for the auth rule.
                let peer = self.cluster.inner.agents.get(&msg.source).map(|a| a.peer);
                self.cluster
                    .push_checked(&text, force, &from, peer)
                    .to_values()
            }
            "hello" => {
                // The caller may say who it is: a node of the config that says hello with
                // a new incarnation has restarted.
                if let (Some(peer), Some(inc)) = (arg(1), args.get(2).and_then(Value::as_int)) {
                    let known = self.cluster.registry().config().nodes.contains_key(&peer);
                    if known && peer != self.cluster.node_name() {
                        if let Ok(inc) = u64::try_from(inc) {
                            self.cluster.registry().set_peer_incarnation(&peer, inc);
                        }
                        // Said on an accepted connection: tell this peer when our names
                        // change (recorded before the names are read for the answer).
                        if let Some(mut a) = self.cluster.inner.agents.get_mut(&msg.source) {
                            a.node = Some(peer);
                        }
                    }
                }
                self.cluster.own_hello().to_values()
            }
            "names_changed" => {
                // A peer says its names changed: say hello to it to read them (in the
                // background; the hello answer is the one source of a peer's names).
                let peer = arg(1).ok_or_else(|| ServiceError::msg("names_changed needs a node name"))?;
                let number = |i: usize| args.get(i).and_then(Value::as_int).and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
                let (inc, generation) = (number(2), number(3));
                let known = self.cluster.registry().config().nodes.contains_key(&peer);
                let newer = self
                    .cluster
                    .registry()
                    .peer_names(&peer)
                    .is_none_or(|p| (inc, generation) > (p.incarnation, p.generation));
                if known && newer && peer != self.cluster.node_name() {
                    let cluster = self.cluster.clone();
                    tokio::spawn(async move {
                        if let Err(e) = cluster.hello(&peer).await {
                            tracing::debug!(node = %cluster.inner.node_name, %peer, error = %e, "hello after names_changed not answered");
                        }
                    });
                }
                vec![Value::Boolean(known)]
            }
            "status" => {
                let source = self
                    .cluster
                    .inner
                    .status
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                match source {
                    Some(f) => vec![Value::from(f())],
                    None => {
                        return Err(ServiceError::msg(
                            "bee_clusterd: this node serves no status (run by `bee run` with metrics_listen)",
                        ))
                    }
                }
            }
            "events" => self
                .cluster
                .recent_events()
                .into_iter()
                .map(|(at, e)| Value::from(format!("{at} {e}")))
                .collect(),
            "ping" => {
                let peer = arg(1).ok_or_else(|| ServiceError::msg("ping needs a node name"))?;
                // Answer from a task: clusterd keeps serving while the peer answers.
                let Some(reply) = ctx.take_reply() else {
                    return Ok(None);
                };
                let cluster = self.cluster.clone();
                tokio::spawn(async move {
                    let started = Instant::now();
                    match cluster.hello(&peer).await {
                        Ok(h) => {
                            let mut values = vec![
                                Value::from(h.node.as_str()),
                                Value::Integer(i64::try_from(h.incarnation).unwrap_or(i64::MAX)),
                            ];
                            values.push(Value::Integer(
                                i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX),
                            ));
                            match seri::pack(&values) {
                                Ok(b) => reply.ok(b),
                                Err(e) => reply.err(e),
                            }
                        }
                        Err(e) => reply.err(e),
                    }
                });
                return Ok(None);
            }
            "query" => {
                let name = arg(1).ok_or_else(|| ServiceError::msg("query needs a name"))?;
                                match ctx.node().resolve_public(&name) {
                    Some(a) => vec![Value::Integer(a as i64)],
                    None => return Err(ServiceError::msg("name not found")),
                }
            }
            other => {
                return Err(ServiceError::msg(format!(
                    "bee_clusterd: unknown command {other:?} (services, senders, nodes, names, reload, register, unregister, query, config, config_push, goaway, hello, names_changed, events, status, ping)"
                )))
            }
        };
        Ok(Some(seri::pack(&reply)?))
    }
}
