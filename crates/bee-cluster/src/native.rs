//! Native services and the team's rpc: CServiceProxy, answering rpc requests, masters
//! that hand frames to native services, and a byte-level endpoint for native callers.
//!
//! Every game message is one frame of the team's layout (`bee_codec::kkt`). How they
//! travel (see `spec/kkt-frames.md`, "How frames travel"):
//!
//! - **A native service sends** a frame (remote = target node and service, source = its
//!   own node and service) to the local [`CServiceProxy`] as a `ptype::TEXT` message.
//!   CServiceProxy reads the remote names and pushes the whole frame unchanged:
//!   `cluster.send(node, "@service", "text", frame)` when the message's session is 0,
//!   `("rpc_response", frame)` when it is not (a native service answering an rpc sends
//!   its reply with session 1).
//! - **An rpc request** is a frame with sub_type 18 and the caller's own session.
//!   A Lua-style service answers it through [`RpcServer`] (a wrapper over any
//!   [`Router`]): the reply frame (all names empty, sub_type 17, session copied) is
//!   pushed as `"rpc_response"` to the request's source node and service. A native
//!   service answers with the names swapped, through CServiceProxy.
//! - **A master in front of a native service** ([`NativeMaster`], the team's
//!   `skynet.redirect(cpp, source, "text", session, frame)`) hands `"text"` frames over
//!   as `ptype::TEXT` and `"rpc_response"` frames as `ptype::RESPONSE` (source = the
//!   master, session 0).
//! - **The caller** finds its pending rpc by the reply frame's session. bee adds what
//!   the team's C++ lacks: every pending rpc has a timeout (the caller gets
//!   [`RpcError::Timeout`]), and a frame that cannot be parsed is refused with an error
//!   naming what is wrong.
//!
//! C++ services are loaded by `bee-capi`; [`NativeEndpoint`] and [`spawn_native`] give a
//! Rust service the very same byte-level path (for tests, benchmarks and services that
//! want to behave exactly like the team's C++).

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bee_codec::kkt::{self, KktFrame, KktHeader};
use bee_codec::seri::{self, Value};
use bytes::Bytes;
use futures::FutureExt;
use tokio::sync::oneshot;

use bee_runtime::dispatcher::{Incoming, Reply, Router};
use bee_runtime::service::{
    ptype, Addr, CallError, Context, HandleResult, Message, Node, Service, ServiceError,
};
use bee_runtime::text::TextReply;
use bee_runtime::Target;

use crate::cluster::ClusterExt;

/// The conventional name of the proxy service (native services also find it as
/// `.CServiceProxy`, the local name the team's C++ looks up).
pub const CSERVICE_PROXY: &str = "CServiceProxy";

/// The local (`.`) name of the proxy service.
pub const CSERVICE_PROXY_LOCAL: &str = ".CServiceProxy";

fn utf8<'a>(what: &str, b: &'a [u8]) -> Result<&'a str, ServiceError> {
    std::str::from_utf8(b).map_err(|_| ServiceError::msg(format!("{what} is not UTF-8")))
}

/// `CServiceProxy`: takes frames from native services (`ptype::TEXT`, or a packed
/// single string) and pushes each, unchanged, to the remote node and service it names.
pub struct CServiceProxy;

impl CServiceProxy {
    /// Start it on `node` under both of its names.
    pub fn spawn(node: &Node) -> Addr {
        let addr = node.spawn_named(CSERVICE_PROXY, CServiceProxy);
        node.set_name(CSERVICE_PROXY_LOCAL, addr);
        addr
    }
}

