//! The listening side: a [`Listener`] accepts peers and runs one agent per connection
//! (skynet's clusteragent).
//!
//! Per accepted connection:
//! - the connection task reads frames ([`Connection`]), decodes them
//!   ([`decode_request_frame`](bee_codec::cluster::decode_request_frame)), reassembles
//!   multi-part requests with a bounded
//!   [`RequestAssembler`](bee_codec::cluster::RequestAssembler), and hands each complete request to [`Inbound::dispatch`]
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
//! Heartbeats: a request to [`PING_NAME`](crate::PING_NAME) (`@bee_ping`) is answered
//! here with an empty
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
//! dropped — the permit travels inside the payload ([`Permit::carry`](crate::Permit::carry)) into the
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
//! Hand-off: a node handing over to its successor (hot update) hands it the
//! connections of peers that cannot be told goaway (stock skynet): [`Handoff::start`]
//! makes each such connection stop reading at a frame boundary, answer everything it
//! read, flush, and leave its socket — with the bytes read but not yet taken — in
//! [`Handoff::take`], for the successor's listener to go on with
//! ([`Handoff::adopt`]). The peer sees one connection that never closed: nothing it
//! sent is lost or answered twice.
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
//!
//! ## Layout
//! - this module: the [`Listener`] and its settings, accepting (the connection limit,
//!   running out of descriptors, peers accepted while closing), and serving one
//!   connection (its writer task, how it ended);
//! - `agent`: the agent of one connection, reading and dispatching, one step per
//!   concern (authentication gate, heartbeats, budgets, multi-part expiry, timeouts,
//!   back-pressure, dispatch);
//! - `inflow`: the inbound bytes of a connection — charging the node's budget, shedding
//!   what does not fit, multi-part expiry, queueing answers.

mod agent;
mod inflow;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bee_codec::cluster::Request;
use bee_codec::frame::MAX_BODY;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::auth::AuthSecret;
use crate::budget::ByteBudget;
use crate::busy_poll::PollerCap;
use crate::connection::{run_writer, Connection, WriteQueue, WriterEnd};
use crate::error::TransportError;
use crate::telemetry::ListenerMetrics;
use crate::throttle::warn_allowed;

use agent::{Agent, End, Signals};

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
    /// How many connections may busy-poll at once, shared with every channel and listener
    /// given a clone (default: the process's cap, [`PollerCap::process`]).
    pub busy_poll_cap: PollerCap,
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
    /// Node-wide budget of outbound bytes (usually the one the node's channels share):
    /// answers are held against it from when they are queued until they are written
    /// (default `None`). An answer that does not fit is replaced by an [`OVERLOADED`]
    /// error answer, so a caller that stops reading cannot pile up the node's memory.
    pub outbound_budget: Option<ByteBudget>,
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
    /// connections of peers that vanished do not hold file descriptors forever: answers
    /// not acknowledged within it close the connection.
    pub liveness: Duration,
    /// How long an accepted connection may be silent before keepalive probes start
    /// (default 60 s); one whose probes go unanswered is closed within `liveness` of the
    /// first. Longer than `liveness` on purpose: an idle connection outlives a network
    /// cut shorter than this, as stock skynet's do, instead of being closed unseen by a
    /// skynet peer whose next call would then meet a reset.
    pub idle_probe: Duration,
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
            busy_poll_cap: PollerCap::process(),
            max_inbound_bytes: 32 * 1024 * 1024,
            inbound_budget: None,
            outbound_budget: None,
            multipart_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::ZERO,
            liveness: Duration::from_secs(10),
            idle_probe: Duration::from_secs(60),
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
    handoff: Handoff,
    /// Connections another process handed off, to serve ([`Handoff::adopt`]).
    adopted: mpsc::UnboundedReceiver<HandedConnection>,
}

/// A connection handed off by a listener (see the module doc): the socket, its peer,
/// and the bytes already read from it that no request was made of yet.
#[derive(Debug)]
pub struct HandedConnection {
    /// The connected socket (non-blocking).
    pub stream: std::net::TcpStream,
    /// Who is on the other end.
    pub peer: SocketAddr,
    /// Read from the socket but not yet taken: whole frames and the start of one.
    pub buffered: Bytes,
}

