//! The listening side: a [`Listener`] accepts peers and runs one agent per connection
//! (skynet's clusteragent).
//!
//! Per accepted connection:
//! - the connection task reads frames ([`Connection`]), decodes them
//!   ([`decode_request_frame`]), reassembles multi-part requests with a bounded
//!   [`RequestAssembler`], and hands each complete request to [`Inbound::dispatch`]
//!   **in arrival order** (the next request is dispatched only after the previous
//!   dispatch returned), so services see messages in the order the peer sent them;
//! - a [`Dispatched::Ready`] answer is queued at once; [`Dispatched::Later`] futures run
//!   concurrently inside the connection task and are answered as they complete;
//!   [`Dispatched::NoReply`] (pushes) answers nothing;
//! - a writer task writes the queued responses, one batch at a time. (Unlike the
//!   sending side, answers are not written directly by the connection task: measured,
//!   that cost more throughput under load, as the connection task then does every write
//!   itself instead of a second core batching them, than it saved latency.)
//!
//! Heartbeats: a request to [`PING_NAME`] (`@bee_ping`) is answered here with an empty
//! ok response, in arrival order with the other answers, and never reaches the
//! [`Inbound`] (see [`crate::liveness`]).
//!
//! Load shedding, per request: a request past `max_outstanding` unanswered requests of
//! its connection, past `max_inbound_bytes` of its connection's requests being handled,
//! or that does not fit the node-wide [`ListenerConfig::inbound_budget`] is answered at
//! once with an error response beginning [`OVERLOADED`] on its own session (a push is
//! dropped), counted, and logged at most once a second per peer; the connection stays
//! up and keeps being read, so heartbeats are answered while the node sheds. Only a
//! peer that does not read its answers (more than `max_queued_bytes` unwritten) makes
//! its connection stop reading until they drain. A connection is closed for a message
//! larger than the whole budget, or a protocol error — never for load.
//!
//! Byte budgets: a request's bytes are charged to the inbound budget from the moment
//! it is complete until its answer is computed **and** the last copy of its payload is
//! dropped — the permit travels inside the payload ([`Permit::carry`]) into the
//! service's mailbox and handler, so a service that still holds requests keeps them
//! charged after their connection went. A whole request is copied out of the read
//! buffer when it is charged, so what it keeps alive is what it is charged. Every
//! multi-part message being assembled holds its announced size from its header on. A
//! multi-part message not finished within
//! [`ListenerConfig::multipart_timeout`] is dropped (a request is answered
//! [`MULTIPART_EXPIRED`]) and its late pieces are ignored.
//!
//! Authentication: with [`ListenerConfig::auth_secret`] set, a connection is served only
//! after the peer completed the exchange of [`crate::auth`] (requests to `@bee_auth`,
//! answered here and never dispatched), or at once when its IP address is in
//! [`ListenerConfig::auth_allow`]; any other message first, a wrong proof, or no proof
//! within [`ListenerConfig::auth_timeout`] closes the connection with a warning naming
//! the peer.
//!
//! Hygiene: at most [`ListenerConfig::max_connections`] connections are served; a peer
//! past it is accepted and closed at once. A connection that sent part of a frame and
//! then nothing for [`ListenerConfig::read_timeout`] is closed, and so is one idle for
//! [`ListenerConfig::idle_timeout`] (off by default). Accepted sockets get TCP keepalive
//! and `TCP_USER_TIMEOUT` ([`ListenerConfig::liveness`]). When the process runs out of
//! file descriptors (`EMFILE`/`ENFILE`), the listener gives up a spare descriptor it
//! took at bind to accept and close the waiting peers (they see the connection closed
//! instead of a call that hangs), takes it again, backs off 20 ms, and logs at most once
//! per second with the number refused. Refusals past the connection limit are logged the
//! same way.
//!
//! Trouble on one connection never affects the others: an undecodable frame, a multi-part
//! message past `max_message`, too many half-assembled messages, or EOF in the middle of a
//! frame closes THAT connection with a warning naming the peer and the reason, and
//! [`Inbound::closed`] is told why. A multi-part request whose pieces do not add up to the
//! announced size is answered `Invalid large req`, as stock skynet does.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bee_codec::cluster::{
    decode_request_frame, encode_response, encode_session0_error, Address, AssemblyError, Limits,
    Request, RequestAssembler, RequestFrame,
};
use bee_codec::frame::MAX_BODY;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::auth::{is_auth, AuthSecret, Responder, Step as AuthStep, REQUIRED as AUTH_REQUIRED};
use crate::budget::{ByteBudget, Permit};
use crate::connection::{run_writer, Connection, WriteQueue, WriterEnd};
use crate::error::TransportError;
use crate::liveness::PING_NAME;
use crate::telemetry::ListenerMetrics;
use crate::throttle::warn_allowed;

/// How the error text of a request shed under overload begins: a request that does not
/// fit the node's inbound budget (or its connection's bounds) is answered at once with
/// an error response `bee: overloaded: <which limit, how full>`, and the connection
/// stays up. A bee caller gets [`TransportError::Overloaded`]; a stock skynet caller's
/// call raises an error, as for any error response.
pub const OVERLOADED: &str = "bee: overloaded";