impl Service for CServiceProxy {
    async fn handle(&mut self, ctx: &mut Context, msg: Message) -> HandleResult {
        let frame = match msg.ptype {
            ptype::LUA => match seri::unpack_first(&msg.payload, 1)?.into_iter().next() {
                Some(Value::String(f)) => f,
                _ => {
                    return Err(ServiceError::msg(
                        "CServiceProxy takes a frame (ptype TEXT, or one packed string)",
                    ))
                }
            },
            _ => msg.payload,
        };
        let h = KktHeader::peek(&frame).map_err(|e| {
            ServiceError::msg(format!(
                "CServiceProxy: cannot parse the frame from {}: {e}",
                ctx.node().describe(msg.source)
            ))
        })?;
        let node = utf8("remote node name", h.remote_node)?.to_string();
        let service = utf8("remote service name", h.remote_service)?.to_string();
        if node.is_empty() || service.is_empty() {
            return Err(ServiceError::msg(format!(
                "CServiceProxy: the frame from {} names no remote node/service",
                ctx.node().describe(msg.source)
            )));
        }
        let subtype = if msg.session == 0 {
            "text"
        } else {
            "rpc_response"
        };
        tracing::debug!(to_node = %node, to_service = %service, subtype, bytes = frame.len(), "CServiceProxy forwarding");
        let payload = seri::pack(&[Value::from(subtype), Value::String(frame)])?;
        ctx.cluster()?
            .send(&node, Target::Name(service), payload)
            .await
            .map_err(|e| {
                ServiceError::msg(format!("CServiceProxy: cannot forward to {node}: {e}"))
            })?;
        Ok(None)
    }
}

/// Answers the team's rpc requests around any [`Router`] (a [`crate::Dispatcher`],
/// typically): a `"text"` frame with sub_type 18 and a session is routed as usual, and
/// its reply frame is pushed as `"rpc_response"` to the request's source node and
/// service (or handed to the caller, when the caller waits on the cluster call
/// itself). A handler that fails or gives no reply sends nothing — as the team's Lua —
/// and is logged; the caller's own timeout ends its wait.
pub struct RpcServer<R> {
    inner: R,
}

impl<R: Router> RpcServer<R> {
    /// Wrap `inner`.
    pub fn new(inner: R) -> Self {
        RpcServer { inner }
    }

    /// The wrapped router.
    pub fn inner(&self) -> &R {
        &self.inner
    }
}

/// Whether `frame` asks for an rpc reply.
fn is_rpc_request(frame: &KktFrame) -> bool {
    frame.sub_type == kkt::SUBTYPE_RPC_SERVER && frame.session > 0
}

impl<R: Router> Router for RpcServer<R> {
    async fn route(&mut self, ctx: &mut Context, msg: Incoming) -> Result<Reply, ServiceError> {
        let request = match &msg {
            Incoming::Text(f) if is_rpc_request(f) && !ctx.wants_reply() => (**f).clone(),
            _ => return self.inner.route(ctx, msg).await,
        };
        // A panicking handler is caught here (the runtime would log it too) so the
        // log names the rpc it failed.
        let result = AssertUnwindSafe(self.inner.route(ctx, msg))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(ServiceError::msg("handler panicked")));
        let to_node = utf8("source node name", &request.source_node)?.to_string();
        let to_service = utf8("source service name", &request.source_service)?.to_string();
        match result {
            Ok(Reply::Frame(reply)) => {
                let payload = seri::pack(&[Value::from("rpc_response"), Value::String(reply)])?;
                ctx.cluster()?
                    .send(&to_node, Target::Name(to_service.clone()), payload)
                    .await
                    .map_err(|e| {
                        ServiceError::msg(format!(
                            "rpc reply (session {}) to {to_node}/{to_service} failed: {e}",
                            request.session
                        ))
                    })?;
            }
            Ok(_) => {
                tracing::warn!(node = %ctx.node().name(), service = %ctx.label(), session = request.session, caller = %format!("{to_node}/{to_service}"), "rpc request got no reply message from its handler; the caller will time out")
            }
            Err(e) => {
                tracing::warn!(node = %ctx.node().name(), service = %ctx.label(), session = request.session, caller = %format!("{to_node}/{to_service}"), error = %e, "rpc request failed; the caller will time out")
            }
        }
        Ok(Reply::Nothing)
    }

    fn export_state(&mut self) -> Option<Vec<u8>> {
        self.inner.export_state()
    }

    fn import_state(&mut self, state: &[u8]) -> Result<(), ServiceError> {
        self.inner.import_state(state)
    }
}

