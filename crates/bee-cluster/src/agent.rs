//! `bee_clusteragent(<peer>)`, one per accepted connection: reads that peer's requests,
//! resolves `"@name"`, numeric addresses and name queries, delivers to local services
//! and writes their replies back; while the node drains, refuses new calls from bee
//! nodes outside the cluster config ([`DRAINING`]). While the node holds delivery (a
//! hot update's successor waiting for its predecessor's state), requests are read —
//! heartbeats answered, bytes counted against the budgets — and queued per connection
//! in arrival order, then delivered in that order once it is released.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bee_codec::cluster::{Address, Request};
use bee_codec::seri::{self, Value};
use bee_runtime::fasthash::FastBuild;
use bee_runtime::service::fmt_addr;
use bee_runtime::{Addr, CallError, Context, HandleResult, Message, Node, Service};
use bee_transport::throttle::warn_allowed;
use bee_transport::{Acceptor, Dispatched, Inbound};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};

use crate::lifecycle::dead_address_text;
use crate::state::{AgentInfo, Cluster};

/// How the error text begins that a draining node answers a new call from a caller
/// outside its cluster config with.
pub const DRAINING: &str = "bee: draining";

/// Creates one `bee_clusteragent` per accepted connection.
pub(crate) struct AgentFactory {
    pub(crate) cluster: Cluster,
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
        Arc::new_cyclic(|me| Agent {
            cluster: self.cluster.clone(),
            node,
            addr,
            peer,
            names: Mutex::new((u64::MAX, HashMap::default())),
            bee: AtomicBool::new(false),
            me: me.clone(),
            held: Mutex::new(None),
            queueing: AtomicBool::new(false),
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
    /// This agent, for the task that delivers held requests.
    me: Weak<Agent>,
    /// While requests are being held (or the held ones are still being delivered): where
    /// new ones queue, behind them.
    held: Mutex<Option<mpsc::UnboundedSender<Held>>>,
    /// `held` is `Some`, read once per request on the direct path.
    queueing: AtomicBool,
}

/// A request read while delivery was held, and where its delivery's outcome goes.
type Held = (Request, oneshot::Sender<Dispatched>);

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

impl Agent {
    /// Queue `req` behind the held ones when delivery is held (or held requests are
    /// still being delivered); gives it back otherwise.
    fn hold(&self, req: Request) -> Result<Dispatched, Request> {
        // The direct path: nothing held, nothing queued (two loads).
        if !self.queueing.load(Ordering::Acquire)
            && !self.cluster.inner.holding.load(Ordering::Acquire)
        {
            return Err(req);
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.is_none() && *self.cluster.inner.held.borrow() {
            if let Some(me) = self.me.upgrade() {
                let (tx, rx) = mpsc::unbounded_channel();
                *held = Some(tx);
                self.queueing.store(true, Ordering::Release);
                tokio::spawn(me.deliver_held(rx));
            }
        }
        let Some(tx) = held.as_ref() else {
            return Err(req);
        };
        let (done, outcome) = oneshot::channel();
        match tx.send((req, done)) {
            // Its bytes stay counted until it is delivered (a push) or answered (a call).
            Ok(()) => Ok(Dispatched::Later(
                async move {
                    match outcome.await {
                        Ok(Dispatched::Ready(r)) => r,
                        Ok(Dispatched::Later(answer)) => answer.await,
                        Ok(Dispatched::NoReply) => Ok(Bytes::new()),
                        Err(_) => Err("node is shutting down".to_string()),
                    }
                }
                .boxed(),
            )),
            Err(mpsc::error::SendError((req, _))) => {
                *held = None;
                self.queueing.store(false, Ordering::Release);
                Err(req)
            }
        }
    }

    /// Once delivery is released, deliver the held requests in arrival order (each
    /// call handed to its service before the next is, as on the direct path), then let
    /// new requests take the direct path again.
    async fn deliver_held(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Held>) {
        let mut gate = self.cluster.inner.held.subscribe();
        let shutdown = self.cluster.inner.shutdown.clone();
        tokio::select! {
            _ = gate.wait_for(|held| !*held) => {}
            _ = shutdown.cancelled() => return,
        }
        loop {
            let next = match rx.try_recv() {
                Ok(next) => next,
                Err(mpsc::error::TryRecvError::Disconnected) => return,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // Queued under this lock: empty while it is held means nothing is
                    // left behind when the direct path takes over.
                    let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                    match rx.try_recv() {
                        Ok(next) => next,
                        Err(_) => {
                            *held = None;
                            self.queueing.store(false, Ordering::Release);
                            return;
                        }
                    }
                }
            };
            let (req, done) = next;
            let _ = done.send(self.deliver(req).await);
        }
    }

    /// Deliver one request to its local service (or answer it here).
    async fn deliver(&self, req: Request) -> Dispatched {
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
                        if let Some(suppressed) = warn_allowed("push_unknown_name", &self.peer.ip())
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
    }
}

impl Inbound for Agent {
    fn dispatch(&self, req: Request) -> BoxFuture<'_, Dispatched> {
        Box::pin(async move {
            match self.hold(req) {
                Ok(queued) => queued,
                Err(req) => self.deliver(req).await,
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
