//! The cluster layer's shared state: the [`Cluster`] handle and what it holds (senders,
//! listeners, accepted connections, recent events), its settings, and the small
//! accessors every other module of the crate uses. The behaviour lives in the modules
//! above it ([`crate::cluster`], [`crate::sender`], [`crate::agent`], …), each adding
//! its own `impl Cluster` block.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bee_registry::{Registry, RegistryError, RegistryEvent};
use bee_runtime::fasthash::FastBuild;
use bee_runtime::service::WeakNode;
use bee_runtime::{Addr, CallError, LinkError, LinkKind, Node};
use bee_transport::{Channel, ChannelConfig, ListenerConfig, TransportError};
use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::unix_ms;
/// How long a `hello` to a peer may take.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// [`Sender::hello`] before any hello went out (or after one failed to reach the peer).
pub(crate) const NO_HELLO: u64 = u64::MAX;

/// How long one `names_changed` call to a peer may take.
pub(crate) const NAMES_TELL_TIMEOUT: Duration = Duration::from_secs(3);
/// How many times a node tries to tell one peer that its names changed.
pub(crate) const NAMES_TELL_ATTEMPTS: u32 = 3;
/// Name changes closer together than this are told to peers once.
pub(crate) const NAMES_SETTLE: Duration = Duration::from_millis(20);
/// How many recent registry events `bee_clusterd events` keeps.
pub(crate) const RECENT_EVENTS: usize = 64;

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

pub(crate) struct Sender {
    pub(crate) channel: Channel,
    pub(crate) service: Addr,
    /// The channel's reconnect count when the last `hello` was started ([`NO_HELLO`]:
    /// none yet): a different count means a new connection, maybe another process.
    pub(crate) hello: Arc<AtomicU64>,
}

/// What a call needs of a sender: its channel and its hello mark.
pub(crate) struct Link {
    pub(crate) channel: Channel,
    pub(crate) hello: Arc<AtomicU64>,
}

pub(crate) struct Inner {
    pub(crate) node: WeakNode,
    pub(crate) node_name: String,
    pub(crate) registry: Registry,
    pub(crate) settings: ClusterSettings,
    pub(crate) senders: DashMap<String, Sender, FastBuild>,
    pub(crate) proxies: DashMap<(String, String), Addr>,
    pub(crate) listening: Mutex<Vec<SocketAddr>>,
    /// Open inbound connections, one counter per listener.
    pub(crate) inbound: Mutex<Vec<Arc<std::sync::atomic::AtomicUsize>>>,
    /// A second descriptor of each listening socket, for a hot update's successor;
    /// dropped when the node stops accepting (so the socket really closes).
    pub(crate) listen_fds: Mutex<Vec<(SocketAddr, std::os::fd::OwnedFd)>>,
    /// Per listener: cancelled once its task closed its descriptor of the listening
    /// socket ([`bee_transport::Listener::unbound`]).
    pub(crate) unbound: Mutex<Vec<CancellationToken>>,
    /// Each listener's hand-off side, by its address (hot update: connections of
    /// peers that are not told goaway go to the successor).
    pub(crate) handoffs: Mutex<Vec<(SocketAddr, bee_transport::Handoff)>>,
    pub(crate) shutdown: CancellationToken,
    /// Cancelled when the node stops accepting peers (drain); a child of `shutdown`.
    pub(crate) stop_accepting: CancellationToken,
    pub(crate) clusterd: Mutex<Addr>,
    pub(crate) started: Instant,
    /// Nodes that membership (e.g. an etcd lease) says are gone, with why; calls to them
    /// fail at once. `down_count` keeps the call path to one atomic load while it is empty.
    pub(crate) down: DashMap<String, String>,
    pub(crate) down_count: std::sync::atomic::AtomicUsize,
    /// Accepted connections (by their `bee_clusteragent`'s address): the peer's socket
    /// address, and the config node that said hello on it (told when names change).
    pub(crate) agents: DashMap<Addr, AgentInfo>,
    /// The last registry events, with when they happened (ms since 1970), for the console.
    pub(crate) recent: Mutex<std::collections::VecDeque<(u64, String)>>,
    /// What `bee_clusterd status` answers, when the node program set it.
    pub(crate) status: Mutex<Option<StatusSource>>,
    /// True while delivery is held ([`Cluster::hold_delivery`]): requests read from
    /// accepted connections wait, in arrival order, until it is released.
    pub(crate) held: tokio::sync::watch::Sender<bool>,
    /// The same as `held`, read once per request on the direct path.
    pub(crate) holding: std::sync::atomic::AtomicBool,
}