impl<R: Router> Service for RpcServer<R> {
    async fn handle(&mut self, ctx: &mut Context, msg: Message) -> HandleResult {
        bee_runtime::dispatcher::serve(self, ctx, msg).await
    }

    fn export_state(&mut self) -> Option<Vec<u8>> {
        self.inner.export_state()
    }

    fn import_state(&mut self, state: &[u8]) -> Result<(), ServiceError> {
        self.inner.import_state(state)
    }
}

/// A master in front of a native service (the shop_master of the team's backend): it
/// hands `("text", frame)` to the service registered as `target` as a `ptype::TEXT`
/// message and `("rpc_response", frame)` as `ptype::RESPONSE`, source = the master,
/// session 0. A caller waiting on the master stays attached (skynet.redirect), so the
/// native service may answer it directly.
pub struct NativeMaster {
    target: String,
}

impl NativeMaster {
    /// A master in front of the service named `target` (looked up per message, so a
    /// restarted service is found at its new address).
    pub fn new(target: &str) -> Self {
        NativeMaster {
            target: target.to_string(),
        }
    }
}

impl Service for NativeMaster {
    async fn handle(&mut self, ctx: &mut Context, msg: Message) -> HandleResult {
        let to = ctx.node().resolve(&self.target).map_err(|_| {
            ServiceError::msg(format!(
                "{}: no service named {:?} on this node",
                ctx.label(),
                self.target
            ))
        })?;
        let values = seri::unpack_first(&msg.payload, 2)?;
        let (kind, frame) = match (values.first().and_then(Value::as_bytes), values.get(1)) {
            (Some(b"text"), Some(Value::String(f))) => (ptype::TEXT, f.clone()),
            (Some(b"rpc_response"), Some(Value::String(f))) => (ptype::RESPONSE, f.clone()),
            _ => {
                return Err(ServiceError::msg(format!(
                    "{} takes (\"text\", frame) or (\"rpc_response\", frame)",
                    ctx.label()
                )))
            }
        };
        let forward = Message {
            source: ctx.addr(),
            ptype: kind,
            session: 0,
            payload: frame,
        };
        if ctx.wants_reply() {
            ctx.redirect(to, forward).await?;
        } else {
            ctx.node().post(to, forward)?;
        }
        Ok(None)
    }
}

/// What an rpc_call by a native caller ends with.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RpcError {
    /// No reply within the time given (the remote handler failed, gave no reply, or
    /// the reply could not find its way back).
    #[error("rpc_call timed out after {0:?}")]
    Timeout(Duration),
    /// The request could not be handed to CServiceProxy, or CServiceProxy could not
    /// forward it.
    #[error("rpc_call could not be sent: {0}")]
    Send(String),
    /// The request frame could not be built.
    #[error("rpc_call: bad frame: {0}")]
    Frame(String),
}

/// The byte-level entry points of a native service, exactly what a C++ service has:
/// "hand this frame to CServiceProxy" and "this frame arrived for you".
#[derive(Clone)]
pub struct NativeEndpoint {
    node: Node,
    proxy: Addr,
    node_name: Bytes,
    service_name: Bytes,
    pending: Arc<Mutex<Pending>>,
}

#[derive(Default)]
struct Pending {
    next: u64,
    calls: HashMap<u64, oneshot::Sender<KktFrame>>,
}

impl NativeEndpoint {
    /// An endpoint for the native service registered in the cluster as `service` on
    /// this node, talking to the CServiceProxy at `proxy`.
    pub fn new(node: &Node, proxy: Addr, service: &str) -> Self {
        NativeEndpoint {
            node: node.clone(),
            proxy,
            node_name: Bytes::from(node.name().to_string()),
            service_name: Bytes::from(service.to_string()),
            pending: Arc::new(Mutex::new(Pending::default())),
        }
    }

