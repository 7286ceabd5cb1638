//! The sending side: one [`Channel`] per remote node (skynet's clustersender).
//!
//! A channel opens its TCP connection lazily on the first call or push (with
//! `TCP_NODELAY`), keeps a session table mapping each outstanding call's session to the
//! caller waiting for it, and reconnects on demand after the connection dropped.
//!
//! Per connection there are two tasks:
//! - the **writer** (`run_writer`) writes what callers queued, everything queued so far
//!   as one batch, so bursts of calls and pushes leave in few syscalls; except that a
//!   call issued while no other call waits for its reply, with nothing queued and no
//!   write in progress (the latency-bound case: one call at a time), is written straight
//!   to the socket by the caller (non-blocking, no lock held during the syscall), saving
//!   the hop to the writer task; only what does not fit is left to the writer;
//! - the **reader** decodes response frames, reassembles multi-part responses
//!   ([`ResponseAssembler`]) and wakes the waiting callers, taking the session-table lock
//!   once per batch of frames read together.
//!
//! A caller allocates its session, records itself in the session table and appends its
//! encoded frames to the write buffer under ONE short lock, so frames leave in exactly
//! the order calls and pushes were issued — also for multi-part messages, which stock
//! skynet lets smaller messages overtake.
//!
//! Failure handling: a dropped connection fails every waiting call with
//! [`TransportError::NodeDown`] at once; a malformed response frame closes the connection
//! and fails them with [`TransportError::Protocol`]; a failed connect puts the channel into
//! back-off during which calls fail fast with [`TransportError::Connect`]: `backoff_min`
//! after a refused connect (the node is down or restarting, and reached again within
//! `backoff_min` of listening), doubling up to `backoff_max` after connects that time out
//! or fail otherwise. Every limit is a bound: too many calls waiting or too
//! many bytes queued (on this channel: `max_queued_bytes`; on all channels of the node:
//! [`ChannelConfig::outbound_budget`]) give [`TransportError::Overloaded`] at once instead
//! of growing memory, with one warning per incident naming the node. A call that stops
//! waiting (timed out, or its future dropped) while its request is still queued behind
//! others is left out: the request is never written.
//!
//! Dead peers are detected within [`ChannelConfig::liveness`]; see [`crate::liveness`].
//!
//! Riding through a restart ([`ChannelConfig::ride_through`], off by default): while the
//! peer is away — connects refused, timing out or backing off — calls wait for it (up to
//! the bound and their own timeout) instead of failing at once, and pushes are *parked*
//! in a byte-bounded queue ([`ChannelConfig::max_parked_bytes`], also charged to the
//! node's outbound budget) and accepted; one flusher task per channel sends them, in
//! order, as soon as a connection is back, and calls issued meanwhile wait behind them.
//! A peer away for longer than the bound makes calls fail with the connect error and the
//! parked pushes be refused: counted ([`ChannelStats::pushes_refused`], the
//! `ride_through` rejection metric) and logged with their number and bytes, never
//! dropped silently. Calls whose request was already written when the connection died are
//! not re-sent (the peer may have handled them): they fail with `NodeDown`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bee_codec::cluster::{
    decode_response_frame, encode_push, encode_request, is_multipart_request, next_session,
    Address, AssemblyError, Limits, Response, ResponseAssembler, ResponseFrame,
};
use bee_codec::frame::MAX_BODY;
use bytes::Bytes;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::auth::{initiate, AuthSecret};
use crate::budget::{ByteBudget, Permit};
use crate::connection::{now_ns, run_writer, Connection, ReadError, WriteQueue, WriterEnd};
use crate::error::TransportError;
use crate::listener::{GOAWAY, OVERLOADED};
use crate::liveness::{dial, tune_socket, DialError, PING_NAME};
use crate::telemetry::ChannelMetrics;
use crate::throttle::warn_allowed;

/// Settings of a [`Channel`].
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// Timeout of a call when the caller gives none (default 30 s).
    pub call_timeout: Duration,
    /// How long opening the connection may take (default 3 s).
    pub connect_timeout: Duration,
    /// Calls waiting for replies on one channel; past it a call fails with
    /// [`TransportError::Overloaded`] (default 65536).
    pub max_in_flight: usize,
    /// Bytes waiting to be written; past it a call or push fails with
    /// [`TransportError::Overloaded`] (default 256 MiB).
    pub max_queued_bytes: usize,
    /// Delay after a failed connect before the next attempt (default 50 ms); calls
    /// meanwhile fail at once. After a refused connect the delay stays at this, so a
    /// restarted node is reached within `backoff_min` of listening again.
    pub backoff_min: Duration,
    /// Longest delay between connect attempts (default 500 ms): the delay doubles up to
    /// this after connects that fail fast otherwise than refused (e.g. unreachable). A
    /// connect that timed out is followed by `backoff_min` only, as the attempt itself
    /// took `connect_timeout`.
    pub backoff_max: Duration,
    /// Largest request payload sent and response payload accepted (default 65 MiB).
    pub max_message: usize,
    /// How long the reader busy-polls the socket after the last traffic before it parks
    /// (default zero: off — a library does not spin unless asked; [`DEFAULT_BUSY_POLL`]
    /// is what a `bee run` node uses). Trades CPU time while traffic flows for lower
    /// round-trip latency; see [`crate::connection`].
    pub busy_poll: Duration,
    /// Bound on noticing a dead peer (default 4 s; zero turns dead-peer detection off):
    /// `TCP_USER_TIMEOUT` and keepalive on the socket, and how long an unanswered
    /// heartbeat may stay unanswered (see [`crate::liveness`]). Calls waiting on a peer
    /// declared dead fail with [`TransportError::PeerUnreachable`].
    pub liveness: Duration,
    /// Send a heartbeat call to [`crate::liveness::PING_NAME`] after this long without
    /// receiving anything (default 1 s; zero: no application heartbeat, only TCP).
    pub heartbeat: Duration,
    /// This many calls in a row timing out on one connection with nothing received in
    /// between recycle the connection (default 3; zero: never).
    pub max_timeouts: u32,
    /// While dialling, start another connection attempt this often if the earlier ones
    /// have not connected yet (default 500 ms; zero: one attempt per dial), so a peer
    /// whose network heals mid-dial is reached within about this long.
    pub redial: Duration,
    /// Node-wide budget for bytes queued for writing, shared by every channel given a
    /// clone (default `None`: only `max_queued_bytes` per channel). Past it a call or push
    /// fails at once with [`TransportError::Overloaded`].
    pub outbound_budget: Option<ByteBudget>,
    /// Node-wide budget for bytes of half-assembled multi-part responses (charged the
    /// size their first frame announces; default `None`). A response that does not fit
    /// closes the connection with [`TransportError::Overloaded`].
    pub inbound_budget: Option<ByteBudget>,
    /// Shared secret for node authentication (default `None`: none). When set, every new
    /// connection runs the exchange of [`crate::auth`] before anything else is written,
    /// within `connect_timeout`, and the peer must prove the secret too; otherwise calls
    /// fail with [`TransportError::AuthFailed`].
    pub auth_secret: Option<AuthSecret>,
    /// How long calls and pushes wait for a peer that is away (its connects refused,
    /// timing out or backing off) before failing — long enough for a node to restart or
    /// hand over (default zero: fail at once, as stock skynet). See the module doc.
    pub ride_through: Duration,
    /// Bytes of pushes parked while the peer is away (default 16 MiB); past it a push
    /// fails at once with [`TransportError::Overloaded`].
    pub max_parked_bytes: usize,
}

