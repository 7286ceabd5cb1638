//! The calling side: one `bee_clustersender(<node>)` per remote node, owning that node's
//! [`bee_transport::Channel`] (callers use the channel directly, so a call costs no
//! extra hop through a mailbox); the `hello` sent on each new connection to learn which
//! run of the peer answers; marking nodes down; `cluster.proxy` stand-ins.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bee_codec::cluster::Address;
use bee_codec::seri::{self, Table, Value};
use bee_registry::RegistryError;
use bee_runtime::{Addr, CallError, Context, HandleResult, Message, Service, ServiceError, Target};
use bee_transport::Channel;
use bytes::Bytes;

use crate::cluster::CallErrorExt;
use crate::lifecycle::{Hello, CLUSTERD_NAME};
use crate::state::{
    registry_error, transport_error, Cluster, Link, Sender, HELLO_TIMEOUT, NO_HELLO,
};

impl Cluster {
    /// Find (or create) the channel to `node`, waiting for a reload to name it when the
    /// config does not (unless `__nowaiting`).
    pub(crate) async fn channel(&self, node: &str) -> Result<Link, CallError> {
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
                self.inner
                    .registry
                    .wait_for_node(node, wait)
                    .await
                    .map_err(registry_error)?
            }
            Err(e) => return Err(registry_error(e)),
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
    pub(crate) fn after_use(&self, node: &str, link: &Link) {
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
                if e.transport().is_some() {
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
    pub(crate) async fn hello_on(&self, node: &str, channel: &Channel) -> Result<Hello, CallError> {
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

    pub(crate) fn drop_sender(&self, name: &str, why: &str) {
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