    /// Hand an encoded frame to CServiceProxy with skynet session `session` (0: a
    /// message, 1: an rpc reply). Returns once CServiceProxy has queued it on the
    /// cluster channel, or with its error when it cannot (bad frame, unknown node,
    /// node down): a native caller learns at once that a message cannot leave.
    pub async fn send_raw(&self, frame: Bytes, session: i32) -> Result<(), RpcError> {
        let msg = Message {
            source: 0,
            ptype: ptype::TEXT,
            session,
            payload: frame,
        };
        self.node
            .call_message(self.proxy, msg, None)
            .await
            .map(|_| ())
            .map_err(|e: CallError| RpcError::Send(e.remote_text()))
    }

    fn own(&self, frame: KktFrame) -> KktFrame {
        frame.from(self.node_name.clone(), self.service_name.clone())
    }

    /// Send `frame` (its sub_type, uid, name, body) to `service` on `node`, one way.
    pub async fn send(&self, node: &str, service: &str, frame: KktFrame) -> Result<(), RpcError> {
        let frame = self
            .own(frame)
            .to(node.to_string(), service.to_string())
            .session(0);
        let bytes = frame.encode().map_err(|e| RpcError::Frame(e.to_string()))?;
        self.send_raw(bytes, 0).await
    }

    /// rpc_call: send `request` (uid, name, body) to `service` on `node` as sub_type 18
    /// with a new session of this endpoint, and wait at most `timeout` for the reply
    /// frame (sub_type 17, same session).
    pub async fn rpc_call(
        &self,
        node: &str,
        service: &str,
        request: KktFrame,
        timeout: Duration,
    ) -> Result<KktFrame, RpcError> {
        let (tx, rx) = oneshot::channel();
        let session = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            // 1..2^31-1 like the team's sessions, never one a call still waits on.
            loop {
                p.next = if p.next >= 0x7FFF_FFFF { 1 } else { p.next + 1 };
                if !p.calls.contains_key(&p.next) {
                    break;
                }
            }
            let s = p.next;
            p.calls.insert(s, tx);
            s
        };
        let mut frame = self.own(request).to(node.to_string(), service.to_string());
        frame.sub_type = kkt::SUBTYPE_RPC_SERVER;
        frame.session = session;
        let sent = match frame.encode() {
            Ok(bytes) => self.send_raw(bytes, 0).await,
            Err(e) => Err(RpcError::Frame(e.to_string())),
        };
        if let Err(e) = sent {
            self.forget(session);
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(RpcError::Send("endpoint dropped".into())),
            Err(_) => {
                self.forget(session);
                Err(RpcError::Timeout(timeout))
            }
        }
    }

    /// Answer an rpc request that arrived here: the reply frame (names swapped,
    /// sub_type 17, roomid 0, session copied) goes back through CServiceProxy.
    pub async fn reply(&self, request: &KktFrame, reply: TextReply) -> Result<(), RpcError> {
        let frame = kkt::reply_from_native(request, reply.name, reply.body);
        let bytes = frame.encode().map_err(|e| RpcError::Frame(e.to_string()))?;
        self.send_raw(bytes, 1).await
    }

    fn forget(&self, session: u64) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .calls
            .remove(&session);
    }

    /// Classify a message that arrived for this service: `("text", frame)` or
    /// `("rpc_response", frame)` from the cluster, or a raw frame handed over by a
    /// [`NativeMaster`] (`ptype::TEXT` / `ptype::RESPONSE`). Replies to pending rpc
    /// calls are consumed here (the call resumes) and yield `None`.
    pub fn on_message(&self, msg: &Message) -> Result<Option<KktFrame>, ServiceError> {
        let (is_response, bytes) =
            match msg.ptype {
                ptype::TEXT => (false, msg.payload.clone()),
                ptype::RESPONSE => (true, msg.payload.clone()),
                _ => {
                    let values = seri::unpack_first(&msg.payload, 2)?;
                    match (values.first().and_then(Value::as_bytes), values.get(1)) {
                        (Some(b"text"), Some(Value::String(f))) => (false, f.clone()),
                        (Some(b"rpc_response"), Some(Value::String(f))) => (true, f.clone()),
                        _ => return Err(ServiceError::msg(
                            "native service takes (\"text\", frame) or (\"rpc_response\", frame)",
                        )),
                    }
                }
            };
        let frame = KktFrame::decode(&bytes)
            .map_err(|e| ServiceError::msg(format!("native service: bad frame: {e}")))?;
        if !is_response {
            return Ok(Some(frame));
        }
        let waiter = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .calls
            .remove(&frame.session);
        match waiter {
            Some(tx) => {
                let _ = tx.send(frame);
            }
            None => tracing::warn!(
                service = %String::from_utf8_lossy(&self.service_name),
                session = frame.session,
                "rpc reply for an unknown or timed-out session dropped"
            ),
        }
        Ok(None)
    }
}

