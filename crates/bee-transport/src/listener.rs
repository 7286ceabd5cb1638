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
//! Back-pressure: at most `max_outstanding` unanswered requests per connection and at most
//! `max_queued_bytes` of unwritten responses; past either, the connection stops reading
//! until work drains.
//!
//! Trouble on one connection never affects the others: an undecodable frame, a multi-part
//! message past `max_message`, too many half-assembled messages, or EOF in the middle of a
//! frame closes THAT connection with a warning naming the peer and the reason, and
//! [`Inbound::closed`] is told why. A multi-part request whose pieces do not add up to the
//! announced size is answered `Invalid large req`, as stock skynet does.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use bee_codec::cluster::{
    decode_request_frame, encode_response, Address, AssemblyError, Limits, Request,
    RequestAssembler, RequestFrame,
};
use bee_codec::frame::MAX_BODY;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::connection::{run_writer, Connection, WriteQueue, WriterEnd};
use crate::error::TransportError;
use crate::liveness::PING_NAME;

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
    /// Unanswered requests per connection before it stops reading (default 65536).
    pub max_outstanding: usize,
    /// Bytes of responses waiting to be written per connection before it stops reading
    /// (default 16 MiB).
    pub max_queued_bytes: usize,
    /// How long a connection's reader busy-polls after the last traffic before it parks
    /// (default [`crate::channel::DEFAULT_BUSY_POLL`]; zero turns it off).
    pub busy_poll: std::time::Duration,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            max_message: 65 * 1024 * 1024,
            max_pending_multipart: 64,
            max_outstanding: 65536,
            max_queued_bytes: 16 * 1024 * 1024,
            busy_poll: crate::channel::DEFAULT_BUSY_POLL,
        }
    }
}

/// A bound TCP listener; [`Listener::run`] serves it.
#[derive(Debug)]
pub struct Listener {
    listener: TcpListener,
    local: SocketAddr,
    config: ListenerConfig,
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
        Ok(Listener {
            listener,
            local,
            config,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Accept peers until `shutdown` is cancelled, one task per connection. On cancel it
    /// stops accepting, closes the listening socket and every connection, and returns
    /// once all connection tasks have ended.
    pub async fn run(self, acceptor: Arc<dyn Acceptor>, shutdown: CancellationToken) {
        let Listener {
            listener,
            local,
            config,
        } = self;
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = done {
                        tracing::error!(%local, error = %e, "connection task failed");
                    }
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        tracing::debug!(%local, %peer, "peer connected");
                        let inbound = acceptor.accept(peer);
                        tasks.spawn(serve(stream, peer, inbound, config.clone(), shutdown.child_token()));
                    }
                    Err(e) => {
                        // E.g. out of file descriptors: wait a little instead of spinning.
                        tracing::warn!(%local, error = %e, "accept failed");
                        tokio::select! {
                            _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                            _ = shutdown.cancelled() => break,
                        }
                    }
                },
            }
        }
        drop(listener);
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                tracing::error!(%local, error = %e, "connection task failed");
            }
        }
        tracing::debug!(%local, "listener stopped");
    }
}

/// How the read loop of a connection ended.
enum End {
    /// The peer closed cleanly between frames (answers not computed yet are dropped).
    Clean,
    /// The connection is closed for this reason (logged as a warning).
    Error(String),
    /// The connection's token was cancelled (shutdown or write failure).
    Cancelled,
}

/// A running `Later` answer: `None` for pushes (run for their effect, nothing to send).
type Pending = BoxFuture<'static, Option<(u32, Result<Bytes, String>)>>;

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    inbound: Arc<dyn Inbound>,
    config: ListenerConfig,
    shutdown: CancellationToken,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
    let (rd, wr) = stream.into_split();
    let queue = Arc::new(WriteQueue::new(wr, ()));
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
        Connection::new(rd, MAX_BODY).busy_poll(config.busy_poll, queue.activity.clone()),
        peer,
        &*inbound,
        &queue,
        &config,
        &cancel,
    )
    .await;
    let reason = match end {
        End::Clean => {
            tracing::debug!(%peer, "peer closed the connection");
            queue.close();
            "peer closed the connection".to_string()
        }
        End::Error(reason) => {
            tracing::warn!(%peer, %reason, "closing connection");
            cancel.cancel();
            reason
        }
        End::Cancelled => {
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
                tracing::warn!(%peer, reason = %r, "closing connection");
                r
            }
            _ => "connection closed".to_string(),
        }
    } else {
        reason
    };
    inbound.closed(&reason);
}