/// What a draining node tells every bee peer connected to it, as an error response on
/// session 0 (which no call uses) on each accepted connection, when it stops accepting:
/// the peer's [`Channel`](crate::Channel) retires that connection (its next messages go
/// on a new one, to the successor or riding through the absence) and closes it once its
/// calls are answered. A connection counts as a bee peer's once it authenticated, sent a
/// heartbeat, or called a name starting with `@bee_` (bee's own services); stock skynet
/// peers are not told.
pub const GOAWAY: &str = "bee: goaway";

/// The error text answered for a multi-part request whose pieces do not add up to the
/// size its header announced (stock skynet's wording).
pub const INVALID_LARGE_REQ: &str = "Invalid large req";

/// What the listening side does with one decoded request.
pub enum Dispatched {
    /// Answer now; an `Err` text goes back as an error response.
    Ready(Result<Bytes, String>),
    /// Answer when this future completes (it runs concurrently with later requests).
    Later(BoxFuture<'static, Result<Bytes, String>>),
    /// Answer nothing (pushes).
    NoReply,
}

impl std::fmt::Debug for Dispatched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dispatched::Ready(r) => f.debug_tuple("Ready").field(r).finish(),
            Dispatched::Later(_) => f.write_str("Later(..)"),
            Dispatched::NoReply => f.write_str("NoReply"),
        }
    }
}

/// The handler of one accepted connection (skynet's clusteragent).
pub trait Inbound: Send + Sync + 'static {
    /// Handle one complete request or push. Requests of one connection are dispatched one
    /// at a time, in arrival order: the next is not dispatched before this future returns.
    fn dispatch(&self, req: Request) -> BoxFuture<'_, Dispatched>;
    /// The connection ended; `reason` says why (peer closed, protocol error, shutdown).
    fn closed(&self, reason: &str);
}

/// Makes the [`Inbound`] of each accepted connection.
pub trait Acceptor: Send + Sync + 'static {
    /// A peer connected from `peer`.
    fn accept(&self, peer: SocketAddr) -> Arc<dyn Inbound>;
}

/// Limits of every connection a [`Listener`] accepts.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Largest request accepted (multi-part total) and reply sent (default 65 MiB). A
    /// larger request closes the connection; a larger reply is answered with an error.
    pub max_message: usize,
    /// Multi-part requests being assembled at once per connection (default 64); one more
    /// closes the connection.
    pub max_pending_multipart: usize,
    /// Unanswered requests per connection; more are answered [`OVERLOADED`] (default
    /// 65536).
    pub max_outstanding: usize,
    /// Bytes of responses waiting to be written per connection before it stops reading
    /// (default 16 MiB).
    pub max_queued_bytes: usize,
    /// How long a connection's reader busy-polls after the last traffic before it parks
    /// (default zero: off; a `bee run` node uses [`crate::channel::DEFAULT_BUSY_POLL`]).
    pub busy_poll: std::time::Duration,
    /// Inbound bytes one connection may hold (default 32 MiB): a request past it (with
    /// others of the connection being handled) is answered [`OVERLOADED`], and multi-part
    /// messages being assembled may announce at most this much together, or
    /// `max_message` if larger (one more closes the connection).
    pub max_inbound_bytes: usize,
    /// Node-wide budget of inbound bytes held (requests being handled, multi-part messages
    /// being assembled), shared by every connection of every listener given a clone
    /// (default `None`). A message that does not fit is shed (a request answered
    /// [`OVERLOADED`], a push dropped); one larger than the whole budget closes its
    /// connection.
    pub inbound_budget: Option<ByteBudget>,
    /// A multi-part request or push not finished this long after its header is dropped
    /// (a request is answered [`MULTIPART_EXPIRED`]; default 30 s; zero: never).
    pub multipart_timeout: Duration,
    /// Connections served at once (default 10000; zero: no limit). A peer connecting past
    /// it is accepted and closed at once (one log line per second with a count).
    pub max_connections: usize,
    /// A connection that has sent part of a frame and then nothing for this long is closed
    /// (default 30 s; zero: never).
    pub read_timeout: Duration,
    /// A connection with nothing received, nothing outstanding and nothing to write for
    /// this long is closed (default zero: never). Skynet and bee peers reconnect on their
    /// next call.
    pub idle_timeout: Duration,
    /// TCP keepalive and `TCP_USER_TIMEOUT` bound of accepted sockets, as
    /// [`crate::ChannelConfig::liveness`] (default 10 s; zero: system defaults), so
    /// connections of peers that vanished do not hold file descriptors forever.
    pub liveness: Duration,
    /// Shared secret for node authentication (default `None`: every peer is served). When
    /// set, a peer must complete the exchange of [`crate::auth`] before any request is
    /// served, unless its IP address is in `auth_allow`.
    pub auth_secret: Option<AuthSecret>,
    /// Peer IP addresses served without authentication (stock skynet nodes, which cannot
    /// authenticate). Default empty.
    pub auth_allow: Vec<IpAddr>,
    /// How long a peer that must authenticate may take to do so (default 5 s).
    pub auth_timeout: Duration,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            max_message: 65 * 1024 * 1024,
            max_pending_multipart: 64,
            max_outstanding: 65536,
            max_queued_bytes: 16 * 1024 * 1024,
            busy_poll: std::time::Duration::ZERO,
            max_inbound_bytes: 32 * 1024 * 1024,
            inbound_budget: None,
            multipart_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::ZERO,
            liveness: Duration::from_secs(10),
            auth_secret: None,
            auth_allow: Vec::new(),
            auth_timeout: Duration::from_secs(5),
        }
    }
}