/// A native service's logic, as a C++ service has it: frames in, frames out.
pub trait NativeHandler: Send + 'static {
    /// A frame arrived: a one-way message (sub_type 16), an rpc request (sub_type 18,
    /// session > 0), or a frame redirected by a master. Return a reply message to
    /// answer an rpc request (sent back through CServiceProxy, names swapped) or a
    /// caller waiting on the master; `None` answers nothing.
    fn on_frame(
        &mut self,
        endpoint: &NativeEndpoint,
        frame: KktFrame,
    ) -> impl Future<Output = Option<TextReply>> + Send;
}

/// Start a native service on `node`: its logic `handler`, reachable in the cluster as
/// `service`, talking through the CServiceProxy at `proxy`. Returns its endpoint.
///
/// Two services make one native service: a front (`native(<service>)`, registered as
/// `service`) that completes pending rpc calls the moment their replies arrive, and the
/// handler (`<service>`) that gets frames one at a time — so a handler may itself await
/// an rpc_call.
pub fn spawn_native<H: NativeHandler>(
    node: &Node,
    proxy: Addr,
    service: &str,
    handler: H,
) -> Result<NativeEndpoint, CallError> {
    let endpoint = NativeEndpoint::new(node, proxy, service);
    let inner = node.spawn(
        service,
        NativeService {
            endpoint: endpoint.clone(),
            handler,
        },
    );
    let front = node.spawn(
        &format!("native({service})"),
        NativeFront {
            endpoint: endpoint.clone(),
            inner,
        },
    );
    node.cluster()?.register(service, front)?;
    Ok(endpoint)
}

/// Completes rpc replies at once; passes everything else to the handler service.
struct NativeFront {
    endpoint: NativeEndpoint,
    inner: Addr,
}

impl Service for NativeFront {
    async fn handle(&mut self, ctx: &mut Context, msg: Message) -> HandleResult {
        if let Some(frame) = self.endpoint.on_message(&msg)? {
            let forward = Message {
                source: msg.source,
                ptype: ptype::TEXT,
                session: 0,
                payload: frame.encode()?,
            };
            ctx.redirect(self.inner, forward).await?;
        }
        Ok(None)
    }
}

/// Runs a [`NativeHandler`]: frames, one at a time.
struct NativeService<H> {
    endpoint: NativeEndpoint,
    handler: H,
}

impl<H: NativeHandler> Service for NativeService<H> {
    async fn handle(&mut self, ctx: &mut Context, msg: Message) -> HandleResult {
        let Some(frame) = self.endpoint.on_message(&msg)? else {
            return Ok(None);
        };
        let rpc = is_rpc_request(&frame);
        let reply = self.handler.on_frame(&self.endpoint, frame.clone()).await;
        match reply {
            Some(reply) if ctx.wants_reply() => {
                let f = kkt::reply_from_native(&frame, reply.name, reply.body).encode()?;
                Ok(Some(seri::pack(&[Value::String(f)])?))
            }
            Some(reply) if rpc => {
                self.endpoint
                    .reply(&frame, reply)
                    .await
                    .map_err(ServiceError::from)?;
                Ok(None)
            }
            _ => Ok(None),
        }
    }
}