async fn read_loop(
    mut reader: Connection<tokio::net::tcp::OwnedReadHalf>,
    peer: SocketAddr,
    inbound: &dyn Inbound,
    queue: &WriteQueue<()>,
    config: &ListenerConfig,
    cancel: &CancellationToken,
) -> End {
    let mut assembler = RequestAssembler::new(Limits {
        max_message: config.max_message,
        max_pending: config.max_pending_multipart,
        ..Limits::default()
    });
    // Sessions of multi-part pushes being assembled (a size mismatch is answered only
    // for requests).
    let mut multipart_pushes: HashSet<u32> = HashSet::new();
    let mut later: FuturesUnordered<Pending> = FuturesUnordered::new();
    let mut backlogged = false;
    loop {
        queue.activity.set_outstanding(later.len());
        let read = tokio::select! {
            biased;
            _ = cancel.cancelled() => return End::Cancelled,
            Some(done) = later.next(), if !later.is_empty() => {
                if let Some((session, result)) = done {
                    backlogged |= answer(queue, config, session, result) > config.max_queued_bytes;
                }
                continue;
            }
            _ = queue.wait_below(config.max_queued_bytes), if backlogged => {
                backlogged = false;
                continue;
            }
            read = reader.read_frame(), if !backlogged && later.len() < config.max_outstanding => read,
        };
        let body = match read {
            Ok(Some(body)) => body,
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
        if let RequestFrame::Header { session, push, .. } = &frame {
            if *push {
                multipart_pushes.insert(*session);
            } else {
                multipart_pushes.remove(session);
            }
        }
        let req = match assembler.feed(frame) {
            Ok(Some(req)) => req,
            Ok(None) => continue,
            Err(AssemblyError::SizeMismatch {
                session,
                announced,
                got,
            }) => {
                if multipart_pushes.remove(&session) {
                    tracing::warn!(%peer, session, announced, got, "multi-part push does not add up to its announced size; dropped");
                } else {
                    tracing::warn!(%peer, session, announced, got, "multi-part request does not add up to its announced size; answered {INVALID_LARGE_REQ:?}");
                    backlogged |= answer(queue, config, session, Err(INVALID_LARGE_REQ.into()))
                        > config.max_queued_bytes;
                }
                continue;
            }
            Err(e) => return End::Error(format!("bad multi-part request: {e}")),
        };
        // Whole or completed: nothing pending under this session any more.
        multipart_pushes.remove(&req.session);
        // A caller's heartbeat (see `crate::liveness`): answered here, never dispatched.
        if is_ping(&req) {
            if !req.push {
                backlogged |=
                    answer(queue, config, req.session, Ok(Bytes::new())) > config.max_queued_bytes;
            }
            continue;
        }
        let session = req.session;
        let push = req.push;
        // Dispatch in arrival order, while answers of earlier requests keep flowing.
        let dispatched = {
            let dispatch = inbound.dispatch(req);
            tokio::pin!(dispatch);
            loop {
                tokio::select! {
                    biased;
                    d = &mut dispatch => break d,
                    _ = cancel.cancelled() => return End::Cancelled,
                    Some(done) = later.next(), if !later.is_empty() => {
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
            Dispatched::Later(fut) if !push => {
                later.push(fut.map(move |r| Some((session, r))).boxed());
            }
            Dispatched::Later(fut) => {
                later.push(fut.map(|_| None).boxed());
            }
        }
    }
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
