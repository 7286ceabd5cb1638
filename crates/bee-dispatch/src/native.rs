//! Native services: CServiceProxy and the rpc envelope.
//!
//! In a skynet-era backend some services are C++. They do not speak the cluster API;
//! they hand bytes to the local `CServiceProxy` service:
//!
//! ```text
//! proxy frame = [u16 BE node len][u16 BE service len][node][service][message]
//! ```
//!
//! CServiceProxy unframes it and pushes the message through the cluster to that node
//! and service (a registered name there): a plain message (a game frame) travels as
//! `skynet.pack("text", message)`; an rpc envelope (first byte 0xB7, see
//! `docs/protocol.md`) travels as `skynet.pack("rpc", envelope)`. Game frame uids are
//! below 2^63, so a game frame never starts with 0xB7 and the two cannot be confused.
//!
//! rpc_call: the caller puts its own session, node and service in the envelope. The
//! remote side — a [`crate::Dispatcher`] or another native service — routes the inner
//! message, and pushes a reply envelope (same session) through the cluster to the
//! caller's node and service, where [`NativeEndpoint`] resumes the pending call. This is
//! how a reply crosses nodes without the cluster channel knowing the caller's session.
//! A remote handler that fails — or panics — is answered with an error envelope, so the
//! caller gets [`RpcError::Remote`] with its text at once; only a request that reaches
//! no handler able to answer (or a reply that cannot find its way back) ends in
//! [`RpcError::Timeout`].
//!
//! Until the C++ SDK exists, native services are Rust values driving a
//! [`NativeEndpoint`]: it exposes exactly what the C ABI will — "hand these bytes to
//! CServiceProxy" and "here are the bytes that arrived for you" — and nothing of the
//! Rust call API, so C++ services will plug into the very same path.

use std::any::Any;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bee_codec::proxy::ProxyFrame;
use bee_codec::rpc::{self, RpcEnvelope, RpcKind};
use bee_codec::seri::{self, Value};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::oneshot;

use crate::cluster::{Cluster, Target};
use crate::dispatcher::Router;
use crate::service::{Addr, Context, HandleResult, Message, Node, Service, ServiceError};

/// The conventional local name of the proxy service.
pub const CSERVICE_PROXY: &str = "CServiceProxy";

/// `CServiceProxy`: takes proxy frames from native services and forwards their message
/// through the cluster. Its payloads are raw proxy frames, not skynet.pack.
pub struct CServiceProxy;

impl CServiceProxy {
    /// Wrap a message from a native service for the wire: `("rpc", envelope)` or
    /// `("text", frame)`.
    pub fn wire_payload(message: &Bytes) -> Result<Bytes, ServiceError> {
        let subtype = if rpc::is_envelope(message) {
            "rpc"
        } else {
            "text"
        };
        Ok(seri::pack(&[
            Value::from(subtype),
            Value::String(message.clone()),
        ])?)
    }
}

impl Service for CServiceProxy {
    async fn handle(&mut self, ctx: &mut Context, msg: Message) -> HandleResult {
        let frame = ProxyFrame::decode(&msg.payload)
            .map_err(|e| ServiceError::msg(format!("CServiceProxy: bad proxy frame: {e}")))?;
        let node = frame.node_str()?.to_string();
        let service = frame.service_str()?.to_string();
        let payload = Self::wire_payload(&frame.message)?;
        let cluster = Cluster::of(ctx.node())
            .ok_or_else(|| ServiceError::msg("CServiceProxy: the cluster layer is not started"))?;
        tracing::debug!(to_node = %node, to_service = %service, bytes = frame.message.len(), "CServiceProxy forwarding");
        cluster
            .send(&node, Target::Name(service), payload)
            .await
            .map_err(|e| {
                ServiceError::msg(format!("CServiceProxy: cannot forward to {node}: {e}"))
            })?;
        Ok(None)
    }
}

/// Answers rpc envelopes from native callers, around any [`Router`] (a
/// [`crate::Dispatcher`], typically): a `("rpc", envelope)` message has its inner
/// message routed by the wrapped router and, for a call, the reply envelope pushed back
/// through the cluster to the caller's node and service; every other message goes to
/// the router as it is.
pub struct RpcServer<R> {
    inner: R,
}

impl<R: Router> RpcServer<R> {
    /// Wrap `inner`.
    pub fn new(inner: R) -> Self {
        RpcServer { inner }
    }