/// The busy-poll window a `bee run` node gives its channels and listeners unless its
/// config says otherwise (the library's own default is zero: no polling).
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(100);

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            call_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(3),
            max_in_flight: 65536,
            max_queued_bytes: 256 * 1024 * 1024,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
            max_message: 65 * 1024 * 1024,
            busy_poll: Duration::ZERO,
            liveness: Duration::from_secs(4),
            heartbeat: Duration::from_secs(1),
            max_timeouts: 3,
            redial: Duration::from_millis(500),
            outbound_budget: None,
            inbound_budget: None,
            auth_secret: None,
            ride_through: Duration::ZERO,
            max_parked_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Counters of a [`Channel`] (for admin commands and tests).
#[derive(Debug, Clone, Default)]
pub struct ChannelStats {
    /// A connection is open now.
    pub connected: bool,
    /// Calls waiting for their replies now.
    pub in_flight: usize,
    /// Connections opened after the first one.
    pub reconnects: u64,
    /// Calls issued.
    pub calls: u64,
    /// Pushes issued.
    pub pushes: u64,
    /// Calls and pushes that returned an error.
    pub failures: u64,
    /// Bytes queued on the connection, not yet written.
    pub queued_bytes: usize,
    /// Pushes parked now, waiting for the peer to come back (calls waiting for it are
    /// not counted here but in `in_flight` once sent).
    pub parked: usize,
    /// Pushes accepted while the peer was away and refused later, because it stayed away
    /// longer than `ride_through` or the channel was closed (each incident is logged).
    pub pushes_refused: u64,
}

/// The channel to one remote node: a lazily opened TCP connection, a session table,
/// reconnect on demand. Cheap to clone; clones share the connection. Dropping the last
/// clone closes the connection.
///
/// Ordering: frames of one connection leave in the order the calls and pushes were
/// issued (a call or push is queued before its future first returns `Pending`), including
/// multi-part messages.
#[derive(Clone)]
pub struct Channel {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("node", &self.shared.node)
            .field("addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}

struct Shared {
    node: String,
    addr: String,
    config: ChannelConfig,
    state: Mutex<State>,
    /// One connect attempt at a time; later callers wait for its outcome.
    connect_gate: tokio::sync::Mutex<()>,
    calls: AtomicU64,
    pushes: AtomicU64,
    failures: AtomicU64,
    reconnects: AtomicU64,
    metrics: Arc<ChannelMetrics>,
    /// Pushes waiting for the peer to come back (lock order: `parked`, then a
    /// connection's queue lock; never `state` while holding `parked`).
    parked: Mutex<Parked>,
    /// `parked.flushing`, readable without the lock: every call and push of a channel
    /// with ride-through checks it, and it is almost always false. Set and cleared under
    /// the `parked` lock.
    flushing: AtomicBool,
    pushes_refused: AtomicU64,
}

#[derive(Default)]
struct State {
    closed: bool,
    conn: Option<Arc<Conn>>,
    backoff: Option<Backoff>,
    connects: u64,
    /// When the peer was first found away (a failed connect) since the last connection.
    away_since: Option<Instant>,
}

/// Calls and pushes issued while the peer was away, in the order they were issued.
#[derive(Default)]
struct Parked {
    queue: std::collections::VecDeque<ParkedItem>,
    bytes: usize,
    /// A flusher task owns the queue; new calls and pushes go behind it.
    flushing: bool,
}

struct ParkedItem {
    to: Address,
    payload: Bytes,
    /// A call's waiter and where the flusher records the session it got (so a caller
    /// that stops waiting can take it out of the session table); none for a push.
    call: Option<(Waiter, Arc<SentAs>)>,
    _permit: Option<Permit>,
}

/// Where a parked call went out: its connection and session.
#[derive(Default)]
struct SentAs(Mutex<Option<(Weak<Conn>, u32)>>);

struct Backoff {
    until: Instant,
    delay: Duration,
    reason: String,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(conn) = state.conn.take() {
            conn.fail(TransportError::Closed {
                node: self.node.clone(),
            });
        }
    }
}

type Waiter = oneshot::Sender<Result<Bytes, TransportError>>;

/// The session table, kept under the write queue's lock.
struct Sessions {
    next: u32,
    pending: HashMap<u32, Waiter>,
}

/// One open connection of a channel.
struct Conn {
    node: String,
    alive: AtomicBool,
    /// Calls in a row that timed out with nothing received since (reset by the reader).
    timeouts: AtomicU32,
    /// A limit refused a message and the incident was logged; cleared by the next
    /// message queued (so one line per incident).
    overloaded: AtomicBool,
    queue: WriteQueue<Sessions>,
    cancel: CancellationToken,
    channel: Weak<Shared>,
    metrics: Arc<ChannelMetrics>,
}

/// Why a message could not be queued on a connection.
enum Refused {
    /// The connection died; try a fresh one.
    Dead,
    /// A limit or an encoding error.
    Error(TransportError),
}

impl Conn {
    fn lock(&self) -> MutexGuard<'_, crate::connection::Locked<Sessions>> {
        self.queue.lock()
    }

