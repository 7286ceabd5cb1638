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

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bee_codec::seri::{self, Value};
use bee_registry::{Registry, RegistryError};
use bee_runtime::remote::{pack_lua, unpack_reply};
use bee_runtime::{Addr, CallError, Context, FromArgs, IntoValues, Node, Remote, Target};
use bee_transport::TransportError;
use bytes::Bytes;
use dashmap::DashMap;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::clusterd::Clusterd;
use crate::lifecycle::{first_addr_for, CLUSTERD_NAME, CONFIG_NAME};
use crate::names::tell_name_changes;
use crate::state::{
    keep_recent_events, registry_error, transport_error, Cluster, ClusterSettings, Inner,
};

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

/// The transport's or the registry's own error inside a [`CallError`], when the call
/// failed there: `err.transport()` matches on [`TransportError`] without parsing text.
pub trait CallErrorExt {
    /// The transport error this call failed with, if it did.
    fn transport(&self) -> Option<&TransportError>;
    /// The registry error this call failed with, if it did.
    fn registry(&self) -> Option<&RegistryError>;
}

impl CallErrorExt for CallError {
    fn transport(&self) -> Option<&TransportError> {
        match self {
            CallError::Link(l) => l.downcast_ref(),
            _ => None,
        }
    }

    fn registry(&self) -> Option<&RegistryError> {
        match self {
            CallError::Link(l) => l.downcast_ref(),
            _ => None,
        }
    }
}

impl ClusterExt for Context {
    fn cluster(&self) -> Result<Cluster, CallError> {
        self.node().cluster()
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
                        handoffs: Mutex::new(Vec::new()),
                        stop_accepting: shutdown.child_token(),
                        held: tokio::sync::watch::Sender::new(false),
                        holding: std::sync::atomic::AtomicBool::new(false),
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
                    Clusterd::new(cluster.clone()),
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
            node.set_remote(Arc::new(cluster.clone()));
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
                return Err(transport_error(TransportError::Timeout {
                    node: node.to_string(),
                    after,
                }))
            }
        };
        let mut pause = Duration::from_millis(5);
        let result = loop {
            let left = after.saturating_sub(t0.elapsed());
            let result = link
                .channel
                .call(target.wire(), payload.clone(), Some(left))
                .await;
            // A draining node refuses a new call from a node outside its config before
            // handling it, and tells this channel `goaway`: the call was not run, and it
            // goes again on the connection the goaway opens (to the node's successor,
            // or to it once it is back), while the call's time lasts.
            match &result {
                Err(TransportError::Remote { message, .. })
                    if message.starts_with(crate::agent::DRAINING)
                        && t0.elapsed() + pause < after =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                _ => break result,
            }
        };
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

    /// Call a `"lua"` command of `target` on `node`: packs `("lua", command, args…)`,
    /// unpacks the reply into `R` (one type, a tuple of types, or `Vec<Value>`).
    pub async fn call_lua<R: FromArgs>(
        &self,
        node: &str,
        target: impl Into<Target>,
        command: &str,
        args: impl IntoValues,
    ) -> Result<R, CallError> {
        let reply = self.call(node, target, pack_lua(command, args)?).await?;
        unpack_reply(node, command, &reply)
    }

    /// Push a `"lua"` command to `target` on `node`: `("lua", command, args…)`, no reply.
    pub async fn send_lua(
        &self,
        node: &str,
        target: impl Into<Target>,
        command: &str,
        args: impl IntoValues,
    ) -> Result<(), CallError> {
        self.send(node, target, pack_lua(command, args)?).await
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
            return Err(registry_error(RegistryError::BadName {
                name: name.to_string(),
                reason: reason.to_string(),
            }));
        }
        self.node()?.set_name(name, addr);
        Ok(())
    }

    /// Remove a registered name; returns the address it had.
    pub fn unregister(&self, name: &str) -> Option<Addr> {
        self.node().ok()?.remove_name(name.trim_start_matches('@'))
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

impl Remote for Cluster {
    fn call<'a>(
        &'a self,
        node: &'a str,
        target: Target,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<Bytes, CallError>> {
        Box::pin(Cluster::call(self, node, target, payload))
    }

    fn send<'a>(
        &'a self,
        node: &'a str,
        target: Target,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(Cluster::send(self, node, target, payload))
    }
}