    async fn serve(&mut self, ctx: &mut Context, envelope: Bytes) -> Result<Bytes, ServiceError> {
        let env = RpcEnvelope::decode(&envelope)?;
        match env.kind {
            RpcKind::Call | RpcKind::Send => {
                // A panicking handler must still answer the rpc caller (who otherwise
                // waits for its timeout): catch it here, as the runtime does for calls.
                let result = AssertUnwindSafe(self.route_inner(ctx, &env.message))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|p| Err(panicked(ctx, p.as_ref())));
                if env.kind == RpcKind::Call {
                    let reply = match &result {
                        Ok(b) => env.reply_ok(b)?,
                        Err(e) => env.reply_err(e.message())?,
                    };
                    send_reply(ctx.node(), &env, reply).await?;
                } else if let Err(e) = &result {
                    tracing::warn!(error = %e, "rpc send failed at the receiver (no reply wanted)");
                }
                Ok(Bytes::new())
            }
            RpcKind::ReplyOk | RpcKind::ReplyErr => Err(ServiceError::msg(format!(
                "service {} received an rpc reply (session {}) but has no rpc calls pending",
                ctx.label(),
                env.session
            ))),
        }
    }

    /// Route an envelope's inner payload; a `"text"` reply is handed back as the raw
    /// reply frame bytes.
    async fn route_inner(
        &mut self,
        ctx: &mut Context,
        payload: &Bytes,
    ) -> Result<Bytes, ServiceError> {
        let values = seri::unpack(payload)?;
        let is_text = matches!(values.first().and_then(|v| v.as_bytes()), Some(b"text"));
        let reply = self.inner.route(ctx, values).await?;
        if is_text && !reply.is_empty() {
            if let Some(Value::String(frame)) = seri::unpack(&reply)?.into_iter().next() {
                return Ok(frame);
            }
        }
        Ok(reply)
    }
}

impl<R: Router> Router for RpcServer<R> {
    async fn route(
        &mut self,
        ctx: &mut Context,
        values: Vec<Value>,
    ) -> Result<Bytes, ServiceError> {
        if values.first().and_then(Value::as_bytes) == Some(b"rpc") {
            return match values.into_iter().nth(1) {
                Some(Value::String(envelope)) => self.serve(ctx, envelope).await,
                _ => Err(ServiceError::msg(
                    "rpc message must carry an envelope string",
                )),
            };
        }
        self.inner.route(ctx, values).await
    }
}

impl<R: Router> Service for RpcServer<R> {
    async fn handle(&mut self, ctx: &mut Context, msg: Message) -> HandleResult {
        let values = seri::unpack(&msg.payload)?;
        Ok(Some(self.route(ctx, values).await?))
    }
}

/// The error an rpc caller gets when the handler of its request panicked (the same text
/// the service runtime gives a local or cluster caller).
fn panicked(ctx: &Context, payload: &(dyn Any + Send)) -> ServiceError {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string());
    tracing::error!(node = %ctx.node().name(), service = %ctx.label(), panic = %text, "rpc handler panicked; the caller is told, the service keeps running");
    ServiceError::msg(format!("handler panicked: {text}"))
}

/// Push a reply envelope through the cluster to the caller named in `env`.
async fn send_reply(node: &Node, env: &RpcEnvelope, reply: Bytes) -> Result<(), ServiceError> {
    let to_node = std::str::from_utf8(&env.node)?.to_string();
    let to_service = std::str::from_utf8(&env.service)?.to_string();
    let cluster = Cluster::of(node)
        .ok_or_else(|| ServiceError::msg("rpc reply: the cluster layer is not started"))?;
    let payload = seri::pack(&[Value::from("rpc"), Value::String(reply)])?;
    cluster
        .send(&to_node, Target::Name(to_service.clone()), payload)
        .await
        .map_err(|e| ServiceError::msg(format!("rpc reply to {to_node}/{to_service} failed: {e}")))
}

/// What an rpc_call by a native caller ends with.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RpcError {
    /// The remote handler failed; its text.
    #[error("remote handler failed: {0}")]
    Remote(String),
    /// No reply within the time given.
    #[error("rpc_call timed out after {0:?}")]
    Timeout(Duration),
    /// The request could not be handed to CServiceProxy.
    #[error("rpc_call could not be sent: {0}")]
    Send(String),
}

/// A message that arrived for a native service, as the C ABI will hand it over.
#[derive(Debug, Clone)]
pub enum Inbound {
    /// A game frame (sent with `send` through CServiceProxy, or a Lua-side `"text"`).
    Frame(Bytes),
    /// An rpc request envelope (kind call or send); answer calls with
    /// [`NativeEndpoint::reply`].
    Rpc(RpcEnvelope),
}