/// A bound TCP listener; [`Listener::run`] serves it.
#[derive(Debug)]
pub struct Listener {
    listener: TcpListener,
    local: SocketAddr,
    config: ListenerConfig,
    /// A spare file descriptor, taken at bind, given up to accept-and-close peers when
    /// the process has none left (so they are refused cleanly instead of left hanging in
    /// the backlog).
    reserve: Option<std::fs::File>,
    open: Arc<AtomicUsize>,
    /// Cancelled once this process's descriptor of the listening socket is closed.
    unbound: Unbound,
}

/// Cancels its token when dropped: [`Listener::unbound`] is told when the listening
/// socket is closed, by [`Listener::run_until`] or by dropping a listener never run.
#[derive(Debug, Default)]
struct Unbound(CancellationToken);

impl Drop for Unbound {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl Listener {
    /// Bind `addr` (`"host:port"`; port 0 picks a free port).
    pub async fn bind(addr: &str, config: ListenerConfig) -> Result<Listener, TransportError> {
        let bind_error = |e: std::io::Error| TransportError::Bind {
            addr: addr.to_string(),
            reason: e.to_string(),
        };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        let reserve = std::fs::File::open("/dev/null").ok();
        Ok(Listener {
            listener,
            local,
            config,
            reserve,
            open: Arc::new(AtomicUsize::new(0)),
            unbound: Unbound::default(),
        })
    }

    /// Serve a listening socket bound elsewhere (handed over by the node's previous
    /// process: it keeps its address and its queue of peers waiting to be accepted).
    pub fn from_std(
        listener: std::net::TcpListener,
        config: ListenerConfig,
    ) -> Result<Listener, TransportError> {
        let local = listener.local_addr().map_err(|e| TransportError::Bind {
            addr: "(handed-over socket)".into(),
            reason: e.to_string(),
        })?;
        let bind_error = |e: std::io::Error| TransportError::Bind {
            addr: local.to_string(),
            reason: e.to_string(),
        };
        // tokio needs it non-blocking (or the runtime thread blocks in accept).
        listener.set_nonblocking(true).map_err(bind_error)?;
        let listener = TcpListener::from_std(listener).map_err(bind_error)?;
        Ok(Listener {
            listener,
            local,
            config,
            reserve: std::fs::File::open("/dev/null").ok(),
            open: Arc::new(AtomicUsize::new(0)),
            unbound: Unbound::default(),
        })
    }

