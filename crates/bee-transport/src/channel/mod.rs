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
//!   ([`ResponseAssembler`](bee_codec::cluster::ResponseAssembler)) and wakes the waiting callers, taking the session-table lock
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
//! peer is away calls wait for it and pushes are parked, then sent in order once it is
//! back; see [`ride_through`]. Calls whose request was already written when the
//! connection died are not re-sent (the peer may have handled them): they fail with
//! `NodeDown`.
//!
//! ## Layout
//! - this module: the [`Channel`] itself — its settings, connecting (lazily, with
//!   back-off), calls and pushes, retiring and closing;
//! - `conn`: one open connection — its session table and write queue, the limits on
//!   calls in flight and bytes queued, failing every waiting call at once;
//! - `reader`: a connection's reader task — response frames, multi-part reassembly
//!   charged to the inbound budget, waking the callers;
//! - [`ride_through`]: the parked queue and its flusher.

mod conn;
mod reader;
pub mod ride_through;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bee_codec::cluster::{Address, Limits};
use bee_codec::frame::MAX_BODY;
use bytes::Bytes;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::auth::{initiate, AuthSecret};
use crate::budget::ByteBudget;
use crate::busy_poll::PollerCap;
use crate::connection::{run_writer, Connection, WriteQueue, WriterEnd};
use crate::error::TransportError;
use crate::liveness::{dial, tune_socket, watch, DialError, TimeoutStreak};
use crate::telemetry::ChannelMetrics;
use crate::throttle::warn_allowed;

use conn::{io_failure, Conn, Forget, Refused, Sessions};
use reader::read_responses;
use ride_through::RideThrough;

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
    /// How many connections may busy-poll at once, shared with every channel and listener
    /// given a clone (default: the process's cap, [`PollerCap::process`]).
    pub busy_poll_cap: PollerCap,
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
    /// have not connected yet (default 100 ms; zero: one attempt per dial), so a peer
    /// whose network heals mid-dial, or whose SYN was lost, is reached within about this
    /// long rather than at TCP's own retransmission a second later. At most 10 attempts
    /// (sockets) are in flight per dial.
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
            busy_poll_cap: PollerCap::process(),
            liveness: Duration::from_secs(4),
            heartbeat: Duration::from_secs(1),
            max_timeouts: 3,
            redial: Duration::from_millis(100),
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
    /// Calls and pushes parked while the peer is away (see [`ride_through`]).
    ride: RideThrough,
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

impl Shared {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
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
                ride: RideThrough::default(),
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
            parked: self.shared.ride.parked_pushes(),
            pushes_refused: self.shared.ride.refused(),
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
        // A parked call's time runs from the call (`t0`, read once by `call`).
        let deadline = t0 + after;
        // Calls issued while others are parked go behind them (order is kept).
        if let Some(parked) = self.park_behind(to, payload, true)? {
            return self.wait_parked(parked, deadline, after).await;
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
            if let Some(parked) = self.park_away(&err, to, payload, true)? {
                return self.wait_parked(parked, deadline, after).await;
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

    async fn push_inner(&self, to: &Address, payload: &Bytes) -> Result<(), TransportError> {
        self.check_size(payload.len())?;
        let config = &self.shared.config;
        // Pushes issued while others are parked go behind them (order is kept).
        if self.park_behind(to, payload, false)?.is_some() {
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
            if self.park_away(&err, to, payload, false)?.is_some() {
                return Ok(());
            }
            return Err(self.away_too_long(err));
        }
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
            timeouts: TimeoutStreak::default(),
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
            .poller_cap(config.busy_poll_cap.clone())
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