/// Makes the text `bee_clusterd status` answers (see [`Cluster::set_status`]).
pub type StatusSource = Arc<dyn Fn() -> String + Send + Sync>;

/// What a node knows about one accepted connection.
pub(crate) struct AgentInfo {
    pub(crate) peer: SocketAddr,
    /// The config node that said `hello` on it, if one did.
    pub(crate) node: Option<String>,
}

/// The node's cluster handle (cheap to clone). Get it with [`Cluster::start`] once, then
/// [`Cluster::of`] anywhere a [`Node`] is at hand.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.inner.node_name)
            .finish()
    }
}

impl Cluster {
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

    /// This node run's incarnation (the registry's).
    pub fn incarnation(&self) -> u64 {
        self.inner.registry.incarnation()
    }

    /// How long the cluster layer has run.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Every later registry event, in order: config changes, `NodeMoved` ("X moved old →
    /// new"), `PeerRestarted` ("X restarted a → b", learnt by `hello` when a channel
    /// connects anew, or when a peer says hello) and `PeerNamesChanged` ("names of X
    /// changed: added …; removed …; moved …", learnt from X's hello answer, which X asks
    /// for with `names_changed` when its names change). See [`Registry::subscribe`].
    pub fn watch(&self) -> tokio::sync::broadcast::Receiver<RegistryEvent> {
        self.inner.registry.subscribe()
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
    pub(crate) fn note_event(&self, text: String) {
        push_recent(&self.inner, text);
    }
}

/// Keep the last [`RECENT_EVENTS`] registry events of a cluster for `bee_clusterd events`.
pub(crate) async fn keep_recent_events(
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
pub(crate) fn push_recent(inner: &Inner, text: String) {
    let mut recent = inner.recent.lock().unwrap_or_else(|e| e.into_inner());
    if recent.len() == RECENT_EVENTS {
        recent.pop_front();
    }
    recent.push_back((unix_ms(std::time::SystemTime::now()), text));
}

/// A transport error as a caller sees it: the remote handler's own words (with the node
/// that said them) as [`CallError::Remote`], anything else kept whole in a link error.
pub(crate) fn transport_error(e: TransportError) -> CallError {
    match e {
        TransportError::Remote { node, message } => CallError::Remote { node, message },
        other => {
            let kind = match &other {
                TransportError::Timeout { .. } => LinkKind::Timeout,
                TransportError::Connect { .. }
                | TransportError::NodeDown { .. }
                | TransportError::Closed { .. } => LinkKind::NodeDown,
                TransportError::Overloaded { .. } => LinkKind::Overloaded,
                _ => LinkKind::Other,
            };
            CallError::Link(LinkError::new(kind, other))
        }
    }
}

/// A registry refusal (unknown node, node marked down, bad name) as a caller sees it.
pub(crate) fn registry_error(e: RegistryError) -> CallError {
    let kind = match &e {
        RegistryError::NodeDown { .. } => LinkKind::NodeDown,
        _ => LinkKind::Other,
    };
    CallError::Link(LinkError::new(kind, e))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cluster::CallErrorExt;

    #[test]
    fn overload_words_are_the_transports() {
        assert_eq!(bee_runtime::error::OVERLOADED, bee_transport::OVERLOADED);
    }

    #[test]
    fn transport_and_registry_errors_keep_their_kind_text_and_type() {
        let t = TransportError::Timeout {
            node: "db".into(),
            after: Duration::from_millis(5),
        };
        let text = t.to_string();
        let e = transport_error(t);
        assert!(e.is_timeout());
        assert!(!e.is_node_down());
        assert_eq!(e.to_string(), text);
        assert!(matches!(
            e.transport(),
            Some(TransportError::Timeout { node, .. }) if node == "db"
        ));

        let r = RegistryError::NodeDown { node: "x".into() };
        let e = registry_error(r.clone());
        assert!(e.is_node_down());
        assert_eq!(e.to_string(), r.to_string());
        assert!(e.registry().is_some());

        let e = transport_error(TransportError::Remote {
            node: "x".into(),
            message: "boom".into(),
        });
        assert!(matches!(e, CallError::Remote { ref message, .. } if message == "boom"));
    }
}