    /// A second descriptor of the listening socket (to hand it to a successor process
    /// with `SCM_RIGHTS`); the socket stays open while either is.
    pub fn dup_socket(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.listener.as_fd().try_clone_to_owned()
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Cancelled once [`Listener::run_until`] has closed this process's descriptor of the
    /// listening socket (after `stop_accepting` or `shutdown`; also when the listener is
    /// dropped without running). Until then the kernel still completes handshakes of new
    /// peers into the socket's queue, and closing it resets those: a drain waits for
    /// this before it tells peers to reconnect, so their new connections are refused
    /// (and ridden through) instead of accepted by the kernel and then reset.
    pub fn unbound(&self) -> CancellationToken {
        self.unbound.0.clone()
    }

    /// Connections open now (shared counter, valid before and after [`Listener::run`]).
    pub fn open_connections(&self) -> Arc<AtomicUsize> {
        self.open.clone()
    }

    /// Accept peers until `shutdown` is cancelled, one task per connection. On cancel it
    /// stops accepting, closes the listening socket and every connection, and returns
    /// once all connection tasks have ended.
    pub async fn run(self, acceptor: Arc<dyn Acceptor>, shutdown: CancellationToken) {
        self.run_until(acceptor, shutdown.clone(), shutdown).await
    }

    /// [`Listener::run`], but `stop_accepting` only closes the listening socket (new
    /// peers are refused) and lets the open connections run until their peers close
    /// them or `shutdown` is cancelled: the first step of a graceful drain.
    pub async fn run_until(
        self,
        acceptor: Arc<dyn Acceptor>,
        stop_accepting: CancellationToken,
        shutdown: CancellationToken,
    ) {
        let Listener {
            listener,
            local,
            config,
            mut reserve,
            open,
            unbound,
        } = self;
        let mut tasks = JoinSet::new();
        let metrics = Arc::new(ListenerMetrics::new(local.to_string()));
        // Open connections are told goaway once the listening socket is really closed,
        // not when accepting stops: a peer told earlier would reconnect into the kernel's
        // accept queue of a socket about to close, and be reset.
        let closed = unbound.0.clone();
        loop {
            tokio::select! {
                biased;
                _ = stop_accepting.cancelled() => break,
                _ = shutdown.cancelled() => break,
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = done {
                        tracing::error!(%local, error = %e, "connection task failed");
                    }
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let now_open = open.load(Ordering::Acquire);
                        if config.max_connections > 0 && now_open >= config.max_connections {
                            drop(stream);
                            metrics.refused("max_connections", 1);
                            if let Some(n) = warn_allowed("max_connections", &local) {
                                tracing::warn!(%local, %peer, suppressed = n, open = now_open, max = config.max_connections, "too many connections; refusing new peers (closed at once)");
                            }
                            continue;
                        }
                        spawn_serve(&mut tasks, stream, peer, &*acceptor, &config, &shutdown, &closed, &open, &metrics);
                    }
                    Err(e) if is_out_of_fds(&e) => {
                        // Give up the spare descriptor to accept and close the waiting
                        // peers, then take it again.
                        drop(reserve.take());
                        let mut closed = 0u64;
                        while closed < 256 {
                            match listener.accept().now_or_never() {
                                Some(Ok((stream, _))) => {
                                    drop(stream);
                                    closed += 1;
                                }
                                _ => break,
                            }
                        }
                        reserve = std::fs::File::open("/dev/null").ok();
                        if reserve.is_none() {
                            // Someone else took the descriptor: no clean refusal until
                            // one is free again.
                            tracing::debug!(%local, "spare descriptor not available");
                        }
                        metrics.refused("out_of_fds", closed);
                        if let Some(n) = warn_allowed("out_of_fds", &local) {
                            tracing::warn!(%local, error = %e, refused = closed, suppressed = n, open = open.load(Ordering::Acquire), spare = reserve.is_some(), "out of file descriptors; refusing new peers (closed at once)");
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                            _ = stop_accepting.cancelled() => break,
                        }
                    }
                    Err(e) => {
                        // Wait a little instead of spinning.
                        tracing::warn!(%local, error = %e, "accept failed");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                            _ = stop_accepting.cancelled() => break,
                        }
                    }
                },
            }
        }
        // Peers whose handshake the kernel completed before the socket closes would be
        // reset by the close, with whatever they already wrote: serve them. Asked of the
        // socket itself (non-blocking), not of the reactor, which may not have seen them.
        let listener = listener.into_std();
        if let (false, Ok(socket)) = (shutdown.is_cancelled(), &listener) {
            let mut late = 0;
            while late < LATE_PEERS {
                let Ok((stream, peer)) = socket.accept() else {
                    break;
                };
                let stream = stream
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(stream));
                match stream {
                    Ok(stream) => spawn_serve(
                        &mut tasks, stream, peer, &*acceptor, &config, &shutdown, &closed, &open,
                        &metrics,
                    ),
                    Err(e) => {
                        tracing::warn!(%local, %peer, error = %e, "cannot serve a peer accepted while closing")
                    }
                }
                late += 1;
            }
            if late > 0 {
                tracing::debug!(%local, late, "served the peers that were waiting to be accepted");
            }
        }
        drop(reserve);
        drop(listener);
        drop(unbound);
        if !shutdown.is_cancelled() {
            tracing::info!(%local, open = open.load(Ordering::Acquire), "stopped accepting; serving the open connections until their peers close them");
        }
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                tracing::error!(%local, error = %e, "connection task failed");
            }
        }
        tracing::debug!(%local, "listener stopped");
    }
}

/// At most this many peers already waiting in the accept queue when accepting stops are
/// still served (the rest are reset by the close, as by any closed socket).
const LATE_PEERS: usize = 1024;

/// Start serving an accepted connection (counted open until its task ends).
#[allow(clippy::too_many_arguments)]
fn spawn_serve(
    tasks: &mut JoinSet<()>,
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: &dyn Acceptor,
    config: &ListenerConfig,
    shutdown: &CancellationToken,
    goaway: &CancellationToken,
    open: &Arc<AtomicUsize>,
    metrics: &Arc<ListenerMetrics>,
) {
    tracing::debug!(%peer, "peer connected");
    open.fetch_add(1, Ordering::AcqRel);
    metrics.accepted.increment(1);
    metrics.open.increment(1.0);
    let guard = OpenGuard(open.clone(), metrics.clone());
    let metrics = metrics.clone();
    let inbound = acceptor.accept(peer);
    let config = config.clone();
    let token = shutdown.child_token();
    let goaway = goaway.clone();
    tasks.spawn(async move {
        let _guard = guard;
        serve(stream, peer, inbound, config, token, goaway, metrics).await
    });
}

/// Decrements the count of open connections when a connection task ends.
struct OpenGuard(Arc<AtomicUsize>, Arc<ListenerMetrics>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        self.1.open.decrement(1.0);
    }
}

/// `EMFILE` / `ENFILE` (the same numbers on Linux, the BSDs and macOS).
fn is_out_of_fds(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23) | Some(24))
}