/// The byte-level entry points of a native service: what the C ABI exposes.
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
    next: u32,
    calls: HashMap<u32, oneshot::Sender<Result<Bytes, RpcError>>>,
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

    /// C ABI `send`: hand a proxy frame (built by the native side) to CServiceProxy.
    ///
    /// Returns once CServiceProxy has queued the message on the cluster channel, or with
    /// its error when it cannot (bad frame, unknown node, node down): so a native caller
    /// learns at once that a message or an rpc_call cannot leave this node, instead of
    /// waiting out a timeout. Delivery on the remote side stays fire-and-forget.
    pub async fn send_raw(&self, proxy_frame: Bytes) -> Result<(), RpcError> {
        self.node
            .call(self.proxy, proxy_frame)
            .await
            .map(|_| ())
            .map_err(|e| RpcError::Send(e.remote_text()))
    }

    /// Send `message` (a game frame) to `service` on `node`, no reply.
    pub async fn send(&self, node: &str, service: &str, message: &[u8]) -> Result<(), RpcError> {
        let frame = ProxyFrame::encode(node.as_bytes(), service.as_bytes(), message)
            .map_err(|e| RpcError::Send(e.to_string()))?;
        self.send_raw(frame).await
    }

    /// rpc_call: send `inner` (a packed `("lua", …)` or `("text", frame)` payload) to
    /// `service` on `node` inside an envelope carrying this caller's session, and wait
    /// for the reply envelope.
    pub async fn rpc_call(
        &self,
        node: &str,
        service: &str,
        inner: &[u8],
        timeout: Duration,
    ) -> Result<Bytes, RpcError> {
        let (tx, rx) = oneshot::channel();
        let session = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            // Next session, wrapping 0x7FFFFFFF -> 1 like the cluster's, and never one
            // a call still waits on (after a wrap, a very old call may still be pending).
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
        let env = RpcEnvelope::encode(
            RpcKind::Call,
            session,
            &self.node_name,
            &self.service_name,
            inner,
        )
        .map_err(|e| RpcError::Send(e.to_string()))?;
        if let Err(e) = self.send(node, service, &env).await {
            self.forget(session);
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(RpcError::Send("endpoint dropped".into())),
            Err(_) => {
                self.forget(session);
                Err(RpcError::Timeout(timeout))
            }
        }
    }

    /// rpc send: an envelope of kind send (the receiver routes it, replies to no one).
    pub async fn rpc_send(&self, node: &str, service: &str, inner: &[u8]) -> Result<(), RpcError> {
        let env = RpcEnvelope::encode(RpcKind::Send, 0, &self.node_name, &self.service_name, inner)
            .map_err(|e| RpcError::Send(e.to_string()))?;
        self.send(node, service, &env).await
    }

    /// Answer an rpc call that arrived here: the reply envelope goes back through
    /// CServiceProxy to the caller's node and service.
    pub async fn reply(
        &self,
        call: &RpcEnvelope,
        result: Result<&[u8], &str>,
    ) -> Result<(), RpcError> {
        let reply = match result {
            Ok(b) => call.reply_ok(b),
            Err(t) => call.reply_err(t),
        }
        .map_err(|e| RpcError::Send(e.to_string()))?;
        let node = String::from_utf8_lossy(&call.node).into_owned();
        let service = String::from_utf8_lossy(&call.service).into_owned();
        self.send(&node, &service, &reply).await
    }

    fn forget(&self, session: u32) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .calls
            .remove(&session);
    }

    /// If `payload` is an rpc reply envelope, complete the pending call and return true.
    pub fn take_reply(&self, payload: &Bytes) -> Result<bool, ServiceError> {
        let values = seri::unpack(payload)?;
        if let (Some(b"rpc"), Some(Value::String(b))) =
            (values.first().and_then(Value::as_bytes), values.get(1))
        {
            if let Ok(env) = RpcEnvelope::decode(b) {
                if matches!(env.kind, RpcKind::ReplyOk | RpcKind::ReplyErr) {
                    return Ok(self.on_message(payload)?.is_none());
                }
            }
        }
        Ok(false)
    }

    /// C ABI `on_message`: classify bytes that arrived for this service. Replies to
    /// pending rpc calls are consumed here (the call resumes) and yield `None`.
    pub fn on_message(&self, payload: &Bytes) -> Result<Option<Inbound>, ServiceError> {
        let values = seri::unpack(payload)?;
        let body = match values.get(1) {
            Some(Value::String(b)) => b.clone(),
            _ => {
                return Err(ServiceError::msg(
                    "native service takes (\"text\", frame) or (\"rpc\", envelope)",
                ))
            }
        };
        match values.first().and_then(Value::as_bytes) {
            Some(b"text") => Ok(Some(Inbound::Frame(body))),
            Some(b"rpc") => {
                let env = RpcEnvelope::decode(&body)?;
                match env.kind {
                    RpcKind::ReplyOk | RpcKind::ReplyErr => {
                        let waiter = self
                            .pending
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .calls
                            .remove(&env.session);
                        match waiter {
                            Some(tx) => {
                                let r = if env.kind == RpcKind::ReplyOk {
                                    Ok(env.message)
                                } else {
                                    Err(RpcError::Remote(
                                        String::from_utf8_lossy(&env.message).into_owned(),
                                    ))
                                };
                                let _ = tx.send(r);
                            }
                            None => tracing::warn!(
                                session = env.session,
                                "rpc reply for an unknown or timed-out session dropped"
                            ),
                        }
                        Ok(None)
                    }
                    RpcKind::Call | RpcKind::Send => Ok(Some(Inbound::Rpc(env))),
                }
            }
            _ => Err(ServiceError::msg(
                "native service takes (\"text\", frame) or (\"rpc\", envelope)",
            )),
        }
    }
}

