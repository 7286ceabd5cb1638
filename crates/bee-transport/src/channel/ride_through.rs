//! Riding through a peer's restart
//! ([`ChannelConfig::ride_through`](super::ChannelConfig::ride_through), off by default):
//! the parked queue a [`Channel`] owns (`RideThrough`), and the channel's side of it.
//!
//! While the peer is away — connects refused, timing out or backing off — calls wait for
//! it (up to the bound and their own timeout) instead of failing at once, and pushes are
//! *parked* in a byte-bounded queue
//! ([`ChannelConfig::max_parked_bytes`](super::ChannelConfig::max_parked_bytes), also charged
//! to the node's outbound budget) and accepted. One flusher task per channel
//! (`Channel::flush_parked`) sends them, in order, as soon as a connection is back;
//! calls and pushes issued meanwhile go behind them (`Channel::park_behind`), so the
//! order of one channel's messages is kept. A peer away for longer than the bound makes
//! calls fail with the connect error and the parked pushes be refused: counted
//! ([`ChannelStats::pushes_refused`](super::ChannelStats::pushes_refused), the
//! `ride_through` rejection metric) and logged with their number and bytes, never dropped
//! silently.
//!
//! Lock order: the parked queue's lock, then a connection's queue lock; never the
//! channel's state lock while holding the parked queue's.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bee_codec::cluster::Address;
use bytes::Bytes;
use tokio::sync::oneshot;

use super::conn::{Conn, Refused, Waiter};
use super::Channel;
use crate::budget::Permit;
use crate::error::TransportError;

/// The parked queue of one channel: calls and pushes issued while the peer was away,
/// waiting for the flusher; with the count of pushes refused in the end.
#[derive(Default)]
pub(super) struct RideThrough {
    parked: Mutex<Parked>,
    /// `parked.flushing`, readable without the lock: every call and push of a channel
    /// with ride-through checks it, and it is almost always false. Set and cleared under
    /// the `parked` lock.
    flushing: AtomicBool,
    /// Pushes accepted while the peer was away and refused later.
    refused: AtomicU64,
}

impl RideThrough {
    fn lock(&self) -> MutexGuard<'_, Parked> {
        self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pushes parked now.
    pub(super) fn parked_pushes(&self) -> usize {
        self.lock()
            .queue
            .iter()
            .filter(|i| i.call.is_none())
            .count()
    }

    /// Pushes accepted while the peer was away and refused later.
    pub(super) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Whether a flusher owns the queue (no lock; see `flushing`).
    fn is_flushing(&self) -> bool {
        self.flushing.load(Ordering::Acquire)
    }

    /// The flusher is done with the queue (called under its lock).
    fn stop_flushing(&self, p: &mut Parked) {
        p.flushing = false;
        self.flushing.store(false, Ordering::Release);
    }
}

/// Calls and pushes issued while the peer was away, in the order they were issued.
#[derive(Default)]
struct Parked {
    queue: VecDeque<ParkedItem>,
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
pub(super) struct SentAs(Mutex<Option<(Weak<Conn>, u32)>>);

/// What a parked call waits on: its reply, and where it was sent.
pub(super) type ParkedCall = (
    oneshot::Receiver<Result<Bytes, TransportError>>,
    Arc<SentAs>,
);

/// Errors that mean "the peer is away", which [`ChannelConfig::ride_through`](super::ChannelConfig::ride_through) waits out.
fn is_away(e: &TransportError) -> bool {
    matches!(
        e,
        TransportError::Connect { .. }
            | TransportError::NodeDown { .. }
            | TransportError::PeerUnreachable { .. }
    )
}

impl Channel {
    /// Wait for the reply of a parked call (sent by the flusher once the peer is back,
    /// or refused by it), at most until `deadline`.
    pub(super) async fn wait_parked(
        &self,
        (rx, sent): ParkedCall,
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
    pub(super) fn away_too_long(&self, err: TransportError) -> TransportError {
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

    /// Park a call (`call`) or push issued while others are parked, behind them (ride-through
    /// on and a flusher running): `Ok(None)` when nothing is parked, the usual case (one
    /// atomic load), so it goes out at once. For a parked call, what to wait on.
    pub(super) fn park_behind(
        &self,
        to: &Address,
        payload: &Bytes,
        call: bool,
    ) -> Result<Option<ParkedCall>, TransportError> {
        if self.shared.config.ride_through.is_zero() {
            return Ok(None);
        }
        self.park(to, payload, call, false)
    }

    /// Park a call or push that failed with `err` when that says the peer is away and the
    /// ride-through window is open, starting the flusher; `Ok(None)` otherwise (the
    /// caller fails with `Channel::away_too_long`).
    pub(super) fn park_away(
        &self,
        err: &TransportError,
        to: &Address,
        payload: &Bytes,
        call: bool,
    ) -> Result<Option<ParkedCall>, TransportError> {
        if !self.within_ride(err) {
            return Ok(None);
        }
        self.park(to, payload, call, true)
    }

    /// Park a call (`call`) or push behind the ones already parked — or, with `start`,
    /// also when none are, starting the flusher. `Ok(None)`: not parked (nothing parked
    /// and not `start`). For a call, what to wait on.
    fn park(
        &self,
        to: &Address,
        payload: &Bytes,
        call: bool,
        start: bool,
    ) -> Result<Option<ParkedCall>, TransportError> {
        let config = &self.shared.config;
        // Nothing parked (the usual case): no lock. A caller's own earlier parked message
        // set the flag before its call returned, so its order is kept.
        if !start && !self.shared.ride.is_flushing() {
            return Ok(None);
        }
        let mut p = self.shared.ride.lock();
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
            self.shared.ride.flushing.store(true, Ordering::Release);
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
                        let mut p = self.shared.ride.lock();
                        p.bytes = 0;
                        self.shared.ride.stop_flushing(&mut p);
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
                        .ride
                        .refused
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
        let mut p = self.shared.ride.lock();
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
        self.shared.ride.stop_flushing(&mut p);
        drop(p);
        tracing::info!(node = %self.shared.node, messages = sent, "peer back; parked calls and pushes sent");
        Ok(())
    }

    fn is_closed(&self) -> bool {
        self.shared.lock_state().closed
    }
}