/// The hand-off side of one [`Listener`] (cloned freely): start handing off, take what
/// was handed off, or give the listener connections another process handed off.
#[derive(Debug, Clone)]
pub struct Handoff {
    start: CancellationToken,
    handed: Arc<Mutex<Vec<HandedConnection>>>,
    /// Connections handing off, not yet in `handed`.
    pending: Arc<AtomicUsize>,
    adopt: mpsc::UnboundedSender<HandedConnection>,
}

/// One connection on its way to [`Handoff::take`]: counted in [`Handoff::pending`]
/// until dropped.
pub(super) struct Handing(Arc<AtomicUsize>);

impl Drop for Handing {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Handoff {
    fn new() -> (Handoff, mpsc::UnboundedReceiver<HandedConnection>) {
        let (adopt, adopted) = mpsc::unbounded_channel();
        let h = Handoff {
            start: CancellationToken::new(),
            handed: Arc::default(),
            pending: Arc::default(),
            adopt,
        };
        (h, adopted)
    }

    /// Hand off every open connection whose peer is not told goaway (not a bee peer):
    /// each is handed once every request it read is answered and flushed.
    pub fn start(&self) {
        self.start.cancel();
    }

    /// Connections that started handing off and are not in [`Handoff::take`] yet (an
    /// answer still being computed, or being written).
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    pub(super) fn begin(&self) -> Handing {
        self.pending.fetch_add(1, Ordering::AcqRel);
        Handing(self.pending.clone())
    }

    pub(super) fn started(&self) -> &CancellationToken {
        &self.start
    }