    /// Fail every waiting call with `err`, stop both tasks, forget this connection in the
    /// channel. Idempotent.
    fn fail(self: &Arc<Self>, err: TransportError) {
        if !self.alive.swap(false, Ordering::AcqRel) {
            return;
        }
        let pending = {
            let mut g = self.lock();
            g.closed = true;
            g.discard();
            self.set_in_flight(0);
            std::mem::take(&mut g.state.pending)
        };
        self.cancel.cancel();
        self.metrics.connected.set(0.0);
        self.metrics.queued.set(0.0);
        if let Some(shared) = self.channel.upgrade() {
            let mut st = shared.lock_state();
            if st.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, self)) {
                st.conn = None;
            }
        }
        if !pending.is_empty() {
            if let Some(suppressed) = warn_allowed("connection_lost", &self.node) {
                tracing::warn!(node = %self.node, waiting = pending.len(), error = %err, suppressed, "connection lost; failing waiting calls");
            }
        }
        for (_, tx) in pending {
            let _ = tx.send(Err(err.clone()));
        }
    }

    /// Record how many calls wait for replies (busy polling, metrics).
    fn set_in_flight(&self, n: usize) {
        self.queue.activity.set_outstanding(n);
        self.metrics.in_flight.set(n as f64);
    }

    fn overloaded(&self, limit: &'static str, what: String) -> Refused {
        self.metrics.rejected(limit);
        if !self.overloaded.swap(true, Ordering::Relaxed) {
            if let Some(suppressed) = warn_allowed("channel_overloaded", &self.node) {
                tracing::warn!(node = %self.node, %what, suppressed, "channel overloaded; refusing calls and pushes until it drains");
            }
        }
        Refused::Error(TransportError::Overloaded {
            node: self.node.clone(),
            what,
        })
    }

    /// A message was queued: an overload incident, if one was going on, is over.
    fn accepted(&self) {
        if self.overloaded.load(Ordering::Relaxed) {
            self.overloaded.store(false, Ordering::Relaxed);
            tracing::info!(node = %self.node, "channel accepts messages again");
        }
    }

    /// Charge the `len` bytes just encoded at `mark` to the node's outbound budget, or
    /// take them back out and refuse.
    fn charge(
        &self,
        g: &mut crate::connection::Locked<Sessions>,
        config: &ChannelConfig,
        mark: usize,
    ) -> Result<Option<Permit>, Refused> {
        let Some(budget) = &config.outbound_budget else {
            return Ok(None);
        };
        let len = g.buf.len() - mark;
        match budget.try_acquire(len) {
            Some(p) => Ok(Some(p)),
            None => {
                g.buf.truncate(mark);
                Err(self.overloaded(
                    "outbound_budget",
                    format!(
                    "node outbound budget exhausted ({} of {} bytes queued on all channels; {len} more refused)",
                    budget.used(),
                    budget.limit()
                )))
            }
        }
    }

    /// Allocate a session, record `tx`, queue the request frames: one lock.
    fn enqueue_call(
        &self,
        config: &ChannelConfig,
        to: &Address,
        payload: &[u8],
        tx: Waiter,
    ) -> Result<u32, Refused> {
        let mut g = self.lock();
        if g.closed {
            return Err(Refused::Dead);
        }
        if g.state.pending.len() >= config.max_in_flight {
            let n = g.state.pending.len();
            return Err(self.overloaded(
                "in_flight",
                format!(
                    "{n} calls are waiting for replies (max_in_flight {})",
                    config.max_in_flight
                ),
            ));
        }
        check_queued(self, g.queued(), payload.len(), config)?;
        let mut session = g.state.next;
        while g.state.pending.contains_key(&session) || g.holds(session) {
            session = next_session(session);
        }
        let mark = g.buf.len();
        if let Err(e) = encode_request(&mut g.buf, to, session, payload) {
            g.buf.truncate(mark);
            return Err(Refused::Error(TransportError::Codec(e.to_string())));
        }
        let permit = self.charge(&mut g, config, mark)?;
        let len = g.buf.len() - mark;
        g.mark(session, len, permit);
        self.accepted();
        g.state.next = next_session(session);
        // Alone on the connection: write it now. Others in flight: a burst, which the
        // writer batches.
        let alone = g.state.pending.is_empty();
        g.state.pending.insert(session, tx);
        self.set_in_flight(g.state.pending.len());
        if alone {
            self.queue.submit(g, mark);
        } else {
            self.queue.defer(g);
        }
        Ok(session)
    }

    /// Queue a heartbeat call (no limits: it is tiny, and the liveness rule covers a
    /// queue too full to take it).
    fn enqueue_ping(&self, to: &Address, tx: Waiter) -> Result<(), Refused> {
        let mut g = self.lock();
        if g.closed {
            return Err(Refused::Dead);
        }
        let mut session = g.state.next;
        while g.state.pending.contains_key(&session) || g.holds(session) {
            session = next_session(session);
        }
        let mark = g.buf.len();
        if let Err(e) = encode_request(&mut g.buf, to, session, &[]) {
            g.buf.truncate(mark);
            return Err(Refused::Error(TransportError::Codec(e.to_string())));
        }
        let len = g.buf.len() - mark;
        g.mark(0, len, None);
        g.state.next = next_session(session);
        g.state.pending.insert(session, tx);
        self.set_in_flight(g.state.pending.len());
        self.queue.submit(g, mark);
        Ok(())
    }

    /// Queue push frames; a multi-part push consumes a session, a whole one does not.
    fn enqueue_push(
        &self,
        config: &ChannelConfig,
        to: &Address,
        payload: &[u8],
    ) -> Result<(), Refused> {
        let mut g = self.lock();
        if g.closed {
            return Err(Refused::Dead);
        }
        check_queued(self, g.queued(), payload.len(), config)?;
        let session = if is_multipart_request(payload.len()) {
            let mut s = g.state.next;
            while g.state.pending.contains_key(&s) || g.holds(s) {
                s = next_session(s);
            }
            s
        } else {
            0
        };
        let mark = g.buf.len();
        if let Err(e) = encode_push(&mut g.buf, to, session, payload) {
            g.buf.truncate(mark);
            return Err(Refused::Error(TransportError::Codec(e.to_string())));
        }
        let permit = self.charge(&mut g, config, mark)?;
        let len = g.buf.len() - mark;
        g.mark(0, len, permit);
        self.accepted();
        if session != 0 {
            g.state.next = next_session(session);
        }
        // Pushes come in streams: the writer batches them.
        self.queue.defer(g);
        Ok(())
    }

    /// A call on this connection timed out: count it, and declare the peer unreachable
    /// once `max` calls in a row timed out with nothing received in between.
    fn note_timeout(self: &Arc<Self>, max: u32) {
        let n = self.timeouts.fetch_add(1, Ordering::AcqRel) + 1;
        if max > 0 && n >= max {
            self.metrics.dead("timeouts");
            if let Some(suppressed) = warn_allowed("timeouts", &self.node) {
                tracing::warn!(node = %self.node, timeouts = n, suppressed, "calls keep timing out with nothing received; recycling the connection");
            }
            self.fail(TransportError::PeerUnreachable {
                node: self.node.clone(),
                reason: format!("{n} calls in a row timed out with nothing received"),
            });
        }
    }

    /// Forget a session whose caller stopped waiting (timeout or cancelled).
    fn forget(&self, session: u32) {
        let mut g = self.lock();
        g.state.pending.remove(&session);
        if g.cancel(session) {
            tracing::debug!(node = %self.node, session, "call stopped waiting before its request was written; left out");
        }
        self.set_in_flight(g.state.pending.len());
    }
}

fn check_queued(
    conn: &Conn,
    queued: usize,
    len: usize,
    config: &ChannelConfig,
) -> Result<(), Refused> {
    // An empty queue always accepts one message, so a message larger than the byte limit
    // (but within max_message) can still be sent.
    if queued > 0 && queued.saturating_add(len) > config.max_queued_bytes {
        return Err(conn.overloaded(
            "queue",
            format!(
                "{queued} bytes are waiting to be written (max_queued_bytes {})",
                config.max_queued_bytes
            ),
        ));
    }
    Ok(())
}

/// Removes the session from the table if the call stops waiting before its reply came.
struct Forget<'a> {
    conn: &'a Conn,
    session: u32,
    armed: bool,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.conn.forget(self.session);
        }
    }
}

impl Shared {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_parked(&self) -> MutexGuard<'_, Parked> {
        self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn parked_pushes(&self) -> usize {
        self.lock_parked()
            .queue
            .iter()
            .filter(|i| i.call.is_none())
            .count()
    }
}