/// How the read loop of a connection ended.
enum End {
    /// The peer closed cleanly between frames (answers not computed yet are dropped).
    Clean,
    /// The connection is closed for this reason (logged as a warning).
    Error(String),
    /// The connection's token was cancelled (shutdown or write failure).
    Cancelled,
    /// Nothing happened for `idle_timeout`; closed after flushing.
    Idle,
    /// The peer failed to authenticate; closed after flushing the answers (logged as a
    /// warning naming the peer).
    Refused(String),
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    inbound: Arc<dyn Inbound>,
    config: ListenerConfig,
    shutdown: CancellationToken,
    goaway: CancellationToken,
    metrics: Arc<ListenerMetrics>,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
    if let Err(e) = crate::liveness::tune_socket(&stream, config.liveness) {
        tracing::debug!(%peer, error = %e, "cannot set TCP keepalive / TCP_USER_TIMEOUT");
    }
    let (rd, wr) = stream.into_split();
    let queue = Arc::new(WriteQueue::new(wr, ()).with_metrics(metrics.bytes_out.clone(), None));
    let cancel = shutdown.child_token();
    let writer = {
        let queue = queue.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let end = run_writer(&queue, &cancel).await;
            if matches!(end, WriterEnd::Failed(_)) {
                cancel.cancel();
            }
            end
        })
    };
    let end = read_loop(
        Connection::new(rd, MAX_BODY)
            .busy_poll(config.busy_poll, queue.activity.clone())
            .count_bytes(metrics.bytes_in.clone()),
        peer,
        &*inbound,
        &queue,
        &config,
        Signals {
            cancel: &cancel,
            goaway: &goaway,
        },
        &metrics,
    )
    .await;
    let reason = match end {
        End::Clean => {
            metrics.closed("peer");
            tracing::debug!(%peer, "peer closed the connection");
            queue.close();
            "peer closed the connection".to_string()
        }
        End::Error(reason) => {
            metrics.closed("error");
            if let Some(suppressed) = warn_allowed("connection_closed", &peer.ip()) {
                tracing::warn!(%peer, %reason, suppressed, "closing connection");
            }
            cancel.cancel();
            reason
        }
        End::Refused(reason) => {
            metrics.closed("auth");
            metrics.refused("auth", 1);
            if let Some(suppressed) = warn_allowed("auth_refused", &peer.ip()) {
                tracing::warn!(%peer, %reason, suppressed, "peer refused: not authenticated");
            }
            queue.close();
            format!("not authenticated: {reason}")
        }
        End::Idle => {
            metrics.closed("idle");
            tracing::debug!(%peer, idle = ?config.idle_timeout, "closing idle connection");
            queue.close();
            "idle timeout".to_string()
        }
        End::Cancelled => {
            metrics.closed(if shutdown.is_cancelled() {
                "shutdown"
            } else {
                "error"
            });
            cancel.cancel();
            if shutdown.is_cancelled() {
                "listener shutting down".to_string()
            } else {
                String::new()
            }
        }
    };
    let writer_end = writer.await;
    let reason = if reason.is_empty() {
        match writer_end {
            Ok(WriterEnd::Failed(e)) => {
                let r = format!("write failed: {e}");
                if let Some(suppressed) = warn_allowed("connection_closed", &peer.ip()) {
                    tracing::warn!(%peer, reason = %r, suppressed, "closing connection");
                }
                r
            }
            _ => "connection closed".to_string(),
        }
    } else {
        reason
    };
    inbound.closed(&reason);
}

/// A running `Later` answer with the inbound bytes it holds: `None` for pushes (run for
/// their effect, nothing to send).
type Pending = BoxFuture<'static, (usize, Option<(u32, Result<Bytes, String>)>)>;

/// The error answered for a multi-part request that did not complete within
/// [`ListenerConfig::multipart_timeout`].
pub const MULTIPART_EXPIRED: &str = "multi-part request expired before its last piece";

/// A multi-part request or push being assembled.
struct Partial {
    started: Instant,
    push: bool,
    /// Node inbound budget held for its announced size.
    permit: Option<Permit>,
}

/// Inbound bytes of one connection: multi-part messages being assembled, and what they
/// hold of the node's inbound budget.
struct Inflow<'a> {
    peer: SocketAddr,
    config: &'a ListenerConfig,
    partial: HashMap<u32, Partial>,
    /// Sessions of expired multi-part messages whose late pieces are dropped.
    expired: HashSet<u32>,
    /// Sessions of multi-part messages shed at their header, whose pieces are dropped as
    /// they come (the sender writes them right behind it, so this stays small).
    shed: HashSet<u32>,
    metrics: &'a ListenerMetrics,
}

/// A message that does not fit: shed it (`close` false), or close the connection when it
/// could never fit (larger than the whole budget).
struct Shed {
    text: String,
    close: bool,
}

impl Inflow<'_> {
    /// Charge `n` bytes to the node's inbound budget (`Ok(None)` if there is none).
    fn charge(&self, n: usize, what: &str) -> Result<Option<Permit>, Shed> {
        let Some(budget) = &self.config.inbound_budget else {
            return Ok(None);
        };
        match budget.try_acquire(n) {
            Some(p) => Ok(Some(p)),
            None if n > budget.limit() => {
                // Counted as a rejection too: the connection is closed for it.
                self.metrics.rejections.increment(1);
                Err(Shed {
                text: format!(
                    "a {what} of {n} bytes is larger than the whole node inbound budget ({} bytes)",
                    budget.limit()
                ),
                close: true,
            })
            }
            None => Err(Shed {
                text: format!(
                    "{OVERLOADED}: node inbound budget exhausted ({} of {} bytes held); a {what} of {n} bytes refused, retry later",
                    budget.used(),
                    budget.limit()
                ),
                close: false,
            }),
        }
    }

    /// Refuse one message that does not fit `limit`: a request is answered `text` at
    /// once, a push is dropped; counted, and logged at most once a second per peer.
    /// Returns whether the write queue is now past its limit.
    fn shed(
        &self,
        queue: &WriteQueue<()>,
        session: u32,
        push: bool,
        limit: &'static str,
        text: String,
    ) -> bool {
        let peer = self.peer;
        self.metrics
            .shed(if push { "push" } else { "request" }, limit);
        if let Some(suppressed) = warn_allowed("overloaded", &peer.ip()) {
            let done = if push {
                "push dropped"
            } else {
                "request answered Overloaded"
            };
            tracing::warn!(%peer, limit, suppressed, reason = %text, "shedding load: {done}");
        }
        !push && answer(queue, self.config, session, Err(text)) > self.config.max_queued_bytes
    }
}