/// A native service's logic, as the C++ side will implement it: bytes in, bytes out.
pub trait NativeHandler: Send + 'static {
    /// A game frame arrived (sent, or redirected to this service by a master such as
    /// shop_master). Return a reply frame to answer a caller that waits; it is ignored
    /// when nobody waits.
    fn on_frame(&mut self, endpoint: &NativeEndpoint, frame: Bytes)
        -> BoxFuture<'_, Option<Bytes>>;
    /// An rpc call or send arrived with this inner message; return the reply bytes (or
    /// an error text) for a call. If it panics, the caller gets the error
    /// `handler panicked: <text>` at once and the service keeps running.
    fn on_rpc(
        &mut self,
        endpoint: &NativeEndpoint,
        inner: Bytes,
    ) -> BoxFuture<'_, Result<Bytes, String>>;
}

/// Start a native service on `node`: its logic `handler`, reachable in the cluster as
/// `service`, talking through the CServiceProxy at `proxy`. Returns its endpoint.
///
/// Two services make one native service, as the C++ SDK will: a front
/// (`native(<service>)`, registered as `service`) that completes pending rpc calls the
/// moment their replies arrive, and the handler (`<service>`) that gets frames and rpc
/// requests one at a time — so a handler may itself await an rpc_call.
pub fn spawn_native<H: NativeHandler>(
    node: &Node,
    proxy: Addr,
    service: &str,
    handler: H,
) -> Result<NativeEndpoint, ServiceError> {
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
    let cluster = Cluster::of(node)
        .ok_or_else(|| ServiceError::msg("native service needs the cluster layer started"))?;
    cluster.register(service, front)?;
    Ok(endpoint)
}

/// Completes rpc replies at once; passes everything else to the handler service.
struct NativeFront {
    endpoint: NativeEndpoint,
    inner: Addr,
}

impl Service for NativeFront {
    async fn handle(&mut self, ctx: &mut Context, msg: Message) -> HandleResult {
        if self.endpoint.take_reply(&msg.payload)? {
            return Ok(None);
        }
        ctx.redirect(self.inner, msg).await?;
        Ok(None)
    }
}

/// Runs a [`NativeHandler`]: frames and rpc requests, one at a time.
struct NativeService<H> {
    endpoint: NativeEndpoint,
    handler: H,
}

impl<H: NativeHandler> Service for NativeService<H> {
    async fn handle(&mut self, ctx: &mut Context, msg: Message) -> HandleResult {
        match self.endpoint.on_message(&msg.payload)? {
            None => {}
            Some(Inbound::Frame(f)) => {
                if let Some(reply) = self.handler.on_frame(&self.endpoint, f).await {
                    if ctx.wants_reply() {
                        return Ok(Some(seri::pack(&[Value::String(reply)])?));
                    }
                }
            }
            Some(Inbound::Rpc(env)) => {
                let endpoint = self.endpoint.clone();
                let result = AssertUnwindSafe(self.handler.on_rpc(&endpoint, env.message.clone()))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|p| Err(panicked(ctx, p.as_ref()).message().to_string()));
                if env.kind == RpcKind::Call {
                    let r = match &result {
                        Ok(b) => Ok(b.as_ref()),
                        Err(t) => Err(t.as_str()),
                    };
                    endpoint.reply(&env, r).await.map_err(ServiceError::from)?;
                } else if let Err(e) = result {
                    tracing::warn!(error = %e, "native rpc send failed (no reply wanted)");
                }
            }
        }
        Ok(None)
    }
}