/// Errors that mean "the peer is away", which [`ChannelConfig::ride_through`] waits out.
fn is_away(e: &TransportError) -> bool {
    matches!(
        e,
        TransportError::Connect { .. }
            | TransportError::NodeDown { .. }
            | TransportError::PeerUnreachable { .. }
    )
}

impl Channel {
    /// A channel to `node` at `addr` (`"host:port"`). Does not connect yet: the first call
    /// or push does.
    pub fn new(node: &str, addr: String, config: ChannelConfig) -> Channel {
        Channel {
            shared: Arc::new(Shared {
                node: node.to_string(),
                addr,
                config,
                state: Mutex::new(State::default()),
                connect_gate: tokio::sync::Mutex::new(()),
                calls: AtomicU64::new(0),
                pushes: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                reconnects: AtomicU64::new(0),
                metrics: Arc::new(ChannelMetrics::new(node)),
                parked: Mutex::new(Parked::default()),
                flushing: AtomicBool::new(false),
                pushes_refused: AtomicU64::new(0),
            }),
        }
    }

    /// The remote node's name.
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// The address this channel connects to.
    pub fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// Connections opened after the first one (one atomic load; the same number as
    /// [`ChannelStats::reconnects`]): a change tells the owner the peer may be another
    /// process now.
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }

    /// Send a request to `to` on the remote node and wait for its reply (the reply's
    /// payload, or the remote's error as [`TransportError::Remote`]). `timeout` overrides
    /// the configured `call_timeout` for this call; it runs from the moment the call is
    /// made: opening the connection, waiting for the connect gate, parking and queueing
    /// all count against it, so the call ends by its deadline.
    pub async fn call(
        &self,
        to: Address,
        payload: Bytes,
        timeout: Option<Duration>,
    ) -> Result<Bytes, TransportError> {
        // A call may fail without ever waiting (backing off, closed, overloaded): count it
        // against the task's budget, so a caller retrying in a loop still lets the other
        // tasks of its runtime thread run.
        tokio::task::coop::consume_budget().await;
        self.shared.calls.fetch_add(1, Ordering::Relaxed);
        let metrics = &self.shared.metrics;
        metrics.calls.increment(1);
        let t0 = Instant::now();
        let result = self.call_inner(&to, &payload, timeout, t0).await;
        if matches!(&result, Ok(_) | Err(TransportError::Remote { .. })) {
            metrics.latency.record(t0.elapsed().as_secs_f64());
        }
        if let Err(e) = &result {
            self.shared.failures.fetch_add(1, Ordering::Relaxed);
            metrics.error(e);
        }
        result
    }

    /// Send a push (no reply) to `to` on the remote node. Returns once the message is
    /// queued for writing; errors only when it cannot be queued (connect failure, channel
    /// closed, overloaded, too large).
    pub async fn push(&self, to: Address, payload: Bytes) -> Result<(), TransportError> {
        // As for calls: a push that fails or queues at once still counts against the budget.
        tokio::task::coop::consume_budget().await;
        self.shared.pushes.fetch_add(1, Ordering::Relaxed);
        self.shared.metrics.pushes.increment(1);
        let result = self.push_inner(&to, &payload).await;
        if let Err(e) = &result {
            self.shared.failures.fetch_add(1, Ordering::Relaxed);
            self.shared.metrics.error(e);
        }
        result
    }

    /// Close the channel: the connection is closed, waiting calls fail with
    /// [`TransportError::Closed`], and so does every later call or push.
    pub fn close(&self) {
        let conn = {
            let mut st = self.shared.lock_state();
            st.closed = true;
            st.conn.take()
        };
        if let Some(conn) = conn {
            conn.fail(self.closed());
        }
    }

    /// The peer said it is going away (it drains before it stops or hands over): the
    /// next call or push opens a new connection (to its successor, or riding through
    /// its absence), while the current connection stays only until the calls waiting on
    /// it are answered and what is queued on it is written (at most `call_timeout`),
    /// then closes. Nothing already sent is cut.
    pub fn retire(&self) {
        let conn = self.shared.lock_state().conn.take();
        let Some(conn) = conn else { return };
        let node = self.shared.node.clone();
        let most = self.shared.config.call_timeout;
        tracing::info!(%node, "peer is going away; new messages go to a new connection");
        tokio::spawn(async move {
            let t0 = Instant::now();
            loop {
                // Checked and closed under one lock: a caller that took this connection
                // before it was retired may still queue on it until then; after, it is
                // told the connection is gone and goes to a new one. (Checked, unlocked,
                // then closed, such a push was queued in between and thrown away by the
                // close, or such a call failed.)
                let idle = {
                    let mut g = conn.lock();
                    let idle = g.state.pending.is_empty() && g.queued() == 0;
                    if idle {
                        g.closed = true;
                    }
                    idle
                };
                if idle || !conn.alive.load(Ordering::Acquire) || t0.elapsed() > most {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            conn.fail(TransportError::NodeDown {
                node,
                reason: "the node went away (its connection was retired)".into(),
            });
        });
    }

    /// Current counters.
    pub fn stats(&self) -> ChannelStats {
        let conn = {
            let st = self.shared.lock_state();
            st.conn
                .as_ref()
                .filter(|c| c.alive.load(Ordering::Acquire))
                .cloned()
        };
        ChannelStats {
            connected: conn.is_some(),
            in_flight: conn.as_ref().map_or(0, |c| c.lock().state.pending.len()),
            queued_bytes: conn.as_ref().map_or(0, |c| c.lock().queued()),
            reconnects: self.shared.reconnects.load(Ordering::Relaxed),
            calls: self.shared.calls.load(Ordering::Relaxed),
            pushes: self.shared.pushes.load(Ordering::Relaxed),
            failures: self.shared.failures.load(Ordering::Relaxed),
            parked: self.shared.parked_pushes(),
            pushes_refused: self.shared.pushes_refused.load(Ordering::Relaxed),
        }
    }

    fn closed(&self) -> TransportError {
        TransportError::Closed {
            node: self.shared.node.clone(),
        }
    }

    fn check_size(&self, len: usize) -> Result<(), TransportError> {
        let max = self.shared.config.max_message;
        if len > max {
            return Err(TransportError::TooLarge {
                node: self.shared.node.clone(),
                size: len,
                max,
            });
        }
        Ok(())
    }

    fn node_down(&self, reason: &str) -> TransportError {
        TransportError::NodeDown {
            node: self.shared.node.clone(),
            reason: reason.to_string(),
        }
    }

    async fn call_inner(
        &self,
        to: &Address,
        payload: &Bytes,
        timeout: Option<Duration>,
        t0: Instant,
    ) -> Result<Bytes, TransportError> {
        self.check_size(payload.len())?;
        let config = &self.shared.config;
        let after = timeout.unwrap_or(config.call_timeout);
        let rides = !config.ride_through.is_zero();
        // A parked call's time runs from the call (`t0`, read once by `call`).
        let deadline = t0 + after;
        // Calls issued while others are parked go behind them (order is kept).
        if rides {
            if let Some(parked) = self.park(to, payload, true, false)? {
                return self.wait_parked(parked, deadline, after).await;
            }
        }
        let mut dead = 0;
        loop {
            // Dialling (and waiting for another caller's dial) ends at the call's deadline.
            let connected = match tokio::time::timeout_at(deadline.into(), self.connection()).await
            {
                Ok(c) => c,
                Err(_) => {
                    return Err(TransportError::Timeout {
                        node: self.shared.node.clone(),
                        after,
                    })
                }
            };
            let err = match connected {
                Ok(conn) => {
                    let (tx, rx) = oneshot::channel();
                    match conn.enqueue_call(config, to, payload, tx) {
                        Ok(session) => {
                            return self.wait_reply(&conn, session, rx, deadline, after).await
                        }
                        // A connection that died between lookup and enqueue is replaced
                        // once at once; after that, as any other absence of the peer.
                        Err(Refused::Dead) => {
                            dead += 1;
                            if dead < 2 {
                                continue;
                            }
                            self.node_down("the connection dropped before the request was sent")
                        }
                        Err(Refused::Error(e)) => return Err(e),
                    }
                }
                Err(e) => e,
            };
            if rides && self.within_ride(&err) {
                if let Some(parked) = self.park(to, payload, true, true)? {
                    return self.wait_parked(parked, deadline, after).await;
                }
            }
            return Err(self.away_too_long(err));
        }
    }

    /// Wait for the reply of the call queued as `session`.
    async fn wait_reply(
        &self,
        conn: &Arc<Conn>,
        session: u32,
        rx: oneshot::Receiver<Result<Bytes, TransportError>>,
        deadline: Instant,
        after: Duration,
    ) -> Result<Bytes, TransportError> {
        let mut guard = Forget {
            conn,
            session,
            armed: true,
        };
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(result)) => {
                guard.armed = false;
                result
            }
            Ok(Err(_)) => {
                guard.armed = false;
                Err(self.node_down("the connection was dropped"))
            }
            Err(_) => {
                tracing::debug!(node = %self.shared.node, session, ?after, "call timed out");
                conn.note_timeout(self.shared.config.max_timeouts);
                Err(TransportError::Timeout {
                    node: self.shared.node.clone(),
                    after,
                })
            }
        }
    }

    /// Wait for the reply of a parked call (sent by the flusher once the peer is back,
    /// or refused by it), at most until `deadline`.
    async fn wait_parked(
        &self,
        (rx, sent): (
            oneshot::Receiver<Result<Bytes, TransportError>>,
            Arc<SentAs>,
        ),
        deadline: Instant,
        after: Duration,
    ) -> Result<Bytes, TransportError> {
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.node_down("the connection was dropped")),
            Err(_) => {
                // Sent meanwhile: take it out of the session table (or out of the queue).
                let went = sent.0.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some((conn, session)) = went {
                    if let Some(conn) = conn.upgrade() {
                        conn.forget(session);
                    }
                }
                Err(TransportError::Timeout {
                    node: self.shared.node.clone(),
                    after,
                })
            }
        }
    }

    async fn push_inner(&self, to: &Address, payload: &Bytes) -> Result<(), TransportError> {
        self.check_size(payload.len())?;
        let config = &self.shared.config;
        let rides = !config.ride_through.is_zero();
        // Pushes issued while others are parked go behind them (order is kept).
        if rides && self.park(to, payload, false, false)?.is_some() {
            return Ok(());
        }
        let mut dead = 0;
        loop {
            let err = match self.connection().await {
                Ok(conn) => match conn.enqueue_push(config, to, payload) {
                    Ok(()) => return Ok(()),
                    Err(Refused::Dead) => {
                        dead += 1;
                        if dead < 2 {
                            continue;
                        }
                        self.node_down("the connection dropped before the push was sent")
                    }
                    Err(Refused::Error(e)) => return Err(e),
                },
                Err(e) => e,
            };
            if rides && self.within_ride(&err) && self.park(to, payload, false, true)?.is_some() {
                return Ok(());
            }
            return Err(self.away_too_long(err));
        }
    }

    /// Whether `err` says the peer is away and the ride-through window (counted from the
    /// first failed connect) is still open.
    fn within_ride(&self, err: &TransportError) -> bool {
        let config = &self.shared.config;
        if config.ride_through.is_zero() || !is_away(err) {
            return false;
        }
        let now = Instant::now();
        let mut st = self.shared.lock_state();
        if st.closed {
            return false;
        }
        let since = *st.away_since.get_or_insert(now);
        now < since + config.ride_through
    }

    /// When to try connecting again while riding through, or `None` once the window
    /// is over.
    fn retry_at(&self, err: &TransportError) -> Option<Instant> {
        if !self.within_ride(err) {
            return None;
        }
        let config = &self.shared.config;
        let now = Instant::now();
        let st = self.shared.lock_state();
        let limit = st.away_since.map_or(now, |s| s + config.ride_through);
        let next = st
            .backoff
            .as_ref()
            .map_or(now + config.backoff_min, |b| b.until.max(now));
        Some(next.min(limit).max(now + Duration::from_millis(1)))
    }

    /// The error of a call or push given up on: with ride-through on, say for how long
    /// the peer has been away.
    fn away_too_long(&self, err: TransportError) -> TransportError {
        let config = &self.shared.config;
        if config.ride_through.is_zero() || !is_away(&err) {
            return err;
        }
        let since = self.shared.lock_state().away_since;
        let Some(since) = since else { return err };
        let away = since.elapsed();
        match err {
            TransportError::Connect { node, addr, reason } => TransportError::Connect {
                node,
                addr,
                reason: format!(
                    "{reason}; away for {:.1} s (ride_through {:?})",
                    away.as_secs_f64(),
                    config.ride_through
                ),
            },
            other => other,
        }
    }

    /// Park a call (`call`) or push behind the ones already parked — or, with `start`,
    /// also when none are, starting the flusher. `Ok(None)`: not parked (nothing parked
    /// and not `start`). For a call, what to wait on.
    #[allow(clippy::type_complexity)]
    fn park(
        &self,
        to: &Address,
        payload: &Bytes,
        call: bool,
        start: bool,
    ) -> Result<
        Option<(
            oneshot::Receiver<Result<Bytes, TransportError>>,
            Arc<SentAs>,
        )>,
        TransportError,
    > {
        let config = &self.shared.config;
        // Nothing parked (the usual case): no lock. A caller's own earlier parked message
        // set the flag before its call returned, so its order is kept.
        if !start && !self.shared.flushing.load(Ordering::Acquire) {
            return Ok(None);
        }
        let mut p = self.shared.lock_parked();
        if !p.flushing && !start {
            return Ok(None);
        }
        let len = payload.len();
        let overloaded = |what: String| {
            self.shared.metrics.rejected("parked");
            TransportError::Overloaded {
                node: self.shared.node.clone(),
                what,
            }
        };
        if !p.queue.is_empty() && p.bytes.saturating_add(len) > config.max_parked_bytes {
            return Err(overloaded(format!(
                "{} bytes of calls and pushes are parked while the node is away (max_parked_bytes {})",
                p.bytes, config.max_parked_bytes
            )));
        }
        let permit = match &config.outbound_budget {
            Some(budget) => Some(budget.try_acquire(len).ok_or_else(|| {
                overloaded(format!(
                    "node outbound budget exhausted ({} of {} bytes; {len} more refused)",
                    budget.used(),
                    budget.limit()
                ))
            })?),
            None => None,
        };
        let (call, wait) = if call {
            let (tx, rx) = oneshot::channel();
            let sent = Arc::new(SentAs::default());
            (Some((tx, sent.clone())), Some((rx, sent)))
        } else {
            (None, None)
        };
        p.bytes += len;
        p.queue.push_back(ParkedItem {
            to: to.clone(),
            payload: payload.clone(),
            call,
            _permit: permit,
        });
        if !p.flushing {
            p.flushing = true;
            self.shared.flushing.store(true, Ordering::Release);
            tracing::info!(node = %self.shared.node, ride_through = ?config.ride_through, "peer away; holding calls and pushes until it is back");
            tokio::spawn(self.clone().flush_parked());
        }
        // A push is parked: `Some` with nothing to wait on.
        Ok(Some(wait.unwrap_or_else(|| {
            let (_, rx) = oneshot::channel();
            (rx, Arc::new(SentAs::default()))
        })))
    }

    /// The flusher: wait for the peer, then queue the parked calls and pushes in order;
    /// refuse them (counted and logged) once the peer has been away longer than
    /// `ride_through`.
    async fn flush_parked(self) {
        let config = &self.shared.config;
        let node = self.shared.node.clone();
        loop {
            let err = match self.connection().await {
                Ok(conn) => match self.drain_into(&conn) {
                    Ok(()) => return,
                    Err(e) => e,
                },
                Err(e) => e,
            };
            match self.retry_at(&err) {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None if matches!(err, TransportError::Overloaded { .. }) && !self.is_closed() => {
                    // Back, but its queue is full: let the writer drain it.
                    tokio::time::sleep(config.backoff_min).await;
                }
                None => {
                    let items = {
                        let mut p = self.shared.lock_parked();
                        p.bytes = 0;
                        p.flushing = false;
                        self.shared.flushing.store(false, Ordering::Release);
                        std::mem::take(&mut p.queue)
                    };
                    let err = self.away_too_long(err);
                    let (mut pushes, mut calls, mut bytes) = (0u64, 0u64, 0usize);
                    for item in items {
                        bytes += item.payload.len();
                        match item.call {
                            Some((tx, _)) => {
                                calls += 1;
                                let _ = tx.send(Err(err.clone()));
                            }
                            None => pushes += 1,
                        }
                    }
                    self.shared
                        .pushes_refused
                        .fetch_add(pushes, Ordering::Relaxed);
                    self.shared.failures.fetch_add(pushes, Ordering::Relaxed);
                    self.shared.metrics.rejected_n("ride_through", pushes);
                    tracing::warn!(node = %node, pushes, calls, bytes, error = %err, "parked calls and pushes refused: the node stayed away");
                    return;
                }
            }
        }
    }

    /// Queue every parked call and push on `conn`, in order; the queue is left empty
    /// only when all went.
    fn drain_into(&self, conn: &Arc<Conn>) -> Result<(), TransportError> {
        let config = &self.shared.config;
        let mut sent = 0usize;
        let mut p = self.shared.lock_parked();
        while let Some(item) = p.queue.front_mut() {
            let outcome = match item.call.take() {
                // The caller stopped waiting: leave it out.
                Some((tx, _)) if tx.is_closed() => Ok(()),
                Some((tx, sent_as)) => {
                    // The waiter is given up only when the request is queued.
                    let (relay_tx, relay_rx) = oneshot::channel();
                    match conn.enqueue_call(config, &item.to, &item.payload, relay_tx) {
                        Ok(session) => {
                            *sent_as.0.lock().unwrap_or_else(|e| e.into_inner()) =
                                Some((Arc::downgrade(conn), session));
                            let dropped = self.node_down("the connection was dropped");
                            tokio::spawn(async move {
                                let result = relay_rx.await.unwrap_or(Err(dropped));
                                let _ = tx.send(result);
                            });
                            Ok(())
                        }
                        Err(e) => {
                            item.call = Some((tx, sent_as));
                            Err(e)
                        }
                    }
                }
                None => conn.enqueue_push(config, &item.to, &item.payload),
            };
            match outcome {
                Ok(()) => {
                    let len = item.payload.len();
                    p.queue.pop_front();
                    p.bytes -= len;
                    sent += 1;
                }
                Err(Refused::Dead) => {
                    return Err(self.node_down(
                        "the connection dropped while parked calls and pushes went out",
                    ))
                }
                Err(Refused::Error(e)) => return Err(e),
            }
        }
        p.flushing = false;
        self.shared.flushing.store(false, Ordering::Release);
        drop(p);
        tracing::info!(node = %self.shared.node, messages = sent, "peer back; parked calls and pushes sent");
        Ok(())
    }

    fn is_closed(&self) -> bool {
        self.shared.lock_state().closed
    }

    /// The live connection, if any; `Err` when closed or backing off.
    fn current(&self) -> Result<Option<Arc<Conn>>, TransportError> {
        let mut st = self.shared.lock_state();
        if st.closed {
            return Err(self.closed());
        }
        if let Some(c) = &st.conn {
            if c.alive.load(Ordering::Acquire) {
                return Ok(Some(c.clone()));
            }
            st.conn = None;
        }
        if let Some(b) = &st.backoff {
            let now = Instant::now();
            if now < b.until {
                return Err(TransportError::Connect {
                    node: self.shared.node.clone(),
                    addr: self.shared.addr.clone(),
                    reason: format!(
                        "{} (next attempt in {} ms)",
                        b.reason,
                        (b.until - now).as_millis()
                    ),
                });
            }
        }
        Ok(None)
    }

    async fn connection(&self) -> Result<Arc<Conn>, TransportError> {
        if let Some(c) = self.current()? {
            return Ok(c);
        }
        let _gate = self.shared.connect_gate.lock().await;
        if let Some(c) = self.current()? {
            return Ok(c);
        }
        self.open().await
    }

    /// Dial the node (caller holds the connect gate) and start the connection's tasks.
    async fn open(&self) -> Result<Arc<Conn>, TransportError> {
        let shared = &self.shared;
        let config = &shared.config;
        let dialled = dial(&shared.addr, config.connect_timeout, config.redial).await;
        let stream = match dialled {
            Ok(stream) => stream,
            Err(DialError::Failed(e)) => {
                let refused = e.kind() == std::io::ErrorKind::ConnectionRefused;
                return Err(self.connect_failed(e.to_string(), refused));
            }
            Err(DialError::TimedOut) => {
                return Err(self.connect_failed(
                    format!(
                        "no answer within {:?} (connect_timeout)",
                        config.connect_timeout
                    ),
                    true,
                ))
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::warn!(node = %shared.node, error = %e, "cannot set TCP_NODELAY");
        }
        if let Err(e) = tune_socket(&stream, config.liveness) {
            tracing::warn!(node = %shared.node, error = %e, "cannot set TCP keepalive / TCP_USER_TIMEOUT");
        }
        let mut stream = stream;
        let mut first_session = 1;
        if let Some(secret) = &config.auth_secret {
            let outcome =
                tokio::time::timeout(config.connect_timeout, initiate(&mut stream, secret)).await;
            let reason = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(reason)) => Some(reason),
                Err(_) => Some(format!(
                    "no answer within {:?} (connect_timeout)",
                    config.connect_timeout
                )),
            };
            if let Some(reason) = reason {
                // Not a refused connect: back off like a failed one.
                let _ = self.connect_failed(format!("authentication failed: {reason}"), false);
                return Err(TransportError::AuthFailed {
                    node: shared.node.clone(),
                    addr: shared.addr.clone(),
                    reason,
                });
            }
            tracing::debug!(node = %shared.node, "authenticated");
            first_session = 3;
        }
        let (rd, wr) = stream.into_split();
        let conn = Arc::new(Conn {
            node: shared.node.clone(),
            alive: AtomicBool::new(true),
            timeouts: AtomicU32::new(0),
            overloaded: AtomicBool::new(false),
            queue: WriteQueue::new(
                wr,
                Sessions {
                    next: first_session,
                    pending: HashMap::new(),
                },
            )
            .with_metrics(
                shared.metrics.bytes_out.clone(),
                Some(shared.metrics.queued.clone()),
            ),
            cancel: CancellationToken::new(),
            channel: Arc::downgrade(shared),
            metrics: shared.metrics.clone(),
        });
        {
            let mut st = shared.lock_state();
            if st.closed {
                drop(st);
                conn.fail(self.closed());
                return Err(self.closed());
            }
            st.backoff = None;
            st.away_since = None;
            st.connects += 1;
            if st.connects > 1 {
                shared.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            st.conn = Some(conn.clone());
        }
        tracing::info!(node = %shared.node, addr = %shared.addr, "connected");
        shared.metrics.connects.increment(1);
        shared.metrics.connected.set(1.0);
        let writer_conn = conn.clone();
        tokio::spawn(async move {
            let conn = writer_conn;
            if let WriterEnd::Failed(e) = run_writer(&conn.queue, &conn.cancel).await {
                conn.fail(io_failure(&conn, "write failed", &e));
            }
        });
        if !config.liveness.is_zero() && !config.heartbeat.is_zero() {
            tokio::spawn(watch(conn.clone(), config.liveness, config.heartbeat));
        }
        let reader = Connection::new(rd, MAX_BODY)
            .busy_poll(config.busy_poll, conn.queue.activity.clone())
            .count_bytes(shared.metrics.bytes_in.clone());
        let limits = Limits {
            max_message: config.max_message,
            max_pending: config.max_in_flight.max(1),
            ..Limits::default()
        };
        tokio::spawn(read_responses(
            conn.clone(),
            reader,
            limits,
            config.inbound_budget.clone(),
        ));
        Ok(conn)
    }

    /// Enter back-off after a failed connect. A refusal (nothing listens: the node is
    /// down or restarting) is cheap to retry and the node may be back any moment, and a
    /// dial that timed out already took `connect_timeout`, so both wait just
    /// `backoff_min` (`short`); other failures (unreachable, ...) come back at once and
    /// double the delay up to `backoff_max`.
    fn connect_failed(&self, reason: String, short: bool) -> TransportError {
        let shared = &self.shared;
        let config = &shared.config;
        let mut st = shared.lock_state();
        st.away_since.get_or_insert_with(Instant::now);
        let delay = match &st.backoff {
            Some(b) if !short => (b.delay * 2).min(config.backoff_max),
            _ => config.backoff_min,
        };
        st.backoff = Some(Backoff {
            until: Instant::now() + delay,
            delay,
            reason: reason.clone(),
        });
        drop(st);
        if let Some(suppressed) = warn_allowed("cannot_connect", &shared.node) {
            tracing::warn!(node = %shared.node, addr = %shared.addr, %reason, retry_in = ?delay, suppressed, "cannot connect");
        }
        TransportError::Connect {
            node: shared.node.clone(),
            addr: shared.addr.clone(),
            reason,
        }
    }
}