/// What a connection's read loop is told from outside: stop (`cancel`), and the node
/// drains (`goaway`: tell a bee peer, see [`GOAWAY`]).
struct Signals<'a> {
    cancel: &'a CancellationToken,
    goaway: &'a CancellationToken,
}

async fn read_loop(
    mut reader: Connection<tokio::net::tcp::OwnedReadHalf>,
    peer: SocketAddr,
    inbound: &dyn Inbound,
    queue: &WriteQueue<()>,
    config: &ListenerConfig,
    Signals { cancel, goaway }: Signals<'_>,
    metrics: &ListenerMetrics,
) -> End {
    let mut assembler = RequestAssembler::new(Limits {
        max_message: config.max_message,
        max_pending: config.max_pending_multipart,
        // One message of the largest size is always allowed.
        max_pending_bytes: config.max_inbound_bytes.max(config.max_message),
    });
    let mut flow = Inflow {
        peer,
        config,
        partial: HashMap::new(),
        expired: HashSet::new(),
        shed: HashSet::new(),
        metrics,
    };
    let mut later: FuturesUnordered<Pending> = FuturesUnordered::new();
    // Bytes held by requests being handled (`later`).
    let mut held = 0usize;
    let mut backlogged = false;
    let expire_every = (config.multipart_timeout / 4).max(Duration::from_millis(50));
    let mut expiry = tokio::time::interval(expire_every);
    expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let expiring = !config.multipart_timeout.is_zero();
    let mut auth = Responder::new(config.auth_secret.clone(), &config.auth_allow, peer.ip());
    let connected = Instant::now();
    // Partial-frame, idle and authentication timeouts, checked every quarter of the
    // shortest.
    let auth_timeout = if auth.done {
        Duration::ZERO
    } else {
        config.auth_timeout
    };
    let timeouts = [config.read_timeout, config.idle_timeout, auth_timeout]
        .into_iter()
        .filter(|t| !t.is_zero())
        .min();
    let mut check = tokio::time::interval(timeouts.map_or(Duration::from_secs(3600), |t| {
        (t / 4).clamp(Duration::from_millis(20), Duration::from_secs(1))
    }));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When traffic was last seen, refreshed at each check from `traffic` (set per
    // frame without reading the clock): the idle timeout may fire up to one check
    // period late, never early.
    let mut last_traffic = Instant::now();
    let mut traffic = false;
    let mut was_reading = true;
    // Whether the peer is a bee node (it speaks `goaway`), and whether it was told.
    let mut bee = false;
    let mut told_goaway = false;
    loop {
        queue.activity.set_outstanding(later.len());
        // Only a peer that does not read its answers stops the reading; past every other
        // bound, requests are answered `Overloaded` one by one (and heartbeats answered).
        let reading = !backlogged;
        if reading && !was_reading {
            // Not reading was our choice: the peer's partial frame gets its full time.
            reader.touch_partial();
        }
        was_reading = reading;
        let read = tokio::select! {
            biased;
            _ = cancel.cancelled() => return End::Cancelled,
            Some((bytes, done)) = later.next(), if !later.is_empty() => {
                held -= bytes;
                traffic = true;
                if let Some((session, result)) = done {
                    backlogged |= answer(queue, config, session, result) > config.max_queued_bytes;
                }
                continue;
            }
            _ = goaway.cancelled(), if bee && !told_goaway => {
                told_goaway = true;
                tracing::debug!(%peer, "telling the peer goaway");
                let mut g = queue.lock();
                if !g.closed {
                    encode_session0_error(&mut g.buf, GOAWAY.as_bytes());
                    backlogged |= queue.defer(g) > config.max_queued_bytes;
                }
                continue;
            }
            _ = queue.wait_below(config.max_queued_bytes), if backlogged => {
                backlogged = false;
                continue;
            }
            _ = expiry.tick(), if expiring && !flow.partial.is_empty() => {
                backlogged |= expire(&mut flow, &mut assembler, queue);
                if flow.expired.len() > EXPIRED_KEPT {
                    return End::Error(format!("more than {EXPIRED_KEPT} multi-part messages expired unfinished"));
                }
                continue;
            }
            _ = check.tick(), if timeouts.is_some() => {
                if std::mem::take(&mut traffic) {
                    last_traffic = Instant::now();
                }
                if !auth.done && !auth_timeout.is_zero() && connected.elapsed() >= auth_timeout {
                    return End::Refused(format!("did not authenticate within {auth_timeout:?}"));
                }
                if let Some(since) = reader.partial_since() {
                    if reading && !config.read_timeout.is_zero() && since.elapsed() >= config.read_timeout {
                        return End::Error(format!(
                            "part of a frame arrived and then nothing for {} ms (read_timeout)",
                            since.elapsed().as_millis()
                        ));
                    }
                } else if !config.idle_timeout.is_zero()
                    && last_traffic.elapsed() >= config.idle_timeout
                    && later.is_empty()
                    && flow.partial.is_empty()
                    && queue.lock().queued() == 0
                {
                    return End::Idle;
                }
                continue;
            }
            read = reader.read_frame(), if reading => read,
        };
        traffic = true;
        let body = match read {
            Ok(Some(body)) => body,
            Ok(None) if !auth.done => {
                return End::Refused("closed the connection before authenticating".into());
            }
            Ok(None) => {
                // Answers already queued are still flushed; ones not computed yet have
                // nobody to go to.
                if !later.is_empty() {
                    tracing::debug!(%peer, abandoned = later.len(), "peer closed with requests unanswered");
                }
                return End::Clean;
            }
            // EOF mid-frame, a socket error: the reason says which.
            Err(e) => return End::Error(e.to_string()),
        };
        let frame = match decode_request_frame(body) {
            Ok(frame) => frame,
            Err(e) => return End::Error(format!("undecodable request frame: {e}")),
        };
        if !auth.done && matches!(frame, RequestFrame::Header { .. }) {
            return End::Refused("multi-part message before authenticating".into());
        }
        let mut header = None;
        match &frame {
            RequestFrame::Header {
                session,
                push,
                total,
                ..
            } => {
                let permit = match flow.charge(*total as usize, "multi-part message") {
                    Ok(p) => p,
                    Err(shed) if shed.close => return End::Error(shed.text),
                    Err(shed) => {
                        // Its pieces are dropped as they come.
                        flow.shed.insert(*session);
                        backlogged |=
                            flow.shed(queue, *session, *push, "inbound_budget", shed.text);
                        continue;
                    }
                };
                flow.expired.remove(session);
                flow.shed.remove(session);
                header = Some((*session, *push, permit));
            }
            RequestFrame::Piece { session, last, .. } if flow.shed.contains(session) => {
                if *last {
                    flow.shed.remove(session);
                }
                continue;
            }
            RequestFrame::Piece { session, last, .. } if flow.expired.contains(session) => {
                if *last {
                    flow.expired.remove(session);
                }
                tracing::debug!(%peer, session, "piece of an expired multi-part message dropped");
                continue;
            }
            _ => {}
        }
        let fed = assembler.feed(frame);
        if let Some((session, push, permit)) = header {
            if matches!(fed, Ok(None)) {
                flow.partial.insert(
                    session,
                    Partial {
                        started: Instant::now(),
                        push,
                        permit,
                    },
                );
            }
        }
        let req = match fed {
            Ok(Some(req)) => req,
            Ok(None) => continue,
            Err(AssemblyError::SizeMismatch {
                session,
                announced,
                got,
            }) => {
                let push = flow.partial.remove(&session).is_some_and(|p| p.push);
                let warn = warn_allowed("size_mismatch", &peer.ip());
                if push {
                    if let Some(suppressed) = warn {
                        tracing::warn!(%peer, session, announced, got, suppressed, "multi-part push does not add up to its announced size; dropped");
                    }
                } else {
                    if let Some(suppressed) = warn {
                        tracing::warn!(%peer, session, announced, got, suppressed, "multi-part request does not add up to its announced size; answered {INVALID_LARGE_REQ:?}");
                    }
                    backlogged |= answer(queue, config, session, Err(INVALID_LARGE_REQ.into()))
                        > config.max_queued_bytes;
                }
                continue;
            }
            Err(e) => return End::Error(format!("bad multi-part request: {e}")),
        };
        // Whole or completed: nothing pending under this session any more; a completed
        // multi-part message keeps the budget its header took.
        let assembled = flow.partial.remove(&req.session).map(|p| p.permit);
        if !bee && matches!(&req.address, Address::Name(n) if n.starts_with(b"@bee_")) {
            bee = true;
        }
        // Node authentication (see `crate::auth`): handled here, never dispatched.
        if is_auth(&req.address) && !req.push {
            match auth.step(&req.payload) {
                AuthStep::Answer(result) => {
                    backlogged |=
                        answer(queue, config, req.session, result) > config.max_queued_bytes;
                    if auth.done {
                        tracing::debug!(%peer, "peer authenticated");
                    }
                }
                AuthStep::Refuse(text, why) => {
                    answer(queue, config, req.session, Err(text));
                    return End::Refused(why);
                }
            }
            continue;
        }
        if !auth.done {
            if !req.push {
                answer(queue, config, req.session, Err(AUTH_REQUIRED.into()));
            }
            return End::Refused(format!(
                "{} before authenticating",
                if req.push { "push" } else { "request" }
            ));
        }
        // A caller's heartbeat (see `crate::liveness`): answered here, never dispatched.
        if is_ping(&req) {
            if !req.push {
                backlogged |=
                    answer(queue, config, req.session, Ok(Bytes::new())) > config.max_queued_bytes;
            }
            continue;
        }
        metrics.requests.increment(1);
        let session = req.session;
        let push = req.push;
        let size = req.payload.len();
        // A request past this connection's own bounds is shed before it is charged.
        if !push && !later.is_empty() {
            let limit = if later.len() >= config.max_outstanding {
                Some((
                    "outstanding",
                    format!("{} requests of this connection unanswered", later.len()),
                ))
            } else if held + size > config.max_inbound_bytes {
                Some((
                    "connection_bytes",
                    format!("{held} bytes of this connection's requests held"),
                ))
            } else {
                None
            };
            if let Some((limit, why)) = limit {
                let text =
                    format!("{OVERLOADED}: {why}; a request of {size} bytes refused, retry later");
                backlogged |= flow.shed(queue, session, push, limit, text);
                continue;
            }
        }
        // The request's bytes are charged from here until the last copy of its payload
        // is dropped and its answer is computed (see `Permit::carry`): wherever the
        // service keeps it, whatever happens to this connection.
        let copy = assembled.is_none();
        let permit = match assembled {
            Some(p) => p,
            None => match flow.charge(size, if push { "push" } else { "request" }) {
                Ok(p) => p,
                Err(shed) if shed.close => return End::Error(shed.text),
                Err(shed) => {
                    backlogged |= flow.shed(queue, session, push, "inbound_budget", shed.text);
                    continue;
                }
            },
        };
        let mut req = req;
        if let Some(permit) = permit {
            // A whole request is a slice of the read buffer: copied, so that what it
            // keeps alive is what it is charged.
            req.payload = permit.carry(std::mem::take(&mut req.payload), copy);
        }
        let keep = req.payload.clone();
        // Dispatch in arrival order, while answers of earlier requests keep flowing.
        let dispatched = {
            let dispatch = inbound.dispatch(req);
            tokio::pin!(dispatch);
            loop {
                tokio::select! {
                    biased;
                    d = &mut dispatch => break d,
                    _ = cancel.cancelled() => return End::Cancelled,
                    Some((bytes, done)) = later.next(), if !later.is_empty() => {
                        held -= bytes;
                        if let Some((s, result)) = done {
                            backlogged |= answer(queue, config, s, result) > config.max_queued_bytes;
                        }
                    }
                }
            }
        };
        match dispatched {
            Dispatched::Ready(result) if !push => {
                backlogged |= answer(queue, config, session, result) > config.max_queued_bytes;
            }
            Dispatched::Ready(Err(e)) => {
                tracing::debug!(%peer, error = %e, "push failed on the receiving side");
            }
            Dispatched::Ready(Ok(_)) | Dispatched::NoReply => {}
            Dispatched::Later(fut) => {
                // The request's bytes stay held until its answer is computed.
                held += size;
                later.push(
                    fut.map(move |r| {
                        drop(keep);
                        (size, (!push).then_some((session, r)))
                    })
                    .boxed(),
                );
            }
        }
    }
}

/// Expired multi-part sessions remembered per connection (their late pieces are dropped);
/// past this many the connection is closed.
const EXPIRED_KEPT: usize = 1024;

/// Drop the multi-part messages older than the timeout: their budget is given back, a
/// request is answered [`MULTIPART_EXPIRED`], late pieces will be dropped. Returns whether
/// the write queue is now past its limit.
fn expire(flow: &mut Inflow<'_>, assembler: &mut RequestAssembler, queue: &WriteQueue<()>) -> bool {
    let timeout = flow.config.multipart_timeout;
    let old: Vec<u32> = flow
        .partial
        .iter()
        .filter(|(_, p)| p.started.elapsed() >= timeout)
        .map(|(s, _)| *s)
        .collect();
    let mut backlogged = false;
    for session in old {
        let Some(p) = flow.partial.remove(&session) else {
            continue;
        };
        // A whole message under the same session ends the partial one; it is not
        // dispatched (the assembler's only way to drop a partial message).
        let _ = assembler.feed(RequestFrame::Whole(Request {
            address: Address::Id(0),
            session,
            push: true,
            payload: Bytes::new(),
        }));
        flow.expired.insert(session);
        flow.metrics.expired.increment(1);
        let peer = flow.peer;
        if let Some(suppressed) = warn_allowed("multipart_expired", &peer.ip()) {
            tracing::warn!(%peer, session, push = p.push, ?timeout, suppressed, "multi-part message not finished in time; dropped");
        }
        if !p.push {
            backlogged |= answer(queue, flow.config, session, Err(MULTIPART_EXPIRED.into()))
                > flow.config.max_queued_bytes;
        }
    }
    backlogged
}

/// Whether `req` is a heartbeat call to [`PING_NAME`].
fn is_ping(req: &Request) -> bool {
    matches!(&req.address, Address::Name(n) if n.as_ref() == PING_NAME.as_bytes())
}

/// Queue the response of `session`; returns the bytes now waiting to be written.
fn answer(
    queue: &WriteQueue<()>,
    config: &ListenerConfig,
    session: u32,
    result: Result<Bytes, String>,
) -> usize {
    let too_large;
    let result: Result<&[u8], &[u8]> = match &result {
        Ok(reply) if reply.len() > config.max_message => {
            too_large = format!(
                "reply of {} bytes is larger than the maximum of {} bytes",
                reply.len(),
                config.max_message
            );
            tracing::warn!(session, %too_large, "reply not sent");
            Err(too_large.as_bytes())
        }
        Ok(reply) => Ok(reply),
        Err(text) => Err(text.as_bytes()),
    };
    let mut g = queue.lock();
    if g.closed {
        return 0;
    }
    let mark = g.buf.len();
    if let Err(e) = encode_response(&mut g.buf, session, result) {
        g.buf.truncate(mark);
        let text = format!("cannot encode reply: {e}");
        tracing::warn!(session, %text, "reply not sent");
        if encode_response(&mut g.buf, session, Err(text.as_bytes())).is_err() {
            g.buf.truncate(mark);
        }
    }
    queue.defer(g)
}
