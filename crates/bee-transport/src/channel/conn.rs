//! One open connection of a [`Channel`](super::Channel): its session table and write
//! queue (one lock, so sessions are allocated in wire order), the limits on calls in
//! flight and bytes queued (per channel and node-wide), and failing every waiting call
//! at once when the connection ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard, Weak};

use bee_codec::cluster::{
    encode_push, encode_request, is_multipart_request, next_session, Address,
};
use bytes::Bytes;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{ChannelConfig, Shared};
use crate::budget::Permit;
use crate::connection::{Locked, WriteQueue};
use crate::error::TransportError;
use crate::liveness::{TimeoutStreak, Watched, PING_NAME};
use crate::telemetry::ChannelMetrics;
use crate::throttle::warn_allowed;

pub(super) type Waiter = oneshot::Sender<Result<Bytes, TransportError>>;

/// The session table, kept under the write queue's lock.
pub(super) struct Sessions {
    pub(super) next: u32,
    pub(super) pending: HashMap<u32, Waiter>,
}

/// One open connection of a channel.
pub(super) struct Conn {
    pub(super) node: String,
    pub(super) alive: AtomicBool,
    /// Calls in a row that timed out with nothing received since (reset by the reader).
    pub(super) timeouts: TimeoutStreak,
    /// A limit refused a message and the incident was logged; cleared by the next
    /// message queued (so one line per incident).
    pub(super) overloaded: AtomicBool,
    pub(super) queue: WriteQueue<Sessions>,
    pub(super) cancel: CancellationToken,
    pub(super) channel: Weak<Shared>,
    pub(super) metrics: Arc<ChannelMetrics>,
}

/// Why a message could not be queued on a connection.
pub(super) enum Refused {
    /// The connection died; try a fresh one.
    Dead,
    /// A limit or an encoding error.
    Error(TransportError),
}

impl Conn {
    pub(super) fn lock(&self) -> MutexGuard<'_, Locked<Sessions>> {
        self.queue.lock()
    }

    /// Fail every waiting call with `err`, stop both tasks, forget this connection in the
    /// channel. Idempotent.
    pub(super) fn fail(self: &Arc<Self>, err: TransportError) {
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
    pub(super) fn set_in_flight(&self, n: usize) {
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
        g: &mut Locked<Sessions>,
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
    pub(super) fn enqueue_call(
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
    pub(super) fn enqueue_ping(&self, to: &Address, tx: Waiter) -> Result<(), Refused> {
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
    pub(super) fn enqueue_push(
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
    pub(super) fn note_timeout(self: &Arc<Self>, max: u32) {
        if let Some(n) = self.timeouts.note(max) {
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
    pub(super) fn forget(&self, session: u32) {
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
pub(super) struct Forget<'a> {
    pub(super) conn: &'a Conn,
    pub(super) session: u32,
    pub(super) armed: bool,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.conn.forget(self.session);
        }
    }
}

/// The error for a socket that failed with `e`: the kernel giving up on the peer
/// (`TCP_USER_TIMEOUT`, keepalive, unreachable) is [`TransportError::PeerUnreachable`],
/// anything else [`TransportError::NodeDown`].
pub(super) fn io_failure(conn: &Conn, what: &str, e: &std::io::Error) -> TransportError {
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

/// The heartbeat monitor's view of a connection (see [`crate::liveness::watch`]).
impl Watched for Conn {
    fn node(&self) -> &str {
        &self.node
    }

    fn cancel(&self) -> &CancellationToken {
        &self.cancel
    }

    fn received(&self) -> u64 {
        self.queue.activity.received()
    }

    fn unblocked(&self) -> u64 {
        self.queue.activity.unblocked()
    }

    fn metrics(&self) -> &ChannelMetrics {
        &self.metrics
    }

    fn ping(&self) {
        let ping = Address::Name(Bytes::from_static(PING_NAME.as_bytes()));
        let (tx, _rx) = oneshot::channel();
        let _ = self.enqueue_ping(&ping, tx);
    }

    fn declare_dead(self: &Arc<Self>, err: TransportError) {
        self.fail(err);
    }
}