/// What the reader does with one decoded frame.
enum Step {
    Continue,
    Fail(TransportError),
}

/// The reader task of one connection.
async fn read_responses(
    conn: Arc<Conn>,
    mut reader: Connection<OwnedReadHalf>,
    limits: Limits,
    budget: Option<ByteBudget>,
) {
    let mut assembler = Assembly {
        responses: ResponseAssembler::new(limits),
        budget,
        held: HashMap::new(),
        dropped: HashSet::new(),
    };
    let mut ready: Vec<Answer> = Vec::new();
    let mut wake: Vec<(Waiter, Result<Bytes, TransportError>)> = Vec::new();
    let mut unknown: Vec<u32> = Vec::new();
    loop {
        let first = tokio::select! {
            r = reader.read_frame() => r,
            _ = conn.cancel.cancelled() => return,
        };
        let mut step = match first {
            Ok(Some(body)) => {
                conn.queue.activity.stamp_received();
                conn.timeouts.store(0, Ordering::Release);
                handle_frame(&conn, &mut assembler, body, &mut ready)
            }
            Ok(None) => Step::Fail(TransportError::NodeDown {
                node: conn.node.clone(),
                reason: "the peer closed the connection".into(),
            }),
            Err(ReadError::Io(e)) => Step::Fail(io_failure(&conn, "read failed", &e)),
            Err(e) => Step::Fail(TransportError::NodeDown {
                node: conn.node.clone(),
                reason: e.to_string(),
            }),
        };
        // Everything already buffered is handled before the next read, under one lock.
        while matches!(step, Step::Continue) {
            match reader.buffered_frame() {
                Ok(Some(body)) => step = handle_frame(&conn, &mut assembler, body, &mut ready),
                Ok(None) => break,
                Err(e) => {
                    step = Step::Fail(TransportError::Protocol {
                        node: conn.node.clone(),
                        reason: e.to_string(),
                    })
                }
            }
        }
        if !ready.is_empty() {
            {
                let mut g = conn.lock();
                for (session, result) in ready.drain(..) {
                    match g.state.pending.remove(&session) {
                        Some(tx) => wake.push((tx, result)),
                        None => unknown.push(session),
                    }
                }
                conn.set_in_flight(g.state.pending.len());
            }
            for (tx, result) in wake.drain(..) {
                let _ = tx.send(result);
            }
            for session in unknown.drain(..) {
                if let Some(suppressed) = warn_allowed("unknown_session", &conn.node) {
                    tracing::warn!(node = %conn.node, session, suppressed, "response for an unknown session (the call timed out or was cancelled); dropped");
                }
            }
        }
        if let Step::Fail(err) = step {
            if matches!(err, TransportError::Protocol { .. }) {
                if let Some(suppressed) = warn_allowed("protocol", &conn.node) {
                    tracing::warn!(node = %conn.node, error = %err, suppressed, "closing connection");
                }
            } else {
                tracing::info!(node = %conn.node, error = %err, "connection ended");
            }
            conn.fail(err);
            return;
        }
    }
}