    /// The connections handed off so far (each returned once).
    pub fn take(&self) -> Vec<HandedConnection> {
        std::mem::take(&mut *self.handed.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Serve `conn` (handed off by another process's listener) on this listener, from
    /// its buffered bytes on. Err gives it back when the listener stopped.
    pub fn adopt(&self, conn: HandedConnection) -> Result<(), HandedConnection> {
        self.adopt.send(conn).map_err(|e| e.0)
    }

    fn put(&self, conn: HandedConnection) {
        self.handed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
    }
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
        let (handoff, adopted) = Handoff::new();
        Ok(Listener {
            listener,
            local,
            config,
            reserve,
            open: Arc::new(AtomicUsize::new(0)),
            unbound: Unbound::default(),
            handoff,
            adopted,
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
        let (handoff, adopted) = Handoff::new();
        Ok(Listener {
            listener,
            local,
            config,
            reserve: std::fs::File::open("/dev/null").ok(),
            open: Arc::new(AtomicUsize::new(0)),
            unbound: Unbound::default(),
            handoff,
            adopted,
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

    /// The hand-off side of this listener (see the module doc).
    pub fn handoff(&self) -> Handoff {
        self.handoff.clone()
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
            handoff,
            mut adopted,
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
                Some(conn) = adopted.recv() => {
                    let HandedConnection { stream, peer, buffered } = conn;
                    match stream.set_nonblocking(true).and_then(|()| TcpStream::from_std(stream)) {
                        Ok(stream) => {
                            tracing::info!(%local, %peer, buffered = buffered.len(), "serving a connection handed over by the previous process");
                            spawn_serve(&mut tasks, stream, peer, buffered, &*acceptor, &config, &shutdown, &closed, &handoff, &open, &metrics);
                        }
                        Err(e) => tracing::warn!(%local, %peer, error = %e, "cannot serve a connection handed over by the previous process"),
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
                        spawn_serve(&mut tasks, stream, peer, Bytes::new(), &*acceptor, &config, &shutdown, &closed, &handoff, &open, &metrics);
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
                        &mut tasks,
                        stream,
                        peer,
                        Bytes::new(),
                        &*acceptor,
                        &config,
                        &shutdown,
                        &closed,
                        &handoff,
                        &open,
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
    buffered: Bytes,
    acceptor: &dyn Acceptor,
    config: &ListenerConfig,
    shutdown: &CancellationToken,
    goaway: &CancellationToken,
    handoff: &Handoff,
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
    let handoff = handoff.clone();
    tasks.spawn(async move {
        let _guard = guard;
        let signals = ServeSignals {
            shutdown: token,
            goaway,
            handoff,
        };
        serve(stream, peer, buffered, inbound, config, signals, metrics).await
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

/// What a connection task is told from outside (see [`Signals`]).
struct ServeSignals {
    shutdown: CancellationToken,
    goaway: CancellationToken,
    handoff: Handoff,
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    buffered: Bytes,
    inbound: Arc<dyn Inbound>,
    config: ListenerConfig,
    ServeSignals {
        shutdown,
        goaway,
        handoff,
    }: ServeSignals,
    metrics: Arc<ListenerMetrics>,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
    if let Err(e) = crate::liveness::tune_accepted(&stream, config.liveness, config.idle_probe) {
        tracing::debug!(%peer, error = %e, "cannot set TCP keepalive / TCP_USER_TIMEOUT");
    }
    let (rd, wr) = stream.into_split();
    let queue = Arc::new(
        WriteQueue::new(wr, ())
            .with_metrics(metrics.bytes_out.clone(), None)
            .charge_to(config.outbound_budget.clone()),
    );
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
    let reader = Connection::new(rd, MAX_BODY)
        .busy_poll(config.busy_poll, queue.activity.clone())
        .poller_cap(config.busy_poll_cap.clone())
        .count_bytes(metrics.bytes_in.clone())
        .with_buffered(&buffered);
    drop(buffered);
    let end = Agent::new(reader, peer, &*inbound, &queue, &config, &metrics)
        .run(Signals {
            cancel: &cancel,
            goaway: &goaway,
            handoff: &handoff,
        })
        .await;
    let end = match end {
        End::Handoff(reader, handing) => {
            queue.close();
            match hand_off(*reader, queue, writer, peer).await {
                Ok(conn) => {
                    metrics.closed("handoff");
                    tracing::debug!(%peer, buffered = conn.buffered.len(), "connection handed to the successor");
                    handoff.put(conn);
                    drop(handing);
                    inbound.closed("handed over to the successor");
                    return;
                }
                Err(reason) => {
                    metrics.closed("error");
                    tracing::warn!(%peer, %reason, "cannot hand the connection to the successor; closing it");
                    inbound.closed(&reason);
                    return;
                }
            }
        }
        end => end,
    };
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
        End::Handoff(..) => unreachable!("handled above"),
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

/// The socket of a connection whose agent handed it off, once its answers are written:
/// the two halves together again, without shutting either direction.
async fn hand_off(
    reader: Connection<tokio::net::tcp::OwnedReadHalf>,
    queue: Arc<WriteQueue<()>>,
    writer: tokio::task::JoinHandle<WriterEnd>,
    peer: SocketAddr,
) -> Result<HandedConnection, String> {
    match writer.await {
        Ok(WriterEnd::Flushed) => {}
        Ok(WriterEnd::Failed(e)) => return Err(format!("write failed: {e}")),
        Ok(WriterEnd::Cancelled) => return Err("listener shutting down".into()),
        Err(e) => return Err(format!("writer task failed: {e}")),
    }
    let queue =
        Arc::try_unwrap(queue).map_err(|_| "the write queue is still shared".to_string())?;
    let wr = queue
        .into_write_half()
        .ok_or_else(|| "the write half is gone".to_string())?;
    let (rd, buffered) = reader.into_parts();
    let stream = rd
        .reunite(wr)
        .map_err(|e| format!("cannot put the socket together: {e}"))?;
    let stream = stream
        .into_std()
        .map_err(|e| format!("cannot take the socket from the runtime: {e}"))?;
    Ok(HandedConnection {
        stream,
        peer,
        buffered,
    })
}

/// The error answered for a multi-part request that did not complete within
/// [`ListenerConfig::multipart_timeout`].
pub const MULTIPART_EXPIRED: &str = "multi-part request expired before its last piece";