/// A complete reply for a session.
type Answer = (u32, Result<Bytes, TransportError>);

/// Multi-part reassembly of responses, charged to the node's inbound budget.
struct Assembly {
    responses: ResponseAssembler,
    budget: Option<ByteBudget>,
    /// Budget held per response being assembled.
    held: HashMap<u32, Permit>,
    /// Multi-part responses refused for want of budget: their pieces are dropped.
    dropped: HashSet<u32>,
}

fn handle_frame(
    conn: &Arc<Conn>,
    assembler: &mut Assembly,
    body: Bytes,
    ready: &mut Vec<Answer>,
) -> Step {
    let protocol = |reason: String| {
        Step::Fail(TransportError::Protocol {
            node: conn.node.clone(),
            reason,
        })
    };
    let frame = match decode_response_frame(body) {
        Ok(f) => f,
        Err(e) => return protocol(e.to_string()),
    };
    if let ResponseFrame::Err {
        session: 0,
        message,
    } = &frame
    {
        if message.as_ref() == GOAWAY.as_bytes() {
            // The peer drains (see `crate::listener::GOAWAY`): new messages go on a new
            // connection, this one closes once its calls are answered.
            if let Some(shared) = conn.channel.upgrade() {
                let current = shared
                    .lock_state()
                    .conn
                    .as_ref()
                    .is_some_and(|c| Arc::ptr_eq(c, conn));
                if current {
                    Channel { shared }.retire();
                }
            }
            return Step::Continue;
        }
    }
    if let ResponseFrame::Piece { session, last, .. } = &frame {
        if assembler.dropped.contains(session) {
            if *last {
                assembler.dropped.remove(session);
            }
            return Step::Continue;
        }
    }
    if let (ResponseFrame::Begin { session, total }, Some(budget)) = (&frame, &assembler.budget) {
        match budget.try_acquire(*total as usize) {
            Some(p) => {
                assembler.held.insert(*session, p);
            }
            None => {
                // Only this reply is refused; the connection and the other calls stay.
                let what = format!(
                    "node inbound budget exhausted ({} of {} bytes held) by a multi-part response of {total} bytes",
                    budget.used(),
                    budget.limit()
                );
                if let Some(suppressed) = warn_allowed("overloaded", &conn.node) {
                    tracing::warn!(node = %conn.node, %what, suppressed, "reply dropped; its call fails with Overloaded");
                }
                conn.metrics.rejected("inbound_budget");
                assembler.dropped.insert(*session);
                ready.push((
                    *session,
                    Err(TransportError::Overloaded {
                        node: conn.node.clone(),
                        what,
                    }),
                ));
                return Step::Continue;
            }
        }
    }
    let fed = assembler.responses.feed(frame);
    if let Ok(Some(Response { session, .. })) | Err(AssemblyError::SizeMismatch { session, .. }) =
        &fed
    {
        assembler.held.remove(session);
    }
    match fed {
        Ok(Some(Response { session, result })) => {
            let result = result.map_err(|text| remote_error(&conn.node, &text));
            ready.push((session, result));
        }
        Ok(None) => {}
        Err(AssemblyError::SizeMismatch {
            session,
            announced,
            got,
        }) => {
            // Only this reply is broken; framing is intact, so the connection stays.
            ready.push((
                session,
                Err(TransportError::Protocol {
                    node: conn.node.clone(),
                    reason: format!(
                        "multi-part response announced {announced} bytes but carried {got}"
                    ),
                }),
            ));
        }
        Err(AssemblyError::UnknownSession { session }) => {
            if let Some(suppressed) = warn_allowed("unknown_session", &conn.node) {
                tracing::warn!(node = %conn.node, session, suppressed, "response piece for a session with no multi-part response in progress; dropped");
            }
        }
        Err(e) => return protocol(e.to_string()),
    }
    Step::Continue
}

/// The error of an error response: [`TransportError::Overloaded`] when a bee node shed
/// the request ([`OVERLOADED`]), else the remote's text as [`TransportError::Remote`].
fn remote_error(node: &str, text: &[u8]) -> TransportError {
    let message = String::from_utf8_lossy(text).into_owned();
    match message.strip_prefix(OVERLOADED) {
        Some(what) => TransportError::Overloaded {
            node: node.to_string(),
            what: format!("the node shed the call{what}"),
        },
        None => TransportError::Remote {
            node: node.to_string(),
            message,
        },
    }
}

/// The error for a socket that failed with `e`: the kernel giving up on the peer
/// (`TCP_USER_TIMEOUT`, keepalive, unreachable) is [`TransportError::PeerUnreachable`],
/// anything else [`TransportError::NodeDown`].
fn io_failure(conn: &Conn, what: &str, e: &std::io::Error) -> TransportError {
    use std::io::ErrorKind::*;
    let reason = format!("{what}: {e}");
    let node = conn.node.clone();
    match e.kind() {
        TimedOut | HostUnreachable | NetworkUnreachable => {
            conn.metrics.dead("tcp");
            TransportError::PeerUnreachable { node, reason }
        }
        _ => TransportError::NodeDown { node, reason },
    }
}

/// The liveness monitor of one connection (see [`crate::liveness`]): pings after
/// `heartbeat` of silence, declares the peer dead when a ping stays unanswered too long.
async fn watch(conn: Arc<Conn>, liveness: Duration, heartbeat: Duration) {
    let tick = (heartbeat.min(liveness) / 4).max(Duration::from_millis(10));
    let wait = if liveness > heartbeat {
        liveness - heartbeat
    } else {
        liveness
    };
    let heartbeat_ns = heartbeat.as_nanos() as u64;
    let wait_ns = wait.as_nanos() as u64;
    let ping = Address::Name(Bytes::from_static(PING_NAME.as_bytes()));
    // When the unanswered ping was sent (or tried), if one is.
    let mut pinged: Option<u64> = None;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A fresh connection counts as having just heard from the peer.
    let opened = now_ns();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = conn.cancel.cancelled() => return,
        }
        let now = now_ns();
        let received = conn.queue.activity.received().max(opened);
        if pinged.is_some_and(|at| received >= at) {
            pinged = None;
        }
        match pinged {
            None if now.saturating_sub(received) >= heartbeat_ns => {
                // The answer itself is not needed: any frame received is proof of life.
                let (tx, _rx) = oneshot::channel();
                conn.metrics.heartbeats.increment(1);
                let _ = conn.enqueue_ping(&ping, tx);
                pinged = Some(now);
            }
            None => {}
            Some(at) => {
                let since = at.max(conn.queue.activity.unblocked());
                if now.saturating_sub(since) >= wait_ns {
                    let silent = Duration::from_nanos(now.saturating_sub(received));
                    if let Some(suppressed) = warn_allowed("heartbeat", &conn.node) {
                        tracing::warn!(node = %conn.node, ?silent, suppressed, "peer does not answer heartbeats; declaring it unreachable");
                    }
                    conn.metrics.heartbeats_failed.increment(1);
                    conn.metrics.dead("heartbeat");
                    conn.fail(TransportError::PeerUnreachable {
                        node: conn.node.clone(),
                        reason: format!(
                            "nothing received for {} ms, heartbeat unanswered",
                            silent.as_millis()
                        ),
                    });
                    return;
                }
            }
        }
    }
}
